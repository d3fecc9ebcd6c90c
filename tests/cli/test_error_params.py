"""Library errors name parameters (`epochs`); the command line names flags (`--epochs`), mapped
in one place (palm.cli.common.flag_message) through the parser's own dest -> option table."""
from __future__ import annotations

import json

import pytest

from palm.cli import eval as eval_cmd, report as report_cmd, synth as synth_cmd
from palm.cli.common import cli, flag_message, flags_of
from palm.config import check_options
from palm.errors import BadConfig, OutputRefused


def _cli_error(name: str, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        cli(name, argv)
    return str(stop.value.code)


def test_range_check_names_the_parameter_in_the_library():
    with pytest.raises(BadConfig) as info:
        check_options({"batch_size": 0})
    assert str(info.value) == "batch_size must be >= 1, got 0" and info.value.param == "batch_size"


def test_range_check_names_the_flag_on_the_command_line(tmp_path):
    line = _cli_error("cam", ["--checkpoint", "x", "--input", str(tmp_path), "--output",
                              str(tmp_path / "o"), "--batch-size", "0"])
    assert line == "error: --batch-size must be >= 1, got 0"


def test_service_settings_name_parameters_in_the_library():
    from palm.serve.config import ServiceConfig

    with pytest.raises(BadConfig) as info:
        ServiceConfig(checkpoint="x", max_wait_ms=-1).check()
    assert str(info.value).startswith("max_wait_ms must be >= 0") and "--" not in str(info.value)
    with pytest.raises(BadConfig) as info:
        ServiceConfig(checkpoint="x", host="0.0.0.0").check()
    assert str(info.value).startswith("host 0.0.0.0 makes") and "--" not in str(info.value)


def test_service_settings_name_flags_on_the_command_line(monkeypatch):
    monkeypatch.delenv("PALM_SERVE_TOKEN", raising=False)
    assert _cli_error("serve", ["--checkpoint", "x", "--max-wait-ms", "-1"]).startswith(
        "error: --max-wait-ms must be >= 0")
    line = _cli_error("serve", ["--checkpoint", "x", "--host", "0.0.0.0"])
    assert line.startswith("error: --host 0.0.0.0 makes") and "set --token or $PALM_SERVE_TOKEN" in line


def _an_evaluation(folder):
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"auc": 0.5}))
    return folder


def test_refused_output_names_parameters_in_the_library(tmp_path):
    from palm.engine.evaluate import eval_output_for

    with pytest.raises(OutputRefused) as info:
        eval_output_for(tmp_path / "best.pdparams", _an_evaluation(tmp_path / "ev"), False)
    assert "pass exist_ok to replace it or choose another output" in str(info.value)
    assert "--" not in str(info.value)


def test_refused_output_names_flags_on_the_command_line(tmp_path):
    folder = _an_evaluation(tmp_path / "output")  # a path holding the parameter's name
    line = _cli_error("eval", ["--checkpoint", str(tmp_path / "best.pdparams"),
                               "--output", str(folder)])
    assert line == (f"error: {folder} already holds an evaluation (metrics.json); pass "
                    "--exist-ok to replace it or choose another --output")


def test_missing_data_names_parameters_in_the_library(tmp_path):
    from palm.engine.tasks import run_quantize

    with pytest.raises(BadConfig) as info:
        run_quantize("x", str(tmp_path / "int8"))
    assert str(info.value).startswith("give data_root, val_dir or val_csv")


def test_missing_data_names_flags_on_the_command_line(tmp_path):
    line = _cli_error("quantize", ["--checkpoint", "x", "--output", str(tmp_path / "int8")])
    assert line.startswith("error: give --data-root, --val-dir or --val-csv: labelled images")


def test_the_parsers_own_table_maps_a_dest_to_its_shown_flag():
    assert flags_of(report_cmd.get_args_parser())["eval_dir"] == "--eval"
    assert flags_of(synth_cmd.get_args_parser())["output"] == "--output"  # not the old --out
    assert flags_of(eval_cmd.get_args_parser())["batch_size"] == "--batch-size"  # not -b
    error = OutputRefused("output runs/output/p.csv: in use", param="output")
    assert flag_message(error, {"output": "--output"}) == "--output runs/output/p.csv: in use"
