"""Screening service: a web page and a JSON API over one model, on this machine.

    python tools/serve.py --checkpoint runs/resnet50/best.pdparams
    # then open http://127.0.0.1:8000/ , or from a script:
    curl -F files=@eye.jpg 'http://127.0.0.1:8000/v1/predict?cam=1'

Binds to 127.0.0.1 unless --host says otherwise; any other address needs a token (--token or
$PALM_SERVE_TOKEN, 16 characters or more), which clients send as 'Authorization: Bearer
TOKEN'. Photos are not kept unless --save-dir is given. Logs are JSON lines on stderr, one per request.
Needs the serve extra: pip install -e ".[serve]".
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

import palm  # noqa: F401  (CPU tuning before paddle is imported)
from palm.cli import add_verbosity_options, run_tool
from palm.engine.inference import ENGINES
from palm.weights import TRUST_HELP, trust_checkpoints

try:
    import uvicorn

    from palm.engine.service import (MIN_TOKEN_CHARS, TOKEN_ENV, ServiceConfig,
                                     configure_json_logging, create_app, log_event, server_config)
except ModuleNotFoundError as missing:
    raise SystemExit(f"error: {missing.name} is not installed; the service needs "
                     'pip install -e ".[serve]"') from None

STARTUP_FAILED = 3  # uvicorn.run's exit code when the server did not start


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="NAME.pdparams with NAME.json beside it (Grad-CAM available), or a "
                        "tools/export.py folder (no Grad-CAM)")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="auto: Paddle Inference (a checkpoint is exported at start-up, and "
                        "kept in dygraph if the export fails a check)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on; anything but loopback needs --token")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", default=None,
                   help=f"required from clients as 'Authorization: Bearer TOKEN', at least "
                        f"{MIN_TOKEN_CHARS} characters (default: ${TOKEN_ENV})")
    p.add_argument("--save-dir", default=None,
                   help="keep every uploaded photo here (created and checked at start)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="per request (413 above)")
    p.add_argument("--max-pixels", type=int, default=None,
                   help="per photo, read from its header before decoding (default: "
                        "$PALM_MAX_PIXELS or 100 MP)")
    p.add_argument("--max-files", type=int, default=64, help="photos per request")
    p.add_argument("--max-queue", type=int, default=64,
                   help="photos waiting for the model; 503 when full")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds a request may wait for the model; 504 after")
    p.add_argument("--upload-timeout", type=float, default=60.0,
                   help="seconds a request's upload may take to arrive; 408 after")
    p.add_argument("--header-timeout", type=float, default=10.0,
                   help="seconds a request's line and headers may take to arrive; 408 and "
                        "the connection closed after")
    p.add_argument("--max-batch", type=int, default=8, help="photos the model runs together")
    p.add_argument("--max-wait-ms", type=float, default=10.0,
                   help="how long a batch waits for more photos before it runs")
    p.add_argument("--max-decoding", type=int, default=2,
                   help="requests decoding photos at once (one photo each); a photo may take 3 "
                        "bytes a pixel (--max-pixels) and more while decoding")
    p.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    add_verbosity_options(p)
    return p


def build_config(args: argparse.Namespace) -> ServiceConfig:
    """The service's settings from the command line (the token also from the environment)."""
    return ServiceConfig(
        checkpoint=args.checkpoint, engine=args.engine, host=args.host,
        token=args.token or os.environ.get(TOKEN_ENV) or None, save_dir=args.save_dir,
        max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels, max_files=args.max_files,
        max_queue=args.max_queue, timeout=args.timeout, upload_timeout=args.upload_timeout,
        header_timeout=args.header_timeout, max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms, max_decoding=args.max_decoding)


def main(args: argparse.Namespace) -> int:
    config = build_config(args)
    config.check()  # before the model loads: a refused --host should not wait for it
    # --quiet silences this process's stderr (see run_tool); the log's warnings still go out
    configure_json_logging(
        logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO,
        sys.__stderr__ if args.quiet else sys.stderr)
    with trust_checkpoints(args.trust_checkpoint):
        app = create_app(config)
    log_event("listening", url=f"http://{config.host}:{args.port}/")
    server = uvicorn.Server(server_config(app, config, args.port))
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C once it has shut down
        pass
    return 0 if server.started else STARTUP_FAILED  # its log says why


def cli() -> None:
    run_tool(main, get_args_parser().parse_args())


if __name__ == "__main__":
    cli()
