"""One configuration source: every ``ASKDRAW_*`` variable the README documents takes effect
through the command line (option > environment > default), and the README documents every
setting."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.agent import Result, StepEvent
from agent.cli import app
from agent.options import SETTINGS_OPTIONS, env_name
from agent.settings import Settings

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
DOCUMENTED = sorted(set(re.findall(r"\bASKDRAW_[A-Z0-9_]+\b", README)))

# Variables that are not Settings fields: ASKDRAW_HOME is checked by its own test below;
# ASKDRAW_UPDATE_SCREENSHOT only tells tests/test_web.py to rewrite docs/web_app.png, and
# ASKDRAW_WEB_SCREENS tests/test_web_turns.py where to keep its screenshots.
NOT_SETTINGS = {"ASKDRAW_HOME", "ASKDRAW_UPDATE_SCREENSHOT", "ASKDRAW_WEB_SCREENS"}


def sample_values(tmp_path: Path) -> dict[str, tuple[str, object]]:
    """For every setting: a non-default value as the environment spells it, and as Settings holds it."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"title": "T", "text": "t", "url": "u"}) + "\n")
    return {
        "llm": ("some/llm", "some/llm"),
        "asr_threads": ("3", 3),
        "llm_runtime": ("transformers", "transformers"),
        "asr_runtime": ("transformers", "transformers"),
        "llm_threads": ("2", 2),
        "device": ("cpu", "cpu"),
        "dtype": ("bfloat16", "bfloat16"),
        "embeddings_runtime": ("transformers", "transformers"),
        "asr": ("starter:base", "starter:base"),
        "image_model": ("some/image-model", "some/image-model"),
        "llm_endpoint": ("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1"),
        "llm_model": ("served-llm", "served-llm"),
        "asr_endpoint": ("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1"),
        "asr_model": ("served-asr", "served-asr"),
        "image_endpoint": ("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1"),
        "endpoint_api_key_env": ("MY_KEY", "MY_KEY"),
        "endpoint_timeout": ("7.5", 7.5),
        "endpoint_retries": ("5", 5),
        "image_steps": ("4", 4),
        "image_size": ("256", 256),
        "route": ("draw", "draw"),
        "decide": ("tools", "tools"),
        "image": ("false", False),
        "wiki": (str(corpus), str(corpus)),
        "wiki_timeout": ("3", 3.0),
        "search_k": ("5", 5),
        "max_search_attempts": ("3", 3),
        "max_answer_tokens": ("99", 99),
        "out_dir": (str(tmp_path / "elsewhere"), tmp_path / "elsewhere"),
        "seed": ("42", 42),
        "memory_path": (str(tmp_path / "m.sqlite"), tmp_path / "m.sqlite"),
        "max_question_chars": ("1234", 1234),
    }


class CapturingAgent:
    """Stands in for Agent in the CLI: records the settings it was given, answers at once."""

    seen: list[Settings] = []

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        CapturingAgent.seen.append(settings)

    def stream(self, **kwargs):
        yield StepEvent(kind="result", result=Result(run_id="r1", question="q", answer="a", route="answer"))


@pytest.fixture
def capture(monkeypatch):
    import agent.agent

    for name in list(os.environ):
        if name.startswith("ASKDRAW_"):
            monkeypatch.delenv(name)
    CapturingAgent.seen = []
    monkeypatch.setattr(agent.agent, "Agent", CapturingAgent)
    return CapturingAgent.seen


def ask_with_env(env: dict[str, str], *args: str) -> Settings:
    result = CliRunner().invoke(app, ["ask", "q", "--json", *args], env=env)
    assert result.exit_code == 0, result.output
    return CapturingAgent.seen[-1]


def test_the_readme_documents_every_setting_and_every_variable_is_one():
    fields = {env_name(f) for f in Settings.model_fields}
    assert fields - set(DOCUMENTED) == set(), "settings the README does not name"
    assert set(DOCUMENTED) - fields - NOT_SETTINGS == set(), "README variables that are no setting"


@pytest.mark.parametrize("variable", [v for v in DOCUMENTED if v not in NOT_SETTINGS])
def test_each_documented_variable_takes_effect_through_the_cli(variable, capture, tmp_path):
    field = variable.removeprefix("ASKDRAW_").lower()
    raw, parsed = sample_values(tmp_path)[field]
    assert Settings.model_fields[field].default != parsed  # the test would prove nothing otherwise
    settings = ask_with_env({variable: raw})
    assert getattr(settings, field) == parsed


def test_every_setting_has_a_sample_value(tmp_path):
    assert set(sample_values(tmp_path)) == set(Settings.model_fields)


