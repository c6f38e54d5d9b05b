"""Datasets: synthesize or import, validate, split, upsample; tokenise prompts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sdk.errors import DistillError


def read_table(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DistillError(f"data.path: file {path} does not exist")
    try:
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as err:  # pandas raises many kinds; all mean "unreadable"
        raise DistillError(f"data.path: cannot read {path}: {err}") from None
    check_dataset(df, columns, str(path))
    return df


def check_dataset(df: pd.DataFrame, columns: tuple[str, ...], source: str) -> None:
    if len(df) == 0:
        raise DistillError(f"dataset {source} is empty")
    missing = [c for c in (*columns, "label") if c not in df.columns]
    if missing:
        raise DistillError(f"dataset {source} lacks column(s) {missing}")
    labels = set(pd.unique(df["label"]))
    if not labels <= {0, 1}:
        raise DistillError(f"dataset {source}: column 'label' must hold 0/1, found {sorted(labels)[:5]}")
    if labels != {0, 1}:
        raise DistillError(f"dataset {source}: needs both labels 0 and 1, found only {sorted(labels)}")


def split(df: pd.DataFrame, n_train: int, n_val: int, n_test: int, seed: int, source: str) -> dict[str, pd.DataFrame]:
    """Stratified split into exactly n_val and n_test rows, train gets up to n_train of the rest."""
    from sklearn.model_selection import train_test_split

    if len(df) < n_val + n_test + 2:
        raise DistillError(f"dataset {source} has {len(df)} rows; data.n_val + data.n_test need {n_val + n_test} "
                           "plus training rows")
    try:
        rest, test = train_test_split(df, test_size=n_test, random_state=seed, stratify=df["label"])
        train, val = train_test_split(rest, test_size=n_val, random_state=seed + 1, stratify=rest["label"])
    except ValueError as err:  # e.g. a label with a single row
        raise DistillError(f"dataset {source}: cannot make a stratified split: {err}") from None
    train = train.iloc[:n_train]
    for name, part in (("train", train), ("val", val), ("test", test)):
        if part["label"].nunique() < 2:
            raise DistillError(f"dataset {source}: the {name} split has only one label; use more data")
    return {"train": train.reset_index(drop=True), "val": val.reset_index(drop=True),
            "test": test.reset_index(drop=True)}


def upsample_positives(df: pd.DataFrame, fraction: float | None, seed: int) -> pd.DataFrame:
    """Repeat positive rows until they make up `fraction` of the split (train only)."""
    pos = df[df["label"] == 1]
    if fraction is None or len(pos) == 0 or len(pos) / len(df) >= fraction:
        return df
    n_neg = int((df["label"] == 0).sum())
    want = int(round(fraction * n_neg / (1 - fraction)))
    extra = pos.sample(n=want - len(pos), replace=True, random_state=seed)
    return pd.concat([df, extra]).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def tokenize_prompts(tokenizer, prompts: list[str]) -> list[list[int]]:
    return [list(ids) for ids in tokenizer(prompts, add_special_tokens=True)["input_ids"]]


def label_token_ids(tokenizer, label_words: dict[int, str], template: str) -> list[int]:
    """[id of the label-0 word, id of the label-1 word]; each word must be exactly one token."""
    ids = []
    for label in (0, 1):
        toks = tokenizer.encode(label_words[label], add_special_tokens=False)
        if len(toks) != 1:
            raise DistillError(f"template {template!r}: label word {label_words[label]!r} is {len(toks)} tokens "
                               "for this tokenizer; label words must be single tokens")
        ids.append(toks[0])
    return ids
