"""The base of every typed config in the SDK: project sections, components (losses, exporters, templates, ...)
and HTTP request bodies."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


def _accepts(annotation: Any) -> set[Any]:
    """The plain types an annotation takes, through Optional/Union/Annotated (containers count as themselves)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _accepts(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_accepts(a) for a in typing.get_args(annotation)))
    return {annotation}


class TypedConfig(BaseModel):
    """Unknown keys are refused (a misspelt key is an error, not a silently ignored default), and so is
    true/false where a number belongs: pydantic's lax mode reads it as 1/0, and YAML makes `n_train: yes` an
    easy slip that would train on one row. Text stays lax for numbers: YAML 1.1 reads `1e-4` as a string.
    NaN and infinities are refused too (YAML's `.nan`/`.inf`, JSON's NaN): every comparison with NaN is false, so
    it would slip past each range check."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # a model validator, not a field one: pydantic allows no before-validator on the `kind` discriminators; the
    # message starts with the field's name, which the config error report appends to the section's path
    @model_validator(mode="before")
    @classmethod
    def _no_flag_for_a_number(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name) if isinstance(name, str) else None
                if isinstance(value, bool) and field is not None:
                    accepted = _accepts(field.annotation)
                    if bool not in accepted and accepted & {int, float}:
                        raise ValueError(f"{name}: expected a number, got {str(value).lower()}")
        return data
