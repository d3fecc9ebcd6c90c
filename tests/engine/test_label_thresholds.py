"""Per-label thresholds of a multi-label model: chosen on the checkpoint's selection images
(eval --operating-point), stored in its sidecar as {label: threshold}, and used by eval,
predict, the service and the export for every prediction_<label>; a checkpoint without them
decides at 0.5."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from sklearn import metrics as skm

from palm.engine.checkpoint import (CheckpointError, label_thresholds, load_meta,
                                    update_sidecar, validate_meta)
from palm.engine.tasks import run_export, run_predict
from palm.reports.tasks import run_eval
from tests.task_runs import LABELS

CHOSEN = {"diabetes": 0.2, "glaucoma": 0.8, "myopia": 0.5}


@pytest.fixture
def checkpoint(multilabel_run, tmp_path) -> Path:
    """A copy of the shared multi-label run (its sidecar is changed here)."""
    return shutil.copytree(multilabel_run, tmp_path / "run") / "best.pdparams"


def _youden_j(truth: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    decided = scores >= threshold
    return decided[truth == 1].mean() - decided[truth == 0].mean()


def test_eval_chooses_each_labels_youden_threshold_on_the_selection_images(
        checkpoint, multilabel_root, tmp_path):
    metrics = run_eval(str(checkpoint), output=str(tmp_path / "eval"), operating_point="youden",
                       val_csv=str(multilabel_root / "val.csv"), ci_resamples=None, device="cpu")
    stored = load_meta(checkpoint)["thresholds"]
    assert sorted(stored) == sorted(LABELS)
    selection = pd.read_csv(checkpoint.with_name("best_selection.csv"))
    for j, name in enumerate(LABELS):
        truth = selection[f"label_{j}"].to_numpy()
        # float32, as palm.predictions computes every probability a decision is taken on
        scores = expit(selection[f"logit_{j}"].to_numpy(np.float32))
        fpr, tpr, _ = skm.roc_curve(truth, scores)
        assert _youden_j(truth, scores, stored[name]) == pytest.approx(np.max(tpr - fpr))
        assert metrics["per_label"][name]["threshold"] == pytest.approx(stored[name])
    assert "youden per label" in metrics["threshold_source"]
    frame = pd.read_csv(tmp_path / "eval" / "predictions.csv")
    for name in LABELS:
        assert (frame[f"prediction_{name}"] == (frame[f"probability_{name}"] >= stored[name])).all()


def _between(probs: pd.Series, low: float, high: float) -> float:
    """A threshold in (low, high) in the widest gap between `probs` there (so decisions at it
    differ from those at 0.5 when some lie between, and no probability, rounded to the CSV's
    6 decimals, is near it)."""
    edges = np.unique(np.r_[low, probs[(probs > low) & (probs < high)].to_numpy(), high])
    widest = int(np.argmax(np.diff(edges)))
    if edges[widest] == low and len(edges) > 2:  # keep some probabilities on each side
        widest = 1 + int(np.argmax(np.diff(edges[1:])))
    return float((edges[widest] + edges[widest + 1]) / 2)


def test_stored_thresholds_decide_in_predict_the_export_and_the_service(
        checkpoint, multilabel_root, tmp_path):
    run_predict(str(checkpoint), str(multilabel_root / "val"), output=str(tmp_path / "at-half.csv"),
                device="cpu", num_workers=0, progress=False)
    at_half = pd.read_csv(tmp_path / "at-half.csv")
    # thresholds amid the model's own probabilities, away from 0.5, so decisions change
    chosen = {"diabetes": _between(at_half["probability_diabetes"], 0.5, 1.0),
              "glaucoma": _between(at_half["probability_glaucoma"], 0.0, 0.5), "myopia": 0.5}
    update_sidecar(checkpoint, {"thresholds": chosen, "thresholds_source": "chosen by hand"})
    export = run_export(str(checkpoint), str(tmp_path / "export"))
    frames = {}
    for name, source in (("checkpoint", checkpoint), ("export", export)):
        out = tmp_path / f"{name}.csv"
        run_predict(str(source), str(multilabel_root / "val"), output=str(out), device="cpu",
                    num_workers=0, progress=False)
        frames[name] = pd.read_csv(out)
    for frame in frames.values():
        for label, cut in chosen.items():
            probs = frame[f"probability_{label}"]
            assert (frame[f"prediction_{label}"] == (probs >= cut)).all()
    frame = frames["checkpoint"]
    assert any((frame[f"prediction_{label}"] != (frame[f"probability_{label}"] >= 0.5)).any()
               for label in LABELS)  # the stored thresholds changed some decisions
    _check_service(checkpoint, multilabel_root, frame, chosen)


def _check_service(checkpoint: Path, root: Path, predicted: pd.DataFrame,
                   chosen: dict[str, float]) -> None:
    from tests.serve.helpers import make_client, upload
    photos = sorted((root / "val").glob("*.png"))
    with make_client(checkpoint) as client:
        assert client.get("/v1/model").json()["thresholds"] == chosen
        answer = client.post("/v1/predict", files=upload(
            *[(p.name, p.read_bytes()) for p in photos])).json()
    rows = predicted.set_index(predicted["path"].map(lambda p: Path(p).name))
    for photo, result in zip(photos, answer["results"]):
        for label, cut in chosen.items():
            assert result["predictions"][label] == int(result["probabilities"][label] >= cut)
            assert result["predictions"][label] == rows.loc[photo.name, f"prediction_{label}"]


def test_a_checkpoint_without_thresholds_decides_at_half(multilabel_run):
    meta = load_meta(multilabel_run / "best.pdparams")
    assert "thresholds" not in meta
    assert label_thresholds(meta)[0].tolist() == [0.5] * len(LABELS)
    meta.pop("threshold")  # saved before any threshold was recorded
    assert label_thresholds(meta)[0].tolist() == [0.5] * len(LABELS)


@pytest.mark.parametrize("thresholds, problem", [
    ({"diabetes": 0.5}, "thresholds name labels"),
    ({**CHOSEN, "myopia": 1.5}, "thresholds.myopia must be a number in 0..1"),
    ([0.5, 0.5, 0.5], "thresholds must be a {label: threshold} object"),
])
def test_malformed_thresholds_are_named(multilabel_run, thresholds, problem):
    meta = {**load_meta(multilabel_run / "best.pdparams"), "thresholds": thresholds}
    with pytest.raises(CheckpointError, match=f"best.json: .*{problem}".replace("{", r"\{")):
        validate_meta(meta, multilabel_run / "best.json")
