"""Render a chat template exactly as transformers does, and record who wrote each character.

The template is parsed once with Jinja and instrumented. Every top-level output that is not a
template literal reports its position, its kind (template literal or data) and the message that
owns it; every loop over messages reports which message its iteration belongs to. Nothing is
written into the text: positions come from the render's own output stream, so the text is
byte-identical to ``tokenizer.apply_chat_template(..., tokenize=False)``.
"""

from __future__ import annotations

import difflib
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from types import MethodType
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.compiler import CodeGenerator
from markupsafe import Markup
from jinja2.ext import Extension
from jinja2.runtime import LoopContext
from jinja2.utils import Namespace
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ._errors import TemplateError
from ._origin import (CONTENT, DOCUMENTS, MIXED, REASONING, REASONING_KEYS, TOOL_LIST, Traced, TracedMarkup, concat,
                      field_of, mark, owner_of, smear, traced)


class Kind(IntEnum):
    """What a piece of a render is: the template's own text, or data (of a message, the tools or
    the documents). Plain ints underneath: lists and arrays of kinds may hold either."""

    LITERAL = 0
    DATA = 1


LITERAL = Kind.LITERAL
DATA = Kind.DATA
NO_OWNER = -1

# Names under which transformers passes the tokenizer's special tokens to a template. A template
# that prints them prints structure, not data.
SPECIAL_TOKEN_NAMES = frozenset(
    {
        "bos_token",
        "eos_token",
        "unk_token",
        "sep_token",
        "pad_token",
        "cls_token",
        "mask_token",
        "additional_special_tokens",
        "extra_special_tokens",
    }
)

_PREFIX = "respmask_"


@dataclass
class Rendered:
    """One render: the text, plus where each message's output and each data piece lie in it."""

    text: str
    # (position, owner) whenever the loop owner changes; owner is a message index or NO_OWNER.
    owner_events: list[tuple[int, int]] = field(default_factory=list)
    # (start, end, owner, kind) of every recorded output piece, in output order.
    pieces: list[tuple[int, int, int, int]] = field(default_factory=list)
    # (start, end, owner) of every {% generation %} block.
    generation_blocks: list[tuple[int, int, int]] = field(default_factory=list)
    # (start, end, owner) of every run of reasoning text a message wrote.
    reasoning: list[tuple[int, int, int]] = field(default_factory=list)
    # (message, field) of every non-empty run of message text in the output (origin's fields).
    printed: set[tuple[int, int]] = field(default_factory=set)
    # (start, end, owner) of every non-empty run of a message's content (in output order): what of
    # each content value the template printed (see _spans.content_left_out)
    content: list[tuple[int, int, int]] = field(default_factory=list)


class _State:
    __slots__ = (
        "pos", "ids", "owner", "stack", "last_read", "owner_events", "pieces", "generation", "reasoning", "gap_owner",
        "printed", "pending", "content",
    )

    def __init__(self, tracked: Sequence[dict]):
        self.pos = 0
        self.ids = {id(m): i for i, m in enumerate(tracked)}
        self.owner = NO_OWNER
        self.stack: list[int] = []
        self.last_read: int | None = None
        self.owner_events: list[tuple[int, int]] = []
        self.pieces: list[tuple[int, int, int, int]] = []
        self.generation: list[tuple[int, int, int]] = []
        self.reasoning: list[tuple[int, int, int]] = []
        self.content: list[tuple[int, int, int]] = []
        # who wrote the template text inside the next traced output, when not the loop's owner
        self.gap_owner: int | None = None
        # (message, field) of every non-empty run of message text that reached the output
        self.printed: set[tuple[int, int]] = set()
        # an iteration of a loop over something other than messages (``range(messages|length)``)
        # that has not read a message yet: the first message it takes (``messages[i]``) owns it
        self.pending = False

    def output(self, s: Traced) -> None:
        """Record the marks of one traced string the template printed, and move on."""
        pos = self.pos
        n = len(s)
        pieces = self.pieces
        gap_owner, cur = self.gap_owner, 0
        owner = self.owner
        later = -1
        for a, b, o, f in s.marks:
            if gap_owner is not None and a > cur:
                pieces.append((pos + cur, pos + a, gap_owner, LITERAL))
            pieces.append((pos + a, pos + b, o, DATA))
            cur = b
            if b > a:
                self.printed.add((o, f))
                if f == REASONING:
                    self.reasoning.append((pos + a, pos + b, o))
                elif f == CONTENT:
                    self.content.append((pos + a, pos + b, o))
            if o > later:
                later = o
        if gap_owner is not None:
            if n > cur:
                pieces.append((pos + cur, pos + n, gap_owner, LITERAL))
        elif 0 <= owner < later and n:
            # text of a later message printed in this turn (tool results pulled in by a forward
            # scan, say): the whole printed value is that message's, quoted here
            self.owner_events.append((pos, later))
            self.owner_events.append((pos + n, owner))
        self.gap_owner = None
        self.pos = pos + n

    def set_owner(self, owner: int) -> None:
        if owner != self.owner:
            self.owner = owner
            self.owner_events.append((self.pos, owner))


