"""Golden outputs: every registered network, built from a fixed seed, gives stored numbers.

Shapes alone would let an architecture change pass unnoticed (a missing ReLU, a pool moved,
a layer built in another order), and most families have no paddle.vision twin to compare
with. So for each model the test builds it twice after `paddle.seed(BUILD_SEED)`: with
NUM_CLASSES outputs (the logits) and with `num_classes=0` (the backbone's features, summed
up by their shape and per-channel means), runs a fixed seeded input in eval mode, and
compares with `tests/golden/model_logits.json`.

Tolerances are relative to each stored vector's largest magnitude: randomly initialised
networks give logits from 1e-17 (deep BN-free stacks) to 1e8 (deep residual sums), so a
fixed absolute tolerance would accept anything for the former.

After an intended change of a network, rewrite its entry (and review the diff):

    PYTHONPATH=. python tests/models/test_golden.py [MODEL ...]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import paddle
import pytest

from palm.io_utils import write_json_atomic
from palm.models import build_model, list_models
from palm.models.layers import ClassifierHead

GOLDEN_FILE = Path(__file__).parents[1] / "golden" / "model_logits.json"
BUILD_SEED = 0
INPUT_SEED = 0
INPUT_SHAPE = [2, 3, 64, 64]  # every family accepts 64 px (inception_v3 resizes it to 75)
NUM_CLASSES = 3  # more than one: SqueezeNet's head differs between one and several classes
FEATURE_CHANNELS = 8  # per-channel means of the first channels stand for the feature map
RTOL, ATOL_SCALE = 1e-4, 1e-5
MODEL_KWARGS: dict[str, dict[str, Any]] = {"lenet": {"image_size": INPUT_SHAPE[-1]}}
# Each of these takes over a second to build and run here; deselected by -m "not slow".
FAST_MODELS = {
    "lenet", "lenet5", "squeezenet1_1", "shufflenet_v2_x1_0", "mobilenet_v1", "mobilenet_v2",
    "efficientnet_b0", "nin",
}


def _fixed_input() -> paddle.Tensor:
    rng = np.random.default_rng(INPUT_SEED)
    return paddle.to_tensor(rng.standard_normal(INPUT_SHAPE).astype("float32"))


def _seeded_output(name: str, num_classes: int) -> np.ndarray:
    paddle.seed(BUILD_SEED)
    model = build_model(name, num_classes=num_classes, **MODEL_KWARGS.get(name, {}))
    model.eval()
    with paddle.no_grad():
        return model(_fixed_input()).numpy().astype("float64")


def compute_golden(name: str) -> dict[str, Any]:
    """The numbers stored for `name`: logits, and the feature map's shape and channel means."""
    features = _seeded_output(name, 0)
    channel_means = features.reshape(*features.shape[:2], -1).mean(axis=2)
    return {
        "logits": _seeded_output(name, NUM_CLASSES).tolist(),
        "features_shape": list(features.shape),
        "features_channel_means": channel_means[:, :FEATURE_CHANNELS].tolist(),
    }


def _load_golden() -> dict[str, Any]:
    return json.loads(GOLDEN_FILE.read_text())["models"]


def _regenerate_hint(names: list[str]) -> str:
    command = f"PYTHONPATH=. python tests/models/test_golden.py {' '.join(names)}"
    return (f"{', '.join(names)}: no entry in tests/golden/{GOLDEN_FILE.name}; once the network is "
            f"right, write it with: {command}")


def _golden_entry(name: str) -> dict[str, Any]:
    """The stored numbers of `name`; a registered model without them fails with the command
    that writes them, not a KeyError."""
    golden = _load_golden()
    if name not in golden:
        pytest.fail(_regenerate_hint([name]), pytrace=False)
    return golden[name]


def _assert_close(actual: list, expected: list, what: str) -> None:
    expected_arr = np.asarray(expected)
    atol = ATOL_SCALE * float(np.abs(expected_arr).max())
    np.testing.assert_allclose(np.asarray(actual), expected_arr, rtol=RTOL, atol=atol, err_msg=what)


def test_every_registered_model_has_a_golden_entry():
    golden = _load_golden()
    missing = [name for name in list_models() if name not in golden]
    assert not missing, _regenerate_hint(missing)
    stale = sorted(set(golden) - set(list_models()))
    assert not stale, f"{GOLDEN_FILE.name} holds unregistered models {stale}; delete their entries"


def test_a_model_without_golden_entry_fails_naming_it_and_the_command():
    with pytest.raises(pytest.fail.Exception) as failure:
        _golden_entry("tiny_unstored_net")
    message = str(failure.value)
    assert "tiny_unstored_net: no entry in tests/golden/model_logits.json" in message
    assert "PYTHONPATH=. python tests/models/test_golden.py tiny_unstored_net" in message


@pytest.mark.parametrize(
    "name",
    [n if n in FAST_MODELS else pytest.param(n, marks=pytest.mark.slow) for n in list_models()],
)
def test_seeded_build_gives_the_golden_outputs(name):
    expected = _golden_entry(name)
    actual = compute_golden(name)
    _assert_close(actual["logits"], expected["logits"], f"{name} logits")
    assert actual["features_shape"] == expected["features_shape"], name
    _assert_close(
        actual["features_channel_means"], expected["features_channel_means"], f"{name} features"
    )


@pytest.mark.parametrize(
    "name",
    [n if n in FAST_MODELS else pytest.param(n, marks=pytest.mark.slow) for n in list_models()],
)
def test_every_family_ends_in_the_shared_head(name):
    model = build_model(name, num_classes=0, **MODEL_KWARGS.get(name, {}))
    heads = sum(isinstance(layer, ClassifierHead) for layer in model.sublayers())
    assert heads == 1, f"{name} has {heads} ClassifierHead(s); it must end in exactly one"


def test_golden_comparison_catches_a_tiny_change():
    # The tolerance scales with each vector, so even the 1e-17 logits of a deep BN-free stack
    # are really compared: a 1e-3 relative change must fail.
    expected = _load_golden()["mobilenet_v1"]["logits"]
    _assert_close(expected, expected, "identical")
    with pytest.raises(AssertionError):
        _assert_close((np.asarray(expected) * (1 + 1e-3)).tolist(), expected, "scaled")


def update_golden(names: list[str]) -> None:
    """Recompute the entries of `names` (all registered models if empty) and rewrite the file."""
    models = _load_golden() if GOLDEN_FILE.exists() else {}
    for name in names or list_models():
        models[name] = compute_golden(name)
        print(f"{name}: updated", flush=True)
    GOLDEN_FILE.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(GOLDEN_FILE, {
        "build_seed": BUILD_SEED, "input_seed": INPUT_SEED, "input_shape": INPUT_SHAPE,
        "num_classes": NUM_CLASSES, "models": dict(sorted(models.items())),
    })


if __name__ == "__main__":
    update_golden(sys.argv[1:])
