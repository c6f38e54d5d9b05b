"""Student answers to a problem, right or carrying one typical error, and their grades.

Error types (what a grader must tell apart, and why string match is not enough):
- correct: the reference value, as the reference writes it or close to it;
- equivalent: correct but written differently: a fraction for a decimal, units spelled out, another unit
  (150 km as 150000 m), a number in words, no unit, thousands separators;
- arithmetic_slip: the right calculation with a wrong result;
- wrong_operation: a plausible operation that does not answer the question;
- unit_error: a unit conversion skipped (minutes used as hours, cm as m);
- rounding: rounded where the question asks for the exact value;
- partial: stopped after the first step of a multi-step problem.

Grades: `correct` (binary: 1 for correct and equivalent) and a rubric score 0..2: 2 right; 1 right method
with a flaw (a slip with the work shown, a unit error, rounding, partial work); 0 otherwise.
"""

from __future__ import annotations

from fractions import Fraction as F

import numpy as np

from verticals.education.problems import UNIT_WORDS, Problem, money

ERROR_TYPES = ("correct", "equivalent", "arithmetic_slip", "wrong_operation", "unit_error", "rounding", "partial")
CORRECT_TYPES = frozenset({"correct", "equivalent"})
RUBRIC_MAX = 2
_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = {20: "twenty", 30: "thirty", 40: "forty", 50: "fifty", 60: "sixty", 70: "seventy", 80: "eighty",
         90: "ninety"}


def decimal_text(x: F, max_places: int = 3) -> str | None:
    """x as a decimal with at most max_places places (trailing zeros dropped), or None if it has none."""
    for places in range(max_places + 1):
        scaled = x * 10**places
        if scaled.denominator == 1:
            return f"{float(x):,.{places}f}".replace(",", "")
    return None


def fraction_text(x: F, mixed: bool = False) -> str:
    if x.denominator == 1:
        return str(x.numerator)
    whole, rest = divmod(x.numerator, x.denominator)
    if mixed and whole:
        return f"{whole} {rest}/{x.denominator}"
    return f"{x.numerator}/{x.denominator}"


def number_text(x: F) -> str:
    """How a reference writes a number: a short decimal, else a fraction."""
    return decimal_text(x) or fraction_text(x)


def words(n: int) -> str | None:
    if 0 <= n < 20:
        return _ONES[n]
    if 20 <= n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens * 10] + (f"-{_ONES[ones]}" if ones else "")
    return None


def with_unit(text: str, unit: str) -> str:
    if not unit:
        return text
    if unit == "$":
        return f"${text}"
    return f"{text} {'sq m' if unit == 'm2' else unit}"


def reference_text(p: Problem) -> str:
    return money(p.value) if p.unit == "$" else with_unit(number_text(p.value), p.unit)


def plain(x: F, unit: str) -> str:
    """A student's own writing of x in `unit` (money with cents, other values as short decimals/fractions)."""
    return money(x) if unit == "$" else with_unit(number_text(x), unit)


def equivalent_forms(p: Problem) -> list[str]:
    """Correct answers written differently from the reference."""
    v, unit, forms = p.value, p.unit, []
    num = number_text(v)
    if v.denominator != 1:
        if decimal_text(v) is not None and unit != "$":
            forms.append(with_unit(fraction_text(v, mixed=True), unit))
            forms.append(with_unit(fraction_text(v), unit))
        elif decimal_text(v) is None:
            d = f"{float(v):.2f}"
            forms.append(with_unit(d, unit))  # 2.33 for 7/3: a rounding a teacher accepts here
    if unit == "$":
        cents = money(v)[1:]
        forms += [f"{cents} dollars", cents, f"{cents} $"]
        if v.denominator == 1:
            forms.append(f"${v.numerator:,}")
    elif unit:
        forms.append(f"{num} {UNIT_WORDS.get(unit, unit)}")
        forms.append(num)
    if v.denominator == 1 and words(v.numerator):
        forms.append(f"{words(v.numerator)} {UNIT_WORDS.get(unit, unit)}".strip())
    if p.alt_unit is not None:
        alt, factor = p.alt_unit
        alt_text = decimal_text(v * factor)
        if alt_text is not None:
            forms.append(with_unit(alt_text, alt))
    if v.denominator == 1 and v >= 1000:
        forms.append(with_unit(f"{v.numerator:,}", unit))
    return [f for f in forms if f != reference_text(p)]


