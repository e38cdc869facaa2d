"""TFDS builders for REDS / Vimeo-90K septuplets / Vimeo-90K triplets on tiny fake manual_dirs."""

import pathlib

import numpy as np
import pytest
from PIL import Image

tfds = pytest.importorskip("tensorflow_datasets")

from peanut_jax.data.degrade import bd_downsample, imresize  # noqa: E402
from peanut_jax.data.tfds import common, vimeo_triplet, vsr  # noqa: E402


def _png(path: pathlib.Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img.astype(np.uint8)).save(path)


def _frame(rng, h, w):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _fake_reds(
    root: pathlib.Path, clips=("000", "001", "002", "011"), frames=3, lr_for=("000", "001"), val_clips=("000",)
):
    rng = np.random.default_rng(0)
    gts = {}
    for c in clips:
        for i in range(frames):
            lr = _frame(rng, 4, 6)
            gt = np.kron(lr, np.ones((4, 4, 1), np.uint8))  # LR = GT[::4, ::4] exactly
            _png(root / "train_sharp" / c / f"{i:08d}.png", gt)
            if c in lr_for:
                _png(root / "train_sharp_bicubic" / "X4" / c / f"{i:08d}.png", lr)
            gts[(c, i)] = gt
    for c in val_clips:
        for i in range(frames):
            gt = _frame(rng, 16, 24)
            _png(root / "val_sharp" / c / f"{i:08d}.png", gt)
            gts[(f"{int(c) + 240:03d}", i)] = gt
    return gts


def test_reds_builder_splits_table_and_lr(tmp_path):
    gts = _fake_reds(tmp_path / "REDS")
    vsr.build("reds_vsr", tmp_path / "REDS", tmp_path / "tfds", config="bi")
    train, meta = vsr.open_split("reds_vsr", tmp_path / "tfds", "train", "bi")
    reds4, _ = vsr.open_split("reds_vsr", tmp_path / "tfds", "reds4", "bi")
    assert vsr.clip_table(meta, "reds4") == [("000", 0, 3), ("011", 3, 3)]
    assert vsr.clip_table(meta, "train") == [("001", 0, 3), ("002", 3, 3), ("240", 6, 3)]
    assert len(train) == 9 and len(reds4) == 6 and meta["degradation"] == "BI" and meta["scale"] == 4
    for src, table in ((train, vsr.clip_table(meta, "train")), (reds4, vsr.clip_table(meta, "reds4"))):
        for clip, start, n in table:
            for i in range(n):
                rec = src[start + i]
                assert rec["clip"].decode() == clip and int(rec["frame"]) == i
                assert int(rec["clip_start"]) == start and int(rec["clip_len"]) == n
                gt = common.decode_png(rec["gt"])
                np.testing.assert_array_equal(gt, gts[(clip, i)])
                lq = common.decode_png(rec["lq"])
                if clip in ("000", "001"):  # official LR files stored as found
                    np.testing.assert_array_equal(lq, gt[::4, ::4])
                else:  # computed: MATLAB imresize of the uint8 GT
                    np.testing.assert_array_equal(lq, imresize(gt, 0.25))


def test_reds_bd_config_and_registration(tmp_path):
    gts = _fake_reds(tmp_path / "REDS", clips=("000", "005"), frames=2, lr_for=(), val_clips=())
    vsr.build("reds_vsr", tmp_path / "REDS", tmp_path / "tfds", config="bd")
    # the builders are registered: plain tfds.data_source finds them
    src = tfds.data_source("reds_vsr/bd", data_dir=str(tmp_path / "tfds"), split="train")
    assert len(src) == 2
    rec = src[1]
    np.testing.assert_array_equal(common.decode_png(rec["lq"]), bd_downsample(gts[("005", 1)], 4))


def test_reds_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="manual_dir"):
        vsr.build("reds_vsr", tmp_path / "nope", tmp_path / "tfds")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="is empty"):
        vsr.build("reds_vsr", tmp_path / "empty", tmp_path / "tfds")
    (tmp_path / "empty" / "README").write_text("x")
    with pytest.raises(FileNotFoundError, match="train_sharp"):
        vsr.build("reds_vsr", tmp_path / "empty", tmp_path / "tfds")
    root = tmp_path / "REDS"
    _fake_reds(root, clips=("000",), frames=2, lr_for=("000",), val_clips=())
    (root / "train_sharp_bicubic" / "X4" / "000" / "00000001.png").unlink()
    with pytest.raises(FileNotFoundError, match="00000001.png"):
        vsr.build("reds_vsr", root, tmp_path / "tfds2")
    _png(root / "train_sharp_bicubic" / "X4" / "000" / "00000001.png", np.zeros((5, 6, 3), np.uint8))
    with pytest.raises(ValueError, match="expected 4x6"):
        vsr.build("reds_vsr", root, tmp_path / "tfds3")
    with pytest.raises(ValueError, match="config must be one of"):
        vsr.build("reds_vsr", root, tmp_path / "tfds4", config="bx")
    with pytest.raises(FileNotFoundError, match="not built"):
        vsr.open_split("reds_vsr", tmp_path, "train", "bi")


