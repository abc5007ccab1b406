"""Reasoning a chat template renders otherwise than the reply holds it, learned by probe renders.

Two mechanisms, both read from the template's own renders and never from a model's or a kwarg's
name, so that data is not lost, or trained against a prompt, without a word:

* Content left out (:func:`content_slices`): a template may print only a slice of a reply's
  string content (DeepSeek-R1's ``content.split('</think>')[-1]`` on every turn, Qwen3's on
  earlier turns). The slices the render shows are located in the value
  (:func:`respmask._spans.content_left_out`) and what is missing is classified as
  ``reasoning_content`` is: reasoning an earlier turn cuts off before a marker, but that the
  turn shows whole when it is the last message, is left out by design (``split='auto'`` trains
  it); anything else is lost data that check, the collator and tokenize report.
* Reasoning against the generation prompt (:func:`kwargs_against_reasoning`): template kwargs
  may end the generation prompt in an empty reasoning block (Qwen3's ``enable_thinking=False``)
  while the template still prints a reply's reasoning, so the reply is trained after a prompt
  that no inference mode writes. Check lists such replies (:func:`replies_against_prompt`).

The functions take the render (:class:`Render`) and what they need; they keep no state. The
caller (:class:`respmask.ChatMasker`) owns the caches: each probe's answer depends only on the
template, its kwargs, the conversation's content shape and the reasoning key or marker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ._origin import MIXED, REASONING_KEYS
from ._profile import Probe, ProbeShape
from ._render import Rendered
from ._spans import (
    CONTENT_PART_EARLIER, CONTENT_PART_NOT_RENDERED, CONTENT_REASONING_NOT_RENDERED, DROPPED_REASONING, Turn,
    content_left_out,
)


class Render(Protocol):
    """One chat template's instrumented render of ``messages`` (the text ``apply_chat_template``
    writes, with where each value landed): what the probes here compare."""

    def __call__(self, messages: list[dict[str, Any]], kwargs: Mapping[str, Any], add_generation_prompt: bool,
                 tools: Any = None, documents: Any = None) -> Rendered: ...


@dataclass(frozen=True)
class ReasoningAgainstPrompt:
    """Template kwargs under which a reply's reasoning is rendered against the generation prompt.

    Attributes:
        kwargs: the kwargs that do it (without them the reply extends the prompt again).
        prompt: the generation prompt they write (what the model reads at inference before replying).
        prompt_without: the generation prompt without them (the reasoning is generated after it).
    """

    kwargs: dict[str, Any]
    prompt: str
    prompt_without: str


def reasoning_field(message: Mapping[str, Any]) -> str:
    """The reasoning key ``message`` holds reasoning under (the first of
    :data:`respmask._origin.REASONING_KEYS` when none): probes are written with it, so that
    what they learn holds for messages of this kind."""
    return next((k for k in REASONING_KEYS if message.get(k)), REASONING_KEYS[0])


def _prints_whole(rendered: Rendered, k: int, content: Any, markers: frozenset[str]) -> bool:
    """Whether ``rendered`` prints all of message ``k``'s string ``content`` (whitespace and the
    template's ``markers`` at the ends of a slice aside, as :func:`content_left_out` reads it)."""
    runs = [(a, b) for a, b, o in rendered.content if o == k]
    return (isinstance(content, str) and bool(runs) and (k, MIXED) not in rendered.printed
            and content_left_out(rendered.text, runs, content, markers) is None)


def prints_marked_content_as_last(render: Render, kwargs: Mapping[str, Any], marker: str,
                                  shape: ProbeShape | None, markers: frozenset[str]) -> bool:
    """Whether the template prints all of a reply whose content holds reasoning before ``marker``
    (``"Probe reasoning\\n</think>\\n\\nProbe answer"``) when it is the last message, as
    :meth:`respmask.ChatMasker._renders_last_reasoning` learns it for ``reasoning_content``.

    Args:
        render: the template's render.
        kwargs: the template kwargs.
        marker: a constant string of the template the reasoning ends before.
        shape: the conversation's content shape (the probe is written in it), or None.
        markers: the template's constant strings (``ChatTemplate.constants``).

    Returns:
        The answer; False when the template rejects the probe (no row shows it).
    """
    probe = Probe([{"role": "user", "content": "Probe question"},
                   {"role": "assistant", "content": f"Probe reasoning\n{marker}\n\nProbe answer"}])
    probe = probe if shape is None else shape.apply(probe)
    try:
        rendered = render(probe.messages, kwargs, False)
        return _prints_whole(rendered, 1, probe.messages[1]["content"], markers)
    except Exception:  # noqa: BLE001 - the template rejects the probe: no row shows it
        return False


