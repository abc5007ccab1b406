"""Chats with images through a transformers processor (issue 15), offline: processors built from
their classes (``*ImageProcessorPil``), real tokenizers carrying the image tokens, the families'
real chat templates (tests/fixtures/chat_templates/vision/SOURCES.md).

References: the processor's own ``apply_chat_template(..., tokenize=True)`` ids, token for token;
nonce words planted in every message's text (every assistant nonce trained, no other); the
processor's image tokens never trained; a real ``Trainer`` on tiny vision models, whose loss equals
the cross-entropy over the trained tokens computed by hand.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
pytest.importorskip("PIL")
torch = pytest.importorskip("torch")

import respmask  # noqa: E402
from respmask._errors import SampleError  # noqa: E402
from support.vision import FAMILIES, build_processor, image_token_ids, make_image  # noqa: E402


class Nonces:
    def __init__(self) -> None:
        self.kinds: dict[str, str] = {}

    def __call__(self, kind: str) -> str:
        word = f"{kind.lower()}nonce{chr(97 + len(self.kinds) // 26)}{chr(97 + len(self.kinds) % 26)}"
        self.kinds[word] = kind
        return word


def _text(t: str) -> dict:
    return {"type": "text", "text": t}


def conversations(family: str) -> list[tuple[list[dict], Nonces]]:
    """Conversations with 0 to 3 images of several sizes, in user turns (and a system turn and an
    assistant turn where the family's template renders images there)."""
    out = []
    sizes = [(64, 64), (96, 128), (128, 80)]
    for n_images in (0, 1, 2, 3):
        nn = Nonces()
        imgs = [make_image(*sizes[i % 3], seed=i) for i in range(n_images)]
        first = [{"type": "image", "image": im} for im in imgs[:2]] + [_text(f"What {nn('USR')} is this?")]
        msgs = [
            {"role": "system", "content": [_text(f"Be brief {nn('SYS')}.")]},
            {"role": "user", "content": first},
            {"role": "assistant", "content": [_text(f"It is {nn('AST')} indeed.")]},
            {"role": "user", "content": [{"type": "image", "image": im} for im in imgs[2:]] + [_text(f"And {nn('USR')}?")]},
            {"role": "assistant", "content": [_text(f"Also {nn('AST')} there.")]},
        ]
        out.append((msgs, nn))
    return out


def _reference_ids(processor, messages) -> list[int]:
    ref = processor.apply_chat_template(messages, tokenize=True, return_dict=True)
    return np.asarray(ref["input_ids"]).reshape(-1).tolist()


def _check_row(processor, messages, nn, ids, labels, image_in_reply=False, stops=True):
    tok = processor.tokenizer
    assert ids.tolist() == _reference_ids(processor, messages)
    trained = labels != -100
    text = tok.decode(ids[trained].tolist())
    words = {w for w in nn.kinds if w in text}
    assert words == {w for w, k in nn.kinds.items() if k == "AST"}, text
    media = image_token_ids(processor)
    assert media and not np.isin(ids[trained], media).any(), "an image token is trained"
    assert np.isin(ids, media).any() == any(
        p.get("type") == "image" for m in messages if isinstance(m["content"], list) for p in m["content"])
    # one trained run per assistant turn, each ending with the token that ends generation (an added
    # control token such as <end_of_turn>, <|im_end|>, </s>)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], trained.astype(np.int8), [0]])))
    runs = list(zip(edges[::2], edges[1::2]))
    assert len(runs) == sum(m["role"] == "assistant" for m in messages) + image_in_reply  # an image splits a run
    if stops:  # (llava-1.5's template closes a reply with a space and no stop token: respmask reports it)
        control = set(tok.added_tokens_decoder)
        ends = runs[-1:] if image_in_reply else runs  # an image in a reply ends the run before it
        assert all(int(ids[b - 1]) in control for _, b in ends), [tok.decode(ids[a:b].tolist()) for a, b in runs]


@pytest.mark.parametrize("family", FAMILIES)
def test_ids_equal_the_processor_and_only_assistant_text_is_trained(family):
    processor = build_processor(family)
    masker = respmask.ChatMasker(processor)
    for messages, nn in conversations(family):
        batch, rows = masker.process_batch([{"messages": messages}], return_tensors="np")
        assert batch["labels"].shape == np.asarray(batch["input_ids"]).shape
        stops = rows[0].turns_without_stop == 0
        assert stops or rows[0].turns_without_stop == 2  # a template without stop tokens: every turn reported
        _check_row(processor, messages, nn, rows[0].input_ids, rows[0].labels, stops=stops)


@pytest.mark.parametrize("family", FAMILIES)
def test_mixed_batches_and_the_images_column(family):
    processor = build_processor(family)
    collator = respmask.ResponseOnlyCollator(processor, return_tensors="np")
    convs = conversations(family)
    # the same conversations with placeholders in the parts and the images in an 'images' column
    rows = []
    for messages, _ in convs:
        images = [p["image"] for m in messages for p in m["content"] if p.get("type") == "image"]
        stripped = [{**m, "content": [{"type": "image"} if p.get("type") == "image" else p for p in m["content"]]}
                    for m in messages]
        rows.append({"messages": stripped, "images": images})
    batch = collator(rows)
    ids = np.asarray(batch["input_ids"])
    assert ids.shape[0] == len(convs) and batch["labels"].shape == ids.shape
    real = np.asarray(batch["attention_mask"]).astype(bool)
    assert (batch["labels"][~real] == -100).all()
    stops = collator.stats.turns_without_stop == 0
    for r, (messages, nn) in enumerate(convs):
        _check_row(processor, messages, nn, ids[r][real[r]], batch["labels"][r][real[r]], stops=stops)
    assert collator.stats.samples == len(convs) and collator.stats.untrainable == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_string_contents_mask_as_their_text_part(family):
    """The same conversations with every text-only content written as a string (as most datasets
    hold it). A template that renders strings (Qwen2-VL, Gemma 3, Mistral 3, Mllama, whose system
    turn reads ``content|trim``, a string) renders the rows as written: the reference is the
    processor's ids of the string form. One that renders parts alone (LLaVA, Idefics3, SmolVLM:
    ``selectattr('type', 'equalto', 'text')`` skips a string) reads each string as its text part (see
    test_string_replies_train_on_a_template_that_renders_only_parts): the reference is the parts
    form's, which nothing of the string form would render. Either way every assistant nonce is
    trained and no other."""
    parts_only = family in ("llava", "idefics3", "smolvlm")  # read from the templates (fixtures/vision)
    processor = build_processor(family)
    masker = respmask.ChatMasker(processor)
    for messages, nn in conversations(family):
        strings = [{**m, "content": "".join(p["text"] for p in m["content"])}
                   if all(p["type"] == "text" for p in m["content"]) else m for m in messages]
        assert any(isinstance(m["content"], str) for m in strings)
        batch, rows = masker.process_batch([{"messages": strings}], return_tensors="np")
        stops = rows[0].turns_without_stop == 0
        assert stops or rows[0].turns_without_stop == 2
        assert not rows[0].lost_data
        _check_row(processor, messages if parts_only else strings, nn, rows[0].input_ids, rows[0].labels,
                   stops=stops)


def test_an_image_in_an_assistant_turn_is_not_trained():
    processor = build_processor("gemma3")
    nn = Nonces()
    messages = [
        {"role": "user", "content": [_text(f"Draw {nn('USR')}.")]},
        {"role": "assistant", "content": [_text(f"Here {nn('AST')}:"), {"type": "image", "image": make_image(64, 64)},
                                          _text(f"done {nn('AST')}.")]},
    ]
    _, rows = respmask.ChatMasker(processor).process_batch([{"messages": messages}], return_tensors="np")
    _check_row(processor, messages, nn, rows[0].input_ids, rows[0].labels, image_in_reply=True)


def test_clear_errors():
    processor = build_processor("gemma3")
    masker = respmask.ChatMasker(processor)
    msgs = [{"role": "user", "content": [{"type": "image", "image": "https://example.com/a.png"}, _text("x")]},
            {"role": "assistant", "content": "y"}]
    with pytest.raises(SampleError, match="sample 0: message 0's image is a URL"):
        masker.process_batch([{"messages": msgs}])
    video = [{"role": "user", "content": [{"type": "video", "video": "v.mp4"}]}, {"role": "assistant", "content": "y"}]
    with pytest.raises(SampleError, match=r"sample 0: message 0 holds video, but the processor \(Gemma3Processor\) has "
                                          "no video processor"):
        masker.process_batch([{"messages": video}])
    audio = [{"role": "user", "content": [{"type": "audio", "audio": np.zeros(1600, np.float32)}]},
             {"role": "assistant", "content": "y"}]
    with pytest.raises(SampleError, match=r"sample 0: message 0 holds audio, which this processor \(Gemma3Processor\) "
                                          "does not take"):
        masker.process_batch([{"messages": audio}])
    with pytest.raises(SampleError, match=r"sample 0: its 'videos' column holds video"):
        masker.process_batch([{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
                               "videos": [[make_image(64, 64)] * 2]}])
    with pytest.raises(ValueError, match="pad_to_multiple_of"):  # max_length works (tests/test_vision_truncation.py)
        respmask.ResponseOnlyCollator(processor, pad_to_multiple_of=8)
    with pytest.raises(ValueError, match="on_image_cut must be one of 'truncate', 'drop'"):
        respmask.ResponseOnlyCollator(processor, max_length=128, on_image_cut="skip")
    with pytest.raises(TypeError, match="ResponseOnlyCollator\\(processor\\)"):
        respmask.Pretokenizer(processor)


def test_placeholders_and_images_that_do_not_pair_up_name_the_row():
    # said before the processor is called, which would name no row ("the processor rejected this batch: ...
    # Found total 0 <|image_pad|> tokens and 1 images")
    processor = build_processor("qwen2_vl")
    image = make_image(48, 40)
    good = {"messages": [{"role": "user", "content": "<image>Who?"}, {"role": "assistant", "content": "Kane."}],
            "images": [image]}
    bad = {
        "has 2 '<image>' placeholder(s) in its messages but 1 item(s) in 'images'":
            {**good, "messages": [{"role": "user", "content": "<image>Who?<image>"}, good["messages"][1]]},
        "has no image part and no '<image>' placeholder in its messages but 1 item(s) in 'images'":
            {**good, "messages": [{"role": "user", "content": "Who?"}, good["messages"][1]]},
        "has 1 '<image>' placeholder(s) in its messages but 2 item(s) in 'images'": {**good, "images": [image, image]},
        "has 1 image part(s) in its messages but 2 item(s) in 'images'":
            {"messages": [{"role": "user", "content": [{"type": "image"}, _text("Who?")]}, good["messages"][1]],
             "images": [image, image]},
    }
    collator = respmask.ResponseOnlyCollator(processor, return_tensors="np")
    for message, row in bad.items():
        with pytest.raises(SampleError) as info:
            collator([good, row])
        assert str(info.value).startswith(f"sample 1: {message}: each image part, or '<image>' placeholder, takes "
                                          "the next item"), str(info.value)
        assert "rejected this batch" not in str(info.value) and "Fix the row" in str(info.value)
    report = respmask.check([good, *bad.values()], processor)
    assert [(i, m.split(": each")[0]) for i, m in report.errors] == [(i, f"sample {i}: {m}") for i, m in enumerate(bad, 1)]
    assert collator([good])["input_ids"].shape[0] == 1


def test_check_counts_expanded_tokens():
    processor = build_processor("gemma3")
    messages, _ = conversations("gemma3")[2]
    report = respmask.check([{"messages": messages}], processor)
    assert report.ok and report.tokens == len(_reference_ids(processor, messages))


# -- real Trainer runs on tiny vision models ------------------------------------------------------

def _manual_loss(model, batch):
    model.eval()
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    labels = batch["labels"]
    shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    shift_labels = labels[:, 1:].reshape(-1)
    return torch.nn.functional.cross_entropy(shift_logits, shift_labels, ignore_index=-100)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gemma3", "qwen2_vl"])
def test_trainer_on_a_tiny_vision_model(tmp_path, family):
    datasets = pytest.importorskip("datasets")
    from support.vision import tiny_model

    processor = build_processor(family, tiny=True)
    model = tiny_model(family, processor)
    collator = respmask.ResponseOnlyCollator(processor)
    rows = []
    for i in range(8):
        rows.append({"messages": [
            {"role": "user", "content": [{"type": "image"}, _text(f"what colour is picture {i}")]},
            {"role": "assistant", "content": [_text(["red", "green", "blue", "black"][i % 4] + " it is")]},
        ], "images": [make_image(40 + 8 * (i % 3), 32, seed=i)]})
    ds = datasets.Dataset.from_list(rows)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=12, learning_rate=1e-2, logging_steps=1,
        report_to=[], use_cpu=True, save_strategy="no", seed=0, disable_tqdm=True, remove_unused_columns=False)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=ds, data_collator=collator)
    batch = collator(rows[:4])
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(**batch).loss, _manual_loss(model, batch), atol=1e-4)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 12 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3


