"""Tokenizer files and the fairseq RoBERTa checkpoint through the weight registry: entries of several
files (``gpt2_bpe``: fetched, resumed, installed as they are, imported, resolved by ``--tokenizer``)
and tar.gz archives (``roberta_base``; members found by name, unsafe members refused), all against
the local HTTP server of test_weights with tiny files written here."""

import io
import json
import re
import tarfile
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_text_tokenizer import BYTE_SYMBOL, SPECIALS, TINY_MERGES, write_fairseq, write_hf
from test_weights import _assert_params_equal, _cli, _leftovers, _sha, env, server, spynet_ckpt  # noqa: F401

from peanut_jax.checkpoints import download as D
from peanut_jax.checkpoints import load
from peanut_jax.checkpoints import registry as R
from peanut_jax.pipeline.text_masks import load_tokenizer
from peanut_jax.text import RobertaTokenizer

FILES = ("encoder.json", "vocab.bpe", "dict.txt")
TEXTS = ["the cat", " the  cat at the\n", "Thé CAT 42!", "that's the cat's"]


@pytest.fixture(scope="module")
def fairseq_files(tmp_path_factory):
    """A tiny fairseq tokenizer (256 byte symbols + 7 merges; dict.txt lists the GPT-2 ids reversed,
    so RoBERTa id != GPT-2 id + 4): {file name: bytes}, and the folder holding them."""
    tokens = [BYTE_SYMBOL[b] for b in range(256)] + [a + b for a, b in TINY_MERGES]
    encoder = {t: g for g, t in enumerate(tokens)}
    folder = tmp_path_factory.mktemp("fairseq_tok")
    write_fairseq(folder, encoder, TINY_MERGES, list(reversed(range(len(tokens)))))
    return {f: (folder / f).read_bytes() for f in FILES}, folder


def _hf_vocab() -> dict[str, int]:
    """The Hugging Face vocab.json of the same tokenizer (RoBERTa id = 4 + dict.txt line)."""
    tokens = [BYTE_SYMBOL[b] for b in range(256)] + [a + b for a, b in TINY_MERGES]
    vocab = dict(SPECIALS, **{t: 4 + len(tokens) - 1 - g for g, t in enumerate(tokens)})
    vocab["<mask>"] = 4 + len(tokens)
    return vocab


def _serve_gpt2_bpe(srv, files, monkeypatch, folder="/fairseq/gpt2_bpe/"):
    """Serve the files; the per-entry URL override names encoder.json, the others come from its folder."""
    for f, data in files.items():
        srv.put(folder + f, data)
    monkeypatch.setenv(R.env_key("gpt2_bpe"), srv.url(folder + "encoder.json"))


def _ids(tok):
    return [tok.encode(t) for t in TEXTS]


# --------------------------------------------------------------------------------------------
# the entries themselves
# --------------------------------------------------------------------------------------------


def test_entries_of_the_registry():
    e = R.get("gpt2_bpe")
    assert not e.convert and e.all_files == FILES and e.model == "roberta_base" and e.license.startswith("MIT")
    assert e.urls == ("https://dl.fbaipublicfiles.com/fairseq/gpt2_bpe/encoder.json",)
    assert R.sources(e, "dict.txt") == ["https://dl.fbaipublicfiles.com/fairseq/gpt2_bpe/dict.txt"]
    r = R.get("roberta_base")
    assert r.convert and r.archive == "roberta.base.tar.gz" and r.filename == "model.pt"
    assert r.urls == ("https://dl.fbaipublicfiles.com/fairseq/models/roberta.base.tar.gz",)
    assert R.looks_like_path("roberta.base.tar.gz") and R.looks_like_path("x.tgz")
    with pytest.raises(ValueError, match="several files need convert=False"):
        R.WeightEntry("test_x", "spynet", "a.pth", files=("b.pth",), urls=("https://a/a.pth",))
    with pytest.raises(ValueError, match="an entry with files has none"):
        R.WeightEntry("test_x", "spynet", "a", files=("b",), convert=False, urls=("https://a/a",), size=3)
    with pytest.raises(ValueError, match="must be a plain file name"):
        R.WeightEntry("test_x", "spynet", "a", files=("../b",), convert=False, urls=("https://a/a",))
    with pytest.raises(ValueError, match="must be a plain file name ending in"):
        R.WeightEntry("test_x", "spynet", "a.pth", archive="a.rar", urls=("https://a/a.rar",))
    with pytest.raises(ValueError, match="not weights to load"):
        D.resolve_checkpoint("gpt2_bpe")
    with pytest.raises(ValueError, match="not weights to load"):
        load("gpt2_bpe")


# --------------------------------------------------------------------------------------------
# gpt2_bpe: fetch -> cache -> load_tokenizer()
# --------------------------------------------------------------------------------------------


