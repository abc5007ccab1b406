"""Long chats with images cut to max_length (issue 28 item 1): the rendered text is cut, never an
image's tokens; the images whose tokens would fall (even partly) past the cut are dropped and the
processor runs again on what is kept.

References: the processor's own call on the kept text and the kept images (the kept text read back
from the ids, each image's run of <|image_pad|> collapsed to the one placeholder the template
writes, and found as a prefix / suffix of the processor's own rendered text); the uncut row's ids,
images and labels; the image tokens of each processor class (tests/support/vision.py).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("PIL")
pytest.importorskip("torch")

import respmask  # noqa: E402
from respmask._errors import SampleError  # noqa: E402
from support.batches import collate_rows, real_rows  # noqa: E402
from support.vision import FAMILIES, build_processor, image_token_ids, make_image  # noqa: E402


def _text(t: str) -> dict:
    return {"type": "text", "text": t}


def long_chat(n: int = 3) -> list[dict]:
    """``n`` exchanges, one image (of a different size each) in each user turn."""
    sizes = [(64, 64), (96, 128), (128, 80), (80, 96)]
    messages = [{"role": "system", "content": [_text("Describe pictures in a few words.")]}]
    for i in range(n):
        messages += [
            {"role": "user", "content": [{"type": "image", "image": make_image(*sizes[i % 4], seed=i)},
                                         _text(f"What is in picture number {i}?")]},
            {"role": "assistant", "content": [_text(f"Picture {i} shows a {['cat', 'dog', 'bird', 'fish'][i % 4]} "
                                                    "sitting quietly in the warm afternoon sun.")]},
        ]
    return messages


def images_of(messages):
    return [p["image"] for m in messages if isinstance(m["content"], list) for p in m["content"]
            if p.get("type") == "image"]


def reference(processor, messages):
    """The processor's own rendered text, ids and labels-free row for the whole chat."""
    text = processor.apply_chat_template(messages, tokenize=False)
    ids = np.asarray(processor.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]).reshape(-1)
    return text, ids


@functools.lru_cache(maxsize=None)
def masker(processor):
    """One masker per processor: what it learns from the template is learned once for all the tests."""
    return respmask.ChatMasker(processor)


def collate(processor, rows, **kw):
    return collate_rows(masker(processor), rows, **kw)


def image_blocks(ids, start_id, end_id):
    """(start, end) of each image's tokens in the ids: from its start marker through its end marker."""
    starts, ends = np.flatnonzero(ids == start_id), np.flatnonzero(ids == end_id) + 1
    assert len(starts) == len(ends) and (starts < ends).all()
    return list(zip(starts.tolist(), ends.tolist()))


@pytest.fixture(scope="module")
def qwen():
    return build_processor("qwen2_vl")


def qwen_ids(processor):
    tok = processor.tokenizer
    return tuple(tok.convert_tokens_to_ids(t) for t in ("<|vision_start|>", "<|image_pad|>", "<|vision_end|>"))


def kept_text(processor, ids):
    """The text the processor was given for these ids: each image's <|image_pad|> run back to one."""
    _, pad, _ = qwen_ids(processor)
    collapsed = [int(t) for k, t in enumerate(ids) if not (t == pad and k and ids[k - 1] == pad)]
    return processor.tokenizer.decode(collapsed)


