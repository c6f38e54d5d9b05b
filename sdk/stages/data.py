"""data: the template's synthesizer or the user's file -> splits; prompts rendered and tokenised once.

Writes data/{train,val,test}.parquet, data/prompts.json (token ids per split), data/task.json (shape,
label token ids, end-of-turn ids for this tokenizer) and, for table templates, data/table.json (the model's
input columns and their kinds, how labels were read, duplicates and leakage removed, each split's time range).

A table template's own file (`data.path`) goes through `sdk.tables`: labels mapped to 0/1, columns typed,
exact duplicates dropped, a time-ordered split when `data.time_column` is set, and validation/test rows
identical to an earlier split in every input column removed. Synthesized data keeps the plain split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdk.errors import DistillError
from sdk.rundir import RunDir, atomic_write_text, replace_dir
from sdk.stages import Context

# Table settings added after runs were made: at their defaults they are left out of the input hash, so a
# run made before them keeps its finished stages.
_TABLE_DEFAULTS = {"label_column": "label", "positive_label": None, "time_column": None, "id_column": None,
                   "columns": None, "drop_columns": [], "max_prompt_columns": 16}


def inputs(ctx: Context) -> Any:
    from sdk.models import fingerprint
    from sdk.teachers import base_model_spec

    c = ctx.config.model_dump(mode="json")
    data = {k: v for k, v in c["data"].items() if k not in _TABLE_DEFAULTS or v != _TABLE_DEFAULTS[k]}
    return [c["template"], c["seed"], c["template_options"], data, fingerprint(c["data"]["path"]),
            base_model_spec(ctx.config), fingerprint(base_model_spec(ctx.config)),  # the run's tokenizer
            SPLIT_VERSION]


SPLIT_VERSION = 2  # what the split does (2: identical model inputs kept once); a new version makes new splits


def outputs(run: RunDir) -> list[Path]:
    return [run.path("data", f) for f in ("train.parquet", "val.parquet", "test.parquet", "prompts.json", "texts.json",
                                          "task.json")]


@dataclass
class Prepared:
    """The splits before `prepare_train`, where they came from, and (table templates) the table's spec."""

    parts: dict[str, Any]
    source: str
    spec: Any = None  # sdk.tables.TableSpec for table templates
    info: dict[str, Any] = field(default_factory=dict)  # rows_read, duplicates_removed, leakage_removed, splits


def load_data(config, template, options):
    """(rows, source, sdk.tables.Table or None): the user's file or the template's synthesized rows."""
    from sdk.data import check_columns
    from sdk.tables import TableOptions, expected_kinds, is_tabular, load_table

    d, t = config.data, template
    if d.path is not None and is_tabular(t):
        table = load_table(Path(d.path), TableOptions.of(d), template_columns=t.columns,
                           hidden_columns=getattr(t, "hidden_columns", ()), label_words=t.label_words,
                           expected=expected_kinds(t, options, config.seed))
        return table.df, str(d.path), table
    if d.path is not None:
        df, source = t.load(Path(d.path)), str(d.path)
    else:
        wanted = d.n_train + d.n_val + d.n_test
        df = t.synthesize(wanted, config.seed, options)
        for _ in range(3):  # repeated rows are dropped before the split: synthesize that many more
            short = wanted - len(unique_inputs(df, t))
            if short <= 0:
                break
            df = t.synthesize(wanted + 2 * short, config.seed, options)
        source = f"synthesized by template {t.name!r}"
    check_columns(df, t.columns, source)
    return df, source, None


def split_data(config, template, df, source: str, table=None) -> Prepared:
    """The splits: a user table's time-ordered or stratified split with leakage removed; else sdk.data.split."""
    from sdk.data import split
    from sdk.tables import is_tabular, remove_leakage, split_summary, split_table, template_spec

    d, t = config.data, template
    if table is not None:
        parts = split_table(df, d.n_train, d.n_val, d.n_test, config.seed, source, d.time_column)
        parts, leaked = remove_leakage(parts, table.spec.names)
        for name in ("val", "test"):
            if t.task == "decision" and parts[name]["label"].nunique() < 2:
                raise DistillError(f"dataset {source}: the {name} split has only one label once {leaked[name]} rows "
                                   "identical to earlier splits were removed; use more data")
        info = {"rows_read": table.rows_read, "duplicates_removed": table.duplicates_removed,
                "leakage_removed": leaked, "time_column": d.time_column}
        spec = table.spec
    else:
        # rows with identical prompts are kept once (the first): a test row identical to a training row
        # measures memory, not skill (the education synthesizer repeats about 3% of its triples, which put 36 of
        # 1,000 test rows in training before 2026-12-03), and a repeated row weighs twice in training
        # a template's loader that drops repeats itself (education: to warn about conflicting labels) says how
        # many records it read in df.attrs["records_read"]
        rows_read = int(df.attrs.get("records_read", len(df)))
        df = unique_inputs(df, t)
        stratify = t.stratify if t.stratify in df.columns else None
        parts = split(df, d.n_train, d.n_val, d.n_test, config.seed, source, stratify=stratify)
        info = {"rows_read": rows_read, "duplicates_removed": rows_read - len(df),
                "leakage_removed": {"val": 0, "test": 0}}  # no repeated prompt is left to leak
        if df.attrs.get("label_conflicts"):  # repeats whose label differed from the kept one's (the loader's count)
            info["label_conflicts"] = int(df.attrs["label_conflicts"])
        spec = template_spec(t, df) if is_tabular(t) else None
    info["splits"] = split_summary(parts, d.time_column if table is not None else None)
    return Prepared(parts, source, spec, info)


