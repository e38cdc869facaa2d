"""J&F (peanut_jax.metrics.jf) against the official DAVIS-2017 evaluation code, plus properties.

Reference numbers (REFERENCE below) come from davisvideochallenge/davis2017-evaluation at commit
ac7c43fca936f9722837b7fbd337d284ba37004b (davis2017/metrics.py ``db_eval_iou`` and
``db_eval_boundary`` -> ``f_measure`` / ``_seg2bmap``, davis2017/utils.py ``db_statistics``), run with
opencv-python-headless 5.1.0.95, scikit-image 0.26.0, numpy 2.4.6 on the masks that ``make_case``
builds here from ``np.random.default_rng(seed)``.  Per case, per frame t:
``J[t] = db_eval_iou(gt, pred, void)[t]`` and ``F[t] = db_eval_boundary(gt, pred, void, bound_th)[t]``
(annotation first, segmentation second, as ``DAVISEvaluation`` calls them); ``JM`` / ``FM`` are
``db_statistics(J)[0]`` / ``db_statistics(F)[0]``.  Regenerate (prints the dict) with
``PYTHONPATH=<davis2017-evaluation checkout> python tests/test_metrics_jf.py`` in an environment
with cv2, skimage, pytest and this package.  All 36 cases agree exactly (largest difference 0.0).
"""

from __future__ import annotations

import numpy as np
import pytest

from peanut_jax.metrics import jf

TOL = 1e-6


