"""Speech in, text out: chats with audio through ``ResponseOnlyCollator(processor)``, offline.

Each family is its real transformers processor class with its real chat template, built by
``tests/support/audio.py`` (feature extractors from their classes, tokenizers trained in the session
with the family's tokens added; no hub, no shared files): Qwen2-Audio (with two revisions of its
template), Gemma 3n (audio and images in one processor) and Audio Flamingo 3.

What every conversation checks, through ``ChatMasker.process_batch`` and through the collator with
the audio in an ``audios`` column: ``input_ids`` equal ``processor.apply_chat_template(messages,
tokenize=True, return_dict=True)`` token for token (the audio features too); every assistant nonce
is trained and no system or user nonce; no audio token (placeholder, marker or expansion) is
trained; each reply ends with its stop token, trained. Conversations: text only, one clip, two clips
in one user turn (where the template renders two), two clips in two turns, clips of different
lengths, and for Gemma 3n audio and an image in one conversation.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
pytest.importorskip("torch")

import respmask  # noqa: E402
from respmask import SampleError  # noqa: E402
from support.audio import AUDIO_TOKENS, FAMILIES, STOP, audio_token_ids, build_processor, make_audio  # noqa: E402
from support.conversations import Nonces  # noqa: E402

# Audio Flamingo 3: its template writes one <sound> per message, and its processor takes exactly one
# clip per text of a batch (it raises "Got 1 text but 2 audios; they must match 1:1" otherwise, from
# apply_chat_template too): one clip per conversation, and batches of rows that all hold one
ONE_CLIP_PER_CHAT = {"audioflamingo3"}
# the audio features each family's processor returns
FEATURES = {"qwen2_audio": ("input_features", "feature_attention_mask"),
            "qwen2_audio_2024": ("input_features", "feature_attention_mask"),
            "gemma3n": ("input_features", "input_features_mask"),
            "audioflamingo3": ("input_features", "input_features_mask")}

LENGTHS = [1.0, 2.5, 0.6]  # seconds


def _text(value: str) -> dict:
    return {"type": "text", "text": value}


def conversations(name: str) -> list[tuple[str, list[dict], Nonces]]:
    """(label, messages, nonces) for every shape the family's template renders."""
    out = []
    shapes = ["text", "one_clip", "clip_in_second_turn", "clip_in_reply"]
    if name not in ONE_CLIP_PER_CHAT:
        shapes += ["two_clips_two_turns", "two_clips_one_turn"]
    if name == "gemma3n":
        shapes.append("clip_and_image")
    for shape in shapes:
        nn = Nonces()
        clips = iter([make_audio(s, seed=k) for k, s in enumerate(LENGTHS)])

        def clip() -> dict:
            return {"type": "audio", "audio": next(clips)}

        first: list[dict] = []
        second: list[dict] = []
        if shape in ("one_clip", "two_clips_two_turns", "clip_and_image"):
            first = [clip()]
        if shape == "two_clips_one_turn":
            first = [clip(), clip()]
        if shape in ("two_clips_two_turns", "clip_in_second_turn"):
            second = [clip()]
        if shape == "clip_and_image":
            from support.vision import make_image

            first.append({"type": "image", "image": make_image(64, 48)})
        if shape == "clip_in_reply":  # every template here renders an audio part in any role's content
            reply = [_text(f"It says {nn('AST', 2)} like"), clip()]
        else:
            reply = [_text(f"It says {nn('AST', 2)} indeed.")]
        msgs = [{"role": "system", "content": [_text(f"Be brief {nn('SYS', 0)}.")]},
                {"role": "user", "content": [*first, _text(f"What {nn('USR', 1)} is said?")]},
                {"role": "assistant", "content": reply},
                {"role": "user", "content": [*second, _text(f"And {nn('USR', 3)}?")]},
                {"role": "assistant", "content": [_text(f"Also {nn('AST', 4)} there.")]}]
        out.append((f"{shape} (parts)", msgs, nn))
    nn = Nonces()
    strings = [{"role": "system", "content": f"Be brief {nn('SYS', 0)}."},
               {"role": "user", "content": f"What {nn('USR', 1)} is said?"},
               {"role": "assistant", "content": f"It says {nn('AST', 2)} indeed."}]
    out.append(("text (strings)", strings, nn))
    return out


