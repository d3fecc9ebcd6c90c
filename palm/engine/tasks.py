"""What each `palm` command does, as a function of plain parameters.

The command modules (palm/cli/NAME.py) only parse a command line into these parameters; a
Python caller passes them directly. Errors name the parameters (`epochs`, `output`), never a
flag: palm.cli.common turns a parameter into its flag when it prints the error.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

import paddle
from tqdm import tqdm

from palm.config import check_options
from palm.data import (cache_size_setting, cache_usage, clear_cache, default_cache_dir,
                       eval_transform, find_palm_layout, list_images, parse_augment)
from palm.data import sources as data_sources
from palm.data.grading import find_grading_layout
from palm.data.synth import make_palm_dataset
from palm.data.synth_grading import make_grading_dataset
from palm.data.synth_multilabel import FINDINGS, make_multilabel_dataset
from palm.engine.checkpoint import load_checkpoint_model
from palm.engine.device import select_device
from palm.engine.export import export_checkpoint
from palm.engine.inference import DygraphPredictor, load_predictor, probe_export, weights_sha256
from palm.engine.pipeline import batch_model
from palm.engine.predict import PredictSummary, check_output, journal_path, predict_to_csv
from palm.engine.predict_shards import (RANK_ENV, clear_marker, mark_done, merge_parts,
                                        part_path, seed_part_from_output, shard_from_env,
                                        shard_paths, wait_for_parts)
from palm.engine.quantize import (DEFAULT_CALIB_IMAGES, DEFAULT_MAX_METRIC_DROP, Comparison,
                                  quantize_to_folder)
from palm.engine.runner import prepare_demo_data, run_training
from palm.errors import BadConfig, BadData, OutputRefused
from palm.io_utils import atomic_path, output_lock
from palm.models import IMAGENET_WEIGHTS, build_model, fetch_imagenet, published_weights
from palm.models.convert import (check_convertible, convert_state_dict, head_size,
                                 read_pytorch_weights)
from palm.models.imagenet import file_md5, weights_dir
from palm.torch_weights import checkpoint_format
from palm.viz.cam import check_max_side, target_index, write_cam_overlays
from palm.weights import trust_checkpoints


def run_train(config: dict[str, Any], *, demo: bool = False, progress: bool = True,
              trust_checkpoint: bool = False, next_commands: tuple[str, str] | None = None
              ) -> Path:
    """Train with a resolved config (palm.config); returns the run folder.

    Args:
        demo: make (once) the synthetic set at config["data_root"] first; the run may then
            replace an earlier demo run.
        next_commands: how to run eval and predict, for the hint printed after a demo.
    """
    if isinstance(config.get("augment"), str):  # `--augment` text (a mapping stays as it is)
        config = {**config, "augment": parse_augment(config["augment"])}
    if demo:
        prepare_demo_data(config["data_root"])
    with trust_checkpoints(trust_checkpoint):
        run_dir = run_training(config, overwrite=demo, progress=progress)
    if demo and next_commands:
        eval_command, predict_command = next_commands
        ckpt = run_dir / "best.pdparams"
        print(f"next: {eval_command} --checkpoint {ckpt} --data-root {config['data_root']} "
              f"--output {run_dir}/eval --exist-ok\n"
              f"      {predict_command} --checkpoint {ckpt} --input "
              f"{config['data_root']}/PALM-Validation400 --output {run_dir}/predictions.csv")
    return run_dir



def predict_interrupted_hint(output: str) -> str:
    """What to do after Ctrl-C stopped a prediction into `output`."""
    rows_at = (f"the parts beside {output}" if RANK_ENV in os.environ
               else journal_path(Path(output)))
    return f"interrupted; finished rows are in {rows_at}: rerun with --resume"


def run_predict(checkpoint: str, input: str, *, output: str = "predictions.csv",
                batch_size: int = 16, num_workers: int = 2, threshold: float | None = None,
                tta: bool = False, resume: bool = False, device: str = "auto",
                progress: bool = True, cam: str | None = None, merge_timeout: float = 3600,
                engine: str = "auto", precision: str | None = None,
                trust_checkpoint: bool = False) -> PredictSummary:
    """Predict the images of `input` (a file or a folder) into the CSV `output`; under
    paddle.distributed.launch each rank predicts its share and rank 0 merges them.
    `cam`: also write a Grad-CAM overlay per image to this folder."""
    check_options({"batch_size": batch_size, "num_workers": num_workers,
                   "threshold": threshold, "merge_timeout": merge_timeout})
    with trust_checkpoints(trust_checkpoint):
        select_device(device)
        shard = shard_from_env()
        all_paths = list_images(input)
        if not all_paths:
            raise BadData(f"no images in {input}")
        check_output(output, all_paths)  # before the model is loaded; checked again under the lock
        paths = shard_paths(all_paths, shard)
        if shard.distributed:
            clear_marker(output, shard)
            if resume:
                seed_part_from_output(output, shard, paths)
        rows_file = part_path(output, shard) if shard.distributed else output
        # Grad-CAM needs gradients, so cam keeps one dygraph model for both jobs
        chosen = ("dygraph" if cam and engine == "auto" and precision in (None, "fp32")
                  else engine)
        predictor = load_predictor(checkpoint, engine=chosen, n_images=len(paths),
                                   precision=precision)
        model, meta = batch_model(predictor), predictor.meta
        summary = predict_to_csv(model, meta, paths, rows_file, batch_size=batch_size,
                                 num_workers=num_workers, tta=tta, threshold=threshold,
                                 resume=resume, progress=progress,
                                 checkpoint_sha256=weights_sha256(checkpoint),
                                 precision=predictor.precision)
        print(f"rank {shard.rank}: {summary.line()}" if shard.distributed else summary.line())
        if shard.distributed:
            mark_done(output, shard, paths, summary)
        if cam:
            if predictor.engine != "dygraph":
                model, meta = load_checkpoint_model(checkpoint)
            # bad files are already reported in the CSV's error column
            written, _ = write_cam_overlays(model, meta, paths, cam, batch_size=batch_size,
                                            root=input if Path(input).is_dir() else None)
            print(f"{written} Grad-CAM overlays written to {cam}")
        if shard.distributed and shard.rank == 0:
            # rank 0: wait for every rank's part, then write OUTPUT from them
            markers = wait_for_parts(output, all_paths, shard.world_size, timeout=merge_timeout)
            summary = merge_parts(output, all_paths, shard.world_size, markers)
            print(f"merged {shard.world_size} parts: {summary.line()}")
    return summary


def run_cam(checkpoint: str, input: str, output: str, *, target_layer: str | None = None,
            target: str | None = None, batch_size: int = 8, max_side: int = 0,
            alpha: float = 0.4, trust_checkpoint: bool = False) -> int:
    """Grad-CAM overlays of the images of `input` into the folder `output`; bad images are
    reported on stderr and skipped. `target`: the class, grade or label to explain, by name
    or index (`palm.viz.cam.target_index`); default the predicted class / the top label."""
    check_options({"batch_size": batch_size, "max_side": max_side, "alpha": alpha})
    check_max_side(max_side)
    src = Path(input)
    paths = list_images(src)
    if not paths:
        raise BadData(f"no images in {src}")
    with trust_checkpoints(trust_checkpoint):
        model, meta = load_checkpoint_model(checkpoint)
    class_index = target_index(target, meta)
    written, errors = write_cam_overlays(
        model, meta, paths, output,
        root=src if src.is_dir() else None,
        progress=lambda it: tqdm(it, total=len(paths), desc="grad-cam", unit="img"),
        target_layer=target_layer, class_index=class_index,
        batch_size=batch_size, max_side=max_side or None, alpha=alpha,
    )
    for err in errors:
        print(err, file=sys.stderr)
    print(f"{written} overlays written to {output}; {len(errors)} errors")
    return 0


def run_export(checkpoint: str, output: str, *, verify: bool = True,
               trust_checkpoint: bool = False) -> Path:
    """Export `checkpoint` for Paddle Inference into the folder `output`, checked against the
    checkpoint's logits unless not `verify`."""
    check = (lambda folder, model, meta: probe_export(folder, DygraphPredictor(model, meta))
             ) if verify else None
    with trust_checkpoints(trust_checkpoint):
        out = export_checkpoint(checkpoint, output, verify=check)
    if verify:
        print("verified: the inference predictor matches the checkpoint's logits")
    print(f"exported {checkpoint} -> {out}")
    return out



