"""palm's ResNet18/34/50 and ViT layouts in PyTorch, for the int8 and training sections'
PyTorch eager comparisons. Written out because torchvision and timm are not needed for
anything else."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from palm.models.vit import VIT_SIZES
from palm.runtime import usable_cores

# name -> (blocks per stage, bottleneck blocks)
DEPTHS = {"resnet18": ([2, 2, 2, 2], False), "resnet34": ([3, 4, 6, 3], False),
          "resnet50": ([3, 4, 6, 3], True)}


def torch_twin(model_name: str) -> Any:
    """palm's network `model_name` in PyTorch (random weights, eval mode, threads = cores)
    for eager timing: resnet18/34/50 or vit_*_patch16; None for others or without torch."""
    try:
        import torch
    except ImportError:
        return None
    size = model_name.removeprefix("vit_").removesuffix("_patch16")
    if model_name in DEPTHS:
        net = torch_resnet(model_name)
    elif model_name == f"vit_{size}_patch16" and size in VIT_SIZES:
        net = torch_vit(*VIT_SIZES[size])
    else:
        return None
    torch.set_num_threads(usable_cores())
    return net.eval()


def torch_training_parts(model_name: str, batch: np.ndarray, labels: np.ndarray
                         ) -> tuple[Any, Any, Any, Any, Any] | None:
    """(network in training mode, optimizer, loss, images, targets) of a PyTorch eager
    training step as palm.bench.train.training_setup's: one logit, BCE-with-logits, SGD
    momentum 0.9 with weight decay 1e-3; None without torch or a twin of `model_name`."""
    net = torch_twin(model_name)
    if net is None:
        return None
    import torch

    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-3)
    targets = torch.from_numpy(labels.astype("float32")).reshape(-1, 1)
    return (net.train(), optimizer, torch.nn.BCEWithLogitsLoss(), torch.from_numpy(batch),
            targets)


def torch_training_step(model_name: str, batch: np.ndarray, labels: np.ndarray
                        ) -> Callable[[], None] | None:
    """One PyTorch eager training step (torch_training_parts), waiting for the loss."""
    parts = torch_training_parts(model_name, batch, labels)
    if parts is None:
        return None
    net, optimizer, loss_fn, images, targets = parts

    def step() -> None:
        loss = loss_fn(net(images), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        loss.item()

    return step


def torch_vit(embed_dim: int, depth: int, num_heads: int) -> Any:
    """timm's vit_*_patch16_224 with a class-token head: patch embedding, class token,
    position embedding, pre-norm blocks (PyTorch's own TransformerEncoderLayer, whose eval
    fast path is PyTorch eager at its best), final norm, linear head."""
    import torch
    from torch import nn

    class VisionTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch_embed = nn.Conv2d(3, embed_dim, 16, 16)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.pos_embed = nn.Parameter(torch.randn(1, 197, embed_dim) * 0.02)
            layer = nn.TransformerEncoderLayer(embed_dim, num_heads, 4 * embed_dim, dropout=0.0,
                                               activation="gelu", layer_norm_eps=1e-6,
                                               batch_first=True, norm_first=True)
            self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
            self.head = nn.Linear(embed_dim, 1)

        def forward(self, x):
            tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], 1) + self.pos_embed
            return self.head(self.norm(self.blocks(x))[:, 0])

    return VisionTransformer()


def torch_resnet(model_name: str) -> Any:
    """The torchvision layout of resnet18/34/50 (random weights)."""
    import torch
    from torch import nn

    blocks, bottleneck = DEPTHS[model_name]
    expansion = 4 if bottleneck else 1

    class Block(nn.Module):
        def __init__(self, cin: int, width: int, stride: int):
            super().__init__()
            cout = width * expansion
            if bottleneck:
                convs = [(cin, width, 1, 1), (width, width, 3, stride), (width, cout, 1, 1)]
            else:
                convs = [(cin, width, 3, stride), (width, cout, 3, 1)]
            layers: list[nn.Module] = []
            for i, (a, b, k, st) in enumerate(convs):
                layers += [nn.Conv2d(a, b, k, st, k // 2, bias=False), nn.BatchNorm2d(b)]
                if i < len(convs) - 1:
                    layers.append(nn.ReLU(inplace=True))
            self.body = nn.Sequential(*layers)
            self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                        nn.BatchNorm2d(cout))
                          if stride != 1 or cin != cout else nn.Identity())

        def forward(self, x):
            return torch.relu(self.body(x) + self.short(x))

    layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                               nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for stage, n in enumerate(blocks):
        for i in range(n):
            layers.append(Block(cin, 64 * 2 ** stage, 2 if stage and not i else 1))
            cin = 64 * 2 ** stage * expansion
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 1)]
    return nn.Sequential(*layers)
