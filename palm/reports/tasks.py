"""What `palm eval`, `palm report` and `palm compare` run: evaluation that may end in a
report, the HTML report of a run, and the comparison of models."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from palm.config import check_options
from palm.engine.device import select_device
from palm.engine.evaluate import eval_output_for, evaluate_checkpoint
from palm.io_utils import output_lock
from palm.metrics import parse_operating_point
from palm.reports.compare import CURVES, compare_models
from palm.reports.report import build_report
from palm.weights import trust_checkpoints


def run_eval(checkpoint: str, *, output: str | None = None, exist_ok: bool = False,
             data_root: str | None = None, val_dir: str | None = None,
             val_csv: str | None = None, threshold: float | None = None,
             tune_threshold: bool = False, operating_point: str | None = None,
             fit_temperature: bool = False, ci_resamples: int | None = 2000,
             referable_grade: int | None = None, batch_size: int = 16,
             num_workers: int = 0, skip_bad: bool = False, cache_dir: str | None = "auto",
             cache_size_gb: float | None = None, positive_class: str | None = None,
             allow_outside_paths: bool = False, max_pixels: int | None = None,
             device: str = "auto", engine: str = "auto", precision: str | None = None,
             report: bool = False, trust_checkpoint: bool = False) -> dict:
    """Evaluate `checkpoint` on labelled images into `output` (see palm eval --help); returns
    the metrics. ci_resamples None: no confidence intervals."""
    check_options({"ci_resamples": ci_resamples, "batch_size": batch_size,
                   "num_workers": num_workers, "threshold": threshold,
                   "cache_size_gb": cache_size_gb, "max_pixels": max_pixels})
    if operating_point:  # a typo is reported before the model is loaded
        parse_operating_point(operating_point)
    select_device(device)
    folder = eval_output_for(checkpoint, output, exist_ok)
    with trust_checkpoints(trust_checkpoint), output_lock(folder, folder=True):
        metrics = evaluate_checkpoint(
            checkpoint, folder, data_root=data_root, val_dir=val_dir, val_csv=val_csv,
            threshold=threshold, tune_threshold=tune_threshold, batch_size=batch_size,
            num_workers=num_workers, skip_bad=bool(skip_bad), cache_dir=cache_dir,
            engine=engine, precision=precision, cache_size_gb=cache_size_gb,
            max_pixels=max_pixels, allow_outside_paths=bool(allow_outside_paths),
            positive_class=positive_class, ci_resamples=ci_resamples or 0,
            fit_temperature=fit_temperature, operating_point=operating_point,
            referable_grade=referable_grade)
        if report:
            page = build_report(Path(checkpoint).parent, folder, checkpoint=checkpoint)
            print(f"report written to {page}")
    return metrics


def run_compare(sources: Sequence[str], output: str = "comparison", *,
                names: Sequence[str] | None = None, ci_resamples: int = 2000,
                seed: int = 0) -> Path:
    """Leaderboard and paired tests of several evaluated models into the folder `output`."""
    check_options({"ci_resamples": ci_resamples, "seed": seed})
    folder = Path(output)
    with output_lock(folder, folder=True):
        compare_models(list(sources), folder, list(names) if names else None, ci_resamples,
                       seed)
    print((folder / "leaderboard.md").read_text(encoding="utf-8"))
    written = [name for name in ("leaderboard.md", "leaderboard.csv", "pairs.csv",
                                 "pairs_per_label.csv", "roc_overlay.png", CURVES)
               if (folder / name).is_file()]
    print(f"written to {folder}: {', '.join(written)}")
    return folder


def run_report(run: str, *, eval_dir: str | None = None, output: str | None = None,
               gallery_size: int = 6, trust_checkpoint: bool = False) -> int:
    """The HTML report of training run `run` and its evaluation `eval_dir`."""
    check_options({"gallery_size": gallery_size})
    with trust_checkpoints(trust_checkpoint):
        path = build_report(run, eval_dir, output, gallery_size=gallery_size)
    print(f"report written to {path}")
    return 0

