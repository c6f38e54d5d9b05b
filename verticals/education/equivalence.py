"""The rule a school would write before any model: parse the final value of the student's answer and of the
reference (numbers with thousands separators, currency signs, fractions and mixed numbers, simple
arithmetic expressions through sympy) and compare them with a tolerance. Units and words are ignored,
which is exactly where it fails (150000 m for 150 km, "twelve"): the report shows what a model adds."""

from __future__ import annotations

import re
from fractions import Fraction

import numpy as np
import pandas as pd

_MIXED = r"\d+\s+\d+/\d+"
_FRACTION = r"\d+/\d+"
_DECIMAL = r"\d[\d,]*(?:\.\d+)?|\.\d+"
_VALUE = re.compile(rf"(-?)\$?\s*({_MIXED}|{_FRACTION}|{_DECIMAL})")
_EXPRESSION = re.compile(r"^[\d\s.,+\-*/x×÷()$]+$")


def parse_value(text: str) -> Fraction | None:
    """The final value written in `text`: what follows the last '=' if there is one; an arithmetic
    expression is evaluated (sympy), otherwise the last number counts. None when there is no number."""
    tail = str(text).rsplit("=", 1)[-1].strip().rstrip(".")
    expression = re.sub(r"(?i)\b(dollars?|cm|km|m|sq|students?|cookies?|meters?|minutes?|hours?)\b", "", tail)
    expression = expression.strip().rstrip(".")
    if _EXPRESSION.match(expression) and re.search(r"\d\s*[+*/x×÷-]\s*\(?\d", expression) \
            and not re.fullmatch(rf"\s*\$?\s*({_MIXED}|{_FRACTION})\s*", expression):
        value = _sympy_value(expression)
        if value is not None:
            return value
    found = _VALUE.findall(tail)
    if not found:
        return None
    sign, number = found[-1]
    try:
        if " " in number.strip() and "/" in number:  # a mixed number: 2 1/2
            whole, frac = number.split()
            value = Fraction(int(whole)) + Fraction(frac)
        else:
            value = Fraction(number.replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None
    return -value if sign else value


def _sympy_value(expression: str) -> Fraction | None:
    import sympy

    cleaned = expression.replace("$", "").replace(",", "").replace("×", "*").replace("÷", "/")
    cleaned = re.sub(r"(?<=\d)\s*x\s*(?=[\d(])", "*", cleaned)
    try:
        value = sympy.sympify(cleaned, rational=True)
    except (sympy.SympifyError, SyntaxError, TypeError, ZeroDivisionError):
        return None
    if not value.is_Rational:
        return None
    return Fraction(int(value.p), int(value.q))


def equivalent(answer: str, reference: str, rel_tol: float = 1e-6, abs_tol: float = 0.005) -> bool:
    a, r = parse_value(answer), parse_value(reference)
    if a is None or r is None:
        return False
    return abs(float(a - r)) <= max(abs_tol, rel_tol * abs(float(r)))


class ParsingBaseline:
    """`predict_proba` over rows with `answer` and `reference`: the rule's verdict as a (hard) probability.
    Binary grades: [incorrect, correct]; rubric 0..K: full marks when equivalent, else 0."""

    def __init__(self, n_labels: int, rel_tol: float = 1e-6, abs_tol: float = 0.005):
        self.n_labels, self.rel_tol, self.abs_tol = n_labels, rel_tol, abs_tol

    def fit(self, rows: pd.DataFrame, y=None) -> "ParsingBaseline":
        return self  # a rule: nothing to learn

    def predict_proba(self, rows: pd.DataFrame) -> np.ndarray:
        out = np.zeros((len(rows), self.n_labels))
        for i, (answer, reference) in enumerate(zip(rows["answer"], rows["reference"])):
            out[i, self.n_labels - 1 if equivalent(answer, reference, self.rel_tol, self.abs_tol) else 0] = 1.0
        return out
