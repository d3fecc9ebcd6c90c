"""Binary PALM runs answer as they did before the other tasks existed (issue 25).

tests/golden/binary_run.json was written by tests/golden/binary_run.py at commit f2314e9:
synth -> train -> eval -> predict through palm's command line. The same script runs here with
today's code; every metric it recorded then, and every image's probability, must be equal.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import CHECKOUT_ENV

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def _assert_same(then, now, where: str) -> None:
    if isinstance(then, dict):
        assert isinstance(now, dict), where
        for key, value in then.items():
            assert key in now, f"{where}.{key} is gone"
            _assert_same(value, now[key], f"{where}.{key}")
    elif isinstance(then, list):
        assert isinstance(now, list) and len(now) == len(then), where
        for i, (a, b) in enumerate(zip(then, now)):
            _assert_same(a, b, f"{where}[{i}]")
    elif isinstance(then, float):
        assert now == pytest.approx(then, rel=1e-5, abs=1e-6), where
    else:
        assert now == then, where


@pytest.mark.longest(78)
@pytest.mark.slow
def test_a_binary_run_measures_what_it_did_before_the_other_tasks(tmp_path):
    out = tmp_path / "now.json"
    subprocess.run([sys.executable, str(GOLDEN / "binary_run.py"), str(out)], check=True,
                   env=CHECKOUT_ENV, capture_output=True)
    then = json.loads((GOLDEN / "binary_run.json").read_text())
    now = json.loads(out.read_text())
    _assert_same(then, now, "run")
    assert now["metrics"]["task"] == "binary"  # stated now, absent then
