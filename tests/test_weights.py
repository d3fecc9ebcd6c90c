"""The safe weights reader bounds what a file can make it allocate.

Each hostile file below is under 160 bytes (57 for the direct call, one is a megabyte) that made `read_weights`
build a gigabyte of arrays: a direct `numpy.ndarray(shape, dtype)` call, a dtype with a
(16384, 16384) sub-array (built as numpy pickles one, or from a constructor argument), a
one-element array of a gigabyte-wide void dtype, and one megabyte of data shared by a
thousand arrays. Each is refused with one line before anything is allocated; the peak
memory of the process that reads it is measured in a child process (ru_maxrss).
"""
from __future__ import annotations

import json
import os
import pickle
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

from palm.engine.checkpoint import load_checkpoint_model, save_checkpoint
from palm.models import build_model
from palm.weights import UnsafeWeightsError, read_weights

REPO = Path(__file__).resolve().parent.parent
P = pickle
GIGABYTE = 1 << 30


def _text(s: str) -> bytes:
    data = s.encode()
    return P.BINUNICODE + struct.pack("<I", len(data)) + data


def _in_state_dict(value: bytes) -> bytes:
    """A protocol-2 pickle of {"w": value}."""
    return P.PROTO + b"\x02" + P.EMPTY_DICT + _text("w") + value + P.SETITEM + P.STOP


SIDE = P.BININT2 + struct.pack("<H", 16384)
SHAPE_16K_16K = SIDE + SIDE + P.TUPLE2
FLOAT32 = P.GLOBAL + b"numpy\ndtype\n" + _text("f4") + P.TUPLE1 + P.REDUCE
# _reconstruct(ndarray, (1,), <the dtype that follows>): one element, as wide as its dtype
ONE_ELEMENT_OF = (P.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n" + P.GLOBAL
                  + b"numpy\nndarray\n" + P.BININT1 + b"\x01" + P.TUPLE1)


def _shared_data(arrays: int = 1000, elements: int = 1 << 18) -> bytes:
    """`arrays` float32 arrays of `elements` each, all set from one memoised bytes object:
    what numpy writes for each array, except that the data is written once."""
    reconstruct = (P.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n" + P.GLOBAL
                   + b"numpy\nndarray\n" + P.BININT1 + b"\x00" + P.TUPLE1 + P.SHORT_BINBYTES
                   + b"\x01b" + P.TUPLE3 + P.REDUCE)
    shape = P.BININT + struct.pack("<i", elements) + P.TUPLE1
    data = bytes(4 * elements)
    ops = P.PROTO + b"\x04" + P.EMPTY_DICT + P.MARK
    for i in range(arrays):
        dtype = FLOAT32 + P.BINPUT + b"\x01" if i == 0 else P.BINGET + b"\x01"
        raw = (P.BINBYTES + struct.pack("<I", len(data)) + data + P.BINPUT + b"\x02" if i == 0
               else P.BINGET + b"\x02")
        ops += (_text(f"w{i}") + reconstruct + P.MARK + P.BININT1 + b"\x01" + shape + dtype
                + P.NEWFALSE + raw + P.TUPLE + P.BUILD)
    return ops + P.SETITEMS + P.STOP


