"""Write docs/API.md from the docstrings of everything ``respmask`` exports.

The docstrings are the one place the public API is documented; this page is their rendering,
so it cannot drift from the code (``tests/test_api_docs.py`` fails when it is stale).

    python docs/make_api.py          # rewrite docs/API.md
"""

from __future__ import annotations

import inspect
import pathlib
import sys

import respmask

# The page's sections, in reading order. Every name in ``respmask.__all__`` is in exactly one.
SECTIONS: list[tuple[str, list[str]]] = [
    ("Training", ["ResponseOnlyCollator", "Pretokenizer", "CollatorSummary", "pack", "Packer", "padding_stats"]),
    ("Looking at the data", ["preview", "Preview", "check", "CheckReport", "check_trainer", "TrainerReport"]),
    ("Options and data formats", ["MaskOptions", "MessageMapping", "to_sample"]),
    ("The core", ["ChatMasker", "RenderedSample", "Encoded", "IGNORE_INDEX"]),
    ("Errors and warnings", [
        "RespmaskError", "SampleError", "MissingColumnsError", "UntrainableSampleError", "LostDataError",
        "TemplateError", "TokenizerError", "TrainerCheckError", "RespmaskWarning",
    ]),
]

CONSTANTS = {
    "IGNORE_INDEX": "The label of a token that is not trained (-100: what PyTorch's cross-entropy "
                    "and transformers' models ignore).",
}

HEADER = """# respmask API

Everything `respmask` exports, generated from the docstrings by `docs/make_api.py` (do not edit
by hand). The README shows how the pieces fit together; this page is the reference.

"""


def _signature(name: str, obj: object) -> str:
    try:
        sig = inspect.signature(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return name
    params = [str(p) for p in sig.parameters.values()]
    one_line = f"{name}({', '.join(params)})"
    if len(one_line) <= 96:
        return one_line
    return f"{name}(\n" + "".join(f"    {p},\n" for p in params) + ")"


def _members(cls: type) -> list[tuple[str, object]]:
    """Public methods and properties defined by ``cls`` itself (not inherited from elsewhere)."""
    out = []
    for attr, value in vars(cls).items():
        if attr.startswith("_"):
            continue
        if isinstance(value, property) or inspect.isfunction(value) or isinstance(value, (staticmethod, classmethod)):
            out.append((attr, value))
    return out


def _block(text: str) -> str:
    return "```text\n" + text.rstrip() + "\n```\n"


def render() -> str:
    """The page's text."""
    listed = [n for _, names in SECTIONS for n in names]
    missing = sorted(set(respmask.__all__) - set(listed))
    extra = sorted(set(listed) - set(respmask.__all__))
    if missing or extra:
        raise SystemExit(f"make_api: SECTIONS out of date: not listed {missing}, not exported {extra}")
    out = [HEADER]
    for title, _ in SECTIONS:
        out.append(f"- [{title}](#{title.lower().replace(' ', '-')})\n")
    for title, names in SECTIONS:
        out.append(f"\n## {title}\n")
        for name in names:
            obj = getattr(respmask, name)
            out.append(f"\n### `respmask.{name}`\n\n")
            if name in CONSTANTS:
                out.append(f"`respmask.{name} = {obj!r}`: {CONSTANTS[name]}\n")
                continue
            out.append("```python\n" + _signature(name, obj) + "\n```\n\n")
            out.append(_block(inspect.getdoc(obj) or ""))
            if inspect.isclass(obj) and not issubclass(obj, BaseException):
                for attr, value in _members(obj):
                    func = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
                    doc = inspect.getdoc(func) or ""
                    if not doc:
                        continue
                    sig = None
                    if isinstance(value, property):
                        head = f"`.{attr}` (property)"
                    else:
                        sig = _signature(attr, func).replace("(self, ", "(").replace("(self)", "()")
                        sig = sig.replace("(\n    self,\n", "(\n")
                        head = f"`.{sig}`" if "\n" not in sig else f"`.{attr}(...)`"
                    out.append(f"\n#### {head}\n\n")
                    if sig is not None and "\n" in sig:
                        out.append("```python\n" + sig + "\n```\n\n")
                    out.append(_block(doc))
    return "".join(out)


def main() -> int:
    path = pathlib.Path(__file__).with_name("API.md")
    path.write_text(render(), encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
