"""`python tools/cam.py ...` in a checkout: the same as `palm cam ...` (palm/cli/cam.py)."""
from palm.cli.common import cli

if __name__ == "__main__":
    cli("cam")
