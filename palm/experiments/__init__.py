"""Experiments built on the engine: k-fold cross-validation, ablation sweeps and the trials they run."""
