"""Turns and trained spans of a layout's conversations, found once and moved by the values' lengths.

A conversation rendered from its layout (:mod:`respmask._layout`) has the layout's records, every
position moved by the lengths of the values printed before it. A position of the render is
either in one of the layout's literals (literal ``j`` starts after the ``j``-th printed value, so
the position is ``start of literal j + a fixed offset``) or inside a value. Two positions in
literals compare the same way for every conversation of the layout whose printed values are
empty at the same places: between literal ``i`` and literal ``j > i`` lie literal text of fixed
length and values ``i .. j-1``, so the difference is fixed plus those values' lengths, and zero
only where the fixed part is zero and all those values are empty.

What :meth:`ChatMasker.render` computes from the records (:class:`~respmask._segments.Segments`,
:func:`~respmask._spans.find_turns`, :func:`~respmask._spans.trained_spans`, the attribution check,
:func:`~respmask._spans.dropped_data`, :func:`~respmask._spans.empty_replies`) compares such
positions, reads template text between them, and reads of values only whether they are empty,
blank (whitespace) or hold text:

* ``Segments.of`` only compares record positions; its literal segments lie inside the layout's
  literals (the layout refuses a value printed without its marks), so their text is fixed.
* ``find_turns`` looks for stop tokens in a turn's literal tail (merged over its own empty values:
  fixed text; the patterns are escaped literals, read only inside the range), for learned headers
  in the window between the previous message's output and the turn's first value, and ends a
  turn without a stop token at the literal text its iteration writes. The steps that may read a
  value (a window holding data, a turn that printed no data or begins or ends with an empty value,
  a generation prompt rendered and compared with the text, a stop token looked for where the next
  message's output begins, another message's text looked for inside trained data, generation
  blocks, reasoning) are reported by ``find_turns(reads=...)``; a conversation that takes one is
  never kept here. Which steps run is decided by comparisons of positions and by what earlier
  steps found, so a conversation that takes none of them is analysed by the same steps as every
  other conversation of its layout and value states, each finding the same thing.
* The attribution check reads a selected message's content only when no turn covers it: such
  a conversation is never kept.
* ``dropped_data`` and ``empty_replies`` read which fields were printed non-empty, whether a
  value holds text, and whether a turn's text up to its stop token is blank: all fixed by the
  layout and whether each value is empty, blank or holds text.

So the analysis is kept per layout and *value states* (each value of each message, in order:
empty, blank, or holding text), the selected messages and the options, with every position
written relative to the layout's literals; a later conversation with the same key gets it back
moved to its own literals' starts. The key is checked on every use, the text is the layout's
(checked by :meth:`~respmask._layout.LayoutRenderer.find`), and the profile must be the one the
analysis was made with. At most ``capacity`` analyses are kept per layout, the oldest forgotten
first.

A template that looks at what messages say has no layout, but each of its renders has records of
its own: :class:`RecordedLayouts` takes the text between its data pieces as the literals and the
data pieces as the values, and keys the same analyses by the outline, those literal texts, every
record's place relative to them, the messages printed and the data pieces' states (see its
docstring). The render with attribution still runs; what is replayed is everything after it.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from typing import Any

from ._layout import LayoutHit, keep_bounded
from ._render import DATA, Rendered
from ._segments import Segments
from ._spans import Turn

EMPTY, BLANK, TEXT = 0, 1, 2


def value_states(messages: Sequence[Mapping[str, str]]) -> bytes:
    """Each value of each message, in order: empty (0), blank (1, whitespace only) or holding text
    (2). Messages of a layout's outline hold strings only."""
    return bytes(EMPTY if not v else BLANK if v.isspace() else TEXT for m in messages for v in m.values())


class _Inside(Exception):
    """A position inside a non-empty value: not a place of the layout."""


def _place(starts: Sequence[int], lit_lens: Sequence[int], p: int) -> tuple[int, int]:
    """Position ``p`` as the literal it lies in (the last one starting at or before it) and its
    offset there, given where each literal starts and its length.

    Raises:
        _Inside: ``p`` lies inside a value.
    """
    j = bisect_right(starts, p) - 1
    off = p - starts[j]
    if j < 0 or off > lit_lens[j]:
        raise _Inside(p)
    return j, off


