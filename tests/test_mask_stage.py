"""The SAM 2 mask source and ``infer.py mask`` pieces (peanut_jax.pipeline.mask), tiny random-weight model.

Parsing and validation errors (one line, naming the flag); ``PromptMasks`` equal to the video
predictor's own API (one streamed pass for frame-0 prompts; forward + reverse first pass otherwise);
DAVIS palette round trip; atomic ``run_mask``; memory and compiled shapes independent of the clip length.
"""

from __future__ import annotations

import pathlib
import tracemalloc
import types

import numpy as np
import pytest
from PIL import Image
from test_sam2_predictors import moving_shapes, tiny  # noqa: F401  (the tiny random-weight model fixture)

from peanut_jax.data.masks import read_masks
from peanut_jax.data.video_io import open_video
from peanut_jax.pipeline import mask as M
from peanut_jax.pipeline.sam2 import SAM2VideoPredictor
from peanut_jax.pipeline.sources import ArraySource

S = 64


def info(frames):
    return types.SimpleNamespace(num_frames=len(frames), height=frames.shape[1], width=frames.shape[2], fps=25.0)


@pytest.fixture(scope="module")
def pred(tiny):  # noqa: F811
    return SAM2VideoPredictor(*tiny)


def write_folder(frames, folder: pathlib.Path) -> pathlib.Path:
    folder.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i:05d}.png")
    return folder


def union(logits):
    return (np.asarray(logits) > 0).any(0)


# ------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    "flag, value, match",
    [
        ("--click", "10,20", "expected --click X,Y"),
        ("--click", "10,20@x", "expected --click X,Y"),
        ("--click", "10,20,2@0", "LABEL must be 1 .* or 0"),
        ("--click", "a,b@0", "with numbers"),
        ("--click", "10@0", "a click is X,Y or X,Y,LABEL"),
        ("--click", "10,20@0:0", "object id 0 must be 1..255"),
        ("--box", "1,2,3@0", "a box is 4 numbers"),
        ("--box", "30,2,10,40@0", "x0 < x1 and y0 < y1"),
        ("--box", "1,40,30,40@0", "x0 < x1 and y0 < y1"),
        ("--mask-prompt", "m.png", "expected --mask-prompt PNG@FRAME"),
    ],
)
def test_bad_syntax_is_one_line_naming_the_flag(flag, value, match):
    with pytest.raises(ValueError, match=match) as err:
        M.parse_prompt(flag, value)
    msg = str(err.value)
    assert msg.startswith(f"{flag} {value}: ") and "\n" not in msg


def test_prompts_parse_and_group():
    ps = M.parse_prompts(clicks=["10,20@3", "11.5,21,0@3", "5,5@3:2"], boxes=["1,2,30,40@3"], masks=["dir@x/m.png@0:4"])
    assert ps[0] == M.Prompt("click", 3, 1, xy=(10.0, 20.0), label=1, text="--click 10,20@3")
    assert ps[1].label == 0 and ps[2].obj == 2 and ps[3].box == (1.0, 2.0, 30.0, 40.0)
    assert ps[4].mask == "dir@x/m.png" and (ps[4].frame, ps[4].obj) == (0, 4)
    groups = M.group_prompts(ps)
    assert [(g.frame, g.obj) for g in groups] == [(0, 4), (3, 1), (3, 2)]
    g = groups[1]
    assert g.points == [(10.0, 20.0), (11.5, 21.0)] and g.labels == [1, 0] and g.box is ps[3]


