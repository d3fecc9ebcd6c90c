"""Vision Transformer (Dosovitskiy et al. 2021, arXiv:2010.11929) as timm builds it, and
RETFound (Zhou et al., Nature 2023), the retinal foundation model: a ViT-Large/16 pre-trained
with MAE on 1.6 million retinal images, fine-tuned with global average pooling.

Layer names are timm's (`patch_embed.proj`, `cls_token`, `pos_embed`, `blocks.N.attn.qkv`,
`norm`, `fc_norm`, `head`), so timm and RETFound checkpoints convert by name
(palm.models.convert). Pre-norm blocks with a fused qkv projection, exact GELU, LayerNorm
eps 1e-6 and stochastic depth rising linearly over the blocks, as in timm.

The position embedding is stored for `image_size` (224: published weights) and interpolated
bicubically to the grid of any other input size, as timm's `dynamic_img_size` does. Grad-CAM
explains `token_grid`: the patch tokens entering the last block, laid out as a map
[N, D, H/16, W/16] (the output of the last block's patch tokens does not reach the class
token, so it would explain nothing).
"""
from __future__ import annotations

from copy import deepcopy

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from palm.models.layers import ClassifierHead, StochasticDepth
from palm.models.registry import register_model

LAYER_NORM_EPS = 1e-6


