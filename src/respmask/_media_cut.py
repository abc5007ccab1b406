"""Chats with images or audio cut to ``max_length`` without ever separating an image's tokens from its
pixels (an audio clip's from its features).

Audio is cut as images are (each kind counted by its own token, learned the same way:
:func:`media_counter`), on the two-call path: a batch holding audio is never predicted in one
call; where the feature extractor's outputs join per clip (:func:`clips_join`), each clip's
features are made once and the second call joins those of the clips kept. A long row holding video
is refused.

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
   (the batch's images in one call of the image processor, its output split per image where that
   split is each image's own output: :class:`_Split`) and the second call joins the outputs of the
   images kept (:class:`_PerImage`); elsewhere (an image processor that pads images to the batch,
   or nests them per row) the first call's output is given back when the cut dropped no image
   (:class:`_SameImages`). A row still too long (a tokenizer may merge differently at the cut) is
   cut a little further and run again.

Where the image outputs join per image, the first call is not needed (:func:`_one_call`): the
whole rows' ids are predicted from their text tokens (each image processed first; what the call
makes of the few tokens around an image learned from the processor's own call on that window and
remembered), the cut is planned on them as above, and the processor runs once, on the cut rows.
Its ids are checked against the prediction; any difference, and the batch is made as above.

The labels are the text's trained tokens carried onto the new ids, as for any row (image tokens
never trained). With ``on_image_cut="drop"`` a row whose cut would drop an image is left out of
the batch instead, with its reason. Which token counts the images (one per image in the render:
``<|vision_start|>``, ``<start_of_image>``, ``<image>`` ...) and the audio clips
(``<|audio_bos|>``, ``<start_of_audio>`` ...) is learned from the processor's chat template, not
from a table.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from ._errors import SampleError
from ._masks import IGNORE_INDEX, as_numpy
from ._media import (AUDIO, IMAGE, MODALITIES, Modality, _runs, adds_special_tokens, align, call_processor,
                     carry_mask, image_chats, probe_medium, probe_part)

OnImageCut = Literal["truncate", "drop"]
ON_IMAGE_CUT = ("truncate", "drop")


@dataclass
class Fit:
    """One row of a processor batch fitted to ``max_length``.

    ``input_ids`` / ``labels`` are the processor's row (cut when ``truncated``); ``images_dropped``
    and ``audio_dropped`` count the images and audio clips the cut removed; ``left_out`` says why
    the row was left out of the batch (``on_image_cut="drop"``; its ids are then None)."""

    input_ids: np.ndarray | None
    labels: np.ndarray | None
    truncated: bool = False
    images_dropped: int = 0
    left_out: str | None = None
    audio_dropped: int = 0


def _fit(input_ids: Any, labels: Any, dropped: dict[str, int], left_out: str | None = None) -> Fit:
    """A cut row's :class:`Fit`, with the media the cut dropped by kind."""
    return Fit(input_ids, labels, True, dropped.get("image", 0), left_out, dropped.get("audio", 0))


def _how_many(counts: dict[str, int]) -> str:
    """Media counts by kind in words: ``2 image(s) and 1 audio clip(s)``."""
    words = {"image": "image(s)", "audio": "audio clip(s)"}
    return " and ".join(f"{n} {words.get(kind, kind)}" for kind, n in counts.items() if n)


@dataclass
class _Plan:
    """How one long row is cut: its text tokens grouped in units (a run of media tokens is one),
    the units kept ``[first, last)``, and what each unit becomes in the processor's ids."""

    text: str
    ids: np.ndarray  # the rendered text's tokens
    trained: np.ndarray  # their trained mask
    starts: np.ndarray  # first token of each unit (plus the end)
    chars: np.ndarray  # first character of each unit (plus the text's length)
    size: np.ndarray  # ids each unit becomes (its media's tokens included), estimated from the alignment
    counts: dict[str, np.ndarray]  # for each kind of media the row holds: the items each unit holds
    media: dict[str, list[Any]]  # the row's media, by kind
    first: int
    last: int

    def kept(self) -> tuple[str, dict[str, list[Any]], dict[str, int]]:
        """The text kept, the row's media with only the items kept, and how many items of each
        kind were dropped (the kinds that lost none: 0)."""
        text = self.text[self.chars[self.first]:self.chars[self.last]]
        media = dict(self.media)
        dropped = {}
        for kind, counts in self.counts.items():
            before = int(counts[:self.first].sum())
            n = int(counts[self.first:self.last].sum())
            media[kind] = self.media[kind][before:before + n]
            dropped[kind] = len(self.media[kind]) - n
        return text, media, dropped

    def before(self, kind: str) -> int:
        """How many items of ``kind`` the units cut from the start hold."""
        counts = self.counts.get(kind)
        return int(counts[:self.first].sum()) if counts is not None else 0

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
    return media_counter(masker, IMAGE)


def media_counter(masker: Any, modality: Modality, single: bool = False) -> int | None:
    """A token the masker's chat template writes once per media part of this kind (an image's
    ``<|vision_start|>``, an audio clip's ``<|audio_bos|>`` or ``<start_of_audio>`` ...), learned
    once from the processor's own render of one part and of two, or None when no token does.
    ``single``: a token it writes once for a turn holding one part (Audio Flamingo 3 writes one
    ``<sound>`` per turn however many clips it holds): it counts the one item of a row holding one."""
    known = masker._media_counters
    key = (modality.kind, single)
    if key not in known:
        known[key] = _learn_counter(masker, modality, single)
    return known[key] if known[key] >= 0 else None


def _learn_counter(masker: Any, modality: Modality, single: bool = False) -> int:
    """:func:`media_counter`'s probe: the renders of a user turn holding 0, 1 and 2 parts of this
    kind, tokenized; the media token whose count grows by one per part (``single``: by one for one
    part), the lowest id when several do, or -1."""
    processor, tok = masker.processor, masker.processor.tokenizer
    media = set(masker.media_tokens().tolist())

    def render(messages: list[dict]) -> str:
        return processor.apply_chat_template(messages, chat_template=masker.template_source(), tokenize=False)

    try:
        part = None if modality is IMAGE else probe_part(processor, modality)
        texts = image_chats(render, (0, 1, 2), part)
    except Exception:  # noqa: BLE001 - the template takes the reply in neither form: no counter
        return -1
    c0, c1, c2 = ({i: ids.count(i) for i in media} for ids in
                  (tok(text, add_special_tokens=False)["input_ids"] for text in texts))
    once = sorted(i for i in media if c1[i] - c0[i] == 1 and (single or c2[i] - c0[i] == 2))
    return once[0] if once else -1


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


