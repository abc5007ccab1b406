"""Options are never accepted without effect (a new user's hunt): a combination that can only be a
mistake is an error naming the option, why it does nothing and what would make it apply; one a
shared configuration may set harmlessly warns once, where the front-end is built. Front-ends that
pass each other the defaults (collator -> check) say nothing."""

from __future__ import annotations

import json
import warnings

import pytest

transformers = pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")

import respmask  # noqa: E402
from respmask import Pretokenizer, ResponseOnlyCollator  # noqa: E402
from respmask._cli import main  # noqa: E402
from support.audio import build_processor, make_audio  # noqa: E402
from support.tokenizers import fixture_tokenizer  # noqa: E402
from test_trainer import _args, tiny_model  # noqa: E402

CHAT = [{"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": "It is sunny, 21 degrees celsius."}]


def _built(make):
    """What ``make()`` returns and the UserWarnings it gave (RespmaskWarnings aside: data problems)."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        made = make()
    return made, [w for w in seen if issubclass(w.category, UserWarning)
                  and not issubclass(w.category, respmask.RespmaskWarning)]


# -- on_image_cut="drop" with a text tokenizer: it can never apply -------------------------------

@pytest.mark.parametrize("front_end", ["collator", "check"])
def test_on_image_cut_drop_with_a_text_tokenizer_is_an_error(front_end):
    tok = fixture_tokenizer("qwen3")
    with pytest.raises(ValueError) as caught:
        if front_end == "collator":
            ResponseOnlyCollator(tok, max_length=64, on_image_cut="drop")
        else:
            respmask.check([{"messages": CHAT}], tok, max_length=64, on_image_cut="drop")
    said = str(caught.value)
    assert "on_image_cut='drop' has no effect with a text tokenizer" in said
    assert "Pass the model's processor instead of its tokenizer, or leave on_image_cut out" in said


def test_on_image_cut_drop_with_a_processor_and_a_length_is_accepted_silently():
    processor = build_processor("qwen2_audio")
    collator, said = _built(lambda: ResponseOnlyCollator(processor, max_length=64, on_image_cut="drop"))
    assert said == [] and collator.on_image_cut == "drop"


# -- truncation="left" / on_image_cut="drop" without max_length: nothing is cut --------------------

@pytest.mark.parametrize("front_end", ["collator", "pretokenizer", "check"])
def test_left_truncation_without_max_length_warns_once_where_it_is_built(front_end):
    tok = fixture_tokenizer("qwen3")
    make = {"collator": lambda: ResponseOnlyCollator(tok, truncation="left"),
            "pretokenizer": lambda: Pretokenizer(tok, truncation="left"),
            "check": lambda: respmask.check([{"messages": CHAT}], tok, truncation="left")}[front_end]
    made, said = _built(make)
    assert len(said) == 1, [str(w.message) for w in said]
    assert str(said[0].message) == ("truncation='left' has no effect without max_length: nothing is cut. Pass "
                                    "max_length=N to cut longer samples, or leave truncation out.")
    assert said[0].filename == __file__  # the user's line, not respmask's
    if front_end == "check":
        assert made.ok and made.truncated == []
    # with a length it applies: no warning; the defaults never warn
    for kwargs in ({"truncation": "left", "max_length": 64}, {}):
        _, said = _built(lambda: ResponseOnlyCollator(tok, **kwargs))
        assert said == []


def test_on_image_cut_drop_without_max_length_warns_with_a_processor():
    processor = build_processor("qwen2_audio")
    collator, said = _built(lambda: ResponseOnlyCollator(processor, on_image_cut="drop", truncation="left"))
    assert [str(w.message) for w in said] == [
        "truncation='left' and on_image_cut='drop' have no effect without max_length: nothing is cut. Pass "
        "max_length=N to cut longer samples, or leave truncation and on_image_cut out."]
    # and the collator does cut nothing: a long chat with audio keeps all its audio
    chat = [{"role": "user", "content": [{"type": "audio", "audio": make_audio(2.0)},
                                         {"type": "text", "text": "What is said?"}]},
            {"role": "assistant", "content": "Hello " * 40}]
    batch, _ = _built(lambda: collator([{"messages": chat}]))
    assert collator.stats.left_out == collator.stats.truncated == collator.stats.audio_dropped == 0
    assert batch["input_features"].shape[0] == 1


# -- model= where the collator never uses it -----------------------------------------------------

def test_model_with_a_text_tokenizer_warns_that_it_is_not_used():
    tok = fixture_tokenizer("qwen3")
    model = tiny_model(len(tok))
    _, said = _built(lambda: ResponseOnlyCollator(tok, padding_free=True, model=model))
    assert len(said) == 1 and said[0].filename == __file__
    text = str(said[0].message)
    assert text.startswith("model= has no effect here: the collator uses the model only with a processor and "
                           "padding_free=True")
    assert "with a text tokenizer it is not used" in text and text.endswith("Leave model out.")


def test_model_with_a_processor_but_padded_batches_warns_that_it_is_not_used():
    processor = build_processor("qwen2_audio")
    model = tiny_model(len(processor.tokenizer))
    _, said = _built(lambda: ResponseOnlyCollator(processor, model=model))
    assert len(said) == 1
    text = str(said[0].message)
    assert "without padding_free=True it is not used (a padded batch needs no model)" in text
    assert text.endswith("Leave model out, or pass padding_free=True.")


# -- collator -> check_trainer -> check: judged once, at the collator --------------------------

def test_check_trainer_does_not_judge_again_what_the_collator_was_built_with(tmp_path):
    tok = fixture_tokenizer("qwen3")
    collator, said = _built(lambda: ResponseOnlyCollator(tok, truncation="left"))
    assert len(said) == 1
    trainer = transformers.Trainer(model=tiny_model(len(tok)), args=_args(tmp_path, max_steps=1),
                                   train_dataset=datasets.Dataset.from_list([{"messages": CHAT}] * 4),
                                   data_collator=collator)
    report, said = _built(lambda: respmask.check_trainer(trainer, batches=1, verbose=False))
    assert said == [] and report.dataset is not None and report.dataset.ok


# -- the command line: a flag without effect is an error (exit 2) ---------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    fixture_tokenizer("qwen3").save_pretrained(root / "tok")
    (root / "data.jsonl").write_text(json.dumps({"messages": CHAT}) + "\n", encoding="utf-8")
    return root


@pytest.mark.parametrize("command, flags, said", [
    ("check", ["--truncation", "left"],
     "--truncation left: no effect without --max-length N (nothing is cut): add --max-length N, or leave "
     "--truncation out"),
    ("preview", ["--truncation", "left"],
     "--truncation left: no effect without --max-length N (nothing is cut)"),
    ("preview", ["--on-image-cut", "drop", "--max-length", "64"],
     "--on-image-cut applies to rows with images, read with --processor DIR"),
    ("tokenize", ["--truncation", "left"],
     "--truncation left: no effect without --max-length N or --pack L (nothing is cut): add --max-length N, or "
     "leave --truncation out"),
])
def test_cli_flags_without_effect_exit_2(files, capsys, tmp_path, command, flags, said):
    args = [command, str(files / "data.jsonl")] + ([str(tmp_path / "out")] if command == "tokenize" else [])
    assert main([*args, "--tokenizer", str(files / "tok"), *flags]) == 2
    assert said in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    # with a length to cut to, the same flag applies
    if flags == ["--truncation", "left"]:
        assert main([*args, "--tokenizer", str(files / "tok"), *flags, "--max-length", "64"]) == 0


def test_cli_on_image_cut_drop_with_a_processor_needs_a_length(files, tmp_path, capsys):
    build_processor("qwen2_audio").save_pretrained(tmp_path / "processor")
    args = ["check", str(files / "data.jsonl"), "--processor", str(tmp_path / "processor"), "--on-image-cut", "drop"]
    assert main(args) == 2
    assert ("--on-image-cut drop: no effect without --max-length N (nothing is cut): add --max-length N, or leave "
            "--on-image-cut out") in capsys.readouterr().err
    assert main([*args, "--max-length", "64"]) == 0


# -- template kwargs: the string "false" is true in a chat template --------------------------------

def test_the_string_false_turns_thinking_on_in_a_real_template():
    """Why it is refused: Qwen3's template opens no empty think block (thinking on) for "false"."""
    tok = fixture_tokenizer("qwen3")
    prompt = [{"role": "user", "content": "hi"}]

    def render(flag):
        return tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True, enable_thinking=flag)
    assert render(False).endswith("<think>\n\n</think>\n\n")
    assert render("false") == render(True) != render(False)