@pytest.mark.parametrize(
    "clicks, boxes, masks, match",
    [
        (["10,10@8"], [], [], r"--click 10,10@8: frame 8 is outside the video \(frames 0..7\)"),
        (["64,10@0"], [], [], "--click 64,10@0: the click is outside the 64x64 frame"),
        (["10,-1@0"], [], [], "--click 10,-1@0: the click is outside"),
        ([], ["0,0,65,10@0"], [], "--box 0,0,65,10@0: the box is outside the 64x64 frame"),
        ([], ["0,0,9,10@0", "1,1,5,5@0"], [], "--box 1,1,5,5@0: object 1 already has a box on frame 0"),
        ([], [], ["small.png@0"], "--mask-prompt small.png@0: the mask is 32x16 but the video is 64x64"),
        ([], [], ["missing.png@0"], "--mask-prompt missing.png@0: mask image .* not found"),
        ([], [], ["notpng.png@0"], "--mask-prompt notpng.png@0: .*cannot read mask image"),
        (["5,5@0"], [], ["ok.png@0"], r"--mask-prompt ok.png@0: a mask prompt replaces .* \(--click 5,5@0\)"),
        ([f"5,5@0:{k}" for k in (1, 2, 3)], [], [], "--click 5,5@0:3: 3 objects but at most max_objects=2"),
    ],
)
def test_bad_prompts_against_the_video(tmp_path, monkeypatch, clicks, boxes, masks, match):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.zeros((16, 32), np.uint8)).save("small.png")
    Image.fromarray(np.full((S, S), 255, np.uint8)).save("ok.png")
    pathlib.Path("notpng.png").write_text("not an image")
    pm = M.PromptMasks(M.parse_prompts(clicks, boxes, masks), max_objects=2)
    with pytest.raises((ValueError, FileNotFoundError), match=match) as err:
        pm.prepare(types.SimpleNamespace(num_frames=8, height=S, width=S))
    assert "\n" not in str(err.value) and pm._predictor is None and pm._model is None  # nothing loaded


# ------------------------------------------------------------------------------------- tracking
def test_frame0_prompts_stream_in_one_pass_equal_to_the_predictor(pred):
    frames = moving_shapes(n=8, s=S, seed=4)
    ps = M.parse_prompts(clicks=["20,40@0", "60,60@0:2", "5,5,0@0:2"], boxes=["30,20,55,45@0:2"])
    pm = M.PromptMasks(ps, predictor=pred)
    pm.prepare(info(frames))
    assert pm.single_pass
    st = pred.init_state(frames)
    pred.add_new_points_or_box(st, 0, 1, points=[[20, 40]], labels=[1])
    pred.add_new_points_or_box(st, 0, 2, points=[[60, 60], [5, 5]], labels=[1, 0], box=[30, 20, 55, 45])
    ref = {f: (ids, lg) for f, ids, lg in pred.propagate_in_video(st)}
    got = list(pm.attach_labels(iter(frames)))
    assert len(got) == 8 and pm._tmp is None  # no first pass, no temporary folder
    for f, (frame, labels) in enumerate(got):
        assert frame is frames[f] or np.array_equal(frame, frames[f])
        assert np.array_equal(labels > 0, union(ref[f][1])), f"frame {f}"
        assert np.array_equal(labels, M.label_map(ref[f][1], ref[f][0])), f"frame {f}"
    assert 0 < np.mean([(lab == 2).mean() for _, lab in got]) < 1 and (got[0][1] == 1).any()
    masks = [m for _, m in pm.attach(iter(frames))]
    assert all(m.dtype == bool and m.shape == (S, S) for m in masks)
    assert all(np.array_equal(m, lab > 0) for m, (_, lab) in zip(masks, got))


def test_later_prompts_track_forward_then_reverse(pred, tmp_path):
    n = 10
    frames = moving_shapes(n=n, s=S, seed=5)
    video = write_folder(frames, tmp_path / "video")
    m = np.zeros((S, S), np.uint8)
    m[40:58, 20:44] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    ps = M.parse_prompts(clicks=["25,40@3"], boxes=["30,20,55,45@6:2"], masks=[f"{tmp_path / 'm.png'}@3:3"])
    pm = M.PromptMasks(ps, predictor=pred, video=open_video(video), workdir=tmp_path)  # the chain's source
    pm.prepare(info(frames))
    assert not pm.single_pass and pm.first_frame == 3
    # the official order through the predictor's API
    st = pred.init_state(frames)
    pred.add_new_points_or_box(st, 3, 1, points=[[25, 40]], labels=[1])
    pred.add_new_mask(st, 3, 3, m > 0)
    pred.add_new_points_or_box(st, 6, 2, box=[30, 20, 55, 45])
    ref = {f: (ids, lg) for f, ids, lg in pred.propagate_in_video(st)}
    assert sorted(ref) == list(range(3, n))
    ref.update({f: (ids, lg) for f, ids, lg in pred.propagate_in_video(st, reverse=True) if f < 3})
    got = list(pm.attach_labels(iter(frames)))
    assert len(got) == n
    for f, (_, labels) in enumerate(got):
        assert np.array_equal(labels, M.label_map(ref[f][1], ref[f][0])), f"frame {f}"
    assert all((labels > 0).any() for _, labels in got[:3])  # the reverse pass reached frame 0
    assert list(tmp_path.glob("peanut_masks_*")) == []  # the first pass's folder is gone


