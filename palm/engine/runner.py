"""`run_training(cfg)`: wire a resolved config into data, model, optimizer and `fit`.

This is the one place that reads the config dict; everything it calls takes explicit
arguments (palm.engine.train, .optim, .sources, .device).
"""
from __future__ import annotations

import math
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import paddle
import pandas as pd

from palm.config import DEMO_SYNTH, save_config
from palm.data import (balanced_sample_weights, build_loader, build_transform, describe_augment,
                       resolve_augment)
from palm.data.synth import make_palm_dataset
from palm.data import sources
from palm.data.splits import carve_split
from palm.engine.checkpoint import load_meta, recover_folder
from palm.engine.device import DistInfo, init_distributed, seed_everything, select_device
from palm.engine.finetune import (backbone_freezer, create_optimizer_state, head_parameter_names,
                                  parameter_groups)
from palm.engine.optim import build_optimizer, build_scheduler
from palm.engine.losses import auto_pos_weight, resolve_class_weights, training_loss
from palm.engine.selection import tune_checkpoint_cut_points
from palm.engine.train import (RunState, Selection, fit, load_resume_state, selection_key,
                               selection_score)
from palm.errors import BadCheckpoint, BadConfig, OutputRefused
from palm.io_utils import next_free_path, output_lock, read_csv, write_csv_atomic
from palm.models import build_grading_model, load_pretrained, pretrained_weights_file
from palm.predictions import ordinal_loss_of
from palm.provenance import provenance

RUN_FILES = ("last.pdparams", "best.pdparams", "metrics.csv")
# how one command ran, not what the run is: config.yaml leaves them out, so `train -c
# RUN/config.yaml` starts a new run like the original rather than resuming into nothing
RUN_CONTROL_KEYS = ("resume", "exist_ok")


def prepare_demo_data(root: str | Path, log: Callable[[str], None] = print) -> Path:
    """Create the synthetic PALM set for --demo once; later runs reuse it."""
    root = Path(root)
    marker = root / "PALM-Validation-GT" / "labels.csv"
    if marker.is_file():
        return root
    log(f"demo: drawing {DEMO_SYNTH['n_train']} + {DEMO_SYNTH['n_val']} synthetic fundus photos "
        f"into {root} (once) ...")
    return make_palm_dataset(root, num_workers=min(4, os.cpu_count() or 1), **DEMO_SYNTH)


def holds_run(folder: Path) -> bool:
    return any((folder / name).exists() for name in RUN_FILES)


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool, repair: bool = True,
                  log: Callable[[str], None] = print) -> None:
    """Refuse to mix a new run into an old one; require `last` when resuming.

    With `repair` (the one process that writes the folder), a checkpoint save interrupted
    by a crash is first completed or dropped and its temporary files removed, so the folder
    holds the last complete epoch.
    """
    if repair and run_dir.is_dir():
        for note in recover_folder(run_dir):
            log(f"note: {note}")
    if resume:
        if not (run_dir / "last.pdparams").is_file():
            raise FileNotFoundError(f"{run_dir / 'last.pdparams'}: nothing to resume from "
                                    "(no epoch was saved; start again without --resume)")
        return
    existing = [name for name in RUN_FILES if (run_dir / name).exists()]
    if existing and not overwrite:
        raise OutputRefused(
            f"{run_dir} already holds a run ({', '.join(existing)}); pass resume to continue "
            "it, exist_ok to start again in it, or another output",
            param=("resume", "exist_ok", "output"))


def build_train_loader(dataset, batch_size: int, num_workers: int, seed: int, dist: DistInfo,
                       sampler: str = "shuffle"):
    """Seeded shuffling (or balanced draws) in one process; a DistributedBatchSampler shard
    per rank otherwise."""
    if not dist.enabled:
        weights = balanced_sample_weights(dataset.labels) if sampler == "balanced" else None
        return build_loader(dataset, batch_size, train=True, num_workers=num_workers, seed=seed,
                            sample_weights=weights)
    if sampler == "balanced":
        raise BadConfig("sampler balanced: not supported with several processes", param="sampler")
    sampler = paddle.io.DistributedBatchSampler(dataset, batch_size, num_replicas=dist.world_size,
                                                rank=dist.rank, shuffle=True, drop_last=True)
    return build_loader(dataset, batch_size, train=True, num_workers=num_workers,
                        batch_sampler=sampler)


