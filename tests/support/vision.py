"""Vision-language processors built offline, from their classes (no hub).

``build_processor(name)`` assembles a real transformers processor for one model family:

* the image processor from its ``*ImageProcessorPil`` class (pillow only: this environment has no
  torchvision), with the family's published preprocessing settings where they differ from the
  class defaults, and small sizes only where a size knob keeps the tests fast without changing
  how the processor expands an image;
* a real tokenizer from ``RESPMASK_SHARED_TOKENIZERS`` (default ``/work/shared/tokenizers``): the
  family's own where it is there (Qwen, Gemma 3), else the closest real one with the family's
  image / marker tokens added (each case says which, and why);
* the family's real chat template from ``tests/fixtures/chat_templates/vision/`` (see SOURCES.md
  there).

Processors whose class takes a video processor (Qwen2-VL, Qwen3-VL, SmolVLM) cannot get one here:
every transformers video processor needs torchvision, and ``ProcessorMixin`` type-checks each
sub-processor it is given (``None`` included). Those families use a subclass that only drops the
``video_processor`` argument from ``__init__``; everything else (rendering, image expansion,
``apply_chat_template``) is the class's own code. Images work; videos do not.

``PixtralProcessor`` (Mistral 3) is importable without torchvision only through a one-name
stand-in during its module's import (see ``_pixtral_processor_class``).

When the shared tokenizers are absent, ``build_processor`` skips the test (``pytest.skip``).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np

VISION_TEMPLATES = Path(__file__).resolve().parent.parent / "fixtures" / "chat_templates" / "vision"
SHARED_ENV = "RESPMASK_SHARED_TOKENIZERS"
DEFAULT_SHARED = "/work/shared/tokenizers"

# Families build_processor knows, in a stable order (the test parametrisation).
FAMILIES = ["qwen2_vl", "qwen3_vl", "gemma3", "llava", "idefics3", "smolvlm", "mllama", "mistral3"]

# The tokens Idefics3 and SmolVLM add to their text model's tokenizer; they split an image into
# at most 6x6 tiles, tagged <row_i_col_j>.
_IDEFICS_TOKENS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]
_GRID_TOKENS = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]

# The tokens that stand for an image (placeholders, markers, grid tags), by processor class.
_IMAGE_TOKENS_BY_CLASS = {
    "Qwen2VLProcessor": ("<|vision_start|>", "<|image_pad|>", "<|vision_end|>"),
    "Qwen3VLProcessor": ("<|vision_start|>", "<|image_pad|>", "<|vision_end|>"),
    "Gemma3Processor": ("<start_of_image>", "<image_soft_token>", "<end_of_image>"),
    "LlavaProcessor": ("<image>",),
    "Idefics3Processor": ("<fake_token_around_image>", "<image>", "<global-img>", *_GRID_TOKENS),
    "SmolVLMProcessor": ("<fake_token_around_image>", "<image>", "<global-img>", *_GRID_TOKENS),
    "MllamaProcessor": ("<|image|>",),
    "PixtralProcessor": ("[IMG]", "[IMG_BREAK]", "[IMG_END]"),
}


def shared_root() -> Path:
    """The folder of the real tokenizers; skips the calling test when it is not there."""
    root = Path(os.environ.get(SHARED_ENV) or DEFAULT_SHARED)
    if not root.is_dir():
        import pytest

        pytest.skip(f"real tokenizers not available (set {SHARED_ENV} to ../shared/tokenizers)")
    return root


def _tokenizer(folder: str) -> Any:
    """A fresh copy of a shared tokenizer (processors may add tokens to it)."""
    from transformers import AutoTokenizer

    path = shared_root() / folder
    if not (path / "tokenizer.json").is_file():
        import pytest

        pytest.skip(f"{SHARED_ENV}={path.parent} has no {folder}/tokenizer.json")
    return AutoTokenizer.from_pretrained(str(path))


def _add_special(tok: Any, tokens: list[str]) -> None:
    """Add ``tokens`` as special added tokens (not normalised, never split)."""
    from tokenizers import AddedToken

    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in tokens], special_tokens=True)


def chat_template(name: str) -> str:
    """The verbatim template text (no newline added or stripped)."""
    return (VISION_TEMPLATES / f"{name}.jinja").read_bytes().decode("utf-8")


def make_image(w: int, h: int, seed: int = 0) -> Any:
    """A small RGB PIL image of width ``w`` and height ``h`` (deterministic noise)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8), mode="RGB")


