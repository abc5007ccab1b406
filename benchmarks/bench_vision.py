"""Chats with images (and speech): respmask's collator on a vision-language (or audio-language)
processor, against the processor alone (the floor) and Unsloth's
UnslothVisionDataCollator(train_on_responses_only=True).

Per family (Gemma 3, Qwen2-VL: real tokenizers and chat templates, the processors of
tests/support/vision.py at their non-tiny settings), batches of 8 rows: two user turns, a short
assistant reply after each, 0-2 images per row (each in a random user turn, sides drawn from
64-256 px). Per batch:

* floor: the processor alone on the already-rendered texts and the nested images
  (``processor(text=texts, images=images, padding=True, return_tensors="pt",
  add_special_tokens=False)``): what every collator pays;
* respmask: ``ResponseOnlyCollator(processor)`` on the raw rows;
* Unsloth: ``UnslothVisionDataCollator(model, processor, train_on_responses_only=True,
  instruction_part=..., response_part=..., resize="max")`` on the same rows (``messages`` with
  image parts + an ``images`` column; ``resize="max"`` keeps the images as given, so every
  contender feeds the image processor the same pixels). Its ``model`` argument is only read for
  config values (dtype, patch size, media token ids): tests/support/vision.py's ``tiny_model``.

Speech (``qwen2_audio``): Qwen2AudioProcessor (WhisperFeatureExtractor, 128 mel bins) with
Qwen2-Audio's template (tests/fixtures/audio/qwen2_audio.jinja) and the real Qwen3 tokenizer (the
Qwen2 vocabulary) with Qwen2-Audio's three audio tokens added; rows as above with 0-2 clips of
0.5-4 s instead of images (``audios`` column). Floor: ``processor(text=texts, audio=flat clips,
sampling_rate=16000, padding=True, return_tensors="pt", add_special_tokens=False)``. No Unsloth
contender (its collator is for images).

Time: process CPU time (all threads) per batch, the minimum over interleaved rounds (wall time
is recorded too). Labels: input_ids / pixel_values of the three must be identical; trained
tokens per row and the stop tokens each trains are compared. Writes
benchmarks/results/vision.{md,json} (speech.{md,json} when only speech families run). Long chats
cut to ``max_length`` are timed by bench_vision_cut.py (speech: ``--families qwen2_audio``,
results/vision_cut_speech.md); vision.md ends with its table (results/vision_cut.md) when there is
one.

    python benchmarks/bench_vision.py [--rounds 15] [--batches 4] [--batch-size 8]

Needs the real tokenizers (RESPMASK_SHARED_TOKENIZERS) and, for the Unsloth contender,
``pip install --no-deps unsloth_zoo`` (imports on CPU with UNSLOTH_ZOO_DISABLE_GPU_INIT=1).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import io
import json
import os
import platform
import random
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("UNSLOTH_ZOO_DISABLE_GPU_INIT", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import respmask  # noqa: E402
from workloads import _text, shared_tokenizers  # noqa: E402

RESULTS = HERE / "results"
FLOOR, OURS, UNSLOTH = "floor: processor alone", "respmask collator", "UnslothVisionDataCollator"

# family -> (tests/support/vision.py family, instruction_part, response_part, stop token)
FAMILIES = {
    "gemma3": ("gemma3", "<start_of_turn>user\n", "<start_of_turn>model\n", "<end_of_turn>"),
    "qwen2_vl": ("qwen2_vl", "<|im_start|>user\n", "<|im_start|>assistant\n", "<|im_end|>"),
    # Gemma 3 with the published gemma-3-*-it image size (896 px); build_processor("gemma3") uses
    # the Gemma3ImageProcessorPil class default, which is 224 px in this transformers.
    "gemma3@896": ("gemma3", "<start_of_turn>user\n", "<start_of_turn>model\n", "<end_of_turn>"),
    # speech: Qwen2-Audio (audio parts and an 'audios' column instead of images)
    "qwen2_audio": ("qwen2_audio", "<|im_start|>user\n", "<|im_start|>assistant\n", "<|im_end|>"),
}
AUDIO_FAMILIES = {"qwen2_audio"}


def _qwen2_audio_processor() -> Any:
    """Qwen2AudioProcessor with its real template and the real Qwen2-vocabulary tokenizer (shared
    Qwen3) plus Qwen2-Audio's audio tokens."""
    import transformers
    from support.audio import template
    from support.vision import _add_special, _tokenizer

    tok = _tokenizer("qwen3")
    _add_special(tok, ["<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>"])
    return transformers.Qwen2AudioProcessor(feature_extractor=transformers.WhisperFeatureExtractor(feature_size=128),
                                            tokenizer=tok, chat_template=template("qwen2_audio"))


