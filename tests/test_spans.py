"""Turn finding and trained spans: on hand-built segments, and through a masker on tiny templates."""

from __future__ import annotations

import functools

from respmask import ChatMasker
from respmask._origin import CONTENT, MIXED, REASONING, TOOLS
from respmask._render import DATA, LITERAL, NO_OWNER, ChatTemplate, template_constants, template_inputs
from respmask._segments import Segments
from respmask._spans import (
    Turn, describe_dropped, dropped_data, dropped_text, empty_replies, find_turns, select_messages, trained_spans,
)
from support.tokenizers import build_tokenizer

N = NO_OWNER


def build(*pieces: tuple) -> Segments:
    """Segments from ``(text, owner, kind)`` pieces laid end to end (each in its owner's region)."""
    text, starts, ends, owners, kinds = "", [], [], [], []
    for s, owner, kind in pieces:
        starts.append(len(text))
        text += s
        ends.append(len(text))
        owners.append(owner)
        kinds.append(kind)
    return Segments(text, starts, ends, owners, kinds, list(owners))


def chat(*pairs: tuple[str, str]) -> list[dict]:
    return [{"role": r, "content": c} for r, c in pairs]


# -- select_messages ---------------------------------------------------------------------------
ROLES = ["system", "user", "assistant", "user", "assistant"]


def test_select_every_assistant_turn_or_the_last():
    assert select_messages(ROLES, [None] * 5, "all") == [False, False, True, False, True]
    assert select_messages(ROLES, [None] * 5, "last") == [False, False, False, False, True]


def test_select_per_message_flags_override_the_role():
    flags = [None, True, False, None, None]
    assert select_messages(ROLES, flags, "all") == [False, True, False, False, True]
    assert select_messages(ROLES, [None, None, True, None, False], "last") == [False, False, True, False, False]


def test_select_without_assistant_turns():
    assert select_messages(["system", "user"], [None, None], "last") == [False, False]
    assert select_messages(["user"], [1], "all") == [True]  # a truthy flag is a bool


# -- trained_spans on hand-built segments ------------------------------------------------------
def tool_in_turn() -> Segments:
    # "<u>q</u><a>yo<r>res</r>ok<e>\n": message 2's "res" printed inside message 1's turn
    return build(
        ("<u>", 0, LITERAL),
        ("q", 0, DATA),
        ("</u>", 0, LITERAL),
        ("<a>", 1, LITERAL),
        ("yo", 1, DATA),
        ("<r>", 1, LITERAL),
        ("res", 2, DATA),
        ("</r>", 1, LITERAL),
        ("ok", 1, DATA),
        ("<e>", 1, LITERAL),
        ("\n", N, LITERAL),
    )


def test_foreign_text_inside_a_turn_is_carved_out():
    segs = tool_in_turn()
    assert segs.text == "<u>q</u><a>yo<r>res</r>ok<e>\n"
    turn = Turn(1, "assistant", start=11, end=28, stop=(25, 28))
    spans = trained_spans([turn], segs)
    assert spans == [(11, 16), (19, 28)]
    assert [segs.text[a:b] for a, b in spans] == ["yo<r>", "</r>ok<e>"]


def test_data_of_no_message_is_carved_out_but_its_template_text_is_not():
    segs = build(("<a>", 0, LITERAL), ("x", 0, DATA), ("{}", N, DATA), ("\n", N, LITERAL), ("y", 0, DATA))
    assert trained_spans([Turn(0, "assistant", 3, 8, None)], segs) == [(3, 4), (6, 8)]


def test_a_stop_token_that_opens_the_next_message_is_trained():
    segs = build(("<a>", 0, LITERAL), ("yo", 0, DATA), ("<u>", 1, LITERAL), ("q", 1, DATA))
    # without its stop the turn would train "yo" alone: "<u>" is message 1's text
    assert trained_spans([Turn(0, "assistant", 3, 8, None)], segs) == [(3, 5)]
    assert trained_spans([Turn(0, "assistant", 3, 8, (5, 8))], segs) == [(3, 8)]


def test_reasoning_left_out_starts_the_span_after_it():
    segs = build(("<a>", 0, LITERAL), ("<t>r</t>", 0, DATA), ("a", 0, DATA), ("<e>", 0, LITERAL))
    turn = Turn(0, "assistant", 3, 15, (12, 15), reasoning=(3, 11))
    assert trained_spans([turn], segs) == [(11, 15)]


