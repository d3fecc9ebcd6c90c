"""Checkpoints: `NAME.pdparams` (+ `NAME.pdopt`) with a `NAME.json` sidecar.

The sidecar holds everything eval/predict need to rebuild the model and its preprocessing,
so a checkpoint path alone is enough, and the size and SHA-256 of the files beside it:
    {"model": "resnet50", "num_classes": 1, "class_names": ["non-PM", "PM"],
     "image_size": 224, "normalize": "minus_one_one", "fundus_crop": false,
     "threshold": 0.5, "temperature": 1.0, "epoch": 3, "metrics": {...}, "model_kwargs": {},
     "selection": {"select_on": "holdout", "predictions": "best_selection.csv", ...},
     "files": {"pdparams": {"sha256": "9f2c...", "bytes": 44787441}, "pdopt": {...}}}

Loading trusts nothing: the sidecar is validated before a network is built, each file's
hash is checked, weights are unpickled by `palm.weights.read_weights` (no code in them can
run), every tensor must match the network by name and shape, and the loaded network must
give finite logits on a probe image (NaN weights would otherwise call every photo negative).

Saving is one unit (`CheckpointWriter`): every file of a save (weights, optimizer state,
sidecar; in training also `best` and metrics.csv) is written to a hidden `.NAME.*.tmp`
beside its target and fsynced; then a commit record listing them is written (atomically),
the files are renamed into place and the record removed. A crash before the record leaves
the previous files untouched; after it, `recover_folder` completes the renames. Either way
the folder holds one complete, consistent set, and `recover_folder` removes the leftovers.
"""
from __future__ import annotations

import json
import math
import os
import re
import secrets
from pathlib import Path
from typing import Any, Callable

import numpy as np
import paddle

from palm.config import RANGES
from palm.errors import BadCheckpoint
from palm.io_utils import write_text_atomic
from palm.metrics import TEMPERATURE_RANGE
from palm.models import MODELS, build_grading_model
from palm.predictions import ORDINAL_LOSSES, main_output, ordinal_loss_of
from palm.torch_weights import checkpoint_format
from palm.weights import file_sha256, read_weights

# The file that makes a folder a tools/export.py export (palm.engine.export writes it).
EXPORT_META = "palm_meta.json"

REQUIRED_META = ("model", "num_classes", "image_size")
IMAGE_SIZE_RANGE = (RANGES["image_size"].low, RANGES["image_size"].high)
COMMIT_RECORD = ".palm-commit.json"
# how many names of each kind a mismatch error lists
SHOWN_NAMES = 3
# parameters any sidecar may ask for before its weights file's size is compared (64 MB fp32)
SMALL_NETWORK = 1 << 24


class CheckpointError(BadCheckpoint):
    """A checkpoint is damaged, inconsistent or does not fit the network."""


def sidecar_path(params_path: str | Path) -> Path:
    return Path(params_path).with_suffix(".json")


# ---------------------------------------------------------------- validation

