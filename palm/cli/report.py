"""Self-contained HTML report of a training run and its evaluation.

    python tools/report.py --run runs/resnet50 --eval runs/resnet50/eval --output report.html

Images are embedded, so the one file opens anywhere without network or the run folder.
"""
from __future__ import annotations

import argparse
from palm.cli.common import (add_output_option, add_trust_option, add_verbosity_options,
                             command_parser, library_call)

RUNS = "palm.reports.tasks:run_report"


def get_args_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = command_parser(__doc__, prog, split=False)
    p.add_argument("--run", required=True, help="training run folder (tools/train.py --output)")
    p.add_argument("--eval", dest="eval_dir", default=None,
                   help="evaluation folder (tools/eval.py --output)")
    add_output_option(p, "report path (default: report.html in --eval, else in --run)")
    p.add_argument("--gallery-size", type=int, default=6,
                   help="cases shown among the most confident errors and correct predictions")
    add_trust_option(p)
    add_verbosity_options(p)
    return p


main = library_call(__name__)