def _calibration_paths(calib_dir: str | None, data_root: str | None,
                       val_csv: str | None) -> list[str]:
    grading = None if calib_dir else find_grading_layout(data_root)
    if calib_dir:
        folder = Path(calib_dir)
    elif grading is not None:  # APTOS-2019, IDRiD: their training photos
        folder = grading.train.images
    elif data_root and val_csv:  # as in eval: the folder the list's paths lead into
        raise BadConfig(f"with val_csv, data_root {data_root} is where its images live, not a "
                        "download to calibrate on: give calib_dir (photos to calibrate on)",
                        param=("val_csv", "data_root", "calib_dir"))
    elif data_root:
        folder = find_palm_layout(data_root).train_dir
    else:
        raise BadConfig("give calib_dir or data_root (PALM, APTOS-2019, IDRiD) for the "
                        "calibration images", param=("calib_dir", "data_root"))
    paths = list_images(str(folder))
    if not paths:
        raise BadData(f"{folder}: no images to calibrate on")
    return paths


def run_quantize(checkpoint: str, output: str, *, data_root: str | None = None,
                 calib_dir: str | None = None, val_dir: str | None = None,
                 val_csv: str | None = None, calib_images: int = DEFAULT_CALIB_IMAGES,
                 max_metric_drop: float = DEFAULT_MAX_METRIC_DROP, force: bool = False,
                 batch_size: int = 8, num_workers: int = 0,
                 trust_checkpoint: bool = False) -> Comparison:
    """An INT8 export of `checkpoint` in `output`, written only if its task's metric on the
    labelled images (palm.engine.quantize.TASK_METRICS) is within `max_metric_drop` of
    fp32's (or `force`)."""
    check_options({"batch_size": batch_size, "num_workers": num_workers})
    if calib_images < 1:
        raise BadConfig(f"calib_images {calib_images}: must be at least 1", param="calib_images")
    if not math.isfinite(max_metric_drop):
        raise BadConfig(f"max_metric_drop {max_metric_drop}: must be a finite number",
                        param="max_metric_drop")
    if not (data_root or val_dir or val_csv):  # found out before quantizing
        raise BadConfig("give data_root, val_dir or val_csv: labelled images to validate "
                        "the INT8 model on", param=("data_root", "val_dir", "val_csv"))
    paths = _calibration_paths(calib_dir, data_root, val_csv)

    def validation_set(meta: dict[str, Any]):
        return data_sources.evaluation_set(transform=eval_transform(meta),
                                           classes=meta.get("class_names") or None,
                                           data_root=None if val_dir else data_root,
                                           val_dir=val_dir, val_csv=val_csv,
                                           multilabel=meta.get("task") == "multilabel")

    with trust_checkpoints(trust_checkpoint), output_lock(Path(output), folder=True):
        result = quantize_to_folder(checkpoint, output, paths, validation_set,
                                    calib_images=calib_images, max_metric_drop=max_metric_drop,
                                    force=force, batch_size=batch_size, num_workers=num_workers)
    print(f"INT8 {result.metric} drop {result.metric_drop:+.4f}, speed "
          f"{result.speed['int8'] / result.speed['fp32']:.2f}x fp32 -> {output}")
    return result


