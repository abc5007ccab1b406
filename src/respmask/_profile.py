"""What a chat template does around an assistant turn, learned once from probe conversations.

Nothing here is a per-model table: the template itself is rendered on small conversations made
of nonce words, and the profile records

* the generation prompt (header) the template writes before an assistant turn, for each role
  of the message before it: what ``add_generation_prompt=True`` adds to the history;
* how a turn's text before its own reads in history where that differs from the generation
  prompt, and how much of it the prompt holds (history headers);
* the tokens that close an assistant turn (the first control token after a plain answer, unless
  EOS always follows it or it opens the next turn's header), and the tokens that close a tool
  call where no end-of-turn token does;
* the markup that closes a reasoning block, so reasoning can be left out of the loss.

``history_probes`` are the conversations on which the masker checks whether a template renders
earlier turns as their own prefixes do; ``token_regex`` compiles the learned tokens into searches.

Every learned fact is a hypothesis that the span finder confirms against each conversation's
own render.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from os.path import commonprefix
from types import MappingProxyType
from typing import Any

from ._errors import TemplateError
from ._render import DATA, NO_OWNER
from ._segments import Segments

# Probe words: plain lowercase letters, unlikely to occur in any template.
_SYS = "zqsysprobe"
_USR = "zqusrprobe"
_AST = "zqastprobe"
_RSN = "zqrsnprobe"
_TOOL = "zqtoolprobe"
_ARG = "zqargprobe"
_TOOL_NAME = "zq_probe_tool"
_CALL_ID = "call12345"  # nine characters: Mistral's templates insist

def probe_tools() -> list[dict]:
    """The one tool the probes declare (a new list each time: templates get their own copy)."""
    return [
        {
            "type": "function",
            "function": {
                "name": _TOOL_NAME,
                "description": "probe",
                "parameters": {
                    "type": "object",
                    "properties": {"q": {"type": "string", "description": "query"}},
                    "required": ["q"],
                },
            },
        }
    ]


def _user(i: int) -> dict:
    return {"role": "user", "content": f"{_USR}{i}"}


def _assistant(i: int) -> dict:
    return {"role": "assistant", "content": f"{_AST}{i}"}


def _call_id(i: int) -> str:
    """The first call's id is ``_CALL_ID``; a later call has its own (templates that look a tool
    result's call up by id must find the call it answers), nine characters too."""
    return _CALL_ID if i == 1 else f"{_CALL_ID[:-1]}{i % 10}"


def _tool_call(i: int) -> dict:
    return {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"type": "function", "id": _call_id(i), "function": {"name": _TOOL_NAME, "arguments": {"q": f"{_ARG}{i}"}}}
        ],
    }


def _tool_result(i: int) -> dict:
    return {"role": "tool", "tool_call_id": _call_id(i), "name": _TOOL_NAME, "content": f"{_TOOL}{i}"}


_OTHER = "zqothprobe"  # the text of a message of another role (sample-shaped probes)
_NONCES = (_SYS, _USR, _AST, _RSN, _TOOL, _ARG, _OTHER)
_ROLE_WORDS = MappingProxyType({"system": _SYS, "user": _USR, "assistant": _AST, "tool": _TOOL})


@dataclass(frozen=True)
class Probe:
    messages: list[dict]
    tools: list[dict] | None = None


def _text_parts(text: str) -> list[dict]:
    return [{"type": "text", "text": text}]


@dataclass(frozen=True)
class ProbeShape:
    """How a conversation writes its messages' content, so that probes can be written the same way.

    Some templates accept only some shapes: LLaVA-NeXT's reads ``message['content'][0]['text']``
    of system and assistant messages, so string content raises there. Probes take, per role, the
    conversation's own shape: content parts (``[{"type": "text", "text": ...}]``) for the roles
    whose content is a list, and for roles the conversation lacks when every role it has uses
    parts; strings elsewhere.

    Attributes:
        parts: roles whose content is a list of parts. strings: roles whose content is a string.
    """

    parts: frozenset[str]
    strings: frozenset[str]

    @property
    def key(self) -> str:
        """What tells this shape's profile from the all-strings one's (never empty)."""
        return "parts:" + ",".join(sorted(self.parts)) + ";strings:" + ",".join(sorted(self.strings))

    def uses_parts(self, role: str) -> bool:
        return role in self.parts or (not self.strings and role not in self.parts)

    def apply(self, probe: Probe) -> Probe:
        """``probe`` with the content of each message written in this shape."""
        return Probe([
            {**m, "content": _text_parts(m["content"])} if isinstance(m.get("content"), str) and self.uses_parts(m["role"])
            else m
            for m in probe.messages
        ], probe.tools)


