"""The load test's service is a child process that ends with the load test, however the load
test ends (kill -9 included), and the load test's own refusals and interruptions."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from palm.bench.loadtest import random_checkpoint
from tests.processes import process_running

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_service_stops_when_the_load_test_is_killed_with_sigkill(tmp_path):
    checkpoint = random_checkpoint("lenet5", 32, tmp_path)
    script = (
        "import time\n"
        "from pathlib import Path\n"
        "from palm.bench.loadtest import free_port, start_server\n"
        f"server = start_server({str(checkpoint)!r}, 'dygraph', free_port(), 1, 1.0, 4, "
        f"Path({str(tmp_path / 'serve.log')!r}))\n"
        "print(server.pid, flush=True)\n"
        "time.sleep(600)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    load_test = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                 text=True, env=env)
    server = int(load_test.stdout.readline())
    try:
        time.sleep(1)  # the service is starting (importing Paddle, loading the model)
        assert process_running(server)
        load_test.kill()  # SIGKILL: no finally runs in the load test
        load_test.wait(10)
        end = time.monotonic() + 30
        while process_running(server) and time.monotonic() < end:
            time.sleep(0.2)
        assert not process_running(server), "the service outlived the load test killed with -9"
    finally:
        load_test.kill()
        if process_running(server):
            os.kill(server, signal.SIGKILL)


def test_a_service_that_ignores_sigterm_is_killed_when_the_load_test_ends():
    from palm.bench.loadtest import stop_server
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time; "
                                 "signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                 "print(flush=True); time.sleep(120)"], stdout=subprocess.PIPE)
    try:
        stubborn.stdout.readline()  # its SIGTERM handler is set
        stop_server(stubborn, grace=0.5)
        assert stubborn.returncode == -signal.SIGKILL
    finally:
        stubborn.kill()
        stubborn.wait()


def test_ctrl_c_of_the_load_test_is_one_line_not_a_traceback(monkeypatch, tmp_path):
    import palm.bench.loadtest
    from palm.cli.common import cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(palm.bench.loadtest, "run_loadtest", interrupted)
    with pytest.raises(SystemExit) as exited:
        cli("loadtest", ["--model", "lenet5", "--work-dir", str(tmp_path), "-q"])
    assert str(exited.value.code).startswith("stopped: ")
    assert "service" in str(exited.value.code)


@pytest.mark.parametrize("target, value, message", [
    ("min_ratio", 1.5, r"min_ratio must be in \(0, 1\]"),
    ("min_ratio", 0.0, r"min_ratio must be in \(0, 1\]"),
    ("min_ratio", float("nan"), r"min_ratio must be in \(0, 1\]"),
    ("max_p95_ms", -1.0, "max_p95_ms must be a positive number"),
    ("max_p95_ms", float("inf"), "max_p95_ms must be a positive number"),
    ("max_rss_growth_mb", -5.0, "max_rss_growth_mb must be a number >= 0"),
    ("max_rss_growth_mb", float("nan"), "max_rss_growth_mb must be a number >= 0"),
])
def test_a_target_that_judges_nothing_is_refused_before_starting(tmp_path, target, value,
                                                                 message):
    """ratio > 1 asks the service to beat the model it runs; NaN compares false with
    everything, so every run would be MET; a negative bound every run misses."""
    from palm.bench.loadtest import run_loadtest
    from palm.errors import BadConfig
    with pytest.raises(BadConfig, match=message) as refused:
        run_loadtest(tmp_path, model="lenet5", image_size=32, **{target: value})
    assert refused.value.param == target
    assert not list(tmp_path.iterdir())  # refused before the checkpoint was written


def test_a_bad_target_is_named_by_its_flag(tmp_path, capsys):
    from palm.cli.common import cli
    with pytest.raises(SystemExit) as exited:
        cli("loadtest", ["--model", "lenet5", "--work-dir", str(tmp_path), "--min-ratio", "2"])
    assert exited.value.code == "error: --min-ratio must be in (0, 1], got 2"


def test_a_photo_folder_with_a_bad_file_is_refused_naming_it_before_starting(tmp_path):
    """Every photo is checked before the model loads and the service starts: a bad one would
    otherwise fail the warm-up as one HTTP answer, or with no warm-up count as failed
    requests, after minutes of model loading."""
    import cv2
    import numpy as np

    from palm.bench.loadtest import run_loadtest
    from palm.errors import BadData
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "a_good.jpg"), np.full((48, 48, 3), 128, np.uint8))
    (folder / "b_bad.jpg").write_bytes(b"not a photo at all")
    with pytest.raises(BadData, match="b_bad.jpg"):
        run_loadtest(tmp_path / "work", model="lenet5", image_size=32, photos=folder,
                     requests=2, rounds=1, warmup=0, concurrency=1)
    assert not (tmp_path / "work" / "loadtest-serve.log").exists()  # no service was started


def test_an_output_that_cannot_be_written_is_refused_before_the_run(tmp_path):
    """--output is written after every round: a folder or an unwritable place found only then
    lost the run's figures (the JSON printed aside)."""
    from palm.bench.loadtest import run_loadtest
    from palm.errors import BadConfig
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "a_file").write_text("x")
    for output, message in ((tmp_path / "a_folder", "is a folder"),
                            (tmp_path / "a_file" / "figures.json", "a_file")):
        with pytest.raises(BadConfig, match=message) as refused:
            run_loadtest(tmp_path / "work", model="lenet5", image_size=32, output=output)
        assert refused.value.param == "output"
    assert not (tmp_path / "work").exists()
