"""Segments and its queries, on small segment lists built by hand."""

from __future__ import annotations

from respmask._render import DATA, LITERAL, NO_OWNER, Kind, Rendered
from respmask._segments import Segments

N = NO_OWNER


def build(*pieces: tuple) -> Segments:
    """Segments from ``(text, owner, kind)`` or ``(text, owner, kind, region)`` pieces, laid end to
    end (the region defaults to the owner)."""
    text, starts, ends, owners, kinds, regions = "", [], [], [], [], []
    for piece in pieces:
        s, owner, kind = piece[:3]
        starts.append(len(text))
        text += s
        ends.append(len(text))
        owners.append(owner)
        kinds.append(kind)
        regions.append(piece[3] if len(piece) > 3 else owner)
    return Segments(text, starts, ends, owners, kinds, regions)


def chat() -> Segments:
    # 0 "<s>" | 1 "<u>" | 2 "hi" | 3 "</u>" | 4 "<a>" | 5 "" (empty value) | 6 "yo" | 7 "</a>" | 8 "\n"
    return build(
        ("<s>", N, LITERAL),
        ("<u>", 0, LITERAL),
        ("hi", 0, DATA),
        ("</u>", 0, LITERAL),
        ("<a>", 1, LITERAL),
        ("", 1, DATA),
        ("yo", 1, DATA),
        ("</a>", 1, LITERAL),
        ("\n", N, LITERAL),
    )


def test_the_hand_built_layout():
    segs = chat()
    assert segs.text == "<s><u>hi</u><a>yo</a>\n"
    assert segs.starts == [0, 3, 6, 8, 12, 15, 15, 17, 21]
    assert segs.ends == [3, 6, 8, 12, 15, 15, 17, 21, 22]


def test_kinds_are_the_integers_they_always_were():
    assert (LITERAL, DATA) == (Kind.LITERAL, Kind.DATA) == (0, 1)
    assert isinstance(DATA, int)
    segs = Segments("ab", [0, 1], [1, 2], [0, 0], [0, 1], [0, 0])  # plain ints work as kinds
    assert segs.first_data([0, 1]) == 1


def test_of_fills_template_text_and_splits_it_where_the_loop_owner_changes():
    rendered = Rendered("<u>hi</u><a>yo", owner_events=[(0, 0), (9, 1)], pieces=[(3, 5, 0, DATA), (12, 14, 1, DATA)])
    segs = Segments.of(rendered)
    assert segs.starts == [0, 3, 5, 9, 12]
    assert segs.ends == [3, 5, 9, 12, 14]
    assert segs.owners == [0, 0, 0, 1, 1]
    assert segs.kinds == [LITERAL, DATA, LITERAL, LITERAL, DATA]
    assert segs.regions == [0, 0, 0, 1, 1]


def test_of_keeps_an_empty_value_and_text_outside_every_loop():
    rendered = Rendered("<s>[]", owner_events=[(3, 0), (5, N)], pieces=[(4, 4, 0, DATA)])
    segs = Segments.of(rendered)
    assert list(zip(segs.starts, segs.ends, segs.owners, segs.kinds)) == [
        (0, 3, N, LITERAL),
        (3, 4, 0, LITERAL),
        (4, 4, 0, DATA),
        (4, 5, 0, LITERAL),
    ]


def test_index_at_a_position_inside_a_segment():
    segs = chat()
    assert segs.index_at(0) == 0
    assert segs.index_at(1) == 0
    assert segs.index_at(7) == 2
    assert segs.index_at(16) == 6


def test_index_at_a_boundary_is_the_segment_that_starts_there():
    segs = chat()
    assert segs.index_at(3) == 1
    assert segs.index_at(12) == 4
    assert segs.index_at(17) == 7
    assert segs.index_at(21) == 8


def test_index_at_an_empty_segment_is_that_segment():
    assert chat().index_at(15) == 5


def test_index_at_the_end_and_beyond_is_past_the_last_segment():
    segs = chat()
    assert segs.index_at(22) == 9
    assert segs.index_at(100) == 9
    assert Segments("", [], [], [], [], []).index_at(0) == 0


def test_first_and_last_data_count_empty_values():
    segs = chat()
    assert segs.first_data([1, 2, 3]) == 2
    assert segs.first_data([4, 5, 6, 7]) == 5
    assert segs.last_data([4, 5, 6, 7]) == 6
    assert segs.last_data([4, 5, 7]) == 5


def test_first_and_last_data_of_literal_text_only_are_none():
    segs = chat()
    assert segs.first_data([0, 1, 3]) is None
    assert segs.last_data([7, 8]) is None
    assert segs.first_data([]) is None
    assert segs.last_data([]) is None


def test_region_start_is_the_first_non_empty_or_data_segment():
    segs = chat()
    assert segs.region_start([1, 2, 3]) == 3
    assert segs.region_start([4, 5, 6, 7]) == 12
    assert segs.region_start([5, 6]) == 15  # an empty value marks where the message begins
    assert segs.region_start([]) is None


def test_region_start_skips_empty_template_text():
    segs = build(("x", N, LITERAL), ("", 1, LITERAL), ("y", N, LITERAL), ("ab", 1, DATA))
    assert segs.region_start([1, 3]) == 2
    assert segs.region_start([1]) is None


