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