class _Local(threading.local):
    """Per-thread render state (None outside a render)."""

    state: _State | None = None


class _Hooks:
    """The functions the instrumented template calls (as filters); they update the render's state.

    Each is marked ``pass_context`` so that Jinja's optimizer never runs it at compile time.
    """

    def __init__(self) -> None:
        self.tls = _Local()
        tls = self.tls

        @jinja2.pass_context
        def push(_ctx: Any, _: Any) -> None:
            st = tls.state
            st.stack.append(st.owner)

        @jinja2.pass_context
        def iteration(_ctx: Any, _: Any, item: Any) -> None:
            st = tls.state
            owner = st.ids.get(id(item))
            if owner is None and isinstance(item, tuple):
                owner = next((st.ids[id(x)] for x in item if id(x) in st.ids), None)
            if owner is None:
                # an item the template built (merged messages, say): the message whose text it holds
                owner = owner_of(item, st.stack[-1]) if isinstance(item, (dict, Mapping)) else st.stack[-1]
            st.set_owner(owner)
            st.pending = owner == NO_OWNER

        @jinja2.pass_context
        def pop(_ctx: Any, _: Any) -> None:
            st = tls.state
            st.pending = False
            st.set_owner(st.stack.pop())

        @jinja2.pass_context
        def clear(_ctx: Any, _: Any) -> None:
            tls.state.last_read = None

        @jinja2.pass_context
        def piece(_ctx: Any, _: Any, _cleared: Any, value: Any) -> str:
            kind = type(value)
            if kind is str:  # the template's own (a loop counter, a date, a special token): every
                return value  # string of a message, tools or documents carries marks
            st = tls.state
            if kind is TracedMarkup and value.marks:  # ``value|safe`` printed: the value's own marks
                value, kind = traced(str.__str__(value), value.marks), Traced
            if kind is Traced:  # its marks say who wrote what (recorded when it is printed)
                if st.last_read is not None and st.last_read != st.owner:
                    st.gap_owner = st.last_read
                return value
            text = str(value)
            if hasattr(value, "__html__"):  # Markup escapes the strings it holds: their marks are lost
                owner = st.owner if st.last_read is None else st.last_read
                st.pieces.append((st.pos, st.pos + len(text), owner, DATA))
                if text:
                    st.printed.add((owner, MIXED))
            elif kind is list or kind is dict or kind is tuple:
                # a container printed whole (its Python repr: content parts, tool calls): written by
                # the message whose strings it holds, as a filter that rebuilds text is
                marked = smear(text, value)
                if type(marked) is Traced:
                    if st.last_read is not None and st.last_read != st.owner:
                        st.gap_owner = st.last_read
                    return marked
            return text

        self.filters = {
            "push": push,
            "iteration": iteration,
            "pop": pop,
            "clear": clear,
            "piece": piece,
        }

    def generation(self, rendered: str) -> str:
        st = self.tls.state
        if st is not None:
            st.generation.append((st.pos, st.pos + len(rendered), st.owner))
        return rendered


