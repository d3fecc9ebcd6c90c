"""`python tools/quantize.py ...` in a checkout: the same as `palm quantize ...` (palm/cli/quantize.py)."""
from palm.cli.common import cli

if __name__ == "__main__":
    cli("quantize")
