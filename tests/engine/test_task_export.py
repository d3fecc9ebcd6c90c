"""An ordinal and a multi-label checkpoint exported: the Paddle Inference predictor and
`palm predict` on the export folder give eval-on-the-checkpoint's probabilities and
predictions (within 1e-4)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from palm.cli import predict as predict_tool
from palm.data import FileImageSet, eval_transform
from palm.engine.inference import InferencePredictor, load_export_meta
from palm.engine.tasks import run_export
from palm.predictions import probabilities
from palm.reports.tasks import run_eval
from tests.task_runs import GRADES, LABELS

TOLERANCE = 1e-4


def _checkpoint_eval(run: Path, root: Path, out: Path) -> pd.DataFrame:
    """eval's predictions.csv of the checkpoint itself (dygraph), indexed by file name."""
    run_eval(str(run / "best.pdparams"), output=str(out), val_csv=str(root / "val.csv"),
             ci_resamples=None, device="cpu", engine="dygraph", cache_dir=None)
    frame = pd.read_csv(out / "predictions.csv")
    return frame.set_index(frame["path"].map(lambda p: Path(p).name)).sort_index()


def _predict_export(export: Path, root: Path, out: Path) -> pd.DataFrame:
    predict_tool.main(predict_tool.get_args_parser().parse_args(
        ["--checkpoint", str(export), "--input", str(root / "val"), "--output", str(out),
         "--num-workers", "0", "--no-progress", "--device", "cpu"]))
    frame = pd.read_csv(out)
    return frame.set_index(frame["path"].map(lambda p: Path(p).name)).sort_index()


def _predictor_probabilities(export: Path, root: Path, multilabel: bool) -> pd.DataFrame:
    """The Paddle Inference predictor's probabilities of the validation images, by file name."""
    meta = load_export_meta(export)
    paths = sorted(str(p) for p in (root / "val").glob("*.png"))
    images = FileImageSet(paths, eval_transform(meta), int(meta["image_size"]))
    batch = np.stack([images[i][0] for i in range(len(images))])
    probs = probabilities(InferencePredictor(export).predict(batch),
                          float(meta.get("temperature", 1.0)), multilabel=multilabel)
    return pd.DataFrame(probs, index=[Path(p).name for p in paths])


@pytest.mark.slow
def test_an_ordinal_export_gives_evals_grades(ordinal_run, graded, tmp_path):
    export = run_export(str(ordinal_run / "best.pdparams"), str(tmp_path / "export"))
    evaluated = _checkpoint_eval(ordinal_run, graded, tmp_path / "eval")
    columns = [f"probability_{g}" for g in range(GRADES)]
    direct = _predictor_probabilities(export, graded, multilabel=False)
    np.testing.assert_allclose(direct.to_numpy(), evaluated[columns].to_numpy(), atol=TOLERANCE)
    predicted = _predict_export(export, graded, tmp_path / "p.csv")
    assert list(predicted.index) == list(evaluated.index)
    np.testing.assert_allclose(predicted[columns], evaluated[columns], atol=TOLERANCE)
    np.testing.assert_allclose(predicted["expected_grade"], evaluated["expected_grade"],
                               atol=TOLERANCE)
    assert (predicted["prediction"] == evaluated["prediction"]).all()
    assert (predicted["class_name"].astype(str) == evaluated["class_name"].astype(str)).all()


@pytest.mark.slow
def test_a_multilabel_export_gives_evals_probabilities_and_decisions(multilabel_run,
                                                                      multilabel_root, tmp_path):
    export = run_export(str(multilabel_run / "best.pdparams"), str(tmp_path / "export"))
    assert load_export_meta(export)["task"] == "multilabel"
    evaluated = _checkpoint_eval(multilabel_run, multilabel_root, tmp_path / "eval")
    columns = [f"probability_{n}" for n in LABELS]
    direct = _predictor_probabilities(export, multilabel_root, multilabel=True)
    np.testing.assert_allclose(direct.to_numpy(), evaluated[columns].to_numpy(), atol=TOLERANCE)
    predicted = _predict_export(export, multilabel_root, tmp_path / "p.csv")
    np.testing.assert_allclose(predicted[columns], evaluated[columns], atol=TOLERANCE)
    for name in LABELS:
        assert (predicted[f"prediction_{name}"] == evaluated[f"prediction_{name}"]).all()
