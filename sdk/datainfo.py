"""`distill data <project.yaml>`: what the data stage would make of a project's data, in seconds and without
loading model weights: split sizes, label balance, duplicates and leakage removed, each split's time range,
the model's input columns, prompt length in the teacher's tokens and an example prompt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from sdk.errors import DistillError


def summarize(project_yaml: Path) -> dict[str, Any]:
    """The facts `distill data` prints, as plain values (raises DistillError naming the problem)."""
    from sdk import config as cfgmod
    from sdk.registry import get_template
    from sdk.stages.data import prepare
    from sdk.preflight import table_settings_problem
    from sdk.tables import is_tabular, prompt_function

    cfg = cfgmod.load_config(project_yaml)
    options = cfgmod.template_options(cfg, str(project_yaml))
    t = get_template(cfg.template, options)
    if cfg.data.path is not None and not is_tabular(t):
        misplaced = table_settings_problem(cfg.data, t)
        if misplaced:  # the data stage would read the file without them: said, not silently ignored
            raise DistillError(misplaced)
    p = prepare(cfg, t, options)
    out: dict[str, Any] = {"source": p.source, "template": t.name, **p.info,
                           "time_column": cfg.data.time_column if cfg.data.path is not None else None}
    train = p.parts["train"]
    out["stratify"] = t.stratify if t.stratify in train.columns else None
    if t.task == "decision" and len(t.label_words) > 2 and "label" in train:  # graded: a count per grade, not
        words = {k: w.strip() for k, w in t.label_words.items()}  # "positives"
        out["label_counts"] = {name: {words[k]: int((part["label"] == k).sum()) for k in sorted(words)}
                               for name, part in p.parts.items()}
    prompt = prompt_function(t, p.spec)
    if p.spec is not None:
        out["spec"] = p.spec.to_dict()
        test = p.parts["test"]
        out["example_prompt"] = prompt(test.iloc[0].to_dict()) if len(test) else None
    out["prompt_tokens"] = _prompt_tokens(cfg, t, [prompt(r) for r in p.parts["train"].to_dict("records")])
    if t.task == "decision":
        after = t.prepare_train(p.parts["train"], cfg.seed, options)
        if len(after) != len(p.parts["train"]):
            out["train_after_prepare"] = {"rows": len(after), "positives": int((after["label"] > 0).sum())}
    return out


def _prompt_tokens(cfg, template, prompts: list[str]) -> dict[str, Any] | None:
    """Mean and longest prompt of the training split in the teacher's tokens (the cost of every training
    step and decision); None when the tokenizer cannot be loaded (`distill check` says why)."""
    from sdk.data import tokenize_prompts
    from sdk.preflight import teacher_tokenizer

    tok = teacher_tokenizer(cfg)
    if tok is None or not prompts:
        return None
    lengths = [len(ids) for ids in tokenize_prompts(tok, prompts, template.chat)]
    return {"mean": sum(lengths) / len(lengths), "max": max(lengths)}


def format_summary(s: dict[str, Any]) -> list[str]:
    lines = [f"data: {s['source']}"]
    if "duplicates_removed" in s:
        lines[0] += f" ({s['rows_read']:,} rows read, {s['duplicates_removed']:,} exact duplicates removed)"
    spec = s.get("spec")
    if spec and spec.get("labels"):
        lines.append(f"label: column {spec['label_column']!r} (" + ", ".join(
            f"{v!r} -> {k}" for v, k in sorted(spec["labels"].items(), key=lambda kv: kv[1])) + ")")
    if s.get("time_column"):
        lines.append(f"split: time-ordered by {s['time_column']!r}: train on the past, test on the future")
    elif s.get("stratify"):
        lines.append(f"split: random, stratified on {'the label' if s['stratify'] == 'label' else repr(s['stratify'])}")
    else:
        lines.append("split: random")
    counts = s.get("label_counts")
    has_positives = any("positives" in v for v in s["splits"].values())
    head = ["split", "rows"] + (list(next(iter(counts.values()))) if counts else
                                ["positives", "share"] if has_positives else [])
    times = ["from", "to"] if s.get("time_column") else []
    rows = [head + times]
    for name, v in s["splits"].items():
        row = [name, f"{v['rows']:,}"]
        if counts:  # one column per grade: "n (share)"
            row += [f"{n:,} ({n / v['rows']:.0%})" if v["rows"] else "0" for n in counts[name].values()]
        elif has_positives:
            pos = v.get("positives")
            row += ["-" if pos is None else f"{pos:,}", "-" if pos is None or not v["rows"] else f"{pos / v['rows']:.1%}"]
        rows.append(row + (list(v.get("time_range", ["-", "-"])) if times else []))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    left = {0, len(head), len(head) + 1}  # names and times read left to right; counts line up on the right
    lines += [("  " + "  ".join(c.ljust(w) if i in left else c.rjust(w)
                                for i, (c, w) in enumerate(zip(r, widths)))).rstrip() for r in rows]
    if "train_after_prepare" in s:
        a = s["train_after_prepare"]
        lines.append(f"  (training sees {a['rows']:,} rows, {a['positives']:,} positive, after the template's "
                     "upsampling)")
    if "leakage_removed" in s:
        leak = s["leakage_removed"]
        lines.append(f"leakage: {leak['val']} validation and {leak['test']} test rows identical in every input column "
                     "to an earlier split (removed)")
    if spec:
        how = "the template's own prompt" if spec["mode"] == "template" else "rendered from your columns"
        lines.append(f"input columns ({len(spec['features'])}, {how}): "
                     + ", ".join(f"{f['name']} ({f['kind']})" for f in spec["features"]))
        for col, why in spec["ignored"].items():
            lines.append(f"  not an input: {col}: {why}")
    if s.get("prompt_tokens"):
        lines.append(f"prompt tokens (teacher's tokenizer, training split): mean {s['prompt_tokens']['mean']:.0f}, "
                     f"max {s['prompt_tokens']['max']}")
    if s.get("example_prompt"):
        lines.append(f"example prompt (first test row, {len(s['example_prompt'])} characters): {s['example_prompt']}")
    return lines


def data_command(project_yaml: Path) -> None:
    """Show what the data stage makes of a project's data: split sizes, label balance, duplicates and leakage
    removed, time range per split, input columns, prompt tokens, an example prompt (no weights loaded)."""
    from sdk.tables import TableProblems

    try:
        summary = summarize(project_yaml)
    except TableProblems as err:
        from sdk.preflight import format_problems

        typer.echo(f"error: {format_problems(err.problems, str(project_yaml))}", err=True)
        raise typer.Exit(2)
    except DistillError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2)
    for line in format_summary(summary):
        typer.echo(line)
