"""Procedural synthetic videos: determinism, shapes, exact flows/occlusions, masks, sentences, speed."""

import time

import numpy as np
import pytest
from scipy.ndimage import binary_dilation, map_coordinates

from peanut_jax.data import generate_batch, generate_clip, make_scene, random_video_masks, synthetic, triplet

ARRAY_FIELDS = (
    "frames",
    "background",
    "masks",
    "full_masks",
    "flow_forward",
    "flow_backward",
    "occlusion_forward",
    "occlusion_backward",
    "background_flow_forward",
    "background_flow_backward",
    "background_occlusion_forward",
    "background_occlusion_backward",
    "times",
)


def bilinear_warp(img, flow):
    """Independent reference: img (H, W, C) sampled at pixel + flow (scipy, float64, border clamp)."""
    h, w = flow.shape[:2]
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float64)
    coords = [gy + flow[..., 1], gx + flow[..., 0]]
    return np.stack(
        [
            map_coordinates(img[..., c].astype(np.float64), coords, order=1, mode="nearest")
            for c in range(img.shape[-1])
        ],
        -1,
    )


def edge_band(masks, width=2):
    """Pixels within `width` of any object footprint boundary, (H, W) bool."""
    band = np.zeros(masks.shape[-2:], bool)
    for m in masks:
        band |= binary_dilation(m, iterations=width) & binary_dilation(~m, iterations=width)
    return band


@pytest.fixture(scope="module")
def clip():
    return generate_clip(3, num_frames=6, height=48, width=72, num_objects=3)


def test_shapes_and_dtypes(clip):
    t, h, w, n = 6, 48, 72, 3
    assert clip.frames.shape == clip.background.shape == (t, h, w, 3)
    assert clip.frames.dtype == clip.background.dtype == np.float32
    assert clip.masks.shape == clip.full_masks.shape == (t, n, h, w) and clip.masks.dtype == bool
    for f in ("flow_forward", "flow_backward", "background_flow_forward", "background_flow_backward"):
        assert getattr(clip, f).shape == (t - 1, h, w, 2) and getattr(clip, f).dtype == np.float32
    for f in (
        "occlusion_forward",
        "occlusion_backward",
        "background_occlusion_forward",
        "background_occlusion_backward",
    ):
        assert getattr(clip, f).shape == (t - 1, h, w) and getattr(clip, f).dtype == bool
    assert 0.0 <= clip.frames.min() and clip.frames.max() <= 1.0
    assert len(clip.sentences) == len(clip.objects) == n
    assert clip.object_mask.shape == (t, h, w)
    np.testing.assert_array_equal(clip.times, np.arange(t))
    # the background is colourful and textured, not flat
    assert clip.background.std(axis=(1, 2)).min() > 0.05


def test_deterministic_by_seed():
    a, b = generate_clip(11), generate_clip(11)
    for f in ARRAY_FIELDS:
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    assert a.sentences == b.sentences and a.objects == b.objects
    c = generate_clip(12)
    assert not np.array_equal(a.frames, c.frames)


def test_background_equals_frames_outside_masks(clip):
    outside = ~clip.object_mask
    np.testing.assert_array_equal(clip.frames[outside], clip.background[outside])
    assert np.abs(clip.frames - clip.background)[clip.object_mask].max() > 0.1


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_masks_nonempty_and_consistent(seed):
    c = generate_clip(seed, num_frames=8, height=40, width=40, num_objects=3)
    assert c.full_masks.sum(axis=(2, 3)).min() > 10  # every object in every frame
    assert c.masks.any(axis=(0, 2, 3)).all()  # every object visible somewhere
    assert not (c.masks & ~c.full_masks).any()  # visible within the full footprint
    assert c.masks.sum(axis=1).max() <= 1  # visible masks are disjoint
    np.testing.assert_array_equal(c.masks.any(axis=1), c.full_masks.any(axis=1))
    # front-to-back order: where object 0 lies it is the one that is visible
    np.testing.assert_array_equal(c.masks[:, 0], c.full_masks[:, 0])


