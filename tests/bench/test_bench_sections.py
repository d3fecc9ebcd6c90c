"""The benchmark's sections run as library functions and write consistent JSON (figures are
not checked: speed is measured by running the benchmark, not in the test suite)."""
from __future__ import annotations

import json
import math

import numpy as np
import paddle
import pytest

from palm.bench.inference import eval_default_in_child
from palm.bench.loadtest import random_checkpoint
from palm.bench.report import log_training
from palm.bench.sections import run_benchmark
from palm.bench.settings import BenchSettings
from palm.bench.torch_twin import torch_twin, torch_training_step
from palm.bench.train import NO_TORCH, bench_training
from palm.engine.checkpoint import load_checkpoint_model
from palm.errors import BadConfig
from palm.flops import count_params
from palm.models import build_model

TINY = BenchSettings(iters=2, train_iters=3, repeats=1)


@pytest.mark.slow
def test_benchmark_sections_write_json(tmp_path):
    out = tmp_path / "bench.json"
    result = run_benchmark(out, tmp_path / "work", models=["lenet5"], sizes=[32],
                           sections=["train", "compile", "profile", "eval", "inference",
                                     "default"],
                           settings=TINY)
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    (row,) = result["rows"]
    assert (row["model"], row["size"], row["batch"]) == ("lenet5", 32, 8)
    for key in ("train_step", "train_step_eager", "train_step_compiled", "compile_seconds",
                "eval_dygraph", "inference", "eval_default"):
        assert math.isfinite(row[key]) and row[key] > 0, key
    assert row["compiled_vs_eager"] == row["train_step_compiled"] / row["train_step_eager"]
    assert row["inference_vs_eval_dygraph"] == row["inference"] / row["eval_dygraph"]
    assert row["eval_dygraph_vs_eval_default"] == row["eval_dygraph"] / row["eval_default"]
    assert row["inference_rel_diff"] < 1e-4  # the export computes what dygraph computes
    assert row["train_profile"]["paddle"]["phases"]["backward"] > 0
    assert row["train_profile"]["torch"] == NO_TORCH  # lenet5 has no PyTorch twin
    assert result["environment"]["cores"] >= 1


@pytest.mark.slow  # a child process of its own
def test_eval_with_paddle_defaults_runs_in_a_child():
    """The child imports this palm (it runs from the folder holding it) without its tuning."""
    assert eval_default_in_child("lenet5", 32, batch_size=2, iters=1) > 0


def test_stats_section_alone_runs_no_model(tmp_path, capsys):
    result = run_benchmark(tmp_path / "b.json", tmp_path / "work", sections=["stats"],
                           settings=BenchSettings(repeats=1))
    assert result["rows"] == [] and result["stats"]["cases"] == 400
    assert result["stats"]["vectorised_vs_loop"] > 0
    assert "statistics on 400 cases: cases 400" in capsys.readouterr().out


@pytest.mark.parametrize("kwargs, message", [
    ({"iters": 0}, r"iters must be >= 1 \(got 0\)"),
    ({"batch_size": -1}, "batch_size must be >= 1"),
    ({"num_workers": -1}, "num_workers must be >= 0"),
    ({"predict_images": (100,)}, "predict_images needs two or more"),
    ({"precision": "int4"}, "precision must be one of fp32, int8"),
])
def test_settings_name_the_parameter_not_a_flag(kwargs, message):
    with pytest.raises(BadConfig, match=message) as caught:
        BenchSettings(**kwargs)
    assert "--" not in str(caught.value)


def test_unknown_section_or_size_is_refused_before_any_work(tmp_path):
    out, work = tmp_path / "b.json", tmp_path / "work"
    with pytest.raises(BadConfig, match=r"unknown sections \['speed'\]; choose from train"):
        run_benchmark(out, work, sections=["eval", "speed"])
    with pytest.raises(BadConfig, match=r"sizes\[1\] must be >= 1"):
        run_benchmark(out, work, sizes=[32, 0])
    assert not out.exists() and not work.exists()


def test_pytorch_twin_is_the_same_network():
    """The int8 section's PyTorch comparison runs palm's ResNet and ViT layouts: the same
    weights and batch-norm statistics (paddle counts the running mean and variance as
    parameters)."""
    pytest.importorskip("torch")  # benchmark-only comparison, never a dependency
    for name in ("resnet18", "resnet50", "vit_tiny_patch16", "vit_base_patch16"):
        net = torch_twin(name)
        weights = sum(p.numel() for p in net.parameters())
        statistics = sum(b.numel() for n, b in net.named_buffers() if n.endswith(("_mean", "_var")))
        assert weights + statistics == count_params(build_model(name, num_classes=1)), name
    assert torch_twin("lenet5") is None and torch_twin("vit_huge_patch16") is None