HOSTILE = {
    # numpy.ndarray((16384, 16384), float32)
    "ndarray call": (_in_state_dict(P.GLOBAL + b"numpy\nndarray\n" + SHAPE_16K_16K + FLOAT32
                                    + P.TUPLE2 + P.REDUCE),
                     "it calls numpy.ndarray directly"),
    # numpy.dtype(("f4", (16384, 16384)))
    "sub-array dtype argument": (_in_state_dict(
        ONE_ELEMENT_OF + P.GLOBAL + b"numpy\ndtype\n" + _text("f4") + SHAPE_16K_16K + P.TUPLE2
        + P.TUPLE1 + P.REDUCE + P.TUPLE3 + P.REDUCE),
        r"it asks for a sub-array dtype \(\('<f4', \(16384, 16384\)\)\)"),
    # numpy.dtype("V1073741824") given the state of a (16384, 16384) float32 sub-array, as
    # numpy pickles a sub-array dtype
    "sub-array dtype state": (_in_state_dict(
        ONE_ELEMENT_OF + P.GLOBAL + b"numpy\ndtype\n" + _text(f"V{GIGABYTE}") + P.NEWFALSE
        + P.NEWTRUE + P.TUPLE3 + P.REDUCE + P.MARK + P.BININT1 + b"\x03" + _text("|") + FLOAT32
        + SHAPE_16K_16K + P.TUPLE2 + P.NONE + P.NONE + P.BININT + struct.pack("<i", GIGABYTE)
        + P.BININT1 + b"\x04" + P.BININT1 + b"\x00" + P.TUPLE + P.BUILD + P.TUPLE3 + P.REDUCE),
        r"it asks for a sub-array dtype \(\('<f4', \(16384, 16384\)\)\)"),
    # one element of a gigabyte-wide void dtype
    "wide dtype": (_in_state_dict(ONE_ELEMENT_OF + _text(f"V{GIGABYTE}") + P.TUPLE3 + P.REDUCE),
                   r"its arrays would take at least 1,073,741,824 bytes, more than a weights "
                   r"file of 83 bytes holds"),
    # a thousand arrays set from one megabyte
    "shared data": (_shared_data(),
                    r"its arrays would take at least [\d,]+ bytes, more than a weights file "
                    r"of 1,132,499 bytes holds"),
}

# Reads each file in turn in a fresh process and reports the outcome and how much the peak
# resident memory has grown since before the first read (importing paddle sets the baseline).
CHILD = """
import json, resource, sys
from palm.weights import read_weights
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for path in sys.argv[1:]:
    try:
        read_weights(path)
        outcome = "loaded"
    except Exception as e:
        outcome = f"{type(e).__name__}: {e}"
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(json.dumps({"outcome": outcome, "peak_growth_mb": grown / 1024}))
"""


