"""The one predictions schema: logits -> probabilities, and the columns of a predictions CSV.

Networks with auxiliary heads (GoogLeNet, Inception-v3 in training) return a tuple whose
first element is the main logits; one logit means a sigmoid (two-class) model, K logits a
softmax model. Both rules live here once, for training, evaluation, prediction and Grad-CAM,
and so does the reading of a grading (ordinal) model's outputs, whichever loss trained it
(`Grader`: ce, CORAL or a grade regression -> grades, grade probabilities or none, expected
grade, referable score).

Every predictions CSV palm writes (eval's, predict's, the cross-validation's) and every
answer of the service name the same things the same way: `path`, `label` (eval only), the
probabilities (`probability`: P(positive) for one logit; `probability_<class>` each for K
classes; none for a grade regression), `expected_grade` (grading models; a regression's
score), `prediction` (the class index or grade), `class_name` and `error`. Readers of such a CSV
(compare, report, cv) go through `read_predictions_csv` and the helpers below, never through
their own idea of the column names.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence, TypeVar

import numpy as np
import pandas as pd
from scipy.special import expit, softmax

from palm.errors import BadData
from palm.io_utils import read_csv
from palm.metrics.ordinal import REFERABLE_GRADE, default_cut_points, grades_at

T = TypeVar("T")

PATH = "path"
LABEL = "label"
PROBABILITY = "probability"  # P(positive class) of a one-logit model
PROBABILITY_PREFIX = "probability_"  # + class name: softmax probability of each class
PREDICTION = "prediction"  # class index: at the threshold (one logit), else argmax
CLASS_NAME = "class_name"
ERROR = "error"
# ordinal models: the mean grade under the predicted grade probabilities
EXPECTED_GRADE = "expected_grade"
# columns every predictions CSV palm writes has (eval's and predict's)
REQUIRED_COLUMNS = (PATH, PREDICTION, CLASS_NAME, ERROR)
# names of files written before the one schema, read as their schema names
LEGACY_NAMES = {"file": PATH}
LEGACY_PROBABILITY_PREFIX = "prob_"


def main_output(outputs: T | Sequence[T]) -> T:
    """The main logits of a model that may also return auxiliary heads (main first)."""
    return outputs[0] if isinstance(outputs, (tuple, list)) else outputs


def probabilities(logits: Any, temperature: float = 1.0, multilabel: bool = False) -> np.ndarray:
    """Sigmoid of a single logit -> (N,) P(positive); softmax over K logits -> (N, K); a
    sigmoid of each of a multi-label model's logits -> (N, L); of logits / temperature
    (temperature scaling, see palm.metrics.fit_temperature).

    `logits`: (N, 1) or (N, K) as a numpy array or anything `np.asarray` takes (float32 out).
    """
    logits = np.asarray(logits, dtype=np.float32)
    if temperature != 1.0:
        logits = logits / np.float32(temperature)
    if multilabel:
        return expit(logits)
    if logits.shape[-1] == 1:
        return expit(logits.reshape(-1))
    return softmax(logits, axis=-1)


def probability_columns(class_names: Sequence[str], num_outputs: int) -> list[str]:
    """`probability` (of the positive class) for one logit, else `probability_<class>` each
    (`probability_<index>` when the class names do not match the outputs)."""
    if num_outputs == 1:
        return [PROBABILITY]
    names = list(class_names) if len(class_names) == num_outputs else range(num_outputs)
    return [f"{PROBABILITY_PREFIX}{name}" for name in names]


def prediction_columns(class_names: Sequence[str], num_outputs: int, labelled: bool,
                       task: str | None = None, ordinal_loss: str = "ce") -> list[str]:
    """The one predictions.csv schema of eval (labelled) and predict:
    path, [label], probability / probability_<class>..., [expected_grade (ordinal task)],
    prediction, class_name, error. A grade regression has no grade probabilities: its
    expected_grade is the model's score."""
    probabilities = ([] if task == "ordinal" and ordinal_loss == "regression"
                     else probability_columns(class_names, num_outputs))
    return [PATH, *([LABEL] if labelled else []), *probabilities,
            *([EXPECTED_GRADE] if task == "ordinal" else []), PREDICTION, CLASS_NAME, ERROR]


def expected_grades(y_prob: np.ndarray) -> np.ndarray:
    """(N,) mean grade of (N, K) grade probabilities."""
    y_prob = np.asarray(y_prob, dtype=np.float64)
    return y_prob @ np.arange(y_prob.shape[1])


# How an ordinal (grading) model is trained and read (palm.engine.losses, Grader below):
# ce: softmax over K grade logits; coral: one score + K-1 learned biases give the cumulative
# logits of P(grade > k) (Cao, Mirjalili & Raschka 2020); regression: one score trained
# with MSE against the grade, cut into grades at cut-points tuned on the selection images
ORDINAL_LOSSES = ("ce", "coral", "regression")


