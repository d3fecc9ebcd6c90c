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
import functools
from typing import Any

from palm.cli.common import cli as run_command
from palm.cli.common import (ENGINES, add_trust_option, add_verbosity_options, command_parser,
                             library_function, params_of, library_call)

RUNS = "palm.serve.run:run_service"
# palm.serve.config's MIN_TOKEN_CHARS and TOKEN_ENV (tests/cli checks they agree)
MIN_TOKEN_CHARS = 16
TOKEN_ENV = "PALM_SERVE_TOKEN"


def get_args_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = command_parser(__doc__, prog)
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
    p.add_argument("--max-inflight-mb", type=float, default=80.0,
                   help="upload bytes held in memory by all requests at once; a request that "
                        "would go over gets 503 (at least --max-upload-mb)")
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
    p.add_argument("--max-decoding", type=int, default=None,
                   help="requests decoding photos at once (one photo each), the threads of the "
                        "decoding pool (default: the usable cores); a photo may take 3 bytes a "
                        "pixel (--max-pixels) and more while decoding")
    add_trust_option(p)
    add_verbosity_options(p)
    return p


def to_params(args: argparse.Namespace) -> dict[str, Any]:
    return {**params_of(args), "verbosity": -1 if args.quiet else 1 if args.verbose else 0}


def build_config(args: argparse.Namespace) -> Any:
    """The service's settings (a ServiceConfig) from the command line and the environment."""
    params = params_of(args)
    del params["port"], params["trust_checkpoint"]
    return library_function("palm.serve.run:service_config")(**params)


main = library_call(__name__)
# the palm-serve console script (setup.py)
cli = functools.partial(run_command, "serve")