@pytest.fixture(scope="module")
def hostile_reads(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """attack -> (its file, what reading it in a child process did)."""
    folder = tmp_path_factory.mktemp("hostile")
    paths = []
    for n, (data, _) in enumerate(HOSTILE.values()):
        paths.append(folder / f"hostile{n}.pdparams")
        paths[-1].write_bytes(data)
    proc = subprocess.run([sys.executable, "-c", CHILD, *map(str, paths)], capture_output=True,
                          text=True, cwd=folder, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    reports = [json.loads(line) for line in proc.stdout.strip().splitlines()[-len(paths):]]
    return dict(zip(HOSTILE, zip(paths, reports)))


@pytest.mark.parametrize("attack", list(HOSTILE))
def test_file_asking_for_a_gigabyte_is_refused_before_allocating(attack, hostile_reads):
    path, report = hostile_reads[attack]
    outcome = report["outcome"]
    assert outcome.startswith(f"UnsafeWeightsError: refusing {path}: "), outcome
    assert "\n" not in outcome
    assert re.search(HOSTILE[attack][1], outcome), outcome
    # each would have taken 1024 MB (the shared data: 1000 MB)
    assert report["peak_growth_mb"] < 100, report


def test_reconstruct_of_a_huge_shape_is_still_refused(tmp_path):
    """Covered since before (test_hostile): the budget check comes after it, not instead."""
    path = tmp_path / "huge.pdparams"
    path.write_bytes(_in_state_dict(
        P.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n" + P.GLOBAL + b"numpy\nndarray\n"
        + SHAPE_16K_16K + _text("f4") + P.TUPLE3 + P.REDUCE))
    with pytest.raises(UnsafeWeightsError, match=r"huge.pdparams: it asks numpy for an empty "
                                                 r"array of shape \(16384, 16384\)"):
        read_weights(path)


@pytest.mark.parametrize("state, words", [
    # a dtype's state may not make it wider under an array already made of it
    ((3, "|", None, None, None, 1 << 20, 1, 0), "changes the size of a dtype from 16 to 1048576"),
    ((3, "|", None, ("a",), {"a": (np.dtype("f4"), 0)}, 16, 4, 16), "asks for a record dtype"),
])
def test_dtype_state_cannot_widen_or_structure_a_dtype(state, words, tmp_path):
    class Dtype:
        def __reduce__(self):
            return np.dtype, ("V16", False, True), state

    path = tmp_path / "dtype.pdparams"
    with open(path, "wb") as f:
        pickle.dump({"w": Dtype()}, f, protocol=2)
    with pytest.raises(UnsafeWeightsError, match=words):
        read_weights(path)


def test_real_checkpoints_still_load(tmp_path):
    """A LeNet trained for a step (weights and Adam state saved by palm), a paddle.vision
    state dict and a model of many small tensors read as paddle.load reads them."""
    paddle.seed(0)
    model = build_model("lenet5", 1)
    opt = paddle.optimizer.Adam(1e-3, parameters=model.parameters())
    model(paddle.rand([2, 3, 32, 32])).mean().backward()
    opt.step()
    meta = {"model": "lenet5", "num_classes": 1, "image_size": 32}
    save_checkpoint(tmp_path / "ck" / "best.pdparams", model, meta, opt)
    loaded, _ = load_checkpoint_model(tmp_path / "ck" / "best.pdparams")
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name].numpy(), value.numpy())
    paddle.save(paddle.vision.models.mobilenet_v2(num_classes=10).state_dict(),
                str(tmp_path / "vision.pdparams"))
    paddle.save({f"bias{i}": paddle.to_tensor([float(i)]) for i in range(2000)},
                str(tmp_path / "small.pdparams"))
    for path in (tmp_path / "ck" / "best.pdopt", tmp_path / "vision.pdparams",
                 tmp_path / "small.pdparams"):
        ours, theirs = read_weights(path), paddle.load(str(path))
        flat_ours = _arrays(ours)
        flat_theirs = _arrays(theirs)
        assert flat_ours.keys() == flat_theirs.keys() and flat_ours, path
        for key in flat_ours:
            np.testing.assert_array_equal(flat_ours[key], flat_theirs[key])


def _arrays(obj, prefix: str = "") -> dict[str, np.ndarray]:
    if isinstance(obj, dict):
        return {k: v for key, value in obj.items() for k, v in _arrays(value, f"{prefix}/{key}").items()}
    if isinstance(obj, paddle.Tensor):
        return {prefix: obj.numpy()}
    return {}


def _shared_tuple_chain(levels: int) -> bytes:
    """Pickle opcodes leaving one tuple on the stack that holds the tuple below twice,
    `levels` deep: a few bytes per level, 2**levels steps to hash."""
    ops = pickle.EMPTY_TUPLE + pickle.BINPUT + b"\x00"
    for _ in range(levels):
        ops += (pickle.POP + pickle.BINGET + b"\x00" + pickle.BINGET + b"\x00" + pickle.TUPLE2
                + pickle.BINPUT + b"\x00")
    return ops


# each leaves the chain where the unpickler hashes it
HASHING_PICKLES = {
    "dictionary key": lambda chain: (pickle.PROTO + b"\x04" + pickle.EMPTY_DICT + chain
                                     + pickle.BININT1 + b"\x01" + pickle.SETITEM + pickle.STOP),
    "frozenset member": lambda chain: (pickle.PROTO + b"\x04" + pickle.MARK + chain
                                       + pickle.FROZENSET + pickle.STOP),
    "set member": lambda chain: (pickle.PROTO + b"\x04" + pickle.EMPTY_SET + pickle.MARK + chain
                                 + pickle.ADDITEMS + pickle.STOP),
    "set(...) argument": lambda chain: (pickle.PROTO + b"\x02" + pickle.GLOBAL + b"builtins\nset\n"
                                        + pickle.MARK + chain + pickle.LIST + pickle.TUPLE1
                                        + pickle.REDUCE + pickle.STOP),
}


