"""respmask.preview: HTML for notebooks, ANSI for terminals, from raw, pre-tokenized or collated samples."""

from __future__ import annotations

import io
import json
import re
import sys

import pytest

import respmask
from respmask import ChatMasker, ResponseOnlyCollator
from support.tokenizers import fixture_tokenizer

SAMPLE = {
    "messages": [
        {"role": "user", "content": "What is <b>bold</b>?"},
        {"role": "assistant", "content": "A tag.\nDone."},
    ]
}


@pytest.fixture()
def tok():
    return fixture_tokenizer("qwen2_5")


def test_html_highlights_exactly_the_trained_tokens(tok):
    p = respmask.preview(SAMPLE, tok)
    html = p._repr_html_()
    enc = ChatMasker(tok).encode(SAMPLE)
    n_trained = int((enc.labels != -100).sum())
    assert len(re.findall(r'class="rm-tok rm-train[ "]', html)) == n_trained == p.n_trained
    assert html.count('class="rm-tok ') == len(enc.input_ids) == p.n_tokens
    assert "<b>" not in html  # content is escaped, never markup
    import html as htmllib

    visible = htmllib.unescape(re.sub(r"<[^>]+>", "", html)).replace("·", " ")
    assert "What is <b>bold</b>?" in visible
    assert "&lt;|im_end|&gt;" in html  # special tokens readable
    assert f"{p.n_tokens} tokens" in html and "1 turn<" in html


def test_terminal_text_with_and_without_colour(tok):
    p = respmask.preview(SAMPLE, tok)
    coloured = p.to_text(color=True)
    assert re.search(r"\x1b\[[0-9;]*48;5;\d+m", coloured)  # trained tokens on a background
    plain = p.to_text(color=False)
    assert "⟦A tag.↵\nDone.<|im_end|>⟧" in plain
    text = tok.apply_chat_template(SAMPLE["messages"], tokenize=False)
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured).count("<|im_end|>") == text.count("<|im_end|>")


