"""Command-line entry points: `palm NAME ...`, `python -m palm NAME ...`, and in a source
checkout `python tools/NAME.py ...`; each subcommand is a module here with a `cli()`."""
from palm.cli.common import COMMANDS, DEBUG_VAR, USER_ERRORS, StoppedByUser, command_for, run_tool

__all__ = ["COMMANDS", "DEBUG_VAR", "USER_ERRORS", "StoppedByUser", "command_for", "run_tool"]
