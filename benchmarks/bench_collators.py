"""respmask against every peer, side by side, on the same batches of raw conversations.

Every contender turns the same batch of raw conversations into padded input_ids /
attention_mask / labels (the floor stops at token ids). Contenders run interleaved
(A B C ... A B C ...) so machine drift hits all alike; the table reports the median of the
rounds and ratios to respmask and to the floor.

    python benchmarks/bench_collators.py                   # full run (about 5 minutes on 2 cores)
    python benchmarks/bench_collators.py --quick           # smaller, for a smoke test
    python benchmarks/bench_collators.py --issue27         # issue 27's table (CPU time, one thread, best of 7)

``--issue27`` is the measurement of issue 27: CPU time (``time.process_time``), one tokenizer
thread (TOKENIZERS_PARALLELISM=false, RAYON_NUM_THREADS=1), best of 7 interleaved rounds, batches
of 32 'varied' conversations (a system prompt, N turns of 10-80-word questions and 20-200-word
answers), 3/24/64 turns, the Qwen3, Llama 3.1 and Gemma 3 tokenizers, and only the contenders of
its table: respmask's collator against the ids-only floor (render + ``encode_batch_fast``), the
floor with offsets (render + ``encode_batch``), TRL's SFT path and Unsloth. It writes
``results/issue27/`` (the summary of speed ratios first, then the full table).

Needs the bench extra (``pip install ".[bench]"``) and, for the Unsloth contender,
``pip install --no-deps unsloth_zoo`` (it imports on CPU with UNSLOTH_ZOO_DISABLE_GPU_INIT=1).
Real tokenizers are read from RESPMASK_SHARED_TOKENIZERS or ../shared/tokenizers.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("UNSLOTH_ZOO_DISABLE_GPU_INIT", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

import respmask  # noqa: E402
from workloads import batch as make_batch  # noqa: E402
from workloads import shared_tokenizers  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

# (shared tokenizer folder, TRL training template with {% generation %} blocks for the same family)
FAMILIES = {
    "qwen3": "qwen3_training.jinja",
    "llama3": "llama3_training.jinja",
    "gemma3": "gemma3_training.jinja",  # a SentencePiece-style tokenizer ('▁' spaces, byte fallback)
}
FOLDER = {"qwen3": "qwen3", "llama3": "llama3_1", "gemma3": "gemma3"}
FLOOR = "floor: render + encode_batch"
IDS_ONLY = "ids only: render + encode_batch_fast"
TRL = "TRL SFT path"
UNSLOTH = "Unsloth train_on_responses_only"
OURS = "respmask collator"
ISSUE27_CONTENDERS = [OURS, IDS_ONLY, FLOOR, TRL, UNSLOTH]


def trl_template(name: str) -> str:
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / name).read_text()


def pad_rows(ids_rows: list[list[int]], label_rows: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    n = max(len(r) for r in ids_rows)
    ids = torch.full((len(ids_rows), n), pad_id, dtype=torch.long)
    lab = torch.full((len(ids_rows), n), -100, dtype=torch.long)
    att = torch.zeros((len(ids_rows), n), dtype=torch.long)
    for i, (r, l) in enumerate(zip(ids_rows, label_rows)):
        ids[i, : len(r)] = torch.tensor(r)
        lab[i, : len(r)] = torch.tensor(l)
        att[i, : len(r)] = 1
    return {"input_ids": ids, "attention_mask": att, "labels": lab}


def contenders(tok: Any, training_template: str) -> dict[str, Callable[[list[dict]], Any]]:
    """name -> function(batch of raw samples) -> padded batch (or token ids for the floor)."""
    out: dict[str, Callable[[list[dict]], Any]] = {}
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    backend = tok.backend_tokenizer

    collator = respmask.ResponseOnlyCollator(tok, on_untrainable="keep")
    out["respmask collator"] = collator

    pretok = respmask.Pretokenizer(tok)
    collator2 = respmask.ResponseOnlyCollator(tok, on_untrainable="keep")

    def respmask_pretokenized(batch: list[dict]) -> Any:
        cols = pretok({"messages": [s["messages"] for s in batch]})
        return collator2([{"input_ids": i, "labels": l} for i, l in zip(cols["input_ids"], cols["labels"])])

    out["respmask pretokenize+pad"] = respmask_pretokenized

    try:
        from trl.data_utils import _tokenize
        from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

        trl_collator = DataCollatorForLanguageModeling(pad_token_id=pad_id)

        def trl_sft(batch: list[dict]) -> Any:
            examples = []
            for s in batch:  # SFTTrainer's tokenize_fn + build_labels, then its collator
                processed = _tokenize(tok, s["messages"], chat_template=training_template, tools=None,
                                      return_assistant_tokens_mask=True)
                ids, mask = processed["input_ids"], processed["assistant_masks"]
                labels = [t if m else -100 for t, m in zip(ids, mask)]
                examples.append({"input_ids": ids, "labels": labels})
            return trl_collator(examples)

        out["TRL SFT path"] = trl_sft
    except ImportError:  # pragma: no cover
        pass

    def transformers_mask(batch: list[dict]) -> Any:
        enc = tok.apply_chat_template(
            [s["messages"] for s in batch], chat_template=training_template, tokenize=True, return_dict=True,
            return_assistant_tokens_mask=True, padding=True, return_tensors="pt",
        )
        labels = enc["input_ids"].masked_fill(enc["assistant_masks"] == 0, -100)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}

    out["transformers assistant mask"] = transformers_mask

    try:
        from unsloth_zoo.dataset_utils import train_on_responses_only

        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            mapper = train_on_responses_only(None, tokenizer=tok, return_function=True)

        def unsloth(batch: list[dict]) -> Any:
            ids = tok.apply_chat_template([s["messages"] for s in batch], tokenize=True, return_dict=True)["input_ids"]
            labels = mapper({"input_ids": ids})["labels"]
            return pad_rows(ids, labels, pad_id)

        out["Unsloth train_on_responses_only"] = unsloth
    except Exception as exc:  # pragma: no cover
        print(f"(Unsloth contender unavailable: {exc})")

    def no_masking(batch: list[dict]) -> Any:
        return tok.apply_chat_template([s["messages"] for s in batch], tokenize=True, return_dict=True,
                                       padding=True, return_tensors="pt")

    out["no masking (apply_chat_template)"] = no_masking

    def floor(batch: list[dict]) -> Any:
        texts = tok.apply_chat_template([s["messages"] for s in batch], tokenize=False)
        return backend.encode_batch(texts, add_special_tokens=False)

    out[FLOOR] = floor

    def ids_only(batch: list[dict]) -> Any:
        texts = tok.apply_chat_template([s["messages"] for s in batch], tokenize=False)
        return backend.encode_batch_fast(texts, add_special_tokens=False)

    # The ids-only floor of issue 27: no offsets (respmask itself skips them, see src/respmask/_byte_lengths.py),
    # no masks, no padding.
    out[IDS_ONLY] = ids_only
    return out


def same_ids_as_inference(tok: Any, fn: Callable, batch: list[dict]) -> bool:
    """Does the contender feed the model exactly apply_chat_template's ids (unpadded)?"""
    out = fn(batch)
    if not isinstance(out, dict):
        return True
    ids, att = out["input_ids"], out["attention_mask"]
    for row, sample in enumerate(batch):
        ref = tok.apply_chat_template(sample["messages"], tokenize=True, return_dict=True)["input_ids"]
        got = ids[row][att[row].bool()].tolist()
        if got != list(ref):
            return False
    return True


