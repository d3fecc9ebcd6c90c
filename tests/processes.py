"""Running palm's checkout tools (`tools/*.py`) as child processes, as a user's shell does.

The children import this checkout's palm (PYTHONPATH), whichever palm is installed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import pytest

from palm.cli import run_tool

REPO = Path(__file__).resolve().parents[1]
CHECKOUT_ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def tool_exit(main: Callable, args) -> int | str | None:
    """The exit code (or `error: ...` line) of a tool run as its command line runs it."""
    with pytest.raises(SystemExit) as info:
        run_tool(main, args)
    return info.value.code


def process_running(pid: int) -> bool:
    """True while process `pid` exists and is not a zombie (an exited child no one reaped
    holds no memory and counts as gone). Linux /proc; False elsewhere."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def ctrl_c_once(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float, what: str
                ) -> tuple[str, str]:
    """SIGINT to `proc` once `ready()` (within `timeout` s, while it runs), then its stdout
    and stderr; it is killed whatever happens."""
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, f"no {what} in {timeout} s"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        return proc.communicate(timeout=60)
    finally:
        proc.kill()


def start_checkout_tool(tool: str, argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "tools" / tool), *argv], cwd=REPO,
                            env=CHECKOUT_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def run_checkout_tool(tool: str, argv: list[str], timeout: float = 300
                      ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools" / tool), *argv], cwd=REPO,
                          env=CHECKOUT_ENV, capture_output=True, text=True, timeout=timeout)


def stderr_lines(stderr: str) -> list[str]:
    """stderr without paddle's import-time OMP_NUM_THREADS banner (see the README)."""
    return [line for line in stderr.strip().splitlines()
            if not line.startswith(("WARNING: OMP_NUM_THREADS set to", "PLEASE USE OMP_NUM_THREADS"))]


def frozen_while_locked(proc: subprocess.Popen, lock: Path) -> None:
    """Stop `proc` once it holds `lock` (so a second run meets the lock for certain)."""
    wait_for(lambda: lock.is_file() and f"pid {proc.pid}" in lock.read_text()
             or proc.poll() is not None, 240, f"{lock}")
    assert proc.poll() is None, proc.communicate()
    os.kill(proc.pid, signal.SIGSTOP)


def second_run_while_first_holds(tool: str, argv: list[str], lock: Path
                                 ) -> tuple[subprocess.Popen, str, str, str]:
    """Run `tool` twice, the second time while the first is frozen holding `lock`; the second
    must fail with one line. Returns (first process, that line, first's stdout and stderr)."""
    first = start_checkout_tool(tool, argv)
    try:
        frozen_while_locked(first, lock)
        second = run_checkout_tool(tool, argv)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    stdout, stderr = first.communicate(timeout=300)
    assert second.returncode == 1
    lines = stderr_lines(second.stderr)
    assert len(lines) == 1, lines
    return first, lines[0], stdout, stderr


@contextmanager
def ctrl_c_in_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int) -> Iterator[None]:
    """Inside the block, a training run stops as a Ctrl-C would when `epoch` begins."""
    import palm.engine.train as engine_train
    real_epoch = engine_train.train_one_epoch

    def interrupted(*args, epoch: int, **kw):
        if epoch == stop_at:
            raise KeyboardInterrupt
        return real_epoch(*args, epoch=epoch, **kw)

    stop_at = epoch
    monkeypatch.setattr(engine_train, "train_one_epoch", interrupted)
    try:
        yield
    finally:
        monkeypatch.setattr(engine_train, "train_one_epoch", real_epoch)
