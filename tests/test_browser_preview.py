"""The notebook preview rendered by a real browser (headless Chromium): the page shows every
trained token highlighted, each token one box that lines never split, and the screenshot is the
picture in the README: ``python tests/test_browser_preview.py`` writes it to docs/preview.png."""

from __future__ import annotations

import json
import os
import re
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


def page(tmp_path: Path, sample: int = 2, width: str = "auto",
         script: str = "") -> tuple[Path, respmask.Preview]:
    tok = demo.tokenizer()
    chat = demo.samples()[sample]  # 2: a tool call, its result, and the final answer
    p = respmask.preview(chat, tok)
    html = tmp_path / "preview.html"
    html.write_text("<!doctype html><meta charset='utf-8'><body style='background:white;margin:12px'>"
                    f"<div style='width:{width}'>" + p._repr_html_() + "</div>" + script, encoding="utf-8")
    return html, p


def screenshot(exe: str, html: Path, png: Path, profile: Path,
               size: str = "900,1400") -> subprocess.CompletedProcess:
    return subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", f"--window-size={size}",
                           f"--screenshot={png}", html.as_uri()], capture_output=True, text=True, timeout=120)


def test_dom_shows_every_trained_token(tmp_path):
    exe = chromium()
    html, p = page(tmp_path)
    out = subprocess.run([exe, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", html.as_uri()],
                         capture_output=True, text=True, timeout=120)
    dom = out.stdout
    assert "respmask-preview" in dom, out.stderr[-2000:]
    assert dom.count("rm-tok rm-train") == p.n_trained > 0
    assert dom.count("rm-tok ") == p.n_tokens
    assert dom.count(" rm-special") == sum(p.special) > 0


# measured in the page itself: how many boxes each token is drawn as, and where
LAYOUT = """<script>
const box = document.querySelector('.respmask-preview').getBoundingClientRect();
const toks = [...document.querySelectorAll('.rm-tok')];
const rects = toks.map(t => t.getClientRects());
const out = document.createElement('pre');
out.id = 'rm-layout';
out.textContent = JSON.stringify({
  n: toks.length,
  split: toks.filter((t, i) => rects[i].length !== 1).map(t => t.textContent),
  outside: toks.filter((t, i) => [...rects[i]].some(r => r.right > box.right + 0.5)).map(t => t.textContent),
  lines: new Set(rects.map(r => Math.round(r[0].top))).size,
});
document.body.appendChild(out);
</script>"""


def test_no_token_is_split_across_lines(tmp_path):
    exe = chromium()
    html, p = page(tmp_path, width="260px", script=LAYOUT)  # narrow: most lines of the chat wrap
    out = subprocess.run([exe, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                          html.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="rm-layout">(.*?)</pre>', out.stdout)
    assert found, out.stderr[-2000:]
    layout = json.loads(found.group(1).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
    assert layout["n"] == p.n_tokens
    assert layout["split"] == []  # every token is one box on one line
    assert layout["outside"] == []  # and fits: the line wrapped before it instead
    newlines = sum(1 for t in p.tokens if "\n" in t)
    assert layout["lines"] > newlines + 1 + 10  # lines did wrap, between tokens


def test_screenshot_has_the_highlighted_spans(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    exe = chromium()
    html, p = page(tmp_path)
    png = tmp_path / "shot.png"
    out = screenshot(exe, html, png, tmp_path / "profile")
    assert png.exists(), out.stderr[-2000:]
    img = Image.open(png).convert("RGB")
    assert img.size == (900, 1400)
    pixels = list(zip(*(iter(img.tobytes()),) * 3))
    green = sum(1 for r, g, b in pixels if (r, g, b) == (0xB7, 0xF0, 0xC1))  # the trained-token background
    # the masked-token background: translucent grey (rgba 128 at .14, the box at opacity .8) over white
    grey = sum(1 for r, g, b in pixels if r == g == b and abs(r - 241) <= 1)
    purple = sum(1 for r, g, b in pixels if (r, g, b) == (0x8B, 0x5C, 0xF6))  # a trained special token's mark
    assert green > 2000 and grey > green  # highlighted spans are drawn; most of this chat is prompt
    assert purple > 100  # <tool_call>, <|im_end|>: special tokens stand out


def write_readme_picture(out: Path = Path(__file__).resolve().parents[1] / "docs" / "preview.png") -> None:
    """docs/preview.png: the demo's two-turn reasoning chat, shot as in the tests, cropped below."""
    import tempfile

    from PIL import Image, ImageChops

    exe = next(shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n))
    with tempfile.TemporaryDirectory() as tmp:
        html, _ = page(Path(tmp), sample=1)
        png = Path(tmp) / "shot.png"
        screenshot(exe, html, png, Path(tmp) / "profile", size="800,900")
        img = Image.open(png).convert("RGB")
        bottom = ImageChops.difference(img, Image.new("RGB", img.size, "white")).getbbox()[3]
        img.crop((0, 0, img.width, min(img.height, bottom + 16))).save(out, optimize=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    write_readme_picture()
