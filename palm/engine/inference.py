"""One prediction interface over dygraph checkpoints, Paddle Inference and OpenVINO INT8.

`load_predictor(path)` accepts a `.pdparams` checkpoint or a folder written by
`tools/export.py` or `tools/quantize.py` (which adds a validated OpenVINO INT8 model to an
export; it runs by default, `precision="fp32"` runs the folder's fp32 model) and returns an
object with `.meta` (the checkpoint sidecar) and `.predict(batch) -> logits`, so
eval/predict code does not care which engine runs.

Why Paddle Inference: on CPU the oneDNN-optimised inference program runs a network several
times faster than dygraph; `palm benchmark` measures both on the machine at hand (the README
lists its figures).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import paddle

from palm.engine.checkpoint import (CheckpointError, load_checkpoint_model, load_meta, probe_batch,
                                   validate_meta)
from palm.engine.export import META_NAME, export_model
from palm.engine.program_check import check_openvino_model, check_program
from palm.errors import BadCheckpoint, BadConfig
from palm.predictions import main_output
from palm.runtime import usable_cores
from palm.weights import file_sha256

ENGINES = ("auto", "dygraph", "inference")
# bf16 runs oneDNN's bfloat16 kernels on CPUs with AVX512-BF16 or AMX (speed and logit
# difference from fp32: the benchmark's bf16 section); refused with a reason elsewhere.
# int8 runs the OpenVINO model that quantization validated and added to an export folder.
PRECISIONS = ("fp32", "bf16", "int8")
# probe_export: largest logit difference from dygraph, relative to the logits' magnitude
PROBE_TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2}
INT8_META_KEY = "int8"  # palm_meta.json record of a quantized folder
# Paddle 3.3's CPU predictor leaves the process's math library at one thread after every
# run, and dygraph work later in the same process (eval --report's Grad-CAM after an
# inference-engine evaluation, the benchmark's next model) then runs on one thread.
# Each run hands back the count dygraph starts with: OMP_NUM_THREADS, which
# palm.runtime or the user (or, failing both, `import paddle`) set.
DYGRAPH_THREADS = int(os.environ.get("OMP_NUM_THREADS", "1") or 1)
# Below this many images a temporary export (seconds, with the probe) costs more than it saves.
AUTO_EXPORT_MIN_IMAGES = 64


class Predictor(Protocol):
    meta: dict[str, Any]

    def predict(self, batch: np.ndarray) -> np.ndarray: ...


class DygraphPredictor:
    """A dygraph model in eval mode behind the predictor interface.

    Runs on paddle's current device (tools set it with `paddle.set_device`).
    """

    engine = "dygraph"
    precision = "fp32"

    def __init__(self, model: paddle.nn.Layer, meta: dict[str, Any]):
        self.model = model
        self.model.eval()
        self.meta = meta

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path) -> DygraphPredictor:
        model, meta = load_checkpoint_model(checkpoint)
        return cls(model, meta)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Logits for a float32 NCHW batch, shape [N, num_classes]."""
        with paddle.no_grad():
            out = self.model(paddle.to_tensor(np.ascontiguousarray(batch, dtype=np.float32)))
        return main_output(out).numpy()


