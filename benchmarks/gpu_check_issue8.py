"""GPU check for issue 8: FP8 (torchao, E4M3 weights and activations, per row) against bf16 on a random-init
Qwen2 of Qwen2.5-0.5B's shape, and the ONNX decision graph against torch fp32. One script, one run, well
under 10 minutes on an H200; on a machine without FP8 the FP8 parts record the refusal and the rest runs.

    python benchmarks/gpu_check_issue8.py            # the H200 run (writes $OUT/gpu_check.json if OUT is set)
    python benchmarks/gpu_check_issue8.py --tiny     # a tiny config on CPU, under a minute (a smoke test)

Steps (each records its figures or its error and the run goes on):
  env      versions, device, compute capability, whether FP8 runs;
  probe    every Linear shape of the model through a PerRow FP8 linear at M = 1, 32, 256, 4096 (pytorch/ao#4582:
           PerRow fails on H100 for large K and M <= 256) and, if one fails, through PerTensor;
  a        logits at the last positions of random-token prompts: bf16, FP8 and INT8 (torchao W8A8) each against
           fp32, FP8 against bf16 (top-1 agreement, ref top-1 in top-5, max/mean |dlogit|, relative RMS, KL);
  b        prefill tokens/s and greedy decode tokens/s (KV cache; decode = (t(N new) - t(1 new)), so prefill is
           excluded) at batch 1 and 32 for bf16 and FP8, after a warm-up, synchronised;
  c        ONNX decision graph of a 4-layer model of the same width and vocabulary (the full model's fp32 graph
           is over protobuf's 2 GB), onnxruntime (providers reported) against torch fp32, plus onnxruntime INT8;
  d        torch INT8 (torchao, eager) against fp32 on the CPU, same 4-layer model: speed and agreement.
Random weights give near-uniform logits (std ~0.6 over 152k tokens), so top-1 agreement is a pessimistic
figure next to a trained model's; the relative error and KL are the comparable ones.

Needs torch, transformers, numpy; torchao for the quantized parts; onnx, onnxscript, onnxruntime for step c.
Imports deployment.torch_quant and deployment.onnx_export (torch and sdk.errors only): nothing here needs
pydantic or typer.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

T0 = time.perf_counter()
SUMMARY: dict = {"errors": {}}


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


def left(budget_s: float) -> float:
    return budget_s - (time.perf_counter() - T0)


def step(name: str, budget_s: float, needs_s: float):
    """step(name, budget, needs)(fn): runs fn() unless less than `needs_s` of the budget is left; an error is
    recorded under `name` and the run goes on."""

    def run(fn):
        if left(budget_s) < needs_s:
            log(f"{name}: skipped, {left(budget_s):.0f} s left of the budget, needs ~{needs_s:.0f} s")
            SUMMARY.setdefault("skipped", []).append(name)
            return None
        log(f"{name}: start")
        try:
            out = fn()
            log(f"{name}: done")
            return out
        except Exception as err:  # one broken step must not lose the others' figures
            msg = f"{type(err).__name__}: {err}"
            log(f"{name}: FAILED {msg}\n{traceback.format_exc(limit=6)}")
            SUMMARY["errors"][name] = msg[:2000]
            return None

    return run


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    for pkg in ("transformers", "torchao", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def model_config(tiny: bool, layers: int | None = None):
    from transformers import Qwen2Config

    if tiny:
        shape = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2)
    else:  # Qwen2.5-0.5B's shape (494M parameters, tied embeddings)
        shape = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                     num_attention_heads=14, num_key_value_heads=2)
    if layers:
        shape["num_hidden_layers"] = layers
    return Qwen2Config(**shape, max_position_embeddings=4096, rms_norm_eps=1e-6, tie_word_embeddings=True,
                       use_sliding_window=False, pad_token_id=0, bos_token_id=None, eos_token_id=None)


def build(cfg, device: str, seed: int = 0):
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg)
    model.generation_config.eos_token_id = None  # random weights: decode exactly the tokens asked for
    model.generation_config.pad_token_id = 0
    return model.float().eval()


@torch.inference_mode()
def last_logits(model, ids: torch.Tensor, keep: int) -> torch.Tensor:
    return model(input_ids=ids, logits_to_keep=keep).logits.float()


def sig(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def agreement(ref: torch.Tensor, got: torch.Tensor) -> dict:
    ref, got = ref.reshape(-1, ref.shape[-1]).float(), got.reshape(-1, got.shape[-1]).float().to(ref.device)
    diff = (got - ref).abs()
    top1 = ref.argmax(-1)
    kl = torch.nn.functional.kl_div(got.log_softmax(-1), ref.log_softmax(-1), log_target=True,
                                    reduction="none").sum(-1).clamp(min=0)  # KL(ref || got) per position
    return {"positions": ref.shape[0],
            "top1_agreement": sig((got.argmax(-1) == top1).float().mean().item()),
            "ref_top1_in_top5": sig((got.topk(5, -1).indices == top1[:, None]).any(-1).float().mean().item()),
            "max_abs_logit_diff": sig(diff.max().item()), "mean_abs_logit_diff": sig(diff.mean().item()),
            "ref_logit_std": sig(ref.std().item()),
            "relative_rms": sig(((got - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt()).item()),
            "kl_mean": sig(kl.mean().item()), "kl_max": sig(kl.max().item())}


def count_linears(model) -> int:
    return sum(isinstance(m, torch.nn.Linear) for m in model.modules())


@torch.inference_mode()
def prefill_tps(model, batch: int, prompt: int, vocab: int, device: str, reps: int) -> float:
    ids = torch.randint(0, vocab, (batch, prompt), device=device)
    model(input_ids=ids, logits_to_keep=1)  # warm-up
    sync()
    t = time.perf_counter()
    for _ in range(reps):
        model(input_ids=ids, logits_to_keep=1)
    sync()
    return batch * prompt * reps / (time.perf_counter() - t)


@torch.inference_mode()
def decode_tps(model, batch: int, prompt: int, new: int, vocab: int, device: str) -> dict:
    ids = torch.randint(0, vocab, (batch, prompt), device=device)
    mask = torch.ones_like(ids)
    kw = dict(attention_mask=mask, do_sample=False, temperature=None, top_p=None, top_k=None, pad_token_id=0)

    def timed(n: int) -> tuple[float, int]:
        sync()
        t = time.perf_counter()
        out = model.generate(input_ids=ids, max_new_tokens=n, min_new_tokens=n, **kw)
        sync()
        return time.perf_counter() - t, out.shape[1] - prompt

    timed(4)  # warm-up (kernel selection, cache allocation)
    t1, _ = timed(1)
    tn, got = timed(new)
    return {"new_tokens": got, "seconds": round(tn, 3), "first_token_s": round(t1, 4),
            "decode_tokens_per_s": sig(batch * (got - 1) / max(tn - t1, 1e-9))}


def fp8_linear(k: int, n: int, per_tensor: bool):
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, PerTensor, quantize_

    lin = torch.nn.Linear(k, n, bias=False, device="cuda", dtype=torch.bfloat16)
    quantize_(lin, Float8DynamicActivationFloat8WeightConfig(granularity=PerTensor() if per_tensor else PerRow(),
                                                             set_inductor_config=False))
    return lin


@torch.inference_mode()
def probe_fp8(cfg) -> dict:
    """Each Linear shape of the model at several M, PerRow (the SDK's choice) then, if any fails, PerTensor."""
    h, i = cfg.hidden_size, cfg.intermediate_size
    kv = cfg.num_key_value_heads * (h // cfg.num_attention_heads)
    shapes = sorted({(h, h), (h, kv), (h, i), (i, h)})
    out = {}
    for per_tensor in (False, True):
        fails = []
        for k, n in shapes:
            lin = fp8_linear(k, n, per_tensor)
            for m in (1, 32, 256, 4096):
                try:
                    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
                    y, ref = lin(x), torch.nn.functional.linear(x, lin.weight.dequantize())
                    sync()
                    err = ((y.float() - ref.float()).norm() / ref.float().norm()).item()
                    if not err < 0.1:
                        fails.append(f"K={k} N={n} M={m}: relative error {err:.3f}")
                except Exception as e:
                    fails.append(f"K={k} N={n} M={m}: {type(e).__name__}: {str(e)[:200]}")
        out["per_tensor" if per_tensor else "per_row"] = {"shapes_KN": shapes, "failures": fails}
        if not fails:
            break
    return out


def quantize_fp8_per_tensor(model):
    """The fallback when PerRow fails on a shape: the same filter as deployment.torch_quant, PerTensor scales."""
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerTensor, quantize_

    quantize_(model, Float8DynamicActivationFloat8WeightConfig(granularity=PerTensor(), set_inductor_config=False),
              filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear) and "lm_head" not in fqn)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny config, small batches (CPU smoke test)")
    ap.add_argument("--budget-s", type=float, default=None, help="time budget; later steps are skipped past it")
    ap.add_argument("--new-tokens", type=int, default=None)
    ap.add_argument("--onnx-layers", type=int, default=None)
    args = ap.parse_args()
    tiny = args.tiny
    budget = args.budget_s or (120 if tiny else 480)
    new_tokens = args.new_tokens or (16 if tiny else 128)
    prompt_len, agree_batch, agree_len, keep = (16, 8, 24, 4) if tiny else (256, 32, 128, 8)
    batches = (1, 4) if tiny else (1, 32)
    onnx_layers = args.onnx_layers or (2 if tiny else 4)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(min(16, os.cpu_count() or 1))

    from deployment.torch_quant import (KINDS, check_kind, describe_device, fp8_capable, quantize_model,
                                        quantized_bytes, quantized_modules)
    from sdk.errors import DistillError

    SUMMARY["env"] = {**versions(), "device": describe_device() if device == "cuda" else "cpu",
                      "fp8_capable": fp8_capable(), "cpu_threads": torch.get_num_threads(), "kinds": list(KINDS)}
    log(f"env {json.dumps(SUMMARY['env'])}")
    cfg = model_config(tiny)
    SUMMARY["config"] = {"tiny": tiny, "layers": cfg.num_hidden_layers, "hidden": cfg.hidden_size,
                         "intermediate": cfg.intermediate_size, "vocab": cfg.vocab_size, "device": device,
                         "prompt_len": prompt_len, "new_tokens": new_tokens, "batches": list(batches),
                         "agreement_prompts": [agree_batch, agree_len, keep], "budget_s": budget}
    fp8_refusal = None
    try:
        check_kind("fp8")
    except DistillError as err:
        fp8_refusal = str(err)
        SUMMARY["fp8_refused"] = fp8_refusal
        log(f"fp8 refused (expected without an FP8 GPU): {fp8_refusal}")

    probe = None
    if fp8_refusal is None:
        probe = step("probe", budget, 10)(lambda: probe_fp8(cfg))
        SUMMARY["fp8_probe"] = probe
    fp8_per_tensor = bool(probe and probe["per_row"]["failures"])

    # (a) agreement ------------------------------------------------------------------------------------------
    state: dict = {}

    def a_reference():
        state["model"] = build(cfg, device)
        g = torch.Generator().manual_seed(1)
        state["ids"] = torch.randint(0, cfg.vocab_size, (agree_batch, agree_len), generator=g).to(device)
        state["ref"] = last_logits(state["model"], state["ids"], keep)
        SUMMARY["weight_bytes"] = {"fp32": quantized_bytes(state["model"])}
        SUMMARY["linears"] = count_linears(state["model"])

    step("a.fp32", budget, 30)(a_reference)
    if "model" not in state:
        return finish()
    agree = SUMMARY.setdefault("agreement", {})

    def a_int8():
        m8 = copy.deepcopy(state["model"])
        if device == "cuda":
            m8 = m8.to(torch.bfloat16)
        m8 = quantize_model(m8, "int8")
        agree["int8_vs_fp32"] = agreement(state["ref"], last_logits(m8, state["ids"], keep))
        SUMMARY["weight_bytes"]["int8"] = quantized_bytes(m8)
        SUMMARY["quantized_linears_int8"] = len(quantized_modules(m8))
        if device == "cuda":  # eager W8A8 prefill speed on the GPU, batch max only
            SUMMARY.setdefault("speed", {})["int8_prefill_tokens_per_s_b%d" % batches[-1]] = round(
                prefill_tps(m8, batches[-1], prompt_len, cfg.vocab_size, device, reps=2), 1)
        del m8

    step("a.int8", budget, 30)(a_int8)

    def a_bf16():
        state["model"] = state["model"].to(torch.bfloat16)
        state["bf16"] = last_logits(state["model"], state["ids"], keep)
        agree["bf16_vs_fp32"] = agreement(state["ref"], state["bf16"])
        SUMMARY["weight_bytes"]["bf16"] = quantized_bytes(state["model"])

    step("a.bf16", budget, 10)(a_bf16)

    # (b) speed, bf16 ----------------------------------------------------------------------------------------
    speed = SUMMARY.setdefault("speed", {})

    def b_speed(tag: str):
        def run():
            model = state["model"]
            for b in batches:
                speed[f"{tag}_b{b}"] = {
                    "prefill_tokens_per_s": round(prefill_tps(model, b, prompt_len, cfg.vocab_size, device,
                                                              reps=3), 1),
                    **decode_tps(model, b, prompt_len, new_tokens, cfg.vocab_size, device)}
                log(f"  {tag} batch {b}: {speed[f'{tag}_b{b}']}")
            if device == "cuda":
                speed[f"{tag}_peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
                torch.cuda.reset_peak_memory_stats()
        return run

    if "bf16" in state:
        step("b.bf16", budget, 60)(b_speed("bf16"))

    # (a)+(b) FP8 --------------------------------------------------------------------------------------------
    if fp8_refusal is None and "bf16" in state:
        tag = "fp8_per_tensor_fallback" if fp8_per_tensor else "fp8"

        def a_fp8():
            if fp8_per_tensor:
                log("  PerRow failed on a shape (see fp8_probe): measuring PerTensor FP8 instead")
                state["model"] = quantize_fp8_per_tensor(state["model"])
            else:
                state["model"] = quantize_model(state["model"], "fp8")
            got = last_logits(state["model"], state["ids"], keep)
            agree[f"{tag}_vs_bf16"] = agreement(state["bf16"], got)
            agree[f"{tag}_vs_fp32"] = agreement(state["ref"], got)
            SUMMARY["weight_bytes"][tag] = quantized_bytes(state["model"])
            SUMMARY[f"quantized_linears_{tag}"] = len(quantized_modules(state["model"]))
            state["fp8"] = True

        step("a.fp8", budget, 30)(a_fp8)
        if state.get("fp8"):
            step("b.fp8", budget, 60)(b_speed(tag))
    elif fp8_refusal is not None:
        agree["fp8_vs_bf16"] = speed["fp8"] = {"refused": fp8_refusal}
    state.clear()
    if device == "cuda":
        torch.cuda.empty_cache()

    # (c) ONNX -----------------------------------------------------------------------------------------------
    onnx_state: dict = {}

    def c_onnx():
        import tempfile

        import numpy as np
        import onnxruntime as ort

        from deployment.onnx_export import export_decision

        small = model_config(tiny, layers=onnx_layers)
        model = build(small, "cpu")
        onnx_state["model"], onnx_state["cfg"] = model, small
        tmp = Path(tempfile.mkdtemp(prefix="issue8-onnx-"))
        onnx_state["dir"] = tmp
        t = time.perf_counter()
        path = export_decision(model, tmp / "decision.onnx")
        res = {"layers": onnx_layers, "export_s": round(time.perf_counter() - t, 1),
               "file_mb": round(path.stat().st_size / 2**20, 1)}
        g = torch.Generator().manual_seed(2)
        ids = torch.randint(1, small.vocab_size, (4, 48), generator=g)
        mask = torch.ones_like(ids)
        mask[1, :7], mask[3, :20] = 0, 0  # left padding on two rows
        ids[mask == 0] = 0
        onnx_state["ids"], onnx_state["mask"] = ids, mask
        with torch.inference_mode():
            ref = model(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits[:, -1, :].float()
        onnx_state["ref"] = ref
        available = ort.get_available_providers()
        want = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        sess = ort.InferenceSession(str(path), providers=want)
        feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
        t = time.perf_counter()
        got = sess.run(None, feeds)[0]
        res.update({"available_providers": available, "providers": sess.get_providers(),
                    "run_s": round(time.perf_counter() - t, 3),
                    "vs_torch_fp32": agreement(ref, torch.from_numpy(np.asarray(got)))})
        SUMMARY["onnx"] = res
        log(f"  onnx: {json.dumps(res)}")

    step("c.onnx", budget, 90)(c_onnx)

    def c_onnx_int8():
        import numpy as np
        import onnxruntime as ort

        from deployment.onnx_export import quantize_int8, quantize_weight_only

        tmp = onnx_state["dir"]
        # int8: the exporter's 8-bit MatMulNBits in blocks; int8_dynamic: onnxruntime's quantize_dynamic
        for key, quantize in (("int8", lambda f, o: quantize_weight_only(f, o, bits=8)),
                              ("int8_dynamic", quantize_int8)):
            t = time.perf_counter()
            q = quantize(tmp, tmp.parent / f"{tmp.name}-{key}")
            sess = ort.InferenceSession(str(q / "decision.onnx"), providers=["CPUExecutionProvider"])
            got = sess.run(None, {"input_ids": onnx_state["ids"].numpy(),
                                  "attention_mask": onnx_state["mask"].numpy()})[0]
            SUMMARY["onnx"][key] = {"quantize_s": round(time.perf_counter() - t, 1),
                                    "file_mb": round((q / "decision.onnx").stat().st_size / 2**20, 1),
                                    "vs_torch_fp32": agreement(onnx_state["ref"], torch.from_numpy(np.asarray(got)))}

    if "ref" in onnx_state:
        step("c.onnx_int8", budget, 120)(c_onnx_int8)

    # (d) torch INT8 on the CPU ------------------------------------------------------------------------------
    def d_cpu_int8():
        model, small = onnx_state["model"], onnx_state["cfg"]
        ids = torch.randint(0, small.vocab_size, (8, 64))

        @torch.inference_mode()
        def seconds(m) -> float:
            m(input_ids=ids, logits_to_keep=1)
            t = time.perf_counter()
            for _ in range(2):
                m(input_ids=ids, logits_to_keep=1)
            return (time.perf_counter() - t) / 2

        fp32_s = seconds(model)
        ref = last_logits(model, ids, 1)
        m8 = quantize_model(copy.deepcopy(model), "int8")
        int8_s = seconds(m8)
        SUMMARY["cpu_int8"] = {"batch": [8, 64], "threads": torch.get_num_threads(),
                               "fp32_prefill_s": round(fp32_s, 3), "int8_prefill_s": round(int8_s, 3),
                               "int8_vs_fp32": agreement(ref, last_logits(m8, ids, 1)),
                               "weight_bytes": {"fp32": quantized_bytes(model), "int8": quantized_bytes(m8)}}

    if "model" in onnx_state:
        step("d.cpu_int8", budget, 60)(d_cpu_int8)
    finish()


def finish() -> None:
    SUMMARY["elapsed_s"] = round(time.perf_counter() - T0, 1)
    text = json.dumps(SUMMARY, indent=1, default=str)
    print("=== gpu_check summary ===")
    print(text, flush=True)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_check.json").write_text(text)


if __name__ == "__main__":
    main()