def processor_for(family: str) -> Any:
    """A fresh processor (Unsloth's collator may patch the one it is given: each contender gets its own)."""
    from support.vision import build_processor

    if family in AUDIO_FAMILIES:
        return _qwen2_audio_processor()
    base = build_processor(FAMILIES[family][0])
    if family == "gemma3@896":
        import transformers

        ip = transformers.Gemma3ImageProcessorPil(size={"height": 896, "width": 896})
        return transformers.Gemma3Processor(image_processor=ip, tokenizer=copy.deepcopy(base.tokenizer),
                                            image_seq_length=256, chat_template=base.chat_template)
    return copy.deepcopy(base)


def describe(processor: Any) -> str:
    if getattr(processor, "image_processor", None) is None:
        fe = processor.feature_extractor
        return f"{type(processor).__name__}, {type(fe).__name__} feature_size={fe.feature_size}"
    ip = processor.image_processor
    size = {k: v for k, v in dict(ip.size).items() if v is not None} if hasattr(ip, "size") else {}
    return f"{type(processor).__name__}, {type(ip).__name__} size={size}"


def make_audio_row(rng: random.Random, seed: int) -> dict:
    """As :func:`make_row`, with 0-2 clips of 0.5-4 s (an ``audios`` column) instead of images."""
    from support.audio import make_audio

    n_clips = rng.randint(0, 2)
    where = [rng.randrange(2) for _ in range(n_clips)]
    clips, messages = [], []
    for turn in range(2):
        content: list[dict] = []
        for k, t in enumerate(where):
            if t == turn:
                clips.append(make_audio(rng.uniform(0.5, 4.0), seed * 10 + k))
                content.append({"type": "audio"})
        content.append({"type": "text", "text": _text(rng, rng.randint(15, 40))})
        messages.append({"role": "user", "content": content})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": _text(rng, rng.randint(5, 20))}]})
    return {"messages": messages, "audios": clips}


def render_audio_row(processor: Any, row: dict) -> str:
    """The processor's own render of a row with an ``audios`` column: each audio part given its clip
    (the template renders an audio part only with its clip, as apply_chat_template is given it)."""
    clips = iter(row["audios"])
    messages = [{**m, "content": [{**p, "audio": next(clips)} if p.get("type") == "audio" else p
                                  for p in m["content"]]} for m in row["messages"]]
    return processor.apply_chat_template(messages, tokenize=False)


def media_count(row: dict) -> int:
    return len(row.get("images") or row.get("audios") or [])


def make_row(rng: random.Random, seed: int) -> dict:
    from support.vision import make_image

    n_images = rng.randint(0, 2)
    where = [rng.randrange(2) for _ in range(n_images)]
    images, messages = [], []
    for turn in range(2):
        content: list[dict] = []
        for k, t in enumerate(where):
            if t == turn:
                w, h = rng.randint(64, 256), rng.randint(64, 256)
                images.append(make_image(w, h, seed * 10 + k))
                content.append({"type": "image"})
        content.append({"type": "text", "text": _text(rng, rng.randint(15, 40))})
        messages.append({"role": "user", "content": content})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": _text(rng, rng.randint(5, 20))}]})
    return {"messages": messages, "images": images}  # in the order of their image parts


def make_batches(n_batches: int, size: int, audio: bool = False) -> list[list[dict]]:
    out = []
    for b in range(n_batches):
        rng = random.Random(1000 + b)
        out.append([(make_audio_row if audio else make_row)(rng, 1000 * b + i) for i in range(size)])
    return out


