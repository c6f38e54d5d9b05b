"""Values that change over training (temperature, alpha, loss weights): a number, or a schedule over the
fraction of training done (0 at the first step, 1 at the last).

    temperature: {kind: linear, start: 5.0, end: 1.0}       # the seed's T=5 early falling to T=1 late
    alpha: {kind: step, values: [0.0, 0.5], milestones: [0.5]}
"""

from __future__ import annotations

import math
from typing import Literal, Union

from pydantic import Field, model_validator

from sdk.typed_config import TypedConfig


class Schedule(TypedConfig):
    kind: Literal["constant", "linear", "cosine", "step"] = Field(
        description="constant: start throughout; linear / cosine: from start to end; step: values[i] from "
        "milestones[i-1] on (fractions of training).")
    start: float | None = Field(None, description="Value at the first step (constant, linear, cosine).")
    end: float | None = Field(None, description="Value at the last step (linear, cosine).")
    values: list[float] = Field([], description="step: one value per phase, len(milestones) + 1 of them.")
    milestones: list[float] = Field([], description="step: increasing fractions of training in (0, 1) where "
                                    "the next value starts.")

    @model_validator(mode="after")
    def _complete(self) -> Schedule:
        if self.kind == "step":
            if len(self.values) != len(self.milestones) + 1:
                raise ValueError("a step schedule needs len(values) == len(milestones) + 1")
            if any(not 0 < m < 1 for m in self.milestones) or self.milestones != sorted(set(self.milestones)):
                raise ValueError("milestones must increase strictly, each in (0, 1)")
        else:
            if self.start is None:
                raise ValueError(f"a {self.kind} schedule needs `start`")
            if self.kind != "constant" and self.end is None:
                raise ValueError(f"a {self.kind} schedule needs `end`")
        return self

    def unused_keys(self) -> list[str]:
        """Keys given that this kind does not read (a constant schedule's `end`): ignored, which the user would not
        expect. A preflight problem, not a validation error, so that finished runs written with them still load."""
        unused = {"constant": ("end", "values", "milestones"), "step": ("start", "end")}.get(
            self.kind, ("values", "milestones"))
        return [k for k in unused if getattr(self, k) not in (None, [])]

    def at(self, progress: float) -> float:
        p = min(max(progress, 0.0), 1.0)
        if self.kind == "constant":
            return self.start  # type: ignore[return-value]
        if self.kind == "step":
            return self.values[sum(m <= p for m in self.milestones)]
        if self.kind == "linear":
            return self.start + (self.end - self.start) * p  # type: ignore[operator]
        return self.end + (self.start - self.end) * 0.5 * (1 + math.cos(math.pi * p))  # type: ignore[operator]

    def span(self) -> list[float]:
        """Every value the schedule takes at its ends and steps (for range checks)."""
        return list(self.values) if self.kind == "step" else [v for v in (self.start, self.end) if v is not None]


Scheduled = Union[float, Schedule]


def value_at(v: Scheduled, progress: float) -> float:
    return float(v) if not isinstance(v, Schedule) else v.at(progress)


def lowest(v: Scheduled | dict) -> float:
    """The smallest value a number or a schedule (validated, or as a config dict) takes."""
    if isinstance(v, dict):
        v = Schedule.model_validate(v)
    return min(v.span()) if isinstance(v, Schedule) else float(v)


def uses_teacher_distributions(loss: dict) -> bool:
    """Whether a `distill.loss` config ever weights the distillation term (alpha below 1 at some step)."""
    return lowest(loss.get("alpha", 1.0)) < 1.0


def check_range(v: Scheduled, name: str, lo: float, hi: float, lo_open: bool = False) -> Scheduled:
    """A config validator's check that a number or every value of a schedule lies in [lo, hi] ((lo, hi] with
    lo_open); a linear or cosine schedule only passes between its ends."""
    for x in ([v] if not isinstance(v, Schedule) else v.span()):
        if not lo <= x <= hi or (lo_open and x == lo):  # written so that NaN fails too
            raise ValueError(f"{name} must be in {'(' if lo_open else '['}{lo}, {hi}], got {x}")
    return v


def compact(v: object) -> object:
    """A config value as a person reads it: schedule dicts without the keys their kind does not use (None, []),
    recursively (the manifest's and the log's record of a loss)."""
    if isinstance(v, dict):
        return {k: compact(x) for k, x in v.items() if not ("kind" in v and x in (None, []))}
    return v


def describe(v: Scheduled | dict) -> str:
    """A number or a schedule in a few characters: 2.0, linear 5.0->1.0, step 0.0/0.5 at 0.5."""
    if isinstance(v, dict):
        v = Schedule.model_validate(v)
    if not isinstance(v, Schedule):
        return f"{float(v):g}"
    if v.kind == "constant":
        return f"{v.start:g}"
    if v.kind == "step":
        return f"step {'/'.join(f'{x:g}' for x in v.values)} at {'/'.join(f'{m:g}' for m in v.milestones)}"
    return f"{v.kind} {v.start:g}->{v.end:g}"


def schedule_problems(v: object, where: str) -> list[str]:
    """Preflight: the keys a schedule (or the schedules inside a config dict) gives but its kind ignores."""
    if isinstance(v, dict) and v.get("kind") in ("constant", "linear", "cosine", "step"):
        v = Schedule.model_validate(v)
    if isinstance(v, Schedule):
        unused = v.unused_keys()
        return [f"{where}: a {v.kind} schedule does not use {', '.join(unused)} "
                + ("(constant: start throughout)" if v.kind == "constant" else "(step: values at milestones)"
                   if v.kind == "step" else "(start to end)")] if unused else []
    if isinstance(v, dict):
        return [p for k, x in v.items() for p in schedule_problems(x, f"{where}.{k}")]
    return []
