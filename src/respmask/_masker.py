"""ChatMasker: a tokenizer, its chat template and the masking options, turning samples into
``input_ids`` and ``labels``. Everything that depends only on the template is cached."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import weakref
from os.path import commonprefix
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ._errors import RespmaskError, SampleError, TemplateError, TokenizerError, warn
from ._byte_lengths import ByteLengths
from ._masks import (
    IGNORE_INDEX, as_numpy, ids_of, labels_from_mask, labels_from_masks, mask_from_ranges, token_ranges,
)
from ._media import call_processor, carry_mask, is_processor, media_of, media_token_ids
from ._origin import REASONING_KEYS
from ._profile import (
    Probe, ProbeShape, TemplateProfile, history_probes, learn_profile, probe_shape, probes, sample_probes, token_regex,
)
from ._layout import LayoutRenderer
from ._replay import RecordedLayouts, replays_of
from ._render import ChatTemplate, Rendered, template_constants, template_inputs
from ._formats import (
    MEDIA_COLUMNS, ContentForms, content_forms, media_error, media_in, printed_lists, with_text_parts,
)
from ._reasoning import (
    ReasoningAgainstPrompt, Render, content_slices, kwargs_against_reasoning, prints_content_as_last,
    prints_marked_content_as_last, reasoning_field, replies_against_prompt,
)
from ._samples import Chat, Pretokenized, TextPair, parse
from ._segments import Segments
from ._options import MaskOptions, resolve_options
from ._split import is_exact, plan_rows
from ._spans import (
    DROPPED_REASONING, REASONING_NOT_RENDERED, StopTokens, Turn, UnplacedTurn, dropped_data, dropped_inputs,
    dropped_text, empty_replies, find_turns, prints_reasoning, select_messages, trained_spans,
)

_TRUTHY = ("1", "true", "yes", "on")


@dataclass
class Encoded:
    """One training row as token ids and labels (-100 where not trained).

    Returned by :meth:`ChatMasker.encode` / :meth:`ChatMasker.encode_batch`.

    Attributes:
        input_ids, labels: int arrays of one length; ``labels`` is -100 where not trained.
        n_turns: trained turns found; ``turns_without_stop`` those with no stop token trained.
        text: the rendered text (raw samples only).
        turns: one :class:`Turn` per trained message (character positions in ``text``).
        position_ids: per-token positions (packed rows only).
        dropped: ``(message, what)`` of data the render leaves out; ``dropped_counts`` the
            tokens of each (its text tokenized alone).
        empty_replies: trained turns that hold nothing: only their stop token is trained.
        sample: the position of its sample in the batch (the rows of a split sample share it);
            ``row`` / ``rows``: which row of its sample and how many it gave; ``through``:
            the last message the row renders (None: the whole sample).
    """

    input_ids: np.ndarray
    labels: np.ndarray
    n_turns: int = 0  # trained turns found
    turns_without_stop: int = 0  # trained turns with no stop token inside their span
    text: str | None = None  # the rendered text (raw samples only)
    turns: list[Turn] = field(default_factory=list)
    position_ids: np.ndarray | None = None  # packed rows only
    # (message, what) the render leaves out; message -1: the sample's tools or documents
    dropped: list[tuple[int, str]] = field(default_factory=list)
    dropped_counts: list[int] = field(default_factory=list)  # tokens of each ``dropped`` entry's data
    empty_replies: list[int] = field(default_factory=list)  # trained turns holding nothing (their stop trains)
    sample: int = 0  # the position of its sample in the batch (split rows share it)
    through: int | None = None  # the last message the row renders (None: the whole sample)
    row: int = 0  # which row of its sample (0 unless split)
    rows: int = 1  # how many rows its sample gave

    @property
    def dropped_tokens(self) -> int:
        """Tokens of the data the render leaves out (its text tokenized alone: a lower bound)."""
        return sum(self.dropped_counts)

    @property
    def reasoning_tokens_dropped(self) -> int:
        """Of which earlier turns' reasoning."""
        return sum(n for (_, what), n in zip(self.dropped, self.dropped_counts) if what == DROPPED_REASONING)

    @property
    def lost_data(self) -> list[tuple[int, str]]:
        """What the render leaves out, but earlier turns' reasoning (left out by design)."""
        return [(k, what) for k, what in self.dropped if what != DROPPED_REASONING]

    @property
    def n_trained(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())


@dataclass
class RenderedSample:
    """A conversation rendered and analysed: its text and trained character spans.

    Returned by :meth:`ChatMasker.render`.

    Attributes:
        text: the text ``apply_chat_template`` renders, character for character.
        spans: sorted ``(start, end)`` character ranges of ``text`` that are trained.
        turns: one :class:`Turn` per trained message (where its header ended, its stop token).
        segments: the render's text attributed to template literals and to each message.
        add_special_tokens: whether tokenizing ``text`` adds the tokenizer's special tokens.
        dropped: ``(message, what)`` of data the render leaves out (message -1: the sample's
            ``tools`` or ``documents``); ``dropped_text`` their text.
        empty_replies: trained turns that hold nothing (only their stop token is trained).
        through: a split row: the last message it renders (None: the whole sample).
    """

    text: str
    spans: list[tuple[int, int]]
    turns: list[Turn]
    segments: Segments | None = None
    add_special_tokens: bool = False
    # (message, what) the render leaves out (spans.dropped_data)
    dropped: list[tuple[int, str]] = field(default_factory=list)
    through: int | None = None  # a split row: the last message it renders (None: the whole sample)
    dropped_text: list[str] = field(default_factory=list)  # the data of each ``dropped`` entry
    empty_replies: list[int] = field(default_factory=list)  # trained turns holding nothing


class TokenizerRegistry:
    """Tokenizers by the SHA-1 of their pickled bytes, held weakly.

    Engines pickle the masker for every job (``datasets``' ``num_proc``, DataLoader workers, Ray
    tasks). When a masker is unpickled in a process that already holds its tokenizer (a forked
    worker inherits the parent's; a Ray worker keeps the one its first task unpickled), that live
    copy is used instead of deserializing the bytes again. The key is the content itself, so an
    entry is only ever the tokenizer those bytes were made from; an entry never keeps a tokenizer
    alive. This is respmask's one piece of process-wide state, and it is explicit.
    """

    def __init__(self) -> None:
        self._by_key: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()

    def put(self, key: str, tokenizer: Any) -> None:
        self._by_key[key] = tokenizer

    def get(self, key: str) -> Any | None:
        return self._by_key.get(key)


TOKENIZERS = TokenizerRegistry()


