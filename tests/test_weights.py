"""Weight registry: download (resume, redirects, mirrors), verification, convert-once cache,
offline/manual paths, resolve_checkpoint and the CLI, against a local HTTP server on 127.0.0.1
serving official-format SPyNet checkpoints written here."""

import hashlib
import http.server
import io
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import threading
import urllib.parse
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from peanut_jax.checkpoints import download as D
from peanut_jax.checkpoints import load
from peanut_jax.checkpoints import registry as R
from peanut_jax.convert import to_official
from peanut_jax.models import build

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------------------------------------
# a local HTTP server with Range support, written for these tests
# --------------------------------------------------------------------------------------------


class _State:
    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.etags: dict[str, str] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.drop_after: dict[str, list[int]] = {}  # path -> byte counts: cut the next responses short
        self.ignore_range = False
        self.html: set[str] = set()
        self.sent = 0
        self.lock = threading.Lock()

    def put(self, path: str, data: bytes):
        self.files[path] = data
        self.etags[path] = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'

    def url(self, path: str) -> str:
        return self.base + path

    def ranged(self):
        return [r for _, r in self.requests if r]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        st: _State = self.server.state
        path = urllib.parse.urlsplit(self.path).path
        rng = self.headers.get("Range")
        with st.lock:
            st.requests.append((path, rng))
        if path.startswith("/redirect/"):
            return self._send(302, headers=[("Location", "/files/" + path[len("/redirect/") :])])
        if path in st.html:
            return self._send(200, b"<html>confirm download</html>", [("Content-Type", "text/html; charset=utf-8")])
        data = st.files.get(path)
        if data is None:
            return self._send(404, b"not found", [("Content-Type", "text/plain")])
        start, status = 0, 200
        if rng and not st.ignore_range:
            if_range = self.headers.get("If-Range")
            if if_range is None or if_range == st.etags[path]:
                start = int(re.match(r"^bytes=(\d+)-$", rng).group(1))
                if start >= len(data):
                    return self._send(416, headers=[("Content-Range", f"bytes */{len(data)}")])
                status = 206
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", st.etags[path])
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        cuts = st.drop_after.get(path)
        if cuts:
            body = body[: cuts.pop(0)]
            self.close_connection = True
        self.wfile.write(body)
        self.wfile.flush()
        with st.lock:
            st.sent += len(body)


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    st = _State()
    httpd.state = st
    st.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    stopped = []

    def stop():
        if not stopped:
            httpd.shutdown()
            httpd.server_close()
            thread.join(5)
            stopped.append(True)

    st.stop = stop
    yield st
    stop()


class _Home(type(pathlib.Path())):
    """$PEANUT_HOME of a test, with ``reg(**entry_fields)`` registering a test entry."""


@pytest.fixture
def env(tmp_path, monkeypatch):
    """An empty $PEANUT_HOME, online, no overrides, no proxies (only 127.0.0.1 is contacted)."""
    home = _Home(tmp_path / "peanut_home")
    monkeypatch.setenv("PEANUT_HOME", str(home))
    for k in list(os.environ):
        if (
            k.startswith("PEANUT_WEIGHTS_")
            or k.lower() in ("http_proxy", "https_proxy", "all_proxy")
            or k == "PEANUT_OFFLINE"
        ):
            monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    added = []

    def reg(**kw):
        e = R.register(R.WeightEntry(**kw), replace=True)
        added.append(e.name)
        return e

    home.reg = reg
    yield home
    for n in added:
        R.unregister(n)


@pytest.fixture(scope="module")
def spynet_ckpt(tmp_path_factory):
    """(file name, official-format bytes, params) of a random mmagic SPyNet."""
    module = build("spynet")
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    shapes = jax.eval_shape(module.init, jax.random.key(0), x, x)["params"]
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: (rng.standard_normal(s.shape) * 0.05).astype(np.float32), shapes)
    sd = to_official("spynet", {"params": params})
    try:
        import torch
    except ImportError:
        from peanut_jax.convert.reader import save_safetensors

        p = tmp_path_factory.mktemp("ckpt") / "spynet_test.safetensors"
        save_safetensors(p, sd)
        return p.name, p.read_bytes(), params
    buf = io.BytesIO()
    torch.save({"state_dict": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}}, buf)
    return "spynet_test.pth", buf.getvalue(), params


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _assert_params_equal(variables, params):
    got = flatten_dict(dict(variables["params"]))
    want = flatten_dict(dict(params))
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(want[k]), err_msg=str(k))


