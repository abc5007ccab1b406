"""Collating media chats in tests: a batch with the RespmaskWarnings it raised, and its real rows."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

import respmask


def collate_rows(masker: Any, rows: list, **kw: Any) -> tuple[Any, dict, list[str]]:
    """``ResponseOnlyCollator(masker, return_tensors="np", **kw)`` on ``rows``: the collator, its
    batch and the texts of the RespmaskWarnings it raised."""
    collator = respmask.ResponseOnlyCollator(masker, return_tensors="np", **kw)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch = collator(rows)
    return collator, batch, [str(w.message) for w in caught if issubclass(w.category, respmask.RespmaskWarning)]


def real_rows(batch: dict) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each row's ids and labels without its padding (by the attention mask)."""
    ids, labels = np.asarray(batch["input_ids"]), np.asarray(batch["labels"])
    real = np.asarray(batch["attention_mask"]).astype(bool)
    return [(ids[r][real[r]], labels[r][real[r]]) for r in range(len(ids))]
