"""Find the characters a model generates in each trained turn of one rendered conversation.

A trained assistant turn runs from the end of its generation prompt (the header the template
writes before the model speaks) up to and including the first stop token after the turn's own
text; a turn without one ends after the text its own loop iteration writes after its values.
Edges come from the template's own text: stop tokens are looked for in the literal text after
the turn's own (or right where the next message's output begins), learned headers where they
overlap no data, reasoning markup between the reasoning and the next data. A stop string inside
a message's values (a tool call's JSON, say) never ends its turn.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._origin import DOCUMENTS, MIXED, REASONING, REASONING_KEYS, TOOL_LIST, TOOLS
from ._origin import CONTENT as CONTENT_FIELD
from ._profile import TemplateProfile, value_text
from ._render import DATA, NO_OWNER, Rendered
from ._segments import Segments


@dataclass
class Turn:
    """One trained message: where its generated text lies and how its edges were found.

    Attributes:
        message, role: the message's position in the conversation and its role.
        start: its first trained character (after the header the model is prompted with).
        end: one past its last trained character (after its stop token, when there is one).
        stop: the stop token's characters, when one was found.
        reasoning: the reasoning block left out of the loss (``reasoning_in_loss=False``).
    """

    message: int
    role: str
    start: int  # first trained character (after the header)
    end: int  # one past the last trained character (after the stop token, when there is one)
    stop: tuple[int, int] | None  # the stop token's characters, when one was found
    reasoning: tuple[int, int] | None = None  # reasoning block left out of the loss


@dataclass
class StopTokens:
    """Compiled stop-token searches for one template."""

    end_of_turn: re.Pattern[str] | None  # learned + eos + configured: end a turn anywhere in its tail
    call_end: re.Pattern[str] | None  # learned from tool calls, used when no end-of-turn token is there
    next_turn: re.Pattern[str] | None  # may end a turn at the start of the next message (configured)
    reasoning_close: re.Pattern[str] | None
    eos: str | None = None  # the tokenizer's EOS: nothing of a turn is generated after it


def select_messages(
    roles: Sequence[str], flags: Sequence[bool | None], train_on: str
) -> list[bool]:
    """Which messages are trained: assistant turns (all or the last), then per-message flags."""
    selected = [r == "assistant" for r in roles]
    if train_on == "last":
        last = max((i for i, s in enumerate(selected) if s), default=None)
        selected = [i == last for i in range(len(roles))]
    return [s if f is None else bool(f) for s, f in zip(selected, flags)]


class UnplacedTurn(Exception):
    """Trained message ``message`` has no generation prompt in the render: it is not a turn."""

    def __init__(self, message: int):
        super().__init__(message)
        self.message = message


def _header_end(
    segs: Segments,
    owner: int,
    first: int,
    profile: TemplateProfile,
    prev_role: str | None,
    prompt: Callable[[], str | None],
) -> int:
    """End of the generation prompt of assistant turn ``owner``, whose own text begins at ``first``.

    The prompt of a turn is what ``add_generation_prompt=True`` writes after the messages before
    it. It lies in the window between the previous message's output and ``first``; in order:

    1. a header learned after the same previous role, then after any role, written by the
       template (no data inside): its first occurrence in the window;
    2. a window learned from the probes where history turns render differently from the
       prompt, ending right before the turn's text: the prompt's part of it (the prompt ends in
       ``<think>\n`` where history has ``<think></think>``: up to ``<think>``; history has a
       header of its own, ``Source: assistant`` against ``Source: assistant\nDestination:
       user``: all of it); else an empty header learned for the previous role: the window's start;
    3. this turn's own prompt, rendered (``prompt()``), when the render starts with it and it
       ends inside the window (headers that count turns, say); for the first message (no
       previous role) a learned header right before its text, then this, come first: no probe
       learns what follows an empty history (a default system prompt with today's date);
    4. the part of a learned header the window ends with, right before the turn's text (a
       template that drops part of the prompt from history, such as an opening ``<think>``).

    5. an empty header learned after some role, when the turn's own prompt cannot be rendered.

    Raises:
        UnplacedTurn: none of these holds (the template renders the message inside another
            turn, say); the turn is never trained on a guess.
    """
    text = segs.text
    w0 = segs.window_start(owner, first)
    if prev_role is None:
        # the first message: no probe learns a header after nothing, and what precedes it (a
        # default system prompt with a date, say) is no header to search: a header learned after
        # other messages that the template writes right before the text is its prompt, else its
        # own prompt rendered (an empty history with the generation prompt)
        for h in profile.all_headers:  # longest first
            if h.strip() and first - len(h) >= w0 and text.startswith(h, first - len(h)) and not segs.has_data(
                    first - len(h), first):
                return first
        rendered = prompt()
        if rendered is not None and w0 <= len(rendered) <= first and text.startswith(rendered):
            return len(rendered)
    own = profile.headers.get(prev_role, ())
    own_history = profile.history_headers.get(prev_role, ())
    for group in (own, profile.all_headers):
        best = None
        for h in group:  # longest first
            if not h:
                continue
            p = text.find(h, w0, first)
            while p >= 0 and segs.has_data(p, p + len(h)):
                p = text.find(h, p + 1, first)
            if p >= 0 and (best is None or p < best[0]):
                best = (p, p + len(h))
        if best is not None:
            return best[1]
        if group is own and "" in own:
            # an empty prompt after this role, unless a history window or the part of a header the
            # template writes for this role ends right before the turn's text (a template that
            # writes its prompt whatever add_generation_prompt says learns an empty one too)
            end = _history_header(segs, first, w0, own_history)
            if end is None and _ends_with_header_part(segs, first, w0, own, profile.header_cuts, visible=True):
                end = first
            return w0 if end is None else end
    for windows in (own_history, profile.all_history_headers):
        end = _history_header(segs, first, w0, windows)
        if end is not None:
            return end
    for opening in profile.reply_openings:  # a history window, then the opening of a kind of reply
        at = first - len(opening)
        if at >= w0 and text.startswith(opening, at) and not segs.has_data(at, first):
            end = _history_header(segs, at, w0, own_history)
            if end is not None:
                return end
    rendered = prompt()
    if rendered is not None and w0 <= len(rendered) <= first and text.startswith(rendered):
        return len(rendered)
    if _ends_with_header_part(segs, first, w0, profile.all_headers, profile.header_cuts):
        return first
    if "" in profile.all_headers and rendered is None:
        return w0
    raise UnplacedTurn(owner)


def _header_over_empty(
    segs: Segments, owner: int, idxs: Sequence[int], first: int, headers: Sequence[str]
) -> int | None:
    """The end of a header learned after the previous role that the template writes around the
    turn's first value when that value is empty: a template that prints an empty reasoning block
    exactly as its generation prompt writes one (``<think>\n`` + "" + ``\n</think>\n\n`` after a
    no-thinking prompt ``<think>\n\n</think>\n\n``) has the model generate none of it. None
    when no such header covers the empty value before the turn's first non-empty text."""
    filled = next((segs.starts[i] for i in idxs if segs.kinds[i] == DATA and segs.ends[i] > segs.starts[i]), None)
    if filled is None:
        return None
    w0 = segs.window_start(owner, first)
    for h in headers:  # longest first
        p = segs.text.find(h, w0, filled) if h else -1
        if p >= 0 and p < first <= p + len(h) and not segs.has_data(p, p + len(h)):
            return p + len(h)
    return None


