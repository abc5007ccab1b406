"""respmask: train chat models on exactly the tokens the assistant generates."""

from ._errors import (
    MissingColumnsError,
    LostDataError,
    RespmaskError,
    RespmaskWarning,
    SampleError,
    TemplateError,
    TokenizerError,
    UntrainableSampleError,
)
from ._check import CheckReport, TrainerCheckError, TrainerReport, check, check_trainer
from ._collator import ResponseOnlyCollator
from ._formats import MessageMapping, to_sample
from ._masker import ChatMasker, Encoded, RenderedSample
from ._options import MaskOptions
from ._packing import Packer, pack, padding_stats
from ._masks import IGNORE_INDEX
from ._pretokenize import Pretokenizer
from ._preview import Preview, preview



def __getattr__(name: str) -> object:
    if name == "CollatorSummary":  # imports transformers' Trainer machinery: only when asked for
        from ._callback import CollatorSummary

        return CollatorSummary
    raise AttributeError(f"module 'respmask' has no attribute {name!r}")


__all__ = [
    "ChatMasker",
    "CollatorSummary",
    "CheckReport",
    "Encoded",
    "IGNORE_INDEX",
    "LostDataError",
    "MaskOptions",
    "MessageMapping",
    "MissingColumnsError",
    "Packer",
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
    "pack",
    "padding_stats",
    "preview",
    "to_sample",
]
__version__ = "0.1.0"
