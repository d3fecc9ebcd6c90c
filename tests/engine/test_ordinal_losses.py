"""ordinal_loss coral and regression: CORAL's loss and rank-consistent probabilities, grade
regression's cut-points tuned for kappa, and a run of each read alike by eval, predict, the
service and an exported model (the data and runs of tests/engine/test_tasks.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import paddle
import pandas as pd
import pytest
from scipy.special import expit, log_expit
from sklearn import metrics as skm

from palm import config
from palm import metrics as M
from palm.cli import common
from palm.engine.checkpoint import (CheckpointError, load_checkpoint_model, save_checkpoint,
                                    validate_meta)
from palm.engine.losses import OrdinalLoss, coral_loss, grade_regression_loss
from palm.engine.train import TrainingInterrupted
from palm.errors import BadCheckpoint, BadConfig
from palm.models import build_grading_model, build_model
from palm.predictions import ORDINAL_LOSSES, Grader, coral_probabilities
from palm.reports.tasks import run_eval
from palm.viz.cam import GRADE_SCORE
from tests.processes import ctrl_c_in_epoch
from tests.task_runs import GRADES, graded_csvs
from tests.task_runs import train_run as _train

IMAGE = "val/007.png"  # grade 2 (i % 5)


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> Path:
    """test_tasks' graded photos: brightness grows with the grade."""
    return graded_csvs(tmp_path_factory.mktemp("graded"))


# ------------------------------------------------------------------ CORAL

def test_coral_loss_equals_numpy_on_fixed_logits():
    logits = np.array([[2.0, 0.5, -1.0, -3.0], [-0.2, -0.4, -2.0, -2.5], [4.0, 3.0, 1.0, 0.2]],
                      dtype=np.float32)
    grades = np.array([1, 0, 4])
    target = (grades[:, None] > np.arange(GRADES - 1)).astype(float)
    # -[y log s(z) + (1 - y) log(1 - s(z))], summed over the K-1 tasks, mean over images
    expected = -(target * log_expit(logits) + (1 - target) * log_expit(-logits)).sum(1).mean()
    got = float(coral_loss(paddle.to_tensor(logits), paddle.to_tensor(grades)))
    assert got == pytest.approx(expected, rel=1e-6)


def test_coral_network_shares_one_score_and_its_probabilities_are_a_distribution():
    paddle.seed(0)
    model = build_grading_model("lenet5", GRADES, "coral")
    model.eval()
    biases = model.rank_biases.bias.numpy()
    assert biases.shape == (GRADES - 1,) and (np.diff(biases) < 0).all()  # falling from the start
    assert model.num_classes == 1  # the network's own head gives one score
    images = paddle.to_tensor(np.random.default_rng(0).uniform(-1, 1, (16, 3, 32, 32)).astype("float32"))
    logits = model(images).numpy()
    score = logits - biases  # every cumulative logit is the same score plus its bias
    np.testing.assert_allclose(score, np.repeat(score[:, :1], GRADES - 1, 1), atol=1e-5)
    readout = Grader("coral", GRADES).readout(logits)
    exceed = expit(logits)
    assert (readout.probabilities >= 0).all()
    np.testing.assert_allclose(readout.probabilities.sum(1), 1, atol=1e-9)
    np.testing.assert_allclose(readout.expected, exceed.sum(1), atol=1e-6)  # sum_k P(grade > k)
    assert (readout.grades == (exceed > 0.5).sum(1)).all()
    np.testing.assert_allclose(readout.referable, exceed[:, 1], atol=1e-6)  # P(grade >= 2)


def test_coral_probabilities_stay_a_distribution_for_any_cumulative_probabilities():
    exceed = np.random.default_rng(1).uniform(0, 1, (200, GRADES - 1))  # unordered too
    probs = coral_probabilities(exceed)
    assert (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(1), 1)
    ordered = np.sort(exceed, 1)[:, ::-1]  # rank consistent: the plain differences
    np.testing.assert_allclose(coral_probabilities(ordered),
                               -np.diff(np.hstack([np.ones((200, 1)), ordered, np.zeros((200, 1))]), axis=1))


def test_auxiliary_heads_get_the_biases_and_weigh_in_the_loss():
    paddle.seed(0)
    model = build_grading_model("googlenet", GRADES, "coral", aux_logits=True)
    model.train()
    outputs = model(paddle.rand([2, 3, 64, 64]))
    assert isinstance(outputs, (tuple, list)) and len(outputs) == 3
    assert all(list(o.shape) == [2, GRADES - 1] for o in outputs)
    grades = paddle.to_tensor([1, 3])
    loss = float(OrdinalLoss("coral", aux_weight=0.3)(outputs, grades))
    parts = [float(coral_loss(o, grades)) for o in outputs]
    assert loss == pytest.approx(parts[0] + 0.3 * (parts[1] + parts[2]), rel=1e-5)