@pytest.mark.longest(47)
@pytest.mark.slow
def test_int8_and_decode_sections(tmp_path):
    out = tmp_path / "bench.json"
    run_benchmark(out, tmp_path / "work", models=["lenet5"], sizes=[32],
                  sections=["int8", "decode"], settings=BenchSettings(iters=2, repeats=1))
    (row,) = json.loads(out.read_text())["rows"]
    for key in ("int8", "int8_fp32_predictor", "decode_full_ms", "decode_reduced_ms"):
        assert math.isfinite(row[key]) and row[key] > 0, key
    assert row["int8_vs_int8_fp32_predictor"] == row["int8"] / row["int8_fp32_predictor"]
    assert len(row["int8_runs"]) == 2  # repeats + 1 alternating rounds
    assert row["torch_eager"].startswith("torch not installed or no PyTorch twin")
    # a 2124x2056 photo for a 32 px model decodes at 1/8 and stays close to the full decode
    assert row["decode_reduced_size"] == "266x257" and row["decode_reduced_psnr"] > 35


def test_training_section_without_a_pytorch_twin_says_so(tmp_path):
    row = bench_training("lenet5", 32, TINY, tmp_path, with_loader=False)
    assert row["train_step_torch"] == NO_TORCH and "train_step_vs_torch" not in row
    assert len(row["train_step_runs"]) == 3  # three chunks, so drift shows in their spread
    assert row["train_step"] == pytest.approx(sum(row["train_step_runs"]) / 3)
    lines: list[str] = []
    log_training(lines.append, row)
    assert lines[-1] == f"torch training: {NO_TORCH}"


def test_training_log_shows_the_ratio_and_each_chunk_of_both():
    row = {"train_step": 3.0, "train_step_runs": [2.0, 3.0, 4.0], "train_step_torch": 2.0,
           "train_step_torch_runs": [1.0, 2.0, 3.0], "train_step_vs_torch": 1.5,
           "train_step_vs_torch_best": 4 / 3,
           "train_loader": 2.5, "train_loader_vs_torch": 1.25}
    lines: list[str] = []
    log_training(lines.append, row)
    assert lines[-1] == ("torch eager train step 2.00 img/s: palm step / torch step 1.50x, "
                         "fastest chunks 1.33x, loop with loader / torch step 1.25x (chunks palm / torch: "
                         "2.00 / 1.00; 3.00 / 2.00; 4.00 / 3.00)")


def test_training_section_alternates_palm_and_pytorch(tmp_path):
    pytest.importorskip("torch")  # benchmark-only comparison, never a dependency
    row = bench_training("resnet18", 32, TINY, tmp_path, with_loader=False)
    assert len(row["train_step_runs"]) == len(row["train_step_torch_runs"]) == 3
    assert row["train_step_vs_torch"] == row["train_step"] / row["train_step_torch"]
    assert row["train_step_vs_torch_best"] == (max(row["train_step_runs"])
                                               / max(row["train_step_torch_runs"]))
    assert torch_training_step("lenet5", np.zeros((1, 3, 32, 32), "float32"), np.zeros(1)) is None



@pytest.mark.longest(101)
@pytest.mark.slow
def test_predict_section_on_an_int8_folder_reports_its_ratio_to_the_engine(tmp_path, capsys):
    out = tmp_path / "bench.json"
    run_benchmark(out, tmp_path / "work", models=["lenet5"], sizes=[32], sections=["predict"],
                  settings=BenchSettings(iters=2, repeats=1, predict_images=(4, 12),
                                         precision="int8"))
    (row,) = json.loads(out.read_text())["rows"]
    predict = row["predict"]
    assert predict["precision"] == "int8" and "--precision" not in predict["command"]
    assert "lenet5-32-int8" in predict["command"]  # predict ran the quantized folder
    assert predict["engine_img_per_s"] == max(predict["engine_runs"]) > 0
    # NaN when the two tiny folders' times are too close for a steady rate
    assert predict["steady_vs_engine"] == pytest.approx(
        predict["steady_img_per_s"] / predict["engine_img_per_s"], nan_ok=True)
    assert len(predict["loadavg_start"]) == len(predict["loadavg_end"]) == 3
    assert "x the INT8 engine's" in capsys.readouterr().out


def test_networks_sized_by_their_input_are_timed_at_the_size_asked(tmp_path):
    """lenet sizes its classifier from the input side: the benchmark and the load test built
    it for 224 px whatever --sizes/--image-size said (a traceback at 32 px)."""
    result = run_benchmark(tmp_path / "bench.json", tmp_path / "work", models=["lenet"],
                           sizes=[32], sections=["eval"], settings=TINY)
    assert result["rows"][0]["eval_dygraph"] > 0
    model, meta = load_checkpoint_model(random_checkpoint("lenet", 32, tmp_path))
    assert meta["model_kwargs"] == {"image_size": 32}
    assert model(paddle.rand([2, 3, 32, 32])).shape == [2, 1]