# --------------------------------------------------------------------------- cases
def _blob(rng, t, h, w):
    """(t, h, w) bool: a random ellipse per frame (it may cross the border), 1 % of pixels flipped."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.zeros((t, h, w), bool)
    for k in range(t):
        cy, cx = rng.uniform(0.15 * h, 0.85 * h), rng.uniform(0.15 * w, 0.85 * w)
        ry, rx = rng.uniform(h / 6, h / 2), rng.uniform(w / 6, w / 2)
        m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        out[k] = m ^ (rng.random((h, w)) < 0.01)
    return out


def _jitter(rng, m, p=0.1):
    """Shift each frame by up to 2 px (wrapping) and flip pixels next to the boundary with probability p."""
    out = np.zeros_like(m)
    for k in range(m.shape[0]):
        dy, dx = rng.integers(-2, 3, size=2)
        s = np.roll(m[k], (dy, dx), axis=(0, 1))
        edge = s ^ np.roll(s, 1, axis=0) | s ^ np.roll(s, 1, axis=1)
        out[k] = s ^ (edge & (rng.random(s.shape) < p))
    return out


def _pixel(h, w, points):
    m = np.zeros((1, h, w), bool)
    for y, x in points:
        m[0, y, x] = True
    return m


def make_case(name):
    """(pred, gt, void or None, bound_th) for the case ``name``, all (T, H, W)."""
    z = lambda h, w, t=1: np.zeros((t, h, w), bool)  # noqa: E731
    o = lambda h, w, t=1: np.ones((t, h, w), bool)  # noqa: E731
    if name.startswith("blob_"):  # blob_<seed>_<T>x<H>x<W>
        _, seed, size = name.split("_")
        t, h, w = (int(v) for v in size.split("x"))
        rng = np.random.default_rng(int(seed))
        gt = _blob(rng, t, h, w)
        return _jitter(rng, gt), gt, None, 0.008
    if name.startswith("noise_"):  # noise_<seed>_<T>x<H>x<W>: independent coin flips
        _, seed, size = name.split("_")
        t, h, w = (int(v) for v in size.split("x"))
        rng = np.random.default_rng(int(seed))
        return rng.random((t, h, w)) < 0.5, rng.random((t, h, w)) < 0.3, None, 0.008
    if name.startswith("bth_"):  # bth_<bound_th>: seed-7 blob pair 40x52 with another tolerance
        rng = np.random.default_rng(7)
        gt = _blob(rng, 2, 40, 52)
        return _jitter(rng, gt, 0.3), gt, None, float(name.split("_")[1])
    if name == "void":  # seed 11 blobs, 60x80, T=3, random void rectangle + void speckle
        rng = np.random.default_rng(11)
        gt = _blob(rng, 3, 60, 80)
        void = rng.random(gt.shape) < 0.05
        void[:, 10:30, 20:50] = True
        return _jitter(rng, gt), gt, void, 0.008
    if name == "void_all_gt":  # the whole gt object lies under void
        gt = z(20, 24)
        gt[0, 5:10, 5:12] = True
        void = gt.copy()
        pred = z(20, 24)
        pred[0, 4:9, 6:14] = True
        return pred, gt, void, 0.008
    if name == "sequence_empty_frames":  # T=6 with empty gt frames (pred empty in some, not in others)
        rng = np.random.default_rng(3)
        gt = _blob(rng, 6, 36, 48)
        pred = _jitter(rng, gt)
        gt[[1, 3, 4]] = False
        pred[1] = False
        return pred, gt, None, 0.008
    fixed = {
        "both_empty": lambda: (z(16, 20), z(16, 20)),
        "pred_empty": lambda: (z(16, 20), _blob(np.random.default_rng(0), 1, 16, 20)),
        "gt_empty": lambda: (_blob(np.random.default_rng(0), 1, 16, 20), z(16, 20)),
        "both_full": lambda: (o(16, 20), o(16, 20)),
        "full_vs_blob": lambda: (o(16, 20), _blob(np.random.default_rng(1), 1, 16, 20)),
        "full_vs_empty": lambda: (o(16, 20), z(16, 20)),
        "pixel_centre": lambda: (_pixel(15, 17, [(7, 8)]), _pixel(15, 17, [(7, 9)])),
        "pixel_same": lambda: (_pixel(15, 17, [(7, 8)]), _pixel(15, 17, [(7, 8)])),
        "pixel_far": lambda: (_pixel(15, 17, [(1, 1)]), _pixel(15, 17, [(12, 14)])),
        "pixel_corners": lambda: (_pixel(15, 17, [(0, 0), (14, 16)]), _pixel(15, 17, [(0, 16), (14, 0)])),
        "pixel_bottom_right": lambda: (_pixel(15, 17, [(14, 16)]), _pixel(15, 17, [(13, 16)])),
        "pixel_top_left_vs_block": lambda: (_pixel(15, 17, [(0, 0)]), _pixel(15, 17, [(0, 0), (0, 1), (1, 0), (1, 1)])),
        "row_last_vs_first": lambda: (_rows(15, 17, [14]), _rows(15, 17, [0])),
        "row_last_vs_second_last": lambda: (_rows(15, 17, [14]), _rows(15, 17, [13])),
        "col_last_vs_col_0": lambda: (_cols(15, 17, [16]), _cols(15, 17, [0])),
        "line_h_vs_v": lambda: (_rows(21, 21, [10]), _cols(21, 21, [10])),
        "line_diag_vs_shift": lambda: (np.eye(21, dtype=bool)[None], np.eye(21, k=1, dtype=bool)[None]),
        "line_thin_vs_thick": lambda: (_rows(21, 30, [10]), _rows(21, 30, [9, 10, 11])),
        "one_row_image": lambda: (
            np.array([[[0, 1, 1, 0, 0, 1, 0, 1]]], bool),
            np.array([[[0, 1, 1, 1, 0, 0, 0, 1]]], bool),
        ),
        "one_col_image": lambda: (np.array([[0, 1, 1, 0, 1]], bool).T[None], np.array([[1, 1, 0, 0, 1]], bool).T[None]),
        "labels_nonzero": _labels_nonzero,
    }
    pred, gt = fixed[name]()
    return pred, gt, None, 0.008


def _labels_nonzero():
    """uint8 label maps: pred = 3 on a seed-5 blob, gt = 255 on its jittered copy (nonzero = foreground)."""
    rng = np.random.default_rng(5)
    gt = _blob(rng, 1, 18, 22)
    return np.where(_jitter(rng, gt), 3, 0).astype(np.uint8), np.where(gt, 255, 0).astype(np.uint8)


def _rows(h, w, rows):
    m = np.zeros((1, h, w), bool)
    m[0, rows, :] = True
    return m


def _cols(h, w, cols):
    m = np.zeros((1, h, w), bool)
    m[0, :, cols] = True
    return m


CASE_NAMES = [
    "blob_0_1x48x64",
    "blob_1_3x33x17",
    "blob_2_2x130x200",
    "blob_4_1x7x5",
    "blob_8_1x480x854",
    "noise_0_2x20x30",
    "noise_1_1x9x13",
    "bth_0",
    "bth_0.05",
    "bth_1",
    "bth_1.5",
    "bth_3",
    "void",
    "void_all_gt",
    "sequence_empty_frames",
    "both_empty",
    "pred_empty",
    "gt_empty",
    "both_full",
    "full_vs_blob",
    "full_vs_empty",
    "pixel_centre",
    "pixel_same",
    "pixel_far",
    "pixel_corners",
    "pixel_bottom_right",
    "pixel_top_left_vs_block",
    "row_last_vs_first",
    "row_last_vs_second_last",
    "col_last_vs_col_0",
    "line_h_vs_v",
    "line_diag_vs_shift",
    "line_thin_vs_thick",
    "one_row_image",
    "one_col_image",
    "labels_nonzero",
]


# --------------------------------------------------------------------------- reference numbers
# fmt: off
REFERENCE = {'blob_0_1x48x64': {'J': [0.6048780487804878],
                    'F': [0.41301684532924965],
                    'JM': 0.6048780487804878,
                    'FM': 0.41301684532924965},
 'blob_1_3x33x17': {'J': [0.5868263473053892, 0.6741071428571429, 0.6905829596412556],
                    'F': [0.531387537641881, 0.6609905264420194, 0.5953273723680415],
                    'JM': 0.6505054832679292,
                    'FM': 0.5959018121506473},
 'blob_2_2x130x200': {'J': [0.8551875171092252, 0.8935102586975915],
                      'F': [0.528993632460404, 0.8379013092838958],
                      'JM': 0.8743488879034084,
                      'FM': 0.6834474708721499},
 'blob_4_1x7x5': {'J': [0.23076923076923078],
                  'F': [0.9523809523809523],
                  'JM': 0.23076923076923078,
                  'FM': 0.9523809523809523},
 'blob_8_1x480x854': {'J': [0.9098447273780914],
                      'F': [0.9946165930763002],
                      'JM': 0.9098447273780914,
                      'FM': 0.9946165930763002},
 'noise_0_2x20x30': {'J': [0.21164021164021163, 0.24069478908188585],
                     'F': [0.9922480620155039, 0.989164001379758],
                     'JM': 0.22616750036104874,
                     'FM': 0.9907060316976309},
 'noise_1_1x9x13': {'J': [0.18421052631578946],
                    'F': [0.9885673221401973],
                    'JM': 0.18421052631578946,
                    'FM': 0.9885673221401973},
 'bth_0': {'J': [0.772972972972973, 0.7381974248927039],
           'F': [0.17142857142857143, 0.08547008547008547],
           'JM': 0.7555851989328384,
           'FM': 0.12844932844932844},
 'bth_0.05': {'J': [0.772972972972973, 0.7381974248927039],
              'F': [0.9338845946431782, 0.930454066237685],
              'JM': 0.7555851989328384,
              'FM': 0.9321693304404316},
 'bth_1': {'J': [0.772972972972973, 0.7381974248927039],
           'F': [0.4853602069998638, 0.42042618544826266],
           'JM': 0.7555851989328384,
           'FM': 0.4528931962240632},
 'bth_1.5': {'J': [0.772972972972973, 0.7381974248927039],
             'F': [0.35093254152361514, 0.2702426274220126],
             'JM': 0.7555851989328384,
             'FM': 0.31058758447281387},
 'bth_3': {'J': [0.772972972972973, 0.7381974248927039],
           'F': [0.9054840743075383, 0.8983305760264703],
           'JM': 0.7555851989328384,
           'FM': 0.9019073251670042},
 'void': {'J': [0.7445544554455445, 0.7334494773519163, 0.7165532879818595],
          'F': [0.8604282555803459, 0.639415276408437, 0.7242994212610417],
          'JM': 0.7315190735931068,
          'FM': 0.7413809844166082},
 'void_all_gt': {'J': [0.0], 'F': [0.0], 'JM': 0.0, 'FM': 0.0},
 'sequence_empty_frames': {'J': [0.718397997496871, 1.0, 0.7856071964017991, 0.0, 0.0, 0.8613953488372093],
                           'F': [0.28235149880463434, 1.0, 0.7719791125904664, 0.0, 0.0, 0.6237383278458467],
                           'JM': 0.5609000904559799,
                           'FM': 0.44634482320682456},
 'both_empty': {'J': [1.0], 'F': [1.0], 'JM': 1.0, 'FM': 1.0},
 'pred_empty': {'J': [0.0], 'F': [0.0], 'JM': 0.0, 'FM': 0.0},
 'gt_empty': {'J': [0.0], 'F': [0.0], 'JM': 0.0, 'FM': 0.0},
 'both_full': {'J': [1.0], 'F': [1.0], 'JM': 1.0, 'FM': 1.0},
 'full_vs_blob': {'J': [0.246875], 'F': [0.0], 'JM': 0.246875, 'FM': 0.0},
 'full_vs_empty': {'J': [0.0], 'F': [1.0], 'JM': 0.0, 'FM': 1.0},
 'pixel_centre': {'J': [0.0], 'F': [1.0], 'JM': 0.0, 'FM': 1.0},
 'pixel_same': {'J': [1.0], 'F': [1.0], 'JM': 1.0, 'FM': 1.0},
 'pixel_far': {'J': [0.0], 'F': [0.0], 'JM': 0.0, 'FM': 0.0},
 'pixel_corners': {'J': [0.0], 'F': [0.0], 'JM': 0.0, 'FM': 0.0},
 'pixel_bottom_right': {'J': [0.0], 'F': [1.0], 'JM': 0.0, 'FM': 1.0},
 'pixel_top_left_vs_block': {'J': [0.25], 'F': [0.8], 'JM': 0.25, 'FM': 0.8},
 'row_last_vs_first': {'J': [0.0], 'F': [0.0], 'JM': 0.0, 'FM': 0.0},
 'row_last_vs_second_last': {'J': [0.0], 'F': [1.0], 'JM': 0.0, 'FM': 1.0},
 'col_last_vs_col_0': {'J': [0.0], 'F': [0.0], 'JM': 0.0, 'FM': 0.0},
 'line_h_vs_v': {'J': [0.024390243902439025],
                 'F': [0.19047619047619047],
                 'JM': 0.024390243902439025,
                 'FM': 0.19047619047619047},
 'line_diag_vs_shift': {'J': [0.0], 'F': [1.0], 'JM': 0.0, 'FM': 1.0},
 'line_thin_vs_thick': {'J': [0.3333333333333333], 'F': [1.0], 'JM': 0.3333333333333333, 'FM': 1.0},
 'one_row_image': {'J': [0.6], 'F': [1.0], 'JM': 0.6, 'FM': 1.0},
 'one_col_image': {'J': [0.5], 'F': [1.0], 'JM': 0.5, 'FM': 1.0},
 'labels_nonzero': {'J': [0.5925925925925926],
                    'F': [0.6309955233425708],
                    'JM': 0.5925925925925926,
                    'FM': 0.6309955233425708}}
# fmt: on


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize("name", CASE_NAMES)
def test_matches_official(name):
    pred, gt, void, bth = make_case(name)
    ref = REFERENCE[name]
    np.testing.assert_allclose(np.atleast_1d(jf.jaccard(pred, gt, void)), ref["J"], rtol=0, atol=TOL)
    np.testing.assert_allclose(np.atleast_1d(jf.f_measure(pred, gt, bth, void)), ref["F"], rtol=0, atol=TOL)
    res = jf.j_and_f(pred, gt, bound_th=bth, void=void)
    assert res["J"] == pytest.approx(ref["JM"], abs=TOL)
    assert res["F"] == pytest.approx(ref["FM"], abs=TOL)
    assert res["JF"] == pytest.approx((ref["JM"] + ref["FM"]) / 2, abs=TOL)


def test_many_is_the_official_global_mean():
    """J&F-Mean of evaluation_method.py: (mean of per-object J means + mean of per-object F means) / 2."""
    names = [n for n in CASE_NAMES if make_case(n)[3] == 0.008]
    cases = [make_case(n) for n in names]
    res = jf.j_and_f_many([c[0] for c in cases], [c[1] for c in cases], voids=[c[2] for c in cases])
    jm = np.mean([REFERENCE[n]["JM"] for n in names])
    fm = np.mean([REFERENCE[n]["FM"] for n in names])
    assert res["J"] == pytest.approx(jm, abs=TOL)
    assert res["F"] == pytest.approx(fm, abs=TOL)
    assert res["JF"] == pytest.approx((jm + fm) / 2, abs=TOL)
    assert [r["JF"] for r in res["per_sequence"]] == [jf.j_and_f(c[0], c[1], void=c[2])["JF"] for c in cases]


def test_drop_first_last_is_the_semi_supervised_slice():
    pred, gt, _, _ = make_case("sequence_empty_frames")
    ref = REFERENCE["sequence_empty_frames"]
    res = jf.j_and_f(pred, gt, drop_first_last=True)
    assert res["J"] == pytest.approx(np.mean(ref["J"][1:-1]), abs=TOL)
    assert res["F"] == pytest.approx(np.mean(ref["F"][1:-1]), abs=TOL)


@pytest.mark.parametrize("seed,size", [(20, (4, 25, 31)), (21, (2, 64, 48)), (22, (3, 9, 200))])
def test_perfect_prediction_scores_one(seed, size):
    gt = _blob(np.random.default_rng(seed), *size)
    gt[0] = False  # an empty frame
    gt[-1, :, : size[2] // 2] = True  # touches three borders
    res = jf.j_and_f(gt, gt)
    assert res == {"J": 1.0, "F": 1.0, "JF": 1.0}


@pytest.mark.parametrize("name", ["blob_1_3x33x17", "blob_2_2x130x200", "noise_0_2x20x30", "pixel_centre", "gt_empty"])
def test_j_and_f_symmetric_without_void(name):
    pred, gt, _, bth = make_case(name)
    np.testing.assert_array_equal(jf.jaccard(pred, gt), jf.jaccard(gt, pred))
    np.testing.assert_allclose(jf.f_measure(pred, gt, bth), jf.f_measure(gt, pred, bth), rtol=0, atol=1e-12)


def test_boundary_radius_and_disk():
    assert jf.boundary_radius((480, 854)) == 8.0  # ceil(0.008 * 979.6)
    assert jf.boundary_radius((15, 17)) == 1.0
    assert jf.boundary_radius((480, 854), bound_th=3) == 3
    assert jf.disk(0).tolist() == [[True]]
    np.testing.assert_array_equal(jf.disk(1), [[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    assert jf.disk(2).shape == (5, 5) and jf.disk(2).sum() == 13
    assert jf.disk(8).shape == (17, 17) and jf.disk(8).sum() == 197
    fp = jf.disk(1.5)  # offsets -1.5 .. 1.5: only the central 2x2 lies inside
    assert fp.shape == (4, 4) and fp[1:3, 1:3].all() and fp.sum() == 4


def test_dilation_matches_its_definition():
    """out[y, x] = any mask[y + i - kh // 2, x + j - kw // 2] over set footprint (i, j), outside = off."""
    rng = np.random.default_rng(30)
    for _ in range(40):
        h, w = rng.integers(1, 14, size=2)
        kh, kw = rng.integers(1, 8, size=2)
        m = rng.random((h, w)) < 0.15
        fp = rng.random((kh, kw)) < 0.6
        want = np.zeros_like(m)
        for y, x in np.ndindex(h, w):
            for i, j in zip(*np.nonzero(fp)):
                yy, xx = y + i - kh // 2, x + j - kw // 2
                want[y, x] |= bool(0 <= yy < h and 0 <= xx < w and m[yy, xx])
        np.testing.assert_array_equal(jf._dilate(m, fp), want)


def test_boundary_map_edge_rule():
    full = np.ones((4, 5), bool)
    assert not jf.boundary_map(full).any()
    one = np.zeros((4, 5), bool)
    one[3, 4] = True  # bottom-right pixel: never on the boundary itself, its west / north neighbours are
    b = jf.boundary_map(one)
    assert not b[3, 4] and b[3, 3] and b[2, 4] and b.sum() == 3


def test_shapes_and_types():
    pred, gt, _, _ = make_case("blob_1_3x33x17")
    assert isinstance(jf.jaccard(pred[0], gt[0]), float)
    assert isinstance(jf.f_measure(pred[0], gt[0]), float)
    assert jf.jaccard(pred, gt).shape == (3,)
    assert jf.f_measure(pred[None], gt[None]).shape == (1, 3)


def test_bad_input():
    a = np.zeros((2, 8, 9), bool)
    with pytest.raises(ValueError, match="differ in shape"):
        jf.jaccard(a, a[:, :, :-1])
    with pytest.raises(ValueError, match="at least 2 axes"):
        jf.f_measure(a[0, 0], a[0, 0])
    with pytest.raises(ValueError, match=r"\(T, H, W\)"):
        jf.j_and_f(a[None], a[None])
    with pytest.raises(ValueError, match="at least 3 axes"):
        jf.j_and_f(a[0], a[0])
    with pytest.raises(ValueError, match="bound_th"):
        jf.f_measure(a, a, bound_th=-0.1)
    with pytest.raises(ValueError, match="void"):
        jf.j_and_f(a, a, void=a[0])
    with pytest.raises(ValueError, match="T >= 3"):
        jf.j_and_f(a, a, drop_first_last=True)
    with pytest.raises(ValueError, match="as many preds"):
        jf.j_and_f_many([a, a], [a])


# --------------------------------------------------------------------------- regenerate
def _official_reference():  # pragma: no cover - needs the official package, cv2 and skimage
    from davis2017.metrics import db_eval_boundary, db_eval_iou
    from davis2017.utils import db_statistics

    ref = {}
    for name in CASE_NAMES:
        pred, gt, void, bth = make_case(name)
        j = np.atleast_1d(db_eval_iou(gt, pred, void)).astype(np.float64)
        f = np.atleast_1d(db_eval_boundary(gt, pred, void, bound_th=bth)).astype(np.float64)
        ref[name] = {
            "J": j.tolist(),
            "F": f.tolist(),
            "JM": float(db_statistics(j)[0]),
            "FM": float(db_statistics(f)[0]),
        }
    return ref


if __name__ == "__main__":  # pragma: no cover
    import pprint

    pprint.pprint(_official_reference(), width=110, sort_dicts=False)


def test_jax_versions_match_the_official_numbers():
    """jaccard_jax / f_measure_jax, jitted, give the official per-frame values of every case without a
    void mask (float32: within 1e-6); cases of one frame size and bound_th run as one batch."""
    import jax

    groups: dict = {}
    for name in CASE_NAMES:
        pred, gt, void, bth = make_case(name)
        if void is None:
            groups.setdefault((pred.shape[1:], bth), []).append(name)
    assert sum(len(v) for v in groups.values()) >= 30
    j_fn = jax.jit(jf.jaccard_jax)
    f_fn = jax.jit(jf.f_measure_jax, static_argnums=2)
    for (_, bth), names in groups.items():
        pred = np.concatenate([make_case(n)[0] for n in names])
        gt = np.concatenate([make_case(n)[1] for n in names])
        want_j = np.concatenate([REFERENCE[n]["J"] for n in names])
        want_f = np.concatenate([REFERENCE[n]["F"] for n in names])
        np.testing.assert_allclose(np.asarray(j_fn(pred, gt)), want_j, rtol=0, atol=TOL, err_msg=str(names))
        np.testing.assert_allclose(np.asarray(f_fn(pred, gt, bth)), want_f, rtol=0, atol=TOL, err_msg=str(names))


@pytest.mark.parametrize("bound_th", [0.008, 0.05, 3])
def test_jax_f_measure_equals_numpy_on_random_batches(bound_th):
    rng = np.random.default_rng(5)
    pred = _blob(rng, 6, 37, 53).reshape(2, 3, 37, 53)
    gt = _jitter(rng, pred.reshape(6, 37, 53)).reshape(2, 3, 37, 53)
    gt[0, 1] = False  # an empty gt frame
    pred[1, 2] = False  # an empty prediction
    import jax

    got = jax.jit(jf.f_measure_jax, static_argnums=2)(pred, gt, bound_th)
    np.testing.assert_allclose(np.asarray(got), jf.f_measure(pred, gt, bound_th), rtol=0, atol=TOL)