def test_preview_collapses_image_tokens():
    processor = build_processor("gemma3")
    messages, _ = conversations("gemma3")[1]  # one image
    p = respmask.preview({"messages": messages}, tokenizer=processor)
    ids = _reference_ids(processor, messages)
    media = image_token_ids(processor)
    runs = [t for t in p.tokens if t.startswith("[") and " ×" in t]
    assert len(runs) == 1 and runs[0].endswith(f"×{int(np.isin(ids, media).sum()) - 2}]")  # soft tokens, not boi/eoi
    assert p.n_tokens == len(ids)
    assert p.n_trained == int((respmask.ChatMasker(processor).process_batch(
        [{"messages": messages}], return_tensors="np")[0]["labels"] != -100).sum())
    assert "⟦" in p.to_text(color=False)


def test_the_processors_tokenizer_is_left_as_found():
    """A processor's call with padding leaves padding set on its tokenizer's Rust backend; respmask's
    processor calls put back what was there before, so the tokenizer is as found and respmask reads
    it directly, without a private copy of it (checking the copy counts the vocabulary each time)."""
    processor = build_processor("qwen2_vl")
    backend = processor.tokenizer.backend_tokenizer
    rows = [{"messages": m} for m, _ in conversations("qwen2_vl")]
    masker = respmask.ChatMasker(processor)
    for max_length in (None, 60):  # whole rows, and rows cut (the cut batch's own processor calls)
        collator = respmask.ResponseOnlyCollator(processor, max_length=max_length, on_untrainable="keep")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", respmask.RespmaskWarning)
            collator(rows)
        assert (collator.stats.truncated > 0 and collator.stats.images_dropped > 0) == bool(max_length)
        assert backend.padding is None and backend.truncation is None
        assert masker.backend() is backend  # no private copy needed
    # the processor alone leaves padding set (what respmask puts back)
    processor(text=["a", "bb"], padding=True)
    assert backend.padding is not None
    backend.no_padding()
    # settings on it before a call are there after it
    from respmask._media import call_processor

    backend.enable_padding(direction="left", pad_id=7, pad_token="<x>", length=300)
    backend.enable_truncation(max_length=500, direction="left")
    padding, truncation = backend.padding, backend.truncation
    call_processor(processor, ["a b", "c"], [[], []])
    assert backend.padding == padding and backend.truncation == truncation
    backend.no_padding()
    backend.no_truncation()