def image_token_ids(processor: Any) -> list[int]:
    """The ids of the tokens that stand for an image with ``processor``: the placeholder, marker and
    grid-tag tokens of its processor class, as added tokens of its tokenizer."""
    added = processor.tokenizer.get_added_vocab()
    for klass in type(processor).__mro__:
        if klass.__name__ in _IMAGE_TOKENS_BY_CLASS:
            return sorted({added[t] for t in _IMAGE_TOKENS_BY_CLASS[klass.__name__] if t in added})
    raise ValueError(f"no image tokens known for {type(processor).__name__}")


# -- the families --------------------------------------------------------------------------------


class _NoVideoProcessor:
    """Stands in for a video processor where a processor's image path reads one of its settings
    (SmolVLM's ``apply_chat_template`` reads ``num_frames`` and ``fps`` unconditionally). Values:
    SmolVLM2's ``video_sampling`` (max_frames 64, fps 1). Processing a video raises."""

    num_frames = 64
    fps = 1

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no video processor here: transformers' video processors need torchvision")


def _without_video(cls: type, stand_in: bool = False) -> type:
    """``cls`` with ``video_processor`` dropped from ``__init__`` (see the module doc); with
    ``stand_in``, ``video_processor`` is then set to a ``_NoVideoProcessor``."""

    name = f"{cls.__name__}NoVideo"
    if name in globals():  # one class per processor class, importable by name (so it pickles)
        return globals()[name]

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):  # noqa: N807
        cls.__init__(self, image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                     chat_template=chat_template, **kwargs)
        if stand_in:
            self.video_processor = _NoVideoProcessor()

    sub = type(name, (cls,), {"__init__": __init__, "__module__": __name__, "__qualname__": name,
                              "__doc__": f"{cls.__name__} without a video processor."})
    globals()[name] = sub
    return sub


def _qwen2_vl(tiny: bool) -> Any:
    import transformers

    # Qwen2-VL / Qwen2.5-VL share the Qwen2 vocabulary and vision tokens with Qwen3's tokenizer
    # (<|vision_start|> 151652, <|vision_end|> 151653, <|image_pad|> 151655, <|video_pad|> 151656).
    tok = _tokenizer("qwen3")
    # Qwen2-VL-Instruct preprocessor: patch 14, merge 2, temporal patch 2, CLIP mean/std (class
    # defaults), min_pixels 56*56. max_pixels is lowered (class default 28*28*1280) only for
    # tiny models; the test images are far below it anyway.
    kwargs = {"min_pixels": 56 * 56, "max_pixels": 28 * 28 * (16 if tiny else 1280)}
    ip = transformers.Qwen2VLImageProcessorPil(**kwargs)
    return _without_video(transformers.Qwen2VLProcessor)(
        image_processor=ip, tokenizer=tok, chat_template=chat_template("qwen2_vl"))


def _qwen3_vl(tiny: bool) -> Any:
    import transformers

    tok = _tokenizer("qwen3")  # Qwen3-VL's text model is Qwen3: same tokenizer and vision tokens
    # Qwen3-VL-*-Instruct preprocessor_config: Qwen2VLImageProcessor with patch 16, merge 2,
    # temporal patch 2, mean/std 0.5, size shortest_edge 65536 / longest_edge 16777216 (pixels).
    ip = transformers.Qwen2VLImageProcessorPil(
        patch_size=16, merge_size=2, temporal_patch_size=2,
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
        size={"shortest_edge": 32 * 32 * 4 if tiny else 65536,
              "longest_edge": 32 * 32 * 16 if tiny else 16777216})
    return _without_video(transformers.Qwen3VLProcessor)(
        image_processor=ip, tokenizer=tok, chat_template=chat_template("qwen3_vl"))


