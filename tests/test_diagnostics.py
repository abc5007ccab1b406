"""Diagnostics that reach the user at the right moment, in the user's terms (issue 13): collator
warnings that name dataset rows, carry running counts and are never swallowed; check_trainer's
printed report on the classic mistakes; respmask check on a whole messy file; a quiet tokenize."""

from __future__ import annotations

import json
import re
import warnings

import pytest

datasets = pytest.importorskip("datasets")
transformers = pytest.importorskip("transformers")

import respmask  # noqa: E402
from respmask import ResponseOnlyCollator  # noqa: E402
from respmask._cli import main  # noqa: E402
from support.tokenizers import fixture_tokenizer  # noqa: E402
from test_trainer import _args, rows, tiny_model  # noqa: E402
from test_training import _tok_with_pad  # noqa: E402

NO_REPLY = {"messages": [{"role": "user", "content": "a question nobody answers"}]}


# -- collator warnings --------------------------------------------------------------------------

def test_identical_problems_in_later_batches_are_not_swallowed():
    tok = fixture_tokenizer("qwen2_5")
    collator = ResponseOnlyCollator(tok)
    batch = [rows(1)[0], NO_REPLY]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")  # Python's own default: once per text and location
        for _ in range(3):
            collator(batch)
        for _ in range(3):  # the control: a plain warning of one text is shown once under this filter
            warnings.warn("plain", UserWarning)
    ours = [w for w in seen if issubclass(w.category, respmask.RespmaskWarning)]
    assert len(ours) == 3 and sum(str(w.message) == "plain" for w in seen) == 1
    # running counts, and the warning points at the caller's code, not at respmask or torch
    assert [f"So far: {k} of {2 * k} samples had no trained token" in str(w.message) for k, w in
            zip((1, 2, 3), ours)] == [True, True, True]
    assert all(w.filename == __file__ for w in ours)
    assert "batch sample 1" in str(ours[0].message) and "add_column('index'" in str(ours[0].message)


def test_warnings_name_dataset_rows_and_the_summary_callback_counts_them(tmp_path, capsys):
    tok = fixture_tokenizer("qwen2_5")
    data = rows(8)
    for k in (2, 5):
        data[k] = NO_REPLY
    ds = datasets.Dataset.from_list(data)
    ds = ds.add_column("index", list(range(len(ds))))
    collator = ResponseOnlyCollator(tok)
    summary = respmask.CollatorSummary(collator)
    trainer = transformers.Trainer(
        model=tiny_model(len(tok)), args=_args(tmp_path, max_steps=4, per_device_train_batch_size=2,
                                               remove_unused_columns=False),
        train_dataset=ds, data_collator=collator, callbacks=[summary])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        trainer.train()
    texts = [str(w.message) for w in seen if issubclass(w.category, respmask.RespmaskWarning)]
    named = sorted(int(n) for t in texts for n in re.findall(r"dataset row (\d+)", t))
    assert named == [2, 5]  # the dataset's rows, whatever batches the sampler put them in
    assert all("Positions are within the batch" not in t for t in texts)
    assert collator.stats.samples == 8 and collator.stats.untrainable == 2
    out = capsys.readouterr().out
    assert summary.printed in out
    assert "8 samples" in summary.printed and "untrainable samples: 2" in summary.printed


# -- check_trainer: the classic mistakes, as printed ---------------------------------------------

def _trainer(tmp_path, ds, collator, **args):
    tok = fixture_tokenizer("qwen2_5")
    return transformers.Trainer(model=tiny_model(len(tok)), args=_args(tmp_path, max_steps=1, **args),
                                train_dataset=ds, data_collator=collator)


def test_check_trainer_prints_remove_unused_columns_without_contradicting_itself(tmp_path, capsys):
    tok = fixture_tokenizer("qwen2_5")
    trainer = _trainer(tmp_path, datasets.Dataset.from_list(rows(4)), ResponseOnlyCollator(tok))  # default: True
    report = respmask.check_trainer(trainer)
    out = capsys.readouterr().out
    assert out.strip() == str(report)  # printed once, as returned
    assert "1 PROBLEM(S):\n- Trainer removes every dataset column before batching" in out
    assert "remove_unused_columns=False" in out
    assert "\nOK" not in out and "No problems found" not in out  # no verdict contradicts the problem
    assert "dataset: the first 4 rows as stored" in out