def _llamafactory_reference(row: dict) -> list[dict]:
    """A LLaMA-Factory multimodal row written by hand the way transformers' processors take it:
    mllm_demo's ``<image>`` placeholders and its ``images`` paths, or v1's ``{"type": "image_url" |
    "text", "value": ...}`` parts, as ``{"type": "image", "path": ...}`` and text parts."""
    images = iter(row.get("images", []))
    out = []
    for m in row["messages"]:
        content = m["content"]
        parts = []
        if isinstance(content, str):
            for k, piece in enumerate(content.split("<image>")):
                if k:
                    parts.append({"type": "image", "path": next(images)})
                if piece:
                    parts.append({"type": "text", "text": piece})
        else:
            for p in content:
                parts.append({"type": "image", "path": p["value"]} if p["type"] == "image_url"
                             else {"type": "text", "text": p["value"]})
        out.append({"role": m["role"], "content": parts})
    return out


@pytest.mark.slow
def test_llamafactory_multimodal_files_train_through_the_processor(tmp_path, monkeypatch):
    """LLaMA-Factory's mllm_demo.json (``<image>`` in the text, an ``images`` column of paths) and
    v1_multimodal_demo.jsonl (``image_url`` parts holding paths), as published, through a Qwen2-VL
    processor with no conversion code: stand-in images at the files' own paths, ids equal the
    processor's own apply_chat_template of the same chats, exactly the replies trained, and a tiny
    model trains on them with a Trainer."""
    import json

    from support.tokenizers import shared_dir
    from support.vision import tiny_model

    root = shared_dir()
    files = root.parent / "realdata" / "llamafactory" if root is not None else None
    if files is None or not (files / "v1_multimodal_demo.jsonl").is_file():
        pytest.skip("../shared/realdata/llamafactory not available")
    mllm = json.loads((files / "mllm_demo.json").read_text(encoding="utf-8"))
    v1 = [json.loads(x) for x in (files / "v1_multimodal_demo.jsonl").read_text(encoding="utf-8").splitlines() if x]
    monkeypatch.chdir(tmp_path)
    paths = sorted({p for r in mllm for p in r["images"]}
                   | {p["value"] for r in v1 for m in r["messages"] for p in m["content"] if p["type"] == "image_url"})
    assert len(paths) == 6
    for k, path in enumerate(paths):  # the demo images are not published with the files: stand-ins
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        make_image(48 + 8 * k, 40, seed=k).save(tmp_path / path)
    processor = build_processor("qwen2_vl", tiny=True)
    collator = respmask.ResponseOnlyCollator(processor)
    tok = processor.tokenizer
    for rows in (mllm, v1[:8]):
        batch = collator(rows)
        real = batch["attention_mask"].bool()
        for r, row in enumerate(rows):
            ref = processor.apply_chat_template(_llamafactory_reference(row), tokenize=True, return_dict=True)
            assert batch["input_ids"][r][real[r]].tolist() == list(ref["input_ids"][0])
            labels = batch["labels"][r][real[r]]
            replies = [m["content"] if isinstance(m["content"], str) else "".join(p["value"] for p in m["content"])
                       for m in row["messages"] if m["role"] == "assistant"]
            assert tok.decode(batch["input_ids"][r][real[r]][labels != -100]) == "".join(
                reply + "<|im_end|>" for reply in replies)
        assert len(batch["image_grid_thw"]) == sum(  # every image reached the model
            p["type"] == "image" for row in rows for m in _llamafactory_reference(row) for p in m["content"])
    model = tiny_model("qwen2_vl", processor)
    batch = collator(v1[:4])
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(**batch).loss, _manual_loss(model, batch), atol=1e-4)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "run"), per_device_train_batch_size=4, max_steps=6, learning_rate=1e-2,
        logging_steps=1, report_to=[], use_cpu=True, save_strategy="no", seed=0, disable_tqdm=True,
        remove_unused_columns=False)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=mllm + v1, data_collator=collator)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses)