def _gemma3(tiny: bool) -> Any:
    import transformers

    tok = _tokenizer("gemma3")  # Gemma 3's own: <start_of_image>, <image_soft_token>, <end_of_image>
    if tiny:
        ip = transformers.Gemma3ImageProcessorPil(size={"height": 28, "width": 28})
        return transformers.Gemma3Processor(image_processor=ip, tokenizer=tok, image_seq_length=4,
                                            chat_template=chat_template("gemma3"))
    # class defaults (224 px in transformers 5.24; the published gemma-3-it checkpoints use 896 px),
    # no pan-and-scan, 256 soft tokens per image
    ip = transformers.Gemma3ImageProcessorPil()
    return transformers.Gemma3Processor(image_processor=ip, tokenizer=tok, image_seq_length=256,
                                        chat_template=chat_template("gemma3"))


def _llava(tiny: bool) -> Any:
    import transformers

    # llava-hf/llava-1.5-7b-hf's tokenizer is the Llama 2 (Vicuna) SentencePiece vocabulary plus
    # two added tokens: <image> (32000) and <pad> (32001, the pad token) - added here the same way.
    tok = _tokenizer("llama2")
    _add_special(tok, ["<image>", "<pad>"])
    tok.pad_token = "<pad>"
    side = 112 if tiny else 336  # llava-1.5: CLIP ViT-L/14 at 336 px
    ip = transformers.LlavaImageProcessorPil(size={"shortest_edge": side},
                                             crop_size={"height": side, "width": side})
    # processor_config.json of llava-1.5-hf: patch 14, "default" strategy (CLS dropped), 1 extra token
    return transformers.LlavaProcessor(
        image_processor=ip, tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=chat_template("llava"))


def _idefics3(tiny: bool) -> Any:
    import transformers

    # HuggingFaceM4/Idefics3-8B-Llama3 is built on Llama 3.1 8B Instruct: its tokenizer is the Llama
    # 3.1 vocabulary plus the Idefics3 tokens, added here (<fake_token_around_image>, <image>,
    # <end_of_utterance>, <global-img>, <row_i_col_j> for 6x6 tiles). The shared file carries the
    # Llama 3 names of the reserved tokens; pad: <|reserved_special_token_2|> (id 128004, which
    # Llama 3.1 names <|finetune_right_pad_id|>), as the tokenizer has no pad token of its own.
    tok = _tokenizer("llama3_1")
    _add_special(tok, [*_IDEFICS_TOKENS, *_GRID_TOKENS])
    tok.pad_token = "<|reserved_special_token_2|>"
    # Idefics3-8B-Llama3: tiles of 364 px (max_image_size), 169 image tokens per tile, image
    # splitting on. size.longest_edge is 4*364 there; 2*364 here keeps the grid small (at most
    # 2x2 tiles) while exercising the same splitting and row/column tags.
    ip = transformers.Idefics3ImageProcessorPil(
        do_image_splitting=True, max_image_size={"longest_edge": 364},
        size={"longest_edge": 364 if tiny else 2 * 364})
    return transformers.Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=169,
                                          chat_template=chat_template("idefics3"))


def _smolvlm(tiny: bool) -> Any:
    import pytest
    import transformers

    pytest.importorskip("num2words")  # SmolVLMProcessor requires it (for its video prompt)
    # SmolVLM's tokenizer (SmolLM2: byte-level BPE, ChatML tokens) is not among the shared ones;
    # Qwen3's is the closest real one (byte-level BPE with <|im_start|> / <|im_end|>). Added: the
    # SmolVLM tokens <fake_token_around_image>, <image>, <end_of_utterance>, <global-img> and the
    # <row_i_col_j> tile tags.
    tok = _tokenizer("qwen3")
    _add_special(tok, [*_IDEFICS_TOKENS, *_GRID_TOKENS])
    # SmolVLM-Instruct / SmolVLM2-2.2B: tiles of 384 px, 81 image tokens per tile, splitting on;
    # size.longest_edge is 4*384 there, 2*384 here (at most 2x2 tiles).
    ip = transformers.SmolVLMImageProcessorPil(
        do_image_splitting=True, max_image_size={"longest_edge": 384},
        size={"longest_edge": 384 if tiny else 2 * 384})
    return _without_video(transformers.SmolVLMProcessor, stand_in=True)(
        image_processor=ip, tokenizer=tok, image_seq_len=81, chat_template=chat_template("smolvlm"))


