"""Imports run one way: errors, version -> base modules -> data, models -> viz -> engine -> cli.

The checker reads every module of the package with `ast` (nothing is imported), so an
upward import, or an import of palm hidden inside a function, fails here even if no test
ever executes it.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "palm"

# (group, rank) by module-name prefix; the longest matching prefix wins. A module may import
# its own group and lower ranks only. palm.data and palm.models share a rank but are two
# groups: neither imports the other.
LAYERS: dict[str, tuple[str, int]] = {
    "palm.errors": ("errors", 0),
    "palm.version": ("version", 0),
    "palm": ("base", 1),  # palm/__init__, config, io_utils, metrics, predictions, runtime, ...
    "palm.data": ("data", 2),
    "palm.models": ("models", 2),
    "palm.viz": ("viz", 3),
    "palm.engine": ("engine", 4),
    "palm.experiments": ("experiments", 5),
    "palm.reports": ("reports", 5),
    "palm.bench": ("bench", 5),
    "palm.serve": ("serve", 5),
    "palm.cli": ("cli", 6),
    "palm.__main__": ("cli", 6),
    # palm/__init__.py as an import target (`import palm`, `from palm import __version__`): it
    # imports the base modules, so only the ranks above them may import it
    "palm.__init__": ("package", 1),
}


def layer_of(module: str) -> tuple[str, int]:
    prefixes = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    return LAYERS[max(prefixes, key=len)]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def palm_imports(tree: ast.Module, root: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every import of palm.

    `from palm import metrics` imports the module palm.metrics; `from palm import __version__`
    imports palm/__init__.py (palm.__init__), as does a bare `import palm`.
    """
    found = []

    def target(module: str, name: str) -> str:
        if module != "palm":
            return module
        return f"palm.{name}" if (root / name).is_dir() or (root / f"{name}.py").is_file() \
            else "palm.__init__"

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend(("palm.__init__" if a.name == "palm" else a.name, child.lineno,
                              in_function) for a in child.names if a.name.split(".")[0] == "palm")
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module \
                    and child.module.split(".")[0] == "palm":
                # `from palm.data import sources` names a submodule: its layer is palm.data's
                found.extend((target(child.module, a.name), child.lineno, in_function)
                             for a in child.names)
            visit(child, nested)

    visit(tree, False)
    return found


# Top-level folders of the repository that a wheel does not install: the package never imports
# them (the checkout's scripts import the package, not the other way round).
CHECKOUT_ONLY = ("tools", "data_tools", "configs")


def checkout_imports(tree: ast.Module) -> list[tuple[str, int]]:
    """(module, line) for every import, at any depth, of a checkout-only top-level folder."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names
                      if a.name.split(".")[0] in CHECKOUT_ONLY]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] in CHECKOUT_ONLY:
            found.append((node.module, node.lineno))
    return found


def layering_violations(root: Path) -> list[str]:
    """Every import in the package at `root` that runs upward, sideways into another group of
    the same rank, or hides inside a function. palm/__init__.py counts as a module of its own
    beside the base modules (it imports them), so a base module taking a name from it fails."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        source = module_name(path, root)
        group, rank = layer_of(source)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        problems += [f"{path.relative_to(root.parent)}:{line}: {source} imports {target}, which "
                     "a wheel does not install" for target, line in checkout_imports(tree)]
        for target, line, in_function in sorted(set(palm_imports(tree, root))):
            where = f"{path.relative_to(root.parent)}:{line}: {source} imports {target}"
            target_group, target_rank = layer_of(target)
            if in_function:
                problems.append(f"{where} inside a function (import at the top)")
            elif target_group != group and target_rank >= rank:
                problems.append(f"{where}, which is {'above' if target_rank > rank else 'beside'} it")
    return problems


def test_palm_imports_run_downward_only():
    assert layering_violations(PACKAGE) == []


# The commands are independent: a command module imports no other command module, only
# palm.cli.common (the shared option groups and the runner), so one command's imports never
# burden another's start.
CLI_SHARED = "palm.cli.common"


