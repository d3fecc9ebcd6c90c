"""train -> eval -> predict through the tools' entry points, on tiny synthetic data.

metrics.json is checked against scikit-learn recomputed from predictions.csv; predict is
run on a folder of good and broken files; multi-class data goes through the same tools.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import paddle
import pytest
from sklearn import metrics as skm

from palm.engine.checkpoint import load_checkpoint_model
from palm.engine.evaluate import EvalResult, write_evaluation
from palm.data import list_images
from palm.engine.predict import journal_path, predict_probabilities, record_path
from palm.cli import eval as eval_tool
from palm.cli import predict as predict_tool
from palm.cli import train as train_tool

REPO = Path(__file__).resolve().parents[2]


def _train(argv: list[str]) -> Path:
    return train_tool.main(train_tool.parse_args(argv))


@pytest.fixture(scope="module")
def binary_run(palm_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("binary") / "run"
    return _train(["--model", "resnet18", "--data-root", str(palm_root), "--image-size", "32",
                   "--batch-size", "8", "--epochs", "1", "--num-workers", "0", "--output", str(out),
                   "--device", "cpu", "--no-progress"])


def _eval(argv: list[str]) -> dict:
    return eval_tool.main(eval_tool.get_args_parser().parse_args(argv))


def _predict(argv: list[str]):
    return predict_tool.main(predict_tool.get_args_parser().parse_args([*argv, "--no-progress"]))


def test_eval_metrics_equal_sklearn_on_predictions(binary_run, palm_root, tmp_path, capsys):
    out = tmp_path / "eval"
    _eval(["--checkpoint", str(binary_run / "best.pdparams"), "--data-root", str(palm_root),
           "--output", str(out), "--threshold", "0.4"])
    for name in ("metrics.json", "predictions.csv", "confusion_matrix.png", "roc_curve.png",
                 "pr_curve.png"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    preds = pd.read_csv(out / "predictions.csv")
    assert list(preds.columns) == ["path", "label", "probability", "prediction", "class_name",
                                   "error"]
    assert len(preds) == m["n"] == 16
    y, p = preds["label"].to_numpy(), preds["probability"].to_numpy()
    yhat = (p >= 0.4).astype(int)
    assert (preds["prediction"] == yhat).all()
    assert m["threshold"] == 0.4 and m["threshold_source"] == "command_line"
    assert m["engine"] in ("dygraph", "inference") and m["compute_precision"] == "fp32"
    tn, fp, fn, tp = skm.confusion_matrix(y, yhat, labels=[0, 1]).ravel()
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (tn, fp, fn, tp)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, yhat))
    assert m["precision"] == pytest.approx(skm.precision_score(y, yhat, zero_division=0))
    assert m["recall"] == m["sensitivity"] == pytest.approx(skm.recall_score(y, yhat))
    assert m["specificity"] == pytest.approx(skm.recall_score(y, yhat, pos_label=0))
    assert m["f1"] == pytest.approx(skm.f1_score(y, yhat))
    # probabilities are rounded only by float32 -> CSV text, so ranking metrics agree closely
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p), abs=1e-6)
    assert m["average_precision"] == pytest.approx(skm.average_precision_score(y, p), abs=1e-6)
    printed = capsys.readouterr().out
    assert "true PM" in printed and "pred non-PM" in printed and "accuracy" in printed

    tuned = tmp_path / "tuned"
    _eval(["--checkpoint", str(binary_run / "best.pdparams"), "--data-root", str(palm_root),
           "--output", str(tuned), "--tune-threshold"])
    t = json.loads((tuned / "metrics.json").read_text())
    fpr, tpr, thresholds = skm.roc_curve(y, p)
    assert t["threshold_source"] == "youden_j"
    assert t["threshold"] == pytest.approx(thresholds[1:][np.argmax((tpr - fpr)[1:])], abs=1e-6)


def test_write_evaluation_refuses_extra_that_overwrites_a_metric(tmp_path):
    result = EvalResult(np.array([0.2, 0.9], dtype="float32"), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"\['precision'\] would overwrite"):
        write_evaluation(result, ["a.jpg", "b.jpg"], ["non-PM", "PM"], 0.5, tmp_path,
                         {"precision": "fp32"})
    assert not (tmp_path / "metrics.json").exists()


def test_eval_on_csv_and_missing_data_source(binary_run, palm_root, tmp_path):
    gt = pd.read_csv(palm_root / "PALM-Validation-GT" / "labels.csv")
    table = pd.DataFrame({"path": [str(palm_root / "PALM-Validation400" / n) for n in gt["imgName"]],
                          "label": gt["Label"]})
    table.to_csv(tmp_path / "val.csv", index=False)
    # absolute paths in a list are refused unless asked for
    m = _eval(["--checkpoint", str(binary_run / "best.pdparams"), "--val-csv",
               str(tmp_path / "val.csv"), "--output", str(tmp_path / "e"),
               "--allow-outside-paths"])
    reference = json.loads((binary_run / "best.json").read_text())["metrics"]
    assert m["roc_auc"] == pytest.approx(reference["val_roc_auc"], abs=1e-6)
    with pytest.raises(ValueError, match="exactly one of data_root, val_dir, val_csv"):
        _eval(["--checkpoint", str(binary_run / "best.pdparams"), "--output", str(tmp_path / "x")])


def _bad_folder(palm_root: Path, root: Path) -> tuple[list[str], list[str]]:
    """Good images (jpg + converted PNG variants) and broken files; returns (good, bad) paths."""
    (root / "nested" / "deeper").mkdir(parents=True)
    val = sorted((palm_root / "PALM-Validation400").glob("*.jpg"))
    good = []
    for i, src in enumerate(val[:3]):
        dst = root / ("nested" if i else "") / src.name
        shutil.copy(src, dst)
        good.append(dst)
    bgr = cv2.imread(str(val[3]))
    variants = {"gray.png": cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY),
                "rgba.png": cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA),
                "deep16.png": bgr.astype(np.uint16) * 257}
    for name, img in variants.items():
        cv2.imwrite(str(root / "nested" / "deeper" / name), img)
        good.append(root / "nested" / "deeper" / name)
    bad = [root / "empty.jpg", root / "text.jpg", root / "nested" / "truncated.jpg"]
    bad[0].write_bytes(b"")
    bad[1].write_text("this is not a photo\n")
    bad[2].write_bytes(val[4].read_bytes()[:600])
    (root / "notes.txt").write_text("not listed: not an image extension\n")
    return sorted(map(str, good)), sorted(map(str, bad))


@pytest.mark.slow
def test_predict_folder_with_bad_files_exits_0(binary_run, palm_root, tmp_path):
    good, bad = _bad_folder(palm_root, tmp_path / "photos")
    out = tmp_path / "preds.csv"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "predict.py"), "--checkpoint",
         str(binary_run / "best.pdparams"), "--input", str(tmp_path / "photos"), "--output",
         str(out), "--batch-size", "4", "--num-workers", "2", "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert f"{len(good) + len(bad)} images, {len(bad)} errors" in proc.stdout
    rows = pd.read_csv(out, keep_default_na=False)
    assert sorted(rows["path"]) == sorted(good + bad)
    errors = rows.set_index("path")["error"]
    assert all(errors[p] == "" for p in good)
    assert errors[bad[0]] and errors[bad[1]] and errors[bad[2]]
    assert "empty" in errors[str(tmp_path / "photos" / "empty.jpg")]
    ok = rows[rows["error"] == ""]
    probs = ok["probability"].astype(float)
    assert probs.between(0, 1).all()
    assert set(ok["class_name"]) <= {"non-PM", "PM"}
    assert not journal_path(out).exists()


@pytest.mark.slow
def test_predict_matches_eval_tta_and_resume(binary_run, palm_root, tmp_path):
    ckpt = str(binary_run / "best.pdparams")
    folder = palm_root / "PALM-Validation400"
    out = tmp_path / "preds.csv"
    summary = _predict(["--checkpoint", ckpt, "--input", str(folder), "--output", str(out),
                        "--num-workers", "0"])
    assert (summary.images, summary.errors) == (16, 0)
    ev = tmp_path / "eval"
    _eval(["--checkpoint", ckpt, "--data-root", str(palm_root), "--output", str(ev)])
    evaluated = pd.read_csv(ev / "predictions.csv")
    by_file = evaluated.set_index("path")["probability"]
    preds = pd.read_csv(out)
    # one schema: predict's columns are eval's without the label, for the same images
    assert list(preds.columns) == [c for c in evaluated.columns if c != "label"]
    assert sorted(preds["path"]) == sorted(evaluated["path"])
    assert (preds.set_index("path")["class_name"] == evaluated.set_index("path")["class_name"]
            .loc[preds["path"]]).all()
    np.testing.assert_allclose(preds["probability"], by_file[preds["path"]].to_numpy(), atol=1e-5)

    # --resume after an interruption: a journal with 5 finished rows (one marked) is kept
    journal = journal_path(out)
    head = preds.head(5).copy()
    head.loc[0, "probability"] = 0.123456  # a value no real run would write
    head.to_csv(journal, index=False)
    shutil.copy(record_path(out), record_path(journal))  # an interrupted run leaves both
    out.unlink()
    summary = _predict(["--checkpoint", ckpt, "--input", str(folder), "--output", str(out),
                        "--num-workers", "0", "--resume"])
    assert (summary.images, summary.reused) == (16, 5)
    resumed = pd.read_csv(out)
    assert len(resumed) == 16 and sorted(resumed["path"]) == sorted(preds["path"])
    assert resumed.set_index("path").loc[head.loc[0, "path"], "probability"] == 0.123456
    assert not journal.exists()

    # TTA: mean over the image and its two flips
    model, meta = load_checkpoint_model(ckpt)
    x = paddle.rand([2, 3, 32, 32])
    expected = np.mean([predict_probabilities(model, v) for v in
                        (x, paddle.flip(x, [3]), paddle.flip(x, [2]))], axis=0)
    np.testing.assert_allclose(predict_probabilities(model, x, tta=True), expected, atol=1e-6)
    tta = _predict(["--checkpoint", ckpt, "--input", str(folder), "--output",
                    str(tmp_path / "tta.csv"), "--num-workers", "0", "--tta"])
    assert tta.images == 16 and pd.read_csv(tmp_path / "tta.csv")["probability"].between(0, 1).all()


def test_list_images_single_file_and_missing(tmp_path):
    (tmp_path / "a.JPG").write_bytes(b"x")
    (tmp_path / ".hidden.jpg").write_bytes(b"x")
    (tmp_path / "b.txt").write_bytes(b"x")
    assert list_images(tmp_path) == [str(tmp_path / "a.JPG")]
    assert list_images(tmp_path / "b.txt") == [str(tmp_path / "b.txt")]  # named explicitly
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        list_images(tmp_path / "missing")


def test_multiclass_folders_train_eval_predict(palm_root, tmp_path):
    """Three class folders: K logits, softmax cross-entropy, macro metrics and a 3x3 matrix."""
    classes = ["a", "b", "c"]
    sources = {"train": sorted((palm_root / "PALM-Training400" / "PALM-Training400").glob("*.jpg")),
               "val": sorted((palm_root / "PALM-Validation400").glob("*.jpg"))[:12]}
    for split, files in sources.items():
        for i, src in enumerate(files):
            dst = tmp_path / split / classes[i % 3]
            dst.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst / src.name)
    run = _train(["--model", "lenet", "--train-dir", str(tmp_path / "train"), "--val-dir",
                  str(tmp_path / "val"), "--image-size", "32", "--batch-size", "8", "--epochs", "1",
                  "--num-workers", "0", "--output", str(tmp_path / "run"), "--device", "cpu",
                  "--no-progress"])
    meta = json.loads((run / "best.json").read_text())
    assert meta["num_classes"] == 3 and meta["class_names"] == classes
    assert meta["model_kwargs"] == {"image_size": 32}  # lenet is built for the input size

    m = _eval(["--checkpoint", str(run / "best.pdparams"), "--val-dir", str(tmp_path / "val"),
               "--output", str(tmp_path / "eval")])
    preds = pd.read_csv(tmp_path / "eval" / "predictions.csv")
    prob = preds[[f"probability_{c}" for c in classes]].to_numpy()
    y, yhat = preds["label"].to_numpy(), prob.argmax(axis=1)
    assert (preds["prediction"] == yhat).all()
    assert np.asarray(m["confusion_matrix"]).shape == (3, 3)
    assert m["confusion_matrix"] == skm.confusion_matrix(y, yhat, labels=[0, 1, 2]).tolist()
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, yhat))
    assert m["f1"] == pytest.approx(skm.f1_score(y, yhat, average="macro"))
    assert m["roc_auc"] == pytest.approx(
        skm.roc_auc_score(y, prob / prob.sum(axis=1, keepdims=True), multi_class="ovr"), abs=1e-5)

    summary = _predict(["--checkpoint", str(run / "best.pdparams"), "--input",
                        str(tmp_path / "val"), "--output", str(tmp_path / "p.csv"),
                        "--num-workers", "0"])
    rows = pd.read_csv(tmp_path / "p.csv")
    assert summary.images == 12
    assert list(rows.columns) == ["path", "probability_a", "probability_b", "probability_c",
                                  "prediction", "class_name", "error"]
    assert list(rows.columns) == [c for c in preds.columns if c != "label"]
    assert set(rows["class_name"]) <= set(classes)
