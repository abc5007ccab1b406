"""Issue 26: nothing a user brings is silently ignored, and every report names the real cause.

Each test runs the command line (or the API) on the public demo files in ../shared/realdata with
the real tokenizers, as a new user would, and asserts what it says: images a text tokenizer
cannot use, preference rows, data the template leaves out, and the causes named.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import respmask
from respmask._cli import main
from respmask._shards import read_parts, read_rejects

FIXTURES = Path(__file__).parent / "fixtures" / "chat_templates"


@pytest.fixture(scope="module")
def realdata(shared_root):
    root = shared_root.parent / "realdata" / "llamafactory"
    if not root.is_dir():
        pytest.skip(f"{root} not available")
    return root


def _check(capsys, *argv):
    code = main(["check", *map(str, argv)])
    return code, capsys.readouterr().out


def _check_json(capsys, *argv):
    code = main(["check", *map(str, argv), "--json"])
    return code, json.loads(capsys.readouterr().out)


def _rows(path: Path) -> list:
    text = path.read_text(encoding="utf-8")
    return json.loads(text) if text.lstrip().startswith("[") else [json.loads(x) for x in text.splitlines() if x]


# ---------------------------------------------------------------------------------------------
# Item 2: images with a text tokenizer
# ---------------------------------------------------------------------------------------------


@pytest.mark.shared
@pytest.mark.parametrize("name", ["mllm_demo.json", "v1_multimodal_demo.jsonl"])
def test_images_with_a_text_tokenizer_are_refused_with_what_to_do(shared_root, realdata, name, capsys):
    code, report = _check_json(capsys, realdata / name, "--tokenizer", shared_root / "qwen3")
    rows = _rows(realdata / name)
    assert code == 1 and report["samples"] == len(rows) and report["trained_tokens"] == 0
    assert [i for i, _ in report["errors"]] == list(range(len(rows)))  # every row says it, none is trained
    for _, error in report["errors"]:
        assert "holds images" in error and "text tokenizer cannot use" in error
        assert "processor" in error and "--text-only" in error
        assert "can only concatenate" not in error


@pytest.mark.shared
def test_images_refused_in_tokenize_preview_and_the_collator(shared_root, realdata, tmp_path, capsys):
    tok_dir = shared_root / "qwen3"
    assert main(["tokenize", str(realdata / "mllm_demo.json"), str(tmp_path / "out"), "-t", str(tok_dir),
                 "--quiet"]) == 1
    rejects = read_rejects(tmp_path / "out")
    assert len(rejects) == 6 and all("holds images" in r["error"] and "processor" in r["error"] for r in rejects)
    capsys.readouterr()
    assert main(["preview", str(realdata / "mllm_demo.json"), "-t", str(tok_dir), "-n", "1", "--no-color"]) == 0
    assert "error: sample 0: holds images (2 items in its 'images' column)" in capsys.readouterr().out

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    rows = _rows(realdata / "mllm_demo.json")
    with pytest.raises(respmask.SampleError, match=r"sample 0: holds images .*processor"):
        respmask.ResponseOnlyCollator(tok)(rows[:2])
    with pytest.raises(respmask.SampleError, match="holds images"):
        respmask.preview(rows[0], tok)


@pytest.mark.shared
def test_text_only_trains_the_text_alone_when_asked(shared_root, realdata, capsys):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(shared_root / "qwen3")
    for name in ("mllm_demo.json", "v1_multimodal_demo.jsonl"):
        code, report = _check_json(capsys, realdata / name, "--tokenizer", shared_root / "qwen3", "--text-only")
        assert code == 0 and report["errors"] == [] and report["turns"] > 0
    row = _rows(realdata / "mllm_demo.json")[0]
    before = json.dumps(row)
    enc = respmask.ChatMasker(tok, text_only=True).encode(row)
    assert json.dumps(row) == before  # the user's row is not changed
    # the placeholders are gone with the images: the user text reads as the text alone
    assert "<image>" not in enc.text and "Who are they?" in enc.text and "What are they doing?" in enc.text
    trained = tok.decode(enc.input_ids[enc.labels != -100])
    assert "Kane and Gretzka" in trained and "celebrating" in trained


@pytest.mark.shared
def test_llamafactory_image_placeholders_reach_a_processor_as_images(shared_root, realdata):
    from support.vision import build_processor, make_image

    processor = build_processor("qwen2_vl")
    rows = _rows(realdata / "mllm_demo.json")[:3]
    rows = [{**r, "images": [make_image(64, 48, k) for k, _ in enumerate(r["images"])]} for r in rows]
    batch = respmask.ResponseOnlyCollator(processor)(rows)
    assert len(batch["image_grid_thw"]) == sum(len(r["images"]) for r in rows)  # every image reached the model
    tok = processor.tokenizer
    for row, ids, labels in zip(rows, batch["input_ids"], batch["labels"]):
        text = tok.decode(ids[batch["attention_mask"][rows.index(row)] == 1])
        assert "<image>" not in text and text.count("<|vision_start|>") == len(row["images"])
        replies = [m["content"] for m in row["messages"] if m["role"] == "assistant"]
        assert tok.decode(ids[labels != -100]) == "".join(r + "<|im_end|>" for r in replies)


def test_image_placeholders_become_image_parts_only_when_they_pair_with_images():
    row = {"messages": [{"role": "user", "content": "<image>Who?"}, {"role": "assistant", "content": "Kane."}],
           "images": ["a.jpg"]}
    sample = respmask.to_sample(row)
    assert sample["messages"][0]["content"] == [{"type": "image"}, {"type": "text", "text": "Who?"}]
    assert row["messages"][0]["content"] == "<image>Who?"  # unchanged
    unpaired = {**row, "images": ["a.jpg", "b.jpg"]}  # two images, one placeholder: left as written
    assert respmask.to_sample(unpaired)["messages"][0]["content"] == "<image>Who?"


# ---------------------------------------------------------------------------------------------
# Item 3: preference data
# ---------------------------------------------------------------------------------------------


@pytest.mark.shared
@pytest.mark.parametrize("name, columns", [("dpo_en_demo.json", "columns 'chosen', 'rejected'"),
                                           ("kto_en_demo.json", "column 'label'")])
def test_preference_rows_are_rejected_naming_their_columns(shared_root, realdata, name, columns, capsys):
    code, report = _check_json(capsys, realdata / name, "--tokenizer", shared_root / "qwen3")
    assert code == 1 and len(report["errors"]) == 300 and report["trained_tokens"] == 0
    for _, error in report["errors"]:
        assert f"is a preference row ({columns})" in error and "--format preference" in error


@pytest.mark.shared
def test_format_preference_trains_the_chosen_reply_and_never_the_rejected(shared_root, realdata, capsys):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(shared_root / "qwen3")
    code, report = _check_json(capsys, realdata / "dpo_en_demo.json", "--tokenizer", shared_root / "qwen3",
                               "--format", "preference")
    assert code == 0 and report["errors"] == [] and report["untrainable"] == [] and report["samples"] == 300
    rows = _rows(realdata / "dpo_en_demo.json")
    masker = respmask.ChatMasker(tok, data_format="preference")
    with_history = 0
    for row in rows[:60]:
        enc = masker.encode(row)
        trained = tok.decode(enc.input_ids[enc.labels != -100])
        # only the chosen reply trains (the prompt's own assistant turns are context), after the whole prompt
        assert trained.startswith("<think>\n\n</think>\n\n") and trained.endswith("<|im_end|>")
        assert trained[len("<think>\n\n</think>\n\n"):-len("<|im_end|>")] == row["chosen"]["value"].strip()
        assert [t.message for t in enc.turns] == [len(row["conversations"])]
        rejected = row["rejected"]["value"].strip()
        if rejected not in row["chosen"]["value"]:
            assert rejected not in enc.text
        with_history += any(m["from"] == "gpt" for m in row["conversations"])
    assert with_history  # rows whose prompt holds earlier replies were among them


@pytest.mark.shared
def test_format_preference_on_kto_trains_desirable_rows_and_rejects_the_rest(shared_root, realdata, capsys):
    rows = _rows(realdata / "kto_en_demo.json")
    bad = [i for i, r in enumerate(rows) if not r["label"]]
    code, report = _check_json(capsys, realdata / "kto_en_demo.json", "--tokenizer", shared_root / "qwen3",
                               "--format", "preference")
    assert code == 1 and [i for i, _ in report["errors"]] == bad and len(bad) == 150
    assert all("label=False" in e and "undesirable" in e for _, e in report["errors"])
    assert report["samples"] - len(report["errors"]) == 150 and report["untrainable"] == []
    assert report["turns"] == 150  # the judged reply of each desirable row, nothing else


def test_preference_trains_only_the_judged_reply_of_a_conversation():
    prompt = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
              {"role": "user", "content": "And?"}]
    sample = respmask.to_sample({"messages": prompt, "chosen": {"role": "assistant", "content": "Good"},
                                 "rejected": {"role": "assistant", "content": "Bad"}}, data_format="preference")
    assert [m.get("train") for m in sample["messages"]] == [False, False, False, None]
    assert sample["messages"][-1]["content"] == "Good" and "train" not in prompt[1]
    kto = respmask.to_sample({"messages": prompt + [{"role": "assistant", "content": "Good"}], "label": True},
                             data_format="preference")
    assert [m.get("train") for m in kto["messages"]] == [False, False, False, None] and "label" not in kto


def test_preference_layouts_read_as_prompt_and_chosen_reply():
    pc = respmask.to_sample({"prompt": "2+2?", "chosen": " 4", "rejected": " 5"}, data_format="preference")
    assert pc == {"prompt": "2+2?", "completion": " 4"}
    implicit = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    assert respmask.to_sample({"chosen": implicit, "rejected": implicit[:1] + [{"role": "assistant", "content": "x"}]},
                              data_format="preference")["messages"] == [{**implicit[0], "train": False}, implicit[1]]
    alpaca = respmask.to_sample({"instruction": "Say hi", "input": "", "chosen": "Hi", "rejected": "No"},
                                data_format="preference")
    assert alpaca["messages"][-1] == {"role": "assistant", "content": "Hi"}
    with pytest.raises(respmask.SampleError, match=r"preference row \(columns 'chosen', 'rejected'\)"):
        respmask.to_sample({"prompt": "2+2?", "chosen": " 4", "rejected": " 5"})


@pytest.mark.shared
def test_check_and_tokenize_agree_that_an_untrainable_row_fails_the_run(shared_root, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    rows = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
            {"messages": [{"role": "user", "content": "Only a question"}]}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = str(shared_root / "qwen3")
    code, report = _check_json(capsys, data, "--tokenizer", tok)
    assert code == 1 and report["untrainable"] == [1]
    assert main(["tokenize", str(data), str(tmp_path / "out"), "-t", tok, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "1 written row(s) train no token" in err and "--allow-rejects" in err
    assert main(["tokenize", str(data), str(tmp_path / "out2"), "-t", tok, "--quiet", "--allow-rejects"]) == 0
    assert len(read_parts(tmp_path / "out2")) == 2


# ---------------------------------------------------------------------------------------------
# Items 4 and 5: data the template leaves out, counted once and named
# ---------------------------------------------------------------------------------------------


@pytest.mark.shared
def test_tokenize_reports_reasoning_the_template_leaves_out(shared_root, realdata, tmp_path, capsys):
    name = realdata / "reason_tool_use_demo_50.jsonl"
    _, report = _check_json(capsys, name, "--tokenizer", shared_root / "qwen3")
    reasoning = [d for d in report["dropped"] if d[2] == "reasoning"]
    assert len(reasoning) == 40 and report["dropped_reasoning_tokens"] > 4000
    assert main(["tokenize", str(name), str(tmp_path / "out"), "-t", str(shared_root / "qwen3")]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["reasoning_left_out_messages"] == 40
    assert summary["reasoning_left_out_tokens"] == report["dropped_reasoning_tokens"]
    assert (f"reasoning the template leaves out (earlier turns): 40 message(s), about "
            f"{report['dropped_reasoning_tokens']} tokens") in out


@pytest.mark.shared
def test_glaive_on_llama3_reports_each_message_once_naming_the_tool_call(shared_root, realdata, tmp_path, capsys):
    template = FIXTURES / "llama3.jinja"
    name = realdata / "glaive_toolcall_en_demo.json"
    args = ["--tokenizer", shared_root / "llama3_1", "--chat-template", template]
    code, text = _check(capsys, name, *args)
    assert code == 1
    # 211 tool calls in 153 samples, and the tool lists of all 191 samples that have tools (Llama 3's
    # template renders no tool list)
    assert ("data the chat template leaves out, in 191 sample(s): 211 message(s), 191 tool list(s)" in text
            and "422" not in text)
    assert "tool calls (only its header and stop token are rendered, so only the stop token is trained): 211" in text
    assert "the tool list (the sample's 'tools': the chat template does not render it, so the model is trained " \
        "without seeing the tools): 191  [sample: 0, 3, 7, 10, 11, 12, 15, 18, ... (191 in all)]" in text
    assert "the whole message" not in text and "everything but its stop token" not in text
    assert "  what to do: fix the data, or pass a chat template that renders it (--chat-template)" in text
    # preview of such a row says so
    capsys.readouterr()
    main(["preview", str(name), "-n", "1", "--no-color", *map(str, args)])
    out = capsys.readouterr().out
    assert "the chat template leaves out (not trained): message 3: tool calls" in out
    # tokenize: the console reason is whole sentences, the rejects file has the message numbers
    assert main(["tokenize", str(name), str(tmp_path / "out"), "-t", str(shared_root / "llama3_1"),
                 "--chat-template", str(template), "--quiet"]) == 1
    err = capsys.readouterr().err
    tool_list = ("the tool list (the sample's 'tools': the chat template does not render it, so the model is "
                 "trained without seeing the tools)")
    assert ("153 x the chat template leaves out data the row holds: tool calls (only its header and stop token are "
            f"rendered, so only the stop token is trained); {tool_list}.\n") in err
    assert f"38 x the chat template leaves out data the row holds: {tool_list}.\n" in err
    # each reason is followed by the rest of its first reject's error: where, and what to do
    fix = "Fix the data or the template, or keep such rows (on_lost_data='keep'; CLI: --keep-lost-data)."
    assert err.count(f" {fix}\n") == 2
    assert (f"rendered, so only the stop token is trained); {tool_list}.\n    sample 0: Per message: message 3: tool "
            "calls (only its header") in err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["reject_details"].keys() == summary["reject_reasons"].keys()
    assert "Per message: message 3: tool calls" in read_rejects(tmp_path / "out")[0]["error"]


@pytest.mark.shared
def test_an_empty_reply_is_no_lost_data_in_check_and_tokenize(shared_root, tmp_path, capsys):
    six = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
           {"role": "user", "content": "Say nothing."}, {"role": "assistant", "content": ""},
           {"role": "user", "content": "Thanks"}, {"role": "assistant", "content": "You're welcome."}]
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": six}) + "\n")
    for name in ("qwen3", "llama3_1", "gemma3"):
        tok = str(shared_root / name)
        code, report = _check_json(capsys, data, "--tokenizer", tok)
        assert code == 0 and report["dropped"] == [] and report["empty_replies"] == [[0, 3]], name
        assert main(["tokenize", str(data), str(tmp_path / name), "-t", tok, "--quiet"]) == 0
        part = read_parts(tmp_path / name)
        assert len(part) == 1 and json.loads((tmp_path / name / "summary.json").read_text())["empty_replies"] == 1


@pytest.mark.shared
def test_an_unknown_role_is_named(shared_root, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "Hi"},
                                             {"role": "wizard", "content": "A spell"},
                                             {"role": "assistant", "content": "Hello!"}]}) + "\n")
    code, text = _check(capsys, data, "--tokenizer", shared_root / "qwen3")
    assert code == 1 and "  the whole message (role 'wizard'): 1  [sample, message: (0, 1)]" in text


@pytest.mark.shared
def test_a_template_without_a_tool_role_gets_a_hint(shared_root, realdata, capsys):
    code, report = _check_json(capsys, realdata / "glaive_toolcall_en_demo.json", "--tokenizer",
                               shared_root / "gemma3")
    assert code == 1 and report["errors"]
    for _, error in report["errors"]:
        assert "Conversation roles must alternate" in error
        assert "The chat template has no 'tool' role" in error


# ---------------------------------------------------------------------------------------------
# Item 7: the legend, line numbers, whole sentences
# ---------------------------------------------------------------------------------------------


def test_the_legend_says_the_dot_marks_only_tokens_that_are_all_spaces():
    from respmask._preview import legend

    for color in (False, True):
        assert "· space (marked only in tokens that are all spaces" in legend(color)


@pytest.mark.shared
def test_a_bad_json_line_has_the_same_line_number_in_check_and_in_the_rejects(shared_root, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    good = json.dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]})
    data.write_text(good + "\n\n" + good.replace('"assistant",', '"assistant"') + "\n")
    tok = str(shared_root / "qwen3")
    _, report = _check_json(capsys, data, "--tokenizer", tok)
    assert main(["tokenize", str(data), str(tmp_path / "out"), "-t", tok, "--quiet"]) == 1
    rejects = read_rejects(tmp_path / "out")
    expected = "sample 1: line 3: not valid JSON (Expecting ',' delimiter at column "
    assert report["errors"][0][1].startswith(expected) and rejects[0]["error"].startswith(expected)
    assert report["errors"][0][1] == rejects[0]["error"]


# ---------------------------------------------------------------------------------------------
# The README shows what the commands print
# ---------------------------------------------------------------------------------------------

README = Path(__file__).resolve().parent.parent / "README.md"


def _readme_block(marker: str) -> list[str]:
    """The lines of the README's one ```text block that holds ``marker`` (lines cut short with
    "..." are left out: they abbreviate a line shown whole above them)."""
    import re

    blocks = [b for b in re.findall(r"```text\n(.*?)```", README.read_text(encoding="utf-8"), re.S) if marker in b]
    assert len(blocks) == 1, marker
    return [line for line in blocks[0].splitlines() if not line.endswith(". ...")]


@pytest.mark.shared
@pytest.mark.parametrize("marker, name, tokenizer, extra", [
    ("is a preference row (columns 'chosen', 'rejected')", "dpo_en_demo.json", "qwen3", []),
    ("holds images (1 item", "mllm_demo.json", "qwen3", []),
    ("tool calls (only its header and stop token", "glaive_toolcall_en_demo.json", "llama3_1",
     ["--chat-template", str(FIXTURES / "llama3.jinja")]),
    ("The chat template has no 'tool' role", "glaive_toolcall_en_demo.json", "gemma3", []),
])
def test_readme_shows_what_check_prints(shared_root, realdata, marker, name, tokenizer, extra, capsys):
    _, printed = _check(capsys, realdata / name, "--tokenizer", shared_root / tokenizer, *extra)
    lines = printed.splitlines()
    for line in _readme_block(marker):
        assert line in lines, line


@pytest.mark.shared
def test_readme_shows_what_tokenize_prints(shared_root, realdata, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["tokenize", str(realdata / "reason_tool_use_demo_50.jsonl"), "out", "-t",
                 str(shared_root / "qwen3")]) == 0
    lines = capsys.readouterr().out.splitlines()
    for line in _readme_block("reasoning the template leaves out (earlier turns): 40"):
        assert line in lines, line


def test_the_masker_itself_refuses_images_a_text_tokenizer_would_drop():
    # not only the front ends: ChatMasker.encode / render / render_rows say so too
    from respmask import ChatMasker, SampleError
    from support.tokenizers import fixture_tokenizer

    tok = fixture_tokenizer("qwen2_5")
    row = {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what?"}]},
                        {"role": "assistant", "content": "a cat"}]}
    masker = ChatMasker(tok)
    for call in (masker.encode, masker.render, masker.render_rows):
        with pytest.raises(SampleError, match="a text tokenizer cannot use"):
            call(row)
    text_only = ChatMasker(tok, text_only=True).encode(row)
    assert tok.decode(text_only.input_ids[text_only.labels != -100]) == "a cat<|im_end|>"


def test_a_template_kwarg_the_template_never_reads_is_named_once():
    """apply_chat_template ignores a kwarg its template does not read (a typo of enable_thinking
    changes nothing, silently); respmask says so, once per template, with the closest name."""
    import warnings

    from support.tokenizers import fixture_tokenizer

    tok = fixture_tokenizer("qwen3")
    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    collator = respmask.ResponseOnlyCollator(tok, template_kwargs={"enable_thinkng": False})
    with pytest.warns(respmask.RespmaskWarning, match=r"template kwarg\(s\) 'enable_thinkng' \(did you mean "
                                                      r"'enable_thinking'\?\) are not read by the chat template"):
        collator([{"messages": chat}])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        collator([{"messages": chat}])  # told once
        # a kwarg the template reads, and no kwargs at all: nothing to tell
        respmask.ResponseOnlyCollator(tok, template_kwargs={"enable_thinking": False})([{"messages": chat}])
        respmask.ResponseOnlyCollator(tok)([{"messages": chat}])
    # a sample's own chat_template_kwargs too, on a template that reads no kwarg at all
    with pytest.warns(respmask.RespmaskWarning, match=r"'enable_thinking' are not read by the chat template, so "
                                                      r"they change nothing \(the template reads no other variable"):
        respmask.ChatMasker(fixture_tokenizer("llama3")).encode(
            {"messages": chat, "chat_template_kwargs": {"enable_thinking": False}})
