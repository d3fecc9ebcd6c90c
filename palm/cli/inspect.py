"""Inspect a data set: class counts, image sizes, corrupt or unusable files.

Writes to --output: `class_counts.png` (bar chart per split), `image_sizes.png` (width x height
scatter, marker area ~ number of images) and `inspect.json` (all figures and every problem).

Example:
    python -m data_tools.inspect --data-root demo_data/palm --output runs/inspect
"""

from __future__ import annotations

import argparse
import functools
from typing import Any

from palm.cli.common import cli as run_command
from palm.cli.common import (add_data_source, add_output_option, add_verbosity_options,
                             command_parser, data_source, library_call)

RUNS = "palm.viz.tasks:run_inspect"


def get_args_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = command_parser(__doc__.split("\n")[0], prog, split=False,
                       formatter=argparse.HelpFormatter)
    add_data_source(p)
    add_output_option(p, "folder for the plots and inspect.json", default="runs/inspect",
                      hidden=("--out",))
    add_verbosity_options(p)
    return p


def to_params(args: argparse.Namespace) -> dict[str, Any]:
    return {"source": data_source(args), "output": args.output}


main = library_call(__name__)
cli = functools.partial(run_command, "inspect")
