"""ONNX graphs of tiny random llama and qwen2 students against transformers: decision logits at the last
(left-padded) position and every step of a KV-cached greedy generation within 1e-3, greedy tokens identical
for 32 steps."""

from __future__ import annotations

import pytest
import torch

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def _tiny(kind: str):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    common = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=True))
    else:  # the DeepSeek-R1-Distill-Qwen family: biases on q/k/v
        model = Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=False))
    with torch.no_grad():  # random init is near-uniform: scale up so logits have structure to compare
        for p in model.parameters():
            p.mul_(4.0) if p.ndim > 1 else p.normal_(0.0, 0.3) if p.abs().sum() == 0 else None
    return model.eval()


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_decision_graph_matches_transformers_with_left_padding(kind, tmp_path):
    from deployment.onnx_export import export_decision

    model = _tiny(kind)
    path = export_decision(model, tmp_path / "decision.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert sess.get_providers() == ["CPUExecutionProvider"]
    gen = torch.Generator().manual_seed(1)
    for batch, width in [(3, 13), (1, 5), (4, 40)]:
        ids = torch.randint(0, 300, (batch, width), generator=gen)
        mask = torch.ones_like(ids)
        mask[0, : width // 2] = 0  # left padding
        with torch.no_grad():
            ref = model(input_ids=ids, attention_mask=mask).logits[:, -1].numpy()
        got = sess.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        assert got.shape == ref.shape and abs(got - ref).max() < 1e-3


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_generation_graph_with_kv_cache_matches_transformers_for_32_greedy_steps(kind, tmp_path):
    import numpy as np

    from deployment.onnx_export import export_generation, kv_shape, past_names

    model = _tiny(kind)
    sess = ort.InferenceSession(str(export_generation(model, tmp_path / "generation.onnx")),
                                providers=["CPUExecutionProvider"])
    prompt = [5, 17, 42, 7, 99, 3]
    n_layers, kv_heads, head_dim = kv_shape(model.config)
    names = past_names(n_layers)
    # greedy decoding through the graph: the prompt from an empty past, then one token a step
    past = {n: np.zeros((1, kv_heads, 0, head_dim), dtype=np.float32) for n in names}
    piece, length, tokens, rows = prompt, 0, [], []
    for _ in range(32):
        feeds = {"input_ids": np.array([piece]), "attention_mask": np.ones((1, length + len(piece)), dtype=np.int64),
                 "position_ids": np.arange(length, length + len(piece))[None, :], **past}
        logits, *present = sess.run(None, feeds)
        past, length = dict(zip(names, present)), length + len(piece)
        rows.append(logits[0])
        tokens.append(int(logits[0].argmax()))
        piece = [tokens[-1]]
    with torch.no_grad():
        ref = model.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False, min_new_tokens=32,
                             attention_mask=torch.ones(1, len(prompt), dtype=torch.long))[0, len(prompt):].tolist()
        # logits at every position of the whole sequence computed at once, without a cache
        full = model(torch.tensor([prompt + ref])).logits[0, len(prompt) - 1:-1].numpy()
    assert tokens == ref
    assert abs(np.stack(rows) - full).max() < 1e-3
