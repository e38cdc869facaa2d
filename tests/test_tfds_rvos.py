"""TFDS builders for referring segmentation (Ref-YouTube-VOS, MeViS, Ref-DAVIS17, RefCOCO) on tiny
generated manual_dirs, built and read back without TensorFlow; the numpy COCO RLE / polygon code
against pycocotools reference values."""

import io
import json
import pickle

import numpy as np
import pytest
from PIL import Image

tfds = pytest.importorskip("tensorflow_datasets")

from peanut_jax.data.tfds import inpainting, refcoco, rle, rvos  # noqa: E402

H, W, T = 32, 48, 3
PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0] * (256 * 3 - 12)


def _jpeg(rng) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _label(t: int, objs=(1, 2)) -> np.ndarray:
    lab = np.zeros((H, W), np.uint8)
    if 1 in objs:
        lab[2 + t : 10 + t, 3:12] = 1
    if 2 in objs:
        lab[15:25, 20 + 2 * t : 30 + 2 * t] = 2
    return lab


def _palette_png(path, lab):
    img = Image.fromarray(lab, mode="P")
    img.putpalette(PALETTE)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def _json(path, obj):
    _write(path, json.dumps(obj).encode())


def _by_id(ds):
    return {r["video_id"].decode(): r for r in (ds[i] for i in range(len(ds)))}


# ------------------------------------------------------------------------------- Ref-YouTube-VOS
NAMES = ["00010", "00000", "00005"]  # listed unsorted, as a JSON may


def _ytvos_tree(root, rng, split="train", videos=None, masks=True, images="{split}/JPEGImages/{vid}"):
    videos = videos or {"vidA": {"0": ("the red box", "1"), "1": ("a green blob", "2")}, "vidB": {"0": ("box", "1")}}
    meta = {"videos": {}}
    for vid, exps in videos.items():
        for t, name in enumerate(sorted(NAMES)):
            _write(root / images.format(split=split, vid=vid) / f"{name}.jpg", _jpeg(rng))
            if masks:
                _palette_png(root / split / "Annotations" / vid / f"{name}.png", _label(t))
        expressions = {k: ({"exp": e, "obj_id": o} if o is not None else {"exp": e}) for k, (e, o) in exps.items()}
        meta["videos"][vid] = {"expressions": expressions, "frames": list(NAMES)}
    _json(root / "meta_expressions" / split / "meta_expressions.json", meta)


@pytest.fixture(scope="module")
def ytvos(tmp_path_factory):
    root = tmp_path_factory.mktemp("ytvos")
    rng = np.random.default_rng(0)
    _ytvos_tree(root / "m", rng)
    _ytvos_tree(root / "m", rng, "valid", {"vidC": {"0": ("a cat", None)}, "vidT": {"0": ("x", None)}}, masks=False)
    (root / "m" / "valid" / "JPEGImages" / "vidT").rename(root / "vidT_gone")  # test video: no images
    _json(root / "m" / "meta_expressions" / "test" / "meta_expressions.json", {"videos": {"vidT": {}}})
    rvos.build("ref_youtube_vos", root / "m", root / "d")
    return root


def test_ref_youtube_vos_records(ytvos):
    m = ytvos / "m"
    train = _by_id(tfds.data_source("ref_youtube_vos", data_dir=str(ytvos / "d"), split="train"))
    assert set(train) == {"vidA", "vidB"}
    a = train["vidA"]
    assert [n.decode() for n in a["frame_names"]] == sorted(NAMES)
    assert (int(a["num_frames"]), int(a["height"]), int(a["width"])) == (T, H, W)
    for t, name in enumerate(sorted(NAMES)):  # source bytes unchanged
        assert bytes(a["frames"][t]) == (m / "train" / "JPEGImages" / "vidA" / f"{name}.jpg").read_bytes()
        assert bytes(a["masks"][t]) == (m / "train" / "Annotations" / "vidA" / f"{name}.png").read_bytes()
    assert inpainting.decode_frames(a["frames"], [1]).shape == (1, H, W, 3)
    ex = rvos.expressions(a)
    assert [(e["exp_id"], e["exp"], e["obj_ids"], e["anno_ids"]) for e in ex] == [
        ("0", "the red box", [1], []),
        ("1", "a green blob", [2], []),
    ]
    for e, obj in ((0, 1), (1, 2)):
        want = np.stack([(_label(t) == obj) for t in range(T)]).astype(np.uint8)
        np.testing.assert_array_equal(rvos.target_masks(a, e), want)
    np.testing.assert_array_equal(rvos.target_masks(a, 1, [2, 0]), np.stack([_label(2) == 2, _label(0) == 2]))
    assert len(a["object_ids"]) == 0 and len(a["object_masks"]) == 0
    b = tfds.builder("ref_youtube_vos", data_dir=str(ytvos / "d"))
    assert b.info.metadata["videos"]["train"] == [["vidA", 3, 2], ["vidB", 3, 1]]
    # valid: the videos of meta_expressions/test are dropped, no masks, no targets
    valid = _by_id(tfds.data_source("ref_youtube_vos", data_dir=str(ytvos / "d"), split="valid"))
    assert set(valid) == {"vidC"} and len(valid["vidC"]["masks"]) == 0
    assert rvos.expressions(valid["vidC"]) == [{"exp_id": "0", "exp": "a cat", "obj_ids": [], "anno_ids": []}]
    with pytest.raises(ValueError, match="no masks"):
        rvos.target_masks(valid["vidC"], 0)