def test_fetch_installs_the_files_and_load_tokenizer_uses_them(env, server, fairseq_files, monkeypatch):  # noqa: F811
    files, folder = fairseq_files
    _serve_gpt2_bpe(server, files, monkeypatch)
    out = D.fetch("gpt2_bpe", progress=False)
    assert out == env / "gpt2_bpe" == R.converted_dir("gpt2_bpe")
    assert sorted(p.name for p in out.iterdir()) == sorted([*FILES, R.SOURCE_META])
    for f in FILES:
        assert (out / f).read_bytes() == files[f]
    meta = json.loads((out / R.SOURCE_META).read_text())
    assert meta["registry_name"] == "gpt2_bpe" and meta["license"].startswith("MIT")
    assert meta["files"] == {f: {"sha256": _sha(files[f]), "url": server.url("/fairseq/gpt2_bpe/" + f)} for f in FILES}
    assert sorted(p for p, _ in server.requests) == sorted("/fairseq/gpt2_bpe/" + f for f in FILES)
    assert _leftovers(env, "gpt2_bpe") == sorted(FILES)  # the originals, no .part left
    assert not list(env.glob(".gpt2_bpe*"))

    server.stop()
    monkeypatch.setenv("PEANUT_OFFLINE", "1")
    want = _ids(RobertaTokenizer.from_fairseq(*(folder / f for f in FILES)))
    assert _ids(load_tokenizer()) == want  # the default is the registry's gpt2_bpe
    assert _ids(load_tokenizer("gpt2_bpe")) == want
    assert D.fetch("gpt2_bpe") == out  # cached: no network needed

    # the cache is checked: a file gone means not cached
    (out / "vocab.bpe").unlink()
    assert R.converted_dir("gpt2_bpe") is None
    with pytest.raises(FileNotFoundError, match="are not in the cache"):
        load_tokenizer()
    assert D.fetch("gpt2_bpe") == out  # reinstalled from the kept originals, offline
    assert _ids(load_tokenizer()) == want


def test_interrupted_file_resumes_and_only_missing_files_download(env, server, fairseq_files, monkeypatch):  # noqa: F811
    files, folder = fairseq_files
    _serve_gpt2_bpe(server, files, monkeypatch)
    cut = len(files["vocab.bpe"]) // 2
    server.drop_after["/fairseq/gpt2_bpe/vocab.bpe"] = [cut]
    with pytest.raises(R.DownloadError) as ei:
        D.fetch("gpt2_bpe", progress=False, retries=0)
    assert ei.value.transient and "vocab.bpe" in str(ei.value) and "\n" not in str(ei.value)
    assert R.converted_dir("gpt2_bpe") is None and not (env / "gpt2_bpe").exists()
    assert _leftovers(env, "gpt2_bpe") == ["encoder.json", "vocab.bpe.part", "vocab.bpe.part.json"]

    before = len(server.requests)
    out = D.fetch("gpt2_bpe", progress=False, retries=0)
    assert server.requests[before:] == [
        ("/fairseq/gpt2_bpe/vocab.bpe", f"bytes={cut}-"),
        ("/fairseq/gpt2_bpe/dict.txt", None),
    ]
    assert (out / "vocab.bpe").read_bytes() == files["vocab.bpe"]
    assert _ids(load_tokenizer()) == _ids(RobertaTokenizer.from_fairseq(*(folder / f for f in FILES)))

    # force downloads every file again and replaces the installed copy at once
    before = len(server.requests)
    assert D.fetch("gpt2_bpe", progress=False, force=True) == out
    assert sorted(p for p, _ in server.requests[before:]) == sorted("/fairseq/gpt2_bpe/" + f for f in FILES)
    assert not list(env.glob(".gpt2_bpe*"))


def test_a_local_mirror_folder_serves_every_file(env, fairseq_files, monkeypatch):  # noqa: F811
    files, folder = fairseq_files
    monkeypatch.setenv("PEANUT_WEIGHTS_MIRROR", str(folder))
    monkeypatch.setenv("PEANUT_OFFLINE", "1")  # a local folder is not the network
    out = D.fetch("gpt2_bpe", progress=False)
    assert all((out / f).read_bytes() == files[f] for f in FILES)


# --------------------------------------------------------------------------------------------
# errors: offline, not cached, wrong entries, folders
# --------------------------------------------------------------------------------------------


