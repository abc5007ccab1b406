"""Pretokenizer with datasets.map: columns survive Trainer's column removal; output equals the collator's."""

from __future__ import annotations

import pytest
import torch

datasets = pytest.importorskip("datasets")

from respmask import Pretokenizer, ResponseOnlyCollator, SampleError  # noqa: E402
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
    out = fn({"messages": [r["messages"] for r in ROWS]})
    assert all(len(x) <= 8 for x in out["input_ids"])
    assert len(out["input_ids"]) < len(ROWS)  # prompts longer than 8 tokens left nothing to train
