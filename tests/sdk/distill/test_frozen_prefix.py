import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from sdk.distill.batching import token_forward
from sdk.distill.frozen_prefix import (cache_hidden_states, cache_sequences, cached_forward, prefix_is_frozen,
                                      same_prefix, top_view)
from sdk.students import decoder_linear_names

PROMPTS = ["$3 gift_cards online 02h RU", "account 300d, same device, 0 tx/h. Fraud?", "yes no"]


def _peft(tiny_llama):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=decoder_linear_names(model), layers_to_transform=[2, 3],
                     init_lora_weights=False)  # random B: the adapters change the output
    return get_peft_model(model, cfg).eval(), tok


def test_top_view_on_cached_activations_equals_full_forward(tiny_llama):
    model, tok = _peft(tiny_llama)
    seqs = [tok(p)["input_ids"] for p in PROMPTS]
    idx = [0, 1, 2]
    with torch.no_grad():
        full = token_forward(seqs, tok.pad_token_id)(model, idx)
        cache = cache_hidden_states(model, seqs, start=2, pad_id=tok.pad_token_id, batch_size=2, desc=None)
        cached = cached_forward(cache)(top_view(model, 2), idx)
    assert torch.allclose(full, cached, atol=1e-4)


def test_training_the_top_view_trains_the_original_adapters(tiny_llama):
    model, tok = _peft(tiny_llama)
    seqs = [tok(p)["input_ids"] for p in PROMPTS]
    view = top_view(model, 2)
    trainable = [n for n, p in view.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert all(".layers.0." in n or ".layers.1." in n for n in trainable)  # view-local indices of layers 2, 3
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    cache = cache_hidden_states(model, seqs, start=2, pad_id=tok.pad_token_id, desc=None)
    loss = cached_forward(cache)(view, [0, 1, 2]).logsumexp(-1).sum()
    loss.backward()
    with torch.no_grad():
        for p in view.parameters():
            if p.requires_grad:
                p -= 0.1 * p.grad
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert changed


# --- whole sequences (generation shape): ragged cache of layer `start`'s inputs

SEQS = [[5, 9, 13, 2, 7, 30, 31], [8, 4], [11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21], [3, 3, 3, 40]]


def _student(tiny_llama, keep=(0, 1, 2, 3)):
    from sdk.students import freeze_layers, student_from_teacher

    teacher = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    student = student_from_teacher(teacher, list(keep))
    student.get_input_embeddings().weight.requires_grad_(False)
    freeze_layers(student, 2)
    return student


def test_cache_sequences_holds_each_sequences_input_of_layer_start(tiny_llama):
    student = _student(tiny_llama)
    cache = cache_sequences(student, SEQS, start=2, pad_id=0, batch_size=3, desc=None)
    assert (cache.start, cache.top_layers, len(cache)) == (2, 2, len(SEQS))
    assert cache.lengths == [len(s) for s in SEQS]
    assert cache.nbytes == sum(map(len, SEQS)) * student.config.hidden_size * 4
    with torch.no_grad():
        for s, h in zip(SEQS, cache.hidden):
            # hidden_states[2] = output of layer 1 = input of layer 2, for the sequence alone (no padding)
            ref = student(input_ids=torch.tensor([s]), output_hidden_states=True).hidden_states[2][0]
            assert h.dtype == torch.float32 and h.shape == ref.shape and not h.requires_grad
            assert torch.allclose(h, ref, atol=1e-5), (h - ref).abs().max()
    padded = cache.padded([1, 2], width=12)
    assert padded.shape == (2, 12, student.config.hidden_size)
    assert torch.equal(padded[0, :2], cache.hidden[1]) and (padded[0, 2:] == 0).all()
    assert torch.equal(padded[1, :11], cache.hidden[2]) and (padded[1, 11:] == 0).all()
    sub = cache.subset([3, 0])
    assert sub.lengths == [4, 7] and sub.hidden[0] is cache.hidden[3]


def test_prefix_is_frozen_only_when_embeddings_and_bottom_layers_are(tiny_llama):
    student = _student(tiny_llama)
    assert prefix_is_frozen(student, 2)
    assert not prefix_is_frozen(student, 3)  # layer 2 trains
    assert not prefix_is_frozen(student, 0) and not prefix_is_frozen(student, 4)
    student.get_input_embeddings().weight.requires_grad_(True)
    assert not prefix_is_frozen(student, 2)


def test_same_prefix_compares_the_bottom_weights(tiny_llama):
    a, b = _student(tiny_llama, (0, 1, 3)), _student(tiny_llama, (0, 1, 2))
    assert same_prefix(a, b, 2)
    assert not same_prefix(a, b, 3)
    with torch.no_grad():
        b.get_decoder().layers[1].mlp.down_proj.weight[0, 0] += 1.0
    assert not same_prefix(a, b, 2)