def test_pretrained_weights_load_into_a_coral_network(tmp_path, caplog):
    from palm.models import load_pretrained
    paddle.seed(1)
    source = build_model("lenet5", 10)  # another head, as ImageNet weights have
    paddle.save(source.state_dict(), str(tmp_path / "w.pdparams"))
    model = build_grading_model("lenet5", GRADES, "coral")
    with caplog.at_level("INFO", logger="palm.models.pretrained"):
        report = load_pretrained(model, tmp_path / "w.pdparams", "lenet5")
    assert report["missing"] == ["rank_biases.bias"] and not report["unexpected"]
    assert report["skipped"] == ["classifier.4.weight", "classifier.4.bias"]  # lenet5's last linear
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    for name in report["loaded"]:
        np.testing.assert_array_equal(model.state_dict()[name].numpy(),
                                      source.state_dict()[name].numpy())


def test_regression_loss_is_the_mean_squared_grade_error():
    score, grades = np.array([[0.2], [2.5], [4.4]], dtype=np.float32), np.array([0, 3, 4])
    got = float(grade_regression_loss(paddle.to_tensor(score), paddle.to_tensor(grades)))
    assert got == pytest.approx(skm.mean_squared_error(grades, score[:, 0]), rel=1e-6)


# ------------------------------------------------------------------ cut-points

def test_tuned_cut_points_are_sorted_and_never_score_below_the_defaults():
    rng = np.random.default_rng(0)
    grades = rng.integers(0, GRADES, 300)
    scores = 0.6 * grades + 0.3 + rng.normal(0, 0.25, 300)  # a squeezed, shifted score
    default = M.default_cut_points(GRADES)
    np.testing.assert_allclose(default, [0.5, 1.5, 2.5, 3.5])
    cuts = M.tune_cut_points(scores, grades, GRADES)
    assert (np.diff(cuts) >= 0).all()

    def kappa(c):
        return skm.cohen_kappa_score(grades, np.digitize(scores, c), weights="quadratic")

    assert kappa(cuts) > kappa(default) + 0.1
    # already right: nothing to gain, nothing lost
    exact = grades + rng.uniform(-0.4, 0.4, 300)
    assert kappa_of(exact, grades, M.tune_cut_points(exact, grades, GRADES)) == pytest.approx(1.0)


def kappa_of(scores, grades, cuts) -> float:
    return skm.cohen_kappa_score(grades, np.digitize(scores, cuts), weights="quadratic")


# ------------------------------------------------------------------ settings and sidecars

def test_ordinal_loss_of_a_binary_task_is_refused_in_one_line(graded, tmp_path):
    assert config.CHOICES["ordinal_loss"] == ORDINAL_LOSSES
    with pytest.raises(SystemExit) as stop:
        common.cli("train", ["--model", "lenet5", "--train-csv", str(graded / "train.csv"),
                             "--val-csv", str(graded / "val.csv"), "--task", "binary",
                             "--ordinal-loss", "coral", "--output", str(tmp_path / "run"),
                             "--device", "cpu"])
    message = str(stop.value.code)
    assert message == ("error: --ordinal-loss coral: applies to --task ordinal (grades 0..K-1), "
                       "not --task binary")
    assert "\n" not in message and not (tmp_path / "run" / "config.yaml").exists()
    with pytest.raises(BadConfig, match="class_weights: applies to ordinal_loss ce, not coral"):
        _train(graded, tmp_path / "w", task="ordinal", ordinal_loss="coral", class_weights="auto")
    from palm.experiments.cv import run_cv
    with pytest.raises(BadConfig, match="ordinal_loss regression: cross-validation pools class"):
        run_cv({**config.DEFAULTS, "ordinal_loss": "regression"}, tmp_path / "cv")