@pytest.mark.parametrize("seed,camera", [(3, True), (5, True), (8, False)])
def test_flow_exactness_by_warping(seed, camera):
    """Warping frame t+1 back with flow_forward[t] reproduces frame t on non-occluded pixels."""
    c = generate_clip(seed, num_frames=5, height=48, width=64, num_objects=2, camera=camera)
    mean_errs, max_errs = [], []
    for t in range(4):
        for src, dst, flow, occ, m_src, m_dst in (
            (t, t + 1, c.flow_forward[t], c.occlusion_forward[t], c.full_masks[t], c.full_masks[t + 1]),
            (t + 1, t, c.flow_backward[t], c.occlusion_backward[t], c.full_masks[t + 1], c.full_masks[t]),
        ):
            err = np.abs(bilinear_warp(c.frames[dst], flow) - c.frames[src]).max(-1)
            mean_errs.append(err[~occ].mean())
            # bilinear taps straddling an object edge are not expected to match: drop pixels
            # near an edge in the source frame or whose target lands near one
            near_dst = bilinear_warp(edge_band(m_dst, 3)[..., None].astype(float), flow)[..., 0] > 0
            keep = ~occ & ~edge_band(m_src, 2) & ~near_dst
            assert keep.mean() > 0.5
            max_errs.append(err[keep].max())
    assert max(mean_errs) < 0.01, mean_errs
    assert max(max_errs) < 0.03, max_errs
    # the clean background with its camera flow, everywhere the target stays in frame
    for t in range(4):
        occ = c.background_occlusion_forward[t]
        err = np.abs(bilinear_warp(c.background[t + 1], c.background_flow_forward[t]) - c.background[t])
        assert err[~occ].max() < 0.02
    # a wrong (zero) flow is clearly worse when the camera moves
    if camera:
        err_zero = np.abs(c.frames[1] - c.frames[0]).max(-1)[~c.occlusion_forward[0]].mean()
        assert err_zero > 5 * max(mean_errs)


def test_forward_backward_round_trip(clip):
    """Exact flows compose to the identity: p + f(p) + b(p + f(p)) = p for visible targets."""
    for t in range(5):
        for ff, fb, occ in (
            (clip.flow_forward[t], clip.flow_backward[t], clip.occlusion_forward[t]),
            (clip.background_flow_forward[t], clip.background_flow_backward[t], clip.background_occlusion_forward[t]),
        ):
            back = bilinear_warp(fb, ff)  # the backward flow read at the forward target
            resid = np.linalg.norm(ff + back, axis=-1)
            # away from object edges the motion fields are affine, so bilinear reading is exact
            keep = ~occ & ~edge_band(clip.full_masks[t], 2) & ~edge_band(clip.full_masks[t + 1], 4)
            assert np.median(resid[keep]) < 1e-3 and resid[keep].max() < 1e-2


def test_static_scene_has_zero_flow_and_object_velocity():
    c = generate_clip(4, num_frames=4, height=40, width=48, num_objects=1, camera=False, object_spin=0.0)
    np.testing.assert_array_equal(c.background_flow_forward, 0.0)
    np.testing.assert_array_equal(c.background[0], c.background[3])
    vel = np.array(c.objects[0]["velocity"], np.float32)
    for t in range(3):
        m = c.masks[t, 0]
        np.testing.assert_allclose(c.flow_forward[t][m], np.broadcast_to(vel, (m.sum(), 2)), atol=1e-4)
        mb = c.masks[t + 1, 0]
        np.testing.assert_allclose(c.flow_backward[t][mb], np.broadcast_to(-vel, (mb.sum(), 2)), atol=1e-4)
        np.testing.assert_array_equal(c.flow_forward[t][~m], 0.0)
    # object-free static clip: nothing is occluded, background == frames
    e = generate_clip(4, num_frames=3, height=24, width=24, num_objects=0, camera=False)
    assert not e.occlusion_forward.any() and not e.occlusion_backward.any()
    np.testing.assert_array_equal(e.frames, e.background)


def test_occlusions(clip):
    h, w = clip.frames.shape[1:3]
    gy, gx = np.mgrid[0:h, 0:w]
    for t in range(5):
        f = clip.flow_forward[t]
        x, y = gx + f[..., 0], gy + f[..., 1]
        leaves = (x < 0) | (x > w - 1) | (y < 0) | (y > h - 1)
        assert not (leaves & ~clip.occlusion_forward[t]).any()
        bf = clip.background_flow_forward[t]
        bx, by = gx + bf[..., 0], gy + bf[..., 1]
        np.testing.assert_array_equal(
            clip.background_occlusion_forward[t], (bx < 0) | (bx > w - 1) | (by < 0) | (by > h - 1)
        )
    # background pixels whose target is covered by an object (rounded) are occluded
    t = 0
    f = clip.flow_forward[t]
    tx = np.clip(np.round(gx + f[..., 0]).astype(int), 0, w - 1)
    ty = np.clip(np.round(gy + f[..., 1]).astype(int), 0, h - 1)
    covered = clip.full_masks[t + 1].any(0)[ty, tx]
    bg_now = ~clip.full_masks[t].any(0)
    deep = ~edge_band(clip.full_masks[t + 1], 2)[ty, tx]
    sel = bg_now & covered & deep
    assert sel.any() and clip.occlusion_forward[t][sel].all()


def test_sentences_describe_objects():
    c = generate_clip(21, num_objects=4, height=48, width=48)
    assert len(set(o["color"] for o in c.objects)) == 4  # distinct colours: unambiguous
    for s, o in zip(c.sentences, c.objects):
        assert s.startswith("the ") and o["color"] in s and o["shape"] in s
        assert s.endswith("moving " + o["direction"])
        assert (o["size"] in s) == (o["size"] != "medium")
        vx, vy = o["velocity"]
        words = o["direction"].split()
        assert ("right" in words) == (vx > abs(vy) * 0.4), (o["direction"], vx, vy)
        assert ("left" in words) == (-vx > abs(vy) * 0.4)
        assert ("down" in words) == (vy > abs(vx) * 0.4)
        assert ("up" in words) == (-vy > abs(vx) * 0.4)
    assert synthetic.direction_word(1, 0) == "right"
    assert synthetic.direction_word(-1, -1) == "up and left"
    assert synthetic.direction_word(0, 2) == "down"


