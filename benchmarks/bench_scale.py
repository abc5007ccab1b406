"""Scale: very long conversations cost linear time and bounded memory.

Runs the collator (batch of one) on conversations of 10 to 1,000 turns and on single samples of
50k to 200k+ tokens (one huge answer), next to the floor (render + encode), and reports
tokens/s and the peak memory of each call (tracemalloc, Python allocations).

    python benchmarks/bench_scale.py
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from transformers import AutoTokenizer  # noqa: E402

import respmask  # noqa: E402
from respmask import demo  # noqa: E402
from workloads import conversation, shared_tokenizers  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def long_answer(n_words: int) -> dict:
    base = conversation(1, seed=1)
    words = base["messages"][-1]["content"].split()
    text = " ".join(words[i % len(words)] for i in range(n_words))
    return {"messages": base["messages"][:-1] + [{"role": "assistant", "content": text}]}


def measure(tok, collator, sample, repeats: int) -> dict:
    backend = tok.backend_tokenizer

    def floor():
        text = tok.apply_chat_template(sample["messages"], tokenize=False)
        return backend.encode_batch([text], add_special_tokens=False)

    collator([sample])
    floor()
    out = {}
    for name, fn in (("respmask", lambda: collator([sample])), ("floor", floor)):
        times = []
        for _ in range(repeats):
            gc.collect()
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        out[name] = min(times)
    gc.collect()
    tracemalloc.start()
    batch = collator([sample])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n = int(batch["attention_mask"].sum())
    return {
        "tokens": n,
        "turns": sum(1 for m in sample["messages"] if m["role"] == "assistant"),
        "respmask_s": out["respmask"],
        "floor_s": out["floor"],
        "respmask_tokens_per_s": n / out["respmask"],
        "floor_tokens_per_s": n / out["floor"],
        "ratio_to_floor": out["floor"] / out["respmask"],
        "peak_python_mib": peak / 2**20,
        "peak_bytes_per_token": peak / n,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    root = shared_tokenizers()
    tok = AutoTokenizer.from_pretrained(str(root / "qwen3")) if root else demo.tokenizer()
    collator = respmask.ResponseOnlyCollator(tok, on_untrainable="keep")
    rows = []
    turns = [10, 100, 1000] if not args.quick else [10, 100]
    for t in turns:
        r = measure(tok, collator, conversation(t, seed=t), repeats=3 if t < 1000 else 2)
        r["case"] = f"{t} turns"
        rows.append(r)
        print(json.dumps(r))
    words = [40_000, 200_000] if not args.quick else [20_000]
    for w in words:
        r = measure(tok, collator, long_answer(w), repeats=2)
        r["case"] = f"one answer of {w} words"
        rows.append(r)
        print(json.dumps(r))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps(rows, indent=2))
    lines = ["# Scale benchmark", "", f"tokenizer: {'shared qwen3' if root else 'demo'}; batch of one; best of repeats",
             "", "| case | tokens | respmask tokens/s | floor tokens/s | × floor | peak Python memory | bytes/token |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['tokens']:,} | {r['respmask_tokens_per_s']:,.0f} | "
                     f"{r['floor_tokens_per_s']:,.0f} | {r['ratio_to_floor']:.2f} | {r['peak_python_mib']:.1f} MiB | "
                     f"{r['peak_bytes_per_token']:.0f} |")
    (out / "scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    main()
