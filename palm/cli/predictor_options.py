"""Command-line options of the tools that run a checkpoint on images (eval, predict).

The choices are palm.engine.inference's ENGINES and PRECISIONS, written out here because
importing that module loads Paddle (tests/cli/test_light_parsers.py checks they agree).
"""
from __future__ import annotations

import argparse

ENGINES = ("auto", "dygraph", "inference")
PRECISIONS = ("fp32", "bf16", "int8")


def add_predictor_options(parser: argparse.ArgumentParser) -> None:
    """--checkpoint, --engine and --precision: which model runs, and how."""
    parser.add_argument("--checkpoint", required=True,
                        help="NAME.pdparams with NAME.json beside it, or a tools/export.py or "
                             "tools/quantize.py folder")
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="auto: Paddle Inference for an export folder, and for a checkpoint "
                             "when there are enough images to repay a temporary export; else "
                             "dygraph")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="default: int8 for a tools/quantize.py folder, else fp32. bf16: about "
                             "2x faster on CPUs with AVX512-BF16/AMX; check reduced precisions "
                             "with tools/eval.py before predicting with them")
