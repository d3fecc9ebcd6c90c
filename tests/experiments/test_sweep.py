"""Sweeps: factors, ofat/grid settings, run folders, tables and plots, resume, --jobs, Ray;
and the LeNet options the ablations vary.

Runs train LeNet-5 at 32 px for one epoch on a small export of scikit-learn's digits
(8 per digit: 60 training, 20 validation images).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import paddle.nn as nn
import pytest
import yaml

from palm.data.digits import export_digits
from palm.config import DEFAULTS
from palm.experiments.sweep import Factor, parse_factor, settings, trial_name
from palm.errors import BadConfig
from palm.models import build_model
from palm.cli import sweep as sweep_tool
from tests.folders import TINY_TRAINING, noise_photos

REPO = Path(__file__).resolve().parents[2]
TIME_COLUMNS = ["train_seconds"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return export_digits(tmp_path_factory.mktemp("digits"), size=32, per_class=8)


def _sweep_args(digits, output, *extra: str) -> list[str]:
    return ["--base", str(REPO / "configs" / "lenet5.yaml"), "--train-dir", str(digits / "train"),
            "--val-dir", str(digits / "val"), "--epochs", "1", "--batch-size", "16",
            "--num-workers", "0", "--cache-dir", "none", "--device", "cpu", "--no-progress",
            "--output", str(output), *extra]


def _sweep(argv: list[str]) -> pd.DataFrame:
    return sweep_tool.parse_and_run(argv)


@pytest.fixture(scope="module")
def ablation(digits, tmp_path_factory):
    output = tmp_path_factory.mktemp("sweep") / "ablation"
    argv = _sweep_args(digits, output, "--vary", "model_kwargs.pooling=max,avg",
                       "--vary", "lr=0.001,0.01", "--repeats", "2")
    return output, argv, _sweep(argv)


def test_lenet_pooling_and_unknown_options():
    for name, kw in (("lenet5", {}), ("lenet", {"image_size": 32})):
        avg = build_model(name, pooling="avg", **kw)
        pools = [type(m) for m in avg.features if isinstance(m, (nn.AvgPool2D, nn.MaxPool2D))]
        assert pools == [nn.AvgPool2D, nn.AvgPool2D]
        assert all(type(m) is not nn.AvgPool2D for m in build_model(name, **kw).features)
    with pytest.raises(BadConfig, match="lenet5 has no option.* pooing .*takes: in_channels, "
                                        "activation, pooling"):
        build_model("lenet5", pooing="avg")
    with pytest.raises(ValueError, match="unknown pooling 'mean'"):
        build_model("lenet5", pooling="mean")


def test_parse_factor():
    assert parse_factor("lr=0.1,1e-3") == Factor("lr", (0.1, 0.001))
    assert parse_factor("batch_size=8,16") == Factor("batch_size", (8, 16))
    assert parse_factor("model_kwargs.activation=sigmoid,relu").values == ("sigmoid", "relu")
    for bad, message in (("lr", "expected KEY=VALUE1"), ("learning_rate=1", "not a config key"),
                         ("seed=1,2", "use repeats for seeds"), ("lr=0.1,0.1", "listed twice"),
                         ("model_kwargs.=1", "name the model option")):
        with pytest.raises(BadConfig, match=message):
            parse_factor(bad)


def test_ofat_and_grid_settings():
    cfg = {**DEFAULTS, "lr": 0.001, "model_kwargs": {}}
    factors = [parse_factor("lr=0.001,0.01,0.1"), parse_factor("model_kwargs.pooling=max,avg")]
    ofat = settings(cfg, factors, "ofat")
    # the base (lr from the config, pooling unset: its first value), then one change each
    assert ofat == [{"lr": 0.001, "model_kwargs.pooling": "max"},
                    {"lr": 0.01, "model_kwargs.pooling": "max"},
                    {"lr": 0.1, "model_kwargs.pooling": "max"},
                    {"lr": 0.001, "model_kwargs.pooling": "avg"}]
    grid = settings(cfg, factors, "grid")
    assert len(grid) == 6 and len({trial_name(s, 0) for s in grid}) == 6
    with pytest.raises(BadConfig, match="more than once"):
        settings(cfg, factors + [parse_factor("lr=1")], "grid")


def test_sweep_runs_tables_and_plots(ablation):
    output, _, table = ablation
    results = pd.read_csv(output / "results.csv")
    assert len(results) == 6 == len(table)  # 3 settings (ofat) x 2 seeds
    assert {"trial", "model_kwargs.pooling", "lr", "seed", "epochs", "best_val_accuracy",
            "final_val_accuracy", "final_val_loss", "train_seconds"} <= set(results.columns)
    assert sorted(results["seed"].unique()) == [0, 1]
    for _, row in results.iterrows():
        cfg = yaml.safe_load((output / row["trial"] / "config.yaml").read_text())
        assert cfg["model_kwargs"]["pooling"] == row["model_kwargs.pooling"]
        assert cfg["lr"] == row["lr"] and cfg["seed"] == row["seed"]
    # the factor changes the trained network
    by_pool = results[results["lr"] == 0.001].set_index(["model_kwargs.pooling", "seed"])
    assert by_pool.loc[("max", 0), "final_val_loss"] != by_pool.loc[("avg", 0), "final_val_loss"]
    summary = pd.read_csv(output / "summary.csv")
    assert list(summary["runs"]) == [2, 2, 2]
    first = results.iloc[:2]["final_val_accuracy"]
    assert summary.loc[0, "final_val_accuracy_mean"] == pytest.approx(first.mean())
    assert summary.loc[0, "final_val_accuracy_sd"] == pytest.approx(first.std())
    markdown = (output / "summary.md").read_text().splitlines()
    assert len(markdown) == 5 and "±" in markdown[2]
    for name in ("plot_lr.png", "plot_model_kwargs.pooling.png"):
        assert (output / name).stat().st_size > 0


@pytest.mark.slow
def test_same_seed_same_results_and_resume_skips_finished_runs(ablation, digits, tmp_path):
    first_output, _, first = ablation
    output = tmp_path / "again"
    argv = _sweep_args(digits, output, "--vary", "model_kwargs.pooling=max,avg",
                       "--vary", "lr=0.001,0.01", "--repeats", "2")
    again = _sweep(argv)
    pd.testing.assert_frame_equal(again.drop(columns=TIME_COLUMNS),
                                  first.drop(columns=TIME_COLUMNS))
    # one run interrupted after its epoch was saved, before it was recorded as finished
    cut = output / again["trial"][3]
    (cut / "trial.json").unlink()
    logs = {t: (output / t / "train.log").read_text() for t in again["trial"]}
    resumed = _sweep(argv)
    for trial in again["trial"]:
        if output / trial != cut:
            assert (output / trial / "train.log").read_text() == logs[trial]
    assert "resuming" in (cut / "train.log").read_text()
    pd.testing.assert_frame_equal(resumed.drop(columns=TIME_COLUMNS),
                                  again.drop(columns=TIME_COLUMNS))
    with pytest.raises(BadConfig, match="other settings \\(base.epochs differ"):
        _sweep(argv[:argv.index("--epochs") + 1] + ["2"] + argv[argv.index("--epochs") + 2:])


def test_bad_model_option_stops_before_training(digits, tmp_path):
    with pytest.raises(BadConfig, match="no option.* pooing"):
        _sweep(_sweep_args(digits, tmp_path / "bad", "--vary", "model_kwargs.pooing=max,avg"))
    assert not (tmp_path / "bad").exists()


def test_a_diverging_setting_is_a_result(digits, tmp_path):
    table = _sweep(_sweep_args(digits, tmp_path / "lr", "--vary", "lr=0.001,1e30"))
    assert list(table["lr"]) == [0.001, 1e30]
    assert table["note"].isna().tolist() == [True, False]
    assert "diverged: epoch 1" in table["note"][1] and "loss is" in table["note"][1]
    assert table["final_val_accuracy"].notna().tolist() == [True, False]
    assert "| 1e+30 |" in (tmp_path / "lr" / "summary.md").read_text()


@pytest.mark.slow
def test_jobs_2_gives_the_rows_of_jobs_1(ablation, digits, tmp_path):
    _, _, first = ablation
    parallel = _sweep(_sweep_args(digits, tmp_path / "jobs2", "--vary",
                                  "model_kwargs.pooling=max,avg", "--vary", "lr=0.001,0.01",
                                  "--repeats", "2", "--jobs", "2"))
    pd.testing.assert_frame_equal(parallel.drop(columns=TIME_COLUMNS),
                                  first.drop(columns=TIME_COLUMNS))


@pytest.mark.slow
def test_ray_backend_runs_two_trials_locally(digits, tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'palm[ray]')")
    output = tmp_path / "ray"
    table = _sweep(_sweep_args(digits, output, "--vary", "model_kwargs.activation=relu,sigmoid",
                               "--backend", "ray"))
    assert list(table["model_kwargs.activation"]) == ["relu", "sigmoid"]
    for trial in table["trial"]:
        assert (output / trial / "trial.json").is_file()
        assert (output / trial / "last.pdparams").is_file()
    assert table["final_val_accuracy"].between(0, 1).all()


def _two_classes(root: Path, n: int = 4) -> Path:
    for split in ("train", "val"):
        for name in ("normal", "disease"):
            noise_photos(root / split / name, n)
    return root


@pytest.mark.slow
def test_sweep_with_missing_data_writes_nothing_so_the_corrected_rerun_runs(tmp_path):
    data = _two_classes(tmp_path / "data")
    output = tmp_path / "sweep"

    def sweep(train_dir: Path, *extra: str):
        return sweep_tool.parse_and_run([*TINY_TRAINING, "--train-dir", str(train_dir),
                                         "--val-dir", str(data / "val"), "--vary", "lr=0.01",
                                         "--output", str(output), *extra])

    with pytest.raises(FileNotFoundError, match=str(tmp_path / "typo")):
        sweep(tmp_path / "typo")
    assert not output.exists()
    table = sweep(data / "train")  # the corrected command is not "an experiment with other settings"
    assert len(table) and (output / "sweep.json").is_file()


def test_sweep_with_an_unknown_metric_is_refused_before_training(tmp_path):
    data = _two_classes(tmp_path / "data")
    output = tmp_path / "sweep"
    with pytest.raises(BadConfig, match="^metric final_val_auc: not a result of a run; choose "
                                        "from .*final_val_roc_auc"):
        sweep_tool.parse_and_run([*TINY_TRAINING, "--train-dir", str(data / "train"),
                                  "--val-dir", str(data / "val"), "--vary", "lr=0.01",
                                  "--metric", "final_val_auc", "--output", str(output)])
    assert not output.exists()
