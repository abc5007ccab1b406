"""Reference 2: nonce words planted in every message, on every fixture template.

Every assistant nonce (content, reasoning, tool-call arguments) is trained, no system / user /
tool nonce is, the stop token after each answer is trained, nothing in a prompt or after the
final stop token is trained, and input_ids equal apply_chat_template token for token. When
transformers' own rendering raises, respmask raises a SampleError naming the sample.
"""

from __future__ import annotations

import json

import pytest

from respmask import ChatMasker
from support.reference import assert_undecided, evaluate, run_cases
from support.tokenizers import FIXTURES, fixture_cases, fixture_tokenizer, manifest, template_names

MANIFEST = manifest()
# {template: {tokenizer style: {case: first problem}}}: what the reference still finds wrong
KNOWN_FAILURES = json.loads((FIXTURES / "known_failures.json").read_text(encoding="utf-8"))
# {"template/style": n}: how many things the reference cannot decide on each fixture template
UNDECIDED = json.loads((FIXTURES / "undecided.json").read_text(encoding="utf-8"))["fixtures"]


def test_at_least_15_families():
    families = {info["model"] for info in MANIFEST.values()}
    assert len(template_names()) >= 15 and len(families) >= 15


@pytest.mark.parametrize("style", ["bytelevel", "metaspace"])
@pytest.mark.parametrize("name", template_names())
def test_nonce_reference(name: str, style: str):
    tok = fixture_tokenizer(name, style)
    masker = ChatMasker(tok)
    # the shared shapes, the keyword arguments the template reads, hostile content made of its own
    # markers; command_r and hermes3 (tool_use variants) get the tools list they cannot render without
    all_cases = fixture_cases(name, tok)
    known = KNOWN_FAILURES.get(name, {}).get(style, {})
    if not known:
        run = run_cases(tok, masker, all_cases, MANIFEST[name]["stop_tokens"])
        assert run.rendered >= 3, f"only {run.rendered} conversation shapes render with {name}"
        assert_undecided(run, f"{name}/{style}", UNDECIDED, "undecided.json 'fixtures'")
        return
    # a template with known failures: exactly those fail, and each one fixed must leave the list
    failures = {}
    for case in all_cases:
        out = evaluate(tok, masker, case, MANIFEST[name]["stop_tokens"])
        if out.status not in ("pass", "rejected"):
            failures[case.name] = out.problems or [f"{out.status}: {out.error}"]
    unexpected = {c: p for c, p in failures.items() if c not in known}
    assert not unexpected, unexpected
    fixed = sorted(set(known) - set(failures))
    assert not fixed, f"{fixed} pass now: take them off known_failures.json"
