"""Renders with attribution, without the attribution: compiled layouts of message-blind templates.

The instrumented render (:mod:`respmask._render`) follows every character of every message value
through the template. Most chat templates only *print* message values: they read each message's
role, test whether a value is a string, and write the value (or ``value|trim``) between their own
literals. For such a template the whole render is fixed by the conversation's outline (its roles
and keys, in order): only the values' lengths move things. :class:`LayoutRenderer` proves this
once per template and keeps, per outline, the layout the instrumented render found: the template
literals, and for each printed value which message and key it is and whether it was trimmed.
Later conversations of the same outline are the layout filled with their values (checked against
the template compiled without hooks, plain strings, the same sandbox and filters, when the template
may print something else: the clock, see below); every position of the instrumented render (loop
owner changes, printed pieces, ``{% generation %}`` blocks) is then moved by the lengths of the
values before it. Anything else (a template that looks at message text, a conversation with tool
calls, reasoning, content parts or ``None`` values, an outline not seen yet, a text that differs)
goes through the instrumented render, which gives the same :class:`~respmask._render.Rendered`.

Why a layout holds for every conversation of its outline (the proof, checked by
:func:`message_blind` on the template's syntax tree, before any render):

* Data of a message reaches the template only through ``messages``. A value read from it (any key
  but ``role``) may only be printed, concatenated with other strings (``+``, ``~``), trimmed
  (``|trim``), stored in a variable that is itself only used so, or tested for its type (``is
  string``, ``is defined``...). Any other use (a comparison, ``in``, a method call such as
  ``.split`` or ``.startswith``, ``|length``, truthiness in an ``if``, another filter) makes the
  template not blind and it is never given a layout.
* So which branches run, which loops iterate and in what order, depends on the outline and the
  template's constants (special tokens, keyword arguments, ``add_generation_prompt``) alone, never
  on what a value says; every printed value is ``v`` or ``v.strip()`` of one message's key (which
  one, and whether trimmed, is read from the instrumented render of a conversation of that
  outline whose values are padded with whitespace and hold a unique code each).
* The instrumented render's records (pieces, owner changes, generation blocks) are made by the
  same hooks at the same points of that fixed control flow; their positions differ only by the
  lengths of the values printed before them, and which (message, field) was printed non-empty is
  read from the values themselves. A layout whose owner changes go back to an earlier message
  (a value of a later message printed inside an earlier turn records owner changes only when the
  output is non-empty) is refused.

Each layout is also checked, when it is learned, against the instrumented render of the
conversation that introduced the outline (all records equal). A use takes the layout filled with
the conversation's values as its text without rendering when the template is also
:func:`deterministic` (it calls no clock, ``lipsum`` or ``|random``, nor any function it was given)
and the constants are the ones the layout was learned under; otherwise the plain template renders
the conversation and its text must be the filled layout.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.utils import concat as plain_concat

from ._origin import REASONING_KEYS, field_of
from ._render import (_DICT_ATTRS, DATA, ChatTemplate, Rendered, _GenerationTags, _make_environment,
                      _transformers_environment, template_inputs)

# taint of an expression: CLEAN (no message data), LIST (a list of messages), MSG (one message),
# VAL (message data: a value, a piece of one, or a string holding one)
CLEAN, LIST, MSG, VAL = 0, 1, 2, 3

# tests that look at a value's type or presence only (the outline fixes both: every value is a str)
_TYPE_TESTS = frozenset(("string", "defined", "undefined", "none", "mapping", "iterable", "sequence", "number",
                         "integer", "float", "boolean", "callable", "true", "false"))
# loop attributes that are numbers of the outline (previtem, nextitem, changed, cycle read items)
_LOOP_ATTRS = frozenset(("index", "index0", "revindex", "revindex0", "first", "last", "length", "depth", "depth0"))
_STR_ATTRS = frozenset(dir(str))
_REASONING = frozenset(REASONING_KEYS)


class _Inspects(Exception):
    """The template uses message data other than by printing it."""


class _Blindness:
    """Flow-insensitive taint analysis of one template's syntax tree (see the module docstring)."""

    def __init__(self) -> None:
        self.names: dict[str, int] = {"messages": LIST}
        self.changed = False
        self.cuts = False  # a piece of a value may be printed: not the value, nor its strip
        self.cut_names: set[str] = set()  # names that may hold a piece of a value

    def bind(self, name: str, taint: int) -> None:
        old = self.names.get(name, CLEAN)
        if taint == CLEAN or taint == old:
            return
        if old != CLEAN:  # a name holding a message here and a value there: not followed
            raise _Inspects(name)
        self.names[name] = taint
        self.changed = True

    # -- expressions -------------------------------------------------------------------------------
    def clean(self, node: nodes.Node | None) -> None:
        if node is not None and self.expr(node) != CLEAN:
            raise _Inspects(type(node).__name__)

    def expr(self, node: nodes.Node) -> int:
        if isinstance(node, (nodes.Const, nodes.TemplateData)):
            return CLEAN
        if isinstance(node, nodes.Name):
            return self.names.get(node.name, CLEAN)
        if isinstance(node, nodes.Getattr):
            if isinstance(node.node, nodes.Name) and node.node.name == "loop" and "loop" not in self.names:
                if node.attr not in _LOOP_ATTRS:
                    raise _Inspects("loop." + node.attr)
                return CLEAN
            return self.member(self.expr(node.node), node.attr)
        if isinstance(node, nodes.Getitem):
            base = self.expr(node.node)
            arg = node.arg
            if isinstance(arg, nodes.Slice):
                for part in (arg.start, arg.stop, arg.step):
                    self.clean(part)
                return base
            if isinstance(arg, nodes.Const) and isinstance(arg.value, str):
                return self.member(base, arg.value)
            self.clean(arg)
            if base == LIST:
                return MSG
            if base == MSG:
                return VAL  # a key chosen by the template (a variable): data
            if base == VAL:
                if isinstance(arg, nodes.Const) and isinstance(arg.value, int):
                    return VAL  # one character
                raise _Inspects("value[...]")
            return CLEAN
        if isinstance(node, nodes.Test):
            base = self.expr(node.node)
            if node.args or node.kwargs or node.dyn_args or node.dyn_kwargs:
                if base != CLEAN or any(self.expr(a) != CLEAN for a in node.args) or any(
                    self.expr(k.value) != CLEAN for k in node.kwargs
                ):
                    raise _Inspects("test " + node.name)
                return CLEAN
            if base != CLEAN and node.name not in _TYPE_TESTS:
                raise _Inspects("test " + node.name)
            return CLEAN
        if isinstance(node, nodes.Filter):
            return self.filter(node)
        if isinstance(node, (nodes.Add, nodes.Concat)):
            operands = node.nodes if isinstance(node, nodes.Concat) else [node.left, node.right]
            out = CLEAN
            for operand in operands:
                t = self.expr(operand)
                if t in (LIST, MSG):
                    raise _Inspects("a message joined as text")
                out = max(out, t)
            return out
        if isinstance(node, nodes.BinExpr):  # - * / // % ** and or
            self.clean(node.left)
            self.clean(node.right)
            return CLEAN
        if isinstance(node, nodes.UnaryExpr):  # not, -, +
            self.clean(node.node)
            return CLEAN
        if isinstance(node, nodes.Compare):
            self.clean(node.expr)
            for op in node.ops:
                self.clean(op.expr)
            return CLEAN
        if isinstance(node, nodes.CondExpr):
            self.clean(node.test)
            a = self.expr(node.expr1)
            b = self.expr(node.expr2) if node.expr2 is not None else CLEAN
            if a != CLEAN and b != CLEAN and a != b:
                raise _Inspects("conditional of two kinds")
            return max(a, b)
        if isinstance(node, nodes.Call):
            callee = node.node
            if isinstance(callee, nodes.Getattr):
                self.clean(callee.node)  # a method of message data: it looks at the data
            else:
                self.clean(callee)
            for a in node.args:
                self.clean(a)
            for k in node.kwargs:
                self.clean(k.value)
            self.clean(node.dyn_args)
            self.clean(node.dyn_kwargs)
            return CLEAN
        if isinstance(node, (nodes.List, nodes.Tuple)):
            for item in node.items:
                self.clean(item)
            return CLEAN
        if isinstance(node, nodes.Dict):
            for pair in node.items:
                self.clean(pair.key)
                self.clean(pair.value)
            return CLEAN
        if isinstance(node, (nodes.ContextReference, nodes.DerivedContextReference, nodes.EnvironmentAttribute,
                             nodes.ExtensionAttribute, nodes.InternalName, nodes.MarkSafe, nodes.MarkSafeIfAutoescape)):
            if isinstance(node, (nodes.MarkSafe, nodes.MarkSafeIfAutoescape)):
                self.clean(node.expr)
            return CLEAN
        raise _Inspects(type(node).__name__)

    def cut(self, node: nodes.Node) -> bool:
        """Whether ``node`` (an expression :meth:`expr` admits) may be a piece of a value (a slice,
        a character) rather than the value, its strip or a string joined from them."""
        if isinstance(node, nodes.Name):
            return node.name in self.cut_names
        if isinstance(node, nodes.Getitem):
            if isinstance(node.arg, nodes.Slice) or (isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, int)):
                return self.expr(node.node) == VAL
            return False
        if isinstance(node, nodes.Concat):
            return any(self.cut(n) for n in node.nodes)
        if isinstance(node, nodes.Add):
            return self.cut(node.left) or self.cut(node.right)
        if isinstance(node, nodes.CondExpr):
            return self.cut(node.expr1) or (node.expr2 is not None and self.cut(node.expr2))
        if isinstance(node, nodes.Filter):
            return node.node is not None and self.cut(node.node)  # trim, default
        return False

    def bind_cut(self, target: nodes.Node, cut: bool) -> None:
        if cut and isinstance(target, nodes.Name) and target.name not in self.cut_names:
            self.cut_names.add(target.name)
            self.changed = True

    @staticmethod
    def member(base: int, key: str) -> int:
        """``base.key`` / ``base[key]`` for a constant key."""
        if base == CLEAN:
            return CLEAN
        if base == LIST:
            raise _Inspects("messages." + key)
        if base == MSG:
            if key in _DICT_ATTRS:
                raise _Inspects("message." + key)
            return CLEAN if key == "role" else VAL  # roles are the outline
        # message data is a str here (the outline admits nothing else): a str attribute is a
        # method of the value; any other key is undefined, whatever the value says
        if key in _STR_ATTRS:
            raise _Inspects("value." + key)
        return CLEAN

    def filter(self, node: nodes.Filter) -> int:
        base = self.expr(node.node) if node.node is not None else CLEAN
        if node.kwargs or node.dyn_args or node.dyn_kwargs:
            if base != CLEAN:
                raise _Inspects("|" + node.name)
        args = [self.expr(a) for a in node.args]
        for k in node.kwargs:
            self.clean(k.value)
        if base == CLEAN:
            if any(a != CLEAN for a in args):
                raise _Inspects("|" + node.name)
            return CLEAN
        name = node.name
        if name == "trim" and base == VAL and not args:
            return VAL
        if name in ("default", "d") and len(args) <= 1 and all(a == CLEAN for a in args):
            return base
        if base in (LIST, MSG) and name in ("length", "count") and not args:
            return CLEAN
        if base == LIST and name in ("first", "last") and not args:
            return MSG
        if base == LIST and name in ("list", "reverse") and not args:
            return LIST
        if (base == LIST and name in ("selectattr", "rejectattr") and node.args
                and isinstance(node.args[0], nodes.Const) and node.args[0].value == "role"
                and all(a == CLEAN for a in args)):
            return LIST
        raise _Inspects("|" + name)

    # -- statements --------------------------------------------------------------------------------
    def body(self, statements: Sequence[nodes.Node]) -> bool:
        """Analyse ``statements``; whether they print message data."""
        prints = False
        for node in statements:
            prints = self.statement(node) or prints
        return prints

    def statement(self, node: nodes.Node) -> bool:
        if isinstance(node, nodes.Output):
            prints = False
            for child in node.nodes:
                t = self.expr(child)
                if t in (LIST, MSG):
                    raise _Inspects("a message printed whole")
                prints = prints or t == VAL
                if t == VAL and self.cut(child):
                    self.cuts = True
            return prints
        if isinstance(node, nodes.If):
            self.clean(node.test)
            prints = self.body(node.body)
            for elif_ in node.elif_:
                self.clean(elif_.test)
                prints = self.body(elif_.body) or prints
            return self.body(node.else_) or prints
        if isinstance(node, nodes.For):
            if node.recursive:
                raise _Inspects("recursive loop")
            source = self.expr(node.iter)
            if not isinstance(node.target, nodes.Name):
                if source != CLEAN:
                    raise _Inspects("unpacked loop over messages")
                self.assign(node.target, CLEAN)
            else:
                self.bind(node.target.name, MSG if source == LIST else VAL if source in (MSG, VAL) else CLEAN)
                self.bind_cut(node.target, source == VAL)  # a value's characters
                if source == MSG:
                    raise _Inspects("loop over a message's keys")
            self.clean(node.test)
            prints = self.body(node.body)
            return self.body(node.else_) or prints
        if isinstance(node, nodes.Assign):
            self.assign(node.target, self.expr(node.node))
            self.bind_cut(node.target, self.cut(node.node))
            return False
        if isinstance(node, nodes.AssignBlock):
            if node.filter is not None:
                raise _Inspects("filtered {% set %} block")
            prints = self.body(node.body)
            self.assign(node.target, VAL if prints else CLEAN)
            return False
        if isinstance(node, nodes.With):
            for target, value in zip(node.targets, node.values):
                self.assign(target, self.expr(value))
                self.bind_cut(target, self.cut(value))
            return self.body(node.body)
        if isinstance(node, (nodes.Scope, nodes.ScopedEvalContextModifier, nodes.OverlayScope)):
            return self.body(node.body)
        if isinstance(node, nodes.Macro):
            for d in node.defaults:
                self.clean(d)
            self.body(node.body)
            return False
        if isinstance(node, nodes.CallBlock):
            self.clean(node.call)
            for d in node.defaults:
                self.clean(d)
            return self.body(node.body)
        if isinstance(node, nodes.FilterBlock):
            if self.body(node.body):
                raise _Inspects("filter block over message data")
            self.clean(node.filter)
            return False
        if isinstance(node, nodes.ExprStmt):
            self.clean(node.node)
            return False
        if isinstance(node, (nodes.Continue, nodes.Break, nodes.EvalContextModifier)):
            return False
        raise _Inspects(type(node).__name__)

    def assign(self, target: nodes.Node, taint: int) -> None:
        if isinstance(target, nodes.Name):
            self.bind(target.name, taint)
        elif isinstance(target, nodes.NSRef):
            if taint != CLEAN:
                raise _Inspects("message data in a namespace")
        elif isinstance(target, nodes.Tuple):
            if taint != CLEAN:
                raise _Inspects("message data unpacked")
            for item in target.items:
                self.assign(item, CLEAN)
        else:
            raise _Inspects(type(target).__name__)


