"""Masking options: last turn only, per-message train flags, reasoning out of the loss,
template kwargs, configured stop tokens."""

from __future__ import annotations

import json

import pytest

from respmask import ChatMasker, SampleError
from support.tokenizers import build_tokenizer, fixture_tokenizer, template_source


def trained_text(tok, enc) -> str:
    return tok.decode([int(i) for i, l in zip(enc.input_ids, enc.labels) if l != -100])


CHAT = [
    {"role": "user", "content": "first question"},
    {"role": "assistant", "content": "first answer"},
    {"role": "user", "content": "second question"},
    {"role": "assistant", "content": "second answer"},
]


def test_train_on_all_and_last():
    tok = fixture_tokenizer("qwen2_5")
    everything = trained_text(tok, ChatMasker(tok).encode(CHAT))
    last = trained_text(tok, ChatMasker(tok, train_on="last").encode(CHAT))
    assert everything == "first answer<|im_end|>second answer<|im_end|>"
    assert last == "second answer<|im_end|>"


def test_per_message_train_flags():
    tok = fixture_tokenizer("qwen2_5")
    chat = [dict(m) for m in CHAT]
    chat[1]["train"] = False
    assert trained_text(tok, ChatMasker(tok).encode(chat)) == "second answer<|im_end|>"
    chat[1]["train"] = True
    assert trained_text(tok, ChatMasker(tok, train_on="last").encode(chat)) == (
        "first answer<|im_end|>second answer<|im_end|>"
    )
    # a user message can be trained on request: its content and stop token
    chat = [dict(m) for m in CHAT]
    chat[2]["train"] = True
    text = trained_text(tok, ChatMasker(tok).encode(chat))
    assert text == "first answer<|im_end|>second question<|im_end|>second answer<|im_end|>"


def test_train_key_is_not_passed_to_the_template():
    tok = fixture_tokenizer("qwen2_5")
    chat = [dict(m, train=True) if m["role"] == "assistant" else m for m in CHAT]
    enc = ChatMasker(tok).encode(chat)
    assert list(enc.input_ids) == list(tok.apply_chat_template(CHAT, return_dict=True)["input_ids"])


def test_train_flag_must_be_boolean():
    tok = fixture_tokenizer("qwen2_5")
    chat = [dict(m) for m in CHAT]
    chat[1]["train"] = "yes"
    with pytest.raises(SampleError, match=r"\['train'\] must be true or false"):
        ChatMasker(tok).encode(chat)


REASONING = [
    {"role": "user", "content": "Is 21 prime?"},
    {"role": "assistant", "reasoning_content": "21 is 3 times 7.", "content": "No."},
]


def test_reasoning_in_and_out_of_the_loss_qwen3():
    tok = fixture_tokenizer("qwen3")
    with_r = trained_text(tok, ChatMasker(tok).encode(REASONING))
    without = trained_text(tok, ChatMasker(tok, reasoning_in_loss=False).encode(REASONING))
    assert with_r == "<think>\n21 is 3 times 7.\n</think>\n\nNo.<|im_end|>"
    assert without == "No.<|im_end|>"


def test_reasoning_out_of_the_loss_drops_injected_empty_think_block():
    tok = fixture_tokenizer("qwen3")
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert trained_text(tok, ChatMasker(tok).encode(chat)) == "<think>\n\n</think>\n\nhello<|im_end|>"
    assert trained_text(tok, ChatMasker(tok, reasoning_in_loss=False).encode(chat)) == "hello<|im_end|>"


def test_reasoning_out_of_the_loss_harmony():
    # the model writes the final channel's header itself after its reasoning: that stays trained
    tok = fixture_tokenizer("gpt_oss")
    enc = ChatMasker(tok, reasoning_in_loss=False).encode(REASONING)
    assert trained_text(tok, enc) == "<|start|>assistant<|channel|>final<|message|>No.<|return|>"
    full = trained_text(tok, ChatMasker(tok).encode(REASONING))
    assert full.startswith("<|channel|>analysis<|message|>21 is 3 times 7.<|end|>") and full.endswith("No.<|return|>")


def test_enable_thinking_false_makes_the_empty_think_block_prompt():
    tok = fixture_tokenizer("qwen3")
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    masker = ChatMasker(tok, template_kwargs={"enable_thinking": False})
    enc = masker.encode(chat)
    assert trained_text(tok, enc) == "hello<|im_end|>"
    ref = tok.apply_chat_template(chat, enable_thinking=False, return_dict=True)["input_ids"]
    assert list(enc.input_ids) == list(ref)
    # per-sample kwargs override the masker's
    enc2 = masker.encode({"messages": chat, "chat_template_kwargs": {"enable_thinking": True}})
    assert trained_text(tok, enc2) == "<think>\n\n</think>\n\nhello<|im_end|>"


def test_glm_has_no_stop_token_unless_configured(tmp_path):
    tok = fixture_tokenizer("glm4_5")
    chat = CHAT
    enc = ChatMasker(tok).encode(chat)
    # GLM injects an empty think block into every turn; no turn has a closing token
    assert trained_text(tok, enc) == "\n<think></think>\nfirst answer\n<think></think>\nsecond answer"
    assert enc.turns_without_stop == 2
    # GLM's generation_config.json lists <|user|> and <|observation|> as EOS: then the role token
    # that follows a reply is what the model must generate to stop, and it is trained
    enc = ChatMasker(tok, stop_tokens=["<|user|>", "<|observation|>"]).encode(chat)
    assert trained_text(tok, enc) == "\n<think></think>\nfirst answer<|user|>\n<think></think>\nsecond answer"
    assert enc.turns_without_stop == 1


def test_generation_config_next_to_the_tokenizer_is_read(tmp_path):
    tok = fixture_tokenizer("glm4_5")
    tok.save_pretrained(tmp_path)
    ids = tok.convert_tokens_to_ids(["<|endoftext|>", "<|user|>", "<|observation|>"])
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": ids}))
    from transformers import AutoTokenizer

    tok2 = AutoTokenizer.from_pretrained(tmp_path)
    enc = ChatMasker(tok2, reasoning_in_loss=False).encode(CHAT)
    assert trained_text(tok2, enc) == "first answer<|user|>second answer"


def test_explicit_chat_template_overrides_the_tokenizer():
    tok = build_tokenizer(template_source("chatml"), eos="<|im_end|>", special=["<|im_start|>", "<|im_end|>"])
    zephyr = template_source("zephyr")
    enc = ChatMasker(tok, chat_template=zephyr).encode(CHAT)
    assert list(enc.input_ids) == list(tok.apply_chat_template(CHAT, chat_template=zephyr, return_dict=True)["input_ids"])


@pytest.mark.parametrize("answer", ["plain answer", "an answer with </s> inside", "an answer ending in </s>"])
def test_turn_printed_as_one_value_ends_at_the_templates_stop_token(answer):
    """Zephyr prints a whole turn as one expression ('<|assistant|>\\n' + content + eos_token): the stop
    token is inside the printed value. Only the one the template added ends the turn; '</s>' written in
    the answer is content."""
    tok = fixture_tokenizer("zephyr")
    chat = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": answer},
            {"role": "user", "content": "q2"}, {"role": "assistant", "content": answer}]
    enc = ChatMasker(tok).encode(chat)
    assert list(enc.input_ids) == list(tok.apply_chat_template(chat, return_dict=True)["input_ids"])
    trained = trained_text(tok, enc)
    assert trained.replace(" ", "") == (answer + "</s>" + answer + "</s>").replace(" ", ""), trained
