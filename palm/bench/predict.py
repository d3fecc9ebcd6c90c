"""The predict section: tools/predict.py end to end on folders of PALM-sized JPEGs, as child
processes, with their wall time and peak memory; with precision int8, on an INT8 folder
quantized from the export, against the INT8 engine's own rate."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from palm.bench.data import fill_folder, palm_sized_images
from palm.bench.settings import BenchSettings
from palm.bench.timing import PACKAGE_PARENT, images_per_second, random_batch
from palm.data import PalmTrainSet, eval_transform
from palm.engine.inference import OpenVINOPredictor
from palm.engine.quantize import quantize_to_folder

# the INT8 folder is calibrated on this many synthetic PALM photos (as the int8 section's model)
CALIBRATION_PHOTOS = 16


def _status_mb(pid: int, field: str) -> float:
    """A memory field of /proc/PID/status in MB (0 if the process or the file is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) / 1024 for line in f if line.startswith(field)), 0.0)
    except OSError:
        return 0.0


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB, from /proc (0 if it is gone)."""
    return _status_mb(pid, "VmRSS")


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
        total += rss_mb(pid)
        stack.extend(children.get(pid, []))
    return total


def run_measuring_memory(cmd: list[str]) -> dict[str, float]:
    """Run `cmd`: wall seconds, the main process's peak RSS (its VmHWM) and the peak summed
    RSS of the whole process tree (main + loader workers), sampled from /proc every 0.2 s.

    (wait4's ru_maxrss is no use here: a child forked from this large process and then
    exec'd reports at least this process's size.) Linux only: NaN elsewhere.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=PACKAGE_PARENT)
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


def _predict_command(checkpoint: Path, folder: Path, output: str,
                     settings: BenchSettings) -> list[str]:
    return [sys.executable, "-m", "palm", "predict", "--checkpoint", str(checkpoint),
            "--input", str(folder), "--output", output, "--batch-size", str(settings.batch_size),
            "--num-workers", str(settings.num_workers), "--no-progress"]


def bench_predict(checkpoint: Path, work_dir: Path, settings: BenchSettings) -> dict[str, Any]:
    """tools/predict.py on folders of PALM-sized JPEGs, one child process per run.

    The folder sizes alternate `settings.repeats` times; each size keeps its fastest run (the
    one least disturbed by other load) and its largest peak memory.
    """
    sizes = list(settings.predict_images)
    sources = palm_sized_images(work_dir)
    folders = {n: fill_folder(work_dir / f"predict{n}", sources, n, keep_prefix=False)
               for n in sizes}
    runs: dict[int, dict[str, Any]] = {}
    for _ in range(settings.repeats):
        for n in sizes:
            with tempfile.TemporaryDirectory() as tmp:
                cmd = _predict_command(checkpoint, folders[n], f"{tmp}/preds.csv", settings)
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


def quantized_folder(source: Path, output: Path, work_dir: Path,
                     log: Callable[[str], None] = lambda _: None) -> Path:
    """`source` (a checkpoint or an export of random weights) quantized to `output` as `palm
    quantize` writes it, calibrated on the synthetic PALM-sized photos; forced, since random
    weights have no metric to keep. An `output` of earlier random weights is replaced."""
    shutil.rmtree(output, ignore_errors=True)
    photos = palm_sized_images(work_dir, CALIBRATION_PHOTOS)
    quantize_to_folder(source, output, [str(p) for p in photos],
                       lambda meta: PalmTrainSet(photos[0].parent, transform=eval_transform(meta)),
                       calib_images=len(photos), force=True, log=log)
    return output


def bench_predict_int8(export_dir: Path, work_dir: Path, settings: BenchSettings) -> dict[str, Any]:
    """`bench_predict` on an INT8 folder quantized from `export_dir`, and the INT8 engine's
    rate on in-memory batches (best of measurements before and after the predict runs, in
    this process); the steady predict rate as a ratio to it, with the load average at the
    start and the end."""
    loadavg_start = os.getloadavg()
    folder = quantized_folder(export_dir, work_dir / f"{export_dir.name}-int8", work_dir)
    engine = OpenVINOPredictor(folder)
    batch = random_batch(settings.batch_size, int(engine.meta["image_size"]))

    def engine_rate() -> float:
        return images_per_second(lambda: engine.predict(batch), len(batch), settings.iters)

    rates = [engine_rate()]
    result = bench_predict(folder, work_dir, settings)
    rates.append(engine_rate())
    engine_best = max(rates)
    return {**result, "precision": "int8", "engine_img_per_s": engine_best,
            "engine_runs": rates, "steady_vs_engine": result["steady_img_per_s"] / engine_best,
            "loadavg_start": loadavg_start, "loadavg_end": os.getloadavg()}
