"""Token positions from byte lengths (no offset tracking) equal the Rust tokenizer's offsets, or
the text goes back to the offsets path: the masks never depend on which path ran."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.tokenizers import base_tokenizer_json, fixture_tokenizer, shared_tokenizer
from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers, processors

from respmask import ChatMasker
from respmask._byte_lengths import ByteLengths
from respmask._masks import mask_from_ranges, token_ranges

SPECIALS = ["<|im_start|>", "<|im_end|>", "<tool>"]
SPACE = "\u2581"


def backend(normalizer=None, prefix_space=False, trim=False, lstrip_token=False) -> Tokenizer:
    """The test suite's byte-level BPE, optionally with a normalizer or an offset-changing option."""
    tok = Tokenizer.from_str(base_tokenizer_json("bytelevel"))
    tok.add_special_tokens(SPECIALS)
    if normalizer is not None:
        tok.normalizer = normalizer
    if prefix_space:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    if trim:
        tok.post_processor = processors.ByteLevel(trim_offsets=True)
    if lstrip_token:
        tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=True)])
    return tok


def sentencepiece(spelling: str) -> Tokenizer:
    """The test suite's SentencePiece-style BPE (byte fallback) spelling spaces as '▁' the ways
    real tokenizers do: Metaspace prepending at the text's start (transformers' conversions),
    a Prepend normalizer on every piece (Llama 2, Mistral v1), Metaspace prepending on every
    piece (older conversions), or no prepending (Gemma)."""
    tok = Tokenizer.from_str(base_tokenizer_json("metaspace"))  # Replace(' ', '▁') + Metaspace(first)
    tok.add_special_tokens(SPECIALS)
    if spelling == "prepend":
        tok.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE), normalizers.Replace(" ", SPACE)])
        tok.pre_tokenizer = None
    elif spelling.startswith("always"):
        split = spelling == "always"
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="always", split=split)
    elif spelling == "none":
        tok.pre_tokenizer = pre_tokenizers.Split(" ", "merged_with_previous")
    elif spelling == "prepend+spaces":  # Gemma's whitespace tokens, in a tokenizer that prepends
        tok.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE), normalizers.Replace(" ", SPACE)])
        tok.pre_tokenizer = None
        tok.add_tokens([AddedToken(SPACE * 2, normalized=False), AddedToken(SPACE * 3, normalized=False)])
    return tok


def offsets_mask(be: Tokenizer, text: str, spans) -> np.ndarray:
    """The mask from the tokenizer's own offsets (the reference)."""
    enc = be.encode(text, add_special_tokens=False)
    n = len(enc.ids)
    return mask_from_ranges(token_ranges(enc, spans, n), n)


def table_mask(table: ByteLengths, be: Tokenizer, text: str, spans) -> np.ndarray | None:
    ids = np.asarray(be.encode_batch_fast([text], add_special_tokens=False)[0].ids, dtype=np.int64)
    return table.token_masks([ids], [text], [spans])[0]


def test_a_table_only_for_tokenizers_whose_tokens_are_byte_runs():
    assert ByteLengths.of(backend()) is not None
    assert ByteLengths.of(backend(normalizers.NFC())) is not None
    assert ByteLengths.of(sentencepiece("first")) is not None
    wordpiece = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    assert ByteLengths.of(wordpiece) is None
    split_then_prepend = sentencepiece("always")
    split_then_prepend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(), pre_tokenizers.Metaspace(prepend_scheme="always")])
    assert ByteLengths.of(split_then_prepend) is None  # '▁' prepended anywhere digits are cut
    assert ByteLengths.of(backend(prefix_space=True)) is None  # a space not in the text
    assert ByteLengths.of(backend(trim=True)) is None  # offsets without their edge spaces
    assert ByteLengths.of(backend(normalizers.Lowercase())) is None
    table = ByteLengths.of(backend())
    be = backend()
    assert table.lengths[be.token_to_id("<|im_end|>")] == len("<|im_end|>")
    assert table.lengths[be.token_to_id("Ġ")] == 1


