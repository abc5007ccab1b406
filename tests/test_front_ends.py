"""One core, thin front-ends: the masking options taken the same way everywhere (MaskOptions,
keywords, or a ChatMasker), one shared encode step with one wording for untrainable rows, and no
changes to the tokenizer the user passed in."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import respmask
from respmask import ChatMasker, MaskOptions, Pretokenizer, ResponseOnlyCollator
from respmask._encode import encode_rows, untrainable_reason
from respmask._masker import TOKENIZERS
from support.tokenizers import fixture_tokenizer

CHAT = {"messages": [{"role": "user", "content": "first question"}, {"role": "assistant", "content": "first answer"},
                     {"role": "user", "content": "second question"}, {"role": "assistant", "content": "second answer"}]}
NO_REPLY = {"messages": [{"role": "user", "content": "only a question"}]}


@pytest.fixture()
def tok():
    return fixture_tokenizer("qwen2_5")


def trained(tok, ids, labels) -> str:
    return tok.decode([int(i) for i, l in zip(ids, labels) if l != -100])


# the template reads no 'x': each new masker says so once (asserted below), the rest is the point here
@pytest.mark.filterwarnings("ignore:template kwarg\\(s\\) 'x' are not read")
def test_options_are_one_object_taken_the_same_way_everywhere(tok):
    opts = MaskOptions(train_on="last", stop_tokens=["<|endoftext|>"], template_kwargs={"x": 1})
    with pytest.warns(respmask.RespmaskWarning, match=r"template kwarg\(s\) 'x' are not read"):
        ChatMasker(tok, opts).encode(CHAT)  # the options' kwargs reach the template
    assert opts.stop_tokens == ("<|endoftext|>",) and opts.with_(split="auto").split == "auto"
    by_object = ChatMasker(tok, opts)
    by_name = ChatMasker(tok, train_on="last")
    masker = ChatMasker(tok, options=opts)
    want = trained(tok, *_ids_labels(by_name.encode(CHAT)))
    assert want == "second answer<|im_end|>"
    for front in (ResponseOnlyCollator(tok, options=opts, return_tensors="np"),
                  ResponseOnlyCollator(tok, train_on="last", return_tensors="np"),
                  ResponseOnlyCollator(masker, return_tensors="np")):
        batch = front([CHAT])
        assert trained(tok, batch["input_ids"][0], batch["labels"][0]) == want
    for front in (Pretokenizer(tok, options=opts), Pretokenizer(masker), Pretokenizer(tok, train_on="last")):
        out = front({"messages": [CHAT["messages"]]})
        assert trained(tok, out["input_ids"][0], out["labels"][0]) == want
    assert respmask.check([CHAT], masker).trained_tokens == respmask.check([CHAT], tok, options=opts).trained_tokens
    assert respmask.preview(CHAT, by_object).turns == respmask.preview(CHAT, tok, train_on="last").turns == 1
    # a changed option is a copy; the original is untouched
    assert opts.train_on == "last" and masker.options is opts


def _ids_labels(enc):
    return enc.input_ids, enc.labels


def test_option_errors_name_the_options(tok):
    with pytest.raises(TypeError, match="unknown option.*'train_one'.*train_on"):
        ResponseOnlyCollator(tok, train_one="last")
    with pytest.raises(TypeError, match="unknown option"):
        Pretokenizer(tok, reasoning=False)
    with pytest.raises(ValueError, match="train_on must be one of"):
        MaskOptions(train_on="first")
    with pytest.raises(ValueError, match="split must be one of"):
        respmask.check([CHAT], tok, split="sometimes")
    with pytest.raises(TypeError, match="carries its own options"):
        ResponseOnlyCollator(ChatMasker(tok), train_on="last")
    with pytest.raises(TypeError, match="carries its own options"):
        respmask.check([CHAT], ChatMasker(tok), options=MaskOptions())


def test_options_keep_no_reference_to_what_was_passed(tok):
    kwargs = {"enable_thinking": False}
    stops = ["<|endoftext|>"]
    opts = MaskOptions(template_kwargs=kwargs, stop_tokens=stops)
    kwargs["enable_thinking"] = True
    stops.append("x")
    assert opts.template_kwargs == {"enable_thinking": False} and opts.stop_tokens == ("<|endoftext|>",)
    with pytest.raises(AttributeError):
        opts.train_on = "last"  # type: ignore[misc]


def test_one_wording_for_untrainable_rows_in_every_front_end(tok):
    masker = ChatMasker(tok)
    rows = encode_rows(masker, [CHAT, NO_REPLY])[1]
    assert [r.untrainable for r in rows] == [False, True]
    reason = rows[1].problem
    assert reason == untrainable_reason(rows[1].encoded) and reason.startswith("no trained token: it has no trained turn")
    with pytest.warns(respmask.RespmaskWarning) as seen:
        ResponseOnlyCollator(masker)([CHAT, NO_REPLY])
    assert reason in str(seen[0].message)
    with pytest.raises(respmask.UntrainableSampleError) as raised:
        Pretokenizer(masker, on_untrainable="raise")({"messages": [CHAT["messages"], NO_REPLY["messages"]]})
    assert reason in str(raised.value) and "sample 1" in str(raised.value)
    out = Pretokenizer(masker, on_error="collect")({"messages": [CHAT["messages"], NO_REPLY["messages"]]})
    assert out["untrainable"] == [None, reason] and out["error"] == [None, None]
    # truncation that cuts every trained token says so
    cut = encode_rows(masker, [CHAT], max_length=3)[1][0]
    assert cut.truncated and cut.untrainable and "truncation to max_length=3 (right)" in cut.problem


def test_shared_step_collects_every_bad_sample_once(tok):
    bad = {"messages": [{"role": "assistant"}]}
    with pytest.raises(respmask.SampleError, match="sample 1"):
        encode_rows(ChatMasker(tok), [CHAT, bad, bad])
    rows = encode_rows(ChatMasker(tok), [CHAT, bad, bad], [10, 11, 12], on_error="collect")[1]
    assert [(r.sample, r.index, r.error is None) for r in rows] == [(0, 10, True), (1, 11, False), (2, 12, False)]
    assert "sample 11" in str(rows[1].error)


def test_the_users_tokenizer_is_never_changed(tok):
    """A backend left with truncation and padding set (as calls with truncation=True leave it):
    respmask tokenizes as tokenizer(text, add_special_tokens=False) does, on a copy, and leaves
    the user's backend as it was."""
    backend = tok.backend_tokenizer
    backend.enable_truncation(max_length=4)
    backend.enable_padding(length=64, pad_id=0)
    before = (backend.truncation, backend.padding)
    assert before[0] is not None and before[1] is not None
    clean = fixture_tokenizer("qwen2_5")
    want = ResponseOnlyCollator(clean, return_tensors="np")([CHAT])
    got = ResponseOnlyCollator(tok, return_tensors="np")([CHAT])
    assert np.array_equal(got["input_ids"], want["input_ids"]) and np.array_equal(got["labels"], want["labels"])
    assert len(got["input_ids"][0]) > 4  # not truncated to the user's max_length
    assert (backend.truncation, backend.padding) == before and tok.backend_tokenizer is backend
    assert respmask.preview(CHAT, tok).ids == want["input_ids"][0].tolist()


