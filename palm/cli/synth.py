"""Draw a synthetic PALM data set (palm.data.synth) in the exact PALM folder layout, or graded
diabetic-retinopathy photos in the APTOS-2019 layout (--task ordinal, palm.data.synth_grading).

Examples:
    palm synth --output demo_data/palm --n-train 400 --n-val 400
    palm synth --task ordinal --output demo_data/aptos --n-train 500
    palm synth --task multilabel --output demo_data/findings --n-train 400 --n-val 200
"""
from __future__ import annotations

import argparse

from palm.cli.common import (add_num_workers_option, add_option, add_output_option, add_verbosity_options,
                             command_parser, library_call)

RUNS = "palm.engine.tasks:run_synth"


def get_args_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = command_parser(__doc__.split("\n")[0], prog,
                       formatter=argparse.ArgumentDefaultsHelpFormatter, split=False)
    add_output_option(p, "output root (PALM folders are created inside)", required=True,
                      hidden=("--out",))
    p.add_argument("--task", choices=("binary", "ordinal", "multilabel"), default="binary",
                   help="binary: PALM (PM or not); ordinal: DR grades 0-4 (APTOS-2019 layout); "
                        "multilabel: myopia, retinopathy, glaucoma each or not (CSV lists)")
    p.add_argument("--n-train", type=int, default=400)
    p.add_argument("--n-val", type=int,
                   help="validation images (binary: default 400; multilabel: 200). The "
                        "APTOS-2019 layout has none: training carves them")
    add_option(p, "--image-size", hidden=("--size",), default="512",
               help="side in px, or WIDTHxHEIGHT")
    p.add_argument("--difficulty", type=float, default=0.5, help="0 = obvious .. 1 = hard")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quality", type=int, default=92, help="JPEG quality")
    add_num_workers_option(p, default=0, help="processes (0 = none)")
    add_verbosity_options(p)
    return p


main = library_call(__name__)
