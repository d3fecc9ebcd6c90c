"""Reading PyTorch checkpoints and safetensors files into numpy arrays, without PyTorch and
without running code from them.

- `.pth`/`.pt` in the zip format `torch.save` writes since PyTorch 1.6: `ARCHIVE/data.pkl` is
  unpickled by palm's restricted unpickler (palm.weights) extended with exactly the globals
  that rebuild tensors (`torch._utils._rebuild_tensor_v2`, `_rebuild_parameter`, the typed
  storage classes), each mapped onto numpy: a storage is the bytes of `ARCHIVE/data/KEY`,
  a tensor a strided view of it, copied. torch is never imported; any other global is refused.
  Storages must be stored uncompressed and exactly as long as they say (as torch writes
  them), tensors may view only those storages, all tensors together may copy at most
  MAX_EXPANSION times the file's size plus EXPANSION_SLACK (one storage viewed by thousands
  of tensors, or with stride 0, would otherwise multiply it), and data.pkl may unpack to at
  most as much: a small file cannot ask for more memory than it holds.
- `.safetensors`: the `safetensors` package's numpy API (bfloat16 through ml_dtypes, which
  numpy lacks).

Both return float16/bfloat16 tensors as they are; `palm.models.convert` makes them float32.
"""
from __future__ import annotations

import collections
import io
import math
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from palm.errors import BadCheckpoint
from palm.weights import (EXPANSION_SLACK, MAX_DIMENSIONS, MAX_EXPANSION,
                          UnsafeWeightsError, _RestrictedUnpickler)

# torch's typed storage classes -> the numpy name of their elements' type (bfloat16: ml_dtypes')
STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
}


def storage_dtype(storage: str) -> np.dtype:
    """The numpy dtype of torch storage class `storage` (a key of STORAGE_DTYPES)."""
    name = STORAGE_DTYPES[storage]
    return bfloat16() if name == "bfloat16" else np.dtype(name)


def bfloat16() -> np.dtype:
    """numpy's bfloat16, which ml_dtypes defines (and registers, for safetensors' reader)."""
    # importing ml_dtypes takes 1-2 s, which every palm command paid at start-up when it was
    # imported with this module; only the readers of PyTorch weights need it
    import ml_dtypes
    return np.dtype(ml_dtypes.bfloat16)


# the first bytes of a zip archive (torch.save since PyTorch 1.6), and of torch.save's legacy
# format, which begins with its magic number pickled with protocol 2
ZIP_MAGIC = b"PK\x03\x04"
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."
LEGACY_MESSAGE = ("saved by PyTorch < 1.6 in its legacy format; re-save it with torch.save "
                  "in a recent PyTorch")
SAFETENSORS_HEADER_START = ord("{")
PICKLE_PROTO = 0x80  # the first byte of a pickle of protocol 2 or later (paddle.save's)


