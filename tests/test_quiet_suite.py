"""A clean test run prints no warning a newcomer would read as a failure (issue 26): what the nonce
reference cannot decide is counted per template and asserted against a ledger, not warned about."""

from __future__ import annotations

import json
import warnings

import pytest

from respmask import ChatMasker
from support.reference import Run, assert_undecided, run_cases
from support.tokenizers import FIXTURES, fixture_cases, fixture_tokenizer, manifest

LEDGER = json.loads((FIXTURES / "undecided.json").read_text(encoding="utf-8"))


def test_undecided_things_are_counted_and_asserted_not_warned():
    tok = fixture_tokenizer("qwen3")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        run = run_cases(tok, ChatMasker(tok), fixture_cases("qwen3", tok), manifest()["qwen3"]["stop_tokens"])
    assert not [w for w in seen if "nonce reference" in str(w.message)]
    assert run.rendered >= 3 and run.n_undecided == LEDGER["fixtures"]["qwen3/bytelevel"] > 0
    assert_undecided(run, "qwen3/bytelevel", LEDGER["fixtures"], "undecided.json")  # as recorded: passes
    with pytest.raises(AssertionError, match="decides less than before"):  # coverage lost
        assert_undecided(run, "qwen3/bytelevel", {"qwen3/bytelevel": run.n_undecided - 1}, "ledger")
    with pytest.raises(AssertionError, match=f"lower 'qwen3/bytelevel' in ledger to {run.n_undecided}"):
        assert_undecided(run, "qwen3/bytelevel", {"qwen3/bytelevel": run.n_undecided + 1}, "ledger")
    with pytest.raises(AssertionError, match="decides less"):  # a key left out of the ledger means 0
        assert_undecided(run, "qwen3/bytelevel", {}, "ledger")
    assert_undecided(Run(5), "anything", {}, "ledger")


def test_ledger_keys_name_real_templates():
    names = set(manifest())
    for key in LEDGER["fixtures"]:
        name, style = key.split("/")
        assert name in names and style in ("bytelevel", "metaspace"), key
    assert all(isinstance(n, int) and n > 0 for n in [*LEDGER["fixtures"].values(), *LEDGER["shared"].values()])
