"""Torch-free, safe reader for PyTorch checkpoints, plain pickles and safetensors files.

``load_checkpoint(path)`` understands

* PyTorch zip checkpoints (``torch.save`` since 1.6): ``<any>/data.pkl`` plus one member
  ``<any>/data/<key>`` per storage, an optional ``<any>/byteorder``;
* the legacy (non-zip) PyTorch format: the pickles of the magic number, the protocol version
  and the system info, then the object pickle whose storages are persistent ids, the list of
  storage keys, and each storage as an 8-byte element count followed by its raw bytes;
* plain pickles (of numpy arrays, dicts, ...) and ``torch.save`` output under any name
  (``flownet.pkl``);
* ``.safetensors`` (the JSON header is parsed here, without the ``safetensors`` package).

Tensors come back as numpy arrays with the checkpoint's dtype (bfloat16 and float8 as the
``ml_dtypes`` types), shape, strides and storage offset; tensors viewing one storage share
memory (tied weights stay tied). ``OrderedDict`` becomes ``dict``, ``torch.Size`` a tuple,
``argparse.Namespace`` a :class:`types.SimpleNamespace`.

Safety: pickles are read by a restricted unpickler. Only the globals of an explicit
allow-list can be named by a file (the tensor/storage rebuild functions, storage and dtype
names, ``OrderedDict``, numpy's array/scalar reconstructors, a few inert builtins), and each of
them is replaced by a function written here that only builds data. Any other global (``os.system``,
``builtins.eval``, a model class, ...) raises :class:`CheckpointError` the moment the pickle
names it, before anything it asks for is called. Tensor views are bounds-checked against their
storage before numpy is asked to build them.

Storages are zero-copy views of a private (copy-on-write) memory map of the file by default:
loading is almost free, pages are read when used, and arrays are writable without changing the
file. Do not truncate or rewrite a checkpoint in place while arrays loaded from it are alive
(replace it by rename, as :func:`save_safetensors` does); pass ``mmap=False`` to read the file
into memory instead.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import io
import json
import math
import mmap as _mmap
import os
import pathlib
import pickle
import struct
import tempfile
import types
import zipfile
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

try:  # ml_dtypes ships with jax; it gives numpy bfloat16 / float8 types.
    import ml_dtypes
except ImportError:  # pragma: no cover - jax always installs it
    ml_dtypes = None

__all__ = [
    "CheckpointError",
    "flatten_state_dict",
    "load_checkpoint",
    "load_state_dict",
    "read_safetensors_metadata",
    "save_safetensors",
    "strip_prefix",
    "unwrap_state_dict",
]


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, corrupt, truncated or not allowed (unsafe pickle)."""


# --------------------------------------------------------------------------------------------
# dtypes
# --------------------------------------------------------------------------------------------


def _ml(name: str):
    return np.dtype(getattr(ml_dtypes, name)) if ml_dtypes is not None and hasattr(ml_dtypes, name) else None


_BF16 = _ml("bfloat16")

# legacy storage class name -> numpy dtype (element type of the storage)
_STORAGE_DTYPES = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": _BF16,
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
    "ComplexFloatStorage": np.dtype("<c8"),
    "ComplexDoubleStorage": np.dtype("<c16"),
}
_STORAGE_DTYPES = {k: v for k, v in _STORAGE_DTYPES.items() if v is not None}

# torch dtype attribute names (as pickled: GLOBAL 'torch <name>') -> numpy dtype
_TORCH_DTYPES = {
    "float64": np.dtype("f8"),
    "double": np.dtype("f8"),
    "float32": np.dtype("f4"),
    "float": np.dtype("f4"),
    "float16": np.dtype("f2"),
    "half": np.dtype("f2"),
    "bfloat16": _BF16,
    "int64": np.dtype("i8"),
    "long": np.dtype("i8"),
    "int32": np.dtype("i4"),
    "int": np.dtype("i4"),
    "int16": np.dtype("i2"),
    "short": np.dtype("i2"),
    "int8": np.dtype("i1"),
    "uint8": np.dtype("u1"),
    "uint16": np.dtype("u2"),
    "uint32": np.dtype("u4"),
    "uint64": np.dtype("u8"),
    "bool": np.dtype("?"),
    "complex64": np.dtype("c8"),
    "cfloat": np.dtype("c8"),
    "complex128": np.dtype("c16"),
    "cdouble": np.dtype("c16"),
    "float8_e4m3fn": _ml("float8_e4m3fn"),
    "float8_e5m2": _ml("float8_e5m2"),
    "float8_e4m3fnuz": _ml("float8_e4m3fnuz"),
    "float8_e5m2fnuz": _ml("float8_e5m2fnuz"),
    "float8_e8m0fnu": _ml("float8_e8m0fnu"),
}
_TORCH_DTYPES = {k: v for k, v in _TORCH_DTYPES.items() if v is not None}

