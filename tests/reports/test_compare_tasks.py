"""palm compare for graders (ordinal) and multi-label models, on evaluation folders written
by palm's own writer; figures checked against scikit-learn on the predictions CSVs."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from palm.engine.evaluate import EvalResult, write_evaluation
from palm.errors import BadData
from palm.metrics.comparison import delong_test
from palm.metrics.intervals import resample_indices
from palm.reports.compare import compare_models
from palm.reports.tasks import run_compare, run_eval
from tests.task_runs import LABELS as FINDINGS, graded_csvs, multilabel_csvs, train_run

GRADES = [str(g) for g in range(5)]
LABELS = ["diabetes", "glaucoma", "myopia"]
RESAMPLES = 100


def _softmax(x):
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _grader_probs(rng, y, sharpness):
    """Grade probabilities peaked near the true grade, more so for a sharper grader."""
    logits = -sharpness * (np.arange(5)[None, :] - y[:, None] - rng.normal(0, 1, (len(y), 1))) ** 2
    return _softmax(logits + rng.normal(0, 0.3, logits.shape)).astype("float32")


def _ordinal_eval(root, name, y, probs, referable_grade=2, grades=GRADES):
    out = root / name / "eval"
    write_evaluation(EvalResult(probs, y, task="ordinal", referable_grade=referable_grade),
                     [f"img/{i:03d}.png" for i in range(len(y))], grades, 0.5, out,
                     ci_resamples=20)
    return root / name


def _multilabel_eval(root, name, y, probs, labels=LABELS):
    out = root / name / "eval"
    write_evaluation(EvalResult(probs, y, task="multilabel", label_names=labels),
                     [f"img/{i:03d}.png" for i in range(len(y))], labels, 0.5, out,
                     ci_resamples=20)
    return root / name


@pytest.fixture(scope="module")
def graders(tmp_path_factory):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(5), 16)
    root = tmp_path_factory.mktemp("graders")
    return (_ordinal_eval(root, "sharp", y, _grader_probs(rng, y, 1.5)),
            _ordinal_eval(root, "blurry", y, _grader_probs(rng, y, 0.2)))


@pytest.fixture(scope="module")
def multilabel_models(tmp_path_factory):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (90, 3))
    good = 1 / (1 + np.exp(-(2.5 * (y - 0.5) + rng.normal(0, 1, y.shape))))
    poor = 1 / (1 + np.exp(-(0.6 * (y - 0.5) + rng.normal(0, 1, y.shape))))
    root = tmp_path_factory.mktemp("multilabel")
    return (_multilabel_eval(root, "good", y, good.astype("float32")),
            _multilabel_eval(root, "poor", y, poor.astype("float32")))


def test_graders_leaderboard_and_pairs_equal_sklearn_on_their_csvs(graders, tmp_path, capsys):
    out = tmp_path / "cmp"
    run_compare([str(g) for g in graders], str(out), ci_resamples=RESAMPLES)
    frames = [pd.read_csv(g / "eval" / "predictions.csv").sort_values("path") for g in graders]
    board = pd.read_csv(out / "leaderboard.csv").set_index("model")
    kappa = lambda f: skm.cohen_kappa_score(f["label"], f["prediction"], weights="quadratic")
    referable = [(f["label"] >= 2, f[[f"probability_{g}" for g in GRADES[2:]]].sum(1))
                 for f in frames]
    for name, frame, (truth, score) in zip(("sharp", "blurry"), frames, referable):
        row = board.loc[name]
        assert row["qwk"] == pytest.approx(kappa(frame))
        assert row["qwk_low"] <= row["qwk"] <= row["qwk_high"]
        assert row["mae"] == pytest.approx(skm.mean_absolute_error(frame["label"], frame["prediction"]))
        assert row["referable_roc_auc"] == pytest.approx(skm.roc_auc_score(truth, score), abs=1e-6)
    assert list(board.index) == ["sharp", "blurry"]  # best kappa first
    pair = pd.read_csv(out / "pairs.csv").iloc[0]
    assert (pair["model_a"], pair["model_b"]) == ("sharp", "blurry")
    assert pair["qwk_difference"] == pytest.approx(kappa(frames[0]) - kappa(frames[1]))
    y = frames[0]["label"].to_numpy()
    resampled = [skm.cohen_kappa_score(y[i], frames[0]["prediction"].to_numpy()[i],
                                       weights="quadratic", labels=range(5))
                 - skm.cohen_kappa_score(y[i], frames[1]["prediction"].to_numpy()[i],
                                         weights="quadratic", labels=range(5))
                 for i in resample_indices(len(y), RESAMPLES, 0)]
    assert [pair["qwk_difference_low"], pair["qwk_difference_high"]] == pytest.approx(
        np.percentile(resampled, [2.5, 97.5]))
    delong = delong_test(referable[0][0], referable[0][1], referable[1][1])
    assert pair["referable_delong_p"] == pytest.approx(delong["p"], rel=1e-6)
    assert pair["referable_auc_difference"] == pytest.approx(delong["difference"], abs=1e-6)
    printed = capsys.readouterr().out
    assert "quadratic kappa (95% CI)" in printed and "roc_overlay.png" in printed
    assert (out / "roc_overlay.png").stat().st_size > 1000


def test_multilabel_leaderboard_and_per_label_delong_equal_sklearn(multilabel_models, tmp_path):
    out = tmp_path / "cmp"
    board, pairs = compare_models(list(multilabel_models), out, resamples=RESAMPLES)
    frames = [pd.read_csv(m / "eval" / "predictions.csv").sort_values("path")
              for m in multilabel_models]
    truth = frames[0][[f"label_{n}" for n in LABELS]].to_numpy()
    probs = [f[[f"probability_{n}" for n in LABELS]].to_numpy() for f in frames]
    board = board.set_index("model")
    for name, p in zip(("good", "poor"), probs):
        assert board.loc[name, "macro_roc_auc"] == pytest.approx(skm.roc_auc_score(truth, p), abs=1e-6)
        assert board.loc[name, "map"] == pytest.approx(skm.average_precision_score(truth, p), abs=1e-6)
        assert board.loc[name, "macro_roc_auc_low"] <= board.loc[name, "macro_roc_auc"]
    assert list(board.index) == ["good", "poor"]
    assert pairs.iloc[0]["macro_auc_difference"] == pytest.approx(
        skm.roc_auc_score(truth, probs[0]) - skm.roc_auc_score(truth, probs[1]), abs=1e-6)
    per_label = pd.read_csv(out / "pairs_per_label.csv")
    assert list(per_label["label"]) == LABELS
    for j, row in per_label.iterrows():
        want = delong_test(truth[:, j], probs[0][:, j], probs[1][:, j])
        assert row["delong_p"] == pytest.approx(want["p"], rel=1e-6, abs=1e-12)
        assert row["auc_a"] == pytest.approx(skm.roc_auc_score(truth[:, j], probs[0][:, j]), abs=1e-6)
    text = (out / "leaderboard.md").read_text()
    assert "macro AUC (95% CI)" in text and "Per label" in text


def test_mixing_tasks_is_one_line(graders, multilabel_models, tmp_path):
    with pytest.raises(BadData, match=r"ordinal model's evaluation and .* a multilabel one"):
        compare_models([graders[0], multilabel_models[0]], tmp_path / "cmp", resamples=10)


def test_different_grade_counts_or_label_sets_are_refused(graders, multilabel_models, tmp_path):
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(4), 20)
    four = _ordinal_eval(tmp_path, "four", y, _softmax(rng.normal(0, 1, (80, 4))).astype("float32"),
                         grades=GRADES[:4])
    with pytest.raises(BadData, match="different grades"):
        compare_models([graders[0], four], tmp_path / "cmp", resamples=10)
    y = rng.integers(0, 2, (90, 3))
    other = _multilabel_eval(tmp_path, "other", y, rng.random((90, 3)).astype("float32"),
                             labels=["a", "b", "c"])
    with pytest.raises(BadData, match="different labels"):
        compare_models([multilabel_models[0], other], tmp_path / "cmp", resamples=10)


def test_task_is_read_from_the_columns_without_metrics_json(graders, tmp_path):
    copies = []
    for g in graders:
        copy = tmp_path / g.name / "predictions.csv"
        copy.parent.mkdir()
        copy.write_bytes((g / "eval" / "predictions.csv").read_bytes())
        copies.append(copy.parent)
    board, _ = compare_models(copies, tmp_path / "cmp", resamples=10)
    assert "qwk" in board.columns


def test_bad_grade_in_a_csv_names_file_row_and_value(graders, tmp_path):
    csv = tmp_path / "bad" / "predictions.csv"
    csv.parent.mkdir()
    frame = pd.read_csv(graders[1] / "eval" / "predictions.csv")
    frame.loc[3, "prediction"] = 7
    frame.to_csv(csv, index=False)
    (csv.parent / "metrics.json").write_text(json.dumps({"task": "ordinal"}))
    with pytest.raises(BadData, match=r"predictions.csv: row 4, column prediction: 7 is not one of 0..4"):
        compare_models([graders[0], csv], tmp_path / "cmp", resamples=10)


def _trained_and_evaluated(root, data, name, **options):
    run = train_run(data, root / name, **options)
    run_eval(str(run / "last.pdparams"), output=str(run / "eval"), val_csv=str(data / "val.csv"),
             ci_resamples=20, device="cpu")
    return run


def test_compare_trained_graders_and_multilabel_runs_on_their_own_csvs(tmp_path):
    graded = graded_csvs(tmp_path / "graded", n_train=30, n_val=20)
    graders = [_trained_and_evaluated(tmp_path, graded, f"g{e}", task="ordinal", epochs=e)
               for e in (1, 2)]
    board, pairs = compare_models(graders, tmp_path / "cmp_g", resamples=RESAMPLES)
    for run in graders:
        frame = pd.read_csv(run / "eval" / "predictions.csv")
        assert board.set_index("model").loc[run.name, "qwk"] == pytest.approx(
            skm.cohen_kappa_score(frame["label"], frame["prediction"], weights="quadratic"))
    assert (tmp_path / "cmp_g" / "curves_overlay.png").is_file()  # the runs' training curves
    data = multilabel_csvs(tmp_path / "ml", n_train=24, n_val=24)
    models = [_trained_and_evaluated(tmp_path, data, f"m{e}", task="multilabel",
                                     label_columns=FINDINGS, epochs=e, lr=0.01) for e in (1, 2)]
    board, _ = compare_models(models, tmp_path / "cmp_m", resamples=RESAMPLES)
    for run in models:
        frame = pd.read_csv(run / "eval" / "predictions.csv")
        assert board.set_index("model").loc[run.name, "macro_roc_auc"] == pytest.approx(
            skm.roc_auc_score(frame[[f"label_{n}" for n in FINDINGS]],
                              frame[[f"probability_{n}" for n in FINDINGS]]), abs=1e-6)
    assert len(pd.read_csv(tmp_path / "cmp_m" / "pairs_per_label.csv")) == len(FINDINGS)


@pytest.mark.parametrize("value", ["two", 9, None])
def test_a_bad_referable_grade_in_metrics_json_is_named(graders, tmp_path, value):
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "predictions.csv").write_bytes((graders[1] / "eval" / "predictions.csv").read_bytes())
    (folder / "metrics.json").write_text(json.dumps({"task": "ordinal", "referable_grade": value}))
    with pytest.raises(BadData, match=rf"metrics.json: referable_grade {value!r} is not one of 1..4"):
        compare_models([graders[0], folder], tmp_path / "cmp", resamples=10)


def test_a_regression_grader_is_compared_by_its_grades_and_score(ordinal_run, graded, tmp_path):
    """A grade regression has no grade probabilities: kappa from its grades, the referable
    AUC ranked by its score (expected_grade), against a ce grader on the same images."""
    regression = train_run(graded, tmp_path / "regression", task="ordinal",
                           ordinal_loss="regression", referable_grade=3)
    runs = []
    for run in (ordinal_run, regression):
        out = tmp_path / f"eval_{run.name}_{len(runs)}"
        run_eval(str(run / "best.pdparams"), output=str(out), val_csv=str(graded / "val.csv"),
                 ci_resamples=20, device="cpu")
        runs.append(out)
    board, pairs = compare_models(runs, tmp_path / "cmp", resamples=RESAMPLES)
    frames = [pd.read_csv(out / "predictions.csv") for out in runs]
    for out, frame in zip(runs, frames):
        row = board.set_index("model").loc[out.name]
        assert row["qwk"] == pytest.approx(skm.cohen_kappa_score(
            frame["label"], frame["prediction"], weights="quadratic"))
    score = frames[1]["expected_grade"]
    assert board.set_index("model").loc[runs[1].name, "referable_roc_auc"] == pytest.approx(
        skm.roc_auc_score(frames[1]["label"] >= 3, score))
    assert len(pairs) == 1 and 0 <= pairs["referable_delong_p"][0] <= 1
