"""Pretrain torchvision's ResNet-18 briefly on a PALM-layout folder, in PyTorch, and save its
state dict as a `.pth`: the "pretrained weights from elsewhere" of the with / without
pretraining comparison in docs/models.md. Needs torch and torchvision (palm itself never
does): `pip install torch torchvision`.

    python docs/examples/pretrain_torchvision.py PALM_ROOT OUT.pth --epochs 4 --image-size 64

Images are read as palm reads them (RGB, resized to a square, scaled to [-1, 1]); labels
come from the first letter of the file name (P = pathologic myopia, H/N = not), and the
network is trained as a two-class softmax classifier, so its head (fc, 2 outputs) is not the
one-logit head palm fine-tunes: `--pretrained` skips it and reports it, as with ImageNet's.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image


def palm_training_images(root: Path) -> tuple[list[Path], np.ndarray]:
    folder = root / "PALM-Training400" / "PALM-Training400"
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return files, np.array([1 if p.name[0].upper() == "P" else 0 for p in files])


def load(files: list[Path], size: int) -> torch.Tensor:
    arrays = [np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR))
              for p in files]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    files, labels = palm_training_images(args.root)
    images, targets = load(files, args.image_size), torch.from_numpy(labels)
    model = torchvision.models.resnet18(num_classes=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    for epoch in range(args.epochs):
        model.train()
        order, total = torch.randperm(len(files)), 0.0
        for start in range(0, len(files), args.batch_size):
            batch = order[start:start + args.batch_size]
            flip = torch.rand(len(batch)) < 0.5  # horizontal flips, as palm's fundus preset
            x = torch.where(flip[:, None, None, None], images[batch].flip(3), images[batch])
            loss = torch.nn.functional.cross_entropy(model(x), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        print(f"epoch {epoch + 1}/{args.epochs}: training loss {total / len(files):.4f}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.output)
    print(f"saved {args.output} ({len(files)} images, {args.epochs} epochs)")


if __name__ == "__main__":
    main()
