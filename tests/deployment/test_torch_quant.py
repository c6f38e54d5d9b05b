"""torch-side quantization (deployment.torch_quant through TorchRuntime): dynamic INT8 on the tiny random llama
against fp32, the output head and embeddings left in fp32, the weight bytes INT8 saves; FP8 refused on
hardware without it (and run for real on a GPU of compute capability >= 8.9).

Tolerances: the fixture's weights are scaled x8 (conftest), so activations are large and every quantization
error is amplified; a worst case next to a trained student. Measured on seeds 0-3 of that model, 30 prompt
prefixes, label probabilities P(" no") / P(" yes") against fp32:
- INT8 (W8A8, per-row weights, per-token activations): max |dP| 0.044-0.071, mean 0.009-0.014, no argmax
  flip where fp32 is further than 0.01 from 0.5. Bounds: max < 0.15, mean < 0.03, no flip beyond 0.15.
- FP8 E4M3 (simulated on CPU: per-row fake quantization in bf16): max |dP| 0.08-0.33, mean 0.02-0.06, flips up
  to a fp32 margin of 0.23. Bounds for the GPU test: mean < 0.12, no flip where fp32 is beyond 0.1/0.9.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("torchao")

from deployment.torch_quant import fp8_capable  # noqa: E402

BODY = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _prompts(tok) -> tuple[list[list[int]], list[int]]:
    """Prefixes of the fixture's corpus lines (30 prompts) and the two label ids."""
    from tests.conftest import CORPUS

    seqs = []
    for text in sorted(set(CORPUS)):
        ids = tok(text)["input_ids"]
        seqs += [ids[:k] for k in range(3, len(ids), 2)]
    return seqs, [tok.encode(" no")[0], tok.encode(" yes")[0]]


@pytest.fixture(scope="module")
def fp32_and_int8(tiny_llama):
    from deployment.runtimes.torch_runtime import TorchRuntime

    return TorchRuntime(str(tiny_llama), threads=2), TorchRuntime(str(tiny_llama), threads=2, quantize="int8")


def test_int8_scores_stay_close_to_fp32_and_generation_runs(fp32_and_int8):
    from deployment.runtimes.generation import GenerationParams

    fp32, int8 = fp32_and_int8
    seqs, labels = _prompts(fp32.tok)
    ref, got = fp32.score(seqs, labels), int8.score(seqs, labels)
    diff = np.abs(got - ref)[:, 0]
    assert got.shape == (len(seqs), 2) and np.allclose(got.sum(1), 1, atol=1e-5)
    assert 0 < diff.max() < 0.15 and diff.mean() < 0.03  # quantized (not identical), yet close
    clear = np.abs(ref[:, 0] - 0.5) > 0.15
    assert clear.sum() >= 10 and (got.argmax(1) == ref.argmax(1))[clear].all()
    # batch 1 against the batch: float sums in another order can cross an int8 rounding step (0.003 measured)
    assert np.abs(int8.score_one(seqs[5], labels) - got[5]).max() < 0.02
    params = GenerationParams(max_new_tokens=12)
    gen = int8.generate_one(seqs[0], params)
    assert isinstance(gen.text, str) and gen.finish in ("stop", "length")
    assert 1 <= gen.n_tokens <= 12 or gen.finish == "stop"
    batch = int8.generate(seqs[:3], params)
    assert [len(g) for g in batch] == [1, 1, 1] and all(g[0].n_tokens <= 12 for g in batch)


def test_int8_quantizes_the_body_linears_only_and_saves_three_quarters_of_their_bytes(fp32_and_int8):
    from deployment.torch_quant import quantized_bytes, quantized_modules

    fp32, int8 = fp32_and_int8
    n_layers = fp32.model.config.num_hidden_layers
    names = quantized_modules(int8.model)
    assert len(names) == len(BODY) * n_layers and all(n.rsplit(".", 1)[-1] in BODY for n in names)
    head, embed = int8.model.lm_head.weight, int8.model.model.embed_tokens.weight
    assert "lm_head" not in names and type(head) is torch.nn.Parameter and head.dtype == torch.float32
    assert head is embed  # the tied head stays tied to the (unquantized) embedding matrix
    assert quantized_modules(fp32.model) == []
    # the fp32 model's bytes are its unique parameters' elements x 4
    assert fp32.weight_bytes == 4 * sum(p.numel() for p in fp32.model.parameters())
    for name in names:
        q, f = int8.model.get_submodule(name), fp32.model.get_submodule(name)
        out_features, in_features = f.weight.shape
        # int8 data, then per-row scale and zero point: (K + 5) / 4K of fp32, 0.26-0.27 at K = 64-128
        assert out_features * in_features < quantized_bytes(q) < 0.28 * quantized_bytes(f)
    body_fp32 = sum(quantized_bytes(fp32.model.get_submodule(n)) for n in names)
    assert fp32.weight_bytes - int8.weight_bytes > 0.7 * body_fp32
    assert int8.weight_bytes < 0.5 * fp32.weight_bytes  # the float embedding/head is the rest


