"""Load test of the screening service on this machine: throughput, latency, errors, memory.

Starts tools/serve.py on a free 127.0.0.1 port as a child process, warms it up, then, for
each of --rounds rounds, sends --requests single-photo requests from --concurrency client
threads (httpx) and reports requests/s, p50/p95/max latency, the errors and the server's
resident memory (peak during the round, and at its end: flat memory means later rounds end
where the first did); and the batch sizes the micro-batcher ran. For comparison, the
same predictor is then timed in this process on preprocessed batches of 1 and --max-batch
images (model only: no upload, no decoding), the rates the service sits between.

    python tools/loadtest.py --checkpoint runs/resnet18/best.pdparams --requests 500 --concurrency 8
    python tools/loadtest.py --model resnet50 --image-size 224

Photos: --photos DIR (its JPEG/PNG files, cycled), else synthetic PALM-sized ones (2124x2056).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import palm  # noqa: F401  (CPU tuning before paddle is imported)
import httpx
import numpy as np

from palm.cli import add_verbosity_options, run_tool
from palm.data import PALM_CLASSES, build_transform, list_images, read_image
from palm.engine.checkpoint import save_checkpoint
from palm.engine.inference import ENGINES, load_predictor
from palm.io_utils import write_json_atomic
from palm.models import build_model
from palm.cli.benchmark import images_per_second, palm_sized_images
from palm.errors import BadData, UserError

log = logging.getLogger("palm.loadtest")

# The folder holding the palm package, so the server child imports this same palm.
PACKAGE_PARENT = Path(palm.__file__).resolve().parents[1]


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    served = p.add_mutually_exclusive_group(required=True)
    served.add_argument("--checkpoint", help="checkpoint or export folder to serve")
    served.add_argument("--model", help="serve this network with random weights (speed does not "
                                        "depend on them), saved in --work-dir")
    p.add_argument("--image-size", type=int, default=224, help="with --model")
    p.add_argument("--engine", choices=ENGINES, default="auto")
    p.add_argument("--photos", default=None, help="folder of photos to send (default: synthetic)")
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--concurrency", type=int, default=8, help="client threads")
    p.add_argument("--warmup", type=int, default=16, help="requests before measuring")
    p.add_argument("--rounds", type=int, default=2,
                   help="timed rounds; memory is flat when the later rounds end where the first did")
    p.add_argument("--cam", action="store_true", help="ask for Grad-CAM overlays (?cam=1)")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--max-wait-ms", type=float, default=10.0)
    p.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "palm-benchmark"),
                   help="synthetic photos and the server's log")
    p.add_argument("--output", default=None, help="also write the figures as JSON")
    add_verbosity_options(p)
    return p


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB, from /proc (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS")), 0.0)
    except OSError:
        return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: argparse.Namespace, port: int, log_path: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "palm", "serve", "--checkpoint", args.checkpoint,
           "--engine", args.engine, "--port", str(port), "--max-batch", str(args.max_batch),
           "--max-wait-ms", str(args.max_wait_ms),
           "--max-queue", str(max(64, 2 * args.concurrency * args.max_batch))]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(PACKAGE_PARENT), os.environ.get("PYTHONPATH")])))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_healthy(url: str, server: subprocess.Popen, log_path: Path, timeout: float = 600) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if server.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise UserError(f"the service exited with code {server.returncode}: {' | '.join(tail)}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise UserError(f"the service did not answer within {timeout:.0f} s (log: {log_path})")


def send_load(url: str, photos: list[tuple[str, bytes]], n: int, concurrency: int,
              cam: bool) -> tuple[list[float], list[str], float]:
    """(latencies in s, error descriptions, wall seconds) of n requests from `concurrency` threads."""
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(n))
    lock = threading.Lock()
    endpoint = url + "/v1/predict" + ("?cam=1" if cam else "")

    def client() -> None:
        with httpx.Client(timeout=120) as http:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                name, data = photos[i % len(photos)]
                start = time.perf_counter()
                try:
                    response = http.post(endpoint, files=[("files", (name, data, "image/jpeg"))])
                    problem = "" if response.status_code == 200 else f"{response.status_code} {response.text[:200]}"
                except httpx.HTTPError as e:
                    problem = f"{type(e).__name__}: {e}"
                with lock:
                    latencies.append(time.perf_counter() - start)
                    if problem:
                        errors.append(problem)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors, time.perf_counter() - start


def measure_round(url: str, photos: list[tuple[str, bytes]], args: argparse.Namespace,
                  pid: int) -> dict[str, Any]:
    """One timed round of --requests requests, with the server's memory sampled meanwhile."""
    peak = [rss_mb(pid)]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], rss_mb(pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        latencies, errors, wall = send_load(url, photos, args.requests, args.concurrency, args.cam)
    finally:
        done.set()
        sampler.join()
    ms = np.asarray(latencies) * 1000
    return {"throughput_req_s": round(args.requests / wall, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1), "max_ms": round(float(ms.max()), 1),
            "errors": len(errors), "first_errors": errors[:3],
            "rss_peak_mb": round(peak[0], 1), "rss_after_mb": round(rss_mb(pid), 1)}


def model_rates(args: argparse.Namespace, photo: Path) -> dict[str, float]:
    """Images/s of the predictor alone on preprocessed batches of 1 and of --max-batch."""
    predictor = load_predictor(args.checkpoint, engine=args.engine)
    meta = predictor.meta
    x = build_transform(int(meta["image_size"]), False, meta.get("normalize", "minus_one_one"))(
        read_image(photo, target_size=int(meta["image_size"])))
    rates = {}
    for batch in sorted({1, args.max_batch}):
        xs = np.stack([x] * batch)
        rates[f"model_batch{batch}_img_s"] = round(
            images_per_second(lambda: predictor.predict(xs), batch, max(4, 64 // batch)), 1)
    return rates


def random_checkpoint(model_name: str, image_size: int, folder: Path) -> Path:
    """A checkpoint of `model_name` with random weights (one PM logit), for timing only."""
    path = folder / f"loadtest-{model_name}-{image_size}.pdparams"
    meta = {"model": model_name, "num_classes": 1, "class_names": list(PALM_CLASSES),
            "image_size": image_size, "normalize": "minus_one_one", "fundus_crop": False,
            "threshold": 0.5, "model_kwargs": {}}
    save_checkpoint(path, build_model(model_name, num_classes=1), meta)
    return path


def main(args: argparse.Namespace) -> dict[str, Any]:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    work_dir = Path(args.work_dir)
    if args.model:
        args.checkpoint = str(random_checkpoint(args.model, args.image_size, work_dir))
    paths = list_images(args.photos) if args.photos else palm_sized_images(work_dir)
    if not paths:
        raise BadData(f"{args.photos}: no photos found")
    photos = [(Path(p).name, Path(p).read_bytes()) for p in paths]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = work_dir / "loadtest-serve.log"
    server = start_server(args, port, log_path)
    try:
        wait_healthy(url, server, log_path)
        _, warm_errors, _ = send_load(url, photos, args.warmup, args.concurrency, args.cam)
        if warm_errors:
            raise UserError(f"warm-up failed: {warm_errors[0]}")
        before = rss_mb(server.pid)
        log.info("server RSS after warm-up: %.0f MB", before)
        rounds = []
        for n in range(1, args.rounds + 1):
            rounds.append(measure_round(url, photos, args, server.pid))
            # as it goes: a long run shows its memory trend before it ends
            log.info("round %d/%d: %.1f requests/s, p50 %.0f ms, %d errors, server RSS %.0f MB "
                     "at the end (peak %.0f MB)", n, args.rounds, rounds[-1]["throughput_req_s"],
                     rounds[-1]["p50_ms"], rounds[-1]["errors"], rounds[-1]["rss_after_mb"],
                     rounds[-1]["rss_peak_mb"])
        health = httpx.get(url + "/healthz").json()
        model = httpx.get(url + "/v1/model").json()
    finally:
        server.terminate()
        server.wait(30)
    result: dict[str, Any] = {
        "model": model["name"], "engine": model["engine"], "image_size": model["image_size"],
        "photo_size": "x".join(map(str, read_image(paths[0]).shape[1::-1])),
        "requests": args.requests, "concurrency": args.concurrency, "cam": args.cam,
        "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms,
        "rss_before_mb": round(before, 1), "rounds": rounds,
        "errors": sum(r["errors"] for r in rounds), "batch_sizes": health["batch_sizes"],
    }
    result.update(model_rates(args, Path(paths[0])))
    print(json.dumps(result, indent=1))
    if args.output:
        write_json_atomic(args.output, result)
    return result


def cli() -> None:
    run_tool(lambda a: 1 if main(a)["errors"] else 0, get_args_parser().parse_args())


if __name__ == "__main__":
    cli()
