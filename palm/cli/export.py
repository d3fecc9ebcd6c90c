"""Export a checkpoint for Paddle Inference (the fast predictor path).

    python tools/export.py --checkpoint runs/resnet50/best.pdparams --output exported/resnet50

writes exported/resnet50/{model.json, model.pdiparams, palm_meta.json}; pass that folder to
tools/predict.py or tools/eval.py as --checkpoint. The export is verified (its logits against
the checkpoint's) before it is installed: a model that fails leaves OUTPUT as it was.
"""
from __future__ import annotations

import argparse
from typing import Any

from palm.cli.common import (add_output_option, add_trust_option, add_verbosity_options,
                             command_parser, params_of, library_call)

RUNS = "palm.engine.tasks:run_export"


def get_args_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = command_parser(__doc__, prog, formatter=argparse.RawTextHelpFormatter, split=False)
    p.add_argument("--checkpoint", required=True, help="a .pdparams checkpoint with its JSON sidecar")
    add_output_option(p, "folder to write the inference model to", required=True)
    p.add_argument("--no-verify", action="store_true",
                   help="skip comparing the exported model's logits with the checkpoint's")
    add_trust_option(p)
    add_verbosity_options(p)
    return p


def to_params(args: argparse.Namespace) -> dict[str, Any]:
    params = params_of(args)
    params["verify"] = not params.pop("no_verify")
    return params


main = library_call(__name__)