def test_tokens_added_after_the_masker_was_built_are_seen(tok):
    tok.backend_tokenizer.enable_truncation(max_length=4)  # respmask works on a copy of this backend
    masker = ChatMasker(tok)
    masker.encode(CHAT)
    tok.add_tokens(["<newtok>"])
    chat = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a <newtok> b"}]}
    enc = masker.encode(chat)
    assert tok.convert_tokens_to_ids("<newtok>") in enc.input_ids.tolist()
    assert enc.input_ids.tolist() == tok.apply_chat_template(chat["messages"], tokenize=True, return_dict=False)


def test_the_tokenizer_registry_is_keyed_by_content(tok):
    masker = ChatMasker(tok)
    state = pickle.dumps(masker)
    _, key, data = masker._blob
    assert TOKENIZERS.get(key) is tok  # pickling registered it under the hash of its bytes
    assert pickle.loads(state).tokenizer is tok  # same process: the live tokenizer is reused
    other = copy.deepcopy(tok)
    other.add_tokens(["<changed>"])
    masker2 = ChatMasker(other)
    pickle.dumps(masker2)
    assert masker2._blob[1] != key  # another tokenizer, another key
    tok.add_tokens(["<later>"])  # the registered tokenizer changed after it was pickled
    again = pickle.loads(state)
    assert again.tokenizer is not tok and "<later>" not in again.tokenizer.get_vocab()


def test_nothing_is_remembered_between_front_ends(tok):
    """No module-level registry of collators: building one changes nothing elsewhere."""
    import respmask._preview as preview_module

    names = {n for n in vars(preview_module) if not n.startswith("__")}
    ResponseOnlyCollator(tok, train_on="last")
    assert {n for n in vars(preview_module) if not n.startswith("__")} == names
    assert respmask.preview(CHAT, tok).turns == 2


def test_a_text_tokenizer_never_loads_the_processor_machinery():
    """Masking text needs no processor: building a masker, a numpy collator and a Pretokenizer on
    a text tokenizer and encoding with them must not import transformers' processing module
    (asking whether the tokenizer is a processor once imported it: 50 MiB of image, audio and
    video code, and seconds, in every worker)."""
    import subprocess
    import sys
    from pathlib import Path

    code = """
import sys
sys.path.insert(0, {tests!r})
from support.tokenizers import fixture_tokenizer
import respmask
tok = fixture_tokenizer("chatml")
assert "transformers.processing_utils" not in sys.modules
sample = {{"messages": [{{"role": "user", "content": "hi"}}, {{"role": "assistant", "content": "yo"}}]}}
assert respmask.ChatMasker(tok).encode(sample).n_trained > 0
assert respmask.ResponseOnlyCollator(tok, return_tensors="np")([sample])["labels"].shape[0] == 1
assert respmask.Pretokenizer(tok)({{"messages": [sample["messages"]]}})["input_ids"]
print("transformers.processing_utils" in sys.modules)
""".format(tests=str(Path(__file__).parent))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"
