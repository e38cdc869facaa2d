"""The SAMWISE clip sampler (peanut_jax.data.rvos_clips) on tiny built TFDS datasets (32x48 frames),
and its wiring into the samwise training task (batch format equal to the synthetic path's)."""

import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets")

from test_tfds_rvos import _mevis_tree, _refcoco_tree, _ytvos_tree  # noqa: E402

from peanut_jax.data import rvos_clips as rc  # noqa: E402
from peanut_jax.data.referring import SYNTHETIC_BPE_DIR, synthetic_tokenizer  # noqa: E402
from peanut_jax.data.tfds import inpainting, refcoco, rvos  # noqa: E402
from peanut_jax.pipeline.samwise import resize_frames  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("rvos_clips")
    rng = np.random.default_rng(0)
    _ytvos_tree(root / "y", rng)
    rvos.build("ref_youtube_vos", root / "y", root / "d")
    _mevis_tree(root / "m", rng, "train")
    rvos.build("mevis", root / "m", root / "d")
    _refcoco_tree(root / "c", rng)
    rvos.build("refcoco", root / "c", root / "d", config="refcoco")
    return root / "d"


def _source(built, dataset="ref_youtube_vos", **kw):
    kw = {"num_frames": 2, "max_size": 24, "height": 32, "width": 32, "max_tokens": 16, **kw}
    if dataset == "refcoco":
        kw.update(num_frames=1, refcoco_configs=("refcoco",))
    return rc.ClipSource(dataset, built, "train", tokenizer=synthetic_tokenizer(), **kw)


def test_items_one_per_video_expression_start(built):
    # vidA: 3 frames, 2 expressions; vidB: 3 frames, 1 expression; starts every num_frames frames
    s = _source(built, num_frames=2)
    assert s.items.tolist() == [[0, 0, 0], [0, 0, 2], [0, 1, 0], [0, 1, 2], [1, 0, 0], [1, 0, 2]]
    assert len(_source(built, num_frames=8)) == 3 and len(_source(built, num_frames=1)) == 9
    assert s.num_steps(4, 4) == 4 * 6 // 4
    # RefCOCO: one item per train sentence (image 1: refs 1 and 3, three sentences)
    assert _source(built, "refcoco").items.tolist() == [[0, 0, 0], [0, 0, 1], [0, 0, 2]]
    with pytest.raises(ValueError, match="num_frames must be 1 for refcoco"):
        rc.ClipSource("refcoco", built, "train", tokenizer=None, num_frames=2, max_size=24, height=32, width=32)
    with pytest.raises(ValueError, match="max_size=64 must be between 1 and the padded size 32x32"):
        _source(built, max_size=64)
    with pytest.raises(ValueError, match="no split 'valid'"):
        rc.ClipSource("mevis", built, "valid", tokenizer=None, max_size=24, height=32, width=32)
    with pytest.raises(FileNotFoundError, match="refcoco/refcoco_plus is not built"):
        rc.ClipSource("refcoco", built, "train", tokenizer=None, num_frames=1, max_size=24, height=32, width=32)
    with pytest.raises(FileNotFoundError, match="data_dir '/nowhere' is not a folder"):
        rc.ClipSource("mevis", "/nowhere", "train", tokenizer=None)


def test_local_sampling_rule():
    t = 8
    for k in range(40):
        rng = np.random.default_rng(k)
        n = int(rng.integers(20, 60))
        start = int(rng.integers(t, n - t))  # interior: t/2 distinct before, t/2 distinct from start on
        idx = rc.local_indices(rng, start, n, t)
        assert len(set(idx)) == t and idx == sorted(idx)
        assert sum(start - t <= i < start for i in idx) == t // 2
        assert sum(start <= i < start + t for i in idx) == t // 2
    # the last frame: t/2 before, then the start frame, then distinct frames within 2t of it
    idx = rc.local_indices(np.random.default_rng(1), 29, 30, t)
    assert len(set(idx)) == t and 29 in idx and min(idx) >= 29 - 2 * t
    # a video shorter than the clip repeats frames
    idx = rc.local_indices(np.random.default_rng(2), 0, 3, t)
    assert len(idx) == t and set(idx) == {0, 1, 2}
    assert rc.local_indices(np.random.default_rng(3), 5, 9, 1) == [5]


