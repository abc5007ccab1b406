"""Data the chat template leaves out of the render is reported, never lost silently (issue 12)."""

from __future__ import annotations

import warnings

import pytest

from respmask import ChatMasker, ResponseOnlyCollator, check
from support.conversations import WEATHER_TOOL
from support.tokenizers import fixture_tokenizer

CALL = {"id": "call00001", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}


def chat(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


def test_a_clean_conversation_drops_nothing():
    tok = fixture_tokenizer("qwen3")
    sample = {"messages": chat(("system", "s"), ("user", "q"), ("assistant", "a"))}
    assert ChatMasker(tok).encode(sample).dropped == []
    assert check([sample], tok).ok


def test_tool_calls_a_template_cannot_render():
    # Zephyr's template has no tool support: the call is dropped and the turn trains only </s>
    tok = fixture_tokenizer("zephyr")
    msgs = [*chat(("user", "weather?")), {"role": "assistant", "content": "", "tool_calls": [CALL]}]
    enc = ChatMasker(tok).encode({"messages": msgs, "tools": [WEATHER_TOOL]})
    # one entry for the message, naming what it lost (its header and stop token are rendered), and
    # one for the sample's tool list, which the template does not render either
    assert enc.dropped == [(1, "tool calls (only its header and stop token are rendered, so only the stop token "
                               "is trained)"),
                           (-1, "the tool list (the sample's 'tools': the chat template does not render it, so the "
                                "model is trained without seeing the tools)")]
    report = check([{"messages": msgs, "tools": [WEATHER_TOOL]}], tok)
    assert not report.ok and "data the chat template leaves out" in str(report)


def test_a_role_the_template_does_not_know():
    tok = fixture_tokenizer("qwen3")
    msgs = chat(("user", "q"), ("wizard", "abracadabra"), ("assistant", "a"))
    enc = ChatMasker(tok).encode({"messages": msgs})
    assert enc.dropped == [(1, "the whole message (role 'wizard')")]
    assert "abracadabra" not in tok.decode(enc.input_ids)


def test_an_empty_reply_trains_only_its_stop_token():
    tok = fixture_tokenizer("llama3_1")
    enc = ChatMasker(tok).encode({"messages": chat(("user", "q"), ("assistant", ""))})
    # it holds nothing, so it loses nothing: listed as an empty reply, not as lost data
    assert enc.dropped == [] and enc.empty_replies == [1]
    assert tok.decode(enc.input_ids[enc.labels != -100]) == "<|eot_id|>"


def test_reasoning_of_earlier_turns_is_listed_but_not_a_failure():
    # Qwen3 leaves out the reasoning of assistant turns before the last user message
    tok = fixture_tokenizer("qwen3")
    msgs = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1", "reasoning_content": "thought one"},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "a2", "reasoning_content": "thought two"},
    ]
    enc = ChatMasker(tok).encode({"messages": msgs})
    assert enc.dropped == [(1, "reasoning")]
    report = check([{"messages": msgs}], tok)
    assert report.ok and "reasoning the template leaves out (earlier turns): 1" in str(report)


def test_the_collator_counts_and_warns_about_dropped_data():
    tok = fixture_tokenizer("qwen3")
    collator = ResponseOnlyCollator(tok)
    batch = [{"messages": chat(("user", "q"), ("wizard", "w"), ("assistant", "a"))},
             {"messages": chat(("user", "q"), ("assistant", "a"))}]
    with pytest.warns(UserWarning, match=r"1 sample\(s\) \[batch sample 0\]: data the chat template leaves out of "
                                         r"the render \(the whole message\)"):
        collator(batch)
    assert collator.stats.dropped_data == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ResponseOnlyCollator(tok, on_untrainable="keep")(batch)  # silenced on request
        ResponseOnlyCollator(tok)(batch[1:])  # nothing lost: no warning


