"""Export to Paddle Inference and the one predictor interface over both engines."""
from __future__ import annotations

import ctypes
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import paddle
import pytest

from palm.engine import inference
from palm.engine.checkpoint import save_checkpoint
from palm.engine.export import META_NAME
from palm.engine.inference import (
    DygraphPredictor,
    InferencePredictor,
    load_predictor,
    probe_export,
)
from palm.models import build_model
from palm.cli import export as export_tool
from palm.engine.checkpoint import CheckpointError
from palm.engine.inference import exported_files
from palm.engine.export import export_checkpoint
from palm.engine.inference import has_int8

SIZE = 64
META = {
    "model": "resnet18", "num_classes": 1, "class_names": ["non-PM", "PM"],
    "image_size": SIZE, "normalize": "minus_one_one", "fundus_crop": False,
    "threshold": 0.4, "epoch": 2, "metrics": {"auc": 0.9}, "model_kwargs": {},
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A resnet18 checkpoint whose batch-norm statistics are not the identity."""
    paddle.seed(0)
    model = build_model("resnet18", num_classes=1)
    rng = np.random.default_rng(0)
    for layer in model.sublayers():
        if isinstance(layer, paddle.nn.BatchNorm2D):
            n = layer._mean.shape[0]
            layer._mean.set_value(rng.normal(0, 0.1, n).astype("float32"))
            layer._variance.set_value(rng.uniform(0.5, 2.0, n).astype("float32"))
    # small head weights: logits near 0, so probabilities differ between images
    model.fc.weight.set_value(rng.normal(0, 0.005, model.fc.weight.shape).astype("float32"))
    path = tmp_path_factory.mktemp("ckpt") / "best.pdparams"
    save_checkpoint(path, model, META)
    return path


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "resnet18"
    args = export_tool.get_args_parser().parse_args(
        ["--checkpoint", str(checkpoint), "--output", str(out)]
    )
    assert export_tool.main(args) == out
    return out


def _batch(n: int) -> np.ndarray:
    return np.random.default_rng(n).uniform(-1, 1, (n, 3, SIZE, SIZE)).astype("float32")


def _openmp_max_threads() -> int:
    """omp_get_max_threads() of the Intel OpenMP runtime the Paddle CPU wheel ships."""
    lib = Path(paddle.__file__).parent / "libs" / "libiomp5.so"
    if not lib.is_file():
        pytest.skip("this Paddle build ships no libiomp5.so")
    return ctypes.CDLL(str(lib)).omp_get_max_threads()


@pytest.mark.slow
def test_predictor_hands_the_math_threads_back_to_dygraph(exported, monkeypatch):
    # Paddle Inference drops the process to one math thread after a CPU run; later dygraph
    # work (the Grad-CAM of eval --report) must get palm's thread count back. 3 is a count
    # neither Paddle nor the predictor would set by themselves.
    original = inference.DYGRAPH_THREADS
    monkeypatch.setattr(inference, "DYGRAPH_THREADS", 3)
    predictor = InferencePredictor(exported, device="cpu", threads=2)
    try:
        predictor.predict(_batch(2))
        assert _openmp_max_threads() == 3
    finally:
        paddle.base.core.set_num_threads(original)


def test_export_writes_inference_format_and_meta(exported, checkpoint):
    names = {p.name for p in exported.iterdir()}
    assert names == {"model.json", "model.pdiparams", META_NAME}  # no staging leftovers
    meta = json.loads((exported / META_NAME).read_text())
    for key in ("model", "class_names", "image_size", "normalize", "threshold", "num_classes"):
        assert meta[key] == META[key]
    assert meta["export"]["input_shape"] == [None, 3, SIZE, SIZE]
    assert meta["source_checkpoint"] == str(checkpoint.resolve())


def test_exported_predictions_equal_dygraph(exported, checkpoint):
    fast = load_predictor(exported)
    ref = load_predictor(checkpoint, engine="dygraph")
    assert isinstance(fast, InferencePredictor) and isinstance(ref, DygraphPredictor)
    assert fast.meta["threshold"] == ref.meta["threshold"] == 0.4
    for n in (3, 1, 5):  # the batch dimension is dynamic
        batch = _batch(n)
        got, want = fast.predict(batch), ref.predict(batch)
        assert got.shape == want.shape == (n, 1)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_inference_engine_on_a_checkpoint_exports_on_the_fly(checkpoint):
    fast = load_predictor(checkpoint, engine="inference")
    assert isinstance(fast, InferencePredictor)
    export_dir = Path(fast.model_dir)
    assert (export_dir / META_NAME).is_file()
    batch = _batch(2)
    np.testing.assert_allclose(
        fast.predict(batch), DygraphPredictor.from_checkpoint(checkpoint).predict(batch),
        rtol=0, atol=1e-4,
    )
    del fast
    import gc

    gc.collect()
    assert not export_dir.exists()  # the temporary export goes with the predictor


def test_auto_engine_choice(checkpoint, exported, monkeypatch):
    assert isinstance(load_predictor(checkpoint, n_images=5), DygraphPredictor)
    assert isinstance(load_predictor(exported, n_images=5), InferencePredictor)
    # many images: the probed temporary export; a failed probe falls back to dygraph
    monkeypatch.setattr(inference, "probe_export", lambda *a, **k: "simulated crash")
    with pytest.warns(UserWarning, match="simulated crash"):
        assert isinstance(load_predictor(checkpoint, n_images=1000), DygraphPredictor)


@pytest.mark.slow  # a child process of its own
def test_probe_reports_a_broken_export_without_crashing(exported, checkpoint, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(exported, broken)
    (broken / "model.json").write_text("{not a program")
    problem = probe_export(broken, DygraphPredictor.from_checkpoint(checkpoint))
    assert problem and problem.startswith("the child process failed")


@pytest.mark.slow  # predictor options; the default path stays quick
def test_memory_optim_and_plain_cpu_options(exported):
    ref = InferencePredictor(exported)
    batch = _batch(2)
    for options in ({"memory_optim": True}, {"onednn": False, "ir_optim": False, "threads": 1}):
        np.testing.assert_allclose(
            InferencePredictor(exported, **options).predict(batch), ref.predict(batch),
            rtol=0, atol=1e-4,
        )


BF16 = paddle.base.core.supports_bfloat16()


@pytest.mark.skipif(not BF16, reason="this CPU has no AVX512-BF16/AMX")
@pytest.mark.slow
def test_bf16_predictor_close_to_fp32_and_faster_path_chosen(exported, checkpoint):
    fp32 = InferencePredictor(exported)
    bf16 = InferencePredictor(exported, precision="bf16")
    batch = _batch(6)
    want, got = fp32.predict(batch), bf16.predict(batch)
    assert not np.array_equal(got, want)  # bfloat16 kernels really ran
    np.testing.assert_allclose(got, want, rtol=0, atol=0.05 * max(1.0, np.abs(want).max()))
    # a checkpoint with a reduced precision goes to the inference engine however few images
    fast = load_predictor(checkpoint, n_images=2, precision="bf16")
    assert isinstance(fast, InferencePredictor) and fast.precision == "bf16"


def test_bf16_refused_where_it_cannot_run(exported, checkpoint, monkeypatch):
    with pytest.raises(ValueError, match="runs on the inference engine"):
        load_predictor(checkpoint, engine="dygraph", precision="bf16")
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        InferencePredictor(exported, precision="fp16")
    with pytest.raises(ValueError, match="CPU with oneDNN only"):
        InferencePredictor(exported, precision="bf16", onednn=False)
    monkeypatch.setattr(paddle.base.core, "supports_bfloat16", lambda: False)
    with pytest.raises(ValueError, match="AVX512-BF16 or AMX"):
        InferencePredictor(exported, precision="bf16")


@pytest.mark.parametrize(
    "make, engine, error, match",
    [
        (lambda d: d / "missing.pdparams", "auto", FileNotFoundError, "no such checkpoint"),
        (lambda d: d, "auto", FileNotFoundError, "not a palm export"),
        (lambda d: _touch(d / "weights.pt"), "auto", ValueError, "expected a .pdparams"),
        (lambda d: _touch(d / "x.pdparams"), "auto", FileNotFoundError, "sidecar not found"),
        (lambda d: _touch(d / "x.pdparams"), "onnx", ValueError, "unknown engine"),
    ],
)
def test_load_predictor_bad_paths(tmp_path, make, engine, error, match):
    path = make(tmp_path)
    with pytest.raises(error, match=match) as info:
        load_predictor(path, engine=engine)
    if engine != "onnx":
        assert path.stem in str(info.value)  # the message names the file


def test_incomplete_export_and_dygraph_on_export(exported, tmp_path):
    with pytest.raises(ValueError, match="only with the inference engine"):
        load_predictor(exported, engine="dygraph")
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(exported / META_NAME, partial / META_NAME)
    with pytest.raises(FileNotFoundError, match="incomplete export") as info:
        load_predictor(partial)
    assert str(partial) in str(info.value)


def test_export_tool_reports_bad_checkpoint(tmp_path, capsys, monkeypatch):
    from palm.cli.common import cli

    with pytest.raises(SystemExit) as info:
        cli("export", ["--checkpoint", str(tmp_path / "nope.pdparams"),
                       "--output", str(tmp_path / "out")])
    assert "nope.pdparams: checkpoint not found" in str(info.value.code)


def _touch(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def test_predict_tool_with_export_folder_matches_checkpoint(exported, checkpoint, palm_root,
                                                            tmp_path):
    from palm.cli import predict as predict_tool

    folder = palm_root / "PALM-Validation400"
    results = {}
    for name, source, engine in (("ckpt", checkpoint, "dygraph"), ("export", exported, "auto")):
        out = tmp_path / f"{name}.csv"
        argv = ["--checkpoint", str(source), "--input", str(folder), "--output", str(out),
                "--engine", engine, "--num-workers", "0", "--batch-size", "5", "--no-progress"]
        predict_tool.main(predict_tool.get_args_parser().parse_args(argv))
        results[name] = pd.read_csv(out).set_index("path")
    assert len(results["export"]) == len(list(folder.glob("*.jpg"))) > 0
    np.testing.assert_allclose(results["export"]["probability"],
                               results["ckpt"].loc[results["export"].index, "probability"],
                               atol=1e-5)
    assert (results["export"]["prediction"] == results["ckpt"]["prediction"]).all()


@pytest.mark.slow
def test_eval_tool_with_export_folder_matches_checkpoint(exported, checkpoint, palm_root,
                                                         tmp_path):
    from palm.cli import eval as eval_tool

    metrics = {}
    for name, source in (("ckpt", checkpoint), ("export", exported)):
        argv = ["--checkpoint", str(source), "--data-root", str(palm_root),
                "--output", str(tmp_path / name)]
        metrics[name] = eval_tool.main(eval_tool.get_args_parser().parse_args(argv))
    assert metrics["ckpt"]["engine"] == "dygraph"  # 16 images: not worth a temporary export
    assert metrics["export"]["engine"] == "inference"
    assert metrics["ckpt"]["compute_precision"] == metrics["export"]["compute_precision"] == "fp32"
    probs = {name: pd.read_csv(tmp_path / name / "predictions.csv")["probability"]
             for name in metrics}
    np.testing.assert_allclose(probs["export"], probs["ckpt"], atol=1e-5)
    assert metrics["export"]["roc_auc"] == pytest.approx(metrics["ckpt"]["roc_auc"])


@pytest.mark.skipif(not BF16, reason="this CPU has no AVX512-BF16/AMX")
@pytest.mark.slow
def test_eval_tool_bf16_records_precision_and_stays_close(exported, palm_root, tmp_path):
    from palm.cli import eval as eval_tool

    probs = {}
    for precision in ("fp32", "bf16"):
        argv = ["--checkpoint", str(exported), "--data-root", str(palm_root),
                "--output", str(tmp_path / precision), "--precision", precision]
        metrics = eval_tool.main(eval_tool.get_args_parser().parse_args(argv))
        assert metrics["compute_precision"] == precision
        probs[precision] = pd.read_csv(tmp_path / precision / "predictions.csv")["probability"]
    diff = np.abs(probs["bf16"] - probs["fp32"])
    assert 0 < diff.max() < 0.02


def test_export_record_with_malformed_hashes_is_refused(fresh_checkpoint, tmp_path):
    """export.sha256 as a number crashed with a TypeError; as text, it checked nothing."""
    folder = tmp_path / "exp"
    folder.mkdir()
    for name in ("model.json", "model.pdiparams"):
        (folder / name).write_bytes(b"")
    meta = json.loads(fresh_checkpoint.with_suffix(".json").read_text())
    for hashes in (5, "model.json"):
        meta["export"] = {"sha256": hashes}
        (folder / META_NAME).write_text(json.dumps(meta))
        with pytest.raises(CheckpointError, match=r"export.sha256 must map file names"):
            exported_files(folder)


def test_export_onto_a_quantized_folder_removes_the_stale_int8_model(lenet_checkpoint, tmp_path):
    folder = export_checkpoint(lenet_checkpoint, tmp_path / "exported")
    # the on-disk layout quantize leaves: its IR files and the int8 record in palm_meta.json
    (folder / "model_int8.xml").write_text("<net/>")
    (folder / "model_int8.bin").write_bytes(b"\0" * 8)
    meta = json.loads((folder / META_NAME).read_text())
    meta["int8"] = {"model_file": "model_int8.xml", "sha256": {}}
    (folder / META_NAME).write_text(json.dumps(meta))
    assert has_int8(folder)

    export_checkpoint(lenet_checkpoint, folder)
    assert not has_int8(folder)
    assert not (folder / "model_int8.xml").exists() and not (folder / "model_int8.bin").exists()
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.pdiparams", META_NAME]
