"""What a classifier's forward returns, turned into what palm reports.

Networks with auxiliary heads (GoogLeNet, Inception-v3 in training) return a tuple whose
first element is the main logits; one logit means a sigmoid (two-class) model, K logits a
softmax model. Both rules live here once, for training, evaluation, prediction and Grad-CAM.
"""
from __future__ import annotations

from typing import Any, Sequence, TypeVar

import numpy as np
from scipy.special import expit, softmax

T = TypeVar("T")


def main_output(outputs: T | Sequence[T]) -> T:
    """The main logits of a model that may also return auxiliary heads (main first)."""
    return outputs[0] if isinstance(outputs, (tuple, list)) else outputs


def probabilities(logits: Any, temperature: float = 1.0) -> np.ndarray:
    """Sigmoid of a single logit -> (N,) P(positive); softmax over K logits -> (N, K); of
    logits / temperature (temperature scaling, see palm.metrics.fit_temperature).

    `logits`: (N, 1) or (N, K) as a numpy array or anything `np.asarray` takes (float32 out).
    """
    logits = np.asarray(logits, dtype=np.float32)
    if temperature != 1.0:
        logits = logits / np.float32(temperature)
    if logits.shape[-1] == 1:
        return expit(logits.reshape(-1))
    return softmax(logits, axis=-1)
