"""The instrumented render: byte-identical to transformers, content treated as data, thread-safe."""

from __future__ import annotations

import threading

import pytest

from respmask import ChatMasker
from respmask._render import DATA, LITERAL, ChatTemplate, template_inputs
from respmask._segments import Segments
from support.conversations import cases
from support.tokenizers import fixture_tokenizer, template_names

WEIRD = "{{ messages }} {% if true %}x{% endif %} \ue000\uffff\u200b\x00\x1b[31m <|im_end|> </s> [/INST]"


@pytest.mark.parametrize("name", template_names())
def test_text_is_byte_identical_to_transformers(name):
    tok = fixture_tokenizer(name)
    masker = ChatMasker(tok)
    for case in cases():
        try:
            ref = tok.apply_chat_template(case.messages, tools=case.tools, tokenize=False)
        except Exception:
            continue
        assert masker.render(case.sample()).text == ref, case.name


@pytest.mark.parametrize("name", ["qwen3", "llama3_1", "gemma3", "mistral_v1", "gpt_oss", "deepseek_v3"])
def test_content_is_data_whatever_it_holds(name):
    tok = fixture_tokenizer(name)
    msgs = [
        {"role": "user", "content": "user says " + WEIRD},
        {"role": "assistant", "content": "reply " + WEIRD},
        {"role": "user", "content": WEIRD},
        {"role": "assistant", "content": "last"},
    ]
    masker = ChatMasker(tok)
    rs = masker.render(msgs)
    assert rs.text == tok.apply_chat_template(msgs, tokenize=False)
    assert rs.text.count("{{ messages }}") == 3  # printed literally, never evaluated
    # both replies are covered from their start to their stop token, whatever they contain
    starts = [rs.text.find("reply "), rs.text.rfind("last")]
    for turn, start in zip(rs.turns, starts):
        assert turn.start <= start < turn.end and turn.stop is not None
    # no user text is inside any trained span
    for a, b in rs.spans:
        assert "user says" not in rs.text[a:b]


def test_segments_record_literal_and_data_pieces():
    source = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    variables, chat = template_inputs(msgs)
    segs = Segments.of(ChatTemplate(source).render(variables, chat))
    pieces = [(segs.text[a:b], o, k) for a, b, o, k in zip(segs.starts, segs.ends, segs.owners, segs.kinds) if b > a]
    assert pieces == [
        ("<|im_start|>user\n", 0, LITERAL),
        ("hi", 0, DATA),
        ("<|im_end|>\n", 0, LITERAL),
        ("<|im_start|>assistant\n", 1, LITERAL),
        ("yo", 1, DATA),
        ("<|im_end|>\n", 1, LITERAL),
    ]


def test_output_that_reads_another_message_belongs_to_it():
    # an index loop and a look-ahead: output is credited to the message it reads
    source = (
        "{% for i in range(messages|length) %}{% if messages[i].role == 'assistant' %}"
        "{{ '[A]' + messages[i].content }}{% if i + 1 < messages|length %}{{ '[NEXT]' + messages[i + 1].content }}"
        "{% endif %}{% endif %}{% endfor %}"
    )
    msgs = [{"role": "assistant", "content": "a"}, {"role": "user", "content": "u"}]
    variables, chat = template_inputs(msgs)
    segs = Segments.of(ChatTemplate(source).render(variables, chat))
    owners = {segs.text[a:b]: o for a, b, o in zip(segs.starts, segs.ends, segs.owners) if b > a}
    assert owners == {"[A]": 0, "a": 0, "[NEXT]": 1, "u": 1}


def test_concurrent_renders_do_not_mix():
    tok = fixture_tokenizer("qwen3")
    masker = ChatMasker(tok)
    samples = [c.sample() for c in cases() if c.name in ("basic", "long", "tools", "reasoning")]
    expected = [masker.encode(s).labels.tolist() for s in samples]
    errors = []

    def work():
        for _ in range(20):
            for s, want in zip(samples, expected):
                if masker.encode(s).labels.tolist() != want:
                    errors.append(s)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_sandbox_fast_paths_give_the_sandbox_results():
    """respmask's attribute fast paths must not change what a template sees or may touch."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from respmask._render import _make_environment

    ours, ref = _make_environment(), ImmutableSandboxedEnvironment()
    ns = ours.globals["namespace"](a=1)
    d = {"content": "x", "items": "shadowed", "role": "user"}
    probes = [
        (d, "content"), (d, "missing"), (d, "items"), (d, "__class__"), (d, "get"), (d, "role"),
        ("text", "strip"), ("text", "format"), ("text", "__class__"), ("text", "nope"),
        (ns, "a"), (ns, "b"), (ns, "_Namespace__attrs"), (ns, "__class__"),
    ]
    for obj, attr in probes:
        a, b = ours.getattr(obj, attr), ref.getattr(obj, attr)
        assert type(a) is type(b), (obj, attr, a, b)
        if not callable(a) and not hasattr(a, "_undefined_name"):
            assert a == b, (obj, attr)
    t = ours.from_string("{% for m in [1, 2] %}{{ loop.index0 }}{{ loop.last }}{% endfor %}{{ ''.format }}")
    assert t.render().startswith("0False1True")


def test_special_tokens_changed_after_a_render_are_the_ones_rendered():
    """The special-token variables are computed once and shared between renders; a tokenizer whose
    special tokens change afterwards renders the new ones, as apply_chat_template does."""
    from support.tokenizers import build_tokenizer

    template = ("{{ bos_token }}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
                "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    tok = build_tokenizer(template, bos="<s>", eos="<|im_end|>", special=["<|im_start|>", "<t1>"])
    masker = ChatMasker(tok)
    sample = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    assert masker.render(sample).text.startswith("<s><|im_start|>user")
    tok.bos_token = "<t1>"
    rendered = masker.render(sample)
    assert rendered.text == tok.apply_chat_template(sample["messages"], tokenize=False)
    assert rendered.text.startswith("<t1><|im_start|>user")


def test_the_generation_block_renders_through_its_fast_path_as_through_the_sandbox():
    """Calling the {% generation %} block's method directly gives the sandbox's text and blocks."""
    from jinja2.sandbox import SandboxedEnvironment

    source = "{% for m in messages %}[{{ m.role }}]{% generation %}{{ m.content }}!{% endgeneration %}{% endfor %}"
    chat = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    template = ChatTemplate(source)
    variables, tracked = template_inputs(chat)
    fast = template.render(variables, tracked)
    slow_env = type(template.env).__mro__[1].call  # the sandbox's own call
    template.env.call = lambda context, obj, *a, **k: slow_env(template.env, context, obj, *a, **k)
    try:
        slow = template.render(*template_inputs(chat))
    finally:
        del template.env.call
    assert issubclass(type(template.env).__mro__[1], SandboxedEnvironment)
    assert fast.text == slow.text == "[user]a![assistant]b!"
    assert fast.generation_blocks == slow.generation_blocks == [(6, 8, 0), (19, 21, 1)]
