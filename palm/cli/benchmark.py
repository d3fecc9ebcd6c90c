"""Speed of every way palm runs a network on this machine, side by side in one run.

For each model and image size (random weights; speed does not depend on them):
  train_step      bare training steps on one in-memory batch (forward, loss, backward, step)
  train_loader    palm's training loop (engine.train.train_one_epoch) fed by the real data
                  loader from PALM-sized JPEGs (2124x2056), augmentations on: the first
                  epoch (decoding, filling the image cache) and the second (cache hits)
  compile         bare training steps eager vs compiled with paddle.jit.to_static
                  (tools/train.py --compile), alternating; and the seconds compiling took
  eval_default    dygraph eval as Paddle ships (child process without palm's CPU tuning:
                  one OpenMP thread, MKL's generic path on AMD)
  eval_dygraph    dygraph eval with palm's CPU tuning (threads = cores, MKL_DEBUG_CPU_TYPE)
  inference       the exported model on Paddle Inference (oneDNN, IR optimisation); best of
                  --repeats measurements, before and after the child processes below
  inference_bf16  the same on oneDNN's bfloat16 kernels (predict/eval --precision bf16), on
                  CPUs with AVX512-BF16 or AMX; with its largest logit difference from fp32
  onnxruntime     the same export through paddle2onnx + onnxruntime, when both import
  int8            tools/quantize.py's INT8 model (OpenVINO + NNCF, calibrated on 16 synthetic
                  PALM photos) against the fp32 predictor and PyTorch eager eval of the same
                  network (when torch is installed; resnet18/34/50 only), the three
                  alternating --repeats + 1 times; with INT8's largest logit difference
                  from fp32 on those photos, relative to the logits' size
  decode          one PALM-sized JPEG to the model's input size: full decode + resize against
                  the reduced-scale decode read_image picks (1/2, 1/4, 1/8) and a cache hit,
                  ms per image and PSNR against the full decode
  predict         tools/predict.py end to end on folders of PALM-sized JPEGs, as a child
                  process: wall time (fastest of --repeats) and peak memory (main process
                  and all processes) per folder size; the steady rate is
                  (n_big - n_small) / (t_big - t_small), which cancels start-up time
  stats           (once, not per model) palm.metrics on 400 PALM-like cases (211
                  positive): all 95 % intervals (2000 stratified bootstrap resamples) and
                  the operating points with their bootstrap, against a Python loop of
                  scikit-learn's roc_auc_score over the same number of resamples
Throughputs are images/s. The machine may be shared: compare ratios within one run.

Examples:
    palm benchmark --models resnet50,resnet18 --output bench.json
    palm benchmark --table --output table.json   # every registered model, eval only
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import palm  # noqa: F401  (CPU tuning before paddle is imported)
import numpy as np
import pandas as pd
import paddle

from palm.cli.benchmark_data import bench_decode as decode_ways
from palm.cli.common import add_verbosity_options, run_tool
from palm.data import PalmTrainSet, build_loader, build_transform
from palm.data.synth import make_palm_dataset
from palm.engine.export import export_model
from palm.engine.inference import DygraphPredictor, InferencePredictor, OpenVINOPredictor
from palm.engine.losses import ClassificationLoss
from palm.engine.runner import compile_network
from palm.engine.train import train_one_epoch
from palm.errors import BadConfig
from palm import metrics as M
from palm.flops import count_flops, count_params
from palm.io_utils import write_json_atomic
from palm.models import build_model, list_models
from palm.runtime import OPT_OUT_VAR, cpu_vendor, usable_cores
from palm.engine.quantize import calibration_images, export_onnx, quantize_onnx

REPO = Path(__file__).resolve().parents[1]
PALM_SIZE = "2124x2056"
SECTIONS = ("train", "loader", "compile", "default", "eval", "inference", "bf16", "onnx",
            "int8", "decode", "predict", "stats")
TUNING_VARS = ("OMP_NUM_THREADS", "MKL_DEBUG_CPU_TYPE", "KMP_BLOCKTIME")  # palm.runtime sets them


DEFAULT_MODELS = "resnet50,resnet18"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", help="comma-separated model names (default resnet50,resnet18; "
                   "with --table every registered model)")
    p.add_argument("--sizes", default="224", help="comma-separated image sizes")
    p.add_argument("-b", "--batch-size", type=int, default=8)
    p.add_argument("--iters", type=int, default=10, help="timed batches per eval measurement")
    p.add_argument("--train-iters", type=int, default=24,
                   help="timed bare training steps (a third before, between and after the "
                        "loader epochs)")
    p.add_argument("--train-images", type=int, default=400,
                   help="images per training-loop epoch fed by the data loader (two epochs "
                        "run; default: the PALM training set's size)")
    p.add_argument("--num-workers", type=int, default=2, help="data loader processes")
    p.add_argument("--predict-images", default="100,500",
                   help="folder sizes for the end-to-end predict runs (two or more)")
    p.add_argument("--repeats", type=int, default=2,
                   help="runs of each predictor and predict.py measurement; the best counts")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"subset of {','.join(SECTIONS)}")
    p.add_argument("--table", action="store_true",
                   help="README table: every registered model at 224 px, params, GFLOPs, "
                        "dygraph and inference eval (each model in its own child process)")
    p.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "palm-benchmark"),
                   help="synthetic images and exports (reused between runs)")
    p.add_argument("--output", default="benchmark.json", help="JSON results (written atomically)")
    p.add_argument("--child", choices=("eval-default", "table-row"), help=argparse.SUPPRESS)
    add_verbosity_options(p)
    return p


def images_per_second(fn: Callable[[], Any], batch_size: int, iters: int, warmup: int = 2) -> float:
    """Throughput of `fn` (one batch per call) over `iters` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return batch_size * iters / (time.perf_counter() - start)


