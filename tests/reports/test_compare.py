"""tools/compare.py: leaderboard with intervals, paired tests and an overlaid ROC plot, from
predictions.csv files written by the evaluation writer."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from palm import metrics as M
from palm.reports.compare import compare_models
from palm.engine.evaluate import EvalResult, write_evaluation
from palm.errors import BadData
from palm.cli import compare as compare_tool
from pathlib import Path
from palm.reports.compare import read_predictions
from palm.io_utils import read_csv
from tests.marks import quick_or_slow
from tests.formula_cells import NAMES, assert_no_formula_cells

CLASSES = ["non-PM", "PM"]


def _eval_folder(root, name, labels, probs, files=None):
    """RUN/eval as tools/eval.py leaves it, for made-up probabilities."""
    files = files or [f"img/{i:03d}.jpg" for i in range(len(labels))]
    out = root / name / "eval"
    write_evaluation(EvalResult(np.asarray(probs, "float32"), np.asarray(labels)), files,
                     CLASSES, 0.5, out, ci_resamples=100)
    return root / name


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 60)
    good = 1 / (1 + np.exp(-(rng.normal(0, 1, 120) + 2.5 * (y - 0.5))))
    poor = 1 / (1 + np.exp(-(rng.normal(0, 1, 120) + 0.8 * (y - 0.5))))
    root = tmp_path_factory.mktemp("runs")
    return y, good, poor, _eval_folder(root, "good", y, good), _eval_folder(root, "poor", y, poor)


def test_compare_two_runs_table_and_plot(two_runs, tmp_path, capsys):
    y, good, poor, run_a, run_b = two_runs
    out = tmp_path / "cmp"
    compare_tool.main(compare_tool.get_args_parser().parse_args(
        [str(run_b), str(run_a / "eval" / "predictions.csv"), "--output", str(out),
         "--ci-resamples", "300"]))
    for name in ("leaderboard.md", "leaderboard.csv", "pairs.csv", "roc_overlay.png"):
        assert (out / name).is_file(), name
    board = pd.read_csv(out / "leaderboard.csv")
    assert list(board["model"]) == ["good", "poor"]  # best AUC first, named by run folder
    assert board["roc_auc"][0] == pytest.approx(M.roc_auc(y, good), abs=1e-6)
    assert board["roc_auc_low"][0] < board["roc_auc"][0] < board["roc_auc_high"][0]
    sens = np.mean(good[y == 1] >= 0.5)
    assert board["sensitivity"][0] == pytest.approx(sens, abs=1e-9)
    pairs = pd.read_csv(out / "pairs.csv")
    assert len(pairs) == 1 and (pairs["model_a"][0], pairs["model_b"][0]) == ("good", "poor")
    want = M.delong_test(y, good.astype("float32"), poor.astype("float32"))
    assert pairs["delong_p"][0] == pytest.approx(want["p"], rel=1e-4) and want["p"] < 0.01
    assert 0 < pairs["difference_low"][0] < pairs["auc_difference"][0] < pairs["difference_high"][0]
    assert 0 <= pairs["mcnemar_p"][0] <= 1
    printed = capsys.readouterr().out
    assert "| good |" in printed and "AUC a - b" in printed and "McNemar p" in printed


def test_identical_models_have_p_one(two_runs, tmp_path):
    y, good, _, run_a, _ = two_runs
    copy = _eval_folder(tmp_path, "copy", y, good)
    _, pairs = compare_models([run_a, copy], tmp_path / "same", resamples=100)
    assert pairs["delong_p"][0] == 1.0 and pairs["mcnemar_p"][0] == 1.0
    assert pairs["auc_difference"][0] == 0.0


def test_mismatched_images_are_one_clear_error(two_runs, tmp_path):
    y, good, _, run_a, _ = two_runs
    other = _eval_folder(tmp_path, "other", y, good,
                         files=[f"img/{i:03d}.jpg" for i in range(1, 121)])
    with pytest.raises(BadData, match="do not score the same images: 1 only in the first, "
                                      "1 only in the second") as err:
        compare_models([run_a, other], tmp_path / "x")
    assert "\n" not in str(err.value) and str(run_a) in str(err.value)


def test_one_image_named_relative_and_absolute_is_one_image(two_runs, tmp_path, monkeypatch):
    """eval writes a list's paths as given: one run of it with `ml/val.csv`, one with
    `/abs/ml/val.csv`; compare, run from the same folder, pairs them."""
    y, good, poor, _, _ = two_runs
    monkeypatch.chdir(tmp_path)
    relative = _eval_folder(tmp_path, "rel", y, good)
    absolute = _eval_folder(tmp_path, "abs", y, poor,
                            files=[str(tmp_path / f"img/{i:03d}.jpg") for i in range(len(y))])
    board, pairs = compare_models([relative, absolute], tmp_path / "cmp", resamples=50)
    assert list(board["images"]) == [len(y), len(y)]
    assert pairs["delong_p"][0] == pytest.approx(
        M.delong_test(y, good.astype("float32"), poor.astype("float32"))["p"], rel=1e-4)


def test_inputs_without_labels_or_predictions_are_refused(two_runs, tmp_path):
    _, _, _, run_a, _ = two_runs
    csv = tmp_path / "predict.csv"
    pd.DataFrame({"path": ["a.jpg"], "probability": [0.3], "prediction": [0]}).to_csv(csv)
    with pytest.raises(BadData, match="lacks column"):
        compare_models([run_a, csv], tmp_path / "x")
    with pytest.raises(BadData, match="no predictions.csv"):
        compare_models([run_a, tmp_path], tmp_path / "x")
    with pytest.raises(BadData, match="at least two"):
        compare_models([run_a], tmp_path / "x")


def _quickstart_run(root: Path, name: str, labels, probs) -> Path:
    """RUN as the Quickstart leaves it: eval/predictions.csv (labelled, by tools/eval.py)
    and predictions.csv (tools/predict.py's, no labels) side by side."""
    files = [f"img/{i:03d}.jpg" for i in range(len(labels))]
    write_evaluation(EvalResult(np.asarray(probs, "float32"), np.asarray(labels)), files,
                     ["non-PM", "PM"], 0.5, root / name / "eval", ci_resamples=20)
    pd.DataFrame({"path": files, "probability": probs, "prediction": np.round(probs).astype(int),
                  "class_name": "PM", "error": ""}).to_csv(root / name / "predictions.csv",
                                                           index=False)
    return root / name


def test_compare_takes_a_run_folders_labelled_evaluation(tmp_path):
    y = np.repeat([0, 1], 20)
    rng = np.random.default_rng(0)
    runs = [_quickstart_run(tmp_path, name, y, np.clip(0.5 * y + rng.uniform(0, 0.5, 40), 0, 1))
            for name in ("demo", "other")]
    board, _ = compare_models(runs, tmp_path / "cmp", resamples=20)
    assert sorted(board["model"]) == ["demo", "other"] and len(board) == 2


def test_compare_names_what_it_looked_at_when_nothing_has_labels(tmp_path):
    y = np.repeat([0, 1], 5)
    run = _quickstart_run(tmp_path, "demo", y, y * 0.8 + 0.1)
    (run / "eval" / "predictions.csv").unlink()
    with pytest.raises(BadData) as err:
        compare_models([run, run], tmp_path / "cmp", resamples=20)
    message = str(err.value)
    assert str(run / "eval" / "predictions.csv") in message and "missing" in message
    assert f"{run / 'predictions.csv'} (no label column)" in message


def _escaped_eval_folder(root: Path, probs: np.ndarray) -> Path:
    labels = np.arange(len(NAMES)) % 2
    write_evaluation(EvalResult(probs.astype("float32"), labels), NAMES, ["-neg", "@pos"], 0.5,
                     root / "eval", ci_resamples=50)
    return root


def test_eval_and_compare_escape_and_match_rows(tmp_path):
    rng = np.random.default_rng(0)
    a = _escaped_eval_folder(tmp_path / "a", rng.uniform(size=len(NAMES)))
    b = _escaped_eval_folder(tmp_path / "b", rng.uniform(size=len(NAMES)))
    predictions = a / "eval" / "predictions.csv"
    assert_no_formula_cells(predictions)
    assert pd.read_csv(predictions)["probability"].dtype == float
    # as they were written (compare reads relative paths from where it runs)
    assert sorted(os.path.relpath(f) for f in read_predictions(predictions).files) == sorted(NAMES)

    out = tmp_path / "cmp"
    compare_tool.main(compare_tool.get_args_parser().parse_args(
        [str(a), str(b), "--names", "=good,@poor", "--output", str(out),
         "--ci-resamples", "50"]))
    for name in ("leaderboard.csv", "pairs.csv"):
        assert_no_formula_cells(out / name)
    board = read_csv(out / "leaderboard.csv")
    assert sorted(board["model"]) == ["=good", "@poor"] and board["images"].tolist() == [8, 8]


def _predictions(tmp_path, name, labels, probs, **columns):
    out = tmp_path / name / "eval"
    files = [f"img/{i:03d}.jpg" for i in range(len(labels))]
    write_evaluation(EvalResult(np.asarray(probs, "float32"), np.asarray(labels)), files,
                     CLASSES, 0.5, out, ci_resamples=0)
    csv = out / "predictions.csv"
    if columns:
        frame = pd.read_csv(csv)
        for key, value in columns.items():
            frame[key] = value
        frame.to_csv(csv, index=False)
    return csv


def test_compare_refuses_one_class_and_empty_predictions(tmp_path):
    a = _predictions(tmp_path, "a", [1, 1, 1], [0.2, 0.7, 0.9])
    b = _predictions(tmp_path, "b", [1, 1, 1], [0.3, 0.6, 0.4])
    with pytest.raises(BadData, match="both classes"):
        compare_models([a, b], tmp_path / "cmp", resamples=50)
    empty = tmp_path / "empty.csv"
    pd.read_csv(a).iloc[:0].to_csv(empty, index=False)
    with pytest.raises(BadData, match="no predictions"):
        compare_models([empty, empty], tmp_path / "cmp2", resamples=50)


@pytest.mark.parametrize("column, value", [("prediction", "PM"),
                                           *quick_or_slow([("prediction", 5), ("prediction", np.nan),
                                                           ("probability", 3.0)], ())])
def test_compare_refuses_bad_decisions_and_probabilities(tmp_path, column, value):
    y = [0, 1, 0, 1]
    a = _predictions(tmp_path, "a", y, [0.2, 0.7, 0.4, 0.9])
    b = _predictions(tmp_path, "b", y, [0.3, 0.6, 0.4, 0.8])
    frame = pd.read_csv(b)
    frame[column] = frame[column].astype(object)
    frame.loc[1, column] = value
    frame.to_csv(b, index=False)
    with pytest.raises(BadData, match=column):
        compare_models([a, b], tmp_path / "cmp", resamples=50)


def test_compare_multiclass_is_named_as_such(tmp_path):
    out = tmp_path / "m" / "eval"
    write_evaluation(EvalResult(np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]],
                                         "float32"), np.array([0, 1, 2])),
                     ["a.jpg", "b.jpg", "c.jpg"], ["a", "b", "c"], 0.5, out, ci_resamples=0)
    with pytest.raises(BadData, match="multi-class"):
        compare_models([out, out], tmp_path / "cmp", resamples=50)


