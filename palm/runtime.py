"""Process-level CPU tuning that must happen before `paddle` is imported.

`import paddle` pins OpenMP to one thread when OMP_NUM_THREADS is unset, and Intel MKL takes
a slow code path on non-Intel CPUs unless MKL_DEBUG_CPU_TYPE=5 is set; both slow training
several-fold (the README's CPU speed section has the figures, `palm benchmark` measures them).
Spinning idle OpenMP threads (KMP_BLOCKTIME) and equal-priority loader workers slow the
network further whenever images are decoded beside it (`lower_worker_priority`).
Nothing here imports paddle, and a variable the user already set is never overridden.
`worker_init` is the DataLoader `worker_init_fn` every palm loader uses. Also here, for the
same reason (set up before paddle loads, or not needing it): the logging setup and Paddle's
glog level. The provenance record of a result is palm/provenance.py's.
"""
from __future__ import annotations

import ctypes
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from typing import Any

OPT_OUT_VAR = "PALM_NO_CPU_TUNING"


def cpu_vendor(cpuinfo_path: str = "/proc/cpuinfo") -> str:
    """Return the CPU vendor id (e.g. 'AuthenticAMD', 'GenuineIntel'), or '' if unknown."""
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def usable_cores() -> int:
    """Cores this process may run on (respects taskset/cgroup affinity where available)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_env_defaults(vendor: str, cores: int) -> dict[str, str]:
    """The environment variables palm sets by default for this CPU."""
    # KMP_BLOCKTIME=0: idle Intel-OpenMP threads (the Paddle wheel ships libiomp5) sleep at
    # once instead of spinning for 200 ms, leaving the cores to the data-loader workers
    # between batches; see lower_worker_priority for the measurements.
    env = {"OMP_NUM_THREADS": str(cores), "KMP_BLOCKTIME": "0"}
    if vendor == "AuthenticAMD":
        env["MKL_DEBUG_CPU_TYPE"] = "5"  # MKL's AVX2 path; ignored on Intel CPUs
    return env


WORKER_NICENESS = 19


def lower_worker_priority(worker_id: int | None = None) -> None:
    """Run the calling data-loader worker at a lower CPU priority than the network.

    On few cores, decoding workers preempt the network's OpenMP threads, which then stall
    each other at every operator's barrier. At low priority the workers decode mostly in
    the gaps between batches, on all cores; on machines with spare cores nothing changes.
    The benchmark's train_loader and predict sections show the effect (fed rate against
    the bare step rate).

    Usable as a DataLoader `worker_init_fn`; does nothing where `os.nice` is unavailable.
    """
    try:
        os.nice(WORKER_NICENESS)
    except (AttributeError, OSError):
        pass


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
PARENT_POLL_SECONDS = 1.0


def exit_with_parent() -> None:
    """Make the calling child process die when its parent process dies.

    A data-loader worker whose trainer is killed (kill -9, OOM killer) is re-parented to
    init and would otherwise keep its memory (hundreds of MB) until someone kills it. On
    Linux the kernel delivers SIGKILL at the parent's death (prctl PR_SET_PDEATHSIG; the
    worker holds nothing worth saving); elsewhere a daemon thread polls getppid(). A parent
    that died before this call is caught by comparing getppid() with the recorded parent.
    The kernel sends the signal when the parent *thread* that started the worker ends;
    Paddle starts workers from the thread that iterates the loader, which outlives them.
    """
    parent = multiprocessing.parent_process()
    parent_pid = parent.pid if parent is not None else os.getppid()
    if not _set_parent_death_signal(signal.SIGKILL):
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True,
                         name="palm-parent-watch").start()
    if os.getppid() != parent_pid:
        os._exit(1)


def _set_parent_death_signal(sig: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux: no prctl in the C library
        return False


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)


def worker_init(worker_id: int | None = None) -> None:
    """DataLoader `worker_init_fn`: die with the parent, then run at low priority."""
    exit_with_parent()
    lower_worker_priority()


def tune_cpu_env(environ: dict | None = None) -> dict[str, str]:
    """Set palm's CPU defaults in `environ` (default os.environ) unless already set.

    Returns the variables it set. Does nothing when PALM_NO_CPU_TUNING=1 or when paddle is
    already imported (too late to matter, and changing threads mid-run surprises users).
    """
    environ = os.environ if environ is None else environ
    if environ.get(OPT_OUT_VAR) == "1":
        return {}
    if "paddle" in sys.modules and environ is os.environ:
        return {}
    applied = {}
    for key, value in cpu_env_defaults(cpu_vendor(), usable_cores()).items():
        if key not in environ:
            environ[key] = value
            applied[key] = value
    return applied


# `import paddle` prints a two-line warning whenever OMP_NUM_THREADS is above 1 (meant for
# data-parallel training); palm sets it itself (tune_cpu_env), so the warning would greet every
# command that loads a model. Only these lines are dropped, only when palm chose the value.
PADDLE_OMP_WARNING = ("WARNING: OMP_NUM_THREADS set to ", "PLEASE USE OMP_NUM_THREADS WISELY.")


class _DropLines:
    """A text stream that passes on every line but those starting with `drop`."""

    def __init__(self, stream: Any, drop: tuple[str, ...]) -> None:
        self._stream, self._drop, self._pending = stream, drop, ""

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            if not line.startswith(self._drop):
                self._stream.write(line + "\n")
        return len(text)

    def close_lines(self) -> None:
        """Pass on an unfinished last line."""
        if self._pending and not self._pending.startswith(self._drop):
            self._stream.write(self._pending)
        self._pending = ""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _QuietLoader(importlib.abc.Loader):
    """Runs a module's loader with PADDLE_OMP_WARNING's lines dropped from stderr."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        stderr = sys.stderr
        sys.stderr = quiet = _DropLines(stderr, PADDLE_OMP_WARNING)
        try:
            self._loader.exec_module(module)
        finally:
            sys.stderr = stderr
            quiet.close_lines()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _QuietPaddleImport(importlib.abc.MetaPathFinder):
    """Finds `paddle` (once) with a _QuietLoader around its own loader."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "paddle":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def hide_paddle_omp_warning() -> None:
    """Drop Paddle's OMP_NUM_THREADS warning when paddle is imported (call before that)."""
    if "paddle" not in sys.modules and not any(isinstance(f, _QuietPaddleImport)
                                                for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietPaddleImport())


