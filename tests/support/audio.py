"""Speech-in, text-out processors built offline, from their classes (no hub, no shared files).

``build_processor(name)`` assembles a real transformers processor for one audio-language family:

* the audio feature extractor from its class (NumPy only: ``WhisperFeatureExtractor``,
  ``Gemma3nAudioFeatureExtractor``), with the settings the family's checkpoint publishes;
* a real byte-level (or SentencePiece-style) tokenizer trained in the test session by
  ``tests/support/tokenizers.py``, with the family's chat and audio tokens added as special tokens:
  the family's own vocabulary is not needed to check that respmask reproduces the processor's ids
  and masks (the processor expands the same placeholders into the same number of tokens), and the
  tests then run without ``RESPMASK_SHARED_TOKENIZERS``;
* the family's real chat template from ``tests/fixtures/audio/`` (see SOURCES.md there).

Families:

* ``qwen2_audio``: Qwen/Qwen2-Audio-7B-Instruct (``Qwen2AudioProcessor``), with the template
  transformers 5.25 gives the processor (``default_chat_template``);
* ``qwen2_audio_2024``: the same processor with the template's first transformers revision
  (transformers 4.45), which renders an audio part only when it has an ``audio`` (or
  ``audio_url``) key;
* ``gemma3n``: google/gemma-3n-E4B-it (``Gemma3nProcessor``: audio and images);
* ``audioflamingo3``: nvidia/audio-flamingo-3-hf (``AudioFlamingo3Processor``), which returns
  PyTorch tensors only.

Not built here, and why: Voxtral (``VoxtralProcessor`` renders through ``mistral_common``, not a
Jinja template, and needs that package's tokenizer); Granite Speech (its feature extractor needs
torchaudio); Phi-4-multimodal and the Qwen2.5-Omni thinker (their processors need an image or
video processor that exists only as a torchvision backend for Phi-4; Qwen2.5-Omni's needs a video
processor, which needs torchvision).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from tokenizers import Tokenizer

from .tokenizers import base_tokenizer_json, build_tokenizer

AUDIO_TEMPLATES = Path(__file__).resolve().parent.parent / "fixtures" / "audio"
VISION_TEMPLATES = Path(__file__).resolve().parent.parent / "fixtures" / "vision"

FAMILIES = ["qwen2_audio", "qwen2_audio_2024", "gemma3n", "audioflamingo3"]

#: The tokens that stand for audio with each family (placeholders and markers; never trained).
AUDIO_TOKENS = {
    "qwen2_audio": ("<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>"),
    "qwen2_audio_2024": ("<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>"),
    "gemma3n": ("<start_of_audio>", "<audio_soft_token>", "<end_of_audio>"),
    "audioflamingo3": ("<sound>",),
}

#: The token that ends a reply with each family.
STOP = {"qwen2_audio": "<|im_end|>", "qwen2_audio_2024": "<|im_end|>", "gemma3n": "<end_of_turn>",
        "audioflamingo3": "<|im_end|>"}


def template(name: str) -> str:
    """A chat template verbatim (no newline added or stripped)."""
    folder = VISION_TEMPLATES if name == "gemma3n" else AUDIO_TEMPLATES
    return (folder / f"{name}.jinja").read_bytes().decode("utf-8")


def make_audio(seconds: float, seed: int = 0, rate: int = 16000) -> np.ndarray:
    """``seconds`` of deterministic noise at ``rate`` Hz (float32, in [-0.5, 0.5))."""
    return np.random.default_rng(seed).uniform(-0.5, 0.5, int(seconds * rate)).astype(np.float32)


def _chatml(chat_template: str, audio_tokens: list[str]) -> Any:
    # Qwen2 vocabulary layout: <|endoftext|> (pad), <|im_start|>, <|im_end|> (eos), then the audio tokens
    return build_tokenizer(chat_template, style="bytelevel", eos="<|im_end|>", pad="<|endoftext|>",
                           special=["<|im_start|>", *audio_tokens])


def _qwen2_audio(chat_template: str) -> Any:
    import transformers

    tok = _chatml(chat_template, ["<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>"])
    # Qwen2-Audio-7B-Instruct's preprocessor_config.json: WhisperFeatureExtractor, 128 mel bins,
    # 16 kHz, 30 s chunks (n_fft 400, hop 160: the class defaults)
    fe = transformers.WhisperFeatureExtractor(feature_size=128)
    return transformers.Qwen2AudioProcessor(feature_extractor=fe, tokenizer=tok, chat_template=chat_template)


def _gemma3n() -> Any:
    import transformers

    names = {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
             "audio_token": "<audio_soft_token>", "boa_token": "<start_of_audio>", "eoa_token": "<end_of_audio>"}
    # Gemma's SentencePiece-style layout (<pad>, <eos>, <bos>, turn tokens), the image and audio tokens
    # named as google/gemma-3n-E4B-it's tokenizer_config.json names them (Gemma3nProcessor reads
    # tokenizer.audio_token, .boa_token, ... and their ids)
    backend = Tokenizer.from_str(base_tokenizer_json("metaspace"))
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, chat_template=template("gemma3n"), bos_token="<bos>", eos_token="<eos>",
        pad_token="<pad>", unk_token="<unk>", extra_special_tokens=names)
    tok.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>", *names.values()]})
    return gemma3n_processor(tok)


def gemma3n_processor(tok: Any) -> Any:
    """google/gemma-3n-E4B-it's processor around ``tok``: Gemma3nAudioFeatureExtractor (class
    defaults: 16 kHz, 128 mel bins), 188 soft tokens per clip; SigLIP image processor at 768 px,
    mean/std 0.5, 256 soft tokens per image; its chat template."""
    import transformers

    ip = transformers.SiglipImageProcessorPil(size={"height": 768, "width": 768},
                                              image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    fe = transformers.Gemma3nAudioFeatureExtractor()
    return transformers.Gemma3nProcessor(feature_extractor=fe, image_processor=ip, tokenizer=tok,
                                         image_seq_length=256, audio_seq_length=188,
                                         chat_template=template("gemma3n"))


def _audioflamingo3() -> Any:
    import transformers

    tok = _chatml(template("audioflamingo3"), ["<sound>"])
    # the conversion script's feature extractor: Whisper, 128 mel bins, attention mask returned
    fe = transformers.WhisperFeatureExtractor(feature_size=128, return_attention_mask=True)
    return transformers.AudioFlamingo3Processor(feature_extractor=fe, tokenizer=tok,
                                                chat_template=template("audioflamingo3"))


_BUILDERS = {
    "qwen2_audio": lambda: _qwen2_audio(template("qwen2_audio")),
    "qwen2_audio_2024": lambda: _qwen2_audio(template("qwen2_audio_2024")),
    "gemma3n": _gemma3n,
    "audioflamingo3": _audioflamingo3,
}


@functools.lru_cache(maxsize=None)
def build_processor(name: str) -> Any:
    """The processor of family ``name`` (one of ``FAMILIES``), built offline; cached, so callers
    must not modify it."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown audio family {name!r}; known: {', '.join(FAMILIES)}")
    return _BUILDERS[name]()


def audio_token_ids(name: str) -> list[int]:
    """The ids of the tokens that stand for audio with family ``name``."""
    tok = build_processor(name).tokenizer
    return sorted(tok.convert_tokens_to_ids(t) for t in AUDIO_TOKENS[name])


def tiny_qwen2_audio(processor: Any) -> Any:
    """A tiny randomly initialised Qwen2-Audio model that fits ``build_processor("qwen2_audio")``:
    the real model class, one encoder and one decoder layer, hidden size 32, 128 mel bins."""
    import torch
    import transformers

    tok = processor.tokenizer
    torch.manual_seed(0)
    cfg = transformers.Qwen2AudioConfig(
        audio_config=dict(num_mel_bins=128, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64,
                          d_model=32, max_source_positions=1500),
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048),
        audio_token_id=tok.convert_tokens_to_ids("<|AUDIO|>"))
    return transformers.Qwen2AudioForConditionalGeneration(cfg)
