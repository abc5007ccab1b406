"""Character spans to token masks, with the Rust tokenizer's offsets and NumPy.

A token is trained when any of its characters lies in a span: the rule transformers uses for
``return_assistant_tokens_mask`` (here exact even for characters split over several byte
tokens). Only span edges are looked up in the encoding (at most O(log n) each); the mask itself
is a boundary array and a cumulative sum, so no Python loop runs over tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

IGNORE_INDEX = -100


def _first_ending_after(encoding: Any, n: int, pos: int) -> int:
    """Index of the first token whose characters end after ``pos`` (``n`` if none).

    A binary search over ``token_to_chars`` (O(1) per call); ``char_to_token`` scans the encoding
    from its start, which would make long conversations quadratic.
    """
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        if encoding.token_to_chars(mid)[1] > pos:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _first_starting_at(encoding: Any, n: int, pos: int) -> int:
    """Index of the first token whose characters start at or after ``pos`` (``n`` if none)."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        if encoding.token_to_chars(mid)[0] >= pos:
            hi = mid
        else:
            lo = mid + 1
    return lo


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
    """Boolean mask of length ``n_tokens`` that is True inside the inclusive token ranges."""
    delta = np.zeros(n_tokens + 1, dtype=np.int32)
    if len(ranges):
        np.add.at(delta, ranges[:, 0], 1)
        np.add.at(delta, ranges[:, 1] + 1, -1)
    return np.cumsum(delta[:-1]) > 0


def labels_from_mask(input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask, input_ids, IGNORE_INDEX)