# safetensors dtype code <-> numpy dtype
_ST_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": _BF16,
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
    "C64": np.dtype("<c8"),
    "F8_E4M3": _ml("float8_e4m3fn"),
    "F8_E5M2": _ml("float8_e5m2"),
}
_ST_DTYPES = {k: v for k, v in _ST_DTYPES.items() if v is not None}
_ST_CODES = {v.newbyteorder("="): k for k, v in _ST_DTYPES.items()}

_MAX_NDIM = 64
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_TORCH_LEGACY_PROTOCOL = 1001


# --------------------------------------------------------------------------------------------
# objects the unpickler builds
# --------------------------------------------------------------------------------------------


class _Inert:
    """Base of the reader's internal objects: never picklable, never state-settable."""

    __slots__ = ()

    def __setstate__(self, state):
        raise TypeError(f"BUILD on {type(self).__name__} is not allowed")

    def __reduce__(self):
        raise TypeError(f"{type(self).__name__} cannot be pickled")


class _StorageType(_Inert):
    """Stands for a storage class named by a pickle (``torch.FloatStorage``...). Not callable."""

    __slots__ = ("name", "dtype", "untyped")

    def __init__(self, name, dtype, untyped=False):
        self.name, self.dtype, self.untyped = name, dtype, untyped