def contenders(family: str) -> tuple[dict[str, Callable[[list[dict]], Any]], dict[str, Any]]:
    """name -> function(batch of rows) -> batch; and notes (errors, settings)."""
    _, instruction, response, _ = FAMILIES[family]
    notes: dict[str, Any] = {}
    fns: dict[str, Callable[[list[dict]], Any]] = {}

    p_floor = processor_for(family)
    notes["processor"] = describe(p_floor)
    rendered: dict[int, tuple[list[str], list[list[Any]]]] = {}

    audio = family in AUDIO_FAMILIES

    def prepare_floor(batch: list[dict]) -> None:
        """Render once, outside the timing: the floor starts from rendered texts."""
        if audio:
            rendered[id(batch)] = ([render_audio_row(p_floor, r) for r in batch],
                                   [c for r in batch for c in r["audios"]])
            return
        texts = [p_floor.apply_chat_template(r["messages"], tokenize=False) for r in batch]
        rendered[id(batch)] = (texts, [list(r["images"]) for r in batch])

    def floor(batch: list[dict]) -> Any:
        texts, media = rendered[id(batch)]
        if audio:
            return p_floor(text=texts, audio=media or None, sampling_rate=16000, padding=True, return_tensors="pt",
                           add_special_tokens=False)
        return p_floor(text=texts, images=media, padding=True, return_tensors="pt", add_special_tokens=False)

    floor.prepare = prepare_floor  # type: ignore[attr-defined]
    fns[FLOOR] = floor

    fns[OURS] = respmask.ResponseOnlyCollator(processor_for(family), on_untrainable="keep")
    if audio:
        notes["unsloth_error"] = "not run: UnslothVisionDataCollator is for images"
        return fns, notes

    try:
        from support.vision import tiny_model
        from unsloth_zoo.vision_utils import UnslothVisionDataCollator

        p_unsloth = processor_for(family)
        model = tiny_model(FAMILIES[family][0], p_unsloth)
        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            fns[UNSLOTH] = UnslothVisionDataCollator(
                model, p_unsloth, resize="max", train_on_responses_only=True,
                instruction_part=instruction, response_part=response)
        notes["unsloth_settings"] = {"resize": "max", "instruction_part": instruction, "response_part": response,
                                     "model": f"tiny_model({FAMILIES[family][0]!r}): config only"}
        if log.getvalue().strip():
            notes["unsloth_init_output"] = log.getvalue().strip()
    except Exception as exc:  # reported, not fatal: (a) and (b) still run
        notes["unsloth_error"] = f"{type(exc).__name__}: {exc}"
        notes["unsloth_traceback"] = traceback.format_exc()
    return fns, notes


def compare(family: str, processor: Any, outs: dict[str, Any], batch: list[dict]) -> dict[str, Any]:
    """Do the contenders feed the model the same thing, and which tokens does each train?"""
    tok = processor.tokenizer
    stop_id = tok.convert_tokens_to_ids(FAMILIES[family][3])
    floor = outs[FLOOR]
    res: dict[str, Any] = {"same_input_ids": {}, "same_pixel_values": {}, "rows": []}
    for name, out in outs.items():
        if name == FLOOR:
            continue
        res["same_input_ids"][name] = bool(torch.equal(out["input_ids"], floor["input_ids"])
                                           and torch.equal(out["attention_mask"], floor["attention_mask"]))
        key = "input_features" if family in AUDIO_FAMILIES else "pixel_values"
        pv_a, pv_b = out.get(key), floor.get(key)
        res["same_pixel_values"][name] = (pv_a is None and pv_b is None) or (
            pv_a is not None and pv_b is not None and pv_a.shape == pv_b.shape
            and bool(torch.equal(pv_a.float(), pv_b.float())))
    trainers = [n for n in (OURS, UNSLOTH) if n in outs]
    for r in range(len(batch)):
        ids = floor["input_ids"][r]
        row: dict[str, Any] = {"images": media_count(batch[r]), "tokens": int(floor["attention_mask"][r].sum())}
        trained = {}
        for name in trainers:
            t = outs[name]["labels"][r] != -100
            trained[name] = t
            row[name] = {"trained": int(t.sum()), "stop_trained": int((t & (ids == stop_id)).sum())}
        row["stop_tokens_in_row"] = int((ids == stop_id).sum())
        if len(trainers) == 2:
            a, b = trained[OURS], trained[UNSLOTH]
            row["same_labels"] = bool(torch.equal(outs[OURS]["labels"][r], outs[UNSLOTH]["labels"][r]))
            only_a = ids[a & ~b].tolist()
            only_b = ids[b & ~a].tolist()
            row["only_respmask"] = [tok.convert_ids_to_tokens(i) for i in only_a]
            row["only_unsloth"] = [tok.convert_ids_to_tokens(i) for i in only_b]
        res["rows"].append(row)
    return res


