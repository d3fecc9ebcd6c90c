"""One model at one image size through the chosen sections, and the whole benchmark run:
sections, rows, the printed table and the JSON results."""
from __future__ import annotations

import os
import platform
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import paddle

from palm.bench.data import bench_decode
from palm.bench.inference import (TUNING_VARS, bench_bf16, bench_int8, bench_onnxruntime,
                                  eval_default_in_child, relative_difference)
from palm.bench.predict import bench_predict, bench_predict_int8
from palm.bench.report import (Log, format_table, log_int8, log_predict, log_rate,
                               log_training, profile_lines, stats_line)
from palm.bench.settings import DEFAULT_MODELS, SECTIONS, BenchSettings, check_sections
from palm.bench.stats import bench_statistics
from palm.bench.table import run_table
from palm.bench.timing import images_per_second, random_batch, require_at_least, timing_network
from palm.bench.train import bench_compiled_training, bench_training
from palm.bench.train_profile import bench_train_profile
from palm.engine.checkpoint import IMAGE_SIZE_RANGE
from palm.engine.export import export_model
from palm.engine.inference import DygraphPredictor, InferencePredictor
from palm.flops import count_flops, count_params
from palm.io_utils import write_json_atomic
from palm.runtime import cpu_vendor, usable_cores

# pairs (a, b) of figures whose ratio a / b each row reports when both were measured
RATIOS = (("inference", "eval_default"), ("inference", "eval_dygraph"),
          ("eval_dygraph", "eval_default"), ("inference_bf16", "inference"))


def _training_sections(row: dict, model_name: str, size: int, settings: BenchSettings,
                       work_dir: Path, sections: set[str], log: Log) -> None:
    if sections & {"train", "loader"}:
        row.update(bench_training(model_name, size, settings, work_dir, "loader" in sections))
        log_training(log, row)
    if "compile" in sections:
        row.update(bench_compiled_training(model_name, size, settings))
        log(f"train step eager {row['train_step_eager']:.2f}, compiled "
            f"{row['train_step_compiled']:.2f} img/s (compiling {row['compile_seconds']:.1f} s)")
    if "profile" in sections:
        row["train_profile"] = bench_train_profile(model_name, settings.batch_size, size)
        for line in profile_lines(row["train_profile"]):
            log(line)


def _other_engines(row: dict, export_dir: Path, meta: dict, batch: np.ndarray,
                   reference: np.ndarray | None, settings: BenchSettings, work_dir: Path,
                   sections: set[str], log: Log) -> None:
    """The sections between the first and the second inference measurement."""
    model_name, size = row["model"], row["size"]
    if "bf16" in sections:
        row.update(bench_bf16(export_dir, batch, reference, settings.iters))
        log_rate(log, "inference bf16", "bf16", row["inference_bf16"])
    if "default" in sections:
        row["eval_default"] = eval_default_in_child(model_name, size, settings.batch_size,
                                                    settings.iters)
        log(f"eval, paddle defaults {row['eval_default']:.2f} img/s")
    if "onnx" in sections:
        row["onnxruntime"] = bench_onnxruntime(export_dir, batch, settings.iters)
        log_rate(log, "onnxruntime", "onnxruntime", row["onnxruntime"])
    if "int8" in sections:
        row.update(bench_int8(export_dir, meta, model_name, settings, work_dir))
        log_int8(log, row)
    if "decode" in sections:
        row.update(bench_decode(size, settings.iters, work_dir))
        log(f"decode full {row['decode_full_ms']:.1f} ms, reduced {row['decode_reduced_ms']:.1f} "
            f"ms ({row['decode_reduced_size']}, PSNR {row['decode_reduced_psnr']:.1f})")
    if "predict" in sections:
        bench = bench_predict_int8 if settings.precision == "int8" else bench_predict
        row["predict"] = bench(export_dir, work_dir, settings)
        log_predict(log, row["predict"])


def _add_ratios(row: dict) -> None:
    for a, b in RATIOS:
        if isinstance(row.get(a), float) and isinstance(row.get(b), float):
            row[f"{a}_vs_{b}"] = row[a] / row[b]
    if "predict" in row and "inference" in row and "precision" not in row["predict"]:
        row["predict_vs_inference"] = row["predict"]["steady_img_per_s"] / row["inference"]