def _served_entry(env, server, spynet_ckpt, name="test_spynet", path_prefix="/files/", **kw):
    fname, data, _ = spynet_ckpt
    server.put(path_prefix + fname, data)
    kw.setdefault("sha256", _sha(data))
    kw.setdefault("size", len(data))
    return env.reg(name=name, model="spynet", filename=fname, urls=(server.url(path_prefix + fname),), **kw)


def _leftovers(env, name):
    d = env / "downloads" / name
    return sorted(p.name for p in d.iterdir() if not p.name.endswith(".lock")) if d.is_dir() else []


# --------------------------------------------------------------------------------------------
# the happy path: fetch -> verified -> converted -> loaded later without network
# --------------------------------------------------------------------------------------------


def test_fetch_verifies_converts_caches_then_loads_without_network(env, server, spynet_ckpt, monkeypatch):
    fname, data, params = spynet_ckpt
    e = _served_entry(env, server, spynet_ckpt)
    out = D.fetch(e.name, progress=False)
    assert out == env / e.name
    cfg = json.loads((out / "model.json").read_text())
    assert cfg["model"] == "spynet" and cfg["kwargs"] == {}
    assert cfg["metadata"]["source_sha256"] == _sha(data)
    assert cfg["metadata"]["registry_name"] == e.name
    assert (env / "downloads" / e.name / fname).read_bytes() == data  # the original is kept
    assert _leftovers(env, e.name) == [fname]  # no .part / .json left
    assert len(server.requests) == 1 and server.sent == len(data)

    server.stop()
    monkeypatch.setenv("PEANUT_OFFLINE", "1")
    assert D.fetch(e.name, progress=False) == out
    assert D.resolve_checkpoint(e.name, "spynet") == out
    module, variables = load(e.name)
    assert module.variant == "mmagic"
    _assert_params_equal(variables, params)
    assert len(server.requests) == 1

    # a registry change (different published hash) invalidates the converted copy
    R.register(R.WeightEntry(**{**e.__dict__, "sha256": "0" * 64}), replace=True)
    assert R.converted_dir(e.name) is None


def test_redirect_prefix_check_and_alias(env, server, spynet_ckpt):
    fname, data, params = spynet_ckpt
    server.put("/files/" + fname, data)
    e = env.reg(
        name="test_redirect",
        model="spynet",
        filename=fname,
        urls=(server.url("/redirect/" + fname),),
        sha256_prefix=_sha(data)[:8],
    )
    assert e.check == "sha256-prefix"
    out = D.fetch(e.name, progress=False)
    assert [p for p, _ in server.requests] == ["/redirect/" + fname, "/files/" + fname]
    _assert_params_equal(load(out, "spynet")[1], params)


def test_force_downloads_and_converts_again(env, server, spynet_ckpt):
    e = _served_entry(env, server, spynet_ckpt)
    out = D.fetch(e.name, progress=False)
    stamp = (out / "params.safetensors").stat().st_mtime_ns
    assert D.fetch(e.name, progress=False) == out and len(server.requests) == 1
    assert D.fetch(e.name, progress=False, force=True) == out
    assert len(server.requests) == 2
    assert (out / "params.safetensors").stat().st_mtime_ns != stamp
    assert not list(env.glob(f".{e.name}*"))  # no temporary / old directories left


