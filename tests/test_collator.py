"""ResponseOnlyCollator: padding, truncation, input formats, untrainable samples, pickling."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch

import respmask

from respmask import (
    ChatMasker,
    MissingColumnsError,
    ResponseOnlyCollator,
    SampleError,
    UntrainableSampleError,
)
from support.tokenizers import fixture_tokenizer

QA = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": "It is sunny in Paris."},
    ]
}
LONG = {
    "messages": [
        {"role": "user", "content": "Tell me a long answer please " * 3},
        {"role": "assistant", "content": "This answer is long because you asked for a long answer " * 4},
    ]
}


@pytest.fixture(scope="module")
def tok():
    return fixture_tokenizer("qwen2_5")


def _expected(tok, sample):
    enc = ChatMasker(tok).encode(sample)
    return enc.input_ids, enc.labels


def test_right_padding_and_labels(tok):
    batch = ResponseOnlyCollator(tok, padding_side="right")([QA, LONG])
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert all(isinstance(v, torch.Tensor) and v.dtype == torch.int64 for v in batch.values())
    for row, sample in enumerate([QA, LONG]):
        ids, labels = _expected(tok, sample)
        n = len(ids)
        assert batch["input_ids"][row, :n].tolist() == ids.tolist()
        assert batch["labels"][row, :n].tolist() == labels.tolist()
        assert batch["attention_mask"][row, :n].all() and not batch["attention_mask"][row, n:].any()
        assert (batch["labels"][row, n:] == -100).all()
        assert (batch["input_ids"][row, n:] == tok.pad_token_id).all() if tok.pad_token_id is not None else True


def test_left_padding(tok):
    batch = ResponseOnlyCollator(tok, padding_side="left")([QA, LONG])
    ids, labels = _expected(tok, QA)
    n = len(ids)
    assert batch["input_ids"][0, -n:].tolist() == ids.tolist()
    assert batch["labels"][0, -n:].tolist() == labels.tolist()
    assert not batch["attention_mask"][0, :-n].any() and batch["attention_mask"][0, -n:].all()


def test_pad_to_multiple_of(tok):
    batch = ResponseOnlyCollator(tok, pad_to_multiple_of=64)([QA])
    assert batch["input_ids"].shape[1] % 64 == 0


def test_padding_side_defaults_to_tokenizer(tok):
    tok2 = fixture_tokenizer("chatml")
    tok2.padding_side = "left"
    try:
        assert ResponseOnlyCollator(tok2).padding_side == "left"
    finally:
        tok2.padding_side = "right"


@pytest.mark.parametrize("side", ["right", "left"])
def test_truncation_keeps_mask_aligned(tok, side):
    ids, labels = _expected(tok, LONG)
    m = len(ids) - 10
    batch = ResponseOnlyCollator(tok, max_length=m, truncation=side, on_untrainable="raise")([LONG])
    want_ids = ids[:m] if side == "right" else ids[-m:]
    want_labels = labels[:m] if side == "right" else labels[-m:]
    assert batch["input_ids"][0].tolist() == want_ids.tolist()
    assert batch["labels"][0].tolist() == want_labels.tolist()


def test_pad_token_falls_back_to_eos():
    tok = fixture_tokenizer("llama3")  # no pad token
    assert tok.pad_token_id is None
    c = ResponseOnlyCollator(tok)
    assert c.pad_token_id == tok.eos_token_id
    batch = c([QA, LONG])
    n = len(_expected(tok, QA)[0])
    assert (batch["input_ids"][0, n:] == tok.eos_token_id).all()
    assert (batch["labels"][0, n:] == -100).all()


def test_untrainable_sample_warns_names_it_and_is_counted(tok):
    no_reply = {"messages": [{"role": "user", "content": "hello"}]}
    c = ResponseOnlyCollator(tok)
    with pytest.warns(respmask.RespmaskWarning,
                      match=r"(?s)\[batch sample 1\]: no trained token.*So far: 1 of 2 samples had no trained token"):
        batch = c([QA, no_reply])
    assert (batch["labels"][1] == -100).all()
    assert c.stats.untrainable == 1 and c.stats.samples == 2


def test_untrainable_raise_and_keep(tok):
    no_reply = {"messages": [{"role": "user", "content": "hello"}]}
    with pytest.raises(UntrainableSampleError, match="sample 0"):
        ResponseOnlyCollator(tok, on_untrainable="raise")([no_reply])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ResponseOnlyCollator(tok, on_untrainable="keep")([no_reply])


def test_truncated_away_is_explained(tok):
    ids, labels = _expected(tok, QA)
    first_trained = int(np.nonzero(labels != -100)[0][0])
    with pytest.raises(UntrainableSampleError, match="truncation to max_length"):
        ResponseOnlyCollator(tok, max_length=first_trained, on_untrainable="raise")([QA])


def test_missing_columns_error_says_what_to_do(tok):
    with pytest.raises(MissingColumnsError) as info:
        ResponseOnlyCollator(tok)([{"input_ids_x": [1, 2]}, {}])
    msg = str(info.value)
    assert "sample 0" in msg and "remove_unused_columns=False" in msg and "Pretokenizer" in msg


def test_prompt_completion_conversational(tok):
    prompt = QA["messages"][:2]
    completion = QA["messages"][2:]
    batch = ResponseOnlyCollator(tok)([{"prompt": prompt, "completion": completion}])
    ids, labels = _expected(tok, QA)
    assert batch["input_ids"][0].tolist() == ids.tolist()
    assert batch["labels"][0].tolist() == labels.tolist()


def test_prompt_completion_conversational_trains_only_the_completion(tok):
    msgs = [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "first reply"},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "second reply"},
    ]
    batch = ResponseOnlyCollator(tok)([{"prompt": msgs[:3], "completion": msgs[3:]}])
    text = tok.decode([i for i, l in zip(batch["input_ids"][0].tolist(), batch["labels"][0].tolist()) if l != -100])
    assert "second reply" in text and "first reply" not in text


def test_prompt_completion_text(tok):
    batch = ResponseOnlyCollator(tok)([{"prompt": "Q: two plus two? A:", "completion": " four"}])
    ids = batch["input_ids"][0].tolist()
    labels = batch["labels"][0].tolist()
    trained = tok.decode([i for i, l in zip(ids, labels) if l != -100])
    assert trained == " four" + tok.eos_token
    assert tok.decode(ids) == "Q: two plus two? A: four" + tok.eos_token


def test_pretokenized_inputs(tok):
    c = ResponseOnlyCollator(tok)
    batch = c([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [1, 2], "assistant_masks": [0, 1]}])
    assert batch["labels"].tolist() == [[-100, 6, 7], [-100, 2, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    with pytest.raises(SampleError, match="no 'labels' or 'assistant_masks'"):
        c([{"input_ids": [1, 2]}])


def test_bad_sample_error_names_the_index(tok):
    bad = {"messages": [{"role": "user", "content": "hi"}, {"content": "no role"}]}
    with pytest.raises(SampleError, match=r"sample 1: 'messages'\[1\] has no 'role'"):
        ResponseOnlyCollator(tok)([QA, bad])


def test_numpy_output(tok):
    batch = ResponseOnlyCollator(tok, return_tensors="np")([QA])
    assert isinstance(batch["input_ids"], np.ndarray)


def test_pickle_roundtrip(tok):
    c = ResponseOnlyCollator(tok, max_length=512)
    c([QA])  # fill the caches
    c2 = pickle.loads(pickle.dumps(c))
    a, b = c([QA, LONG]), c2([QA, LONG])
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_pickled_collator_does_not_measure_the_vocabulary_again(tok, monkeypatch):
    # a DataLoader or datasets.map worker gets the byte-length table with the masker (measuring
    # a 128k-262k vocabulary takes 0.1-0.3 s per worker); tokens added later still rebuild it
    import copy

    from respmask._byte_lengths import ByteLengths

    tok = copy.deepcopy(tok)  # tokens are added below: not to the module's tokenizer
    c = ResponseOnlyCollator(tok)
    want = c([QA, LONG])
    c2 = pickle.loads(pickle.dumps(c))
    measured = []
    real = ByteLengths.of
    monkeypatch.setattr(ByteLengths, "of", classmethod(lambda cls, backend: measured.append(1) or real(backend)))
    got = c2([QA, LONG])
    assert all(torch.equal(got[k], want[k]) for k in want) and measured == []
    c2.tokenizer.add_tokens(["<zq_new_token>"])
    sample = {"messages": [{"role": "user", "content": "say <zq_new_token>"},
                           {"role": "assistant", "content": "<zq_new_token> said"}]}
    row = c2.masker.encode(sample)
    assert measured == [1]  # the new id is past the carried table: measured again
    assert row.input_ids.tolist() == c2.tokenizer.apply_chat_template(sample["messages"], tokenize=True,
                                                                     return_dict=True)["input_ids"]


class _List(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_dataloader_with_worker_processes(tok):
    c = ResponseOnlyCollator(tok)
    data = [QA, LONG] * 4
    loader = torch.utils.data.DataLoader(_List(data), batch_size=2, collate_fn=c, num_workers=2)
    batches = list(loader)
    assert len(batches) == 4
    ref = c(data[:2])
    assert torch.equal(batches[0]["labels"], ref["labels"])


def test_forked_workers_do_not_deadlock_with_tokenizers_parallelism(tmp_path):
    """TOKENIZERS_PARALLELISM=true and fork after the parent used the tokenizer's thread pool:
    the Rust pool deadlocks in the child unless the collator avoids it there."""
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})
        from support.tokenizers import fixture_tokenizer
        from respmask import ResponseOnlyCollator
        tok = fixture_tokenizer("qwen2_5")
        c = ResponseOnlyCollator(tok)
        data = [{{"messages": [{{"role": "user", "content": f"q {{i}}"}}, {{"role": "assistant", "content": "a " * i}}]}}
                for i in range(1, 17)]
        c(data)  # the parent uses encode_batch (and its thread pool) before forking
        class DS(torch.utils.data.Dataset):
            def __len__(self): return len(data)
            def __getitem__(self, i): return data[i]
        loader = torch.utils.data.DataLoader(DS(), batch_size=4, collate_fn=c, num_workers=2,
                                             multiprocessing_context="fork")
        print(sum(int((b["labels"] != -100).sum()) for b in loader))
    """))
    env = dict(__import__("os").environ, TOKENIZERS_PARALLELISM="true")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip().splitlines()[-1]) > 0


