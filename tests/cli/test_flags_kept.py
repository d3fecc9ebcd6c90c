"""No option a command had before the CLI redesign (issue 23) disappears.

OLD_OPTIONS is every option string of every command's parser on the integration branch before
the redesign (palm/cli/* of commit 7cc0534). Each must still be an option of the command, and
parse: old spellings that became hidden aliases (--out, --workers) set what the new name sets.
benchmark's --child is left out: an internal switch of its child processes, never in --help,
which palm.bench replaced with plain function calls.
"""
from __future__ import annotations

import argparse
import importlib

import pytest

from palm.cli.common import COMMANDS

OLD_OPTIONS: dict[str, list[str]] = {
    "train": ['--allow-outside-paths', '--amp', '--augment', '--batch-size', '--cache-dir',
              '--cache-size-gb', '--compile', '--config', '--data-root', '--demo', '--device',
              '--epochs', '--exist-ok', '--help', '--holdout-fraction', '--image-size', '--lr',
              '--max-pixels', '--model', '--no-allow-outside-paths', '--no-amp', '--no-compile',
              '--no-exist-ok', '--no-progress', '--no-skip-bad', '--num-workers', '--optimizer',
              '--output', '--override', '--pos-weight', '--positive-class', '--pretrained', '--quiet',
              '--resume', '--scheduler', '--seed', '--select-on', '--skip-bad', '--train-csv',
              '--train-dir', '--trust-checkpoint', '--val-csv', '--val-dir', '--verbose',
              '--warmup-epochs', '--weight-decay', '-b', '-c', '-h', '-o', '-q', '-v'],
    "eval": ['--allow-outside-paths', '--batch-size', '--cache-dir', '--cache-size-gb',
             '--checkpoint', '--ci-resamples', '--data-root', '--device', '--engine', '--exist-ok',
             '--fit-temperature', '--help', '--max-pixels', '--no-ci', '--num-workers',
             '--operating-point', '--output', '--positive-class', '--precision', '--quiet',
             '--report', '--skip-bad', '--threshold', '--trust-checkpoint', '--tune-threshold',
             '--val-csv', '--val-dir', '--verbose', '-b', '-h', '-q', '-v'],
    "predict": ['--batch-size', '--cam', '--checkpoint', '--device', '--engine', '--help', '--input',
                '--merge-timeout', '--no-progress', '--num-workers', '--output', '--precision',
                '--quiet', '--resume', '--threshold', '--trust-checkpoint', '--tta', '--verbose', '-b',
                '-h', '-q', '-v'],
    "cam": ['--alpha', '--batch-size', '--checkpoint', '--class-index', '--help', '--input',
            '--max-side', '--output', '--quiet', '--target-layer', '--trust-checkpoint', '--verbose',
            '-b', '-h', '-q', '-v'],
    "export": ['--checkpoint', '--help', '--no-verify', '--output', '--quiet', '--trust-checkpoint',
               '--verbose', '-h', '-q', '-v'],
    "compare": ['--ci-resamples', '--help', '--names', '--output', '--quiet', '--seed', '--verbose',
                '-h', '-q', '-v'],
    "report": ['--eval', '--gallery-size', '--help', '--output', '--quiet', '--run',
               '--trust-checkpoint', '--verbose', '-h', '-q', '-v'],
    "cv": ['--allow-outside-paths', '--amp', '--augment', '--batch-size', '--cache-dir',
           '--cache-size-gb', '--compile', '--config', '--data-root', '--demo', '--device',
           '--epochs', '--exist-ok', '--folds', '--help', '--holdout-fraction', '--image-size',
           '--jobs', '--lr', '--max-pixels', '--model', '--no-allow-outside-paths', '--no-amp',
           '--no-compile', '--no-exist-ok', '--no-progress', '--no-skip-bad', '--num-workers',
           '--optimizer', '--output', '--override', '--pool-val', '--pos-weight',
           '--positive-class', '--predict-val', '--pretrained', '--quiet', '--repeats', '--resume',
           '--scheduler', '--seed', '--select-on', '--skip-bad', '--train-csv', '--train-dir',
           '--trust-checkpoint', '--val-csv', '--val-dir', '--verbose', '--warmup-epochs',
           '--weight-decay', '-b', '-c', '-h', '-o', '-q', '-v'],
    "sweep": ['--address', '--allow-outside-paths', '--amp', '--augment', '--backend', '--base',
              '--batch-size', '--cache-dir', '--cache-size-gb', '--compile', '--config', '--data-root',
              '--demo', '--device', '--epochs', '--exist-ok', '--help', '--holdout-fraction',
              '--image-size', '--jobs', '--lr', '--max-pixels', '--metric', '--mode', '--model',
              '--no-allow-outside-paths', '--no-amp', '--no-compile', '--no-exist-ok', '--no-progress',
              '--no-skip-bad', '--num-workers', '--optimizer', '--output', '--override',
              '--pos-weight', '--positive-class', '--pretrained', '--quiet', '--repeats', '--resume',
              '--scheduler', '--seed', '--select-on', '--skip-bad', '--train-csv', '--train-dir',
              '--trust-checkpoint', '--val-csv', '--val-dir', '--vary', '--verbose', '--warmup-epochs',
              '--weight-decay', '-b', '-c', '-h', '-o', '-q', '-v'],
    "quantize": ['--batch-size', '--calib-dir', '--calib-images', '--checkpoint', '--data-root',
                 '--force', '--help', '--max-auc-drop', '--num-workers', '--output', '--quiet',
                 '--trust-checkpoint', '--val-csv', '--val-dir', '--verbose', '-h', '-q', '-v'],
    "serve": ['--checkpoint', '--engine', '--header-timeout', '--help', '--host', '--max-batch',
              '--max-decoding', '--max-files', '--max-pixels', '--max-queue', '--max-upload-mb',
              '--max-wait-ms', '--port', '--quiet', '--save-dir', '--timeout', '--token',
              '--trust-checkpoint', '--upload-timeout', '--verbose', '-h', '-q', '-v'],
    "loadtest": ['--cam', '--checkpoint', '--concurrency', '--engine', '--help', '--image-size',
                 '--max-batch', '--max-wait-ms', '--model', '--output', '--photos', '--quiet',
                 '--requests', '--rounds', '--verbose', '--warmup', '--work-dir', '-h', '-q', '-v'],
    "cache": ['--cache-dir', '--help', '--quiet', '--verbose', '-h', '-q', '-v'],
    "benchmark": ['--batch-size', '--help', '--iters', '--models', '--num-workers', '--output',
                  '--predict-images', '--quiet', '--repeats', '--sections', '--sizes', '--table',
                  '--train-images', '--train-iters', '--verbose', '--work-dir', '-b', '-h', '-q', '-v'],
    "benchmark-data": ['--batch-size', '--help', '--image', '--image-size', '--n-images', '--out', '--quiet',
                       '--repeats', '--source-size', '--verbose', '--workers', '-b', '-h', '-q', '-v'],
    "inspect": ['--data-root', '--help', '--out', '--quiet', '--verbose', '-h', '-q', '-v'],
    "prepare": ['--help', '--quiet', '--verbose', '-h', '-q', '-v'],
    "stats": ['--data-root', '--fundus-crop', '--help', '--image-size', '--max-images', '--out',
              '--quiet', '--seed', '--split', '--verbose', '-h', '-q', '-v'],
    "digits": ['--help', '--out', '--per-class', '--quiet', '--seed', '--size', '--val-fraction',
               '--verbose', '-h', '-q', '-v'],
    "synth": ['--difficulty', '--help', '--image-size', '--n-train', '--n-val', '--out', '--quality',
              '--quiet', '--seed', '--verbose', '--workers', '-h', '-q', '-v'],
}

