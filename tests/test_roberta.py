"""fairseq RoBERTa encoder (SAMWISE's text encoder): an independent float64 numpy reference, padding
invariance, the piecewise API, converter round trips in every layout (incl. the packed in_proj of the
2019 model.pt) and strict errors; locally, parity with the official SAMWISE dump."""

import functools
import math

import jax
import numpy as np
import pytest
from conftest import ref_dump

from peanut_jax.convert import CheckpointMismatchError, from_official, to_official
from peanut_jax.convert import roberta as conv
from peanut_jax.models import build
from peanut_jax.models.roberta import RobertaEncoder
from peanut_jax.testing import assert_parity

TINY = dict(num_layers=2, dim=32, heads=4, ffn=64, vocab_size=100, max_positions=40)
PREFIX = conv.LAYOUTS["samwise"]
PAD = 1


def tiny_sd(seed=0, prefix=PREFIX, n_layers=2, d=32, ffn=64, vocab=100, npos=40):
    """Random weights in the (upgraded) fairseq layout, torch (out, in) Linear weights."""
    rng = np.random.default_rng(seed)

    def r(*shape, s=0.3):
        return (rng.standard_normal(shape) * s).astype(np.float32)

    sd = {
        f"{prefix}embed_tokens.weight": r(vocab, d, s=1.0),
        f"{prefix}embed_positions.weight": r(npos, d, s=1.0),
        f"{prefix}layernorm_embedding.weight": 1 + r(d, s=0.1),
        f"{prefix}layernorm_embedding.bias": r(d, s=0.1),
    }
    for i in range(n_layers):
        t = f"{prefix}layers.{i}"
        for p in ("q_proj", "k_proj", "v_proj", "out_proj"):
            sd[f"{t}.self_attn.{p}.weight"] = r(d, d, s=1 / math.sqrt(d))
            sd[f"{t}.self_attn.{p}.bias"] = r(d, s=0.1)
        sd[f"{t}.fc1.weight"], sd[f"{t}.fc1.bias"] = r(ffn, d, s=1 / math.sqrt(d)), r(ffn, s=0.1)
        sd[f"{t}.fc2.weight"], sd[f"{t}.fc2.bias"] = r(d, ffn, s=1 / math.sqrt(ffn)), r(d, s=0.1)
        for ln in ("self_attn_layer_norm", "final_layer_norm"):
            sd[f"{t}.{ln}.weight"], sd[f"{t}.{ln}.bias"] = 1 + r(d, s=0.1), r(d, s=0.1)
    return sd


def old_fairseq_sd(sd):
    """The same weights as the 2019 roberta.base model.pt names them (decoder., emb_layer_norm, packed
    in_proj), plus the entries the converter must ignore."""
    out = {}
    for k, v in sd.items():
        rel = k[len(PREFIX) :]
        if rel.startswith("layernorm_embedding."):
            rel = "emb_layer_norm." + rel.split(".", 1)[1]
        if ".self_attn.k_proj." in rel or ".self_attn.v_proj." in rel:
            continue
        if ".self_attn.q_proj." in rel:
            kind = rel.rsplit(".", 1)[1]
            base = rel.split(".self_attn.")[0] + ".self_attn"
            v = np.concatenate([sd[f"{PREFIX}{base}.{p}.{kind}"] for p in ("q_proj", "k_proj", "v_proj")])
            rel = f"{base}.in_proj_{kind}"
        out["decoder.sentence_encoder." + rel] = v
    d = sd[f"{PREFIX}embed_tokens.weight"].shape[1]
    out.update(
        {
            "decoder.lm_head.weight": sd[f"{PREFIX}embed_tokens.weight"],
            "decoder.lm_head.bias": np.zeros(100, np.float32),
            "decoder.lm_head.dense.weight": np.eye(d, dtype=np.float32),
            "decoder.version": np.array([2.0], np.float32),
            "decoder.sentence_encoder.version": np.array([2.0], np.float32),
        }
    )
    return out


