"""Property-based tests: on every fixture template, for every conversation hypothesis generates
(role orders the template allows, empty and whitespace-only contents, any script, emoji, long
words, code, edge newlines, the template's own markers and special tokens, tool calls,
reasoning), the nonce references hold and input_ids equal apply_chat_template.

The number of examples per template is RESPMASK_HYPOTHESIS_EXAMPLES (default 12; CI keeps the
default and a fixed seed, a deep local run can set 500 and RESPMASK_HYPOTHESIS_RANDOM=1).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from respmask import ChatMasker
from support.conversations import WEATHER_TOOL, Case, Nonces
from support.reference import check_case
from support.tokenizers import fixture_tokenizer, manifest, template_names

EXAMPLES = int(os.environ.get("RESPMASK_HYPOTHESIS_EXAMPLES", "12"))
RANDOM = bool(os.environ.get("RESPMASK_HYPOTHESIS_RANDOM"))  # explore new examples instead of the fixed CI set
MANIFEST = manifest()

GENERIC_MARKERS = [
    "<|im_start|>assistant\n", "<|im_end|>", "<|eot_id|>", "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "[INST]", "[/INST]", "</s>", "<s>", "<end_of_turn>", "<start_of_turn>model\n", "<think>", "</think>",
    "<|end|>", "<|return|>", "<|channel|>final<|message|>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>",
    "{{ messages }}", "{% endfor %}", "\ue000", "\u200b", "\x00", "\r\n",
]

text_pieces = st.one_of(
    st.text(max_size=12),  # any unicode, including control and private-use characters
    st.text(alphabet=st.characters(codec="utf-8", categories=("L", "N", "Zs")), max_size=30),
    st.sampled_from(["", " ", "\n", "\n\n", "  \t ", "😀🚀✨", "中文字符", "русский текст", "العربية", "हिन्दी",
                     "x" * 80, "def f(x):\n    return {'a': [1, 2]}\n", "```json\n{\"a\": 1}\n```"]),
)


@st.composite
def contents(draw, markers):
    pieces = draw(st.lists(st.one_of(text_pieces, st.sampled_from(markers)), max_size=4))
    return "".join(pieces)


@st.composite
def conversations(draw, name):
    info = MANIFEST[name]
    supports = info.get("supports", {})
    markers = GENERIC_MARKERS + list(info.get("special_tokens", []))
    nn = Nonces()
    messages = []

    def text(kind, i, plant=True):
        body = draw(contents(markers))
        if not plant:
            return body
        return f"{draw(contents(markers))} {nn(kind, i)} {body}"

    if supports.get("system", True) and draw(st.booleans()):
        messages.append({"role": "system", "content": text("SYS", 0)})
    alternate = info.get("requires_alternation", False)
    n_turns = draw(st.integers(1, 3))
    tools = None
    for _ in range(n_turns):
        messages.append({"role": "user", "content": text("USR", len(messages))})
        if supports.get("tools") and not alternate and draw(st.integers(0, 3)) == 0:
            tools = [WEATHER_TOOL]
            i = len(messages)
            messages.append({"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "id": f"call{i:05d}".ljust(9, "0")[:9],
                 "function": {"name": "get_weather", "arguments": {"city": nn("ARG", i)}}}]})
            messages.append({"role": "tool", "tool_call_id": f"call{i:05d}".ljust(9, "0")[:9],
                             "name": "get_weather", "content": text("TOL", i + 1)})
        i = len(messages)
        plant = draw(st.integers(0, 5)) > 0  # sometimes an answer with no nonce (empty, whitespace ...)
        message = {"role": "assistant", "content": text("AST", i, plant)}
        if supports.get("reasoning_content") and draw(st.booleans()):
            message["reasoning_content"] = text("RSN", i)
        messages.append(message)
    if draw(st.booleans()):
        messages.append({"role": "user", "content": text("USR", len(messages))})
    kwargs = dict(info.get("template_kwargs") or {})  # what the template cannot render without
    if tools is None and kwargs.get("tools") is not None:
        tools = list(kwargs["tools"])
    kwargs.pop("tools", None)
    return Case("hypothesis", messages, nn, tools, kwargs)


def _check(name, style, case):
    tok = fixture_tokenizer(name, style)
    masker = _maskers.setdefault((name, style), ChatMasker(tok))
    problems = check_case(tok, masker, case, MANIFEST[name]["stop_tokens"])
    assert not problems, (problems, case.messages)


_maskers: dict = {}


@pytest.mark.parametrize("style", ["bytelevel", "metaspace"])
@pytest.mark.parametrize("name", template_names())
def test_nonce_properties_hold_for_generated_conversations(name, style):
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(conversations(name))
    def run(case):
        _check(name, style, case)

    run()


@pytest.mark.parametrize("style", ["bytelevel", "metaspace"])
def test_found_by_hypothesis_harmony_answer_with_reasoning_and_empty_content(style):
    """GPT-OSS renders an empty final answer after reasoning as '...<|end|><|start|>assistant<|channel|>final
    <|message|><|return|>': the model generates all of it, so all of it is trained (found by a random run)."""
    nn = Nonces()
    call = [{"type": "function", "id": "call00001", "function": {"name": "get_weather",
                                                                  "arguments": {"city": nn("ARG", 1)}}}]
    messages = [
        {"role": "user", "content": f" {nn('USR', 0)} "},
        {"role": "assistant", "content": "", "tool_calls": call},
        {"role": "tool", "tool_call_id": "call00001", "name": "get_weather", "content": f" {nn('TOL', 2)} "},
        {"role": "assistant", "content": "", "reasoning_content": f" {(rsn := nn('RSN', 3))} "},
    ]
    case = Case("harmony-empty-final", messages, nn, [WEATHER_TOOL])
    _check("gpt_oss", style, case)
    last = _trained_pieces("gpt_oss", style, case)[-1]
    assert last.endswith(f" {rsn} <|end|><|start|>assistant<|channel|>final<|message|><|return|>"), last


