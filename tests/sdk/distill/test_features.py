"""Feature distillation on tiny random models: zero for a student that is the teacher, positive and
decreasing under training otherwise, a projection when widths differ, attention-map KL with eager
attention, the terms logged by the recipe, and the YAML keys."""

from __future__ import annotations

import json

import pytest
import torch

from sdk.distill.batching import left_pad, token_forward
from sdk.distill.features import FeatureKD, capture, use_eager_attention, with_features
from sdk.distill.losses import SoftTargetKD
from sdk.distill.recipe import decision_batch_loss, train
from sdk.models import load_causal_lm
from sdk.students import student_from_teacher

PROMPTS = ["$3 gift_cards online 02h RU, new device. Fraud?", "$120 grocery store 14h US, same device. Fraud?",
           "yes no yes", "account device store"] * 2


def _setup(tiny_llama, keep):
    teacher, tok = load_causal_lm(str(tiny_llama))
    teacher.eval()
    seqs = [tok(p)["input_ids"] for p in PROMPTS]
    return teacher, student_from_teacher(teacher, keep).train(), tok, seqs


def _terms(fkd, student, teacher, seqs, pad):
    idx = list(range(len(seqs)))
    fwd = token_forward(seqs, pad)
    with capture(student, sorted(fkd.layer_map), fkd.attention) as s, capture(teacher, sorted(set(fkd.layer_map.values())), fkd.attention) as t:
        fwd(student, idx)
        with torch.no_grad():
            fwd(teacher, idx)
    return fkd(s, t, left_pad(seqs, pad)["attention_mask"])


@pytest.mark.parametrize("loss", ["mse", "cosine"])
def test_a_student_that_is_the_teacher_has_zero_feature_loss_and_others_do_not(tiny_llama, loss):
    teacher, same, tok, seqs = _setup(tiny_llama, [0, 1])
    use_eager_attention(teacher, same)
    fkd = FeatureKD({0: 0, 1: 1}, 64, 64, loss=loss, attention_weight=1.0)
    assert fkd.proj is None
    assert _terms(fkd, same, teacher, seqs, tok.pad_token_id).abs().item() < 1e-5
    assert fkd.last_terms["feat_attention"] < 1e-6
    _, cut, _, _ = _setup(tiny_llama, [0])
    use_eager_attention(cut)
    value = _terms(FeatureKD({0: 1}, 64, 64, loss=loss, attention_weight=1.0), cut, teacher, seqs, tok.pad_token_id)
    assert value.item() > 1e-3
    value.backward()
    assert cut.model.layers[0].mlp.down_proj.weight.grad.abs().sum() > 0


def test_attention_maps_need_eager_attention(tiny_llama):
    teacher, student, tok, seqs = _setup(tiny_llama, [0])
    teacher.set_attn_implementation("sdpa")
    student.set_attn_implementation("sdpa")
    from sdk.errors import DistillError

    with pytest.raises(DistillError, match="eager"):
        _terms(FeatureKD({0: 1}, 64, 64, attention_weight=1.0), student, teacher, seqs, tok.pad_token_id)


def test_another_width_gets_a_trained_projection(tiny_llama):
    from transformers import LlamaConfig, LlamaForCausalLM

    teacher, _, tok, seqs = _setup(tiny_llama, [0])
    torch.manual_seed(0)
    narrow = LlamaForCausalLM(LlamaConfig(vocab_size=teacher.config.vocab_size, hidden_size=32, intermediate_size=64,
                                          num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    fkd = FeatureKD({0: 1}, 32, teacher.config.hidden_size, loss="mse")
    assert fkd.proj["0"].weight.shape == (teacher.config.hidden_size, 32)
    value = _terms(fkd, narrow, teacher, seqs, tok.pad_token_id)
    value.backward()
    assert fkd.proj["0"].weight.grad.abs().sum() > 0


def test_training_with_feature_terms_lowers_them_and_logs_them(tiny_llama, tmp_path):
    teacher, student, tok, seqs = _setup(tiny_llama, [0])
    label_ids = [tok.encode(" no")[0], tok.encode(" yes")[0]]
    fwd = token_forward(seqs, tok.pad_token_id)
    with torch.no_grad():
        top = fwd(teacher, list(range(len(seqs)))).topk(8, -1)
    targets = {"target": torch.tensor([label_ids[i % 2] for i in range(len(seqs))]),
               "teacher_topk_logits": top.values, "teacher_topk_ids": top.indices}
    kd = SoftTargetKD(temperature=2.0, alpha=0.5)
    fkd = FeatureKD({0: 1}, 64, 64, loss="mse", weight=2.0)
    batch_loss = with_features(decision_batch_loss(fwd, targets, kd), fkd, teacher, fwd,
                               lambda idx: left_pad([seqs[i] for i in idx], tok.pad_token_id)["attention_mask"])
    train(student, batch_loss, len(seqs), lambda m: 0.0, lr=3e-3, batch_size=4, max_epochs=6, eval_every=100,
          patience=5, seed=0, checkpoint_dir=tmp_path, loss_fn=[kd, fkd], extra_modules=[fkd])
    log = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines() if "loss" in json.loads(x)]
    first, last = log[0], log[-1]
    assert {"ce", "kd", "feat_hidden"} <= set(first)
    assert last["feat_hidden"] < 0.7 * first["feat_hidden"]
    # the step's loss is the main loss plus the weighted feature term
    assert abs(first["loss"] - (0.5 * first["ce"] + 0.5 * first["kd"] + 2.0 * first["feat_hidden"])) < 1e-4


def test_feature_keys_in_yaml():
    from sdk.config import DistillConfig

    d = DistillConfig.model_validate({"features": {"layers": {0: 3, 1: 7}, "loss": "cosine",
                                                   "weight": {"kind": "linear", "start": 1.0, "end": 0.0}}})
    assert d.features.layers == {0: 3, 1: 7} and d.features.loss == "cosine" and d.features.attention_weight == 0
    for bad in ({"loss": "l1"}, {"weight": -1.0}, {"layer": {0: 1}}):
        with pytest.raises(ValueError):
            DistillConfig.model_validate({"features": bad})
