"""Pretokenizer: one picklable batch transform for every data engine.

Rows in any format respmask reads in, ``input_ids`` and ``labels`` out. It runs
unchanged in ``datasets.Dataset.map(batched=True, num_proc=N)``, ``IterableDataset.map``, Ray
Data's ``map_batches`` (numpy, pandas or pyarrow batches) and plain Python, so a dataset survives
``Trainer``'s removal of unused columns and the collator only pads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal
from types import MappingProxyType

import numpy as np

from ._errors import (LostDataError, SampleError, UntrainableSampleError, check_choice, check_cut_options,
                      check_max_length, warn)
from ._encode import TrainingRow, encode_rows
from ._samples import to_python
from ._spans import describe_dropped
from ._masker import masker_for
from ._options import MaskOptions
from ._media import is_processor


_ARROW_TYPES = MappingProxyType({"input_ids": "tokens", "labels": "tokens", "error": "string",
                                 "untrainable": "string", "truncated": "bool", "index": "int64",
                                 "reasoning_left_out_messages": "int64", "reasoning_left_out_tokens": "int64",
                                 "lost_data_rows": "int64", "lost_data_messages": "int64",
                                 "lost_data_tokens": "int64", "empty_replies": "int64"})


def columns_to_arrow(columns: Mapping[str, list]) -> Any:
    """A pyarrow table of the Pretokenizer's output columns, with their fixed types (token
    columns ``list<int32>``); kept columns are typed by pyarrow."""
    import pyarrow as pa

    types = {"tokens": pa.list_(pa.int32()), "string": pa.string(), "bool": pa.bool_(), "int64": pa.int64()}
    return pa.table({name: pa.array(values, type=types[_ARROW_TYPES[name]]) if name in _ARROW_TYPES
                     else pa.array(values) for name, values in columns.items()})


#: How to have dataset rows named when a batch comes without its rows' indices.
_WITH_INDICES = "with datasets.map, pass with_indices=True to have dataset rows named"


def _as_batch_position(exc: SampleError) -> SampleError:
    """``exc`` (``sample j: ...``, j a position in a batch given without indices) saying that j is
    a position in the batch, not a dataset row (``datasets.map`` numbers every batch from 0), and
    how to have the row named. Same type, ``index``, ``problem`` and cause."""
    j = exc.index
    if j is None:
        return exc
    new = type(exc).__new__(type(exc))
    SampleError.__init__(new, exc.problem, j)
    Exception.__init__(new, f"sample {j}: {exc.problem} (sample {j} is its position in this batch, "
                            f"not a dataset row: {_WITH_INDICES})")
    return new


class Pretokenizer:
    """Turn a batch of samples into ``input_ids`` and ``labels`` columns.

    Accepts the samples :class:`respmask.ResponseOnlyCollator` accepts (``messages`` plus optional
    ``tools``/``documents``/``chat_template_kwargs``, ``prompt``/``completion``, ShareGPT and
    Alpaca rows, or a layout described by ``mapping``), as a dict of
    columns (lists or numpy arrays), a pandas DataFrame or a pyarrow Table, and returns the same
    kind. Token columns are int32.

    Args:
        tokenizer: a fast tokenizer with a chat template.
        max_length, truncation: cut ids and labels together (``"right"`` keeps the start);
            ``truncation="left"`` without ``max_length`` cuts nothing and warns that it has no effect.
        on_untrainable: a sample left with no trained token is kept (``"keep"``, default: the
            collator warns about it later), dropped (``"drop"``: a batched map may shrink a batch;
            use ``remove_columns``; a ``RespmaskWarning`` per batch says how many rows were left out,
            which and why), or raises (``"raise"``).
        on_lost_data: a sample holding data the chat template leaves out of the render (tool calls
            on a template without tools, a message of a role it does not know, an empty reply that
            trains only its stop token; earlier turns' reasoning is not counted) is kept with a
            warning naming the rows (``"warn"``, default), kept silently (``"keep"``) or treated
            as a bad sample (``"reject"``: raised, or an ``error`` with ``on_error="collect"``).
        on_error: ``"raise"`` (default) stops at a bad sample with an error naming it;
            ``"collect"`` keeps going and returns an ``error`` column (empty token columns for the
            bad rows), a ``truncated`` column and an ``untrainable`` column (why a row has no
            trained token, else None), so that a pipeline can route bad rows to a rejects file and
            count truncations.
        keep_columns: input columns to pass through unchanged (an id, a source, ...).
        options: the masking options (:class:`respmask.MaskOptions`); or pass them by name
            (``train_on="last"``, ``split="auto"`` ...) as ``**changes``.

    Raises:
        TypeError: ``tokenizer`` is a processor (rows with media are made by the collator), a
            keyword is not a masking option, or a masker was passed with options.
        SampleError: (when called) a bad row with ``on_error="raise"``; ``LostDataError`` and
            ``UntrainableSampleError`` as ``on_lost_data`` / ``on_untrainable`` say.
        KeyError: (when called) no sample of a batch has a column of ``keep_columns`` (a typo
            would pass a column of None through; a sample that lacks it alone gets None).

    Example:
        >>> pre = Pretokenizer(tok, max_length=4096)
        >>> ds = ds.map(pre, batched=True, num_proc=8, remove_columns=ds.column_names)
        >>> collator = ResponseOnlyCollator(tok)   # rows with input_ids and labels: it only pads
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        options: MaskOptions | None = None,
        max_length: int | None = None,
        truncation: Literal["right", "left"] = "right",
        on_untrainable: Literal["keep", "drop", "raise"] = "keep",
        on_lost_data: Literal["warn", "keep", "reject"] = "warn",
        on_error: Literal["raise", "collect"] = "raise",
        keep_columns: Sequence[str] = (),
        **changes: Any,
    ):
        check_choice("on_untrainable", on_untrainable, ("keep", "drop", "raise"))
        check_choice("on_error", on_error, ("raise", "collect"))
        check_choice("on_lost_data", on_lost_data, ("warn", "keep", "reject"))
        check_choice("truncation", truncation, ("right", "left"))
        check_max_length(max_length)
        if is_processor(tokenizer) or getattr(tokenizer, "processor", None) is not None:
            raise TypeError(
                "the Pretokenizer takes a tokenizer: rows with images or audio need their pixels or audio features "
                "computed when the batch is made, so use ResponseOnlyCollator(processor) in the Trainer (it runs the "
                "processor and masks its ids)"
            )
        self.masker = masker_for(tokenizer, options, changes)
        check_cut_options(max_length, truncation, "truncate", False)
        self.max_length = max_length
        self.truncation = truncation
        self.on_untrainable = on_untrainable
        self.on_lost_data = on_lost_data
        self.on_error = on_error
        self.keep_columns = tuple(keep_columns)

    @property
    def features(self) -> Any:
        """``datasets.Features`` of the output, for ``Dataset.map(..., features=...)``."""
        import datasets

        f = {"input_ids": datasets.Sequence(datasets.Value("int32")),
             "labels": datasets.Sequence(datasets.Value("int32"))}
        if self.on_error == "collect":
            f["error"] = datasets.Value("string")
            f["truncated"] = datasets.Value("bool")
            f["untrainable"] = datasets.Value("string")
        if self._indexed:
            f["index"] = datasets.Value("int64")
        return datasets.Features(f)

    # -- engines ------------------------------------------------------------------------------
    def __call__(self, batch: Any, indices: Sequence[int] | None = None) -> Any:
        module = type(batch).__module__
        if module.startswith("pyarrow"):
            return self._arrow(batch, indices)
        if module.startswith("pandas"):
            import pandas as pd

            return pd.DataFrame(self.encode_rows([to_python(r) for r in batch.to_dict("records")], indices))
        columns = list(batch.keys())
        n = len(batch[columns[0]]) if columns else 0
        numpy_columns = {c for c in columns if isinstance(batch[c], np.ndarray)}
        rows = [
            {c: (to_python(batch[c][i]) if c in numpy_columns else batch[c][i]) for c in columns} for i in range(n)
        ]
        return self.encode_rows(rows, indices)

    def _arrow(self, table: Any, indices: Sequence[int] | None) -> Any:
        return columns_to_arrow(self.encode_rows(table.to_pylist(), indices))

    # -- the work -----------------------------------------------------------------------------
    def encode_rows(self, rows: Sequence[Mapping[str, Any]], indices: Sequence[int] | None = None) -> dict[str, list]:
        """Encode rows (dicts); returns the output columns (lists).

        With ``split`` a conversation may give several output rows; they carry its number in
        an ``index`` column (as do all rows with ``on_error="collect"``): its entry of ``indices``,
        else its position in this batch, which ``datasets.map`` restarts at 0 in every batch (pass
        ``with_indices=True`` for dataset rows).
        """
        return self._encode_rows(rows, indices)[0]

    def _encode_rows(self, rows: Sequence[Mapping[str, Any]],
                     indices: Sequence[int] | None = None) -> tuple[dict[str, list], list[TrainingRow]]:
        """:meth:`encode_rows`' columns, and the training row each output row came from (for
        ``respmask tokenize``'s counts of what the template leaves out).

        Without ``indices`` rows are numbered by their position in this batch, which
        ``datasets.map`` restarts at 0 in every batch: errors and warnings then say so, and how to
        have dataset rows named (``with_indices=True``), instead of naming another row."""
        if indices is not None:
            return self._encode_numbered(rows, indices)
        try:
            return self._encode_numbered(rows, None)
        except SampleError as exc:
            raise _as_batch_position(exc) from exc.__cause__

    def _encode_numbered(self, rows: Sequence[Mapping[str, Any]],
                         indices: Sequence[int] | None) -> tuple[dict[str, list], list[TrainingRow]]:
        """:meth:`_encode_rows` once the rows' numbers are settled (``indices``, else positions)."""
        _, encoded = encode_rows(self.masker, rows, indices, max_length=self.max_length, truncation=self.truncation,
                                 on_error=self.on_error)
        ids_out: list[np.ndarray] = []
        labels_out: list[np.ndarray] = []
        errors: list[str | None] = []
        truncated: list[bool] = []
        untrainable: list[str | None] = []
        kept: list[TrainingRow] = []
        empty = np.zeros(0, dtype=np.int32)
        lost: list[int] = []
        dropped: dict[str, list[int]] = {}  # why -> the rows on_untrainable="drop" left out, this batch
        rejected: set[int] = set()
        for row in encoded:
            if row.sample in rejected:
                continue  # a conversation rejected for lost data: one error row stands for all its rows
            error = row.error
            if row.encoded is not None and row.encoded.lost_data:
                if self.on_lost_data == "reject":
                    lost_data = row.encoded.lost_data
                    kinds = "; ".join(dict.fromkeys(what for _, what in lost_data))
                    error = LostDataError(
                        f"the chat template leaves out data the row holds: {kinds}. Per message: "
                        f"{describe_dropped(lost_data)}. Fix the data or the template, or keep such rows "
                        "(on_lost_data='keep'; CLI: --keep-lost-data).",
                        row.index,
                    )
                    rejected.add(row.sample)
                    if self.on_error == "raise":
                        raise error
                else:
                    lost.append(row.index)
            if error is not None:
                ids_out.append(empty)
                labels_out.append(empty)
                errors.append(str(error))
                truncated.append(False)
                untrainable.append(None)
                kept.append(row)
                continue
            assert row.input_ids is not None and row.labels is not None
            if row.untrainable and self.on_untrainable != "keep":
                if self.on_untrainable == "raise":
                    raise UntrainableSampleError(str(row.problem), row.index)
                dropped.setdefault(str(row.problem).split(". ")[0], []).append(row.index)
                continue
            ids_out.append(row.input_ids.astype(np.int32))
            labels_out.append(row.labels.astype(np.int32))
            errors.append(None)
            truncated.append(row.truncated)
            untrainable.append(row.problem if row.untrainable else None)
            kept.append(row)
        if lost and self.on_lost_data == "warn":
            some = f"{lost[:8]}{' ...' if len(lost) > 8 else ''}"
            named = (f"rows {some}" if indices is not None
                     else f"positions {some} in this batch, not dataset rows: {_WITH_INDICES}")
            warn(
                f"respmask: {len(lost)} of {len(rows)} samples in this batch ({named}) hold data the chat "
                "template leaves out of the render: it is not trained. respmask.check lists what each lost; "
                "on_lost_data='reject' rejects such rows, 'keep' silences this."
            )
        if dropped:
            warn(self._dropped_warning(dropped, len(rows), len(encoded), indices is not None))
        out: dict[str, list] = {"input_ids": ids_out, "labels": labels_out}
        if self.on_error == "collect":
            out["error"] = errors
            out["truncated"] = truncated
            out["untrainable"] = untrainable
        if self._indexed:
            out["index"] = [row.index for row in kept]
        for c in self.keep_columns:
            if kept and not any(isinstance(rows[row.sample], Mapping) and c in rows[row.sample] for row in kept):
                first = rows[kept[0].sample]  # a typo would fill the column with None silently
                raise KeyError(f"keep_columns names {c!r}, which no sample of this batch has (sample {kept[0].index}"
                               f"'s columns: {sorted(map(str, first)) if isinstance(first, Mapping) else '-'})")
            out[c] = [rows[row.sample].get(c) for row in kept]
        return out, kept

    @staticmethod
    def _dropped_warning(dropped: Mapping[str, list[int]], samples: int, made: int, indexed: bool) -> str:
        """What ``on_untrainable="drop"`` left out of a batch: how many rows, which, and why."""
        n = sum(len(who) for who in dropped.values())
        made_of = f"the {made} rows made from this batch's {samples} samples" if made != samples else \
            f"the {samples} samples in this batch"
        lines = [f"respmask: on_untrainable='drop' left out {n} of {made_of}, which have no trained token "
                 "(the output holds fewer rows than it was given):"]
        for why, who in dropped.items():
            some = f"{who[:8]}{' ...' if len(who) > 8 else ''}"
            named = f"rows {some}" if indexed else f"positions {some} in this batch"
            lines.append(f"- {len(who)} ({named}): {why}")
        if not indexed:
            lines.append(f"Positions are within this batch, not dataset rows: {_WITH_INDICES}.")
        lines.append("on_untrainable='keep' keeps them (the collator then warns about them), 'raise' stops.")
        return "\n".join(lines)

    @property
    def _indexed(self) -> bool:
        return self.masker.split != "never" or self.on_error == "collect"
