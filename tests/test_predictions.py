"""The shared building blocks: a network's main output, its probabilities, and the
evaluation transform a checkpoint's sidecar describes."""
from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as F

from palm.data import eval_transform
from palm.predictions import main_output, probabilities


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
