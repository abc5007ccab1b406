"""Template truth, round 3 (issue 25): the mechanisms that still raised or mis-masked on real
templates, each on a small template that isolates it and on real templates of its class.

Every check compares with transformers (``apply_chat_template`` ids, token for token) and with the
nonce reference (``support.reference.violations``: every assistant nonce trained, no other, the stop
token trained), and pins the trained text where that says more.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from respmask import ChatMasker, SampleError
from support.conversations import WEATHER_TOOL, Case, Nonces, hostile_cases
from support.reference import violations
from support.tokenizers import build_tokenizer, fixture_tokenizer, manifest

SWEEP = Path(__file__).parent / "fixtures" / "sweep"
STYLES = ["bytelevel", "metaspace"]


def trained(tok, enc) -> str:
    return tok.decode([int(i) for i, label in zip(enc.input_ids, enc.labels) if label != -100])


def judged(tok, messages, stop_tokens, *, tools=None, nonces=None, sample_extra=None, **masker_kwargs):
    """Encode ``messages`` (nonce words in them) and return the encoding after asserting the ids
    equal transformers' and the nonce reference finds nothing wrong."""
    nn = nonces or Nonces()
    case = Case("case", messages, nn, tools)
    sample = {**case.sample(), **(sample_extra or {})}
    enc = ChatMasker(tok, **masker_kwargs).encode(sample)
    problems = violations(tok, case, enc.input_ids, enc.labels, stop_tokens)
    assert problems == [], problems
    return enc


def sweep_tokenizer(name: str, style: str = "bytelevel"):
    info = json.loads((SWEEP / "info.json").read_text(encoding="utf-8"))[name]
    source = (SWEEP / "templates" / f"{name}.jinja").read_text(encoding="utf-8")
    tok = build_tokenizer(source, style=style, bos=info.get("bos_token"), eos=info.get("eos_token"),
                          special=info.get("special_tokens", []))
    return tok, info["stop_tokens"]


def say(nn: Nonces, role: str, k: int, kind: str | None = None, parts: bool = False) -> dict:
    word = nn(kind or {"system": "sys", "user": "usr", "assistant": "ast"}.get(role, "oth"), k)
    return {"role": role, "content": [{"type": "text", "text": word}] if parts else word}


# 1. templates that accept only some conversation shapes -------------------------------------------

# system and assistant content read as parts (LLaVA-NeXT's ``message['content'][0]['text']``), user
# parts iterated by type: string content raises
PARTS_ONLY = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m.role == 'system' %}{{ '<sys>' + m.content[0].text + '</sys>' }}"
    "{% elif m.role == 'user' %}{{ '<u>' }}{% for p in m.content %}{% if p.type == 'image' %}<img>"
    "{% else %}{{ p.text }}{% endif %}{% endfor %}{{ '</u>' }}"
    "{% else %}{{ '<a>' + m.content[0].text + eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<a>{% endif %}"
)
# llava-hf/llava-v1.6-mistral-7b-hf's template (its source: fixtures/chat_templates/vision/SOURCES.md)
LLAVA_NEXT = Path(__file__).parent / "fixtures" / "chat_templates" / "vision" / "llava_next.jinja"


def _parts_chat(nn: Nonces) -> list[dict]:
    """System, user, reply, user in two parts, reply: every content a list of parts (images go
    through the processor: tests/test_vision_families.py; a text tokenizer refuses them)."""
    return [say(nn, "system", 0, parts=True), say(nn, "user", 1, parts=True), say(nn, "assistant", 2, parts=True),
            {"role": "user", "content": [{"type": "text", "text": nn("usr", 3)}, {"type": "text", "text": nn("usr", 3)}]},
            say(nn, "assistant", 4, parts=True)]


