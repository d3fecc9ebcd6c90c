"""palm.metrics: every public name of its modules is re-exported, and the modules import one way."""
import ast
import importlib
from pathlib import Path

import palm.metrics

PACKAGE = Path(palm.metrics.__file__).parent
# lowest first: a module may import only those before it
ORDER = ["classification", "_counts", "_delong", "intervals", "operating_points",
         "calibration", "multilabel", "ordinal", "comparison"]


def _public_names(module: str) -> list[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    names += [t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets]
    return [n for n in names if not n.startswith("_")]


def test_every_public_name_is_re_exported():
    assert sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__") == sorted(ORDER)
    for module in ORDER:
        source = importlib.import_module(f"palm.metrics.{module}")
        for name in _public_names(module):
            assert getattr(palm.metrics, name) is getattr(source, name), (module, name)
            assert name in palm.metrics.__all__, (module, name)


def test_modules_import_only_lower_ones():
    for rank, module in enumerate(ORDER):
        tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
        imported = {n.module.rsplit(".", 1)[-1] for n in ast.walk(tree)
                    if isinstance(n, ast.ImportFrom) and n.module
                    and n.module.startswith("palm.metrics.")}
        assert imported <= set(ORDER[:rank]), (module, imported - set(ORDER[:rank]))
