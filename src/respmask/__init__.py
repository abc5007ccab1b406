"""respmask: train chat models on exactly the tokens the assistant generates."""

from .errors import (
    MissingColumnsError,
    RespmaskError,
    SampleError,
    TemplateError,
    TokenizerError,
    UntrainableSampleError,
)
from .collator import ResponseOnlyCollator
from .masker import ChatMasker, Encoded, RenderedSample
from .masks import IGNORE_INDEX
from .preview import Preview, preview

__all__ = [
    "ChatMasker",
    "Encoded",
    "IGNORE_INDEX",
    "MissingColumnsError",
    "Preview",
    "RenderedSample",
    "RespmaskError",
    "ResponseOnlyCollator",
    "SampleError",
    "TemplateError",
    "TokenizerError",
    "UntrainableSampleError",
    "preview",
]
__version__ = "0.1.0"
