"""Layouts of message-blind templates: renders taken from a learned layout give exactly the
instrumented render's records, and masks are the same with or without them."""

from __future__ import annotations

import pickle
import random

import pytest

from respmask import ChatMasker
from respmask._layout import LayoutRenderer, message_blind, outline
from respmask._render import ChatTemplate, template_constants, template_inputs
from support.conversations import cases
from support.tokenizers import fixture_tokenizer

LLAMA_LIKE = (
    "{% for message in messages %}{% set content = '<|start|>' + message['role'] + '\n\n' + message['content'] | trim"
    " + '<|eot|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start|>assistant\n\n' }}{% endif %}"
)
WHOLE = (
    "{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] %}{% set rest = messages[1:] %}"
    "{% else %}{% set sys = '' %}{% set rest = messages %}{% endif %}"
    "{% for m in rest %}<{{ m.role }}>{% if loop.first and sys is string %}{{ sys ~ '|' }}{% endif %}"
    "{% if m.name is defined %}({{ m.name }}){% endif %}{{ m.content }}</{{ m.role }}>\n{% endfor %}"
)
# looks at what a message says: never blind
INSPECTING = [
    "{% for m in messages %}{% if '</think>' in m.content %}x{% endif %}{{ m.content }}{% endfor %}",
    "{% for m in messages %}{{ m.content.split('a')[0] }}{% endfor %}",
    "{% for m in messages %}{% if m.content %}{{ m.content }}{% endif %}{% endfor %}",
    "{% for m in messages %}{{ m.content | length }}{% endfor %}",
    "{% for m in messages %}{{ m.content | tojson }}{% endfor %}",
    "{% for m in messages %}{{ m }}{% endfor %}",
    "{% for m in messages %}{% if m.content == 'hi' %}hi{% else %}{{ m.content }}{% endif %}{% endfor %}",
    "{% set ns = namespace(s='') %}{% for m in messages %}{% set ns.s = m.content %}{% endfor %}{{ ns.s }}",
    "{% for m in messages %}{{ m.get('content') }}{% endfor %}",
    "{% for m in messages %}{{ loop.previtem }}{% endfor %}",
]
VALUES = ["", " ", "\n", "hi", "  padded  ", "\ue000x\ue001", "<|eot|>", "é🙂", "a\nb", "  \t", "x" * 50]


def _records(r):
    return r.text, r.owner_events, r.pieces, r.generation_blocks, r.reasoning, r.printed


def _conversation(rng: random.Random, roles, keys=("content",)):
    return [{"role": r, **{k: rng.choice(VALUES) + rng.choice(VALUES) for k in keys}} for r in roles]


@pytest.mark.parametrize("source", [LLAMA_LIKE, WHOLE])
def test_blind_templates_render_from_layouts_exactly(source):
    template = ChatTemplate(source)
    layouts = LayoutRenderer(template)
    assert layouts.blind
    constants = template_constants({"bos_token": "<s>"}, {})
    rng = random.Random(0)
    used = 0
    for roles in (["system", "user", "assistant"], ["user", "assistant", "user", "assistant"]):
        for keys in (("content",), ("content", "name")):
            for _ in range(40):
                messages = _conversation(rng, roles, keys)
                variables, chat = template_inputs(messages, constants=constants)
                want = template.render(variables, chat)
                got = layouts.render("", messages, constants)
                if got is None:
                    layouts.learn("", messages, constants, want)
                    continue
                used += 1
                assert _records(got) == _records(want), messages
    assert used >= 150  # every outline learned once, then taken from its layout


@pytest.mark.parametrize("source", INSPECTING)
def test_templates_that_look_at_message_text_are_not_blind(source):
    template = ChatTemplate(source)
    assert not message_blind(template.env.parse(source))
    layouts = LayoutRenderer(template)
    messages = [{"role": "user", "content": "hi"}]
    variables, chat = template_inputs(messages)
    layouts.learn("", messages, {}, template.render(variables, chat))
    assert layouts.render("", messages, {}) is None


