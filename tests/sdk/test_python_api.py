"""The Python API as a notebook user meets it (docs/python_api.md): a run prints the run, not the libraries'
notices, and leaves no worker process behind; settings are named as Python names them; predict refuses what
it cannot score (a file name, a record out of range) by record and field."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import sdk
from sdk.errors import DistillError
from tests.cli import run_cli
from tests.conftest import make_tiny_llama

ROOT = Path(__file__).resolve().parents[2]
# what the libraries print through a run, none of it about the user's run (sdk/quiet.py)
NOISE = ("Failed to load", "register_constant", "is_gradient_checkpointing", "LeafSpec", "The axis name")

# A notebook's kernel, as a fresh interpreter: the libraries are first imported by the run (their import-time
# notices show then), and its own settings (a logging level, a warnings filter) are in place before.
KERNEL = r"""
import json, logging, os, sys, warnings
from pathlib import Path

import sdk

def key(f):  # a filter by what it says (scikit-learn's joblib workers put back recompiled copies of them)
    return f[0], getattr(f[1], "pattern", f[1]), f[2], getattr(f[3], "pattern", f[3]), f[4]


logging.getLogger("torchao").setLevel(logging.INFO)
warnings.simplefilter("default")
mine = list(warnings.filters)
teacher, student, out = sys.argv[1:4]
result = sdk.Project.from_template("fraud", preset="tiny", teacher={"model": teacher}, student={"model": student},
                                   export={"formats": {"gguf": {"quants": ["Q8_0"]}, "onnx": {"quants": ["fp32"]}}},
                                   distill={"compare_fine_tuning": False}).run(out=out)
from evaluation import zygote

children = [p for p in os.listdir("/proc") if p.isdigit() and Path(f"/proc/{p}/stat").exists()
            and Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1] == str(os.getpid())]
with warnings.catch_warnings(record=True) as after:
    warnings.warn("`is_gradient_checkpointing` is deprecated", FutureWarning)
print(json.dumps({"artifacts": [a["name"] for a in result.report["artifacts"]], "children": children,
                  "zygote": zygote._zygote is not None, "torchao_level": logging.getLogger("torchao").level,
                  "mine_kept": {key(f) for f in mine} <= {key(f) for f in warnings.filters},
                  "quiet_left": [str(f[1]) for f in warnings.filters if f[0] == "ignore" and f[1] is not None
                                 and "gradient" in f[1].pattern],
                  "torch_own_kept": any(f[3] is not None and "lr_scheduler" in f[3].pattern for f in warnings.filters),
                  "warns_after": len(after)}))
