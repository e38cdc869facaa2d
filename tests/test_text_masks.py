"""The SAMWISE text-prompt mask source and ``--prompt`` on the command line, tiny random-weight model
with a hand-made tokenizer vocabulary (256 byte symbols + a few merges) written in ``tmp_path``.

The source equals the predictor's own logits thresholded (union, per-object labels); sentences in one
pass equal each alone; ``infer.py mask --prompt`` writes those masks; the chain's ``erase --prompt``
equals erasing with the written PNGs; bad input is a one-line error that leaves no output.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
from test_samwise import tiny_variables
from test_text_tokenizer import BYTE_SYMBOL, SPECIALS, TINY_MERGES, write_hf

from peanut_jax.data.masks import read_masks
from peanut_jax.models.samwise import build_samwise
from peanut_jax.pipeline.mask import label_map
from peanut_jax.pipeline.samwise import SAMWISEPredictor
from peanut_jax.pipeline.text_masks import TextPromptMasks, load_tokenizer
from peanut_jax.text import RobertaTokenizer

S = 128  # tiny_test input size
VOCAB = 270  # 4 specials + 256 bytes + 7 merges + <mask>
SENTENCES = ["the cat", "at the"]  # 4 tokens each: one compiled text length


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    tokens = [BYTE_SYMBOL[b] for b in range(256)] + [a + b for a, b in TINY_MERGES]
    vocab = dict(SPECIALS, **{t: 4 + i for i, t in enumerate(tokens)})
    vocab["<mask>"] = 4 + len(tokens)
    root = tmp_path_factory.mktemp("tok")
    write_hf(root, vocab, TINY_MERGES)
    return root


@pytest.fixture(scope="module")
def tok(tok_dir):
    return RobertaTokenizer.from_files(tok_dir / "vocab.json", tok_dir / "merges.txt")


@pytest.fixture(scope="module")
def tiny():
    module = build_samwise("tiny_test", vocab_size=VOCAB)
    v = tiny_variables(module, seed=1)
    return module, v


@pytest.fixture(scope="module")
def video():
    rng = np.random.default_rng(5)
    base = rng.integers(0, 256, (1, 48, 64, 3), dtype=np.uint8)
    return np.clip(base.astype(np.int16) + rng.integers(-20, 21, (4, 48, 64, 3)), 0, 255).astype(np.uint8)


def info(frames):
    return types.SimpleNamespace(num_frames=len(frames), height=frames.shape[1], width=frames.shape[2], fps=25.0)


@pytest.fixture(scope="module")
def pred(tiny, tok):
    return SAMWISEPredictor(*tiny, tok, clip_window=4)


def source_labels(tiny, tok, pred, sentences, frames):
    src = TextPromptMasks(sentences, module=tiny[0], variables=tiny[1], tokenizer=tok, clip_window=4)
    src._predictor = pred  # share the compiled clip function across the tests
    src.prepare(info(frames))
    out = list(src.attach_labels(iter(frames)))
    assert all(f is g or np.array_equal(f, g) for (f, _), g in zip(out, frames))
    return np.stack([lab for _, lab in out])


def test_source_equals_predictor_thresholded(tiny, tok, pred, video):
    """Labels = the predictor's logits > 0 (threshold 0.5), highest logit where objects overlap;
    ``attach`` = their union; every frame is segmented, in clips."""
    want = np.stack([label_map(x, [1, 2]) for _, x in pred.segment_video(iter(video), SENTENCES)])
    got = source_labels(tiny, tok, pred, SENTENCES, video)
    np.testing.assert_array_equal(got, want)
    assert {0, 1, 2} <= set(np.unique(got))  # both objects appear, and background
    src = TextPromptMasks(SENTENCES, module=tiny[0], variables=tiny[1], tokenizer=tok)
    src._predictor = pred
    src.prepare(info(video))
    union = np.stack([m for _, m in src.attach(iter(video))])
    np.testing.assert_array_equal(union, want > 0)
    assert "SAMWISE" in src.describe() and "'the cat'" in src.describe()


def test_sentences_in_one_pass_equal_each_alone(tiny, tok, pred, video):
    both = source_labels(tiny, tok, pred, SENTENCES, video)
    for k, s in enumerate(SENTENCES):
        alone = source_labels(tiny, tok, pred, [s], video) > 0
        obj = both == k + 1
        # where the other object does not claim the pixel, the object is exactly its own mask
        other = (both > 0) & ~obj
        np.testing.assert_array_equal(obj, alone & ~other)


def _export(tiny, path):
    """The tiny weights as an official-layout checkpoint (safetensors of the flat state dict)."""
    from peanut_jax.convert.reader import save_safetensors
    from peanut_jax.convert.samwise import to_state_dict

    sd = {f"module.{k}": np.asarray(v) for k, v in to_state_dict(tiny[1], module=tiny[0]).items()}
    save_safetensors(path, sd)
    return path


def test_cli_mask_prompt_and_erase_prompt_equal_the_png_route(tiny, tok, pred, tok_dir, video, tmp_path, capsys):
    from PIL import Image

    from peanut_jax.cli import main
    from peanut_jax.data.video_io import read_frames

    ckpt = _export(tiny, tmp_path / "samwise_tiny.safetensors")
    src = tmp_path / "frames"
    src.mkdir()
    for i, f in enumerate(video):
        Image.fromarray(f).save(src / f"{i:05d}.png")
    masks = tmp_path / "masks"
    prompts = ["--prompt", SENTENCES[0], "--prompt", SENTENCES[1]]
    args = ["mask", "--input", str(src), "--output", str(masks), "--checkpoint", str(ckpt), "--no-progress"]
    assert main([*args, *prompts, "--tokenizer", str(tok_dir), "--per-object"]) == 0
    labels = np.stack([np.asarray(Image.open(masks / f"{i:05d}.png")) for i in range(len(video))])
    # the CLI's clip window is 8, the fixture's 4: the same single clip of 4 frames
    want = source_labels(tiny, tok, pred, SENTENCES, video)
    np.testing.assert_array_equal(labels, want)
    assert (labels > 0).any() and Image.open(masks / "00000.png").mode == "P"
    np.testing.assert_array_equal(read_masks(masks), want > 0)  # the union, as the chain reads it
    common = ["erase", "--input", str(src), "--checkpoint", "erase_demo", "--no-progress"]
    assert main([*common, "--masks", str(masks), "--output", str(tmp_path / "a")]) == 0
    text = ["--checkpoint-text", str(ckpt), "--tokenizer", str(tok_dir)]
    assert main([*common, *prompts, *text, "--output", str(tmp_path / "b")]) == 0
    np.testing.assert_array_equal(read_frames(tmp_path / "a"), read_frames(tmp_path / "b"))


def test_bad_input_is_one_line_and_writes_nothing(tiny, tok_dir, video, tmp_path, capsys, monkeypatch):
    from PIL import Image

    from peanut_jax.checkpoints.export import export_weights
    from peanut_jax.cli import main

    ckpt = _export(tiny, tmp_path / "samwise_tiny.safetensors")
    other = export_weights(tmp_path / "rife", "rife_hdv3", {}, {"w": np.zeros(3, np.float32)})
    src = tmp_path / "frames"
    src.mkdir()
    for i, f in enumerate(video[:2]):
        Image.fromarray(f).save(src / f"{i:05d}.png")
    empty_tok = tmp_path / "empty_tok"
    empty_tok.mkdir()
    (empty_tok / "vocab.json").write_text("{}")
    monkeypatch.setenv("PEANUT_HOME", str(tmp_path / "home"))
    mask = ["mask", "--input", str(src), "--output", str(tmp_path / "out"), "--no-progress"]
    erase = ["erase", "--input", str(src), "--output", str(tmp_path / "out.mp4"), "--checkpoint", "erase_demo"]
    tk = ["--tokenizer", str(tok_dir)]
    cases = [
        ([*mask, "--prompt", "  ", *tk, "--checkpoint", str(ckpt)], "--prompt '  ': the sentence is empty"),
        ([*mask, "--prompt", "the cat " * 20, *tk, "--checkpoint", str(ckpt)], "tokens with <s> and </s>, at most 38"),
        ([*mask, "--prompt", "the cat " * 300, *tk, "--checkpoint", "nope"], "tokens with <s> and </s>, at most 512"),
        ([*mask, "--prompt", "the cat", "--checkpoint", str(ckpt)], "--tokenizer (default "),
        ([*mask, "--prompt", "the cat", "--tokenizer", str(empty_tok)], "missing merges.txt"),
        ([*mask, "--prompt", "the cat", *tk, "--checkpoint", str(other)], "--checkpoint "),
        ([*mask, "--prompt", "the cat", "--click", "3,3@0", *tk], "give either --prompt or --click"),
        ([*erase, "--prompt", "the cat", "--masks", str(src), *tk], "give either --masks or --prompt"),
        ([*erase, "--prompt", "the cat", "--click", "3,3@0", *tk], "give either --prompt or --click"),
        ([*erase, "--prompt", "the cat", *tk, "--checkpoint-text", str(other)], "--checkpoint-text "),
    ]
    for argv, needle in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], (argv, err)
    assert "put vocab.json + merges.txt" in load_tokenizer_error(tmp_path / "nowhere")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty_tok", "frames", "rife", "samwise_tiny.safetensors"]


def load_tokenizer_error(folder) -> str:
    with pytest.raises(FileNotFoundError) as e:
        load_tokenizer(folder)
    return str(e.value)


def test_entry_point_in_samwise_module():
    from peanut_jax.pipeline import samwise

    assert samwise.TextPromptMasks is TextPromptMasks
    assert TextPromptMasks(["x"]).checkpoint == "samwise_mevis"


def test_bundled_mask_demo_loads_with_its_own_tokenizer():
    """``mask_demo`` (the bundled tiny SAMWISE) resolves through the registry and brings the synthetic
    grammar's tokenizer, so ``--checkpoint-text mask_demo`` needs no --tokenizer; an explicit one wins."""
    from peanut_jax.checkpoints import registry
    from peanut_jax.data.referring import synthetic_tokenizer
    from peanut_jax.pipeline.common import bundled_asset
    from peanut_jax.pipeline.sources import StreamInfo

    if not (bundled_asset("mask_demo") / "model.json").is_file():
        pytest.skip("mask_demo not shipped (scripts/train_demo_weights.sh)")
    assert registry.get("mask_demo").model == "samwise"
    src = TextPromptMasks(["the red circle"], "mask_demo")
    src.prepare(StreamInfo(2, 64, 64, 12.0))
    module, variables = src._model
    assert type(module).__name__ == "SAMWISE" and module.cfg.vocab_size == synthetic_tokenizer().vocab_size
    assert "batch_stats" in variables  # the adapters' BatchNorm statistics were exported with the weights
    assert src._tokenizer("the red circle")[0].tolist() == synthetic_tokenizer()("the red circle")[0].tolist()
    other = TextPromptMasks(["the red circle"], "mask_demo", tokenizer="gpt2_bpe")
    assert other._tokenizer == "gpt2_bpe"
