"""`python tools/benchmark_data.py ...` in a checkout: the same as `palm benchmark-data ...` (palm/cli/benchmark_data.py)."""
from palm.cli.benchmark_data import cli

if __name__ == "__main__":
    cli()
