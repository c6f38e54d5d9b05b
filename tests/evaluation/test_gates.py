"""Release gates: the verdict's arithmetic, and a GGUF with a corrupted tensor caught on a real finished run."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from evaluation.gates import decision_parity, gate_intervals, generation_parity, release_gate


def test_gate_retention_both_directions_and_a_zero_reference():
    ok = release_gate({"auc": 0.90}, {"auc": 0.93}, "auc", False, 0.95)
    assert ok["passed"] and ok["retention"] == pytest.approx(0.90 / 0.93)
    assert not release_gate({"auc": 0.85}, {"auc": 0.93}, "auc", False, 0.95)["passed"]
    # lower is better: the reference / the artifact
    worse = release_gate({"fpr": 0.04}, {"fpr": 0.02}, "fpr", True, 0.95)
    assert not worse["passed"] and worse["retention"] == pytest.approx(0.5)
    assert release_gate({"fpr": 0.02}, {"fpr": 0.021}, "fpr", True, 0.95)["passed"]
    # nothing to lose: anything at least as good passes
    assert release_gate({"pass@1": 0.0}, {"pass@1": 0.0}, "pass@1", False, 0.95)["passed"]
    assert release_gate({"pass@1": 0.1}, {"pass@1": 0.0}, "pass@1", False, 0.95)["passed"]


def test_a_metric_undefined_on_validation_decides_nothing():
    """ROC-AUC of a validation split of one class is NaN: every export "failed", with a warning saying its AUC
    fell below the floor, and NaN went into report.json."""
    g = release_gate({"roc_auc": float("nan")}, {"roc_auc": float("nan")}, "roc_auc", False, 0.95)
    assert g["verdict"] == "inconclusive" and not g["passed"] and g["value"] is None and g["retention"] is None
    assert "undefined on the validation split" in g["reason"]


def test_parity_figures():
    ref = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    got = np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    p = decision_parity(got, ref, 0.5, 0.5)
    assert p["max_abs_prob_diff"] == pytest.approx(0.2) and p["decision_agreement"] == pytest.approx(2 / 3)
    assert generation_parity(["a", "b"], ["a", "c"])["identical_completions"] == 0.5


def _flip_tensor(path, name: str) -> None:
    """Corrupt one tensor in place: the sign of the final norm's weights (every logit then changes sign)."""
    from gguf import GGUFReader

    reader = GGUFReader(path, "r+")
    tensor = next(t for t in reader.tensors if t.name == name)
    tensor.data[...] = -tensor.data
    reader.data.flush()


def _pass_at_1(passes: dict[str, np.ndarray]):
    """metrics_on for gate_intervals: pass@1 of each artifact on the resampled problems."""
    return lambda idx: {n: {"pass@1": float(p[idx].mean())} for n, p in passes.items()}


def test_one_problem_in_ten_is_inconclusive_and_a_real_loss_on_many_fails():
    ref = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0], bool)
    lost_one = ref.copy()
    lost_one[0] = False  # 0.5 vs 0.6: retention 0.83, but one problem of ten
    iv = gate_intervals(10, _pass_at_1({"student-torch": ref, "q4": lost_one}), "student-torch", ["q4"],
                        "pass@1", False)
    lo, hi = iv["q4"]
    assert lo < 0.83 < hi and hi >= 0.95
    gate = release_gate({"pass@1": 0.5}, {"pass@1": 0.6}, "pass@1", False, 0.95, iv["q4"])
    assert gate["verdict"] == "inconclusive" and not gate["passed"] and gate["retention_ci"] == [lo, hi]
    # the same share lost on 200 problems (20 of 120): the interval lies below the floor
    rng = np.random.default_rng(0)
    ref = rng.random(200) < 0.6
    worse = ref.copy()
    worse[np.flatnonzero(ref)[:20]] = False
    iv = gate_intervals(200, _pass_at_1({"student-torch": ref, "int4": worse}), "student-torch", ["int4"],
                        "pass@1", False)
    assert iv["int4"][1] < 0.95
    gate = release_gate({"pass@1": worse.mean()}, {"pass@1": ref.mean()}, "pass@1", False, 0.95, iv["int4"])
    assert gate["verdict"] == "fail"
    # a pass needs no interval; without one, a retention under the floor is a plain fail
    assert release_gate({"pass@1": 0.6}, {"pass@1": 0.6}, "pass@1", False, 0.95, [0.8, 1.2])["verdict"] == "pass"
    assert release_gate({"pass@1": 0.5}, {"pass@1": 0.6}, "pass@1", False, 0.95)["verdict"] == "fail"


def test_gate_catches_a_corrupted_tensor(fraud_tiny_run, tmp_path):
    from evaluation.harness import Artifact, evaluate_validation
    from sdk.scoring import load_run
    from sdk.stages import Context
    from sdk.stages.evaluate import artifacts, reference

    run = load_run(fraud_tiny_run)
    ctx = Context(run.config, run.template, run.options, run.run)
    parts, val = run.run.splits(), run.run.prompts()["val"]
    y_val, label_ids = parts["val"]["label"].to_numpy(), run.run.task()["label_ids"]

    def val_metrics(art):
        return evaluate_validation(art, run.template, run.options, work_dir=tmp_path, val_seqs=val, y_val=y_val,
                                   label_ids=label_ids)

    ref_metrics, _ = val_metrics(reference(ctx))
    metric = run.template.primary_metric
    # a ranking to lose: the sign flip below turns a ranking of quality a into 1 - a
    assert ref_metrics[metric] > 0.52, f"the tiny student ranks no better than chance ({ref_metrics[metric]})"
    q8 = next(a for a in artifacts(ctx) if a.name == "student-gguf-Q8_0")
    broken_file = tmp_path / "student-Q8_0-corrupted.gguf"
    shutil.copy(q8.path, broken_file)
    _flip_tensor(broken_file, "output_norm.weight")
    broken = Artifact("student-gguf-Q8_0-corrupted", "student", "gguf", "Q8_0", str(broken_file), q8.params,
                      q8.size_bytes, {**q8.spec, "model": str(broken_file)})
    intact_gate = release_gate(val_metrics(q8)[0], ref_metrics, metric, False, 0.95)
    broken_gate = release_gate(val_metrics(broken)[0], ref_metrics, metric, False, 0.95)
    assert intact_gate["passed"], intact_gate
    assert not broken_gate["passed"] and broken_gate["retention"] < 0.95, broken_gate
