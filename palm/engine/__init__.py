"""Training, evaluation, prediction and checkpoint handling as plain functions."""
