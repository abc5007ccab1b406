"""More vision-language families through ``ResponseOnlyCollator(processor)``, offline.

Each family is its real transformers processor class, built from its classes as
``tests/support/vision.py`` builds the first eight (image processors from ``*ImageProcessorPil``,
processors that take a video processor through ``support.vision._without_video``, a real tokenizer
from ``RESPMASK_SHARED_TOKENIZERS`` with the family's image tokens added), and the family's real chat
template (``tests/fixtures/vision/SOURCES.md`` gives each template's exact origin):

* LLaVA-NeXT, two checkpoints: llava-hf/llava-v1.6-mistral-7b-hf and llava-hf/llava-v1.6-vicuna-7b-hf
  (``LlavaNextProcessor``);
* LLaVA-OneVision, llava-hf/llava-onevision-qwen2-*-ov-hf (``LlavaOnevisionProcessor``);
* InternVL 3, OpenGVLab/InternVL3-*-hf (``InternVLProcessor``);
* Gemma 3n, google/gemma-3n-E4B-it (``Gemma3nProcessor``, with its audio feature extractor);
* Pixtral-12B, mistral-community/pixtral-12b (``PixtralProcessor``; the early revision of its
  template) and the Pixtral-style template transformers writes when it converts a Mistral 3
  checkpoint.

What every conversation checks, through ``ChatMasker`` and through the collator with the images in
an ``images`` column: ``input_ids`` equal ``processor.apply_chat_template(messages, tokenize=True,
return_dict=True)`` token for token; every assistant nonce is trained and no system or user nonce;
no image token is trained; each reply's stop token is trained (a template without one reports
every turn instead). Conversations: text only, one image, two images (in one user turn and in two),
an image inside a reply where the template renders one there, content as a list of parts for every
role the template reads parts for, and as a string where it reads strings.

Not built here, and why:

* Llama 4 (``Llama4Processor``), Phi-4-multimodal (``Phi4MultimodalProcessor``), Molmo 2
  (``Molmo2Processor``): their image processors exist only as torchvision backends
  (``Llama4ImageProcessor``, ``Phi4MultimodalImageProcessor``, ``Molmo2ImageProcessor`` raise "requires
  the Torchvision library"), and this environment has no torchvision; a stand-in image processor
  would not be the family's.
* Phi-3.5-vision, Molmo (v1), Kimi-VL: no transformers processor class (``trust_remote_code``
  models; their processors load from the Hub).
* Aya Vision (``AyaVisionProcessor`` builds offline, with ``GotOcr2ImageProcessorPil``): no verbatim
  copy of CohereLabs/aya-vision-8b's chat template was found in any package or public repository
  reachable here.
* PaliGemma: its checkpoints ship no chat template (prompts are plain prefixes).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
pytest.importorskip("PIL")

import respmask  # noqa: E402
from support.conversations import Nonces  # noqa: E402
from support.vision import (  # noqa: E402
    _MISTRAL_CONTROL,
    _add_special,
    _pixtral_processor_class,
    _tokenizer,
    _without_video,
    chat_template,
    make_image,
    shared_root,
)

TEMPLATES = Path(__file__).resolve().parent / "fixtures" / "vision"


def _template(name: str) -> str:
    """A template of tests/fixtures/vision, verbatim."""
    return (TEMPLATES / f"{name}.jinja").read_bytes().decode("utf-8")


# -- the processors --------------------------------------------------------------------------------


def _llava_next(template: str) -> Any:
    # llava-hf/llava-v1.6-mistral-7b-hf and -vicuna-7b-hf: the text models' SentencePiece vocabulary
    # (Mistral-7B-Instruct-v0.2 / Vicuna-7B: Llama 2's 32000 tokens, <unk>/<s>/</s> at 0-2) plus two
    # added tokens, <image> (32000) and <pad> (32001, the pad token); the shared Llama 2 tokenizer is
    # that vocabulary, the two are added here.
    tok = _tokenizer("llama2")
    _add_special(tok, ["<image>", "<pad>"])
    tok.pad_token = "<pad>"
    # preprocessor_config.json of both: CLIP ViT-L/14 at 336 px, anyres pinpoints
    # [[336,672],[672,336],[672,672],[1008,336],[336,1008]] (the class default); processor_config:
    # patch 14, "default" feature strategy, 1 additional token (CLS).
    ip = transformers.LlavaNextImageProcessorPil(size={"shortest_edge": 336},
                                                 crop_size={"height": 336, "width": 336})
    return transformers.LlavaNextProcessor(
        image_processor=ip, tokenizer=tok, patch_size=14, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=template)


def _llava_onevision() -> Any:
    # llava-hf/llava-onevision-qwen2-*-ov-hf: the Qwen2 tokenizer (the shared Qwen3 one has the same
    # byte-level vocabulary and <|im_start|>/<|im_end|>) plus <image> and <video>, as the
    # conversion script adds them; processor: 729 tokens per 384-px tile, "full" feature strategy.
    tok = _tokenizer("qwen3")
    _add_special(tok, ["<image>", "<video>"])
    # SigLIP-so400m at 384 px (mean/std 0.5), anyres pinpoints up to 2304 px (the class default)
    ip = transformers.LlavaOnevisionImageProcessorPil(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    return _without_video(transformers.LlavaOnevisionProcessor)(
        image_processor=ip, tokenizer=tok, num_image_tokens=729, vision_feature_select_strategy="full",
        chat_template=_template("llava_onevision"))


def _internvl() -> Any:
    # OpenGVLab/InternVL3-*-hf: the Qwen2.5 tokenizer plus <img>, </img>, <IMG_CONTEXT> and the
    # grounding tokens, named in the tokenizer's extra_special_tokens (start_image_token,
    # end_image_token, context_image_token, video_token) as the conversion script writes it.
    names = {"start_image_token": "<img>", "end_image_token": "</img>",
             "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"}
    tok = transformers.AutoTokenizer.from_pretrained(str(shared_root() / "qwen3"), extra_special_tokens=names)
    _add_special(tok, [*names.values(), "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>"])
    # GotOcr2 image processor at 448 px, ImageNet mean/std (the conversion script's); the processor
    # tiles images (crop_to_patches, its default) into 1-12 tiles of 256 <IMG_CONTEXT> each
    ip = transformers.GotOcr2ImageProcessorPil(size={"height": 448, "width": 448},
                                               image_mean=[0.485, 0.456, 0.406],
                                               image_std=[0.229, 0.224, 0.225])
    return _without_video(transformers.InternVLProcessor)(
        image_processor=ip, tokenizer=tok, image_seq_length=256, chat_template=_template("internvl"))


def _gemma3n() -> Any:
    # google/gemma-3n-E4B-it: Gemma 3n's tokenizer is Gemma 3's vocabulary with audio tokens; the
    # shared Gemma 3 tokenizer has <start_of_image>, <image_soft_token>, <end_of_image>; added here:
    # <audio_soft_token>, <start_of_audio>, <end_of_audio>, and the names Gemma3nProcessor reads.
    names = {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>",
             "eoi_token": "<end_of_image>", "audio_token": "<audio_soft_token>",
             "boa_token": "<start_of_audio>", "eoa_token": "<end_of_audio>"}
    tok = transformers.AutoTokenizer.from_pretrained(str(shared_root() / "gemma3"),
                                                     extra_special_tokens=names)
    _add_special(tok, ["<audio_soft_token>", "<start_of_audio>", "<end_of_audio>"])
    from support.audio import gemma3n_processor

    return gemma3n_processor(tok)  # its image processor, feature extractor and template


def _pixtral(template: str, patch: int, merge: int, longest: int) -> Any:
    # The Tekken vocabulary is not among the shared tokenizers: as support.vision's Mistral 3, the
    # Llama 2 SentencePiece one with Mistral's control tokens added ([INST], [IMG], [IMG_BREAK],
    # [IMG_END], ...; <pad> the pad token).
    tok = _tokenizer("llama2")
    _add_special(tok, _MISTRAL_CONTROL)
    tok.pad_token = "<pad>"
    ip = transformers.PixtralImageProcessorPil(patch_size=patch, size={"longest_edge": longest})
    return _pixtral_processor_class()(image_processor=ip, tokenizer=tok, patch_size=patch,
                                      spatial_merge_size=merge, chat_template=template)


# -- what each family's template reads -----------------------------------------------------------


@dataclass(frozen=True)
class Family:
    build: Callable[[], Any]
    image_tokens: tuple[str, ...]  # the tokens that stand for an image (placeholders, markers)
    list_roles: frozenset = frozenset({"system", "user", "assistant"})  # roles read as a list of parts
    string_roles: frozenset = frozenset()  # roles read as a string
    image_roles: frozenset = frozenset({"user"})  # roles whose image parts the template renders
    text_key: str = "text"  # the key a text part's text is read from
    stops: bool = True  # the template closes a reply with a stop token
    drops_system: bool = False  # the system message is rendered only before a final user turn


ALL = frozenset({"system", "user", "assistant"})
PIXTRAL_IMAGE = ("[IMG]", "[IMG_BREAK]", "[IMG_END]")

FAMILIES: dict[str, Family] = {
    "llava_next_mistral": Family(lambda: _llava_next(chat_template("llava_next")), ("<image>",)),
    "llava_next_vicuna": Family(lambda: _llava_next(chat_template("llava")), ("<image>",),
                                image_roles=ALL, stops=False),
    "llava_onevision": Family(_llava_onevision, ("<image>",), image_roles=ALL),
    "internvl": Family(_internvl, ("<img>", "</img>", "<IMG_CONTEXT>"), string_roles=ALL, image_roles=ALL),
    "gemma3n": Family(_gemma3n, ("<start_of_image>", "<image_soft_token>", "<end_of_image>"),
                      string_roles=ALL, image_roles=frozenset({"user", "assistant"})),
    # mistral-community/pixtral-12b: patch 16, no spatial merge, images up to 1024 px
    "pixtral_12b": Family(lambda: _pixtral(_template("pixtral_12b"), 16, 1, 1024), PIXTRAL_IMAGE,
                          list_roles=frozenset({"user"}), string_roles=ALL, text_key="content",
                          drops_system=True),
    # the Mistral 3 conversion: patch 14, spatial merge 2, images up to 1540 px (Mistral Small 3.1)
    "pixtral_mistral3_convert": Family(lambda: _pixtral(_template("pixtral_mistral3_convert"), 14, 2, 1540),
                                       PIXTRAL_IMAGE,
                                       list_roles=frozenset({"user", "assistant"}), string_roles=ALL,
                                       image_roles=frozenset({"user", "assistant"}), drops_system=True),
}

@functools.lru_cache(maxsize=None)
def processor_of(name: str) -> Any:
    """The family's processor, built once per test session (callers must not modify it)."""
    return FAMILIES[name].build()


