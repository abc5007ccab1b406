"""What split="auto" / "turns" cost against "never": rows, tokens, trained tokens and time.

Multi-turn reasoning data: a system prompt, then Q user queries, each answered by a reasoned tool
call, its result and a reasoned answer (Q = 2, 4, 8). On Qwen3 (a template that drops earlier
turns' reasoning) "never" loses that reasoning and "auto" trains it, at the price of more rows;
on Llama 3.1 and Gemma 3 (templates that keep history), with plain multi-turn chats they render
whole, "auto" must stay one row per conversation and cost under 5% over "never". Time is ``ChatMasker.encode_batch`` of 32
conversations (render, spans, tokenize, masks), single process, the minimum over interleaved
rounds. Writes benchmarks/results/split.{md,json}.

    python benchmarks/bench_split.py [--rounds 15] [--queries 2 4 8]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from workloads import _text, shared_tokenizers  # noqa: E402
from workloads import conversation as plain  # noqa: E402

TOOLS = [{"type": "function", "function": {
    "name": "search", "description": "Search the web",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}}]


def conversation(queries: int, seed: int, reasoning: bool = True) -> dict:
    """Reasoning data with tool chains (``reasoning``), or a plain multi-turn chat."""
    if not reasoning:
        return plain(queries, seed)
    rng = random.Random(seed)
    messages = [{"role": "system", "content": _text(rng, 40)}]
    for q in range(queries):
        messages.append({"role": "user", "content": _text(rng, 60)})
        call_id = f"call{q:05d}"[:9].ljust(9, "0")
        call = {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "id": call_id, "function": {"name": "search", "arguments": {"query": _text(rng, 8)}}}]}
        answer = {"role": "assistant", "content": _text(rng, 120)}
        if reasoning:
            call["reasoning_content"] = _text(rng, 80)
            answer["reasoning_content"] = _text(rng, 100)
        messages += [call, {"role": "tool", "tool_call_id": call_id, "content": _text(rng, 80)}, answer]
    return {"messages": messages, "tools": TOOLS}


def measure(tok, data, modes, rounds):
    from respmask import ChatMasker

    maskers = {m: ChatMasker(tok, split=m) for m in modes}
    counts = {}
    for m, masker in maskers.items():
        rows = masker.encode_batch(data)
        counts[m] = {
            "rows": len(rows),
            "tokens": int(sum(len(r.input_ids) for r in rows)),
            "trained_tokens": int(sum(r.n_trained for r in rows)),
            "dropped_reasoning": int(sum(what == "reasoning" for r in rows for _, what in r.dropped)),
        }
    best = {m: float("inf") for m in modes}
    for _ in range(rounds):
        for m, masker in maskers.items():
            t = time.process_time()
            masker.encode_batch(data)
            best[m] = min(best[m], time.process_time() - t)
    for m in modes:
        counts[m]["ms_per_batch"] = round(1000 * best[m], 2)
    return counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--queries", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    shared = shared_tokenizers()
    if shared is None:
        print("needs the real tokenizers (RESPMASK_SHARED_TOKENIZERS)")
        return 2
    from transformers import AutoTokenizer

    modes = ["never", "auto", "turns"]
    results = []
    for family, folder, reasoning in (("qwen3", "qwen3", True), ("llama3.1", "llama3_1", False),
                                      ("gemma3", "gemma3", False)):
        tok = AutoTokenizer.from_pretrained(str(shared / folder))
        for q in args.queries:
            data = [conversation(q, 1000 * q + i, reasoning) for i in range(args.batch)]
            counts = measure(tok, data, modes, args.rounds)
            results.append({"template": family, "reasoning": reasoning, "queries": q, **{m: counts[m] for m in modes}})
            print(json.dumps(results[-1]))
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "split.json").write_text(json.dumps(results, indent=2))
    lines = ["| template | data | queries | mode | rows | tokens | trained tokens | earlier reasoning lost | ms / 32 conv. |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        base = r["never"]
        for m in modes:
            c = r[m]
            rel = "" if m == "never" else (f" ({c['tokens'] / base['tokens']:.2f}x)")
            t_rel = "" if m == "never" else (f" ({c['ms_per_batch'] / base['ms_per_batch']:.2f}x)")
            lines.append(f"| {r['template']} | {'reasoning + tools' if r['reasoning'] else 'plain chat'} | {r['queries']} | "
                         f"{m} | {c['rows']} | {c['tokens']}{rel} | {c['trained_tokens']} | {c['dropped_reasoning']} | "
                         f"{c['ms_per_batch']}{t_rel} |")
    (out / "split.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