def test_a_checkpoint_saved_before_ordinal_loss_loads_and_evaluates_as_ce(graded, tmp_path):
    paddle.seed(0)
    meta = {"model": "lenet5", "num_classes": GRADES, "class_names": [str(g) for g in range(GRADES)],
            "task": "ordinal", "referable_grade": 2, "image_size": 32,
            "normalize": "minus_one_one", "model_kwargs": {}}
    save_checkpoint(tmp_path / "old.pdparams", build_model("lenet5", GRADES), meta)
    model, loaded = load_checkpoint_model(tmp_path / "old.pdparams")
    assert "ordinal_loss" not in loaded and Grader.from_meta(loaded).ordinal_loss == "ce"
    metrics = run_eval(str(tmp_path / "old.pdparams"), output=str(tmp_path / "eval"),
                       val_csv=str(graded / "val.csv"), ci_resamples=None, device="cpu")
    frame = pd.read_csv(tmp_path / "eval" / "predictions.csv")
    probabilities = frame[[f"probability_{g}" for g in range(GRADES)]].to_numpy()
    assert (frame["prediction"] == probabilities.argmax(1)).all()
    assert metrics["qwk"] == pytest.approx(
        skm.cohen_kappa_score(frame["label"], frame["prediction"], weights="quadratic"))


@pytest.mark.parametrize("change, problem", [
    ({"ordinal_loss": "ranking"}, "ordinal_loss must be one of ce, coral, regression"),
    ({"ordinal_loss": "coral", "task": "binary"}, "ordinal_loss coral needs task ordinal"),
    ({"ordinal_loss": "regression", "cut_points": [0.5, 2.5, 1.5, 3.5]}, "cut_points must be 4 sorted"),
    ({"ordinal_loss": "coral", "cut_points": [0.5, 1.5, 2.5, 3.5]}, "cut_points belong to an ordinal_loss regression"),
])
def test_bad_grading_sidecars_are_named(change, problem):
    meta = {"model": "lenet5", "num_classes": GRADES, "class_names": [str(g) for g in range(GRADES)],
            "task": "ordinal", "image_size": 32}
    with pytest.raises(CheckpointError, match=problem):
        validate_meta({**meta, **change}, "best.json")


# ------------------------------------------------------------------ runs

@pytest.fixture(scope="module")
def coral_run(graded, tmp_path_factory) -> Path:
    return _train(graded, tmp_path_factory.mktemp("coral") / "run", task="ordinal",
                  ordinal_loss="coral", epochs=3)


@pytest.fixture(scope="module")
def regression_run(graded, tmp_path_factory) -> Path:
    return _train(graded, tmp_path_factory.mktemp("regression") / "run", task="ordinal",
                  ordinal_loss="regression", epochs=3)


def _evaluate(run: Path, graded: Path, out: Path, **options) -> tuple[dict, pd.DataFrame]:
    metrics = run_eval(str(run), output=str(out), val_csv=str(graded / "val.csv"),
                       ci_resamples=200, device="cpu", **options)
    return metrics, pd.read_csv(out / "predictions.csv")


def _agree_with_eval(checkpoint: Path, graded: Path, frame: pd.DataFrame, tmp_path: Path
                     ) -> dict:
    """predict on the val folder and the service on one photo give eval's grades; the
    service's answer."""
    from palm.engine.tasks import run_predict
    from tests.serve.helpers import make_client, upload
    run_predict(str(checkpoint), str(graded / "val"), output=str(tmp_path / "p.csv"),
                device="cpu", num_workers=0, progress=False)
    predicted = pd.read_csv(tmp_path / "p.csv").set_index("path")
    by_path = frame.set_index("path")
    assert (predicted.loc[by_path.index, "prediction"] == by_path["prediction"]).all()
    np.testing.assert_allclose(predicted.loc[by_path.index, "expected_grade"],
                               by_path["expected_grade"], atol=1e-5)
    photo = graded / IMAGE
    with make_client(checkpoint) as client:
        answer = client.post("/v1/predict?cam=1",
                             files=upload(("007.png", photo.read_bytes()))).json()
        described = client.get("/v1/model").json()
    meta = json.loads(checkpoint.with_suffix(".json").read_text())
    assert described["ordinal_loss"] == meta["ordinal_loss"]
    assert described["cut_points"] == meta.get("cut_points")
    result = answer["results"][0]
    # one score lies behind every grade: the heatmap says it explains that, not a grade
    assert result["cam_target"] == GRADE_SCORE and result["cam_png_base64"]
    assert result["prediction"] == by_path.loc[str(photo), "prediction"]
    assert result["expected_grade"] == pytest.approx(by_path.loc[str(photo), "expected_grade"], abs=1e-5)
    return result


