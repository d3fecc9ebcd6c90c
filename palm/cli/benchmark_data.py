"""Benchmark the input pipeline on PALM-sized JPEGs (a benchmark, not a test).

Reports decode+resize ms/image for a 2124x2056 JPEG (full decode vs reduced-scale decode vs
the cache), and DataLoader images/s without the cache and with it (cold and warm epochs).
Without --image, one synthetic fundus photo is drawn with palm.data.synth.

Example:
    palm benchmark-data --image-size 224 --n-images 48 --workers 0 2
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

import palm  # noqa: F401  (CPU environment tuning before paddle is imported)
from palm.cli.common import add_verbosity_options, run_tool
from palm.data import CachedImageReader, PalmTrainSet, build_loader, build_transform, read_image
from palm.data.synth import FundusSpec, render_fundus
from palm.io_utils import write_json_atomic


def _median_ms(fn, repeats: int) -> float:
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


def bench_decode(path: Path, size: int, repeats: int, cache_dir: Path) -> dict:
    """ms per image for each way of going from the JPEG to a size x size uint8 image."""

    def resize(img):
        return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)

    cached = CachedImageReader(cache_dir, size)
    cached(path)  # fill the entry
    ways = {
        "full decode + resize": lambda: resize(read_image(path)),
        "reduced decode + resize": lambda: resize(read_image(path, target_size=size)),
        "cache hit (.npy) + resize": lambda: resize(cached(path)),
    }
    reference = ways["full decode + resize"]()
    result = {}
    for name, fn in ways.items():
        result[name] = {
            "ms": round(_median_ms(fn, repeats), 2),
            "psnr_vs_full": round(_psnr(fn(), reference), 1),
        }
    decoded = read_image(path, target_size=size)
    result["reduced decode size"] = f"{decoded.shape[1]}x{decoded.shape[0]}"
    return result


def bench_loader(
    folder: Path, size: int, batch_size: int, workers: int, cache_dir: Path | None
) -> dict:
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


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--image", help="a real JPEG to use instead of a synthetic one")
    p.add_argument("--source-size", default="2124x2056", help="synthetic JPEG WIDTHxHEIGHT")
    p.add_argument("--image-size", type=int, default=224, help="model input side")
    p.add_argument("--repeats", type=int, default=20, help="timed decodes per method")
    p.add_argument("--n-images", type=int, default=48, help="images per loader epoch")
    p.add_argument("-b", "--batch-size", type=int, default=8)
    p.add_argument(
        "--workers", type=int, nargs="+", default=[0, 2], help="num_workers values to try"
    )
    p.add_argument("--out", help="also write the figures to this JSON file")
    add_verbosity_options(p)
    return p


def main(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="palm_bench_") as tmp:
        tmp = Path(tmp)
        if args.image:
            source = Path(args.image)
        else:
            w, h = (int(v) for v in args.source_size.lower().split("x"))
            img, _ = render_fundus(
                FundusSpec("P", 0.7, True), (w, h), 0.5, np.random.default_rng(0)
            )
            source = tmp / "source.jpg"
            cv2.imencode(
                ".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92]
            )[1].tofile(str(source))
        h, w = read_image(source).shape[:2]
        results = {
            "source": f"{w}x{h} JPEG, {source.stat().st_size / 1e6:.2f} MB",
            "image_size": args.image_size,
            "decode": bench_decode(source, args.image_size, args.repeats, tmp / "decode_cache"),
        }
        # the loader reads n copies of the photo under PALM names (decode cost is per file)
        folder = tmp / "PALM-Training400"
        folder.mkdir()
        for i in range(args.n_images):
            shutil.copy(source, folder / f"{'PN'[i % 2]}{i + 1:04d}.jpg")
        results["loader_images_per_s"] = {}
        for workers in args.workers:
            rates = bench_loader(folder, args.image_size, args.batch_size, workers, None)
            rates.update(
                bench_loader(
                    folder, args.image_size, args.batch_size, workers, tmp / f"cache_w{workers}"
                )
            )
            results["loader_images_per_s"][f"num_workers={workers}"] = rates

    print(f"source: {results['source']}, model input {args.image_size} px")
    for name, r in results["decode"].items():
        print(
            f"  {name:28s} {r}"
            if isinstance(r, str)
            else f"  {name:28s} {r['ms']:7.2f} ms/image   PSNR vs full {r['psnr_vs_full']} dB"
        )
    print(f"loader (batch {args.batch_size}, train transform, {args.n_images} img/epoch), img/s:")
    for workers, rates in results["loader_images_per_s"].items():
        print(f"  {workers}: " + ", ".join(f"{k} {v}" for k, v in rates.items()))
    if args.out:
        write_json_atomic(args.out, results)
    return results


def cli() -> None:
    run_tool(main, get_args_parser().parse_args())


if __name__ == "__main__":
    cli()
