"""The HTML report of a run and its evaluation, and the comparison of models on the same images."""
