"""Classification metrics that the report's paired bootstrap recomputes thousands of times.

Hand-rolled in numpy, equal to scikit-learn's (tests/evaluation/test_metrics.py holds them to it on random
data with ties): scikit-learn validates its inputs on every call (type_of_target, check_array: ~2 ms per
function whatever the size), and the bootstrap calls a template's metrics 1,000 times per artifact, so the
report stage of a 24-row run spent over a minute there. These take microseconds on such splits.
"""

from __future__ import annotations

import numpy as np


def _binary_curve(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(true positives, false positives) flagged at each distinct score, from the highest down: what
    sklearn.metrics._ranking._binary_clf_curve computes."""
    order = np.argsort(scores, kind="mergesort")[::-1]
    s, yy = scores[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last row of each run of equal scores
    tps = np.cumsum(yy)[last].astype(float)
    return tps, (1 + last) - tps


def ranking_metrics(y_true: np.ndarray, scores: np.ndarray, target_recall: float) -> dict[str, float]:
    """ROC-AUC, average precision and the lowest false-positive rate among thresholds that reach
    `target_recall`, for 0/1 labels holding both classes (as roc_auc_score, average_precision_score and
    roc_curve give them)."""
    y, s = np.asarray(y_true).astype(int), np.asarray(scores, dtype=float)
    tps, fps = _binary_curve(y, s)
    tpr, fpr = np.r_[0.0, tps / tps[-1]], np.r_[0.0, fps / fps[-1]]
    # the trapezoids of the whole curve: the collinear points roc_curve drops add no area
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    precision = tps / (tps + fps)
    ap = float(np.sum(np.diff(tpr) * precision))  # recall steps times the precision reached there
    reach = tpr >= target_recall
    return {"roc_auc": auc, "average_precision": ap, "fpr_at_recall": float(np.min(fpr[reach])) if reach.any() else 1.0}


def confusion(y_true: np.ndarray, pred: np.ndarray, n_labels: int) -> np.ndarray:
    """Counts [true label, predicted label] over labels 0..n_labels-1 (sklearn's confusion_matrix)."""
    y, p = np.asarray(y_true).astype(int), np.asarray(pred).astype(int)
    return np.bincount(y * n_labels + p, minlength=n_labels * n_labels).reshape(n_labels, n_labels)


def macro_f1(cm: np.ndarray) -> float:
    """Mean over labels of 2TP / (2TP + FP + FN), 0 for a label absent from both (zero_division=0)."""
    tp = np.diag(cm).astype(float)
    denom = cm.sum(axis=0) + cm.sum(axis=1)  # = 2TP + FP + FN
    return float(np.mean(np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)))


def quadratic_kappa(cm: np.ndarray) -> float:
    """Cohen's kappa with quadratic weights (cohen_kappa_score(weights="quadratic")); nan when undefined."""
    n = cm.sum()
    expected = np.outer(cm.sum(axis=1), cm.sum(axis=0)) / max(n, 1)
    i = np.arange(len(cm))
    w = (i[:, None] - i[None, :]) ** 2
    denom = float(np.sum(w * expected))
    return 1.0 - float(np.sum(w * cm)) / denom if denom > 0 else float("nan")
