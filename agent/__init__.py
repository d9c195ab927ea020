"""askdraw's agent: a LangGraph state machine that answers a spoken or typed question with text
and a picture. ``from agent import Agent, Settings``."""

from agent.agent import Agent, Result, StepEvent, load_result
from agent.settings import Settings

__all__ = ["Agent", "Result", "Settings", "StepEvent", "load_result"]
