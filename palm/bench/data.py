"""The data the benchmarks run on (synthetic PALM-sized JPEGs, folders of them) and the input
pipeline benchmark: decoding a JPEG to the model's size, and the data loader's rate."""
from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from palm.bench.report import input_pipeline_summary
from palm.bench.timing import require_at_least
from palm.data import CachedImageReader, PalmTrainSet, build_loader, build_transform, read_image
from palm.data.synth import FundusSpec, make_palm_dataset, render_fundus
from palm.errors import BadConfig
from palm.io_utils import write_json_atomic
from palm.runtime import usable_cores

PALM_SIZE = "2124x2056"


def palm_sized_images(work_dir: Path, n_distinct: int = 16) -> list[Path]:
    """`n_distinct` synthetic PALM photos at 2124x2056, drawn once and reused."""
    root = Path(work_dir) / "synth"
    train_dir = root / "PALM-Training400" / "PALM-Training400"
    if not (root / "done").is_file():
        shutil.rmtree(root, ignore_errors=True)
        make_palm_dataset(root, n_train=n_distinct, n_val=1, image_size=PALM_SIZE, seed=0,
                          num_workers=min(2, usable_cores()))
        (root / "done").write_text("ok\n")
    return sorted(train_dir.glob("*.jpg"))


def fill_folder(folder: Path, sources: list[Path], n: int, keep_prefix: bool) -> Path:
    """`n` JPEGs in `folder`, hard links (or copies) of `sources` in turn.

    Decoding cost is the same for a repeated file; names keep the PALM class letter when
    `keep_prefix`, so PalmTrainSet labels them.
    """
    if folder.is_dir() and len(list(folder.glob("*.jpg"))) == n:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i in range(n):
        src = sources[i % len(sources)]
        name = f"{src.name[0] if keep_prefix else 'img'}{i:05d}.jpg"
        try:
            os.link(src, folder / name)
        except OSError:
            shutil.copyfile(src, folder / name)
    return folder


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up: file cache, OpenCV initialisation
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def decode_ways(path: Path, size: int, repeats: int, cache_dir: Path) -> dict[str, Any]:
    """ms per image for each way of going from the JPEG to a size x size uint8 image."""

    def resize(img: np.ndarray) -> np.ndarray:
        return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)

    cached = CachedImageReader(cache_dir, size)
    cached(path)  # fill the entry
    ways = {
        "full decode + resize": lambda: resize(read_image(path)),
        "reduced decode + resize": lambda: resize(read_image(path, target_size=size)),
        "cache hit (.npy) + resize": lambda: resize(cached(path)),
    }
    reference = ways["full decode + resize"]()
    result: dict[str, Any] = {}
    for name, fn in ways.items():
        result[name] = {"ms": round(_median_ms(fn, repeats), 2),
                        "psnr_vs_full": round(_psnr(fn(), reference), 1)}
    decoded = read_image(path, target_size=size)
    result["reduced decode size"] = f"{decoded.shape[1]}x{decoded.shape[0]}"
    return result


def bench_decode(size: int, iters: int, work_dir: Path) -> dict[str, Any]:
    """The benchmark's decode section: ms per PALM-sized JPEG to `size` px (full decode,
    reduced-scale decode, cache hit)."""
    with tempfile.TemporaryDirectory(dir=work_dir) as cache:
        result = decode_ways(palm_sized_images(work_dir)[0], size, max(5, iters), Path(cache))
    full, reduced = result["full decode + resize"], result["reduced decode + resize"]
    return {"decode_full_ms": full["ms"], "decode_reduced_ms": reduced["ms"],
            "decode_cache_hit_ms": result["cache hit (.npy) + resize"]["ms"],
            "decode_reduced_psnr": reduced["psnr_vs_full"],
            "decode_reduced_size": result["reduced decode size"],
            "decode_reduced_vs_full": full["ms"] / reduced["ms"]}


