"""`python tools/loadtest.py ...` in a checkout: the same as `palm loadtest ...` (palm/cli/loadtest.py)."""
from palm.cli.loadtest import cli

if __name__ == "__main__":
    cli()