def slip(v: F, rng: np.random.Generator) -> F:
    """A wrong result of the right calculation: off by one, by ten, by a tenth, or two digits swapped."""
    options = [v + 1, v - 1, v + 10, v * F(11, 10), v * F(9, 10)]
    digits = str(v.numerator) if v.denominator == 1 else ""
    if len(digits) >= 2 and digits[-1] != digits[-2]:
        options.append(F(int(digits[:-2] + digits[-1] + digits[-2])))
    options = [o for o in options if o > 0 and o != v]
    out = options[int(rng.integers(len(options)))]
    return F(round(out * 100), 100) if out.denominator not in (1, 2, 4, 5, 10, 20, 25, 50, 100) else out


def applicable(p: Problem) -> set[str]:
    """The answer types this problem allows (no rounding of an integer, no partial work in one step...)."""
    out = {"correct", "arithmetic_slip"}
    if equivalent_forms(p):
        out.add("equivalent")
    if p.unconverted is not None:
        out.add("unit_error")
    if p.value.denominator != 1:
        out.add("rounding")
    if len(p.steps) >= 2 and p.steps[0] != p.value:
        out.add("partial")
    if p.wrong_value is not None and p.wrong_value != p.value and p.wrong_value > 0:
        out.add("wrong_operation")
    return out


def student_answer(p: Problem, kind: str, rng: np.random.Generator) -> tuple[str, str, int]:
    """(answer text, the error type actually made, rubric score); kinds that do not apply to the problem
    fall back to a slip (no rounding on an integer, no partial work on a one-step problem)."""
    v = p.value
    if kind == "unit_error" and p.unconverted is None:
        kind = "arithmetic_slip"
    if kind == "rounding" and v.denominator == 1:
        kind = "arithmetic_slip"
    if kind == "partial" and (len(p.steps) < 2 or p.steps[0] == v):
        kind = "wrong_operation"
    if kind == "wrong_operation" and (p.wrong_value is None or p.wrong_value == v or p.wrong_value <= 0):
        kind = "arithmetic_slip"
    show_work = bool(rng.random() < 0.35) and p.work != ""
    if kind == "correct":
        text = reference_text(p) if rng.random() < 0.5 else plain(v, p.unit)
        return _maybe_work(text, p, show_work), kind, 2
    if kind == "equivalent":
        forms = equivalent_forms(p)
        if not forms:
            return _maybe_work(reference_text(p), p, show_work), "correct", 2
        return forms[int(rng.integers(len(forms)))], kind, 2
    if kind == "arithmetic_slip":
        return _maybe_work(plain(slip(v, rng), p.unit), p, show_work), kind, 1 if show_work else 0
    if kind == "wrong_operation":
        return plain(p.wrong_value, p.unit), kind, 0
    if kind == "unit_error":
        return plain(p.unconverted, p.unit), kind, 1
    if kind == "rounding":
        rounded = F(round(v)) if rng.random() < 0.7 or v.denominator <= 2 else F(round(v * 10), 10)
        if rounded == v:
            rounded = F(int(v) + 1)
        return plain(rounded, p.unit), kind, 1
    if kind == "partial":
        return plain(p.steps[0], p.unit), kind, 1
    raise ValueError(f"unknown error type {kind!r} (known: {', '.join(ERROR_TYPES)})")


def _maybe_work(text: str, p: Problem, show: bool) -> str:
    return p.work.replace("{v}", text) if show else text
