"""The public API is documented once, in the docstrings, and docs/API.md is their rendering."""

from __future__ import annotations

import importlib.util
import inspect
import pathlib

import pytest

import respmask

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _make_api():
    spec = importlib.util.spec_from_file_location("make_api", ROOT / "docs" / "make_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_page_is_the_rendering_of_the_docstrings():
    page = (ROOT / "docs" / "API.md").read_text(encoding="utf-8")
    assert page == _make_api().render(), "docs/API.md is stale: run python docs/make_api.py"


def test_every_export_is_on_the_page_once():
    listed = [name for _, names in _make_api().SECTIONS for name in names]
    assert sorted(listed) == sorted(respmask.__all__)
    page = (ROOT / "docs" / "API.md").read_text(encoding="utf-8")
    for name in respmask.__all__:
        assert page.count(f"\n### `respmask.{name}`\n") == 1, name


def _exports(kind):
    return [n for n in respmask.__all__ if kind(getattr(respmask, n))]


def _is_error(obj) -> bool:
    return isinstance(obj, type) and issubclass(obj, (Exception, Warning))


@pytest.mark.parametrize("name", _exports(inspect.isfunction))
def test_public_functions_say_args_returns_and_show_an_example(name):
    doc = inspect.getdoc(getattr(respmask, name)) or ""
    for section in ("Args:", "Returns:", "Example:"):
        assert section in doc, f"respmask.{name}'s docstring has no {section} section"


@pytest.mark.parametrize("name", _exports(lambda o: isinstance(o, type) and not _is_error(o)))
def test_public_classes_document_their_fields_or_arguments(name):
    doc = inspect.getdoc(getattr(respmask, name)) or ""
    assert "Args:" in doc or "Attributes:" in doc, f"respmask.{name} documents neither Args nor Attributes"


@pytest.mark.parametrize("name", _exports(_is_error))
def test_errors_say_when_they_are_raised(name):
    doc = inspect.getdoc(getattr(respmask, name)) or ""
    assert len(doc.split()) >= 5, f"respmask.{name} needs a docstring saying when it is raised"


def test_readme_names_only_public_api():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "respmask._" not in readme, "the README points at a private module"


def _public_doctests():
    import doctest

    finder = doctest.DocTestFinder()
    seen, tests = set(), []
    for name in respmask.__all__:
        obj = getattr(respmask, name)
        if not (inspect.isfunction(obj) or isinstance(obj, type)):
            continue
        for test in finder.find(obj, name, module=False, globs={}):
            if test.examples and test.name not in seen:
                seen.add(test.name)
                tests.append(test)
    return tests


@pytest.mark.parametrize("test", _public_doctests(), ids=lambda t: t.name)
def test_docstring_examples_run(test):
    """Every example in a public docstring runs, on a small Qwen-style tokenizer and dataset."""
    import doctest

    from datasets import Dataset

    from support.tokenizers import fixture_tokenizer

    chats = [[{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}]
             for i in range(4)]
    test.globs.update({n: getattr(respmask, n) for n in respmask.__all__})
    test.globs.update(respmask=respmask, tok=fixture_tokenizer("qwen2_5"),
                      ds=Dataset.from_dict({"messages": chats}))
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    out: list[str] = []
    result = runner.run(test, out=out.append)
    assert result.failed == 0, "".join(out)
