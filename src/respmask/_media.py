"""Chats with images: carrying respmask's masks through a processor's expansion of image tokens.

A vision-language processor renders the chat template (an image part becomes a placeholder such
as ``<|vision_start|><|image_pad|><|vision_end|>`` or ``<start_of_image>``) and then, in its
``__call__``, expands each placeholder into the image's tokens (hundreds of ``<|image_pad|>``,
Gemma 3's ``\\n\\n<start_of_image>`` + soft tokens + ``<end_of_image>\\n\\n``, Idefics3's grid of
``<row_i_col_j>`` and ``<image>`` tokens ...). respmask finds the trained characters in the rendered
text as for any chat, tokenizes that text, and carries the token mask onto the processor's ids by
aligning the two token sequences: outside the image regions they are equal, token for token; the
tokens of an expansion are never trained. Nothing here knows a model: the image tokens are
learned from the processor itself (what an image part adds to the rendered text, and what the
processor's call adds to the ids).
"""

from __future__ import annotations

import io
import sys
from collections.abc import Mapping, Sequence
from difflib import SequenceMatcher
from typing import Any

import numpy as np

from ._errors import SampleError

IMAGE_KEYS = ("image", "url", "path", "base64")


def is_processor(obj: Any) -> bool:
    """A transformers processor (``ProcessorMixin``) that wraps a tokenizer.

    Only looked up where transformers' processing module is already loaded (a processor cannot
    exist otherwise): importing it imports torch, 50 MiB and seconds for a text tokenizer."""
    module = sys.modules.get("transformers.processing_utils")
    if module is None:
        return False
    return isinstance(obj, module.ProcessorMixin) and getattr(obj, "tokenizer", None) is not None


def _load(image: Any, where: str) -> Any:
    """A PIL image from what rows hold: a PIL image, a local path, bytes, or a ``datasets`` Image
    dict (``{"bytes": ..., "path": ...}``). URLs are not fetched."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    if isinstance(image, Mapping):
        if image.get("bytes"):
            return Image.open(io.BytesIO(image["bytes"]))
        if image.get("path"):
            return _load(image["path"], where)
    if isinstance(image, (bytes, bytearray)):
        return Image.open(io.BytesIO(image))
    if isinstance(image, str):
        if image.startswith(("http://", "https://")):
            raise SampleError(f"{where} is a URL ({image[:60]}): respmask does not download images; give a local path, "
                              "bytes or a PIL image")
        try:
            return Image.open(image)
        except OSError as exc:
            raise SampleError(f"{where}: cannot open image {image[:80]!r} ({exc})") from None
    if hasattr(image, "shape"):  # an array the image processor takes as is
        return image
    raise SampleError(f"{where} is a {type(image).__name__}, not an image (PIL image, path, bytes or array)")


def images_of(sample: Any, messages: Sequence[Mapping[str, Any]]) -> list[Any]:
    """The images of one conversation, in order: the row's ``images`` column when it has one,
    else the images inside its content parts (``{"type": "image", "image" | "url" | "path": ...}``).

    Raises:
        SampleError: a video or audio part (not supported yet), an image that cannot be loaded, or
            image parts and images that do not pair up.
    """
    parts = 0
    inline: list[Any] = []
    for k, m in enumerate(messages):
        content = m.get("content")
        if not isinstance(content, (list, tuple)):
            continue
        for part in content:
            if not isinstance(part, Mapping):
                continue
            kind = part.get("type")
            if kind in ("video", "audio"):
                raise SampleError(f"message {k} has a {kind} part: respmask masks images only (video and audio are "
                                  "not supported yet)")
            if kind == "image":
                parts += 1
                inline.extend(_load(part[key], f"message {k}'s image") for key in IMAGE_KEYS if key in part)
    column = sample.get("images") if isinstance(sample, Mapping) else None
    if column is not None and not isinstance(column, (list, tuple)):
        column = [column]
    images = [_load(im, f"'images'[{i}]") for i, im in enumerate(column)] if column else inline
    if images and parts and len(images) != parts and not inline:
        raise SampleError(f"has {parts} image part(s) in its messages but {len(images)} image(s) in 'images': "
                          "each image part takes the next image")
    return images


def _runs(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run-length encoding: (values, start of each run) of a 1-D array."""
    if len(ids) == 0:
        return ids, np.zeros(1, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate([[True], ids[1:] != ids[:-1]]))
    return ids[starts], np.append(starts, len(ids))