class PatchEmbed(nn.Layer):
    """Non-overlapping patches as tokens: a conv with kernel = stride = patch size."""

    def __init__(self, patch_size: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2D(3, embed_dim, patch_size, stride=patch_size)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.proj(x)  # [N, D, H/p, W/p]


class Attention(nn.Layer):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads, self.scale = num_heads, (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        n, tokens, dim = x.shape
        qkv = self.qkv(x).reshape([n, tokens, 3, self.num_heads, dim // self.num_heads])
        q, k, v = qkv.transpose([2, 0, 3, 1, 4]).unbind(0)  # each [N, heads, L, head_dim]
        attn = F.softmax(paddle.matmul(q, k, transpose_y=True) * self.scale, axis=-1)
        out = paddle.matmul(attn, v).transpose([0, 2, 1, 3]).reshape([n, tokens, dim])
        return self.proj(out)


class Mlp(nn.Layer):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Layer):
    """x + attn(norm1(x)), then + mlp(norm2(x)), each branch dropped per sample in training."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, epsilon=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, epsilon=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = StochasticDepth(drop_path)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Layer):
    """ViT: patch tokens + class token + position embedding -> blocks -> pooled -> head.

    Args:
        num_classes: outputs (1 = one logit); <= 0 returns the pooled features [N, D, 1, 1].
        with_pool: False (backbone use, num_classes <= 0) returns the patch tokens of the
            last block as a map [N, D, H/16, W/16].
        image_size: the input side the position embedding is stored for.
        global_pool: "token" (the class token, after `norm`) or "avg" (the mean of the patch
            tokens, after `fc_norm`; `norm` is then not built, as in timm and RETFound).
        drop_path_rate: stochastic depth of the last block, rising linearly from 0.
    """

    # tokens fine-tuning leaves out of weight decay (timm's `no_weight_decay()`)
    NO_WEIGHT_DECAY = ("cls_token", "pos_embed")

    def __init__(self, embed_dim: int, depth: int, num_heads: int, num_classes: int = 1,
                 with_pool: bool = True, image_size: int = 224, patch_size: int = 16,
                 mlp_ratio: float = 4.0, global_pool: str = "token",
                 drop_path_rate: float = 0.0):
        super().__init__()
        if global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool must be 'token' or 'avg', not {global_pool!r}")
        self.classifier_head = ClassifierHead("vit", num_classes, with_pool)
        self.num_classes, self.with_pool, self.global_pool = num_classes, with_pool, global_pool
        self.patch_size, self.grid = patch_size, image_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.cls_token = self.create_parameter(
            [1, 1, embed_dim], default_initializer=nn.initializer.TruncatedNormal(std=1e-6))
        self.pos_embed = self.create_parameter(
            [1, 1 + self.grid ** 2, embed_dim],
            default_initializer=nn.initializer.TruncatedNormal(std=0.02))
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.LayerList([Block(embed_dim, num_heads, mlp_ratio, rate) for rate in rates])
        self.token_grid = nn.Identity()  # the patch tokens entering the last block, as a map
        if global_pool == "token":
            self.norm = nn.LayerNorm(embed_dim, epsilon=LAYER_NORM_EPS)
        else:
            self.fc_norm = nn.LayerNorm(embed_dim, epsilon=LAYER_NORM_EPS)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else None

    def _position_embedding(self, h: int, w: int) -> paddle.Tensor:
        if (h, w) == (self.grid, self.grid):
            return self.pos_embed
        cls, grid = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        dim = grid.shape[-1]
        grid = grid.reshape([1, self.grid, self.grid, dim]).transpose([0, 3, 1, 2])
        grid = F.interpolate(grid, size=[h, w], mode="bicubic", align_corners=False)
        return paddle.concat([cls, grid.transpose([0, 2, 3, 1]).reshape([1, h * w, dim])], 1)

    def for_input_size(self, image_size: int) -> "VisionTransformer":
        """A copy whose position embedding is stored for `image_size` (interpolated once):
        its graph then holds no interpolation, which Paddle Inference cannot build (an
        export at another size than the stored one failed with a shape mismatch)."""
        copy = deepcopy(self)
        grid = image_size // self.patch_size
        if grid != self.grid:
            resized = self._position_embedding(grid, grid).detach()
            copy.pos_embed = copy.create_parameter(
                resized.shape, default_initializer=nn.initializer.Assign(resized))
            copy.grid = grid
        return copy

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        maps = self.patch_embed(x)
        n, dim, h, w = maps.shape
        tokens = maps.flatten(2).transpose([0, 2, 1])
        x = paddle.concat([self.cls_token.expand([n, -1, -1]), tokens], 1)
        x = x + self._position_embedding(h, w)
        for block in self.blocks[:-1]:
            x = block(x)
        grid = self.token_grid(x[:, 1:].transpose([0, 2, 1]).reshape([n, dim, h, w]))
        x = self.blocks[-1](paddle.concat([x[:, :1], grid.flatten(2).transpose([0, 2, 1])], 1))
        if not self.with_pool:  # backbone use: the last block's patch tokens as a map
            return self.classifier_head(x[:, 1:].transpose([0, 2, 1]).reshape([n, dim, h, w]), None)
        pooled = self.norm(x)[:, 0] if self.global_pool == "token" else self.fc_norm(x[:, 1:].mean(1))
        # as a 1 x 1 map: the shared head's pool keeps it, flattens it and applies `head`
        return self.classifier_head(pooled.reshape([n, dim, 1, 1]), self.head)


# name -> (embed_dim, depth, num_heads), timm's vit_*_patch16_224
VIT_SIZES = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12),
             "large": (1024, 24, 16)}


@register_model
def vit_tiny_patch16(num_classes: int = 1, **kw) -> VisionTransformer:
    return VisionTransformer(*VIT_SIZES["tiny"], num_classes=num_classes, **kw)


@register_model
def vit_small_patch16(num_classes: int = 1, **kw) -> VisionTransformer:
    return VisionTransformer(*VIT_SIZES["small"], num_classes=num_classes, **kw)


@register_model
def vit_base_patch16(num_classes: int = 1, **kw) -> VisionTransformer:
    return VisionTransformer(*VIT_SIZES["base"], num_classes=num_classes, **kw)


@register_model
def vit_large_patch16(num_classes: int = 1, **kw) -> VisionTransformer:
    return VisionTransformer(*VIT_SIZES["large"], num_classes=num_classes, **kw)


@register_model
def retfound(num_classes: int = 1, **kw) -> VisionTransformer:
    """RETFound's fine-tuning network: ViT-L/16 with global average pooling and `fc_norm`
    (its released checkpoints load with `--pretrained FILE.pth`; the MAE decoder, mask token
    and the encoder `norm` of the pre-training checkpoint are reported as ignored)."""
    return VisionTransformer(*VIT_SIZES["large"], num_classes=num_classes,
                             **{"global_pool": "avg", **kw})