def test_coral_run_is_chosen_by_kappa_and_eval_equals_sklearn_on_its_predictions(
        coral_run, graded, tmp_path):
    best = json.loads((coral_run / "best.json").read_text())
    history = pd.read_csv(coral_run / "metrics.csv")
    assert best["ordinal_loss"] == "coral" and best["best_metric"] == "val_qwk"
    assert best["epoch"] == int(history["epoch"][history["val_qwk"].idxmax()])
    metrics, frame = _evaluate(coral_run / "best.pdparams", graded, tmp_path / "eval")
    truth, predicted = frame["label"], frame["prediction"]
    probabilities = frame[[f"probability_{g}" for g in range(GRADES)]].to_numpy()
    assert metrics["qwk"] == pytest.approx(skm.cohen_kappa_score(truth, predicted, weights="quadratic"))
    assert metrics["mae"] == pytest.approx(skm.mean_absolute_error(truth, predicted))
    assert metrics["accuracy"] == pytest.approx(skm.accuracy_score(truth, predicted))
    low, high = metrics["ci95"]["accuracy"]  # of the grades given, not the argmax
    assert low <= metrics["accuracy"] <= high
    assert (probabilities >= 0).all() and np.allclose(probabilities.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(frame["expected_grade"], probabilities @ np.arange(GRADES), atol=1e-5)
    # the grade counts P(grade > k) > 0.5, and P(grade >= 2) ranks the referable split
    exceed = 1 - np.cumsum(probabilities, 1)[:, :-1]
    assert (predicted == (exceed > 0.5).sum(1)).all()
    assert metrics["referable"]["roc_auc"] == pytest.approx(
        skm.roc_auc_score(truth >= 2, probabilities[:, 2:].sum(1)), abs=1e-6)


def test_coral_eval_predict_and_the_service_give_the_same_grade(coral_run, graded, tmp_path):
    with pytest.raises(BadConfig, match="fit_temperature applies to softmax and sigmoid models"):
        _evaluate(coral_run / "best.pdparams", graded, tmp_path / "t", fit_temperature=True)
    _, frame = _evaluate(coral_run / "best.pdparams", graded, tmp_path / "eval")
    result = _agree_with_eval(coral_run / "best.pdparams", graded, frame, tmp_path)
    assert sum(result["probabilities"].values()) == pytest.approx(1, abs=1e-5)
    assert result["probability"] == pytest.approx(result["probabilities"][result["class_name"]], abs=1e-6)
    with pytest.raises(SystemExit) as refused:
        common.cli("cam", ["--checkpoint", str(coral_run / "best.pdparams"), "--input",
                           str(graded / IMAGE), "--target", "3", "--output", str(tmp_path / "c")])
    assert str(refused.value.code) == ("error: --target: a grader trained with ordinal_loss coral "
                                       "has one score behind every grade; its Grad-CAM explains "
                                       "that score (run it without one)")


def test_regression_run_tunes_cut_points_that_eval_uses(regression_run, graded, tmp_path):
    best = json.loads((regression_run / "best.json").read_text())
    assert best["ordinal_loss"] == "regression" and best["best_metric"] == "val_qwk"
    cuts = best["cut_points"]
    assert len(cuts) == GRADES - 1 and cuts == sorted(cuts)
    assert best["cut_points_source"] == "tuned for kappa on 30 val images"
    # tuned on the selection images' scores at the chosen epoch, never below k - 0.5 there
    selection = pd.read_csv(regression_run / "best_selection.csv")
    assert kappa_of(selection["logit"], selection["label"], cuts) >= \
        kappa_of(selection["logit"], selection["label"], M.default_cut_points(GRADES))
    metrics, frame = _evaluate(regression_run / "best.pdparams", graded, tmp_path / "eval")
    assert not [c for c in frame.columns if c.startswith("probability")]
    assert metrics["threshold_source"] == "none (grades of ordinal_loss regression)"
    truth, predicted = frame["label"], frame["prediction"]
    assert (predicted == np.digitize(frame["expected_grade"], cuts)).all()  # stored cut-points
    assert metrics["qwk"] == pytest.approx(skm.cohen_kappa_score(truth, predicted, weights="quadratic"))
    assert metrics["mae"] == pytest.approx(skm.mean_absolute_error(truth, predicted))
    # the referable split is ranked by the score, decided at the cut-point below grade 2
    referable = metrics["referable"]
    assert referable["roc_auc"] == pytest.approx(skm.roc_auc_score(truth >= 2, frame["expected_grade"]))
    assert referable["sensitivity"] == pytest.approx(skm.recall_score(truth >= 2, predicted >= 2))
    low, high = metrics["ci95"]["qwk"]
    assert low <= metrics["qwk"] <= high
    assert not (tmp_path / "eval" / "roc_curve.png").exists()  # no probabilities to draw


def test_regression_eval_predict_and_the_service_give_the_same_grade(regression_run, graded,
                                                                     tmp_path):
    _, frame = _evaluate(regression_run / "best.pdparams", graded, tmp_path / "eval")
    result = _agree_with_eval(regression_run / "best.pdparams", graded, frame, tmp_path)
    assert result["probability"] is None and "probabilities" not in result


@pytest.mark.parametrize("loss", ["coral", "regression"])
def test_an_export_grades_as_eval_does(loss, coral_run, regression_run, graded, tmp_path):
    from palm.engine.tasks import run_export
    run = {"coral": coral_run, "regression": regression_run}[loss]
    _, dygraph = _evaluate(run / "best.pdparams", graded, tmp_path / "eval", engine="dygraph")
    exported = run_export(str(run / "best.pdparams"), str(tmp_path / "export"))
    meta = json.loads((exported / "palm_meta.json").read_text())
    assert meta["ordinal_loss"] == loss and meta.get("cut_points") == \
        json.loads((run / "best.json").read_text()).get("cut_points")
    _, inference = _evaluate(exported, graded, tmp_path / "eval-export", engine="inference")
    assert (inference["prediction"] == dygraph["prediction"]).all()
    np.testing.assert_allclose(inference["expected_grade"], dygraph["expected_grade"], atol=1e-4)


def test_a_resumed_coral_run_equals_an_uninterrupted_one(graded, tmp_path, monkeypatch):
    options = {"task": "ordinal", "ordinal_loss": "coral", "epochs": 2}
    straight = _train(graded, tmp_path / "straight", **options)
    with ctrl_c_in_epoch(monkeypatch, 2), \
            pytest.raises(TrainingInterrupted, match="1 epochs completed"):
        _train(graded, tmp_path / "split", **options)
    with pytest.raises(BadCheckpoint, match="trained with ordinal_loss coral; this run asks for ce"):
        _train(graded, tmp_path / "split", **{**options, "ordinal_loss": "ce"}, resume=True)
    split = _train(graded, tmp_path / "split", **options, resume=True)
    a, b = pd.read_csv(straight / "metrics.csv"), pd.read_csv(split / "metrics.csv")
    np.testing.assert_allclose(a["train_loss"], b["train_loss"], rtol=1e-5)
    np.testing.assert_allclose(a["val_qwk"], b["val_qwk"], rtol=1e-6)
    w_a, w_b = paddle.load(str(straight / "last.pdparams")), paddle.load(str(split / "last.pdparams"))
    assert "rank_biases.bias" in w_a and set(w_a) == set(w_b)
    for name in w_a:
        np.testing.assert_allclose(w_a[name].numpy(), w_b[name].numpy(), atol=1e-5, err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["coral", "regression"])
def test_int8_checks_a_coral_or_regression_grader_by_the_kappa_of_its_grades(
        loss, coral_run, regression_run, graded, tmp_path):
    """INT8 reads CORAL's cumulative logits and a regression's score through the Grader, as
    eval does: fp32's figures are eval's, INT8's are scikit-learn's on the INT8 grades."""
    pytest.importorskip("nncf")
    from palm.cli import quantize as quantize_tool
    from palm.engine.inference import load_predictor
    from palm.engine.quantize import calibration_images
    run = {"coral": coral_run, "regression": regression_run}[loss]
    out = tmp_path / "int8"
    result = quantize_tool.main(quantize_tool.get_args_parser().parse_args(
        ["--checkpoint", str(run / "best.pdparams"), "--calib-dir", str(graded / "train"),
         "--val-csv", str(graded / "val.csv"), "--output", str(out), "--calib-images", "16",
         "--force"]))
    metrics, _ = _evaluate(run / "best.pdparams", graded, tmp_path / "eval")
    assert result.metric == "qwk" and result.fp32["qwk"] == pytest.approx(metrics["qwk"], abs=1e-9)
    table = pd.read_csv(graded / "val.csv")
    meta = json.loads((out / "palm_meta.json").read_text())
    images = np.concatenate(calibration_images([str(graded / p) for p in table["path"]], meta,
                                               len(table)))
    grades = Grader.from_meta(meta).readout(load_predictor(out).predict(images)).grades
    assert result.int8["qwk"] == pytest.approx(
        skm.cohen_kappa_score(table["label"], grades, weights="quadratic"), abs=1e-9)
    assert result.agreement["prediction_agreement"] > 0.5