def test_ref_youtube_vos_errors(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "m"
    _ytvos_tree(root, rng, videos={"vidA": {"0": ("ghost", "3")}})
    with pytest.raises(ValueError, match="'vidA' expression '0': object 3 is in no mask"):
        rvos.build("ref_youtube_vos", root, tmp_path / "d1")
    meta = root / "meta_expressions" / "train" / "meta_expressions.json"
    _json(meta, {"videos": {"nosuch": {"expressions": {"0": {"exp": "a", "obj_id": "1"}}, "frames": ["00000"]}}})
    with pytest.raises(FileNotFoundError, match="'nosuch': no JPEGImages folder .*train/JPEGImages/nosuch"):
        rvos.build("ref_youtube_vos", root, tmp_path / "d2")
    _json(meta, {"videos": {}})
    with pytest.raises(ValueError, match="split 'train' has no videos"):
        rvos.build("ref_youtube_vos", root, tmp_path / "d3")
    meta.write_text("{not json")
    with pytest.raises(ValueError, match=r"meta_expressions.json: malformed .*expected layout: train/JPEGImages"):
        rvos.build("ref_youtube_vos", root, tmp_path / "d4")
    meta.unlink()
    with pytest.raises(FileNotFoundError, match=r"meta_expressions.json: missing \(expected layout"):
        rvos.build("ref_youtube_vos", root, tmp_path / "d5")
    with pytest.raises(FileNotFoundError, match="manual_dir"):
        rvos.build("ref_youtube_vos", tmp_path / "nowhere", tmp_path / "d6")
    with pytest.raises(ValueError, match="unknown dataset"):
        rvos.build("kinetics", root, tmp_path / "d7")


# ---------------------------------------------------------------------------------------- MeViS
def _uncompressed_rle(mask):
    """Column-major runs, starting with background, written out by hand (independent of rle.py)."""
    flat = [int(v) for col in np.asarray(mask).T for v in col]
    counts, cur, run = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            cur, run = v, 0
        run += 1
    counts.append(run)
    return {"size": [mask.shape[0], mask.shape[1]], "counts": counts}


def _obj_mask(t, which):
    m = np.zeros((H, W), np.uint8)
    if which == 10:
        m[4 : 14 + t, 5:20] = 1
    elif which == 11:
        m[10:20, 15 + t : 30] = 1  # overlaps object 10
    else:
        m[0, 0] = m[H - 1, W - 1] = 1
    return m


def _mevis_tree(root, rng, split, with_dict=True, anno=(10, 11)):
    frames = sorted(NAMES)
    for name in frames:
        _write(root / split / "JPEGImages" / "m1" / f"{name}.jpg", _jpeg(rng))
    exps = {
        "0": {"exp": "moving left", "obj_id": [0], "anno_id": [anno[0]]},
        "1": {"exp": "both of them", "obj_id": [0, 1], "anno_id": list(anno)},
    }
    _json(root / split / "meta_expressions.json", {"videos": {"m1": {"expressions": exps, "frames": frames}}})
    if with_dict:
        md = {
            "10": [rle.rle_encode(_obj_mask(0, 10)), None, rle.rle_encode(_obj_mask(2, 10))],
            "11": [_uncompressed_rle(_obj_mask(t, 11)) for t in range(T)],
            "12": [rle.rle_encode(_obj_mask(t, 12)) for t in range(T)],  # not referred to: not stored
        }
        _json(root / split / "mask_dict.json", md)


def test_mevis_union_masks(tmp_path):
    rng = np.random.default_rng(2)
    for split, with_dict in (("train", True), ("valid_u", True), ("valid", False)):
        _mevis_tree(tmp_path / "m", rng, split, with_dict)
    b = rvos.build("mevis", tmp_path / "m", tmp_path / "d")
    assert set(b.info.splits) == {"train", "valid_u", "valid"}
    r = tfds.data_source("mevis", data_dir=str(tmp_path / "d"), split="train")[0]
    assert list(r["object_ids"]) == [10, 11] and len(r["object_masks"]) == 2 * T
    assert bytes(r["object_masks"][1]) == b""  # anno 10 absent (None) in frame 1
    ex = rvos.expressions(r)
    assert [(e["obj_ids"], e["anno_ids"]) for e in ex] == [([0], [10]), ([0, 1], [10, 11])]
    m10 = np.stack([_obj_mask(0, 10), np.zeros((H, W), np.uint8), _obj_mask(2, 10)])
    m11 = np.stack([_obj_mask(t, 11) for t in range(T)])
    np.testing.assert_array_equal(rvos.target_masks(r, 0), m10)
    union = rvos.target_masks(r, 1)
    np.testing.assert_array_equal(union, m10 | m11)
    assert union.max() == 1 and ((m10 + m11) == 2).any()  # overlap stays 1 (a union, not a sum)
    v = tfds.data_source("mevis", data_dir=str(tmp_path / "d"), split="valid")[0]
    assert len(v["object_ids"]) == 0 and [e["anno_ids"] for e in rvos.expressions(v)] == [[10], [10, 11]]


def test_mevis_errors(tmp_path):
    rng = np.random.default_rng(3)
    _mevis_tree(tmp_path / "m", rng, "train", anno=(10, 77))
    with pytest.raises(ValueError, match="expression '1': anno_id 77 is not in .*mask_dict.json"):
        rvos.build("mevis", tmp_path / "m", tmp_path / "d1")
    md = tmp_path / "m" / "train" / "mask_dict.json"
    _json(md, {"10": [None], "77": [None, None, None]})
    with pytest.raises(ValueError, match="anno_id 10 has 1 entries, video 'm1' has 3 frames"):
        rvos.build("mevis", tmp_path / "m", tmp_path / "d2")
    _json(md, {"10": [{"size": [H, W], "counts": [5, 3]}] * 3, "77": [None] * 3})
    with pytest.raises(ValueError, match="RLE runs cover 8 pixels"):
        rvos.build("mevis", tmp_path / "m", tmp_path / "d3")
    with pytest.raises(FileNotFoundError, match="none of train/, valid_u/, valid/"):
        rvos.build("mevis", tmp_path / "d3", tmp_path / "d4")


# ----------------------------------------------------------------------------------- Ref-DAVIS17
def test_ref_davis17_converted_layout_and_davis_fallback(tmp_path):
    rng = np.random.default_rng(4)
    four = {str(i): (f"object {i // 4 + 1} by annotator {i % 4}", str(i // 4 + 1)) for i in range(8)}
    _ytvos_tree(tmp_path / "m", rng, "train", {"bear": four})
    # valid read from the DAVIS-2017 folder (the converter moved nothing there)
    _ytvos_tree(tmp_path / "m", rng, "valid", {"cows": four}, masks=False, images="DAVIS/JPEGImages/480p/{vid}")
    for t, name in enumerate(sorted(NAMES)):
        _palette_png(tmp_path / "m" / "DAVIS" / "Annotations_unsupervised" / "480p" / "cows" / f"{name}.png", _label(t))
    rvos.build("ref_davis17", tmp_path / "m", tmp_path / "d")
    val = tfds.data_source("ref_davis17", data_dir=str(tmp_path / "d"), split="valid")[0]
    assert val["video_id"].decode() == "cows" and len(val["masks"]) == T
    src = tmp_path / "m" / "DAVIS" / "JPEGImages" / "480p" / "cows" / "00005.jpg"
    assert bytes(val["frames"][1]) == src.read_bytes()
    ex = rvos.expressions(val)
    assert [e["obj_ids"] for e in ex] == [[1]] * 4 + [[2]] * 4
    np.testing.assert_array_equal(rvos.target_masks(val, 5, [2]), (_label(2) == 2)[None].astype(np.uint8))
    train = tfds.data_source("ref_davis17", data_dir=str(tmp_path / "d"), split="train")[0]
    assert train["video_id"].decode() == "bear" and len(rvos.expressions(train)) == 8
    (tmp_path / "m" / "DAVIS" / "Annotations_unsupervised" / "480p" / "cows" / "00005.png").unlink()
    with pytest.raises(FileNotFoundError, match="Annotations_unsupervised/480p/cows/00005.png missing"):
        rvos.build("ref_davis17", tmp_path / "m", tmp_path / "d2")


# ------------------------------------------------------------------------------------- RefCOCO
TRI = [1.3, 2.2, 18.7, 5.1, 6.4, 17.9]
RECT = [20, 3, 40, 3, 40, 11, 20, 11]


def _refcoco_tree(root, rng, refs_name="refs(unc).p", folder="refcoco"):
    for i in (1, 2):
        _write(root / "train2014" / f"COCO_train2014_{i:012d}.jpg", _jpeg(rng))
    crowd = np.zeros((H, W), np.uint8)
    crowd[20:30, 30:45] = 1
    inst = {
        "images": [{"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg", "height": H, "width": W} for i in (1, 2)],
        "annotations": [
            {"id": 100, "image_id": 1, "segmentation": [TRI], "bbox": [1.3, 2.2, 17.4, 15.7], "category_id": 1},
            {"id": 101, "image_id": 1, "segmentation": [RECT, TRI], "bbox": [1, 2, 39, 16], "category_id": 18},
            {"id": 200, "image_id": 2, "segmentation": _uncompressed_rle(crowd), "bbox": [30, 20, 15, 10]},
        ],
        "categories": [{"id": 1, "name": "person"}],
    }
    _json(root / folder / "instances.json", inst)

    def ref(rid, ann, img, split, sents):
        s = [{"sent_id": 10 * rid + k, "sent": t, "raw": t.upper(), "tokens": t.split()} for k, t in enumerate(sents)]
        return {"ref_id": rid, "ann_id": ann, "image_id": img, "split": split, "category_id": 1, "sentences": s,
                "sent_ids": [x["sent_id"] for x in s], "file_name": f"COCO_train2014_{img:012d}_{ann}.jpg"}  # fmt: skip

    refs = [
        ref(1, 100, 1, "train", ["left guy", "man on the left"]),
        ref(2, 200, 2, "testA", ["crowd"]),
        ref(3, 101, 1, "train", ["right thing"]),
    ]
    _write(root / folder / refs_name, pickle.dumps(refs, protocol=2))
    return crowd


def test_refcoco_records(tmp_path):
    crowd = _refcoco_tree(tmp_path / "coco", np.random.default_rng(5))
    b = rvos.build("refcoco", tmp_path / "coco", tmp_path / "d", config="refcoco")
    assert set(b.info.splits) == {"train", "testA"}
    assert b.info.metadata["images"] == {"train": [[1, 2, 3]], "testA": [[2, 1, 1]]}
    r = tfds.data_source("refcoco/refcoco", data_dir=str(tmp_path / "d"), split="train")[0]
    assert int(r["image_id"]) == 1 and (int(r["height"]), int(r["width"])) == (H, W)
    assert bytes(r["image"]) == (tmp_path / "coco" / "train2014" / "COCO_train2014_000000000001.jpg").read_bytes()
    assert list(r["refs"]["ref_id"]) == [1, 3] and list(r["refs"]["ann_id"]) == [100, 101]
    np.testing.assert_allclose(r["refs"]["bbox"][0], [1.3, 2.2, 17.4, 15.7], rtol=1e-6)
    assert [s.decode() for s in r["sentences"]["sent"]] == ["left guy", "man on the left", "right thing"]
    assert list(r["sentences"]["ref"]) == [0, 0, 1] and r["sentences"]["raw"][2].decode() == "RIGHT THING"
    np.testing.assert_array_equal(refcoco.ref_mask(r, 0), rle.polygon_mask([TRI], H, W))
    np.testing.assert_array_equal(
        refcoco.ref_mask(r, 1), rle.polygon_mask([RECT], H, W) | rle.polygon_mask([TRI], H, W)
    )
    t = tfds.data_source("refcoco/refcoco", data_dir=str(tmp_path / "d"), split="testA")[0]
    np.testing.assert_array_equal(refcoco.ref_mask(t, 0), crowd)
    # RefCOCOg reads refs(umd).p from refcocog/
    _refcoco_tree(tmp_path / "coco", np.random.default_rng(5), "refs(umd).p", "refcocog")
    g = rvos.build("refcoco", tmp_path / "coco", tmp_path / "d", config="refcocog")
    assert g.info.splits["train"].num_examples == 1


def test_refcoco_errors_and_safe_unpickling(tmp_path):
    root = tmp_path / "coco"
    _refcoco_tree(root, np.random.default_rng(6))
    with pytest.raises(FileNotFoundError, match=r"refcoco\+/refs\(unc\).p: refs pickle missing"):
        rvos.build("refcoco", root, tmp_path / "d0", config="refcoco_plus")
    with pytest.raises(ValueError, match="config must be one of"):
        rvos.build("refcoco", root, tmp_path / "d1", config="refclef")
    refs_path = root / "refcoco" / "refs(unc).p"

    class Evil:  # a pickle naming a callable global: refused before anything runs
        def __reduce__(self):
            return (print, ("pwned",))

    refs_path.write_bytes(pickle.dumps([Evil()]))
    with pytest.raises(ValueError, match="refusing to load pickle global 'builtins.print'"):
        rvos.build("refcoco", root, tmp_path / "d2", config="refcoco")
    bad = [{"ref_id": 1, "ann_id": 999, "image_id": 1, "category_id": 1, "split": "train", "sentences": []}]
    refs_path.write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(ValueError, match="ref 1: ann_id 999 is not in .*instances.json"):
        rvos.build("refcoco", root, tmp_path / "d3", config="refcoco")
    refs_path.write_bytes(pickle.dumps([], protocol=2))
    with pytest.raises(ValueError, match="no refs"):
        rvos.build("refcoco", root, tmp_path / "d4", config="refcoco")
    _refcoco_tree(root, np.random.default_rng(6))
    (root / "train2014" / "COCO_train2014_000000000002.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="COCO_train2014_000000000002.jpg missing"):
        rvos.build("refcoco", root, tmp_path / "d5", config="refcoco")


# --------------------------------------------------------------------------------- RLE, polygons
# Reference strings: pycocotools 2.0.11, ``mask.encode(np.asfortranarray(m))['counts']`` for the
# masks below, and ``mask.encode(mask.decode(mask.merge(mask.frPyObjects(polys, 20, 24))))`` for the
# polygons.
def _ref_masks():
    yy, xx = np.mgrid[:7, :9]
    a = (((xx * 3 + yy * 5) % 7) < 3).astype(np.uint8)
    b = np.zeros((40, 60), np.uint8)
    b[2:38, 1:55] = 1
    b[10:15, 5:9] = 0
    b[0, 0] = 1
    c = np.zeros((40, 60), np.uint8)
    c[5:30, 30:50] = 1
    c[39, 59] = 1
    return {
        "012000O01110O10N20N20O10OOO01000O011O": a,
        "01Y1S1kN000000TO1?OA1?OA1?OA1?O=" + "0" * 90 + "V6": b,
        "eU1i0?" + "0" * 37 + "Z<XO": c,
    }


def test_rle_codec_matches_pycocotools():
    for counts, m in _ref_masks().items():
        assert rle.rle_encode(m)["counts"] == counts
        np.testing.assert_array_equal(rle.rle_decode({"size": list(m.shape), "counts": counts}), m)
        np.testing.assert_array_equal(rle.rle_decode(_uncompressed_rle(m)), m)
        assert rle.counts_from_string(counts) == _uncompressed_rle(m)["counts"]
    with pytest.raises(ValueError, match="invalid character"):
        rle.rle_decode({"size": [2, 2], "counts": "0 "})


def test_polygons_match_pycocotools_up_to_edge_pixels():
    ref = {
        "rect": ([[2, 3, 14, 3, 14, 11, 2, 11]], "[18<" + "0" * 21 + "U6", 0),
        "tri": ([TRI], "Z14a02M3M3M3MO1O2N1O1O1O1O1O2N1N2Od3", 4),
        "two": ([TRI, [15, 12, 22, 12, 22, 19, 15, 19]], "Z14a02M3M3M3MO1O2N1O1O1O1O1O2ND33KO51J0670000000l0", 4),
    }
    for name, (polys, counts, ndiff) in ref.items():
        want = rle.rle_decode({"size": [20, 24], "counts": counts})
        got = rle.segmentation_mask(polys, 20, 24)
        assert int((got != want).sum()) == ndiff, name
        # the differing pixels are edge pixels: each touches a pixel of the other value
        for y, x in zip(*np.nonzero(got != want)):
            nb = want[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2]
            assert nb.min() != nb.max(), (name, y, x)
