"""The step every front-end shares after the masker: a batch of samples in, training rows out.

The collator pads the rows, the Pretokenizer writes them as columns (``respmask tokenize`` runs
it inside the data engine), ``check`` counts them and ``preview`` shows one. What they all need
is computed here once: the ids and labels cut to ``max_length``, how many tokens train, and, for
a row that cannot train right, why and what to do, in one wording. A batch that raises is, on
request, encoded again one sample at a time so that every bad sample is found, not just the
first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ._errors import RespmaskError
from ._masker import ChatMasker, Encoded
from ._masks import IGNORE_INDEX

OnError = Literal["raise", "collect"]

# what a row whose labels train every token (the prompt too) means, and how to fix it
EVERY_TOKEN_TRAINED = (
    "labels on every token (the prompt is trained too): the 'labels' were made before respmask saw them, "
    "typically by TRL's SFTTrainer preparing the dataset itself. Pass SFTConfig(remove_unused_columns=False, "
    "dataset_kwargs={'skip_prepare_dataset': True}) so the raw 'messages' reach the collator, or pre-tokenize "
    "with respmask.Pretokenizer"
)


@dataclass
class TrainingRow:
    """One row to train on, or the error of the sample it came from.

    ``input_ids`` / ``labels`` / ``position_ids`` are cut to ``max_length``; ``encoded`` keeps
    the uncut row and what the masker found (turns, data the template leaves out ...).
    """

    sample: int  # the position of its sample in the batch
    index: int  # the sample's index as the caller numbers it (its dataset row)
    encoded: Encoded | None  # None when the sample raised
    error: RespmaskError | None = None
    input_ids: np.ndarray | None = None
    labels: np.ndarray | None = None
    position_ids: np.ndarray | None = None  # packed rows only
    truncated: bool = False
    trained: int = 0  # trained tokens after truncation
    problem: str | None = None  # why its labels cannot train it right (None: they can)

    @property
    def untrainable(self) -> bool:
        """No token of the row trains (its loss would be NaN or missing)."""
        return self.error is None and self.trained == 0


def truncate(enc: Encoded, max_length: int | None, side: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, bool]:
    """``enc``'s ids, labels and position ids (packed rows) cut together to ``max_length``,
    keeping the start (``side="right"``) or the end (``"left"``); and whether anything was cut.
    ``enc`` itself is not changed."""
    ids, labels, positions = enc.input_ids, enc.labels, enc.position_ids
    if max_length is None or len(ids) <= max_length:
        return ids, labels, positions, False
    cut = slice(-max_length, None) if side == "left" else slice(0, max_length)
    return ids[cut], labels[cut], None if positions is None else positions[cut], True


def untrainable_reason(enc: Encoded, max_length: int | None = None, truncation: str = "right") -> str:
    """Why a row has no trained token, and what to do: the one wording every front-end uses."""
    if enc.n_trained:
        why = f"truncation to max_length={max_length} ({truncation}) removed all its trained tokens"
        fix = "raise max_length, or truncate from the other side"
    elif enc.turns:
        why = "its assistant turns cover no token"
        fix = "check the conversation with respmask.preview(sample, tokenizer)"
    else:
        why = "it has no trained turn (no assistant message, or every message has train=false)"
        fix = "drop such samples, or give them an assistant reply"
    return f"no trained token: {why}. The loss of such a sample is NaN or missing; {fix}"


def training_row(enc: Encoded, index: int, max_length: int | None, truncation: str) -> TrainingRow:
    """One encoded row cut to ``max_length`` and judged."""
    ids, labels, positions, cut = truncate(enc, max_length, truncation)
    trained = int(np.count_nonzero(labels != IGNORE_INDEX))
    problem = None
    if not trained:
        problem = untrainable_reason(enc, max_length, truncation)
    elif enc.text is None and enc.position_ids is None and trained == len(labels) > 1:
        problem = EVERY_TOKEN_TRAINED  # pre-tokenized rows somebody else labelled
    return TrainingRow(enc.sample, index, enc, None, ids, labels, positions, cut, trained, problem)


def encode_rows(
    masker: ChatMasker,
    samples: Sequence[Any],
    indices: Sequence[int] | None = None,
    *,
    max_length: int | None = None,
    truncation: str = "right",
    on_error: OnError = "raise",
    return_tensors: str = "np",
) -> tuple[dict[str, Any] | None, list[TrainingRow]]:
    """Encode a batch into training rows (several per sample when the masker splits).

    Args:
        masker: the masker (a processor masker runs the processor on the batch).
        samples: rows in any format the masker reads.
        indices: how to number the samples in errors (default: their positions).
        max_length, truncation: cut each row's ids and labels together.
        on_error: ``"raise"`` the first bad sample's error (it names the sample), or
            ``"collect"``: encode the batch again one sample at a time and give each bad sample
            one row holding its error.
        return_tensors: for a processor, the type of the processor's batch.

    Returns:
        The processor's batch (None without a processor; None too when ``on_error="collect"``
        had to fall back to one sample at a time) and the rows, in sample order.

    Raises:
        RespmaskError: with ``on_error="raise"``, the first bad sample.
    """
    samples = list(samples)
    positions = list(indices) if indices is not None else list(range(len(samples)))

    def encode(batch: list[Any], where: list[int]) -> tuple[dict[str, Any] | None, list[Encoded]]:
        if masker.processor is not None:  # images expanded by the processor, as the model sees them
            return masker.process_batch(batch, where, return_tensors=return_tensors)
        return None, masker.encode_batch(batch, where)

    try:
        processed, encoded = encode(samples, positions)
        return processed, [training_row(e, positions[e.sample], max_length, truncation) for e in encoded]
    except RespmaskError:
        if on_error == "raise":
            raise
    rows: list[TrainingRow] = []  # find every bad sample, not just the first
    for j, (sample, index) in enumerate(zip(samples, positions)):
        try:
            for e in encode([sample], [index])[1]:
                e.sample = j
                rows.append(training_row(e, index, max_length, truncation))
        except RespmaskError as exc:
            rows.append(TrainingRow(j, index, None, exc))
    return None, rows
