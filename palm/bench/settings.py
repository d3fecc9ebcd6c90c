"""The benchmark's sections and the settings every section reads."""
from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Iterable

from palm.bench.timing import require_at_least
from palm.errors import BadConfig

# what the predict section runs: the export (fp32), or an INT8 folder quantized from it
PREDICT_PRECISIONS = ("fp32", "int8")
SECTIONS = ("train", "loader", "compile", "profile", "default", "eval", "inference", "bf16", "onnx",
            "int8", "decode", "predict", "stats")
DEFAULT_MODELS = ("resnet50", "resnet18")


@dataclass(frozen=True)
class BenchSettings:
    """How much each section measures.

    batch_size: images per batch; iters: timed batches per eval measurement; train_iters:
    timed bare training steps; train_images: images per training-loop epoch; num_workers:
    data loader processes; predict_images: folder sizes of the end-to-end predict runs (two
    or more); repeats: runs of each predictor and predict measurement (the best counts);
    precision: the predict section's model, the fp32 export or ("int8") a folder quantized
    from it, whose steady rate is then compared with the INT8 engine's.

    Raises:
        BadConfig: a count out of range, naming the parameter.
    """

    batch_size: int = 8
    iters: int = 10
    train_iters: int = 24
    train_images: int = 400
    num_workers: int = 2
    predict_images: tuple[int, ...] = field(default=(100, 500))
    repeats: int = 2
    precision: str = "fp32"

    def __post_init__(self) -> None:
        require_at_least(1, batch_size=self.batch_size, iters=self.iters,
                         train_iters=self.train_iters, train_images=self.train_images,
                         repeats=self.repeats)
        require_at_least(0, num_workers=self.num_workers)
        sizes = sorted(set(self.predict_images))
        if len(sizes) < 2 or sizes[0] < 1:
            raise BadConfig("predict_images needs two or more different folder sizes >= 1 "
                            f"(got {list(self.predict_images)})")
        object.__setattr__(self, "predict_images", tuple(sizes))
        if self.precision not in PREDICT_PRECISIONS:
            raise BadConfig(f"precision must be one of {', '.join(PREDICT_PRECISIONS)} "
                            f"(got {self.precision!r})", param="precision")


def check_sections(sections: Iterable[str]) -> set[str]:
    """The set of `sections`, refused if one is unknown.

    Raises:
        BadConfig: an unknown section name.
    """
    chosen = set(sections)
    unknown = chosen - set(SECTIONS)
    if unknown:
        raise BadConfig(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    return chosen