def _clips(messages: list[dict]) -> list[Any]:
    return [next(p[k] for k in ("audio", "path") if k in p) for m in messages if isinstance(m["content"], list)
            for p in m["content"] if p.get("type") == "audio"]


def _reference(processor: Any, messages: list[dict]) -> Any:
    return processor.apply_chat_template(messages, tokenize=True, return_dict=True)


def _check_row(name: str, label: str, messages: list[dict], nn: Nonces, ids: np.ndarray, labels: np.ndarray) -> None:
    processor = build_processor(name)
    tok = processor.tokenizer
    where = f"{name} / {label}"
    reference = np.asarray(_reference(processor, messages)["input_ids"]).reshape(-1)
    assert ids.tolist() == reference.tolist(), f"{where}: ids differ from the processor's"
    trained = labels != -100
    assert (labels[trained] == ids[trained]).all()
    text = tok.decode(ids[trained].tolist())
    replies = {w for w, k in nn.kinds.items() if k == "AST"}
    assert {w for w in nn.kinds if w in text} == replies, f"{where}: {text!r}"
    audio = audio_token_ids(name)
    n_clips = len(_clips(messages))
    assert bool(np.isin(ids, audio).any()) == (n_clips > 0), f"{where}: audio tokens in the ids"
    if n_clips:  # each clip expands into many tokens: the expansion is in the ids, and none is trained
        assert int(np.isin(ids, audio).sum()) > 10 * n_clips, where
    assert not np.isin(ids[trained], audio).any(), f"{where}: an audio token is trained"
    # each reply is one trained run that ends with the family's stop token, or two where a clip in
    # the reply splits it (the untrained stretch between holds the clip's tokens)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], trained.astype(np.int8), [0]])))
    runs = list(zip(edges[::2], edges[1::2]))
    shown = [tok.decode(ids[a:b]) for a, b in runs]
    n_replies = sum(m["role"] == "assistant" for m in messages)
    in_replies = sum(len(_clips([m])) for m in messages if m["role"] == "assistant")
    assert n_replies <= len(runs) <= n_replies + in_replies, f"{where}: {shown}"
    stop = tok.convert_tokens_to_ids(STOP[name])
    stops = [int(ids[b - 1]) == stop for _, b in runs]
    assert sum(stops) == n_replies and stops[-1], f"{where}: {shown}"
    for (_, b), (a, _), ends in zip(runs, runs[1:], stops):
        assert ends or np.isin(ids[b:a], audio).sum() > 10, f"{where}: {shown}"


@pytest.mark.parametrize("name", FAMILIES)
def test_media_tokens_are_learned_from_the_processor(name):
    processor = build_processor(name)
    learned = set(respmask.ChatMasker(processor).media_tokens().tolist())
    assert set(audio_token_ids(name)) <= learned, [processor.tokenizer.convert_ids_to_tokens(i) for i in learned]
    # nothing a reply or a turn is made of: the chat tokens are not media tokens
    assert processor.tokenizer.convert_tokens_to_ids(STOP[name]) not in learned


@pytest.mark.parametrize("name", FAMILIES)
def test_chat_masker_matches_the_processor(name):
    processor = build_processor(name)
    masker = respmask.ChatMasker(processor)
    for label, messages, nn in conversations(name):
        batch, rows = masker.process_batch([{"messages": messages}], return_tensors="np")
        _check_row(name, label, messages, nn, rows[0].input_ids, rows[0].labels)
        reference = _reference(processor, messages)
        for key in FEATURES[name]:  # the audio reaches the model as the processor prepares it
            if _clips(messages):
                assert np.array_equal(np.asarray(batch[key]), np.asarray(reference[key])), f"{name} / {label}: {key}"
            else:
                assert key not in batch, f"{name} / {label}: {key} without audio"