@pytest.mark.parametrize("side", ["right", "left"])
def test_ids_are_the_processors_on_the_kept_text_and_images(qwen, side):
    processor = qwen
    messages = long_chat(3)
    text, full = reference(processor, messages)
    start, pad, end = qwen_ids(processor)
    blocks = image_blocks(full, start, end)
    images = images_of(messages)
    _, full_batch, _ = collate(processor, [{"messages": messages}])
    (full_ids, full_labels), = real_rows(full_batch)
    assert full_ids.tolist() == full.tolist()
    media = image_token_ids(processor)
    seen_drops = set()
    for max_length in range(40, len(full), 9):
        collator, batch, _ = collate(processor, [{"messages": messages}], max_length=max_length, truncation=side)
        (ids, labels), = real_rows(batch)
        assert 0 < len(ids) <= max_length
        # exactly the processor's ids for the text kept and the images kept
        n_images = int((ids == start).sum())
        kept = images[:n_images] if side == "right" else images[len(images) - n_images:]
        cut_text = kept_text(processor, ids)
        assert text.startswith(cut_text) if side == "right" else text.endswith(cut_text)
        ref = processor(text=[cut_text], images=kept or None, return_tensors="np")["input_ids"][0]
        assert ids.tolist() == ref.tolist()
        assert int(np.asarray(batch["image_grid_thw"]).shape[0] if n_images else 0) == n_images
        # images whole; the ones dropped are those whose tokens would have crossed the cut, no more
        kept_blocks = blocks[:n_images] if side == "right" else blocks[len(blocks) - n_images:]
        assert (ids == pad).sum() == sum(int((full[a:b] == pad).sum()) for a, b in kept_blocks)
        if side == "right":
            first_dropped = blocks[n_images][0] if n_images < len(blocks) else None
            assert first_dropped is None or blocks[n_images][1] > max_length
            assert len(ids) >= min(max_length, first_dropped if first_dropped is not None else max_length) - 2
        else:
            last_dropped = blocks[len(blocks) - n_images - 1] if n_images < len(blocks) else None
            assert last_dropped is None or last_dropped[0] < len(full) - max_length
            assert len(ids) >= min(max_length, len(full) - last_dropped[1] if last_dropped else max_length) - 2
        assert collator.stats.images_dropped == len(images) - n_images and collator.stats.truncated == 1
        seen_drops.add(len(images) - n_images)
        # labels: what the uncut row trains, on the ids both share; never an image token
        trained = labels != -100
        assert not np.isin(ids[trained], media).any()
        assert (labels[trained] == ids[trained]).all()
        shared = (ids[:-1] == full[:len(ids) - 1]) if side == "right" else (ids[1:] == full[len(full) - len(ids) + 1:])
        common = int(np.argmin(shared)) if not shared.all() else len(shared)
        if side == "right":
            assert labels[:common].tolist() == full_labels[:common].tolist()
        else:
            assert labels[len(ids) - common:].tolist() == full_labels[len(full) - common:].tolist()
    assert {0, 1, 2} <= seen_drops  # cuts between, before and after the images were all tried


def test_a_stop_token_kept_is_trained_as_before(qwen):
    processor = qwen
    messages = long_chat(2)
    _, full = reference(processor, messages)
    im_end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    first_reply_end = int(np.flatnonzero(full == im_end)[2]) + 1  # system, user, assistant
    _, batch, _ = collate(processor, [{"messages": messages}], max_length=first_reply_end + 3)
    (ids, labels), = real_rows(batch)
    trained = processor.tokenizer.decode(ids[labels != -100])
    assert trained == "Picture 0 shows a cat sitting quietly in the warm afternoon sun.<|im_end|>"


def test_a_sample_whose_only_reply_is_cut_away_is_untrainable(qwen):
    processor = qwen
    messages = long_chat(1)
    _, full = reference(processor, messages)
    start, _, end = qwen_ids(processor)
    (_, image_end), = image_blocks(full, start, end)
    limit = image_end + 4  # the image fits, the reply does not
    collator, batch, warned = collate(processor, [{"messages": messages}], max_length=limit)
    (ids, labels), = real_rows(batch)
    assert (labels == -100).all() and int((ids == start).sum()) == 1
    assert collator.stats.untrainable == 1 and collator.stats.images_dropped == 0
    assert any("truncation to max_length=" in w and "removed all its trained tokens" in w for w in warned)
    report = respmask.check([{"messages": messages}], masker(processor), max_length=limit)
    assert report.untrainable == [0] and report.truncated_untrainable == [0] and not report.ok
    # the reply's image dropped too: the cut is before the image
    collator, batch, _ = collate(processor, [{"messages": messages}], max_length=image_end - 5)
    (ids, labels), = real_rows(batch)
    assert (labels == -100).all() and not (ids == start).any() and "pixel_values" not in batch
    assert collator.stats.images_dropped == 1