def probe_shape(messages: Sequence[Mapping[str, Any]]) -> ProbeShape | None:
    """The :class:`ProbeShape` of ``messages``; None when every content is a string (or absent):
    the fixed probes' own shape."""
    parts: set[str] | None = None
    strings = set()
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            strings.add(m["role"])
        elif isinstance(content, (list, tuple)):
            parts = parts or set()
            parts.add(m["role"])
    if parts is None:
        return None
    return ProbeShape(frozenset(parts), frozenset(strings - parts))


def _nonce_content(content: Any, word: str) -> Any:
    """``content`` with its text replaced by ``word`` (its other parts, an image say, kept)."""
    if isinstance(content, str):
        return word if content else ""
    if isinstance(content, (list, tuple)):
        out, done = [], False
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                out.append({**part, "text": "" if done else word})
                done = True
            else:
                out.append(part)
        return out
    return content


def sample_probes(messages: Sequence[Mapping[str, Any]], tools: Any, reasoning_keys: Sequence[str]) -> list[Probe]:
    """Probes in the shape of one conversation: its own messages with their text replaced by probe
    words, through its second assistant turn and the message after it (the whole conversation
    when that is shorter), and the same cut after its first assistant turn.

    For templates that accept only shapes the fixed probes lack (a ``functions`` message after the
    system, conversations that end with the user's message): whatever the template renders of
    the conversation, it renders of these."""
    replaced = []
    for k, m in enumerate(messages):
        word = f"{_ROLE_WORDS.get(m.get('role'), _OTHER)}{k}"
        new = {**m, "content": _nonce_content(m.get("content"), word)} if "content" in m else dict(m)
        for key in reasoning_keys:
            if isinstance(m.get(key), str) and m[key]:
                new[key] = f"{_RSN}{k}"
        replaced.append(new)
    assistants = [k for k, m in enumerate(replaced) if m.get("role") == "assistant"]
    cuts = [min(len(replaced), k + 2) for k in assistants[:2]]
    if not cuts:
        cuts = [len(replaced)]
    return [Probe(replaced[:cut], tools) for cut in dict.fromkeys(reversed(cuts))]


def probes() -> list[Probe]:
    """Conversations that show a template's assistant turns after every kind of message."""
    sys = {"role": "system", "content": _SYS}
    return [
        Probe([_user(1), _assistant(1)]),
        Probe([sys, _user(1), _assistant(1)]),
        Probe([_user(1), _assistant(1), _user(2), _assistant(2)]),
        Probe([sys, _user(1), _assistant(1), _user(2), _assistant(2)]),
        Probe([_user(1), _tool_call(1), _tool_result(1), _assistant(2)], probe_tools()),
        Probe([sys, _user(1), _tool_call(1), _tool_result(1), _assistant(2), _user(2), _assistant(3)], probe_tools()),
        # a tool call right after a tool result (agent loops): its turn may open differently
        Probe([_user(1), _tool_call(1), _tool_result(1), _tool_call(2), _tool_result(2), _assistant(2)], probe_tools()),
        Probe([_user(1), {"role": "assistant", "content": f"{_AST}1", "reasoning_content": f"{_RSN}1"}]),
        Probe(
            [
                _user(1),
                {"role": "assistant", "content": f"{_AST}1", "reasoning_content": f"{_RSN}1"},
                _user(2),
                {"role": "assistant", "content": f"{_AST}2", "reasoning_content": f"{_RSN}2"},
            ]
        ),
        Probe([_assistant(1), _user(1), _assistant(2)]),
        Probe([_user(1), _assistant(1), _assistant(2)]),
        Probe([sys, _assistant(1)]),
    ]


