"""Datasets, shape-agnostic: check columns, split; render and tokenise prompts. (A user's own table is read
by `sdk.tables`.)"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from sdk.errors import DistillError


def check_columns(df: pd.DataFrame, columns: Sequence[str], source: str) -> None:
    if len(df) == 0:
        raise DistillError(f"dataset {source} is empty")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DistillError(f"dataset {source} lacks column(s) {missing}", field=missing[0])


def split(df: pd.DataFrame, n_train: int, n_val: int, n_test: int, seed: int, source: str,
          stratify: str | None = None) -> dict[str, pd.DataFrame]:
    """Split into exactly n_val and n_test rows (stratified on a column when given); train gets up to
    n_train of the rest."""
    from sklearn.model_selection import train_test_split

    if len(df) < n_val + n_test + 2:
        raise DistillError(f"dataset {source} has {len(df)} rows; data.n_val + data.n_test need {n_val + n_test} "
                           "plus training rows")
    try:
        rest, test = train_test_split(df, test_size=n_test, random_state=seed,
                                      stratify=df[stratify] if stratify else None)
        train, val = train_test_split(rest, test_size=n_val, random_state=seed + 1,
                                      stratify=rest[stratify] if stratify else None)
    except ValueError as err:  # e.g. a label with a single row
        raise DistillError(f"dataset {source}: cannot make a stratified split: {err}") from None
    train = train.iloc[:n_train]
    if "label" in df.columns:  # decisions, stratified or not: thresholds, ROC-AUC and recall need both kinds
        for name, part in (("train", train), ("val", val), ("test", test)):
            if part["label"].nunique() < 2:
                use = {"train": "the student learns", "val": "thresholds are chosen",
                       "test": "the report is measured"}[name]
                label = part["label"].iloc[0]
                label = label.item() if hasattr(label, "item") else label  # 0, not np.int64(0)
                raise DistillError(f"dataset {source}: all {len(part)} rows of the {name} split have label {label!r} "
                                   f"({use} on it, and needs rows of more than one label); raise data.n_{name} or "
                                   "give data with more rows of the rarer label")
    return {"train": train.reset_index(drop=True), "val": val.reset_index(drop=True),
            "test": test.reset_index(drop=True)}


def render_prompt(tokenizer, text: str, chat: bool) -> str:
    """The exact text a model sees: a chat template's user turn + generation prompt, or the raw text."""
    if chat and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
    return text


def tokenize_prompts(tokenizer, prompts: list[str], chat: bool = False) -> list[list[int]]:
    texts = [render_prompt(tokenizer, p, chat) for p in prompts]
    # a rendered chat template already holds its special tokens
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=not chat)["input_ids"]]


def label_token_ids(tokenizer, label_words: dict[int, str], template: str) -> list[int]:
    """[id of the label-0 word, id of the label-1 word, ...]; each word must be exactly one token."""
    ids = []
    for label in range(len(label_words)):
        toks = tokenizer.encode(label_words[label], add_special_tokens=False)
        if len(toks) != 1:
            raise DistillError(f"template {template!r}: label word {label_words[label]!r} is {len(toks)} tokens "
                               "for this tokenizer; label words must be single tokens")
        ids.append(toks[0])
    return ids
