"""Self-contained HTML report of a training run and its evaluation.

    python tools/report.py --run runs/resnet50 --eval runs/resnet50/eval --output report.html

Images are embedded, so the one file opens anywhere without network or the run folder.
"""
from __future__ import annotations

import argparse

import palm  # noqa: F401  (CPU tuning before paddle is imported)
from palm.cli import add_verbosity_options, run_tool
from palm.config import check_options
from palm.reports.report import build_report
from palm.weights import TRUST_HELP, trust_checkpoints


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="training run folder (tools/train.py --output)")
    p.add_argument("--eval", default=None, help="evaluation folder (tools/eval.py --output)")
    p.add_argument("--output", default=None,
                   help="report path (default: report.html in --eval, else in --run)")
    p.add_argument("--gallery-size", type=int, default=6,
                   help="cases shown among the most confident errors and correct predictions")
    p.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    add_verbosity_options(p)
    return p


def main(args: argparse.Namespace) -> int:
    check_options(vars(args))
    with trust_checkpoints(args.trust_checkpoint):
        path = build_report(args.run, args.eval, args.output, gallery_size=args.gallery_size)
    print(f"report written to {path}")
    return 0


def cli() -> None:
    run_tool(main, get_args_parser().parse_args())


if __name__ == "__main__":
    cli()
