"""Shared test setup: small tokenizers built here, real ones from RESPMASK_SHARED_TOKENIZERS."""

from __future__ import annotations

import os
import sys
import warnings

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from support.tokenizers import SHARED_ENV, shared_dir  # noqa: E402

warnings.filterwarnings("ignore", message=".*clean_up_tokenization.*")


@pytest.fixture(scope="session")
def shared_root():
    root = shared_dir()
    if root is None:
        pytest.skip(f"real tokenizers not available (set {SHARED_ENV} to ../shared/tokenizers)")
    return root