def test_collator_stats_and_warning_say_what_was_cut(qwen):
    processor = qwen
    long, short = long_chat(3), long_chat(1)
    _, full = reference(processor, long)
    _, short_ids = reference(processor, short)
    limit = len(short_ids) + 2
    rows = [{"messages": long, "index": 7}, {"messages": short, "index": 8}]
    collator, batch, warned = collate(processor, rows, max_length=limit)
    st = collator.stats
    assert st.samples == 2 and st.truncated == 1 and st.images_dropped >= 1
    assert real_rows(batch)[1][0].tolist() == short_ids.tolist()  # the short one untouched
    (warning,) = warned
    dropped = st.images_dropped
    assert f"1 sample(s) [dataset row 7 ({dropped} image(s))]: truncated to max_length={limit} (right)" in warning
    assert f"images dropped by truncation: {st.images_dropped}" in str(st)


def test_on_image_cut_drop_leaves_the_sample_out(qwen):
    processor = qwen
    long, short = long_chat(3), long_chat(1)
    _, short_ids = reference(processor, short)
    limit = len(short_ids) + 2
    rows = [{"messages": long, "index": 7}, {"messages": short, "index": 8}]
    collator, batch, warned = collate(processor, rows, max_length=limit, on_image_cut="drop")
    (ids, labels), = real_rows(batch)
    assert ids.tolist() == short_ids.tolist() and np.asarray(batch["image_grid_thw"]).shape[0] == 1
    assert (labels != -100).any()
    st = collator.stats
    assert st.samples == 2 and st.left_out == 1 and st.images_dropped == 0 and st.untrainable == 0
    assert any("[dataset row 7]: longer than max_length" in w and "left out of the batch" in w for w in warned)
    # a text-only cut is still a cut, not a drop
    _, full = reference(processor, long)
    start, _, end = qwen_ids(processor)
    last_image_end = image_blocks(full, start, end)[-1][1]
    collator, batch, _ = collate(processor, [{"messages": long}], max_length=last_image_end + 3, on_image_cut="drop")
    assert collator.stats.left_out == 0 and collator.stats.truncated == 1
    assert int((real_rows(batch)[0][0] == start).sum()) == 3
    # a batch with nothing left says so
    with pytest.raises(SampleError, match="on_image_cut='drop' left them all out"):
        collate(processor, [{"messages": long}], max_length=limit, on_image_cut="drop")
    report = respmask.check(rows, masker(processor), max_length=limit, on_image_cut="drop")
    assert report.left_out == [0] and report.truncated == [0] and report.ok
    assert "left out (on_image_cut='drop': truncation would drop images): 1 sample(s)" in report.summary()


@pytest.mark.parametrize("on_image_cut", ["truncate", "drop"])
def test_collator_preview_shows_the_cut_row_and_the_images_dropped(qwen, on_image_cut):
    processor = qwen
    long, short = long_chat(3), long_chat(1)
    _, short_ids = reference(processor, short)
    _, full = reference(processor, long)
    limit = len(short_ids) + 2
    collator = respmask.ResponseOnlyCollator(processor, max_length=limit, on_image_cut=on_image_cut,
                                             on_untrainable="keep")
    p = collator.preview({"messages": long})
    if on_image_cut == "drop":  # shown whole, with why it is left out
        assert p.n_tokens == len(full) and any(n.startswith("left out: ") for n in p.notes)
        return
    batch = collator([{"messages": long}])
    (ids, labels), = real_rows(batch)
    dropped = collator.stats.images_dropped
    assert dropped >= 1 and p.n_tokens == len(ids) <= limit
    expanded = [i for i, n in zip(p.ids, p.repeats) for _ in range(n)]  # image runs shown as one entry
    assert expanded == ids.tolist() and p.n_trained == int((labels != -100).sum())
    assert (f"truncated to max_length={limit} (right): {len(full) - len(ids)} of {len(full)} tokens cut, "
            f"{dropped} image(s) dropped with them") in p.summary()


