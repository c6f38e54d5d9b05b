"""The `llamacpp` teacher: a local GGUF in llama.cpp (its own process), checked against the same weights in
transformers, and the fraud pipeline end to end with it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deployment.gguf import write_gguf
from sdk import config as cfgmod
from sdk.project import Project


@pytest.fixture(scope="module")
def tiny_gguf(tiny_llama, tmp_path_factory):
    return write_gguf(tiny_llama, tmp_path_factory.mktemp("gguf") / "teacher-f32.gguf", "F32")


def test_response_topk_matches_transformers(tiny_llama, tiny_gguf):
    from deployment.runtimes.llama_cpp_runtime import LlamaCppRuntime
    from sdk.distill.sequence import teacher_topk
    from sdk.models import load_causal_lm

    model, tok = load_causal_lm(tiny_llama)
    prompts = [tok.encode("$3 gift_cards online 02h RU. Fraud?"), tok.encode("The quick brown fox")]
    responses = [tok.encode(" yes no yes"), tok.encode(" jumps over")]
    expected = teacher_topk(model, prompts, responses, 4, tok.pad_token_id)
    rt = LlamaCppRuntime(str(tiny_gguf), threads=1, n_ctx=64, logits_all=True, kv_f32=True)
    got = rt.topk_responses(prompts, responses, 4)
    for (lp, ix), (elp, eix) in zip(got, expected):
        assert lp.shape == tuple(elp.shape)
        np.testing.assert_allclose(lp, elp.float().numpy(), atol=2e-2)  # the reference is stored in float16
        assert (ix[:, 0] == eix[:, 0].numpy()).all()
    values, ids = rt.topk_last(prompts, 4)
    with torch.no_grad():
        last = torch.stack([model(torch.tensor([p])).logits[0, -1] for p in prompts])
    np.testing.assert_allclose(values, last.topk(4).values.numpy(), atol=1e-3)
    assert (ids == last.topk(4).indices.numpy()).all()


def test_fraud_pipeline_with_a_gguf_teacher(tiny_llama, tiny_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    raw = cfgmod.load_yaml(cfgmod.Path(__file__).parents[3] / "verticals" / "fraud" / "tiny.yaml")
    raw["teacher"] = {"kind": "llamacpp", "model": str(tiny_gguf), "n_ctx": 256, "threads": 1}
    raw["student"] = {"base": str(tiny_llama), "layers": 2}
    raw["export"] = {"formats": {"gguf": {"quants": ["Q8_0"]}}}
    r = Project(cfgmod.validate_config(raw)).run(tmp_path / "run").report
    teacher = r["artifacts"][0]
    assert teacher["name"] == "teacher-gguf" and teacher["format"] == "gguf" and teacher["params"] > 0
    assert r["annotation"]["teacher_runtime"] == "llama_cpp" and r["annotation"]["top_k"] == 8
    student = next(a for a in r["artifacts"] if a["name"] == "student-gguf-Q8_0")
    assert student["params"] < teacher["params"]
    # the teacher's evaluation scores the same GGUF as its annotation (one llama.cpp process each)
    assert 0.0 <= teacher["metrics"]["roc_auc"] <= 1.0
