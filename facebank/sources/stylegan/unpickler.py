"""The restricted unpicklers for StyleGAN2-ADA network pickles: allow-listed stand-ins for every
global a real file names, opcode checks so that only those stand-ins are ever called, and the
parser of the legacy `torch.save` storage blobs inside (docs/STYLEGAN2_ADA_FORMAT.md §1.5).

Nothing here runs code from a file: an unlisted global, a call on anything but a stand-in, or a
persistent id raises UnsafePickle before it is used. `pickle_loader` turns the records into a
Generator.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct

import numpy as np
import torch

from facebank.errors import ModelError, UnsafePickle

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "DoubleStorage": torch.float64,
    "LongStorage": torch.int64, "IntStorage": torch.int32, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


# ------------------------------------------------------------------------------------------------
# Stand-ins for the allow-listed globals.


class _Record:
    """What `_reconstruct_persistent_obj` would have built: the class name and its __dict__."""

    __slots__ = ("class_name", "state")

    def __init__(self, class_name: str, state: dict):
        self.class_name, self.state = class_name, state

    def __repr__(self) -> str:
        return f"_Record({self.class_name!r})"


class _Storage:
    """A decoded storage: a flat tensor of its dtype."""

    __slots__ = ("flat",)

    def __init__(self, flat: torch.Tensor):
        self.flat = flat


class _DType:
    """Stand-in for numpy.dtype: records the type code and, after BUILD, the byte order."""

    def __init__(self, spec, align=False, copy=False):
        if not isinstance(spec, str) or spec not in ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "b1"):
            raise UnsafePickle(f"network pickle asks for numpy dtype {spec!r}, which is not allowed")
        self.spec, self.order = spec, "<"

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
            self.order = "<" if state[1] in ("|", "=") else state[1]


def _reconstruct_persistent_obj(meta):
    if not isinstance(meta, dict) or meta.get("type") != "class" or meta.get("version") != 6:
        raise ModelError("network pickle holds a persistent object of an unknown kind or version (expected 6)")
    class_name, state = meta.get("class_name"), meta.get("state")
    if not isinstance(class_name, str) or not isinstance(state, dict):
        raise ModelError("network pickle holds a persistent object without class_name/state")
    return _Record(class_name, state)  # meta (and its module_src) is dropped unread


def _rebuild_parameter(data, requires_grad, backward_hooks):
    if not isinstance(data, torch.Tensor):
        raise ModelError("network pickle: parameter data is not a tensor")
    return data


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    if not isinstance(storage, _Storage):
        raise ModelError("network pickle: tensor rebuilt from something that is not a storage")
    ok = (isinstance(storage_offset, int) and storage_offset >= 0 and isinstance(size, tuple)
          and isinstance(stride, tuple) and len(size) == len(stride)
          and all(isinstance(v, int) and v >= 0 for v in size + stride))
    if not ok:
        raise ModelError("network pickle: malformed tensor size/stride/offset")
    if all(size):
        last = storage_offset + sum((s - 1) * st for s, st in zip(size, stride))
        if last >= storage.flat.numel():
            raise ModelError("network pickle: tensor reaches past the end of its storage")
    return torch.as_strided(storage.flat, size, stride, storage_offset).clone()


def _load_from_bytes(blob):
    if not isinstance(blob, (bytes, bytearray)):
        raise ModelError("network pickle: storage blob is not bytes")
    return _parse_storage_blob(bytes(blob))


def _numpy_scalar(dtype, raw):
    if not isinstance(dtype, _DType) or not isinstance(raw, bytes):
        raise ModelError("network pickle: malformed numpy scalar")
    value = np.frombuffer(raw, dtype=np.dtype(dtype.order + dtype.spec), count=1)[0]
    return value.item()  # plain Python number; the loader only reads it


_OUTER_GLOBALS = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): dict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _DType,
    ("builtins", "set"): set,
}


# ------------------------------------------------------------------------------------------------
# The restricted unpickler. It subclasses the pure-Python implementation because that one lets
# us check every opcode that calls something, not only the globals it names.


class _RestrictedUnpickler(pickle._Unpickler):  # noqa: SLF001 - the only Unpickler with a dispatch table
    dispatch = dict(pickle._Unpickler.dispatch)  # noqa: SLF001

    def __init__(self, data: bytes, allowed: dict, where: str):
        self._stream = io.BytesIO(data)
        super().__init__(self._stream)
        self._allowed = allowed
        self._callables = {id(v) for v in allowed.values()}
        self._where = where
        self.storage_ids: list = []

    def consumed(self) -> int:
        """Bytes of the input read so far (the pure-Python unpickler reads frames ahead into a buffer)."""
        frame = self._unframer.current_frame
        return self._stream.tell() - (len(frame.getbuffer()) - frame.tell() if frame is not None else 0)

    def find_class(self, module, name):
        target = self._allowed.get((module, name))
        if target is None:
            raise UnsafePickle(f"network pickle asks for global {module}.{name}{self._where}, which is not on "
                               "the allow-list; refused before anything ran")
        return target

    def persistent_load(self, pid):
        raise UnsafePickle(f"network pickle uses a persistent id{self._where}; refused")

    def _check_callable(self, func, opcode: str) -> None:
        if id(func) not in self._callables:
            raise UnsafePickle(f"network pickle applies {opcode} to {type(func).__name__} object{self._where}, "
                               "not an allow-listed global; refused before anything ran")

    def _load_reduce(self):
        self._check_callable(self.stack[-2], "REDUCE")
        pickle._Unpickler.load_reduce(self)  # noqa: SLF001

    def _load_newobj(self):
        self._check_callable(self.stack[-2], "NEWOBJ")
        pickle._Unpickler.load_newobj(self)  # noqa: SLF001

    def _load_newobj_ex(self):
        self._check_callable(self.stack[-3], "NEWOBJ_EX")
        pickle._Unpickler.load_newobj_ex(self)  # noqa: SLF001

    def _load_build(self):
        if not isinstance(self.stack[-2], _DType):  # the only object the real files BUILD
            raise UnsafePickle(f"network pickle applies BUILD to a {type(self.stack[-2]).__name__}{self._where}; refused")
        pickle._Unpickler.load_build(self)  # noqa: SLF001

    def _instantiate(self, klass, args):  # INST / OBJ (protocols 0 and 1)
        self._check_callable(klass, "INST/OBJ")
        super()._instantiate(klass, args)

    dispatch[pickle.REDUCE[0]] = _load_reduce
    dispatch[pickle.NEWOBJ[0]] = _load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = _load_newobj_ex
    dispatch[pickle.BUILD[0]] = _load_build


class _BlobUnpickler(_RestrictedUnpickler):
    """Unpickles the parts of a legacy storage blob; the only globals are storage types."""

    def __init__(self, stream: io.BytesIO):
        allowed = {("torch", name): name for name in _STORAGE_DTYPES}
        super().__init__(b"", allowed, " inside a tensor storage blob")
        self._file_read, self._file_readline = stream.read, stream.readline
        self._callables = set()  # nothing in a blob is ever called

    def persistent_load(self, pid):
        ok = (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and pid[1] in _STORAGE_DTYPES
              and isinstance(pid[2], str) and isinstance(pid[4], int) and pid[4] >= 0)
        if not ok:
            raise ModelError("network pickle: malformed storage record in a tensor blob")
        if len(pid) > 5 and pid[5] is not None:
            raise ModelError("network pickle: storage views are not supported")
        self.storage_ids.append(pid)
        return pid


def _parse_storage_blob(blob: bytes) -> _Storage:
    """Legacy torch.save stream of one storage: magic, version, sys info, record, keys, raw data."""
    stream = io.BytesIO(blob)

    def next_object():
        return _BlobUnpickler(stream).load()

    if next_object() != _LEGACY_MAGIC or next_object() != _LEGACY_PROTOCOL:
        raise ModelError("network pickle: tensor blob is not a legacy torch storage")
    sys_info = next_object()
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise ModelError("network pickle: tensor blob is not little-endian")
    unpickler = _BlobUnpickler(stream)
    unpickler.load()
    keys = next_object()
    if len(unpickler.storage_ids) != 1 or keys != [unpickler.storage_ids[0][2]]:
        raise ModelError("network pickle: tensor blob does not hold exactly one storage")
    _, type_name, _, _, numel = unpickler.storage_ids[0][:5]
    dtype = _STORAGE_DTYPES[type_name]
    (count,) = struct.unpack("<q", stream.read(8))
    itemsize = torch.empty((), dtype=dtype).element_size()
    raw = stream.read(count * itemsize)
    if count != numel or len(raw) != count * itemsize or stream.read(1):
        raise ModelError("network pickle: tensor blob is truncated or has the wrong length")
    flat = torch.frombuffer(bytearray(raw), dtype=dtype) if count else torch.empty(0, dtype=dtype)
    return _Storage(flat)
