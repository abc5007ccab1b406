"""Small real tokenizers built in the test session (no hub, no ../shared needed).

Two base models are trained once on a fixed corpus: a byte-level BPE (GPT-2 / Llama 3 / Qwen
style) and a Metaspace BPE with byte fallback (SentencePiece style, as Llama 2, Mistral and
Gemma). Each template then gets a copy with its model's special tokens added.
"""

from __future__ import annotations

import functools
import json
import os
import random
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "chat_templates"
SHARED_ENV = "RESPMASK_SHARED_TOKENIZERS"

_WORDS = (
    "the a an of to and in is it you that he was for on are with as his they be at one have this from or had "
    "by hot word but what some we can out other were all there when up use your how said each she which do "
    "their time if will way about many then them write would like so these her long make thing see him two "
    "has look more day could go come did number sound no most people my over know water than call first who "
    "may down side been now find weather city paris london tokyo sunny rain cloudy degrees celsius tool call "
    "function answer question think reason because therefore result value json string list assistant user "
    "system hello thanks please help code python def return print import class self none true false"
).split()
_EXTRA = [
    "def f(x):\n    return x * 2\n",
    '{"name": "get_weather", "arguments": {"city": "Paris"}}',
    "Emoji 😀 🚀 ✨ and accents: café naïve über, 中文 字符, русский, العربية, हिन्दी",
    "Numbers 0 1 2 3 42 2024 3.14 -7\n\n\t tabs\tand  double  spaces  ",
    "<think>\nI should reason.\n</think>\n\n",
]


def corpus(n: int = 4000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        k = rng.randint(3, 18)
        words = [rng.choice(_WORDS) for _ in range(k)]
        if rng.random() < 0.3:
            words[0] = words[0].capitalize()
        line = " ".join(words) + rng.choice([".", "?", "!", ":", ",", "", "\n"])
        lines.append(line)
    lines += _EXTRA * 20
    return lines


@functools.lru_cache(maxsize=None)
def base_tokenizer_json(style: str) -> str:
    """A trained base tokenizer, serialised (``style``: ``bytelevel`` or ``metaspace``)."""
    if style == "bytelevel":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        trainer = trainers.BpeTrainer(
            vocab_size=1200, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
        )
    elif style == "metaspace":
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
        tok.normalizer = normalizers.Sequence([normalizers.Replace(" ", "▁")])
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
        tok.decoder = decoders.Sequence(
            [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
        )
        byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
        trainer = trainers.BpeTrainer(
            vocab_size=1500, special_tokens=["<unk>", *byte_tokens], show_progress=False
        )
    else:  # pragma: no cover
        raise ValueError(style)
    tok.train_from_iterator(corpus(), trainer=trainer)
    return tok.to_str()


def manifest() -> dict[str, Any]:
    with open(FIXTURES / "manifest.json", encoding="utf-8") as f:
        return json.load(f)


def template_names() -> list[str]:
    return sorted(p.stem for p in FIXTURES.glob("*.jinja"))


def template_source(name: str, annotated: bool = False) -> str:
    path = FIXTURES / ("annotated" if annotated else "") / f"{name}.jinja"
    return path.read_text(encoding="utf-8")


def build_tokenizer(
    chat_template: str,
    *,
    style: str = "bytelevel",
    bos: str | None = None,
    eos: str | None = None,
    special: list[str] | tuple[str, ...] = (),
    pad: str | None = None,
) -> PreTrainedTokenizerFast:
    """A fast tokenizer over a trained base with these special tokens and chat template."""
    backend = Tokenizer.from_str(base_tokenizer_json(style))
    kwargs: dict[str, Any] = {"tokenizer_object": backend, "chat_template": chat_template}
    if bos:
        kwargs["bos_token"] = bos
    if eos:
        kwargs["eos_token"] = eos
    if pad:
        kwargs["pad_token"] = pad
    if style == "metaspace":
        kwargs["unk_token"] = "<unk>"
    tok = PreTrainedTokenizerFast(**kwargs)
    extra = [t for t in dict.fromkeys(special) if t and t not in (bos, eos, pad)]
    if extra:
        tok.add_special_tokens({"additional_special_tokens": extra})
    return tok


@functools.lru_cache(maxsize=None)
def fixture_tokenizer(name: str, style: str = "bytelevel", annotated: bool = False) -> PreTrainedTokenizerFast:
    """The small tokenizer for fixture template ``name`` (cached for the session)."""
    info = manifest().get(name, {})
    special = list(info.get("special_tokens", []))
    return build_tokenizer(
        template_source(name, annotated),
        style=style,
        bos=info.get("bos_token"),
        eos=info.get("eos_token"),
        special=special,
    )


def shared_dir() -> Path | None:
    path = os.environ.get(SHARED_ENV)
    if not path:
        return None
    p = Path(path)
    return p if p.is_dir() else None


@functools.lru_cache(maxsize=None)
def shared_tokenizer(folder: str, chat_template: str | None = None) -> PreTrainedTokenizerFast:
    """A real tokenizer from ../shared/tokenizers (callers skip when it is absent)."""
    root = shared_dir()
    assert root is not None
    if not (root / folder / "tokenizer.json").is_file():
        import pytest

        pytest.skip(f"{SHARED_ENV}={root} has no {folder}/tokenizer.json (one sub-folder per tokenizer, as "
                    "save_pretrained writes it)")
    tok = AutoTokenizer.from_pretrained(str(root / folder))
    if chat_template is not None:
        tok.chat_template = chat_template
    return tok


def fixture_cases(name: str, tok: Any, source: str | None = None) -> list:
    """Every case for fixture template ``name`` on ``tok``: the shared shapes, the keyword-argument
    cases the template reads, the hostile cases made of its own markers (special tokens, generation
    prompt, EOS and stop strings), and the tools list and keyword arguments of the manifest's
    ``template_kwargs`` on every case (command_r's tools, firefunction_v2's functions)."""
    from .conversations import TemplateInfo, cases
    from .reference import generation_prompt

    info = manifest()[name]
    kwargs = dict(info.get("template_kwargs") or {})
    tools = kwargs.pop("tools", None)
    source = source if source is not None else template_source(name)
    return cases(TemplateInfo.from_manifest(info, source, generation_prompt(tok, tools, **kwargs)))


def known_failing(name: str) -> str | None:
    """Why fixture template ``name`` is expected to fail on some shapes (known_failures.json; None: it is not)."""
    ledger = json.loads((FIXTURES / "known_failures.json").read_text(encoding="utf-8"))
    return "listed in known_failures.json" if name in ledger else None
