"""data: the template's synthesizer or the user's file -> splits; prompts rendered and tokenised once.

Writes data/{train,val,test}.parquet, data/prompts.json (token ids per split) and data/task.json
(shape, label token ids, end-of-turn ids for this tokenizer).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sdk.errors import DistillError
from sdk.rundir import RunDir, atomic_write_text, replace_dir
from sdk.stages import Context


def inputs(ctx: Context) -> Any:
    from sdk.models import fingerprint
    from sdk.teachers import base_model_spec

    c = ctx.config.model_dump(mode="json")
    return [c["template"], c["seed"], c["template_options"], c["data"], fingerprint(c["data"]["path"]),
            base_model_spec(ctx.config), fingerprint(base_model_spec(ctx.config))]  # the run's tokenizer


def outputs(run: RunDir) -> list[Path]:
    return [run.path("data", f) for f in ("train.parquet", "val.parquet", "test.parquet", "prompts.json", "texts.json",
                                          "task.json")]


def run(ctx: Context) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from sdk.data import check_columns, label_token_ids, split, tokenize_prompts
    from sdk.models import resolve_model
    from sdk.teachers import base_model_spec, trust_remote_code

    c, t = ctx.config, ctx.template
    d = c.data
    if d.path is not None:
        df, source = t.load(Path(d.path)), str(d.path)
    else:
        df = t.synthesize(d.n_train + d.n_val + d.n_test, c.seed, ctx.options)
        source = f"synthesized by template {t.name!r}"
    check_columns(df, t.columns, source)
    stratify = t.stratify if t.stratify in df.columns else None
    parts = split(df, d.n_train, d.n_val, d.n_test, c.seed, source, stratify=stratify)
    parts["train"] = t.prepare_train(parts["train"], c.seed, ctx.options)

    # the run's tokenizer: the local model the student comes from (the teacher's, for a local teacher)
    tok = AutoTokenizer.from_pretrained(resolve_model(base_model_spec(c)), trust_remote_code=trust_remote_code(c))
    texts = {name: [t.prompt(r) for r in part.to_dict("records")] for name, part in parts.items()}
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
    replace_dir(tmp, ctx.run.path("data"))
    lengths = [len(p) for p in prompts["train"]]
    counts = {n: {"rows": len(p), **({"positives": int((p["label"] > 0).sum())} if "label" in p else {})}
              for n, p in parts.items()}
    if not lengths:
        raise DistillError(f"dataset {source}: the training split is empty")
    return {"note": f"{source}; " + ", ".join(f"{n} {v['rows']}" + (f" ({v['positives']} pos)" if "positives" in v else "")
                                              for n, v in counts.items())
                    + f"; prompt tokens mean {sum(lengths) / len(lengths):.0f}, max {max(lengths)}",
            "counts": counts}
