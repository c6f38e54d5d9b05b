"""Parity: a GGUF written from an unquantized student reproduces transformers, position by position."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from deployment.gguf import quantize, write_gguf
from sdk.errors import DistillError

PROMPT = "$3 gift_cards online 02h RU, account 4d, new device, 9 tx/h. Fraud? The quick brown fox"


def _hf_logits(model_dir, ids):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def _gguf_logits(path, ids, kv_f32=False):
    from deployment.runtimes.llama_cpp_runtime import LlamaCppRuntime

    rt = LlamaCppRuntime(str(path), threads=1, n_ctx=128, logits_all=True, kv_f32=kv_f32)
    return rt.logits(ids)


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_llama_untied", "tiny_llama_bias", "tiny_qwen2",
                                     "tiny_qwen2_untied"])
def test_f32_gguf_matches_transformers_at_every_position(fixture, request, tmp_path):
    model_dir = request.getfixturevalue(fixture)
    ids = AutoTokenizer.from_pretrained(model_dir)(PROMPT)["input_ids"]
    assert len(ids) > 10
    ref = _hf_logits(model_dir, ids)
    got = _gguf_logits(write_gguf(model_dir, tmp_path / "m-f32.gguf", "F32"), ids, kv_f32=True)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < 1e-3
    assert ref.std() > 0.5  # the comparison is not between two near-constant outputs


def test_f16_gguf_top1_agrees_away_from_near_ties(tiny_llama, tmp_path):
    ids = AutoTokenizer.from_pretrained(tiny_llama)(PROMPT)["input_ids"]
    ref = _hf_logits(tiny_llama, ids)
    got = _gguf_logits(write_gguf(tiny_llama, tmp_path / "m-f16.gguf", "F16"), ids)
    top2 = np.sort(ref, axis=-1)[:, -2:]
    err = np.abs(got - ref).max()
    assert err < 0.05  # F16 rounding only
    clear = (top2[:, 1] - top2[:, 0]) > 2 * err  # margins no rounding error of this size can flip
    assert clear.sum() >= len(ids) // 2
    assert (got.argmax(-1)[clear] == ref.argmax(-1)[clear]).all()


def test_gguf_metadata_and_atomic_write(tiny_llama, tmp_path):
    from gguf import GGUFReader

    out = write_gguf(tiny_llama, tmp_path / "m.gguf", "F16", pre_tokenizer="smollm")
    assert not (tmp_path / "m.gguf.tmp").exists()
    r = GGUFReader(out)
    pre = r.fields["tokenizer.ggml.pre"]
    assert bytes(pre.parts[pre.data[0]]).decode() == "smollm"
    names = {t.name for t in r.tensors}
    assert {"token_embd.weight", "output_norm.weight", "blk.3.attn_q.weight", "blk.0.ffn_down.weight"} <= names
    assert "output.weight" not in names  # tied embeddings are shared, not duplicated


def test_quantize_with_llama_cpp(tiny_llama_untied, tmp_path):
    f16 = write_gguf(tiny_llama_untied, tmp_path / "m-f16.gguf", "F16")
    q8 = quantize(f16, tmp_path / "m-q8.gguf", "Q8_0", threads=1)
    assert q8.stat().st_size < f16.stat().st_size
    ids = AutoTokenizer.from_pretrained(tiny_llama_untied)(PROMPT)["input_ids"]
    ref = _hf_logits(tiny_llama_untied, ids)
    got = _gguf_logits(q8, ids)
    # Q8_0 keeps the prediction close to the reference
    assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.99


def test_quant_types_are_llama_cpp_ftypes():
    import llama_cpp

    from deployment.gguf import QUANT_TYPES

    assert {"Q6_K", "Q5_K_M", "Q3_K_M", "Q2_K"} <= set(QUANT_TYPES)
    assert QUANT_TYPES == {name: getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{name}") for name in QUANT_TYPES}


# rms(logits - F16 logits) / std(F16 logits) on tiny_qwen2_untied, about 2x what was measured (0.040, 0.065).
# llama.cpp rounds the weights and, for these types, the activations (Q8_K); the random model amplifies it.
K_QUANT_RMS = {"Q6_K": 0.08, "Q5_K_M": 0.12}


@pytest.mark.parametrize("qtype, kinds", [("Q6_K", {"Q6_K"}), ("Q5_K_M", {"Q5_K", "Q6_K"})])
def test_k_quants_load_and_stay_close_to_f16(qtype, kinds, tiny_qwen2_untied, tmp_path):
    from gguf import GGMLQuantizationType, GGUFReader

    f16 = write_gguf(tiny_qwen2_untied, tmp_path / "m-f16.gguf", "F16")
    q = quantize(f16, tmp_path / f"m-{qtype}.gguf", qtype, threads=1)
    # rows of 256 (the K-quants' block): every matrix gets a K-quant type, not llama.cpp's fallback for
    # narrower rows (Q5_K_M: Q6_K for output, attn_v and half of ffn_down, Q5_K for the rest)
    assert {GGMLQuantizationType(t.tensor_type).name for t in GGUFReader(q).tensors if len(t.shape) > 1} == kinds
    ids = AutoTokenizer.from_pretrained(tiny_qwen2_untied)(PROMPT)["input_ids"]
    ref, got = _gguf_logits(f16, ids), _gguf_logits(q, ids)
    err = got - ref
    assert np.sqrt((err ** 2).mean()) < K_QUANT_RMS[qtype] * ref.std()
    top2 = np.sort(ref, axis=-1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2 * np.abs(err).max()  # margins this file's error cannot flip
    assert clear.sum() >= len(ids) // 2  # measured: 24 (Q6_K) and 21 (Q5_K_M) of 33
    assert (got.argmax(-1)[clear] == ref.argmax(-1)[clear]).all()


@pytest.mark.parametrize("change, match", [
    ({"use_sliding_window": True, "sliding_window": 64, "max_window_layers": 1}, "sliding-window"),
    ({"layer_types": ["full_attention", "sliding_attention"]}, "sliding-window"),
    ({"rope_scaling": {"type": "yarn", "factor": 4.0}}, "yarn"),
    ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0}}, "yarn"),
    ({"head_dim": 32}, "head_dim"),
    ({"hidden_act": "gelu"}, "gelu"),
])
def test_refuses_what_llama_cpp_would_run_differently(change, match, tmp_path):
    import json

    cfg = {"model_type": "qwen2", "num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 256, **change}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DistillError, match=match):
        write_gguf(tmp_path, tmp_path / "x.gguf")


def test_unsupported_architecture_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(DistillError, match="config.json"):
        write_gguf(tmp_path, tmp_path / "x.gguf")


def test_unknown_quant_type(tmp_path):
    with pytest.raises(DistillError, match="Q3_XYZ"):
        quantize(tmp_path / "a.gguf", tmp_path / "b.gguf", "Q3_XYZ")


# ---- what the file carries besides weights: chat template, BOS flag, distill.* metadata (package stage)
LLAMA_CPP_META = (  # llama.cpp's own reading of a file: loads vocabulary and metadata, prints both
    "import sys, json; from llama_cpp import Llama; "
    "llm = Llama(model_path=sys.argv[1], vocab_only=True, verbose=False); "
    "text = sys.argv[2].encode(); "
    "print(json.dumps({'meta': llm.metadata, 'ids': llm.tokenize(text, add_bos=True), "
    "'plain': llm.tokenize(text, add_bos=False), 'bos': llm.token_bos()}))"
)


def _llama_cpp_reads(path, text=PROMPT) -> dict:
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", LLAMA_CPP_META, str(path), text], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def _variant(src, dst, chat_template: str | None = None, bos_first: bool = False):
    """A copy of a tiny model whose tokenizer has a chat template and/or puts BOS in front of every text."""
    import shutil

    from tokenizers import processors

    shutil.copytree(src, dst)
    tok = AutoTokenizer.from_pretrained(dst)
    if chat_template:
        tok.chat_template = chat_template
    if bos_first:
        tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{tok.bos_token} $A", special_tokens=[(tok.bos_token, tok.bos_token_id)])
    tok.save_pretrained(dst)
    return dst


CHAT = "{% for m in messages %}<|user|>{{ m['content'] }}{% endfor %}<|assistant|>"


def test_chat_template_only_for_models_trained_on_chat_prompts(tiny_llama, tmp_path):
    from deployment.gguf import read_metadata

    model = _variant(tiny_llama, tmp_path / "chat", chat_template=CHAT)
    chat = write_gguf(model, tmp_path / "chat.gguf", chat_template=True)
    raw = write_gguf(model, tmp_path / "raw.gguf", chat_template=False)
    assert read_metadata(chat)["tokenizer.chat_template"] == CHAT
    assert "tokenizer.chat_template" not in read_metadata(raw)
    assert "tokenizer.chat_template" not in _llama_cpp_reads(raw)["meta"]


@pytest.mark.parametrize("bos_first", [False, True])
def test_llama_cpp_tokenizes_with_special_tokens_as_transformers(tiny_llama, tmp_path, bos_first):
    """The GGUF's add-BOS flag follows the tokenizer: llama.cpp's tokenize(add_bos=True) puts a BOS first
    exactly when transformers does with add_special_tokens=True (what the data stage uses for raw prompts).
    (The tiny test tokenizer's own splitting is not llama.cpp's "default" pre-tokenizer; the embedded
    teacher's is checked in tests/test_integration.py.)"""
    model = _variant(tiny_llama, tmp_path / "m", bos_first=bos_first)
    tok = AutoTokenizer.from_pretrained(model)
    assert (tok(PROMPT)["input_ids"][0] == tok.bos_token_id) == bos_first
    got = _llama_cpp_reads(write_gguf(model, tmp_path / "m.gguf"))
    assert got["bos"] == tok.bos_token_id
    assert got["ids"] == [got["bos"]] * bos_first + got["plain"]


def test_qwen2_file_and_pre_tokenizer(tiny_qwen2, tiny_llama, tmp_path):
    """A Qwen2 folder: arch qwen2 with q/k/v biases, tied output not duplicated, and llama.cpp's pre-tokenizer
    "qwen2" when transformers splits text as Qwen2's tokenizer does. transformers 5 loads any model_type
    qwen2 folder as Qwen2Tokenizer, which sets that split whatever tokenizer.json says, so the tiny model
    has it too; llama.cpp then tokenizes as transformers (digits one by one: the tiny vocabulary has merges
    of digits, which "default" applies)."""
    from gguf import GGUFReader

    from deployment.gguf import read_metadata

    text = PROMPT + " $120 0123456789 account 300d"
    want = AutoTokenizer.from_pretrained(tiny_qwen2)(text, add_special_tokens=False)["input_ids"]
    path = write_gguf(tiny_qwen2, tmp_path / "m.gguf")
    meta = read_metadata(path)
    assert (meta["general.architecture"], meta["tokenizer.ggml.pre"]) == ("qwen2", "qwen2")
    assert meta["qwen2.rope.freq_base"] == 1e6
    names = {t.name for t in GGUFReader(path).tensors}
    assert {"blk.1.attn_q.bias", "blk.1.attn_k.bias", "blk.1.attn_v.bias"} <= names and "output.weight" not in names
    assert _llama_cpp_reads(path, text)["plain"] == want
    assert _llama_cpp_reads(write_gguf(tiny_qwen2, tmp_path / "d.gguf", pre_tokenizer="default"), text)["plain"] != want
    assert read_metadata(write_gguf(tiny_llama, tmp_path / "l.gguf"))["tokenizer.ggml.pre"] == "default"


def test_package_stage_sets_metadata_in_place(tiny_llama_untied, tmp_path):
    """A run folder as the evaluation leaves it -> package: the evaluated GGUF gets the task, label words,
    threshold and operating point, loses a chat template it must not advertise, and keeps its tensors."""
    import json

    from gguf import GGUFReader

    from deployment.gguf import read_metadata
    from sdk.config import load_config, template_options
    from sdk.rundir import RunDir
    from sdk.stages import Context, package
    from verticals.fraud import FraudTemplate

    run = RunDir(tmp_path / "run")
    model = _variant(tiny_llama_untied, tmp_path / "student", chat_template=CHAT)
    f16 = write_gguf(model, tmp_path / "m-f16.gguf", "F16")  # an older export: chat template in, no distill.*
    run.path("artifacts").mkdir()
    q8 = quantize(f16, run.path("artifacts", "student-Q8_0.gguf"), "Q8_0", threads=1)
    tensors = {t.name: t.data.tobytes() for t in GGUFReader(q8).tensors}
    ids = AutoTokenizer.from_pretrained(model)(PROMPT)["input_ids"]
    logits = _gguf_logits(q8, ids)
    run.write_json("data/task.json", {"task": "decision", "chat": False, "eos_ids": [0], "label_ids": [17, 23]})
    threshold, op = 0.12345678901234567, {"kind": "fpr", "value": 0.02, "description": "fpr <= 2%"}
    run.write_json("evaluation/artifacts.json", [
        {"name": "teacher-torch", "role": "teacher", "format": "torch", "path": "x", "metrics": {"threshold": 0.5}},
        {"name": "student-gguf-Q8_0", "role": "student", "format": "gguf", "quant": "Q8_0",
         # a path relative to wherever the run was started: the file is found in this run's artifacts/
         "path": "runs/elsewhere/artifacts/student-Q8_0.gguf", "metrics": {"threshold": threshold},
         "operating_point": op}])
    cfg = load_config(FraudTemplate().preset_path("tiny"))
    ctx = Context(cfg, FraudTemplate(), template_options(cfg), run)
    assert package.outputs(run) == [run.path("artifacts", "package.json")]

    package.run(ctx)
    meta = read_metadata(q8)
    assert float(meta["distill.threshold"]) == threshold  # exact, as a decimal string
    assert json.loads(meta["distill.operating_point"]) == op
    assert json.loads(meta["distill.label_words"]) == [" no", " yes"]
    assert json.loads(meta["distill.label_token_ids"]) == [17, 23]
    assert (meta["distill.template"], meta["distill.task"], meta["distill.prompt_format_version"]) == ("fraud", "decision", "3")
    assert meta["distill.chat"] is False and "tokenizer.chat_template" not in meta
    assert meta["general.architecture"] == "llama" and meta["tokenizer.ggml.pre"]  # the rest is kept
    assert {t.name: t.data.tobytes() for t in GGUFReader(q8).tensors} == tensors
    assert not list(q8.parent.glob(".*tmp"))
    assert np.array_equal(_gguf_logits(q8, ids), logits)  # same weights, same outputs
    # llama.cpp loads the rewritten file and shows the values a plain script reads
    seen = _llama_cpp_reads(q8)["meta"]
    assert seen["distill.threshold"] == repr(threshold) and json.loads(seen["distill.label_token_ids"]) == [17, 23]
    written = json.loads(run.path("artifacts", "package.json").read_text())
    assert written["student-gguf-Q8_0"]["file"] == "student-Q8_0.gguf" and "teacher-torch" not in written
    assert written["student-gguf-Q8_0"]["sha256"] == hashlib.sha256(q8.read_bytes()).hexdigest()  # the final file

    package.run(ctx)  # packaging again (a re-run) sets the same values, nothing accumulates
    assert read_metadata(q8) == meta
    # evaluated again without a threshold (graded labels: the likeliest decides): the old one must not stay
    entries = run.read_json("evaluation/artifacts.json")
    entries[1].update(metrics={"threshold": None}, operating_point=None)
    run.write_json("evaluation/artifacts.json", entries)
    package.run(ctx)
    assert not {"distill.threshold", "distill.decision_rule", "distill.operating_point"} & set(read_metadata(q8))


def test_rewrite_metadata_refuses_unsupported_values(tiny_llama, tmp_path):
    from deployment.gguf import rewrite_metadata

    path = write_gguf(tiny_llama, tmp_path / "m.gguf")
    before = path.read_bytes()
    with pytest.raises(TypeError, match="distill.x"):
        rewrite_metadata(path, {"distill.x": [1, 2]})
    assert path.read_bytes() == before and not list(tmp_path.glob(".*tmp"))


def test_a_llama_cpp_built_with_amx_kernels_is_refused_naming_the_fix(monkeypatch):
    """Such a build segfaults on quantized models (deployment/runtimes/llama_cpp_runtime.py says where)."""
    from deployment.runtimes.llama_cpp_runtime import ALLOW_AMX_ENV, amx_problem

    info = "CPU : SSE3 = 1 | AVX512 = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 |"
    monkeypatch.delenv(ALLOW_AMX_ENV, raising=False)
    assert "-mno-amx-int8" in amx_problem(info) and ALLOW_AMX_ENV in amx_problem(info)
    assert amx_problem(info.replace("AMX_INT8 = 1 | ", "")) is None
    monkeypatch.setenv(ALLOW_AMX_ENV, "1")
    assert amx_problem(info) is None


def test_the_installed_llama_cpp_is_not_such_a_build():
    import llama_cpp

    from deployment.runtimes.llama_cpp_runtime import amx_problem

    assert amx_problem(llama_cpp.llama_print_system_info().decode()) is None
