"""See which tokens are trained: HTML in a notebook, ANSI colours in a terminal."""

from __future__ import annotations

import html
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ._encode import encode_rows
from ._masker import ChatMasker, Encoded, masker_for
from ._masks import IGNORE_INDEX, as_numpy
from ._samples import Pretokenized, parse
from ._spans import describe_dropped

# Terminal styles, from the xterm 256-colour palette (themes recolour the 16 base colours, seldom
# these). Trained: black on a green background, set together so they read on any theme. Masked:
# foreground only (the terminal's own background shows through), two mid-tones that read on dark
# and light backgrounds alike. Each kind alternates two shades, so every change of shade is a token
# boundary. Special tokens add bold and underline to their shade.
_TRAINED = ("\x1b[38;5;16;48;5;77m", "\x1b[38;5;16;48;5;157m")
_MASKED = ("\x1b[38;5;243m", "\x1b[38;5;31m")
_SPECIAL = "\x1b[1;4m"
_RESET = "\x1b[0m"
_SYMBOLS = "· space (marked only in tokens that are all spaces; other spaces print as spaces), ↵ newline, → tab"

# Notebook styles. Each token is one box that never breaks (lines wrap only between tokens). Trained
# tokens set their background and text colour; masked ones are translucent and take the theme's
# text colour, so both read on light and dark notebook themes.
_HTML_TOK = ("display:inline-block;white-space:pre;word-break:keep-all;overflow-wrap:normal;"
             "vertical-align:top;line-height:1.45;border-radius:3px;padding:0 2px;margin:1px 1px")
_HTML_TRAINED = "background:#b7f0c1;color:#0b3d16;border:1px solid #2f9e44"
_HTML_MASKED = ("background:rgba(128,128,128,.14);color:inherit;border:1px solid rgba(128,128,128,.5);"
                "opacity:.8")
_HTML_SPECIAL = "font-weight:700;border:1px dashed #8b5cf6;box-shadow:inset 0 -2px 0 #8b5cf6"


def use_color(color: bool | None = None, stream: Any = None) -> bool:
    """Whether to write ANSI colours: ``color`` when given (``--color`` / ``--no-color``); else
    never when ``NO_COLOR`` is set and not empty (no-color.org), always when ``FORCE_COLOR`` is,
    and otherwise only when ``stream`` (default ``sys.stdout``) is a terminal (not ``TERM=dumb``)."""
    if color is not None:
        return bool(color)
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    stream = sys.stdout if stream is None else stream
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # None, closed or a stand-in without isatty
        tty = False
    return tty and os.environ.get("TERM") != "dumb"


def legend(color: bool) -> str:
    """One line saying what each style and symbol of :meth:`Preview.to_text` means."""
    if not color:
        return f"legend: ⟦ ⟧ enclose trained tokens, everything else is masked (-100); {_SYMBOLS}"
    t0, t1 = _TRAINED
    m0, m1 = _MASKED
    r = _RESET
    return (
        f"legend: {t0}trained{r} {m0}masked (-100){r} {m0}{_SPECIAL}special token{r} (bold, underlined); "
        f"shades alternate per token: {t0}to{r}{t1}ke{r}{t0}ns{r} {m0}to{r}{m1}ke{r}{m0}ns{r}; {_SYMBOLS}"
    )


_legend = legend  # Preview.to_text's own parameter is called legend


