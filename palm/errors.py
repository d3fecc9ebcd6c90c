"""Errors a user can act on, and one-line descriptions of ordinary operating-system failures.

`UserError` and its children are what the tools print as a single `error: ...` line
(palm.cli.run_tool); anything else is a bug and keeps its traceback. The children also
derive from the built-in type callers caught before this hierarchy existed (ValueError,
RuntimeError), so `except ValueError` around a config check keeps working.
"""
from __future__ import annotations

import errno


class UserError(Exception):
    """The input, the command or the machine's state was wrong; the message says what to do.

    `param`: the parameter the message is about, named as the library calls it (`epochs`,
    `save_dir`), when there is one. The message names it the same way; the command line
    replaces that name by its flag (`--epochs`) when it prints the error (palm.cli.common).
    """

    def __init__(self, *args: object, param: str | tuple[str, ...] | None = None) -> None:
        super().__init__(*args)
        self.param = param


class BadConfig(UserError, ValueError):
    """An option or config key is missing, unknown, of the wrong type or out of range."""


class BadData(UserError, ValueError):
    """An image, label or list file cannot be used."""


class BadCheckpoint(UserError, ValueError):
    """A checkpoint or its sidecar cannot be used."""


class DownloadFailed(UserError, RuntimeError):
    """Published weights could not be downloaded, or the download did not match its hash."""


class OutputRefused(UserError, RuntimeError):
    """An output is in use by another process, or is a file palm must not overwrite."""


class StoppedByUser(UserError, RuntimeError):
    """The user stopped a run (Ctrl-C) and its state was saved; not an error of theirs."""


# errno -> (what happened, what to do). These are the machine's state, not palm's bugs;
# any other OSError keeps its traceback.
_OS_ADVICE: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on the device", "free some space or write elsewhere"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or write elsewhere"),
    errno.EFBIG: ("file too large for this file system", "write elsewhere"),
    errno.EROFS: ("read-only file system", "choose a writable location"),
    errno.EACCES: ("permission denied", "check the permissions or choose another location"),
    errno.EPERM: ("operation not permitted", "check the permissions or choose another location"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "fix the path"),
    errno.EISDIR: ("is a folder, not a file", "give a file name"),
    errno.ENAMETOOLONG: ("file name too long", "use a shorter path"),
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.EEXIST: ("already exists", "remove it or choose another name"),
}


def describe_os_error(e: OSError) -> str | None:
    """`PATH: what happened; what to do` for an ordinary OSError, None for anything else.

    An OSError made by palm with its own message (no errno) is returned as it is.
    """
    if e.errno is None:
        return str(e) if e.args else None
    if e.errno not in _OS_ADVICE:
        return None
    what, todo = _OS_ADVICE[e.errno]
    where = e.filename if e.filename is not None else "(path unknown)"
    if e.filename2 is not None:
        where = f"{where} -> {e.filename2}"
    return f"{where}: {what}; {todo}"
