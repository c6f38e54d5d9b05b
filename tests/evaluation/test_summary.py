import json

import pytest

from evaluation.report import build_report
from evaluation.summary import main, update_block
from tests.evaluation.test_report import _art


def test_readme_block_is_regenerated_from_report_json(tmp_path):
    arts = [_art("teacher-torch", "teacher", 0.9, 0.8, 0.05, 4.0),
            _art("student-gguf-Q4_K_M", "student", 0.85, 0.76, 0.06, 24.0, "gguf", "Q4_K_M")]
    r = build_report(template="fraud", task="decision", project="p", primary_metric="roc_auc",
                     compared=("roc_auc", "recall"), lower_is_better={"fpr"}, artifacts=arts,
                     data={"n_train": 1, "n_val": 2, "n_test": 3, "test_positives": 1},
                     machine={"cpus": 2, "platform": "linux"}, stages={"data": {"seconds": 120}},
                     operating_point={"kind": "fpr", "value": 0.02, "description": "FPR <= 2%", "metric": "recall",
                                       "constraint_metric": "fpr"})
    (tmp_path / "report.json").write_text(json.dumps(r))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- figures:fraud -->\nstale 0.954\n<!-- /figures:fraud -->\nend\n")
    assert main([str(readme), f"fraud={tmp_path / 'report.json'}"]) == 0
    text = readme.read_text()
    assert "stale" not in text and text.startswith("intro\n") and text.endswith("end\n")
    assert "| student-gguf-Q4_K_M | 0.760 | 0.060 | 0.850 | 0.0 | 24.0 | 12 | 6.00x | 95.0% |" in text
    assert "operating point: FPR <= 2%" in text


def test_missing_block_is_an_error():
    with pytest.raises(SystemExit, match="figures:code"):
        update_block("no markers", "code", "x")
