"""palm.runtime: CPU environment defaults are set before paddle, never over the user's."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from palm import runtime
import importlib
from palm.cli import COMMANDS, run_tool
from palm.errors import BadConfig
from palm.cli import eval as eval_tool
import signal
import time
from tests.processes import CHECKOUT_ENV, REPO, process_running, start_checkout_tool, wait_for


@pytest.fixture
def vendor(monkeypatch):
    """Pretend to run on a given CPU vendor with 4 usable cores."""

    def set_vendor(name: str) -> None:
        monkeypatch.setattr(runtime, "cpu_vendor", lambda *a, **k: name)
        monkeypatch.setattr(runtime, "usable_cores", lambda: 4)

    return set_vendor


def test_defaults_on_amd(vendor):
    vendor("AuthenticAMD")
    env: dict[str, str] = {}
    applied = runtime.tune_cpu_env(env)
    assert env == applied == {"OMP_NUM_THREADS": "4", "MKL_DEBUG_CPU_TYPE": "5",
                              "KMP_BLOCKTIME": "0"}


def test_intel_gets_threads_only(vendor):
    vendor("GenuineIntel")
    env: dict[str, str] = {}
    runtime.tune_cpu_env(env)
    assert env == {"OMP_NUM_THREADS": "4", "KMP_BLOCKTIME": "0"}


def test_user_settings_are_kept(vendor):
    vendor("AuthenticAMD")
    env = {"OMP_NUM_THREADS": "1", "MKL_DEBUG_CPU_TYPE": "0", "KMP_BLOCKTIME": "200"}
    assert runtime.tune_cpu_env(env) == {}
    assert env == {"OMP_NUM_THREADS": "1", "MKL_DEBUG_CPU_TYPE": "0", "KMP_BLOCKTIME": "200"}


def test_partly_set_env_fills_only_the_gap(vendor):
    vendor("AuthenticAMD")
    env = {"OMP_NUM_THREADS": "3"}
    assert runtime.tune_cpu_env(env) == {"MKL_DEBUG_CPU_TYPE": "5", "KMP_BLOCKTIME": "0"}
    assert env["OMP_NUM_THREADS"] == "3"


def test_opt_out(vendor):
    vendor("AuthenticAMD")
    env = {runtime.OPT_OUT_VAR: "1"}
    assert runtime.tune_cpu_env(env) == {}
    assert env == {runtime.OPT_OUT_VAR: "1"}


def test_cpu_vendor_parses_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n")
    assert runtime.cpu_vendor(str(info)) == "AuthenticAMD"
    assert runtime.cpu_vendor(str(tmp_path / "missing")) == ""


def test_usable_cores_positive():
    assert runtime.usable_cores() >= 1


TUNED = ("OMP_NUM_THREADS", "MKL_DEBUG_CPU_TYPE", "KMP_BLOCKTIME")


def _env_after_import(extra_env: dict[str, str]) -> list[str]:
    """The TUNED variables as a fresh `import palm, paddle` leaves them."""
    env = {k: v for k, v in os.environ.items() if k not in (*TUNED, runtime.OPT_OUT_VAR)}
    env.update(extra_env, PYTHONPATH=str(REPO))
    code = f"import os, palm, paddle; print(*(os.environ.get(k) for k in {TUNED!r}))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    return out.stdout.split()


@pytest.mark.slow
def test_import_palm_sets_env_before_paddle():
    omp, mkl, kmp = _env_after_import({})
    assert omp == str(runtime.usable_cores())  # paddle alone would leave "1"
    assert mkl == ("5" if runtime.cpu_vendor() == "AuthenticAMD" else "None")
    assert kmp == "0"


@pytest.mark.slow
def test_import_palm_respects_user_and_opt_out():
    user = {"OMP_NUM_THREADS": "1", "MKL_DEBUG_CPU_TYPE": "0", "KMP_BLOCKTIME": "200"}
    assert _env_after_import(user) == ["1", "0", "200"]
    # opted out, paddle applies its own default of one thread
    assert _env_after_import({runtime.OPT_OUT_VAR: "1"}) == ["1", "None", "None"]


@pytest.mark.slow
def test_lower_worker_priority_in_a_child():
    code = ("import os; from palm.runtime import lower_worker_priority, WORKER_NICENESS; "
            "before = os.nice(0); lower_worker_priority(0); "
            "print(os.nice(0) - before, min(19, before + WORKER_NICENESS) - before)")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, check=True)
    raised, expected = out.stdout.split()
    assert raised == expected


def test_quiet_prints_nothing_but_warnings_and_errors(tmp_path, capsys):
    import logging
    import sys

    def main(args):
        print("a summary line")
        print("progress 50%", file=sys.stderr)  # what tqdm writes
        logging.getLogger("palm.test").warning("careful")
        return 0

    for quiet in (False, True):
        parsed = eval_tool.get_args_parser().parse_args(
            ["--checkpoint", "x", *(["--quiet"] if quiet else [])])
        with pytest.raises(SystemExit):
            run_tool(main, parsed)
        out, err = capsys.readouterr()
        assert ("a summary line" in out, "progress" in err) == (not quiet, not quiet)
        assert "careful" in err

    def fails(args):
        raise BadConfig("--epochs must be >= 1")

    with pytest.raises(SystemExit, match="error: --epochs must be >= 1"):
        run_tool(fails, eval_tool.get_args_parser().parse_args(["--checkpoint", "x", "-q"]))


def test_paddle_warnings_hidden_unless_the_user_chose_a_level():
    from palm.runtime import quiet_paddle_env

    env: dict[str, str] = {}
    assert quiet_paddle_env(env) == {"GLOG_minloglevel": "2"} and env["GLOG_minloglevel"] == "2"
    mine = {"GLOG_minloglevel": "0"}
    assert quiet_paddle_env(mine) == {} and mine["GLOG_minloglevel"] == "0"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_subcommand_takes_quiet_and_verbose(name):
    parser = importlib.import_module(COMMANDS[name].module).get_args_parser()
    options = {o for action in parser._actions for o in action.option_strings}
    assert {"-q", "--quiet", "-v", "--verbose"} <= options, name


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("tool", ["predict", "train"])
def test_no_worker_survives_a_killed_run(tool, lenet_checkpoint, many_photos, palm_root, tmp_path):
    if tool == "predict":
        proc = start_checkout_tool("predict.py", ["--checkpoint", str(lenet_checkpoint), "--input", str(many_photos),
                                     "--output", str(tmp_path / "p.csv"), "--engine", "dygraph",
                                     "--batch-size", "1", "--num-workers", "2", "--no-progress"])
    else:
        proc = start_checkout_tool("train.py", ["--model", "lenet", "--data-root", str(palm_root),
                                   "--image-size", "32", "--batch-size", "2", "--epochs", "200",
                                   "--num-workers", "2", "--output", str(tmp_path / "run"),
                                   "--device", "cpu", "--no-progress", "--cache-dir", "none"])
    workers: list[int] = []
    try:
        wait_for(lambda: len(_children(proc.pid)) >= 2 or proc.poll() is not None, 240,
                  "two loader workers")
        workers = _children(proc.pid)
        assert proc.poll() is None and len(workers) >= 2, proc.communicate()
        proc.kill()
        proc.wait()
        killed = time.monotonic()
        wait_for(lambda: not any(map(process_running, workers)), 10, f"workers {workers} to exit")
        print(f"{tool}: {len(workers)} workers gone {time.monotonic() - killed:.2f} s after kill -9")
    finally:  # never leave a process behind, whatever failed
        for pid in {proc.pid, *workers, *_children(proc.pid)}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


_ORPHAN_SCRIPT = """
import multiprocessing, sys, time
from palm import runtime
if sys.argv[1] == "poll":  # as on a system without prctl
    runtime._set_parent_death_signal = lambda sig: False
def child():
    runtime.worker_init(0)
    print("ready", flush=True)
    time.sleep(600)
if __name__ == "__main__":
    multiprocessing.set_start_method("fork")
    p = multiprocessing.Process(target=child)
    p.start()
    print(p.pid, flush=True)
    time.sleep(600)
"""


@pytest.mark.slow
@pytest.mark.parametrize("how, within", [("prctl", 2.0), ("poll", 2.0 + 2 * 1.0)])
def test_worker_init_child_exits_when_its_parent_is_killed(how, within, tmp_path):
    """The mechanism alone (no Paddle): parent-death signal, and the polling fallback."""
    script = tmp_path / "orphan.py"
    script.write_text(_ORPHAN_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script), how], env=CHECKOUT_ENV, stdout=subprocess.PIPE,
                              text=True)
    child = int(parent.stdout.readline())
    try:
        assert parent.stdout.readline().strip() == "ready"  # worker_init has run
        assert process_running(child)
        parent.kill()
        parent.wait()
        wait_for(lambda: not process_running(child), within, f"the {how} child to exit")
    finally:
        for pid in (parent.pid, child):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
