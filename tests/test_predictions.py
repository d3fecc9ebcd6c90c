"""The shared building blocks: a network's main output, its probabilities, the one
predictions schema (columns, reading a predictions CSV back), and the evaluation transform a
checkpoint's sidecar describes."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import paddle
import paddle.nn.functional as F
import pytest

from palm import predictions as P
from palm.data import eval_transform
from palm.engine.evaluate import EvalResult, predictions_frame
from palm.errors import BadData
from palm.io_utils import write_csv_atomic
from palm.predictions import main_output, probabilities

PALM = Path(P.__file__).parent


def test_main_output_is_the_first_of_auxiliary_heads():
    main, aux = paddle.ones([2, 3]), paddle.zeros([2, 3])
    assert main_output((main, aux)) is main
    assert main_output([main, aux]) is main
    assert main_output(main) is main


def test_probabilities_agree_with_paddle_and_survive_extreme_logits():
    logits = np.array([[-3.0], [0.0], [2.5]], np.float32)
    np.testing.assert_allclose(probabilities(logits),
                               F.sigmoid(paddle.to_tensor(logits)).numpy().reshape(-1), rtol=1e-6)
    multi = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], np.float32)
    np.testing.assert_allclose(probabilities(multi),
                               F.softmax(paddle.to_tensor(multi), axis=-1).numpy(), rtol=1e-6)
    extreme = probabilities(np.array([[-1000.0], [1000.0]], np.float32))
    np.testing.assert_array_equal(extreme, [0.0, 1.0])  # no overflow, no NaN
    assert probabilities(multi).dtype == np.float32


def test_eval_transform_follows_the_sidecar():
    photo = np.zeros((90, 120, 3), np.uint8)
    photo[20:70, 30:80] = 200  # a bright "fundus" on black
    meta = {"image_size": 32, "normalize": "imagenet", "fundus_crop": True}
    t = eval_transform(meta)
    assert (t.image_size, t.train, t.normalize, t.fundus_crop) == (32, False, "imagenet", True)
    assert t(photo).shape == (3, 32, 32)
    assert eval_transform(meta, fundus_crop=False).fundus_crop is False
    assert eval_transform({"image_size": 16}).normalize == "minus_one_one"


@pytest.mark.parametrize("probs, classes", [
    (np.array([0.1, 0.8, 0.6], np.float32), ["non-PM", "PM"]),
    (np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3]], np.float32),
     ["normal", "NA", "PM"]),  # a class called NA stays a class name
])
def test_an_evaluation_csv_reads_back_as_written(tmp_path, probs, classes):
    """eval's predictions.csv, read back: the probabilities, class names and predictions it
    was written with, whether one logit or K classes."""
    labels = np.array([0, 1, 1])
    frame = predictions_frame(["a.jpg", "b.jpg", "c.jpg"], EvalResult(probs, labels), classes, 0.5)
    write_csv_atomic(tmp_path / "predictions.csv", frame)
    back = P.read_predictions_csv(tmp_path / "predictions.csv", labelled=True)
    assert list(back.columns) == P.prediction_columns(classes, 1 if probs.ndim == 1 else 3, True)
    np.testing.assert_allclose(P.probabilities_of(back), probs, rtol=1e-6)
    expected_names = [] if probs.ndim == 1 else classes
    assert P.class_names_from_columns(back.columns) == expected_names
    assert list(back[P.CLASS_NAME]) == [classes[i] for i in back[P.PREDICTION]]


def test_probabilities_follow_the_class_order_asked_for():
    frame = pd.DataFrame({"probability_b": [0.9, 0.2], "probability_a": [0.1, 0.8]})
    np.testing.assert_array_equal(P.probabilities_of(frame), [[0.9, 0.1], [0.2, 0.8]])
    np.testing.assert_array_equal(P.probabilities_of(frame, ["a", "b"]), [[0.1, 0.9], [0.8, 0.2]])


def test_files_of_earlier_versions_read_in_the_schema_names(tmp_path):
    csv = tmp_path / "old.csv"
    pd.DataFrame({"file": ["a.jpg"], "label": [2], "prob_x": [0.2], "prob_y": [0.3],
                  "prob_z": [0.5], "prediction": [2]}).to_csv(csv, index=False)
    back = P.read_predictions_csv(csv, labelled=True)
    assert back[P.PATH].tolist() == ["a.jpg"]
    assert P.class_names_from_columns(back.columns) == ["x", "y", "z"]


@pytest.mark.parametrize("columns, missing", [
    ({"path": ["a"], "probability": [0.5], "prediction": [1]}, "label"),  # predict's, labelled
    ({"path": ["a"], "label": [1], "prediction": [1]}, "probability"),
    ({"label": [1], "probability": [0.5], "prediction": [1]}, "path"),
    ({"path": ["a"], "label": [1], "probability": [0.5]}, "prediction"),
])
def test_a_csv_without_the_schema_columns_is_refused_naming_file_and_column(tmp_path, columns,
                                                                             missing):
    csv = tmp_path / "p.csv"
    pd.DataFrame(columns).to_csv(csv, index=False)
    with pytest.raises(BadData, match=rf"^{re.escape(str(csv))}: lacks column\(s\) {missing}"):
        P.read_predictions_csv(csv, labelled=True)


def test_an_unreadable_csv_is_refused_in_one_line(tmp_path):
    csv = tmp_path / "p.csv"
    csv.write_bytes(b"path,label\n\xff\xfe,1\n")
    with pytest.raises(BadData, match=rf"^{re.escape(str(csv))}: not a readable CSV") as err:
        P.read_predictions_csv(csv)
    assert "\n" not in str(err.value)


def test_the_probability_columns_are_spelt_only_in_palm_predictions():
    """Everything else asks palm.predictions which columns hold probabilities."""
    spelt = re.compile(r"""startswith\(\(?["'](probability|prob_)""")
    offenders = [f"{path.relative_to(PALM.parent)}:{n}" for path in sorted(PALM.rglob("*.py"))
                 if path != PALM / "predictions.py"
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if spelt.search(line)]
    assert offenders == []
