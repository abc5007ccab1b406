"""Independent references for masks: nonce words and transformers' own renders.

Nothing here uses respmask's span engine. Given a tokenizer, a conversation with nonces and
the labels respmask produced, ``violations`` lists every way the labels break the policy:

* input_ids differ from ``tokenizer.apply_chat_template(..., tokenize=True)``;
* an assistant nonce (content, reasoning, tool-call argument) has an untrained token, or a
  system/developer/user/tool/document/instruction nonce has a trained token; an answer's text that
  the render holds verbatim around its nonce (content, each content part, reasoning) is not trained
  whole;
* the first stop token after an assistant answer is not trained (a stop token followed by the
  template's own assistant header, as in harmony's channels, continues the answer; a turn with no
  stop token ends after the closing quotes, brackets and tags that follow its text; a stop string
  inside the message's own text is content, not its stop);
* the stop token of an assistant turn whose text renders no nonce (empty or whitespace-only content,
  a tool call the template does not print) is not trained: it is the first stop token after the end
  of that turn's prompt ``apply_chat_template(messages[:i], add_generation_prompt=True)``, when that
  prompt is a prefix of the full render and the template renders the turn at all (a message is
  skipped when adding it changes nothing and the conversation without it renders the same text; a
  first stop token that comes after the next message's own text, found by rendering that message
  with a probe word, is not this turn's); a blank reply with no stop token ends after the whitespace
  that follows its prompt;
* something is trained between the previous turn's stop token and the end of this turn's
  prompt, or after the final assistant turn's stop token (where the message's own text starts
  with the end of its prompt, as content '<think>\n' after a prompt ending in '<think>\n', the
  prompt surely ends only before that shared text). Where that prompt is not a prefix of the
  render, the prompt is taken to end where the render leaves ``messages[:i]`` rendered alone (plus
  the generation header when the render's copy of it straddles that point, as Command-R's).

What the reference cannot decide on a render (an assistant nonce the template dropped, a turn it
cannot place, a prompt that is not a prefix of the render ...) is not passed silently: ``violations``
appends a note to ``undecided`` (``partly: ...`` when a check was only narrowed) and ``evaluate``
returns them beside the violations. ``run_cases`` counts them per tokenizer and template, and the
tests assert each count against the ledger ``tests/fixtures/chat_templates/undecided.json`` (no
warning: a newcomer's test run prints none, and a change in what the reference decides fails).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .conversations import TRAINED_KINDS, UNTRAINED_KINDS, Case

IGNORE = -100
# what may follow an answer's text when its turn has no stop token: closing quotes (escaped too, as
# in JSON-string arguments printed with tojson), brackets and tags (a tool call's JSON, '</think>'),
# never anything that opens a new structure
CLOSING = re.compile(r"(?:\s|\\*[\]})\"'`]|</[A-Za-z_][\w:.-]*>)*")


@dataclass
class Outcome:
    """One case on one tokenizer: ``status`` is ``pass``, ``fail`` (violations), ``rejected`` (the
    template raises and respmask raised a SampleError too), ``error`` (respmask raised on a
    conversation the template renders, or raised something else than SampleError on one it
    rejects) or ``reference-error`` (the reference itself raised: a bug here)."""

    status: str
    problems: list[str] = field(default_factory=list)
    undecided: list[str] = field(default_factory=list)
    error: str | None = None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def evaluate(tok: Any, masker: Any, case: Case, stop_tokens: Sequence[str], *,
             check_prompt: bool = True) -> Outcome:
    """respmask's encoding of ``case`` against the reference, never raising."""
    from respmask import SampleError

    try:
        hf_text(tok, case.messages, case)
    except Exception as template_exc:
        try:
            masker.encode(case.sample())
        except SampleError:
            return Outcome("rejected", error=_first_line(template_exc))
        except Exception as exc:
            return Outcome("error", error=_first_line(exc) + " (the template rejects this conversation: "
                           + _first_line(template_exc) + ")")
        return Outcome("fail", ["transformers' apply_chat_template raises on this conversation but respmask did not"
                                f" ({_first_line(template_exc)})"])
    try:
        enc = masker.encode(case.sample())
    except Exception as exc:
        return Outcome("error", error=_first_line(exc))
    undecided: list[str] = []
    try:
        problems = violations(tok, case, enc.input_ids, enc.labels, stop_tokens, check_prompt=check_prompt,
                              undecided=undecided)
    except Exception as exc:  # a bug in the reference: never reported as respmask's
        return Outcome("reference-error", error=_first_line(exc))
    return Outcome("fail" if problems else "pass", problems, undecided)


