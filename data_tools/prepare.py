"""`python -m data_tools.prepare ...` in a checkout: the same as `palm prepare ...` (palm/cli/prepare.py)."""
from palm.cli.prepare import cli

if __name__ == "__main__":
    cli()
