"""`python tools/sweep.py ...` in a checkout: the same as `palm sweep ...` (palm/cli/sweep.py)."""
from palm.cli.sweep import cli

if __name__ == "__main__":
    cli()
