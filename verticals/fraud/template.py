"""The fraud template (decision shape): prompt, verbalizer, options, metrics, threshold, plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator
from sklearn.metrics import precision_recall_curve

from evaluation.metrics import ranking_metrics
from sdk.typed_config import TypedConfig
from verticals.fraud.synth import synthesize_transactions

_HERE = Path(__file__).parent


MIN_FLAGGED_AT_POINT = 5  # validation rows the operating point may flag below which the report warns


class OperatingPoint(TypedConfig):
    """Where the fraud team runs the model, in its own terms. Every artifact (teacher, students) gets its
    threshold on the validation split for this same point, so they are compared on equal terms."""

    kind: Literal["fpr", "alert_rate", "recall", "best_f1", "threshold"] = Field(
        "fpr", description="fpr: flag at most `value` of legitimate transactions; alert_rate: flag at most "
        "`value` of all transactions (the review team's budget); recall: catch at least `value` of fraud; "
        "best_f1: the threshold with the best validation F1; threshold: a fixed score threshold `value`.")
    value: float | None = Field(0.02, description="The target for `kind` (a fraction; unused by best_f1).")

    @model_validator(mode="after")
    def _value_fits_kind(self) -> "OperatingPoint":
        if self.kind == "best_f1":
            return self
        if self.value is None or not 0 < self.value < 1:
            raise ValueError(f"operating_point.value must be in (0, 1) for kind {self.kind!r}, got {self.value}")
        return self

    def describe(self) -> str:
        return {"fpr": f"false-positive rate <= {self.value:.1%} of legitimate transactions",
                "alert_rate": f"alerts <= {self.value:.1%} of all transactions",
                "recall": f"recall >= {self.value:.0%} of fraud",
                "best_f1": "best F1 on validation",
                "threshold": f"score >= {self.value:g}"}[self.kind]

    def constraint(self) -> str | None:
        """The metric the point fixes on validation; shown on test beside the headline (it drifts there)."""
        return {"fpr": "fpr", "alert_rate": "alerts_per_1000", "recall": "recall"}.get(self.kind)

    def headline(self) -> str:
        """The metric the point leaves free: what is compared between artifacts at this point."""
        return {"fpr": "recall", "alert_rate": "recall", "recall": "fpr", "best_f1": "f1", "threshold": "f1"}[self.kind]


class FraudOptions(TypedConfig):
    """`template_options` of the fraud template."""

    fraud_rate: float = Field(0.05, gt=0, lt=1, description="Share of fraud in synthesized transactions.")
    train_positive_fraction: float | None = Field(
        0.25, gt=0, lt=1, description="Upsample fraud in the training split to this fraction (rare-event "
        "decisions learn faster); null keeps the natural rate. Validation and test keep the natural rate.")
    target_recall: float = Field(0.8, gt=0, le=1, description="Recall at which FPR@recall is reported "
                                 "(a threshold-free curve figure, besides the operating point).")
    operating_point: OperatingPoint = Field(default_factory=OperatingPoint,
                                            description="Where every artifact is compared (threshold chosen on "
                                            "validation for this point).")


def upsample_positives(df: pd.DataFrame, fraction: float | None, seed: int) -> pd.DataFrame:
    """Repeat positive rows until they make up `fraction` of the split (train only)."""
    pos = df[df["label"] == 1]
    if fraction is None or len(pos) == 0 or len(pos) / len(df) >= fraction:
        return df
    n_neg = int((df["label"] == 0).sum())
    want = int(round(fraction * n_neg / (1 - fraction)))
    extra = pos.sample(n=want - len(pos), replace=True, random_state=seed)
    return pd.concat([df, extra]).sample(frac=1.0, random_state=seed).reset_index(drop=True)


class FraudTemplate:
    name = "fraud"
    description = "Card-transaction fraud decisions (ROC-AUC, recall, precision, false-positive rate)."
    task = "decision"
    columns = ("amount", "hour", "merchant_category", "channel", "country", "account_age_days",
               "device_change", "velocity_1h", "merchant", "note")
    prompt_version = "3"  # 2: merchant descriptor and customer note added; 3: an empty merchant is left out
    text_columns = ("merchant", "note")  # free text (a note may be empty): TF-IDF in the baselines
    label_words = {0: " no", 1: " yes"}
    hidden_columns = ("pattern",)  # the synthetic fraud type: it names the answer, never a model input
    primary_metric = "roc_auc"
    retention_metrics = ("roc_auc", "average_precision", "recall", "precision", "fpr", "f1")  # + fpr_at_recall_*
    lower_is_better = frozenset({"fpr"})
    chat = False  # a compact raw prompt: its length sets the cost of every training step and decision
    stratify = "label"
    Options = FraudOptions

    def synthesize(self, n: int, seed: int, options: FraudOptions) -> pd.DataFrame:
        return synthesize_transactions(n, seed, options.fraud_rate)

    def load(self, path: Path) -> pd.DataFrame:
        """A table with a `label` column (sdk.tables: labels mapped to 0/1, columns typed, exact duplicates
        dropped); the data stage reads it with the project's `data` table settings instead."""
        from sdk.tables import TableOptions, expected_kinds, load_table

        return load_table(path, TableOptions(), template_columns=self.columns, hidden_columns=self.hidden_columns,
                          label_words=self.label_words, expected=expected_kinds(self, FraudOptions(), 0)).df

    def prepare_train(self, train: pd.DataFrame, seed: int, options: FraudOptions) -> pd.DataFrame:
        return upsample_positives(train, options.train_positive_fraction, seed)

    def prompt(self, row: dict[str, Any]) -> str:
        return transaction_prompt(row)

    def standalone_prompt(self) -> str:
        """Source of a `prompt(row)` that needs only Python (what an on-prem bundle ships; sdk.bundle checks it
        reproduces `prompt` on the run's rows)."""
        import inspect

        return inspect.getsource(transaction_prompt) + "\n\nprompt = transaction_prompt\n"

    def table_prompt(self, row: dict[str, Any], features: list) -> str:
        """The prompt for a user's table (sdk.tables): its columns as 'name: value' pairs, then the question."""
        from sdk.tables import render_features

        return f"{render_features(row, features)}. Fraud?"

    def operating_point(self, options: FraudOptions) -> dict[str, Any]:
        op = options.operating_point
        return {"kind": op.kind, "value": op.value, "description": op.describe(), "metric": op.headline(),
                "constraint_metric": op.constraint()}

    def report_warnings(self, report: dict[str, Any], options: FraudOptions) -> list[str]:
        """An operating point the validation split is too small to hold: fpr <= 2% of 18 legitimate transactions
        allows none to be flagged, and on test the students flagged 11% of them."""
        op, d = options.operating_point, report["data"]
        pool = {"fpr": d["n_val"] - d.get("val_positives", 0), "alert_rate": d["n_val"]}.get(op.kind)
        if pool is None or op.value * pool >= MIN_FLAGGED_AT_POINT:
            return []
        allowed = int(np.floor(op.value * pool + 1e-9))
        who = "legitimate transactions" if op.kind == "fpr" else "transactions"
        return [f"the operating point ({op.describe()}) lets the threshold flag only {allowed} of the {pool} "
                f"validation {who}: a threshold set on so few moves a lot on new data, so the "
                f"{op.constraint()} on test can be several times {op.value:.1%} (compare its column) and recall "
                f"is compared at different real rates; raise data.n_val to at least "
                f"{int(np.ceil(MIN_FLAGGED_AT_POINT / op.value))} {who}."]

    def proportion_counts(self, m: dict[str, Any]) -> dict[str, tuple[int, int]]:
        """(successes, trials) of the metrics that are proportions, from `metrics`' own counts: the report gives
        them Wilson intervals (evaluation/uncertainty.py says why)."""
        if not all(k in m for k in ("n", "positives", "frauds_caught", "alerts_per_1000")):
            return {}
        n, pos, caught = int(m["n"]), int(m["positives"]), int(m["frauds_caught"])
        flagged = int(round(m["alerts_per_1000"] * n / 1000))
        return {"recall": (caught, pos), "precision": (caught, flagged), "fpr": (flagged - caught, n - pos)}

    def choose_threshold(self, y_val: np.ndarray, probs_val: np.ndarray, options: FraudOptions) -> float:
        """The validation threshold for the configured operating point (decision: score >= threshold)."""
        return threshold_for(np.asarray(y_val).astype(int), np.asarray(probs_val)[:, 1], options.operating_point)

    def metrics(self, y_true: np.ndarray, probs: np.ndarray, threshold: float,
                options: FraudOptions) -> dict[str, float]:
        y_true = np.asarray(y_true).astype(int)
        scores = np.asarray(probs)[:, 1]
        pred = scores >= threshold
        tp = int(np.sum(pred & (y_true == 1)))
        fp = int(np.sum(pred & (y_true == 0)))
        fn = int(np.sum(~pred & (y_true == 1)))
        tn = int(np.sum(~pred & (y_true == 0)))
        n = max(len(y_true), 1)
        # computed 1,000 times per artifact by the report's bootstrap: numpy, equal to scikit-learn's
        ranking = (ranking_metrics(y_true, scores, options.target_recall) if 0 < tp + fn < n
                   else {"roc_auc": float("nan"), "average_precision": float("nan"), "fpr_at_recall": 1.0})
        return {
            "roc_auc": ranking["roc_auc"],
            "average_precision": ranking["average_precision"],
            "recall": tp / max(tp + fn, 1),
            "precision": tp / max(tp + fp, 1),
            "fpr": fp / max(fp + tn, 1),
            "f1": 2 * tp / max(2 * tp + fp + fn, 1),
            # the cost view a fraud team reads: alerts and wasted reviews per 1,000 transactions
            "alerts_per_1000": 1000 * (tp + fp) / n,
            "false_alerts_per_1000": 1000 * fp / n,
            "frauds_caught": float(tp),
            # lowest FPR among operating points that reach the target recall
            f"fpr_at_recall_{options.target_recall:g}": ranking["fpr_at_recall"],
            "threshold": float(threshold),
            "positives": float(tp + fn),
            "n": float(len(y_true)),
        }

    def baselines(self, train: pd.DataFrame, seed: int, options: FraudOptions,
                  features: list | None = None) -> dict[str, Any]:
        """What a fraud analyst would run before any LLM: logistic regression and gradient-boosted trees on the
        prompt's own input columns (`features`, sdk.tables.Feature; default: the template's columns), categories
        one-hot, free text through TF-IDF. Fitted estimators with predict_proba over rows of those columns; the
        report compares them at the same operating point."""
        from sdk.tables import classic_models, template_spec

        if features is None:  # the template's own columns, their kinds read from the values
            features = template_spec(self, train).features
        names = [f.name for f in features]
        models = classic_models(features, seed)
        for model in models.values():
            model.fit(train[names], train["label"].astype(int))
        return models

    def plot(self, report: dict[str, Any], details: dict[str, Any], test: pd.DataFrame, out: Path) -> Path:
        from verticals.fraud.plots import plot_report

        scores = {name: np.asarray(d["probs_test"])[:, 1] for name, d in details.items()}
        return plot_report(report, test["label"].to_numpy(), scores, out)

    def preset_path(self, preset: str) -> Path:
        return _HERE / f"{preset}.yaml"


