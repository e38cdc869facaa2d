"""Training batches built in grain worker processes (``config.train.data_workers``): bit-identical to the
in-process batches, exact on resume, per-process rows unchanged, failing examples named, and workers that
never pick an accelerator.  The data: the E2FGVI task on a tiny ``youtube_vos_inpainting`` dataset (each
test that starts workers costs a process spawn, a few seconds)."""

import io
import json
import multiprocessing
import time

import numpy as np
import pytest
from PIL import Image

tfds = pytest.importorskip("tensorflow_datasets")
pytest.importorskip("grain")

from configs.e2fgvi import get_config  # noqa: E402
from peanut_jax.train import batching  # noqa: E402
from peanut_jax.train.tasks import e2fgvi as task  # noqa: E402

STEPS = 6


def _jpeg(a) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Three videos of 7-9 random 24x40 JPEG frames, built as ``youtube_vos_inpainting/full``."""
    from peanut_jax.data.tfds import build

    root = tmp_path_factory.mktemp("ytvos")
    rng = np.random.default_rng(0)
    counts = {}
    for v, n in enumerate((7, 8, 9)):
        d = root / "manual" / "JPEGImages" / f"vid{v}"
        d.mkdir(parents=True)
        for i in range(n):
            (d / f"{i:05d}.jpg").write_bytes(_jpeg(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)))
        counts[f"vid{v}"] = n
    (root / "manual" / "train.json").write_text(json.dumps(counts))
    build("youtube_vos_inpainting", root / "manual", root / "data", config="full")
    return root / "data"


def _config(data_dir, workers=0, batch_size=2):
    c = get_config("test").unlock()
    c.data.update(
        source="tfds",
        tfds_name="youtube_vos_inpainting/full",
        tfds_data_dir=str(data_dir),
        split="train",
        num_local_frames=2,
        num_ref_frames=1,
        batch_size=batch_size,
    )
    c.seed = 3  # not 0: a worker that lost the seed would still pass with the default
    c.train.data_workers = workers
    return c.lock()


def _take(config, start, n, process_index=0, process_count=1):
    """``n`` batches from ``start``; the generator is closed (workers stopped) before returning."""
    it = task.train_batches(config, start, process_index, process_count)
    try:
        return [next(it) for _ in range(n)]
    finally:
        it.close()


def _assert_same(got, want):
    assert len(got) == len(want)
    for s, (g, w) in enumerate(zip(got, want)):
        assert sorted(g) == sorted(w), s
        for k in w:
            assert type(g[k]) is np.ndarray and g[k].dtype == w[k].dtype and g[k].shape == w[k].shape, (s, k)
            assert g[k].tobytes() == w[k].tobytes(), f"batch {s} key {k} differs"


@pytest.fixture(scope="module")
def reference(data_dir):
    """Steps 1..STEPS built in this process (``data_workers=0``, today's path)."""
    return _take(_config(data_dir, 0), 0, STEPS)


def test_workers_match_in_process_bit_for_bit_and_stop(data_dir, reference):
    batches = _take(_config(data_dir, workers=2), 0, STEPS)
    _assert_same(batches, reference)
    assert not any(np.array_equal(reference[0]["frames"], b["frames"]) for b in reference[1:])  # steps differ
    t0 = time.perf_counter()
    while multiprocessing.active_children() and time.perf_counter() - t0 < 30:
        time.sleep(0.05)
    assert not multiprocessing.active_children(), "worker processes left running after close()"


def test_resume_with_workers_gives_the_uninterrupted_batches(data_dir, reference):
    k = 2
    _assert_same(_take(_config(data_dir, workers=1), k, STEPS - k), reference[k:])


def test_process_rows_unchanged_with_workers(data_dir):
    whole = _take(_config(data_dir, 0, batch_size=4), 0, 3)
    parts = [_take(_config(data_dir, 0, batch_size=4), 0, 3, p, 2) for p in (0, 1)]
    for s in range(3):
        for key in whole[s]:
            np.testing.assert_array_equal(np.concatenate([parts[0][s][key], parts[1][s][key]]), whole[s][key])
    _assert_same(_take(_config(data_dir, workers=1, batch_size=4), 0, 3, 1, 2), parts[1])


def _failing_example(seed, item):
    """Step 4 row 1 fails; every example reports the worker's ``jax_platforms`` setting."""
    import jax

    if seed[2] == 4 and seed[3] == 1:
        raise ValueError(f"record {item} is broken")
    return {"step": np.int32(seed[2]), "cpu_only": np.bool_(jax.config.jax_platforms == "cpu")}


@pytest.mark.parametrize("workers", [0, 2])
def test_a_failing_example_is_named(workers, monkeypatch):
    # workers inherit this environment: without JAX_PLATFORMS only the worker set-up keeps them on CPU
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    c = _config("", workers).unlock()
    c.data.batch_size = 2
    it = batching.train_batches(c.lock(), 0, 0, 1, _failing_example, num_items=5)
    got = [next(it) for _ in range(3)]
    assert [b["step"].tolist() for b in got] == [[1, 1], [2, 2], [3, 3]]
    if workers:
        assert all(b["cpu_only"].all() for b in got[1:]), "a worker may initialise an accelerator"
    item = int(batching.shuffled(5, int(c.seed))[3 * 2 + 1])
    with pytest.raises(ValueError) as info:
        next(it)
    assert str(info.value) == f"training example of step 4, row 1 (item {item}): record {item} is broken"
    it.close()


def test_data_workers_must_be_a_count(data_dir):
    c = _config(data_dir).unlock()
    c.train.data_workers = -1
    with pytest.raises(ValueError, match="config.train.data_workers must be an integer >= 0, got -1"):
        next(task.train_batches(c.lock(), 0, 0, 1))
    assert batching.data_workers(get_config("test")) == batching.DEFAULT_DATA_WORKERS
