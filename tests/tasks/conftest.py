"""Fixtures shared by the fine-tuning tests that need a tiny saved model and a small labelled task."""

from __future__ import annotations

from pathlib import Path

import pytest

from .test_finetune import make_tiny_model, write_keyword_task


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny saved Pre-LN model, made once per test module."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A keyword task (20 train, 6 dev rows), made once per test module."""
    return write_keyword_task(tmp_path_factory.mktemp("kw") / "data", n_train=20, n_dev=6)
