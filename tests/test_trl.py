"""TRL's SFTTrainer with respmask (issue 26): the length set on SFTConfig takes effect or is named,
check_trainer counts one set of batches, and a dataset TRL rewrote is reported as the cause."""

from __future__ import annotations

import warnings

import pytest

datasets = pytest.importorskip("datasets")
transformers = pytest.importorskip("transformers")
trl = pytest.importorskip("trl")

import respmask  # noqa: E402
from respmask import ResponseOnlyCollator  # noqa: E402
from support.tokenizers import fixture_tokenizer  # noqa: E402
from test_trainer import rows, tiny_model  # noqa: E402


def long_rows(n: int = 8):
    """Conversations longer than max_length=32 whose reply starts well before it."""
    return [{"messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "The weather in the city is sunny with some rain. " * (2 + i % 3)},
    ]} for i in range(n)]


def sharegpt_rows(n: int = 12):
    """ShareGPT rows (from/value, roles human/gpt), as LLaMA-Factory ships them."""
    return [{"conversations": [
        {"from": "human", "value": f"Where is landmark number {i}?"},
        {"from": "gpt", "value": ["Paris", "London", "Tokyo", "Rome"][i % 4]},
    ]} for i in range(n)]


def sft_config(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4, report_to=[], use_cpu=True,
                save_strategy="no", disable_tqdm=True, seed=0)
    base.update(kw)
    return trl.SFTConfig(**base)


RECIPE = dict(remove_unused_columns=False, dataset_kwargs={"skip_prepare_dataset": True})


# -- item 1: SFTConfig(max_length=...) --------------------------------------------------------------

def test_check_trainer_names_an_sftconfig_max_length_the_collator_does_not_apply(tmp_path, capsys):
    tok = fixture_tokenizer("qwen3")
    ds = datasets.Dataset.from_list(long_rows())
    config = sft_config(tmp_path, max_length=32, **RECIPE)
    trainer = trl.SFTTrainer(model=tiny_model(len(tok)), args=config, train_dataset=ds, processing_class=tok,
                             data_collator=ResponseOnlyCollator(tok))
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].shape[1] > 32  # what was seen: the config's length does nothing by itself
    report = respmask.check_trainer(trainer)
    out = capsys.readouterr().out
    assert not report.ok and report.longest > 32
    [problem] = report.problems
    assert problem.what == "SFTConfig(max_length=32) is not applied: the collator truncates nothing"
    assert f"the longest sample checked has {max(report.longest, max(report.dataset.lengths))} tokens" in problem.cause
    assert "max_length=config.max_length" in problem.fix and "No problems found" not in out
    # a collator with another length: both named
    trainer.data_collator = ResponseOnlyCollator(tok, max_length=48)
    [problem] = respmask.check_trainer(trainer, verbose=False).problems
    assert problem.what == "SFTConfig(max_length=32) is not applied: the collator truncates to its own max_length=48"
    assert "SFTConfig(max_length=48)" in problem.fix
    # the fix: the collator takes the config's length; batches are cut to it and nothing is reported
    trainer.data_collator = ResponseOnlyCollator(tok, max_length=config.max_length)
    fixed = respmask.check_trainer(trainer, verbose=False)
    assert fixed.ok and fixed.longest == 32
    assert next(iter(trainer.get_train_dataloader()))["input_ids"].shape[1] == 32
    # TRL preparing the data itself truncates to its max_length: no mismatch to report there
    assert respmask._check._max_length_mismatch(sft_config(tmp_path, max_length=32), ResponseOnlyCollator(tok)) is None


def test_collator_summary_warns_when_training_starts_with_an_unapplied_max_length(tmp_path):
    tok = fixture_tokenizer("qwen3")
    collator = ResponseOnlyCollator(tok)
    trainer = trl.SFTTrainer(model=tiny_model(len(tok)), args=sft_config(tmp_path, max_length=32, **RECIPE),
                             train_dataset=datasets.Dataset.from_list(long_rows()), processing_class=tok,
                             data_collator=collator, callbacks=[respmask.CollatorSummary(collator)])
    with pytest.warns(respmask.RespmaskWarning, match=r"SFTConfig\(max_length=32\) is not applied.*"
                                                       r"max_length=config\.max_length"):
        trainer.train()
    # with the length given to the collator, training starts without that warning
    collator = ResponseOnlyCollator(tok, max_length=32)
    trainer = trl.SFTTrainer(model=tiny_model(len(tok)), args=sft_config(tmp_path, max_length=32, **RECIPE),
                             train_dataset=datasets.Dataset.from_list(long_rows()), processing_class=tok,
                             data_collator=collator, callbacks=[respmask.CollatorSummary(collator)])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        trainer.train()
    assert not [w for w in seen if issubclass(w.category, respmask.RespmaskWarning)]
    assert collator.stats.truncated > 0


# -- item 6: check_trainer agrees with itself -----------------------------------------------------

