"""The step every front-end shares after the masker: a batch of samples in, training rows out.

The collator pads the rows, the Pretokenizer writes them as columns (``respmask tokenize`` runs
it inside the data engine), ``check`` counts them and ``preview`` shows one. What they all need
is computed here once: the ids and labels cut to ``max_length``, how many tokens train, and, for
a row that cannot train right, why and what to do, in one wording. A batch that raises is, on
request, encoded again one sample at a time so that every bad sample is found, not just the
first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ._errors import RespmaskError, SampleError, TokenizerError
from ._formats import PART_KEYS, joined_text, role_map_fix
from ._masker import ChatMasker, Encoded
from ._masks import IGNORE_INDEX
from ._media_cut import Fit, fit_batch
from ._samples import Chat
from ._spans import DROPPED_REASONING

OnError = Literal["raise", "collect"]

# what a row whose labels train every token (the prompt too) means, and how to fix it
EVERY_TOKEN_TRAINED = (
    "labels on every token (the prompt is trained too): the 'labels' were made before respmask saw them, "
    "typically by TRL's SFTTrainer preparing the dataset itself. Pass SFTConfig(remove_unused_columns=False, "
    "dataset_kwargs={'skip_prepare_dataset': True}) so the raw 'messages' reach the collator, or pre-tokenize "
    "with respmask.Pretokenizer"
)

# why a pre-tokenized row has no trained label, and what to do (its messages are gone: they are not the cause)
PRETOKENIZED_UNTRAINED = (
    "every label -100, made before respmask saw them (typically a max_length cut when pre-tokenizing removed "
    "every reply, or the conversation had none; 'assistant_masks' all 0 mean the same)"
)
PRETOKENIZED_UNTRAINED_FIX = (
    "pre-tokenize again with a larger max_length or truncation='left' (respmask.Pretokenizer(..., "
    "on_untrainable='drop') leaves such rows out), or drop such rows"
)


# what the collator says when on_image_cut="drop" left every sample of a batch out (check_trainer finds it)
LEFT_ALL_OUT = "on_image_cut='drop' left them all out"


# the one-line fix for content given as text parts to a template that reads strings (it prints the
# list's repr, or raises on it): each content list as a string, its text parts joined
JOIN_TEXT_PARTS = (
    "ds = ds.map(lambda row: {\"messages\": [{**m, \"content\": \"\".join(p[\"text\"] for p in m[\"content\"] "
    "if p[\"type\"] == \"text\") if isinstance(m[\"content\"], list) else m[\"content\"]} for m in row[\"messages\"]]})"
)

# content lists a template prints as their repr: what it is, what it means and what to do (check's
# line and tokenize's reject say it in these words)
CONTENT_PRINTED = "content lists the chat template prints as written"
CONTENT_PRINTED_WHY = (
    "the template prints a list of content parts as its repr, [{'type': 'text', 'text': ...}], and the model "
    "reads it, and is trained on it in replies, as text"
)
CONTENT_PRINTED_FIX = f"give each such content as a string, its text parts joined: {JOIN_TEXT_PARTS}"

# replies whose reasoning the template kwargs render where the generation prompt stands
REASONING_AGAINST_PROMPT = "replies with reasoning trained against the generation prompt"


@dataclass
class TrainingRow:
    """One row to train on, or the error of the sample it came from.

    ``input_ids`` / ``labels`` / ``position_ids`` are cut to ``max_length``; ``encoded`` keeps
    the uncut row and what the masker found (turns, data the template leaves out ...).
    """

    sample: int  # the position of its sample in the batch
    index: int  # the sample's index as the caller numbers it (its dataset row)
    encoded: Encoded | None  # None when the sample raised
    error: RespmaskError | None = None
    input_ids: np.ndarray | None = None
    labels: np.ndarray | None = None
    position_ids: np.ndarray | None = None  # packed rows only
    truncated: bool = False
    trained: int = 0  # trained tokens after truncation
    turns: int = 0  # trained turns with a trained token left after truncation (enc.n_turns when uncut)
    problem: str | None = None  # why its labels cannot train it right (None: they can)
    images_dropped: int = 0  # images truncation cut away (a processor's rows)
    left_out: str | None = None  # why the row is not in the batch (on_image_cut="drop"); ids and labels None
    audio_dropped: int = 0  # audio clips truncation cut away (a processor's rows)

    @property
    def empty_replies(self) -> list[int]:
        """Trained turns that hold nothing: only their stop token trains (the masker's finding)."""
        return self.encoded.empty_replies if self.encoded is not None else []

    @property
    def untrainable(self) -> bool:
        """No token of the row trains (its loss would be NaN or missing)."""
        return self.error is None and self.left_out is None and self.trained == 0


def truncate(enc: Encoded, max_length: int | None, side: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, bool]:
    """``enc``'s ids, labels and position ids (packed rows) cut together to ``max_length``,
    keeping the start (``side="right"``) or the end (``"left"``); and whether anything was cut.
    ``enc`` itself is not changed."""
    ids, labels, positions = enc.input_ids, enc.labels, enc.position_ids
    if max_length is None or len(ids) <= max_length:
        return ids, labels, positions, False
    cut = slice(-max_length, None) if side == "left" else slice(0, max_length)
    return ids[cut], labels[cut], None if positions is None else positions[cut], True


# why a packed row longer than max_length is refused (check_trainer gives such rows their own fix)
PACKED_CUT = "cutting it would drop the samples past the cut whole"


def packed_too_long(enc: Encoded, index: int, max_length: int | None) -> None:
    """Refuse a packed row (one carrying ``position_ids``) longer than ``max_length``.

    A packed row holds several samples, each starting at a position 0; cutting it to a shorter
    ``max_length`` would drop the samples past the cut whole (and cut one in the middle), so it
    is an error, not a truncation: the row was packed for a longer length.

    Raises:
        SampleError: the row is packed and longer than ``max_length``, saying why and what to do
            (one wording for every such row, so that check groups them).
    """
    positions = enc.position_ids
    if positions is None or max_length is None or len(positions) <= max_length:
        return
    raise SampleError(
        f"is a packed row (its 'position_ids' restart at each sample it holds) longer than max_length={max_length}: "
        f"{PACKED_CUT}, so it is refused. It was packed for a longer length: "
        f"pass a max_length of at least the pack length (the longest packed row), or pack again for {max_length} "
        f"tokens (respmask tokenize --pack {max_length}, respmask.pack(rows, {max_length}))", index)


def trained_runs(labels: np.ndarray) -> int:
    """How many runs of trained tokens (labels other than -100) ``labels`` holds."""
    on = np.asarray(labels) != IGNORE_INDEX
    return int(np.count_nonzero(on & ~np.concatenate([[False], on[:-1]])))


def kept_turns(enc: Encoded, labels: np.ndarray, trained: int) -> int:
    """The trained turns of ``enc`` that keep a trained token in ``labels``, its labels after a cut
    (``trained`` of them trained): all of them when the cut took no trained token, none when it
    took every one, else the runs of trained tokens left (a turn trains one run), at most
    ``enc.n_turns``."""
    if trained == enc.n_trained or not enc.n_turns:
        return enc.n_turns
    return min(enc.n_turns, trained_runs(labels)) if trained else 0


def arrived_untrained(enc: Encoded) -> bool:
    """Whether a row came pre-tokenized with no trained label: its labels were made before
    respmask saw it (no messages to blame), e.g. by a ``max_length`` cut when it was pre-tokenized."""
    return enc.text is None and not enc.n_trained


def untrainable_reason(enc: Encoded, max_length: int | None = None, truncation: str = "right") -> str:
    """Why a row has no trained token, and what to do: the one wording every front-end uses."""
    if enc.n_trained:
        why = f"truncation to max_length={max_length} ({truncation}) removed all its trained tokens"
        fix = "raise max_length, or truncate from the other side"
    elif arrived_untrained(enc):
        why = f"it arrived pre-tokenized with {PRETOKENIZED_UNTRAINED}"
        fix = PRETOKENIZED_UNTRAINED_FIX
    elif enc.turns:
        why = "its assistant turns cover no token"
        fix = "check the conversation with respmask.preview(sample, tokenizer)"
    else:
        why = "it has no trained turn (no assistant message, or every message has train=false)"
        fix = "drop such samples, or give them an assistant reply"
    return f"no trained token: {why}. The loss of such a sample is NaN or missing; {fix}"


def training_row(enc: Encoded, index: int, max_length: int | None, truncation: str, fit: Fit | None = None
                 ) -> TrainingRow:
    """One encoded row cut to ``max_length`` and judged; ``fit``: how the processor's row was cut
    (a processor's rows are cut in their text, see :mod:`respmask._media_cut`)."""
    if fit is not None and fit.left_out is not None:
        return TrainingRow(enc.sample, index, enc, None, truncated=True, images_dropped=fit.images_dropped,
                           left_out=fit.left_out, audio_dropped=fit.audio_dropped)
    if fit is not None:
        assert fit.input_ids is not None and fit.labels is not None
        ids, labels, positions, cut = fit.input_ids, fit.labels, None, fit.truncated
    else:
        packed_too_long(enc, index, max_length)
        ids, labels, positions, cut = truncate(enc, max_length, truncation)
    trained = int(np.count_nonzero(labels != IGNORE_INDEX))
    problem = None
    if not trained:
        problem = untrainable_reason(enc, max_length, truncation)
    elif enc.text is None and enc.position_ids is None and trained == len(labels) > 1 and (
            not cut or enc.n_trained == len(enc.labels)):
        # pre-tokenized rows somebody else labelled: judged on the labels as they arrived, since a
        # cut may keep only a reply of a row whose prompt is masked (truncation="left")
        problem = EVERY_TOKEN_TRAINED
    return TrainingRow(enc.sample, index, enc, None, ids, labels, positions, cut, trained,
                       kept_turns(enc, labels, trained), problem, images_dropped=fit.images_dropped if fit is not None else 0,
                       audio_dropped=fit.audio_dropped if fit is not None else 0)


def encode_rows(
    masker: ChatMasker,
    samples: Sequence[Any],
    indices: Sequence[int] | None = None,
    *,
    max_length: int | None = None,
    truncation: str = "right",
    on_image_cut: str = "truncate",
    on_error: OnError = "raise",
    return_tensors: str = "np",
    padding_side: str | None = None,
) -> tuple[dict[str, Any] | None, list[TrainingRow]]:
    """Encode a batch into training rows (several per sample when the masker splits).

    Args:
        masker: the masker (a processor masker runs the processor on the batch).
        samples: rows in any format the masker reads.
        indices: how to number the samples in errors (default: their positions).
        max_length, truncation: cut each row's ids and labels together (a processor's rows in
            their text, never through an image: see :mod:`respmask._media_cut`).
        on_image_cut: with a processor, ``"truncate"`` a row whose cut drops media, or ``"drop"``
            (leave it out of the batch: its row's ``left_out`` says why).
        on_error: ``"raise"`` the first bad sample's error (it names the sample), or
            ``"collect"``: encode the batch again one sample at a time and give each bad sample
            one row holding its error.
        return_tensors: for a processor, the type of the processor's batch.
        padding_side: for a processor, the side its batch is padded on (default: the tokenizer's).

    Returns:
        The processor's batch (None without a processor; None too when ``on_error="collect"``
        had to fall back to one sample at a time) and the rows, in sample order.

    Raises:
        RespmaskError: with ``on_error="raise"``, the first bad sample.
        TokenizerError: the tokenizer renders no row (it has no chat template), whatever
            ``on_error``: a problem of the run, raised once rather than given to every row.
    """
    samples = list(samples)
    positions = list(indices) if indices is not None else list(range(len(samples)))

    def encode(batch: list[Any], where: list[int]) -> tuple[dict[str, Any] | None, list[Encoded], list[Fit] | None]:
        if masker.processor is not None:  # images expanded by the processor, as the model sees them
            return fit_batch(masker, batch, where, max_length, truncation, on_image_cut, return_tensors, padding_side)
        return None, masker.encode_batch(batch, where), None

    try:
        processed, encoded, fits = encode(samples, positions)
        return processed, [training_row(e, positions[e.sample], max_length, truncation, fits[n] if fits else None)
                           for n, e in enumerate(encoded)]
    except RespmaskError as exc:
        if on_error == "raise":
            at = getattr(exc, "index", None)
            if at in positions:
                hinted = template_hint(masker, samples[positions.index(at)], exc)
                if hinted is not exc:
                    raise hinted from exc.__cause__
            raise
    rows: list[TrainingRow] = []  # find every bad sample, not just the first
    for j, (sample, index) in enumerate(zip(samples, positions)):
        try:
            _, encoded, fits = encode([sample], [index])
            for n, e in enumerate(encoded):
                e.sample = j
                rows.append(training_row(e, index, max_length, truncation, fits[n] if fits else None))
        except TokenizerError:
            raise  # no row can be encoded (no chat template): one error for the run, not one per row
        except RespmaskError as exc:
            rows.append(TrainingRow(j, index, None, template_hint(masker, sample, exc)))
    return None, rows


_PLAIN_ROLES = ("user", "assistant", "system")


def _text_joined(content: Any) -> str | None:
    """A content that is a list of text parts alone (``[{"type": "text", "text": ...}]``), as one
    string; None for any other content."""
    if not isinstance(content, (list, tuple)) or not content:
        return None
    return joined_text(content)


def template_hint(masker: ChatMasker, sample: Any, exc: RespmaskError) -> RespmaskError:
    """``exc`` with a hint when the chat template raised on a conversation because of what its
    messages are written as, learned by rendering the conversation again: with its content lists of
    text parts as strings (a template that reads strings, as Qwen2.5's, raises on a list), or with
    the messages of a role it has no place for as user messages (Gemma 3's "Conversation roles must
    alternate" on tool results). Any other error is returned as it is."""
    if not isinstance(exc, SampleError) or not exc.problem.startswith("the chat template raised"):
        return exc
    try:
        parsed = masker.parse(sample)
    except RespmaskError:
        return exc
    if not isinstance(parsed, Chat):
        return exc
    kwargs = {**masker.options.template_kwargs, **parsed.kwargs}

    def renders(messages: list[dict[str, Any]]) -> bool:
        try:
            masker.tokenizer.apply_chat_template(
                messages, tools=parsed.tools, documents=parsed.documents, tokenize=False,
                chat_template=masker.template_source(parsed.tools), **kwargs)
        except Exception:  # noqa: BLE001 - the template rejects this conversation for another reason too
            return False
        return True

    joined = [_text_joined(m.get("content")) for m in parsed.messages]
    listed = [k for k, text in enumerate(joined) if text is not None]
    hint = None
    if listed and renders([m if text is None else {**m, "content": text} for m, text in zip(parsed.messages, joined)]):
        hint = (f" The chat template reads content as a string: it renders this conversation once the content "
                f"of message(s) {', '.join(map(str, listed))}, a list of text parts, is given as a string (its "
                f"text parts joined): {JOIN_TEXT_PARTS}")
    for role in [r for r in dict.fromkeys(parsed.roles) if r not in _PLAIN_ROLES] if hint is None else []:
        if not renders([{**m, "role": "user"} if m.get("role") == role else m for m in parsed.messages]):
            continue
        fix = role_map_fix(masker.reader, sample, role, "user") or "MessageMapping role_map; CLI: --role-map"
        hint = (f" The chat template has no {role!r} role: it renders this conversation once its {role!r} "
                f"messages are user messages. Use a template that supports {role!r} messages (chat_template=...), "
                f"read them as user messages ({fix}), or leave such rows out.")
        break
    if hint is None:
        return exc
    new = type(exc).__new__(type(exc))
    SampleError.__init__(new, exc.problem + hint, exc.index)
    new.__cause__ = exc.__cause__
    return new


def reasoning_against_why(kwargs: Any, prompt: str) -> str:
    """What reasoning trained against the generation prompt means (check's and tokenize's words)."""
    return (f"with template kwargs {kwargs} the model reads {prompt!r} before it replies at inference, but these "
            "replies render their reasoning there instead: they are trained after a prompt neither mode writes")


def reasoning_against_fix(kwargs: Any, prompt_without: str) -> str:
    """What to do about reasoning trained against the generation prompt (check's and tokenize's words)."""
    return (f"train rows with reasoning without {kwargs} (their prompt is then {prompt_without!r} and the "
            "reasoning is trained as the model generates it), or drop the reasoning from rows trained with them")


def printed_content(masker: ChatMasker, sample: Any, enc: Encoded) -> list[tuple[int, str]] | None:
    """``(message, role)`` of the messages of ``sample`` whose content list the chat template prints
    as its repr (:meth:`ChatMasker.printed_content_lists`), looked at only when ``enc`` (a row of
    the sample) shows a content part's key in its text: a printed part shows it, so plain rows pay
    no probe render. ``check`` lists them, ``respmask tokenize`` rejects them.

    Returns:
        None when the row was not looked at (pre-tokenized, or no part key in its text); else the
        messages ([] for none). A sample that raises gives [] (the row rendered: its error is the row's).
    """
    if enc.text is None or not any(key in enc.text for key in PART_KEYS):
        return None
    try:
        return masker.printed_content_lists(sample)
    except RespmaskError:
        return []


def reasoning_against(masker: ChatMasker, sample: Any) -> tuple[list[int], Any]:
    """The replies of ``sample`` whose reasoning the template kwargs render where the generation
    prompt stands, and what the kwargs do (:meth:`ChatMasker._reasoning_against_prompt`; no probe
    without template kwargs). A sample that raises gives ``([], None)`` (its error is the row's)."""
    try:
        return masker._reasoning_against_prompt(sample)
    except RespmaskError:
        return [], None


def trained_against(enc: Encoded, against: Sequence[int]) -> list[int]:
    """Of the replies ``against`` (:func:`reasoning_against`), those row ``enc`` trains with their
    reasoning rendered (the template did not leave it out of this row)."""
    if not against:
        return []
    hidden = {m for m, what in enc.dropped if what.startswith(DROPPED_REASONING)}
    return [t.message for t in enc.turns if t.message in against and t.message not in hidden]
