"""respmask tokenize: shards, rejects, summary, resume after an interruption, every engine."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

datasets = pytest.importorskip("datasets")

from respmask import Pretokenizer  # noqa: E402
from respmask import check as respmask_check  # noqa: E402
from respmask._cli import main  # noqa: E402
from respmask._shards import read_parts, read_rejects, tokenize_files  # noqa: E402
from support.tokenizers import fixture_tokenizer  # noqa: E402
from test_engines import rows  # noqa: E402


def write_input(path, n=40):
    good = rows(n)
    lines = [json.dumps(r) for r in good]
    lines[5] = "{not json"  # broken line
    lines[11] = json.dumps({"messages": [{"content": "no role"}]})
    lines[17] = json.dumps({"something": "else"})
    lines[23] = json.dumps({"messages": [{"role": "user", "content": "no reply"}]})  # untrainable
    lines[29] = json.dumps({"messages": [{"role": "user", "content": [1, {"x": None}]}, {"role": "assistant", "content": 5}]})
    path.write_text("\n".join(lines) + "\n")
    return lines


def check_accounting(out_dir, n_input, summary):
    parts = read_parts(out_dir)
    rejects = read_rejects(out_dir)
    written = sorted(parts["index"])
    rejected = sorted(r["index"] for r in rejects)
    assert sorted(written + rejected) == list(range(n_input))  # every row is somewhere, once
    assert summary.input_rows == n_input == summary.written_rows + summary.rejected_rows
    assert summary.rejected_rows == len(rejected)
    assert json.loads((out_dir / "summary.json").read_text())["input_rows"] == n_input
    return parts, rejects


def test_bad_rows_go_to_rejects_with_index_and_reason(tmp_path):
    tok = fixture_tokenizer("qwen3")
    src = tmp_path / "in.jsonl"
    write_input(src)
    out = tmp_path / "out"
    summary = tokenize_files(str(src), str(out), tok, num_proc=2, shard_size=16, progress=False,
                             drop_untrainable=True)
    parts, rejects = check_accounting(out, 40, summary)
    by_index = {r["index"]: r["error"] for r in rejects}
    assert set(by_index) == {5, 11, 17, 23, 29}
    assert "not valid JSON" in by_index[5] and "has no 'role'" in by_index[11]
    assert "none of the columns" in by_index[17] and "no trained token" in by_index[23]
    assert all(msg.startswith(f"sample {i}") for i, msg in by_index.items())
    assert summary.shards == 3 and summary.untrainable_rows == 1
    # the written rows are exactly what the Pretokenizer makes of those rows
    good = [json.loads(line) for i, line in enumerate(src.read_text().splitlines()) if i not in by_index]
    ref = Pretokenizer(tok)({"messages": [g["messages"] for g in good]})
    assert parts["input_ids"] == [list(map(int, x)) for x in ref["input_ids"]]
    assert str(parts.features["labels"].feature.dtype) == "int32"


def test_interrupted_run_resumes_from_finished_shards(tmp_path, monkeypatch):
    tok = fixture_tokenizer("qwen3")
    src = tmp_path / "in.jsonl"
    write_input(src)
    out = tmp_path / "out"
    import respmask._shards as shards

    real_engine = shards._run_engine
    calls = []

    def interrupted(*args, **kwargs):  # the run is interrupted while shard 2 is being tokenized
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated interruption in shard 2")
        return real_engine(*args, **kwargs)

    monkeypatch.setattr(shards, "_run_engine", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tokenize_files(str(src), str(out), tok, shard_size=10, progress=False)
    assert sorted(p.name for p in out.glob("part-*.parquet")) == ["part-00000.parquet", "part-00001.parquet"]
    monkeypatch.setattr(shards, "_run_engine", real_engine)
    summary = tokenize_files(str(src), str(out), tok, shard_size=10, progress=False)
    assert summary.resumed_shards == 2 and summary.shards == 4
    check_accounting(out, 40, summary)
    fresh = tmp_path / "fresh"
    again = tokenize_files(str(src), str(fresh), tok, shard_size=10, progress=False)
    assert read_parts(out).to_list() == read_parts(fresh).to_list()
    assert again.to_dict() | {"seconds": 0, "resumed_shards": 0} == summary.to_dict() | {"seconds": 0, "resumed_shards": 0}
    # other settings in the same directory are refused instead of mixing two runs
    with pytest.raises(Exception, match="other settings"):
        tokenize_files(str(src), str(out), tok, shard_size=10, progress=False, max_length=20)


def test_parquet_and_saved_dataset_inputs(tmp_path):
    tok = fixture_tokenizer("qwen3")
    data = rows(12)
    ds = datasets.Dataset.from_list(data)
    ds.to_parquet(str(tmp_path / "in.parquet"))
    ds.save_to_disk(str(tmp_path / "saved"))
    a = tokenize_files(str(tmp_path / "in.parquet"), str(tmp_path / "a"), tok, shard_size=5, progress=False)
    b = tokenize_files(str(tmp_path / "saved"), str(tmp_path / "b"), tok, shard_size=5, progress=False)
    assert a.written_rows == b.written_rows == 12
    assert read_parts(tmp_path / "a").to_list() == read_parts(tmp_path / "b").to_list()


def test_a_saved_dataset_dict_says_which_split_it_reads(tmp_path, capsys):
    """A saved DatasetDict (what load_dataset returns, saved) was read as its 'train' split alone,
    silently: ``check`` said OK over 4 of 6 rows and ``tokenize`` counted 4 input rows, the 'test'
    split never read. Both say now which split they read and how to read another (its own
    directory, which then reads as any saved dataset)."""
    tok = fixture_tokenizer("qwen3")
    tok.save_pretrained(tmp_path / "tok")
    data = rows(6)
    datasets.DatasetDict({"train": datasets.Dataset.from_list(data[:4]),
                          "test": datasets.Dataset.from_list(data[4:])}).save_to_disk(str(tmp_path / "dd"))
    read = r"holds the splits \['train', 'test'\]: only 'train' \(4 rows\) is read"
    with pytest.warns(UserWarning, match=read):
        summary = tokenize_files(str(tmp_path / "dd"), str(tmp_path / "a"), tok, shard_size=5, progress=False)
    assert summary.input_rows == 4
    with pytest.warns(UserWarning, match=r"'test': " + str(tmp_path / "dd" / "test")):
        assert main(["check", str(tmp_path / "dd"), "--tokenizer", str(tmp_path / "tok")]) == 0
    assert "samples:            4" in capsys.readouterr().out
    b = tokenize_files(str(tmp_path / "dd" / "test"), str(tmp_path / "b"), tok, shard_size=5, progress=False)
    assert b.input_rows == b.written_rows == 2
    datasets.DatasetDict({"train": datasets.Dataset.from_list(data)}).save_to_disk(str(tmp_path / "only"))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one split: nothing left unread, nothing to say
        assert tokenize_files(str(tmp_path / "only"), str(tmp_path / "c"), tok, shard_size=5,
                              progress=False).input_rows == 6


def test_packing_option(tmp_path):
    tok = fixture_tokenizer("qwen3")
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows(20)))
    summary = tokenize_files(str(src), str(tmp_path / "out"), tok, shard_size=20, pack=256, progress=False)
    parts = read_parts(tmp_path / "out")
    assert summary.packed_rows == len(parts) < 20
    assert all(len(r["input_ids"]) <= 256 and sum(r["lengths"]) == len(r["input_ids"]) for r in parts)
    assert sum(sum(r["lengths"]) for r in parts) == summary.tokens


def test_packed_parts_say_which_input_rows_they_hold(tmp_path):
    """The README says part files carry the input row's index; --pack wrote none (input_ids,
    labels, position_ids, lengths only), so a packed row could not be traced to its rows. Each
    packed row now lists its samples' input rows in the order of its lengths: every input row is
    in exactly one packed row or in the rejects, and each listed sample is that row's own ids."""
    tok = fixture_tokenizer("qwen3")
    src = tmp_path / "in.jsonl"
    lines = [json.dumps(r) for r in rows(20)]
    lines[6] = json.dumps({"messages": [{"content": "no role"}]})  # a reject
    src.write_text("".join(line + "\n" for line in lines))
    tokenize_files(str(src), str(tmp_path / "plain"), tok, shard_size=8, progress=False)
    tokenize_files(str(src), str(tmp_path / "out"), tok, shard_size=8, pack=256, progress=False)
    plain = {r["index"]: r["input_ids"] for r in read_parts(tmp_path / "plain")}
    parts = read_parts(tmp_path / "out")
    listed = [i for r in parts for i in r["index"]]
    assert sorted(listed + [r["index"] for r in read_rejects(tmp_path / "out")]) == list(range(20))
    assert 6 not in listed and len(listed) == len(set(listed)) == 19
    for r in parts:
        assert len(r["index"]) == len(r["lengths"])
        starts = [0, *np.cumsum(r["lengths"]).tolist()]
        assert [r["input_ids"][a:b] for a, b in zip(starts, starts[1:])] == [plain[i] for i in r["index"]]


