"""Chats with images, audio or video: carrying respmask's masks through a processor's expansion of
media tokens.

A vision-language processor renders the chat template (an image part becomes a placeholder such
as ``<|vision_start|><|image_pad|><|vision_end|>`` or ``<start_of_image>``) and then, in its
``__call__``, expands each placeholder into the image's tokens (hundreds of ``<|image_pad|>``,
Gemma 3's ``\\n\\n<start_of_image>`` + soft tokens + ``<end_of_image>\\n\\n``, Idefics3's grid of
``<row_i_col_j>`` and ``<image>`` tokens ...). respmask finds the trained characters in the rendered
text as for any chat, tokenizes that text, and carries the token mask onto the processor's ids by
aligning the two token sequences: outside the image regions they are equal, token for token; the
tokens of an expansion are never trained. Nothing here knows a model: the media tokens are
learned from the processor itself (what an image, audio or video part adds to the rendered text,
and what the processor's call adds to the ids).

Audio works the same way: a speech model's processor renders an audio part as a placeholder
(Qwen2-Audio's ``<|audio_bos|><|AUDIO|><|audio_eos|>``, Gemma 3n's ``<audio_soft_token>``, Audio
Flamingo 3's ``<sound>``) and its call expands it into one token per audio frame. One
:class:`Modality` per kind of media says where a row holds it (content parts and their keys, a
column) and which argument of the processor's call takes it; the rest is shared.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import SampleError
from ._formats import PLACEHOLDERS

IMAGE_KEYS = ("image", "url", "path", "base64")

#: The folder relative media paths are also looked up in when the current directory has no such
#: file: the data file's folder while the ``respmask`` command reads a file (:func:`media_dir`), as
#: LLaMA-Factory resolves them against its ``dataset_dir``. None (the API): the current directory only.
_MEDIA_DIR: ContextVar[Path | None] = ContextVar("respmask_media_dir", default=None)


@contextmanager
def media_dir(folder: str | os.PathLike[str] | None) -> Iterator[None]:
    """Within the block, a relative media path that is no file in the current directory is read
    from ``folder`` (the data file's folder, for the command line) when it is one there."""
    token = _MEDIA_DIR.set(None if folder is None else Path(folder).resolve())
    try:
        yield
    finally:
        _MEDIA_DIR.reset(token)


def _local(path: str) -> str:
    """``path`` as it is read: as given, unless it is relative, no file in the current directory
    and a file in :func:`media_dir`'s folder (then that file)."""
    folder = _MEDIA_DIR.get()
    if folder is None or os.path.isabs(path) or os.path.exists(path):
        return path
    candidate = folder / path
    return str(candidate) if candidate.exists() else path


def _no_file(kind: str, path: str, where: str) -> SampleError | None:
    """The error for a media path that names no file (None when it does): the absolute path tried,
    and for a relative one, that it was read from the current directory and what to do."""
    if len(path) > 4096 or "\n" in path or os.path.exists(path):
        return None
    tried = os.path.abspath(path)
    if os.path.isabs(path):
        return SampleError(f"{where}: no such {kind} file {path!r}")
    folder = _MEDIA_DIR.get()
    also = (f", then from the data file's folder (tried {folder / path})" if folder is not None
            else "; the respmask command also tries the data file's folder")
    return SampleError(
        f"{where}: no such {kind} file {path!r}: a relative path is read from the current directory "
        f"({os.getcwd()}: tried {tried}){also}. Run from the folder the paths are relative to, or make them "
        "absolute"
    )


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
        path = _local(image)
        try:
            return Image.open(path)
        except OSError as exc:
            missing = _no_file("image", path, where)
            raise (missing or SampleError(f"{where}: cannot open image {image[:80]!r} ({exc})")) from None
    if hasattr(image, "shape"):  # an array the image processor takes as is
        return image
    raise SampleError(f"{where} is a {type(image).__name__}, not an image (PIL image, path, bytes or array)")


@dataclass(frozen=True)
class Modality:
    """One kind of media a processor takes.

    ``kind`` is the content part's ``type``; ``keys`` the part keys that hold the medium, as
    transformers' ``ProcessorMixin.apply_chat_template`` reads them; ``column`` the row column
    that holds a conversation's media in order; ``argument`` the keyword of the processor's call;
    ``handlers`` the processor attributes that process it (one of them set: the processor takes
    this kind)."""

    kind: str
    keys: tuple[str, ...]
    column: str
    argument: str
    handlers: tuple[str, ...]


IMAGE = Modality("image", IMAGE_KEYS, "images", "images", ("image_processor",))
AUDIO = Modality("audio", ("audio", "url", "path"), "audios", "audio", ("audio_processor", "feature_extractor"))
VIDEO = Modality("video", ("video", "url", "path"), "videos", "videos", ("video_processor",))
MODALITIES = (IMAGE, AUDIO, VIDEO)

#: A conversation's media: for each kind (``"image"``, ``"audio"``, ``"video"``) its items in order.
Media = dict


def takes(processor: Any, modality: Modality) -> bool:
    """Whether ``processor`` processes this kind of media (it holds one of its handlers)."""
    return any(getattr(processor, name, None) is not None for name in modality.handlers)


def audio_rate(processor: Any) -> int:
    """The sampling rate the processor's audio processor expects (16 kHz when it names none), as
    ``apply_chat_template`` loads audio files at."""
    handler = next((h for h in (getattr(processor, n, None) for n in AUDIO.handlers) if h is not None), None)
    return int(getattr(handler, "sampling_rate", None) or 16000)


def _load_audio(audio: Any, where: str, rate: int, encoded: bool = False) -> Any:
    """A 1-D float array at ``rate`` Hz from what rows hold: an array (or list of samples), a
    ``datasets`` Audio value (``{"array": ..., "sampling_rate": ...}``, ``{"path"|"bytes": ...}`` as
    ``Audio(decode=False)`` gives it, or the decoder object a decoding ``Audio`` column gives, read
    with its ``get_all_samples()`` and averaged to mono) or a local file path (decoded as
    ``apply_chat_template`` decodes it, with transformers' ``load_audio``). URLs are not fetched;
    arrays are not resampled. ``encoded``: ``audio`` is bytes as base64 (how ``load_audio`` takes
    them), not a path.

    Raises:
        SampleError: a URL, a file that cannot be decoded, an array at another sampling rate, or
            something that is not audio.
    """
    if isinstance(audio, Mapping):
        if audio.get("array") is not None:
            given = audio.get("sampling_rate")
            if given is not None and int(given) != rate:
                raise SampleError(
                    f"{where} is sampled at {given} Hz but the processor expects {rate} Hz; resample it first "
                    f"(datasets: ds.cast_column(..., Audio(sampling_rate={rate})))")
            return _load_audio(audio["array"], where, rate)
        if audio.get("bytes"):
            return _load_audio(audio["bytes"], where, rate)
        if audio.get("path"):
            return _load_audio(audio["path"], where, rate)
    if hasattr(audio, "get_all_samples"):  # what a datasets Audio column decodes to: torchcodec's AudioDecoder
        samples = audio.get_all_samples()
        data = np.asarray(samples.data.numpy() if hasattr(samples.data, "numpy") else samples.data, dtype=np.float32)
        mono = data.mean(axis=0) if data.ndim == 2 else data  # (channels, samples) -> mono, as load_audio decodes
        return _load_audio({"array": mono, "sampling_rate": samples.sample_rate}, where, rate)
    if isinstance(audio, (bytes, bytearray)):
        import base64

        return _load_audio(base64.b64encode(bytes(audio)).decode("ascii"), where, rate, encoded=True)
    if isinstance(audio, str):
        if audio.startswith(("http://", "https://")):
            raise SampleError(f"{where} is a URL ({audio[:60]}): respmask does not download audio; give a local path, "
                              "bytes or an array")
        from transformers.audio_utils import load_audio

        path = _local(audio)
        try:
            return load_audio(path, sampling_rate=rate)
        except Exception as exc:  # noqa: BLE001 - the decoder's own error, named with the sample
            missing = _no_file("audio", path, where) if not encoded else None
            raise (missing or SampleError(
                f"{where}: cannot decode audio {audio[:80]!r} ({type(exc).__name__}: {exc})")) from None
    if isinstance(audio, (list, tuple)) and all(isinstance(x, (int, float)) for x in audio[:16]):
        return np.asarray(audio, dtype=np.float32)
    if hasattr(audio, "shape"):  # an array (NumPy, torch) the feature extractor takes as is
        return audio
    raise SampleError(f"{where} is a {type(audio).__name__}, not audio (an array, a datasets Audio dict, bytes or "
                      "a local path)")


def _load_video(video: Any, where: str) -> Any:
    """A video as the processor's video processor takes it: a list of frames (PIL images, paths,
    bytes), an array of frames, or a local file path (left to the video processor to decode).

    Raises:
        SampleError: a URL, or a frame that cannot be loaded.
    """
    if isinstance(video, str):
        if video.startswith(("http://", "https://")):
            raise SampleError(f"{where} is a URL ({video[:60]}): respmask does not download videos; give a local "
                              "path or a list of frames")
        return _local(video)
    if isinstance(video, (list, tuple)):
        return [_load(frame, f"{where}'s frame {i}") for i, frame in enumerate(video)]
    return video


def _loader(modality: Modality, processor: Any) -> Any:
    if modality is AUDIO:
        rate = audio_rate(processor)
        return lambda item, where: _load_audio(item, where, rate)
    return _load_video if modality is VIDEO else _load


def _refuse_kind(processor: Any, modality: Modality, where: str) -> SampleError:
    """A row holds media of a kind the processor does not take: what happened and what to do."""
    if processor is None:
        return SampleError(f"{where} holds {modality.kind}: respmask masks images only without a processor")
    name = type(processor).__name__
    if modality is VIDEO:
        return SampleError(
            f"{where} holds video, but the processor ({name}) has no video processor, so respmask cannot expand "
            "its video tokens (transformers' video processors need torchvision, and a processor built without one "
            "takes no video). Build the processor with its video processor, or drop the video parts and the "
            "'videos' column")
    return SampleError(
        f"{where} holds {modality.kind}, which this processor ({name}) does not take (it has no "
        f"{' or '.join(modality.handlers)}); use the processor of a model that takes {modality.kind}, or drop the "
        f"{modality.kind} parts and the {modality.column!r} column")


def media_of(sample: Any, messages: Sequence[Mapping[str, Any]], processor: Any = None) -> Media:
    """The media of one conversation, by kind, in order: for each kind the row's column when it
    has one (``images``, ``audios``, ``videos``), else the media inside its content parts
    (``{"type": "image" | "audio" | "video", <key>: ...}``, the keys of :data:`MODALITIES`).

    Args:
        sample: the row as given (its media columns are read from it).
        messages: its messages as read.
        processor: the processor the media go to (which kinds it takes; audio's sampling rate).
            None: images only, as before audio and video were supported.

    Raises:
        SampleError: media of a kind the processor does not take (video without a video
            processor), an item that cannot be loaded, or parts and column items that do not pair
            up.
    """
    out: Media = {}
    for modality in MODALITIES:
        allowed = modality is IMAGE if processor is None else takes(processor, modality)
        load = _loader(modality, processor) if processor is not None else _load
        column = sample.get(modality.column) if isinstance(sample, Mapping) else None
        if column is not None and not isinstance(column, (list, tuple)):
            column = [column]
        parts = keyed = 0
        inline: list[Any] = []
        for k, m in enumerate(messages):
            content = m.get("content")
            if not isinstance(content, (list, tuple)):
                continue
            for part in content:
                if not isinstance(part, Mapping) or part.get("type") != modality.kind:
                    continue
                if not allowed:
                    raise _refuse_kind(processor, modality, f"message {k}")
                parts += 1
                values = [part[key] for key in modality.keys if part.get(key) is not None]
                keyed += bool(values)
                if not column:
                    inline.extend(load(v, f"message {k}'s {modality.kind}") for v in values)
        if column and not allowed:
            raise _refuse_kind(processor, modality, f"its {modality.column!r} column")
        if column and not keyed and len(column) != parts:
            raise _unpaired(modality, parts, _placeholders(messages, modality), len(column))
        out[modality.kind] = [load(x, f"{modality.column!r}[{i}]") for i, x in enumerate(column)] if column else inline
    return out


def _placeholders(messages: Sequence[Mapping[str, Any]], modality: Modality) -> int:
    """How many LLaMA-Factory placeholders of ``modality`` (``<image>``) the messages' text holds:
    left as text when they do not pair up with the column's items (see
    :func:`respmask._formats._with_media`)."""
    placeholder = PLACEHOLDERS[modality.column][0]
    found = 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            found += content.count(placeholder)
        elif isinstance(content, (list, tuple)):
            found += sum(part["text"].count(placeholder) for part in content if isinstance(part, Mapping)
                         and part.get("type") == "text" and isinstance(part.get("text"), str))
    return found


def _unpaired(modality: Modality, parts: int, placeholders: int, items: int) -> SampleError:
    """The error for a row whose media parts (or placeholders) and media column do not pair up:
    said before the processor is called, which would only count its media tokens (``Found total 0
    <|image_pad|> tokens and 1 images``) for the batch and name no row."""
    kind, column = modality.kind, modality.column
    placeholder = PLACEHOLDERS[column][0]
    places = [f"{n} {what}(s)" for n, what in ((parts, f"{kind} part"), (placeholders, f"{placeholder!r} placeholder"))
              if n]
    held = " and ".join(places) if places else f"no {kind} part and no {placeholder!r} placeholder"
    return SampleError(
        f"has {held} in its messages but {items} item(s) in {column!r}: each {kind} part, or {placeholder!r} "
        f"placeholder, takes the next item, so they must pair up (else the processor cannot tell where each {kind} "
        "goes). Fix the row (one part or placeholder per item, all of one kind), or drop it."
    )


def images_of(sample: Any, messages: Sequence[Mapping[str, Any]]) -> list[Any]:
    """The images of one conversation (see :func:`media_of`; video and audio parts are refused).

    Raises:
        SampleError: as :func:`media_of` without a processor.
    """
    return media_of(sample, messages)["image"]


def _runs(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run-length encoding: (values, start of each run) of a 1-D array."""
    if len(ids) == 0:
        return ids, np.zeros(1, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate([[True], ids[1:] != ids[:-1]]))
    return ids[starts], np.append(starts, len(ids))


def align(a_ids: np.ndarray, b_ids: np.ndarray, slow: bool = False) -> np.ndarray:
    """Where each token of ``a_ids`` (the rendered text's tokens) is in ``b_ids`` (the processor's
    ids, with images expanded): its index there, or -1 for a token the expansion replaced.

    Equal prefixes and suffixes are matched directly; between them, runs of equal tokens (an
    image's hundreds of identical tokens are one run) are aligned with difflib's matcher, or
    without it where its answer is known (:func:`_runs_in_place`; ``slow``: always with it, to
    compare).
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
        if not slow and _runs_in_place(match, p, a_vals, a_len, a_bounds, b_vals, b_len, b_bounds):
            return match
        a_sym = list(zip(a_vals.tolist(), a_len.tolist()))
        b_sym = list(zip(b_vals.tolist(), b_len.tolist()))
        for tag, i1, i2, j1, _ in SequenceMatcher(None, a_sym, b_sym, autojunk=False).get_opcodes():
            if tag == "equal":
                a0, a1 = p + a_bounds[i1], p + a_bounds[i2]
                b0 = p + b_bounds[j1]
                match[a0:a1] = np.arange(b0, b0 + (a1 - a0))
    return match


def _runs_in_place(match: np.ndarray, p: int, a_vals: np.ndarray, a_len: np.ndarray, a_bounds: np.ndarray,
                   b_vals: np.ndarray, b_len: np.ndarray, b_bounds: np.ndarray) -> bool:
    """:func:`align`'s matcher without difflib where its answer is known, and written into
    ``match`` (False, ``match`` untouched, elsewhere).

    Call a run (token, length) that the other side holds nowhere a spot (an image's one placeholder
    token against its hundreds). When the runs that are not spots are the same on both sides, in
    order, and split into stretches by spots at the same places, difflib's matcher pairs each of
    them with its counterpart: no block it finds can hold a spot; a block at other places has a copy
    at the counterpart places (the stretches are the same) that ends no later on the first side and,
    ending there, starts no later on the second, so the first longest block it finds is at
    counterpart places; and the same holds on each side of it. Every run that is not a spot is then
    matched with its counterpart, token by token."""
    a_keys = a_vals.astype(np.int64) * (1 << 32) + a_len  # one number per (token, run length)
    b_keys = b_vals.astype(np.int64) * (1 << 32) + b_len
    a_kept = np.flatnonzero(_member(a_keys, b_keys))
    b_kept = np.flatnonzero(_member(b_keys, a_keys))
    if len(a_kept) != len(b_kept) or not np.array_equal(a_keys[a_kept], b_keys[b_kept]):
        return False
    if not np.array_equal(np.diff(a_kept) > 1, np.diff(b_kept) > 1):  # spots between the same runs
        return False
    if not len(a_kept):
        return True
    lengths = a_len[a_kept]
    shift = np.repeat(b_bounds[b_kept] - a_bounds[a_kept], lengths)
    inside = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    tokens = p + np.repeat(a_bounds[a_kept], lengths) + inside
    match[tokens] = tokens + shift
    return True


def _member(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``np.isin(x, y)`` for the short int64 arrays of :func:`_runs_in_place` (a row's runs): one
    sort and a binary search, several times cheaper than ``np.isin``'s general machinery at this size."""
    if not len(y):
        return np.zeros(len(x), dtype=bool)
    s = np.sort(y)
    at = np.searchsorted(s, x)
    at[at == len(s)] = 0
    return s[at] == x


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


def image_chats(render: Any, images: Sequence[int], part: Mapping[str, Any] | None = None) -> list[str]:
    """``render(messages)`` of a user turn holding each number of media parts in ``images`` (then
    a text part) and a reply: the probes that show what a medium adds to the render. ``part`` is
    the media part (an image part without its image by default). The reply is written as parts,
    else as a string (Pixtral-12B's template concatenates it to a string).

    Raises:
        Exception: the template's own error, when it takes the reply in neither form.
    """
    part = dict(part) if part is not None else {"type": "image"}
    answers: list[Any] = [[{"type": "text", "text": "zqanswer"}], "zqanswer"]
    for n, answer in enumerate(answers):
        try:
            return [render([{"role": "user", "content": [part] * k + [{"type": "text", "text": "zqprobe"}]},
                            {"role": "assistant", "content": answer}]) for k in images]
        except Exception:
            if n == len(answers) - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def probe_medium(processor: Any, modality: Modality) -> Any:
    """A small synthetic medium of this kind the processor takes: a 64x48 image, one second of
    noise at the processor's sampling rate, four 64x48 frames."""
    from PIL import Image

    if modality is AUDIO:
        return np.random.default_rng(0).uniform(-0.5, 0.5, audio_rate(processor)).astype(np.float32)
    image = Image.new("RGB", (64, 48), (120, 80, 40))
    return [image] * 4 if modality is VIDEO else image


def probe_part(processor: Any, modality: Modality) -> dict[str, Any]:
    """The media part the probes render: an image part as is (``{"type": "image"}``); an audio or
    video part with its medium under its kind's key, as templates that test for the key (Qwen2-Audio:
    ``'audio' in content``) need."""
    if modality is IMAGE:
        return {"type": "image"}
    return {"type": modality.kind, modality.kind: probe_medium(processor, modality)}


def media_token_ids(processor: Any, render: Any) -> frozenset[int]:
    """The token ids that stand for media, learned from the processor, for each kind it takes
    (images, audio, video): the added tokens a media part makes the chat template write
    (``<|vision_start|>``, ``<start_of_image>``, ``<|audio_bos|>`` ...) and those the processor's
    call adds when it expands the medium (``<|image_pad|>``, ``<|AUDIO|>`` ...); whitespace is
    never one (an expansion's newlines are untrained by the alignment alone).

    ``render(messages)`` renders the processor's chat template.
    """
    tok = processor.tokenizer
    # added tokens, but whitespace: some tokenizers add "\n\n" as a token, which replies use too
    added = {i for t, i in tok.get_added_vocab().items() if t.strip()}
    found: set[int] = set()
    for modality in MODALITIES:
        if not takes(processor, modality):
            continue
        try:
            text0, text1 = image_chats(render, (0, 1), probe_part(processor, modality))
        except Exception:
            if modality is IMAGE:
                raise
            # a template that cannot render this kind (a processor with a feature extractor its chat
            # template has no part for): nothing to learn; a row holding it meets the template's error
            continue
        ids0 = set(tok(text0, add_special_tokens=False)["input_ids"])
        ids1 = set(tok(text1, add_special_tokens=False)["input_ids"])
        if modality is IMAGE:
            expanded_ids = call_processor(processor, [text1], [[probe_medium(processor, modality)]])["input_ids"]
        else:
            try:
                expanded_ids = call_processor(processor, [text1], [{modality.kind: [probe_medium(processor, modality)]}])[
                    "input_ids"]
            except Exception:  # noqa: BLE001 - a kind it takes only in some forms: its rendered tokens still count
                expanded_ids = []
        expanded = set(np.asarray(expanded_ids).reshape(-1).tolist())
        found |= (ids1 | expanded) - ids0
    return frozenset(found & added)


def adds_special_tokens(processor: Any, texts: Sequence[str]) -> bool:
    """Whether the processor's call adds special tokens to these rendered texts, as
    ``processor.apply_chat_template(tokenize=True)`` decides it: not when they start with BOS."""
    bos = processor.tokenizer.bos_token
    return not (bos is not None and texts and texts[0].startswith(bos))


def _as_media(entry: Any) -> Media:
    """A row's media: a :data:`Media` dict as is, a list as its images."""
    return entry if isinstance(entry, dict) else {"image": list(entry or [])}


def call_processor(processor: Any, texts: list[str], media: Sequence[Any], return_tensors: str = "np",
                   add_special_tokens: bool | None = None, padding_side: str | None = None) -> Any:
    """The processor's call on rendered texts, as ``processor.apply_chat_template(tokenize=True)``
    makes it: images and videos nested per text, audio as one flat list in order (with the
    sampling rate it was loaded at), no special tokens added when the text starts with BOS
    (``add_special_tokens`` decides instead when given: texts cut from the start no longer do).

    ``media`` holds each text's :data:`Media` (a list is taken as its images); ``padding_side``
    pads a batch on that side instead of the tokenizer's."""
    kwargs: dict[str, Any] = {"return_tensors": return_tensors}
    if len(texts) > 1:
        kwargs["padding"] = True
        if padding_side is not None:
            kwargs["padding_side"] = padding_side
    if add_special_tokens is None:
        add_special_tokens = adds_special_tokens(processor, texts)
    if not add_special_tokens:
        kwargs["add_special_tokens"] = False
    rows = [_as_media(entry) for entry in media]
    for modality in MODALITIES:
        if modality is AUDIO:  # one flat list, as apply_chat_template passes audio
            audio = [a for row in rows for a in row.get("audio", [])]
            if audio:
                kwargs[modality.argument] = audio
                kwargs["sampling_rate"] = audio_rate(processor)
            continue
        nested = [row.get(modality.kind, []) for row in rows]
        if any(nested):
            kwargs[modality.argument] = nested
    with _settings_kept(getattr(processor, "tokenizer", None)):
        try:
            return processor(text=texts, **kwargs)
        except Exception:
            if return_tensors == "pt":
                raise
            # some processors return PyTorch tensors only (AudioFlamingo3Processor raises for any other):
            # the same call with "pt", as NumPy arrays (a real error raises again, from this call)
            out = processor(text=texts, **{**kwargs, "return_tensors": "pt"})
            return {key: value.numpy() if hasattr(value, "numpy") else value for key, value in out.items()}


@contextmanager
def _settings_kept(tokenizer: Any) -> Iterator[None]:
    """The tokenizer's Rust backend left with the padding and truncation it had before the block:
    a processor's call with ``padding=True`` leaves padding set on its tokenizer's backend, which
    would make every later :meth:`ChatMasker.backend` use a private copy and count the vocabulary
    to check it (0.2 ms a time on Gemma 3's). The user's tokenizer is left as respmask found it."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    try:
        before = (backend.padding, backend.truncation)
    except Exception:  # noqa: BLE001 - not a Rust backend: nothing to keep (the block runs outside this handler)
        before = None
    if before is None:
        yield
        return
    try:
        yield
    finally:
        padding, truncation = before
        if backend.padding != padding:
            if padding is None:
                backend.no_padding()
            else:
                backend.enable_padding(**padding)
        if backend.truncation != truncation:
            if truncation is None:
                backend.no_truncation()
            else:
                backend.enable_truncation(**truncation)
