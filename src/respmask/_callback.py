"""A ``transformers.TrainerCallback`` that says, at the end of training, what the collator trained."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback


class CollatorSummary(TrainerCallback):
    """Print the collator's counts when training ends; warn when training starts with a length
    the collator does not apply.

    Training goes on when samples have no trained token or lose data (the collator warns per
    batch); this callback sums it up: samples and tokens trained, untrainable, truncated, holding
    data the chat template leaves out, arriving with labels on every token.

    Args:
        collator: the :class:`respmask.ResponseOnlyCollator` given to the Trainer.

    Example::

        collator = respmask.ResponseOnlyCollator(tok)
        trainer = Trainer(model, args, train_dataset=ds, data_collator=collator,
                          callbacks=[respmask.CollatorSummary(collator)])

    The counts are those of the process that runs the collator: with
    ``dataloader_num_workers > 0`` the collator runs in worker processes and this process sees
    none of them (the summary says so).

    When training starts with TRL's ``SFTConfig(max_length=N, dataset_kwargs={"skip_prepare_dataset":
    True})`` and a collator with another ``max_length`` (or none), TRL truncates nothing and the
    config's length would be silently ignored: the callback issues a :class:`respmask.RespmaskWarning`
    naming both lengths and the fix (``ResponseOnlyCollator(tok, max_length=config.max_length)``).
    """

    def __init__(self, collator: Any):
        self.collator = collator
        self.printed: str | None = None  # the last summary printed

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from ._check import _max_length_mismatch
        from ._errors import warn

        mismatch = _max_length_mismatch(args, self.collator)
        if mismatch is not None and state.is_world_process_zero:
            what, cause, fix = mismatch
            warn(f"respmask: {what}: {cause}. Fix: {fix}")

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        text = str(self.collator.stats)
        if not self.collator.stats.samples and getattr(args, "dataloader_num_workers", 0):
            text += (f" (dataloader_num_workers={args.dataloader_num_workers}: the collator ran in worker processes, "
                     "whose counts this process cannot see; run respmask check on the dataset for the totals)")
        self.printed = text
        print(text)