class _GenerationTags(Extension):
    """``{% generation %}...{% endgeneration %}``: renders its body unchanged, as in transformers."""

    tags = frozenset({"generation"})

    def parse(self, parser: jinja2.parser.Parser) -> nodes.CallBlock:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_support"), [], [], body).set_lineno(lineno)

    def _support(self, caller: Any) -> str:
        return self.environment.respmask_hooks.generation(caller())


_DICT_ATTRS = frozenset(dir(dict))
_BUILTIN_METHOD = type("".startswith)
# str methods the sandbox lets a template call unchanged (it wraps only format / format_map)
_STR_METHODS = frozenset(n for n in dir(str) if not n.startswith("_") and n not in ("format", "format_map"))
_LOOP_ATTRS = frozenset(
    ("index", "index0", "revindex", "revindex0", "first", "last", "length", "depth", "depth0", "previtem", "nextitem")
)


def _plain_namespace(kind: type) -> bool:
    """A Namespace (sub)class whose attribute lookup is Jinja's own."""
    return issubclass(kind, Namespace) and kind.__getattribute__ is Namespace.__getattribute__


def _bare(node: nodes.Expr, frame: Any, finalize: Any) -> bool:
    """An output of the ``piece`` hook, which returns a str itself: printed without ``str(...)``."""
    return (
        isinstance(node, nodes.Filter)
        and node.name == _PREFIX + "piece"
        and not frame.eval_ctx.volatile
        and not frame.eval_ctx.autoescape
        and finalize.src is None
    )


class _CodeGenerator(CodeGenerator):
    def _output_child_pre(self, node: nodes.Expr, frame: Any, finalize: Any) -> None:
        if _bare(node, frame, finalize):
            self.write("(")
        else:
            super()._output_child_pre(node, frame, finalize)

    def _output_child_post(self, node: nodes.Expr, frame: Any, finalize: Any) -> None:
        if _bare(node, frame, finalize):
            self.write(")")
        else:
            super()._output_child_post(node, frame, finalize)


class _Environment(ImmutableSandboxedEnvironment):
    """transformers' sandbox, plus a record of which message each read touches.

    ``getattr`` has fast paths that give exactly the sandbox's results without its exception
    and safety-check overhead: a dict key that is not a dict attribute is an item lookup; a
    string method other than ``format`` is returned as is; loop variables are plain properties.
    """

    respmask_hooks: _Hooks
    respmask_tls: _Local
    respmask_namespaces: frozenset[type] = frozenset({Namespace})  # plain namespace classes of this environment
    code_generator_class = _CodeGenerator

    def _note_read(self, obj: dict) -> None:
        """Remember the tracked message whose data (any key but ``role``) was read last: the owner
        of an output expression whose value carries no marks of its own."""
        st = self.respmask_tls.state
        if st is not None:
            k = st.ids.get(id(obj))
            if k is not None:
                st.last_read = k

    def getattr(self, obj: Any, attribute: str) -> Any:
        kind = type(obj)
        if kind is dict:
            if attribute != "role":
                self._note_read(obj)
            if attribute not in _DICT_ATTRS:
                try:
                    return obj[attribute]
                except (TypeError, LookupError):
                    return self.undefined(obj=obj, name=attribute)
        elif kind is str or kind is Traced:
            if attribute in _STR_METHODS:
                return getattr(obj, attribute)
        elif kind is LoopContext and attribute in _LOOP_ATTRS:
            return getattr(obj, attribute)
        elif kind in self.respmask_namespaces and attribute[:1] != "_":
            attrs = object.__getattribute__(obj, "_Namespace__attrs")
            if attribute in attrs:
                return attrs[attribute]
            return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        """A string's own method, and the ``{% generation %}`` block's, is called directly (the
        sandbox would find it safe and call it the same way); anything else goes through the
        sandbox."""
        kind = type(obj)
        if kind is _BUILTIN_METHOD or kind is MethodType:
            owner = type(obj.__self__)
            if owner is str or owner is Traced or owner is _GenerationTags:
                if kwargs:
                    kwargs.pop("_block_vars", None)  # what Context.call removes
                    kwargs.pop("_loop_vars", None)
                return obj(*args, **kwargs)
        return super().call(context, obj, *args, **kwargs)

    def getitem(self, obj: Any, argument: Any) -> Any:
        kind = type(obj)
        if kind is dict:
            if argument != "role":
                self._note_read(obj)
            try:  # what the sandbox returns for a dict item that exists
                return obj[argument]
            except (TypeError, LookupError):
                pass
        elif kind is list:
            item = super().getitem(obj, argument)
            st = self.respmask_tls.state
            if st is not None and st.pending and type(item) is dict:
                # ``messages[i]`` in an index loop: the iteration is that message's turn
                k = st.ids.get(id(item))
                if k is not None:
                    st.pending = False
                    st.set_owner(k)
            return item
        return super().getitem(obj, argument)


