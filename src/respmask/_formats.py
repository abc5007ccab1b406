"""Dataset layouts, converted to the samples respmask trains on: no conversion code on your side.

Every front-end (``ResponseOnlyCollator``, ``Pretokenizer``, ``check``, ``preview`` and the
``respmask`` command) reads rows through one :class:`SampleReader`, chosen with the
``data_format`` and ``mapping`` options of :class:`respmask.ChatMasker`. It turns a row into the
sample :func:`respmask._samples.parse` takes (``messages`` in the OpenAI layout, plus ``tools``
and the row's other columns), before the chat template sees anything.

Formats (``data_format``):

``"messages"``
    OpenAI messages: ``{"messages": [{"role", "content", ...}], "tools"?: [...]}`` (the list may
    also be under ``conversations``). Used as it is, but for two storage forms:
    ``tools`` stored as a JSON string is parsed, and content parts that hold their text under
    ``value`` (LLaMA-Factory v1: ``{"type": "text", "value": ...}``) are read as text (one
    string when all of a message's parts are text, but for a processor: see
    ``SampleReader(join_text)``), their ``reasoning`` parts as ``reasoning_content``, their
    ``tool_call`` parts as ``tool_calls`` and their ``image_url`` parts (a path or URL) as images
    (``{"type": "image", "image": ...}``).
``"sharegpt"``
    ShareGPT / LLaMA-Factory: ``{"conversations": [{"from": ..., "value": ...}], "tools"?,
    "system"?}``. Roles ``human``/``user`` -> user, ``gpt``/``assistant``/``model`` ->
    assistant, ``system``, ``observation``/``tool`` -> tool (a tool result), and
    ``function_call``: an assistant tool call whose value is JSON ``{"name", "arguments"}`` or a
    list of them, turned into an assistant message with ``content: ""`` and OpenAI ``tool_calls``
    (consecutive calls, and a call right after an assistant reply, join that assistant message).
    A message's other keys (``reasoning_content``, ``train`` ...) are kept; value-style content
    parts are read as in ``"messages"``. A ``system`` column becomes the first message.
``"alpaca"``
    ``{"instruction", "input"?, "output", "system"?, "history"?}``: ``instruction``, then
    ``"\\n"`` and ``input`` when it is not empty (as LLaMA-Factory joins them), is the user
    message and ``output`` the assistant's; ``history`` (``[[user, assistant], ...]``) gives the
    turns before, trained like the rest.
``"prompt_completion"``
    ``{"prompt", "completion"}``: strings or message lists, used as they are.
``"preference"``
    Preference data, as the prompt and its chosen reply: a prompt (``messages`` /
    ``conversations``, ``prompt``, or Alpaca's ``instruction``) with ``chosen`` / ``rejected``
    replies (a string, one message or a list of messages; ``chosen`` alone may hold the whole
    conversation, TRL's implicit prompt), rendered as the prompt followed by ``chosen``, of which
    only ``chosen`` is trained (the prompt's assistant turns are context, as in preference
    training; the rejected reply is never rendered); a KTO row (a ``kto_tag`` or boolean ``label`` column) is
    trained when the flag is true (its last message, the judged reply) and rejected when it is
    false. Every other format
    rejects preference rows with an error naming their columns, so that they are never trained
    by accident (a DPO prompt alone, a KTO row's undesirable reply).
``mapping=MessageMapping(...)``
    Any other list of messages: which column holds them, which keys hold role and content, and
    a role map (``{"bot": "assistant"}``), in the spirit of Axolotl's ``field_messages`` and
    ``message_property_mappings``. Messages are then read as in ``"sharegpt"``.

``"auto"`` (the default) decides per row, by the first rule that matches (:func:`detect_format`):
a ``messages`` (else ``conversations``) list whose first message has ``from`` and no ``role`` ->
sharegpt, any other such list -> messages; ``instruction`` and ``output`` -> alpaca; ``prompt`` and
``completion`` -> prompt_completion; ``input_ids`` -> pre-tokenized (used as it is). A column
holding ``None`` counts as absent. A row matching no rule raises
:class:`respmask.MissingColumnsError` listing its columns and these formats.

A row with images, video or audio (an ``images`` / ``videos`` / ``audios`` column, or such
content parts) needs the model's processor: a text tokenizer rejects it (:func:`media_error`)
unless ``text_only=True`` drops the media. LLaMA-Factory's ``<image>`` / ``<audio>`` / ``<video>``
placeholders become media parts when the row's ``images`` / ``audios`` / ``videos`` column holds
exactly one item per placeholder, and audio or video parts that hold no medium take the column's
items in order (image parts stay as written).

Conversion never changes the caller's row (a new dict is returned when anything changes), keeps
the columns it does not consume (``chat_template_kwargs``, ``documents``, ...), and raises
:class:`respmask.SampleError` naming the column and message in the row's own terms. Tool schemas
given bare (``{"name", "description", "parameters"}``, as glaive and LLaMA-Factory ship them) are
wrapped in the OpenAI form ``{"type": "function", "function": ...}`` in the sharegpt, alpaca and
mapped formats; an empty ``tools`` string (``""`` or ``"[]"``) means no tools. Message indices
in errors raised later (by the template or the engine) count the converted messages.
"""

from __future__ import annotations

import difflib
import json
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from types import MappingProxyType

from ._errors import MissingColumnsError, SampleError
from ._origin import REASONING_KEYS

DataFormat = Literal["auto", "messages", "sharegpt", "alpaca", "prompt_completion", "preference"]
FORMATS: tuple[str, ...] = ("messages", "sharegpt", "alpaca", "prompt_completion", "preference")

#: Columns that make a row preference data: a DPO pair of replies, or a KTO desirability flag
#: (LLaMA-Factory's ``kto_tag``, TRL's boolean ``label``).
PREFERENCE_PAIR = ("chosen", "rejected")
KTO_TAGS = ("kto_tag", "label")
_PREFERENCE_KEYS = frozenset(PREFERENCE_PAIR + KTO_TAGS)
#: Columns and content-part types that hold images, video or audio (what a text tokenizer cannot use).
MEDIA_COLUMNS = ("images", "videos", "audios")
_MEDIA_KEYS = frozenset(MEDIA_COLUMNS)
MEDIA_PARTS = frozenset({"image", "image_url", "input_image", "video", "video_url", "audio", "audio_url",
                         "input_audio"})
IMAGE_PLACEHOLDER = "<image>"  # LLaMA-Factory's placeholder for the next image of the 'images' column
#: LLaMA-Factory's placeholders for the next item of each media column, and the part type each becomes.
PLACEHOLDERS = {"images": (IMAGE_PLACEHOLDER, "image"), "audios": ("<audio>", "audio"), "videos": ("<video>", "video")}

#: Role names the sharegpt and mapped formats understand without a role map, and what they become.
#: ``"function_call"`` stands for an assistant tool call (JSON ``{"name", "arguments"}``).
KNOWN_ROLES: Mapping[str, str] = MappingProxyType({
    "system": "system",
    "developer": "developer",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "model": "assistant",
    "tool": "tool",
    "observation": "tool",
    "function_call": "function_call",
})
FUNCTION_CALL = "function_call"
#: what a message may hold instead of a ``content``: an assistant's tool calls, a refusal, its reasoning
NOT_CONTENT_DATA = frozenset({"tool_calls", FUNCTION_CALL, "refusal", *REASONING_KEYS})


