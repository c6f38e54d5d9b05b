"""Pipeline stages, one module each: `inputs(ctx)` (what the stage depends on besides the upstream
stage: config sections and fingerprints of the files it reads), `outputs(run)` (files whose presence
means done), `run(ctx) -> info` (the work; info goes to the manifest).

`sdk.project` knows their order and skips a stage whose input hash and outputs are in place; nothing
else. An optional stage returns None from `inputs` when the project does not configure it: it is skipped and
left out of the hash chain, so adding it changes no existing run. A stage whose inputs changed shape may
offer `legacy_inputs(ctx)`: the earlier shapes, under which a run made from the same config stays up to date. Stages read and write the run folder only through `sdk.rundir.RunDir`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from pydantic import BaseModel

from sdk.config import ProjectConfig
from sdk.rundir import RunDir


@dataclass
class Context:
    config: ProjectConfig
    template: Any  # verticals.base.Template (a protocol; not imported here to keep sdk below verticals)
    options: BaseModel  # the template's validated options
    run: RunDir
    key: str = ""  # this stage's input hash: keys its checkpoints
    nproc: int = 1  # processes for the distill stage (torchrun); a way to run, not an input of the results
    nnodes: int = 1  # machines for the distill stage, meeting at rdzv_endpoint (host:port); the same
    rdzv_endpoint: str | None = None


class Stage(Protocol):
    def inputs(self, ctx: Context) -> Any: ...

    def outputs(self, run: RunDir) -> list[Path]: ...

    def run(self, ctx: Context) -> dict[str, Any]: ...


def stage_list() -> list[tuple[str, ModuleType]]:
    from sdk.stages import adapt, annotate, data, distill, evaluate, export, package, qad, report

    return [("data", data), ("adapt", adapt), ("annotate", annotate), ("distill", distill), ("qad", qad),
            ("export", export), ("evaluate", evaluate), ("package", package), ("report", report)]
