"""Can any collator be 2x Unsloth? The Rust tokenizer alone against half of each peer's batch time.

Issue 27 asks for >= 2x TRL's SFT path and Unsloth's ``train_on_responses_only``. Any collator
that hands the model its ``input_ids`` has to tokenize the batch's rendered text; this prints,
per tokenizer and length, the CPU time of ``backend_tokenizer.encode_batch_fast`` alone on the
already rendered texts (ids only: no offsets, no render, no masks, no padding), the render alone
(``apply_chat_template(tokenize=False)``), and half of each peer's time per batch (the budget a
collator 2x as fast would have). Where "tokenize only" exceeds "half", the 2x clause cannot be met
without tokenizing less than the text the model reads.

    TOKENIZERS_PARALLELISM=false RAYON_NUM_THREADS=1 UNSLOTH_ZOO_DISABLE_GPU_INIT=1 \\
        python benchmarks/floor_vs_peers.py

Same contenders, workload ('varied', batches of 32) and clock (process CPU time, best of 7) as
``bench_collators.py --issue27``; writes results/issue27/floor_vs_peers.md.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("UNSLOTH_ZOO_DISABLE_GPU_INIT", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_collators as bc  # noqa: E402
from workloads import batch as make_batch  # noqa: E402
from workloads import shared_tokenizers  # noqa: E402

FAMILIES = {"qwen3": "qwen3", "llama3": "llama3_1", "gemma3": "gemma3"}


def best_ms(fn, rounds: int = 7) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best * 1000


def main() -> None:
    from transformers import AutoTokenizer

    root = shared_tokenizers()
    if root is None:
        sys.exit("set RESPMASK_SHARED_TOKENIZERS to the shared tokenizers folder")
    lines = [
        "# The tokenizer alone against half of each peer's time (issue 27's 2x clause)",
        "",
        "Command: `python benchmarks/floor_vs_peers.py`; CPU ms per batch of 32 ('varied' workload), best of 7.",
        "",
        "| tokenizer | turns | tokenize only (encode_batch_fast) | render only | TRL SFT path | half of TRL | Unsloth | half of Unsloth |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for family, folder in FAMILIES.items():
        tok = AutoTokenizer.from_pretrained(str(Path(root) / folder))
        fns = bc.contenders(tok, bc.trl_template(f"{family}_training.jinja"))
        for turns in (3, 24):
            rows = make_batch(turns, 32, workload="varied")
            texts = tok.apply_chat_template([s["messages"] for s in rows], tokenize=False)
            backend = tok.backend_tokenizer
            ms = {
                "tokenize": best_ms(lambda: backend.encode_batch_fast(texts, add_special_tokens=False)),
                "render": best_ms(lambda: tok.apply_chat_template([s["messages"] for s in rows], tokenize=False)),
                "trl": best_ms(lambda: fns[bc.TRL](rows)),
                "unsloth": best_ms(lambda: fns[bc.UNSLOTH](rows)),
            }
            line = (f"| {family} | {turns} | {ms['tokenize']:.1f} | {ms['render']:.1f} | {ms['trl']:.1f} | "
                    f"{ms['trl'] / 2:.1f} | {ms['unsloth']:.1f} | {ms['unsloth'] / 2:.1f} |")
            print(line, flush=True)
            lines.append(line)
    out = Path(__file__).resolve().parent / "results" / "issue27" / "floor_vs_peers.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