def test_objects_move_as_described():
    """The mask centroid follows the object's velocity (camera-independent, image space)."""
    c = generate_clip(9, num_frames=6, height=64, width=64, num_objects=1, object_spin=0.0)
    ys, xs = np.nonzero(c.full_masks[0, 0])
    ye, xe = np.nonzero(c.full_masks[5, 0])
    moved = np.array([xe.mean() - xs.mean(), ye.mean() - ys.mean()])
    expected = 5 * np.array(c.objects[0]["velocity"])
    assert np.linalg.norm(moved - expected) < 1.0 + 0.05 * np.linalg.norm(expected)


def test_generate_batch_matches_clips():
    b = generate_batch(5, 3, num_frames=4, height=24, width=32, num_objects=2)
    assert b.frames.shape == (3, 4, 24, 32, 3) and b.masks.shape == (3, 4, 2, 24, 32)
    assert len(b.sentences) == 3 and all(len(s) == 2 for s in b.sentences)
    one = generate_clip((5, 1), num_frames=4, height=24, width=32, num_objects=2)
    np.testing.assert_array_equal(b.frames[1], one.frames)
    np.testing.assert_array_equal(b.flow_backward[1], one.flow_backward)
    assert b.sentences[1] == one.sentences
    assert b.object_mask.shape == (3, 4, 24, 32)


def test_triplet_middle_frame_is_exact():
    i0, i1, i2 = triplet(6, height=32, width=40, num_objects=2)
    assert i0.shape == i1.shape == i2.shape == (32, 40, 3) and i1.dtype == np.float32
    assert not np.allclose(i1, i0) and not np.allclose(i1, i2)
    assert not np.allclose(i1, (i0 + i2) / 2, atol=1e-3)  # rendered, not blended
    # pan-only camera, no objects: the flow 0 -> 0.5 is exactly half the flow 0 -> 1
    kw = dict(num_objects=0, camera_zoom=0.0, camera_rotation=0.0)
    scene = make_scene(6, num_frames=2, height=32, width=40, duration=1.0, **kw)
    half = scene.render([0.0, 0.5]).flow_forward[0]
    full = scene.render([0.0, 1.0]).flow_forward[0]
    np.testing.assert_allclose(half, full / 2, atol=1e-5)
    assert np.abs(full).max() > 0.1
    j0, j1, j2 = triplet(6, height=32, width=40, **kw)
    np.testing.assert_array_equal(j1, scene.render([0.0, 0.5, 1.0]).frames[1])


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_objects"):
        generate_clip(0, num_objects=11)
    with pytest.raises(ValueError, match="shape"):
        generate_clip(0, shapes=("blob",))
    with pytest.raises(ValueError, match="gap"):
        triplet(0, gap=0)


def test_speed():
    """Generation cost of a 16x240x432 clip, as CPU time of this process (the shared CI/dev
    machines are often oversubscribed, which inflates wall time but not CPU time)."""
    generate_clip(0, num_frames=2, height=32, width=32)  # warm-up
    t0 = time.process_time()
    c = generate_clip(1, num_frames=16, height=240, width=432, num_objects=3)
    elapsed = time.process_time() - t0
    assert c.frames.shape == (16, 240, 432, 3)
    assert elapsed < 2.0, f"16x240x432 clip took {elapsed:.2f} s of CPU time"


# ------------------------------------------------------------------------------ random masks
@pytest.mark.parametrize("seed", range(6))
def test_random_video_masks(seed):
    t, h, w = 10, 48, 80
    m = random_video_masks(seed, t, h, w)
    assert m.shape == (t, h, w) and m.dtype == bool
    np.testing.assert_array_equal(m, random_video_masks(np.random.default_rng(seed), t, h, w))
    area = m.sum(axis=(1, 2))
    assert (area > 0).all() and (area == area[0]).all()  # the same blob, always fully inside
    rows = np.nonzero(m[0].any(1))[0]
    cols = np.nonzero(m[0].any(0))[0]
    bh, bw = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    assert (h // 3) // 2 <= bh <= h - 1 and (w // 3) // 2 <= bw <= w - 1


def test_random_video_masks_static_and_moving():
    kinds = set()
    for seed in range(12):
        m = random_video_masks(seed, 6, 40, 60)
        kinds.add(bool((m == m[0]).all()))
    assert kinds == {True, False}
    static = random_video_masks(0, 5, 40, 60, static_prob=1.0)
    assert (static == static[0]).all()
    moving = random_video_masks(0, 5, 40, 60, static_prob=0.0)
    assert not (moving == moving[0]).all()