# --------------------------------------------------------------------------------------------
# corrupt downloads are rejected and never cached
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("check", ["sha256", "sha256_prefix"])
def test_corrupted_download_rejected_deleted_not_cached(env, server, spynet_ckpt, check):
    fname, data, _ = spynet_ckpt
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0xFF
    server.put("/files/" + fname, bytes(bad))
    kw = {"sha256": _sha(data)} if check == "sha256" else {"sha256_prefix": _sha(data)[:8]}
    e = env.reg(name="test_corrupt", model="spynet", filename=fname, urls=(server.url("/files/" + fname),), **kw)
    with pytest.raises(R.ChecksumError) as ei:
        D.fetch(e.name, progress=False)
    msg = str(ei.value)
    assert isinstance(ei.value, ValueError) and "\n" not in msg
    assert fname in msg and _sha(bytes(bad)) in msg and _sha(data)[:8] in msg
    if check == "sha256":
        assert _sha(data) in msg
    assert _leftovers(env, e.name) == []
    assert not (env / e.name).exists() and R.converted_dir(e.name) is None


def test_wrong_size_rejected_before_saving(env, server, spynet_ckpt):
    fname, data, _ = spynet_ckpt
    e = _served_entry(env, server, spynet_ckpt, size=len(data) + 10)
    with pytest.raises(R.ChecksumError, match=rf"size mismatch .*{len(data)} bytes.*{len(data) + 10}"):
        D.fetch(e.name, progress=False)
    assert _leftovers(env, e.name) == [] and R.converted_dir(e.name) is None


def test_unverifiable_download_that_does_not_convert_is_deleted(env, server, spynet_ckpt):
    fname, data, _ = spynet_ckpt
    server.put("/files/junk.pth", b"\x80\x02}q\x00." + b"\x00" * 100)  # a pickle of an empty dict + junk
    e = env.reg(name="test_junk", model="spynet", filename="junk.pth", urls=(server.url("/files/junk.pth"),))
    assert e.check == "none"
    with pytest.raises(ValueError, match="not a valid spynet checkpoint and was deleted"):
        D.fetch(e.name, progress=False)
    assert _leftovers(env, e.name) == [] and R.converted_dir(e.name) is None


def test_html_page_is_not_saved(env, server, spynet_ckpt):
    server.html.add("/drive/file")
    env.reg(name="test_html", model="spynet", filename="x.pth", urls=(server.url("/drive/file"),))
    with pytest.raises(R.DownloadError, match="HTML page"):
        D.fetch("test_html", progress=False, retries=0)
    assert _leftovers(env, "test_html") == []


# --------------------------------------------------------------------------------------------
# interrupted downloads resume with Range
# --------------------------------------------------------------------------------------------


def test_interrupted_download_keeps_part_and_resumes_with_range(env, server, spynet_ckpt):
    fname, data, params = spynet_ckpt
    e = _served_entry(env, server, spynet_ckpt)
    cut = len(data) // 3
    server.drop_after["/files/" + fname] = [cut]
    with pytest.raises(R.DownloadError) as ei:
        D.fetch(e.name, progress=False, retries=0)
    assert ei.value.transient and "kept for resume" in str(ei.value)
    part = env / "downloads" / e.name / (fname + ".part")
    assert part.stat().st_size == cut
    assert R.converted_dir(e.name) is None and not (env / e.name).exists()
    assert server.ranged() == []

    out = D.fetch(e.name, progress=False, retries=0)
    assert server.ranged() == [f"bytes={cut}-"]
    assert server.sent == len(data)  # nothing downloaded twice
    assert _leftovers(env, e.name) == [fname]
    _assert_params_equal(load(out, "spynet")[1], params)


def test_retries_resume_within_one_call(env, server, spynet_ckpt):
    fname, data, params = spynet_ckpt
    e = _served_entry(env, server, spynet_ckpt)
    server.drop_after["/files/" + fname] = [1000, 200_000]
    out = D.fetch(e.name, progress=False, retries=2, retry_wait=0)
    assert server.ranged() == ["bytes=1000-", "bytes=201000-"]
    assert server.sent == len(data)
    _assert_params_equal(load(out, "spynet")[1], params)