@pytest.mark.parametrize("name", ["small", "llava_next"])
@pytest.mark.parametrize("style", STYLES)
def test_a_template_that_reads_content_parts_only_is_probed_in_parts(name, style):
    if name == "small":
        tok = build_tokenizer(PARTS_ONLY, style=style, bos="<s>", eos="</s>",
                              special=["<s>", "</s>", "<sys>", "</sys>", "<u>", "</u>", "<a>", "<img>"])
    else:  # with a text tokenizer; tests/test_vision_families.py runs it through LlavaNextProcessor
        tok = build_tokenizer(LLAVA_NEXT.read_text(encoding="utf-8"), style=style, bos="<s>", eos="</s>",
                              special=["<s>", "</s>", "[INST]", "[/INST]", "<image>"])
    nn = Nonces()
    msgs = _parts_chat(nn)
    enc = judged(tok, msgs, ["</s>"], nonces=nn)
    replies = [m["content"][0]["text"] for m in msgs if m["role"] == "assistant"]
    assert trained(tok, enc).replace(" ", "") == "".join(f"{r}</s>" for r in replies)
    # the same chat with string content is what the template itself rejects: the sample's error
    strings = [{"role": m["role"], "content": "plain"} for m in msgs]
    with pytest.raises(SampleError, match="the chat template raised"):
        ChatMasker(tok).encode({"messages": strings})


def _functions(nn: Nonces, k: int) -> dict:
    return {"role": "functions", "content": json.dumps([{"name": "get_weather", "description": nn("fn", k)}])}


@pytest.mark.parametrize("style", STYLES)
def test_firefunction_v1_renders_only_with_a_functions_message(style):
    # it raises unless the first messages are "functions" or ["system", "functions"]: none of the
    # fixed probes has that shape, so the profile is learned from the conversation's own
    tok, stops = sweep_tokenizer("hfjs_firefunction_v1", style)
    nn = Nonces()
    call = {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "id": "call1", "function": {"name": "get_weather",
                                                          "arguments": json.dumps({"city": nn("arg", 3)})}}]}
    msgs = [say(nn, "system", 0), _functions(nn, 1), say(nn, "user", 2), call,
            {"role": "tool", "content": nn("tool", 4), "tool_call_id": "call1"}, say(nn, "assistant", 5),
            say(nn, "user", 6), say(nn, "assistant", 7)]
    enc = judged(tok, msgs, stops, nonces=nn)
    text = trained(tok, enc)
    assert text.startswith('<functioncall>{"name": "get_weather"') and text.count("</s>") == 3
    # a conversation without the functions message is the template's own error, named as such
    with pytest.raises(SampleError, match="Expected either"):
        ChatMasker(tok).encode({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})


@pytest.mark.parametrize("style", STYLES)
def test_internlm_20b_renders_only_conversations_that_end_with_the_user(style):
    tok, stops = sweep_tokenizer("ov_internlm_20b_llama", style)
    nn = Nonces()
    msgs = [say(nn, "user", 0), say(nn, "assistant", 1), say(nn, "user", 2), say(nn, "assistant", 3), say(nn, "user", 4)]
    enc = judged(tok, msgs, stops, nonces=nn)
    assert trained(tok, enc) == f"{msgs[1]['content']}<eoa>{msgs[3]['content']}<eoa>"


def test_a_profile_learned_from_one_conversation_shape_serves_the_next_of_that_shape():
    tok, stops = sweep_tokenizer("ov_internlm_20b_llama")
    masker = ChatMasker(tok)
    for n in (3, 5, 7):
        nn = Nonces()
        msgs = [say(nn, "user" if k % 2 == 0 else "assistant", k) for k in range(n)]
        enc = masker.encode({"messages": msgs})
        assert trained(tok, enc) == "".join(f"{m['content']}<eoa>" for m in msgs if m["role"] == "assistant")
    # one failed fixed probing, then one profile per outline of the probes cut from the conversation
    # (through its second reply and the message after it: 7 messages probe as 5 do)
    assert len(masker._unprobed) == 1 and len(masker._profiles) == 2


