"""Long chats with audio cut to max_length (issue 28 item 1, extended to speech): the rendered text is
cut, never an audio clip's tokens; the clips (and, with Gemma 3n, images) whose tokens would fall
(even partly) past the cut are dropped and the processor runs again on what is kept.

References: the processor's own call on the kept text and the kept clips (the kept text read back
from the ids, each clip's expansion collapsed to the placeholder the template writes, and found as a
prefix / suffix of the processor's own rendered text of the whole chat); the uncut row's ids and
labels; the audio tokens of each family (tests/support/audio.py).
"""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("torch")

import respmask  # noqa: E402
from respmask._errors import SampleError  # noqa: E402
from support.audio import AUDIO_TOKENS, audio_token_ids, build_processor, make_audio  # noqa: E402
from support.batches import collate_rows, real_rows  # noqa: E402

SECONDS = [1.0, 2.0, 0.5, 1.5]


def _text(t: str) -> dict:
    return {"type": "text", "text": t}


def long_chat(n: int = 4, image_every: int = 0) -> list[dict]:
    """``n`` exchanges, one audio clip (of a different length each) in each user turn; with
    ``image_every`` k > 0, an image after the clip in every k-th turn."""
    messages = [{"role": "system", "content": [_text("Answer about each clip in one sentence.")]}]
    for i in range(n):
        parts = [{"type": "audio", "audio": make_audio(SECONDS[i % 4], seed=i)}]
        if image_every and i % image_every == 0:
            from support.vision import make_image

            # text between the clip and the image: media with none between them are one unit of the cut
            parts += [_text("and this picture:"), {"type": "image", "image": make_image(64, 48, seed=i)}]
        messages += [
            {"role": "user", "content": [*parts, _text(f"What is said in clip number {i}?")]},
            {"role": "assistant", "content": [_text(f"Clip {i} says the {['cat', 'dog', 'bird', 'fish'][i % 4]} "
                                                    "sleeps quietly in the warm afternoon sun.")]},
        ]
    return messages


def media_of(messages, kind):
    return [p[kind] for m in messages if isinstance(m["content"], list) for p in m["content"] if p.get("type") == kind]


@functools.lru_cache(maxsize=None)
def masker(name):
    return respmask.ChatMasker(build_processor(name))


def collate(name, rows, **kw):
    return collate_rows(masker(name), rows, **kw)


def reference(processor, messages, return_tensors="np"):
    text = processor.apply_chat_template(messages, tokenize=False)
    out = processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors=return_tensors)
    return text, np.asarray(out["input_ids"]).reshape(-1)


def blocks(ids, start_id, end_id):
    """(start, end) of each medium's tokens: from its start marker through its end marker."""
    starts, ends = np.flatnonzero(ids == start_id), np.flatnonzero(ids == end_id) + 1
    assert len(starts) == len(ends) and (starts < ends).all()
    return list(zip(starts.tolist(), ends.tolist()))


#: what each family's processor writes for one medium, and the placeholder its template wrote
COLLAPSE = {
    "qwen2_audio": [(r"(<\|AUDIO\|>)+", "<|AUDIO|>")],
    "audioflamingo3": [(r"(<sound>)+", "<sound>")],
    "gemma3n": [(r"\n\n<start_of_audio>(<audio_soft_token>)+<end_of_audio>\n\n", "<audio_soft_token>"),
                (r"\n\n<start_of_image>(<image_soft_token>)+<end_of_image>\n\n", "<image_soft_token>")],
}


def kept_text(name, processor, ids):
    """The text the processor was given for these ids: each expansion back to its placeholder."""
    text = processor.tokenizer.decode([int(t) for t in ids])
    for pattern, placeholder in COLLAPSE[name]:
        text = re.sub(pattern, lambda _m, p=placeholder: p, text)
    return text


def processor_call(processor, text, clips, images):
    kw = {"audio": clips, "sampling_rate": 16000} if clips else {}
    if images:
        kw["images"] = [images]
    return processor(text=[text], return_tensors="np", add_special_tokens=False, **kw)


