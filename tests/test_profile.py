"""What the learner finds in small hand-written templates of different styles."""

from __future__ import annotations

import functools

import pytest

from respmask import ChatMasker
from respmask._errors import TemplateError
from respmask._profile import history_probes, probes, token_regex
from support.tokenizers import build_tokenizer

ROLES = ("user", "system", "assistant", "tool")

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHATML_TOKENS = dict(eos="<|endoftext|>", special=["<|im_start|>", "<|im_end|>"])

# Llama 3 style: a header per message, <|eot_id|> after an answer, <|eom_id|> after a tool call
LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m.role + '<|end_header_id|>\\n\\n' }}"
    "{% if m.tool_calls %}{{ '<|python_tag|>' + m.tool_calls[0].function | tojson + '<|eom_id|>' }}"
    "{% else %}{{ m.content + '<|eot_id|>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
LLAMA3_TOKENS = dict(
    bos="<|begin_of_text|>",
    eos="<|eot_id|>",
    special=["<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|python_tag|>"],
)

# Mistral style: the reply follows [/INST] directly and ends with EOS; system and tool messages
# are not rendered
MISTRAL = (
    "{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}{{ '[INST] ' + m.content + ' [/INST]' }}"
    "{% elif m.role == 'assistant' %}{{ m.content + eos_token }}{% endif %}{% endfor %}"
)
MISTRAL_TOKENS = dict(style="metaspace", bos="<s>", eos="</s>", special=["[INST]", "[/INST]"])

