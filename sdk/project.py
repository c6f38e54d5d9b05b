"""Project: the one file that knows the order of the stages.

    data -> adapt (teacher) -> annotate -> distill -> export -> evaluate -> report

Each stage reads and writes one run folder, records its input hash and timing in the manifest, and is
skipped on re-run when its outputs exist and its inputs' hash matches. Stages unpack the config into
plain arguments for the core functions.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sdk import config as cfgmod
from sdk.config import ProjectConfig
from sdk.errors import DistillError
from sdk.rundir import RunDir, atomic_write_text, replace_dir, stable_hash, versions

STAGES = ("data", "adapt", "annotate", "distill", "export", "evaluate", "report")


@dataclass
class RunResult:
    run_dir: Path
    report: dict[str, Any]
    report_paths: dict[str, Path]


class Project:
    def __init__(self, config: ProjectConfig):
        from sdk.registry import get_template

        self.config = config
        self.template = get_template(config.template)

    # ---- construction
    @classmethod
    def from_template(cls, name: str, preset: str = "default", **overrides: Any) -> "Project":
        """The template's shipped preset, with nested overrides, e.g. data={"n_test": 2000}."""
        from sdk.registry import get_template

        template = get_template(name)
        path = template.preset_path(preset)
        if not path.is_file():
            raise DistillError(f"template {name!r} has no preset {preset!r} ({path} missing)")
        data = cfgmod.deep_merge(cfgmod.load_yaml(path), overrides)
        return cls(cfgmod.validate_config(data, source=f"{name}/{preset} preset + overrides"))

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Project":
        return cls(cfgmod.load_config(path))

    def to_yaml(self, path: str | Path) -> Path:
        path = Path(path)
        atomic_write_text(path, cfgmod.config_to_yaml(self.config))
        return path

    # ---- running
    def run(self, out: str | Path | None = None) -> RunResult:
        c = self.config
        run = RunDir(Path(out) if out else Path("runs") / c.name)
        atomic_write_text(run.path("config.yaml"), cfgmod.config_to_yaml(c))
        run.save(project=c.name, template=c.template, seed=c.seed, versions=versions(),
                 config_hash=stable_hash(c.model_dump(mode="json")))
        upstream = ""
        for stage in STAGES:
            fn = getattr(self, f"_stage_{stage}")
            inputs_hash = stable_hash([stage, upstream, self._stage_inputs(stage)])
            outputs = self._stage_outputs(stage, run)
            if run.is_done(stage, inputs_hash, outputs):
                print(f"[distill] {stage}: up to date, skipped")
            else:
                print(f"[distill] {stage}: running")
                t0 = time.perf_counter()
                try:
                    info = fn(run, inputs_hash) or {}
                finally:
                    run.discard_partials()  # a failed stage leaves no half-written folder behind
                run.record(stage, inputs_hash, time.perf_counter() - t0, **info)
            upstream = inputs_hash
        report = json.loads(run.path("report.json").read_text())
        return RunResult(run.root, report, {"json": run.path("report.json"), "md": run.path("report.md")})

    def _stage_inputs(self, stage: str) -> Any:
        """What a stage depends on besides the upstream stage: its config and the files it reads
        (fingerprinted, so an edited model or dataset at the same path is not skipped as done)."""
        from sdk.models import fingerprint

        c = self.config.model_dump(mode="json")
        return {
            "data": [c["template"], c["seed"], c["template_options"], c["data"], fingerprint(c["data"]["path"])],
            "adapt": [c["teacher"], fingerprint(c["teacher"]["model"])],
            "annotate": [c["distill"]["top_k"]],
            "distill": [c["student"], c["distill"], fingerprint(c["student"]["model"])],
            "export": [c["export"]],
            "evaluate": [c["evaluation"]],
            "report": [],
        }[stage]

    def _stage_outputs(self, stage: str, run: RunDir) -> list[Path]:
        return {
            "data": [run.path("data", f"{s}.parquet") for s in ("train", "val", "test")],
            "adapt": [run.path("teacher", "teacher.json")],
            "annotate": [run.path("annotations", "train_topk.pt")],
            "distill": [run.path("student", "config.json")],
            "export": [run.path("artifacts", "exports.json")],
            "evaluate": [run.path("evaluation", "artifacts.json")],
            "report": [run.path("report.json"), run.path("report.md"), run.path("report.png")],
        }[stage]

    # ---- shared helpers
    def _splits(self, run: RunDir) -> dict[str, pd.DataFrame]:
        return {s: pd.read_parquet(run.path("data", f"{s}.parquet")) for s in ("train", "val", "test")}

    def _tokens(self, tokenizer, df: pd.DataFrame) -> list[list[int]]:
        from sdk.data import tokenize_prompts

        return tokenize_prompts(tokenizer, [self.template.prompt(r) for r in df.to_dict("records")])

    def _teacher(self, run: RunDir):
        """The adapted teacher (adapter merged), its tokenizer and the base model folder."""
        from sdk.models import load_causal_lm

        info = json.loads(run.path("teacher", "teacher.json").read_text())
        model, tok = load_causal_lm(info["base"], self.config.teacher.trust_remote_code)
        if info.get("adapter"):
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, run.path("teacher", "adapter")).merge_and_unload()
        return model.eval(), tok, info

    # ---- stages
    def _stage_data(self, run: RunDir, key: str) -> dict:
        from sdk.data import check_dataset, read_table, split, upsample_positives

        c, t = self.config, self.template
        d = c.data
        if d.path is not None:
            df, source = read_table(d.path, t.columns), str(d.path)
        else:
            try:
                df = t.synthesize(d.n_train + d.n_val + d.n_test, c.seed, dict(c.template_options))
            except ValueError as err:
                raise DistillError(str(err)) from None
            source = f"synthesized by template {t.name!r}"
            check_dataset(df, t.columns, source)
        parts = split(df, d.n_train, d.n_val, d.n_test, c.seed, source)
        parts["train"] = upsample_positives(parts["train"], d.train_positive_fraction, c.seed)
        tmp = run.tmp_dir("data")
        for name, part in parts.items():
            part.to_parquet(tmp / f"{name}.parquet", index=False)
        replace_dir(tmp, run.path("data"))
        counts = {n: {"rows": len(p), "positives": int(p["label"].sum())} for n, p in parts.items()}
        return {"note": f"{source}; " + ", ".join(f"{n} {v['rows']} ({v['positives']} pos)" for n, v in counts.items()),
                "counts": counts}

    def _stage_adapt(self, run: RunDir, key: str) -> dict:
        import torch

        from sdk.data import label_token_ids
        from sdk.distill.batching import token_forward
        from sdk.distill.frozen_prefix import cache_hidden_states, cached_forward, top_view
        from sdk.distill.losses import TaskCrossEntropy
        from sdk.distill.recipe import train
        from sdk.models import load_causal_lm, read_meta, resolve_model
        from sdk.students import decoder_linear_names

        c, t = self.config, self.template
        base = resolve_model(c.teacher.model)
        model, tok = load_causal_lm(base, c.teacher.trust_remote_code)
        meta = read_meta(base)
        label_ids = label_token_ids(tok, t.label_words, t.name)
        parts = self._splits(run)
        info: dict[str, Any] = {"base": str(base), "adapter": False, "label_ids": label_ids,
                                "gguf_pre_tokenizer": meta.get("gguf_pre_tokenizer")}
        tmp = run.tmp_dir("teacher")
        note = "teacher used as is"
        if c.teacher.adapt.enabled:
            from peft import LoraConfig, get_peft_model

            a = c.teacher.adapt
            torch.manual_seed(c.seed)
            n_layers = model.config.num_hidden_layers
            start = 0 if a.top_layers is None else max(0, n_layers - a.top_layers)
            peft_model = get_peft_model(model, LoraConfig(
                r=a.lora_r, lora_alpha=a.lora_alpha, lora_dropout=0.0, target_modules=decoder_linear_names(model),
                layers_to_transform=list(range(start, n_layers))))
            seqs = self._tokens(tok, parts["train"])
            val = self._val_subset(parts["val"])
            val_seqs = self._tokens(tok, val)
            if start > 0:  # frozen bottom layers: run them once, train the top on their cached output
                bs = c.evaluation.batch_size
                train_fwd = cached_forward(cache_hidden_states(peft_model, seqs, start, tok.pad_token_id, bs))
                val_fwd = cached_forward(cache_hidden_states(peft_model, val_seqs, start, tok.pad_token_id, bs))
                trained = top_view(peft_model, start)
            else:
                train_fwd, val_fwd = token_forward(seqs, tok.pad_token_id), token_forward(val_seqs, tok.pad_token_id)
                trained = peft_model
            target = torch.tensor([label_ids[int(y)] for y in parts["train"]["label"]])
            res = train(trained, train_fwd, len(seqs), {"target": target}, TaskCrossEntropy(),
                        self._metric_eval(val_fwd, val, label_ids),
                        lr=a.lr, batch_size=a.batch_size, max_epochs=a.max_epochs,
                        eval_every=a.eval_every, patience=a.patience, seed=c.seed,
                        checkpoint_dir=run.checkpoint_dir("adapt", key), desc="adapt teacher (LoRA)")
            peft_model.save_pretrained(tmp / "adapter")
            info.update(adapter=True, train=res.__dict__)
            note = (f"LoRA r={a.lora_r} on the top {n_layers - start} layers: best val "
                    f"{t.primary_metric} {res.best_metric:.4f} at step {res.best_step}/{res.steps}"
                    f"{' (early stop)' if res.stopped_early else ''}")
        atomic_write_text(tmp / "teacher.json", json.dumps(info, indent=2))
        replace_dir(tmp, run.path("teacher"))
        return {"note": note}

    def _val_subset(self, val: pd.DataFrame) -> pd.DataFrame:
        """Early-stopping set: up to 120 validation positives, negatives up to 240 rows (AUC-like metrics do
        not depend on the class ratio, and each check costs a forward pass per row)."""
        pos, neg = val[val["label"] == 1], val[val["label"] == 0]
        pos = pos.sample(n=min(len(pos), 120), random_state=self.config.seed)  # both classes always present
        n_neg = min(len(neg), 240 - len(pos))
        return pd.concat([pos, neg.sample(n=n_neg, random_state=self.config.seed)]).reset_index(drop=True)

    def _metric_eval(self, forward, val: pd.DataFrame, label_ids: list[int]):
        """evaluate(model) -> the template's primary metric on `val` (rows scored by forward)."""
        from sdk.distill.batching import label_probs_with

        y = val["label"].to_numpy()

        def evaluate(model) -> float:
            probs = label_probs_with(forward, model, len(val), label_ids, self.config.evaluation.batch_size)
            m = self.template.metrics(y, probs[:, 1].numpy(), 0.5, self.config.evaluation.target_recall)
            return m[self.template.primary_metric]

        return evaluate

    def _stage_annotate(self, run: RunDir, key: str) -> dict:
        import torch
        from tqdm.auto import tqdm

        from sdk.distill.batching import batches, last_token_logits

        model, tok, info = self._teacher(run)
        seqs = self._tokens(tok, self._splits(run)["train"])
        k = self.config.distill.top_k
        values = torch.empty((len(seqs), k))
        ids = torch.empty((len(seqs), k), dtype=torch.long)
        with torch.inference_mode():
            for b in tqdm(list(batches(len(seqs), self.config.evaluation.batch_size)), desc="teacher top-k logits"):
                top = last_token_logits(model, [seqs[i] for i in b], tok.pad_token_id).topk(k, dim=-1)
                values[b], ids[b] = top.values, top.indices
        out = run.path("annotations")
        out.mkdir(exist_ok=True)
        tmp = out / "train_topk.pt.tmp"
        torch.save({"teacher_topk_logits": values, "teacher_topk_ids": ids}, tmp)
        os.replace(tmp, out / "train_topk.pt")
        mass = torch.softmax(values, -1)  # renormalised; report how peaked the teacher is on labels
        label_share = (ids[:, :1] == torch.tensor(info["label_ids"])).any(-1).float().mean().item()
        return {"note": f"top-{k} teacher logits for {len(seqs)} training prompts; top-1 is a label word "
                        f"in {label_share:.1%}", "top1_prob_mean": float(mass[:, 0].mean())}

    def _stage_distill(self, run: RunDir, key: str) -> dict:
        import torch

        from sdk.distill.batching import token_forward
        from sdk.distill.recipe import train
        from sdk.models import META_FILE, load_causal_lm, resolve_model
        from sdk.registry import LOSSES, load
        from sdk.students import count_params, evenly_spaced_layers, student_from_teacher

        c = self.config
        teacher, tok, info = self._teacher(run)
        torch.manual_seed(c.seed)
        if c.student.model:
            student, student_tok = load_causal_lm(resolve_model(c.student.model), c.teacher.trust_remote_code)
            if student_tok.get_vocab() != tok.get_vocab():
                raise DistillError(f"student.model {c.student.model!r} uses another tokenizer than the teacher; "
                                   "token-level distillation needs the same vocabulary")
            origin = c.student.model
        else:
            try:
                keep = evenly_spaced_layers(teacher.config.num_hidden_layers, c.student.layers)
            except ValueError as err:
                raise DistillError(str(err)) from None
            student = student_from_teacher(teacher, keep)
            origin = f"teacher layers {keep}"
        del teacher
        loss_fn = load(LOSSES, c.distill.loss)(temperature=c.distill.temperature, alpha=c.distill.alpha)
        parts = self._splits(run)
        seqs = self._tokens(tok, parts["train"])
        ann = torch.load(run.path("annotations", "train_topk.pt"))
        targets = {"target": torch.tensor([info["label_ids"][int(y)] for y in parts["train"]["label"]]), **ann}
        d = c.distill
        if d.freeze_embeddings:
            student.get_input_embeddings().weight.requires_grad_(False)
        student.train()
        val = self._val_subset(parts["val"])
        val_eval = self._metric_eval(token_forward(self._tokens(tok, val), tok.pad_token_id), val, info["label_ids"])
        res = train(student, token_forward(seqs, tok.pad_token_id), len(seqs), targets, loss_fn, val_eval, lr=d.lr, batch_size=d.batch_size, max_epochs=d.max_epochs,
                    eval_every=d.eval_every, patience=d.patience, seed=c.seed,
                    checkpoint_dir=run.checkpoint_dir("distill", key), desc="distill student")
        tmp = run.tmp_dir("student")
        student.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / META_FILE).write_text(json.dumps({"origin": origin, "gguf_pre_tokenizer": info.get("gguf_pre_tokenizer"),
                                                 "label_ids": info["label_ids"]}, indent=2))
        replace_dir(tmp, run.path("student"))
        return {"note": f"{origin}, {count_params(student):,} params; best val {self.template.primary_metric} "
                        f"{res.best_metric:.4f} at step {res.best_step}/{res.steps}", "train": res.__dict__}

    def _stage_export(self, run: RunDir, key: str) -> dict:
        from deployment.gguf import quantize, write_gguf
        from sdk.models import read_meta

        student_dir = run.path("student")
        meta = read_meta(student_dir)
        tmp = run.tmp_dir("artifacts")
        f16 = write_gguf(student_dir, tmp / "student-F16.gguf", "F16", meta.get("gguf_pre_tokenizer"))
        files = {"F16": f16.name}
        for q in self.config.export.quants:
            if q != "F16":
                files[q] = quantize(f16, tmp / f"student-{q}.gguf", q, self.config.evaluation.threads).name
        atomic_write_text(tmp / "exports.json", json.dumps(files, indent=2))
        replace_dir(tmp, run.path("artifacts"))
        return {"note": ", ".join(f"{q} {os.path.getsize(run.path('artifacts', f)) / 1e6:.1f} MB"
                                  for q, f in files.items())}

    def _artifacts(self, run: RunDir):
        from evaluation.harness import Artifact
        from sdk.students import count_params_on_disk

        c = self.config
        info = json.loads(run.path("teacher", "teacher.json").read_text())
        threads, bs = c.evaluation.threads, c.evaluation.batch_size
        student_dir = run.path("student")
        teacher_params, student_params = count_params_on_disk(info["base"]), count_params_on_disk(student_dir)

        def folder_bytes(p: Path) -> int:
            return sum(f.stat().st_size for f in Path(p).rglob("*.safetensors"))

        adapter = str(run.path("teacher", "adapter")) if info.get("adapter") else None
        arts = [
            Artifact("teacher-torch", "teacher", "torch", None, info["base"], teacher_params,
                     folder_bytes(Path(info["base"])),
                     {"model": info["base"], "adapter": adapter, "threads": threads, "batch_size": bs,
                      "trust_remote_code": c.teacher.trust_remote_code}, 32.0),
            Artifact("student-torch", "student", "torch", None, str(student_dir), student_params,
                     folder_bytes(student_dir), {"model": str(student_dir), "threads": threads, "batch_size": bs}, 32.0),
        ]
        exports = json.loads(run.path("artifacts", "exports.json").read_text())
        for q, fname in exports.items():
            if q == "F16" and "F16" not in c.export.quants:
                continue
            path = run.path("artifacts", fname)
            size = path.stat().st_size
            arts.append(Artifact(f"student-gguf-{q}", "student", "gguf", q, str(path), student_params, size,
                                 {"model": str(path), "threads": threads}, 8 * size / student_params))
        return arts

    def _stage_evaluate(self, run: RunDir, key: str) -> dict:
        from transformers import AutoTokenizer

        from evaluation.harness import evaluate_artifact

        c = self.config
        parts = self._splits(run)
        tok = AutoTokenizer.from_pretrained(run.path("student"))
        label_ids = json.loads(run.path("teacher", "teacher.json").read_text())["label_ids"]
        val_seqs, test_seqs = self._tokens(tok, parts["val"]), self._tokens(tok, parts["test"])
        work = run.path("evaluation")
        entries = []
        for art in self._artifacts(run):
            print(f"[distill] evaluating {art.name}")
            entries.append(evaluate_artifact(
                art, self.template, parts["val"]["label"].to_numpy(), parts["test"]["label"].to_numpy(),
                val_seqs, test_seqs, label_ids, target_recall=c.evaluation.target_recall,
                latency_samples=c.evaluation.latency_samples, work_dir=work))
        atomic_write_text(work / "artifacts.json", json.dumps(entries, indent=2))
        return {"note": f"{len(entries)} artifacts on {len(test_seqs)} test prompts"}

    def _stage_report(self, run: RunDir, key: str) -> dict:
        from evaluation.report import build_report, write_report

        parts = self._splits(run)
        entries = json.loads(run.path("evaluation", "artifacts.json").read_text())
        stages = {k: {"seconds": v.get("seconds", 0), "note": v.get("note", "")}
                  for k, v in run.manifest["stages"].items() if k != "report"}
        report = build_report(
            template=self.template.name, project=self.config.name, primary_metric=self.template.primary_metric,
            artifacts=entries,
            data={s: len(p) for s, p in (("n_train", parts["train"]), ("n_val", parts["val"]), ("n_test", parts["test"]))}
            | {"test_positives": int(parts["test"]["label"].sum())},
            machine={"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor()},
            stages=stages)
        from evaluation.plots import plot_report

        scores = {e["name"]: np.load(run.path("evaluation", f"{e['name']}.test_scores.npy")) for e in entries}
        plot_report(report, parts["test"]["label"].to_numpy(), scores, run.path("report.png"))
        write_report(report, run.root)
        return {"note": "report.json, report.md, report.png"}
