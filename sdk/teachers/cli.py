"""`distill annotate <project.yaml> [--dry-run]`: the teacher's part of a run alone.

Runs the stages up to annotation (data, adapt, annotate) and prints how many teacher calls were made and
how many answers came from the cache. `--dry-run` spends nothing: it prepares the data, looks every request
up in the cache and prints what the missing ones would take (requests, tokens, cost bounds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from sdk.errors import DistillError


def annotate_command(project_yaml: Path,
                     out: Optional[Path] = typer.Option(None, help="Run folder (default runs/<name>)."),
                     dry_run: bool = typer.Option(False, "--dry-run", help="Estimate teacher calls, tokens and cost; "
                                                  "call nothing.")) -> None:
    """Annotate with the teacher only (data, adapt, annotate); print calls made and answers from the cache."""
    from sdk.preflight import check_project, format_problems
    from sdk.project import Project

    try:
        problems = check_project(project_yaml)
        if problems:
            raise DistillError(format_problems(problems, str(project_yaml)))
        project = Project.from_yaml(project_yaml)
        if dry_run:
            _dry_run(project, out)
            return
        result = project.run(out, preflight=False, until="annotate")
    except DistillError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2)
    info = _stage_info(result.run_dir, "annotate")
    usage = info.get("teacher_usage")
    if "annotate" not in result.ran:
        typer.echo("annotate: up to date; teacher calls: 0")
    elif usage:
        typer.echo(f"teacher calls: {usage['calls']}, from cache: {usage['cache_hits']}, tokens: "
                   f"{usage['prompt_tokens']:,} prompt / {usage['completion_tokens']:,} completion, "
                   f"cost: {usage['cost']:.4f}")
    else:
        typer.echo(f"annotate: {info.get('note', 'done')}")
    typer.echo(f"run folder: {result.run_dir}")


def _stage_info(run_dir: Path, stage: str) -> dict[str, Any]:
    import json

    manifest = json.loads((Path(run_dir) / "manifest.json").read_text())
    return manifest.get("stages", {}).get(stage, {})


def _dry_run(project, out: Optional[Path]) -> None:
    from sdk.stages import Context

    c, t = project.config, project.template
    result = project.run(out, preflight=False, until="data")  # prompts as the teacher will get them
    from sdk.rundir import RunDir

    run = RunDir(result.run_dir)
    prompts, texts = run.prompts()["train"], run.prompt_texts()["train"]
    if c.teacher.kind != "openai":
        typer.echo(f"dry run: a local teacher ({c.teacher.kind}) annotates {len(prompts)} training prompts on this "
                   "machine; nothing is paid per call")
        return
    from sdk.teachers.openai_backend import OpenAIBackend

    backend = OpenAIBackend(Context(c, t, project.options, run))
    backend.client.dry_run = True
    if t.task == "decision":
        label_ids = run.task()["label_ids"]
        backend.decision_targets(prompts, texts, label_ids, [t.label_words[i] for i in range(len(label_ids))],
                                 c.annotate.top_k)
    else:
        a = c.annotate
        backend.completions(prompts, texts, {"max_new_tokens": a.max_new_tokens, "temperature": a.temperature,
                                             "top_p": a.top_p, "stop": list(a.stop), "n": a.samples, "seed": c.seed})
    e = backend.client.estimate()
    typer.echo(f"dry run ({c.teacher.model} at {c.teacher.base_url}): {e['requests']} requests to send, "
               f"{e['cached']} answers already cached")
    typer.echo(f"  prompt tokens ~{e['prompt_tokens']:,} (counted with the run's tokenizer), completion tokens at "
               f"most {e['max_completion_tokens']:,}")
    typer.echo(f"  cost: prompts ~{e['prompt_cost']:.4f}, at most {e['max_cost']:.4f} "
               f"(prices per million tokens: {c.teacher.prices.input_per_million:g} in, "
               f"{c.teacher.prices.output_per_million:g} out)"
               + (f"; budget {c.teacher.budget:g}" if c.teacher.budget else ""))
