"""Seeded card-transaction synthesizer with several fraud patterns.

Each fraud pattern shows only some of its signals, and some legitimate transactions show the same
signals (travellers, new phones, small online purchases), so the classes overlap the way real
transaction data does and a model has to weigh the features together. Part of the signal is in free text
only (the merchant descriptor and the customer's note, see verticals.fraud.text).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from verticals.fraud.text import customer_note, merchant_descriptor

CATEGORIES = ["grocery", "restaurant", "fuel", "pharmacy", "online_retail", "electronics", "travel",
              "gift_cards"]
LEGIT_CATEGORY_P = [0.28, 0.2, 0.14, 0.08, 0.16, 0.06, 0.05, 0.03]
HOME = "US"
FOREIGN = ["GB", "DE", "FR", "MX", "BR", "NG", "RU", "CN", "IN", "RO"]
PATTERNS = ("card_testing", "account_takeover", "new_account", "skimming", "scam_victim")


def _legit(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    category = rng.choice(CATEGORIES, size=n, p=LEGIT_CATEGORY_P)
    channel = np.where(np.isin(category, ["online_retail", "gift_cards"]), "online",
                       rng.choice(["in_store", "online", "atm"], size=n, p=[0.75, 0.18, 0.07]))
    travelling = rng.random(n) < 0.06
    return {
        "amount": np.round(np.exp(rng.normal(3.4, 1.0, n)), 2),
        "hour": np.clip(np.round(rng.normal(14, 4, n)), 0, 23).astype(int),
        "merchant_category": category,
        "channel": channel,
        "country": np.where(travelling, rng.choice(FOREIGN, size=n), HOME),
        "account_age_days": np.round(np.exp(rng.uniform(np.log(3), np.log(4000), n))).astype(int),
        "device_change": rng.random(n) < np.where(travelling, 0.25, 0.05),
        "velocity_1h": rng.poisson(0.7, n),
    }


def _fraud(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    rows = _legit(rng, n)  # start from ordinary behaviour, then overwrite a pattern's signals
    pattern = rng.choice(PATTERNS, size=n, p=[0.25, 0.25, 0.15, 0.15, 0.2])
    for i, p in enumerate(pattern):
        show = rng.random(4) < 0.75  # each signal of the pattern shows with probability 0.75
        if p == "card_testing":
            if show[0]:
                rows["amount"][i] = round(float(rng.uniform(0.5, 6)), 2)
            if show[1]:
                rows["velocity_1h"][i] = int(rng.integers(4, 15))
            rows["channel"][i] = "online"
            rows["merchant_category"][i] = rng.choice(["online_retail", "gift_cards", "electronics"])
        elif p == "account_takeover":
            if show[0]:
                rows["device_change"][i] = True
            if show[1]:
                rows["country"][i] = rng.choice(FOREIGN)
            if show[2]:
                rows["amount"][i] = round(float(np.exp(rng.uniform(np.log(250), np.log(3000)))), 2)
            if show[3]:
                rows["hour"][i] = int(rng.integers(0, 6))
            rows["merchant_category"][i] = rng.choice(["electronics", "travel", "gift_cards"])
        elif p == "new_account":
            if show[0]:
                rows["account_age_days"][i] = int(rng.integers(0, 15))
            if show[1]:
                rows["amount"][i] = round(float(np.exp(rng.uniform(np.log(200), np.log(2500)))), 2)
            rows["merchant_category"][i] = rng.choice(["gift_cards", "electronics"])
        elif p == "scam_victim":  # the customer pays a scammer: own device, at home, in daylight; the
            # numbers look ordinary, the merchant and the customer's note tell the story (verticals.fraud.text)
            if show[0]:
                rows["amount"][i] = round(float(np.exp(rng.uniform(np.log(150), np.log(4000)))), 2)
            rows["merchant_category"][i] = rng.choice(["gift_cards", "online_retail", "electronics", "travel"])
        else:  # skimming: cash out at ATMs abroad at night
            rows["channel"][i] = "atm"
            if show[0]:
                rows["country"][i] = rng.choice(FOREIGN)
            if show[1]:
                rows["hour"][i] = int(rng.integers(0, 5))
            if show[2]:
                rows["amount"][i] = float(rng.choice([200, 300, 400, 500, 600, 800]))
    rows["pattern"] = pattern
    return rows


def synthesize_transactions(n: int, seed: int, fraud_rate: float = 0.05) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n_fraud = int(rng.binomial(n, fraud_rate))
    legit = pd.DataFrame(_legit(rng, n - n_fraud)).assign(pattern="none", label=0)
    fraud = pd.DataFrame(_fraud(rng, n_fraud)).assign(label=1)
    df = pd.concat([legit, fraud], ignore_index=True)
    df = df.sample(frac=1.0, random_state=int(rng.integers(2**31))).reset_index(drop=True)
    df["device_change"] = df["device_change"].astype(bool)
    # free text from its own random stream: editing the phrase banks leaves a seed's tabular columns unchanged
    text_rng = np.random.default_rng([seed, 1])
    rows = df[["merchant_category", "channel", "country", "pattern"]].itertuples(index=False)
    df["merchant"] = [merchant_descriptor(text_rng, *r) for r in rows]
    df["note"] = [customer_note(text_rng, p) for p in df["pattern"]]
    df["label"] = df["label"].astype(int)
    return df