def test_llamafactory_v1_text_parts_stay_parts_for_a_processor(tmp_path, monkeypatch):
    """v1's text parts (``{"type": "text", "value": ...}``) are joined into one string for a text
    tokenizer (text templates read strings) but stay text parts for a processor: LLaVA's template
    renders only parts, so a joined string would lose every reply (all labels -100)."""
    rows = [{"messages": [
        {"role": "user", "content": [{"type": "image_url", "value": "pics/a.jpg"}, {"type": "text", "value": "Who?"}]},
        {"role": "assistant", "content": [{"type": "text", "value": "Kane, zqnonce one."}]},
        {"role": "user", "content": [{"type": "text", "value": "And then?"}]},
        {"role": "assistant", "content": [{"type": "text", "value": "They celebrate, zqnonce two."}]}]}]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pics").mkdir()
    make_image(64, 48, seed=1).save(tmp_path / "pics" / "a.jpg")
    processor = build_processor("llava")
    batch = respmask.ResponseOnlyCollator(processor)(rows)
    ref = processor.apply_chat_template(_llamafactory_reference(rows[0]), tokenize=True, return_dict=True)
    assert batch["input_ids"][0].tolist() == list(ref["input_ids"][0])
    trained = processor.tokenizer.decode(batch["input_ids"][0][batch["labels"][0] != -100])
    assert "Kane, zqnonce one." in trained and "They celebrate, zqnonce two." in trained
    assert "Who?" not in trained and "And then?" not in trained
    # the same rows for a text tokenizer: the text parts joined (the text-only messages read as strings)
    read = respmask.ChatMasker(processor.tokenizer, text_only=True).reader(rows[0])
    assert read["messages"][1]["content"] == "Kane, zqnonce one." and read["messages"][2]["content"] == "And then?"


