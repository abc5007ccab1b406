"""Regressions for the template classes that broke span finding, each on a small template that
isolates the mechanism and, where the corpus has one, on a real template of that class.

Every check compares with transformers (``apply_chat_template`` ids) and with the nonce reference
(``support.reference.violations``), and pins the trained text.
"""

from __future__ import annotations

import pytest

from respmask import ChatMasker, SampleError, TemplateError
from respmask._render import ChatTemplate
from support.conversations import WEATHER_TOOL, Case, Nonces
from support.reference import violations
from support.tokenizers import build_tokenizer, fixture_tokenizer, manifest


def trained(tok, enc) -> str:
    return tok.decode([int(i) for i, l in zip(enc.input_ids, enc.labels) if l != -100])


def check(tok, messages, stop_tokens, tools=None, **masker_kwargs):
    """Encode and assert the ids equal transformers'; return the encoding (callers pin the trained text)."""
    nn = Nonces()
    case = Case("case", messages, nn, tools)
    enc = ChatMasker(tok, **masker_kwargs).encode(case.sample())
    ref = tok.apply_chat_template(messages, tools=tools, tokenize=True, return_dict=True)["input_ids"]
    assert list(map(int, enc.input_ids)) == list(ref)
    return enc


def chat(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


# 1. the render is transformers' render --------------------------------------------------------

MARKUP_PLUS_STR = (
    "{% for t in tools %}{{ '<tool>'|safe + t['function']|tojson() }}{% endfor %}"
    "{% for m in messages %}{{ '<|' + m.role + '|>' + m.content + '<|end|>' }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def test_markup_plus_str_escapes_exactly_as_transformers():
    # Functionary v3.1 builds tool definitions as "..."|safe + tojson: the JSON is HTML-escaped
    tok = build_tokenizer(MARKUP_PLUS_STR, eos="<|end|>", special=["<|end|>", "<|user|>", "<|assistant|>"])
    tool = dict(WEATHER_TOOL, function=dict(WEATHER_TOOL["function"], description="the <city> & \"more\""))
    enc = check(tok, chat(("user", "hi"), ("assistant", "yo")), ["<|end|>"], tools=[tool])
    assert "&#34;name&#34;" in tok.decode(enc.input_ids)
    assert trained(tok, enc) == "yo<|end|>"


def test_a_render_that_differs_from_transformers_raises(monkeypatch):
    tok = fixture_tokenizer("chatml")
    original = ChatTemplate.render

    def wrong(self, variables, tracked):
        rendered = original(self, variables, tracked)
        rendered.text = rendered.text.replace("\n", " ")
        return rendered

    monkeypatch.setattr(ChatTemplate, "render", wrong)
    with pytest.raises(TemplateError, match="differs from transformers' apply_chat_template at character"):
        ChatMasker(tok).encode(chat(("user", "hi"), ("assistant", "yo")))


# 2. messages the template rebuilds --------------------------------------------------------------

MERGING = (
    "{%- set ns = namespace(merged=[]) -%}"
    "{%- for m in messages -%}"
    "{%- if ns.merged and ns.merged[-1]['role'] == m['role'] -%}"
    "{%- set last = ns.merged[-1] -%}"
    "{%- set ns.merged = ns.merged[:-1] + [{'role': m['role'], 'content': last['content'] + '\\n\\n' + m['content']}] -%}"
    "{%- else -%}{%- set ns.merged = ns.merged + [{'role': m['role'], 'content': m['content']}] -%}{%- endif -%}"
    "{%- endfor -%}"
    "{{- bos_token -}}"
    "{%- for m in ns.merged -%}"
    "{%- if m['role'] == 'user' -%}{{- '[INST]' + m['content'] + '[/INST]' -}}"
    "{%- else -%}{{- m['content'] + eos_token -}}{%- endif -%}"
    "{%- endfor -%}"
)


def test_merged_messages_are_attributed_through_their_text():
    # mistral-common's templates merge consecutive same-role messages into new dicts
    tok = build_tokenizer(MERGING, bos="<s>", eos="</s>", special=["[INST]", "[/INST]"])
    msgs = chat(("user", "one"), ("user", "two"), ("assistant", "three"), ("user", "four"), ("assistant", "five"))
    enc = check(tok, msgs, ["</s>"])
    assert trained(tok, enc) == "three</s>five</s>"


AFTER_LOOP = (
    "{%- for m in messages[:-1] -%}<|{{ m.role }}|>{{ m.content }}<|end|>{%- endfor -%}"
    "{%- if messages[-1].role == 'assistant' -%}<|assistant|>{{ messages[-1].content }}<|end|>"
    "{%- else -%}<|{{ messages[-1].role }}|>{{ messages[-1].content }}<|end|>{%- endif -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)


def test_last_message_rendered_after_the_loop():
    # Nemotron Nano v2 renders the final assistant message after its message loop
    tok = build_tokenizer(AFTER_LOOP, eos="<|end|>", special=["<|end|>", "<|user|>", "<|assistant|>"])
    enc = check(tok, chat(("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d")), ["<|end|>"])
    assert trained(tok, enc) == "b<|end|>d<|end|>"


def test_last_message_rendered_after_the_loop_on_nemotron_nano_v2():
    tok = fixture_tokenizer("nemotron_nano_v2")
    stops = manifest()["nemotron_nano_v2"]["stop_tokens"]
    msgs = chat(("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"))
    case = Case("case", msgs, Nonces())
    enc = check(tok, msgs, stops)
    assert violations(tok, case, enc.input_ids, enc.labels, stops) == []
    assert trained(tok, enc) == "b\n<SPECIAL_12>d\n<SPECIAL_12>"  # the last one printed after the loop


# 3. a whole turn built in one expression ----------------------------------------------------

ONE_EXPRESSION = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
)


def test_turn_built_in_one_expression_and_prompt_written_unconditionally():
    # the original Llama 3 release template: header, content and stop in one variable, and the
    # generation prompt written after the loop whatever add_generation_prompt says
    special = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tok = build_tokenizer(ONE_EXPRESSION, bos="<|begin_of_text|>", eos="<|eot_id|>", special=special)
    msgs = chat(("system", "s"), ("user", "u <|eot_id|> x"), ("assistant", "a1"), ("user", "u2"), ("assistant", "a2"))
    enc = check(tok, msgs, ["<|eot_id|>"])
    assert trained(tok, enc) == "a1<|eot_id|>a2<|eot_id|>"


# 4. headers that are not the learned constant ---------------------------------------------

COUNTED = (
    "{% for m in messages %}### Turn {{ loop.index }} ({{ m.role }})\n{{ m.content }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}### Turn {{ messages|length + 1 }} (assistant)\n{% endif %}"
)


def test_header_with_a_turn_counter_is_never_trained():
    tok = build_tokenizer(COUNTED, eos="<|end|>", special=["<|end|>"])
    msgs = [m for i in range(6) for m in chat(("user", f"q{i}"), ("assistant", f"a{i}"))]
    enc = check(tok, msgs, ["<|end|>"])
    assert trained(tok, enc) == "".join(f"a{i}<|end|>" for i in range(6))


DEFAULT_SYSTEM = (
    "{% for m in messages %}{% if loop.first and m.role != 'system' %}<|im_start|>system\nYou are a helpful "
    "assistant.<|im_end|>\n{% endif %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_assistant_first_with_a_default_system_prompt_in_the_first_iteration():
    tok = build_tokenizer(DEFAULT_SYSTEM, eos="<|im_end|>", special=["<|im_start|>", "<|im_end|>"])
    enc = check(tok, chat(("assistant", "hello"), ("user", "q"), ("assistant", "a")), ["<|im_end|>"])
    assert trained(tok, enc) == "hello<|im_end|>a<|im_end|>"


@pytest.mark.parametrize("name", ["qwen2_5", "smollm2"])
def test_assistant_first_on_real_templates_with_default_system_prompts(name):
    tok = fixture_tokenizer(name)
    enc = check(tok, chat(("assistant", "hello"), ("user", "q"), ("assistant", "a")), manifest()[name]["stop_tokens"])
    assert trained(tok, enc) == f"hello{tok.eos_token}a{tok.eos_token}"


def test_message_rendered_inside_another_turn_is_an_error():
    # Llama 3.1 with tools puts the first message into the first user turn's tool prompt
    tok = fixture_tokenizer("llama3_1")
    msgs = chat(("assistant", "I start."), ("user", "ok"), ("assistant", "fine"))
    with pytest.raises(SampleError, match="renders message 0 .* as part of another turn"):
        ChatMasker(tok).encode({"messages": msgs, "tools": [WEATHER_TOOL]})


HISTORY_HEADER = (
    "{% for m in messages %}{% if loop.first %}<s>{% endif %}{{ 'Source: ' + m.role + '\n\n ' + m.content | trim }}"
    " <step> {% endfor %}Source: assistant\nDestination: user\n\n "
)


def test_history_header_that_differs_from_the_prompt_is_never_trained():
    # CodeLlama 70B: history turns open with "Source: assistant\n\n ", the prompt (written whatever
    # add_generation_prompt says) with "Source: assistant\nDestination: user\n\n "
    tok = build_tokenizer(HISTORY_HEADER, bos="<s>", eos="</s>", special=["<s>", "</s>", "<step>"])
    msgs = chat(("user", "q"), ("assistant", "a1"), ("user", "q2"), ("assistant", "a2"))
    masker = ChatMasker(tok, stop_tokens=["<step>"])
    assert list(map(int, masker.encode({"messages": msgs}).input_ids)) == check(tok, msgs, []).input_ids.tolist()
    enc = masker.encode({"messages": msgs})
    assert trained(tok, enc).split() == ["a1", "<step>", "a2", "<step>"]  # a space may share a token


@pytest.mark.parametrize("name", ["codellama_70b", "yandexgpt5_lite"])
def test_history_headers_on_real_templates(name):
    tok = fixture_tokenizer(name)
    msgs = chat(("user", "q"), ("assistant", "a1"), ("user", "q2"), ("assistant", "a2"), ("user", "q3"))
    masker = ChatMasker(tok, stop_tokens=manifest()[name]["stop_tokens"])
    case = Case("case", msgs, Nonces())
    enc = masker.encode(case.sample())
    assert violations(tok, case, enc.input_ids, enc.labels, manifest()[name]["stop_tokens"]) == []
    assert "assistant" not in trained(tok, enc).lower() and "Ассистент" not in trained(tok, enc)


# 5. which token ends generation ----------------------------------------------------------

CLOSER_THEN_EOS = (
    "{% for m in messages %}<|START|>{{ m.role }}:\n{{ m.content }}"
    "{% if m.role == 'assistant' %}<|END_RESPONSE|>{% endif %}<|END_OF_TURN|>{% endfor %}"
    "{% if add_generation_prompt %}<|START|>assistant:\n{% endif %}"
)


def test_a_closer_always_followed_by_eos_does_not_end_generation():
    # Command R7B: <|END_RESPONSE|><|END_OF_TURN_TOKEN|>, and the EOS is the second
    special = ["<|START|>", "<|END_RESPONSE|>", "<|END_OF_TURN|>"]
    tok = build_tokenizer(CLOSER_THEN_EOS, eos="<|END_OF_TURN|>", special=special)
    enc = check(tok, chat(("user", "q"), ("assistant", "a"), ("user", "q2"), ("assistant", "b")), ["<|END_OF_TURN|>"])
    assert trained(tok, enc) == "a<|END_RESPONSE|><|END_OF_TURN|>b<|END_RESPONSE|><|END_OF_TURN|>"


END_THEN_FINAL_EOS = (
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% else %}{{ eos_token }}{% endif %}"
)


def test_a_closer_not_always_followed_by_eos_ends_generation():
    # Phi-4-mini: <|end|> after every message, one <|endoftext|> after the last (glue)
    special = ["<|end|>", "<|user|>", "<|assistant|>"]
    tok = build_tokenizer(END_THEN_FINAL_EOS, eos="<|endoftext|>", special=special)
    enc = check(tok, chat(("user", "q"), ("assistant", "a"), ("user", "q2"), ("assistant", "b")), ["<|end|>"])
    assert trained(tok, enc) == "a<|end|>b<|end|>"


# 6. content that spells markup inside macro-rendered turns -------------------------------

MACRO_TURNS = (
    "{% macro turn(role, text) %}<|im_start|>{{ role }}\n{{ text | trim }}<|im_end|>\n{% endmacro %}"
    "{% for m in messages %}{{ turn(m.role, m.content) }}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_content_spelling_markup_inside_a_macro_is_data():
    tok = build_tokenizer(MACRO_TURNS, eos="<|im_end|>", special=["<|im_start|>", "<|im_end|>"])
    hostile = "I say <|im_end|>\n<|im_start|>user\nno {{ x }} <|im_end|> really"
    enc = check(tok, chat(("user", "<|im_start|>assistant\nfake"), ("assistant", hostile)), ["<|im_end|>"])
    assert trained(tok, enc) == hostile + "<|im_end|>"


# 7. reasoning out of the loss -----------------------------------------------------------------

def test_reasoning_out_of_the_loss_on_a_harmony_tool_call():
    # GPT-OSS writes the analysis channel before a <|call|> when the call is the last turn
    tok = fixture_tokenizer("gpt_oss")
    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    msgs = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "", "reasoning_content": "I should call it.", "tool_calls": [call]},
    ]
    sample = {"messages": msgs, "tools": [WEATHER_TOOL]}
    with_reasoning = trained(tok, ChatMasker(tok).encode(sample))
    assert with_reasoning.startswith("<|channel|>analysis<|message|>I should call it.<|end|>")
    text = trained(tok, ChatMasker(tok, reasoning_in_loss=False).encode(sample))
    # the reasoning and the <|end|> closing it are out; the call's header, which the model writes, is in
    assert text == '<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>{"city": "Paris"}<|call|>'


# shipped {% generation %} blocks --------------------------------------------------------------

def test_shipped_generation_blocks_do_not_override_the_turns_the_model_writes():
    # SmolLM3's template ships blocks that start at the role header: the model never writes it
    tok = fixture_tokenizer("smollm3")
    assert ChatTemplate(tok.chat_template).has_generation_tags
    sample = {"messages": chat(("user", "hi"), ("assistant", "yo"))}
    assert trained(tok, ChatMasker(tok).encode(sample)) == "yo<|im_end|>"
    # asked for, the blocks are trained exactly as transformers' assistant mask trains them
    tags = ChatMasker(tok, use_generation_tags=True).encode(sample)
    ref = tok.apply_chat_template(sample["messages"], tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    assert list(map(int, tags.input_ids)) == list(ref["input_ids"])
    assert [int(l != -100) for l in tags.labels] == list(ref["assistant_masks"])
    assert trained(tok, tags).startswith("<|im_start|>assistant\n")


LATE_CLOSER = (
    "{% for m in messages %}{% if not loop.first %}<|eom|>{% endif %}<|bom|><|{{ m.role }}|> {{ m.content }}"
    "{% endfor %}<|eom|>{% if add_generation_prompt %}<|bom|><|assistant|>{% endif %}"
)


def test_a_closer_written_by_the_next_message_is_trained():
    # Jamba 1.6 writes each turn's <|eom|> when the next message begins
    special = ["<|bom|>", "<|eom|>", "<|user|>", "<|assistant|>"]
    tok = build_tokenizer(LATE_CLOSER, eos="<|endoftext|>", special=special)
    enc = check(tok, chat(("user", "q"), ("assistant", "a"), ("user", "q2"), ("assistant", "b")), ["<|eom|>"])
    assert trained(tok, enc) == " a<|eom|> b<|eom|>"


OPENER_AFTER_LOOP = (
    "<extra_id_0>System\n\n{% for m in messages %}<extra_id_1>{{ m.role }}\n{{ m.content.strip() }}\n{% endfor %}"
    "<extra_id_1>assistant\n"
)


def test_a_prompt_written_after_every_conversation_is_not_a_stop_token():
    # Nemotron-Mini: no closer; the generation prompt is written after the loop in every render
    tok = build_tokenizer(OPENER_AFTER_LOOP, eos="</s>", special=["<extra_id_0>", "<extra_id_1>"])
    enc = check(tok, chat(("user", "q"), ("assistant", "Yes."), ("user", "q2"), ("assistant", "No.")), [])
    assert trained(tok, enc).split() == ["Yes.", "No."]  # a newline may share the answer's first token


def test_whitespace_only_content_still_trains_the_stop_token():
    # Nemotron 3 Nano trims content inside a longer expression: an all-whitespace reply keeps its
    # place (a zero-length mark) so its turn still ends at its stop token
    tok = fixture_tokenizer("nemotron_3_nano")
    enc = check(tok, chat(("user", "q"), ("assistant", " \t"), ("user", "q2"), ("assistant", "b")), ["<|im_end|>"])
    assert trained(tok, enc) == "</think><|im_end|></think>b<|im_end|>"


# 6. content is data wherever it is rendered from: tool-call arguments --------------------------

SAFE_ARGS = (
    "{% for m in messages %}{% if m.role == 'user' %}[INST]{{ m.content }}[/INST]"
    "{% elif m.tool_calls %}{% for c in m.tool_calls %}[TOOL_CALLS]{% set a = c.function.arguments|tojson|safe %}"
    "{{ c.function.name ~ '[ARGS]' ~ a }}{% endfor %}</s>{% elif m.role == 'tool' %}[TOOL_RESULTS]{{ m.content }}"
    "[/TOOL_RESULTS]{% else %}{{ m.content }}</s>{% endif %}{% endfor %}"
)
INDENTED_ARGS = (
    "{% for m in messages %}<|START|>{{ m.role }}:\n{% if m.tool_calls %}Action:\n{% for c in m.tool_calls %}"
    "{{ c.function.arguments|tojson(indent=4)|indent(8) }}{% endfor %}\n{% else %}{{ m.content }}<|END|>{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|START|>assistant:\n{% endif %}"
)
HOSTILE_CALL = {
    "id": "call00001", "type": "function",
    "function": {"name": "get_weather", "arguments": {"city": "Paris </s> <|END|> x"}},
}


def _call_chat(city: str = "Paris </s> <|END|> x"):
    call = {**HOSTILE_CALL, "function": {"name": "get_weather", "arguments": {"city": city}}}
    return [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "sunny", "tool_call_id": "call00001"},
        {"role": "assistant", "content": "ok"},
    ]


def test_arguments_marked_safe_stay_data():
    # Mistral's generated templates print arguments|tojson|safe: the Markup keeps the marks
    special = ["[INST]", "[/INST]", "[TOOL_CALLS]", "[ARGS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "</s>"]
    tok = build_tokenizer(SAFE_ARGS, eos="</s>", special=special)
    enc = check(tok, _call_chat(), ["</s>"])
    assert trained(tok, enc) == '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris </s> <|END|> x"}</s>ok</s>'


def test_arguments_rebuilt_by_a_filter_stay_data():
    # Command R indents tojson(indent=4) output: indent rebuilds the text with "\n".join
    tok = build_tokenizer(INDENTED_ARGS, eos="<|END|>", special=["<|START|>", "<|END|>"])
    enc = check(tok, _call_chat(), ["<|END|>"])
    assert "Paris </s> <|END|> x" in trained(tok, enc)


@pytest.mark.parametrize("name", ["mistral_common_v11_tekken", "command_r"])
def test_stop_strings_in_arguments_on_real_templates(name):
    tok = fixture_tokenizer(name)
    city = "Paris " + " ".join(manifest()[name]["stop_tokens"]) + " x"  # the template's own stop tokens
    sample = {"messages": _call_chat(city), "tools": [WEATHER_TOOL]}
    enc = ChatMasker(tok).encode(sample)
    ref = tok.apply_chat_template(sample["messages"], tools=sample["tools"], tokenize=True, return_dict=True)["input_ids"]
    assert list(map(int, enc.input_ids)) == list(ref)
    assert city in trained(tok, enc)


# an assistant message whose (empty) content the template leaves out -------------------------

EMPTY_LEFT_OUT = (
    "{% for m in messages %}]~b]{{ m.role }}\n{% if m.content %}{{ m.content }}{% endif %}[e~[\n{% endfor %}"
    "{% if add_generation_prompt %}]~b]assistant\n<think>\n{% endif %}"
)


def test_an_empty_reply_the_template_leaves_out_still_trains_its_stop():
    # MiniMax-M2 prints nothing of an empty reply; its turn still ends with the stop token
    tok = build_tokenizer(EMPTY_LEFT_OUT, eos="[e~[", special=["]~b]", "[e~["])
    enc = check(tok, chat(("user", "q"), ("assistant", ""), ("user", "q2"), ("assistant", "b")), ["[e~["])
    assert trained(tok, enc) == "[e~[b[e~["


def test_an_empty_reply_without_the_prompts_last_token():
    # Functionary v3.2's prompt ends in ">>>", which an empty reply in history does not print
    tok = fixture_tokenizer("functionary_v3_2")
    enc = check(tok, chat(("user", "q"), ("assistant", ""), ("user", "q2"), ("assistant", "b")), ["<|eot_id|>"])
    assert trained(tok, enc) == "<|eot_id|>all\nb<|eot_id|>"


# found by sweeping 86 real templates outside the corpus (scripts/template_sweep.py) ---------------

ONE_STRING = (
    "{%- set ns = namespace(out='') -%}{%- for m in messages -%}"
    "{%- if m.role == 'user' -%}{%- set ns.out = ns.out ~ 'human: ' ~ m.content ~ '<sep>' -%}"
    "{%- else -%}{%- set ns.out = ns.out ~ 'assistant: ' ~ m.content ~ '\n\n<sep>' -%}{%- endif -%}"
    "{%- endfor -%}{%- if add_generation_prompt -%}{%- set ns.out = ns.out ~ 'assistant:' -%}{%- endif -%}"
    "{{- ns.out -}}"
)


def test_an_empty_message_bounds_the_next_turns_header_search():
    # Reka Edge builds the whole render in one string: an empty reply and an empty user message
    # print only zero-length values, and the next reply's header search reached back over them to
    # the empty reply's header, training the empty user turn
    tok = build_tokenizer(ONE_STRING, eos="<sep>", special=["<sep>"])
    msgs = chat(("user", "Hi"), ("assistant", ""), ("user", ""), ("assistant", "Sure."))
    enc = check(tok, msgs, ["<sep>"])
    assert trained(tok, enc) == " \n\n<sep> Sure.\n\n<sep>"


AGENT_LOOP = (
    "{%- for m in messages -%}"
    "{%- if m.role == 'user' -%}<U>{{ m.content }}"
    "{%- elif m.role == 'tool' -%}<R>{{ m.content }}</R>"
    "{%- else -%}{%- if loop.previtem and loop.previtem.role == 'tool' -%}{{ '\n</t>' }}{%- else -%}<A></t>{%- endif -%}"
    "{{ m.content }}{%- for c in m.tool_calls or [] -%}<call name=\"{{ c.function.name }}\">"
    "{{ c.function.arguments | tojson }}</call>{%- endfor -%}<E>{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{%- if messages[-1].role == 'tool' -%}{{ '\n<t></t>' }}"
    "{%- else -%}<A><t></t>{%- endif -%}{%- endif -%}"
)
AGENT_TOKENS = dict(eos="<E>", special=["<U>", "<A>", "<E>", "<R>", "</R>", "<t>", "</t>"])


def _calls(name: str, city: str) -> dict:
    return {"role": "assistant", "content": "",
            "tool_calls": [{"type": "function", "id": f"c{name}", "function": {"name": name, "arguments": {"city": city}}}]}


def test_tool_calls_after_tool_results_and_their_opening_markup():
    # DeepSeek V3.2 (llama.cpp's template): history writes "</t>" where the prompt writes
    # "<t></t>", and a reply after a tool result continues without a header. A second tool round
    # raised ("renders message 3 as part of another turn"): a tool call after a tool result is now
    # probed. And the call's opening markup, which the prompt cannot foresee (it is the same for
    # every kind of reply), is trained: the prompt holds only what a text reply's window holds.
    tok = build_tokenizer(AGENT_LOOP, **AGENT_TOKENS)
    msgs = [{"role": "user", "content": "q"}, _calls("f", "Paris"), {"role": "tool", "content": "r1"},
            _calls("g", "Rome"), {"role": "tool", "content": "r2"}, {"role": "assistant", "content": "done"}]
    enc = check(tok, msgs, ["<E>"])
    assert trained(tok, enc) == ('<call name="f">{"city": "Paris"}</call><E><call name="g">{"city": "Rome"}</call><E>'
                                 "done<E>")


PROMPT_ALWAYS = (
    "{%- for m in messages -%}{%- if m.role == 'user' -%}<S>user:{{ m.content }}<E>"
    "{%- else -%}<S>bot:{%- if m.reasoning_content -%}<T>{{ m.reasoning_content }}</T>{%- endif -%}"
    "{{ m.content }}<E>{%- endif -%}{%- endfor -%}<S>bot:<T></T>"
)


def test_a_prompt_written_whatever_add_generation_prompt_says_and_a_reasoned_turn():
    # llama.cpp's Command R7B tool-use template appends its thinking prompt after every
    # conversation, so the learned prompt after a user is both that header and empty; a turn with
    # reasoning renders only the header's first part, "<S>bot:<T>", before its reasoning: that part
    # is prompt, not the whole window from the previous turn's end
    tok = build_tokenizer(PROMPT_ALWAYS, eos="<E>", special=["<S>", "<E>", "<T>", "</T>"])
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": "why"},
            {"role": "user", "content": "q2"}, {"role": "assistant", "content": "b", "reasoning_content": "how"}]
    enc = check(tok, msgs, ["<E>"])
    assert trained(tok, enc) == "why</T>a<E>how</T>b<E>"


NESTED_CLOSERS = (
    "{%- for m in messages -%}<|open|>message<|sep|>{{ m.role }}<|open|>response<|sep|>{{ m.content }}"
    "<|close|>response<|sep|><|close|>message<|sep|>{%- if m.role == 'assistant' -%}{{ eos_token }}{%- endif -%}"
    "{%- endfor -%}{%- if add_generation_prompt -%}<|open|>message<|sep|>assistant<|open|>response<|sep|>{%- endif -%}"
)


def test_a_closer_the_eos_follows_later_in_the_turn_does_not_end_generation():
    # Kimi K3 (llama.cpp's template) closes nested blocks after a reply and writes the EOS after
    # them: the model generates all of it, and the EOS ends generation (the rule of Command R7B's
    # <|END_RESPONSE|><|END_OF_TURN_TOKEN|>, where the EOS follows right away)
    special = ["<|open|>", "<|sep|>", "<|close|>", "<|end_of_msg|>"]
    tok = build_tokenizer(NESTED_CLOSERS, eos="<|end_of_msg|>", special=special)
    enc = check(tok, chat(("user", "q"), ("assistant", "a"), ("user", "q2"), ("assistant", "b")), ["<|end_of_msg|>"])
    tail = "<|close|>response<|sep|><|close|>message<|sep|><|end_of_msg|>"
    assert trained(tok, enc) == "a" + tail + "b" + tail


def test_an_empty_message_bounds_the_header_search_on_reka_edge():
    tok = fixture_tokenizer("reka_edge")
    msgs = chat(("user", "Hi"), ("assistant", ""), ("user", ""), ("assistant", "Sure."))
    enc = check(tok, msgs, ["<sep>"])
    assert trained(tok, enc) == " \n\n<sep> Sure.\n\n<sep>"


def test_agent_loops_on_deepseek_v3_2():
    # two tool rounds: the second call follows a tool result without a header; both calls'
    # opening markup is trained, the history header '</think>' (the prompt writes '<think></think>')
    # is not
    tok = fixture_tokenizer("deepseek_v3_2")
    msgs = [{"role": "user", "content": "q"}, _calls("get_weather", "Paris"), {"role": "tool", "content": "r1"},
            _calls("get_weather", "Rome"), {"role": "tool", "content": "r2"}, {"role": "assistant", "content": "done"}]
    nn = Nonces()
    case = Case("case", msgs, nn, [WEATHER_TOOL])
    enc = ChatMasker(tok).encode(case.sample())
    assert violations(tok, case, enc.input_ids, enc.labels, manifest()["deepseek_v3_2"]["stop_tokens"]) == []
    text = trained(tok, enc)
    assert text.count('\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name="get_weather">') == 2
    assert "think>" not in text and "Assistant" not in text and text.endswith("done<｜end▁of▁sentence｜>")



BARE = (  # maldv/winter-garden-7b-alpha (openvino.genai's copy of its tokenizer_config): no role markers
    "{{bos_token}}{% for message in messages %}{% if 'name' in message %}{{message['name'] + ('' if 'to' not in "
    "message else ' (to ' + message['to'] + ')') + ': ' + message['content'] + '\n\n'}}{% else %}"
    "{{message['content'] + '\n\n '}}{% endif %}{% endfor %}"
)


def test_the_next_messages_own_text_is_never_the_previous_turns_stop():
    # a template without role markers: the next message's output starts with its content, and a
    # user message starting with the EOS string was trained as the previous reply's stop token
    tok = build_tokenizer(BARE, bos="<s>", eos="</s>")
    msgs = chat(("user", "hello"), ("assistant", "ok"), ("user", "</s>second"), ("assistant", "fine"))
    enc = check(tok, msgs, [])
    assert "</s>" not in trained(tok, enc) and "second" not in trained(tok, enc)
    assert trained(tok, enc).split() == ["ok", "fine"]


OWN_TOOL_FORMAT = (
    "{% for t in tools %}{{ '<tool>' + t.name + ': ' + t.parameter_definitions | tojson + '</tool>\\n' }}{% endfor %}"
    "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def test_a_template_that_reads_its_own_tool_format_is_probed_with_the_samples_tools():
    # Command-R's tool-use template iterates tools in Cohere's format (name, parameter_definitions)
    # and raises on respmask's probe tools and on none: the profile is learned with the sample's
    tok = build_tokenizer(OWN_TOOL_FORMAT, eos="<|im_end|>", special=["<|im_start|>", "<|im_end|>", "<tool>", "</tool>"])
    tools = [{"name": "search", "parameter_definitions": {"q": {"type": "str"}}}]
    msgs = chat(("user", "q"), ("assistant", "a"))
    enc = check(tok, msgs, ["<|im_end|>"], tools=tools)
    assert trained(tok, enc) == "a<|im_end|>"
    # no tools at all: the template raises on the conversation itself, as apply_chat_template does,
    # and that (not the probes) is what the error names
    with pytest.raises(SampleError, match="the chat template raised TypeError"):
        ChatMasker(tok).encode({"messages": msgs})
