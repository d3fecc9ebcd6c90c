"""Load test of the screening service: start it as a child process on a free port, send it
concurrent single-photo requests, and measure throughput, latency, errors and memory."""
from __future__ import annotations

import http.client
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
from typing import Any, Callable
from urllib.parse import urlsplit

import httpx
import numpy as np

from palm.bench.data import palm_sized_images
from palm.bench.predict import quantized_folder, rss_mb
from palm.bench.timing import (PACKAGE_PARENT, images_per_second, require_at_least,
                               timing_network)
from palm.data import build_transform, list_images, read_image
from palm.engine.checkpoint import save_checkpoint
from palm.engine.inference import Predictor, load_predictor
from palm.errors import BadConfig, BadData, UserError
from palm.io_utils import write_json_atomic

log = logging.getLogger("palm.loadtest")

Photos = list[tuple[str, bytes]]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(checkpoint: str | Path, engine: str, port: int, max_batch: int,
                 max_wait_ms: float, max_queue: int, log_path: Path) -> subprocess.Popen:
    """`palm serve` on 127.0.0.1:`port` as a child process of this same palm, logging to
    `log_path`; it stops when this process ends, however it ends (palm.bench.child: Linux
    ties that to the thread calling this, so call it from one that lives as long)."""
    cmd = [sys.executable, "-m", "palm.bench.child", str(os.getpid()),
           sys.executable, "-m", "palm", "serve", "--checkpoint", str(checkpoint),
           "--engine", engine, "--port", str(port), "--max-batch", str(max_batch),
           "--max-wait-ms", str(max_wait_ms), "--max-queue", str(max_queue)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(PACKAGE_PARENT), os.environ.get("PYTHONPATH")])))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_healthy(url: str, server: subprocess.Popen, log_path: Path, timeout: float = 600) -> None:
    """Return once `url`/healthz answers 200.

    Raises:
        UserError: the service exited or did not answer within `timeout` seconds.
    """
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if server.poll() is not None:
            lines = log_path.read_text(errors="replace").strip().splitlines()
            # the service's own `error:` line says why; Paddle's start-up warnings do not
            tail = [line for line in lines if line.startswith("error:")] or lines[-3:]
            raise UserError(f"the service exited with code {server.returncode}: {' | '.join(tail)}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise UserError(f"the service did not answer within {timeout:.0f} s (log: {log_path})")


def stop_server(server: subprocess.Popen, grace: float = 30) -> None:
    """Stop the service gracefully (SIGTERM), and kill it if it has not exited within
    `grace` seconds: the load test never ends leaving it running."""
    server.terminate()
    try:
        server.wait(grace)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


# the boundary of the uploads' multipart bodies (a photo holding it would be cut there:
# multipart_body refuses one)
BOUNDARY = "palm-loadtest-6b1f0c2e9d"


def multipart_body(name: str, data: bytes) -> bytes:
    """One photo as the multipart/form-data body of a field `files`, built once per photo:
    the clients run on the server's machine, and every millisecond they spend encoding is
    taken from the service they measure."""
    if BOUNDARY.encode() in data:
        raise BadData(f"{name}: holds the load test's multipart boundary {BOUNDARY!r}; "
                      "send other photos")
    safe_name = name.replace('"', "_").replace("\r", "_").replace("\n", "_")
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; "
            f"filename=\"{safe_name}\"\r\nContent-Type: image/jpeg\r\n\r\n").encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def _post(connection: http.client.HTTPConnection, path: str, body: bytes) -> str:
    """'' when the service answered 200, else what went wrong."""
    try:
        connection.request("POST", path, body,
                           {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        response = connection.getresponse()
        text = response.read()
    except (OSError, http.client.HTTPException) as e:
        connection.close()  # the next request opens a new connection
        return f"{type(e).__name__}: {e}"
    if response.status == 200:
        return ""
    return f"{response.status} {text[:200].decode('utf-8', errors='replace')}"


def send_load(url: str, photos: Photos, n: int, concurrency: int,
              cam: bool) -> tuple[list[float], list[str], float]:
    """(latencies in s, error descriptions, wall seconds) of n requests from `concurrency`
    threads, each on its own kept-alive connection (the standard library's http.client,
    the body built once per photo: httpx encoded every upload again and parsed its answer
    in pure Python, on the cores the service is measured on)."""
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(n))
    lock = threading.Lock()
    path = "/v1/predict" + ("?cam=1" if cam else "")
    bodies = [multipart_body(name, data) for name, data in photos]
    address = urlsplit(url)

    def client() -> None:
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=120)
        try:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                start = time.perf_counter()
                problem = _post(connection, path, bodies[i % len(bodies)])
                with lock:
                    latencies.append(time.perf_counter() - start)
                    if problem:
                        errors.append(problem)
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors, time.perf_counter() - start


