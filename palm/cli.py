"""The one way every `tools/*.py` turns an exception into a one-line message and exit code.

Exit codes: 0 done, 1 `error: ...` (or `stopped: ...`) on one line, 2 a malformed command
line (argparse). PALM_DEBUG=1 shows the traceback of every error instead.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any, Callable, Iterator

from palm.errors import BadConfig, StoppedByUser, UserError, describe_os_error
from palm.runtime import setup_logging

__all__ = ["DEBUG_VAR", "USER_ERRORS", "StoppedByUser", "add_data_source", "add_verbosity_options",
           "data_source", "run_tool", "verbosity"]

DATA_HELP = "PALM root, PALM-Training400 folder, path,label CSV or class-folder root"

DEBUG_VAR = "PALM_DEBUG"

# Errors that mean "the input or the command was wrong": the message says which file and why,
# so a traceback would only bury it. ValueError/RuntimeError are still here because older
# code raises them for bad input; new code raises a palm.errors.UserError. OSError is
# handled by errno (disk full, read-only, permissions, ...). Anything else is a bug and
# keeps its traceback.
USER_ERRORS = (UserError, ValueError, RuntimeError)


def add_data_source(parser: argparse.ArgumentParser) -> None:
    """The data set of a data tool, as a positional DATA or as --data-root DATA (the training
    tools' spelling); `data_source` reads it."""
    parser.add_argument("data", nargs="?", help=DATA_HELP)
    parser.add_argument("--data-root", help="the same as DATA")


def data_source(args: argparse.Namespace) -> str:
    """The one data set given to a data tool (see add_data_source).

    Raises:
        BadConfig: none or two different ones given.
    """
    given = {v for v in (args.data, args.data_root) if v}
    if len(given) != 1:
        raise BadConfig("give the data set once, as DATA or --data-root DATA "
                        f"({'two were given' if given else 'none was given'})")
    return given.pop()


def add_verbosity_options(parser: argparse.ArgumentParser) -> None:
    """-q/--quiet and -v/--verbose, the same on every tool."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true",
                       help="print only warnings and errors (no progress bars or summaries)")
    group.add_argument("-v", "--verbose", action="store_true", help="also print debug messages")


@contextlib.contextmanager
def verbosity(args: Any) -> Iterator[None]:
    """Set up logging for `args.quiet` / `args.verbose`. Quiet also drops what the tool prints
    and its progress bars (stdout and stderr); log warnings and the final `error:` line of
    run_tool still show."""
    quiet, verbose = getattr(args, "quiet", False), getattr(args, "verbose", False)
    setup_logging(-1 if quiet else 1 if verbose else 0)
    if not quiet:
        yield
        return
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), \
            contextlib.redirect_stderr(sink):
        yield


def run_tool(main: Callable[[Any], Any], args: Any, *, interrupted: str | None = None) -> None:
    """Call `main(args)` and exit: 0 (or main's int result), 1 with `error: ...` on bad input.

    Args:
        interrupted: message printed on Ctrl-C (e.g. how to resume); default re-raises.
    """
    debug = os.environ.get(DEBUG_VAR) == "1"
    try:
        with verbosity(args):
            result = main(args)
    except KeyboardInterrupt:
        if interrupted is None or debug:
            raise
        sys.exit(interrupted)
    except USER_ERRORS as e:
        if debug:
            raise
        prefix = "stopped" if isinstance(e, StoppedByUser) else "error"
        sys.exit(f"{prefix}: {e}")
    except OSError as e:
        line = describe_os_error(e)
        if line is None or debug:
            raise
        sys.exit(f"error: {line}")
    sys.exit(result if isinstance(result, int) else 0)
