"""`python tools/report.py ...` in a checkout: the same as `palm report ...` (palm/cli/report.py)."""
from palm.cli.common import cli

if __name__ == "__main__":
    cli("report")
