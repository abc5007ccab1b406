"""A cut batch's images are processed once, whatever the cut drops (issue 28: the cost of cutting
long image chats).

The processor runs twice on a batch holding a row to cut (as is, then on the cut texts and the
images kept). Where the processor's batch is the same with its image processor working on one image
at a time and the outputs joined (learned on a probe: ``images_join``), each image is processed
once (the batch's images in one call, split per image) and the second call joins the outputs of the
images kept; elsewhere (images padded to the batch, or nested per row) the first call's output is
given back when the second is given the very same images. Reference: the processor's own call on the kept texts and images
(tests/test_vision_truncation.py's ``kept_text`` reads the kept text back from the ids), every
output key equal; and the image processor's calls, counted.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("PIL")

import respmask  # noqa: E402
from support.vision import build_processor, make_image  # noqa: E402
from respmask._media_cut import images_join, learn_cut  # noqa: E402
from test_vision_truncation import kept_text, qwen_ids  # noqa: E402


class Counting:
    """An image processor that counts its calls (everything else is the real one's)."""

    def __init__(self, real):
        self.real, self.calls = real, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.real(*args, **kwargs)

    def __getattr__(self, name):
        if name.startswith("__") or name == "real":
            raise AttributeError(name)
        return getattr(self.real, name)


def chat(i: int, images_at: tuple[int, ...], turns: int = 4) -> dict:
    """``turns`` exchanges; an image in the user turns listed in ``images_at``."""
    messages = []
    for t in range(turns):
        image = make_image(64 + 16 * t, 48 + 8 * i, seed=10 * i + t)
        parts = [{"type": "image", "image": image}] if t in images_at else []
        messages += [
            {"role": "user", "content": parts + [{"type": "text", "text": f"Question {t} of chat {i}: what now?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": f"Answer {t}: " + "the sky is blue. " * 4}]},
        ]
    return {"messages": messages}


def images_in(row):
    return [p["image"] for m in row["messages"] for p in m["content"] if p.get("type") == "image"]


@pytest.fixture()
def processor():
    import copy

    p = copy.deepcopy(build_processor("qwen2_vl"))  # its image processor is swapped for a counting one
    p.image_processor = Counting(p.image_processor)
    return p


def collate(processor, rows, max_length):
    collator = respmask.ResponseOnlyCollator(processor, max_length=max_length, return_tensors="np")
    collator.masker.media_tokens()  # the masker's one-off probes of the processor (images processed), done
    images_join(collator.masker)
    learn_cut(collator.masker, "np")
    processor.image_processor.calls = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", respmask.RespmaskWarning)
        return collator, collator(rows)


def reference(processor, batch, rows):
    """The processor alone on the texts and images the batch kept."""
    start, _, _ = qwen_ids(processor)
    ids, real = batch["input_ids"], batch["attention_mask"].astype(bool)
    texts, images = [], []
    for r, row in enumerate(rows):
        kept = ids[r][real[r]]
        texts.append(kept_text(processor, kept))
        images.append(images_in(row)[:int((kept == start).sum())])  # truncation="right": the first ones
    return processor(text=texts, images=images if any(images) else None, padding=True, return_tensors="np",
                     add_special_tokens=False)


def full_lengths(processor, rows):
    _, batch = collate(processor, rows, None)
    return batch["attention_mask"].sum(1)


@pytest.mark.parametrize("drop", [False, True])
def test_cut_batch_equals_the_processor_on_what_it_kept(processor, drop):
    # images in the first turns only: a cut in the last turns drops text alone, a cut in the first
    # turns drops images; either way the images are processed once, in one call split per image
    # (Qwen2-VL's image outputs join per image), and the second call joins the outputs of the images kept
    rows = [chat(i, (0, 1)) for i in range(3)]
    lengths = full_lengths(processor, rows)
    max_length = int(lengths.min()) // (4 if drop else 1) - 3  # every row cut
    counter = processor.image_processor
    collator, batch = collate(processor, rows, max_length)
    assert collator.stats.truncated == 3 and (collator.stats.images_dropped > 0) == drop
    assert counter.calls == 1 and sum(len(images_in(row)) for row in rows) == 6  # six images, one call
    ref = reference(processor, batch, rows)
    assert set(ref) <= set(batch)
    for key in ref:
        assert np.array_equal(np.asarray(batch[key]), np.asarray(ref[key])), key
    assert processor.image_processor is counter  # the stand-in is gone after the batch


def test_the_image_processor_is_given_back_when_the_processor_raises(processor):
    counter = processor.image_processor
    rows = [chat(0, (0, 1))]
    rows[0]["images"] = [make_image(32, 32)]  # an 'images' column that does not pair up with two image parts
    with pytest.raises(respmask.RespmaskError):
        collate(processor, rows, 10)
    assert processor.image_processor is counter


@pytest.mark.parametrize("name, joins", [("qwen2_vl", True), ("gemma3", True), ("llava", True),
                                         ("mistral3", False), ("idefics3", False)])
def test_which_processors_images_join_is_learned_from_their_outputs(name, joins):
    # Pixtral's image processor pads the batch's images to the largest, Idefics3's nests them per
    # row: their batch is not the join of single images, so a cut batch processes its images again
    masker = respmask.ChatMasker(build_processor(name))
    assert images_join(masker) is joins


def test_a_processor_whose_images_do_not_join_still_processes_them_once_when_none_is_dropped():
    import copy

    processor = copy.deepcopy(build_processor("mistral3"))
    processor.image_processor = Counting(processor.image_processor)
    rows = [chat(i, (0, 1)) for i in range(2)]
    max_length = int(full_lengths(processor, rows).min()) - 3  # the last turn's text cut, no image
    collator, batch = collate(processor, rows, max_length)
    assert collator.stats.truncated == 2 and collator.stats.images_dropped == 0
    assert processor.image_processor.calls == 1  # the first call's output given back