def test_an_option_given_wins_over_the_environment(capture, tmp_path):
    settings = ask_with_env({"ASKDRAW_OUT_DIR": str(tmp_path / "env"), "ASKDRAW_SEED": "7"},
                            "--out", str(tmp_path / "option"))
    assert settings.out_dir == tmp_path / "option" and settings.seed == 7


@pytest.mark.parametrize("field", sorted(SETTINGS_OPTIONS))
def test_every_option_reaches_its_setting(field, capture, tmp_path):
    raw, parsed = sample_values(tmp_path)[field]
    flag = SETTINGS_OPTIONS[field][0][0]
    args = [flag.split("/")[1]] if "/" in flag and parsed is False else [flag, raw]
    assert getattr(ask_with_env({}, *args), field) == parsed


def test_a_bad_variable_is_a_usage_error_naming_it(capture, tmp_path):
    result = CliRunner().invoke(app, ["ask", "q"], env={"ASKDRAW_WIKI": str(tmp_path / "missing.jsonl")})
    assert result.exit_code == 2
    assert "--wiki / ASKDRAW_WIKI" in result.output and "missing.jsonl" in result.output


def test_live_with_a_language_is_accepted_by_cli_and_api_alike(capture):
    assert ask_with_env({}, "--wiki", "live:fr").wiki == "live:fr"
    assert Settings(wiki="live:fr").wiki == "live:fr"
    with pytest.raises(ValueError):
        Settings(wiki="live:not a language")


def test_askdraw_home_moves_the_conversations(tmp_path, monkeypatch):
    """ASKDRAW_HOME: where caches and conversations live (not a setting: tools.common.cache_dir
    reads it for every tool's cache)."""
    monkeypatch.delenv("ASKDRAW_MEMORY_PATH", raising=False)
    result = CliRunner().invoke(app, ["history"], env={"ASKDRAW_HOME": str(tmp_path / "home")})
    assert result.exit_code == 0, result.output
    assert (tmp_path / "home" / "conversations.sqlite").is_file()


def test_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and re.fullmatch(r"askdraw \S+\n", result.output)


@pytest.mark.slow
def test_environment_alone_configures_a_real_run(tmp_path):
    """The bug this guards against: `askdraw ask` ignored ASKDRAW_WIKI and ASKDRAW_OUT_DIR because
    its option defaults were never None. A real run, configured by the environment alone."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"title": "Zorblax Tower", "url": "https://example.org/zorblax",
                                  "text": "The Zorblax Tower was designed by the architect Mira Quell in 1921."}) + "\n")
    env = {**os.environ, "ASKDRAW_WIKI": str(corpus), "ASKDRAW_OUT_DIR": str(tmp_path / "elsewhere"),
           "ASKDRAW_ROUTE": "search", "ASKDRAW_IMAGE": "false", "ASKDRAW_HOME": os.environ.get("ASKDRAW_HOME", ""),
           "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    if not env["ASKDRAW_HOME"]:
        del env["ASKDRAW_HOME"]
    exe = Path(sys.executable).with_name("askdraw")
    command = [str(exe)] if exe.is_file() else [sys.executable, "-m", "agent.cli"]
    proc = subprocess.run([*command, "ask", "Who designed the Zorblax Tower?", "--json"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert [s["title"] for s in result["sources"]] == ["Zorblax Tower"]
    assert Path(result["trace_path"]).parent.parent == tmp_path / "elsewhere"
    assert not (tmp_path / "runs").exists()
    shown = subprocess.run([*command, "trace", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=120)
    assert shown.returncode == 0 and '"step":"search_wikipedia"' in shown.stdout.replace(" ", "")


def test_quiet_prints_only_the_answer_and_a_drawn_image(capture, monkeypatch, tmp_path):
    answered = Result(run_id="r1", question="q", answer="Leonardo da Vinci.", route="search",
                      notices=["a notice"], image_path=str(tmp_path / "card.png"), image_generated=False)
    drawn = Result(run_id="r2", question="q", answer="I drew: a fox", route="draw",
                   image_path=str(tmp_path / "image.png"), image_generated=True, image_model="m")
    for result, expected in ((answered, "Leonardo da Vinci.\n"), (drawn, f"I drew: a fox\n{tmp_path / 'image.png'}\n")):
        monkeypatch.setattr(CapturingAgent, "stream", lambda self, r=result, **kw: iter([StepEvent(kind="result", result=r)]))
        out = CliRunner().invoke(app, ["ask", "q", "-q"])
        assert out.exit_code == 0 and out.stdout == expected, out.output
        assert "note" not in out.output
