"""The code template: data (synthesized problems or HumanEval-style JSONL), prompt, sandboxed verifier,
pass@k metrics and the report figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import Field

from sdk.typed_config import TypedConfig

_HERE = Path(__file__).parent


class CodeOptions(TypedConfig):
    """`template_options` of the code template."""

    difficulties: dict[str, float] | None = Field(
        None, description="Synthesized mix of difficulty levels, e.g. {easy: 0.4, medium: 0.4, hard: 0.2}; "
        "null = the synthesizer's default mix.")
    timeout_s: float = Field(5.0, gt=0, description="Wall-clock limit per program run in the sandbox.")
    memory_mb: int = Field(512, ge=64, description="Address-space limit per program run in the sandbox.")
    workers: int = Field(2, ge=1, description="Programs run at once in the sandbox.")
    ks: list[int] = Field([1, 5], description="k of the pass@k figures computed from evaluation samples.")


class CodeTemplate:
    name = "code"
    description = "Code assistant: Python functions from docstrings, verified by unit tests in a sandbox (pass@k)."
    task = "generation"
    columns = ("task_id", "prompt", "entry_point", "test")
    primary_metric = "pass@1"
    retention_metrics = ("pass@1", "pass@5", "pass@10")
    lower_is_better = frozenset()
    chat = True  # a user turn for an instruct model; rendered with the model's chat template
    stratify = "difficulty"
    Options = CodeOptions

    def synthesize(self, n: int, seed: int, options: CodeOptions) -> pd.DataFrame:
        from verticals.code.synth import synthesize_problems

        return synthesize_problems(n, seed, options.difficulties)

    def load(self, path: Path) -> pd.DataFrame:
        from verticals.code.problems import read_problems

        df = pd.DataFrame(read_problems(path))
        if "difficulty" not in df:
            df["difficulty"] = "unrated"
        return df

    def prepare_train(self, train: pd.DataFrame, seed: int, options: CodeOptions) -> pd.DataFrame:
        return train

    def prompt(self, row: dict[str, Any]) -> str:
        from verticals.code.prompt import user_message

        return user_message(row["prompt"])

    def reference_completion(self, row: dict[str, Any]) -> str | None:
        sol = row.get("canonical_solution")
        return sol if isinstance(sol, str) and sol.strip() else None

    def verify(self, rows: list[dict[str, Any]], completions: list[list[str]], options: CodeOptions,
               progress: str | None = None) -> list[list[dict[str, Any]]]:
        """Each completion run against its problem's tests in the sandbox."""
        from verticals.code.problems import check_completions

        problems = {str(r["task_id"]): r for r in rows}
        pairs = [(str(r["task_id"]), c) for r, cs in zip(rows, completions) for c in cs]
        if progress:
            print(f"[distill] {progress}: {len(pairs)} programs in the sandbox")
        results = check_completions(problems, pairs, timeout_s=options.timeout_s, memory_mb=options.memory_mb,
                                    workers=options.workers)
        out, i = [], 0
        for cs in completions:
            out.append([{"passed": res.status == "pass", "status": res.status, "reason": res.reason}
                        for res in results[i: i + len(cs)]])
            i += len(cs)
        return out

    def proportion_counts(self, m: dict[str, Any]) -> dict[str, tuple[int, int]]:
        """(passed, problems) of greedy pass@1: the report gives it a Wilson interval (evaluation/uncertainty.py).
        pass@k from samples is an average of per-problem estimates, not a count: it keeps the bootstrap."""
        n, p = int(m.get("n", 0)), m.get("pass@1")
        if not n or p is None:
            return {}
        return {"pass@1": (int(round(p * n)), n)}

    def metrics(self, rows: list[dict[str, Any]], greedy_passed: list[bool],
                sampled_passed: list[list[bool]] | None, options: CodeOptions) -> dict[str, float]:
        from verticals.code.metrics import pass_at_k_table

        m: dict[str, float] = {"pass@1": sum(greedy_passed) / max(len(greedy_passed), 1)}
        if sampled_passed:
            table = pass_at_k_table(sampled_passed, options.ks)
            m.update({k: v for k, v in table.items() if k != "pass@1"})
            if "pass@1" in table:
                m["pass@1_sampled"] = table["pass@1"]
        groups = [str(r.get("difficulty", "unrated")) for r in rows]
        for g in sorted(set(groups), key=_difficulty_order):
            sel = [p for p, gg in zip(greedy_passed, groups) if gg == g]
            m[f"pass@1_{g}"] = sum(sel) / len(sel)
        m["n"] = float(len(greedy_passed))
        return m

    def plot(self, report: dict[str, Any], details: dict[str, Any], test: pd.DataFrame, out: Path) -> Path:
        from verticals.code.plots import plot_report

        return plot_report(report, out)

    def preset_path(self, preset: str) -> Path:
        return _HERE / f"{preset}.yaml"


def _difficulty_order(g: str) -> tuple[int, str]:
    return ({"easy": 0, "medium": 1, "hard": 2}.get(g, 3), g)
