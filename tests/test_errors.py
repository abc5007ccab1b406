"""Bad input gets a clear error naming the sample and the fix; nothing fails silently."""

from __future__ import annotations

import pytest
from transformers import PythonBackend

from respmask import (
    ChatMasker,
    ResponseOnlyCollator,
    SampleError,
    TemplateError,
    TokenizerError,
    UntrainableSampleError,
)
from support.tokenizers import build_tokenizer, fixture_tokenizer, template_source

OK = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


class _SlowTokenizer(PythonBackend):
    def __init__(self, **kw):
        self._vocab = {"a": 0, "b": 1}
        super().__init__(**kw)

    def get_vocab(self):
        return dict(self._vocab)

    @property
    def vocab_size(self):
        return len(self._vocab)

    def _tokenize(self, text):
        return list(text)

    def _convert_token_to_id(self, token):
        return self._vocab.get(token, 0)

    def _convert_id_to_token(self, index):
        return "ab"[index]


def test_slow_tokenizer_is_refused_with_the_fix():
    with pytest.raises(TokenizerError, match="fast tokenizer.*AutoTokenizer.from_pretrained"):
        ResponseOnlyCollator(_SlowTokenizer())


def test_tokenizer_without_chat_template():
    tok = build_tokenizer(template_source("chatml"))
    tok.chat_template = None
    with pytest.raises(TokenizerError, match="chat_template"):
        ChatMasker(tok).encode(OK)


def test_a_tokenizer_without_chat_template_is_one_error_for_the_run(tmp_path, capsys):
    # every row would fail the same way: the run stops once, naming the option (CLI: its flag, exit 2)
    import json

    import respmask
    from respmask import Pretokenizer
    from respmask._cli import main

    template = template_source("chatml")
    tok = build_tokenizer(template)
    tok.chat_template = None
    rows = [OK, {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}]
    fix = "pass chat_template=... (a Jinja string, or the name of one of the tokenizer's templates) to respmask " \
          "(command line: --chat-template FILE, a Jinja file), or set tokenizer.chat_template."
    for run in (lambda: respmask.check(rows, tok), lambda: ResponseOnlyCollator(tok)(rows),
                lambda: Pretokenizer(tok, on_error="collect")({"messages": [r["messages"] for r in rows]})):
        with pytest.raises(TokenizerError) as info:
            run()
        assert str(info.value) == "the tokenizer has no chat template (tokenizer.chat_template is not set); respmask " \
                                  "renders every chat with the chat template: " + fix
    # pre-tokenized rows need no template
    assert respmask.check([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}], tok).ok
    tok.save_pretrained(tmp_path / "tok")
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for command in (["check", str(data)], ["preview", str(data), "--no-color"],
                    ["tokenize", str(data), str(tmp_path / "out"), "--quiet"]):
        assert main([*command, "--tokenizer", str(tmp_path / "tok")]) == 2, command
        captured = capsys.readouterr()
        assert captured.err.count("--chat-template FILE") == 1 and "sample" not in captured.err, captured.err
        assert "sample" not in captured.out
    assert not (tmp_path / "out").exists()  # nothing written: the same command with the flag starts afresh
    (tmp_path / "template.jinja").write_text(template)
    flag = ["--tokenizer", str(tmp_path / "tok"), "--chat-template", str(tmp_path / "template.jinja")]
    assert main(["check", str(data), *flag]) == 0
    assert main(["tokenize", str(data), str(tmp_path / "out"), "--quiet", *flag]) == 0


def test_template_that_does_not_parse():
    tok = fixture_tokenizer("chatml")
    with pytest.raises(TemplateError, match="does not parse"):
        ChatMasker(tok, chat_template="{% for m in messages %}{{ m.content }").encode(OK)


def test_template_that_raises_names_the_sample_and_its_message():
    tok = fixture_tokenizer("gemma3")  # raises on non-alternating roles
    bad = {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}
    with pytest.raises(SampleError, match=r"sample 1: the chat template raised .*alternate"):
        ResponseOnlyCollator(tok)([OK, bad])