def test_compare_same_image_spelt_two_ways_is_a_duplicate(tmp_path):
    a = _predictions(tmp_path, "a", [0, 1, 0], [0.2, 0.7, 0.4])
    frame = pd.read_csv(a)
    frame.loc[1, "path"] = "img/./000.jpg"
    frame.loc[1, "label"] = 0
    frame.to_csv(a, index=False)
    with pytest.raises(BadData, match="more than once"):
        compare_models([a, a], tmp_path / "cmp", resamples=50)


def test_runs_training_curves_are_overlaid(two_runs, tmp_path, monkeypatch):
    """Run folders with a metrics.csv get their curves on shared axes (the with / without
    pretraining figure); the figure of an earlier comparison is not left beside new tables."""
    import palm.reports.compare as compare_module
    y, good, poor, run_a, run_b = two_runs
    runs = tmp_path / "runs"
    for run, losses in ((run_a, [0.6, 0.4]), (run_b, [0.7, 0.65])):
        copy = runs / run.name
        (copy / "eval").mkdir(parents=True)
        (copy / "eval" / "predictions.csv").write_bytes((run / "eval" / "predictions.csv").read_bytes())
        pd.DataFrame({"epoch": [1, 2], "train_loss": losses, "val_loss": losses,
                      "val_roc_auc": [0.7, 0.8]}).to_csv(copy / "metrics.csv", index=False)
    drawn = []
    real = compare_module.plot_history_overlay
    monkeypatch.setattr(compare_module, "plot_history_overlay",
                        lambda histories, path: drawn.append(histories) or real(histories, path))
    out = tmp_path / "cmp"
    compare_models([runs / "good", runs / "poor" / "eval"], out, resamples=50)
    assert (out / "curves_overlay.png").stat().st_size > 1000
    (names_and_rows,) = drawn
    assert [name for name, _ in names_and_rows] == ["good", "poor"]
    assert [row["val_loss"] for row in names_and_rows[1][1]] == [0.7, 0.65]

    compare_models([run_a, run_b], out, resamples=50)  # no metrics.csv beside these
    assert not (out / "curves_overlay.png").exists()