def _spelled_offsets(masker: Any, text: str, ids: np.ndarray) -> np.ndarray | None:
    """Each token's (start, end) in ``text`` without tokenizing it again, where the tokens spell it
    byte for byte (a byte-level BPE tokenizer, ASCII text, every token's length known from the
    vocabulary and none that swallows whitespace, the lengths adding up to the text's): the offsets
    the tokenizer gives (see :mod:`respmask._byte_lengths`). None elsewhere (the caller
    tokenizes)."""
    table = masker._byte_lengths(masker.backend())
    if table is None or table.spelling.style != "bytelevel" or not text.isascii() or not len(ids):
        return None
    if int(ids.max()) >= len(table.lengths) or ids.min() < 0:
        return None
    lengths = table.lengths[ids]
    if lengths.min() <= 0 or table.absorbs[ids].any() or int(lengths.sum()) != len(text):
        return None
    if table.guard is not None and table.guard.search(text):
        return None
    ends = np.cumsum(lengths)
    return np.stack([ends - lengths, ends], axis=1)


def _plan(masker: Any, text: str, ids: np.ndarray, trained: np.ndarray, b: np.ndarray, media: dict[str, list[Any]],
          max_length: int, side: str, index: int, tokens: tuple[np.ndarray, np.ndarray, Any] | None = None,
          match: np.ndarray | None = None) -> _Plan:
    """Where to cut one row (see the module doc); ``tokens``: :func:`_text_tokens` of the row and
    ``match``: ``align(tokens' ids, b)``, when the caller has them already."""
    ids, trained, offsets = tokens if tokens is not None else _text_tokens(masker, text, ids, trained)
    n = len(ids)
    media_at = np.isin(ids, masker.media_tokens())
    new_unit = np.ones(n, dtype=bool)
    new_unit[1:] = ~(media_at[1:] & media_at[:-1])  # a run of media tokens is one unit
    starts = np.append(np.flatnonzero(new_unit), n)
    first_char = np.array([offsets[i][0] for i in starts[:-1]] + [len(text)], dtype=np.int64)
    # a special token the tokenizer adds (BOS) has no characters: its unit starts at 0
    first_char = np.maximum.accumulate(first_char)
    counts: dict[str, np.ndarray] = {}
    for modality in MODALITIES:
        items = media.get(modality.kind) or []
        if not items:
            continue
        counter = media_counter(masker, modality)
        if counter is None and len(items) == 1:  # a template that marks a turn, not each part: its one item
            counter = media_counter(masker, modality, single=True)
        per_token = (ids == counter) if counter is not None else np.zeros(n, dtype=bool)
        counts[modality.kind] = (np.add.reduceat(per_token.astype(np.int64), starts[:-1]) if n
                                 else np.zeros(0, dtype=np.int64))
        found = int(counts[modality.kind].sum())
        if found != len(items):
            raise SampleError(
                f"is longer than max_length={max_length} and cannot be cut between its media: respmask finds "
                f"{found} {modality.kind} placeholder(s) in its render for {len(items)} {modality.kind} item(s). "
                "Raise max_length, or leave such rows out", index)
    # what each unit becomes in the processor's ids: from after the last matched token before it to
    # the first matched token after it (an image's expansion, which matches nothing, is in between)
    if match is None:
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
    return _Plan(text, ids, trained, starts, first_char, size, counts, {k: list(v) for k, v in media.items()},
                 first, last)


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


class _PerItem:
    """Stands in for a processor's media handler (its image processor, its audio feature extractor)
    during one batch's processor calls, where an item's output is the same taken from a batch of
    items as from any other (the subclasses say how that is known): the items not processed yet
    are processed in one call of the real handler and its output split per item (:meth:`_splitter`),
    each item's output is kept, and a call's output is its items' outputs joined along their first
    axis, in order. A call on the very items of one such split call, in its order, gets that call's
    output back (the same bytes, not joined again). A cut that drops items then costs no processing
    at all: the call on the cut rows joins the outputs of the items kept. Anything it cannot split or
    join is the real handler's own call on the same arguments. The items are held, so their ids
    cannot be reused by other objects.

    ``nested``: the call's items come nested per row (images), else as one flat list (audio clips,
    which may themselves be lists of samples). ``alone``: an item may be processed alone, in a call
    of its own (images: :func:`images_join` compared exactly that), so an item the split does not
    give is processed alone; elsewhere the call is the real handler's."""

    nested = True
    alone = True

    def __init__(self, real: Any):
        self._real = real
        self._done: dict[tuple[int, str], Any] = {}  # (item id, the call's other arguments) -> its output
        self._held: list[Any] = []
        # the call's other arguments -> the last split call of the real one: its items' ids, its output
        self._whole: dict[str, tuple[tuple[int, ...], Any]] = {}
        self.touched: set[tuple[int, str]] | None = None  # when a set: the outputs read since, by key
        self.joins = 0  # calls answered by joining outputs (counted for the probes)

    def _splitter(self, how: str, args: tuple, kwargs: dict) -> Any:
        """How the real handler's output on n items splits per item, for calls with these other
        arguments: a function (output, n) -> each item's output or None; None when unknown."""
        raise NotImplementedError

    def __call__(self, items: Any, *args: Any, **kwargs: Any) -> Any:
        if self.nested:
            flat = _flat(items)
        else:
            flat = list(items) if isinstance(items, (list, tuple)) else []
        try:
            how = self.how(args, kwargs)
        except Exception:  # noqa: BLE001 - arguments without a repr: the real call
            flat = []
        if not flat:
            return self._real(items, *args, **kwargs)
        self._fill(flat, how, args, kwargs)
        if self.alone:
            outs = [self._one(item, how, args, kwargs) for item in flat]
        else:
            outs = [self._done.get((id(item), how)) for item in flat]
        whole = self._whole.get(how)
        if whole is not None and whole[0] == tuple(id(item) for item in flat):
            # a shallow copy, as the processor may take keys out of what it gets
            return copy.copy(whole[1])
        joined = _join(outs) if all(out is not None for out in outs) else None
        if joined is None:
            return self._real(items, *args, **kwargs)
        self.joins += 1
        return joined

    def _one(self, item: Any, how: str, args: tuple, kwargs: dict) -> Any:
        key = (id(item), how)
        if self.touched is not None:
            self.touched.add(key)
        if key not in self._done:
            self._done[key] = self._real([item], *args, **kwargs)
            self._held.append(item)
        return self._done[key]

    def _fill(self, items: Sequence[Any], how: str, args: tuple, kwargs: dict) -> None:
        """The outputs of those of ``items`` not processed yet, from one call of the real handler
        split per item, where the split is known and explains the call's output (images: a single
        new image is processed alone when read)."""
        todo = list({id(item): item for item in items if (id(item), how) not in self._done}.values())
        if len(todo) < (2 if self.alone else 1):
            return
        split = self._splitter(how, args, kwargs)
        if split is None:
            return
        try:
            out = self._real(todo, *args, **kwargs)
            parts = split(out, len(todo))
        except Exception:  # noqa: BLE001 - a batch the real call rejects: each item alone (its own error)
            if not self.alone:
                raise
            return
        if parts is None and self.alone:
            return  # each item alone, when read
        self._whole[how] = (tuple(id(item) for item in todo), out)  # a call on exactly these items gets it back
        if parts is None:
            return
        for item, part in zip(todo, parts):
            self._done[(id(item), how)] = part
            self._held.append(item)

    def output(self, item: Any, args: tuple, kwargs: dict) -> Any:
        """One item's output for a call with these other arguments (processed now unless it was):
        what a processor call passing them gets for this item, without processing it again."""
        return self._one(item, self.how(args, kwargs), args, kwargs)

    def prepare(self, items: Sequence[Any], args: tuple, kwargs: dict) -> None:
        """The outputs of ``items`` for a call with these other arguments, had now, in as few
        calls of the real handler as can be (see the class doc); :meth:`output` reads them."""
        try:
            how = self.how(args, kwargs)
        except Exception:  # noqa: BLE001 - arguments without a repr: read one by one (output raises)
            return
        self._fill(items, how, args, kwargs)

    @staticmethod
    def how(args: tuple, kwargs: dict) -> str:
        """The key of a call's other arguments (its outputs are held per item and key)."""
        return repr((args, sorted(kwargs.items())))

    def __getattr__(self, name: str) -> Any:
        # copy / pickle before __init__ ran
        if name.startswith("__") or name in ("_real", "_splits", "_done", "_held", "_whole", "touched", "joins"):
            raise AttributeError(name)
        return getattr(self._real, name)


