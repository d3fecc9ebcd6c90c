"""Command-line entry points: `palm NAME ...`, `python -m palm NAME ...`, and in a source
checkout `python tools/NAME.py ...`; each subcommand is a module here with a `cli()`."""
from palm.cli.common import (COMMANDS, DEBUG_VAR, USER_ERRORS, StoppedByUser, add_data_source,
                             add_verbosity_options, command_for, data_source, run_tool, verbosity)

__all__ = ["COMMANDS", "DEBUG_VAR", "USER_ERRORS", "StoppedByUser", "add_data_source",
           "add_verbosity_options", "command_for", "data_source", "run_tool", "verbosity"]
