"""Hostile inputs found by trying to break checkpoint loading, outputs and data checks.

Each test is one attack that got through before its fix: a small crafted file or a
careless option value that hung, crashed with a traceback or damaged a file.
"""
from __future__ import annotations

import csv
import json
import os
import pickle
import re
from pathlib import Path

import cv2
import numpy as np
import paddle
import pytest

from palm.data.image_io import CachedImageReader, ImageReadError, read_image
from palm.engine.checkpoint import (CheckpointError, load_checkpoint_model, recover_folder,
                                   save_checkpoint)
from palm.engine.export import META_NAME
from palm.engine.inference import exported_files
from palm.engine.predict import check_output, predict_to_csv
from palm.config import load_config
from palm.errors import BadConfig, OutputRefused
from palm.io_utils import output_lock
from palm.models import build_model
from palm.weights import UnsafeWeightsError, file_sha256, read_weights


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


@pytest.mark.parametrize("link", ["symbolic", "hard"])
@pytest.mark.parametrize("folder", [False, True])
def test_link_planted_as_lock_file_is_refused_and_its_target_kept(link, folder, tmp_path):
    """The lock file is truncated and written: a link at its name clobbered what it led to."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    output = tmp_path / ("run" if folder else "out.csv")
    lock = output / ".lock" if folder else tmp_path / "out.csv.lock"
    lock.parent.mkdir(exist_ok=True)
    if link == "symbolic":
        lock.symlink_to(victim)
    else:
        os.link(victim, lock)
    with pytest.raises(OutputRefused, match=re.escape(str(lock))):
        with output_lock(output, folder=folder):
            pass
    assert victim.read_text() == "precious"


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    """An untrained LeNet-5 checkpoint saved by palm (weights + sidecar with hashes)."""
    paddle.seed(0)
    path = tmp_path / "ck" / "best.pdparams"
    save_checkpoint(path, build_model("lenet5", 1), {
        "model": "lenet5", "num_classes": 1, "image_size": 32, "class_names": ["non-PM", "PM"],
        "normalize": "minus_one_one", "threshold": 0.5, "model_kwargs": {}})
    return path


@pytest.mark.parametrize("change, expected", [
    ({"num_classes": 10**9, "class_names": []},
     r"describes a lenet5 of 85,000,061,156 parameters, more than best.pdparams \([\d,]+ bytes\)"),
    ({"model_kwargs": {"in_channels": 10**8}}, r"describes a lenet5 of 15,000,060,791 parameters"),
    ({"model_kwargs": {"in_channels": -1}}, r"best.json: cannot build lenet5 \("),
    ({"files": {"pdparams": "x"}}, r"best.json: files.pdparams must be \{\"sha256\": hex text"),
    ({"class_names": ["PM"]}, r"best.json: 1 class_names for num_classes 1 \(needs 2\)"),
    ({"class_names": ["PM", "PM"]}, r"best.json: class_names must differ"),
])
def test_sidecar_cannot_ask_for_a_huge_or_broken_network(change, expected, checkpoint):
    """A sidecar's sizes allocated gigabytes (MemoryError) or crashed before the weights
    were read; a wrong count of class names silently labelled positives ""."""
    side = checkpoint.with_suffix(".json")
    side.write_text(json.dumps({**json.loads(side.read_text()), **change}))
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint_model(checkpoint)


def _radiance_hdr(side: int) -> bytes:
    """A run-length-coded Radiance HDR image: 2 kB per row, side x side float pixels."""
    channel = b""
    left = side
    while left:
        run = min(127, left)
        channel += bytes([128 + run, 100])
        left -= run
    row = bytes([2, 2, side >> 8, side & 255]) + channel * 4
    return b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y %d +X %d\n" % (side, side) + row * side


def test_format_opencv_decodes_but_pil_cannot_size_is_refused(tmp_path):
    """OpenCV picks its decoder by content: an HDR named .png went past the pixel cap
    (9 MB of file decoded to 12000 x 12000 float pixels, gigabytes)."""
    path = tmp_path / "photo.png"
    path.write_bytes(_radiance_hdr(2000))
    with pytest.raises(ImageReadError, match=r"photo.png: not a JPEG, PNG, BMP or TIFF image"):
        read_image(path, max_pixels=1_000_000)


@pytest.mark.parametrize("name", ["best", "best.partial"])
def test_predict_output_beside_a_checkpoint_keeps_its_sidecar(name, checkpoint):
    """`--output run/best` wrote its record to run/best.json: the checkpoint's sidecar."""
    side = checkpoint.with_suffix(".json")
    if name == "best.partial":  # the journal's record is best.partial.json
        side.rename(checkpoint.parent / "best.partial.json")
        side = checkpoint.parent / "best.partial.json"
    before = side.read_bytes()
    with pytest.raises(OutputRefused, match=rf"^output .*{name} would replace .*{side.name}, "
                                            r"which palm did not write"):
        check_output(checkpoint.parent / name)
    assert side.read_bytes() == before


def test_recovery_removes_only_palm_leftovers(tmp_path):
    """Recovery ran on any --output folder and deleted every hidden .tmp file in it."""
    others = [tmp_path / ".notes.tmp", tmp_path / ".backup.20240101.tmp"]
    ours = [tmp_path / ".last.pdparams.0a1b2c3d.tmp", tmp_path / ".config.yaml.k2_x9qzt.tmp"]
    for path in others + ours:
        path.write_text("x")
    assert recover_folder(tmp_path) == [f"{tmp_path}: removed 2 temporary file(s) of an "
                                        "interrupted write"]
    assert [p.exists() for p in others + ours] == [True, True, False, False]