@pytest.mark.parametrize("source, learned", [
    ("{% for m in messages %}[{{ m.content[:30] }}]{% endfor %}", True),
    ("{% for m in messages %}[{{ m.content[0] }}{{ m.content }}]{% endfor %}", False),  # no whole value
])
def test_a_cut_value_falls_back_to_the_instrumented_render(source, learned):
    # blind (a slice only prints), but the layout learned on short values does not hold for long ones
    template = ChatTemplate(source)
    layouts = LayoutRenderer(template)
    assert layouts.blind and not layouts.deterministic
    constants: dict = {}  # the same constants object: only the text check can refuse the layout
    short = [{"role": "user", "content": "s"}]
    variables, chat = template_inputs(short)
    layouts.learn("", short, constants, template.render(variables, chat))
    assert (layouts.render("", [{"role": "user", "content": "t"}], constants) is not None) == learned
    assert layouts.render("", [{"role": "user", "content": "x" * 100}], constants) is None


# blind templates whose text is not a function of the outline, constants and values alone
UNDETERMINED = [
    "{% for m in messages %}{{ strftime_now('%H:%M:%S.%f') }}{{ m.content }}{% endfor %}",
    "{% for m in messages %}{{ lipsum(1) }}{{ m.content }}{% endfor %}",
    "{% for m in messages %}{{ range(1000) | random }}{{ m.content }}{% endfor %}",
    "{% for m in messages %}{{ [range(10), range(10), range(10)] | map('random') | join }}{{ m.content }}{% endfor %}",
    "{% set f = tick %}{% for m in messages %}{{ f() }}{{ m.content }}{% endfor %}",
    "{% for m in messages %}{{ tick() }}{{ m.content }}{% endfor %}",
]


@pytest.mark.parametrize("source", UNDETERMINED)
def test_templates_that_print_more_than_their_inputs_are_checked_by_rendering(source):
    template = ChatTemplate(source)
    layouts = LayoutRenderer(template)
    assert layouts.blind and not layouts.deterministic
    ticks = iter(range(10**6))
    constants = {"tick": lambda: next(ticks)}
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    variables, chat = template_inputs(messages, constants=constants)
    layouts.learn("", messages, constants, template.render(variables, chat))
    assert ("", outline(messages)) in layouts.layouts
    # each render prints something new: the layout learned on the first is refused (the render
    # differs), never taken as the text (a few tries: lipsum and random may repeat by chance)
    assert any(layouts.render("", messages, constants) is None for _ in range(5))


# blind, but print a piece of a value: the layout is checked by rendering
PIECES = [
    "{% for m in messages %}{% set head = m.content[:3] %}{{ head }}|{{ m.content }}{% endfor %}",
    "{% for m in messages %}{% for c in m.content %}{{ c }}{% endfor %}{% endfor %}",
    "{% for m in messages %}{{ (m.content ~ '!')[1:] if loop.first else m.content }}{% endfor %}",
    "{% for m in messages %}{% with c = m.content[0] %}{{ c | trim }}{% endwith %}{% endfor %}",
]


@pytest.mark.parametrize("source", PIECES)
def test_templates_that_print_pieces_of_values_are_not_deterministic(source):
    layouts = LayoutRenderer(ChatTemplate(source))
    assert layouts.blind and not layouts.deterministic


@pytest.mark.parametrize("source", [LLAMA_LIKE, WHOLE,
                                    # a piece of a value that is never printed (Gemma 3's parts branch)
                                    "{% for m in messages %}{% if m.content is string %}{{ m.content }}{% else %}"
                                    "{{ m.content[0]['text'] }}{% endif %}{% generation %}.{% endgeneration %}"
                                    "{% endfor %}",
                                    "{% macro m(x) %}<{{ x }}>{% endmacro %}{% for msg in messages %}"
                                    "{{ m(msg.role) }}{{ msg.content }}{{ raise_exception('no') if msg.role == 'x' }}"
                                    "{% endfor %}{{ range(3) | join }}{{ 'a,b'.split(',') | join }}"])
