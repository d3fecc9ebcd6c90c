"""`python tools/export.py ...` in a checkout: the same as `palm export ...` (palm/cli/export.py)."""
from palm.cli.common import cli

if __name__ == "__main__":
    cli("export")
