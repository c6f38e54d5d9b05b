"""A generation-shaped template written outside the repository, registered by entry point (a
dist-info folder on sys.path, exactly what `pip install` of a plugin package leaves), passes
check_template and runs the whole pipeline on tiny random models: the core names no template."""

import importlib
import textwrap

import pytest

from tests.conftest import make_tiny_llama

TEMPLATE = '''
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict

HERE = Path(__file__).parent


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    modulus: int = 2


class ParityTemplate:
    """Toy generation task: a completion passes when its length in characters is a multiple of `modulus`
    (so about half of a random model's completions pass: the plumbing is what is tested)."""

    name = "parity"
    description = "toy generation template (tests)"
    task = "generation"
    columns = ("task_id", "text")
    primary_metric = "pass@1"
    retention_metrics = ("pass@1",)
    lower_is_better = frozenset()
    chat = False
    stratify = None
    Options = Options

    def synthesize(self, n, seed, options):
        words = ["yes", "no", "fraud", "device", "store", "online"]
        return pd.DataFrame({"task_id": [f"p{seed}-{i}" for i in range(n)],
                             # numbered: the data stage keeps one row per distinct prompt
                             "text": [" ".join(words[(i * 7 + seed + j) % 6] for j in range(1 + i % 4)) + f" {i}"
                                      for i in range(n)],
                             "answer": ["ab" * (1 + i % 3) for i in range(n)]})

    def load(self, path):
        return pd.read_csv(path)

    def prepare_train(self, train, seed, options):
        return train

    def prompt(self, row):
        return f"Say {row['text']}:"

    def reference_completion(self, row):
        return row["answer"]

    def verify(self, rows, completions, options, progress=None):
        return [[{"passed": len(c) > 0 and len(c) % options.modulus == 0, "status": "checked", "reason": ""}
                 for c in cs] for cs in completions]

    def metrics(self, rows, greedy_passed, sampled_passed, options):
        return {"pass@1": sum(greedy_passed) / max(len(greedy_passed), 1), "n": float(len(greedy_passed))}

    def plot(self, report, details, test, out):
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots()
        ax.bar([a["name"] for a in report["artifacts"]], [a["metrics"]["pass@1"] for a in report["artifacts"]])
        fig.savefig(out)
        plt.close(fig)
        return out

    def preset_path(self, preset):
        return HERE / f"parity_{preset}.yaml"
'''

PRESET = '''
name: parity-tiny
template: parity
preset: tiny
data: {n_train: 12, n_val: 4, n_test: 6}
teacher: {adapt: {enabled: false}}
annotate: {top_k: 4, samples: 3, temperature: 1.0, max_new_tokens: 6, runtime: auto, batch_size: 4}
distill:
  loss: {kind: response_kd, alpha: 0.5, temperature: 1.0}
  compare_sequence_kd: true
  batch_size: 4
  max_epochs: 1
  eval_every: 2
  patience: 1
export: {formats: {gguf: {quants: [Q8_0]}}}
evaluation: {latency_samples: 5, max_new_tokens: 6, samples: 2, batch_size: 4}
'''


@pytest.fixture()
def plugin(tmp_path, monkeypatch):
    root = tmp_path / "site"
    (root / "parity_plugin-0.1.dist-info").mkdir(parents=True)
    (root / "parity_plugin.py").write_text(textwrap.dedent(TEMPLATE))
    (root / "parity_tiny.yaml").write_text(PRESET)
    (root / "parity_plugin-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: parity-plugin\nVersion: 0.1\n")
    (root / "parity_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[distill_sdk.templates]\nparity = parity_plugin:ParityTemplate\n")
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    return root


def test_entry_point_template_passes_check_template(plugin):
    from sdk.registry import TEMPLATES, get_template, names
    from verticals.base import check_template

    assert "parity" in names(TEMPLATES)
    checked = check_template(get_template("parity"))
    assert checked["task"] == "generation" and checked["primary"] == 1.0


def test_check_template_rejects_a_verifier_that_accepts_everything(plugin):
    from sdk.registry import get_template
    from verticals.base import check_template

    t = get_template("parity")
    t.verify = lambda rows, cs, options, progress=None: [[{"passed": True, "status": "", "reason": ""} for _ in c]
                                                          for c in cs]
    with pytest.raises(AssertionError, match="empty completion must fail"):
        check_template(t)


def test_entry_point_generation_template_runs_the_pipeline(plugin, tiny_llama, tmp_path):
    import json

    import sdk

    student = make_tiny_llama(tmp_path / "student", layers=2, seed=5)
    result = sdk.Project.from_template("parity", preset="tiny", teacher={"model": str(tiny_llama)},
                                       student={"model": str(student)}).run(tmp_path / "run")
    r = result.report
    assert r["template"] == "parity" and r["task"] == "generation" and r["speed_metric"] == "tokens_per_s"
    names = [a["name"] for a in r["artifacts"]]
    assert names == ["teacher-torch", "student-torch", "student-gguf-Q8_0", "student-seqkd-gguf-Q8_0"]
    for a in r["artifacts"]:
        assert 0.0 <= a["metrics"]["pass@1"] <= 1.0
        assert a["tokens_per_s"] > 0 and a["ttft_ms"]["p50"] > 0 and a["latency_ms"]["p99"] >= a["latency_ms"]["p50"]
    ann = r["annotation"]
    assert ann["samples"] == 12 * 3 and 0 < ann["accepted_samples"] < ann["samples"]
    # both runtimes are timed before sampling; when every completion is cached already (an earlier run on this
    # machine), nothing is sampled and nothing is timed
    probed = set(ann["runtime_probe_tokens_per_s"])
    assert ann["teacher_runtime"] in ("torch", "llama_cpp") and probed == ({"torch", "gguf"} if ann["generated_now"] else set())
    assert ann["topk_bytes_per_token"] == 4 * (2 + 2)
    run = tmp_path / "run"
    resp = json.loads((run / "annotations" / "responses.json").read_text())
    assert len(resp["text"]) == ann["training_examples"] and all(len(t) % 2 == 0 for t in resp["text"])
    assert (run / "student-seqkd" / "config.json").is_file()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stages"]["distill"]["sequence_kd"]["loss"]["alpha"] == 1.0
    assert manifest["stages"]["distill"]["sequence_kd"]["train"]["steps"] == manifest["stages"]["distill"]["train"]["steps"]
    assert "What the teacher's distributions add" in (run / "report.md").read_text()
    # a re-run in a fresh folder takes every completion from the cache: nothing is generated again
    again = sdk.Project.from_template("parity", preset="tiny", teacher={"model": str(tiny_llama)},
                                      student={"model": str(student)}).run(tmp_path / "run2")
    assert again.report["annotation"]["generated_now"] == 0
    assert again.report["annotation"]["accepted_samples"] == ann["accepted_samples"]
