import json

import pandas as pd
import pytest

from sdk.errors import DistillError
from verticals.code.problems import build_program
from verticals.code.sandbox import run_program, run_programs
from verticals.code.synth import COLUMNS, DIFFICULTIES, FAMILIES, synthesize_problems

WRONG_BODY = "    return None\n"


def test_same_seed_same_frame_other_seed_other_frame():
    a = synthesize_problems(50, seed=3)
    pd.testing.assert_frame_equal(a, synthesize_problems(50, seed=3))
    b = synthesize_problems(50, seed=4)
    assert (a["prompt"] != b["prompt"]).mean() > 0.9


def test_columns_types_and_humaneval_shape():
    df = synthesize_problems(300, seed=0)
    assert list(df.columns) == COLUMNS and len(df) == 300
    assert df["task_id"].is_unique
    assert set(df["family"]) == set(FAMILIES) and set(df["difficulty"]) == set(DIFFICULTIES)
    for r in df.to_dict("records"):
        assert all(isinstance(r[c], str) for c in COLUMNS)
        assert r["task_id"].startswith(f"synth/{r['family']}/")
        assert f"\ndef {r['entry_point']}(" in "\n" + r["prompt"]
        assert r["prompt"].endswith('    """\n') and f">>> {r['entry_point']}(" in r["prompt"]
        assert r["test"].startswith("def check(candidate):\n")
        assert 3 <= r["test"].count("    assert candidate(") <= 6
        assert all(line.startswith("    ") for line in r["canonical_solution"].splitlines() if line)


def test_prompts_are_almost_all_distinct():
    df = synthesize_problems(1200, seed=5)
    assert df["prompt"].duplicated().mean() < 0.03


def test_canonical_passes_and_wrong_solution_fails_in_the_sandbox():
    problems = synthesize_problems(30, seed=1).to_dict("records")
    programs = [build_program(p, p["canonical_solution"]) for p in problems]
    programs += [build_program(p, WRONG_BODY) for p in problems]
    results = run_programs(programs, timeout_s=10, workers=2, progress=False)
    good, wrong = results[:len(problems)], results[len(problems):]
    assert [r.status for r in good] == ["pass"] * len(problems), [r.reason for r in good if not r.passed]
    assert [r.status for r in wrong] == ["fail"] * len(problems)


def test_every_generator_canonical_passes_and_wrong_fails():
    # 600 problems cover every generator; one sandboxed program runs them all (one process each would take
    # minutes), each in its own namespace, and reports the task_ids whose outcome is not the expected one
    problems = synthesize_problems(600, seed=2).to_dict("records")
    cases = [(p["task_id"], build_program(p, p["canonical_solution"]), build_program(p, WRONG_BODY)) for p in problems]
    harness = (
        "import json\n"
        f"cases = json.loads({json.dumps(json.dumps(cases))})\n"
        "bad = []\n"
        "for task_id, good, wrong in cases:\n"
        "    try:\n"
        "        exec(good, {})\n"
        "    except Exception as e:\n"
        "        bad.append((task_id, 'canonical', repr(e)))\n"
        "    try:\n"
        "        exec(wrong, {})\n"
        "        bad.append((task_id, 'wrong passed', ''))\n"
        "    except AssertionError:\n"
        "        pass\n"
        "print(json.dumps(bad))\n")
    result = run_program(harness, timeout_s=60, memory_mb=1024)
    assert result.passed, result.reason
    assert json.loads(result.stdout) == []


def test_difficulty_mix_follows_the_weights():
    df = synthesize_problems(900, seed=4, difficulties={"easy": 6, "medium": 3, "hard": 1})
    assert df["difficulty"].value_counts().to_dict() == {"easy": 540, "medium": 270, "hard": 90}
    assert df["difficulty"].iloc[:100].nunique() == 3  # levels are shuffled, not in blocks
    only_hard = synthesize_problems(40, seed=4, difficulties={"hard": 2.0, "easy": 0.0})
    assert set(only_hard["difficulty"]) == {"hard"}
    odd = synthesize_problems(7, seed=4, difficulties={"easy": 1, "medium": 1, "hard": 1})
    assert sorted(odd["difficulty"].value_counts()) == [2, 2, 3]
    default = synthesize_problems(200, seed=4)["difficulty"].value_counts(normalize=True)
    assert default["easy"] > default["medium"] > default["hard"] > 0.15


@pytest.mark.parametrize("kwargs, option", [
    ({"n": 0}, "n"),
    ({"n": -3}, "n"),
    ({"n": 2.5}, "n"),
    ({"n": 5, "difficulties": {"easy": 1, "expert": 1}}, "difficulties"),
    ({"n": 5, "difficulties": {"easy": 0, "hard": 0}}, "difficulties"),
    ({"n": 5, "difficulties": {"easy": -1, "hard": 2}}, "difficulties"),
    ({"n": 5, "difficulties": {}}, "difficulties"),
    ({"n": 5, "difficulties": {"easy": "lots"}}, "difficulties"),
    ({"n": 5, "difficulties": {"easy": float("nan")}}, "difficulties"),
    ({"n": 5, "difficulties": ["easy"]}, "difficulties"),
])
def test_bad_options_name_the_option(kwargs, option):
    with pytest.raises(ValueError, match=rf"^{option}:") as err:
        synthesize_problems(seed=0, **kwargs)
    assert isinstance(err.value, DistillError)
