"""Reports name the real cause (a new user's hunt, findings 9, 10 and 13): a left cut of correctly
masked pre-tokenized rows is not TRL's labels-on-every-token; a pre-tokenized row with no trained
label is not a conversation without a reply; a collator error names the dataset row, not just the
position in the batch."""

from __future__ import annotations

import re
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
        cut = {"truncation": "left"} if max_length else {}  # a side applies only with a length (else it warns)
        collator = ResponseOnlyCollator(tok, max_length=max_length, return_tensors="np", **cut)
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


# -- finding 10: a pre-tokenized row with no trained label holds no conversation to blame ---------

def test_a_pretokenized_row_with_no_trained_label_is_told_apart_from_a_chat_without_a_reply(tmp_path):
    tok = fixture_tokenizer("qwen2_5")
    short = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    pre = respmask.Pretokenizer(tok, max_length=80)({"messages": [LONG_REPLY, short, LONG_REPLY, short]})
    dead = [i for i, labels in enumerate(pre["labels"]) if all(x == -100 for x in labels)]
    assert dead == [0, 2]  # the cut kept only the long system prompt of those rows: every reply went with it
    rows = [{"input_ids": ids, "labels": labels} for ids, labels in zip(pre["input_ids"], pre["labels"])]

    _, said = _collate(ResponseOnlyCollator(tok, return_tensors="np"), rows)
    assert len(said) == 1 and "[batch sample 0, batch sample 2]" in said[0]
    assert "arrived pre-tokenized with every label -100" in said[0] and "larger max_length" in said[0]
    assert "assistant reply" not in said[0] and "train=false" not in said[0]
    with pytest.raises(respmask.UntrainableSampleError, match="arrived pre-tokenized"):
        ResponseOnlyCollator(tok, on_untrainable="raise")(rows)

    report = respmask.check(rows, tok)
    assert report.untrainable == report.pretokenized_untrainable == [0, 2] and report.truncated_untrainable == []
    assert "of which pre-tokenized with every label -100: 0, 2" in report.summary()
    assert report.to_dict()["pretokenized_untrainable"] == [0, 2]

    ds = datasets.Dataset.from_dict({k: pre[k] for k in ("input_ids", "labels")})
    report = respmask.check_trainer(_trainer(tmp_path, tok, ds, ResponseOnlyCollator(tok)), batches=1, verbose=False)
    (problem,) = report.problems
    assert problem.what == "2 pre-tokenized sample(s) have no trained token (rows 0, 2)"
    assert "made before respmask saw them" in problem.cause and "assistant reply" not in problem.cause
    assert "pre-tokenize again with a larger max_length or truncation='left'" in problem.fix

    # the controls: a conversation without a reply, and a pre-tokenized row whose replies the collator's
    # own cut removes, keep their own causes
    no_reply = {"messages": [{"role": "user", "content": "a question nobody answers"}]}
    _, said = _collate(ResponseOnlyCollator(tok, return_tensors="np"), [no_reply])
    assert "give them an assistant reply" in said[0] and "pre-tokenized" not in said[0]
    report = respmask.check([no_reply], tok)
    assert report.untrainable == [0] and report.pretokenized_untrainable == []
    _, said = _collate(ResponseOnlyCollator(tok, max_length=8, return_tensors="np"), [rows[1]])
    assert "truncation to max_length=8 (right) removed all its trained tokens" in said[0]
    assert "pre-tokenized" not in said[0]
    report = respmask.check([rows[1]], tok, max_length=8)
    assert report.truncated_untrainable == [0] and report.pretokenized_untrainable == []


# -- finding 13: a collator error names the dataset row, as the warnings do ----------------------

