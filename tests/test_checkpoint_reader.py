"""The torch-free checkpoint reader: formats, dtypes, views, safety, errors.

Files written by torch are compared with torch's own values (skipped without torch); the
hand-built zip/legacy/safetensors files and the malicious pickles need no torch.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import types
import zipfile

import ml_dtypes
import numpy as np
import pytest
from conftest import ref_dump

from peanut_jax.convert.reader import (
    CheckpointError,
    flatten_state_dict,
    load_checkpoint,
    load_state_dict,
    read_safetensors_metadata,
    save_safetensors,
    strip_prefix,
    unwrap_state_dict,
)

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


# ---------------------------------------------------------------------------------------------
# hand-built torch-format files (no torch needed): pickles naming torch globals
# ---------------------------------------------------------------------------------------------
# Pickle can only name a global it can import, so stand-ins live in a fake package whose name
# is then rewritten to "torch" in the protocol-2 GLOBAL opcodes ("c<module>\n<name>\n").

_FAKE = "peanut_fake_torch_for_tests"


def _fake_torch():
    if _FAKE in sys.modules:
        return sys.modules[_FAKE], sys.modules[_FAKE + "._utils"]
    root, utils = types.ModuleType(_FAKE), types.ModuleType(_FAKE + "._utils")
    for name in ("FloatStorage", "LongStorage", "HalfStorage"):
        cls = type(name, (), {"__module__": _FAKE})
        setattr(root, name, cls)

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called")

    _rebuild_tensor_v2.__module__ = _FAKE + "._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    sys.modules[_FAKE], sys.modules[_FAKE + "._utils"] = root, utils
    return root, utils


class _StorageRef:
    def __init__(self, cls_name, key, numel):
        self.cls_name, self.key, self.numel = cls_name, key, numel


class _TensorRef:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return (_fake_torch()[1]._rebuild_tensor_v2, self.args)


def _torch_pickle(obj, legacy: bool) -> bytes:
    root, _ = _fake_torch()

    class P(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, _StorageRef):
                pid = ("storage", getattr(root, o.cls_name), o.key, "cpu", o.numel)
                return pid + (None,) if legacy else pid
            return None

    buf = io.BytesIO()
    P(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(("c" + _FAKE).encode(), b"ctorch")


def _write_zip(path, pkl: bytes, storages: dict, folder="archive", byteorder=b"little"):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{folder}/data.pkl", pkl)
        if byteorder is not None:
            z.writestr(f"{folder}/byteorder", byteorder)
        for key, raw in storages.items():
            z.writestr(f"{folder}/data/{key}", raw)
        z.writestr(f"{folder}/version", b"3\n")


def _legacy_bytes(pkl: bytes, storages: dict, itemsize: dict) -> bytes:
    out = [
        pickle.dumps(LEGACY_MAGIC, protocol=2),
        pickle.dumps(1001, protocol=2),
        pickle.dumps(
            {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}},
            protocol=2,
        ),
        pkl,
        pickle.dumps(sorted(storages), protocol=2),
    ]
    for key in sorted(storages):
        raw = storages[key]
        out.append(struct.pack("<q", len(raw) // itemsize[key]) + raw)
    return b"".join(out)


def _handmade_objects():
    """A state dict over two storages: a (3,4) float32 matrix, its transpose, a strided slice
    with an offset, and an int64 vector; plus the expected arrays."""
    a = np.arange(12, dtype=np.float32) * 0.5 - 2.0
    b = np.array([7, -3, 2**40], dtype=np.int64)
    s0, s1 = _StorageRef("FloatStorage", "0", 12), _StorageRef("LongStorage", "1", 3)
    obj = collections.OrderedDict(
        [
            ("w", _TensorRef(s0, 0, (3, 4), (4, 1))),
            ("wT", _TensorRef(s0, 0, (4, 3), (1, 4))),
            ("sl", _TensorRef(s0, 5, (2, 2), (4, 2))),
            ("idx", _TensorRef(s1, 0, (3,), (1,))),
            ("meta", {"epoch": 3, "name": "x", "ratio": 0.5}),
        ]
    )
    m = a.reshape(3, 4)
    expect = {"w": m, "wT": m.T, "sl": a[[5, 7, 9, 11]].reshape(2, 2), "idx": b}
    return obj, {"0": a.tobytes(), "1": b.tobytes()}, {"0": 4, "1": 8}, expect


def _check_handmade(out, expect):
    assert type(out) is dict and list(out) == ["w", "wT", "sl", "idx", "meta"]
    for k, v in expect.items():
        assert out[k].dtype == v.dtype and out[k].shape == v.shape, k
        np.testing.assert_array_equal(out[k], v, err_msg=k)
    assert out["meta"] == {"epoch": 3, "name": "x", "ratio": 0.5}
    assert np.shares_memory(out["w"], out["wT"]) and np.shares_memory(out["w"], out["sl"])


def test_handmade_zip_checkpoint(tmp_path):
    obj, storages, _, expect = _handmade_objects()
    p = tmp_path / "m.pth"
    _write_zip(p, _torch_pickle(obj, legacy=False), storages, folder="any_name_at_all")
    for mm in (True, False):
        out = load_checkpoint(p, mmap=mm)
        _check_handmade(out, expect)
        out["w"][0, 0] = 123.0  # writable, and the file is not modified (private mapping)
        assert out["wT"][0, 0] == 123.0
    _check_handmade(load_checkpoint(p), expect)


def test_handmade_zip_big_endian(tmp_path):
    obj, storages, _, expect = _handmade_objects()
    be = {
        "0": np.frombuffer(storages["0"], "<f4").astype(">f4").tobytes(),
        "1": np.frombuffer(storages["1"], "<i8").astype(">i8").tobytes(),
    }
    p = tmp_path / "be.pth"
    _write_zip(p, _torch_pickle(obj, legacy=False), be, byteorder=b"big")
    out = load_checkpoint(p)
    _check_handmade(out, expect)
    assert out["w"].dtype.isnative


def test_handmade_legacy_checkpoint(tmp_path):
    obj, storages, itemsize, expect = _handmade_objects()
    p = tmp_path / "m.pkl"
    p.write_bytes(_legacy_bytes(_torch_pickle(obj, legacy=True), storages, itemsize))
    for mm in (True, False):
        _check_handmade(load_checkpoint(p, mmap=mm), expect)


@pytest.mark.parametrize(
    "size,stride,offset",
    [((3, 4), (4, 1), 1), ((4, 4), (4, 1), 0), ((2,), (100,), 0), ((3,), (-1,), 2), ((3,), (1,), -1)],
)
def test_out_of_bounds_views_are_refused(tmp_path, size, stride, offset):
    s0 = _StorageRef("FloatStorage", "0", 12)
    obj = {"bad": _TensorRef(s0, offset, size, stride)}
    p = tmp_path / "oob.pth"
    _write_zip(p, _torch_pickle(obj, legacy=False), {"0": np.zeros(12, np.float32).tobytes()})
    with pytest.raises(CheckpointError, match=re.escape(str(p))):
        load_checkpoint(p)


def test_storage_record_shorter_than_declared(tmp_path):
    s0 = _StorageRef("FloatStorage", "0", 12)
    p = tmp_path / "short.pth"
    _write_zip(
        p, _torch_pickle({"w": _TensorRef(s0, 0, (12,), (1,))}, legacy=False), {"0": np.zeros(6, np.float32).tobytes()}
    )
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(p)


def test_truncated_handmade_files(tmp_path):
    obj, storages, itemsize, _ = _handmade_objects()
    z = tmp_path / "z.pth"
    _write_zip(z, _torch_pickle(obj, legacy=False), storages)
    data = z.read_bytes()
    for cut in (len(data) // 2, len(data) - 10, 40):
        t = tmp_path / f"z{cut}.pth"
        t.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=str(t.name)):
            load_checkpoint(t)
    leg = _legacy_bytes(_torch_pickle(obj, legacy=True), storages, itemsize)
    for cut in (len(leg) - 5, len(leg) - 60, len(leg) // 2, 30):
        t = tmp_path / f"l{cut}.pth"
        t.write_bytes(leg[:cut])
        with pytest.raises(CheckpointError, match="truncated|corrupt"):
            load_checkpoint(t)


# ---------------------------------------------------------------------------------------------
# malicious pickles
# ---------------------------------------------------------------------------------------------


class _Evil:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _evil_cases(marker):
    cmd = f"touch {marker}"
    return {
        "os.system": _Evil(os.system, (cmd,)),
        "builtins.eval": _Evil(eval, (f"__import__('os').system({cmd!r})",)),
        "builtins.exec": _Evil(exec, (f"__import__('os').system({cmd!r})",)),
        "subprocess.Popen": _Evil(subprocess.Popen, (["touch", str(marker)],)),
        "builtins.getattr": _Evil(getattr, ("text", "upper")),
    }


@pytest.mark.parametrize(
    "name", ["os.system", "builtins.eval", "builtins.exec", "subprocess.Popen", "builtins.getattr"]
)
@pytest.mark.parametrize("container", ["raw_pkl", "zip_pth", "legacy_pth", "nested_in_state_dict"])
def test_malicious_pickles_are_refused(tmp_path, name, container):
    marker = tmp_path / "PWNED"
    evil = _evil_cases(marker)[name]
    shown = name.replace("os.system", os.system.__module__ + ".system")  # 'posix.system' on Linux
    if container == "raw_pkl":
        p = tmp_path / "flownet.pkl"
        p.write_bytes(pickle.dumps(evil, protocol=2))
    elif container == "nested_in_state_dict":
        p = tmp_path / "sd.pkl"
        p.write_bytes(pickle.dumps(collections.OrderedDict(a=np.zeros(2), b={"c": [1, evil]}), protocol=4))
    elif container == "zip_pth":
        p = tmp_path / "model.pth"
        _write_zip(p, pickle.dumps({"w": evil}, protocol=2), {})
    else:
        p = tmp_path / "legacy.pth"
        p.write_bytes(_legacy_bytes(pickle.dumps({"w": evil}, protocol=2), {}, {}))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(p)
    msg = str(info.value)
    assert msg.startswith(str(p)) and f"refusing to load pickle global '{shown}'" in msg, msg
    assert "allow-list" in msg
    assert not marker.exists()


class TinyModel:
    def __init__(self):
        self.weight = np.ones(3)


def test_model_class_pickle_is_refused(tmp_path):
    # torch.save(model) pickles the model class itself: refused, nothing of it is imported or run
    p = tmp_path / "full_model.pth"
    p.write_bytes(pickle.dumps(TinyModel(), protocol=2))
    with pytest.raises(CheckpointError, match=r"refusing to load pickle global '\S*TinyModel'"):
        load_checkpoint(p)


def test_disallowed_use_of_allowed_globals(tmp_path):
    # allowed globals used outside their data-only role are refused too
    p = tmp_path / "x.pkl"
    reconstruct = np.zeros(1).__reduce__()[0]  # numpy's _reconstruct
    for evil in (
        _Evil(reconstruct, (collections.OrderedDict, (0,), b"b")),  # of a non-ndarray
        _Evil(bytes, (10**9,)),  # builtins.bytes with a size
        _Evil(collections.OrderedDict, (np.zeros(2),)),
    ):  # dict() of a non-mapping
        p.write_bytes(pickle.dumps(evil, protocol=2))
        with pytest.raises(CheckpointError, match=re.escape(str(p))):
            load_checkpoint(p)


# ---------------------------------------------------------------------------------------------
# plain pickles and error cases (no torch)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_plain_numpy_pickles(tmp_path, protocol):
    rng = np.random.default_rng(0)
    obj = {
        "f32": rng.standard_normal((3, 4)).astype(np.float32),
        "bf16": rng.standard_normal(5).astype(ml_dtypes.bfloat16),
        "i64": np.arange(-3, 3, dtype=np.int64),
        "bool": np.array([True, False]),
        "fortran": np.asfortranarray(rng.standard_normal((2, 3))),
        "scalar": np.float64(2.5),
        "iscalar": np.int64(-7),
        "od": collections.OrderedDict([("b", 1), ("a", [1, 2, (3, "x")])]),
        "set": {1, 2},
        "bytes": b"\x00\xffab",
        "complex": 1 + 2j,
        "none": None,
        "args": argparse.Namespace(lr=1e-5, HSA=True, name="mevis"),
    }
    p = tmp_path / "plain.pkl"
    p.write_bytes(pickle.dumps(obj, protocol=protocol))
    out = load_checkpoint(p)
    for k in ("f32", "bf16", "i64", "bool", "fortran"):
        assert out[k].dtype == obj[k].dtype and out[k].shape == obj[k].shape
        np.testing.assert_array_equal(out[k], obj[k])
    assert out["scalar"] == 2.5 and out["scalar"].dtype == np.float64 and out["iscalar"] == -7
    assert type(out["od"]) is dict and list(out["od"]) == ["b", "a"] and out["od"]["a"] == [1, 2, (3, "x")]
    assert out["set"] == {1, 2} and out["bytes"] == b"\x00\xffab" and out["complex"] == 1 + 2j
    assert out["none"] is None
    assert isinstance(out["args"], types.SimpleNamespace)
    assert vars(out["args"]) == {"lr": 1e-5, "HSA": True, "name": "mevis"}


def test_missing_file(tmp_path):
    p = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_checkpoint(p)


@pytest.mark.parametrize(
    "content,match",
    [
        (b"", "empty"),
        (b"hello world, not a checkpoint", "not a PyTorch"),
        (b"\x80\x02}q\x00(X\x01", "truncated"),
        (b"PK\x03\x04garbage", "zip"),
        (b"\x80\x04\x95garbage", "pickle"),
    ],
)
def test_bad_files(tmp_path, content, match):
    p = tmp_path / "bad.pth"
    p.write_bytes(content)
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(p)
    assert str(p) in str(info.value)


def test_zip_without_data_pkl(tmp_path):
    p = tmp_path / "other.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("readme.txt", "hi")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_checkpoint(p)


# ---------------------------------------------------------------------------------------------
# safetensors
# ---------------------------------------------------------------------------------------------


def _sample_tensors():
    rng = np.random.default_rng(1)
    return {
        "a.f32": rng.standard_normal((2, 3)).astype(np.float32),
        "a.f16": rng.standard_normal(4).astype(np.float16),
        "a.bf16": rng.standard_normal((3, 1)).astype(ml_dtypes.bfloat16),
        "b.f64": rng.standard_normal(3),
        "b.i64": np.array([1, -2, 2**50], np.int64),
        "b.i32": np.array([[3, -4]], np.int32),
        "b.i16": np.array([5], np.int16),
        "b.i8": np.array([-6, 7], np.int8),
        "b.u8": np.array([255, 0], np.uint8),
        "b.bool": np.array([True, False, True]),
        "c.scalar": np.array(1.5, np.float32),
        "c.empty": np.zeros((0, 3), np.float32),
        "c.noncontig": rng.standard_normal((4, 5)).astype(np.float32)[:, ::2].T,
        "c.bigendian": np.arange(3, dtype=">f4"),
    }


def test_safetensors_roundtrip(tmp_path):
    src = _sample_tensors()
    p = tmp_path / "cache.safetensors"
    save_safetensors(p, src, metadata={"format": "np", "source": "test"})
    assert sorted(os.listdir(tmp_path)) == ["cache.safetensors"]  # no temp file left behind
    raw = p.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    assert n % 8 == 0
    header = json.loads(raw[8 : 8 + n])
    assert header["__metadata__"] == {"format": "np", "source": "test"}
    for name, e in header.items():  # every tensor aligned to its element size
        if name != "__metadata__":
            assert (8 + n + e["data_offsets"][0]) % max(1, np.dtype(src[name].dtype).itemsize) == 0
    for mm in (True, False):
        out = load_checkpoint(p, mmap=mm)
        assert set(out) == set(src)
        for k, v in src.items():
            assert out[k].shape == v.shape and out[k].dtype == v.dtype.newbyteorder("="), k
            np.testing.assert_array_equal(out[k], v, err_msg=k)
    assert read_safetensors_metadata(p) == {"format": "np", "source": "test"}
    save_safetensors(p, {"only": np.ones(2, np.float32)})  # overwrite atomically
    assert list(load_checkpoint(p)) == ["only"] and read_safetensors_metadata(p) == {}


def test_safetensors_handbuilt_from_spec(tmp_path):
    # tensors deliberately out of offset order; header padded with spaces
    w = np.arange(6, dtype="<f4").reshape(2, 3)
    bf = np.array([1.0, -2.5], dtype=ml_dtypes.bfloat16)
    ids = np.array([9, 8, 7], dtype="<i8")
    data = ids.tobytes() + w.tobytes() + bf.tobytes()
    header = {
        "w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [24, 48]},
        "__metadata__": {"k": "v"},
        "bf": {"dtype": "BF16", "shape": [2], "data_offsets": [48, 52]},
        "ids": {"dtype": "I64", "shape": [3], "data_offsets": [0, 24]},
    }
    hb = json.dumps(header).encode() + b"   "
    p = tmp_path / "hand.safetensors"
    p.write_bytes(struct.pack("<Q", len(hb)) + hb + data)
    out = load_checkpoint(p)
    np.testing.assert_array_equal(out["w"], w)
    assert out["bf"].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(out["bf"].astype(np.float32), [1.0, -2.5])
    np.testing.assert_array_equal(out["ids"], ids)
    # the same bytes under another name are still recognised by their header
    q = tmp_path / "hand.bin"
    q.write_bytes(p.read_bytes())
    assert set(load_checkpoint(q)) == {"w", "bf", "ids"}
    try:
        import safetensors.numpy as stn
    except ImportError:
        return
    ref = stn.load_file(str(p))
    for k in ref:
        np.testing.assert_array_equal(out[k].view(np.uint8), ref[k].view(np.uint8))


def _st_file(tmp_path, header, data, name="bad.safetensors"):
    hb = json.dumps(header).encode()
    p = tmp_path / name
    p.write_bytes(struct.pack("<Q", len(hb)) + hb + data)
    return p


@pytest.mark.parametrize(
    "header,data,match",
    [
        ({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8, "truncated"),
        ({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}, b"\0" * 16, "needs 16"),
        ({"x": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 1]}}, b"\0", "unsupported safetensors dtype"),
        ({"x": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, "bad shape"),
        ({"x": {"dtype": "F32"}}, b"", "malformed"),
    ],
)
def test_safetensors_corrupt(tmp_path, header, data, match):
    p = _st_file(tmp_path, header, data)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(p)


def test_safetensors_truncated_header_and_bad_values(tmp_path):
    p = tmp_path / "t.safetensors"
    p.write_bytes(struct.pack("<Q", 500) + b'{"x": ')
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(p)
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        save_safetensors(tmp_path / "no_such_dir" / "x.safetensors", {"a": np.zeros(1)})
    with pytest.raises(ValueError, match="'s'"):
        save_safetensors(tmp_path / "x.safetensors", {"s": np.array(["text"])})
    assert not (tmp_path / "x.safetensors").exists()


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def test_flatten_unwrap_strip():
    a, b = np.zeros(2), np.ones(3)
    assert flatten_state_dict({"x": {"y": a, "n": 3}, "l": [b, "s"]}) == {"x.y": a, "l.0": b}
    with pytest.raises(ValueError, match="twice"):
        flatten_state_dict({"x.y": a, "x": {"y": b}})
    sd = {"conv.weight": a, "conv.bias": b}
    mm = {"meta": {"mmcv_version": "1.3", "time": "now", "stats": {"m": a}}, "state_dict": sd}
    assert unwrap_state_dict(mm) == sd
    assert unwrap_state_dict({"model": sd, "args": types.SimpleNamespace(lr=1), "epoch": 3}) == sd
    assert unwrap_state_dict({**sd, "step": 4, "name": "x"}) == sd
    assert unwrap_state_dict({"ema": sd, "optimizer": {"state": {0: {"m": a}}}}) == sd
    assert unwrap_state_dict({"generator": {"state_dict": sd}}) == sd
    with pytest.raises(CheckpointError, match="no state dict"):
        unwrap_state_dict({"a": {"x": a}, "b": {"y": b}})
    with pytest.raises(CheckpointError, match="no state dict"):
        unwrap_state_dict([a])
    ddp = {"module.a": a, "module.b": b, "other": a}
    assert strip_prefix(ddp, "module.") == {"a": a, "b": b, "other": a}
    assert strip_prefix(ddp, "module.", drop_unprefixed=True) == {"a": a, "b": b}
    with pytest.raises(ValueError, match="both"):
        strip_prefix({"module.a": a, "a": b}, "module.")


# ---------------------------------------------------------------------------------------------
# files written by torch itself
# ---------------------------------------------------------------------------------------------


def _torch_state_dict(torch):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 6, generator=g)
    sd = collections.OrderedDict()
    sd["w"] = w
    sd["tied"] = w  # the same tensor twice
    sd["wT"] = w.t()  # non-contiguous view of the same storage
    sd["sl"] = w[1:3, ::2]  # offset + strides
    sd["col"] = w[:, 2]
    sd["param"] = torch.nn.Parameter(torch.randn(3, generator=g))
    sd["expand"] = torch.randn(3, 1, generator=g).expand(3, 4)  # stride 0
    sd["scalar"] = torch.tensor(3.5)
    sd["empty"] = torch.zeros(0, 3)
    sd["bn.num_batches_tracked"] = torch.tensor(7)
    for dt in (
        torch.float16,
        torch.bfloat16,
        torch.float64,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
        torch.complex64,
        torch.uint16,
        torch.float8_e4m3fn,
    ):
        sd[str(dt).replace("torch.", "")] = (torch.randn(2, 3, generator=g) * 10).to(dt)
    return sd


def _assert_matches_torch(torch, out, ref):
    bits = {
        torch.bfloat16: (torch.int16, np.int16),
        torch.float8_e4m3fn: (torch.int8, np.int8),
        torch.uint16: (torch.int16, np.int16),
    }
    assert type(out) is dict and list(out) == list(ref)
    for k, t in ref.items():
        if isinstance(t, dict):
            _assert_matches_torch(torch, out[k], t)
            continue
        o, t = out[k], t.detach()
        assert isinstance(o, np.ndarray) and o.shape == tuple(t.shape), k
        if t.dtype in bits:  # no numpy twin in torch: compare the bits
            tbits, nbits = bits[t.dtype]
            assert o.dtype.itemsize == t.element_size(), k
            np.testing.assert_array_equal(o.view(nbits), t.contiguous().view(tbits).numpy(), err_msg=k)
        else:
            assert o.dtype == t.numpy().dtype, k
            np.testing.assert_array_equal(o, t.numpy(), err_msg=k)


@pytest.mark.torch
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_torch_saved_state_dicts(tmp_path, zip_format):
    torch = pytest.importorskip("torch")
    sd = _torch_state_dict(torch)
    p = tmp_path / "model.pth"
    torch.save(sd, p, _use_new_zipfile_serialization=zip_format)
    saved = p.read_bytes()
    for mm in (True, False):
        out = load_checkpoint(p, mmap=mm)
        _assert_matches_torch(torch, out, sd)
        assert out["bfloat16"].dtype == ml_dtypes.bfloat16
        assert out["float8_e4m3fn"].dtype == ml_dtypes.float8_e4m3fn and out["uint16"].dtype == np.uint16
        assert out["tied"] is out["w"]
        assert np.shares_memory(out["w"], out["wT"]) and np.shares_memory(out["w"], out["sl"])
        assert np.shares_memory(out["w"], out["col"])
        out["w"][0, 0] = -99.0  # tied weights stay tied
        assert out["wT"][0, 0] == -99.0 and out["tied"][0, 0] == -99.0
    assert p.read_bytes() == saved  # writing to the arrays never touches the file


@pytest.mark.torch
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_torch_saved_wrappers(tmp_path, zip_format):
    torch = pytest.importorskip("torch")
    sd = _torch_state_dict(torch)
    mmcv = {
        "meta": {
            "mmcv_version": "1.3.8",
            "time": "Wed Feb 17 12:00:00 2021",
            "epoch": 3,
            "iter": 600000,
            "config": "model = dict(type='BasicVSR')",
            "CLASSES": ("a", "b"),
            "hook_msgs": {"last_ckpt": "/work/iter_600000.pth"},
            "seed": np.int64(0),
            "np_arr": np.arange(3),
        },
        "state_dict": sd,
    }
    p = tmp_path / "mmcv.pth"
    torch.save(mmcv, p, _use_new_zipfile_serialization=zip_format)
    out = load_checkpoint(p)
    assert out["meta"]["CLASSES"] == ("a", "b") and out["meta"]["iter"] == 600000
    assert out["meta"]["seed"] == 0 and np.array_equal(out["meta"]["np_arr"], np.arange(3))
    _assert_matches_torch(torch, out["state_dict"], sd)
    assert list(unwrap_state_dict(out)) == list(sd)
    assert list(load_state_dict(p)) == list(sd)

    samwise = {
        "model": sd,
        "epoch": 2,
        "args": argparse.Namespace(HSA=True, lr=1e-5, dataset_file="mevis", adapter_dim=256),
    }
    p2 = tmp_path / "samwise.pth"
    torch.save(samwise, p2, _use_new_zipfile_serialization=zip_format)
    out2 = load_checkpoint(p2)
    assert isinstance(out2["args"], types.SimpleNamespace) and out2["args"].HSA is True
    assert out2["args"].dataset_file == "mevis"
    _assert_matches_torch(torch, out2["model"], sd)

    # RIFE: flownet.pkl, a torch.save of a DDP ('module.'-prefixed) state dict
    ddp = collections.OrderedDict((f"module.{k}", v) for k, v in sd.items() if k in ("w", "param", "float16"))
    p3 = tmp_path / "flownet.pkl"
    torch.save(ddp, p3, _use_new_zipfile_serialization=zip_format)
    out3 = strip_prefix(load_checkpoint(p3), "module.", drop_unprefixed=True)
    assert list(out3) == ["w", "param", "float16"]
    np.testing.assert_array_equal(out3["param"], sd["param"].detach().numpy())


@pytest.mark.torch
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_torch_saved_truncated(tmp_path, zip_format):
    torch = pytest.importorskip("torch")
    p = tmp_path / "m.pth"
    torch.save(_torch_state_dict(torch), p, _use_new_zipfile_serialization=zip_format)
    data = p.read_bytes()
    for cut in (len(data) - 1, len(data) - 200, len(data) // 2, 100):
        t = tmp_path / f"cut{cut}.pth"
        t.write_bytes(data[:cut])
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(t)
        assert str(t) in str(info.value)


@pytest.mark.torch
@pytest.mark.parametrize("name", ["spynet_mmagic", "rife_eccv", "basicvsrpp"])
def test_official_dumps_match_torch_load(name):
    _, pth = ref_dump(name)
    torch = pytest.importorskip("torch")
    ref = torch.load(pth, map_location="cpu", weights_only=True)
    out = load_checkpoint(pth)
    _assert_matches_torch(
        torch, {k: v for k, v in out.items() if k != "meta"}, {k: v for k, v in ref.items() if k != "meta"}
    )
    sd = load_state_dict(pth)
    ref_sd = ref.get("state_dict", ref)
    assert list(sd) == list(ref_sd) and len(sd) > 0
