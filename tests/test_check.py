"""respmask.check tells what is true of a dataset (a new user's hunt, findings 14, 16 and 7): a
pre-tokenized row that trains every token, options that did nothing, a stop token that never ends
a turn, a content list printed as its repr."""

from __future__ import annotations

import json
import warnings

import numpy as np

import respmask
from respmask import ResponseOnlyCollator
from respmask._cli import main
from respmask._encode import EVERY_TOKEN_TRAINED
from support.tokenizers import fixture_tokenizer

CHAT = [{"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": "It is sunny in Paris."}]


# -- finding 14: pre-tokenized rows that train every token; options they do not use ----------------

def _pretokenized(tok):
    pre = respmask.Pretokenizer(tok)({"messages": [CHAT] * 4})
    rows = [{"input_ids": ids, "labels": labels} for ids, labels in zip(pre["input_ids"], pre["labels"])]
    for i in (1, 3):  # labels copied from input_ids: no masking applied (what TRL's own preparation writes)
        rows[i] = {"input_ids": rows[i]["input_ids"], "labels": list(rows[i]["input_ids"])}
    return rows


def test_check_reports_pretokenized_rows_that_train_every_token_as_the_collator_warns(tmp_path, capsys):
    tok = fixture_tokenizer("qwen2_5")
    rows = _pretokenized(tok)
    assert (np.asarray(rows[0]["labels"]) == -100).sum() > 5  # the respmask rows mask their prompt

    report = respmask.check(rows, tok)
    assert report.every_token_trained == [1, 3] and report.pretokenized == 4
    assert not report.ok and report.untrainable == []
    text = report.summary()
    assert "arrived with labels on every token: 2  [1, 3]  (labels on every token (the prompt is trained too)" in text
    assert "respmask.Pretokenizer" in text and text.endswith("PROBLEMS FOUND")
    assert report.to_dict()["every_token_trained"] == [1, 3]

    # the collator warns about the same rows, with the same words
    collator = ResponseOnlyCollator(tok, return_tensors="np")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        collator(rows)
    assert collator.stats.every_token_trained == 2
    assert any(EVERY_TOKEN_TRAINED in str(w.message) for w in seen)

    # the CLI says it too, and exits 1
    tok_dir = tmp_path / "tok"
    tok.save_pretrained(tok_dir)
    data = tmp_path / "pre.jsonl"
    data.write_text("".join(json.dumps({k: [int(x) for x in v] for k, v in r.items()}) + "\n" for r in rows))
    assert main(["check", str(data), "--tokenizer", str(tok_dir)]) == 1
    out = capsys.readouterr().out
    assert "arrived with labels on every token: 2  [1, 3]" in out and "options not used" not in out
    assert main(["check", str(data), "--tokenizer", str(tok_dir), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["every_token_trained"] == [1, 3]


def test_check_says_which_options_did_nothing_to_pretokenized_rows(tmp_path, capsys):
    tok = fixture_tokenizer("qwen2_5")
    rows = [r for i, r in enumerate(_pretokenized(tok)) if i in (0, 2)]  # masked rows: nothing else to report
    assert respmask.check(rows, tok).options_unused == []
    report = respmask.check(rows, tok, train_on="last", template_kwargs={"enable_thinking": False}, split="auto",
                            chat_template="{% for m in messages %}{{ m.content }}{% endfor %}")
    assert report.options_unused == ["chat_template", "template_kwargs", "train_on", "split"]
    text = report.summary()
    assert ("options not used on the 2 pre-tokenized sample(s): chat_template, template_kwargs, train_on, split "
            "(no checked sample was rendered: they had no effect)") in text
    assert report.to_dict()["options_unused"] == ["chat_template", "template_kwargs", "train_on", "split"]

    # a dataset that mixes both: the options act on the chats, not on the pre-tokenized rows
    mixed = respmask.check([{"messages": CHAT}, *rows], tok, train_on="last")
    assert mixed.options_unused == ["train_on"] and mixed.pretokenized == 2
    assert "options not used on the 2 pre-tokenized sample(s): train_on;" in mixed.summary()
    assert respmask.check([{"messages": CHAT}], tok, train_on="last").options_unused == []

    tok_dir = tmp_path / "tok"
    tok.save_pretrained(tok_dir)
    data = tmp_path / "pre.jsonl"
    data.write_text("".join(json.dumps({k: [int(x) for x in v] for k, v in r.items()}) + "\n" for r in rows))
    assert main(["check", str(data), "--tokenizer", str(tok_dir), "--train-on", "last",
                 "--template-kwargs", '{"enable_thinking": false}']) == 0
    out = capsys.readouterr().out
    assert "options not used on the 2 pre-tokenized sample(s): template_kwargs, train_on" in out
