"""See which tokens are trained: HTML in a notebook, ANSI colours in a terminal."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import RespmaskError
from .masker import ChatMasker
from .masks import IGNORE_INDEX, mask_from_ranges, token_ranges
from .samples import Pretokenized, parse

_LAST: list[ChatMasker] = []


def remember(masker: ChatMasker) -> None:
    """Called by each new collator: ``preview()`` without a tokenizer uses the latest."""
    _LAST[:] = [masker]


@dataclass
class Preview:
    """Tokens of one sample and whether each is trained."""

    tokens: list[str]
    ids: list[int]
    trained: list[bool]
    turns: int
    notes: list[str] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def n_trained(self) -> int:
        return sum(self.trained)

    def summary(self) -> str:
        pct = 100.0 * self.n_trained / self.n_tokens if self.n_tokens else 0.0
        parts = [f"{self.n_tokens} tokens", f"{self.n_trained} trained ({pct:.0f}%)", f"{self.turns} turns"]
        return "respmask: " + " · ".join(parts + self.notes)

    # -- terminal ------------------------------------------------------------------------------
    def to_text(self, color: bool = True) -> str:
        """ANSI colours (trained: green; masked: grey), or brackets around trained runs."""
        out = [self.summary(), "\n"]
        prev = False
        for i, (tok, on) in enumerate(zip(self.tokens, self.trained)):
            shown = _visible(tok)
            if color:
                if on:
                    style = "\x1b[30;42m" if i % 2 == 0 else "\x1b[30;102m"
                else:
                    style = "\x1b[37;100m" if i % 2 == 0 else "\x1b[90;40m"
                out.append(style + shown + "\x1b[0m")
                if "\n" in tok:
                    out.append("\n")
            else:
                if on and not prev:
                    out.append("⟦")
                if not on and prev:
                    out.append("⟧")
                out.append(shown.replace("↵", "↵\n") if "\n" in tok else shown)
            prev = on
        if not color and prev:
            out.append("⟧")
        return "".join(out)

    def __str__(self) -> str:
        return self.to_text(color=True)

    # -- notebook ------------------------------------------------------------------------------
    def _repr_html_(self) -> str:
        rows = [
            '<div class="respmask-preview" style="font-family:ui-monospace,Menlo,Consolas,monospace;'
            'font-size:12.5px;line-height:1.9;white-space:pre-wrap;word-break:break-all">',
            '<div class="rm-summary" style="font-family:system-ui,sans-serif;font-weight:600;margin-bottom:6px">'
            f"{html.escape(self.summary())} "
            '<span style="background:#b7f0c1;border:1px solid #2f9e44;padding:0 4px;border-radius:3px">trained</span> '
            '<span style="background:#eceff3;color:#667085;border:1px solid #d0d5dd;padding:0 4px;'
            'border-radius:3px">masked (-100)</span></div>',
        ]
        for tok, tid, on in zip(self.tokens, self.ids, self.trained):
            cls = "rm-tok rm-train" if on else "rm-tok rm-mask"
            style = (
                "background:#b7f0c1;border:1px solid #2f9e44;color:#0b3d16"
                if on
                else "background:#f2f4f7;border:1px solid #d0d5dd;color:#667085"
            )
            label = "trained" if on else "-100"
            rows.append(
                f'<span class="{cls}" title="id {tid} · {label}" style="{style};border-radius:3px;'
                f'padding:0 1px;margin:0 1px">{html.escape(_visible(tok))}</span>'
            )
            if "\n" in tok:
                rows.append("<br>")
        rows.append("</div>")
        return "".join(rows)


def _visible(token: str) -> str:
    """Whitespace made visible: newlines as ↵, tabs as →, a lone space as ·."""
    shown = token.replace("\n", "↵").replace("\t", "→")
    if shown and not shown.strip(" "):
        shown = "·" * len(shown)
    return shown


def _masker_for(tokenizer: Any, options: Mapping[str, Any]) -> ChatMasker:
    if tokenizer is not None:
        if isinstance(tokenizer, ChatMasker):
            return tokenizer
        return ChatMasker(tokenizer, **options)
    if _LAST:
        if options:
            return ChatMasker(_LAST[0].tokenizer, **options)
        return _LAST[0]
    raise RespmaskError(
        "preview() needs a tokenizer: call respmask.preview(sample, tokenizer=tok), or build a "
        "ResponseOnlyCollator(tok) first and preview() will use its tokenizer and options."
    )


def _rows(sample: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Split a collated batch (2-D tensors) into rows, dropping padding."""
    ids = np.asarray(_to_numpy(sample["input_ids"]))
    if ids.ndim == 1:
        return [dict(sample)]
    rows = []
    for r in range(ids.shape[0]):
        row = {k: _to_numpy(v)[r] for k, v in sample.items() if k in ("input_ids", "labels", "attention_mask")}
        rows.append(row)
    return rows