def test_command_line(tmp_path, capsys):
    tok = fixture_tokenizer("qwen3")
    tok.save_pretrained(tmp_path / "tok")
    src = tmp_path / "in.jsonl"
    write_input(src, 30)
    code = main(["tokenize", str(src), str(tmp_path / "out"), "--tokenizer", str(tmp_path / "tok"),
                 "--num-proc", "2", "--shard-size", "8", "--max-length", "64", "--quiet", "--json"])
    assert code == 1  # rows were rejected: a pipeline must notice
    captured = capsys.readouterr()
    assert "4 of 30 input rows were rejected" in captured.err and "--allow-rejects" in captured.err
    out = captured.out
    summary = json.loads(out[: out.rindex("}") + 1])
    # rows 5, 11, 17 and 29 are rejected; row 23 (no reply) is written (kept) and counted untrainable
    assert summary["input_rows"] == 30 and summary["rejected_rows"] == 4 and summary["untrainable_rows"] >= 1
    assert summary["truncated_rows"] > 0
    assert all(len(x) <= 64 for x in read_parts(tmp_path / "out")["input_ids"])


@pytest.mark.slow
def test_ray_engine_matches_datasets_engine(tmp_path):
    pytest.importorskip("ray")
    tok = fixture_tokenizer("qwen3")
    src = tmp_path / "in.jsonl"
    write_input(src, 32)
    a = tokenize_files(str(src), str(tmp_path / "a"), tok, engine="datasets", shard_size=10, progress=False)
    b = tokenize_files(str(src), str(tmp_path / "b"), tok, engine="ray", num_proc=2, shard_size=10, progress=False)
    import ray

    ray.shutdown()
    assert read_parts(tmp_path / "a").to_list() == read_parts(tmp_path / "b").to_list()
    assert sorted(read_rejects(tmp_path / "a"), key=lambda r: r["index"]) == \
        sorted(read_rejects(tmp_path / "b"), key=lambda r: r["index"])
    assert a.to_dict() | {"seconds": 0} == b.to_dict() | {"seconds": 0}
    assert os.path.exists(tmp_path / "b" / "summary.json")