def validate_meta(meta: Any, source: str | Path) -> dict[str, Any]:
    """`meta` if it can describe a network palm builds, else CheckpointError naming `source`.

    Checked before anything is built: a JSON object with a known model name, num_classes
    >= 1, image_size within IMAGE_SIZE_RANGE, and the right types for the optional keys.
    """
    if not isinstance(meta, dict):
        raise CheckpointError(f"{source}: expected a JSON object, found {type(meta).__name__}")
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise CheckpointError(f"{source}: missing keys {missing}")
    problems = []
    if not isinstance(meta["model"], str) or meta["model"] not in MODELS:
        problems.append(f"unknown model {meta['model']!r}")
    if not _is_int(meta["num_classes"]) or meta["num_classes"] < 1:
        problems.append(f"num_classes must be an integer >= 1, not {meta['num_classes']!r}")
    low, high = IMAGE_SIZE_RANGE
    if not _is_int(meta["image_size"]) or not low <= meta["image_size"] <= high:
        problems.append(f"image_size must be an integer in {low}..{high}, "
                        f"not {meta['image_size']!r}")
    optional = {"class_names": list, "normalize": str, "fundus_crop": bool, "model_kwargs": dict,
                "metrics": dict, "files": dict, "selection": dict}
    problems += [f"{key} must be a {kind.__name__}, not {meta[key]!r}"
                 for key, kind in optional.items()
                 if key in meta and not isinstance(meta[key], kind)]
    names = meta.get("class_names") or []
    if not all(isinstance(c, str) for c in names):
        problems.append("class_names must be strings")
    elif names and _is_int(meta["num_classes"]) and len(names) != max(2, meta["num_classes"]):
        problems.append(f"{len(names)} class_names for num_classes {meta['num_classes']} "
                        f"(needs {max(2, meta['num_classes'])})")
    elif len(set(names)) != len(names):  # predictions would name two classes alike
        problems.append(f"class_names must differ, not {names[:SHOWN_NAMES * 3]}")
    if isinstance(meta.get("files"), dict):
        problems += [f"files.{kind} must be {{\"sha256\": hex text, \"bytes\": integer}}, not "
                     f"{str(record)[:60]}" for kind, record in meta["files"].items()
                     if not _is_file_record(record)]
    threshold = meta.get("threshold", 0.5)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
            or not 0 <= threshold <= 1:
        problems.append(f"threshold must be a number in 0..1, not {threshold!r}")
    problems += _label_threshold_problems(meta.get("thresholds"), names)
    # the range fit_temperature searches: a tiny temperature (1e-300 is positive) turns
    # finite logits into infinite ones, every photo a certain 0/1 or a NaN softmax
    temperature, (low, high) = meta.get("temperature", 1.0), TEMPERATURE_RANGE
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not low <= temperature <= high:
        problems.append(f"temperature must be a number in {low}..{high}, not {temperature!r}")
    if "epoch" in meta and (not _is_int(meta["epoch"]) or meta["epoch"] < 0):
        problems.append(f"epoch must be an integer >= 0, not {meta['epoch']!r}")
    problems += _grading_problems(meta)
    if problems:
        raise CheckpointError(f"{source}: {'; '.join(problems)}")
    return meta


def _label_threshold_problems(thresholds: Any, names: list) -> list[str]:
    """What is wrong with a multi-label sidecar's `thresholds` ({label: number in 0..1},
    one per class name); [] when absent or right."""
    if thresholds is None:
        return []
    if not isinstance(thresholds, dict):
        return [f"thresholds must be a {{label: threshold}} object, not {str(thresholds)[:60]}"]
    if sorted(thresholds) != sorted(names):
        return [f"thresholds name labels {sorted(thresholds)[:SHOWN_NAMES * 3]}, not the "
                f"class_names {names[:SHOWN_NAMES * 3]}"]
    return [f"thresholds.{label} must be a number in 0..1, not {value!r}"
            for label, value in thresholds.items()
            if isinstance(value, bool) or not isinstance(value, (int, float))
            or not 0 <= value <= 1]


def _grading_problems(meta: dict[str, Any]) -> list[str]:
    """What is wrong with a grading sidecar's ordinal_loss and cut_points (none before them:
    such a checkpoint trained with ce)."""
    loss = meta.get("ordinal_loss", "ce")
    if loss not in ORDINAL_LOSSES:
        return [f"ordinal_loss must be one of {', '.join(ORDINAL_LOSSES)}, not {loss!r}"]
    if loss != "ce" and meta.get("task") != "ordinal":
        return [f"ordinal_loss {loss} needs task ordinal, not {meta.get('task')!r}"]
    if loss != "ce" and (not _is_int(meta["num_classes"]) or meta["num_classes"] < 2):
        return [f"ordinal_loss {loss} needs num_classes (grades) >= 2"]
    cuts = meta.get("cut_points")
    if cuts is None:
        return []
    numbers = isinstance(cuts, list) and all(
        isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) for c in cuts)
    if loss != "regression":
        return [f"cut_points belong to an ordinal_loss regression model, not {loss}"]
    if not numbers or sorted(cuts) != cuts or len(cuts) != meta["num_classes"] - 1:
        return [f"cut_points must be {meta['num_classes'] - 1} sorted finite numbers, not "
                f"{str(cuts)[:60]}"]
    return []


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_file_record(record: Any) -> bool:
    return (isinstance(record, dict) and isinstance(record.get("sha256"), str)
            and _is_int(record.get("bytes")) and record["bytes"] >= 0)


