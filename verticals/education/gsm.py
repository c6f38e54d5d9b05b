"""GSM-Symbolic word problems from the `reasoning-gym` package (its generators, run locally with a seed):
the second source of problems beside verticals.education.problems. Each generator also returns its worked
solution (`answer_cot`), whose intermediate results give partial work; a wrong operation adds the first
two numbers of the question (what a student does who has not read it)."""

from __future__ import annotations

import functools
import re
from fractions import Fraction as F
from random import Random

import numpy as np

from verticals.education.problems import Problem

_NUMBER = re.compile(r"(?<![\w.])\$?(\d[\d,]*(?:\.\d+)?)")
_STEP = re.compile(r"=\s*\$?(-?\d[\d,]*(?:\.\d+)?)")


@functools.cache
def _generators() -> list:
    try:
        from reasoning_gym.arithmetic.gsm_symbolic import generators_00_49, generators_50_99, gsm_symbolic
    except ImportError as err:
        raise ImportError("template_options.gsm_share > 0 needs the `reasoning-gym` package "
                          f"(pip install reasoning-gym): {err}") from None
    mods = (generators_00_49, generators_50_99)
    # the tasks reasoning-gym itself marks as sound (tasks_need_fix are left out)
    return [getattr(mods[i >= 50], f"generate_{i}") for i in gsm_symbolic.tasks_ok]


def _number(text: str) -> F:
    return F(text.replace(",", ""))


def gsm_problem(rng: np.random.Generator) -> Problem:
    """One GSM-Symbolic problem; its unit is unknown, so answers are bare numbers."""
    gens = _generators()
    while True:
        gen = gens[int(rng.integers(len(gens)))]
        ex = gen(Random(int(rng.integers(2**31))), 1.0)
        try:
            value = _number(str(ex["answer"]))
        except (ValueError, ZeroDivisionError):
            continue
        if value <= 0:  # a few generators yield 0; a grade of "0" says little about arithmetic
            continue
        cot = ex.get("metadata", {}).get("answer_cot", "")
        steps = [_number(s) for s in _STEP.findall(cot)]
        steps = [s for s in steps if s > 0] or [value]
        if steps[-1] != value:
            steps.append(value)
        nums = [_number(n) for n in _NUMBER.findall(ex["question"])]
        wrong = nums[0] + nums[1] if len(nums) >= 2 else None
        return Problem("gsm_symbolic", min(3, len(steps)), ex["question"], value, "", steps,
                       wrong_value=wrong)