@pytest.mark.parametrize("case", ["server_ignores_range", "file_changed", "part_complete"])
def test_resume_edge_cases(env, server, spynet_ckpt, case):
    fname, data, params = spynet_ckpt
    e = _served_entry(env, server, spynet_ckpt)
    path = "/files/" + fname
    d = env / "downloads" / e.name
    d.mkdir(parents=True)
    part = d / (fname + ".part")
    meta = {"url": server.url(path), "validator": server.etags[path], "total": len(data)}
    if case == "server_ignores_range":
        server.ignore_range = True
        part.write_bytes(data[:5000])
    elif case == "file_changed":  # bytes of an older version: If-Range makes the server send everything
        part.write_bytes(b"\x01" * 5000)
        meta["validator"] = '"an-older-version"'
    else:
        part.write_bytes(data)
    (d / (fname + ".part.json")).write_text(json.dumps(meta))
    out = D.fetch(e.name, progress=False, retries=0)
    assert server.ranged() == [f"bytes={len(data) if case == 'part_complete' else 5000}-"]
    assert server.sent == (0 if case == "part_complete" else len(data))
    assert (d / fname).read_bytes() == data
    _assert_params_equal(load(out, "spynet")[1], params)


# --------------------------------------------------------------------------------------------
# errors: HTTP, unknown names, offline, manual downloads
# --------------------------------------------------------------------------------------------


def test_http_404_and_unreachable_host_are_one_line_errors(env, server):
    env.reg(name="test_404", model="spynet", filename="missing.pth", urls=(server.url("/files/missing.pth"),))
    with pytest.raises(R.DownloadError) as ei:
        D.fetch("test_404", progress=False, retries=0)
    assert "HTTP 404" in str(ei.value) and "/files/missing.pth" in str(ei.value) and "\n" not in str(ei.value)
    assert not ei.value.transient

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    env.reg(name="test_refused", model="spynet", filename="x.pth", urls=(f"http://127.0.0.1:{port}/x.pth",))
    with pytest.raises(R.DownloadError, match=f"cannot reach http://127.0.0.1:{port}/x.pth"):
        D.fetch("test_refused", progress=False, retries=0, timeout=5)


def test_unknown_name(env):
    with pytest.raises(ValueError, match=r"unknown weights 'no_such_model'; known: .*spynet"):
        D.fetch("no_such_model")
    with pytest.raises(ValueError, match=r"neither a file/directory nor a registry name; known names: .*vgg19"):
        D.resolve_checkpoint("no_such_model", "spynet")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        D.resolve_checkpoint("./no/such/file.pth", "spynet")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        D.resolve_checkpoint(pathlib.Path("spynet"), "spynet")  # a Path is never a registry name
    assert R.get("basicvsr_pp").name == "basicvsr_pp_reds4"


def test_offline_mode_names_the_file_and_never_connects(env, server, spynet_ckpt, monkeypatch):
    fname, data, params = spynet_ckpt
    e = _served_entry(env, server, spynet_ckpt)
    monkeypatch.setenv("PEANUT_OFFLINE", "1")
    with pytest.raises(R.OfflineError) as ei:
        D.resolve_checkpoint(e.name, "spynet")
    msg = str(ei.value)
    assert "PEANUT_OFFLINE" in msg and fname in msg and str(R.download_path(e.name)) in msg
    assert server.requests == [] and not (env / "downloads").exists()
    # a file put where the message says is verified and converted without the network
    R.download_path(e.name).parent.mkdir(parents=True)
    R.download_path(e.name).write_bytes(data)
    out = D.resolve_checkpoint(e.name, "spynet")
    _assert_params_equal(load(out, "spynet")[1], params)
    assert server.requests == []


