"""Training for real on CPU: Trainer and TRL's SFTTrainer with ResponseOnlyCollator, the
"did not return a loss" failures and how respmask stops them, padding-free batches, options."""

from __future__ import annotations

import math

import pytest
import torch

datasets = pytest.importorskip("datasets")
transformers = pytest.importorskip("transformers")

import respmask  # noqa: E402
from respmask import Pretokenizer, ResponseOnlyCollator, UntrainableSampleError  # noqa: E402
from support.tokenizers import fixture_tokenizer, shared_dir, shared_tokenizer  # noqa: E402
from test_trainer import _args, manual_loss, rows, tiny_model  # noqa: E402


def tokenizers_under_test():
    out = [pytest.param(lambda: fixture_tokenizer("qwen2_5"), id="small-qwen2_5")]
    out.append(pytest.param(lambda: shared_tokenizer("qwen3"), id="real-qwen3",
                            marks=pytest.mark.skipif(shared_dir() is None, reason="real tokenizers not available")))
    return out


@pytest.mark.parametrize("make_tok", tokenizers_under_test())
def test_loss_decreases_and_equals_manual_cross_entropy(tmp_path, make_tok):
    tok = make_tok()
    collator = ResponseOnlyCollator(tok)
    model = tiny_model(len(tok))
    ds = datasets.Dataset.from_list(rows(8))
    trainer = transformers.Trainer(model=model, args=_args(tmp_path, max_steps=30, remove_unused_columns=False),
                                   train_dataset=ds, data_collator=collator)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 30 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) / 5 < 0.75 * sum(losses[:5]) / 5  # a repeated tiny dataset is being learned
    model.eval()
    batch = collator(rows(4))
    with torch.no_grad():
        assert torch.allclose(trainer.compute_loss(model, batch), manual_loss(model, batch), atol=1e-5)


def test_trl_sft_trainer_with_respmask_collator(tmp_path):
    trl = pytest.importorskip("trl")
    tok = fixture_tokenizer("qwen2_5")
    model = tiny_model(len(tok))
    collator = ResponseOnlyCollator(tok)
    config = trl.SFTConfig(
        output_dir=str(tmp_path), max_steps=12, per_device_train_batch_size=4, learning_rate=5e-3, logging_steps=1,
        report_to=[], use_cpu=True, save_strategy="no", seed=0, disable_tqdm=True,
        remove_unused_columns=False,                     # keep "messages" for the collator
        dataset_kwargs={"skip_prepare_dataset": True},   # respmask tokenizes: skip TRL's own preparation
    )
    ds = datasets.Dataset.from_list(rows(8))
    trainer = trl.SFTTrainer(model=model, args=config, train_dataset=ds, processing_class=tok, data_collator=collator)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 12 and all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    model.eval()
    batch = collator(rows(4))
    with torch.no_grad():
        assert torch.allclose(model(**batch).loss, manual_loss(model, batch), atol=1e-5)


# -- the seed failure: "The model did not return a loss from the inputs, only the following keys: logits"

NO_LOSS = "did not return a loss from the inputs"


def _pretokenized_without_labels(tok):
    ds = datasets.Dataset.from_list(rows(8))
    return ds.map(lambda b: {"input_ids": tok.apply_chat_template(b["messages"], return_dict=True)["input_ids"]},
                  batched=True, remove_columns=ds.column_names)


def _tok_with_pad():
    from support.tokenizers import build_tokenizer, manifest, template_source

    info = manifest()["qwen2_5"]
    return build_tokenizer(template_source("qwen2_5"), eos=info["eos_token"], special=info["special_tokens"],
                           pad="<|endoftext|>")


def test_seq2seq_collator_on_data_without_labels_fails_and_respmask_fixes_it(tmp_path):
    tok = _tok_with_pad()
    ds = _pretokenized_without_labels(tok)
    bad = transformers.DataCollatorForSeq2Seq(tok)
    trainer = transformers.Trainer(model=tiny_model(len(tok)), args=_args(tmp_path, max_steps=2),
                                   train_dataset=ds, data_collator=bad)
    report = respmask.check_trainer(trainer)
    assert not report.ok and "no 'labels'" in report.problems[0].what and NO_LOSS in report.problems[0].what
    assert "DataCollatorForSeq2Seq" in report.problems[0].cause
    with pytest.raises(ValueError, match=NO_LOSS):
        trainer.train()
    # the fix: respmask's collator on the raw conversations
    raw = datasets.Dataset.from_list(rows(8))
    good = transformers.Trainer(model=tiny_model(len(tok)), args=_args(tmp_path, max_steps=2, remove_unused_columns=False),
                                train_dataset=raw, data_collator=ResponseOnlyCollator(tok))
    assert respmask.check_trainer(good).ok
    assert math.isfinite(good.train().training_loss)


