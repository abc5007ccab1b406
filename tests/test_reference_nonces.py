"""Reference 2: nonce words planted in every message, on every fixture template.

Every assistant nonce (content, reasoning, tool-call arguments) is trained, no system / user /
tool nonce is, the stop token after each answer is trained, nothing in a prompt or after the
final stop token is trained, and input_ids equal apply_chat_template token for token. When
transformers' own rendering raises, respmask raises a SampleError naming the sample.
"""

from __future__ import annotations

import pytest

from respmask import ChatMasker, SampleError
from support.conversations import cases
from support.reference import violations
from support.tokenizers import fixture_tokenizer, manifest, template_names

MANIFEST = manifest()


def _extra_tools(name: str):
    # command_r and hermes3 (tool_use variants) cannot render without a tools list
    return MANIFEST[name].get("template_kwargs", {}).get("tools")


def test_at_least_15_families():
    families = {info["model"] for info in MANIFEST.values()}
    assert len(template_names()) >= 15 and len(families) >= 15


@pytest.mark.parametrize("style", ["bytelevel", "metaspace"])
@pytest.mark.parametrize("name", template_names())
def test_nonce_reference(name: str, style: str):
    tok = fixture_tokenizer(name, style)
    masker = ChatMasker(tok)
    stops = MANIFEST[name]["stop_tokens"]
    checked = 0
    failures = {}
    for case in cases():
        if case.tools is None and _extra_tools(name) is not None:
            case.tools = list(_extra_tools(name))
        try:
            tok.apply_chat_template(case.messages, tools=case.tools, tokenize=False)
        except Exception:
            with pytest.raises(SampleError):
                masker.encode(case.sample())
            continue
        enc = masker.encode(case.sample())
        problems = violations(tok, case, enc.input_ids, enc.labels, stops)
        if problems:
            failures[case.name] = problems
        checked += 1
    assert not failures, failures
    assert checked >= 3, f"only {checked} conversation shapes render with {name}"