def build_network(name: str, num_outputs: int, image_size: int,
                  model_kwargs: dict[str, Any], ordinal_loss: str = "ce"
                  ) -> tuple[paddle.nn.Layer, dict[str, Any]]:
    """build_model (build_grading_model for a coral or regression grading run: `num_outputs`
    grades), and the kwargs to save so eval/predict rebuild the same network.

    A network whose layers depend on the input side records it as `.image_size` (lenet sizes
    its first linear layer from it); such a network is built for the configured size.
    """
    kwargs = dict(model_kwargs)
    model = build_grading_model(name, num_outputs, ordinal_loss, **kwargs)
    if getattr(model, "image_size", image_size) != image_size:
        kwargs["image_size"] = image_size
        model = build_grading_model(name, num_outputs, ordinal_loss, **kwargs)
    return model, kwargs


def resolve_pos_weight(value: float | str | None, labels, num_outputs: int, task: str,
                       names: list[str]) -> float | list[float] | None:
    """BCE pos_weight: a number, or "auto" (negatives / positives; per label for a
    multi-label task)."""
    if value is None:
        return None
    if task == "multilabel":
        return auto_pos_weight(labels, names) if value == "auto" else [float(value)] * num_outputs
    if num_outputs != 1:
        raise BadConfig("pos_weight applies to binary (one-logit) and multi-label training only")
    return auto_pos_weight(labels) if value == "auto" else float(value)


def check_multilabel_settings(cfg: dict[str, Any]) -> None:
    """Settings that need one class per image, refused for a multi-label task."""
    for key, plain in (("class_weights", (None, "none")), ("sampler", ("shuffle",)),
                       ("select_on", ("val",))):
        if cfg[key] not in plain:
            raise BadConfig(f"{key} {cfg[key]}: not available for a multi-label task (use "
                            "pos_weight to balance each label)", param=key)


def resolved_augment(cfg: dict[str, Any]) -> dict[str, Any]:
    """The config's augmentation in full: the fundus preset for PALM data, natural (nothing
    that changes what an image shows) for folders and CSVs, with the config's overrides."""
    palm = sources.is_palm_layout(cfg["data_root"], cfg["train_csv"], cfg["val_csv"])
    return resolve_augment(cfg["augment"], "fundus" if palm else "natural")


def build_datasets(cfg: dict[str, Any]):
    """(train set, validation set) with the train/eval transforms the config asks for."""
    return sources.training_sets(
        train_transform=build_transform(cfg["image_size"], True, cfg["normalize"],
                                        resolved_augment(cfg), cfg["fundus_crop"]),
        val_transform=build_transform(cfg["image_size"], False, cfg["normalize"],
                                      fundus_crop=cfg["fundus_crop"]),
        data_root=cfg["data_root"], train_dir=cfg["train_dir"], val_dir=cfg["val_dir"],
        train_csv=cfg["train_csv"], val_csv=cfg["val_csv"], skip_bad=cfg["skip_bad"],
        cache_dir=cfg["cache_dir"], max_pixels=cfg["max_pixels"],
        cache_size_gb=cfg["cache_size_gb"], allow_outside_paths=cfg["allow_outside_paths"],
        class_names=cfg["class_names"], positive_class=cfg["positive_class"],
        val_fraction=cfg["val_fraction"], seed=cfg["seed"], label_columns=cfg["label_columns"],
        multilabel=cfg["task"] == "multilabel")


