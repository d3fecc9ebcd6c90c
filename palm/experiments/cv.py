"""Stratified k-fold cross-validation: one normal training run per fold, out-of-fold scores.

The labelled training data (PALM: the training folder, plus the validation set with
`pool_val`; otherwise the training folder or CSV, plus the validation source with
`pool_val`) is split by palm.data.splits (scikit-learn's StratifiedKFold, RepeatedStratifiedKFold for
several repeats). Fold k trains on the other folds and validates on fold k, in OUTPUT/fold_k (with
repeats, OUTPUT/repeat_r_fold_k): a normal run folder whose train.csv and val.csv list its
images. The CV resumes: finished folds are skipped, a fold cut short continues from `last`.

Each image is predicted by the `last` model of the fold that held it out: `best` was chosen
on that very fold, so its scores would be optimistic. Outputs in OUTPUT: splits.csv (fold of
every image), oof_predictions.csv, folds.csv (per-fold metrics), summary.json and cv_roc.png;
with an external set, val_models.csv and val_predictions.csv (the fold models and their
mean, an ensemble).

Per task: graders (ordinal) are split stratified by grade and report quadratic kappa and MAE
per fold (mean ± sd) and pooled (kappa with a bootstrap interval) beside the multi-class
figures; multi-label data (a CSV with a 0/1 column per label) is split by iterative
stratification (palm.data.splits) and reports macro AUC (pooled with a bootstrap interval),
micro AUC and mAP; its out-of-fold predictions have label_, probability_ and prediction_
columns per label.

Example:
    summary = run_cv(cfg, "runs/cv", folds=5)
    summary["pooled_oof"]["roc_auc"], summary["pooled_oof"]["roc_auc_ci95"]
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import paddle
from sklearn.metrics import roc_auc_score

from palm import metrics as M
from palm.data import CsvImageSet, ImageSet, PalmTrainSet, build_loader, eval_transform
from palm.data import class_order, find_palm_layout
from palm.data import sources
from palm.data.generic import MultiLabelCsvImageSet
from palm.data.grading import GradedImageSet, find_grading_layout
from palm.data.splits import kfold_assignment
from palm.engine.checkpoint import load_checkpoint_model
from palm.engine.evaluate import evaluate, json_ready
from palm.engine.runner import resolved_augment
from palm.experiments.trials import Trial, check_experiment_record, check_jobs, run_trials
from palm.errors import BadConfig, BadData
from palm.io_utils import output_lock, read_csv, write_csv_atomic, write_json_atomic
from palm.predictions import (LABEL_PREFIX, PROBABILITY_PREFIX, is_probability_column,
                              multilabel_frame, probabilities_of, probability_fields)
from palm.viz.experiments import plot_cv_roc

CV_FILE = "cv.json"
FOLD_METRICS = ("accuracy", "roc_auc", "sensitivity", "specificity", "f1")
# the figures of a grader and of a multi-label model per fold and pooled
ORDINAL_METRICS = ("qwk", "mae")
MULTILABEL_METRICS = ("accuracy", "macro_roc_auc", "micro_roc_auc", "map", "macro_f1")
ALL_FOLD_METRICS = FOLD_METRICS + ORDINAL_METRICS + MULTILABEL_METRICS[1:]
# the pooled figure the summary leads with, by task
HEADLINE = {"ordinal": "qwk", "multilabel": "macro_roc_auc"}
BOOTSTRAP_SAMPLES = 2000


def _read_options(cfg: dict[str, Any]) -> dict[str, Any]:
    return {"skip_bad": cfg["skip_bad"], "cache_dir": cfg["cache_dir"],
            "max_pixels": cfg["max_pixels"], "cache_size_gb": cfg["cache_size_gb"]}


def external_set(cfg: dict[str, Any], classes: list[str]) -> ImageSet:
    """The config's validation data (PALM validation set, val_dir or val_csv)."""
    return sources.evaluation_set(
        transform=eval_transform(cfg), classes=classes, data_root=cfg["data_root"],
        val_dir=cfg["val_dir"], val_csv=cfg["val_csv"], allow_outside_paths=cfg["allow_outside_paths"],
        multilabel=cfg["task"] == "multilabel", **_read_options(cfg))