def check_case(tok: Any, masker: Any, case: Case, stop_tokens: Sequence[str]) -> list[str] | None:
    """The violations of respmask's encoding of ``case`` (``None`` when the template rejects the
    conversation, in which case respmask must raise a SampleError too)."""
    out = evaluate(tok, masker, case, stop_tokens)
    if out.status == "rejected":
        return None
    if out.status in ("error", "reference-error"):
        return [f"{out.status}: {out.error}"]
    return out.problems


@dataclass
class Run:
    """What :func:`run_cases` found: ``rendered`` cases checked (the template rendered them), and
    ``undecided``: per case, what the reference could not decide there (asserted against the
    ledger ``undecided.json`` by the tests, never warned about)."""

    rendered: int
    undecided: dict[str, list[str]] = field(default_factory=dict)

    @property
    def n_undecided(self) -> int:
        return sum(map(len, self.undecided.values()))

    def example(self) -> str:
        """One undecided thing, to show when the count changes."""
        if not self.undecided:
            return "nothing undecided"
        case, notes = next(iter(self.undecided.items()))
        return f"{case}: {notes[0]}"


def run_cases(tok: Any, masker: Any, cases: Sequence[Case], stop_tokens: Sequence[str]) -> Run:
    """Check every case and assert that none has a violation. Returns how many rendered and what
    the reference could not decide, for the caller to assert against the recorded count."""
    checked, failures, undecided = 0, {}, {}
    for case in cases:
        out = evaluate(tok, masker, case, stop_tokens)
        if out.status == "rejected":
            continue
        if out.status != "pass":
            failures[case.name] = out.problems or [f"{out.status}: {out.error}"]
        if out.undecided:
            undecided[case.name] = out.undecided
        checked += 1
    assert not failures, failures
    return Run(checked, undecided)


def assert_undecided(run: Run, key: str, ledger: dict[str, int], ledger_name: str) -> None:
    """What the reference could not decide is counted, not warned about: the count must equal the
    one recorded in the ledger (more: the reference lost coverage; fewer: it gained some, and the
    ledger must say so)."""
    recorded = ledger.get(key, 0)
    n = run.n_undecided
    assert n <= recorded, (f"{key}: the nonce reference could not decide {n} thing(s), {recorded} recorded in "
                           f"{ledger_name}: it decides less than before (e.g. {run.example()})")
    assert n == recorded, (f"{key}: the nonce reference now decides all but {n} thing(s) ({recorded} recorded): "
                           f"lower {key!r} in {ledger_name} to {n}")


def hf_ids(tok: Any, case: Case, **extra: Any) -> list[int]:
    out = tok.apply_chat_template(
        case.messages, tools=case.tools, tokenize=True, return_dict=True, **case.kwargs, **extra
    )
    return list(out["input_ids"])


def hf_text(tok: Any, messages: Sequence[dict], case: Case, **extra: Any) -> str:
    return tok.apply_chat_template(list(messages), tools=case.tools, tokenize=False, **case.kwargs, **extra)


