"""respmask: train chat models on exactly the tokens the assistant generates."""

from .errors import (
    MissingColumnsError,
    LostDataError,
    RespmaskError,
    RespmaskWarning,
    SampleError,
    TemplateError,
    TokenizerError,
    UntrainableSampleError,
)
from .check import CheckReport, TrainerCheckError, TrainerReport, check, check_trainer
from .collator import ResponseOnlyCollator
from .formats import MessageMapping
from .masker import ChatMasker, Encoded, RenderedSample
from .masks import IGNORE_INDEX
from .pretokenize import Pretokenizer
from .preview import Preview, preview



def __getattr__(name: str) -> object:
    if name == "CollatorSummary":  # imports transformers' Trainer machinery: only when asked for
        from .callback import CollatorSummary

        return CollatorSummary
    raise AttributeError(f"module 'respmask' has no attribute {name!r}")


__all__ = [
    "ChatMasker",
    "CollatorSummary",
    "CheckReport",
    "Encoded",
    "IGNORE_INDEX",
    "LostDataError",
    "MessageMapping",
    "MissingColumnsError",
    "Preview",
    "Pretokenizer",
    "RenderedSample",
    "RespmaskError",
    "ResponseOnlyCollator",
    "RespmaskWarning",
    "SampleError",
    "TemplateError",
    "TokenizerError",
    "UntrainableSampleError",
    "TrainerCheckError",
    "TrainerReport",
    "check",
    "check_trainer",
    "preview",
]
__version__ = "0.1.0"