@pytest.mark.parametrize("name", FAMILIES)
def test_collator_with_an_audios_column(name):
    processor = build_processor(name)
    collator = respmask.ResponseOnlyCollator(processor, return_tensors="np")
    convs = conversations(name)
    rows = []
    for _, messages, _ in convs:
        # the same conversation with bare audio parts and the clips in an 'audios' column
        bare = [{**m, "content": [{"type": "audio"} if p.get("type") == "audio" else p for p in m["content"]]}
                if isinstance(m["content"], list) else m for m in messages]
        rows.append({"messages": bare, "audios": _clips(messages)})
    before = [[dict(p) for p in m["content"]] if isinstance(m["content"], list) else m["content"]
              for r in rows for m in r["messages"]]
    groups = [list(range(len(rows)))]
    if name in ONE_CLIP_PER_CHAT:  # the processor takes a batch only if every row holds one clip, or none does
        groups = [[r for r, row in enumerate(rows) if row["audios"]], [r for r, row in enumerate(rows) if not row["audios"]]]
    for group in groups:
        with warnings.catch_warnings():
            warnings.simplefilter("error", respmask.RespmaskWarning)
            batch = collator([rows[r] for r in group])
        ids = np.asarray(batch["input_ids"])
        real = np.asarray(batch["attention_mask"]).astype(bool)
        assert ids.shape[0] == len(group) and batch["labels"].shape == ids.shape
        assert (batch["labels"][~real] == -100).all()
        for k, r in enumerate(group):
            label, messages, nn = convs[r]
            _check_row(name, label, messages, nn, ids[k][real[k]], batch["labels"][k][real[k]])
        n_clips = sum(len(rows[r]["audios"]) for r in group)
        if n_clips:  # every clip of the batch reached the model
            assert len(np.asarray(batch[FEATURES[name][1]])) >= n_clips
    assert collator.stats.samples == len(convs) and collator.stats.untrainable == 0
    assert collator.stats.turns_without_stop == 0
    after = [[dict(p) for p in m["content"]] if isinstance(m["content"], list) else m["content"]
             for r in rows for m in r["messages"]]
    assert after == before, "the rows were modified (an audio part given its clip in place)"


def test_audio_parts_by_path_are_decoded_as_apply_chat_template_decodes_them(tmp_path):
    sf = pytest.importorskip("soundfile")
    pytest.importorskip("soxr")  # transformers.audio_utils.load_audio needs both
    processor = build_processor("qwen2_audio")
    clip = make_audio(1.5, seed=7)
    path = tmp_path / "clip.wav"
    sf.write(path, clip, 16000, subtype="FLOAT")
    nn = Nonces()
    messages = [{"role": "user", "content": [{"type": "audio", "path": str(path)}, _text(f"Who {nn('USR', 0)}?")]},
                {"role": "assistant", "content": f"Me {nn('AST', 1)}."}]
    batch, rows = respmask.ChatMasker(processor).process_batch([{"messages": messages}], return_tensors="np")
    _check_row("qwen2_audio", "path", messages, nn, rows[0].input_ids, rows[0].labels)
    reference = _reference(processor, messages)
    assert np.array_equal(np.asarray(batch["input_features"]), np.asarray(reference["input_features"]))


