"""`python tools/weights.py ...` in a checkout: the same as `palm weights ...` (palm/cli/weights.py)."""
from palm.cli.common import cli

if __name__ == "__main__":
    cli("weights")
