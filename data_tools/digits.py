"""`python -m data_tools.digits ...` in a checkout: the same as `palm digits ...` (palm/cli/digits.py)."""
from palm.cli.digits import cli

if __name__ == "__main__":
    cli()