def test_check_reports_truncation_of_an_image_dataset(qwen):
    processor = qwen
    rows = [{"messages": long_chat(n)} for n in (1, 2, 3)]
    lengths = [len(reference(processor, r["messages"])[1]) for r in rows]
    limit = lengths[0] + 2
    report = respmask.check(rows, masker(processor), max_length=limit)
    assert report.lengths == lengths  # before truncation
    assert report.truncated == [1, 2] and report.image_cut == [1, 2] and report.ok
    collator, batch, _ = collate(processor, rows, max_length=limit)
    assert report.images_dropped == collator.stats.images_dropped > 0
    assert report.tokens == int(np.asarray(batch["attention_mask"]).sum())
    assert f"images dropped with the text cut: {report.images_dropped} from 2 sample(s)" in report.summary()


def test_gemma3_images_stay_whole_with_their_pixels():
    processor = build_processor("gemma3", tiny=True)
    tok = processor.tokenizer
    boi, soft, eoi = (tok.convert_tokens_to_ids(t)
                      for t in ("<start_of_image>", "<image_soft_token>", "<end_of_image>"))
    messages = long_chat(3)
    _, full = reference(processor, messages)
    blocks = image_blocks(full, boi, eoi)
    per_image = blocks[0][1] - blocks[0][0]
    for side in ("right", "left"):
        for max_length in range(30, len(full), 11):
            _, batch, _ = collate(processor, [{"messages": messages}], max_length=max_length, truncation=side)
            (ids, labels), = real_rows(batch)
            n = int((ids == boi).sum())
            assert len(ids) <= max_length
            assert (ids == soft).sum() == n * (per_image - 2) and (ids == eoi).sum() == n
            for a, b in image_blocks(ids, boi, eoi):
                assert b - a == per_image
            assert (np.asarray(batch["pixel_values"]).shape[0] if n else 0) == n  # one image per block
            assert not np.isin(ids[labels != -100], image_token_ids(processor)).any()
            if side == "right":  # the kept ids are the uncut ones up to the cut
                assert ids[:-2].tolist() == full[:len(ids) - 2].tolist()
            else:
                assert ids[2:].tolist() == full[len(full) - len(ids) + 2:].tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_keeps_whole_images_within_max_length(family):
    processor = build_processor(family)  # as tests/test_vision.py builds it (cached: built once per run)
    media = image_token_ids(processor)
    messages = long_chat(3)
    images = images_of(messages)
    _, full = reference(processor, messages)
    alone = int(np.isin(reference(processor, [{"role": "user", "content": [_text("Hi.")]}])[1], media).sum())
    # the image tokens each image brings, from a chat holding only it
    per_image = [int(np.isin(reference(processor, [{"role": "user", "content": [
        {"type": "image", "image": im}, _text("Hi.")]}])[1], media).sum()) - alone for im in images]
    for side in ("right", "left"):
        for max_length in (len(full) // 3, 2 * len(full) // 3):
            collator, batch, _ = collate(processor, [{"messages": messages}], max_length=max_length, truncation=side)
            (ids, labels), = real_rows(batch)
            kept = len(images) - collator.stats.images_dropped
            kept_counts = per_image[:kept] if side == "right" else per_image[len(images) - kept:]
            assert len(ids) <= max_length and collator.stats.truncated == 1
            assert int(np.isin(ids, media).sum()) == sum(kept_counts)
            assert not np.isin(ids[labels != -100], media).any()


@pytest.mark.parametrize("family, max_length", [("qwen2_vl", None), ("qwen2_vl", 100), ("llava", None),
                                                ("llava", 1200)])
def test_padding_side_is_the_collators_not_the_tokenizers(family, max_length):
    """ResponseOnlyCollator(processor, padding_side=...) pads on that side, whatever the
    tokenizer's side (Qwen2-VL's pads right, LLaVA's left; it was ignored with a processor): the
    same rows, ids and labels, moved to the other side, with or without a cut (one processor call
    for Qwen2-VL's cut, two for LLaVA's)."""
    processor = build_processor(family)
    own = processor.tokenizer.padding_side
    other = "left" if own == "right" else "right"
    rows = [{"messages": long_chat(3)}, {"messages": long_chat(1)}]
    _, mine, _ = collate(processor, rows, max_length=max_length)
    _, flipped, _ = collate(processor, rows, max_length=max_length, padding_side=other)
    real = np.asarray(flipped["attention_mask"]).astype(bool)
    if max_length is not None:  # the long row was cut
        assert real.sum(1).max() <= max_length and len(real_rows(flipped)[0][0]) < len(real_rows(collate(
            processor, rows)[1])[0][0])
    short = int(np.argmin(real.sum(1)))
    assert not real[short].all()
    # the short row's padding is on the side asked for
    assert not real[short][0 if other == "left" else -1]
    assert real[short][-1 if other == "left" else 0]
    assert [(a.tolist(), b.tolist()) for a, b in real_rows(flipped)] == \
        [(a.tolist(), b.tolist()) for a, b in real_rows(mine)]
    assert processor.tokenizer.padding_side == own  # the user's tokenizer is left as it was
    for key in ("pixel_values", "image_grid_thw"):
        if key in mine:
            assert np.array_equal(np.asarray(mine[key]), np.asarray(flipped[key]))


def test_check_and_check_trainer_say_a_batch_of_left_out_samples_raises(tmp_path):
    """on_image_cut='drop' with batch size 1: check said OK and check_trainer found nothing unless
    a drawn batch happened to be a left-out sample, and trainer.train() then stopped ('every sample of
    this batch ... left them all out'). check says a batch of such samples raises; check_trainer
    reports it as a problem when the batch size is 1 (each left-out sample is such a batch), not when
    such a batch is unlikely (1 of 8 rows, batches of 4)."""
    transformers = pytest.importorskip("transformers")
    from support.vision import tiny_model

    processor = build_processor("qwen2_vl", tiny=True)
    long, short = long_chat(3), long_chat(1)
    _, short_ids = reference(processor, short)
    limit = len(short_ids) + 2
    rows = [{"messages": long if i in (1, 2) else short} for i in range(4)]
    report = respmask.check(rows, processor, max_length=limit, on_image_cut="drop")
    assert report.left_out == [1, 2]
    assert "a batch made only of such samples raises" in report.summary()
    assert "with batch size 1 each of them is one" in report.summary()
    model = tiny_model("qwen2_vl", processor)

    def trainer_report(data, batch_size):
        args = transformers.TrainingArguments(str(tmp_path), per_device_train_batch_size=batch_size, report_to=[],
                                              use_cpu=True, remove_unused_columns=False)
        collator = respmask.ResponseOnlyCollator(processor, max_length=limit, on_image_cut="drop")
        trainer = transformers.Trainer(model=model, args=args, train_dataset=data, data_collator=collator)
        return respmask.check_trainer(trainer, verbose=False)

    bad = trainer_report(rows, 1)
    assert len(bad.problems) == 1, str(bad)  # a batch that raised is this problem, not another one
    problem = bad.problems[0]
    assert problem.what.startswith("2 of the 4 rows checked are left out of their batch (on_image_cut='drop'), "
                                   "and a batch made only of such rows raises (rows 1, 2)")
    assert "per_device_train_batch_size=1" in problem.cause and "left them all out" in problem.cause
    assert "on_image_cut='truncate'" in problem.fix
    with pytest.raises(SampleError, match="left them all out"), pytest.warns(respmask.RespmaskWarning):
        respmask.ResponseOnlyCollator(processor, max_length=limit, on_image_cut="drop")([rows[1]])  # what it warns of
    # one left-out row of 8 in batches of 4: a batch of it alone cannot occur, nothing to report
    mostly_short = [{"messages": long if i == 3 else short} for i in range(8)]
    assert trainer_report(mostly_short, 4).ok
