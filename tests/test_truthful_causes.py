"""Reports name the real cause (a new user's hunt, findings 9, 10 and 13): a left cut of correctly
masked pre-tokenized rows is not TRL's labels-on-every-token; a pre-tokenized row with no trained
label is not a conversation without a reply; a collator error names the dataset row, not just the
position in the batch."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

datasets = pytest.importorskip("datasets")
transformers = pytest.importorskip("transformers")

import respmask  # noqa: E402
from respmask import ResponseOnlyCollator  # noqa: E402
from support.tokenizers import fixture_tokenizer  # noqa: E402
from test_trainer import _args, tiny_model  # noqa: E402

LONG_REPLY = [{"role": "system", "content": "You are a storyteller. " * 6},
              {"role": "user", "content": "Write a long story."},
              {"role": "assistant", "content": "Once upon a time " * 12}]


def _collate(collator, rows):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        batch = collator(rows)
    return batch, [str(w.message) for w in seen if issubclass(w.category, respmask.RespmaskWarning)]


def _trainer(tmp_path, tok, ds, collator):
    return transformers.Trainer(model=tiny_model(len(tok)), args=_args(tmp_path, max_steps=1),
                                train_dataset=ds, data_collator=collator)


# -- finding 9: a left cut that keeps only a reply is not TRL's labels = input_ids ----------------

def test_a_left_cut_of_pretokenized_rows_keeping_only_the_reply_is_not_blamed_on_trl(tmp_path):
    tok = fixture_tokenizer("llama3_1")  # a reply ends with its trained stop token: a kept window can be all reply
    pre = respmask.Pretokenizer(tok)({"messages": [LONG_REPLY] * 4})
    row = {"input_ids": pre["input_ids"][0], "labels": pre["labels"][0]}
    labels = np.asarray(row["labels"])
    assert (labels == -100).sum() > 20 and (labels != -100).sum() > 20  # the prompt is masked, the reply trained
    collator = ResponseOnlyCollator(tok, max_length=16, truncation="left", return_tensors="np")
    batch, said = _collate(collator, [row])
    assert (batch["labels"][0] != -100).all()  # the kept window is all reply: every kept token trains
    assert said == [] and collator.stats.every_token_trained == 0 and collator.stats.truncated == 1

    # the control: labels copied from input_ids (what TRL's own preparation makes) are still named, cut or not
    copied = {"input_ids": row["input_ids"], "labels": list(row["input_ids"])}
    for max_length in (None, 16):
        collator = ResponseOnlyCollator(tok, max_length=max_length, truncation="left", return_tensors="np")
        _, said = _collate(collator, [copied])
        assert collator.stats.every_token_trained == 1 and len(said) == 1 and "TRL's SFTTrainer" in said[0]

    # check_trainer judges the rows as the collator does: on the labels they arrived with
    ds = datasets.Dataset.from_dict({k: pre[k] for k in ("input_ids", "labels")})
    report = respmask.check_trainer(_trainer(tmp_path, tok, ds, ResponseOnlyCollator(
        tok, max_length=16, truncation="left")), batches=1, verbose=False)
    assert report.tokens == report.trained_tokens == 4 * 16  # every kept token trains ...
    assert report.ok, str(report)  # ... and that is no problem
    trl = datasets.Dataset.from_dict({"input_ids": pre["input_ids"], "labels": pre["input_ids"]})
    report = respmask.check_trainer(_trainer(tmp_path, tok, trl, ResponseOnlyCollator(
        tok, max_length=16, truncation="left")), batches=1, verbose=False)
    assert [p.what for p in report.problems] == ["samples reach the model with labels on every token (prompts are "
                                                 "trained)"]
