"""Instructions executed per collator batch, this checkout against a git revision (valgrind).

CPU time on a shared 2-core machine moves by 5-20% between runs, more than the differences an
engine change makes. ``valgrind --tool=callgrind`` counts instructions instead, the same on every
run for the same code and input. Only the measured batches are counted: they run inside a
``functools.reduce`` call and callgrind collects inside that C function alone
(``--toggle-collect=functools_reduce``), so imports, the tokenizer load and the template's
one-time profile (two warm-up batches) are left out.

    python benchmarks/bench_instructions.py 81eae0d                      # 3 families, 3 turns, collator
    python benchmarks/bench_instructions.py HEAD~2 --turns 24 --batches 1
    python benchmarks/bench_instructions.py 81eae0d --what render        # ChatMasker.render only

Each count runs Python under valgrind (about 2.5 minutes, mostly the imports); runs go two at a
time. The revision's ``src/respmask`` is exported as ``respmask_ref`` (see bench_engine_ab.py).
Needs valgrind (Debian: ``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_engine_ab import FOLDER, export  # noqa: E402


def worker(package: str, folder: str, turns: int, batches: int, what: str) -> None:
    """Runs under valgrind: warm up, then the measured batches inside functools.reduce."""
    import importlib

    from transformers import AutoTokenizer

    from workloads import batch, shared_tokenizers

    pkg = importlib.import_module(package)
    tok = AutoTokenizer.from_pretrained(str(shared_tokenizers() / folder))
    collator = pkg.ResponseOnlyCollator(tok)
    samples = batch(turns, 32, 0)
    collator(samples)
    collator(samples)
    if what == "render":
        masker = collator.masker
        step = lambda acc, _: [masker.render(s) for s in samples]  # noqa: E731
    else:
        step = lambda acc, _: collator(samples)  # noqa: E731
    functools.reduce(step, range(batches), None)


def count(package: str, folder: str, turns: int, batches: int, what: str, path: str) -> int:
    env = dict(os.environ, PYTHONPATH=path, TOKENIZERS_PARALLELISM="false", RAYON_NUM_THREADS="1",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out", "--collect-atstart=no",
               "--toggle-collect=functools_reduce", sys.executable, __file__, "--worker", package, folder,
               str(turns), str(batches), what]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", out.stderr)
    if not found:
        raise RuntimeError(f"no instruction count from valgrind:\n{out.stderr[-2000:]}")
    return int(found.group(1)) // batches


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        package, folder, turns, batches, what = sys.argv[2:7]
        worker(package, folder, int(turns), int(batches), what)
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rev", help="git revision to compare against")
    ap.add_argument("--families", nargs="+", default=list(FOLDER))
    ap.add_argument("--turns", type=int, nargs="+", default=[3])
    ap.add_argument("--batches", type=int, default=2, help="measured batches of 32 per count")
    ap.add_argument("--what", choices=["collator", "render"], default="collator")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    with tempfile.TemporaryDirectory() as tmp:
        export(args.rev, Path(tmp))
        path = os.pathsep.join([tmp, str(HERE.parent / "src"), str(HERE)])
        jobs = [(pkg, fam, turns) for fam in args.families for turns in args.turns for pkg in ("respmask_ref", "respmask")]
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            counts = list(pool.map(lambda j: count(j[0], FOLDER[j[1]], j[2], args.batches, args.what, path), jobs))
    results = dict(zip(jobs, counts))
    print(f"{args.what} per batch of 32, instructions (callgrind): {args.rev} vs this checkout")
    for fam in args.families:
        for turns in args.turns:
            ref, now = results[("respmask_ref", fam, turns)], results[("respmask", fam, turns)]
            print(f"{fam:8s} {turns:3d} turns  {args.rev}: {ref / 1e6:9.1f} M  now: {now / 1e6:9.1f} M  ({now / ref:.3f}x)")


if __name__ == "__main__":
    main()
