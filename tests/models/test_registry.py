"""A family file registers its networks itself: `@register_model` plus palm.models' import loop.

The tests write throwaway family modules into tmp_path, so they exercise the path a
contributor takes (docs/CONTRIBUTING.md, "A new model") without adding a model to the repo.
"""
from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import paddle
import pytest

import palm.models
from palm.models import MODELS, ModelRegistryError, UnknownModelOption, build_model, list_models

MODELS_DOC = Path(__file__).resolve().parents[2] / "docs" / "models.md"

TINY_FAMILY = '''
import paddle.nn as nn

from palm.models.layers import ClassifierHead
from palm.models.registry import register_model


class TinyNet(nn.Layer):
    def __init__(self, num_classes: int, width: int, with_pool: bool = True) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2D(3, width, 3, padding=1), nn.ReLU())
        self.classifier_head = ClassifierHead("tiny", num_classes, with_pool)
        self.classifier = nn.Linear(width, num_classes) if num_classes > 0 else None

    def forward(self, x):
        return self.classifier_head(self.features(x), self.classifier)


@register_model
def {name}(num_classes: int = 1, width: int = 4, with_pool: bool = True) -> TinyNet:
    return TinyNet(num_classes, width, with_pool)
'''


@pytest.fixture
def scratch_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder for throwaway modules; MODELS and sys.modules are restored afterwards."""
    saved = dict(MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    MODELS.clear()
    MODELS.update(saved)
    for name, module in list(sys.modules.items()):
        if Path(getattr(module, "__file__", None) or "/").is_relative_to(tmp_path):
            del sys.modules[name]


def _write_family(folder: Path, module: str, model: str) -> None:
    (folder / f"{module}.py").write_text(TINY_FAMILY.format(name=model))


def test_decorated_factory_builds_through_build_model(scratch_registry):
    _write_family(scratch_registry, "tiny_family", "tiny_net")
    import tiny_family  # noqa: F401 - importing it registers tiny_net

    assert "tiny_net" in list_models()
    model = build_model("tiny_net", num_classes=3, width=6)
    model.eval()
    assert model(paddle.rand([2, 3, 16, 16])).shape == [2, 3]
    with pytest.raises(UnknownModelOption,
                       match="tiny_net has no option.*depth.*takes: width, with_pool"):
        build_model("tiny_net", depth=3)  # the option check sees the factory's own signature


def test_a_name_registered_twice_is_refused_at_import(scratch_registry):
    resnet18 = MODELS["resnet18"]
    _write_family(scratch_registry, "clashing_family", "resnet18")
    with pytest.raises(ModelRegistryError,
                       match="'resnet18' is registered twice: by palm.models.resnet and by "
                             "clashing_family"):
        import clashing_family  # noqa: F401
    assert MODELS["resnet18"] is resnet18  # the first registration stands


def test_a_new_file_in_palm_models_is_discovered(scratch_registry, monkeypatch):
    # An extra folder on the package's path stands for a new file in palm/models/.
    _write_family(scratch_registry, "tiny_discovered", "tiny_discovered_net")
    monkeypatch.setattr(palm.models, "__path__", [*palm.models.__path__, str(scratch_registry)])
    registered = list_models()
    palm.models._import_families()
    assert list_models() == sorted([*registered, "tiny_discovered_net"])
    assert MODELS["tiny_discovered_net"].__module__ == "palm.models.tiny_discovered"


def test_a_family_file_that_registers_nothing_is_an_error(scratch_registry, monkeypatch):
    (scratch_registry / "forgotten.py").write_text(
        TINY_FAMILY.format(name="forgotten_net").replace("@register_model\n", ""))
    monkeypatch.setattr(palm.models, "__path__", [*palm.models.__path__, str(scratch_registry)])
    with pytest.raises(ModelRegistryError, match=r"palm/models/forgotten.py registers no model: "
                                                 r"decorate its factories with @register_model"):
        palm.models._import_families()


def _model_table_section() -> str:
    text = MODELS_DOC.read_text(encoding="utf-8")
    return text.split("\n## The model table\n", 1)[1].split("\n## ", 1)[0]


def test_readme_model_table_lists_every_registered_model():
    # The table's figures are measured, not generated at build time; this names the row a new
    # model lacks (or a removed one keeps). Row order and the count in the prose are not
    # checked: a new model adds one row, nothing else.
    section = _model_table_section()
    rows = re.findall(r"^\| `(\w+)` \|", section, flags=re.M)
    missing = [name for name in list_models() if name not in rows]
    command = f"python tools/benchmark.py --table --models {','.join(missing)}"
    assert not missing, f"docs/models.md's model table lacks {missing}: add the row `{command}` measures"
    stale = sorted(set(rows) - set(list_models()))
    assert not stale, f"docs/models.md's model table has rows for unregistered models {stale}"