# --- independent float64 reference, straight from the torch-layout state dict ---------------


def _ln(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


_erf = np.vectorize(math.erf)


def reference(sd, ids, pad_mask, heads, prefix=PREFIX, layers=None):
    """fairseq RoBERTa in float64 numpy; returns [embedding, after layer 0, after layer 1, ...]."""
    W = {k[len(prefix) :]: np.asarray(v, np.float64) for k, v in sd.items() if k.startswith(prefix)}
    n_layers = 1 + max(int(k.split(".")[1]) for k in W if k.startswith("layers."))
    nonpad = (ids != PAD).astype(np.int64)
    pos = np.cumsum(nonpad, axis=1) * nonpad + PAD
    x = W["embed_tokens.weight"][ids] + W["embed_positions.weight"][pos]
    x = _ln(x, W["layernorm_embedding.weight"], W["layernorm_embedding.bias"])
    x = np.where(pad_mask[..., None], 0.0, x)
    outs = [x]
    B, L, D = x.shape
    hd = D // heads
    for i in range(n_layers if layers is None else layers):
        p = f"layers.{i}."

        def lin(y, name):
            return y @ W[p + name + ".weight"].T + W[p + name + ".bias"]

        q, k, v = (lin(x, f"self_attn.{n}").reshape(B, L, heads, hd) for n in ("q_proj", "k_proj", "v_proj"))
        s = np.einsum("bqhc,bkhc->bhqk", q * hd**-0.5, k)
        s = np.where(pad_mask[:, None, None, :], -np.inf, s)
        s = np.exp(s - s.max(-1, keepdims=True))
        s = s / s.sum(-1, keepdims=True)
        a = np.einsum("bhqk,bkhc->bqhc", s, v).reshape(B, L, D)
        x = _ln(
            x + lin(a, "self_attn.out_proj"), W[p + "self_attn_layer_norm.weight"], W[p + "self_attn_layer_norm.bias"]
        )
        h = lin(x, "fc1")
        h = 0.5 * h * (1 + _erf(h / math.sqrt(2)))
        x = _ln(x + lin(h, "fc2"), W[p + "final_layer_norm.weight"], W[p + "final_layer_norm.bias"])
        outs.append(x)
    return outs


def batch(lengths, total, seed=0):
    """<s> w.. </s> captions padded with PAD to ``total``; returns (ids int32, mask bool True at pads)."""
    rng = np.random.default_rng(seed)
    ids = np.full((len(lengths), total), PAD, np.int32)
    for b, n in enumerate(lengths):
        ids[b, 0], ids[b, n - 1] = 0, 2
        ids[b, 1 : n - 1] = rng.integers(4, 100, n - 2)
    return ids, ids == PAD


@functools.partial(jax.jit, static_argnums=(0, 4))
def run(module, variables, ids, pm, deterministic=True, key=None):
    rngs = None if key is None else {"dropout": key}
    return module.apply(variables, ids, pm, deterministic=deterministic, rngs=rngs)


@pytest.fixture(scope="module")
def tiny():
    sd = tiny_sd()
    module, variables = conv.from_state_dict({"model": sd}, heads=4)
    return sd, module, variables


def test_tiny_matches_float64_reference(tiny):
    sd, module, variables = tiny
    assert (module.num_layers, module.dim, module.ffn, module.vocab_size, module.max_positions) == (2, 32, 64, 100, 40)
    ids, pm = batch([7, 11, 4], 13, seed=1)
    ref = reference(sd, ids, pm, heads=4)
    out = run(module, variables, ids, pm)
    np.testing.assert_allclose(np.asarray(out), ref[-1], atol=1e-4, rtol=0)
    # the piecewise API gives the same intermediates
    x, pm2 = module.apply(variables, ids, pm, method=RobertaEncoder.embed)
    np.testing.assert_array_equal(np.asarray(pm2), pm)
    np.testing.assert_allclose(np.asarray(x), ref[0], atol=1e-5, rtol=0)
    assert np.all(np.asarray(x)[pm] == 0)
    for i in range(2):
        x = module.apply(variables, x, pm, i, i + 1, method=RobertaEncoder.run_layers)
        np.testing.assert_allclose(np.asarray(x), ref[i + 1], atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(x), np.asarray(out), atol=1e-6, rtol=0)
    # padding_mask=None means ids == padding_idx
    np.testing.assert_allclose(np.asarray(module.apply(variables, ids)), np.asarray(out), atol=1e-6, rtol=0)


def test_padding_invariance(tiny):
    _, module, variables = tiny
    ids, pm = batch([6], 6, seed=3)
    alone = np.asarray(run(module, variables, ids, pm))[0]
    # padded with extra pads, alone and next to a longer caption in a batch
    other, _ = batch([15], 15, seed=4)
    both = np.full((3, 15), PAD, np.int32)
    both[0, :6], both[1], both[2, :6] = ids[0], other[0], ids[0]
    both[2, 6] = 50  # a non-pad token after pads that the mask marks as padding: masked as a key too
    mask = both == PAD
    mask[2, 6] = True
    out = np.asarray(run(module, variables, both, mask))
    np.testing.assert_allclose(out[0, :6], alone, atol=1e-6, rtol=0)
    np.testing.assert_allclose(out[2, :6], alone, atol=1e-6, rtol=0)


def test_dropout_only_when_not_deterministic(tiny):
    _, module, variables = tiny
    ids, pm = batch([6], 6, seed=3)
    a = run(module, variables, ids, pm)
    c = run(module, variables, ids, pm, False, jax.random.key(1))
    d = run(module, variables, ids, pm, False, jax.random.key(2))
    assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-3
    assert np.abs(np.asarray(d) - np.asarray(c)).max() > 1e-3


def test_build_and_init():
    m = build("roberta_base")
    assert (m.num_layers, m.dim, m.heads, m.ffn, m.vocab_size, m.max_positions, m.padding_idx) == (
        12,
        768,
        12,
        3072,
        50265,
        514,
        1,
    )
    small = build("roberta_base", **TINY)
    v = jax.jit(small.init)(jax.random.key(0), np.zeros((1, 5), np.int32))
    assert np.all(np.asarray(v["params"]["embed_tokens"]["embedding"][PAD]) == 0)
    sd = to_official("roberta_base", v)
    assert len(sd) == 4 + 16 * 2 and all(k.startswith(PREFIX) for k in sd)
    with pytest.raises(ValueError, match="position table"):
        small.apply(v, np.zeros((1, 39), np.int32))


@pytest.mark.parametrize("layout", ["samwise", "fairseq_upgraded", "fairseq"])
def test_roundtrip_bit_exact(tiny, layout):
    sd, module, variables = tiny
    out = conv.to_state_dict(variables, layout=layout)
    prefix = conv.LAYOUTS[layout]
    assert all(k.startswith(prefix) for k in out)
    if layout == "fairseq":
        assert f"{prefix}layers.1.self_attn.in_proj_weight" in out and f"{prefix}emb_layer_norm.bias" in out
        assert out[f"{prefix}layers.1.self_attn.in_proj_weight"].shape == (96, 32)
        assert not any("q_proj" in k or "layernorm_embedding" in k for k in out)
        expected = {k: v for k, v in old_fairseq_sd(sd).items() if ".sentence_encoder." in k and "version" not in k}
    else:
        expected = {prefix + k[len(PREFIX) :]: v for k, v in sd.items()}
    assert sorted(out) == sorted(expected)
    for k in out:
        assert out[k].dtype == np.float32 and np.array_equal(out[k], expected[k]), k
    _, back = conv.from_state_dict(out, heads=4)
    jax.tree_util.tree_map(np.testing.assert_array_equal, back, variables)


def test_old_fairseq_file_equals_samwise_layout(tiny):
    """The 2019 names (decoder., emb_layer_norm, packed in_proj, even older layer_norms.N) upgraded as
    fairseq does; lm_head / version ignored; the SAMWISE file's other modules ignored."""
    sd, module, variables = tiny
    old = old_fairseq_sd(sd)
    assert conv.detect({"args": None, "model": old}) == "roberta_base"
    m2, v2 = from_official("roberta_base", {"args": None, "model": old}, heads=4)
    assert m2 == module
    jax.tree_util.tree_map(np.testing.assert_array_equal, v2, variables)
    older = {
        k.replace("self_attn_layer_norm", "layer_norms.0").replace("final_layer_norm", "layer_norms.1"): v
        for k, v in old.items()
    }
    _, v3 = conv.from_state_dict(older, heads=4)
    jax.tree_util.tree_map(np.testing.assert_array_equal, v3, variables)
    # a SAMWISE checkpoint: DDP prefix, other modules, the hub's _float_tensor, lm_head
    samwise = {"module." + k: v for k, v in sd.items()}
    samwise.update(
        {
            "module.sam.image_encoder.trunk.pos_embed": np.zeros((1, 8, 7, 7), np.float32),
            "module.cmt_adapters.0.proj_text_down.weight": np.zeros((8, 32), np.float32),
            "module.text_encoder._float_tensor": np.zeros(1, np.float32),
            f"module.{PREFIX}version": np.array([3.0], np.float32),
            "module.text_encoder.model.encoder.lm_head.bias": np.zeros(100, np.float32),
        }
    )
    assert conv.detect({"model": samwise}) is None
    _, v4 = conv.from_state_dict({"model": samwise}, heads=4)
    jax.tree_util.tree_map(np.testing.assert_array_equal, v4, variables)


def test_strict_errors(tiny):
    sd = tiny[0]

    def err(d, **kw):
        with pytest.raises(CheckpointMismatchError) as e:
            conv.from_state_dict(d, heads=4, **kw)
        return str(e.value)

    d = dict(sd)
    del d[f"{PREFIX}layers.1.fc2.bias"]
    assert "missing keys" in (m := err(d)) and f"{PREFIX}layers.1.fc2.bias" in m
    d = dict(
        sd,
        **{
            f"{PREFIX}layers.0.self_attn.extra.weight": np.zeros(3, np.float32),
            "text_encoder.model.encoder.pooler.weight": np.zeros(3, np.float32),
        },
    )
    m = err(d)
    assert "unexpected keys (2)" in m and "layers.0.self_attn.extra.weight" in m and "pooler.weight" in m
    d = dict(sd, **{f"{PREFIX}layers.1.fc1.bias": np.zeros(65, np.float32)})
    assert "shape mismatches" in (m := err(d)) and "layers.1.fc1.bias" in m
    old = old_fairseq_sd(sd)
    d = dict(old, **{"decoder.sentence_encoder.layers.0.self_attn.in_proj_bias": np.zeros(95, np.float32)})
    assert "in_proj_bias" in (m := err(d)) and "q, k, v" in m
    d = dict(old, **{"decoder.classification_heads.mnli.dense.weight": np.zeros(3, np.float32)})
    assert "classification_heads.mnli.dense.weight" in err(d)
    d = dict(old, **{"decoder.sentence_encoder.layer_norm.weight": np.zeros(32, np.float32)})  # a pre-LN model
    assert "sentence_encoder.layer_norm.weight" in err(d)
    assert "no RoBERTa" in err({"sam.x.weight": np.zeros(3, np.float32)})
    assert conv.detect({"sam.x.weight": np.zeros(3, np.float32)}) is None
    with pytest.raises(CheckpointMismatchError, match="heads"):
        conv.from_state_dict(sd, heads=5)
    with pytest.raises(ValueError, match="layout"):
        conv.to_state_dict(tiny[2], layout="hf")


def test_deliberate_breaks_are_caught(tiny, monkeypatch):
    """The reference catches positions starting at 0 and a pre-LN layer."""
    import peanut_jax.models.roberta as mr

    sd, module, variables = tiny
    ids, pm = batch([7, 11], 11, seed=2)
    ref = reference(sd, ids, pm, heads=4)[-1]
    monkeypatch.setattr(mr, "make_positions", lambda i, p=1: np.cumsum(np.asarray(i) != p, axis=1) - 1)
    assert np.abs(np.asarray(module.apply(variables, ids, pm)) - ref).max() > 1e-2
    monkeypatch.undo()

    class PreLN(mr.EncoderLayer):
        @mr.nn.compact
        def __call__(self, x, padding_mask=None, deterministic=True):
            dt, pdt = self.dtype, self.param_dtype
            y = mr._layer_norm("self_attn_layer_norm", dt, pdt)(x)
            x = x + mr.SelfAttention(self.dim, self.heads, 0.0, dt, pdt, name="self_attn")(y, padding_mask)
            y = mr._layer_norm("final_layer_norm", dt, pdt)(x)
            y = mr._dense(self.dim, "fc2", dt, pdt)(mr.jax.nn.gelu(mr._dense(self.ffn, "fc1", dt, pdt)(y), False))
            return x + y

    monkeypatch.setattr(mr, "EncoderLayer", PreLN)
    assert np.abs(np.asarray(module.apply(variables, ids, pm)) - ref).max() > 1e-2


# --- parity with the official SAMWISE dump (local only) -------------------------------------


@pytest.fixture(scope="module")
def samwise_roberta():
    npz, pth = ref_dump("samwise")
    module, variables = from_official("roberta_base", pth)
    return npz, module, variables


def _inter(npz, key):
    for k in npz.files:
        if k.endswith("inter/" + key):
            return npz[k]
    pytest.skip(f"{key} not in the samwise dump")


def test_parity_samwise_dump(samwise_roberta):
    npz, module, v = samwise_roberta
    ids = _inter(npz, "text_input_ids").astype(np.int32)
    pm = _inter(npz, "text_padding_mask").astype(bool)
    seq_first = lambda a: np.swapaxes(np.asarray(a), 0, 1)  # (B, L, D) -> official (L, B, D)
    errs = {}
    x, _ = module.apply(v, ids, pm, method=RobertaEncoder.embed)
    errs["text_embedding"] = assert_parity(seq_first(x), _inter(npz, "text_embedding"), what="text_embedding")

    def layers(x, a, b):
        return module.apply(v, x, pm, a, b, method=RobertaEncoder.run_layers)

    x = jax.jit(layers, static_argnums=(1, 2))(x, 0, 1)
    errs["txt_layers_0_0"] = assert_parity(seq_first(x), _inter(npz, "txt_layers_0_0"), what="txt_layers_0_0")
    x = jax.jit(layers, static_argnums=(1, 2))(x, 1, 4)
    errs["txt_layers_1_3"] = assert_parity(seq_first(x), _inter(npz, "txt_layers_1_3"), what="txt_layers_1_3")
    # the official adds the adapter's text output after each group; feed the dumped one, as official
    for adapter, (a, b), key in ((0, (4, 8), "txt_layers_4_7"), (1, (8, 12), "txt_layers_8_11")):
        prev = _inter(npz, {0: "txt_layers_1_3", 1: "txt_layers_4_7"}[adapter])
        t_in = seq_first(prev + _inter(npz, f"cmt{adapter}_txt_out"))
        x = jax.jit(layers, static_argnums=(1, 2))(t_in, a, b)
        errs[key] = assert_parity(seq_first(x), _inter(npz, key), what=key)
    print("roberta parity vs samwise dump:", {k: f"{e:.2e}" for k, e in errs.items()})
