"""Rows in which every trained turn is exactly what the model sees and produces at inference.

Many templates render earlier turns differently from the way the model produced them: Qwen3
drops the ``<think>`` block of assistant turns before the last user message, DeepSeek-R1 strips
reasoning from history, GPT-OSS drops past analysis channels. In one render of the whole
conversation those turns are trained in a form the model never generates. The reference for a
turn is the render of its *prefix* (the messages up to and including it): the turn is *exact* in
a render when that render, up to the end of the turn (its stop token included), equals its
prefix render. This module decides which rows to make:

* ``"never"``: one row, the whole conversation (every turn trained wherever it is).
* ``"auto"``: the fewest rows such that every trained turn is trained where it is exact: the
  whole conversation for the turns exact in it, then, from the last remaining turn backwards,
  that turn's prefix for it and every remaining turn exact there (on Qwen3: one row per user query
  with its whole tool-call chain).
* ``"turns"``: one row per trained turn, its prefix (a turn its prefix does not render, as on a
  template that drops an empty last reply, is trained in the whole conversation's row).

Nothing here knows a model: exactness is a text comparison with the template's own renders.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from ._spans import Turn

Split = Literal["never", "auto", "turns"]
SPLITS: tuple[str, ...] = ("never", "auto", "turns")

# A row: ``None`` for the whole conversation, or k for the prefix through message k; and the
# messages whose turns it trains.
Row = tuple[int | None, frozenset[int]]


def turn_end(turn: Turn) -> int:
    """One past the last character the turn trains (a stop token that opens the next message's
    output included)."""
    return max(turn.end, turn.stop[1]) if turn.stop is not None else turn.end


def is_exact(text: str, turn: Turn, prefix_text: str | None) -> bool:
    """Whether ``turn`` (found in ``text``) reads in ``text``, up to its end, exactly as in the
    render of its own prefix. A prefix render may stop before the turn's stop token (templates
    that leave the final message open, as for continuing it): it must then agree up to where it
    stops, and reach the stop token. A prefix the template cannot render gives nothing to compare
    against: the turn stays where it is."""
    if prefix_text is None:
        return True
    reference = prefix_text[: turn_end(turn)]
    body_end = turn.stop[0] if turn.stop is not None else turn.end
    return len(reference) >= body_end and text.startswith(reference)


def _prefix_row(
    prefix_turns: Callable[[int], tuple[str, Sequence[Turn]] | None], k: int
) -> tuple[str, Sequence[Turn]] | None:
    """The render of the messages through ``k`` and its turns, when it can be analysed and holds
    ``k``'s turn (a template may drop an empty reply when it is the last message); else None."""
    analysed = prefix_turns(k)
    return analysed if analysed is not None and any(t.message == k for t in analysed[1]) else None


def plan_rows(
    mode: Split,
    text: str,
    turns: Sequence[Turn],
    last_message: int,
    prefix_text: Callable[[int], str | None],
    prefix_turns: Callable[[int], tuple[str, Sequence[Turn]] | None],
) -> list[Row]:
    """The rows for one conversation.

    Args:
        mode: ``"auto"`` or ``"turns"`` (``"never"`` is one row and needs no plan).
        text, turns: the whole conversation's render and its trained turns.
        last_message: the index of the conversation's last message (its prefix is the whole).
        prefix_text: the render of the messages through k (None when the template raises).
        prefix_turns: that render and its trained turns (None when it cannot be analysed).

    Returns:
        ``(None | k, messages trained)`` per row, every k an analysed prefix that renders its
        turns; the whole conversation first when it is a row (``"auto"``), last (``"turns"``).
        A conversation with no trained turn is one row that trains nothing (reported upstream).
    """
    wanted = [t.message for t in turns]
    if not wanted:
        return [(None, frozenset())]
    if mode == "turns":
        rows, in_place = [], set()
        for m in wanted:
            if m != last_message and _prefix_row(prefix_turns, m) is not None:
                rows.append((m, frozenset([m])))
            else:  # the last message, or a prefix that cannot be analysed or that does not render the
                in_place.add(m)  # turn (a template that drops an empty last reply): trained where it is
        return rows + ([(None, frozenset(in_place))] if in_place else [])
    references = {m: (text if m == last_message else prefix_text(m)) for m in wanted}
    here = frozenset(t.message for t in turns if is_exact(text, t, references[t.message]))
    in_place = set(here)
    rows: list[Row] = []
    left = [m for m in wanted if m not in here]
    while left:
        j = left[-1]
        prefix = _prefix_row(prefix_turns, j)
        if prefix is None:  # its prefix cannot be analysed or lacks it: the turn is trained where it is
            in_place.add(j)
            left.pop()
            continue
        row_text, row_turns = prefix
        covered = {t.message for t in row_turns if t.message in left and is_exact(row_text, t, references[t.message])}
        covered.add(j)
        rows.append((j, frozenset(covered)))
        left = [m for m in left if m not in covered]
    rows.sort(key=lambda r: r[0])  # type: ignore[arg-type, return-value]
    return ([(None, frozenset(in_place))] if in_place else []) + rows