LOSSY = [
    {"messages": chat(("user", "q"), ("assistant", "fine"))},
    {"messages": chat(("user", "q"), ("wizard", "abracadabra"), ("assistant", "a"))},  # unknown role
    {"messages": chat(("user", "q"), ("assistant", "also fine"))},
    {"messages": [*chat(("user", "weather?")), {"role": "assistant", "content": "", "tool_calls": [CALL]}]},
]


def test_the_pretokenizer_warns_rejects_or_keeps_rows_that_lose_data():
    from respmask import Pretokenizer
    from respmask._errors import LostDataError

    tok = fixture_tokenizer("qwen3")
    cols = {"messages": [r["messages"] for r in LOSSY]}
    with pytest.warns(UserWarning, match=r"1 of 4 samples in this batch \(rows \[11\]\)"):
        kept = Pretokenizer(tok)(cols, indices=[10, 11, 12, 13])  # qwen3 renders the tool call
    assert len(kept["input_ids"]) == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(Pretokenizer(tok, on_lost_data="keep")(cols)["input_ids"]) == 4
    with pytest.raises(LostDataError, match=r"sample 1: .*message 1: the whole message \(role 'wizard'\)"):
        Pretokenizer(tok, on_lost_data="reject")(cols)
    out = Pretokenizer(tok, on_lost_data="reject", on_error="collect")(cols)
    assert [e is None for e in out["error"]] == [True, False, True, True]
    assert len(out["input_ids"][1]) == 0 and len(out["input_ids"][0]) > 0


def test_tokenize_rejects_rows_that_lose_data_unless_told_to_keep_them(tmp_path, capsys):
    import json

    from respmask._cli import main
    from respmask._shards import read_parts, read_rejects

    tok = fixture_tokenizer("zephyr")  # no tool support: row 3's call is dropped too
    tok.save_pretrained(tmp_path / "tok")
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in LOSSY))
    code = main(["tokenize", str(src), str(tmp_path / "out"), "--tokenizer", str(tmp_path / "tok"), "--quiet"])
    assert code == 1
    rejects = {r["index"]: r["error"] for r in read_rejects(tmp_path / "out")}
    assert sorted(rejects) == [1, 3] and sorted(read_parts(tmp_path / "out")["index"]) == [0, 2]
    assert "message 1: the whole message (role 'wizard')" in rejects[1]
    assert "only the stop token is trained" in rejects[3] and "--keep-lost-data" in rejects[3]
    capsys.readouterr()
    code = main(["tokenize", str(src), str(tmp_path / "kept"), "--tokenizer", str(tmp_path / "tok"), "--quiet",
                 "--keep-lost-data"])
    assert code == 0 and sorted(read_parts(tmp_path / "kept")["index"]) == [0, 1, 2, 3]


# -- a sample's tools and documents a template does not render ----------------------------------

NONCE_TOOL = {"type": "function", "function": {
    "name": "zqxtoolnonce", "description": "Looks up the qvbdescnonce of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "qvbparamnonce"}},
                   "required": ["city"]}}}
NONCE_DOCS = [{"title": "zqxdoctitle", "text": "qvbdoctextnonce"}]
TOOL_NONCES = ("zqxtoolnonce", "qvbdescnonce", "qvbparamnonce")
DOC_NONCES = ("zqxdoctitle", "qvbdoctextnonce")


def _reference_shows(tok, messages, nonces, **inputs):
    """Whether transformers' own render of the conversation shows any of ``nonces`` (None: it raises)."""
    try:
        text = tok.apply_chat_template(messages, tokenize=False, **inputs)
    except Exception:
        return None
    return any(n in text for n in nonces)


