"""Verb tokens of a referring expression, for SAMWISE's motion prompt (host side, numpy out).

Official rule (``SAMWISE.extract_motion_prompts``): the caption goes through spaCy
``en_core_web_sm``; a RoBERTa token other than ``<s>``/``</s>`` is marked when its character span
``(start, end)`` (``RobertaTokenizerFast`` offsets, leading space trimmed) lies inside a spaCy token
whose ``pos_ == 'VERB'`` (``token.idx <= start`` and ``token.idx + len(token.text) >= end``).  So
every BPE piece of a verb is marked; auxiliaries (``pos_ == 'AUX'``: "is", "has been", ...) are not.
The model then uses the first marked token of each caption (``SAMWISE`` module docstring).

Backends (:class:`VerbSelector`):

* ``"spacy"``: the official tagger (``spacy`` with the ``en_core_web_sm`` model installed);
* ``"wordlist"``: a built-in English list (:data:`VERB_BASES` with regular ``-s``/``-ing``/``-ed``
  forms, :data:`IRREGULAR_FORMS`), context-free, so an approximation of the tagger: the bare and
  ``-s`` forms of :data:`NOUN_LIKE` bases ("duck", "fly", "open", ...) are not taken as verbs,
  :data:`NOT_VERBS` ("building", "parking", ...) are never verbs, forms of "be"/"have"/"do" and modals
  are never verbs (spaCy tags the auxiliary uses AUX; it does tag a main-verb "has" VERB);
* ``"auto"`` (default): spaCy when it and its model load, else the word list.

:func:`verb_token_mask` maps the verb words to token positions with any tokenizer that has
``token_offsets(text)`` (:meth:`peanut_jax.text.RobertaTokenizer.token_offsets`).

Padding differs from the official batched call, which also marks ``<pad>`` positions (offsets
(0, 0)) when the caption's first word is a verb; those come after the real tokens, so the first
marked token, the only one used, is the same.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

__all__ = [
    "IRREGULAR_FORMS",
    "NOT_VERBS",
    "NOUN_LIKE",
    "VERB_BASES",
    "VerbSelector",
    "is_listed_verb",
    "verb_token_mask",
]

# Base forms of verbs common in referring expressions of videos (motion, posture, interaction).
VERB_BASES = frozenset(
    """
    accelerate approach appear arrive attack back bark bend bite blow bounce bow break bring brush
    build carry catch chase cheer chew circle clap clean climb close collide come cook crawl cross
    cry cut dance dash descend dig disappear dive drag draw drink drive drop duck eat emerge enter
    escape exit fall feed fetch fight fill float flap flee flip fly follow gallop gather get give
    glide go grab graze greet grip guide hang head hide hit hold hop hover hug hunt hurry jog join
    jump kick kiss kneel knock land laugh lay lead lean leap leave lick lie lift look lower march
    meet move nod open overtake paddle paint park pass peck perch pet pick place play point pour
    pull push put race raise reach rest return reverse ride rise roll rotate row rub run rush sail
    scratch see shake shift shoot show sing sit skate ski skip sleep slide slip smell smile sniff
    soar speak spin splash sprint squat stand stare start stay steer step stomp stop stretch stroke
    surf sway swim swing take talk tap throw tilt toss touch trot try tumble turn twist use wag
    wait walk wander watch wave wear whirl win wipe
    """.split()
)

# Bases whose bare and -s forms are usually not verbs in captions ("a duck", "two flies", "open door").
NOUN_LIKE = frozenset(
    """
    back bow break circle close cross cry dash drink duck fall fly head land lower open paint park
    pass pet place point race rest row show skate ski slide step stroke swing tap watch wave
    """.split()
)

# Inflected forms that are nouns or adjectives far more often than verbs in captions.
NOT_VERBS = frozenset(
    """
    building buildings painting paintings drawing drawings parking landing setting wedding ceiling
    clothing seed seeds left
    """.split()
)

# Irregular past / participle / -ing forms of the bases above ("left" is excluded: "on the left";
# so are forms that are mostly nouns: "bit", "dove", "rose").
IRREGULAR_FORMS = frozenset(
    """
    ate eaten bent bitten blew blown broke broken brought built came caught drew drawn drank drove
    driven dug fed fell fallen fled flew flown fought gave given got gotten gone went hung held hid
    hidden knelt laid lain lay led leant leapt lying met ran ridden rode risen sang saw seen shook
    shaken shot slept slid spun spoke spoken stood swam swung taken took threw thrown wore worn won
    """.split()
)

_WORD = re.compile(r"[A-Za-z]+")


def _stems(word: str) -> list[str]:
    """Candidate base forms of a regular -s / -ing / -ed form ('walks', 'running', 'carried', ...)."""
    out = []
    if word.endswith("ing") and len(word) > 4:
        s = word[:-3]
        out += [s, s + "e"]
        if len(s) > 2 and s[-1] == s[-2]:
            out.append(s[:-1])  # running -> run
    elif word.endswith("ed") and len(word) > 3:
        s = word[:-2]
        out += [s, word[:-1]]  # walked -> walk, moved -> move
        if s.endswith("i"):
            out.append(s[:-1] + "y")  # carried -> carry
        if len(s) > 2 and s[-1] == s[-2]:
            out.append(s[:-1])  # stopped -> stop
    elif word.endswith("s") and len(word) > 2 and not word.endswith("ss"):
        out.append(word[:-1])  # walks -> walk, moves -> move
        if word.endswith("es"):
            out.append(word[:-2])  # watches -> watch, goes -> go
            if word.endswith("ies"):
                out.append(word[:-3] + "y")  # carries -> carry
    return out


def is_listed_verb(word: str) -> bool:
    """Whether ``word`` is a verb by the built-in word list (case-insensitive; see the module docstring)."""
    w = word.lower()
    if w in NOT_VERBS:
        return False
    if w in IRREGULAR_FORMS:
        return True
    if w in VERB_BASES:
        return w not in NOUN_LIKE
    third_person = w.endswith("s") and not w.endswith(("ing", "ed"))
    for base in _stems(w):
        if base in VERB_BASES and not (third_person and base in NOUN_LIKE):
            return True
    return False


class VerbSelector:
    """``VerbSelector(backend='auto')``: ``spans(text)`` -> character spans ``(start, end)`` of its verbs.

    ``backend``: ``'spacy'`` (``en_core_web_sm``, ``pos_ == 'VERB'``, the official tagger; an error
    if spaCy or the model is missing), ``'wordlist'`` (built in) or ``'auto'`` (spaCy when it loads,
    else the word list).  ``self.backend`` says which one runs."""

    def __init__(self, backend: str = "auto", spacy_model: str = "en_core_web_sm"):
        if backend not in ("auto", "spacy", "wordlist"):
            raise ValueError(f"verbs: backend must be 'auto', 'spacy' or 'wordlist', got {backend!r}")
        self._nlp = None
        if backend in ("auto", "spacy"):
            try:
                import spacy

                self._nlp = spacy.load(spacy_model)
            except (ImportError, OSError) as e:
                if backend == "spacy":
                    raise RuntimeError(
                        f"verbs: backend 'spacy' needs spaCy and its {spacy_model} model "
                        f"(pip install spacy && python -m spacy download {spacy_model}): {e}"
                    ) from None
        self.backend = "spacy" if self._nlp is not None else "wordlist"

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans of the verbs of ``text``."""
        if self._nlp is not None:
            return [(t.idx, t.idx + len(t.text)) for t in self._nlp(text) if t.pos_ == "VERB"]
        return [m.span() for m in _WORD.finditer(text) if is_listed_verb(m.group())]

    def words(self, text: str) -> list[str]:
        """The verbs of ``text`` (for display)."""
        return [text[a:b] for a, b in self.spans(text)]

    def __repr__(self) -> str:
        return f"VerbSelector(backend={self.backend!r})"