def media_ids(name: str) -> list[int]:
    tok = processor_of(name).tokenizer
    added = tok.get_added_vocab()
    return sorted(added[t] for t in FAMILIES[name].image_tokens)


# -- conversations -----------------------------------------------------------------------------------

SIZES = [(64, 64), (96, 128), (128, 80)]


def _conversation(fam: Family, shape: str, as_list: bool) -> tuple[list[dict], Nonces, int]:
    """One conversation of ``shape``; returns it, its nonces and how many images sit in replies."""
    nn = Nonces()
    images = iter([make_image(*SIZES[i % 3], seed=i) for i in range(3)])

    def text(role: str, i: int, words: str) -> Any:
        word = nn({"system": "SYS", "user": "USR", "assistant": "AST"}[role], i)
        value = words.format(word)
        return [{"type": "text", fam.text_key: value}] if as_list and role in fam.list_roles else value

    def with_images(role: str, i: int, words: str, before: int = 0, after: int = 0) -> Any:
        body = text(role, i, words)
        if not before and not after:
            return body
        assert isinstance(body, list)
        return ([{"type": "image", "image": next(images)} for _ in range(before)] + body
                + [{"type": "image", "image": next(images)} for _ in range(after)])

    n_user_images = {"text": (0, 0), "one_image": (1, 0), "two_images_one_turn": (2, 0),
                     "two_images_two_turns": (1, 1), "image_in_reply": (0, 0)}[shape]
    msgs = [{"role": "system", "content": text("system", 0, "Be brief {}.")}]
    first = with_images("user", 1, "What {} is this?", before=n_user_images[0])
    msgs.append({"role": "user", "content": first})
    if shape == "image_in_reply":
        reply = [*text("assistant", 2, "Here {} it is:"), {"type": "image", "image": next(images)},
                 *text("assistant", 2, "and {} done.")]
        msgs.append({"role": "assistant", "content": reply})
    else:
        msgs.append({"role": "assistant", "content": text("assistant", 2, "It is {} indeed.")})
    msgs.append({"role": "user", "content": with_images("user", 3, "And {}?", before=n_user_images[1])})
    msgs.append({"role": "assistant", "content": text("assistant", 4, "Also {} there.")})
    return msgs, nn, int(shape == "image_in_reply")