def test_tools_and_documents_left_out_are_reported_exactly_when_the_reference_render_omits_them():
    """On every fixture template: respmask lists the sample's tools (documents) as left out
    exactly when transformers' apply_chat_template of the same sample shows none of the words
    planted in them; and never when it shows them."""
    from respmask._spans import DROPPED_DOCUMENTS, DROPPED_TOOLS, NO_MESSAGE
    from support.tokenizers import template_names

    messages = chat(("system", "Be brief."), ("user", "weather in Paris?"), ("assistant", "Sunny."))
    seen = {DROPPED_TOOLS: {True: [], False: []}, DROPPED_DOCUMENTS: {True: [], False: []}}
    for name in template_names():
        tok = fixture_tokenizer(name)
        for what, nonces, inputs in ((DROPPED_TOOLS, TOOL_NONCES, {"tools": [NONCE_TOOL]}),
                                     (DROPPED_DOCUMENTS, DOC_NONCES, {"documents": NONCE_DOCS})):
            shown = _reference_shows(tok, messages, nonces, **inputs)
            if shown is None:
                continue  # the template rejects this conversation with these inputs
            try:
                enc = ChatMasker(tok).encode({"messages": messages, **inputs})
            except Exception as exc:  # respmask refusing what transformers renders is a failure too
                raise AssertionError(f"{name} {what[:13]}: {exc}") from exc
            reported = (NO_MESSAGE, what) in enc.dropped
            assert reported == (not shown), (name, what[:13], shown, enc.dropped)
            seen[what][reported].append(name)
            if reported:  # its tokens are counted, from the data's JSON
                assert enc.dropped_counts[enc.dropped.index((NO_MESSAGE, what))] > 0
    # both outcomes occur on real templates (Llama 3.1 and Qwen3 show tools, Zephyr and Gemma 3 do not)
    assert {"llama3_1", "qwen3"} <= set(seen[DROPPED_TOOLS][False])
    assert {"zephyr", "gemma3"} <= set(seen[DROPPED_TOOLS][True])
    assert {"command_r", "granite3_3"} & set(seen[DROPPED_DOCUMENTS][False])
    assert len(seen[DROPPED_DOCUMENTS][True]) > 50


def test_left_out_tools_make_check_fail_and_preview_say_so(capsys):
    from respmask import preview

    tok = fixture_tokenizer("zephyr")
    sample = {"messages": chat(("user", "weather?"), ("assistant", "Sunny.")), "tools": [NONCE_TOOL]}
    report = check([sample, {"messages": sample["messages"]}], tok)
    text = str(report)
    assert not report.ok
    assert "data the chat template leaves out, in 1 sample(s): 1 tool list(s)" in text
    assert "the tool list (the sample's 'tools': the chat template does not render it" in text
    assert "[sample: 0]" in text
    shown = str(preview(sample, tok))
    assert "the chat template leaves out (not trained): the tool list" in shown and "message -1" not in shown
    # the collator counts and warns about it as about any data left out
    collator = ResponseOnlyCollator(tok)
    with pytest.warns(UserWarning, match=r"data the chat template leaves out"):
        collator([sample])
    assert collator.stats.dropped_data == 1


THINK = "<think>\nweighing the options\n</think>\n\n"


def test_reasoning_written_in_the_content_is_reported_as_reasoning_content_is():
    # distill-style data writes the reasoning in the reply itself; DeepSeek-R1's template prints only
    # content.split('</think>')[-1], even for the last turn: the reasoning is never trained
    tok = fixture_tokenizer("deepseek_r1")
    sample = {"messages": chat(("user", "q1"), ("assistant", THINK + "the answer"))}
    enc = ChatMasker(tok).encode(sample)
    assert "weighing" not in tok.decode(enc.input_ids)
    assert enc.dropped == [(1, "reasoning written in its content before '</think>' (the chat template prints only "
                               "what follows it, even as the last turn, so no split trains it)")]
    # the tokens counted are those of the reasoning: the marker the template reads is not data
    # ('<think>' is no string of this template's: counted with it)
    assert enc.dropped_tokens == len(tok("<think>\nweighing the options", add_special_tokens=False)["input_ids"])
    report = check([sample], tok)
    assert not report.ok and "reasoning written in its content before '</think>'" in str(report)
    with pytest.warns(UserWarning, match=r"data the chat template leaves out of the render \(reasoning written in "
                                         r"its content"):
        ResponseOnlyCollator(tok)([sample])


