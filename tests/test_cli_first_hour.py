"""Issue 11: a new user's first hour with ``infer.py`` (items 1-12 and 14).

Every test here failed before the fix it covers.  CLI tests run the real command (a subprocess where
the process itself matters: exit status, tracebacks, signals, forks; ``infer.main`` in this process
otherwise, to share compiled programs) and check the exit code, the one-line message, and that
nothing partial or foreign was touched.  Inputs are tiny (8 frames of 64x64) and the models are the
bundled demo weights, so the whole file compiles each model once.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
from PIL import Image

from peanut_jax.data.video_io import VideoWriter, open_video, read_frames, write_video

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import infer  # noqa: E402

ASSETS = REPO / "peanut_jax" / "assets"
T, H, W = 8, 64, 64
CHUNK = ["--chunk", "8", "--overlap", "0"]  # upscale: one 8-frame window


def frames(t=T, h=H, w=W, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    f = np.stack(
        [np.stack([(xx * 4 + 3 * i) % 256, (yy * 4) % 256, ((xx + yy) * 2 + i) % 256], -1) for i in range(t)]
    ).astype(np.int32)
    return np.clip(f + rng.integers(-3, 4, f.shape), 0, 255).astype(np.uint8)


def masks(t=T, h=H, w=W, value=None):
    m = np.zeros((t, h, w), np.uint8)
    if value is None:
        for i in range(t):
            m[i, 20:36, 10 + i : 26 + i] = 255
    else:
        m[:] = value
    return m


def write_pngs(folder, arrays):
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(folder / f"{i:05d}.png")
    return folder


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("clip")
    write_video(d / "clip.mp4", frames(), fps=25)
    write_pngs(d / "masks", masks())
    return d


def env(**extra):
    e = dict(os.environ, JAX_PLATFORMS="cpu", PEANUT_XLA_CACHE="0", PYTHONWARNINGS="default")
    e.update(extra)
    return e


def run_cli(*args, timeout=300, **extra_env):
    """The real command in a fresh process: (exit status, stdout, stderr)."""
    r = subprocess.run(
        [sys.executable, str(REPO / "infer.py"), *map(str, args)],
        capture_output=True,
        text=True,
        env=env(**extra_env),
        timeout=timeout,
        cwd=REPO,
    )
    return r.returncode, r.stdout, r.stderr


def one_line_error(err: str) -> str:
    """The single ``error:`` line of a failed command (no traceback, nothing else)."""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def main(*args) -> int:
    return infer.main([str(a) for a in args])


def tree(folder: pathlib.Path) -> dict:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


# ================================================================ 1. --overwrite never deletes foreign files
def test_overwrite_replaces_only_frame_folders_this_program_wrote(tmp_path, clip):
    out = tmp_path / "out"
    write_pngs(out, frames(2))
    (out / "notes.txt").write_text("mine")
    (out / "sub").mkdir()
    (out / "sub" / "x.png").write_bytes(b"keep")
    before = tree(out)
    # the library writer refuses before writing anything ...
    with pytest.raises(FileExistsError, match="did not write"):
        VideoWriter(out, overwrite=True)
    # ... and the real command refuses before loading anything, for --output and --frames-out alike
    for flag in ("--output", "--frames-out"):
        extra = ["--output", tmp_path / "v.mp4"] if flag == "--frames-out" else []
        rc, _, err = run_cli(
            "--input",
            clip / "clip.mp4",
            "--stages",
            "upscale",
            "--checkpoint-upscale",
            "upscale_demo",
            flag,
            out,
            *extra,
            "--overwrite",
        )
        assert rc == 2 and "did not write" in one_line_error(err) and flag in err
        assert tree(out) == before and not (tmp_path / "v.mp4").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left either
    # a video name that is a folder is never replaced
    (tmp_path / "d.mp4").mkdir()
    (tmp_path / "d.mp4" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="is a folder"):
        VideoWriter(tmp_path / "d.mp4", overwrite=True)
    # a folder holding only frame files is this program's output: replaced
    ours = write_pngs(tmp_path / "ours", frames(3))
    with VideoWriter(ours, overwrite=True) as w:
        w.write_frames(frames(2, seed=1))
    np.testing.assert_array_equal(read_frames(ours), frames(2, seed=1))
    assert not list(tmp_path.glob(".ours*"))


# ================================================================ 2./3. every command x every checkpoint kind
def _orbax_workdir(path: pathlib.Path, exported: pathlib.Path) -> pathlib.Path:
    """A train.py-style workdir (orbax checkpoint + config.json) holding the exported weights."""
    from peanut_jax.checkpoints.export import load_exported
    from peanut_jax.train.checkpoint import Checkpointer

    name, _, variables, _ = load_exported(exported)
    kwargs = json.loads((exported / "model.json").read_text())["kwargs"]
    with Checkpointer(path / "checkpoints", async_save=False) as ck:
        ck.save(1, {"params": variables["params"], "step": np.int32(1)}, force=True)
    (path / "config.json").write_text(json.dumps({"task": name.split("_")[0], "model": {"name": name, **kwargs}}))
    return path


def _official_file(path: pathlib.Path, exported: pathlib.Path) -> pathlib.Path:
    torch = pytest.importorskip("torch")
    from peanut_jax.checkpoints.export import load_exported
    from peanut_jax.convert import to_official

    name, _, variables, _ = load_exported(exported)
    torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in to_official(name, variables).items()}, path)
    return path


# (command, demo asset, extra args, expected output frames); erase's official-file kind is tested in
# tests/test_erase_pipeline.py (the official converter needs the official E2FGVI-HQ layout, not the tiny one)
COMMANDS = {
    "upscale": ("upscale_demo", CHUNK, T),
    "interpolate": ("interpolate_demo", [], 2 * T - 1),  # no --multi: the documented default 2
    "flow": ("spynet_demo", [], T - 1),
    "erase": ("erase_demo", ["--masks", "MASKS", "--no-progress"], T),
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_runs_with_every_checkpoint_kind(tmp_path, clip, command, capsys):
    asset, extra, n_out = COMMANDS[command]
    kinds = {
        "registry name": asset,
        "exported folder": ASSETS / asset,
        "orbax workdir": _orbax_workdir(tmp_path / "run", ASSETS / asset),
    }
    if command != "erase":
        kinds["official file"] = _official_file(tmp_path / "official.pth", ASSETS / asset)
    extra = [str(clip / "masks") if a == "MASKS" else a for a in extra]
    results = {}
    for kind, ckpt in kinds.items():
        out = tmp_path / f"out_{kind.replace(' ', '_')}"
        rc = main(command, "--input", clip / "clip.mp4", "--output", out, "--checkpoint", ckpt, *extra)
        err = capsys.readouterr().err
        assert rc == 0, f"{command} with a {kind}: {err}"
        results[kind] = read_frames(out)
        assert len(results[kind]) == n_out, kind
    first = next(iter(results.values()))
    for kind, got in results.items():  # the same weights through every door give the same video
        np.testing.assert_array_equal(got, first, err_msg=kind)


def test_interpolate_without_multi_uses_the_default_2(tmp_path, clip, capsys):
    out = tmp_path / "i.mp4"
    assert main("interpolate", "--input", clip / "clip.mp4", "--output", out, "--checkpoint", "interpolate_demo") == 0
    text = capsys.readouterr().out
    assert "@ 25 fps -> 15 frames" in text and "@ 50 fps" in text
    src = open_video(out)
    assert len(src) == 15 and src.fps == 50


# ================================================================ 4. one family check for every stage and kind
def test_chain_refuses_weights_of_another_stage(clip):
    rc, _, err = run_cli(
        "--input",
        clip / "clip.mp4",
        "--masks",
        clip / "masks",
        "--output",
        clip / "no.mp4",
        "--checkpoint-erase",
        ASSETS / "upscale_demo",
    )
    line = one_line_error(err)
    assert rc == 2 and "--checkpoint-erase" in line and "holds weights of model 'basicvsr_pp'" in line
    assert not (clip / "no.mp4").exists()


@pytest.mark.parametrize(
    "stage,spec,got",
    [
        ("upscale", "interpolate_demo", "rife"),
        ("interpolate", ASSETS / "erase_demo", "e2fgvi_hq"),
        ("erase", "spynet_demo", "spynet"),
    ],
)
def test_family_check_names_the_flag(tmp_path, clip, stage, spec, got, capsys):
    args = [
        "--input",
        clip / "clip.mp4",
        "--output",
        tmp_path / "o.mp4",
        "--stages",
        stage,
        f"--checkpoint-{stage}",
        spec,
    ] + (["--masks", clip / "masks"] if stage == "erase" else [])
    assert main(*args) == 2
    err = capsys.readouterr().err
    assert f"--checkpoint-{stage}" in err and f"'{got}'" in err and not (tmp_path / "o.mp4").exists()


# ================================================================ 5. registry errors: one line, what to do
def test_readme_chain_command_without_official_weights_says_what_to_do(tmp_path, clip):
    rc, _, err = run_cli(
        "--input",
        clip / "clip.mp4",
        "--masks",
        clip / "masks",
        "--output",
        tmp_path / "out.mp4",
        "--upscale",
        "4",
        "--interpolate",
        "2",
        "--side-by-side",
        tmp_path / "before_after.mp4",
        PEANUT_HOME=str(tmp_path / "home"),
    )
    line = one_line_error(err)
    assert rc == 2 and "python -m peanut_jax.weights import e2fgvi_hq FILE" in line
    assert "--checkpoint-erase erase_demo" in line
    assert {p.name for p in tmp_path.iterdir()} <= {"home"}  # no output, no temporary


def test_offline_registry_error_is_one_line(tmp_path, clip, capsys, monkeypatch):
    monkeypatch.setenv("PEANUT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PEANUT_OFFLINE", "1")
    assert (
        main("upscale", "--input", clip / "clip.mp4", "--output", tmp_path / "o.mp4", "--checkpoint", "basicvsr_pp")
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "PEANUT_OFFLINE" in err and "--checkpoint upscale_demo" in err


# ================================================================ 6. output checked before loading anything
@pytest.mark.parametrize("command", ["erase", "upscale", "interpolate", "flow"])
def test_output_location_is_checked_before_loading(tmp_path, clip, command, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    extra = ["--masks", clip / "masks"] if command == "erase" else []
    missing = tmp_path / "missing.pth"  # would fail at loading: the output must fail first
    try:
        if not os.access(ro, os.W_OK):  # (root writes into read-only folders: nothing to check then)
            assert (
                main(command, "--input", clip / "clip.mp4", "--output", ro / "o.mp4", "--checkpoint", missing, *extra)
                == 2
            )
            assert "not writable" in capsys.readouterr().err
    finally:
        ro.chmod(0o755)
    assert (
        main(
            command,
            "--input",
            clip / "clip.mp4",
            "--output",
            clip / "clip.mp4",
            "--overwrite",
            "--checkpoint",
            missing,
            *extra,
        )
        == 2
    )
    assert "is the input itself" in capsys.readouterr().err
    assert (
        main(
            command,
            "--input",
            clip / "clip.mp4",
            "--output",
            tmp_path / "no" / "o.mp4",
            "--checkpoint",
            missing,
            *extra,
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err


# ================================================================ 7. odd sizes: exact output size, WxH summary
def test_odd_frame_size_is_kept_and_reported_wxh(tmp_path):
    from peanut_jax import pipeline as R

    class Invert(R.Stage):
        name, needs_masks = "erase", True

        def __call__(self, items, info):
            for fr in items:
                yield fr.replace(image=np.where(fr.mask[..., None], 255 - fr.image, fr.image), mask=None)

    odd = frames(4, 77, 101)
    s = R.Chain([Invert()]).run(
        R.ArraySource(odd), tmp_path / "o.mp4", R.ArrayMasks(masks(4, 77, 101)), progress=False, warmup=False
    )
    got = read_frames(tmp_path / "o.mp4")
    assert got.shape == (4, 77, 101, 3)
    assert "4 frames 101x77 @ 25 fps -> 4 frames 101x77 (WxH)" in s.format()


# ================================================================ 8. messages name the flags of the command
def test_error_messages_name_the_commands_flags(tmp_path, clip, capsys):
    small = write_pngs(tmp_path / "small_masks", masks(T, 32, 32))
    assert (
        main(
            "--input",
            clip / "clip.mp4",
            "--masks",
            small,
            "--output",
            tmp_path / "o.mp4",
            "--checkpoint-erase",
            "erase_demo",
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "--resize-masks" in err and "resize=True" not in err and "32x32" in err
    assert (
        main(
            "--input",
            clip / "clip.mp4",
            "--masks",
            clip / "masks",
            "--output",
            tmp_path / "o.mp4",
            "--checkpoint-erase",
            "erase_demo",
            "--erase-size",
            "20x40",
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "--erase-size" in err and "--size" not in err.replace("--erase-size", "")
    for flag in ("--interpolate", "--multi"):  # --multi: the old spelling, a hidden alias of --interpolate
        assert (
            main(
                "interpolate",
                "--input",
                clip / "clip.mp4",
                "--output",
                tmp_path / "o.mp4",
                "--checkpoint",
                "interpolate_demo",
                flag,
                "3",
            )
            == 2
        )
        err = capsys.readouterr().err
        assert "--interpolate 3" in err and "multi=" not in err and "IFNet(timestep_input" not in err
    assert (
        main(
            "--input",
            clip / "clip.mp4",
            "--output",
            tmp_path / "o.mp4",
            "--stages",
            "interpolate",
            "--interpolate",
            "3",
            "--checkpoint-interpolate",
            "interpolate_demo",
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "--interpolate 3" in err and "--multi" not in err and "multi=" not in err
    assert not (tmp_path / "o.mp4").exists()


# ================================================================ 9. a cut video is reported as truncated
@pytest.fixture(scope="module")
def cut_video(tmp_path_factory):
    d = tmp_path_factory.mktemp("cut")
    rng = np.random.default_rng(0)
    write_video(d / "full.mp4", rng.integers(0, 256, (40, 64, 64, 3), dtype=np.uint8), fps=25)
    data = (d / "full.mp4").read_bytes()
    (d / "cut.mp4").write_bytes(data[: len(data) // 2])
    write_pngs(d / "masks", masks(40))
    return d


def test_truncated_video_is_reported_as_truncated(cut_video):
    assert len(open_video(cut_video / "full.mp4")) == 40
    with pytest.raises(ValueError, match=r"truncated or damaged: only \d+ of the 40 frames"):
        len(open_video(cut_video / "cut.mp4"))
    rc, _, err = run_cli(
        "--input",
        cut_video / "cut.mp4",
        "--masks",
        cut_video / "masks",
        "--output",
        cut_video / "o.mp4",
        "--checkpoint-erase",
        "erase_demo",
    )
    line = one_line_error(err)
    assert rc == 2 and "truncated" in line and "mask" not in line and not (cut_video / "o.mp4").exists()


# ================================================================ 10. all-white / all-black masks
@pytest.mark.parametrize("value,says", [(255, "warning: every mask covers the whole frame"), (0, "nothing is erased")])
def test_degenerate_mask_sets_are_reported(tmp_path, clip, value, says, capsys):
    from peanut_jax import pipeline as R

    class Copy(R.Stage):
        name, needs_masks = "erase", True

        def __call__(self, items, info):
            for fr in items:
                yield fr.replace(mask=None)

    R.Chain([Copy()]).run(
        R.ArraySource(frames()), tmp_path / "c.mp4", R.ArrayMasks(masks(value=value)), progress=False, warmup=False
    )
    assert says in capsys.readouterr().err
    # the erase command (the demo model, compiled by the matrix test) says the same
    m = write_pngs(tmp_path / "m", masks(value=value))
    assert (
        main(
            "erase",
            "--input",
            clip / "clip.mp4",
            "--masks",
            m,
            "--output",
            tmp_path / "e.mp4",
            "--checkpoint",
            "erase_demo",
            "--no-progress",
        )
        == 0
    )
    assert capsys.readouterr().err.count(says) == 1


# ================================================================ 11. no fork after JAX's threads exist
def test_reading_videos_does_not_fork_the_jax_process(clip):
    import jax

    jax.numpy.zeros(1).block_until_ready()  # JAX's threads exist
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        src = open_video(clip / "clip.mp4")
        assert len(src) == T and len(list(src)) == T
        write_video(clip / "copy.mp4", frames(2), fps=5, overwrite=True)
    assert not [w for w in caught if "fork" in str(w.message)], [str(w.message) for w in caught]


# ================================================================ 12. Ctrl-C while compiling exits promptly
def test_ctrl_c_during_compilation_exits_within_seconds(tmp_path, clip):
    out = tmp_path / "o.mp4"
    p = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "infer.py"),
            "upscale",
            "--input",
            str(clip / "clip.mp4"),
            "--output",
            str(out),
            "--checkpoint",
            "upscale_demo",
            *CHUNK,
        ],
        stderr=subprocess.PIPE,
        env=env(),
        cwd=REPO,
    )
    fd, seen, t0 = p.stderr.fileno(), b"", time.monotonic()
    os.set_blocking(fd, False)
    started = None  # the progress bar is up: the model is loaded, its compilation starts now
    while b"compiling upscale (" not in seen and time.monotonic() - t0 < 60 and p.poll() is None:
        time.sleep(0.1)
        try:
            seen += os.read(fd, 1 << 16)
        except BlockingIOError:
            pass
        if started is None and b"0/8" in seen:
            started = time.monotonic()
        if started is not None and time.monotonic() - started > 20:  # (no note: interrupt anyway)
            break
    t_int = time.monotonic()
    p.send_signal(signal.SIGINT)
    rc = p.wait(timeout=120)
    waited = time.monotonic() - t_int
    os.set_blocking(fd, True)
    err = (seen + p.stderr.read()).decode(errors="replace")
    assert rc == 130 and waited < 8, (rc, waited, err)
    assert err.count("error") == 1 and "error: interrupted; no partial output was kept\n" in err, err
    assert "Traceback" not in err and "os.fork()" not in err  # item 11 too
    assert list(tmp_path.iterdir()) == []
    assert "compiling upscale (" in err  # item 14: the first run says what it compiles, once


# ================================================================ 14. discoverability
def test_demo_weights_are_registry_names(capsys):
    from peanut_jax.checkpoints import download, registry
    from peanut_jax.weights import main as weights_main

    assert weights_main(["list"]) == 0
    listing = capsys.readouterr().out
    for name in ("erase_demo", "upscale_demo", "interpolate_demo", "spynet_demo"):
        assert name in listing
        assert download.resolve_checkpoint(name) == ASSETS / name
        assert registry.get(name).bundled_path == ASSETS / name


def test_readme_runs_ones_own_video_offline_and_links_nothing_a_clone_lacks():
    readme = (REPO / "README.md").read_text()
    assert "--checkpoint-erase erase_demo" in readme and "PEANUT_OFFLINE=1" in readme
    for line in readme.splitlines():
        if "../shared" in line:
            assert "development" in line, line
    for target in ("peanut_demo.mp4", "peanut_demo_before_after.mp4", "flow.mp4"):
        r = subprocess.run(["git", "check-ignore", "-q", target], cwd=REPO)
        assert r.returncode == 0, f"{target} is not git-ignored"
