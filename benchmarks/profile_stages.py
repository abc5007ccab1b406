"""Where the collator's CPU time goes, stage by stage (issue 27's profile).

Wraps the functions each stage runs in a timer (CPU time, ``time.process_time``; exclusive: a
stage's time excludes the stages it calls), runs the collator on batches of 32 conversations and
prints milliseconds per batch, minimum over rounds, next to a plain Jinja render of the same
template (transformers' compiled template, no attribution) and ``apply_chat_template(tokenize=False)``
on the same batch, and the ids-only floor (render + ``encode_batch_fast``):

    TOKENIZERS_PARALLELISM=false RAYON_NUM_THREADS=1 python benchmarks/profile_stages.py
    python benchmarks/profile_stages.py --families qwen3 llama3 --turns 3 24 --rounds 15
    python benchmarks/profile_stages.py --cprofile      # also the top functions by own time (cProfile)

The collator uses the tokenizer's own chat template (as ``bench_collators.py`` does) on the
'varied' workload of ``workloads.py``. The timers cost about 1 µs a call, counted in the stage
that makes the call; the total is also timed without them (``collator, untimed``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from workloads import batch as make_batch  # noqa: E402
from workloads import shared_tokenizers  # noqa: E402

FOLDER = {"qwen3": "qwen3", "llama3": "llama3_1", "gemma3": "gemma3"}

# (module, attribute, stage): the functions timed, by the stage they belong to
STAGES = [
    ("respmask._masker", "parse", "parse (read + check the sample)"),
    ("respmask._masker", "probe_shape", "profile key (probe shape)"),
    ("respmask._masker.ChatMasker", "_inputs", "profile key (probe shape)"),
    ("respmask._masker.ChatMasker", "_profile_key", "profile key (probe shape)"),
    ("respmask._masker.ChatMasker", "template_source", "template lookup"),
    ("respmask._masker", "template_inputs", "render inputs (copy + mark messages)"),
    ("respmask._masker.ChatMasker", "_template_constants", "render inputs (copy + mark messages)"),
    ("respmask._render.ChatTemplate", "render", "render with attribution (instrumented Jinja)"),
    ("respmask._masker.ChatMasker", "profile", "template profile lookup"),
    ("respmask._segments.Segments", "of", "segments (Segments.of)"),
    ("respmask._masker", "find_turns", "spans (find_turns)"),
    ("respmask._masker", "select_messages", "spans bookkeeping (select, check, trained_spans, dropped)"),
    ("respmask._masker.ChatMasker", "_check_attributed", "spans bookkeeping (select, check, trained_spans, dropped)"),
    ("respmask._masker", "trained_spans", "spans bookkeeping (select, check, trained_spans, dropped)"),
    ("respmask._masker", "dropped_data", "spans bookkeeping (select, check, trained_spans, dropped)"),
    ("respmask._masker", "dropped_text", "spans bookkeeping (select, check, trained_spans, dropped)"),
    ("respmask._masker", "empty_replies", "spans bookkeeping (select, check, trained_spans, dropped)"),
    ("respmask._masker.ChatMasker", "_encode_texts", "tokenize (Rust encode_batch_fast)"),
    ("respmask._masker.ChatMasker", "_byte_lengths", "byte lengths -> token masks"),
    ("respmask._byte_lengths.ByteLengths", "token_masks", "byte lengths -> token masks"),
    ("respmask._masker", "labels_from_mask", "labels from masks"),
    ("respmask._encode", "training_row", "rows (truncate, judge)"),
    ("respmask._collator.ResponseOnlyCollator", "pad", "padding"),
    ("respmask._encode", "media_in", "media check (images a text tokenizer would drop)"),
    ("respmask._collator", "_row_names", "collator bookkeeping (names, stats)"),
    ("respmask._collator.ResponseOnlyCollator", "_count", "collator bookkeeping (names, stats)"),
    ("respmask._masker.ChatMasker", "_history_kept", "split check (history kept)"),
    ("respmask._masker.ChatMasker", "_count_dropped", "collator bookkeeping (names, stats)"),
    ("respmask._masker.ChatMasker", "backend", "collator bookkeeping (names, stats)"),
    ("respmask._masker.ChatMasker", "_render_parsed", "glue: ChatMasker._render_parsed's own code"),
    ("respmask._masker.ChatMasker", "_rows_parsed", "glue: ChatMasker._rows_parsed's own code"),
    ("respmask._masker.ChatMasker", "encode_batch", "glue: encode_batch's own code (ids to arrays, Encoded rows)"),
    ("respmask._encode", "encode_rows", "glue: encode_rows' own code"),
]


class Timers:
    """Exclusive CPU time per stage: a stage's clock pauses while a stage it calls runs."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.stack: list[list[Any]] = []  # [stage, start, time spent in children]
        self.on = True

    def wrap(self, stage: str, func: Any) -> Any:
        timers = self
        clock = time.process_time

        def timed(*args: Any, **kwargs: Any) -> Any:
            if not timers.on:
                return func(*args, **kwargs)
            frame = [stage, clock(), 0.0]
            timers.stack.append(frame)
            try:
                return func(*args, **kwargs)
            finally:
                timers.stack.pop()
                spent = clock() - frame[1]
                timers.total[stage] += spent - frame[2]
                if timers.stack:
                    timers.stack[-1][2] += spent

        timed.__wrapped__ = func  # type: ignore[attr-defined]
        return timed


