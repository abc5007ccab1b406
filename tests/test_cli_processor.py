"""``respmask check / preview --processor DIR``: rows with images through a processor saved with
``save_pretrained`` and loaded by ``AutoProcessor`` (issue 28 item 1's "check with --max-length
reports it for image datasets as it does for text").

The processor is LLaVA-1.5's (``LlavaImageProcessorPil``, the Llama 2 vocabulary with ``<image>``,
LLaVA's template, see tests/support/vision.py), saved to tmp_path. The rows are JSON with image
files on disk. The reference for what a cut drops is the collator on the same rows with the same
processor: the images left in each row's ids (one run of ``<image>`` tokens per image) against the
images given.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
pytest.importorskip("PIL")

import respmask  # noqa: E402
from respmask._cli import main  # noqa: E402
from support.vision import build_processor, make_image  # noqa: E402

ANIMALS = ["cat", "dog", "bird", "fish"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A LLaVA processor saved to a directory, that directory, and rows (JSON) with image files."""
    root = tmp_path_factory.mktemp("cli_processor")
    build_processor("llava", tiny=True).save_pretrained(root / "processor")
    # the reference runs on the processor the command loads (the Llama 2 tokenizer does not tokenize
    # every text exactly as it did before the round trip through save_pretrained)
    processor = transformers.AutoProcessor.from_pretrained(root / "processor")
    rows = []
    for i, n_images in enumerate([3, 1, 0, 2]):
        paths = []
        for k in range(n_images):
            path = root / f"img_{i}_{k}.png"
            make_image(40 + 8 * k, 32, seed=10 * i + k).save(path)
            paths.append(str(path))
        messages = []
        for k in range(max(n_images, 1)):
            content = ([{"type": "image"}] if n_images else []) + [
                {"type": "text", "text": f"What is in picture {k}? Describe it in a few words."}]
            messages += [{"role": "user", "content": content},
                         {"role": "assistant", "content": [  # LLaVA's template reads content parts only
                             {"type": "text", "text": f"A {ANIMALS[(i + k) % 4]} sitting in the afternoon sun."}]}]
        rows.append({"messages": messages, "images": paths})
    data = root / "data.json"
    data.write_text(json.dumps(rows))
    return processor, root / "processor", data, rows


def collator_reference(processor, rows, max_length):
    """Per row, the images the collator keeps under ``max_length`` (and whether it truncated)."""
    collator = respmask.ResponseOnlyCollator(processor, max_length=max_length, return_tensors="np")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", respmask.RespmaskWarning)
        batch = collator([dict(r) for r in rows])
    image = np.asarray(batch["input_ids"]) == processor.tokenizer.convert_tokens_to_ids("<image>")
    kept = (image[:, 1:] & ~image[:, :-1]).sum(axis=1) + image[:, 0]  # runs of image tokens
    return kept, collator.stats


def test_check_with_a_saved_processor_reports_images_cut(saved, capsys):
    processor, directory, data, rows = saved
    lengths = [len(respmask.ChatMasker(processor).process_batch([r], return_tensors="np")[1][0].input_ids)
               for r in rows]
    max_length = sorted(lengths)[-2] // 2  # the two longest rows (3 and 2 images) are cut through their images
    kept, stats = collator_reference(processor, rows, max_length)
    given = np.array([len(r["images"]) for r in rows])
    dropped = given - kept
    assert dropped.sum() >= 2 and stats.images_dropped == dropped.sum()  # the cut does drop images
    cut_rows = [i for i, n in enumerate(dropped) if n]
    code = main(["check", str(data), "--processor", str(directory), "--max-length", str(max_length)])
    out = capsys.readouterr().out
    assert f"({type(processor).__name__}: processor" in out.splitlines()[0]
    assert f"truncated to {max_length}: {stats.truncated} sample(s)" in out
    assert (f"images dropped with the text cut: {dropped.sum()} from {len(cut_rows)} sample(s)  "
            f"[{', '.join(map(str, cut_rows))}]") in out
    assert code == (0 if "OK" in out.splitlines()[-1] else 1)
    # JSON: the same counts
    assert main(["check", str(data), "--processor", str(directory), "--max-length", str(max_length), "--json"]) in (0, 1)
    report = json.loads(capsys.readouterr().out)
    assert report["images_dropped"] == dropped.sum() and sorted(report["image_cut"]) == cut_rows
    # on_image_cut='drop': the rows whose cut would drop images are left out instead
    main(["check", str(data), "--processor", str(directory), "--max-length", str(max_length), "--on-image-cut",
          "drop"])
    out = capsys.readouterr().out
    assert (f"left out (on_image_cut='drop': truncation would drop images): {len(cut_rows)} sample(s)  "
            f"[{', '.join(map(str, cut_rows))}]") in out
    # no cut: every image kept, nothing truncated
    main(["check", str(data), "--processor", str(directory), "--max-length", str(max(lengths))])
    out = capsys.readouterr().out
    assert f"truncated to {max(lengths)}: 0 sample(s)" in out and "images dropped" not in out
    assert f"tokens:             {sum(lengths)}" in out  # every row whole, images expanded as the model sees them


