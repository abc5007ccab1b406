"""Long chats with images or speech cut to ``max_length``: respmask's collator against the processor alone.

The truncation coverage of ``bench_vision.py`` (issue 28: "the vision benchmark covers truncation
and one speech family"). Per family (the processors of bench_vision.py: Gemma 3 and Qwen2-VL with
real tokenizers and chat templates, non-tiny settings; speech: Qwen2-Audio, bench_vision.py's
Qwen2AudioProcessor), batches of 8 long chats: 6 user turns (15-40 words), each with an image
(64-256 px per side), or for speech an audio clip (0.5-4 s, an ``audios`` column), with probability
0.8, a 5-20-word reply after each. Three workloads on the same rows:

* ``whole``: no ``max_length`` (one processor call per batch, as in bench_vision.py);
* ``cut``: ``max_length`` = 60% of the shortest row of the batch, so every row is cut and most
  lose images (the processor runs on the batch, then again on the cut texts and the images or clips
  kept; image batches are mostly planned from the text and take one call, audio ones take two);
* ``mixed``: ``max_length`` = the median row length: about half the rows are cut.

Floor: the processor alone on the batch's rendered texts and images (``processor(text=rendered,
images=nested, padding=True, return_tensors="pt", add_special_tokens=False)``; speech:
``audio=clips, sampling_rate=16000``): what the batch costs any collator that does not truncate; a
processor cannot truncate such a batch itself without cutting through an image or a clip. "floor on
the cut rows" is the processor alone on the texts and media respmask keeps (read back from its ids:
each expansion collapsed to the placeholder the template writes): what one call on the final rows
costs. respmask's input_ids, attention_mask and pixel_values / input_features are checked equal to
those calls' on every batch. Time: process CPU time per batch, the minimum over interleaved rounds
(the machine is shared: minima of interleaved rounds, not means).

``--profile`` prints where a cut batch's time goes (cProfile, cumulative). ``--two-calls`` adds the
cut and mixed workloads with the one-call path turned off (``workload, two calls``: the processor on
the whole rows, then on the cut rows), timed in the same interleaved rounds: a before/after.
``--clips-twice`` does the same for speech with each clip's features made once turned off
(``workload, clips twice``: the call on the cut rows extracts the kept clips' features again).

    python benchmarks/bench_vision_cut.py [--rounds 9] [--batches 3] [--families gemma3 qwen2_vl] [--two-calls]
    python benchmarks/bench_vision_cut.py --families qwen2_audio

Writes benchmarks/results/vision_cut.{md,json} (vision_cut_speech.{md,json} when only speech
families run, as bench_vision.py writes speech.*).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import respmask  # noqa: E402
from bench_vision import AUDIO_FAMILIES, describe, processor_for, render_audio_row  # noqa: E402
from workloads import _text  # noqa: E402

RESULTS = HERE / "results"
TURNS = 6


def long_row(rng: random.Random, seed: int, audio: bool = False) -> dict:
    """A long chat: ``TURNS`` user turns, each with an image (``audio``: a clip of 0.5-4 s, as
    bench_vision.make_audio_row's) with probability 0.8, a reply after each."""
    from support.audio import make_audio
    from support.vision import make_image

    media, messages = [], []
    for t in range(TURNS):
        content: list[dict] = []
        if rng.random() < 0.8:
            if audio:
                media.append(make_audio(rng.uniform(0.5, 4.0), seed * 10 + t))
                content.append({"type": "audio"})
            else:
                media.append(make_image(rng.randint(64, 256), rng.randint(64, 256), seed * 10 + t))
                content.append({"type": "image"})
        content.append({"type": "text", "text": _text(rng, rng.randint(15, 40))})
        messages += [{"role": "user", "content": content},
                     {"role": "assistant", "content": [{"type": "text", "text": _text(rng, rng.randint(5, 20))}]}]
    return {"messages": messages, "audios" if audio else "images": media}


def timed(fn: Any, batches: list[Any]) -> float:
    gc.collect()
    t = time.process_time()
    for b in batches:
        fn(b)
    return (time.process_time() - t) / len(batches)


def run_family(family: str, n_batches: int, size: int, rounds: int, profile: bool,
               two_calls: bool = False, clips_twice: bool = False) -> dict[str, Any]:
    processor = processor_for(family)
    floor_processor = processor_for(family)
    audio = family in AUDIO_FAMILIES
    kind = "audios" if audio else "images"
    rng = random.Random(7)
    batches = [[long_row(rng, 1000 * b + i, audio) for i in range(size)] for b in range(n_batches)]
    whole = respmask.ResponseOnlyCollator(processor, on_untrainable="keep")
    lengths = [np.asarray(whole(b)["attention_mask"]).sum(1) for b in batches]
    cut_len = min(int(0.6 * min(L)) for L in lengths)
    mixed_len = int(np.median(np.concatenate(lengths)))
    collators = {
        "whole": whole,
        "cut": respmask.ResponseOnlyCollator(processor, max_length=cut_len, on_untrainable="keep"),
        "mixed": respmask.ResponseOnlyCollator(processor, max_length=mixed_len, on_untrainable="keep"),
    }
    rendered = [[render_audio_row(floor_processor, r) if audio
                 else floor_processor.apply_chat_template(r["messages"], tokenize=False) for r in b]
                for b in batches]

    def call(texts: list[str], media: list[list[Any]]) -> Any:
        """The processor alone on rendered texts and each row's media."""
        if audio:
            clips = [c for row in media for c in row]
            return floor_processor(text=texts, audio=clips or None, sampling_rate=16000, padding=True,
                                   return_tensors="pt", add_special_tokens=False)
        return floor_processor(text=texts, images=media, padding=True, return_tensors="pt",
                               add_special_tokens=False)

    def floor(k: int) -> Any:
        return call(rendered[k], [list(r[kind]) for r in batches[k]])

    stats: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", respmask.RespmaskWarning)
        for name in ("cut", "mixed"):
            c = collators[name]
            for b in batches:
                out = c(b)
                assert np.asarray(out["attention_mask"]).sum(1).max() <= c.max_length
            st = c.stats
            stats[name] = {"max_length": c.max_length, "rows_cut": st.truncated, "rows": st.samples,
                           "images_dropped": st.images_dropped, "audio_dropped": st.audio_dropped}
    from respmask._media import AUDIO, IMAGE
    from respmask._media_cut import media_counter

    token = media_counter(respmask.ChatMasker(processor), AUDIO if audio else IMAGE)
    # one call on the final rows: the processor on the collator's own kept texts and media
    final_inputs: dict[str, list[tuple[list[str], list[list[Any]]]]] = {}
    same: dict[str, bool] = {}
    for name in ("whole", "cut", "mixed"):
        final_inputs[name] = []
        c = collators[name]
        for k, b in enumerate(batches):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", respmask.RespmaskWarning)
                out = c(b)
            ids = np.asarray(out["input_ids"])
            real = np.asarray(out["attention_mask"]).astype(bool)
            n_kept = [int((ids[r][real[r]] == token).sum()) for r in range(len(b))]
            texts = [_collapse(processor, ids[r][real[r]], audio) for r in range(len(b))]
            # the text kept is the start of the processor's own render of the row (truncation="right")
            assert all(rendered[k][r].startswith(t) for r, t in enumerate(texts)), (family, name, k)
            final_inputs[name].append((texts, [list(r[kind][:n]) for r, n in zip(b, n_kept)]))
            ref = call(*final_inputs[name][-1]) if name != "whole" else floor(k)
            same[name] = same.get(name, True) and _same_batch(out, ref)
    if not all(same.values()):
        raise AssertionError(f"{family}: respmask's batch is not the processor's on the kept text and media: "
                             f"{same}")

    def final_floor(name: str, k: int) -> Any:
        return call(*final_inputs[name][k])

    contenders = {
        "floor: processor alone, whole rows": lambda: [floor(k) for k in range(n_batches)],
        "respmask, whole (no max_length)": lambda: [collators["whole"](b) for b in batches],
        "respmask, cut": lambda: [collators["cut"](b) for b in batches],
        "floor: processor alone, cut rows": lambda: [final_floor("cut", k) for k in range(n_batches)],
        "respmask, mixed": lambda: [collators["mixed"](b) for b in batches],
        "floor: processor alone, mixed rows": lambda: [final_floor("mixed", k) for k in range(n_batches)],
    }
    if clips_twice and audio:  # the same collators with each clip's features made again by the second call
        contenders["respmask, cut, clips twice"] = lambda: _clips_twice(
            lambda: [collators["cut"](b) for b in batches])
        contenders["respmask, mixed, clips twice"] = lambda: _clips_twice(
            lambda: [collators["mixed"](b) for b in batches])
    # the same collators with the cut planned on a first processor call (before the one-call path; audio
    # batches take two calls anyway)
    if two_calls and not audio:
        contenders["respmask, cut, two calls"] = lambda: _two_calls_only(lambda: [collators["cut"](b) for b in batches])
        contenders["respmask, mixed, two calls"] = lambda: _two_calls_only(
            lambda: [collators["mixed"](b) for b in batches])
    cpu: dict[str, list[float]] = {n: [] for n in contenders}
    names = list(contenders)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", respmask.RespmaskWarning)
        for k in range(rounds):
            for name in names[k % len(names):] + names[:k % len(names)]:  # interleaved, rotated
                gc.collect()
                t = time.process_time()
                contenders[name]()
                cpu[name].append((time.process_time() - t) / n_batches)
        prof = None
        if profile:
            import cProfile
            import io
            import pstats

            pr = cProfile.Profile()
            pr.enable()
            for _ in range(3):
                contenders["respmask, cut"]()
            pr.disable()
            s = io.StringIO()
            pstats.Stats(pr, stream=s).sort_stats("cumulative").print_stats(30)
            prof = s.getvalue()
    ms = {n: round(1000 * min(v), 2) for n, v in cpu.items()}
    base = ms["floor: processor alone, whole rows"]
    return {
        "family": family, "processor": describe(processor), "batches": n_batches, "batch_size": size,
        "rounds": rounds, "tokens_per_row_whole": round(float(np.mean(np.concatenate(lengths))), 1),
        "media": "clips" if audio else "images",
        "images_per_batch": round(sum(len(r[kind]) for b in batches for r in b) / n_batches, 2),
        "same_as_processor": same, "cut_stats": stats, "ms_per_batch_cpu": ms,
        "x_floor_whole_rows": {n: round(v / base, 3) for n, v in ms.items()},
        "cpu_ms_all_rounds": {n: [round(1000 * x, 2) for x in v] for n, v in cpu.items()},
        "profile": prof,
    }


def _two_calls_only(run: Any) -> Any:
    """``run()`` with the one-call path of respmask._media_cut turned off (every cut batch takes the
    processor on the whole rows, then on the cut rows)."""
    from respmask import _media_cut

    one_call = _media_cut._one_call
    _media_cut._one_call = lambda *args, **kwargs: None
    try:
        return run()
    finally:
        _media_cut._one_call = one_call


def _same_batch(out: Any, ref: Any) -> bool:
    """respmask's batch has the processor's ids, attention mask and media features (pixel_values,
    input_features, their masks and grids: every key of the processor's call), exactly."""
    keys = set(ref.keys())
    if not keys <= set(out.keys()):
        return False
    return all(np.array_equal(np.asarray(out[key]), np.asarray(ref[key])) for key in keys)


def _clips_twice(run: Any) -> Any:
    """``run()`` with respmask._media_cut's per-clip features turned off (the call on the cut rows
    extracts the kept clips' features again, as before clips_join)."""
    from respmask import _media_cut

    clips_join = _media_cut.clips_join
    _media_cut.clips_join = lambda masker: False
    try:
        return run()
    finally:
        _media_cut.clips_join = clips_join


def _collapse(processor: Any, ids: np.ndarray, audio: bool = False) -> str:
    """The text the processor expands into ``ids``: each run of image tokens back to what the
    chat template writes for one image (learned: the tokens one image part adds to the render);
    ``audio``: each run of one audio token back to one (Qwen2-Audio's template writes
    ``<|audio_bos|><|AUDIO|><|audio_eos|>``, the processor repeats ``<|AUDIO|>``)."""
    masker = _maskers.setdefault(id(processor), respmask.ChatMasker(processor))
    media = set(masker.media_tokens().tolist())
    tok = processor.tokenizer
    if audio:
        ids = np.asarray(ids)
        repeat = np.zeros(len(ids), dtype=bool)
        repeat[1:] = (ids[1:] == ids[:-1]) & np.isin(ids[1:], list(media))
        return tok.decode(ids[~repeat].tolist(), skip_special_tokens=False)
    text_probe, before, after = _probe_placeholder(masker)
    mark = "\x00"
    out: list[str] = []
    k = 0
    n = len(ids)
    while k < n:
        if int(ids[k]) in media:
            j = k
            while j < n and int(ids[j]) in media:
                j += 1
            out.append(mark)
            k = j
        else:
            j = k
            while j < n and int(ids[j]) not in media:
                j += 1
            out.append(tok.decode(ids[k:j].tolist(), skip_special_tokens=False))
            k = j
    # the text the processor's expansion adds around an image's tokens (Gemma 3's "\n\n") goes with them
    return "".join(out).replace(before + mark + after, mark).replace(mark, text_probe)


_maskers: dict[int, Any] = {}


def _probe_placeholder(masker: Any) -> tuple[str, str, str]:
    """What the chat template writes for one image, and the text the processor's expansion of it
    writes before and after the image's tokens (learned: the processor on that placeholder alone)."""
    from respmask._media import IMAGE, image_chats, probe_medium

    if id(masker) in _placeholders:
        return _placeholders[id(masker)]

    def render(messages: list[dict]) -> str:
        return masker.processor.apply_chat_template(messages, chat_template=masker.template_source(), tokenize=False)

    t0, t1 = image_chats(render, (0, 1))
    i = 0
    while t0[i] == t1[i]:
        i += 1
    j = 0
    while t0[len(t0) - 1 - j] == t1[len(t1) - 1 - j]:
        j += 1
    placeholder = t1[i:len(t1) - j]
    processor = masker.processor
    out = processor(text=[placeholder], images=[[probe_medium(processor, IMAGE)]], return_tensors="np",
                    add_special_tokens=False)
    ids = np.asarray(out["input_ids"])[0]
    at = np.flatnonzero(np.isin(ids, masker.media_tokens()))
    decode = processor.tokenizer.decode
    _placeholders[id(masker)] = (placeholder, decode(ids[:at[0]].tolist(), skip_special_tokens=False),
                                 decode(ids[at[-1] + 1:].tolist(), skip_special_tokens=False))
    return _placeholders[id(masker)]


_placeholders: dict[int, tuple[str, str, str]] = {}


def markdown(report: dict[str, Any]) -> str:
    kinds = {w.get("media", "images") for w in report["families"]}
    media = "images" if kinds == {"images"} else "clips" if kinds == {"clips"} else "images or clips"
    title = {"images": "image", "clips": "speech"}.get(media, "image and speech")
    lines = [f"# Long {title} chats cut to max_length: respmask vs the processor alone", "",
             f"Machine: {report['machine']}", f"Versions: {report['versions']}",
             f"Command: `python benchmarks/bench_vision_cut.py {' '.join(report['argv'])}`", "",
             *(part.replace("\n", " ") if not part.startswith("*") else part.replace("\n  ", " ")
               for part in __doc__.split("\n\n")[1:4]), "",
             "ms per batch = process CPU time, minimum over interleaved rounds on a shared 2-core machine "
             "(minima of interleaved rounds; single runs vary by 10-20%). Ratios are to the processor alone on "
             "the whole rows.", "",
             f"| family | tokens/row (whole) | {media}/batch | workload | max_length | rows cut / {media} dropped "
             "| respmask ms | processor alone, whole rows ms | processor alone, final rows ms | respmask / whole "
             "rows | respmask / final rows |",
             "|---|---:|---:|---|---:|---|---:|---:|---:|---:|---:|"]
    for w in report["families"]:
        ms = w["ms_per_batch_cpu"]
        base = ms["floor: processor alone, whole rows"]
        works = ["whole", "cut", "mixed"] + [x for x in ("cut, two calls", "mixed, two calls", "cut, clips twice",
                                                        "mixed, clips twice") if f"respmask, {x}" in ms]
        for work in works:
            mine = ms[f"respmask, {work}" if work != "whole" else "respmask, whole (no max_length)"]
            final = ms.get(f"floor: processor alone, {work.split(',')[0]} rows", base)
            st = w["cut_stats"].get(work.split(",")[0])
            lost = st["audio_dropped" if w.get("media") == "clips" else "images_dropped"] if st else 0
            cut_cell = f"{st['rows_cut']} of {st['rows']} / {lost}" if st else "-"
            lines.append(
                f"| {w['family']} | {w['tokens_per_row_whole']} | {w['images_per_batch']} | {work} | "
                f"{st['max_length'] if st else '-'} | "
                f"{cut_cell} | {mine:.1f} | "
                f"{base:.1f} | {final:.1f} | {mine / base:.2f} | {mine / final:.2f} |")
    checked = [w for w in report["families"] if "same_as_processor" in w]
    if checked:
        lines += ["", "respmask's input_ids, attention_mask and media features equal the processor's on the kept "
                  "text and media (every batch, every workload): " + "; ".join(
                      f"{w['family']}: {'yes' if all(w['same_as_processor'].values()) else 'NO'}" for w in checked)]
    lines += ["", "Processors:", ""] + [f"- {w['family']}: {w['processor']}" for w in report["families"]]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--families", nargs="+", default=["gemma3", "qwen2_vl"])
    ap.add_argument("--profile", action="store_true", help="print where a cut batch's time goes")
    ap.add_argument("--two-calls", action="store_true",
                    help="also time the cut and mixed workloads with the one-call path turned off (before/after, "
                         "interleaved in the same rounds)")
    ap.add_argument("--clips-twice", action="store_true",
                    help="speech: also time the cut and mixed workloads with each kept clip's features made again "
                         "by the call on the cut rows (before/after clips_join, interleaved in the same rounds)")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--render", action="store_true",
                    help="rewrite vision_cut.md from vision_cut.json (speech families: vision_cut_speech.*; no run)")
    args = ap.parse_args()
    stem = "vision_cut_speech" if set(args.families) <= AUDIO_FAMILIES else "vision_cut"  # as bench_vision.py
    if args.render:
        (RESULTS / f"{stem}.md").write_text(markdown(json.loads((RESULTS / f"{stem}.json").read_text())))
        return 0
    import transformers

    report = {
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count(),
                    "torch_threads": torch.get_num_threads()},
        "versions": {"respmask": respmask.__version__, "transformers": transformers.__version__,
                     "torch": torch.__version__},
        "argv": sys.argv[1:],
        "families": [],
    }
    for family in args.families:
        w = run_family(family, args.batches, args.batch_size, args.rounds, args.profile, args.two_calls,
                       args.clips_twice)
        report["families"].append(w)
        print(json.dumps({k: v for k, v in w.items() if k not in ("cpu_ms_all_rounds", "profile")}, indent=1))
        if w["profile"]:
            print(w["profile"])
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{stem}.json").write_text(json.dumps(
            {**report, "families": [{k: v for k, v in w.items() if k != "profile"} for w in report["families"]]},
            indent=1))
        (RESULTS / f"{stem}.md").write_text(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
