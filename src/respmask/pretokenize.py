"""Pretokenizer: a picklable batch transform, ``messages`` in, ``input_ids`` and ``labels`` out.

Use it with ``datasets.Dataset.map(Pretokenizer(tok), batched=True, remove_columns=...)`` so
the dataset survives ``Trainer``'s removal of unused columns and the collator only pads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from .collator import truncate
from .errors import UntrainableSampleError
from .masker import ChatMasker, TrainOn
from .masks import IGNORE_INDEX


class Pretokenizer:
    """Turn a batch of samples (a dict of columns) into ``input_ids`` and ``labels`` columns.

    Accepts the same samples as :class:`respmask.ResponseOnlyCollator` (``messages`` plus optional
    ``tools``/``documents``/``chat_template_kwargs``, or ``prompt``/``completion``).

    Args:
        tokenizer: a fast tokenizer with a chat template.
        max_length, truncation: cut ids and labels together (``"right"`` keeps the start).
        on_untrainable: a sample left with no trained token is kept (``"keep"``, default: the
            collator warns about it later), dropped (``"drop"``; batched map may shrink a batch),
            or raises (``"raise"``).
        train_on, reasoning_in_loss, chat_template, template_kwargs, stop_tokens: see
            :class:`respmask.ChatMasker`.
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        max_length: int | None = None,
        truncation: Literal["right", "left"] = "right",
        on_untrainable: Literal["keep", "drop", "raise"] = "keep",
        train_on: TrainOn = "all",
        reasoning_in_loss: bool = True,
        chat_template: str | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
        stop_tokens: Sequence[str] | None = None,
    ):
        if on_untrainable not in ("keep", "drop", "raise"):
            raise ValueError(f"on_untrainable must be 'keep', 'drop' or 'raise', got {on_untrainable!r}")
        if truncation not in ("right", "left"):
            raise ValueError(f"truncation must be 'right' or 'left', got {truncation!r}")
        self.masker = ChatMasker(
            tokenizer,
            chat_template=chat_template,
            template_kwargs=template_kwargs,
            train_on=train_on,
            reasoning_in_loss=reasoning_in_loss,
            stop_tokens=stop_tokens,
        )
        self.max_length = max_length
        self.truncation = truncation
        self.on_untrainable = on_untrainable

    def __call__(self, batch: Mapping[str, Sequence[Any]], indices: Sequence[int] | None = None) -> dict[str, list]:
        columns = list(batch.keys())
        n = len(batch[columns[0]]) if columns else 0
        samples = [{c: batch[c][i] for c in columns} for i in range(n)]
        encoded = self.masker.encode_batch(samples, indices)
        ids_out: list[np.ndarray] = []
        labels_out: list[np.ndarray] = []
        for j, enc in enumerate(encoded):
            ids, labels, _ = truncate(enc, self.max_length, self.truncation)
            if not (labels != IGNORE_INDEX).any() and self.on_untrainable != "keep":
                index = indices[j] if indices is not None else j
                if self.on_untrainable == "raise":
                    raise UntrainableSampleError("has no trained token (no assistant reply, or truncated away)", index)
                continue
            ids_out.append(ids)
            labels_out.append(labels)
        return {"input_ids": ids_out, "labels": labels_out}
