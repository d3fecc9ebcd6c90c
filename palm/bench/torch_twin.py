"""palm's ResNet18/34/50 layout in PyTorch, for the int8 section's PyTorch eager comparison."""
from __future__ import annotations

from typing import Any

from palm.runtime import usable_cores

# name -> (blocks per stage, bottleneck blocks)
DEPTHS = {"resnet18": ([2, 2, 2, 2], False), "resnet34": ([3, 4, 6, 3], False),
          "resnet50": ([3, 4, 6, 3], True)}


def torch_resnet(model_name: str) -> Any:
    """The torchvision layout of resnet18/34/50 (random weights) for PyTorch eager timing,
    or None for other networks or without torch. Written out because torchvision is not
    needed for anything else."""
    try:
        import torch
        from torch import nn
    except ImportError:
        return None
    if model_name not in DEPTHS:
        return None
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
    torch.set_num_threads(usable_cores())
    return nn.Sequential(*layers).eval()
