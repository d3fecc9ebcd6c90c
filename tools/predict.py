"""`python tools/predict.py ...` in a checkout: the same as `palm predict ...` (palm/cli/predict.py)."""
from palm.cli.common import cli

if __name__ == "__main__":
    cli("predict")
