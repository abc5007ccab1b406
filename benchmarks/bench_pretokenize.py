"""Pre-tokenizing throughput at scale: datasets.map (num_proc 1 and 2), Ray Data (local, 2 CPUs)
and `respmask tokenize`, against the same engine running plain apply_chat_template (no masks).

    python benchmarks/bench_pretokenize.py                    # 10k and 100k conversations
    python benchmarks/bench_pretokenize.py --sizes 10000      # quicker
    python benchmarks/bench_pretokenize.py --sizes 2000 --turns 3 24 --tokenizers qwen3 llama3_1 --no-ray \
        --repeats 1 --out benchmarks/results/issue27/pretokenize   # issue 27: fixed turn counts

Each cell runs --repeats times (respmask and plain interleaved) and reports the median time. Memory:
peak RSS (high-water mark of the process and its workers, including memory-mapped Arrow files the OS
pages in) and peak heap (anonymous memory of the process and all its workers, sampled): the heap
shows whether memory grows with the dataset (it should not: data stays in Arrow on disk).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

RESULTS = Path(__file__).resolve().parent / "results"


def make_data(n: int, path: Path, turns: int | None = None) -> None:
    """``n`` conversations: a system prompt, then 1-3 exchanges (``turns`` exchanges when given)."""
    from workloads import WORDS

    rng = random.Random(n)

    def text(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k)).capitalize() + "."

    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            msgs = [{"role": "system", "content": text(20)}]
            for _ in range(rng.randint(1, 3) if turns is None else turns):
                msgs += [{"role": "user", "content": text(rng.randint(10, 60))},
                         {"role": "assistant", "content": text(rng.randint(20, 120))}]
            f.write(json.dumps({"messages": msgs}) + "\n")


WORKER = r'''
import json, os, resource, sys, time
sys.path.insert(0, {bench!r})
mode, engine, data, tok_dir, num_proc, out = sys.argv[1:7]
num_proc = int(num_proc)
from transformers import AutoTokenizer
import respmask
tok = AutoTokenizer.from_pretrained(tok_dir)
fn = respmask.Pretokenizer(tok)

import threading
import psutil
anon_peak = [0]

def _anon_mib():
    """Anonymous (heap) memory of this process and all its descendants: what Python and the workers
    really hold, without the memory-mapped Arrow files the OS pages in and out (they count in RSS)."""
    total = 0
    procs = [psutil.Process()]
    try:
        procs += psutil.Process().children(recursive=True)
    except psutil.Error:
        pass
    for p in procs:
        try:
            with open(f"/proc/{{p.pid}}/status") as fh:
                for line in fh:
                    if line.startswith("RssAnon:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024

def _sample():
    while True:
        anon_peak[0] = max(anon_peak[0], _anon_mib())
        time.sleep(0.05)

threading.Thread(target=_sample, daemon=True).start()

def plain(batch):
    arrow = hasattr(batch, "column")
    msgs = batch.column("messages").to_pylist() if arrow else batch["messages"]
    ids = tok.apply_chat_template(list(msgs), tokenize=True, return_dict=True)["input_ids"]
    if not arrow:
        return {{"input_ids": ids}}
    import pyarrow as pa
    return pa.table({{"input_ids": pa.array(ids, type=pa.list_(pa.int32()))}})

t0 = time.time()
if engine == "datasets":
    import datasets
    datasets.disable_progress_bars()
    ds = datasets.Dataset.from_parquet(data)  # (the Arrow cache was built once by the parent)
    t0 = time.time()
    anon_peak[0] = _anon_mib()  # the heap from here on: the map, not loading the input
    f = fn if mode == "respmask" else plain
    res = ds.map(f, batched=True, batch_size=512, num_proc=num_proc if num_proc > 1 else None,
                 remove_columns=ds.column_names, cache_file_name=os.path.join(out, "cache.arrow"))
    seconds = time.time() - t0
    import pyarrow.compute as pc
    tokens = sum(pc.sum(pc.list_value_length(b["input_ids"])).as_py() for b in res.with_format("arrow").iter(4096))
    rows = len(res)
elif engine == "ray":
    import ray, ray.data
    ray.init(num_cpus=num_proc, include_dashboard=False, log_to_driver=False)
    t0 = time.time()
    f = fn if mode == "respmask" else plain
    ds = ray.data.read_parquet(data).map_batches(f, batch_format="pyarrow", batch_size=512)
    ds.write_parquet(os.path.join(out, "parts"))
    seconds = time.time() - t0
    import pyarrow.compute as pc
    import pyarrow.dataset as pads
    rows = tokens = 0
    for b in pads.dataset(os.path.join(out, "parts")).to_batches(columns=["input_ids"]):
        rows += b.num_rows
        tokens += pc.sum(pc.list_value_length(b.column(0))).as_py() or 0
    ray.shutdown()
elif engine == "cli":
    from respmask._shards import tokenize_files
    t0 = time.time()
    s = tokenize_files(data, os.path.join(out, "tok"), tok, num_proc=num_proc, progress=False)
    rows, tokens = s.written_rows, s.tokens
    seconds = time.time() - t0
peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
anon_peak[0] = max(anon_peak[0], _anon_mib())
print(json.dumps({{"rows": rows, "tokens": tokens, "seconds": seconds, "peak_rss_mib": peak / 1024,
                  "peak_anon_mib": anon_peak[0]}}), flush=True)
os._exit(0)  # skip interpreter teardown (the sampler thread, Ray's atexit hooks)
'''


def run(mode: str, engine: str, data: str, tok_dir: str, num_proc: int) -> dict:
    script = WORKER.format(bench=str(Path(__file__).resolve().parent))
    with tempfile.TemporaryDirectory() as out:
        proc = subprocess.run([sys.executable, "-c", script, mode, engine, data, tok_dir, str(num_proc), out],
                              capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarize(runs: list[dict], **info: object) -> dict:
    """Median time over the repeats; the highest memory marks."""
    seconds = sorted(r["seconds"] for r in runs)[len(runs) // 2]
    return {**info, "rows": runs[0]["rows"], "tokens": runs[0]["tokens"], "seconds": seconds,
            "all_seconds": [r["seconds"] for r in runs], "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
            "peak_anon_mib": max(r["peak_anon_mib"] for r in runs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--repeats", type=int, default=3, help="runs per cell, interleaved; the median is reported")
    ap.add_argument("--turns", type=int, nargs="+", default=[None],
                    help="exchanges per conversation (default: 1-3 at random); one table row group per count")
    ap.add_argument("--tokenizers", nargs="+", default=["qwen3"], help="folders of the shared tokenizers")
    args = ap.parse_args()
    from workloads import shared_tokenizers

    root = shared_tokenizers()
    if root is None:
        sys.exit("needs real tokenizers: set RESPMASK_SHARED_TOKENIZERS or place them in ../shared/tokenizers")
    results = []
    cells = [(name, n, turns) for name in args.tokenizers for turns in args.turns for n in args.sizes]
    with tempfile.TemporaryDirectory() as tmp:
        for name, n, turns in cells:
            tok_dir = str(root / name)
            info = {"tokenizer": name, "turns": turns}
            jsonl = Path(tmp) / f"data{n}_{turns}.jsonl"
            make_data(n, jsonl, turns)
            import datasets

            parquet = str(Path(tmp) / f"data{n}_{turns}.parquet")
            datasets.Dataset.from_json(str(jsonl)).to_parquet(parquet)
            # build datasets' Arrow cache of the input now: else the first contender pays (in time and
            # memory) for the one-time parquet-to-Arrow conversion that every later one reuses
            datasets.Dataset.from_parquet(parquet)
            plan = [("datasets", 1), ("datasets", 2)] + ([] if args.no_ray else [("ray", 2)])
            for engine, procs in plan:
                runs: dict[str, list[dict]] = {"respmask": [], "plain": []}
                for _ in range(args.repeats):  # interleaved, so drift hits both alike
                    for mode in runs:
                        runs[mode].append(run(mode, engine, parquet, tok_dir, procs))
                        print(json.dumps({"size": n, **info, "engine": engine, "mode": mode, **runs[mode][-1]}),
                              flush=True)
                for mode, rs in runs.items():
                    results.append(summarize(rs, size=n, **info, engine=engine, num_proc=procs, mode=mode))
            rs = [run("respmask", "cli", str(jsonl), tok_dir, 2) for _ in range(args.repeats)]
            results.append(summarize(rs, size=n, **info, engine="respmask tokenize (JSONL, shards)", num_proc=2,
                                     mode="respmask"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pretokenize.json").write_text(json.dumps(results, indent=2))
    shape = ("conversations of 1-3 turns" if args.turns == [None]
             else f"conversations of {' / '.join(map(str, args.turns))} turns")
    lines = ["# Pre-tokenizing benchmark", "", f"{' / '.join(args.tokenizers)} tokenizer (own chat template); {shape} "
             f"with a system prompt; median of {args.repeats} interleaved runs per cell. Peak RSS includes the "
             "memory-mapped Arrow files the engine pages in; peak heap is the anonymous memory of the process and "
             "all its workers (sampled every 50 ms): what grows if anything held the dataset in Python.", "",
             "| tokenizer | turns | conversations | engine | processes | transform | conv/s | tokens/s | "
             "speed-up vs 1 process | overhead vs plain | peak RSS | peak heap (anonymous) |",
             "|---|---:|---:|---|---:|---|---:|---:|---:|---:|---:|---:|"]

    def same(x: dict, r: dict) -> bool:
        return x["size"] == r["size"] and x["tokenizer"] == r["tokenizer"] and x["turns"] == r["turns"]

    for r in results:
        one = next((x for x in results if same(x, r) and x["engine"] == "datasets" and x["num_proc"] == 1
                    and x["mode"] == r["mode"]), None)
        plain = next((x for x in results if same(x, r) and x["engine"] == r["engine"]
                      and x["num_proc"] == r["num_proc"] and x["mode"] == "plain"), None)
        speed = f"{one['seconds'] / r['seconds']:.2f}x" if one else ""
        over = f"{100 * (r['seconds'] / plain['seconds'] - 1):+.0f}%" if plain and r["mode"] == "respmask" else ""
        name = "respmask Pretokenizer" if r["mode"] == "respmask" else "plain apply_chat_template"
        turns = "1-3" if r["turns"] is None else r["turns"]
        lines.append(f"| {r['tokenizer']} | {turns} | {r['size']:,} | {r['engine']} | {r['num_proc']} | {name} | {r['rows'] / r['seconds']:,.0f} | "
                     f"{r['tokens'] / r['seconds']:,.0f} | {speed} | {over} | {r['peak_rss_mib']:.0f} MiB | "
                     f"{r['peak_anon_mib']:.0f} MiB |")
    (out / "pretokenize.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
