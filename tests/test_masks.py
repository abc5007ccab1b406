"""Character spans to token masks: the any-character rule, exact at every edge."""

from __future__ import annotations

import numpy as np
import pytest

from respmask._masks import labels_from_mask, labels_from_masks, mask_from_ranges, token_ranges
from support.tokenizers import fixture_tokenizer


def brute_force(offsets, spans, n):
    mask = np.zeros(n, dtype=bool)
    for t, (s, e) in enumerate(offsets):
        for a, b in spans:
            if s < b and e > a and e > s:
                mask[t] = True
    return mask


@pytest.mark.parametrize("style", ["bytelevel", "metaspace"])
def test_matches_brute_force_on_every_span(style):
    tok = fixture_tokenizer("qwen2_5", style)
    text = "Hi 😀 there,\n\n  café\tend 中文 ok<|im_end|>\nnext 🚀🚀 done."
    enc = tok.backend_tokenizer.encode(text, add_special_tokens=False)
    n = len(enc.ids)
    rng = np.random.default_rng(0)
    for _ in range(400):
        a = int(rng.integers(0, len(text)))
        b = int(rng.integers(a + 1, len(text) + 1))
        spans = [(a, b)]
        got = mask_from_ranges(token_ranges(enc, spans, n), n)
        assert (got == brute_force(enc.offsets, spans, n)).all(), (a, b, text[a:b])


def test_several_spans_and_empty_ones():
    tok = fixture_tokenizer("qwen2_5")
    text = "one two three four five six"
    enc = tok.backend_tokenizer.encode(text, add_special_tokens=False)
    spans = [(0, 3), (8, 13), (20, 20), (24, 27)]
    n = len(enc.ids)
    assert (mask_from_ranges(token_ranges(enc, spans, n), n) == brute_force(enc.offsets, spans, n)).all()
    assert token_ranges(enc, [], n).shape == (0, 2)


def test_a_character_split_over_byte_tokens_is_trained_whole():
    """An emoji spread over several byte tokens (same offsets): all of them are trained when the
    span covers it (transformers' char_to_token(end - 1) would keep only the first)."""
    tok = fixture_tokenizer("qwen2_5")
    text = "🦜🦜"
    enc = tok.backend_tokenizer.encode(text, add_special_tokens=False)
    second = [t for t, (s, e) in enumerate(enc.offsets) if s == 1]
    assert len(second) >= 2  # split into byte tokens by this small vocabulary
    mask = mask_from_ranges(token_ranges(enc, [(1, 2)]), len(enc.ids))
    assert mask[second].all() and not mask[: second[0]].any()
    assert enc.char_to_token(1) == second[0]  # what a char_to_token(end - 1) lookup would stop at


def test_labels_from_mask():
    ids = np.array([5, 6, 7, 8])
    assert labels_from_mask(ids, np.array([False, True, True, False])).tolist() == [-100, 6, 7, -100]


def test_labels_from_masks_equal_each_rows_labels():
    rng = np.random.default_rng(0)
    rows = [rng.integers(0, 50_000, size=n) for n in (5, 0, 1, 300, 7)]
    masks = [rng.random(len(r)) < 0.5 for r in rows]
    got = labels_from_masks(rows, masks)
    assert [g.tolist() for g in got] == [labels_from_mask(r, m).tolist() for r, m in zip(rows, masks)]
    assert all(g.dtype == np.int64 and g.base is None for g in got)  # each row's labels its own array
    assert labels_from_masks([], []) == []


def test_ids_of_reads_rust_encodings_as_views_of_one_array():
    from tokenizers import Tokenizer, models, pre_tokenizers

    from respmask._masks import ids_of

    tok = Tokenizer(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    encodings = tok.encode_batch_fast(["a b a", "", "b zz"])
    rows, every = ids_of(encodings)
    assert [r.tolist() for r in rows] == [[0, 1, 0], [], [1, 2]] and every.tolist() == [0, 1, 0, 1, 2]
    assert all(r.dtype == np.int64 and r.base is every for r in rows if len(r))
    rows, every = ids_of([])
    assert rows == [] and every.dtype == np.int64 and len(every) == 0