# Paddle's C++ side logs through glog. At WARNING it prints lines that concern Paddle's own
# internals on every eval, predict and export (e.g. `eager_utils.cc ... PIR not support input
# out tensor`, from running an exported program); at ERROR and above it still reports real
# failures. A GLOG_minloglevel you set yourself wins (0 shows everything).
GLOG_LEVEL_VAR = "GLOG_minloglevel"
QUIET_GLOG_LEVEL = "2"


def quiet_paddle_env(environ: dict | None = None) -> dict[str, str]:
    """Hide Paddle's C++ warnings (not its errors) unless the user chose a glog level.

    Must run before paddle is imported. Returns the variables it set.
    """
    environ = os.environ if environ is None else environ
    if GLOG_LEVEL_VAR in environ:
        return {}
    environ[GLOG_LEVEL_VAR] = QUIET_GLOG_LEVEL
    return {GLOG_LEVEL_VAR: QUIET_GLOG_LEVEL}


LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def setup_logging(verbosity: int = 0) -> None:
    """The one logging setup of every tool: -1 quiet (warnings and errors), 0 info, 1 debug.

    Log records (and Python warnings, routed through logging) go to the stderr of this
    moment, so they still show when a quiet tool silences its other output.
    """
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(level=level, format=LOG_FORMAT, force=True)
    logging.captureWarnings(True)
