"""A user's bad command lines: each ends in one line naming the flag,
before anything is written."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from PIL import Image

from palm.cli.common import COMMANDS, cli


def _cli_error(name: str, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        cli(name, argv)
    return str(stop.value.code)


def _class_folders(root: Path, per_class: int = 3) -> Path:
    for name in ("normal", "PM"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(root / name / f"{i}.png")
    return root


def test_cv_without_data_names_the_flags():
    assert _cli_error("cv", ["--folds", "2"]) == \
        "error: no training data: give --data-root (PALM, APTOS-2019, IDRiD), --train-dir or " \
        "--train-csv"


@pytest.mark.parametrize("argv, flag", [(["--folds", "1"], "--folds"),
                                        (["--folds", "2", "--repeats", "0"], "--repeats"),
                                        (["--folds", "2", "--jobs", "0"], "--jobs")])
def test_cv_refuses_a_bad_count_by_its_flag_before_writing(tmp_path, argv, flag):
    out = tmp_path / "cv"
    line = _cli_error("cv", ["--train-dir", str(_class_folders(tmp_path / "d")),
                             "--output", str(out), *argv])
    assert line.startswith(f"error: {flag} must be")
    assert not out.exists()


def test_sweep_refuses_jobs_0_by_its_flag_before_writing(tmp_path):
    out = tmp_path / "sweep"
    line = _cli_error("sweep", ["--train-dir", str(_class_folders(tmp_path / "d")),
                                "--vary", "lr=0.1", "--jobs", "0", "--output", str(out)])
    assert line == "error: --jobs must be >= 1, got 0"
    assert not out.exists()


@pytest.mark.parametrize("argv, line", [
    (["--image-size", "abc"], "error: --image-size must be a side in px or WIDTHxHEIGHT, got 'abc'"),
    (["--image-size", "3"], "error: --image-size must be at least 8 px a side, got 3"),
    (["--image-size", "32", "--n-train", "-3"], "error: --n-train must be >= 0, got -3"),
])
def test_synth_refuses_bad_sizes_and_counts_before_writing(tmp_path, argv, line):
    out = tmp_path / "synth"
    assert _cli_error("synth", ["--output", str(out), *argv]) == line
    assert not out.exists()


def test_serve_refuses_a_port_out_of_range_in_one_line():
    assert _cli_error("serve", ["--checkpoint", "x.pdparams", "--port", "-5"]) == \
        "error: --port must be in [0, 65535], got -5"


def test_benchmark_refuses_an_unknown_model_in_one_line(tmp_path):
    line = _cli_error("benchmark", ["--models", "nope", "--output", str(tmp_path / "b.json")])
    assert line.startswith("error: --models: unknown nope; choose from ")
    assert "resnet18" in line


def test_loadtest_names_a_missing_checkpoint_in_one_line_not_paddles_warnings(tmp_path):
    # the load test times the model itself before it starts the service, so a checkpoint
    # that cannot load is named there, in one line
    line = _cli_error("loadtest", ["--checkpoint", str(tmp_path / "nope.pdparams")])
    assert line == f"error: {tmp_path / 'nope.pdparams'}: no such checkpoint or export folder"


def test_a_missing_required_output_names_only_the_new_flag():
    line = _cli_error_stderr("synth", [])
    assert line.endswith("error: the following arguments are required: --output"), line


def _cli_error_stderr(name: str, argv: list[str]) -> str:
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as stop:
        cli(name, argv)
    assert stop.value.code == 2
    return err.getvalue().strip().splitlines()[-1]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_takes_out_workers_size_as_its_new_flags(name):
    parser = importlib.import_module(COMMANDS[name].module).get_args_parser(f"palm {name}")
    actions = parser._option_string_actions
    for old, new in (("--out", "--output"), ("--workers", "--num-workers"),
                     ("--size", "--image-size")):
        if new in actions:
            assert actions.get(old) is actions[new], (name, old)
            assert f"{old} " not in parser.format_help(), (name, old)


def test_digits_names_the_image_size_flag(tmp_path):
    line = _cli_error("digits", ["--output", str(tmp_path / "d"), "--image-size", "3"])
    assert line == "error: --image-size must be >= 8 (the digits are 8 x 8), got 3"
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("name, argv, line", [
    ("benchmark", ["--iters", "0"], "error: --iters must be >= 1 (got 0)"),
    ("benchmark-data", ["--workers", "1", "-1"], "error: --workers[1] must be >= 0 (got -1)"),
    ("loadtest", ["--checkpoint", "x.pdparams", "--concurrency", "0"],
     "error: --concurrency must be >= 1 (got 0)"),
])
def test_benchmark_counts_name_their_flags(tmp_path, name, argv, line):
    assert _cli_error(name, [*argv, "--output", str(tmp_path / "b.json")]) == line


def test_benchmark_refuses_a_size_its_checkpoints_cannot_hold(tmp_path):
    line = _cli_error("benchmark", ["--models", "resnet18", "--sizes", "3",
                                    "--output", str(tmp_path / "b.json")])
    assert line == "error: --sizes[0] must be >= 16 (got 3)"


def test_train_refuses_a_size_no_checkpoint_could_hold(tmp_path):
    """A run trained at 8 px wrote a checkpoint its own loader refused (16..4096)."""
    line = _cli_error("train", ["--model", "lenet5", "--data-root", str(tmp_path),
                                "--image-size", "8", "--output", str(tmp_path / "run")])
    assert line == "error: --image-size must be in [16, 4096], got 8"
    assert not (tmp_path / "run").exists()


def test_stats_and_cam_refuse_sides_too_small_to_mean_anything(tmp_path):
    folders = _class_folders(tmp_path / "photos")
    assert _cli_error("stats", [str(folders), "--image-size", "3"]) == \
        "error: --image-size must be in [16, 4096], got 3"
    line = _cli_error("cam", ["--checkpoint", "x.pdparams", "--input", str(folders),
                              "--max-side", "3", "--output", str(tmp_path / "cams")])
    assert line == "error: --max-side must be 0 (full size) or >= 16 px, got 3"
    assert not (tmp_path / "cams").exists()