def test_datasets_audio_dicts_and_their_sampling_rate():
    processor = build_processor("qwen2_audio")
    masker = respmask.ChatMasker(processor)
    nn = Nonces()
    clip = make_audio(1.0, seed=3)
    messages = [{"role": "user", "content": [{"type": "audio"}, _text(f"Who {nn('USR', 0)}?")]},
                {"role": "assistant", "content": f"Me {nn('AST', 1)}."}]
    # a datasets Audio column decodes to {"array", "sampling_rate", "path"}
    row = {"messages": messages, "audios": [{"array": clip, "sampling_rate": 16000, "path": None}]}
    _, rows = masker.process_batch([row], return_tensors="np")
    inline = [{**messages[0], "content": [{"type": "audio", "audio": clip}, messages[0]["content"][1]]}, messages[1]]
    _check_row("qwen2_audio", "datasets dict", inline, nn, rows[0].input_ids, rows[0].labels)
    wrong = {**row, "audios": [{"array": clip, "sampling_rate": 44100}]}
    with pytest.raises(SampleError, match=r"sample 0: 'audios'\[0\] is sampled at 44100 Hz but the processor expects "
                                          r"16000 Hz; resample it first"):
        masker.process_batch([wrong])
    with pytest.raises(SampleError, match=r"sample 0: message 0's audio is a URL"):
        masker.process_batch([{"messages": [{"role": "user", "content": [{"type": "audio", "url": "https://x/a.wav"}]},
                                            {"role": "assistant", "content": "y"}]}])
    with pytest.raises(SampleError, match=r"sample 0: has 1 audio part\(s\) in its messages but 2 item\(s\) in 'audios'"):
        masker.process_batch([{**row, "audios": [clip, clip]}])


def test_llama_factory_audio_placeholders():
    """LLaMA-Factory's audio rows: '<audio>' in the text and an 'audios' column, one clip per placeholder."""
    processor = build_processor("qwen2_audio_2024")
    nn = Nonces()
    clips = [make_audio(1.0, seed=1), make_audio(0.7, seed=2)]
    row = {"messages": [{"role": "user", "content": f"<audio>What {nn('USR', 0)}?"},
                        {"role": "assistant", "content": f"A {nn('AST', 1)}."},
                        {"role": "user", "content": f"<audio>And {nn('USR', 2)}?"},
                        {"role": "assistant", "content": f"B {nn('AST', 3)}."}],
           "audios": clips}
    batch = respmask.ResponseOnlyCollator(processor, return_tensors="np")([row])
    inline = [{"role": "user", "content": [{"type": "audio", "audio": clips[0]}, _text(f"What {list(nn.kinds)[0]}?")]},
              row["messages"][1],
              {"role": "user", "content": [{"type": "audio", "audio": clips[1]}, _text(f"And {list(nn.kinds)[2]}?")]},
              row["messages"][3]]
    _check_row("qwen2_audio_2024", "llama-factory", inline, nn, batch["input_ids"][0], batch["labels"][0])
    assert row["messages"][0]["content"].startswith("<audio>")  # the row is not modified


def test_audio_placeholders_that_do_not_pair_up_name_the_row():
    processor = build_processor("qwen2_audio")
    clip = {"array": make_audio(1.0, seed=1), "sampling_rate": 16000}
    good = {"messages": [{"role": "user", "content": "<audio>What is said?"}, {"role": "assistant", "content": "Hi."}],
            "audios": [clip]}
    two = {**good, "messages": [{"role": "user", "content": "<audio><audio>Compare."}, good["messages"][1]]}
    none = {**good, "messages": [{"role": "user", "content": "What is said?"}, good["messages"][1]]}
    collator = respmask.ResponseOnlyCollator(processor, return_tensors="np")
    with pytest.raises(SampleError, match=r"^sample 1: has 2 '<audio>' placeholder\(s\) in its messages but 1 "
                                          r"item\(s\) in 'audios': each audio part, or '<audio>' placeholder, takes"):
        collator([good, two])
    report = respmask.check([good, two, none], processor)
    assert [i for i, _ in report.errors] == [1, 2]
    assert "has no audio part and no '<audio>' placeholder in its messages" in report.errors[1][1]