class _PerImage(_PerItem):
    """:class:`_PerItem` for a processor's image processor, where each image's output is the same
    alone as in a batch (:func:`images_join`). A batch's new images are processed in one call split
    per image (:class:`_Split`, learned once per call arguments and kept in ``splits``, a store on
    the masker), where the split is the same, byte for byte, as each image's own call; elsewhere (no
    ``splits``, a split not learned, or a batch it does not explain) each image is processed alone."""

    def __init__(self, real: Any, splits: dict[str, _Split | None] | None = None):
        super().__init__(real)
        self._splits = splits

    def _splitter(self, how: str, args: tuple, kwargs: dict) -> Any:
        if self._splits is None:
            return None
        if how not in self._splits:
            self._splits[how] = _Split.learn(self._real, args, kwargs)
        split = self._splits[how]
        return None if split is None else split.apply


_SPLIT_PROBE = ((64, 48), (96, 80), (48, 112), (140, 36))  # the sizes of the probe's images (differ in shape)


@dataclass(frozen=True)
class _Split:
    """How one call of an image processor on several images splits into each image's own output,
    learned from the image processor's outputs on a probe (:meth:`learn`): the output's type, its
    keys in order, each value's type, and for each key how many of its first axis's rows each image
    has: one (``lengths`` None), or, for a key whose rows are pieces of images (patches, crops), the
    product of the image's row of another key (``by``: a grid such as ``(t, h, w)``, a crop count)
    plus ``offset``. Checked on every batch: the rows of each key must be what these say, in total."""

    container: type
    keys: tuple[str, ...]
    kinds: tuple[type, ...]
    lengths: tuple[tuple[str, int] | None, ...]  # per key: None (one row per image), or (by, offset)

    @staticmethod
    def learn(real: Any, args: tuple, kwargs: dict) -> _Split | None:
        """The split of ``real``'s outputs for calls with these other arguments: the probe's images
        (of different sizes, in noise) processed in one call and each alone, the one call's output
        split as found and compared with each image's own, byte for byte. None when a value is not
        an array, tensor or list, when a key's rows per image are not one each nor the product of
        another key's row (plus a constant), or when any split part differs from its image's own."""
        from PIL import Image

        rng = np.random.default_rng(0)
        images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in _SPLIT_PROBE]
        try:
            batch = real(images, *args, **kwargs)
            alone = [real([image], *args, **kwargs) for image in images]
            keys = tuple(batch.keys())
            if any(type(one) is not type(batch) or tuple(one.keys()) != keys for one in alone):
                return None
            kinds = tuple(type(batch[key]) for key in keys)
            rows = {}
            for key, kind in zip(keys, kinds):
                if not _sliceable(batch[key]) or any(type(one[key]) is not kind for one in alone):
                    return None
                rows[key] = [len(one[key]) for one in alone]
            ones = [key for key in keys if all(r == 1 for r in rows[key])]
            lengths: list[tuple[str, int] | None] = []
            for key in keys:
                if key in ones:
                    lengths.append(None)
                    continue
                want = np.asarray(rows[key], dtype=np.int64)
                if len(set(want.tolist())) < 2:  # every image the same length: what it is the length of is unknown
                    return None
                found = None
                for by in ones:
                    products = _products(batch[by], len(images))
                    if products is not None and len(set((want - products).tolist())) == 1:
                        found = (by, int(want[0] - products[0]))
                        break
                if found is None:
                    return None
                lengths.append(found)
            split = _Split(type(batch), keys, kinds, tuple(lengths))
            parts = split.apply(batch, len(images))
            if parts is None or not all(_identical(part, one) for part, one in zip(parts, alone)):
                return None
            return split
        except Exception:  # noqa: BLE001 - an image processor the probe does not fit: each image alone
            return None

    def apply(self, out: Any, n: int) -> list[Any] | None:
        """``out`` (one call on ``n`` images) split into each image's output, in order; None when
        ``out`` is not what this split explains (other keys or types, rows that do not add up)."""
        if type(out) is not self.container or tuple(out.keys()) != self.keys:
            return None
        bounds: dict[str, np.ndarray] = {}
        for key, kind, how in zip(self.keys, self.kinds, self.lengths):
            value = out[key]
            if type(value) is not kind or not _sliceable(value):
                return None
            if how is None:
                sizes = np.ones(n, dtype=np.int64)
            else:
                by, offset = how
                products = _products(out[by], n)
                if products is None:
                    return None
                sizes = products + offset
            if len(sizes) != n or (sizes < 0).any() or int(sizes.sum()) != len(value):
                return None
            bounds[key] = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        return [_output(self.container, {key: out[key][bounds[key][i]:bounds[key][i + 1]] for key in self.keys})
                for i in range(n)]