def check_network_fits_file(meta: dict[str, Any], params_path: str | Path) -> None:
    """CheckpointError if the network the sidecar describes is large and has more
    parameters than the weights file has bytes.

    The network is sized without allocating it (paddle.LazyGuard): a sidecar asking for
    num_classes 10**9 or a huge `model_kwargs` value would otherwise allocate gigabytes
    (or fail with a MemoryError) before the weights are even read.
    """
    with paddle.LazyGuard():
        shapes = [p.shape for p in _build_from_meta(meta, params_path).state_dict().values()]
    count = sum(math.prod(shape) for shape in shapes)
    size = Path(params_path).stat().st_size
    # no stored dtype is smaller than a byte; a small network is left to the key-by-key
    # comparison, whose message names what is missing
    if count > max(size, SMALL_NETWORK):
        raise CheckpointError(f"{sidecar_path(params_path)} describes a {meta['model']} of "
                              f"{count:,} parameters, more than {Path(params_path).name} "
                              f"({size:,} bytes) can hold; the sidecar is wrong or not this "
                              "file's")


def _build_from_meta(meta: dict[str, Any], params_path: str | Path) -> paddle.nn.Layer:
    try:
        return build_grading_model(meta["model"], meta["num_classes"], ordinal_loss_of(meta),
                                   **meta.get("model_kwargs", {}))
    except (TypeError, ValueError, AssertionError, ArithmeticError) as e:  # bad model_kwargs
        raise CheckpointError(
            f"{sidecar_path(params_path)}: cannot build {meta['model']} ({e})") from None