def test_a_relative_audio_path_that_is_no_file_says_where_it_was_looked_for(tmp_path, monkeypatch):
    import os

    monkeypatch.chdir(tmp_path)
    row = {"messages": [{"role": "user", "content": "<audio>What is said?"}, {"role": "assistant", "content": "Hi."}],
           "audios": ["clips/a.wav"]}
    with pytest.raises(SampleError) as info:
        respmask.ResponseOnlyCollator(build_processor("qwen2_audio"))([row])
    assert str(info.value).startswith(
        f"sample 0: 'audios'[0]: no such audio file 'clips/a.wav': a relative path is read from the current directory "
        f"({os.getcwd()}: tried {os.path.join(os.getcwd(), 'clips', 'a.wav')}); the respmask command also tries the "
        "data file's folder. Run from the folder the paths are relative to, or make them absolute"), str(info.value)


def test_audio_with_a_processor_that_takes_none_is_refused_and_text_tokenizers_refuse_audio():
    from support.vision import build_processor as vision_processor

    processor = vision_processor("qwen2_vl")
    row = {"messages": [{"role": "user", "content": [{"type": "audio", "audio": make_audio(0.5)}]},
                        {"role": "assistant", "content": "y"}]}
    with pytest.raises(SampleError, match=r"message 0 holds audio, which this processor \(Qwen2VLProcessorNoVideo\) "
                                          r"does not take \(it has no audio_processor or feature_extractor\)"):
        respmask.ResponseOnlyCollator(processor)([row])
    with pytest.raises(SampleError, match=r"its 'audios' column holds audio, which this processor"):
        respmask.ResponseOnlyCollator(processor)([{"messages": [{"role": "user", "content": "x"},
                                                                {"role": "assistant", "content": "y"}],
                                                   "audios": [make_audio(0.5)]}])
    with pytest.raises(SampleError, match=r"holds audio \(1 item in its 'audios' column\), which a text tokenizer"):
        respmask.ResponseOnlyCollator(build_processor("qwen2_audio").tokenizer)(
            [{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
              "audios": [make_audio(0.5)]}])


def test_long_audio_chats_are_cut_before_the_clip_not_through_it():
    processor = build_processor("qwen2_audio")
    _, messages, _ = conversations("qwen2_audio")[1]
    collator = respmask.ResponseOnlyCollator(processor, max_length=40, return_tensors="np", on_untrainable="keep")
    batch = collator([{"messages": messages}])
    # the clip's tokens would cross the cut: it is dropped with its text (tests/test_audio_truncation.py
    # checks such cuts against the processor's own call)
    ids = batch["input_ids"][0]
    assert len(ids) <= 40 and not np.isin(ids, audio_token_ids("qwen2_audio")).any()
    assert "input_features" not in batch
    assert collator.stats.audio_dropped == 1 and collator.stats.truncated == 1
    # within max_length nothing is cut and the row is the processor's
    n = len(np.asarray(_reference(processor, messages)["input_ids"]).reshape(-1))
    batch = respmask.ResponseOnlyCollator(processor, max_length=n, return_tensors="np")([{"messages": messages}])
    assert batch["input_ids"].shape == (1, n)


# -- a real Trainer run on a tiny speech model ---------------------------------------------------------


def _manual_loss(model: Any, batch: dict) -> Any:
    import torch

    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    labels = batch["labels"]
    shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    return torch.nn.functional.cross_entropy(shift_logits, labels[:, 1:].reshape(-1), ignore_index=-100)