# -- data formats: JSON arrays and ShareGPT / Alpaca / mapped rows, with no conversion code ---------

FORMATS_DIR = Path(__file__).resolve().parent / "fixtures" / "formats"


def _reference_ids(tok, rows, **options):
    from respmask._formats import SampleReader

    read = SampleReader(**options)
    out = []
    for row in rows:
        sample = read(row)
        ids = tok.apply_chat_template(sample["messages"], tools=sample.get("tools"), tokenize=True)
        out.append(list(ids if isinstance(ids, list) else ids["input_ids"]))
    return out


def test_json_array_input_is_read_as_rows(tmp_path):
    tok = fixture_tokenizer("qwen3")
    data = rows(9)
    src = tmp_path / "in.json"
    src.write_text(json.dumps(data, indent=2))  # pretty-printed, as LLaMA-Factory ships data
    summary = tokenize_files(str(src), str(tmp_path / "out"), tok, shard_size=4, progress=False)
    parts, rejects = check_accounting(tmp_path / "out", 9, summary)
    assert rejects == [] and summary.shards == 3
    assert parts["input_ids"] == _reference_ids(tok, data)


def test_files_with_a_byte_order_mark_and_crlf_lines(tmp_path, capsys):
    # Windows editors and PowerShell start UTF-8 files with a BOM: it is not part of the first row
    tok = fixture_tokenizer("qwen3")
    tok.save_pretrained(tmp_path / "tok")
    data = rows(3)
    jsonl, array = tmp_path / "bom_crlf.jsonl", tmp_path / "bom_array.json"
    jsonl.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\r\n" for r in data).encode())
    array.write_bytes(b"\xef\xbb\xbf" + json.dumps(data, indent=2).replace("\n", "\r\n").encode())
    for src in (jsonl, array):
        out = tmp_path / f"out_{src.stem}"
        summary = tokenize_files(str(src), str(out), tok, shard_size=2, progress=False)
        parts, rejects = check_accounting(out, 3, summary)
        assert rejects == [] and parts["input_ids"] == _reference_ids(tok, data)
        assert main(["check", str(src), "--tokenizer", str(tmp_path / "tok"), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["samples"] == 3 and report["errors"] == []
    # a chat template file with a BOM: the mark is not template text
    template = tmp_path / "template.jinja"
    template.write_bytes(b"\xef\xbb\xbf" + tok.chat_template.encode())
    assert main(["tokenize", str(jsonl), str(tmp_path / "out_t"), "--tokenizer", str(tmp_path / "tok"),
                 "--chat-template", str(template), "--quiet"]) == 0
    assert read_parts(tmp_path / "out_t")["input_ids"] == _reference_ids(tok, data)


@pytest.mark.parametrize("name", ["sharegpt_tools.json", "alpaca.json", "openai.jsonl", "conversation_object.json"])
def test_command_line_tokenizes_each_format(tmp_path, capsys, name):
    tok = fixture_tokenizer("qwen3")
    tok.save_pretrained(tmp_path / "tok")
    src = FORMATS_DIR / name
    data = [json.loads(x) for x in src.read_text().splitlines() if x.strip()] if src.suffix == ".jsonl" \
        else json.loads(src.read_text())
    data = data if isinstance(data, list) else [data]
    assert main(["tokenize", str(src), str(tmp_path / "out"), "--tokenizer", str(tmp_path / "tok"), "--quiet", "--json"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[: out.rindex("}") + 1])
    assert summary["input_rows"] == summary["written_rows"] == len(data) and summary["rejected_rows"] == 0
    assert read_parts(tmp_path / "out")["input_ids"] == _reference_ids(tok, data)


def test_command_line_mapping_and_saved_dataset(tmp_path, capsys):
    tok = fixture_tokenizer("qwen3")
    tok.save_pretrained(tmp_path / "tok")
    src = FORMATS_DIR / "custom.jsonl"
    data = [json.loads(x) for x in src.read_text().splitlines()]
    flags = ["--field-messages", "dialog", "--role-key", "speaker", "--content-key", "text",
             "--role-map", '{"customer": "user", "agent": "assistant"}', "--quiet"]
    assert main(["tokenize", str(src), str(tmp_path / "a"), "--tokenizer", str(tmp_path / "tok"), *flags]) == 0
    mapping = {"field_messages": "dialog", "role_key": "speaker", "content_key": "text",
               "role_map": {"customer": "user", "agent": "assistant"}}
    assert read_parts(tmp_path / "a")["input_ids"] == _reference_ids(tok, data, mapping=mapping)
    # without the mapping every row is rejected, with the reason (and exit 1: nothing was written)
    assert main(["tokenize", str(src), str(tmp_path / "b"), "--tokenizer", str(tmp_path / "tok"), "--quiet", "--json"]) == 1
    rejects = read_rejects(tmp_path / "b")
    assert [r["index"] for r in rejects] == [0, 1] and "it has ['dialog', 'id']" in rejects[0]["error"]
    capsys.readouterr()
    # Alpaca rows through a saved datasets directory (Arrow rows) and --format
    alpaca = json.loads((FORMATS_DIR / "alpaca.json").read_text())
    datasets.Dataset.from_dict({k: [r.get(k) for r in alpaca] for k in
                                ("instruction", "input", "output", "system", "history")}).save_to_disk(
        str(tmp_path / "saved"))
    assert main(["tokenize", str(tmp_path / "saved"), str(tmp_path / "c"), "--tokenizer", str(tmp_path / "tok"),
                 "--format", "alpaca", "--quiet", "--json"]) == 0
    assert read_parts(tmp_path / "c")["input_ids"] == _reference_ids(tok, alpaca)


@pytest.mark.shared
@pytest.mark.parametrize("name", ["llamafactory/glaive_toolcall_en_demo.json", "llamafactory/identity.json",
                                  "axolotl/conversation.json"])
def test_real_files_tokenize_with_a_real_tokenizer(shared_root, tmp_path, capsys, name):
    src = shared_root.parent / "realdata" / name
    if not src.is_file():
        pytest.skip(f"{src} not available")
    data = json.loads(src.read_text(encoding="utf-8"))
    data = data if isinstance(data, list) else [data]
    code = main(["tokenize", str(src), str(tmp_path / "out"), "--tokenizer", str(shared_root / "qwen3"), "--quiet", "--json"])
    assert code == 0
    out = capsys.readouterr().out
    summary = json.loads(out[: out.rindex("}") + 1])
    assert summary["written_rows"] == summary["input_rows"] == len(data) and summary["rejected_rows"] == 0
    assert summary["untrainable_rows"] == 0
    from support.tokenizers import shared_tokenizer

    parts = read_parts(tmp_path / "out")
    assert parts["input_ids"][:20] == _reference_ids(shared_tokenizer("qwen3"), data[:20])


def test_exit_code_with_allow_rejects(tmp_path, capsys):
    tok = fixture_tokenizer("qwen3")
    tok.save_pretrained(tmp_path / "tok")
    src = tmp_path / "in.jsonl"
    write_input(src, 30)  # rows 5, 11, 17 and 29 are rejected
    args = ["--tokenizer", str(tmp_path / "tok"), "--quiet", "--allow-rejects"]
    assert main(["tokenize", str(src), str(tmp_path / "out"), *args]) == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps({"messages": "not a list"}) + "\n" for _ in range(3)))
    assert main(["tokenize", str(bad), str(tmp_path / "out2"), *args]) == 1  # nothing written
    assert "3 of 3 input rows were rejected" in capsys.readouterr().err


def test_console_reasons_come_with_the_rest_of_their_first_error(tmp_path, capsys):
    """Rejects are grouped by their error's first sentence; the console prints the rest of the
    group's first error under it (where, and what to do), so nothing of it is cut. A row of a file
    lacks columns because the file does: no word of a Trainer dropping them (the collator says that)."""
    tok = fixture_tokenizer("qwen3")
    tok.save_pretrained(tmp_path / "tok")
    src = tmp_path / "in.jsonl"
    write_input(src, 30)
    assert main(["tokenize", str(src), str(tmp_path / "out"), "--tokenizer", str(tmp_path / "tok"),
                 "--drop-untrainable"]) == 1
    out = capsys.readouterr().out
    assert ("  1 x no trained token: it has no trained turn (no assistant message, or every message has "
            "train=false).\n    sample 23: The loss of such a sample is NaN or missing; drop such samples, or give "
            "them an assistant reply\n") in out
    assert "1 x has none of the columns respmask needs (it has ['something'])" in out
    assert "  1 x line 6: not valid JSON" in out and "    sample 5" not in out  # one sentence: nothing more
    rejects = {r["index"]: r["error"] for r in read_rejects(tmp_path / "out")}
    assert "Trainer" not in out and "Trainer" not in rejects[17] and "--field-messages" in rejects[17]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["reject_details"] == {
        "no trained token: it has no trained turn (no assistant message, or every message has train=false).":
            "sample 23: The loss of such a sample is NaN or missing; drop such samples, or give them an assistant reply"}


# -- resuming only what this run would write: input content, chat template, tokenizer ----------

def _chats(prefix, n):
    return "".join(json.dumps({"messages": [{"role": "user", "content": f"{prefix} question {i}"},
                                            {"role": "assistant", "content": f"{prefix} answer {i}"}]}) + "\n"
                   for i in range(n))


def _interrupt_after(out, shard):
    """As if the run had stopped before ``shard`` finished: its files (and every later one's) removed."""
    for p in out.iterdir():
        if p.name.startswith(("part-", "stats-", "rejects-")) and int(p.name.split("-")[1].split(".")[0]) >= shard:
            p.unlink()
    (out / "summary.json").unlink()


def test_rewritten_input_is_not_resumed(tmp_path):
    """The input file rewritten at the same path (other rows): the finished shards hold the old
    rows, so the run is refused, naming the input's content, instead of mixing two datasets."""
    from respmask import RespmaskError

    tok = fixture_tokenizer("qwen3")
    src, out = tmp_path / "in.jsonl", tmp_path / "out"
    src.write_text(_chats("old", 4))
    tokenize_files(str(src), str(out), tok, shard_size=2, progress=False)
    before = read_parts(out).to_list()
    src.write_text(_chats("new", 6))
    with pytest.raises(RespmaskError, match=r"other settings.*the input's content \(.*sha256.*Delete") as err:
        tokenize_files(str(src), str(out), tok, shard_size=2, progress=False)
    assert "chat template" not in str(err.value) and "tokenizer" not in str(err.value)  # only what changed
    assert read_parts(out).to_list() == before  # nothing written
    # the same rows written again (a new modification time) resume: the content is what counts
    src.write_text(_chats("old", 4))
    os.utime(src, ns=(1, 1))
    _interrupt_after(out, 1)
    summary = tokenize_files(str(src), str(out), tok, shard_size=2, progress=False)
    assert summary.resumed_shards == 1 and read_parts(out).to_list() == before


def test_saved_dataset_input_changed_is_not_resumed(tmp_path):
    from respmask import RespmaskError

    tok = fixture_tokenizer("qwen3")
    data = rows(6)
    datasets.Dataset.from_list(data[:4]).save_to_disk(str(tmp_path / "saved"))
    tokenize_files(str(tmp_path / "saved"), str(tmp_path / "out"), tok, shard_size=2, progress=False)
    datasets.Dataset.from_list(data[2:]).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(RespmaskError, match="the input's content"):
        tokenize_files(str(tmp_path / "saved"), str(tmp_path / "out"), tok, shard_size=2, progress=False)


def test_edited_chat_template_in_the_tokenizer_directory_is_not_resumed(tmp_path, capsys):
    """The tokenizer directory's chat template edited (same path, same vocabulary): the finished
    shards were rendered with the old template; the command exits 2 naming the chat template."""
    tok = fixture_tokenizer("qwen3")
    tok.save_pretrained(tmp_path / "tok")
    src, out = tmp_path / "in.jsonl", tmp_path / "out"
    src.write_text(_chats("a", 6))
    args = ["tokenize", str(src), str(out), "--tokenizer", str(tmp_path / "tok"), "--shard-size", "2", "--quiet"]
    assert main(args) == 0
    template = tmp_path / "tok" / "chat_template.jinja"
    edited = template.read_text().replace("<|im_start|>", "<|im_start|> ")
    assert edited != template.read_text()
    template.write_text(edited)
    _interrupt_after(out, 2)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "the chat template used" in err and f"Delete {out}" in err and "input" not in err
    assert not (out / "part-00002.parquet").exists()


def test_another_chat_template_file_is_not_resumed(tmp_path, capsys):
    tok = fixture_tokenizer("qwen3")
    tok.save_pretrained(tmp_path / "tok")
    src, out = tmp_path / "in.jsonl", tmp_path / "out"
    src.write_text(_chats("a", 4))
    a, b = tmp_path / "a.jinja", tmp_path / "b.jinja"
    a.write_text(tok.chat_template)
    b.write_text(tok.chat_template.replace("<|im_start|>", "<|im_start|> "))
    args = ["tokenize", str(src), str(out), "--tokenizer", str(tmp_path / "tok"), "--shard-size", "2", "--quiet"]
    assert main([*args, "--chat-template", str(a)]) == 0
    capsys.readouterr()
    assert main([*args, "--chat-template", str(b)]) == 2
    err = capsys.readouterr().err
    assert "the chat template used" in err and "option chat_template" in err
    assert tok.chat_template not in err  # named by length and hash, not printed whole
    import hashlib

    new = b.read_text()
    assert f"<{len(new)} characters, sha256 {hashlib.sha256(new.encode()).hexdigest()[:12]}>" in err


def test_another_tokenizer_at_the_same_path_is_not_resumed(tmp_path):
    """tokenizer.json replaced by one of the same size (two tokens' ids swapped) at the same path:
    the name and the vocabulary size agree, the ids do not."""
    from transformers import AutoTokenizer

    from respmask import RespmaskError

    tok = fixture_tokenizer("qwen3")
    tok.save_pretrained(tmp_path / "tok")
    src, out = tmp_path / "in.jsonl", tmp_path / "out"
    src.write_text(_chats("a", 4))
    tokenize_files(str(src), str(out), AutoTokenizer.from_pretrained(tmp_path / "tok"), shard_size=2, progress=False)
    spec = json.loads((tmp_path / "tok" / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    a, b = "q", "a"
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (tmp_path / "tok" / "tokenizer.json").write_text(json.dumps(spec))
    other = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert len(other) == len(tok) and other("q").input_ids != tok("q").input_ids
    with pytest.raises(RespmaskError, match="the tokenizer's vocabulary, special tokens or chat template"):
        tokenize_files(str(src), str(out), other, shard_size=2, progress=False)


def test_run_json_of_an_older_respmask_is_refused(tmp_path):
    """A run.json without the input's content, the template and the tokenizer (as respmask wrote
    it before they were recorded) cannot vouch for its shards: refused, saying so."""
    from respmask import RespmaskError

    tok = fixture_tokenizer("qwen3")
    src, out = tmp_path / "in.jsonl", tmp_path / "out"
    src.write_text(_chats("a", 4))
    tokenize_files(str(src), str(out), tok, shard_size=2, progress=False)
    run = json.loads((out / "run.json").read_text())
    old = {k: run[k] for k in ("input", "pack", "drop_untrainable", "shard_size", "options", "tokenizer", "vocab_size")}
    (out / "run.json").write_text(json.dumps({"format": 1, **old}))
    with pytest.raises(RespmaskError, match=r"older respmask.*cannot be checked.*Delete"):
        tokenize_files(str(src), str(out), tok, shard_size=2, progress=False)


# -- packing: what a packed row cannot hold is counted as truncation --------------------------

def _written(out):
    parts = read_parts(out)
    return (sum(len(x) for x in parts["input_ids"]),
            sum(sum(1 for v in lab if v != -100) for lab in parts["labels"]))


def test_pack_counts_the_samples_it_cuts(tmp_path, capsys):
    tok = fixture_tokenizer("qwen3")
    data = rows(10)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in data))
    ref = Pretokenizer(tok)({"messages": [r["messages"] for r in data]})
    L = 100
    long = [(len(i), sum(1 for v in lab[L:] if v != -100)) for i, lab in zip(ref["input_ids"], ref["labels"])
            if len(i) > L]
    assert long  # the test needs samples longer than L
    summary = tokenize_files(str(src), str(tmp_path / "out"), tok, shard_size=10, pack=L, progress=False)
    tokens, trained = _written(tmp_path / "out")
    assert (summary.tokens, summary.trained_tokens) == (tokens, trained)  # what was written, no more
    assert summary.truncated_rows == len(long) and summary.max_length == L
    assert summary.truncated_tokens == sum(n - L for n, _ in long)
    assert summary.truncated_trained_tokens == sum(k for _, k in long) > 0
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert on_disk["truncated_tokens"] == summary.truncated_tokens and on_disk["tokens"] == tokens
    # the command prints it
    tok.save_pretrained(tmp_path / "tok")
    assert main(["tokenize", str(src), str(tmp_path / "cli"), "--tokenizer", str(tmp_path / "tok"),
                 "--pack", str(L)]) == 0
    out = capsys.readouterr().out
    assert f"{tokens} tokens" in out and f"{len(long)} truncated" in out
    assert (f"  truncated to {L} tokens by --pack {L}: {len(long)} sample(s), {summary.truncated_tokens} token(s) cut, "
            f"{summary.truncated_trained_tokens} of them trained") in out


def test_pack_cut_that_leaves_no_trained_token_is_an_untrainable_row(tmp_path, capsys):
    """A sample whose replies all lie past L trains nothing once cut: counted untrainable (exit 1,
    as check does), or moved to the rejects with --drop-untrainable; --truncation left keeps its end."""
    tok = fixture_tokenizer("qwen3")
    tok.save_pretrained(tmp_path / "tok")
    data = rows(10)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in data))
    ref = Pretokenizer(tok)({"messages": [r["messages"] for r in data]})
    L = 40
    emptied = [j for j, lab in enumerate(ref["labels"]) if all(v == -100 for v in lab[:L])]
    assert emptied
    base = ["tokenize", str(src), "--tokenizer", str(tmp_path / "tok"), "--pack", str(L), "--quiet", "--json"]
    assert main([base[0], base[1], str(tmp_path / "a"), *base[2:]]) == 1
    summary = json.loads(capsys.readouterr().out.split("\n}")[0] + "\n}")
    assert summary["untrainable_rows"] == len(emptied)
    assert main([base[0], base[1], str(tmp_path / "b"), *base[2:], "--drop-untrainable", "--allow-rejects"]) == 0
    assert sorted(r["index"] for r in read_rejects(tmp_path / "b")) == emptied
    assert "truncation to max_length=40 (right) removed all its trained tokens" in read_rejects(tmp_path / "b")[0]["error"]
    capsys.readouterr()
    assert main([base[0], base[1], str(tmp_path / "c"), *base[2:], "--truncation", "left"]) == 0
    ends = sorted(tuple(r["input_ids"][-5:]) for r in read_parts(tmp_path / "c")
                  for r in [r] if len(r["lengths"]) == 1 and r["lengths"][0] == L)
    assert ends and all(e in {tuple(i[-5:]) for i in ref["input_ids"]} for e in ends)