def test_spans_of_several_turns_are_sorted_and_merged():
    segs = build(("<a>", 0, LITERAL), ("x", 0, DATA), ("y", 1, DATA), ("<e>", 1, LITERAL))
    turns = [Turn(1, "assistant", 4, 8, (5, 8)), Turn(0, "assistant", 3, 4, None)]
    assert trained_spans(turns, segs) == [(3, 8)]


def test_an_empty_turn_trains_nothing():
    segs = build(("<a>", 0, LITERAL), ("<e>", 0, LITERAL))
    assert trained_spans([Turn(0, "assistant", 3, 3, None)], segs) == []
    assert trained_spans([], segs) == []


# -- find_turns through a masker on tiny templates ---------------------------------------------
CHATML = (
    "{% for m in messages %}{% if m.role == 'assistant' %}{{ '<|im_start|>assistant\\n' }}"
    "{% if m.reasoning_content %}{{ '<think>\\n' + m.reasoning_content + '\\n</think>\\n\\n' }}{% endif %}"
    "{{ m.content + '<|im_end|>\\n' }}"
    "{% else %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
TAGGED = (
    "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' }}"
    "{% if m.role == 'assistant' %}{% generation %}{{ m.content + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ m.content + '<|im_end|>' }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# no control tokens at all: a turn has no stop token
PLAIN = (
    "{% for m in messages %}{{ '[' + m.role + ']\\n' + m.content + '\\n[/' + m.role + ']\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '[assistant]\\n' }}{% endif %}"
)
@functools.lru_cache(maxsize=None)
def masker(source: str) -> ChatMasker:
    if "<|im_start|>" in source:
        return ChatMasker(build_tokenizer(source, eos="<|endoftext|>", special=["<|im_start|>", "<|im_end|>"]))
    return ChatMasker(build_tokenizer(source))


def turns_of(source: str, messages: list[dict], selected: list[bool] | None = None, **options):
    m = masker(source)
    profile, stops = m.profile(source, {})
    variables, plain = template_inputs(messages, constants=template_constants(m.tokenizer.special_tokens_map))
    rendered = ChatTemplate(source).render(variables, plain)
    roles = [x["role"] for x in messages]
    if selected is None:
        selected = select_messages(roles, [None] * len(roles), "all")
    options.setdefault("use_generation_tags", False)
    turns, segs = find_turns(rendered, roles, selected, profile, stops, messages=messages, **options)
    return rendered.text, turns, segs


def test_find_turns_chatml():
    text, turns, segs = turns_of(CHATML, chat(("system", "s"), ("user", "hi"), ("assistant", "yo")))
    assert text == (
        "<|im_start|>system\ns<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n"
    )
    assert turns == [Turn(2, "assistant", start=83, end=95, stop=(85, 95))]
    assert text[83:95] == "yo<|im_end|>" and text[85:95] == "<|im_end|>"
    assert trained_spans(turns, segs) == [(83, 95)]


def test_find_turns_only_the_selected_turns():
    msgs = chat(("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"))
    text, turns, _ = turns_of(CHATML, msgs, [False, False, False, True])
    assert [(t.message, text[t.start : t.end]) for t in turns] == [(3, "d<|im_end|>")]
    text, turns, _ = turns_of(CHATML, msgs)
    assert [(t.message, text[t.start : t.end]) for t in turns] == [(1, "b<|im_end|>"), (3, "d<|im_end|>")]


def test_find_turns_a_trained_user_message_starts_at_its_content():
    text, turns, _ = turns_of(CHATML, chat(("user", "hi"), ("assistant", "yo")), [True, True])
    assert [(t.message, t.role, text[t.start : t.end]) for t in turns] == [
        (0, "user", "hi<|im_end|>"),
        (1, "assistant", "yo<|im_end|>"),
    ]


def test_find_turns_reasoning_kept_or_left_out():
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": "r"}]
    text, turns, segs = turns_of(CHATML, msgs)
    start = text.index("<think>")
    assert turns == [Turn(1, "assistant", start, len(text) - 1, (len(text) - 11, len(text) - 1))]
    assert text[start : len(text) - 1] == "<think>\nr\n</think>\n\na<|im_end|>"
    _, turns, segs = turns_of(CHATML, msgs, reasoning_in_loss=False)
    assert turns[0].reasoning == (start, text.index("a<|im_end|>"))
    assert [text[a:b] for a, b in trained_spans(turns, segs)] == ["a<|im_end|>"]


def test_find_turns_without_a_stop_token_ends_after_the_turn_s_own_text():
    text, turns, segs = turns_of(PLAIN, chat(("user", "hi"), ("assistant", "yo"), ("user", "q")))
    assert text == "[user]\nhi\n[/user]\n[assistant]\nyo\n[/assistant]\n[user]\nq\n[/user]\n"
    assert turns == [Turn(1, "assistant", 30, 45, None)]
    assert text[30:45] == "yo\n[/assistant]"  # the newline after it is left out


def test_find_turns_with_generation_tags():
    msgs = chat(("user", "hi"), ("assistant", "yo"))
    text, turns, _ = turns_of(TAGGED, msgs, use_generation_tags=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n"
    assert turns == [Turn(1, "assistant", 52, 64, (54, 64))]


def test_the_masker_trains_what_find_turns_finds():
    msgs = chat(("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"))
    text, turns, segs = turns_of(CHATML, msgs)
    rs = masker(CHATML).render({"messages": msgs})
    assert rs.text == text
    assert rs.turns == turns
    assert rs.spans == trained_spans(turns, segs)
    assert [text[a:b] for a, b in rs.spans] == ["b<|im_end|>", "d<|im_end|>"]


# -- data the render leaves out ----------------------------------------------------------------
CALL = {"type": "function", "function": {"name": "f", "arguments": {"q": "x"}}}


def test_dropped_data_names_each_field_the_render_leaves_out():
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a", "reasoning_content": "r"},
        {"role": "assistant", "content": "b", "tool_calls": [CALL]},
        {"role": "wizard", "content": "abracadabra"},
        {"role": "assistant", "content": [{"type": "text", "text": "  "}]},  # blank: nothing to lose
        {"role": "assistant", "content": "c", "reasoning_content": "s"},
    ]
    printed = {(0, CONTENT), (1, CONTENT), (2, TOOLS), (5, MIXED)}
    assert dropped_data(messages, printed, [], "") == [
        (1, "reasoning"),
        (2, "content"),
        (3, "the whole message (role 'wizard')"),
    ]


def test_dropped_data_of_a_turn_that_trains_only_its_stop_token():
    text = "<a>  <e>"
    turns = [Turn(0, "assistant", 3, 8, (5, 8))]
    # an empty reply holds nothing and loses nothing: an empty reply, no entry
    empty = [{"role": "assistant", "content": ""}]
    assert dropped_data(empty, set(), turns, text) == [] and empty_replies(empty, turns, text) == [0]
    # a reply that holds text its render shows elsewhere yet trains only its stop token
    shown = [{"role": "assistant", "content": "x"}]
    assert dropped_data(shown, {(0, CONTENT)}, turns, text) == [
        (0, "everything but its stop token (only the stop token is trained)")
    ]
    assert empty_replies(shown, turns, text) == []
    # a reply whose data the render leaves out: one entry naming what it held
    assert dropped_data(shown, set(), turns, text) == [
        (0, "content (only its header and stop token are rendered, so only the stop token is trained)")
    ]
    assert dropped_data(shown, {(0, CONTENT)}, turns, "<a>x <e>") == []
    assert dropped_data(empty, set(), [Turn(0, "assistant", 3, 5, None)], text) == []


def test_dropped_data_of_a_clean_render_is_empty():
    messages = chat(("user", "q"), ("assistant", "a"))
    assert dropped_data(messages, {(0, CONTENT), (1, CONTENT), (1, REASONING)}, [], "") == []


def test_describe_dropped():
    assert describe_dropped([(2, "tool calls"), (4, "content")]) == "message 2: tool calls; message 4: content"
    assert describe_dropped([]) == ""


def test_dropped_text_is_the_data_of_each_entry():
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "he"}, {"type": "text", "text": "llo"}]},
        {"role": "assistant", "content": "a", "reasoning_content": "r", "tool_calls": [CALL]},
        {"role": "wizard", "content": "abra", "thinking": "t"},
    ]
    dropped = [
        (0, "content"),
        (1, "reasoning"),
        (1, "tool calls"),
        (2, "the whole message (role 'wizard')"),
        (1, "everything but its stop token (only the stop token is trained)"),
    ]
    assert dropped_text(messages, dropped) == [
        "hello",
        "r",
        '[{"type": "function", "function": {"name": "f", "arguments": {"q": "x"}}}]',
        "abrat",
        "",
    ]
