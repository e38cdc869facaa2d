"""Compiled shapes and work do not depend on the clip length (erase, upscale, interpolate).

Every stage is run through its :class:`~peanut_jax.pipeline.chain.Stage` on clips of 10, 50 and
200 frames with small jitted models; XLA compilations are counted with
:func:`peanut_jax.pipeline.telemetry.backend_compiles`: after the first clip, the longer ones
compile nothing.  The erase window plan is also checked for every length up to 130 frames and for
long clips (shapes, work per output frame), and padded windows are checked to leave the windows
that need no padding exactly as before.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from peanut_jax.pipeline import erase as E
from peanut_jax.pipeline.sources import Frame, StreamInfo
from peanut_jax.pipeline.telemetry import backend_compiles

LENGTHS = (10, 50, 200)


# ------------------------------------------------------------------------------ erase window plan
def _passes(t: int, cfg: E.EraseConfig) -> int:
    """Frames the model processes for a clip of ``t`` frames (the window work)."""
    return sum(len(w.ids) for w in E.plan_windows(t, cfg))


@pytest.mark.parametrize(
    "cfg",
    [E.EraseConfig(), E.EraseConfig(neighbor_stride=2, ref_length=3, stream_refs=2), E.EraseConfig(num_ref=4)],
    ids=["default", "small", "num_ref4"],
)
def test_erase_window_shapes_do_not_depend_on_clip_length(cfg):
    s, r = cfg.neighbor_stride, E.ref_count(cfg)
    want = {(s + 1, s + 1 + r), (2 * s + 1, 2 * s + 1 + r)}
    for t in [*range(1, 131), 200, 1000, 1003]:
        wins = E.plan_windows(t, cfg)
        shapes = {w.shape_key for w in wins}
        assert shapes <= want, (t, shapes)
        if t > s + 1:  # a second window of more than s + 1 frames: both shapes
            assert shapes == want, (t, shapes)
        assert [w.f for w in wins] == list(range(0, t, s))
        for w in wins:
            # local frames are the official ones; padding and references are frames of the clip
            assert list(w.local) == E.local_ids(w.f, t, s)
            assert all(0 <= i < t for i in w.pad + w.refs) and list(w.refs) == sorted(w.refs)
            if w.pad:  # mirror order from the clip end: T-2, T-3, ... (a one-frame clip repeats it)
                assert w.local[-1] == t - 1
                assert w.pad[0] == max(t - 2, 0)
        assert E.final_window(wins, t).shape == (t,)


def test_erase_work_is_linear_in_clip_length():
    stream, official = E.EraseConfig(), E.EraseConfig(mode="official")
    per_frame = {t: _passes(t, stream) / t for t in (200, 1000)}
    assert abs(per_frame[1000] / per_frame[200] - 1) < 0.10, per_frame
    assert per_frame[1000] < 3.5  # 11 local + 6 references per 5 output frames
    # the official reference set holds every 10th frame of the clip: work grows as T^2
    assert _passes(1000, official) / 1000 > 4 * _passes(200, official) / 200 * 0.9


def test_erase_unpadded_windows_are_unchanged():
    fixed, free = E.EraseConfig(), E.EraseConfig(fixed_shapes=False)
    for t in range(1, 260):
        a, b = E.plan_windows(t, fixed), E.plan_windows(t, free)
        assert len(a) == len(b)
        for wa, wb in zip(a, b):
            if wa.shape_key == wb.shape_key:  # a window that needed no padding is the same window
                assert wa == wb, (t, wa, wb)
            else:
                assert wa.local == wb.local and set(wb.refs) <= set(wa.refs)
        if t >= 71 and t % 5 == 1:  # enough grid frames and a last window of s + 1 frames: no padding at all
            assert a == b, t
    # long clips: only the last window is padded (when the clip end cuts it to 7..10 frames)
    for t in (200, 1000, 1003):
        padded = [w for w in E.plan_windows(t, fixed) if w.pad]
        assert len(padded) == 1 and padded[0].local[-1] == t - 1


def _mix_model(x, num_local):
    """A stand-in window model in numpy whose outputs depend on every frame of the window."""
    x = np.asarray(x, np.float32)
    return np.tanh(0.6 * x[:num_local] + 0.9 * x.mean(0, keepdims=True) + 0.01 * num_local)


def _clip(t, h=32, w=56):
    rng = np.random.default_rng(t)
    frames = rng.integers(0, 255, (t, h, w, 3), dtype=np.uint8)
    masks = np.zeros((t, h, w), bool)
    for i in range(t):
        masks[i, 8:20, (i % 30) : (i % 30) + 12] = True
    return frames, masks


@pytest.mark.parametrize("t", [71, 73, 12])
def test_erase_outputs_change_only_in_padded_windows(t):
    frames, masks = _clip(t)
    fixed, free = E.EraseConfig(), E.EraseConfig(fixed_shapes=False)
    got = dict(E.inpaint(E.ArrayClip(frames, masks), _mix_model, fixed))
    ref = dict(E.inpaint(E.ArrayClip(frames, masks), _mix_model, free))
    assert sorted(got) == sorted(ref) == list(range(t))
    padded = {i for w, wf in zip(E.plan_windows(t, fixed), E.plan_windows(t, free)) if w != wf for i in w.local}
    for i in range(t):
        if i not in padded:
            np.testing.assert_array_equal(got[i], ref[i], err_msg=f"frame {i}")
        # outside the (dilated) hole every frame is the input, padded or not
        keep = ~E.process_mask(masks[i], masks.shape[1:])
        np.testing.assert_array_equal(got[i].astype(np.uint8)[keep], frames[i][keep])
    if t == 71:
        assert not padded  # nothing padded: identical clip
    else:
        assert padded and any(not np.array_equal(got[i], ref[i]) for i in padded)


# ------------------------------------------------------------------------------ stages: compile counts
class MixWindow(nn.Module):
    """A jitted E2FGVI stand-in with the window contract of ``InpaintGenerator`` (hq=True)."""

    hq: bool = True

    @nn.compact
    def __call__(self, masked_frames, num_local_frames: int):
        b, t, h, w, c = masked_frames.shape
        y = nn.Conv(3, (3, 3))(masked_frames.reshape(b * t, h, w, c)).reshape(b, t, h, w, 3)
        return jnp.tanh(y + masked_frames.mean(1, keepdims=True)), None


def _run_stage(stage, t, h, w, masks=False, seed=0):
    """Run ``stage`` on a ``t``-frame uint8 clip; returns (outputs, XLA compilations it caused)."""
    rng = np.random.default_rng(seed + t)
    yy, xx = np.mgrid[0:h, 0:w]
    recs = []
    for i in range(t):
        img = (127 + 100 * np.sin((xx + 2 * i) / 5.0 + np.arange(3)[:, None, None]) * np.cos(yy / 7.0)).transpose(
            1, 2, 0
        )
        img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
        m = None
        if masks:
            m = np.zeros((h, w), bool)
            m[10:22, (i % 20) : (i % 20) + 14] = True
        recs.append(Frame(img, m, i))
    info = StreamInfo(t, h, w, 25.0)
    stage.check(info)
    c0 = backend_compiles()
    out = list(stage(iter(recs), info))
    return out, backend_compiles() - c0


def _compile_keys(stage, t, h, w):
    return {key for key, _ in stage.compile_jobs(StreamInfo(t, h, w, 25.0))}


def _check_lengths(stage, h, w, masks=False, shapes=None):
    keys = {t: _compile_keys(stage, t, h, w) for t in LENGTHS}
    assert keys[10] == keys[50] == keys[200] and keys[10], keys
    compiles, seen = {}, {}
    for t in LENGTHS:
        if shapes is not None:
            shapes().clear()
        out, compiles[t] = _run_stage(stage, t, h, w, masks)
        assert len(out) == stage.output_info(StreamInfo(t, h, w, 25.0)).num_frames
        if shapes is not None:
            seen[t] = set(shapes())
    assert compiles[10] > 0 and compiles[50] == 0 and compiles[200] == 0, compiles
    if shapes is not None:
        assert seen[10] == seen[50] == seen[200], seen
    return seen


def _conv_variables(seed=0):
    rng = np.random.default_rng(seed)
    kernel = (0.2 * rng.standard_normal((3, 3, 3, 3))).astype(np.float32)
    return {"params": {"Conv_0": {"kernel": kernel, "bias": np.zeros(3, np.float32)}}}


def test_erase_stage_compiles_once_for_every_clip_length():
    stage = E.EraseStage(MixWindow(), _conv_variables())
    seen = _check_lengths(stage, 40, 56, masks=True, shapes=lambda: stage.runner.shapes)
    assert {(x[0], nl) for x, nl in seen[10]} == {(12, 6), (17, 11)}  # (frames, local frames) at 60x108


class MixVSR(nn.Module):
    """A jitted BasicVSR++ stand-in (the ``apply(variables, lqs, is_mirror_extended)`` contract, x2)
    whose outputs depend on every frame of the window."""

    scale: int = 2
    is_low_res_input: bool = True

    @nn.compact
    def __call__(self, lqs, is_mirror_extended: bool = False):
        b, t, h, w, c = lqs.shape
        y = nn.Conv(3, (3, 3))(lqs.reshape(b * t, h, w, c)).reshape(b, t, h, w, 3) + lqs.mean(1, keepdims=True)
        return jnp.repeat(jnp.repeat(y, 2, axis=2), 2, axis=3)


def test_upscale_stage_compiles_once_for_every_clip_length():
    from peanut_jax.pipeline.upscale import UpscaleStage

    stage = UpscaleStage(MixVSR(), _conv_variables(), chunk=8, overlap=2)
    seen = _check_lengths(stage, 64, 64, shapes=lambda: stage.runner.shapes)
    assert seen[10] == {(12, 64, 64, 3)}  # chunk + 2 * overlap frames, also for the 10-frame clip


def test_interpolate_stage_compiles_once_for_every_clip_length():
    from peanut_jax.models.rife import IFNetHDv3, init_params
    from peanut_jax.pipeline.interpolate import InterpolateStage

    m = IFNetHDv3(c=8)
    stage = InterpolateStage(m, init_params(m, 0), multi=2, batch_size=4)
    _check_lengths(stage, 40, 56)