def test_unknown_kind_is_refused_naming_the_known_ones(tiny_llama):
    from deployment.runtimes.torch_runtime import TorchRuntime
    from deployment.torch_quant import quantize_model

    with pytest.raises(ValueError, match="int4.*known: int8, fp8"):
        quantize_model(torch.nn.Linear(16, 16), "int4")
    with pytest.raises(ValueError, match="int4"):  # before the (missing) model is loaded
        TorchRuntime("/nonexistent/model", quantize="int4")


@pytest.mark.skipif(fp8_capable(), reason="this machine runs FP8: the real path is tested instead")
def test_fp8_is_refused_without_a_capable_gpu_before_the_model_is_touched(tiny_llama):
    from deployment.runtimes.torch_runtime import TorchRuntime
    from deployment.torch_quant import quantize_model, quantized_modules
    from sdk.errors import DistillError
    from sdk.models import load_causal_lm

    model, _ = load_causal_lm(str(tiny_llama))
    # the message names what is needed and what this machine has
    needs = r"fp8 .*compute capability >= 8\.9.*this machine has (no CUDA device|.*compute capability [0-8]\.)"
    with pytest.raises(DistillError, match=needs):
        quantize_model(model, "fp8")
    param = next(model.parameters())
    assert param.dtype == torch.float32 and param.device.type == "cpu" and quantized_modules(model) == []
    with pytest.raises(DistillError, match=r"compute capability >= 8\.9"):
        TorchRuntime(str(tiny_llama), quantize="fp8")
    if not torch.cuda.is_available():
        with pytest.raises(DistillError, match="no CUDA device"):
            TorchRuntime(str(tiny_llama), quantize="fp8", device="cuda")


@pytest.mark.skipif(not fp8_capable(), reason="needs an NVIDIA GPU of compute capability >= 8.9 (H100/H200, Ada)")
def test_fp8_on_a_capable_gpu_stays_near_fp32_and_generates(tiny_llama, fp32_and_int8):
    from deployment.runtimes.generation import GenerationParams
    from deployment.runtimes.torch_runtime import TorchRuntime
    from deployment.torch_quant import quantized_modules

    fp32 = fp32_and_int8[0]
    fp8 = TorchRuntime(str(tiny_llama), quantize="fp8", device="cuda")
    assert fp8.model.lm_head.weight.dtype == torch.bfloat16 and fp8.model.lm_head.weight.device.type == "cuda"
    names = quantized_modules(fp8.model)  # every body dimension here is a multiple of 16
    assert len(names) == len(BODY) * fp8.model.config.num_hidden_layers and "lm_head" not in names
    seqs, labels = _prompts(fp32.tok)
    ref, got = fp32.score(seqs, labels), fp8.score(seqs, labels)
    diff = np.abs(got - ref)[:, 0]
    assert 0 < diff.mean() < 0.12
    clear = np.abs(ref[:, 0] - 0.5) > 0.4
    assert (got.argmax(1) == ref.argmax(1))[clear].all()
    assert np.abs(fp8.score_one(seqs[5], labels) - got[5]).max() < 0.05
    gen = fp8.generate_one(seqs[0], GenerationParams(max_new_tokens=12))
    assert isinstance(gen.text, str) and (1 <= gen.n_tokens <= 12 or gen.finish == "stop")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_int8_on_cuda_matches_the_cpu_bounds_and_generates(tiny_llama, fp32_and_int8):
    from deployment.runtimes.generation import GenerationParams
    from deployment.runtimes.torch_runtime import TorchRuntime

    fp32 = fp32_and_int8[0]
    int8 = TorchRuntime(str(tiny_llama), quantize="int8", device="cuda")
    assert int8.weight_bytes == fp32_and_int8[1].weight_bytes  # the same int8 data and scales as on the CPU
    seqs, labels = _prompts(fp32.tok)
    diff = np.abs(int8.score(seqs, labels) - fp32.score(seqs, labels))[:, 0]
    assert diff.max() < 0.15 and diff.mean() < 0.03
    gen = int8.generate_one(seqs[0], GenerationParams(max_new_tokens=12))
    assert isinstance(gen.text, str) and (1 <= gen.n_tokens <= 12 or gen.finish == "stop")