# 2. documents and tools given as template kwargs ----------------------------------------------------

DOCS_TEMPLATE = (
    "{% if documents %}<docs>{% for d in documents %}{{ d.title }}: {{ d.text }}\n{% endfor %}</docs>{% endif %}"
    "{% if tools %}<tools>{{ tools | tojson }}</tools>{% endif %}"
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.mark.parametrize("name", ["small", "granite3_1", "granite3_2", "granite3_3", "granite4_0", "command_r7b"])
def test_documents_and_tools_as_template_kwargs_mean_what_they_mean_in_the_sample(name):
    if name == "small":
        tok = build_tokenizer(DOCS_TEMPLATE, eos="<|end|>",
                              special=["<|end|>", "<|user|>", "<|assistant|>", "<docs>", "</docs>", "<tools>", "</tools>"])
        stops = ["<|end|>"]
    else:
        tok, stops = fixture_tokenizer(name), manifest()[name]["stop_tokens"]
    nn = Nonces()
    docs = [{"title": "Doc", "text": nn("doc", None)}]
    msgs = [say(nn, "user", 0), say(nn, "assistant", 1), say(nn, "user", 2), say(nn, "assistant", 3)]
    ref = tok.apply_chat_template(msgs, documents=docs, tokenize=True, return_dict=True)["input_ids"]
    as_sample = ChatMasker(tok).encode({"messages": msgs, "documents": docs})
    as_kwargs = ChatMasker(tok, template_kwargs={"documents": docs}).encode({"messages": msgs})
    per_sample = ChatMasker(tok).encode({"messages": msgs, "chat_template_kwargs": {"documents": docs}})
    for enc in (as_sample, as_kwargs, per_sample):
        assert list(map(int, enc.input_ids)) == list(ref)
        assert list(map(int, enc.labels)) == list(map(int, as_sample.labels))
    problems = violations(tok, Case("docs", msgs, nn, None, {"documents": docs}), as_kwargs.input_ids,
                          as_kwargs.labels, stops)
    assert problems == [], problems
    assert "docnonce" not in trained(tok, as_kwargs)
    # tools too
    tools = [WEATHER_TOOL]
    ref = tok.apply_chat_template(msgs, tools=tools, tokenize=True, return_dict=True)["input_ids"]
    own = ChatMasker(tok).encode({"messages": msgs, "tools": tools})
    kw = ChatMasker(tok, template_kwargs={"tools": tools}).encode({"messages": msgs})
    assert list(map(int, kw.input_ids)) == list(ref) == list(map(int, own.input_ids))
    assert list(map(int, kw.labels)) == list(map(int, own.labels))


def test_the_samples_own_documents_win_over_template_kwargs():
    tok = fixture_tokenizer("granite3_3")
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    mine, theirs = [{"title": "t", "text": "mine"}], [{"title": "t", "text": "theirs"}]
    enc = ChatMasker(tok, template_kwargs={"documents": theirs}).encode({"messages": msgs, "documents": mine})
    text = tok.decode(enc.input_ids)
    assert "mine" in text and "theirs" not in text


# 3. assistant-first conversations on templates that write a default system prompt ------------------

# Granite 3's shape: a default system prompt with today's date, from a template that indexes
# messages[0] (it cannot render an empty history, so the first turn's own prompt cannot be rendered)
# and writes the generation prompt inside its loop (none after a lone system message, so what a
# probe learns after a system message is no header)
DATED_DEFAULT_SYSTEM = (
    "{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] %}{% set loop_messages = messages[1:] %}"
    "{% else %}{% set sys = 'Today is ' + strftime_now('%B %d, %Y') + '.' %}{% set loop_messages = messages %}{% endif %}"
    "<|role|>system<|sep|>{{ sys }}<|end|>\n"
    "{% for m in loop_messages %}<|role|>{{ m.role }}<|sep|>{{ m.content }}<|end|>\n"
    "{% if loop.last and add_generation_prompt %}<|role|>assistant<|sep|>{% endif %}{% endfor %}"
)


# the same, but it renders an empty history (with the default system prompt and no header: its
# generation prompt is written inside the loop), so the first turn's own prompt holds no header
DATED_DEFAULT_SYSTEM_EMPTY_OK = DATED_DEFAULT_SYSTEM.replace(
    "{% if messages[0]['role'] == 'system' %}", "{% if messages and messages[0]['role'] == 'system' %}")


@pytest.mark.parametrize("name", ["small", "small_empty_ok", "granite3_1", "granite3_2", "granite3_3", "granite4_0",
                                  "dbrx", "qwen2_5"])
@pytest.mark.parametrize("style", STYLES)
def test_assistant_first_never_trains_the_header(name, style):
    if name.startswith("small"):
        source = DATED_DEFAULT_SYSTEM if name == "small" else DATED_DEFAULT_SYSTEM_EMPTY_OK
        tok = build_tokenizer(source, style=style, eos="<|end|>", special=["<|role|>", "<|sep|>", "<|end|>"])
        stops = ["<|end|>"]
    else:
        tok, stops = fixture_tokenizer(name, style), manifest()[name]["stop_tokens"]
    nn = Nonces()
    msgs = [say(nn, "assistant", 0), say(nn, "user", 1), say(nn, "assistant", 2)]
    enc = judged(tok, msgs, stops, nonces=nn)
    stop = stops[0] if name != "qwen2_5" else "<|im_end|>"
    assert trained(tok, enc) == f"{msgs[0]['content']}{stop}{msgs[2]['content']}{stop}"


# 4. body markup before a closer that is not the EOS --------------------------------------------------

THOUGHT_SOLUTION = (
    "{% for m in messages %}{% if m.role == 'assistant' %}<|assistant|>\n<|begin_of_thought|>\n"
    "{{ m.reasoning_content or '' }}\n<|end_of_thought|>\n<|begin_of_solution|>\n{{ m.content }}\n<|end_of_solution|><|end|>\n"
    "{% else %}<|{{ m.role }}|>\n{{ m.content }}<|end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n<|begin_of_thought|>\n{% endif %}"
)
THOUGHT_TOKENS = ["<|assistant|>", "<|user|>", "<|system|>", "<|end|>", "<|begin_of_thought|>", "<|end_of_thought|>",
                  "<|begin_of_solution|>", "<|end_of_solution|>"]


@pytest.mark.parametrize("style", STYLES)
def test_markup_replies_write_before_the_turn_closer_is_the_replys_and_the_closer_is_trained(style):
    tok = build_tokenizer(THOUGHT_SOLUTION, style=style, eos="<|endoftext|>", special=THOUGHT_TOKENS + ["<|endoftext|>"])
    nn = Nonces()
    msgs = [say(nn, "system", 0), say(nn, "user", 1),
            {"role": "assistant", "content": nn("ast", 2), "reasoning_content": nn("rsn", 2)},
            say(nn, "user", 3), say(nn, "assistant", 4)]
    enc = judged(tok, msgs, ["<|end|>"], nonces=nn)
    text = trained(tok, enc)
    first = (f"{msgs[2]['reasoning_content']}\n<|end_of_thought|>\n<|begin_of_solution|>\n{msgs[2]['content']}\n"
             "<|end_of_solution|><|end|>")
    # the reply without reasoning writes from the newline after the prompt's <|begin_of_thought|>\n on
    # (one '\n\n' token holds the prompt's newline and the reply's: trained, as a token straddling
    # the edge is)
    second = f"<|end_of_thought|>\n<|begin_of_solution|>\n{msgs[4]['content']}\n<|end_of_solution|><|end|>"
    assert text.startswith(first) and text.endswith(second) and text[len(first):-len(second)].strip() == ""
    assert "<|begin_of_thought|>" not in text and "<|assistant|>" not in text
    # the closer of every role ends generation whatever the EOS is; with EOS = <|end|> it is the same
    same = build_tokenizer(THOUGHT_SOLUTION, style=style, eos="<|end|>", special=THOUGHT_TOKENS)
    assert trained(same, ChatMasker(same).encode({"messages": msgs})) == trained(tok, enc)


# 5. a turn that prints its empty content again after its EOS ------------------------------------------

# llama.cpp's DeepSeek-R1-distill variant tests ``content is not none``: a tool call with content ""
# renders the call and its EOS, then the header and "" and EOS again
DOUBLE_RENDER = (
    "{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}<|User|>{{ m.content }}"
    "{% elif m.role == 'assistant' %}{% if m.tool_calls %}<|Assistant|><|calls|>{% for c in m.tool_calls %}"
    "{{ c.function.name }}({{ c.function.arguments }}){% endfor %}<|/calls|>{{ eos_token }}{% endif %}"
    "{% if m.content is not none %}<|Assistant|>{{ m.content }}{{ eos_token }}{% endif %}"
    "{% elif m.role == 'tool' %}<|output|>{{ m.content }}<|/output|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|Assistant|>{% endif %}"
)


def _call_chain(nn: Nonces, content, as_json: bool = True) -> list[dict]:
    arguments = {"city": nn("arg", 1)}
    return [say(nn, "user", 0),
            {"role": "assistant", "content": content, "tool_calls": [
                {"type": "function", "id": "call1",
                 "function": {"name": "get_weather", "arguments": json.dumps(arguments) if as_json else arguments}}]},
            {"role": "tool", "content": nn("tool", 2), "tool_call_id": "call1"}, say(nn, "assistant", 3)]


@pytest.mark.parametrize("style", STYLES)
def test_nothing_after_eos_is_trained_when_a_template_prints_empty_content_again(style):
    tok = build_tokenizer(DOUBLE_RENDER, style=style, bos="<s>", eos="</s>",
                          special=["<s>", "</s>", "<|User|>", "<|Assistant|>", "<|calls|>", "<|/calls|>", "<|output|>",
                                   "<|/output|>"])
    nn = Nonces()
    msgs = _call_chain(nn, "")
    enc = judged(tok, msgs, ["</s>"], tools=[WEATHER_TOOL], nonces=nn)
    arg = json.loads(msgs[1]["tool_calls"][0]["function"]["arguments"])["city"]
    assert trained(tok, enc) == f'<|calls|>get_weather({{"city": "{arg}"}})<|/calls|></s>{msgs[3]["content"]}</s>'


@pytest.mark.parametrize("style", STYLES)
def test_the_double_render_on_llama_cpps_r1_distill_variant(style):
    tok, stops = sweep_tokenizer("lc_deepseek_ai_DeepSeek_R1_Distill_Qwen_32B", style)
    nn = Nonces()
    msgs = _call_chain(nn, "")
    enc = judged(tok, msgs, stops, tools=[WEATHER_TOOL], nonces=nn)
    # the call's EOS and the answer's, not the empty copy's
    assert sum(1 for i, label in zip(enc.input_ids, enc.labels) if label != -100 and i == tok.eos_token_id) == 2


@pytest.mark.parametrize("style", STYLES)
def test_an_empty_final_channel_after_reasoning_still_ends_at_its_own_stop(style):
    # GPT-OSS: a reply with reasoning and empty content ends with <|return|> after the final
    # channel's empty value; <|end|> after the analysis is no EOS, so the turn goes on
    tok, stops = fixture_tokenizer("gpt_oss", style), manifest()["gpt_oss"]["stop_tokens"]
    nn = Nonces()
    msgs = [say(nn, "user", 0), {"role": "assistant", "content": "", "thinking": nn("rsn", 1)}]
    enc = judged(tok, msgs, stops, nonces=nn)
    assert trained(tok, enc).endswith("<|channel|>final<|message|><|return|>")


ERNIE_TOKENS = ["<s>", "</s>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<response>", "</response>",
                "<tool_call>", "</tool_call>", "<tool_output>", "</tool_output>"]


@pytest.mark.parametrize("style", STYLES)
def test_ernie_4_5_thinking_trains_its_response_markup_and_its_turn_closer(style):
    source = (Path(__file__).parent / "fixtures" / "round3" / "ernie4_5_21b_a3b_thinking.jinja").read_text(encoding="utf-8")
    tok = build_tokenizer(source, style=style, bos="<s>", eos="</s>", special=ERNIE_TOKENS)
    nn = Nonces()
    msgs = [say(nn, "system", 0), say(nn, "user", 1), say(nn, "assistant", 2), say(nn, "user", 3),
            say(nn, "assistant", 4)]
    enc = judged(tok, msgs, ["<|im_end|>"], nonces=nn)
    text = trained(tok, enc)
    assert text.startswith(f"{msgs[2]['content']}\n</response>\n<|im_end|>")
    assert text.endswith(f"<response>\n{msgs[4]['content']}\n</response>\n<|im_end|>")
    assert "<|im_start|>" not in text and nn.kinds and "usrnonce" not in text


# the reply's empty content printed after the tool results its call asked for (vLLM's Gemma 4
# tool template keeps the model turn open across tool results): what follows a result is another
# generation, so the call's turn ends at its own call terminator (the tool's name quoted in the
# response was trained as the call's)
@pytest.mark.parametrize("style", STYLES)
def test_an_empty_reply_printed_after_tool_results_ends_at_its_call(style):
    tok, stops = sweep_tokenizer("vllm_tool_gemma4", style)
    nn = Nonces()
    msgs = _call_chain(nn, "", as_json=False)
    enc = judged(tok, msgs, stops, tools=[WEATHER_TOOL], nonces=nn)
    text = trained(tok, enc)
    assert "tolnonce" not in text and text.count("get_weather") == 1


# an empty value printed inside text that is exactly the generation prompt: a no-thinking template
# writes every reply's reasoning block as <think>\n + reasoning + \n</think>\n\n, the reasoning split off
# the content at '</think>' (Qwen3.5's way), and its prompt is the empty block <think>\n\n</think>\n\n;
# a reply whose split-off reasoning is empty had none of the block generated
NO_THINK = (
    "{% for m in messages %}{% if m.role == 'assistant' %}{% set c = m.content %}{% set r = '' %}"
    "{% if '</think>' in c %}{% set r = c.split('</think>')[0] | trim %}{% set c = c.split('</think>')[-1] | trim %}"
    "{% endif %}<|im_start|>assistant\n<think>\n{{ r }}\n</think>\n\n{{ c }}<|im_end|>\n"
    "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n\n</think>\n\n{% endif %}"
)


@pytest.mark.parametrize("style", STYLES)
def test_an_empty_value_inside_the_generation_prompts_text_is_prompt(style):
    tok = build_tokenizer(NO_THINK, style=style, eos="<|im_end|>", special=["<|im_start|>", "<|im_end|>", "<think>", "</think>"])
    nn = Nonces()
    reply = nn("ast", 1)
    msgs = [say(nn, "user", 0), {"role": "assistant", "content": f"</think>{reply}"},
            say(nn, "user", 2), say(nn, "assistant", 3)]
    enc = judged(tok, msgs, ["<|im_end|>"], nonces=nn)
    assert trained(tok, enc) == f"{reply}<|im_end|>{msgs[3]['content']}<|im_end|>"


@pytest.mark.parametrize("name", ["trl_qwen3_5_nothink_training", "vllm_rs_qwen35", "vllm_tu_minicpmv45"])
def test_hostile_content_a_qwen3_5_template_parses(name):
    # the reply's own text holds '</think>': the template splits it off as (empty) reasoning and
    # prints it inside the empty think block its no-thinking prompt writes
    tok, stops = sweep_tokenizer(name)
    prompt = tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True)
    header = prompt[prompt.index("x<|im_end|>\n") + len("x<|im_end|>\n"):]
    info = json.loads((SWEEP / "info.json").read_text(encoding="utf-8"))[name]
    case = next(c for c in hostile_cases(info.get("special_tokens", []), header, tok.eos_token, stops)
                if c.name == "hostile_chat")
    enc = ChatMasker(tok).encode(case.sample())
    problems = violations(tok, case, enc.input_ids, enc.labels, stops)
    assert problems == [], problems