def verb_token_mask(
    captions: str | Sequence[str], tokenizer, selector: VerbSelector | None = None, length: int | None = None
) -> np.ndarray:
    """bool (B, L): True at the tokens of ``tokenizer(captions)``'s ids that lie inside a verb of
    ``selector`` (default ``VerbSelector()``); ``L`` = the longest caption or ``length``.  The
    tokenizer needs ``token_offsets(text)`` (one span or None per id, specials None)."""
    if isinstance(captions, str):
        captions = [captions]
    if not hasattr(tokenizer, "token_offsets"):
        raise TypeError(f"verbs: the tokenizer {type(tokenizer).__name__} has no token_offsets(text)")
    selector = VerbSelector() if selector is None else selector
    rows = [tokenizer.token_offsets(c) for c in captions]
    n = max(len(r) for r in rows)
    if length is not None:
        if int(length) < n:
            raise ValueError(f"verbs: length={length} is shorter than the longest caption ({n} tokens)")
        n = int(length)
    mask = np.zeros((len(rows), n), bool)
    for i, (caption, offsets) in enumerate(zip(captions, rows)):
        verbs = selector.spans(caption)
        for j, span in enumerate(offsets):
            if span is not None and any(a <= span[0] and b >= span[1] for a, b in verbs):
                mask[i, j] = True
    return mask