class _Analysis:
    """One kept analysis: positions as the literal each lies in and the offset in it (``literals``
    and ``offsets``: the segments' ends, their starts too unless each starts where the one before
    ends, then the spans and the turns' positions), the rest as is; tuples of small ints, so that
    the most kept stays small."""

    __slots__ = ("profile", "stops", "literals", "offsets", "n_segments", "gapless", "owners", "kinds",
                 "regions", "n_spans", "turns", "dropped", "empty_replies")

    def __init__(self, profile: tuple, places: list[tuple[int, int]], n_segments: int, gapless: bool,
                 owners: tuple[int, ...], kinds: tuple[int, ...], regions: tuple[int, ...], n_spans: int,
                 turns: tuple[tuple, ...], dropped: tuple[tuple[int, str], ...], empty_replies: tuple[int, ...]):
        self.profile, self.stops = profile
        self.literals = tuple(j for j, _ in places)
        self.offsets = tuple(off for _, off in places)
        self.n_segments = n_segments
        self.gapless = gapless
        self.owners = owners
        self.kinds = kinds
        self.regions = regions
        self.n_spans = n_spans
        self.turns = turns  # (message, role, start, end, stop, reasoning): indices into the positions
        self.dropped = dropped
        self.empty_replies = empty_replies


_NOT_KEPT = object()


def replays_of(hit: LayoutHit) -> Replays:
    """The analyses kept for the layout of ``hit`` (made with it when needed)."""
    replays = hit.layout.replays
    if replays is None:
        replays = hit.layout.replays = Replays()
    return replays


class Replays:
    """The analyses kept for one layout (see the module docstring).

    Args:
        capacity: analyses kept (one per value states, selected messages and options).
    """

    def __init__(self, capacity: int = 4):
        self.capacity = capacity
        self.kept: dict[tuple, Any] = {}

    @staticmethod
    def key(messages: Sequence[Mapping[str, str]], selected: Sequence[bool], options: tuple,
            states: bytes | None = None) -> tuple:
        """What an analysis is kept under: the values' states (``states`` when the caller has them,
        as ``Chat.states``), the selected messages, the options."""
        return value_states(messages) if states is None else states, tuple(selected), options

    def replay(self, key: tuple, hit: LayoutHit, profile: tuple) -> tuple[
            list[tuple[int, int]], list[Turn], Segments, list[tuple[int, str]], list[int]] | None:
        """The trained spans, turns, segments, dropped data and empty replies of the conversation
        ``hit`` rendered, from the analysis kept under ``key`` (made with the same ``profile``
        objects: the template profile and stop tokens); None when there is none."""
        got = self.kept.get(key)
        if got is None or got is _NOT_KEPT or got.profile is not profile[0] or got.stops is not profile[1]:
            return None
        starts = hit.starts
        at = [starts[j] + off for j, off in zip(got.literals, got.offsets)]
        n = got.n_segments
        if got.gapless:
            ends = at[:n]
            segs = Segments(hit.text, [0, *ends[:-1]], ends, list(got.owners), list(got.kinds), list(got.regions))
            s0 = n
        else:
            segs = Segments(hit.text, at[:n], at[n:2 * n], list(got.owners), list(got.kinds), list(got.regions))
            s0 = 2 * n
        spans = [(at[i], at[i + 1]) for i in range(s0, s0 + 2 * got.n_spans, 2)]
        turns = [
            Turn(k, role, at[a], at[b], None if stop is None else (at[stop], at[stop + 1]),
                 None if reasoning is None else (at[reasoning], at[reasoning + 1]))
            for k, role, a, b, stop, reasoning in got.turns
        ]
        return spans, turns, segs, list(got.dropped), list(got.empty_replies)

    def keep(self, key: tuple, hit: LayoutHit, profile: tuple, selected: Sequence[bool], reads: Sequence[str],
             spans: Sequence[tuple[int, int]], turns: Sequence[Turn], segs: Segments,
             dropped: Sequence[tuple[int, str]], empty_replies: Sequence[int]) -> None:
        """Keep the analysis of the conversation ``hit`` rendered under ``key``, unless a step that
        may read a value ran (``reads``, from ``find_turns``), a selected message is not covered by
        a turn (the attribution check read its content), or a position lies inside a value."""
        if key in self.kept:
            return
        entry: Any = _NOT_KEPT
        covered = {t.message for t in turns}
        if not reads and all(k in covered for k, chosen in enumerate(selected) if chosen):
            try:
                entry = self._relative(hit, profile, spans, turns, segs, dropped, empty_replies)
            except _Inside:
                entry = _NOT_KEPT
        keep_bounded(self.kept, key, entry, self.capacity)

    @staticmethod
    def _relative(hit: LayoutHit, profile: tuple, spans: Sequence[tuple[int, int]], turns: Sequence[Turn],
                  segs: Segments, dropped: Sequence[tuple[int, str]], empty_replies: Sequence[int]
                  ) -> _Analysis:
        starts = hit.starts
        lit_lens = hit.layout.lit_lens

        def place(p: int) -> tuple[int, int]:
            return _place(starts, lit_lens, p)

        gapless = bool(segs.starts) and segs.starts == [0, *segs.ends[:-1]]
        places = [] if gapless else [place(p) for p in segs.starts]
        places += [place(p) for p in segs.ends]
        for a, b in spans:
            places += (place(a), place(b))
        kept_turns = []
        for t in turns:
            i = len(places)
            places += (place(t.start), place(t.end))
            stop = reasoning = None
            if t.stop is not None:
                stop = len(places)
                places += (place(t.stop[0]), place(t.stop[1]))
            if t.reasoning is not None:
                reasoning = len(places)
                places += (place(t.reasoning[0]), place(t.reasoning[1]))
            kept_turns.append((t.message, t.role, i, i + 1, stop, reasoning))
        return _Analysis(profile, places, len(segs.starts), gapless, tuple(segs.owners),
                         tuple(segs.kinds), tuple(segs.regions), len(spans), tuple(kept_turns), tuple(dropped),
                         tuple(empty_replies))