def carve_holdout(train_set, fraction: float, seed: int, transform):
    """(training part, holdout part) of `train_set`: palm.data.splits' stratified, seeded
    holdout, read with the evaluation `transform` (no augmentation).

    Raises:
        BadConfig: too few images of some class for the split.
    """
    return carve_split(train_set, fraction, seed, transform, name="holdout_fraction")


def check_same_val_split(val_set, run_dir: Path) -> None:
    """A resumed run must validate on the images it validated on: the carve (seed,
    val_fraction, the training list) must give RUN/val_split.csv again."""
    recorded = Path(run_dir) / "val_split.csv"
    if not recorded.is_file():
        return  # interrupted before the split was written: nothing was validated yet
    listed = read_csv(recorded)["path"].astype(str)
    before = {os.path.normpath(os.path.join(run_dir, p)) for p in listed}
    now = {os.path.normpath(path) for path, _ in val_set.samples}
    if before != now:
        raise BadConfig(f"{recorded}: resuming would carve another validation split "
                        f"({len(now - before)} of its {len(now)} images differ; seed, val_fraction "
                        "or the training list changed); resume with the run's settings",
                        param=("seed", "val_fraction"))


def order_grades(task: str | None, train_set, val_set) -> None:
    """Grades named by numbers are ordered as numbers (folders 0..10 sort as 0, 1, 10, 2)."""
    classes = list(train_set.classes)
    if task == "ordinal" and all(c.isdigit() for c in classes):
        order = sorted(classes, key=int)
        train_set.set_class_order(order)
        val_set.set_class_order(order)


def write_val_split(val_set, run_dir: Path) -> Path:
    """RUN/val_split.csv (path relative to the run folder, leading into the data root;
    label): the carved validation images, so `palm eval --val-csv RUN/val_split.csv
    --data-root ROOT` scores the same ones."""
    path = Path(run_dir) / "val_split.csv"
    write_csv_atomic(path, pd.DataFrame(
        [(Path(os.path.relpath(file, run_dir)).as_posix(), label) for file, label in val_set.samples],
        columns=["path", "label"]))
    return path


def build_selection(cfg: dict[str, Any], train_set, val_set):
    """(training set, Selection): what picks `best`, as the config's select_on says."""
    record = {"select_on": cfg["select_on"]}
    if cfg["select_on"] == "val":
        return train_set, Selection([path for path, _ in val_set.samples], record)
    train_part, holdout = carve_holdout(train_set, cfg["holdout_fraction"], cfg["seed"],
                                        val_set.transform)
    record.update(holdout_fraction=cfg["holdout_fraction"], seed=cfg["seed"],
                  images=len(holdout))
    loader = build_loader(holdout, cfg["batch_size"], train=False, num_workers=cfg["num_workers"])
    return train_part, Selection([path for path, _ in holdout.samples], record, loader)


def uses_parameter_groups(cfg: dict[str, Any]) -> bool:
    """Whether the fine-tuning settings give parameters different rates or decays (without
    them every parameter is in one group, as runs before them trained)."""
    return (cfg["head_lr_mult"] != 1 or cfg["layer_decay"] is not None
            or not cfg["decay_norm_and_bias"])


