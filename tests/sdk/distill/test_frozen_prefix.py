import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from sdk.distill.batching import token_forward
from sdk.distill.frozen_prefix import cache_hidden_states, cached_forward, top_view
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
