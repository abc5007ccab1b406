"""A cut batch's images in one image-processor call, split per image (issue 28: respmask within 1.3x
of the processor alone).

Where a processor's image outputs join per image (``images_join``), a cut batch reads each image's
own output (the second call joins those of the images kept). Those outputs are had from one call
of the real image processor on all the batch's images, split per image: one row per image, or, for
an output whose rows are pieces of images (Qwen2-VL's patches), as many rows as the product of the
image's row of another output (its grid), learned once from a probe and checked on every batch.
References: each image's own call (every split part equal to it, type, dtype, shape and bytes),
the batch made with each image processed alone (``_Split.learn`` turned off), and the image
processor's calls, counted; image processors whose batch the split does not explain (images padded
to the batch, a batch with a row more) fall back to one call per image, with the same outputs.
"""

from __future__ import annotations

import copy
import hashlib
import random
import warnings

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("PIL")

import respmask  # noqa: E402
from respmask import _media_cut  # noqa: E402
from respmask._media_cut import _identical, _PerImage, _Split, fit_batch  # noqa: E402
from support.vision import build_processor, make_image  # noqa: E402


class Counting:
    """An image processor that counts its calls and the images each was given (everything else is
    the real one's)."""

    def __init__(self, real):
        self.real, self.calls = real, []

    def __call__(self, images, *args, **kwargs):
        self.calls.append(len(images))
        return self.real(images, *args, **kwargs)

    def __getattr__(self, name):
        if name.startswith("__") or name in ("real", "calls"):
            raise AttributeError(name)
        return getattr(self.real, name)


def images(rng: random.Random, n: int, seed: int) -> list:
    """``n`` noise images of random sizes (different grids, some the same size)."""
    return [make_image(rng.randint(20, 160), rng.randint(20, 160), seed + i) for i in range(n)]


@pytest.mark.parametrize("name", ["qwen2_vl", "qwen3_vl", "gemma3", "llava"])
@pytest.mark.parametrize("return_tensors", ["np", "pt"])
def test_one_call_split_per_image_is_each_images_own_call(name, return_tensors):
    real = Counting(build_processor(name).image_processor)
    kwargs = {"return_tensors": return_tensors}
    assert _Split.learn(real, (), kwargs) is not None
    rng = random.Random(len(name))
    pics = images(rng, 7, 50)
    batched = _PerImage(real, {})
    alone = _PerImage(real)
    batched.prepare(pics, (), kwargs)  # learns the split (the probe), then one call on the 7 images
    real.calls.clear()
    got = [batched.output(p, (), kwargs) for p in pics]
    assert real.calls == []  # every output was had by the one call
    want = [real([p], **kwargs) for p in pics]
    assert all(_identical(g, w) for g, w in zip(got, want))
    # and a processor call's join: the same bytes as the join of single calls, for the very images of
    # the one call (its output, not joined again) and for some of them
    real.calls.clear()
    assert _identical(batched([pics[:3], pics[3:]], **kwargs), alone([pics[:3], pics[3:]], **kwargs))
    assert _identical(batched([pics[5:], pics[1:3]], **kwargs), alone([pics[5:], pics[1:3]], **kwargs))
    assert real.calls == [1] * 7  # the per-image stand-in's calls; the batched one had them all
    first = batched(pics, **kwargs)
    first.pop("pixel_values")  # as a processor may take keys out of what it gets: the next call has them
    assert _identical(batched(pics, **kwargs), alone(pics, **kwargs))


def test_the_rows_per_image_are_learned_from_the_outputs():
    # Qwen2-VL's pixel_values are patches: each image's as many as its grid's t*h*w; Gemma 3's are one
    # image each (num_crops too)
    qwen = _Split.learn(build_processor("qwen2_vl").image_processor, (), {"return_tensors": "np"})
    assert dict(zip(qwen.keys, qwen.lengths)) == {"pixel_values": ("image_grid_thw", 0), "image_grid_thw": None}
    gemma = _Split.learn(build_processor("gemma3").image_processor, (), {"return_tensors": "np"})
    assert set(gemma.lengths) == {None}


class Padding:
    """Pads a call's pixel_values to the batch's most patches (as Pixtral pads images to the largest):
    a batch is not the join of its images' own calls."""

    def __init__(self, real):
        self.real = real

    def __call__(self, images, *args, **kwargs):
        out = self.real(images, *args, **kwargs)
        grid = out["image_grid_thw"]
        most = int(grid.prod(axis=1).max())
        out["pixel_values"] = np.concatenate([out["pixel_values"], np.zeros((most, out["pixel_values"].shape[1]),
                                                                            out["pixel_values"].dtype)])
        return out


class OddBatch:
    """The real image processor, but a batch holding an image of width 33 gets one row of patches
    more, and one holding an image of width 34 raises: batches the learned split does not explain."""

    def __init__(self, real):
        self.real, self.calls = real, []

    def __call__(self, images, *args, **kwargs):
        self.calls.append(len(images))
        widths = {image.size[0] for image in images}
        if len(images) > 1 and 34 in widths:
            raise ValueError("no such batch")
        out = self.real(images, *args, **kwargs)
        if len(images) > 1 and 33 in widths:
            out["pixel_values"] = np.concatenate([out["pixel_values"], out["pixel_values"][:1]])
        return out


