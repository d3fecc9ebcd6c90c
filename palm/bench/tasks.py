"""What `palm benchmark` does, as a function of plain parameters (see palm.engine.tasks);
`palm benchmark-data` and `palm loadtest` call palm.bench.data.run_input_pipeline and
palm.bench.loadtest.run_loadtest directly."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from palm.bench.sections import run_benchmark
from palm.bench.settings import BenchSettings
from palm.errors import BadConfig
from palm.models import list_models


def run_benchmark_task(output: str | Path, work_dir: str | Path, *,
                       models: Sequence[str] | None = None, sizes: Sequence[int] = (224,),
                       sections: Sequence[str] | None = None, table: bool = False,
                       batch_size: int = 8, iters: int = 10, train_iters: int = 24,
                       train_images: int = 400, num_workers: int = 2,
                       predict_images: Sequence[int] = (100, 500), repeats: int = 2,
                       precision: str = "fp32", command: str = "") -> dict[str, Any]:
    """run_benchmark with the BenchSettings given as parameters (their errors name them)."""
    unknown = sorted(set(models or ()) - set(list_models()))
    if unknown:
        raise BadConfig(f"models: unknown {', '.join(unknown)}; choose from "
                        f"{', '.join(list_models())}", param="models")
    settings = BenchSettings(batch_size=batch_size, iters=iters, train_iters=train_iters,
                             train_images=train_images, num_workers=num_workers,
                             predict_images=tuple(predict_images), repeats=repeats,
                             precision=precision)
    return run_benchmark(output, work_dir, models=models, sizes=sizes, sections=sections,
                         table=table, settings=settings, command=command)