class _Marker(_Inert):
    """Stands for a class that is only ever passed as data (``torch.Tensor``). Not callable."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"<{self.name}>"


class _Storage(_Inert):
    """One storage: dtype and element count from the pickle; ``data`` (1-D array) once read."""

    __slots__ = ("key", "dtype", "numel", "data", "_views")

    def __init__(self, key, dtype, numel):
        self.key, self.dtype, self.numel = key, dtype, numel
        self.data = None
        self._views = {}

    def elements(self, dtype) -> int:
        if dtype == self.dtype:
            return self.numel
        return self.numel * self.dtype.itemsize // dtype.itemsize

    def as_dtype(self, dtype) -> np.ndarray:
        if dtype == self.dtype:
            return self.data
        if dtype not in self._views:
            raw = self.data.view(np.uint8)
            n = raw.size // dtype.itemsize
            self._views[dtype] = raw[: n * dtype.itemsize].view(dtype)
        return self._views[dtype]


class _LazyTensor(_Inert):
    """A tensor whose storage bytes may not have been read yet (legacy format)."""

    __slots__ = ("storage", "offset", "size", "stride", "dtype")

    def __init__(self, storage, offset, size, stride, dtype):
        self.storage, self.offset, self.size, self.stride, self.dtype = storage, offset, size, stride, dtype

    def materialize(self) -> np.ndarray:
        dtype, size, stride, offset = self.dtype, self.size, self.stride, self.offset
        if 0 in size:
            return np.zeros(size, dtype)
        base = self.storage.as_dtype(dtype)
        extent = 1 + sum((n - 1) * s for n, s in zip(size, stride))
        if base.size < offset + extent:  # checked against the declared size already; re-check
            raise CheckpointError("storage shorter than a tensor viewing it")
        flat = base[offset : offset + extent]
        expect, acc = [], 1
        for n in reversed(size):
            expect.append(acc)
            acc *= n
        expect.reverse()
        if all(n == 1 or s == e for n, s, e in zip(size, stride, expect)):
            return flat.reshape(size)
        overlapping = any(n > 1 and s == 0 for n, s in zip(size, stride))
        return np.lib.stride_tricks.as_strided(
            flat,
            shape=size,
            strides=tuple(s * dtype.itemsize for s in stride),
            writeable=bool(flat.flags.writeable and not overlapping),
        )


class _DictShim(dict):
    """What ``collections.OrderedDict`` unpickles to; turned into a plain dict afterwards.

    It exists so that the BUILD of an OrderedDict's attributes (a state dict's ``_metadata``)
    has somewhere harmless to go: the state is dropped.
    """

    __slots__ = ()

    def __setstate__(self, state):
        pass

    def __reduce__(self):
        raise TypeError("_DictShim cannot be pickled")


# --------------------------------------------------------------------------------------------
# the allow-list: every entry is a function or inert object defined here
# --------------------------------------------------------------------------------------------


def _int(x, what):
    if type(x) is not int:  # noqa: E721 - bool and subclasses are not sizes
        raise CheckpointError(f"{what} must be an int, got {type(x).__name__}")
    return x


def _make_tensor(storage, offset, size, stride, dtype=None):
    if not isinstance(storage, _Storage):
        raise CheckpointError(f"tensor rebuild expects a storage, got {type(storage).__name__}")
    dtype = storage.dtype if dtype is None else dtype
    if not isinstance(dtype, np.dtype):
        raise CheckpointError(f"tensor rebuild expects a dtype, got {type(dtype).__name__}")
    size = tuple(_int(n, "tensor size") for n in size)
    stride = tuple(_int(s, "tensor stride") for s in stride)
    offset = _int(offset, "storage offset")
    if len(size) != len(stride) or len(size) > _MAX_NDIM:
        raise CheckpointError(f"tensor size {size} and stride {stride} do not match")
    if offset < 0 or any(n < 0 for n in size) or any(s < 0 for s in stride):
        raise CheckpointError(f"negative size/stride/offset in tensor ({size}, {stride}, {offset})")
    if 0 not in size:
        extent = 1 + sum((n - 1) * s for n, s in zip(size, stride))
        have = storage.elements(dtype)
        if offset + extent > have:
            raise CheckpointError(
                f"tensor of size {size}, stride {stride}, offset {offset} reads past the end of its "
                f"storage ({have} elements of {dtype})"
            )
    return _LazyTensor(storage, offset, size, stride, dtype)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    return _make_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None, *_ignored
):
    return _make_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(
    storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None, *_ignored
):
    return _make_tensor(storage, storage_offset, size, stride, dtype)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *_ignored):
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state, *_ignored):
    return data


def _rebuild_device_tensor_from_numpy(data, dtype, device=None, requires_grad=False, *_ignored):
    if not isinstance(data, np.ndarray) or not isinstance(dtype, np.dtype):
        raise CheckpointError("bad arguments to _rebuild_device_tensor_from_numpy")
    return data.astype(dtype, copy=False)


_REBUILDERS = (
    _rebuild_tensor,
    _rebuild_tensor_v2,
    _rebuild_tensor_v3,
    _rebuild_parameter,
    _rebuild_parameter_with_state,
    _rebuild_device_tensor_from_numpy,
)


def _rebuild_from_type_v2(func, new_type, args, state=None, *_ignored):
    if func not in _REBUILDERS and func is not _rebuild_from_type_v2:
        raise CheckpointError("_rebuild_from_type_v2 called with a function outside the allow-list")
    if not isinstance(args, tuple):
        raise CheckpointError("_rebuild_from_type_v2 expects an argument tuple")
    return func(*args)


def _torch_size(*args):
    return tuple(args[0]) if args else ()


def _torch_device(kind, index=None):
    if not isinstance(kind, str) or (index is not None and type(index) is not int):  # noqa: E721
        raise CheckpointError("bad arguments to torch.device")
    return kind if index is None else f"{kind}:{index}"


def _ordered_dict(*args):
    return _DictShim(*args)


def _defaultdict(default_factory=None, *args):
    return _DictShim(*args)


def _codecs_encode(obj, encoding="utf-8", errors="strict"):
    # protocol <= 2 writes bytes as _codecs.encode(str, 'latin1')
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8", "ascii"):
        raise CheckpointError("_codecs.encode is only allowed on text with a standard encoding")
    return codecs.encode(obj, encoding, errors if errors in ("strict",) else "strict")


def _bytes(*args):
    if args:
        raise CheckpointError("builtins.bytes is only allowed without arguments")
    return b""


def _copyreg_reconstructor(cls, base, state):
    if cls is not types.SimpleNamespace or base is not object:
        raise CheckpointError("copyreg._reconstructor is only allowed for argparse.Namespace")
    return types.SimpleNamespace()


def _pure_posix_path(*parts):
    if not all(isinstance(p, str) for p in parts):
        raise CheckpointError("path parts must be strings")
    return str(pathlib.PurePosixPath(*parts))


def _pure_windows_path(*parts):
    if not all(isinstance(p, str) for p in parts):
        raise CheckpointError("path parts must be strings")
    return str(pathlib.PureWindowsPath(*parts))


_np_core = getattr(np, "_core", None) or np.core  # numpy 2 / numpy 1
_NDARRAY = _Marker("numpy.ndarray")  # only ever an argument of _reconstruct, never called


def _np_reconstruct(cls, shape, dtype):
    # ndarray.__reduce__ -> _reconstruct(ndarray, (0,), b'b') followed by BUILD (__setstate__),
    # which sets the real shape/dtype/data. Always start empty: no allocation from the pickle.
    if cls is not _NDARRAY:
        raise CheckpointError("numpy _reconstruct is only allowed for numpy.ndarray")
    return _np_core.multiarray._reconstruct(np.ndarray, (0,), b"b")


def _np_scalar(dtype, obj=None):
    if not isinstance(dtype, np.dtype):
        raise CheckpointError("numpy scalar expects a dtype")
    if dtype.hasobject:
        return obj
    if not isinstance(obj, (bytes, bytearray)):
        raise CheckpointError("numpy scalar expects raw bytes")
    return _np_core.multiarray.scalar(dtype, obj)


def _np_frombuffer(buf, dtype, shape, order):
    if not isinstance(dtype, np.dtype) or dtype.hasobject or order not in ("C", "F"):
        raise CheckpointError("bad arguments to numpy _frombuffer")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)


def _np_dtype(spec, align=False, copy=False):
    if not (isinstance(spec, str) or (isinstance(spec, type) and issubclass(spec, np.generic))):
        raise CheckpointError("numpy.dtype expects a type code")
    return np.dtype(spec, align, copy)


def _build_allow_list() -> dict:
    allowed = {
        ("collections", "OrderedDict"): _ordered_dict,
        ("collections", "defaultdict"): _defaultdict,
        ("collections", "Counter"): _ordered_dict,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
        ("torch._utils", "_rebuild_device_tensor_from_numpy"): _rebuild_device_tensor_from_numpy,
        ("torch._utils", "_rebuild_xla_tensor"): _rebuild_device_tensor_from_numpy,
        ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
        ("torch._utils", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
        ("torch", "Size"): _torch_size,
        ("torch", "device"): _torch_device,
        ("torch", "Tensor"): _Marker("torch.Tensor"),
        ("torch._tensor", "Tensor"): _Marker("torch.Tensor"),
        ("torch.nn.parameter", "Parameter"): _Marker("torch.nn.Parameter"),
        ("torch.nn.parameter", "Buffer"): _Marker("torch.nn.Buffer"),
        ("torch", "UntypedStorage"): _StorageType("UntypedStorage", np.dtype("u1"), untyped=True),
        ("torch.storage", "UntypedStorage"): _StorageType("UntypedStorage", np.dtype("u1"), untyped=True),
        ("torch.storage", "_UntypedStorage"): _StorageType("UntypedStorage", np.dtype("u1"), untyped=True),
        ("argparse", "Namespace"): types.SimpleNamespace,
        ("types", "SimpleNamespace"): types.SimpleNamespace,
        ("copyreg", "_reconstructor"): _copyreg_reconstructor,
        ("_codecs", "encode"): _codecs_encode,
        ("pathlib", "PosixPath"): _pure_posix_path,
        ("pathlib", "PurePosixPath"): _pure_posix_path,
        ("pathlib._local", "PosixPath"): _pure_posix_path,
        ("pathlib._local", "PurePosixPath"): _pure_posix_path,
        ("pathlib", "WindowsPath"): _pure_windows_path,
        ("pathlib", "PureWindowsPath"): _pure_windows_path,
        ("pathlib._local", "WindowsPath"): _pure_windows_path,
        ("pathlib._local", "PureWindowsPath"): _pure_windows_path,
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): _np_dtype,
    }
    allowed.update(
        {
            ("builtins", "set"): set,
            ("builtins", "frozenset"): frozenset,
            ("builtins", "complex"): complex,
            ("builtins", "slice"): slice,
            ("builtins", "object"): object,
            ("builtins", "bytes"): _bytes,
        }
    )
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = _np_reconstruct
        allowed[(mod, "scalar")] = _np_scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(mod, "_frombuffer")] = _np_frombuffer
    for name, dt in _STORAGE_DTYPES.items():
        for mod in ("torch", "torch.cuda"):
            allowed[(mod, name)] = _StorageType(name, dt)
    for name, dt in _TORCH_DTYPES.items():
        allowed[("torch", name)] = dt
    if ml_dtypes is not None:  # numpy dtypes of ml_dtypes arrays pickle as dtype(ml_dtypes.<type>)
        for name in (
            "bfloat16",
            "float8_e4m3fn",
            "float8_e5m2",
            "float8_e4m3fnuz",
            "float8_e5m2fnuz",
            "float8_e4m3b11fnuz",
            "int4",
            "uint4",
        ):
            if hasattr(ml_dtypes, name):
                allowed[("ml_dtypes", name)] = getattr(ml_dtypes, name)
    return allowed


_ALLOWED = _build_allow_list()


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can only name globals of ``_ALLOWED``; storages go through ``storages``."""

    def __init__(self, file, origin: str, storages=None):
        super().__init__(file, encoding="latin1")
        self._origin = origin
        self._storages = storages

    def find_class(self, module, name):
        # Python 2 names (protocol <= 2 writes '__builtin__', 'copy_reg', ...) -> Python 3 names
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        obj = _ALLOWED.get((module, name))
        if obj is None:
            raise CheckpointError(
                f"{self._origin}: refusing to load pickle global '{module}.{name}' "
                "(not in the allow-list of a state dict)"
            )
        return obj

    def persistent_load(self, pid):
        if self._storages is None:
            raise CheckpointError(f"{self._origin}: a persistent id in a plain pickle (not a torch.save file)")
        return self._storages(pid)


