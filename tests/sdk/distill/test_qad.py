"""Quantization-aware distillation: the weights a student trains through are the values llama.cpp's real
quantizer writes into the GGUF file (its own per-tensor types, after the exporter's F16 step), gradients pass
straight through, and removing the fake quantization gives back the latent weights (and a tied head)."""

import numpy as np
import pytest
import torch

pytest.importorskip("llama_cpp")


def _load(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


@pytest.mark.parametrize("qtype", ["Q4_K_M", "Q2_K"])
def test_fake_quantized_weights_are_the_gguf_files_weights(qtype, tiny_qwen2, tmp_path):
    """tiny_qwen2 has rows of 256 and 512: the K-quants themselves, with the _M mix's choices per tensor."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    from deployment.gguf import quantize, quantized_tensor_types, tensor_names, write_gguf
    from sdk.distill import qad

    types = quantized_tensor_types(tiny_qwen2, qtype, threads=1)
    model = _load(tiny_qwen2)
    counts = qad.attach(model, types)
    assert sum(counts.values()) == sum(t != "F32" for t in types.values()) + 1  # + the tied lm_head
    q = quantize(write_gguf(tiny_qwen2, tmp_path / "m-F16.gguf", "F16"), tmp_path / f"m-{qtype}.gguf", qtype, 1)
    stored = {t.name: t for t in GGUFReader(q).tensors}
    names, params = tensor_names(tiny_qwen2), dict(model.named_parameters())
    checked = set()
    with torch.no_grad():
        for key, ggml_type in types.items():
            t = stored[names[key]]
            assert t.tensor_type.name == ggml_type
            if ggml_type == "F32":
                continue
            module = model.get_submodule(key.removesuffix(".weight"))
            want = dequantize(t.data, t.tensor_type).reshape(module.weight.shape)
            # qwen2: weights are written as stored; equal up to the float rounding of d * scale * q (gguf-py
            # multiplies in another order)
            np.testing.assert_allclose(module.weight.numpy(), want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
            checked.add(ggml_type)
        assert torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)  # the tied output, quantized
    assert {"Q4_K", "Q6_K"} <= checked if qtype == "Q4_K_M" else {"Q2_K", "Q3_K"} <= checked
    assert all(not n.endswith("original") or p.requires_grad for n, p in params.items())


def test_gradients_pass_straight_through_and_detach_restores_the_latent_weights(tiny_qwen2):
    from sdk.distill import qad
    from sdk.distill.ggml_quant import quantize_dequantize

    model = _load(tiny_qwen2)
    latent = {k: v.clone() for k, v in model.state_dict().items()}
    proj = model.model.layers[0].mlp.down_proj  # rows of 512
    qad.attach(model, {"model.layers.0.mlp.down_proj.weight": "Q4_K", "model.embed_tokens.weight": "Q8_0"})
    w = proj.weight
    assert torch.equal(w.detach(), quantize_dequantize(latent["model.layers.0.mlp.down_proj.weight"].half().float(), "Q4_K"))
    assert not torch.equal(w.detach(), latent["model.layers.0.mlp.down_proj.weight"])
    ids = torch.tensor([[1, 5, 9, 2, 7]])
    model(ids, labels=ids).loss.backward()
    original = proj.parametrizations.weight.original
    assert original.grad is not None and original.grad.abs().sum() > 0
    # STE: the latent weight gets exactly the gradient of the quantized weight it stands for
    x = torch.randn(3, 512)
    g = torch.randn(3, proj.weight.shape[0])
    original.grad = None
    (proj(x) * g).sum().backward()
    torch.testing.assert_close(original.grad, g.T @ x)
    qad.detach(model)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied
    for k, v in model.state_dict().items():
        assert torch.equal(v, latent[k]), k
    assert "original" not in " ".join(model.state_dict())


def test_a_frozen_weight_is_quantized_once_until_it_changes(tiny_qwen2):
    from sdk.distill import qad

    model = _load(tiny_qwen2)
    emb = model.model.embed_tokens
    emb.weight.requires_grad_(False)
    qad.attach(model, {"model.embed_tokens.weight": "Q8_0"})
    first = emb.weight
    assert emb.weight is first  # cached: the frozen weight is not requantized every forward
    with torch.no_grad():
        emb.parametrizations.weight.original.mul_(2)
    assert emb.weight is not first and torch.allclose(emb.weight, 2 * first, rtol=0.02, atol=1e-3)


def test_qad_config_refuses_unknown_types():
    from pydantic import ValidationError

    from sdk.distill.qad import QADConfig

    with pytest.raises(ValidationError, match="Q9_K"):
        QADConfig(types=["Q4_K_M", "Q9_K"])
    with pytest.raises(ValidationError, match="twice"):
        QADConfig(types=["Q2_K", "Q2_K"])


def test_a_trained_weight_is_requantized_after_each_optimizer_step_only(tiny_qwen2):
    """The quantized values are kept while the weight is unchanged (validation, accumulation micro-batches)
    and recomputed once the optimizer has stepped."""
    from sdk.distill import qad
    from sdk.distill.ggml_quant import quantize_dequantize

    model = _load(tiny_qwen2)
    proj = model.model.layers[0].mlp.down_proj
    qad.attach(model, {"model.layers.0.mlp.down_proj.weight": "Q4_K"})
    fq = proj.parametrizations.weight[0]
    first = proj.weight
    kept = fq._kept[2]
    proj.weight
    assert fq._kept[2] is kept  # the second access quantized nothing
    opt = torch.optim.SGD([proj.parametrizations.weight.original], lr=0.5)
    (proj(torch.randn(2, 512)) ** 2).sum().backward()
    opt.step()
    latent = proj.parametrizations.weight.original.detach()
    assert torch.equal(proj.weight.detach(), quantize_dequantize(latent.half().float(), "Q4_K"))
    assert not torch.equal(proj.weight.detach(), first.detach()) and fq._kept[2] is not kept
