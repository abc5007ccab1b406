"""The sample formats respmask accepts, checked and normalised, with errors that name the fix."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._errors import MissingColumnsError, SampleError, string_boolean
from ._formats import AUTO, NOT_CONTENT_DATA, SampleReader, check_arguments, mapping_hint, no_format

_ROLE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*$")
MASK_KEYS = ("assistant_masks", "completion_mask")
_COMMON_ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})  # valid without the regex


@dataclass
class Chat:
    """A conversation to render with the chat template."""

    messages: list[dict[str, Any]]
    flags: list[bool | None]  # per-message "train" overrides
    tools: list[Any] | None = None
    documents: list[Any] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    # what the reading pass learned, so later steps need not walk the messages again: ``states``,
    # when every message is a dict of string keys and string values (``"train"`` aside), is each
    # value's state in order (respmask._replay.value_states: 0 empty, 1 blank, 2 text); None: not
    # known. ``read_from``: the list of messages the sample held, when all came from that one list.
    states: bytes | None = field(default=None, repr=False, compare=False)
    read_from: Any = field(default=None, repr=False, compare=False)

    @property
    def roles(self) -> list[str]:
        return [m["role"] for m in self.messages]


@dataclass
class TextPair:
    """A plain-text prompt and completion: only the completion (and EOS) is trained."""

    prompt: str
    completion: str


@dataclass
class Pretokenized:
    """Token ids with labels already made (``position_ids`` for packed rows)."""

    input_ids: np.ndarray
    labels: np.ndarray
    position_ids: np.ndarray | None = None


def _read_messages(messages: Any, what: str) -> tuple[list[dict[str, Any]], list[Any], bytes | None]:
    """``messages`` checked and copied in one pass: the messages (new dicts without ``"train"``),
    each one's ``"train"`` value (None when absent) and, when every message holds only strings,
    their values' states (see :class:`Chat`). The user's dicts are never changed.

    Raises:
        SampleError: a message is malformed (named by ``what`` and its index).
    """
    if not isinstance(messages, (list, tuple)):
        raise SampleError(f"{what} must be a list of message dicts, got {type(messages).__name__}")
    if len(messages) == 0:
        raise SampleError(f"{what} is empty: a conversation needs at least one message")
    out = []
    trains: list[Any] = []
    states: list[int] | None = []
    for i, m in enumerate(messages):  # plain type checks first: ABC checks cost more on every message
        if type(m) is not dict and not isinstance(m, Mapping):
            raise SampleError(f"{what}[{i}] must be a dict with 'role' and 'content', got {type(m).__name__}")
        role = m.get("role")
        if type(role) is str and role in _COMMON_ROLES:
            pass
        elif role is None:
            raise SampleError(f"{what}[{i}] has no 'role' (expected one of system, user, assistant, tool, ...)")
        elif not isinstance(role, str) or not _ROLE.match(role):
            raise SampleError(f"{what}[{i}] has an invalid role {role!r}: roles are plain names like 'user'")
        train = m.get("train")
        if train is not None and not isinstance(train, (bool, np.bool_)):
            raise SampleError(f"{what}[{i}]['train'] must be true or false, got {train!r}")
        weight = m.get("loss_weight")  # LLaMA-Factory v1's per-message flag: 1.0 trained, 0.0 not
        if weight is not None:
            train = _weight_flag(weight, train, role == "assistant", what, i)
        content = m.get("content")
        text = type(content) is str
        if content is None and "content" not in m and NOT_CONTENT_DATA.isdisjoint(m):
            raise _no_content(m, messages, what, i)
        if not text and content is not None and not isinstance(content, (str, list, tuple, Mapping)):
            raise SampleError(
                f"{what}[{i}]['content'] must be a string or a list of content parts, got {type(content).__name__}"
            )
        if "tool_calls" in m:
            _check_calls(m["tool_calls"], what, i)
        m = dict(m)
        m.pop("train", None)
        m.pop("loss_weight", None)
        if not text and isinstance(content, (list, tuple)):
            # a datasets column stores every part with every key of every part, absent ones as None
            # ({"type": "text", "text": "hi", "image": None}): templates that test `'image' in part`
            # would render an image there; a None-valued key of a part is no data, so it is dropped
            m["content"] = [{k: v for k, v in part.items() if v is not None} if isinstance(part, Mapping) else part
                            for part in content]
        if states is not None:
            for k, v in m.items():
                if type(v) is not str or type(k) is not str:
                    states = None
                    break
                states.append(0 if not v else 1 if v.isspace() else 2)
        out.append(m)
        trains.append(train)
    return out, trains, None if states is None else bytes(states)


def _check_calls(calls: Any, what: str, i: int) -> None:
    """Each OpenAI tool call's string ``arguments`` must be JSON (see
    :func:`respmask._formats.check_arguments`); ``calls`` that is not a list, or a call that is
    not a dict, is left to the template.

    Raises:
        SampleError: a call's string arguments are not JSON (named by message and call).
    """
    if not isinstance(calls, (list, tuple)):
        return
    for k, call in enumerate(calls):
        if isinstance(call, Mapping):
            function = call.get("function")
            check_arguments(function if isinstance(function, Mapping) else call,
                            f"{what}[{i}]['tool_calls'][{k}]")


def _weight_flag(weight: Any, train: Any, reply: bool, what: str, i: int) -> bool | None:
    """A message's ``loss_weight`` (LLaMA-Factory v1 writes 0.0 on prompts, 1.0 on replies) as its
    train flag: 0 is ``False``; 1 is ``True`` on a message that is not a reply, and on a reply the
    default (None: ``train_on`` still decides, so ``train_on="last"`` keeps earlier replies out
    as LLaMA-Factory's ``mask_history`` does). Only 0 and 1 mean a mask; another weight needs a
    weighted loss, which masks cannot give, and a ``train`` that says otherwise contradicts it:
    both are errors, never ignored."""
    if isinstance(weight, (bool, np.bool_)) or not isinstance(weight, (int, float, np.integer, np.floating)) or (
            weight not in (0, 1)):
        raise SampleError(
            f"{what}[{i}]['loss_weight'] is {weight!r}: respmask trains a message or not (loss_weight 1 or 0, as "
            "LLaMA-Factory writes them); a weight in between needs a weighted loss, which token masks cannot give"
        )
    if train is not None and bool(train) != bool(weight):
        raise SampleError(f"{what}[{i}] has 'train': {bool(train)} and 'loss_weight': {weight!r}, which disagree: "
                          "keep one")
    if train is not None:
        return bool(train)
    return None if weight and reply else bool(weight)


def _no_content(message: Mapping[str, Any], messages: Sequence[Any], what: str, i: int) -> SampleError:
    """A message without a ``content`` (nor tool calls or reasoning): templates render it as an
    empty message, so whatever it holds under another key would be lost. When no message of the
    conversation has a ``content``, the error names the key that looks like their text and the
    mapping that reads it; else it says to give this one a content."""
    keys = sorted(map(str, message))
    others = [k for k in keys if k not in ("role", "train", "name", "id", "tool_call_id", "loss_weight")
              and isinstance(message[k], (str, list))]
    field = what.strip("'") if what.startswith("'") else "messages"
    if any(isinstance(m, Mapping) and "content" in m for m in messages):
        others = []  # the others have a content: a mapping would not read them
    if others:
        key = others[0]
        how = (f"If its text is under {key!r}, read it with "
               f"{mapping_hint(field_messages=field, role_key='role', content_key=key)}.")
    else:
        how = "Give it a 'content' (an empty string for a message that is meant to be empty), or remove it."
    return SampleError(f"{what}[{i}] has no 'content' (its keys: {keys}), so its text would be lost. {how}")


def _chat(read: tuple[list[dict[str, Any]], list[Any], bytes | None], sample: Mapping[str, Any],
          forced: list[bool | None] | None, read_from: Any = None) -> Chat:
    """The :class:`Chat` of messages :func:`_read_messages` read (``forced``: train flags that win
    over the messages' own) and the sample's template kwargs, tools and documents."""
    clean, trains, states = read
    if forced is None:
        flags: list[bool | None] = [None if flag is None else bool(flag) for flag in trains]
    else:
        flags = [bool(f) if f is not None else None if flag is None else bool(flag) for flag, f in zip(trains, forced)]
    kwargs = sample.get("chat_template_kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise SampleError("'chat_template_kwargs' must be a dict of template keyword arguments")
    problem = string_boolean(kwargs, "'chat_template_kwargs'") if kwargs else None
    if problem:
        raise SampleError(f"{problem[:-1]} in the data (a boolean column), or drop the row.")
    tools = sample.get("tools")
    if tools is not None and not isinstance(tools, (list, tuple)):
        raise SampleError("'tools' must be a list of JSON schemas")
    documents = sample.get("documents")
    if documents is not None and not isinstance(documents, (list, tuple)):
        raise SampleError("'documents' must be a list of dicts")
    return Chat(clean, flags, list(tools) if tools is not None else None,
                list(documents) if documents is not None else None, dict(kwargs), states=states, read_from=read_from)


def _int_array(value: Any, key: str) -> np.ndarray:
    """A 1-D int64 array from a list, array or tensor of integers (or a clear error)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise SampleError(f"'{key}' must be a flat list of integers ({exc})") from None
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 1 or not (arr.dtype.kind in "iub" or (arr.size == 0 and arr.dtype.kind == "f")):
        raise SampleError(f"'{key}' must be a flat list of integers, got {type(value).__name__} of {arr.dtype}")
    return arr.astype(np.int64)


def parse(sample: Any, reader: SampleReader | None = None) -> Chat | TextPair | Pretokenized:
    """Classify and check one sample (without its index: callers add it to errors).

    Args:
        sample: a row in any format respmask reads (see :mod:`respmask._formats`).
        reader: reads the row as a sample (a :class:`respmask._formats.SampleReader`, as
            ``ChatMasker`` builds from its ``data_format`` and ``mapping``); default: the format
            each row shows.

    Returns:
        A ``Chat`` (messages to render), a ``TextPair`` (plain prompt and completion) or a
        ``Pretokenized`` row.

    Raises:
        SampleError: the row is malformed (the message names the column, message and fix).
        MissingColumnsError: the row matches no format.
    """
    sample = (reader or AUTO)(sample)
    if isinstance(sample, (list, tuple)):
        return _chat(_read_messages(sample, "the conversation"), {}, None, sample)
    if not isinstance(sample, Mapping):
        raise SampleError(f"a sample must be a dict (or a list of messages), got {type(sample).__name__}")
    if "messages" in sample and sample["messages"] is not None:
        return _chat(_read_messages(sample["messages"], "'messages'"), sample, None, sample["messages"])
    if "conversations" in sample and sample["conversations"] is not None:
        return _chat(_read_messages(sample["conversations"], "'conversations'"), sample, None, sample["conversations"])
    if "prompt" in sample and "completion" in sample:
        prompt, completion = sample["prompt"], sample["completion"]
        if isinstance(prompt, str) and isinstance(completion, str):
            return TextPair(prompt, completion)
        if isinstance(prompt, (list, tuple)) and isinstance(completion, (list, tuple)):
            p = _read_messages(prompt, "'prompt'") if len(prompt) else ([], [], b"")
            c = _read_messages(completion, "'completion'")
            forced: list[bool | None] = [False] * len(p[0]) + [None] * len(c[0])
            states = None if p[2] is None or c[2] is None else p[2] + c[2]
            return _chat((p[0] + c[0], p[1] + c[1], states), sample, forced)
        raise SampleError(
            "'prompt' and 'completion' must both be strings or both be lists of messages, got "
            f"{type(prompt).__name__} and {type(completion).__name__}"
        )
    if "input_ids" in sample:
        ids = _int_array(sample["input_ids"], "input_ids")
        if "labels" in sample and sample["labels"] is not None:
            labels = _int_array(sample["labels"], "labels")
        else:
            key = next((k for k in MASK_KEYS if sample.get(k) is not None), None)
            if key is None:
                raise MissingColumnsError(  # a column missing: the collator adds what a Trainer does to them
                    "has 'input_ids' but no 'labels' or 'assistant_masks': respmask cannot tell which tokens "
                    "to train. Give the rows the 'messages' they were tokenized from (respmask renders and masks "
                    "them), or pre-tokenize with respmask.Pretokenizer, whose rows carry 'labels'."
                )
            mask = _int_array(sample[key], key).astype(bool)
            if len(mask) != len(ids):
                raise SampleError(f"'{key}' has {len(mask)} entries but 'input_ids' has {len(ids)}")
            labels = np.where(mask, ids, -100)
        if len(labels) != len(ids):
            raise SampleError(f"'labels' has {len(labels)} entries but 'input_ids' has {len(ids)}")
        positions = None
        if sample.get("position_ids") is not None:
            positions = _int_array(sample["position_ids"], "position_ids")
            if len(positions) != len(ids):
                raise SampleError(f"'position_ids' has {len(positions)} entries but 'input_ids' has {len(ids)}")
        return Pretokenized(ids, labels, positions)
    raise no_format(sample)  # unreachable: the reader raises first


def to_python(value: Any) -> Any:
    """Plain Python values from the numpy arrays and scalars engines hand out (Ray, pandas)."""
    if isinstance(value, np.ndarray):
        return [to_python(v) for v in value.tolist()] if value.dtype == object else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {k: to_python(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_python(v) for v in value]
    return value