def test_manual_entry_explains_then_imports_file_or_zip(env, server, spynet_ckpt, tmp_path, monkeypatch):
    fname, data, params = spynet_ckpt
    page = "https://drive.google.com/file/d/EXAMPLE/view"
    e = env.reg(name="test_manual", model="spynet", filename=fname, manual=True, pages=(page,))
    with pytest.raises(R.ManualDownloadError) as ei:
        D.fetch(e.name)
    msg = str(ei.value)
    assert page in msg and "import test_manual" in msg and str(R.download_path(e.name)) in msg
    assert not (env / "downloads").exists()

    # a zip archive as Google Drive delivers it (the member is found by its name)
    z = tmp_path / "release_model.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("release_model/README.txt", "hello")
        zf.writestr("release_model/" + fname, data)
    out = D.import_file(e.name, z)
    _assert_params_equal(load(e.name)[1], params)
    assert (env / "downloads" / e.name / fname).read_bytes() == data  # extracted copy kept
    assert out == R.converted_dir(e.name)
    assert not [p for p in (env / "downloads" / e.name).iterdir() if p.name.endswith(".extract")]

    # a bare file whose hash does not match the registry is refused
    env.reg(name="test_manual2", model="spynet", filename=fname, manual=True, sha256="1" * 64)
    f = tmp_path / fname
    f.write_bytes(data)
    with pytest.raises(R.ChecksumError, match="checksum mismatch for .*" + re.escape(_sha(data))):
        D.import_file("test_manual2", f)
    assert R.converted_dir("test_manual2") is None

    # a per-entry URL override makes a manual entry fetchable
    server.put("/private/" + fname, data)
    monkeypatch.setenv("PEANUT_WEIGHTS_URL_TEST_MANUAL2", server.url("/private/" + fname))
    env.reg(name="test_manual2", model="spynet", filename=fname, manual=True, sha256=_sha(data))
    D.fetch("test_manual2", progress=False)
    assert server.requests[-1][0] == "/private/" + fname


def test_mirror_url_and_local_mirror_folder(env, server, spynet_ckpt, tmp_path, monkeypatch):
    fname, data, params = spynet_ckpt
    e = env.reg(
        name="test_mirror",
        model="spynet",
        filename=fname,
        urls=("https://example.invalid/" + fname,),
        sha256=_sha(data),
    )
    server.put("/mirror/" + fname, data)
    monkeypatch.setenv("PEANUT_WEIGHTS_MIRROR", server.url("/mirror/"))
    D.fetch(e.name, progress=False)
    assert [p for p, _ in server.requests] == ["/mirror/" + fname]

    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / fname).write_bytes(data)
    monkeypatch.setenv("PEANUT_WEIGHTS_MIRROR", str(folder))
    monkeypatch.setenv("PEANUT_OFFLINE", "1")  # a local folder is not the network
    out = D.fetch(e.name, progress=False, force=True)
    _assert_params_equal(load(out, "spynet")[1], params)
    assert len(server.requests) == 1


def test_archive_entry_extracts_member(env, server, spynet_ckpt):
    fname, data, params = spynet_ckpt
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("train_log/" + fname, data)
        zf.writestr("train_log/other.py", "x = 1\n")
    server.put("/files/bundle.zip", buf.getvalue())
    e = env.reg(
        name="test_archive",
        model="spynet",
        filename=fname,
        archive="bundle.zip",
        urls=(server.url("/files/bundle.zip"),),
        sha256=_sha(buf.getvalue()),
    )
    out = D.fetch(e.name, progress=False)
    assert _leftovers(env, e.name) == ["bundle.zip"]
    _assert_params_equal(load(e.name)[1], params)
    assert json.loads((out / "model.json").read_text())["metadata"]["source_file"] == "bundle.zip"


# --------------------------------------------------------------------------------------------
# resolve_checkpoint with paths
# --------------------------------------------------------------------------------------------


def test_resolve_checkpoint_with_file_and_converted_dir(env, server, spynet_ckpt, tmp_path):
    fname, data, params = spynet_ckpt
    f = tmp_path / fname
    f.write_bytes(data)
    assert D.resolve_checkpoint(f, "spynet") == f
    assert D.resolve_checkpoint(str(f), "spynet") == f
    _assert_params_equal(load(f, "spynet")[1], params)
    module, variables = load(f)  # the official file says which model it holds
    assert module.variant == "mmagic"
    _assert_params_equal(variables, params)
    from peanut_jax.convert.reader import save_safetensors

    save_safetensors(tmp_path / "unknown.safetensors", {"w": np.zeros(2, np.float32)})
    with pytest.raises(ValueError, match="give model_name"):
        load(tmp_path / "unknown.safetensors")

    e = _served_entry(env, server, spynet_ckpt)
    out = D.fetch(e.name, progress=False)
    assert D.resolve_checkpoint(out, "spynet") == out
    _assert_params_equal(load(str(out), "spynet")[1], params)
    with pytest.raises(ValueError, match="holds weights of model 'spynet', not 'rife'"):
        D.resolve_checkpoint(e.name, "rife")
    with pytest.raises(FileNotFoundError, match="not in the cache"):
        R.unregister(e.name)
        env.reg(**{**e.__dict__, "name": "test_not_cached"})
        D.resolve_checkpoint("test_not_cached", "spynet", fetch_missing=False)


