"""What is particular to the ViTs: timm's sizes, the position embedding at other input sizes,
Grad-CAM on the patch tokens, exports at any size, and RETFound's pre-training checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import paddle
import pytest

from palm.engine.export import export_model
from palm.engine.inference import InferencePredictor
from palm.models import build_model
from palm.models.convert import convert_state_dict
from palm.viz.cam import GradCAM

from tests.fixtures.pytorch.formula import formula_weights

KEYS = json.loads((Path(__file__).parents[1] / "fixtures" / "pytorch" /
                   "torchvision_keys.json").read_text())
# timm's parameter counts at 1000 classes (timm.create_model(...).num_params, timm 1.0)
TIMM_PARAMS = {"vit_tiny_patch16": 5_717_416, "vit_small_patch16": 22_050_664,
               "vit_base_patch16": 86_567_656}


@pytest.mark.parametrize("name", sorted(TIMM_PARAMS))
def test_sizes_are_timms(name):
    with paddle.LazyGuard():
        model = build_model(name, num_classes=1000)
    assert sum(int(np.prod(p.shape)) for p in model.parameters()) == TIMM_PARAMS[name]


def test_position_embedding_follows_the_input_size():
    paddle.seed(0)
    model = build_model("vit_tiny_patch16", num_classes=0, with_pool=False)
    model.eval()
    assert model(paddle.rand([1, 3, 224, 224])).shape == [1, 192, 14, 14]
    assert model(paddle.rand([1, 3, 96, 160])).shape == [1, 192, 6, 10]  # interpolated grid
    assert model._position_embedding(14, 14) is model.pos_embed  # stored size: as stored


def test_gradcam_explains_the_patch_tokens():
    paddle.seed(0)
    model = build_model("vit_tiny_patch16", num_classes=1)
    cam = GradCAM(model)
    assert cam.target_layer == "token_grid"
    heat = cam(paddle.rand([2, 3, 64, 64]))
    assert heat.shape == (2, 64, 64) and np.isfinite(heat).all()
    assert float(heat.max()) > float(heat.min())  # depends on the tokens: not flat


def test_a_retfound_pretraining_checkpoint_sets_aside_decoder_mask_token_and_norm():
    """RETFound's MAE checkpoint: encoder + `norm` + `mask_token` + decoder, no fc_norm or
    head. Shown on the ViT-Tiny shape with RETFound's rules (ViT-L's 300 M parameters would
    not add anything)."""
    keys = [kv for kv in KEYS["vit_tiny_patch16"] if not kv[0].startswith("head.")]
    keys += [["mask_token", [1, 1, 192]], ["decoder_embed.weight", [512, 192]],
             ["decoder_blocks.0.attn.qkv.weight", [1536, 512]], ["decoder_pred.bias", [768]]]
    model = build_model("vit_tiny_patch16", num_classes=1, global_pool="avg")
    conversion = convert_state_dict(formula_weights(keys), model, "retfound",
                                    head_may_differ=True)
    assert sorted(conversion.ignored) == ["decoder_blocks.0.attn.qkv.weight", "decoder_embed.weight",
                                          "decoder_pred.bias", "mask_token", "norm.bias",
                                          "norm.weight"]
    assert set(model.state_dict()) - set(conversion.state) == {
        "fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}
    assert "ignored: norm.weight, norm.bias, mask_token, decoder_embed.weight" in conversion.summary()


@pytest.mark.parametrize("size", [64, 224])
def test_export_at_any_size_runs_on_paddle_inference(size, tmp_path):
    """At a size other than the stored 224 px the export holds the position embedding
    interpolated once (Paddle Inference could not build the graph that interpolates it);
    the predictor gives the network's own logits either way."""
    paddle.seed(0)
    model = build_model("vit_tiny_patch16", 1).eval()
    folder = export_model(model, tmp_path / "export",
                          {"model": "vit_tiny_patch16", "image_size": size, "num_classes": 1})
    batch = np.random.default_rng(0).uniform(-1, 1, (2, 3, size, size)).astype("float32")
    np.testing.assert_allclose(InferencePredictor(folder).predict(batch),
                               model(paddle.to_tensor(batch)).numpy(), rtol=1e-4, atol=1e-5)
    assert model.pos_embed.shape == [1, 197, 192]  # the model exported is left as it was
