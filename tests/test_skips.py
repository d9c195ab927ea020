"""The CI rule on skips (tests/conftest.py): a test skipped for a reason that is not on the
allow-list fails the session under CI=true; allowed reasons and local runs do not."""

from __future__ import annotations

from pathlib import Path

CONFTEST = (Path(__file__).parent / "conftest.py").read_text(encoding="utf-8")
TESTS = '''
import pytest

def test_runs():
    pass

def test_skipped_for_a_missing_tool():
    pytest.skip("espeak-ng is not installed: no spoken test clip")
'''
ALLOWED = '''
import pytest

def test_skipped_because_of_the_machine():
    pytest.skip("this machine has a microphone (hw:0)")
'''


def run(pytester, monkeypatch, body: str, ci: str | None):
    pytester.makeconftest(CONFTEST.replace('pytest_plugins = ["pytester"]', ""))
    pytester.makepyfile(tiny_pipeline="def build_tiny_pipeline(path):\n    return path\n", test_it=body)
    monkeypatch.delenv("ASKDRAW_STRICT_SKIPS", raising=False)
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider")


def test_an_unexpected_skip_fails_ci(pytester, monkeypatch):
    result = run(pytester, monkeypatch, TESTS, ci="true")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*skips not allowed on CI*", "*test_skipped_for_a_missing_tool*espeak-ng*"])


def test_the_same_skip_is_fine_locally(pytester, monkeypatch):
    assert run(pytester, monkeypatch, TESTS, ci=None).ret == 0


def test_an_allowed_skip_passes_ci(pytester, monkeypatch):
    assert run(pytester, monkeypatch, ALLOWED, ci="true").ret == 0
