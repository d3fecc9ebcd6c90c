"""How errors reach the user (palm.errors, palm.cli.common.run_tool): OS errors and bad input
as one line, bugs with their traceback."""
from __future__ import annotations

import errno

import pytest

from palm.cli import run_tool
from palm.config import check_options
from palm.errors import BadConfig
from palm.io_utils import write_text_atomic


def _exit(main, args) -> int | str | None:
    """The exit code (or `error: ...` line) of a tool run as its command line runs it."""
    with pytest.raises(SystemExit) as info:
        run_tool(main, args)
    return info.value.code


@pytest.mark.parametrize("exc, line", [
    (OSError(errno.ENOSPC, "No space left on device", "/out/x.csv"),
     "error: /out/x.csv: no space left on the device; free some space or write elsewhere"),
    (PermissionError(errno.EACCES, "Permission denied", "/out"),
     "error: /out: permission denied; check the permissions or choose another location"),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/run"),
     "error: /mnt/ro/run: read-only file system; choose a writable location"),
    (FileNotFoundError("data/x.jpg: file not found"), "error: data/x.jpg: file not found"),
])
def test_os_errors_are_one_line(exc, line):
    def main(_):
        raise exc

    assert _exit(main, None) == line


def test_not_a_folder_is_one_line_and_bugs_keep_tracebacks(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    code = _exit(lambda _: write_text_atomic(tmp_path / "file" / "sub" / "x.json", "{}"), None)
    assert code.startswith(f"error: {tmp_path / 'file' / 'sub'}: ") and "\n" not in code

    def bug(_):
        raise OSError(errno.EBADF, "Bad file descriptor")

    with pytest.raises(OSError):
        run_tool(bug, None)
    monkeypatch.setenv("PALM_DEBUG", "1")
    with pytest.raises(BadConfig):  # PALM_DEBUG=1: the traceback of a user error too
        run_tool(lambda _: check_options({"epochs": 0}), None)
