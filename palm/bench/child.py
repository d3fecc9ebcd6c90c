"""Run a program as a child that ends with its parent, even a parent killed with SIGKILL.

    python -m palm.bench.child PARENT_PID PROGRAM [ARGS...]

A parent killed with `kill -9` runs no `finally` and cannot stop its children: the load
test's service would go on listening, holding its memory and cores, with nobody to stop it.
This asks Linux to send the process SIGTERM (uvicorn's graceful stop) when its parent dies
(prctl PR_SET_PDEATHSIG, which an exec keeps), then becomes PROGRAM by exec, so the parent's
pid of the child is PROGRAM's own (the load test reads its memory and CPU in /proc). Elsewhere
than Linux it only becomes PROGRAM.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def end_with_parent(parent_pid: int) -> None:
    """SIGTERM to this process when its parent dies; at once if `parent_pid` already did
    (the child was adopted before the request was made)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str]) -> None:
    if len(argv) < 2 or not argv[0].isdigit():
        sys.exit("usage: python -m palm.bench.child PARENT_PID PROGRAM [ARGS...]")
    end_with_parent(int(argv[0]))
    os.execv(argv[1], argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
