"""ResponseOnlyCollator: a batch of conversations in, padded ``input_ids``/``attention_mask``/
``labels`` out, with labels -100 everywhere the assistant does not generate."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ._errors import (
    MissingColumnsError, SampleError, UntrainableSampleError, check_choice, check_cut_options, check_max_length, warn,
)
from ._encode import EVERY_TOKEN_TRAINED, LEFT_ALL_OUT, TrainingRow, encode_rows
from ._masker import masker_for
from ._media_cut import ON_IMAGE_CUT, OnImageCut
from ._media_flat import ModelPositions, check_model, flatten_processed, output_layout, probe_rows
from ._options import MaskOptions
from ._masks import IGNORE_INDEX

OnUntrainable = Literal["warn", "raise", "keep"]

_TRAINER_HINT = (
    "If you train with transformers.Trainer, it drops columns the model does not take: set "
    "TrainingArguments(remove_unused_columns=False), or pre-tokenize the dataset with "
    "ds.map(respmask.Pretokenizer(tokenizer), batched=True, remove_columns=ds.column_names) so that "
    "'input_ids' and 'labels' survive."
)


def pad_token_id(tokenizer: Any) -> int:
    """The id used for padding: the tokenizer's pad token, else its EOS, else 0.

    Padding positions get ``attention_mask`` 0 and label -100, so the id itself never reaches
    the loss; respmask does not modify the tokenizer.
    """
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, list):
            value = value[0] if value else None
        if isinstance(value, int):
            return value
    return 0


@dataclass
class CollatorStats:
    """Counts since the collator was built (per process)."""

    samples: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    truncated: int = 0
    untrainable: int = 0
    turns: int = 0
    turns_without_stop: int = 0
    every_token_trained: int = 0  # pre-tokenized rows whose labels train every token (prompt included)
    dropped_data: int = 0  # samples holding data the chat template leaves out, besides earlier reasoning
    dropped_reasoning: int = 0  # samples whose earlier turns' reasoning the template leaves out (split="never")
    dropped_tokens: int = 0  # tokens of the data the template leaves out (that reasoning included)
    batches: int = 0
    rows: int = 0  # rows made (more than samples when split="auto"/"turns" splits conversations)
    images_dropped: int = 0  # images truncation cut away with their text (a processor's rows)
    left_out: int = 0  # samples left out of their batch: on_image_cut="drop"
    audio_dropped: int = 0  # audio clips truncation cut away with their text (a processor's rows)

    def __str__(self) -> str:
        if not self.samples:
            return "respmask collator: no batch collated in this process"
        share = f"{100 * self.trained_tokens / self.tokens:.1f}%" if self.tokens else "0%"
        return (
            f"respmask collator: {self.batches} batches, {self.samples} samples"
            + (f" in {self.rows} rows" if self.rows != self.samples else "")
            + f", {self.trained_tokens} of "
            f"{self.tokens} tokens trained ({share}), {self.turns} assistant turns; "
            f"untrainable samples: {self.untrainable}, truncated: {self.truncated}, "
            f"holding data the template leaves out: {self.dropped_data}, "
            f"arriving with labels on every token: {self.every_token_trained}, "
            f"turns without a trained stop token: {self.turns_without_stop}"
            + (f", whose earlier reasoning the template leaves out: {self.dropped_reasoning} (split='auto' "
               "trains it)" if self.dropped_reasoning else "")
            + (f"; about {self.dropped_tokens} tokens of data not rendered" if self.dropped_tokens else "")
            + (f"; images dropped by truncation: {self.images_dropped}" if self.images_dropped else "")
            + (f"; audio clips dropped by truncation: {self.audio_dropped}" if self.audio_dropped else "")
            + (f"; samples left out (on_image_cut='drop'): {self.left_out}" if self.left_out else "")
        )


_ROW_ID_KEYS = ("index", "idx", "id", "row_id")


def _media_noun(images: int, audio: int) -> str:
    """What a cut dropped, in words: ``images``, ``audio clips`` or ``images and audio clips``."""
    return " and ".join(w for w, n in (("images", images), ("audio clips", audio)) if n) or "images"


def _row_name(features: Sequence[Any], j: int) -> str:
    """How to name sample ``j`` in a message: its dataset row (an ``index``/``idx``/``id``/``row_id``
    value it carries) or else its position in the batch."""
    f = features[j]
    key = next((k for k in _ROW_ID_KEYS if isinstance(f, Mapping) and isinstance(f.get(k), (int, str))
                and not isinstance(f.get(k), bool)), None)
    return f"dataset row {f[key]!r}" if key else f"batch sample {j}"


_INDEX_HINT = "give the dataset an 'index' column (ds.add_column('index', range(len(ds)))) to name its rows"


def _named(exc: SampleError, features: Sequence[Any], hint: bool = True) -> SampleError:
    """``exc`` (its ``index``: the sample's position in the batch) saying which sample that is:
    ``batch sample 2 (dataset row 13): ...`` when the row carries an ``index``/``idx``/``id``/
    ``row_id`` value, as the warnings name it; else ``sample 2: ...`` followed by a note that 2 is
    a position in the batch (a Trainer's sampler shuffles: ``ds[2]`` is another row) and how to
    have dataset rows named (``hint=False``: without that note). Same type, ``index``, ``problem``
    and cause."""
    j = exc.index
    if j is None or not 0 <= j < len(features):
        return exc
    name = _row_name(features, j)
    if name.startswith("dataset row "):
        text = f"batch sample {j} ({name}): {exc.problem}"
    elif hint:
        text = f"sample {j}: {exc.problem} (sample {j} is its position in this batch, not a dataset row: {_INDEX_HINT})"
    else:
        return exc
    new = type(exc).__new__(type(exc))
    SampleError.__init__(new, exc.problem, j)
    Exception.__init__(new, text)  # the text, with the sample named as above
    new.__cause__ = exc.__cause__
    return new


class ResponseOnlyCollator:
    """Pads a batch and trains only what the assistant generates.

    Use it as ``Trainer(..., data_collator=ResponseOnlyCollator(tokenizer))``. Each feature is a
    dict with ``messages`` (plus optional ``tools``, ``documents``, ``chat_template_kwargs``),
    or ``prompt``/``completion`` (strings or message lists), or pre-tokenized ``input_ids`` with
    ``labels`` or ``assistant_masks``; ShareGPT and Alpaca rows, and other layouts through
    ``mapping``, are converted first (see :mod:`respmask._formats`).

    Args:
        tokenizer: a fast tokenizer with a chat template, a transformers processor for chats with
            images (the batch then holds everything the processor returns: ``pixel_values``,
            ``image_grid_thw`` ... plus ``labels``, image tokens never trained), or a
            :class:`respmask.ChatMasker` to share.
        options: the masking options (:class:`respmask.MaskOptions`); or pass them by name
            (``train_on="last"``, ``split="auto"`` ...) as ``**changes``.
        max_length: truncate longer samples (ids and labels together). With a processor the
            rendered text is cut, never an image's or audio clip's tokens: the images and audio
            clips whose tokens would fall (even partly) past the cut are dropped with it and the
            processor runs again on the text and media kept, so ``input_ids`` are the processor's
            own for them (a long chat holding video is refused).
        truncation: ``"right"`` keeps the start of a sample, ``"left"`` keeps its end (with
            ``max_length``; without it nothing is cut, and ``"left"`` warns that it has no effect).
        on_image_cut: with a processor, what to do with a sample whose truncation would drop
            images or audio: ``"truncate"`` it (default; the stats count the images and audio
            clips dropped, ``images_dropped`` and ``audio_dropped``, and a warning names the
            samples) or ``"drop"`` it: leave it out of the batch, with a warning that
            says why (a batch left with no sample raises). ``"drop"`` with a text tokenizer is
            an error (its rows hold no media), and without ``max_length`` warns (nothing is cut).
        pad_to_multiple_of: round the padded length up to a multiple of this.
        padding_side: ``"right"`` or ``"left"``; default: the tokenizer's ``padding_side``.
        on_untrainable: what to do with a sample whose labels are all -100 (no assistant turn,
            or truncated away): ``"warn"`` (default), ``"raise"``, or ``"keep"`` silently.
        return_tensors: ``"pt"`` (torch) or ``"np"``.
        padding_free: instead of padding, concatenate the batch into one row with
            ``position_ids`` restarting at each sample, ``cu_seq_lens_q/k`` and ``max_length_q/k``
            (what transformers' flash-attention path and TRL's padding-free mode take); the first
            label of every sample is -100 so that no sample learns to predict the next one, and
            ``use_cache=False`` so that sdpa/eager attention keeps the samples apart too. With a
            processor, its per-token outputs (``token_type_ids`` ...) are concatenated the same way
            and its image outputs (``pixel_values``, ``image_sizes`` ...) kept, in sample order;
            ``model`` is then required and checked (see ``model``).
        model: with a processor and ``padding_free=True``, the model to train: a probe batch of two
            chats with the processor's media (images, else audio), padded and padding-free, must
            give it the same logits for each sample's tokens, else ``ValueError`` says why. A model
            that computes its positions from the image layout with transformers'
            ``get_rope_index`` (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) gets each sample's own positions,
            computed by that method on a weightless copy of its module, after the row's 1-D
            positions (``position_ids`` of shape ``(4, 1, tokens)``). Not kept by the collator.
            Given otherwise (a text tokenizer, or ``padding_free=False``) it is not used, and a
            ``UserWarning`` says so.

    Returns:
        Called on a list of rows: ``input_ids``, ``attention_mask`` and ``labels`` (torch tensors
        or numpy arrays), padded; or the padding-free row described above.

    Raises:
        SampleError: a row is malformed; ``UntrainableSampleError`` with ``on_untrainable="raise"``.
            The error names the row as the warnings do: ``batch sample 2 (dataset row 13): ...``
            when it carries an ``index``/``idx``/``id``/``row_id`` value, else ``sample 2: ...``
            with a note that 2 is its position in the batch; ``index`` is that position.
        TypeError: a keyword is not a masking option, or a masker was passed with options.
        ValueError: ``on_image_cut="drop"`` with a text tokenizer; with a processor,
            ``padding_free=True`` without ``model``, with a processor
            returning per-sample outputs (Idefics3's ``pixel_values``, Mllama's
            ``cross_attention_mask``) or with a model that does not take such rows.

    Example:
        >>> collator = ResponseOnlyCollator(tok, max_length=4096, train_on="all")
        >>> batch = collator([{"messages": [{"role": "user", "content": "Hi"},
        ...                                 {"role": "assistant", "content": "Hello!"}]}])
        >>> tok.decode(batch["input_ids"][0][batch["labels"][0] != -100])   # the trained tokens
        'Hello!<|im_end|>'
        >>> print(collator.preview(ds[0]).summary())   # which tokens of a row are trained
        respmask: 56 tokens, 4 trained (7%), 1 turn
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        options: MaskOptions | None = None,
        max_length: int | None = None,
        truncation: Literal["right", "left"] = "right",
        on_image_cut: OnImageCut = "truncate",
        pad_to_multiple_of: int | None = None,
        padding_side: Literal["right", "left"] | None = None,
        on_untrainable: OnUntrainable = "warn",
        return_tensors: Literal["pt", "np"] = "pt",
        padding_free: bool = False,
        model: Any = None,
        **changes: Any,
    ):
        self.masker = masker_for(tokenizer, options, changes)
        check_choice("truncation", truncation, ("right", "left"))
        check_choice("on_image_cut", on_image_cut, ON_IMAGE_CUT)
        side = padding_side or getattr(self.masker.tokenizer, "padding_side", "right") or "right"
        check_choice("padding_side", side, ("right", "left"))
        check_choice("on_untrainable", on_untrainable, ("warn", "raise", "keep"))
        check_choice("return_tensors", return_tensors, ("pt", "np"))
        check_max_length(max_length)
        check_cut_options(max_length, truncation, on_image_cut, self.masker.processor is not None)
        if model is not None and not (self.masker.processor is not None and padding_free):
            why = ("with a text tokenizer it is not used (a text padding-free row is built from its ids alone)"
                   if self.masker.processor is None else
                   "without padding_free=True it is not used (a padded batch needs no model)")
            warnings.warn(
                f"model= has no effect here: the collator uses the model only with a processor and "
                f"padding_free=True, to check that one padding-free row trains each sample as the padded batch "
                f"would and to give it its own positions; {why}. Leave model out"
                + (", or pass padding_free=True." if self.masker.processor is not None else "."),
                UserWarning, stacklevel=2)
        if padding_free and pad_to_multiple_of:
            raise ValueError("padding_free=True concatenates samples: pad_to_multiple_of does not apply")
        self.tokenizer = self.masker.tokenizer
        self.processor = self.masker.processor
        self.max_length = max_length
        self.truncation = truncation
        self.on_image_cut = on_image_cut
        self.pad_to_multiple_of = pad_to_multiple_of
        self.padding_side = side
        self.on_untrainable = on_untrainable
        self.return_tensors = return_tensors
        self.padding_free = padding_free
        if self.masker.processor is not None and pad_to_multiple_of:
            raise ValueError(
                "with a processor, pad_to_multiple_of is not supported: reshaping a row could split an image's "
                "tokens from its pixels (the processor pads the batch)"
            )
        self._layout: dict[str, str] | None = None  # a processor's outputs, by kind (padding_free)
        self._positions: ModelPositions | None = None  # the model's own positions, if it computes them
        if self.masker.processor is not None and padding_free:
            self._layout, self._positions = self._padding_free_layout(model)
        self.pad_token_id = pad_token_id(self.masker.tokenizer)
        self.stats = CollatorStats()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["tokenizer"] = None  # the masker carries it (serialized once)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.tokenizer = self.masker.tokenizer

    def __call__(self, features: Sequence[Any]) -> dict[str, Any]:
        try:
            processed, rows = encode_rows(self.masker, features, max_length=self.max_length,
                                          truncation=self.truncation, on_image_cut=self.on_image_cut,
                                          return_tensors=self.return_tensors, padding_side=self.padding_side)
        except MissingColumnsError as exc:  # rows a collator gets: most often a Trainer removed the columns
            hinted = MissingColumnsError(f"{exc.problem} {_TRAINER_HINT}", exc.index)
            raise _named(hinted, features, hint=False) from exc.__cause__  # its columns (an index too) are gone
        except SampleError as exc:  # named as its dataset row when the row says which it is
            raise _named(exc, features) from exc.__cause__
        self.stats.batches += 1
        notes: dict[str, list[str]] = {}  # problem -> the samples that have it, this batch
        for row in rows:
            enc = row.encoded
            assert enc is not None  # errors were raised
            self._count(row)
            if (row.left_out is None and not row.images_dropped and not row.audio_dropped and row.problem is None
                    and not enc.lost_data and row.position_ids is None):
                continue  # nothing to say about it
            name = _row_name(features, row.sample) + (f" (row {enc.row + 1} of {enc.rows})" if enc.rows > 1 else "")
            if row.left_out is not None:
                noun = _media_noun(row.images_dropped, row.audio_dropped)
                notes.setdefault(f"longer than max_length={self.max_length} and holding {noun} that truncation "
                                 f"would drop: left out of the batch (on_image_cut='drop'; 'truncate' keeps their "
                                 f"text and the {noun} that fit)", []).append(name)
                continue
            if row.images_dropped or row.audio_dropped:
                what = " and ".join(f"{n} {kind}" for kind, n in (("image(s)", row.images_dropped),
                                                                  ("audio clip(s)", row.audio_dropped)) if n)
                notes.setdefault(f"truncated to max_length={self.max_length} ({self.truncation}): "
                                 f"{_media_noun(row.images_dropped, row.audio_dropped)} whose tokens fell past the "
                                 "cut were dropped with that text (raise max_length to keep them, or "
                                 "on_image_cut='drop' to leave such samples out)", []
                                 ).append(f"{name} ({what})")
            if row.problem is not None:
                if self.on_untrainable == "raise":
                    split = f"its row {enc.row + 1} of {enc.rows}: " if enc.rows > 1 else ""
                    raise _named(UntrainableSampleError(split + row.problem, row.sample), features)
                notes.setdefault(row.problem, []).append(name)
            if enc.lost_data:
                what = "; ".join(sorted({w.split(" (role")[0] for _, w in enc.lost_data}))
                notes.setdefault(f"data the chat template leaves out of the render ({what}): it is not "
                                 "trained; respmask.check(dataset, tokenizer) lists which messages", []
                                 ).append(_row_name(features, row.sample))
            if row.position_ids is not None and not self.padding_free:
                raise _named(SampleError(
                    "is a packed row (it has 'position_ids'): padding would let its samples attend to each "
                    "other. Use ResponseOnlyCollator(..., padding_free=True).", row.sample
                ), features)
        if notes and self.on_untrainable == "warn":
            warn(self._warning(notes, len(rows)))
        if processed is not None:
            if self._layout is not None:
                return flatten_processed(processed, self._layout, self.return_tensors, self._positions)
            return processed
        if self.processor is not None:
            lost = _media_noun(sum(row.images_dropped for row in rows), sum(row.audio_dropped for row in rows))
            named = ", ".join(_row_name(features, j) for j in range(min(8, len(features))))
            raise SampleError(f"every sample of this batch is longer than max_length={self.max_length} and would lose "
                              f"{lost} to truncation, so {LEFT_ALL_OUT}: raise max_length, use "
                              "on_image_cut='truncate', or leave such samples out of the dataset before training "
                              "(respmask.check(ds, processor, max_length=..., on_image_cut='drop').left_out names "
                              f"them; with batch size 1 each of them is such a batch) ({named})")
        pairs = [(row.input_ids, row.labels) for row in rows]
        return self.flatten(pairs, [row.position_ids for row in rows]) if self.padding_free else self.pad(pairs)

    def _padding_free_layout(self, model: Any) -> tuple[dict[str, str], ModelPositions | None]:
        """How the processor's outputs go into one padding-free row (learned on a probe batch, see
        :mod:`respmask._media_flat`), once ``model`` is shown to take such rows as it takes padded
        batches; and the positions it takes them with (``None``: the row's 1-D positions).

        Raises:
            ValueError: an output one row cannot hold, no ``model`` given, or a model that does not
                take such rows (each message says why).
        """
        probe = ResponseOnlyCollator(self.masker, return_tensors="np", on_untrainable="keep")(probe_rows(self.masker))
        layout, refused = output_layout(probe, 2)
        name = type(self.processor).__name__
        if refused:
            why = "; ".join(f"{key!r}: {reason}" for key, reason in refused.items())
            raise ValueError(f"padding_free=True is not supported with {name}: it returns outputs that one row of "
                             f"several samples cannot hold ({why}). Use padding_free=False.")
        if model is None:
            raise ValueError(
                f"padding_free=True with a processor ({name}) needs the model: ResponseOnlyCollator(processor, "
                "padding_free=True, model=model). Whether one row of concatenated samples trains each of them as the "
                "padded batch would is the model's property (a model may compute positions from the image layout, "
                "as Qwen2-VL's multi-axis rotary positions are, which the collator then computes with the model's "
                "own method); respmask checks it on a probe batch of two chats with the processor's media before "
                "training.")
        return layout, check_model(self.masker, layout, model, self.padding_side)

    def preview(self, sample: Any) -> Any:
        """Which tokens of ``sample`` this collator trains (see :func:`respmask.preview`): cut to
        its ``max_length`` as its batches are, with a note saying what the cut took."""
        from ._preview import collated_preview, preview

        if self.max_length is None:
            return preview(sample, self.masker)
        return collated_preview(sample, self.masker, max_length=self.max_length, truncation=self.truncation,
                                on_image_cut=self.on_image_cut)

    def _warning(self, notes: Mapping[str, list[str]], n: int) -> str:
        st = self.stats
        lines = [f"respmask: in batch {st.batches} ({n} samples; {st.samples} samples collated so far):"]
        for problem, who in notes.items():
            shown = ", ".join(who[:8]) + (f" and {len(who) - 8} more" if len(who) > 8 else "")
            lines.append(f"- {len(who)} sample(s) [{shown}]: {problem}")
        lines.append(f"So far: {st.untrainable} of {st.samples} samples had no trained token, {st.dropped_data} lost "
                     f"data, {st.every_token_trained} arrived with labels on every token"
                     + (f", {st.truncated} truncated ({st.images_dropped} images dropped)" if st.images_dropped else "")
                     + (f", {st.audio_dropped} audio clips dropped by truncation" if st.audio_dropped else "")
                     + (f", {st.left_out} left out (on_image_cut='drop')" if st.left_out else "") + ". "
                     "(on_untrainable='keep' silences this; 'raise' stops)")
        if not all(name.startswith("dataset row ") for who in notes.values() for name in who):
            lines.append(f"Positions are within the batch: {_INDEX_HINT}.")
        return "\n".join(lines)

    def _count(self, row: TrainingRow) -> None:
        """Add a row to ``stats``."""
        st, enc = self.stats, row.encoded
        assert enc is not None
        if row.left_out is not None:
            st.samples += enc.row == 0
            st.left_out += 1
            return
        assert row.labels is not None
        st.samples += enc.row == 0
        st.images_dropped += row.images_dropped
        st.audio_dropped += row.audio_dropped
        st.rows += 1
        st.tokens += len(row.labels)
        st.trained_tokens += row.trained
        st.truncated += row.truncated
        st.untrainable += row.trained == 0
        st.every_token_trained += row.problem == EVERY_TOKEN_TRAINED
        st.turns += row.turns  # the turns truncation leaves a trained token
        st.turns_without_stop += enc.turns_without_stop
        st.dropped_data += bool(enc.lost_data)
        st.dropped_reasoning += len(enc.dropped) > len(enc.lost_data)
        st.dropped_tokens += enc.dropped_tokens

    def pad(self, rows: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
        """Pad (ids, labels) rows into input_ids / attention_mask / labels."""
        n = len(rows)
        length = max((len(ids) for ids, _ in rows), default=0)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            length = -(-length // m) * m
        input_ids = np.full((n, length), self.pad_token_id, dtype=np.int64)
        attention = np.zeros((n, length), dtype=np.int64)
        labels = np.full((n, length), IGNORE_INDEX, dtype=np.int64)
        for r, (ids, lab) in enumerate(rows):
            k = len(ids)
            sl = slice(length - k, length) if self.padding_side == "left" else slice(0, k)
            input_ids[r, sl] = ids
            attention[r, sl] = 1
            labels[r, sl] = lab
        batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
        return self._tensors(batch)

    def flatten(
        self, rows: Sequence[tuple[np.ndarray, np.ndarray]], positions: Sequence[np.ndarray | None] | None = None
    ) -> dict[str, Any]:
        """Concatenate (ids, labels) rows into one padding-free row with per-sample positions.

        Packed rows bring their own ``position_ids``: every position 0 starts a sample.
        """
        empty = np.zeros(0, dtype=np.int64)
        input_ids = np.concatenate([ids for ids, _ in rows]) if rows else empty
        labels = np.concatenate([lab for _, lab in rows]).astype(np.int64) if rows else empty
        pos_parts = []
        for (ids, _), given in zip(rows, positions or [None] * len(rows)):
            pos_parts.append(given.astype(np.int64) if given is not None else np.arange(len(ids), dtype=np.int64))
        position_ids = np.concatenate(pos_parts) if pos_parts else empty
        row_lengths = np.array([len(ids) for ids, _ in rows], dtype=np.int64)
        row_starts = (np.cumsum(row_lengths) - row_lengths)[row_lengths > 0]
        starts = np.union1d(row_starts, np.flatnonzero(position_ids == 0)).astype(np.int64)
        labels[starts] = IGNORE_INDEX  # no sample learns to predict the next one's first token
        cu = np.append(starts, len(input_ids)).astype(np.int32)
        lengths = np.diff(cu)
        longest = int(lengths.max()) if len(lengths) else 0
        batch = {
            "input_ids": input_ids[None, :],
            "labels": labels[None, :],
            "position_ids": position_ids[None, :],
            "cu_seq_lens_q": cu,
            "cu_seq_lens_k": cu.copy(),
        }
        out = self._tensors(batch)
        out["max_length_q"] = longest
        out["max_length_k"] = longest
        # Without flash attention, transformers isolates packed samples (a block-diagonal mask from
        # position_ids) only when no KV cache is built; a cache would let samples attend to each other.
        out["use_cache"] = False
        return out

    def _tensors(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        if self.return_tensors == "pt":
            import torch

            return {k: torch.from_numpy(v) for k, v in batch.items()}
        return batch