def _trained_pieces(name: str, style: str, case: Case) -> list[str]:
    tok = fixture_tokenizer(name, style)
    enc = _maskers[(name, style)].encode(case.sample())
    pieces, cur = [], []
    for i, lab in zip(enc.input_ids, enc.labels):
        if lab != -100:
            cur.append(int(i))
        elif cur:
            pieces.append(tok.decode(cur))
            cur = []
    return pieces + ([tok.decode(cur)] if cur else [])


@pytest.mark.parametrize("style", ["bytelevel", "metaspace"])
def test_found_by_hypothesis_turn_without_stop_token_closes_what_it_opened(style):
    """Command-R renders a tool call with no end-of-turn token after it: the JSON's closing brackets and
    fence are still the model's to write, so they are trained; the tool result (whose content holds the
    end-of-turn token's text) is not."""
    nn = Nonces()
    call = [{"type": "function", "id": "call00001", "function": {"name": "get_weather",
                                                                  "arguments": {"city": (arg := nn("ARG", 1))}}}]
    messages = [
        {"role": "user", "content": f" {nn('USR', 0)} "},
        {"role": "assistant", "content": "", "tool_calls": call},
        {"role": "tool", "tool_call_id": "call00001", "name": "get_weather",
         "content": f"<|END_OF_TURN_TOKEN|> {nn('TOL', 2)} "},
        {"role": "assistant", "content": ""},
    ]
    case = Case("command-r-call", messages, nn, [WEATHER_TOOL])
    _check("command_r", style, case)
    pieces = _trained_pieces("command_r", style, case)
    assert pieces[0].startswith("\nAction:\n```json\n[") and f'"city": "{arg}"' in pieces[0], pieces
    assert pieces[0].endswith("}\n    }\n]```"), pieces
    assert pieces[1:] == ["<|END_OF_TURN_TOKEN|>"], pieces


@pytest.mark.parametrize(("name", "content"), [
    ("minimax_m2", "[e~"),  # the content's end and the stop token '[e~[' overlap in the text
    ("qwen3_5", "</think> {nonce} <|im_end|>"),  # the template splits the content at '</think>'
])
@pytest.mark.parametrize("style", ["bytelevel", "metaspace"])
def test_found_by_hypothesis_content_that_runs_into_the_stop_token(name, content, style):
    nn = Nonces()
    messages = [{"role": "user", "content": f" {nn('USR', 0)} "},
                {"role": "assistant", "content": content.format(nonce=nn("AST", 1)) if "{nonce}" in content else content,
                 **({"reasoning_content": f" {nn('RSN', 1)} "} if name == "minimax_m2" else {})}]
    case = Case(f"{name}-content-into-stop", messages, nn)
    _check(name, style, case)
    stop = MANIFEST[name]["stop_tokens"][0]
    last = _trained_pieces(name, style, case)[-1]
    assert last.endswith(messages[-1]["content"].strip() + stop) or last.endswith(
        messages[-1]["content"].split("</think>")[-1].strip() + stop), last


