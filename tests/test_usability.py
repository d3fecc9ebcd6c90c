"""What a newcomer relies on: -c/-o/-b and --resume PATH, runs that never overwrite each other,
evaluation folders rewritten whole, provenance of every result, --quiet, the data tools'
--data-root, the report's tables."""
from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest
import yaml

from palm.cli import COMMANDS, run_tool
from palm.config import apply_overrides, load_config, DEFAULTS
from palm.errors import BadConfig, OutputRefused
from palm.io_utils import replace_outputs
from palm.provenance import data_fingerprint
from palm.cli import eval as eval_tool
from palm.cli import train as train_tool

PROVENANCE_KEYS = {"palm_version", "paddle_version", "device", "data"}


def _tiny(palm_root: Path, *extra: str) -> list[str]:
    return ["--model", "lenet5", "--data-root", str(palm_root), "--image-size", "32",
            "--epochs", "1", "-b", "8", "--num-workers", "0", "--device", "cpu", "--no-progress",
            *extra]


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


def test_resume_takes_a_path(tmp_path):
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    for given in (run, run / "last.pdparams"):
        args = train_tool.parse_args(["--model", "lenet5", "--resume", str(given)])
        assert (args.output, args.resume) == (str(run), True)
    bare = train_tool.parse_args(["--model", "lenet5", "--output", str(run), "--resume"])
    assert (bare.output, bare.resume) == (str(run), True)
    with pytest.raises(SystemExit):  # two different runs named
        train_tool.parse_args(["--model", "lenet5", "--output", str(tmp_path), "--resume",
                               str(run)])