def _chat(i):
    return {"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]}


def test_collator_errors_name_the_dataset_row_when_the_rows_carry_one(tmp_path):
    tok = fixture_tokenizer("qwen2_5")
    rows = [{**_chat(i), "index": i} for i in range(16)]
    rows[13]["messages"][1]["train"] = "false"  # a string where a bool belongs
    batch = [rows[4], rows[9], rows[13], rows[0]]
    with pytest.raises(respmask.SampleError) as info:
        ResponseOnlyCollator(tok)(batch)
    assert type(info.value) is respmask.SampleError and info.value.index == 2
    assert str(info.value) == "batch sample 2 (dataset row 13): 'messages'[1]['train'] must be true or false, got 'false'"

    # without an id column the number is still the position, and the error says so and how to name rows
    plain = [{"messages": row["messages"]} for row in batch]
    with pytest.raises(respmask.SampleError) as info:
        ResponseOnlyCollator(tok)(plain)
    text = str(info.value)
    assert info.value.index == 2 and text.startswith("sample 2: 'messages'[1]['train'] must be true or false")
    assert "is its position in this batch, not a dataset row" in text and "add_column('index'" in text

    # the errors the collator raises itself name the row the same way
    no_reply = {"messages": [{"role": "user", "content": "nobody answers"}], "id": "chat-7"}
    with pytest.raises(respmask.UntrainableSampleError) as info:
        ResponseOnlyCollator(tok, on_untrainable="raise")([_chat(0), no_reply])
    assert info.value.index == 1 and str(info.value).startswith("batch sample 1 (dataset row 'chat-7'): no trained token")
    packed = {"input_ids": [1, 2, 3, 4], "labels": [-100, 2, 3, 4], "position_ids": [0, 1, 0, 1], "index": 5}
    with pytest.raises(respmask.SampleError, match=r"^batch sample 0 \(dataset row 5\): is a packed row"):
        ResponseOnlyCollator(tok)([packed])

    # in training: the Trainer's sampler shuffles, so the position in the batch is not the dataset row
    ds = datasets.Dataset.from_list(rows)
    trainer = transformers.Trainer(
        model=tiny_model(len(tok)), args=_args(tmp_path, max_steps=4, remove_unused_columns=False),
        train_dataset=ds, data_collator=ResponseOnlyCollator(tok))
    with pytest.raises(respmask.SampleError) as info:
        trainer.train()
    assert re.fullmatch(r"batch sample \d \(dataset row 13\): 'messages'\[1\]\['train'\] must be true or false, "
                        r"got 'false'", str(info.value)), str(info.value)


# -- finding 8: reasoning a template never renders is lost data, not "earlier turns' reasoning" -----

NOT_RENDERED = "reasoning (the chat template renders none here, not even as the last turn, so no split trains it)"


def _reasoned(n):
    return {"role": "assistant", "content": f"answer {n}", "reasoning_content": f"Let me think about question {n}."}


@pytest.mark.parametrize("name", ["llama3_1", "deepseek_r1"])
def test_reasoning_a_template_never_renders_is_lost_data_on_every_turn(name):
    tok = fixture_tokenizer(name)
    one = {"messages": [{"role": "user", "content": "question 1"}, _reasoned(1)]}
    two = {"messages": [{"role": "user", "content": "question 1"}, _reasoned(1),
                        {"role": "user", "content": "question 2"}, _reasoned(2)]}
    for split in ("never", "auto"):
        masker = respmask.ChatMasker(tok, split=split)
        assert masker.encode_rows(one)[0].dropped == [(1, NOT_RENDERED)]
        assert sorted(masker.encode_rows(two)[0].dropped) == [(1, NOT_RENDERED), (3, NOT_RENDERED)]
        report = respmask.check([one, two], tok, split=split)
        assert not report.ok and report.dropped_reasoning_tokens == 0 and len(report.lost) == 3
        text = report.summary()
        assert "earlier turns" not in text and "split='auto' trains it" not in text
        assert "not even as the last turn, so no split trains it): 3" in text
    _, said = _collate(ResponseOnlyCollator(tok, return_tensors="np"), [two])
    assert len(said) == 1 and "data the chat template leaves out of the render (reasoning" in said[0]


def test_earlier_turns_reasoning_a_template_renders_last_stays_earlier_reasoning():
    tok = fixture_tokenizer("qwen3")  # renders the last reply's reasoning, strips it from history
    two = {"messages": [{"role": "user", "content": "question 1"}, _reasoned(1),
                        {"role": "user", "content": "question 2"}, _reasoned(2)]}
    assert respmask.ChatMasker(tok).encode_rows(two)[0].dropped == [(1, "reasoning")]
    report = respmask.check([two], tok)
    assert report.ok and report.lost == [] and report.dropped_reasoning_tokens > 0
    assert "reasoning the template leaves out (earlier turns): 1 message(s)" in report.summary()
    assert respmask.check([two], tok, split="auto").dropped == []  # a prefix row trains it
    # with train_on="last" the first reply is context: history without its reasoning is what inference reads too
    for split in ("never", "auto"):
        assert respmask.ChatMasker(tok, train_on="last", split=split).encode_rows(two)[0].dropped == []
        report = respmask.check([two], tok, train_on="last", split=split)
        assert report.ok and report.dropped == [] and "reasoning" not in report.summary()
        collator = ResponseOnlyCollator(tok, train_on="last", split=split, return_tensors="np")
        collator([two])
        assert collator.stats.dropped_reasoning == 0 and "split='auto' trains it" not in str(collator.stats)