def labelled_pool(cfg: dict[str, Any], pool_val: bool
                  ) -> tuple[list[tuple[str, Any]], list[str], str | None]:
    """(samples, class names, the data's own task or None) of the data to cross-validate, in
    the data sets' order (a multi-label sample's label is its tuple of 0/1, one per label)."""
    grading = (find_grading_layout(cfg["data_root"])
               if not (cfg["train_dir"] or cfg["train_csv"]) else None)
    if grading is not None:  # an APTOS-2019 or IDRiD download: its training grades
        train: ImageSet = GradedImageSet(grading.train, transform=eval_transform(cfg),
                                         **_read_options(cfg))
    elif sources.is_palm_layout(cfg["data_root"], cfg["train_csv"], cfg["val_csv"]):
        train = PalmTrainSet(find_palm_layout(cfg["data_root"]).train_dir,
                             transform=eval_transform(cfg), **_read_options(cfg))
        train.set_class_order(class_order(cfg["class_names"] or train.classes,
                                          cfg["positive_class"], bool(cfg["class_names"])))
    else:
        if not (cfg["train_dir"] or cfg["train_csv"]):
            raise BadConfig("no training data: give data_root (PALM, APTOS-2019, IDRiD), "
                            "train_dir or train_csv", param=("data_root", "train_dir", "train_csv"))
        multilabel = cfg["task"] == "multilabel" or bool(cfg["label_columns"])
        train = sources.evaluation_set(
            transform=eval_transform(cfg),
            classes=cfg["label_columns"] if multilabel else cfg["class_names"],
            data_root=cfg["data_root"] if cfg["train_csv"] else None, val_dir=cfg["train_dir"],
            val_csv=cfg["train_csv"], allow_outside_paths=cfg["allow_outside_paths"],
            positive_class=cfg["positive_class"], multilabel=multilabel, **_read_options(cfg))
    samples = list(train.samples)
    if pool_val:
        samples += external_set(cfg, list(train.classes)).samples
    paths = [str(Path(p).resolve()) for p, _ in samples]
    if len(set(paths)) != len(paths):
        raise BadConfig("the training and validation data share images; pool_val needs "
                        "two separate sets")
    return ([(path, label) for path, (_, label) in zip(paths, samples)], list(train.classes),
            getattr(train, "task", None))


def fold_name(repeat: int, fold: int, repeats: int) -> str:
    return f"fold_{fold}" if repeats == 1 else f"repeat_{repeat}_fold_{fold}"


def splits_table(samples: Sequence[tuple[str, Any]], classes: Sequence[str],
                 assignment: np.ndarray, task: str | None = None) -> pd.DataFrame:
    """splits.csv: path, label (class name) or for a multi-label task a 0/1 column per
    label, repeat, fold; one row per image and repeat."""
    if task == "multilabel":
        labels = {name: [y[j] for _, y in samples] for j, name in enumerate(classes)}
    else:
        labels = {"label": [classes[y] for _, y in samples]}
    frames = []
    for repeat, folds in enumerate(assignment):
        frames.append(pd.DataFrame({"path": [p for p, _ in samples], **labels,
                                    "repeat": repeat, "fold": folds}))
    return pd.concat(frames, ignore_index=True)


def check_same_splits(path: Path, splits: pd.DataFrame) -> None:
    """Write splits.csv, or check that a resumed CV still sees the same images in the same
    folds (finished folds were trained on the saved split)."""
    if path.is_file():
        saved = read_csv(path, dtype={"label": str} if "label" in splits.columns else None)
        fresh = splits.astype({c: str for c in ["label"] if c in splits.columns})
        fresh = fresh.reset_index(drop=True)
        if not saved.equals(fresh.astype(saved.dtypes.to_dict())):
            raise BadConfig(f"{path}: the data differ from those this cross-validation was "
                            "started with (images added, removed or relabelled); give "
                            "another output folder")
        return
    write_csv_atomic(path, splits)