def _output(container: type, data: dict[str, Any]) -> Any:
    """An output of the processor's type (a ``BatchFeature``, or a plain mapping) holding ``data``."""
    try:
        return container(data=data)
    except TypeError:
        return container(data)


def _sliceable(value: Any) -> bool:
    """An output value split along its first axis: a NumPy array or CPU tensor with one, or a list."""
    if isinstance(value, np.ndarray):
        return value.ndim >= 1
    if hasattr(value, "dim") and hasattr(value, "numpy"):  # torch
        return value.dim() >= 1 and value.device.type == "cpu"
    return isinstance(value, list)


def _products(value: Any, n: int) -> np.ndarray | None:
    """The product of each of the ``n`` rows of an integer array or tensor (a grid's patches, a
    crop count); None for anything else."""
    if hasattr(value, "dim") and hasattr(value, "numpy"):  # torch
        value = value.numpy()
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "iu" or value.ndim < 1 or len(value) != n:
        return None
    return value.reshape(n, -1).astype(np.int64).prod(axis=1)


def _identical(a: Any, b: Any) -> bool:
    """The same output exactly: same types throughout, arrays and tensors of the same dtype, shape
    and bytes, lists and mappings item by item (keys in order), anything else by ``==``."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return (a.dtype == b.dtype and a.shape == b.shape
                and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes())
    if hasattr(a, "dim") and hasattr(a, "numpy"):  # torch
        return (a.dtype == b.dtype and tuple(a.shape) == tuple(b.shape) and a.device == b.device
                and _identical(a.detach().cpu().contiguous().numpy(), b.detach().cpu().contiguous().numpy()))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_identical(x, y) for x, y in zip(a, b))
    if hasattr(a, "keys"):
        return list(a.keys()) == list(b.keys()) and all(_identical(a[k], b[k]) for k in a.keys())
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - values that do not compare
        return False


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
    return _output(type(first), data)


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
            _identical(expected[key], joined[key]) for key in expected.keys())
    except Exception:  # noqa: BLE001 - a template or processor the probe does not fit: the batch's own call
        found = False
    masker._images_join = found
    return found


def _audio_attribute(processor: Any) -> str | None:
    """The name of the processor's attribute its call gives the audio to (``audio_processor``, else
    ``feature_extractor``, as transformers' processors read it), or None when it has neither."""
    for name in AUDIO.handlers:
        if getattr(processor, name, None) is not None:
            return name
    return None


def clips_join(masker: Any) -> bool:
    """Whether the masker's processor gives the same batch when its audio feature extractor's rows
    for clips extracted in another batch are joined (:class:`_PerClip`) as when it extracts them:
    learned once, on a probe (three clips of three lengths extracted in one batch, then two of them
    joined in a call of their own), every output compared exactly (a feature extractor that pads
    clips to the batch's longest does not join; Whisper's, which pads each to 30 s, does). Where
    they join, the call on a batch's cut rows extracts no clip's features again."""
    sp = _splices(masker)
    if sp.clips_join is None:
        sp.clips_join = _learn_clips_join(masker)
    return sp.clips_join