@pytest.mark.parametrize("value", ["false", "true", " False ", "TRUE"])
@pytest.mark.parametrize("front_end", ["masker", "options", "collator", "pretokenizer", "check"])
def test_template_kwargs_spelling_a_boolean_as_a_string_are_refused(front_end, value):
    tok = fixture_tokenizer("qwen3")
    kwargs = {"template_kwargs": {"reasoning_effort": "low", "enable_thinking": value}}
    make = {"masker": lambda: respmask.ChatMasker(tok, **kwargs),
            "options": lambda: respmask.MaskOptions(train_on="last").with_(**kwargs),
            "collator": lambda: ResponseOnlyCollator(tok, **kwargs),
            "pretokenizer": lambda: Pretokenizer(tok, **kwargs),
            "check": lambda: respmask.check([{"messages": CHAT}], tok, **kwargs)}[front_end]
    with pytest.raises(ValueError) as caught:
        make()
    flag = value.strip().lower() == "true"
    assert str(caught.value) == (
        f"template_kwargs['enable_thinking'] is the string {value!r}, not a boolean: a chat template reads any "
        f"non-empty string as true (so 'false' turns it on), and a string never as the boolean true. Pass the "
        f"boolean {flag} (JSON {str(flag).lower()}).")


def test_other_string_template_kwargs_stay_accepted_and_rendered():
    tok = fixture_tokenizer("gpt_oss")
    masker, said = _built(lambda: respmask.ChatMasker(tok, template_kwargs={"reasoning_effort": "low"}))
    assert said == []
    rendered = masker.render({"messages": CHAT})
    assert "Reasoning: low" in rendered.text
    assert rendered.text == tok.apply_chat_template(CHAT, tokenize=False, reasoning_effort="low")


