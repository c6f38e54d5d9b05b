"""A user's own fraud table for tests: mixed column types, missing values, a timestamp column, free text, an
id, a constant column and yes/no labels, with real signal (amount, card present, night hours, the note)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def mixed_table(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    minutes = np.sort(rng.integers(0, 60 * 24 * 90, n))
    when = pd.Timestamp("2024-01-01") + pd.to_timedelta(minutes, unit="min")
    amount = np.round(np.exp(rng.normal(3.5, 1.0, n)), 2)
    present = rng.random(n) < 0.6
    merchant = rng.choice(["grocery", "fuel", "online shop", "travel", "electronics"], n)
    night = np.asarray(when.hour < 6)
    risk = 1.2 * (np.log(amount) - 3.5) - 1.5 * present + 1.0 * (merchant == "electronics") + 1.0 * night
    fraud = rng.random(n) < 1 / (1 + np.exp(-(risk - 1.5)))
    notes = np.array(["paid at the counter with chip and pin", "monthly subscription renewed as usual",
                      "shipped abroad to a new address today", "gift cards bought in a hurry online"])
    note = np.where(fraud, rng.choice(notes[2:], n), rng.choice(notes[:2], n))
    df = pd.DataFrame({
        "tx_id": [f"tx{i:05d}" for i in range(n)],
        "when": [t.isoformat() for t in when],
        "amount": amount,
        "merchant": merchant,
        "card_present": np.where(present, "yes", "no"),
        "note": note,
        "score": np.round(rng.normal(0, 1, n), 4),
        "currency": "EUR",
        "is_fraud": np.where(fraud, "yes", "no"),
    })
    df.loc[[3, n // 2], "amount"] = np.nan  # missing values are allowed in a user's table
    df.loc[[5, n - 3], "merchant"] = None
    return df


def write(df: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)
    return path


# the table settings that read mixed_table
SETTINGS = {"label_column": "is_fraud", "time_column": "when", "id_column": "tx_id"}