def generation_prompt(tok: Any, tools: Sequence[dict] | None = None, **kwargs: Any) -> str:
    """What ``add_generation_prompt=True`` adds after a one-user-message conversation ('' if unknown)."""
    msgs = [{"role": "user", "content": "hello"}]
    try:
        bare = tok.apply_chat_template(msgs, tools=tools, tokenize=False, **kwargs)
        prompt = tok.apply_chat_template(msgs, tools=tools, tokenize=False, add_generation_prompt=True, **kwargs)
    except Exception:
        return ""
    return prompt[_common_prefix(bare, prompt):]


class _Renders:
    """apply_chat_template on prefixes of a case, each computed once (None when it raises)."""

    def __init__(self, tok: Any, case: Case):
        self.tok, self.case, self._cache = tok, case, {}

    def of(self, messages: list[dict]) -> str | None:
        """The render of other messages (None when it raises)."""
        try:
            return hf_text(self.tok, messages, self.case)
        except Exception:
            return None

    def __call__(self, n: int, add_generation_prompt: bool = False) -> str | None:
        key = (n, add_generation_prompt)
        if key not in self._cache:
            try:
                self._cache[key] = hf_text(self.tok, self.case.messages[:n], self.case,
                                           add_generation_prompt=add_generation_prompt)
            except Exception:
                self._cache[key] = None
        return self._cache[key]

    def header(self, n: int) -> str:
        """What ``add_generation_prompt`` adds after ``messages[:n]`` ('' when unknown)."""
        bare, prompt = self(n), self(n, True)
        if bare is None or prompt is None:
            return ""
        return prompt[len(bare):] if prompt.startswith(bare) else ""


def _assistant_header(tok: Any, case: Case, i: int) -> str:
    """What ``add_generation_prompt`` adds after ``messages[:i]`` ('' when unknown)."""
    return _Renders(tok, case).header(i)


def _stop_hits(text: str, stop_tokens: Sequence[str], lo: int, hi: int) -> list[tuple[int, str]]:
    """Every stop token in ``text[lo:hi]``, in order, none overlapping an earlier one."""
    found = sorted((p, s) for s in stop_tokens for p in _occurrences(text[lo:hi], s))
    out: list[tuple[int, str]] = []
    for p, s in found:
        if not out or p >= out[-1][0] - lo + len(out[-1][1]):
            out.append((lo + p, s))
    return out


def _texts(message: dict | None,
           fields: Sequence[str] = ("reasoning_content", "content")) -> list[tuple[str, str]]:
    """The message's own texts as (field, text), in render order: its reasoning, then its content
    (a string, or the text of each part of a list of content parts)."""
    out: list[tuple[str, str]] = []
    for f in fields:
        value = (message or {}).get(f)
        if isinstance(value, str):
            out.append((f, value))
        elif isinstance(value, (list, tuple)):
            out.extend((f, p["text"]) for p in value if isinstance(p, dict) and isinstance(p.get("text"), str))
    return out


def _content_text(message: dict | None) -> str:
    return "\n".join(t for _, t in _texts(message, ("content",)))


def _stops_in_content(content: Any, words: Sequence[str], stop_tokens: Sequence[str]) -> int | None:
    """How many stop-token strings the content holds after its last nonce (None: it holds some and
    has no nonce to place them by)."""
    if isinstance(content, (list, tuple)):
        content = _content_text({"content": content})
    if not isinstance(content, str):
        return 0
    ends = [content.rfind(w) + len(w) for w in words if w in content]
    tail = content[max(ends):] if ends else content
    n = len(_stop_hits(tail, stop_tokens, 0, len(tail)))
    if n and not ends:
        return None
    return n


def _text_start(text: str, message: dict | None, p: int, word: str) -> int:
    """Where the message's own text that holds the nonce at ``p`` begins in the render."""
    start = p
    for _, value in _texts(message, ("content", "reasoning_content")):
        if word in value:
            v = value.strip()
            lo = max(0, p - len(v))
            for q in _occurrences(text[lo:p + len(v)], v):
                if lo + q <= p < lo + q + len(v):
                    start = min(start, lo + q)
    return start


