"""RoBERTa's tokenizer: GPT-2 byte-level BPE with fairseq's RoBERTa ids, on the ``tokenizers`` library.

Two file layouts give the same ids:

* Hugging Face (``roberta-base``): ``vocab.json`` maps each byte-level token straight to its RoBERTa
  id; ``merges.txt`` lists the merges in priority order after a ``#version`` header line.
* fairseq (``roberta.base``): ``encoder.json`` maps each token to its GPT-2 id, ``vocab.bpe`` holds
  the merges (same format as ``merges.txt``), and ``dict.txt`` has one ``<symbol> <count>`` line
  per RoBERTa id, where the symbol is a GPT-2 id.  fairseq's ``Dictionary`` puts ``<s>`` = 0,
  ``<pad>`` = 1, ``</s>`` = 2, ``<unk>`` = 3 first, so the RoBERTa id of line ``i`` (0-based) is
  ``4 + i``; RoBERTa appends ``<mask>`` = ``len(dict) + 4`` (50264).  A GPT-2 token that has no
  ``dict.txt`` line encodes as ``<unk>``, as in fairseq.

Behaviour matches ``transformers.RobertaTokenizerFast.from_pretrained('roberta-base')``: no
prefix space (``"the"`` and ``" the"`` differ), ``<s> ... </s>`` around every caption, the five
special tokens are recognised in the text (``<mask>`` also takes the space before it), no
normalisation, padding with ``<pad>`` = 1, and at most 512 tokens including ``<s>``/``</s>``
(a longer caption is an error, never silently truncated).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["MAX_TOKENS", "RobertaTokenizer", "TokenizerFileError"]

MAX_TOKENS = 512  # RoBERTa-base has 514 learned positions: 512 tokens after padding_idx + 1

_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
_LAYOUT = (
    "put vocab.json + merges.txt (Hugging Face roberta-base) or encoder.json + vocab.bpe + dict.txt "
    "(fairseq roberta.base) in one folder and pass it as --tokenizer DIR (default: the registry's gpt2_bpe, "
    "'python -m peanut_jax.weights fetch gpt2_bpe')"
)
_HINTS = {
    "vocab.json": f"Hugging Face roberta-base's file; {_LAYOUT}",
    "merges.txt": f"Hugging Face roberta-base's file; {_LAYOUT}",
    "encoder.json": f"fairseq's GPT-2 BPE file; {_LAYOUT}",
    "vocab.bpe": f"fairseq's GPT-2 BPE file; {_LAYOUT}",
    "dict.txt": f"fairseq roberta.base's file; {_LAYOUT}",
}


class TokenizerFileError(FileNotFoundError):
    """A vocabulary file is missing, unreadable or malformed (the message names it)."""


def _fail(path, role: str, problem: str) -> TokenizerFileError:
    return TokenizerFileError(f"tokenizer file {role} {problem}: {os.fspath(path)} ({_HINTS[role]})")


def _read_text(path, role: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise _fail(path, role, "not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise _fail(path, role, f"unreadable ({type(e).__name__})") from None


def _read_token_map(path, role: str) -> dict[str, int]:
    try:
        table = json.loads(_read_text(path, role))
    except json.JSONDecodeError as e:
        raise _fail(path, role, f"is not JSON (line {e.lineno})") from None
    if (
        not isinstance(table, dict)
        or not table
        or not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in table.items())
    ):
        raise _fail(path, role, "is not a JSON object of token -> integer id")
    return table


def _read_merges(path, role: str) -> list[tuple[str, str]]:
    lines = _read_text(path, role).split("\n")
    if lines and lines[0].startswith("#version"):
        lines = lines[1:]
    merges = []
    for n, line in enumerate(lines, start=2):
        line = line.rstrip("\r")
        if not line:
            continue
        pair = line.split(" ")
        if len(pair) != 2 or not all(pair):
            raise _fail(path, role, f"has a bad merge on line {n} (want 'left right')")
        merges.append((pair[0], pair[1]))
    if not merges:
        raise _fail(path, role, "has no merges")
    return merges


def _read_dict(path, role: str) -> list[str]:
    """Symbols of a fairseq ``dict.txt`` in file order (line ``i`` is RoBERTa id ``4 + i``)."""
    symbols, seen = [], set()
    for n, line in enumerate(_read_text(path, role).split("\n"), start=1):
        line = line.rstrip()
        if not line:
            continue
        fields = line.rsplit(" ", 1)
        overwrite = False
        if len(fields) == 2 and fields[1] == "#fairseq:overwrite":
            overwrite, fields = True, fields[0].rsplit(" ", 1)
        if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
            raise _fail(path, role, f"has a bad line {n} (want '<symbol> <count>')")
        symbol = fields[0]
        if symbol in seen and not overwrite:
            raise _fail(path, role, f"repeats the symbol {symbol!r} on line {n}")
        seen.add(symbol)
        symbols.append(symbol)
    if not symbols:
        raise _fail(path, role, "is empty")
    return symbols


class RobertaTokenizer:
    """Captions -> RoBERTa token ids, as ``RobertaTokenizerFast('roberta-base')``.

    ``tok(captions, pad_to=None)`` returns ``(ids int32 [B, L], padding_mask bool [B, L])``,
    ``padding_mask`` True at padding; ``L`` is the longest caption (with ``<s>``/``</s>``) or
    ``pad_to``.  Build with :meth:`from_files` (HF layout) or :meth:`from_fairseq`.
    """

    max_tokens = MAX_TOKENS

    def __init__(
        self,
        vocab: dict[str, int],
        merges: Sequence[tuple[str, str]],
        *,
        vocab_file="vocab.json",
        merges_file="merges.txt",
        vocab_role: str = "vocab.json",
        merges_role: str = "merges.txt",
    ):
        """``vocab``: byte-level token -> RoBERTa id, including the five special tokens;
        ``merges``: BPE merges in priority order.  Prefer the ``from_*`` constructors."""
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

        missing = [t for t in _SPECIALS if t not in vocab]
        if missing:
            raise _fail(vocab_file, vocab_role, f"lacks the special tokens {', '.join(missing)}")
        absent = [c for c in pre_tokenizers.ByteLevel.alphabet() if c not in vocab]
        if absent:
            raise _fail(
                vocab_file, vocab_role, f"lacks {len(absent)} of the 256 byte-level base tokens (e.g. {absent[0]!r})"
            )
        try:
            model = models.BPE(dict(vocab), list(merges))
        except Exception as e:  # tokenizers raises a plain Exception for a merge outside the vocabulary
            raise _fail(merges_file, merges_role, f"does not match the vocabulary ({e})") from None
        tk = Tokenizer(model)
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tk.decoder = decoders.ByteLevel()
        self.bos_id, self.pad_id, self.eos_id, self.unk_id, self.mask_id = (vocab[t] for t in _SPECIALS)
        tk.post_processor = processors.RobertaProcessing(
            ("</s>", self.eos_id), ("<s>", self.bos_id), trim_offsets=True, add_prefix_space=False
        )
        tk.add_special_tokens(
            [AddedToken(t, special=True, normalized=False) for t in _SPECIALS[:4]]
            + [AddedToken("<mask>", lstrip=True, special=True, normalized=False)]
        )
        self._tk = tk
        self.vocab_size = max(vocab.values()) + 1

    # -- constructors -----------------------------------------------------------------------------

    @classmethod
    def from_files(cls, vocab_json, merges_txt) -> RobertaTokenizer:
        """Hugging Face layout: ``vocab.json`` (token -> RoBERTa id) and ``merges.txt``."""
        vocab = _read_token_map(vocab_json, "vocab.json")
        merges = _read_merges(merges_txt, "merges.txt")
        return cls(vocab, merges, vocab_file=vocab_json, merges_file=merges_txt)

    @classmethod
    def from_fairseq(cls, encoder_json, vocab_bpe, dict_txt) -> RobertaTokenizer:
        """fairseq layout: ``encoder.json`` (token -> GPT-2 id), ``vocab.bpe`` (merges) and
        ``dict.txt`` (``<gpt2 id> <count>`` per line; RoBERTa id = 4 + line index)."""
        encoder = _read_token_map(encoder_json, "encoder.json")
        merges = _read_merges(vocab_bpe, "vocab.bpe")
        symbols = _read_dict(dict_txt, "dict.txt")
        token_of_gpt2 = {gpt2_id: token for token, gpt2_id in encoder.items()}
        roberta_of_gpt2 = {}
        extra = {}  # non-numeric dict symbols (fairseq's madeupwordNNNN) are tokens of their own
        for i, symbol in enumerate(symbols):
            if symbol.isascii() and symbol.isdigit():
                if int(symbol) in token_of_gpt2:  # an id encoder.json lacks is never produced
                    roberta_of_gpt2.setdefault(int(symbol), 4 + i)
            else:
                extra.setdefault(symbol, 4 + i)
        # GPT-2 tokens without a dict.txt line encode as <unk> = 3, as fairseq's Dictionary does
        vocab = {token: roberta_of_gpt2.get(gpt2_id, 3) for token, gpt2_id in encoder.items()}
        for symbol, rid in extra.items():
            vocab.setdefault(symbol, rid)
        vocab.update({"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": len(symbols) + 4})
        return cls(
            vocab,
            merges,
            vocab_file=encoder_json,
            merges_file=vocab_bpe,
            vocab_role="encoder.json",
            merges_role="vocab.bpe",
        )

    # -- encoding ---------------------------------------------------------------------------------

    def bpe_tokens(self, text: str) -> list[str]:
        """Byte-level BPE token strings of ``text`` without ``<s>``/``</s>`` (e.g. ``['the', 'Ġcat']``)."""
        return self._tk.encode(text, add_special_tokens=False).tokens

    def encode(self, text: str) -> list[int]:
        """RoBERTa ids of one caption, ``<s>`` and ``</s>`` included (no checks, no padding)."""
        return self._tk.encode(text).ids

    def token_offsets(self, text: str) -> list[tuple[int, int] | None]:
        """Character span ``(start, end)`` in ``text`` of each id of :meth:`encode` (``<s>`` and ``</s>``
        included), ``None`` for the special tokens.  Spans exclude the leading space a ``Ġ`` token
        carries, as ``RobertaTokenizerFast(..., return_offsets_mapping=True)`` (``trim_offsets``)."""
        enc = self._tk.encode(text)
        return [None if special else (int(a), int(b)) for (a, b), special in zip(enc.offsets, enc.special_tokens_mask)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of a row of ids; special tokens and padding are dropped."""
        return self._tk.decode([int(i) for i in ids], skip_special_tokens=True)

    def __call__(self, captions: str | Sequence[str], pad_to: int | None = None):
        """``(ids int32 [B, L], padding_mask bool [B, L] True at padding)`` for a list of captions
        (a single string is a batch of one).  ``L`` is the longest caption, or ``pad_to``."""
        if isinstance(captions, str):
            captions = [captions]
        captions = list(captions)
        if not captions:
            raise ValueError("no prompt given: pass at least one caption")
        for i, c in enumerate(captions):
            where = f" (prompt {i + 1} of {len(captions)})" if len(captions) > 1 else ""
            if not isinstance(c, str):
                raise TypeError(f"prompt must be a string, got {type(c).__name__}{where}")
            if not c.strip():
                raise ValueError(f"prompt is empty{where}: say in words which object to segment")
        rows = [e.ids for e in self._tk.encode_batch(captions)]
        for i, row in enumerate(rows):
            if len(row) > self.max_tokens:
                where = f" (prompt {i + 1} of {len(captions)})" if len(captions) > 1 else ""
                raise ValueError(
                    f"prompt is too long{where}: {len(row)} tokens with <s> and </s>, "
                    f"RoBERTa takes at most {self.max_tokens}"
                )
        longest = max(len(r) for r in rows)
        if pad_to is None:
            length = longest
        else:
            length = int(pad_to)
            if length < longest or length > self.max_tokens:
                raise ValueError(
                    f"pad_to={pad_to} must be between the longest prompt ({longest} tokens) and {self.max_tokens}"
                )
        ids = np.full((len(rows), length), self.pad_id, np.int32)
        padding_mask = np.ones((len(rows), length), bool)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            padding_mask[i, : len(row)] = False
        return ids, padding_mask

    def __repr__(self) -> str:
        return f"RobertaTokenizer(vocab_size={self.vocab_size}, max_tokens={self.max_tokens})"
