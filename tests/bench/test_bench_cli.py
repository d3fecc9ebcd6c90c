"""`palm benchmark`, `palm benchmark-data` and `palm loadtest` only parse their options and
hand them to one palm.bench function each."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import palm.bench.data
import palm.bench.loadtest
import palm.bench.sections
import palm.bench.tasks
from palm.bench.settings import SECTIONS, BenchSettings
from palm.cli import benchmark, benchmark_data, loadtest

CLI = Path(benchmark.__file__).parent


@pytest.mark.parametrize("module", ["benchmark", "benchmark_data", "loadtest"])
def test_cli_module_imports_no_other_cli_module(module):
    tree = ast.parse((CLI / f"{module}.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert {m for m in imported if m.startswith("palm.cli")} <= {"palm.cli.common"}


def test_benchmark_flags_reach_the_library(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(palm.bench.tasks, "run_benchmark",
                        lambda *a, **k: calls.append((a, k)) or {})
    argv = ["--models", "lenet5, alexnet", "--sizes", "32,64", "--sections", "eval,stats",
            "--iters", "3", "--predict-images", "5,2", "--table", "--work-dir", str(tmp_path),
            "--output", str(tmp_path / "b.json")]
    benchmark.main(benchmark.get_args_parser().parse_args(argv))
    (args, kwargs), = calls
    assert args == (str(tmp_path / "b.json"), str(tmp_path))
    assert kwargs["models"] == ["lenet5", "alexnet"] and kwargs["sizes"] == [32, 64]
    assert kwargs["sections"] == ["eval", "stats"] and kwargs["table"] is True
    assert kwargs["settings"] == BenchSettings(iters=3, predict_images=(2, 5))
    defaults = benchmark.get_args_parser().parse_args([])
    assert defaults.sections == list(SECTIONS) and defaults.sizes == [224]


def test_benchmark_table_takes_models(tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(palm.bench.sections, "run_table",
                        lambda batch_size, iters, models=None: asked.append(models) or [])
    for extra, expected in ((["--models", "lenet5,alexnet"], ["lenet5", "alexnet"]), ([], None)):
        args = benchmark.get_args_parser().parse_args(
            ["--table", "--sections", "eval", "--output", str(tmp_path / "b.json"),
             "--work-dir", str(tmp_path), *extra])
        benchmark.main(args)
        assert asked.pop() == expected  # None: every registered network


def test_loadtest_and_benchmark_data_flags_reach_the_library(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(palm.bench.loadtest, "run_loadtest",
                        lambda *a, **k: calls.append((a, k)) or {"errors": 0})
    loadtest.main(loadtest.get_args_parser().parse_args(
        ["--model", "lenet5", "--requests", "3", "--rounds", "1", "--work-dir", str(tmp_path)]))
    (args, kwargs), = calls
    assert args == () and kwargs["work_dir"] == str(tmp_path) and kwargs["model"] == "lenet5"
    assert (kwargs["requests"], kwargs["rounds"], kwargs["checkpoint"]) == (3, 1, None)
    monkeypatch.setattr(palm.bench.data, "run_input_pipeline",
                        lambda *a, **k: calls.append((a, k)) or {})
    benchmark_data.main(benchmark_data.get_args_parser().parse_args(
        ["--workers", "1", "--out", "x.json"]))
    assert calls[-1][0] == () and calls[-1][1]["workers"] == [1]
    assert calls[-1][1]["output"] == "x.json"


def test_loadtest_exits_1_when_a_request_failed_or_a_target_was_missed(monkeypatch, tmp_path):
    from palm.cli.common import cli

    for missed, code in (([], 0), (["2 failed requests"], 1), (["p95 600 ms > 500"], 1)):
        monkeypatch.setattr(palm.bench.loadtest, "run_loadtest",
                            lambda *a, missed=missed, **k: {"errors": 0, "missed": missed})
        with pytest.raises(SystemExit) as exited:
            cli("loadtest", ["--model", "lenet5", "--work-dir", str(tmp_path), "-q"])
        assert exited.value.code == code
