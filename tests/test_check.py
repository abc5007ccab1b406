"""respmask.check tells what is true of a dataset (a new user's hunt, findings 14, 16 and 7): a
pre-tokenized row that trains every token, options that did nothing, a stop token that never ends
a turn, a content list printed as its repr."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import respmask
from respmask import ResponseOnlyCollator
from respmask._cli import main
from respmask._encode import EVERY_TOKEN_TRAINED, JOIN_TEXT_PARTS
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


# -- finding 16: a stop_tokens entry that never ends a turn (a typo) is named -------------------

GLM_CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                         {"role": "user", "content": "again"}, {"role": "assistant", "content": "yes"}]}


def test_check_names_a_stop_token_that_ends_no_turn_with_its_close_spellings():
    tok = fixture_tokenizer("glm4_5")  # GLM-4.5 closes no turn: the next role token ends it, given as a stop token
    plain = respmask.check([GLM_CHAT] * 2, tok)
    right = respmask.check([GLM_CHAT] * 2, tok, stop_tokens=["<|user|>"])
    typo = respmask.check([GLM_CHAT] * 2, tok, stop_tokens=["<|usr|>"])
    assert len(plain.turns_without_stop) == 4 and len(right.turns_without_stop) == 2  # the right one ends turns
    assert right.stop_tokens_unused == [] and plain.stop_tokens_unused == []
    assert typo.turns_without_stop == plain.turns_without_stop  # the typo matched nothing ...
    assert typo.stop_tokens_unused == [("<|usr|>", False, ["<|user|>"])]  # ... and check says so
    assert ("stop_tokens entry '<|usr|>' ends no trained turn in the 2 sample(s) checked (it occurs nowhere in "
            "their rendered text): did you mean '<|user|>'?") in typo.summary()
    assert typo.to_dict()["stop_tokens_unused"] == [("<|usr|>", False, ["<|user|>"])]

    # the finding's own case: a typo beside the template's learned end-of-turn token, which ends every turn
    qwen = fixture_tokenizer("qwen2_5")
    report = respmask.check([{"messages": CHAT}], qwen, stop_tokens=["<|im_end|>", "<|im_ned|>"])
    assert report.ok and report.turns_without_stop == []  # the masks are right: only the typo is said
    assert report.stop_tokens_unused == [("<|im_ned|>", False, ["<|im_end|>"])]
    # a string that occurs in the text but never where a reply ends is told apart; a legit multi-character stop
    # string that ends turns (no token of the tokenizer) is not named
    said = respmask.check([{"messages": CHAT}], qwen, stop_tokens=["Paris"]).stop_tokens_unused
    assert said == [("Paris", True, [])]
    assert "it occurs in their text, never where a reply ends" in respmask.check(
        [{"messages": CHAT}], qwen, stop_tokens=["Paris"]).summary()
    assert respmask.check([GLM_CHAT], tok, stop_tokens=["<|user|>\nag"]).stop_tokens_unused == [
        ("<|user|>\nag", True, ["<|user|>"])]  # it reaches into the next message's text: no stop (the replay rule)
    template = ("{% for m in messages %}{% if m.role == 'user' %}<u>Q: {{ m.content }}\n{% else %}A: {{ m.content }}"
                "\n{% endif %}{% endfor %}")
    own = respmask.check([GLM_CHAT], qwen, chat_template=template, stop_tokens=["<u>Q"])
    assert own.stop_tokens_unused == [] and own.turns_without_stop == [(0, 3)]


def test_the_cli_takes_stop_tokens_in_check_preview_and_tokenize(tmp_path, capsys):
    tok = fixture_tokenizer("glm4_5")
    tok_dir = tmp_path / "tok"
    tok.save_pretrained(tok_dir)
    data = tmp_path / "chats.jsonl"
    data.write_text(json.dumps(GLM_CHAT) + "\n")
    assert main(["check", str(data), "--tokenizer", str(tok_dir), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["turns_without_stop"]) == 2
    assert main(["check", str(data), "--tokenizer", str(tok_dir), "--json", "--stop-tokens", "<|user|>",
                 "--stop-tokens", "<|observation|>"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["turns_without_stop"]) == 1 and report["stop_tokens_unused"] == [
        ["<|observation|>", False, []]]  # no tool result in this chat: truthfully named, not a failure
    assert main(["check", str(data), "--tokenizer", str(tok_dir), "--stop-tokens", "<|usr|>"]) == 0
    assert "stop_tokens entry '<|usr|>' ends no trained turn" in capsys.readouterr().out

    assert main(["preview", str(data), "--tokenizer", str(tok_dir), "--no-color", "--stop-tokens", "<|user|>"]) == 0
    assert "hello<|user|>⟧" in capsys.readouterr().out.replace("↵", "")

    trained = {}
    for name, flags in (("plain", []), ("stop", ["--stop-tokens", "<|user|>"])):
        assert main(["tokenize", str(data), str(tmp_path / name), "--tokenizer", str(tok_dir), "--quiet", "--json",
                     *flags]) == 0
        trained[name] = json.loads(capsys.readouterr().out)["trained_tokens"]
    assert trained["stop"] == trained["plain"] + 1  # the first reply's stop token, '<|user|>', now trains


# -- finding 7: content parts a text template prints as a list's repr -----------------------------

def _parts(text):
    return [{"type": "text", "text": text}]


PARTS_CHAT = {"messages": [{"role": "user", "content": _parts("What is the weather in Paris?")},
                           {"role": "assistant", "content": _parts("It is sunny in Paris.")}]}


def test_check_reports_content_parts_a_template_prints_as_their_repr(tmp_path, capsys):
    tok = fixture_tokenizer("llama3_1")  # its template prints a message's content as it is: a list shows its repr
    rows = [{"messages": CHAT}, PARTS_CHAT, {"messages": [*CHAT[:2], {"role": "assistant",
                                                                     "content": _parts("Sunny.")}]}]
    masks = respmask.ChatMasker(tok).encode(PARTS_CHAT)
    trained = tok.decode(masks.input_ids[masks.labels != -100])
    assert trained.startswith("[{'type': 'text', 'text': 'It is sunny in Paris.'}]")  # what is trained (as the reference)

    report = respmask.check(rows, tok)
    assert report.content_printed == [(1, 0, "user"), (1, 1, "assistant"), (2, 2, "assistant")]
    assert not report.ok and report.errors == [] and report.untrainable == []
    text = report.summary()
    assert ("content lists the chat template prints as written: 3 message(s) in 2 sample(s)  [sample, message: "
            "(1, 0), (1, 1), (2, 2)]  (roles 'user', 'assistant': the template prints a list of content parts as "
            "its repr") in text
    assert "what to do: give each such content as a string, its text parts joined: ds = ds.map(" in text
    assert report.to_dict()["content_printed"] == [(1, 0, "user"), (1, 1, "assistant"), (2, 2, "assistant")]

    # the fix it gives works: the same rows through it are OK
    import datasets

    ds = datasets.Dataset.from_list([PARTS_CHAT, PARTS_CHAT])
    scope = {"ds": ds}
    exec(JOIN_TEXT_PARTS, scope)
    fixed = respmask.check(scope["ds"], tok)
    assert fixed.ok and fixed.content_printed == [] and fixed.trained_tokens < report.trained_tokens
    assert scope["ds"][0]["messages"][1]["content"] == "It is sunny in Paris."

    # check_trainer names it as a problem of the dataset, with the same fix
    import transformers
    from test_trainer import _args, tiny_model

    # a list: Arrow cannot hold strings and part lists in one column
    trainer = transformers.Trainer(model=tiny_model(len(tok)), args=_args(tmp_path, max_steps=1,
                                                                          remove_unused_columns=False),
                                   train_dataset=rows[:2],
                                   data_collator=ResponseOnlyCollator(tok))
    checked = respmask.check_trainer(trainer, batches=1, verbose=False)
    (problem,) = checked.problems
    assert problem.what == "1 sample(s) hold content parts the chat template prints as a list (rows 1)"
    assert problem.fix.endswith(JOIN_TEXT_PARTS)

    # the CLI says it and exits 1
    tok_dir = tmp_path / "tok"
    tok.save_pretrained(tok_dir)
    data = tmp_path / "parts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["check", str(data), "--tokenizer", str(tok_dir)]) == 1
    out = capsys.readouterr().out
    assert "content lists the chat template prints as written: 3 message(s) in 2 sample(s)" in out


def test_content_parts_are_not_reported_where_the_template_reads_them():
    from support.tokenizers import FIXTURES, build_tokenizer

    # Gemma 3's and Qwen2-VL's templates read text parts: the word is rendered, no list
    gemma = fixture_tokenizer("gemma3")
    qwen_vl = build_tokenizer((FIXTURES / "vision" / "qwen2_vl.jinja").read_text(), eos="<|im_end|>",
                              special=["<|im_start|>", "<|im_end|>"])
    for tok in (gemma, qwen_vl):
        text = tok.apply_chat_template(PARTS_CHAT["messages"], tokenize=False)
        assert "It is sunny in Paris." in text and "'type'" not in text
        report = respmask.check([PARTS_CHAT], tok)
        assert report.content_printed == [] and report.ok, report.summary()
    # a user text that holds such a repr itself is data, not a printed list
    quoted = {"messages": [{"role": "user", "content": "Why does it print [{'type': 'text', 'text': 'hi'}]?"},
                           {"role": "assistant", "content": "Its template prints the list."}]}
    assert respmask.check([quoted], fixture_tokenizer("llama3_1")).content_printed == []
    # roles are probed one by one: a template that prints only the system content as written names only it
    mllama = build_tokenizer((FIXTURES / "vision" / "mllama.jinja").read_text(), eos="<|eot_id|>",
                             special=["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"])
    rows = [{"messages": [{"role": "system", "content": _parts("Be brief.")}, *PARTS_CHAT["messages"]]}]
    assert respmask.check(rows, mllama).content_printed == [(0, 0, "system")]


def test_a_template_that_raises_on_content_parts_says_to_give_strings():
    """Qwen2.5's template concatenates a message's content to strings: a list of parts raises; the
    error now says the conversation renders once each list is given as a string, and how."""
    tok = fixture_tokenizer("qwen2_5")
    report = respmask.check([PARTS_CHAT, {"messages": CHAT}], tok)
    ((index, error),) = report.errors
    assert index == 0 and "the chat template raised TypeError" in error
    assert ("The chat template reads content as a string: it renders this conversation once the content of "
            "message(s) 0, 1, a list of text parts, is given as a string (its text parts joined): " + JOIN_TEXT_PARTS
            ) in error
    with pytest.raises(respmask.SampleError, match="reads content as a string"):
        ResponseOnlyCollator(tok)([PARTS_CHAT])
    # what the hint says is true: with the strings joined the conversation renders (and checks OK)
    joined = {"messages": [{**m, "content": m["content"][0]["text"]} for m in PARTS_CHAT["messages"]]}
    assert respmask.check([joined], tok).ok
    # no hint where strings would not render either: the template raises on this reply for another cause
    template = ("{% for m in messages %}{{ '<' + m.role + '>' + m.content + '</s>' }}{% if m.content == 'bad' %}"
                "{{ raise_exception('no bad replies') }}{% endif %}{% endfor %}")
    bad = {"messages": [{"role": "user", "content": _parts("hi")}, {"role": "assistant", "content": _parts("bad")}]}
    (_, error), = respmask.check([bad], tok, chat_template=template).errors
    assert "the chat template raised TypeError" in error and "reads content as a string" not in error
    good = {"messages": [{"role": "user", "content": _parts("hi")}, {"role": "assistant", "content": _parts("ok")}]}
    (_, error), = respmask.check([good], tok, chat_template=template).errors
    assert "reads content as a string" in error


@pytest.mark.parametrize("truncation", ["right", "left"])
def test_trained_turns_are_counted_after_truncation(truncation):
    """At max_length=30 only 'a1<|im_end|>' of three replies trained, and check and the collator's
    summary said 3 trained turns: both (and preview) count the turns that keep a trained token after
    the cut, the same number; uncut, all three."""
    tok = fixture_tokenizer("qwen2_5")
    row = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q1"},
                        {"role": "assistant", "content": "a1"},
                        {"role": "user", "content": "q2 " * 50}, {"role": "assistant", "content": "a2 " * 20},
                        {"role": "user", "content": "q3"}, {"role": "assistant", "content": "a3"}]}
    for max_length in (None, 30, 12):
        cut = {"max_length": max_length, "truncation": truncation} if max_length else {}
        collator = ResponseOnlyCollator(tok, return_tensors="np", on_untrainable="keep", **cut)
        batch = collator([row])
        labels = batch["labels"][0]
        trained = tok.decode(batch["input_ids"][0][labels != -100])
        expected = sum(reply in trained for reply in ("a1", "a2", "a3"))  # the replies a token of which trains
        report = respmask.check([row], tok, **cut)
        assert collator.stats.turns == report.turns == expected, (max_length, trained)
        assert f"trained turns:      {expected}" in report.summary()
        assert f", {expected} assistant turns;" in str(collator.stats)
        shown = collator.preview(row)
        assert shown.turns == expected
        if max_length is None:
            assert expected == 3
        elif max_length == 30:
            assert expected == (1 if truncation == "right" else 2)  # a1 alone, or a2's end and a3