def history_probes() -> list[Probe]:
    """Conversations that show whether a template renders earlier turns as their own prefixes do:
    several turns with and without reasoning, and a tool-call chain with reasoning."""
    def thinking(i: int, **more: Any) -> dict:
        return {"role": "assistant", "content": f"{_AST}{i}", "reasoning_content": f"{_RSN}{i}", **more}

    call = _tool_call(1)
    return [
        Probe([_user(1), _assistant(1), _user(2), _assistant(2), _user(3), _assistant(3)]),
        Probe([_user(1), thinking(1), _user(2), thinking(2)]),
        Probe([_user(1), {**call, "reasoning_content": f"{_RSN}0"}, _tool_result(1), thinking(1), _user(2), thinking(2)],
              probe_tools()),
        Probe([_user(1), call, _tool_result(1), _assistant(1), _user(2), _assistant(2)], probe_tools()),
        Probe([{"role": "system", "content": _SYS}, _user(1), _assistant(1), _user(2), _assistant(2)], probe_tools()),
        Probe([_user(1), _assistant(1), {"role": "system", "content": f"{_SYS}2"}, _user(2), _assistant(2)]),
    ]


@dataclass(frozen=True)
class TemplateProfile:
    """Learned facts about one template under one set of template keyword arguments."""

    headers: dict[str | None, tuple[str, ...]] = field(default_factory=dict)
    header_cuts: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # (window, cut): a history turn's text before its own text where it differs from the
    # generation prompt, and where the prompt's part of it ends
    history_headers: dict[str | None, tuple[tuple[str, int], ...]] = field(default_factory=dict)
    end_of_turn: tuple[str, ...] = ()
    call_end: tuple[str, ...] = ()
    reasoning_close: tuple[str, ...] = ()
    # markup the model writes to open a kind of reply (a tool call's), learned where a history
    # window extends a text reply's after the same role: it may follow any role's history window
    reply_openings: tuple[str, ...] = ()
    all_headers: tuple[str, ...] = field(init=False)  # every role's headers, longest first
    all_history_headers: tuple[tuple[str, int], ...] = field(init=False)

    def __post_init__(self) -> None:
        seen = {h for hs in self.headers.values() for h in hs}
        object.__setattr__(self, "all_headers", tuple(sorted(seen, key=lambda h: (-len(h), h))))
        hist = {h for hs in self.history_headers.values() for h in hs}
        object.__setattr__(self, "all_history_headers", tuple(sorted(hist, key=lambda h: (-len(h[0]), h))))


RenderFn = Callable[[list[dict], "list[dict] | None", bool], Segments]


def token_regex(tokens: Sequence[str]) -> re.Pattern[str] | None:
    """A regex matching any of ``tokens``, longest first (``None`` when there are none)."""
    tokens = sorted({t for t in tokens if t}, key=len, reverse=True)
    if not tokens:
        return None
    return re.compile("|".join(map(re.escape, tokens)))


def _lcp_cut(a: str, b: str, cuts: Sequence[int]) -> int:
    """Length of the common prefix of ``a`` and ``b``, cut back to a token start of ``a``."""
    common = len(commonprefix([a, b]))
    if common == len(a):
        return common
    return max((c for c in cuts if c <= common), default=0)


def _controls(control: re.Pattern[str] | None, text: str, ranges: Sequence[tuple[int, int]]) -> list[str]:
    return [t for t, _ in _control_ends(control, text, ranges)]


def _control_ends(
    control: re.Pattern[str] | None, text: str, ranges: Sequence[tuple[int, int]]
) -> list[tuple[str, int]]:
    """The control tokens in ``ranges`` of ``text``, with where each ends."""
    if control is None:
        return []
    return [(m.group(0), m.end()) for a, b in ranges for m in control.finditer(text, a, b)]


def _closes_block(token: str, turn_text: str) -> bool:
    """``</tool_call>`` after ``<tool_call>`` in the same turn closes markup; it is not a stop token."""
    if not token.startswith("</"):
        return False
    return ("<" + token[2:]) in turn_text


