"""How the benchmarks print their figures: progress lines, the results table, and the input
pipeline's summary."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

Log = Callable[[str], None]
# row keys that are not one figure each: the table shows their summary instead
_NOT_FIGURES = ("model", "size", "predict", "inference_runs", "train_step_runs",
                "train_step_torch_runs", "train_profile")


def log_rate(log: Log, label: str, short: str, rate: float | str) -> None:
    """`label N img/s`, or `short: reason` when the figure is the reason it is missing."""
    log(f"{label} {rate:.2f} img/s" if isinstance(rate, float) else f"{short}: {rate}")


def log_training(log: Log, row: dict[str, Any]) -> None:
    log(f"train step {row['train_step']:.2f} img/s, loop with loader: first epoch "
        f"{row.get('train_loader_first_epoch', float('nan')):.2f}, later epochs "
        f"{row.get('train_loader', float('nan')):.2f}")
    torch_rate = row["train_step_torch"]
    if not isinstance(torch_rate, float):
        log(f"torch training: {torch_rate}")
        return
    loop = (f", loop with loader / torch step {row['train_loader_vs_torch']:.2f}x"
            if "train_loader_vs_torch" in row else "")
    chunks = "; ".join(f"{a:.2f} / {b:.2f}" for a, b in
                       zip(row["train_step_runs"], row["train_step_torch_runs"]))
    log(f"torch eager train step {torch_rate:.2f} img/s: palm step / torch step "
        f"{row['train_step_vs_torch']:.2f}x, fastest chunks {row['train_step_vs_torch_best']:.2f}x"
        f"{loop} (chunks palm / torch: {chunks})")


def profile_lines(profile: dict[str, Any]) -> list[str]:
    """The profile section's figures per framework: seconds per phase, seconds per operator
    type (forward/backward), and GFLOP/s per convolution kind."""
    lines = [f"profile: convolutions {profile['conv_gflop_per_step_forward']:.1f} GFLOP per "
             "step forward, as much again for each of data and filter gradients"]
    for framework in ("paddle", "torch"):
        result = profile[framework]
        if isinstance(result, str):
            lines.append(f"profile {framework}: {result}")
            continue
        phases = result["phases"]
        total = sum(phases.values())
        lines.append(f"profile {framework} s/step: " + ", ".join(
            f"{phase} {s:.3f} ({s / total:.0%})" for phase, s in phases.items()))
        # shares of the profiled steps' own total: the profiler slows a step down
        profiled = sum(s for by_phase in result["op_types"].values() for s in by_phase.values())
        lines.append(f"profile {framework} op types, share of the profiled step: " + ", ".join(
            f"{kind} " + " + ".join(f"{s / profiled:.1%} {phase}"
                                    for phase, s in sorted(by_phase.items(), reverse=True))
            for kind, by_phase in sorted(result["op_types"].items(),
                                         key=lambda kv: -sum(kv[1].values()))))
        for kernels in ("conv", "conv_onednn"):
            if kernels in result:
                lines.append(f"profile {framework} {kernels} GFLOP/s: " + ", ".join(
                    f"{kind} {r['gflop_per_s']:.1f} ({r['seconds']:.3f} s)"
                    for kind, r in result[kernels].items()))
    return lines


def log_int8(log: Log, row: dict[str, Any]) -> None:
    if not isinstance(row.get("int8"), float):
        log(f"int8: {row['int8']}")
        return
    torch_rate = row["torch_eager"]
    log(f"int8 {row['int8']:.2f}, fp32 predictor {row['int8_fp32_predictor']:.2f} img/s, "
        "torch eager " + (f"{torch_rate:.2f} img/s" if isinstance(torch_rate, float)
                          else torch_rate))


def log_predict(log: Log, result: dict[str, Any]) -> None:
    for n, r in result["runs"].items():
        log(f"predict.py {n} images: {r['seconds']:.1f} s, {r['img_per_s']:.2f} img/s, "
            f"peak RSS {r['peak_rss_mb']:.0f} MB (tree {r['peak_tree_rss_mb']:.0f} MB)")
    if "steady_vs_engine" in result:
        start, end = (", ".join(f"{v:.2f}" for v in result[k]) for k in ("loadavg_start",
                                                                           "loadavg_end"))
        log(f"predict.py steady {result['steady_img_per_s']:.2f} img/s = "
            f"{result['steady_vs_engine']:.3f}x the INT8 engine's "
            f"{result['engine_img_per_s']:.2f} img/s on in-memory batches "
            f"(load average {start} at the start, {end} at the end)")


def stats_line(stats: dict[str, Any]) -> str:
    return "statistics on 400 cases: " + ", ".join(f"{k} {v:.3g}" for k, v in stats.items())


def _flat_figures(row: dict[str, Any]) -> dict[str, Any]:
    flat = {k: v for k, v in row.items() if k not in _NOT_FIGURES and not k.endswith("_runs")}
    for n, run in row.get("predict", {}).get("runs", {}).items():
        flat[f"predict {n} img/s (with start-up)"] = run["img_per_s"]
        flat[f"predict {n} peak RSS MB, main"] = run["peak_rss_mb"]
        flat[f"predict {n} peak RSS MB, all processes"] = run["peak_tree_rss_mb"]
    if "predict" in row:
        flat["predict steady img/s"] = row["predict"]["steady_img_per_s"]
    if "steady_vs_engine" in row.get("predict", {}):
        flat["INT8 engine img/s"] = row["predict"]["engine_img_per_s"]
        flat["predict steady / INT8 engine"] = row["predict"]["steady_vs_engine"]
    return flat


def format_table(rows: list[dict], table_mode: bool) -> str:
    """Table mode: a row per model. Otherwise a column per model/size, a row per figure."""
    if table_mode:
        df = pd.DataFrame(rows)
        cols = [c for c in ("model", "params_m", "gflops", "eval_dygraph", "inference", "error")
                if c in df]
        return df[cols].to_string(index=False, float_format=lambda v: f"{v:.2f}")
    columns = {f"{row['model']} {row['size']}px": _flat_figures(row) for row in rows}
    order = list(dict.fromkeys(k for flat in columns.values() for k in flat))
    df = pd.DataFrame(columns).reindex(order)
    return df.to_string(float_format=lambda v: f"{v:.3g}" if abs(v) < 1e-2 else f"{v:.2f}")


def input_pipeline_summary(results: dict[str, Any], batch_size: int, n_images: int) -> str:
    """The input pipeline benchmark's figures, a line each."""
    lines = [f"source: {results['source']}, model input {results['image_size']} px"]
    for name, r in results["decode"].items():
        lines.append(f"  {name:28s} {r}" if isinstance(r, str) else
                     f"  {name:28s} {r['ms']:7.2f} ms/image   PSNR vs full {r['psnr_vs_full']} dB")
    lines.append(f"loader (batch {batch_size}, train transform, {n_images} img/epoch), img/s:")
    for workers, rates in results["loader_images_per_s"].items():
        lines.append(f"  {workers}: " + ", ".join(f"{k} {v}" for k, v in rates.items()))
    return "\n".join(lines)
