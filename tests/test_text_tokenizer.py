"""RoBERTa tokenizer (peanut_jax.text): GPT-2 byte-level BPE with fairseq RoBERTa ids.

CI tests use a tiny hand-made vocabulary written in the test, in both file layouts.  The real-GPT-2
test (skipped without ../shared) derives both layouts from the GPT-2 ranks file and compares our
ids on >= 1000 strings with an independent reference, ``tiktoken`` built offline from the ranks.
"""

import base64
import json
import random

import numpy as np
import pytest
from conftest import shared_path

from peanut_jax.text import MAX_TOKENS, RobertaTokenizer, TokenizerFileError

SPECIALS = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
# GPT-2's pre-tokenisation pattern (contractions, letters, numbers, other, trailing whitespace)
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def byte_symbols() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte: printable Latin-1 bytes stand for themselves, the
    other 68 bytes (controls, space, 0x7f-0xa0, soft hyphen) get 256, 257, ... in byte order."""
    keep = [b for b in range(256) if 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or 0xAE <= b <= 0xFF]
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_SYMBOL = byte_symbols()


def as_symbols(token: bytes) -> str:
    return "".join(BYTE_SYMBOL[b] for b in token)


def write_hf(folder, vocab: dict[str, int], merges):
    """vocab.json (token -> RoBERTa id) + merges.txt (with the '#version' header)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    return folder / "vocab.json", folder / "merges.txt"


def write_fairseq(folder, encoder: dict[str, int], merges, dict_gpt2_ids, extra_symbols=()):
    """encoder.json (token -> GPT-2 id), vocab.bpe (merges) and dict.txt (one GPT-2 id per line,
    counts decreasing, as fairseq writes them; ``extra_symbols`` appended with count 0)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "encoder.json").write_text(json.dumps(encoder), encoding="utf-8")
    (folder / "vocab.bpe").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    n = len(dict_gpt2_ids)
    lines = [f"{g} {1000 * (n - i) + 7}" for i, g in enumerate(dict_gpt2_ids)]
    lines += [f"{s} 0" for s in extra_symbols]
    (folder / "dict.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder / "encoder.json", folder / "vocab.bpe", folder / "dict.txt"


# ------------------------------------------------------------------------------------------------
# tiny hand-made vocabulary (CI)
# ------------------------------------------------------------------------------------------------

TINY_MERGES = [("h", "e"), ("Ġ", "t"), ("Ġt", "he"), ("a", "t"), ("Ġ", "c"), ("Ġc", "at"), ("t", "he")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Both layouts of one tiny vocabulary: 256 byte symbols + 7 merges.  GPT-2 ids are assigned in
    one order and dict.txt lists them reversed, so RoBERTa id != GPT-2 id + 4 everywhere."""
    tokens = [BYTE_SYMBOL[b] for b in range(256)] + [a + b for a, b in TINY_MERGES]
    encoder = {t: g for g, t in enumerate(tokens)}
    dict_ids = list(reversed(range(len(tokens))))
    roberta = {t: 4 + dict_ids.index(g) for t, g in encoder.items()}
    extra = ["madeupword0000", "madeupword0001"]
    vocab = dict(SPECIALS, **roberta)
    vocab.update({s: 4 + len(tokens) + i for i, s in enumerate(extra)})
    vocab["<mask>"] = 4 + len(tokens) + len(extra)
    root = tmp_path_factory.mktemp("tiny_vocab")
    hf_files = write_hf(root / "hf", vocab, TINY_MERGES)
    fs_files = write_fairseq(root / "fairseq", encoder, TINY_MERGES, dict_ids, extra)
    return dict(
        vocab=vocab,
        encoder=encoder,
        root=root,
        hf_files=hf_files,
        fs_files=fs_files,
        hf=RobertaTokenizer.from_files(*hf_files),
        fs=RobertaTokenizer.from_fairseq(*fs_files),
    )