pieces = st.one_of(
    st.text(max_size=10),
    st.sampled_from([" ", "\n\n", "  ", "   ", "x  <tool>  y", "😀", "🦜🦜", "中文", "café", "cafe\u0301", "\u212b", "Å", "\u0958",
                     "e\u0301\u0301", ">\u0338", SPACE, " x", *SPECIALS, " <mask> ", "<mask>", "hello world", "\t", "\x00"]),
)


@st.composite
def text_and_spans(draw):
    text = "".join(draw(st.lists(pieces, max_size=8)))
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=6)))
    spans = [(a, b) for a, b in zip(cuts[::2], cuts[1::2]) if a < b]
    return text, spans


VARIANTS = {
    "bytelevel": lambda: backend(),
    "bytelevel+nfc": lambda: backend(normalizers.NFC()),
    "bytelevel+nfkc": lambda: backend(normalizers.NFKC()),
    "bytelevel+strip": lambda: backend(lstrip_token=True),
    "metaspace-first": lambda: sentencepiece("first"),
    "metaspace-prepend": lambda: sentencepiece("prepend"),
    "metaspace-always-nosplit": lambda: sentencepiece("always-nosplit"),
    "metaspace-always": lambda: sentencepiece("always"),
    "metaspace-none": lambda: sentencepiece("none"),
    "metaspace-prepend+spaces": lambda: sentencepiece("prepend+spaces"),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
@settings(max_examples=300, deadline=None, derandomize=True)
@given(case=text_and_spans())
def test_byte_positions_equal_offsets_or_decline(name, case):
    text, spans = case
    be = VARIANTS[name]()
    table = ByteLengths.of(be)
    assert table is not None
    expected = offsets_mask(be, text, spans)
    got = table_mask(table, be, text, spans)
    if got is not None:
        assert (got == expected).all(), (text, spans)
        return
    # declined: only when the tokens may not spell the text exactly
    normal = table.normalizer is None or table.normalizer.normalize_str(text) == text
    assert not normal or "<mask>" in text or SPACE in text
    assert not (text.isascii() and "<mask>" not in text)


@pytest.mark.parametrize("name", sorted(VARIANTS))
@settings(max_examples=100, deadline=None, derandomize=True)
@given(cases=st.lists(text_and_spans(), min_size=1, max_size=6), unknown=st.booleans())
def test_a_batch_masks_each_row_as_alone(name, cases, unknown):
    """Rows measured together (one running sum over the batch) get the masks each gets alone:
    neither a declined row (normalized text, an unknown id) nor the rows around it change them."""
    be = VARIANTS[name]()
    table = ByteLengths.of(be)
    texts = [t for t, _ in cases]
    spans = [s for _, s in cases]
    rows = [np.asarray(e.ids, dtype=np.int64) for e in be.encode_batch_fast(texts, add_special_tokens=False)]
    middle = len(texts) // 2
    if unknown:  # a row with an id the table cannot measure, in the middle of the batch
        table = ByteLengths(**{**table.__dict__, "lengths": table.lengths.copy()})
        table.lengths[be.token_to_id("<tool>")] = -(1 << 40)
        texts.insert(middle, "x <tool> y")
        spans.insert(middle, [(0, 3)])
        rows.insert(middle, np.asarray(be.encode("x <tool> y", add_special_tokens=False).ids, dtype=np.int64))
    together = table.token_masks(rows, texts, spans)
    for ids, text, sp, got in zip(rows, texts, spans, together):
        alone = table.token_masks([ids], [text], [sp])[0]
        assert (got is None) == (alone is None), (text, sp)
        if got is not None:
            assert got.tolist() == alone.tolist() == offsets_mask(be, text, sp).tolist(), (text, sp)
    if unknown:
        assert together[middle] is None


def test_declines_normalized_and_absorbed_text():
    nfc = backend(normalizers.NFC())
    table = ByteLengths.of(nfc)
    assert table_mask(table, nfc, "cafe\u0301 ok", [(0, 4)]) is None  # NFC rewrites 'e' + accent
    assert table_mask(table, nfc, "café ok", [(0, 4)]) is not None
    strip = backend(lstrip_token=True)
    table = ByteLengths.of(strip)
    assert table_mask(table, strip, "a <mask> b", [(0, 1)]) is None  # the token ate its spaces
    assert table_mask(table, strip, "a<mask>b", [(0, 1)]) is not None


def test_masker_masks_do_not_depend_on_the_path(monkeypatch):
    """Same ids and labels with the byte table as with offsets, on non-ASCII, non-NFC and
    special-token-laden content."""
    tok = fixture_tokenizer("qwen2_5")
    tok.backend_tokenizer.normalizer = normalizers.NFC()
    try:
        samples = [
            {"messages": [{"role": "user", "content": c}, {"role": "assistant", "content": r}]}
            for c, r in [("hi", "café 😀 中文"), ("cafe\u0301", "e\u0301 \u212b <|im_end|> x"), ("", " "),
                         ("<|im_start|>assistant\n", "ok<|im_end|>\n")]
        ]
        fast = ChatMasker(tok).encode_batch(samples)
        assert ChatMasker(tok)._byte_lengths(tok.backend_tokenizer) is not None
        monkeypatch.setattr(ChatMasker, "_byte_lengths", lambda self, backend, rebuild=False: None)
        slow = ChatMasker(tok).encode_batch(samples)
        for f, s in zip(fast, slow):
            assert f.input_ids.tolist() == s.input_ids.tolist()
            assert f.labels.tolist() == s.labels.tolist()
            assert f.n_trained > 0
    finally:
        tok.backend_tokenizer.normalizer = None


def test_tokens_added_after_the_first_batch_are_measured(monkeypatch):
    base = fixture_tokenizer("chatml")
    tok = base.__class__(tokenizer_object=Tokenizer.from_str(base.backend_tokenizer.to_str()),
                         chat_template=base.chat_template, eos_token=base.eos_token)
    masker = ChatMasker(tok)
    sample = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "x<newtool> y"}]}
    masker.encode(sample)
    first = masker._byte_lengths(tok.backend_tokenizer)
    tok.add_tokens(["<newtool>"])
    new_id = tok.convert_tokens_to_ids("<newtool>")
    assert new_id >= len(first.lengths)
    enc = masker.encode(sample)
    table = masker._byte_lengths(tok.backend_tokenizer)
    assert table is not first and table.lengths[new_id] == len("<newtool>")
    ref = tok.apply_chat_template(sample["messages"], tokenize=True, return_dict=True)["input_ids"]
    assert enc.input_ids.tolist() == list(ref)
    assert new_id in enc.labels.tolist()
    monkeypatch.setattr(ChatMasker, "_byte_lengths", lambda self, backend, rebuild=False: None)
    assert ChatMasker(tok).encode(sample).labels.tolist() == enc.labels.tolist()


@pytest.mark.shared
@pytest.mark.parametrize("folder", ["qwen3", "llama3_1", "gptoss", "deepseek_v3", "gemma3", "llama2"])
def test_real_tokenizers(shared_root, folder):
    tok = shared_tokenizer(folder)
    be = tok.backend_tokenizer
    table = ByteLengths.of(be)
    assert table is not None
    bos = tok.bos_token or ""
    for text in ["Hello wörld 😀 中文 <|im_end|>\n\n  def f(x):\n\treturn x\u00a0 ok" + (tok.eos_token or ""),
                 f"{bos} hi{bos}there  {tok.eos_token} \n x", "\U0001d7d8 ok 🦜🦜"]:
        spans = [(a, min(a + 7, len(text))) for a in range(0, len(text), 5)]
        expected = offsets_mask(be, text, spans)
        got = table_mask(table, be, text, spans)
        assert got is not None and (got == expected).all(), text
