"""Safe outputs: atomic writes (a crash or Ctrl-C never leaves a half-written file behind),
exclusive output locks (two runs never write into one output), and CSVs whose text cells a
spreadsheet never runs as formulas."""
from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import socket
import stat
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

if TYPE_CHECKING:
    import pandas as pd

from palm.errors import OutputRefused


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path in the same folder; rename it onto `path` on success.

    Example:
        with atomic_path("out/best.pdparams") as tmp:
            paddle.save(state, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    # mkstemp creates 0600 files; outputs (reports, predictions) are meant to be shared,
    # so give them the permissions a plain open() would under the user's umask.
    os.chmod(tmp, 0o666 & ~_current_umask())
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        # name the output the user asked for, not the temporary file (disk full, read-only)
        if e.errno is not None and e.filename in (None, tmp):
            raise type(e)(e.errno, e.strerror, str(path)) from e
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextmanager
def naming_write_errors(path: str | os.PathLike) -> Iterator[None]:
    """Attach `path` to an OSError the block raises without a file name: file.write() and
    flush() report a full disk so, and the one-line error would say "(path unknown)".

    Example:
        with naming_write_errors(journal):
            writer.writerows(rows)
            f.flush()
    """
    try:
        yield
    except OSError as e:
        if e.errno is None or e.filename is not None:
            raise
        raise type(e)(e.errno, e.strerror, str(path)) from e


def next_free_path(path: str | os.PathLike, taken: Callable[[Path], bool]) -> Path:
    """`path` if not `taken`, else the first free of PATH-2, PATH-3, ... (as Ultralytics and
    timm number their runs)."""
    path = Path(path)
    candidate, n = path, 1
    while taken(candidate):
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


@contextmanager
def replace_outputs(folder: str | os.PathLike, known: Sequence[str]) -> Iterator[Path]:
    """Yield a staging folder inside `folder`; when the block succeeds, the files written
    there replace `folder`'s, and every name in `known` that was not written again is
    removed, so no output of an earlier run survives beside the new ones. On failure the
    folder keeps the earlier outputs untouched.

    Example:
        with replace_outputs("runs/x/eval", ("metrics.json", "report.html")) as staging:
            write_json_atomic(staging / "metrics.json", metrics)  # report.html goes
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
    try:
        yield staging
        written = sorted(p.name for p in staging.iterdir())
        for name in set(known) - set(written):
            (folder / name).unlink(missing_ok=True)
        for name in written:
            os.replace(staging / name, folder / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


# OWASP's CSV injection rule: a spreadsheet runs a cell starting with one of these as a
# formula (`=1+2.jpg`, `@cmd.jpg`), so a text cell that does is written with a leading `'`.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# ... unless it is a plain number (`-0.25`), which a spreadsheet reads as a number
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def escape_formula(value: Any) -> Any:
    """`'` + `value` for a text cell a spreadsheet would run as a formula; anything else as is.

    Text already starting with quotes before such a character (`'=x`) gets one more, so
    `unescape_formula` gives every value back exactly.
    """
    if isinstance(value, str) and value.lstrip("'").startswith(FORMULA_STARTS) \
            and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def unescape_formula(value: Any) -> Any:
    """The value `escape_formula` was given: one leading `'` dropped before quotes and a
    formula character; anything else as is."""
    if isinstance(value, str) and value.startswith("'") \
            and value.lstrip("'").startswith(FORMULA_STARTS):
        return value[1:]
    return value


def escape_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A csv.DictWriter row with its text cells escaped (`escape_formula`)."""
    return {key: escape_formula(value) for key, value in row.items()}


def unescape_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A csv.DictReader row of a CSV palm wrote, as it was before `escape_row`."""
    return {key: unescape_formula(value) for key, value in row.items()}


def _map_text(frame: pd.DataFrame, convert: Callable[[Any], Any]) -> pd.DataFrame:
    from pandas.api.types import is_object_dtype, is_string_dtype  # see read_csv

    # only text columns: numeric columns (logits, -0.25) stay numbers
    out = frame.rename(columns=convert)
    for i, dtype in enumerate(out.dtypes):
        if is_object_dtype(dtype) or is_string_dtype(dtype):
            out.isetitem(i, out.iloc[:, i].map(convert))
    return out


def write_csv(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    """Write `frame` (no index) to `path` with its text cells and header escaped
    (`escape_formula`); for a path already staged (CheckpointWriter), else `write_csv_atomic`."""
    # CRLF rows (RFC 4180, as csv.DictWriter writes predict's): Python's csv writer quotes a
    # cell holding a carriage return (a file named "\rx.jpg") only when CR ends its lines
    _map_text(frame, escape_formula).to_csv(path, index=False, lineterminator="\r\n")


def write_csv_atomic(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    """`write_csv` into a temporary file renamed onto `path`."""
    with atomic_path(path) as tmp:
        write_csv(tmp, frame)


def read_csv(path: str | os.PathLike, **kwargs: Any) -> pd.DataFrame:
    """pandas.read_csv of a CSV palm wrote, its text cells and header unescaped: what was
    written (`=1+2.jpg`, not `'=1+2.jpg`), so its paths match the images again."""
    # imported here: pandas takes about half a second to import, and every command's --help
    # imports this module (through palm.config)
    import pandas

    return _map_text(pandas.read_csv(path, **kwargs), unescape_formula)


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays appear in metric dicts
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def output_lock(output: str | os.PathLike, *, folder: bool = False) -> Iterator[Path]:
    """Hold an exclusive lock on `output` for the block; refuse at once if another process has it.

    The lock file is `OUTPUT/.lock` for a folder (created if needed), `OUTPUT.lock` beside
    a file. It is locked with `fcntl.flock`, so the operating system releases the lock when
    the holder exits in any way, kill -9 included: a lock file left behind is never stale.
    The file records the holder (pid, host, command) for the refusal message. It is removed
    on release, and so is a folder this call created if it stayed empty (a run that failed
    at once leaves nothing behind). flock is unreliable on some network file systems (old
    NFS), where two writers go undetected.

    Raises:
        OutputRefused: another process holds the lock (the message names it), or a folder
            output is an existing file.

    Example:
        with output_lock("runs/resnet50", folder=True):  # runs/resnet50/.lock
            train(...)
    """
    output = Path(output)
    created = folder and not output.exists()
    if folder:
        if output.exists() and not output.is_dir():
            raise OutputRefused(f"{output} is a file, not a folder; choose another --output")
        output.mkdir(parents=True, exist_ok=True)
        lock = output / ".lock"
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        lock = output.with_name(output.name + ".lock")
    fd = _acquire(lock, output)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, _holder_line().encode("utf-8"))
        yield lock
    finally:
        # unlink while still holding the lock: a process that opened the old file meanwhile
        # sees that the path no longer names it and tries again (see _acquire)
        try:
            os.unlink(lock)
        except OSError:
            pass
        os.close(fd)
        if created:
            try:
                output.rmdir()
            except OSError:  # not empty: the run wrote something
                pass


def _acquire(lock: Path, output: str | os.PathLike) -> int:
    while True:
        fd = _open_lock_file(lock)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise OutputRefused(
                f"{output} is in use by {holder or 'another process'}; wait for it to finish "
                "or choose another --output") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the previous holder removed this file after we opened it


def _open_lock_file(lock: Path) -> int:
    # The lock file is truncated and written: a symbolic or hard link planted at its name
    # would make that clobber the file it leads to.
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        raise OutputRefused(f"{lock} is a symbolic link, not palm's lock file; remove it") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise OutputRefused(f"{lock} is not palm's lock file (a link or special file); remove it")
    return fd


def _holder_line() -> str:
    argv = sys.argv if sys.argv and sys.argv[0] else ["python"]
    command = " ".join([Path(argv[0]).name, *argv[1:]])
    if len(command) > 200:
        command = command[:197] + "..."
    since = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return f"pid {os.getpid()} on {socket.gethostname()} ({command}; since {since})"


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 1000, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""