def run_cache(action: str, cache_dir: str | None = None) -> tuple[int, int]:
    """`info` or `clear` the image cache (default: the one training uses); returns its
    entries and bytes (before clearing)."""
    folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    if action == "clear":
        entries, size = clear_cache(folder)
        print(f"{folder}: removed {entries} cached images ({size / 1e6:.1f} MB)")
    elif action == "info":
        entries, size = cache_usage(folder)
        print(f"{folder}: {entries} cached images, {size / 1e6:.1f} MB "
              f"(limit {cache_size_setting() / 1e9:g} GB; $PALM_CACHE_SIZE_GB changes it)")
        files = [published_weights(name).path for name in IMAGENET_WEIGHTS]
        held = [path for path in files if path.is_file()]
        print(f"{weights_dir()}: {len(held)} ImageNet weight files, "
              f"{sum(path.stat().st_size for path in held) / 1e6:.1f} MB (palm weights list)")
    else:
        raise BadConfig(f"action {action!r}: choose info or clear", param="action")
    return entries, size


def run_weights(action: str, models: list[str] | None = None, all: bool = False) -> int:
    """`list` the networks with Paddle's ImageNet weights and which are cached, `download`
    them into the cache, or `verify` the cached copies against the published MD5. Returns
    the exit code: 1 when `verify` found a wrong file."""
    unknown = sorted(set(models or ()) - set(IMAGENET_WEIGHTS))
    if unknown:
        raise BadConfig(f"no ImageNet weights published for {', '.join(unknown)}; choose from "
                        f"{', '.join(IMAGENET_WEIGHTS)}", param="models")
    names = list(models or IMAGENET_WEIGHTS)
    if action == "download" and not (models or all):
        raise BadConfig("name the networks to download (models) or ask for all",
                        param=("models", "all"))
    print(f"weights folder: {weights_dir()}")
    if action == "list":
        for name in names:
            weights = published_weights(name)
            held = (f"on disk, {weights.path.stat().st_size / 1e6:.1f} MB"
                    if weights.path.is_file() else "not cached")
            print(f"{name:20s} {held:20s} {weights.shown_url}")
        # listing reads no file (the VGGs alone are 1 GB); a file placed by hand is unchecked
        print("files on disk are checked against Paddle's MD5 when loaded; `palm weights "
              "verify` checks them now")
    elif action == "download":
        for name in names:
            print(f"{name}: {fetch_imagenet(name)}")
    elif action == "verify":
        return _verify_weights(names)
    else:
        raise BadConfig(f"action {action!r}: choose list, download or verify", param="action")
    return 0


