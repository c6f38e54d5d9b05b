"""`distill check-solutions` end to end: once as a subprocess of the installed CLI, the other cases through
the same app in this process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli import run_cli
from verticals.code.problems import humaneval_path, read_problems

REPO = Path(__file__).resolve().parents[3]


def check_solutions_process(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sdk.cli", "check-solutions", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def check_solutions(*args: str) -> subprocess.CompletedProcess:
    return run_cli("check-solutions", *args)  # in this process; the programs still run in the sandbox's


def pass_at_1(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if line.startswith("pass@1 = ")]
    assert len(lines) == 1, stdout
    return lines[0]


def write_completions(path: Path, pairs: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"task_id": t, "completion": c}) + "\n" for t, c in pairs))
    return path


def test_canonical_solutions_pass_all_164(tmp_path):
    out = tmp_path / "results.jsonl"
    started = time.monotonic()
    proc = check_solutions_process(humaneval_path(), "--out", out, "--workers", 2)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert pass_at_1(proc.stdout) == "pass@1 = 1.0000"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 164 and all(r["passed"] and r["status"] == "pass" for r in rows)
    assert set(rows[0]) == {"task_id", "completion_index", "status", "passed", "reason", "seconds"}
    assert [p.name for p in tmp_path.iterdir()] == ["results.jsonl"]  # no temporary file left
    assert elapsed < 120, f"164 canonical solutions took {elapsed:.0f}s"


@pytest.mark.parametrize("broken", ["    return None\n", "    raise RuntimeError('broken')\n"])
def test_broken_completions_fail(tmp_path, broken):
    task_ids = [p["task_id"] for p in read_problems(humaneval_path())][::6]  # 28 tasks spread over the set
    completions = write_completions(tmp_path / "c.jsonl", [(t, broken) for t in task_ids])
    out = tmp_path / "r.jsonl"
    proc = check_solutions(humaneval_path(), "--completions", completions, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert pass_at_1(proc.stdout) == "pass@1 = 0.0000"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["task_id"] for r in rows] == task_ids and not any(r["passed"] for r in rows)
    assert all(r["status"] == "fail" for r in rows)


def test_several_completions_per_task_give_the_unbiased_pass_at_1(tmp_path):
    problems = {p["task_id"]: p for p in read_problems(humaneval_path())}
    pairs = []
    for t in ["HumanEval/4", "HumanEval/7", "HumanEval/12"]:
        pairs += [(t, problems[t]["canonical_solution"]), (t, "    return None\n"), (t, "    pass\n")]
    out = tmp_path / "r.jsonl"
    proc = check_solutions(humaneval_path(), "--completions", write_completions(tmp_path / "c.jsonl", pairs),
                           "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert pass_at_1(proc.stdout) == "pass@1 = 0.3333"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["completion_index"] for r in rows] == [0, 1, 2] * 3


def test_malformed_problem_line_exits_2(tmp_path):
    good = {"task_id": "t/0", "prompt": "def f():\n", "entry_point": "f", "test": "def check(c):\n    pass\n"}
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "task_id": "t/1", "test": 3}) + "\n")
    proc = check_solutions(path)
    assert proc.returncode == 2
    assert f"{path}:2: field 'test'" in proc.stderr and "Traceback" not in proc.stderr


def test_malformed_completion_line_exits_2(tmp_path):
    completions = tmp_path / "c.jsonl"
    completions.write_text('{"task_id": "HumanEval/0", "completion": "    return True\\n"}\n'
                           '{"task_id": "HumanEval/0", "completion": \n')
    proc = check_solutions(humaneval_path(), "--completions", completions)
    assert proc.returncode == 2 and f"{completions}:2: not valid JSON" in proc.stderr
    completions.write_text('{"task_id": "HumanEval/0"}\n')
    proc = check_solutions(humaneval_path(), "--completions", completions)
    assert proc.returncode == 2 and f"{completions}:1: field 'completion' is missing" in proc.stderr