THINK = (
    "{% for m in messages %}{% if m.role == 'assistant' %}{{ '<|im_start|>assistant\\n' }}"
    "{% if m.reasoning_content %}{{ '<think>\\n' + m.reasoning_content + '\\n</think>\\n\\n' }}{% endif %}"
    "{{ m.content + '<|im_end|>\\n' }}"
    "{% else %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
THINK_TOKENS = dict(eos="<|im_end|>", special=["<|im_start|>", "<|im_end|>"])

# the prompt opens a reasoning block that history renders closed and empty
OPEN_THINK = (
    "{% for m in messages %}{% if m.role == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n<think></think>' + m.content + '<|im_end|>\\n' }}"
    "{% else %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n<think>\\n' }}{% endif %}"
)

# Command R style: a closer, then EOS, after every reply
COMMAND_R = (
    "{{ bos_token }}{% for m in messages %}{% if m.role == 'assistant' %}"
    "{{ '<|START_OF_TURN_TOKEN|>assistant<|START_RESPONSE|>' + m.content + '<|END_RESPONSE|><|END_OF_TURN_TOKEN|>' }}"
    "{% else %}{{ '<|START_OF_TURN_TOKEN|>' + m.role + m.content + '<|END_OF_TURN_TOKEN|>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|START_OF_TURN_TOKEN|>assistant<|START_RESPONSE|>' }}{% endif %}"
)
COMMAND_R_TOKENS = dict(
    bos="<BOS_TOKEN>",
    eos="<|END_OF_TURN_TOKEN|>",
    special=["<|START_OF_TURN_TOKEN|>", "<|START_RESPONSE|>", "<|END_RESPONSE|>"],
)


TEMPLATES = {
    "chatml": (CHATML, CHATML_TOKENS),
    "llama3": (LLAMA3, LLAMA3_TOKENS),
    "mistral": (MISTRAL, MISTRAL_TOKENS),
    "think": (THINK, THINK_TOKENS),
    "open_think": (OPEN_THINK, CHATML_TOKENS),
    "command_r": (COMMAND_R, COMMAND_R_TOKENS),
}


@functools.lru_cache(maxsize=None)
def learn(name: str):
    """The profile and stop searches the masker learns for template ``name``."""
    source, tokens = TEMPLATES[name]
    return ChatMasker(build_tokenizer(source, **tokens)).profile(source, {})


def test_chatml():
    profile, stops = learn("chatml")
    assert profile.headers == {role: ("<|im_start|>assistant\n",) for role in ROLES}
    assert profile.all_headers == ("<|im_start|>assistant\n",)
    # token starts of the header: after <|im_start|>, after "assistant", after the newline
    assert profile.header_cuts == {"<|im_start|>assistant\n": (12, 21, 22)}
    assert profile.history_headers == {}
    assert profile.end_of_turn == ("<|im_end|>",)
    assert profile.call_end == ()
    assert profile.reasoning_close == ()
    # the masker's stop search: the learned token and EOS, longest first
    assert stops.end_of_turn.pattern == "<\\|endoftext\\|>|<\\|im_end\\|>"
    assert stops.call_end is None and stops.reasoning_close is None


def test_llama3_header_end_of_turn_and_tool_call_end():
    profile, stops = learn("llama3")
    header = "<|start_header_id|>assistant<|end_header_id|>\n\n"
    assert profile.headers == {role: (header,) for role in ROLES}
    assert profile.end_of_turn == ("<|eot_id|>",)
    assert profile.call_end == ("<|eom_id|>",)
    assert profile.reasoning_close == ()
    assert stops.call_end.pattern == "<\\|eom_id\\|>"


def test_mistral_inst_style_has_an_empty_header():
    profile, _ = learn("mistral")
    # the reply follows [/INST] at once: the generation prompt adds nothing; after a system
    # message (which the template leaves out) the prompt is the BOS alone
    assert profile.headers == {"user": ("",), "assistant": ("",), "tool": ("",), "system": ("<s>", "")}
    assert profile.all_headers == ("<s>", "")
    assert profile.end_of_turn == ("</s>",)  # EOS, the first control token after an answer
    assert profile.call_end == ()
    assert profile.reasoning_close == ()


def test_reasoning_markup():
    profile, stops = learn("think")
    assert profile.headers == {role: ("<|im_start|>assistant\n",) for role in ROLES}
    assert profile.end_of_turn == ("<|im_end|>",)
    assert profile.call_end == ()
    assert profile.reasoning_close == ("</think>",)
    assert stops.reasoning_close.pattern == "</think>"


def test_history_that_differs_from_the_prompt_gives_a_history_header():
    profile, _ = learn("open_think")
    assert profile.headers == {role: ("<|im_start|>assistant\n<think>\n",) for role in ROLES}
    # history writes "<think></think>" where the prompt ends in "<think>\n": the prompt holds
    # the window up to "<think>", the model writes "</think>"
    window = "<|im_start|>assistant\n<think></think>"
    assert profile.history_headers == {role: ((window, len("<|im_start|>assistant\n<think>")),) for role in ROLES}
    assert profile.all_history_headers == ((window, 29),)
    assert profile.end_of_turn == ("<|im_end|>",)


def test_a_closer_that_eos_always_follows_is_not_the_end_of_turn():
    profile, stops = learn("command_r")
    assert profile.headers == {role: ("<|START_OF_TURN_TOKEN|>assistant<|START_RESPONSE|>",) for role in ROLES}
    # <|END_RESPONSE|> closes the reply and EOS ends generation: <|END_OF_TURN_TOKEN|> closes every
    # role's turns (and is the EOS), so it is the end of turn and <|END_RESPONSE|> is the reply's
    assert profile.end_of_turn == ("<|END_OF_TURN_TOKEN|>",)
    assert "<|END_RESPONSE|>" not in profile.call_end
    assert stops.end_of_turn.pattern == "<\\|END_OF_TURN_TOKEN\\|>"


def test_a_template_that_raises_on_every_probe():
    tok = build_tokenizer("{{ raise_exception('nope') }}")
    with pytest.raises(TemplateError, match="raised on every probe conversation; first error: nope"):
        ChatMasker(tok).profile("{{ raise_exception('nope') }}", {})


def test_probes_end_with_an_assistant_turn():
    assert len(probes()) == 12 and len(history_probes()) == 6
    for probe in [*probes(), *history_probes()]:
        assert probe.messages[-1]["role"] == "assistant"


def test_token_regex_prefers_the_longest_token():
    pattern = token_regex(["<|a|>", "<|a|>b", "", "<|a|>"])
    assert pattern is not None
    assert pattern.pattern == "<\\|a\\|>b|<\\|a\\|>"
    assert pattern.search("x<|a|>b").group(0) == "<|a|>b"
    assert pattern.search("x<|a|>c").span() == (1, 6)


def test_token_regex_escapes_and_needs_a_token():
    assert token_regex(["[INST]"]).search("a [INST] b").span() == (2, 8)
    assert token_regex([]) is None
    assert token_regex(["", ""]) is None


def test_each_probe_call_has_its_own_id_and_its_result_answers_it():
    """Templates that look a tool result's call up by id (Solar Open) must find the call it
    answers: with one id for two calls, a result printed the later call's name and the profile
    learned an empty history window that matched anywhere."""
    for probe in probes():
        calls = [c["id"] for m in probe.messages for c in m.get("tool_calls") or ()]
        assert len(calls) == len(set(calls)) and all(len(c) == 9 for c in calls)
        pending: list[str] = []
        for m in probe.messages:
            pending += [c["id"] for c in m.get("tool_calls") or ()]
            if m["role"] == "tool":
                assert m["tool_call_id"] == pending.pop(0)


def test_a_template_that_names_results_by_call_id_learns_no_empty_window():
    from support.tokenizers import fixture_tokenizer

    masker = ChatMasker(fixture_tokenizer("solar_open"))
    profile, _ = masker.profile(masker.template_source(None), {})
    assert all(window for hs in profile.history_headers.values() for window, _ in hs)
