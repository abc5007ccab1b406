"""Packing: several tokenized samples per row of a fixed token budget, best-fit decreasing.

Each packed row keeps ``position_ids`` restarting at every sample and -100 at every sample's
first label, so that with ``ResponseOnlyCollator(padding_free=True)`` (or flash attention)
every sample is trained exactly as if it were alone, and none learns to predict the next one.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._masks import IGNORE_INDEX
from ._samples import to_python


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of the items in each bin: longest item first, into the bin it fills best."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    spaces: list[tuple[int, int]] = []  # (remaining space, bin), sorted
    bins: list[list[int]] = []
    for i in order:
        need = lengths[i]
        k = bisect.bisect_left(spaces, (need, -1))
        if k < len(spaces):
            space, b = spaces.pop(k)
            bins[b].append(i)
            bisect.insort(spaces, (space - need, b))
        else:
            bins.append([i])
            bisect.insort(spaces, (capacity - need, len(bins) - 1))
    return bins


def pack(rows: Sequence[Mapping[str, Any]], max_length: int) -> tuple[list[dict[str, np.ndarray]], int]:
    """Pack tokenized rows (``input_ids``, ``labels``) into rows of at most ``max_length`` tokens.

    Returns the packed rows (``input_ids``, ``labels``, ``position_ids``, ``lengths``) and the
    number of samples cut to ``max_length`` (their start is kept). Empty samples are dropped.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be positive, got {max_length}")
    ids = [np.asarray(r["input_ids"], dtype=np.int64)[:max_length] for r in rows]
    labels = [np.asarray(r["labels"], dtype=np.int64)[:max_length] for r in rows]
    cut = sum(1 for r in rows if len(r["input_ids"]) > max_length)
    keep = [i for i, x in enumerate(ids) if len(x)]
    bins = best_fit_decreasing([len(ids[i]) for i in keep], max_length)
    out = []
    for b in bins:
        members = [keep[j] for j in b]
        lengths = np.array([len(ids[i]) for i in members], dtype=np.int64)
        lab = np.concatenate([labels[i] for i in members])
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        lab[starts] = IGNORE_INDEX  # no sample learns to predict the next one's first token
        out.append({
            "input_ids": np.concatenate([ids[i] for i in members]),
            "labels": lab,
            "position_ids": np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(starts, lengths),
            "lengths": lengths,
        })
    return out, cut


class Packer:
    """A batch transform that packs pre-tokenized rows (``Dataset.map(batched=True)``).

    Packing happens within each map batch (use a large ``batch_size``, e.g. 10_000): the output
    has fewer rows than the input, so pass ``remove_columns=ds.column_names``.
    """

    def __init__(self, max_length: int):
        if max_length < 1:
            raise ValueError(f"max_length must be positive, got {max_length}")
        self.max_length = max_length

    def __call__(self, batch: Mapping[str, Sequence[Any]]) -> dict[str, list]:
        n = len(batch["input_ids"])
        rows = [{"input_ids": to_python(batch["input_ids"][i]), "labels": to_python(batch["labels"][i])}
                for i in range(n)]
        packed, _ = pack(rows, self.max_length)
        return {k: [p[k].astype(np.int32) for p in packed] for k in ("input_ids", "labels", "position_ids", "lengths")}


def padding_stats(lengths: Sequence[int], batch_size: int, max_length: int) -> dict[str, float]:
    """Share of padding when batching in order and padding to the longest, against packing."""
    lengths = [min(n, max_length) for n in lengths]
    padded = sum(max(lengths[i : i + batch_size]) * len(lengths[i : i + batch_size])
                 for i in range(0, len(lengths), batch_size))
    bins = best_fit_decreasing(lengths, max_length)
    tokens = sum(lengths)
    return {
        "tokens": tokens,
        "padded_batch_tokens": padded,
        "padding_fraction_padded": 1 - tokens / padded,
        "packed_rows": len(bins),
        "padding_fraction_packed_rows": 1 - tokens / (len(bins) * max_length),
    }
