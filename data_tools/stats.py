"""`python -m data_tools.stats ...` in a checkout: the same as `palm stats ...` (palm/cli/stats.py)."""
from palm.cli.stats import cli

if __name__ == "__main__":
    cli()