def _safe_signature(tok: Any) -> tuple[Any, ...] | None:
    """What identifies a tokenizer's behaviour here, cheaply: size, template, special tokens, side,
    and a sample of its vocabulary. Deterministic, so datasets' fingerprints stay stable."""
    try:
        n = len(tok)
        sample = tok.convert_ids_to_tokens(list(range(0, n, max(1, n // 64))))
        return (type(tok).__name__, n, repr(tok.chat_template), tok.bos_token, tok.eos_token, tok.pad_token,
                tok.padding_side, bool(getattr(tok, "split_special_tokens", False)), tuple(sample))
    except Exception:  # pragma: no cover
        return None


def _is_fast(tokenizer: Any) -> bool:
    return getattr(tokenizer, "is_fast", False) and getattr(tokenizer, "backend_tokenizer", None) is not None


def _generation_config_eos(tokenizer: Any) -> list[str]:
    """EOS tokens from a generation_config.json next to the tokenizer, when there is one."""
    path = getattr(tokenizer, "name_or_path", None)
    if not path or not os.path.isdir(path):
        return []
    cfg = os.path.join(path, "generation_config.json")
    if not os.path.isfile(cfg):
        return []
    try:
        with open(cfg, encoding="utf-8") as f:
            eos = json.load(f).get("eos_token_id")
    except (OSError, ValueError):
        return []
    ids = eos if isinstance(eos, list) else [eos] if isinstance(eos, int) else []
    tokens = tokenizer.convert_ids_to_tokens([i for i in ids if isinstance(i, int)])
    return [t for t in tokens if isinstance(t, str)]


def _drops_all_reasoning(messages: Sequence[Mapping[str, Any]], dropped: Sequence[tuple[int, str]]) -> bool:
    """Whether the render left out only reasoning, and that of every message holding some."""
    if any(what not in (DROPPED_REASONING, REASONING_NOT_RENDERED) for _, what in dropped):
        return False
    reasoned = {k for k, m in enumerate(messages) if any(m.get(key) for key in REASONING_KEYS)}
    return reasoned == {k for k, _ in dropped}


class ChatMasker:
    """Finds, through the chat template itself, the tokens a model generates in each sample.

    The core every front-end shares: a sample is read (:class:`respmask.MaskOptions`'
    ``data_format`` / ``mapping``), rendered with the chat template exactly as
    ``apply_chat_template`` renders it, its trained characters found (what the assistant
    generates: reasoning, content, tool calls and the token that ends generation), tokenized and
    turned into ``labels`` (-100 elsewhere). Everything that depends only on the template is
    learned once and cached. Pass a masker wherever a tokenizer is taken (collator,
    ``Pretokenizer``, ``check``, ``preview``) to share it.

    Args:
        tokenizer: a fast Hugging Face tokenizer (``tokenizer.is_fast``), or a transformers
            processor for chats with images (its tokenizer and chat template are used).
        options: the masking options (:class:`respmask.MaskOptions`); default: the defaults.
        **changes: masking options by name, applied over ``options`` (``train_on="last"``).

    Raises:
        TokenizerError: the tokenizer is not a fast one.
        TypeError: a keyword is not a masking option.
        ValueError: an option has an invalid value.

    Example:
        >>> masker = ChatMasker(tok, train_on="last")
        >>> enc = masker.encode({"messages": [{"role": "user", "content": "Hi"},
        ...                                   {"role": "assistant", "content": "Hello!"}]})
        >>> tok.decode(enc.input_ids[enc.labels != -100])
        'Hello!<|im_end|>'
    """

    def __init__(self, tokenizer: Any, options: MaskOptions | None = None, **changes: Any):
        opts = resolve_options(options, changes)
        self.processor = tokenizer if is_processor(tokenizer) else None
        if self.processor is not None:
            tokenizer = self.processor.tokenizer
            if opts.split != "never":
                raise ValueError("split='auto'/'turns' is not supported with a processor yet (each row would need its "
                                 "own images); use split='never'")
        if not _is_fast(tokenizer):
            raise TokenizerError(
                f"respmask needs a fast tokenizer (with character offsets); got {type(tokenizer).__name__}. "
                "Load it with AutoTokenizer.from_pretrained(path) (use_fast=True is the default) from a "
                "directory that has tokenizer.json."
            )
        self.tokenizer = tokenizer
        self.options = opts
        self.reader = opts.reader(join_text=self.processor is None)  # a processor's template reads parts
        self._templates: dict[str, ChatTemplate] = {}
        self._profiles: dict[tuple[str, str], tuple[TemplateProfile, StopTokens]] = {}
        # profile keys whose fixed probes the template rejects: learned from each conversation's shape
        self._unprobed: dict[tuple[str, str], TemplateError] = {}
        self._exact: dict[tuple[str, str], bool] = {}  # does the instrumented render equal transformers'?
        self._forms: dict[tuple[str, str], ContentForms] = {}  # the content form the template reads, per role
        # (template, kwargs, reasoning key or "content:<marker>") -> does a last reply's reasoning render?
        self._last_reasoning: dict[tuple[str, str, str], bool] = {}
        self._keeps_history: dict[tuple[str, str], bool] = {}  # do probe turns read as in their prefixes?
        # (template, kwargs, reasoning key or "content:<marker>") -> the kwargs a reply's reasoning contradicts
        self._against_reasoning: dict[tuple[str, str, str], ReasoningAgainstPrompt | None] = {}
        # template kwargs (as JSON) -> (the special tokens they were computed with, template_constants)
        self._constants: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        self._media_ids: np.ndarray | None = None  # token ids that stand for images (processors; learned)
        # (kind, single) -> a token the render writes once per media part, or -1 (processors; learned, _media_cut)
        self._media_counters: dict[tuple[str, bool], int] = {}
        self._splices: Any = None  # what the processor's call makes of the text around images (learned, _media_cut)
        self._images_join: bool | None = None  # image outputs join per image (processors; learned, _media_cut)
        self._configured_stops = tuple(dict.fromkeys([*opts.stop_tokens, *_generation_config_eos(tokenizer)]))
        self._pid = os.getpid()
        self._blob: tuple[Any, str, bytes] | None = None  # (signature, key, pickled tokenizer)
        self._bytes: tuple[Any, ByteLengths | None] | None = None  # (backend, its table)
        self._backend_copy: tuple[Any, int, Any] | None = None  # (the tokenizer's backend, its size, a copy)
        # template source -> its renders from learned layouts (message-blind templates, see _layout)
        self._layouts: dict[str, LayoutRenderer] = {}
        self._recorded: dict[str, RecordedLayouts] = {}  # per template without layouts (see _replay)

    @property
    def split(self) -> str:
        """``options.split``: how conversations become rows."""
        return self.options.split

    # -- pickling ------------------------------------------------------------------------------
    # The tokenizer is serialized once (again only when it changed) and the bytes reused; where
    # the registry holds the same tokenizer, unpickling picks it up instead. Caches are rebuilt
    # lazily in the new process.
    def __getstate__(self) -> dict[str, Any]:
        signature = _safe_signature(self.tokenizer)
        if self._blob is None or self._blob[0] != signature:
            data = pickle.dumps(self.tokenizer, protocol=pickle.HIGHEST_PROTOCOL)
            key = hashlib.sha1(data).hexdigest()
            self._blob = (signature, key, data)
            TOKENIZERS.put(key, self.tokenizer)  # a forked child finds it under the same key
        state = self.__dict__.copy()
        state.update(_templates={}, _profiles={}, _unprobed={}, _exact={}, _keeps_history={}, _constants={},
                     _forms={}, _last_reasoning={}, _against_reasoning={}, _media_ids=None,
                     _media_counters={}, _splices=None, _images_join=None,
                     # the byte-length table travels (measuring a vocabulary takes 0.1-0.3 s in every
                     # worker); its backend does not: the unpickled tokenizer's takes its place
                     _bytes=None if self._bytes is None else (None, self._bytes[1]),
                     _backend_copy=None, _layouts={}, _recorded={}, tokenizer=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        assert self._blob is not None
        signature, key, data = self._blob
        tok = TOKENIZERS.get(key)
        if tok is None or _safe_signature(tok) != signature:  # absent, or changed since it was pickled
            tok = pickle.loads(data)
            TOKENIZERS.put(key, tok)
        self.tokenizer = tok
        self._pid = os.getpid()

    # -- template and profile ------------------------------------------------------------------
    def template_source(self, tools: Any = None) -> str:
        if self.options.chat_template is None and self.processor is not None:
            own = getattr(self.processor, "chat_template", None)
            if isinstance(own, str):
                return own
        try:
            source = self.tokenizer.get_chat_template(self.options.chat_template, tools)
        except ValueError as exc:
            # no row renders without a template: an error for the run (raised once), not for each row
            what = ("the tokenizer has no chat template (tokenizer.chat_template is not set)"
                    if self.tokenizer.chat_template is None else str(exc).rstrip("."))
            raise TokenizerError(
                f"{what}; respmask renders every chat with the chat template: pass chat_template=... (a Jinja string, "
                "or the name of one of the tokenizer's templates) to respmask (command line: --chat-template FILE, a "
                "Jinja file), or set tokenizer.chat_template."
            ) from exc
        return source

    def template(self, source: str) -> ChatTemplate:
        t = self._templates.get(source)
        if t is None:
            t = self._templates[source] = ChatTemplate(source)
        return t

    def _special_tokens(self) -> dict[str, Any]:
        return self.tokenizer.special_tokens_map

    def _apply_template(self, template: ChatTemplate, messages: list[dict], tools: Any, documents: Any,
                kwargs: Mapping[str, Any], add_generation_prompt: bool) -> tuple[Any, list[dict]]:
        variables, chat = template_inputs(
            messages,
            tools=tools,
            documents=documents,
            add_generation_prompt=add_generation_prompt,
            constants=self._template_constants(kwargs),
        )
        return template.render(variables, chat), chat

    def _template_constants(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """:func:`template_constants` of the tokenizer's special tokens and ``kwargs``, computed
        again only when the special tokens changed."""
        key = self._profile_key("", kwargs)[1]
        special = self._special_tokens()
        cached = self._constants.get(key)
        if cached is None or cached[0] != special:
            cached = self._constants[key] = (special, template_constants(special, kwargs))
        return cached[1]

    def _reference_text(self, source: str, messages: list[dict], tools: Any, documents: Any,
                        kwargs: Mapping[str, Any], add_generation_prompt: bool) -> str | None:
        """transformers' own render (None when it raises)."""
        try:
            return self.tokenizer.apply_chat_template(
                messages, tools=tools, documents=documents, chat_template=source, tokenize=False,
                add_generation_prompt=add_generation_prompt, **kwargs,
            )
        except Exception:
            return None

    def _control_tokens(self, source: str) -> list[str]:
        literals = source
        out = []
        for token in self.tokenizer.added_tokens_decoder.values():
            if token.special or (token.content in literals and not token.content.isspace()):
                out.append(token.content)
        return out

    def _token_starts(self, text: str) -> list[int]:
        enc = self.backend().encode(text, add_special_tokens=False)
        return [s for s, _ in enc.offsets]

    @staticmethod
    def _profile_key(source: str, kwargs: Mapping[str, Any], shape: ProbeShape | None = None) -> tuple[str, str]:
        key = json.dumps(kwargs, sort_keys=True, default=str) if kwargs else ""
        return (source, key if shape is None else f"{key}|{shape.key}")

    def profile(
        self, source: str, kwargs: Mapping[str, Any], key: tuple[str, str] | None = None, tools: Any = None,
        messages: Sequence[Mapping[str, Any]] | None = None,
    ) -> tuple[TemplateProfile, StopTokens]:
        """The learned profile of a template under these template kwargs, for conversations shaped
        like ``messages`` (cached under ``key``, ``_profile_key(source, kwargs, shape)`` when not
        given).

        The probes are written in the shape of ``messages`` (:class:`ProbeShape`: content parts
        for the roles that use them). ``tools``: the tools of the conversation that asks; a
        template that rejects respmask's probe tools (it reads a tool format of its own, as
        Command-R's tool-use template does) is probed again with these, on every probe. A template
        that renders none of the probes (it accepts only a ``functions`` message after the
        system, or only conversations that end with the user) is probed with ``messages`` itself
        in probe words (:func:`sample_probes`), once per such shape of conversation.

        Raises:
            TemplateError: the template raises on every probe and on the conversation's own shape.
        """
        if key is None:
            key = self._profile_key(source, kwargs, probe_shape(messages) if messages is not None else None)
        cached = self._profiles.get(key)
        if cached is not None:
            return cached
        shape = probe_shape(messages) if messages is not None else None
        unprobed = self._unprobed.get(key)
        if unprobed is not None:
            return self._sample_profile(source, kwargs, key, tools, messages, unprobed)
        fixed = probes() if shape is None else [shape.apply(p) for p in probes()]
        try:
            profile, renders = self._learn(source, kwargs, fixed)
        except TemplateError as exc:
            try:
                if not tools:
                    raise
                profile, renders = self._learn(source, kwargs, fixed, own_tools=tools)
            except TemplateError:
                if messages is None:
                    raise exc from None
                self._unprobed[key] = exc
                return self._sample_profile(source, kwargs, key, tools, messages, exc)
        return self._keep(key, source, kwargs, profile, renders)

    def _sample_profile(self, source: str, kwargs: Mapping[str, Any], key: tuple[str, str], tools: Any,
                        messages: Sequence[Mapping[str, Any]] | None, error: TemplateError
                        ) -> tuple[TemplateProfile, StopTokens]:
        """The profile learned from the conversation's own shape (the fixed probes raised with
        ``error``), cached per shape of conversation (roles, content kinds, tool calls, reasoning)."""
        if messages is None:
            raise error
        conversations = sample_probes(messages, tools, REASONING_KEYS)
        outline = repr([(m.get("role"), type(m.get("content")).__name__, bool(m.get("tool_calls")),
                         any(m.get(k) for k in REASONING_KEYS)) for m in conversations[0].messages])
        own = (key[0], f"{key[1]}|sample:{tools is not None}:{outline}")
        cached = self._profiles.get(own)
        if cached is None:
            try:
                profile, renders = self._learn(source, kwargs, conversations)
            except TemplateError:
                raise error from None
            cached = self._keep(own, source, kwargs, profile, renders)
            self._exact[key] = self._exact[own] and self._exact.get(key, True)
        return cached

    def _learn(self, source: str, kwargs: Mapping[str, Any], conversations: Sequence[Probe], own_tools: Any = None
               ) -> tuple[TemplateProfile, list[tuple[list[dict], Any, bool, str]]]:
        """:func:`learn_profile` on ``conversations`` (with ``own_tools`` instead of the probes'
        tools when given), and every render it made."""
        template = self.template(source)
        renders: list[tuple[list[dict], Any, bool, str]] = []

        def probe(messages: list[dict], probe_tools: Any, gen: bool) -> Segments:
            used = probe_tools if own_tools is None else own_tools
            rendered = self._apply_template(template, messages, used, None, kwargs, gen)[0]
            renders.append((messages, used, gen, rendered.text))
            return Segments.of(rendered)

        profile = learn_profile(probe, control_tokens=self._control_tokens(source), token_starts=self._token_starts,
                                eos=self.tokenizer.eos_token, conversations=conversations)
        return profile, renders

    def _keep(self, key: tuple[str, str], source: str, kwargs: Mapping[str, Any], profile: TemplateProfile,
              renders: Sequence[tuple[list[dict], Any, bool, str]]) -> tuple[TemplateProfile, StopTokens]:
        """Cache ``profile`` under ``key`` with its compiled stop tokens, and whether the probes'
        renders equal transformers'."""
        # Training input must be inference input: the probes' renders are compared byte for byte
        # with transformers' own; where one differs, every conversation is compared.
        self._exact[key] = all(
            self._reference_text(source, m, tools, None, kwargs, gen) == text for m, tools, gen, text in renders
        )
        eos = self.tokenizer.eos_token
        end_of_turn = [*profile.end_of_turn, *([eos] if eos else []), *self._configured_stops]
        # a stop token may open the next message's output: templates that write a turn's closer
        # when the next message begins (Jamba's <|eom|>), or whose next role token ends a turn
        next_turn = [*profile.end_of_turn, *([eos] if eos else []), *self._configured_stops]
        stops = StopTokens(
            end_of_turn=token_regex(end_of_turn),
            call_end=token_regex(profile.call_end),
            next_turn=token_regex(next_turn),
            reasoning_close=token_regex(profile.reasoning_close),
            eos=eos,
        )
        self._profiles[key] = (profile, stops)
        return profile, stops

    # -- one sample ----------------------------------------------------------------------------
    def parse(self, sample: Any) -> Chat | TextPair | Pretokenized:
        """``sample`` read in this masker's ``data_format`` / ``mapping`` and checked.

        Raises:
            SampleError: the sample is malformed (``MissingColumnsError``: it matches no format).
        """
        return parse(sample, self.reader)

    def _inputs(self, parsed: Chat) -> tuple[Chat, dict[str, Any]]:
        """``parsed`` with the ``tools`` and ``documents`` that template kwargs carry moved to the
        conversation, and the template kwargs for it (the options' under the sample's own).

        ``apply_chat_template(messages, **{"documents": docs})`` binds ``documents`` (and ``tools``)
        to its own arguments, so kwargs that hold them mean the same as a sample that does: both
        give the same render, profile and masks. The sample's own tools and documents win."""
        kwargs = {**self.options.template_kwargs, **parsed.kwargs}
        if "tools" not in kwargs and "documents" not in kwargs:
            return parsed, kwargs
        tools, documents = kwargs.pop("tools", None), kwargs.pop("documents", None)
        own = {k: v for k, v in parsed.kwargs.items() if k not in ("tools", "documents")}
        return replace(parsed, tools=parsed.tools if parsed.tools is not None else tools,
                       documents=parsed.documents if parsed.documents is not None else documents, kwargs=own), kwargs

    def _refuse_media(self, sample: Any) -> None:
        """Images, video or audio a text tokenizer would drop are an error naming what to do (the
        model's processor, or ``text_only=True`` to train the text alone on purpose)."""
        if self.processor is None and not self.options.text_only:
            found = media_in(sample)
            if found:
                raise media_error(found)

    def _parse_refusing_media(self, sample: Any) -> Chat | TextPair | Pretokenized:
        """:meth:`parse` after :meth:`_refuse_media` (a row with media is refused before any other
        error of it), without walking the row for media when the reading pass proved it has none: a
        plain dict row whose only list is the messages it read, each holding strings alone."""
        try:
            parsed = parse(sample, self.reader)
        except Exception as exc:
            failed = exc
        else:
            if not (self.processor is None and not self.options.text_only) or _media_free(sample, parsed):
                return parsed
            failed = None
        self._refuse_media(sample)
        if failed is not None:
            raise failed
        return parsed

    def render(self, sample: Any) -> RenderedSample:
        """Render a raw sample and find its trained character spans."""
        parsed = self._parse_refusing_media(sample)
        if isinstance(parsed, Pretokenized):
            raise SampleError("is already tokenized; render() needs messages or a prompt/completion")
        return self._render_parsed(parsed)

    def _render_parsed(self, parsed: Chat | TextPair) -> RenderedSample:
        if isinstance(parsed, TextPair):
            eos = self.tokenizer.eos_token or ""
            completion = parsed.completion
            if eos and not completion.endswith(eos):
                completion += eos
            text = parsed.prompt + completion
            span = [(len(parsed.prompt), len(text))] if completion else []
            return RenderedSample(text, span, [], None, add_special_tokens=True)
        parsed, kwargs = self._inputs(parsed)
        source = self.template_source(parsed.tools)
        template = self.template(source)
        if kwargs and (unread := template.unread_kwargs(kwargs)):
            warn(unread)
        if self.processor is not None:  # a processor's template may read parts alone (LLaVA)
            parsed = self._in_read_form(parsed, source, template, kwargs)
        # states known: every content is a string, the fixed probes' own shape
        key = self._profile_key(source, kwargs, probe_shape(parsed.messages) if parsed.states is None else None)
        layouts = rendered = hit = None
        if parsed.tools is None and parsed.documents is None:
            # a message-blind template renders a known outline from its layout (same records)
            layouts = self._layouts.get(source)
            if layouts is None:
                layouts = self._layouts[source] = LayoutRenderer(template)
            if layouts.blind:
                hit = layouts.find(key[1], parsed.messages, self._template_constants(kwargs),
                                   plain=parsed.states is not None)
            else:
                layouts = None
        if hit is None:
            try:  # first: a conversation the template rejects is the sample's error, whatever the probes say
                rendered, chat = self._apply_template(template, parsed.messages, parsed.tools, parsed.documents, kwargs,
                                                      False)
            except RespmaskError:
                raise
            except Exception as exc:
                raise SampleError(
                    f"the chat template raised {type(exc).__name__}: {exc}. Fix the conversation so the template "
                    "accepts it (the same error comes from tokenizer.apply_chat_template)."
                ) from exc
            if layouts is not None:
                layouts.learn(key[1], parsed.messages, self._template_constants(kwargs), rendered)
        learned = self.profile(source, kwargs, key, parsed.tools, parsed.messages)
        profile, stops = learned
        text = hit.text if hit is not None else rendered.text
        if not self._exact[key]:
            reference = self._reference_text(source, parsed.messages, parsed.tools, parsed.documents, kwargs, False)
            if reference != text:
                at = len(commonprefix([reference or "", text]))
                raise TemplateError(
                    "respmask's render of this conversation differs from transformers' apply_chat_template at "
                    f"character {at} ({(reference or '')[at:at + 40]!r} vs {text[at:at + 40]!r}), so its "
                    "masks would not match the ids the model sees. Please report the template; meanwhile pass a "
                    "template annotated with {% generation %} blocks (chat_template=..., use_generation_tags=True)."
                )
        selected = select_messages(parsed.roles, parsed.flags, self.options.train_on)
        use_tags = self.options.use_generation_tags
        if use_tags and not template.has_generation_tags:
            raise TemplateError("use_generation_tags=True but the chat template has no {% generation %} blocks")
        replays = reads = moved = None
        if hit is not None:
            moved = hit
        elif parsed.states is not None and parsed.tools is None and parsed.documents is None:
            # no layout: the records of this render as a layout of their own (see _replay)
            records = self._recorded.get(source)
            if records is None:
                records = self._recorded[source] = RecordedLayouts()
            moved = records.hit(rendered, tuple((m["role"], tuple(m)) for m in parsed.messages))
        if moved is not None:
            # the analysis of a conversation of the same layout and value states, moved (see _replay)
            replays = replays_of(moved)
            replay_key = replays.key(parsed.messages, selected, (use_tags, self.options.reasoning_in_loss),
                                     parsed.states)
            replayed = replays.replay(replay_key, moved, learned)
            if replayed is not None:
                spans, turns, segs, dropped, empty = replayed
                dropped = self._unrendered_reasoning(dropped, parsed.messages, template, kwargs, turns)
                texts = dropped_text(parsed.messages, dropped)
                if hit is None:  # a layout's template prints values whole or trimmed: no slices
                    sliced, sliced_text = self._content_left_out(parsed, rendered, template, kwargs, turns, dropped)
                    dropped, texts = dropped + sliced, texts + sliced_text
                return RenderedSample(text, spans, turns, segs, dropped=dropped, empty_replies=empty,
                                      dropped_text=texts)
            if hit is not None:
                rendered = hit.rendered()
            reads = []

        def prompt(k: int) -> str | None:
            try:
                return self._apply_template(template, parsed.messages[:k], parsed.tools, parsed.documents, kwargs, True)[0].text
            except Exception:  # the template rejects this history: no prompt to compare
                return None

        try:
            turns, segs = find_turns(
                rendered,
                parsed.roles,
                selected,
                profile,
                stops,
                use_generation_tags=use_tags,
                reasoning_in_loss=self.options.reasoning_in_loss,
                messages=parsed.messages,
                prompt=prompt,
                reads=reads,
            )
        except UnplacedTurn as exc:
            k = exc.message
            raise SampleError(
                f"the chat template renders message {k} ({parsed.roles[k]}) as part of another turn: its text is "
                "not preceded by the template's generation prompt, so it cannot be trained as a reply (for "
                "example, with tools Llama 3.1 puts the first message into its tool prompt). Start the "
                f'conversation the way the template expects, or set "train": false on message {k}.'
            ) from None
        self._check_attributed(parsed, selected, turns, segs)
        dropped = self._unrendered_reasoning(dropped_data(parsed.messages, rendered.printed, turns, rendered.text),
                                             parsed.messages, template, kwargs, turns)
        if parsed.tools or parsed.documents:
            def without(name: str) -> str | None:
                try:
                    return self._apply_template(template, parsed.messages, None if name == "tools" else parsed.tools,
                                                None if name == "documents" else parsed.documents, kwargs, False)[0].text
                except Exception:  # the template needs them: they are not left out
                    return None

            dropped += dropped_inputs(parsed.tools, parsed.documents, rendered.printed, rendered.text, without)
        texts = dropped_text(parsed.messages, dropped, parsed.tools, parsed.documents)
        # what depends on the values themselves, not only on their states: never replayed (see _replay)
        sliced, sliced_text = ([], []) if hit is not None else self._content_left_out(
            parsed, rendered, template, kwargs, turns, dropped)
        out = RenderedSample(rendered.text, trained_spans(turns, segs), turns, segs, dropped=dropped + sliced,
                             dropped_text=texts + sliced_text,
                             empty_replies=empty_replies(parsed.messages, turns, rendered.text))
        if replays is not None:
            replays.keep(replay_key, moved, learned, selected, reads, out.spans, turns, segs, dropped,
                         out.empty_replies)
        return out

    def _content_left_out(self, parsed: Chat, rendered: Rendered, template: ChatTemplate, kwargs: Mapping[str, Any],
                          turns: Sequence[Turn], dropped: Sequence[tuple[int, str]]
                          ) -> tuple[list[tuple[int, str]], list[str]]:
        """``(message, what)`` entries and their texts for the trained replies whose string content
        the template prints only a slice of (:func:`respmask._reasoning.content_slices`), with
        whether an earlier turn would show it whole as the last message learned once per marker
        (:meth:`_prints_marked_content_as_last`; a prefix render per turn costs more), else by the
        render of the turn's prefix."""
        def shown_as_last(k: int, marker: str | None) -> bool:
            if marker is not None:
                return self._prints_marked_content_as_last(marker, template, kwargs, probe_shape(parsed.messages))
            return prints_content_as_last(self._renderer(template), kwargs, parsed.messages, k, parsed.tools,
                                          parsed.documents, template.constants)

        return content_slices(parsed.messages, rendered, template.constants, turns, dropped, shown_as_last)

    def _prints_marked_content_as_last(self, marker: str, template: ChatTemplate, kwargs: Mapping[str, Any],
                                       shape: ProbeShape | None) -> bool:
        """:func:`respmask._reasoning.prints_marked_content_as_last`, learned once per template,
        kwargs, shape and marker (in ``_last_reasoning``, beside :meth:`_renders_last_reasoning`'s)."""
        key = (template.source, self._profile_key("", kwargs, shape)[1], "content:" + marker)
        cache = self._last_reasoning
        if key not in cache:
            cache[key] = prints_marked_content_as_last(self._renderer(template), kwargs, marker, shape,
                                                       template.constants)
        return cache[key]

    def _renderer(self, template: ChatTemplate) -> Render:
        """``template``'s instrumented render (:class:`respmask._reasoning.Render`), for probes."""
        def render(messages: list[dict[str, Any]], kwargs: Mapping[str, Any], add_generation_prompt: bool,
                   tools: Any = None, documents: Any = None) -> Rendered:
            return self._apply_template(template, messages, tools, documents, kwargs, add_generation_prompt)[0]

        return render

    def _content_forms(self, source: str, template: ChatTemplate, kwargs: Mapping[str, Any]) -> ContentForms:
        """The content forms the template reads (:func:`respmask._formats.content_forms`), learned
        once per template and kwargs."""
        key = self._profile_key(source, kwargs)
        forms = self._forms.get(key)
        if forms is None:
            def render(messages: list[dict]) -> str:
                return self._apply_template(template, messages, None, None, kwargs, False)[0].text

            forms = self._forms[key] = content_forms(render)
        return forms

    def printed_content_lists(self, sample: Any) -> list[tuple[int, str]]:
        """``(message, role)`` of the messages of ``sample`` whose content is a list of parts that
        the chat template prints as the list it is (``[{'type': 'text', 'text': ...}]``, Python's
        repr: a template that only prints strings, as Llama 3.1's) instead of reading its text.

        Such a row renders (and trains) that repr, as ``apply_chat_template`` renders it; whether
        a role's template prints its parts so is learned by a probe render (see
        :func:`respmask._formats.content_forms`), never from the model's name.

        Returns:
            The messages, in order; [] for a sample that holds none (or is not a conversation).

        Raises:
            SampleError: the sample is malformed (as :meth:`parse`).
        """
        parsed = self.parse(sample)
        if not isinstance(parsed, Chat):
            return []

        def forms() -> ContentForms:
            chat, kwargs = self._inputs(parsed)
            source = self.template_source(chat.tools)
            return self._content_forms(source, self.template(source), kwargs)

        return printed_lists(parsed.messages, forms)

    def _reasoning_against_prompt(self, sample: Any) -> tuple[list[int], ReasoningAgainstPrompt | None]:
        """The trained replies of ``sample`` holding reasoning that the template kwargs contradict:
        under them the generation prompt (what the model reads at inference) is not what precedes
        such a reply in the rendered training text (Qwen3's ``enable_thinking=False`` ends the
        prompt in an empty reasoning block, yet prints a reply's reasoning: the reply is trained
        after a prompt no inference writes, neither with thinking on nor off).

        Learned by probe renders, once per template, kwargs and reasoning key (see
        :func:`respmask._reasoning.replies_against_prompt` and :meth:`_kwargs_against_reasoning`),
        never from a kwarg's name.

        Returns:
            The messages, in order, and what the kwargs do (None with the messages []).

        Raises:
            SampleError: the sample is malformed (as :meth:`parse`).
        """
        parsed = self.parse(sample)
        if not isinstance(parsed, Chat):
            return [], None
        parsed, kwargs = self._inputs(parsed)
        if not kwargs:
            return [], None
        selected = select_messages(parsed.roles, parsed.flags, self.options.train_on)
        source = self.template_source(parsed.tools)
        template = self.template(source)
        shape = probe_shape(parsed.messages)

        def against(message: Mapping[str, Any], marker: str | None) -> ReasoningAgainstPrompt | None:
            return self._kwargs_against_reasoning(message, template, kwargs, shape, marker)

        return replies_against_prompt(parsed.messages, selected, template.constants, against)

    def _kwargs_against_reasoning(self, message: Mapping[str, Any], template: ChatTemplate,
                                  kwargs: Mapping[str, Any], shape: ProbeShape | None,
                                  marker: str | None = None) -> ReasoningAgainstPrompt | None:
        """:func:`respmask._reasoning.kwargs_against_reasoning` for a reply of ``message``'s kind
        (its reasoning key, or with ``marker`` reasoning written in its content before that string
        of the template), learned once per template, kwargs, shape and key or marker."""
        field = reasoning_field(message)
        key = (template.source, self._profile_key("", kwargs, shape)[1],
               field if marker is None else "content:" + marker)
        cache = self._against_reasoning
        if key not in cache:
            cache[key] = kwargs_against_reasoning(self._renderer(template), kwargs, field, marker, shape)
        return cache[key]

    def _in_read_form(self, parsed: Chat, source: str, template: ChatTemplate, kwargs: Mapping[str, Any]) -> Chat:
        """``parsed`` with each string content the processor's template leaves out but renders as one
        text part written as that part (see :func:`respmask._formats.content_forms`, learned once per
        template and kwargs), as TRL's vision SFT writes every string: LLaMA-Factory's mllm_demo.json
        (string replies) through LLaVA's processor would train nothing. A text tokenizer's rows are
        rendered as written (its ids stay ``apply_chat_template``'s, the reference of every check)."""
        forms = self._content_forms(source, template, kwargs)
        messages = with_text_parts(parsed.messages, forms.parts) if forms.parts else None
        return parsed if messages is None else replace(parsed, messages=messages, states=None, read_from=None)

    def render_rows(self, sample: Any) -> list[RenderedSample]:
        """The rows a raw sample gives under this masker's ``split`` (one unless it splits)."""
        parsed = self._parse_refusing_media(sample)
        if isinstance(parsed, Pretokenized):
            raise SampleError("is already tokenized; render_rows() needs messages or a prompt/completion")
        return self._rows_parsed(parsed)

    def _rows_parsed(self, parsed: Chat | TextPair) -> list[RenderedSample]:
        whole = self._render_parsed(parsed)
        if self.split == "never" or isinstance(parsed, TextPair):
            return [whole]
        parsed, kwargs = self._inputs(parsed)
        source = self.template_source(parsed.tools)
        template = self.template(source)
        shape = probe_shape(parsed.messages)
        key = self._profile_key(source, kwargs, shape)
        if self.split == "auto" and self._history_kept(key, kwargs, shape) and (
            not whole.dropped or _drops_all_reasoning(parsed.messages, whole.dropped)
        ):
            # the template keeps history (learned) and this render left nothing out, or nothing but
            # the reasoning of every message (a template without reasoning: no prefix shows it either)
            return [whole]
        analysed: dict[int, RenderedSample | None] = {}
        last = len(parsed.messages) - 1

        def prefix_text(k: int) -> str | None:
            return self._prefix_text(template, parsed, kwargs, k)

        def prefix_turns(k: int) -> tuple[str, list[Turn]] | None:
            if k not in analysed:
                prefix = Chat(parsed.messages[: k + 1], parsed.flags[: k + 1], parsed.tools, parsed.documents,
                              parsed.kwargs)
                try:
                    rs = self._render_parsed(prefix)
                    # a prefix render that leaves out the turn's own data is no reference for it
                    analysed[k] = None if any(m == k for m, _ in rs.dropped) else rs
                except RespmaskError:
                    analysed[k] = None
            rs = analysed[k]
            return None if rs is None else (rs.text, rs.turns)

        rows = plan_rows(self.split, whole.text, whole.turns, last, prefix_text, prefix_turns)  # type: ignore[arg-type]
        shown = [(k, analysed[k]) for k, _ in rows if k is not None]
        # what the whole render leaves out is lost unless a prefix row shows it
        still = [not any(rs is not None and d[0] <= k and d not in rs.dropped for k, rs in shown) for d in whole.dropped]
        lost = [d for d, gone in zip(whole.dropped, still) if gone]
        lost_text = [t for t, gone in zip(whole.dropped_text, still) if gone]
        out = []
        for n, (k, chosen) in enumerate(rows):
            rs = whole if k is None else analysed[k]
            assert rs is not None  # plan_rows only makes rows of analysed prefixes
            turns = [t for t in rs.turns if t.message in chosen]
            out.append(RenderedSample(rs.text, trained_spans(turns, rs.segments), turns, rs.segments,  # type: ignore[arg-type]
                                      rs.add_special_tokens, dropped=lost if n == 0 else [], through=k,
                                      dropped_text=lost_text if n == 0 else [],
                                      empty_replies=[m for m in rs.empty_replies if m in chosen]))
        return out

    def _unrendered_reasoning(self, dropped: list[tuple[int, str]], messages: Sequence[Mapping[str, Any]],
                              template: ChatTemplate, kwargs: Mapping[str, Any],
                              turns: Sequence[Turn]) -> list[tuple[int, str]]:
        """``dropped`` with the reasoning the template leaves out even when its message is the last
        one marked :data:`REASONING_NOT_RENDERED` (lost data: no prefix row shows it). Only
        reasoning a template renders on the last turn and strips from history (Qwen3's) is
        ``DROPPED_REASONING``, and only for the ``turns`` trained: an untrained turn is context,
        and history without its reasoning is what the model reads at inference (nothing is lost,
        no split would train it). The last message's own entry says so directly; an earlier one's
        is learned once per template, kwargs, reasoning key and content shape by rendering a user
        message and a reply holding reasoning (kept as it was when the template rejects that)."""
        if not any(what == DROPPED_REASONING for _, what in dropped):
            return dropped
        trained = {t.message for t in turns}
        shape = probe_shape(messages)
        out = []
        for k, what in dropped:
            if what == DROPPED_REASONING:
                if k not in trained:
                    continue  # reasoning of an untrained turn: context, read without it at inference too
                if k == len(messages) - 1 or not self._renders_last_reasoning(messages[k], template, kwargs, shape):
                    what = REASONING_NOT_RENDERED
            out.append((k, what))
        return out

    def _renders_last_reasoning(self, message: Mapping[str, Any], template: ChatTemplate, kwargs: Mapping[str, Any],
                                shape: ProbeShape | None) -> bool:
        """Whether the template renders the reasoning of ``message``'s kind (its reasoning key) when
        a reply holding it is the last message (learned once; see :meth:`_unrendered_reasoning`)."""
        field = reasoning_field(message)
        key = (template.source, self._profile_key("", kwargs, shape)[1], field)
        cache = self._last_reasoning
        if key not in cache:
            probe = Probe([{"role": "user", "content": "Probe question"},
                           {"role": "assistant", "content": "Probe answer", field: "Probe reasoning"}])
            probe = probe if shape is None else shape.apply(probe)
            try:
                rendered = self._apply_template(template, probe.messages, None, None, kwargs, False)[0]
                cache[key] = prints_reasoning(rendered.printed, 1)
            except Exception:  # noqa: BLE001 - the template rejects the probe: say no more than before
                cache[key] = True
        return cache[key]

    def _history_kept(self, key: tuple[str, str], kwargs: Mapping[str, Any], shape: ProbeShape | None = None) -> bool:
        """Whether, on probe conversations (multi-turn, reasoning, tool-call chains, written in
        ``shape``), every trained turn reads in the whole render exactly as in the render of its own
        prefix. Learned once per template, template kwargs and shape; a conversation whose render
        leaves data out is checked anyway."""
        kept = self._keeps_history.get(key)
        if kept is None:
            kept = True
            for probe in history_probes():
                probe = probe if shape is None else shape.apply(probe)
                chat = Chat([dict(m) for m in probe.messages], [None] * len(probe.messages), probe.tools, None,
                            dict(kwargs))
                try:
                    whole = self._render_parsed(chat)
                except RespmaskError:
                    continue  # the template rejects this probe shape
                last = len(chat.messages) - 1
                template = self.template(self.template_source(chat.tools))
                if not all(is_exact(whole.text, t,
                                    whole.text if t.message == last else self._prefix_text(template, chat, kwargs, t.message))
                           for t in whole.turns):
                    kept = False
                    break
            self._keeps_history[key] = kept
        return kept

    def _prefix_text(self, template: ChatTemplate, chat: Chat, kwargs: Mapping[str, Any], k: int) -> str | None:
        """The render of ``chat``'s messages through ``k`` (None when the template rejects that
        prefix: nothing to compare against)."""
        try:
            return self._apply_template(template, chat.messages[: k + 1], chat.tools, chat.documents, kwargs, False)[0].text
        except Exception:
            return None

    @staticmethod
    def _check_attributed(parsed: Chat, selected: Sequence[bool], turns: Sequence[Turn], segs: Segments) -> None:
        """A selected message whose text is in the render but that no turn covers is an error,
        never a silently untrained turn."""
        covered = {t.message for t in turns}
        for k, (message, chosen) in enumerate(zip(parsed.messages, selected)):
            if not chosen or k in covered:
                continue
            content = message.get("content")
            if not (isinstance(content, str) and content.strip() and content.strip() in segs.text):
                continue  # the template does not render this message: nothing to train
            if not any(o >= 0 for o in segs.owners):
                raise TemplateError(
                    f"message {k} ({message.get('role')}) is rendered but respmask could not attribute any "
                    "text to any message: the template seems to build its own message objects. Annotate the "
                    "template with {% generation %} blocks and pass it as chat_template=..., or report the "
                    "template."
                )
            raise SampleError(
                f"the chat template renders message {k} ({message.get('role')}) as part of another turn, so "
                "it cannot be trained as a reply (for example, with tools Llama 3.1 puts the first message "
                "into its tool prompt). Start the conversation the way the template expects, or set "
                f'"train": false on message {k}.'
            )

    # -- batches -------------------------------------------------------------------------------
    def encode_batch(self, samples: Iterable[Any], indices: Sequence[int] | None = None) -> list[Encoded]:
        """Render, tokenize (one Rust batch call) and mask many samples."""
        return self._encode_batch(samples, indices)

    def _encode_batch(self, samples: Iterable[Any], indices: Sequence[int] | None = None,
                      read: list[Any] | None = None) -> list[Encoded]:
        """:meth:`encode_batch`; ``read``: a list given receives each sample as parsed, in order
        (the processor path reads the media out of the same chats)."""
        samples = list(samples)
        out: list[list[Encoded | None]] = [[None] for _ in samples]
        groups: dict[bool, list[tuple[int, int, RenderedSample]]] = {False: [], True: []}
        vocab: int | None = None  # len(tokenizer), once per batch (it counts added tokens)
        for j, sample in enumerate(samples):
            index = indices[j] if indices is not None else j
            try:
                parsed = self._parse_refusing_media(sample)
                if read is not None:
                    read.append(parsed)
                if isinstance(parsed, Pretokenized):
                    vocab = len(self.tokenizer) if vocab is None else vocab
                    self._check_ids(parsed, vocab)
                    out[j] = [Encoded(parsed.input_ids, parsed.labels, position_ids=parsed.position_ids, sample=j)]
                    continue
                rows = self._rows_parsed(parsed)
            except SampleError as exc:
                raise exc.at(index) from exc.__cause__
            except TokenizerError:
                raise  # the tokenizer's problem (no chat template), for every row: the run's, not this sample's
            except RespmaskError as exc:
                raise type(exc)(f"sample {index}: {exc}") from exc
            out[j] = [None] * len(rows)
            for r, rs in enumerate(rows):
                groups[rs.add_special_tokens].append((j, r, rs))
        backend = self.backend()
        dropped_counts = self._count_dropped(backend, groups)
        for add_special, items in groups.items():
            if not items:
                continue
            # Special tokens added by a post-processor have no bytes in the text: offsets path.
            table = None if add_special else self._byte_lengths(backend)
            texts = [rs.text for _, _, rs in items]
            encodings = self._encode_texts(backend, texts, add_special, offsets=table is None)
            rows, every = ids_of(encodings)  # every: the batch's ids end to end (one max, one labels operation)
            if table is not None and len(every) and int(every.max()) >= len(table.lengths):
                table = self._byte_lengths(backend, rebuild=True)  # tokens were added since it was built
            masks = table.token_masks(rows, texts, [rs.spans for _, _, rs in items]) if table is not None else None
            labels: Sequence[np.ndarray | None] = [None] * len(rows)
            if masks is not None and all(mask is not None for mask in masks):
                labels = labels_from_masks(rows, masks, every)  # type: ignore[arg-type]
            for n, ((j, r, rs), enc, ids) in enumerate(zip(items, encodings, rows)):
                row_labels = labels[n]
                if row_labels is None:
                    mask = None if masks is None else masks[n]
                    if mask is None:
                        if table is not None:  # this text needs the tokenizer's own offsets
                            enc = self._encode_texts(backend, [rs.text], add_special, offsets=True)[0]
                            ids = np.asarray(enc.ids, dtype=np.int64)
                        mask = mask_from_ranges(token_ranges(enc, rs.spans, len(ids)), len(ids))
                    row_labels = labels_from_mask(ids, mask)
                out[j][r] = Encoded(
                    ids,
                    row_labels,
                    n_turns=len(rs.turns),
                    turns_without_stop=sum(1 for t in rs.turns if t.stop is None),
                    text=rs.text,
                    turns=rs.turns,
                    dropped=rs.dropped,
                    dropped_counts=dropped_counts.get((j, r), []),
                    empty_replies=rs.empty_replies,
                    sample=j,
                    through=rs.through,
                    row=r,
                    rows=len(out[j]),
                )
        return [enc for row in out for enc in row]  # type: ignore[misc]

    def _count_dropped(self, backend: Any, groups: Mapping[bool, Sequence[tuple[int, int, RenderedSample]]]
                       ) -> dict[tuple[int, int], list[int]]:
        """Tokens of the data each row's render leaves out, per entry (one Rust call, only when there
        is some)."""
        where = [(j, r) for items in groups.values() for j, r, rs in items for _ in rs.dropped_text]
        texts = [t for items in groups.values() for _, _, rs in items for t in rs.dropped_text]
        out: dict[tuple[int, int], list[int]] = {}
        if texts:
            for at, enc in zip(where, self._encode_texts(backend, texts, False, offsets=False)):
                out.setdefault(at, []).append(len(enc.ids))
        return out

    @staticmethod
    def _check_ids(parsed: Pretokenized, vocab: int) -> None:
        """Token ids must exist in this tokenizer (``vocab`` ids); labels are -100 or token ids."""
        ids, labels = parsed.input_ids, parsed.labels
        if len(ids) and (ids.min() < 0 or ids.max() >= vocab):
            raise SampleError(f"'input_ids' holds ids outside this tokenizer's vocabulary [0, {vocab})")
        if len(labels) and (((labels < 0) & (labels != IGNORE_INDEX)).any() or labels.max() >= vocab):
            raise SampleError(f"'labels' must be -100 or token ids in [0, {vocab})")

    # -- processors (images, audio, video) ---------------------------------------------------------
    def process_batch(self, samples: Sequence[Any], indices: Sequence[int] | None = None,
                      return_tensors: str = "pt") -> tuple[dict[str, Any], list[Encoded]]:
        """Chats with images or audio through the masker's processor: everything the processor
        returns for the batch (``input_ids`` with media expanded, ``attention_mask``,
        ``pixel_values``, ``input_features`` ...) plus ``labels``, and one :class:`Encoded` per
        sample (its real, unpadded ids and labels).

        The chat is rendered and its trained characters found as for text; the processor is
        called on the rendered texts and the media, as ``processor.apply_chat_template(...,
        tokenize=True)`` does, and the text's token mask is carried onto the processor's ids (see
        :mod:`respmask._media`): media tokens and their wrappers are never trained.

        Raises:
            SampleError: a sample is not a chat, holds media of a kind the processor does not take
                (video without a video processor), or its media cannot be loaded (the message
                names the sample).
        """
        encoded, texts, images = self._media_inputs(samples, indices)
        out = self._run_processor(texts, images, return_tensors)
        return self._label_processed(out, [(enc.input_ids, enc.labels != IGNORE_INDEX) for enc in encoded], encoded,
                                    return_tensors)

    def _media_inputs(self, samples: Sequence[Any], indices: Sequence[int] | None = None
                     ) -> tuple[list[Encoded], list[str], list[dict[str, list[Any]]]]:
        """Each sample rendered and masked as text, its rendered text and its media (images, audio,
        video by kind: what the processor is called on, see :func:`respmask._media.media_of`).

        Raises:
            SampleError: as :meth:`process_batch`.
        """
        if self.processor is None:
            raise TypeError("process_batch needs a masker built on a processor")
        samples = list(samples)
        positions = list(indices) if indices is not None else list(range(len(samples)))
        chats: list[Any] = []
        encoded = self._encode_batch(samples, positions, chats)
        images = []
        for j, (sample, parsed) in enumerate(zip(samples, chats)):
            try:
                if not isinstance(parsed, Chat):
                    raise SampleError("a processor masks chats ('messages'); this row is not one")
                images.append(media_of(sample, parsed.messages, self.processor))
            except SampleError as exc:
                raise exc.at(positions[j]) from exc.__cause__
        return encoded, [enc.text or "" for enc in encoded], images

    def _run_processor(self, texts: list[str], images: list[Any], return_tensors: str = "pt",
                      add_special_tokens: bool | None = None, padding_side: str | None = None) -> Any:
        """The processor's call on rendered texts and their media (see
        :func:`respmask._media.call_processor`).

        Raises:
            SampleError: the processor rejected the batch.
        """
        try:
            return call_processor(self.processor, texts, images, return_tensors, add_special_tokens, padding_side)
        except Exception as exc:
            raise SampleError(
                f"the processor ({type(self.processor).__name__}) rejected this batch: {type(exc).__name__}: {exc}. "
                "Check that each row's media parts (image, audio, video) and its media pair up."
            ) from exc

    def _label_processed(self, out: Any, sources: Sequence[tuple[np.ndarray, np.ndarray]], encoded: Sequence[Encoded],
                        return_tensors: str = "pt") -> tuple[dict[str, Any], list[Encoded]]:
        """The processor's batch ``out`` with ``labels``: each row's text tokens and their trained
        mask (``sources``) carried onto the processor's ids, image tokens never trained; and each
        row's :class:`Encoded` (``encoded``'s, with the processor's ids and these labels)."""
        ids = as_numpy(out["input_ids"])
        real = as_numpy(out["attention_mask"]).astype(bool) if "attention_mask" in out else np.ones(ids.shape, bool)
        media = self.media_tokens()
        labels = np.full(ids.shape, IGNORE_INDEX, dtype=np.int64)
        rows = []
        for r, ((a_ids, a_trained), enc) in enumerate(zip(sources, encoded)):
            where = np.flatnonzero(real[r])
            b = ids[r, where].astype(np.int64)
            trained = carry_mask(a_ids, a_trained, b) & ~np.isin(b, media)
            row_labels = np.where(trained, b, IGNORE_INDEX)
            labels[r, where] = row_labels
            rows.append(replace(enc, input_ids=b, labels=row_labels))
        batch = dict(out)
        if return_tensors == "pt":
            import torch

            batch["labels"] = torch.from_numpy(labels)
        else:
            batch["labels"] = labels
        return batch, rows

    def media_tokens(self) -> np.ndarray:
        """The token ids that stand for images, audio or video with this masker's processor (learned
        once, see :func:`respmask._media.media_token_ids`); never trained."""
        if self.processor is None:
            return np.zeros(0, dtype=np.int64)
        if self._media_ids is None:
            processor = self.processor

            def processor_text(messages: list[dict]) -> str:
                return processor.apply_chat_template(messages, chat_template=self.template_source(), tokenize=False)

            self._media_ids = np.array(sorted(media_token_ids(processor, processor_text)), dtype=np.int64)
        return self._media_ids

    def encode(self, sample: Any) -> Encoded:
        """One sample's first row (its only row unless ``split`` splits it)."""
        return self.encode_batch([sample])[0]

    def encode_rows(self, sample: Any) -> list[Encoded]:
        """Every row of one sample (several when ``split`` splits it)."""
        return self.encode_batch([sample])

    def _encode_texts(self, backend: Any, texts: list[str], add_special: bool, offsets: bool) -> list[Any]:
        """One Rust batch call (without offset tracking unless ``offsets``). In a forked child (a
        DataLoader worker) where TOKENIZERS_PARALLELISM is forced on, the thread pool inherited
        from the parent would deadlock a batch call: one plain call per text there. (Unforced,
        the tokenizer turns its pool off in the child by itself.)"""
        if os.getpid() != self._pid and os.environ.get("TOKENIZERS_PARALLELISM", "").lower() in _TRUTHY:
            return [backend.encode(t, add_special_tokens=add_special) for t in texts]
        if offsets or not hasattr(backend, "encode_batch_fast"):
            return backend.encode_batch(texts, add_special_tokens=add_special)
        return backend.encode_batch_fast(texts, add_special_tokens=add_special)

    def _byte_lengths(self, backend: Any, rebuild: bool = False) -> ByteLengths | None:
        """The byte-length table of the current tokenizer, built once (and again when ids past its
        end show that tokens were added; counting added tokens every batch costs more)."""
        cached = self._bytes
        if cached is not None and cached[0] is None:  # carried by pickling: made for this tokenizer
            cached = self._bytes = (backend, cached[1])
        if rebuild or cached is None or cached[0] is not backend:
            cached = self._bytes = (backend, ByteLengths.of(backend))
        return cached[1]

    def backend(self) -> Any:
        """The tokenizer's Rust backend as ``tokenizer(text, add_special_tokens=False)`` uses it:
        no truncation, no padding, special tokens split only if ``split_special_tokens``.

        The caller's tokenizer is never changed: when its backend is set otherwise (a call with
        ``truncation=True`` leaves truncation set on it), a private copy set right is used."""
        backend = self.tokenizer.backend_tokenizer
        split = bool(getattr(self.tokenizer, "split_special_tokens", False))
        if backend.truncation is None and backend.padding is None and getattr(
            backend, "encode_special_tokens", split
        ) == split:
            return backend
        size = backend.get_vocab_size(with_added_tokens=True)
        cached = self._backend_copy
        if cached is None or cached[0] is not backend or cached[1] != size:  # none yet, or tokens were added
            from tokenizers import Tokenizer

            copy = Tokenizer.from_str(backend.to_str())
            copy.no_truncation()
            copy.no_padding()
            if hasattr(copy, "encode_special_tokens"):
                copy.encode_special_tokens = split
            cached = self._backend_copy = (backend, size, copy)
        return cached[2]


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _media_free(sample: Any, parsed: Chat | TextPair | Pretokenized) -> bool:
    """Whether :func:`media_in` finds nothing in ``sample``, known from its reading alone: ``parsed``
    holds only strings (its ``states``) and was read from a list that is ``sample`` itself or, of
    a plain dict row without media columns, its only value that is not a scalar (False: not known)."""
    if not isinstance(parsed, Chat) or parsed.states is None or parsed.read_from is None:
        return False
    if parsed.read_from is sample:
        return True
    if type(sample) is not dict:
        return False
    read_from = parsed.read_from
    for key, value in sample.items():
        if value is read_from:
            continue
        if type(value) not in _SCALARS or key in MEDIA_COLUMNS:
            return False
    return True


def masker_for(tokenizer: Any, options: MaskOptions | None = None, changes: Mapping[str, Any] | None = None) -> ChatMasker:
    """The masker a front-end works with: ``tokenizer`` itself when it is a :class:`ChatMasker`
    (shared, with its own options), else a new one with ``options`` and ``changes``.

    Raises:
        TypeError: a masker was passed together with options (give them to the masker), or no
            tokenizer was passed.
    """
    if isinstance(tokenizer, ChatMasker):
        if options is not None or changes:
            raise TypeError("a ChatMasker carries its own options: build it with them "
                            "(ChatMasker(tok, train_on=...)) instead of passing them here too")
        return tokenizer
    if tokenizer is None:
        raise TypeError("a tokenizer, a processor or a respmask.ChatMasker is needed")
    return ChatMasker(tokenizer, options, **(changes or {}))