def _verify_weights(names: list[str]) -> int:
    wrong = 0
    for name in names:
        weights = published_weights(name)
        if not weights.path.is_file():
            print(f"{name}: not cached")
            continue
        md5 = file_md5(weights.path)
        wrong += md5 != weights.md5
        print(f"{name}: {weights.path} MD5 {'ok' if md5 == weights.md5 else 'WRONG'} ({md5}"
              + (")" if md5 == weights.md5 else f", Paddle publishes {weights.md5}; "
                 f"`palm weights download --model {name}` replaces it)"))
    return 1 if wrong else 0


def run_convert(model: str, input: str, output: str, *, num_classes: int | None = None,
                exist_ok: bool = False) -> Path:
    """A PyTorch checkpoint (`.pth`/`.pt`/`.safetensors`, e.g. torchvision's) of `model`'s
    architecture as a Paddle `.pdparams` for palm's network, its head kept: afterwards
    `build_model(model, num_classes=N)` loads OUTPUT strictly (N: the checkpoint's classes,
    printed). Torch is not needed."""
    out = Path(output)
    if out.suffix != ".pdparams":
        raise BadConfig(f"output must end in .pdparams, got {output}", param="output")
    if out.exists() and not exist_ok:
        raise OutputRefused(f"{out} exists; pass exist_ok to replace it", param="output")
    if num_classes is not None and num_classes < 1:
        raise BadConfig(f"num_classes must be at least 1, got {num_classes} (leave it out to "
                        "read it from the checkpoint's classifier)", param="num_classes")
    if checkpoint_format(input) in ("paddle", "unknown"):
        raise BadConfig(f"{input} is not a PyTorch checkpoint or safetensors file (a Paddle "
                        ".pdparams, or damaged): give Paddle weights to --pretrained as they "
                        "are", param="input")
    check_convertible(model)
    state = read_pytorch_weights(input)
    classes = num_classes or head_size(state, model)
    network = build_model(model, num_classes=classes)
    conversion = convert_state_dict(state, network, model)
    with atomic_path(out) as tmp:
        paddle.save({k: paddle.to_tensor(v) for k, v in conversion.state.items()}, tmp)
    print(f"{input} -> {out}: {model} with {classes} classes, {conversion.summary()}")
    print(f"load it with build_model({model!r}, num_classes={classes}), or train from it "
          f"with --model {model} --pretrained {out}")
    return out


def run_synth(output: str, *, task: str = "binary", n_train: int = 400,
              n_val: int | None = None, image_size: str = "512", difficulty: float = 0.5,
              seed: int = 0, quality: int = 92, num_workers: int = 0) -> Path:
    """A synthetic PALM data set under `output` (palm.data.synth); for task "ordinal" graded
    DR photos in the APTOS-2019 layout (palm.data.synth_grading); for "multilabel" photos
    with several findings and their CSV lists (palm.data.synth_multilabel)."""
    if not 0.0 <= difficulty <= 1.0:
        raise BadConfig(f"difficulty must be in 0..1, got {difficulty}", param="difficulty")
    if task == "multilabel":
        n_val = 200 if n_val is None else n_val
        root = make_multilabel_dataset(output, n_train, n_val, image_size, difficulty, seed,
                                       num_workers)
        print(f"wrote {n_train} training + {n_val} validation images with findings "
              f"{', '.join(FINDINGS)} (train.csv, val.csv) under {root}")
        return root
    if task == "ordinal":
        if n_val is not None:
            raise BadConfig("n_val: the APTOS-2019 layout has no labelled validation images "
                            "(training carves val_fraction of the training images)",
                            param="n_val")
        root = make_grading_dataset(output, n_train, image_size, difficulty, seed, num_workers)
        print(f"wrote {n_train} graded training images (APTOS-2019 layout) under {root}")
        return root
    n_val = 400 if n_val is None else n_val
    root = make_palm_dataset(output, n_train, n_val, image_size, difficulty, seed, quality,
                             num_workers)
    print(f"wrote {n_train} training + {n_val} validation images under {root}")
    return root

