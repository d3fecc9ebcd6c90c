"""`python tools/train.py ...` in a checkout: the same as `palm train ...` (palm/cli/train.py)."""
from palm.cli.common import cli

if __name__ == "__main__":
    cli("train")