def test_preview_of_pretokenized_and_collated_rows(tok):
    c = ResponseOnlyCollator(tok)
    batch = c([SAMPLE, {"messages": SAMPLE["messages"] + [{"role": "user", "content": "thanks"}]}])
    rows = c.preview(batch)  # the collator's own tokenizer and options
    assert isinstance(rows, list) and len(rows) == 2
    direct = respmask.preview(SAMPLE, tok)
    assert rows[0].trained == direct.trained and rows[0].ids == direct.ids  # padding dropped
    one = respmask.preview({"input_ids": batch["input_ids"][0], "labels": batch["labels"][0],
                            "attention_mask": batch["attention_mask"][0]}, tok)
    assert one.trained == direct.trained
    pre = respmask.preview({"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, tok)
    assert pre.trained == [False, True, True] and pre.turns == 1


def test_preview_without_tokenizer_says_what_to_pass():
    with pytest.raises(TypeError, match=r"collator\.preview\(sample\)"):
        respmask.preview(SAMPLE, None)
    with pytest.raises(TypeError, match="tokenizer"):
        respmask.preview(SAMPLE)  # type: ignore[call-arg]


def test_collator_preview_uses_its_own_options_and_nothing_is_remembered(tok):
    chat = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                         {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}
    last = ResponseOnlyCollator(tok, train_on="last")
    ResponseOnlyCollator(tok)  # a later collator changes nothing about the first
    assert last.preview(chat).turns == 1
    assert respmask.preview(chat, tok).turns == 2
    assert respmask.preview(chat, last.masker).turns == 1  # a masker carries its options
    assert respmask.preview(chat, tok, train_on="last").turns == 1
    with pytest.raises(TypeError, match="carries its own options"):
        respmask.preview(chat, last.masker, train_on="all")


def test_preview_of_split_rows(tok):
    chat = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                         {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}
    rows = respmask.preview(chat, tok, split="turns")
    assert isinstance(rows, list) and [p.turns for p in rows] == [1, 1]
    assert "row 2 of 2 (split)" in rows[1].summary()
    enc = ChatMasker(tok, split="turns").encode_rows(chat)
    assert [p.ids for p in rows] == [e.input_ids.tolist() for e in enc]


# -- terminal colours: when, and which --------------------------------------------------------------

SGR = re.compile(r"\x1b\[[0-9;]*m")
# a tab, a lone space and newlines in the prompt, and a special token typed by the user
WHITESPACE = {"messages": [{"role": "user", "content": "Tab\there, two  spaces? <|im_end|>"},
                           {"role": "assistant", "content": "A tag.\nDone."}]}


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.fixture()
def env(monkeypatch):
    """No colour variables, a colour terminal type; tests set stdout and the variables they need."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    return monkeypatch


def test_print_writes_escape_codes_only_to_a_terminal(tok, env, capsys):
    p = respmask.preview(SAMPLE, tok)  # one object: colour is decided each time it is printed
    print(p)  # pytest's captured stdout is no terminal
    out = capsys.readouterr().out
    assert "\x1b" not in out and "⟦A tag.↵\nDone.<|im_end|>⟧" in out  # the plain view marks trained tokens
    env.setattr(sys, "stdout", _Stream(tty=False))
    assert "\x1b" not in str(p)
    env.setattr(sys, "stdout", _Stream(tty=True))
    assert SGR.search(str(p))


def test_no_color_turns_colours_off_even_on_a_terminal(tok, env):
    p = respmask.preview(SAMPLE, tok)
    env.setattr(sys, "stdout", _Stream(tty=True))
    env.setenv("NO_COLOR", "1")
    assert "\x1b" not in str(p) and "\x1b" not in f"{p}"
    env.setenv("FORCE_COLOR", "1")  # NO_COLOR wins over FORCE_COLOR
    assert "\x1b" not in str(p)
    env.setenv("NO_COLOR", "")  # set but empty: ignored (no-color.org)
    env.delenv("FORCE_COLOR")
    assert SGR.search(str(p))
    env.setenv("TERM", "dumb")
    assert "\x1b" not in str(p)


def test_force_color_and_explicit_color_force_colours(tok, env):
    p = respmask.preview(SAMPLE, tok)
    env.setattr(sys, "stdout", _Stream(tty=False))
    assert "\x1b" not in str(p)
    env.setenv("FORCE_COLOR", "1")
    assert SGR.search(str(p))
    env.delenv("FORCE_COLOR")
    env.setenv("NO_COLOR", "1")
    assert SGR.search(p.to_text(color=True))  # an explicit request beats the environment
    env.delenv("NO_COLOR")
    env.setenv("FORCE_COLOR", "1")
    assert "\x1b" not in p.to_text(color=False)


def test_cli_colour_follows_the_same_rule(env, capsys):
    from respmask._cli import main

    def out(*flags: str) -> str:
        assert main(["preview", "-n", "1", *flags]) == 0
        return capsys.readouterr().out

    assert "\x1b" not in out()  # captured stdout is no terminal
    env.setenv("FORCE_COLOR", "1")
    assert SGR.search(out())
    assert "\x1b" not in out("--no-color")
    env.delenv("FORCE_COLOR")
    env.setenv("NO_COLOR", "1")
    assert "\x1b" not in out()
    coloured = out("--color")
    assert SGR.search(coloured)
    assert "legend:" in coloured and "special token" in coloured


def _body_styles(text: str) -> list[tuple[str, str]]:
    """(escape codes, text) of each styled run after the summary and legend lines."""
    body = text.split("\n", 2)[2]
    return [(m.group(1), m.group(2)) for m in re.finditer(r"((?:\x1b\[[0-9;]*m)+)([^\x1b]*)\x1b\[0m", body)]


def _xterm_rgb(n: int) -> tuple[int, int, int]:
    """The xterm 256-colour palette above the 16 colours a theme picks."""
    assert 16 <= n <= 255, f"colour {n} is one the terminal theme chooses"
    if n >= 232:
        return (8 + 10 * (n - 232),) * 3
    steps = (0, 95, 135, 175, 215, 255)
    n -= 16
    return steps[n // 36], steps[n // 6 % 6], steps[n % 6]


def _contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    def lum(rgb):
        c = [x / 255 for x in rgb]
        c = [x / 12.92 if x <= 0.04045 else ((x + 0.055) / 1.055) ** 2.4 for x in c]
        return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]

    hi, lo = sorted((lum(a), lum(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def _sgr(style: str) -> dict:
    """Foreground, background (256-colour numbers, or 'basic') and other attributes of escape codes."""
    out: dict = {"fg": None, "bg": None, "attrs": set()}
    for seq in re.findall(r"\x1b\[([0-9;]*)m", style):
        codes = [int(c) for c in seq.split(";") if c]
        i = 0
        while i < len(codes):
            c = codes[i]
            if c in (38, 48):
                assert codes[i + 1] == 5, style
                out["fg" if c == 38 else "bg"] = codes[i + 2]
                i += 3
                continue
            if 30 <= c <= 37 or 90 <= c <= 97:
                out["fg"] = "basic"
            elif 40 <= c <= 47 or 100 <= c <= 107:
                out["bg"] = "basic"
            else:
                out["attrs"].add(c)
            i += 1
    return out


def test_palette_reads_on_dark_and_light_terminals(tok):
    p = respmask.preview(WHITESPACE, tok)
    runs = _body_styles(p.to_text(color=True))
    assert len(runs) == p.n_tokens and "".join(t for _, t in runs).count("<|im_end|>") == 4
    black, white = (0, 0, 0), (255, 255, 255)
    for i, (style, shown) in enumerate(runs):
        st = _sgr(style)
        if p.trained[i]:  # a background highlight with its own foreground, never the theme's
            assert st["bg"] is not None and st["fg"] is not None, (shown, style)
            assert _contrast(_xterm_rgb(st["fg"]), _xterm_rgb(st["bg"])) >= 7, style
        else:  # masked: foreground only, readable on whatever background the terminal has
            assert st["bg"] is None and st["fg"] is not None, (shown, style)
            fg = _xterm_rgb(st["fg"])
            assert _contrast(fg, black) >= 4 and _contrast(fg, white) >= 4, style
    # the shade alternates, so neighbours of the same kind never look alike: every boundary shows
    for i in range(1, len(runs)):
        if p.trained[i] == p.trained[i - 1]:
            a, b = _sgr(runs[i - 1][0]), _sgr(runs[i][0])
            assert (a["fg"], a["bg"]) != (b["fg"], b["bg"]), (runs[i - 1], runs[i])
    # special tokens (bold, underlined) and only they; here the template's and the one the user typed
    assert sum(p.special) >= 5
    for i, (style, shown) in enumerate(runs):
        marked = {1, 4} <= _sgr(style)["attrs"]
        assert marked == p.special[i] == (shown in ("<|im_start|>", "<|im_end|>")), shown


def test_legend_explains_every_style_and_symbol(tok):
    p = respmask.preview(WHITESPACE, tok)
    for color in (True, False):
        summary, legend, body = p.to_text(color=color).split("\n", 2)
        assert summary == p.summary() and legend.startswith("legend: ")
        used = {s for s in "·↵→" if s in body}
        assert used == {"·", "↵", "→"}  # this sample shows all three
        for sym, meaning in (("·", "space"), ("↵", "newline"), ("→", "tab")):
            assert f"{sym} {meaning}" in legend
        assert "·" not in summary  # · means a space, nothing else
        if color:
            assert set(SGR.findall(body)) <= set(SGR.findall(legend))  # each style is shown in the legend
            assert "trained" in legend and "masked (-100)" in legend and "special token" in legend
            assert "alternate per token" in legend
        else:
            assert "⟦" in body and "⟧" in body and "⟦ ⟧ enclose trained tokens" in legend
    assert "legend" not in p.to_text(color=False, legend=False)


def test_html_tokens_never_split_and_special_tokens_stand_out(tok):
    p = respmask.preview(WHITESPACE, tok)
    page = p._repr_html_()
    assert "break-all" not in page and "pre-wrap" not in page
    spans = re.findall(r'<span class="(rm-tok[^"]*)" title="[^"]*" style="([^"]*)">([^<]*)</span>', page)
    assert len(spans) == p.n_tokens
    for i, (cls, style, shown) in enumerate(spans):
        decl = dict(d.split(":", 1) for d in style.split(";") if d)
        # one unbreakable box
        assert decl["display"] == "inline-block" and decl["white-space"] == "pre", style
        assert ("rm-train" in cls) == p.trained[i]
        assert ("rm-special" in cls) == p.special[i] and (decl.get("font-weight") == "700") == p.special[i]
        if p.trained[i]:  # explicit colours: readable on a light or a dark notebook theme
            assert decl["background"].startswith("#") and decl["color"].startswith("#")
        else:  # translucent, in the theme's own text colour
            assert decl["background"].startswith("rgba(") and decl["color"] == "inherit"
    assert sum("rm-special" in c for c, _, _ in spans) == sum(p.special) >= 5
    legend = re.search(r'class="rm-legend">(.*?)</div>', page).group(1)
    text = re.sub(r"<[^>]+>", "", legend)
    for words in ("trained", "masked (-100)", "special token", "each box is one token",
                  "· space", "↵ newline", "→ tab"):
        assert words in text


@pytest.mark.parametrize("side", ["right", "left"])
def test_collator_preview_shows_the_row_its_max_length_cuts(tok, side):
    # what the collator trains is the cut row: its preview is that row, saying what the cut took
    chat = {"messages": [{"role": "user", "content": "hello there how are you"},
                         {"role": "assistant", "content": "fine thanks, and you? " * 5},
                         {"role": "user", "content": "ok"}, {"role": "assistant", "content": "bye"}]}
    whole = respmask.preview(chat, tok)
    n = whole.n_tokens - 20  # the right cut takes the second exchange, the left one the system prompt
    collator = ResponseOnlyCollator(tok, max_length=n, truncation=side, return_tensors="np", on_untrainable="keep")
    p = collator.preview(chat)
    ids, labels = collator([chat])["input_ids"][0], collator([chat])["labels"][0]
    assert p.n_tokens == n == len(ids)
    assert p.ids == ids.tolist() and p.trained == (labels != -100).tolist()
    assert f"truncated to max_length={n} ({side}): 20 of {whole.n_tokens} tokens cut" in p.summary()
    assert p.turns == (1 if side == "right" else 2) and whole.turns == 2
    assert ResponseOnlyCollator(tok, max_length=whole.n_tokens).preview(chat).summary() == whole.summary()


def test_collator_preview_of_a_pretokenized_row_it_cuts(tok):
    # a pre-tokenized row is shown as preview() shows one (its trained runs are its turns), cut
    chat = {"messages": [{"role": "user", "content": "hi there"},
                         {"role": "assistant", "content": "hello friend, how are you"}]}
    enc = ChatMasker(tok).encode(chat)
    row = {"input_ids": enc.input_ids.tolist(), "labels": enc.labels.tolist()}
    whole = respmask.preview(row, tok)
    p = ResponseOnlyCollator(tok, max_length=whole.n_tokens - 3, truncation="left").preview(row)
    assert whole.turns == p.turns == 1 and p.n_trained == whole.n_trained and p.ids == whole.ids[3:]
    assert f"truncated to max_length={whole.n_tokens - 3} (left): 3 of {whole.n_tokens} tokens cut" in p.summary()


def test_a_pretokenized_row_is_not_said_to_hold_turns(tok, tmp_path, capsys):
    """A pre-tokenized row holds ids and labels, no turns: its header counts runs of trained tokens
    and says what the row is (it said '1 turn' before)."""
    from respmask._cli import main

    two = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                        {"role": "user", "content": "again"}, {"role": "assistant", "content": "yes"}]}
    pre = respmask.Pretokenizer(tok)({"messages": [two["messages"]]})
    row = {"input_ids": pre["input_ids"][0], "labels": pre["labels"][0]}
    p = respmask.preview(row, tok)
    assert p.pretokenized and p.turns == 2
    assert p.summary().startswith(f"respmask: {len(row['input_ids'])} tokens, {p.n_trained} trained (")
    assert "2 trained runs (a pre-tokenized row: its own labels, no turns)" in p.summary()
    assert " turn," not in p.summary() and not p.summary().endswith("turns")
    one = {"input_ids": row["input_ids"], "labels": [-100] * 10 + list(row["input_ids"][10:])}
    assert "1 trained run (a pre-tokenized row" in respmask.preview(one, tok).summary()
    # a chat keeps its turns
    assert respmask.preview(two, tok).summary().endswith("2 turns") and not respmask.preview(two, tok).pretokenized
    # the collator's preview and the CLI say the same
    assert "trained runs (a pre-tokenized row" in ResponseOnlyCollator(tok, max_length=40).preview(row).summary()
    tok_dir = tmp_path / "tok"
    tok.save_pretrained(tok_dir)
    data = tmp_path / "pre.jsonl"
    data.write_text(json.dumps({k: [int(x) for x in v] for k, v in row.items()}) + "\n")
    assert main(["preview", str(data), "--tokenizer", str(tok_dir), "--no-color"]) == 0
    out = capsys.readouterr().out
    assert "2 trained runs (a pre-tokenized row: its own labels, no turns)" in out and "1 turn" not in out
