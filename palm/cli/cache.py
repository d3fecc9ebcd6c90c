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
from pathlib import Path

import palm  # noqa: F401  (CPU tuning before paddle is imported)
from palm.cli import add_verbosity_options, run_tool
from palm.data import cache_size_setting, cache_usage, clear_cache, default_cache_dir


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("info", "clear"))
    p.add_argument("--cache-dir", help="the cache folder (default: the one training uses)")
    add_verbosity_options(p)
    return p


def main(args: argparse.Namespace) -> tuple[int, int]:
    folder = Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir()
    if args.action == "clear":
        entries, size = clear_cache(folder)
        print(f"{folder}: removed {entries} cached images ({size / 1e6:.1f} MB)")
    else:
        entries, size = cache_usage(folder)
        print(f"{folder}: {entries} cached images, {size / 1e6:.1f} MB "
              f"(limit {cache_size_setting() / 1e9:g} GB; $PALM_CACHE_SIZE_GB changes it)")
    return entries, size


def cli() -> None:
    run_tool(main, get_args_parser().parse_args())


if __name__ == "__main__":
    cli()