def keep_bounded(kept: dict, key: Any, value: Any, capacity: int) -> None:
    """``kept[key] = value``, the oldest entries forgotten first (dicts keep insertion order) so
    that at most ``capacity`` remain. Safe when another thread changes ``kept`` meanwhile."""
    while len(kept) >= capacity:
        try:
            kept.pop(next(iter(kept)), None)
        except (StopIteration, RuntimeError):  # emptied or changed by another thread meanwhile
            break
    kept[key] = value


def _blindness(ast: nodes.Template) -> _Blindness | None:
    """The analysis of a message-blind template (None when it is not one)."""
    analysis = _Blindness()
    try:
        for _ in range(20):  # taints only grow: a fixpoint within a few passes
            analysis.changed = False
            analysis.body(ast.body)
            if not analysis.changed:
                return analysis
    except _Inspects:
        return None
    return None


def message_blind(ast: nodes.Template) -> bool:
    """Whether the template (its uninstrumented syntax tree) only prints, joins, trims and
    type-tests message data, and reads nothing of a message but its role and keys to decide what
    to render (see the module docstring)."""
    return _blindness(ast) is not None


# the environment's functions and filters whose result depends on their arguments alone (the clock
# ``strftime_now``, ``lipsum`` and ``|random`` do not; nor does a callable passed as a keyword argument)
_PURE_CALLS = frozenset(("range", "dict", "namespace", "cycler", "joiner", "raise_exception", "caller"))
_IMPURE_FILTERS = frozenset(("random",))


