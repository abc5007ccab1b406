"""Cut image batches compared byte for byte between two versions of respmask (issue 28).

For each family, random batches of 1-4 chats (2-5 exchanges, 0-2 images per user turn before or
after its text, sometimes two in a row, texts with newlines and runs of spaces, an optional system
message), cut at 4 levels (30% and 70% of the shortest row, the median row, the longest row minus 3),
right and left, ``on_image_cut`` truncate and drop, NumPy or PyTorch outputs: every key of the batch
``fit_batch`` returns (type and bytes), each sample's uncut row (ids, labels, text), each ``Fit``
(ids, labels, truncated, images dropped, why left out), and the collator's output, stats and
warnings, hashed.

    python scripts/cut_identity.py save BASE.pkl [FAMILIES] [BATCHES]     # at the old version
    python scripts/cut_identity.py compare BASE.pkl [FAMILIES] [BATCHES]  # at the new one

FAMILIES: comma-separated (default qwen2_vl,gemma3,llava,mistral3,qwen3_vl; the speech families of
tests/support/audio.py too: qwen2_audio, qwen2_audio_2024, gemma3n, audioflamingo3, whose chats hold
0-2 clips of 0.3-2.5 s per user turn instead of images, one per row with Audio Flamingo 3, and with
Gemma 3n an image in some turns); BATCHES per family (default 4). Needs the shared tokenizers
(tests/support/vision.py). Exit status 1 when any case differs.
"""
import hashlib
import pickle
import random
import sys
import warnings
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import numpy as np
import respmask
from support import audio as speech
from support.vision import build_processor, make_image
from respmask._media_cut import fit_batch

FAMS = sys.argv[3].split(",") if len(sys.argv) > 3 else ["qwen2_vl", "gemma3", "llava", "mistral3", "qwen3_vl"]
WORDS = "the a cat dog sky blue red image picture shows sits near water tree house car runs quickly . , ? ! \n".split(" ")

def text(rng, n):
    return " ".join(rng.choice(WORDS + ["\n", "\n\n", "  "]) for _ in range(n))

def row(rng, seed):
    msgs = []
    if rng.random() < 0.3:
        msgs.append({"role": "system", "content": [{"type": "text", "text": text(rng, rng.randint(3, 12))}]})
    for t in range(rng.randint(2, 5)):
        parts = []
        k = rng.choice([0, 1, 1, 1, 2])
        for j in range(k):
            img = {"type": "image", "image": make_image(rng.randint(28, 140), rng.randint(28, 140), seed * 100 + t * 10 + j)}
            if rng.random() < 0.3 and parts:
                parts.append({"type": "text", "text": text(rng, rng.randint(1, 6))})
            parts.append(img)
        close_turn(rng, msgs, parts)
    return {"messages": msgs}

def close_turn(rng, msgs, parts):
    """The user turn's text (after or before its media parts) and a reply (the same random draws
    for both kinds of rows)."""
    if rng.random() < 0.5:
        parts.append({"type": "text", "text": text(rng, rng.randint(2, 25))})
    else:
        parts.insert(0, {"type": "text", "text": text(rng, rng.randint(2, 25))})
    msgs.append({"role": "user", "content": parts})
    msgs.append({"role": "assistant", "content": [{"type": "text", "text": text(rng, rng.randint(2, 20))}]})

def audio_row(rng, seed, fam):
    """As row(), with audio clips for images (Gemma 3n: an image after the clips in some turns)."""
    msgs = []
    if rng.random() < 0.3:
        msgs.append({"role": "system", "content": [{"type": "text", "text": text(rng, rng.randint(3, 12))}]})
    turns = rng.randint(2, 5)
    only = rng.randrange(turns)  # Audio Flamingo 3 takes one clip per row
    for t in range(turns):
        parts = []
        k = rng.choice([0, 1, 1, 1, 2]) if fam != "audioflamingo3" else int(t == only)
        for j in range(k):
            if rng.random() < 0.3 and parts:
                parts.append({"type": "text", "text": text(rng, rng.randint(1, 6))})
            parts.append({"type": "audio", "audio": speech.make_audio(rng.uniform(0.3, 2.5), seed * 100 + t * 10 + j)})
        if fam == "gemma3n" and rng.random() < 0.4:
            parts += [{"type": "text", "text": text(rng, rng.randint(1, 6))},
                      {"type": "image", "image": make_image(rng.randint(28, 140), rng.randint(28, 140), seed * 100 + t)}]
        close_turn(rng, msgs, parts)
    return {"messages": msgs}

