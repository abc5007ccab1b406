"""Rendering + span finding of this checkout against a git revision, in one process.

The collator benchmark is dominated by the Rust tokenizer and, on a shared machine, too noisy
to resolve a few percent. This script times only the Python side that engine changes touch
(``ChatMasker.render``: template render, attribution, spans) for this checkout and for an older
revision loaded side by side, interleaved batch by batch, single-threaded CPU time, minimum of
the rounds (the minimum is what CPU steal and neighbours cannot inflate):

    python benchmarks/bench_engine_ab.py 81eae0d                 # 3 families, 3 and 24 turns
    python benchmarks/bench_engine_ab.py HEAD~3 --turns 3 8 --rounds 40
    TOKENIZERS_PARALLELISM=false python benchmarks/bench_engine_ab.py 81eae0d --collator   # whole collator
    python benchmarks/bench_engine_ab.py 81eae0d --collator --python-only   # collator minus the Rust tokenizer
    python benchmarks/bench_engine_ab.py 81eae0d --collator --python-only --own-template --workload varied

``--python-only`` replays each batch's tokenizer results from a cache filled in the warm-up, so the
time is the collator's own Python work (render, spans, masks, padding): the part engine changes
move, without the Rust tokenizing that is most of the collator's time.

The revision's ``src/respmask`` is exported with ``git archive`` into a temporary folder as the
package ``respmask_ref`` (its imports are relative). Real tokenizers come from
RESPMASK_SHARED_TOKENIZERS or ../shared/tokenizers, with TRL's training templates.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from workloads import batch as make_batch  # noqa: E402
from workloads import shared_tokenizers  # noqa: E402

FOLDER = {"qwen3": "qwen3", "llama3": "llama3_1", "gemma3": "gemma3"}


def export(rev: str, into: Path) -> None:
    """``src/respmask`` at ``rev`` as the package ``respmask_ref`` under ``into``."""
    data = subprocess.run(
        ["git", "archive", rev, "src/respmask"], cwd=HERE.parent, check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    (into / "src" / "respmask").rename(into / "respmask_ref")


def replay_tokenizer(masker: Any) -> None:
    """Make ``masker`` tokenize each distinct batch of texts once and replay the result after."""
    encode = masker._encode_texts
    seen: dict[tuple, Any] = {}

    def cached(backend: Any, texts: list[str], add_special: bool, offsets: bool) -> Any:
        key = (tuple(texts), add_special, offsets)
        if key not in seen:
            seen[key] = encode(backend, texts, add_special, offsets=offsets)
        return seen[key]

    masker._encode_texts = cached


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rev", help="git revision to compare against")
    ap.add_argument("--families", nargs="+", default=list(FOLDER))
    ap.add_argument("--turns", type=int, nargs="+", default=[3, 24])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--collator", action="store_true",
                    help="time the whole ResponseOnlyCollator (render, tokenize, mask, pad) instead of render alone; "
                         "set TOKENIZERS_PARALLELISM=false so CPU time is the work of one thread")
    ap.add_argument("--python-only", action="store_true",
                    help="with --collator: replay the tokenizer's results from a cache (time the Python side alone)")
    ap.add_argument("--own-template", action="store_true",
                    help="the tokenizer's own chat template (as bench_collators.py --issue27), not TRL's training one")
    ap.add_argument("--workload", default=None, help="workloads.py workload (default: its default, 'fixed')")
    args = ap.parse_args()
    shared = shared_tokenizers()
    if shared is None:
        print("needs the real tokenizers (RESPMASK_SHARED_TOKENIZERS)")
        return 2
    import trl
    from transformers import AutoTokenizer

    import respmask

    with tempfile.TemporaryDirectory() as tmp:
        export(args.rev, Path(tmp))
        sys.path.insert(0, tmp)
        import respmask_ref

        what = "ChatMasker.render"
        if args.collator:
            what = "ResponseOnlyCollator" + (" (Python side: tokenizer results replayed)" if args.python_only else "")
        print(f"{what} per batch of 32, CPU ms (min of {args.rounds}): {args.rev} vs this checkout")
        for fam in args.families:
            tok = AutoTokenizer.from_pretrained(shared / FOLDER[fam])
            if not args.own_template:
                tok.chat_template = (Path(trl.__file__).parent / "chat_templates" / f"{fam}_training.jinja").read_text()
            if args.collator:
                maskers = {"ref": respmask_ref.ResponseOnlyCollator(tok, return_tensors="np"),
                           "new": respmask.ResponseOnlyCollator(tok, return_tensors="np")}
                run = {k: (lambda m: (lambda b: m(b)))(m) for k, m in maskers.items()}
                if args.python_only:
                    for m in maskers.values():
                        replay_tokenizer(m.masker)
            else:
                maskers = {"ref": respmask_ref.ChatMasker(tok), "new": respmask.ChatMasker(tok)}
                run = {k: (lambda m: (lambda b: [m.render(s) for s in b]))(m) for k, m in maskers.items()}
            for turns in args.turns:
                b = make_batch(turns, 32, seed=1) if args.workload is None else make_batch(turns, 32, seed=1,
                                                                                           workload=args.workload)
                best = {k: float("inf") for k in maskers}
                for k in maskers:
                    run[k](b)
                for _ in range(args.rounds):
                    for k in maskers:
                        t = time.process_time()
                        run[k](b)
                        best[k] = min(best[k], time.process_time() - t)
                print(
                    f"{fam:7s} {turns:3d} turns  {args.rev}: {best['ref'] * 1e3:7.2f}  now: {best['new'] * 1e3:7.2f}"
                    f"  ({best['new'] / best['ref']:.2f}x)",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
