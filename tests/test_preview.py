"""respmask.preview: HTML for notebooks, ANSI for terminals, from raw, pre-tokenized or collated samples."""

from __future__ import annotations

import re

import pytest

import respmask
from respmask import ChatMasker, RespmaskError, ResponseOnlyCollator
from respmask import preview as preview_module  # noqa: F401  (the function)
from respmask.preview import _LAST
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
    assert html.count('class="rm-tok rm-train"') == n_trained == p.n_trained
    assert html.count('class="rm-tok ') == len(enc.input_ids) == p.n_tokens
    assert "<b>" not in html  # content is escaped, never markup
    import html as htmllib

    visible = htmllib.unescape(re.sub(r"<[^>]+>", "", html)).replace("·", " ")
    assert "What is <b>bold</b>?" in visible
    assert "&lt;|im_end|&gt;" in html  # special tokens readable
    assert f"{p.n_tokens} tokens" in html and "1 turns" in html


def test_terminal_text_with_and_without_colour(tok):
    p = respmask.preview(SAMPLE, tok)
    coloured = str(p)
    assert "\x1b[30;42m" in coloured or "\x1b[30;102m" in coloured
    plain = p.to_text(color=False)
    assert "⟦A tag.↵\nDone.<|im_end|>⟧" in plain
    text = tok.apply_chat_template(SAMPLE["messages"], tokenize=False)
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured).count("<|im_end|>") == text.count("<|im_end|>")


def test_preview_of_pretokenized_and_collated_rows(tok):
    c = ResponseOnlyCollator(tok)
    batch = c([SAMPLE, {"messages": SAMPLE["messages"] + [{"role": "user", "content": "thanks"}]}])
    rows = respmask.preview(batch)  # uses the collator's tokenizer
    assert isinstance(rows, list) and len(rows) == 2
    direct = respmask.preview(SAMPLE, tok)
    assert rows[0].trained == direct.trained and rows[0].ids == direct.ids  # padding dropped
    one = respmask.preview({"input_ids": batch["input_ids"][0], "labels": batch["labels"][0],
                            "attention_mask": batch["attention_mask"][0]})
    assert one.trained == direct.trained
    pre = respmask.preview({"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, tok)
    assert pre.trained == [False, True, True] and pre.turns == 1


def test_preview_without_tokenizer_says_what_to_pass():
    saved = list(_LAST)
    _LAST.clear()
    try:
        with pytest.raises(RespmaskError, match="tokenizer=tok"):
            respmask.preview(SAMPLE)
    finally:
        _LAST[:] = saved


def test_preview_uses_the_latest_collator_options(tok):
    ResponseOnlyCollator(tok, train_on="last")
    chat = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                         {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}
    assert respmask.preview(chat).turns == 1
    assert respmask.preview(chat, tok).turns == 2
