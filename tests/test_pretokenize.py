"""Pretokenizer with datasets.map: columns survive Trainer's column removal; output equals the collator's."""

from __future__ import annotations

import pytest
import torch

datasets = pytest.importorskip("datasets")

from respmask import Pretokenizer, ResponseOnlyCollator, RespmaskWarning, SampleError  # noqa: E402
from support.tokenizers import fixture_tokenizer  # noqa: E402

ROWS = [
    {"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i} " * i}]}
    for i in range(1, 9)
]


def test_map_batched_matches_collator():
    tok = fixture_tokenizer("qwen3")
    ds = datasets.Dataset.from_list(ROWS)
    out = ds.map(Pretokenizer(tok), batched=True, batch_size=3, remove_columns=ds.column_names)
    assert out.column_names == ["input_ids", "labels"]
    # typed integer columns (datasets stores token ids as int32 when they fit)
    assert str(out.features["input_ids"].feature.dtype) in ("int32", "int64")
    assert str(out.features["labels"].feature.dtype) in ("int32", "int64")
    c = ResponseOnlyCollator(tok)
    direct = c(ROWS)
    padded = c([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in out])
    assert torch.equal(direct["input_ids"], padded["input_ids"])
    assert torch.equal(direct["labels"], padded["labels"])


def test_map_with_indices_names_the_bad_row():
    tok = fixture_tokenizer("qwen3")
    rows = ROWS[:4] + [{"messages": [{"role": "user", "content": "x"}, {"role": "assistant"}]}]
    rows[4]["messages"][1]["content"] = 5  # not a string
    ds = datasets.Dataset.from_list([{"messages": r["messages"]} for r in ROWS[:4]])
    bad = Pretokenizer(tok)
    with pytest.raises(SampleError, match="sample 2"):
        bad({"messages": [ROWS[0]["messages"], ROWS[1]["messages"], [{"role": 3}]]}, indices=[0, 1, 2])
    assert len(ds.map(bad, batched=True, with_indices=True, remove_columns=ds.column_names)) == 4


def test_truncation_and_drop():
    tok = fixture_tokenizer("qwen3")
    fn = Pretokenizer(tok, max_length=8, on_untrainable="drop")
    with pytest.warns(RespmaskWarning, match="on_untrainable='drop' left out"):
        out = fn({"messages": [r["messages"] for r in ROWS]})
    assert all(len(x) <= 8 for x in out["input_ids"])
    assert len(out["input_ids"]) < len(ROWS)  # prompts longer than 8 tokens left nothing to train


def test_map_without_indices_says_the_rows_it_names_are_batch_positions():
    """``ds.map(Pretokenizer(tok), batched=True)`` as the README writes it passes no indices, so the
    Pretokenizer numbers rows from 0 in every map batch: a bad row at dataset row 7 (batch size 5)
    was reported as ``sample 2`` and the lost-data warning named ``rows [2]``, another row of the
    dataset. Without indices it says the numbers are positions in the batch and how to have dataset
    rows named; with ``with_indices=True`` it names the dataset row."""
    import warnings

    tok = fixture_tokenizer("qwen3")
    rows = [{"messages": r["messages"]} for r in ROWS] + [{"messages": ROWS[0]["messages"]}] * 2
    # the template leaves out the 'wizard' message of dataset row 7
    rows[7] = {"messages": [{"role": "user", "content": "q"}, {"role": "wizard", "content": "abracadabra"},
                            {"role": "assistant", "content": "a"}]}
    ds = datasets.Dataset.from_list(rows)
    common = dict(batched=True, batch_size=5, remove_columns=ds.column_names, load_from_cache_file=False)
    with pytest.raises(SampleError) as raised:
        ds.map(Pretokenizer(tok, on_lost_data="reject"), **common)
    assert "sample 2 is its position in this batch, not a dataset row" in str(raised.value)
    assert "with_indices=True" in str(raised.value)
    with pytest.raises(SampleError, match=r"^sample 7: ") as raised:
        ds.map(Pretokenizer(tok, on_lost_data="reject"), with_indices=True, **common)
    assert "position in this batch" not in str(raised.value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds.map(Pretokenizer(tok), **common)
    (message,) = [str(w.message) for w in caught if "leaves out" in str(w.message)]
    assert "(positions [2] in this batch, not dataset rows: with datasets.map, pass with_indices=True" \
        in message
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds.map(Pretokenizer(tok), with_indices=True, **common)
    (message,) = [str(w.message) for w in caught if "leaves out" in str(w.message)]
    assert "(rows [7])" in message


def test_drop_says_how_many_rows_it_left_out_which_and_why():
    """Pretokenizer(on_untrainable='drop') left rows out of the output with no count and no warning
    (6 rows in, 5 out; 3 cut rows in, 0 out): a RespmaskWarning per batch now says how many, which
    (dataset rows with with_indices=True, else positions in the batch) and why, as the collator's
    warnings do; the rows out are the rows in less those named."""
    import re
    import warnings

    tok = fixture_tokenizer("qwen3")
    rows = [{"messages": r["messages"]} for r in ROWS] + [{"messages": ROWS[0]["messages"]}] * 2
    rows[2] = {"messages": [{"role": "user", "content": "no reply"}]}
    rows[7] = {"messages": [{"role": "user", "content": "long " * 60}, {"role": "assistant", "content": "a"}]}
    ds = datasets.Dataset.from_list(rows)
    common = dict(batched=True, batch_size=5, remove_columns=ds.column_names, load_from_cache_file=False)
    for indexed in (True, False):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = ds.map(Pretokenizer(tok, max_length=40, on_untrainable="drop"), with_indices=indexed, **common)
        said = [str(w.message) for w in caught if issubclass(w.category, RespmaskWarning)]
        assert len(said) == 2  # one per batch that lost a row
        named = [int(n) for m in said for n in re.findall(r"(?:rows|positions) \[(\d+)\]", m)]
        counted = [int(re.search(r"left out (\d+) of the 5 samples in this batch", m).group(1)) for m in said]
        assert len(out) == len(ds) - sum(counted) == len(ds) - 2
        assert named == ([2, 7] if indexed else [2, 2])  # row 7 is position 2 of the second batch
        assert "it has no trained turn" in said[0] and "truncation to max_length=40 (right) removed all" in said[1]
        assert ("Positions are within this batch" in said[0]) is not indexed


def test_collect_needs_features_in_datasets_map():
    """What the README says of on_error='collect' with datasets.map: without features= the 'error'
    column is typed from the first batch written (null when it held no error) and a later error
    stops the map; with features=fn.features every row is written, the bad one with its error."""
    tok = fixture_tokenizer("qwen3")
    rows = [{"messages": r["messages"]} for r in ROWS] + [{"messages": ROWS[0]["messages"]}] * 2
    rows[7] = {"messages": [{"role": "user", "content": "q"}, {"role": "wizard", "content": "x"},
                            {"role": "assistant", "content": "a"}]}
    ds = datasets.Dataset.from_list(rows)
    fn = Pretokenizer(tok, on_lost_data="reject", on_error="collect")
    common = dict(batched=True, batch_size=5, with_indices=True, remove_columns=ds.column_names,
                  load_from_cache_file=False)
    with pytest.raises(Exception, match="Couldn't write column 'error': its type in this file is null"):
        ds.map(fn, **common)
    out = ds.map(fn, features=fn.features, **common)
    assert len(out) == len(ds) and [i for i, e in zip(out["index"], out["error"]) if e] == [7]
