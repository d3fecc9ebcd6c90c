"""palm.data.loader: errors in samples reach the caller, in any worker setup."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from palm.data import FolderImageSet, ImageReadError, LoaderError, build_loader, build_transform


T32 = build_transform(32, train=False)


def _write_png(path: Path, value: int = 100, size: tuple[int, int] = (20, 24)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((*size, 3), value, np.uint8))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_loader_raises_bad_image_in_main_process(pm_run, tmp_path, workers):
    root, _ = pm_run
    shutil.copytree(root / "val", tmp_path / "val")
    bad = sorted((tmp_path / "val" / "PM").glob("*.jpg"))[1]
    _truncate(bad)
    ds = FolderImageSet(tmp_path / "val", transform=T32, cache_dir=None)
    start = time.monotonic()
    with pytest.raises(ImageReadError) as exc:
        for _ in build_loader(ds, 4, train=False, num_workers=workers):
            pass
    assert time.monotonic() - start < 30
    assert exc.value.path == str(bad) and "truncated JPEG" in exc.value.problem


def test_loader_bug_in_a_sample_raises_with_its_traceback(tmp_path):
    ds = FolderImageSet(_pm_free_folder(tmp_path), transform=T32, cache_dir=None)

    def broken(path):
        raise KeyError("boom")

    ds.read = broken
    with pytest.raises(LoaderError, match=r"(?s)Traceback.*KeyError: 'boom'"):
        next(iter(build_loader(ds, 2, train=False)))


def _pm_free_folder(tmp_path: Path) -> Path:
    for cls in ("a", "b"):
        _write_png(tmp_path / "set" / cls / "x.png")
    return tmp_path / "set"
