"""Tests of the E2FGVI inference pipeline (``peanut_jax.pipeline.erase``).

The protocol is checked against a plain transcription of the official ``test.py`` main loop
(written here independently: flip-concat padding, scipy dilation, per-window loop); most engine
tests use a cheap stand-in model that mixes all frames of a window (so that window contents
matter), and a few use the real E2FGVI-HQ with random weights at 50x100 (padded to 60x108).
"""

from __future__ import annotations

import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi
from flax.traverse_util import flatten_dict, unflatten_dict
from PIL import Image

from peanut_jax.pipeline import erase as E

REPO = pathlib.Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ transcriptions
def official_get_ref_index(f, neighbor_ids, length, ref_length, num_ref):
    """test.py get_ref_index, verbatim logic."""
    ref_index = []
    if num_ref == -1:
        for i in range(0, length, ref_length):
            if i not in neighbor_ids:
                ref_index.append(i)
    else:
        start_idx = max(0, f - ref_length * (num_ref // 2))
        end_idx = min(length, f + ref_length * (num_ref // 2))
        for i in range(start_idx, end_idx + 1, ref_length):
            if i not in neighbor_ids:
                if len(ref_index) > num_ref:
                    break
                ref_index.append(i)
    return ref_index


def official_dilate(mask_bool):
    """cv2.dilate(m, cross 3x3, iterations=4) per frame, via scipy (outside pixels never count)."""
    cross = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)
    m = np.asarray(mask_bool, bool)
    if m.ndim == 3:
        return np.stack([official_dilate(x) for x in m])
    return ndi.binary_dilation(m, structure=cross, iterations=4, border_value=0)


def official_loop(frames_u8, masks_dilated, model_fn, neighbor_stride=5, ref_length=10, num_ref=-1):
    """The main loop of test.py in numpy; ``model_fn(masked (T, Hp, Wp, 3), num_local)`` returns
    the outputs of the local frames.  Returns comp_frames (uint8 or float32 per frame)."""
    video_length, h, w = frames_u8.shape[:3]
    imgs = frames_u8.astype(np.float32) / np.float32(255) * 2 - 1
    masks = masks_dilated.astype(np.float32)[..., None]
    binary_masks = masks_dilated.astype(np.uint8)[..., None]
    comp_frames = [None] * video_length
    for f in range(0, video_length, neighbor_stride):
        neighbor_ids = [i for i in range(max(0, f - neighbor_stride), min(video_length, f + neighbor_stride + 1))]
        ref_ids = official_get_ref_index(f, neighbor_ids, video_length, ref_length, num_ref)
        ids = neighbor_ids + ref_ids
        masked_imgs = imgs[ids] * (1 - masks[ids])
        h_pad = (60 - h % 60) % 60
        w_pad = (108 - w % 108) % 108
        masked_imgs = np.concatenate([masked_imgs, masked_imgs[:, ::-1]], 1)[:, : h + h_pad]
        masked_imgs = np.concatenate([masked_imgs, masked_imgs[:, :, ::-1]], 2)[:, :, : w + w_pad]
        pred_imgs = model_fn(np.ascontiguousarray(masked_imgs), len(neighbor_ids))[:, :h, :w]
        pred_imgs = (pred_imgs + 1) / 2
        pred_imgs = pred_imgs * 255
        for i in range(len(neighbor_ids)):
            idx = neighbor_ids[i]
            img = np.array(pred_imgs[i]).astype(np.uint8) * binary_masks[idx] + frames_u8[idx] * (1 - binary_masks[idx])
            if comp_frames[idx] is None:
                comp_frames[idx] = img
            else:
                comp_frames[idx] = comp_frames[idx].astype(np.float32) * 0.5 + img.astype(np.float32) * 0.5
    return comp_frames


def fake_model(x, num_local):
    """Cheap stand-in: every output depends on every frame of the window and on num_local."""
    x = np.asarray(x, np.float32)
    mix = x.mean(0, keepdims=True)
    k = np.arange(num_local, dtype=np.float32)[:, None, None, None]
    return np.tanh(0.6 * x[:num_local] + 0.9 * mix + 0.05 * k + 0.01 * num_local)


class CountingModel:
    def __init__(self):
        self.calls = []

    def __call__(self, x, num_local):
        self.calls.append((x.shape, num_local))
        return fake_model(x, num_local)


def clip_arrays(t, h, w, seed=0, empty_every=None):
    """uint8 frames with texture + moving elliptic masks (raw, undilated)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames, masks = [], []
    for i in range(t):
        img = np.stack([np.sin((xx + 2 * i) / 4.0 + c) * np.cos((yy - i) / 5.0 + 2 * c) for c in range(3)], -1)
        img = 127.5 + 110 * img + rng.normal(0, 6, img.shape)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
        m = ((yy - h / 2) ** 2 / (h / 6) ** 2 + (xx - w / 3 - 1.5 * i) ** 2 / (w / 8) ** 2) < 1
        if empty_every and i % empty_every == 0:
            m[:] = False
        masks.append(m)
    return np.stack(frames), np.stack(masks)


# ------------------------------------------------------------------------------ schedule
@pytest.mark.parametrize("length", [1, 2, 7, 11, 23, 25, 70, 101])
@pytest.mark.parametrize(
    "stride,ref_length,num_ref",
    [(5, 10, -1), (5, 10, 2), (5, 10, 3), (5, 10, 5), (2, 3, -1), (2, 3, 4), (3, 7, 1), (1, 1, 2)],
)
def test_windows_match_official_loop(length, stride, ref_length, num_ref):
    cfg = E.EraseConfig(mode="official", neighbor_stride=stride, ref_length=ref_length, num_ref=num_ref)
    wins = E.plan_windows(length, cfg)
    assert [w.f for w in wins] == list(range(0, length, stride))
    for w in wins:
        nbr = [i for i in range(max(0, w.f - stride), min(length, w.f + stride + 1))]
        ref = official_get_ref_index(w.f, nbr, length, ref_length, num_ref)
        assert list(w.local) == nbr
        # the official rule can produce index == length (an IndexError in test.py): dropped here
        assert list(w.refs) == [i for i in ref if i < length]
        assert w.ids == w.local + w.refs


def test_official_num_ref_window_quirks():
    # the range end min(T, f + 10*(num_ref//2)) + 1 is one past the clip: T=70, f=60 gives 50, 70
    nbr = list(range(55, 66))
    assert official_get_ref_index(60, nbr, 70, 10, 2) == [50, 70]  # 70: IndexError in test.py
    assert E.official_ref_ids(60, nbr, 70, 10, 2) == [50]
    # odd num_ref: the window is +-10*(num_ref//2), so num_ref=3 gives 2 references
    nbr = list(range(95, 106))
    assert E.official_ref_ids(100, nbr, 200, 10, 3) == [90, 110]
    assert E.official_ref_ids(100, nbr, 200, 10, 4) == [80, 90, 110, 120]
    # near the start the window is clipped at 0 and the grid phase changes
    assert E.official_ref_ids(5, list(range(0, 11)), 200, 10, 2) == []
    assert E.official_ref_ids(15, list(range(10, 21)), 200, 10, 4) == [0, 30]
    # the stop test len > num_ref never triggers: at most num_ref references for any setting
    for length in range(1, 40):
        for stride in (1, 2, 5):
            for rl in (1, 3, 10):
                for nr in (1, 2, 3, 4, 6):
                    for f in range(0, length, stride):
                        nbr = E.local_ids(f, length, stride)
                        assert len(E.official_ref_ids(f, nbr, length, rl, nr)) <= nr


def test_nearest_refs_are_bounded_and_equal_official_when_covering():
    t = 300
    for f in range(0, t, 5):
        nbr = E.local_ids(f, t, 5)
        r = E.nearest_ref_ids(f, nbr, t, 10, 6)
        assert len(r) == 6 and r == sorted(r) and not set(r) & set(nbr)
        assert all(i % 10 == 0 for i in r)
        assert max(abs(i - f) for i in r) <= 6 * 10 + 5
        assert E.nearest_ref_ids(f, nbr, t, 10, -1) == E.official_ref_ids(f, nbr, t, 10, -1)
        assert E.nearest_ref_ids(f, nbr, t, 10, 30) == E.official_ref_ids(f, nbr, t, 10, -1)
    # symmetric in the interior
    assert E.nearest_ref_ids(100, E.local_ids(100, t, 5), t, 10, 4) == [80, 90, 110, 120]
    assert E.nearest_ref_ids(105, E.local_ids(105, t, 5), t, 10, 4) == [80, 90, 120, 130]


def test_streaming_has_few_window_shapes():
    for t in (50, 200, 1000, 1003):
        shapes = {w.shape_key for w in E.plan_windows(t, E.EraseConfig(mode="streaming"))}
        assert shapes == {(6, 12), (11, 17)}, shapes  # padded: the same two for every length
        free = {w.shape_key for w in E.plan_windows(t, E.EraseConfig(fixed_shapes=False))}
        assert len(free) <= 4, free
        if t >= 200:  # enough grid frames: always exactly 6 references, the last window's length varies
            assert all(n - l == 6 for l, n in free) and len(free) == 3


def test_blend_weights_and_final_window():
    wins = E.plan_windows(23, E.EraseConfig(mode="official"))
    weights = E.blend_weights(wins, 23)
    for ws in weights:
        assert math.isclose(sum(x for _, x in ws), 1.0)
    assert [x for _, x in weights[0]] == [0.5, 0.5]  # windows f=0 and f=5
    assert [x for _, x in weights[5]] == [0.25, 0.25, 0.5]  # f=0, 5, 10
    final = E.final_window(wins, 23)
    assert np.all(np.diff(final) >= 0) and final[0] == 1 and final[-1] == len(wins) - 1
    # sequential blending reproduces the weights on numbers
    b = E.Blender()
    vals = [np.full((1, 1, 3), v, np.uint8) for v in (200, 100, 40)]
    for v in vals:
        b.add(5, v)
    want = sum(w * float(v[0, 0, 0]) for (_, w), v in zip(weights[5], vals))
    assert b.pop(5)[0, 0, 0] == pytest.approx(want)


def test_bad_config_values():
    for kw in (
        dict(mode="fast"),
        dict(neighbor_stride=0),
        dict(ref_length=0),
        dict(num_ref=0),
        dict(num_ref=-2),
        dict(stream_refs=-3),
        dict(mask_dilation=-1),
    ):
        with pytest.raises(ValueError):
            E.EraseConfig(**kw)
    with pytest.raises(ValueError, match="no frames"):
        E.plan_windows(0)


# ------------------------------------------------------------------------------ pre/post-processing
def test_truncation_compositing_padding():
    out = np.array([-1.0, -0.9999, 0.0, 0.99, 1.0, 0.5019608], np.float32)
    got = E.to_prediction_u8(out)
    want = (((out + 1) / 2) * 255).astype(np.uint8)
    np.testing.assert_array_equal(got, want)
    assert got[2] == 127 and got[3] == 253  # truncation, not rounding (127.5 -> 127)
    pred = np.full((2, 2, 3), 7, np.uint8)
    frame = np.full((2, 2, 3), 200, np.uint8)
    m = np.array([[True, False], [False, True]])
    c = E.composite(pred, frame, m)
    np.testing.assert_array_equal(c[..., 0], [[7, 200], [200, 7]])
    x = np.random.default_rng(0).normal(size=(2, 37, 61, 3)).astype(np.float32)
    p = E.pad_frames(x)
    assert p.shape == (2, 60, 108, 3)
    flip = np.concatenate([x, x[:, ::-1]], 1)[:, :60]
    flip = np.concatenate([flip, flip[:, :, ::-1]], 2)[:, :, :108]
    np.testing.assert_array_equal(p, flip)
    assert E.pad_frames(x[:, :, :54]).shape == (2, 60, 108, 3)
    with pytest.raises(ValueError, match="too small"):
        E.pad_frames(x[:, :29])
    u8 = np.array([[[0, 128, 255]]], np.uint8)
    mi = E.masked_input(u8[None], np.zeros((1, 1, 1), bool))
    np.testing.assert_array_equal(mi, (u8[None].astype(np.float32) / 255) * 2 - 1)
    assert (E.masked_input(u8[None], np.ones((1, 1, 1), bool)) == 0).all()


def test_processing_sizes_and_masks():
    assert E.processing_size("e2fgvi", (480, 854)) == (240, 432)
    assert E.processing_size("e2fgvi_hq", (480, 854)) == (480, 854)
    assert E.processing_size("e2fgvi_hq", (480, 854), (240, 400)) == (240, 400)
    with pytest.raises(ValueError, match="e2fgvi_hq"):
        E.processing_size("e2fgvi", (480, 854), (240, 400))
    with pytest.raises(ValueError, match="minimum"):
        E.processing_size("e2fgvi_hq", (20, 200))
    # mask processing = NEAREST resize, >0 on 'L', 4x cross dilation
    lab = np.zeros((40, 60), np.uint8)
    lab[10:14, 20:23] = 3
    img = Image.fromarray(lab, "L")
    m = E.process_mask(img, (20, 30))
    small = np.asarray(img.resize((30, 20), Image.NEAREST)) > 0
    np.testing.assert_array_equal(m, official_dilate(small))
    np.testing.assert_array_equal(E.process_mask(lab, (40, 60), 0), lab > 0)


# ------------------------------------------------------------------------------ engine (stand-in model)
@pytest.mark.parametrize(
    "t,stride,ref_length,num_ref", [(23, 5, 10, -1), (17, 2, 3, -1), (31, 5, 10, 2), (9, 5, 10, -1), (2, 5, 10, -1)]
)
def test_engine_matches_official_loop(t, stride, ref_length, num_ref):
    frames, masks = clip_arrays(t, 50, 100, seed=t)
    want = official_loop(frames, official_dilate(masks), fake_model, stride, ref_length, num_ref)
    cfg = E.EraseConfig(mode="official", neighbor_stride=stride, ref_length=ref_length, num_ref=num_ref)
    clip = E.ArrayClip(frames, masks, (50, 100))
    got = dict(E.inpaint(clip, fake_model, cfg))
    assert sorted(got) == list(range(t))
    for i in range(t):
        assert got[i].dtype == want[i].dtype, i
        np.testing.assert_array_equal(got[i], want[i], err_msg=f"frame {i}")


def test_streaming_equals_official_when_references_cover_the_clip():
    frames, masks = clip_arrays(40, 50, 100, seed=3)
    ref = dict(E.inpaint(E.ArrayClip(frames, masks), fake_model, E.EraseConfig(mode="official")))
    for k in (-1, 4, 10):  # 4 grid frames (0, 10, 20, 30): 4 nearest = all of them
        cfg = E.EraseConfig(mode="streaming", stream_refs=k, fixed_shapes=False)
        got = dict(E.inpaint(E.ArrayClip(frames, masks), fake_model, cfg))
        for i in range(40):
            np.testing.assert_array_equal(got[i], ref[i])
    # fewer references: different windows, so (some) different results
    got = dict(E.inpaint(E.ArrayClip(frames, masks), fake_model, E.EraseConfig(mode="streaming", stream_refs=1)))
    assert any(not np.array_equal(got[i], ref[i]) for i in range(40))


def test_frames_are_emitted_as_soon_as_final_and_empty_windows_skip_the_model():
    t = 27
    frames, masks = clip_arrays(t, 32, 56, seed=1)
    masks[10:21] = False
    cfg = E.EraseConfig(mode="official")
    wins = E.plan_windows(t, cfg)
    final = E.final_window(wins, t)
    events = []
    model = CountingModel()
    clip = E.ArrayClip(frames, masks, (32, 56))
    for i, comp in E.inpaint(clip, model, cfg, on_window=lambda wi, w: events.append(("w", wi))):
        events.append(("f", i))
        if not masks[i].any():
            np.testing.assert_array_equal(comp, frames[i])
    # frame i comes after window final[i] and before window final[i] + 1
    pos = {e: k for k, e in enumerate(events)}
    for i in range(t):
        assert pos[("w", final[i])] < pos[("f", i)]
        if final[i] + 1 < len(wins):
            assert pos[("f", i)] < pos[("w", final[i] + 1)]
    # the window f=15 (locals 10..20) has only empty masks: not run
    assert len(model.calls) == len(wins) - 1
    # and the result equals running it
    want = official_loop(frames, official_dilate(masks), fake_model)
    got = dict(E.inpaint(E.ArrayClip(frames, masks, (32, 56)), fake_model, cfg))
    for i in range(t):
        np.testing.assert_array_equal(got[i], want[i])


class LazyFrames:
    """A clip generated on demand (never materialised): counts the frames alive."""

    def __init__(self, t, h=32, w=56):
        self.t, self.h, self.w = t, h, w

    def __len__(self):
        return self.t

    def __getitem__(self, i):
        rng = np.random.default_rng(i)
        return rng.integers(0, 255, (self.h, self.w, 3), dtype=np.uint8)


class LazyMasks(LazyFrames):
    def __getitem__(self, i):
        m = np.zeros((self.h, self.w), bool)
        m[8:20, (i % 30) : (i % 30) + 12] = True
        return m


def test_streaming_memory_is_flat_in_clip_length():
    held = {}
    for mode in ("streaming", "official"):
        for t in (50, 200, 1000):
            clip = E.ArrayClip(LazyFrames(t), LazyMasks(t), (32, 56))
            cfg = E.EraseConfig(mode=mode)
            n = sum(1 for _ in E.inpaint(clip, fake_model, cfg))
            assert n == t and clip.held == 0
            held[mode, t] = clip.max_held
    # streaming: 11 local + 6 references (+1 reference of the neighbouring windows), independent of T
    # (a 50-frame clip has only 5 grid frames, so fewer references)
    assert held["streaming", 50] <= held["streaming", 200] == held["streaming", 1000] <= 11 + 6 + 1
    # official: every 10th frame of the clip is a reference of every window
    assert held["official", 1000] >= 100 and held["official", 1000] > held["official", 200] > held["official", 50]


def test_sequential_video_source_memory_is_bounded(tmp_path):
    from peanut_jax.data.video_io import open_video, write_video

    t = 120
    frames = np.stack([LazyFrames(t)[i] for i in range(t)])
    write_video(tmp_path / "v.mp4", frames, fps=10)
    mdir = tmp_path / "m"
    mdir.mkdir()
    for i in range(t):
        Image.fromarray(LazyMasks(t)[i].astype(np.uint8) * 255).save(mdir / f"{i:05d}.png")
    video = open_video(tmp_path / "v.mp4")
    assert video.kind == "video"
    files = sorted(mdir.iterdir())
    clip = E.FolderClip(video, files, (32, 56))
    assert clip.sequential
    out = list(E.inpaint(clip, fake_model, E.EraseConfig(mode="streaming")))
    clip.close()
    assert [i for i, _ in out] == list(range(t))
    # every frame processed once (reference frames by the read-ahead decoder, the others in order)
    assert clip.loads == t
    assert clip.max_held <= 11 + 6 + 1  # read-ahead keeps only the reference frames
    # same composites as the in-memory path over the decoded frames
    dec = open_video(tmp_path / "v.mp4").read()
    ref = dict(
        E.inpaint(
            E.ArrayClip(dec, [LazyMasks(t)[i] for i in range(t)], (32, 56)), fake_model, E.EraseConfig(mode="streaming")
        )
    )
    for i, comp in out:
        np.testing.assert_array_equal(comp, ref[i])


def _random_hq_variables(seed=0):
    from peanut_jax.models import build

    m = build("e2fgvi_hq")
    x = jax.ShapeDtypeStruct((1, 2, 60, 108, 3), jnp.float32)
    shapes = jax.eval_shape(lambda k, a: m.init(k, a, 2), jax.random.key(0), x)["params"]
    rng = np.random.default_rng(seed)
    out = {}
    for path, s in sorted(flatten_dict(shapes).items()):
        fan_in = int(np.prod(s.shape[:-1])) if len(s.shape) > 1 else 1
        if path[-1] == "scale":
            v = 1.0 + 0.1 * rng.standard_normal(s.shape)
        elif path[-1] == "bias" or len(s.shape) == 1:
            v = 0.02 * rng.standard_normal(s.shape)
        else:
            v = rng.standard_normal(s.shape) / math.sqrt(max(fan_in, 1))
        if "update_spynet" in path and path[-2] == "conv_4":
            v = v * 0.05
        out[path] = np.asarray(v, np.float32)
    return m, {"params": unflatten_dict(out)}


@pytest.fixture(scope="module")
def hq():
    m, v = _random_hq_variables()
    return m, v, E.WindowModel(m, v)


# 5 frames, stride 2, grid step 2: windows (3 local + ref 4), (5 local), (3 local + ref 0): 2 shapes
HQ_CFG = E.EraseConfig(mode="official", neighbor_stride=2, ref_length=2)


@pytest.mark.slow  # the official-size E2FGVI-HQ: about a minute each on the 2-core CI box
def test_real_model_official_protocol(hq):
    module, variables, runner = hq
    frames, masks = clip_arrays(5, 50, 100, seed=7)

    def direct(x, num_local):  # the model forward itself, as the official loop calls it
        return runner(x, num_local)

    want = official_loop(frames, official_dilate(masks), direct, 2, 2, -1)
    got = E.inpaint_arrays(module, variables, frames, masks, HQ_CFG, runner=runner)
    for i in range(5):
        np.testing.assert_array_equal(got[i], want[i], err_msg=f"frame {i}")
    assert {s for s in runner.shapes} == {((4, 60, 108, 3), 3), ((5, 60, 108, 3), 5)}
    m = official_dilate(masks)
    for i in range(5):
        assert not np.array_equal(got[i].astype(np.uint8)[m[i]], frames[i][m[i]])  # the hole was filled
        np.testing.assert_array_equal(got[i].astype(np.uint8)[~m[i]], frames[i][~m[i]])  # nothing else changed
    # streaming with all references = the official result
    got_s = E.inpaint_arrays(
        module,
        variables,
        frames,
        masks,
        E.EraseConfig(mode="streaming", neighbor_stride=2, ref_length=2, stream_refs=-1, fixed_shapes=False),
        runner=runner,
    )
    for i in range(5):
        np.testing.assert_array_equal(got_s[i], got[i])


def test_real_model_padding_a_window_changes_real_outputs(hq):
    """Why windows are not padded to one shape: extra frames change the real frames' outputs."""
    module, variables, runner = hq
    frames, masks = clip_arrays(5, 50, 100, seed=7)
    x = E.pad_frames(E.masked_input(frames, official_dilate(masks)))
    a = runner(x[[0, 1, 2, 4]], 3)
    b = runner(x[[0, 1, 2, 4, 4]], 3)  # the same window padded with a repeated reference
    assert a.shape == b.shape
    assert np.abs(a - b).max() > 1e-3


@pytest.mark.slow  # three window shapes of the demo model: about a minute of compiling on 2 CPU cores
def test_demo_model_fixed_shapes_keep_unpadded_windows():
    """The trained demo eraser: with fixed window shapes, frames covered only by windows that need
    no padding are the unpadded result (<= 1e-6; in fact identical), padded windows stay close."""
    from peanut_jax.checkpoints import load
    from peanut_jax.pipeline.common import bundled_asset

    module, variables = load(str(bundled_asset("erase_demo")), "e2fgvi")
    runner = E.WindowModel(module, variables)
    kw = dict(neighbor_stride=2, ref_length=3, stream_refs=2)
    fixed, free = E.EraseConfig(**kw), E.EraseConfig(fixed_shapes=False, **kw)
    for t in (15, 14):  # 15: no window needs padding; 14: the last window (3 + 1 local frames) does
        frames, masks = clip_arrays(t, 50, 100, seed=t)
        got = E.inpaint_arrays(module, variables, frames, masks, fixed, runner=runner)
        ref = E.inpaint_arrays(module, variables, frames, masks, free, runner=runner)
        padded = {i for w in E.plan_windows(t, fixed) if w.pad or len(w.refs) != 2 for i in w.local}
        assert padded == (set() if t == 15 else {10, 11, 12, 13})
        for i in range(t):
            d = np.abs(got[i].astype(np.float64) - ref[i].astype(np.float64))
            if i in padded:
                assert d.mean() < 2.0, (i, d.mean())  # a few grey levels inside the hole at most
            else:
                assert d.max() <= 1e-6, (i, d.max())
    assert {(x[0], nl) for x, nl in runner.shapes} == {(5, 3), (7, 5), (6, 4)}  # fixed: (3, 5) and (5, 7)


# ------------------------------------------------------------------------------ CLI
def _write_clip(folder: pathlib.Path, frames, masks=None, mode="RGB"):
    (folder / "frames").mkdir(parents=True)
    for i, f in enumerate(frames):
        img = Image.fromarray(f)
        if mode != "RGB":
            img = img.convert(mode)
        img.save(folder / "frames" / f"{i:05d}.png")
    if masks is not None:
        (folder / "masks").mkdir()
        for i, m in enumerate(masks):
            Image.fromarray(m.astype(np.uint8) * 255).save(folder / "masks" / f"{i:05d}.png")
    return folder / "frames", folder / "masks"


@pytest.fixture(scope="module")
def hq_export(tmp_path_factory, hq):
    from peanut_jax.checkpoints.export import export_weights

    d = tmp_path_factory.mktemp("weights") / "hq"
    export_weights(d, "e2fgvi_hq", {}, hq[1]["params"])
    return d


def run_cli(*args):
    import infer

    return infer.main(["erase", *map(str, args), "--no-progress"])


@pytest.fixture()
def cli_env(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))


def test_cli_end_to_end_equals_library(tmp_path, hq_export, hq, cli_env, capsys):
    module, variables, runner = hq
    frames, masks = clip_arrays(5, 50, 100, seed=7)
    fdir, mdir = _write_clip(tmp_path, frames, masks)
    out = tmp_path / "out"
    rc = run_cli(
        "--input",
        fdir,
        "--masks",
        mdir,
        "--output",
        out,
        "--checkpoint",
        hq_export,
        "--neighbor-stride",
        2,
        "--ref-length",
        2,
        "--erase-mode",
        "official",
    )
    assert rc == 0, capsys.readouterr().err
    assert "5 frames 100x50 @ 25 fps -> 5 frames 100x50 (WxH)" in capsys.readouterr().out
    got = np.stack([np.asarray(Image.open(p)) for p in sorted(out.iterdir())])
    want = E.inpaint_arrays(module, variables, frames, masks, HQ_CFG, runner=runner)
    np.testing.assert_array_equal(got, np.stack([c.astype(np.uint8) for c in want]))
    # existing output is refused without --overwrite
    rc = run_cli("--input", fdir, "--masks", mdir, "--output", out, "--checkpoint", hq_export)
    assert rc != 0 and "already exists" in capsys.readouterr().err


@pytest.mark.slow  # the official-size E2FGVI-HQ: about a minute each on the 2-core CI box
def test_cli_official_file_equals_exported_folder(tmp_path, hq_export, hq, cli_env, capsys):
    """Issue 11 item 2: ``infer.py erase`` with an official E2FGVI-HQ file (the kind the tiny demo
    weights cannot take; the other kinds: tests/test_cli_first_hour.py) gives the exported folder's output."""
    torch = pytest.importorskip("torch")
    from peanut_jax.convert import to_official

    official = tmp_path / "E2FGVI-HQ-CVPR22.pth"
    torch.save(
        {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in to_official("e2fgvi_hq", hq[1]).items()}, official
    )
    frames, masks = clip_arrays(5, 50, 100, seed=7)
    fdir, mdir = _write_clip(tmp_path, frames, masks)
    outs = {}
    for kind, ckpt in (("official", official), ("exported", hq_export)):
        outs[kind] = tmp_path / kind
        assert (
            run_cli(
                "--input",
                fdir,
                "--masks",
                mdir,
                "--output",
                outs[kind],
                "--checkpoint",
                ckpt,
                "--neighbor-stride",
                2,
                "--ref-length",
                2,
            )
            == 0
        ), capsys.readouterr().err
    got = {k: np.stack([np.asarray(Image.open(p)) for p in sorted(v.iterdir())]) for k, v in outs.items()}
    np.testing.assert_array_equal(got["official"], got["exported"])


def test_cli_bad_inputs(tmp_path, hq_export, cli_env, capsys):
    frames, masks = clip_arrays(6, 50, 100)
    fdir, mdir = _write_clip(tmp_path / "a", frames, masks)
    out = tmp_path / "o.mp4"

    def err(*extra, masks_dir=mdir, inp=fdir, ckpt=hq_export):
        rc = run_cli("--input", inp, "--masks", masks_dir, "--output", out, "--checkpoint", ckpt, *extra)
        e = capsys.readouterr().err
        assert rc != 0 and not out.exists()
        assert not list(tmp_path.glob(".o*")), "temporary output left behind"
        return e

    # mask count != frame count
    (mdir / "00005.png").unlink()
    assert "5 mask files for 6 video frames" in err()
    Image.fromarray(masks[5].astype(np.uint8) * 255).save(mdir / "00005.png")
    # mask size != frame size
    m2 = tmp_path / "m2"
    m2.mkdir()
    for i in range(6):
        Image.fromarray(np.zeros((25, 50), np.uint8)).save(m2 / f"{i:05d}.png")
    e = err(masks_dir=m2)
    assert "--resize-masks" in e and "50x25" in e  # WxH
    # clip of one frame
    one, one_m = _write_clip(tmp_path / "one", frames[:1], masks[:1])
    assert "at least 2" in err(inp=one, masks_dir=one_m)
    # frame smaller than the model minimum
    tiny, tiny_m = _write_clip(tmp_path / "tiny", frames[:, :20, :40], masks[:, :20, :40])
    assert "minimum" in err(inp=tiny, masks_dir=tiny_m)
    # wrong checkpoints
    from peanut_jax.convert.reader import save_safetensors

    bad = tmp_path / "spynet.safetensors"
    save_safetensors(bad, {"basic_module.0.basic_module.0.conv.weight": np.zeros((32, 8, 7, 7), np.float32)})
    assert "not 'e2fgvi'" in err(ckpt=bad)
    assert "not found" in err(ckpt=tmp_path / "missing.pth")
    assert "e2fgvi_hq" in err("--model", "e2fgvi", ckpt=hq_export)
    assert "minimum" in err("--size", "20x40")
    # a corrupt mask is found before anything is written
    (mdir / "00004.png").write_bytes(b"not a png")
    assert "00004.png" in err()
    Image.fromarray(masks[4].astype(np.uint8) * 255).save(mdir / "00004.png")
    # a corrupt frame fails while frames are processed: the temporary output is removed
    (fdir / "00004.png").write_bytes(b"not a png")
    assert "00004.png" in err()


def test_cli_empty_masks_gray_frames_and_batch(tmp_path, hq_export, cli_env, capsys):
    frames, masks = clip_arrays(4, 50, 100)
    masks[:] = False
    fdir, mdir = _write_clip(tmp_path / "g", frames, masks, mode="L")
    out = tmp_path / "g_out"
    assert run_cli("--input", fdir, "--masks", mdir, "--output", out, "--checkpoint", hq_export) == 0
    e = capsys.readouterr().err
    assert e.count("every mask is empty") == 1 and "grayscale" in e
    assert "shorter than the local window (11 frames)" in e
    got = np.stack([np.asarray(Image.open(p)) for p in sorted(out.iterdir())])
    gray = np.stack([np.asarray(Image.fromarray(f).convert("L").convert("RGB")) for f in frames])
    np.testing.assert_array_equal(got, gray)
    # batch: a folder of frame folders + a folder of mask folders
    vids, mks = tmp_path / "videos", tmp_path / "masksets"
    for name in ("a", "b"):
        f, m = _write_clip(tmp_path / "tmp" / name, frames, masks)
        (vids / name).parent.mkdir(exist_ok=True)
        f.rename(vids / name)
        mks.mkdir(exist_ok=True)
        m.rename(mks / name)
    outdir = tmp_path / "batch_out"
    assert run_cli("--input", vids, "--masks", mks, "--output", outdir, "--checkpoint", hq_export) == 0
    assert sorted(p.name for p in outdir.iterdir()) == ["a", "b"]  # frame folders in, frame folders out
    # a missing mask folder is reported before anything runs
    (vids / "c").mkdir()
    Image.fromarray(frames[0]).save(vids / "c" / "00000.png")
    rc = run_cli("--input", vids, "--masks", mks, "--output", tmp_path / "batch2", "--checkpoint", hq_export)
    assert rc != 0 and "no mask folder 'c'" in capsys.readouterr().err


# ------------------------------------------------------------------------------ official dumps (local)
def test_official_dump_weights_load_and_detect():
    from conftest import ref_dump

    _, pth = ref_dump("e2fgvi_hq")
    name, module, variables = E.load_eraser(pth)
    assert name == "e2fgvi_hq" and module.hq
    with pytest.raises(ValueError, match="holds e2fgvi_hq weights"):
        E.load_eraser(pth, "e2fgvi")