def bench_model(model_name: str, size: int, settings: BenchSettings, work_dir: Path,
                sections: set[str]) -> dict[str, Any]:
    """One row: every chosen section (but stats) for `model_name` at `size` px, random weights."""
    row: dict[str, Any] = {"model": model_name, "size": size, "batch": settings.batch_size}

    def log(msg: str) -> None:
        print(f"[{model_name} {size}px] {msg}  (load {os.getloadavg()[0]:.1f})", flush=True)

    model, meta = timing_network(model_name, size)
    row["params_m"] = count_params(model) / 1e6
    row["gflops"] = count_flops(model, (1, 3, size, size)) / 1e9
    batch = random_batch(settings.batch_size, size)
    _training_sections(row, model_name, size, settings, work_dir, sections, log)
    dygraph = DygraphPredictor(model, meta)
    # the fp32 logits the export and bfloat16 are compared with
    reference = dygraph.predict(batch) if sections & {"inference", "bf16"} else None
    if "eval" in sections:
        row["eval_dygraph"] = images_per_second(lambda: dygraph.predict(batch), len(batch),
                                                settings.iters)
        log(f"eval, dygraph tuned {row['eval_dygraph']:.2f} img/s")
    export_dir = work_dir / f"export-{model_name}-{size}"
    if sections & {"inference", "bf16", "onnx", "int8", "predict"}:
        export_model(model, export_dir, meta)
    if "inference" in sections:
        predictor = InferencePredictor(export_dir)
        row["inference_rel_diff"] = relative_difference(predictor.predict(batch), reference)
        rates = [images_per_second(lambda: predictor.predict(batch), len(batch), settings.iters)]
        log(f"inference {rates[0]:.2f} img/s")
    _other_engines(row, export_dir, meta, batch, reference, settings, work_dir, sections, log)
    if "inference" in sections:
        # again after the child processes, as predict.py's runs keep their best too
        for _ in range(max(1, settings.repeats - 1)):
            rates.append(images_per_second(lambda: predictor.predict(batch), len(batch),
                                           settings.iters))
        row["inference_runs"] = rates
        row["inference"] = max(rates)
        log(f"inference again {', '.join(f'{r:.2f}' for r in rates[1:])} img/s; "
            f"best {row['inference']:.2f}")
    _add_ratios(row)
    return row


def environment() -> dict[str, Any]:
    """The machine and the CPU tuning the figures were measured under."""
    return {"cpu": platform.processor() or platform.machine(), "vendor": cpu_vendor(),
            "cores": usable_cores(), "paddle": paddle.__version__,
            "python": platform.python_version(),
            **{k: os.environ.get(k) for k in TUNING_VARS}, "loadavg_start": os.getloadavg()}


def run_benchmark(output: str | Path, work_dir: str | Path, *,
                  models: Sequence[str] | None = None, sizes: Sequence[int] = (224,),
                  sections: Iterable[str] | None = None, table: bool = False,
                  settings: BenchSettings = BenchSettings(), command: str = "") -> dict[str, Any]:
    """Run the benchmark, print its figures and table, and write them as JSON to `output`.

    Args:
        models: network names (default resnet50 and resnet18; with `table`, every registered one).
        sizes: image sizes; sections: a subset of SECTIONS (default all).
        table: the README table (224 px, eval only) instead of the sections per model and size.
        command: the command line recorded in the results.

    Raises:
        BadConfig: an unknown section, an empty model list or a size below 1; nothing runs.
    """
    chosen = check_sections(SECTIONS if sections is None else sections)
    names = list(models) if models else list(DEFAULT_MODELS)
    # the smallest side a checkpoint's metadata accepts: smaller fails after minutes of work
    require_at_least(IMAGE_SIZE_RANGE[0], **{f"sizes[{i}]": s for i, s in enumerate(sizes)})
    # absolute: the predict section's child processes run in another folder
    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"environment": environment(), "command": command}
    if "stats" in chosen:
        result["stats"] = bench_statistics(settings.repeats + 1)
        print(stats_line(result["stats"]))
    if table:
        rows = run_table(settings.batch_size, settings.iters, names if models else None)
    else:
        model_sections = chosen - {"stats"}
        rows = [bench_model(m, s, settings, work_dir, model_sections)
                for m in names for s in sizes] if model_sections else []
    result["environment"]["loadavg_end"] = os.getloadavg()
    result["rows"] = rows
    if rows:
        print(format_table(rows, table))
    write_json_atomic(output, result)
    print(f"wrote {output}")
    return result
