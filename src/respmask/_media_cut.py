"""Chats with images cut to ``max_length`` without ever separating an image's tokens from its pixels.

A processor expands each image placeholder of the rendered text into the image's tokens, and the
model pairs those tokens with the image's pixels: cutting the ids through an image (or cutting an
image's tokens away while its pixels stay in the batch) breaks the model's forward pass. So a row
longer than ``max_length`` is cut in the rendered text, never in the ids:

1. the processor runs on the whole batch (what it does without truncation);
2. for each row that is too long, the rendered text's tokens are aligned with the processor's ids
   (equal outside the images, see :func:`respmask._media.align`), which says how many ids each
   stretch of text becomes; the text is cut at a token boundary where what it becomes fits, never
   inside an image placeholder (a run of image tokens is cut whole or not at all);
3. the images whose placeholders are cut away are dropped (with ``truncation="right"`` the last
   ones, with ``"left"`` the first ones), and the processor runs again on the cut texts and the
   images kept: its ids are exactly the processor's for that text and those images. The images are
   not processed twice: where the processor's batch is the same with each image processed alone and
   the outputs joined (learned once on a probe: :func:`images_join`), each image is processed once
   and the second call joins the outputs of the images kept (:class:`_PerImage`); elsewhere (an
   image processor that pads images to the batch, or nests them per row) the first call's output
   is given back when the cut dropped no image (:class:`_SameImages`). A row still
   too long (a tokenizer may merge differently at the cut) is cut a little further and run again.

The labels are the text's trained tokens carried onto the new ids, as for any row (image tokens
never trained). With ``on_image_cut="drop"`` a row whose cut would drop an image is left out of
the batch instead, with its reason. Which token counts the images (one per image in the render:
``<|vision_start|>``, ``<start_of_image>``, ``<image>`` ...) is learned from the processor's chat
template, not from a table.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ._errors import SampleError
from ._masks import IGNORE_INDEX
from ._media import adds_special_tokens, align, carry_mask, image_chats

OnImageCut = Literal["truncate", "drop"]
ON_IMAGE_CUT = ("truncate", "drop")


@dataclass
class Fit:
    """One row of a processor batch fitted to ``max_length``.

    ``input_ids`` / ``labels`` are the processor's row (cut when ``truncated``); ``images_dropped``
    counts the images the cut removed; ``left_out`` says why the row was left out of the batch
    (``on_image_cut="drop"``; its ids are then None)."""

    input_ids: np.ndarray | None
    labels: np.ndarray | None
    truncated: bool = False
    images_dropped: int = 0
    left_out: str | None = None


@dataclass
class _Plan:
    """How one long row is cut: its text tokens grouped in units (a run of image tokens is one),
    the units kept ``[first, last)``, and what each unit becomes in the processor's ids."""

    text: str
    ids: np.ndarray  # the rendered text's tokens
    trained: np.ndarray  # their trained mask
    starts: np.ndarray  # first token of each unit (plus the end)
    chars: np.ndarray  # first character of each unit (plus the text's length)
    size: np.ndarray  # ids each unit becomes (its image's tokens included), estimated from the alignment
    counts: np.ndarray  # images each unit holds
    images: list[Any]
    first: int
    last: int

    def kept(self) -> tuple[str, list[Any], int]:
        """The text kept, the images kept and how many images were dropped."""
        text = self.text[self.chars[self.first]:self.chars[self.last]]
        before = int(self.counts[:self.first].sum())
        n = int(self.counts[self.first:self.last].sum())
        return text, self.images[before:before + n], len(self.images) - n

    def source(self) -> tuple[np.ndarray, np.ndarray]:
        """The kept text's tokens and their trained mask."""
        a, b = self.starts[self.first], self.starts[self.last]
        return self.ids[a:b], self.trained[a:b]

    def shrink(self, excess: int, side: str) -> None:
        """Cut at least ``excess`` more ids (as estimated), from ``side``, one unit at least."""
        removed = 0
        while removed < max(excess, 1) and self.last > self.first:
            if side == "left":
                removed += int(self.size[self.first])
                self.first += 1
            else:
                self.last -= 1
                removed += int(self.size[self.last])


def image_counter(masker: Any) -> int | None:
    """A token the masker's chat template writes once per image part (learned once: the render of
    one image and of two images, tokenized), or None when no token does."""
    if masker._image_counter is not None:
        return masker._image_counter if masker._image_counter >= 0 else None
    processor, tok = masker.processor, masker.processor.tokenizer
    media = set(masker.media_tokens().tolist())

    def render(messages: list[dict]) -> str:
        return processor.apply_chat_template(messages, chat_template=masker.template_source(), tokenize=False)

    found = -1
    try:
        texts = image_chats(render, (0, 1, 2))
    except Exception:  # noqa: BLE001 - the template takes the reply in neither form: no counter
        texts = None
    if texts is not None:
        c0, c1, c2 = ({i: ids.count(i) for i in media} for ids in
                      (tok(text, add_special_tokens=False)["input_ids"] for text in texts))
        once = sorted(i for i in media if c1[i] - c0[i] == 1 and c2[i] - c0[i] == 2)
        found = once[0] if once else -1
    masker._image_counter = found
    return found if found >= 0 else None