def mapping_hint(**fields: Any) -> str:
    """A :class:`MessageMapping` with ``fields`` (``field_messages``, ``role_key``, ``content_key``,
    ``role_map``, in that order), written as the API call and as the CLI flags that make it: the
    fix an error or report names."""
    order = [k for k in ("field_messages", "role_key", "content_key", "role_map") if k in fields]
    call = ", ".join(f"{k}={fields[k]!r}" for k in order)
    flags = " ".join(f"--{k.replace('_', '-')} " + (f"'{json.dumps(fields[k])}'" if k == "role_map" else fields[k])
                     for k in order)
    return f"mapping=MessageMapping({call}) (CLI: {flags})"

HINT_FORMATS = (
    "respmask reads: messages ('messages': [{role, content}]), sharegpt ('conversations': [{from, value}]), "
    "alpaca ('instruction', 'input', 'output'), prompt_completion ('prompt', 'completion') and pre-tokenized "
    "rows ('input_ids' with 'labels' or 'assistant_masks'); for another layout pass "
    "mapping=MessageMapping(field_messages=..., role_key=..., content_key=..., role_map={...}) "
    "(respmask check/preview/tokenize: --field-messages, --role-key, --content-key, --role-map)"
)


@dataclass(frozen=True)
class MessageMapping:
    """Where a row keeps its messages and how to read them, for layouts respmask does not know.

    Args:
        field_messages: the column holding the list of messages.
        role_key: the key of a message that holds its role.
        content_key: the key of a message that holds its text (a string or content parts).
        role_map: role names of the data -> respmask roles (``"user"``, ``"assistant"``,
            ``"system"``, ``"tool"``, or ``"function_call"`` for an assistant tool call written
            as JSON). Names in :data:`KNOWN_ROLES` (``human``, ``gpt`` ...) need no entry; any
            other role raises a :class:`respmask.SampleError` naming it.

    Raises:
        ValueError: a key is not a non-empty string, or the role map is not strings to strings.

    Example::

        mapping = respmask.MessageMapping(field_messages="dialog", role_key="speaker",
                                          content_key="text",
                                          role_map={"customer": "user", "agent": "assistant"})
        collator = respmask.ResponseOnlyCollator(tok, mapping=mapping)
    """

    field_messages: str = "messages"
    role_key: str = "role"
    content_key: str = "content"
    role_map: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("field_messages", "role_key", "content_key"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"MessageMapping.{name} must be a non-empty string, got {value!r}")
        if not isinstance(self.role_map, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in self.role_map.items()
        ):
            raise ValueError(
                f"MessageMapping.role_map must map role names to role names, got {self.role_map!r}"
            )
        targets = set(KNOWN_ROLES.values())
        for source, target in self.role_map.items():
            close = difflib.get_close_matches(target, sorted(targets), n=1, cutoff=0.8)
            if target not in targets and close:  # a misspelt role: its messages would render as an unknown role
                raise ValueError(
                    f"MessageMapping.role_map maps {source!r} to {target!r}, which is not a role: did you mean "
                    f"{close[0]!r}? (roles: {', '.join(sorted(targets))}; a template's own role such as 'ipython' "
                    "is kept as written)"
                )
        object.__setattr__(self, "role_map", dict(self.role_map))

    @classmethod
    def of(cls, value: MessageMapping | Mapping[str, Any]) -> MessageMapping:
        """A mapping from a ``MessageMapping`` or a dict of its fields.

        Raises:
            ValueError: the dict has keys that are not fields of ``MessageMapping``.
        """
        if isinstance(value, MessageMapping):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(
                f"mapping must be a MessageMapping or a dict of its fields, got {type(value).__name__}"
            )
        unknown = sorted(set(value) - {"field_messages", "role_key", "content_key", "role_map"})
        if unknown:
            raise ValueError(
                f"mapping has unknown keys {unknown}: use field_messages, role_key, content_key and role_map"
            )
        return cls(**value)


SHAREGPT = MessageMapping("conversations", "from", "value")


# ---------------------------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------------------------


def _present(row: Mapping[str, Any], key: str) -> bool:
    return row.get(key) is not None


def _first_keys(messages: Any) -> tuple[bool, bool]:
    """(first message has 'role', first message has 'from')."""
    if isinstance(messages, (list, tuple)) and messages and isinstance(messages[0], Mapping):
        return "role" in messages[0], "from" in messages[0]
    return False, False


def _message_field(row: Mapping[str, Any]) -> str | None:
    for key in ("messages", "conversations"):
        if _present(row, key):
            return key
    return None


def detect_format(row: Any) -> str:
    """The format ``"auto"`` reads ``row`` as: one of :data:`FORMATS`, or ``"pretokenized"``.

    The first rule that matches decides (a column holding ``None`` counts as absent):

    1. a ``messages`` (else ``conversations``) column, or a bare list of messages, whose first
       message has ``from`` (and no ``role``) -> ``"sharegpt"``; any other such list (``role``
       keys, empty, malformed: its own errors tell) -> ``"messages"``;
    2. ``instruction`` and ``output`` -> ``"alpaca"``;
    3. ``prompt`` and ``completion`` -> ``"prompt_completion"``;
    4. ``input_ids`` -> ``"pretokenized"``.

    Raises:
        MissingColumnsError: no rule matches; the message lists the row's columns and the formats.
        SampleError: the row is neither a dict nor a list of messages.
    """
    if isinstance(row, (list, tuple)):
        has_role, has_from = _first_keys(row)
        return "sharegpt" if has_from and not has_role else "messages"
    if not isinstance(row, Mapping):
        raise SampleError(f"a sample must be a dict (or a list of messages), got {type(row).__name__}")
    key = _message_field(row)
    if key is not None:
        has_role, has_from = _first_keys(row[key])
        return "sharegpt" if has_from and not has_role else "messages"
    if _present(row, "instruction") and "output" in row:
        return "alpaca"
    if "prompt" in row and "completion" in row:
        return "prompt_completion"
    if "input_ids" in row:
        return "pretokenized"
    raise no_format(row)


def no_format(row: Mapping[str, Any]) -> MissingColumnsError:
    keys = sorted(map(str, row.keys()))
    return MissingColumnsError(
        f"has none of the columns respmask needs (it has {keys}). {HINT_FORMATS}."
    )


# ---------------------------------------------------------------------------------------------
# Pieces shared by the formats
# ---------------------------------------------------------------------------------------------


def without_none(value: Any) -> Any:
    """``value`` without the None-valued keys of its dicts, at every depth, as TRL's
    ``remove_none_values`` drops them (items of a list are kept, None or not): ``value`` itself
    when it holds none, else a copy (lists for tuples); never changed in place. Strings are not
    looked into."""
    if isinstance(value, Mapping):
        out = {}
        changed = False
        for k, v in value.items():
            if v is None:
                changed = True
                continue
            w = v if isinstance(v, (str, int, float)) else without_none(v)
            changed = changed or w is not v
            out[k] = w
        return out if changed else value
    if isinstance(value, (list, tuple)):
        items = [v if v is None or isinstance(v, (str, int, float)) else without_none(v) for v in value]
        return items if any(w is not v for w, v in zip(items, value)) else value
    return value


#: Columns whose structured value (not a JSON string) loses its None-valued keys, and the columns
#: whose messages' ``tool_calls`` do: see :func:`_padding_dropped`.
_STRUCTURED_COLUMNS = ("tools", "documents", "chat_template_kwargs")
_MESSAGE_COLUMNS = ("messages", "conversations", "prompt", "completion", "chosen", "rejected")


