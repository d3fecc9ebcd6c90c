"""Parametrisations that keep a few representative cases in the quick loop (`-m "not slow"`)
and mark the rest slow, so the full suite still runs every case."""
from __future__ import annotations

from collections.abc import Iterable

import pytest

# Quick-loop representatives of the model zoo: a small classic network, a residual one, a
# later mobile one. Per-model tests run the others under `slow`.
REPRESENTATIVE_MODELS = frozenset({"lenet5", "resnet18", "mobilenet_v2"})


def quick_or_slow(cases: Iterable, quick: Iterable = REPRESENTATIVE_MODELS) -> list:
    """`cases` as parameters: those in `quick` plain, the others marked slow. A case is
    matched by itself or, for a tuple, by its first item."""
    keep = set(quick)
    return [case if (case[0] if isinstance(case, tuple) else case) in keep
            else pytest.param(*(case if isinstance(case, tuple) else (case,)), marks=pytest.mark.slow)
            for case in cases]
