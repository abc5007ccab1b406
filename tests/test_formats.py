"""Dataset formats (respmask._formats): each layout converted, ids equal to apply_chat_template of the
converted messages, errors in the row's own terms, the caller's rows untouched, every front-end."""

from __future__ import annotations

import copy
import json
import os
import pickle
from pathlib import Path

import pytest

import respmask
from respmask import (
    ChatMasker,
    MessageMapping,
    MissingColumnsError,
    Pretokenizer,
    ResponseOnlyCollator,
    SampleError,
)
from respmask._formats import SampleReader, detect_format, to_sample
from support.tokenizers import fixture_tokenizer, shared_dir

FORMATS_DIR = Path(__file__).resolve().parent / "fixtures" / "formats"

WEATHER = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def load(name: str) -> list:
    path = FORMATS_DIR / name
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    value = json.loads(path.read_text(encoding="utf-8"))
    return value if isinstance(value, list) else [value]


@pytest.fixture(scope="module")
def tok():
    return fixture_tokenizer("qwen3")  # the original Qwen3 template: tools, tool calls, reasoning


def reference_ids(tok, sample) -> list[int]:
    """transformers' own ids for a converted sample."""
    out = tok.apply_chat_template(sample["messages"], tools=sample.get("tools"), tokenize=True)
    return list(out["input_ids"] if not isinstance(out, list) else out)


def trained_text(masker: ChatMasker, row) -> str:
    rs = masker.render(row)
    return "".join(rs.text[a:b] for a, b in rs.spans)


# -- each format converted -----------------------------------------------------------------------

def test_sharegpt_converts_roles_calls_results_tools_and_system():
    row = {
        "conversations": [
            {"from": "human", "value": "Weather in Tokyo and London?"},
            {"from": "function_call", "value": json.dumps([{"name": "get_weather", "arguments": {"city": "Tokyo"}}])},
            {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": {"city": "London"}})},
            {"from": "observation", "value": "rain"},
            {"from": "observation", "value": "sun"},
            {"from": "gpt", "value": "Rain in Tokyo, sun in London."},
        ],
        "tools": json.dumps([WEATHER]),
        "system": "Be brief.",
        "source": "test",
    }
    assert to_sample(row) == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Tokyo and London?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Tokyo"}}},
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "London"}}},
            ]},
            {"role": "tool", "content": "rain"},
            {"role": "tool", "content": "sun"},
            {"role": "assistant", "content": "Rain in Tokyo, sun in London."},
        ],
        "tools": [{"type": "function", "function": WEATHER}],  # bare schema in OpenAI form
        "source": "test",  # columns it does not consume are kept
    }