def _learn_clips_join(masker: Any) -> bool:
    """:func:`clips_join`'s probe."""
    processor = masker.processor
    name = _audio_attribute(processor)
    if name is None:
        return False
    real = getattr(processor, name)
    try:
        part = probe_part(processor, AUDIO)
        one, two = image_chats(lambda m: processor.apply_chat_template(m, chat_template=masker.template_source(),
                                                                       tokenize=False), (1, 2), part)
        clip = part["audio"]
        n = len(clip)
        short, long, middle = clip[:n // 2], clip, clip[:3 * n // 4]
        later = [{"audio": [short]}, {"audio": [middle]}]  # not the longest: a batch padded to it differs
        expected = call_processor(processor, [one, one], later, "np")
        wrapper = _PerClip(real)
        setattr(processor, name, wrapper)
        try:
            call_processor(processor, [two, one], [{"audio": [middle, long]}, {"audio": [short]}], "np")
            joined = call_processor(processor, [one, one], later, "np")  # rows of the batch above
        finally:
            setattr(processor, name, real)
        return wrapper.joins == 1 and set(expected.keys()) == set(joined.keys()) and all(
            _identical(expected[key], joined[key]) for key in expected.keys())
    except Exception:  # noqa: BLE001 - a template or processor the probe does not fit: the batch's own calls
        return False


class _PerClip(_PerItem):
    """:class:`_PerItem` for a processor's audio feature extractor, where its rows for clips
    extracted in one batch join into any other batch of them (:func:`clips_join`): each output value
    has one row per clip (:func:`_rows`). The clips come as one flat list; a clip is never extracted
    alone (that was not compared), so a call with a clip whose rows are not kept is the real one."""

    nested = False
    alone = False

    def _splitter(self, how: str, args: tuple, kwargs: dict) -> Any:
        return _rows


def _rows(out: Any, n: int) -> list[Any] | None:
    """An extractor's output on ``n`` clips as each clip's rows (every value's first axis, one row
    per clip), as the output's type; None when a value is not an array, CPU tensor or list of ``n``:
    the :class:`_Split` of one row per item, of this output's own keys and types."""
    if not hasattr(out, "keys"):
        return None
    keys = tuple(out.keys())
    return _Split(type(out), keys, tuple(type(out[key]) for key in keys), (None,) * len(keys)).apply(out, n)


def _ids(images: Any) -> Any:
    """The identity of every image in a (nested) list of images, in its nesting."""
    if isinstance(images, (list, tuple)):
        return tuple(_ids(x) for x in images)
    return id(images)


def fit_batch(masker: Any, samples: Sequence[Any], indices: Sequence[int], max_length: int | None, truncation: str,
              on_image_cut: str, return_tensors: str, padding_side: str | None = None
              ) -> tuple[dict[str, Any] | None, list[Any], list[Fit]]:
    """A batch through the masker's processor, its rows fitted to ``max_length`` (and padded on
    ``padding_side``; default: the tokenizer's).

    Returns:
        The processor's batch with ``labels`` (None when every row was left out), each sample's
        uncut row (:class:`respmask.Encoded`, the processor's ids: what the sample is before any
        cut) and each sample's :class:`Fit`.

    Raises:
        SampleError: a bad sample (as :meth:`ChatMasker.process_batch`), or a long row whose
            image placeholders cannot be told apart.
    """
    processor = masker.processor
    audio = _audio_attribute(processor) if max_length is not None else None
    if audio is not None and not isinstance(getattr(processor, audio), _PerClip) and clips_join(masker):
        # each clip's features made once: the call on the cut rows joins those of the clips kept
        real_audio = getattr(processor, audio)
        setattr(processor, audio, _PerClip(real_audio))
        try:
            return fit_batch(masker, samples, indices, max_length, truncation, on_image_cut, return_tensors,
                             padding_side)
        finally:
            setattr(processor, audio, real_audio)
    real = getattr(processor, "image_processor", None)
    if max_length is None or real is None or isinstance(real, (_SameImages, _PerImage)):
        return _fit_batch(masker, samples, indices, max_length, truncation, on_image_cut, return_tensors, padding_side)
    processor.image_processor = _PerImage(real, _splices(masker).splits) if images_join(masker) else _SameImages(real)
    try:
        return _fit_batch(masker, samples, indices, max_length, truncation, on_image_cut, return_tensors, padding_side)
    finally:
        processor.image_processor = real


def _fit_batch(masker: Any, samples: Sequence[Any], indices: Sequence[int], max_length: int | None, truncation: str,
               on_image_cut: str, return_tensors: str, padding_side: str | None
               ) -> tuple[dict[str, Any] | None, list[Any], list[Fit]]:
    """:func:`fit_batch`'s work (the processor's image processor already wrapped, when it is): one
    processor call on the final rows where the cut can be planned from the text (:func:`_one_call`),
    else two (:func:`_two_calls`)."""
    inputs = masker._media_inputs(samples, indices)
    if max_length is not None and isinstance(getattr(masker.processor, "image_processor", None), _PerImage):
        done = _one_call(masker, inputs, indices, max_length, truncation, on_image_cut, return_tensors, padding_side)
        if done is not None:
            return done
    return _two_calls(masker, inputs, indices, max_length, truncation, on_image_cut, return_tensors, padding_side)


def _refuse_other_media(media: Any, full_length: int, max_length: int, index: int) -> None:
    """A long row holding video is not cut (yet): the error that says so. (Images and audio are
    cut between.)"""
    other = {kind: len(items) for kind, items in media.items() if kind not in ("image", "audio") and items}
    if other:
        held = " and ".join(f"{n} {kind}" for kind, n in other.items())
        raise SampleError(
            f"is {full_length} tokens, longer than max_length={max_length}, and holds {held}: respmask "
            "cuts long chats between images and audio clips, not yet through video. Raise max_length, or leave "
            "such rows out", index)


def _left_out(n: int, max_length: int, truncation: str, dropped: dict[str, int], media: dict[str, list[Any]]) -> Fit:
    """The :class:`Fit` of a row ``on_image_cut="drop"`` leaves out, with its reason."""
    lost = " and ".join(f"{k} of its {_how_many({kind: len(media[kind])})}" for kind, k in dropped.items() if k)
    return _fit(None, None, dropped, (
        f"left out: {n} tokens, longer than max_length={max_length}, and cutting it "
        f"({truncation}) would drop {lost} (on_image_cut='drop'); "
        f"raise max_length, or on_image_cut='truncate' to keep its text and the "
        f"{'images' if set(k for k, n in dropped.items() if n) <= {'image'} else 'media'} that fit"))


def _two_calls(masker: Any, inputs: tuple[list[Any], list[str], list[Any]], indices: Sequence[int],
               max_length: int | None, truncation: str, on_image_cut: str, return_tensors: str,
               padding_side: str | None = None) -> tuple[dict[str, Any] | None, list[Any], list[Fit]]:
    """The processor on the whole rows, then on the cut rows (see the module doc)."""
    encoded, texts, media = inputs
    add_special = adds_special_tokens(masker.processor, texts)
    sources = [(e.input_ids, e.labels != IGNORE_INDEX) for e in encoded]
    out = masker._run_processor(texts, media, return_tensors, add_special, padding_side)
    batch, full = masker._label_processed(out, sources, encoded, return_tensors)
    fits = [Fit(e.input_ids, e.labels) for e in full]
    long = [r for r, e in enumerate(full) if max_length is not None and len(e.input_ids) > max_length]
    if not long:
        return batch, full, fits
    assert max_length is not None
    plans: dict[int, _Plan] = {}
    for r in long:
        _refuse_other_media(media[r], len(full[r].input_ids), max_length, indices[r])
        plans[r] = _plan(masker, texts[r], encoded[r].input_ids, sources[r][1], full[r].input_ids, media[r],
                         max_length, truncation, indices[r])
    for _ in range(16):  # a cut row still too long is cut further (a merge at the cut); one pass is the rule
        for r, plan in plans.items():
            dropped = plan.kept()[2]
            if any(dropped.values()) and on_image_cut == "drop" and fits[r].left_out is None:
                fits[r] = _left_out(len(full[r].input_ids), max_length, truncation, dropped, media[r])
        kept = [r for r in range(len(full)) if fits[r].left_out is None]
        if not kept:
            return None, full, fits
        cut_texts, cut_images, cut_sources = [], [], []
        for r in kept:
            if r in plans:
                text, kept_media, _ = plans[r].kept()
                cut_texts.append(text)
                cut_images.append(kept_media)
                cut_sources.append(plans[r].source())
            else:
                cut_texts.append(texts[r])
                cut_images.append(media[r])
                cut_sources.append(sources[r])
        try:
            out = masker._run_processor(cut_texts, cut_images, return_tensors, add_special, padding_side)
        except SampleError as exc:
            lost = [indices[r] for r in kept if r in plans and any(plans[r].kept()[2].values())]
            if not lost:
                raise
            # the processor takes the whole rows but not the cut ones (one that rejects rows with and
            # without audio in one batch, once a cut dropped a row's clip): say that the cut made them
            raise SampleError(
                f"{exc.problem} (the batch as cut to max_length={max_length}: sample(s) "
                f"{', '.join(map(str, lost))} lost media with their text and the processor rejects the batch so "
                "cut; on_image_cut='drop' leaves such samples out, or raise max_length)", exc.index) from exc
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
                fits[r] = _fit(row.input_ids, row.labels, plans[r].kept()[2])
        if not over:
            return batch, full, fits
    raise SampleError(f"could not be cut to max_length={max_length} through the processor "
                      f"({type(masker.processor).__name__}); raise max_length", indices[long[0]])


# -- one processor call: the cut planned from the text ---------------------------------------------

_CONTEXT = 2  # text tokens on each side of an image's tokens in the window the processor is shown


class _Splices:
    """What one masker's processor makes of its rendered text's tokens, learned from its own calls
    (see :func:`_one_call`): the arguments its call gives its image processor (per
    ``return_tensors``), for each window of text tokens around images (with the images'
    output signatures) the ids its call puts in place of the window's middle, and how its image
    processor's output on several images splits per image (:class:`_Split`, per call arguments:
    the cut batches' :class:`_PerImage` read it, in the one-call and the two-call path alike)."""

    def __init__(self) -> None:
        self.args: dict[str, tuple[tuple, dict] | None] = {}
        # window -> (tokens kept before, after, the middle's ids as runs: values, lengths), or None
        self.known: dict[tuple, tuple[int, int, np.ndarray, np.ndarray] | None] = {}
        self.works: bool | None = None  # whole chats are what their windows predict (learned once)
        self.clips_join: bool | None = None  # audio outputs join per clip (learned once, :func:`clips_join`)
        self.adds: bool | None = None  # the tokenizer adds tokens (BOS ...) when asked to (learned once)
        self.splits: dict[str, _Split | None] = {}  # the image processor's arguments -> how its output splits per image


_KNOWN_MAX = 1 << 14  # windows remembered per masker (forgotten all at once past it)


def _splices(masker: Any) -> _Splices:
    """The masker's :class:`_Splices` (made on first use; a pickled masker starts anew)."""
    if masker._splices is None:
        masker._splices = _Splices()
    return masker._splices


def _image_args(masker: Any, return_tensors: str) -> tuple[tuple, dict] | None:
    """The arguments the processor's call gives its image processor besides the images (learned
    once per ``return_tensors``, on two one-image chats): so each image's output can be had before
    the call, as the call will get it. None when the call does not give one list of the images."""
    sp = _splices(masker)
    if return_tensors in sp.args:
        return sp.args[return_tensors]
    processor = masker.processor
    wrapper = processor.image_processor
    seen: list[tuple[Any, tuple, dict]] = []

    class _Record:
        def __call__(self, images: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append((images, args, dict(kwargs)))
            return wrapper(images, *args, **kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(wrapper, name)

    found = None
    try:
        texts = image_chats(lambda m: processor.apply_chat_template(m, chat_template=masker.template_source(),
                                                                    tokenize=False), (1, 1))
        base = probe_medium(processor, IMAGE)
        images = [base.resize((56, 42)), base.resize((84, 70))]
        processor.image_processor = _Record()
        try:
            call_processor(processor, texts, [[images[0]], [images[1]]], return_tensors, False)
        finally:
            processor.image_processor = wrapper
        if len(seen) == 1 and _ids(_flat(seen[0][0])) == _ids(images):
            wrapper.how(seen[0][1], seen[0][2])  # arguments _PerImage can key
            found = (seen[0][1], seen[0][2])
    except Exception:  # noqa: BLE001 - a processor the probe does not fit: two calls
        found = None
    sp.args[return_tensors] = found
    return found


def _adds_tokens(masker: Any) -> bool:
    """Whether the processor's tokenizer adds tokens to a text when asked to (BOS, EOS): the
    prediction is of texts it adds nothing to (learned once)."""
    sp = _splices(masker)
    if sp.adds is None:
        tok = masker.processor.tokenizer
        sp.adds = tok("zq", add_special_tokens=True)["input_ids"] != tok("zq", add_special_tokens=False)["input_ids"]
    return sp.adds


def _signature(value: Any) -> Any:
    """What an image processor's output says of an image's size: every value's type and shape, and
    the values of small integer arrays (grids, crop counts, sizes); not the pixels. Images of one
    signature expand to the same tokens (checked on every batch's kept images, see _one_call)."""
    if hasattr(value, "keys"):
        return tuple((key, _signature(value[key])) for key in sorted(value.keys()))
    if isinstance(value, np.ndarray):  # its values only when small ints
        small = value.dtype.kind in "iub" and value.size <= 256
        return ("array", value.dtype, value.shape, value.tobytes() if small else None)
    if hasattr(value, "is_floating_point") and hasattr(value, "detach"):  # a torch tensor, read as NumPy when small
        if value.is_floating_point() or value.numel() > 256:
            return ("array", value.dtype, tuple(value.shape), None)
        return _signature(value.detach().cpu().numpy())
    if isinstance(value, (list, tuple)):
        return ("list", tuple(_signature(v) for v in value))
    return ("value", repr(value))


@dataclass
class _Row:
    """One rendered row as the processor's call is predicted on it: its text tokens (``ids``, their
    character ``offsets`` in ``text``), the stretch ``[lo, hi)`` of them the call is given (the
    characters ``[c_lo, c_hi)``), and each image's signature, in order."""

    text: str
    ids: np.ndarray
    offsets: Any
    lo: int
    hi: int
    c_lo: int
    c_hi: int
    sigs: list[Any]
    units: list[tuple[int, int, int]] | None = None  # its image units (_units), once found


def _windows(row: _Row, units: list[tuple[int, int, int]]) -> list[tuple[int, int, int, int]]:
    """The windows of a row: each image unit (a run of media tokens: start, end, images in it) with
    ``_CONTEXT`` tokens on each side, overlapping windows merged: (start, end, first image, images)."""
    out: list[list[int]] = []
    k = 0
    for a, b, n in units:
        w0, w1 = max(row.lo, a - _CONTEXT), min(row.hi, b + _CONTEXT)
        if out and w0 <= out[-1][1]:
            out[-1][1] = w1
            out[-1][3] += n
        else:
            out.append([w0, w1, k, n])
        k += n
    return [tuple(w) for w in out]  # type: ignore[misc]


def _units(masker: Any, row: _Row) -> list[tuple[int, int, int]] | None:
    """The image units of ``row``'s stretch (start, end, images held), None when they do not hold
    its images one placeholder each."""
    if row.units is not None:
        return row.units
    ids = row.ids[row.lo:row.hi]
    counter = image_counter(masker)
    if counter is None:
        return None
    media = np.isin(ids, masker.media_tokens())
    edges = np.flatnonzero(np.diff(np.concatenate([[0], media.astype(np.int8), [0]])))
    units = []
    for a, b in zip(edges[::2].tolist(), edges[1::2].tolist()):
        n = int(np.count_nonzero(ids[a:b] == counter))
        if n:
            units.append((row.lo + a, row.lo + b, n))
    if sum(n for _, _, n in units) != len(row.sigs):
        return None
    row.units = units
    return units


def _window_key(row: _Row, w: tuple[int, int, int, int]) -> tuple:
    w0, w1, k, n = w
    return (row.ids[w0:w1].tobytes(), w0 == row.lo, w1 == row.hi, tuple(row.sigs[k:k + n]))


def _learn_windows(masker: Any, rows: Sequence[tuple[_Row, list[Any]]], return_tensors: str) -> bool:
    """The processor's call on every window of ``rows`` not known yet (``rows``: each row and its
    images), in one call; what it puts in place of each window's middle is remembered. False when
    the call fails."""
    sp = _splices(masker)
    todo: dict[tuple, tuple[str, np.ndarray, list[Any]]] = {}
    backend = masker.backend()
    for row, images in rows:
        units = _units(masker, row)
        if units is None:
            return False
        for w in _windows(row, units):
            key = _window_key(row, w)
            if key in sp.known or key in todo:
                continue
            w0, w1, k, n = w
            if row.offsets is None:
                enc = backend.encode(row.text, add_special_tokens=False)
                if not np.array_equal(np.asarray(enc.ids, dtype=np.int64), row.ids):
                    return False  # the masker's tokens are not the text's own: two calls
                row.offsets = enc.offsets
            c0 = row.c_lo if w0 == row.lo else row.offsets[w0][0]
            c1 = row.c_hi if w1 == row.hi else row.offsets[w1 - 1][1]
            snippet = row.text[c0:c1]
            tokens = np.asarray(backend.encode(snippet, add_special_tokens=False).ids, dtype=np.int64)
            if not np.array_equal(tokens, row.ids[w0:w1]):
                sp.known[key] = None  # the window does not tokenize alone as in its row
                continue
            todo[key] = (snippet, tokens, images[k:k + n])
    if not todo:
        return True
    if len(sp.known) + len(todo) > _KNOWN_MAX:
        sp.known.clear()
    keys = list(todo)
    try:
        out = call_processor(masker.processor, [todo[key][0] for key in keys], [todo[key][2] for key in keys],
                             return_tensors, False)
    except Exception:  # noqa: BLE001 - the processor takes no such window: two calls
        return False
    ids = as_numpy(out["input_ids"])
    real = as_numpy(out["attention_mask"]).astype(bool) if "attention_mask" in out else np.ones(ids.shape, bool)
    for j, key in enumerate(keys):
        got = ids[j, real[j]].astype(np.int64)
        mine = todo[key][1]
        p = 0
        limit = min(len(got), len(mine))
        while p < limit and got[p] == mine[p]:
            p += 1
        s = 0
        while s < limit - p and got[len(got) - 1 - s] == mine[len(mine) - 1 - s]:
            s += 1
        at_lo, at_hi = key[1], key[2]
        # the window's edges are untouched (or are the row's): what the call did stays inside it
        if (p or at_lo) and (s or at_hi):
            values, bounds = _runs(got[p:len(got) - s])  # an expansion is a few long runs: kept small
            sp.known[key] = (p, s, values, np.diff(bounds))
        else:
            sp.known[key] = None
    return True


def _predict(masker: Any, row: _Row) -> np.ndarray | None:
    """The processor's ids for ``row``'s stretch, from its windows (learned); None when a window is
    unknown or could not be learned."""
    units = _units(masker, row)
    if units is None:
        return None
    known = _splices(masker).known
    pieces = []
    pos = row.lo
    for w in _windows(row, units):
        got = known.get(_window_key(row, w))
        if got is None:
            return None
        p, s, values, lengths = got
        middle = np.repeat(values, lengths)
        pieces += [row.ids[pos:w[0] + p], middle]
        pos = w[1] - s
    pieces.append(row.ids[pos:row.hi])
    return np.concatenate(pieces) if len(pieces) > 1 else row.ids[row.lo:row.hi].copy()


def _splices_work(masker: Any, return_tensors: str, args: tuple[tuple, dict]) -> bool:
    """Whether whole chats are what their windows predict with this processor (learned once): chats
    with images first in a turn, after text, two in a row, in two turns, of several sizes, each
    predicted from its windows and compared with the processor's call on it."""
    sp = _splices(masker)
    if sp.works is not None:
        return sp.works
    processor = masker.processor
    works = False
    try:
        base = probe_medium(processor, IMAGE)
        sizes = [(56, 42), (84, 70), (42, 98), (70, 56), (98, 84)]
        pics = [base.resize(size) for size in sizes]
        image = {"type": "image"}

        def text(t: str) -> dict:
            return {"type": "text", "text": t}

        chats = [
            [[image, text("zq one\n")], [text("two "), image], [image, image, text(" three.")]],
            [[text("\n"), image, text("\nfour")], [image, text("five\n\n")]],
        ]
        rows, wanted = [], []
        wrapper = processor.image_processor
        k = 0
        for turns in chats:
            messages: list[dict] = []
            imgs = []
            for parts in turns:
                messages += [{"role": "user", "content": parts}, {"role": "assistant", "content": [text("ok then")]}]
                for part in parts:
                    if part is image:
                        imgs.append(pics[k % len(pics)])
                        k += 1
            rendered = processor.apply_chat_template(messages, chat_template=masker.template_source(), tokenize=False)
            enc = masker.backend().encode(rendered, add_special_tokens=False)
            ids = np.asarray(enc.ids, dtype=np.int64)
            wrapper.prepare(imgs, *args)
            sigs = [_signature(wrapper.output(im, *args)) for im in imgs]
            rows.append((_Row(rendered, ids, enc.offsets, 0, len(ids), 0, len(rendered), sigs), imgs))
            out = call_processor(processor, [rendered], [imgs], return_tensors, False)
            wanted.append(as_numpy(out["input_ids"])[0].astype(np.int64))
        if _learn_windows(masker, rows, return_tensors):
            predicted = [_predict(masker, row) for row, _ in rows]
            works = all(p is not None and np.array_equal(p, w) for p, w in zip(predicted, wanted))
    except Exception:  # noqa: BLE001 - a template or processor the probe does not fit: two calls
        works = False
    sp.works = works
    return works


def learn_cut(masker: Any, return_tensors: str = "np") -> bool:
    """The one-off probes of the one-call path (:func:`_one_call`) run now, for this
    ``return_tensors``, rather than in the first cut batch: whether the processor's image outputs
    join per image, the arguments its call gives its image processor, and whether whole chats are
    what their windows predict. Returns whether cut batches can take one processor call."""
    processor = masker.processor
    real = getattr(processor, "image_processor", None)
    if real is None or not images_join(masker):
        return False
    processor.image_processor = _PerImage(real, _splices(masker).splits)
    try:
        args = _image_args(masker, return_tensors)
        return args is not None and _splices_work(masker, return_tensors, args)
    finally:
        processor.image_processor = real


def _one_call(masker: Any, inputs: tuple[list[Any], list[str], list[Any]], indices: Sequence[int], max_length: int,
              truncation: str, on_image_cut: str, return_tensors: str, padding_side: str | None = None
              ) -> tuple[dict[str, Any] | None, list[Any], list[Fit]] | None:
    """The batch with one processor call, on the final rows; None when it cannot be shown to be
    :func:`_two_calls`'s batch (then the caller runs that).

    The processor's ids for a whole row are predicted from its text tokens: each image is processed
    first (its output is what the call will join, :class:`_PerImage`), and what the call makes of
    the few text tokens around an image (its expansion, and any merge with the text next to it) is
    learned from the processor's own call on that window of text and that image, remembered by the
    window's tokens and the image output's signature (its shapes and grids: a batch of images of a
    few sizes costs a few tiny calls, later batches none). Where the rows are too long, the cut is
    planned on these ids exactly as :func:`_two_calls` plans it on the first call's ids, and the
    processor runs once, on the cut texts and the images kept. That call's ids are then checked
    against the prediction, row by row (the rows left whole: their whole ids; the cut rows: the
    cut text's ids predicted the same way), with no row past ``max_length`` and no image processed
    by the call itself (it used the outputs the prediction read). Any difference, or a processor
    where whole chats are not what their windows predict (learned once on a probe), and the batch
    is made by :func:`_two_calls` instead."""
    encoded, texts, media = inputs
    processor = masker.processor
    wrapper = processor.image_processor
    if any(items for m in media for kind, items in m.items() if kind != "image"):
        return None
    add_special = adds_special_tokens(processor, texts)
    if add_special and _adds_tokens(masker) or image_counter(masker) is None:
        return None
    args = _image_args(masker, return_tensors)
    if args is None or not _splices_work(masker, return_tensors, args):
        return None
    images = [m["image"] for m in media]
    sources = [(e.input_ids, e.labels != IGNORE_INDEX) for e in encoded]
    wrapper.prepare([image for row in images for image in row], *args)  # one image-processor call, where it splits
    rows = []
    for r, text in enumerate(texts):
        try:
            sigs = [_signature(wrapper.output(image, *args)) for image in images[r]]
        except Exception:  # noqa: BLE001 - an image the image processor rejects: the call's own error, in two calls
            return None
        ids = sources[r][0]
        rows.append(_Row(text, ids, None, 0, len(ids), 0, len(text), sigs))
    if not _learn_windows(masker, list(zip(rows, images)), return_tensors):
        return None
    whole = [_predict(masker, row) for row in rows]
    if any(w is None for w in whole):
        return None
    long = [r for r, w in enumerate(whole) if len(w) > max_length]
    if not long:
        return None  # the whole rows are the batch: the two-call path makes it in one call
    media_ids = masker.media_tokens()
    full: list[Any] = list(encoded)  # the rows left whole: the final call's (below)
    fits: list[Fit] = [Fit(None, None) for _ in encoded]
    plans: dict[int, _Plan] = {}
    for r in long:
        spelled = _spelled_offsets(masker, texts[r], sources[r][0])
        tokens = (*sources[r], spelled) if spelled is not None else _text_tokens(masker, texts[r], *sources[r])
        if tokens[0] is not sources[r][0]:
            return None  # planned on a re-tokenization: two calls
        if rows[r].offsets is None:
            rows[r].offsets = tokens[2]
        b = whole[r]
        match = align(sources[r][0], b)
        plans[r] = _plan(masker, texts[r], *sources[r], b, media[r], max_length, truncation, indices[r], tokens, match)
        carried = np.zeros(len(b), dtype=bool)  # carry_mask(*sources[r], b), from the same alignment
        hit = match >= 0
        carried[match[hit]] = sources[r][1][hit]
        trained = carried & ~np.isin(b, media_ids)
        full[r] = replace(encoded[r], input_ids=b, labels=np.where(trained, b, IGNORE_INDEX))
        fits[r] = Fit(full[r].input_ids, full[r].labels)
        dropped = plans[r].kept()[2]
        if any(dropped.values()) and on_image_cut == "drop":
            fits[r] = _left_out(len(b), max_length, truncation, dropped, media[r])
    kept = [r for r in range(len(full)) if fits[r].left_out is None]
    if not kept:
        return None, full, fits
    cut_texts, cut_images, cut_sources, expected_rows = [], [], [], []
    for r in kept:
        if r in plans:
            plan = plans[r]
            text, kept_media, _ = plan.kept()
            imgs = kept_media["image"]
            before = plan.before("image")
            a, b = int(plan.starts[plan.first]), int(plan.starts[plan.last])
            cut = _Row(texts[r], plan.ids, rows[r].offsets, a, b, int(plan.chars[plan.first]),
                       int(plan.chars[plan.last]), rows[r].sigs[before:before + len(imgs)])
            expected_rows.append((cut, imgs))
            cut_texts.append(text)
            cut_images.append(kept_media)
            cut_sources.append(plan.source())
        else:
            expected_rows.append(None)
            cut_texts.append(texts[r])
            cut_images.append(media[r])
            cut_sources.append(sources[r])
    if not _learn_windows(masker, [x for x in expected_rows if x is not None], return_tensors):
        return None
    expected = [whole[r] if x is None else _predict(masker, x[0]) for r, x in zip(kept, expected_rows)]
    if any(x is None or len(x) > max_length and r in plans for r, x in zip(kept, expected)):
        return None
    read = {(id(image), wrapper.how(*args)) for row in images for image in row}  # the outputs the prediction read
    wrapper.touched = set()
    try:
        out = masker._run_processor(cut_texts, cut_images, return_tensors, add_special, padding_side)
    except SampleError:
        return None  # the processor rejects the cut rows: the two calls say what it says of the whole ones
    finally:
        touched, wrapper.touched = wrapper.touched, None
    if not touched <= read:
        return None  # the call joined outputs the prediction did not read (other arguments)
    batch, got = masker._label_processed(out, cut_sources, [full[r] for r in kept], return_tensors)
    for r, row, want in zip(kept, got, expected):
        if not np.array_equal(row.input_ids, want):
            return None
        if r in plans:
            fits[r] = _fit(row.input_ids, row.labels, plans[r].kept()[2])
        else:
            full[r] = row
            fits[r] = Fit(row.input_ids, row.labels)
    return batch, full, fits
