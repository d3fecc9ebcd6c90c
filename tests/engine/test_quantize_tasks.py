"""INT8 for every task: an ordinal and a multi-label checkpoint quantize, their validation
compares the task's metric (quadratic kappa; macro AUC and each label's AUC), and the
installed INT8 model reproduces what was validated."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from palm.cli import quantize as quantize_tool
from palm.cli.common import cli
from palm.data import list_images
from palm.engine.export import META_NAME
from palm.engine.inference import OpenVINOPredictor, load_predictor
from palm.engine.quantize import (Comparison, QuantizationRefused, calibration_images,
                                  check_drop)
from palm.predictions import probabilities
from tests.task_runs import GRADES, LABELS


def _quantize(checkpoint: Path, root: Path, out: Path, *extra: str):
    return quantize_tool.main(quantize_tool.get_args_parser().parse_args(
        ["--checkpoint", str(checkpoint), "--calib-dir", str(root / "train"),
         "--val-csv", str(root / "val.csv"), "--output", str(out), "--calib-images", "16",
         *extra]))


def _outputs(folder: Path, root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(INT8 logits, fp32 logits, labels file order) of the folder's two models on the
    validation images."""
    meta = json.loads((folder / META_NAME).read_text())
    paths = sorted(list_images(str(root / "val")))
    batch = np.concatenate(calibration_images(paths, meta, len(paths)))
    int8, fp32 = load_predictor(folder), load_predictor(folder, precision="fp32")
    assert isinstance(int8, OpenVINOPredictor)
    return int8.predict(batch), fp32.predict(batch), batch


@pytest.fixture(scope="module")
def ordinal_int8(ordinal_run, graded, tmp_path_factory):
    out = tmp_path_factory.mktemp("ordinal-int8") / "int8"
    return out, _quantize(ordinal_run / "best.pdparams", graded, out, "--max-metric-drop", "0.2")


