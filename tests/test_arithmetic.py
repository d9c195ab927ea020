"""Arithmetic questions are computed, not asked of the LLM (tools/arithmetic.py): the starter
model answered "What is 23 times 4?" with "23 times 4 equals 8 * 4 = 24"."""

from __future__ import annotations

from fractions import Fraction

import pytest

from tools.arithmetic import compute, format_number


@pytest.mark.parametrize(("question", "answer"), [
    ("What is 23 times 4?", "23 × 4 = 92."),
    ("what is 17 plus 25", "17 + 25 = 42."),
    ("How much is 144 divided by 12?", "144 ÷ 12 = 12."),
    ("What is (3 + 4) * 2?", "(3 + 4) × 2 = 14."),
    ("calculate 1,000 minus 1", "1000 − 1 = 999."),
    ("What is 7/2?", "7 ÷ 2 = 3.5."),
    ("what's 12 x 12?", "12 × 12 = 144."),
    ("What does 6 times 7 equal?", "6 × 7 = 42."),
    ("What is 2 + 2 equal to?", "2 + 2 = 4."),
    ("What is -5 plus 3?", "−5 + 3 = −2."),
    ("What is 0.1 plus 0.2?", "0.1 + 0.2 = 0.3."),  # exact, not 0.30000000000000004
    ("What is 123456789 times 987654321?", "123456789 × 987654321 = 121,932,631,112,635,269."),
    ("What is 5 divided by 0?", "5 ÷ 0 has no value: division by zero is undefined."),
])
def test_arithmetic_is_computed_exactly(question, answer):
    assert compute(question).answer == answer


@pytest.mark.parametrize("question", [
    "What is the capital of France?", "Who painted the Mona Lisa?", "How many legs does a spider have?",
    "What year did WW2 end?", "What is 1984 about?", "What is 3 to the power of 2?", "What is 42?",
    "Show me 3 cats and 2 dogs", "What is __import__('os').system('ls')?", "What is 2 ** 100000?",
    "What is 1234567890123456 times 2?",  # more digits than everyday arithmetic
])
def test_anything_else_is_left_to_the_llm(question):
    assert compute(question) is None


def test_numbers_are_shown_plainly():
    assert [format_number(v) for v in (Fraction(92), Fraction(12345), Fraction(1, 3), Fraction(-2))] == \
        ["92", "12,345", "0.333333", "−2"]


def test_the_agent_computes_and_the_trace_says_so(tmp_path):
    from tests.fakes import ScriptedLLM
    from tests.test_graph import make_agent, trace_of

    llm = ScriptedLLM(replies=[], labels=["answer"])  # no reply scripted: the LLM must not be asked to answer
    r = make_agent(tmp_path, llm).ask(text="What is 23 times 4?", image=False)
    assert r.error is None and r.route == "answer" and r.answer == "23 × 4 = 92."
    answer = next(e for e in trace_of(r) if e.step == "answer")
    assert answer.data["computed"] == "23 × 4" and "computed" in answer.reason
    assert not [c for c in llm.calls if c[0] == "chat"]