def _to_numpy(value: Any) -> Any:
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return value


def _strip_padding(sample: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: np.asarray(_to_numpy(v)).reshape(-1) for k, v in sample.items() if v is not None}
    if "attention_mask" in out:
        keep = out["attention_mask"].astype(bool)
        out = {k: (v[keep] if k in ("input_ids", "labels") and len(v) == len(keep) else v) for k, v in out.items()}
    return out


def preview(sample: Any, tokenizer: Any = None, **options: Any) -> Preview | list[Preview]:
    """Which tokens of ``sample`` are trained.

    ``sample`` may be a raw sample (``messages``, or ``prompt``/``completion``), a pre-tokenized
    one (``input_ids`` with ``labels`` or ``assistant_masks``), or a collated batch (one row, or
    all rows as a list). ``tokenizer`` defaults to the one of the most recently built
    ``ResponseOnlyCollator``; ``options`` are :class:`respmask.ChatMasker` options.
    In a notebook the result displays as HTML; ``print()`` shows ANSI colours.
    """
    masker = _masker_for(tokenizer, options)
    tok = masker.tokenizer
    if isinstance(sample, Mapping) and "input_ids" in sample and "messages" not in sample:
        rows = _rows(sample)
        previews = [_pretokenized(_strip_padding(r), tok) for r in rows]
        return previews[0] if len(previews) == 1 and np.asarray(_to_numpy(sample["input_ids"])).ndim == 1 else previews
    if isinstance(masker.parse(sample), Pretokenized):  # pragma: no cover - handled above
        raise RespmaskError("unreachable")
    rs = masker.render(sample)
    backend = tok.backend_tokenizer
    masker._reset_backend(backend)
    enc = backend.encode(rs.text, add_special_tokens=rs.add_special_tokens)
    ids = list(enc.ids)
    mask = mask_from_ranges(token_ranges(enc, rs.spans), len(ids))
    tokens = _token_texts(rs.text, enc, tok)
    notes = []
    missing = sum(1 for t in rs.turns if t.stop is None)
    if missing:
        notes.append(f"{missing} turn(s) without a stop token")
    return Preview(tokens, ids, [bool(x) for x in mask], len(rs.turns), notes)


def _token_texts(text: str, enc: Any, tok: Any) -> list[str]:
    out = []
    prev_end = -1
    for (a, b), tid in zip(enc.offsets, enc.ids):
        if b > a and a >= prev_end:
            out.append(text[a:b])
        else:
            out.append(tok.decode([tid]))
        prev_end = max(prev_end, b)
    return out


def _pretokenized(sample: Mapping[str, Any], tok: Any) -> Preview:
    parsed = parse(sample)
    assert isinstance(parsed, Pretokenized)
    ids = [int(x) for x in parsed.input_ids]
    trained = [bool(x != IGNORE_INDEX) for x in parsed.labels]
    tokens = [tok.decode([i]) for i in ids]
    runs = sum(1 for i, on in enumerate(trained) if on and (i == 0 or not trained[i - 1]))
    return Preview(tokens, ids, trained, runs, [])


def preview_many(samples: Sequence[Any], tokenizer: Any = None, **options: Any) -> list[Preview]:
    return [p for s in samples for p in _as_list(preview(s, tokenizer, **options))]


def _as_list(p: Preview | list[Preview]) -> list[Preview]:
    return p if isinstance(p, list) else [p]
