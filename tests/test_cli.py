"""The respmask command on the embedded demo and on a JSONL file."""

from __future__ import annotations

import json
import subprocess
import sys

from respmask.cli import main
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
    out = subprocess.run([sys.executable, "-m", "respmask.cli", "check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "OK" in out.stdout
