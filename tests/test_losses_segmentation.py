"""SAMWISE's mask losses and CME labels (``peanut_jax.losses.segmentation``) against small numpy
references written from the official formulas, and torch where torch defines the op."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from peanut_jax.losses.segmentation import (
    dice_loss,
    mask_losses,
    pad_to_multiple,
    same_object_labels,
    sigmoid_focal_loss,
    weighted_cross_entropy,
)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_focal(x, t, alpha=0.25, gamma=2.0):
    """Per element, then mean per clip (rows of the (B, N) view), summed over clips / B."""
    x, t = x.reshape(x.shape[0], -1).astype(np.float64), t.reshape(t.shape[0], -1).astype(np.float64)
    p = _sigmoid(x)
    ce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    p_t = p * t + (1 - p) * (1 - t)
    loss = (alpha * t + (1 - alpha) * (1 - t)) * ce * (1 - p_t) ** gamma
    return loss.mean(1).sum() / x.shape[0]


def np_dice(x, t):
    p = _sigmoid(x.reshape(x.shape[0], -1).astype(np.float64))
    t = t.reshape(t.shape[0], -1).astype(np.float64)
    return (1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).sum() / x.shape[0]


@pytest.fixture
def clips():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 3, (3, 4, 8, 8)).astype(np.float32)
    t = (rng.random((3, 4, 8, 8)) < 0.3).astype(np.float32)
    return x, t


def test_focal_and_dice_match_numpy(clips):
    x, t = clips
    np.testing.assert_allclose(float(sigmoid_focal_loss(jnp.asarray(x), jnp.asarray(t))), np_focal(x, t), rtol=1e-5)
    np.testing.assert_allclose(float(dice_loss(jnp.asarray(x), jnp.asarray(t))), np_dice(x, t), rtol=1e-5)
    # per clip, summed over clips / B: a clip's loss does not depend on the other clips
    one = float(sigmoid_focal_loss(jnp.asarray(x[:1]), jnp.asarray(t[:1])))
    np.testing.assert_allclose(one, np_focal(x[:1], t[:1]), rtol=1e-5)
    # large logits stay finite (stable BCE)
    big = np.full_like(x, 80.0)
    assert np.isfinite(float(sigmoid_focal_loss(jnp.asarray(big), jnp.asarray(t))))


def test_mask_losses_pad_gt_to_32_and_stretch_the_prediction():
    """GT (B, T, 40, 50) pads to 64 x 64; the (B, T, 40, 50) logits are resized (not padded) to it."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.normal(0, 2, (2, 3, 40, 50)).astype(np.float32)
    t = (rng.random((2, 3, 40, 50)) < 0.4).astype(np.float32)
    gt = np.zeros((2, 3, 64, 64), np.float32)
    gt[..., :40, :50] = t
    np.testing.assert_array_equal(np.asarray(pad_to_multiple(jnp.asarray(t), 32)), gt)
    up = torch.nn.functional.interpolate(
        torch.from_numpy(x.reshape(6, 1, 40, 50)), size=(64, 64), mode="bilinear", align_corners=False
    )
    up = up.numpy().reshape(2, 3, 64, 64)
    out = mask_losses(jnp.asarray(x), jnp.asarray(t))
    np.testing.assert_allclose(float(out["loss_mask"]), np_focal(up, gt), rtol=1e-5)
    np.testing.assert_allclose(float(out["loss_dice"]), np_dice(up, gt), rtol=1e-5)
    with pytest.raises(ValueError, match="pred_logits"):
        mask_losses(jnp.asarray(x[:, :2]), jnp.asarray(t))


def test_mask_losses_region_equals_the_cropped_batch():
    """A 64x96 clip padded to 128x128 with ``region_hw=(64, 96)`` scores as the unpadded clip (the
    official collate pads only to the batch's largest clip); a traced region works under jit."""
    import jax

    rng = np.random.default_rng(2)
    x = rng.normal(0, 2, (2, 3, 128, 128)).astype(np.float32)
    t = np.zeros((2, 3, 128, 128), np.float32)
    t[..., :64, :96] = rng.random((2, 3, 64, 96)) < 0.3
    want = mask_losses(jnp.asarray(x[..., :64, :96]), jnp.asarray(t[..., :64, :96]))
    fn = jax.jit(lambda a, b, r: mask_losses(a, b, region_hw=r))
    got = fn(jnp.asarray(x), jnp.asarray(t), jnp.array([64, 96], jnp.int32))
    for k in ("loss_mask", "loss_dice"):
        np.testing.assert_allclose(float(got[k]), float(want[k]), rtol=1e-5)
    full = mask_losses(jnp.asarray(x), jnp.asarray(t))  # without the region the padding counts
    assert abs(float(full["loss_mask"]) - float(want["loss_mask"])) > 1e-3


