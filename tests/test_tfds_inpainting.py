"""TFDS inpainting builders (YouTube-VOS / DAVIS layouts) on tiny fake ``manual_dir`` trees, built and
read without TensorFlow, and the E2FGVI task's dataset path on top of them."""

import io
import json
import pathlib
import zipfile

import numpy as np
import pytest
from PIL import Image

tfds = pytest.importorskip("tensorflow_datasets")

from peanut_jax.data.tfds import build, decode_frames, decode_masks  # noqa: E402

H, W = 24, 40


def _jpeg(a) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _frame(rng, value=None):
    if value is not None:
        return np.full((H, W, 3), value, np.uint8)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def _youtube_tree(root, rng):
    """vidA: 6 frames in a folder (train.json lists 6), vidB: 7 frames in a zip (train.json lists 5:
    the first 5 in sorted order are used), test.json: vidA (3 frames) with binary test masks."""
    (root / "JPEGImages" / "vidA").mkdir(parents=True)
    for i in range(6):
        (root / "JPEGImages" / "vidA" / f"{i:05d}.jpg").write_bytes(_jpeg(_frame(rng, 20 * i)))
    with zipfile.ZipFile(root / "JPEGImages" / "vidB.zip", "w") as z:
        for i in reversed(range(7)):  # stored out of order: the reader sorts the names
            z.writestr(f"{i:05d}.jpg", _jpeg(_frame(rng, 30 * i)))
    (root / "train.json").write_text(json.dumps({"vidA": 6, "vidB": 5}))
    (root / "test.json").write_text(json.dumps({"vidA": 3}))
    (root / "test_masks" / "vidA").mkdir(parents=True)
    for i in range(3):
        m = np.zeros((H, W), np.uint8)
        m[4 + i : 10 + i, 5:15] = 255
        Image.fromarray(m).save(root / "test_masks" / "vidA" / f"{i:05d}.png")


def _davis_tree(root, rng):
    pal = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9)
    for split, seqs in (("train", ["bear"]), ("val", ["cows"])):
        for seq in seqs:
            (root / "JPEGImages" / "480p" / seq).mkdir(parents=True)
            (root / "Annotations" / "480p" / seq).mkdir(parents=True)
            for i in range(5):
                (root / "JPEGImages" / "480p" / seq / f"{i:05d}.jpg").write_bytes(_jpeg(_frame(rng)))
                lab = np.zeros((H, W), np.uint8)
                lab[2:8, 3 + i : 9 + i] = 1
                lab[12:20, 20:30] = 2
                img = Image.fromarray(lab, mode="P")
                img.putpalette(pal)
                img.save(root / "Annotations" / "480p" / seq / f"{i:05d}.png")
        (root / "ImageSets" / "2017").mkdir(parents=True, exist_ok=True)
        (root / "ImageSets" / "2017" / f"{split}.txt").write_text("\n".join(seqs) + "\n")


@pytest.fixture(scope="module")
def youtube(tmp_path_factory):
    root = tmp_path_factory.mktemp("ytvos")
    _youtube_tree(root / "manual", np.random.default_rng(0))
    build("youtube_vos_inpainting", root / "manual", root / "data", config="full")
    return root


def _by_id(ds):
    return {
        (r["video_id"].decode() if isinstance(r["video_id"], bytes) else r["video_id"]): r
        for r in (ds[i] for i in range(len(ds)))
    }


def test_youtube_vos_builder_without_tensorflow(youtube):
    ds = tfds.data_source("youtube_vos_inpainting/full", data_dir=str(youtube / "data"), split="train")
    recs = _by_id(ds)
    assert set(recs) == {"vidA", "vidB"}
    a, b = recs["vidA"], recs["vidB"]
    assert (int(a["num_frames"]), int(b["num_frames"])) == (6, 5)
    assert (int(a["height"]), int(a["width"])) == (H, W) and len(a["masks"]) == 0
    # 'full' keeps the source bytes unchanged
    src = (youtube / "manual" / "JPEGImages" / "vidA" / "00002.jpg").read_bytes()
    assert bytes(a["frames"][2]) == src
    # zip members are sorted by name, the first json-count frames are kept
    fr = decode_frames(b["frames"])
    assert fr.shape == (5, H, W, 3) and fr.dtype == np.uint8
    np.testing.assert_allclose(fr.reshape(5, -1).mean(1), [0, 30, 60, 90, 120], atol=3)
    # random access to a subset, resized like E2FGVI (PIL bicubic to (W, H))
    sub = decode_frames(b["frames"], [4, 1], size=(20, 12))
    assert sub.shape == (2, 12, 20, 3) and abs(sub[0].mean() - 120) < 3
    test = _by_id(tfds.data_source("youtube_vos_inpainting/full", data_dir=str(youtube / "data"), split="test"))
    m = decode_masks(test["vidA"]["masks"])
    assert m.shape == (3, H, W) and set(np.unique(m)) == {0, 255}
    assert m[1, 5:11, 5:15].all() and not m[1, :5].any()