def test_tiny_expected_ids_and_no_prefix_space(tiny):
    v = tiny["vocab"]
    for tok in (tiny["hf"], tiny["fs"]):
        assert tok.bpe_tokens("the cat") == ["the", "Ġcat"]  # no prefix space: 'the', not 'Ġthe'
        assert tok.bpe_tokens(" the cat") == ["Ġthe", "Ġcat"]
        assert tok.bpe_tokens("thecat") == ["the", "c", "at"]
        ids, mask = tok("the cat")
        np.testing.assert_array_equal(ids, [[0, v["the"], v["Ġcat"], 2]])
        np.testing.assert_array_equal(mask, [[False] * 4])
        assert tok.encode("the cat") == [0, v["the"], v["Ġcat"], 2]
        assert tok.mask_id == v["<mask>"] == 4 + 263 + 2  # len(dict.txt) + 4
        # special tokens are recognised in the text; <mask> takes the space before it (HF lstrip)
        assert tok.encode("the <mask>") == [0, v["the"], v["<mask>"], 2]


def test_tiny_layouts_give_equal_ids(tiny):
    texts = ["the cat", " the  cat\n", "Thé CAT 42!", "a\tb  c   ", "猫 🐈 ça", "that's the cat's"]
    for t in texts:
        assert tiny["hf"].encode(t) == tiny["fs"].encode(t), t
    ids_hf, mask_hf = tiny["hf"](texts)
    ids_fs, mask_fs = tiny["fs"](texts)
    np.testing.assert_array_equal(ids_hf, ids_fs)
    np.testing.assert_array_equal(mask_hf, mask_fs)


def test_tiny_gpt2_token_missing_from_dict_is_unk(tiny, tmp_path):
    tokens = list(tiny["encoder"])
    dict_ids = [tiny["encoder"][t] for t in tokens if t != "Ġcat"]
    tok = RobertaTokenizer.from_fairseq(*write_fairseq(tmp_path, tiny["encoder"], TINY_MERGES, dict_ids))
    assert tok.encode("the cat") == [0, 4 + dict_ids.index(tiny["encoder"]["the"]), 3, 2]
    assert tok.mask_id == len(dict_ids) + 4


def test_padding_ids_and_mask(tiny):
    tok, v = tiny["hf"], tiny["vocab"]
    ids, mask = tok(["the cat", "a", " the cat at the"])
    assert ids.dtype == np.int32 and mask.dtype == np.bool_ and ids.shape == mask.shape == (3, 7)
    np.testing.assert_array_equal(ids[1], [0, v["a"], 2, 1, 1, 1, 1])
    np.testing.assert_array_equal(mask[1], [False] * 3 + [True] * 4)
    np.testing.assert_array_equal(ids[2], [0, v["Ġthe"], v["Ġcat"], v["Ġ"], v["at"], v["Ġthe"], 2])
    assert not mask[2].any()
    assert not mask[0, :4].any() and mask[0, 4:].all()
    np.testing.assert_array_equal(ids[mask], np.full(mask.sum(), 1))  # <pad> = 1 exactly where masked
    ids8, mask8 = tok(["the cat", "a"], pad_to=8)
    assert ids8.shape == mask8.shape == (2, 8)
    np.testing.assert_array_equal(ids8[:, :4], tok(["the cat", "a"])[0])
    assert mask8.sum(1).tolist() == [4, 5]
    one, one_mask = tok("a")  # a single string is a batch of one
    assert one.shape == (1, 3) and not one_mask.any()
    with pytest.raises(ValueError, match=r"pad_to=2 .*longest prompt \(4 tokens\)"):
        tok(["the cat"], pad_to=2)
    with pytest.raises(ValueError, match="pad_to=513"):
        tok(["the cat"], pad_to=513)


def test_512_token_limit(tiny):
    tok = tiny["fs"]
    ids, mask = tok(["the" * (MAX_TOKENS - 2), "a"])  # 'thethe...' -> one 'the' token per copy
    assert ids.shape == (2, 512) and ids[0, -1] == 2 and not mask[0].any()
    for batch, where in ((["the" * (MAX_TOKENS - 1)], ""), (["a", "the" * 600], r" \(prompt 2 of 2\)")):
        with pytest.raises(ValueError, match=rf"prompt is too long{where}: {len(batch[-1]) // 3 + 2} tokens") as e:
            tok(batch)
        assert "512" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("batch", [[""], ["   "], ["\n\t \u3000"], ["the cat", " "]])
def test_empty_prompt_error(tiny, batch):
    with pytest.raises(ValueError, match="prompt is empty") as e:
        tiny["hf"](batch)
    assert "\n" not in str(e.value)
    if len(batch) > 1:
        assert "prompt 2 of 2" in str(e.value)
    with pytest.raises(ValueError, match="no prompt"):
        tiny["hf"]([])