def _text_tokens(masker: Any, text: str, ids: np.ndarray, trained: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any]:
    """The rendered text's tokens with their character offsets: the masker's tokens when they can
    be re-tokenized with offsets as they were; else the re-tokenization, the mask carried onto it."""
    backend = masker.backend()
    encs = []
    for add in (False, True):  # the second encoding only when the first is not the masker's (one pass, mostly)
        enc = backend.encode(text, add_special_tokens=add)
        if len(enc.ids) == len(ids) and np.array_equal(np.asarray(enc.ids, dtype=np.int64), ids):
            return ids, trained, enc.offsets
        encs.append(enc)
    enc = encs[0]
    new = np.asarray(enc.ids, dtype=np.int64)
    return new, carry_mask(ids, trained, new), enc.offsets


def _plan(masker: Any, text: str, ids: np.ndarray, trained: np.ndarray, b: np.ndarray, images: list[Any],
          max_length: int, side: str, index: int) -> _Plan:
    """Where to cut one row (see the module doc)."""
    ids, trained, offsets = _text_tokens(masker, text, ids, trained)
    n = len(ids)
    media = np.isin(ids, masker.media_tokens())
    new_unit = np.ones(n, dtype=bool)
    new_unit[1:] = ~(media[1:] & media[:-1])  # a run of image tokens is one unit
    starts = np.append(np.flatnonzero(new_unit), n)
    first_char = np.array([offsets[i][0] for i in starts[:-1]] + [len(text)], dtype=np.int64)
    # a special token the tokenizer adds (BOS) has no characters: its unit starts at 0
    first_char = np.maximum.accumulate(first_char)
    counter = image_counter(masker) if images else None
    per_token = (ids == counter) if counter is not None else np.zeros(n, dtype=bool)
    counts = np.add.reduceat(per_token.astype(np.int64), starts[:-1]) if n else np.zeros(0, dtype=np.int64)
    if images and int(counts.sum()) != len(images):
        raise SampleError(
            f"is longer than max_length={max_length} and cannot be cut between its images: respmask finds "
            f"{int(counts.sum())} image placeholder(s) in its render for {len(images)} image(s). Raise max_length, or "
            "leave such rows out", index)
    # what each unit becomes in the processor's ids: from after the last matched token before it to
    # the first matched token after it (an image's expansion, which matches nothing, is in between)
    match = align(ids, b)
    m = len(b)
    matched = np.flatnonzero(match >= 0)
    at = match[matched]
    nxt = np.searchsorted(matched, starts[1:], side="left")  # first matched token at or after each unit's end
    end_b = np.where(nxt < len(at), at[np.minimum(nxt, len(at) - 1)] if len(at) else m, m)
    prv = np.searchsorted(matched, starts[:-1], side="left") - 1  # last matched token before each unit
    begin_b = np.where(prv >= 0, (at[np.maximum(prv, 0)] + 1) if len(at) else 0, 0)
    end_b = np.maximum.accumulate(end_b)
    begin_b = np.maximum.accumulate(begin_b)
    size = np.maximum(end_b - begin_b, 1)
    units = len(starts) - 1
    if side == "left":
        first = int(np.searchsorted(begin_b, m - max_length, side="left"))
        last = units
    else:
        first = 0
        last = int(np.searchsorted(end_b, max_length, side="right"))
    return _Plan(text, ids, trained, starts, first_char, size, counts, list(images), first, last)


class _SameImages:
    """Stands in for a processor's image processor during one batch's processor calls: the
    first call's output is kept (a shallow copy: the processor may take keys out of what it gets),
    and a later call given the very same images (the same objects, in the same nesting, with the
    same arguments) gets a copy of it instead of processing them again: a cut that dropped no image
    costs one image processing, not two. The same function on the same inputs: nothing changes.
    The images of the first call are held, so their ids cannot be reused by other objects."""

    def __init__(self, real: Any):
        self._real = real
        self._seen: tuple[Any, Any, Any, Any] | None = None  # (images held, their ids, args, kwargs), output

    def __call__(self, images: Any, *args: Any, **kwargs: Any) -> Any:
        key = _ids(images)
        if self._seen is not None:
            _held, seen_key, seen_args, out = self._seen
            try:
                same = seen_key == key and seen_args == (args, kwargs)
            except Exception:  # noqa: BLE001 - arguments that do not compare: not the same call
                same = False
            if same:
                return copy.copy(out)
        out = self._real(images, *args, **kwargs)
        if self._seen is None:  # the batch's first call (not a probe the masker may run in between)
            self._seen = (images, key, (args, kwargs), copy.copy(out))
        return out

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_real", "_seen"):  # copy / pickle before __init__ ran
            raise AttributeError(name)
        return getattr(self._real, name)


