"""Errors respmask raises. Each names the sample (when there is one), the problem and the fix."""

from __future__ import annotations

import os
import sys
import sysconfig
import warnings
from collections.abc import Mapping


class RespmaskError(Exception):
    """Base class of every error respmask raises on purpose."""


class TokenizerError(RespmaskError, TypeError):
    """The tokenizer cannot be used: slow (no offsets), or without a chat template."""


class TemplateError(RespmaskError, ValueError):
    """The chat template does not parse, or raises while rendering."""


class SampleError(RespmaskError, ValueError):
    """A sample is malformed. ``index`` is its position in the batch or dataset, when known."""

    def __init__(self, message: str, index: int | None = None):
        self.index = index
        self.problem = message
        where = f"sample {index}: " if index is not None else ""
        super().__init__(where + message)

    def at(self, index: int) -> SampleError:
        """The same error, naming the sample's position."""
        if self.index is not None:
            return self
        err = type(self).__new__(type(self))
        SampleError.__init__(err, self.problem, index)
        err.__cause__ = self.__cause__
        return err


class MissingColumnsError(SampleError, KeyError):
    """A feature holds none of the keys respmask can use (often: Trainer removed them)."""

    def __str__(self) -> str:  # KeyError would otherwise print the repr
        return Exception.__str__(self)


class UntrainableSampleError(SampleError):
    """A sample has no trained token left: its loss would be NaN or missing."""


class LostDataError(SampleError):
    """A sample holds data (tool calls, content, whole messages) the chat template leaves out of the
    render, or a turn that trains nothing but its stop token."""


class RespmaskWarning(UserWarning):
    """A problem with the data that does not stop training (untrainable samples, lost data)."""


def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    here = os.path.dirname(os.path.abspath(__file__))
    return tuple({os.path.abspath(paths[k]) for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
                 | {here})


def warn(message: str) -> None:
    """Issue a :class:`RespmaskWarning` that is shown every time it is raised.

    Python's default filter shows a warning once per text and code location, so identical
    problems in later batches would go unseen; the warning also points at the first frame of the
    user's own code (the ``trainer.train()`` line) rather than at torch's data loader. Filters the
    user sets (``ignore``, ``error``) still apply.
    """
    libraries = _library_dirs()
    frame = sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(libraries):
        frame = frame.f_back
    if frame is None:  # only library code on the stack (a data loader worker): point at the caller
        frame = sys._getframe(1)
    warnings.warn_explicit(message, RespmaskWarning, frame.f_code.co_filename, frame.f_lineno,
                           module=frame.f_globals.get("__name__", "respmask"), registry=None)


def check_choice(name: str, value: object, allowed: tuple[object, ...]) -> None:
    """Raise a ValueError naming the option when ``value`` is not one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


def check_max_length(max_length: int | None) -> None:
    """Raise a ValueError when a token budget is given and is not positive."""
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be positive, got {max_length}")


def check_cut_options(max_length: int | None, truncation: str, on_image_cut: str, media: bool) -> None:
    """Judge the cut options a front-end was given, so that none is accepted without effect.

    ``on_image_cut="drop"`` with a text tokenizer (``media`` False) can only be a mistake: it
    leaves out rows whose cut would drop images or audio, and a text tokenizer's rows hold none.
    ``truncation="left"`` or ``on_image_cut="drop"`` without ``max_length`` cut nothing, which a
    configuration shared by several runs may set harmlessly: a ``UserWarning`` says so, pointing
    at the line that built the front-end (shown once there, as Python shows warnings). Only
    values other than the defaults are judged, so front-ends that pass the defaults on to each
    other say nothing.

    Raises:
        ValueError: ``on_image_cut="drop"`` without a processor.
    """
    if on_image_cut == "drop" and not media:
        raise ValueError(
            "on_image_cut='drop' has no effect with a text tokenizer: it leaves out the samples whose cut would "
            "drop images or audio, and only a processor's rows hold them (a tokenizer rejects rows with media, "
            "or drops all their media with text_only=True). Pass the model's processor instead of its tokenizer, "
            "or leave on_image_cut out."
        )
    if max_length is not None:
        return
    unused = [f"{name}={value!r}" for name, value, default in (("truncation", truncation, "right"),
                                                             ("on_image_cut", on_image_cut, "truncate"))
              if value != default]
    if unused:
        warnings.warn(
            f"{' and '.join(unused)} {'has' if len(unused) == 1 else 'have'} no effect without max_length: nothing "
            "is cut. Pass max_length=N to cut longer samples, or leave "
            f"{' and '.join(u.split('=')[0] for u in unused)} out.", UserWarning, stacklevel=3)


def string_boolean(kwargs: Mapping[str, object], where: str) -> str | None:
    """What is wrong with template keyword arguments ``kwargs`` (named ``where``) holding a string
    that spells a boolean (``"true"`` / ``"false"``, any case, spaces around): a chat template
    reads any non-empty string as true, so ``{"enable_thinking": "false"}`` turns thinking on,
    and the string ``"true"`` is not ``true`` where a template tests ``is true``. None when no
    value does; other strings (``reasoning_effort="low"``) are template values like any other."""
    for key, value in kwargs.items():
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            flag = value.strip().lower() == "true"
            return (f"{where}[{key!r}] is the string {value!r}, not a boolean: a chat template reads any non-empty "
                    f"string as true (so 'false' turns it on), and a string never as the boolean true. Pass the "
                    f"boolean {flag} (JSON {str(flag).lower()}).")
    return None


def without_sample(message: str) -> str:
    """An error's text without its ``sample N:`` prefix, so that identical problems group together."""
    return message.split(": ", 1)[1] if message.startswith("sample ") and ": " in message else message