@dataclass
class Preview:
    """Tokens of one sample and whether each is trained.

    Returned by :func:`respmask.preview`. In a notebook it shows as coloured HTML, which
    :meth:`to_html` returns (to save or show elsewhere); ``str()`` / ``print`` gives terminal
    colours, :meth:`to_text` plain text.

    Attributes:
        tokens: each token's text (a run of image tokens is one entry, see ``repeats``).
        ids: their ids; ``trained``: whether each is trained; ``special``: whether each is one
            of the tokenizer's special tokens.
        turns: trained turns found; of a pre-tokenized row (``pretokenized``), which holds no
            turns, its runs of trained tokens.
        notes: what else to know (truncation, data the template leaves out, split rows).
        repeats: how many ids each entry stands for (empty unless image runs are collapsed).
        pretokenized: the row arrived as ``input_ids`` and labels: it is shown with the labels it
            carries (nothing rendered, no turns), and its header counts runs of trained tokens.
    """

    tokens: list[str]
    ids: list[int]
    trained: list[bool]
    turns: int
    notes: list[str] = field(default_factory=list)
    special: list[bool] = field(default_factory=list)  # the tokenizer's special tokens (<|im_start|>, ...)
    repeats: list[int] = field(default_factory=list)  # how many ids an entry stands for (an image's run)
    pretokenized: bool = False  # input_ids and labels as they arrived: no turns, runs of trained tokens

    @property
    def n_tokens(self) -> int:
        return sum(self.repeats) if self.repeats else len(self.tokens)

    @property
    def n_trained(self) -> int:
        if self.repeats:
            return sum(n for n, on in zip(self.repeats, self.trained) if on)
        return sum(self.trained)

    def summary(self) -> str:
        pct = 100.0 * self.n_trained / self.n_tokens if self.n_tokens else 0.0
        plural = "" if self.turns == 1 else "s"
        counted = (f"{self.turns} trained run{plural} (a pre-tokenized row: its own labels, no turns)"
                   if self.pretokenized else f"{self.turns} turn{plural}")
        parts = [f"{self.n_tokens} tokens", f"{self.n_trained} trained ({pct:.0f}%)", counted]
        return "respmask: " + ", ".join(parts + self.notes)

    def _is_special(self, i: int) -> bool:
        return i < len(self.special) and self.special[i]

    # -- terminal ------------------------------------------------------------------------------
    def to_text(self, color: bool | None = None, legend: bool = True) -> str:
        """The summary, a legend line (unless ``legend=False``) and the tokens: in ANSI colours
        (trained tokens on green, masked ones in plain text, the shade alternating at each token
        boundary, special tokens bold and underlined), or with ⟦ ⟧ around trained runs.
        ``color=None`` decides as :func:`use_color` does for ``sys.stdout``."""
        color = use_color(color)
        out = [self.summary(), "\n"]
        if legend:
            out += [_legend(color), "\n"]
        prev = False
        for i, (tok, on) in enumerate(zip(self.tokens, self.trained)):
            shown = _visible(tok)
            if color:
                style = (_TRAINED if on else _MASKED)[i % 2]
                if self._is_special(i):
                    style += _SPECIAL
                out.append(style + shown + _RESET)
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

    def __repr__(self) -> str:
        # the plain view (⟦ ⟧ around trained tokens): what a REPL or a doctest shows for ``p``
        return self.to_text(color=False)

    def __str__(self) -> str:
        # decided when printed: colours only on a terminal, never with NO_COLOR, always with FORCE_COLOR
        return self.to_text(color=use_color())

    # -- notebook ------------------------------------------------------------------------------
    def to_html(self) -> str:
        """The coloured view as one self-contained HTML fragment (inline styles, no script): what a
        notebook shows for a :class:`Preview`, and what ``respmask preview --html`` writes.

        Each token is a box with its id and whether it is trained in its tooltip; trained tokens
        are on green, masked ones translucent, special tokens bold and underlined. Save it, or show
        it anywhere HTML is shown (``IPython.display.HTML(p.to_html())``, a web page, a report).

        Returns:
            An HTML ``<div>`` (a fragment, not a whole page).

        Example:
            >>> page = respmask.preview(ds[0], tok).to_html()   # e.g. Path("sample.html").write_text(page)
            >>> page.startswith('<div class="respmask-preview"'), page.count('rm-train')   # trained tokens
            (True, 4)
        """
        badge = "padding:0 4px;border-radius:3px;white-space:pre"
        rows = [
            '<div class="respmask-preview" style="font-family:ui-monospace,Menlo,Consolas,monospace;'
            'font-size:12.5px;line-height:1.7;white-space:normal">',
            '<div class="rm-summary" style="font-family:system-ui,sans-serif;margin-bottom:6px">'
            f'<span style="font-weight:600">{html.escape(self.summary())}</span><br>'
            f'<span class="rm-legend">legend: <span style="{_HTML_TRAINED};{badge}">trained</span> '
            f'<span style="{_HTML_MASKED};{badge}">masked (-100)</span> '
            f'<span style="{_HTML_MASKED};{_HTML_SPECIAL};{badge}">special token</span>; '
            "each box is one token; "
            + ", ".join(f'<span style="white-space:pre">{html.escape(x)}</span>'
                        for x in _SYMBOLS.split(", "))
            + "</span></div>",
        ]
        for i, (tok, tid, on) in enumerate(zip(self.tokens, self.ids, self.trained)):
            special = self._is_special(i)
            cls = "rm-tok rm-train" if on else "rm-tok rm-mask"
            style = f"{_HTML_TOK};{_HTML_TRAINED if on else _HTML_MASKED}"
            label = "trained" if on else "-100"
            if special:
                cls += " rm-special"
                style += f";{_HTML_SPECIAL}"
                label += ", special token"
            rows.append(
                f'<span class="{cls}" title="id {tid}, {label}" style="{style}">'
                f"{html.escape(_visible(tok))}</span>"
            )
            if "\n" in tok:
                rows.append("<br>")
        rows.append("</div>")
        return "".join(rows)

    def _repr_html_(self) -> str:
        # what Jupyter shows for a Preview: the public HTML view
        return self.to_html()