def test_an_image_processor_whose_batch_is_not_its_images_joined_is_called_per_image():
    real = Counting(Padding(build_processor("qwen2_vl").image_processor))
    kwargs = {"return_tensors": "np"}
    stand_in = _PerImage(real, {})
    pics = images(random.Random(3), 4, 70)
    stand_in.prepare(pics, (), kwargs)
    assert stand_in._splits == {_PerImage.how((), kwargs): None}  # learned: no split
    real.calls.clear()
    stand_in.prepare(pics[:2] + images(random.Random(4), 2, 90), (), kwargs)  # no call: none is made in one
    got = [stand_in.output(p, (), kwargs) for p in pics]
    assert real.calls == [1, 1, 1, 1]
    assert all(_identical(g, real([p], **kwargs)) for g, p in zip(got, pics))


@pytest.mark.parametrize("width", [33, 34])
def test_a_batch_the_split_does_not_explain_is_processed_per_image(width):
    real = OddBatch(build_processor("qwen2_vl").image_processor)
    kwargs = {"return_tensors": "np"}
    assert _Split.learn(real, (), kwargs) is not None  # the probe's images are explained
    stand_in = _PerImage(real, {})
    pics = images(random.Random(4), 3, 80) + [make_image(width, 60, 99)]
    stand_in.prepare(pics[:2], (), kwargs)  # learned, and a batch it explains: one call
    real.calls.clear()
    stand_in.prepare(pics, (), kwargs)  # the two left, with the odd one: the call's rows do not add up / it raises
    got = [stand_in.output(p, (), kwargs) for p in pics]
    assert real.calls == [2, 1, 1]  # the batched call, then each of the two alone
    assert all(_identical(g, real.real([p], **kwargs)) for g, p in zip(got, pics))


WORDS = ["the", "a", "cat", "sky", "blue", "picture", "shows", "near", "water", ".", ",", "\n", "  "]


def chat(rng: random.Random, seed: int) -> dict:
    messages = []
    for t in range(rng.randint(2, 4)):
        parts = [{"type": "image", "image": make_image(rng.randint(28, 120), rng.randint(28, 120), seed * 10 + t)}
                 for _ in range(rng.choice([0, 1, 1, 2]))]
        text = {"type": "text", "text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 16)))}
        parts = parts + [text] if rng.random() < 0.5 else [text] + parts
        messages += [{"role": "user", "content": parts},
                     {"role": "assistant", "content": [{"type": "text", "text": " ".join(
                         rng.choice(WORDS) for _ in range(rng.randint(2, 12)))}]}]
    return {"messages": messages}


def digest(result):
    """Everything fit_batch returns, comparable (arrays and tensors by type, dtype, shape and bytes)."""
    def one(value):
        if hasattr(value, "numpy"):
            return ("tensor", one(value.numpy()))
        if isinstance(value, np.ndarray):
            return str(value.dtype), value.shape, hashlib.sha1(np.ascontiguousarray(value).tobytes()).hexdigest()
        return value
    batch, full, fits = result
    return (None if batch is None else {k: one(v) for k, v in batch.items()},
            [(one(e.input_ids), one(e.labels), e.text) for e in full],
            [(None if f.input_ids is None else one(f.input_ids), None if f.labels is None else one(f.labels),
              f.truncated, f.images_dropped, f.left_out) for f in fits])


@pytest.mark.parametrize("name, n_batches", [("qwen2_vl", 2), ("gemma3", 1)])  # (Gemma 3's images are large)
def test_cut_batches_are_the_batches_made_with_each_image_alone(name, n_batches, monkeypatch):
    processor = copy.copy(build_processor(name))  # its image processor swapped for a counting one (tokenizer shared)
    counter = processor.image_processor = Counting(processor.image_processor)
    batched, alone = respmask.ChatMasker(processor), respmask.ChatMasker(processor)
    rng = random.Random(28)
    compared = 0
    for b in range(n_batches):
        rows = [chat(rng, 100 * b + i) for i in range(rng.randint(2, 4))]
        n_images = sum(p.get("type") == "image" for row in rows for m in row["messages"] for p in m["content"])
        _, full, _ = fit_batch(batched, rows, list(range(len(rows))), None, "right", "truncate", "np")
        lengths = sorted(len(e.input_ids) for e in full)
        for max_length in (lengths[0] // 2, lengths[len(lengths) // 2]):
            for side in ("right", "left"):
                return_tensors = rng.choice(["np", "pt"])
                args = (list(range(len(rows))), max_length, side, "truncate", return_tensors)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fit_batch(batched, rows, *args)  # the one-off probes (split, windows) done
                    counter.calls.clear()
                    got = fit_batch(batched, rows, *args)
                    assert counter.calls == ([n_images] if n_images else [])  # the batch's images in one call
                    with monkeypatch.context() as m:
                        m.setattr(_media_cut._Split, "learn", staticmethod(lambda *a, **k: None))
                        want = fit_batch(alone, rows, *args)
                assert digest(got) == digest(want), (b, max_length, side, return_tensors)
                compared += 1
    assert compared == 4 * n_batches