def ordinal_loss_of(meta: Mapping[str, Any]) -> str:
    """The ordinal loss a checkpoint was trained with ("ce" for one saved before the choice)."""
    return str(meta.get("ordinal_loss") or "ce")


def ordinal_outputs(num_grades: int, ordinal_loss: str) -> int:
    """Outputs of a grading network: K logits (ce), K-1 cumulative logits (coral), one
    score (regression)."""
    return {"ce": num_grades, "coral": num_grades - 1, "regression": 1}[ordinal_loss]


def coral_probabilities(exceed: Any) -> np.ndarray:
    """(N, K) grade probabilities of (N, K-1) P(grade > k): P(0) = 1 - P(>0), P(k) =
    P(>k-1) - P(>k), P(K-1) = P(>K-2). CORAL's ordered biases make P(> k) fall with k (Cao
    et al. 2020, theorem 1), so these are the plain differences; the running minimum keeps
    them a distribution should a model's biases not be ordered."""
    exceed = np.minimum.accumulate(np.asarray(exceed, dtype=np.float64), axis=1)
    ones, zeros = np.ones((len(exceed), 1)), np.zeros((len(exceed), 1))
    return -np.diff(np.hstack([ones, exceed, zeros]), axis=1)


@dataclass(frozen=True)
class GradeReadout:
    """What a grading model says of each image (N rows).

    Attributes:
        grades: (N,) predicted grade.
        probabilities: (N, K) grade probabilities; None for a regression (it has none).
        expected: (N,) expected grade under the probabilities, or a regression's score.
        referable: (N,) ranks the images as referable: P(grade >= referable_grade), or a
            regression's score.
        referable_threshold: referable when `referable` >= this (0.5, or the cut-point
            below the referable grade).
    """

    grades: np.ndarray
    probabilities: np.ndarray | None
    expected: np.ndarray
    referable: np.ndarray
    referable_threshold: float


@dataclass(frozen=True)
class Grader:
    """The one conversion of a grading model's outputs into grades, for every ordinal loss:
    training's epoch selection, eval, predict, the service and exported predictors.

    `scores(logits)` gives what test-time augmentation may average (ce: softmax grade
    probabilities; coral: P(grade > k); regression: the score, (N,)); `read(scores)` the
    grades, probabilities, expected grade and referable score (`GradeReadout`).
    """

    ordinal_loss: str
    num_grades: int
    referable_grade: int = REFERABLE_GRADE
    cut_points: tuple[float, ...] | None = None  # regression; None: k - 0.5
    temperature: float = 1.0  # ce only (palm.metrics.fit_temperature)

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> Grader | None:
        """The grader of a checkpoint's sidecar; None unless its task is ordinal."""
        if meta.get("task") != "ordinal":
            return None
        cuts = meta.get("cut_points")
        return cls(ordinal_loss_of(meta), len(meta.get("class_names") or ()) or int(meta["num_classes"]),
                   int(meta.get("referable_grade", REFERABLE_GRADE)),
                   tuple(float(c) for c in cuts) if cuts is not None else None,
                   float(meta.get("temperature", 1.0)))

    @property
    def cuts(self) -> np.ndarray:
        return (default_cut_points(self.num_grades) if self.cut_points is None
                else np.asarray(self.cut_points, dtype=np.float64))

    def scores(self, logits: Any) -> np.ndarray:
        """(N, K), (N, K-1) or (N,) of (N, outputs) network outputs (main head's)."""
        logits = np.asarray(logits, dtype=np.float32).reshape(len(logits), -1)
        if self.ordinal_loss == "ce":
            return probabilities(logits, self.temperature)
        if self.ordinal_loss == "coral":
            return expit(logits)
        return logits[:, 0]

    def read(self, scores: Any) -> GradeReadout:
        scores = np.asarray(scores, dtype=np.float64)
        r = self.referable_grade
        if self.ordinal_loss == "regression":
            scores = scores.reshape(-1)
            return GradeReadout(grades_at(scores, self.cuts), None, scores, scores,
                                float(self.cuts[r - 1]))
        if self.ordinal_loss == "coral":
            probs = coral_probabilities(scores)
            grades = (np.minimum.accumulate(scores, axis=1) > 0.5).sum(axis=1)
        else:
            probs, grades = scores, scores.argmax(axis=1)
        return GradeReadout(grades.astype(np.int64), probs, expected_grades(probs),
                            probs[:, r:].sum(axis=1), 0.5)

    def readout(self, logits: Any) -> GradeReadout:
        return self.read(self.scores(logits))


LABEL_PREFIX = "label_"  # + label name: a multi-label evaluation's truth
PREDICTION_PREFIX = "prediction_"  # + label name: a multi-label model's 0/1 decision