def unique_inputs(df, template):
    """The rows whose prompt (the model's whole input) differs from every earlier row's: columns alone miss
    repeats that differ only in an id (the code template's task_id)."""
    import pandas as pd

    prompts = pd.Series([template.prompt(row) for row in df.to_dict("records")], index=df.index)
    return df.loc[~prompts.duplicated(keep="first")].reset_index(drop=True)


def prepare(config, template, options) -> Prepared:
    df, source, table = load_data(config, template, options)
    return split_data(config, template, df, source, table)


def table_spec(run: RunDir):
    """The run's sdk.tables.TableSpec (data/table.json), or None (a generation template, or a run made
    before the file existed: the template's own columns)."""
    from sdk.tables import TableSpec

    path = run.path("data", "table.json")
    return TableSpec.from_dict(run.read_json("data/table.json")["spec"]) if path.is_file() else None


def describe(p: Prepared) -> str:
    """One line for the manifest: rows per split (positives, time range), duplicates and leakage removed."""
    bits = []
    for name, s in p.info["splits"].items():
        b = f"{name} {s['rows']}" + (f" ({s['positives']} pos)" if "positives" in s else "")
        if "label_counts" in s:
            b += f" ({', '.join(f'{w} {n}' for w, n in s['label_counts'].items())})"
        if "time_range" in s:
            b += f" [{s['time_range'][0]} .. {s['time_range'][1]}]"
        bits.append(b)
    if "duplicates_removed" in p.info:
        leaked = p.info["leakage_removed"]
        bits.append(f"{p.info['duplicates_removed']} exact duplicates and {leaked['val'] + leaked['test']} leaked "
                    f"val/test rows removed")
    return f"{p.source}; " + ", ".join(bits)


def run(ctx: Context) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from sdk.data import label_token_ids, tokenize_prompts
    from sdk.models import resolve_model
    from sdk.tables import prompt_function
    from sdk.teachers import base_model_spec, trust_remote_code

    c, t = ctx.config, ctx.template
    p = prepare(c, t, ctx.options)
    parts = dict(p.parts)
    parts["train"] = t.prepare_train(parts["train"], c.seed, ctx.options)

    # the run's tokenizer: the local model the student comes from (the teacher's, for a local teacher)
    tok = AutoTokenizer.from_pretrained(resolve_model(base_model_spec(c)), trust_remote_code=trust_remote_code(c))
    prompt = prompt_function(t, p.spec)
    texts = {name: [prompt(r) for r in part.to_dict("records")] for name, part in parts.items()}
    prompts = {name: tokenize_prompts(tok, split_texts, t.chat) for name, split_texts in texts.items()}
    task: dict[str, Any] = {"task": t.task, "chat": bool(t.chat and getattr(tok, "chat_template", None)),
                            "eos_ids": sorted({i for i in [tok.eos_token_id] if i is not None})}
    if t.task == "decision":
        task["label_words"] = {str(k): v for k, v in t.label_words.items()}
        task["label_ids"] = label_token_ids(tok, t.label_words, t.name)
    tmp = ctx.run.tmp_dir("data")
    for name, part in parts.items():
        part.to_parquet(tmp / f"{name}.parquet", index=False)
    atomic_write_text(tmp / "prompts.json", json.dumps(prompts))
    atomic_write_text(tmp / "texts.json", json.dumps(texts))
    atomic_write_text(tmp / "task.json", json.dumps(task, indent=2))
    if p.spec is not None:
        atomic_write_text(tmp / "table.json", json.dumps({"spec": p.spec.to_dict(), **p.info}, indent=2, default=str))
    replace_dir(tmp, ctx.run.path("data"))
    lengths = [len(x) for x in prompts["train"]]
    if not lengths:
        raise DistillError(f"dataset {p.source}: the training split is empty")
    words = getattr(ctx.template, "label_words", {}) or {}

    def labels(part) -> dict[str, Any]:  # grades are counted per grade ("39 pos" of three grades said little)
        if "label" not in part:
            return {}
        if len(words) > 2:
            return {"label_counts": {words[k].strip(): int((part["label"] == k).sum()) for k in sorted(words)}}
        return {"positives": int((part["label"] > 0).sum())}

    counts = {n: {"rows": len(part), **labels(part),
                  **({"time_range": p.info["splits"][n]["time_range"]} if "time_range" in p.info["splits"][n] else {})}
              for n, part in parts.items()}
    out = {"note": describe(Prepared({**p.parts, "train": parts["train"]}, p.source, p.spec,
                                     {**p.info, "splits": counts}))
                   + f"; prompt tokens mean {sum(lengths) / len(lengths):.0f}, max {max(lengths)}",
           "counts": counts}
    if "duplicates_removed" in p.info:
        out.update(duplicates_removed=p.info["duplicates_removed"], leakage_removed=p.info["leakage_removed"])
    if p.info.get("label_conflicts"):
        out["label_conflicts"] = p.info["label_conflicts"]
    return out
