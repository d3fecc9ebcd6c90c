"""palm.config: YAML defaults, command-line overrides, validation, saved config."""
import argparse

import numpy as np
import pytest

from palm import config
from palm.models import list_models
from palm.viz import plots
from palm.config import load_config
from palm.errors import BadConfig
from palm.config import apply_overrides, DEFAULTS
from palm.cli import train as train_tool
from palm.config import check_options
from palm.cli import eval as eval_tool
from palm.cli import predict as predict_tool
from tests.processes import run_checkout_tool, stderr_lines, tool_exit


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("--config")
    p.add_argument("--model")
    p.add_argument("--demo", action="store_true")
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--amp", action="store_true")
    return p


def test_yaml_defaults_and_command_line_wins(tmp_path):
    (tmp_path / "tiny.yaml").write_text("epochs: 7\nlr: 0.01\nbatch_size: 4\noptimizer: adamw\n")
    args = config.parse_args_with_config(_parser(), ["--model", "tiny", "--epochs", "2"], tmp_path)
    assert args.model == "tiny"
    assert args.epochs == 2  # command line beats the file
    assert args.lr == 0.01 and args.batch_size == 4 and args.optimizer == "adamw"  # file
    assert args.momentum == config.DEFAULTS["momentum"]  # neither: built-in default
    assert args.amp is False


def test_explicit_config_file_and_demo(tmp_path):
    cfg = tmp_path / "other.yaml"
    cfg.write_text("model: lenet\nimage_size: 32\n")
    args = config.parse_args_with_config(_parser(), ["--config", str(cfg)], tmp_path)
    assert (args.model, args.image_size) == ("lenet", 32)
    args = config.parse_args_with_config(_parser(), ["--demo", "--epochs", "1"], tmp_path)
    assert args.model == config.DEMO_OVERRIDES["model"]
    assert args.data_root == config.DEMO_DATA_ROOT and args.epochs == 1


def test_missing_model_config_falls_back_with_warning(tmp_path, caplog):
    args = config.parse_args_with_config(_parser(), ["--model", "nosuch"], tmp_path)
    assert "nosuch.yaml not found" in caplog.text
    assert args.epochs == config.DEFAULTS["epochs"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("learning_rate: 0.1\n", "unknown key.*learning_rate"),
        ("epochs: ten\n", "epochs must be int"),
        ("optimizer: sgd\n", "optimizer 'sgd': choose from momentum, adam, adamw"),
        ("fundus_crop: 1\n", "fundus_crop must be bool"),
        ("pos_weight: heavy\n", "pos_weight must be a number or 'auto'"),
        ("- a\n- b\n", "expected a mapping"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        config.load_config(path)
    assert "bad.yaml" in str(info.value)


def test_save_config_round_trips(tmp_path):
    cfg = {**config.DEFAULTS, "lr": 0.05, "augment": {"hflip": True}, "pos_weight": "auto"}
    path = config.save_config(cfg, tmp_path / "run")
    assert path.name == "config.yaml"
    assert config.load_config(path) == cfg


def test_repo_configs_are_valid():
    paths = sorted(p for p in config.CONFIG_DIR.iterdir() if p.name.endswith(".yaml"))
    configs = sorted(p.name.removesuffix(".yaml") for p in paths)
    # Configs are optional (a network without one trains on DEFAULTS); each one names a network.
    unknown = [name for name in configs if name not in list_models()]
    assert not unknown, f"palm/configs/NAME.yaml for unregistered networks {unknown}"
    for path in paths:
        cfg = config.load_config(path)
        assert cfg["model"] == path.name.removesuffix(".yaml")
        same = [k for k, v in cfg.items() if k != "model" and v == config.DEFAULTS[k]]
        assert not same, f"{path.name} repeats defaults {same}"


def test_user_config_file_is_read_by_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model: lenet\nepochs: 2\n")
    parser = argparse.ArgumentParser()
    for flag in ("--model", "--config"):
        parser.add_argument(flag)
    parser.add_argument("--epochs", type=int)
    args = config.parse_args_with_config(parser, ["--config", str(path)])
    assert (args.model, args.epochs) == ("lenet", 2)
    assert config.model_config("vgg16")["batch_size"] == 10  # packaged, found without a path


def test_plots_write_pngs(tmp_path):
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "val_accuracy": 0.5 + e / 10,
                "val_roc_auc": float("nan") if e == 1 else 0.9, "val_sensitivity": 0.6,
                "val_specificity": 0.7} for e in (1, 2, 3)]
    written = plots.plot_history(history, tmp_path)
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([0.1, 0.6, 0.4, 0.8, 0.9])
    written += [
        plots.plot_confusion_matrix([[1, 1], [1, 2]], ["non-PM", "PM"], tmp_path / "cm.png"),
        plots.plot_roc_curve(y, p, tmp_path / "roc.png", ["non-PM", "PM"], threshold=0.5),
        plots.plot_pr_curve(y, p, tmp_path / "pr.png", ["non-PM", "PM"]),
        plots.plot_roc_curve([0, 1, 2], np.eye(3), tmp_path / "roc3.png", ["a", "b", "c"]),
    ]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["loss_curve.png", "metrics_curve.png", "cm.png", "roc.png", "pr.png", "roc3.png"]
    )  # no temporary files left behind
    with pytest.raises(ValueError, match=r"\(2, 2\).*3 class names"):
        plots.plot_confusion_matrix([[1, 1], [1, 2]], ["a", "b", "c"], tmp_path / "x.png")