def multilabel_columns(label_names: Sequence[str], labelled: bool) -> list[str]:
    """A multi-label model's predictions CSV: path, [label_<name>...], probability_<name>...,
    prediction_<name>..., error."""
    return [PATH, *([f"{LABEL_PREFIX}{n}" for n in label_names] if labelled else []),
            *[f"{PROBABILITY_PREFIX}{n}" for n in label_names],
            *[f"{PREDICTION_PREFIX}{n}" for n in label_names], ERROR]


def multilabel_frame(files: Sequence[str], y_prob: np.ndarray, thresholds: np.ndarray,
                     label_names: Sequence[str], labels: np.ndarray | None = None) -> pd.DataFrame:
    """One row per image of a multi-label model: each label's probability and its decision
    at that label's threshold (and the truth, when `labels` are given)."""
    y_prob = np.asarray(y_prob, dtype=np.float64).reshape(len(files), len(label_names))
    data: dict[str, Any] = {PATH: list(files)}
    if labels is not None:
        data.update({f"{LABEL_PREFIX}{n}": labels[:, j] for j, n in enumerate(label_names)})
    data.update({f"{PROBABILITY_PREFIX}{n}": y_prob[:, j] for j, n in enumerate(label_names)})
    data.update({f"{PREDICTION_PREFIX}{n}": (y_prob[:, j] >= thresholds[j]).astype(np.int64)
                 for j, n in enumerate(label_names)})
    data[ERROR] = ""
    return pd.DataFrame(data)[multilabel_columns(label_names, labels is not None)]


def is_probability_column(name: str) -> bool:
    """`probability` or a `probability_<class>` column."""
    return name == PROBABILITY or name.startswith(PROBABILITY_PREFIX)


def class_probability_columns(columns: Iterable[str]) -> list[str]:
    """The `probability_<class>` columns of a multi-class CSV, in order ([] for one logit)."""
    return [c for c in columns if c.startswith(PROBABILITY_PREFIX)]


def class_names_from_columns(columns: Iterable[str]) -> list[str]:
    """The class names a multi-class CSV's `probability_<class>` columns spell, in order."""
    return [c.removeprefix(PROBABILITY_PREFIX) for c in class_probability_columns(columns)]


def probabilities_of(frame: pd.DataFrame, class_names: Sequence[str] | None = None) -> np.ndarray:
    """The probabilities of a predictions frame as the model gave them: (N,) from
    `probability` (one logit), else (N, K) from the `probability_<class>` columns, in the
    order of `class_names` when given, else in the frame's."""
    if PROBABILITY in frame.columns:
        return frame[PROBABILITY].to_numpy(dtype=float)
    columns = (probability_columns(class_names, len(class_names)) if class_names is not None
               else class_probability_columns(frame.columns))
    return frame[columns].to_numpy(dtype=float)


def probability_fields(y_prob: np.ndarray, class_names: Sequence[str]) -> dict[str, np.ndarray]:
    """{column: values} of (N,) or (N, K) probabilities in the schema's columns."""
    y_prob = np.asarray(y_prob).reshape(len(y_prob), -1)
    columns = probability_columns(class_names, y_prob.shape[1])
    return {column: y_prob[:, c] for c, column in enumerate(columns)}


def _schema_names(frame: pd.DataFrame) -> pd.DataFrame:
    """`file` -> `path`, `prob_<class>` -> `probability_<class>` (files of earlier versions)."""
    renames = {old: new for old, new in LEGACY_NAMES.items()
               if old in frame.columns and new not in frame.columns}
    renames.update({c: PROBABILITY_PREFIX + c.removeprefix(LEGACY_PROBABILITY_PREFIX)
                    for c in frame.columns if c.startswith(LEGACY_PROBABILITY_PREFIX)})
    return frame.rename(columns=renames)


def read_predictions_csv(path: str | os.PathLike, labelled: bool = False) -> pd.DataFrame:
    """A predictions CSV palm wrote, in the schema's column names; text cells unescaped, and
    a class named "NA" kept as a name (only empty cells are missing).

    Args:
        path: the CSV.
        labelled: require the `label` column (eval's predictions, not predict's).

    Raises:
        BadData: not a readable CSV, or without `path`, `prediction`, the probabilities or
            (when `labelled`) `label`; the message names the file and the columns.
    """
    try:
        frame = read_csv(path, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise BadData(f"{path}: not a readable CSV ({' '.join(str(e).split())})") from None
    frame = _schema_names(frame)
    needed = [PATH, *([LABEL] if labelled else []), PREDICTION]
    missing = [c for c in needed if c not in frame.columns]
    # a grade regression's predictions carry its score (expected_grade), no probabilities
    if not any(is_probability_column(c) or c == EXPECTED_GRADE for c in frame.columns):
        missing.append(f"{PROBABILITY} (or {PROBABILITY_PREFIX}<class>)")
    if missing:
        what = "an evaluation's predictions (with labels)" if labelled else "predictions"
        raise BadData(f"{path}: lacks column(s) {', '.join(missing)}; not {what} palm wrote")
    return frame