def install(timers: Timers) -> list[tuple[Any, str, Any]]:
    """Wrap every function of STAGES; returns what to restore."""
    import importlib

    undo = []
    seen: set[tuple[int, str]] = set()
    for where, attr, stage in STAGES:
        parts = where.split(".")
        try:
            owner: Any = importlib.import_module(where)
        except ModuleNotFoundError:
            owner = getattr(importlib.import_module(".".join(parts[:-1])), parts[-1])
        if (id(owner), attr) in seen or not hasattr(owner, attr):
            continue
        seen.add((id(owner), attr))
        original = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
        if isinstance(original, staticmethod):
            wrapped: Any = staticmethod(timers.wrap(stage, original.__func__))
        elif isinstance(original, classmethod):
            wrapped = classmethod(timers.wrap(stage, original.__func__))
        else:
            wrapped = timers.wrap(stage, original)
        setattr(owner, attr, wrapped)
        undo.append((owner, attr, original))
    return undo


def restore(undo: list[tuple[Any, str, Any]]) -> None:
    for owner, attr, original in reversed(undo):
        setattr(owner, attr, original)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", nargs="+", default=["qwen3"])
    ap.add_argument("--turns", type=int, nargs="+", default=[3, 24])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--workload", default="varied", choices=["fixed", "varied"])
    ap.add_argument("--cprofile", action="store_true", help="also print cProfile's top functions by own time")
    args = ap.parse_args()
    shared = shared_tokenizers()
    if shared is None:
        print("needs the real tokenizers (RESPMASK_SHARED_TOKENIZERS)")
        return 2
    from transformers import AutoTokenizer
    from transformers.utils.chat_template_utils import _compile_jinja_template

    import respmask
    from respmask._render import _make_environment, template_constants, template_inputs

    clock = time.process_time
    for fam in args.families:
        tok = AutoTokenizer.from_pretrained(shared / FOLDER[fam])
        backend = tok.backend_tokenizer
        collator = respmask.ResponseOnlyCollator(tok, on_untrainable="keep", return_tensors="np")
        plain = _compile_jinja_template(tok.chat_template)
        # the same template in respmask's sandbox (its fast attribute paths) without the attribution hooks
        unhooked = _make_environment().from_string(tok.chat_template)
        special = tok.special_tokens_map
        constants = template_constants(special, {})
        for turns in args.turns:
            b = make_batch(turns, 32, seed=1, workload=args.workload)
            convs = [s["messages"] for s in b]

            def plain_render() -> Any:
                return [plain.render(messages=m, add_generation_prompt=False, **special) for m in convs]

            def unhooked_render() -> Any:
                return [unhooked.render(messages=m, add_generation_prompt=False, **special) for m in convs]

            marked = [template_inputs(m, constants=constants)[0] for m in convs]

            def unhooked_traced() -> Any:
                return [unhooked.render(v) for v in marked]

            def act() -> Any:
                return tok.apply_chat_template(convs, tokenize=False)

            def ids_only() -> Any:
                return backend.encode_batch_fast(tok.apply_chat_template(convs, tokenize=False),
                                                 add_special_tokens=False)

            texts = act()
            refs = {
                "plain Jinja render (transformers' compiled template)": plain_render,
                "respmask's sandbox without attribution hooks, plain strings": unhooked_render,
                "respmask's sandbox without attribution hooks, marked (Traced) message strings": unhooked_traced,
                "apply_chat_template(tokenize=False)": act,
                "encode_batch_fast alone": lambda: backend.encode_batch_fast(texts, add_special_tokens=False),
                "ids-only floor (render + encode_batch_fast)": ids_only,
                "collator, untimed": lambda: collator(b),
            }
            collator(b)  # warm up: template compiled, profile learned
            best_ref = {k: float("inf") for k in refs}
            best_stage: dict[str, float] = {}
            best_total = float("inf")
            timers = Timers()
            undo = install(timers)
            try:
                for _ in range(args.rounds):
                    for name, fn in refs.items():
                        timers.on = False
                        t = clock()
                        fn()
                        best_ref[name] = min(best_ref[name], clock() - t)
                    timers.on = True
                    timers.total.clear()
                    t = clock()
                    collator(b)
                    total = clock() - t
                    best_total = min(best_total, total)
                    stages = dict(timers.total)
                    stages["other (collator.__call__ loop, timer overhead)"] = total - sum(stages.values())
                    for k, v in stages.items():
                        best_stage[k] = min(best_stage.get(k, float("inf")), v)
            finally:
                restore(undo)
            print(f"\n### {fam}, {turns} turns, batch 32 ({args.workload}): CPU ms per batch, minimum of {args.rounds}\n")
            print("| stage | ms | share of the timed collator |")
            print("|---|---:|---:|")
            for k, v in sorted(best_stage.items(), key=lambda kv: -kv[1]):
                print(f"| {k} | {v * 1e3:.2f} | {v / best_total:.0%} |")
            print(f"| **collator, timed (sum of its best rounds per stage may differ)** | {best_total * 1e3:.2f} | |")
            for k, v in best_ref.items():
                print(f"| {k} | {v * 1e3:.2f} | |")
            if args.cprofile:
                import cProfile
                import pstats

                pr = cProfile.Profile()
                pr.enable()
                for _ in range(5):
                    collator(b)
                pr.disable()
                pstats.Stats(pr).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