def test_has_data():
    segs = chat()
    assert not segs.has_data(0, 6)  # "<s><u>"
    assert segs.has_data(0, 7)  # reaches into "hi"
    assert segs.has_data(7, 8)  # the end of "hi"
    assert not segs.has_data(8, 15)  # "</u><a>" and the empty value at 15
    assert not segs.has_data(15, 15)
    assert segs.has_data(12, 16)
    assert not segs.has_data(17, 22)


def test_tail_ranges_merge_the_turn_text_and_text_of_nobody():
    # "</a>" (message 1's) and "\n" (nobody's) merge; the render ends there
    assert chat().tail_ranges(1, 17) == ([(17, 22)], None)


def test_tail_ranges_stop_at_the_next_message_and_say_where_it_begins():
    segs = chat()
    assert segs.tail_ranges(0, 8) == ([(8, 12)], 12)
    assert segs.tail_ranges(0, 10) == ([(10, 12)], 12)  # from inside a segment


def test_tail_ranges_step_over_an_own_empty_value_and_stop_at_own_data():
    assert chat().tail_ranges(1, 12) == ([(12, 15)], None)


def test_tail_ranges_stop_at_data_of_nobody_and_at_another_message_s_empty_value():
    segs = build(("a", 0, DATA), ("]", 0, LITERAL), ("{}", N, DATA), ("]", 0, LITERAL))
    assert segs.tail_ranges(0, 1) == ([(1, 2)], None)
    segs = build(("a", 0, DATA), ("]", 0, LITERAL), ("", 1, DATA), ("x", 1, LITERAL))
    assert segs.tail_ranges(0, 1) == ([(1, 2)], 2)


def test_tail_ranges_skip_another_message_s_empty_text():
    segs = build(("a", 0, DATA), ("]", 0, LITERAL), ("", 1, LITERAL), ("!", N, LITERAL), ("b", 1, DATA))
    assert segs.tail_ranges(0, 1) == ([(1, 3)], 3)  # "]!" goes on past it, up to message 1's "b"


def test_own_tail_end_leaves_out_trailing_whitespace_and_stops_at_anyone_else():
    segs = build(("yo", 1, DATA), ("}\n", 1, LITERAL), ("<u>", 2, LITERAL))
    assert segs.own_tail_end(1, 2) == 3
    assert chat().own_tail_end(1, 17) == 21  # "</a>", not the "\n" of nobody after it


def test_own_tail_end_without_own_text_is_where_it_started():
    segs = build(("yo", 1, DATA), ("  ", 1, LITERAL), ("<u>", 2, LITERAL))
    assert segs.own_tail_end(1, 2) == 2
    assert chat().own_tail_end(0, 12) == 12


def test_window_start_is_the_end_of_the_last_output_of_another_message():
    segs = chat()
    assert segs.window_start(1, 15) == 12
    assert segs.window_start(1, 10) == 8  # "</u>" does not end by position 10; "hi" does
    assert segs.window_start(0, 6) == 0  # only text of nobody before it


def test_by_owner_keeps_own_turn_text_and_quoted_text_only_when_there_is_nothing_else():
    segs = build(
        ("<a>", 0, LITERAL, 0),
        ("q", 1, DATA, 0),  # message 1 quoted in message 0's turn
        ("x", 0, DATA, 0),
        ("<t>", 1, LITERAL, 1),
        ("r", 1, DATA, 1),
        ("z", 2, DATA, 0),  # message 2 is only ever quoted
        ("s", 0, DATA, N),  # outside every loop: its own
        ("w", 5, DATA, N),  # no such message
        ("\n", N, LITERAL, N),
    )
    assert segs.by_owner(3) == [[0, 2, 6], [3, 4], [5]]
    assert segs.by_owner(4) == [[0, 2, 6], [3, 4], [5], []]


def test_carve_splits_a_segment_among_owners():
    segs = build(("<a>", 1, LITERAL), ("abcdef", 1, DATA, 1), ("</a>", 1, LITERAL))
    last = segs.carve(1, [(4, 5, 3), (7, 8, 3)])
    assert last == 5
    assert segs.starts == [0, 3, 4, 5, 7, 8, 9]
    assert segs.ends == [3, 4, 5, 7, 8, 9, 13]
    assert segs.owners == [1, 1, 3, 1, 3, 1, 1]
    assert segs.kinds == [LITERAL, DATA, DATA, DATA, DATA, DATA, LITERAL]
    assert segs.regions == [1, 1, 1, 1, 1, 1, 1]


def test_carve_skips_overlapping_parts_and_may_hand_over_the_whole_segment():
    segs = build(("abcd", 1, DATA))
    assert segs.carve(0, [(0, 2, 2), (1, 4, 3)]) == 1
    assert (segs.starts, segs.ends, segs.owners) == ([0, 2], [2, 4], [2, 1])
    segs = build(("x", N, LITERAL), ("abcd", 1, DATA))
    assert segs.carve(1, [(1, 5, 2)]) == 1
    assert (segs.starts, segs.ends, segs.owners) == ([0, 1], [1, 5], [N, 2])