def _calls_dropped(messages: Any) -> Any:
    """``messages`` with the None-valued keys of each message's ``tool_calls`` dropped
    (:func:`without_none`): ``messages`` itself when none has any."""
    if not isinstance(messages, (list, tuple)):
        return messages
    out = None
    for i, m in enumerate(messages):
        # plain type checks first: an ABC check costs more on every message
        calls = m.get("tool_calls") if type(m) is dict or isinstance(m, Mapping) else None
        if calls is not None:
            if isinstance(calls, (list, tuple)):
                clean = without_none(calls)
                if clean is not calls:
                    if out is None:
                        out = list(messages)
                    out[i] = {**m, "tool_calls": clean}
    return messages if out is None else out


def _padding_dropped(row: Any, field_messages: str | None) -> Any:
    """``row`` without the None-valued keys Arrow adds: Parquet, ``Dataset.from_list`` and
    ``from_pandas`` store a column of dicts as one struct type holding every key any row has, so
    a row's tool call ``{"city": "Paris"}`` comes back as ``{"city": "Paris", "query": None}``
    and its tool schemas, documents and template kwargs carry the other rows' keys as None. A
    template would print them (``"query": null``), and a tool call's arguments are trained. So,
    as TRL's ``remove_none_values`` does, None-valued keys are dropped at every depth from the
    messages' ``tool_calls`` and from ``tools``, ``documents`` and ``chat_template_kwargs``. A
    value given as a JSON string is kept as written (Arrow never pads inside a string; an
    explicit ``null`` there stays). ``row`` itself when nothing changes; never changed in place."""
    if type(row) is not dict:
        if isinstance(row, (list, tuple)):
            return _calls_dropped(row)
        if not isinstance(row, Mapping):
            return row
    new: dict[str, Any] | None = None
    for key in (*_MESSAGE_COLUMNS, *(() if field_messages is None else (field_messages,))):
        value = row.get(key)
        if isinstance(value, (list, tuple)):
            clean = _calls_dropped(value)
            if clean is not value:
                new = dict(row) if new is None else new
                new[key] = clean
    for key in _STRUCTURED_COLUMNS:
        value = row.get(key)
        if value is not None and not isinstance(value, str):
            clean = without_none(value)
            if clean is not value:
                new = dict(row) if new is None else new
                new[key] = clean
    return row if new is None else new