# --------------------------------------------------------------------------------------------
# the registry itself and the CLI
# --------------------------------------------------------------------------------------------


def test_builtin_registry_is_consistent():
    from peanut_jax.convert import converter_names
    from peanut_jax.models import names as model_names

    es = R.entries()
    assert len({e.name for e in es}) == len(es)
    want = {"spynet", "spynet_sniklaus", "e2fgvi", "e2fgvi_hq", "basicvsr_pp", "rife", "rife_hdv3", "vgg19"}
    assert want <= {e.model for e in es}
    for e in es:
        assert e.model in model_names() and e.model in converter_names(), e.name
        if e.sha256 is not None:  # pinned: a commit URL, the sha256 and size of its Git LFS pointer
            assert e.size and all(re.search(r"/resolve/[0-9a-f]{40}/", u) for u in e.urls), e.name
        else:  # nothing else is published beyond the file-name prefixes
            assert e.size is None, e.name
            if e.name != "rife":  # the one entry still on a moving branch (see checkpoints/families.py)
                assert not any(re.search(r"/(main|master)/", u) for u in e.urls), e.name
        if e.manual:
            assert not e.urls and e.pages, e.name
        for u in e.urls:
            assert u.rsplit("/", 1)[-1] == e.download_name, e.name
        m = re.search(r"-([0-9a-f]{8})\.pth$", e.download_name)
        host = urllib.parse.urlsplit(e.urls[0]).hostname if e.urls else ""
        if host in ("download.openmmlab.com", "download.pytorch.org"):
            assert m and e.sha256_prefix == m.group(1), e.name
        else:
            assert e.sha256_prefix is None, e.name
    assert R.get("e2fgvi_hq").manual and R.get("e2fgvi").manual
    assert R.get("spynet").sha256_prefix == "c6c1bd09" and R.get("vgg19").sha256_prefix == "dcbb9e9d"
    assert R.get("rife_hdv3").check == "sha256"


def test_register_validates_entries(env):
    with pytest.raises(ValueError, match="already exists"):
        R.register(R.WeightEntry("spynet", "spynet", "x.pth", urls=("https://a/x.pth",)))
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        R.register(R.WeightEntry("test_x", "nope", "x.pth", urls=("https://a/x.pth",)))
    with pytest.raises(ValueError, match="sha256 must be 64 hex"):
        R.WeightEntry("test_x", "spynet", "x.pth", urls=("https://a/x.pth",), sha256="abc")
    with pytest.raises(ValueError, match="give urls or mark it manual"):
        R.WeightEntry("test_x", "spynet", "x.pth")
    with pytest.raises(ValueError, match="not http"):
        R.WeightEntry("test_x", "spynet", "x.pth", urls=("ftp://a/x.pth",))
    with pytest.raises(ValueError, match="plain file name"):
        R.WeightEntry("test_x", "spynet", "../x.pth", urls=("https://a/x.pth",))


def _cli(*args, env_home, extra_env=None, module="peanut_jax.weights"):
    e = {k: v for k, v in os.environ.items() if not k.startswith("PEANUT_")}
    e.update({"PEANUT_HOME": str(env_home), "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"})
    e.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, env=e, timeout=120, cwd=REPO
    )


