"""Every palm command README.md shows parses as written: the tool exists and takes each flag
(cheap: the parsers run, the tools do not; placeholders such as `...` and `[--x | --y]` are
left out)."""
from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest

from palm.cli import COMMANDS

README = Path(__file__).resolve().parents[1] / "README.md"
SCRIPT = {cmd.checkout: name for name, cmd in COMMANDS.items()}
# `...`, `[--x | --y]`, `a / b`, <...> and capitalised stand-ins such as DIR, N or T
PLACEHOLDER = re.compile(r"\.\.\.|[\[\]|<>]|\s/\s|(?<![\w/.=-])[A-Z]+(?![\w/.-])")
LEAD = re.compile(r"^(python tools/\w+\.py|python -m data_tools\.\w+|python -m palm|palm)(?=\s|$)")


def readme_commands() -> list[tuple[str, list[str]]]:
    """(subcommand, argv) for each complete palm command in README.md."""
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    spans = [" ".join(span.split()) for span in re.findall(r"(?<!`)`([^`]+)`(?!`)", re.sub(r"```.*?```", "", text, flags=re.S))]
    found = []
    for snippet in blocks + spans:
        for line in snippet.replace("\\\n", " ").splitlines():  # join continued lines
            for part in line.split("&&"):
                part = part.strip()
                match = LEAD.match(part)
                if not match or re.search(PLACEHOLDER, part):
                    continue
                words = shlex.split(part)
                lead = match.group(1)
                if lead in ("palm", "python -m palm"):
                    args = words[1:] if lead == "palm" else words[3:]
                    if not args or args[0] not in COMMANDS:
                        continue
                    name, argv = args[0], args[1:]
                elif lead in SCRIPT:
                    name, argv = SCRIPT[lead], words[len(lead.split()):]
                else:
                    continue
                if argv:  # without arguments it names the tool rather than running it
                    found.append((name, argv))
    return found


def test_readme_shows_commands_for_the_main_tools():
    names = {name for name, _ in readme_commands()}
    assert {"train", "eval", "predict", "export", "report"} <= names, names


@pytest.mark.parametrize("name, argv", readme_commands(), ids=lambda x: x if isinstance(x, str) else "")
def test_readme_command_parses(name, argv):
    parser = importlib.import_module(COMMANDS[name].module).get_args_parser()
    parser.exit = lambda status=0, message=None: pytest.fail(f"palm {name} {shlex.join(argv)}: {message}")
    parser.parse_args(argv)
