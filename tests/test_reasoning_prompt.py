"""Replies with reasoning rendered under template kwargs that contradict the generation prompt are
reported by check (Qwen3's enable_thinking=False on rows with reasoning_content)."""

from __future__ import annotations

from respmask import ChatMasker, check
from support.tokenizers import build_tokenizer, fixture_tokenizer


def reasoned(*turns):
    out = []
    for q, a, r in turns:
        out.append({"role": "user", "content": q})
        out.append({"role": "assistant", "content": a, **({"reasoning_content": r} if r else {})})
    return out


def gen_prompt(tok, messages, **kwargs):
    """What the generation prompt appends after the history, as apply_chat_template writes it."""
    history = tok.apply_chat_template(messages, tokenize=False, **kwargs)
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)
    return prompt[len(history):]


def test_qwen3_without_thinking_on_rows_with_reasoning_is_reported():
    tok = fixture_tokenizer("qwen3")
    msgs = reasoned(("q1", "A1", "R1"), ("q2", "A2", "R2"))
    off = {"enable_thinking": False}
    # the contradiction itself: at inference without thinking the reply follows an empty reasoning
    # block, but the last reply is rendered (and trained) with its reasoning where that block is
    prompt = gen_prompt(tok, msgs[:3], **off)
    text = tok.apply_chat_template(msgs, tokenize=False, **off)
    assert not text.startswith(tok.apply_chat_template(msgs[:3], tokenize=False, add_generation_prompt=True, **off))
    report = check([{"messages": msgs}], tok, template_kwargs=off)
    assert not report.ok
    # message 1's reasoning is left out of this render (earlier turn): it is not trained against the prompt
    assert report.reasoning_against_prompt == [(0, 3)]
    assert report.reasoning_prompt == {"kwargs": off, "prompt": prompt,
                                       "prompt_without": gen_prompt(tok, msgs[:3])}
    assert "replies with reasoning trained against the generation prompt: 1 message(s)" in str(report)
    # split='auto' trains message 1 with its reasoning too (its own prefix row): listed as well
    assert sorted(check([{"messages": msgs}], tok, template_kwargs=off, split="auto").reasoning_against_prompt) == [
        (0, 1), (0, 3)]
    # the same rows in thinking mode, and rows without reasoning without thinking, are consistent
    for kwargs, rows in (({}, msgs), ({"enable_thinking": True}, msgs),
                         (off, reasoned(("q1", "A1", None), ("q2", "A2", None)))):
        report = check([{"messages": rows}], tok, template_kwargs=kwargs)
        assert report.ok and report.reasoning_against_prompt == [], kwargs


def test_the_contradiction_is_learned_from_renders_not_from_a_kwarg_name():
    # a template whose kwarg 'quick' writes an empty reasoning block into the prompt, as Qwen3's
    # enable_thinking=False does; the kwarg 'tone' changes nothing of it
    template = ("{% for m in messages %}<|{{ m['role'] }}|>{% if m['role'] == 'assistant' %}"
                "{% if m.reasoning_content %}<r>{{ m.reasoning_content }}</r>{% else %}<r></r>{% endif %}{% endif %}"
                "{{ m['content'] }}<|end|>{% endfor %}"
                "{% if add_generation_prompt %}<|assistant|>{% if quick %}<r></r>{% endif %}{{ tone }}{% endif %}")
    tok = build_tokenizer(template, eos="<|end|>", special=["<|user|>", "<|assistant|>"])
    msgs = reasoned(("q", "a", "thinking hard"))
    report = check([{"messages": msgs}], tok, template_kwargs={"quick": True, "tone": ""})
    assert report.reasoning_against_prompt == [(0, 1)] and not report.ok
    assert report.reasoning_prompt == {"kwargs": {"quick": True}, "prompt": "<|assistant|><r></r>",
                                       "prompt_without": "<|assistant|>"}
    assert check([{"messages": msgs}], tok, template_kwargs={"quick": False, "tone": ""}).ok
    # the masks are the template's, unchanged: only the report says it
    enc = ChatMasker(tok, template_kwargs={"quick": True}).encode({"messages": msgs})
    assert "thinking hard" in tok.decode(enc.input_ids[enc.labels != -100])


def test_reasoning_written_in_the_content_is_reported_too():
    # distill-style rows ('<think>..</think>' in the content): Qwen3's template splits the reasoning
    # off at '</think>' and renders it as it renders reasoning_content, thinking off or not
    tok = fixture_tokenizer("qwen3")
    think = "<think>\nweighing it\n</think>\n\n"
    msgs = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": think + "A1"},
            {"role": "user", "content": "q2"}, {"role": "assistant", "content": think + "A2"}]
    off = {"enable_thinking": False}
    report = check([{"messages": msgs}], tok, template_kwargs=off)
    assert not report.ok and report.reasoning_against_prompt == [(0, 3)]
    assert report.reasoning_prompt["kwargs"] == off
    assert check([{"messages": msgs}], tok).ok
    # a reply that only mentions a string of the template, without reasoning before it, is no such reply
    plain = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "use <think> tags"}]
    assert check([{"messages": plain}], tok, template_kwargs=off).reasoning_against_prompt == []
