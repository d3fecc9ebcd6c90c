"""The image cache: where it is, how big it is, and emptying it.

    python tools/cache.py info              # folder, entries, size and size limit
    python tools/cache.py clear             # delete its entries (runs decode them again)
    python tools/cache.py info --cache-dir demo_data/cache

Training and eval keep shrunk images in $PALM_CACHE_DIR, else $XDG_CACHE_HOME/palm/images,
else ~/.cache/palm/images, up to $PALM_CACHE_SIZE_GB (default 4 GB, least recently used
images evicted beyond it). Only files the cache wrote are counted or deleted.
"""
from __future__ import annotations

import argparse

from palm.cli.common import add_verbosity_options, command_parser, library_call

RUNS = "palm.engine.tasks:run_cache"


def get_args_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = command_parser(__doc__, prog)
    p.add_argument("action", choices=("info", "clear"))
    p.add_argument("--cache-dir", help="the cache folder (default: the one training uses)")
    add_verbosity_options(p)
    return p


main = library_call(__name__)
