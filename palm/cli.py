"""The one way every `tools/*.py` turns an exception into a one-line message and exit code."""
from __future__ import annotations

import sys
from typing import Any, Callable

# Errors that mean "the input or the command was wrong": the message says which file and why,
# so a traceback would only bury it. Anything else is a bug and keeps its traceback.
USER_ERRORS = (FileNotFoundError, FileExistsError, ValueError, RuntimeError)


class StoppedByUser(RuntimeError):
    """The user stopped a run (Ctrl-C) and its state was saved; not an error of theirs."""


def run_tool(main: Callable[[Any], Any], args: Any, *, interrupted: str | None = None) -> None:
    """Call `main(args)` and exit: 0 (or main's int result), 1 with `error: ...` on bad input.

    Args:
        interrupted: message printed on Ctrl-C (e.g. how to resume); default re-raises.
    """
    try:
        result = main(args)
    except KeyboardInterrupt:
        if interrupted is None:
            raise
        sys.exit(interrupted)
    except USER_ERRORS as e:
        prefix = "stopped" if isinstance(e, StoppedByUser) else "error"
        sys.exit(f"{prefix}: {e}")
    sys.exit(result if isinstance(result, int) else 0)