def random_batch(batch_size: int, size: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, (batch_size, 3, size, size)).astype("float32")


# ----------------------------------------------------------------------------- data on disk
def palm_sized_images(work_dir: Path, n_distinct: int = 16) -> list[Path]:
    """`n_distinct` synthetic PALM photos at 2124x2056, drawn once and reused."""
    root = work_dir / "synth"
    train_dir = root / "PALM-Training400" / "PALM-Training400"
    if not (root / "done").is_file():
        shutil.rmtree(root, ignore_errors=True)
        make_palm_dataset(root, n_train=n_distinct, n_val=1, image_size=PALM_SIZE, seed=0,
                          num_workers=min(2, usable_cores()))
        (root / "done").write_text("ok\n")
    return sorted(train_dir.glob("*.jpg"))


def fill_folder(folder: Path, sources: list[Path], n: int, keep_prefix: bool) -> Path:
    """`n` JPEGs in `folder`, hard links (or copies) of `sources` in turn.

    Decoding cost is the same for a repeated file; names keep the PALM class letter when
    `keep_prefix`, so PalmTrainSet labels them.
    """
    if folder.is_dir() and len(list(folder.glob("*.jpg"))) == n:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i in range(n):
        src = sources[i % len(sources)]
        name = f"{src.name[0] if keep_prefix else 'img'}{i:05d}.jpg"
        try:
            os.link(src, folder / name)
        except OSError:
            shutil.copyfile(src, folder / name)
    return folder


