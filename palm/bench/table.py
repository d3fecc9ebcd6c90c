"""The README's model table: every registered network at 224 px, its parameters, GFLOPs and
eval img/s (dygraph tuned, Paddle Inference), each in its own child process."""
from __future__ import annotations

import json
import tempfile
from typing import Any

from palm.bench.timing import (child_result, images_per_second, random_batch, run_in_child,
                              timing_network)
from palm.engine.export import export_model
from palm.engine.inference import DygraphPredictor, InferencePredictor
from palm.flops import count_flops, count_params
from palm.models import list_models

TABLE_SIZE = 224


def table_row(model_name: str, batch_size: int, iters: int) -> dict[str, Any]:
    """README table row: params, GFLOPs and eval img/s (dygraph tuned, inference) at 224 px."""
    size = TABLE_SIZE
    model, meta = timing_network(model_name, size)
    batch = random_batch(batch_size, size)
    row = {"model": model_name, "params_m": count_params(model) / 1e6,
           "gflops": count_flops(model, (1, 3, size, size)) / 1e9}
    dygraph = DygraphPredictor(model, meta)
    row["eval_dygraph"] = images_per_second(lambda: dygraph.predict(batch), len(batch),
                                            iters, warmup=1)
    with tempfile.TemporaryDirectory() as tmp:
        export_model(model, tmp, meta)
        predictor = InferencePredictor(tmp)
        row["inference"] = images_per_second(lambda: predictor.predict(batch), len(batch),
                                             iters, warmup=1)
    return row


def run_table(batch_size: int, iters: int, models: list[str] | None = None) -> list[dict]:
    """One row per network of `models` (default: every registered one), each measured in a
    child process; a crash (e.g. a oneDNN segfault) costs one row, not the table."""
    rows = []
    for name in models or list_models():
        run = run_in_child(__name__, "table_row",
                           {"model_name": name, "batch_size": batch_size, "iters": iters})
        if run.returncode == 0:
            rows.append(child_result(run))
        else:
            rows.append({"model": name, "error": (run.stderr.strip().splitlines() or
                                                  [f"exit {run.returncode}"])[-1][:200]})
        print(json.dumps(rows[-1]), flush=True)
    return rows