def test_global_sampling_rule():
    t, n, start = 8, 100, 50
    spans = []
    for k in range(40):
        idx = rc.global_indices(np.random.default_rng(k), start, n, t)
        assert len(idx) == t and idx == sorted(idx) and start in idx
        assert any(start - 3 <= i < start for i in idx) and any(start < i <= start + 3 for i in idx)
        spans.append(max(idx) - min(idx))
    assert max(spans) > 4 * t  # frames from the whole video, unlike the local window
    assert rc.global_indices(np.random.default_rng(0), 0, 1, 4) == [0, 0, 0, 0]
    assert rc.global_indices(np.random.default_rng(0), 7, 9, 1) == [7]


def test_train_size_and_nearest_masks():
    assert rc.train_size(720, 1280, 1024) == (576, 1024)
    assert rc.train_size(1280, 720, 1024) == (1024, 576)
    assert rc.train_size(600, 1000, 1024) == (614, 1023)  # official rounding leaves 1023
    assert rc.train_size(500, 500, 1024) == (1024, 1024)
    assert rc.train_size(32, 48, 24) == (16, 24)
    # torch interpolate(mode='nearest') source rows (values from torch 2)
    for n_in, n_out, want in ((7, 5, [0, 1, 2, 4, 5]), (5, 7, [0, 0, 1, 2, 2, 3, 4])):
        m = np.arange(n_in)[None, :, None].repeat(2, axis=2)
        assert rc.resize_masks_nearest(m, (n_out, 2))[0, :, 0].tolist() == want
    m = np.arange(33)[None, None, :]
    assert rc.resize_masks_nearest(m, (1, 20))[0, 0, :12].tolist() == [0, 1, 3, 4, 6, 8, 9, 11, 13, 14, 16, 18]


def test_video_example_content(built):
    s = _source(built, num_frames=2)
    seed = (0, 0, 3, 1)
    item, idx = s.sampled(seed, 3)  # vidA, expression 1, start 2: targets everywhere, no redraw
    assert item == 3 and 2 in idx and len(idx) == 2
    rng = np.random.default_rng([*seed, rc._STREAM])
    assert idx == rc.local_indices(rng, 2, 3, 2)
    ex = s.example(seed, 3)
    rec = tfds_record(built, "ref_youtube_vos", 0)
    frames = resize_frames(inpainting.decode_frames(rec["frames"], idx), (16, 24))
    np.testing.assert_array_equal(ex["frames"][:, :16, :24], frames)
    assert (ex["frames"][:, 16:] == rc.PAD_RGB).all() and (ex["frames"][:, :, 24:] == rc.PAD_RGB).all()
    want = rc.resize_masks_nearest(rvos.target_masks(rec, 1, idx), (16, 24))
    np.testing.assert_array_equal(ex["masks"][:, :16, :24], want)
    assert ex["masks"][:, 16:].sum() == 0 and ex["masks"][:, :, 24:].sum() == 0 and ex["masks"].max() == 1
    ids, pm = synthetic_tokenizer()(["a green blob"], pad_to=16)
    np.testing.assert_array_equal(ex["input_ids"], ids[0])
    np.testing.assert_array_equal(ex["padding_mask"], pm[0])
    # global sampling reads the same item through global_indices
    g = _source(built, num_frames=2, sampling="global")
    rng = np.random.default_rng([*seed, rc._STREAM])
    assert g.sampled(seed, 3) == (3, rc.global_indices(rng, 2, 3, 2))
    # 3-frame clips of a 3-frame video from its first frame: global always repeats the start frame
    # (its neighbour before it is clamped to it), local draws distinct frames first
    loc, glo = _source(built, num_frames=3), _source(built, num_frames=3, sampling="global")
    for k in range(5):
        assert loc.sampled((k, 0, 1, 0), 0)[1][:2] != [0, 0]
        assert glo.sampled((k, 0, 1, 0), 0)[1][:2] == [0, 0]


def tfds_record(data_dir, name, i):
    import tensorflow_datasets as tfds

    return tfds.data_source(name, data_dir=str(data_dir), split="train")[i]


