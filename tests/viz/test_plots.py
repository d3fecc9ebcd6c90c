"""palm.viz.plots: the figures."""
from __future__ import annotations

import numpy as np

from palm.viz.plots import reliability_figure


def test_reliability_legend_covers_no_point_of_the_curves():
    y = np.ones(60, int)
    y[::10] = 0  # an under-confident model: low probabilities, mostly positive
    p = np.linspace(0.05, 0.35, 60)
    fig = reliability_figure(y, p, uncalibrated=np.clip(p * 0.5, 0, 1))
    fig.canvas.draw()  # Agg canvas: lay the legend out
    top = fig.axes[0]
    box = top.get_legend().get_window_extent()
    points = np.concatenate([top.transData.transform(line.get_xydata())
                             for line in top.get_lines()])
    assert len(points) > 4
    inside = [pt for pt in points if box.contains(*pt)]
    assert not inside, f"legend {box} covers {inside}"
