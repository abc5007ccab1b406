"""respmask: train chat models on exactly the tokens the assistant generates."""

from .errors import (
    MissingColumnsError,
    RespmaskError,
    SampleError,
    TemplateError,
    TokenizerError,
    UntrainableSampleError,
)
from .check import CheckReport, TrainerReport, check, check_trainer
from .collator import ResponseOnlyCollator
from .formats import MessageMapping
from .masker import ChatMasker, Encoded, RenderedSample
from .masks import IGNORE_INDEX
from .pretokenize import Pretokenizer
from .preview import Preview, preview

__all__ = [
    "ChatMasker",
    "CheckReport",
    "Encoded",
    "IGNORE_INDEX",
    "MessageMapping",
    "MissingColumnsError",
    "Preview",
    "Pretokenizer",
    "RenderedSample",
    "RespmaskError",
    "ResponseOnlyCollator",
    "SampleError",
    "TemplateError",
    "TokenizerError",
    "UntrainableSampleError",
    "TrainerReport",
    "check",
    "check_trainer",
    "preview",
]
__version__ = "0.1.0"
