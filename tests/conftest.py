"""Fixtures shared by several test modules."""

from __future__ import annotations

from pathlib import Path

import pytest

try:
    from tests.tiny_pipeline import build_tiny_pipeline
except ImportError:  # tests/ is on sys.path itself (pytest rootdir-less import mode)
    from tiny_pipeline import build_tiny_pipeline


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A real diffusers text-to-image pipeline with tiny random weights (its pictures are noise)."""
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors run fastest (and steadiest on a busy 2-core box) on one thread; modules opt in
    with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
