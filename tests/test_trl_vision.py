"""TRL's vision SFT recipe (issue 28 item 4): README's "With TRL's SFTTrainer (vision)" block, read
from README.md and run as written on a tiny Qwen2-VL on the CPU; ``check_trainer`` finds nothing
wrong with it and names what goes wrong when one of its settings is missing.

References: the processor's own ``apply_chat_template(..., tokenize=True)`` ids for the rows as
written (before a ``datasets`` column stores them); the replies' text; TRL's own behaviour on the
settings left out."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

datasets = pytest.importorskip("datasets")
transformers = pytest.importorskip("transformers")
trl = pytest.importorskip("trl")
pytest.importorskip("PIL")
torch = pytest.importorskip("torch")

import respmask  # noqa: E402
from support.vision import build_processor, image_token_ids, make_image, tiny_model  # noqa: E402
from test_recipes import python_blocks, run  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true but no accelerator:UserWarning")

TITLE = "With TRL's SFTTrainer (vision)"
COLOURS = ["red", "green", "blue", "black"]


def recipe() -> str:
    [(_, code)] = python_blocks(TITLE)
    return code


def without_training(code: str) -> str:
    assert code.count("trainer.train()\n") == 1
    return code.replace("trainer.train()\n", "")


def image_rows(n: int = 8, inline: bool = False, images_per_row: int = 1):
    """Rows as TRL's vision examples hold them: an ``images`` column and ``{"type": "image"}``
    placeholders, or (``inline``) each image inside its part."""
    out = []
    for i in range(n):
        imgs = [make_image(40 + 8 * ((i + k) % 3), 32, seed=10 * i + k) for k in range(images_per_row)]
        messages = []
        for k, im in enumerate(imgs):
            part = {"type": "image", "image": im} if inline else {"type": "image"}
            messages += [
                {"role": "user", "content": [part, {"type": "text", "text": f"what colour is picture {i}.{k}"}]},
                {"role": "assistant", "content": [{"type": "text", "text": COLOURS[(i + k) % 4] + " it is"}]},
            ]
        out.append({"messages": messages} if inline else {"messages": messages, "images": imgs})
    return out


def setup(rows):
    processor = build_processor("qwen2_vl", tiny=True)
    return dict(processor=processor, model=tiny_model("qwen2_vl", processor), ds=datasets.Dataset.from_list(rows))


def test_readme_vision_recipe_trains_as_written(tmp_path, monkeypatch, capsys):
    names = setup(image_rows())
    ns = run(recipe(), tmp_path, monkeypatch, **names)
    out = capsys.readouterr().out
    trainer, collator, config = ns["trainer"], ns["collator"], ns["config"]
    assert isinstance(trainer, trl.SFTTrainer) and trainer.state.global_step >= 1
    assert math.isfinite(trainer.state.log_history[-1]["train_loss"])
    assert config.max_length == collator.max_length == 4096
    assert "No problems found." in out  # check_trainer's verdict on the recipe
    st = collator.stats  # CollatorSummary at the end: every epoch over the 8 rows
    assert st.samples == 8 * math.ceil(trainer.state.epoch) and st.untrainable == 0 and st.trained_tokens > 0
    assert f"respmask collator: {st.batches} batches, {st.samples} samples" in out


def test_rows_with_images_in_their_parts_through_a_datasets_column(tmp_path, monkeypatch, capsys):
    # a datasets column gives every part every key (text parts get "image": None), which Qwen2-VL's
    # template would render as an image: the batches must hold the rows as written
    rows = image_rows(4, inline=True)
    names = setup(rows)
    assert names["ds"][0]["messages"][0]["content"][1]["image"] is None
    ns = run(without_training(recipe()), tmp_path, monkeypatch, **names)
    assert "No problems found." in capsys.readouterr().out
    processor = names["processor"]
    refs = [np.asarray(processor.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"])
            .reshape(-1).tolist() for row in rows]
    batch = next(iter(ns["trainer"].get_train_dataloader()))  # shuffled
    real = batch["attention_mask"].bool()
    found = []
    for r in range(len(rows)):
        ids, labels = batch["input_ids"][r][real[r]].numpy(), batch["labels"][r][real[r]].numpy()
        assert ids.tolist() in refs
        i = refs.index(ids.tolist())
        found.append(i)
        assert processor.tokenizer.decode(ids[labels != -100]) == f"{COLOURS[i % 4]} it is<|im_end|>"
        assert not np.isin(ids[labels != -100], image_token_ids(processor)).any()
    assert sorted(found) == list(range(len(rows)))


def test_check_trainer_names_the_collator_without_the_configs_max_length(tmp_path, monkeypatch, capsys):
    code = without_training(recipe())
    line = "respmask.ResponseOnlyCollator(processor, max_length=config.max_length)"
    assert line in code
    ns = run(code.replace(line, "respmask.ResponseOnlyCollator(processor)"), tmp_path, monkeypatch,
             **setup(image_rows(4)))
    capsys.readouterr()
    report = respmask.check_trainer(ns["trainer"], verbose=False)
    [problem] = report.problems
    assert problem.what == "SFTConfig(max_length=4096) is not applied: the collator truncates nothing"
    assert "ResponseOnlyCollator(processor, max_length=config.max_length)" in problem.fix


def test_trl_skipping_a_vision_dataset_by_itself_counts_as_skipped(tmp_path, monkeypatch, capsys):
    # without dataset_kwargs TRL still leaves an 'images' dataset as stored (and truncates nothing)
    code = without_training(recipe())
    setting = 'dataset_kwargs={"skip_prepare_dataset": True},'
    line = "respmask.ResponseOnlyCollator(processor, max_length=config.max_length)"
    assert setting in code and line in code
    ns = run(code.replace(setting, "").replace(line, "respmask.ResponseOnlyCollator(processor)"), tmp_path,
             monkeypatch, **setup(image_rows(4)))
    capsys.readouterr()
    assert ns["config"].dataset_kwargs in (None, {}) and ns["trainer"]._skip_prepare_dataset is True
    report = respmask.check_trainer(ns["trainer"], verbose=False)
    [problem] = report.problems
    assert problem.what == "SFTConfig(max_length=4096) is not applied: the collator truncates nothing"
    assert problem.cause.startswith("with a vision dataset (an 'image'/'images' column) TRL neither tokenizes")


def test_check_trainer_names_the_columns_removed_without_remove_unused_columns(tmp_path, monkeypatch, capsys):
    code = without_training(recipe())
    line = "remove_unused_columns=False,"
    assert line in code
    ns = run(code.replace(line, ""), tmp_path, monkeypatch, **setup(image_rows(4, inline=True)))
    capsys.readouterr()
    report = respmask.check_trainer(ns["trainer"], verbose=False)
    assert [p.what for p in report.problems] == ["Trainer removes every dataset column before batching"]
    assert "remove_unused_columns=False" in report.problems[0].fix


def test_the_recipe_with_a_short_max_length_cuts_long_chats_between_images(tmp_path, monkeypatch, capsys):
    names = setup(image_rows(4, images_per_row=3))
    processor = names["processor"]
    lengths = [len(np.asarray(processor.apply_chat_template(m, tokenize=True, return_dict=True)["input_ids"])
                   .reshape(-1)) for m in (r["messages"] for r in image_rows(4, inline=True, images_per_row=3))]
    short = min(lengths) // 2  # the first exchange fits, the later images do not
    code = without_training(recipe()).replace("max_length=4096", f"max_length={short}")
    ns = run(code, tmp_path, monkeypatch, **names)
    out = capsys.readouterr().out
    assert "No problems found." in out and f"truncated to {short}: 4 sample(s)" in out
    dropped = re.search(r"images dropped with the text cut: (\d+) from 4 sample\(s\)", out)  # the dataset's report
    assert dropped and 4 <= int(dropped.group(1)) < 12
    assert f"images dropped by truncation: {dropped.group(1)}" in out  # the inspected batch (all 4 rows) says the same
    with pytest.warns(respmask.RespmaskWarning, match=r"4 sample\(s\) .*images whose tokens fell past the cut"):
        batch = next(iter(ns["trainer"].get_train_dataloader()))
    assert batch["input_ids"].shape[1] <= short
    start = processor.tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert int((batch["input_ids"] == start).sum()) == batch["image_grid_thw"].shape[0] < 12
    with torch.no_grad():  # the model takes the cut batch: its image tokens and pixels agree
        assert math.isfinite(ns["trainer"].model(**batch).loss.item())
