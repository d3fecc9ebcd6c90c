import importlib
import sys
from pathlib import Path

import pytest

from palm.cli import COMMANDS, DEBUG_VAR, StoppedByUser, command_for, common, run_tool
from palm.cli import main as cli_main
from palm.errors import BadData


def _exit_code(main, args=None, **kw):
    with pytest.raises(SystemExit) as info:
        run_tool(main, args, **kw)
    return info.value.code


def test_success_exits_with_main_result_or_zero():
    assert _exit_code(lambda a: 3) == 3
    assert _exit_code(lambda a: {"auc": 1.0}) == 0


def test_user_error_becomes_one_line_message(capsys):
    def bad(_):
        raise FileNotFoundError("data/x.jpg: file not found")

    assert _exit_code(bad) == "error: data/x.jpg: file not found"


def test_stopped_by_user_and_ctrl_c_messages():
    def stopped(_):
        raise StoppedByUser("last.pdparams saved")

    def ctrl_c(_):
        raise KeyboardInterrupt

    assert _exit_code(stopped) == "stopped: last.pdparams saved"
    assert _exit_code(ctrl_c, interrupted="rerun with --resume") == "rerun with --resume"
    with pytest.raises(KeyboardInterrupt):
        run_tool(ctrl_c, None)


def test_bugs_keep_their_traceback():
    def buggy(_):
        raise KeyError("oops")

    with pytest.raises(KeyError):
        run_tool(buggy, None)


def test_value_and_runtime_errors_are_bugs_with_a_traceback():
    for bug in (ValueError("shape mismatch"), RuntimeError("paddle internal")):
        def buggy(_, bug=bug):
            raise bug

        with pytest.raises(type(bug)):
            run_tool(buggy, None)


def test_palm_debug_shows_the_traceback_of_a_user_error(monkeypatch):
    def bad(_):
        raise BadData("data/x.jpg: truncated JPEG")

    assert _exit_code(bad) == "error: data/x.jpg: truncated JPEG"
    monkeypatch.setenv(DEBUG_VAR, "1")
    with pytest.raises(BadData):
        run_tool(bad, None)


def test_every_command_declares_a_parser_and_what_it_runs():
    for name, command in COMMANDS.items():
        module = importlib.import_module(command.module)
        assert callable(module.get_args_parser), name
        if hasattr(module, "RUNS"):
            assert callable(common.library_function(module.RUNS)), name
        else:  # not converted yet (palm.cli.common._run_legacy)
            assert callable(module.cli), name


def test_dispatcher_runs_the_subcommand_with_its_own_usage_leaving_sys_argv(capsys, tmp_path):
    argv = list(sys.argv)
    with pytest.raises(SystemExit) as info:
        cli_main.main(["synth", "--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("usage: palm synth ")
    assert sys.argv == argv  # the command line is passed on, not rewritten
    with pytest.raises(SystemExit) as info:
        cli_main.main(["synth", "--out", str(tmp_path), "--difficulty", "2"])
    assert info.value.code == "error: --difficulty must be in 0..1, got 2.0"


def test_dispatcher_lists_commands_and_refuses_unknown_ones(capsys):
    with pytest.raises(SystemExit) as info:
        cli_main.main([])
    listing = capsys.readouterr().err
    assert info.value.code == 2 and all(f"  {name} " in listing for name in COMMANDS)
    with pytest.raises(SystemExit) as info:
        cli_main.main(["trian"])
    assert info.value.code == 2 and "unknown command 'trian'" in capsys.readouterr().err


def test_hints_name_the_checkout_script_here_and_palm_when_installed(monkeypatch):
    assert command_for("eval") == "python tools/eval.py"  # tests run from a checkout
    assert command_for("synth") == "python -m data_tools.synth_palm"
    monkeypatch.setattr(common, "_CHECKOUT", Path("/nonexistent"))
    assert command_for("eval") == "palm eval"


def test_ctrl_c_in_a_command_prints_its_own_hint(monkeypatch, tmp_path):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("palm.engine.tasks.run_predict", interrupted)
    out = tmp_path / "p.csv"
    with pytest.raises(SystemExit) as info:
        common.cli("predict", ["--checkpoint", "x", "--input", str(tmp_path), "--output", str(out)])
    assert info.value.code.startswith("interrupted; finished rows are in ")
    assert info.value.code.endswith("rerun with --resume")
    monkeypatch.setattr("palm.engine.tasks.run_cam", interrupted)  # no hint: Ctrl-C as usual
    with pytest.raises(KeyboardInterrupt):
        common.cli("cam", ["--checkpoint", "x", "--input", str(tmp_path), "--output", str(out)])