def deterministic(ast: nodes.Template) -> bool:
    """Whether the template (its syntax tree) calls nothing but the environment's pure functions,
    its own macros and methods of the values it holds, and no impure filter (not even by name, as
    ``map('random')`` would): then a message-blind template that prints its values whole (or
    trimmed) makes a text that is a function of the outline, the constants and the values alone,
    and a layout gives it without rendering."""
    macros = {m.name for m in ast.find_all(nodes.Macro)}
    for call in ast.find_all(nodes.Call):
        callee = call.node
        if isinstance(callee, nodes.Name) and callee.name not in _PURE_CALLS and callee.name not in macros:
            return False
        if isinstance(callee, nodes.ExtensionAttribute):
            if callee.identifier != _GenerationTags.identifier:  # {% generation %} blocks only record
                return False
        elif not isinstance(callee, (nodes.Name, nodes.Getattr)):
            return False
    if any(f.name in _IMPURE_FILTERS for f in ast.find_all(nodes.Filter)):
        return False
    return not any(isinstance(c.value, str) and c.value in _IMPURE_FILTERS for c in ast.find_all(nodes.Const))


def outline(messages: Sequence[Any], plain: bool = False) -> tuple | None:
    """The outline of a conversation a layout is kept for (each message's role and keys, in
    order), or None when it has a value other than a string (tool calls, content parts, None) or
    reasoning (which transformers copies under other keys). ``plain``: the caller knows every
    message is a dict with a role and string keys and values (as ``Chat.states`` says)."""
    if plain:
        out = tuple((m["role"], tuple(m)) for m in messages)
        for _, keys in out:
            if not _REASONING.isdisjoint(keys):
                return None
        return out
    out = []
    for m in messages:
        if type(m) is not dict:
            return None
        for k, v in m.items():
            if type(v) is not str or type(k) is not str:
                return None
        keys = tuple(m)
        if "role" not in m or not _REASONING.isdisjoint(keys):
            return None
        out.append((m["role"], keys))
    return tuple(out)


