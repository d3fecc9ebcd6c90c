"""tools/benchmark.py runs its sections and writes consistent JSON (figures are not checked:
speed is measured by running the script, not in the test suite)."""
from __future__ import annotations

import json
import math

import pytest

from palm.flops import count_params
from palm.models import build_model
from palm.cli import benchmark


def test_benchmark_sections_write_json(tmp_path):
    out = tmp_path / "bench.json"
    argv = ["--models", "lenet5", "--sizes", "32", "--sections", "train,compile,eval,inference",
            "--iters", "2", "--train-iters", "3", "--work-dir", str(tmp_path / "work"),
            "--output", str(out)]
    benchmark.main(benchmark.get_args_parser().parse_args(argv))
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert (row["model"], row["size"], row["batch"]) == ("lenet5", 32, 8)
    for key in ("train_step", "train_step_eager", "train_step_compiled", "compile_seconds",
                "eval_dygraph", "inference"):
        assert math.isfinite(row[key]) and row[key] > 0, key
    assert row["compiled_vs_eager"] == row["train_step_compiled"] / row["train_step_eager"]
    assert row["inference_vs_eval_dygraph"] == row["inference"] / row["eval_dygraph"]
    assert row["inference_rel_diff"] < 1e-4  # the export computes what dygraph computes
    assert result["environment"]["cores"] >= 1


def test_pytorch_twin_is_the_same_network():
    """The int8 section's PyTorch comparison runs palm's ResNet layout: the same weights and
    batch-norm statistics (paddle counts the running mean and variance as parameters)."""
    pytest.importorskip("torch")  # benchmark-only comparison, never a dependency
    for name in ("resnet18", "resnet50"):
        net = benchmark.torch_resnet(name)
        weights = sum(p.numel() for p in net.parameters())
        statistics = sum(b.numel() for n, b in net.named_buffers() if n.endswith(("_mean", "_var")))
        assert weights + statistics == count_params(build_model(name, num_classes=1)), name
    assert benchmark.torch_resnet("lenet5") is None


@pytest.mark.slow
def test_int8_and_decode_sections(tmp_path):
    out = tmp_path / "bench.json"
    argv = ["--models", "lenet5", "--sizes", "32", "--sections", "int8,decode", "--iters", "2",
            "--repeats", "1", "--work-dir", str(tmp_path / "work"), "--output", str(out)]
    benchmark.main(benchmark.get_args_parser().parse_args(argv))
    (row,) = json.loads(out.read_text())["rows"]
    for key in ("int8", "int8_fp32_predictor", "decode_full_ms", "decode_reduced_ms"):
        assert math.isfinite(row[key]) and row[key] > 0, key
    assert row["int8_vs_int8_fp32_predictor"] == row["int8"] / row["int8_fp32_predictor"]
    assert len(row["int8_runs"]) == 2  # --repeats + 1 alternating rounds
    assert row["torch_eager"].startswith("torch not installed or no PyTorch twin")
    # a 2124x2056 photo for a 32 px model decodes at 1/8 and stays close to the full decode
    assert row["decode_reduced_size"] == "266x257" and row["decode_reduced_psnr"] > 35