def test_cli_list_and_one_line_errors(env, tmp_path, spynet_ckpt):
    r = _cli("list", env_home=env)
    assert r.returncode == 0, r.stderr
    alias = _cli("list", env_home=env, module="peanut_jax.checkpoints")  # the same command, two names
    assert alias.returncode == 0 and alias.stdout == r.stdout, alias.stderr
    assert re.search(r"^e2fgvi_hq\s+e2fgvi_hq\s+E2FGVI-HQ-CVPR22.pth\s+-\s+manual\s+-$", r.stdout, re.M)
    assert re.search(r"^spynet\s+spynet\s+spynet_20210409-c6c1bd09.pth\s+prefix:c6c1bd09\s+http", r.stdout, re.M)

    r = _cli("fetch", "no_such_model", env_home=env)
    assert r.returncode != 0 and r.stdout == ""
    assert r.stderr.startswith("error: unknown weights 'no_such_model'") and r.stderr.count("\n") == 1

    r = _cli("fetch", "e2fgvi", env_home=env)
    assert r.returncode != 0 and r.stderr.count("\n") == 1
    assert "drive.google.com" in r.stderr and "downloads/e2fgvi/E2FGVI-CVPR22.pth" in r.stderr

    r = _cli("fetch", "spynet", env_home=env, extra_env={"PEANUT_OFFLINE": "1"})
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and "spynet_20210409-c6c1bd09.pth" in r.stderr

    f = tmp_path / "spynet_20210409-c6c1bd09.pth"  # not the official file: its sha256 prefix differs
    f.write_bytes(spynet_ckpt[1])
    r = _cli("import", "spynet", str(f), env_home=env)
    assert r.returncode != 0 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("error: checksum mismatch for") and "c6c1bd09" in r.stderr
    assert not (env / "spynet").exists()


def test_cli_import_then_offline_fetch_uses_the_converted_copy(env, tmp_path, spynet_ckpt):
    params = spynet_ckpt[2]
    torch = pytest.importorskip("torch")
    f = tmp_path / "network-sintel-final.pytorch"
    torch.save(
        {
            k: torch.from_numpy(np.ascontiguousarray(v))
            for k, v in to_official("spynet_sniklaus", {"params": params}).items()
        },
        f,
    )
    r = _cli("import", "spynet_sniklaus_sintel_final", str(f), env_home=env)
    assert r.returncode == 0, r.stderr
    out = pathlib.Path(r.stdout.strip())
    assert out == env / "spynet_sniklaus_sintel_final"
    r = _cli("fetch", "spynet_sniklaus", "--quiet", env_home=env, extra_env={"PEANUT_OFFLINE": "1"})
    assert r.returncode == 0 and pathlib.Path(r.stdout.strip()) == out, r.stderr
    r = _cli("list", env_home=env)
    assert re.search(r"^spynet_sniklaus_sintel_final\s.*\sconverted$", r.stdout, re.M)
    module, variables = load("spynet_sniklaus")
    assert module.variant == "sniklaus"
    _assert_params_equal(variables, params)


def test_stage_loaders_accept_registry_names(env, server, spynet_ckpt, monkeypatch):
    """``--checkpoint NAME`` on every command: checkpoints.load_model resolves registry names to
    the converted cache (fetching once), paths stay paths, a wrong family is refused by name."""
    from peanut_jax.checkpoints.load import load_model
    from peanut_jax.checkpoints.load import resolve as resolve_weights
    from peanut_jax.pipeline.erase import load_eraser

    _, _, params = spynet_ckpt
    e = _served_entry(env, server, spynet_ckpt)
    module, variables = load_model("spynet", e.name)  # fetched + converted on first use
    _assert_params_equal(variables, params)
    assert len(server.requests) == 1
    monkeypatch.setenv("PEANUT_OFFLINE", "1")
    assert resolve_weights(e.name, "spynet") == env / e.name
    _assert_params_equal(load_model("spynet", e.name)[1], params)
    assert len(server.requests) == 1  # later runs use the converted copy
    with pytest.raises(ValueError, match="holds weights of model 'spynet', not 'e2fgvi'"):
        load_eraser(e.name)
    with pytest.raises(ValueError, match="neither a file/directory nor a registry name"):
        load_model("spynet", "no_such_weights")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_model("spynet", "missing/dir")