# --------------------------------------------------------------------------------------------
# finishing: lazy tensors -> arrays, shims -> dicts
# --------------------------------------------------------------------------------------------


def _finalize(obj, memo):
    oid = id(obj)
    if oid in memo:
        return memo[oid]
    if isinstance(obj, _LazyTensor):
        out = memo[oid] = obj.materialize()
    elif isinstance(obj, _Storage):
        out = memo[oid] = obj.data
    elif isinstance(obj, dict):
        out = memo[oid] = {}
        for k, v in obj.items():
            out[k] = _finalize(v, memo)
    elif isinstance(obj, list):
        out = memo[oid] = []
        out.extend(_finalize(v, memo) for v in obj)
    elif type(obj) is tuple:
        out = memo[oid] = tuple(_finalize(v, memo) for v in obj)
    elif isinstance(obj, types.SimpleNamespace):
        out = memo[oid] = types.SimpleNamespace()
        for k, v in vars(obj).items():
            setattr(out, k, _finalize(v, memo))
    elif isinstance(obj, _Inert):
        out = memo[oid] = repr(obj)
    else:
        out = obj
    return out


# --------------------------------------------------------------------------------------------
# file access
# --------------------------------------------------------------------------------------------


class _Source:
    """An open checkpoint: a seekable file object for parsing and a buffer for zero-copy data."""

    def __init__(self, origin: str, fileobj, buf):
        self.origin, self.file, self.buf = origin, fileobj, buf
        self.size = len(buf)

    @classmethod
    def open(cls, path, use_mmap: bool) -> _Source:
        origin = os.fspath(path)
        if isinstance(origin, bytes):
            origin = os.fsdecode(origin)
        if not os.path.exists(origin):
            raise FileNotFoundError(f"{origin}: no such checkpoint file")
        if os.path.isdir(origin):
            raise CheckpointError(f"{origin}: is a directory, not a checkpoint file")
        f = open(origin, "rb")
        try:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise CheckpointError(f"{origin}: empty file, not a checkpoint")
            if use_mmap:
                buf = _mmap.mmap(f.fileno(), 0, access=_mmap.ACCESS_COPY)
            else:
                buf = np.empty(size, np.uint8)  # writable, not zero-filled first
                if f.readinto(memoryview(buf)) != size:
                    raise CheckpointError(f"{origin}: truncated while reading")
                f.seek(0)
        except BaseException:
            f.close()
            raise
        return cls(origin, f, buf)

    def close(self):
        self.file.close()

    def array(self, offset: int, dtype: np.dtype, count: int, what: str) -> np.ndarray:
        """``count`` elements of ``dtype`` at byte ``offset``; zero-copy when aligned."""
        nbytes = count * dtype.itemsize
        if offset < 0 or offset + nbytes > self.size:
            raise CheckpointError(
                f"{self.origin}: truncated: {what} needs bytes {offset}..{offset + nbytes} but the file has {self.size}"
            )
        arr = np.frombuffer(self.buf, dtype=dtype, count=count, offset=offset)
        if dtype.itemsize > 1 and offset % dtype.alignment:
            arr = arr.copy()
        return arr


