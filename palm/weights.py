"""Reading weight files (`.pdparams`, `.pdopt`) without letting them run code.

`paddle.load` is `pickle.load`: a file from a model page or another lab can carry a call
to `os.system` that runs the moment it is read, even nested deep inside an otherwise valid
state dict. `read_weights` unpickles with a restricted unpickler (the idea of PyTorch's
`weights_only` loading) that rebuilds only what `paddle.save` writes for state dicts and
optimizer states in Paddle 2.x-3.3 (found by listing the globals of real files: ResNet18
and LeNet state dicts, paddle.vision models, Momentum/AdamW states with LinearWarmup over
cosine and a GradScaler):

    numpy._core.multiarray._reconstruct, numpy.ndarray, numpy.dtype   every array
    builtins.tuple           optimizer tensors, saved as tuple((name, array))
    builtins.eval            DenseTensor, saved as eval("data", {"data": array}): replaced
                             by a function that only returns that array
    numpy scalars, collections.OrderedDict, list/set/frozenset       older and hand-made files

Anything else is refused with one line naming the file and the global. Arrays are built
only the way numpy pickles them (`_reconstruct` then its data; a direct `numpy.ndarray(shape)`
call is refused), of plain dtypes (no sub-arrays or fields, which multiply an array's size),
and all the arrays of a file may take at most MAX_EXPANSION times its size plus
EXPANSION_SLACK: real files hold their arrays' bytes inline, so a 100-byte file cannot ask
for a gigabyte. Containers are bounded the same way: the arguments handed to all constructors
count against ARGUMENT_NODES plus the file's size, a list or tuple is copied only from a
list, tuple or set, and a bytearray cannot be longer than the file. This is the only
module that unpickles weight files; `trust_checkpoints(True)` (the tools' --trust-checkpoint)
hands a file to `paddle.load` unchecked, for old files with other objects inside.
"""
from __future__ import annotations

import collections
import contextlib
import contextvars
import functools
import hashlib
import math
import os
import pickle
import struct
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import paddle

from palm.errors import BadCheckpoint
from palm.nested import count_nested_values


class UnsafeWeightsError(BadCheckpoint):
    """A weight file holds something other than arrays and plain containers."""


_SAFE_GLOBALS = {
    (module, name): getattr(__import__(module, fromlist=[name]), name)
    for module, name in [("numpy", "ndarray"), ("numpy", "dtype"), ("builtins", "tuple"),
                         ("builtins", "list"), ("builtins", "set"), ("builtins", "frozenset"),
                         ("collections", "OrderedDict")]
}
# numpy 2 moved numpy.core to numpy._core; files name whichever the saving numpy had.
_NP_CORE = getattr(np, "_core", None) or np.core
for _core in ("numpy.core", "numpy._core"):
    _SAFE_GLOBALS[(f"{_core}.multiarray", "_reconstruct")] = _NP_CORE.multiarray._reconstruct
    _SAFE_GLOBALS[(f"{_core}.multiarray", "scalar")] = _NP_CORE.multiarray.scalar
    _SAFE_GLOBALS[(f"{_core}.numeric", "_frombuffer")] = _NP_CORE.numeric._frombuffer


def _dense_tensor_data(path: Path, expression: str, namespace: Any) -> Any:
    # paddle.save pickles a DenseTensor as eval("data", {"data": array}); only that is honoured
    if expression != "data" or not isinstance(namespace, dict) or set(namespace) != {"data"}:
        raise UnsafeWeightsError(f"refusing {path}: it calls eval({str(expression)[:60]!r}), "
                                 "which a weights file never needs")
    return namespace["data"]


_TRUSTED: contextvars.ContextVar[bool] = contextvars.ContextVar("palm_trust_weights", default=False)

TRUST_HELP = ("read weight files with plain pickle (paddle.load), for old files holding objects "
              "the safe reader refuses. RISK: a malicious file then runs any command as you; "
              "use it only for files whose origin you trust")
TRUST_RISK = ("--trust-checkpoint: weight files are unpickled unchecked; a malicious file can "
              "run any command as you. Use it only for files whose origin you trust.")


@contextlib.contextmanager
def trust_checkpoints(enabled: bool) -> Iterator[None]:
    """Within the block, `read_weights` uses plain `paddle.load` when `enabled` (and says so)."""
    if enabled:
        print(f"warning: {TRUST_RISK}", file=sys.stderr)
    token = _TRUSTED.set(enabled)
    try:
        yield
    finally:
        _TRUSTED.reset(token)


