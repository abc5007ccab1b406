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


def _packed_features(tok, n=6, length=300):
    enc = Pretokenizer(tok)({"messages": [r["messages"] for r in rows(n)]})
    packed, cut = pack([{"input_ids": i, "labels": l} for i, l in zip(enc["input_ids"], enc["labels"])], length)
    assert cut == 0
    return packed


def test_packed_row_longer_than_max_length_is_refused():
    """A packed row cut to a smaller max_length lost the samples past the cut whole, silently
    (4 samples of 46 tokens packed in a row, collated with max_length=64: cu_seq_lens [0, 46, 64]). It is
    refused: the collator raises, check lists every such row as an error and is not OK."""
    from respmask import check

    tok = fixture_tokenizer("qwen3")
    packed = _packed_features(tok)
    longest = max(len(p["input_ids"]) for p in packed)
    feats = [{k: p[k].tolist() for k in ("input_ids", "labels", "position_ids")} for p in packed]
    assert all(len(p["input_ids"]) > 64 for p in packed) and any(len(p["lengths"]) > 1 for p in packed)
    with pytest.raises(SampleError, match=r"packed row .* longer than max_length=64: cutting it would drop the "
                                          r"samples past the cut whole.* at least the pack length"):
        ResponseOnlyCollator(tok, padding_free=True, max_length=64)(feats)
    report = check(feats, tok, max_length=64)
    assert not report.ok and [i for i, _ in report.errors] == list(range(len(feats)))
    assert len(report.error_groups()) == 1  # one wording for every such row
    # collated for the length they were packed for, every sample is kept and the report counts in rows
    out = ResponseOnlyCollator(tok, padding_free=True, max_length=longest, return_tensors="np")(feats)
    assert len(out["cu_seq_lens_q"]) - 1 == sum(len(p["lengths"]) for p in packed)
    report = check(feats, tok, max_length=longest)
    assert report.ok and report.samples == report.packed_rows == len(packed)
    assert report.packed_samples == sum(len(p["lengths"]) for p in packed)
    assert f"of which packed rows: {len(packed)}, holding {report.packed_samples} samples" in report.summary()


def test_check_trainer_lists_packed_rows_longer_than_max_length(tmp_path):
    """check_trainer said 'truncated to 256: 174 sample(s)' and 'No problems found' for packed rows
    the collator cut: it now lists them as a problem (once, not again as a failed batch), and its
    header counts dataset rows as its dataset section does, with the packed samples they hold."""
    from transformers import Trainer, TrainingArguments

    from respmask import check_trainer

    tok = fixture_tokenizer("qwen3")
    packed = _packed_features(tok, n=8)
    longest = max(len(p["input_ids"]) for p in packed)
    ds = datasets.Dataset.from_list([{k: p[k].tolist() for k in ("input_ids", "labels", "position_ids")}
                                     for p in packed])
    args = TrainingArguments(str(tmp_path), per_device_train_batch_size=2, report_to=[], use_cpu=True,
                             remove_unused_columns=False)

    def report(max_length):
        tr = Trainer(model=tiny_model(len(tok)), args=args, train_dataset=ds,
                     data_collator=ResponseOnlyCollator(tok, padding_free=True, max_length=max_length))
        return check_trainer(tr, batches=1, verbose=False)

    bad = report(64)
    assert not bad.ok and len(bad.problems) == 1, str(bad)
    assert f"{len(packed)} sample(s) cannot be masked" in bad.problems[0].what
    assert "packed row" in bad.problems[0].cause and "max_length=64" in bad.problems[0].cause
    assert "collate packed rows with a max_length of at least their pack length" in bad.problems[0].fix
    good = report(longest)
    assert good.ok, str(good)
    text = str(good)
    rows_seen = good.collator.samples
    assert rows_seen == min(2, len(packed))
    assert f": {rows_seen} dataset rows holding {good.samples} packed samples," in text
    assert good.samples > rows_seen
    assert f"the first {len(packed)} rows as stored" in text and f"samples:            {len(packed)}" in text
