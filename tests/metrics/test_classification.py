"""palm.metrics.classification against values computed by hand."""
import math

import numpy as np
import pytest

from palm.metrics import classification as metrics

# 4 positives, 4 negatives; at 0.5: tp=3 (0.9, 0.8, 0.6), fn=1 (0.3), fp=1 (0.7), tn=3
Y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
P = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.4, 0.2, 0.1])


def test_binary_metrics_hand_computed():
    m = metrics.binary_metrics(Y, P, threshold=0.5)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (3, 1, 3, 1)
    assert m["confusion_matrix"] == [[3, 1], [1, 3]]
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == m["sensitivity"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(3 / 4)
    # pairs (pos, neg) ranked correctly: 0.9, 0.8 beat all 4; 0.6 beats 3; 0.3 beats 2 -> 13/16
    assert m["roc_auc"] == pytest.approx(13 / 16)
    # AP = sum over positives of precision at its rank / 4: ranks 1,2,4,6 -> 1, 1, 3/4, 4/6
    assert m["average_precision"] == pytest.approx((1 + 1 + 3 / 4 + 4 / 6) / 4)
    assert m["n"] == 8 and m["threshold"] == 0.5


def test_binary_threshold_is_inclusive_and_moves_counts():
    m = metrics.binary_metrics(Y, P, threshold=0.7)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 3, 2)
    m = metrics.binary_metrics(Y, P, threshold=0.95)
    assert m["tp"] == 0 and m["fp"] == 0
    assert m["precision"] == 0.0  # nothing predicted positive: no credit
    assert m["f1"] == 0.0


def test_binary_accepts_column_vector():
    a = metrics.binary_metrics(Y, P[:, None])
    b = metrics.binary_metrics(Y, P)
    assert a == b


def test_single_class_gives_nan_not_crash():
    m = metrics.binary_metrics(np.ones(3, int), np.array([0.2, 0.6, 0.9]))
    assert math.isnan(m["roc_auc"]) and math.isnan(m["average_precision"])
    assert math.isnan(m["specificity"])  # no negatives: rate undefined
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert math.isnan(metrics.roc_auc([0, 0], [0.1, 0.2]))


@pytest.mark.parametrize(
    "y, p",
    [
        (np.zeros(3), np.zeros(4)),  # length mismatch
        (np.zeros(3), np.zeros((3, 2))),  # two columns is not binary
        (np.zeros((3, 2)), np.zeros(3)),
    ],
)
def test_binary_bad_shapes_name_them(y, p):
    with pytest.raises(ValueError, match=r"\(3"):
        metrics.binary_metrics(y, p)


def test_binary_rejects_other_labels_and_nan():
    with pytest.raises(ValueError, match="0 or 1"):
        metrics.binary_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        metrics.binary_metrics([0, 1], [0.1, float("nan")])


def test_youden_threshold():
    # ROC points (threshold: tpr, fpr): 0.9:.25,0  0.8:.5,0  0.7:.5,.25  0.6:.75,.25
    # 0.4:.75,.5  0.3:1,.5 ...; J is max 0.5 at 0.8 and 0.6 -> the higher threshold, 0.8
    assert metrics.youden_threshold(Y, P) == pytest.approx(0.8)
    # perfectly separable: threshold at the lowest positive score
    assert metrics.youden_threshold([0, 0, 1, 1], [0.1, 0.3, 0.6, 0.8]) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="both classes"):
        metrics.youden_threshold([1, 1], [0.2, 0.3])


def test_multiclass_hand_computed():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array(
        [
            [0.8, 0.1, 0.1],  # 0 -> 0
            [0.3, 0.6, 0.1],  # 0 -> 1
            [0.1, 0.7, 0.2],  # 1 -> 1
            [0.2, 0.5, 0.3],  # 1 -> 1
            [0.1, 0.2, 0.7],  # 2 -> 2
            [0.5, 0.1, 0.4],  # 2 -> 0
        ]
    )
    m = metrics.multiclass_metrics(y, p)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    # precision per class: 1/2, 2/3, 1/1; recall: 1/2, 1, 1/2
    assert m["precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["recall"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    f1 = [2 * a * b / (a + b) for a, b in [(1 / 2, 1 / 2), (2 / 3, 1), (1, 1 / 2)]]
    assert m["f1"] == pytest.approx(np.mean(f1))
    # class 0 one-vs-rest: positives 0.8, 0.3 vs negatives 0.1, 0.2, 0.1, 0.5 -> 4 + 3 = 7 / 8
    assert m["roc_auc_per_class"][0] == pytest.approx(7 / 8)
    assert m["num_classes"] == 3 and m["n"] == 6


def test_multiclass_auc_nan_when_a_class_is_absent():
    y = np.array([0, 0, 1, 1])
    p = np.full((4, 3), 1 / 3)
    m = metrics.multiclass_metrics(y, p)
    assert math.isnan(m["roc_auc"])
    assert m["confusion_matrix"] == [[2, 0, 0], [2, 0, 0], [0, 0, 0]]


def test_multiclass_bad_shapes_and_labels():
    with pytest.raises(ValueError, match=r"\(4,\).*\(3, 3\)"):
        metrics.multiclass_metrics(np.zeros(4), np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        metrics.multiclass_metrics(np.array([0, 3]), np.zeros((2, 3)))


def test_dispatch_and_predict_labels():
    assert "specificity" in metrics.classification_metrics(Y, P)
    assert "roc_auc_per_class" in metrics.classification_metrics([0, 1], np.eye(2))
    assert metrics.predict_labels(P, 0.5).tolist() == [1, 1, 1, 0, 1, 0, 0, 0]
    assert metrics.predict_labels(np.array([[0.2, 0.8], [0.9, 0.1]])).tolist() == [1, 0]