def plan_folds(cfg: dict[str, Any], splits: pd.DataFrame, classes: list[str], output: Path,
               folds: int, repeats: int, task: str | None = None) -> list[Trial]:
    """A trial per fold, training on its train.csv and validating on its val.csv.

    The lists hold absolute paths (the images stay where they are); augmentation is
    resolved from the original data (the fundus preset for PALM), not from the lists.
    """
    base = {**cfg, "data_root": None, "train_dir": None, "val_dir": None,
            "allow_outside_paths": True, "class_names": list(classes), "positive_class": None,
            "augment": resolved_augment(cfg), "task": task or cfg["task"],
            **({"label_columns": list(classes)} if task == "multilabel" else {})}
    columns = ["path", *(classes if task == "multilabel" else ["label"])]
    trials = []
    for repeat in range(repeats):
        rows = splits[splits["repeat"] == repeat]
        for fold in range(folds):
            name = fold_name(repeat, fold, repeats)
            run_dir = output / name
            held_out = rows["fold"] == fold
            write_csv_atomic(run_dir / "train.csv", rows.loc[~held_out, columns])
            write_csv_atomic(run_dir / "val.csv", rows.loc[held_out, columns])
            trials.append(Trial(name, {**base, "train_csv": str(run_dir / "train.csv"),
                                       "val_csv": str(run_dir / "val.csv")},
                                {"repeat": repeat, "fold": fold}))
    return trials


@paddle.no_grad()
def predict_set(params_path: Path, dataset: ImageSet, batch_size: int) -> np.ndarray:
    """Probabilities of the checkpoint's model for every image of `dataset`, in order
    (`dataset` built with the eval transform of the config the model was trained with)."""
    model, meta = load_checkpoint_model(params_path)
    loader = build_loader(dataset, batch_size, train=False, num_workers=0)
    # a multi-label model's probabilities are a sigmoid per label, not a softmax
    return evaluate(model, loader, task=meta.get("task")).probabilities


def _fold_set(cfg: dict[str, Any], csv_path: Path, classes: list[str]) -> ImageSet:
    if cfg["task"] == "multilabel":
        return MultiLabelCsvImageSet(csv_path, classes, transform=eval_transform(cfg),
                                     allow_outside_paths=True, **_read_options(cfg))
    return CsvImageSet(csv_path, classes=classes, transform=eval_transform(cfg),
                       allow_outside_paths=True, **_read_options(cfg))


def multilabel_predictions(dataset: ImageSet, probs: np.ndarray, classes: list[str],
                           threshold: float, **extra: Any) -> pd.DataFrame:
    """A multi-label model's predictions of `dataset` (label_, probability_ and
    prediction_ per label), with `extra` columns (repeat, fold) after the path."""
    frame = multilabel_frame([p for p, _ in dataset.samples], probs,
                             np.full(len(classes), threshold), classes, dataset.labels)
    for position, (key, value) in enumerate(extra.items(), start=1):
        frame.insert(position, key, value)
    return frame.drop(columns=["error"], errors="ignore")


def fold_predictions(cfg: dict[str, Any], trial: Trial, run_dir: Path,
                     classes: list[str]) -> pd.DataFrame:
    """The held-out images of one fold with the probabilities of the fold's `last` model
    (computed once, kept in RUN_DIR/oof.csv)."""
    path = run_dir / "oof.csv"
    if path.is_file():
        return read_csv(path)
    dataset = _fold_set(cfg, run_dir / "val.csv", classes)
    probs = predict_set(run_dir / "last.pdparams", dataset, cfg["batch_size"])
    if cfg["task"] == "multilabel":
        frame = multilabel_predictions(dataset, probs, classes, cfg["threshold"], **trial.labels)
        write_csv_atomic(path, frame)
        return frame
    frame = pd.DataFrame({"path": [p for p, _ in dataset.samples],
                          "label": [classes[y] for _, y in dataset.samples],
                          "label_index": dataset.labels, **trial.labels,
                          **probability_fields(probs, classes)})
    frame["prediction"] = np.asarray(classes, dtype=object)[M.predict_labels(probs, cfg["threshold"])]
    write_csv_atomic(path, frame)
    return frame


