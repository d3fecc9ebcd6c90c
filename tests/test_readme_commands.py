"""Every command README.md and the docs/ pages show runs as written.

Commands are taken from the fenced code blocks of README.md and then of the docs/ pages in
DOCS order (the order the README had before its long sections moved there, so that a
command finds what an earlier one wrote) and from its inline code that starts
with `python ` or `pip ` (` && ` splits a line into commands). Each one is either run or
named in SKIPPED with the reason. Placeholders the text explains (DIR, photos/, `...` for a
checkpoint, `[optional flags]`) get a tiny stand-in, and expensive defaults get TINY_FLAGS
appended (the last value of a flag wins), so the whole README runs in a few minutes on tiny
synthetic data. The fast test checks that every command's options parse; the slow one runs
them in README order in a scratch folder laid out like a clone (data/PALM, demo_data/palm),
one RUN_GROUPS group of pages per folder so that test workers run the groups side by side.
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

from palm.cli import COMMANDS

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
# Read in this order after the README: a later page's commands may use an earlier one's outputs
# (docs/speed.md exports and quantizes the resnet50 run the README trains).
DOCS = ["outputs.md", "evidence.md", "models.md", "speed.md", "service.md", "experiments.md",
        "data.md"]
# The slow test runs these groups of pages apart, each in its own scratch clone, so that two
# test workers share them; a page's commands may only use what its own group wrote before.
RUN_GROUPS = {
    "quickstart-speed-service": ["README.md", "outputs.md", "speed.md", "service.md"],
    "evidence-models-experiments-data": ["evidence.md", "models.md", "experiments.md", "data.md"],
}
# docs/ pages whose commands are not run here, and why.
NOT_RUN = {
    "ARCHITECTURE.md": "describes the layers; no commands",
    "CONTRIBUTING.md": "a contributor's commands for a new model (test_models_golden covers them)",
}

# Commands not run here, and why; every other README command runs.
SKIPPED = {
    "python -m pytest -q -n auto": "the whole suite, this test included",
    'python -m pytest -q -m "not slow" -n auto': "the quick suite, this test included",
    "python -m palm --help": "prints the subcommands (test_cli covers it)",
    "curl -F files=@demo_data/palm/PALM-Validation400/V0001.jpg "
    "'http://127.0.0.1:8000/v1/predict?cam=1'": "needs the service running (tests/serve)",
    "python tools/serve.py --checkpoint runs/demo/best.pdparams":
        "a server that runs until stopped (tests/serve drives it from a browser)",
    "python tools/loadtest.py --model resnet18 --image-size 224 --requests 500 --concurrency 8":
        "minutes of load (tests/serve runs the tool)",
    "python tools/loadtest.py --model resnet18 --image-size 64 --requests 200 --rounds 1":
        "minutes of load (tests/serve runs the tool)",
    "python tools/loadtest.py --model resnet50 --image-size 224 --requests 100 --concurrency 8 "
    "--rounds 5": "500 ResNet50 requests, minutes of load (tests/serve runs the tool)",
    "python tools/loadtest.py --model resnet50 --requests 200 --rounds 3 --concurrency 8":
        "600 ResNet50 requests, minutes of load (tests/serve runs the tool)",
    "python tools/loadtest.py --model resnet50 --int8 --requests 200 --rounds 5 --concurrency 8":
        "quantizes ResNet50, then 1000 requests: minutes of load (tests/serve runs the tool)",
    "python -m paddle.distributed.launch --nnodes 2 --master 10.0.0.1:8090 --nproc_per_node 2 "
    "tools/predict.py --checkpoint best.pdparams --input /shared/photos --output "
    "/shared/preds.csv": "two machines (test_predict_distributed runs 2 ranks on one)",
    "python -m paddle.distributed.launch --nproc_per_node N tools/train.py ... --amp":
        "several GPUs (test_train runs two CPU processes)",
    "python tools/benchmark.py --table --iters 4": "29 networks, an hour",
    "python tools/benchmark.py --models resnet50 --sections inference,predict "
    "--predict-images 100,500,2000 --repeats 1": "2600 full-size images",
    "python -m data_tools.prepare {xlsx2csv,split,kfold} ...":
        "a synopsis of three subcommands (test_data_tools runs each)",
    'python -m data_tools.odir --annotations "ODIR-5K_Training_Annotations(Updated)_V2.xlsx" '
    '--images "ODIR-5K/Training Images" --output lists/odir_train.csv '
    '--val-output lists/odir_val.csv':
        "needs the ODIR-5K download (tests/data/test_odir.py runs the command on a tiny sheet)",
    "python -m data_tools.odir --annotations SHEET --images DIR --output OUT.csv":
        "a synopsis with placeholders (tests/data/test_odir.py runs the command)",
}

# Installing changes the environment: the new-user check runs the install lines by hand.
INSTALL = re.compile(r"(python -m )?pip install ")
# Prose naming a tool rather than running it: `python -m palm`, `python -m data_tools.*`,
# `python tools/train.py`
NAME_ONLY = re.compile(r"python (-m [\w.*]+|tools/\w+\.py)")

# Stand-ins for the placeholders the README explains in words.
PLACEHOLDERS = [
    (r"\s\[[^\]]*\]", ""),  # [--optional flags]
    (r"--checkpoint \.\.\.", "--checkpoint runs/resnet50/best.pdparams"),
    (r"\bDIR\b", "data/PALM"),
    (r"--model NAME\b", "--model lenet"),
]

# Appended to keep each run tiny, by subcommand (`python tools/train.py`, `python -m palm train`
# and `palm train` alike): the networks train one epoch at 32 px on 24 images.
TINY_FLAGS = {
    "train": ["--epochs", "1", "--image-size", "32", "-b", "8", "--num-workers", "0",
              "--no-progress"],
    "eval": ["--num-workers", "0"],
    "predict": ["--num-workers", "0", "--no-progress"],
    "synth": ["--n-train", "24", "--n-val", "16", "--image-size", "64"],
    "stats": ["--image-size", "32"],
    "digits": ["--per-class", "12"],
    "cv": ["--epochs", "1", "--image-size", "32", "--folds", "2", "--no-progress"],
    "sweep": ["--epochs", "1", "--repeats", "1", "--no-progress"],
    "quantize": ["--calib-images", "8"],
    "benchmark": ["--models", "lenet5", "--sizes", "32", "--iters", "2", "--repeats", "1",
                  "--train-iters", "3", "--train-images", "16", "--predict-images", "4,8",
                  "--work-dir", "benchmark-work"],
}


def readme_commands(pages: list[str] | None = None) -> list[str]:
    """The commands of `pages` (default: the README and then DOCS) in the order a reader meets
    them (a later command may use what an earlier one wrote, in a code block or in the prose)."""
    pages = ["README.md", *DOCS] if pages is None else pages
    paths = [README if page == "README.md" else REPO / "docs" / page for page in pages]
    text = "\n".join(path.read_text(encoding="utf-8") for path in paths)
    commands = []
    for match in re.finditer(r"```(\w*)\n(.*?)```|`([^`]+)`", text, re.S):
        language, block, span = match.groups()
        if block is not None:
            if language != "bash":
                continue
            for line in block.replace("\\\n", " ").splitlines():  # join continued lines
                line = re.sub(r"\s+#.*$", "", line)  # a trailing comment
                commands += [" ".join(c.split()) for c in line.split(" && ") if c.strip()]
        else:
            span = " ".join(span.split())  # a span may wrap over lines
            if span.startswith(("python ", "pip ")) and not NAME_ONLY.fullmatch(span):
                commands.append(span)
    return [c for c in dict.fromkeys(commands) if not INSTALL.match(c)]


def runnable(command: str) -> list[str]:
    """argv of a README command with placeholders filled in and tiny flags appended."""
    for pattern, value in PLACEHOLDERS:
        command = re.sub(pattern, value, command)
    argv = shlex.split(command)
    module, _ = _module_and_args(argv)
    return argv + TINY_FLAGS.get(SUBCOMMANDS[module], [])


# `python tools/train.py` -> palm.cli.train, and so on for every subcommand
CHECKOUT_MODULES = {cmd.checkout: cmd.module for cmd in COMMANDS.values()}
SUBCOMMANDS = {cmd.module: name for name, cmd in COMMANDS.items()}


def _module_and_args(argv: list[str]) -> tuple[str, list[str]]:
    """The palm.cli module a README command runs, and its arguments."""
    if argv[0] == "palm":
        return COMMANDS[argv[1]].module, argv[2:]
    assert argv[0] == "python", argv
    if argv[1:3] == ["-m", "palm"]:
        return COMMANDS[argv[3]].module, argv[4:]
    lead = 3 if argv[1] == "-m" else 2
    return CHECKOUT_MODULES[" ".join(argv[:lead])], argv[lead:]


TO_RUN = [c for c in readme_commands() if c not in SKIPPED]


def test_the_readme_shows_commands_and_skips_only_listed_ones():
    commands = readme_commands()
    assert len(TO_RUN) >= 15, TO_RUN
    stale = set(SKIPPED) - set(commands)
    assert not stale, f"SKIPPED names commands the README and docs/ no longer show: {stale}"


def test_every_docs_page_is_read_or_named_as_not_run():
    """A new docs/ page is run too, unless NOT_RUN says why not."""
    pages = {path.name for path in (REPO / "docs").glob("*.md")}
    assert pages - set(NOT_RUN) <= set(DOCS), \
        f"add {sorted(pages - set(NOT_RUN) - set(DOCS))} to DOCS (or to NOT_RUN, with the reason)"


@pytest.mark.parametrize("command", TO_RUN)
def test_readme_command_parses(command):
    """Every option a README command uses exists and takes the value shown."""
    module_name, args = _module_and_args(runnable(command))
    module = importlib.import_module(module_name)
    if hasattr(module, "parse_args"):  # tools/train.py merges its config files
        module.parse_args(args)
    else:
        module.get_args_parser().parse_args(args)


def test_the_run_groups_hold_every_page_once():
    grouped = [page for pages in RUN_GROUPS.values() for page in pages]
    assert sorted(grouped) == sorted(["README.md", *DOCS]), grouped


@pytest.fixture
def workspace(palm_root, tmp_path_factory) -> Path:
    """A folder laid out like a clone: tools/, configs/, the PALM download in data/PALM, the demo set
    already drawn in demo_data/palm, and photos/ to predict."""
    root = tmp_path_factory.mktemp("readme")
    (root / "tools").symlink_to(REPO / "tools")
    (root / "configs").symlink_to(REPO / "configs")
    shutil.copytree(palm_root, root / "data" / "PALM")
    shutil.copytree(palm_root, root / "demo_data" / "palm")
    shutil.copytree(palm_root / "PALM-Validation400", root / "photos")
    return root


@pytest.mark.longest(388)  # the larger group's; the other took 227
@pytest.mark.slow
@pytest.mark.parametrize("group", RUN_GROUPS)
def test_readme_commands_run(group, workspace):
    env = {**os.environ, "PYTHONPATH": str(REPO), "PALM_CACHE_DIR": str(workspace / "cache")}
    failed = []
    for command in [c for c in readme_commands(RUN_GROUPS[group]) if c not in SKIPPED]:
        argv = runnable(command)
        # `palm X` is the installed console script; this checkout's runs as `python -m palm X`
        child = [sys.executable, *(["-m", "palm"] if argv[0] == "palm" else []), *argv[1:]]
        done = subprocess.run(child, cwd=workspace, env=env,
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            failed.append(f"{command}\n  ran {shlex.join(argv)}\n  exit {done.returncode}: "
                          f"{done.stderr.strip().splitlines()[-1:] or done.stdout[-300:]}")
    assert not failed, "\n".join(failed)
    # what the quickstart promises is there
    promised = ("runs/demo/best.pdparams", "runs/demo/eval/report.html",
                "runs/demo/predictions.csv", "runs/resnet50/eval/metrics.json",
                "exported/resnet50/palm_meta.json") if "README.md" in RUN_GROUPS[group] else ()
    for path in promised:
        assert (workspace / path).is_file(), path