def test_empty_target_is_redrawn(built):
    # MeViS m1, expression 0 (anno 10) is absent from frame 1: item 1 = (expression 0, start 1)
    s = _source(built, "mevis", num_frames=1, sampling="global")
    assert s.items[1].tolist() == [0, 0, 1]
    redrawn = set()
    for k in range(12):
        item, idx = s.sampled((0, 0, k, 0), 1)
        assert item != 1 and rvos.target_masks(tfds_record(built, "mevis", 0), int(s.items[item][1]), idx).any()
        redrawn.add(item)
        np.testing.assert_array_equal(s.example((0, 0, k, 0), 1)["masks"], s.example((0, 0, k, 0), item)["masks"])
    assert len(redrawn) > 1
    assert s.sampled((0, 0, 5, 0), 0) == (0, [0])  # a non-empty target is kept


def test_refcoco_example(built):
    s = _source(built, "refcoco")
    ex = s.example((0, 0, 1, 0), 2)  # "right thing" -> ref 1
    rec = tfds_record(built, "refcoco/refcoco", 0)
    assert ex["frames"].shape == (1, 32, 32, 3) and ex["masks"].shape == (1, 32, 32)
    want = rc.resize_masks_nearest(refcoco.ref_mask(rec, 1)[None], (16, 24))
    np.testing.assert_array_equal(ex["masks"][:, :16, :24], want)
    np.testing.assert_array_equal(ex["input_ids"], synthetic_tokenizer()(["right thing"], pad_to=16)[0][0])


def _configs(data_dir):
    from configs.samwise import get_config

    syn = get_config("test")
    with syn.unlocked():
        syn.data.update(num_frames=2, height=32, width=32, max_size=32, max_tokens=16, batch_size=4)
    off = get_config("official_ytvos")
    with off.unlocked():
        off.data.update(
            data_dir=str(data_dir), num_frames=2, height=32, width=32, max_size=24, max_tokens=16, batch_size=4
        )
        off.data.tokenizer = str(SYNTHETIC_BPE_DIR)
        off.train.num_steps = 6  # 4 epochs x 6 items // 4
    return syn, off


def test_task_batches_format_and_determinism(built):
    from peanut_jax.train import batching
    from peanut_jax.train.tasks import samwise

    syn, off = _configs(built)
    a = next(samwise.train_batches(syn, 0, 0, 1))
    b = next(samwise.train_batches(off, 0, 0, 1))
    assert {k: (v.shape, v.dtype) for k, v in a.items()} == {k: (v.shape, v.dtype) for k, v in b.items()}
    assert b["frames"].shape == (4, 2, 32, 32, 3)
    assert samwise.official_num_steps(off, samwise.open_official_split(batching.config_items(off.data), "train")) == 6
    # a pure function of (seed, step, row): resume and a 2-process split see the same batches
    it = samwise.train_batches(off, 0, 0, 1)
    run = [next(it) for _ in range(3)]
    resumed = next(samwise.train_batches(off, 2, 0, 1))
    for k in run[2]:
        np.testing.assert_array_equal(run[2][k], resumed[k])
    half = next(samwise.train_batches(off, 1, 1, 2))
    np.testing.assert_array_equal(half["masks"], run[1]["masks"][2:])
    assert any((run[0][k] != run[1][k]).any() for k in ("frames", "masks", "input_ids"))
    # every item of an epoch is read once (6 items, batch 4: steps 1 and 2 hold the first 8 positions)
    order = batching.shuffled(6, int(off.seed))
    assert sorted(int(order[i]) for i in range(6)) == list(range(6))
    with off.unlocked():
        off.data.eval_clips = 4
    with pytest.raises(ValueError, match="eval_clips=4: held-out evaluation during training runs on synthetic"):
        next(samwise.eval_batches(off, 0, 1))
    with off.unlocked():
        off.data.eval_clips = 0
    assert list(samwise.eval_batches(off, 0, 1)) == []
    with off.unlocked():
        off.data.data_dir = ""
    with pytest.raises(ValueError, match="config.data.data_dir is required for data.source='ref_youtube_vos'"):
        next(samwise.train_batches(off, 0, 0, 1))