@pytest.fixture(scope="module")
def multilabel_int8(multilabel_run, multilabel_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("ml-int8") / "int8"
    return out, _quantize(multilabel_run / "best.pdparams", multilabel_root, out,
                          "--max-metric-drop", "0.2")


@pytest.mark.slow
def test_an_ordinal_model_is_checked_on_quadratic_kappa(ordinal_int8, graded):
    out, result = ordinal_int8
    record = json.loads((out / META_NAME).read_text())["int8"]
    assert record["metric"] == "qwk" and record["validation"]["metric"] == "qwk"
    assert record["max_metric_drop"] == 0.2
    validation = record["validation"]
    assert validation["metric_drop"] == pytest.approx(
        validation["fp32"]["qwk"] - validation["int8"]["qwk"])
    assert validation["metric_drop"] <= 0.2
    int8_logits, fp32_logits, _ = _outputs(out, graded)
    # the installed INT8 model is the validated one: its grades agree with fp32's as often
    # as recorded, and its probabilities stay within the recorded largest difference
    p8, p32 = probabilities(int8_logits), probabilities(fp32_logits)
    assert p8.shape[1] == GRADES
    assert np.abs(p8 - p32).max() <= validation["max_probability_diff"] + 1e-6
    assert np.mean(p8.argmax(1) == p32.argmax(1)) == pytest.approx(
        validation["prediction_agreement"])
    # the recorded kappa is scikit-learn's on the INT8 grades
    truth = np.arange(len(p8)) % GRADES  # graded_csvs: image i has grade i % 5, in file order
    assert validation["int8"]["qwk"] == pytest.approx(
        skm.cohen_kappa_score(truth, p8.argmax(1), weights="quadratic"))
    assert "qwk" in result.table() and "(checked)" in result.table()


@pytest.mark.slow
def test_a_multilabel_model_is_checked_on_macro_auc_per_label(multilabel_int8, multilabel_root):
    out, result = multilabel_int8
    record = json.loads((out / META_NAME).read_text())["int8"]
    validation = record["validation"]
    assert record["metric"] == "macro_roc_auc" and validation["metric"] == "macro_roc_auc"
    assert set(validation["label_auc_drop"]) == set(LABELS)
    assert validation["worst_label"] == max(validation["label_auc_drop"],
                                            key=validation["label_auc_drop"].get)
    int8_logits, fp32_logits, _ = _outputs(out, multilabel_root)
    p8 = probabilities(int8_logits, multilabel=True)
    p32 = probabilities(fp32_logits, multilabel=True)
    assert p8.shape == (36, len(LABELS))
    assert np.abs(p8 - p32).max() <= validation["max_probability_diff"] + 1e-6
    truth = np.array([[(i >> j) & 1 for j in range(len(LABELS))] for i in range(len(p8))])
    for j, name in enumerate(LABELS):  # multilabel_csvs: image i has the bits of i
        assert validation["int8"][f"roc_auc_{name}"] == pytest.approx(
            skm.roc_auc_score(truth[:, j], p8[:, j]))
        assert validation["label_auc_drop"][name] == pytest.approx(
            validation["fp32"][f"roc_auc_{name}"] - validation["int8"][f"roc_auc_{name}"])
    assert validation["int8"]["macro_roc_auc"] == pytest.approx(skm.roc_auc_score(truth, p8))
    assert "worst label" in result.table()


def _multilabel_comparison(int8_aucs: list[float]) -> Comparison:
    fp32 = {"macro_roc_auc": 0.9, **{f"roc_auc_{n}": 0.9 for n in LABELS}}
    int8 = {"macro_roc_auc": float(np.mean(int8_aucs)),
            **{f"roc_auc_{n}": a for n, a in zip(LABELS, int8_aucs)}}
    drops = {n: 0.9 - a for n, a in zip(LABELS, int8_aucs)}
    return Comparison(fp32, int8, 0.1, {"fp32": 1.0, "int8": 2.0}, "macro_roc_auc",
                      {"label_auc_drop": drops, "worst_label": max(drops, key=drops.get)})


def test_a_refusal_names_the_metric_and_the_worst_label():
    result = _multilabel_comparison([0.9, 0.6, 0.9])
    with pytest.raises(QuantizationRefused, match=r"^macro_roc_auc fp32 0.9000 -> INT8 0.8000: "
                       r"a drop of 0.1000 \(worst label glaucoma: AUC drop 0.3000\), more than "
                       r"max_metric_drop 0.05"):
        check_drop(result, 0.05, force=False)
    check_drop(result, 0.11, force=False)  # within the allowance: no error


def test_an_undefined_metric_refuses_unless_forced():
    result = Comparison({"qwk": float("nan")}, {"qwk": float("nan")}, 0.0,
                        {"fp32": 1.0, "int8": 1.0}, "qwk")
    with pytest.raises(QuantizationRefused, match="validation qwk is undefined"):
        check_drop(result, 1.0, force=False)
    check_drop(result, 1.0, force=True)


def test_the_old_flag_is_an_alias_of_max_metric_drop():
    parser = quantize_tool.get_args_parser()
    base = ["--checkpoint", "c", "--output", "o"]
    assert parser.parse_args([*base, "--max-auc-drop", "0.02"]).max_metric_drop == 0.02
    assert parser.parse_args([*base, "--max-metric-drop", "0.03"]).max_metric_drop == 0.03


def test_multiclass_and_ordinal_figures_are_sklearns():
    from palm.engine.evaluate import EvalResult
    from palm.engine.quantize import task_figures
    rng = np.random.default_rng(0)
    labels = np.arange(40) % 4
    probs = rng.dirichlet(np.ones(4), 40)
    multiclass = {"num_classes": 4, "class_names": list("abcd")}
    figures = task_figures(EvalResult(probs, labels), multiclass)
    assert list(figures)[0] == "macro_roc_auc"
    assert figures["macro_roc_auc"] == pytest.approx(
        skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
    assert figures["accuracy"] == pytest.approx(skm.accuracy_score(labels, probs.argmax(1)))
    ordinal = {"num_classes": 4, "class_names": list("0123"), "task": "ordinal",
               "referable_grade": 2}
    figures = task_figures(EvalResult(probs, labels, task="ordinal", referable_grade=2), ordinal)
    assert list(figures)[0] == "qwk"
    assert figures["qwk"] == pytest.approx(
        skm.cohen_kappa_score(labels, probs.argmax(1), weights="quadratic"))
    assert figures["referable_roc_auc"] == pytest.approx(
        skm.roc_auc_score(labels >= 2, probs[:, 2:].sum(1)))


@pytest.mark.slow
def test_a_grader_of_an_aptos_download_quantizes_as_eval_reads_it(tmp_path):
    """--data-root of an APTOS-2019 download calibrates on its photos and, with the run's
    val_split.csv, validates on the carved images, as eval takes them."""
    from palm.engine.tasks import run_synth
    from tests.task_runs import train_root_run
    root = Path(run_synth(str(tmp_path / "aptos"), task="ordinal", n_train=40, image_size="64"))
    run = train_root_run(root, tmp_path / "run")
    result = quantize_tool.main(quantize_tool.get_args_parser().parse_args(
        ["--checkpoint", str(run / "best.pdparams"), "--data-root", str(root), "--val-csv",
         str(run / "val_split.csv"), "--output", str(tmp_path / "int8"), "--calib-images", "8",
         "--force"]))
    assert result.metric == "qwk" and result.fp32["n"] == 8


def test_data_root_beside_a_list_is_its_image_folder_so_calibration_needs_its_own(
        multilabel_root, tmp_path):
    with pytest.raises(SystemExit) as refused:
        cli("quantize", ["--checkpoint", str(tmp_path / "never-read.pdparams"), "--val-csv",
                         str(multilabel_root / "val.csv"), "--data-root", str(multilabel_root),
                         "--output", str(tmp_path / "q")])
    assert str(refused.value.code) == (
        f"error: with --val-csv, --data-root {multilabel_root} is where its images live, not a "
        "download to calibrate on: give --calib-dir (photos to calibrate on)")
