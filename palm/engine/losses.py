"""Losses: BCE-with-logits for one logit, softmax cross-entropy for K classes, CORAL and
grade regression for ordinal grading, aux heads."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import paddle
import paddle.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

from palm.errors import BadConfig, BadData


class WithAuxiliaryHeads:
    """A loss of the main output plus `aux_weight` x the same loss of each auxiliary head
    (GoogLeNet returns (main, aux1, aux2) in training); Szegedy et al. 2014
    (arXiv:1409.4842) use 0.3."""

    aux_weight = 0.3

    def _single(self, outputs: paddle.Tensor, labels: paddle.Tensor) -> paddle.Tensor:
        raise NotImplementedError

    def __call__(self, outputs: paddle.Tensor | Sequence[paddle.Tensor], labels: paddle.Tensor):
        if isinstance(outputs, (tuple, list)):
            main, *aux = outputs
            loss = self._single(main, labels)
            for logits in aux:
                loss = loss + self.aux_weight * self._single(logits, labels)
            return loss
        return self._single(outputs, labels)


class ClassificationLoss(WithAuxiliaryHeads):
    """BCE-with-logits for one logit (or for each of a multi-label model's), softmax
    cross-entropy for K >= 2 outputs.

    Auxiliary outputs (GoogLeNet returns (main, aux1, aux2) in training) are added with
    weight `aux_weight`; Szegedy et al. 2014 (arXiv:1409.4842) use 0.3.

    Args:
        num_outputs: model outputs (1 = one logit).
        pos_weight: BCE weight of positive samples (e.g. negatives / positives); for a
            multi-label model one per label.
        aux_weight: weight of each auxiliary head's loss.
        label_smoothing: epsilon; targets move eps/K towards every one of K classes (one
            logit: the two classes, so 1 -> 1 - eps/2 and 0 -> eps/2), Szegedy et al. 2016.
        class_weights: K >= 2 outputs: the cross-entropy weight of each class (the mean is
            then weighted, as PyTorch's and Paddle's weighted cross-entropy).
    """

    def __init__(self, num_outputs: int, pos_weight: float | Sequence[float] | None = None,
                 aux_weight: float = 0.3, label_smoothing: float = 0.0,
                 class_weights: Sequence[float] | None = None, multilabel: bool = False):
        self.num_outputs = num_outputs
        self.multilabel = multilabel
        self.pos_weight = pos_weight
        self.aux_weight = aux_weight
        self.label_smoothing = label_smoothing
        self.class_weights = (None if class_weights is None
                              else paddle.to_tensor(list(class_weights), dtype="float32"))

    def _single(self, logits: paddle.Tensor, labels: paddle.Tensor) -> paddle.Tensor:
        logits = logits.astype("float32")
        if self.multilabel:
            target = labels.reshape(logits.shape).astype("float32")
            if self.label_smoothing:
                target = target * (1 - self.label_smoothing) + self.label_smoothing / 2
            pos_weight = (paddle.to_tensor(self.pos_weight, dtype="float32")
                          if self.pos_weight is not None else None)
            return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)
        if self.num_outputs == 1:
            target = labels.reshape([-1, 1]).astype("float32")
            if self.label_smoothing:
                target = target * (1 - self.label_smoothing) + self.label_smoothing / 2
            pos_weight = (paddle.to_tensor([self.pos_weight], dtype="float32")
                          if self.pos_weight is not None else None)
            return F.binary_cross_entropy_with_logits(logits.reshape([-1, 1]), target,
                                                      pos_weight=pos_weight)
        return F.cross_entropy(logits, labels.reshape([-1]).astype("int64"),
                               weight=self.class_weights, label_smoothing=self.label_smoothing)


def coral_loss(logits: paddle.Tensor, grades: paddle.Tensor) -> paddle.Tensor:
    """CORAL's loss (Cao, Mirjalili & Raschka 2020, eq. 4 with unit task weights): the mean
    over the batch of the sum over k = 0..K-2 of the binary cross-entropy of the cumulative
    logit k against [grade > k]."""
    logits = logits.astype("float32")
    levels = paddle.arange(logits.shape[1], dtype="int64").reshape([1, -1])
    target = (grades.reshape([-1, 1]).astype("int64") > levels).astype("float32")
    per_task = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return per_task.sum(axis=1).mean()


def grade_regression_loss(score: paddle.Tensor, grades: paddle.Tensor) -> paddle.Tensor:
    """Mean squared error of one score against the grade. Squared, not smooth L1: the
    quadratic kappa the run is chosen and tuned by penalises a disagreement by its squared
    grade distance, and MSE weighs errors the same way (smooth L1 would forgive the
    two- and three-grade misses the kappa punishes most)."""
    return F.mse_loss(score.astype("float32").reshape([-1]), grades.reshape([-1]).astype("float32"))


class OrdinalLoss(WithAuxiliaryHeads):
    """The loss of a grading network trained with `ordinal_loss` coral or regression (ce
    trains with ClassificationLoss), auxiliary heads weighted by `aux_weight`."""

    def __init__(self, ordinal_loss: str, aux_weight: float = 0.3):
        if ordinal_loss not in ("coral", "regression"):
            raise ValueError(f"OrdinalLoss: ordinal_loss coral or regression, not {ordinal_loss!r}")
        self.ordinal_loss = ordinal_loss
        self.aux_weight = aux_weight

    def _single(self, outputs: paddle.Tensor, labels: paddle.Tensor) -> paddle.Tensor:
        return (coral_loss if self.ordinal_loss == "coral" else grade_regression_loss)(outputs, labels)


def training_loss(num_outputs: int, ordinal_loss: str = "ce", **options) -> WithAuxiliaryHeads:
    """OrdinalLoss for a coral or regression grading run (aux_weight its one option), else
    ClassificationLoss(num_outputs, **options)."""
    if ordinal_loss != "ce":
        return OrdinalLoss(ordinal_loss, options.get("aux_weight", 0.3))
    return ClassificationLoss(num_outputs, **options)


def resolve_class_weights(setting: str | Sequence[float] | None, labels: np.ndarray,
                          classes: Sequence[str]) -> list[float] | None:
    """The class_weights setting as one weight per class (None: unweighted).

    Raises:
        BadConfig: weights for two-class (one-logit) data, a list of the wrong length, or
            "auto" when a class has no training images.
    """
    if setting in (None, "none"):
        return None
    if len(classes) == 2:
        raise BadConfig("class_weights applies to multi-class data; two classes train with one "
                        "logit: use pos_weight", param="class_weights")
    if setting == "auto":
        counts = np.bincount(labels, minlength=len(classes))
        if (counts == 0).any():
            raise BadData(f"class_weights auto: class {classes[int(np.argmin(counts))]!r} has no "
                          "training images")
        return [float(w) for w in compute_class_weight("balanced", classes=np.arange(len(classes)),
                                                       y=labels)]
    if len(setting) != len(classes):
        raise BadConfig(f"class_weights: {len(setting)} weights for {len(classes)} classes "
                        f"{list(classes)}", param="class_weights")
    return [float(w) for w in setting]


def auto_pos_weight(labels: np.ndarray, names: Sequence[str] = ()) -> float | list[float]:
    """negatives / positives of a binary label array (BCE pos_weight that balances classes);
    of each column of (N, L) multi-label labels, named `names`."""
    if labels.ndim == 2:
        return [auto_pos_weight(labels[:, j], [names[j]] if j < len(names) else [str(j)])
                for j in range(labels.shape[1])]
    positives = int((labels == 1).sum())
    if positives == 0:
        label = f" label {names[0]!r}" if names else ""
        raise BadData(f"pos_weight 'auto':{label} has no positive training samples")
    return float((labels == 0).sum()) / positives
