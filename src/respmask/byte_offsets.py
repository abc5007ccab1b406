"""Token positions from the vocabulary, so tokenizing can skip the Rust tokenizer's offset tracking.

In a byte-level BPE tokenizer (GPT-2 style: Llama 3, Qwen, DeepSeek, GPT-OSS, ...) every token id
stands for a fixed run of the input's UTF-8 bytes, so a running sum of per-id byte lengths gives
each token's byte range. ``encode_batch_fast`` (ids only) is about 1.2x faster than
``encode_batch`` on 1k-token texts and 2.3x on 20k-token ones, where offset tracking dominates.
Each text is checked (the normalizer leaves it unchanged, its tokens' bytes add up to its own);
one that fails goes back to the offsets path, so the masks are the same either way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Pre-tokenizers that only cut the text (or, ByteLevel, re-spell bytes reversibly).
_CUTTING = {"Split", "Digits", "Punctuation", "ByteLevel"}
# Normalizers that never change ASCII text; other text is checked with the normalizer itself.
_UNICODE_FORMS = {"NFC", "NFD", "NFKC", "NFKD"}


def _gpt2_byte_alphabet() -> dict[str, int]:
    """The printable character ByteLevel writes for each byte (GPT-2's ``bytes_to_unicode``)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def _component(obj: Any) -> dict | None:
    return None if obj is None else json.loads(obj.__getstate__())


def _flatten(config: dict | None, key: str) -> list[dict]:
    if config is None:
        return []
    if config.get("type") == "Sequence":
        return [c for sub in config.get(key, []) for c in _flatten(sub, key)]
    return [config]


def _eligible(backend: Any) -> tuple[bool, bool]:
    """(byte-exact tokenizer?, does its normalizer need a check on non-ASCII text?)"""
    model = backend.model
    if type(model).__name__ != "BPE" or model.byte_fallback:
        return False, False
    if model.continuing_subword_prefix or model.end_of_word_suffix:
        return False, False
    pre = _flatten(_component(backend.pre_tokenizer), "pretokenizers")
    kinds = {c["type"] for c in pre}
    if "ByteLevel" not in kinds or not kinds <= _CUTTING:
        return False, False
    if any(c["type"] == "ByteLevel" and c.get("add_prefix_space") for c in pre):
        return False, False
    norm = _flatten(_component(backend.normalizer), "normalizers")
    if not {c["type"] for c in norm} <= _UNICODE_FORMS:
        return False, False
    post = _flatten(_component(backend.post_processor), "processors")
    for c in post:  # offsets must be the untrimmed ones transformers' masks use
        if c["type"] not in {"ByteLevel", "TemplateProcessing"}:
            return False, False
        if c["type"] == "ByteLevel" and c.get("trim_offsets"):
            return False, False
    return True, bool(norm)


@dataclass(frozen=True)
class ByteLengths:
    """Bytes of input text per token id, for one byte-level BPE tokenizer."""

    lengths: np.ndarray
    normalizer: Any | None  # checked on non-ASCII text; None when the tokenizer has none

    @classmethod
    def of(cls, backend: Any) -> ByteLengths | None:
        """The table for ``backend`` (a ``tokenizers.Tokenizer``), or None when its tokens are not
        fixed byte runs of the input (SentencePiece-style, WordPiece, prefix-adding, ...)."""
        try:
            ok, normalizes = _eligible(backend)
        except Exception:  # an unfamiliar component: stay on the offsets path
            return None
        if not ok:
            return None
        size = backend.get_vocab_size(with_added_tokens=True)
        vocab = backend.get_vocab(with_added_tokens=False)
        lengths = np.zeros(max([size, *(i + 1 for i in vocab.values())]), dtype=np.int64)
        added = backend.get_added_tokens_decoder()
        alphabet = _gpt2_byte_alphabet()
        for token, i in vocab.items():
            if i in added:
                continue
            if not token or any(ch not in alphabet for ch in token):
                return None  # a vocabulary entry that is not byte-level text
            lengths[i] = len(token)
        for i, token in added.items():
            if i >= len(lengths):
                lengths = np.concatenate([lengths, np.zeros(i + 1 - len(lengths), dtype=np.int64)])
            lengths[i] = len(token.content.encode("utf-8"))
        return cls(lengths, backend.normalizer if normalizes else None)

    def token_ranges(self, ids: np.ndarray, text: str, spans: Sequence[tuple[int, int]]) -> np.ndarray | None:
        """``[first, last]`` token index pairs of the tokens overlapping each character span (the
        rule of :func:`respmask.masks.token_ranges`), or None when ``ids`` may not spell ``text``
        byte for byte (normalized text, whitespace absorbed by an added token): use offsets then."""
        if len(ids) and int(ids.max()) >= len(self.lengths):
            return None
        if text.isascii():
            n_bytes = len(text)
            char_to_byte = None
        else:
            if self.normalizer is not None and self.normalizer.normalize_str(text) != text:
                return None
            try:
                data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
            except UnicodeEncodeError:
                return None
            n_bytes = len(data)
            char_to_byte = np.append(np.flatnonzero((data & 0xC0) != 0x80), n_bytes)
        ends = np.cumsum(self.lengths[ids])
        if (int(ends[-1]) if len(ends) else 0) != n_bytes:
            return None
        if not len(spans):
            return np.zeros((0, 2), dtype=np.int64)
        edges = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
        if char_to_byte is not None:
            edges = char_to_byte[edges]
        starts = ends - self.lengths[ids]
        first = np.searchsorted(ends, edges[:, 0], side="right")  # first token ending after a
        last = np.searchsorted(starts, edges[:, 1], side="left") - 1  # last token starting before b
        keep = (first < len(ids)) & (last >= first)
        return np.stack([first[keep], last[keep]], axis=1)