def test_a_samples_chat_template_kwargs_spelling_a_boolean_is_a_bad_sample():
    tok = fixture_tokenizer("qwen3")
    rows = [{"messages": CHAT}, {"messages": CHAT, "chat_template_kwargs": {"enable_thinking": "false"}},
            {"messages": CHAT, "chat_template_kwargs": {"enable_thinking": False}}]
    report = respmask.check(rows, tok)
    assert not report.ok and report.samples == 3 and report.rows == 2
    assert report.errors == [(1, "sample 1: 'chat_template_kwargs'['enable_thinking'] is the string 'false', not a "
                                 "boolean: a chat template reads any non-empty string as true (so 'false' turns it "
                                 "on), and a string never as the boolean true. Pass the boolean False (JSON false) "
                                 "in the data (a boolean column), or drop the row.")]
    with pytest.raises(respmask.SampleError, match=r"^sample 1: 'chat_template_kwargs'\['enable_thinking'\] is the "
                                                   "string 'false'"):
        ResponseOnlyCollator(tok)(rows)


@pytest.mark.parametrize("command", ["check", "preview", "tokenize"])
def test_cli_template_kwargs_spelling_a_boolean_exit_2(files, capsys, tmp_path, command):
    args = [command, str(files / "data.jsonl")] + ([str(tmp_path / "out")] if command == "tokenize" else [])
    given = '{"enable_thinking": "false", "reasoning_effort": "low"}'
    assert main([*args, "--tokenizer", str(files / "tok"), "--template-kwargs", given]) == 2
    err = capsys.readouterr().err
    assert ("--template-kwargs['enable_thinking'] is the string 'false', not a boolean: a chat template reads any "
            "non-empty string as true (so 'false' turns it on), and a string never as the boolean true. Pass the "
            "boolean False (JSON false): --template-kwargs '{\"enable_thinking\": false, \"reasoning_effort\": "
            "\"low\"}'") in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


