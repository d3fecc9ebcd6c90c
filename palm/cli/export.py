"""Export a checkpoint for Paddle Inference (the fast predictor path).

    python tools/export.py --checkpoint runs/resnet50/best.pdparams --output exported/resnet50

writes exported/resnet50/{model.json, model.pdiparams, palm_meta.json}; pass that folder to
tools/predict.py or tools/eval.py as --checkpoint. The export is verified (its logits against
the checkpoint's) before it is installed: a model that fails leaves OUTPUT as it was.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import palm  # noqa: F401  (CPU tuning before paddle is imported)
from palm.cli import add_verbosity_options, run_tool
from palm.engine.export import export_checkpoint
from palm.engine.inference import DygraphPredictor, probe_export
from palm.weights import TRUST_HELP, trust_checkpoints


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a .pdparams checkpoint with its JSON sidecar")
    p.add_argument("--output", required=True, help="folder to write the inference model to")
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="skip comparing the exported model's logits with the checkpoint's",
    )
    p.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    add_verbosity_options(p)
    return p


def main(args: argparse.Namespace) -> Path:
    verify = None if args.no_verify else (
        lambda folder, model, meta: probe_export(folder, DygraphPredictor(model, meta)))
    with trust_checkpoints(args.trust_checkpoint):
        out = export_checkpoint(args.checkpoint, args.output, verify=verify)
    if not args.no_verify:
        print("verified: the inference predictor matches the checkpoint's logits")
    print(f"exported {args.checkpoint} -> {out}")
    return out


def cli() -> None:
    run_tool(main, get_args_parser().parse_args())


if __name__ == "__main__":
    cli()
