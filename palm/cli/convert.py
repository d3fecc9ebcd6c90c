"""A PyTorch checkpoint (torchvision, timm) as a Paddle .pdparams for a palm network.

    python tools/convert.py --model resnet50 --input resnet50-11ad3fa6.pth --output resnet50.pdparams
    python tools/train.py --model resnet50 --pretrained resnet50.pdparams ...

`.pth`/`.pt` (the zip format of torch.save) are read by a restricted reader that rebuilds
only tensors (torch is never imported, no other code in the file runs); `.safetensors`
through the safetensors package. Names are mapped to Paddle's, Linear weights transposed,
BatchNorm statistics carried, float16/bfloat16 made float32; the classifier is kept, so
the output loads strictly into `--model` built with the checkpoint's number of classes.
`train --pretrained FILE.pth` converts on the fly and skips the classifier instead.
"""
from __future__ import annotations

import argparse

from palm.cli.common import add_option, add_verbosity_options, command_parser, library_call

RUNS = "palm.engine.tasks:run_convert"


def get_args_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = command_parser(__doc__, prog)
    p.add_argument("--model", required=True, help="the palm network of that architecture")
    p.add_argument("--input", required=True, help="the PyTorch checkpoint (.pth/.pt/.bin zip, or safetensors; read by its bytes)")
    add_option(p, "--output", hidden=("--out",), required=True, help="the .pdparams to write")
    p.add_argument("--num-classes", type=int,
                   help="classes of the checkpoint's head (default: read from its last bias)")
    p.add_argument("--exist-ok", action="store_true", help="replace an existing output")
    add_verbosity_options(p)
    return p


main = library_call(__name__)
