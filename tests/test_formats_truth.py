"""Rows whose data the reading would lose or misread without a word (found trying respmask as a new
user): a message whose text is under another key, a KTO flag written as a string, a ``system``
column beside OpenAI ``messages`` or a prompt/completion row. Each is read right or refused with
what to do; nothing renders as an empty message silently."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

import respmask  # noqa: E402
from respmask import ChatMasker, ResponseOnlyCollator, SampleError  # noqa: E402
from support.tokenizers import fixture_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tok():
    return fixture_tokenizer("qwen2_5")


def _trained(tok, batch) -> str:
    return tok.decode(batch["labels"][0][batch["labels"][0] != -100])


def test_a_message_without_content_names_the_key_that_holds_its_text(tok):
    row = {"messages": [{"role": "user", "text": "What is the capital of France?"},
                        {"role": "assistant", "text": "Paris, zqnonce."}]}
    report = respmask.check([row], tok)
    (_, error), = report.errors
    assert "'messages'[0] has no 'content' (its keys: ['role', 'text'])" in error
    assert "content_key='text'" in error and "--content-key text" in error
    with pytest.raises(SampleError, match="has no 'content'"):
        ResponseOnlyCollator(tok)([row])
    # the fix it names works
    mapping = respmask.MessageMapping(field_messages="messages", role_key="role", content_key="text")
    assert _trained(tok, ResponseOnlyCollator(tok, mapping=mapping)([row])) == "Paris, zqnonce.<|im_end|>"
    # a mapping whose content_key the messages do not have names that key
    typo = respmask.MessageMapping(field_messages="messages", role_key="role", content_key="txt")
    (_, error), = respmask.check([row], tok, mapping=typo).errors
    assert "has no 'txt' (the mapping's content_key" in error
    # messages that hold tool calls or reasoning instead of content are not this error
    calls = {"messages": [{"role": "user", "content": "Weather?"},
                          {"role": "assistant", "tool_calls": [{"type": "function", "function": {
                              "name": "weather", "arguments": {"city": "Paris"}}}]},
                          {"role": "tool", "content": "sunny"}, {"role": "assistant", "content": "Sunny."}]}
    assert not respmask.check([calls], tok).errors


def test_a_kto_flag_must_be_a_boolean(tok):
    conv = [{"from": "human", "value": "How do I pick a lock?"}, {"from": "gpt", "value": "UNDESIRABLE zqnonce"}]
    for flag in ("false", "true", "0", "yes"):
        with pytest.raises(SampleError, match=r"'kto_tag' must be true or false .* got '"):
            ResponseOnlyCollator(tok, data_format="preference")([{"conversations": conv, "kto_tag": flag}])
    with pytest.raises(SampleError, match="marked undesirable"):
        ResponseOnlyCollator(tok, data_format="preference")([{"conversations": conv, "kto_tag": False}])
    batch = ResponseOnlyCollator(tok, data_format="preference")([{"conversations": conv, "kto_tag": True}])
    assert _trained(tok, batch) == "UNDESIRABLE zqnonce<|im_end|>"


def test_a_system_column_beside_messages_is_the_system_prompt(tok):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Arr, zqnonce."}]
    row = {"messages": messages, "system": "You are a PIRATE."}
    masker = ChatMasker(tok)
    reference = tok.apply_chat_template([{"role": "system", "content": "You are a PIRATE."}, *messages], tokenize=False)
    assert masker.render(row).text == reference
    assert row == {"messages": messages, "system": "You are a PIRATE."}  # the row is not changed
    same = {"messages": [{"role": "system", "content": "You are a PIRATE."}, *messages], "system": "You are a PIRATE."}
    assert masker.render(same).text == reference  # said twice, alike: once
    with pytest.raises(SampleError, match="'system' column and also starts its conversation with another system"):
        masker.render({**same, "system": "You are a NINJA."})
    conversational = {"prompt": [messages[0]], "completion": [messages[1]], "system": "You are a PIRATE."}
    assert masker.render(conversational).text == reference
    with pytest.raises(SampleError, match="plain-text prompt/completion row cannot render"):
        masker.render({"prompt": "Hi", "completion": "Arr", "system": "You are a PIRATE."})


def test_text_only_refuses_placeholders_that_do_not_pair_with_the_images(tok):
    messages = [{"role": "user", "content": "<image><image>Who are they?"},
                {"role": "assistant", "content": "They are <image> players, zqnonce."}]
    with pytest.raises(SampleError, match=r"has 3 '<image>' placeholder\(s\) in its messages for 1 item\(s\)"):
        ResponseOnlyCollator(tok, text_only=True)([{"messages": messages, "images": ["a.jpg"]}])
    paired = [{"role": "user", "content": "<image>Who?"}, {"role": "assistant", "content": "Kane, zqnonce."}]
    batch = ResponseOnlyCollator(tok, text_only=True)([{"messages": paired, "images": ["a.jpg"]}])
    assert "<image>" not in tok.decode(batch["input_ids"][0]) and _trained(tok, batch) == "Kane, zqnonce.<|im_end|>"


def test_a_misspelt_role_map_target_is_refused_with_the_role_it_resembles():
    with pytest.raises(ValueError, match=r"maps 'agent' to 'asistant', which is not a role: did you mean 'assistant'"):
        respmask.MessageMapping(role_map={"customer": "user", "agent": "asistant"})
    with pytest.raises(ValueError, match="did you mean 'user'"):
        respmask.MessageMapping(role_map={"customer": "usr"})
    # a template's own role (Llama 3.1's 'ipython') is a target as written
    assert respmask.MessageMapping(role_map={"observation": "ipython"}).role_map == {"observation": "ipython"}


def test_llamafactory_loss_weight_is_the_messages_train_flag(tok):
    """LLaMA-Factory v1 writes a ``loss_weight`` on every message (0.0 on prompts, 1.0 on replies);
    it was passed to the template and ignored: a reply with 0.0 was trained."""
    row = {"messages": [
        {"role": "user", "content": [{"type": "text", "value": "hi"}], "loss_weight": 0.0},
        {"role": "assistant", "content": [{"type": "text", "value": "FIRST zqnonce"}], "loss_weight": 0.0},
        {"role": "user", "content": [{"type": "text", "value": "again"}], "loss_weight": 1.0},
        {"role": "assistant", "content": [{"type": "text", "value": "SECOND zqnonce"}], "loss_weight": 1.0}]}
    batch = ResponseOnlyCollator(tok)([row])
    trained = _trained(tok, batch)
    assert "FIRST" not in trained and "SECOND zqnonce<|im_end|>" in trained and "again" in trained
    assert "loss_weight" not in tok.decode(batch["input_ids"][0])
    # a reply's 1.0 is the default, not a flag over train_on: train_on="last" leaves earlier replies out
    two = {"messages": [{**m, "loss_weight": 1.0} if m["role"] == "assistant" else m for m in row["messages"]]}
    last = _trained(tok, ResponseOnlyCollator(tok, train_on="last")([two]))
    assert "FIRST" not in last and "SECOND zqnonce<|im_end|>" in last and "again" in last
    half = {"messages": [{**m, "loss_weight": 0.5} if k == 3 else m for k, m in enumerate(row["messages"])]}
    with pytest.raises(SampleError, match=r"\['loss_weight'\] is 0.5: respmask trains a message or not"):
        ResponseOnlyCollator(tok)([half])
    both = {"messages": [{**m, "train": True} if k == 1 else m for k, m in enumerate(row["messages"])]}
    with pytest.raises(SampleError, match="'train': True and 'loss_weight': 0.0, which disagree"):
        ResponseOnlyCollator(tok)([both])


def test_the_published_v1_demo_trains_its_replies_alone(tok):
    from support.tokenizers import shared_dir

    root = shared_dir()
    path = root.parent / "realdata" / "llamafactory" / "v1_sft_demo.jsonl" if root is not None else None
    if path is None or not path.is_file():
        pytest.skip("../shared/realdata/llamafactory not available")
    import json

    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x][:64]
    for row in rows:  # its weights are the default masks: 0.0 on user turns, 1.0 on replies
        assert all(m["loss_weight"] == (1.0 if m["role"] == "assistant" else 0.0) for m in row["messages"])
    batch = ResponseOnlyCollator(tok)(rows)
    for r, row in enumerate(rows):
        labels = batch["labels"][r]
        replies = ["".join(p["value"] for p in m["content"]) for m in row["messages"] if m["role"] == "assistant"]
        assert tok.decode(labels[labels != -100]) == "".join(x + "<|im_end|>" for x in replies)


def test_pretokenizer_keep_columns_must_exist(tok):
    rows = {"messages": [[{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]], "idx": [7]}
    assert respmask.Pretokenizer(tok, keep_columns=["idx"])(rows)["idx"] == [7]
    with pytest.raises(KeyError, match="keep_columns names .idx_typo., which no sample of this batch has"):
        respmask.Pretokenizer(tok, keep_columns=["idx_typo"])(rows)


def test_reasoning_of_an_untrained_turn_is_context_not_lost_data():
    """Llama 3.1 renders no reasoning_content at all: on a trained turn that is lost data, but an
    earlier reply that train_on='last' leaves out is context, read without it at inference too."""
    tok = fixture_tokenizer("llama3_1")
    row = {"messages": [{"role": "user", "content": "Q1"},
                        {"role": "assistant", "content": "A1", "reasoning_content": "thinking one"},
                        {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}]}
    assert respmask.check([row], tok, train_on="last").ok
    report = respmask.check([row], tok)  # the first reply trained: its reasoning is lost
    assert not report.ok and report.dropped and report.dropped[0][1] == 1


def test_a_preference_prompt_drops_its_own_loss_weight(tok):
    row = {"messages": [{"role": "user", "content": "Q1", "loss_weight": 0.0},
                        {"role": "assistant", "content": "A1", "loss_weight": 1.0},
                        {"role": "user", "content": "Q2", "loss_weight": 0.0},
                        {"role": "assistant", "content": "A2 zqnonce", "loss_weight": 1.0}], "kto_tag": True}
    batch = ResponseOnlyCollator(tok, data_format="preference")([row])
    assert _trained(tok, batch) == "A2 zqnonce<|im_end|>"


def test_the_tokenize_run_hash_ignores_call_settings_a_tokenizer_call_leaves(tok):
    from respmask._shards import _tokenizer_sha256

    before = _tokenizer_sha256(tok)
    tok(["a b c d e f g"], truncation=True, max_length=3)
    settings = tok.backend_tokenizer.truncation
    try:
        assert _tokenizer_sha256(tok) == before and tok.backend_tokenizer.truncation == settings
    finally:
        tok.backend_tokenizer.no_truncation()


def test_a_template_without_the_tool_role_names_the_mapping_that_works_for_the_rows_format():
    """Gemma 3 has no tool role; the hint said 'MessageMapping role_map; CLI: --role-map', and a
    role_map alone reads OpenAI 'messages', so on ShareGPT rows every row failed. It now names the
    whole mapping for the row's format, with the row's own name for the role; applied, it works."""
    tok = fixture_tokenizer("gemma3")
    row = {"conversations": [{"from": "human", "value": "Weather in Paris?"},
                             {"from": "function_call", "value": '{"name": "weather", "arguments": {"city": "Paris"}}'},
                             {"from": "observation", "value": "sunny"},
                             {"from": "gpt", "value": "Sunny, zqnonce."}]}
    with pytest.raises(SampleError) as info:
        ResponseOnlyCollator(tok)([row])
    named = ("MessageMapping(field_messages='conversations', role_key='from', content_key='value', "
             "role_map={'observation': 'user'})")
    assert named in str(info.value) and "--role-map '{\"observation\": \"user\"}'" in str(info.value)
    mapping = respmask.MessageMapping(field_messages="conversations", role_key="from", content_key="value",
                                      role_map={"observation": "user"})
    with pytest.warns(respmask.RespmaskWarning, match="leaves out of the render"):  # Gemma 3 renders no tool calls
        batch = ResponseOnlyCollator(tok, mapping=mapping)([row])
    assert _trained(tok, batch).endswith("Sunny, zqnonce.<end_of_turn>")


def test_check_names_the_role_map_for_sharegpt_role_names_in_openai_messages(tok):
    row = {"messages": [{"role": "human", "content": "Q"}, {"role": "gpt", "content": "A zqnonce"}]}
    report = respmask.check([row], tok)
    assert not report.ok
    said = ("mapping=MessageMapping(role_map={'human': 'user', 'gpt': 'assistant'}) "
            "(CLI: --role-map '{\"human\": \"user\", \"gpt\": \"assistant\"}')")
    assert said in str(report)
    fixed = respmask.check([row], tok, mapping=respmask.MessageMapping(role_map={"human": "user", "gpt": "assistant"}))
    assert fixed.ok and fixed.trained_tokens > 0