def _ends_with_header_part(
    segs: Segments, first: int, w0: int, headers: Sequence[str], cuts: Mapping[str, Sequence[int]],
    visible: bool = False,
) -> bool:
    """Whether the window ``[w0, first)`` ends with a learned part of one of ``headers`` (a cut
    the profile learned, where tokens begin), written by the template (no data inside); with
    ``visible``, only a part that is more than whitespace counts (a lone newline proves nothing)."""
    text = segs.text
    for h in headers:
        for c in cuts.get(h, ()):
            if (c and first - c >= w0 and (not visible or h[:c].strip()) and text.startswith(h[:c], first - c)
                    and not segs.has_data(first - c, first)):
                return True
    return False


def _after_header(segs: Segments, start: int, end: int, profile: TemplateProfile, prev_role: str | None) -> int:
    """Where a turn that printed none of its message's text would begin: after the first learned
    header (or history form of it) in its own output ``[start, end)`` (the end when there is none)."""
    windows = (profile.history_headers.get(prev_role, ()), profile.all_history_headers)
    for group in (profile.headers.get(prev_role, ()), profile.all_headers, *([w for w, _ in ws] for ws in windows)):
        for h in group:  # longest first
            p = segs.text.find(h, start, end) if h else -1
            if p >= 0:
                return p + len(h)
    for h in profile.all_headers:  # a header whose end history leaves out (``>>>`` of an empty reply)
        for c in reversed(profile.header_cuts.get(h, ())):  # longest first
            p = segs.text.find(h[:c], start, end) if c else -1
            if p >= 0:
                return p + c
    return end


