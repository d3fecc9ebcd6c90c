"""`python tools/serve.py ...` in a checkout: the same as `palm serve ...` (palm/cli/serve.py)."""
from palm.cli.common import cli

if __name__ == "__main__":
    cli("serve")