# filters that never return a string (numbers, lists): no wrapper. (``default`` stays wrapped: an
# empty value replaced by a literal default still marks where the value was.)
_NO_NEW_STRINGS = frozenset(
    ("length", "count", "int", "float", "abs", "round", "wordcount", "list", "dictsort", "items", "batch", "slice",
     "groupby", "select", "reject", "selectattr", "rejectattr", "map", "unique", "sort", "sum")
)


# filters whose traced results follow the characters exactly (the string's own methods, or the
# value itself); any other filter's result is marked as a whole: a filter may rebuild its text
# with plain-string operations (``indent`` joins lines with "\n".join) that drop marks
_KEEPS_MARKS = frozenset(("replace", "lower", "upper", "capitalize", "title", "string", "default", "d", "first", "last"))


def _smearing(func: Any, keeps_marks: bool = False) -> Any:
    """``func`` whose string results are marked as a whole by the message its inputs came from
    (traced results of a filter in :data:`_KEEPS_MARKS` are kept as they are)."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = func(*args, **kwargs)
        kind = type(result)
        if kind is str:
            return smear(result, (args, kwargs))
        if kind is Traced and not keeps_marks:
            return smear(str.__str__(result), (args, kwargs))
        return result

    for attr in ("jinja_pass_arg",):  # pass_context / pass_eval_context / pass_environment
        if hasattr(func, attr):
            setattr(wrapper, attr, getattr(func, attr))
    wrapper.__name__ = getattr(func, "__name__", "filter")
    return wrapper


def _traced_trim(func: Any) -> Any:
    """Jinja's ``trim`` filter (the commonest in chat templates), straight to ``Traced.strip``."""

    def trim(value: Any, chars: str | None = None) -> str:
        if type(value) is Traced:
            return value.strip(chars)
        return smear(func(value, chars), (value,))

    return trim


def _traced_safe(func: Any) -> Any:
    """Jinja's ``safe`` filter, keeping a traced string's marks (Mistral's ``arguments|tojson|safe``)."""

    def safe(value: Any) -> Any:
        result = func(value)
        if type(value) is Traced and type(result) is Markup and str.__eq__(result, value):
            out = TracedMarkup(result)
            out.marks = value.marks
            return out
        return result

    return safe


def _traced_join(func: Any) -> Any:
    """Jinja's ``join`` filter, keeping the marks of the items and the separator."""

    @jinja2.pass_eval_context
    def join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> str:
        if attribute is not None:
            from jinja2.filters import make_attrgetter

            value = map(make_attrgetter(eval_ctx.environment, attribute), value)
        items = list(value)
        text = func(eval_ctx, items, d)
        if type(text) is not str:
            return text
        parts: list[Any] = []
        for i, item in enumerate(items):
            if i:
                parts.append(str(d))
            parts.append(item if isinstance(item, str) else str(item))
        if sum(len(p) for p in parts) != len(text):  # pragma: no cover - defensive
            return smear(text, items)
        return concat(parts, text)

    return join


