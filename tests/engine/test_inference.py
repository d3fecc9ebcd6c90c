"""palm.engine.inference: the predictors."""
from __future__ import annotations

import numpy as np

from palm.engine.checkpoint import load_checkpoint_model
from palm.engine.inference import DygraphPredictor
from palm.predictions import probabilities


SIZE = 64


def test_batched_and_single_predictions_agree(resnet_checkpoint):
    model, meta = load_checkpoint_model(resnet_checkpoint)
    predictor = DygraphPredictor(model, meta)
    x = np.random.default_rng(0).uniform(-1, 1, (6, 3, SIZE, SIZE)).astype("float32")
    single = np.concatenate([predictor.predict(x[i:i + 1]) for i in range(len(x))])
    batched = predictor.predict(x)
    np.testing.assert_allclose(probabilities(batched), probabilities(single), atol=1e-5)


def test_a_failed_probe_names_the_exception_not_its_last_line():
    from palm.engine.inference import exception_line
    stderr = ("Traceback (most recent call last):\n  File \"<string>\", line 4\n"
              "palm.errors.BadCheckpoint: e: cannot build the predictor ((InvalidArgument) x\n"
              "  [Hint: Expected 0 != 1.]\n)\n")
    assert exception_line(stderr).startswith("palm.errors.BadCheckpoint: e: cannot build")
    assert exception_line("Killed\n") == "Killed" and exception_line("") == "(no message)"