def test_the_same_dataset_with_the_tokenizer_alone_is_refused(saved, capsys):
    # the tokenizer alone cannot use the images: an error per row (and a note that the directory holds a processor)
    _, directory, data, rows = saved
    assert main(["check", str(data), "--tokenizer", str(directory)]) == 1
    captured = capsys.readouterr()
    assert f"--processor {directory}" in captured.err
    assert "which a text tokenizer cannot use" in captured.out
    assert f"errors:             {sum(1 for r in rows if r['images'])}" in captured.out


def test_preview_with_a_saved_processor(saved, capsys):
    processor, directory, data, _ = saved
    assert main(["preview", str(data), "--processor", str(directory), "--no-color", "-n", "1"]) == 0
    out = capsys.readouterr().out
    assert "⟦" in out  # the replies trained
    assert out.count("<image> ×") == 3  # the first row's three images, each one collapsed run


def test_relative_image_paths_are_read_next_to_the_data_file(saved, tmp_path, monkeypatch, capsys):
    # LLaMA-Factory's mllm_demo.json names its images relative to its own folder ("mllm_demo_data/1.jpg")
    import os
    import shutil
    from pathlib import Path

    processor, directory, data, rows = saved
    folder, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    (folder / "imgs").mkdir(parents=True)
    elsewhere.mkdir()
    relative = []
    for row in rows:
        for path in row["images"]:
            shutil.copy(path, folder / "imgs" / Path(path).name)
        relative.append({**row, "images": [f"imgs/{Path(p).name}" for p in row["images"]]})
    (folder / "rel.json").write_text(json.dumps(relative))
    monkeypatch.chdir(elsewhere)
    assert main(["check", str(data), "--processor", str(directory), "--json"]) == 0
    expected = json.loads(capsys.readouterr().out)
    # the command reads a path that is no file in the current directory from the data file's folder
    assert main(["check", str(folder / "rel.json"), "--processor", str(directory), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == expected
    # the API reads it from the current directory, and says so with the path it tried
    report = respmask.check(relative, processor)
    tried = os.path.join(str(elsewhere), "imgs", "img_0_0.png")
    assert report.errors[0] == (0, (
        f"sample 0: 'images'[0]: no such image file 'imgs/img_0_0.png': a relative path is read from the current "
        f"directory ({elsewhere}: tried {tried}); the respmask command also tries the data file's folder. Run "
        "from the folder the paths are relative to, or make them absolute"))
    assert [i for i, _ in report.errors] == [i for i, r in enumerate(rows) if r["images"]]
    monkeypatch.chdir(folder)
    assert respmask.check(relative, processor).ok
    # a path found in neither folder: both named
    monkeypatch.chdir(elsewhere)
    (folder / "imgs" / "img_0_0.png").unlink()
    assert main(["check", str(folder / "rel.json"), "--processor", str(directory)]) == 1
    out = capsys.readouterr().out
    assert (f"sample 0: 'images'[0]: no such image file 'imgs/img_0_0.png': a relative path is read from the current "
            f"directory ({elsewhere}: tried {tried}), then from the data file's folder "
            f"(tried {folder / 'imgs' / 'img_0_0.png'}). Run from the folder") in out


def test_processor_flag_errors(saved, tmp_path, capsys):
    _, directory, data, _ = saved
    assert main(["check", str(data), "--processor", str(directory), "--tokenizer", str(directory)]) == 2
    assert "not both" in capsys.readouterr().err
    text_only = tmp_path / "tok"
    build_processor("llava", tiny=True).tokenizer.save_pretrained(text_only)  # no processor_config.json
    assert main(["check", str(data), "--processor", str(text_only)]) == 2
    err = capsys.readouterr().err
    assert f"--processor {text_only}" in err and "--tokenizer" in err
    assert main(["check", str(data), "--tokenizer", str(text_only), "--on-image-cut", "drop"]) == 2
    assert "--on-image-cut applies to rows with images" in capsys.readouterr().err
    # tokenize writes ids only: image rows are made by the collator; the error says what to do instead
    assert main(["tokenize", str(data), str(tmp_path / "out"), "--processor", str(directory)]) == 2
    err = capsys.readouterr().err
    assert "ResponseOnlyCollator(processor)" in err and f"--processor {directory} --max-length N" in err
    assert not (tmp_path / "out").exists()
