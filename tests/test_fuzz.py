"""Fuzzing the collator's input handling (hypothesis): whatever a batch holds, the collator returns
a well-formed batch or raises a respmask error naming the sample, never a stray TypeError /
KeyError / AttributeError from deep inside. Bounded by RESPMASK_FUZZ_EXAMPLES (default 300).
Crashes found here are kept as regression cases in test_fuzz_regressions below."""

from __future__ import annotations

import os
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from respmask import RespmaskError, ResponseOnlyCollator
from support.tokenizers import fixture_tokenizer

EXAMPLES = int(os.environ.get("RESPMASK_FUZZ_EXAMPLES", "300"))
RANDOM = bool(os.environ.get("RESPMASK_FUZZ_RANDOM"))  # explore new inputs instead of the fixed CI set

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=True),
                    st.text(max_size=20), st.binary(max_size=8))
json_like = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                         max_leaves=12)
roles = st.one_of(st.sampled_from(["system", "user", "assistant", "tool", "model", "ipython", "Assistant"]), scalars)
message = st.dictionaries(
    st.sampled_from(["role", "content", "reasoning_content", "tool_calls", "name", "train", "tool_call_id", "x"]),
    st.one_of(roles, json_like), max_size=5,
)
plausible_message = st.fixed_dictionaries({"role": roles, "content": st.one_of(st.text(max_size=30), json_like)},
                                          optional={"train": st.one_of(st.booleans(), scalars),
                                                    "tool_calls": json_like, "reasoning_content": json_like})
feature = st.one_of(
    st.fixed_dictionaries({"messages": st.lists(st.one_of(plausible_message, message), max_size=5)},
                          optional={"tools": json_like, "documents": json_like, "chat_template_kwargs": json_like}),
    st.fixed_dictionaries({"prompt": st.one_of(st.text(max_size=20), st.lists(plausible_message, max_size=3), json_like),
                           "completion": st.one_of(st.text(max_size=20), st.lists(plausible_message, max_size=3),
                                                   json_like)}),
    st.fixed_dictionaries({"input_ids": st.one_of(st.lists(st.integers(0, 1000), max_size=8), json_like)},
                          optional={"labels": st.one_of(st.lists(st.integers(-100, 1000), max_size=8), json_like),
                                    "assistant_masks": st.one_of(st.lists(st.integers(0, 1), max_size=8), json_like),
                                    "attention_mask": json_like}),
    st.dictionaries(st.text(max_size=8), json_like, max_size=3),
    json_like,
)


def _run(collator, features):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            batch = collator(features)
        except RespmaskError as exc:
            assert str(exc)  # a message, naming the sample when there is one
            return
    shapes = {batch[k].shape for k in ("input_ids", "attention_mask", "labels")}
    assert len(shapes) == 1 and all(isinstance(batch[k], torch.Tensor) for k in batch)


@pytest.mark.parametrize("name", ["qwen3", "gemma3", "llama3_1", "mistral_v1"])
def test_collator_input_handling_fuzz(name):
    collator = ResponseOnlyCollator(fixture_tokenizer(name))

    @settings(max_examples=EXAMPLES // 4, deadline=None, derandomize=not RANDOM, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(feature, min_size=1, max_size=3))
    def run(features):
        _run(collator, features)

    run()


REGRESSIONS: list[list] = [
    [{"input_ids": [None, []]}],  # found by the fuzzer: numpy raised ValueError (ragged ids)
    [{"input_ids": None}],  # found by the fuzzer: numpy raised TypeError
    [{"input_ids": [1, 2], "labels": [-100, 10**9]}],  # labels outside the vocabulary
    [{"input_ids": [-1, 2], "labels": [-100, 2]}],  # ids outside the vocabulary
    [{"prompt": "", "completion": ""}, {"messages": [{"role": []}]}],  # found: unhashable role -> TypeError
]


@pytest.mark.parametrize("features", REGRESSIONS or [pytest.param(None, marks=pytest.mark.skip("none yet"))])
def test_fuzz_regressions(features):
    _run(ResponseOnlyCollator(fixture_tokenizer("qwen3")), features)
