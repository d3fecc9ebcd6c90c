"""The input pipeline benchmark (palm benchmark-data) and the load test as library functions."""
from __future__ import annotations

import json
import os
import socket
import time

import numpy as np
import pytest

from palm.bench.data import run_input_pipeline
from palm.bench.loadtest import (TARGETS, cpu_seconds, free_port, missed_targets, round_ratio,
                                 run_loadtest, server_stages, verdict_line)
from palm.errors import BadConfig, BadData


def test_input_pipeline_measures_decode_and_loader(tmp_path, capsys):
    out = tmp_path / "pipeline.json"
    result = run_input_pipeline(source_size="256x240", image_size=32, repeats=1, n_images=4,
                                batch_size=2, workers=[0], output=out)
    assert json.loads(out.read_text()) == result
    assert result["source"].startswith("256x240 JPEG")
    assert result["decode"]["full decode + resize"]["ms"] > 0
    assert set(result["loader_images_per_s"]["num_workers=0"]) == {
        "no cache", "cache, cold epoch", "cache, warm epoch"}
    printed = capsys.readouterr().out
    assert "source: 256x240 JPEG" in printed and "  num_workers=0: no cache" in printed


@pytest.mark.parametrize("kwargs, message", [
    ({"source_size": "big"}, "source_size must be WIDTHxHEIGHT"),
    ({"repeats": 0}, "repeats must be >= 1"),
    ({"workers": [0, -1]}, r"workers\[1\] must be >= 0"),
])
def test_input_pipeline_names_the_bad_parameter(kwargs, message, tmp_path):
    with pytest.raises(BadConfig, match=message):
        run_input_pipeline(output=tmp_path / "x.json", **kwargs)
    assert not (tmp_path / "x.json").exists()


def test_free_port_is_free():
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # raises if something holds it


def test_loadtest_refuses_bad_parameters_before_starting(tmp_path):
    with pytest.raises(BadConfig, match="exactly one of checkpoint and model"):
        run_loadtest(tmp_path)
    with pytest.raises(BadConfig, match="requests must be >= 1"):
        run_loadtest(tmp_path, model="lenet5", requests=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadData, match="empty: no photos found"):
        run_loadtest(tmp_path, model="lenet5", image_size=32, photos=tmp_path / "empty")
    with pytest.raises(BadConfig, match="int8 quantizes the random-weight model"):
        run_loadtest(tmp_path, checkpoint=tmp_path / "x.pdparams", int8=True)


def _load_result(**changes) -> dict:
    result = {"errors": 0, "throughput_req_s": 30.0, "ratio_to_batch_rate": 0.9,
              "max_batch": 8, "model_batch8_img_s": 33.3, "p50_ms": 200.0, "p95_ms": 400.0,
              "p99_ms": 450.0, "rounds": [{}] * 5, "rss_after_rounds_mb": [600, 610, 640, 620, 630],
              "rss_growth_mb": 40.0, "loadavg_start": (1.0, 1, 1), "loadavg_end": (2.0, 1, 1)}
    return {**result, **changes}


@pytest.mark.parametrize("changes, missed", [
    ({}, []),
    ({"errors": 3}, ["3 failed requests"]),
    ({"ratio_to_batch_rate": 0.84}, ["ratio 0.84 < 0.85"]),
    ({"p95_ms": 501.0}, ["p95 501 ms > 500"]),
    ({"rss_growth_mb": 51.0}, ["RSS grew 51 MB after round 1 > 50"]),
    ({"rss_growth_mb": 99.0, "rounds": [{}]}, []),  # one round shows no growth
])
def test_the_verdict_names_each_missed_target(changes, missed):
    result = _load_result(**changes)
    result["missed"] = missed_targets(result, TARGETS)
    assert result["missed"] == missed
    line = verdict_line(result)
    assert line.startswith("verdict: MISSED" if missed else "verdict: MET")
    assert "0.90x" in line or "0.84x" in line
    assert "600 -> 610 -> 640 -> 620 -> 630 MB" in line and "load average 1.00 -> 2.00" in line


def test_server_stages_are_the_medians_of_the_last_requests(tmp_path):
    rng = np.random.default_rng(0)
    stages = [{"upload": float(u), "decode": float(d)} for u, d in rng.uniform(0, 50, (9, 2))]
    lines = ["not json, a warning", json.dumps({"event": "request", "ms": 3})]
    lines += [json.dumps({"event": "predicted", "stage_ms": s}) for s in stages]
    log = tmp_path / "serve.log"
    log.write_text("\n".join(lines) + "\n")
    medians = server_stages(log, last=5)
    for name in ("upload", "decode"):
        assert medians[name] == pytest.approx(np.median([s[name] for s in stages[-5:]]), abs=0.05)


def test_each_round_is_compared_with_the_model_rate_around_it():
    rounds = [{"throughput_req_s": 9.0}, {"throughput_req_s": 30.0}, {"throughput_req_s": 3.0}]
    rates = [10.0, 10.0, 40.0, 2.0]  # another job came and went
    ratio = round_ratio(rounds, rates)
    each = [9 / 10, 30 / 25, 3 / 21]
    assert [r["ratio_to_batch_rate"] for r in rounds] == pytest.approx(each, abs=1e-3)
    assert ratio == pytest.approx(np.median(each), abs=1e-3)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_cpu_seconds_are_the_process_own_times():
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    times = os.times()
    assert cpu_seconds(os.getpid()) == pytest.approx(times.user + times.system, abs=0.05)