"""


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("student"), layers=2, seed=5)


def test_a_run_prints_no_library_notices_and_leaves_no_worker_behind(tiny_llama, tiny_student, tmp_path):
    """torchao's "Failed to load", torch's _pytree and ONNX notes, transformers' is_gradient_checkpointing
    FutureWarning were printed by Project.run (the CLI silenced them), and the torch evaluation zygote (~400 MB)
    lived until the kernel exited. The caller's own logging level and warning filters are given back, and the
    filters torch adds for itself when first imported inside the run are kept."""
    done = subprocess.run([sys.executable, "-c", KERNEL, str(tiny_llama), str(tiny_student), str(tmp_path / "run")],
                          capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    assert "teacher-torch" in facts["artifacts"] and "student-torch" in facts["artifacts"]  # the zygote ran them
    shown = [line for line in done.stderr.splitlines() if any(n in line for n in NOISE)]
    assert not shown, shown
    assert facts["children"] == [] and not facts["zygote"]
    assert facts["torchao_level"] == 20 and facts["mine_kept"] and facts["quiet_left"] == []
    assert facts["torch_own_kept"] and facts["warns_after"] == 1
    # the run's own lines name settings as Python does
    assert "--keep-checkpoints" not in done.stdout and "keep_checkpoints=True keeps them" in done.stdout


def test_settings_are_named_as_the_caller_gives_them(tmp_path):
    """`--out x: this is a file` from Project.run spoke the CLI; the CLI, which calls Project.run, still does."""
    (tmp_path / "taken").write_text("")
    project = sdk.Project.from_template("fraud", preset="tiny")
    with pytest.raises(DistillError, match=r"^out='.*taken': this is a file"):
        project.run(out=tmp_path / "taken", preflight=False)
    yaml_path = project.to_yaml(tmp_path / "project.yaml")
    cli = run_cli("run", yaml_path, "--out", tmp_path / "taken")
    assert cli.returncode == 2 and f"error: --out {tmp_path / 'taken'}: this is a file" in cli.stderr
    with pytest.raises(DistillError, match=r"^out='"):  # the command's wording ended with the command
        project.run(out=tmp_path / "taken", preflight=False)
    with pytest.raises(DistillError, match=r"give another run folder \(out=\)"):
        run_dir = tmp_path / "other"
        run_dir.mkdir()
        (run_dir / "manifest.json").write_text(json.dumps({"stages": {}, "template": "code"}))
        project.run(out=run_dir, preflight=False)


def test_repair_advice_is_the_call_that_repairs_it(tmp_path):
    """A loaded run's advice to finish it was the CLI command; from Python it is the Python call, and `distill
    score` (the same loader, from the CLI) keeps its command."""
    from verticals.fraud import FraudTemplate

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(FraudTemplate().preset_path("tiny").read_text())
    with pytest.raises(DistillError, match="data/task.json is missing") as err:
        sdk.Project.load(run_dir)
    assert f"`Project.from_yaml({str(run_dir / 'config.yaml')!r}).run(out={str(run_dir)!r})`" in str(err.value)
    (tmp_path / "rows.csv").write_text("amount\n1\n")
    cli = run_cli("score", run_dir, tmp_path / "rows.csv", "--out", tmp_path / "scored.csv")
    assert cli.returncode == 2 and f"`distill run {run_dir / 'config.yaml'} --out {run_dir}`" in cli.stderr


def _records(n=3):
    from verticals.fraud import FraudTemplate

    t = FraudTemplate()
    return t.synthesize(n, 7, t.Options()).drop(columns=["label", "pattern"]).to_dict("records")


def test_predict_refuses_out_of_range_records_by_index_and_field(fraud_tiny_run):
    run = sdk.Project.load(fraud_tiny_run)
    rows = _records()
    rows[1]["hour"] = 99
    with pytest.raises(DistillError, match=r"row 2: .*column 'hour': 99 is out of range \(allowed: a whole hour of "
                                           r"the day, 0 to 23\); the row's index is 1") as err:
        run.predict(rows)
    assert err.value.field == "hour"
    rows[1]["hour"], rows[2]["account_age_days"] = 23, -12
    with pytest.raises(DistillError, match=r"row 3: .*column 'account_age_days': -12 is out of range \(allowed: a "
                                           r"whole number of days, 0 or more\)"):
        run.predict(rows)
    import pandas as pd

    frame = pd.DataFrame(_records(), index=["tx-a", "tx-b", "tx-c"]).assign(velocity_1h=[0, -1, 2])
    with pytest.raises(DistillError, match=r"row 2: .*'velocity_1h'.*the row's index is 'tx-b'") as err:
        run.predict(frame)
    assert err.value.field == "velocity_1h"


def test_predict_with_a_file_name_says_to_read_it_first(fraud_tiny_run, tmp_path):
    run = sdk.Project.load(fraud_tiny_run)
    path = tmp_path / "new.csv"
    for given in (str(path), path):
        with pytest.raises(DistillError, match=r"not rows .*read the file's rows first, "
                                               r"`run.predict\(run.read\('.*new.csv'\)\)`"):
            run.predict(given)
    with pytest.raises(DistillError, match=r"record 1 \(row 2\) is a str, not a dict of column values"):
        run.predict([_records(1)[0], "amount=3"])
    # what the message says works
    import pandas as pd

    pd.DataFrame(_records()).to_csv(path, index=False)
    assert len(run.predict(run.read(path))) == 3


def test_predict_with_a_torch_artifact_keeps_its_worker_for_the_next_call(fraud_tiny_run, tmp_path):
    """A run ends the worker it started (test above); predict keeps it, so repeated calls in a notebook do not
    pay torch's imports each time."""
    from evaluation import zygote

    run = sdk.Project.load(fraud_tiny_run)
    zygote._end_unless(None)  # as in a fresh kernel (this session may hold one from earlier tests)
    scored = run.predict(_records(2), artifact="student-torch")
    assert len(scored) == 2 and scored["score"].between(0, 1).all()
    kept = zygote._zygote
    assert kept is not None and kept.proc.poll() is None
    run.predict(_records(1), artifact="student-torch")
    assert zygote._zygote is kept and kept.proc.poll() is None


def test_progress_bars_are_notebook_aware():
    """House rule: progress bars come from tqdm.auto (a widget in a notebook, text in a terminal); a plain
    `tqdm` import prints a text bar into every notebook cell (evaluation/uncertainty.py did)."""
    plain = []
    for package in ("sdk", "evaluation", "deployment", "verticals"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.module in ("tqdm", "tqdm.std"):
                    plain.append(f"{path.relative_to(ROOT)}:{node.lineno}")
                elif isinstance(node, ast.Import) and any(a.name in ("tqdm", "tqdm.std") for a in node.names):
                    plain.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not plain, f"use `from tqdm.auto import tqdm`: {plain}"