def exaone_like(name: str, small: str, style: str):
    """The tokenizer and stop tokens of the small EXAONE-style template ``small`` (markers
    ``[|role|]``, closer ``[|endofturn|]``) for ``name == "small"``, else of sweep template ``name``."""
    if name != "small":
        return sweep_tokenizer(name, style)
    special = ["[|user|]", "[|assistant|]", "[|system|]", "[|endofturn|]"]
    return build_tokenizer(small, style=style, eos="[|endofturn|]", special=special), ["[|endofturn|]"]


# a template that prints a message's content as it is: list content comes out as its Python repr
# (EXAONE 4 via Axolotl), written by that message as a filter's rebuilt text is
REPR_CONTENT = (
    "{% for m in messages %}[|{{ m.role }}|]\n{{ m.content }}[|endofturn|]\n{% endfor %}"
    "{% if add_generation_prompt %}[|assistant|]\n{% endif %}"
)


@pytest.mark.parametrize("name", ["small", "ax_exaone4"])
@pytest.mark.parametrize("style", STYLES)
def test_list_content_printed_as_its_repr_is_the_messages_text(name, style):
    tok, stops = exaone_like(name, REPR_CONTENT, style)
    nn = Nonces()
    msgs = [say(nn, "user", 0, parts=True), say(nn, "assistant", 1, parts=True), say(nn, "user", 2, parts=True),
            say(nn, "assistant", 3, parts=True)]
    enc = judged(tok, msgs, stops, nonces=nn)
    text = trained(tok, enc)
    assert "'type': 'text'" in text and "usrnonce" not in text
    assert ChatMasker(tok).encode({"messages": msgs}).dropped == []  # nothing reported lost


