"""palm: fundus-photo classification with PaddlePaddle (pathologic myopia on PALM)."""
import warnings

from palm.runtime import hide_paddle_omp_warning, quiet_paddle_env, tune_cpu_env
from palm.version import __version__  # noqa: F401  (palm.__version__)

# Must run before anything below imports paddle; see palm/runtime.py for the measurements.
if "OMP_NUM_THREADS" in tune_cpu_env():
    hide_paddle_omp_warning()  # the warning is about the value palm just chose
quiet_paddle_env()
# paddle warns at import that ccache (used only to compile C++ extensions) is missing;
# palm compiles nothing, so the warning is noise for every command.
warnings.filterwarnings("ignore", message="No ccache found")