class _Layout:
    """What one outline's render is made of (see :class:`LayoutRenderer`)."""

    __slots__ = ("literals", "lit_lens", "slots", "events", "pieces", "generation", "constant_printed",
                 "replays", "constants")

    def __init__(self, literals: list[str], slots: list[tuple[int, str, bool, int]],
                 events: list[tuple[int, int, int]], pieces: list[tuple[int, int, int, int, int, int]],
                 generation: list[tuple[int, int, int, int, int]], constant_printed: set[tuple[int, int]]):
        self.literals = literals  # the template's text between printed values (one more than slots)
        self.lit_lens = [len(x) for x in literals]
        self.slots = slots  # (message, key, trimmed, field) of each printed value, in output order
        # positions as (values before, offset after the last of them)
        self.events = events  # (j, off, owner)
        self.pieces = pieces  # (j, off, j, off, owner, kind)
        self.generation = generation  # (j, off, j, off, owner)
        self.constant_printed = constant_printed  # (owner, field) printed by data of no message
        # the analyses of its conversations relative to it (respmask._replay.Replays), made when needed
        self.replays: Any = None
        # the template constants it was learned under (the masker's cached mapping: a new one when
        # the special tokens change)
        self.constants: Mapping[str, Any] | None = None

    def match(self, text: str | None, messages: Sequence[Mapping[str, Any]]
              ) -> tuple[str, list[int], list[str]] | None:
        """This layout filled with the values of ``messages`` (of its outline): the text, where
        each literal starts in it and the printed values; None when ``text`` (their plain render)
        is given and differs from it."""
        values = [messages[k][key].strip() if trimmed else messages[k][key] for k, key, trimmed, _ in self.slots]
        literals = self.literals
        parts = [literals[0]]
        for value, literal in zip(values, literals[1:]):
            parts.append(value)
            parts.append(literal)
        filled = "".join(parts)
        if text is not None and filled != text:
            return None
        ends = [0]
        acc = 0
        for lit, value in zip(self.lit_lens, values):
            acc += lit + len(value)
            ends.append(acc)
        return filled, ends, values

    def fill(self, text: str, messages: Sequence[Mapping[str, Any]]) -> Rendered | None:
        """The :class:`Rendered` of ``messages`` (of this layout's outline) whose plain render is
        ``text``; None when ``text`` is not this layout filled with their values."""
        found = self.match(text, messages)
        return None if found is None else self.rendered(*found)

    def rendered(self, text: str, ends: list[int], values: list[str]) -> Rendered:
        """The :class:`Rendered` of a text this layout matched (:meth:`match`: ``ends``, where each
        literal starts, and the printed ``values``)."""
        printed = set(self.constant_printed)
        for (k, _, _, f), value in zip(self.slots, values):
            if value:
                printed.add((k, f))
        return Rendered(
            text,
            [(ends[j] + off, owner) for j, off, owner in self.events],
            [(ends[j] + a, ends[i] + b, owner, kind) for j, a, i, b, owner, kind in self.pieces],
            [(ends[j] + a, ends[i] + b, owner) for j, a, i, b, owner in self.generation],
            [],
            printed,
        )