def test_offline_and_not_cached_errors_name_the_files_and_the_command(env, monkeypatch):  # noqa: F811
    monkeypatch.setenv("PEANUT_OFFLINE", "1")
    with pytest.raises(R.OfflineError) as ei:
        D.fetch("gpt2_bpe")
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith("PEANUT_OFFLINE is set and 'gpt2_bpe' is not cached: download ")
    assert "encoder.json, vocab.bpe, dict.txt from https://dl.fbaipublicfiles.com/fairseq/gpt2_bpe/" in msg
    assert str(env / "downloads" / "gpt2_bpe") in msg
    assert msg.endswith("'python -m peanut_jax.weights fetch gpt2_bpe'")

    for offline in (True, False):  # load_tokenizer never downloads: the error says how to
        if not offline:
            monkeypatch.delenv("PEANUT_OFFLINE")
        with pytest.raises(FileNotFoundError) as ei:
            load_tokenizer()
        msg = str(ei.value)
        assert "\n" not in msg and msg.startswith(
            "--tokenizer (default gpt2_bpe): the tokenizer files encoder.json, vocab.bpe, dict.txt ('gpt2_bpe') "
            f"are not in the cache ({env / 'gpt2_bpe'}): run 'python -m peanut_jax.weights fetch gpt2_bpe'"
        ), msg
        assert ("PEANUT_OFFLINE is set" in msg) == offline
    assert not env.exists()  # nothing was created

    with pytest.raises(ValueError, match=r"^--tokenizer roberta_base: 'roberta_base' are roberta_base weights, not"):
        load_tokenizer("roberta_base")
    with pytest.raises(FileNotFoundError, match=r"^--tok no_such_tok: no such folder or registry name; .*gpt2_bpe"):
        load_tokenizer("no_such_tok", flag="--tok")


def test_folders_of_either_layout_still_work(tmp_path, fairseq_files):
    files, folder = fairseq_files
    want = _ids(RobertaTokenizer.from_fairseq(*(folder / f for f in FILES)))
    assert _ids(load_tokenizer(folder)) == want
    assert _ids(load_tokenizer(str(folder))) == want
    write_hf(tmp_path / "hf", _hf_vocab(), TINY_MERGES)
    assert _ids(load_tokenizer(tmp_path / "hf")) == want
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "encoder.json").write_bytes(files["encoder.json"])
    with pytest.raises(
        FileNotFoundError, match=rf"^--tokenizer {re.escape(str(partial))}: missing vocab.bpe, dict.txt"
    ):
        load_tokenizer(partial)


def test_import_takes_every_file_by_name(env, fairseq_files, tmp_path):  # noqa: F811
    files, folder = fairseq_files
    with pytest.raises(ValueError, match="needs every one of encoder.json, vocab.bpe, dict.txt: dict.txt not given"):
        D.import_file("gpt2_bpe", folder / "encoder.json", folder / "vocab.bpe")
    other = tmp_path / "merges.txt"
    other.write_text("#version: 0.2\n")
    with pytest.raises(ValueError, match="takes files named encoder.json, vocab.bpe, dict.txt"):
        D.import_file("gpt2_bpe", other, *(folder / f for f in FILES))
    with pytest.raises(ValueError, match="is one checkpoint file; 2 files given"):
        D.import_file("spynet", other, other)
    assert R.converted_dir("gpt2_bpe") is None
    out = D.import_file("gpt2_bpe", *(folder / f for f in reversed(FILES)))
    assert out == R.converted_dir("gpt2_bpe")
    assert json.loads((out / R.SOURCE_META).read_text())["files"]["dict.txt"] == {
        "sha256": _sha(files["dict.txt"]),
        "url": None,
    }


def test_cli_lists_imports_and_fetches_offline(env, fairseq_files):  # noqa: F811
    files, folder = fairseq_files
    r = _cli("list", env_home=env)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^gpt2_bpe\s+roberta_base\s+encoder.json,vocab.bpe,dict.txt\s+-\s+http\s+-$", r.stdout, re.M)
    assert re.search(r"^roberta_base\s+roberta_base\s+roberta.base.tar.gz\s+-\s+http\s+-$", r.stdout, re.M)
    r = _cli("fetch", "gpt2_bpe", env_home=env, extra_env={"PEANUT_OFFLINE": "1"})
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "fetch gpt2_bpe" in r.stderr
    r = _cli("import", "gpt2_bpe", *(str(folder / f) for f in FILES), env_home=env)
    assert r.returncode == 0 and r.stdout.strip() == str(env / "gpt2_bpe"), r.stderr
    r = _cli("fetch", "gpt2_bpe", env_home=env, extra_env={"PEANUT_OFFLINE": "1"})
    assert r.returncode == 0 and r.stdout.strip() == str(env / "gpt2_bpe"), r.stderr
    r = _cli("list", env_home=env)
    assert re.search(r"^gpt2_bpe\s.*\scached$", r.stdout, re.M)


# --------------------------------------------------------------------------------------------
# tar.gz archives
# --------------------------------------------------------------------------------------------


