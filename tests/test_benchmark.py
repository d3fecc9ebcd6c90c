"""tools/benchmark.py runs its sections and writes consistent JSON (figures are not checked:
speed is measured by running the script, not in the test suite)."""
from __future__ import annotations

import json
import math

from palm.cli import benchmark


def test_benchmark_sections_write_json(tmp_path):
    out = tmp_path / "bench.json"
    argv = ["--models", "lenet5", "--sizes", "32", "--sections", "train,compile,eval,inference",
            "--iters", "2", "--train-iters", "3", "--work-dir", str(tmp_path / "work"),
            "--output", str(out)]
    benchmark.main(benchmark.get_args_parser().parse_args(argv))
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert (row["model"], row["size"], row["batch"]) == ("lenet5", 32, 8)
    for key in ("train_step", "train_step_eager", "train_step_compiled", "compile_seconds",
                "eval_dygraph", "inference"):
        assert math.isfinite(row[key]) and row[key] > 0, key
    assert row["compiled_vs_eager"] == row["train_step_compiled"] / row["train_step_eager"]
    assert row["inference_vs_eval_dygraph"] == row["inference"] / row["eval_dygraph"]
    assert row["inference_rel_diff"] < 1e-4  # the export computes what dygraph computes
    assert result["environment"]["cores"] >= 1
