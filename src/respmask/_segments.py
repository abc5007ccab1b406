"""Who wrote each character of a render: a sorted, gap-free list of owned, typed segments."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from ._render import DATA, LITERAL, NO_OWNER, Rendered


@dataclass
class Segments:
    """Segments ``[starts[i], ends[i])`` written by message ``owners[i]`` as ``kinds[i]``.

    Zero-length data segments are kept: they mark where an empty value (say, empty content)
    was printed.
    """

    text: str
    starts: list[int]
    ends: list[int]
    owners: list[int]
    kinds: list[int]
    # the message whose loop iteration printed each segment (NO_OWNER outside message loops): a
    # message's text printed inside another message's turn is a quotation there, not its own turn
    regions: list[int]

    @classmethod
    def of(cls, rendered: Rendered) -> Segments:
        text = rendered.text
        n = len(text)
        events = rendered.owner_events  # (position, owner), positions never decrease
        n_events = len(events)
        starts: list[int] = []
        ends: list[int] = []
        owners: list[int] = []
        kinds: list[int] = []
        regions: list[int] = []
        j = 0  # next owner event
        region = NO_OWNER  # the loop owner at the current position
        cur = 0
        for s, e, owner, kind in (*rendered.pieces, (n, n, None, None)):
            if s < cur:  # defensive: pieces are disjoint and ordered by construction
                continue
            # template text in [cur, s), split where the loop owner changes
            while j < n_events and events[j][0] <= cur:
                region = events[j][1]
                j += 1
            while cur < s:
                nxt = events[j][0] if j < n_events else n
                stop = s if s < nxt else nxt
                if stop > cur:
                    starts.append(cur)
                    ends.append(stop)
                    owners.append(region)
                    kinds.append(LITERAL)
                    regions.append(region)
                    cur = stop
                while j < n_events and events[j][0] <= cur:
                    region = events[j][1]
                    j += 1
            if owner is None:
                break
            while j < n_events and events[j][0] <= s:
                region = events[j][1]
                j += 1
            starts.append(s)
            ends.append(e)
            owners.append(owner)
            kinds.append(kind)
            regions.append(region)
            cur = e
        return cls(text, starts, ends, owners, kinds, regions)

    def by_owner(self, n_messages: int) -> list[list[int]]:
        """Segment indices of each message, in order: those it printed in its own turn (or outside
        every message's turn); all of them for a message printed only inside other turns."""
        out: list[list[int]] = [[] for _ in range(n_messages)]
        quoted: list[list[int]] = [[] for _ in range(n_messages)]
        for i, owner in enumerate(self.owners):
            if 0 <= owner < n_messages:
                region = self.regions[i]
                (out if region == owner or region == NO_OWNER else quoted)[owner].append(i)
        for k in range(n_messages):
            if not out[k] and quoted[k]:
                out[k] = quoted[k]
        return out

    def index_at(self, pos: int) -> int:
        """Index of the first segment that ends after ``pos``, or of an empty one at ``pos``
        (``len(self.starts)`` when there is none)."""
        i = bisect_left(self.ends, pos)  # segments are contiguous: ends never decrease
        ends, starts, n = self.ends, self.starts, len(self.ends)
        while i < n and ends[i] == pos and starts[i] < pos:
            i += 1
        return i

    def first_data(self, idxs: Sequence[int]) -> int | None:
        """The first of segments ``idxs`` that is data (empty or not), or None."""
        kinds = self.kinds
        for i in idxs:
            if kinds[i] == DATA:
                return i
        return None

    def last_data(self, idxs: Sequence[int]) -> int | None:
        """The last of segments ``idxs`` that is data (empty or not), or None."""
        kinds = self.kinds
        for i in reversed(idxs):
            if kinds[i] == DATA:
                return i
        return None

    def region_start(self, idxs: Sequence[int]) -> int | None:
        """Where the output of segments ``idxs`` (one message's) begins: the start of the first
        that is non-empty or data; None when there is none."""
        for i in idxs:
            if self.ends[i] > self.starts[i] or self.kinds[i] == DATA:
                return self.starts[i]
        return None

    def has_data(self, a: int, b: int) -> bool:
        """Whether non-empty data (of any message, tools or documents) lies in ``[a, b)``."""
        starts, ends, kinds, n = self.starts, self.ends, self.kinds, len(self.starts)
        i = bisect_right(ends, a)  # the first segment ending after a (segments are contiguous)
        while i < n and starts[i] < b:
            if kinds[i] == DATA and ends[i] > starts[i]:
                return True
            i += 1
        return False

    def tail_ranges(self, owner: int, after: int) -> tuple[list[tuple[int, int]], int | None]:
        """Literal text from position ``after`` that message ``owner`` (or nobody) wrote, merged
        into contiguous ranges, up to the first data (an empty value of ``owner``'s aside) or
        another message's non-empty text. Also returns where that other message's output begins
        (its data, even empty, or its text) when that is what ended the scan, else None."""
        ranges: list[tuple[int, int]] = []
        i = self.index_at(after)
        n = len(self.starts)
        next_start: int | None = None
        while i < n:
            s, e, o, kind = self.starts[i], self.ends[i], self.owners[i], self.kinds[i]
            if e <= after and not (s == e == after):
                i += 1
                continue
            if kind == DATA:
                if s == e and o == owner:
                    i += 1
                    continue
                if o != owner and o != NO_OWNER:
                    next_start = s
                break
            if o != owner and o != NO_OWNER:
                if e > s:
                    next_start = s
                    break
                i += 1
                continue
            a = max(s, after)
            if ranges and ranges[-1][1] == a:
                ranges[-1] = (ranges[-1][0], e)
            elif e > a:
                ranges.append((a, e))
            i += 1
        return ranges, next_start

    def own_tail_end(self, owner: int, after: int) -> int:
        """Where the literal text message ``owner`` wrote from ``after`` on ends, trailing
        whitespace left out: up to the first non-empty data or text of anyone else (``after``
        when there is none)."""
        end = after
        i = self.index_at(after)
        text = self.text
        while i < len(self.starts):
            s, e = self.starts[i], self.ends[i]
            if e <= after and not (s == e == after):
                i += 1
                continue
            if e > s and (self.owners[i] != owner or self.kinds[i] == DATA):
                break
            if e > s:
                body = text[max(s, after):e].rstrip()
                if body:
                    end = max(s, after) + len(body)
            i += 1
        return end

    def window_start(self, owner: int, before: int) -> int:
        """The end of the last segment before ``before`` that another message printed (0 when
        none did): where the text between the previous message and ``owner``'s begins. An empty
        value counts (its zero-length data marks where that message was printed): the window
        never reaches back over an empty message into the turn before it."""
        i = bisect_right(self.starts, before) - 1
        owners, starts, ends, kinds = self.owners, self.starts, self.ends, self.kinds
        while i >= 0:
            o = owners[i]
            if (o != owner and o != NO_OWNER and ends[i] <= before
                    and (ends[i] > starts[i] or kinds[i] == DATA)):
                return ends[i]
            i -= 1
        return 0

    def carve(self, i: int, parts: list[tuple[int, int, int]]) -> int:
        """Give sub-ranges ``(start, end, owner)`` of segment ``i`` to other owners (same kind).

        ``parts`` are sorted and inside the segment; overlapping parts are skipped. Returns the
        index of the last segment the original one became.
        """
        a, b, owner, kind = self.starts[i], self.ends[i], self.owners[i], self.kinds[i]
        pieces: list[tuple[int, int, int]] = []
        cur = a
        for s, e, o in parts:
            if s < cur:
                continue
            if s > cur:
                pieces.append((cur, s, owner))
            pieces.append((s, e, o))
            cur = e
        if cur < b:
            pieces.append((cur, b, owner))
        self.starts[i : i + 1] = [p[0] for p in pieces]
        self.ends[i : i + 1] = [p[1] for p in pieces]
        self.owners[i : i + 1] = [p[2] for p in pieces]
        self.kinds[i : i + 1] = [kind] * len(pieces)
        self.regions[i : i + 1] = [self.regions[i]] * len(pieces)
        return i + len(pieces) - 1