# a template that walks the conversation by index (``for i in range(messages|length)`` and
# ``messages[i]``) instead of by message: its literal text belongs to the message the iteration takes,
# so an empty reply, which prints nothing of its own, still has its header (prompt) and its closer
# (trained: the model learns to answer nothing and stop)
BY_INDEX = (
    "{% for i in range(messages|length) %}{% set m = messages[i] %}"
    "{% if m.role == 'assistant' %}[|assistant|]\n{% if m.content %}{{ m.content }}{% endif %}[|endofturn|]\n"
    "{% else %}[|{{ m.role }}|]\n{{ m.content }}[|endofturn|]\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}[|assistant|]\n{% endif %}"
)


@pytest.mark.parametrize("name", ["small", "ax_exaone4"])
@pytest.mark.parametrize("style", STYLES)
def test_an_index_loops_empty_reply_still_ends_with_its_trained_closer(name, style):
    tok, stops = exaone_like(name, BY_INDEX, style)
    nn = Nonces()
    msgs = [say(nn, "system", 0), say(nn, "user", 1), {"role": "assistant", "content": ""}, say(nn, "user", 2),
            say(nn, "assistant", 3)]
    enc = judged(tok, msgs, stops, nonces=nn)
    text = trained(tok, enc)
    assert text.startswith("[|endofturn|]") and text.count("[|endofturn|]") == 2
    assert "[|assistant|]" not in text
