"""The one way every `tools/*.py` turns an exception into a one-line message and exit code.

Exit codes: 0 done, 1 `error: ...` (or `stopped: ...`) on one line, 2 a malformed command
line (argparse). PALM_DEBUG=1 shows the traceback of every error instead.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable

from palm.errors import StoppedByUser, UserError, describe_os_error

__all__ = ["DEBUG_VAR", "USER_ERRORS", "StoppedByUser", "run_tool"]

DEBUG_VAR = "PALM_DEBUG"

# Errors that mean "the input or the command was wrong": the message says which file and why,
# so a traceback would only bury it. ValueError/RuntimeError are still here because older
# code raises them for bad input; new code raises a palm.errors.UserError. OSError is
# handled by errno (disk full, read-only, permissions, ...). Anything else is a bug and
# keeps its traceback.
USER_ERRORS = (UserError, ValueError, RuntimeError)


def run_tool(main: Callable[[Any], Any], args: Any, *, interrupted: str | None = None) -> None:
    """Call `main(args)` and exit: 0 (or main's int result), 1 with `error: ...` on bad input.

    Args:
        interrupted: message printed on Ctrl-C (e.g. how to resume); default re-raises.
    """
    debug = os.environ.get(DEBUG_VAR) == "1"
    try:
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