def np_labels(m, c, score, thr=50):
    """The official rule frame by frame, with torch's 0/0 = NaN (NaN < 0.1 is False)."""
    out = []
    for mi, ci, si in zip(m, c, score):
        a, ca = (mi > 0).sum(), (ci > 0).sum()
        i = ((mi > 0) & (ci > 0)).sum()
        if si < 0 or (a <= thr and ca <= thr):
            out.append(-1)
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.float32(i) / np.float32(min(a, ca))
        out.append(1 if r < np.float32(0.1) else 0)
    return np.array(out)


def test_same_object_labels_rule():
    h = w = 20
    z = -np.ones((h, w), np.float32)

    def box(y0, y1, x0, x1):
        m = z.copy()
        m[y0:y1, x0:x1] = 1.0
        return m

    cases = [
        (box(0, 10, 0, 10), box(0, 10, 0, 10), 1.0),  # same object -> 0
        (box(0, 10, 0, 10), box(10, 20, 10, 20), 1.0),  # disjoint -> 1
        (box(0, 10, 0, 10), box(0, 10, 0, 10), -0.5),  # memory-less object score < 0 -> -1
        (box(0, 5, 0, 5), box(10, 15, 10, 15), 1.0),  # both <= 50 px -> -1
        (box(0, 10, 0, 10), z, 1.0),  # one empty: official 0/0 -> 0
        (box(0, 10, 0, 10), box(9, 20, 9, 20), 1.0),  # intersection 1 / min(100, 121) = 0.01 -> 1
        (box(0, 10, 0, 10), box(0, 10, 9, 20), 1.0),  # intersection 10 / 100 = 0.1, not < 0.1 -> 0
        (box(0, 10, 0, 10), box(0, 9, 9, 20), 1.0),  # 9 / 99 < 0.1 -> 1
    ]
    m = np.stack([c[0] for c in cases])
    c = np.stack([c[1] for c in cases])
    s = np.array([c[2] for c in cases], np.float32)
    want = np.array([0, 1, -1, -1, 0, 1, 0, 1])
    np.testing.assert_array_equal(np_labels(m, c, s), want)
    got = np.asarray(same_object_labels(jnp.asarray(m), jnp.asarray(c), jnp.asarray(s)))
    np.testing.assert_array_equal(got, want)
    fixed = np.asarray(same_object_labels(jnp.asarray(m), jnp.asarray(c), jnp.asarray(s), empty_is_different=True))
    np.testing.assert_array_equal(fixed, [0, 1, -1, -1, 1, 1, 0, 1])
    # random masks, leading (B, T) axes
    rng = np.random.default_rng(3)
    m = rng.normal(-1.0, 1.5, (2, 6, h, w)).astype(np.float32)
    c = rng.normal(-1.0, 1.5, (2, 6, h, w)).astype(np.float32)
    s = rng.normal(0.5, 1.0, (2, 6)).astype(np.float32)
    got = np.asarray(same_object_labels(jnp.asarray(m), jnp.asarray(c), jnp.asarray(s)))
    want = np_labels(m.reshape(12, h, w), c.reshape(12, h, w), s.reshape(12)).reshape(2, 6)
    np.testing.assert_array_equal(got, want)


def test_weighted_cross_entropy_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 2, (7, 2)).astype(np.float32)
    labels = np.array([0, 1, -1, 1, 0, -1, 1])
    ref = torch.nn.functional.cross_entropy(
        torch.from_numpy(logits), torch.from_numpy(labels), weight=torch.tensor([1.0, 2.0]), ignore_index=-1
    )
    got = weighted_cross_entropy(jnp.asarray(logits), jnp.asarray(labels))
    np.testing.assert_allclose(float(got), float(ref), rtol=1e-6)
    # no labelled row: torch gives NaN, SAMWISE's CME loss is then 0
    assert float(weighted_cross_entropy(jnp.asarray(logits), -np.ones(7, int))) == 0.0
    # a NaN logit on an ignored row changes nothing
    bad = logits.copy()
    bad[2] = np.nan
    np.testing.assert_allclose(float(weighted_cross_entropy(jnp.asarray(bad), jnp.asarray(labels))), float(ref), 1e-6)
