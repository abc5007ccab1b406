"""Reference 2: nonce words planted in every message, on every fixture template.

Every assistant nonce (content, reasoning, tool-call arguments) is trained, no system / user /
tool nonce is, the stop token after each answer is trained, nothing in a prompt or after the
final stop token is trained, and input_ids equal apply_chat_template token for token. When
transformers' own rendering raises, respmask raises a SampleError naming the sample.
"""

from __future__ import annotations

import pytest

from respmask import ChatMasker
from support.conversations import cases
from support.reference import run_cases
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
    all_cases = cases()
    for case in all_cases:
        if case.tools is None and _extra_tools(name) is not None:
            case.tools = list(_extra_tools(name))
    checked = run_cases(tok, masker, all_cases, MANIFEST[name]["stop_tokens"])
    assert checked >= 3, f"only {checked} conversation shapes render with {name}"