def bootstrap_auc_ci(labels: np.ndarray, probs: np.ndarray, level: float = 0.95,
                     samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the ROC AUC (macro one-vs-rest for K classes): images
    resampled with replacement; resamples lacking a class are redrawn (not counted)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    k = len(np.unique(labels))
    aucs = []
    for _ in range(samples):
        pick = rng.integers(0, len(labels), len(labels))
        if len(np.unique(labels[pick])) < k:
            continue
        if probs.ndim == 1:
            aucs.append(roc_auc_score(labels[pick], probs[pick]))
        else:
            aucs.append(roc_auc_score(labels[pick], probs[pick], multi_class="ovr",
                                      labels=np.arange(probs.shape[1])))
    if not aucs:
        return math.nan, math.nan
    low, high = np.quantile(aucs, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def task_metrics(labels: np.ndarray, probs: np.ndarray, classes: list[str], threshold: float,
                 task: str | None = None) -> dict[str, float]:
    """The fold figures of a task: FOLD_METRICS (binary, multi-class), and quadratic kappa
    and MAE for a grader; MULTILABEL_METRICS for a multi-label model (accuracy: every label
    of an image right)."""
    if task == "multilabel":
        metrics = M.multilabel_metrics(labels, probs, classes, threshold)
        metrics["accuracy"] = float(np.mean(((probs >= threshold) == labels).all(axis=1)))
        return {k: metrics[k] for k in MULTILABEL_METRICS}
    metrics = M.classification_metrics(labels, probs, threshold)
    if task == "ordinal":
        metrics.update(M.ordinal_metrics(labels, probs))
    wanted = FOLD_METRICS + (ORDINAL_METRICS if task == "ordinal" else ())
    return {k: metrics[k] for k in wanted if k in metrics}


def oof_arrays(frame: pd.DataFrame, classes: list[str],
               task: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) of out-of-fold rows: (N,) class indices and (N,) or (N, K)
    probabilities; (N, L) 0/1 and (N, L) for a multi-label task."""
    if task == "multilabel":
        return (frame[[f"{LABEL_PREFIX}{n}" for n in classes]].to_numpy(np.int64),
                frame[[f"{PROBABILITY_PREFIX}{n}" for n in classes]].to_numpy(np.float64))
    return frame["label_index"].to_numpy(), probabilities_of(frame, classes)


def fold_metrics_table(oof: pd.DataFrame, classes: list[str], threshold: float,
                       n_images: int, task: str | None = None) -> pd.DataFrame:
    """folds.csv: repeat, fold, images trained on and held out, and the held-out metrics."""
    rows = []
    for (repeat, fold), part in oof.groupby(["repeat", "fold"], sort=True):
        metrics = task_metrics(*oof_arrays(part, classes, task), classes, threshold, task)
        rows.append({"repeat": repeat, "fold": fold, "train_images": n_images - len(part),
                     "val_images": len(part), **metrics})
    return pd.DataFrame(rows)


def pooled_oof(oof: pd.DataFrame, classes: list[str], threshold: float,
               task: str | None = None) -> dict[str, Any]:
    """Metrics of all out-of-fold predictions together (with repeats: each image's mean
    probability over the repeats), and a bootstrap 95 % CI of their AUC (of a grader also
    of the quadratic kappa; of a multi-label model of the macro AUC instead)."""
    grouped = oof.groupby("path", sort=False)
    mean = grouped[[c for c in oof.columns if is_probability_column(c)]].mean()
    label_columns = ([f"{LABEL_PREFIX}{n}" for n in classes] if task == "multilabel"
                     else ["label_index"])
    pooled = pd.concat([grouped[label_columns].first().loc[mean.index], mean], axis=1)
    labels, probs = oof_arrays(pooled, classes, task)
    summary: dict[str, Any] = {**task_metrics(labels, probs, classes, threshold, task),
                               "n": len(labels)}
    method = f"percentile bootstrap, {BOOTSTRAP_SAMPLES} resamples of the images"
    if task == "multilabel":
        summary["macro_roc_auc_ci95"] = M.multilabel_intervals(
            labels, probs, BOOTSTRAP_SAMPLES)["macro_roc_auc"]
    else:
        summary["roc_auc_ci95"] = list(bootstrap_auc_ci(labels, probs))
    if task == "ordinal":
        summary["qwk_ci95"] = M.ordinal_intervals(labels, probs, resamples=BOOTSTRAP_SAMPLES)["qwk"]
    summary["ci_method"] = method
    return summary


def mean_sd(folds_table: pd.DataFrame) -> dict[str, dict[str, float]]:
    return {k: {"mean": float(folds_table[k].mean()), "sd": float(folds_table[k].std())}
            for k in ALL_FOLD_METRICS if k in folds_table.columns}


def summary_text(summary: dict[str, Any]) -> str:
    """The printed table: mean ± sd over folds, then the pooled out-of-fold figures."""
    n_folds = summary["folds"] * summary["repeats"]
    width = max([12, *map(len, summary["fold_metrics"])])  # macro_roc_auc is 13 wide
    lines = [f"{'metric':<{width}} {f'mean ± sd over {n_folds} folds':>26} {'pooled OOF':>11}"]
    for key, stats in summary["fold_metrics"].items():
        pooled = summary["pooled_oof"].get(key)
        lines.append(f"{key:<{width}} {_fmt(stats['mean']):>15} ± {_fmt(stats['sd']):<8} "
                     f"{_fmt(pooled):>11}")
    pooled = summary["pooled_oof"]
    for key, name in (("roc_auc", "AUC"), ("qwk", "quadratic kappa"),
                      ("macro_roc_auc", "macro AUC")):
        if f"{key}_ci95" in pooled:
            low, high = pooled[f"{key}_ci95"]
            lines.append(f"pooled out-of-fold {name} {_fmt(pooled.get(key))} (95 % CI "
                         f"{_fmt(low)}-{_fmt(high)}, {pooled['ci_method']}; {pooled['n']} images)")
    external = summary.get("external")
    if external:
        key = HEADLINE.get(summary.get("task"), "roc_auc")
        name = {"qwk": "quadratic kappa", "macro_roc_auc": "macro AUC"}.get(key, "AUC")
        lines.append(f"external set ({external['n']} images): ensemble of {n_folds} fold "
                     f"models {name} {_fmt(external['ensemble'].get(key))}, accuracy "
                     f"{_fmt(external['ensemble']['accuracy'])}; single models {name} "
                     f"{_fmt(external['single_models'][key]['mean'])} ± "
                     f"{_fmt(external['single_models'][key]['sd'])}, accuracy "
                     f"{_fmt(external['single_models']['accuracy']['mean'])} ± "
                     f"{_fmt(external['single_models']['accuracy']['sd'])}")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


def score_external(cfg: dict[str, Any], trials: Sequence[Trial], output: Path,
                   classes: list[str]) -> dict[str, Any]:
    """Every fold model and their mean probability (an ensemble) on the external set.

    Writes val_models.csv (a row per fold model, then `ensemble`) and val_predictions.csv
    (per image: the ensemble's probabilities and prediction).
    """
    dataset = external_set(cfg, classes)
    labels, task = dataset.labels, cfg["task"]
    rows, all_probs = [], []
    for trial in trials:
        probs = predict_set(output / trial.name / "last.pdparams", dataset, cfg["batch_size"])
        all_probs.append(probs)
        rows.append({"model": trial.name,
                     **task_metrics(labels, probs, classes, cfg["threshold"], task)})
    ensemble = np.mean(all_probs, axis=0)
    rows.append({"model": "ensemble",
                 **task_metrics(labels, ensemble, classes, cfg["threshold"], task)})
    models = pd.DataFrame(rows)
    write_csv_atomic(output / "val_models.csv", models)
    if task == "multilabel":
        predictions = multilabel_predictions(dataset, ensemble, classes, cfg["threshold"])
    else:
        predictions = pd.DataFrame({"path": [p for p, _ in dataset.samples],
                                    "label": [classes[y] for y in labels],
                                    **probability_fields(ensemble, classes)})
        predictions["prediction"] = np.asarray(classes, dtype=object)[
            M.predict_labels(ensemble, cfg["threshold"])]
    write_csv_atomic(output / "val_predictions.csv", predictions)
    single = models[models["model"] != "ensemble"]
    return {"n": len(labels), "ensemble": rows[-1],
            "single_models": mean_sd(single)}


def check_two_classes(cfg: dict[str, Any], samples: Sequence[tuple[str, Any]],
                      classes: Sequence[str], task: str | None = None) -> None:
    """Refuse data of one class (multi-label: no label with both answers) before any fold
    trains: no fold could be scored (AUC n/a).

    Raises:
        BadData: naming the data and the class count.
    """
    data = cfg["train_csv"] or cfg["train_dir"] or cfg["data_root"]
    if task == "multilabel":
        counts = np.asarray([y for _, y in samples]).reshape(len(samples), -1).sum(0)
        if not ((counts > 0) & (counts < len(samples))).any():
            raise BadData(f"{data}: none of the labels {list(classes)} has both positive and "
                          f"negative images among {len(samples)}; cross-validation could "
                          "score no label")
        return
    present = sorted({label for _, label in samples})
    if len(present) < 2:
        found = f"only class {classes[present[0]]!r}" if present else "no class"
        raise BadData(f"{data}: {len(samples)} images of {len(present)} class ({found}); "
                      "cross-validation needs images of at least two classes")


def run_cv(cfg: dict[str, Any], output: str | Path, *, folds: int = 5, repeats: int = 1,
           pool_val: bool = False, predict_val: bool = False, jobs: int = 1,
           log: Callable[[str], None] = print) -> dict[str, Any]:
    """Cross-validate `cfg` (a validated palm.config dict) into OUTPUT; return the summary.

    The folds come from `cfg["seed"]`, which also seeds every fold's training; `jobs`
    folds train at once (as palm.experiments.trials.run_trials).
    """
    if pool_val and predict_val:
        raise BadConfig("predict_val scores the validation set, which pool_val trains on; "
                        "use one of them", param=("predict_val", "pool_val"))
    if cfg.get("ordinal_loss", "ce") != "ce":
        raise BadConfig(f"ordinal_loss {cfg['ordinal_loss']}: cross-validation pools class "
                        "probabilities; train and evaluate such a grader with palm train and "
                        "palm eval", param="ordinal_loss")
    check_jobs(jobs)
    output = Path(output)
    samples, classes, data_task = labelled_pool(cfg, pool_val)
    check_two_classes(cfg, samples, classes, data_task)
    task = sources.resolve_task(cfg["task"], classes, data_task)
    labels = [y for _, y in samples]
    assignment = kfold_assignment(np.asarray(labels) if task == "multilabel" else labels,
                                  folds, repeats, cfg["seed"])
    splits = splits_table(samples, classes, assignment, task)
    with output_lock(output, folder=True):
        check_experiment_record(output / CV_FILE, {
            "folds": folds, "repeats": repeats, "pool_val": pool_val,
            "base": {k: v for k, v in cfg.items() if k not in ("output", "resume")}})
        check_same_splits(output / "splits.csv", splits)
        cfg = {**cfg, "task": task}  # resolved from the data when the config left it out
        trials = plan_folds(cfg, splits, classes, output, folds, repeats, task)
        run_trials(trials, output, jobs=jobs, log=log)
        oof = pd.concat([fold_predictions(cfg, t, output / t.name, classes) for t in trials],
                        ignore_index=True)
        write_csv_atomic(output / "oof_predictions.csv", oof)
        folds_table = fold_metrics_table(oof, classes, cfg["threshold"], len(samples), task)
        write_csv_atomic(output / "folds.csv", folds_table)
        summary = {"model": cfg["model"], "task": task, "folds": folds, "repeats": repeats,
                   "pool_val": pool_val, "seed": cfg["seed"], "classes": classes,
                   "images": len(samples), "fold_metrics": mean_sd(folds_table),
                   "pooled_oof": pooled_oof(oof, classes, cfg["threshold"], task)}
        if task == "binary":
            plot_cv_roc([(t.name, part["label_index"].to_numpy(), part["probability"].to_numpy())
                         for t, (_, part) in zip(trials, oof.groupby(["repeat", "fold"]))],
                        output / "cv_roc.png",
                        f"{cfg['model']}: {folds}-fold CV" + (f" x {repeats}" if repeats > 1 else ""))
        if predict_val:
            summary["external"] = score_external(cfg, trials, output, classes)
        write_json_atomic(output / "summary.json", json_ready(summary))
    log(summary_text(summary))
    log("wrote splits.csv, oof_predictions.csv, folds.csv, summary.json"
        + (", cv_roc.png" if (output / "cv_roc.png").is_file() else "")
        + (", val_models.csv, val_predictions.csv" if predict_val else "") + f" in {output}")
    return summary