def _transformers_environment() -> jinja2.Environment | None:
    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template

        return _compile_jinja_template("").environment
    except Exception:  # pragma: no cover - depends on the transformers version
        return None


def _make_environment() -> _Environment:
    reference = _transformers_environment()
    extensions: list[Any] = [_GenerationTags]
    if reference is not None:
        for ext in reference.extensions.values():
            if "generation" not in getattr(ext, "tags", ()):
                extensions.append(type(ext))
    else:  # pragma: no cover
        extensions.append(jinja2.ext.loopcontrols)
    env = _Environment(trim_blocks=True, lstrip_blocks=True, extensions=extensions)
    if reference is not None:
        env.globals.update(reference.globals)
        namespace = reference.globals.get("namespace")
        if isinstance(namespace, type) and _plain_namespace(namespace):
            env.respmask_namespaces = frozenset({Namespace, namespace})
        env.filters.update(reference.filters)
        env.tests.update(reference.tests)
    env.concat = concat  # captured output (macros, {% set %} blocks) keeps its marks
    for name, func in list(env.filters.items()):
        if name == "join":
            env.filters[name] = _traced_join(func)
        elif name == "trim":
            env.filters[name] = _traced_trim(func)
        elif name == "safe":
            env.filters[name] = _traced_safe(func)
        elif name not in _NO_NEW_STRINGS:
            env.filters[name] = _smearing(func, name in _KEEPS_MARKS)
    hooks = _Hooks()
    env.respmask_hooks = hooks
    env.respmask_tls = hooks.tls
    for name, func in hooks.filters.items():
        env.filters[_PREFIX + name] = func
    return env


# ---------------------------------------------------------------------------------------------
# Static analysis: which expressions print template literals
# ---------------------------------------------------------------------------------------------


def _is_literal(node: nodes.Node | None, names: frozenset[str] | set[str]) -> bool:
    """True when ``node`` can only evaluate to text written in the template (or a role name)."""
    if node is None or isinstance(node, (nodes.Const, nodes.TemplateData)):
        return True
    if isinstance(node, nodes.Name):
        return node.name in names
    if isinstance(node, nodes.Getattr):
        return node.attr == "role" or _is_literal(node.node, names)
    if isinstance(node, nodes.Getitem):
        if isinstance(node.arg, nodes.Const) and node.arg.value == "role":
            return True
        return _is_literal(node.node, names) and _is_literal(node.arg, names)
    if isinstance(node, nodes.CondExpr):
        return _is_literal(node.expr1, names) and _is_literal(node.expr2, names)
    if isinstance(node, (nodes.Add, nodes.Mul)):
        return _is_literal(node.left, names) and _is_literal(node.right, names)
    if isinstance(node, nodes.Concat):
        return all(_is_literal(n, names) for n in node.nodes)
    if isinstance(node, (nodes.Tuple, nodes.List)):
        return all(_is_literal(n, names) for n in node.items)
    if isinstance(node, nodes.Filter):
        return (
            _is_literal(node.node, names)
            and all(_is_literal(a, names) for a in node.args)
            and all(_is_literal(k.value, names) for k in node.kwargs)
        )
    if isinstance(node, nodes.Call):
        return (
            isinstance(node.node, nodes.Getattr)
            and _is_literal(node.node.node, names)
            and all(_is_literal(a, names) for a in node.args)
            and all(_is_literal(k.value, names) for k in node.kwargs)
        )
    return False