@pytest.mark.slow
def test_trainer_on_a_tiny_qwen2_audio_model(tmp_path):
    """ResponseOnlyCollator(processor) feeds transformers.Trainer on a tiny randomly initialised
    Qwen2AudioForConditionalGeneration: clips from a datasets 'audios' column reach the audio tower,
    the loss is the model's own on respmask's labels (the replies, never the audio), finite, and falls."""
    import math

    import torch

    datasets = pytest.importorskip("datasets")
    from support.audio import tiny_qwen2_audio

    processor = build_processor("qwen2_audio")
    model = tiny_qwen2_audio(processor)
    collator = respmask.ResponseOnlyCollator(processor)
    words = ["yes", "no", "maybe", "later"]
    rows = [{"messages": [{"role": "user", "content": [{"type": "audio"}, _text(f"what is said in clip {i}")]},
                          {"role": "assistant", "content": [_text(f"{words[i % 4]} it says")]}],
             "audios": [make_audio(0.4 + 0.2 * (i % 3), seed=i)]} for i in range(8)]
    ds = datasets.Dataset.from_list(rows)
    batch = collator([ds[i] for i in range(4)])
    tok = processor.tokenizer
    audio = torch.tensor(audio_token_ids("qwen2_audio"))
    labels, ids = batch["labels"], batch["input_ids"]
    assert batch["input_features"].shape[0] == 4 and torch.isin(ids, audio).sum() > 40
    assert not torch.isin(labels[labels != -100], audio).any()
    for r in range(4):  # exactly the reply and its end-of-turn token are trained
        assert tok.decode(labels[r][labels[r] != -100]) == f"{words[r % 4]} it says<|im_end|>"
    model.eval()
    with torch.no_grad():
        loss = model(**batch).loss
    assert math.isfinite(loss.item()) and torch.allclose(loss, _manual_loss(model, batch), atol=1e-4)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=8, learning_rate=1e-2, logging_steps=1,
        report_to=[], use_cpu=True, save_strategy="no", seed=0, disable_tqdm=True, remove_unused_columns=False)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=ds, data_collator=collator)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 8 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert collator.stats.samples >= 8 * 4 and collator.stats.untrainable == 0


@pytest.mark.slow
# the block runs as written, so with dataloader_pin_memory=True on this CPU (a note about the machine)
@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true but no accelerator:UserWarning")
def test_readme_speech_block_runs_as_written(tmp_path, monkeypatch):
    """README's "Chats with speech" block, read from README.md and run as written on a tiny Qwen2-Audio."""
    datasets = pytest.importorskip("datasets")
    from support.audio import tiny_qwen2_audio
    from test_recipes import python_blocks, run

    [(_, code)] = python_blocks("Chats with speech (audio in, text out)")
    processor = build_processor("qwen2_audio")
    rows = [{"messages": [{"role": "user", "content": [{"type": "audio"}, _text(f"what is said in clip {i}")]},
                          {"role": "assistant", "content": [_text(f"{['yes', 'no'][i % 2]} it says")]}],
             "audios": [make_audio(0.5, seed=i)]} for i in range(8)]
    ns = run(code, tmp_path, monkeypatch, processor=processor, model=tiny_qwen2_audio(processor),
             ds=datasets.Dataset.from_list(rows))
    trainer, collator = ns["trainer"], ns["collator"]
    assert trainer.state.global_step == 4
    losses = [h["train_loss"] for h in trainer.state.log_history if "train_loss" in h]
    assert len(losses) == 1 and np.isfinite(losses[0])
    assert collator.stats.samples == 16 and collator.stats.untrainable == 0


@pytest.mark.parametrize("embedded", [False, True])
def test_a_datasets_audio_column_without_decoding(tmp_path, embedded):
    """datasets' Audio(decode=False) gives {"bytes", "path"} (bytes once embedded): decoded as
    apply_chat_template decodes a file. (A decoding Audio column needs torchcodec and FFmpeg, which
    are not here.)"""
    datasets = pytest.importorskip("datasets")
    sf = pytest.importorskip("soundfile")
    pytest.importorskip("soxr")
    processor = build_processor("qwen2_audio")
    clip = make_audio(1.2, seed=11)
    path = tmp_path / "clip.wav"
    sf.write(path, clip, 16000, subtype="FLOAT")
    nn = Nonces()
    parts = [{"type": "audio"}, _text(f"Who {nn('USR', 0)}?")]
    reply = [_text(f"Me {nn('AST', 1)}.")]
    value = {"bytes": path.read_bytes(), "path": None} if embedded else {"bytes": None, "path": str(path)}
    ds = datasets.Dataset.from_list([{"messages": [{"role": "user", "content": parts},
                                                   {"role": "assistant", "content": reply}], "audios": [value]}])
    ds = ds.cast_column("audios", datasets.List(datasets.Audio(decode=False)))
    batch = respmask.ResponseOnlyCollator(processor, return_tensors="np")([ds[0]])
    inline = [{"role": "user", "content": [{"type": "audio", "audio": clip}, parts[1]]},
              {"role": "assistant", "content": reply}]
    _check_row("qwen2_audio", "datasets Audio(decode=False)", inline, nn, batch["input_ids"][0], batch["labels"][0])
    reference = _reference(processor, inline)
    assert np.array_equal(batch["input_features"], np.asarray(reference["input_features"]))


