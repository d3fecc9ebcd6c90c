"""Shared fixtures: a tiny synthetic PALM data set built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from palm.data.synth import make_palm_dataset
from palm.data.image_io import CACHE_DIR_ENV


@pytest.fixture(scope="session", autouse=True)
def image_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory):
    """Training caches shrunk images in ~/.cache by default; tests (and the tools they run
    as child processes) use a session folder instead."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_DIR_ENV, str(tmp_path_factory.mktemp("image_cache")))
        yield


@pytest.fixture(scope="session")
def palm_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a synthetic PALM download: 24 training (H 1 / N 10 / P 13) + 16 validation
    images (8 PM) at 64x64 px, seed 0. Treat it as read-only: other tests share it.

    Layout: PALM-Training400/PALM-Training400/*.jpg, PALM-Validation400/V*.jpg,
    PALM-Validation-GT/{PM_Label_and_Fovea_Location.xlsx, labels.csv}.
    """
    return make_palm_dataset(
        tmp_path_factory.mktemp("palm"), n_train=24, n_val=16, image_size=64, difficulty=0.5, seed=0
    )
