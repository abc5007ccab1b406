"""Padding-free batches with a processor (issue 28 item 5).

``ResponseOnlyCollator(processor, padding_free=True, model=model)`` concatenates the processor's
padded batch into one row. The reference is the padded batch of the same rows, through the same
tiny randomly initialised model (the real model class, CPU, float32): each sample's logits in the
row must be those of its padded row, and the loss the same. LLaVA (CLIP + Llama) and Mistral 3
(Pixtral + Mistral) take such rows with 1-D positions; Qwen2-VL computes its multi-axis rotary
positions from the image layout, so the collator gives it each sample's own positions (computed by
the model's ``get_rope_index``) after the row's 1-D positions, the form its packed rows take.
Gemma 3 (image attention blocks that its packed mask does not confine to one sample,
transformers 5.x) and a model that computes positions without exposing how do not take such rows,
which the collator finds on its probe batch and says; processors with per-sample outputs
(Idefics3, SmolVLM, Mllama) are refused by their outputs' shapes.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
pytest.importorskip("PIL")

import respmask  # noqa: E402
import respmask._media_flat  # noqa: E402
from respmask._media_flat import ModelPositions, flatten_processed, output_layout  # noqa: E402
from support.vision import build_processor, image_token_ids, make_image, tiny_model  # noqa: E402

ANIMALS = ["cat", "dog", "bird", "fish"]


def rows(images_per_row=(1, 2, 0), say: int = 1):
    """Chats of several turns, each user turn with one image (none for a 0), replies of different
    lengths; the images inline in their parts."""
    out = []
    for i, k in enumerate(images_per_row):
        messages = []
        for j in range(max(k, 1)):
            parts = [{"type": "image", "image": make_image(40 + 8 * j, 32 + 4 * i, seed=10 * i + j)}] if k else []
            messages += [
                {"role": "user", "content": parts + [{"type": "text", "text": f"what is in picture {j}" + " now" * i}]},
                {"role": "assistant", "content": [{"type": "text", "text": f"a {ANIMALS[(i + j) % 4]} sitting" * say}]},
            ]
        out.append({"messages": messages})
    return out


@pytest.fixture(scope="module", params=["llava", "mistral3", "qwen2_vl"])
def family(request):
    processor = build_processor(request.param, tiny=True)
    return request.param, processor, tiny_model(request.param, processor).eval()


@functools.cache
def shared(processor):
    """One masker per processor for the whole file, as a ChatMasker is meant to be shared (each new
    one measures the tokenizer's vocabulary: 0.1-1 s for these 32k-262k vocabularies). The README
    block and the refusals before any model is needed pass the processor itself, as users do."""
    return respmask.ChatMasker(processor)


def images_in(batch):
    """How many images a processor's batch holds (Qwen2-VL's pixel_values are patches: one grid each)."""
    return len(batch["image_grid_thw"] if "image_grid_thw" in batch else batch["pixel_values"])


def hide_the_position_method(monkeypatch):
    """Make respmask look for the models' position method under a name no model has: Qwen2-VL then
    stands for a model that computes its positions from the image layout without exposing how."""
    monkeypatch.setattr(respmask._media_flat, "ROPE_METHOD", "no_such_method")


def logits(model, batch):
    with torch.no_grad():
        keep = {k: v for k, v in batch.items() if k != "labels"}
        return model(**keep).logits


def compare(processor, model, samples, **kw):
    """The padded and the padding-free batch of ``samples``, the padding-free collator, each
    sample's largest logit difference, and the two batches' losses (from the same forward passes)."""
    masker = shared(processor)
    padded = respmask.ResponseOnlyCollator(masker, on_untrainable="keep", **kw)(samples)
    collator = respmask.ResponseOnlyCollator(masker, on_untrainable="keep", padding_free=True, model=model, **kw)
    free = collator(samples)
    real = padded["attention_mask"].bool()
    cu = free["cu_seq_lens_q"].tolist()
    with torch.no_grad():
        op, of = model(**padded), model(**free)
    lp, lf = op.logits, of.logits
    diffs = [float((lp[r][real[r]] - lf[0][cu[r]:cu[r + 1]]).abs().max()) for r in range(len(real))]
    return padded, free, collator, diffs, (float(op.loss), float(of.loss))


def test_padding_free_row_gives_each_sample_its_padded_logits_and_loss(family):
    name, processor, model = family
    padded, free, collator, diffs, (loss_padded, loss_free) = compare(processor, model, rows())
    assert max(diffs) < 1e-5, diffs
    real = padded["attention_mask"].bool()
    lengths = real.sum(1).tolist()
    # the row: each sample's real ids and labels in order, positions restarting, its boundaries
    assert free["input_ids"][0].tolist() == torch.cat([padded["input_ids"][r][real[r]] for r in range(3)]).tolist()
    starts = np.cumsum([0] + lengths)
    assert free["cu_seq_lens_q"].tolist() == starts.tolist() == free["cu_seq_lens_k"].tolist()
    text_positions = [p for n in lengths for p in range(n)]
    if name == "qwen2_vl":  # its own positions: the row's 1-D positions, then each sample's 3 rotary axes
        assert free["position_ids"].shape == (4, 1, sum(lengths))
        assert free["position_ids"][0, 0].tolist() == text_positions
        for r, sample in enumerate(rows()):  # each sample's, as the model computes them for it alone
            alone = respmask.ResponseOnlyCollator(shared(processor))([sample])
            own, _ = model.model.get_rope_index(alone["input_ids"], alone["mm_token_type_ids"],
                                                alone.get("image_grid_thw"), attention_mask=alone["attention_mask"])
            assert free["position_ids"][1:, 0, starts[r]:starts[r + 1]].tolist() == own[:, 0].tolist()
        assert (free["position_ids"][1:] != free["position_ids"][:1]).any()  # image tokens: on their grid
    else:
        assert free["position_ids"].tolist() == [text_positions]
    assert free["max_length_q"] == max(lengths) and free["use_cache"] is False and "attention_mask" not in free
    padded_labels = torch.cat([padded["labels"][r][real[r]] for r in range(3)])
    padded_labels[starts[:-1]] = -100
    assert free["labels"][0].tolist() == padded_labels.tolist()
    assert (free["labels"] != -100).sum() > 0
    assert not np.isin(free["labels"][0].numpy(), image_token_ids(processor)).any()  # image tokens never trained
    # the images, as the processor returns them for the batch: 3 images, in sample order; the
    # per-token outputs (Qwen2-VL's mm_token_type_ids) concatenated as the ids are
    for key in padded:
        if key in ("input_ids", "attention_mask", "labels"):
            continue
        if collator._layout[key] == "token":
            assert free[key][0].tolist() == torch.cat([padded[key][r][real[r]] for r in range(3)]).tolist(), key
        else:
            assert torch.equal(free[key], padded[key]), key
    assert images_in(free) == 3
    assert math.isclose(loss_padded, loss_free, rel_tol=1e-5)


def test_qwen2_vl_takes_its_own_positions_after_the_rows_1d_positions():
    # the form is learned on the probe: Qwen2-VL's own positions alone (no first axis telling its
    # attention where each sample starts) keep the first sample right and let the next see it, and
    # the row's 1-D positions alone change even the first sample (its image tokens lose their grid)
    processor = build_processor("qwen2_vl", tiny=True)
    model = tiny_model("qwen2_vl", processor).eval()
    collator = respmask.ResponseOnlyCollator(shared(processor), padding_free=True, model=model)
    assert collator._positions.text_row is True
    padded = respmask.ResponseOnlyCollator(shared(processor))(rows())
    real = padded["attention_mask"].bool()
    lp = logits(model, padded)

    def diffs(positions):
        free = flatten_processed(padded, collator._layout, "pt", positions)
        lf, cu = logits(model, free), free["cu_seq_lens_q"].tolist()
        return [float((lp[r][real[r]] - lf[0][cu[r]:cu[r + 1]]).abs().max()) for r in range(3)]

    tolerance = 1e-4 * float(lp.abs().max())  # the check's, in float32
    assert max(diffs(collator._positions)) < 1e-5
    alone = diffs(ModelPositions(collator._positions.owner, text_row=False))
    assert alone[0] < 1e-5 and max(alone[1:]) > 10 * tolerance, alone
    assert diffs(None)[0] > 10 * tolerance
    # the method runs on a copy of its module without weights: nothing of the model is kept
    owner = collator._positions.owner
    assert type(owner) is type(model.model) and not list(owner.parameters()) and not list(owner.children())
    assert owner.config.to_dict() == model.model.config.to_dict() and owner.config is not model.model.config
    # the row is the same from the batch padded on the left (the method is given each row's
    # attention_mask): each row's per-token arrays rolled so that its padding comes first
    right = flatten_processed(padded, collator._layout, "np", collator._positions)
    pad = (~real).sum(1).tolist()
    left_padded = {k: torch.stack([v[r].roll(pad[r]) for r in range(3)]) if v.shape[:2] == real.shape else v
                   for k, v in padded.items()}
    assert not left_padded["attention_mask"][:, 0].all() and left_padded["attention_mask"][:, -1].all()
    left = flatten_processed(left_padded, collator._layout, "np", collator._positions)
    assert all(np.array_equal(right[k], left[k]) for k in ("input_ids", "position_ids", "labels"))
    # eager attention takes the same row
    model.set_attn_implementation("eager")
    assert max(compare(processor, model, rows())[3]) < 1e-5


@pytest.mark.parametrize("name, processor_name", [("qwen2_5_vl", "qwen2_vl"), ("qwen3_vl", "qwen3_vl")])
def test_other_models_computing_their_positions_get_their_own(name, processor_name):
    # the same mechanism, nothing per model: Qwen2.5-VL (windowed vision attention) and Qwen3-VL
    # (interleaved M-RoPE, deepstack) each get their own get_rope_index's positions, and then each
    # sample's logits and the loss are the padded batch's; the 1-D row alone is not (positions matter)
    processor = build_processor(processor_name, tiny=True)
    model = tiny_model(name, processor).eval()
    padded, free, collator, diffs, losses = compare(processor, model, rows())
    assert collator._positions.text_row and type(collator._positions.owner) is type(model.model)
    assert max(diffs) < 1e-5, diffs
    assert math.isclose(*losses, rel_tol=1e-5)
    one_d = flatten_processed(padded, collator._layout, "pt")  # the row's 1-D positions: positions matter
    real, cu = padded["attention_mask"].bool(), one_d["cu_seq_lens_q"].tolist()
    lp, lf = logits(model, padded), logits(model, one_d)
    assert float((lp[0][real[0]] - lf[0][cu[0]:cu[1]]).abs().max()) > 1e-3 * float(lp.abs().max())


def test_padding_free_after_truncation_between_images(family):
    # long chats cut by max_length (images dropped with the text past the cut), then concatenated
    name, processor, model = family
    samples = rows((3, 1, 2), say=3)
    whole = respmask.ResponseOnlyCollator(shared(processor), return_tensors="np")(samples)
    lengths = whole["attention_mask"].sum(1)
    ids = whole["input_ids"][0][whole["attention_mask"][0].astype(bool)]  # the longest chat: three images
    media = np.flatnonzero(np.isin(ids, image_token_ids(processor)))
    last_start = media[np.flatnonzero(np.diff(media) > 1)[-1] + 1]  # where its last image's tokens begin
    max_length = int(max(last_start + 1, *lengths[1:]))  # through that image: it is dropped; the others fit
    assert lengths[0] == lengths.max() and max_length < media[-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", respmask.RespmaskWarning)
        padded, free, collator, diffs, _ = compare(processor, model, samples, max_length=max_length)
    assert collator.stats.images_dropped == 1 and collator.stats.truncated == 1
    assert max(diffs) < 1e-5, diffs
    assert max(np.diff(free["cu_seq_lens_q"].numpy())) <= max_length
    assert images_in(free) == images_in(padded) == 6 - collator.stats.images_dropped


def test_numpy_and_pickled_collator(family):
    import pickle

    name, processor, model = family
    collator = respmask.ResponseOnlyCollator(shared(processor), padding_free=True, model=model, return_tensors="np")
    again = pickle.loads(pickle.dumps(collator))  # dataloader workers: the model is not kept
    assert "model" not in vars(again) and again._layout == collator._layout
    a, b = collator(rows()), again(rows())
    assert isinstance(a["input_ids"], np.ndarray) and a["input_ids"].shape[0] == 1
    assert a["input_ids"].tolist() == b["input_ids"].tolist() and a["labels"].tolist() == b["labels"].tolist()
    assert isinstance(a["position_ids"], np.ndarray) and a["position_ids"].tolist() == b["position_ids"].tolist()
    if collator._positions is not None:  # the model's position method travels without the model's weights
        assert len(pickle.dumps(collator._positions)) < 20_000
        assert a["position_ids"].shape == (4, 1, a["input_ids"].shape[1])


@pytest.mark.parametrize("name, hidden, reason", [
    # M-RoPE computed inside the forward, with no get_rope_index to compute it with
    ("qwen2_vl", True, r"the first sample already differs.*the model's own \w+, which this model does not have"),
    ("gemma3", False, "the first sample agrees and the next differs"),  # image blocks not confined to one sample
])
def test_a_model_that_does_not_take_the_row_is_refused_with_why(name, hidden, reason, monkeypatch):
    if hidden:
        hide_the_position_method(monkeypatch)
    processor = build_processor(name, tiny=True)
    model = tiny_model(name, processor)
    # the processor's outputs can be concatenated (per token, or the batch's images): the refusal is the model's
    probe = respmask.ResponseOnlyCollator(shared(processor))(rows((1, 2, 2)))  # more images than rows
    layout, refused = output_layout(probe, 3)
    assert not refused and set(layout.values()) <= {"token", "images"}
    # ... and the model does give other logits for the concatenated row (what the check finds)
    free = flatten_processed(probe, layout, "pt")
    real = probe["attention_mask"].bool()
    cu = free["cu_seq_lens_q"].tolist()
    lp, lf = logits(model.eval(), probe), logits(model, free)
    assert max(float((lp[r][real[r]] - lf[0][cu[r]:cu[r + 1]]).abs().max()) for r in range(3)) > 1e-3
    model.train()
    refusal = f"{type(model).__name__} does not take a padding-free row.*{reason}"
    with pytest.raises(ValueError, match=refusal) as info:
        respmask.ResponseOnlyCollator(shared(processor), padding_free=True, model=model)
    assert "in half precision" not in str(info.value)  # float32: no rounding to blame
    assert model.training  # its mode given back


def test_a_position_method_that_needs_the_weights_is_refused_with_why(monkeypatch):
    # the method runs on a copy of its module that keeps only plain attributes and the config; one
    # that needs more (here: a copy keeping nothing, so not even the config) fails there, once for
    # both forms, and the model is judged on the 1-D positions (which Qwen2-VL does not take)
    monkeypatch.setattr(respmask._media_flat, "_plain", lambda value: False)
    processor = build_processor("qwen2_vl", tiny=True)
    model = tiny_model("qwen2_vl", processor)
    with pytest.raises(ValueError) as info:
        respmask.ResponseOnlyCollator(shared(processor), padding_free=True, model=model)
    message = str(info.value)
    assert message.count("does not run on a copy of its module without the weights (AttributeError") == 1
    assert "Qwen2VLModel.get_rope_index" in message and "'config'" in message
    assert "with the row's restarting 1-D position_ids" in message and "the first sample already differs" in message


@pytest.mark.parametrize("name, keys", [
    ("idefics3", ["'pixel_values'", "'pixel_attention_mask'"]),
    ("smolvlm", ["'pixel_values'", "'pixel_attention_mask'"]),
    ("mllama", ["'cross_attention_mask'", "'pixel_values'", "'aspect_ratio_ids'"]),
])
def test_a_processor_with_per_sample_outputs_is_refused_naming_them(name, keys):
    processor = build_processor(name, tiny=True)
    with pytest.raises(ValueError, match="one row of several samples cannot hold") as info:
        respmask.ResponseOnlyCollator(processor, padding_free=True)  # refused before a model is needed
    for key in keys:
        assert key in str(info.value)


def test_the_model_is_required(family):
    name, processor, _ = family
    with pytest.raises(ValueError, match=r"needs the model: ResponseOnlyCollator\(processor, padding_free=True, "
                                         r"model=model\)"):
        respmask.ResponseOnlyCollator(processor, padding_free=True)
    with pytest.raises(ValueError, match="pad_to_multiple_of is not supported"):
        respmask.ResponseOnlyCollator(processor, pad_to_multiple_of=8)


@pytest.mark.parametrize("name", ["llava", "qwen2_vl"])
def test_trainer_runs_padding_free_as_it_runs_padded(tmp_path, name):
    # a real Trainer run (LLaVA: 1-D positions; Qwen2-VL: its own positions): three optimizer
    # steps padding-free and padded, from the same weights on the same batches, log the same
    # losses and end with the same weights
    datasets = pytest.importorskip("datasets")
    processor = build_processor(name, tiny=True)
    samples = rows((1, 2, 0, 1, 1, 2), say=2)
    ds = datasets.Dataset.from_list([{"messages": s["messages"]} for s in samples])
    runs = {}
    for free in (False, True):
        model = tiny_model(name, processor)
        collator = respmask.ResponseOnlyCollator(shared(processor), padding_free=free, model=model if free else None)
        args = transformers.TrainingArguments(
            output_dir=str(tmp_path / str(free)), per_device_train_batch_size=2, max_steps=3, learning_rate=1e-2,
            logging_steps=1, report_to=[], save_strategy="no", remove_unused_columns=False, seed=0,
            dataloader_num_workers=0, use_cpu=True)
        trainer = transformers.Trainer(model=model, args=args, train_dataset=ds, data_collator=collator)
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        runs[free] = (losses, {k: v.detach().clone() for k, v in model.state_dict().items()}, collator.stats)
    (padded_losses, padded_weights, _), (free_losses, free_weights, stats) = runs[False], runs[True]
    assert len(free_losses) == 3 and all(math.isfinite(x) for x in free_losses)
    assert np.allclose(free_losses, padded_losses, rtol=1e-4), (free_losses, padded_losses)
    # Adam moves each weight by ~lr per step; the two runs agree to float noise (Adam scales up the
    # ~0 gradients of attention key biases, hence 1e-4 rather than 1e-6)
    start = tiny_model(name, processor).state_dict()
    assert max(float((free_weights[k] - start[k]).abs().max()) for k in start) > 1e-2
    assert max(float((free_weights[k] - padded_weights[k]).abs().max()) for k in start) < 1e-4
    assert stats.batches == 3 and stats.trained_tokens > 0


# the block runs as written, so with the Trainer's dataloader_pin_memory=True on this CPU (torch
# warns that pinning needs an accelerator: a note about the machine, not the code)
@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true but no accelerator:UserWarning")
def test_readme_block_runs_as_written(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    from test_recipes import python_blocks, run

    [(_, code)] = python_blocks("Padding-free batches with a processor")
    processor = build_processor("llava", tiny=True)
    model = tiny_model("llava", processor)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ds = datasets.Dataset.from_list([{"messages": s["messages"]} for s in rows((1, 2, 0, 1), say=2)])
    ns = run(code, tmp_path, monkeypatch, processor=processor, model=model, ds=ds)
    collator = ns["collator"]
    assert collator.padding_free and collator._layout == {"pixel_values": "images"}
    assert collator.stats.batches == 3 and collator.stats.samples == 12  # 3 epochs of one batch of 4 rows
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())  # it trained


@pytest.mark.parametrize("name, hidden, accepted", [
    ("llava", False, True), ("qwen2_vl", False, True), ("qwen2_vl", True, False)])
def test_a_bfloat16_model_is_judged_within_bfloat16_noise(name, hidden, accepted, monkeypatch):
    # the same model in bfloat16: padded and padding-free differ by rounding, which the check allows
    # (LLaVA, and Qwen2-VL with its own positions, are accepted), while the position mismatch of
    # Qwen2-VL given 1-D positions is far larger (refused)
    if hidden:
        hide_the_position_method(monkeypatch)
    processor = build_processor(name, tiny=True)
    model = tiny_model(name, processor).to(torch.bfloat16)
    if accepted:
        collator = respmask.ResponseOnlyCollator(shared(processor), padding_free=True, model=model)
        assert collator(rows())["input_ids"].shape[0] == 1
    else:  # Qwen2-VL's positions: the first sample's difference is below bfloat16's rounding, the next's is not
        with pytest.raises(ValueError, match="does not take a padding-free row.*the first sample agrees and the next "
                                             "differs.*multi-axis rotary positions.*in half precision"):
            respmask.ResponseOnlyCollator(shared(processor), padding_free=True, model=model)


def test_the_verdict_is_the_models_behaviour_not_its_family():
    # Gemma 3 with full-attention layers only takes the row (its image blocks are confined to one
    # sample there); its sliding-window layers are what the row changes in transformers 5.x (the
    # blockwise overlay is composed before the packed-sequence positions are remapped)
    processor = build_processor("gemma3", tiny=True)
    config = tiny_model("gemma3", processor).config
    config.text_config.layer_types = ["full_attention"]
    torch.manual_seed(0)
    model = transformers.Gemma3ForConditionalGeneration(config).eval()
    collator = respmask.ResponseOnlyCollator(shared(processor), padding_free=True, model=model)
    padded = respmask.ResponseOnlyCollator(shared(processor))(rows())
    free = collator(rows())
    real = padded["attention_mask"].bool()
    cu = free["cu_seq_lens_q"].tolist()
    lp, lf = logits(model, padded), logits(model, free)
    assert max(float((lp[r][real[r]] - lf[0][cu[r]:cu[r + 1]]).abs().max()) for r in range(3)) < 1e-5
    assert free["token_type_ids"].shape == free["input_ids"].shape  # concatenated with the ids