def test_llama_factory_audio_rows_with_files_through_check_processor(tmp_path, monkeypatch, capsys):
    """LLaMA-Factory's mllm_audio_demo layout (sharegpt 'messages' with '<audio>' placeholders, an
    'audios' column of file paths relative to the data) through ``respmask check --processor DIR``
    with a processor saved by save_pretrained: its token counts are the processor's own."""
    sf = pytest.importorskip("soundfile")
    pytest.importorskip("soxr")
    import json

    from respmask._cli import main

    build_processor("qwen2_audio").save_pretrained(tmp_path / "processor")
    processor = transformers.AutoProcessor.from_pretrained(tmp_path / "processor")
    monkeypatch.chdir(tmp_path)
    rows, inline = [], []
    for i, seconds in enumerate([1.0, 2.0, 0.5]):
        clip = make_audio(seconds, seed=20 + i)
        sf.write(tmp_path / f"clip{i}.wav", clip, 16000, subtype="FLOAT")
        rows.append({"messages": [{"role": "user", "content": "<audio>What is said?"},
                                  {"role": "assistant", "content": f"Answer {i}."}], "audios": [f"clip{i}.wav"]})
        inline.append([{"role": "user", "content": [{"type": "audio", "audio": clip}, _text("What is said?")]},
                       {"role": "assistant", "content": f"Answer {i}."}])
    (tmp_path / "data.json").write_text(json.dumps(rows))
    tokens = sum(len(np.asarray(_reference(processor, m)["input_ids"]).reshape(-1)) for m in inline)
    assert main(["check", "data.json", "--processor", "processor"]) == 0
    out = capsys.readouterr().out
    assert f"tokens:             {tokens}" in out and "trained turns:      3" in out and "errors:             0" in out
    # a length the rows exceed: each is cut before its clip (dropped with its text), the replies with it
    assert main(["check", "data.json", "--processor", "processor", "--max-length", "40"]) == 1
    out = capsys.readouterr().out
    eos = processor.tokenizer.convert_tokens_to_ids("<|audio_eos|>")
    crossing = [i for i, m in enumerate(inline)  # the clips whose tokens end past the cut
                if np.flatnonzero(np.asarray(_reference(processor, m)["input_ids"]).reshape(-1) == eos)[0] >= 40]
    assert 0 < len(crossing) < 3
    assert "truncated to 40: 3 sample(s)" in out
    assert (f"audio clips dropped with the text cut: {len(crossing)} from {len(crossing)} sample(s)  "
            f"[{', '.join(map(str, crossing))}]") in out
    assert "errors:             0" in out


@pytest.mark.parametrize("name", ["qwen2_audio", "gemma3n"])
def test_preview_and_check_count_the_expanded_audio(name):
    processor = build_processor(name)
    _, messages, _ = next(c for c in conversations(name) if c[0] == "two_clips_two_turns (parts)")
    ids = np.asarray(_reference(processor, messages)["input_ids"]).reshape(-1)
    report = respmask.check([{"messages": messages}], processor)
    assert report.ok and report.tokens == len(ids) and report.turns == 2
    shown = str(respmask.preview({"messages": messages}, tokenizer=processor))
    tok = processor.tokenizer
    expansion = AUDIO_TOKENS[name][1]  # the token a clip expands into
    runs = [int(n) for n in re.findall(rf"\[{re.escape(expansion)} ×(\d+)\]", shown)]
    expanded = ids == tok.convert_tokens_to_ids(expansion)
    starts = np.flatnonzero(expanded & ~np.concatenate([[False], expanded[:-1]]))
    assert len(runs) == 2 and sum(runs) == int(expanded.sum()) and len(starts) == 2, shown


