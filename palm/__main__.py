"""`python -m palm NAME [options]`: the same as the `palm` command."""
from palm.cli.main import main

main()
