"""The numpy metrics of the report's bootstrap equal scikit-learn's, ties and edge cases included."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, cohen_kappa_score, confusion_matrix, f1_score, roc_auc_score, roc_curve

from evaluation.metrics import confusion, macro_f1, quadratic_kappa, ranking_metrics


@pytest.mark.parametrize("seed", range(30))
def test_ranking_metrics_equal_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 300))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    # coarse scores make many ties, which is where curve implementations differ
    scores = np.round(rng.random(n) * rng.choice([3, 10, 1000]), 0) / 10 + 0.3 * y * rng.random()
    target = float(rng.choice([0.5, 0.8, 0.95, 1.0]))
    got = ranking_metrics(y, scores, target)
    fpr, tpr, _ = roc_curve(y, scores)
    assert got["roc_auc"] == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert got["average_precision"] == pytest.approx(average_precision_score(y, scores), abs=1e-12)
    assert got["fpr_at_recall"] == pytest.approx(np.min(fpr[tpr >= target]), abs=1e-12)


def test_ranking_metrics_of_a_perfect_and_a_reversed_ranking():
    y = np.array([0, 0, 1, 1])
    assert ranking_metrics(y, np.array([0.1, 0.2, 0.8, 0.9]), 1.0) == {"roc_auc": 1.0, "average_precision": 1.0,
                                                                      "fpr_at_recall": 0.0}
    assert ranking_metrics(y, np.array([0.9, 0.8, 0.2, 0.1]), 1.0)["roc_auc"] == 0.0


@pytest.mark.parametrize("seed", range(30))
def test_confusion_f1_and_quadratic_kappa_equal_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    k, n = int(rng.integers(2, 5)), int(rng.integers(2, 200))
    y = rng.integers(0, k, n)
    pred = np.where(rng.random(n) < 0.6, y, rng.integers(0, k - 1 if seed % 3 == 0 else k, n))  # a label unused
    labels = list(range(k))
    cm = confusion(y, pred, k)
    assert (cm == confusion_matrix(y, pred, labels=labels)).all()
    assert macro_f1(cm) == pytest.approx(f1_score(y, pred, labels=labels, average="macro", zero_division=0), abs=1e-12)
    if len(np.unique(np.r_[y, pred])) > 1:
        assert quadratic_kappa(cm) == pytest.approx(cohen_kappa_score(y, pred, labels=labels, weights="quadratic"),
                                                    abs=1e-12)