# A dictionary key or set member is hashed as it is inserted, and hashing a tuple walks all
# of it each time: a tuple holding one tuple twice, 60 levels deep, is 60 objects in a few
# hundred bytes of pickle that take 2**60 steps to hash (numpy dtypes nest the same way).
# Keys must be these plain types (real files use str; ints of at most 64 bits), and the
# arguments handed to all the constructors of a file are at most ARGUMENT_NODES objects plus
# one per byte of the file, walked as trees: one memoised argument can be handed to many
# calls, each walking it again and copying it (tuple(x) a thousand times).
_KEY_TYPES = (str, bytes, int, float, bool, type(None))
ARGUMENT_NODES = 10_000
# list, tuple, set and frozenset copy the members of their argument: only a container whose
# members the walk above counts (tuple(b"...") would make eight bytes of pointer per byte)
_COPIED_CONTAINERS = (list, tuple, set, frozenset)
# objects whose state a file may set (BUILD); anything else has no state in a weights file
_BUILDABLE = (np.ndarray, np.dtype)
# Bytes of arrays a file may ask for: real files hold every array's bytes inline, so their
# arrays take less than the file; the slack covers the scalars and one-element placeholders
# of a small file.
MAX_EXPANSION = 2
EXPANSION_SLACK = 1 << 20
MAX_DIMENSIONS = 32  # numpy's own limit (64 in numpy 2) is far above any network's
# numpy functions that build arrays or scalars: the unpickler's checked versions run instead
_ARRAY_BUILDERS = {"_reconstruct": "_empty_array", "scalar": "_scalar",
                   "_frombuffer": "_from_buffer"}