def test_resized_config(youtube, tmp_path):
    b = build("youtube_vos_inpainting", youtube / "manual", tmp_path, config="432x240")
    ds = tfds.data_source("youtube_vos_inpainting/432x240", data_dir=str(tmp_path), split="test")
    r = ds[0]
    assert (int(r["height"]), int(r["width"])) == (240, 432)
    assert decode_frames(r["frames"], [0]).shape == (1, 240, 432, 3)
    assert decode_masks(r["masks"]).shape == (3, 240, 432)
    assert b.info.splits["train"].num_examples == 2


def test_building_and_reading_never_import_tensorflow(tmp_path):
    import subprocess
    import sys

    root = tmp_path / "yt"
    _youtube_tree(root, np.random.default_rng(3))
    code = (
        "import sys, tensorflow_datasets as tfds\n"
        "from peanut_jax.data.tfds import build, decode_frames\n"
        f"build('youtube_vos_inpainting', {str(root)!r}, {str(tmp_path / 'data')!r}, config='full')\n"
        f"ds = tfds.data_source('youtube_vos_inpainting/full', data_dir={str(tmp_path / 'data')!r}, split='train')\n"
        "assert decode_frames(ds[0]['frames'], [0]).shape[0] == 1\n"
        "print('TF_IMPORTED' if 'tensorflow' in sys.modules else 'TF_FREE')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(pathlib.Path(__file__).resolve().parents[1]),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "TF_FREE" in out.stdout


def test_davis_builder_palette_masks(tmp_path):
    _davis_tree(tmp_path / "DAVIS", np.random.default_rng(1))
    build("davis_inpainting", tmp_path / "DAVIS", tmp_path / "data", config="full")
    train = _by_id(tfds.data_source("davis_inpainting/full", data_dir=str(tmp_path / "data"), split="train"))
    val = _by_id(tfds.data_source("davis_inpainting/full", data_dir=str(tmp_path / "data"), split="val"))
    assert set(train) == {"bear"} and set(val) == {"cows"}
    m = decode_masks(train["bear"]["masks"], [3])
    assert m.shape == (1, H, W) and set(np.unique(m)) == {0, 1, 2}  # palette indices, not colours
    assert (m[0, 2:8, 6:12] == 1).all() and (m[0, 12:20, 20:30] == 2).all()


def test_builder_errors_name_the_problem(tmp_path):
    root = tmp_path / "yt"
    _youtube_tree(root, np.random.default_rng(2))
    (root / "train.json").write_text(json.dumps({"vidA": 9}))
    with pytest.raises(ValueError, match="vidA.*lists 9 frames, found 6"):
        build("youtube_vos_inpainting", root, tmp_path / "d1", config="full")
    (root / "train.json").write_text(json.dumps({"missing": 3}))
    with pytest.raises(FileNotFoundError, match="missing"):
        build("youtube_vos_inpainting", root, tmp_path / "d2", config="full")
    with pytest.raises(FileNotFoundError, match="manual_dir"):
        build("youtube_vos_inpainting", tmp_path / "nowhere", tmp_path / "d3")
    with pytest.raises(ValueError, match="unknown inpainting dataset"):
        build("kinetics", root, tmp_path / "d4")


def test_e2fgvi_task_reads_the_dataset(youtube):
    from configs.e2fgvi import get_config
    from peanut_jax.train.tasks import e2fgvi as task

    c = get_config("test").unlock()
    c.data.update(
        source="tfds",
        tfds_name="youtube_vos_inpainting/full",
        tfds_data_dir=str(youtube / "data"),
        split="train",
        eval_split="test",
        num_local_frames=2,
        num_ref_frames=1,
        batch_size=2,
        eval_clips=2,
        eval_batch_size=2,
    )
    c.lock()
    it = task.train_batches(c, 0, 0, 1)
    b1, b2 = next(it), next(it)
    assert b1["frames"].shape == (2, 3, 60, 108, 3) and b1["masks"].shape == (2, 3, 60, 108, 1)
    assert "stc_flow" not in b1 and b1["frames"].dtype == np.float32
    assert 0 <= b1["frames"].min() and b1["frames"].max() <= 1 and b1["masks"].sum() > 0
    again = next(iter(task.train_batches(c, 1, 0, 1)))  # step 2, read again by random access
    for k in b2:
        np.testing.assert_array_equal(b2[k], again[k])
    ev = next(iter(task.eval_batches(c, 0, 1)))
    # eval uses the split's own masks (E2FGVI's test masks, dilated) on the first local frames
    assert ev["masks"].shape == (2, 3, 60, 108, 1) and ev["masks"].any()
    with pytest.raises(FileNotFoundError, match="tfds_name"):
        bad = c.unlock()
        bad.data.tfds_name = "davis_inpainting/full"
        next(iter(task.train_batches(bad.lock(), 0, 0, 1)))