def _prompt_tail_in(header: str, value: str) -> int:
    """Length of the longest non-blank end of ``header`` that ``value`` starts with (0: none): text
    a render may hold as the end of the prompt or as the start of the message's own text."""
    for j in range(len(header)):
        tail = header[j:]
        if tail.strip() and value.startswith(tail):
            return len(tail)
    return 0


def _common_prefix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


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


ABSENT = -1  # turn_ends value of a message the template renders nothing for


def violations(
    tok: Any,
    case: Case,
    input_ids: Sequence[int],
    labels: Sequence[int],
    stop_tokens: Sequence[str],
    *,
    check_prompt: bool = True,
    undecided: list[str] | None = None,
) -> list[str]:
    problems: list[str] = []
    notes: list[str] = undecided if undecided is not None else []
    ref_ids = hf_ids(tok, case)
    if list(map(int, input_ids)) != ref_ids:
        problems.append(f"input_ids differ from apply_chat_template ({len(input_ids)} vs {len(ref_ids)} tokens)")
        return problems
    if len(labels) != len(ref_ids):
        problems.append(f"{len(labels)} labels for {len(ref_ids)} tokens")
        return problems
    renders = _Renders(tok, case)
    text = hf_text(tok, case.messages, case)
    view = TokenView(tok, text)
    if len(view.ids) != len(ref_ids):  # the reference maps characters to tokens with its own encoding
        notes.append("the render re-encoded has another token count than apply_chat_template: not checked")
        return problems
    trained = np.asarray(labels) != IGNORE
    owner = case.nonces.message_of

    def message(w: str) -> dict | None:
        i = owner[w]
        return case.messages[i] if i is not None else None

    # 1. nonces. A token that holds characters of a nonce that is trained and of one that is not
    # (a template that prints two messages back to back with nothing between: ``...usrnonceaad`` +
    # ``astnonceaae...`` tokenized ``da``) cannot satisfy both checks: it is noted, not judged.
    shared_tokens = {int(t) for word, kind in case.nonces.kinds.items() if kind in TRAINED_KINDS
                     for a in _occurrences(text, word) for t in view.overlapping(a, a + len(word))}
    for word, kind in case.nonces.kinds.items():
        spots = _occurrences(text, word)
        m = message(word)
        content = _content_text(m)
        parsed_by_template = "think>" in content or "<|" in content
        if kind == "AST" and not spots and m is not None and not m.get("tool_calls") and not parsed_by_template \
                and not case.hostile:
            # (templates may cut content at '</think>' or similar markup: then the text is theirs to drop)
            notes.append(f"assistant nonce {word} of message {owner[word]} is not in the render: not checked")
        for a in spots:
            toks = view.overlapping(a, a + len(word))
            if kind in TRAINED_KINDS and not trained[toks].all():
                problems.append(f"{kind} nonce {word} not trained")
            if kind in UNTRAINED_KINDS and trained[toks].any():
                if all(int(t) in shared_tokens for t in toks[trained[toks]]):
                    notes.append(f"{kind} nonce {word} shares its trained token(s) with a trained nonce (no text "
                                 "between the two messages): not checked")
                else:
                    problems.append(f"{kind} nonce {word} is trained")

    # 1b. an answer's own text, where the render holds it verbatim around its nonce, is trained whole
    #     (not only its nonce: the words and punctuation before its stop token too); not for hostile
    #     content, which the template may cut so that its own markup spells the same text
    for i, m in enumerate(case.messages):
        if m["role"] != "assistant" or case.hostile:
            continue
        spots_i = [p for w, k in case.nonces.kinds.items() if owner[w] == i and k in TRAINED_KINDS
                   for p in _occurrences(text, w)]
        header = renders.header(i)
        for fld, value in _texts(m):
            v = value.strip()
            if not v or not any(w in v for w in case.nonces.kinds if owner[w] == i):
                continue
            # a text that starts with the end of the turn's generation prompt ('</think>' after
            # DeepSeek V3.1's '<｜Assistant｜></think>') may be the template's there: checked after it
            cut = _prompt_tail_in(header, v)
            for p in _occurrences(text, v):
                if any(p <= q < p + len(v) for q in spots_i):
                    toks = view.overlapping(p + cut, p + len(v))
                    if not trained[toks].all():
                        problems.append(f"{fld} text of assistant message {i} not trained whole")
                        break

    # 2. the stop token after each assistant answer: the first one after the answer's text and
    #    before the next message's text (templates whose turns have no stop token are skipped)
    # (where each other message's text begins: its content may hold markup before its nonce; a
    # document's or keyword argument's nonce belongs to no message)
    all_spots = sorted((_text_start(text, message(w), p, w), owner[w])
                       for w in case.nonces.kinds for p in _occurrences(text, w))
    turn_ends: dict[int, int | None] = {}

    def prompt_end(i: int, floor: int) -> tuple[int, bool] | None:
        """Where the prompt of assistant message ``i`` ends in the render, and whether that is exact
        (its ``add_generation_prompt`` render is a prefix of the render). Otherwise only what the
        render shares with ``messages[:i]`` rendered alone is surely prompt (it holds nothing of
        message i: a template may append text after the last message, as Command-R's tool
        instructions, or write a generation header the rendered turn lacks, as DeepSeek-R1's
        '<think>\\n'), and so is the generation header when the render's own copy of it straddles
        that point (Command-R: '<|START_OF_TURN_TOKEN|>' shared, '<|CHATBOT_TOKEN|>' not)."""
        prompt, bare = renders(i, True), renders(i)
        if prompt is not None and text.startswith(prompt):
            # the message's own text may spell the end of its prompt (content '<think>\n' after
            # MiniMax's ']~b]ai\n<think>\n'): then the prompt surely ends only before that part
            cut = _prompt_tail_in(renders.header(i), _content_text(case.messages[i]).lstrip())
            return (len(prompt) - cut, False) if cut else (len(prompt), True)
        if bare is None:
            return None
        end = _common_prefix(bare, text)
        header = renders.header(i)
        if header:
            for h in range(max(floor, end - len(header) + 1), end + 1):
                if text.startswith(header, h):
                    end = h + len(header)
                    break
        return end, False

    def check_stop(i: int, q: int, s: str, limit: int) -> None:
        # A stop token followed by the template's own assistant header, still before any other
        # message's text, is a channel switch inside this answer (harmony's '<|end|><|start|>assistant
        # <|channel|>final'): the model generates that header itself, and the answer ends later.
        # Never after an EOS that follows the message's own text: nothing is generated after it (a
        # template that prints a tool call's empty content again after its EOS, llama.cpp's
        # R1-distill variant, did not have it generated).
        header = renders.header(i)
        own = [p for w, k in case.nonces.kinds.items() if owner[w] == i for p in _occurrences(text, w)]
        after_own = bool(own) and min(own) < q
        while header and not (after_own and s == tok.eos_token) and text.startswith(header, q + len(s)):
            nxt = _stop_hits(text, stop_tokens, q + len(s) + len(header), limit)
            if not nxt:
                break
            q, s = nxt[0]
        toks = view.overlapping(q, q + len(s))
        if not trained[toks].all():
            problems.append(f"stop token {s!r} after assistant message {i} not trained")
        turn_ends[i] = q + len(s)

    for i, m in enumerate(case.messages):
        if m["role"] != "assistant":
            continue
        words = [w for w, k in case.nonces.kinds.items() if owner[w] == i and k in TRAINED_KINDS]
        ends = [p + len(w) for w in words for p in _occurrences(text, w)]
        if not ends:
            # where it cannot begin: before the end of the previous answer or of any earlier nonce
            known = [e for j, e in turn_ends.items() if e is not None and e != ABSENT]
            earlier = [p + len(w) for w in case.nonces.kinds if owner[w] is not None and owner[w] < i
                       for p in _occurrences(text, w)]
            _empty_turn(i, m, text, view, renders, prompt_end, max(known + earlier, default=0), all_spots,
                        stop_tokens, turn_ends, notes, check_stop)
            continue
        after = max(ends)
        limit = min((p for p, o in all_spots if p >= after and o != i), default=len(text))
        first = min(p for w in words for p in _occurrences(text, w))
        certain = True  # is the end of the answer's text known?
        placed: list[bool] = []  # for each content text: was it placed?
        for fld, value in _texts(m):  # the answer's own text runs past its nonce
            if not value.strip():
                continue
            v = value.strip()
            spots = [p for p in _occurrences(text, v) if first <= p + len(v) and p + len(v) <= limit]
            # the text around its nonce (only a value that holds one: a nonce-less content "0"
            # must not be placed on the "0" that ends the reasoning before it)
            holding = [p for p in spots if p < after <= p + len(v)] if any(w in v for w in words) else []
            later = [p for p in spots if p >= after]  # else its first rendering after the known text
            if holding or later:
                # (only the first later one: the same characters may recur in the stop token)
                after = max(holding) + len(v) if holding else later[0] + len(v)
            elif not spots and fld == "content":
                certain = False  # the template rewrote the content (say, cut at '</think>')
            if fld == "content":
                placed.append(bool(holding or later))
        turn_ends[i] = after if certain else None
        hits = _stop_hits(text, stop_tokens, after, limit)
        # when the content was not found (the template rewrote it), stop-token strings it holds after
        # its last nonce come before the real stop token: skip them
        own = 0 if placed and all(placed) else _stops_in_content(m.get("content"), words, stop_tokens)
        if own is None:
            turn_ends[i] = None  # the content holds stop strings and its place is unknown
            notes.append(f"assistant message {i}: its content holds stop strings and is not found in the render:"
                         " its stop token is not checked")
            continue
        hits = hits[own:]
        if not hits:
            if turn_ends[i] is not None:  # no stop token: the answer may still close what it opened
                turn_ends[i] = min(limit, turn_ends[i] + len(CLOSING.match(text, turn_ends[i]).group()))
            continue
        q, s = hits[0]
        check_stop(i, q, s, limit)

    if check_prompt:
        prev_end: int | None = 0
        prev: int | None = None
        last_assistant = None
        for i, m in enumerate(case.messages):
            if m["role"] != "assistant":
                continue
            if turn_ends.get(i) == ABSENT:  # the template renders nothing for it
                continue
            last_assistant = i
            if i > 0 and prev_end is None:
                notes.append(f"prompt of assistant message {i} not checked: where message {prev} ends is unknown")
            elif i > 0:
                found = prompt_end(i, prev_end)
                end = found[0] if found else 0
                own = [p for w, k in case.nonces.kinds.items() if owner[w] == i and k in TRAINED_KINDS
                       for p in _occurrences(text, w)]
                if own and not (found and found[1]):
                    end = min(end, min(own))  # (an inexact end never reaches into the answer's own text)
                if found and not found[1] and end > prev_end:
                    notes.append(f"partly: prompt of assistant message {i} checked only up to where the render "
                                 "leaves the render of the messages before it: its generation prompt is not a "
                                 "prefix of the render")
                if end <= prev_end:
                    notes.append(f"prompt of assistant message {i} not checked: "
                                 + ("it does not render" if found is None else "it is not a prefix of the render"))
                else:
                    toks = view.inside(prev_end, end)
                    if trained[toks].any():
                        bad = [view.ids[t] for t in toks[trained[toks]]]
                        problems.append(
                            f"tokens {tok.convert_ids_to_tokens(bad)!r} trained inside the prompt of message {i}"
                        )
            prev_end, prev = turn_ends.get(i), i
        if last_assistant is not None:
            end = turn_ends.get(last_assistant)
            if end is None:
                notes.append(f"after the final answer (message {last_assistant}) not checked: "
                             "where it ends is unknown")
            else:
                toks = view.inside(end, len(text))
                if trained[toks].any():
                    bad = [view.ids[t] for t in toks[trained[toks]]]
                    problems.append(f"tokens {tok.convert_ids_to_tokens(bad)!r} trained after the final stop token")
    return problems


