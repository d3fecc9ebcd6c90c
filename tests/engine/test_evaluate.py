"""palm.engine.evaluate: evaluation folders and what they record."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from palm.engine.checkpoint import update_sidecar
from palm.engine.evaluate import eval_output_for, evaluate_checkpoint
from palm.engine.export import export_checkpoint
import json
import re
from palm.errors import OutputRefused
from palm.provenance import data_fingerprint
from palm.cli import eval as eval_tool
from palm.cli import train as train_tool
import os
import subprocess
import sys
import time


@pytest.fixture(scope="module")
def checkpoint_with_selection(resnet_checkpoint: Path, palm_root: Path, tmp_path_factory) -> Path:
    """The checkpoint as training leaves best.pdparams: the validation images chose it
    (select_on val), their logits in best_selection.csv."""
    run = tmp_path_factory.mktemp("run")
    for suffix in (".pdparams", ".json"):
        shutil.copy(resnet_checkpoint.with_suffix(suffix), run / f"best{suffix}")
    files = sorted((palm_root / "PALM-Validation400").glob("*.jpg"))
    pd.DataFrame({"path": [str(f.resolve()) for f in files], "label": [i % 2 for i in
                  range(len(files))], "logit": np.linspace(-1, 1, len(files))}).to_csv(
        run / "best_selection.csv", index=False)
    update_sidecar(run / "best.pdparams", {"selection": {"select_on": "val",
                                                         "predictions": "best_selection.csv"}})
    return run / "best.pdparams"


@pytest.mark.slow  # exports and evaluates twice (~30 s)
def test_eval_of_an_export_writes_its_own_folder_and_keeps_the_selection(
        checkpoint_with_selection, palm_root, tmp_path):
    exported = export_checkpoint(checkpoint_with_selection, tmp_path / "exported" / "demo")
    assert eval_output_for(exported, None, exist_ok=False) == tmp_path / "exported" / "demo-eval"
    from_checkpoint = evaluate_checkpoint(checkpoint_with_selection, tmp_path / "ckpt-eval",
                                          data_root=palm_root, engine="dygraph",
                                          ci_resamples=0, log=lambda _: None)
    from_export = evaluate_checkpoint(exported, eval_output_for(exported, None, False),
                                      data_root=palm_root, ci_resamples=0, log=lambda _: None)
    assert from_checkpoint["selection"] == "optimistic"
    assert from_export["selection"] == from_checkpoint["selection"]
    assert from_export["selection_detail"] == from_checkpoint["selection_detail"]
    assert (tmp_path / "exported" / "demo-eval" / "metrics.json").is_file()
    assert sorted(p.name for p in exported.iterdir()) == \
        ["model.json", "model.pdiparams", "palm_meta.json"]  # nothing written inside it


PROVENANCE_KEYS = {"palm_version", "paddle_version", "device", "data"}


def _tiny(palm_root: Path, *extra: str) -> list[str]:
    return ["--model", "lenet5", "--data-root", str(palm_root), "--image-size", "32",
            "--epochs", "1", "-b", "8", "--num-workers", "0", "--device", "cpu", "--no-progress",
            *extra]


@pytest.mark.slow
def test_eval_folder_is_rewritten_whole(palm_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = train_tool.main(train_tool.parse_args(_tiny(palm_root, "--output", "run")))
    ckpt = str(run / "best.pdparams")

    def evaluate(*extra: str) -> dict:
        return eval_tool.main(eval_tool.get_args_parser().parse_args(
            ["--checkpoint", ckpt, "--data-root", str(palm_root), "--device", "cpu", *extra]))

    evaluate("--output", "ev", "--report", "--threshold", "0.5")
    ev = Path("ev")
    assert (ev / "report.html").is_file()
    page = (ev / "report.html").read_text(encoding="utf-8")
    metrics = json.loads((ev / "metrics.json").read_text())
    assert PROVENANCE_KEYS <= set(metrics["provenance"])
    assert metrics["provenance"]["data"] == data_fingerprint(
        sorted((palm_root / "PALM-Validation400").glob("*.jpg")))
    assert metrics["class_counts"] == {"non-PM": 8, "PM": 8}
    assert f"Evaluated on <b>{palm_root} (PALM validation split)</b>: 16 images" in page
    assert "non-PM 8, PM 8" in page
    # metrics and metadata in separate tables; sensitivity shown once, not also as recall
    tables = re.findall(r"<table>.*?</table>", page, re.S)
    metric_table = next(t for t in tables if "<th>metric</th>" in t)
    about_table = next(t for t in tables if "what produced the figures" in t)
    assert "sensitivity" in metric_table and "<th>recall</th>" not in metric_table
    for key in ("engine", "compute_precision", "provenance.palm_version", "checkpoint"):
        assert f"<th>{key}</th>" in about_table and f"<th>{key}</th>" not in metric_table

    # again without --report, into the same folder: refused without --exist-ok ...
    with pytest.raises(OutputRefused, match="exist_ok"):
        evaluate("--output", "ev", "--threshold", "0.3")
    # ... and with it the folder holds this evaluation only: no stale report.html
    evaluate("--output", "ev", "--threshold", "0.3", "--exist-ok")
    assert json.loads((ev / "metrics.json").read_text())["threshold"] == 0.3
    assert not (ev / "report.html").exists()
    assert sorted(p.name for p in ev.iterdir()) == sorted(
        ["metrics.json", "predictions.csv", "confusion_matrix.png", "roc_curve.png",
         "pr_curve.png", "reliability_diagram.png"])
    # the default output takes the next free name
    evaluate()
    evaluate()
    assert (run / "eval" / "metrics.json").is_file() and (run / "eval-2" / "metrics.json").is_file()


REPO = Path(__file__).resolve().parents[2]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["0", "2"])
def test_eval_with_truncated_image_ends_naming_it(pm_run, tmp_path, workers):
    root, run = pm_run
    shutil.copytree(root / "val", tmp_path / "val")
    bad = sorted((tmp_path / "val" / "normal").glob("*.jpg"))[0]
    _truncate(bad)
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "tools/eval.py", "--checkpoint", str(run / "best.pdparams"),
         "--val-dir", str(tmp_path / "val"), "--output", str(tmp_path / "eval"),
         "--num-workers", workers, "--cache-dir", "none", "--engine", "dygraph"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=120)
    elapsed = time.monotonic() - start
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr
    assert lines[-1] == f"error: {bad}: truncated JPEG (no end-of-image marker)"
    assert "Traceback" not in proc.stderr
    assert elapsed < 60  # startup and the model load; it used to wait forever