def run_workload(tok: Any, fns: dict[str, Callable], turns: int, batch_size: int, rounds: int,
                 min_seconds: float, workload: str = "fixed", cpu_time: bool = False) -> dict[str, Any]:
    """Time every contender on the same 3 batches, interleaved round by round.

    ``cpu_time``: measure ``time.process_time`` (the work of every thread of this process, what
    neighbours on a shared machine cannot inflate much) instead of wall time.
    """
    clock = time.process_time if cpu_time else time.perf_counter
    batches = [make_batch(turns, batch_size, seed=s, workload=workload) for s in range(3)]
    n_tokens = [int(fns["respmask collator"](b)["attention_mask"].sum()) for b in batches]
    for fn in fns.values():  # warm up: caches, compiled templates, profiles
        fn(batches[0])
    # choose a repeat count so one timing lasts about min_seconds for the slowest contender
    t0 = time.perf_counter()
    fns["TRL SFT path"](batches[0]) if "TRL SFT path" in fns else fns["respmask collator"](batches[0])
    one = time.perf_counter() - t0
    reps = max(1, int(min_seconds / max(one, 1e-6) / len(batches)))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():  # interleaved
            gc.collect()
            t = clock()
            for _ in range(reps):
                for b in batches:
                    fn(b)
            times[name].append(clock() - t)
    convs = reps * len(batches) * batch_size
    toks = reps * sum(n_tokens)
    med = {name: statistics.median(v) for name, v in times.items()}
    best = {name: min(v) for name, v in times.items()}
    return {
        "turns": turns,
        "workload": workload,
        "clock": "cpu" if cpu_time else "wall",
        "batches_per_round": reps * len(batches),
        "batch_size": batch_size,
        "tokens_per_conversation": sum(n_tokens) / (len(batches) * batch_size),
        "rounds": rounds,
        "results": {
            name: {
                "conv_per_s": convs / t,
                "tokens_per_s": toks / t,
                "best_tokens_per_s": toks / best[name],
                "seconds": t,
                "all_rounds": times[name],
            }
            for name, t in med.items()
        },
    }