# ----------------------------------------------------------------------------- measurements
def training_setup(model_name: str, batch_size: int, size: int, compiled: bool = False):
    """(model, optimizer, loss, one-batch training step) as tools/train.py builds them."""
    paddle.seed(0)
    model = build_model(model_name, num_classes=1)
    model.train()
    optimizer = paddle.optimizer.Momentum(1e-3, momentum=0.9, parameters=model.parameters(),
                                          weight_decay=1e-3)
    loss_fn = ClassificationLoss(num_outputs=1)
    net = compile_network(model) if compiled else model
    images = paddle.to_tensor(random_batch(batch_size, size))
    labels = paddle.to_tensor(np.arange(batch_size) % 2, dtype="int64")

    def step() -> None:
        loss = loss_fn(net(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        float(loss)  # wait for the result, as the real loop does

    return model, optimizer, loss_fn, step


def bench_compiled_training(model_name: str, size: int, args) -> dict:
    """Bare steps of the eager and the to_static-compiled network (train.py --compile),
    alternating in chunks so machine drift affects both alike; plus compile seconds."""
    *_, eager = training_setup(model_name, args.batch_size, size)
    *_, compiled = training_setup(model_name, args.batch_size, size, compiled=True)
    start = time.perf_counter()
    compiled()  # the first call traces and compiles
    out: dict[str, Any] = {"compile_seconds": time.perf_counter() - start}
    chunk = max(1, args.train_iters // 3)
    rates: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(3):
        rates["eager"].append(images_per_second(eager, args.batch_size, chunk, warmup=1))
        rates["compiled"].append(images_per_second(compiled, args.batch_size, chunk, warmup=1))
    out["train_step_eager"] = float(np.mean(rates["eager"]))
    out["train_step_compiled"] = float(np.mean(rates["compiled"]))
    out["compiled_vs_eager"] = out["train_step_compiled"] / out["train_step_eager"]
    return out


def bench_training(model_name: str, size: int, args, work_dir: Path, sections: set[str]) -> dict:
    """Bare step rate and, with the "loader" section, the training loop's rate in its first
    epoch (decoding into the image cache) and second (cache hits)."""
    model, optimizer, loss_fn, step = training_setup(model_name, args.batch_size, size)
    out: dict[str, Any] = {}
    if "loader" not in sections:
        out["train_step"] = images_per_second(step, args.batch_size, args.train_iters)
        return out
    # bare steps before, between and after the two loader epochs, so a drift in the
    # machine's speed affects both figures alike
    chunk = max(1, args.train_iters // 3)
    bare = [images_per_second(step, args.batch_size, chunk)]
    folder = fill_folder(work_dir / f"train{args.train_images}", palm_sized_images(work_dir),
                         args.train_images, keep_prefix=True)
    epochs = []
    # as tools/train.py runs: the image cache fills in epoch 1 and serves every later one
    with tempfile.TemporaryDirectory(dir=work_dir) as cache:
        dataset = PalmTrainSet(folder, transform=build_transform(size, train=True),
                               cache_dir=cache)
        loader = build_loader(dataset, args.batch_size, train=True, num_workers=args.num_workers)
        for epoch in (1, 2):
            epochs.append(train_one_epoch(model, loss_fn, optimizer, loader, epoch=epoch,
                                          progress=False)["train_img_per_s"])
            bare.append(images_per_second(step, args.batch_size, chunk, warmup=0))
    out["train_step"] = float(np.mean(bare))
    out["train_step_runs"] = bare  # their spread shows how much the machine drifted
    out["train_loader_first_epoch"], out["train_loader"] = epochs
    out["first_epoch_vs_step"] = epochs[0] / out["train_step"]
    out["loader_vs_step"] = epochs[1] / out["train_step"]
    return out


def eval_default_in_child(model_name: str, size: int, args) -> float:
    """Dygraph eval img/s in a child process with Paddle's own CPU defaults."""
    env = {k: v for k, v in os.environ.items() if k not in TUNING_VARS}
    env[OPT_OUT_VAR] = "1"
    cmd = [sys.executable, "-m", "palm.cli.benchmark", "--child", "eval-default",
           "--models", model_name, "--sizes", str(size), "--batch-size", str(args.batch_size),
           "--iters", str(args.iters)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    if run.returncode != 0:
        raise RuntimeError(f"default-settings child failed: {run.stderr.strip()[-300:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])["eval_default"]


def bench_bf16(export_dir: Path, batch: np.ndarray, fp32_logits: np.ndarray, iters: int) -> dict:
    """img/s of the bfloat16 predictor and its largest logit difference (relative to the
    logits' size), or the reason it cannot run here."""
    try:
        predictor = InferencePredictor(export_dir, precision="bf16")
    except ValueError as e:
        return {"inference_bf16": str(e)}
    diff = np.max(np.abs(predictor.predict(batch) - fp32_logits))
    return {"inference_bf16": images_per_second(lambda: predictor.predict(batch), len(batch), iters),
            "inference_bf16_rel_diff": float(diff / max(1.0, float(np.max(np.abs(fp32_logits)))))}


def bench_onnxruntime(export_dir: Path, batch: np.ndarray, iters: int) -> float | str:
    """img/s through paddle2onnx + onnxruntime, or the reason it could not run."""
    try:
        import onnxruntime as ort
        import paddle2onnx  # noqa: F401  (used in the child below)
    except ImportError as e:
        return f"not installed ({e.name})"
    onnx_file = export_dir / "model.onnx"
    # in a child: the converter prints a lot and is new code; a crash costs only this column
    code = ("import sys, paddle2onnx; paddle2onnx.export(sys.argv[1], sys.argv[2], "
            "save_file=sys.argv[3])")
    run = subprocess.run([sys.executable, "-c", code, str(export_dir / "model.json"),
                          str(export_dir / "model.pdiparams"), str(onnx_file)],
                         capture_output=True, text=True)
    if run.returncode != 0 or not onnx_file.is_file():
        return f"paddle2onnx failed: {(run.stderr.strip().splitlines() or ['?'])[-1][:120]}"
    try:
        options = ort.SessionOptions()
        options.intra_op_num_threads = usable_cores()
        options.log_severity_level = 3  # errors only
        session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        return f"onnxruntime failed: {str(e).splitlines()[0][:120]}"
    name = session.get_inputs()[0].name
    return images_per_second(lambda: session.run(None, {name: batch}), len(batch), iters)


def torch_resnet(model_name: str) -> Any:
    """The torchvision layout of resnet18/34/50 (random weights) for PyTorch eager timing,
    or None for other networks or without torch. Written out because torchvision is not
    needed for anything else."""
    depths = {"resnet18": ([2, 2, 2, 2], False), "resnet34": ([3, 4, 6, 3], False),
              "resnet50": ([3, 4, 6, 3], True)}
    try:
        import torch
        from torch import nn
    except ImportError:
        return None
    if model_name not in depths:
        return None
    blocks, bottleneck = depths[model_name]
    expansion = 4 if bottleneck else 1

    class Block(nn.Module):
        def __init__(self, cin: int, width: int, stride: int):
            super().__init__()
            cout = width * expansion
            if bottleneck:
                convs = [(cin, width, 1, 1), (width, width, 3, stride), (width, cout, 1, 1)]
            else:
                convs = [(cin, width, 3, stride), (width, cout, 3, 1)]
            layers: list[nn.Module] = []
            for i, (a, b, k, st) in enumerate(convs):
                layers += [nn.Conv2d(a, b, k, st, k // 2, bias=False), nn.BatchNorm2d(b)]
                if i < len(convs) - 1:
                    layers.append(nn.ReLU(inplace=True))
            self.body = nn.Sequential(*layers)
            self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                        nn.BatchNorm2d(cout))
                          if stride != 1 or cin != cout else nn.Identity())

        def forward(self, x):
            return torch.relu(self.body(x) + self.short(x))

    layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                               nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for stage, n in enumerate(blocks):
        for i in range(n):
            layers.append(Block(cin, 64 * 2 ** stage, 2 if stage and not i else 1))
            cin = 64 * 2 ** stage * expansion
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 1)]
    torch.set_num_threads(usable_cores())
    return nn.Sequential(*layers).eval()


def bench_int8(export_dir: Path, meta: dict, model_name: str, args, work_dir: Path) -> dict:
    """INT8 (OpenVINO + NNCF) vs the fp32 predictor vs PyTorch eager, alternating."""
    try:
        import nncf  # noqa: F401
    except ImportError as e:
        return {"int8": f"not installed ({e.name}); pip install -e '.[int8]'"}
    photos = [str(p) for p in palm_sized_images(work_dir)]
    calibration = calibration_images(photos, meta, len(photos))
    int8_file = export_dir / "model_int8.xml"
    with tempfile.TemporaryDirectory() as tmp:
        quantize_onnx(export_onnx(export_dir, Path(tmp) / "model.onnx"), calibration, int8_file)
    fp32 = InferencePredictor(export_dir)
    int8 = OpenVINOPredictor(export_dir, model_file=int8_file)
    photo_batch = np.concatenate(calibration[:args.batch_size])
    ref = fp32.predict(photo_batch)
    out: dict[str, Any] = {"int8_rel_diff": float(np.max(np.abs(int8.predict(photo_batch) - ref))
                                                   / max(1.0, float(np.max(np.abs(ref)))))}
    batch = random_batch(args.batch_size, int(meta["image_size"]))
    runners = {"int8": lambda: int8.predict(batch), "int8_fp32_predictor": lambda: fp32.predict(batch)}
    net = torch_resnet(model_name)
    if net is not None:
        import torch

        torch_batch = torch.from_numpy(batch)

        def torch_eval() -> None:
            with torch.no_grad():
                net(torch_batch)

        runners["torch_eager"] = torch_eval
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.repeats + 1):
        for name, fn in runners.items():
            rates[name].append(images_per_second(fn, len(batch), args.iters, warmup=1))
    for name, runs in rates.items():
        out[name] = max(runs)
        out[f"{name}_runs"] = runs
    out["int8_vs_int8_fp32_predictor"] = out["int8"] / out["int8_fp32_predictor"]
    if "torch_eager" in out:
        out["int8_vs_torch_eager"] = out["int8"] / out["torch_eager"]
        out["int8_fp32_predictor_vs_torch_eager"] = out["int8_fp32_predictor"] / out["torch_eager"]
    else:
        out["torch_eager"] = "torch not installed or no PyTorch twin of this network"
    return out


def bench_decode(size: int, args, work_dir: Path) -> dict:
    """ms per PALM-sized JPEG to `size` px: full decode, reduced-scale decode, cache hit."""
    with tempfile.TemporaryDirectory(dir=work_dir) as cache:
        result = decode_ways(palm_sized_images(work_dir)[0], size, max(5, args.iters), Path(cache))
    full, reduced = result["full decode + resize"], result["reduced decode + resize"]
    return {"decode_full_ms": full["ms"], "decode_reduced_ms": reduced["ms"],
            "decode_cache_hit_ms": result["cache hit (.npy) + resize"]["ms"],
            "decode_reduced_psnr": reduced["psnr_vs_full"],
            "decode_reduced_size": result["reduced decode size"],
            "decode_reduced_vs_full": full["ms"] / reduced["ms"]}


def run_measuring_memory(cmd: list[str]) -> dict[str, float]:
    """Run `cmd`: wall seconds, the main process's peak RSS (its VmHWM) and the peak summed
    RSS of the whole process tree (main + loader workers), sampled from /proc every 0.2 s.

    (wait4's ru_maxrss is no use here: a child forked from this large process and then
    exec'd reports at least this process's size.) Linux only: NaN elsewhere.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=REPO)
    peak = {"main": 0.0, "tree": 0.0}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak["main"] = max(peak["main"], _status_mb(proc.pid, "VmHWM"))
            peak["tree"] = max(peak["tree"], _tree_rss_mb(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = proc.stdout.read()
    proc.wait()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... exited {proc.returncode}: {output[-500:]}")
    return {"seconds": seconds, "peak_rss_mb": peak["main"] or float("nan"),
            "peak_tree_rss_mb": peak["tree"] or float("nan")}


def _status_mb(pid: int, field: str) -> float:
    """A memory field of /proc/PID/status in MB (0 if the process or the file is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) / 1024 for line in f if line.startswith(field)), 0.0)
    except OSError:
        return 0.0


def _tree_rss_mb(root: int) -> float:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        total += _status_mb(pid, "VmRSS")
        stack.extend(children.get(pid, []))
    return total


def bench_predict(checkpoint: Path, work_dir: Path, args) -> dict:
    """tools/predict.py on folders of PALM-sized JPEGs, one child process per run.

    The folder sizes alternate `args.repeats` times; each size keeps its fastest run (the
    one least disturbed by other load) and its largest peak memory.
    """
    sizes = sorted(int(n) for n in args.predict_images.split(","))
    sources = palm_sized_images(work_dir)
    folders = {n: fill_folder(work_dir / f"predict{n}", sources, n, keep_prefix=False)
               for n in sizes}
    runs: dict[int, dict[str, Any]] = {}
    for _ in range(args.repeats):
        for n in sizes:
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [sys.executable, "-m", "palm.cli.predict", "--checkpoint", str(checkpoint),
                       "--input", str(folders[n]), "--output", f"{tmp}/preds.csv",
                       "--batch-size", str(args.batch_size), "--num-workers",
                       str(args.num_workers), "--no-progress"]
                run = run_measuring_memory(cmd)
                rows = len(pd.read_csv(f"{tmp}/preds.csv"))
            if rows != n:
                raise RuntimeError(f"predict.py wrote {rows} rows for {n} images")
            best = runs.setdefault(n, {"seconds_all": []})
            best["seconds_all"].append(run["seconds"])
            best["seconds"] = min(best["seconds_all"])
            for key in ("peak_rss_mb", "peak_tree_rss_mb"):
                best[key] = max(best.get(key, 0.0), run[key])
            best["img_per_s"] = n / best["seconds"]
    extra_seconds = runs[sizes[-1]]["seconds"] - runs[sizes[0]]["seconds"]
    # NaN when the folders are too alike in size for the difference to beat timing noise
    steady = (sizes[-1] - sizes[0]) / extra_seconds if extra_seconds > 0 else float("nan")
    return {"runs": runs, "steady_img_per_s": steady, "command": " ".join(cmd[1:])}


def bench_model(model_name: str, size: int, args, work_dir: Path, sections: set[str]) -> dict:
    row: dict[str, Any] = {"model": model_name, "size": size, "batch": args.batch_size}

    def log(msg: str) -> None:
        print(f"[{model_name} {size}px] {msg}  (load {os.getloadavg()[0]:.1f})", flush=True)

    model = build_model(model_name, num_classes=1)
    row["params_m"] = count_params(model) / 1e6
    row["gflops"] = count_flops(model, (1, 3, size, size)) / 1e9
    batch = random_batch(args.batch_size, size)
    if sections & {"train", "loader"}:
        row.update(bench_training(model_name, size, args, work_dir, sections))
        log(f"train step {row['train_step']:.2f} img/s, loop with loader: first epoch "
            f"{row.get('train_loader_first_epoch', float('nan')):.2f}, later epochs "
            f"{row.get('train_loader', float('nan')):.2f}")
    if "compile" in sections:
        row.update(bench_compiled_training(model_name, size, args))
        log(f"train step eager {row['train_step_eager']:.2f}, compiled "
            f"{row['train_step_compiled']:.2f} img/s (compiling {row['compile_seconds']:.1f} s)")
    meta = {"model": model_name, "num_classes": 1, "class_names": ["non-PM", "PM"],
            "image_size": size, "normalize": "minus_one_one", "fundus_crop": False,
            "threshold": 0.5, "model_kwargs": {}}
    dygraph = DygraphPredictor(model, meta)
    if "eval" in sections:
        row["eval_dygraph"] = images_per_second(lambda: dygraph.predict(batch), len(batch),
                                                args.iters)
        log(f"eval, dygraph tuned {row['eval_dygraph']:.2f} img/s")
    export_dir = work_dir / f"export-{model_name}-{size}"
    if sections & {"inference", "bf16", "onnx", "int8", "predict"}:
        export_model(model, export_dir, meta)
    if "inference" in sections:
        predictor = InferencePredictor(export_dir)
        ref = dygraph.predict(batch)
        # relative to the logits' size: random-weight ResNet50 logits are in the hundreds
        row["inference_rel_diff"] = float(np.max(np.abs(predictor.predict(batch) - ref))
                                          / max(1.0, float(np.max(np.abs(ref)))))
        rates = [images_per_second(lambda: predictor.predict(batch), len(batch), args.iters)]
        log(f"inference {rates[0]:.2f} img/s")
    if "bf16" in sections:
        row.update(bench_bf16(export_dir, batch, dygraph.predict(batch), args.iters))
        bf16 = row["inference_bf16"]
        log(f"inference bf16 {bf16:.2f} img/s" if isinstance(bf16, float) else f"bf16: {bf16}")
    if "default" in sections:
        row["eval_default"] = eval_default_in_child(model_name, size, args)
        log(f"eval, paddle defaults {row['eval_default']:.2f} img/s")
    if "onnx" in sections:
        row["onnxruntime"] = bench_onnxruntime(export_dir, batch, args.iters)
        ort_rate = row["onnxruntime"]
        log(f"onnxruntime {ort_rate:.2f} img/s" if isinstance(ort_rate, float)
            else f"onnxruntime: {ort_rate}")
    if "int8" in sections:
        row.update(bench_int8(export_dir, meta, model_name, args, work_dir))
        if isinstance(row.get("int8"), float):
            torch_rate = row["torch_eager"]
            log(f"int8 {row['int8']:.2f}, fp32 predictor {row['int8_fp32_predictor']:.2f} img/s, "
                "torch eager " + (f"{torch_rate:.2f} img/s" if isinstance(torch_rate, float)
                                  else torch_rate))
        else:
            log(f"int8: {row['int8']}")
    if "decode" in sections:
        row.update(bench_decode(size, args, work_dir))
        log(f"decode full {row['decode_full_ms']:.1f} ms, reduced {row['decode_reduced_ms']:.1f} "
            f"ms ({row['decode_reduced_size']}, PSNR {row['decode_reduced_psnr']:.1f})")
    if "predict" in sections:
        result = bench_predict(export_dir, work_dir, args)
        row["predict"] = result
        for n, r in result["runs"].items():
            log(f"predict.py {n} images: {r['seconds']:.1f} s, {r['img_per_s']:.2f} img/s, "
                f"peak RSS {r['peak_rss_mb']:.0f} MB (tree {r['peak_tree_rss_mb']:.0f} MB)")
    if "inference" in sections:
        # again after the child processes, as predict.py's runs keep their best too
        for _ in range(max(1, args.repeats - 1)):
            rates.append(images_per_second(lambda: predictor.predict(batch), len(batch),
                                           args.iters))
        row["inference_runs"] = rates
        row["inference"] = max(rates)
        log(f"inference again {', '.join(f'{r:.2f}' for r in rates[1:])} img/s; "
            f"best {row['inference']:.2f}")
    for a, b in (("inference", "eval_default"), ("inference", "eval_dygraph"),
                 ("eval_dygraph", "eval_default"), ("inference_bf16", "inference")):
        if isinstance(row.get(a), float) and isinstance(row.get(b), float):
            row[f"{a}_vs_{b}"] = row[a] / row[b]
    if "predict" in row and "inference" in row:
        row["predict_vs_inference"] = row["predict"]["steady_img_per_s"] / row["inference"]
    return row


def table_row(model_name: str, args) -> dict:
    """README table row: params, GFLOPs and eval img/s (dygraph tuned, inference) at 224 px."""
    size = 224
    model = build_model(model_name, num_classes=1)
    batch = random_batch(args.batch_size, size)
    meta = {"model": model_name, "num_classes": 1, "image_size": size}
    row = {"model": model_name, "params_m": count_params(model) / 1e6,
           "gflops": count_flops(model, (1, 3, size, size)) / 1e9}
    dygraph = DygraphPredictor(model, meta)
    row["eval_dygraph"] = images_per_second(lambda: dygraph.predict(batch), len(batch),
                                            args.iters, warmup=1)
    with tempfile.TemporaryDirectory() as tmp:
        export_model(model, tmp, meta)
        predictor = InferencePredictor(tmp)
        row["inference"] = images_per_second(lambda: predictor.predict(batch), len(batch),
                                             args.iters, warmup=1)
    return row


def run_table(args, models: list[str] | None = None) -> list[dict]:
    """One row per network of `models` (default: every registered one)."""
    rows = []
    for name in models or list_models():
        cmd = [sys.executable, "-m", "palm.cli.benchmark", "--child", "table-row",
               "--models", name, "--batch-size", str(args.batch_size), "--iters", str(args.iters)]
        run = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        if run.returncode == 0:
            rows.append(json.loads(run.stdout.strip().splitlines()[-1]))
        else:  # a crash (e.g. a oneDNN segfault) costs one row, not the table
            rows.append({"model": name, "error": (run.stderr.strip().splitlines() or
                                                  [f"exit {run.returncode}"])[-1][:200]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def environment() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "vendor": cpu_vendor(),
            "cores": usable_cores(), "paddle": paddle.__version__, "python": platform.python_version(),
            **{k: os.environ.get(k) for k in TUNING_VARS}, "loadavg_start": os.getloadavg()}


def format_table(rows: list[dict], table_mode: bool) -> str:
    """Table mode: a row per model. Otherwise a column per model/size, a row per figure."""
    if table_mode:
        df = pd.DataFrame(rows)
        cols = [c for c in ("model", "params_m", "gflops", "eval_dygraph", "inference", "error")
                if c in df]
        return df[cols].to_string(index=False, float_format=lambda v: f"{v:.2f}")
    columns = {}
    for row in rows:
        flat = {k: v for k, v in row.items()
                if k not in ("model", "size", "predict", "inference_runs", "train_step_runs")
                and not k.endswith("_runs")}
        for n, run in row.get("predict", {}).get("runs", {}).items():
            flat[f"predict {n} img/s (with start-up)"] = run["img_per_s"]
            flat[f"predict {n} peak RSS MB, main"] = run["peak_rss_mb"]
            flat[f"predict {n} peak RSS MB, all processes"] = run["peak_tree_rss_mb"]
        if "predict" in row:
            flat["predict steady img/s"] = row["predict"]["steady_img_per_s"]
        columns[f"{row['model']} {row['size']}px"] = flat
    order = list(dict.fromkeys(k for flat in columns.values() for k in flat))
    df = pd.DataFrame(columns).reindex(order)
    return df.to_string(float_format=lambda v: f"{v:.3g}" if abs(v) < 1e-2 else f"{v:.2f}")


def bench_statistics(repeats: int = 3, n_pos: int = 211, n_neg: int = 189) -> dict:
    """Seconds for eval's statistics on PALM's validation size (best of `repeats`), and the
    vectorised bootstrap's speed-up over a per-resample scikit-learn loop."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = np.repeat([1, 0], [n_pos, n_neg])
    p = 1 / (1 + np.exp(-(rng.normal(0, 1, len(y)) + 2.0 * (y - 0.5))))

    def best_of(fn: Callable[[], Any]) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    intervals = best_of(lambda: M.binary_intervals(y, p, 0.5, M.DEFAULT_RESAMPLES))
    points = best_of(lambda: M.operating_points(y, p, M.DEFAULT_RESAMPLES))
    auc_only = best_of(lambda: M.bootstrap_auc(y, p, M.DEFAULT_RESAMPLES))
    loop_resamples = 200  # scaled up: the loop is slow

    def loop() -> None:
        pi, ni = M.stratified_resamples(n_pos, n_neg, loop_resamples)
        pos, neg = p[:n_pos], p[n_pos:]
        labels = np.repeat([1, 0], [n_pos, n_neg])
        for a, b in zip(pi, ni):
            roc_auc_score(labels, np.concatenate([pos[a], neg[b]]))

    loop_seconds = best_of(loop) * M.DEFAULT_RESAMPLES / loop_resamples
    return {"cases": len(y), "resamples": M.DEFAULT_RESAMPLES,
            "all_intervals_seconds": intervals, "operating_points_seconds": points,
            "bootstrap_auc_seconds": auc_only, "sklearn_loop_auc_seconds": loop_seconds,
            "vectorised_vs_loop": loop_seconds / auc_only}


def main(args: argparse.Namespace) -> dict:
    models = [m.strip() for m in (args.models or DEFAULT_MODELS).split(",") if m.strip()]
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.child == "eval-default":  # runs without palm's tuning; see eval_default_in_child
        model = build_model(models[0], num_classes=1)
        predictor = DygraphPredictor(model, {})
        batch = random_batch(args.batch_size, sizes[0])
        rate = images_per_second(lambda: predictor.predict(batch), len(batch), args.iters)
        print(json.dumps({"eval_default": rate}))
        return {}
    if args.child == "table-row":
        print(json.dumps(table_row(models[0], args)))
        return {}
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    unknown = sections - set(SECTIONS)
    if unknown:
        raise BadConfig(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    work_dir = Path(args.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    result = {"environment": environment(), "command": " ".join(sys.argv)}
    if "stats" in sections:
        result["stats"] = bench_statistics(args.repeats + 1)
        print("statistics on 400 cases: " + ", ".join(
            f"{k} {v:.3g}" for k, v in result["stats"].items()))
    if args.table:
        rows = run_table(args, models if args.models else None)
    else:
        model_sections = sections - {"stats"}
        rows = [bench_model(m, s, args, work_dir, model_sections)
                for m in models for s in sizes] if model_sections else []
    result["environment"]["loadavg_end"] = os.getloadavg()
    result["rows"] = rows
    if rows:
        print(format_table(rows, args.table))
    write_json_atomic(args.output, result)
    print(f"wrote {args.output}")
    return result


def cli() -> None:
    run_tool(main, get_args_parser().parse_args())


if __name__ == "__main__":
    cli()
