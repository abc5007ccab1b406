"""MaskOptions: how respmask reads rows and which tokens it trains, documented once.

Every front-end (``ChatMasker``, ``ResponseOnlyCollator``, ``Pretokenizer``, ``check``,
``preview``, the CLI) takes these options the same way: as ``options=MaskOptions(...)``, as
keyword arguments of the same names, or already built into a ``ChatMasker`` passed in place of
the tokenizer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from ._errors import check_choice, string_boolean
from ._formats import DataFormat, MessageMapping, SampleReader
from ._split import SPLITS, Split

TrainOn = Literal["all", "last"]


@dataclass(frozen=True)
class MaskOptions:
    """The masking options: which text is a sample's conversation and which of its tokens train.

    Args:
        chat_template: a template string or the name of one of the tokenizer's templates; by
            default the tokenizer's own (the one ``apply_chat_template`` uses).
        template_kwargs: extra template variables for every sample (e.g. ``enable_thinking``);
            a sample's own ``chat_template_kwargs`` override them. A value that is the string
            ``"true"`` or ``"false"`` is refused: a template reads any non-empty string as true, so
            ``"false"`` would turn the option on; pass a boolean.
        train_on: ``"all"`` assistant turns, or only the ``"last"`` one. A message's
            ``"train": true/false`` key overrides this for that message.
        reasoning_in_loss: when False, reasoning blocks the template renders are not trained
            (a header the model writes itself after its reasoning stays trained).
        stop_tokens: extra tokens that end generation (besides EOS, the end-of-turn tokens
            learned from the template, and a ``generation_config.json`` beside the tokenizer).
        use_generation_tags: train exactly the template's ``{% generation %}`` blocks (as
            transformers' ``return_assistant_tokens_mask`` does) instead of the turns respmask
            finds. Off by default: shipped templates' blocks often include the role header or the
            newline after the stop token (SmolLM3, LFM2.5), which the model never generates.
        data_format: the layout of the rows: ``"auto"`` (decided per row), ``"messages"``,
            ``"sharegpt"``, ``"alpaca"``, ``"prompt_completion"``, or ``"preference"`` (DPO / KTO
            rows read as the prompt and its chosen reply, only the reply trained; other formats
            reject such rows).
        mapping: for any other list of messages, a :class:`respmask.MessageMapping` (or a dict of
            its fields: ``field_messages``, ``role_key``, ``content_key``, ``role_map``) that
            says where they are and how to read them; ``data_format`` must then be ``"auto"``.
        split: templates that rewrite history (Qwen3 drops earlier turns' reasoning) render
            earlier turns unlike the model produced them. ``"never"`` (default) trains one row
            per conversation as rendered; ``"auto"`` makes the fewest rows in which every
            trained turn reads exactly as in the render of its own prefix (one row on templates
            that keep history); ``"turns"`` makes one row per trained turn (its prefix).
        text_only: with a text tokenizer, train rows that hold images (video, audio) on their
            text alone, the media dropped; by default such rows are rejected with an error that
            says to pass the model's processor.

    Raises:
        ValueError: an option has an invalid value (a ``template_kwargs`` value ``"true"`` /
            ``"false"`` as a string, too).

    Example:
        >>> opts = MaskOptions(train_on="last", template_kwargs={"enable_thinking": False})
        >>> opts.with_(split="auto").split
        'auto'
    """

    chat_template: str | None = None
    template_kwargs: Mapping[str, Any] = field(default_factory=dict)
    train_on: TrainOn = "all"
    reasoning_in_loss: bool = True
    stop_tokens: tuple[str, ...] = ()
    use_generation_tags: bool = False
    data_format: DataFormat = "auto"
    mapping: MessageMapping | None = None
    split: Split = "never"
    text_only: bool = False

    def __post_init__(self) -> None:
        check_choice("train_on", self.train_on, ("all", "last"))
        check_choice("split", self.split, SPLITS)
        if self.chat_template is not None and not isinstance(self.chat_template, str):
            raise ValueError(f"chat_template must be a string, got {type(self.chat_template).__name__}")
        # copies of what was passed in: the caller's objects are never kept or changed
        object.__setattr__(self, "template_kwargs", dict(self.template_kwargs or {}))
        problem = string_boolean(self.template_kwargs, "template_kwargs")
        if problem:
            raise ValueError(problem)
        stops: Sequence[str] = self.stop_tokens or ()
        object.__setattr__(self, "stop_tokens", (stops,) if isinstance(stops, str) else tuple(stops))
        object.__setattr__(self, "reasoning_in_loss", bool(self.reasoning_in_loss))
        object.__setattr__(self, "use_generation_tags", bool(self.use_generation_tags))
        object.__setattr__(self, "text_only", bool(self.text_only))
        reader = SampleReader(self.data_format, self.mapping)  # checks data_format and mapping together
        object.__setattr__(self, "mapping", reader.mapping)

    def with_(self, **changes: Any) -> MaskOptions:
        """A copy with some options changed (checked like the constructor's).

        Raises:
            TypeError: a name that is not a masking option.
        """
        return replace(self, **_known(changes))

    def reader(self, join_text: bool = True) -> SampleReader:
        """Reads rows in ``data_format`` / ``mapping`` (``join_text``: see :class:`SampleReader`)."""
        return SampleReader(self.data_format, self.mapping, self.text_only, join_text)


def _known(changes: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(MaskOptions)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise TypeError(
            f"unknown option(s) {', '.join(map(repr, unknown))}; the masking options are "
            f"{', '.join(sorted(names))} (see respmask.MaskOptions)"
        )
    return dict(changes)


def resolve_options(options: MaskOptions | None, changes: Mapping[str, Any]) -> MaskOptions:
    """``options`` (default: the defaults) with keyword ``changes`` applied.

    Raises:
        TypeError: ``options`` is not a MaskOptions, or a change is not a masking option.
    """
    if options is None:
        return MaskOptions(**_known(changes))
    if not isinstance(options, MaskOptions):
        raise TypeError(f"options must be a respmask.MaskOptions, got {type(options).__name__}")
    return options.with_(**changes) if changes else options