def _empty_turn(i, m, text, view, renders, prompt_end, floor, all_spots, stop_tokens, turn_ends, notes,
                check_stop) -> None:
    """An assistant turn that renders none of its nonces (empty or whitespace-only content, a tool
    call the template does not print): its stop token is the first one after the end of its prompt
    (``apply_chat_template(messages[:i], add_generation_prompt=True)`` when that is a prefix of the
    render, else the text the render shares with it, see ``prompt_end``)."""
    before, upto = renders(i), renders(i + 1)
    if before is not None and upto is not None and before == upto:
        # adding the message as the last one changes nothing; but a template may drop only an empty
        # LAST assistant message (Nemotron Nano v2, YandexGPT): the message renders nothing only if
        # the whole conversation without it renders the same text
        without = renders.of([*renders.case.messages[:i], *renders.case.messages[i + 1:]])
        if without is None or without == text:
            turn_ends[i] = ABSENT  # the template renders nothing for this message
            return
    turn_ends[i] = None
    if not stop_tokens:
        return  # the template closes no turn with a stop token (GLM): nothing to place
    found = prompt_end(i, floor)
    if found is None or found[0] < floor:
        notes.append(f"assistant message {i} renders no nonce and the render does not hold its prompt:"
                     " its stop token is not checked")
        return
    lo, exact = found
    if not exact and lo > 0:
        # the shared text may end inside a token (DeepSeek-R1's '<' of '<think>' and of
        # '<｜end▁of▁sentence｜>'): search from the start of that token
        toks = view.overlapping(lo - 1, lo)
        if len(toks) and view.offsets[toks[-1], 1] > lo:
            lo = max(floor, int(view.offsets[toks[-1], 0]))
    limit = min((p for p, o in all_spots if p >= lo and o != i), default=len(text))
    if _stops_in_content(m.get("content"), [], stop_tokens) != 0:
        # its content holds stop strings: they come first if the template printed it (no nonce to tell)
        notes.append(f"assistant message {i} renders no nonce and its content holds stop strings:"
                     " its stop token is not checked")
        return
    hits = _stop_hits(text, stop_tokens, lo, limit)
    if hits and i + 1 < len(renders.case.messages):
        # the next message may hold no nonce (an empty user turn) to bound the search: render it with
        # a probe word as its content; a first stop token after the probe is the next message's
        # (Seed-OSS writes an empty answer as its bare header, with no stop token)
        probe = "probewordzz"
        nxt = dict(renders.case.messages[i + 1], content=probe)
        probed = renders.of([*renders.case.messages[:i + 1], nxt])
        if probed is not None and probed[:lo] == text[:lo] and probe in probed[lo:]:
            first = _stop_hits(probed, stop_tokens, lo, len(probed))
            if not first or first[0][0] > probed.index(probe, lo):
                hits = []
    if not hits:
        if upto is not None and text.startswith(upto) and len(upto) >= lo:
            # no stop token: the turn ends where the template's rendering of it ends (with an empty
            # generation prompt that may be header-like text the model writes itself, as ChatQA's
            # 'Assistant: ' after a tool result)
            turn_ends[i] = len(upto)
        elif not _content_text(m).strip() and not m.get("tool_calls"):
            # a blank reply and no stop token: the turn is the whitespace after its prompt (its own
            # whitespace and what closes it, as for any answer with no stop token)
            turn_ends[i] = found[0] + len(re.match(r"\s*", text[found[0]:limit]).group())
        else:
            notes.append(f"assistant message {i} renders no nonce and no stop token follows its prompt:"
                         " its end is unknown")
        return
    q, s = hits[0]
    check_stop(i, q, s, limit)
