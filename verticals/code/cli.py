"""`distill check-solutions`: run HumanEval-format problems' canonical solutions (or given completions) in
the sandbox and report pass@1. Registered under the `distill_sdk.commands` entry point; loaded at every
`distill` start, so heavy imports stay inside the command."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

from sdk.errors import DistillError


def check_solutions(
    problems: Path = typer.Argument(..., help="HumanEval-format problems (.jsonl or .jsonl.gz), e.g. the file "
                                              "printed by `python -c 'from verticals.code.problems import "
                                              "humaneval_path; print(humaneval_path())'`."),
    completions: Optional[Path] = typer.Option(None, help="JSONL of {task_id, completion} (several per task "
                                                          "allowed); default: each problem's canonical_solution."),
    out: Optional[Path] = typer.Option(None, help="Write one JSONL line per program: task_id, completion_index, "
                                                  "status, passed, reason, seconds."),
    timeout: float = typer.Option(5.0, help="Wall-clock limit per program (seconds)."),
    workers: int = typer.Option(2, help="Programs run at once."),
    memory: int = typer.Option(512, help="Address-space limit per program (MB)."),
) -> None:
    """Run solutions against their problems' tests in the sandbox and print pass@1."""
    from verticals.code.metrics import pass_at_k_table
    from verticals.code.problems import check_completions, read_problems

    try:
        if timeout <= 0 or workers < 1 or memory < 64:
            raise DistillError(f"need --timeout > 0, --workers >= 1, --memory >= 64 (got {timeout}, {workers}, "
                               f"{memory})")
        problem_list = read_problems(problems)
        by_id = {p["task_id"]: p for p in problem_list}
        pairs = _pairs(problem_list, by_id, completions)
        started = time.monotonic()
        results = check_completions(by_id, [(t, c) for t, _, c in pairs], timeout_s=timeout, memory_mb=memory,
                                    workers=workers, progress=True)
        elapsed = time.monotonic() - started
        rows = [{"task_id": t, "completion_index": i, "status": r.status, "passed": r.passed, "reason": r.reason,
                 "seconds": r.seconds} for (t, i, _), r in zip(pairs, results)]
        if out is not None:
            from sdk.rundir import atomic_write_text

            atomic_write_text(out, "".join(json.dumps(row) + "\n" for row in rows))
    except DistillError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2)

    per_task: dict[str, list[bool]] = {}
    for row in rows:
        per_task.setdefault(row["task_id"], []).append(row["passed"])
    counts = {s: sum(r["status"] == s for r in rows) for s in ("pass", "fail", "timeout", "error")}
    typer.echo(f"{len(rows)} programs for {len(per_task)} tasks in {elapsed:.1f}s: "
               + ", ".join(f"{n} {s}" for s, n in counts.items()))
    for row in rows:
        if not row["passed"]:
            typer.echo(f"  {row['task_id']} [{row['completion_index']}] {row['status']}: {row['reason'][:120]}")
    typer.echo(f"pass@1 = {pass_at_k_table(list(per_task.values()), [1])['pass@1']:.4f}")
    if out is not None:
        typer.echo(f"wrote {out}")


def _pairs(problem_list: list[dict], by_id: dict[str, dict], completions: Optional[Path]) -> list[tuple[str, int, str]]:
    """(task_id, completion_index, completion) for each program to run."""
    from verticals.code.problems import read_completions

    if completions is None:
        missing = [p["task_id"] for p in problem_list if not (p.get("canonical_solution") or "").strip()]
        if missing:
            raise DistillError(f"{len(missing)} problems have no canonical_solution (first: {missing[0]!r}); "
                               f"pass --completions")
        return [(p["task_id"], 0, p["canonical_solution"]) for p in problem_list]
    pairs, seen = [], {}
    for rec in read_completions(completions):
        if rec["task_id"] not in by_id:
            raise DistillError(f"{completions}:{rec['line']}: field 'task_id': {rec['task_id']!r} is not a problem "
                               f"of the problems file")
        index = seen.get(rec["task_id"], 0)
        seen[rec["task_id"]] = index + 1
        pairs.append((rec["task_id"], index, rec["completion"]))
    return pairs