def test_a_template_without_audio_parts_still_masks_images():
    """A processor with a feature extractor whose chat template cannot render an audio part: the
    image tokens are still learned (the audio probe is skipped), and a row holding audio meets the
    template's own error."""
    import copy

    from support.vision import make_image

    processor = copy.copy(build_processor("gemma3n"))
    hook = "{%- if item['type'] == 'audio' -%}"
    assert processor.chat_template.count(hook) == 1
    processor.chat_template = processor.chat_template.replace(hook, hook + "{{ raise_exception('no audio here') }}")
    masker = respmask.ChatMasker(processor)
    tok = processor.tokenizer
    learned = {tok.convert_ids_to_tokens(int(i)) for i in masker.media_tokens()}
    assert learned == {"<start_of_image>", "<image_soft_token>", "<end_of_image>"}
    nn = Nonces()
    messages = [{"role": "user", "content": [{"type": "image", "image": make_image(64, 48)},
                                             _text(f"What {nn('USR', 0)}?")]},
                {"role": "assistant", "content": [_text(f"A {nn('AST', 1)}.")]}]
    _, rows = masker.process_batch([{"messages": messages}], return_tensors="np")
    ref = np.asarray(processor.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]).reshape(-1)
    assert rows[0].input_ids.tolist() == ref.tolist()
    assert tok.decode(rows[0].input_ids[rows[0].labels != -100]).strip() == f"A {list(nn.kinds)[1]}.<end_of_turn>"
    with pytest.raises(SampleError, match="no audio here"):
        masker.process_batch([{"messages": [{"role": "user", "content": [{"type": "audio", "audio": make_audio(0.5)}]},
                                            {"role": "assistant", "content": "y"}]}])


def test_padding_free_rows_of_audio_chats_give_each_sample_its_padded_logits():
    """``padding_free=True`` with an audio processor: the collator probes it with audio chats (not
    images it does not take), the tiny Qwen2-Audio model accepts the row, and each sample's logits
    and the loss are those of its padded row; the clips' features stay one per clip, in order."""
    import torch

    from support.audio import tiny_qwen2_audio

    processor = build_processor("qwen2_audio")
    model = tiny_qwen2_audio(processor).eval()
    rows = [{"messages": [{"role": "user", "content": [{"type": "audio", "audio": make_audio(1.0 + 0.5 * i, seed=i)},
                                                        _text("what is it" + " now" * i)]},
                          {"role": "assistant", "content": [_text("a cat purring " * (i + 1))]}]} for i in range(3)]
    padded = respmask.ResponseOnlyCollator(processor)(rows)
    free = respmask.ResponseOnlyCollator(processor, padding_free=True, model=model)(rows)
    real = padded["attention_mask"].bool()
    assert free["input_ids"][0].tolist() == torch.cat([padded["input_ids"][r][real[r]] for r in range(3)]).tolist()
    assert torch.equal(free["input_features"], padded["input_features"]) and free["input_features"].shape[0] == 3
    assert not np.isin(free["labels"][0].numpy(), audio_token_ids("qwen2_audio")).any()
    cu = free["cu_seq_lens_q"].tolist()
    with torch.no_grad():
        lp, lf = model(**padded), model(**free)
    diffs = [float((lp.logits[r][real[r]] - lf.logits[0][cu[r]:cu[r + 1]]).abs().max()) for r in range(3)]
    assert max(diffs) < 1e-5, diffs
    assert abs(float(lp.loss) - float(lf.loss)) < 1e-5 * abs(float(lp.loss))