def _mllama(tiny: bool) -> Any:
    import transformers

    # Llama 3.2 11B Vision Instruct's tokenizer is the Llama 3.1 one plus <|image|> (128256), added
    # here; pad: id 128004 (<|finetune_right_pad_id|> in Llama 3.1/3.2, <|reserved_special_token_2|>
    # in the shared file, which carries the Llama 3 names of the reserved tokens).
    tok = _tokenizer("llama3_1")
    _add_special(tok, ["<|image|>"])
    tok.pad_token = "<|reserved_special_token_2|>"
    # Mllama keeps one <|image|> per image in the ids (cross-attention, no expansion); the tile
    # size (560 px in the model) only shapes pixel_values, so it is small here.
    side = 56 if tiny else 112
    ip = transformers.MllamaImageProcessorPil(size={"height": side, "width": side}, max_image_tiles=4)
    return transformers.MllamaProcessor(image_processor=ip, tokenizer=tok,
                                        chat_template=chat_template("mllama"))


_MISTRAL_CONTROL = [
    "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]",
    "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]", "[PREFIX]", "[MIDDLE]", "[SUFFIX]",
    "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]", "[CALL_ID]", "[ARGS]",
]


def _pixtral_processor_class() -> type:
    """``PixtralProcessor``, importable without torchvision.

    transformers 5.x marks ``PixtralProcessor`` as needing torchvision (the top-level name is then a
    placeholder that raises) only because ``processing_pixtral`` imports one helper,
    ``get_resize_output_image_size``, from the torchvision image processor module; the helper is
    used by ``_get_num_multimodal_tokens`` alone (not by ``__call__`` nor ``apply_chat_template``),
    and the pillow module ``image_processing_pil_pixtral`` defines the same function. Without
    torchvision, the processor module is imported with that one name served from the pillow
    module (a stand-in registered in ``sys.modules`` for the duration of the import only)."""
    import importlib
    import sys
    import types

    import transformers
    from transformers.utils import is_torchvision_available

    if is_torchvision_available():
        return transformers.PixtralProcessor
    name = "transformers.models.pixtral.processing_pixtral"
    if name in sys.modules:
        return sys.modules[name].PixtralProcessor
    from transformers.models.pixtral import image_processing_pil_pixtral as pil

    stub_name = "transformers.models.pixtral.image_processing_pixtral"
    stub = types.ModuleType(stub_name)
    stub.get_resize_output_image_size = pil.get_resize_output_image_size
    had = sys.modules.get(stub_name)
    sys.modules[stub_name] = stub
    try:
        return importlib.import_module(name).PixtralProcessor
    finally:
        if had is None:
            sys.modules.pop(stub_name, None)
        else:
            sys.modules[stub_name] = had


def _mistral3(tiny: bool) -> Any:
    import transformers

    # Mistral Small 3.x uses the Tekken tokenizer, not among the shared ones. The Llama 2
    # SentencePiece tokenizer is the closest real one that has Mistral's <unk>/<s>/</s> (ids 0-2,
    # as in Tekken); the Mistral control tokens are added as special tokens: [INST], [/INST],
    # [SYSTEM_PROMPT], [/SYSTEM_PROMPT], tool tokens, [IMG], [IMG_BREAK], [IMG_END], and <pad>
    # (the pad token of Mistral-Small-3.1's HF tokenizer).
    tok = _tokenizer("llama2")
    _add_special(tok, _MISTRAL_CONTROL)
    tok.pad_token = "<pad>"
    # Mistral-Small-3.1/3.2 processor: PixtralProcessor, patch 14, spatial merge 2; image
    # processor longest_edge 1540 (test images are far smaller, so it never resizes them down).
    ip = transformers.PixtralImageProcessorPil(patch_size=14, size={"longest_edge": 112 if tiny else 1540})
    return _pixtral_processor_class()(
        image_processor=ip, tokenizer=tok, patch_size=14, spatial_merge_size=2,
        chat_template=chat_template("mistral3"))


