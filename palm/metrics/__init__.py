"""Metrics of classification results: pure functions of numpy arrays (scikit-learn, SciPy).

One module per concern, all re-exported here so `from palm.metrics import X` works for each:
- `classification`: input checks, binary and multi-class metrics, AUC, AP, Youden's threshold,
  predicted labels (undefined values are NaN, never an exception or a silent 0);
- `intervals`: Wilson and stratified-bootstrap 95 % intervals, DeLong's AUC interval, the
  intervals of every headline metric (`binary_intervals`, `multiclass_intervals`, `ci_method`);
- `comparison`: DeLong's paired test, the paired bootstrap of an AUC difference, McNemar;
  for graders the paired bootstrap of a kappa difference, for multi-label models DeLong per
  label and the paired bootstrap of a macro-AUC difference;
- `operating_points`: sensitivity at fixed specificity and the reverse, thresholds;
- `calibration`: ECE, adaptive ECE, MCE, Brier score and temperature scaling;
- `multilabel`: per-label and pooled metrics of L yes/no labels (macro/micro AUC, mAP, ODIR);
- `ordinal`: graded outcomes (quadratic kappa, MAE, the referable split).
Private helpers: `_counts` (vectorised bootstrap histograms), `_delong` (DeLong covariance).
Imports among them run one way: classification <- _counts, _delong <- intervals <-
operating_points, multilabel, ordinal <- comparison; calibration needs classification only.

Example:
    >>> binary_metrics(np.array([0, 1, 1]), np.array([0.2, 0.7, 0.4]))["accuracy"]
    0.6666666666666666
"""
from palm.metrics._counts import (auc_rows, average_precision_rows, f1_rows,
                                  stratified_resamples)
from palm.metrics._delong import delong_covariance
from palm.metrics.calibration import (ECE_BINS, TEMPERATURE_RANGE, apply_temperature,
                                      brier_score, calibration_errors, fit_temperature,
                                      negative_log_likelihood, rescale_threshold)
from palm.metrics.classification import (as_binary_inputs, as_multiclass_inputs,
                                         average_precision, binary_metrics,
                                         classification_metrics, is_binary_output,
                                         multiclass_metrics, predict_labels, roc_auc,
                                         youden_threshold)
from palm.metrics.comparison import (bootstrap_p, delong_test, mcnemar_test,
                                     multilabel_delong, paired_bootstrap_auc_difference,
                                     paired_bootstrap_kappa_difference,
                                     paired_bootstrap_macro_auc_difference)
from palm.metrics.intervals import (DEFAULT_RESAMPLES, PROPORTIONS, binary_intervals,
                                    bootstrap_auc, bootstrap_binary, ci_method,
                                    delong_interval, multiclass_intervals,
                                    percentile_interval, resample_indices, resample_weights,
                                    wilson_interval)
from palm.metrics.multilabel import (as_multilabel_inputs, multilabel_intervals,
                                     multilabel_metrics, odir_score, tuned_thresholds,
                                     undefined_reason, weighted_auc_rows)
from palm.metrics.ordinal import (REFERABLE_GRADE, default_cut_points, expected_grade,
                                  grade_intervals, grade_metrics, grades_at, kappa_rows,
                                  ordinal_intervals, ordinal_metrics, quadratic_kappa,
                                  referable_probability, tune_cut_points)
# binds palm.metrics.operating_points to the function, over its module of the same name: take
# the module's other names with `from palm.metrics.operating_points import ...` (an
# `import palm.metrics.operating_points as m` gives the function)
from palm.metrics.operating_points import (OPERATING_TARGETS, operating_points,
                                           parse_operating_point, threshold_for)

__all__ = [
    "DEFAULT_RESAMPLES", "ECE_BINS", "OPERATING_TARGETS", "PROPORTIONS", "REFERABLE_GRADE",
    "TEMPERATURE_RANGE", "apply_temperature", "as_binary_inputs", "as_multiclass_inputs",
    "as_multilabel_inputs", "auc_rows", "default_cut_points", "expected_grade",
    "grade_intervals", "grade_metrics", "grades_at", "kappa_rows", "tune_cut_points",
    "multilabel_intervals", "multilabel_metrics", "odir_score", "ordinal_intervals",
    "ordinal_metrics", "quadratic_kappa", "referable_probability", "resample_indices",
    "resample_weights",
    "tuned_thresholds", "undefined_reason", "weighted_auc_rows",
    "average_precision", "average_precision_rows", "binary_intervals", "binary_metrics",
    "bootstrap_auc", "bootstrap_binary", "brier_score", "calibration_errors", "ci_method",
    "classification_metrics", "delong_covariance", "delong_interval", "delong_test", "f1_rows",
    "fit_temperature", "is_binary_output", "mcnemar_test", "multiclass_intervals",
    "multiclass_metrics", "negative_log_likelihood", "operating_points",
    "bootstrap_p", "multilabel_delong", "paired_bootstrap_auc_difference",
    "paired_bootstrap_kappa_difference", "paired_bootstrap_macro_auc_difference",
    "parse_operating_point", "percentile_interval",
    "predict_labels", "rescale_threshold", "roc_auc", "stratified_resamples", "threshold_for",
    "wilson_interval", "youden_threshold",
]