def measure_round(url: str, photos: Photos, requests: int, concurrency: int, cam: bool,
                  pid: int) -> dict[str, Any]:
    """One timed round of `requests` requests, with the server's memory sampled meanwhile."""
    peak = [rss_mb(pid)]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], rss_mb(pid))

    sampler = threading.Thread(target=sample)
    cpu = (cpu_seconds(os.getpid()), cpu_seconds(pid))
    sampler.start()
    try:
        latencies, errors, wall = send_load(url, photos, requests, concurrency, cam)
    finally:
        done.set()
        sampler.join()
    ms = np.asarray(latencies) * 1000
    # cores busy on average: the server's near the machine's count means it is CPU-bound;
    # the clients' is what the measurement takes from it on one machine
    client_cores, server_cores = ((cpu_seconds(p) - before) / wall
                                  for p, before in zip((os.getpid(), pid), cpu))
    return {"throughput_req_s": round(requests / wall, 1), "wall_s": wall,
            "server_cores": round(server_cores, 2), "client_cores": round(client_cores, 2),
            **latency_percentiles(ms), "max_ms": round(float(ms.max()), 1),
            "latencies_ms": ms.tolist(), "errors": len(errors), "first_errors": errors[:3],
            "rss_peak_mb": round(peak[0], 1), "rss_after_mb": round(rss_mb(pid), 1)}


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds process `pid` (all its threads) has used, from /proc
    (0 without it)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def latency_percentiles(ms: np.ndarray) -> dict[str, float]:
    """p50, p95 and p99 of latencies in ms."""
    return {f"p{q}_ms": round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)}


