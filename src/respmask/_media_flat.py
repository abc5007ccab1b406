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
``image_grid_thw`` and ``attention_mask``), or build attention blocks over image tokens that its
packed-sequence mask does not keep per sample. A model that computes such positions and exposes
how (transformers' ``get_rope_index``, which its forward calls when given no ``position_ids``) has
them computed by that method for the padded batch, each sample's taken in order
(:class:`ModelPositions`); the form the model takes them in (with the row's restarting text
positions as a first axis, as transformers' packed rows for these models have them, or alone) is
learned on the probe. So the collator checks the model it is given: the probe batch, padded and
padding-free, must give the same logits for each sample's tokens.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from copy import deepcopy
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


ROPE_METHOD = "get_rope_index"  # transformers' method for positions a model computes from the image layout


def rope_owner(model: Any) -> Any:
    """The module of ``model`` (itself, then its submodules in order) that has a
    ``get_rope_index`` method, the one whose forward computes the positions from the image layout
    when given no ``position_ids``; ``None`` when none has."""
    modules = model.modules() if hasattr(model, "modules") else [model]
    return next((m for m in modules if callable(getattr(m, ROPE_METHOD, None))), None)


def weightless(module: Any) -> Any:
    """A copy of ``module`` (an ``nn.Module``) without its weights: its class, so its methods,
    and its plain attributes (its config, sizes, flags), deep-copied; no parameters, buffers,
    submodules, hooks or tensors. Small to pickle into dataloader workers, and it keeps the model
    itself out of the collator. A method that needs more than this fails on the copy, which the
    probe shows (:func:`check_model`)."""
    import torch

    fresh = vars(torch.nn.Module())  # the module machinery, empty
    kept = {k: v for k, v in vars(module).items() if k not in fresh and _plain(v)}
    copy = object.__new__(type(module))
    vars(copy).update(fresh)
    vars(copy).update(deepcopy(kept))
    return copy


def _plain(value: Any) -> bool:
    """Whether ``value`` is data a method may read (numbers, strings, containers of them, a
    model config), not a tensor, module, hook or function."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (tuple, list)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return callable(getattr(value, "to_dict", None)) and hasattr(value, "model_type")  # a transformers config


class ModelPositions:
    """A model's own positions for the samples of a padding-free row, for a model that computes
    them from the image layout: its ``get_rope_index`` (on a weightless copy, :func:`weightless`)
    run on the padded batch, which computes each row's positions from that row's real tokens and
    media, as the model's forward does for the padded batch; each row's real tokens then taken in
    order, as the ids are.

    Args:
        owner: the module with the method (:func:`rope_owner`), without its weights.
        text_row: put the row's plain positions (0..n-1 restarting at each sample) first, as a
            first axis: the form transformers' models with such positions take a packed row in
            (the first axis tells their attention mask where each sample starts; the others are
            the rotary positions); else the model's positions alone.
    """

    def __init__(self, owner: Any, text_row: bool):
        self.owner = owner
        self.text_row = text_row

    @property
    def name(self) -> str:
        return f"{type(self.owner).__name__}.{ROPE_METHOD}"

    def describe(self) -> str:
        """The form, for messages."""
        return (f"the positions of its own {self.name} for each sample" +
                (", after the row's 1-D positions as a first axis" if self.text_row else ", alone"))

    def __call__(self, batch: Mapping[str, Any], real: np.ndarray, text: np.ndarray) -> np.ndarray:
        """The ``position_ids`` of the row made of ``batch``'s rows (``real``: their real tokens;
        ``text``: the row's plain positions), of shape ``(axes, 1, tokens)``.

        Raises:
            SampleError: the method fails on this batch or returns positions of another shape.
        """
        import torch

        method = getattr(self.owner, ROPE_METHOD)
        takes = inspect.signature(method).parameters
        args = {k: torch.as_tensor(np.ascontiguousarray(as_numpy(v))) for k, v in batch.items()
                if k in takes and k != "labels"}
        if "attention_mask" in takes and "attention_mask" not in args:
            args["attention_mask"] = torch.as_tensor(real.astype(np.int64))
        try:
            with torch.no_grad():
                result = method(**args)
        except Exception as exc:  # noqa: BLE001 - said with the model's method named
            raise SampleError(f"padding_free=True: {self.name} fails on this batch ({type(exc).__name__}: {exc}); "
                              "use padding_free=False") from exc
        found = as_numpy(result[0] if isinstance(result, (tuple, list)) else result)
        if found.ndim != 3 or found.shape[1:] != real.shape:
            raise SampleError(f"padding_free=True: {self.name} returns positions of shape {found.shape}, not (axes, "
                              f"batch, sequence) = (axes, {real.shape[0]}, {real.shape[1]}); use padding_free=False")
        own = found[:, real].astype(np.int64)  # (axes, tokens): each row's real tokens, rows in order
        return (np.concatenate([text[None, :], own]) if self.text_row else own)[:, None, :]

    def __repr__(self) -> str:
        return f"ModelPositions({self.name}, text_row={self.text_row})"


def flatten_processed(batch: Mapping[str, Any], layout: Mapping[str, str], tensors: str,
                      positions: ModelPositions | None = None) -> dict[str, Any]:
    """A processor's padded batch (with ``labels``) as one padding-free row: ``input_ids``,
    ``labels`` and the per-token outputs concatenated over each row's real tokens (its
    ``attention_mask``), in row order; the image outputs as they are; ``position_ids`` restarting
    at each sample, ``cu_seq_lens_q/k``, ``max_length_q/k``, ``use_cache=False`` (as
    :meth:`ResponseOnlyCollator.flatten` makes them for text), and -100 on each sample's first label.

    Args:
        positions: the model's own positions (:class:`ModelPositions`), computed on ``batch``, for
            a model that computes them from the image layout; ``position_ids`` is then of shape
            ``(axes, 1, tokens)``.

    Raises:
        SampleError: an output the probe did not see whose kind this batch does not show, or the
            model's positions cannot be computed for this batch.
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
    text = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out["position_ids"] = text[None, :] if positions is None else positions(batch, real, text)
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


def check_model(masker: Any, layout: Mapping[str, str], model: Any,
                padding_side: str | None = None) -> ModelPositions | None:
    """Whether ``model`` takes padding-free rows of ``masker``'s processor (outputs laid out as
    ``layout`` says) as it takes padded batches, and with which positions: the probe batch
    (:func:`probe_rows`) padded and padding-free must give the same logits for each sample's
    tokens (within float tolerance: 1e-4 of the largest logit in float32, 2e-2 in half precision).

    The positions tried, in order: for a model that computes its positions from the image layout
    and exposes how (:func:`rope_owner`), its own positions for each sample after the row's 1-D
    positions, then alone (:class:`ModelPositions`); then the row's 1-D positions restarting at
    each sample. The first the model takes is the one the collator gives it.

    The model runs in eval mode (no dropout) without gradients and gets its mode back.

    Args:
        padding_side: the padded batch's side (default: the tokenizer's).

    Returns:
        The model's positions to give each row, or ``None`` for the row's 1-D positions.

    Raises:
        ValueError: the model rejects the padding-free row, or gives other logits with every form
            of positions; the message says by how much and what causes it.
    """
    import torch

    from ._collator import ResponseOnlyCollator

    padded = ResponseOnlyCollator(masker, return_tensors="pt", on_untrainable="keep",
                                  padding_side=padding_side)(probe_rows(masker))
    owner = rope_owner(model)
    candidates: list[ModelPositions | None] = []
    if owner is not None:
        copy = weightless(owner)
        candidates += [ModelPositions(copy, text_row=True), ModelPositions(copy, text_row=False)]
    candidates.append(None)
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
    real = as_numpy(padded["attention_mask"]).astype(bool)
    tried: list[tuple[ModelPositions | None, list[float] | str]] = []  # each form, with its diffs or error
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            padded_logits = model(**moved(padded)).logits.float().cpu()
            scale = float(padded_logits.abs().max()) or 1.0
            tolerance = (1e-4 if dtype == torch.float32 or dtype == torch.float64 else 2e-2) * scale
            method_fails = False
            for positions in candidates:
                if positions is not None and method_fails:
                    continue  # the same call, for another form
                try:
                    free = flatten_processed(padded, layout, "pt", positions)
                except SampleError as exc:  # the model's method, on its weightless copy
                    cause = exc.__cause__
                    tried.append((positions, exc.problem if cause is None else
                                  f"{positions.name} does not run on a copy of its module without the weights "
                                  f"({type(cause).__name__}: {cause})"))
                    method_fails = True
                    continue
                try:
                    free_logits = model(**moved(free)).logits.float().cpu()
                except Exception as exc:  # noqa: BLE001 - said in the refusal
                    if len(candidates) == 1:
                        raise ValueError(f"padding_free=True: {name} rejects a padding-free row of the processor's "
                                         f"outputs ({type(exc).__name__}: {exc}); use padding_free=False") from exc
                    tried.append((positions, f"{name} rejects the row ({type(exc).__name__}: {exc})"))
                    continue
                cu = as_numpy(free["cu_seq_lens_q"])
                diffs = [float((padded_logits[r][torch.from_numpy(real[r])] -
                                free_logits[0][int(cu[r]):int(cu[r + 1])]).abs().max()) for r in range(real.shape[0])]
                if max(diffs) <= tolerance:
                    return positions
                tried.append((positions, diffs))
    finally:
        model.train(training)
    raise ValueError(_refusal(name, tried, tolerance, scale, owner is not None, dtype.itemsize < 4))


def _refusal(name: str, tried: list[tuple[ModelPositions | None, list[float] | str]], tolerance: float,
             scale: float, has_method: bool, half: bool) -> str:
    """Why ``name`` is refused: for each form of positions tried, the model's error or how much
    its logits differ and what that shows (``half``: the model runs in half precision, whose
    rounding can hide a difference on the first sample)."""
    parts = []
    for positions, result in tried:
        if isinstance(result, str):
            form = ("the row's 1-D position_ids" if positions is None else
                    f"the positions of its own {positions.name}")
            parts.append(f"with {form}: {result}")
            continue
        diffs = result
        if positions is None:
            form = "the row's restarting 1-D position_ids"
            if diffs[0] > tolerance:
                why = ("the first sample already differs, although nothing precedes it in the row: the model does not "
                       "position its tokens by the row's restarting 1-D position_ids (it computes positions from the "
                       "image layout, as multi-axis rotary positions are computed from input_ids, mm_token_type_ids, "
                       "image_grid_thw and attention_mask; " +
                       ("its own positions were tried first" if has_method else
                        f"the collator computes such positions with the model's own {ROPE_METHOD}, which this model "
                        "does not have") + ")")
            else:
                why = ("the first sample agrees and the next differs: the model does not keep the samples of the row "
                       "apart (attention blocks over image tokens, as Gemma 3 builds from token_type_ids, that its "
                       "packed-sequence mask does not confine to one sample)" +
                       (", or it positions their tokens otherwise than by the row's 1-D position_ids by less than "
                        "this precision shows on the first sample (multi-axis rotary positions computed from the "
                        "image layout, in half precision)" if half else ""))
        else:
            form = positions.describe()
            why = ("the first sample already differs, although nothing precedes it in the row and its positions are "
                   "the model's own: the model takes these positions otherwise than its forward computes them"
                   if diffs[0] > tolerance else
                   "the first sample agrees and the next differs: the model does not keep the samples of the row apart "
                   "with these positions")
        parts.append(f"with {form}, its logits differ by up to {max(diffs):.3g}: {why}")
    return (f"padding_free=True: {name} does not take a padding-free row as it takes the padded batch: on a probe "
            f"batch of two chats with media (largest logit {scale:.3g}), " + "; ".join(parts) +
            ". Use padding_free=False (padding) with this model.")
