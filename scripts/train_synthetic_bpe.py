#!/usr/bin/env python
"""Train the small byte-level BPE of the synthetic referring sentences.

    python scripts/train_synthetic_bpe.py [--out peanut_jax/assets/synthetic_bpe]

The corpus is every sentence of the referring grammar (``peanut_jax.data.referring.grammar_sentences``)
plus every vocabulary word on its own line (so a prompt that starts with any word, not only "the",
gets whole-word tokens).  Pre-tokenisation is RoBERTa's (byte level, no prefix space) and training
runs until every word is one token, so the result is a few hundred tokens: the 4 special tokens
``<s>`` = 0, ``<pad>`` = 1, ``</s>`` = 2, ``<unk>`` = 3, the 256 byte-level symbols, the merges,
and ``<mask>`` last.  Written as Hugging Face ``vocab.json`` + ``merges.txt`` (what
``peanut_jax.text.RobertaTokenizer.from_files`` reads).  Deterministic: a rerun writes the same bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile

from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from peanut_jax.data.referring import SYNTHETIC_BPE_DIR, grammar_sentences, referring_vocabulary

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # ids 0..3, as fairseq's Dictionary; <mask> goes last
VOCAB_CAP = 4096  # far above what the grammar needs: training stops when every word is one token


def train() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab token -> id, merges in priority order)."""
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_CAP,
        min_frequency=1,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = grammar_sentences() + list(referring_vocabulary())
    tk.train_from_iterator(corpus, trainer=trainer)
    model = json.loads(tk.to_str())["model"]
    vocab = dict(sorted(model["vocab"].items(), key=lambda kv: kv[1]))
    if len(vocab) >= VOCAB_CAP:
        raise RuntimeError(f"BPE training hit the vocabulary cap {VOCAB_CAP}: raise VOCAB_CAP")
    if [vocab[s] for s in SPECIALS] != list(range(len(SPECIALS))):
        raise RuntimeError(f"special tokens did not get ids 0..3: {[vocab.get(s) for s in SPECIALS]}")
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise RuntimeError("trained vocabulary ids are not 0..N-1")
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    vocab["<mask>"] = len(vocab)
    return vocab, merges


def write(out: pathlib.Path, vocab: dict[str, int], merges: list[tuple[str, str]]) -> None:
    """Write vocab.json and merges.txt atomically (temporary files renamed into place)."""
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "vocab.json": json.dumps(vocab, ensure_ascii=False, separators=(",", ":")) + "\n",
        "merges.txt": "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
    }
    for name, text in files.items():
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=out)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; shipped files are world-readable
            os.replace(tmp, out / name)
        except BaseException:
            os.unlink(tmp)
            raise


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=pathlib.Path, default=SYNTHETIC_BPE_DIR, help="output folder (default: %(default)s)")
    args = ap.parse_args(argv)
    vocab, merges = train()
    write(args.out, vocab, merges)
    print(f"wrote {args.out}/vocab.json ({len(vocab)} tokens) and merges.txt ({len(merges)} merges)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
