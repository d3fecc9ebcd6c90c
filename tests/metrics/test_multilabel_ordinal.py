"""Multi-label and ordinal metrics equal scikit-learn's on the same arrays; undefined
values are NaN with a reason; bootstrap intervals equal a loop of scikit-learn calls."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from palm import metrics as M

LABELS = ["normal", "diabetes", "glaucoma", "myopia"]


@pytest.fixture
def multilabel():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (120, 4))
    p = np.clip(0.35 * y + rng.uniform(0, 0.65, y.shape), 0, 1).round(2)  # with ties
    return y, p


def test_per_label_and_pooled_figures_are_sklearns(multilabel):
    y, p = multilabel
    m = M.multilabel_metrics(y, p, LABELS, threshold=[0.5, 0.4, 0.5, 0.6])
    for j, name in enumerate(LABELS):
        row = m["per_label"][name]
        assert row["roc_auc"] == pytest.approx(skm.roc_auc_score(y[:, j], p[:, j]))
        assert row["average_precision"] == pytest.approx(skm.average_precision_score(y[:, j], p[:, j]))
        decided = p[:, j] >= [0.5, 0.4, 0.5, 0.6][j]
        assert row["sensitivity"] == pytest.approx(skm.recall_score(y[:, j], decided))
        assert row["specificity"] == pytest.approx(skm.recall_score(1 - y[:, j], ~decided))
        assert row["positives"] == y[:, j].sum() and row["undefined"] is None
    assert m["macro_roc_auc"] == pytest.approx(skm.roc_auc_score(y, p, average="macro"))
    assert m["micro_roc_auc"] == pytest.approx(skm.roc_auc_score(y, p, average="micro"))
    assert m["map"] == pytest.approx(skm.average_precision_score(y, p, average="macro"))
    # ODIR-2019's evaluation: kappa, micro F1 and AUC over the flattened pairs at 0.5
    flat, decided = y.ravel(), (p.ravel() >= 0.5).astype(int)
    want = (skm.cohen_kappa_score(flat, decided) + skm.f1_score(flat, decided, average="micro")
            + skm.roc_auc_score(flat, p.ravel())) / 3
    assert m["odir"]["score"] == pytest.approx(want)


def test_a_label_without_positives_is_undefined_not_a_crash(multilabel):
    y, p = multilabel
    y = y.copy()
    y[:, 2] = 0
    m = M.multilabel_metrics(y, p, LABELS)
    assert math.isnan(m["per_label"]["glaucoma"]["roc_auc"])
    assert m["per_label"]["glaucoma"]["undefined"] == "no positive images"
    defined = [skm.roc_auc_score(y[:, j], p[:, j]) for j in (0, 1, 3)]
    assert m["macro_roc_auc"] == pytest.approx(np.mean(defined))
    ci = M.multilabel_intervals(y, p, resamples=50)
    assert all(math.isnan(v) for v in ci["roc_auc_per_label"][2])


@pytest.mark.parametrize("y, p, problem", [
    (np.array([[0, 2]]), np.array([[0.1, 0.2]]), "0 or 1"),
    (np.array([[0, 1]]), np.array([[0.1, 1.2]]), r"\[0, 1\]"),
    (np.array([[0, 1]]), np.array([0.1, 0.2]), "one shape"),
])
def test_bad_multilabel_inputs_are_named(y, p, problem):
    with pytest.raises(ValueError, match=problem):
        M.multilabel_metrics(y, p, ["a", "b"])


def test_macro_auc_interval_is_a_bootstrap_of_images(multilabel):
    y, p = multilabel
    ci = M.multilabel_intervals(y, p, resamples=200, seed=3)
    drawn = np.random.default_rng(3).integers(0, len(y), (200, len(y)))
    loop = [np.mean([skm.roc_auc_score(y[d, j], p[d, j]) for j in range(4)]) for d in drawn]
    assert ci["macro_roc_auc"] == pytest.approx(list(np.percentile(loop, [2.5, 97.5])))
    for j in range(4):
        low, high = ci["roc_auc_per_label"][j]
        assert low < skm.roc_auc_score(y[:, j], p[:, j]) < high


def test_tuned_thresholds_are_youdens_per_label(multilabel):
    y, p = multilabel
    cuts = M.tuned_thresholds(y, p)
    for j in range(4):
        fpr, tpr, thresholds = skm.roc_curve(y[:, j], p[:, j])
        assert (tpr - fpr)[list(thresholds).index(cuts[j])] == pytest.approx(max(tpr - fpr))


@pytest.fixture
def graded():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, 150)
    logits = -0.8 * (np.arange(5)[None, :] - y[:, None]) ** 2 + rng.normal(0, 1.2, (150, 5))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, p


def test_ordinal_figures_are_sklearns(graded):
    y, p = graded
    m = M.ordinal_metrics(y, p, referable_grade=2)
    pred = p.argmax(1)
    assert m["qwk"] == pytest.approx(skm.cohen_kappa_score(y, pred, weights="quadratic"))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, pred))
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()
    referable = (y >= 2).astype(int)
    assert m["referable"]["roc_auc"] == pytest.approx(skm.roc_auc_score(referable, p[:, 2:].sum(1)))
    assert M.expected_grade(p) == pytest.approx(p @ np.arange(5))
    # a regression model's grades (from cut-points) are scored as given
    given = np.clip(pred + 1, 0, 4)
    assert M.ordinal_metrics(y, p, y_pred=given)["qwk"] == pytest.approx(
        skm.cohen_kappa_score(y, given, weights="quadratic"))


def test_kappa_interval_is_a_bootstrap_of_images(graded):
    y, p = graded
    ci = M.ordinal_intervals(y, p, resamples=200, seed=5)
    drawn = np.random.default_rng(5).integers(0, len(y), (200, len(y)))
    loop = [skm.cohen_kappa_score(y[d], p.argmax(1)[d], labels=list(range(5)), weights="quadratic")
            for d in drawn]
    assert ci["qwk"] == pytest.approx(list(np.percentile(loop, [2.5, 97.5])))


def test_undefined_kappa_and_bad_referable_grade(graded):
    y, p = graded
    assert math.isnan(M.quadratic_kappa([1, 1], [1, 1], 5))
    with pytest.raises(ValueError, match="referable_grade must lie in 1..4"):
        M.ordinal_metrics(y, p, referable_grade=5)


def test_grade_metrics_of_a_score_are_sklearns():
    """A regression's grades come from cut-points on its score, which also ranks the
    referable split (decided at the cut-point below the referable grade)."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 5, 120)
    score = y + rng.normal(0, 0.7, 120)
    cuts = M.default_cut_points(5)
    pred = M.grades_at(score, cuts)
    np.testing.assert_array_equal(pred, np.digitize(score, [0.5, 1.5, 2.5, 3.5]))
    got = M.grade_metrics(y, pred, 5, score, referable_grade=2, referable_threshold=cuts[1])
    assert got["qwk"] == pytest.approx(skm.cohen_kappa_score(y, pred, weights="quadratic"))
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, pred))
    assert got["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=range(5)).tolist()
    assert got["referable"]["roc_auc"] == pytest.approx(skm.roc_auc_score(y >= 2, score))
    assert got["referable"]["sensitivity"] == pytest.approx(skm.recall_score(y >= 2, pred >= 2))
    interval = M.grade_intervals(y, pred, 5, score, 2, resamples=200)
    assert interval["qwk"][0] <= got["qwk"] <= interval["qwk"][1]