def _tools(value: Any, wrap: bool) -> Any:
    """``tools`` as a list (a JSON string parsed; empty means none), bare schemas wrapped when
    ``wrap``. Anything else is returned for parse() to judge."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SampleError(
                f"'tools' is a string but not JSON ({exc.msg} at character {exc.pos})"
            ) from None
        if isinstance(value, Mapping):
            value = [value]
        if not isinstance(value, list):
            raise SampleError(f"'tools' holds JSON {type(value).__name__}, not a list of tool schemas")
        if not value:
            return None
    if wrap and isinstance(value, (list, tuple)):
        if not value:
            return None
        value = [_wrap_tool(t) for t in value]
    return value


def _wrap_tool(tool: Any) -> Any:
    bare = isinstance(tool, Mapping) and "function" not in tool and "name" in tool
    if bare and tool.get("type") in (None, "function"):
        return {"type": "function", "function": {k: v for k, v in tool.items() if k != "type"}}
    return tool


def check_arguments(function: Mapping[str, Any], where: str) -> None:
    """A tool call's ``arguments`` given as a string must be JSON. Chat templates write such a
    string as it is (Qwen's and DeepSeek's print it, Llama 3.1's quotes it with ``tojson``), so
    one that is not JSON would train the model to write a broken tool call. Checked where rows
    are read (OpenAI messages in :mod:`respmask._samples`, ShareGPT ``function_call`` values
    here), once for every template. Arguments given as a dict (or any other value) stay as
    they are.

    Raises:
        SampleError: the arguments are a string that is not JSON (``where`` names the call).
    """
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        return
    try:
        json.loads(arguments)
    except json.JSONDecodeError as exc:
        raise SampleError(
            f"{where}: the 'arguments' of its call of {function.get('name')!r} are a string that is not JSON "
            f"({exc.msg} at character {exc.pos}: {arguments!r:.60}): the chat template writes it as it is, so the "
            "model would learn to write a broken tool call. Fix the arguments in the data (a JSON object, as a "
            "string or a dict), or drop the row."
        ) from None


def _tool_calls(value: Any, where: str) -> list[dict[str, Any]]:
    """OpenAI ``tool_calls`` from a function call written as JSON ``{"name", "arguments"}``, a list
    of them, or already as ``{"type": "function", "function": {...}}``."""
    if not isinstance(value, str):
        value = without_none(value)  # a structured value, as Arrow pads it (see _padding_dropped)
    else:
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise SampleError(
                f"{where} is a function call but its value is not JSON ({exc.msg} at character {exc.pos}): "
                'expected {"name": ..., "arguments": {...}} or a list of them'
            ) from None
    calls = value if isinstance(value, list) else [value]
    if not calls:
        raise SampleError(f"{where} is a function call with an empty list of calls")
    out = []
    for k, call in enumerate(calls):
        what = f"{where}" if len(calls) == 1 else f"{where}, call {k}"
        if not isinstance(call, Mapping):
            raise SampleError(
                f'{what}: a function call must be {{"name": ..., "arguments": ...}}, got {call!r:.80}'
            )
        if isinstance(call.get("function"), Mapping):
            call = {**call["function"], **{k2: v for k2, v in call.items() if k2 not in ("function", "type")}}
        name = call.get("name")
        if not isinstance(name, str) or not name:
            raise SampleError(f"{what}: a function call needs a 'name' (got keys {sorted(map(str, call))})")
        function: dict[str, Any] = {"name": name, "arguments": call.get("arguments", {})}
        check_arguments(function, what)
        entry: dict[str, Any] = {"type": "function", "function": function}
        if call.get("id") is not None:
            entry["id"] = call["id"]
        out.append(entry)
    return out


_REASONING_PARTS = ("reasoning", "thinking")
# LLaMA-Factory v1's media parts name the medium's location (``image_url``: a path or URL): they are the
# medium's own part ({"type": "image", "image": <path or URL>}), as chat templates and processors read it
_MEDIUM_OF_URL = {"image_url": "image", "video_url": "video", "audio_url": "audio"}


def _value_part(part: Any) -> bool:
    """A content part that keeps its payload under ``value`` (``{"type": "text", "value": ...}``)
    rather than under its type's name (``{"type": "text", "text": ...}``)."""
    if not isinstance(part, Mapping) or "value" not in part:
        return False
    kind = part.get("type")
    return kind is None or (isinstance(kind, str) and kind not in part)


def _add_calls(message: dict[str, Any], calls: list[dict[str, Any]], where: str) -> None:
    existing = message.get("tool_calls")
    if existing is not None and not isinstance(existing, (list, tuple)):
        raise SampleError(f"{where}['tool_calls'] must be a list, got {type(existing).__name__}")
    message["tool_calls"] = [*(existing or []), *calls]


def _content(content: Any, where: str, join: bool = True) -> tuple[Any, str | None, list[dict[str, Any]]]:
    """(content, reasoning, tool calls) of a message's content.

    Content parts that keep their payload under ``value`` (LLaMA-Factory v1) are converted:
    ``text`` parts to text (joined into one string when every remaining part is text, as
    LLaMA-Factory does and text templates read it, unless ``join`` is False: then text parts,
    which a processor's template reads and some, like LLaVA's, read only), ``reasoning`` parts
    to reasoning, ``tool_call`` parts to tool calls, ``image_url`` / ``video_url`` /
    ``audio_url`` parts to that medium's part (``{"type": "image", "image": value}``), other
    parts to ``{"type": t, t: value}``. Other content is returned unchanged.
    """
    if not isinstance(content, (list, tuple)) or not any(_value_part(p) for p in content):
        return content, None, []
    parts: list[Any] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for k, part in enumerate(content):
        if not _value_part(part):
            parts.append(part)
            continue
        kind, value = part.get("type"), part["value"]
        rest = {key: v for key, v in part.items() if key not in ("type", "value")}
        if kind in _REASONING_PARTS:
            if not isinstance(value, str):
                raise SampleError(f"{where}[{k}] is a {kind} part whose value is not a string")
            reasoning.append(value)
        elif kind == "tool_call":
            calls += _tool_calls(value, f"{where}[{k}]")
        elif kind == "text" or kind is None:
            parts.append({"type": "text", "text": value, **rest})
        else:  # a medium: LLaMA-Factory v1 writes an image as {"type": "image_url", "value": <path or URL>}
            kind = _MEDIUM_OF_URL.get(kind, kind)
            parts.append({"type": kind, kind: value, **rest})
    text_only = all(isinstance(p, Mapping) and p.get("type") == "text" and isinstance(p.get("text"), str)
                    and len(p) == 2 for p in parts)
    new: Any = "".join(p["text"] for p in parts) if text_only and join else parts
    return new, ("\n".join(reasoning) if reasoning else None), calls


def _with_parts(message: dict[str, Any], where: str, join: bool = True) -> dict[str, Any]:
    """``message`` (a new dict) with value-style content parts converted (see :func:`_content`)."""
    content, reasoning, calls = _content(message.get("content"), f"{where}['content']", join)
    if reasoning is None and not calls and content is message.get("content"):
        return message
    message = dict(message)
    if content is None:
        message.pop("content", None)
    else:
        message["content"] = content
    if reasoning is not None:
        if any(message.get(k) is not None for k in ("reasoning_content", "thinking", "reasoning")):
            raise SampleError(f"{where} has reasoning both in its content parts and in a reasoning field")
        message["reasoning_content"] = reasoning
    if calls:
        _add_calls(message, calls, where)
    return message


def _system_first(messages: list[dict[str, Any]], system: Any, column: str) -> list[dict[str, Any]]:
    """Prepend the ``system`` column as the first message (once)."""
    if system is None or system == "":
        return messages
    if not isinstance(system, str):
        raise SampleError(f"'{column}' must be a string (the system prompt), got {type(system).__name__}")
    if messages and isinstance(messages[0], Mapping) and messages[0].get("role") == "system":
        if messages[0].get("content") == system:
            return messages
        raise SampleError(
            f"has a '{column}' column and also starts its conversation with another system message: keep one "
            f"(ds.remove_columns('{column}') keeps the messages' own, or drop that first message)"
        )
    return [{"role": "system", "content": system}, *messages]


# ---------------------------------------------------------------------------------------------
# Preference rows and media
# ---------------------------------------------------------------------------------------------


def _kto_key(row: Mapping[str, Any]) -> str | None:
    """The column holding a KTO desirability flag: ``kto_tag``, or a ``label`` that is a boolean."""
    if row.get("kto_tag") is not None:
        return "kto_tag"
    label = row.get("label")
    if isinstance(label, bool) or type(label).__name__ == "bool_":
        return "label"
    return None


def _as_prompt(messages: Any) -> list[Any]:
    """Messages of a preference row's prompt, marked ``"train": false`` (copies, their own
    ``loss_weight`` left out): the preference judges the reply that follows them, not their
    assistant turns."""
    return [{**{k: v for k, v in m.items() if k != "loss_weight"}, "train": False} if isinstance(m, Mapping) else m
            for m in messages]


def preference_columns(row: Any) -> list[str]:
    """The columns that make ``row`` preference data (``[]`` for a plain SFT row): ``chosen`` /
    ``rejected`` (a DPO pair of replies), or the KTO flag (``kto_tag``, a boolean ``label``)."""
    if type(row) is dict and _PREFERENCE_KEYS.isdisjoint(row):  # the usual row: none of the columns
        return []
    if not isinstance(row, Mapping):
        return []
    found = [key for key in PREFERENCE_PAIR if row.get(key) is not None]
    kto = _kto_key(row)
    return found + [kto] if kto else found


def preference_error(row: Mapping[str, Any], columns: list[str]) -> SampleError:
    """Why a preference row is not read as SFT data, and what to do (``data_format="preference"``)."""
    shown = ", ".join(repr(c) for c in columns)
    if any(c in PREFERENCE_PAIR for c in columns):
        what = ("'chosen' and 'rejected' hold two candidate replies to one prompt (DPO data), and supervised "
                "fine-tuning trains one reply")
        fix = "to train the chosen reply after its prompt (the rejected one is never trained)"
    else:
        key = columns[-1]
        what = (f"{key!r} says whether its reply is desirable (KTO data), and supervised fine-tuning would train "
                "undesirable replies too")
        fix = (f"to train the rows whose {key!r} is true (the others are rejected); if {key!r} means something else, "
               "rename that column")
    these = "columns" if len(columns) > 1 else "column"
    return SampleError(
        f"is a preference row ({these} {shown}), which respmask does not train as it is: {what}. Pass "
        f"data_format='preference' (CLI: --format preference) {fix}, or drop {'those' if len(columns) > 1 else 'that'} "
        f"{these}."
    )


def media_in(row: Any) -> dict[str, int]:
    """What ``row`` holds that only a processor can use: ``{"'images' column": 2, "image parts": 1}``
    (empty for a text row). Looks at the media columns (``images``, ``videos``, ``audios``) and at
    the content parts (``{"type": "image" | "image_url" | "video" | "audio" ...}``) of any list of
    messages in the row, in any layout, without converting it."""
    found: dict[str, int] = {}
    lists: list[Any] = []
    if isinstance(row, Mapping):
        for column in MEDIA_COLUMNS:
            value = row.get(column)
            n = len(value) if isinstance(value, (list, tuple)) else int(value is not None and value != "")
            if n:
                found[f"{column!r} column"] = n
        lists = [v for v in row.values() if isinstance(v, (list, tuple))]
        lists += [[v] for v in row.values() if isinstance(v, (dict, Mapping))]  # a single message ('chosen')
    elif isinstance(row, (list, tuple)):
        lists = [row]
    for messages in lists:  # runs on every row a text tokenizer reads: plain type checks first, ABCs after
        for m in messages:
            if type(m) is not dict and not isinstance(m, Mapping):
                continue
            for content in m.values():
                if type(content) is not list and (type(content) is str or not isinstance(content, (list, tuple))):
                    continue
                for part in content:
                    if isinstance(part, (dict, Mapping)) and part.get("type") in MEDIA_PARTS:
                        kind = next(k for k in ("image", "video", "audio") if k in part["type"])
                        found[f"{kind} parts"] = found.get(f"{kind} parts", 0) + 1
    return found


def describe_media(found: Mapping[str, int]) -> str:
    """``"2 items in its 'images' column and 1 image part"`` for :func:`media_in`'s result."""
    items = []
    for what, n in found.items():
        if what.endswith("column"):
            items.append(f"{n} item{'s' if n != 1 else ''} in its {what}")
        else:
            items.append(f"{n} {what if n != 1 else what[:-1]}")
    return " and ".join(items)


def media_error(found: Mapping[str, int]) -> SampleError:
    """A row with images (video, audio) given to a text tokenizer: what happened and what to do."""
    kinds = [name for k, name in (("image", "images"), ("video", "video"), ("audio", "audio"))
             if any(k in what for what in found)]
    return SampleError(
        f"holds {' and '.join(kinds) if kinds else 'media'} ({describe_media(found)}), which a text tokenizer cannot "
        "use. Read with the tokenizer alone, they would be dropped and any '<image>' placeholder trained as text. "
        "Pass the "
        "model's processor instead of its tokenizer (ResponseOnlyCollator(processor), respmask.check(rows, "
        "processor), respmask.preview(row, processor), respmask check/preview --processor DIR; respmask tokenize and the Pretokenizer take text only), or "
        "train on the text alone on purpose with text_only=True (CLI: --text-only)."
    )


def joined_text(parts: Sequence[Any]) -> str | None:
    """``parts`` as one string, their texts joined, when every one is a text part
    (``{"type": "text", "text": str}``); None when some part is anything else."""
    if all(isinstance(p, Mapping) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in parts):
        return "".join(p["text"] for p in parts)
    return None


def _text_of(content: Any) -> Any:
    """Content without its media parts: the text parts joined into one string when only text is
    left (as LLaMA-Factory joins them), else the remaining parts."""
    if not isinstance(content, (list, tuple)):
        return content
    kept = [p for p in content if not (isinstance(p, Mapping) and p.get("type") in MEDIA_PARTS)]
    text = joined_text(kept)
    return kept if text is None else text


def _media_parts(text: str, placeholders: Mapping[str, str]) -> list[dict[str, Any]]:
    """A string with placeholders (``{"<image>": "image", "<audio>": "audio"}``) as content parts:
    a media part of that type for each placeholder, the text between as text parts."""
    pattern = re.compile("|".join(re.escape(p) for p in placeholders))
    parts: list[dict[str, Any]] = []
    at = 0
    for hit in pattern.finditer(text):
        if hit.start() > at:
            parts.append({"type": "text", "text": text[at:hit.start()]})
        parts.append({"type": placeholders[hit.group()]})
        at = hit.end()
    if at < len(text):
        parts.append({"type": "text", "text": text[at:]})
    return parts


def _image_parts(text: str) -> list[dict[str, Any]]:
    """A string with ``<image>`` placeholders as content parts: an image part for each."""
    return _media_parts(text, {IMAGE_PLACEHOLDER: "image"})


def _fill_parts(messages: list[Any], kind: str, items: Sequence[Any]) -> bool:
    """Give each ``kind`` part that holds no medium (``{"type": "audio"}``) the next of ``items``
    under its ``kind`` key (new part dicts; ``messages`` is a copy the caller owns), when there is
    exactly one item per such part and no part holds its own. Returns whether anything changed."""
    spots = [(i, j) for i, m in enumerate(messages) if isinstance(m, Mapping)
             and isinstance(m.get("content"), (list, tuple))
             for j, part in enumerate(m["content"]) if isinstance(part, Mapping) and part.get("type") == kind]
    bare = [(i, j) for i, j in spots if messages[i]["content"][j].get(kind) is None]
    if not bare or len(bare) != len(spots) or len(bare) != len(items):
        return False
    for (i, j), item in zip(bare, items):
        content = list(messages[i]["content"])
        content[j] = {**content[j], kind: item}
        messages[i] = {**messages[i], "content": content}
    return True


def _with_media(sample: Any, text_only: bool) -> Any:
    """LLaMA-Factory's ``<image>`` / ``<audio>`` / ``<video>`` placeholders as media parts (each
    kind when the row's ``images`` / ``audios`` / ``videos`` column holds exactly one item per
    placeholder); audio and video parts that hold no medium given the column's items in order
    (chat templates such as Qwen2-Audio's render an audio part only when it has an ``audio`` key;
    image parts stay as written, as TRL and LLaMA-Factory write them); and with ``text_only`` every
    media part and column dropped. ``sample`` is a converted sample (``messages``); a new dict when
    anything changes."""
    if not isinstance(sample, Mapping) or not isinstance(sample.get("messages"), (list, tuple)):
        return sample
    messages = list(sample["messages"])
    changed = False
    strings = [m["content"] for m in messages if isinstance(m, Mapping) and isinstance(m.get("content"), str)]
    placeholders = {}
    for column, (placeholder, kind) in PLACEHOLDERS.items():
        items = sample.get(column)
        n = len(items) if isinstance(items, (list, tuple)) else 0
        found = sum(text.count(placeholder) for text in strings) if n else 0
        if n and found == n:
            placeholders[placeholder] = kind
        elif found and text_only:  # the column goes; placeholders left in the text would be trained as text
            raise SampleError(
                f"has {found} {placeholder!r} placeholder(s) in its messages for {n} item(s) in its {column!r} "
                f"column: they do not pair up, so respmask cannot tell the placeholders from text, and with "
                f"text_only the text is trained. Fix the row (one placeholder per item), or remove the placeholders"
            )
    if placeholders:
        for i, m in enumerate(messages):
            if (isinstance(m, Mapping) and isinstance(m.get("content"), str)
                    and any(p in m["content"] for p in placeholders)):
                messages[i] = {**m, "content": _media_parts(m["content"], placeholders)}
                changed = True
    if text_only:
        for i, m in enumerate(messages):
            if isinstance(m, Mapping) and isinstance(m.get("content"), (list, tuple)):
                messages[i] = {**m, "content": _text_of(m["content"])}
                changed = True
        if any(column in sample for column in MEDIA_COLUMNS):
            changed = True
    else:
        for column, kind in (("audios", "audio"), ("videos", "video")):
            items = sample.get(column)
            if isinstance(items, (list, tuple)) and items:
                changed = _fill_parts(messages, kind, items) or changed
    if not changed:
        return sample
    out = {k: v for k, v in sample.items() if not (text_only and k in MEDIA_COLUMNS)}
    out["messages"] = messages
    return out


# ---------------------------------------------------------------------------------------------
# Content as the template reads it: a string, or one text part
# ---------------------------------------------------------------------------------------------

# one word per role, planted as that role's content (a string, or one text part) by content_forms
_ROLE_WORDS = {"system": "zqsystemword", "user": "zquserword", "assistant": "zqassistantword", "tool": "zqtoolword"}
_FORM_PROBES = (("user", "assistant"), ("system", "user", "assistant"), ("user", "assistant", "tool", "assistant"))
PART_KEYS = ("'type'", '"type"')  # a part's key as a printed list shows it (Python's repr, or JSON)


@dataclass(frozen=True)
class ContentForms:
    """Which form of a message's text a chat template reads, per role (see :func:`content_forms`).

    Attributes:
        parts: roles whose string content the template leaves out but whose one text part it
            renders (LLaVA-1.5's ``selectattr('type', 'equalto', 'text')`` skips a string).
        printed: roles whose one text part the template prints as the list it is (Python's repr,
            ``[{'type': 'text', 'text': ...}]``: a template that only prints strings, as Llama
            3.1's), the part's ``type`` key showing in the render: that text is read (and trained)
            as written, which :func:`respmask.check` reports.
    """

    parts: frozenset[str] = frozenset()
    printed: frozenset[str] = frozenset()


def content_forms(render: Callable[[list[dict[str, Any]]], str]) -> ContentForms:
    """The form of a message's text the template reads, learned from ``render(messages)``.

    In the OpenAI message format a string content and one text part (``[{"type": "text", "text":
    s}]``) are the same message; templates read one of them. Datasets hold either (LLaMA-Factory's
    mllm_demo.json writes replies as strings for vision models; many text datasets write text
    parts), and the other form renders as nothing, or as a list's repr, trained as text. Probe
    conversations (a user turn and a reply; the same after a system turn; with a tool result and a
    second reply) are rendered with every content a string, then with one role's content written as
    a text part: a role whose word only the part renders reads parts. A template that renders a
    part otherwise than its string, as Llama 3.1's prints a list's repr, is left as it is (a text
    tokenizer's rows render as written, ``apply_chat_template``'s ids being the reference): the
    roles whose part renders with its ``type`` key, absent from the all-strings render, are noted
    as ``printed``. Conversations the template raises on show nothing (with every content a string
    raising: the roles whose words an all-parts render shows read parts).
    """
    parts: set[str] = set()
    printed: set[str] = set()

    def chat(roles: Sequence[str], as_part: Sequence[int]) -> list[dict[str, Any]]:
        return [{"role": role, "content": [{"type": "text", "text": _ROLE_WORDS[role]}] if k in as_part
                 else _ROLE_WORDS[role]} for k, role in enumerate(roles)]

    def attempt(messages: list[dict[str, Any]]) -> str | None:
        try:
            return render(messages)
        except Exception:  # noqa: BLE001 - the template rejects this form (a string it indexes, a role it refuses)
            return None

    for roles in _FORM_PROBES:
        base = attempt(chat(roles, ()))
        if base is None:
            every = attempt(chat(roles, range(len(roles))))
            if every is not None:
                parts.update(role for role in roles if _ROLE_WORDS[role] in every)
            continue
        for k, role in enumerate(roles):
            word = _ROLE_WORDS[role]
            one = attempt(chat(roles, (k,)))
            if one is not None and word in one and word not in base:
                parts.add(role)
            elif one is not None and word in one and any(key in one and key not in base for key in PART_KEYS):
                printed.add(role)  # the list itself printed, its 'type' key with it
    return ContentForms(frozenset(parts), frozenset(printed - parts))


def printed_lists(messages: Sequence[Mapping[str, Any]], forms: Callable[[], ContentForms]) -> list[tuple[int, Any]]:
    """``(message, role)`` of the ``messages`` whose content is a non-empty list of parts of a role
    whose parts the template prints as the list it is (``ContentForms.printed``: its repr is
    rendered and trained, see :func:`content_forms`).

    Args:
        messages: the conversation.
        forms: the template's content forms; called only when some content is a list (learning
            them takes probe renders).

    Returns:
        The messages, in order.
    """
    listed = [(k, m.get("role")) for k, m in enumerate(messages)
              if isinstance(m.get("content"), (list, tuple)) and m["content"]]
    if not listed:
        return []
    printed = forms().printed
    return [(k, role) for k, role in listed if role in printed]


def with_text_parts(messages: list[dict[str, Any]], roles: frozenset[str]) -> list[dict[str, Any]] | None:
    """``messages`` with each string content of a role in ``roles`` written as one text part (new
    dicts; the given ones are not changed), or None when none is (see :func:`content_forms`)."""
    out = None
    for i, m in enumerate(messages):
        content = m.get("content")
        if isinstance(content, str) and m.get("role") in roles:
            if out is None:
                out = list(messages)
            out[i] = {**m, "content": [{"type": "text", "text": content}]}
    return out


# ---------------------------------------------------------------------------------------------
# The reader
# ---------------------------------------------------------------------------------------------


class SampleReader:
    """Reads rows of one format (or of the format each row shows) as samples respmask parses.

    Args:
        data_format: ``"auto"`` (per row, see :func:`detect_format`), or one of :data:`FORMATS`
            for every row. ``"preference"`` reads preference rows (a prompt with ``chosen`` /
            ``rejected`` replies, or a KTO flag) as the prompt and its chosen reply, of which only the
            reply is trained; any other
            format rejects them, naming the columns.
        mapping: read every row's messages through this :class:`MessageMapping` (or dict of its
            fields) instead; ``data_format`` must then be ``"auto"``.
        text_only: drop images, video and audio (content parts and the ``images`` / ``videos``
            / ``audios`` columns) and train on the text alone; by default a text tokenizer
            refuses such rows (see :func:`media_error`).
        join_text: content parts stored under ``value`` (LLaMA-Factory v1) that are all text are
            joined into one string, as text templates read content (default); False keeps them
            as text parts, as a processor's template reads them (a masker built on a processor).

    Raises:
        ValueError: an unknown format, or ``mapping`` together with a named format.
    """

    def __init__(self, data_format: DataFormat = "auto",
                 mapping: MessageMapping | Mapping[str, Any] | None = None, text_only: bool = False,
                 join_text: bool = True):
        if data_format not in ("auto", *FORMATS):
            choices = ", ".join(map(repr, ("auto", *FORMATS)))
            raise ValueError(f"data_format must be one of {choices}; got {data_format!r}")
        if mapping is not None and data_format != "auto":
            raise ValueError(
                f"mapping=... reads every row through the mapping, so data_format must stay 'auto' "
                f"(got {data_format!r})"
            )
        self.data_format = data_format
        self.mapping = MessageMapping.of(mapping) if mapping is not None else None
        self.text_only = bool(text_only)
        self.join_text = bool(join_text)

    def __repr__(self) -> str:
        return (f"SampleReader(data_format={self.data_format!r}, mapping={self.mapping!r}, "
                f"text_only={self.text_only!r}, join_text={self.join_text!r})")

    def format_of(self, row: Any) -> str:
        """The format this reader reads ``row`` as (``"mapping"`` with a mapping)."""
        if self.mapping is not None:
            return "mapping"
        if self.data_format != "auto":
            return self.data_format
        return detect_format(row)

    def __call__(self, row: Any) -> Any:
        """``row`` as a sample :func:`respmask._samples.parse` takes (``row`` itself when nothing
        needs converting; never modified).

        Raises:
            SampleError: the row does not fit its format (the message names the column and
                message), or is a preference row and the format is not ``"preference"``.
            MissingColumnsError: ``"auto"`` found no format (the row's columns and the formats).
        """
        if self.data_format != "preference" and isinstance(row, Mapping) and "input_ids" not in row:
            columns = preference_columns(row)
            if columns:
                raise preference_error(row, columns)
        row = _padding_dropped(row, None if self.mapping is None else self.mapping.field_messages)
        fmt = self.format_of(row)
        sample = self._preference(row) if fmt == "preference" else self._read(row, fmt)
        if not self.text_only and type(sample) is dict and _MEDIA_KEYS.isdisjoint(sample):
            return sample  # the usual row: no media column (the check below, without its ABC test)
        if self.text_only or (isinstance(sample, Mapping)
                              and any(sample.get(column) is not None for column in MEDIA_COLUMNS)):
            return _with_media(sample, self.text_only)
        return sample

    def _read(self, row: Any, fmt: str) -> Any:
        if fmt == "messages":
            return self._messages(row)
        if fmt == "sharegpt":
            return self._mapped(row, SHAREGPT, sharegpt=True)
        if fmt == "mapping":
            assert self.mapping is not None
            return self._mapped(row, self.mapping, sharegpt=False)
        if fmt == "alpaca":
            return self._alpaca(row)
        if fmt == "prompt_completion":
            if isinstance(row, Mapping):
                if not ("prompt" in row and "completion" in row):
                    raise self._missing(row, "'prompt' and 'completion'", "prompt_completion")
                system = row.get("system")
                if system is not None and system != "":
                    if not isinstance(row["prompt"], (list, tuple)):
                        raise SampleError(
                            "has a 'system' column, which a plain-text prompt/completion row cannot render (it has "
                            "no chat template): write the prompt as messages ('prompt': [{'role': 'user', ...}]) "
                            "or put the system text into the prompt"
                        )
                    row = {**{k: v for k, v in row.items() if k != "system"},
                           "prompt": _system_first(list(row["prompt"]), system, "system")}
                if isinstance(row.get("tools"), str):
                    return {**row, "tools": _tools(row["tools"], wrap=False)}
            return row
        return row  # pre-tokenized

    # -- formats -------------------------------------------------------------------------------
    def _preference(self, row: Any) -> Any:
        """A preference row as the SFT sample of its prompt and chosen reply (a KTO row: itself,
        when its reply is desirable). The prompt may be a ``messages`` / ``conversations`` list, a
        ``prompt`` (string or messages) or an Alpaca ``instruction``; ``chosen`` a string, one
        message or a list of messages (without a prompt: the whole conversation, TRL's implicit
        prompt). Only the judged reply is trained: the prompt's own assistant turns are context,
        as in preference training (``"train": false``)."""
        if not isinstance(row, Mapping):
            raise SampleError(f"a preference sample must be a dict, got {type(row).__name__}")
        kto = _kto_key(row)
        if kto is not None:
            flag = row[kto]
            if not (isinstance(flag, bool) or type(flag).__name__ == "bool_"
                    or (isinstance(flag, numbers.Integral) and flag in (0, 1))):
                raise SampleError(
                    f"'{kto}' must be true or false (whether the reply is desirable), got {flag!r}: a string such "
                    "as 'false' would read as true. Convert the column to booleans first."
                )
            if not flag:
                raise SampleError(
                    f"has {kto}={row[kto]!r}: its reply is marked undesirable (KTO data), and data_format='preference' "
                    f"trains only desirable replies. Filter such rows out (ds.filter(lambda r: r[{kto!r}])) to keep "
                    "them out of the rejects."
                )
            rest = {k: v for k, v in row.items() if k != kto}
            key = _message_field(rest)
            if key is not None and isinstance(rest[key], (list, tuple)) and rest[key]:
                # the judged reply is the last message; the turns before it are its prompt
                rest[key] = [*_as_prompt(rest[key][:-1]), rest[key][-1]]
            return self._read(rest, detect_format(rest))
        chosen = row.get("chosen")
        if chosen is None:
            raise SampleError(
                f"has no 'chosen' reply (nor a KTO 'kto_tag' / boolean 'label'), which data_format='preference' "
                f"reads (it has {sorted(map(str, row.keys()))})"
            )
        if isinstance(chosen, Mapping):
            replies: list[Any] | None = [chosen]
        elif isinstance(chosen, (list, tuple)):
            replies = list(chosen)
        elif isinstance(chosen, str):
            replies = None
        else:
            raise SampleError(f"'chosen' must be a reply (a string, a message or a list of messages), got "
                              f"{type(chosen).__name__}")
        rest = {k: v for k, v in row.items() if k not in PREFERENCE_PAIR}
        key = _message_field(rest)
        if key is not None:
            prompt = rest[key]
            if not isinstance(prompt, (list, tuple)):
                raise SampleError(f"'{key}' must be a list of messages (the prompt), got {type(prompt).__name__}")
            if replies is None:
                has_role, has_from = _first_keys(prompt)
                replies = [{"from": "gpt", "value": chosen} if has_from and not has_role
                           else {"role": "assistant", "content": chosen}]
            new = {**rest, key: [*_as_prompt(prompt), *replies]}
        elif _present(rest, "prompt"):
            prompt = rest["prompt"]
            if replies is None:
                completion: Any = chosen if isinstance(prompt, str) else [{"role": "assistant", "content": chosen}]
            else:
                completion = replies
                if isinstance(prompt, str):
                    prompt = [{"role": "user", "content": prompt}]
            new = {**rest, "prompt": prompt, "completion": completion}
        elif _present(rest, "instruction"):
            if replies is not None:
                raise SampleError("an Alpaca preference row's 'chosen' must be a string (the chosen output)")
            new = {**rest, "output": chosen}
        elif replies is not None and len(replies) > 1:
            new = {**rest, "messages": [*_as_prompt(replies[:-1]), replies[-1]]}  # TRL's implicit prompt
        else:
            raise SampleError(
                "has a 'chosen' reply but no prompt: data_format='preference' reads the prompt from 'messages', "
                "'conversations', 'prompt' or 'instruction', or takes 'chosen' as the whole conversation when it is a "
                f"list of messages (it has {sorted(map(str, row.keys()))})"
            )
        return self._read(new, detect_format(new))

    @staticmethod
    def _missing(row: Mapping[str, Any], what: str, fmt: str) -> SampleError:
        return SampleError(
            f"has no {what} column, which data_format={fmt!r} reads (it has {sorted(map(str, row.keys()))})"
        )

    def _messages(self, row: Any) -> Any:
        if isinstance(row, (list, tuple)):
            messages, key = row, None
        else:
            if not isinstance(row, Mapping):
                raise SampleError(
                    f"a sample must be a dict (or a list of messages), got {type(row).__name__}"
                )
            key = _message_field(row)
            if key is None:
                if self.data_format == "messages":
                    raise self._missing(row, "'messages'", "messages")
                return row
            messages = row[key]
        converted = messages
        if isinstance(messages, (list, tuple)):
            for i, m in enumerate(messages):  # fast path: only list contents may need converting
                if type(m) is dict and type(m.get("content")) is str:
                    continue
                if isinstance(m, dict) and isinstance(m.get("content"), (list, tuple)):
                    new_message = _with_parts(m, f"'{key}'[{i}]" if key else f"the conversation[{i}]",
                                              self.join_text)
                    if new_message is not m:
                        if converted is messages:
                            converted = list(messages)
                        converted[i] = new_message
        if key is None:
            return converted
        system = row.get("system")
        if system is not None and system != "" and isinstance(converted, (list, tuple)):
            converted = _system_first(list(converted), system, "system")  # a system column, as ShareGPT's
        tools = row.get("tools")
        new_tools = _tools(tools, wrap=False) if isinstance(tools, str) else tools
        if converted is messages and new_tools is tools:
            return row
        new = {k: v for k, v in row.items() if k != "system"}
        new[key] = converted
        if new_tools is not tools:
            new["tools"] = new_tools
        return new

    def _mapped(self, row: Any, mapping: MessageMapping, *, sharegpt: bool) -> Any:
        if isinstance(row, (list, tuple)):
            return self._convert_messages(row, mapping, "the conversation")
        if not isinstance(row, Mapping):
            raise SampleError(f"a sample must be a dict (or a list of messages), got {type(row).__name__}")
        key = mapping.field_messages
        if sharegpt and not _present(row, key):
            key = "messages" if _present(row, "messages") else key
        if not _present(row, key):
            if sharegpt:
                raise self._missing(row, "'conversations'", "sharegpt")
            raise SampleError(
                f"has no '{key}' column, which mapping field_messages={key!r} reads "
                f"(it has {sorted(map(str, row.keys()))})"
            )
        messages = self._convert_messages(row[key], mapping, f"'{key}'")
        messages = _system_first(messages, row.get("system"), "system")
        out = {k: v for k, v in row.items() if k not in (key, "system")}
        out["messages"] = messages
        if "tools" in row:
            out["tools"] = _tools(row["tools"], wrap=True)
        return out

    def _convert_messages(self, messages: Any, mapping: MessageMapping, where: str) -> list[dict[str, Any]]:
        if not isinstance(messages, (list, tuple)):
            raise SampleError(f"{where} must be a list of messages, got {type(messages).__name__}")
        role_key, content_key = mapping.role_key, mapping.content_key
        roles = {**KNOWN_ROLES, **mapping.role_map}
        out: list[dict[str, Any]] = []
        for i, m in enumerate(messages):
            at = f"{where}[{i}]"
            if not isinstance(m, Mapping):
                raise SampleError(
                    f"{at} must be a dict with {role_key!r} and {content_key!r}, got {type(m).__name__}"
                )
            raw = m.get(role_key)
            if raw is None:
                raise SampleError(f"{at} has no {role_key!r} (its keys: {sorted(map(str, m))})")
            if not isinstance(raw, str) or raw not in roles:
                known = ", ".join(repr(r) for r in roles)
                raise SampleError(
                    f"{at} has role {raw!r}, which is not one of {known}: pass role_map={{{raw!r}: 'user'}} "
                    "(or 'assistant', 'system', 'tool', 'function_call': the role it stands for)"
                )
            role = roles[raw]
            value = m.get(content_key)
            rest = {k: v for k, v in m.items() if k not in (role_key, content_key)}
            if value is None and content_key not in m and role != FUNCTION_CALL and NOT_CONTENT_DATA.isdisjoint(rest):
                raise SampleError(
                    f"{at} has no {content_key!r} (the mapping's content_key; its keys: {sorted(map(str, m))}), so "
                    "its text would be lost: pass the key that holds it (content_key=...; CLI: --content-key)"
                )
            if role != FUNCTION_CALL and value is not None and not isinstance(value, (str, list, tuple)):
                raise SampleError(
                    f"{at}[{content_key!r}] must be a string or a list of content parts, "
                    f"got {type(value).__name__}"
                )
            if role == FUNCTION_CALL:
                calls = _tool_calls(value, f"{at} ({raw})")
                previous = out[-1] if out else None
                if (previous is not None and previous["role"] == "assistant"
                        and all(v is None for k2, v in rest.items() if k2 != "train")
                        and rest.get("train") == previous.get("train")):
                    _add_calls(previous, calls, f"{where}[{i - 1}]")
                else:
                    out.append({"role": "assistant", "content": "", **rest, "tool_calls": calls})
                continue
            message = {"role": role, **rest}
            if value is not None:
                message["content"] = value
            out.append(_with_parts(message, at, self.join_text))
        return out

    def _alpaca(self, row: Any) -> Any:
        if not isinstance(row, Mapping):
            raise SampleError(f"an alpaca sample must be a dict, got {type(row).__name__}")
        for key in ("instruction", "output"):
            if key not in row:
                raise self._missing(row, f"'{key}'", "alpaca")
        texts = []
        for key in ("instruction", "input"):
            value = row.get(key)
            if value is not None and not isinstance(value, str):
                raise SampleError(f"'{key}' must be a string, got {type(value).__name__}")
            if value:
                texts.append(value)
        output = row.get("output")
        if not isinstance(output, str):
            raise SampleError(f"'output' must be a string (the reply to train), got {type(output).__name__}")
        messages: list[dict[str, Any]] = []
        history = row.get("history")
        if history is not None:
            if not isinstance(history, (list, tuple)):
                raise SampleError(
                    f"'history' must be a list of [instruction, response] pairs, got {type(history).__name__}"
                )
            for i, pair in enumerate(history):
                if not (isinstance(pair, (list, tuple)) and len(pair) == 2
                        and all(isinstance(x, str) for x in pair)):
                    raise SampleError(
                        f"'history'[{i}] must be an [instruction, response] pair of strings, got {pair!r:.80}"
                    )
                messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
        messages += [{"role": "user", "content": "\n".join(texts)}, {"role": "assistant", "content": output}]
        messages = _system_first(messages, row.get("system"), "system")
        consumed = ("instruction", "input", "output", "system", "history")
        out = {k: v for k, v in row.items() if k not in consumed}
        out["messages"] = messages
        if "tools" in row:
            out["tools"] = _tools(row["tools"], wrap=True)
        return out


def role_map_fix(reader: SampleReader, row: Any, role: str, target: str) -> str:
    """How to read ``row``'s ``role`` messages as ``target`` ones: the whole mapping for the format
    the reader reads the row in (a ``role_map`` alone reads OpenAI ``messages``, so ShareGPT rows
    need their field and keys named too), with the row's own name for the role, as the API call
    and the CLI flags. Empty when the row is not read through messages."""
    fmt = reader.format_of(row)
    if not isinstance(row, Mapping) or fmt not in ("messages", "sharegpt", "mapping"):
        return ""
    if fmt == "mapping":
        assert reader.mapping is not None
        mapping = reader.mapping
    elif fmt == "sharegpt":
        field_name = "conversations" if _present(row, "conversations") else "messages"
        mapping = MessageMapping(field_name, SHAREGPT.role_key, SHAREGPT.content_key)
    else:
        mapping = MessageMapping(_message_field(row) or "messages")
    roles = {**KNOWN_ROLES, **mapping.role_map}
    messages = row.get(mapping.field_messages)
    raw = next((m.get(mapping.role_key) for m in messages or () if isinstance(m, Mapping)
                and roles.get(m.get(mapping.role_key), m.get(mapping.role_key)) == role), role)
    return mapping_hint(field_messages=mapping.field_messages, role_key=mapping.role_key,
                        content_key=mapping.content_key, role_map={**mapping.role_map, raw: target})


AUTO = SampleReader()


def to_sample(row: Any, data_format: DataFormat = "auto",
              mapping: MessageMapping | Mapping[str, Any] | None = None) -> Any:
    """``row`` converted to the sample respmask parses (OpenAI ``messages`` with ``tools``).

    A convenience for one row (the front-ends keep one reader for a whole dataset): useful to see
    what a row becomes, e.g. ``tokenizer.apply_chat_template(s["messages"], tools=s.get("tools"))``.
    The row itself is not modified.

    Args:
        row: one row, as ``datasets`` yields it (a dict).
        data_format: ``"auto"`` (the layout is recognised from the row's keys), ``"messages"``,
            ``"sharegpt"``, ``"alpaca"``, ``"prompt_completion"`` or ``"preference"`` (a prompt
            and its chosen reply).
        mapping: a :class:`MessageMapping` (or a dict of its fields) for any other layout.

    Returns:
        The sample: a dict with ``messages`` (OpenAI-style) and, when the row has them,
        ``tools``, ``documents``, ``chat_template_kwargs``; or ``prompt`` / ``completion``.

    Example::

        >>> respmask.to_sample({"conversations": [{"from": "human", "value": "Hi"},
        ...                                       {"from": "gpt", "value": "Hello"}]})
        {'messages': [{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello'}]}

    Raises:
        SampleError: the row does not fit its format.
        MissingColumnsError: ``"auto"`` found no format.
        ValueError: invalid ``data_format`` / ``mapping``.
    """
    reader = AUTO if data_format == "auto" and mapping is None else SampleReader(data_format, mapping)
    return reader(row)
