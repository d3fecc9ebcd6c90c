"""Export a checkpoint for Paddle Inference (the fast predictor path).

    python tools/export.py --checkpoint runs/resnet50/best.pdparams --output exported/resnet50

writes exported/resnet50/{model.json, model.pdiparams, palm_meta.json}; pass that folder to
tools/predict.py or tools/eval.py as --checkpoint.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import palm  # noqa: F401  (CPU tuning before paddle is imported)
from palm.cli import run_tool
from palm.engine.export import export_checkpoint
from palm.engine.inference import DygraphPredictor, probe_export


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a .pdparams checkpoint with its JSON sidecar")
    p.add_argument("--output", required=True, help="folder to write the inference model to")
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="skip comparing the exported model's logits with the checkpoint's",
    )
    return p


def main(args: argparse.Namespace) -> Path:
    out = export_checkpoint(args.checkpoint, args.output)
    print(f"exported {args.checkpoint} -> {out}")
    if not args.no_verify:
        problem = probe_export(out, DygraphPredictor.from_checkpoint(args.checkpoint))
        if problem:
            raise RuntimeError(f"{out}: exported model failed verification: {problem}")
        print("verified: the inference predictor matches the checkpoint's logits")
    return out


def cli() -> None:
    run_tool(main, get_args_parser().parse_args())


if __name__ == "__main__":
    cli()
