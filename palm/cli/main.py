"""`palm NAME [options]` and `python -m palm NAME [options]`: run one subcommand.

`palm` alone or `palm --help` lists the subcommands; `palm NAME --help` shows NAME's options.
"""
from __future__ import annotations

import sys

from palm.cli.common import COMMANDS, cli


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {cmd.help}" for name, cmd in COMMANDS.items())
    return (f"usage: palm COMMAND [options]   (palm COMMAND --help for its options)\n\n"
            f"commands:\n{rows}")


def main(argv: list[str] | None = None) -> None:
    """Dispatch `argv` (default: the command line) to the subcommand."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv:  # a malformed command line: argparse's exit code 2
        print(usage(), file=sys.stderr)
        sys.exit(2)
    if argv[0] in ("-h", "--help"):
        print(usage())
        sys.exit(0)
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"palm: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    cli(name, rest)


if __name__ == "__main__":
    main()
