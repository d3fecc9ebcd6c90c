"""Load test of the screening service on this machine: throughput, latency, errors, memory.

Starts tools/serve.py on a free 127.0.0.1 port as a child process, warms it up, then, for
each of --rounds rounds, sends --requests single-photo requests from --concurrency client
threads (http.client, kept-alive) and reports requests/s, p50/p95/p99/max latency, the
errors, the cores the server and the clients kept busy and the server's resident memory
(peak during the round, and at its end: flat memory means later rounds end where the first
did); the batch sizes the micro-batcher ran and, from the server's log, the
median time a request spent in each stage (upload, decode, queue and model, answer). For
comparison, the same predictor is timed in this process before the first round and after
each on preprocessed batches of 1 and --max-batch images (model only: no upload, no decoding),
the rates the service sits between; each round is compared with the rate around it. Last comes
a verdict line: requests/s as a share of that batch rate, p50/p95/p99, the RSS after each round
and the load average, against the targets (--min-ratio, --max-p95-ms, --max-rss-growth-mb);
the exit status is 1 when a request failed or a target was missed.

    python tools/loadtest.py --checkpoint runs/resnet18/best.pdparams --requests 500 --concurrency 8
    python tools/loadtest.py --model resnet50 --image-size 224
    python tools/loadtest.py --model resnet50 --int8 --requests 200 --rounds 5 --concurrency 8

Photos: --photos DIR (its JPEG/PNG files, cycled), else synthetic PALM-sized ones (2124x2056).
"""
from __future__ import annotations

import argparse
import functools
import os
import tempfile
from typing import Any

from palm.cli.common import cli as run_command
from palm.cli.common import (ENGINES, add_image_size_option, add_output_option,
                             add_verbosity_options, command_parser, library_call)

RUNS = "palm.bench.loadtest:run_loadtest"


def get_args_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = command_parser(__doc__, prog)
    served = p.add_mutually_exclusive_group(required=True)
    served.add_argument("--checkpoint", help="checkpoint or export folder to serve")
    served.add_argument("--model", help="serve this network with random weights (speed does not "
                                        "depend on them), saved in --work-dir")
    add_image_size_option(p, default=224, help="with --model")
    p.add_argument("--int8", action="store_true",
                   help="with --model: quantize it to INT8 (as palm quantize does, forced: the "
                        "weights are random) and serve that folder")
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
    p.add_argument("--min-ratio", type=float, default=None,
                   help="target: requests/s at least this share of the model's own rate on "
                        "batches of --max-batch (default 0.85)")
    p.add_argument("--max-p95-ms", type=float, default=None,
                   help="target: 95th percentile latency (default 500)")
    p.add_argument("--max-rss-growth-mb", type=float, default=None,
                   help="target: the server's memory after later rounds at most this much above "
                        "its memory after the first (default 50)")
    p.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "palm-benchmark"),
                   help="synthetic photos and the server's log")
    add_output_option(p, "also write the figures as JSON")
    add_verbosity_options(p)
    return p


def exit_code(result: dict[str, Any]) -> int:
    """1 when a request failed or a target was missed (the verdict line says which)."""
    return 1 if result["missed"] else 0


def interrupted(args: argparse.Namespace) -> str:
    """The line printed on Ctrl-C (the service the load test started is stopped on the way)."""
    return ("stopped: load test interrupted; the service it started was stopped and no figures "
            "were written")


main = library_call(__name__)
cli = functools.partial(run_command, "loadtest")
