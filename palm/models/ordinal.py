"""CORAL's output layer for grading networks (Cao, Mirjalili & Raschka 2020, "Rank
consistent ordinal regression for neural networks", Pattern Recognition Letters 140).

A network built with one output (`build_model(name, 1)`) gives a score per image through
its own last layer, whose weights all K-1 binary tasks share; `add_rank_biases` gives it
K-1 learned biases, so it returns the cumulative logits `score + b_k` of P(grade > k),
k = 0..K-2. The biases are a sublayer (`rank_biases.bias` in the state dict, its length
K-1 recording K), added to the network's output by a forward post-hook: the network keeps
its class, layer names and parameter names, so `--pretrained` weights, Grad-CAM's target
layers and the fine-tuning head detection see the network they know, and `paddle.jit.save`
exports the hook with it. A network with auxiliary heads (GoogLeNet in training) gets the
biases added to every head's score.

The network's own last layer keeps its bias, which only shifts all K-1 biases alike.
"""
from __future__ import annotations

from typing import Any

import paddle
import paddle.nn as nn

RANK_BIASES = "rank_biases"


class RankBiases(nn.Layer):
    """K-1 biases, initialised falling ((K-1)/(K-1) ... 1/(K-1), as coral-pytorch's
    CoralLayer), so P(grade > k) falls with k from the first step."""

    def __init__(self, num_grades: int):
        super().__init__()
        if num_grades < 2:
            raise ValueError(f"CORAL needs at least 2 grades, not {num_grades}")
        start = paddle.arange(num_grades - 1, 0, -1, dtype="float32") / (num_grades - 1)
        self.bias = self.create_parameter([num_grades - 1],
                                          default_initializer=nn.initializer.Assign(start))

    def forward(self, score: paddle.Tensor) -> paddle.Tensor:
        """(N, 1) scores -> (N, K-1) cumulative logits."""
        return score.reshape([-1, 1]) + self.bias


def _cumulative_logits(network: nn.Layer, inputs: Any, outputs: Any) -> Any:
    biases = getattr(network, RANK_BIASES)
    if isinstance(outputs, (tuple, list)):  # auxiliary heads: each head's score
        return type(outputs)(biases(score) for score in outputs)
    return biases(outputs)


def add_rank_biases(network: nn.Layer, num_grades: int) -> nn.Layer:
    """`network` (built with one output) returning K-1 CORAL cumulative logits; in place."""
    network.add_sublayer(RANK_BIASES, RankBiases(num_grades))
    network.register_forward_post_hook(_cumulative_logits)
    return network
