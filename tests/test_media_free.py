"""The media check a text tokenizer makes is skipped only where the reading pass proves the row has
no media (issue 27): the same refusals, in the same order, as walking every row."""

from __future__ import annotations

import copy

import pytest

from respmask import ChatMasker, SampleError
from respmask._formats import media_in
from respmask._masker import _media_free
from respmask._samples import parse
from support.tokenizers import fixture_tokenizer

PLAIN = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
IMAGE = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]},
         {"role": "assistant", "content": "hello"}]

ROWS = [
    {"messages": PLAIN},
    {"messages": PLAIN, "id": "a1", "score": 0.5, "ok": True, "n": 3, "none": None},
    PLAIN,
    tuple(PLAIN),
    {"messages": PLAIN, "images": []},
    {"messages": PLAIN, "images": ["a.png"]},
    {"messages": PLAIN, "images": "a.png"},
    {"messages": PLAIN, "videos": None},
    {"messages": PLAIN, "other": IMAGE},
    {"messages": PLAIN, "chosen_like": {"role": "user", "content": [{"type": "audio"}]}},
    {"messages": IMAGE},
    IMAGE,
    {"conversations": PLAIN},
    {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
    {"messages": [{"role": "user", "content": "hi", "train": False}, {"role": "assistant", "content": "x"}]},
    {"messages": [{"role": "user", "content": "hi", "name": None}, {"role": "assistant", "content": "x"}]},
    {"prompt": [PLAIN[0]], "completion": [PLAIN[1]]},
    {"messages": PLAIN, "tools": [{"type": "function", "function": {"name": "f"}}]},
]


@pytest.mark.parametrize("row", ROWS, ids=range(len(ROWS)))
def test_media_free_only_when_the_walk_finds_nothing(row):
    parsed = parse(copy.deepcopy(row))
    if _media_free(row, parsed):
        assert media_in(row) == {}


def test_media_free_holds_for_the_plain_rows():
    # the rows the collator sees most: the skip must apply to them, or it saves nothing
    for row in ROWS[:4]:
        assert _media_free(row, parse(row))
    assert not _media_free(ROWS[5], parse(ROWS[5]))  # an 'images' column
    assert not _media_free(ROWS[8], parse(ROWS[8]))  # another list column


@pytest.mark.parametrize("row", ROWS, ids=range(len(ROWS)))
def test_same_outcome_as_refusing_first(row):
    masker = ChatMasker(fixture_tokenizer("chatml"))
    before = copy.deepcopy(row)
    found = media_in(row)
    if found:
        with pytest.raises(SampleError, match="sample 3: holds"):
            masker.encode_batch([row], [3])
    else:
        try:
            masker.encode_batch([row], [3])
        except SampleError as exc:
            assert "holds" not in str(exc)
    assert row == before  # never modified


def test_media_error_wins_over_a_malformed_message():
    masker = ChatMasker(fixture_tokenizer("chatml"))
    row = {"messages": [*IMAGE, {"role": 5, "content": "x"}]}
    with pytest.raises(SampleError, match=r"sample 0: holds images \(1 image part\)"):
        masker.encode_batch([row])
    with pytest.raises(SampleError, match=r"holds images"):
        masker.render(row)
    row = {"messages": [{"role": 5, "content": "x"}], "images": ["a.png"]}
    with pytest.raises(SampleError, match=r"holds images \(1 item in its 'images' column\)"):
        masker.render_rows(row)
    with pytest.raises(SampleError, match="invalid role"):  # no media: the row's own error
        masker.render({"messages": [{"role": 5, "content": "x"}]})