def build_optimization(cfg: dict[str, Any], model: paddle.nn.Layer, steps_per_epoch: int,
                       head: set[str]):
    """(optimizer, per-step LR scheduler) as the config asks; `head`: the parameters
    palm.engine.finetune counts as the classifier."""
    scheduler = build_scheduler(cfg["scheduler"], cfg["lr"], epochs=cfg["epochs"],
                                steps_per_epoch=steps_per_epoch, warmup_epochs=cfg["warmup_epochs"],
                                step_size=cfg["step_size"], gamma=cfg["gamma"])
    parameters = model.parameters()
    if uses_parameter_groups(cfg):
        parameters = parameter_groups(model, head, weight_decay=cfg["weight_decay"],
                                      head_lr_mult=cfg["head_lr_mult"],
                                      layer_decay=cfg["layer_decay"],
                                      decay_norm_and_bias=cfg["decay_norm_and_bias"])
    optimizer = build_optimizer(cfg["optimizer"], parameters, scheduler,
                                momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    return optimizer, scheduler


def check_freezing_allowed(cfg: dict[str, Any], several_processes: bool) -> None:
    """freeze_epochs changes which parameters take gradients between epochs: a compiled
    graph and DataParallel both fix that when they start (the backbone would stay frozen)."""
    if cfg["freeze_epochs"] and cfg["compile"]:
        raise BadConfig("freeze_epochs: not supported with --compile (the compiled graph keeps "
                        "the backbone frozen after the frozen epochs)")
    if cfg["freeze_epochs"] and several_processes:
        raise BadConfig("freeze_epochs: not supported with several processes (DataParallel "
                        "fixes the trainable parameters when it starts)")


def check_resume_matches(params_path: Path, model_name: str, num_outputs: int,
                         ordinal_loss: str = "ce") -> None:
    """Resuming with another network, class count or ordinal loss would load mismatched
    weights."""
    saved = load_meta(params_path)
    if (saved["model"], saved["num_classes"]) != (model_name, num_outputs):
        raise BadCheckpoint(f"{params_path}: saved for {saved['model']} with {saved['num_classes']} "
                         f"output(s); this run builds {model_name} with {num_outputs}")
    if ordinal_loss_of(saved) != ordinal_loss:
        raise BadCheckpoint(f"{params_path}: trained with ordinal_loss {ordinal_loss_of(saved)}; "
                            f"this run asks for {ordinal_loss}", param="ordinal_loss")


def check_ordinal_loss(cfg: dict[str, Any], task: str | None) -> None:
    """ordinal_loss other than ce needs grades, and refuses the settings that weigh one
    softmax (class_weights, label_smoothing)."""
    loss = cfg["ordinal_loss"]
    if loss == "ce":
        return
    if task not in (None, "ordinal"):
        raise BadConfig(f"ordinal_loss {loss}: applies to task ordinal (grades 0..K-1), not "
                        f"task {task}", param=("ordinal_loss", "task"))
    for key, plain in (("class_weights", (None, "none")), ("label_smoothing", (0, 0.0))):
        if cfg[key] not in plain:
            raise BadConfig(f"{key}: applies to ordinal_loss ce, not {loss}",
                            param=(key, "ordinal_loss"))


def compile_network(model: paddle.nn.Layer) -> paddle.nn.Layer:
    """`model` with its forward compiled by paddle.jit.to_static.

    SOT mode (full_graph=False) runs what it cannot trace as Python. When this was added,
    all 29 registered networks trained three steps and evaluated compiled exactly as eager
    (within 5e-6); the suite keeps ResNet18 and GoogLeNet (auxiliary heads) under test.
    Parameter names, and so checkpoints, are unchanged. `run_training` does not combine it
    with DataParallel, which it was not tested with.
    """
    return paddle.jit.to_static(model, full_graph=False)


def run_dir_for(cfg: dict[str, Any]) -> Path:
    """The run folder: --output, else runs/MODEL, or runs/MODEL-2, -3, ... when that holds a
    run that is neither resumed nor reused (--exist-ok)."""
    if cfg["output"]:
        return Path(cfg["output"])
    default = Path("runs") / cfg["model"]
    if cfg["resume"] or cfg["exist_ok"]:
        return default
    return next_free_path(default, holds_run)


def run_training(cfg: dict[str, Any], overwrite: bool = False, log: Callable[[str], None] = print,
                 progress: bool = True) -> Path:
    """Train as `cfg` (a validated palm.config dict) says; return the run folder.

    The run folder is locked for the whole run (RUN_DIR/.lock, palm.io_utils.output_lock):
    a second training into it is refused at once, naming this process.

    Args:
        overwrite: allow writing into a folder that already holds a run (the demo does;
            `exist_ok` in the config does the same).
    """
    # resolved once, so the lock, the checks and config.yaml name the same folder
    cfg = {**cfg, "output": str(run_dir_for(cfg))}
    overwrite = overwrite or bool(cfg["exist_ok"])
    if cfg["resume"] and not Path(cfg["output"]).is_dir():
        # before the lock, which would create the folder and its parents
        raise FileNotFoundError(f"{cfg['output']}: no such run folder; nothing to resume")
    check_freezing_allowed(cfg, paddle.distributed.get_world_size() > 1)
    check_ordinal_loss(cfg, cfg["task"])  # an explicit task, before any image is read
    # the first process of a multi-process run holds the lock for all of them
    first = paddle.distributed.get_rank() == 0
    with output_lock(cfg["output"], folder=True) if first else nullcontext():
        return _run_training(cfg, overwrite, log, progress)


def _run_training(cfg: dict[str, Any], overwrite: bool, log: Callable[[str], None],
                  progress: bool) -> Path:
    dist = init_distributed()
    device = select_device(cfg["device"], dist.local_rank)
    use_amp = bool(cfg["amp"]) and device == "gpu"
    if cfg["amp"] and not use_amp:
        log("note: --amp needs a GPU; training in float32")
    seed_everything(cfg["seed"])
    run_dir = run_dir_for(cfg)
    # every rank checks (none may start alone); only the main process repairs
    check_run_dir(run_dir, cfg["resume"], overwrite, repair=dist.is_main, log=log)
    # config.yaml records what the run used, not "null = by data kind"
    cfg = {**cfg, "augment": resolved_augment(cfg)}

    train_set, val_set = build_datasets(cfg)
    carved = getattr(val_set, "carved_from", None)
    if carved and cfg["resume"]:
        check_same_val_split(val_set, run_dir)
    order_grades(cfg["task"], train_set, val_set)
    classes = list(train_set.classes)
    task = sources.resolve_task(cfg["task"], classes, getattr(train_set, "task", None))
    if task == "ordinal" and not cfg["referable_grade"] < len(classes):
        raise BadConfig(f"referable_grade {cfg['referable_grade']}: the data's grades are "
                        f"0..{len(classes) - 1}", param="referable_grade")
    if task == "multilabel":
        check_multilabel_settings(cfg)
    check_ordinal_loss(cfg, task)
    ordinal_loss = cfg["ordinal_loss"] if task == "ordinal" else "ce"
    train_set, selection = build_selection(cfg, train_set, val_set)
    num_outputs = sources.num_outputs_for(classes, task)
    model, model_kwargs = build_network(cfg["model"], num_outputs, cfg["image_size"],
                                        cfg["model_kwargs"], ordinal_loss)
    if cfg["pretrained"] and not cfg["resume"]:
        load_pretrained(model, pretrained_weights_file(cfg["pretrained"], cfg["model"]),
                        cfg["model"])
    train_loader = build_train_loader(train_set, cfg["batch_size"], cfg["num_workers"], cfg["seed"],
                                      dist, cfg["sampler"])
    val_loader = build_loader(val_set, cfg["batch_size"], train=False, num_workers=cfg["num_workers"])
    # the classifier's parameters, for the settings that treat it apart
    head = (head_parameter_names(model, cfg["model"], model_kwargs)
            if uses_parameter_groups(cfg) or cfg["freeze_epochs"] else set())
    optimizer, scheduler = build_optimization(cfg, model, len(train_loader), head)
    before_epoch = None
    if cfg["freeze_epochs"]:
        before_epoch = backbone_freezer(model, head, cfg["freeze_epochs"])
        create_optimizer_state(optimizer, model)
        log(f"only the classifier ({', '.join(sorted(head))}) trains in epochs 1-"
            f"{min(cfg['freeze_epochs'], cfg['epochs'])}"
            + ("; the rest stays frozen for the whole run" if cfg["freeze_epochs"] >= cfg["epochs"]
               else ""))
    scaler = paddle.amp.GradScaler() if use_amp else None
    state = RunState()
    if cfg["resume"]:
        check_resume_matches(run_dir / "last.pdparams", cfg["model"], num_outputs, ordinal_loss)
        state = load_resume_state(run_dir / "last.pdparams", model, optimizer, scheduler, scaler)
        log(f"resuming {run_dir} after epoch {state.epoch}")
    if cfg["compile"] and dist.enabled:
        log("note: --compile is not used with several processes; training uncompiled")
    elif cfg["compile"]:
        model = compile_network(model)
    if dist.enabled:
        model = paddle.DataParallel(model)
    pos_weight = resolve_pos_weight(cfg["pos_weight"], train_set.labels, num_outputs, task, classes)
    class_weights = resolve_class_weights(cfg["class_weights"], train_set.labels, classes)
    multilabel = task == "multilabel"
    loss_fn = training_loss(num_outputs, ordinal_loss, pos_weight=pos_weight,
                            aux_weight=cfg["aux_weight"], label_smoothing=cfg["label_smoothing"],
                            class_weights=class_weights, multilabel=multilabel)
    # validation reports the loss without smoothing, comparable between runs with and without
    val_loss_fn = training_loss(num_outputs, ordinal_loss, pos_weight=pos_weight,
                                aux_weight=cfg["aux_weight"], class_weights=class_weights,
                                multilabel=multilabel)
    positive = sources.positive_class_of(classes)
    cfg["class_names"], cfg["positive_class"], cfg["task"] = classes, positive, task
    meta = {"model": cfg["model"], "num_classes": num_outputs, "class_names": classes,
            "task": task, "referable_grade": cfg["referable_grade"],
            **({"ordinal_loss": ordinal_loss} if task == "ordinal" else {}),
            "positive_class": positive,
            "image_size": cfg["image_size"], "normalize": cfg["normalize"],
            "fundus_crop": cfg["fundus_crop"], "threshold": cfg["threshold"],
            "model_kwargs": model_kwargs}
    if dist.is_main:
        data_files = [path for path, _ in [*train_set.samples, *val_set.samples]]
        save_config({k: v for k, v in cfg.items() if k not in RUN_CONTROL_KEYS}, run_dir,
                    provenance(device, data_files))
        if carved:
            log(f"validation: {len(val_set)} of the {carved} training images (val_fraction "
                f"{cfg['val_fraction']}, seed {cfg['seed']}), listed in "
                f"{write_val_split(val_set, run_dir)}")
        n_params = sum(math.prod(p.shape) for p in model.parameters() if not p.stop_gradient)
        log(f"{cfg['model']} ({n_params / 1e6:.2f} M parameters, {num_outputs} output(s)) on "
            f"{device}{f' x{dist.world_size}' if dist.enabled else ''}: {len(train_set)} training / "
            f"{len(val_set)} validation images"
            + (f" / {len(selection.files)} holdout images choosing the best epoch"
               if selection.loader is not None else "") + f", classes {classes}"
            + (f", positive class {positive!r}" if positive else "") + f" -> {run_dir}")
        log(f"augmentation {describe_augment(cfg['augment'])}")
    state = fit(model, loss_fn, optimizer, train_loader, val_loader, epochs=cfg["epochs"],
                run_dir=run_dir, meta=meta, scheduler=scheduler, scaler=scaler, state=state,
                selection=selection, is_main=dist.is_main, progress=progress, log=log,
                before_epoch=before_epoch, val_loss_fn=val_loss_fn)
    if dist.is_main and ordinal_loss == "regression" and (run_dir / "best.pdparams").is_file():
        log(tune_checkpoint_cut_points(run_dir / "best.pdparams"))
    if dist.is_main and state.history:
        best = max(state.history, key=lambda row: selection_key(row, selection.prefix))
        metric, score = selection_score(best, selection.prefix)
        log(f"done: best epoch {best['epoch']} chosen by {metric} {score:.4f} (val accuracy "
            f"{best['val_accuracy']:.4f}); checkpoints in {run_dir}")
    return run_dir
