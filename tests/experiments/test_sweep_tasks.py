"""Sweeps of graders and multi-label models: their task's metrics are sweep metrics, and a
metric the task does not record is refused in one line listing the ones it does."""
from __future__ import annotations

import pandas as pd
import pytest

from palm.cli import sweep as sweep_tool
from palm.errors import BadConfig
from palm.experiments.sweep import check_metric
from tests.folders import TINY_TRAINING
from tests.task_runs import LABELS, graded_csvs, multilabel_csvs


@pytest.mark.parametrize("task, metric", [
    ("ordinal", "best_val_qwk"), ("ordinal", "final_val_mae"),
    ("multilabel", "best_val_macro_roc_auc"), ("multilabel", "final_val_map"),
    ("binary", "best_val_roc_auc"), ("multiclass", "final_val_f1"),
])
def test_each_task_accepts_its_own_metrics(task, metric):
    check_metric(metric, task)


@pytest.mark.parametrize("task, metric, listed", [
    ("binary", "best_val_qwk", "final_val_roc_auc"),
    ("multilabel", "best_val_qwk", "best_val_macro_roc_auc, final_val_macro_roc_auc, best_val_map"),
    ("multilabel", "final_val_roc_auc", "final_val_macro_roc_auc"),
    ("ordinal", "best_val_map", "best_val_qwk, final_val_qwk"),
])
def test_a_metric_the_task_does_not_record_is_refused(task, metric, listed):
    with pytest.raises(BadConfig, match=f"^metric {metric}: not a result of a run; choose from "
                                        f"the {task} task's .*{listed}") as caught:
        check_metric(metric, task)
    assert "\n" not in str(caught.value)


def _csv_args(root, output, *extra):
    return [*TINY_TRAINING, "--train-csv", str(root / "train.csv"), "--val-csv",
            str(root / "val.csv"), "--output", str(output), *extra]


def test_an_ordinal_sweep_plots_quadratic_kappa(tmp_path):
    root = graded_csvs(tmp_path / "graded", n_train=20, n_val=15)
    output = tmp_path / "sweep"
    table = sweep_tool.parse_and_run(_csv_args(root, output, "--task", "ordinal", "--vary",
                                               "lr=0.01,0.05", "--metric", "best_val_qwk"))
    for run in table["trial"]:
        history = pd.read_csv(output / run / "metrics.csv")
        row = table.set_index("trial").loc[run]
        assert row["best_val_qwk"] == pytest.approx(history["val_qwk"].max())
        assert row["final_val_mae"] == pytest.approx(history["val_mae"].iloc[-1])
    assert "final_val_qwk" in (output / "summary.md").read_text().splitlines()[0]
    assert (output / "plot_lr.png").is_file()


def test_a_multilabel_sweep_refuses_kappa_before_training(tmp_path):
    root = multilabel_csvs(tmp_path / "ml", n_train=8, n_val=8)
    output = tmp_path / "sweep"
    with pytest.raises(BadConfig, match="^metric best_val_qwk: not a result of a run; choose "
                                        "from the multilabel task's .*best_val_macro_roc_auc"):
        sweep_tool.parse_and_run(_csv_args(root, output, "--task", "multilabel",
                                           "--label-columns", ",".join(LABELS), "--vary",
                                           "lr=0.01", "--metric", "best_val_qwk"))
    assert not output.exists()
