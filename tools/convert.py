"""`python tools/convert.py ...` in a checkout: the same as `palm convert ...` (palm/cli/convert.py)."""
from palm.cli.common import cli

if __name__ == "__main__":
    cli("convert")
