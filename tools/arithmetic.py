"""Arithmetic questions ("What is 23 times 4?"), computed instead of asked of the LLM: a small
model writes wrong working with confidence. Only a question that is nothing but numbers and the
four operations (in symbols or words) is taken; it is evaluated on its syntax tree, never
``eval``'d, and anything else is left to the LLM."""

from __future__ import annotations

import ast
import operator
import re
from dataclasses import dataclass
from fractions import Fraction

_ASK = re.compile(r"^(?:(?:what|how much)(?:'s| is| are| does| do)?|calculate|compute|work out|solve|evaluate)\s+",
                  re.IGNORECASE)
_TAIL = re.compile(r"\s*(?:equals?(?: to)?|equal to|make|makes|give|gives|come to)?\s*[?.!=]*\s*$", re.IGNORECASE)
_WORDS = [("multiplied by", "*"), ("divided by", "/"), ("times", "*"), ("plus", "+"), ("minus", "-"),
          ("over", "/"), ("×", "*"), ("÷", "/"), ("x", "*")]
_SYMBOLS = {"*": "×", "/": "÷", "+": "+", "-": "−"}
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_EXPRESSION = re.compile(r"^[\d.\s+\-*/()]+$")
MAX_DIGITS = 15  # larger numbers are not everyday arithmetic (and floats lose digits)


@dataclass(frozen=True)
class Computed:
    expression: str  # as shown: "23 × 4"
    value: Fraction | None  # exact (123456789 × 987654321 loses no digit); None: a division by zero

    @property
    def answer(self) -> str:
        if self.value is None:
            return f"{self.expression} has no value: division by zero is undefined."
        return f"{self.expression} = {format_number(self.value)}."


def format_number(value: Fraction | float) -> str:
    """92, 12,345, 3.5, 0.333333, −2."""
    if Fraction(value).denominator == 1:
        n = int(value)
        text = f"{n:,}" if abs(n) >= 10_000 else str(n)
    else:
        text = f"{float(value):.6g}"
    return text.replace("-", "−")


def _expression(question: str) -> str | None:
    text = " ".join(question.split())
    text = _TAIL.sub("", _ASK.sub("", text, count=1))
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,000 -> 1000
    for word, symbol in _WORDS:
        text = re.sub(rf"(?<![A-Za-z]){re.escape(word)}(?![A-Za-z])", f" {symbol} ", text, flags=re.IGNORECASE)
    text = " ".join(text.split())
    if not _EXPRESSION.match(text) or not re.search(r"\d\s*[+\-*/]\s*[(\d-]", text):
        return None
    return text


def _value(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return -_value(node.operand) if isinstance(node.op, ast.USub) else _value(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_value(node.left), _value(node.right))
    raise ValueError("not arithmetic")


def compute(question: str) -> Computed | None:
    """The question's arithmetic and its value, or None when it is not only arithmetic (or has
    numbers too long to be everyday arithmetic)."""
    text = _expression(question)
    if text is None or any(len(n.replace(".", "")) > MAX_DIGITS for n in re.findall(r"[\d.]+", text)):
        return None
    value: Fraction | None
    try:
        value = _value(ast.parse(text, mode="eval").body)
    except ZeroDivisionError:
        value = None
    except (SyntaxError, ValueError, RecursionError):
        return None
    shown = re.sub(r"\s*([+\-*/])\s*", lambda m: f" {_SYMBOLS[m.group(1)]} ", text).replace("( ", "(").strip()
    return Computed(expression=re.sub(r"^− ", "−", shown), value=value)


__all__ = ["Computed", "compute", "format_number"]
