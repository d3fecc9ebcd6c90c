"""The input pipeline benchmark (palm benchmark-data) and the load test as library functions."""
from __future__ import annotations

import json
import socket

import pytest

from palm.bench.data import run_input_pipeline
from palm.bench.loadtest import free_port, run_loadtest
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
