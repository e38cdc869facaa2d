"""SAMWISE streaming and text padding on the tiny test configuration (CPU).

* ``test_streaming_memory_flat_and_no_recompile``: 300 frames (1000 under ``-m slow``) through
  ``SAMWISEPredictor.init_state`` / ``segment_clip`` (64x64 video, clips of 4, two prompts, CME on):
  host RSS and device memory at the end are within 5% of after 100 frames, and no executable is
  compiled after the first two clips (the first clip of a video has its own program, see
  ``SAMWISE.run_clip(fresh=True)``; the compile count does not depend on the video length).  On CPU
  ``Device.memory_stats()`` is None: device memory is then measured as the bytes of every live
  JAX array (the memory bank and the weights).
* ``test_adapter_text_padding_vs_reference``: the CMT adapter against a hand-written ``ca_V2T``
  (softmax attention from the adapter's own weights): with ``attend_text_padding=True`` the padded
  keys are attended (the official batched behaviour), so padding changes the result; with it off
  the result does not depend on the padding length.
* ``test_attend_text_padding_end_to_end``: the whole early-fusion backbone on a batch where one
  prompt is padded: the flag changes the padded prompt's features and leaves the unpadded one's.
Batch and padding invariance of the whole clip with the flag off is ``test_samwise.py``'s
``test_clip_padding_and_batch_invariance``.
"""

from __future__ import annotations

import functools
import gc
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_samwise import S, _Tok, tiny_variables  # tests/ is on sys.path (rootdir mode)

from peanut_jax.models.samwise import SAMWISE, build_samwise
from peanut_jax.models.samwise.adapter import CMTAdapter
from peanut_jax.pipeline.samwise import SAMWISEPredictor
from peanut_jax.testing import parity_error

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_compiles: list[str] = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, _secs, **_kw: _compiles.append(event) if event == COMPILE_EVENT else None
)


def _variables(module, seed=0):
    v = tiny_variables(module, seed)
    return v


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _device_bytes() -> tuple[str, int]:
    stats = jax.devices()[0].memory_stats()  # None on CPU
    if stats and "bytes_in_use" in stats:
        return "bytes_in_use", int(stats["bytes_in_use"])
    return "live arrays", sum(x.nbytes for x in jax.live_arrays())


@pytest.fixture(scope="module")
def streaming_predictor():
    """The tiny predictor (clips of 4, CME on), compiled by two warm-up clips (a video's first clip
    and the clips after it are two programs)."""
    module = build_samwise("tiny_test")
    pred = SAMWISEPredictor(module, _variables(module), _Tok(), clip_window=4)
    before = len(_compiles)
    state = pred.init_state(["ab", "cde"], 64, 64)
    pred.segment_clip(state, np.zeros((4, 64, 64, 3), np.uint8))
    first = len(_compiles)
    pred.segment_clip(state, np.zeros((4, 64, 64, 3), np.uint8))
    assert len(_compiles) > first > before  # the listener sees compiles; the second clip is another program
    return pred


