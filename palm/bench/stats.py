"""The stats section: palm.metrics' intervals and operating points on PALM's validation size,
against a per-resample scikit-learn loop."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from palm import metrics as M


def bench_statistics(repeats: int = 3, n_pos: int = 211, n_neg: int = 189) -> dict[str, Any]:
    """Seconds for eval's statistics on PALM's validation size (best of `repeats`), and the
    vectorised bootstrap's speed-up over a per-resample scikit-learn loop."""
    from sklearn.metrics import roc_auc_score  # scikit-learn only for this comparison

    rng = np.random.default_rng(0)
    y = np.repeat([1, 0], [n_pos, n_neg])
    p = 1 / (1 + np.exp(-(rng.normal(0, 1, len(y)) + 2.0 * (y - 0.5))))

    def best_of(fn: Callable[[], Any]) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    intervals = best_of(lambda: M.binary_intervals(y, p, 0.5, M.DEFAULT_RESAMPLES))
    points = best_of(lambda: M.operating_points(y, p, M.DEFAULT_RESAMPLES))
    auc_only = best_of(lambda: M.bootstrap_auc(y, p, M.DEFAULT_RESAMPLES))
    loop_resamples = 200  # scaled up: the loop is slow

    def loop() -> None:
        pi, ni = M.stratified_resamples(n_pos, n_neg, loop_resamples)
        pos, neg = p[:n_pos], p[n_pos:]
        labels = np.repeat([1, 0], [n_pos, n_neg])
        for a, b in zip(pi, ni):
            roc_auc_score(labels, np.concatenate([pos[a], neg[b]]))

    loop_seconds = best_of(loop) * M.DEFAULT_RESAMPLES / loop_resamples
    return {"cases": len(y), "resamples": M.DEFAULT_RESAMPLES,
            "all_intervals_seconds": intervals, "operating_points_seconds": points,
            "bootstrap_auc_seconds": auc_only, "sklearn_loop_auc_seconds": loop_seconds,
            "vectorised_vs_loop": loop_seconds / auc_only}
