"""`python tools/cv.py ...` in a checkout: the same as `palm cv ...` (palm/cli/cv.py)."""
from palm.cli.cv import cli

if __name__ == "__main__":
    cli()
