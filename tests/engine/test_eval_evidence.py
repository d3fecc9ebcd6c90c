"""Evidence in evaluation: intervals, operating points, calibration, selection status, and
thresholds/temperatures fitted on the selection images and carried into predict and export."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from palm import metrics as M
from palm.engine.eval_summary import evaluation_summary
from palm.engine.evaluate import EvalResult, write_evaluation
from palm.engine.export import META_NAME, export_checkpoint
from palm.reports.report import build_report
from palm.cli import eval as eval_tool
from palm.cli import predict as predict_tool
from palm.cli import train as train_tool

CI_KEYS = {"roc_auc", "average_precision", "accuracy", "sensitivity", "specificity", "ppv",
           "npv", "f1"}


def _overconfident_result(n: int = 300, seed: int = 0) -> EvalResult:
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(0, 1.5, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-true_logit))).astype(np.int64)
    logits = (4 * true_logit)[:, None]
    return EvalResult(M.apply_temperature(logits, 2.0), labels, logits=logits, temperature=2.0)


def test_metrics_json_holds_intervals_operating_points_and_calibration(tmp_path):
    result = _overconfident_result()
    files = [f"img/{i}.jpg" for i in range(len(result.labels))]
    m = write_evaluation(result, files, ["non-PM", "PM"], 0.5, tmp_path,
                         {"selection": "independent", "threshold_source": "checkpoint"},
                         ci_resamples=500)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == m and CI_KEYS <= set(m["ci95"]) and "roc_auc" in m["ci_method"]
    for key in CI_KEYS - {"ppv", "npv"}:
        low, high = m["ci95"][key]
        assert low <= m[key] <= high, key
    assert set(m["operating_points"]) == {"sens_at_spec_0.90", "sens_at_spec_0.95",
                                          "spec_at_sens_0.90", "spec_at_sens_0.95", "youden"}
    assert m["operating_points"]["sens_at_spec_0.90"]["specificity"] >= 0.90
    cal = m["calibration"]
    assert cal["temperature"] == 2.0 and cal["ece"] < cal["before_temperature"]["ece"]
    assert m["class_counts"] == {"non-PM": int((result.labels == 0).sum()),
                                 "PM": int((result.labels == 1).sum())}
    assert (tmp_path / "reliability_diagram.png").stat().st_size > 1000
    low, high = m["ci95"]["roc_auc"]
    line = evaluation_summary(m)
    assert f"AUC {m['roc_auc']:.3f} ({low:.3f}-{high:.3f})" in line
    assert line.endswith("selection independent")


def test_no_ci_leaves_intervals_out(tmp_path):
    m = write_evaluation(_overconfident_result(60), [f"{i}.jpg" for i in range(60)],
                         ["non-PM", "PM"], 0.5, tmp_path, ci_resamples=0)
    assert "ci95" not in m and "sens_at_spec_0.90" in m["operating_points"]
    assert "bootstrap_ci" not in json.dumps(m["operating_points"])


def _train(root: Path, out: Path, *extra: str) -> Path:
    return train_tool.main(train_tool.parse_args(
        ["--model", "lenet", "--data-root", str(root), "--image-size", "32", "--batch-size", "8",
         "--epochs", "1", "--num-workers", "0", "--output", str(out), "--device", "cpu",
         "--no-progress", *extra]))


def _eval(ckpt: Path, root: Path, out: Path, *extra: str) -> dict:
    return eval_tool.main(eval_tool.get_args_parser().parse_args(
        ["--checkpoint", str(ckpt), "--data-root", str(root), "--output", str(out),
         "--ci-resamples", "200", *extra]))


@pytest.mark.slow
def test_honest_selection_calibration_predict_export_and_report(palm_root, tmp_path, capsys):
    run = _train(palm_root, tmp_path / "holdout", "--select-on", "holdout",
                 "--holdout-fraction", "0.25")
    best = json.loads((run / "best.json").read_text())
    assert best["selection"]["select_on"] == "holdout" and best["selection"]["images"] == 6
    chosen = pd.read_csv(run / best["selection"]["predictions"])
    assert len(chosen) == 6 and chosen["path"].str.contains("PALM-Training400").all()
    history = pd.read_csv(run / "metrics.csv")
    assert best["best_metric"].startswith("holdout_") and "holdout_roc_auc" in history

    m = _eval(run / "best.pdparams", palm_root, tmp_path / "ev")
    assert m["selection"] == "independent" and CI_KEYS <= set(m["ci95"])
    line = capsys.readouterr().out
    low, high = m["ci95"]["roc_auc"]
    assert f"AUC {m['roc_auc']:.3f} ({low:.3f}-{high:.3f})" in line
    assert "selection independent" in line
    tuned = _eval(run / "best.pdparams", palm_root, tmp_path / "tuned", "--tune-threshold")
    assert tuned["selection"] == "optimistic" and "exploratory" in tuned["selection_detail"]

    # temperature and operating point fitted on the 6 holdout images, stored with the checkpoint
    cal = _eval(run / "best.pdparams", palm_root, tmp_path / "cal", "--fit-temperature",
                "--operating-point", "sens=0.9")
    meta = json.loads((run / "best.json").read_text())
    logits = chosen[["logit"]].to_numpy()
    assert meta["temperature"] == pytest.approx(M.fit_temperature(chosen["label"], logits))
    probs = M.apply_temperature(logits, meta["temperature"])
    assert meta["threshold"] == pytest.approx(
        M.threshold_for(chosen["label"], probs, "sensitivity", 0.9))
    assert cal["threshold"] == pytest.approx(meta["threshold"])
    assert "operating point sens=0.9" in cal["threshold_source"]
    assert cal["calibration"]["temperature"] == pytest.approx(meta["temperature"])
    assert cal["selection"] == "independent"

    # predict applies the stored temperature and threshold
    out = tmp_path / "pred.csv"
    predict_tool.main(predict_tool.get_args_parser().parse_args(
        ["--checkpoint", str(run / "best.pdparams"), "--input",
         str(palm_root / "PALM-Validation400"), "--output", str(out), "--no-progress",
         "--num-workers", "0"]))
    predicted = pd.read_csv(out).set_index("path")["probability"]
    scored = pd.read_csv(tmp_path / "cal" / "predictions.csv").set_index("path")["probability"]
    assert np.allclose(predicted.loc[scored.index], scored, atol=1e-5)
    assert json.loads(Path(f"{out}.json").read_text())["threshold"] == pytest.approx(
        meta["threshold"])
    exported = json.loads((export_checkpoint(run / "best.pdparams", tmp_path / "exp")
                           / META_NAME).read_text())
    assert exported["temperature"] == meta["temperature"]
    assert exported["threshold"] == meta["threshold"]

    report = build_report(run, tmp_path / "cal", gallery_size=1).read_text()
    assert "Selection: independent" in report and "95 % confidence intervals" in report
    assert "Operating points" in report and "reliability_diagram" in report

    val_run = _train(palm_root, tmp_path / "val")
    by_val = _eval(val_run / "best.pdparams", palm_root, tmp_path / "ev_val")
    assert by_val["selection"] == "optimistic"
    report = build_report(val_run, tmp_path / "ev_val", gallery_size=1).read_text()
    assert 'class="warn">Selection: optimistic' in report
