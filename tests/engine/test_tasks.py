"""Tasks beyond one binary label: ordinal grading (grades 0..K-1 in a CSV) trains with
softmax, is chosen by quadratic kappa, and its evaluation equals scikit-learn's figures on
the run's own predictions CSV."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from palm import config
from palm.cli.common import cli
from palm.engine.runner import run_training
from palm.errors import BadConfig
from palm.reports.report import build_report
from palm.reports.tasks import run_eval
from tests.task_runs import (GRADES, LABELS, graded_csvs, multilabel_csvs, set_cells,
                             train_root_run)
from tests.task_runs import train_run as _train

def test_ordinal_run_records_its_task_and_picks_best_by_kappa(ordinal_run):
    saved = config.load_config(ordinal_run / "config.yaml")
    assert saved["task"] == "ordinal" and saved["class_names"] == [str(g) for g in range(GRADES)]
    history = pd.read_csv(ordinal_run / "metrics.csv")
    assert history["val_qwk"].notna().all() and "val_mae" in history
    best = json.loads((ordinal_run / "best.json").read_text())
    assert best["best_metric"] == "val_qwk" and best["task"] == "ordinal"
    assert best["epoch"] == int(history["epoch"][history["val_qwk"].idxmax()])


def test_ordinal_evaluation_equals_sklearn_on_its_own_predictions(ordinal_run, graded, tmp_path):
    out = tmp_path / "eval"
    metrics = run_eval(str(ordinal_run / "best.pdparams"), output=str(out),
                       val_csv=str(graded / "val.csv"), ci_resamples=200, device="cpu")
    frame = pd.read_csv(out / "predictions.csv")
    truth, predicted = frame["label"], frame["prediction"]
    probabilities = frame[[f"probability_{g}" for g in range(GRADES)]].to_numpy()
    assert metrics["task"] == "ordinal"
    assert metrics["qwk"] == pytest.approx(skm.cohen_kappa_score(truth, predicted, weights="quadratic"))
    assert metrics["mae"] == pytest.approx(skm.mean_absolute_error(truth, predicted))
    referable = metrics["referable"]
    assert metrics["referable_grade"] == 3
    assert referable["roc_auc"] == pytest.approx(
        skm.roc_auc_score(truth >= 3, probabilities[:, 3:].sum(1)), abs=1e-6)
    low, high = metrics["ci95"]["qwk"]
    assert low <= metrics["qwk"] <= high
    np.testing.assert_allclose(frame["expected_grade"], probabilities @ np.arange(GRADES), atol=1e-5)


def test_the_report_of_an_ordinal_run_states_its_task_kappa_and_grade_matrix(ordinal_run, graded,
                                                                            tmp_path):
    out = tmp_path / "eval"
    metrics = run_eval(str(ordinal_run / "best.pdparams"), output=str(out),
                       val_csv=str(graded / "val.csv"), ci_resamples=50, device="cpu")
    page = build_report(ordinal_run, out, gallery_size=0).read_text(encoding="utf-8")
    assert "<tr><th>task</th><td>ordinal</td></tr>" in page
    assert f"quadratic kappa {metrics['qwk']:.3f}" in page
    assert 'alt="confusion_matrix.png"' in page


def test_predict_writes_the_grade_and_the_expected_grade(ordinal_run, graded, tmp_path):
    from palm.engine.tasks import run_predict
    out = tmp_path / "preds.csv"
    run_predict(str(ordinal_run / "best.pdparams"), str(graded / "val"), output=str(out),
                device="cpu", num_workers=0, progress=False)
    frame = pd.read_csv(out)
    probabilities = frame[[f"probability_{g}" for g in range(GRADES)]].to_numpy()
    assert (frame["prediction"] == probabilities.argmax(1)).all()
    np.testing.assert_allclose(frame["expected_grade"], probabilities @ np.arange(GRADES), atol=1e-5)


@pytest.mark.parametrize("options, problem", [
    ({"task": "binary"}, "task binary: the data has 5 classes"),
    ({"task": "ordinal", "referable_grade": 5}, "referable_grade 5: the data's grades are 0..4"),
])
def test_a_task_the_data_cannot_be_is_refused(graded, tmp_path, options, problem):
    with pytest.raises(BadConfig, match=problem):
        _train(graded, tmp_path / "run", **options)


def test_ordinal_needs_grades_not_names(tmp_path):
    root = graded_csvs(tmp_path / "named", n_train=10, n_val=5)
    for split in ("train", "val"):
        frame = pd.read_csv(root / f"{split}.csv")
        frame["label"] = frame["label"].map(dict(enumerate("abcde")))
        frame.to_csv(root / f"{split}.csv", index=False)
    with pytest.raises(BadConfig, match="task ordinal: the labels must be the grades 0..K-1"):
        _train(root, tmp_path / "run", task="ordinal")


def test_auto_class_weights_are_sklearns_balanced_and_weight_the_loss():
    import paddle
    from sklearn.utils.class_weight import compute_class_weight
    from palm.engine.losses import ClassificationLoss, resolve_class_weights
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    weights = resolve_class_weights("auto", labels, ["a", "b", "c"])
    assert weights == pytest.approx(compute_class_weight("balanced", classes=np.arange(3), y=labels))
    logits, targets = np.random.default_rng(0).normal(size=(7, 3)), labels
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    w = np.array(weights)[targets]
    expected = -(w * log_p[np.arange(7), targets]).sum() / w.sum()
    got = ClassificationLoss(3, class_weights=weights)(paddle.to_tensor(logits, dtype="float32"),
                                                       paddle.to_tensor(targets))
    assert float(got) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("setting, classes, problem", [
    ([1.0, 2.0], ["a", "b", "c"], "2 weights for 3 classes"),
    ("auto", ["a", "b"], "use pos_weight"),
    ("auto", ["a", "b", "c", "d"], "class 'd' has no training images"),
])
def test_class_weights_that_cannot_apply_are_named(setting, classes, problem):
    from palm.engine.losses import resolve_class_weights
    with pytest.raises(Exception, match=problem):
        resolve_class_weights(setting, np.array([0, 1, 2, 2]), classes)


def test_balanced_sampler_draws_every_class_equally_often():
    from palm.data.loader import SeededBatchSampler, balanced_sample_weights
    labels = np.array([0] * 90 + [1] * 9 + [2] * 1)

    class Listing:
        def __len__(self):
            return len(labels)

    sampler = SeededBatchSampler(Listing(), 10, shuffle=True, drop_last=False, seed=0,
                                 weights=balanced_sample_weights(labels))
    drawn = np.concatenate([np.concatenate(list(iter(sampler))) for _ in range(50)])
    shares = np.bincount(labels[drawn], minlength=3) / len(drawn)
    assert shares == pytest.approx([1 / 3] * 3, abs=0.03)
    def first_epoch() -> list[list[int]]:
        return list(iter(SeededBatchSampler(Listing(), 10, True, False, 0,
                                            balanced_sample_weights(labels))))

    assert first_epoch() == first_epoch()  # seeded: a resumed run draws the same


def test_a_balanced_weighted_ordinal_run_trains(graded, tmp_path):
    run = _train(graded, tmp_path / "run", task="ordinal", class_weights="auto", sampler="balanced",
                 epochs=1)
    saved = config.load_config(run / "config.yaml")
    assert saved["class_weights"] == "auto" and saved["sampler"] == "balanced"
    assert pd.read_csv(run / "metrics.csv")["val_qwk"].notna().all()


def aptos_root(root: Path, n: int = 50, side: int = 32) -> Path:
    """An APTOS-2019 download in miniature: train.csv (id_code,diagnosis), train_images/."""
    rng = np.random.default_rng(2)
    (root / "train_images").mkdir(parents=True)
    rows = []
    for i in range(n):
        grade = i % GRADES
        image = np.clip(rng.normal(40 + 45 * grade, 20, (side, side, 3)), 0, 255).astype(np.uint8)
        cv2.imwrite(str(root / "train_images" / f"id{i:03d}.png"), image)
        rows.append((f"id{i:03d}", grade))
    pd.DataFrame(rows, columns=["id_code", "diagnosis"]).to_csv(root / "train.csv", index=False)
    return root


def idrid_root(root: Path, n_train: int = 20, n_test: int = 10) -> Path:
    grading = root / "B. Disease Grading"
    rng = np.random.default_rng(3)
    for kind, folder, n in (("a. IDRiD_Disease Grading_Training", "a. Training Set", n_train),
                            ("b. IDRiD_Disease Grading_Testing", "b. Testing Set", n_test)):
        images = grading / "1. Original Images" / folder
        images.mkdir(parents=True)
        rows = []
        for i in range(n):
            name = f"IDRiD_{folder[0]}{i:03d}"
            cv2.imwrite(str(images / f"{name}.jpg"), rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
            rows.append((name, i % GRADES, 0))
        labels = grading / "2. Groundtruths"
        labels.mkdir(exist_ok=True)
        pd.DataFrame(rows, columns=["Image name", "Retinopathy grade", "Risk of macular edema "]
                     ).to_csv(labels / f"{kind} Labels.csv", index=False)
    return root


def test_aptos_root_trains_as_grades_on_a_carved_validation_split(tmp_path):
    # photos larger than the input and a cropping augmentation: the carved validation images
    # must still be decoded as eval decodes them, not at the augmentation's larger size
    root = aptos_root(tmp_path / "aptos", side=96)
    run = train_root_run(root, tmp_path / "run", val_fraction=0.2, seed=1, augment="fundus",
                      cache_dir=str(tmp_path / "cache"))
    assert config.load_config(run / "config.yaml")["task"] == "ordinal"  # inferred
    split = pd.read_csv(run / "val_split.csv")
    assert len(split) == 10 and sorted(split["label"].value_counts()) == [2] * GRADES  # stratified
    assert all(path.startswith("../aptos/train_images/") for path in split["path"])
    # the same images are scored by eval through the list; the bare root says how
    metrics = run_eval(str(run / "best.pdparams"), output=str(tmp_path / "eval"),
                       val_csv=str(run / "val_split.csv"), data_root=str(root),
                       ci_resamples=None, device="cpu")
    assert metrics["n"] == 10 and "qwk" in metrics
    chosen = pd.read_csv(run / "best_selection.csv").sort_values("path")
    scored = pd.read_csv(tmp_path / "eval" / "predictions.csv")
    scored["path"] = [str((tmp_path / "eval" / p).resolve()) if not Path(p).is_absolute()
                      else p for p in scored["path"]]
    scored = scored.sort_values("path")
    logits = chosen[[f"logit_{g}" for g in range(GRADES)]].to_numpy()
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(scored[[f"probability_{g}" for g in range(GRADES)]],
                               softmax / softmax.sum(1, keepdims=True), atol=2e-6)
    with pytest.raises(BadConfig, match="APTOS-2019 has no labelled validation images.*val_split.csv"):
        run_eval(str(run / "best.pdparams"), output=str(tmp_path / "eval2"), data_root=str(root),
                 device="cpu")


def test_idrid_root_validates_on_its_testing_set(tmp_path):
    from palm.data.grading import find_grading_layout, grading_sets
    root = idrid_root(tmp_path / "idrid")
    layout = find_grading_layout(root)
    train, val = grading_sets(layout, train_transform=None, val_transform=None)
    assert (layout.name, len(train), len(val)) == ("IDRiD", 20, 10)
    assert train.labels.tolist() == [i % GRADES for i in range(20)]
    assert all("Testing Set" in path for path, _ in val.samples)


@pytest.mark.parametrize("change, problem", [
    ({"diagnosis": 7}, r"train.csv row 4: grade 7 is not one of 0..4"),
    ({"diagnosis": ""}, r"train.csv row 4: grade empty is not one of 0..4"),
    ({"id_code": "nothere"}, r"train.csv row 4: nothere has no image"),
    ({"id_code": "../train"}, r"train.csv row 4: image name '../train' is not a file name"),
])
def test_bad_aptos_rows_are_named(tmp_path, change, problem):
    from palm.data.grading import GradedImageSet, find_grading_layout
    from palm.errors import BadData
    root = aptos_root(tmp_path / "aptos", n=10)
    set_cells(root / "train.csv", 2, change)
    with pytest.raises(BadData, match=problem):
        GradedImageSet(find_grading_layout(root).train)
    kept = GradedImageSet(find_grading_layout(root).train, skip_bad=True)
    assert len(kept) == 9 and "row 4" in kept.skipped[0][0]


def test_synthetic_grading_set_is_an_aptos_download_whose_lesions_follow_the_grade(tmp_path):
    """`palm synth --task ordinal` writes what --data-root finds as APTOS-2019, with APTOS's
    grade proportions, and higher grades carry more lesion pixels (dark red) on the same eye."""
    from palm.data.grading import find_grading_layout
    from palm.data.synth import FundusGeometry
    from palm.data.synth_grading import make_grading_dataset, paint_retinopathy
    from palm.engine.tasks import run_synth
    root = run_synth(str(tmp_path / "aptos"), task="ordinal", n_train=40, image_size="64")
    layout = find_grading_layout(root)
    assert layout.name == "APTOS-2019" and layout.val is None
    grades = pd.read_csv(root / "train.csv")["diagnosis"]
    assert grades.value_counts().sort_index().tolist() == [20, 4, 11, 2, 3]  # 1805:370:999:193:295
    lesion_pixels = []
    for grade in range(GRADES):
        img = np.full((256, 256, 3), (215, 95, 40), np.float32)
        eye = FundusGeometry((128.0, 128.0), 120.0, np.array([128.0, 128.0]),
                             np.array([200.0, 128.0]), 15.0)
        paint_retinopathy(grade, 0.0, img, eye, np.random.default_rng(0))
        lesion_pixels.append(int((np.abs(img - (215, 95, 40)).sum(2) > 30).sum()))
    assert lesion_pixels[0] == 0 and lesion_pixels == sorted(lesion_pixels)
    assert make_grading_dataset(tmp_path / "again", 40, 64) and (
        (tmp_path / "again" / "train_images" / "g3_00000.png").read_bytes()
        == (root / "train_images" / "g3_00000.png").read_bytes())  # same seed, same files


def test_multilabel_run_has_one_logit_per_label_and_picks_by_macro_auc(multilabel_run):
    saved = config.load_config(multilabel_run / "config.yaml")
    assert saved["task"] == "multilabel" and saved["class_names"] == LABELS
    best = json.loads((multilabel_run / "best.json").read_text())
    assert best["num_classes"] == 3 and best["best_metric"] == "val_macro_roc_auc"
    history = pd.read_csv(multilabel_run / "metrics.csv")
    assert history["val_macro_roc_auc"].notna().all() and "val_map" in history


def test_multilabel_evaluation_equals_sklearn_on_its_own_predictions(multilabel_run,
                                                                      multilabel_root, tmp_path):
    out = tmp_path / "eval"
    metrics = run_eval(str(multilabel_run / "best.pdparams"), output=str(out),
                       val_csv=str(multilabel_root / "val.csv"), ci_resamples=100, device="cpu")
    frame = pd.read_csv(out / "predictions.csv")
    truth = frame[[f"label_{n}" for n in LABELS]].to_numpy()
    probs = frame[[f"probability_{n}" for n in LABELS]].to_numpy()
    for j, name in enumerate(LABELS):
        assert metrics["per_label"][name]["roc_auc"] == pytest.approx(
            skm.roc_auc_score(truth[:, j], probs[:, j]), abs=1e-6)
        assert (frame[f"prediction_{name}"] == (probs[:, j] >= 0.5)).all()
    assert metrics["macro_roc_auc"] == pytest.approx(skm.roc_auc_score(truth, probs), abs=1e-6)
    assert metrics["micro_roc_auc"] == pytest.approx(
        skm.roc_auc_score(truth, probs, average="micro"), abs=1e-6)
    assert metrics["map"] == pytest.approx(skm.average_precision_score(truth, probs), abs=1e-6)
    assert (out / "roc_curve.png").stat().st_size > 1000
    low, high = metrics["ci95"]["macro_roc_auc"]
    assert low <= metrics["macro_roc_auc"] <= high


def test_multilabel_predict_gives_a_decision_per_label(multilabel_run, multilabel_root, tmp_path):
    from palm.engine.tasks import run_predict
    out = tmp_path / "preds.csv"
    run_predict(str(multilabel_run / "best.pdparams"), str(multilabel_root / "val"),
                output=str(out), device="cpu", num_workers=0, progress=False)
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["path", *[f"probability_{n}" for n in LABELS],
                                   *[f"prediction_{n}" for n in LABELS], "error"]
    for name in LABELS:
        assert (frame[f"prediction_{name}"] == (frame[f"probability_{name}"] >= 0.5)).all()
    run_predict(str(multilabel_run / "best.pdparams"), str(multilabel_root / "val"),
                output=str(out), device="cpu", num_workers=0, progress=False, resume=True)
    assert len(pd.read_csv(out)) == len(frame)  # resumed into its own CSV


@pytest.mark.parametrize("change, problem", [
    ({"glaucoma": 2}, r"train.csv row 4: glaucoma is 2, not 0 or 1"),
    ({"glaucoma": "yes"}, r"train.csv row 4: glaucoma is 'yes', not 0 or 1"),
])
def test_bad_label_values_are_named(tmp_path, change, problem):
    from palm.errors import BadData
    root = multilabel_csvs(tmp_path / "bad", n_train=8, n_val=4)
    set_cells(root / "train.csv", 2, change)
    with pytest.raises(BadData, match=problem):
        _train(root, tmp_path / "run", task="multilabel", label_columns=LABELS)


def test_a_missing_label_column_and_settings_for_one_label_are_refused(multilabel_root, tmp_path):
    from palm.errors import BadData
    with pytest.raises(BadData, match="no column 'cataract'"):
        _train(multilabel_root, tmp_path / "a", task="multilabel", label_columns=["cataract"])
    with pytest.raises(BadData, match="label column.s. myopia chosen more than once"):
        _train(multilabel_root, tmp_path / "c", task="multilabel",
               label_columns=["myopia", "glaucoma", "myopia"])
    assert not (tmp_path / "c").exists()  # refused before a run folder was made
    with pytest.raises(BadConfig, match="sampler balanced: not available for a multi-label task"):
        _train(multilabel_root, tmp_path / "b", label_columns=LABELS, sampler="balanced")


def test_the_service_answers_per_label_with_predicts_probabilities(multilabel_run, multilabel_root,
                                                                    tmp_path):
    """A multi-label checkpoint served: sigmoid probabilities and a decision per label, the
    same as predict's CSV; the page's fields say whether any label is positive."""
    from palm.engine.tasks import run_predict
    from tests.serve.helpers import make_client, upload
    photo = multilabel_root / "val" / "007.png"  # every label present (7 = 0b111)
    run_predict(str(multilabel_run / "best.pdparams"), str(photo), output=str(tmp_path / "p.csv"),
                device="cpu", num_workers=0, progress=False)
    expected = pd.read_csv(tmp_path / "p.csv").iloc[0]
    with make_client(multilabel_run / "best.pdparams") as client:
        answer = client.post("/v1/predict", files=upload(("007.png", photo.read_bytes()))).json()
    result = answer["results"][0]
    for name in LABELS:
        assert result["probabilities"][name] == pytest.approx(expected[f"probability_{name}"], abs=1e-5)
        assert result["predictions"][name] == expected[f"prediction_{name}"]
    positive = [n for n in LABELS if result["predictions"][n]]
    assert result["prediction"] == int(bool(positive))
    assert result["class_name"] == ("; ".join(positive) or "no finding")


def test_synthetic_findings_are_multilabel_lists_that_train(tmp_path):
    """`palm synth --task multilabel` writes train.csv/val.csv with a 0/1 column per finding
    that `--task multilabel` reads without naming the columns; a glaucomatous cup is paler
    over more of the disc."""
    from palm.data.synth import FundusGeometry
    from palm.data.synth_multilabel import FINDINGS, paint_cup
    from palm.engine.tasks import run_synth
    root = run_synth(str(tmp_path / "findings"), task="multilabel", n_train=24, n_val=12,
                     image_size="48")
    table = pd.read_csv(root / "train.csv")
    assert list(table.columns) == ["path", *FINDINGS] and set(table[list(FINDINGS)].values.ravel()) <= {0, 1}
    cfg = {**config.DEFAULTS, **config.model_config("lenet5"), "train_csv": str(root / "train.csv"),
           "val_csv": str(root / "val.csv"), "task": "multilabel", "image_size": 32,
           "batch_size": 8, "epochs": 1, "num_workers": 0, "device": "cpu", "cache_dir": None,
           "output": str(tmp_path / "run"), "augment": "none"}
    run = run_training(config.validate_config(cfg), progress=False, log=lambda _: None)
    assert json.loads((run / "best.json").read_text())["class_names"] == list(FINDINGS)
    img = np.full((200, 200, 3), (250, 200, 140), np.float32)
    eye = FundusGeometry((100.0, 100.0), 90.0, np.array([100.0, 100.0]), np.array([100.0, 100.0]), 20.0)
    paint_cup(0.0, img, eye, np.random.default_rng(0))
    pale = (img.mean(2) > 225).sum()  # the disc colour averages 197, the cup 242
    assert np.pi * (0.65 * 20) ** 2 < pale < np.pi * (0.9 * 20) ** 2


def test_resuming_with_another_carve_is_refused_and_failed_runs_write_no_split(tmp_path):
    root = aptos_root(tmp_path / "aptos")
    run = train_root_run(root, tmp_path / "run", seed=1)
    recorded = (run / "val_split.csv").read_bytes()
    with pytest.raises(BadConfig, match="resuming would carve another validation split"):
        train_root_run(root, run, seed=2, epochs=2, resume=True)
    assert (run / "val_split.csv").read_bytes() == recorded
    with pytest.raises(BadConfig, match="referable_grade 5"):
        train_root_run(root, tmp_path / "failed", referable_grade=5)
    assert not (tmp_path / "failed" / "val_split.csv").exists()


def test_grade_folders_are_ordered_as_numbers(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for grade in range(11):
            folder = tmp_path / split / str(grade)
            folder.mkdir(parents=True)
            for i in range(2):
                cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    cfg = {**config.DEFAULTS, **config.model_config("lenet5"), "train_dir": str(tmp_path / "train"),
           "val_dir": str(tmp_path / "val"), "task": "ordinal", "image_size": 32, "batch_size": 8,
           "epochs": 1, "num_workers": 0, "device": "cpu", "cache_dir": None,
           "output": str(tmp_path / "run"), "augment": "none"}
    run = run_training(config.validate_config(cfg), progress=False, log=lambda _: None)
    assert json.loads((run / "best.json").read_text())["class_names"] == [str(g) for g in range(11)]


def test_synthetic_sets_never_write_over_a_download_and_name_missing_images(tmp_path):
    from palm.data.grading import find_grading_layout
    from palm.engine.tasks import run_synth
    from palm.errors import BadData
    root = aptos_root(tmp_path / "aptos", n=10)
    before = (root / "train.csv").read_bytes()
    with pytest.raises(BadConfig, match="train.csv already exists"):
        run_synth(str(root), task="ordinal", n_train=10, image_size="32")
    assert (root / "train.csv").read_bytes() == before
    with pytest.raises(BadConfig, match="image_size must be at most 8192"):
        run_synth(str(tmp_path / "huge"), task="ordinal", n_train=10, image_size="100000")
    for path in (root / "train_images").iterdir():
        path.unlink()
    (root / "train_images").rmdir()
    with pytest.raises(BadData, match="APTOS-2019 train.csv without its train_images/ folder"):
        find_grading_layout(root)


def cli_error(command: str, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        cli(command, argv)
    return str(stop.value.code)


def test_eval_takes_another_referable_grade_for_one_evaluation(ordinal_run, graded, multilabel_run,
                                                               multilabel_root, tmp_path):
    out = tmp_path / "eval"
    metrics = run_eval(str(ordinal_run / "best.pdparams"), output=str(out), referable_grade=1,
                       val_csv=str(graded / "val.csv"), ci_resamples=None, device="cpu")
    frame = pd.read_csv(out / "predictions.csv")
    probabilities = frame[[f"probability_{g}" for g in range(GRADES)]].to_numpy()
    assert metrics["referable_grade"] == 1
    assert metrics["referable"]["roc_auc"] == pytest.approx(
        skm.roc_auc_score(frame["label"] >= 1, probabilities[:, 1:].sum(1)), abs=1e-6)
    assert json.loads((ordinal_run / "best.json").read_text())["referable_grade"] == 3  # kept
    for grade in (0, GRADES):
        assert cli_error("eval", ["--checkpoint", str(ordinal_run / "best.pdparams"),
                                  "--val-csv", str(graded / "val.csv"), "--referable-grade",
                                  str(grade), "--output", str(tmp_path / f"e{grade}")]) == (
            f"error: --referable-grade must be a grade 1..{GRADES - 1} of this model, not {grade}")
    assert cli_error("eval", ["--checkpoint", str(multilabel_run / "best.pdparams"), "--val-csv",
                              str(multilabel_root / "val.csv"), "--referable-grade", "2",
                              "--output", str(tmp_path / "ml")]) == (
        "error: --referable-grade applies to grading (ordinal) models; this one is multilabel")


def test_a_train_csv_with_a_row_too_long_is_one_line_naming_it(tmp_path):
    from palm.data.grading import GradedImageSet, find_grading_layout
    from palm.errors import BadData
    root = aptos_root(tmp_path / "aptos", n=10)
    with open(root / "train.csv", "a") as f:
        f.write("id001,2,extra\n")
    with pytest.raises(BadData) as refused:
        GradedImageSet(find_grading_layout(root).train)
    assert "\n" not in str(refused.value)
    assert str(refused.value).startswith(f"{root / 'train.csv'}: cannot read table (ParserError: ")


@pytest.mark.parametrize("weights", [[1.0, 1e308, 1.0], [1.0, 0.0, 2.0], [1.0, -1.0, 1.0],
                                     [1.0, float("nan"), 1.0], [1.0, True, 1.0]])
def test_class_weights_outside_zero_to_a_million_are_refused(weights):
    with pytest.raises(BadConfig, match=r"class_weights .*must be auto, none or a list of "
                                        r"positive numbers up to 1e\+06"):
        config.validate_config({**config.DEFAULTS, "class_weights": weights})
