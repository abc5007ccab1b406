"""Synthetic but realistic SFT conversations for the benchmarks (deterministic)."""

from __future__ import annotations

import os
import random
from pathlib import Path

WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her all she there would their we him been has when who will more no if out so said what up "
    "its about into than them can only other new some could time these two may then do first any my now such "
    "like our over man me even most made after also did many before must through back years where much your "
    "way well down should because each just those people how too little state good very make world still own "
    "see men work long get here between both life being under never day same another know while last might us "
    "great old year off come since against go came right used take three weather function return value model "
    "training data token answer question reason result python code string list number city temperature"
).split()


def _text(rng: random.Random, n_words: int) -> str:
    words = [rng.choice(WORDS) for _ in range(n_words)]
    out = []
    for i, w in enumerate(words):
        if i and rng.random() < 0.08:
            out.append(w + ".")
        else:
            out.append(w)
    return " ".join(out).capitalize() + "."


def conversation(turns: int, seed: int) -> dict:
    """A system prompt (40 words) and ``turns`` user (120 words) / assistant (160 words) exchanges."""
    rng = random.Random(seed)
    messages = [{"role": "system", "content": _text(rng, 40)}]
    for _ in range(turns):
        messages.append({"role": "user", "content": _text(rng, 120)})
        messages.append({"role": "assistant", "content": _text(rng, 160)})
    return {"messages": messages}


def varied_conversation(turns: int, seed: int) -> dict:
    """A system prompt (40 words) and ``turns`` exchanges of a 10-80-word question and a 20-200-word answer.

    The workload of issue 27: lengths drawn uniformly per message, so rows of a batch differ in length
    (padding does real work) and short replies weigh as much as long ones.
    """
    rng = random.Random(seed)
    messages = [{"role": "system", "content": _text(rng, 40)}]
    for _ in range(turns):
        messages.append({"role": "user", "content": _text(rng, rng.randint(10, 80))})
        messages.append({"role": "assistant", "content": _text(rng, rng.randint(20, 200))})
    return {"messages": messages}


WORKLOADS = {"fixed": conversation, "varied": varied_conversation}


def batch(turns: int, size: int, seed: int = 0, workload: str = "fixed") -> list[dict]:
    """``size`` conversations of ``turns`` exchanges; ``workload``: 'fixed' (120/160 words) or 'varied' (issue 27)."""
    make = WORKLOADS[workload]
    return [make(turns, seed * 10_000 + i) for i in range(size)]


def shared_tokenizers() -> Path | None:
    env = os.environ.get("RESPMASK_SHARED_TOKENIZERS")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve().parent.parent
    candidates.append(here.parent / "shared" / "tokenizers")
    for c in candidates:
        if c.is_dir():
            return c
    return None