def test_sharegpt_call_after_a_reply_joins_it_and_other_keys_stay():
    row = {"conversations": [
        {"from": "user", "value": "hi"},
        {"from": "gpt", "value": "Let me look.", "reasoning_content": "check the tool"},
        {"from": "function_call", "value": {"name": "f", "arguments": "{}"}},
        {"from": "observation", "value": "ok"},
        {"from": "model", "value": "Done.", "train": False},
    ]}
    messages = to_sample(row)["messages"]
    assert messages[1] == {"role": "assistant", "content": "Let me look.", "reasoning_content": "check the tool",
                           "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    assert messages[3] == {"role": "assistant", "content": "Done.", "train": False}


def test_alpaca_joins_instruction_and_input_like_llamafactory():
    assert to_sample({"instruction": "Translate.", "input": "Good morning", "output": "Bonjour"}) == {
        "messages": [{"role": "user", "content": "Translate.\nGood morning"},
                     {"role": "assistant", "content": "Bonjour"}]}
    assert to_sample({"instruction": "Say hi.", "input": "", "output": "Hi"})["messages"][0]["content"] == "Say hi."
    assert to_sample({"instruction": "Say hi.", "output": "Hi"})["messages"][0]["content"] == "Say hi."
    row = {"instruction": "And green?", "input": None, "output": "Secondary.", "system": "You paint.",
           "history": [["Red?", "Primary."], ["Blue?", "Primary too."]], "id": 7}
    assert to_sample(row) == {"id": 7, "messages": [
        {"role": "system", "content": "You paint."},
        {"role": "user", "content": "Red?"}, {"role": "assistant", "content": "Primary."},
        {"role": "user", "content": "Blue?"}, {"role": "assistant", "content": "Primary too."},
        {"role": "user", "content": "And green?"}, {"role": "assistant", "content": "Secondary."},
    ]}


def test_alpaca_history_turns_are_trained_like_the_rest(tok):
    row = {"instruction": "Second question", "input": "", "output": "SECOND-ANSWER",
           "history": [["First question", "FIRST-ANSWER"]]}
    text = trained_text(ChatMasker(tok), row)
    assert "FIRST-ANSWER" in text and "SECOND-ANSWER" in text and "question" not in text


def test_openai_messages_are_used_as_they_are():
    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
           "tools": [WEATHER], "chat_template_kwargs": {"enable_thinking": False}}
    assert to_sample(row) is row  # nothing to convert: the very same row
    assert detect_format(row) == "messages"
    as_string = {**row, "tools": json.dumps([WEATHER])}
    assert to_sample(as_string)["tools"] == [WEATHER]  # parsed, not wrapped (OpenAI rows are as given)
    assert to_sample({**row, "tools": "[]"})["tools"] is None  # an empty tools string is no tools
    conv = {"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    assert to_sample(conv) is conv and detect_format(conv) == "messages"


def test_value_content_parts_llamafactory_v1():
    row = load("openai.jsonl")[1]
    messages = to_sample(row)["messages"]
    assert messages[0] == {"role": "system", "content": "Use the tools."}
    assert messages[2] == {"role": "assistant", "content": "", "reasoning_content": "I should call get_weather.",
                           "tool_calls": [{"type": "function",
                                           "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}
    assert messages[4] == {"role": "assistant", "content": "Sunny, 21 degrees.",
                           "reasoning_content": "The tool answered."}
    # parts that are not text keep a list, with their payload under their type's name; v1's media parts
    # name the medium's location (image_url: a path or URL) and are that medium's own part, as chat
    # templates and processors read it (an image_url part reached no processor as an image)
    mixed = {"messages": [{"role": "user", "content": [{"type": "image_url", "value": "a.png"},
                                                       {"type": "text", "value": "What is this?"},
                                                       {"type": "audio_url", "value": "b.wav"},
                                                       {"type": "file", "value": "c.pdf"}]}]}
    assert to_sample(mixed)["messages"][0]["content"] == [{"type": "image", "image": "a.png"},
                                                          {"type": "text", "text": "What is this?"},
                                                          {"type": "audio", "audio": "b.wav"},
                                                          {"type": "file", "file": "c.pdf"}]


def test_prompt_completion_and_pretokenized_pass_through():
    pc = {"prompt": "Q: 2+2?\nA:", "completion": " 4"}
    assert to_sample(pc) is pc and detect_format(pc) == "prompt_completion"
    pre = {"input_ids": [1, 2], "labels": [-100, 2]}
    assert to_sample(pre) is pre and detect_format(pre) == "pretokenized"


@pytest.mark.parametrize("row, fmt", [
    ({"messages": [{"role": "user", "content": "x"}]}, "messages"),
    ({"conversations": [{"role": "user", "content": "x"}]}, "messages"),
    ({"conversations": [{"from": "human", "value": "x"}]}, "sharegpt"),
    ({"messages": [{"from": "human", "value": "x"}]}, "sharegpt"),
    ([{"from": "human", "value": "x"}], "sharegpt"),
    ({"messages": None, "instruction": "x", "output": "y"}, "alpaca"),
    ({"instruction": "x", "input": "", "output": "y", "prompt": "p", "completion": "c"}, "alpaca"),
    ({"prompt": "p", "completion": "c", "input_ids": [1]}, "prompt_completion"),
    ({"input_ids": [1], "labels": [1]}, "pretokenized"),
])
def test_auto_detection_rules(row, fmt):
    assert detect_format(row) == fmt


# -- ids equal apply_chat_template of the converted messages -------------------------------------

@pytest.mark.parametrize("name", ["sharegpt_tools.json", "alpaca.json", "openai.jsonl", "conversation_object.json"])
def test_fixture_files_ids_equal_transformers(tok, name):
    rows = load(name)
    before = copy.deepcopy(rows)
    masker = ChatMasker(tok)
    encoded = masker.encode_batch(rows)
    for row, enc in zip(rows, encoded):
        sample = to_sample(row)
        assert enc.input_ids.tolist() == reference_ids(tok, sample)
        assistants = sum(m["role"] == "assistant" for m in sample["messages"])
        assert enc.n_turns == assistants and enc.turns_without_stop == 0
    assert rows == before


def test_tool_calls_from_function_call_turns_are_trained(tok):
    rows = load("sharegpt_tools.json")
    text = trained_text(ChatMasker(tok), rows[1])
    # the three calls (two from one value, one from the next turn) are one trained assistant turn
    assert text.count("<tool_call>") == 3 and '"city": "London"' in text
    assert "<tool_response>" not in text and "Tokyo and London, please" not in text  # results, user: not
    assert "You are a travel assistant." not in text


def test_named_format_equals_auto(tok):
    for name, fmt in [("sharegpt_tools.json", "sharegpt"), ("alpaca.json", "alpaca"), ("openai.jsonl", "messages")]:
        rows = load(name)
        auto = [e.input_ids.tolist() for e in ChatMasker(tok).encode_batch(rows)]
        named = [e.input_ids.tolist() for e in ChatMasker(tok, data_format=fmt).encode_batch(rows)]
        assert auto == named


# -- the mapping ---------------------------------------------------------------------------------

CUSTOM_MAPPING = {"field_messages": "dialog", "role_key": "speaker", "content_key": "text",
                  "role_map": {"customer": "user", "agent": "assistant"}}


def test_mapping_reads_another_layout(tok):
    rows = load("custom.jsonl")
    for mapping in (CUSTOM_MAPPING, MessageMapping(**CUSTOM_MAPPING)):
        masker = ChatMasker(tok, mapping=mapping)
        sample = SampleReader(mapping=mapping)(rows[0])
        assert sample == {"id": "a1", "messages": [{"role": "user", "content": "My order is late."},
                                                   {"role": "assistant", "content": "Sorry! It ships tomorrow."}]}
        assert masker.encode(rows[0]).input_ids.tolist() == reference_ids(tok, sample)
        # (Qwen3 writes an empty think block into the last reply: the model generates it)
        assert trained_text(masker, rows[0]) == "<think>\n\n</think>\n\nSorry! It ships tomorrow.<|im_end|>"


def test_mapping_without_the_role_names_the_role_and_the_fix(tok):
    mapping = {**CUSTOM_MAPPING, "role_map": {"customer": "user"}}
    with pytest.raises(SampleError) as info:
        ResponseOnlyCollator(tok, mapping=mapping)(load("custom.jsonl"))
    msg = str(info.value)
    # the row carries an id: the collator names it as its warnings do (the position in the batch, then the row)
    assert msg.startswith("batch sample 0 (dataset row 'a1'): 'dialog'[1] has role 'agent', which is not one of")
    assert "role_map=" in msg and info.value.index == 0
    with pytest.raises(SampleError, match="has no 'dialog' column, which mapping field_messages='dialog' reads"):
        ChatMasker(tok, mapping=CUSTOM_MAPPING).encode({"messages": [{"role": "user", "content": "x"}]})


def test_mapping_options_are_checked():
    with pytest.raises(ValueError, match="unknown keys"):
        MessageMapping.of({"field": "x"})
    with pytest.raises(ValueError, match="role_map"):
        MessageMapping(role_map={"bot": 1})
    with pytest.raises(ValueError, match="data_format must stay 'auto'"):
        SampleReader("sharegpt", mapping=CUSTOM_MAPPING)
    with pytest.raises(ValueError, match="data_format must be one of"):
        SampleReader("chatml")  # type: ignore[arg-type]


# -- every front-end, and the caller's rows --------------------------------------------------------

def test_every_front_end_reads_the_formats_and_leaves_rows_alone(tok):
    rows = load("sharegpt_tools.json") + load("alpaca.json") + load("openai.jsonl")
    before = copy.deepcopy(rows)
    masker = ChatMasker(tok)
    expected = [e.input_ids.tolist() for e in masker.encode_batch(rows)]
    assert expected == [reference_ids(tok, to_sample(r)) for r in rows]

    batch = ResponseOnlyCollator(tok, return_tensors="np")(rows)
    for r, ids in enumerate(expected):
        assert batch["input_ids"][r, : len(ids)].tolist() == ids
        assert (batch["labels"][r] != -100).any()
    cols = {k: [r.get(k) for r in rows] for k in {k for r in rows for k in r}}
    out = Pretokenizer(tok)(cols)
    assert [list(map(int, x)) for x in out["input_ids"]] == expected
    report = respmask.check(rows, tok)
    assert report.ok and report.samples == len(rows) and report.turns == sum(
        sum(m["role"] == "assistant" for m in to_sample(r)["messages"]) for r in rows)
    for r, ids in zip(rows, expected):
        assert respmask.preview(r, tok).ids == ids
    assert rows == before  # nothing converted in place


def test_options_are_forwarded(tok):
    custom = load("custom.jsonl")
    expected = [e.input_ids.tolist() for e in ChatMasker(tok, mapping=CUSTOM_MAPPING).encode_batch(custom)]
    batch = ResponseOnlyCollator(tok, mapping=CUSTOM_MAPPING, return_tensors="np")(custom)
    assert batch["input_ids"][0, : len(expected[0])].tolist() == expected[0]
    pre = Pretokenizer(tok, mapping=CUSTOM_MAPPING, keep_columns=["id"])
    pre = pickle.loads(pickle.dumps(pre))  # engines pickle the transform
    out = pre({"dialog": [r["dialog"] for r in custom], "id": [r["id"] for r in custom]})
    assert [list(map(int, x)) for x in out["input_ids"]] == expected and out["id"] == ["a1", "a2"]
    assert respmask.check(custom, tok, mapping=CUSTOM_MAPPING).ok
    assert not respmask.check(custom, tok).ok  # without the mapping these rows match no format
    assert respmask.preview(custom[0], tok, mapping=CUSTOM_MAPPING).ids == expected[0]
    with pytest.raises(SampleError, match="has no 'instruction' column, which data_format='alpaca' reads"):
        ResponseOnlyCollator(tok, data_format="alpaca")(load("sharegpt_tools.json")[:1])


def test_datasets_rows_with_arrow_nones(tok):
    datasets = pytest.importorskip("datasets")
    rows = load("sharegpt_tools.json")
    columns = {k: [r.get(k) for r in rows] for k in ("conversations", "tools", "system")}
    ds = datasets.Dataset.from_dict(columns)  # Arrow: None where a row has no system prompt
    out = ds.map(Pretokenizer(tok), batched=True, remove_columns=ds.column_names)
    assert out["input_ids"] == [e.input_ids.tolist() for e in ChatMasker(tok).encode_batch(rows)]


def _tool_rows() -> list[dict]:
    """Two tool-calling rows whose calls and schemas have different keys (Arrow pads each with the other's)."""
    search = {"name": "search", "description": "s", "parameters": {
        "type": "object", "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
        "required": ["query"]}}
    out = []
    for schema, arguments, reply in ((WEATHER, {"city": "Paris"}, "Sunny."),
                                     (search, {"query": "cats", "limit": 3}, "Many cats.")):
        out.append({"messages": [
            {"role": "user", "content": "Ask"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": schema["name"], "arguments": arguments}}]},
            {"role": "tool", "content": "result"},
            {"role": "assistant", "content": reply}],
            "tools": [{"type": "function", "function": schema}]})
    return out


def test_arrow_padded_tool_calls_and_tools_are_not_trained(tok):
    # Dataset.from_list / Parquet store a column of dicts as one struct: row 0's call {"city": "Paris"}
    # comes back as {"city": "Paris", "query": None, "limit": None}, its schema with "query": None
    datasets = pytest.importorskip("datasets")
    rows = _tool_rows()
    ds = datasets.Dataset.from_list(rows)
    padded = ds[0]
    assert padded["messages"][1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris", "query": None,
                                                                                "limit": None}
    before = copy.deepcopy(padded)
    masker = ChatMasker(tok)
    assert to_sample(padded)["tools"] == rows[0]["tools"]
    assert to_sample(padded)["messages"][1]["tool_calls"] == rows[0]["messages"][1]["tool_calls"]
    assert masker.encode(padded).input_ids.tolist() == masker.encode(rows[0]).input_ids.tolist()
    assert masker.encode(padded).input_ids.tolist() == reference_ids(tok, rows[0])
    assert "null" not in masker.render(padded).text
    assert trained_text(masker, padded) == trained_text(masker, rows[0])
    assert padded == before  # the caller's row keeps its Nones
    out = ds.map(Pretokenizer(tok), batched=True, remove_columns=ds.column_names)
    assert out["input_ids"] == [e.input_ids.tolist() for e in masker.encode_batch(rows)]
    # a ShareGPT function call stored as a dict (not a JSON string) is padded the same way
    sharegpt = {"conversations": [{"from": "human", "value": "a"}, {"from": "function_call", "value": {
        "name": "get_weather", "arguments": {"city": "Paris", "query": None}}}, {"from": "observation", "value": "b"},
        {"from": "gpt", "value": "c"}]}
    assert to_sample(sharegpt)["messages"][1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}


def test_null_in_a_dict_is_dropped_but_a_json_string_is_kept_as_written(tok):
    # a None-valued key of a dict cannot be told from Arrow's padding: dropped, as TRL's remove_none_values
    # does; a JSON string is never padded, so an explicit null written there is trained as written
    masker = ChatMasker(tok)
    row = _tool_rows()[0]
    as_dict = copy.deepcopy(row)
    as_dict["messages"][1]["tool_calls"][0]["function"]["arguments"] = {"city": "Paris", "unit": None}
    assert trained_text(masker, as_dict) == trained_text(masker, row)
    as_string = copy.deepcopy(row)
    as_string["messages"][1]["tool_calls"][0]["function"]["arguments"] = '{"city": "Paris", "unit": null}'
    assert '"arguments": {"city": "Paris", "unit": null}' in trained_text(masker, as_string)
    tools_string = {**row, "tools": json.dumps([{"type": "function", "function": {**WEATHER, "strict": None}}])}
    assert '"strict": null' in masker.render(tools_string).text
    assert masker.encode(tools_string).input_ids.tolist() == reference_ids(tok, to_sample(tools_string))


def test_arrow_padded_template_kwargs_and_documents(tok):
    # a row's chat_template_kwargs padded with another row's key (None) must not override the masker's own
    template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.role == 'assistant' and style is defined %}"
                "[{{ style }}]{% endif %}{{ m.content }}<|im_end|>\n{% endfor %}"
                "{% for d in documents or [] %}{{ d | tojson }}{% endfor %}")
    masker = ChatMasker(tok, chat_template=template, template_kwargs={"style": "terse"})
    row = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
           "chat_template_kwargs": {"style": None, "other": None},
           "documents": [{"title": "a", "text": "b", "url": None}]}
    text = masker.render(row).text
    assert "[terse]Hello" in text and "None" not in text and "null" not in text, text
    assert '{"title": "a", "text": "b"}' in text


# -- errors in the row's own terms -----------------------------------------------------------------

@pytest.mark.parametrize("row, message", [
    ({"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"},
                        {"from": "wizard", "value": "c"}]},
     "'conversations'[2] has role 'wizard', which is not one of 'system', "),
    ({"conversations": [{"from": "human", "value": "a"}, {"value": "b"}]}, "'conversations'[1] has no 'from'"),
    ({"conversations": [{"from": "human", "value": 5}]}, "'conversations'[0]['value'] must be a string"),
    ({"conversations": [{"from": "human", "value": "a"}, {"from": "function_call", "value": "get_weather(Paris)"}]},
     "'conversations'[1] (function_call) is a function call but its value is not JSON"),
    ({"conversations": [{"from": "human", "value": "a"}, {"from": "function_call", "value": '{"arguments": {}}'}]},
     "'conversations'[1] (function_call): a function call needs a 'name'"),
    ({"conversations": [{"from": "human", "value": "a"}], "tools": "[{'name': 'x'}]"}, "'tools' is a string but not JSON"),
    ({"conversations": [{"from": "system", "value": "A"}, {"from": "human", "value": "a"}], "system": "B"},
     "has a 'system' column and also starts its conversation with another system message"),
    ({"instruction": "a", "output": None}, "'output' must be a string (the reply to train), got NoneType"),
    ({"instruction": "a", "output": "b", "history": [["only one"]]}, "'history'[0] must be an [instruction, response] pair"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "value": "a"}]},
                   {"role": "assistant", "content": [{"type": "tool_call", "value": "not json"}]}]},
     "'messages'[1]['content'][0] is a function call but its value is not JSON"),
])
def test_errors_name_the_column_and_message(tok, row, message):
    before = copy.deepcopy(row)
    with pytest.raises(SampleError) as info:
        ResponseOnlyCollator(tok)([{"messages": [{"role": "user", "content": "ok"}]}, row])
    assert type(info.value) is SampleError  # never a KeyError, TypeError or the template's UndefinedError
    assert str(info.value).startswith("sample 1: ") and message in str(info.value), str(info.value)
    assert row == before
    report = respmask.check([row], tok)
    assert report.errors and message in report.errors[0][1]


