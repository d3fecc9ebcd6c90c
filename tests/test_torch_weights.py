"""PyTorch checkpoints read without PyTorch: a file torch.save wrote comes back exactly, and
files that would run code or ask for memory they do not hold are refused."""
from __future__ import annotations

import json
import pickle
import struct
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from palm.errors import BadCheckpoint
from palm.torch_weights import (LEGACY_TORCH_MAGIC, STORAGE_DTYPES, _TorchUnpickler,
                                checkpoint_format, read_safetensors, read_torch_checkpoint)
from palm.weights import UnsafeWeightsError

FIXTURES = Path(__file__).parent / "fixtures" / "pytorch"


def test_what_torch_save_wrote_comes_back_exactly():
    """tensors.pth (torch 2.13's torch.save): dtypes kept, a transposed view, two tensors
    sharing a storage at offsets, a Parameter, a scalar and an empty tensor."""
    obj = read_torch_checkpoint(FIXTURES / "tensors.pth")
    expected = json.loads((FIXTURES / "tensors.json").read_text())
    assert obj["epoch"] == 3 and list(obj["model"]) == list(expected)
    for name, tensor in obj["model"].items():
        want = expected[name]
        assert str(tensor.dtype) == {"float": "float32", "half": "float16", "long": "int64"}.get(
            want["dtype"], want["dtype"]), name
        np.testing.assert_array_equal(np.asarray(tensor, np.float64).reshape(-1),
                                      np.asarray(want["value"], np.float64).reshape(-1), name)
    assert obj["model"]["transposed"].shape == (6, 4) and obj["model"]["transposed"].flags.c_contiguous


def _rewritten(tmp_path: Path, change) -> Path:
    """tensors.pth with its zip entries passed through change(name, data) -> (data, method)."""
    out = tmp_path / "changed.pth"
    with zipfile.ZipFile(FIXTURES / "tensors.pth") as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data, method = change(info.filename, src.read(info))
            dst.writestr(info.filename, data, compress_type=method)
    return out


def test_a_global_that_runs_code_is_refused_and_nothing_runs(tmp_path):
    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "ran",))

    path = _rewritten(tmp_path, lambda name, data: (
        pickle.dumps({"w": Payload()}, protocol=2) if name.endswith("data.pkl") else data,
        zipfile.ZIP_STORED))
    with pytest.raises(UnsafeWeightsError, match="it contains __builtin__.getattr"):
        read_torch_checkpoint(path)
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("change, words", [
    (lambda name, data: (data, zipfile.ZIP_DEFLATED if "/data/" in name else zipfile.ZIP_STORED),
     "compressed or not"),
    (lambda name, data: (data[:-4] if name.endswith("/data/0") else data, zipfile.ZIP_STORED),
     "compressed or not"),
])
def test_storages_must_be_stored_whole_as_torch_writes_them(tmp_path, change, words):
    with pytest.raises(UnsafeWeightsError, match=words):
        read_torch_checkpoint(_rewritten(tmp_path, change))


def test_a_tensor_may_not_read_past_its_storage(tmp_path):
    with zipfile.ZipFile(FIXTURES / "tensors.pth") as archive:
        reader = _TorchUnpickler(b"", tmp_path / "x.pth", archive, "tensors")
        storage = reader.storages["s"] = np.arange(10, dtype=np.float32)
        np.testing.assert_array_equal(reader._rebuild_tensor(storage, 2, (2, 2), (1, 2)),
                                      [[2, 4], [3, 5]])
        for offset, size, stride in ((0, (11,), (1,)), (8, (2, 2), (1, 2)), (-1, (2,), (1,)),
                                     (0, (2,), (-1,))):
            with pytest.raises(UnsafeWeightsError):
                reader._rebuild_tensor(storage, offset, size, stride)
        # an array the pickle built itself (numpy's _frombuffer) is no storage: as a (2, 5)
        # array, storage[1:] starts 5 elements in and a view of 9 read 4 past its end
        with pytest.raises(UnsafeWeightsError, match="other than a storage"):
            reader._rebuild_tensor(storage.reshape(2, 5), 1, (9,), (1,))


def _tensors_pickle(views: list[tuple[int, tuple, tuple]], numel: int) -> bytes:
    """A protocol-2 data.pkl as torch writes it: {'w0': tensor, ...}, every tensor a view
    (offset, size, stride) of one FloatStorage 'archive/data/0' of `numel` elements."""
    def ints(values):
        return b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"
    out = b"\x80\x02}("
    for i, (offset, size, stride) in enumerate(views):
        name = f"w{i}".encode()
        out += (b"X" + struct.pack("<I", len(name)) + name
                + b"ctorch._utils\n_rebuild_tensor_v2\n("
                + b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000"
                + b"X\x03\x00\x00\x00cpu" + b"J" + struct.pack("<i", numel) + b"tQ"
                + b"J" + struct.pack("<i", offset) + ints(size) + ints(stride) + b"\x89tR")
    return out + b"u."


def _archive(tmp_path: Path, pickled: bytes, storage: bytes, method=zipfile.ZIP_STORED) -> Path:
    path = tmp_path / "made.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickled, compress_type=method)
        archive.writestr("archive/data/0", storage)
    return path


