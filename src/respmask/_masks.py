"""Character spans to token masks, with the Rust tokenizer's offsets and NumPy.

A token is trained when any of its characters lies in a span: the rule transformers uses for
``return_assistant_tokens_mask`` (here exact even for characters split over several byte
tokens). Only span edges are looked up in the encoding (O(log n) each at worst); the mask
itself is a boundary array and a cumulative sum, so no Python loop runs over tokens.
"""

from __future__ import annotations

import array
from collections.abc import Sequence
from typing import Any

import numpy as np

IGNORE_INDEX = -100


def as_numpy(value: Any) -> np.ndarray:
    """A NumPy array from a torch tensor (on any device), an array or a list."""
    return np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)


# ``char_to_token`` scans the encoding from its start: cheap near the start, linear in the
# position. Beyond this character position a binary search over ``token_to_chars`` (O(1) per call)
# gives the starting guess instead, so long conversations stay linear overall.
_SCAN_LIMIT = 20_000


def ids_of(encodings: Sequence[Any]) -> tuple[list[np.ndarray], np.ndarray]:
    """The token ids of Rust ``Encoding`` objects as int64 arrays (views of one array) and that
    array, the batch's ids end to end.

    Each ``encoding.ids`` is a new Python list; it is packed as C unsigned ints (the tokenizer's
    ids are u32) and read by NumPy in one conversion, about 30% less than ``np.fromiter`` per row
    and a concatenation."""
    parts = [array.array("I", encoding.ids) for encoding in encodings]
    every = np.frombuffer(b"".join(parts), dtype=np.uintc).astype(np.int64)
    bounds = [0]
    for part in parts:
        bounds.append(bounds[-1] + len(part))
    return [every[bounds[i]:bounds[i + 1]] for i in range(len(parts))], every


def _guess(encoding: Any, n: int, pos: int, by_end: bool) -> int:
    """A token index at or next to the first token whose end passes ``pos`` (``by_end``) or
    whose start reaches it."""
    if pos < _SCAN_LIMIT:
        t = encoding.char_to_token(pos)
        if t is not None:
            return t
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        a, b = encoding.token_to_chars(mid)
        if (b > pos) if by_end else (a >= pos):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _first_ending_after(encoding: Any, n: int, pos: int) -> int:
    """Index of the first token whose characters end after ``pos`` (``n`` if none)."""
    t = _guess(encoding, n, pos, True)
    while t > 0 and encoding.token_to_chars(t - 1)[1] > pos:
        t -= 1
    while t < n and encoding.token_to_chars(t)[1] <= pos:
        t += 1
    return t


def _first_starting_at(encoding: Any, n: int, pos: int) -> int:
    """Index of the first token whose characters start at or after ``pos`` (``n`` if none)."""
    t = _guess(encoding, n, pos, False)
    while t > 0 and encoding.token_to_chars(t - 1)[0] >= pos:
        t -= 1
    while t < n and encoding.token_to_chars(t)[0] < pos:
        t += 1
    return t


def token_ranges(encoding: Any, spans: Sequence[tuple[int, int]], n_tokens: int | None = None) -> np.ndarray:
    """``[first, last]`` token index pairs (inclusive) of the tokens overlapping each character span.

    A token is in a span when any of its characters is (token offsets are non-decreasing).
    """
    n = len(encoding.ids) if n_tokens is None else n_tokens
    out = []
    for a, b in spans:
        first = _first_ending_after(encoding, n, a)
        if first >= n or encoding.token_to_chars(first)[0] >= b:
            continue  # no token has a character in [a, b)
        last = _first_starting_at(encoding, n, b) - 1
        if last >= first:
            out.append((first, last))
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)


def mask_from_ranges(ranges: np.ndarray, n_tokens: int) -> np.ndarray:
    """Boolean mask of length ``n_tokens`` that is True inside the inclusive token ranges
    (ranges may touch or overlap): a boundary array and a cumulative sum."""
    if not len(ranges):
        return np.zeros(n_tokens, dtype=bool)
    delta = np.bincount(ranges[:, 0], minlength=n_tokens + 1)
    delta -= np.bincount(ranges[:, 1] + 1, minlength=n_tokens + 1)
    return np.cumsum(delta[:n_tokens]) > 0


def labels_from_mask(input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask, input_ids, IGNORE_INDEX)


def labels_from_masks(rows: Sequence[np.ndarray], masks: Sequence[np.ndarray], ids: np.ndarray | None = None
                      ) -> list[np.ndarray]:
    """:func:`labels_from_mask` of each row (``rows[n]`` and ``masks[n]`` of one length: token ids,
    never negative), made in one array operation over the batch (one per row costs more at a few
    hundred tokens a row); each row's labels are an array of its own. ``ids``: the rows laid end to
    end, when the caller has them."""
    if not len(rows):
        return []
    every = np.concatenate(rows) if ids is None else ids
    # the id where trained, IGNORE_INDEX elsewhere, without a branch per element (3x np.where)
    flat = (every.astype(np.int64, copy=False) - IGNORE_INDEX) * np.concatenate(masks) + IGNORE_INDEX
    out = []
    a = 0
    for row in rows:
        b = a + len(row)
        out.append(flat[a:b].copy())
        a = b
    return out
