"""The references again, on the real tokenizers in ../shared/tokenizers (skipped without them).

Each real tokenizer runs with its own chat template (when it ships one) and with every fixture
template of its family.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from respmask import ChatMasker
from support.conversations import cases
from support.reference import assert_undecided, run_cases
from support.tokenizers import FIXTURES, known_failing, manifest, shared_tokenizer, template_source

pytestmark = pytest.mark.shared
MANIFEST = manifest()

# (shared folder, fixture template or None for the tokenizer's own, stop tokens)
PAIRS = [("qwen3", None, ["<|im_end|>"]), ("llama3_1", None, ["<|eot_id|>"]), ("gemma3", None, ["<end_of_turn>"]),
         ("deepseek_v3", None, ["<｜end▁of▁sentence｜>"])]
PAIRS += [
    (info["shared_tokenizer"], name, info["stop_tokens"])
    for name, info in sorted(MANIFEST.items())
    if info.get("shared_tokenizer")
]


# {"folder-template": n}: how many things the reference cannot decide on each real tokenizer and template
UNDECIDED = json.loads((FIXTURES / "undecided.json").read_text(encoding="utf-8"))["shared"]


def _run(tok, stops, key):
    run = run_cases(tok, ChatMasker(tok), cases(), stops)
    assert_undecided(run, key, UNDECIDED, "undecided.json 'shared'")
    return run.rendered


PARAMS = [
    pytest.param(f, t, st, id=f"{f}-{t or 'own'}",
                 marks=[pytest.mark.xfail(reason=known_failing(t), strict=True)] if t and known_failing(t) else [])
    for f, t, st in PAIRS
]


@pytest.mark.parametrize("folder,template,stops", PARAMS)
def test_nonce_reference_on_real_tokenizer(shared_root, folder, template, stops):
    source = template_source(template) if template else None
    tok = shared_tokenizer(folder, source)
    assert _run(tok, stops, f"{folder}-{template or 'own'}") >= 3


ANNOTATED = {p.stem for p in (FIXTURES / "annotated").glob("*.jinja")}


@pytest.mark.parametrize("folder,template,stops", [p for p in PAIRS if p[1] in ANNOTATED],
                         ids=[f"{f}-{t}" for f, t, _ in PAIRS if t in ANNOTATED])
def test_transformers_masks_on_real_tokenizer(shared_root, folder, template, stops):
    tok = shared_tokenizer(folder, template_source(template))
    masker = ChatMasker(tok)
    compared = 0
    for case in cases():
        if case.name == "starts_with_assistant":
            continue
        try:
            out = tok.apply_chat_template(case.messages, tools=case.tools, tokenize=True, return_dict=True,
                                          return_assistant_tokens_mask=True,
                                          chat_template=template_source(template, annotated=True))
        except Exception:
            continue
        enc = masker.encode(case.sample())
        assert list(enc.input_ids) == list(out["input_ids"])
        assert ((enc.labels != -100) == np.asarray(out["assistant_masks"], bool)).all(), case.name
        compared += 1
    assert compared >= 4


def test_sentencepiece_llama2_with_mistral_template(shared_root):
    tok = shared_tokenizer("llama2", template_source("mistral_v1"))
    assert _run(tok, ["</s>"], "llama2-mistral_v1") >= 3


def test_harmony_gpt_oss(shared_root):
    tok = shared_tokenizer("gptoss", template_source("gpt_oss"))
    assert _run(tok, ["<|return|>", "<|end|>", "<|call|>"], "gptoss-gpt_oss-harmony") >= 3