def test_templates_that_only_print_their_inputs_need_no_render(source, monkeypatch):
    template = ChatTemplate(source)
    layouts = LayoutRenderer(template)
    assert layouts.deterministic
    constants = template_constants({"bos_token": "<s>"}, {})
    messages = [{"role": "user", "content": " hi "}, {"role": "assistant", "content": "yo"}]
    variables, chat = template_inputs(messages, constants=constants)
    want = template.render(variables, chat)
    layouts.learn("", messages, constants, want)
    other = [{"role": "user", "content": "\nquestion  "}, {"role": "assistant", "content": " {{ x }} "}]
    variables, chat = template_inputs(other, constants=constants)
    want = template.render(variables, chat)
    renders = []
    compiled = layouts.plain
    monkeypatch.setattr(compiled, "root_render_func",
                        lambda context, real=compiled.root_render_func: renders.append(1) or real(context))
    assert _records(layouts.render("", other, constants)) == _records(want)
    assert renders == []  # no render: the layout filled is the text
    # other constants (the special tokens changed): the layout is checked by the render again
    assert _records(layouts.render("", other, dict(constants))) == _records(want)
    assert renders == [1]


def test_changed_special_tokens_reach_a_learned_layout():
    tok = fixture_tokenizer("llama3")
    masker = ChatMasker(tok)
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    masker.encode({"messages": messages})  # the outline's layout is learned
    masker.encode({"messages": messages})
    tok.bos_token = "<|end_of_text|>"
    want = tok.apply_chat_template(messages, tokenize=False)
    assert want.startswith("<|end_of_text|>")
    assert masker.encode({"messages": messages}).text == want


def test_outlines_admit_only_string_values():
    assert outline([{"role": "user", "content": "a"}]) == (("user", ("role", "content")),)
    assert outline([{"role": "user", "content": None}]) is None
    assert outline([{"role": "user", "content": [{"type": "text", "text": "a"}]}]) is None
    assert outline([{"role": "assistant", "content": "a", "reasoning_content": "r"}]) is None
    assert outline([{"content": "a"}]) is None


def test_layouts_are_bounded():
    template = ChatTemplate(WHOLE)
    layouts = LayoutRenderer(template, capacity=4)
    for n in range(1, 12):
        messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}] * n
        variables, chat = template_inputs(messages)
        layouts.learn("", messages, {}, template.render(variables, chat))
    assert len(layouts.layouts) == 4


@pytest.mark.parametrize("name", ["llama3", "gemma3", "chatml", "mistral_v1", "qwen2", "phi3"])
def test_masks_are_the_same_with_and_without_layouts(name):
    tok = fixture_tokenizer(name)
    fast = ChatMasker(tok)
    slow = ChatMasker(tok)
    slow._layouts = _NoLayouts()
    samples = [c.sample() for c in cases()]
    rng = random.Random(1)
    for s in list(samples):  # the same outlines with other values: taken from the layouts
        v = {**s, "messages": [dict(m) for m in s["messages"]]}
        for m in v["messages"]:
            if isinstance(m.get("content"), str):
                m["content"] = rng.choice(VALUES) + m["content"] + rng.choice(VALUES)
        samples.append(v)

    def outcome(masker, sample):
        try:
            return [(r.input_ids.tolist(), r.labels.tolist(), r.text, r.turns, r.dropped, r.empty_replies)
                    for r in masker.encode_rows(sample)]
        except Exception as exc:
            return type(exc).__name__, str(exc)

    for s in samples:
        outcome(fast, s)  # learn
    for s in samples:
        assert outcome(fast, s) == outcome(slow, s)
    layouts = fast._layouts[fast.template_source()]
    assert layouts.blind and any(v is not None and type(v).__name__ == "_Layout" for v in layouts.layouts.values())
    # pickled maskers start without layouts (rebuilt in the new process)
    assert pickle.loads(pickle.dumps(fast))._layouts == {}


class _NoLayouts(dict):
    """A masker's layout table that never keeps one: every render is the instrumented one."""

    def get(self, key, default=None):
        return None

    def __setitem__(self, key, value):
        pass
