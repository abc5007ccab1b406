"""Inspect a dataset before training: what would be trained, and what would go wrong."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ._encode import (
    CONTENT_PRINTED, CONTENT_PRINTED_FIX, CONTENT_PRINTED_WHY, EVERY_TOKEN_TRAINED, JOIN_TEXT_PARTS, LEFT_ALL_OUT,
    PACKED_CUT, PRETOKENIZED_UNTRAINED, PRETOKENIZED_UNTRAINED_FIX, REASONING_AGAINST_PROMPT, arrived_untrained,
    encode_rows, printed_content, reasoning_against, reasoning_against_fix, reasoning_against_why, trained_against,
)
from ._errors import (
    MissingColumnsError, RespmaskError, RespmaskWarning, SampleError, UntrainableSampleError, check_choice,
    check_cut_options, check_max_length, without_sample,
)
from ._formats import KNOWN_ROLES, mapping_hint
from ._masker import masker_for
from ._options import MaskOptions
from ._masks import IGNORE_INDEX, as_numpy
from ._media_cut import ON_IMAGE_CUT
from ._spans import DROPPED_DOCUMENTS, DROPPED_REASONING, DROPPED_TOOLS, NO_MESSAGE


def _some(items: Sequence[Any], n: int = 8) -> str:
    """The first ``n`` items, and how many there are in all."""
    shown = ", ".join(str(x) for x in items[:n])
    return shown + (f", ... ({len(items)} in all)" if len(items) > n else "")


@dataclass
class CheckReport:
    """Counts over a dataset, and the samples that need attention (by index).

    Returned by :func:`respmask.check`; ``print(report.summary())`` shows it as text and
    ``report.to_dict()`` as JSON-ready data.

    Attributes:
        samples: samples read (a line that is not JSON counts, as an error).
        rows: training rows they give (more than ``samples`` when ``split`` splits).
        tokens, trained_tokens: tokens of all rows (after truncation) and of them trained.
        turns: trained assistant turns found that keep a trained token after truncation to
            ``max_length`` (all of them without it), as the collator counts them.
        max_length: the truncation length checked against, if any.
        untrainable: samples with no trained token (their loss would be NaN or missing): with
            ``split``, the samples a row of which has none; ``untrainable_rows`` counts those rows
            (as ``respmask tokenize --split`` counts its untrainable rows).
        truncated: samples longer than ``max_length``; ``truncated_untrainable`` those that
            truncation leaves with no trained token; ``truncated_trained_tokens`` the trained
            tokens it cuts away.
        pretokenized_untrainable: untrainable samples that arrived pre-tokenized with every label
            -100 (their labels were made before respmask saw them, e.g. by a ``max_length`` cut
            when they were pre-tokenized: they hold no messages to fix).
        every_token_trained: samples that arrived pre-tokenized with a label on every token (no
            masking was applied: the prompt is trained too), as the collator warns about them.
        pretokenized: samples that arrived pre-tokenized (``input_ids`` with ``labels`` or
            ``assistant_masks``): trained on their own labels, nothing rendered.
        packed_rows, packed_samples: of those, the packed rows (carrying ``position_ids``) and
            the samples they hold (one per position 0). A packed row counts once in ``samples``
            and every other count: the counts are per dataset row.
        options_unused: the masking options given (by name) that only apply to rows respmask
            renders, when pre-tokenized samples were checked: those options did nothing to them.
        content_printed: ``(sample, message, role)`` of messages whose content is a list of parts
            that the chat template prints as the list itself (its Python repr, ``[{'type': 'text',
            'text': ...}]``: a template that only prints strings, as Llama 3.1's), so that repr is
            what the model reads and, in a reply, is trained on.
        reasoning_against_prompt: ``(sample, message)`` of trained replies holding reasoning that
            the template kwargs contradict: under them the generation prompt the model reads at
            inference is not what precedes such a reply in the training text (Qwen3's
            ``enable_thinking=False`` ends the prompt in an empty reasoning block, yet renders a
            reply's reasoning: it is trained after a prompt neither mode writes); ``reasoning_prompt``
            says how (``kwargs``, ``prompt`` with them, ``prompt_without`` them), learned by probe
            renders.
        stop_tokens_unused: ``(stop, occurs, close)`` of each ``stop_tokens`` entry that ends no
            trained turn of the checked samples (a typo such as ``"<|im_ned|>"`` never matches):
            whether it occurs anywhere in their rendered text, and the close spellings (the
            tokenizer's special tokens and the stop tokens that did end turns) it may stand for.
        images_dropped: with a processor, images truncation cuts away (with the text around
            them: an image's tokens are never separated from its pixels); ``image_cut`` the
            samples that lose images; ``left_out`` the samples ``on_image_cut="drop"``
            leaves out instead (not counted in ``tokens``).
        audio_dropped: with a processor, audio clips truncation cuts away (with the text around
            them, as images); ``audio_cut`` the samples that lose audio; ``audio_left_out`` how
            many of the samples left out would have lost audio.
        turns_without_stop: ``(sample, message)`` of turns whose stop token is not trained.
        dropped: ``(sample, message, what)`` of data the chat template leaves out of the
            render, one entry per message and kind of data (``"tool calls (only its header and
            stop token are rendered ...)"``, ``"the whole message (role 'wizard')"``; message -1:
            the sample's ``tools`` or ``documents``, which a template without tool or document
            support does not render);
            ``dropped_tokens`` their tokens, ``dropped_reasoning_tokens`` of which earlier turns'
            reasoning (left out by design by Qwen3-style templates).
        empty_replies: ``(sample, message)`` of assistant replies that hold nothing: only their
            stop token is trained (the model learns to answer with nothing there); listed, not a
            problem.
        errors: ``(sample, message)`` of samples that could not be used.
        lengths: tokens per sample before truncation.
    """

    samples: int = 0
    rows: int = 0  # rows trained (more than samples when split="auto"/"turns" splits conversations)
    tokens: int = 0
    trained_tokens: int = 0
    turns: int = 0
    max_length: int | None = None
    untrainable: list[int] = field(default_factory=list)
    untrainable_rows: int = 0  # rows with no trained token (more than len(untrainable) when split)
    truncated: list[int] = field(default_factory=list)
    truncated_untrainable: list[int] = field(default_factory=list)
    truncated_trained_tokens: int = 0  # trained tokens that truncation to max_length cuts away
    pretokenized_untrainable: list[int] = field(default_factory=list)  # arrived pre-tokenized, labels all -100
    every_token_trained: list[int] = field(default_factory=list)  # arrived pre-tokenized, every token labelled
    pretokenized: int = 0  # samples that arrived pre-tokenized (nothing rendered: their own labels train)
    packed_rows: int = 0  # pre-tokenized rows carrying position_ids (several samples each)
    packed_samples: int = 0  # the samples those packed rows hold
    options_unused: list[str] = field(default_factory=list)  # options given that do nothing to pre-tokenized rows
    # (sample, message, role) of content part lists the template prints as their repr (trained as text)
    content_printed: list[tuple[int, int, str]] = field(default_factory=list)
    # (sample, message) of replies whose reasoning the template kwargs render against the generation prompt
    reasoning_against_prompt: list[tuple[int, int]] = field(default_factory=list)
    reasoning_prompt: dict[str, Any] = field(default_factory=dict)  # kwargs, prompt, prompt_without
    # (stop, occurs in the rendered text, close spellings) of stop_tokens entries that end no trained turn
    stop_tokens_unused: list[tuple[str, bool, list[str]]] = field(default_factory=list)
    images_dropped: int = 0  # images truncation cuts away (a processor's rows)
    image_cut: list[int] = field(default_factory=list)  # samples truncation cuts images from
    left_out: list[int] = field(default_factory=list)  # samples on_image_cut="drop" leaves out
    turns_without_stop: list[tuple[int, int]] = field(default_factory=list)  # (sample, message)
    # (sample, message, what) of data the chat template leaves out of the render
    dropped: list[tuple[int, int, str]] = field(default_factory=list)
    dropped_tokens: int = 0  # tokens of the data the template leaves out, lost data and reasoning alike
    dropped_reasoning_tokens: int = 0  # of which earlier turns' reasoning
    # (sample, message) of empty replies: they hold nothing, so only their stop token trains (no data lost)
    empty_replies: list[tuple[int, int]] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list, repr=False)  # tokens per sample, before truncation
    audio_dropped: int = 0  # audio clips truncation cuts away (a processor's rows)
    audio_cut: list[int] = field(default_factory=list)  # samples truncation cuts audio from
    audio_left_out: int = 0  # of the samples left out, those that would have lost audio

    @property
    def trained_fraction(self) -> float:
        return self.trained_tokens / self.tokens if self.tokens else 0.0

    @property
    def ok(self) -> bool:
        """No sample raised, every sample has a trained token, no pre-tokenized sample trains every
        token, the template prints no content list as its repr, and it drops no data but earlier
        turns' reasoning (which templates such as Qwen3's leave out by design)."""
        return (not self.errors and not self.untrainable and not self.lost and not self.every_token_trained
                and not self.content_printed and not self.reasoning_against_prompt)

    @property
    def lost(self) -> list[tuple[int, int, str]]:
        """``dropped`` without earlier turns' reasoning."""
        return [d for d in self.dropped if d[2] != DROPPED_REASONING]

    def length_distribution(self) -> dict[str, int]:
        """Tokens per sample before truncation: min, p50, p90, p99 and max (to choose max_length)."""
        if not self.lengths:
            return {}
        a = np.asarray(self.lengths)
        q = np.percentile(a, [50, 90, 99], method="higher")
        return {"min": int(a.min()), "p50": int(q[0]), "p90": int(q[1]), "p99": int(q[2]), "max": int(a.max())}

    def error_groups(self) -> list[tuple[str, list[int]]]:
        """Errors grouped by their text (without the sample index), most frequent first."""
        groups: dict[str, list[int]] = {}
        for index, message in self.errors:
            groups.setdefault(without_sample(message), []).append(index)
        return sorted(groups.items(), key=lambda g: -len(g[1]))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        del d["lengths"]
        d["length_distribution"] = self.length_distribution()
        d["error_groups"] = [{"error": e, "count": len(ix), "samples": ix[:20]} for e, ix in self.error_groups()]
        d["trained_fraction"] = self.trained_fraction
        d["ok"] = self.ok
        return d

    def summary(self, verdict: bool = True) -> str:
        """The report as text; ``verdict=False`` leaves out the closing OK / PROBLEMS FOUND line."""
        lines = [f"samples:            {self.samples}"]
        if self.packed_rows:
            lines.append(f"  of which packed rows: {self.packed_rows}, holding {self.packed_samples} samples (every "
                         "count here is per row)")
        if self.rows != self.samples - len(self.errors) - len(self.left_out):
            lines.append(f"rows (split):       {self.rows}")
        lines += [
            f"tokens:             {self.tokens}",
            f"trained tokens:     {self.trained_tokens} ({100 * self.trained_fraction:.1f}%)",
            f"trained turns:      {self.turns}",
        ]
        dist = self.length_distribution()
        if dist:
            per_sample = self.rows == self.samples - len(self.errors) - len(self.left_out)
            label = "tokens per sample:  " if per_sample else "tokens per row:     "
            lines.append(label + "  ".join(f"{k} {v}" for k, v in dist.items()))
        if self.max_length is not None:
            lines.append(f"truncated to {self.max_length}: {len(self.truncated)} sample(s), "
                         f"{self.truncated_trained_tokens} trained token(s) cut" + (
                             f"  [{_some(self.truncated)}]" if self.truncated else ""))
            if self.images_dropped:
                lines.append(f"  images dropped with the text cut: {self.images_dropped} from {len(self.image_cut)} "
                             f"sample(s)  [{_some(self.image_cut)}]")
            if self.audio_dropped:
                lines.append(f"  audio clips dropped with the text cut: {self.audio_dropped} from {len(self.audio_cut)} "
                             f"sample(s)  [{_some(self.audio_cut)}]")
            if self.left_out:
                noun = "images" if not self.audio_left_out else "images or audio"
                lines.append(f"  left out (on_image_cut='drop': truncation would drop {noun}): {len(self.left_out)} "
                             f"sample(s)  [{_some(self.left_out)}]")
                lines.append("    a batch made only of such samples raises (no sample left to train on), and with "
                             "batch size 1 each of them is one: leave them out of the dataset before training "
                             "(ds.select(...) without report.left_out), or on_image_cut='truncate', or a larger "
                             "max_length")
        split = self.rows != self.samples - len(self.errors) - len(self.left_out)
        lines.append(f"untrainable:        {len(self.untrainable)}"
                     + (f" sample(s) ({self.untrainable_rows} of the {self.rows} split rows)"
                        if split and self.untrainable else "")
                     + (f"  [{_some(self.untrainable)}]  (labels all -100: NaN or missing loss)"
                        if self.untrainable else ""))
        if self.truncated_untrainable:
            lines.append(f"  of which by truncation: {_some(self.truncated_untrainable)}")
        if self.pretokenized_untrainable:
            lines.append(f"  of which pre-tokenized with every label -100: {_some(self.pretokenized_untrainable)}"
                         "  (" + PRETOKENIZED_UNTRAINED_FIX + ")")
        if self.every_token_trained:
            lines.append(f"arrived with labels on every token: {len(self.every_token_trained)}  "
                         f"[{_some(self.every_token_trained)}]  ({EVERY_TOKEN_TRAINED})")
        if self.options_unused:
            rendered = self.samples - self.pretokenized - len(self.errors)
            everything = "" if rendered else " (no checked sample was rendered: they had no effect)"
            lines.append(f"options not used on the {self.pretokenized} pre-tokenized sample(s): "
                         f"{', '.join(self.options_unused)}{everything}; they choose how respmask renders and masks "
                         "conversations, and pre-tokenized rows train on the labels they carry (give the rows' "
                         "messages to use them)")
        lines.append(f"turns without a trained stop token: {len(self.turns_without_stop)}" + (
            f"  [sample, message: {_some(self.turns_without_stop)}]  (the model may not learn to stop)"
            if self.turns_without_stop else ""))
        for stop, occurs, close in self.stop_tokens_unused:
            lines.append(f"stop_tokens entry {stop!r} ends no trained turn in the {self.samples} sample(s) checked ("
                         + ("it occurs in their text, never where a reply ends" if occurs
                            else "it occurs nowhere in their rendered text") + ")"
                         + (f": did you mean {' or '.join(map(repr, close))}?" if close else
                            ": check its spelling against the tokenizer's special tokens"))
        lost = self.lost
        if lost:
            lost_tokens = self.dropped_tokens - self.dropped_reasoning_tokens
            # an entry of no message (NO_MESSAGE) is a sample's tools or documents
            messages = sum(1 for _, message, _ in lost if message != NO_MESSAGE)
            held = [f"{messages} message(s)"] if messages else []
            held += [f"{n} {name}" for name, what in (("tool list(s)", DROPPED_TOOLS),
                                                       ("document list(s)", DROPPED_DOCUMENTS))
                     if (n := sum(1 for d in lost if d[2] == what))]
            lines.append(f"data the chat template leaves out, in {len({sample for sample, _, _ in lost})} "
                         f"sample(s): {', '.join(held)}" + (f", about {lost_tokens} tokens" if lost_tokens else ""))
            groups: dict[str, list[tuple[int, int]]] = {}
            for sample, message, what in lost:
                groups.setdefault(what, []).append((sample, message))
            for what, where in groups.items():
                if where[0][1] == NO_MESSAGE:
                    lines.append(f"  {what}: {len(where)}  [sample: {_some([s for s, _ in where])}]")
                else:
                    lines.append(f"  {what}: {len(where)}  [sample, message: {_some(where)}]")
            lines.append("  what to do: fix the data, or pass a chat template that renders it (--chat-template); "
                         "the model is trained without it otherwise (`respmask tokenize` rejects these samples "
                         "unless --keep-lost-data, the collator warns)")
            aliases = {}  # roles the data names as another format does (ShareGPT's 'gpt' for 'assistant')
            for what in groups:
                role = what[25:-2] if what.startswith("the whole message (role '") else None
                if role is not None and KNOWN_ROLES.get(role, role) != role:
                    aliases[role] = KNOWN_ROLES[role]
            if aliases:
                lines.append(f"  roles {', '.join(map(repr, aliases))} are other formats' names for "
                             f"{', '.join(map(repr, aliases.values()))}: read them as such with "
                             f"{mapping_hint(role_map=aliases)}")
        if self.content_printed:
            roles = ", ".join(repr(r) for r in dict.fromkeys(role for _, _, role in self.content_printed))
            lines.append(f"{CONTENT_PRINTED}: {len(self.content_printed)} message(s) "
                         f"in {len({s for s, _, _ in self.content_printed})} sample(s)  [sample, message: "
                         f"{_some([(s, m) for s, m, _ in self.content_printed])}]  (roles {roles}: "
                         f"{CONTENT_PRINTED_WHY})")
            lines.append(f"  what to do: {CONTENT_PRINTED_FIX}")
        if self.reasoning_against_prompt:
            how = self.reasoning_prompt
            where = self.reasoning_against_prompt
            lines.append(f"{REASONING_AGAINST_PROMPT}: {len(where)} message(s) in "
                         f"{len({s for s, _ in where})} sample(s)  [sample, message: {_some(where)}]  "
                         f"({reasoning_against_why(how['kwargs'], how['prompt'])})")
            lines.append(f"  what to do: {reasoning_against_fix(how['kwargs'], how['prompt_without'])}")
        reasoning = [d[:2] for d in self.dropped if d[2] == DROPPED_REASONING]
        if reasoning:
            lines.append(f"reasoning the template leaves out (earlier turns): {len(reasoning)} message(s)"
                         + (f", about {self.dropped_reasoning_tokens} tokens" if self.dropped_reasoning_tokens else "")
                         + f"  [sample, message: {_some(reasoning)}]  (split='auto' trains it)")
        if self.empty_replies:
            lines.append(f"empty replies (only their stop token is trained): {len(self.empty_replies)}  "
                         f"[sample, message: {_some(self.empty_replies)}]")
        lines.append(f"errors:             {len(self.errors)}")
        groups_shown = self.error_groups()
        for reason, indices in groups_shown[:8]:
            if len(indices) == 1:
                lines.append(f"  sample {indices[0]}: {reason}")
            else:
                lines.append(f"  {len(indices)} samples [{_some(indices, 5)}]: {reason}")
        if len(groups_shown) > 8:
            more = sum(len(ix) for _, ix in groups_shown[8:])
            lines.append(f"  and {more} more error(s) of {len(groups_shown) - 8} other kind(s) (--json lists them)")
        if verdict:
            lines.append("OK" if self.ok else "PROBLEMS FOUND")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def check(
    samples: Iterable[Any],
    tokenizer: Any,
    *,
    options: MaskOptions | None = None,
    max_length: int | None = None,
    truncation: str = "right",
    on_image_cut: str = "truncate",
    batch_size: int = 64,
    **changes: Any,
) -> CheckReport:
    """Run respmask over ``samples`` and report counts and problems (nothing is raised).

    Args:
        samples: rows in any format respmask reads; a :class:`BadLine` (a file line that held no
            JSON row) is recorded as an error, so a whole file is checked in one run.
        tokenizer: a fast tokenizer, a processor or a :class:`respmask.ChatMasker`.
        options: the masking options (:class:`respmask.MaskOptions`); or by name as ``**changes``.
        max_length, truncation: report what truncation would cut, as the collator cuts (with a
            processor: the samples truncated and the images and audio clips dropped with their
            text). ``truncation="left"`` without ``max_length`` warns that it has no effect.
        on_image_cut: as the collator's (with a processor): ``"drop"`` reports the samples it
            would leave out (an error with a text tokenizer, a warning without ``max_length``).
        batch_size: samples encoded together.

    Returns:
        A :class:`CheckReport`: counts, token lengths, and the samples that need attention.

    Raises:
        TypeError: a keyword is not a masking option, or a masker was passed with options.
        ValueError: ``max_length`` is not positive, ``on_image_cut`` is not one of its choices, or
            is ``"drop"`` with a text tokenizer (no row holds media to cut).

    Example:
        >>> report = check(ds, tok, max_length=4096)
        >>> report.samples, report.trained_tokens
        (4, 16)
        >>> print(report)        # ends with OK or PROBLEMS FOUND
        samples:            4
        tokens:             224
        trained tokens:     16 (7.1%)
        ...
        errors:             0
        OK
    """
    from ._shards import BadLine

    check_choice("on_image_cut", on_image_cut, ON_IMAGE_CUT)
    check_max_length(max_length)  # as the collator: a budget of 0 or less would report nonsense
    masker = masker_for(tokenizer, options, changes)
    check_cut_options(max_length, truncation, on_image_cut, masker.processor is not None)
    report = CheckReport(max_length=max_length)
    batch: list[tuple[int, Any]] = []
    wanted = masker.options.stop_tokens  # the user's own stop tokens: does each end some turn?
    ending: set[str] = set()  # the stop tokens that ended a trained turn
    occurring: set[str] = set()  # the wanted ones found anywhere in a rendered text
    rendered_turns = [0]  # trained turns rendered, before truncation

    def once(items: list[int], index: int) -> None:
        if not items or items[-1] != index:
            items.append(index)

    def flush() -> None:
        rows = encode_rows(masker, [s for _, s in batch], [i for i, _ in batch], max_length=max_length,
                           truncation=truncation, on_image_cut=on_image_cut, on_error="collect")[1]
        looked: set[int] = set()  # samples whose content lists were looked at (a split sample gives several rows)
        against: list[list[int]] = [[]]  # the current sample's replies whose reasoning the kwargs contradict
        for row in rows:
            index, enc = row.index, row.encoded
            if enc is None:
                report.samples += 1
                report.errors.append((index, str(row.error)))
                continue
            report.samples += enc.row == 0
            report.pretokenized += enc.text is None and enc.row == 0
            if enc.position_ids is not None:
                report.packed_rows += 1
                report.packed_samples += int(np.count_nonzero(enc.position_ids == 0))
            report.lengths.append(len(enc.input_ids))
            if row.left_out is not None:
                once(report.truncated, index)
                once(report.left_out, index)
                report.audio_left_out += bool(row.audio_dropped)
                continue
            if row.images_dropped:
                once(report.image_cut, index)
                report.images_dropped += row.images_dropped
            if row.audio_dropped:
                once(report.audio_cut, index)
                report.audio_dropped += row.audio_dropped
            report.rows += 1
            report.tokens += len(row.labels)  # type: ignore[arg-type]
            report.trained_tokens += row.trained
            report.turns += row.turns  # the turns truncation leaves a trained token
            rendered_turns[0] += enc.n_turns
            if row.truncated:
                once(report.truncated, index)  # a sample split into rows is listed once
                report.truncated_trained_tokens += enc.n_trained - row.trained
            if row.untrainable:
                report.untrainable_rows += 1
                once(report.untrainable, index)
                if row.truncated and enc.n_trained:
                    once(report.truncated_untrainable, index)
                elif arrived_untrained(enc):
                    once(report.pretokenized_untrainable, index)
            if row.problem == EVERY_TOKEN_TRAINED:  # the collator's criterion: it warns about the same rows
                once(report.every_token_trained, index)
            report.dropped.extend((index, message, what) for message, what in enc.dropped)
            for message in row.empty_replies:  # the rows of a split sample may each hold it
                if (index, message) not in report.empty_replies[-8:]:
                    report.empty_replies.append((index, message))
            report.dropped_tokens += enc.dropped_tokens
            report.dropped_reasoning_tokens += enc.reasoning_tokens_dropped
            for t in enc.turns:
                if t.stop is None:
                    report.turns_without_stop.append((index, t.message))
                elif enc.text is not None:
                    ending.add(enc.text[t.stop[0]:t.stop[1]])
            if enc.text is not None:
                occurring.update(stop for stop in wanted if stop not in occurring and stop in enc.text)
                if index not in looked:
                    printed = printed_content(masker, batch[row.sample][1], enc)
                    if printed is not None:
                        looked.add(index)
                        report.content_printed.extend((index, message, role) for message, role in printed)
                if enc.row == 0:
                    against[0], how = reasoning_against(masker, batch[row.sample][1])
                    if how is not None and not report.reasoning_prompt:
                        report.reasoning_prompt.update(kwargs=how.kwargs, prompt=how.prompt,
                                                       prompt_without=how.prompt_without)
                report.reasoning_against_prompt.extend(
                    (index, message) for message in trained_against(enc, against[0])
                    if (index, message) not in report.reasoning_against_prompt[-len(against[0]):])
        batch.clear()

    for index, sample in enumerate(samples):
        if isinstance(sample, BadLine):
            report.samples += 1
            report.errors.append((index, f"sample {index}: {sample.message}"))
            continue
        batch.append((index, sample))
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    if report.pretokenized:
        report.options_unused = _render_options(masker.options)
    if rendered_turns[0]:  # stop tokens end trained turns: with none rendered there is nothing to say of them
        report.stop_tokens_unused = _stops_unused(masker.tokenizer, wanted, ending, occurring)
    return report


def _stops_unused(tokenizer: Any, wanted: Sequence[str], ending: set[str], occurring: set[str]
                  ) -> list[tuple[str, bool, list[str]]]:
    """``(stop, occurs, close)`` of each ``wanted`` stop token that is not one of ``ending`` (the
    stop tokens that ended a trained turn): whether it is in ``occurring``, and its close spellings
    among the tokenizer's special tokens and ``ending`` (``difflib``; itself excluded)."""
    import difflib

    unused = [stop for stop in dict.fromkeys(wanted) if stop not in ending]
    if not unused:
        return []
    special = [t for t in getattr(tokenizer, "all_special_tokens", []) if isinstance(t, str)]
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    special += [str(t) for t in decoder.values() if getattr(t, "special", False)]
    candidates = list(dict.fromkeys([*sorted(ending), *special]))
    return [(stop, stop in occurring,
             difflib.get_close_matches(stop, [c for c in candidates if c != stop], n=3, cutoff=0.7))
            for stop in unused]


# options that act only on rows respmask renders (data_format and mapping read every row: a
# pre-tokenized row they do not fit raises)
_RENDER_OPTIONS = ("chat_template", "template_kwargs", "train_on", "reasoning_in_loss", "stop_tokens",
                   "use_generation_tags", "split", "text_only")


def _render_options(options: MaskOptions) -> list[str]:
    """The options of ``options`` given (not their defaults) that only act on rows respmask renders."""
    default = MaskOptions()
    return [name for name in _RENDER_OPTIONS if getattr(options, name) != getattr(default, name)]


@dataclass
class Problem:
    """Something that would break or silently spoil training, with its cause and fix."""

    what: str
    cause: str
    fix: str
    batches: list[int] = field(default_factory=list)  # the checked batches it was seen in, if batch-level

    def __str__(self) -> str:
        seen = f" (seen in batch{'es' if len(self.batches) > 1 else ''} {_some(self.batches)})" if self.batches else ""
        return f"- {self.what}{seen}\n  cause: {self.cause}\n  fix:   {self.fix}"


@dataclass
class TrainerReport:
    """What :func:`respmask.check_trainer` found in the batches a Trainer would train on.

    Every count is over the same batches: the ones drawn from the Trainer's DataLoader and
    inspected (the DataLoader may collate a batch ahead; that one is not counted).

    Attributes:
        batches, samples: batches and samples drawn from the Trainer's DataLoader (each sample of
            a packed row counts; the text then gives the dataset rows too, the unit of ``dataset``
            and ``collator``).
        tokens, trained_tokens: tokens in those batches (padding excluded) and of them trained.
        longest: the longest sample in those batches, in tokens (padding excluded).
        problems: each problem once (``what``, ``cause``, ``fix``), with the batches it was
            seen in; ``ok`` is True when there is none.
        dataset: respmask's :class:`CheckReport` on the dataset's first rows as stored (before
            the Trainer's column removal), when the collator is respmask's; None when TRL's
            SFTTrainer rewrote the dataset first (``rewritten`` says so: the rows as stored are
            then TRL's, not the user's).
        collator: the respmask collator's counts over the same batches.
        rewritten: why the dataset was not checked as stored, or None.
    """

    batches: int = 0
    samples: int = 0
    trained_tokens: int = 0
    tokens: int = 0
    longest: int = 0
    problems: list[Problem] = field(default_factory=list)
    dataset: CheckReport | None = None
    collator: Any = None  # CollatorStats over the checked batches
    rewritten: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: Problem, batch: int | None = None) -> None:
        """Record a problem once; a problem seen again only gains the batch it was seen in."""
        for p in self.problems:
            if p.what == problem.what:
                if batch is not None and batch not in p.batches:
                    p.batches.append(batch)
                return
        if batch is not None:
            problem.batches = [batch]
        self.problems.append(problem)

    def __str__(self) -> str:
        share = f" ({100 * self.trained_tokens / self.tokens:.1f}%)" if self.tokens else ""
        c = self.collator
        # packed rows hold several samples each: counted in dataset rows, as the dataset section counts them
        counted = (f"{c.samples} dataset rows holding {self.samples} packed samples" if c is not None and c.samples
                   and c.rows != self.samples else f"{self.samples} samples")
        lines = [f"respmask.check_trainer: {self.batches} batch(es) from the Trainer's own DataLoader: "
                 f"{counted}, {self.trained_tokens} of {self.tokens} tokens trained{share}"
                 + (f", the longest sample {self.longest} tokens" if self.longest else "")]
        if c is not None and c.samples:
            lines.append(
                f"collator over these batches: {c.turns} assistant turns; untrainable samples: {c.untrainable}, "
                f"truncated: {c.truncated}, holding data the template leaves out: {c.dropped_data}, "
                f"arriving with labels on every token: {c.every_token_trained}, "
                f"turns without a trained stop token: {c.turns_without_stop}"
                + (f", images dropped by truncation: {c.images_dropped}" if c.images_dropped else "")
                + (f", audio clips dropped by truncation: {c.audio_dropped}" if c.audio_dropped else "")
                + (f", samples left out (on_image_cut='drop'): {c.left_out}" if c.left_out else ""))
        if self.rewritten is not None:
            lines.append(f"dataset: not checked as stored: {self.rewritten}")
        elif self.dataset is not None:
            lines += [f"dataset: the first {self.dataset.samples} rows as stored, masked as the collator would mask "
                      "them if they reach it:",
                      "  " + self.dataset.summary(verdict=False).replace("\n", "\n  ")]
        if self.problems:
            lines.append(f"{len(self.problems)} PROBLEM(S):")
            lines += [str(p) for p in self.problems]
        else:
            lines.append("No problems found.")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<TrainerReport: {'ok' if self.ok else f'{len(self.problems)} problem(s)'}>\n{self}"

    def _repr_html_(self) -> str:
        import html

        color = "#1a7f37" if self.ok else "#cf222e"
        verdict = "No problems found" if self.ok else f"{len(self.problems)} problem(s)"
        return (f"<div><b style='color:{color}'>respmask.check_trainer: {verdict}</b>"
                f"<pre style='white-space:pre-wrap'>{html.escape(str(self))}</pre></div>")


class TrainerCheckError(RespmaskError):
    """``check_trainer(..., raise_on_problems=True)`` found problems; ``report`` holds them."""

    def __init__(self, report: TrainerReport):
        self.report = report
        super().__init__(str(report))


_LOSS_ERROR = '"The model did not return a loss from the inputs, only the following keys: logits"'


def _where(exc: BaseException) -> str:
    """``file:line in function`` of the innermost frame of an exception's traceback."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    f = frames[-1]
    return f" (raised at {f.filename}:{f.lineno} in {f.name})"


def check_trainer(trainer: Any, batches: int = 2, *, verbose: bool = True,
                  raise_on_problems: bool = False) -> TrainerReport:
    """Inspect what a ``transformers.Trainer`` would feed its model, before training starts.

    Builds the Trainer's own train DataLoader (so column removal and the data collator run
    exactly as in training) and reports: columns removed before they reach the collator, batches
    without ``labels`` (the cause of the "did not return a loss" error), samples or batches whose
    labels are all -100 (NaN or zero loss), labels copied from the input ids, a TRL dataset that
    TRL rewrote before the collator saw it, an ``SFTConfig(max_length=...)`` the collator does not
    apply, samples ``on_image_cut="drop"`` leaves out when a batch of them alone (which raises) is
    to be expected (batch size 1, or a chance of 1 in 1000 an epoch), and, when the collator is
    respmask's, its report on the dataset's first 256 rows
    (untrainable, truncated, data the chat template leaves out, turns without a trained stop
    token). Every count is over the same inspected batches. The collator's counters are left as
    they were.

    Args:
        trainer: a ``transformers.Trainer`` (or TRL trainer), before ``train()``.
        batches: how many batches to build and inspect.
        verbose: print the report (it is returned either way).
        raise_on_problems: raise :class:`TrainerCheckError` (holding the report) when a problem
            is found, to stop a script before it trains.

    Returns:
        The :class:`TrainerReport`; ``report.ok`` is True when no problem was found.

    Raises:
        TrainerCheckError: ``raise_on_problems=True`` and a problem was found.

    Example::

        trainer = Trainer(model, args, train_dataset=ds, data_collator=ResponseOnlyCollator(tok))
        respmask.check_trainer(trainer, raise_on_problems=True)
        trainer.train()
    """
    from dataclasses import fields, replace

    from ._collator import ResponseOnlyCollator

    report = TrainerReport()
    failure: tuple[int, BaseException] | None = None
    collator = getattr(trainer, "data_collator", None)
    ours = isinstance(collator, ResponseOnlyCollator)
    args = getattr(trainer, "args", None)
    remove = bool(getattr(args, "remove_unused_columns", False))
    dataset = getattr(trainer, "train_dataset", None)
    columns = list(getattr(dataset, "column_names", None) or [])
    rewritten = _trl_rewrite(args, dataset, columns) if ours else None

    if rewritten is not None:
        report.rewritten = ("TRL's SFTTrainer rewrote it before the collator could see it (see the first problem); "
                            "the rows it holds are TRL's, not yours")
    elif ours and dataset is not None and hasattr(dataset, "__getitem__"):
        try:
            n = min(len(dataset), 256)
            sample_rows = [dataset[i] for i in range(n)]
            # the cut options only with a length to cut to: the collator judged them when it was built
            cut = ({"truncation": collator.truncation, "on_image_cut": getattr(collator, "on_image_cut", "truncate")}
                   if collator.max_length is not None else {})
            report.dataset = check(sample_rows, collator.masker, max_length=collator.max_length, **cut)
        except Exception:  # the batches below tell what is wrong
            report.dataset = None

    before = replace(collator.stats) if ours else None
    counting = _Counting(collator) if ours else None
    try:
        with warnings.catch_warnings():  # the collator's per-batch warnings: this report says it all, once
            warnings.simplefilter("ignore", RespmaskWarning)
            if counting is not None:
                trainer.data_collator = counting  # counts each batch the DataLoader collates, in order
            try:
                _inspect_batches(trainer, batches, report, collator, counting)
            finally:
                if counting is not None:
                    trainer.data_collator = collator
    except MissingColumnsError as exc:
        if not remove or _missing_as_stored(collator, dataset):
            failure = (report.batches, exc)  # the rows themselves lack them (said with the dataset below)
        else:
            report.add(Problem(
                "the data collator received samples without the columns it needs",
                f"Trainer(remove_unused_columns=True) dropped every column the model's forward() does not take "
                f"before batching{f' (dataset columns: {columns})' if columns else ''}; respmask said: {exc.problem}",
                "set TrainingArguments(remove_unused_columns=False), or pre-tokenize: "
                "ds.map(respmask.Pretokenizer(tok), batched=True, remove_columns=ds.column_names)",
            ))
    except Exception as exc:  # noqa: BLE001 - report whatever the pipeline raises
        if isinstance(exc, ValueError) and "No columns in the dataset match" in str(exc):
            report.add(Problem(
                "Trainer removes every dataset column before batching",
                f"remove_unused_columns=True and none of the columns {columns} is an argument of the model's "
                "forward(), so nothing reaches the collator",
                "set TrainingArguments(remove_unused_columns=False) to keep 'messages' for "
                "ResponseOnlyCollator, or pre-tokenize with respmask.Pretokenizer",
            ))
        else:
            failure = (report.batches, exc)
    if ours:
        assert before is not None and counting is not None
        # the counts after the last inspected batch: a DataLoader that collated one batch ahead is not counted
        after = counting.after[report.batches - 1] if 0 < report.batches <= len(counting.after) else (
            counting.after[-1] if counting.after else before)
        report.collator = replace(after, **{f.name: getattr(after, f.name) - getattr(before, f.name)
                                            for f in fields(after)})
        collator.stats = before  # checking is not training: the counters are left as they were
    _dataset_problems(report, collator)
    left_out = _left_out_problem(report.dataset, args, dataset)
    if left_out is not None:
        report.add(left_out)
    if failure is not None:
        b, exc = failure
        said = report.dataset is not None and (
            (left_out is not None and isinstance(exc, SampleError) and LEFT_ALL_OUT in exc.problem)
            or (isinstance(exc, UntrainableSampleError) and report.dataset.untrainable)
            or (isinstance(exc, SampleError)  # the same problem of the stored rows
                and any(exc.problem.split(". ")[0] in error for _, error in report.dataset.errors)))
        if not said:  # else: said above, with its cause
            report.add(Problem(
                f"building batch {b} failed",
                f"{type(exc).__name__}: {exc}{_where(exc)}",
                "run next(iter(trainer.get_train_dataloader())) to see the full traceback",
            ))
    if rewritten is not None:
        _lead_with_rewrite(report, rewritten)
    elif ours:
        mismatch = _max_length_mismatch(args, collator, trainer)
        if mismatch is not None:
            longest = max([report.longest, *((report.dataset.lengths or [0]) if report.dataset else [0])])
            report.add(Problem(
                mismatch[0],
                mismatch[1] + (f"; the longest sample checked has {longest} tokens" if longest else ""),
                mismatch[2],
            ))
    if verbose:
        print(report)
    if raise_on_problems and report.problems:
        raise TrainerCheckError(report)
    return report


def _missing_as_stored(collator: Any, dataset: Any) -> bool:
    """Whether the dataset's first row, as stored (before a Trainer drops any column), already
    lacks the columns respmask reads: then the rows, not ``remove_unused_columns``, are the cause."""
    masker = getattr(collator, "masker", None)
    try:
        if masker is None or dataset is None or not len(dataset):
            return False
        masker.parse(dataset[0])
    except MissingColumnsError:
        return True
    except Exception:  # noqa: BLE001 - another problem of the row: not this one
        return False
    return False


class _Counting:
    """Stands in for the respmask collator while :func:`check_trainer` draws batches, keeping the
    collator's counts after each call: the report then counts exactly the batches it inspects
    (accelerate's DataLoader collates one batch ahead)."""

    def __init__(self, collator: Any):
        self.collator = collator
        self.after: list[Any] = []
        # per call: the rows the collator found labelled on every token as they arrived, before its
        # max_length cut (a cut row is judged on the labels it came with, not on the window kept)
        self.every_token: list[int] = []

    def __call__(self, features: Any) -> Any:
        from dataclasses import replace

        known = self.collator.stats.every_token_trained
        out = self.collator(features)
        self.after.append(replace(self.collator.stats))
        self.every_token.append(self.collator.stats.every_token_trained - known)
        return out


def _max_length(args: Any) -> tuple[bool, int | None]:
    """Whether the training arguments carry a sequence length (TRL's ``SFTConfig.max_length``), and it."""
    if args is None or not hasattr(args, "max_length") or not hasattr(args, "dataset_kwargs"):
        return False, None
    value = getattr(args, "max_length", None)
    return True, value if isinstance(value, int) and not isinstance(value, bool) else None


def _skips_preparation(args: Any, trainer: Any = None) -> bool:
    """Whether TRL leaves the dataset as stored: ``skip_prepare_dataset``, or TRL's own decision
    (its SFTTrainer skips preparing a vision dataset, one with an ``image``/``images`` column)."""
    if getattr(trainer, "_skip_prepare_dataset", None) is True:
        return True
    kwargs = getattr(args, "dataset_kwargs", None) or {}
    return bool(isinstance(kwargs, Mapping) and kwargs.get("skip_prepare_dataset"))


def _max_length_mismatch(args: Any, collator: Any, trainer: Any = None) -> tuple[str, str, str] | None:
    """``(what, cause, fix)`` when TRL's ``SFTConfig(max_length=N)`` would not be applied.

    With ``dataset_kwargs={"skip_prepare_dataset": True}`` TRL neither tokenizes nor truncates:
    the respmask collator does both, with its own ``max_length``. A ``max_length`` set on the
    config and not on the collator (or a different one) is silently ignored; this names it.
    """
    has, wanted = _max_length(args)
    if not has or wanted is None or not _skips_preparation(args, trainer):
        return None
    own = getattr(collator, "max_length", None)
    if own == wanted:
        return None
    applied = "truncates nothing" if own is None else f"truncates to its own max_length={own}"
    fix = ("give the collator the config's length: respmask.ResponseOnlyCollator("
           + ("processor" if getattr(collator, "processor", None) is not None else "tok")
           + ", max_length=config.max_length)"
           + (f" (or SFTConfig(max_length={own}) if {own} is what you meant)" if own is not None else ""))
    return (
        f"SFTConfig(max_length={wanted}) is not applied: the collator {applied}",
        ("with dataset_kwargs={'skip_prepare_dataset': True}" if _skips_preparation(args) else
         "with a vision dataset (an 'image'/'images' column)") + " TRL neither tokenizes nor truncates; "
        f"ResponseOnlyCollator does both, with its own max_length ({own})",
        fix,
    )


_TOKEN_COLUMNS = frozenset({"input_ids", "labels", "attention_mask", "assistant_masks", "completion_mask",
                            "position_ids", "seq_lengths", "token_type_ids"})


def _trl_rewrite(args: Any, dataset: Any, columns: list[str]) -> str | None:
    """What TRL's SFTTrainer did to the dataset before the collator, when it prepared it itself.

    SFTTrainer prepares (converts, tokenizes, truncates, filters) its dataset unless
    ``dataset_kwargs={"skip_prepare_dataset": True}``; the dataset it keeps then holds its
    ``input_ids`` beside the text columns it made them from. Rows pre-tokenized by respmask hold
    no text column, so they are not taken for a rewrite.
    """
    has, max_length = _max_length(args)
    if not has or _skips_preparation(args) or "input_ids" not in columns:
        return None
    text = [c for c in columns if c not in _TOKEN_COLUMNS]
    if not text:
        return None
    kept: set[str] = set()
    try:
        for i in range(min(len(dataset), 256)):
            row = dataset[i]
            for col in text:
                value = row.get(col)
                if isinstance(value, list):
                    kept.update(m["role"] for m in value if isinstance(m, Mapping) and isinstance(m.get("role"), str)
                                and KNOWN_ROLES.get(m["role"], m["role"]) != m["role"])
    except Exception:  # noqa: BLE001 - the roles are a detail of the explanation
        kept = set()
    done = [f"rewrote your rows (its columns now: {', '.join(repr(c) for c in columns)})"]
    if kept:
        done.append(f"kept the ShareGPT role names {', '.join(repr(r) for r in sorted(kept))} in its messages "
                    "(chat templates do not know them: respmask maps them when it reads your rows)")
    done.append("tokenized the rows itself")
    if max_length is not None:
        done.append(f"truncated them to max_length={max_length} and dropped the rows it found fully masked")
    size = len(dataset) if hasattr(dataset, "__len__") else None
    return ", ".join(done) + (f": {size} rows remain" if size is not None else "")


def _lead_with_rewrite(report: TrainerReport, rewritten: str) -> None:
    """Put TRL's rewrite first: what the batches show follows from it, and its fix is the one to apply."""
    symptoms = [p.what for p in report.problems]
    seen = sorted({b for p in report.problems for b in p.batches})
    report.problems = [Problem(
        "TRL's SFTTrainer prepared the dataset itself: the collator never sees your rows",
        "SFTConfig has no dataset_kwargs={'skip_prepare_dataset': True}, so SFTTrainer " + rewritten
        + (". In the checked batches this shows as: " + "; ".join(symptoms) if symptoms else ""),
        "SFTConfig(remove_unused_columns=False, dataset_kwargs={'skip_prepare_dataset': True}) so your rows reach "
        "respmask.ResponseOnlyCollator(tok, max_length=config.max_length) as stored, or pre-tokenize them with "
        "respmask.Pretokenizer",
        seen,
    )]


def _left_out_problem(ds: CheckReport | None, args: Any, dataset: Any) -> Problem | None:
    """The problem of rows ``on_image_cut="drop"`` leaves out, when a batch made only of them is
    to be expected: the collator then has nothing to return and raises. With a batch size of 1
    that is every such row; with more, the chance that some batch of an epoch holds only such rows
    (rows drawn at random, in the share the checked rows hold them), when it is 1 in 1000 or more."""
    size = getattr(args, "per_device_train_batch_size", None)
    if ds is None or not ds.left_out or not ds.samples or not isinstance(size, int) or size < 1:
        return None
    share = len(ds.left_out) / ds.samples
    rows = len(dataset) if hasattr(dataset, "__len__") else ds.samples
    batches = max(1, -(-rows // size))
    chance = 1.0 if size == 1 else 1 - (1 - share ** size) ** batches
    if chance < 1e-3:
        return None
    why = ("with per_device_train_batch_size=1 each of them is a batch of its own, so training stops at the first"
           if size == 1 else
           f"with per_device_train_batch_size={size}, {100 * share:.0f}% of the rows checked left out and {batches} "
           f"batches per epoch, the chance that some batch holds only such rows is about {100 * chance:.1f}% an epoch")
    return Problem(
        f"{len(ds.left_out)} of the {ds.samples} rows checked are left out of their batch (on_image_cut='drop'), "
        f"and a batch made only of such rows raises (rows {_some(ds.left_out)})",
        f"they are longer than max_length={ds.max_length} and truncation would drop images or audio; the collator "
        f"leaves them out of their batch, and a batch with no row left raises ('{LEFT_ALL_OUT}'): {why}",
        "leave those rows out of the dataset before training: left = set(respmask.check(ds, processor, "
        f"max_length={ds.max_length}, on_image_cut='drop').left_out); ds = ds.select([i for i in range(len(ds)) if "
        "i not in left]); or use on_image_cut='truncate', or a larger max_length",
    )


def _dataset_problems(report: TrainerReport, collator: Any) -> None:
    ds = report.dataset
    if ds is None:
        return
    by_truncation = set(ds.truncated_untrainable)
    pretokenized = set(ds.pretokenized_untrainable)
    cut = [i for i in ds.untrainable if i in by_truncation]
    arrived = [i for i in ds.untrainable if i in pretokenized]
    empty = [i for i in ds.untrainable if i not in by_truncation and i not in pretokenized]
    if cut:
        report.add(Problem(
            f"{len(cut)} sample(s) lose every trained token to truncation (rows {_some(cut)})",
            f"max_length={ds.max_length} with truncation={collator.truncation!r} cuts their assistant replies away; "
            f"{len(ds.truncated)} of {ds.samples} rows are truncated (tokens per sample: "
            + ", ".join(f"{k} {v}" for k, v in ds.length_distribution().items()) + ")",
            "raise max_length (the p99 above), truncate from the left, or drop samples longer than max_length",
        ))
    if arrived:
        report.add(Problem(
            f"{len(arrived)} pre-tokenized sample(s) have no trained token (rows {_some(arrived)})",
            f"they arrived with {PRETOKENIZED_UNTRAINED}: their loss is NaN or missing",
            PRETOKENIZED_UNTRAINED_FIX,
        ))
    if empty:
        report.add(Problem(
            f"{len(empty)} sample(s) have no trained token (rows {_some(empty)})",
            "no assistant reply, or every assistant message has train=false: their loss is NaN or missing",
            "drop those samples or give them an assistant reply (respmask.preview(ds[i], tok) shows one)",
        ))
    lost = ds.lost
    if lost:
        kinds = sorted({what.split(" (role")[0] for _, _, what in lost})
        rows = sorted({i for i, _, _ in lost})
        report.add(Problem(
            f"{len(rows)} sample(s) hold data the chat template leaves out (rows {_some(rows)})",
            f"the template does not render: {'; '.join(kinds)}; that data is never trained",
            "use a chat template that renders it, or fix the data (respmask check FILE lists each message)",
        ))
    if ds.content_printed:
        rows = sorted({i for i, _, _ in ds.content_printed})
        report.add(Problem(
            f"{len(rows)} sample(s) hold content parts the chat template prints as a list (rows {_some(rows)})",
            "the template prints a message's content as it is: a list of parts renders as its repr, "
            "[{'type': 'text', 'text': ...}], which the model reads and, in replies, is trained on",
            "give each such content as a string, its text parts joined: " + JOIN_TEXT_PARTS,
        ))
    if ds.turns_without_stop:
        report.add(Problem(
            f"{len(ds.turns_without_stop)} trained turn(s) have no stop token",
            "the chat template closes those turns with nothing the tokenizer knows ends generation",
            "pass stop_tokens=[...] (the model's generation_config eos tokens), or the model may not learn to stop",
        ))
    if ds.errors:
        first_index, first = ds.errors[0]
        report.add(Problem(
            f"{len(ds.errors)} sample(s) cannot be masked (rows {_some([i for i, _ in ds.errors])})",
            first if first.startswith("sample") else f"sample {first_index}: {first}",
            (f"collate packed rows with a max_length of at least their pack length L (ResponseOnlyCollator(tok, "
             f"padding_free=True, max_length=L); with TRL, SFTConfig(max_length=L)), or pack them again for "
             f"max_length={ds.max_length}" if all(PACKED_CUT in e for _, e in ds.errors) else
             "fix those rows, or filter them out; respmask check FILE groups every error"),
        ))


def _inspect_batches(trainer: Any, batches: int, report: TrainerReport, collator: Any,
                     counting: _Counting | None = None) -> None:
    it = iter(trainer.get_train_dataloader())
    for _ in range(batches):
        try:
            batch = next(it)
        except StopIteration:
            return
        b = report.batches  # the collator's call for this batch (None: collated out of sight, in a worker)
        every_token = counting.every_token[b] if counting is not None and b < len(counting.every_token) else None
        _inspect_batch(batch, report, collator, every_token)


def _inspect_batch(batch: Mapping[str, Any], report: TrainerReport, collator: Any,
                   every_token: int | None = None) -> None:
    """Add one batch's counts and problems to ``report``. ``every_token``: how many of its rows
    respmask's collator found labelled on every token as they arrived (None: unknown); a row cut
    to ``max_length`` may show every kept token trained though its prompt was masked (a left cut
    that kept only the reply), so the collator's count, made before the cut, decides."""
    b = report.batches
    report.batches += 1
    if batch.get("labels") is None:
        name = type(collator).__name__
        state = "(the collator set 'labels' to None)" if "labels" in batch else f"(keys: {sorted(batch.keys())})"
        report.add(Problem(
            f"batches have no 'labels' {state}: the model returns only logits and Trainer raises {_LOSS_ERROR}",
            f"the data collator ({name}) does not create labels"
            + (" - DataCollatorForSeq2Seq/DataCollatorWithPadding only pad labels that already exist" if name in (
                "DataCollatorForSeq2Seq", "DataCollatorWithPadding", "DefaultDataCollator") else ""),
            "use data_collator=respmask.ResponseOnlyCollator(tokenizer), which always returns labels",
        ), b)
        return
    labels = as_numpy(batch["labels"])
    labels = labels.reshape(len(labels), -1) if labels.ndim > 1 else labels.reshape(1, -1)
    mask = batch.get("attention_mask")
    real = (as_numpy(mask).reshape(labels.shape) == 1 if mask is not None and as_numpy(mask).size == labels.size
            else np.ones(labels.shape, dtype=bool))  # padding is not a token of the sample
    trained = (labels != IGNORE_INDEX) & real
    cu = batch.get("cu_seq_lens_q")
    if cu is not None and labels.shape[0] == 1:  # one padding-free row: its samples start at cu_seq_lens
        starts = as_numpy(cu).reshape(-1)
        report.samples += len(starts) - 1
        report.longest = max([report.longest, *np.diff(starts).tolist()])
    else:
        report.samples += labels.shape[0]
        report.longest = max(report.longest, int(real.sum(axis=1).max(initial=0)))
    report.tokens += int(real.sum())
    report.trained_tokens += int(trained.sum())
    ids = batch.get("input_ids")
    if ids is not None:
        ids = as_numpy(ids).reshape(labels.shape)
        # rows whose every real token is trained with itself as the label: labels copied from input_ids
        copied = ((labels == ids) | ~real).all(axis=1) & (real.sum(axis=1) > 1)
        if copied.any() and every_token != 0:
            report.add(Problem(
                "samples reach the model with labels on every token (prompts are trained)",
                "the dataset was tokenized before the collator, with labels = input_ids (TRL's SFTTrainer "
                "prepares the dataset itself unless told not to, and Trainer then drops 'messages'); a collator "
                "that only pads keeps those labels",
                "SFTConfig(remove_unused_columns=False, dataset_kwargs={'skip_prepare_dataset': True}) with "
                "respmask.ResponseOnlyCollator, or pre-tokenize with respmask.Pretokenizer",
            ), b)
    if not trained.any():
        report.add(Problem(
            "every label of a batch is -100: its loss is NaN (or 0)",
            "masking or truncation left no trained token in any sample of the batch",
            "check the samples with respmask.preview / respmask check; raise max_length",
        ), b)