class _PerImage:
    """Stands in for a processor's image processor during one batch's processor calls, where each
    image's output is the same alone as in a batch (:func:`images_join`): each image is processed
    once, alone, and a call's output is its images' outputs joined along their first axis, in
    order. A cut that drops images then costs no image processing at all: the second call joins the
    outputs of the images kept. Anything it cannot join (an output that is neither an array nor a
    list) is the real image processor's own call on the same arguments. The images are held, so
    their ids cannot be reused by other objects."""

    def __init__(self, real: Any):
        self._real = real
        self._done: dict[tuple[int, str], Any] = {}  # (image id, the call's other arguments) -> its output
        self._held: list[Any] = []

    def __call__(self, images: Any, *args: Any, **kwargs: Any) -> Any:
        flat = _flat(images)
        try:
            how = repr((args, sorted(kwargs.items())))
        except Exception:  # noqa: BLE001 - arguments without a repr: the real call
            flat = []
        if not flat:
            return self._real(images, *args, **kwargs)
        outs = []
        for image in flat:
            key = (id(image), how)
            if key not in self._done:
                self._done[key] = self._real([image], *args, **kwargs)
                self._held.append(image)
            outs.append(self._done[key])
        joined = _join(outs)
        return joined if joined is not None else self._real(images, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_real", "_done", "_held"):  # copy / pickle before __init__ ran
            raise AttributeError(name)
        return getattr(self._real, name)


def _flat(images: Any) -> list[Any]:
    """The images of a (nested) list, in order."""
    if isinstance(images, (list, tuple)):
        return [x for item in images for x in _flat(item)]
    return [images]


def _join(outs: Sequence[Any]) -> Any:
    """Image processor outputs joined along their first axis, key by key, as the first one's type
    (a ``BatchFeature``); None when a value is neither an array nor a list."""
    first = outs[0]
    data: dict[str, Any] = {}
    for key in first.keys():
        values = [out[key] for out in outs]
        if all(isinstance(v, np.ndarray) for v in values):
            data[key] = np.concatenate(values, axis=0)
        elif all(hasattr(v, "dim") and hasattr(v, "numpy") and v.device.type == "cpu" for v in values):  # torch
            import torch

            # through NumPy (views, one copy): torch.cat of many small CPU tensors is several times slower
            data[key] = torch.from_numpy(np.concatenate([v.numpy() for v in values], axis=0))
        elif all(isinstance(v, list) for v in values):
            data[key] = [x for v in values for x in v]
        else:
            return None
    try:
        return type(first)(data=data)
    except TypeError:
        return type(first)(data)


def images_join(masker: Any) -> bool:
    """Whether the masker's processor gives the same batch when its image processor works on one
    image at a time and the outputs are joined (:class:`_PerImage`) as when it works on the batch:
    learned once, on two chats with images of different sizes, every output compared exactly (an
    image processor that pads images to the batch's largest, or nests them per row, does not)."""
    if masker._images_join is not None:
        return masker._images_join
    from ._media import call_processor, probe_medium, IMAGE

    processor = masker.processor
    real = processor.image_processor
    try:
        texts = image_chats(lambda m: processor.apply_chat_template(m, chat_template=masker.template_source(),
                                                                    tokenize=False), (1, 2))
        base = probe_medium(processor, IMAGE)
        images = [[base.resize((64, 48))], [base.resize((96, 80)), base.resize((48, 112))]]
        expected = call_processor(processor, texts, images, "np")
        processor.image_processor = _PerImage(real)
        try:
            joined = call_processor(processor, texts, images, "np")
        finally:
            processor.image_processor = real
        found = set(expected.keys()) == set(joined.keys()) and all(
            _same(expected[key], joined[key]) for key in expected.keys())
    except Exception:  # noqa: BLE001 - a template or processor the probe does not fit: the batch's own call
        found = False
    masker._images_join = found
    return found


def _same(a: Any, b: Any) -> bool:
    """Exactly equal outputs (arrays: same shape, dtype and values; anything else by ``==``)."""
    if hasattr(a, "shape") or hasattr(b, "shape"):
        a, b = np.asarray(a), np.asarray(b)
        return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - values that do not compare
        return False


def _ids(images: Any) -> Any:
    """The identity of every image in a (nested) list of images, in its nesting."""
    if isinstance(images, (list, tuple)):
        return tuple(_ids(x) for x in images)
    return id(images)


def fit_batch(masker: Any, samples: Sequence[Any], indices: Sequence[int], max_length: int | None, truncation: str,
              on_image_cut: str, return_tensors: str) -> tuple[dict[str, Any] | None, list[Any], list[Fit]]:
    """A batch through the masker's processor, its rows fitted to ``max_length``.

    Returns:
        The processor's batch with ``labels`` (None when every row was left out), each sample's
        uncut row (:class:`respmask.Encoded`, the processor's ids: what the sample is before any
        cut) and each sample's :class:`Fit`.

    Raises:
        SampleError: a bad sample (as :meth:`ChatMasker.process_batch`), or a long row whose
            image placeholders cannot be told apart.
    """
    processor = masker.processor
    real = getattr(processor, "image_processor", None)
    if max_length is None or real is None or isinstance(real, (_SameImages, _PerImage)):
        return _fit_batch(masker, samples, indices, max_length, truncation, on_image_cut, return_tensors)
    processor.image_processor = _PerImage(real) if images_join(masker) else _SameImages(real)
    try:
        return _fit_batch(masker, samples, indices, max_length, truncation, on_image_cut, return_tensors)
    finally:
        processor.image_processor = real


def _fit_batch(masker: Any, samples: Sequence[Any], indices: Sequence[int], max_length: int | None, truncation: str,
               on_image_cut: str, return_tensors: str) -> tuple[dict[str, Any] | None, list[Any], list[Fit]]:
    """:func:`fit_batch`'s work (the processor's image processor already wrapped, when it is)."""
    encoded, texts, media = masker._media_inputs(samples, indices)
    images = [m["image"] for m in media]
    add_special = adds_special_tokens(masker.processor, texts)
    sources = [(e.input_ids, e.labels != IGNORE_INDEX) for e in encoded]
    out = masker._run_processor(texts, media, return_tensors, add_special)
    batch, full = masker._label_processed(out, sources, encoded, return_tensors)
    fits = [Fit(e.input_ids, e.labels) for e in full]
    long = [r for r, e in enumerate(full) if max_length is not None and len(e.input_ids) > max_length]
    if not long:
        return batch, full, fits
    assert max_length is not None
    plans: dict[int, _Plan] = {}
    for r in long:
        other = {kind: len(items) for kind, items in media[r].items() if kind != "image" and items}
        if other:
            held = " and ".join(f"{n} {kind}" for kind, n in other.items())
            raise SampleError(
                f"is {len(full[r].input_ids)} tokens, longer than max_length={max_length}, and holds {held}: respmask "
                "cuts long chats between images only, not yet through audio or video. Raise max_length, or leave "
                "such rows out", indices[r])
        plans[r] = _plan(masker, texts[r], encoded[r].input_ids, sources[r][1], full[r].input_ids, images[r],
                         max_length, truncation, indices[r])
    for _ in range(16):  # a cut row still too long is cut further (a merge at the cut); one pass is the rule
        for r, plan in plans.items():
            dropped = plan.kept()[2]
            if dropped and on_image_cut == "drop" and fits[r].left_out is None:
                n = len(full[r].input_ids)
                fits[r] = Fit(None, None, True, dropped, (
                    f"left out: {n} tokens, longer than max_length={max_length}, and cutting it "
                    f"({truncation}) would drop {dropped} of its {len(images[r])} image(s) (on_image_cut='drop'); "
                    "raise max_length, or on_image_cut='truncate' to keep its text and the images that fit"))
        kept = [r for r in range(len(full)) if fits[r].left_out is None]
        if not kept:
            return None, full, fits
        cut_texts, cut_images, cut_sources = [], [], []
        for r in kept:
            if r in plans:
                text, imgs, _ = plans[r].kept()
                cut_texts.append(text)
                cut_images.append({**media[r], "image": imgs})
                cut_sources.append(plans[r].source())
            else:
                cut_texts.append(texts[r])
                cut_images.append(media[r])
                cut_sources.append(sources[r])
        out = masker._run_processor(cut_texts, cut_images, return_tensors, add_special)
        batch, rows = masker._label_processed(out, cut_sources, [full[r] for r in kept], return_tensors)
        over = False
        for r, row in zip(kept, rows):
            if r not in plans:
                continue
            excess = len(row.input_ids) - max_length
            if excess > 0:
                plans[r].shrink(excess, truncation)
                over = True
            else:
                fits[r] = Fit(row.input_ids, row.labels, True, plans[r].kept()[2])
        if not over:
            return batch, full, fits
    raise SampleError(f"could not be cut to max_length={max_length} through the processor "
                      f"({type(masker.processor).__name__}); raise max_length", indices[long[0]])