def test_yaml_aliases_cannot_expand_a_config(tmp_path):
    """Aliases listing the one above nine times, 9 levels: printing `lr` in the error
    message took minutes and gigabytes (here 7 levels, 4.8 million values)."""
    lines = ['k0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"k{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 7)]
    path = tmp_path / "laughs.yaml"
    path.write_text("model: lenet5\nlr: {" + ", ".join(lines) + "}\n")
    with pytest.raises(BadConfig, match=r"laughs.yaml: not valid YAML \(more than 100000 values "
                                        r"once its aliases"):
        load_config(path)


def test_config_file_overrides_and_short_flags(tmp_path):
    cfg = tmp_path / "my.yaml"
    cfg.write_text("model: alexnet\nepochs: 7\nlr: 0.01\n")
    args = train_tool.parse_args(["-c", str(cfg), "-o", "epochs=3", "-o", "lr=1e-4",
                                  "-o", "model_kwargs.dropout=0.25", "-o", "augment=none",
                                  "-b", "5"])
    assert (args.model, args.epochs, args.lr, args.batch_size) == ("alexnet", 3, 1e-4, 5)
    assert args.model_kwargs == {"dropout": 0.25} and isinstance(args.lr, float)
    # a flag still wins over -o, which wins over the file
    assert train_tool.parse_args(["-c", str(cfg), "-o", "epochs=3", "--epochs", "4"]).epochs == 4
    with pytest.raises(BadConfig, match="unknown key 'epoch'"):
        train_tool.parse_args(["-c", str(cfg), "-o", "epoch=3"])
    with pytest.raises(BadConfig, match="epochs must be int"):  # YAML-typed, then validated
        train_tool.parse_args(["-c", str(cfg), "-o", "epochs=three"])
    with pytest.raises(BadConfig, match="KEY=VALUE"):
        train_tool.parse_args(["-c", str(cfg), "-o", "epochs"])
    with pytest.raises(BadConfig, match="not a mapping"):
        apply_overrides(DEFAULTS, ["epochs.x=1"])


def test_yaml_exponent_numbers_are_numbers(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: lenet\nlr: 1e-3\nweight_decay: 5E-4\nepochs: 3\n")
    assert load_config(cfg) == {"model": "lenet", "lr": 0.001, "weight_decay": 0.0005, "epochs": 3}
    args = train_tool.parse_args(["--config", str(cfg)])
    assert (args.lr, args.weight_decay) == (0.001, 0.0005)


@pytest.mark.parametrize("argv, line", [
    (["--epochs", "0"], "error: --epochs must be >= 1, got 0"),
    (["--epochs", "-3"], "error: --epochs must be >= 1, got -3"),
    (["--lr", "0"], "error: --lr must be > 0, got 0.0"),
    (["--lr", "nan"], "error: --lr must be a finite number > 0, got nan"),
    (["--pos-weight", "-1"], "error: --pos-weight must be > 0, got -1.0"),
    (["--weight-decay", "-0.1"], "error: --weight-decay must be >= 0, got -0.1"),
    (["--warmup-epochs", "-1"], "error: --warmup-epochs must be >= 0, got -1.0"),
    (["--batch-size", "0"], "error: --batch-size must be >= 1, got 0"),
    (["--image-size", "60000"], "error: --image-size must be in [16, 4096], got 60000"),
    (["--num-workers", "-1"], "error: --num-workers must be >= 0, got -1"),
])
def test_train_options_out_of_range_are_one_line(argv, line):
    assert tool_exit(train_tool.parse_and_run, ["--model", "lenet", *argv]) == line


def test_config_values_out_of_range_name_the_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("gamma: 0\n")
    assert tool_exit(train_tool.parse_and_run, ["--config", str(cfg)]) == (
        f"error: {cfg}: gamma must be in (0, 1], got 0")
    with pytest.raises(BadConfig, match="momentum must be in \\[0, 1\\), got 1.5"):
        check_options({"momentum": 1.5}, "run.yaml")


@pytest.mark.parametrize("tool, argv, line", [
    (predict_tool, ["--threshold", "2"], "error: --threshold must be in [0, 1], got 2.0"),
    (predict_tool, ["--threshold", "nan"], "error: --threshold must be a finite number in [0, 1], got nan"),
    (predict_tool, ["--batch-size", "0"], "error: --batch-size must be >= 1, got 0"),
    (eval_tool, ["--threshold", "-1"], "error: --threshold must be in [0, 1], got -1.0"),
    (eval_tool, ["--num-workers", "-2"], "error: --num-workers must be >= 0, got -2"),
])
def test_eval_predict_options_out_of_range_are_one_line(tool, argv, line, lenet_checkpoint, tmp_path):
    base = ["--checkpoint", str(lenet_checkpoint), "--output", str(tmp_path / "out.csv")]
    base += ["--input", str(tmp_path)] if tool is predict_tool else ["--val-dir", str(tmp_path)]
    assert tool_exit(tool.main, tool.get_args_parser().parse_args(base + argv)) == line
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


@pytest.mark.slow
def test_epochs_0_from_the_shell_is_one_line_and_exit_1():
    proc = run_checkout_tool("train.py", ["--model", "lenet", "--epochs", "0"], timeout=120)
    assert proc.returncode == 1
    assert stderr_lines(proc.stderr) == ["error: --epochs must be >= 1, got 0"]


def test_ci_resamples_is_bounded():
    check_options({"ci_resamples": 2000})
    with pytest.raises(BadConfig, match="^ci_resamples must be in"):
        check_options({"ci_resamples": 100_000_000})  # would need gigabytes, then die
