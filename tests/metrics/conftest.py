"""Data shared by the palm.metrics tests."""
import numpy as np
import pytest


@pytest.fixture
def tied_scores():
    """Binary labels and scores rounded to `decimals` (so many ties across classes)."""

    def draw(rng: np.random.Generator, n: int, shift: float = 0.8,
             decimals: int = 1) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 2, n)
        return y, np.round(rng.normal(0, 1, n) + shift * y, decimals)

    return draw