def test_missing_or_bad_files_errors(tiny, tmp_path):
    vocab_json, merges_txt = tiny["hf_files"]
    encoder_json, vocab_bpe, dict_txt = tiny["fs_files"]
    cases = [
        (
            lambda: RobertaTokenizer.from_files(tmp_path / "nope" / "vocab.json", merges_txt),
            "vocab.json",
            ["not found", str(tmp_path / "nope" / "vocab.json"), "--tokenizer DIR", "merges.txt"],
        ),
        (
            lambda: RobertaTokenizer.from_files(vocab_json, tmp_path / "merges.txt"),
            "merges.txt",
            ["not found", str(tmp_path / "merges.txt")],
        ),
        (
            lambda: RobertaTokenizer.from_fairseq(tmp_path / "encoder.json", vocab_bpe, dict_txt),
            "encoder.json",
            ["not found", "--tokenizer DIR", "encoder.json + vocab.bpe + dict.txt"],
        ),
        (
            lambda: RobertaTokenizer.from_fairseq(encoder_json, tmp_path / "vocab.bpe", dict_txt),
            "vocab.bpe",
            ["not found", "--tokenizer DIR", "encoder.json + vocab.bpe + dict.txt"],
        ),
        (
            lambda: RobertaTokenizer.from_fairseq(encoder_json, vocab_bpe, tmp_path / "dict.txt"),
            "dict.txt",
            ["not found", "--tokenizer DIR", "roberta.base"],
        ),
    ]
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json", encoding="utf-8")
    cases.append((lambda: RobertaTokenizer.from_files(bad_json, merges_txt), "vocab.json", ["not JSON"]))
    bad_bytes = tmp_path / "bytes.txt"
    bad_bytes.write_bytes(b"\xff\xfe\x00 1\n")
    cases.append(
        (
            lambda: RobertaTokenizer.from_fairseq(encoder_json, vocab_bpe, bad_bytes),
            "dict.txt",
            ["unreadable", str(bad_bytes)],
        )
    )
    foreign = tmp_path / "foreign.bpe"
    foreign.write_text("#version: 0.2\nq z\n", encoding="utf-8")  # 'qz' is not in the vocabulary
    cases.append(
        (lambda: RobertaTokenizer.from_files(vocab_json, foreign), "merges.txt", ["does not match the vocabulary"])
    )
    short = tmp_path / "short.json"
    short.write_text(json.dumps({k: v for k, v in tiny["vocab"].items() if k != "Ā"}), encoding="utf-8")
    cases.append((lambda: RobertaTokenizer.from_files(short, merges_txt), "vocab.json", ["byte-level base tokens"]))
    for build, role, needles in cases:
        with pytest.raises(TokenizerFileError) as e:
            build()
        msg = str(e.value)
        assert isinstance(e.value, FileNotFoundError) and "\n" not in msg, msg
        assert msg.startswith(f"tokenizer file {role} "), msg
        for needle in needles:
            assert needle in msg, (needle, msg)


ROUND_TRIP = [
    "the cat",
    " the  cat \n\n",
    "Ça va? Ångström naïve",
    "東京タワー 北京 서울",
    "👩‍👩‍👧 🇫🇷 👍🏽",
    "\x00\x01\x7f\u00ad\u200b",
    "tab\tand\r\nCRLF",
    "<unk-ish> text",
    "‽" * 9,
]


def test_byte_level_round_trip(tiny):
    for tok in (tiny["hf"], tiny["fs"]):
        for text in ROUND_TRIP:
            pieces = tok.bpe_tokens(text)
            assert "".join(pieces) == as_symbols(text.encode("utf-8")), text
            assert tok.decode(tok.encode(text)) == text, text
            ids, _ = tok([text, "the cat the cat the cat the cat"])
            assert tok.decode(ids[0]) == text  # padding and <s>/</s> are dropped


# ------------------------------------------------------------------------------------------------
# the real GPT-2 vocabulary (../shared) against tiktoken
# ------------------------------------------------------------------------------------------------