def _literal_names(ast: nodes.Template) -> frozenset[str]:
    """Variables that only ever hold template literals (greatest fixpoint over assignments)."""
    bindings: dict[str, list[nodes.Node | None]] = defaultdict(list)

    def bind_target(target: nodes.Node, value: nodes.Node | None) -> None:
        if isinstance(target, nodes.Name):
            bindings[target.name].append(value)
        elif isinstance(target, nodes.Tuple):
            for item in target.items:
                bind_target(item, None)

    for node in ast.find_all((nodes.Assign, nodes.AssignBlock, nodes.For, nodes.Macro, nodes.CallBlock, nodes.With)):
        if isinstance(node, nodes.Assign):
            bind_target(node.target, node.node)
        elif isinstance(node, (nodes.AssignBlock, nodes.For)):
            bind_target(node.target, None)
        elif isinstance(node, (nodes.Macro, nodes.CallBlock)):
            for arg in node.args:
                bind_target(arg, None)
            if isinstance(node, nodes.Macro):
                bindings[node.name].append(None)
        elif isinstance(node, nodes.With):
            for target, value in zip(node.targets, node.values):
                bind_target(target, value)

    # A variable a template may also receive as a keyword argument (``{% if x is not defined %}``)
    # still counts as literal when every assignment is: keyword arguments are configuration.
    names = {n for n in SPECIAL_TOKEN_NAMES if n not in bindings}
    candidates = {n for n, values in bindings.items() if None not in values}
    names |= candidates
    changed = True
    while changed:
        changed = False
        for name in sorted(candidates & names):
            if not all(_is_literal(v, names) for v in bindings[name]):
                names.discard(name)
                changed = True
    return frozenset(names)


# ---------------------------------------------------------------------------------------------
# Instrumentation
# ---------------------------------------------------------------------------------------------


def _hook(name: str, *args: nodes.Expr, lineno: int) -> nodes.Filter:
    """``hook(None, *args)`` as a filter call: filters compile to plain Python calls."""
    node = nodes.Filter(nodes.Const(None), _PREFIX + name, list(args), [], None, None)
    return node.set_lineno(lineno)


def _as_load(target: nodes.Node) -> nodes.Expr:
    if isinstance(target, nodes.Name):
        return nodes.Name(target.name, "load")
    if isinstance(target, nodes.Tuple):
        return nodes.Tuple([_as_load(t) for t in target.items], "load")
    return nodes.Const(None)


class _Instrumenter:
    """Adds recording hooks to the outputs and loops that write straight to the output stream."""

    def __init__(self, literal_names: frozenset[str]):
        self.literal_names = literal_names

    def statements(self, body: list[nodes.Node]) -> list[nodes.Node]:
        out: list[nodes.Node] = []
        for node in body:
            if isinstance(node, nodes.Output):
                out.append(self.output(node))
            elif isinstance(node, nodes.For) and not node.recursive:
                ln = node.lineno
                # statements, not outputs: nothing is printed
                mark = nodes.ExprStmt(_hook("iteration", _as_load(node.target), lineno=ln)).set_lineno(ln)
                node.body = [mark, *self.statements(node.body)]
                node.else_ = self.statements(node.else_)
                out.append(nodes.ExprStmt(_hook("push", lineno=ln)).set_lineno(ln))
                out.append(node)
                out.append(nodes.ExprStmt(_hook("pop", lineno=ln)).set_lineno(ln))
            elif isinstance(node, nodes.If):
                node.body = self.statements(node.body)
                for elif_ in node.elif_:
                    elif_.body = self.statements(elif_.body)
                node.else_ = self.statements(node.else_)
                out.append(node)
            elif isinstance(node, (nodes.With, nodes.Scope, nodes.ScopedEvalContextModifier)):
                node.body = self.statements(node.body)
                out.append(node)
            else:
                # Macros, call blocks, filter blocks and {% set %} blocks capture their output into
                # a buffer the template may post-process: positions there are meaningless, so the
                # captured output is recorded where it is finally printed, as one piece.
                out.append(node)
        return out

    def output(self, node: nodes.Output) -> nodes.Output:
        children = []
        for child in node.nodes:
            if isinstance(child, nodes.TemplateData) or _is_literal(child, self.literal_names):
                children.append(child)
                continue
            ln = child.lineno
            # Jinja computes the value (``a + b``, ``a ~ b``: traced strings keep their marks)
            children.append(_hook("piece", _hook("clear", lineno=ln), child, lineno=ln))
        node.nodes = children
        return node


