"""A real transformers.Trainer run with ResponseOnlyCollator on a tiny random causal LM (CPU)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

datasets = pytest.importorskip("datasets")
transformers = pytest.importorskip("transformers")

from respmask import Pretokenizer, ResponseOnlyCollator  # noqa: E402
from support.tokenizers import fixture_tokenizer  # noqa: E402


def tiny_model(vocab_size: int, seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    return transformers.LlamaForCausalLM(config)


def rows(n: int = 8):
    return [
        {"messages": [
            {"role": "system", "content": "Answer with the city."},
            {"role": "user", "content": f"Where is landmark number {i}?"},
            {"role": "assistant", "content": ["Paris", "London", "Tokyo", "Rome"][i % 4]},
        ]}
        for i in range(n)
    ]


def manual_loss(model, batch) -> torch.Tensor:
    """Cross-entropy over the trained tokens only, computed by hand."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1])
    shift_labels = batch["labels"][:, 1:].reshape(-1)
    keep = shift_labels != -100
    return F.cross_entropy(shift_logits[keep].float(), shift_labels[keep])


def _args(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=6, learning_rate=5e-3,
        logging_steps=1, report_to=[], use_cpu=True, save_strategy="no", seed=0, disable_tqdm=True,
    )
    base.update(kw)
    return transformers.TrainingArguments(**base)


def test_trainer_on_raw_messages_loss_equals_manual_cross_entropy(tmp_path):
    tok = fixture_tokenizer("qwen2_5")
    model = tiny_model(len(tok))
    collator = ResponseOnlyCollator(tok)
    ds = datasets.Dataset.from_list(rows())
    trainer = transformers.Trainer(
        model=model, args=_args(tmp_path, remove_unused_columns=False), train_dataset=ds, data_collator=collator
    )
    batch = collator(rows(4))
    model.eval()
    with torch.no_grad():
        loss, _ = trainer.compute_loss(model, batch, return_outputs=True)
        assert torch.isfinite(loss)
        assert torch.allclose(loss, manual_loss(model, batch), atol=1e-5)
    model.train()
    result = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses)
    assert math.isfinite(result.training_loss)
    assert losses[-1] < losses[0]  # a repeated tiny dataset is learned


def test_trainer_on_pretokenized_dataset_with_default_column_removal(tmp_path):
    tok = fixture_tokenizer("qwen2_5")
    ds = datasets.Dataset.from_list(rows())
    ds = ds.map(Pretokenizer(tok), batched=True, remove_columns=ds.column_names)
    trainer = transformers.Trainer(
        model=tiny_model(len(tok)), args=_args(tmp_path, max_steps=3), train_dataset=ds,
        data_collator=ResponseOnlyCollator(tok),
    )
    losses = [h["loss"] for h in trainer.train() and trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
