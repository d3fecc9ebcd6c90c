"""Grad-CAM overlays for fundus photos: where the network looked.

    python tools/cam.py --checkpoint runs/resnet50/best.pdparams --input photos/ --output cams/

Writes `<file name>_cam.png` per image (eye.jpg -> eye.jpg_cam.png; subfolders of --input
mirrored). --target picks what to explain (a label, grade or class; an unknown one is named
with the valid ones). A bad image is reported on stderr and skipped; the exit code is 0 when
the run finished.
"""
from __future__ import annotations

import argparse

from palm.cli.common import (add_option, add_output_option, add_trust_option,
                             add_verbosity_options, command_parser, library_call)

RUNS = "palm.engine.tasks:run_cam"


def get_args_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = command_parser(__doc__, prog, split=False)
    p.add_argument("--checkpoint", required=True, help="NAME.pdparams with its NAME.json beside it")
    p.add_argument("--input", required=True, help="an image file or a folder (searched recursively)")
    add_output_option(p, "folder for the overlay PNGs", required=True)
    p.add_argument("--target-layer", default=None,
                   help="sublayer name to explain (default: the family's last conv block)")
    add_option(p, "--target", hidden=("--class-index",), metavar="NAME|INDEX",
               help="class to explain, by name or index: a label of a multi-label model, a "
                    "grade of an ordinal one (default: the positive class of a binary model, "
                    "else the predicted class, or the label with the highest probability)")
    p.add_argument("-b", "--batch-size", type=int, default=8)
    p.add_argument("--max-side", type=int, default=0,
                   help="shrink photos to this longer side before overlaying (0: full size)")
    p.add_argument("--alpha", type=float, default=0.4, help="heatmap opacity")
    add_trust_option(p)
    add_verbosity_options(p)
    return p


main = library_call(__name__)