def test_check_trainer_blames_the_trainer_for_missing_columns_only_when_it_dropped_them(tmp_path, capsys):
    """A collator that gets rows without the columns it reads: the cause is the Trainer only when
    remove_unused_columns=True dropped them (the stored rows have them); rows that lack them as
    stored are the rows' problem, said once, without telling a user whose remove_unused_columns is
    already False to set it to False."""
    tok = fixture_tokenizer("qwen2_5")
    no_format = datasets.Dataset.from_list([{"question": "two plus two?", "answer": "four"}] * 4)
    report = respmask.check_trainer(_trainer(tmp_path, no_format, ResponseOnlyCollator(tok),
                                             remove_unused_columns=False))
    out = capsys.readouterr().out
    assert len(report.problems) == 1 and "remove_unused_columns" not in out, out
    assert "4 sample(s) cannot be masked" in out and "has none of the columns respmask needs" in out

    ids = tok.apply_chat_template(rows(4)[0]["messages"], return_dict=True)
    masked = datasets.Dataset.from_list([{"input_ids": ids["input_ids"], "assistant_masks": [1] * len(ids["input_ids"])}] * 4)
    report = respmask.check_trainer(_trainer(tmp_path, masked, ResponseOnlyCollator(tok)))  # drops assistant_masks
    out = capsys.readouterr().out
    assert [p.what for p in report.problems] == ["the data collator received samples without the columns it needs"]
    assert "Trainer(remove_unused_columns=True) dropped" in out and "no 'labels' or 'assistant_masks'" in out

    bare = datasets.Dataset.from_list([{"input_ids": ids["input_ids"]}] * 4)  # no labels as stored
    report = respmask.check_trainer(_trainer(tmp_path, bare, ResponseOnlyCollator(tok)))
    out = capsys.readouterr().out
    assert len(report.problems) == 1 and "dropped every column" not in out, out
    assert "no 'labels' or 'assistant_masks'" in out and "respmask.Pretokenizer" in out


def test_input_ids_without_labels_names_the_trainer_only_in_the_collator():
    tok = fixture_tokenizer("qwen2_5")
    report = respmask.check([{"input_ids": [1, 2, 3]}], tok)
    (_, error), = report.errors
    assert "no 'labels' or 'assistant_masks'" in error and "Trainer" not in error and "Pretokenizer" in error
    with pytest.raises(respmask.MissingColumnsError, match=r"(?s)no 'labels'.*remove_unused_columns=False"):
        ResponseOnlyCollator(tok)([{"input_ids": [1, 2, 3]}])


def test_check_trainer_prints_seq2seq_collator_problem_once_with_its_batches(tmp_path, capsys):
    tok = _tok_with_pad()
    ds = datasets.Dataset.from_list(rows(8))
    ds = ds.map(lambda b: {"input_ids": tok.apply_chat_template(b["messages"], return_dict=True)["input_ids"]},
                batched=True, remove_columns=ds.column_names)
    report = respmask.check_trainer(_trainer(tmp_path, ds, transformers.DataCollatorForSeq2Seq(tok)), batches=2)
    out = capsys.readouterr().out
    assert out.count("batches have no 'labels'") == 1 and "(seen in batches 0, 1)" in out
    assert "the collator set 'labels' to None" in out and "keys: [" not in out
    assert "DataCollatorForSeq2Seq" in out and "ResponseOnlyCollator" in out
    assert len(report.problems) == 1


def test_check_trainer_prints_no_assistant_turns(tmp_path, capsys):
    tok = fixture_tokenizer("qwen2_5")
    ds = datasets.Dataset.from_list([NO_REPLY] * 8)
    collator = ResponseOnlyCollator(tok, on_untrainable="keep")
    report = respmask.check_trainer(_trainer(tmp_path, ds, collator, remove_unused_columns=False))
    out = capsys.readouterr().out
    assert "- 8 sample(s) have no trained token (rows 0, 1, 2, 3, 4, 5, 6, 7)" in out and "give them an assistant reply" in out
    assert "- every label of a batch is -100: its loss is NaN (or 0) (seen in batches 0, 1)" in out
    assert len(report.problems) == 2
    assert collator.stats.samples == 0  # checking is not training: the counters are left alone
    assert report.collator.samples == 8 and report.collator.untrainable == 8


def test_check_trainer_prints_max_length_too_short_and_can_raise(tmp_path, capsys):
    tok = fixture_tokenizer("qwen2_5")
    ds = datasets.Dataset.from_list(rows(4))
    trainer = _trainer(tmp_path, ds, ResponseOnlyCollator(tok, max_length=12, on_untrainable="keep"),
                       remove_unused_columns=False)
    with pytest.raises(respmask.TrainerCheckError) as info:
        respmask.check_trainer(trainer, raise_on_problems=True, verbose=False)
    assert capsys.readouterr().out == ""
    report = info.value.report
    text = str(info.value)
    assert "4 sample(s) lose every trained token to truncation (rows 0, 1, 2, 3)" in text
    assert "max_length=12" in text and "p99" in text and "raise max_length" in text
    assert repr(report).startswith("<TrainerReport: 2 problem(s)>\nrespmask.check_trainer:")
    html = report._repr_html_()
    assert "2 problem(s)" in html and "&#x27;" not in text and "lose every trained token" in html