def test_split_counts_name_their_units(tmp_path, capsys):
    """With --split, tokenize printed '5 input rows -> 7 written, 3 rejected' and '3 of 5 input rows
    were rejected' (on LLaMA-Factory's reason_tool_use_demo_50: 48 of 50, from 36 input rows): the
    rejected are rows --split made, here the second rows of 3 input rows whose first rows are
    written. The lines say which counts are rows; check --split says its untrainable count is of
    samples (input rows) and how many of the split rows, the number tokenize rejects."""
    tok = fixture_tokenizer("qwen2_5")
    tok_dir = tmp_path / "tok"
    tok.save_pretrained(tok_dir)

    def chat(long):
        return {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q1"},
                             {"role": "assistant", "content": "a1"},
                             {"role": "user", "content": "q2 " * (60 if long else 2)},
                             {"role": "assistant", "content": "a2"}]}

    data = tmp_path / "chats.jsonl"
    inputs = [chat(long) for long in (True, False, True, True, False)]
    data.write_text("".join(json.dumps(r) + "\n" for r in inputs))
    out = tmp_path / "out"
    args = ["--tokenizer", str(tok_dir), "--split", "turns", "--max-length", "40"]
    assert main(["tokenize", str(data), str(out), *args, "--drop-untrainable"]) == 1
    printed = capsys.readouterr()
    written = read_parts(out)["index"]
    rejected = [r["index"] for r in read_rejects(out)]
    made = len(written) + len(rejected)
    assert made == 2 * len(inputs) and rejected and written  # each chat split in two; some rows of each kind
    assert sorted(set(rejected)) == [0, 2, 3] and set(rejected) < set(written)  # their first rows are written
    assert (f"respmask tokenize: {len(inputs)} input rows split into {made} rows (--split turns) -> {len(written)} "
            f"rows written to") in printed.out
    assert f", {len(rejected)} rows rejected (" in printed.out and f"{len(rejected)} rows untrainable" in printed.out
    assert (f"{len(rejected)} of the {made} rows --split turns made of the {len(inputs)} input rows were "
            "rejected") in printed.err
    assert main(["check", str(data), *args]) == 1
    assert (f"untrainable:        {len(set(rejected))} sample(s) ({len(rejected)} of the {made} split rows)  "
            f"[0, 2, 3]") in capsys.readouterr().out