def test_dataloader_with_spawned_workers(tok):
    """spawn pickles the collator (and its tokenizer) into fresh worker processes."""
    c = ResponseOnlyCollator(tok)
    data = [QA, LONG] * 4
    loader = torch.utils.data.DataLoader(_List(data), batch_size=2, collate_fn=c, num_workers=2,
                                         multiprocessing_context="spawn")
    batches = list(loader)
    assert len(batches) == 4
    assert all(torch.equal(b["labels"], c(data[:2])["labels"]) for b in batches)


def test_pickling_reuses_the_serialized_tokenizer_and_is_deterministic():
    import pickle as pk

    from respmask import ChatMasker, Pretokenizer

    tok = fixture_tokenizer("qwen3")
    m = ChatMasker(tok)
    first = pk.dumps(m)
    assert m._blob is not None
    blob = m._blob[1]
    assert pk.dumps(m) == first and m._blob[1] is blob  # serialized once, reused
    back = pk.loads(first)
    assert back.tokenizer is tok  # same process: the live tokenizer is picked up, not rebuilt
    other = fixture_tokenizer("qwen3", "metaspace")  # same template and special tokens, other vocabulary
    assert pk.loads(pk.dumps(ChatMasker(other))).tokenizer is other
    # equal transforms hash equally (datasets' cache keeps working across runs)
    pytest.importorskip("datasets")
    from datasets.fingerprint import Hasher

    assert Hasher.hash(Pretokenizer(tok)) == Hasher.hash(Pretokenizer(tok))
    assert Hasher.hash(Pretokenizer(tok)) != Hasher.hash(Pretokenizer(other))


def test_rows_with_labels_on_every_token_are_flagged():
    tok = fixture_tokenizer("qwen2_5")
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    ids = list(tok.apply_chat_template(chat, tokenize=True, return_dict=True)["input_ids"])
    row = {"input_ids": ids, "labels": ids}  # what a dataset prepared by someone else looks like
    collator = ResponseOnlyCollator(tok)
    with pytest.warns(UserWarning, match="labels on every token"):
        batch = collator([row])
    assert collator.stats.every_token_trained == 1
    assert batch["labels"].tolist() == [ids]  # kept as given: respmask cannot tell the prompt apart
    with pytest.raises(UntrainableSampleError, match="skip_prepare_dataset"):
        ResponseOnlyCollator(tok, on_untrainable="raise")([row])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # respmask's own rows (prompt at -100) are not flagged
        own = ResponseOnlyCollator(tok)([{"messages": chat}])
    assert own["input_ids"][0].tolist() == ids and own["labels"][0].tolist() != ids
