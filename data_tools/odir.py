"""`python -m data_tools.odir ...` in a checkout: the same as `palm odir-csv ...` (palm/cli/odir_csv.py)."""
from palm.cli.odir_csv import cli

if __name__ == "__main__":
    cli()
