"""Where the RoBERTa tokenizer's files come from: a weight-registry entry of tokenizer files
(default ``gpt2_bpe``: ``python -m peanut_jax.weights fetch gpt2_bpe`` puts fairseq's
``encoder.json`` + ``vocab.bpe`` + ``dict.txt`` in ``$PEANUT_HOME/gpt2_bpe/``) or a folder holding
the Hugging Face ``vocab.json`` + ``merges.txt`` or those three fairseq files.  Used by the text
mask source, the evaluation commands and the SAMWISE training task."""

from __future__ import annotations

import os
import pathlib

__all__ = ["DEFAULT_TOKENIZER", "FAIRSEQ_FILES", "HF_FILES", "LAYOUTS", "load_tokenizer", "tokenizer_dir"]

DEFAULT_TOKENIZER = "gpt2_bpe"
HF_FILES = ("vocab.json", "merges.txt")
FAIRSEQ_FILES = ("encoder.json", "vocab.bpe", "dict.txt")
LAYOUTS = "vocab.json + merges.txt (Hugging Face roberta-base) or encoder.json + vocab.bpe + dict.txt (fairseq)"


def tokenizer_dir(spec=None) -> pathlib.Path:
    """The folder of tokenizer files ``spec`` names (default :data:`DEFAULT_TOKENIZER`): a
    registry name's cached files (``FileNotFoundError`` naming the fetch command when they are not
    in the cache; nothing is downloaded here), or a folder (an existing path or ``PathLike`` wins
    over a registry name)."""
    from peanut_jax.checkpoints import registry

    spec = DEFAULT_TOKENIZER if spec is None else spec
    if isinstance(spec, str) and not registry.looks_like_path(spec) and not pathlib.Path(spec).expanduser().exists():
        if registry.known(spec):
            e = registry.get(spec)
            if e.convert:
                raise ValueError(
                    f"'{e.name}' are {e.model} weights, not tokenizer files; the tokenizer files are "
                    f"'{DEFAULT_TOKENIZER}' (or a folder with {LAYOUTS})"
                )
            d = registry.converted_dir(e.name)
            if d is None:
                offline = " where the network is allowed (PEANUT_OFFLINE is set)" if registry.is_offline() else ""
                raise FileNotFoundError(
                    f"the tokenizer files {', '.join(e.all_files)} ('{e.name}') are not in the cache "
                    f"({registry.cache_path(e)}): run 'python -m peanut_jax.weights fetch {e.name}'{offline}, "
                    f"or pass a folder with {LAYOUTS}"
                )
            return d
        raise FileNotFoundError(
            f"no such folder or registry name; give a folder with {LAYOUTS}, or the registry name "
            f"{DEFAULT_TOKENIZER} ('python -m peanut_jax.weights fetch {DEFAULT_TOKENIZER}')"
        )
    return pathlib.Path(os.fspath(spec)).expanduser()


def load_tokenizer(spec=None, *, flag: str = "--tokenizer"):
    """A :class:`~peanut_jax.text.RobertaTokenizer` from a registry name (default
    :data:`DEFAULT_TOKENIZER`, see :func:`tokenizer_dir`) or a folder of either file layout;
    one-line errors naming ``flag`` and the files to put where."""
    from peanut_jax.text import RobertaTokenizer, TokenizerFileError

    where = f"{flag} {spec}" if spec is not None else f"{flag} (default {DEFAULT_TOKENIZER})"
    try:
        d = tokenizer_dir(spec)
    except (ValueError, FileNotFoundError) as err:
        raise type(err)(f"{where}: {err}") from None
    if not d.is_dir():
        raise FileNotFoundError(f"{where}: no such folder; put {LAYOUTS} in it, or pass {flag} DIR")
    try:
        if all((d / f).is_file() for f in HF_FILES):
            return RobertaTokenizer.from_files(*(d / f for f in HF_FILES))
        if all((d / f).is_file() for f in FAIRSEQ_FILES):
            return RobertaTokenizer.from_fairseq(*(d / f for f in FAIRSEQ_FILES))
    except TokenizerFileError as err:
        raise TokenizerFileError(f"{where}: {err}") from None
    have = [f for f in (*HF_FILES, *FAIRSEQ_FILES) if (d / f).is_file()]
    missing = [f for f in (HF_FILES if not have or have[0] in HF_FILES else FAIRSEQ_FILES) if f not in have]
    raise FileNotFoundError(f"{where}: missing {', '.join(missing)}; the folder needs {LAYOUTS}")