def conversations(name: str) -> list[tuple[str, list[dict], Nonces, int]]:
    """Every shape the family's template reads: (label, messages, nonces, images in replies)."""
    fam = FAMILIES[name]
    out = []
    if fam.list_roles:
        shapes = ["text", "one_image", "two_images_one_turn", "two_images_two_turns"]
        if {"user", "assistant"} <= fam.image_roles and "assistant" in fam.list_roles:
            shapes.append("image_in_reply")
        for shape in shapes:
            out.append((f"{shape} (parts)", *_conversation(fam, shape, as_list=True)))
    if fam.string_roles >= ALL:
        out.append(("text (strings)", *_conversation(fam, "text", as_list=False)))
    return out


# -- checks ----------------------------------------------------------------------------------------


def _images(messages: list[dict]) -> list[Any]:
    """The images of a conversation's parts, in order."""
    return [p["image"] for m in messages if isinstance(m["content"], list) for p in m["content"]
            if p.get("type") == "image"]


def _reference_ids(processor: Any, messages: list[dict]) -> list[int]:
    ref = processor.apply_chat_template(messages, tokenize=True, return_dict=True)
    return np.asarray(ref["input_ids"]).reshape(-1).tolist()


def _check_row(name: str, label: str, messages: list[dict], nn: Nonces, ids: np.ndarray, labels: np.ndarray,
               images_in_replies: int) -> None:
    processor = processor_of(name)
    tok = processor.tokenizer
    where = f"{name} / {label}"
    assert ids.tolist() == _reference_ids(processor, messages), f"{where}: ids differ from the processor's"
    trained = labels != -100
    text = tok.decode(ids[trained].tolist())
    replies = {w for w, k in nn.kinds.items() if k == "AST"}
    assert {w for w in nn.kinds if w in text} == replies, f"{where}: {text!r}"
    media = media_ids(name)
    n_images = len(_images(messages))
    assert int(np.isin(ids, media).any()) == int(n_images > 0), f"{where}: image tokens in the ids"
    assert not np.isin(ids[trained], media).any(), f"{where}: an image token is trained"
    edges = np.flatnonzero(np.diff(np.concatenate([[0], trained.astype(np.int8), [0]])))
    runs = list(zip(edges[::2], edges[1::2]))
    n_replies = sum(m["role"] == "assistant" for m in messages)
    assert n_replies <= len(runs) <= n_replies + images_in_replies, f"{where}: {len(runs)} trained runs"
    if FAMILIES[name].stops:
        # each reply's run ends with the token that ends generation; a run that ends without one is
        # cut by an image in the reply (the next untrained stretch holds image tokens)
        control = set(tok.added_tokens_decoder)
        shown = [tok.decode(ids[a:b].tolist()) for a, b in runs]
        stops = [int(ids[b - 1]) in control for _, b in runs]
        assert sum(stops) == n_replies and stops[-1], f"{where}: {shown}"
        for (_, b), (a, _), stop in zip(runs, runs[1:], stops):
            assert stop or np.isin(ids[b:a], media).any(), f"{where}: {shown}"