def check_state_matches(model: paddle.nn.Layer, state: Any, source: str | Path) -> None:
    """CheckpointError unless `state` has exactly the model's tensor names and shapes.

    `Layer.set_state_dict` only warns about a missing or misshapen tensor and keeps the
    random initialisation, which then evaluates without complaint.
    """
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: expected a state dict, found {type(state).__name__}")
    own = model.state_dict()
    missing = [name for name in own if name not in state]
    unexpected = [name for name in state if name not in own]
    wrong = [f"{name} {_shape(state[name])} (needs {list(own[name].shape)})"
             for name in own if name in state and _shape(state[name]) != list(own[name].shape)]
    if missing or unexpected or wrong:
        kinds = (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
        parts = [_listed(kind, names) for kind, names in kinds if names]
        raise CheckpointError(f"{source} does not fit {type(model).__name__} ({len(own)} tensors): "
                              + "; ".join(parts))


def _shape(value: Any) -> list[int] | str:
    return list(value.shape) if hasattr(value, "shape") else f"<{type(value).__name__}>"


def _listed(kind: str, names: list[str]) -> str:
    more = f" and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else ""
    return f"{len(names)} {kind}: {', '.join(names[:SHOWN_NAMES])}{more}"


def verify_file(path: Path, meta: dict[str, Any], kind: str) -> None:
    """CheckpointError if `path` differs from the size/SHA-256 its sidecar recorded.

    Checkpoints written before hashes were recorded have none and are not checked.
    """
    record = (meta.get("files") or {}).get(kind)
    if record is None:
        return
    size = path.stat().st_size
    if size < record.get("bytes", 0):
        problem = f"truncated ({size} of {record['bytes']} bytes)"
    elif file_sha256(path) != record.get("sha256"):
        problem = "corrupt or changed since it was saved (its SHA-256 differs from the sidecar's)"
    else:
        return
    if (path.parent / COMMIT_RECORD).is_file():
        problem += "; a save was interrupted here: run the same training with --resume to finish it"
    raise CheckpointError(f"{path}: {problem}")


# ---------------------------------------------------------------- loading

def load_meta(params_path: str | Path) -> dict[str, Any]:
    """Read and validate the sidecar JSON of a checkpoint."""
    params_path = Path(params_path)
    if (params_path / EXPORT_META).is_file():  # a tools/export.py folder: no weights to train on
        raise CheckpointError(f"{params_path} is a Paddle Inference export (palm export, tools/export.py), "
                              "which Grad-CAM, reports and re-exports cannot use; pass the "
                              ".pdparams checkpoint it was exported from")
    if params_path.is_dir():
        raise FileNotFoundError(f"{params_path} is a folder; pass a NAME.pdparams checkpoint")
    if not params_path.is_file():
        raise FileNotFoundError(f"{params_path}: checkpoint not found")
    side = sidecar_path(params_path)
    if not side.is_file():
        raise FileNotFoundError(
            f"{side}: checkpoint sidecar not found (needed for model name, classes, image size)"
        )
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as e:  # not JSON, not UTF-8, nested too deep
        raise CheckpointError(f"{side}: not valid JSON ({e})") from None
    return validate_meta(meta, side)


def decision_threshold(meta: dict[str, Any]) -> tuple[float, str]:
    """(threshold, where it came from) of a checkpoint or export sidecar: eval, predict and
    the service all report it this way. "checkpoint" (with the recorded source, e.g. an
    operating point, in brackets) when the sidecar holds one, else 0.5 "default"."""
    if meta.get("threshold") is None:
        return 0.5, "default"
    source = meta.get("threshold_source")
    return float(meta["threshold"]), f"checkpoint ({source})" if source else "checkpoint"


def label_thresholds(meta: dict[str, Any]) -> tuple[np.ndarray, str]:
    """(one threshold per label, where they came from) of a multi-label sidecar: the tuned
    `thresholds` ({label: t}) when stored, else `decision_threshold` for every label (0.5 for
    a checkpoint saved before thresholds were tuned per label)."""
    names = list(meta.get("class_names") or [])
    stored = meta.get("thresholds")
    if stored:
        source = meta.get("thresholds_source")
        return (np.array([float(stored[name]) for name in names]),
                f"checkpoint ({source})" if source else "checkpoint")
    threshold, source = decision_threshold(meta)
    return np.full(len(names) or int(meta["num_classes"]), threshold), source


def update_sidecar(params_path: str | Path, changes: dict[str, Any]) -> dict[str, Any]:
    """Merge `changes` into a checkpoint's sidecar (validated, written atomically); the
    weights and their recorded hashes are untouched. Returns the new meta."""
    meta = {**load_meta(params_path), **changes}
    side = sidecar_path(params_path)
    validate_meta(meta, side)
    write_text_atomic(side, _json_text(meta))
    return meta


def load_weights(params_path: str | Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The state dict in `params_path`, checked against the hash in `meta` and read safely."""
    params_path = Path(params_path)
    verify_file(params_path, meta, "pdparams")
    # else the Paddle reader refuses a torch zip as "unsafe", sending the user after an attack
    kind = checkpoint_format(params_path)
    if kind not in ("paddle", "unknown"):  # an unknown one is named by the reader below
        raise CheckpointError(f"{params_path}: a {kind} file, not the Paddle weights a palm "
                              "checkpoint holds; convert PyTorch weights with `palm convert`, "
                              "or train from them with --pretrained")
    return read_weights(params_path)


def load_checkpoint_model(params_path: str | Path) -> tuple[paddle.nn.Layer, dict[str, Any]]:
    """Rebuild the model named in the sidecar, load its weights (all of them), set eval mode."""
    meta = load_meta(params_path)
    check_network_fits_file(meta, params_path)
    model = _build_from_meta(meta, params_path)
    state = load_weights(params_path, meta)
    check_state_matches(model, state, params_path)
    model.set_state_dict(state)
    model.eval()
    check_finite_output(model, meta, params_path)
    return model, meta


def probe_batch(image_size: int) -> np.ndarray:
    """One fixed random image (NCHW float32 in -1..1) to try a loaded model on."""
    return np.random.default_rng(0).uniform(-1, 1, (1, 3, image_size, image_size)).astype("float32")


def check_finite_output(model: paddle.nn.Layer, meta: dict[str, Any], source: str | Path) -> None:
    """CheckpointError naming `source` if `model` gives a NaN or inf logit on `probe_batch`.

    NaN weights give NaN for every photo, which a threshold reads as "negative": a silent
    all-negative screening.
    """
    with paddle.no_grad():
        logits = main_output(model(paddle.to_tensor(probe_batch(meta["image_size"])))).numpy()
    if np.isfinite(logits).all():
        return
    bad = [name for name, value in model.state_dict().items()
           if not np.isfinite(value.numpy()).all()]
    why = (f"NaN or inf values in {_listed('tensor(s)', bad)}" if bad
           else "its weights are finite but overflow")
    raise CheckpointError(f"{source}: the model gives NaN or inf logits on a probe image ({why}); "
                          "the checkpoint is damaged or its training diverged")


def load_optimizer_state(params_path: str | Path,
                         meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `.pdopt` dict saved beside a checkpoint: {"optimizer": ..., **extra_state}."""
    meta = load_meta(params_path) if meta is None else meta
    opt_path = Path(params_path).with_suffix(".pdopt")
    if not opt_path.is_file():
        raise FileNotFoundError(f"{opt_path}: optimizer state not found (cannot resume)")
    if meta.get("files") and "pdopt" not in meta["files"]:
        raise CheckpointError(f"{opt_path}: its sidecar records a checkpoint saved without "
                              "optimizer state, so this file belongs to another save")
    verify_file(opt_path, meta, "pdopt")
    state = read_weights(opt_path)
    if not isinstance(state, dict) or not isinstance(state.get("optimizer"), dict):
        raise CheckpointError(f"{opt_path}: not a palm optimizer state")
    return state


# ---------------------------------------------------------------- saving

def _write_durably(final: Path, write: Callable[[str], None]) -> Path:
    """A hidden temporary beside `final`, filled by `write(path)` and flushed to disk."""
    tmp = final.with_name(f".{final.name}.{secrets.token_hex(4)}.tmp")
    try:
        write(str(tmp))
        _fsync(tmp)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        # name the file the user knows, not the temporary (disk full, read-only)
        if e.errno is not None and e.filename in (None, str(tmp)):
            raise type(e)(e.errno, e.strerror, str(final)) from e
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _rename_durably(src: Path, dst: Path) -> None:
    os.replace(src, dst)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)  # a folder too: makes its renames durable
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _json_text(obj: Any) -> str:
    # metric dicts hold numpy scalars
    return json.dumps(obj, indent=2, sort_keys=True,
                      default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)) + "\n"


