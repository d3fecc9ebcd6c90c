"""Visual explanations: Grad-CAM heatmaps, plots and the HTML report."""