def run_family(family: str, n_batches: int, size: int, rounds: int) -> dict[str, Any]:
    fns, notes = contenders(family)
    batches = make_batches(n_batches, size, audio=family in AUDIO_FAMILIES)
    copies = {name: copy.deepcopy(batches) for name in fns}  # each contender its own rows (and images)
    for b in copies[FLOOR]:
        fns[FLOOR].prepare(b)  # type: ignore[attr-defined]
    # warm up (caches, respmask's one-off media-token probe) and check agreement on every batch
    agreement = []
    for i in range(n_batches):
        outs = {}
        for name, fn in fns.items():
            try:
                outs[name] = fn(copies[name][i])
            except Exception as exc:
                if name != UNSLOTH:
                    raise
                notes["unsloth_error"] = f"{type(exc).__name__}: {exc}"
                notes["unsloth_traceback"] = traceback.format_exc()
                fns.pop(UNSLOTH)
                break
        agreement.append(compare(family, fns[OURS].processor, outs, batches[i]))
    tokens = [int(a_row["tokens"]) for a in agreement for a_row in a["rows"]]
    images = [a_row["images"] for a in agreement for a_row in a["rows"]]
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    wall: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for k in range(rounds):
        for name in names[k % len(names):] + names[:k % len(names)]:  # interleaved, rotated
            fn, rows = fns[name], copies[name]
            gc.collect()
            t, w = time.process_time(), time.perf_counter()
            for b in rows:
                fn(b)
            cpu[name].append((time.process_time() - t) / n_batches)
            wall[name].append((time.perf_counter() - w) / n_batches)
    floor_ms = 1000 * min(cpu[FLOOR])
    floor_wall = 1000 * min(wall[FLOOR])
    results = {
        name: {
            "ms_per_batch_cpu": round(1000 * min(cpu[name]), 2),
            "ms_per_batch_wall": round(1000 * min(wall[name]), 2),
            "x_floor_cpu": round(1000 * min(cpu[name]) / floor_ms, 3),
            "x_floor_wall": round(1000 * min(wall[name]) / floor_wall, 3),
            "cpu_ms_all_rounds": [round(1000 * x, 2) for x in cpu[name]],
        }
        for name in fns
    }
    return {
        "family": family,
        "notes": notes,
        "batches": n_batches,
        "batch_size": size,
        "rounds": rounds,
        "tokens_per_row": round(sum(tokens) / len(tokens), 1),
        "images_per_batch": round(sum(images) / n_batches, 2),
        "results": results,
        "agreement": agreement,
    }