@pytest.mark.parametrize("frames", [300, pytest.param(1000, marks=pytest.mark.slow)])
def test_streaming_memory_flat_and_no_recompile(streaming_predictor, frames):
    pred = streaming_predictor
    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8) for _ in range(5)]
    state = pred.init_state(["ab", "cde"], 64, 64)
    compiled0, marks, t0 = len(_compiles), {}, time.perf_counter()
    for n in range(frames // 4):
        logits = pred.segment_clip(state, clips[n % len(clips)])
        if (n + 1) * 4 in (100, frames):
            del logits
            gc.collect()
            marks[(n + 1) * 4] = (_rss_bytes(), *_device_bytes(), len(_compiles))
    elapsed = time.perf_counter() - t0
    assert state["frames_done"] == frames and int(state["bank"]["frame"]) == frames
    (rss0, kind, dev0, c0), (rss1, _, dev1, c1) = marks[100], marks[frames]
    msg = (
        f"100 -> {frames} frames: RSS {rss0 / 2**20:.1f} -> {rss1 / 2**20:.1f} MiB, device ({kind}) "
        f"{dev0 / 2**20:.3f} -> {dev1 / 2**20:.3f} MiB, compiles {compiled0} -> {c0} -> {c1}, {elapsed:.1f}s"
    )
    print(msg)
    assert c1 == c0 == compiled0, msg  # no executable compiled after the first clip
    assert abs(rss1 - rss0) <= 0.05 * rss0, msg
    assert abs(dev1 - dev0) <= 0.05 * dev0, msg


def _mha_reference(params, q, k, v, heads, key_valid):
    """torch ``nn.MultiheadAttention`` by hand (numpy, float64): packed q|k|v projection, softmax
    over the keys where ``key_valid`` (all of them when None), ``out_proj``."""
    w = np.asarray(params["in_proj_weight"], np.float64)
    b = np.asarray(params["in_proj_bias"], np.float64)
    e = w.shape[0]
    qh, kh, vh = (
        (np.asarray(x, np.float64) @ w[:, j * e : (j + 1) * e] + b[j * e : (j + 1) * e]).reshape(
            x.shape[0], x.shape[1], heads, e // heads
        )
        for j, x in enumerate((q, k, v))
    )
    s = np.einsum("bqhd,bkhd->bhqk", qh, kh) / np.sqrt(e // heads)
    if key_valid is not None:
        s = np.where(np.asarray(key_valid)[:, None, None, :], s, -np.inf)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    o = np.einsum("bhqk,bkhd->bqhd", a, vh).reshape(q.shape[0], q.shape[1], e)
    return o @ np.asarray(params["out_proj"]["kernel"], np.float64) + np.asarray(params["out_proj"]["bias"], np.float64)


def test_adapter_text_padding_vs_reference():
    """One adapter (no HSA: ca_V2T is where the flag acts), text of 5 real tokens, padded by 0, 1
    and 6 tokens of garbage states (as the text stream has at padded positions)."""
    rng = np.random.default_rng(1)
    vis = jnp.asarray(rng.standard_normal((1, 2, 4, 4, 8)), jnp.float32)
    real = rng.standard_normal((1, 5, 12)).astype(np.float32)

    def padded(n):
        txt = np.concatenate([real, 3.0 * rng.standard_normal((1, n, 12)).astype(np.float32)], 1)
        return jnp.asarray(txt), jnp.asarray(np.arange(5 + n)[None] >= 5)

    def adapter(attend):
        return CMTAdapter(8, 12, dim=16, heads=2, hsa=False, attend_text_padding=attend)

    v = adapter(False).init(jax.random.PRNGKey(0), vis, *padded(0))
    ca = v["params"]["ca_V2T"]

    @functools.partial(jax.jit, static_argnums=0)
    def run(attend, txt, pm):
        """-> (ca_V2T's query and text inputs, its output, the adapter's v_out)."""
        feats = {}

        def grab(next_fun, args, kwargs, ctx):
            out = next_fun(*args, **kwargs)
            if ctx.module.name == "ca_V2T":
                feats.update(q=args[0], t=args[1], out=out)
            return out

        with nn.intercept_methods(grab):
            out = adapter(attend).apply(v, vis, txt, pm)[0]
        return feats["q"], feats["t"], feats["out"], out

    def reference(txt, pm, attend):
        """-> (the module's ca_V2T output, ca_V2T by hand on the same inputs, the adapter's v_out)."""
        q, t, got, out = map(np.asarray, run(attend, txt, pm))
        return got, _mha_reference(ca, q, t, t, 2, None if attend else ~np.asarray(pm)), out

    outs = {}
    for n in (0, 1, 6):
        txt, pm = padded(n)
        for attend in (False, True):
            got, ref, outs[n, attend] = reference(txt, pm, attend)
            assert parity_error(got, ref) <= 1e-5, (n, attend, parity_error(got, ref))
    for n in (1, 6):
        assert parity_error(outs[n, False], outs[0, False]) <= 1e-5, n  # off: padding length does not matter
        assert np.abs(outs[n, True] - outs[0, True]).max() > 1e-3, n  # on: the pads are attended
    assert parity_error(outs[0, True], outs[0, False]) <= 1e-6  # no padding: the flag changes nothing


def test_attend_text_padding_end_to_end():
    """encode_clip (text + Hiera + adapters + neck) on ["ab", "cdefg"] ("ab" padded by 3) with and
    without the flag, in one jitted call: the flag moves the padded prompt's features and the
    prompt state, and nothing of the unpadded prompt; ``s0`` (Hiera stage 1, before the first
    adapter) is text-independent."""
    off = build_samwise("tiny_test", use_cme=False)
    on = build_samwise("tiny_test", use_cme=False, attend_text_padding=True)
    v = _variables(off)
    frames = jnp.asarray(np.random.default_rng(2).standard_normal((2, S, S, 3)), jnp.float32)
    ids, pm = _Tok()(["ab", "cdefg"])
    assert pm[0].sum() == 3 and not pm[1].any()

    @jax.jit
    def both(v, x, i, p):
        return tuple(m.apply(v, x, i, p, method=SAMWISE.encode_clip)[0] for m in (off, on))

    f_off, f_on = jax.tree_util.tree_map(np.asarray, both(v, frames, ids, pm))
    assert np.array_equal(f_on["s0"], f_off["s0"]) and np.array_equal(f_on["s0"][:, 0], f_on["s0"][:, 1])
    for k in ("vision", "s1", "state"):
        assert parity_error(f_on[k][:, 1], f_off[k][:, 1]) <= 1e-5, k  # unpadded prompt: unchanged
        assert np.abs(f_on[k][:, 0] - f_off[k][:, 0]).max() > 1e-3, k  # padded prompt: pads attended
