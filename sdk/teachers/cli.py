"""`distill annotate <project.yaml> [--dry-run]`: the teacher's part of a run alone.

Runs the stages up to annotation (data, adapt, annotate) and prints how many teacher calls were made and
how many answers came from the cache. `--dry-run` spends nothing: it prepares the data, looks every request
up in the cache and prints what the missing ones would take (requests, tokens, cost bounds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from sdk.distill.schedules import uses_teacher_distributions
from sdk.errors import DistillError


def annotate_command(project_yaml: Path,
                     out: Optional[Path] = typer.Option(None, help="Run folder (default runs/<name>)."),
                     dry_run: bool = typer.Option(False, "--dry-run", help="Estimate teacher calls, tokens and cost; "
                                                  "call nothing.")) -> None:
    """Annotate with the teacher only (data, adapt, annotate); print calls made and answers from the cache."""
    from sdk.preflight import check_project, format_problems
    from sdk.project import Project

    try:
        problems = check_project(project_yaml, sends=not dry_run)  # an estimate needs no API key
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
    except KeyboardInterrupt:
        typer.echo(f"\ninterrupted; every answer received is cached: re-run `distill annotate {project_yaml}` to "
                   "resume (answers already paid for are not asked again)", err=True)
        raise typer.Exit(130)
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

    backend = OpenAIBackend(Context(c, t, project.options, run), dry_run=True)  # sends nothing: needs no key
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
               f"{c.teacher.prices.output_per_million:g} out)")
    w = e["without_logprobs"]
    if w["requests"]:
        typer.echo(f"  if the endpoint gives no log-probabilities: {w['requests']} sampled-answer requests more "
                   f"(teacher.decision_samples: {c.teacher.decision_samples}), at most {w['max_cost']:.4f} more")
    if t.task != "decision":
        typer.echo("  a reasoning model's trace may not count against max_tokens on every server (it is billed as "
                   "completion tokens): its cost can exceed this bound; the budget counts what is billed")
    if c.teacher.budget:
        typer.echo(f"  budget {c.teacher.budget:g}, of which {e['spent_before']:.4f} already spent in this run "
                   "folder; the teacher's evaluation spends from it too")
    typer.echo("  the teacher's evaluation (validation and test prompts, and timed live calls) is not in this "
               "estimate")


def with_openai_teacher(text: str, base_url: str, model: str, api_key_env: str | None) -> str:
    """A preset's YAML text (comments kept) with its teacher replaced by an OpenAI-compatible endpoint: the
    preset's local teacher becomes `student.base` (the student is cut from it and its tokenizer is the run's),
    and token-level KD on responses, which needs the teacher's distributions, is turned off."""
    import json
    import re

    import yaml

    data = yaml.safe_load(text) or {}
    local = (data.get("teacher") or {}).get("model") or "embedded:smollm2-135m-instruct"
    teacher = ["teacher:  # set by distill init --teacher openai; see docs/teachers.md",
               "  kind: openai", f"  base_url: {json.dumps(base_url)}", f"  model: {json.dumps(model)}",
               f"  api_key_env: {json.dumps(api_key_env) if api_key_env else 'null'}"]
    lines = _drop_block(text.splitlines(), "teacher")
    lines += teacher
    student = data.get("student") or {}
    if not student.get("model"):
        lines = _set_in_block(lines, "student", "base", f"{json.dumps(local)}  # the student is cut from it")
    loss = (data.get("distill") or {}).get("loss") or {}
    if uses_teacher_distributions(loss) and loss.get("kind") == "response_kd":
        lines = [re.sub(r"^(\s+alpha:)\s*[0-9.]+.*$", r"\1 1.0  # an API teacher gives no distributions", ln)
                 for ln in lines]
        lines = [re.sub(r"^(\s+compare_sequence_kd:)\s*true.*$", r"\1 false  # alpha 1 is sequence-level KD already",
                        ln) for ln in lines]
    return "\n".join(lines) + "\n"


def _drop_block(lines: list[str], key: str) -> list[str]:
    """The YAML lines without the top-level `key:` block."""
    import re

    out, skipping = [], False
    for ln in lines:
        if re.match(rf"^{key}:", ln):
            skipping = True
            continue
        if skipping and (ln.startswith((" ", "#")) or not ln.strip()):
            continue
        skipping = False
        out.append(ln)
    return out


def _set_in_block(lines: list[str], block: str, key: str, value: str) -> list[str]:
    """`key: value` in the top-level `block:` (replacing it there, or adding the block)."""
    import re

    for i, ln in enumerate(lines):
        if re.match(rf"^{block}:\s*(#.*)?$", ln):
            j = i + 1
            while j < len(lines) and (lines[j].startswith(" ") or not lines[j].strip()):
                if re.match(rf"^\s+{key}:", lines[j]):
                    del lines[j]
                    continue
                j += 1
            lines.insert(i + 1, f"  {key}: {value}")
            return lines
    return [*lines, f"{block}:", f"  {key}: {value}"]