def test_unknown_layout_lists_its_columns_and_the_formats(tok):
    with pytest.raises(MissingColumnsError) as info:
        ChatMasker(tok).encode({"question": "q", "answer": "a"})
    msg = str(info.value)
    assert "it has ['answer', 'question']" in msg
    for fmt in ("messages", "sharegpt", "alpaca", "prompt_completion", "mapping=MessageMapping("):
        assert fmt in msg


# -- real data (public demo files), real tokenizers ------------------------------------------------

def realdata_dir() -> Path | None:
    env = os.environ.get("RESPMASK_SHARED_REALDATA")
    if env:
        return Path(env) if Path(env).is_dir() else None
    root = shared_dir()
    path = root.parent / "realdata" if root is not None else None
    return path if path is not None and path.is_dir() else None


REAL_FILES = [
    "llamafactory/alpaca_en_demo.json",
    "llamafactory/identity.json",
    "llamafactory/glaive_toolcall_en_demo.json",
    "llamafactory/reason_tool_use_demo_50.jsonl",
    "llamafactory/v1_sft_demo.jsonl",
    "axolotl/alpaca_alpaca.json",
    "axolotl/conversation.json",
    "axolotl/conversation.missingturns.json",
]


@pytest.fixture(scope="module")
def realdata():
    path = realdata_dir()
    if path is None:
        pytest.skip("real data not available (set RESPMASK_SHARED_TOKENIZERS to ../shared/tokenizers, with "
                    "../shared/realdata beside it, or RESPMASK_SHARED_REALDATA)")
    return path


