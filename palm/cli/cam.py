"""Grad-CAM overlays for fundus photos: where the network looked.

    python tools/cam.py --checkpoint runs/resnet50/best.pdparams --input photos/ --output cams/

Writes `<file name>_cam.png` per image (eye.jpg -> eye.jpg_cam.png; subfolders of --input
mirrored). A bad image is reported on stderr and skipped; the exit code is 0 when the run finished.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import palm  # noqa: F401  (CPU tuning before paddle is imported)
from palm.cli import add_verbosity_options, run_tool
from palm.config import check_options
from palm.data import list_images
from palm.engine.checkpoint import load_checkpoint_model
from palm.errors import BadData
from palm.viz.cam import write_cam_overlays
from palm.weights import TRUST_HELP, trust_checkpoints


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="NAME.pdparams with its NAME.json beside it")
    p.add_argument("--input", required=True, help="an image file or a folder (searched recursively)")
    p.add_argument("--output", required=True, help="folder for the overlay PNGs")
    p.add_argument("--target-layer", default=None,
                   help="sublayer name to explain (default: the family's last conv block)")
    p.add_argument("--class-index", type=int, default=None,
                   help="class to explain (default: positive class / argmax)")
    p.add_argument("-b", "--batch-size", type=int, default=8)
    p.add_argument("--max-side", type=int, default=0,
                   help="shrink photos to this longer side before overlaying (0: full size)")
    p.add_argument("--alpha", type=float, default=0.4, help="heatmap opacity")
    p.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    add_verbosity_options(p)
    return p


def main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    check_options(vars(args))
    src = Path(args.input)
    paths = list_images(src)
    if not paths:
        raise BadData(f"no images in {src}")
    with trust_checkpoints(args.trust_checkpoint):
        model, meta = load_checkpoint_model(args.checkpoint)
    written, errors = write_cam_overlays(
        model, meta, paths, args.output,
        root=src if src.is_dir() else None,
        progress=lambda it: tqdm(it, total=len(paths), desc="grad-cam", unit="img"),
        target_layer=args.target_layer, class_index=args.class_index,
        batch_size=args.batch_size, max_side=args.max_side or None, alpha=args.alpha,
    )
    for err in errors:
        print(err, file=sys.stderr)
    print(f"{written} overlays written to {args.output}; {len(errors)} errors")
    return 0


def cli() -> None:
    run_tool(main, get_args_parser().parse_args())


if __name__ == "__main__":
    cli()