def summarize_agreement(w: dict[str, Any]) -> dict[str, Any]:
    rows = [r for a in w["agreement"] for r in a["rows"]]
    out: dict[str, Any] = {
        "same_input_ids": {n: all(a["same_input_ids"][n] for a in w["agreement"]) for n in w["agreement"][0]["same_input_ids"]},
        "same_pixel_values": {n: all(a["same_pixel_values"][n] for a in w["agreement"]) for n in w["agreement"][0]["same_pixel_values"]},
        "rows": len(rows),
    }
    for name in (OURS, UNSLOTH):
        if rows and name in rows[0]:
            out[name] = {"trained_tokens": sum(r[name]["trained"] for r in rows),
                         "stop_tokens_trained": sum(r[name]["stop_trained"] for r in rows)}
    out["stop_tokens_in_rows"] = sum(r["stop_tokens_in_row"] for r in rows)
    if rows and "same_labels" in rows[0]:
        out["rows_with_same_labels"] = sum(r["same_labels"] for r in rows)
        out["tokens_only_respmask_trains"] = sorted({t for r in rows for t in r["only_respmask"]})
        out["tokens_only_unsloth_trains"] = sorted({t for r in rows for t in r["only_unsloth"]})
    return out


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = [
        "# Vision and speech collators: respmask vs the processor alone vs Unsloth", "",
        f"Machine: {report['machine']}", f"Versions: {report['versions']}",
        f"Command: `python benchmarks/bench_vision.py {' '.join(report['argv'])}`", "",
        f"Batches of {s['batch_size']} rows (2 user turns of 15-40 words, a 5-20-word assistant reply after each, "
        f"0-2 images per row of 64-256 px per side); {s['batches']} batches, ms per batch = process CPU time "
        f"(all threads), minimum over {s['rounds']} interleaved rounds. Floor: `processor(text=rendered, "
        "images=nested, padding=True, return_tensors=\"pt\", add_special_tokens=False)` on texts rendered "
        "beforehand. Unsloth: `UnslothVisionDataCollator(tiny_model, processor, resize=\"max\", "
        "train_on_responses_only=True, instruction_part=..., response_part=...)`, rows = `messages` with "
        "`{\"type\": \"image\"}` parts + an `images` column (resize=\"max\": images kept as given). Speech "
        "families (qwen2_audio): 0-2 clips of 0.5-4 s per row instead of images (an `audios` column), floor "
        "`processor(text=rendered, audio=clips, sampling_rate=16000, ...)`, no Unsloth contender; their "
        "'images/batch' counts clips and 'pixel_values' compares `input_features`.", "",
        "| family | tokens/row | images/batch | (a) floor ms | (b) respmask ms | (c) Unsloth ms | (b)/(a) | (c)/(a) "
        "| (b)/(a) wall | (c)/(a) wall |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for w in report["families"]:
        res = w["results"]
        u = res.get(UNSLOTH)
        u_ms = f"{u['ms_per_batch_cpu']:.1f}" if u else "failed"
        u_x = f"{u['x_floor_cpu']:.2f}" if u else "n/a"
        u_xw = f"{u['x_floor_wall']:.2f}" if u else "n/a"
        lines.append(
            f"| {w['family']} | {w['tokens_per_row']} | {w['images_per_batch']} | {res[FLOOR]['ms_per_batch_cpu']:.1f} "
            f"| {res[OURS]['ms_per_batch_cpu']:.1f} | {u_ms} | {res[OURS]['x_floor_cpu']:.2f} | {u_x} "
            f"| {res[OURS]['x_floor_wall']:.2f} | {u_xw} |")
    lines += ["", "Processors (tests/support/vision.py `build_processor(family)`, non-tiny; gemma3@896: the same "
              "with the published gemma-3-*-it image size, 896 px, instead of the 224 px class default):", ""]
    lines += [f"- {w['family']}: {w['notes']['processor']}" for w in report["families"]]
    lines += ["", "## Labels: respmask vs Unsloth (all rows of all batches)", "",
              "| family | rows | same input_ids / pixel_values as floor | rows with identical labels | trained tokens "
              "respmask / Unsloth | stop tokens trained respmask / Unsloth / in rows | tokens only respmask trains "
              "| tokens only Unsloth trains |",
              "|---|---:|---|---:|---:|---:|---|---|"]
    for w in report["families"]:
        a = w["agreement_summary"]
        same = ", ".join(f"{n}: {'yes' if a['same_input_ids'][n] else 'NO'}/{'yes' if a['same_pixel_values'][n] else 'NO'}"
                         for n in a["same_input_ids"])
        if UNSLOTH in a:
            lines.append(f"| {w['family']} | {a['rows']} | {same} | {a['rows_with_same_labels']} | "
                         f"{a[OURS]['trained_tokens']} / {a[UNSLOTH]['trained_tokens']} | "
                         f"{a[OURS]['stop_tokens_trained']} / {a[UNSLOTH]['stop_tokens_trained']} / "
                         f"{a['stop_tokens_in_rows']} | {a['tokens_only_respmask_trains'] or '-'} | "
                         f"{a['tokens_only_unsloth_trains'] or '-'} |")
        else:
            lines.append(f"| {w['family']} | {a['rows']} | {same} | n/a | {a[OURS]['trained_tokens']} / n/a | "
                         f"{a[OURS]['stop_tokens_trained']} / n/a / {a['stop_tokens_in_rows']} | | |")
    lines += ["", "Per row, first batch (trained tokens respmask / Unsloth; stop tokens trained respmask / Unsloth):", ""]
    for w in report["families"]:
        cells = []
        for r in w["agreement"][0]["rows"]:
            u = r.get(UNSLOTH)
            cells.append(f"{r['images']}img {r['tokens']}tok: {r[OURS]['trained']}/{u['trained'] if u else 'n/a'}, "
                         f"stop {r[OURS]['stop_trained']}/{u['stop_trained'] if u else 'n/a'}")
        lines.append(f"- {w['family']}: " + "; ".join(cells))
    errors = [(w["family"], w["notes"]["unsloth_error"]) for w in report["families"] if "unsloth_error" in w["notes"]]
    if errors:
        lines += ["", "## Unsloth errors", ""] + [f"- {f}: `{e}`" for f, e in errors]
    cut = RESULTS / "vision_cut.md"  # long chats cut to max_length: bench_vision_cut.py's own run
    if cut.is_file() and any(w["family"] not in AUDIO_FAMILIES for w in report["families"]):
        table = [line for line in cut.read_text().splitlines() if line.startswith("|")]
        lines += ["", "## Long chats cut to max_length", "",
                  "From `python benchmarks/bench_vision_cut.py` (its own run; settings and processors in "
                  "results/vision_cut.md): batches of 8 chats of 6 user turns, 0.8 images per turn; `cut`: every "
                  "row cut, `mixed`: half the rows cut. The processor alone cannot truncate such rows without "
                  "cutting through an image, so its columns are its call on the whole rows and on the rows "
                  "respmask keeps.", "", *table]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--batches", type=int, default=4, help="distinct batches timed per round")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    root = shared_tokenizers()
    if root is None:
        print("needs the real tokenizers (RESPMASK_SHARED_TOKENIZERS)")
        return 2
    os.environ.setdefault("RESPMASK_SHARED_TOKENIZERS", str(root))
    import PIL
    import tokenizers
    import transformers

    versions = {"respmask": respmask.__version__, "transformers": transformers.__version__,
                "tokenizers": tokenizers.__version__, "torch": torch.__version__, "numpy": np.__version__,
                "pillow": PIL.__version__}
    try:
        import unsloth_zoo

        versions["unsloth_zoo"] = unsloth_zoo.__version__
    except Exception as exc:
        versions["unsloth_zoo"] = f"import failed: {type(exc).__name__}: {exc}"
    report: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
                    "torch_threads": torch.get_num_threads()},
        "versions": versions,
        "argv": sys.argv[1:],
        "settings": {"batch_size": args.batch_size, "batches": args.batches, "rounds": args.rounds},
        "families": [],
    }
    for family in args.families:
        print(f"[{family}] ...", flush=True)
        w = run_family(family, args.batches, args.batch_size, args.rounds)
        w["agreement_summary"] = summarize_agreement(w)
        report["families"].append(w)
        for name, r in w["results"].items():
            print(f"    {name}: {r['ms_per_batch_cpu']:.1f} ms/batch CPU ({r['x_floor_cpu']:.2f}x floor)", flush=True)
        if "unsloth_error" in w["notes"]:
            print(f"    Unsloth failed: {w['notes']['unsloth_error']}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "speech" if set(args.families) <= AUDIO_FAMILIES else "vision"  # a speech-only run keeps vision.*
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2))
    md = markdown(report)
    (out / f"{stem}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
