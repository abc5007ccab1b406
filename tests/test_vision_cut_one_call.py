"""A cut batch with one processor call (issue 28: respmask within 1.3x of the processor alone).

Where a processor's image outputs join per image, the cut is planned from the text before any
processor call: each image is processed first, what the call makes of the few text tokens around
an image is learned from the processor's own call on that window, the whole rows' ids are
predicted from that, and the processor runs once, on the cut rows; its ids are checked against
the prediction and any difference makes the batch with two calls (the processor on the whole rows,
then on the cut ones). References: the two-call path itself (``_two_calls``, every output
compared byte for byte on random cut batches of two families, right and left, on_image_cut
"truncate" and "drop", NumPy and PyTorch), difflib's matcher for the alignment's shortcut, and
the processor's calls, counted.
"""

from __future__ import annotations

import hashlib
import random
import warnings

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("PIL")

import respmask  # noqa: E402
from respmask import _media_cut  # noqa: E402
from respmask._media import align  # noqa: E402
from respmask._media_cut import _one_call, _PerImage, _splices, _two_calls, learn_cut  # noqa: E402
from support.vision import build_processor, make_image  # noqa: E402

WORDS = ["the", "a", "cat", "sky", "blue", "picture", "shows", "near", "water", ".", ",", "?", "\n", "\n\n", "  "]


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def chat(rng: random.Random, seed: int) -> dict:
    """2-4 exchanges; 0-2 images per user turn, before or after its text, sometimes two in a row,
    of sizes that give different image outputs; texts with newlines and runs of spaces."""
    messages = []
    for t in range(rng.randint(2, 4)):
        parts = []
        for j in range(rng.choice([0, 1, 1, 2])):
            if parts and rng.random() < 0.3:
                parts.append({"type": "text", "text": words(rng, rng.randint(1, 5))})
            parts.append({"type": "image", "image": make_image(rng.randint(28, 120), rng.randint(28, 120),
                                                               seed * 100 + 10 * t + j)})
        text = {"type": "text", "text": words(rng, rng.randint(2, 20))}
        parts = parts + [text] if rng.random() < 0.5 else [text] + parts
        messages += [{"role": "user", "content": parts},
                     {"role": "assistant", "content": [{"type": "text", "text": words(rng, rng.randint(2, 16))}]}]
    return {"messages": messages}


def digest(value):
    """A value's bytes, dtype and shape (arrays, tensors), or the value."""
    if hasattr(value, "numpy"):
        value = value.numpy()
    if isinstance(value, np.ndarray):
        return str(value.dtype), value.shape, hashlib.sha1(np.ascontiguousarray(value).tobytes()).hexdigest()
    if isinstance(value, list):
        return [digest(v) for v in value]
    return value


def outputs(result):
    """Everything fit_batch returns, comparable: the batch (each key, its type and bytes), each
    sample's uncut row (ids, labels and its other fields) and each Fit."""
    batch, full, fits = result
    return (None if batch is None else {k: (type(v).__name__, digest(v)) for k, v in batch.items()},
            [(digest(e.input_ids), digest(e.labels), e.text, e.n_turns, e.sample, e.row) for e in full],
            [(None if f.input_ids is None else digest(f.input_ids), None if f.labels is None else digest(f.labels),
              f.truncated, f.images_dropped, f.left_out) for f in fits])


def run(path, masker, rows, max_length, side, on_image_cut, return_tensors):
    """One path of fit_batch, with the image processor wrapped as fit_batch wraps it."""
    processor = masker.processor
    real = processor.image_processor
    processor.image_processor = _PerImage(real, _splices(masker).splits)
    try:
        inputs = masker._media_inputs(rows, list(range(len(rows))))
        return path(masker, inputs, list(range(len(rows))), max_length, side, on_image_cut, return_tensors)
    finally:
        processor.image_processor = real


@pytest.fixture(scope="module", params=["qwen2_vl", "gemma3"])
def masker(request):
    masker = respmask.ChatMasker(build_processor(request.param))
    assert learn_cut(masker, "np") and learn_cut(masker, "pt")  # both families take the one-call path
    return masker