def test_earlier_turns_reasoning_in_the_content_is_listed_and_split_auto_trains_it():
    # Qwen3's template cuts the reasoning out of earlier turns' content and prints it whole on the
    # last turn: by design, as for reasoning_content (listed, not a failure; split='auto' trains it)
    tok = fixture_tokenizer("qwen3")
    msgs = chat(("user", "q1"), ("assistant", THINK + "a1"), ("user", "q2"), ("assistant", THINK + "a2"))
    enc = ChatMasker(tok).encode({"messages": msgs})
    assert enc.dropped == [(1, "reasoning")] and enc.lost_data == []
    as_field = [{"role": m["role"], "content": m["content"].split("</think>")[-1].strip()} for m in msgs]
    for m in as_field[1::2]:
        m["reasoning_content"] = "weighing the options"
    assert ChatMasker(tok).encode({"messages": as_field}).dropped == enc.dropped
    assert enc.reasoning_tokens_dropped == len(tok("weighing the options", add_special_tokens=False)["input_ids"])
    report = check([{"messages": msgs}], tok)
    assert report.ok and "reasoning the template leaves out (earlier turns): 1" in str(report)
    rows = ChatMasker(tok, split="auto").render_rows({"messages": msgs})
    assert len(rows) == 2 and all(not r.dropped for r in rows)
    first = rows[0]
    assert "weighing" in "".join(first.text[a:b] for a, b in first.spans)
    assert check([{"messages": msgs}], tok, split="auto").dropped == []


def test_a_template_trimming_or_rewriting_the_markers_of_a_content_loses_nothing():
    # whitespace a template trims, the markers it writes itself where the content had them, and an
    # empty reasoning block cut from an earlier turn are no data
    qwen = fixture_tokenizer("qwen3")
    for msgs in (chat(("user", "q1"), ("assistant", THINK + "a1")),  # the last turn: printed as written
                 chat(("user", "q1"), ("assistant", "<think>\n\n</think>\n\na1"), ("user", "q2"),
                      ("assistant", "a2")),
                 chat(("user", "q1"), ("assistant", "  \n a1 \n\n"), ("user", "q2"), ("assistant", " a2 "))):
        assert ChatMasker(qwen).encode({"messages": msgs}).dropped == []
    llama = fixture_tokenizer("llama3_1")  # prints content | trim
    assert ChatMasker(llama).encode({"messages": chat(("user", " q "), ("assistant", "\n\n a \n"))}).dropped == []


def test_part_of_a_content_a_template_leaves_out_is_lost_data():
    from support.tokenizers import build_tokenizer

    # a template that prints only the first line of each reply: no marker, no reasoning
    template = ("{% for m in messages %}<|{{ m['role'] }}|>{% if m['role'] == 'assistant' %}"
                "{{ m['content'].split('\\n')[0] }}{% else %}{{ m['content'] }}{% endif %}<|end|>{% endfor %}"
                "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    tok = build_tokenizer(template, eos="<|end|>", special=["<|user|>", "<|assistant|>"])
    sample = {"messages": chat(("user", "q"), ("assistant", "first line\nsecond line"))}
    enc = ChatMasker(tok).encode(sample)
    assert enc.dropped == [(1, "part of its content (the chat template prints only part of it, even as the last "
                               "turn, so no split trains it)")]
    assert enc.dropped_tokens == len(tok("second line", add_special_tokens=False)["input_ids"])
    assert not check([sample], tok).ok
    assert ChatMasker(tok).encode({"messages": chat(("user", "q"), ("assistant", "one line\n"))}).dropped == []
