"""Runs under valgrind (see instructions.txt): bench_vision_cut.py's rows of one family (default qwen2_vl), two warm-up
passes, then one measured pass of 3 batches inside functools.reduce. Arguments: floor, whole, cut or mixed; the family (qwen2_vl, gemma3)."""
import functools
import random
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
import numpy as np
import respmask
from bench_vision_cut import long_row
from bench_vision import processor_for
what, family = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "qwen2_vl")
processor = processor_for(family)
rng = random.Random(7)
batches = [[long_row(rng, 1000 * b + i) for i in range(8)] for b in range(3)]
whole = respmask.ResponseOnlyCollator(processor, on_untrainable="keep")
lengths = [np.asarray(whole(b)["attention_mask"]).sum(1) for b in batches]
mixed_len = int(np.median(np.concatenate(lengths)))
cut_len = min(int(0.6 * min(L)) for L in lengths)
warnings.simplefilter("ignore")
if what == "floor":
    fp = processor_for(family)
    rendered = [[fp.apply_chat_template(r["messages"], tokenize=False) for r in b] for b in batches]
    run = lambda: [fp(text=rendered[k], images=[list(r["images"]) for r in b], padding=True, return_tensors="pt", add_special_tokens=False) for k, b in enumerate(batches)]
else:
    col = respmask.ResponseOnlyCollator(processor, max_length={"mixed": mixed_len, "cut": cut_len, "whole": None}[what], on_untrainable="keep")
    run = lambda: [col(b) for b in batches]
run(); run()
functools.reduce(lambda acc, _: run(), range(1), None)