def align(a_ids: np.ndarray, b_ids: np.ndarray) -> np.ndarray:
    """Where each token of ``a_ids`` (the rendered text's tokens) is in ``b_ids`` (the processor's
    ids, with images expanded): its index there, or -1 for a token the expansion replaced.

    Equal prefixes and suffixes are matched directly; between them, runs of equal tokens (an
    image's hundreds of identical tokens are one run) are aligned with difflib's matcher.
    """
    n, m = len(a_ids), len(b_ids)
    match = np.full(n, -1, dtype=np.int64)
    k = min(n, m)
    diff = np.flatnonzero(a_ids[:k] != b_ids[:k])
    p = int(diff[0]) if len(diff) else k
    tail = k - p
    rdiff = np.flatnonzero(a_ids[n - tail:][::-1] != b_ids[m - tail:][::-1]) if tail else np.zeros(0, dtype=np.int64)
    s = int(rdiff[0]) if len(rdiff) else tail
    match[:p] = np.arange(p)
    if s:
        match[n - s:] = np.arange(m - s, m)
    a_mid, b_mid = a_ids[p:n - s], b_ids[p:m - s]
    if len(a_mid) and len(b_mid):
        a_vals, a_bounds = _runs(a_mid)
        b_vals, b_bounds = _runs(b_mid)
        a_len, b_len = np.diff(a_bounds), np.diff(b_bounds)
        a_sym = list(zip(a_vals.tolist(), a_len.tolist()))
        b_sym = list(zip(b_vals.tolist(), b_len.tolist()))
        for tag, i1, i2, j1, _ in SequenceMatcher(None, a_sym, b_sym, autojunk=False).get_opcodes():
            if tag == "equal":
                a0, a1 = p + a_bounds[i1], p + a_bounds[i2]
                b0 = p + b_bounds[j1]
                match[a0:a1] = np.arange(b0, b0 + (a1 - a0))
    return match


def carry_mask(a_ids: np.ndarray, a_trained: np.ndarray, b_ids: np.ndarray) -> np.ndarray:
    """The trained mask of ``a_ids`` (the rendered text's tokens) carried onto ``b_ids`` (the
    processor's ids, with images expanded): tokens the two sequences share, in order, keep their
    mask (see :func:`align`); tokens the expansion replaced or added are not trained.
    """
    out = np.zeros(len(b_ids), dtype=bool)
    match = align(a_ids, b_ids)
    hit = match >= 0
    out[match[hit]] = a_trained[hit]
    return out


def image_chats(render: Any, images: Sequence[int]) -> list[str]:
    """``render(messages)`` of a user turn holding each number of image parts in ``images`` (then
    a text part) and a reply: the probes that show what an image adds to the render. The reply is
    written as parts, else as a string (Pixtral-12B's template concatenates it to a string).

    Raises:
        Exception: the template's own error, when it takes the reply in neither form.
    """
    answers: list[Any] = [[{"type": "text", "text": "zqanswer"}], "zqanswer"]
    for n, answer in enumerate(answers):
        try:
            return [render([{"role": "user", "content": [{"type": "image"}] * k + [{"type": "text", "text": "zqprobe"}]},
                            {"role": "assistant", "content": answer}]) for k in images]
        except Exception:
            if n == len(answers) - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def media_token_ids(processor: Any, render: Any) -> frozenset[int]:
    """The token ids that stand for an image, learned from the processor: the added tokens an
    image part makes the chat template write (``<|vision_start|>``, ``<start_of_image>`` ...) and
    those the processor's call adds when it expands the image (``<|image_pad|>`` ...); whitespace
    is never one (an expansion's newlines are untrained by the alignment alone).

    ``render(messages)`` renders the processor's chat template.
    """
    from PIL import Image

    tok = processor.tokenizer
    # added tokens, but whitespace: some tokenizers add "\n\n" as a token, which replies use too
    added = {i for t, i in tok.get_added_vocab().items() if t.strip()}
    text0, text1 = image_chats(render, (0, 1))
    image = Image.new("RGB", (64, 48), (120, 80, 40))
    ids0 = set(tok(text0, add_special_tokens=False)["input_ids"])
    ids1 = set(tok(text1, add_special_tokens=False)["input_ids"])
    expanded = set(np.asarray(call_processor(processor, [text1], [[image]])["input_ids"]).reshape(-1).tolist())
    return frozenset(((ids1 | expanded) - ids0) & added)


def adds_special_tokens(processor: Any, texts: Sequence[str]) -> bool:
    """Whether the processor's call adds special tokens to these rendered texts, as
    ``processor.apply_chat_template(tokenize=True)`` decides it: not when they start with BOS."""
    bos = processor.tokenizer.bos_token
    return not (bos is not None and texts and texts[0].startswith(bos))


def call_processor(processor: Any, texts: list[str], images: list[list[Any]], return_tensors: str = "np",
                   add_special_tokens: bool | None = None) -> Any:
    """The processor's call on rendered texts, as ``processor.apply_chat_template(tokenize=True)``
    makes it: nested images per text, no special tokens added when the text starts with BOS
    (``add_special_tokens`` decides instead when given: texts cut from the start no longer do)."""
    kwargs: dict[str, Any] = {"return_tensors": return_tensors}
    if len(texts) > 1:
        kwargs["padding"] = True
    if add_special_tokens is None:
        add_special_tokens = adds_special_tokens(processor, texts)
    if not add_special_tokens:
        kwargs["add_special_tokens"] = False
    has_images = any(images)
    return processor(text=texts, images=images if has_images else None, **kwargs)
