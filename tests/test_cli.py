import pytest

from palm.cli import StoppedByUser, run_tool


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
