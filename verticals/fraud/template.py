"""The fraud template: prompt, verbalizer, metrics and threshold choice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve

from verticals.fraud.synth import synthesize_transactions

_HERE = Path(__file__).parent


class FraudTemplate:
    name = "fraud"
    description = "Card-transaction fraud decisions (ROC-AUC, recall, precision, false-positive rate)."
    columns = ("amount", "hour", "merchant_category", "channel", "country", "account_age_days",
               "device_change", "velocity_1h")
    label_words = {1: " yes", 0: " no"}
    primary_metric = "roc_auc"

    def synthesize(self, n: int, seed: int, options: dict[str, Any]) -> pd.DataFrame:
        unknown = set(options) - {"fraud_rate"}
        if unknown:
            raise ValueError(f"template_options: unknown key(s) {sorted(unknown)} (fraud accepts fraud_rate)")
        rate = float(options.get("fraud_rate", 0.05))
        if not 0 < rate < 1:
            raise ValueError("template_options.fraud_rate must be between 0 and 1")
        return synthesize_transactions(n, seed, rate)

    def prompt(self, row: dict[str, Any]) -> str:
        # compact on purpose: prompt length sets the cost of every training step and decision
        device = "new device" if bool(row["device_change"]) else "same device"
        return (f"${float(row['amount']):.0f} {row['merchant_category']} {row['channel'].replace('in_store', 'store')} "
                f"{int(row['hour']):02d}h {row['country']}, account {int(row['account_age_days'])}d, "
                f"{device}, {int(row['velocity_1h'])} tx/h. Fraud?")

    def choose_threshold(self, y_val: np.ndarray, scores_val: np.ndarray) -> float:
        """The validation threshold with the best F1: one operating point balancing both error kinds."""
        precision, recall, thresholds = precision_recall_curve(y_val, scores_val)
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        return float(thresholds[int(np.argmax(f1[:-1]))])

    def metrics(self, y_true: np.ndarray, scores: np.ndarray, threshold: float,
                target_recall: float) -> dict[str, float]:
        y_true = np.asarray(y_true).astype(int)
        pred = np.asarray(scores) >= threshold
        tp = int(np.sum(pred & (y_true == 1)))
        fp = int(np.sum(pred & (y_true == 0)))
        fn = int(np.sum(~pred & (y_true == 1)))
        tn = int(np.sum(~pred & (y_true == 0)))
        fpr_curve, tpr_curve, _ = roc_curve(y_true, scores)
        return {
            "roc_auc": float(roc_auc_score(y_true, scores)),
            "recall": tp / max(tp + fn, 1),
            "precision": tp / max(tp + fp, 1),
            "fpr": fp / max(fp + tn, 1),
            "f1": 2 * tp / max(2 * tp + fp + fn, 1),
            # lowest FPR among operating points that reach the target recall
            f"fpr_at_recall_{target_recall:g}": float(np.min(fpr_curve[tpr_curve >= target_recall])),
            "threshold": float(threshold),
            "positives": float(tp + fn),
            "n": float(len(y_true)),
        }

    def preset_path(self, preset: str) -> Path:
        return _HERE / f"{preset}.yaml"