def _history_header(segs: Segments, first: int, w0: int, windows: Sequence[tuple[str, int]]) -> int | None:
    """End of the prompt's part of a learned history window that ends right at ``first``."""
    for window, cut in windows:
        if first - len(window) >= w0 and segs.text.startswith(window, first - len(window)):
            return first - len(window) + cut
    return None


def _find_stop(segs: Segments, owner: int, after: int, stops: StopTokens, reads: list[str] | None = None
               ) -> tuple[int, int] | None:
    """The first stop token after position ``after`` in the turn's literal tail (an end-of-turn
    token first, else a tool-call terminator), or at the start of the next message's output
    (a match there may run into that message's value: noted in ``reads``, see :func:`find_turns`)."""
    ranges, next_start = segs.tail_ranges(owner, after)
    text = segs.text
    for pattern in (stops.end_of_turn, stops.call_end):
        if pattern is None:
            continue
        for a, b in ranges:
            m = pattern.search(text, a, b)
            if m:
                return m.start(), m.end()
    if next_start is not None and stops.next_turn is not None:
        if reads is not None:
            reads.append("a stop token looked for at the next message's output")
        m = stops.next_turn.match(text, next_start)
        if m and not segs.has_data(m.start(), m.end()):  # the next message's own text is data, never a stop
            return m.start(), m.end()
    return None


def _before_empty(
    segs: Segments, owner: int, idxs: Sequence[int], last: int, header_end: int, stop: tuple[int, int] | None,
    stops: StopTokens,
) -> tuple[tuple[int, int] | None, int] | None:
    """Where a turn whose last value ``last`` is empty ends when that value was not generated with
    the rest: ``(stop, after)`` from its last non-empty value on, or None when it was.

    * Another message's output lies between them: the template prints the reply's empty content
      after the tool results its call asked for (vLLM's Gemma 4 tool template); what follows a
      tool's result is another generation, with the result in its prompt.
    * EOS follows the last non-empty value first: nothing is generated after EOS (llama.cpp's
      DeepSeek-R1-distill variant prints a tool call's empty content again after its EOS). An
      empty value after another closer (GPT-OSS's final channel after the analysis's
      ``<|end|>``) is still the turn's.
    """
    filled = next((i for i in reversed(idxs) if segs.kinds[i] == DATA and segs.ends[i] > segs.starts[i]), None)
    if filled is None:
        return None
    after = max(header_end, segs.ends[filled])
    first = _find_stop(segs, owner, after, stops)
    gap = range(segs.index_at(segs.ends[filled]), segs.index_at(segs.starts[last]) + 1)
    if any(segs.owners[i] not in (owner, NO_OWNER) and segs.ends[i] > segs.starts[i]
           and segs.ends[filled] <= segs.starts[i] < segs.starts[last] for i in gap):
        return first, after
    if first is not None and first != stop and stops.eos and segs.text[first[0]:first[1]] == stops.eos:
        return first, after
    return None


def _reasoning(
    segs: Segments,
    owner: int,
    start: int,
    stop: int,
    stops: StopTokens,
    runs: Sequence[tuple[int, int, int]],
    headers: Sequence[str],
) -> tuple[int, int] | None:
    """The reasoning at the start of a turn, to leave out of the loss: from the turn's start
    through the message's last run of reasoning text and the markup that closes it (a learned
    closer such as ``</think>`` and the blank after it). A header the model writes itself after
    its reasoning (harmony's ``<|start|>assistant<|channel|>final<|message|>``, or a tool call's
    ``<|start|>assistant to=...``) is not reasoning: it stays trained."""
    ends = [b for a, b, o in runs if o == owner and start <= a and b <= stop]
    text = segs.text
    if not ends:  # no reasoning text: an empty block the template writes (``<think>\n\n</think>``)
        return _empty_reasoning(segs, owner, start, stop, stops)
    r_end = max(ends)
    # the template's text after the reasoning, up to the next data or the stop token
    i = segs.index_at(r_end)
    limit = stop
    while i < len(segs.starts) and segs.starts[i] < stop:
        if segs.kinds[i] == DATA and segs.starts[i] >= r_end:
            limit = segs.starts[i]
            break
        i += 1
    end = r_end
    # the header nearest the reasoning (of two ending together, ``<|end|><|start|>assistant`` and
    # ``<|start|>assistant``, the shorter: what closes the reasoning is still reasoning)
    found = [(p + len(h), -p) for h in headers if h for p in (text.find(h, r_end, limit),) if p >= 0]
    header = -min(found)[1] if found else None
    m = stops.reasoning_close.search(text, r_end, limit) if stops.reasoning_close is not None else None
    if m is not None and (header is None or m.start() < header):
        end = m.end()
        while end < limit and text[end].isspace():
            end += 1
        if header is not None:
            end = min(end, header)
    elif header is not None:
        end = header
    return start, end