def test_one_call_makes_the_two_call_batch_on_random_cut_batches(masker):
    rng = random.Random(28)
    compared = 0
    for b in range(4):
        rows = [chat(rng, 100 * b + i) for i in range(rng.randint(1, 4))]
        _, full, _ = run(_two_calls, masker, rows, None, "right", "truncate", "np")
        lengths = sorted(len(e.input_ids) for e in full)
        for max_length in sorted({max(8, lengths[0] // 3), lengths[0] * 2 // 3, lengths[-1] - 2}):
            for side in ("right", "left"):
                for on_image_cut in ("truncate", "drop"):
                    return_tensors = rng.choice(["np", "pt"])
                    args = (masker, rows, max_length, side, on_image_cut, return_tensors)
                    one = run(_one_call, *args)
                    assert one is not None, args[2:]  # the one-call path made this batch
                    assert outputs(one) == outputs(run(_two_calls, *args)), args[2:]
                    compared += 1
    assert compared >= 40


def test_a_cut_batch_calls_the_processor_once(masker):
    rng = random.Random(5)
    rows = [chat(rng, 900 + i) for i in range(3)]
    collator = respmask.ResponseOnlyCollator(masker, max_length=40, return_tensors="np")
    calls = []
    real = masker._run_processor
    masker._run_processor = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", respmask.RespmaskWarning)
            collator(rows)  # learns the windows of these images (the processor on small windows)
            calls.clear()
            batch = collator(rows)
    finally:
        del masker._run_processor
    assert collator.stats.truncated == 6 and np.asarray(batch["attention_mask"]).sum(1).max() <= 40
    assert len(calls) == 1


def test_a_wrong_prediction_falls_back_to_two_calls(masker, monkeypatch):
    rng = random.Random(11)
    rows = [chat(rng, 700 + i) for i in range(3)]
    for i, row in enumerate(rows):  # an image in each first turn: the rows cut near their end keep images
        row["messages"][0]["content"].insert(0, {"type": "image", "image": make_image(40 + 8 * i, 56, i)})
    _, full, _ = run(_two_calls, masker, rows, None, "right", "truncate", "np")
    args = (masker, rows, min(len(e.input_ids) for e in full) - 5, "right", "truncate", "np")
    assert run(_one_call, *args) is not None
    # what the processor makes of each window, learned, now one id short: the prediction of every row
    # holding an image is wrong, and the final call's ids say so
    known = _splices(masker).known
    saved = dict(known)
    try:
        for key, got in known.items():
            if got is not None and len(got[2]):
                p, s, values, lengths = got
                known[key] = (p, s, values, np.concatenate([lengths[:-1], [lengths[-1] - 1]]))
        assert run(_one_call, *args) is None  # the processor's ids are not the prediction: no batch
        two = []
        monkeypatch.setattr(_media_cut, "_two_calls", lambda *a, **k: two.append(1) or _two_calls(*a, **k))
        processor = masker.processor
        real = processor.image_processor
        result = _media_cut.fit_batch(*args[:2], [0, 1, 2], *args[2:])
        assert two == [1] and processor.image_processor is real
        monkeypatch.undo()
        assert outputs(result) == outputs(run(_two_calls, *args))
    finally:
        known.clear()
        known.update(saved)


def test_a_processor_whose_outputs_do_not_join_takes_two_calls():
    masker = respmask.ChatMasker(build_processor("mistral3"))  # Pixtral pads images to the batch
    assert not learn_cut(masker, "np")


@pytest.fixture()
def shortcut(monkeypatch):
    """Whether align's shortcut answered, call by call."""
    from respmask import _media

    original, taken = _media._runs_in_place, []

    def spy(*args):
        taken.append(original(*args))
        return taken[-1]

    monkeypatch.setattr(_media, "_runs_in_place", spy)
    return taken


def test_the_alignment_shortcut_is_difflibs_answer(shortcut):
    rng = np.random.default_rng(28)
    for _ in range(6000):
        vocab = int(rng.integers(2, 6))
        a = rng.integers(0, vocab, size=int(rng.integers(0, 25))).tolist()
        b = list(a)
        for _ in range(int(rng.integers(0, 5))):  # deletions, insertions, runs made longer on either side
            op = int(rng.integers(0, 4))
            if op == 0 and b:
                del b[int(rng.integers(0, len(b)))]
            elif op == 1:
                b.insert(int(rng.integers(0, len(b) + 1)), int(rng.integers(0, vocab + 2)))
            elif op == 2 and b:
                k = int(rng.integers(0, len(b)))
                b[k:k] = [b[k]] * int(rng.integers(1, 4))
            elif op == 3 and a:
                k = int(rng.integers(0, len(a)))
                a[k:k] = [a[k]] * int(rng.integers(1, 3))
        a_ids, b_ids = np.array(a, dtype=np.int64), np.array(b, dtype=np.int64)
        assert np.array_equal(align(a_ids, b_ids), align(a_ids, b_ids, slow=True)), (a, b)
    assert sum(shortcut) > 1000 and len(shortcut) - sum(shortcut) > 1000  # both ways taken, many times


def test_the_shortcuts_membership_is_numpys():
    from respmask._media import _member

    rng = np.random.default_rng(5)
    for _ in range(3000):
        high = int(rng.choice([3, 50, 1 << 40]))  # many repeats, few, and keys as large as (token << 32) + run
        x = rng.integers(0, high, size=int(rng.integers(0, 40)), dtype=np.int64)
        y = rng.integers(0, high, size=int(rng.integers(0, 40)), dtype=np.int64)
        if len(x) and len(y) and rng.random() < 0.5:
            y[: len(y) // 2] = rng.choice(x, size=len(y) // 2)  # shared keys
        got = _member(x, y)
        assert got.dtype == bool and np.array_equal(got, np.isin(x, y)), (x, y)


def test_the_alignment_shortcut_on_a_processors_rows(shortcut):
    masker = respmask.ChatMasker(build_processor("qwen2_vl"))
    rng = random.Random(3)
    rows = [chat(rng, 300 + i) for i in range(4)]
    batch, _ = masker.process_batch(rows, return_tensors="np")
    real = batch["attention_mask"].astype(bool)
    with_images = 0
    for r, enc in enumerate(masker._media_inputs(rows)[0]):
        b = batch["input_ids"][r][real[r]].astype(np.int64)
        assert np.array_equal(align(enc.input_ids, b), align(enc.input_ids, b, slow=True))
        assert (align(enc.input_ids, b) >= 0).sum() > 0.9 * len(enc.input_ids)
        with_images += len(b) > len(enc.input_ids)
    # each image's placeholder against its expansion: the shortcut answers every time the matcher is
    # needed (a row with one image or none needs none: equal ends are matched directly)
    assert with_images >= 2 and shortcut and all(shortcut)