def threshold_for(y: np.ndarray, scores: np.ndarray, op: OperatingPoint) -> float:
    """Threshold t (flag when score >= t) meeting the operating point on (y, scores).

    fpr / alert_rate: the lowest threshold whose flagged share of negatives / of all rows stays within the
    budget (ties at the boundary are left unflagged, so the budget holds); recall: the highest threshold
    that still catches the share of positives; best_f1: the best F1 on the curve.
    """
    if op.kind == "threshold":
        return float(op.value)
    if op.kind == "best_f1":
        precision, recall, thresholds = precision_recall_curve(y, scores)
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        return float(thresholds[int(np.argmax(f1[:-1]))])
    if op.kind == "recall":
        pos = np.sort(scores[y == 1])[::-1]
        if len(pos) == 0:
            return 0.5
        need = int(np.ceil(op.value * len(pos) - 1e-9))
        return float(pos[max(need, 1) - 1])
    pool = np.sort(scores[y == 0] if op.kind == "fpr" else scores)[::-1]
    allowed = int(np.floor(op.value * len(pool) + 1e-9))  # rows that may be flagged
    if len(pool) == 0:  # no negative to keep within the budget (a validation split of positives only)
        return float(np.min(scores)) if len(scores) else 0.5
    if allowed >= len(pool):
        return float(pool[-1])
    # everything strictly above the (allowed+1)-th highest score is flagged
    return float(np.nextafter(pool[allowed], np.inf))


