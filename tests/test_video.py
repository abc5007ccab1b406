"""Video parts through the processor (issue 28 item 3), as far as this environment allows.

No transformers video processor can be built here: every one (``Qwen2VLVideoProcessor``,
``LlavaOnevisionVideoProcessor``, ``SmolVLMVideoProcessor``, ``InternVLVideoProcessor`` ...) derives
from ``BaseVideoProcessor``, which requires torchvision, and no processor class in transformers 5.25
takes video frames through its image processor instead (``ProcessorMixin.__call__`` hands videos to
``self.video_processor`` only). So:

* with a processor built without a video processor (tests/support/vision.py's Qwen2-VL), a video
  part or a ``videos`` column is refused with an error naming the processor (tests/test_vision.py);
* respmask's side of the video path (gathering video parts and the ``videos`` column, calling the
  processor with ``videos=``, learning the video tokens from the processor, carrying the mask) is
  checked here with a **stand-in** video processor on the real ``Qwen2VLProcessor`` and its real
  template: frames through the family's own image processor, two frames per temporal patch, so
  ``<|video_pad|>`` expands by the processor's own ``replace_video_token``. The stand-in is not
  Qwen2-VL's video preprocessing; what is checked is that respmask's ids equal the processor's own
  ``apply_chat_template(..., tokenize=True)`` for the same processor, and the masks.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
pytest.importorskip("PIL")

import respmask  # noqa: E402
from support.conversations import Nonces  # noqa: E402
from support.vision import build_processor, make_image  # noqa: E402


class FramesThroughImageProcessor:
    """A stand-in video processor: each video's frames through ``image_processor`` (the first frame's
    patches repeated per pair of frames), ``video_grid_thw`` = (frames // 2, grid h, grid w)."""

    merge_size = 2

    def __init__(self, image_processor: Any):
        self.image_processor = image_processor

    def __call__(self, videos: Any, **kwargs: Any) -> Any:
        from transformers.video_utils import make_batched_videos

        grids, pixels = [], []
        for video in make_batched_videos(videos):
            out = self.image_processor(images=video[0], return_tensors="np")
            _, h, w = (int(x) for x in out["image_grid_thw"][0])
            grids.append([len(video) // 2, h, w])
            pixels.append(np.concatenate([out["pixel_values"]] * (len(video) // 2)))
        return transformers.BatchFeature({"pixel_values_videos": np.concatenate(pixels),
                                          "video_grid_thw": np.array(grids)})


def _processor() -> Any:
    base = build_processor("qwen2_vl")
    processor = copy.copy(base)  # the cached processor stays without a video processor
    processor.video_processor = FramesThroughImageProcessor(base.image_processor)
    return processor


def _frames(n: int, seed: int) -> list[Any]:
    return [make_image(64, 64, seed=seed * 10 + i) for i in range(n)]


def _text(value: str) -> dict:
    return {"type": "text", "text": value}


def _chat(nn: Nonces, videos: list[list[Any]], in_reply: bool = False) -> list[dict]:
    first = [{"type": "video", "video": v} for v in videos[:1]]
    reply = [_text(f"It shows {nn('AST', 2)} running")]
    if in_reply:
        reply.append({"type": "video", "video": videos[1]})
    second = [{"type": "video", "video": v} for v in videos[1:]] if not in_reply else []
    return [{"role": "user", "content": [*first, _text(f"What {nn('USR', 1)} happens?")]},
            {"role": "assistant", "content": reply},
            {"role": "user", "content": [*second, _text(f"And {nn('USR', 3)}?")]},
            {"role": "assistant", "content": [_text(f"Also {nn('AST', 4)}.")]}]


def _check(processor: Any, messages: list[dict], nn: Nonces, ids: np.ndarray, labels: np.ndarray) -> None:
    tok = processor.tokenizer
    ref = processor.apply_chat_template(messages, tokenize=True, return_dict=True)
    assert ids.tolist() == np.asarray(ref["input_ids"]).reshape(-1).tolist()
    trained = labels != -100
    text = tok.decode(ids[trained])
    assert {w for w in nn.kinds if w in text} == {w for w, k in nn.kinds.items() if k == "AST"}, text
    video = [tok.convert_tokens_to_ids(t) for t in ("<|vision_start|>", "<|video_pad|>", "<|vision_end|>")]
    assert int(np.isin(ids, video[1]).sum()) >= 8  # the expansion is there (4 tokens per pair of 64-px frames)
    assert not np.isin(ids[trained], video).any(), text
    assert text.count("<|im_end|>") == 2


def test_video_tokens_are_learned_from_the_processor():
    processor = _processor()
    learned = set(respmask.ChatMasker(processor).media_tokens().tolist())
    tok = processor.tokenizer
    assert tok.convert_tokens_to_ids("<|video_pad|>") in learned
    assert tok.convert_tokens_to_ids("<|image_pad|>") in learned
    assert tok.convert_tokens_to_ids("<|im_end|>") not in learned


@pytest.mark.parametrize("in_reply", [False, True])
def test_video_parts_match_the_processor(in_reply):
    processor = _processor()
    nn = Nonces()
    messages = _chat(nn, [_frames(4, 1), _frames(2, 2)], in_reply=in_reply)
    batch, rows = respmask.ChatMasker(processor).process_batch([{"messages": messages}], return_tensors="np")
    _check(processor, messages, nn, rows[0].input_ids, rows[0].labels)
    ref = processor.apply_chat_template(messages, tokenize=True, return_dict=True)
    assert np.array_equal(batch["video_grid_thw"], np.asarray(ref["video_grid_thw"]))


def test_a_videos_column_with_bare_video_parts():
    processor = _processor()
    nn = Nonces()
    videos = [_frames(4, 3), _frames(4, 4)]
    messages = _chat(nn, videos)
    bare = [{**m, "content": [{"type": "video"} if p.get("type") == "video" else p for p in m["content"]]}
            for m in messages]
    rows = [{"messages": bare, "videos": videos}, {"messages": [messages[0] | {"content": [_text("hi")]},
                                                               {"role": "assistant", "content": "yo"}]}]
    batch = respmask.ResponseOnlyCollator(processor, return_tensors="np")(rows)
    real = batch["attention_mask"][0].astype(bool)
    _check(processor, messages, nn, batch["input_ids"][0][real], batch["labels"][0][real])
    assert bare[0]["content"][0] == {"type": "video"}  # the row is not modified
