"""Packing: best-fit decreasing bins, position ids restarting per sample, labels masked at every
sample boundary, and per-sample losses equal to the same samples padded (tiny model, CPU)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

datasets = pytest.importorskip("datasets")

from respmask import Pretokenizer, ResponseOnlyCollator, SampleError  # noqa: E402
from respmask._packing import Packer, best_fit_decreasing, pack, padding_stats  # noqa: E402
from support.tokenizers import fixture_tokenizer  # noqa: E402
from test_engines import rows  # noqa: E402
from test_trainer import tiny_model  # noqa: E402


def test_best_fit_decreasing_properties():
    rng = random.Random(0)
    for _ in range(50):
        cap = rng.randint(10, 200)
        lengths = [rng.randint(1, cap) for _ in range(rng.randint(1, 80))]
        bins = best_fit_decreasing(lengths, cap)
        assert sorted(i for b in bins for i in b) == list(range(len(lengths)))  # every item exactly once
        assert all(sum(lengths[i] for i in b) <= cap for b in bins)
        lower = -(-sum(lengths) // cap)  # no packing can use fewer bins
        assert len(bins) <= lower * 11 // 9 + 1  # close to it (BFD is within 11/9 OPT + 6/9)


def test_packed_rows_layout():
    tok = fixture_tokenizer("qwen3")
    enc = Pretokenizer(tok)({"messages": [r["messages"] for r in rows(10)]})
    samples = [{"input_ids": i, "labels": l} for i, l in zip(enc["input_ids"], enc["labels"])]
    packed, cut = pack(samples, 300)
    assert cut == 0
    assert sum(len(p["lengths"]) for p in packed) == 10
    for p in packed:
        starts = np.flatnonzero(p["position_ids"] == 0)
        assert list(np.diff(np.append(starts, len(p["input_ids"])))) == list(p["lengths"])
        assert (p["labels"][starts] == -100).all()
    # the tokens of every sample are kept, in order
    flat = sorted(tuple(p["input_ids"][s:s + n]) for p in packed
                  for s, n in zip(np.concatenate([[0], np.cumsum(p["lengths"])[:-1]]), p["lengths"]))
    assert flat == sorted(tuple(x) for x in enc["input_ids"])


def per_sample_losses(logits, labels, boundaries):
    out = []
    for a, b in boundaries:
        lg, lb = logits[a:b - 1], labels[a + 1:b]
        keep = lb != -100
        out.append(F.cross_entropy(lg[keep].float(), lb[keep], reduction="sum").item() if keep.any() else 0.0)
    return out


def test_per_sample_losses_packed_equal_padded():
    tok = fixture_tokenizer("qwen3")
    model = tiny_model(len(tok))
    model.eval()
    data = rows(8)
    enc = Pretokenizer(tok)({"messages": [r["messages"] for r in data]})
    samples = [{"input_ids": list(i), "labels": list(l)} for i, l in zip(enc["input_ids"], enc["labels"])]
    packed, _ = pack(samples, 400)
    assert len(packed) < len(samples)
    flat = ResponseOnlyCollator(tok, padding_free=True)(
        [{k: p[k] for k in ("input_ids", "labels", "position_ids")} for p in packed])
    padded = ResponseOnlyCollator(tok)(samples)
    with torch.no_grad():
        lf = model(**{k: v for k, v in flat.items() if k != "labels"}).logits[0]
        lp = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits
    cu = flat["cu_seq_lens_q"].tolist()
    packed_losses = per_sample_losses(lf, flat["labels"][0], list(zip(cu[:-1], cu[1:])))
    padded_losses = []
    for r in range(len(samples)):
        n = int(padded["attention_mask"][r].sum())
        padded_losses += per_sample_losses(lp[r, :n], padded["labels"][r, :n], [(0, n)])
    assert sorted(np.round(packed_losses, 3)) == pytest.approx(sorted(np.round(padded_losses, 3)), abs=2e-3)
    # and the batch losses agree too
    with torch.no_grad():
        assert torch.allclose(model(**flat).loss, model(**padded).loss, atol=1e-5)


def test_packed_rows_need_padding_free():
    tok = fixture_tokenizer("qwen3")
    with pytest.raises(SampleError, match="packed row .*padding_free=True"):
        ResponseOnlyCollator(tok)([{"input_ids": [1, 2, 3], "labels": [-100, 2, 3], "position_ids": [0, 0, 1]}])


def test_packer_in_datasets_map():
    tok = fixture_tokenizer("qwen3")
    ds = datasets.Dataset.from_list(rows(20))
    ds = ds.map(Pretokenizer(tok), batched=True, remove_columns=ds.column_names)
    packed = ds.map(Packer(512), batched=True, batch_size=1000, remove_columns=ds.column_names)
    assert len(packed) < len(ds)
    assert sum(sum(r["lengths"]) for r in packed) == sum(len(r["input_ids"]) for r in ds)


def test_padding_saved_on_a_length_mix():
    rng = random.Random(1)
    lengths = [int(rng.lognormvariate(6.5, 0.9)) for _ in range(2000)]  # a long-tailed mix, median ~650
    stats = padding_stats(lengths, batch_size=8, max_length=4096)
    assert stats["padding_fraction_packed_rows"] < 0.05 < stats["padding_fraction_padded"]


def test_packer_warns_about_the_samples_it_truncates():
    """A sample longer than the budget is cut to its first max_length tokens: the Packer says how
    many samples, tokens and trained tokens, and which samples then train nothing."""
    import warnings

    from respmask import RespmaskWarning

    tok = fixture_tokenizer("qwen3")
    enc = Pretokenizer(tok)({"messages": [r["messages"] for r in rows(10)]})
    ids, labels = enc["input_ids"], enc["labels"]
    L = 40
    long = [j for j, x in enumerate(ids) if len(x) > L]
    cut_tokens = sum(len(ids[j]) - L for j in long)
    cut_trained = sum(int((np.asarray(labels[j][L:]) != -100).sum()) for j in long)
    emptied = [j for j in long if (np.asarray(labels[j][:L]) == -100).all()]
    assert long and emptied and cut_trained  # the batch has each case
    with pytest.warns(RespmaskWarning) as caught:
        packed = Packer(L)({"input_ids": ids, "labels": labels})
    message = str(caught[0].message)
    named = ", ".join(map(str, long[:8])) + (" ..." if len(long) > 8 else "")  # the first eight named
    assert (f"{len(long)} of 10 samples in this batch (rows {named}) are longer than "
            f"max_length={L} and were truncated to their first {L} tokens: {cut_tokens} token(s) cut, "
            f"{cut_trained} of them trained; {len(emptied)} of them now train no token") in message
    assert sum(sum(r) for r in packed["lengths"]) == sum(min(len(x), L) for x in ids)
    # nothing to cut: nothing said
    with warnings.catch_warnings():
        warnings.simplefilter("error", RespmaskWarning)
        Packer(max(map(len, ids)))({"input_ids": ids, "labels": labels})