def _visible(token: str) -> str:
    """Whitespace made visible: newlines as ↵, tabs as →, a lone space as ·."""
    shown = token.replace("\n", "↵").replace("\t", "→")
    if shown and not shown.strip(" "):
        shown = "·" * len(shown)
    return shown


def _special_flags(ids: Sequence[int], tok: Any) -> list[bool]:
    """Which ids are the tokenizer's special tokens (its special added tokens and named ones)."""
    special = {int(i) for i in (getattr(tok, "all_special_ids", None) or [])}
    added = getattr(tok, "added_tokens_decoder", None) or {}
    special.update(int(i) for i, t in added.items() if getattr(t, "special", False))
    return [int(i) in special for i in ids]


def _rows(sample: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Split a collated batch (2-D tensors) into rows, dropping padding."""
    ids = as_numpy(sample["input_ids"])
    if ids.ndim == 1:
        return [dict(sample)]
    rows = []
    for r in range(ids.shape[0]):
        row = {k: as_numpy(v)[r] for k, v in sample.items() if k in ("input_ids", "labels", "attention_mask")}
        rows.append(row)
    return rows


def _strip_padding(sample: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: as_numpy(v).reshape(-1) for k, v in sample.items() if v is not None}
    if "attention_mask" in out:
        keep = out["attention_mask"].astype(bool)
        out = {k: (v[keep] if k in ("input_ids", "labels") and len(v) == len(keep) else v) for k, v in out.items()}
    return out


def preview(sample: Any, tokenizer: Any, **changes: Any) -> Preview | list[Preview]:
    """Which tokens of ``sample`` are trained.

    Args:
        sample: a raw sample (``messages``, ``prompt``/``completion``, any format respmask
            reads), a pre-tokenized one (``input_ids`` with ``labels`` or ``assistant_masks``), or
            a collated batch (one row, or all rows as a list).
        tokenizer: a fast tokenizer, a processor or a :class:`respmask.ChatMasker` (a collator's
            ``collator.preview(sample)`` passes its own masker).
        **changes: masking options by name (:class:`respmask.MaskOptions`).

    Returns:
        A :class:`Preview` (a list for a collated batch of several rows, or a conversation that
        ``split`` makes several rows of). In a notebook it displays as HTML; ``print()`` shows
        ANSI colours on a terminal (plain text with ⟦ ⟧ around trained tokens elsewhere, or with
        ``NO_COLOR`` set).

    Raises:
        SampleError: the sample is malformed or the template rejects it (the message says why).
        TypeError: no tokenizer, or a masker passed with options.

    Example:
        >>> p = respmask.preview({"messages": [{"role": "user", "content": "Hi"},
        ...                                    {"role": "assistant", "content": "Hello!"}]}, tok)
        >>> p.n_trained, p.n_tokens
        (3, 54)
        >>> print(p.to_text(legend=False))  # in a notebook, ``p`` alone draws each token as a box
        respmask: 54 tokens, 3 trained (6%), 1 turn
        <|im_start|>system↵
        You are·Qwen, created by·Alibaba·Cloud.·You are a helpful assistant.<|im_end|>↵
        <|im_start|>user↵
        Hi<|im_end|>↵
        <|im_start|>assistant↵
        ⟦Hello!<|im_end|>⟧↵
    """
    if tokenizer is None:
        raise TypeError("preview() needs a tokenizer, a processor or a respmask.ChatMasker: "
                        "respmask.preview(sample, tok), or collator.preview(sample)")
    masker = masker_for(tokenizer, None, changes)
    tok = masker.tokenizer
    if isinstance(sample, Mapping) and "input_ids" in sample and "messages" not in sample:
        rows = _rows(sample)
        previews = [_pretokenized(_strip_padding(r), tok) for r in rows]
        return previews[0] if len(previews) == 1 and as_numpy(sample["input_ids"]).ndim == 1 else previews
    return _shown(masker, encode_rows(masker, [sample])[1])


def collated_preview(sample: Any, masker: ChatMasker, *, max_length: int | None, truncation: str = "right",
                     on_image_cut: str = "truncate") -> Preview | list[Preview]:
    """Which tokens of ``sample`` a collator with these settings trains: :func:`preview` of the
    row as the collator cuts it to ``max_length`` (a processor's row in its text, never through an
    image), with a note saying what the cut took; a row ``on_image_cut="drop"`` leaves out is shown
    whole, with the note that it is left out and why.

    Raises:
        SampleError: the sample is malformed or the template rejects it.
    """
    return _shown(masker, encode_rows(masker, [sample], max_length=max_length, truncation=truncation,
                                      on_image_cut=on_image_cut)[1], max_length, truncation)


def _shown(masker: ChatMasker, rows: Sequence[Any], max_length: int | None = None,
           truncation: str = "right") -> Preview | list[Preview]:
    """The previews of one sample's training rows (one, or several when the masker splits)."""
    shown = []
    for row in rows:
        whole = row.encoded
        if whole is None:
            continue
        cut = row.truncated and row.left_out is None
        enc = replace(whole, input_ids=row.input_ids, labels=row.labels) if cut else whole
        if masker.processor is not None:
            p = _processed(enc, masker)
        elif enc.text is None:  # a pre-tokenized row, shown as preview() shows one
            p = _pretokenized({"input_ids": enc.input_ids, "labels": enc.labels}, masker.tokenizer)
        else:
            p = _rendered(enc, masker)
        if row.left_out is not None:
            p.notes.append(row.left_out)
        elif cut:
            p.turns = row.turns if whole.text is not None else p.turns  # the turns the cut left, as check counts
            p.notes.append(f"truncated to max_length={max_length} ({truncation}): "
                           f"{len(whole.input_ids) - len(row.input_ids)} of {len(whole.input_ids)} tokens cut"
                           + (f", {row.images_dropped} image(s) dropped with them" if row.images_dropped else "")
                           + (f", {row.audio_dropped} audio clip(s) dropped with them" if row.audio_dropped else ""))
        shown.append(p)
    return shown[0] if len(shown) == 1 else shown


def _trained_runs(trained: Sequence[bool]) -> int:
    """How many runs of trained tokens ``trained`` holds."""
    return sum(1 for i, on in enumerate(trained) if on and (i == 0 or not trained[i - 1]))


def _rendered(enc: Encoded, masker: ChatMasker) -> Preview:
    """A text row: its tokens as they read in the rendered text."""
    tok = masker.tokenizer
    ids = enc.input_ids.tolist()
    trained = (enc.labels != IGNORE_INDEX).tolist()
    notes = []
    missing = sum(1 for t in enc.turns if t.stop is None)
    if missing:
        notes.append(f"{missing} turn(s) without a stop token")
    if enc.rows > 1:
        notes.append(f"row {enc.row + 1} of {enc.rows} (split)")
    notes += left_out_notes(enc)
    return Preview(_token_texts(enc.text or "", ids, masker), ids, trained, len(enc.turns), notes,
                   _special_flags(ids, tok))


def left_out_notes(enc: Encoded) -> list[str]:
    """What the chat template leaves out of a row's render, as :class:`Preview` notes: the data
    of each message it drops (never trained), and earlier turns' reasoning (``split="auto"``
    trains it)."""
    notes = []
    lost = enc.lost_data
    if lost:
        notes.append("the chat template leaves out (not trained): " + describe_dropped(lost))
    reasoning = [k for k, what in enc.dropped if (k, what) not in lost]
    if reasoning:
        notes.append(f"reasoning of earlier turns left out by the template (messages {', '.join(map(str, reasoning))}; "
                     "split='auto' trains it)")
    return notes


def _token_texts(text: str, ids: Sequence[int], masker: ChatMasker) -> list[str]:
    """Each token's text: its slice of ``text`` where the tokenizer's offsets give one, else the
    token decoded alone (special tokens a post-processor adds, pieces of a character)."""
    tok = masker.tokenizer
    for add_special in (False, True):
        enc = masker.backend().encode(text, add_special_tokens=add_special)
        if enc.ids == list(ids):
            break
    else:
        return [tok.decode([i]) for i in ids]
    out = []
    prev_end = -1
    for (a, b), tid in zip(enc.offsets, enc.ids):
        if b > a and a >= prev_end:
            out.append(text[a:b])
        else:
            out.append(tok.decode([tid]))
        prev_end = max(prev_end, b)
    return out


def _processed(enc: Encoded, masker: ChatMasker) -> Preview:
    """A chat with images, as the processor expands it; each image's run of identical tokens is
    shown as one entry: ``[<image_soft_token> ×256]``."""
    tok = masker.tokenizer
    media = set(masker.media_tokens().tolist())
    ids_all = enc.input_ids.tolist()
    trained_all = (enc.labels != IGNORE_INDEX).tolist()
    tokens: list[str] = []
    ids: list[int] = []
    trained: list[bool] = []
    repeats: list[int] = []
    i = 0
    while i < len(ids_all):
        j = i + 1
        if ids_all[i] in media:
            while j < len(ids_all) and ids_all[j] == ids_all[i]:
                j += 1
        text = tok.convert_ids_to_tokens(ids_all[i]) if ids_all[i] in media else tok.decode([ids_all[i]])
        tokens.append(f"[{text} ×{j - i}]" if j - i > 1 else text)
        ids.append(ids_all[i])
        trained.append(any(trained_all[i:j]))
        repeats.append(j - i)
        i = j
    special = [s or i in media for s, i in zip(_special_flags(ids, tok), ids)]
    return Preview(tokens, ids, trained, enc.n_turns, [], special, repeats)


def _pretokenized(sample: Mapping[str, Any], tok: Any) -> Preview:
    parsed = parse(sample)
    assert isinstance(parsed, Pretokenized)
    ids = [int(x) for x in parsed.input_ids]
    trained = [bool(x != IGNORE_INDEX) for x in parsed.labels]
    tokens = [tok.decode([i]) for i in ids]
    runs = _trained_runs(trained)
    return Preview(tokens, ids, trained, runs, [], _special_flags(ids, tok), pretokenized=True)