_REFUSED = object()


class LayoutHit:
    """A conversation whose plain render is its layout filled with its values.

    Attributes:
        layout: the layout (its outline's, under the template kwargs).
        text: the render.
        starts: where each of the layout's literals starts in ``text``.
        values: the printed values, in output order.
    """

    __slots__ = ("layout", "text", "starts", "values")

    def __init__(self, layout: _Layout, text: str, starts: list[int], values: list[str]):
        self.layout = layout
        self.text = text
        self.starts = starts
        self.values = values

    def rendered(self) -> Rendered:
        """Every record of the instrumented render, moved by the values' lengths."""
        return self.layout.rendered(self.text, self.starts, self.values)


def _plain_environment() -> jinja2.Environment:
    """respmask's sandbox (the same fast attribute paths, globals, tests and extensions) with the
    filters as transformers has them: on plain strings the traced filters give the same text, at
    the cost of looking for marks that are not there."""
    env = _make_environment()
    filters = dict(jinja2.Environment().filters)
    reference = _transformers_environment()
    if reference is not None:
        filters.update(reference.filters)
    env.filters = filters
    env.concat = plain_concat
    return env


def _core(k: int, j: int) -> str:
    return f"\ue000{k}.{j}\ue001"


class LayoutRenderer:
    """Renders of one :class:`~respmask._render.ChatTemplate` taken from learned layouts when the
    template is message-blind (see the module docstring); at most ``capacity`` layouts are kept
    (the oldest is forgotten first).

    Args:
        template: the instrumented template (its environment and filters are reused).
        capacity: layouts kept (one per template kwargs and outline).
    """

    def __init__(self, template: ChatTemplate, capacity: int = 256):
        self.template = template
        self.capacity = capacity
        self.layouts: dict[tuple[str, tuple], Any] = {}
        ast = template.env.parse(template.source)
        analysis = _blindness(ast)
        self.blind = analysis is not None
        # the layout filled with the values is the render itself (no value cut, no clock)
        self.deterministic = analysis is not None and not analysis.cuts and deterministic(ast)
        self.plain = None
        if self.blind:
            env = _plain_environment()
            code = env.compile(ast)
            self.plain = env.template_class.from_code(env, code, dict(env.make_globals(None)), None)

    def render(self, kwargs_key: str, messages: Sequence[Mapping[str, Any]], constants: Mapping[str, Any]
               ) -> Rendered | None:
        """The render of ``messages`` (no tools, documents or generation prompt) from its layout;
        None when there is none (the instrumented render is needed, then :meth:`learn`)."""
        hit = self.find(kwargs_key, messages, constants)
        return None if hit is None else hit.rendered()

    def find(self, kwargs_key: str, messages: Sequence[Mapping[str, Any]], constants: Mapping[str, Any],
             plain: bool = False) -> LayoutHit | None:
        """``messages`` (no tools, documents or generation prompt) matched with their outline's
        layout: the layout filled with their values, which is their render when the template is
        :func:`deterministic` and the constants are those it was learned under; otherwise the
        plain template renders them and the text must be the filled layout. None when there is no
        layout or the text differs (the instrumented render is needed, then :meth:`learn`).
        ``plain``: as :func:`outline`'s."""
        if not self.blind:
            return None
        shape = outline(messages, plain)
        if shape is None:
            return None
        layout = self.layouts.get((kwargs_key, shape))
        if layout is None or layout is _REFUSED:
            return None
        text = None
        if not self.deterministic or layout.constants is not constants:
            # the clock, say, or other constants: the text is the layout's only if the render says so
            variables = dict(constants)
            variables.update(messages=list(messages), tools=None, documents=None, add_generation_prompt=False)
            compiled = self.plain
            try:
                text = "".join(compiled.root_render_func(compiled.new_context(variables)))
            except Exception:
                return None  # the instrumented render raises the sample's error
        found = layout.match(text, messages)
        return None if found is None else LayoutHit(layout, *found)

    def learn(self, kwargs_key: str, messages: Sequence[Mapping[str, Any]], constants: Mapping[str, Any],
              rendered: Rendered) -> None:
        """Learn the layout of ``messages``' outline (``rendered``: their instrumented render, no
        tools, documents or generation prompt), unless known or the template is not blind."""
        if not self.blind:
            return
        shape = outline(messages)
        if shape is None or (kwargs_key, shape) in self.layouts:
            return
        try:
            layout = self._learn(messages, constants, rendered)
        except Exception:  # the padded probe raised, or a record fell outside the layout
            layout = None
        if layout is not None:
            layout.constants = constants
        keep_bounded(self.layouts, (kwargs_key, shape), _REFUSED if layout is None else layout, self.capacity)

    def _learn(self, messages: Sequence[Mapping[str, Any]], constants: Mapping[str, Any], rendered: Rendered
               ) -> _Layout | None:
        padded: list[dict[str, str]] = []
        codes: dict[str, tuple[int, str]] = {}
        for k, m in enumerate(messages):
            out = {}
            for j, key in enumerate(m):
                if key == "role":
                    out[key] = m[key]
                else:
                    core = _core(k, j)
                    codes[core] = (k, key)
                    out[key] = " \n" + core + "\n "
            padded.append(out)
        variables, chat = template_inputs(padded, constants=constants)
        probe = self.template.render(variables, chat)
        text = probe.text
        slots: list[tuple[int, str, bool, int]] = []
        starts: list[int] = []
        ends: list[int] = []
        constant_printed = {(o, f) for o, f in probe.printed if o < 0}
        for s, e, owner, kind in probe.pieces:
            if kind != DATA or owner < 0:
                continue
            piece = text[s:e]
            trimmed = piece.startswith("\ue000")
            where = codes.get(piece if trimmed else piece[2:-2])
            if where is None or where[0] != owner or (not trimmed and piece[:2] + piece[-2:] != " \n\n "):
                return None  # not a whole value, nor a trimmed one
            slots.append((owner, where[1], trimmed, field_of(where[1])))
            starts.append(s)
            ends.append(e)
        literals = []
        cur = 0
        for s, e in zip(starts, ends):
            literals.append(text[cur:s])
            cur = e
        literals.append(text[cur:])
        if any("\ue000" in lit for lit in literals):
            return None  # a value printed without its marks
        owners = [o for _, o in probe.owner_events if o >= 0]
        if any(b < a for a, b in zip(owners, owners[1:])):
            return None  # an earlier message's turn returns: not followed

        def at(p: int) -> tuple[int, int]:
            j = bisect_right(ends, p)
            if j < len(starts) and starts[j] < p:
                raise ValueError("a position inside a value")
            return j, p - (ends[j - 1] if j else 0)

        def piece_at(s: int, e: int) -> tuple[int, int, int, int]:
            j = bisect_right(ends, s)
            if j < len(starts) and starts[j] == s and ends[j] == e:  # a value's own piece
                return (j, s - (ends[j - 1] if j else 0), j + 1, 0)
            return (*at(s), *at(e))

        layout = _Layout(
            literals,
            slots,
            [(*at(p), o) for p, o in probe.owner_events],
            [(*piece_at(s, e), o, kind) for s, e, o, kind in probe.pieces],
            [(*piece_at(s, e), o) for s, e, o in probe.generation_blocks],
            constant_printed,
        )
        own = layout.fill(rendered.text, messages)
        if own is None or (own.owner_events, own.pieces, own.generation_blocks, own.reasoning, own.printed) != (
            rendered.owner_events, rendered.pieces, rendered.generation_blocks, rendered.reasoning, rendered.printed
        ):
            return None
        return layout