class _RestrictedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler with checks on what it looks up, calls and hashes.

    The C unpickler cannot be hooked where it hashes keys, so a small file could stall it.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, path: Path, size: int | None = None):
        super().__init__(file, encoding="latin1")  # as paddle.load, for Python 2 era files
        self.path = path
        # the bytes the pickle came in (the file's; a caller reading from memory says)
        self.size = os.fstat(file.fileno()).st_size if size is None else size
        self.array_bytes = 0  # asked for so far, against MAX_EXPANSION * size + EXPANSION_SLACK
        self.argument_nodes_left = ARGUMENT_NODES + self.size

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("builtins", "eval"):
            return functools.partial(_dense_tensor_data, self.path)
        if name in _ARRAY_BUILDERS and (module, name) in _SAFE_GLOBALS:
            return getattr(self, _ARRAY_BUILDERS[name])
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeWeightsError(
                f"refusing {self.path}: it contains {module}.{name}, which a weights file never "
                "needs (if you trust its origin, --trust-checkpoint loads it anyway)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeWeightsError(f"refusing {self.path}: it references external objects")

    def _refuse(self, what: str) -> UnsafeWeightsError:
        return UnsafeWeightsError(f"refusing {self.path}: it {what}, which a weights file never "
                                  "needs")

    def _check_keys(self, keys: Any) -> None:
        for key in keys:
            # str and bytes cache their hash; a big int is hashed digit by digit every time
            if not isinstance(key, _KEY_TYPES):
                raise self._refuse(f"uses a {type(key).__name__} as a dictionary key or set "
                                   "member")
            if isinstance(key, int) and key.bit_length() > 64:
                raise self._refuse(f"uses a {key.bit_length()}-bit integer as a dictionary key "
                                   "or set member")

    def _check_arguments(self, *values: Any) -> None:
        self.argument_nodes_left -= count_nested_values(self.argument_nodes_left, *values)
        if self.argument_nodes_left < 0:
            raise self._refuse(f"passes more than {ARGUMENT_NODES + self.size:,} nested "
                               f"objects to constructors (a file of {self.size:,} bytes)")

    def _check_copied(self, constructor: Any, args: Any) -> None:
        if any(constructor is kind for kind in _COPIED_CONTAINERS) and args \
                and not isinstance(args[0], _COPIED_CONTAINERS):
            raise self._refuse(f"builds a {constructor.__name__} from a "
                               f"{type(args[0]).__name__}")

    def load_bytearray8(self) -> None:
        # pickle allocates (and zero-fills) the bytearray before reading its bytes: a
        # 22-byte file asking for 3 GB took 3 GB
        length, = struct.unpack("<Q", self.read(8))
        if length > self.size:
            raise self._refuse(f"asks for a bytearray of {length:,} bytes in a file of "
                               f"{self.size:,} bytes")
        self.stack.append(bytearray(length))
        self.readinto(self.stack[-1])

    # ------------------------------------------------ what arrays may be and take

    def _plain_dtype(self, dtype: Any) -> np.dtype:
        """`dtype` (a dtype, or its name as numpy pickles it) if it is one number per element."""
        if isinstance(dtype, (str, bytes)) and len(dtype) <= 16:
            dtype = np.dtype(dtype)
        if not isinstance(dtype, np.dtype):
            raise self._refuse(f"gives a {type(dtype).__name__} as an array's dtype")
        # a sub-array dtype multiplies the size of every array of it, unseen in its shape
        if dtype.subdtype is not None or dtype.fields is not None:
            raise self._refuse(f"asks for a {'sub-array' if dtype.subdtype else 'record'} "
                               f"dtype ({str(dtype)[:60]})")
        return dtype

    def _ask_for_array(self, shape: Any, dtype: Any) -> np.dtype:
        """Count an array of `shape` x `dtype` against the file's budget before it exists;
        returns the checked dtype."""
        if not isinstance(shape, tuple) or len(shape) > MAX_DIMENSIONS \
                or not all(type(n) is int and n >= 0 for n in shape):
            raise self._refuse(f"asks for an array of shape {str(shape)[:60]}")
        dtype = self._plain_dtype(dtype)
        self.array_bytes += math.prod(shape) * dtype.itemsize
        budget = MAX_EXPANSION * self.size + EXPANSION_SLACK
        if self.array_bytes > budget:
            raise UnsafeWeightsError(
                f"refusing {self.path}: its arrays would take at least {self.array_bytes:,} "
                f"bytes, more than a weights file of {self.size:,} bytes holds (at most "
                f"{budget:,}); it is damaged or made to exhaust memory")
        return dtype

    def _empty_array(self, subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        # numpy pickles an array as _reconstruct(ndarray, (0,), b"b") and then sets its data,
        # which must then match the shape; a large shape here would be allocated with no data
        # behind it (a 100-byte file asking for gigabytes)
        if subtype is not np.ndarray or not isinstance(shape, tuple) \
                or not all(type(n) is int and 0 <= n <= 1 for n in shape):
            raise self._refuse(f"asks numpy for an empty array of shape {str(shape)[:60]}")
        return _NP_CORE.multiarray._reconstruct(subtype, shape, self._ask_for_array(shape, dtype))

    def _scalar(self, dtype: Any, *data: Any) -> Any:
        return _NP_CORE.multiarray.scalar(self._ask_for_array((), dtype), *data)

    def _from_buffer(self, buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
        # a view of `buffer`, but one buffer can be viewed many times and each view becomes
        # a tensor of its own
        return _NP_CORE.numeric._frombuffer(buffer, self._ask_for_array(shape, dtype), shape,
                                            order)

    def load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self._check_keys((key,))
        self.stack[-1][key] = value

    def load_setitems(self) -> None:
        items = self.pop_mark()
        self._check_keys(items[::2])
        target = self.stack[-1]
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]

    def load_additems(self) -> None:
        items = self.pop_mark()
        self._check_keys(items)
        target = self.stack[-1]
        if not isinstance(target, set):
            raise self._refuse(f"adds set members to a {type(target).__name__}")
        target.update(items)

    def load_frozenset(self) -> None:
        items = self.pop_mark()
        self._check_keys(items)
        self.append(frozenset(items))

    def load_reduce(self) -> None:
        args = self.stack[-1]
        self._check_arguments(args)
        self._check_not_ndarray(self.stack[-2])
        self._check_copied(self.stack[-2], args)
        if (self.stack[-2] is set or self.stack[-2] is frozenset) and args:
            self._check_keys(list(args[0]))
        elif self.stack[-2] is collections.OrderedDict and args:
            raise self._refuse("builds an OrderedDict from arguments")
        super().load_reduce()
        self._check_made()

    def load_newobj(self) -> None:
        self._check_new(self.stack[-2], self.stack[-1], {})
        super().load_newobj()
        self._check_made()

    def load_newobj_ex(self) -> None:
        self._check_new(self.stack[-3], self.stack[-2], self.stack[-1])
        super().load_newobj_ex()
        self._check_made()

    def _check_new(self, cls: Any, args: Any, kwargs: Any) -> None:
        self._check_arguments(args, kwargs)
        self._check_not_ndarray(cls)
        self._check_copied(cls, args)
        if any(cls is kind for kind in (set, frozenset, collections.OrderedDict)) \
                and (len(args) or len(kwargs)):
            raise self._refuse(f"builds a {cls.__name__} from arguments")

    def _check_not_ndarray(self, constructor: Any) -> None:
        # numpy.ndarray(shape, dtype) allocates its shape with no data behind it; numpy's
        # own pickles name ndarray only as _reconstruct's argument
        if constructor is np.ndarray:
            raise self._refuse("calls numpy.ndarray directly")

    def _check_made(self) -> None:
        if isinstance(self.stack[-1], np.dtype):
            self._plain_dtype(self.stack[-1])

    def load_build(self) -> None:
        target, state = self.stack[-2], self.stack[-1]
        if not isinstance(target, _BUILDABLE):
            raise self._refuse(f"sets the state of a {type(target).__name__}")
        self._check_arguments(state)
        if isinstance(target, np.ndarray):
            self._ask_for_array(*self._array_shape_and_dtype(state))
            super().load_build()
            return
        itemsize = target.itemsize
        super().load_build()
        # numpy changes a dtype in place, under any array already made of it
        if self._plain_dtype(target).itemsize != itemsize:
            raise self._refuse(f"changes the size of a dtype from {itemsize} to "
                               f"{target.itemsize} bytes")

    def _array_shape_and_dtype(self, state: Any) -> tuple[Any, Any]:
        # ndarray.__setstate__ takes (version, shape, dtype, fortran, data) or the same
        # without the version
        if isinstance(state, tuple) and len(state) in (4, 5):
            return state[len(state) - 4], state[len(state) - 3]
        raise self._refuse(f"sets an array's state from {str(state)[:60]}")

    for _name in ("setitem", "setitems", "additems", "frozenset", "reduce", "newobj",
                  "newobj_ex", "build", "bytearray8"):
        dispatch[getattr(pickle, _name.upper())[0]] = locals()[f"load_{_name}"]
    del _name


def read_weights(path: str | Path) -> Any:
    """The object `paddle.save` wrote to `path`, rebuilt without running any code from it.

    Arrays come back as paddle Tensors (as from `paddle.load`); optimizer tensors, saved as
    (name, array) pairs, keep their names.

    Raises:
        FileNotFoundError: no file.
        UnsafeWeightsError: the file holds a global other than the ones listed above, an
            array of Python objects, a sub-array or record dtype, or asks for more bytes of
            arrays than MAX_EXPANSION times its size plus EXPANSION_SLACK.
        ValueError: the file is not a paddle.save pickle (truncated, another format).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    try:
        if _TRUSTED.get():
            return paddle.load(str(path))
        with open(path, "rb") as f:
            obj = _to_tensors(_RestrictedUnpickler(f, path).load(), path, {})
    except UnsafeWeightsError:
        raise
    except Exception as e:  # pickle and numpy raise many types for damaged files
        raise BadCheckpoint(f"{path}: cannot read weights ({type(e).__name__}: {e})") from None
    # state dicts carry a table of paddle's parameter names; paddle.load applies and drops it
    names = obj.pop("StructuredToParameterName@@", None) if isinstance(obj, dict) else None
    for key, name in (names.items() if isinstance(names, dict) else ()):
        if isinstance(obj.get(key), paddle.Tensor) and isinstance(name, str):
            obj[key].name = name
    return obj


def _to_tensors(obj: Any, path: Path, done: dict[int, tuple[Any, Any]]) -> Any:
    # `done` (by id) converts an object shared by many references once: a small file can
    # reference one list from itself thousands of times over. It holds each original too,
    # so no id is reused while converting.
    if id(obj) in done:
        return done[id(obj)][1]
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise UnsafeWeightsError(f"refusing {path}: it holds an array of Python objects, "
                                     "which a weights file never needs")
        result = paddle.to_tensor(obj)
    elif isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], str) \
            and isinstance(obj[1], np.ndarray):
        result = _to_tensors(obj[1], path, done)
        result.name = obj[0]
    elif isinstance(obj, dict):
        done[id(obj)] = (obj, obj)  # converted in place
        for key in obj:
            obj[key] = _to_tensors(obj[key], path, done)
        return obj
    elif isinstance(obj, (list, tuple, set, frozenset)):
        result = type(obj)(_to_tensors(v, path, done) for v in obj)
    else:
        return obj
    done[id(obj)] = (obj, result)
    return result


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