def derive_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """GPT-2's merges from its ranks: the token of rank r was made by merging the two pieces that
    BPE with only the merges of rank < r leaves of its bytes (exactly two, asserted)."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = [token[i : i + 1] for i in range(len(token))]
        while len(parts) > 2:
            best, at = rank, -1
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1], rank)
                if r < best:
                    best, at = r, i
            if at < 0:
                break
            parts[at : at + 2] = [parts[at] + parts[at + 1]]
        assert len(parts) == 2, (token, parts)
        assert ranks[parts[0]] < rank and ranks[parts[1]] < rank, token
        merges.append((parts[0], parts[1]))
    return merges


def corpus(n_random: int = 1200, seed: int = 0) -> list[str]:
    fixed = [
        "the man in the red shirt on the left",
        "The Man In The Red Shirt",
        "a dog jumping over a fence",
        "it's the cat's toy, isn't it? They'll say we'd've... I'M HERE, you'RE there",
        "don't",
        "'s'",
        "1 22 333 4444 55555 3.14159 1,000,000 -7 +8e-10 0x1F 2024-12-05 12:30:59",
        "café naïve résumé Ångström São Paulo Zürich Dvořák ﬁne",
        "e\u0301 a\u0308 n\u0303 (combining)",
        "hello!!! ??? ... --- *** ((( ))) [x] {y} <z> @user #tag $5 %20 ^_^ ~ `code` |pipe| \\back/",
        "emoji 😀😃😄 👍🏽 👩‍👩‍👧‍👦 🇯🇵🇫🇷 ❤️ ☃ 🏳️‍🌈 🫠",
        "我爱北京天安门",
        "日本語のテキストです。カタカナ、ひらがな",
        "한국어 문장입니다",
        "مرحبا بالعالم",
        "नमस्ते दुनिया",
        "Привет, мир!",
        "Γειά σου Κόσμε",
        "שלום עולם",
        "a  b   c    d",
        "   leading",
        "trailing   ",
        " ",
        "  \n",
        "one\ntwo\n\nthree\r\nfour",
        "\t\ttabs\t",
        "mixed \u00a0nbsp\u2009thin\u3000ideographic",
        "zero\u200bwidth\u200djoiner",
        "\x00\x01\x1f\x7f",
        "<|endoftext|>",
        "ÃÂÃÂÃÂÃÂ",
        "ĠĠĠĠ",
        "https://example.com/a_b-c?d=e&f=g#h",
        "x" * 300,
        "   many    spaces    between    words   ",
        "end.\n",
        "\n",
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛",
        "Ⅻ ½ ² ٣ ௫",
    ]
    rng = random.Random(seed)
    words = [
        "the",
        "man",
        "woman",
        "red",
        "shirt",
        "left",
        "right",
        "dog",
        "cat",
        "running",
        "car",
        "a",
        "on",
        "of",
        "behind",
        "Zebra",
        "QUICK",
        "naïve",
        "über",
        "日本",
        "猫",
        "😀",
        "it's",
        "they're",
        "42",
        "3.5",
        "2,000",
        "...",
        "!!",
        "?",
        "-",
        "'",
        '"',
        "(",
        ")",
    ]
    spaces = [" ", "  ", "   ", "\t", "\n", "\n\n", " \n", "\r\n", "\u00a0", "\u3000"]
    ranges = [
        (0x20, 0x7E),
        (0xA0, 0x24F),
        (0x370, 0x3FF),
        (0x400, 0x4FF),
        (0x590, 0x6FF),
        (0x900, 0x97F),
        (0x3040, 0x30FF),
        (0x4E00, 0x9FFF),
        (0xAC00, 0xD7A3),
        (0x1F300, 0x1FAFF),
        (0x2000, 0x206F),
        (0xE000, 0xF8FF),
        (0x10000, 0x10FFFF),
    ]

    def random_char():
        lo, hi = rng.choice(ranges)
        c = rng.randint(lo, hi)
        return chr(c) if not 0xD800 <= c <= 0xDFFF else "?"

    out = list(fixed)
    for i in range(n_random):
        kind = i % 4
        if kind == 0:  # words, punctuation and whitespace runs
            n = rng.randint(1, 12)
            out.append("".join(rng.choice(words) + rng.choice(spaces + [""] * 6) for _ in range(n)))
        elif kind == 1:  # random unicode, any plane
            out.append("".join(random_char() for _ in range(rng.randint(1, 20))))
        elif kind == 2:  # digits and symbols
            out.append("".join(rng.choice("0123456789.,:;-+ '\"!?()$%/\\_\n") for _ in range(rng.randint(1, 30))))
        else:  # a mix of all of it
            out.append(
                "".join(
                    rng.choice([rng.choice(words), rng.choice(spaces), random_char()])
                    for _ in range(rng.randint(1, 16))
                )
            )
    out = [s for s in out if s and not any(t in s for t in ("<s>", "</s>", "<pad>", "<unk>", "<mask>"))]
    return out


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    tiktoken = pytest.importorskip("tiktoken")
    path = shared_path("data", "gpt2_bpe", "gpt2.tiktoken")
    ranks = {}
    for line in path.read_text(encoding="ascii").split("\n"):
        if line:
            token, rank = line.split(" ")
            ranks[base64.b64decode(token)] = int(rank)
    assert len(ranks) == 50256 and sorted(ranks.values()) == list(range(50256))
    merges = [(as_symbols(a), as_symbols(b)) for a, b in derive_merges(ranks)]
    assert len(merges) == 50000  # GPT-2's vocab.bpe has 50,000 merges
    encoder = {as_symbols(t): r for t, r in ranks.items()}
    encoder["<|endoftext|>"] = 50256
    # a generated dict.txt: the GPT-2 ids in a random order, then fairseq's three padding words
    perm = np.random.default_rng(1234).permutation(50257).tolist()
    extra = ["madeupword0000", "madeupword0001", "madeupword0002"]
    roberta_of_gpt2 = np.empty(50257, np.int64)
    roberta_of_gpt2[perm] = 4 + np.arange(50257)
    vocab = dict(SPECIALS)
    vocab.update({t: int(roberta_of_gpt2[g]) for t, g in encoder.items()})
    vocab.update({s: 4 + 50257 + i for i, s in enumerate(extra)})
    vocab["<mask>"] = 50264
    root = tmp_path_factory.mktemp("gpt2_layouts")
    hf = RobertaTokenizer.from_files(*write_hf(root / "hf", vocab, merges))
    fs = RobertaTokenizer.from_fairseq(*write_fairseq(root / "fairseq", encoder, merges, perm, extra))
    reference = tiktoken.Encoding(name="gpt2_test", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={})
    return dict(hf=hf, fs=fs, reference=reference, roberta_of_gpt2=roberta_of_gpt2)


def test_gpt2_vocabulary_matches_tiktoken(gpt2):
    texts = corpus()
    assert len(texts) >= 1000
    ref = gpt2["reference"]
    expected = [gpt2["roberta_of_gpt2"][ref.encode_ordinary(t)].tolist() for t in texts]
    mismatches = []
    for tok in (gpt2["hf"], gpt2["fs"]):
        assert tok.vocab_size == 50265 and tok.mask_id == 50264 and tok.pad_id == 1
        for t, want in zip(texts, expected):
            got = tok.encode(t)
            if got[0] != 0 or got[-1] != 2 or got[1:-1] != want:
                mismatches.append((t, got, want))
    assert not mismatches, f"{len(mismatches)} mismatches, first: {mismatches[0]!r}"
    # batched call == per-caption encoding, both layouts identical
    batch = [(t, want) for t, want in zip(texts, expected) if t.strip()][:64]
    ids_hf, mask_hf = gpt2["hf"]([t for t, _ in batch])
    ids_fs, mask_fs = gpt2["fs"]([t for t, _ in batch])
    np.testing.assert_array_equal(ids_hf, ids_fs)
    np.testing.assert_array_equal(mask_hf, mask_fs)
    for row, m, (_, want) in zip(ids_hf, mask_hf, batch):
        assert row[~m].tolist() == [0] + want + [2]


def test_gpt2_known_tokens_and_round_trip(gpt2):
    tok = gpt2["fs"]
    # GPT-2 facts: 'the' is one token, ' the' is 'Ġthe'; 'Hello' 15496, ' world' 995
    assert tok.bpe_tokens("the man in the red shirt") == ["the", "Ġman", "Ġin", "Ġthe", "Ġred", "Ġshirt"]
    assert tok.bpe_tokens("Hello world") == ["Hello", "Ġworld"]
    assert gpt2["reference"].encode_ordinary("Hello world") == [15496, 995]
    for text in ROUND_TRIP + corpus(n_random=40, seed=7):
        assert tok.decode(tok.encode(text)) == text
