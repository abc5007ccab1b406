"""The README's recipes, run as written (issue 26): the code blocks are read from README.md, so they
cannot drift from what is tested; `tok`, `model` and `ds` are a tokenizer and a tiny model built
locally and a small dataset, as the README's "Ten lines" defines them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")
transformers = pytest.importorskip("transformers")
trl = pytest.importorskip("trl")

import respmask  # noqa: E402
from support.tokenizers import fixture_tokenizer  # noqa: E402
from test_trainer import tiny_model  # noqa: E402

README = Path(__file__).resolve().parent.parent / "README.md"
# the TRL recipe runs as written, so with TRL's dataloader_pin_memory=True on this CPU: torch says it
# has no accelerator to pin memory for (a note about the machine, expected here)
pytestmark = pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true but no accelerator:UserWarning")


def section(title: str) -> str:
    """The text of the README section whose heading is ``title`` (up to the next heading of its level or higher)."""
    text = README.read_text()
    match = re.search(rf"^(#+) {re.escape(title)}\n", text, re.M)
    assert match, f"README has no section {title!r}"
    level = len(match.group(1))
    rest = text[match.end():]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.M)
    return rest[: end.start()] if end else rest


def python_blocks(title: str) -> list[tuple[str, str]]:
    """``(the paragraph before it, code)`` of every ```python block of a README section."""
    text = section(title)
    out = []
    for m in re.finditer(r"```python\n(.*?)```", text, re.S):
        before = text[: m.start()].rstrip().rsplit("\n\n", 1)[-1]
        out.append((before, m.group(1)))
    return out


def chats(n: int = 8, turns: int = 2):
    """Conversations with ``turns`` exchanges; the replies are long enough for truncation to matter."""
    out = []
    for i in range(n):
        messages = [{"role": "system", "content": "Answer with the city."}]
        for t in range(turns):
            messages += [{"role": "user", "content": f"Question {t} about landmark {i}?"},
                         {"role": "assistant", "content": f"Answer {t}: " + "the city is sunny. " * (1 + i % 3)}]
        out.append({"messages": messages})
    return out


def run(code: str, tmp_path, monkeypatch, **names):
    """Execute a README block in a fresh namespace holding ``names``; returns the namespace."""
    monkeypatch.chdir(tmp_path)  # the recipes write to "out"
    namespace = dict(names)
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - the README's own recipe
    return namespace


def trl_recipe() -> str:
    [(_, code)] = python_blocks("With TRL's SFTTrainer")
    return code


# -- With TRL's SFTTrainer --------------------------------------------------------------------------

def test_readme_trl_recipe_runs_as_written_on_cpu(tmp_path, monkeypatch, capsys):
    tok = fixture_tokenizer("qwen3")
    ds = datasets.Dataset.from_list(chats())
    ns = run(trl_recipe(), tmp_path, monkeypatch, tok=tok, model=tiny_model(len(tok)), ds=ds)
    out = capsys.readouterr().out
    trainer, collator, config = ns["trainer"], ns["collator"], ns["config"]
    assert isinstance(trainer, trl.SFTTrainer) and trainer.state.global_step >= 1
    assert config.max_length == collator.max_length == 4096  # the length is where it works
    assert "No problems found." in out  # check_trainer's verdict on the recipe
    st = collator.stats  # CollatorSummary at the end: every epoch over the 8 rows
    assert st.samples == 8 * trainer.state.global_step and f"respmask collator: {st.batches} batches, {st.samples} samples" in out
    assert collator.stats.trained_tokens > 0 and collator.stats.untrainable == 0


def test_readme_trl_recipe_needs_its_bf16_setting_on_a_cpu_machine(tmp_path):
    if transformers.utils.is_torch_bf16_gpu_available():
        pytest.skip("this machine has a bf16 GPU: SFTConfig's default bf16=True works here")
    # what a CPU-only machine does with SFTConfig's defaults: the recipe's bf16 setting is what avoids it
    with pytest.raises(ValueError, match="Your setup doesn't support bf16/gpu"):
        trl.SFTConfig(str(tmp_path))
    assert "bf16=is_torch_bf16_gpu_available()" in trl_recipe()
    assert trl.SFTConfig(str(tmp_path), bf16=transformers.utils.is_torch_bf16_gpu_available()).bf16 is False


def test_readme_trl_recipe_max_length_takes_effect(tmp_path, monkeypatch, capsys):
    # the recipe with a short length: SFTConfig's max_length now cuts the batches
    tok = fixture_tokenizer("qwen3")
    ds = datasets.Dataset.from_list(chats(turns=1))
    code = trl_recipe()
    assert "max_length=4096" in code
    longest = max(len(tok.apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"])
                  for r in chats(turns=1))
    short = longest - 4
    ns = run(code.replace("max_length=4096", f"max_length={short}"), tmp_path, monkeypatch,
             tok=tok, model=tiny_model(len(tok)), ds=ds)
    out = capsys.readouterr().out
    trainer, collator = ns["trainer"], ns["collator"]
    assert collator.max_length == short and collator.stats.truncated > 0
    assert max(b["input_ids"].shape[1] for b in trainer.get_train_dataloader()) == short
    assert f"the longest sample {short} tokens" in out and "No problems found." in out


# -- Troubleshooting: the outputs shown are what check_trainer prints ----------------------------

def text_blocks(title: str) -> list[str]:
    return re.findall(r"```text\n(.*?)```", section(title), re.S)


def own_lines(text: str) -> list[str]:
    """check_trainer's own lines: not the indented dataset summary (respmask check's, shown apart)."""
    return [line for line in text.splitlines() if not line.startswith("  ") or line.startswith(("  cause:", "  fix:"))]


def test_readme_troubleshooting_shows_what_check_trainer_prints(tmp_path, capsys):
    from test_trainer import _args, rows

    tok = fixture_tokenizer("qwen2_5")
    data = rows(8)
    data[5] = {"messages": [{"role": "user", "content": "a question nobody answers"}]}
    trainer = transformers.Trainer(model=tiny_model(len(tok)), args=_args(tmp_path, max_steps=1),
                                   train_dataset=datasets.Dataset.from_list(data),
                                   data_collator=respmask.ResponseOnlyCollator(tok))
    respmask.check_trainer(trainer)
    printed = capsys.readouterr().out
    shown = text_blocks("Troubleshooting")
    assert own_lines(shown[0]) == own_lines(printed)


def test_readme_troubleshooting_max_length_output(tmp_path, capsys):
    from test_trl import RECIPE, long_rows, sft_config

    tok = fixture_tokenizer("qwen3")
    trainer = trl.SFTTrainer(model=tiny_model(len(tok)), args=sft_config(tmp_path, max_length=32, **RECIPE),
                             train_dataset=datasets.Dataset.from_list(long_rows()), processing_class=tok,
                             data_collator=respmask.ResponseOnlyCollator(tok))
    [problem] = respmask.check_trainer(trainer, verbose=False).problems
    [block] = [b for b in text_blocks("Troubleshooting") if "SFTConfig(max_length=32)" in b]
    assert block.rstrip("\n") == str(problem)


@pytest.mark.shared
def test_readme_troubleshooting_trl_rewrite_output(tmp_path, shared_root, capsys):
    from test_trl import glaive_rewritten_by_trl

    _, trainer = glaive_rewritten_by_trl(tmp_path, shared_root)
    respmask.check_trainer(trainer)
    printed = capsys.readouterr().out
    [block] = [b for b in text_blocks("Troubleshooting") if "TRL's SFTTrainer prepared" in b]
    assert block.rstrip("\n") in printed


# -- Coming from another tool: every block runs, and does what its line says ----------------------

def peer_block(lead: str) -> str:
    [code] = [code for before, code in python_blocks("Coming from another tool") if before.startswith(lead)]
    return code


def trained_text(tok, collator, row) -> str:
    batch = collator([row])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    return tok.decode([i for i, lab in zip(ids, labels) if lab != -100])


def test_every_peer_block_is_tested():
    leads = [before.split("**")[1] for before, _ in python_blocks("Coming from another tool")]
    assert len(leads) == 5 and all(leads), leads
    for name in ("train_on_responses_only", "DataCollatorForCompletionOnlyLM", "assistant_only_loss",
                 "roles_to_train", "train_on_eos", "mask_history"):
        assert any(name in lead for lead in leads), name


@pytest.mark.parametrize("lead", ["**Unsloth's `train_on_responses_only", "**TRL's `DataCollatorForCompletionOnlyLM"])
def test_peer_marker_collators_become_respmask_collators(lead, tmp_path, monkeypatch):
    tok = fixture_tokenizer("qwen3")
    ns = run(peer_block(lead), tmp_path, monkeypatch, tok=tok, model=None, ds=None)
    row = chats(1, turns=2)[0]
    first, last = row["messages"][2]["content"], row["messages"][4]["content"]
    every = trained_text(tok, ns["collator"], row)
    assert every.count("<|im_end|>") == 2 and first in every and last in every
    assert "Question" not in every and "Answer with the city" not in every  # no prompt, no system text
    only = trained_text(tok, ns["last_only"], row)
    assert last in only and first not in only and only.count("<|im_end|>") == 1
    # ShareGPT rows as published (no standardize_sharegpt step): the same tokens trained
    sharegpt = {"conversations": [{"from": {"system": "system", "user": "human", "assistant": "gpt"}[m["role"]],
                                   "value": m["content"]} for m in row["messages"]]}
    assert trained_text(tok, ns["collator"], sharegpt) == every