def prints_content_as_last(render: Render, kwargs: Mapping[str, Any], messages: Sequence[Mapping[str, Any]],
                           k: int, tools: Any, documents: Any, markers: frozenset[str]) -> bool:
    """Whether the render of the conversation up to message ``k`` (its prefix row) prints all of
    ``k``'s string content: the reference for a part of it an earlier turn leaves out.

    Args:
        render: the template's render.
        kwargs: the template kwargs.
        messages: the conversation (message ``k``'s content a string).
        k: the message.
        tools, documents: the conversation's (rendered with its prefix as with the whole).
        markers: the template's constant strings (``ChatTemplate.constants``).

    Returns:
        The answer; False when the template rejects that conversation (nothing shows it).
    """
    try:
        rendered = render(list(messages[: k + 1]), kwargs, False, tools, documents)
    except Exception:  # noqa: BLE001 - no prefix row renders: nothing shows it
        return False
    return _prints_whole(rendered, k, messages[k]["content"], markers)


def content_slices(messages: Sequence[Mapping[str, Any]], rendered: Rendered, markers: frozenset[str],
                   turns: Sequence[Turn], dropped: Sequence[tuple[int, str]],
                   shown_as_last: Callable[[int, str | None], bool]) -> tuple[list[tuple[int, str]], list[str]]:
    """``(message, what)`` entries and their texts for the trained replies whose string content
    the template prints only a slice of (:func:`content_left_out`), reported as
    ``reasoning_content`` is.

    Reasoning cut off before a marker, of an earlier turn the template shows whole when it is the
    last message, is ``DROPPED_REASONING`` (left out by design; ``split='auto'`` trains it); else
    it is lost data (``CONTENT_REASONING_NOT_RENDERED``, or ``CONTENT_PART_*`` for a part with no
    marker). Untrained turns are context, read so at inference too, and messages already in
    ``dropped`` are reported: neither is looked at. A reply printed once, whole or trimmed (the
    common case), is settled by one comparison.

    Args:
        messages: the conversation as rendered.
        rendered: its render (``rendered.content``: where each message's content runs landed).
        markers: the template's constant strings (``ChatTemplate.constants``).
        turns: the trained turns.
        dropped: what is already reported left out.
        shown_as_last: ``shown_as_last(k, marker)``, whether message ``k`` (an earlier one) would
            be printed whole as the last message (``marker``: the one its reasoning is cut before,
            or None; the caller learns and caches it, see :func:`prints_marked_content_as_last`
            and :func:`prints_content_as_last`).

    Returns:
        The entries, by message, and the text each leaves out.
    """
    trained = {t.message for t in turns}
    listed = {k for k, _ in dropped}
    text = rendered.text
    runs: dict[int, list[tuple[int, int]]] = {}
    for a, b, o in rendered.content:
        if o in trained and o not in listed:
            runs.setdefault(o, []).append((a, b))
    out: list[tuple[int, str]] = []
    texts: list[str] = []
    for k in sorted(runs):
        content = messages[k].get("content")
        if type(content) is not str:
            continue
        own = runs[k]
        if len(own) == 1:  # the common case: the value printed once, whole or trimmed
            a, b = own[0]
            whole = content if b - a == len(content) else content.strip()
            if b - a == len(whole) and text.startswith(whole, a):
                continue
        if (k, MIXED) in rendered.printed:
            continue
        found = content_left_out(text, own, content, markers)
        if found is None:
            continue
        left, marker = found
        shown = k != len(messages) - 1 and shown_as_last(k, marker)
        if marker is not None:
            what = DROPPED_REASONING if shown else CONTENT_REASONING_NOT_RENDERED.format(marker=marker)
        else:
            what = CONTENT_PART_EARLIER if shown else CONTENT_PART_NOT_RENDERED
        out.append((k, what))
        texts.append(left)
    return out, texts