def test_yaml_aliases_cannot_expand_a_config(tmp_path):
    """Aliases listing the one above nine times, 9 levels: printing `lr` in the error
    message took minutes and gigabytes (here 7 levels, 4.8 million values)."""
    lines = ['k0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"k{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 7)]
    path = tmp_path / "laughs.yaml"
    path.write_text("model: lenet5\nlr: {" + ", ".join(lines) + "}\n")
    with pytest.raises(BadConfig, match=r"laughs.yaml: not valid YAML \(more than 100000 values "
                                        r"once its aliases"):
        load_config(path)


@pytest.mark.parametrize("name", ["best.json", ".palm-commit.json"])
def test_deeply_nested_json_is_named_as_damaged(name, checkpoint):
    """100000 nested brackets: a RecursionError naming no file (a traceback in recovery)."""
    (checkpoint.parent / name).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CheckpointError, match=rf"{re.escape(name)}: (not valid JSON|damaged "
                                              r"commit record) \(maximum recursion depth"):
        load_checkpoint_model(checkpoint) if name == "best.json" else recover_folder(
            checkpoint.parent)


def test_export_record_with_malformed_hashes_is_refused(checkpoint, tmp_path):
    """export.sha256 as a number crashed with a TypeError; as text, it checked nothing."""
    folder = tmp_path / "exp"
    folder.mkdir()
    for name in ("model.json", "model.pdiparams"):
        (folder / name).write_bytes(b"")
    meta = json.loads(checkpoint.with_suffix(".json").read_text())
    for hashes in (5, "model.json"):
        meta["export"] = {"sha256": hashes}
        (folder / META_NAME).write_text(json.dumps(meta))
        with pytest.raises(CheckpointError, match=r"export.sha256 must map file names"):
            exported_files(folder)


def test_resume_keeps_only_rows_of_this_runs_inputs(checkpoint, tmp_path):
    """Resuming into an output made for other files kept their rows and counted them as
    predicted images of this run."""
    images = []
    for k in range(4):
        images.append(str(tmp_path / f"img{k}.png"))
        cv2.imwrite(images[-1], np.full((40, 40, 3), 60 * k, np.uint8))
    model, meta = load_checkpoint_model(checkpoint)
    out = tmp_path / "preds.csv"
    run = dict(num_workers=0, progress=False, checkpoint_sha256=file_sha256(checkpoint))
    predict_to_csv(model, meta, images[:3], out, **run)
    summary = predict_to_csv(model, meta, images[2:], out, resume=True, **run)
    with open(out, newline="") as f:
        assert [row["path"] for row in csv.DictReader(f)] == images[2:]
    assert (summary.images, summary.reused) == (2, 1)


def test_16_bit_image_converts_without_float_copies(tmp_path):
    """A 16-bit RGBA image became float32 copies (12+ bytes a pixel) before 8-bit: a 100 MP
    PNG under the pixel cap took gigabytes."""
    import tracemalloc

    path = tmp_path / "deep.png"
    rng = np.random.default_rng(0)
    cv2.imwrite(str(path), rng.integers(0, 65536, (1000, 1000, 4), dtype=np.uint16))
    # libpng keeps the high byte of each sample while decoding (palm.data.image_io._decode_flags)
    expected = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[..., 2::-1] >> 8
    tracemalloc.start()
    try:
        image = read_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(image, expected.astype(np.uint8))
    # the file read twice (array, bytes), 3 bytes a pixel decoded (8 + 4 + 3 when it was
    # decoded unchanged), some slack; float copies add 12 or more bytes a pixel
    assert peak < 2 * path.stat().st_size + 20 * 1_000_000


def test_named_pipe_with_an_image_name_is_refused_not_waited_on(tmp_path):
    """A FIFO named .jpg in an image folder or list: reading it waited forever."""
    path = tmp_path / "eye.jpg"
    os.mkfifo(path)
    with pytest.raises(ImageReadError, match=r"eye.jpg: not a regular file"):
        read_image(path)


def test_cache_entry_that_is_not_an_image_is_decoded_again(tmp_path):
    """A planted or damaged .npy in the cache (any shape, any dtype) was used as the image."""
    path = tmp_path / "eye.png"
    cv2.imwrite(str(path), np.full((40, 50, 3), 90, np.uint8))
    read = CachedImageReader(tmp_path / "cache", 32)
    expected = read(path)
    for planted in (np.zeros(5, np.float64), np.zeros((4, 4, 5), np.uint8),
                    np.zeros((400, 500, 3), np.uint8)):
        np.save(read.cache_path(path), planted)
        np.testing.assert_array_equal(read(path), expected)


def test_progressive_jpeg_is_capped_at_its_full_size(tmp_path):
    """libjpeg holds all coefficients of a progressive JPEG (3 bytes a pixel) even at 1/8
    scale: a 65535 x 65535 one passed the 100 MP cap at 1/8 scale and needed 13 GB."""
    image = np.full((800, 800, 3), 120, np.uint8)
    baseline, progressive = tmp_path / "baseline.jpg", tmp_path / "progressive.jpg"
    cv2.imwrite(str(baseline), image)
    cv2.imwrite(str(progressive), image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert read_image(baseline, target_size=32, max_pixels=100_000).shape == (100, 100, 3)
    with pytest.raises(ImageReadError, match=r"progressive.jpg: progressive JPEG, held at full "
                                             r"size while decoding; image of 800x800 pixels"):
        read_image(progressive, target_size=32, max_pixels=100_000)
    assert read_image(progressive, target_size=32, max_pixels=640_000).shape == (100, 100, 3)


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