@pytest.mark.shared
@pytest.mark.parametrize("name", REAL_FILES)
def test_real_rows_ids_equal_transformers(shared_root, realdata, name):
    from support.tokenizers import shared_tokenizer

    tok = shared_tokenizer("qwen3")
    path = realdata / name
    rows = ([json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
            if path.suffix == ".jsonl" else json.loads(path.read_text(encoding="utf-8")))
    rows = (rows if isinstance(rows, list) else [rows])[:25]
    before = copy.deepcopy(rows)
    for row, enc in zip(rows, ChatMasker(tok).encode_batch(rows)):
        sample = to_sample(row)
        assert enc.input_ids.tolist() == reference_ids(tok, sample)
        assert enc.n_turns == sum(m["role"] == "assistant" for m in sample["messages"])
        assert enc.turns_without_stop == 0
    assert rows == before


@pytest.mark.shared
def test_real_glaive_calls_are_trained(shared_root, realdata):
    from support.tokenizers import shared_tokenizer

    rows = json.loads((realdata / "llamafactory/glaive_toolcall_en_demo.json").read_text(encoding="utf-8"))
    row = next(r for r in rows if any(m["from"] == "function_call" for m in r["conversations"]))
    call = next(json.loads(m["value"]) for m in row["conversations"] if m["from"] == "function_call")
    text = trained_text(ChatMasker(shared_tokenizer("qwen3")), row)
    assert f'<tool_call>\n{{"name": "{call["name"]}", "arguments": ' in text
    observation = next(m["value"] for m in row["conversations"] if m["from"] == "observation")
    assert observation not in text
