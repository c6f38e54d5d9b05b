"""Parity: a GGUF written from an unquantized student reproduces transformers, position by position."""

from __future__ import annotations

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


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_llama_untied", "tiny_llama_bias"])
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


def test_unsupported_architecture_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(DistillError, match="config.json"):
        write_gguf(tmp_path, tmp_path / "x.gguf")


def test_unknown_quant_type(tmp_path):
    with pytest.raises(DistillError, match="Q3_XYZ"):
        quantize(tmp_path / "a.gguf", tmp_path / "b.gguf", "Q3_XYZ")