def _empty_reasoning(segs: Segments, owner: int, start: int, stop: int, stops: StopTokens) -> tuple[int, int] | None:
    """An empty reasoning block at the start of a turn: up to its closing markup and the blank after it."""
    if stops.reasoning_close is None:
        return None
    text = segs.text
    i = segs.index_at(start)
    while i < len(segs.starts) and segs.starts[i] < stop:
        if segs.kinds[i] == DATA and segs.ends[i] > segs.starts[i]:
            return None  # the turn's own text comes first: no block before it
        if segs.owners[i] in (owner, NO_OWNER):
            a, b = max(start, segs.starts[i]), min(stop, segs.ends[i])
            m = stops.reasoning_close.search(text, a, b)
            if m:
                end = m.end()
                while end < b and text[end].isspace():
                    end += 1
                return start, end
        i += 1
    return None


def _strings(value: Any, out: list[str]) -> list[str]:
    if isinstance(value, str):
        if len(value.strip()) >= 3:
            out.append(value.strip())
    elif isinstance(value, Mapping):
        for v in value.values():
            _strings(v, out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _strings(v, out)
    return out


def _own_strings(message: Mapping[str, Any]) -> list[str]:
    """The text a message contributes: content, reasoning and tool-call arguments (not tool
    names, which tool results repeat)."""
    out: list[str] = []
    for key in ("content", "reasoning_content", "thinking", "reasoning"):
        _strings(message.get(key), out)
    for call in message.get("tool_calls") or ():
        if isinstance(call, Mapping):
            fn = call.get("function", call)
            if isinstance(fn, Mapping):
                _strings(fn.get("arguments"), out)
    return out


def _reassign_foreign(
    segs: Segments, messages: Sequence[Mapping[str, Any]], selected: Sequence[bool], printed: set[tuple[int, int]]
) -> None:
    """Hand text a trained message's data piece holds from another message back to that message.

    Some templates print a message inside another's turn through a macro whose output reads no
    message (Gemma 4 prints tool results inside the assistant turn that called the tool). The
    candidates are untrained messages that printed no data of their own. A piece holding such a
    message's content (not explained by the owner's own text) is that message's: all of it
    when it holds nothing of the owner's own, else just the occurrences.
    """
    n = len(selected)
    with_data = {owner for owner, _ in printed}  # the messages whose data the render shows
    others = [
        (j, c) for j, m in enumerate(messages) if not selected[j] and j not in with_data
        for c in _strings(m.get("content"), [])
    ]
    if not others:
        return
    text = segs.text
    i = 0
    while i < len(segs.starts):
        owner, kind = segs.owners[i], segs.kinds[i]
        if kind != DATA or not (0 <= owner < n) or not selected[owner]:
            i += 1
            continue
        a, b = segs.starts[i], segs.ends[i]
        piece = text[a:b]
        own = _own_strings(messages[owner])
        foreign = [(j, c) for j, c in others if c in piece and not any(c in o for o in own)]
        if not foreign:
            i += 1
            continue
        if not any(o in piece for o in own):
            segs.owners[i] = foreign[0][0]
            i += 1
            continue
        hits = sorted((a + p, a + p + len(c), j) for j, c in foreign for p in _find_all(piece, c))
        i = segs.carve(i, hits) + 1


def _find_all(text: str, word: str) -> list[int]:
    out, p = [], text.find(word)
    while p >= 0:
        out.append(p)
        p = text.find(word, p + len(word))
    return out


def find_turns(
    rendered: Rendered,
    roles: Sequence[str],
    selected: Sequence[bool],
    profile: TemplateProfile,
    stops: StopTokens,
    *,
    use_generation_tags: bool,
    reasoning_in_loss: bool = True,
    messages: Sequence[Mapping[str, Any]] | None = None,
    prompt: Callable[[int], str | None] | None = None,
    reads: list[str] | None = None,
) -> tuple[list[Turn], Segments]:
    """The trained turns of one render, in message order, and the render's segments (text a
    trained message's data quotes from another message handed back to that message).

    ``prompt(k)`` renders the generation prompt of message ``k`` (the messages before it with
    ``add_generation_prompt=True``), or None when the template rejects that; it is called only
    for turns whose learned header is not in the render.

    ``reads``: when a list, one reason is appended for each step taken whose outcome may depend
    on the text of a message value rather than on the render's records and the template's own
    text around them (see :mod:`respmask._replay`). Every other step compares positions, reads
    only template text (stop tokens in a turn's literal tail, headers in a window that holds no
    non-empty data, the literal text a turn's iteration writes after its values) or only the
    emptiness of values. Nothing is appended for a render whose turns are found that way alone.

    Raises:
        UnplacedTurn: a trained assistant turn whose generation prompt is not in the render.
    """
    segs = Segments.of(rendered)
    if use_generation_tags:
        if reads is not None:  # a stop token is looked for over the whole block, values included
            reads.append("generation blocks")
        return _tag_turns(rendered, roles, selected, stops), segs
    if messages is not None:
        if reads is not None:
            with_data = {owner for owner, _ in rendered.printed}
            if any(not selected[j] and j not in with_data and _has_text(m.get("content"))
                   for j, m in enumerate(messages)):
                reads.append("a message's text looked for inside trained data")
        _reassign_foreign(segs, messages, selected, rendered.printed)
    if reads is not None and prompt is not None:
        given = prompt

        def prompt(k: int) -> str | None:
            reads.append("a generation prompt rendered")  # compared with the text around values
            return given(k)
    by_owner = segs.by_owner(len(roles))
    turns: list[Turn] = []
    for k, (role, chosen) in enumerate(zip(roles, selected)):
        if not chosen:
            continue
        idxs = by_owner[k]
        start = segs.region_start(idxs)
        if start is None:  # the template did not render this message
            continue
        first_data = segs.first_data(idxs)
        last_data = segs.last_data(idxs)
        if role == "assistant":
            if first_data is not None:
                first = segs.starts[first_data]
                if reads is not None and segs.has_data(segs.window_start(k, first), first):
                    reads.append("data in the window before a turn")  # _header_end reads the window
            else:  # nothing of the message printed (empty content left out): right after its header
                if reads is not None:  # a header looked for over the message's whole output
                    reads.append("a turn that printed no data")
                first = _after_header(segs, start, segs.ends[idxs[-1]], profile, roles[k - 1] if k else None)
            prev = roles[k - 1] if k else None
            header_end = None
            if first_data is not None and segs.ends[first_data] == first:  # its first value is empty
                if reads is not None:  # a header's first occurrence up to the turn's first text
                    reads.append("a turn whose first value is empty")
                header_end = _header_over_empty(segs, k, idxs, first, profile.headers.get(prev, ()))
            if header_end is None:
                header_end = _header_end(segs, k, first, profile, prev, lambda k=k: prompt(k) if prompt else None)
        else:  # a non-assistant message the user asked to train: its content onward
            header_end = segs.starts[first_data] if first_data is not None else start
        after = max(header_end, segs.ends[last_data]) if last_data is not None else header_end
        # a stop token is template text: stop strings inside a message's values (a tool call's
        # JSON, say) are data, never the end of its turn
        stop = _find_stop(segs, k, after, stops, reads)
        if last_data is not None and segs.ends[last_data] == segs.starts[last_data]:
            if reads is not None:
                reads.append("a turn whose last value is empty")
            early = _before_empty(segs, k, idxs, last_data, header_end, stop, stops)
            if early is not None:
                stop, after = early
        # no stop token: past the text its own iteration wrote after its values (a tool call's
        # closing brackets, say)
        end = stop[1] if stop else segs.own_tail_end(k, after)
        reasoning = None
        if not reasoning_in_loss:
            if reads is not None and any(o == k for _, _, o in rendered.reasoning):
                reads.append("reasoning text")  # headers looked for after it
            reasoning = _reasoning(
                segs, k, header_end, stop[0] if stop else end, stops, rendered.reasoning, profile.all_headers
            )
        turns.append(Turn(k, role, header_end, end, stop, reasoning))
    return turns, segs


def _tag_turns(
    rendered: Rendered, roles: Sequence[str], selected: Sequence[bool], stops: StopTokens
) -> list[Turn]:
    turns = []
    for start, end, owner in rendered.generation_blocks:
        if owner == NO_OWNER or not (0 <= owner < len(roles)) or not selected[owner] or end <= start:
            continue
        stop = None
        if stops.end_of_turn is not None:
            for m in stops.end_of_turn.finditer(rendered.text, start, end):
                stop = (m.start(), m.end())
        turns.append(Turn(owner, roles[owner], start, end, stop))
    return turns


def trained_spans(turns: Sequence[Turn], segs: Segments) -> list[tuple[int, int]]:
    """Character spans to train, sorted and merged: each turn's range (from the end of its
    reasoning when that is left out) minus the text other messages and the data of no message
    (tools, documents) hold inside it, plus its stop token wherever that lies."""
    spans: list[tuple[int, int]] = []
    for t in turns:
        lo = t.reasoning[1] if t.reasoning else t.start
        hi = t.end
        if hi <= lo:
            continue
        i = segs.index_at(lo)
        cur = lo
        while i < len(segs.starts) and segs.starts[i] < hi:
            o = segs.owners[i]
            foreign = o != t.message and (o != NO_OWNER or segs.kinds[i] == DATA)
            if foreign and segs.ends[i] > segs.starts[i]:
                if segs.starts[i] > cur:
                    spans.append((cur, segs.starts[i]))
                cur = max(cur, segs.ends[i])
            i += 1
        if hi > cur:
            spans.append((cur, hi))
        if t.stop is not None and t.stop[0] >= lo:
            # the stop token may open the next message's output (templates whose next role token
            # ends a turn): it is what the model generates to stop, so it is trained
            spans.append(t.stop)
    spans.sort()
    merged: list[tuple[int, int]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def _has_text(value: Any) -> bool:
    """A non-blank string, or content parts holding one."""
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, (list, tuple)):
        return any(
            _has_text(p.get("text") if isinstance(p, Mapping) else p) for p in value
        )
    return False


# what ``dropped_data`` says of reasoning left out: templates such as Qwen3's drop earlier turns'
# reasoning by design, so it is listed but not counted as lost
DROPPED_REASONING = "reasoning"
#: reasoning the template does not render even when its message is the last one (Llama 3.1's, DeepSeek-R1's
#: templates print no reasoning_content at all): no prefix row shows it, so it is lost data, not earlier
#: turns' reasoning (the masker relabels such ``DROPPED_REASONING`` entries)
REASONING_NOT_RENDERED = ("reasoning (the chat template renders none here, not even as the last turn, so no split "
                          "trains it)")


#: reasoning a trained reply writes in its content (``<think>...</think>`` before the answer) that
#: the chat template cuts off even when the reply is the last message (DeepSeek-R1's prints only
#: ``content.split('</think>')[-1]``): lost data, as :data:`REASONING_NOT_RENDERED` is for
#: reasoning_content (earlier turns' that the last turn shows are :data:`DROPPED_REASONING`)
CONTENT_REASONING_NOT_RENDERED = ("reasoning written in its content before {marker!r} (the chat template prints only "
                                  "what follows it, even as the last turn, so no split trains it)")
#: part of a trained reply's content (not reasoning before a marker) that the template leaves out
CONTENT_PART_NOT_RENDERED = ("part of its content (the chat template prints only part of it, even as the last turn, "
                             "so no split trains it)")
#: the same, of an earlier turn the template prints whole as the last message
CONTENT_PART_EARLIER = ("part of its content (the chat template prints only part of it here, all of it as the last "
                        "turn: split='auto' trains it)")


def prints_reasoning(printed: set[tuple[int, int]], message: int) -> bool:
    """Whether a render (its ``printed`` ``(owner, field)`` pairs) shows ``message``'s reasoning."""
    return bool({(message, REASONING), (message, MIXED)} & printed)


#: what a trained turn whose data the template leaves out still trains
ONLY_STOP_RENDERED = "only its header and stop token are rendered, so only the stop token is trained"
#: a trained turn that holds data of no field the render misses, yet trains only its stop token
STOP_ONLY = "everything but its stop token (only the stop token is trained)"


def held_data(message: Mapping[str, Any]) -> list[str]:
    """The kinds of data a message holds: ``content``, ``reasoning``, ``tool calls`` (blank text
    holds none)."""
    held = ["content"] if _has_text(message.get("content")) else []
    if not message.keys().isdisjoint(REASONING_KEYS) and any(_has_text(message.get(k)) for k in REASONING_KEYS):
        held.append(DROPPED_REASONING)
    if message.get("tool_calls"):
        held.append("tool calls")
    return held


def empty_replies(messages: Sequence[Mapping[str, Any]], turns: Sequence[Turn], text: str) -> list[int]:
    """The trained turns that hold nothing and train only their stop token (empty replies): no
    data is lost, their stop token is what they teach."""
    return [t.message for t in turns if t.stop is not None and not text[t.start:t.stop[0]].strip()
            and not held_data(messages[t.message])]


def dropped_text(messages: Sequence[Mapping[str, Any]], dropped: Sequence[tuple[int, str]], tools: Any = None,
                 documents: Any = None) -> list[str]:
    """The data each :func:`dropped_data` (or :func:`dropped_inputs`) entry stands for, as text (to
    count its tokens): the content, reasoning or tool calls (as JSON) the render leaves out, the
    sample's ``tools`` or ``documents`` (as JSON); nothing for a turn that trains only its stop
    token (its data is counted under its own entry)."""
    import json

    out = []
    for k, what in dropped:
        if k == NO_MESSAGE:  # the sample's tools or documents
            data = tools if what == DROPPED_TOOLS else documents
            out.append(json.dumps(data, ensure_ascii=False, default=str))
            continue
        m = messages[k]
        parts = []
        whole = what.startswith("the whole message")
        kinds = set() if what == STOP_ONLY else set(what.split(" (")[0].split(" and "))
        if whole or "content" in kinds:
            parts.append(value_text(m.get("content")))
        if whole or DROPPED_REASONING in kinds:
            parts += [value_text(m.get(key)) for key in REASONING_KEYS]
        if (whole or "tool calls" in kinds) and m.get("tool_calls"):
            parts.append(json.dumps(m.get("tool_calls"), ensure_ascii=False, default=str))
        out.append("".join(parts))
    return out


def _squeezed(text: str) -> str:
    """``text`` without its whitespace (templates trim, strip and re-indent routinely: no data)."""
    return "".join(text.split())


def _ends_loosely(text: str, end: int, tail: str) -> bool:
    """Whether ``text[:end]`` ends with ``tail`` (whitespace removed), whitespace aside."""
    j = len(tail) - 1
    i = end - 1
    while j >= 0:
        if i < 0:
            return False
        c = text[i]
        i -= 1
        if c.isspace():
            continue
        if c != tail[j]:
            return False
        j -= 1
    return True


def _starts_loosely(text: str, start: int, head: str) -> bool:
    """Whether ``text[start:]`` starts with ``head`` (whitespace removed), whitespace aside."""
    j = 0
    i = start
    n = len(text)
    while j < len(head):
        if i >= n:
            return False
        c = text[i]
        i += 1
        if c.isspace():
            continue
        if c != head[j]:
            return False
        j += 1
    return True


def _strip_markers(part: str, markers: frozenset[str]) -> tuple[str, str | None]:
    """``part`` without whitespace and the template's ``markers`` at its ends, and the marker it
    ended with (None: none)."""
    ordered = sorted(markers, key=len, reverse=True)
    part = part.strip()
    closing = None
    changed = True
    while changed and part:
        changed = False
        for m in ordered:
            if part.endswith(m):
                part, changed = part[: -len(m)].rstrip(), True
                closing = closing or m
                break
            if part.startswith(m):
                part, changed = part[len(m):].lstrip(), True
                break
    return part, closing


def content_left_out(text: str, runs: Sequence[tuple[int, int]], content: str, markers: frozenset[str]
                     ) -> tuple[str, str | None] | None:
    """What of a message's string ``content`` its render leaves out when the template printed
    only slices of it (``runs``: the ``(start, end)`` in ``text`` of the content's printed runs,
    in output order): ``(left_out, marker)``, None when nothing is left out or it cannot be told.

    Each run is located in ``content`` (in order: a run printed twice, out of order or changed, by
    a case change or escaping, is no slice and says nothing). A part of ``content`` between the
    runs (before the first, after the last) that the render does not show at that place, its
    whitespace aside (``content | trim`` loses nothing, nor does a template that writes
    ``<think>\n`` itself where the content had it), is left out. The template's own constant
    strings (``markers``) and whitespace at the ends of what is left out are not data (a template
    that splits the content at ``</think>`` drops the marker it reads); what remains is returned.
    ``marker`` is the marker the part before the first run ended with, when that part alone is
    left out: reasoning the template cut off before a marker it reads from the content (DeepSeek-
    R1's ``content.split('</think>')[-1]``, Qwen3's for earlier turns)."""
    spans = []
    cur = 0
    for s, e in runs:
        p = content.find(text[s:e], cur)
        if p < 0:
            return None
        spans.append((p, p + e - s))
        cur = p + e - s
    if not spans:
        return None
    lost = []
    lead = content[: spans[0][0]]
    lead_lost = bool(lead.strip()) and not _ends_loosely(text, runs[0][0], _squeezed(lead))
    if lead_lost:
        lost.append(lead)
    for i in range(1, len(spans)):
        gap = content[spans[i - 1][1] : spans[i][0]]
        if gap.strip() and _squeezed(gap) not in _squeezed(text[runs[i - 1][1] : runs[i][0]]):
            lost.append(gap)
    tail = content[spans[-1][1] :]
    if tail.strip() and not _starts_loosely(text, runs[-1][1], _squeezed(tail)):
        lost.append(tail)
    parts = [_strip_markers(part, markers) for part in lost]
    left = [p for p, _ in parts if p]
    if not left:
        return None
    return "\n".join(left), parts[0][1] if lead_lost and len(lost) == 1 else None


def describe_dropped(dropped: Sequence[tuple[int, str]]) -> str:
    """``"message 2: tool calls; message 4: content"``: what :func:`dropped_data` (and
    :func:`dropped_inputs`) found, for messages (an entry of no message is named by itself)."""
    return "; ".join(what if k == NO_MESSAGE else f"message {k}: {what}" for k, what in dropped)


#: the message index of a :func:`dropped_inputs` entry: data of the sample, not of one message (the
#: render's owner of such data)
NO_MESSAGE = NO_OWNER
#: what :func:`dropped_inputs` says of a sample's tools / documents the render does not show
DROPPED_TOOLS = "the tool list (the sample's 'tools': the chat template does not render it, so the model is " \
    "trained without seeing the tools)"
DROPPED_DOCUMENTS = "the documents (the sample's 'documents': the chat template does not render them, so the " \
    "model is trained without seeing them)"


def dropped_inputs(tools: Any, documents: Any, printed: set[tuple[int, int]], text: str,
                   render_without: Callable[[str], str | None]) -> list[tuple[int, str]]:
    """``(NO_MESSAGE, what)`` for a sample's non-empty ``tools`` or ``documents`` its render leaves
    out. A template without tool support (Llama 3's, Gemma 3's) renders a conversation with tools
    as if it had none: its tool calls are trained against a prompt that never lists the tools.

    ``printed`` (the render's ``(owner, field)`` of printed data, the sample's tools and documents
    marked :data:`TOOL_LIST` and :data:`DOCUMENTS` of no message) settles the common case: shown.
    Otherwise they may still be in the text without their marks (a macro's captured output,
    ``Markup``), so ``render_without("tools")`` (``"documents"``), the render of the same sample
    without them (None: the template raises), decides: left out only when its text is ``text``."""
    out = []
    for name, data, field, what in (("tools", tools, TOOL_LIST, DROPPED_TOOLS),
                                    ("documents", documents, DOCUMENTS, DROPPED_DOCUMENTS)):
        if data and (NO_MESSAGE, field) not in printed and render_without(name) == text:
            out.append((NO_MESSAGE, what))
    return out


def dropped_data(
    messages: Sequence[Mapping[str, Any]], printed: set[tuple[int, int]], turns: Sequence[Turn], text: str
) -> list[tuple[int, str]]:
    """``(message, what)`` for data a message holds that its render does not show, one entry per
    message and kind: its content, reasoning or tool calls (a template without tool support;
    Qwen3 dropping earlier turns' reasoning), the whole message (a role the template does not
    know), for a trained turn of which only the header and stop token are rendered the kinds it
    held (``"tool calls (only its header and stop token are rendered, ...)"``), and a trained turn
    that holds data yet trains only its stop token and lost nothing else. An empty reply holds
    nothing and loses nothing (:func:`empty_replies`)."""
    trained = {t.message for t in turns}
    got: dict[int, set[int]] = {}
    for owner, f in printed:
        got.setdefault(owner, set()).add(f)
    out: list[tuple[int, str]] = []
    none: frozenset[int] = frozenset()
    for k, m in enumerate(messages):
        fields = got.get(k, none)
        if MIXED in fields:
            continue
        # only the fields the render did not show are looked at (the common case: none)
        missing = []
        if CONTENT_FIELD not in fields and _has_text(m.get("content")):
            missing.append("content")
        if REASONING not in fields and not m.keys().isdisjoint(REASONING_KEYS) and any(
            _has_text(m.get(key)) for key in REASONING_KEYS
        ):
            missing.append(DROPPED_REASONING)
        if TOOLS not in fields and m.get("tool_calls"):
            missing.append("tool calls")
        if not missing:
            continue
        if fields:
            out.extend((k, name) for name in missing)
        elif k in trained:
            out.append((k, f"{' and '.join(missing)} ({ONLY_STOP_RENDERED})"))
        else:
            out.append((k, f"the whole message (role {m.get('role')!r})"))
    listed = {k for k, _ in out}
    for t in turns:
        if (t.stop is not None and t.message not in listed and not text[t.start : t.stop[0]].strip()
                and held_data(messages[t.message])):
            out.append((t.message, STOP_ONLY))
    return out