def _from_big_endian(arr: np.ndarray) -> np.ndarray:
    """Byte-swap a 1-D array read from a big-endian file (complex: each component)."""
    unit = arr.dtype.itemsize // 2 if arr.dtype.kind == "c" else arr.dtype.itemsize
    if unit <= 1:
        return arr
    raw = arr.view(np.uint8).reshape(-1, unit)[:, ::-1]
    return np.ascontiguousarray(raw).reshape(-1).view(arr.dtype)


# --------------------------------------------------------------------------------------------
# the formats
# --------------------------------------------------------------------------------------------


def _parse_storage_pid(pid, origin):
    if not isinstance(pid, tuple) or not pid:
        raise CheckpointError(f"{origin}: malformed persistent id {pid!r}")
    kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
    if kind == "module":
        raise CheckpointError(
            f"{origin}: the file stores a pickled torch module (torch.save(model)); "
            "only state dicts and plain data are supported"
        )
    if kind != "storage" or len(pid) not in (5, 6):
        raise CheckpointError(f"{origin}: unsupported persistent id {kind!r}")
    stype, key, _location, numel = pid[1:5]
    view = pid[5] if len(pid) == 6 else None
    if not isinstance(stype, _StorageType):
        raise CheckpointError(f"{origin}: persistent id names no storage type")
    if isinstance(key, bytes):
        key = key.decode("ascii")
    if not isinstance(key, str) or type(numel) is not int or numel < 0:  # noqa: E721
        raise CheckpointError(f"{origin}: malformed storage id {pid[:5]!r}")
    return stype, key, numel, view