class ChatTemplate:
    """A chat template compiled once, instrumented: its render is ``apply_chat_template``'s text
    together with which message wrote each character (for span finding)."""

    def __init__(self, source: str):
        if not isinstance(source, str) or not source.strip():
            raise TemplateError("the chat template is empty")
        self.source = source
        self.env = _make_environment()
        try:
            ast = self.env.parse(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"the chat template does not parse: {exc} (line {exc.lineno})") from exc
        self.has_generation_tags = any(
            isinstance(n, nodes.CallBlock)
            and isinstance(n.call, nodes.Call)
            and isinstance(n.call.node, nodes.ExtensionAttribute)
            for n in ast.find_all(nodes.CallBlock)
        )
        self.literal_names = _literal_names(ast)
        # the strings the template writes as constants, whitespace removed: the markers it may read
        # from a message's text (``content.split('</think>')``), see _spans.content_left_out
        self.constants = frozenset(c for n in ast.find_all(nodes.Const) if isinstance(n.value, str)
                                   and len(c := "".join(n.value.split())) > 1)
        # the variables the template reads from its caller (messages, add_generation_prompt, its kwargs)
        self.reads = frozenset(meta.find_undeclared_variables(ast))
        self._told: set[str] = set()  # kwargs :meth:`unread_kwargs` has named already
        ast.body = _Instrumenter(self.literal_names).statements(ast.body)
        ast.set_environment(self.env)
        code = self.env.compile(ast)
        # the globals as a plain dict (the environment's are set once, above): Jinja copies them into
        # every render's context, which from its default ChainMap costs more than the copy itself
        self.template = self.env.template_class.from_code(self.env, code, dict(self.env.make_globals(None)), None)
        # ``a ~ b`` outside an output joins with this: keep the operands' marks
        self.template.root_render_func.__globals__["str_join"] = _str_join

    def unread_kwargs(self, kwargs: Mapping[str, Any]) -> str | None:
        """A warning for template kwargs this template never reads (a typo such as
        ``enable_thinkng``, or a kwarg of another model's template): they change nothing, in
        ``apply_chat_template`` as here, and transformers says nothing. Each name is told once
        per template; None when there is nothing new to tell."""
        names = [k for k in kwargs if k not in self.reads and k not in self._told]
        if not names:
            return None
        self._told.update(names)
        known = sorted(self.reads - set(self.env.globals) - set(SPECIAL_TOKEN_NAMES)
                       - {"messages", "tools", "documents", "add_generation_prompt"})
        hints = [f"{k!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(k, known, 1)) else repr(k)
                 for k in names]
        return (f"template kwarg(s) {', '.join(hints)} are not read by the chat template, so they change nothing "
                f"(the template reads {', '.join(map(repr, known[:12])) or 'no other variable'}"
                f"{', ...' if len(known) > 12 else ''}). Check the name, or the template.")

    def render(self, variables: Mapping[str, Any], tracked: Sequence[dict]) -> Rendered:
        """Render with ``variables``; ``tracked`` are the message dicts (as passed) to attribute output to."""
        hooks = self.env.respmask_hooks
        st = _State(tracked)
        previous = hooks.tls.state
        hooks.tls.state = st
        parts: list[str] = []
        try:
            ctx = self.template.new_context(dict(variables))
            try:
                for s in self.template.root_render_func(ctx):
                    parts.append(s)
                    if type(s) is Traced:
                        st.output(s)
                    else:  # the template's own text: only the position moves
                        st.pos += len(s)
                        st.gap_owner = None
            except Exception:
                self.env.handle_exception()
        finally:
            hooks.tls.state = previous
        return Rendered("".join(parts), st.owner_events, st.pieces, st.generation, st.reasoning, st.printed,
                        st.content)


def _str_join(seq: Any) -> str:
    return concat([x if type(x) is TracedMarkup else str(x) for x in seq])


# ---------------------------------------------------------------------------------------------
# Template inputs, prepared exactly as transformers prepares them
# ---------------------------------------------------------------------------------------------

