"""Padding-free batches with a processor: a processor's padded batch concatenated into one row.

A processor returns two kinds of arrays besides ``input_ids`` / ``attention_mask``: arrays with one
value per token (``token_type_ids``, ``mm_token_type_ids`` ...: shape ``(batch, sequence)``), which
are concatenated along the sequence as the ids are, and arrays of the batch's images taken
together (``pixel_values`` of shape ``(images or patches, ...)``, ``image_grid_thw``,
``image_sizes`` ...), which already hold every image in sample order, so one row of the samples
concatenated in order takes them as they are. An array with one entry per *sample* (Idefics3's
``pixel_values`` of shape ``(batch, images, ...)``, Mllama's ``cross_attention_mask`` with a
per-sample image axis) cannot be given to one row without knowing how the model indexes it: a
processor returning one is refused, naming it. Which kind each output is, is learned from the
processor on a probe batch (two chats holding one and two images), not from a table.

Whether the model then trains each sample of the row as it would in the padded batch is a property
of the model, not of the processor: a model may compute positions from the image layout (Qwen2-VL's
multi-axis rotary positions are computed from ``input_ids``, ``mm_token_type_ids``,
``image_grid_thw`` and ``attention_mask``, so the 1-D ``position_ids`` of a padding-free row
replace them), or build attention blocks over image tokens that its packed-sequence mask does not
keep per sample. So the collator checks the model it is given: the probe batch, padded and
padding-free, must give the same logits for each sample's tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ._errors import SampleError
from ._masks import IGNORE_INDEX, as_numpy

TOKEN = "token"  # one value per token: concatenated along the sequence
IMAGES = "images"  # the batch's images (or their patches) together, in sample order: kept as is
_SEQUENCE = ("input_ids", "attention_mask", "labels")


def probe_rows(masker: Any) -> list[dict[str, Any]]:
    """Two chats for probing a processor (and a model) in the kind of media it takes (images, else
    audio, else video): one medium, then two and a longer question; each reply as text parts, else
    as a string (templates that take only strings).

    Raises:
        ValueError: the processor takes no images, audio or video.
    """
    from ._media import MODALITIES, image_chats, probe_medium, probe_part, takes

    processor = masker.processor
    modality = next((m for m in MODALITIES if takes(processor, m)), None)
    if modality is None:
        raise ValueError(f"padding_free=True: {type(processor).__name__} takes no images, audio or video to probe")

    def render(messages: list[dict]) -> str:
        return processor.apply_chat_template(messages, chat_template=masker.template_source(), tokenize=False)

    part = probe_part(processor, modality)
    answer_as_parts = _takes_parts(render, part)
    if not answer_as_parts:
        image_chats(render, (1,), part)  # raises the template's own error when it takes neither form of reply
    base = probe_medium(processor, modality)
    rows = []
    for k, question in ((1, "What is in this one?"), (2, "Which of these two is louder or brighter, and why?")):
        reply = f"The {'first ' if k > 1 else ''}one is mostly brown."
        media = [_varied(base, i) for i in range(k)]
        rows.append({
            "messages": [
                {"role": "user", "content": [{"type": modality.kind}] * k + [{"type": "text", "text": question}]},
                {"role": "assistant", "content": [{"type": "text", "text": reply}] if answer_as_parts else reply},
            ],
            modality.column: media,
        })
    return rows


def _takes_parts(render: Any, part: Mapping[str, Any]) -> bool:
    """Whether the template renders a reply written as text parts."""
    try:
        render([{"role": "user", "content": [dict(part), {"type": "text", "text": "zq"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "zqanswer"}]}])
    except Exception:  # noqa: BLE001 - the reply as a string (see image_chats)
        return False
    return True


def _varied(medium: Any, i: int) -> Any:
    """The ``i``-th of several distinct media made from ``medium``: an image of another size and
    colour, a longer clip, another frame size (so that the samples' outputs differ)."""
    from PIL import Image

    if isinstance(medium, np.ndarray):  # audio: one more half second of the same noise each time
        return np.concatenate([medium] + [medium[: len(medium) // 2]] * i)
    if isinstance(medium, list):  # video frames
        return [_varied(frame, i) for frame in medium]
    return Image.new("RGB", (56 + 8 * i, 40), (120 + 40 * i, 80, 40))


def output_layout(batch: Mapping[str, Any], rows: int) -> tuple[dict[str, str], dict[str, str]]:
    """Each processor output's kind in a padded batch of ``rows`` rows holding more images than
    rows: ``TOKEN`` (shape ``(rows, sequence)``) or ``IMAGES`` (a first axis that is not the
    batch's); and the outputs one row cannot take, each with why."""
    length = as_numpy(batch["input_ids"]).shape[1]
    layout: dict[str, str] = {}
    refused: dict[str, str] = {}
    for key, value in batch.items():
        if key in _SEQUENCE:
            continue
        shape = tuple(getattr(value, "shape", ()))
        if len(shape) >= 2 and shape[:2] == (rows, length):
            if len(shape) == 2:
                layout[key] = TOKEN
            else:
                refused[key] = (f"shape {shape}: one value per token of each sample, with axes of that sample's own "
                                "(such as its images) that one row of several samples does not have")
        elif len(shape) >= 1 and shape[0] == rows:
            refused[key] = (f"shape {shape}: one entry per sample (batch, ...), which the model indexes by sample; "
                            "one row of several samples has no such axis")
        elif len(shape) >= 1:
            layout[key] = IMAGES
        else:
            refused[key] = f"a {type(value).__name__}, not an array of the batch"
    return layout, refused


def flatten_processed(batch: Mapping[str, Any], layout: Mapping[str, str], tensors: str) -> dict[str, Any]:
    """A processor's padded batch (with ``labels``) as one padding-free row: ``input_ids``,
    ``labels`` and the per-token outputs concatenated over each row's real tokens (its
    ``attention_mask``), in row order; the image outputs as they are; ``position_ids`` restarting
    at each sample, ``cu_seq_lens_q/k``, ``max_length_q/k``, ``use_cache=False`` (as
    :meth:`ResponseOnlyCollator.flatten` makes them for text), and -100 on each sample's first label.

    Raises:
        SampleError: an output the probe did not see whose kind this batch does not show.
    """
    ids = as_numpy(batch["input_ids"])
    real = as_numpy(batch["attention_mask"]).astype(bool) if "attention_mask" in batch else np.ones(ids.shape, bool)
    lengths = real.sum(axis=1).astype(np.int64)
    flat = real.reshape(-1)

    def cat(value: Any) -> np.ndarray:
        return as_numpy(value).reshape(ids.shape[0] * ids.shape[1])[flat][None, :]

    out: dict[str, Any] = {"input_ids": cat(batch["input_ids"]).astype(np.int64)}
    labels = cat(batch["labels"]).astype(np.int64)
    starts = (np.cumsum(lengths) - lengths)[lengths > 0]
    labels[0, starts] = IGNORE_INDEX  # no sample learns to predict the next one's first token
    out["labels"] = labels
    out["position_ids"] = (np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths,
                                                                                   lengths))[None, :]
    cu = np.append(starts, int(lengths.sum())).astype(np.int32)
    out["cu_seq_lens_q"], out["cu_seq_lens_k"] = cu, cu.copy()
    kept: dict[str, Any] = {}
    for key, value in batch.items():
        if key in _SEQUENCE:
            continue
        kind = layout.get(key)
        if kind is None:
            found, refused = output_layout({"input_ids": ids, key: value}, ids.shape[0])
            if key in refused or ids.shape[0] < 2:
                raise SampleError(f"padding_free=True: the processor returned {key!r} for this batch, which the probe "
                                  f"batch did not show, and its kind cannot be told ({refused.get(key, 'one row')}); "
                                  "use padding_free=False")
            kind = found[key]
        if kind == TOKEN:
            out[key] = cat(value)
        else:
            kept[key] = value
    if tensors == "pt":
        import torch

        result: dict[str, Any] = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in out.items()}
    else:
        result = dict(out)
    result.update(kept)
    longest = int(lengths.max()) if len(lengths) else 0
    result["max_length_q"] = result["max_length_k"] = longest
    result["use_cache"] = False
    return result


def check_model(masker: Any, layout: Mapping[str, str], model: Any) -> None:
    """Whether ``model`` takes padding-free rows of ``masker``'s processor (outputs laid out as
    ``layout`` says) as it takes padded batches: the probe
    batch (:func:`probe_rows`) padded and padding-free must give the same logits for each sample's
    tokens (within float tolerance: 1e-4 of the largest logit in float32, 2e-2 in half precision).

    The model runs in eval mode (no dropout) without gradients and gets its mode back.

    Raises:
        ValueError: the model rejects the padding-free row, or gives other logits; the message says
            by how much and what causes it.
    """
    import torch

    from ._collator import ResponseOnlyCollator

    padded = ResponseOnlyCollator(masker, return_tensors="pt", on_untrainable="keep")(probe_rows(masker))
    free = flatten_processed(padded, layout, "pt")
    params = next(iter(model.parameters()), None)
    device = params.device if params is not None else torch.device("cpu")
    dtype = params.dtype if params is not None else torch.float32

    def moved(batch: Mapping[str, Any]) -> dict[str, Any]:
        out = {}
        for k, v in batch.items():
            if k == "labels":
                continue
            if isinstance(v, torch.Tensor):
                v = v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype)
            out[k] = v
        return out

    name = type(model).__name__
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            padded_logits = model(**moved(padded)).logits.float().cpu()
            try:
                free_logits = model(**moved(free)).logits.float().cpu()
            except Exception as exc:
                raise ValueError(f"padding_free=True: {name} rejects a padding-free row of the processor's outputs "
                                 f"({type(exc).__name__}: {exc}); use padding_free=False") from exc
    finally:
        model.train(training)
    real = as_numpy(padded["attention_mask"]).astype(bool)
    cu = as_numpy(free["cu_seq_lens_q"])
    scale = float(padded_logits.abs().max()) or 1.0
    tolerance = (1e-4 if dtype == torch.float32 or dtype == torch.float64 else 2e-2) * scale
    diffs = []
    for r in range(real.shape[0]):
        mine = padded_logits[r][torch.from_numpy(real[r])]
        theirs = free_logits[0][int(cu[r]):int(cu[r + 1])]
        diffs.append(float((mine - theirs).abs().max()))
    if max(diffs) > tolerance:
        # the row's first sample sees no other sample: if it differs, the positions the row gives it do
        where = ("the first sample already differs, although nothing precedes it in the row: the model does not "
                 "position its tokens by the row's restarting 1-D position_ids (it computes positions from the image "
                 "layout, as Qwen2-VL's multi-axis rotary positions are computed from input_ids, mm_token_type_ids, "
                 "image_grid_thw and attention_mask)" if diffs[0] > tolerance else
                 "the first sample agrees and the next differs: the model does not keep the samples of the row apart "
                 "(attention blocks over image tokens, as Gemma 3 builds from token_type_ids, that its packed-sequence "
                 "mask does not confine to one sample), or it positions their tokens otherwise than by the row's "
                 "1-D position_ids by less than this precision shows on the first sample (Qwen2-VL's multi-axis "
                 "rotary positions, in bfloat16)")
        raise ValueError(
            f"padding_free=True: {name} does not take a padding-free row as it takes the padded batch: on a probe "
            f"batch of two chats with media its logits differ by up to {max(diffs):.3g} (largest logit {scale:.3g}); "
            f"{where}. Use padding_free=False (padding) with this model.")
