"""split="never" | "auto" | "turns": every turn trained as the model sees and produces it at
inference, on templates that rewrite history (issue 14).

The references are independent of respmask's span finder: transformers' own render of each row's
prefix (the row's ids must equal ``apply_chat_template(prefix, tokenize=True)``), and nonces planted
in every message (each assistant nonce trained in exactly one row, no other nonce trained; every
trained run of tokens reads, up to its end, exactly as in the render of its own prefix).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from respmask import ChatMasker, Pretokenizer, ResponseOnlyCollator, check
from respmask._errors import RespmaskError
from respmask._spans import REASONING_NOT_RENDERED
from support.conversations import TRAINED_KINDS, Nonces, WEATHER_TOOL, _call_id, _tool, _tool_call, _user, cases
from support.tokenizers import fixture_tokenizer, shared_dir, shared_tokenizer, template_names, template_source


def thinking(nn: Nonces, i: int, key: str = "reasoning_content") -> dict:
    return {"role": "assistant", "content": f"Then {nn('AST', i)} done.", key: f"Well {nn('RSN', i)} so."}


def reasoning_chains(queries: int, key: str = "reasoning_content", tools: bool = True) -> tuple[list[dict], Nonces]:
    """``queries`` user queries, each answered by a reasoned tool call, its result and a reasoned
    answer (a tool-call chain), or by a reasoned answer alone."""
    nn = Nonces()
    out: list[dict] = [{"role": "system", "content": f"Be brief {nn('SYS', 0)}."}]
    for _ in range(queries):
        out.append(_user(nn, len(out)))
        if tools:
            i = len(out)
            call = _tool_call(nn, i)
            call[key] = f"Need {nn('RSN', i)} data."
            out.append(call)
            out.append(_tool(nn, i + 1, _call_id(i)))
        out.append(thinking(nn, len(out), key))
    return out, nn


def _ids(tok, messages, tools):
    ids = tok.apply_chat_template(messages, tools=tools, tokenize=True, return_dict=True)["input_ids"]
    return list(ids)


def _runs(labels: np.ndarray) -> list[tuple[int, int]]:
    trained = np.concatenate([[False], labels != -100, [False]])
    edges = np.flatnonzero(np.diff(trained.astype(np.int8)))
    return list(zip(edges[::2], edges[1::2]))


def check_rows(tok, messages, nn, tools, rows, *, all_rendered: bool = True) -> dict[str, int]:
    """Assert every reference on the rows of one conversation; returns how often each trained
    nonce was trained."""
    seen: dict[str, int] = {}
    for row in rows:
        k = len(messages) - 1 if row.through is None else row.through
        prefix = messages[: k + 1]
        ids = row.input_ids.tolist()
        assert ids == _ids(tok, prefix, tools), f"row through message {k} is not apply_chat_template of its prefix"
        for a, b in _runs(row.labels):
            run = tok.decode(ids[a:b])
            words = [w for w in nn.kinds if w in run]
            assert all(nn.kinds[w] in TRAINED_KINDS for w in words), f"untrained nonce trained: {words}"
            owners = {nn.message_of[w] for w in words}
            assert len(owners) <= 1, f"one trained run spans messages {owners}"
            for w in words:
                seen[w] = seen.get(w, 0) + 1
            if owners:
                (m,) = owners
                # the run reads, up to its end, exactly as in the render of its own message's prefix
                own = tok.apply_chat_template(messages[: m + 1], tools=tools, tokenize=False)
                upto = tok.decode(ids[:b])
                assert own.startswith(upto) or upto.startswith(own) and own == upto[: len(own)], (
                    f"message {m} trained in a row (through {k}) where it reads unlike its own prefix")
    if all_rendered:
        wanted = {w for w, kind in nn.kinds.items() if kind in TRAINED_KINDS}
        assert seen == {w: 1 for w in wanted}, f"trained nonces and counts: {seen}"
    return seen


def _rewriting_tokenizers():
    # (tokenizer, reasoning key, rows per query with a tool chain): Qwen3 keeps a chain's
    # reasoning until the next user query (one row per query); GPT-OSS drops the analysis of a
    # chain's tool call once its final answer follows (the call needs a row of its own)
    real = pytest.mark.skipif(shared_dir() is None, reason="real tokenizers not available")
    return [pytest.param(lambda: fixture_tokenizer("qwen3"), "reasoning_content", 1, id="qwen3-fixture"),
            pytest.param(lambda: fixture_tokenizer("qwen3_5"), "reasoning_content", 1, id="qwen3_5-fixture"),
            pytest.param(lambda: fixture_tokenizer("gpt_oss"), "thinking", 2, id="gpt_oss-fixture"),
            pytest.param(lambda: shared_tokenizer("qwen3"), "reasoning_content", 1, id="qwen3-real", marks=real),
            pytest.param(lambda: shared_tokenizer("gptoss", template_source("gpt_oss")), "thinking", 2, id="gpt_oss-real",
                         marks=real)]


@pytest.mark.parametrize("make_tok,key,per_chain", _rewriting_tokenizers())
@pytest.mark.parametrize("queries", [1, 2, 3])
@pytest.mark.parametrize("tools", [True, False])
def test_auto_trains_every_turn_once_as_its_own_prefix(make_tok, key, per_chain, queries, tools):
    tok = make_tok()
    messages, nn = reasoning_chains(queries, key, tools)
    tool_list = [WEATHER_TOOL] if tools else None
    sample = {"messages": messages, "tools": tool_list} if tools else {"messages": messages}
    rows = ChatMasker(tok, split="auto").encode_rows(sample)
    check_rows(tok, messages, nn, tool_list, rows)
    assert len(rows) == queries * (per_chain if tools else 1)
    # "turns": one row per trained turn, each its own prefix
    turns = ChatMasker(tok, split="turns").encode_rows(sample)
    check_rows(tok, messages, nn, tool_list, turns)
    assert len(turns) == sum(m["role"] == "assistant" for m in messages)
    # "never": earlier turns' reasoning is not trained, and that is reported
    never = ChatMasker(tok).encode_rows(sample)
    assert len(never) == 1
    if queries > 1:
        assert any(what == "reasoning" for _, what in never[0].dropped)
        assert not any(what == "reasoning" for r in rows for _, what in r.dropped)


def test_deepseek_r1_reasoning_is_reported_where_no_row_can_train_it():
    # DeepSeek-R1's template prints no reasoning_content in any turn: no split recovers it, and
    # the loss is reported, not silent
    tok = fixture_tokenizer("deepseek_r1")
    messages, nn = reasoning_chains(2, tools=False)
    rows = ChatMasker(tok, split="auto").encode_rows({"messages": messages})
    seen = check_rows(tok, messages, nn, None, rows, all_rendered=False)
    assert {w for w in seen if nn.kinds[w] == "AST"} == {w for w, k in nn.kinds.items() if k == "AST"}
    assert not any(nn.kinds[w] == "RSN" for w in seen)
    # both answers, as lost data (not earlier turns' reasoning: the template renders none, not even the last turn's)
    assert {k for k, what in rows[0].dropped if what == REASONING_NOT_RENDERED} == {2, 4}
    assert not check([{"messages": messages}], tok, split="auto").ok


@pytest.mark.parametrize("name", ["llama3_1", "gemma3", "mistral_v1", "qwen2_5", "mistral_common_v13_tekken"])
def test_auto_on_templates_that_keep_history_is_one_row_like_never(name):
    tok = fixture_tokenizer(name)
    auto, never = ChatMasker(tok, split="auto"), ChatMasker(tok)
    ran = 0
    for case in cases():
        sample = {"messages": case.messages, **({"tools": case.tools} if case.tools else {})}
        try:
            expected = never.encode_rows(sample)
        except RespmaskError:
            continue
        got = auto.encode_rows(sample)
        assert len(got) == 1, case.name
        assert got[0].input_ids.tolist() == expected[0].input_ids.tolist()
        assert got[0].labels.tolist() == expected[0].labels.tolist()
        ran += 1
    assert ran >= 10


def test_auto_costs_one_render_on_templates_that_keep_history(monkeypatch):
    tok = fixture_tokenizer("llama3_1")
    masker = ChatMasker(tok, split="auto")
    sample = {"messages": [_user(Nonces(), 0), {"role": "assistant", "content": "a"}] * 3}
    masker.encode_rows(sample)  # learns the template (probes) once
    calls = []
    real = masker._apply_template
    monkeypatch.setattr(masker, "_apply_template", lambda *a, **k: calls.append(1) or real(*a, **k))
    masker.encode_rows(sample)
    assert len(calls) == 1


def test_mistral_moves_the_system_prompt_so_auto_splits():
    # Mistral's v3 templates print the system prompt (and tools) before the LAST user message:
    # the first reply was produced after a prompt with the system text, which the whole
    # conversation's render no longer shows there
    tok = fixture_tokenizer("mistral_common_v3_tekken")
    nn = Nonces()
    messages = [{"role": "system", "content": f"Be brief {nn('SYS', 0)}."}, _user(nn, 1),
                {"role": "assistant", "content": f"Sure {nn('AST', 2)}."}, _user(nn, 3),
                {"role": "assistant", "content": f"Fine {nn('AST', 4)}."}]
    rows = ChatMasker(tok, split="auto").encode_rows({"messages": messages})
    assert [r.through for r in rows] == [None, 2]
    check_rows(tok, messages, nn, None, rows)


# -- the front-ends -------------------------------------------------------------------------------

def test_collator_returns_more_rows_than_features_and_counts_them():
    tok = fixture_tokenizer("qwen3")
    two, _ = reasoning_chains(2, tools=False)
    one, _ = reasoning_chains(1, tools=False)
    collator = ResponseOnlyCollator(tok, split="auto", return_tensors="np")
    batch = collator([{"messages": two}, {"messages": one}])
    assert batch["input_ids"].shape[0] == 3
    assert collator.stats.samples == 2 and collator.stats.rows == 3 and collator.stats.dropped_reasoning == 0
    never = ResponseOnlyCollator(tok, return_tensors="np")
    never([{"messages": two}])
    assert never.stats.dropped_reasoning == 1 and "split='auto' trains it" in str(never.stats)


def test_pretokenizer_rows_carry_their_conversation_index():
    tok = fixture_tokenizer("qwen3")
    convs = [reasoning_chains(q, tools=False)[0] for q in (2, 1, 3)]
    fn = Pretokenizer(tok, split="auto")
    out = fn({"messages": convs}, indices=[10, 11, 12])
    assert out["index"] == [10, 10, 11, 12, 12, 12]
    assert len(out["input_ids"]) == 6
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"messages": convs})
    mapped = ds.map(fn, batched=True, with_indices=True, remove_columns=ds.column_names, features=fn.features)
    assert mapped["index"] == [0, 0, 1, 2, 2, 2]


def test_check_counts_rows_and_tokenize_accounts_for_every_conversation(tmp_path, capsys):
    from respmask._cli import main
    from respmask._shards import read_parts, read_rejects

    tok = fixture_tokenizer("qwen3")
    convs = [reasoning_chains(q, tools=False)[0] for q in (2, 1, 3)]
    report = check([{"messages": c} for c in convs], tok, split="auto")
    assert report.samples == 3 and report.rows == 6 and report.ok
    assert "rows (split):       6" in str(report)
    tok.save_pretrained(tmp_path / "tok")
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"messages": c}) + "\n" for c in convs) + "{broken\n")
    code = main(["tokenize", str(src), str(tmp_path / "out"), "--tokenizer", str(tmp_path / "tok"), "--split",
                 "auto", "--json", "--allow-rejects"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    assert summary["input_rows"] == 4 and summary["split_rows"] == 3
    assert summary["written_rows"] == 6 and summary["rejected_rows"] == 1
    assert sorted(read_parts(tmp_path / "out")["index"]) == [0, 0, 1, 2, 2, 2]
    assert [r["index"] for r in read_rejects(tmp_path / "out")] == [3]


def test_split_rows_pack_like_any_others():
    from respmask._packing import pack

    tok = fixture_tokenizer("qwen3")
    convs = [reasoning_chains(q, tools=False)[0] for q in (2, 3)]
    out = Pretokenizer(tok, split="auto")({"messages": convs})
    rows = [{"input_ids": i, "labels": lab} for i, lab in zip(out["input_ids"], out["labels"])]
    packed, _ = pack(rows, 4096)
    assert sum(len(p["lengths"]) for p in packed) == 5
    assert sum(int((np.asarray(p["labels"]) != -100).sum()) for p in packed) == \
        sum(int((np.asarray(r["labels"]) != -100).sum()) for r in rows)


# -- every fixture: the rows of "auto" train every turn of "never", each exactly once ----------------

_CASES = cases()
_TEMPLATES = [n for n in template_names()]


@pytest.mark.parametrize("mode", ["auto", "turns"])
def test_a_turn_its_prefix_does_not_render_is_trained_where_it_is(mode):
    """Nemotron Nano v2 drops an empty assistant reply when it is the last message, but renders it (header
    and stop token) inside a conversation: its own prefix row would train nothing, so the turn is trained in
    the whole conversation's row, as with split="never" (found by the random run below)."""
    tok = fixture_tokenizer("nemotron_nano_v2")
    nn = Nonces()
    messages = [_user(nn, 0), {"role": "assistant", "content": ""}, _user(nn, 2),
                {"role": "assistant", "content": f" {nn('AST', 3)} "}, _user(nn, 4)]
    never = ChatMasker(tok).encode_rows({"messages": messages})
    rows = ChatMasker(tok, split=mode).encode_rows({"messages": messages})
    assert sorted(t.message for t in never[0].turns) == [1, 3]
    assert sorted(t.message for r in rows for t in r.turns) == [1, 3]
    whole = [r for r in rows if r.through is None]
    assert len(whole) == 1 and 1 in {t.message for t in whole[0].turns}
    assert whole[0].input_ids.tolist() == _ids(tok, messages, None)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True,
          database=None)
