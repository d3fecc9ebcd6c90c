"""Every command README.md shows runs as written.

Commands are taken from the README's fenced code blocks and from its inline code that starts
with `python ` or `pip ` (` && ` splits a line into commands). Each one is either run or
named in SKIPPED with the reason. Placeholders the text explains (DIR, photos/, `...` for a
checkpoint, `[optional flags]`) get a tiny stand-in, and expensive defaults get TINY_FLAGS
appended (the last value of a flag wins), so the whole README runs in a few minutes on tiny
synthetic data. The fast test checks that every command's options parse; the slow one runs
them all in README order in a scratch folder laid out like a clone (data/PALM, demo_data/palm).
"""
from __future__ import annotations

import importlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"

# Commands not run here, and why; every other README command runs.
SKIPPED = {
    'python -m pip install -e ".[cpu]"': "changes the environment (the new-user check runs it)",
    'python -m pip install -e ".[cpu,test]"': "changes the environment",
    'python -m pip install -e .': "changes the environment",
    'pip install -e ".[bench]"': "changes the environment",
    "python -m pip install paddlepaddle-gpu==3.2.0 -i "
    "https://www.paddlepaddle.org.cn/packages/stable/cu126/": "needs a GPU machine",
    "python -m pytest -q": "the whole suite, this test included",
    "python -m paddle.distributed.launch --nproc_per_node N tools/train.py ... --amp":
        "several GPUs (test_train runs two CPU processes)",
    "python tools/benchmark.py": "minutes per network (test_benchmark covers the tool)",
    "python tools/benchmark.py --table --iters 4": "29 networks, an hour",
    "python tools/benchmark.py --models resnet50 --sections inference,predict "
    "--predict-images 100,500,2000 --repeats 1": "2600 full-size images",
    "python -m data_tools.prepare {xlsx2csv,split,kfold} ...":
        "a synopsis of three subcommands (test_data_tools runs each)",
}

# Stand-ins for the placeholders the README explains in words.
PLACEHOLDERS = [
    (r"\s\[[^\]]*\]", ""),  # [--optional flags]
    (r"--checkpoint \.\.\.", "--checkpoint runs/resnet50/best.pdparams"),
    (r"\bDIR\b", "data/PALM"),
]

# Appended to keep each run tiny: the networks train one epoch at 32 px on 24 images.
TINY_FLAGS = {
    "tools/train.py": ["--epochs", "1", "--image-size", "32", "-b", "8", "--num-workers", "0",
                       "--no-progress"],
    "tools/eval.py": ["--num-workers", "0"],
    "tools/predict.py": ["--num-workers", "0", "--no-progress"],
    "data_tools.synth_palm": ["--n-train", "24", "--n-val", "16", "--image-size", "64"],
    "data_tools.stats": ["--image-size", "32"],
}


def readme_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        for line in block.splitlines():
            commands += [c.strip() for c in line.split(" && ") if c.strip()]
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`([^`]+)`", prose):
        span = " ".join(span.split())  # a span may wrap over lines
        if span.startswith(("python ", "pip ")):
            commands.append(span)
    return list(dict.fromkeys(commands))


def runnable(command: str) -> list[str]:
    """argv of a README command with placeholders filled in and tiny flags appended."""
    for pattern, value in PLACEHOLDERS:
        command = re.sub(pattern, value, command)
    argv = shlex.split(command)
    tool = argv[2] if argv[1] == "-m" else argv[1]
    return argv + TINY_FLAGS.get(tool, [])


def _module_and_args(argv: list[str]) -> tuple[str, list[str]]:
    assert argv[0] == "python", argv
    if argv[1] == "-m":
        return argv[2], argv[3:]
    assert argv[1].startswith("tools/") and argv[1].endswith(".py"), argv
    return argv[1][:-3].replace("/", "."), argv[2:]


TO_RUN = [c for c in readme_commands() if c not in SKIPPED]


def test_the_readme_shows_commands_and_skips_only_listed_ones():
    commands = readme_commands()
    assert len(TO_RUN) >= 15, TO_RUN
    stale = set(SKIPPED) - set(commands)
    assert not stale, f"SKIPPED names commands the README no longer shows: {stale}"


@pytest.mark.parametrize("command", TO_RUN)
def test_readme_command_parses(command):
    """Every option a README command uses exists and takes the value shown."""
    module_name, args = _module_and_args(runnable(command))
    module = importlib.import_module(module_name)
    if hasattr(module, "parse_args"):  # tools/train.py merges its config files
        module.parse_args(args)
    else:
        module.get_args_parser().parse_args(args)


@pytest.fixture(scope="module")
def workspace(palm_root, tmp_path_factory) -> Path:
    """A folder laid out like a clone: tools/, the PALM download in data/PALM, the demo set
    already drawn in demo_data/palm, and photos/ to predict."""
    root = tmp_path_factory.mktemp("readme")
    (root / "tools").symlink_to(REPO / "tools")
    shutil.copytree(palm_root, root / "data" / "PALM")
    shutil.copytree(palm_root, root / "demo_data" / "palm")
    shutil.copytree(palm_root / "PALM-Validation400", root / "photos")
    return root


@pytest.mark.slow
def test_readme_commands_run(workspace):
    env = {**os.environ, "PYTHONPATH": str(REPO), "PALM_CACHE_DIR": str(workspace / "cache")}
    failed = []
    for command in TO_RUN:
        argv = runnable(command)
        done = subprocess.run([sys.executable, *argv[1:]], cwd=workspace, env=env,
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            failed.append(f"{command}\n  ran {shlex.join(argv)}\n  exit {done.returncode}: "
                          f"{done.stderr.strip().splitlines()[-1:] or done.stdout[-300:]}")
    assert not failed, "\n".join(failed)
    # what the quickstart promises is there
    for path in ("runs/demo/best.pdparams", "runs/demo/eval/report.html",
                 "runs/demo/predictions.csv", "runs/resnet50/eval/metrics.json",
                 "exported/resnet50/palm_meta.json"):
        assert (workspace / path).is_file(), path
