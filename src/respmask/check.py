"""Inspect a dataset before training: what would be trained, and what would go wrong."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .collator import truncate
from .errors import RespmaskError
from .masker import ChatMasker
from .masks import IGNORE_INDEX
from .spans import DROPPED_REASONING


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
    # (sample, message, what) of data the chat template leaves out of the render
    dropped: list[tuple[int, int, str]] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)

    @property
    def trained_fraction(self) -> float:
        return self.trained_tokens / self.tokens if self.tokens else 0.0

    @property
    def ok(self) -> bool:
        """No sample raised, every sample has a trained token, and the template drops no data but
        earlier turns' reasoning (which templates such as Qwen3's leave out by design)."""
        return not self.errors and not self.untrainable and not any(w != DROPPED_REASONING for _, _, w in self.dropped)

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
        if self.dropped:
            lost = [d for d in self.dropped if d[2] != DROPPED_REASONING]
            reasoning = [d[:2] for d in self.dropped if d[2] == DROPPED_REASONING]
            if lost:
                lines.append(f"data the chat template leaves out: {len(lost)} message(s)")
                groups: dict[str, list[tuple[int, int]]] = {}
                for sample, message, what in lost:
                    groups.setdefault(what.split(" (role")[0], []).append((sample, message))
                for what, where in groups.items():
                    lines.append(f"  {what}: {len(where)}  [sample, message: {some(where)}]")
            if reasoning:
                lines.append(f"reasoning the template leaves out (earlier turns): {len(reasoning)} message(s)"
                             f"  [sample, message: {some(reasoning)}]")
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
            report.dropped.extend((index, message, what) for message, what in enc.dropped)
            for t in enc.turns:
                if t.stop is None:
                    report.turns_without_stop.append((index, t.message))
        batch.clear()

    for index, sample in enumerate(samples):
        batch.append((index, sample))
        if len(batch) >= batch_size:
            flush()
    flush()
    return report


@dataclass
class Problem:
    """Something that would break or silently spoil training, with its cause and fix."""

    what: str
    cause: str
    fix: str

    def __str__(self) -> str:
        return f"- {self.what}\n  cause: {self.cause}\n  fix:   {self.fix}"


@dataclass
class TrainerReport:
    """What ``check_trainer`` found in the batches a Trainer would train on."""

    batches: int = 0
    samples: int = 0
    trained_tokens: int = 0
    tokens: int = 0
    problems: list[Problem] = field(default_factory=list)
    dataset: CheckReport | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        lines = [f"checked {self.batches} batch(es), {self.samples} samples, "
                 f"{self.trained_tokens}/{self.tokens} tokens trained"]
        if self.dataset is not None:
            lines += ["dataset (respmask):", "  " + str(self.dataset).replace("\n", "\n  ")]
        lines += [str(p) for p in self.problems] or ["no problems found"]
        return "\n".join(lines)


_LOSS_ERROR = '"The model did not return a loss from the inputs, only the following keys: logits"'


def check_trainer(trainer: Any, batches: int = 2) -> TrainerReport:
    """Inspect what a ``transformers.Trainer`` would feed its model, before training starts.

    Builds the Trainer's own train DataLoader (so column removal and the data collator run
    exactly as in training) and reports: columns removed before they reach the collator, batches
    without ``labels`` (the cause of the "did not return a loss" error), samples or batches whose
    labels are all -100 (NaN or zero loss), and, when the collator is respmask's, its dataset
    report (untrainable, truncated, turns without a trained stop token).
    """
    from .collator import ResponseOnlyCollator
    from .errors import MissingColumnsError

    report = TrainerReport()
    collator = getattr(trainer, "data_collator", None)
    args = getattr(trainer, "args", None)
    remove = bool(getattr(args, "remove_unused_columns", False))
    dataset = getattr(trainer, "train_dataset", None)
    columns = list(getattr(dataset, "column_names", None) or [])

    if isinstance(collator, ResponseOnlyCollator) and dataset is not None and hasattr(dataset, "__getitem__"):
        try:
            n = min(len(dataset), 256)
            sample_rows = [dataset[i] for i in range(n)]
            report.dataset = check(sample_rows, masker=collator.masker, max_length=collator.max_length,
                                   truncation=collator.truncation)
        except Exception:  # the batches below tell what is wrong
            report.dataset = None

    try:
        loader = trainer.get_train_dataloader()
        it = iter(loader)
        for _ in range(batches):
            try:
                batch = next(it)
            except StopIteration:
                break
            _inspect_batch(batch, report, collator)
    except MissingColumnsError as exc:
        report.problems.append(Problem(
            "the data collator received samples without the columns it needs",
            f"Trainer(remove_unused_columns={remove}) dropped every column the model's forward() does not "
            f"take before batching{f' (dataset columns: {columns})' if columns else ''}; respmask said: {exc.problem}",
            "set TrainingArguments(remove_unused_columns=False), or pre-tokenize: "
            "ds.map(respmask.Pretokenizer(tok), batched=True, remove_columns=ds.column_names)",
        ))
    except ValueError as exc:
        if "No columns in the dataset match" in str(exc):
            report.problems.append(Problem(
                "Trainer removes every dataset column before batching",
                f"remove_unused_columns=True and none of the columns {columns} is an argument of the model's "
                "forward(), so nothing reaches the collator",
                "set TrainingArguments(remove_unused_columns=False) to keep 'messages' for "
                "ResponseOnlyCollator, or pre-tokenize with respmask.Pretokenizer",
            ))
        else:
            report.problems.append(Problem("building a batch failed", f"{type(exc).__name__}: {exc}",
                                           "see the error above"))
    except Exception as exc:  # noqa: BLE001 - report whatever the pipeline raises
        report.problems.append(Problem("building a batch failed", f"{type(exc).__name__}: {exc}",
                                       "see the error above"))
    if report.dataset is not None and report.dataset.untrainable:
        report.problems.append(Problem(
            f"{len(report.dataset.untrainable)} sample(s) have no trained token "
            f"(indices {report.dataset.untrainable[:8]})",
            "no assistant reply, every message train=false, or truncation removed the reply",
            "drop those samples, raise max_length, or truncate from the left",
        ))
    if report.dataset is not None and report.dataset.turns_without_stop:
        report.problems.append(Problem(
            f"{len(report.dataset.turns_without_stop)} trained turn(s) have no stop token",
            "the chat template closes those turns with nothing the tokenizer knows ends generation",
            "pass stop_tokens=[...] (the model's generation_config eos tokens), or the model may not learn to stop",
        ))
    return report


def _inspect_batch(batch: Mapping[str, Any], report: TrainerReport, collator: Any) -> None:
    import numpy as np

    report.batches += 1
    if "labels" not in batch or batch["labels"] is None:
        name = type(collator).__name__
        report.problems.append(Problem(
            f"batches have no 'labels' (keys: {sorted(batch.keys())}): the model returns only logits and "
            f"Trainer raises {_LOSS_ERROR}",
            f"the data collator ({name}) does not create labels"
            + (" - DataCollatorForSeq2Seq/DataCollatorWithPadding only pad labels that already exist" if name in (
                "DataCollatorForSeq2Seq", "DataCollatorWithPadding", "DefaultDataCollator") else ""),
            "use data_collator=respmask.ResponseOnlyCollator(tokenizer), which always returns labels",
        ))
        return
    labels = np.asarray(batch["labels"].detach().cpu() if hasattr(batch["labels"], "detach") else batch["labels"])
    labels = labels.reshape(len(labels), -1) if labels.ndim > 1 else labels.reshape(1, -1)
    trained = labels != IGNORE_INDEX
    report.samples += labels.shape[0]
    report.tokens += int(labels.size)
    report.trained_tokens += int(trained.sum())
    ids = batch.get("input_ids")
    if ids is not None:
        ids = np.asarray(ids.detach().cpu() if hasattr(ids, "detach") else ids).reshape(labels.shape)
        mask = batch.get("attention_mask")
        real = (np.asarray(mask.detach().cpu() if hasattr(mask, "detach") else mask).reshape(labels.shape) == 1
                if mask is not None else np.ones(labels.shape, dtype=bool))
        # rows whose every real token is trained with itself as the label: labels copied from input_ids
        copied = ((labels == ids) | ~real).all(axis=1) & (real.sum(axis=1) > 1)
        title = "samples reach the model with labels on every token (prompts are trained)"
        if copied.any() and not any(p.what.startswith(title) for p in report.problems):
            report.problems.append(Problem(
                f"{title}: {int(copied.sum())} of {len(copied)} in batch {report.batches - 1}",
                "the dataset was tokenized before the collator, with labels = input_ids (TRL's SFTTrainer "
                "prepares the dataset itself unless told not to, and Trainer then drops 'messages'); a collator "
                "that only pads keeps those labels",
                "SFTConfig(remove_unused_columns=False, dataset_kwargs={'skip_prepare_dataset': True}) with "
                "respmask.ResponseOnlyCollator, or pre-tokenize with respmask.Pretokenizer",
            ))
    if not trained.any():
        report.problems.append(Problem(
            f"batch {report.batches - 1}: every label is -100: the loss is NaN (or 0)",
            "masking or truncation left no trained token in any sample of the batch",
            "check the samples with respmask.preview / respmask check; raise max_length",
        ))