@pytest.mark.parametrize("where", list(HASHING_PICKLES))
def test_tuple_hash_bomb_is_refused_not_hashed(where, tmp_path):
    """A few hundred bytes that would take 2**60 steps to load (and at 2**24 levels, as
    here, a moment) are refused before anything is hashed."""
    path = tmp_path / "bomb.pdparams"
    path.write_bytes(HASHING_PICKLES[where](_shared_tuple_chain(24)))
    with pytest.raises(UnsafeWeightsError, match=r"bomb.pdparams: it (uses a tuple as a "
                                                 r"dictionary key|passes more than [\d,]+ "
                                                 r"nested objects)"):
        read_weights(path)


def test_huge_constructor_arguments_are_refused(tmp_path):
    """tuple() of a list holding one list twice, 30 levels deep: 2**30 objects to walk."""
    ops = pickle.EMPTY_LIST + pickle.BINPUT + b"\x00"
    for _ in range(30):
        ops += (pickle.POP + pickle.MARK + pickle.BINGET + b"\x00" + pickle.BINGET + b"\x00"
                + pickle.LIST + pickle.BINPUT + b"\x00")
    path = tmp_path / "wide.pdparams"
    path.write_bytes(pickle.PROTO + b"\x02" + pickle.GLOBAL + b"builtins\ntuple\n" + ops
                     + pickle.TUPLE1 + pickle.REDUCE + pickle.STOP)
    with pytest.raises(UnsafeWeightsError,
                       match=r"more than [\d,]+ nested objects to constructors"):
        read_weights(path)


def test_state_of_other_objects_cannot_be_set(tmp_path):
    """BUILD sets attributes; only arrays and dtypes have state in a weights file."""
    path = tmp_path / "build.pdparams"
    path.write_bytes(pickle.PROTO + b"\x02" + pickle.GLOBAL + b"collections\nOrderedDict\n"
                     + pickle.EMPTY_TUPLE + pickle.REDUCE + pickle.NONE + pickle.EMPTY_DICT
                     + pickle.BINUNICODE + (7).to_bytes(4, "little") + b"__class"
                     + pickle.NONE + pickle.SETITEM + pickle.TUPLE2 + pickle.BUILD + pickle.STOP)
    with pytest.raises(UnsafeWeightsError, match="sets the state of a OrderedDict"):
        read_weights(path)


def test_empty_array_of_a_huge_shape_is_refused(tmp_path):
    """numpy's _reconstruct allocates its shape: 100 bytes asked for 10**9 bytes (and the
    copy into a tensor touched them all)."""
    path = tmp_path / "huge.pdparams"
    path.write_bytes(pickle.PROTO + b"\x02"
                     + pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n"
                     + pickle.GLOBAL + b"numpy\nndarray\n" + pickle.MARK + pickle.LONG1 + b"\x04"
                     + (10**9).to_bytes(4, "little") + pickle.TUPLE + pickle.SHORT_BINBYTES
                     + b"\x01b" + pickle.TUPLE3 + pickle.REDUCE + pickle.STOP)
    with pytest.raises(UnsafeWeightsError, match=r"huge.pdparams: it asks numpy for an empty "
                                                 r"array of shape \(1000000000,\)"):
        read_weights(path)


def test_huge_int_as_a_repeated_key_is_refused(tmp_path):
    """A big int is hashed digit by digit on every insertion: one 100 kB int reused as a
    key a million times is 4 MB of file and hours of hashing."""
    big = b"\x01" * 100_000
    ops = (pickle.PROTO + b"\x04" + pickle.LONG4 + len(big).to_bytes(4, "little") + big
           + pickle.BINPUT + b"\x00" + pickle.POP + pickle.EMPTY_DICT
           + (pickle.BINGET + b"\x00" + pickle.NONE + pickle.SETITEM) * 3 + pickle.STOP)
    path = tmp_path / "bigkey.pdparams"
    path.write_bytes(ops)
    with pytest.raises(UnsafeWeightsError, match=r"bigkey.pdparams: it uses a 799993-bit integer "
                                                 r"as a dictionary key"):
        read_weights(path)