def _load_zip(src: _Source):
    origin = src.origin
    try:
        zf = zipfile.ZipFile(src.file)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
        raise CheckpointError(f"{origin}: truncated or corrupt zip archive ({e})") from None
    with zf:
        infos = {i.filename: i for i in zf.infolist()}
        pkls = [n for n in infos if n.endswith("/data.pkl") and n.count("/") == 1]
        if not pkls:
            kind = "a TorchScript archive" if any(n.endswith("/constants.pkl") for n in infos) else "a zip file"
            raise CheckpointError(f"{origin}: not a PyTorch checkpoint ({kind} without <name>/data.pkl)")
        prefix = pkls[0][: -len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in infos:
            byteorder = zf.read(prefix + "byteorder").decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise CheckpointError(f"{origin}: unknown byteorder {byteorder!r}")

        def member_array(name, dtype, count):
            info = infos.get(name)
            if info is None:
                raise CheckpointError(f"{origin}: missing storage record {name!r}")
            nbytes = count * dtype.itemsize
            if info.file_size < nbytes:
                raise CheckpointError(
                    f"{origin}: storage record {name!r} has {info.file_size} bytes, needs {nbytes} (truncated?)"
                )
            if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1:
                head = src.array(info.header_offset, np.dtype("u1"), 30, f"zip header of {name!r}").tobytes()
                if head[:4] != b"PK\x03\x04":
                    raise CheckpointError(f"{origin}: corrupt zip: bad local header for {name!r}")
                n_name, n_extra = struct.unpack("<HH", head[26:30])
                start = info.header_offset + 30 + n_name + n_extra
                return src.array(start, dtype, count, f"storage record {name!r}")
            raw = bytearray(zf.read(name))  # compressed member (not written by torch): one copy
            return np.frombuffer(raw, dtype=dtype, count=count)

        storages: dict[str, _Storage] = {}

        def storage_for(pid):
            stype, key, numel, _view = _parse_storage_pid(pid, origin)
            st = storages.get(key)
            if st is None:
                st = storages[key] = _Storage(key, stype.dtype, numel)
                data = member_array(f"{prefix}data/{key}", stype.dtype, numel)
                st.data = _from_big_endian(data) if byteorder == "big" else data
            return st

        try:
            pkl = zf.read(pkls[0])
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise CheckpointError(f"{origin}: corrupt zip member {pkls[0]!r} ({e})") from None
        return _unpickle(io.BytesIO(pkl), origin, storage_for, f"{pkls[0]!r}")


def _unpickle(fileobj, origin, storages, what):
    try:
        return _RestrictedUnpickler(fileobj, origin, storages).load()
    except CheckpointError as e:
        msg = str(e)
        raise CheckpointError(msg if msg.startswith(origin) else f"{origin}: {msg}") from None
    except EOFError:
        raise CheckpointError(f"{origin}: truncated: unexpected end of pickle data in {what}") from None
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{origin}: corrupt pickle data in {what} ({e})") from None
    except (
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        OverflowError,
        RecursionError,
        MemoryError,
        UnicodeDecodeError,
        struct.error,
    ) as e:
        raise CheckpointError(f"{origin}: malformed pickle data in {what} ({type(e).__name__}: {e})") from None


def _load_pickle_stream(src: _Source):
    """A plain pickle, or the legacy torch.save format (which starts with a pickled magic number)."""
    origin = src.origin
    f = src.file
    first = _unpickle(f, origin, None, "the first pickle")
    if type(first) is not int or first != _TORCH_LEGACY_MAGIC:  # noqa: E721
        return first
    version = _unpickle(f, origin, None, "the protocol version")
    if version != _TORCH_LEGACY_PROTOCOL:
        raise CheckpointError(f"{origin}: unsupported legacy torch protocol version {version!r}")
    sys_info = _unpickle(f, origin, None, "the system info")
    if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
        raise CheckpointError(f"{origin}: big-endian legacy checkpoints are not supported")

    storages: dict[str, _Storage] = {}
    views = {}

    def storage_for(pid):
        stype, key, numel, view = _parse_storage_pid(pid, origin)
        st = storages.get(key)
        if st is None:
            st = storages[key] = _Storage(key, stype.dtype, numel)
        if view is None:
            return st
        view_key, off, vsize = view
        if view_key not in views:
            if type(off) is not int or type(vsize) is not int or off < 0 or vsize < 0 or off + vsize > numel:  # noqa
                raise CheckpointError(f"{origin}: storage view {view!r} outside its storage")
            views[view_key] = (st, off, vsize, _Storage(view_key, stype.dtype, vsize))
        return views[view_key][3]

    obj = _unpickle(f, origin, storage_for, "the object pickle")
    keys = _unpickle(f, origin, None, "the storage key list")
    if not isinstance(keys, list):
        raise CheckpointError(f"{origin}: malformed legacy checkpoint (storage keys are not a list)")
    offset = f.tell()
    for key in keys:
        if isinstance(key, bytes):
            key = key.decode("ascii")
        st = storages.get(key)
        if st is None:
            raise CheckpointError(f"{origin}: storage key {key!r} is not used by the pickle")
        count = int(src.array(offset, np.dtype("<i8"), 1, f"the size of storage {key!r}")[0])
        nbytes_declared = st.numel * st.dtype.itemsize
        if count < 0 or count * st.dtype.itemsize != nbytes_declared:
            raise CheckpointError(f"{origin}: storage {key!r} holds {count} elements, the pickle says {st.numel}")
        st.data = src.array(offset + 8, st.dtype, st.numel, f"storage {key!r}")
        offset += 8 + nbytes_declared
    missing = [k for k, s in storages.items() if s.data is None]
    if missing:
        raise CheckpointError(f"{origin}: storages {missing[:5]} have no data")
    for base, off, vsize, vst in views.values():
        vst.data = base.data[off : off + vsize]
    return obj


def _load_safetensors(src: _Source) -> dict:
    origin = src.origin
    if src.size < 8:
        raise CheckpointError(f"{origin}: truncated safetensors file ({src.size} bytes)")
    n = int(np.frombuffer(src.buf, dtype="<u8", count=1)[0])
    if n > _MAX_SAFETENSORS_HEADER:
        raise CheckpointError(f"{origin}: safetensors header of {n} bytes is too large (corrupt?)")
    if 8 + n > src.size:
        raise CheckpointError(f"{origin}: truncated safetensors file (header needs {8 + n} bytes, file has {src.size})")
    header_bytes = bytes(src.buf[8 : 8 + n])

    def no_dupes(pairs):
        d = {}
        for k, v in pairs:
            if k in d:
                raise CheckpointError(f"{origin}: duplicate key {k!r} in the safetensors header")
            d[k] = v
        return d

    try:
        header = json.loads(header_bytes.decode("utf-8"), object_pairs_hook=no_dupes)
    except CheckpointError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{origin}: corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{origin}: corrupt safetensors header (not a JSON object)")
    data_start = 8 + n
    data_len = src.size - data_start
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            code, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise CheckpointError(f"{origin}: malformed safetensors entry {name!r}") from None
        dtype = _ST_DTYPES.get(code)
        if dtype is None:
            raise CheckpointError(f"{origin}: unsupported safetensors dtype {code!r} for {name!r}")
        if not isinstance(shape, list) or len(shape) > _MAX_NDIM or not all(type(s) is int and s >= 0 for s in shape):  # noqa: E721
            raise CheckpointError(f"{origin}: bad shape {shape!r} for {name!r}")
        if not (type(begin) is int and type(end) is int and 0 <= begin <= end):  # noqa: E721
            raise CheckpointError(f"{origin}: bad data_offsets for {name!r}")
        count = math.prod(shape)
        if end - begin != count * dtype.itemsize:
            raise CheckpointError(
                f"{origin}: {name!r}: data_offsets span {end - begin} bytes, shape {shape} "
                f"of {code} needs {count * dtype.itemsize}"
            )
        if end > data_len:
            raise CheckpointError(f"{origin}: truncated: {name!r} ends at byte {end} of a {data_len}-byte data section")
        out[name] = src.array(data_start + begin, dtype, count, repr(name)).reshape(tuple(shape))
    return out


def _detect(src: _Source) -> str:
    head = bytes(src.buf[:16])
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if src.origin.lower().endswith(".safetensors"):
        return "safetensors"
    if head[:1] == b"\x80":
        return "pickle"
    if len(head) >= 9 and head[8:9] == b"{":
        n = struct.unpack("<Q", head[:8])[0]
        if 2 <= n <= src.size - 8:
            return "safetensors"
    if src.size > 262 and bytes(src.buf[257:262]) == b"ustar":
        raise CheckpointError(
            f"{src.origin}: not a supported checkpoint (a tar archive: the pre-0.4 torch.save format is not supported)"
        )
    if head[:1] not in tuple(bytes([c]) for c in b"(]}cN)KIJLFSVX\x8a"):
        raise CheckpointError(f"{src.origin}: not a PyTorch checkpoint, pickle or safetensors file")
    return "pickle"


def _load_source(src: _Source):
    kind = _detect(src)
    if kind == "zip":
        obj = _load_zip(src)
    elif kind == "safetensors":
        return _load_safetensors(src)
    else:
        obj = _load_pickle_stream(src)
    try:
        return _finalize(obj, {})
    except RecursionError:
        raise CheckpointError(f"{src.origin}: structure nested too deeply") from None


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def load_checkpoint(path, *, mmap: bool = True) -> Any:
    """Read a PyTorch checkpoint (zip or legacy), a pickle, or a safetensors file, without torch.

    Returns the stored structure with tensors as numpy arrays (a safetensors file gives a flat
    ``dict[str, np.ndarray]``). ``mmap=True`` maps the file privately (zero-copy, lazy); with
    ``mmap=False`` the file is read into memory first.

    Raises ``FileNotFoundError`` for a missing file and :class:`CheckpointError` for anything
    unreadable: truncated or corrupt data, an unknown format, or a pickle naming a global outside
    the allow-list (nothing from the file is executed).
    """
    src = _Source.open(path, mmap)
    try:
        return _load_source(src)
    finally:
        src.close()


def load_state_dict(path, prefer=("state_dict", "model", "params", "generator"), *, mmap: bool = True):
    """``unwrap_state_dict(load_checkpoint(path), prefer)``: the flat tensor dict of a checkpoint."""
    obj = load_checkpoint(path, mmap=mmap)
    try:
        return unwrap_state_dict(obj, prefer)
    except CheckpointError as e:
        raise CheckpointError(f"{os.fspath(path)}: {e}") from None


def read_safetensors_metadata(path) -> dict:
    """The ``__metadata__`` string map of a safetensors file (``{}`` when it has none)."""
    origin = os.fspath(path)
    if not os.path.exists(origin):
        raise FileNotFoundError(f"{origin}: no such safetensors file")
    with open(origin, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{origin}: truncated safetensors file")
        n = struct.unpack("<Q", head)[0]
        if n > _MAX_SAFETENSORS_HEADER:
            raise CheckpointError(f"{origin}: safetensors header of {n} bytes is too large (corrupt?)")
        raw = f.read(n)
    if len(raw) < n:
        raise CheckpointError(f"{origin}: truncated safetensors header")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{origin}: corrupt safetensors header ({e})") from None
    meta = header.get("__metadata__", {}) if isinstance(header, dict) else None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{origin}: corrupt safetensors __metadata__")
    return dict(meta)


def save_safetensors(path, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> None:
    """Write a flat ``{name: array}`` dict as a safetensors file, atomically (temp file + rename).

    Arrays are stored little-endian and C-contiguous; bfloat16/float8 need the ``ml_dtypes``
    types. ``metadata`` is an optional string-to-string map (``__metadata__``).
    """
    origin = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(origin))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"{origin}: the folder {parent} does not exist")
    if not isinstance(tensors, Mapping):
        raise ValueError(f"{origin}: save_safetensors expects a mapping of name -> array")
    arrays = {}
    for name, value in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError(f"{origin}: invalid tensor name {name!r}")
        try:
            arr = np.asarray(value)
        except Exception as e:  # noqa: BLE001 - report which entry failed
            raise ValueError(f"{origin}: {name!r} is not an array ({e})") from None
        code = _ST_CODES.get(arr.dtype.newbyteorder("="))
        if code is None:
            raise ValueError(f"{origin}: {name!r} has dtype {arr.dtype}, which safetensors cannot store")
        arr = np.asarray(arr, dtype=_ST_DTYPES[code], order="C")  # (keeps 0-d arrays 0-d)
        arrays[name] = (code, arr)
    if metadata is not None:
        if not isinstance(metadata, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise ValueError(f"{origin}: safetensors metadata must map str -> str")
    # Largest elements first keeps every tensor aligned to its itemsize (no gaps are allowed).
    order = sorted(arrays, key=lambda k: (-arrays[k][1].dtype.itemsize, k))
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    pos = 0
    for name in order:
        code, arr = arrays[name]
        header[name] = {"dtype": code, "shape": list(arr.shape), "data_offsets": [pos, pos + arr.nbytes]}
        pos += arr.nbytes
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * (-len(hbytes) % 8)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(origin)}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(hbytes)))
            f.write(hbytes)
            for name in order:
                arr = arrays[name][1]
                if arr.size:
                    f.write(memoryview(arr.reshape(-1).view(np.uint8)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, origin)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def flatten_state_dict(obj, prefix: str = "") -> dict:
    """Nested dicts/lists/tuples of arrays -> ``{dotted.key: array}``; non-array leaves are dropped."""
    out: dict[str, np.ndarray] = {}

    def visit(node, key):
        if isinstance(node, np.ndarray):
            if key in out:
                raise ValueError(f"flatten_state_dict: key {key!r} occurs twice")
            out[key] = node
        elif isinstance(node, Mapping):
            for k, v in node.items():
                visit(v, f"{key}.{k}" if key else str(k))
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                visit(v, f"{key}.{i}" if key else str(i))

    visit(obj, prefix)
    return out


_NOT_WEIGHTS = (
    "optimizer",
    "optim",
    "optimizers",
    "lr_scheduler",
    "scheduler",
    "meta",
    "message_hub",
    "args",
    "scaler",
)


def _has_arrays(obj) -> bool:
    if isinstance(obj, np.ndarray):
        return True
    if isinstance(obj, Mapping):
        return any(_has_arrays(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_has_arrays(v) for v in obj)
    return False


def unwrap_state_dict(obj, prefer: Iterable[str] = ("state_dict", "model", "params", "generator")) -> dict:
    """Find the tensor dict inside a checkpoint and return ``{key: array}`` (non-arrays dropped).

    Looks for the first key of ``prefer`` whose value is a dict holding arrays (mmcv/mmengine
    ``{'meta', 'state_dict'}``, ``{'model': ..., 'args': ...}``, ...), recursively. A dict with
    arrays at its top level is the state dict itself. Otherwise, a single nested dict holding
    arrays (ignoring optimizer/scheduler/meta entries) is descended into.
    """
    prefer = tuple(prefer)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"no state dict found: the checkpoint is a {type(obj).__name__}, not a dict")
    for key in prefer:
        value = obj.get(key)
        if isinstance(value, Mapping) and _has_arrays(value):
            return unwrap_state_dict(value, prefer)
    arrays = {str(k): v for k, v in obj.items() if isinstance(v, np.ndarray)}
    if arrays:
        return arrays
    nested = [k for k, v in obj.items() if isinstance(v, Mapping) and _has_arrays(v) and k not in _NOT_WEIGHTS]
    if len(nested) == 1:
        return unwrap_state_dict(obj[nested[0]], prefer)
    keys = ", ".join(repr(k) for k in list(obj)[:12])
    reason = "several candidate dicts" if nested else "no arrays"
    raise CheckpointError(f"no state dict found ({reason}); top-level keys: {keys}")


def strip_prefix(sd: Mapping[str, Any], prefix: str, *, drop_unprefixed: bool = False) -> dict:
    """Remove ``prefix`` from the keys that start with it (e.g. ``'module.'`` of DDP saves).

    Other keys are kept unchanged, or dropped with ``drop_unprefixed=True``. Raises ValueError
    when stripping makes two keys equal.
    """
    out = {}
    for k, v in sd.items():
        if k.startswith(prefix):
            nk = k[len(prefix) :]
        elif drop_unprefixed:
            continue
        else:
            nk = k
        if nk in out:
            raise ValueError(f"strip_prefix({prefix!r}): key {nk!r} occurs both with and without the prefix")
        out[nk] = v
    return out