def test_collator_that_drops_labels_is_caught(tmp_path):
    tok = fixture_tokenizer("qwen2_5")
    inner = ResponseOnlyCollator(tok)

    def drops_labels(features):
        batch = inner(features)
        batch.pop("labels")
        return batch

    trainer = transformers.Trainer(model=tiny_model(len(tok)), args=_args(tmp_path, max_steps=1, remove_unused_columns=False),
                                   train_dataset=datasets.Dataset.from_list(rows(4)), data_collator=drops_labels)
    assert any("no 'labels'" in p.what for p in respmask.check_trainer(trainer).problems)
    with pytest.raises(ValueError, match=NO_LOSS):
        trainer.train()


def test_remove_unused_columns_dropping_messages_is_explained(tmp_path):
    tok = fixture_tokenizer("qwen2_5")
    ds = datasets.Dataset.from_list(rows(4))
    trainer = transformers.Trainer(model=tiny_model(len(tok)), args=_args(tmp_path, max_steps=1),  # default True
                                   train_dataset=ds, data_collator=ResponseOnlyCollator(tok))
    report = respmask.check_trainer(trainer)
    assert not report.ok and "remove_unused_columns=False" in report.problems[0].fix
    # a torch Dataset goes through Trainer's per-feature column removal: respmask names both fixes
    class Plain(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return rows(4)[i]

    trainer2 = transformers.Trainer(model=tiny_model(len(tok)), args=_args(tmp_path, max_steps=1),
                                    train_dataset=Plain(), data_collator=ResponseOnlyCollator(tok))
    with pytest.raises(respmask.MissingColumnsError, match="remove_unused_columns=False.*Pretokenizer"):
        trainer2.train()
    # the other fix: pre-tokenize, then the default column removal keeps input_ids and labels
    pre = ds.map(Pretokenizer(tok), batched=True, remove_columns=ds.column_names)
    ok = transformers.Trainer(model=tiny_model(len(tok)), args=_args(tmp_path, max_steps=1), train_dataset=pre,
                              data_collator=ResponseOnlyCollator(tok))
    assert respmask.check_trainer(ok).ok and math.isfinite(ok.train().training_loss)


def test_all_masked_labels_give_nan_and_respmask_stops_early(tmp_path):
    tok = fixture_tokenizer("qwen2_5")
    model = tiny_model(len(tok))
    ids = torch.tensor([tok.apply_chat_template(rows(1)[0]["messages"], return_dict=True)["input_ids"]])
    loss = model(input_ids=ids, labels=torch.full_like(ids, -100)).loss
    assert torch.isnan(loss)  # what an all-masked batch does to training
    # truncation that cuts every reply: respmask raises before the model sees it, naming the sample
    collator = ResponseOnlyCollator(tok, max_length=12, on_untrainable="raise")
    trainer = transformers.Trainer(model=model, args=_args(tmp_path, max_steps=1, remove_unused_columns=False),
                                   train_dataset=datasets.Dataset.from_list(rows(4)), data_collator=collator)
    report = respmask.check_trainer(trainer)
    assert [p.what for p in report.problems] == ["4 sample(s) lose every trained token to truncation (rows 0, 1, 2, 3)"]
    assert "max_length=12" in report.problems[0].cause
    with pytest.raises(UntrainableSampleError, match="sample 0: no trained token: truncation to max_length=12"):
        trainer.train()


# -- padding-free batches


def test_padding_free_loss_equals_padded_loss(tmp_path):
    tok = fixture_tokenizer("qwen2_5")
    model = tiny_model(len(tok))
    data = rows(6)
    padded = ResponseOnlyCollator(tok)(data)
    flat = ResponseOnlyCollator(tok, padding_free=True)(data)
    assert flat["input_ids"].shape[0] == 1 and "attention_mask" not in flat
    lengths = padded["attention_mask"].sum(1)
    assert flat["cu_seq_lens_q"].tolist() == [0, *torch.cumsum(lengths, 0).tolist()]
    assert flat["max_length_q"] == int(lengths.max())
    for impl in ("eager", "sdpa"):
        model.config._attn_implementation = impl
        for mode in (model.eval, model.train):
            mode()
            with torch.no_grad():
                assert torch.allclose(model(**padded).loss, model(**flat).loss, atol=1e-5), (impl, mode)
    # and inside Trainer
    trainer = transformers.Trainer(model=model, args=_args(tmp_path, max_steps=4, remove_unused_columns=False),
                                   train_dataset=datasets.Dataset.from_list(rows(8)),
                                   data_collator=ResponseOnlyCollator(tok, padding_free=True))
    assert math.isfinite(trainer.train().training_loss)


# -- options a trainer needs, on the tiny model


def _trained(tok, batch, row=0):
    return tok.decode([i for i, l in zip(batch["input_ids"][row].tolist(), batch["labels"][row].tolist()) if l != -100])


CHAT = {"messages": [
    {"role": "user", "content": "first question"}, {"role": "assistant", "content": "first answer"},
    {"role": "user", "content": "second question"},
    {"role": "assistant", "reasoning_content": "thinking hard", "content": "second answer"},
]}


@pytest.mark.parametrize("options,expected", [
    ({}, "first answer<|im_end|><think>\nthinking hard\n</think>\n\nsecond answer<|im_end|>"),
    ({"train_on": "last"}, "<think>\nthinking hard\n</think>\n\nsecond answer<|im_end|>"),
    ({"reasoning_in_loss": False}, "first answer<|im_end|>second answer<|im_end|>"),
    ({"max_length": 30, "truncation": "left"}, None),
    ({"max_length": 30, "truncation": "right"}, None),
])
def test_options_train_and_match_the_manual_loss(tmp_path, options, expected):
    tok = fixture_tokenizer("qwen3")
    collator = ResponseOnlyCollator(tok, on_untrainable="keep", **options)
    batch = collator([CHAT])
    if expected is not None:
        assert _trained(tok, batch) == expected
    else:
        n = batch["input_ids"].shape[1]
        assert n == 30
        full = ResponseOnlyCollator(tok)([CHAT])
        side = slice(-30, None) if options["truncation"] == "left" else slice(0, 30)
        assert batch["labels"][0].tolist() == full["labels"][0, side].tolist()
    model = tiny_model(len(tok))
    trainer = transformers.Trainer(model=model, args=_args(tmp_path, max_steps=3, remove_unused_columns=False),
                                   train_dataset=datasets.Dataset.from_list([CHAT] * 4), data_collator=collator)
    trainer.train()
    model.eval()
    if (batch["labels"] != -100).any():
        with torch.no_grad():
            assert torch.allclose(model(**batch).loss, manual_loss(model, batch), atol=1e-5)


def test_per_message_train_flag_in_training(tmp_path):
    tok = fixture_tokenizer("qwen3")
    chat = {"messages": [dict(m) for m in CHAT["messages"]]}
    chat["messages"][3]["train"] = False
    batch = ResponseOnlyCollator(tok)([chat])
    assert _trained(tok, batch) == "first answer<|im_end|>"


def test_trl_recipe_without_its_settings_is_caught(tmp_path):
    # SFTTrainer left to prepare the dataset itself: rows reach the collator already tokenized,
    # 'messages' dropped, labels on every token. The collator warns; check_trainer says why.
    trl = pytest.importorskip("trl")
    tok = fixture_tokenizer("qwen2_5")
    config = trl.SFTConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4, report_to=[],
                           use_cpu=True, save_strategy="no", disable_tqdm=True)
    ds = datasets.Dataset.from_list(rows(8))
    trainer = trl.SFTTrainer(model=tiny_model(len(tok)), args=config, train_dataset=ds, processing_class=tok,
                             data_collator=ResponseOnlyCollator(tok))
    report = respmask.check_trainer(trainer, batches=1)  # says it once, in its report (no per-batch warning)
    # one problem, leading with its cause (TRL rewrote the rows), the symptom in the batches, and the fix
    [problem] = report.problems
    assert problem.what.startswith("TRL's SFTTrainer prepared the dataset itself")
    assert "labels on every token" in problem.cause and "skip_prepare_dataset" in problem.fix
    with pytest.warns(respmask.RespmaskWarning, match="labels on every token"):  # and training warns per batch
        next(iter(trainer.get_train_dataloader()))