def test_string_replies_train_on_a_template_that_renders_only_parts(tmp_path, monkeypatch):
    """LLaMA-Factory's mllm_demo.json writes replies as strings; LLaVA 1.5's template renders text
    parts alone (``selectattr('type', 'equalto', 'text')`` skips a string), so read as written every
    reply was left out and nothing trained. A string content is one text part in the OpenAI format:
    for the roles whose strings the template leaves out but whose one text part it renders, respmask
    reads it as that part. Reference: the processor's own apply_chat_template of the chat written as
    parts, token for token; exactly the replies trained; the user's rows unchanged; ``check`` finds
    no data left out."""
    import json

    from support.tokenizers import shared_dir

    root = shared_dir()
    path = root.parent / "realdata" / "llamafactory" / "mllm_demo.json" if root is not None else None
    if path is None or not path.is_file():
        pytest.skip("../shared/realdata/llamafactory not available")
    rows = json.loads(path.read_text(encoding="utf-8"))
    monkeypatch.chdir(tmp_path)
    for k, image in enumerate(sorted({p for r in rows for p in r["images"]})):  # stand-ins at the files' paths
        (tmp_path / image).parent.mkdir(parents=True, exist_ok=True)
        make_image(48 + 8 * k, 40, seed=k).save(tmp_path / image)
    before = json.dumps(rows)
    processor = build_processor("llava")
    batch = respmask.ResponseOnlyCollator(processor)(rows)
    assert json.dumps(rows) == before
    tok = processor.tokenizer
    for r, row in enumerate(rows):
        real = batch["attention_mask"][r].bool()
        ids, labels = batch["input_ids"][r][real], batch["labels"][r][real]
        ref = processor.apply_chat_template(_llamafactory_reference(row), tokenize=True, return_dict=True)
        assert ids.tolist() == list(ref["input_ids"][0])
        trained = tok.decode(ids[labels != -100])
        replies = [m["content"] for m in row["messages"] if m["role"] == "assistant"]
        assert all(reply in trained for reply in replies), trained
        users = [m["content"].replace("<image>", "") for m in row["messages"] if m["role"] == "user"]
        assert not any(u.strip() in trained for u in users), trained
        assert len(trained) <= len(" ".join(replies)) + len(replies)  # nothing else: at most the template's ' '
    report = respmask.check(rows, processor)
    assert report.trained_tokens > 0 and report.turns == 12 and not report.dropped and not report.untrainable
    assert not report.errors and not report.empty_replies