class CheckpointWriter:
    """Stage files of one folder, then `commit()` them together (see the module docstring).

    Example:
        with CheckpointWriter(run_dir) as save:
            save.add_checkpoint(run_dir / "last.pdparams", model.state_dict(), meta, opt_state)
            save.add_file(run_dir / "metrics.csv", lambda tmp: frame.to_csv(tmp, index=False))
            save.commit()
    Leaving the block without `commit()` removes what was staged.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.staged: dict[Path, Path] = {}  # target -> temporary

    def __enter__(self) -> CheckpointWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        for tmp in self.staged.values():
            tmp.unlink(missing_ok=True)
        self.staged.clear()

    def add_file(self, target: str | Path, write: Callable[[str], None]) -> dict[str, Any]:
        """Stage `target` written by `write(tmp_path)`; returns its {"sha256", "bytes"}."""
        target = Path(target)
        if target.parent.resolve() != self.folder.resolve():
            raise ValueError(f"{target}: a checkpoint save covers files of {self.folder} only")
        tmp = _write_durably(target, write)
        self.staged[target] = tmp
        return {"sha256": file_sha256(tmp), "bytes": tmp.stat().st_size}

    def add_checkpoint(self, params_path: str | Path, state_dict: dict[str, Any],
                       meta: dict[str, Any], optimizer_state: dict[str, Any] | None = None) -> None:
        """Stage NAME.pdparams (+ NAME.pdopt) and the NAME.json sidecar recording their hashes."""
        params_path = Path(params_path)
        missing = [k for k in REQUIRED_META if k not in meta]
        if missing:
            raise BadCheckpoint(f"checkpoint meta for {params_path} lacks {missing}")
        files = {"pdparams": self.add_file(params_path, lambda tmp: paddle.save(state_dict, tmp))}
        if optimizer_state is not None:
            files["pdopt"] = self.add_file(params_path.with_suffix(".pdopt"),
                                           lambda tmp: paddle.save(optimizer_state, tmp))
        text = _json_text({**meta, "files": files})
        self.add_file(sidecar_path(params_path), lambda tmp: Path(tmp).write_text(text, "utf-8"))

    def commit(self) -> None:
        """Write the commit record, then move every staged file into place."""
        record = {"renames": {tmp.name: target.name for target, tmp in self.staged.items()}}
        text = _json_text(record)
        tmp = _write_durably(self.folder / COMMIT_RECORD,
                             lambda path: Path(path).write_text(text, "utf-8"))
        _rename_durably(tmp, self.folder / COMMIT_RECORD)
        _fsync(self.folder)
        self.staged.clear()
        _apply_commit(self.folder, record)


def _apply_commit(folder: Path, record: dict[str, Any]) -> None:
    for tmp_name, target_name in record["renames"].items():
        if (folder / tmp_name).exists():  # else renamed before an interruption
            _rename_durably(folder / tmp_name, folder / target_name)
    _fsync(folder)
    (folder / COMMIT_RECORD).unlink()
    _fsync(folder)


# `.NAME.XXXXXXXX.tmp` as _write_durably and palm.io_utils.atomic_path (mkstemp) name them,
# NAME one of the files palm writes in a run folder: a folder given as --output may also
# hold other programs' hidden temporary files
_LEFTOVER = re.compile(r"\..+\.(pdparams|pdopt|json|csv|yaml|png|html)\.[a-z0-9_]{8}\.tmp")


def recover_folder(folder: str | Path) -> list[str]:
    """Finish a save interrupted after its commit record; delete `.*.tmp` leftovers.

    Returns one note per repair (empty when there was nothing to do). Call it where no
    other process writes to `folder`.
    """
    folder = Path(folder)
    notes = []
    record_path = folder / COMMIT_RECORD
    if record_path.is_file():
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
            renames = record["renames"]
        except (ValueError, RecursionError, KeyError, TypeError) as e:
            raise CheckpointError(f"{record_path}: damaged commit record ({e})") from None
        if not all(Path(n).name == n and n not in ("", ".", "..")
                   for pair in renames.items() for n in pair):
            raise CheckpointError(f"{record_path}: names files outside {folder}")
        _apply_commit(folder, record)
        notes.append(f"{folder}: finished a checkpoint save that was interrupted")
    leftovers = [p for p in folder.glob(".*.tmp") if p.is_file() and _LEFTOVER.fullmatch(p.name)]
    for path in leftovers:
        path.unlink()
    if leftovers:
        notes.append(f"{folder}: removed {len(leftovers)} temporary file(s) "
                     "of an interrupted write")
    return notes


def save_checkpoint(
    params_path: str | Path,
    model: paddle.nn.Layer,
    meta: dict[str, Any],
    optimizer: paddle.optimizer.Optimizer | None = None,
    extra_state: dict[str, Any] | None = None,
) -> None:
    """Write weights, optional optimizer state (+ `extra_state`, e.g. scheduler) and sidecar
    as one unit."""
    params_path = Path(params_path)
    opt_state = None if optimizer is None else {"optimizer": optimizer.state_dict(),
                                                **(extra_state or {})}
    with CheckpointWriter(params_path.parent) as save:
        save.add_checkpoint(params_path, model.state_dict(), meta, opt_state)
        save.commit()