def test_check_trainer_on_a_good_setup_says_so(tmp_path, capsys):
    tok = fixture_tokenizer("qwen2_5")
    trainer = _trainer(tmp_path, datasets.Dataset.from_list(rows(8)), ResponseOnlyCollator(tok),
                       remove_unused_columns=False)
    report = respmask.check_trainer(trainer)
    out = capsys.readouterr().out
    assert report.ok and out.rstrip().endswith("No problems found.") and "PROBLEM" not in out
    # one set of numbers: the first line and the collator's counts are over the same 2 batches
    c = report.collator
    assert (c.batches, c.samples, c.tokens, c.trained_tokens) == (2, 8, report.tokens, report.trained_tokens)
    assert (f"respmask.check_trainer: 2 batch(es) from the Trainer's own DataLoader: 8 samples, "
            f"{c.trained_tokens} of {c.tokens} tokens trained") in out
    assert "collator over these batches: 8 assistant turns; untrainable samples: 0" in out


# -- respmask check on a whole file --------------------------------------------------------------

def test_check_records_bad_lines_groups_errors_and_prints_lengths(tmp_path, capsys):
    tok = fixture_tokenizer("qwen2_5")
    tok.save_pretrained(tmp_path / "tok")
    good = rows(6)
    lines = [json.dumps(r) for r in good[:3]]
    lines.append("{not json")  # sample 3
    lines += [json.dumps({"messages": [{"content": "no role"}]})] * 12  # samples 4..15: one error, twelve times
    lines += [json.dumps(r) for r in good[3:]]
    src = tmp_path / "data.jsonl"
    src.write_text("\n".join(lines) + "\n")
    assert main(["check", str(src), "--tokenizer", str(tmp_path / "tok")]) == 1  # goes on, fails at the end
    out = capsys.readouterr().out
    assert "samples:            19" in out and "errors:             13" in out
    assert "sample 3: line 4: not valid JSON" in out
    assert "12 samples [4, 5, 6, 7, 8, ... (12 in all)]: 'messages'[0] has no 'role'" in out
    assert out.count("has no 'role'") == 1
    lengths = [len(tok.apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"]) for r in good]
    assert f"tokens per sample:  min {min(lengths)}  " in out and f"max {max(lengths)}" in out
    # with --max-length: how many samples and trained tokens truncation cuts
    cut_at = min(lengths) - 3  # into every reply
    assert main(["check", str(src), "--tokenizer", str(tmp_path / "tok"), "--json", "--max-length", str(cut_at)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["length_distribution"]["max"] == max(lengths)
    assert len(report["truncated"]) == len(good)
    full = json.loads(json.dumps(respmask.check(good, tok).to_dict()))
    assert report["truncated_trained_tokens"] == full["trained_tokens"] - report["trained_tokens"] > 0
    assert report["error_groups"][0]["count"] == 12 and report["error_groups"][0]["samples"][:2] == [4, 5]


# -- a quiet tokenize -----------------------------------------------------------------------------

def test_tokenize_quiet_prints_nothing_on_success_and_the_summary_on_error(tmp_path, capfd):
    tok = fixture_tokenizer("qwen2_5")
    tok.save_pretrained(tmp_path / "tok")
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows(6)))
    out_dir = str(tmp_path / "out") + "/"
    assert main(["tokenize", str(src), out_dir, "--tokenizer", str(tmp_path / "tok"), "--quiet", "--num-proc", "2"]) == 0
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""  # no summary, no progress bars, no engine logs
    assert main(["tokenize", str(src), str(tmp_path / "loud"), "--tokenizer", str(tmp_path / "tok")]) == 0
    loud = capfd.readouterr().out
    assert "6 input rows -> 6 written to " + str(tmp_path / "loud" / "part-*.parquet") in loud and "//" not in loud
    bad = tmp_path / "bad.jsonl"
    bad.write_text(src.read_text() + "{not json\n")
    assert main(["tokenize", str(bad), str(tmp_path / "bad_out"), "--tokenizer", str(tmp_path / "tok"), "--quiet"]) == 1
    captured = capfd.readouterr()
    assert captured.out == "" and "7 input rows -> 6 written" in captured.err and "1 x " in captured.err
    assert "not valid JSON" in captured.err


@pytest.mark.slow
def test_tokenize_quiet_silences_ray_too(tmp_path, capfd):
    pytest.importorskip("ray")
    tok = fixture_tokenizer("qwen2_5")
    tok.save_pretrained(tmp_path / "tok")
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows(6)))
    code = main(["tokenize", str(src), str(tmp_path / "out"), "--tokenizer", str(tmp_path / "tok"), "--quiet",
                 "--engine", "ray", "--num-proc", "2"])
    import ray

    ray.shutdown()
    captured = capfd.readouterr()
    assert code == 0 and captured.out == "" and captured.err == ""  # no Ray log block, no progress, no summary
