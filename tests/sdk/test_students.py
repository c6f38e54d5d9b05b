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
