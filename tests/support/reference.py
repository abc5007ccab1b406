"""Independent references for masks: nonce words and transformers' own renders.

Nothing here uses respmask's span engine. Given a tokenizer, a conversation with nonces and
the labels respmask produced, ``violations`` lists every way the labels break the policy:

* input_ids differ from ``tokenizer.apply_chat_template(..., tokenize=True)``;
* an assistant nonce (content, reasoning, tool-call argument) has an untrained token, or a
  system/user/tool nonce has a trained token;
* an assistant answer's content is missing from the render;
* the first stop token after an assistant answer is not trained (a stop token followed by the
  template's own assistant header, as in harmony's channels, continues the answer);
* something is trained between the previous turn's stop token and the end of this turn's
  prompt (``apply_chat_template(messages[:i], add_generation_prompt=True)``), or after the
  final assistant turn's stop token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .conversations import TRAINED_KINDS, UNTRAINED_KINDS, Case

IGNORE = -100


def check_case(tok: Any, masker: Any, case: Case, stop_tokens: Sequence[str]) -> list[str] | None:
    """The violations of respmask's encoding of ``case`` (``None`` when the template rejects the
    conversation, in which case respmask must raise a SampleError too)."""
    from respmask import SampleError

    try:
        tok.apply_chat_template(case.messages, tools=case.tools, tokenize=False, **case.kwargs)
    except Exception:
        try:
            masker.encode(case.sample())
        except SampleError:
            return None
        return ["transformers' apply_chat_template raises on this conversation but respmask did not"]
    enc = masker.encode(case.sample())
    return violations(tok, case, enc.input_ids, enc.labels, stop_tokens)


def run_cases(tok: Any, masker: Any, cases: Sequence[Case], stop_tokens: Sequence[str]) -> int:
    """Check every case; assert that none has a violation; return how many rendered."""
    checked, failures = 0, {}
    for case in cases:
        problems = check_case(tok, masker, case, stop_tokens)
        if problems is None:
            continue
        if problems:
            failures[case.name] = problems
        checked += 1
    assert not failures, failures
    return checked


def hf_ids(tok: Any, case: Case, **extra: Any) -> list[int]:
    out = tok.apply_chat_template(
        case.messages, tools=case.tools, tokenize=True, return_dict=True, **case.kwargs, **extra
    )
    return list(out["input_ids"])


def hf_text(tok: Any, messages: Sequence[dict], case: Case, **extra: Any) -> str:
    return tok.apply_chat_template(list(messages), tools=case.tools, tokenize=False, **case.kwargs, **extra)


def _assistant_header(tok: Any, case: Case, i: int) -> str:
    """What ``add_generation_prompt`` adds after ``messages[:i]`` ('' when unknown)."""
    try:
        bare = hf_text(tok, case.messages[:i], case)
        prompt = hf_text(tok, case.messages[:i], case, add_generation_prompt=True)
    except Exception:
        return ""
    return prompt[len(bare):] if prompt.startswith(bare) else ""


def _occurrences(text: str, word: str) -> list[int]:
    out, i = [], text.find(word)
    while i >= 0:
        out.append(i)
        i = text.find(word, i + 1)
    return out


class TokenView:
    """Token offsets of a text, for questions like 'which tokens overlap these characters'."""

    def __init__(self, tok: Any, text: str):
        enc = tok.backend_tokenizer.encode(text, add_special_tokens=False)
        self.offsets = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
        self.ids = enc.ids

    def overlapping(self, a: int, b: int) -> np.ndarray:
        s, e = self.offsets[:, 0], self.offsets[:, 1]
        return np.nonzero((s < b) & (e > a))[0]

    def inside(self, a: int, b: int) -> np.ndarray:
        s, e = self.offsets[:, 0], self.offsets[:, 1]
        return np.nonzero((s >= a) & (e <= b) & (e > s))[0]


def violations(
    tok: Any,
    case: Case,
    input_ids: Sequence[int],
    labels: Sequence[int],
    stop_tokens: Sequence[str],
    *,
    check_prompt: bool = True,
) -> list[str]:
    problems: list[str] = []
    ref_ids = hf_ids(tok, case)
    if list(map(int, input_ids)) != ref_ids:
        problems.append(f"input_ids differ from apply_chat_template ({len(input_ids)} vs {len(ref_ids)} tokens)")
        return problems
    text = hf_text(tok, case.messages, case)
    view = TokenView(tok, text)
    trained = np.asarray(labels) != IGNORE

    # 1. nonces
    for word, kind in case.nonces.kinds.items():
        spots = _occurrences(text, word)
        m = case.messages[case.nonces.message_of[word]]
        content = m.get("content")
        parsed_by_template = isinstance(content, str) and ("think>" in content or "<|" in content)
        if kind == "AST" and not spots and not m.get("tool_calls") and not parsed_by_template:
            # (templates may cut content at '</think>' or similar markup: then the text is theirs to drop)
            problems.append(f"assistant nonce {word} is not in the render")
        for a in spots:
            toks = view.overlapping(a, a + len(word))
            if kind in TRAINED_KINDS and not trained[toks].all():
                problems.append(f"{kind} nonce {word} not trained")
            if kind in UNTRAINED_KINDS and trained[toks].any():
                problems.append(f"{kind} nonce {word} is trained")

    # 2. the stop token after each assistant answer: the first one after the answer's text and
    #    before the next message's text (templates whose turns have no stop token are skipped)
    all_spots = sorted((p, case.nonces.message_of[w]) for w in case.nonces.kinds for p in _occurrences(text, w))
    turn_ends: dict[int, int | None] = {}
    for i, m in enumerate(case.messages):
        if m["role"] != "assistant":
            continue
        words = [w for w, k in case.nonces.kinds.items() if case.nonces.message_of[w] == i and k in TRAINED_KINDS]
        ends = [p + len(w) for w in words for p in _occurrences(text, w)]
        if not ends:
            turn_ends[i] = None  # the template did not render this turn's text: its edges are unknown
            continue
        after = max(ends)
        limit = min((p for p, owner in all_spots if p >= after and owner != i), default=len(text))
        first = min(p for w in words for p in _occurrences(text, w))
        certain = True  # is the end of the answer's text known?
        for field in ("reasoning_content", "content"):  # the answer's own text runs past its nonce
            value = m.get(field)
            if isinstance(value, str) and value.strip():
                v = value.strip()
                spots = [p for p in _occurrences(text, v) if p + len(v) <= limit and (p < after <= p + len(v) or first <= p)]
                if spots:
                    after = max(after, max(spots) + len(v))
                elif field == "content":
                    certain = False  # the template rewrote the content (say, cut at '</think>')
        turn_ends[i] = after if certain else None
        hits = [(text.find(s, after, limit), s) for s in stop_tokens if text.find(s, after, limit) >= 0]
        if not hits:
            continue
        q, s = min(hits)
        # A stop token followed by the template's own assistant header, still before any other
        # message's text, is a channel switch inside this answer (harmony's '<|end|><|start|>assistant
        # <|channel|>final'): the model generates that header itself, and the answer ends later.
        header = _assistant_header(tok, case, i)
        while header and text.startswith(header, q + len(s)):
            nxt = [(text.find(t, q + len(s) + len(header), limit), t) for t in stop_tokens]
            nxt = [h for h in nxt if h[0] >= 0]
            if not nxt:
                break
            q, s = min(nxt)
        toks = view.overlapping(q, q + len(s))
        if not trained[toks].all():
            problems.append(f"stop token {s!r} after assistant message {i} not trained")
        turn_ends[i] = q + len(s)

    if check_prompt:
        prev_end: int | None = 0
        last_assistant = None
        for i, m in enumerate(case.messages):
            if m["role"] != "assistant":
                continue
            last_assistant = i
            if i > 0 and prev_end is not None:
                try:
                    prompt = hf_text(tok, case.messages[:i], case, add_generation_prompt=True)
                except Exception:
                    prompt = None
                if prompt is not None and text.startswith(prompt):
                    toks = view.inside(prev_end, len(prompt))
                    if trained[toks].any():
                        bad = [view.ids[t] for t in toks[trained[toks]]]
                        problems.append(
                            f"tokens {tok.convert_ids_to_tokens(bad)!r} trained inside the prompt of message {i}"
                        )
            prev_end = turn_ends.get(i)
        end = turn_ends.get(last_assistant) if last_assistant is not None else None
        if end is not None:
            toks = view.inside(end, len(text))
            if trained[toks].any():
                bad = [view.ids[t] for t in toks[trained[toks]]]
                problems.append(f"tokens {tok.convert_ids_to_tokens(bad)!r} trained after the final stop token")
    return problems
