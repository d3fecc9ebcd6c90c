"""palm: fundus-photo classification with PaddlePaddle (pathologic myopia on PALM)."""
from palm.runtime import tune_cpu_env

# Must run before anything below imports paddle; see palm/runtime.py for the measurements.
tune_cpu_env()

__version__ = "0.1.0"
