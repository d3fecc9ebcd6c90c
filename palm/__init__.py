"""palm: fundus-photo classification with PaddlePaddle (pathologic myopia on PALM)."""
import warnings

# set before palm.runtime is imported: its provenance record names this version
__version__ = "0.1.0"

from palm.runtime import hide_paddle_omp_warning, quiet_paddle_env, tune_cpu_env  # noqa: E402

# Must run before anything below imports paddle; see palm/runtime.py for the measurements.
if "OMP_NUM_THREADS" in tune_cpu_env():
    hide_paddle_omp_warning()  # the warning is about the value palm just chose
quiet_paddle_env()
# paddle warns at import that ccache (used only to compile C++ extensions) is missing;
# palm compiles nothing, so the warning is noise for every command.
warnings.filterwarnings("ignore", message="No ccache found")