def summary(report: dict[str, Any]) -> str:
    """Issue 27's table: respmask's speed over each reference's (>1: respmask faster), best and median rounds."""
    refs = [(IDS_ONLY, "ids-only floor"), (FLOOR, "render + `encode_batch`"), (TRL, "TRL's SFT path"),
            (UNSLOTH, "Unsloth")]
    lines = ["respmask's speed / the reference's (tokens/s; >1: respmask is faster), best of the rounds "
             "(median in brackets); ms per batch of respmask and the ids-only floor, best round\n",
             "| tokenizer | turns | tokens/conv | respmask ms | ids-only ms | " + " | ".join(f"vs {r}" for _, r in refs) + " |",
             "|---|---:|---:|---:|---:|" + "---:|" * len(refs)]
    for fam, workloads in report["workloads"].items():
        for w in workloads:
            res = w["results"]
            ours = res[OURS]
            n = w.get("batches_per_round")
            cells = []
            for name, _ in refs:
                if name not in res:
                    cells.append("")
                    continue
                r = res[name]
                cells.append(f"{ours['best_tokens_per_s'] / r['best_tokens_per_s']:.2f} "
                             f"({ours['tokens_per_s'] / r['tokens_per_s']:.2f})")
            ms = [f"{min(res[k]['all_rounds']) / n * 1e3:.1f}" if n and k in res else "" for k in (OURS, IDS_ONLY)]
            lines.append(f"| {fam} | {w['turns']} | {w['tokens_per_conversation']:.0f} | {ms[0]} | {ms[1]} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines)


def memory_check(tok: Any, n_batches: int) -> dict[str, Any]:
    """Peak RSS of this process, and RSS growth across n_batches collator calls (3 turns, batch 32)."""

    def rss_kib(field: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
        return -1

    c = respmask.ResponseOnlyCollator(tok, on_untrainable="keep")
    batches = [make_batch(3, 32, seed=100 + s) for s in range(10)]
    samples = []
    for i in range(n_batches):
        c(batches[i % len(batches)])
        if (i + 1) % max(1, n_batches // 10) == 0:
            gc.collect()
            samples.append(rss_kib("VmRSS:"))
    return {
        "batches": n_batches,
        "rss_mib_after_each_tenth": [round(x / 1024, 1) for x in samples],
        "growth_mib_after_first_tenth": round((samples[-1] - samples[0]) / 1024, 1),
        "peak_rss_mib": round(rss_kib("VmHWM:") / 1024, 1),
    }


def datasets_map(tok: Any, n: int) -> dict[str, Any]:
    """Pre-tokenizing throughput: datasets.Dataset.map(batched=True) over n conversations (3 turns)."""
    import datasets

    datasets.disable_progress_bars()
    rows = [make_batch(3, 1, seed=1000 + i)[0] for i in range(n)]
    ds = datasets.Dataset.from_list(rows)
    fn = respmask.Pretokenizer(tok)

    def plain(batch: dict) -> dict:
        return {"input_ids": tok.apply_chat_template(batch["messages"], tokenize=True, return_dict=True)["input_ids"]}

    out = {}
    for name, f in (("respmask Pretokenizer", fn), ("plain apply_chat_template (no masks)", plain)):
        best = None
        for _ in range(2):
            t = time.perf_counter()
            res = ds.map(f, batched=True, batch_size=256, remove_columns=ds.column_names, load_from_cache_file=False,
                         keep_in_memory=True)
            dt = time.perf_counter() - t
            best = dt if best is None else min(best, dt)
        tokens = sum(len(x) for x in res["input_ids"])
        out[name] = {"conv_per_s": n / best, "tokens_per_s": tokens / best, "seconds": best}
    return out


def table(report: dict[str, Any]) -> str:
    lines = []
    for fam, workloads in report["workloads"].items():
        lines.append(f"\n**{fam}** tokenizer ({report['tokenizers'][fam]}), batch {workloads[0]['batch_size']}, "
                     f"median of {workloads[0]['rounds']} interleaved rounds\n")
        lines.append(
            "| turns | tokens/conv | contender | conv/s | tokens/s | × respmask | × floor | × floor (best rounds) "
            "| same ids as inference |"
        )
        lines.append("|---:|---:|---|---:|---:|---:|---:|---:|:---:|")
        for w in workloads:
            res = w["results"]
            ours = res["respmask collator"]["tokens_per_s"]
            floor = res[FLOOR]["tokens_per_s"]
            best_floor = res[FLOOR]["best_tokens_per_s"]
            for name, r in res.items():
                same = report["same_ids"][fam].get(name, "")
                lines.append(
                    f"| {w['turns']} | {w['tokens_per_conversation']:.0f} | {name} | {r['conv_per_s']:.1f} | "
                    f"{r['tokens_per_s']:,.0f} | {r['tokens_per_s'] / ours:.2f} | {r['tokens_per_s'] / floor:.2f} | "
                    f"{r['best_tokens_per_s'] / best_floor:.2f} | "
                    f"{'yes' if same is True else 'no' if same is False else ''} |"
                )
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = list(report["workloads"])
    fig, axes = plt.subplots(1, len(fams), figsize=(6.5 * len(fams), 4.6), squeeze=False)
    colors = {
        "respmask collator": "#2f9e44", "respmask pretokenize+pad": "#8ce99a", "TRL SFT path": "#f08c00",
        "transformers assistant mask": "#1c7ed6", "Unsloth train_on_responses_only": "#e03131",
        "no masking (apply_chat_template)": "#7048e8", FLOOR: "black",
        "ids only: render + encode_batch_fast": "#868e96",
    }
    for ax, fam in zip(axes[0], fams):
        workloads = report["workloads"][fam]
        names = list(workloads[0]["results"])
        for name in names:
            xs = [w["turns"] for w in workloads]
            ys = [w["results"][name]["tokens_per_s"] for w in workloads]
            style = dict(lw=2.8 if name == "respmask collator" else 1.4, color=colors.get(name))
            if name.startswith(("floor", "ids only")):
                style["ls"] = "--"
            ax.plot(xs, ys, marker="o", label=name, **style)
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks([w["turns"] for w in workloads])
        ax.set_xticklabels([str(w["turns"]) for w in workloads])
        ax.set_xlabel("turns per conversation")
        ax.set_ylabel("tokens / s (higher is better)")
        ax.set_title(f"{fam} tokenizer, batch {workloads[0]['batch_size']}")
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    axes[0][-1].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds and turns (smoke test)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--turns", type=int, nargs="+", default=[3, 8, 24, 64])
    ap.add_argument("--families", nargs="+", default=list(FAMILIES))
    ap.add_argument("--memory-batches", type=int, default=1000)
    ap.add_argument("--map-conversations", type=int, default=10_000)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--replot", action="store_true", help="redraw the plot and table from the saved JSON")
    ap.add_argument("--threads", type=int, default=0,
                    help="tokenizer threads (RAYON_NUM_THREADS; 1 also sets TOKENIZERS_PARALLELISM=false); "
                         "0: the library's default (all cores)")
    ap.add_argument("--workload", choices=["fixed", "varied"], default="fixed",
                    help="fixed: 120-word questions, 160-word answers; varied: 10-80 and 20-200 words (issue 27)")
    ap.add_argument("--cpu-time", action="store_true", help="time CPU (process_time) instead of wall time")
    ap.add_argument("--contenders", nargs="+", default=None, help="time only these contenders (exact names)")
    ap.add_argument("--issue27", action="store_true",
                    help="issue 27's measurement: --threads 1 --cpu-time --workload varied --turns 3 24 64 "
                         "--rounds 7, its five contenders, no memory or datasets.map runs, into results/issue27")
    args = ap.parse_args()
    if args.issue27:
        args.threads, args.cpu_time, args.workload, args.turns, args.rounds = 1, True, "varied", [3, 24, 64], 7
        args.contenders = args.contenders or ISSUE27_CONTENDERS
        args.memory_batches = args.map_conversations = 0
        if args.out == str(RESULTS):
            args.out = str(RESULTS / "issue27")
    if args.threads:
        os.environ["RAYON_NUM_THREADS"] = str(args.threads)  # read when the tokenizer's pool starts
        if args.threads == 1:  # read by the tokenizer at each batch call
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
    if args.quick:
        args.rounds, args.turns, args.memory_batches, args.map_conversations = 2, [3, 24], 50, 500
    if args.replot:
        out = Path(args.out)
        saved = json.loads((out / "collators.json").read_text())
        plot(saved, out / "tokens_per_s.png")
        print(table(saved))
        return

    root = shared_tokenizers()
    if root is None:
        sys.exit("needs real tokenizers: set RESPMASK_SHARED_TOKENIZERS or place them in ../shared/tokenizers")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": {},
        "tokenizers": {},
        "workloads": {},
        "same_ids": {},
    }
    import tokenizers
    import transformers

    report["versions"] = {"respmask": respmask.__version__, "transformers": transformers.__version__,
                          "tokenizers": tokenizers.__version__, "torch": torch.__version__, "numpy": np.__version__}
    try:
        import trl

        report["versions"]["trl"] = trl.__version__
    except ImportError:
        pass
    try:
        import unsloth_zoo

        report["versions"]["unsloth_zoo"] = unsloth_zoo.__version__
    except Exception:
        pass

    for fam in args.families:
        tok = AutoTokenizer.from_pretrained(str(root / FOLDER[fam]))
        if tok.pad_token is None:  # transformers' own padding needs one (respmask does not)
            tok.pad_token = tok.eos_token
        report["tokenizers"][fam] = f"shared/tokenizers/{FOLDER[fam]}, TRL {FAMILIES[fam]}"
        fns = contenders(tok, trl_template(FAMILIES[fam]))
        if args.contenders:
            missing = [c for c in args.contenders if c not in fns]
            if missing:
                sys.exit(f"unknown or unavailable contenders {missing}; known: {list(fns)}")
            fns = {name: fns[name] for name in args.contenders}
        probe = make_batch(3, 4, seed=7)
        report["same_ids"][fam] = {name: same_ids_as_inference(tok, fn, probe) for name, fn in fns.items()}
        report["workloads"][fam] = []
        for turns in args.turns:
            size = args.batch_size
            print(f"[{fam}] {turns} turns, batch {size} ...", flush=True)
            w = run_workload(tok, fns, turns, size, args.rounds, min_seconds=1.0 if not args.quick else 0.2,
                             workload=args.workload, cpu_time=args.cpu_time)
            report["workloads"][fam].append(w)
            ours = w["results"]["respmask collator"]
            floor = w["results"][FLOOR]
            print(f"    respmask {ours['tokens_per_s']:,.0f} tok/s = {ours['tokens_per_s'] / floor['tokens_per_s']:.2f}x floor",
                  flush=True)

    tok = AutoTokenizer.from_pretrained(str(root / "qwen3"))
    report["memory"] = report["datasets_map"] = None
    if args.memory_batches:
        print(f"memory: {args.memory_batches} batches ...", flush=True)
        report["memory"] = memory_check(tok, args.memory_batches)
    if args.map_conversations:
        print(f"datasets.map: {args.map_conversations} conversations ...", flush=True)
        report["datasets_map"] = datasets_map(tok, args.map_conversations)

    (out / "collators.json").write_text(json.dumps(report, indent=2))
    report["machine"]["tokenizer_threads"] = args.threads or "default"
    md = ["# Collator benchmark", "", f"Machine: {report['machine']}", f"Versions: {report['versions']}",
          f"Command: `python benchmarks/bench_collators.py {' '.join(sys.argv[1:])}`",
          f"Workload: {args.workload}; clock: {'CPU time' if args.cpu_time else 'wall time'}", ""]
    if OURS in next(iter(report["workloads"].values()))[0]["results"]:
        md += [summary(report), ""]
    md += [table(report)]
    if report["memory"] is not None:
        md += ["", "## Memory", "", f"```\n{json.dumps(report['memory'], indent=2)}\n```"]
    if report["datasets_map"] is not None:
        md += ["", f"## datasets.Dataset.map(batched=True), {args.map_conversations} conversations (3 turns), qwen3", "",
               "| transform | conv/s | tokens/s |", "|---|---:|---:|"]
        for name, r in report["datasets_map"].items():
            md.append(f"| {name} | {r['conv_per_s']:.0f} | {r['tokens_per_s']:,.0f} |")
    (out / "collators.md").write_text("\n".join(md) + "\n")
    plot(report, out / "tokens_per_s.png")
    print("\n".join(md))


if __name__ == "__main__":
    main()