def _tar_gz(members) -> bytes:
    """A tar.gz of ``(name, bytes | ('symlink' | 'hardlink', target))``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if isinstance(data, tuple):
                info.type = tarfile.SYMTYPE if data[0] == "symlink" else tarfile.LNKTYPE
                info.linkname = data[1]
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_tar_gz_archive_entry_extracts_member_and_imports(env, server, spynet_ckpt):  # noqa: F811
    fname, data, params = spynet_ckpt
    tgz = _tar_gz([("bundle/NOTE", b"hello"), ("bundle/" + fname, data), ("bundle/dict.txt", b"3 1\n")])
    server.put("/files/bundle.tar.gz", tgz)
    kw = dict(model="spynet", filename=fname, archive="bundle.tar.gz", sha256=_sha(tgz))
    e = env.reg(name="test_tgz", urls=(server.url("/files/bundle.tar.gz"),), **kw)
    out = D.fetch(e.name, progress=False)
    assert _leftovers(env, e.name) == ["bundle.tar.gz"]  # no .extract left
    _assert_params_equal(load(e.name)[1], params)
    assert json.loads((out / "model.json").read_text())["metadata"]["source_file"] == "bundle.tar.gz"

    env.reg(name="test_tgz_manual", manual=True, pages=("https://example.invalid/page",), **kw)
    f = env.parent / "bundle.tar.gz"
    f.write_bytes(tgz)
    D.import_file("test_tgz_manual", f)
    _assert_params_equal(load("test_tgz_manual")[1], params)


@pytest.mark.parametrize(
    "member",
    [("../{f}", None), ("/abs/{f}", None), ("pkg/{f}", ("symlink", "/etc/passwd")), ("{f}", ("hardlink", "NOTE"))],
    ids=["dotdot", "absolute", "symlink", "hardlink"],
)
def test_unsafe_archive_members_are_refused(env, server, spynet_ckpt, member):  # noqa: F811
    fname, data, _ = spynet_ckpt
    name, link = member[0].format(f=fname), member[1]
    tgz = _tar_gz([("NOTE", b"hello"), (name, link or data)])
    server.put("/files/evil.tar.gz", tgz)
    e = env.reg(
        name="test_evil",
        model="spynet",
        filename=fname,
        archive="evil.tar.gz",
        urls=(server.url("/files/evil.tar.gz"),),
    )
    with pytest.raises(ValueError, match=f"refusing the archive member {re.escape(repr(name))}") as ei:
        D.fetch(e.name, progress=False)
    assert "\n" not in str(ei.value)
    assert R.converted_dir(e.name) is None and not (env / e.name).exists()
    assert _leftovers(env, e.name) == ["evil.tar.gz"]  # no extracted file anywhere
    assert not (env / "downloads" / fname).exists() and not (env.parent / fname).exists()

    if link is None:  # the same name in a zip archive is refused too
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr(name, data)
        z = env.parent / "evil.zip"
        z.write_bytes(buf.getvalue())
        env.reg(name="test_evil_zip", model="spynet", filename=fname, manual=True)
        with pytest.raises(ValueError, match="refusing the archive member"):
            D.import_file("test_evil_zip", z)


def test_roberta_base_from_the_fairseq_tar_gz(env, server, monkeypatch):  # noqa: F811
    """The registry's roberta_base: model.pt inside roberta.base.tar.gz (a tiny fairseq-layout
    RoBERTa here), converted once and loaded by name."""
    from peanut_jax.convert.roberta import to_state_dict
    from peanut_jax.models import build

    module = build("roberta_base", num_layers=1, dim=24, ffn=48, vocab_size=40, max_positions=12)
    shapes = jax.eval_shape(module.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 4), jnp.int32))["params"]
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32), shapes)
    sd = to_state_dict({"params": params}, layout="fairseq")
    try:
        import torch
    except ImportError:
        from peanut_jax.convert.reader import save_safetensors

        save_safetensors(env.parent / "model.safetensors", sd)
        model_pt = (env.parent / "model.safetensors").read_bytes()
    else:
        buf = io.BytesIO()
        torch.save({"args": None, "model": {k: torch.from_numpy(v) for k, v in sd.items()}}, buf)
        model_pt = buf.getvalue()
    tgz = _tar_gz([("roberta.base/dict.txt", b"13 850\n"), ("roberta.base/model.pt", model_pt), ("NOTE", b"x")])
    server.put("/fairseq/models/roberta.base.tar.gz", tgz)
    monkeypatch.setenv(R.env_key("roberta_base"), server.url("/fairseq/models/roberta.base.tar.gz"))
    out = D.fetch("roberta_base", progress=False)
    assert out == env / "roberta_base"
    got, variables = load("roberta_base")
    assert (got.num_layers, got.dim, got.ffn, got.vocab_size) == (1, 24, 48, 40)
    _assert_params_equal(variables, params)
    assert _leftovers(env, "roberta_base") == ["roberta.base.tar.gz"]  # the archive is kept, nothing extracted