try:  # transformers' own helpers keep the inputs identical to apply_chat_template's
    from transformers.utils.chat_template_utils import _alias_reasoning_fields as _alias_reasoning
    from transformers.utils.chat_template_utils import _plain_template_data as _plain
except ImportError:  # pragma: no cover - older or newer transformers
    _REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")

    def _plain(value: Any) -> Any:
        return value

    def _alias_reasoning(chat: list[dict]) -> list[dict]:
        out = []
        for message in chat:
            reasoning = next((message[k] for k in _REASONING_FIELDS if message.get(k) is not None), None)
            if reasoning is not None:
                message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
            out.append(message)
        return out


def _plain_message(message: Mapping[str, Any], owner: int) -> dict[str, Any]:
    """The message without None values, rebuilt from plain JSON types (a copy), its strings
    marked as written by message ``owner`` (all but its role).

    A message of string keys and string values is already plain: copied directly, which gives
    the same dict transformers' ``_plain_template_data`` builds, at a fraction of the cost.
    """
    if type(message) is dict:
        out: dict[str, Any] = {}
        for k, v in message.items():
            kind = type(v)
            if kind is str and type(k) is str:
                if k != "role":
                    v = Traced(v)
                    v.marks = ((0, len(v), owner, field_of(k)),)
                out[k] = v
            elif v is not None:
                break
        else:
            return out
    copy = _plain({k: v for k, v in message.items() if v is not None})
    return {k: v if k == "role" else mark(v, owner, field_of(k)) for k, v in copy.items()}


def _tool_schemas(tools: Sequence[Any] | None) -> list[dict] | None:
    if tools is None:
        return None
    schemas = []
    for tool in tools:
        if isinstance(tool, Mapping):
            schemas.append(tool)
        elif callable(tool):
            from transformers.utils import get_json_schema

            schemas.append(get_json_schema(tool))
        else:
            raise TypeError("tools must be JSON schemas (dicts) or functions with type hints and a docstring")
    return schemas


def template_constants(
    special_tokens: Mapping[str, Any] | None = None, template_kwargs: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The variables a template sees that do not depend on the conversation: the tokenizer's
    special tokens (structure) and the template kwargs (data of no message), kwargs first.

    Computed once per tokenizer and kwargs and shared between renders: strings are immutable and
    the sandbox lets no template change a list or dict it is given.
    """
    kwargs = _plain({**(special_tokens or {}), **(template_kwargs or {})})
    # template keyword arguments (custom instructions, dates...) are data of no message; the
    # tokenizer's special tokens are structure
    return {k: v if k in SPECIAL_TOKEN_NAMES else mark(v, NO_OWNER) for k, v in kwargs.items()}


_REASONING_KEY_SET = frozenset(REASONING_KEYS)


def template_inputs(
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Sequence[Any] | None = None,
    documents: Sequence[Mapping[str, Any]] | None = None,
    add_generation_prompt: bool = False,
    constants: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], list[dict]]:
    """The variables a template sees for ``messages``, and the message dicts inside them.

    Mirrors ``apply_chat_template``: keys whose value is None are dropped, inputs are rebuilt
    from plain JSON types, reasoning is aliased under ``reasoning_content`` and ``thinking``.
    ``constants`` are the variables that do not depend on the conversation: the
    :func:`template_constants` of the tokenizer's special tokens and the template kwargs.
    """
    chat = [_plain_message(m, k) for k, m in enumerate(messages)]
    if not all(_REASONING_KEY_SET.isdisjoint(m) for m in chat):
        chat = _alias_reasoning(chat)
    variables = dict(constants or {})
    # tools and documents are data too, of no message: never structure
    variables.update(
        messages=chat,
        tools=mark(_plain(_tool_schemas(tools)), NO_OWNER, TOOL_LIST) if tools is not None else None,
        documents=mark(_plain(list(documents)), NO_OWNER, DOCUMENTS) if documents is not None else None,
        add_generation_prompt=add_generation_prompt,
    )
    return variables, chat
