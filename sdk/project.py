"""Project: the stage order and the skipping, nothing else.

    data -> adapt (teacher) -> annotate -> distill -> export -> evaluate -> report

Each stage (a module in `sdk/stages/`) declares its inputs and outputs; a stage is skipped on re-run
when its outputs exist and the hash of its inputs, chained with the upstream stage's hash, matches the
manifest.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdk import config as cfgmod
from sdk.config import ProjectConfig
from sdk.errors import DistillError, option, speaking
from sdk.rundir import RunDir, atomic_write_text, machine, stable_hash, versions


@dataclass
class RunResult:
    run_dir: Path
    report: dict[str, Any]
    report_paths: dict[str, Path]
    ran: list[str] = field(default_factory=list)  # stages that ran this time (the others were up to date)

    def __repr__(self) -> str:  # the report itself is tens of kilobytes: a notebook shows what it is instead
        what = (f"{len(self.report.get('artifacts', []))} artifacts, headline {self.report.get('headline_metric')}"
                if self.report else "no report (stopped early)")
        return f"RunResult(run_dir={str(self.run_dir)!r}, ran={self.ran}, {what})"


class Project:
    def __init__(self, config: ProjectConfig):
        self.config = config
        self._bind_template()

    def _bind_template(self) -> None:
        """The template and its typed options, from the config as it is now (edits after construction count)."""
        from sdk.registry import get_template

        self.options = cfgmod.template_options(self.config)
        self.template = get_template(self.config.template, self.options)

    # ---- construction
    @classmethod
    def from_template(cls, name: str, preset: str = "default", **overrides: Any) -> "Project":
        """The template's shipped preset, with nested overrides, e.g. data={"n_test": 2000}."""
        from sdk.registry import get_template

        template = get_template(name)
        path = template.preset_path(preset)
        if not path.is_file():
            raise DistillError(f"template {name!r} has no preset {preset!r} ({path} missing)")
        # a relative path in the overrides means from here (the working directory), as in any Python call: kept
        # absolute, so the run folder's config.yaml and a later chdir still find it
        data = cfgmod.deep_merge(cfgmod.load_yaml(path), cfgmod.resolve_relative_paths(overrides, Path.cwd()))
        return cls(cfgmod.validate_config(data, source=f"{name}/{preset} preset + overrides"))

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Project":
        return cls(cfgmod.load_config(path))

    @staticmethod
    def load(run_dir: str | Path):
        """A finished run, ready to score new data with any of its evaluated artifacts:
        `Project.load("runs/fraud-demo").predict(df, artifact="student-gguf-Q4_K_M")`. Its messages name
        settings as Python does, and its `predict` leaves no worker process behind (see `run`)."""
        from sdk.scoring import FinishedRun

        with api_call():
            return FinishedRun(run_dir, python_api=True)

    def to_yaml(self, path: str | Path) -> Path:
        path = Path(path)
        atomic_write_text(path, cfgmod.config_to_yaml(self.config))
        return path

    # ---- running
    def run(self, out: str | Path | None = None, preflight: bool = True, keep_checkpoints: bool = False,
            until: str | None = None, nproc: int = 1, nnodes: int = 1, rdzv_endpoint: str | None = None) -> RunResult:
        """Run every stage; finished stages are skipped. `preflight` first checks the config, data and
        models in seconds (`sdk.preflight`), so a bad setting fails here and not minutes into a stage.
        A failed or interrupted run leaves only the stages it finished: no run folder when none did. A finished
        stage's training checkpoints are removed (their size is printed) unless `keep_checkpoints`. `until`: stop
        after that stage (e.g. "annotate"); the result then has no report. `nproc` > 1 runs the distill stage on
        that many processes under torchrun (one per GPU; gloo on CPU), training like one process with the
        same global batch. `nnodes` > 1: that many machines, `nproc` processes each, meet at `rdzv_endpoint`
        (host:port of this machine); the others run `distill join <run folder>` (docs/distillation.md).
        While it runs, the libraries' import and deprecation notices are silenced as on the CLI (sdk.quiet;
        your logging levels and warning filters are given back after), and the worker process it starts
        for torch evaluation (evaluation.zygote, ~400 MB) is ended when it returns."""
        with api_call():
            return self._run(out, preflight, keep_checkpoints, until, nproc, nnodes, rdzv_endpoint)

    def _run(self, out, preflight, keep_checkpoints, until, nproc, nnodes, rdzv_endpoint) -> RunResult:
        from sdk.stages import stage_list

        # the run uses the whole config checked again: an assignment to a nested section
        # (config.distill.stages[0].grad_accum) is checked by that section alone, and a list mutated in place
        # (stages.append({...})) holds what was appended unchecked; `self.config` stays the caller's object
        with warnings.catch_warnings():  # pydantic's note on dumping such an unchecked entry
            warnings.simplefilter("ignore", UserWarning)
            dumped = self.config.model_dump()
        c = cfgmod.validate_config(dumped, source=f"project {self.config.name!r}")
        self._bind_template()  # template_options edited since construction
        stages = [n for n, _ in stage_list()]
        if until is not None and until not in stages:
            raise DistillError(f"until={until!r}: not a stage (one of {', '.join(stages)})")
        for name, value in (("nproc", nproc), ("nnodes", nnodes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DistillError(f"{name}={value!r}: a number of processes, 1 or more")
        if nnodes > 1:  # checked before any stage, not when the distill stage starts minutes later
            from sdk.distill.launch import check_rendezvous

            check_rendezvous(rdzv_endpoint)
        if preflight:
            from sdk.preflight import require_ready

            require_ready(c, source=f"project {c.name!r}", until=until)
        root = Path(out) if out else Path("runs") / c.name
        if root.exists() and not root.is_dir():
            raise DistillError(f"{option('out', root)}: this is a file; the run folder must be a folder")
        created = _highest_missing(root)
        fresh = not (root / "manifest.json").is_file()  # no earlier run to keep in this folder
        run = RunDir(root)
        _check_same_template(run, c.template)
        try:
            return self._run_stages(run, c, keep_checkpoints, until, nproc, nnodes, rdzv_endpoint)
        except BaseException:  # KeyboardInterrupt too: Ctrl-C must not leave an empty run behind
            if fresh and not run.manifest["stages"]:
                _remove_unfinished(run, created)
            raise

    def _run_stages(self, run: RunDir, c, keep_checkpoints: bool = False, until: str | None = None,
                    nproc: int = 1, nnodes: int = 1, rdzv_endpoint: str | None = None) -> RunResult:
        from sdk.stages import Context, stage_list

        atomic_write_text(run.path("config.yaml"), cfgmod.config_to_yaml(c))
        run.save(project=c.name, template=c.template, task=self.template.task, seed=c.seed, versions=versions(),
                 machine=machine(),
                 config_hash=stable_hash(c.model_dump(mode="json")))
        upstream, ran, ran_now = "", False, []
        names = [name for name, _ in stage_list()]
        for name, stage in stage_list():
            ctx = Context(c, self.template, self.options, run, nproc=nproc, nnodes=nnodes, rdzv_endpoint=rdzv_endpoint)
            given = stage.inputs(ctx)
            if given is None:  # an optional stage this project does not configure: not in the hash chain
                print(f"[distill] {name}: not configured, skipped")
                if name == until:
                    return RunResult(run.root, {}, {}, ran_now)
                continue
            ctx.key = stable_hash([name, upstream, given])
            if not ran and not run.is_done(name, ctx.key, stage.outputs(run)):
                # a run made before the stage's inputs changed shape, from the same config, stays up to date
                legacy = [stable_hash([name, upstream, old])
                          for old in getattr(stage, "legacy_inputs", lambda _: [])(ctx)]
                ctx.key = next((k for k in legacy if run.is_done(name, k, stage.outputs(run))), ctx.key)
            # a stage that ran (e.g. its outputs were missing) may have written new outputs under the same
            # input hash: every stage below it runs again, so the report never shows stale figures
            if not ran and run.is_done(name, ctx.key, stage.outputs(run)):
                print(f"[distill] {name}: up to date, skipped")
            else:
                print(f"[distill] {name}: running", flush=True)
                run.unrecord(names[names.index(name):])
                t0 = time.perf_counter()
                try:
                    info = stage.run(ctx) or {}
                finally:
                    run.discard_partials()  # a failed stage leaves no half-written folder behind
                    run.forget()
                run.record(name, ctx.key, time.perf_counter() - t0, **info)
                ran = True
                ran_now.append(name)
                if not keep_checkpoints:
                    freed = run.drop_checkpoints(ctx.key)
                    if freed:
                        print(f"[distill] {name}: removed its checkpoints ({freed / 1e6:.0f} MB; "
                              f"{option('keep_checkpoints', True)} keeps them)")
            upstream = ctx.key
            if name == until:
                return RunResult(run.root, {}, {}, ran_now)
        report = json.loads(run.path("report.json").read_text())
        return RunResult(run.root, report, {"json": run.path("report.json"), "md": run.path("report.md"),
                                            "html": run.path("report.html")}, ran_now)


@contextlib.contextmanager
def api_call(python: bool = True, end_workers: bool = True):
    """The scope of one call of the Python API: messages name settings as Python does (`python`, unless the CLI
    called it), the libraries' noise is silenced (sdk.quiet), and, with `end_workers`, a torch-worker zygote
    started within is ended on leaving, so a notebook's kernel does not keep it after a run (the CLI's process
    ends anyway). predict keeps it: the next call is seconds faster."""
    from evaluation.zygote import ended_on_exit
    from sdk.quiet import quieted

    with (speaking("python", outer_wins=True) if python else contextlib.nullcontext()), quieted(), \
            (ended_on_exit() if end_workers else contextlib.nullcontext()):
        yield


def _check_same_template(run: RunDir, template: str) -> None:
    """A run folder holding another template's run is not overwritten: its stages would be replaced one by one
    while its later files (artifacts, evaluation) stayed, describing the other project."""
    earlier = run.manifest.get("template")
    if earlier and earlier != template:
        raise DistillError(f"{run.root} holds a run of template {earlier!r}, not {template!r}: give another run "
                           f"folder ({option('out')}), or delete that one first")


def _highest_missing(path: Path) -> Path | None:
    """The outermost of `path` and its parents that does not exist yet (what making `path` creates)."""
    top = None
    path = path.absolute()
    for p in (path, *path.parents):
        if p.exists():
            break
        top = p
    return top


def _remove_unfinished(run: RunDir, created: Path | None) -> None:
    """Undo a run that finished no stage: the folders this run made, else only the files it wrote."""
    if created is not None:
        shutil.rmtree(created, ignore_errors=True)
        return
    run.discard_partials()
    for name in ("config.yaml", "manifest.json"):
        run.path(name).unlink(missing_ok=True)