# Pixtral-12B's early template renders a reply as message["content"] + eos_token (string content
# only): the media-token probe (respmask._media.media_token_ids) writes its reply as parts first and
# as a string when the template rejects parts (it raised TypeError on every sample before that).


@pytest.mark.parametrize("name", list(FAMILIES))
def test_chat_masker_matches_the_processor(name):
    processor = processor_of(name)
    masker = respmask.ChatMasker(processor)
    for label, messages, nn, in_replies in conversations(name):
        _, rows = masker.process_batch([{"messages": messages}], return_tensors="np")
        n_replies = sum(m["role"] == "assistant" for m in messages)
        assert rows[0].turns_without_stop == (0 if FAMILIES[name].stops else n_replies), label
        # what the render leaves out is reported (the Pixtral templates' system message)
        assert [k for k, _ in rows[0].lost_data] == ([0] if FAMILIES[name].drops_system else []), label
        _check_row(name, label, messages, nn, rows[0].input_ids, rows[0].labels, in_replies)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_collator_with_an_images_column(name):
    processor = processor_of(name)
    collator = respmask.ResponseOnlyCollator(processor, return_tensors="np")
    convs = conversations(name)
    rows = []
    for _, messages, _, _ in convs:
        # the same conversation with placeholders in the parts and the images in an 'images' column
        stripped = [{**m, "content": [{"type": "image"} if p.get("type") == "image" else p
                                      for p in m["content"]]}
                    if isinstance(m["content"], list) else m for m in messages]
        rows.append({"messages": stripped, "images": _images(messages)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch = collator(rows)
    lost = [w for w in caught
            if issubclass(w.category, respmask.RespmaskWarning) and "leaves out" in str(w.message)]
    assert len(lost) == int(FAMILIES[name].drops_system), [str(w.message) for w in caught]
    ids = np.asarray(batch["input_ids"])
    assert ids.shape[0] == len(convs) and batch["labels"].shape == ids.shape
    real = np.asarray(batch["attention_mask"]).astype(bool)
    assert (batch["labels"][~real] == -100).all()
    for r, (label, messages, nn, in_replies) in enumerate(convs):
        _check_row(name, label, messages, nn, ids[r][real[r]], batch["labels"][r][real[r]], in_replies)
    assert collator.stats.samples == len(convs) and collator.stats.untrainable == 0
    replies = sum(m["role"] == "assistant" for _, messages, _, _ in convs for m in messages)
    assert collator.stats.turns_without_stop == (0 if FAMILIES[name].stops else replies)
