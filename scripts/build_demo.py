"""Build the demo tokenizer that ships inside respmask (src/respmask/demo/).

A small byte-level BPE trained on a built-in English corpus and the demo conversations, with
Qwen3's special tokens and Qwen3's real chat template (tests/fixtures/chat_templates/qwen3.jinja,
from the trl 1.16.0 wheel / Qwen/Qwen3 tokenizer_config.json). Run from the repository root:

    python scripts/build_demo.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "src" / "respmask" / "demo"
TEMPLATE = ROOT / "tests" / "fixtures" / "chat_templates" / "qwen3.jinja"
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<tool_call>", "</tool_call>",
           "<tool_response>", "</tool_response>"]

WORDS = (
    "the a an of to and in is it you that was for on are with as they be at one have this from or had by "
    "but what some we can out other were all there when up use your how said each she which do their time if "
    "will way about many then them write would like so these her long make thing see him two has look more "
    "day could go come did number sound no most people my over know water than call first who may down side "
    "been now find capital france paris weather city tokyo sunny degrees prime number divisible assistant "
    "user system tool function answer question reasoning think because therefore result value json string "
    "concise helpful temperature sky current name description object properties required type"
).split()


def corpus() -> list[str]:
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 16))) + "." for _ in range(3000)]
    for line in (DEMO / "conversations.jsonl").read_text(encoding="utf-8").splitlines():
        lines += [json.dumps(json.loads(line), ensure_ascii=False)] * 5
    lines += ['{"name": "get_weather", "arguments": {"city": "Tokyo"}}'] * 20
    return lines


def main() -> None:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=2000,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    tok.save(str(DEMO / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 32768,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "padding_side": "right",
        "clean_up_tokenization_spaces": False,
        "additional_special_tokens": SPECIAL[1:],
        "chat_template": TEMPLATE.read_text(encoding="utf-8"),
    }
    (DEMO / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {DEMO}/tokenizer.json ({tok.get_vocab_size()} tokens) and tokenizer_config.json")


if __name__ == "__main__":
    main()