def digest(v):
    if hasattr(v, "numpy"):
        v = v.numpy()
    if isinstance(v, np.ndarray):
        return ("arr", str(v.dtype), v.shape, hashlib.sha1(np.ascontiguousarray(v).tobytes()).hexdigest())
    if isinstance(v, list):
        return ("list", tuple(digest(x) for x in v))
    return ("obj", repr(v))

def run(fam, masker, rows, ml, side, oic, rt):
    out = {}
    try:
        batch, full, fits = fit_batch(masker, rows, list(range(len(rows))), ml, side, oic, rt)
    except Exception as e:  # noqa
        return ("error", type(e).__name__, str(e))
    out["batch"] = None if batch is None else {k: (type(v).__name__, digest(v)) for k, v in batch.items()}
    out["full"] = [(digest(e.input_ids), digest(e.labels), e.text, e.sample, e.row) for e in full]
    out["fits"] = [(None if f.input_ids is None else digest(f.input_ids), None if f.labels is None else digest(f.labels),
                    f.truncated, f.images_dropped, f.left_out) for f in fits]
    col = respmask.ResponseOnlyCollator(masker, max_length=ml, truncation=side, on_image_cut=oic, return_tensors=rt,
                                        on_untrainable="keep")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            b2 = col(rows)
            out["collated"] = {k: digest(v) for k, v in b2.items()}
        except Exception as e:
            out["collated"] = ("error", type(e).__name__, str(e))
    out["warnings"] = [str(w.message) for w in caught]
    out["stats"] = repr(col.stats)
    return out

def cases():
    for fam in FAMS:
        audio = fam in speech.FAMILIES
        p = speech.build_processor(fam) if audio else build_processor(fam)
        masker = respmask.ChatMasker(p)
        rng = random.Random(sum(map(ord, fam)))
        for b in range(int(sys.argv[4]) if len(sys.argv) > 4 else 4):
            rows = [audio_row(rng, 1000 * b + i, fam) if audio else row(rng, 1000 * b + i)
                    for i in range(rng.randint(1, 4))]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                bt, full, _ = fit_batch(masker, rows, list(range(len(rows))), None, "right", "truncate", "np")
            lens = sorted(len(e.input_ids) for e in full)
            levels = sorted({max(8, int(lens[0] * 0.3)), max(8, int(lens[0] * 0.7)), lens[len(lens) // 2], max(8, lens[-1] - 3)})
            for ml in levels:
                for side in ("right", "left"):
                    for oic in ("truncate", "drop"):
                        rt = "pt" if rng.random() < 0.4 else "np"
                        key = (fam, b, ml, side, oic, rt)
                        yield key, run(fam, masker, rows, ml, side, oic, rt)

if __name__ == "__main__":
    mode, path = sys.argv[1], sys.argv[2]
    res = {}
    for key, out in cases():
        res[key] = out
    if mode == "save":
        pickle.dump(res, open(path, "wb"))
        n_cut = sum(1 for v in res.values() if isinstance(v, dict) and any(f[2] for f in v["fits"]))
        n_err = sum(1 for v in res.values() if not isinstance(v, dict))
        print(f"saved {len(res)} cases, {n_cut} with a cut row, {n_err} errors")
    else:
        base = pickle.load(open(path, "rb"))
        bad = [k for k in res if res[k] != base.get(k)]
        n_cut = sum(1 for v in res.values() if isinstance(v, dict) and any(f[2] for f in v["fits"]))
        print(f"compared {len(res)} cases ({n_cut} with a cut row): {len(bad)} differ")
        for k in bad[:10]:
            print("DIFF", k)
            a, b = res[k], base.get(k)
            if isinstance(a, dict) and isinstance(b, dict):
                for f in a:
                    if a[f] != b.get(f):
                        print("  field", f, str(a[f])[:300], "\n  base ", str(b.get(f))[:300])
            else:
                print("  ", str(a)[:300], "\n   base", str(b)[:300])
        sys.exit(1 if bad else 0)