class _Recorded:
    """The layout one render's own records make (see :class:`RecordedLayouts`): the lengths of
    its literals, and the analyses kept for it."""

    __slots__ = ("lit_lens", "replays")

    def __init__(self, lit_lens: list[int]):
        self.lit_lens = lit_lens
        self.replays: Replays | None = None


class RecordedLayouts:
    """Analyses kept for renders of templates that have no layout (they look at what messages
    say, so :mod:`respmask._layout` cannot prove a render from the outline): the instrumented
    render still runs, and its records are written relative to its own literals (the text
    between data pieces). Two renders with the same outline, the same literal texts, the same
    records at the same places relative to them, the same messages printed and their data pieces
    empty, blank or holding text at the same places were made by the same steps of the template
    up to the text of the data; everything the analysis computes from them (see the module
    docstring: the same argument, with the data pieces as the values) is then the same, moved,
    as long as no step read data (``find_turns(reads=...)``). At most ``capacity`` are kept, the
    oldest forgotten first.

    Args:
        capacity: record layouts kept (each with at most four analyses).
    """

    def __init__(self, capacity: int = 256):
        self.capacity = capacity
        self.kept: dict[tuple, _Recorded] = {}

    def hit(self, rendered: Rendered, outline: tuple) -> LayoutHit | None:
        """``rendered`` (the render of a conversation of ``outline``, each message's role and keys)
        as a hit of its record layout (made when new); None when a record lies inside a data
        piece."""
        text = rendered.text
        starts = [0]
        lit_lens = []
        pieces = []
        literal_text = []
        cur = 0
        for s, e, owner, kind in rendered.pieces:
            if kind == DATA:
                lit_lens.append(s - cur)
                literal_text.append(text[cur:s])
                starts.append(e)
                pieces.append((owner, EMPTY if s == e else BLANK if text[s:e].isspace() else TEXT))
                cur = e
            else:
                pieces.append((owner, -1, s - cur, e - cur))
        lit_lens.append(len(text) - cur)
        literal_text.append(text[cur:])
        records: list[tuple[int, ...]] = []
        try:
            j = 0  # owner events come in output order: walk the literals along
            last = len(starts) - 1
            for p, o in rendered.owner_events:
                while j < last and starts[j + 1] <= p:
                    j += 1
                off = p - starts[j]
                if off > lit_lens[j]:
                    raise _Inside(p)
                records.append((j, off, o))
            if rendered.generation_blocks or rendered.reasoning:
                records.append((-1,))
                records += [(*_place(starts, lit_lens, a), *_place(starts, lit_lens, b), o)
                            for a, b, o in rendered.generation_blocks]
                records.append((-2,))
                records += [(*_place(starts, lit_lens, a), *_place(starts, lit_lens, b), o)
                            for a, b, o in rendered.reasoning]
        except _Inside:
            return None
        # the literals' texts as one string and their lengths: the same literals, compared at once
        key = (outline, "".join(literal_text), tuple(lit_lens), tuple(pieces), tuple(records),
               frozenset(rendered.printed))
        layout = self.kept.get(key)
        if layout is None:
            layout = _Recorded(lit_lens)
            keep_bounded(self.kept, key, layout, self.capacity)
        return LayoutHit(layout, text, starts, [])  # type: ignore[arg-type]