def test_peer_trl_assistant_only_loss_block(tmp_path, monkeypatch, capsys):
    tok = fixture_tokenizer("qwen3")
    ds = datasets.Dataset.from_list(chats(8, turns=2))
    ns = run(peer_block("**TRL's `SFTConfig(assistant_only_loss=True)`"), tmp_path, monkeypatch,
             tok=tok, model=tiny_model(len(tok)), ds=ds)
    trainer = ns["trainer"]
    assert not trainer.args.assistant_only_loss and trainer.data_collator.max_length == trainer.args.max_length
    report = respmask.check_trainer(trainer, verbose=False)
    assert report.ok and report.collator.turns == 2 * report.samples  # both replies of every conversation
    assert 0 < report.trained_tokens < report.tokens
    # prompt/completion rows (completion_only_loss): only the completion and its stop token
    pc = {"prompt": [{"role": "user", "content": "Where is the tower?"}],
          "completion": [{"role": "assistant", "content": "In Paris."}]}
    trained = trained_text(tok, trainer.data_collator, pc)  # Qwen3's template adds an empty think block to it
    assert trained.endswith("In Paris.<|im_end|>") and "tower" not in trained and trained.count("<|im_end|>") == 1


def test_peer_axolotl_block(tmp_path, monkeypatch):
    tok = fixture_tokenizer("qwen3")
    ds = datasets.Dataset.from_list(chats(2, turns=2))
    ns = run(peer_block("**Axolotl's `roles_to_train`"), tmp_path, monkeypatch, tok=tok, model=None, ds=ds)
    collator, row = ns["collator"], ds[0]
    assistant_only = trained_text(tok, collator, row)
    assert "Question" not in assistant_only and assistant_only.count("<|im_end|>") == 2
    users_too = trained_text(tok, collator, ns["ds_users"][0])
    assert "Question 0 about landmark 0?" in users_too and "Question 1 about landmark 0?" in users_too
    assert users_too.count("<|im_end|>") == 4 and "Answer with the city" not in users_too  # system: not trained