# -- what check reports as a problem, tokenize rejects with check's words ------------------------

CHAT = [{"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": "It is sunny in Paris."}]


def _tokenize_cli(tmp_path, tok, lines, *flags):
    """Run `respmask tokenize` on ``lines`` (JSON objects); its exit code, summary and rejects."""
    tok.save_pretrained(tmp_path / "tok")
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "out"
    code = main(["tokenize", str(src), str(out), "--tokenizer", str(tmp_path / "tok"), "--quiet", *flags])
    summary = json.loads((out / "summary.json").read_text())
    rejects = {r["index"]: r["error"] for r in read_rejects(out)}
    written = sorted(read_parts(out)["index"]) if summary["written_rows"] else []
    assert summary["input_rows"] == len(lines)
    assert summary["input_rows"] + summary["split_rows"] == summary["written_rows"] + summary["rejected_rows"]
    assert summary["rejected_rows"] == len(rejects) and summary["written_rows"] == len(written)
    assert sorted(set(written) | set(rejects)) == list(range(len(lines))) and not set(written) & set(rejects)
    return code, summary, rejects, written


def test_tokenize_rejects_pretokenized_rows_with_labels_on_every_token(tmp_path):
    from respmask._encode import EVERY_TOKEN_TRAINED
    from respmask._shards import _reason

    tok = fixture_tokenizer("qwen2_5")
    pre = Pretokenizer(tok)({"messages": [CHAT] * 4})
    lines = [{"input_ids": [int(x) for x in ids], "labels": [int(x) for x in labels]}
             for ids, labels in zip(pre["input_ids"], pre["labels"])]
    for i in (1, 3):  # labels copied from input_ids (what TRL's own preparation writes)
        lines[i]["labels"] = list(lines[i]["input_ids"])
    assert respmask_check(lines, tok).every_token_trained == [1, 3]  # what check says of them
    code, summary, rejects, written = _tokenize_cli(tmp_path, tok, lines)
    assert code == 1 and written == [0, 2] and set(rejects) == {1, 3}
    assert all(rejects[i] == f"sample {i}: {EVERY_TOKEN_TRAINED}" for i in (1, 3))
    assert summary["reject_reasons"] == {_reason(EVERY_TOKEN_TRAINED)[0]: 2}
    # --allow-rejects: rows were written, exit 0
    code, *_ = _tokenize_cli(tmp_path / "again", tok, lines, "--allow-rejects")
    assert code == 0


