"""Inspect a dataset before training: what would be trained, and what would go wrong."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .collator import truncate
from .errors import RespmaskError
from .masker import ChatMasker
from .masks import IGNORE_INDEX


@dataclass
class CheckReport:
    """Counts over a dataset, and the samples that need attention (by index)."""

    samples: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    turns: int = 0
    max_length: int | None = None
    untrainable: list[int] = field(default_factory=list)
    truncated: list[int] = field(default_factory=list)
    truncated_untrainable: list[int] = field(default_factory=list)
    turns_without_stop: list[tuple[int, int]] = field(default_factory=list)  # (sample, message)
    unconfirmed_headers: list[tuple[int, int]] = field(default_factory=list)  # (sample, message)
    errors: list[tuple[int, str]] = field(default_factory=list)

    @property
    def trained_fraction(self) -> float:
        return self.trained_tokens / self.tokens if self.tokens else 0.0

    @property
    def ok(self) -> bool:
        """No sample raised and every sample has at least one trained token."""
        return not self.errors and not self.untrainable

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["trained_fraction"] = self.trained_fraction
        d["ok"] = self.ok
        return d

    def __str__(self) -> str:
        def some(items: Sequence[Any], n: int = 8) -> str:
            shown = ", ".join(str(x) for x in items[:n])
            return shown + (f", ... ({len(items)} in all)" if len(items) > n else "")

        lines = [
            f"samples:            {self.samples}",
            f"tokens:             {self.tokens}",
            f"trained tokens:     {self.trained_tokens} ({100 * self.trained_fraction:.1f}%)",
            f"trained turns:      {self.turns}",
        ]
        if self.max_length is not None:
            lines.append(f"truncated to {self.max_length}: {len(self.truncated)}" + (
                f"  [{some(self.truncated)}]" if self.truncated else ""))
        lines.append(f"untrainable:        {len(self.untrainable)}" + (
            f"  [{some(self.untrainable)}]  (labels all -100: NaN or missing loss)" if self.untrainable else ""))
        if self.truncated_untrainable:
            lines.append(f"  of which by truncation: {some(self.truncated_untrainable)}")
        lines.append(f"turns without a trained stop token: {len(self.turns_without_stop)}" + (
            f"  [sample, message: {some(self.turns_without_stop)}]  (the model may not learn to stop)"
            if self.turns_without_stop else ""))
        if self.unconfirmed_headers:
            lines.append(f"turns whose header did not match the generation prompt: {some(self.unconfirmed_headers)}")
        lines.append(f"errors:             {len(self.errors)}")
        for index, message in self.errors[:8]:
            lines.append(f"  {message}" if message.startswith("sample") else f"  sample {index}: {message}")
        lines.append("OK" if self.ok else "PROBLEMS FOUND")
        return "\n".join(lines)


def check(
    samples: Iterable[Any],
    tokenizer: Any = None,
    *,
    masker: ChatMasker | None = None,
    max_length: int | None = None,
    truncation: str = "right",
    batch_size: int = 64,
    **options: Any,
) -> CheckReport:
    """Run respmask over ``samples`` and report counts and problems (nothing is raised).

    ``options`` are :class:`respmask.ChatMasker` options (``train_on``, ``template_kwargs`` ...).
    """
    if masker is None:
        if tokenizer is None:
            raise RespmaskError("check() needs a tokenizer (or a ChatMasker)")
        masker = ChatMasker(tokenizer, **options)
    report = CheckReport(max_length=max_length)
    batch: list[tuple[int, Any]] = []

    def encode_all() -> list[Any]:
        try:
            return masker.encode_batch([s for _, s in batch], [i for i, _ in batch])
        except RespmaskError:  # find every bad sample, not just the first
            out: list[Any] = []
            for index, sample in batch:
                try:
                    out.append(masker.encode_batch([sample], [index])[0])
                except RespmaskError as exc:
                    out.append(exc)
            return out

    def flush() -> None:
        for (index, _), enc in zip(batch, encode_all()):
            report.samples += 1
            if isinstance(enc, RespmaskError):
                report.errors.append((index, str(enc)))
                continue
            ids, labels, cut = truncate(enc, max_length, truncation)
            report.tokens += len(ids)
            trained = int((labels != IGNORE_INDEX).sum())
            report.trained_tokens += trained
            report.turns += enc.n_turns
            if cut:
                report.truncated.append(index)
            if not trained:
                report.untrainable.append(index)
                if cut and enc.n_trained:
                    report.truncated_untrainable.append(index)
            for t in enc.turns:
                if t.stop is None:
                    report.turns_without_stop.append((index, t.message))
                if not t.header_confirmed:
                    report.unconfirmed_headers.append((index, t.message))
        batch.clear()

    for index, sample in enumerate(samples):
        batch.append((index, sample))
        if len(batch) >= batch_size:
            flush()
    flush()
    return report


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """Samples from a JSON Lines file (one JSON object per line)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RespmaskError(f"{path}:{n}: not valid JSON ({exc.msg})") from exc
            if not isinstance(value, (Mapping, list)):
                raise RespmaskError(f"{path}:{n}: each line must be a JSON object")
            out.append(value)
    return out
