"""`python tools/eval.py ...` in a checkout: the same as `palm eval ...` (palm/cli/eval.py)."""
from palm.cli.common import cli

if __name__ == "__main__":
    cli("eval")