def _fake_vimeo(root: pathlib.Path, names, frames: int, h=16, w=24, seed=0):
    rng = np.random.default_rng(seed)
    data = {}
    for n in names:
        data[n] = []
        for i in range(1, frames + 1):
            img = _frame(rng, h, w)
            _png(root / "sequences" / n / f"im{i}.png", img)
            data[n].append(img)
    return data


def test_vimeo_septuplet_builder(tmp_path):
    root = tmp_path / "vimeo_septuplet"
    data = _fake_vimeo(root, ["00001/0001", "00001/0002", "00002/0001"], 7)
    (root / "sep_trainlist.txt").write_text("00001/0001\n00002/0001\n")
    (root / "sep_testlist.txt").write_text("00001/0002\n\n")  # trailing blank line (as the official lists)
    vsr.build("vimeo90k_septuplet", root, tmp_path / "tfds", config="bi")
    train, meta = vsr.open_split("vimeo90k_septuplet", tmp_path / "tfds", "train", "bi")
    test, _ = vsr.open_split("vimeo90k_septuplet", tmp_path / "tfds", "test", "bi")
    assert len(train) == 2 and len(test) == 1
    rec = train[1]
    assert rec["name"].decode() == "00002/0001"
    gt = common.decode_many(rec["gt"])
    lq = common.decode_many(rec["lq"])
    assert gt.shape == (7, 16, 24, 3) and lq.shape == (7, 4, 6, 3)
    np.testing.assert_array_equal(gt, np.stack(data["00002/0001"]))
    np.testing.assert_array_equal(lq[3], imresize(gt[3], 0.25))
    with pytest.raises(ValueError, match="no split 'val'"):
        vsr.open_split("vimeo90k_septuplet", tmp_path / "tfds", "val", "bi")


def test_vimeo_septuplet_uses_precomputed_lr_and_checks_files(tmp_path):
    root = tmp_path / "vimeo_septuplet"
    _fake_vimeo(root, ["00001/0001"], 7)
    (root / "sep_trainlist.txt").write_text("00001/0001\n")
    lrs = [np.full((4, 6, 3), 10 * i, np.uint8) for i in range(7)]
    for i, lr in enumerate(lrs):
        _png(root / "BDx4" / "00001/0001" / f"im{i + 1}.png", lr)
    vsr.build("vimeo90k_septuplet", root, tmp_path / "tfds", config="bd")
    src, _ = vsr.open_split("vimeo90k_septuplet", tmp_path / "tfds", "train", "bd")
    np.testing.assert_array_equal(common.decode_many(src[0]["lq"]), np.stack(lrs))
    (root / "sequences" / "00001/0001" / "im5.png").unlink()
    with pytest.raises(FileNotFoundError, match="im5.png"):
        vsr.build("vimeo90k_septuplet", root, tmp_path / "tfds2", config="bd")


def test_vimeo_triplet_builder_rife_splits(tmp_path):
    root = tmp_path / "vimeo_triplet"
    names = [f"{i // 10 + 1:05d}/{i % 10 + 1:04d}" for i in range(21)]
    data = _fake_vimeo(root, names + ["00009/0001"], 3, h=8, w=12)
    (root / "tri_trainlist.txt").write_text("\n".join(names) + "\n")
    (root / "tri_testlist.txt").write_text("00009/0001\n")
    assert vimeo_triplet.rife_splits(names) == (names[:19], names[19:])  # int(0.95 * 21) = 19
    vsr.build("vimeo90k_triplet", root, tmp_path / "tfds", config=None)
    sizes = {
        s: len(vsr.open_split("vimeo90k_triplet", tmp_path / "tfds", s, None)[0])
        for s in ("train", "validation", "test")
    }
    assert sizes == {"train": 19, "validation": 2, "test": 1}
    val, _ = vsr.open_split("vimeo90k_triplet", tmp_path / "tfds", "validation", None)
    rec = val[1]
    assert rec["name"].decode() == names[20]
    np.testing.assert_array_equal(common.decode_many(rec["frames"]), np.stack(data[names[20]]))
    # a triplet with frames of different sizes is refused, naming it
    _png(root / "sequences" / names[0] / "im2.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match=f"{names[0]}: im2.png is 4x4"):
        vsr.build("vimeo90k_triplet", root, tmp_path / "tfds2", config=None)
