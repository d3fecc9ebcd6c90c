"""`python tools/benchmark.py ...` in a checkout: the same as `palm benchmark ...` (palm/cli/benchmark.py)."""
from palm.cli.benchmark import cli

if __name__ == "__main__":
    cli()