@given(st.sampled_from(_TEMPLATES), st.sampled_from(range(len(_CASES))), st.sampled_from(["auto", "turns"]))
def test_split_rows_train_each_turn_of_never_exactly_once(name, case_index, mode):
    tok = fixture_tokenizer(name)
    case = _CASES[case_index]
    sample = {"messages": case.messages, **({"tools": case.tools} if case.tools else {})}
    try:
        never = ChatMasker(tok).encode_rows(sample)
    except RespmaskError:
        return
    rows = ChatMasker(tok, split=mode).encode_rows(sample)
    wanted = sorted(t.message for t in never[0].turns)
    got = sorted(t.message for r in rows for t in r.turns)
    assert got == wanted
    for r in rows:
        k = len(case.messages) - 1 if r.through is None else r.through
        assert r.input_ids.tolist() == _ids(tok, case.messages[: k + 1], case.tools)


def test_never_reports_how_many_tokens_of_reasoning_it_leaves_out():
    tok = fixture_tokenizer("qwen3")
    messages, _ = reasoning_chains(2, tools=False)  # the first answer's reasoning is dropped
    dropped = messages[2]["reasoning_content"]
    expected = len(tok(dropped, add_special_tokens=False)["input_ids"])
    report = check([{"messages": messages}], tok)
    assert report.ok and report.dropped_reasoning_tokens == expected > 0
    assert f"1 message(s), about {expected} tokens" in str(report)
    collator = ResponseOnlyCollator(tok, return_tensors="np")
    collator([{"messages": messages}])
    assert collator.stats.dropped_tokens == expected
    assert check([{"messages": messages}], tok, split="auto").dropped_tokens == 0
