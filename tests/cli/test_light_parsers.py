"""`--help` and argument errors answer without importing Paddle, and Paddle's import-time
OMP_NUM_THREADS warning is not shown for the value palm set itself."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from palm.cli.common import COMMANDS

REPO = Path(__file__).resolve().parents[2]

# every command parses with light imports and names its library function (RUNS)
NOT_CONVERTED: set[str] = set()
CONVERTED = sorted(set(COMMANDS) - NOT_CONVERTED)


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHONPATH": str(REPO), **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=environ, cwd=REPO, timeout=120)


def test_only_the_listed_commands_are_not_converted():
    for name in COMMANDS:
        module = importlib.import_module(COMMANDS[name].module)
        assert hasattr(module, "RUNS") == (name not in NOT_CONVERTED), name


def test_parsers_help_and_argument_errors_do_not_import_paddle():
    code = f"""
import contextlib, importlib, io, sys
from palm.cli.common import COMMANDS, cli
for name in {CONVERTED!r}:
    parser = importlib.import_module(COMMANDS[name].module).get_args_parser("palm " + name)
    parser.format_help()
    for argv, code in ((["--help"], 0), (["--no-such-option"], 2)):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                cli(name, argv)
            except SystemExit as e:
                assert e.code == code, (name, argv, e.code)
with contextlib.redirect_stderr(io.StringIO()):
    try:
        cli("train", ["--epochs", "many"])  # argparse: not an int
    except SystemExit as e:
        assert e.code == 2, e.code
try:
    cli("train", ["--epochs", "0", "--data-root", "nowhere"])  # palm's own range check
except SystemExit as e:
    assert e.code == "error: --epochs must be >= 1, got 0", e.code
with contextlib.redirect_stdout(io.StringIO()):
    try:
        cli("eval", ["--help"])
    except SystemExit as e:
        assert e.code == 0, e.code
print("paddle" in sys.modules)
"""
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_cli_constants_agree_with_the_library():
    from palm.cli import benchmark, serve, sweep
    from palm.cli.common import ENGINES, PRECISIONS, TRUST_HELP
    from palm.bench import settings
    from palm.engine import inference
    from palm.experiments import sweep as sweeps, trials
    from palm.serve import config as service
    from palm import weights

    assert (ENGINES, PRECISIONS) == (inference.ENGINES, inference.PRECISIONS)
    assert benchmark.SECTIONS == settings.SECTIONS
    assert (sweep.MODES, sweep.DEFAULT_METRIC, sweep.BACKENDS) == (
        sweeps.MODES, sweeps.DEFAULT_METRIC, trials.BACKENDS)
    assert (serve.MIN_TOKEN_CHARS, serve.TOKEN_ENV) == (service.MIN_TOKEN_CHARS,
                                                          service.TOKEN_ENV)
    assert TRUST_HELP == weights.TRUST_HELP


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2,
                    reason="palm sets OMP_NUM_THREADS=1 on one core: Paddle warns only above 1")
@pytest.mark.slow  # child processes importing Paddle (5 s)
def test_paddle_omp_warning_hidden_for_palms_setting_shown_for_the_users():
    environ = {k: v for k, v in os.environ.items()
               if k not in ("OMP_NUM_THREADS", "PALM_NO_CPU_TUNING")}
    done = subprocess.run(
        [sys.executable, "-c", "import os, sys; import palm, paddle; "
                               "sys.stderr.write('after\\n'); print(os.environ['OMP_NUM_THREADS'])"],
        capture_output=True, text=True, env={**environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 1  # palm's value, which Paddle warns about
    assert "OMP_NUM_THREADS" not in done.stderr and "after" in done.stderr
    mine = subprocess.run([sys.executable, "-c", "import palm, paddle"], capture_output=True,
                          text=True, timeout=120,
                          env={**environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO)})
    assert "OMP_NUM_THREADS set to 2" in mine.stderr  # the user's own choice: Paddle's say


def test_drop_lines_keeps_every_other_line():
    from palm.runtime import _DropLines

    class Sink:
        text = ""

        def write(self, s):
            self.text += s

    sink = Sink()
    quiet = _DropLines(sink, ("WARNING: OMP",))
    for piece in ("keep 1\nWARNING: OMP_NUM", "_THREADS set to 2\n", "keep 2\n", "tail"):
        quiet.write(piece)
    quiet.close_lines()
    assert sink.text == "keep 1\nkeep 2\ntail"