def test_content_forms_rewrite_only_strings_a_template_leaves_out():
    """The probe behind the test above, on real templates: LLaVA's renders parts alone (every role,
    a tool result's too, reads a string as a part); Qwen2-VL's and Gemma 3's render a string and a
    text part alike; Mllama's system turn reads ``content|trim`` (a part prints as a list) and a
    text template that concatenates content raises on a part: they render strings, so nothing of a
    processor's rows is rewritten there."""
    from respmask._formats import content_forms, with_text_parts
    from respmask._render import ChatTemplate, template_inputs

    def forms(source: str):
        template = ChatTemplate(source)

        def render(messages):
            variables, chat = template_inputs(messages, tools=None, documents=None, add_generation_prompt=False,
                                              constants={"bos_token": "<s>", "eos_token": "</s>"})
            return template.render(variables, chat).text
        return content_forms(render)

    assert forms(build_processor("llava").chat_template).parts == {"system", "user", "assistant", "tool"}
    for family in ("qwen2_vl", "gemma3", "mllama"):
        assert forms(build_processor(family).chat_template).parts == frozenset()
    concatenates = "{% for m in messages %}{{ '[' + m['role'] + '] ' + m['content'] + '\\n' }}{% endfor %}"
    assert forms(concatenates).parts == frozenset()
    only_assistant = ("{% for m in messages %}{% if m['role'] == 'assistant' %}{% for p in m['content'] %}"
                      "{{ p['text'] }}{% endfor %}{% else %}{{ m['content'] }}{% endif %}{% endfor %}")
    assert forms(only_assistant).parts == {"assistant"}
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert with_text_parts(messages, frozenset({"assistant"})) == [messages[0],
                                                                  {"role": "assistant", "content": [_text("b")]}]
    assert messages[1]["content"] == "b" and with_text_parts(messages, frozenset({"system"})) is None
    # a tool result written as a string, on LLaVA: rendered as its text part, never trained
    processor = build_processor("llava")
    chat = [{"role": "user", "content": "Weather zqnonceuser?"}, {"role": "assistant", "content": "Checking zqnonceone."},
            {"role": "tool", "content": "sunny zqnoncetool"}, {"role": "assistant", "content": "Sunny, zqnoncetwo."}]
    enc = respmask.ChatMasker(processor).process_batch([{"messages": chat}], return_tensors="np")[1][0]
    parts = [{**m, "content": [_text(m["content"])]} for m in chat]
    assert enc.input_ids.tolist() == _reference_ids(processor, parts)
    trained = processor.tokenizer.decode(enc.input_ids[enc.labels != -100])
    assert "zqnonceone" in trained and "zqnoncetwo" in trained
    assert "zqnoncetool" not in trained and "zqnonceuser" not in trained and not enc.lost_data