def checkpoint_format(path: str | Path) -> str:
    """What a weights file is by its first bytes, whatever its name: "torch" (zip-format
    torch.save), "safetensors" (an 8-byte header length, then its JSON header), "torch-legacy"
    (torch.save before PyTorch 1.6), "paddle" (a pickle, as paddle.save writes) or "unknown".
    A `.bin` may be any of the first four in the wild.

    Raises:
        FileNotFoundError: no such file.
        BadCheckpoint: not a regular file (a folder, a device, a FIFO), or empty.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    if not path.is_file():
        raise BadCheckpoint(f"{path}: not a regular file")
    with open(path, "rb") as f:
        head = f.read(len(LEGACY_TORCH_MAGIC))
    if not head:
        raise BadCheckpoint(f"{path}: empty file")
    pickled = head[0] == PICKLE_PROTO and len(head) > 1 and 2 <= head[1] <= 5
    if head.startswith(ZIP_MAGIC):
        return "torch"
    if head == LEGACY_TORCH_MAGIC:
        return "torch-legacy"
    # a pickle's 9th byte is never "{" in practice, but a header length is checked for it
    if len(head) > 8 and head[8] == SAFETENSORS_HEADER_START and not (
            pickled and int.from_bytes(head[:8], "little") > path.stat().st_size - 8):
        return "safetensors"
    return "paddle" if pickled else "unknown"


class _StorageType:
    """What `torch.FloatStorage` and its kin stand for here: only their element dtype."""

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype


class _TorchUnpickler(_RestrictedUnpickler):
    """palm.weights' restricted unpickler plus the globals a torch state dict needs."""

    dispatch = dict(_RestrictedUnpickler.dispatch)

    def __init__(self, data: bytes, path: Path, archive: zipfile.ZipFile, prefix: str,
                 file_size: int | None = None) -> None:
        super().__init__(io.BytesIO(data), path, size=len(data))
        self.archive, self.prefix = archive, prefix
        self.storages: dict[str, np.ndarray] = {}
        # bytes all tensors may copy out of the storages (the file's, or the pickle's)
        self.tensor_bytes_left = MAX_EXPANSION * (len(data) if file_size is None
                                                  else file_size) + EXPANSION_SLACK

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return self._rebuild_tensor
        if module == "torch._utils" and name in ("_rebuild_parameter",
                                                  "_rebuild_parameter_with_state"):
            return lambda data, *rest: data
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(storage_dtype(name))
        return super().find_class(module, name)

    def load_build(self) -> None:
        # a state dict is an OrderedDict whose `_metadata` attribute holds each module's
        # version; it says nothing about the tensors, and no other attribute is set
        target, state = self.stack[-2], self.stack[-1]
        if isinstance(target, collections.OrderedDict) and isinstance(state, dict) \
                and set(state) <= {"_metadata"}:
            self.stack.pop()
            return
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                and type(pid[4]) is int):
            raise self._refuse(f"references an external object {str(pid)[:60]}")
        _, kind, key, _, numel = pid
        if key not in self.storages:
            self.storages[key] = self._storage(key, kind.dtype, numel)
        return self.storages[key]

    def _storage(self, key: str, dtype: np.dtype, numel: int) -> np.ndarray:
        name = f"{self.prefix}/data/{key}"
        try:
            entry = self.archive.getinfo(name)
        except KeyError:
            raise BadCheckpoint(f"{self.path}: storage {name} is missing") from None
        if entry.compress_type != zipfile.ZIP_STORED or entry.file_size != numel * dtype.itemsize:
            raise self._refuse(f"has a storage {name} that is compressed or not "
                               f"{numel} x {dtype.itemsize} bytes long")
        return np.frombuffer(self.archive.read(entry), dtype=dtype)

    def _rebuild_tensor(self, storage: Any, offset: Any, size: Any, stride: Any,
                        *rest: Any) -> np.ndarray:
        shape, strides = tuple(size), tuple(stride)
        # only a storage of the archive: a 2-D array built inside the pickle would make
        # storage[offset:] skip whole rows, past what the bound below checks
        if not any(storage is s for s in self.storages.values()):
            raise self._refuse("rebuilds a tensor from something other than a storage")
        if type(offset) is not int or offset < 0 \
                or len(shape) > MAX_DIMENSIONS or len(shape) != len(strides) \
                or not all(type(n) is int and n >= 0 for n in shape + strides):
            raise self._refuse(f"rebuilds a tensor of shape {str(size)[:40]} and strides "
                               f"{str(stride)[:40]}")
        count = math.prod(shape)
        # the last element the view reads must lie inside the storage
        last = offset + sum((n - 1) * s for n, s in zip(shape, strides)) if count else offset
        if count and last >= storage.size:
            raise self._refuse(f"reads past the end of a storage of {storage.size} elements")
        items = storage.itemsize
        self.tensor_bytes_left -= count * items
        if self.tensor_bytes_left < 0:
            raise UnsafeWeightsError(
                f"refusing {self.path}: its tensors would copy more than {MAX_EXPANSION} times "
                f"the file's bytes out of its storages (views of one storage repeated, or "
                f"stride 0); it is damaged or made to exhaust memory")
        view = np.lib.stride_tricks.as_strided(storage[offset:] if count else storage,
                                               shape, tuple(s * items for s in strides),
                                               writeable=False)
        return np.array(view, order="C")  # a copy: the tensor owns its values, row-major


def read_torch_checkpoint(path: str | Path) -> Any:
    """The object `torch.save` wrote to `path` (zip format), tensors as numpy arrays.

    Raises:
        FileNotFoundError: no file.
        UnsafeWeightsError: a global other than the tensor-rebuilding ones, or a storage or
            tensor that does not fit the bytes in the file.
        BadCheckpoint: not a zip-format torch checkpoint (the legacy format of PyTorch < 1.6
            is named as such), or damaged.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    if not zipfile.is_zipfile(path):
        legacy = checkpoint_format(path) == "torch-legacy"
        raise BadCheckpoint(f"{path}: " + (LEGACY_MESSAGE if legacy else
                                           "not a zip-format PyTorch checkpoint"))
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")
                       and n.count("/") == 1]
            if len(pickles) != 1:
                raise BadCheckpoint(f"{path}: expected one ARCHIVE/data.pkl, found "
                                    f"{len(pickles)}")
            prefix = pickles[0].split("/")[0]
            size = path.stat().st_size
            # torch stores data.pkl uncompressed; a deflated one may not unpack to more than
            # the tensors may take (zipfile stops at the size the entry declares)
            if archive.getinfo(pickles[0]).file_size > MAX_EXPANSION * size + EXPANSION_SLACK:
                raise UnsafeWeightsError(
                    f"refusing {path}: its {pickles[0]} unpacks to "
                    f"{archive.getinfo(pickles[0]).file_size:,} bytes from a file of "
                    f"{size:,} bytes; it is damaged or made to exhaust memory")
            data = archive.read(pickles[0])
            return _TorchUnpickler(data, path, archive, prefix, file_size=size).load()
    except (UnsafeWeightsError, BadCheckpoint):
        raise
    except Exception as e:  # zipfile, pickle and numpy raise many types for damaged files
        raise BadCheckpoint(f"{path}: cannot read the checkpoint ({type(e).__name__}: {e})") \
            from None


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a `.safetensors` file, by name (safetensors' numpy API)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    bfloat16()  # safetensors gives bfloat16 tensors numpy's type of that name
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for damaged headers
        raise BadCheckpoint(f"{path}: cannot read safetensors ({type(e).__name__}: {e})") \
            from None
