"""Independent references for masks: nonce words and transformers' own renders.

Nothing here uses respmask's span engine. Given a tokenizer, a conversation with nonces and
the labels respmask produced, ``violations`` lists every way the labels break the policy:

* input_ids differ from ``tokenizer.apply_chat_template(..., tokenize=True)``;
* an assistant nonce (content, reasoning, tool-call argument) has an untrained token, or a
  system/user/tool nonce has a trained token;
* an assistant answer's content is missing from the render;
* the first stop token after an assistant answer is not trained (a stop token followed by the
  template's own assistant header, as in harmony's channels, continues the answer; a turn with no
  stop token ends after the closing quotes, brackets and tags that follow its text);
* something is trained between the previous turn's stop token and the end of this turn's
  prompt (``apply_chat_template(messages[:i], add_generation_prompt=True)``), or after the
  final assistant turn's stop token.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from .conversations import TRAINED_KINDS, UNTRAINED_KINDS, Case

IGNORE = -100
# what may follow an answer's text when its turn has no stop token: closing quotes, brackets and
# tags (a tool call's JSON, '</think>'), never anything that opens a new structure
CLOSING = re.compile(r"(?:\s|[\]})\"'`]|</[A-Za-z_][\w:.-]*>)*")


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


def _stop_hits(text: str, stop_tokens: Sequence[str], lo: int, hi: int) -> list[tuple[int, str]]:
    """Every stop token in ``text[lo:hi]``, in order, none overlapping an earlier one."""
    found = sorted((p, s) for s in stop_tokens for p in _occurrences(text[lo:hi], s))
    out: list[tuple[int, str]] = []
    for p, s in found:
        if not out or p >= out[-1][0] - lo + len(out[-1][1]):
            out.append((lo + p, s))
    return out


def _stops_in_content(content: Any, words: Sequence[str], stop_tokens: Sequence[str]) -> int | None:
    """How many stop-token strings the content holds after its last nonce (None: it holds some and
    has no nonce to place them by)."""
    if not isinstance(content, str):
        return 0
    ends = [content.rfind(w) + len(w) for w in words if w in content]
    tail = content[max(ends):] if ends else content
    n = len(_stop_hits(tail, stop_tokens, 0, len(tail)))
    if n and not ends:
        return None
    return n


def _text_start(text: str, message: dict, p: int, word: str) -> int:
    """Where the message's own text that holds the nonce at ``p`` begins in the render."""
    start = p
    for field in ("content", "reasoning_content"):
        value = message.get(field)
        if isinstance(value, str) and word in value:
            v = value.strip()
            lo = max(0, p - len(v))
            for q in _occurrences(text[lo:p + len(v)], v):
                if lo + q <= p < lo + q + len(v):
                    start = min(start, lo + q)
    return start


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
    # (where each other message's text begins: its content may hold markup before its nonce)
    all_spots = sorted((_text_start(text, case.messages[case.nonces.message_of[w]], p, w), case.nonces.message_of[w])
                       for w in case.nonces.kinds for p in _occurrences(text, w))
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
        placed: set[str] = set()
        for field in ("reasoning_content", "content"):  # the answer's own text runs past its nonce
            value = m.get(field)
            if isinstance(value, str) and value.strip():
                v = value.strip()
                spots = [p for p in _occurrences(text, v) if first <= p + len(v) and p + len(v) <= limit]
                # the text around its nonce (only a value that holds one: a nonce-less content "0"
                # must not be placed on the "0" that ends the reasoning before it)
                holding = [p for p in spots if p < after <= p + len(v)] if any(w in v for w in words) else []
                later = [p for p in spots if p >= after]  # else its first rendering after the known text
                if holding or later:
                    placed.add(field)
                    # (only the first later one: the same characters may recur in the stop token)
                    after = max(holding) + len(v) if holding else later[0] + len(v)
                elif not spots and field == "content":
                    certain = False  # the template rewrote the content (say, cut at '</think>')
        turn_ends[i] = after if certain else None
        hits = _stop_hits(text, stop_tokens, after, limit)
        # when the content was not found (the template rewrote it), stop-token strings it holds after
        # its last nonce come before the real stop token: skip them
        own = 0 if "content" in placed else _stops_in_content(m.get("content"), words, stop_tokens)
        if own is None:
            turn_ends[i] = None  # the content holds stop strings and its place is unknown
            continue
        hits = hits[own:]
        if not hits:
            if turn_ends[i] is not None:  # no stop token: the answer may still close what it opened
                turn_ends[i] = min(limit, turn_ends[i] + len(CLOSING.match(text, turn_ends[i]).group()))
            continue
        q, s = hits[0]
        # A stop token followed by the template's own assistant header, still before any other
        # message's text, is a channel switch inside this answer (harmony's '<|end|><|start|>assistant
        # <|channel|>final'): the model generates that header itself, and the answer ends later.
        header = _assistant_header(tok, case, i)
        while header and text.startswith(header, q + len(s)):
            nxt = _stop_hits(text, stop_tokens, q + len(s) + len(header), limit)
            if not nxt:
                break
            q, s = nxt[0]
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