def bench_loader(folder: Path, size: int, batch_size: int, workers: int,
                 cache_dir: Path | None) -> dict[str, float]:
    """images/s over full epochs: one epoch without a cache, or a cold and a warm cached epoch."""
    ds = PalmTrainSet(folder, transform=build_transform(size, train=True), cache_dir=cache_dir)
    loader = build_loader(ds, batch_size, train=True, num_workers=workers, drop_last=False)
    rates = []
    for _ in range(2 if cache_dir else 1):
        t = time.perf_counter()
        n = sum(x.shape[0] for x, _ in loader)
        rates.append(round(n / (time.perf_counter() - t), 1))
    if cache_dir is None:
        return {"no cache": rates[0]}
    return {"cache, cold epoch": rates[0], "cache, warm epoch": rates[1]}


def synthetic_photo(path: Path, source_size: str) -> Path:
    """One synthetic fundus JPEG of `source_size` (WIDTHxHEIGHT) at `path`.

    Raises:
        BadConfig: `source_size` is not WIDTHxHEIGHT.
    """
    try:
        w, h = (int(v) for v in source_size.lower().split("x"))
    except ValueError:
        raise BadConfig(f"source_size must be WIDTHxHEIGHT, e.g. {PALM_SIZE} (got {source_size!r})")
    img, _ = render_fundus(FundusSpec("P", 0.7, True), (w, h), 0.5, np.random.default_rng(0))
    cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                 [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tofile(str(path))
    return path


def input_pipeline(image: Path | None = None, source_size: str = PALM_SIZE, image_size: int = 224,
                   repeats: int = 20, n_images: int = 48, batch_size: int = 8,
                   workers: Sequence[int] = (0, 2)) -> dict[str, Any]:
    """Decode ms/image and loader images/s (no cache, cold and warm cache) for one JPEG:
    `image`, or a synthetic fundus photo of `source_size` when None.

    Raises:
        BadConfig: a count below 1 (workers below 0) or a malformed source_size.
    """
    require_at_least(1, image_size=image_size, repeats=repeats, n_images=n_images,
                     batch_size=batch_size)
    require_at_least(0, **{f"workers[{i}]": w for i, w in enumerate(workers)})
    with tempfile.TemporaryDirectory(prefix="palm_bench_") as tmp:
        tmp = Path(tmp)
        source = Path(image) if image else synthetic_photo(tmp / "source.jpg", source_size)
        h, w = read_image(source).shape[:2]
        results: dict[str, Any] = {
            "source": f"{w}x{h} JPEG, {source.stat().st_size / 1e6:.2f} MB",
            "image_size": image_size,
            "decode": decode_ways(source, image_size, repeats, tmp / "decode_cache"),
        }
        # the loader reads n copies of the photo under PALM names (decode cost is per file)
        folder = tmp / "PALM-Training400"
        folder.mkdir()
        for i in range(n_images):
            shutil.copy(source, folder / f"{'PN'[i % 2]}{i + 1:04d}.jpg")
        results["loader_images_per_s"] = {}
        for n_workers in workers:
            rates = bench_loader(folder, image_size, batch_size, n_workers, None)
            rates.update(bench_loader(folder, image_size, batch_size, n_workers,
                                      tmp / f"cache_w{n_workers}"))
            results["loader_images_per_s"][f"num_workers={n_workers}"] = rates
    return results



def run_input_pipeline(image: Path | None = None, source_size: str = PALM_SIZE,
                       image_size: int = 224, repeats: int = 20, n_images: int = 48,
                       batch_size: int = 8, workers: Sequence[int] = (0, 2),
                       output: str | Path | None = None) -> dict[str, Any]:
    """input_pipeline(...) with its figures printed and, given `output`, written as JSON."""
    results = input_pipeline(image, source_size, image_size, repeats, n_images, batch_size,
                             workers)
    print(input_pipeline_summary(results, batch_size, n_images))
    if output:
        write_json_atomic(output, results)
    return results
