"""The notebook preview rendered by a real browser (headless Chromium): the page shows every
trained token highlighted, and the screenshot is the picture in the README."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import respmask
from respmask import demo

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
]


def chromium() -> str:
    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if exe is None:
        if os.environ.get("RESPMASK_REQUIRE_BROWSER"):
            pytest.fail("RESPMASK_REQUIRE_BROWSER is set but no chromium is installed")
        pytest.skip("no chromium on this machine (install Debian's 'chromium' package)")
    return exe


def page(tmp_path: Path) -> tuple[Path, respmask.Preview]:
    tok = demo.tokenizer()
    tool_chat = demo.samples()[2]  # a tool call, its result, and the final answer
    p = respmask.preview(tool_chat, tok)
    html = tmp_path / "preview.html"
    html.write_text("<!doctype html><meta charset='utf-8'><body style='background:white;margin:12px'>"
                    + p._repr_html_(), encoding="utf-8")
    return html, p


def test_dom_shows_every_trained_token(tmp_path):
    exe = chromium()
    html, p = page(tmp_path)
    out = subprocess.run([exe, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", html.as_uri()],
                         capture_output=True, text=True, timeout=120)
    dom = out.stdout
    assert "respmask-preview" in dom, out.stderr[-2000:]
    assert dom.count("rm-tok rm-train") == p.n_trained > 0
    assert dom.count("rm-tok ") == p.n_tokens


def test_screenshot_has_the_highlighted_spans(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    exe = chromium()
    html, p = page(tmp_path)
    png = tmp_path / "shot.png"
    out = subprocess.run([exe, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=900,1400",
                          f"--screenshot={png}", html.as_uri()], capture_output=True, text=True, timeout=120)
    assert png.exists(), out.stderr[-2000:]
    img = Image.open(png).convert("RGB")
    assert img.size == (900, 1400)
    pixels = list(zip(*(iter(img.tobytes()),) * 3))
    green = sum(1 for r, g, b in pixels if (r, g, b) == (0xB7, 0xF0, 0xC1))  # the trained-token background
    grey = sum(1 for r, g, b in pixels if (r, g, b) == (0xF2, 0xF4, 0xF7))  # the masked-token background
    assert green > 2000 and grey > green  # highlighted spans are drawn; most of this chat is prompt
