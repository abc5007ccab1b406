"""Strings that know which message wrote each of their characters.

Before a render, every string a message holds (content, reasoning, tool calls, content parts) is
wrapped in :class:`Traced`, marked as written by that message. The string operations templates
use (``+``, slicing, ``trim``/``strip``, ``replace``, ``split``, ``join``, case changes, Jinja's
``~`` and captured output of macros and ``{% set %}`` blocks) return ``Traced`` strings whose marks
follow the characters, so the render knows, for every printed character, whether the template
wrote it or a message did, and which one, however the template moved the text around: through
variables, new dicts and lists it builds, macros and namespaces.

Every operation returns exactly what ``str`` returns (same text, same exceptions); only the marks
are extra. An operation that cannot follow characters (``format``, ``%``, ``tojson``, ``center``...)
marks its whole result as written by the one message its inputs came from (as data of no message
when they came from several): message text is never taken for the template's own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from markupsafe import Markup

# what a run of marked characters holds
CONTENT = 0
REASONING = 1
TOOLS = 2  # a message's tool calls
MIXED = 3  # several fields of one message, mixed by an operation that cannot follow characters
TOOL_LIST = 4  # the tools a sample passes (data of no message)
DOCUMENTS = 5  # the documents a sample passes (data of no message)

# message keys that hold reasoning (transformers copies reasoning under all three)
REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")

Mark = tuple[int, int, int, int]  # (start, end, owner, field); zero-length marks keep empty values' place
Marks = tuple[Mark, ...]


class Traced(str):
    """A ``str`` with ``marks``: sorted, disjoint ``(start, end, owner, field)`` runs of characters
    written by message ``owner`` (``field``: :data:`CONTENT`, :data:`REASONING`, :data:`TOOLS` or
    :data:`MIXED`). Characters outside every run were written by the template."""

    marks: Marks

    def __str__(self) -> str:  # str(x) and Jinja's output keep the marks
        return self

    # -- concatenation ---------------------------------------------------------------------------
    def __add__(self, other: Any) -> Any:
        kind = type(other)
        if kind is str:  # text appended after: the marks stay where they are
            t = Traced(str.__add__(self, other))
            t.marks = self.marks
            return t
        if kind is Traced:
            return concat((self, other))
        if isinstance(other, str) and hasattr(other, "__html__"):
            return NotImplemented  # Markup.__radd__ escapes this string, exactly as for a str
        return str.__add__(self, other)

    def __radd__(self, other: Any) -> Any:
        if type(other) is str:
            t = Traced(str.__add__(other, self))
            n = len(other)
            marks = self.marks
            if not n:
                t.marks = marks
            elif len(marks) == 1:
                a, b, o, f = marks[0]
                t.marks = ((a + n, b + n, o, f),)
            else:
                t.marks = tuple([(a + n, b + n, o, f) for a, b, o, f in marks])
            return t
        return NotImplemented

    def join(self, iterable: Iterable[Any]) -> str:
        items = list(iterable)
        text = str.join(self, items)  # raises exactly as str.join does
        parts: list[str] = []
        for i, item in enumerate(items):
            if i:
                parts.append(self)
            parts.append(item)
        return concat(parts, text)

    # -- pieces of the string ----------------------------------------------------------------------
    def __getitem__(self, key: Any) -> Any:
        text = str.__getitem__(self, key)
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                return smear(text, (self,))
            return _sub(self, text, start, max(start, stop))
        index = key.__index__()
        if index < 0:
            index += len(self)
        return _sub(self, text, index, index + 1)

    # stripping keeps the place of a value it removed entirely (whitespace-only content): a
    # zero-length mark where the value was
    def strip(self, chars: str | None = None) -> str:
        text = str.strip(self, chars)
        if len(text) == len(self):
            return self
        # the stripped text first occurs where stripping left it (it starts with a kept character)
        return _sub(self, text, str.find(self, text) if text else len(self), None, keep=True)

    def lstrip(self, chars: str | None = None) -> str:
        text = str.lstrip(self, chars)
        if len(text) == len(self):
            return self
        return _sub(self, text, len(self) - len(text), None, keep=True)

    def rstrip(self, chars: str | None = None) -> str:
        text = str.rstrip(self, chars)
        if len(text) == len(self):
            return self
        return _sub(self, text, 0, None, keep=True)

    def removeprefix(self, prefix: str) -> str:
        text = str.removeprefix(self, prefix)
        return _sub(self, text, len(self) - len(text), None)

    def removesuffix(self, suffix: str) -> str:
        return _sub(self, str.removesuffix(self, suffix), 0, None)

    def split(self, sep: str | None = None, maxsplit: int = -1) -> list[str]:  # type: ignore[override]
        return _locate(self, str.split(self, sep, maxsplit), sep)

    def rsplit(self, sep: str | None = None, maxsplit: int = -1) -> list[str]:  # type: ignore[override]
        return _locate(self, str.rsplit(self, sep, maxsplit), sep)

    def partition(self, sep: str) -> tuple[str, str, str]:
        head, found, tail = str.partition(self, sep)
        return (_sub(self, head, 0, None), _sub(self, found, len(head), None), _sub(self, tail, len(head) + len(found), None))

    def rpartition(self, sep: str) -> tuple[str, str, str]:
        head, found, tail = str.rpartition(self, sep)
        return (_sub(self, head, 0, None), _sub(self, found, len(head), None), _sub(self, tail, len(head) + len(found), None))

    def replace(self, old: str, new: str, count: int = -1) -> str:  # type: ignore[override]
        text = str.replace(self, old, new, count)
        if not old:
            return smear(text, (self, new))
        parts: list[str] = []
        cur = 0
        while count != 0:
            p = str.find(self, old, cur)
            if p < 0:
                break
            parts.append(self[cur:p])
            parts.append(new)
            cur = p + len(old)
            count -= 1
        parts.append(self[cur:])
        return concat(parts, text)

    # -- same characters, other case ----------------------------------------------------------------
    def lower(self) -> str:
        return _same_length(self, str.lower(self))

    def upper(self) -> str:
        return _same_length(self, str.upper(self))

    def title(self) -> str:
        return _same_length(self, str.title(self))

    def capitalize(self) -> str:
        return _same_length(self, str.capitalize(self))

    def swapcase(self) -> str:
        return _same_length(self, str.swapcase(self))

    def casefold(self) -> str:
        return _same_length(self, str.casefold(self))

    # -- everything else: the result belongs to the message the string came from ----------------
    def center(self, *args: Any) -> str:
        return smear(str.center(self, *args), (self,))

    def ljust(self, *args: Any) -> str:
        return smear(str.ljust(self, *args), (self,))

    def rjust(self, *args: Any) -> str:
        return smear(str.rjust(self, *args), (self,))

    def zfill(self, *args: Any) -> str:
        return smear(str.zfill(self, *args), (self,))

    def expandtabs(self, *args: Any) -> str:
        return smear(str.expandtabs(self, *args), (self,))

    def translate(self, *args: Any) -> str:
        return smear(str.translate(self, *args), (self,))

    def splitlines(self, *args: Any) -> list[str]:  # type: ignore[override]
        return [smear(line, (self,)) for line in str.splitlines(self, *args)]

    def __mod__(self, args: Any) -> Any:
        return smear(str.__mod__(self, args), (self, args))

    def __mul__(self, n: Any) -> Any:
        return smear(str.__mul__(self, n), (self,))

    __rmul__ = __mul__

    def format(self, *args: Any, **kwargs: Any) -> str:
        return smear(str.format(self, *args, **kwargs), (self, args, kwargs))

    def __reduce__(self) -> Any:  # never leaves the render; pickle it as the plain text
        return (str, (str.__str__(self),))


class TracedMarkup(Markup):
    """``value|safe`` of a traced string: a ``Markup`` (``+`` escapes plain strings, exactly as
    transformers' render does) that keeps the marks of the string it was made from. Results of
    Markup's own operations carry no marks (they are recorded as data when printed)."""

    marks: Marks = ()


def plain_marks(value: Any) -> Marks:
    """The marks of a traced string or traced markup (empty for anything else)."""
    kind = type(value)
    if kind is Traced or kind is TracedMarkup:
        return value.marks
    return ()


def traced(text: str, marks: Marks) -> str:
    """``text`` with ``marks`` (a plain str when there are none)."""
    if not marks:
        return str.__str__(text) if type(text) is not str else text
    t = Traced(text)
    t.marks = marks
    return t


def mark(value: Any, owner: int, field: int = CONTENT) -> Any:
    """A copy of ``value`` whose strings (at any depth, in dicts and lists) are marked as written by
    ``owner``. Other values are returned as they are."""
    kind = type(value)
    if kind is str or kind is Traced:
        return traced(value, ((0, len(value), owner, field),))
    if kind is dict:
        return {k: mark(v, owner, REASONING if k in REASONING_KEYS else field) for k, v in value.items()}
    if kind is list:
        return [mark(v, owner, field) for v in value]
    if kind is tuple:
        return tuple(mark(v, owner, field) for v in value)
    return value


def concat(parts: Iterable[Any], text: str | None = None) -> str:
    """``"".join(parts)`` (``text`` when already known) with the parts' marks."""
    if type(parts) is not list and type(parts) is not tuple:
        parts = list(parts)
    kinds = set(map(type, parts))
    if Traced not in kinds and TracedMarkup not in kinds:  # no marks anywhere: plain text
        return "".join(parts) if text is None else text
    marks: list[Mark] = []
    pos = 0
    for p in parts:
        if type(p) is Traced or type(p) is TracedMarkup:
            for a, b, o, f in p.marks:
                if marks and marks[-1][1] == a + pos and marks[-1][2] == o and marks[-1][3] == f and a < b:
                    last = marks[-1]
                    marks[-1] = (last[0], b + pos, o, f)
                else:
                    marks.append((a + pos, b + pos, o, f))
        pos += len(p)
    if text is None:
        text = "".join(parts)
    if not marks:
        return text
    t = Traced(text)
    t.marks = tuple(marks)
    return t


def _sub(source: Traced, text: str, lo: int, hi: int | None, keep: bool = False) -> str:
    """``text``, which is ``source[lo:hi]`` (``hi`` None: ``lo + len(text)``), with the marks there
    (``keep``: marks wholly outside become zero-length marks at the nearer end)."""
    hi = lo + len(text) if hi is None else hi
    out: list[Mark] = []
    for a, b, o, f in source.marks:
        if b < lo or a > hi:
            if keep:
                p = 0 if b < lo else hi - lo
                out.append((p, p, o, f))
            continue
        s = a if a > lo else lo
        e = b if b < hi else hi
        if s < e:
            out.append((s - lo, e - lo, o, f))
        elif (a == b or lo == hi or keep) and s == e:
            # an empty value printed here, or an empty slice of a value: keep its place
            out.append((s - lo, s - lo, o, f))
    if not out:
        return str.__str__(text) if type(text) is not str else text
    t = Traced(text)
    t.marks = tuple(out)
    return t


def _same_length(source: Traced, text: str) -> str:
    if len(text) == len(source):
        return traced(text, source.marks)
    return smear(text, (source,))


def _locate(source: Traced, pieces: list[str], sep: str | None) -> list[str]:
    """The marks of ``source.split(...)``'s pieces: each piece lies where it was in the source."""
    out: list[str] = []
    cur = 0
    for piece in pieces:
        if sep is None:
            p = str.find(source, piece, cur)
        else:
            p = cur
        out.append(_sub(source, piece, p, None))
        cur = p + len(piece) + (len(sep) if sep is not None else 0)
    return out


def owners(value: Any, budget: int = 64) -> set[tuple[int, int]]:
    """The ``(owner, field)`` of the marked strings in ``value`` (searching at most ``budget`` values)."""
    found: set[tuple[int, int]] = set()
    stack = [value]
    while stack and budget > 0:
        v = stack.pop()
        budget -= 1
        kind = type(v)
        if kind is Traced:
            found.update((o, f) for _, _, o, f in v.marks)
        elif kind is dict or isinstance(v, Mapping):
            stack.extend(v.values())
        elif kind is list or kind is tuple:
            stack.extend(v)
    return found


def smear(result: Any, sources: Any) -> Any:
    """An operation's string ``result`` marked as a whole as written by the one message its
    ``sources`` came from (unmarked when they came from none or from several)."""
    if not isinstance(result, str) or type(result) is Traced or hasattr(result, "__html__"):
        return result
    found = owners(sources)
    if not found:
        return result
    by = {o for o, _ in found}
    if len(by) != 1:  # text of several messages mixed: data, of none of them
        return traced(result, ((0, len(result), -1, CONTENT),))
    owner, field = next(iter(found))
    if len(found) > 1:  # several fields of one message (its content and tool calls, say)
        field = MIXED
    return traced(result, ((0, len(result), owner, field),))


def owner_of(value: Any, default: int) -> int:
    """The last message whose text ``value`` (a dict the template built, say) holds, else ``default``."""
    found = [o for o, _ in owners(value, 32) if o >= 0]
    return max(found) if found else default


def field_of(key: str) -> int:
    """The field a message's top-level ``key`` holds."""
    if key in REASONING_KEYS:
        return REASONING
    if key == "tool_calls":
        return TOOLS
    return CONTENT
