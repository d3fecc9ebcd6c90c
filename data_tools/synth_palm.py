"""`python -m data_tools.synth_palm ...` in a checkout: the same as `palm synth ...`."""
from palm.cli.common import cli

if __name__ == "__main__":
    cli("synth")
