"""The respmask command on the embedded demo and on a JSONL file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import respmask
from respmask import check
from respmask._cli import main
from support.tokenizers import fixture_tokenizer


def test_preview_demo_runs_offline(capsys):
    assert main(["preview", "--no-color"]) == 0
    out = capsys.readouterr().out
    assert "sample 0" in out and "sample 2" in out
    assert "⟦" in out and "The capital of France is Paris.<|im_end|>⟧" in out
    # the user text that imitates a role marker stays outside every trained run
    line = next(l for l in out.splitlines() if "looks like a role marker" in l)
    assert "⟦" not in line and "⟧" not in line


def test_check_demo(capsys):
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "samples:            3" in out and "untrainable:        0" in out and "OK" in out


def test_check_file_reports_problems(tmp_path, capsys):
    tok = fixture_tokenizer("qwen2_5")
    tok_dir = tmp_path / "tok"
    tok.save_pretrained(tok_dir)
    data = tmp_path / "data.jsonl"
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]}
    no_reply = {"messages": [{"role": "user", "content": "hi"}]}
    broken = {"messages": [{"content": "x"}]}
    data.write_text("\n".join(json.dumps(x) for x in [good, no_reply, broken, good]) + "\n")
    assert main(["check", str(data), "--tokenizer", str(tok_dir), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == 4
    assert report["untrainable"] == [1] and report["truncated"] == []
    assert [e[0] for e in report["errors"]] == [2] and "has no 'role'" in report["errors"][0][1]
    assert report["ok"] is False
    # truncating before the reply leaves the good samples untrainable too, and says why
    assert main(["check", str(data), "--tokenizer", str(tok_dir), "--json", "--max-length", "5"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["truncated"] == [0, 1, 3]
    assert report["truncated_untrainable"] == [0, 3] and report["untrainable"] == [0, 1, 3]


def test_preview_writes_html(tmp_path, capsys):
    out = tmp_path / "p.html"
    assert main(["preview", "--no-color", "-n", "1", "--html", str(out)]) == 0
    assert out.read_text().count('class="rm-tok rm-train"') > 0


def test_file_without_tokenizer_is_a_clear_error(tmp_path, capsys):
    f = tmp_path / "x.jsonl"
    f.write_text("{}\n")
    assert main(["check", str(f)]) == 2
    assert "--tokenizer DIR is required" in capsys.readouterr().err


def test_console_script_entry_point():
    out = subprocess.run([sys.executable, "-m", "respmask", "check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "OK" in out.stdout


# -- data formats: JSON arrays, ShareGPT / Alpaca / OpenAI rows, the mapping flags ------------------

FORMATS_DIR = Path(__file__).resolve().parent / "fixtures" / "formats"
MAPPING_FLAGS = ["--field-messages", "dialog", "--role-key", "speaker", "--content-key", "text",
                 "--role-map", '{"customer": "user", "agent": "assistant"}']


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "qwen3"
    fixture_tokenizer("qwen3").save_pretrained(path)
    return str(path)


def _rows(path: Path) -> list:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    value = json.loads(text)
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("name", ["sharegpt_tools.json", "alpaca.json", "openai.jsonl", "conversation_object.json"])
def test_check_reads_each_format_with_no_conversion_code(qwen3_dir, name, capsys):
    path = FORMATS_DIR / name
    assert main(["check", str(path), "--tokenizer", qwen3_dir, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    expected = check(_rows(path), fixture_tokenizer("qwen3"))
    assert report["samples"] == len(_rows(path)) == expected.samples and report["errors"] == []
    assert report["trained_tokens"] == expected.trained_tokens > 0 and report["untrainable"] == []


def test_check_reads_a_pretty_printed_json_array(tmp_path, qwen3_dir, capsys):
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
            for i in range(3)]
    for name, text in [("rows.json", json.dumps(rows, indent=2)), ("one_line.json", json.dumps(rows)),
                       ("rows.jsonl", "\n".join(json.dumps(r) for r in rows))]:
        (tmp_path / name).write_text(text)
        assert main(["check", str(tmp_path / name), "--tokenizer", qwen3_dir, "--json"]) == 0, name
        assert json.loads(capsys.readouterr().out)["samples"] == 3
    # a JSON Lines file of bare message lists is still one conversation per line
    (tmp_path / "lists.jsonl").write_text(json.dumps(rows[0]["messages"]) + "\n")
    assert main(["check", str(tmp_path / "lists.jsonl"), "--tokenizer", qwen3_dir, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 1


def test_broken_json_array_is_reported_with_its_position(tmp_path, qwen3_dir, capsys):
    path = tmp_path / "broken.json"
    path.write_text('[\n  {"messages": []},\n  {"messages": [}\n]\n')
    assert main(["check", str(path), "--tokenizer", qwen3_dir]) == 2
    err = capsys.readouterr().err
    assert "broken.json: not valid JSON at line 3 column" in err and "JSON array of rows" in err
    # a broken JSON Lines line is recorded with its line number, and checking goes on (exit 1 at the end)
    path = tmp_path / "broken.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "x"}]}\n{not json\n')
    assert main(["check", str(path), "--tokenizer", qwen3_dir]) == 1
    out = capsys.readouterr().out
    assert "sample 1: line 2: not valid JSON" in out and "samples:            2" in out


def test_mapping_flags(qwen3_dir, capsys):
    path = str(FORMATS_DIR / "custom.jsonl")
    assert main(["check", path, "--tokenizer", qwen3_dir, "--json", *MAPPING_FLAGS]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == 2 and report["turns"] == 2 and report["errors"] == []
    # without the mapping: every row is an error that lists its columns and the known formats
    assert main(["check", path, "--tokenizer", qwen3_dir, "--json"]) == 1
    errors = json.loads(capsys.readouterr().out)["errors"]
    assert len(errors) == 2 and "it has ['dialog', 'id']" in errors[0][1] and "--field-messages" in errors[0][1]
    # a role the map lacks is named
    assert main(["check", path, "--tokenizer", qwen3_dir, "--json", *MAPPING_FLAGS[:-1],
                 '{"customer": "user"}']) == 1
    assert "'dialog'[1] has role 'agent'" in json.loads(capsys.readouterr().out)["errors"][0][1]
    assert main(["preview", path, "--tokenizer", qwen3_dir, "--no-color", *MAPPING_FLAGS]) == 0
    out = capsys.readouterr().out
    assert "ships tomorrow.<|im_end|>⟧" in out and "welcome.<|im_end|>⟧" in out
    assert all("⟦" not in line and "⟧" not in line for line in out.splitlines() if "order is late" in line)


def test_format_flag_and_bad_flags(qwen3_dir, capsys):
    path = str(FORMATS_DIR / "sharegpt_tools.json")
    assert main(["check", path, "--tokenizer", qwen3_dir, "--json", "--format", "sharegpt"]) == 0
    capsys.readouterr()
    assert main(["check", path, "--tokenizer", qwen3_dir, "--json", "--format", "alpaca"]) == 1
    assert "which data_format='alpaca' reads" in json.loads(capsys.readouterr().out)["errors"][0][1]
    assert main(["check", path, "--tokenizer", qwen3_dir, "--format", "sharegpt", "--role-key", "from"]) == 2
    assert "exclude each other" in capsys.readouterr().err
    assert main(["check", path, "--tokenizer", qwen3_dir, "--role-map", "{human: user}"]) == 2
    assert "--role-map is not JSON" in capsys.readouterr().err


def test_preview_sharegpt_array(qwen3_dir, capsys):
    path = str(FORMATS_DIR / "sharegpt_tools.json")
    assert main(["preview", path, "--tokenizer", qwen3_dir, "--no-color", "-n", "2"]) == 0
    out = capsys.readouterr().out
    assert "sample 1" in out and "sample 2" not in out and "error" not in out
    assert '⟦<tool_call>↵\n{"name": "get_weather", "arguments": {"city": "Paris"}}↵\n</tool_call><|im_end|>⟧' in out


REAL_FILES = ["llamafactory/alpaca_en_demo.json", "llamafactory/glaive_toolcall_en_demo.json",
              "llamafactory/identity.json", "axolotl/alpaca_alpaca.json", "axolotl/conversation.json",
              "axolotl/conversation.missingturns.json"]


@pytest.mark.shared
@pytest.mark.parametrize("name", REAL_FILES)
def test_real_files_check_with_a_real_tokenizer(shared_root, name, capsys):
    realdata = shared_root.parent / "realdata"
    if not (realdata / name).is_file():
        pytest.skip(f"{realdata / name} not available")
    # Axolotl's "missingturns" file holds a reply with empty content: it holds no data to lose, so
    # it is no problem (exit 0); check lists it as an empty reply that trains only its stop token
    missing = name.endswith("missingturns.json")
    code = main(["check", str(realdata / name), "--tokenizer", str(shared_root / "qwen3"), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    rows = _rows(realdata / name)
    assert report["samples"] == len(rows) and report["errors"] == [] and report["untrainable"] == []
    assert report["turns_without_stop"] == [] and 0 < report["trained_fraction"] < 1
    lost = [d for d in report["dropped"] if d[2] != "reasoning"]
    assert not lost
    assert report["empty_replies"] == ([[0, 1]] if missing else [])


@pytest.mark.parametrize("side", ["right", "left"])
def test_preview_max_length_shows_the_row_the_collator_cuts(tmp_path, capsys, side):
    tok = fixture_tokenizer("qwen2_5")
    tok_dir = tmp_path / "tok"
    tok.save_pretrained(tok_dir)
    sample = {"messages": [{"role": "user", "content": "hi there"},
                           {"role": "assistant", "content": "hello friend, how are you today? " * 4}]}
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps(sample) + "\n", encoding="utf-8")
    whole = respmask.preview(sample, tok)
    n = whole.n_tokens - 10
    cut = respmask.ResponseOnlyCollator(tok, max_length=n, truncation=side).preview(sample)
    assert main(["preview", str(data), "--tokenizer", str(tok_dir), "--no-color", "--max-length", str(n),
                 "--truncation", side]) == 0
    out = capsys.readouterr().out
    assert cut.summary() in out and f"truncated to max_length={n} ({side}): 10 of {whole.n_tokens} tokens cut" in out
    assert cut.to_text(legend=False) in out


@pytest.mark.parametrize("flags, said", [
    (["--template-kwargs", "[1]"], "--template-kwargs must be a JSON object"),
    (["--template-kwargs", "{bad"], "--template-kwargs is not JSON"),
    (["--chat-template", "no-such-template.jinja"], "--chat-template no-such-template.jinja: cannot read it"),
])
def test_bad_option_values_exit_2_with_what_is_wrong(qwen3_dir, tmp_path, flags, said, capsys):
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "a"},
                                             {"role": "assistant", "content": "b"}]}) + "\n", encoding="utf-8")
    assert main(["check", str(data), "--tokenizer", qwen3_dir, *flags]) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err


def test_a_tokenizer_path_that_holds_no_tokenizer_is_named(tmp_path, capsys):
    data = tmp_path / "rows.jsonl"
    data.write_text("{}\n", encoding="utf-8")
    assert main(["check", str(data), "--tokenizer", str(tmp_path / "missing")]) == 2
    assert "--tokenizer " + str(tmp_path / "missing") + ": no such directory" in capsys.readouterr().err
    assert main(["check", str(data), "--tokenizer", str(tmp_path)]) == 2
    assert "no tokenizer there" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["check", "x.jsonl", "--max-length", "-3"], ["check", "x.jsonl", "--max-length", "0"],
    ["preview", "x.jsonl", "-n", "-1"], ["tokenize", "x.jsonl", "out", "--pack", "0"],
    ["tokenize", "x.jsonl", "out", "--shard-size", "0"], ["tokenize", "x.jsonl", "out", "--num-proc", "0"],
])
def test_numbers_that_cannot_apply_are_refused_by_the_parser(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and "must be" in capsys.readouterr().err


def test_check_refuses_a_budget_that_is_not_positive():
    with pytest.raises(ValueError, match="max_length must be positive, got -3"):
        check([{"messages": [{"role": "user", "content": "a"}]}], fixture_tokenizer("qwen3"), max_length=-3)


def test_preview_split_prints_every_row(tmp_path, capsys):
    """`respmask preview --split turns|auto` on a conversation split into rows stopped with an
    AssertionError (preview returns a list then): it prints every row, numbered, with --max-length
    too, and writes each to --html."""
    tok = fixture_tokenizer("qwen2_5")
    tok_dir = tmp_path / "tok"
    tok.save_pretrained(tok_dir)
    data = tmp_path / "data.jsonl"
    chat = {"messages": [{"role": "user", "content": "first question"}, {"role": "assistant", "content": "one"},
                         {"role": "user", "content": "second question"}, {"role": "assistant", "content": "two"}]}
    single = {"messages": chat["messages"][:2]}
    data.write_text(json.dumps(chat) + "\n" + json.dumps(single) + "\n")
    html = tmp_path / "p.html"
    for extra in ([], ["--max-length", "400"]):
        assert main(["preview", str(data), "--tokenizer", str(tok_dir), "--split", "turns", "--no-color",
                     "--html", str(html), *extra]) == 0
        out = capsys.readouterr().out
        assert "── sample 0, row 1 of 2 " in out and "── sample 0, row 2 of 2 " in out
        assert "── sample 1 " in out and "sample 1, row" not in out
        first, second = out.split("── sample 0, row 2 of 2 ")[0], out.split("── sample 0, row 2 of 2 ")[1]
        assert "⟦one<|im_end|>⟧" in first and "⟦two<|im_end|>⟧" in second.split("── sample 1 ")[0]
        page = html.read_text()
        assert "<h3>sample 0, row 1 of 2</h3>" in page and "<h3>sample 0, row 2 of 2</h3>" in page
        assert "<h3>sample 1</h3>" in page


def test_preview_into_a_pipe_closed_early_exits_quietly(tmp_path):
    """`respmask preview FILE | head` ended with a BrokenPipeError traceback: the command now stops
    quietly when its reader goes away, with the status a shell gives a process SIGPIPE ended."""
    tok = fixture_tokenizer("qwen2_5")
    tok_dir = tmp_path / "tok"
    tok.save_pretrained(tok_dir)
    data = tmp_path / "data.jsonl"
    row = {"messages": [{"role": "user", "content": "question " * 50}, {"role": "assistant", "content": "answer " * 50}]}
    data.write_text((json.dumps(row) + "\n") * 300)  # far more than a pipe's buffer once previewed
    proc = subprocess.Popen([sys.executable, "-m", "respmask", "preview", str(data), "--tokenizer", str(tok_dir),
                            "--no-color", "-n", "300"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().startswith(b"tokenizer: ")
    proc.stdout.close()  # as `head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err, err