# old spelling -> the option it now stands for, where a tool's option was renamed
RENAMED = {"--out": "--output", "--workers": "--num-workers", "--class-index": "--target",
           "--max-auc-drop": "--max-metric-drop"}


def _parser(name: str) -> argparse.ArgumentParser:
    module = importlib.import_module(COMMANDS[name].module)
    return module.get_args_parser(f"palm {name}") if hasattr(module, "RUNS") \
        else module.get_args_parser()


def test_every_command_of_before_is_still_there():
    assert set(OLD_OPTIONS) <= set(COMMANDS)


@pytest.mark.parametrize("name", sorted(OLD_OPTIONS))
def test_every_old_option_still_parses(name):
    parser = _parser(name)
    actions = parser._option_string_actions  # what argparse itself matches an option against
    missing = [option for option in OLD_OPTIONS[name] if option not in actions]
    assert not missing, f"palm {name} lost {missing}"
    for option in OLD_OPTIONS[name]:
        action = actions[option]
        if action.nargs == 0 or option in ("-h", "--help"):
            continue
        # the option takes a value: it reaches the action's dest (required options of the
        # command aside, which parse_known_args does not enforce when given here)
        value = str(action.choices[0]) if action.choices else "1"
        known, _ = _parse_ignoring_required(parser, [option, value])
        assert getattr(known, action.dest) is not None, (name, option)


def _parse_ignoring_required(parser: argparse.ArgumentParser, argv: list[str]):
    required = [a for a in [*parser._actions, *parser._mutually_exclusive_groups] if a.required]
    for item in required:
        item.required = False
    try:
        return parser.parse_known_args(argv)
    finally:
        for item in required:
            item.required = True


@pytest.mark.parametrize("name", sorted(OLD_OPTIONS))
def test_renamed_spellings_are_hidden_aliases_of_the_new_name(name):
    parser = _parser(name)
    actions = parser._option_string_actions
    shown = parser.format_help()
    for old, new in RENAMED.items():
        if old in actions and new in actions and actions[old] is actions[new]:
            assert f"{new} " in shown or f"{new}\n" in shown, (name, new)
            assert f"{old} " not in shown and f"{old}," not in shown, (name, old)


def test_synth_takes_output_and_num_workers_and_still_out_and_workers():
    parser = _parser("synth")
    new = parser.parse_args(["--output", "d", "--num-workers", "2"])
    old = parser.parse_args(["--out", "d", "--workers", "2"])
    assert (new.output, new.num_workers) == (old.output, old.num_workers) == ("d", 2)
