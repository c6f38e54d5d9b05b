import pytest
import torch
from transformers import AutoModelForCausalLM

from sdk.students import count_params, count_params_on_disk, evenly_spaced_layers, student_from_teacher


def test_evenly_spaced_layers():
    assert evenly_spaced_layers(30, 6) == [0, 6, 12, 17, 23, 29]
    assert evenly_spaced_layers(4, 4) == [0, 1, 2, 3]
    assert evenly_spaced_layers(4, 1) == [3]


def test_student_keeping_every_layer_reproduces_the_teacher(tiny_llama):
    teacher = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    student = student_from_teacher(teacher, [0, 1, 2, 3])
    x = torch.randint(0, teacher.config.vocab_size, (2, 12))
    with torch.no_grad():
        assert torch.allclose(teacher(x).logits, student(x).logits, atol=1e-5)


def test_student_copies_the_kept_layers(tiny_llama):
    teacher = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    student = student_from_teacher(teacher, [0, 3])
    assert student.config.num_hidden_layers == 2
    t_layers, s_layers = teacher.get_decoder().layers, student.get_decoder().layers
    assert torch.equal(s_layers[1].mlp.down_proj.weight, t_layers[3].mlp.down_proj.weight)
    assert torch.equal(s_layers[0].self_attn.q_proj.weight, t_layers[0].self_attn.q_proj.weight)
    assert s_layers[1].mlp.down_proj.weight.data_ptr() != t_layers[3].mlp.down_proj.weight.data_ptr()
    assert count_params(student) < count_params(teacher)


def test_params_on_disk_equal_params_in_memory(tiny_llama):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    assert count_params_on_disk(tiny_llama) == count_params(model)


def test_frozen_bottom_keeps_the_teachers_first_layers_and_spreads_the_rest():
    from sdk.students import bottom_and_spread_layers

    assert bottom_and_spread_layers(30, 12, 6) == [0, 1, 2, 3, 4, 5, 6, 11, 15, 20, 24, 29]
    assert bottom_and_spread_layers(30, 6, 0) == evenly_spaced_layers(30, 6)
    assert bottom_and_spread_layers(8, 7, 5) == [0, 1, 2, 3, 4, 5, 7]
    with pytest.raises(ValueError, match="frozen_bottom"):
        bottom_and_spread_layers(30, 6, 6)


def test_freeze_layers_stops_gradients_below(tiny_llama):
    from sdk.models import load_causal_lm
    from sdk.students import freeze_layers

    model, _ = load_causal_lm(tiny_llama)
    freeze_layers(model, 2)
    layers = model.get_decoder().layers
    assert not any(p.requires_grad for layer in layers[:2] for p in layer.parameters())
    assert all(p.requires_grad for layer in layers[2:] for p in layer.parameters())