def test_peer_llamafactory_block(tmp_path, monkeypatch):
    tok = fixture_tokenizer("qwen3")
    ns = run(peer_block("**LLaMA-Factory's `mask_history: true`"), tmp_path, monkeypatch, tok=tok, model=None,
             ds=None)
    collator = ns["collator"]
    row = chats(1, turns=3)[0]
    only = trained_text(tok, collator, row)
    assert row["messages"][6]["content"] in only and row["messages"][2]["content"] not in only
    assert (collator.max_length, collator.truncation) == (2048, "left")
    # left truncation keeps the recent turns: cut into the start, the last reply is still trained
    full = len(tok.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"])
    collator.max_length = full - 10
    assert trained_text(tok, collator, row) == only


# -- the HTML view is public ----------------------------------------------------------------------

def test_preview_to_html_is_public_documented_and_the_notebook_view():
    import html as htmllib

    tok = fixture_tokenizer("qwen2_5")
    row = {"messages": [{"role": "user", "content": "Is 1 < 2?"}, {"role": "assistant", "content": "Yes, 1 < 2."}]}
    p = respmask.preview(row, tok)
    page = p.to_html()
    assert page == p._repr_html_()  # what a notebook shows
    assert page.startswith('<div class="respmask-preview"') and page.count("rm-train") == p.n_trained > 0
    assert "&lt;" in page  # content is escaped, never markup
    shown = htmllib.unescape(re.sub(r"<[^>]+>", "", page)).replace("·", " ")
    assert "Yes, 1 < 2." in shown
    api = (README.parent / "docs" / "API.md").read_text()
    assert "to_html" in api and ".to_html()" in section("Ten lines")


# -- Pre-tokenizing ----------------------------------------------------------------------------------

def test_readme_pretokenizing_block_runs_and_names_dataset_rows(tmp_path, monkeypatch):
    """The Pre-tokenizing block as written, with_indices=True included: the Pretokenizer then gets
    dataset rows (what the paragraph after it says), and the Trainer trains on its columns."""
    import warnings

    [(_, code)] = python_blocks("Pre-tokenizing")
    assert "with_indices=True" in code
    tok = fixture_tokenizer("qwen3")
    seen = []

    class Recording(respmask.Pretokenizer):
        def __call__(self, batch, indices=None):
            seen.append(None if indices is None else list(indices))
            return super().__call__(batch, indices)

    shim = type("respmask", (), {"Pretokenizer": Recording, "ResponseOnlyCollator": respmask.ResponseOnlyCollator})
    ds = datasets.Dataset.from_list(chats())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's pin_memory note on this CPU
        ns = run(code.replace('TrainingArguments("out")', 'TrainingArguments("out", max_steps=1, report_to=[], '
                                                          'use_cpu=True)'),
                 tmp_path, monkeypatch, tok=tok, model=tiny_model(len(tok)), ds=ds, respmask=shim,
                 Trainer=transformers.Trainer, TrainingArguments=transformers.TrainingArguments)
    assert None not in seen and [i for batch in seen for i in batch] == list(range(len(ds)))
    assert ns["ds"].column_names == ["input_ids", "labels"] and len(ns["ds"]) == len(ds)
