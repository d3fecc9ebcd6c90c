"""Shared fixtures: a tiny synthetic PALM data set and tiny checkpoints, built once per session."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import paddle
import pytest

from palm import config
from palm.data.synth import make_palm_dataset
from palm.data.image_io import CACHE_DIR_ENV
from palm.engine.checkpoint import save_checkpoint
from palm.engine.runner import run_training
from palm.models import build_model

from tests import task_runs
from tests.folders import pm_normal_folders


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked `longest(SECONDS)` run first, longest first (SECONDS: what each took
    in one whole-suite run, with --durations). pytest-xdist hands tests out in this order,
    round robin to begin with, so the longest are spread over the workers and the short ones
    fill in after them; in file order a README command group started last, and one worker
    ran it alone for minutes after the other had finished."""
    def seconds(item: pytest.Item) -> float:
        mark = item.get_closest_marker("longest")
        return mark.args[0] if mark else 0.0

    items.sort(key=seconds, reverse=True)


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


CheckpointFactory = Callable[..., Path]


@pytest.fixture(scope="session")
def make_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> CheckpointFactory:
    """Factory of untrained palm checkpoints (weights + sidecar with hashes, seed 0): one
    per set of options, built once per session. The file it returns is shared and read-only;
    with `into=FOLDER` it returns a private copy there (for tests that change the files).

    make_checkpoint("lenet5")                                # 32 px LeNet-5
    make_checkpoint("lenet", model_kwargs={"image_size": 32}, fundus_crop=False)
    make_checkpoint("lenet5", into=tmp_path / "ck")          # a copy to damage
    make_checkpoint("resnet18", 64, head_std=0.05)           # a random head: logits vary
    """
    built: dict[str, Path] = {}

    def make(model: str = "lenet5", image_size: int = 32, *, model_kwargs: dict | None = None,
             head_std: float | None = None, into: Path | None = None, **meta: object) -> Path:
        sidecar = {"model": model, "num_classes": 1, "image_size": image_size,
                   "class_names": ["non-PM", "PM"], "normalize": "minus_one_one",
                   "threshold": 0.5, "model_kwargs": model_kwargs or {}, **meta}
        key = json.dumps([sidecar, head_std], sort_keys=True)
        if key not in built:
            paddle.seed(0)
            network = build_model(model, 1, **(model_kwargs or {}))
            if head_std is not None:  # small random head weights (resnet's fc)
                weight = network.fc.weight
                rng = np.random.default_rng(0)
                weight.set_value(rng.normal(0, head_std, weight.shape).astype("float32"))
            path = tmp_path_factory.mktemp("ckpt") / "run" / "best.pdparams"
            save_checkpoint(path, network, sidecar)
            built[key] = path
        if into is None:
            return built[key]
        shutil.copytree(built[key].parent, into)
        return into / built[key].name

    return make


@pytest.fixture
def fresh_checkpoint(make_checkpoint: CheckpointFactory, tmp_path: Path) -> Path:
    """An untrained 32 px LeNet-5 checkpoint (weights + sidecar with hashes), this test's own
    copy in tmp_path/ck: change or damage it freely."""
    return make_checkpoint("lenet5", into=tmp_path / "ck")


@pytest.fixture(scope="session")
def lenet_checkpoint(make_checkpoint: CheckpointFactory) -> Path:
    """An untrained LeNet checkpoint for 32-px images, no fundus crop (only the plumbing
    matters). Shared: read-only."""
    return make_checkpoint("lenet", model_kwargs={"image_size": 32}, fundus_crop=False)


@pytest.fixture(scope="session")
def many_photos(palm_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """240 photos (hard links to the 16 synthetic validation images): long enough a run to
    interrupt. Shared: read-only."""
    folder = tmp_path_factory.mktemp("many")
    val = sorted((palm_root / "PALM-Validation400").glob("*.jpg"))
    for k in range(240):
        os.link(val[k % len(val)], folder / f"p{k:03d}.jpg")
    return folder


@pytest.fixture(scope="session")
def resnet_checkpoint(make_checkpoint: CheckpointFactory) -> Path:
    """An untrained resnet18 at 64 px with a small random head (threshold 0.4, no fundus
    crop). Shared: read-only."""
    return make_checkpoint("resnet18", 64, head_std=0.05, fundus_crop=False, threshold=0.4,
                           epoch=1, metrics={"auc": 0.9})


RunFactory = Callable[..., Path]


@pytest.fixture(scope="session")
def tiny_run(palm_root: Path, tmp_path_factory: pytest.TempPathFactory) -> RunFactory:
    """Factory of tiny trained run folders: palm.engine.runner.run_training on the config
    `palm train --model MODEL` would use (DEFAULTS + palm/configs/MODEL.yaml), shrunk to
    32 px, batch 8, 1 epoch, no loader workers, CPU, on palm_root; keyword options override
    any config key. One run per set of options per session, shared and read-only.

    tiny_run("lenet5") / "best.pdparams"
    tiny_run("lenet5", epochs=2, lr=0.01)
    """
    runs: dict[str, Path] = {}

    def make(model: str = "lenet5", **options: object) -> Path:
        cfg = {**config.DEFAULTS, **config.model_config(model), "data_root": str(palm_root),
               "image_size": 32, "batch_size": 8, "epochs": 1, "num_workers": 0,
               "device": "cpu", **options}
        key = json.dumps(cfg, sort_keys=True, default=str)
        if key not in runs:
            cfg["output"] = str(tmp_path_factory.mktemp(model) / "run")
            runs[key] = run_training(config.validate_config(cfg), progress=False)
        return runs[key]

    return make


@pytest.fixture(scope="session")
def pm_run(palm_root: Path, tiny_run: RunFactory,
           tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(PM/normal data root, run folder) of a one-epoch LeNet run on class folders: the
    synthetic PALM images copied into ROOT/{train,val}/{PM,normal}/. Shared: read-only."""
    root = pm_normal_folders(palm_root, tmp_path_factory.mktemp("pm"))
    run = tiny_run("lenet", data_root=None, train_dir=str(root / "train"),
                   val_dir=str(root / "val"))
    return root, run


@pytest.fixture(scope="session")
def graded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/task_runs.py's DR-grade CSVs (grades 0..4)."""
    return task_runs.graded_csvs(tmp_path_factory.mktemp("graded"))


@pytest.fixture(scope="session")
def ordinal_run(graded: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-epoch ordinal LeNet run on `graded`. Shared: read-only."""
    return task_runs.ordinal_run(graded, tmp_path_factory.mktemp("ordinal") / "run")


@pytest.fixture(scope="session")
def multilabel_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/task_runs.py's multi-label CSVs (a 0/1 column per label)."""
    return task_runs.multilabel_csvs(tmp_path_factory.mktemp("multilabel"))


@pytest.fixture(scope="session")
def multilabel_run(multilabel_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-epoch multi-label LeNet run on `multilabel_root`. Shared: read-only."""
    return task_runs.multilabel_run(multilabel_root, tmp_path_factory.mktemp("ml") / "run")