# -- tool-call arguments that are not JSON -------------------------------------------------------

def _tool_chat(arguments, flat=False):
    call = {"name": "get_weather", "arguments": arguments}
    return [{"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [call if flat else {"type": "function", "function": call}]},
            {"role": "tool", "content": "sunny"},
            {"role": "assistant", "content": "It is sunny."}]


BROKEN = '{"city": "Paris"'  # a truncated JSON object


def test_templates_write_string_arguments_as_they_are():
    """Why it is an error: Qwen3 prints string arguments verbatim, Llama 3.1 quotes them as a JSON
    string; either way the broken text is in the reply the model is trained to write."""
    written = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}\n</tool_call>'  # a brace short
    assert written in fixture_tokenizer("qwen3").apply_chat_template(_tool_chat(BROKEN), tokenize=False)
    assert '"parameters": "{\\"city\\": \\"Paris\\""' in fixture_tokenizer("llama3_1").apply_chat_template(
        _tool_chat(BROKEN), tokenize=False)


def _bad_arguments(where):
    return (f"{where}: the 'arguments' of its call of 'get_weather' are a string that is not JSON (Expecting ',' "
            f"delimiter at character 16: {BROKEN!r}): the chat template writes it as it is, so the model would learn "
            "to write a broken tool call. Fix the arguments in the data (a JSON object, as a string or a dict), or "
            "drop the row.")


@pytest.mark.parametrize("flat", [False, True])
def test_tool_call_arguments_that_are_not_json_are_a_bad_sample(flat):
    tok = fixture_tokenizer("qwen3")
    rows = [{"messages": _tool_chat('{"city": "Paris"}')}, {"messages": _tool_chat(BROKEN, flat)},
            {"messages": _tool_chat({"city": "Paris"})}]
    before = json.dumps(rows)
    report = respmask.check(rows, tok)
    assert report.errors == [(1, "sample 1: " + _bad_arguments("'messages'[1]['tool_calls'][0]"))]
    assert not report.ok and report.samples == 3 and report.rows == 2 and report.untrainable == []
    with pytest.raises(respmask.SampleError) as caught:
        ResponseOnlyCollator(tok)(rows)
    assert caught.value.index == 1 and _bad_arguments("'messages'[1]['tool_calls'][0]") in str(caught.value)
    out = Pretokenizer(tok, on_error="collect")({"messages": [r["messages"] for r in rows]})
    assert out["error"][0] is None and out["error"][2] is None
    assert _bad_arguments("'messages'[1]['tool_calls'][0]") in out["error"][1] and len(out["input_ids"][1]) == 0
    assert json.dumps(rows) == before  # the rows are not changed


def test_sharegpt_function_call_arguments_that_are_not_json_name_the_row_as_written():
    tok = fixture_tokenizer("qwen3")
    row = {"system": "Be brief.", "conversations": [
        {"from": "human", "value": "Weather in Paris?"},
        {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": BROKEN})},
        {"from": "observation", "value": "sunny"}, {"from": "gpt", "value": "It is sunny."}]}
    report = respmask.check([row], tok)
    assert report.errors == [(0, "sample 0: " + _bad_arguments("'conversations'[1] (function_call)"))]
    good = {**row, "conversations": [*row["conversations"][:1], {"from": "function_call", "value": json.dumps(
        {"name": "get_weather", "arguments": {"city": "Paris"}})}, *row["conversations"][2:]]}
    assert respmask.check([good], tok).ok


def test_cli_check_reports_tool_call_arguments_that_are_not_json(files, tmp_path, capsys):
    data = tmp_path / "tools.jsonl"
    data.write_text(json.dumps({"messages": CHAT}) + "\n" + json.dumps({"messages": _tool_chat(BROKEN)}) + "\n",
                    encoding="utf-8")
    assert main(["check", str(data), "--tokenizer", str(files / "tok")]) == 1
    out = capsys.readouterr().out
    assert "errors:             1" in out and "sample 1: " + _bad_arguments("'messages'[1]['tool_calls'][0]") in out
