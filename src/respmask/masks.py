"""Character spans to token masks, with the Rust tokenizer's offsets and NumPy.

A token is trained when any of its characters lies in a span: the rule transformers uses for
``return_assistant_tokens_mask``. Only span edges are looked up (``char_to_token``); the mask
itself is a boundary array and a cumulative sum, so no Python loop runs over tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

IGNORE_INDEX = -100


def _first_token(encoding: Any, a: int, b: int) -> int | None:
    for pos in range(a, b):
        t = encoding.char_to_token(pos)
        if t is not None:
            return t
    return None


def _last_token(encoding: Any, a: int, b: int) -> int | None:
    for pos in range(b - 1, a - 1, -1):
        t = encoding.char_to_token(pos)
        if t is not None:
            return t
    return None


def token_ranges(encoding: Any, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """``[first, last]`` token index pairs (inclusive) covering each character span."""
    out = []
    for a, b in spans:
        first = _first_token(encoding, a, b)
        if first is None:
            continue
        last = _last_token(encoding, a, b)
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