@pytest.mark.parametrize("name", ["qwen2_audio", "gemma3n"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_ids_are_the_processors_on_the_kept_text_and_clips(name, side):
    processor = build_processor(name)
    messages = long_chat(4, image_every=2 if name == "gemma3n" else 0)
    text, full = reference(processor, messages)
    clips, images = media_of(messages, "audio"), media_of(messages, "image")
    tok = processor.tokenizer
    start, end = (tok.convert_tokens_to_ids(t) for t in (AUDIO_TOKENS[name][0], AUDIO_TOKENS[name][-1]))
    full_blocks = blocks(full, start, end)
    assert len(full_blocks) == len(clips) == 4
    _, whole, _ = collate(name, [{"messages": messages}])
    (full_ids, full_labels), = real_rows(whole)
    assert full_ids.tolist() == full.tolist()
    media_ids = audio_token_ids(name) + (sorted(masker(name).media_tokens().tolist()) if images else [])
    drops = set()
    for max_length in [*range(30, len(full), max(7, len(full) // 14)), len(full) - 3]:
        collator, batch, warned = collate(name, [{"messages": messages}], max_length=max_length, truncation=side)
        (ids, labels), = real_rows(batch)
        assert 0 < len(ids) <= max_length
        n_clips = int((ids == start).sum())
        kept_clips = clips[:n_clips] if side == "right" else clips[len(clips) - n_clips:]
        n_images = 0
        if images:
            boi = tok.convert_tokens_to_ids("<start_of_image>")
            n_images = int((ids == boi).sum())
        kept_images = images[:n_images] if side == "right" else images[len(images) - n_images:]
        # exactly the processor's ids (and audio features) for the text and media kept
        cut_text = kept_text(name, processor, ids)
        assert text.startswith(cut_text) if side == "right" else text.endswith(cut_text)
        ref = processor_call(processor, cut_text, kept_clips, kept_images)
        assert ids.tolist() == np.asarray(ref["input_ids"])[0].tolist()
        if n_clips:
            assert np.array_equal(np.asarray(batch["input_features"]), np.asarray(ref["input_features"]))
        else:
            assert "input_features" not in batch
        # every kept clip's tokens whole: as many as in the uncut row; a clip is dropped only when its
        # tokens would have crossed the cut
        kept_blocks = full_blocks[:n_clips] if side == "right" else full_blocks[len(full_blocks) - n_clips:]
        assert [b - a for a, b in blocks(ids, start, end)] == [b - a for a, b in kept_blocks]
        if side == "right" and n_clips < len(full_blocks):
            assert full_blocks[n_clips][1] > max_length
        if side == "left" and n_clips < len(full_blocks):
            assert full_blocks[len(full_blocks) - n_clips - 1][0] < len(full) - max_length
        # labels: never on a media token; the uncut row's labels on the ids both share
        assert not np.isin(ids[labels != -100], media_ids).any()
        if side == "right":
            same = ids == full[:len(ids)]
            assert same[:-2].all()  # a merge at the cut may change the last token or two
            assert np.array_equal(labels[same], full_labels[:len(ids)][same])
        else:
            tail = full[len(full) - len(ids):]
            same = ids == tail
            assert same[2:].all()
            assert np.array_equal(labels[same], full_labels[len(full) - len(ids):][same])
        # stats and warning name the clips (and images) dropped
        st = collator.stats
        assert st.audio_dropped == len(clips) - n_clips and st.images_dropped == len(images) - n_images
        assert st.truncated == 1
        if st.audio_dropped:
            assert f"audio clips dropped by truncation: {st.audio_dropped}" in str(st)
            assert any("audio clips whose tokens fell past the cut" in w and f"{st.audio_dropped} audio clip(s)" in w
                       for w in warned)
        drops.add(len(clips) - n_clips)
    assert {0, 1, 3} <= drops  # lengths that keep every clip, lose one, lose most


def test_reply_text_left_is_trained():
    name = "qwen2_audio"
    processor = build_processor(name)
    messages = long_chat(4)
    _, full = reference(processor, messages)
    start = processor.tokenizer.convert_tokens_to_ids("<|audio_bos|>")
    # the cut falls inside the second clip: the first exchange stays whole, its reply trained
    second = blocks(full, start, processor.tokenizer.convert_tokens_to_ids("<|audio_eos|>"))[1]
    _, batch, _ = collate(name, [{"messages": messages}], max_length=second[0] + 3)
    (ids, labels), = real_rows(batch)
    reply = processor.tokenizer.decode(labels[labels != -100])
    assert "Clip 0 says the cat sleeps quietly in the warm afternoon sun." in reply
    assert int((ids == start).sum()) == 1


def test_on_image_cut_drop_leaves_an_audio_row_out_and_check_reports_it():
    name = "qwen2_audio"
    processor = build_processor(name)
    long, short = long_chat(4), long_chat(1)
    _, short_ids = reference(processor, short)
    limit = len(short_ids) + 2
    rows = [{"messages": long, "index": 7}, {"messages": short, "index": 8}]
    collator, batch, warned = collate(name, rows, max_length=limit, on_image_cut="drop")
    (ids, labels), = real_rows(batch)
    assert ids.tolist() == short_ids.tolist() and np.asarray(batch["input_features"]).shape[0] == 1
    assert (labels != -100).any()
    st = collator.stats
    assert st.samples == 2 and st.left_out == 1 and st.audio_dropped == 0 and st.untrainable == 0
    assert any("[dataset row 7]: longer than max_length" in w and "holding audio clips that truncation would drop"
               in w and "left out of the batch" in w for w in warned)
    with pytest.raises(SampleError, match="would lose audio clips to truncation, so on_image_cut='drop' left them all out"):
        collate(name, [{"messages": long}], max_length=limit, on_image_cut="drop")
    report = respmask.check(rows, masker(name), max_length=limit, on_image_cut="drop")
    assert report.left_out == [0] and report.truncated == [0] and report.ok
    assert "left out (on_image_cut='drop': truncation would drop images or audio): 1 sample(s)" in report.summary()
    # the reason the row carries names its clips
    from respmask._encode import encode_rows

    (row,) = encode_rows(masker(name), [{"messages": long}], max_length=limit, on_image_cut="drop")[1]
    assert row.left_out is not None and row.audio_dropped == 3 and row.images_dropped == 0
    assert "would drop 3 of its 4 audio clip(s) (on_image_cut='drop')" in row.left_out
    # truncating instead: check counts the clips dropped as the collator does
    report = respmask.check(rows, masker(name), max_length=limit)
    collator, batch, _ = collate(name, rows, max_length=limit)
    assert report.audio_dropped == collator.stats.audio_dropped > 0 and report.audio_cut == [0]
    assert report.images_dropped == 0 and report.tokens == int(np.asarray(batch["attention_mask"]).sum())
    assert f"audio clips dropped with the text cut: {report.audio_dropped} from 1 sample(s)" in report.summary()


def test_preview_notes_the_clips_dropped():
    name = "qwen2_audio"
    processor = build_processor(name)
    long = long_chat(4)
    _, full = reference(processor, long)
    limit = len(full) // 2
    collator = respmask.ResponseOnlyCollator(processor, max_length=limit, on_untrainable="keep")
    p = collator.preview({"messages": long})
    batch = collator([{"messages": long}])
    (ids, _), = real_rows(batch)
    dropped = collator.stats.audio_dropped
    assert dropped >= 1 and p.n_tokens == len(ids) <= limit
    assert (f"truncated to max_length={limit} (right): {len(full) - len(ids)} of {len(full)} tokens cut, "
            f"{dropped} audio clip(s) dropped with them") in p.summary()


def test_a_long_chat_with_video_stays_refused():
    """A video's tokens are not cut between yet: through the collator (the stand-in video processor of
    tests/test_video.py on the real Qwen2VLProcessor), the row is named with what to do."""
    from support.conversations import Nonces
    from test_video import _chat, _frames, _processor

    processor = _processor()
    messages = _chat(Nonces(), [_frames(4, 1), _frames(2, 2)])
    n = len(np.asarray(processor.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
            .reshape(-1))
    collator = respmask.ResponseOnlyCollator(processor, max_length=n - 4, return_tensors="np")
    with pytest.raises(SampleError, match=rf"sample 0: is {n} tokens, longer than max_length={n - 4}, and holds "
                                          r"2 video: respmask cuts long chats between images and audio clips, "
                                          r"not yet through video"):
        collator([{"messages": messages}])
    assert respmask.ResponseOnlyCollator(processor, max_length=n, return_tensors="np")(
        [{"messages": messages}])["input_ids"].shape == (1, n)


def test_a_clip_right_before_an_image_goes_with_it():
    """Gemma 3n: a clip and an image with no text between them are one unit of the cut (nothing in
    the processor's ids says where one ends and the other starts): the cut that drops the image drops
    the clip too, and both are counted; the ids are the processor's on what is kept."""
    from support.vision import make_image

    name = "gemma3n"
    processor = build_processor(name)
    clip, image = make_audio(1.0, seed=5), make_image(64, 48, seed=5)
    messages = [{"role": "user", "content": [_text("Listen first.")]},
                {"role": "assistant", "content": [_text("Ready when you are.")]},
                {"role": "user", "content": [{"type": "audio", "audio": clip}, {"type": "image", "image": image},
                                             _text("Which animal?")]},
                {"role": "assistant", "content": [_text("A cat.")]}]
    _, full = reference(processor, messages)
    tok = processor.tokenizer
    eoa, boi = tok.convert_tokens_to_ids("<end_of_audio>"), tok.convert_tokens_to_ids("<start_of_image>")
    clip_end, image_start = int(np.flatnonzero(full == eoa)[0]) + 1, int(np.flatnonzero(full == boi)[0])
    assert image_start - clip_end <= 3  # only the expansion's newlines between them
    collator, batch, warned = collate(name, [{"messages": messages}], max_length=clip_end + 1)
    (ids, labels), = real_rows(batch)
    assert not np.isin(ids, [eoa, boi]).any() and "input_features" not in batch and "pixel_values" not in batch
    assert collator.stats.audio_dropped == 1 and collator.stats.images_dropped == 1
    assert any("images and audio clips whose tokens fell past the cut" in w and "(1 image(s) and 1 audio clip(s))" in w
               for w in warned)
    ref = processor_call(processor, kept_text(name, processor, ids), [], [])
    assert ids.tolist() == np.asarray(ref["input_ids"])[0].tolist()
    assert "Ready when you are." in tok.decode(labels[labels != -100])


def test_a_template_that_marks_the_turn_not_each_clip():
    """Audio Flamingo 3's template writes one <sound> per turn however many clips it holds (its
    processor takes one clip per row): no token counts clips, but a row's one clip is the one
    <sound> unit. Cut after it, the clip is kept whole; cut before it, dropped; the ids are the
    processor's own on the kept text and clip."""
    name = "audioflamingo3"
    processor = build_processor(name)
    messages = [{"role": "user", "content": [{"type": "audio", "audio": make_audio(2.0, seed=1)},
                                             _text("What is said here in this clip?")]},
                {"role": "assistant", "content": [_text("It says hello there my friend, twice.")]}]
    text, full = reference(processor, messages, "pt")  # AudioFlamingo3Processor returns PyTorch tensors only
    sound = processor.tokenizer.convert_tokens_to_ids("<sound>")
    where = np.flatnonzero(full == sound)
    for max_length, kept in ((int(where[-1]) + 4, 1), (int(where[0]) - 1, 0)):
        collator = respmask.ResponseOnlyCollator(processor, max_length=max_length, return_tensors="pt",
                                                 on_untrainable="keep")
        batch = collator([{"messages": messages}])
        ids = batch["input_ids"][0].numpy()
        assert len(ids) <= max_length and collator.stats.audio_dropped == 1 - kept
        assert int((ids == sound).sum()) == (len(where) if kept else 0)
        cut_text = kept_text(name, processor, ids)
        assert text.startswith(cut_text)
        kw = {"audio": media_of(messages, "audio"), "sampling_rate": 16000} if kept else {}
        ref = processor(text=[cut_text], return_tensors="pt", add_special_tokens=False, **kw)
        assert ids.tolist() == ref["input_ids"][0].tolist()
        assert ("input_features" in batch) == bool(kept)

    # its processor takes no batch mixing rows with and without audio: a cut that drops one row's clip
    # while another keeps its own makes one, and the error says the cut did
    short = [{"role": "user", "content": [{"type": "audio", "audio": make_audio(0.5, seed=2)}, _text("Said?")]},
             {"role": "assistant", "content": [_text("Hello.")]}]
    short_ids = reference(processor, short, "pt")[1]
    limit = int(np.flatnonzero(short_ids == sound)[-1]) + 3  # past the short row's clip, before the long row's ends
    assert limit <= where[-1]
    collator = respmask.ResponseOnlyCollator(processor, max_length=limit, return_tensors="pt", on_untrainable="keep")
    with pytest.raises(SampleError, match=rf"rejected this batch: .* \(the batch as cut to max_length={limit}: "
                                          r"sample\(s\) 0 lost media with their text"):
        collator([{"messages": messages}, {"messages": short}])
    batch = respmask.ResponseOnlyCollator(processor, max_length=limit, return_tensors="pt", on_untrainable="keep",
                                          on_image_cut="drop")([{"messages": messages}, {"messages": short}])
    assert batch["input_ids"].shape[0] == 1 and "input_features" in batch


class CountingClips:
    """An audio feature extractor that counts its calls and the clips it is given (everything else
    is the real one's)."""

    def __init__(self, real):
        self.real, self.calls, self.clips = real, 0, 0

    def __call__(self, audio, *args, **kwargs):
        self.calls += 1
        self.clips += len(audio)
        return self.real(audio, *args, **kwargs)

    def __getattr__(self, name):
        if name.startswith("__") or name == "real":
            raise AttributeError(name)
        return getattr(self.real, name)


@pytest.mark.parametrize("return_tensors", ["np", "pt"])
def test_a_cut_batch_extracts_each_clips_features_once(return_tensors):
    """Whisper's features are each clip's alone (every clip padded to 30 s): the call on the cut rows
    joins the kept clips' rows of the first call's features instead of extracting them again (the
    first call extracts the batch's clips in one call, as the processor does), and the batch is
    still the processor's own call on the kept text and clips."""
    import copy

    from respmask._media_cut import clips_join

    name = "qwen2_audio"
    processor = copy.deepcopy(build_processor(name))
    counter = processor.feature_extractor = CountingClips(processor.feature_extractor)
    rows = [{"messages": long_chat(4)}, {"messages": long_chat(3)}, {"messages": long_chat(2)}]
    texts = [processor.apply_chat_template(row["messages"], tokenize=False) for row in rows]
    lengths = [len(processor.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    collator = respmask.ResponseOnlyCollator(processor, max_length=min(lengths) // 2, return_tensors=return_tensors,
                                             on_untrainable="keep")
    assert clips_join(collator.masker)  # learned once (the probe's clips counted here, not below)
    collator.masker.media_tokens()
    counter.calls = counter.clips = 0
    batch = collator(rows)
    clips = [media_of(row["messages"], "audio") for row in rows]
    assert counter.clips == sum(map(len, clips)) == 9  # each clip once, though the kept ones go through twice
    assert counter.calls == 1
    st = collator.stats
    assert st.truncated == 3 and 0 < st.audio_dropped < 9
    start = processor.tokenizer.convert_tokens_to_ids("<|audio_bos|>")
    texts, kept = [], []
    for r, (ids, _) in enumerate(real_rows({k: np.asarray(v) for k, v in batch.items()})):
        texts.append(kept_text(name, processor, ids))
        kept += clips[r][:int((ids == start).sum())]
    ref = processor(text=texts, audio=kept, sampling_rate=16000, padding=True, return_tensors=return_tensors,
                    add_special_tokens=False)
    assert set(ref) <= set(batch)
    for key in ref:
        assert np.array_equal(np.asarray(batch[key]), np.asarray(ref[key])), key
        assert type(batch[key]) is type(ref[key]), key
    assert processor.feature_extractor is counter  # the stand-in is gone after the batch


@pytest.mark.parametrize("name, joins", [("qwen2_audio", True), ("gemma3n", False), ("audioflamingo3", False)])
def test_which_processors_clips_join_is_learned_from_their_outputs(name, joins):
    # Gemma 3n's and Audio Flamingo 3's feature extractors pad a batch's clips to its longest: their
    # batch is not the join of single clips, so a cut batch extracts the kept clips' features again
    from respmask._media_cut import clips_join

    assert clips_join(respmask.ChatMasker(build_processor(name))) is joins