def test_views_cannot_multiply_a_storage_beyond_the_files_size(tmp_path):
    """One storage viewed many times, or with stride 0, is copied once per tensor: a
    400-byte file asked for 1 GB (stride 0), a 4.8 MB one for 42 GB (10,000 views of 4 MB)."""
    fine = _archive(tmp_path, _tensors_pickle([(0, (4,), (1,)), (0, (2, 2), (1, 2))], 4),
                    bytes(16))
    assert [v.shape for v in read_torch_checkpoint(fine).values()] == [(4,), (2, 2)]
    for views, numel in (([(0, (250_000_000,), (0,))], 1),
                         ([(0, (1 << 18,), (1,))] * 20, 1 << 18)):
        with pytest.raises(UnsafeWeightsError, match="more than 2 times the file's bytes"):
            read_torch_checkpoint(_archive(tmp_path, _tensors_pickle(views, numel),
                                           bytes(4 * numel)))


def test_a_deflated_data_pkl_may_not_unpack_beyond_the_files_size(tmp_path):
    """2 MB of deflated data.pkl unpacking to 2 GB took 4.4 GB before it was parsed."""
    pickled = _tensors_pickle([(0, (1,), (1,))], 1)
    assert read_torch_checkpoint(_archive(tmp_path, pickled, bytes(4), zipfile.ZIP_DEFLATED))
    bomb = _archive(tmp_path, pickled + bytes(8 << 20), bytes(4), zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < 100_000
    with pytest.raises(UnsafeWeightsError, match="data.pkl unpacks to 8,388,"):
        read_torch_checkpoint(bomb)


def test_not_a_zip_checkpoint_names_the_old_format(tmp_path):
    other = tmp_path / "other.pth"
    other.write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(BadCheckpoint, match="not a zip-format PyTorch checkpoint"):
        read_torch_checkpoint(other)
    # what torch.save wrote before PyTorch 1.6: its magic number pickled first
    legacy = tmp_path / "old.pth"
    legacy.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps({}))
    with pytest.raises(BadCheckpoint, match="saved by PyTorch < 1.6 in its legacy format"):
        read_torch_checkpoint(legacy)
    with pytest.raises(FileNotFoundError):
        read_torch_checkpoint(tmp_path / "none.pth")


def test_the_format_is_read_from_the_bytes_not_the_name(tmp_path):
    """`.bin` is a PyTorch zip, a safetensors file or a Paddle pickle in the wild; a renamed
    file is what its bytes say."""
    named = {"torch": FIXTURES / "tensors.pth"}
    save_file({"w": np.ones(3, np.float32)}, str(tmp_path / "st"))
    named["safetensors"] = tmp_path / "st"
    (tmp_path / "pd").write_bytes(pickle.dumps({"w": np.ones(3)}, protocol=4))
    named["paddle"] = tmp_path / "pd"
    (tmp_path / "legacy").write_bytes(LEGACY_TORCH_MAGIC + pickle.dumps({}))
    named["torch-legacy"] = tmp_path / "legacy"
    for expected, source in named.items():
        for suffix in (".bin", ".pth", ".safetensors", ".pdparams"):
            renamed = tmp_path / f"as{suffix}"
            renamed.write_bytes(source.read_bytes())
            assert checkpoint_format(renamed) == expected, (expected, suffix)
    # a header length past the end is still safetensors' (whose reader names the problem)
    (tmp_path / "short").write_bytes((2**63).to_bytes(8, "little") + b"{}")
    assert checkpoint_format(tmp_path / "short") == "safetensors"
    with pytest.raises(BadCheckpoint, match="short: cannot read safetensors"):
        read_safetensors(tmp_path / "short")
    (tmp_path / "noise").write_bytes(bytes(range(7, 250)))
    assert checkpoint_format(tmp_path / "noise") == "unknown"
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(BadCheckpoint, match="empty: empty file"):
        checkpoint_format(tmp_path / "empty")
    with pytest.raises(BadCheckpoint, match=f"{tmp_path}: not a regular file"):
        checkpoint_format(tmp_path)
    with pytest.raises(FileNotFoundError, match="none.bin: checkpoint file not found"):
        checkpoint_format(tmp_path / "none.bin")


def test_safetensors_with_bfloat16_and_float16(tmp_path):
    tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3),
               "b": np.array([1.5, -2.0], dtype=ml_dtypes.bfloat16),
               "c": np.array([0.25], dtype=np.float16)}
    save_file(tensors, str(tmp_path / "w.safetensors"))
    back = read_safetensors(tmp_path / "w.safetensors")
    assert {k: str(v.dtype) for k, v in back.items()} == {"a": "float32", "b": "bfloat16",
                                                          "c": "float16"}
    np.testing.assert_array_equal(back["b"].astype(np.float32), [1.5, -2.0])
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(BadCheckpoint, match="bad.safetensors: cannot read safetensors"):
        read_safetensors(tmp_path / "bad.safetensors")


def test_every_storage_type_maps_to_a_plain_dtype():
    assert {str(d) for d in STORAGE_DTYPES.values()} == {
        "float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8",
        "bool"}