def value_text(value: Any) -> str:
    """The text a message value holds: a string, or its content parts' text joined (other parts,
    an image say, hold none)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "".join(value_text(p.get("text") if isinstance(p, Mapping) else p) for p in value)
    return ""


def learn_profile(
    render: RenderFn,
    control_tokens: Sequence[str],
    token_starts: Callable[[str], list[int]],
    eos: str | None = None,
    conversations: Sequence[Probe] | None = None,
) -> TemplateProfile:
    """Render the probes (``conversations``, default :func:`probes`) and learn headers, stop
    tokens and reasoning markup.

    ``render(messages, tools, add_generation_prompt)`` renders with the template and the
    template keyword arguments this profile is for; ``token_starts(text)`` gives the character
    positions where tokens begin in ``text`` tokenized alone.

    The end-of-turn token of a template is the first control token after a plain answer, unless
    that token closes no other role's turn and a later one in the same text does: then the later
    one, the closer the template ends turns with, ends generation and the markup before it is the
    reply's (``<|end_of_solution|><|end|>`` where ``<|end|>`` closes user turns too). And unless
    ``eos`` follows it in the text every assistant turn writes after it: then that token closes
    the reply and EOS, which comes later, is what ends generation
    (``<|END_RESPONSE|><|END_OF_TURN_TOKEN|>``, ``<|close|>response<|sep|>...<|end_of_msg|>``).
    Nor is a token that begins a learned header every time it follows an answer: it opens the
    next turn (a prompt the template writes after every conversation).
    """
    control = token_regex([t for t in control_tokens if t.strip()])
    headers: dict[str | None, set[str]] = {}
    history: dict[str | None, set[tuple[str, int]]] = {}
    # per role: window -> how much of a window that is all prompt the prompt's own header shares
    shared: dict[str | None, dict[str, int]] = {}
    end_of_turn: list[str] = []
    closer_then_eos: dict[str, list[bool]] = {}  # per first closer: is it followed by EOS, each turn
    opens: dict[str, list[str]] = {}  # per first closer: the text from it on, each turn
    call_tails: list[list[str]] = []
    # per plain answer: the control tokens after it (with where each ends, when in the template's
    # text after it), the ranges of that text, and the render
    answers: list[tuple[list[str], list[tuple[str, int]], Sequence[tuple[int, int]], str]] = []
    closers: set[str] = set()  # the first control token after another role's text, per probe
    closes: list[str] = []
    rendered = 0
    errors: list[str] = []

    for probe in (probes() if conversations is None else conversations):
        try:
            full = render(probe.messages, probe.tools, False)
        except Exception as exc:
            if probe.tools is not None:  # the template rejects this shape; other probes cover it
                errors.append(str(exc))
                continue
            try:  # some templates need tools to render at all
                probe = Probe(probe.messages, probe_tools())
                full = render(probe.messages, probe.tools, False)
            except Exception as exc2:
                errors.append(str(exc2))
                continue
        rendered += 1
        by_owner = full.by_owner(len(probe.messages))
        for i, message in enumerate(probe.messages):
            if message["role"] != "assistant":
                # the first control token after another role's text: what the template closes turns with
                last = full.last_data(by_owner[i])
                if last is not None:
                    closed = _controls(control, full.text, full.tail_ranges(i, full.ends[last])[0])
                    if closed:
                        closers.add(closed[0])
                continue
            idxs = by_owner[i]
            start = full.region_start(idxs)
            if start is None:
                continue
            if i:  # an empty history says nothing reliable about the header (the prompt may be empty)
                prev_role = probe.messages[i - 1]["role"]
                _learn_header(render, probe, i, full, start, prev_role, headers, token_starts, history, shared)
            last = full.last_data(idxs)
            after = full.ends[last] if last is not None else start
            ranges, _ = full.tail_ranges(i, after)
            turn_text = full.text[start:after]
            tail_ends = [
                (t, e) for t, e in _control_ends(control, full.text, ranges) if not _closes_block(t, turn_text)
            ]
            tail_tokens = [t for t, _ in tail_ends]
            if message.get("tool_calls"):
                call_tails.append(tail_tokens)
            elif _AST in value_text(message.get("content")):
                if not tail_tokens and last is not None:
                    # the template prints the whole turn as one value: look after the answer inside it
                    nonce = full.text.find(_AST, full.starts[last], full.ends[last])
                    if nonce >= 0:
                        inside = _controls(control, full.text, [(nonce, full.ends[last])])
                        tail_tokens = [t for t in inside if not _closes_block(t, turn_text)]
                if tail_tokens:
                    answers.append((tail_tokens, tail_ends, ranges, full.text))
            if message.get("reasoning_content"):
                close = _reasoning_close(full, idxs)
                if close:
                    closes.append(close)

    if rendered == 0:
        raise TemplateError(
            "the chat template raised on every probe conversation; first error: " + (errors[0] if errors else "?")
        )
    for tail_tokens, tail_ends, ranges, text in answers:
        # markup only replies write before the closer the template ends every role's turns with
        # (``<|end_of_solution|><|end|>`` where ``<|end|>`` closes user turns too) is the reply's:
        # that closer ends generation
        pick = 0
        if tail_tokens[0] not in closers:
            pick = next((n for n, t in enumerate(tail_tokens) if n and t in closers), 0)
        end_of_turn.append(tail_tokens[pick])
        if tail_ends:  # the tokens lie in the template's text after the answer
            token, token_end = tail_ends[pick]
            # the text from the token on (a header opening there makes it an opener), and whether
            # EOS follows it
            opens.setdefault(token, []).append(text[token_end - len(token):])
            # EOS later in the template text the turn writes after the token (before any other
            # message's output): the model writes all of it
            tail_end = next((b for a, b in ranges if a < token_end <= b), token_end)
            followed = bool(eos) and text.find(eos, token_end, tail_end) >= 0  # type: ignore[arg-type]
            closer_then_eos.setdefault(token, []).append(followed)
    # a token that begins a learned header every time it follows an answer opens the next turn
    # (a generation prompt written after the loop whatever add_generation_prompt says): not a stop
    learned = [h for hs in headers.values() for h in hs if h]
    opener = {
        t for t, texts in opens.items() if t != eos and all(any(x.startswith(h) for h in learned) for x in texts)
    }
    eot = tuple(
        t
        for t in dict.fromkeys(end_of_turn)
        if t not in opener and (t == eos or not (closer_then_eos.get(t) and all(closer_then_eos[t])))
    )
    call_end = tuple(
        dict.fromkeys(tail[-1] for tail in call_tails if tail and not any(t in eot for t in tail))
    )
    # a candidate that holds probe words came from history the template prints late (say, a
    # system prompt at the end): it can never match a real conversation.
    nonces = _NONCES
    ordered = {
        role: tuple(sorted((h for h in hs if not any(w in h for w in nonces)), key=len, reverse=True))
        for role, hs in headers.items()
    }
    cuts = {h: tuple(sorted({c for c in token_starts(h) if 0 < c <= len(h)} | {len(h)})) for hs in ordered.values() for h in hs}
    history_headers = {}
    openings: set[str] = set()
    for role, hs in history.items():
        windows, opened = _reply_openings({h for h in hs if not any(w in h[0] for w in nonces)}, shared.get(role, {}))
        history_headers[role] = tuple(sorted(windows, key=lambda h: -len(h[0])))
        openings |= opened
    return TemplateProfile(
        headers=ordered,
        history_headers=history_headers,
        header_cuts=cuts,
        end_of_turn=eot,
        call_end=call_end,
        reasoning_close=tuple(dict.fromkeys(closes)),
        reply_openings=tuple(sorted(openings, key=lambda o: (-len(o), o))),
    )


def _learn_header(
    render: RenderFn,
    probe: Probe,
    i: int,
    full: Segments,
    start: int,
    prev_role: str | None,
    headers: dict[str | None, set[str]],
    token_starts: Callable[[str], list[int]],
    windows: dict[str | None, set[tuple[str, int]]],
    shared: dict[str | None, dict[str, int]],
) -> None:
    """Candidates for the text the prompt holds before assistant turn ``i``, and how the turn's
    window renders in history where that differs from the prompt."""
    history = probe.messages[:i]
    try:
        with_prompt = render(history, probe.tools, True)
        without = render(history, probe.tools, False)
    except Exception:
        return
    found = headers.setdefault(prev_role, set())
    prompt = with_prompt.text
    # 1. what add_generation_prompt=True adds, cut back to a token boundary (may be empty:
    #    templates such as Llama 2's end the user turn with the assistant's cue)
    cut = _lcp_cut(prompt, without.text, token_starts(prompt))
    candidates = [prompt[cut:]]
    # 2. what the prompt holds after the history's last message (a token that closes a block of
    #    tool results before the model speaks, say)
    owned_end = max((e for e, o in zip(with_prompt.ends, with_prompt.owners) if o != NO_OWNER), default=0)
    if prompt[owned_end:]:
        candidates.append(prompt[owned_end:])
    # 3. what the prompt holds beyond the point where this turn starts in the full render
    if prompt[:start] == full.text[:start] and prompt[start:]:
        candidates.append(prompt[start:])
    found.update(candidates)
    # 4. the turn as history renders it, between the previous message and its own text, where
    #    that is not the prompt's header: how much of it the prompt holds
    first = next((s for s, o, k in zip(full.starts, full.owners, full.kinds) if o == i and k == DATA), None)
    header = max(candidates, key=len)
    if first is None or not header:
        return
    window = full.text[full.window_start(i, first):first]
    if window.startswith(header):
        return
    common = len(commonprefix([window, header]))
    # the window up to where it parts from the prompt, cut back to a token boundary
    cut = max((c for c in [*token_starts(window), len(window)] if 0 < c <= common), default=0)
    if header[common:].strip():
        # the prompt's header says something history's does not ("Source: assistant\nDestination:
        # user" against "Source: assistant"): history's is another header, all of it prompt
        windows.setdefault(prev_role, set()).add((window, len(window)))
        own = shared.setdefault(prev_role, {})
        own[window] = max(own.get(window, 0), cut)
        return
    # the prompt ends where history goes on (``<think>\n`` against ``<think></think>``): the
    # model writes the rest
    if cut:
        windows.setdefault(prev_role, set()).add((window, cut))


def _reply_openings(
    windows: set[tuple[str, int]], shared: Mapping[str, int]
) -> tuple[set[tuple[str, int]], set[str]]:
    """History windows after one role, where one that is all prompt extends a shorter one: the
    generation prompt cannot know what kind of reply follows, so what a tool call's window adds to
    a text reply's (``<tool_call>``-style opening markup) is the model's own, trained. The prompt
    holds what it holds of the shorter window, and never less than the part of the window the
    prompt's own header begins with (``shared``). Returns the windows and those extensions."""
    out = set()
    openings = set()
    for window, cut in windows:
        if cut == len(window):
            shorter = [(w, c) for w, c in windows if len(w) < len(window) and window.startswith(w)]
            if shorter:
                base, base_cut = max(shorter, key=lambda wc: len(wc[0]))
                cut = max(base_cut, shared.get(window, 0))
                openings.add(window[len(base):])
        out.add((window, cut))
    return out, openings


def _reasoning_close(segs: Segments, idxs: Sequence[int]) -> str | None:
    """The literal markup between a turn's reasoning and its answer, e.g. ``</think>``."""
    data = [i for i in idxs if segs.kinds[i] == DATA and segs.ends[i] > segs.starts[i]]
    text = segs.text
    r = next((i for i in data if _RSN in text[segs.starts[i] : segs.ends[i]]), None)
    a = next((i for i in data if _AST in text[segs.starts[i] : segs.ends[i]]), None)
    if r is None or a is None or a <= r:
        return None
    between = text[segs.ends[r] : segs.starts[a]]
    pieces = [text[segs.starts[j] : segs.ends[j]] for j in range(r + 1, a) if segs.kinds[j] != DATA]
    if "".join(pieces) != between:
        return None
    return between.strip() or None