class InferencePredictor:
    """A Paddle Inference predictor for a folder written by `export_model`.

    Args:
        model_dir: folder with model.json (or model.pdmodel), model.pdiparams, palm_meta.json.
        device: "cpu", "gpu" or None (follow `paddle.get_device()`).
        threads: CPU math threads (default: usable cores; paddle's own default is 1).
        onednn: use oneDNN kernels on CPU (several times faster than without).
        ir_optim: graph optimisation passes (operator fusion).
        memory_optim: reuse buffers between operators. Paddle 3.3's CPU predictor fails to
            build with it unless the new executor is on, and it did not lower peak
            memory (the benchmark's predict section reports it), so it is off by default.
        precision: "fp32", or "bf16" (CPU with oneDNN only; needs AVX512-BF16 or AMX).
        gpu_id, gpu_memory_mb: GPU device and initial memory pool.
        tensorrt: on GPU, convert the program with Paddle-TensorRT (needs a paddle-gpu
            build with TensorRT; fp32 unless `tensorrt_fp16`).
        max_batch_size: largest batch TensorRT is built for.
    """

    engine = "inference"

    def __init__(
        self,
        model_dir: str | Path,
        *,
        device: str | None = None,
        threads: int | None = None,
        onednn: bool = True,
        ir_optim: bool = True,
        memory_optim: bool = False,
        precision: str = "fp32",
        gpu_id: int = 0,
        gpu_memory_mb: int = 256,
        tensorrt: bool = False,
        tensorrt_fp16: bool = False,
        max_batch_size: int = 32,
    ):
        import paddle.inference as pi

        self.model_dir = Path(model_dir)
        self.meta = load_export_meta(self.model_dir)
        model_file, params_file = exported_files(self.model_dir)
        device = device or ("gpu" if paddle.get_device().startswith("gpu") else "cpu")
        if tensorrt and device != "gpu":
            raise BadConfig("TensorRT needs device='gpu'")
        check_precision(precision, device, onednn)
        self.precision = precision
        if tensorrt:
            model_file, params_file = self._tensorrt_convert(
                model_file, tensorrt_fp16, max_batch_size
            )
        config = pi.Config(str(model_file), str(params_file))
        if device == "gpu":
            config.enable_use_gpu(gpu_memory_mb, gpu_id)
        else:
            config.disable_gpu()
            if onednn:
                config.enable_mkldnn()
                if precision == "bf16":
                    config.enable_mkldnn_bfloat16()
            else:
                config.disable_mkldnn()
            config.set_cpu_math_library_num_threads(threads or usable_cores())
        config.switch_ir_optim(ir_optim)
        if memory_optim:
            config.enable_new_executor()  # the memory pass exists only there in Paddle 3.3
            config.enable_memory_optim()
        config.disable_glog_info()
        self.config = config
        self._on_cpu = device == "cpu"
        try:
            self.predictor = pi.create_predictor(config)
        except Exception as e:  # paddle raises ValueError/RuntimeError/OSError variants
            raise BadCheckpoint(f"{self.model_dir}: cannot build the inference predictor ({e})") from None
        self._input = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        self._output = self.predictor.get_output_handle(self.predictor.get_output_names()[0])

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Logits for a float32 NCHW batch, shape [N, num_classes]."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        self._input.reshape(list(batch.shape))
        self._input.copy_from_cpu(batch)
        self.predictor.run()
        if self._on_cpu:
            paddle.base.core.set_num_threads(DYGRAPH_THREADS)
        return self._output.copy_to_cpu()

    def _tensorrt_convert(
        self, model_file: Path, fp16: bool, max_batch_size: int
    ) -> tuple[Path, Path]:
        # Paddle 3 runs PIR programs (.json) through Paddle-TensorRT by converting them first.
        from paddle.tensorrt.export import Input, PrecisionMode, TensorRTConfig, convert

        size = int(self.meta["image_size"])
        self._trt_dir = tempfile.TemporaryDirectory(prefix="palm-trt-")
        out_prefix = Path(self._trt_dir.name) / "model"
        trt_input = Input(
            min_input_shape=(1, 3, size, size),
            optim_input_shape=(max(1, max_batch_size // 2), 3, size, size),
            max_input_shape=(max_batch_size, 3, size, size),
        )
        trt_config = TensorRTConfig(inputs=[trt_input])
        trt_config.save_model_dir = str(out_prefix)
        if fp16:
            trt_config.precision_mode = PrecisionMode.FP16
        convert(str(model_file.with_suffix("")), trt_config)
        return out_prefix.with_suffix(".json"), out_prefix.with_suffix(".pdiparams")


class OpenVINOPredictor:
    """The INT8 model of a `tools/quantize.py` folder on OpenVINO's CPU runtime.

    Args:
        model_dir: a quantized export folder (palm_meta.json with an "int8" record).
        threads: CPU inference threads (default: usable cores).
        model_file: an OpenVINO model to run instead of the folder's recorded one (a model
            being validated before it is recorded).
    """

    engine = "openvino"
    precision = "int8"

    def __init__(self, model_dir: str | Path, *, threads: int | None = None,
                 model_file: str | Path | None = None):
        self.model_dir = Path(model_dir)
        self.meta = load_export_meta(self.model_dir)
        model_file = Path(model_file) if model_file else int8_model_file(self.model_dir)
        check_openvino_model(model_file)
        try:
            import openvino as ov
        except ImportError:  # an optional dependency: a one-line error, not a traceback
            raise BadConfig("INT8 models run on OpenVINO, which is not installed: "
                               "pip install -e \".[int8]\"") from None
        core = ov.Core()
        config = {"INFERENCE_NUM_THREADS": threads or usable_cores(),
                  "PERFORMANCE_HINT": "LATENCY"}
        try:
            self.compiled = core.compile_model(core.read_model(str(model_file)), "CPU", config)
        except RuntimeError as e:
            raise BadCheckpoint(f"{model_file}: OpenVINO cannot compile it "
                               f"({str(e).strip().splitlines()[-1][:200]})") from None

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Logits for a float32 NCHW batch, shape [N, num_classes]."""
        return self.compiled(np.ascontiguousarray(batch, dtype=np.float32))[0]


def int8_model_file(model_dir: str | Path) -> Path:
    """The INT8 model (.xml, its weights .bin beside it) of a quantized folder; a clear error
    if the folder has none, its record is malformed, or its files are missing or changed
    since quantization."""
    model_dir = Path(model_dir)
    meta = load_export_meta(model_dir)
    if INT8_META_KEY not in meta:
        raise CheckpointError(f"{model_dir}: has no INT8 model; make one with tools/quantize.py "
                              "or use precision fp32", param="precision")
    model_file = _int8_record_model(meta[INT8_META_KEY], model_dir / META_NAME)
    for name, digest in meta[INT8_META_KEY]["sha256"].items():
        path = model_dir / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing; re-run tools/quantize.py")
        if file_sha256(path) != digest:
            raise CheckpointError(f"{path}: corrupt or changed since quantization (its SHA-256 "
                                  f"differs from {META_NAME}'s); re-run tools/quantize.py")
    return model_dir / model_file


def _int8_record_model(record: Any, meta_path: Path) -> str:
    """The model file named by an INT8 record, once the record is known to name a file of its
    own folder and to hold the SHA-256 of that file and of its weights (nothing runs
    unverified)."""
    problem = None
    if not isinstance(record, dict):
        problem = f"is a {type(record).__name__}, not an object"
    elif not isinstance(record.get("model_file"), str) or Path(record["model_file"]).name != \
            record["model_file"] or not record["model_file"].endswith(".xml"):
        problem = ("model_file must be an .xml file name in the folder, "
                   f"not {record.get('model_file')!r}")
    else:
        hashes = record.get("sha256")
        needed = {record["model_file"], str(Path(record["model_file"]).with_suffix(".bin"))}
        if not isinstance(hashes, dict) or not needed <= set(hashes) or \
                not all(isinstance(v, str) for v in hashes.values()):
            problem = f"sha256 must give the SHA-256 of {' and '.join(sorted(needed))}"
    if problem:
        raise CheckpointError(f"{meta_path}: its {INT8_META_KEY} record {problem}; "
                              "re-run tools/quantize.py")
    return record["model_file"]


def has_int8(path: str | Path) -> bool:
    """True for a folder written by tools/quantize.py (or one whose INT8 record was damaged:
    running it then says what is wrong instead of quietly running fp32)."""
    return is_exported(path) and INT8_META_KEY in load_export_meta(path)


def check_precision(precision: str, device: str, onednn: bool = True) -> None:
    """Raise ValueError (one line) unless this machine can run `precision` on `device`."""
    if precision not in PRECISIONS:
        raise BadConfig(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return
    if precision == "int8":
        raise BadConfig("int8 runs the OpenVINO model of a tools/quantize.py folder, not the "
                         "Paddle Inference predictor")
    if device != "cpu" or not onednn:
        raise BadConfig("bf16 runs on CPU with oneDNN only (on GPU use TensorRT fp16)")
    if not paddle.base.core.supports_bfloat16():
        raise BadConfig("bf16 needs a CPU with AVX512-BF16 or AMX instructions, which this one "
                        "lacks; use precision fp32", param="precision")


def is_exported(path: str | Path) -> bool:
    """True if `path` is a folder written by `export_model`."""
    return Path(path).is_dir() and (Path(path) / META_NAME).is_file()


def exported_files(model_dir: str | Path) -> tuple[Path, Path]:
    """(program file, params file) of an exported folder; a clear error if incomplete,
    changed since the export (the SHA-256s in palm_meta.json) or holding an op palm's
    exports never use (`palm.engine.program_check`). Every load of an export comes here."""
    model_dir = Path(model_dir)
    params = model_dir / "model.pdiparams"
    programs = [model_dir / f"model{s}" for s in (".json", ".pdmodel")]
    program = next((p for p in programs if p.is_file()), None)
    if program is None or not params.is_file():
        raise FileNotFoundError(
            f"{model_dir}: incomplete export (needs model.json or model.pdmodel and "
            "model.pdiparams; export the checkpoint again)"
        )
    hashes = load_export_meta(model_dir)["export"].get("sha256", {})
    for path in (program, params):
        if path.name in hashes and file_sha256(path) != hashes[path.name]:
            raise CheckpointError(f"{path}: corrupt or changed since the export (its SHA-256 "
                                  f"differs from {META_NAME}'s); export the checkpoint again")
    check_program(program)  # the hashes can be recomputed: its ops decide whether it runs
    return program, params


def load_export_meta(model_dir: str | Path) -> dict[str, Any]:
    """Read and validate palm_meta.json of an exported folder."""
    path = Path(model_dir) / META_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; {model_dir} is not a palm export")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:  # not JSON, not UTF-8, nested too deep
        raise BadCheckpoint(f"{path}: not valid JSON ({e})") from None
    validate_meta(meta, path)
    if not isinstance(meta.get("export"), dict):
        raise CheckpointError(f"{path}: no export record; {model_dir} is not a complete "
                              "palm export")
    hashes = meta["export"].get("sha256", {})
    if not isinstance(hashes, dict) or not all(isinstance(v, str) for v in hashes.values()):
        raise CheckpointError(f"{path}: export.sha256 must map file names to SHA-256 hex text")
    return meta


def weights_sha256(path: str | Path) -> str:
    """SHA-256 of the weights behind a checkpoint or an export folder (names what predicted)."""
    return file_sha256(Path(path) / "model.pdiparams" if is_exported(path) else path)


def source_meta(path: str | Path) -> dict[str, Any]:
    """The sidecar meta of a `.pdparams` checkpoint or an export folder, without loading weights."""
    return load_export_meta(path) if is_exported(path) else load_meta(path)


def load_predictor(
    path: str | Path, engine: str = "auto", n_images: int | None = None, **options: Any
) -> Predictor:
    """Open a checkpoint or an exported folder for prediction.

    Args:
        path: a `.pdparams` checkpoint (with its JSON sidecar) or an export folder.
        engine: "dygraph" (checkpoints only), "inference" (a checkpoint is exported to a
            temporary folder first) or "auto": an exported folder runs on Paddle
            Inference (its INT8 model on OpenVINO); a checkpoint does too when `n_images` is unknown or at least
            AUTO_EXPORT_MIN_IMAGES (or a reduced precision is asked for) and a probe in a
            child process shows the exported model runs and agrees with dygraph, otherwise
            it runs in dygraph.
        n_images: how many images will be predicted, if known (export costs seconds).
        **options: keyword arguments for `InferencePredictor` (ignored by dygraph);
            `precision` None (the default) means "int8" for a tools/quantize.py folder,
            else "fp32".

    Returns:
        An object with `.meta`, `.engine`, `.precision` and `.predict(batch) -> logits`.
    """
    if engine not in ENGINES:
        raise BadConfig(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    path = Path(path)
    if options.get("precision") is None:
        options["precision"] = "int8" if has_int8(path) else "fp32"
    if options["precision"] == "int8":
        return _finite_or_refused(_int8_predictor(path, engine, options), path)
    reduced_precision = options["precision"] != "fp32"
    if reduced_precision and engine == "dygraph":
        raise BadConfig(f"precision {options['precision']} runs on the inference engine, "
                        "not dygraph", param="precision")
    if is_exported(path):
        if engine == "dygraph":
            raise BadConfig(
                f"{path}: an exported model runs only with the inference engine; "
                "pass the .pdparams checkpoint for dygraph"
            )
        return _finite_or_refused(InferencePredictor(path, **options), path)
    if path.is_dir():
        raise FileNotFoundError(f"{path}: folder has no {META_NAME}; not a palm export")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint or export folder")
    if path.suffix != ".pdparams":
        raise BadCheckpoint(f"{path}: expected a .pdparams checkpoint or an export folder")
    if engine == "dygraph" or (
        engine == "auto" and not reduced_precision
        and n_images is not None and n_images < AUTO_EXPORT_MIN_IMAGES
    ):
        return DygraphPredictor.from_checkpoint(path)
    dygraph = DygraphPredictor.from_checkpoint(path)
    export_dir = tempfile.TemporaryDirectory(prefix="palm-export-")
    export_model(
        dygraph.model, export_dir.name, dict(dygraph.meta, source_checkpoint=str(path.resolve()))
    )
    if engine == "auto":
        problem = probe_export(export_dir.name, dygraph, options)
        if problem:
            warnings.warn(f"{path}: using dygraph, the inference engine failed a check: {problem}")
            export_dir.cleanup()
            return dygraph
    del dygraph
    predictor = InferencePredictor(export_dir.name, **options)
    predictor._export_dir = export_dir  # deleted with the predictor
    return predictor


def _finite_or_refused(predictor: Predictor, path: Path) -> Predictor:
    """`predictor` of an export folder, unless it gives NaN or inf logits on a probe image (a
    checkpoint's model is checked as it loads, palm.engine.checkpoint.check_finite_output)."""
    if not np.isfinite(predictor.predict(probe_batch(int(predictor.meta["image_size"])))).all():
        raise CheckpointError(f"{path}: the exported model gives NaN or inf logits on a probe "
                              "image; export it again from a checkpoint that loads")
    return predictor


def _int8_predictor(path: Path, engine: str, options: dict[str, Any]) -> OpenVINOPredictor:
    if not is_exported(path):
        raise BadConfig(f"{path}: precision int8 needs a tools/quantize.py folder; quantize "
                        "the checkpoint first", param="precision")
    if engine == "dygraph":
        raise BadConfig("precision int8 runs on OpenVINO, not dygraph", param="precision")
    return OpenVINOPredictor(path, threads=options.get("threads"))


def exception_line(stderr: str) -> str:
    """The `Type: message` line of the last exception a Python child printed (a message may
    run over several lines, so the last line alone can be a lone bracket), cut to 300
    characters."""
    lines = stderr.strip().splitlines() or ["(no message)"]
    raised = [line for line in lines if re.match(r"[A-Za-z_][\w.]*: ", line)]
    return (raised or lines)[-1][:300]


def probe_export(
    export_dir: str | Path,
    reference: Predictor,
    options: dict[str, Any] | None = None,
    timeout: float = 600.0,
) -> str | None:
    """Run an exported model once in a child process and compare it with `reference`.

    oneDNN kernels have crashed the process for some networks (segmentation faults in
    Paddle 3.3), so a fast path chosen automatically is tried where a
    crash cannot take the caller down.

    Returns:
        None if the child built the predictor and its logits match `reference` (within
        PROBE_TOLERANCE for the precision in `options`, relative to the logits' magnitude
        when above 1), else a one-line reason.
    """
    export_dir = Path(export_dir)
    size = int(load_export_meta(export_dir)["image_size"])
    batch = np.random.default_rng(0).uniform(-1, 1, (2, 3, size, size)).astype("float32")
    expected = reference.predict(batch)
    with tempfile.TemporaryDirectory(prefix="palm-probe-") as tmp:
        np.save(Path(tmp, "in.npy"), batch)
        code = (
            "import json, sys, numpy as np\n"
            "import palm\n"
            "from palm.engine.inference import InferencePredictor\n"
            "p = InferencePredictor(sys.argv[1], **json.loads(sys.argv[2]))\n"
            "np.save(sys.argv[4], p.predict(np.load(sys.argv[3])))\n"
        )
        env = dict(os.environ)
        # the child must import this palm, installed or not
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH")])
        )
        cmd = [sys.executable, "-c", code, str(export_dir), json.dumps(options or {}),
               str(Path(tmp, "in.npy")), str(Path(tmp, "out.npy"))]
        try:
            run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return f"no answer within {timeout:.0f} s"
        if run.returncode < 0:
            return f"the child process died with signal {-run.returncode}"
        if run.returncode != 0:
            return f"the child process failed: {exception_line(run.stderr)}"
        got = np.load(Path(tmp, "out.npy"))
    if got.shape != expected.shape:
        return f"output shape {got.shape} differs from dygraph {expected.shape}"
    diff = float(np.max(np.abs(got - expected)))
    tolerance = PROBE_TOLERANCE[(options or {}).get("precision", "fp32")]
    if diff > tolerance * max(1.0, float(np.max(np.abs(expected)))):
        return f"logits differ from dygraph by {diff:.3g}"
    return None