_BUILDERS = {
    "qwen2_vl": _qwen2_vl,
    "qwen3_vl": _qwen3_vl,
    "gemma3": _gemma3,
    "llava": _llava,
    "idefics3": _idefics3,
    "smolvlm": _smolvlm,
    "mllama": _mllama,
    "mistral3": _mistral3,
}


@functools.lru_cache(maxsize=None)
def _build(name: str, tiny: bool) -> Any:
    return _BUILDERS[name](tiny)


def build_processor(name: str, tiny: bool = False) -> Any:
    """The processor of family ``name`` (one of ``FAMILIES``), built offline; cached, so callers
    must not modify it. ``tiny=True``: smaller image resolutions / sequences for tiny models."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown vision family {name!r}; known: {', '.join(FAMILIES)}")
    return _build(name, bool(tiny))


# -- tiny randomly initialised vision models (CPU Trainer tests) ---------------------------------


def tiny_model(name: str, processor: Any) -> Any:
    """A tiny randomly initialised model of family ``name`` that fits ``build_processor(name,
    tiny=True)``: the real model class, one layer, hidden size 32, the tokenizer's vocabulary."""
    import torch
    import transformers

    tok = processor.tokenizer
    torch.manual_seed(0)
    if name == "gemma3":
        cfg = transformers.Gemma3Config(
            text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                             num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                             max_position_embeddings=4096, sliding_window=64),
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                               image_size=28, patch_size=7),
            mm_tokens_per_image=4, image_token_index=tok.convert_tokens_to_ids("<image_soft_token>"),
            boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
            eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"))
        return transformers.Gemma3ForConditionalGeneration(cfg)
    if name == "qwen2_vl":
        cfg = transformers.Qwen2VLConfig(
            text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                             num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                             rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}),
            vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=14,
                               spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
            image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
            video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
            vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
            vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"))
        return transformers.Qwen2VLForConditionalGeneration(cfg)
    if name in ("qwen2_5_vl", "qwen3_vl"):  # Qwen2.5-VL fits build_processor("qwen2_vl") (same tokens, patch 14)
        tokens = dict(image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
                      video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
                      vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
                      vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"))
        text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                    num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=4096)
        vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                      spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
        if name == "qwen2_5_vl":
            cfg = transformers.Qwen2_5_VLConfig(
                text_config={**text, "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3]}},
                vision_config={**vision, "patch_size": 14, "fullatt_block_indexes": [0], "window_size": 56},
                **tokens)
            return transformers.Qwen2_5_VLForConditionalGeneration(cfg)
        cfg = transformers.Qwen3VLConfig(  # Qwen3-VL: patch 16, interleaved M-RoPE, deepstack from the one layer
            text_config={**text, "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3],
                                                     "mrope_interleaved": True}},
            vision_config={**vision, "patch_size": 16, "num_position_embeddings": 64, "deepstack_visual_indexes": [0]},
            **tokens)
        return transformers.Qwen3VLForConditionalGeneration(cfg)
    # LLaVA and Mistral 3 (Pixtral vision tower): two layers of a Llama / Mistral text model, so that
    # attention between tokens (and between the samples of a padding-free row) matters
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, max_position_embeddings=4096)
    if name == "llava":  # CLIP ViT at build_processor("llava", tiny=True)'s 112 px, patch 14
        cfg = transformers.LlavaConfig(
            text_config={**text, "model_type": "llama"},
            vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64,
                               num_hidden_layers=1, num_attention_heads=2, image_size=112, patch_size=14,
                               projection_dim=32),
            image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="default",
            vision_feature_layer=-1)
        return transformers.LlavaForConditionalGeneration(cfg)
    if name == "mistral3":  # Pixtral vision tower, patch 14, spatial merge 2 (as the processor)
        cfg = transformers.Mistral3Config(
            text_config={**text, "model_type": "mistral"},
            vision_config=dict(model_type="pixtral", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                               num_attention_heads=2, image_size=112, patch_size=14, head_dim=16),
            image_token_index=tok.convert_tokens_to_ids("[IMG]"), spatial_merge_size=2, vision_feature_layer=-1)
        return transformers.Mistral3ForConditionalGeneration(cfg)
    raise ValueError(f"no tiny model for {name!r}")