def replies_against_prompt(
    messages: Sequence[Mapping[str, Any]], selected: Sequence[bool], markers: frozenset[str],
    against: Callable[[Mapping[str, Any], str | None], ReasoningAgainstPrompt | None],
) -> tuple[list[int], ReasoningAgainstPrompt | None]:
    """The trained replies holding reasoning that the template kwargs contradict (see
    :func:`kwargs_against_reasoning`): a reasoning key's, or reasoning written in the content
    before one of the template's ``markers``.

    Args:
        messages: the conversation.
        selected: per message, whether it is trained.
        markers: the template's constant strings (``ChatTemplate.constants``).
        against: ``against(message, marker)``, what the kwargs do to a reply of ``message``'s kind
            (``marker``: None for a reasoning key; the caller learns and caches it).

    Returns:
        The messages, in order, and what the kwargs do to the first (None with the messages []).
    """
    found = []
    for k, m in enumerate(messages):
        if not selected[k]:
            continue
        if any(isinstance(m.get(key), str) and m[key].strip() for key in REASONING_KEYS):
            how = against(m, None)
        else:
            # reasoning written in the content, before a marker the template reads from it
            content = m.get("content")
            how = None
            if type(content) is str:
                for marker in sorted(c for c in markers if c in content):
                    how = against(m, marker)
                    if how is not None:
                        break
        if how is not None:
            found.append((k, how))
    return [k for k, _ in found], found[0][1] if found else None


def kwargs_against_reasoning(render: Render, kwargs: Mapping[str, Any], field: str, marker: str | None,
                             shape: ProbeShape | None) -> ReasoningAgainstPrompt | None:
    """What ``kwargs`` do to a reply holding reasoning under ``field`` (or, with ``marker``,
    written in its content before that string of the template).

    With the kwargs, a probe reply's render does not extend the generation prompt while the same
    reply without reasoning does, and without some of them (each alone, else all) it does again:
    the reply is trained after a prompt inference never writes (Qwen3's ``enable_thinking=False``
    ends the prompt in an empty reasoning block, yet prints the reply's reasoning).

    Args:
        render: the template's render.
        kwargs: the template kwargs.
        field: the reasoning key (:func:`reasoning_field`).
        marker: the template's string the reasoning ends before, or None for ``field``.
        shape: the conversation's content shape (the probes are written in it), or None.

    Returns:
        The kwargs that do it and the generation prompts with and without them; None when the
        kwargs contradict nothing (or the template rejects a probe).
    """
    user = {"role": "user", "content": "Probe question"}
    plain = Probe([user, {"role": "assistant", "content": "Probe answer"}])
    reasoned = Probe([user, {"role": "assistant", "content": "Probe answer", field: "Probe reasoning"}
                      if marker is None else
                      {"role": "assistant", "content": f"Probe reasoning\n{marker}\n\nProbe answer"}])
    if shape is not None:
        plain, reasoned = shape.apply(plain), shape.apply(reasoned)

    def text(messages: list[dict], kw: Mapping[str, Any], prompt: bool) -> str:
        return render(messages, kw, prompt).text

    def extends(probe: Probe, kw: Mapping[str, Any]) -> bool:
        return text(probe.messages, kw, False).startswith(text(probe.messages[:1], kw, True))

    try:
        if not extends(reasoned, kwargs) and extends(plain, kwargs):
            names = [n for n in kwargs if extends(reasoned, {k: v for k, v in kwargs.items() if k != n})]
            if names or extends(reasoned, {}):
                names = names or list(kwargs)
                history = text(reasoned.messages[:1], kwargs, False)
                prompt = text(reasoned.messages[:1], kwargs, True)
                without = {k: v for k, v in kwargs.items() if k not in names}
                free = text(reasoned.messages[:1], without, True)
                free_history = text(reasoned.messages[:1], without, False)
                return ReasoningAgainstPrompt(
                    {n: kwargs[n] for n in names},
                    prompt[len(history):] if prompt.startswith(history) else prompt,
                    free[len(free_history):] if free.startswith(free_history) else free)
    except Exception:  # noqa: BLE001 - the template rejects a probe: say nothing
        return None
    return None
