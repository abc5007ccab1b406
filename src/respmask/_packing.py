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

from ._errors import warn
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
    """Pack tokenized rows into rows of at most ``max_length`` tokens (best-fit decreasing).

    Each packed row keeps every sample's tokens and labels, with ``position_ids`` restarting at
    each sample and -100 on each sample's first label, so that a padding-free collator
    (``ResponseOnlyCollator(tok, padding_free=True)``) trains every sample as if it were alone.

    Args:
        rows: tokenized samples, each with ``input_ids`` and ``labels`` (lists or arrays), as
            :class:`respmask.Pretokenizer` or ``respmask tokenize`` writes them.
        max_length: the token budget of a packed row. A longer sample is truncated to its first
            ``max_length`` tokens (counted in ``cut``; :class:`Packer` warns about it). Truncate
            beforehand (``Pretokenizer(tok, max_length=..., truncation=...)``) to choose the side.

    Returns:
        ``(packed, cut)``: the packed rows (dicts of int64 arrays ``input_ids``, ``labels``,
        ``position_ids`` and ``lengths``, the length of each sample in the row; and ``index``,
        each sample's own ``index`` in the order of ``lengths``, when every row carries an integer
        ``index``, so that a packed row says which rows it holds) and how many samples were
        truncated to ``max_length``. Empty samples are dropped.

    Raises:
        ValueError: ``max_length`` is not positive.

    Example:
        >>> rows = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4, 5], "labels": [-100, 5]}]
        >>> packed, cut = pack(rows, max_length=8)
        >>> packed[0]["position_ids"].tolist(), packed[0]["labels"].tolist(), cut
        ([0, 1, 2, 0, 1], [-100, 2, 3, -100, 5], 0)
    """
    if max_length < 1:
        raise ValueError(f"max_length must be positive, got {max_length}")
    ids = [np.asarray(r["input_ids"], dtype=np.int64)[:max_length] for r in rows]
    labels = [np.asarray(r["labels"], dtype=np.int64)[:max_length] for r in rows]
    cut = sum(1 for r in rows if len(r["input_ids"]) > max_length)
    keep = [i for i, x in enumerate(ids) if len(x)]
    indexed = bool(rows) and all(isinstance(r.get("index"), (int, np.integer)) and not isinstance(r.get("index"), bool)
                                 for r in rows)
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
        if indexed:
            out[-1]["index"] = np.array([rows[i]["index"] for i in members], dtype=np.int64)
    return out, cut


class Packer:
    """A batch transform that packs pre-tokenized rows (``Dataset.map(batched=True)``).

    Packing happens within each map batch (use a large ``batch_size``, e.g. 10_000): the output
    has fewer rows than the input, so pass ``remove_columns=ds.column_names``. Calling it on a
    batch returns columns ``input_ids``, ``labels``, ``position_ids`` and ``lengths`` (int32), as
    :func:`respmask.pack` makes them.

    A sample longer than ``max_length`` is truncated to its first ``max_length`` tokens, with a
    :class:`respmask.RespmaskWarning` per batch saying how many samples, tokens and trained tokens
    were cut (and which samples then train no token). Truncate beforehand
    (``Pretokenizer(tok, max_length=..., truncation=...)``) to choose the side and silence it.

    Args:
        max_length: the token budget of a packed row.

    Raises:
        ValueError: ``max_length`` is not positive.

    Example:
        >>> packed = tokenized.map(Packer(8192), batched=True, batch_size=10_000,
        ...                        remove_columns=tokenized.column_names)  # doctest: +SKIP
        >>> Packer(8)({"input_ids": [[1, 2, 3], [4, 5]], "labels": [[-100, 2, 3], [-100, 5]]})["lengths"]
        [array([3, 2], dtype=int32)]
    """

    def __init__(self, max_length: int):
        if max_length < 1:
            raise ValueError(f"max_length must be positive, got {max_length}")
        self.max_length = max_length

    def __call__(self, batch: Mapping[str, Sequence[Any]]) -> dict[str, list]:
        n = len(batch["input_ids"])
        rows = [{"input_ids": to_python(batch["input_ids"][i]), "labels": to_python(batch["labels"][i])}
                for i in range(n)]
        packed, cut = pack(rows, self.max_length)
        if cut:
            warn(_cut_warning(rows, self.max_length))
        return {k: [p[k].astype(np.int32) for p in packed] for k in ("input_ids", "labels", "position_ids", "lengths")}


def _cut_warning(rows: Sequence[Mapping[str, Any]], max_length: int) -> str:
    """What truncating ``rows`` to ``max_length`` tokens cuts, in the collator's terms: the
    samples (their positions in the batch), the tokens and trained tokens cut, and the samples
    left with no trained token."""
    long, tokens, trained, emptied = [], 0, 0, []
    for j, r in enumerate(rows):
        labels = np.asarray(r["labels"])
        if len(labels) <= max_length:
            continue
        long.append(j)
        tokens += len(labels) - max_length
        lost = int((labels[max_length:] != IGNORE_INDEX).sum())
        trained += lost
        if lost and not (labels[:max_length] != IGNORE_INDEX).any():
            emptied.append(j)

    def some(xs: list[int]) -> str:
        return ", ".join(map(str, xs[:8])) + (" ..." if len(xs) > 8 else "")

    return (f"respmask: Packer({max_length}): {len(long)} of {len(rows)} samples in this batch "
            f"({'rows' if len(long) > 1 else 'row'} {some(long)}) are "
            f"longer than max_length={max_length} and were truncated to their first {max_length} tokens: {tokens} "
            f"token(s) cut, {trained} of them trained"
            + (f"; {len(emptied)} of them now train no token, their loss is NaN or missing "
               f"({'rows' if len(emptied) > 1 else 'row'} {some(emptied)})"
               if emptied else "")
            + ". Raise max_length, or truncate before packing, from the side you choose: respmask.Pretokenizer(tok, "
            "max_length=..., truncation='right' or 'left') (respmask.check(dataset, tok, max_length=...) counts "
            "what it cuts)")


def padding_stats(lengths: Sequence[int], batch_size: int, max_length: int) -> dict[str, float]:
    """How much padding packing saves on a mix of sample lengths.

    Args:
        lengths: the token count of every sample, in dataset order.
        batch_size: samples per batch when batching in order and padding to the longest.
        max_length: the truncation length, and the token budget of a packed row.

    Returns:
        ``tokens`` (after truncation), ``padded_batch_tokens`` and ``padding_fraction_padded``
        (batches padded to their longest sample), ``packed_rows`` and
        ``padding_fraction_packed_rows`` (rows of ``max_length`` packed best-fit decreasing).

    Example:
        >>> stats = padding_stats([100, 900, 120, 880], batch_size=2, max_length=1024)
        >>> round(stats["padding_fraction_padded"], 3), stats["packed_rows"]
        (0.438, 2)
    """
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