def test_run_mask_palette_round_trip_and_overlay(pred, tmp_path):
    frames = moving_shapes(n=6, s=S, seed=6)
    video = write_folder(frames, tmp_path / "video")
    ps = M.parse_prompts(clicks=["20,40@0", "60,60@2:2"])
    out = M.run_mask(
        video, tmp_path / "masks", ps, predictor=pred, per_object=True, overlay=tmp_path / "o.mp4", progress=False
    )
    pm = M.PromptMasks(ps, predictor=pred, video=frames)
    pm.prepare(info(frames))
    want = [lab for _, lab in pm.attach_labels(iter(frames))]
    files = sorted(out.iterdir())
    assert [f.name for f in files] == [f"{i:05d}.png" for i in range(6)]
    for f, lab in zip(files, want):
        img = Image.open(f)
        assert img.mode == "P" and np.array_equal(np.asarray(img), lab)
        assert np.array_equal(np.asarray(img.getpalette(), np.uint8)[:9].reshape(3, 3), M.davis_palette()[:3])
    assert {1, 2} <= set(np.unique(want))
    assert np.array_equal(read_masks(out, object_ids=[2]), np.stack(want) == 2)  # one object
    assert np.array_equal(read_masks(out), np.stack(want) > 0)  # the union
    assert len(open_video(tmp_path / "o.mp4")) == 6
    # binary union, replacing the folder with --overwrite
    M.run_mask(video, out, ps, predictor=pred, overwrite=True, progress=False)
    imgs = [Image.open(f) for f in sorted(out.iterdir())]
    assert all(i.mode == "L" for i in imgs)
    assert np.array_equal(np.stack([np.asarray(i) for i in imgs]), np.where(np.stack(want) > 0, 255, 0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks", "o.mp4", "video"]


def test_run_mask_writes_nothing_on_bad_input_or_failure(pred, tmp_path, monkeypatch):
    frames = moving_shapes(n=4, s=S, seed=7)
    video = write_folder(frames, tmp_path / "video")
    # a bad prompt: refused before the model loads (the checkpoint does not even exist)
    with pytest.raises(ValueError, match=r"--click 10,10@9: frame 9 is outside the video \(frames 0..3\)"):
        M.run_mask(
            video,
            tmp_path / "masks",
            M.parse_prompts(["10,10@9"]),
            checkpoint="no-such-weights",
            overlay=tmp_path / "o.mp4",
            progress=False,
        )
    with pytest.raises(ValueError, match="--output .*masks.png: give a folder name"):
        M.run_mask(video, tmp_path / "masks.png", M.parse_prompts(["10,10@0"]), predictor=pred, progress=False)
    # a failure mid-way: neither the folder nor the overlay appear, no temporary left behind
    real = pred.track

    def failing(state, frame):
        if state.frames._next >= 2:
            assert not (tmp_path / "masks").exists() and not (tmp_path / "o.mp4").exists()
            raise RuntimeError("boom")
        return real(state, frame)

    monkeypatch.setattr(pred, "track", failing)
    with pytest.raises(RuntimeError, match="boom"):
        M.run_mask(
            video,
            tmp_path / "masks",
            M.parse_prompts(["10,10@0"]),
            predictor=pred,
            overlay=tmp_path / "o.mp4",
            progress=False,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["video"]


def test_memory_and_compiled_shapes_do_not_depend_on_clip_length(pred):
    """The same prompts on 8, 24, 40 and 80 frames, streamed (frame 0 only) and with a first pass
    (a prompt on frame 2): no new compiled shape for a longer clip, and once the predictor's
    bounded state is full (~34 frames) the host allocations do not grow with the clip (one kept
    mask per frame would add 40 x 128 x 128 bytes)."""
    base = moving_shapes(n=8, s=128, seed=8)
    jits = [pred._encode, pred._prompt, pred._track, pred._memenc, pred._to_video]
    for clicks in (["40,80@0", "100,100@0:2"], ["40,80@0", "100,100@2:2"]):
        peaks, sizes = {}, []
        for n in (8, 24, 40, 80, 40):
            frames = base[np.arange(n) % 8]
            pm = M.PromptMasks(M.parse_prompts(clicks), predictor=pred, video=ArraySource(frames))
            pm.prepare(info(frames))
            tracemalloc.start()
            for _ in pm.attach(f for f in frames):
                pass
            peaks[n] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            sizes.append([j._cache_size() for j in jits])
        assert all(s == sizes[0] for s in sizes), (clicks, sizes)
        assert peaks[80] < peaks[40] + 20 * 128 * 128, (clicks, peaks)


def test_load_sam2_through_the_one_door(tiny, tmp_path):  # noqa: F811
    from peanut_jax.checkpoints.export import export_weights, module_kwargs

    module, variables = tiny
    d = export_weights(tmp_path / "sam2_tiny", "sam2", module_kwargs("sam2", module), variables["params"])
    m2, v2 = M.load_sam2(d)
    assert m2.cfg == module.cfg
    leaf = ("sam_mask_decoder", "pred_obj_score_head")
    a, b = variables["params"], v2["params"]
    for k in leaf:
        a, b = a[k], b[k]
    assert all(np.array_equal(np.asarray(a[k]["bias"]), np.asarray(b[k]["bias"])) for k in a)
    other = export_weights(tmp_path / "rife", "rife_hdv3", {}, {"w": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match=r"^--checkpoint-mask .*rife.*: .*not 'sam2'"):
        M.load_sam2(other, flag="--checkpoint-mask")


def test_flags_parse_into_prompts():
    import argparse

    p = argparse.ArgumentParser()
    M.add_arguments(p)
    args = p.parse_args(
        [
            "--click",
            "1,2@0",
            "--click",
            "3,4,0@0:2",
            "--box",
            "1,1,9,9@3",
            "--mask-prompt",
            "m.png@2",
            "--per-object",
            "--overlay",
            "o.mp4",
        ]
    )
    assert M.prompts_from_args(args) == M.parse_prompts(["1,2@0", "3,4,0@0:2"], ["1,1,9,9@3"], ["m.png@2"])
    assert args.sam2_checkpoint == M.DEFAULT_CHECKPOINT and args.per_object and args.overlay == "o.mp4"
    chain = argparse.ArgumentParser()
    chain.add_argument("--overlay")
    M.add_arguments(chain, checkpoint_flag="--checkpoint-mask", outputs=False)
    args = chain.parse_args(["--checkpoint-mask", "sam2.1_hiera_tiny"])
    assert args.sam2_checkpoint == "sam2.1_hiera_tiny" and M.prompts_from_args(args) == []
    with pytest.raises(SystemExit):
        chain.parse_args(["--per-object"])


def test_entry_point_in_sam2_module():
    from peanut_jax.pipeline import sam2

    assert sam2.PromptMasks is M.PromptMasks
    with pytest.raises(AttributeError, match="no attribute 'PromptMask'"):
        sam2.PromptMask  # noqa: B018


def test_infer_mask_command_and_the_chain_with_prompts(tiny, tmp_path, capsys):  # noqa: F811
    """``infer.py mask`` writes the masks the chain's ``--click`` would use: erasing with the prompt equals
    erasing with the written mask folder, byte for byte; bad combinations are one-line errors."""
    from peanut_jax.checkpoints.export import export_weights, module_kwargs
    from peanut_jax.cli import main
    from peanut_jax.data.video_io import read_frames

    module, variables = tiny
    ckpt = export_weights(tmp_path / "sam2_tiny", "sam2", module_kwargs("sam2", module), variables["params"])
    frames = moving_shapes(5, 96)
    src = write_folder(frames, tmp_path / "frames")
    prompt = ["--click", "30,20@0", "--box", "60,10,90,50@0:2"]
    masks = tmp_path / "masks"
    assert (
        main(["mask", "--input", str(src), "--output", str(masks), "--checkpoint", str(ckpt), "--no-progress", *prompt])
        == 0
    )
    written = read_masks(masks)
    assert written.shape == (5, 96, 96) and written.any()
    common = ["erase", "--input", str(src), "--checkpoint", "erase_demo", "--no-progress"]
    assert main([*common, "--masks", str(masks), "--output", str(tmp_path / "a")]) == 0
    assert main([*common, *prompt, "--checkpoint-mask", str(ckpt), "--output", str(tmp_path / "b")]) == 0
    np.testing.assert_array_equal(read_frames(tmp_path / "a"), read_frames(tmp_path / "b"))
    capsys.readouterr()
    assert main([*common, *prompt, "--masks", str(masks), "--output", str(tmp_path / "c")]) == 2
    assert main(["mask", "--input", str(src), "--output", str(tmp_path / "d"), "--checkpoint", str(ckpt)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "error: give either --masks or --click/--box/--mask-prompt, not both",
        "error: give at least one --prompt, --click, --box or --mask-prompt",
    ]
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()
