"""`python tools/compare.py ...` in a checkout: the same as `palm compare ...` (palm/cli/compare.py)."""
from palm.cli.common import cli

if __name__ == "__main__":
    cli("compare")
