"""`python tools/cache.py ...` in a checkout: the same as `palm cache ...` (palm/cli/cache.py)."""
from palm.cli.common import cli

if __name__ == "__main__":
    cli("cache")
