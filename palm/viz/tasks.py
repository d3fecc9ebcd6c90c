"""What `palm inspect` does, as a function of plain parameters (see palm.engine.tasks)."""
from __future__ import annotations

import os
from pathlib import Path

from palm.viz.inspection import inspect_data_set


def run_inspect(source: str | os.PathLike, output: str | os.PathLike = "runs/inspect") -> dict:
    """inspect_data_set of `source` into `output`, with its figures and problems printed."""
    out = Path(output)
    report = inspect_data_set(source, out)
    for name, split in report["splits"].items():
        counts = ", ".join(f"{c} {n}" for c, n in split["counts"].items())
        sizes = ", ".join(f"{s['width']}x{s['height']} ({s['count']})" for s in split["sizes"])
        print(f"{name}: {split['images']} images: {counts}; sizes: {sizes}")
        for problem in split["problems"]:
            print(f"  BAD {problem['where']}: {problem['problem']}")
    print(f"wrote {out / 'class_counts.png'}, {out / 'image_sizes.png'}, {out / 'inspect.json'}")
    return report
