"""Pretokenizer: one picklable batch transform for every data engine.

Rows in any format respmask reads in, ``input_ids`` and ``labels`` out. It runs
unchanged in ``datasets.Dataset.map(batched=True, num_proc=N)``, ``IterableDataset.map``, Ray
Data's ``map_batches`` (numpy, pandas or pyarrow batches) and plain Python, so a dataset survives
``Trainer``'s removal of unused columns and the collator only pads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from ._collator import truncate
from ._errors import LostDataError, RespmaskError, UntrainableSampleError, check_choice, check_max_length, warn
from ._formats import DataFormat, MessageMapping
from ._masker import ChatMasker, TrainOn
from ._masks import IGNORE_INDEX
from ._media import is_processor
from ._split import Split
from ._spans import describe_dropped


def to_python(value: Any) -> Any:
    """Plain Python values from the numpy arrays and scalars engines hand out (Ray, pandas)."""
    if isinstance(value, np.ndarray):
        return [to_python(v) for v in value.tolist()] if value.dtype == object else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {k: to_python(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_python(v) for v in value]
    return value


class Pretokenizer:
    """Turn a batch of samples into ``input_ids`` and ``labels`` columns.

    Accepts the samples :class:`respmask.ResponseOnlyCollator` accepts (``messages`` plus optional
    ``tools``/``documents``/``chat_template_kwargs``, ``prompt``/``completion``, ShareGPT and
    Alpaca rows, or a layout described by ``mapping``), as a dict of
    columns (lists or numpy arrays), a pandas DataFrame or a pyarrow Table, and returns the same
    kind. Token columns are int32.

    Args:
        tokenizer: a fast tokenizer with a chat template.
        max_length, truncation: cut ids and labels together (``"right"`` keeps the start).
        on_untrainable: a sample left with no trained token is kept (``"keep"``, default: the
            collator warns about it later), dropped (``"drop"``: a batched map may shrink a batch;
            use ``remove_columns``), or raises (``"raise"``).
        on_lost_data: a sample holding data the chat template leaves out of the render (tool calls
            on a template without tools, a message of a role it does not know, an empty reply that
            trains only its stop token; earlier turns' reasoning is not counted) is kept with a
            warning naming the rows (``"warn"``, default), kept silently (``"keep"``) or treated
            as a bad sample (``"reject"``: raised, or an ``error`` with ``on_error="collect"``).
        on_error: ``"raise"`` (default) stops at a bad sample with an error naming it;
            ``"collect"`` keeps going and returns an ``error`` column (empty token columns for the
            bad rows) and a ``truncated`` column, so that a pipeline can route bad rows to a
            rejects file and count truncations.
        keep_columns: input columns to pass through unchanged (an id, a source, ...).
        train_on, reasoning_in_loss, chat_template, template_kwargs, stop_tokens, data_format,
            mapping, split: see :class:`respmask.ChatMasker`.
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        max_length: int | None = None,
        truncation: Literal["right", "left"] = "right",
        on_untrainable: Literal["keep", "drop", "raise"] = "keep",
        on_lost_data: Literal["warn", "keep", "reject"] = "warn",
        on_error: Literal["raise", "collect"] = "raise",
        keep_columns: Sequence[str] = (),
        train_on: TrainOn = "all",
        reasoning_in_loss: bool = True,
        chat_template: str | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
        stop_tokens: Sequence[str] | None = None,
        data_format: DataFormat = "auto",
        mapping: MessageMapping | Mapping[str, Any] | None = None,
        split: Split = "never",
    ):
        check_choice("on_untrainable", on_untrainable, ("keep", "drop", "raise"))
        check_choice("on_error", on_error, ("raise", "collect"))
        check_choice("on_lost_data", on_lost_data, ("warn", "keep", "reject"))
        check_choice("truncation", truncation, ("right", "left"))
        check_max_length(max_length)
        if is_processor(tokenizer):
            raise TypeError(
                "the Pretokenizer takes a tokenizer: rows with images need their pixels computed when the batch is "
                "made, so use ResponseOnlyCollator(processor) in the Trainer (it runs the processor and masks its ids)"
            )
        self.masker = ChatMasker(
            tokenizer,
            chat_template=chat_template,
            template_kwargs=template_kwargs,
            train_on=train_on,
            reasoning_in_loss=reasoning_in_loss,
            stop_tokens=stop_tokens,
            data_format=data_format,
            mapping=mapping,
            split=split,
        )
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
        import pyarrow as pa

        out = self.encode_rows(table.to_pylist(), indices)
        arrays = {
            "input_ids": pa.array(out.pop("input_ids"), type=pa.list_(pa.int32())),
            "labels": pa.array(out.pop("labels"), type=pa.list_(pa.int32())),
        }
        for name, values in out.items():  # errors, truncation flags, kept columns
            arrays[name] = pa.array(values, type=pa.string()) if name == "error" else pa.array(values)
        return pa.table(arrays)

    # -- the work -----------------------------------------------------------------------------
    def encode_rows(self, rows: Sequence[Mapping[str, Any]], indices: Sequence[int] | None = None) -> dict[str, list]:
        """Encode rows (dicts); returns the output columns (lists).

        With ``split`` a conversation may give several output rows; they carry its position in
        an ``index`` column (as do all rows with ``on_error="collect"``).
        """
        positions = list(indices) if indices is not None else list(range(len(rows)))
        encoded = self._encode(rows, positions)
        ids_out: list[np.ndarray] = []
        labels_out: list[np.ndarray] = []
        errors: list[str | None] = []
        truncated: list[bool] = []
        kept: list[int] = []
        empty = np.zeros(0, dtype=np.int32)
        lost: list[int] = []
        rejected: set[int] = set()
        for j, enc in encoded:
            if j in rejected:
                continue  # a conversation rejected for lost data: one error row stands for all its rows
            if not isinstance(enc, RespmaskError) and enc.lost_data:
                if self.on_lost_data == "reject":
                    enc = LostDataError(
                        f"the chat template leaves out data it holds ({describe_dropped(enc.lost_data)}): fix the "
                        "data or the template, or keep such rows (on_lost_data='keep'; CLI: --keep-lost-data)",
                        positions[j],
                    )
                    rejected.add(j)
                    if self.on_error == "raise":
                        raise enc
                else:
                    lost.append(positions[j])
            if isinstance(enc, RespmaskError):
                ids_out.append(empty)
                labels_out.append(empty)
                errors.append(str(enc))
                truncated.append(False)
                kept.append(j)
                continue
            ids, labels, cut = truncate(enc, self.max_length, self.truncation)
            if not (labels != IGNORE_INDEX).any() and self.on_untrainable != "keep":
                if self.on_untrainable == "raise":
                    raise UntrainableSampleError(
                        "has no trained token (no assistant reply, or truncated away)", positions[j]
                    )
                continue
            ids_out.append(ids.astype(np.int32))
            labels_out.append(labels.astype(np.int32))
            errors.append(None)
            truncated.append(cut)
            kept.append(j)
        if lost and self.on_lost_data == "warn":
            warn(
                f"respmask: {len(lost)} of {len(rows)} samples in this batch (rows {lost[:8]}"
                f"{' ...' if len(lost) > 8 else ''}) hold data the chat template leaves out of the render: it is not "
                "trained. respmask.check lists what each lost; on_lost_data='reject' rejects such rows, 'keep' "
                "silences this."
            )
        out: dict[str, list] = {"input_ids": ids_out, "labels": labels_out}
        if self.on_error == "collect":
            out["error"] = errors
            out["truncated"] = truncated
        if self._indexed:
            out["index"] = [positions[j] for j in kept]
        for c in self.keep_columns:
            out[c] = [rows[j].get(c) for j in kept]
        return out

    @property
    def _indexed(self) -> bool:
        return self.masker.split != "never" or self.on_error == "collect"

    def _encode(self, rows: Sequence[Mapping[str, Any]], positions: list[int]) -> list[tuple[int, Any]]:
        """``(row position, Encoded or the error)`` for every output row, in order."""
        try:
            return [(enc.sample, enc) for enc in self.masker.encode_batch(rows, positions)]
        except RespmaskError:
            if self.on_error == "raise":
                raise
        out: list[tuple[int, Any]] = []  # find every bad row, not just the first
        for j, (row, index) in enumerate(zip(rows, positions)):
            try:
                out.extend((j, enc) for enc in self.masker.encode_batch([row], [index]))
            except RespmaskError as exc:
                out.append((j, exc))
        return out