def cli_imports_violations(root: Path) -> list[str]:
    """Every import, in palm/cli/*.py, of a palm.cli module other than palm.cli.common
    (`from palm.cli import x` imports palm.cli.x; palm/cli/__init__.py may name common)."""
    problems = []
    for path in sorted((root / "cli").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [f"{node.module}.{a.name}" if node.module == "palm.cli" else node.module
                           for a in node.names]
            else:
                continue
            problems += [f"{path.relative_to(root.parent)}:{node.lineno}: imports {target}"
                         for target in targets
                         if (target == "palm.cli" or target.startswith("palm.cli."))
                         and target != CLI_SHARED]
    return problems


def test_cli_modules_import_only_the_common_cli_module():
    assert cli_imports_violations(PACKAGE) == []


def test_cli_import_checker_catches_a_command_importing_another(tmp_path):
    root = _fake_package(tmp_path, {
        "cli/__init__.py": "from palm.cli.common import cli\n",
        "cli/common.py": "",
        "cli/ok.py": "from palm.cli.common import cli\nfrom palm.cli import common\n",
        "cli/a.py": "from palm.cli.ok import helper\n",
        "cli/b.py": "from palm.cli import ok\n",
        "cli/c.py": "import palm.cli.ok\n",
    })
    problems = cli_imports_violations(root)
    assert [p.split(":")[0] for p in problems] == ["palm/cli/a.py", "palm/cli/b.py",
                                                  "palm/cli/c.py"], problems


# A command names the library function it runs as "palm.module:function" (palm/cli/common.py
# imports it after parsing); such a string is an import too, and must point down as well.
TARGET = re.compile(r"^(palm(?:\.\w+)+):(\w+)$")


def module_path(module: str, root: Path) -> Path | None:
    base = root.parent.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def target_violations(root: Path) -> list[str]:
    """Every "palm.module:function" string in the package that names a missing function, or
    one in the same or a higher layer than the module holding the string."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        source = module_name(path, root)
        group, rank = layer_of(source)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            found = TARGET.match(node.value)
            if not found:
                continue
            module, function = found.groups()
            where = f"{path.relative_to(root.parent)}:{node.lineno}: {source} runs {node.value}"
            target_group, target_rank = layer_of(module)
            target = module_path(module, root)
            if target is None or function not in {
                    n.name for n in ast.parse(target.read_text(encoding="utf-8")).body
                    if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}:
                problems.append(f"{where}, which does not exist")
            elif target_group == group or target_rank >= rank:
                problems.append(f"{where}, which is {'above' if target_rank > rank else 'beside'} it")
    return problems


def test_command_targets_point_down_to_existing_functions():
    assert target_violations(PACKAGE) == []
    targets = [n.value for path in (PACKAGE / "cli").glob("*.py")
               for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
               if isinstance(n, ast.Constant) and isinstance(n.value, str) and TARGET.match(n.value)]
    assert len(targets) >= 10, targets  # the checker sees the commands' RUNS


def test_target_checker_catches_an_upward_a_sideways_and_a_missing_target(tmp_path):
    root = _fake_package(tmp_path, {
        "cli/__init__.py": "",
        "cli/ok.py": 'RUNS = "palm.engine.tasks:run"\n',
        "cli/gone.py": 'RUNS = "palm.engine.tasks:vanished"\n',
        "cli/beside.py": 'RUNS = "palm.cli.ok:helper"\n',
        "cli/__main__.py": "",
        "engine/tasks.py": "def run():\n    pass\n",
        "engine/up.py": 'RUNS = "palm.cli.ok:helper"\n',
    })
    (root / "cli" / "ok.py").write_text('RUNS = "palm.engine.tasks:run"\ndef helper():\n    pass\n')
    problems = target_violations(root)
    assert len(problems) == 3, problems
    assert any("gone.py:1" in p and "does not exist" in p for p in problems)
    assert any("beside.py:1" in p and "beside it" in p for p in problems)
    assert any("engine/up.py:1" in p and "above it" in p for p in problems)


def _fake_package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "palm"
    for name, text in {"__init__.py": "", "data/__init__.py": "", "engine/__init__.py": "",
                       "viz/__init__.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_checker_catches_a_back_arrow_a_sideways_one_and_a_lazy_one(tmp_path):
    root = _fake_package(tmp_path, {
        "io_utils.py": "",
        "data/ok.py": "import numpy\nfrom palm.errors import BadData\nfrom palm import io_utils\n",
        "engine/ok.py": "from palm.viz import cam\nfrom palm.data.ok import x\n",
        "data/up.py": "from palm.engine import train\n",
        "data/beside.py": "import palm.models.resnet\n",
        "viz/lazy.py": "def f():\n    from palm.data import read_image\n",
    })
    problems = layering_violations(root)
    assert len(problems) == 3, problems
    up, beside, lazy = sorted(problems, key=lambda p: ("up.py" not in p, "beside" not in p))
    assert "palm/data/up.py:1: palm.data.up imports palm.engine, which is above it" == up
    assert "palm.models.resnet, which is beside it" in beside
    assert "palm/viz/lazy.py:2" in lazy and "inside a function" in lazy


def test_checker_catches_an_import_of_a_checkout_only_folder(tmp_path):
    root = _fake_package(tmp_path, {
        "engine/bench.py": "def f():\n    from tools.benchmark_data import bench_decode\n",
        "engine/synth.py": "import data_tools.synth_palm\n",
    })
    problems = layering_violations(root)
    assert len(problems) == 2 and all("a wheel does not install" in p for p in problems), problems


def test_checker_catches_a_base_module_importing_the_package_and_rank_0_importing_up(tmp_path):
    """palm/__init__.py imports runtime, so runtime taking __version__ from palm is a cycle."""
    root = _fake_package(tmp_path, {
        "__init__.py": "from palm.runtime import tune_cpu_env\nfrom palm.version import __version__\n",
        "version.py": '__version__ = "1"\n',
        "runtime.py": "import os\nfrom palm import __version__\n",
        "provenance.py": "from palm.version import __version__\nfrom palm import version\n",
        "config.py": "import palm\n",
        "errors.py": "from palm import version\n",
        "data/ok.py": "import palm\nfrom palm import io_utils, __version__\n",
        "io_utils.py": "from palm import data\n",
    })
    problems = layering_violations(root)
    assert problems == [
        "palm/config.py:1: palm.config imports palm.__init__, which is beside it",
        "palm/errors.py:1: palm.errors imports palm.version, which is beside it",
        "palm/io_utils.py:1: palm.io_utils imports palm.data, which is above it",
        "palm/runtime.py:2: palm.runtime imports palm.__init__, which is beside it",
    ], problems
