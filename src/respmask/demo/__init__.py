"""A demo tokenizer and conversations that ship with respmask, so a fresh install shows the
main job offline. The tokenizer is a small byte-level BPE (built by scripts/build_demo.py)
carrying Qwen3's real chat template."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DIR = Path(__file__).resolve().parent


def tokenizer() -> Any:
    """The demo tokenizer (a transformers fast tokenizer with Qwen3's chat template)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(DIR))


def samples() -> list[dict[str, Any]]:
    """Three conversations: plain Q&A, multi-turn with reasoning, and a tool call."""
    with open(DIR / "conversations.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