class ModelRates:
    """The predictor alone (no upload, no decoding) on preprocessed batches of 1 and of
    `max_batch`, timed in this process each time `measure` is called: between the load
    test's rounds, so that each round's rate is compared with the model's under the same
    load of other jobs."""

    def __init__(self, predictor: Predictor, max_batch: int, photo: Path):
        self.predictor = predictor
        meta = self.predictor.meta
        x = build_transform(int(meta["image_size"]), False,
                            meta.get("normalize", "minus_one_one"))(
            read_image(photo, target_size=int(meta["image_size"])))
        self.batches = {size: np.stack([x] * size) for size in sorted({1, max_batch})}
        self.img_s: dict[int, list[float]] = {size: [] for size in self.batches}
        for xs in self.batches.values():  # a new batch size may build its kernels
            for _ in range(3):
                self.predictor.predict(xs)

    def measure(self) -> None:
        """Append each batch size's img/s: the median of 3 short runs (one run alone swung
        by 2x on the shared machine)."""
        for size, xs in self.batches.items():
            runs = [images_per_second(lambda: self.predictor.predict(xs), size,
                                      max(4, 32 // size), warmup=0) for _ in range(3)]
            self.img_s[size].append(round(float(np.median(runs)), 1))


def random_checkpoint(model_name: str, image_size: int, folder: Path) -> Path:
    """A checkpoint of `model_name` with random weights (one PM logit), for timing only."""
    path = Path(folder) / f"loadtest-{model_name}-{image_size}.pdparams"
    save_checkpoint(path, *timing_network(model_name, image_size))
    return path


def _photos(folder: str | Path | None, work_dir: Path, image_size: int) -> list[Path]:
    """The photos to send: `folder`'s images, each decoded once here (at about
    `image_size`, quickly) so that a bad one is named before the model loads, not counted as
    failed requests after the run; else synthetic PALM-sized ones.

    Raises:
        BadData: `folder` holds no photo, or a file that is not a usable image.
    """
    if not folder:
        return palm_sized_images(work_dir)
    paths = [Path(p) for p in list_images(folder)]
    if not paths:
        raise BadData(f"{folder}: no photos found")
    for path in paths:
        read_image(path, target_size=image_size)  # ImageReadError (BadData) names the file
    return paths


def _serve_and_measure(checkpoint: str | Path, engine: str, photos: Photos, work_dir: Path,
                       *, requests: int, concurrency: int, warmup: int, rounds: int, cam: bool,
                       max_batch: int, max_wait_ms: float,
                       between_rounds: Callable[[], None]) -> dict[str, Any]:
    """Start the service, warm it up, run the timed rounds with `between_rounds` called
    before the first and after each, and stop it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = work_dir / "loadtest-serve.log"
    server = start_server(checkpoint, engine, port, max_batch, max_wait_ms,
                          max(64, 2 * concurrency * max_batch), log_path)
    try:
        wait_healthy(url, server, log_path)
        _, warm_errors, _ = send_load(url, photos, warmup, concurrency, cam)
        if warm_errors:
            raise UserError(f"warm-up failed: {warm_errors[0]}")
        before = rss_mb(server.pid)
        log.info("server RSS after warm-up: %.0f MB", before)
        measured = []
        between_rounds()
        for n in range(1, rounds + 1):
            measured.append(measure_round(url, photos, requests, concurrency, cam, server.pid))
            between_rounds()
            # as it goes: a long run shows its memory trend before it ends
            log.info("round %d/%d: %.1f requests/s, p50 %.0f ms, %d errors, server RSS %.0f MB "
                     "at the end (peak %.0f MB)", n, rounds, measured[-1]["throughput_req_s"],
                     measured[-1]["p50_ms"], measured[-1]["errors"], measured[-1]["rss_after_mb"],
                     measured[-1]["rss_peak_mb"])
        health = httpx.get(url + "/healthz").json()
        model = httpx.get(url + "/v1/model").json()
    finally:
        stop_server(server)
    return {"before": before, "rounds": measured, "health": health, "model": model}


# what the service should reach under the load test (issue 26): requests/s against the
# model's own batch rate, the 95th percentile latency, and memory after the first round
TARGETS = {"min_ratio": 0.85, "max_p95_ms": 500.0, "max_rss_growth_mb": 50.0}


def server_stages(log_path: Path, last: int) -> dict[str, float]:
    """Median ms of each stage of the service's `last` answered requests (its log's
    `predicted` lines): where a request's time goes inside the server."""
    stages: list[dict[str, float]] = []
    for line in log_path.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"predicted"' in line:
            entry = json.loads(line)
            if entry.get("event") == "predicted" and "stage_ms" in entry:
                stages.append(entry["stage_ms"])
    stages = stages[-last:]
    return {name: round(float(np.median([s[name] for s in stages])), 1)
            for name in (stages[0] if stages else {})}


def run_loadtest(work_dir: str | Path, *, checkpoint: str | Path | None = None,
                 model: str | None = None, image_size: int = 224, int8: bool = False,
                 engine: str = "auto", photos: str | Path | None = None, requests: int = 500,
                 concurrency: int = 8, warmup: int = 16, rounds: int = 2, cam: bool = False,
                 max_batch: int = 8, max_wait_ms: float = 10.0, min_ratio: float | None = None,
                 max_p95_ms: float | None = None, max_rss_growth_mb: float | None = None,
                 output: str | Path | None = None) -> dict[str, Any]:
    """Load-test the service serving `checkpoint` (or network `model` with random weights,
    saved in `work_dir`, quantized to INT8 first with `int8`) with `photos` (default
    synthetic PALM-sized ones); print the figures as JSON and a verdict line against the
    targets (TARGETS where a target is None) and, given `output`, write the figures there.

    Raises:
        BadConfig: not exactly one of checkpoint and model, int8 without model, a count
            out of range, a target that judges nothing (check_targets) or an output that
            cannot be written.
        BadData: `photos` holds no photo, or a file that is not a usable image.
        UserError: the service did not start or failed its warm-up.
    """
    if (checkpoint is None) == (model is None):
        raise BadConfig("give exactly one of checkpoint and model")
    if int8 and not model:
        raise BadConfig("int8 quantizes the random-weight model; a checkpoint is served as it "
                        "is (give a palm quantize folder for INT8)", param="int8")
    require_at_least(1, requests=requests, concurrency=concurrency, rounds=rounds,
                     max_batch=max_batch, image_size=image_size)
    require_at_least(0, warmup=warmup)
    targets = {name: TARGETS[name] if value is None else value for name, value in
               (("min_ratio", min_ratio), ("max_p95_ms", max_p95_ms),
                ("max_rss_growth_mb", max_rss_growth_mb))}
    check_targets(targets)
    if output:
        check_output(Path(output))
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    work_dir = Path(work_dir)
    load_start = os.getloadavg()
    if model:
        checkpoint = random_checkpoint(model, image_size, work_dir)
        if int8:
            checkpoint = quantized_folder(checkpoint, checkpoint.with_name(
                checkpoint.stem + "-int8"), work_dir, log=log.info)
    # loaded first: a checkpoint that cannot load is named before photos are made or read
    predictor = load_predictor(checkpoint, engine=engine)
    paths = _photos(photos, work_dir, image_size)
    rates = ModelRates(predictor, max_batch, paths[0])
    served = _serve_and_measure(
        checkpoint, engine, [(p.name, p.read_bytes()) for p in paths], work_dir,
        requests=requests, concurrency=concurrency, warmup=warmup, rounds=rounds, cam=cam,
        max_batch=max_batch, max_wait_ms=max_wait_ms, between_rounds=rates.measure)
    measured = served["rounds"]
    latencies = np.concatenate([r.pop("latencies_ms") for r in measured])
    result: dict[str, Any] = {
        "model": served["model"]["name"], "engine": served["model"]["engine"],
        "precision": served["model"]["precision"], "image_size": served["model"]["image_size"],
        "photo_size": "x".join(map(str, read_image(paths[0]).shape[1::-1])),
        "requests": requests, "concurrency": concurrency, "cam": cam,
        "max_batch": max_batch, "max_wait_ms": max_wait_ms,
        "rss_before_mb": round(served["before"], 1), "rounds": measured,
        "errors": sum(r["errors"] for r in measured),
        "batch_sizes": served["health"]["batch_sizes"],
        "server_stage_ms_median": server_stages(work_dir / "loadtest-serve.log",
                                                requests * rounds),
        # every timed request over the time all rounds took
        "throughput_req_s": round(requests * rounds / sum(r.pop("wall_s") for r in measured), 1),
        **latency_percentiles(latencies),
        "rss_after_rounds_mb": [r["rss_after_mb"] for r in measured],
        # growth after the first round: the first may still size buffers and caches
        "rss_growth_mb": round(max(r["rss_after_mb"] for r in measured)
                               - measured[0]["rss_after_mb"], 1),
    }
    for size, img_s in rates.img_s.items():
        result[f"model_batch{size}_img_s"] = round(float(np.median(img_s)), 1)
        result[f"model_batch{size}_img_s_between_rounds"] = img_s
    result["ratio_to_batch_rate"] = round_ratio(measured, rates.img_s[max_batch])
    result["loadavg_start"], result["loadavg_end"] = load_start, os.getloadavg()
    result["targets"] = targets
    result["missed"] = missed_targets(result, targets)
    print(json.dumps(result, indent=1))
    print(verdict_line(result))
    if output:
        write_json_atomic(output, result)
    return result


def check_output(output: Path) -> None:
    """Refuse, before the run, an output its figures could not be written to after it (a
    folder, a place that refuses files), creating its folder.

    Raises:
        BadConfig: naming the output.
    """
    if output.is_dir():
        raise BadConfig(f"output {output}: is a folder; give a file name such as "
                        f"{output / 'loadtest.json'}", param="output")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output.parent):
            pass
    except OSError as e:
        # the output named, not the folder or the probe file the error is about
        raise BadConfig(f"output {output}: cannot be written there ({e.strerror})",
                        param="output") from None


def check_targets(targets: dict[str, float]) -> None:
    """Refuse a target that judges nothing: a ratio above 1 (the service beating the model
    it runs, which only a round disturbed by other jobs shows), bounds no run can meet
    (negative ones) and NaN, which compares false with everything (every run would be MET).

    Raises:
        BadConfig: naming the target.
    """
    ratio, p95, growth = (targets[k] for k in ("min_ratio", "max_p95_ms", "max_rss_growth_mb"))
    if not 0 < ratio <= 1:
        raise BadConfig(f"min_ratio must be in (0, 1], got {ratio:g}", param="min_ratio")
    if not 0 < p95 < float("inf"):
        raise BadConfig(f"max_p95_ms must be a positive number, got {p95:g}", param="max_p95_ms")
    if not 0 <= growth < float("inf"):
        raise BadConfig(f"max_rss_growth_mb must be a number >= 0, got {growth:g}",
                        param="max_rss_growth_mb")


def round_ratio(measured: list[dict[str, Any]], batch_img_s: list[float]) -> float:
    """The median over rounds of a round's requests/s over the model's batch rate measured
    just before and after it (their mean): other jobs on a shared machine change both
    alike, and one round they disturbed more does not decide (it is in the round's
    `ratio_to_batch_rate`)."""
    for n, round_ in enumerate(measured):
        around = (batch_img_s[n] + batch_img_s[n + 1]) / 2
        round_["ratio_to_batch_rate"] = round(round_["throughput_req_s"] / around, 3)
    return round(float(np.median([r["ratio_to_batch_rate"] for r in measured])), 3)


def missed_targets(result: dict[str, Any], targets: dict[str, float]) -> list[str]:
    """A phrase for each target `result` misses (errors always miss)."""
    missed = []
    if result["errors"]:
        missed.append(f"{result['errors']} failed requests")
    if result["ratio_to_batch_rate"] < targets["min_ratio"]:
        missed.append(f"ratio {result['ratio_to_batch_rate']:.2f} < {targets['min_ratio']:g}")
    if result["p95_ms"] > targets["max_p95_ms"]:
        missed.append(f"p95 {result['p95_ms']:.0f} ms > {targets['max_p95_ms']:g}")
    if len(result["rounds"]) > 1 and result["rss_growth_mb"] > targets["max_rss_growth_mb"]:
        missed.append(f"RSS grew {result['rss_growth_mb']:.0f} MB after round 1 > "
                      f"{targets['max_rss_growth_mb']:g}")
    return missed


def verdict_line(result: dict[str, Any]) -> str:
    """One line with the figures the targets judge, and whether they are met."""
    batch_rate = result[f"model_batch{result['max_batch']}_img_s"]
    figures = (f"{result['throughput_req_s']:.1f} req/s, {result['ratio_to_batch_rate']:.2f}x "
               f"the model's batch-{result['max_batch']} rate (median of the rounds; the model "
               f"{batch_rate:.1f} img/s); p50/p95/p99 "
               f"{result['p50_ms']:.0f}/{result['p95_ms']:.0f}/{result['p99_ms']:.0f} ms; RSS "
               f"after each round {' -> '.join(f'{m:.0f}' for m in result['rss_after_rounds_mb'])}"
               f" MB; load average {result['loadavg_start'][0]:.2f} -> "
               f"{result['loadavg_end'][0]:.2f}")
    if result["missed"]:
        return f"verdict: MISSED ({'; '.join(result['missed'])}): {figures}"
    return f"verdict: MET: {figures}"