@pytest.mark.slow
def test_default_outputs_never_overwrite_and_record_provenance(palm_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = train_tool.main(train_tool.parse_args(_tiny(palm_root)))
    second = train_tool.main(train_tool.parse_args(_tiny(palm_root)))
    assert (first, second) == (Path("runs/lenet5"), Path("runs/lenet5-2"))
    assert (first / "best.pdparams").is_file() and (second / "best.pdparams").is_file()

    saved = yaml.safe_load((second / "config.yaml").read_text())
    assert saved["output"] == "runs/lenet5-2"
    record = saved["provenance"]
    assert PROVENANCE_KEYS <= set(record) and record["device"] == "cpu"
    assert record["data"]["files"] == 24 + 16 and len(record["data"]["sha256"]) == 64
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", record.get("git_commit", "0" * 40))
    assert load_config(second / "config.yaml")["model"] == "lenet5"  # still a usable -c file

    # an explicit --output holding a run: refused unless --exist-ok
    with pytest.raises(OutputRefused, match="exist_ok"):
        train_tool.main(train_tool.parse_args(_tiny(palm_root, "--output", str(first))))
    again = train_tool.main(train_tool.parse_args(_tiny(palm_root, "--output", str(first),
                                                        "--exist-ok")))
    assert again == first and not Path("runs/lenet5-3").exists()


@pytest.mark.slow
def test_eval_folder_is_rewritten_whole(palm_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = train_tool.main(train_tool.parse_args(_tiny(palm_root, "--output", "run")))
    ckpt = str(run / "best.pdparams")

    def evaluate(*extra: str) -> dict:
        return eval_tool.main(eval_tool.get_args_parser().parse_args(
            ["--checkpoint", ckpt, "--data-root", str(palm_root), "--device", "cpu", *extra]))

    evaluate("--output", "ev", "--report", "--threshold", "0.5")
    ev = Path("ev")
    assert (ev / "report.html").is_file()
    page = (ev / "report.html").read_text(encoding="utf-8")
    metrics = json.loads((ev / "metrics.json").read_text())
    assert PROVENANCE_KEYS <= set(metrics["provenance"])
    assert metrics["provenance"]["data"] == data_fingerprint(
        sorted((palm_root / "PALM-Validation400").glob("*.jpg")))
    assert metrics["class_counts"] == {"non-PM": 8, "PM": 8}
    assert f"Evaluated on <b>{palm_root} (PALM validation split)</b>: 16 images" in page
    assert "non-PM 8, PM 8" in page
    # metrics and metadata in separate tables; sensitivity shown once, not also as recall
    tables = re.findall(r"<table>.*?</table>", page, re.S)
    metric_table = next(t for t in tables if "<th>metric</th>" in t)
    about_table = next(t for t in tables if "about this evaluation" in t)
    assert "sensitivity" in metric_table and "<th>recall</th>" not in metric_table
    for key in ("engine", "compute_precision", "provenance.palm_version", "checkpoint"):
        assert f"<th>{key}</th>" in about_table and f"<th>{key}</th>" not in metric_table

    # again without --report, into the same folder: refused without --exist-ok ...
    with pytest.raises(OutputRefused, match="exist_ok"):
        evaluate("--output", "ev", "--threshold", "0.3")
    # ... and with it the folder holds this evaluation only: no stale report.html
    evaluate("--output", "ev", "--threshold", "0.3", "--exist-ok")
    assert json.loads((ev / "metrics.json").read_text())["threshold"] == 0.3
    assert not (ev / "report.html").exists()
    assert sorted(p.name for p in ev.iterdir()) == sorted(
        ["metrics.json", "predictions.csv", "confusion_matrix.png", "roc_curve.png",
         "pr_curve.png", "reliability_diagram.png"])
    # the default output takes the next free name
    evaluate()
    evaluate()
    assert (run / "eval" / "metrics.json").is_file() and (run / "eval-2" / "metrics.json").is_file()


def test_replace_outputs_keeps_old_files_on_failure(tmp_path):
    (tmp_path / "metrics.json").write_text("old")
    (tmp_path / "report.html").write_text("old")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError):
        with replace_outputs(tmp_path, ("metrics.json", "report.html")) as staging:
            (staging / "metrics.json").write_text("new")
            raise RuntimeError("crash")
    assert (tmp_path / "metrics.json").read_text() == "old"
    with replace_outputs(tmp_path, ("metrics.json", "report.html")) as staging:
        (staging / "metrics.json").write_text("new")
    assert (tmp_path / "metrics.json").read_text() == "new"
    assert not (tmp_path / "report.html").exists()
    assert (tmp_path / "notes.txt").read_text() == "mine"  # not palm's: left alone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "notes.txt"]


def test_quiet_prints_nothing_but_warnings_and_errors(tmp_path, capsys):
    import logging
    import sys

    def main(args):
        print("a summary line")
        print("progress 50%", file=sys.stderr)  # what tqdm writes
        logging.getLogger("palm.test").warning("careful")
        return 0

    for quiet in (False, True):
        parsed = eval_tool.get_args_parser().parse_args(
            ["--checkpoint", "x", *(["--quiet"] if quiet else [])])
        with pytest.raises(SystemExit):
            run_tool(main, parsed)
        out, err = capsys.readouterr()
        assert ("a summary line" in out, "progress" in err) == (not quiet, not quiet)
        assert "careful" in err

    def fails(args):
        raise BadConfig("--epochs must be >= 1")

    with pytest.raises(SystemExit, match="error: --epochs must be >= 1"):
        run_tool(fails, eval_tool.get_args_parser().parse_args(["--checkpoint", "x", "-q"]))


def test_cache_tool_counts_and_clears_only_cache_files(tmp_path, monkeypatch, capsys):
    from palm.cli import cache as cache_tool

    folder = tmp_path / "cache"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i:040x}.npy").write_bytes(b"x" * 1000)
    (folder / "mine.txt").write_text("not the cache's")
    monkeypatch.setenv("PALM_CACHE_DIR", str(folder))
    info = cache_tool.get_args_parser().parse_args(["info"])
    assert cache_tool.main(info) == (3, 3000)
    assert f"{folder}: 3 cached images" in capsys.readouterr().out
    assert cache_tool.main(cache_tool.get_args_parser().parse_args(["clear"])) == (3, 3000)
    assert [p.name for p in folder.iterdir()] == ["mine.txt"]
    assert cache_tool.main(info) == (0, 0)


def test_paddle_warnings_hidden_unless_the_user_chose_a_level():
    from palm.runtime import quiet_paddle_env

    env: dict[str, str] = {}
    assert quiet_paddle_env(env) == {"GLOG_minloglevel": "2"} and env["GLOG_minloglevel"] == "2"
    mine = {"GLOG_minloglevel": "0"}
    assert quiet_paddle_env(mine) == {} and mine["GLOG_minloglevel"] == "0"


def test_an_export_folder_given_as_checkpoint_is_named_as_such(tmp_path):
    from palm.engine.checkpoint import CheckpointError, load_checkpoint_model

    (tmp_path / "palm_meta.json").write_text("{}")
    with pytest.raises(CheckpointError, match="Paddle Inference export.*pdparams checkpoint"):
        load_checkpoint_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="is a folder"):
        load_checkpoint_model(tmp_path / "..")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_subcommand_takes_quiet_and_verbose(name):
    parser = importlib.import_module(COMMANDS[name].module).get_args_parser()
    options = {o for action in parser._actions for o in action.option_strings}
    assert {"-q", "--quiet", "-v", "--verbose"} <= options, name
