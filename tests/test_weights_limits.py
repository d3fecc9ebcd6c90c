"""Hostile review of issue 22's fixes: weight files that got past the safe reader's bounds.

Each file below is small and made `read_weights` (the int branch after issue 22) allocate
far more than its size, all outside the arrays the size budget counts:

- `tuple(x)` / `list(x)` of a memoised bytes or str: eight bytes of pointer per byte, and the
  call repeated through the memo (a 106 KB file: 2 GB peak, 65-117 s, then loaded);
- `tuple(a 9000-member list)` repeated 20000 times through the memo, each call under the
  per-call limit of 10000 objects (a 438 KB file: 2.75 GB peak, 168 s, then loaded);
- protocol 5's BYTEARRAY8 with a length of 3 GB in a 22-byte file: pickle allocates and
  zero-fills the bytearray before it finds the file ends (3 GB peak, 2.6 s).

The tests use smaller repeats so they stay fast; before the fix each file loaded (or failed
only after the allocation, with an EOFError) instead of being refused.
"""
from __future__ import annotations

import pickle
import struct

import pytest

from palm.weights import UnsafeWeightsError, read_weights

P = pickle


def _text(s: str) -> bytes:
    data = s.encode()
    return P.BINUNICODE + struct.pack("<I", len(data)) + data


def _repeated_call(constructor: bytes, argument: bytes, calls: int) -> bytes:
    """{"k0": constructor(argument), "k1": ..., ...}: the constructor and its argument
    tuple memoised once and called `calls` times."""
    first = (_text("k0") + P.GLOBAL + constructor + P.BINPUT + b"\x01" + argument + P.TUPLE1
             + P.BINPUT + b"\x02" + P.REDUCE)
    rest = b"".join(_text(f"k{i}") + P.BINGET + b"\x01" + P.BINGET + b"\x02" + P.REDUCE
                    for i in range(1, calls))
    return P.PROTO + b"\x02" + P.EMPTY_DICT + P.MARK + first + rest + P.SETITEMS + P.STOP


SIXTY_FOUR_K = 1 << 16


@pytest.mark.parametrize("constructor,argument,kind", [
    (b"builtins\ntuple\n", _text("a" * SIXTY_FOUR_K), "tuple from a str"),
    (b"builtins\nlist\n", P.BINBYTES + struct.pack("<I", SIXTY_FOUR_K) + bytes(SIXTY_FOUR_K),
     "list from a bytes"),
], ids=["tuple-of-str", "list-of-bytes"])
def test_container_copied_from_bytes_or_str_is_refused(constructor, argument, kind, tmp_path):
    # 20 calls: 10 MB of pointers from a 66 KB file (2000 calls made 2 GB)
    path = tmp_path / "copies.pdparams"
    path.write_bytes(_repeated_call(constructor, argument, calls=20))
    with pytest.raises(UnsafeWeightsError, match=rf"copies.pdparams: it builds a {kind}"):
        read_weights(path)


def test_one_argument_walked_by_many_calls_counts_each_time(tmp_path):
    # 9000 members, under the old per-call limit of 10000, handed to tuple() 100 times:
    # 900,000 members copied from a 10 KB file (20000 calls made 2.75 GB)
    nine_thousand = P.EMPTY_LIST + P.MARK + P.BININT1 + b"\x07" + P.DUP * 8999 + P.APPENDS
    path = tmp_path / "walked.pdparams"
    path.write_bytes(_repeated_call(b"builtins\ntuple\n", nine_thousand, calls=100))
    with pytest.raises(UnsafeWeightsError, match=r"walked.pdparams: it passes more than "
                                                 r"[\d,]+ nested objects to constructors"):
        read_weights(path)


def test_bytearray_longer_than_the_file_is_refused_before_allocating(tmp_path):
    path = tmp_path / "bytearray.pdparams"
    path.write_bytes(P.PROTO + b"\x05" + P.BYTEARRAY8 + struct.pack("<Q", 64 << 20) + b"x"
                     + P.STOP)
    with pytest.raises(UnsafeWeightsError, match=r"bytearray.pdparams: it asks for a bytearray "
                                                 r"of 67,108,864 bytes in a file of 13 bytes"):
        read_weights(path)


def test_protocol_5_bytearray_within_the_file_still_reads(tmp_path):
    path = tmp_path / "fine.pdparams"
    path.write_bytes(pickle.dumps({"note": bytearray(b"abc")}, protocol=5))
    assert read_weights(path) == {"note": bytearray(b"abc")}


# ---------------------------------------------------------------- temperature in the sidecar

@pytest.mark.parametrize("num_classes", [1, 3])
def test_sidecar_temperature_too_small_to_divide_by_is_refused(num_classes, palm_root,
                                                                tmp_path):
    """temperature 1e-300 passed "a positive number": float32 makes it 0, so a binary model
    called every photo a certain 0.000000 or 1.000000 (exit 0) and a three-class one gave
    every photo an error row blaming the model's output."""
    import json

    import paddle

    from palm.cli import predict as predict_tool
    from palm.cli.common import run_tool
    from palm.engine.checkpoint import save_checkpoint, sidecar_path
    from palm.models import build_model

    paddle.seed(0)
    checkpoint = tmp_path / "ck" / "best.pdparams"
    names = ["non-PM", "PM"] if num_classes == 1 else ["a", "b", "c"]
    save_checkpoint(checkpoint, build_model("lenet5", num_classes),
                    {"model": "lenet5", "num_classes": num_classes, "class_names": names,
                     "image_size": 32, "normalize": "minus_one_one", "fundus_crop": False})
    side = sidecar_path(checkpoint)
    side.write_text(json.dumps({**json.loads(side.read_text()), "temperature": 1e-300}))
    output = tmp_path / "preds.csv"
    args = predict_tool.get_args_parser().parse_args(
        ["--checkpoint", str(checkpoint), "--input", str(palm_root / "PALM-Validation400"),
         "--output", str(output), "--engine", "dygraph", "--num-workers", "0", "--no-progress"])
    with pytest.raises(SystemExit) as info:
        run_tool(predict_tool.main, args)
    assert str(info.value.code) == (f"error: {side}: temperature must be a number in "
                                    "0.05..20.0, not 1e-300")
    assert not output.exists()