@pytest.mark.parametrize(
    "sample,pattern",
    [
        ({"messages": []}, "is empty"),
        ({"messages": "hello"}, "must be a list of message dicts"),
        ({"messages": [{"content": "x"}]}, r"has no 'role'"),
        ({"messages": [{"role": "user\n<|im_start|>", "content": "x"}]}, "invalid role"),
        ({"messages": [{"role": "user", "content": 42}]}, "must be a string or a list of content parts"),
        ({"messages": ["hi"]}, "must be a dict"),
        ({"prompt": "a", "completion": [{"role": "assistant", "content": "b"}]}, "both be strings or both be lists"),
        ({"messages": OK["messages"], "chat_template_kwargs": "x"}, "chat_template_kwargs"),
        ("just text", "a sample must be a dict"),
    ],
)
def test_malformed_samples(sample, pattern):
    tok = fixture_tokenizer("qwen2_5")
    with pytest.raises(SampleError, match=pattern) as info:
        ResponseOnlyCollator(tok)([OK, sample])
    assert str(info.value).startswith("sample 1: ")
    assert info.value.index == 1


def test_content_none_with_tool_calls_is_fine_when_the_template_accepts_it():
    tok = fixture_tokenizer("qwen2_5")
    msgs = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
        {"role": "tool", "content": "rain"},
        {"role": "assistant", "content": "It rains."},
    ]
    enc = ChatMasker(tok).encode(msgs)
    ref = tok.apply_chat_template(msgs, return_dict=True)["input_ids"]
    assert list(enc.input_ids) == list(ref)
    trained = tok.decode([int(i) for i, l in zip(enc.input_ids, enc.labels) if l != -100])
    assert "Oslo" in trained and "rain<" not in trained and "It rains." in trained


def test_content_as_list_of_parts():
    tok = fixture_tokenizer("gemma3")
    msgs = [{"role": "user", "content": [{"type": "text", "text": "describe"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "a cat"}]}]
    enc = ChatMasker(tok).encode(msgs)
    assert list(enc.input_ids) == list(tok.apply_chat_template(msgs, return_dict=True)["input_ids"])
    trained = tok.decode([int(i) for i, l in zip(enc.input_ids, enc.labels) if l != -100])
    assert trained == "a cat<end_of_turn>"


def test_first_message_folded_into_a_tool_prompt_is_an_error_not_a_silent_mask():
    """Llama 3.1 with tools moves the first message into its tool prompt (as user text)."""
    tok = fixture_tokenizer("llama3_1")
    msgs = [{"role": "assistant", "content": "I start."}, {"role": "user", "content": "ok"},
            {"role": "assistant", "content": "fine"}]
    tools = [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {}}}]
    with pytest.raises(SampleError, match="renders message 0 .* as part of another turn"):
        ChatMasker(tok).encode({"messages": msgs, "tools": tools})
    flagged = [dict(msgs[0], train=False), *msgs[1:]]
    enc = ChatMasker(tok).encode({"messages": flagged, "tools": tools})
    assert tok.decode([int(i) for i, l in zip(enc.input_ids, enc.labels) if l != -100]) == "fine<|eot_id|>"


def test_bad_option_values():
    tok = fixture_tokenizer("qwen2_5")
    for kwargs in ({"truncation": "middle"}, {"padding_side": "up"}, {"on_untrainable": "ignore"},
                   {"return_tensors": "tf"}, {"max_length": 0}, {"train_on": "first"}):
        with pytest.raises(ValueError):
            ResponseOnlyCollator(tok, **kwargs)


def test_content_none_where_the_template_needs_it_is_a_clear_error():
    tok = fixture_tokenizer("qwen3")  # reads message.content of an assistant without a guard
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None}]
    try:
        tok.apply_chat_template(msgs, tokenize=False)
        raises = False
    except Exception:
        raises = True
    if raises:
        with pytest.raises(SampleError, match=r"sample 0: the chat template raised"):
            ResponseOnlyCollator(tok)([{"messages": msgs}])
    else:  # the template copes: then the reply is simply empty
        ResponseOnlyCollator(tok, on_untrainable="keep")([{"messages": msgs}])


def test_unknown_role_follows_the_template():
    """A role the template does not know: Gemma raises (named sample), ChatML prints it as is."""
    msgs = [{"role": "narrator", "content": "once"}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"}]
    with pytest.raises(SampleError, match="sample 0: the chat template raised"):
        ResponseOnlyCollator(fixture_tokenizer("gemma3"))([{"messages": msgs}])
    tok = fixture_tokenizer("chatml")
    enc = ChatMasker(tok).encode(msgs)
    assert tok.decode([int(i) for i, l in zip(enc.input_ids, enc.labels) if l != -100]) == "hello<|im_end|>"


def test_max_length_shorter_than_the_prompt():
    tok = fixture_tokenizer("qwen2_5")
    with pytest.raises(UntrainableSampleError, match="sample 0: no trained token: truncation to max_length=4"):
        ResponseOnlyCollator(tok, max_length=4, on_untrainable="raise")([OK])