def transaction_prompt(row: dict) -> str:
    """The fraud prompt of one transaction (standard library only: it is shipped in bundles as it is). Values
    may come as text (CSV, JSON): a value that is not what its column holds is named, never guessed, and so is
    one outside its column's range (hour 99 would be rendered as "99h" and scored as if it meant something). A
    negative amount (a refund) is written -$25. Counts (hour, account age, velocity) are whole numbers (2.7
    transactions an hour was read as 2); categories are text; the merchant descriptor may be empty (left out)."""

    def number(column, low=0.0, high=None, whole=False, what="0 or more"):
        try:
            if isinstance(row[column], bool):  # float(True) is 1.0: a flag is not an amount or a count
                raise ValueError
            value = float(row[column])
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError
        except (TypeError, ValueError):
            raise ValueError(f"column {column!r}: {row[column]!r} is not a number") from None
        if value < low or (high is not None and value > high) or (whole and value != int(value)):
            raise ValueError(f"column {column!r}: {row[column]!r} is out of range (allowed: {what})")
        return value

    flag = row["device_change"]
    if isinstance(flag, str):  # "false" is a true value to bool(): read the words instead
        flag = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(
            flag.strip().lower(), flag)
    if flag is None or isinstance(flag, str) or not (flag == 0 or flag == 1):
        raise ValueError(f"column 'device_change': {row['device_change']!r} is not true or false")
    device = "new device" if flag else "same device"
    note = row.get("note")
    note = f' Note: "{note}".' if isinstance(note, str) and note.strip() else ""
    amount = number("amount", low=-1e9, high=1e9, what="a sum between -$1e9 and $1e9")
    dollars = f"{abs(amount):.0f}"  # rounded first, so -0.4 (and -0.0) is $0, never -$0
    money = f"-${dollars}" if amount < 0 and dollars != "0" else f"${dollars}"
    hour = int(number("hour", 0, 23, whole=True, what="a whole hour of the day, 0 to 23"))
    age = int(number("account_age_days", whole=True, what="a whole number of days, 0 or more"))
    velocity = int(number("velocity_1h", whole=True, what="a whole number of transactions, 0 or more"))
    for column in ("merchant_category", "channel", "country"):
        if not isinstance(row[column], str) or not row[column].strip():
            raise ValueError(f"column {column!r}: {row[column]!r} is not a category name (text)")
    merchant = row.get("merchant")
    missing = merchant is None or type(merchant).__name__ in ("NAType", "NaTType") or (
        isinstance(merchant, float) and merchant != merchant)  # NaN: a CSV's empty cell; pd.NA: a string column's
    if not missing and not isinstance(merchant, str):
        raise ValueError(f"column 'merchant': {merchant!r} is not text")
    merchant = f", {merchant}" if isinstance(merchant, str) and merchant.strip() else ""
    return (f"{money} {row['merchant_category']} {row['channel'].replace('in_store', 'store')} "
            f"{hour:02d}h {row['country']}, account {age}d, {device}, {velocity} tx/h{merchant}.{note} Fraud?")
