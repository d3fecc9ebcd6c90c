"""Command-line entry points: `palm NAME ...`, `python -m palm NAME ...`, and in a source
checkout `python tools/NAME.py ...`; each subcommand is a module here declaring its parser
and the library function it runs (see palm/cli/common.py), run by `cli(NAME)`."""
from palm.cli.common import (COMMANDS, DEBUG_VAR, USER_ERRORS, StoppedByUser, add_data_source,
                             add_verbosity_options, cli, command_for, data_source, run_tool,
                             verbosity)

__all__ = ["COMMANDS", "DEBUG_VAR", "USER_ERRORS", "StoppedByUser", "add_data_source",
           "add_verbosity_options", "cli", "command_for", "data_source", "run_tool", "verbosity"]
