"""`python -m data_tools.inspect ...` in a checkout: the same as `palm inspect ...` (palm/cli/inspect.py)."""
from palm.cli.inspect import cli

if __name__ == "__main__":
    cli()