def test_check_trainer_counts_exactly_the_batches_it_inspects(tmp_path, capsys):
    # 12 rows, 4 per batch, 2 batches inspected: accelerate's DataLoader collates a third one ahead
    tok = fixture_tokenizer("qwen2_5")
    data = rows(12)
    for i, r in enumerate(data):  # samples of different lengths: batches are padded
        r["messages"][2]["content"] += " and more" * i
    ds = datasets.Dataset.from_list(data)
    trainer = trl.SFTTrainer(model=tiny_model(len(tok)), args=sft_config(tmp_path, max_length=None, **RECIPE),
                             train_dataset=ds, processing_class=tok, data_collator=ResponseOnlyCollator(tok))
    report = respmask.check_trainer(trainer, batches=2)
    out = capsys.readouterr().out
    c = report.collator
    assert (report.batches, report.samples) == (2, 8) and (c.batches, c.samples) == (2, 8)
    # padding is not counted: the tokens are the samples' own, as the collator counts them
    assert (report.tokens, report.trained_tokens) == (c.tokens, c.trained_tokens)
    padded = sum(b["input_ids"].numel() for b, _ in zip(trainer.get_train_dataloader(), range(2)))
    assert report.tokens < padded
    assert out.splitlines()[0] == (f"respmask.check_trainer: 2 batch(es) from the Trainer's own DataLoader: 8 samples, "
                                   f"{c.trained_tokens} of {c.tokens} tokens trained "
                                   f"({100 * c.trained_tokens / c.tokens:.1f}%), the longest sample {report.longest} "
                                   "tokens")
    assert out.splitlines()[1].startswith("collator over these batches: 8 assistant turns;")
    assert out.count(" tokens trained") == 1  # one set of token counts


def test_check_trainer_leads_with_trl_rewriting_the_data(tmp_path, capsys):
    # ShareGPT rows given to SFTTrainer without skip_prepare_dataset: TRL turns them into 'messages'
    # keeping the roles human/gpt, tokenizes them and drops rows; the collator never sees the user's rows
    tok = fixture_tokenizer("qwen2_5")
    ds = datasets.Dataset.from_list(sharegpt_rows())
    for remove in (False, True):  # the collator gets TRL's messages, or TRL's input_ids and labels
        trainer = trl.SFTTrainer(model=tiny_model(len(tok)), train_dataset=ds, processing_class=tok,
                                 args=sft_config(tmp_path, max_length=64, remove_unused_columns=remove),
                                 data_collator=ResponseOnlyCollator(tok, on_untrainable="keep"))
        report = respmask.check_trainer(trainer)
        out = capsys.readouterr().out
        [problem] = report.problems
        assert problem.what == "TRL's SFTTrainer prepared the dataset itself: the collator never sees your rows"
        assert "kept the ShareGPT role names 'gpt', 'human'" in problem.cause
        assert f"{len(trainer.train_dataset)} rows remain" in problem.cause and "max_length=64" in problem.cause
        assert problem.batches == [0, 1]
        assert "skip_prepare_dataset': True" in problem.fix and "max_length=config.max_length" in problem.fix
        assert "give them an assistant reply" not in out and "raise max_length" not in out
        assert report.dataset is None and "dataset: not checked as stored: TRL's SFTTrainer rewrote it" in out
        assert out.index("1 PROBLEM(S):\n- TRL's SFTTrainer prepared the dataset itself") > 0
    # the fix it names: the same rows reach the collator as stored, and are trained
    fixed = trl.SFTTrainer(model=tiny_model(len(tok)), train_dataset=ds, processing_class=tok,
                           args=sft_config(tmp_path, max_length=64, **RECIPE),
                           data_collator=ResponseOnlyCollator(tok, max_length=64))
    report = respmask.check_trainer(fixed, verbose=False)
    assert report.ok and report.dataset.samples == 12 and report.dataset.trained_tokens > 0


def glaive_rewritten_by_trl(tmp_path, shared_root):
    """The case seen: LLaMA-Factory's glaive demo (300 ShareGPT rows with tools), the real Qwen3
    tokenizer, SFTConfig(max_length=128) and TRL left to prepare the dataset itself. Returns the
    dataset as stored and the trainer."""
    import json

    path = shared_root.parent / "realdata" / "llamafactory" / "glaive_toolcall_en_demo.json"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    tok = transformers.AutoTokenizer.from_pretrained(shared_root / "qwen3")
    ds = datasets.Dataset.from_list(json.loads(path.read_text()))
    trainer = trl.SFTTrainer(model=tiny_model(len(tok)), train_dataset=ds, processing_class=tok,
                             args=sft_config(tmp_path, max_length=128, remove_unused_columns=False),
                             data_collator=ResponseOnlyCollator(tok, on_untrainable="keep"))
    return ds, trainer


@pytest.mark.shared
def test_check_trainer_on_glaive_rewritten_by_trl(tmp_path, shared_root, capsys):
    ds, trainer = glaive_rewritten_by_trl(tmp_path, shared_root)
    assert len(ds) == 300 and len(trainer.train_dataset) < 300
    report = respmask.check_trainer(trainer)
    out = capsys.readouterr().out
    [problem] = report.problems
    assert problem.what.startswith("TRL's SFTTrainer prepared the dataset itself")
    assert "'gpt', 'human'" in problem.cause and f"{len(trainer.train_dataset)} rows remain" in problem.cause
    assert "give them an assistant reply" not in out
