"""Paddle's published ImageNet weights for palm's networks: list, download, verify.

    python tools/weights.py list                       # which networks have them, which are cached
    python tools/weights.py download --model resnet50  # fetch into the cache, MD5-checked
    python tools/weights.py verify                     # check the cached files' MD5

`train --pretrained imagenet` downloads them itself; this is for fetching ahead of time, for
a machine going offline, and for checking a copy placed by hand. Files live in
$PALM_WEIGHTS_DIR, else $XDG_CACHE_HOME/palm/weights, else ~/.cache/palm/weights;
$PALM_WEIGHTS_MIRROR=http(s)://HOST[:PORT][/PATH] replaces the scheme and host of every URL.
"""
from __future__ import annotations

import argparse

from palm.cli.common import add_verbosity_options, command_parser, library_call

RUNS = "palm.engine.tasks:run_weights"


def get_args_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = command_parser(__doc__, prog)
    p.add_argument("action", choices=("list", "download", "verify"))
    p.add_argument("--model", dest="models", nargs="+", metavar="NAME",
                   help="the networks (default: all; download needs names or --all)")
    p.add_argument("--all", action="store_true", help="download: every network listed")
    add_verbosity_options(p)
    return p


def interrupted(args: argparse.Namespace) -> str:
    """The line printed on Ctrl-C: a download in progress leaves nothing in the cache."""
    return "stopped: interrupted; the weights cache holds only complete, MD5-checked files"


main = library_call(__name__)