@pytest.mark.parametrize(("name", "reasoning", "expected"), [
    # GLM-4.5 ends such an answer at '</think>' (its turns stop at the next role token, and there is
    # none): '</think>' is generated, so it is trained
    ("glm4_5", " {rsn} ", "\n<think>{rsn}</think>"),
    # Seed-OSS writes no stop token after it either; the reasoning's own '<seed:eos>' text is content
    # and must not cut the turn (it did: the nonce after it went untrained)
    ("seed_oss", "<seed:eos> {rsn} ", "<seed:think><seed:eos> {rsn}</seed:think>"),
])
@pytest.mark.parametrize("style", ["bytelevel", "metaspace"])
def test_found_by_hypothesis_final_reasoning_only_answer_without_stop_token(name, reasoning, expected, style):
    nn = Nonces()
    rsn = nn("RSN", 1)
    messages = [{"role": "user", "content": f" {nn('USR', 0)} "},
                {"role": "assistant", "content": "", "reasoning_content": reasoning.format(rsn=rsn)}]
    case = Case(f"{name}-reasoning-only", messages, nn)
    _check(name, style, case)
    assert _trained_pieces(name, style, case) == [expected.format(rsn=rsn)]


@pytest.mark.parametrize("style", ["bytelevel", "metaspace"])
def test_found_by_hypothesis_answer_repeating_the_end_of_its_reasoning(style):
    """GLM-4.5, an answer '0' after reasoning that ends in '0': the answer after '</think>' is the
    model's and trained (the reference once placed the answer on the reasoning's '0' and called it
    trained after the turn's end)."""
    nn = Nonces()
    rsn = nn("RSN", 1)
    messages = [{"role": "user", "content": f" {nn('USR', 0)} "},
                {"role": "assistant", "content": "0", "reasoning_content": f" {rsn} 0"}]
    case = Case("glm-answer-repeats-reasoning", messages, nn)
    _check("glm4_5", style, case)
    assert _trained_pieces("glm4_5", style, case) == [f"\n<think>{rsn} 0</think>\n0"]


@pytest.mark.parametrize("style", ["bytelevel", "metaspace"])
def test_found_by_hypothesis_content_that_spells_the_end_of_the_generation_prompt(style):
    """MiniMax M2's prompt ends in ']~b]ai\\n<think>\\n', and a reply whose content is '<think>\\n' renders
    the same characters: they are the reply's own text there (content is data), so they are trained,
    with the stop token; nothing before them is (found by a random run)."""
    nn = Nonces()
    case = Case("spells-prompt-end", [{"role": "user", "content": f" {nn('USR', 0)} "},
                                      {"role": "assistant", "content": "<think>\n"}], nn)
    _check("minimax_m2", style, case)
    assert _trained_pieces("minimax_m2", style, case) == ["<think>\n[e~["]


@pytest.mark.parametrize("style", ["bytelevel", "metaspace"])
def test_found_by_hypothesis_reply_that_starts_with_the_prompts_closing_tag(style):
    """DeepSeek V3.1 (thinking off) prompts with '<｜Assistant｜></think>' and cuts a reply at its own
    '</think>': the render's '</think>' is the prompt's, so only the text after it and the stop token are
    trained (found by a random run)."""
    nn = Nonces()
    case = Case("starts-with-closing-tag", [{"role": "user", "content": f" {nn('USR', 0)} "},
                                            {"role": "assistant", "content": f"</think> {(a := nn('AST', 1))} "}], nn)
    _check("deepseek_v3_1", style, case)
    eos = fixture_tokenizer("deepseek_v3_1", style).decode([fixture_tokenizer("deepseek_v3_1", style).eos_token_id])
    (piece,) = _trained_pieces("deepseek_v3_1", style, case)
    assert piece.strip() == f"{a} {eos}", piece