@pytest.mark.parametrize("content", [
    b"epoch,train_loss,val_loss,val_roc_auc\n1,abc,0.5,0.7\none,0.4,0.4,0.8\n",
    b"epoch,train_loss,val_loss,val_roc_auc\n-1e308,1e308,-1e308,0.7\n1e308,0.4,0.4,0.8\n",
    b"\x89PNG\r\n\x1a\n\x00\x00binary",
    b"epoch;val_loss\n1;0.5\n",
    b"epoch,val_loss\n" + b"1,0.5\n" * 200_000,  # 1.2 MB: not a run's metrics.csv
    None,  # a folder named metrics.csv
])
def test_odd_metrics_files_never_stop_a_comparison(two_runs, tmp_path, caplog, content):
    """A metrics.csv that is not a run's is left out of the curves with a warning naming it
    (or its odd values left as gaps); the tables are written all the same."""
    y, good, poor, run_a, run_b = two_runs
    odd = tmp_path / "odd"
    (odd / "eval").mkdir(parents=True)
    (odd / "eval" / "predictions.csv").write_bytes((run_a / "eval" / "predictions.csv").read_bytes())
    if content is None:
        (odd / "metrics.csv").mkdir()
    else:
        (odd / "metrics.csv").write_bytes(content)
    out = tmp_path / "cmp"
    compare_models([odd, run_b], out, resamples=50)
    assert (out / "leaderboard.csv").is_file()
    drawn = (out / "curves_overlay.png").exists()
    warned = [r.getMessage() for r in caplog.records if "metrics.csv" in r.getMessage()]
    assert drawn != bool(warned), (drawn, warned)  # either plotted (gaps) or named and skipped
    assert all(str(odd / "metrics.csv") in w for w in warned)