def test_tokenize_rejects_content_lists_the_template_prints(tmp_path):
    from respmask._encode import JOIN_TEXT_PARTS

    CONTENT_PRINTED = "content lists the chat template prints as written"  # check's words
    tok = fixture_tokenizer("llama3_1")  # prints a message's content as it is: a list shows its repr
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is the weather?"}]},
                          {"role": "assistant", "content": [{"type": "text", "text": "Sunny."}]}]}
    lines = [{"messages": CHAT}, parts, {"messages": CHAT}, parts]
    assert respmask_check(lines, tok).content_printed == [(1, 0, "user"), (1, 1, "assistant"),
                                                          (3, 0, "user"), (3, 1, "assistant")]
    code, summary, rejects, written = _tokenize_cli(tmp_path, tok, lines)
    assert code == 1 and written == [0, 2] and set(rejects) == {1, 3}
    assert rejects[1].startswith(f"sample 1: {CONTENT_PRINTED}. Messages [0, 1] (roles 'user', 'assistant'): ")
    assert JOIN_TEXT_PARTS in rejects[1]  # what to do, as check says it
    assert summary["reject_reasons"] == {f"{CONTENT_PRINTED}.": 2}


def test_tokenize_rejects_reasoning_trained_against_the_generation_prompt(tmp_path):
    REASONING_AGAINST_PROMPT = "replies with reasoning trained against the generation prompt"  # check's words
    tok = fixture_tokenizer("qwen3")
    reasoned = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "A1", "reasoning_content": "R1"},
                {"role": "user", "content": "q2"}, {"role": "assistant", "content": "A2", "reasoning_content": "R2"}]
    lines = [{"messages": CHAT}, {"messages": reasoned}, {"messages": CHAT}]
    off = {"enable_thinking": False}
    assert respmask_check(lines, tok, template_kwargs=off).reasoning_against_prompt == [(1, 3)]
    code, summary, rejects, written = _tokenize_cli(tmp_path, tok, lines, "--template-kwargs", json.dumps(off))
    assert code == 1 and written == [0, 2] and set(rejects) == {1}
    assert rejects[1].startswith(f"sample 1: {REASONING_AGAINST_PROMPT}. Messages [3]: with template kwargs "
                                 "{'enable_thinking': False}")
    assert "What to do: train rows with reasoning without {'enable_thinking': False}" in rejects[1]
    assert summary["reject_reasons"] == {f"{REASONING_AGAINST_PROMPT}.": 1}
    # without the kwargs the same rows are all written
    code, summary, rejects, written = _tokenize_cli(tmp_path / "on", tok, lines)
    assert code == 0 and written == [0, 1, 2] and not rejects
    # a sample split into rows (each reply after its own history) is rejected once, whichever row holds it
    split = ["--template-kwargs", json.dumps(off), "--split", "auto"]
    code, summary, rejects, written = _tokenize_cli(tmp_path / "split", tok, lines, *split)
    assert code == 1 and written == [0, 2] and set(rejects) == {1} and summary["split_rows"] == 0
    code, summary, rejects, written = _tokenize_cli(tmp_path / "split_on", tok, lines, "--split", "auto")
    assert code == 0 and written == [0, 1, 1, 2] and summary["split_rows"] == 1
