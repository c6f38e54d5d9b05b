"""Text generation in the torch and llama.cpp runtimes: greedy parity between torch and the F32 GGUF,
batching, seeded sampling, stop strings, lengths and timings."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from deployment.gguf import write_gguf
from deployment.runtimes.generation import GenerationParams, truncate_at_stop
from sdk.errors import DistillError

PROMPTS = ["$3 gift_cards online 02h RU, account 4d", "The quick brown fox", "Fraud? account device",
           "$120 grocery store 14h US, account 300d, same device, 0 tx/h. Fraud? no yes no"]
# F32 GGUF logits match transformers to < 1e-3 (test_gguf); a greedy choice whose top-2 margin is under
# twice that could flip on rounding alone, and everything after it would then differ
TIE_MARGIN = 2e-3


@pytest.fixture(scope="module")
def torch_rt(tiny_llama):
    from deployment.runtimes.torch_runtime import TorchRuntime

    return TorchRuntime(str(tiny_llama), threads=1, batch_size=3)


@pytest.fixture(scope="module")
def gguf_rt(tiny_llama, tmp_path_factory):
    from deployment.runtimes.llama_cpp_runtime import LlamaCppRuntime

    path = write_gguf(tiny_llama, tmp_path_factory.mktemp("gguf") / "m-f32.gguf", "F32")
    return LlamaCppRuntime(str(path), threads=1, n_ctx=128, kv_f32=True)


@pytest.fixture(scope="module")
def prompt_ids(torch_rt):
    ids = [torch_rt.tok(p)["input_ids"] for p in PROMPTS]
    assert len({len(i) for i in ids}) == len(ids)  # different lengths, so batches are padded
    return ids


def _clear_prefix_len(model, prompt: list[int], new: list[int]) -> int:
    """How many of the greedy tokens `new` are chosen by a top-2 margin of at least TIE_MARGIN."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + new])).logits[0, len(prompt) - 1: len(prompt) - 1 + len(new)]
    top2 = logits.topk(2, dim=-1).values
    assert (logits.argmax(-1).tolist() == new)  # torch's generate() really is greedy
    tight = ((top2[:, 0] - top2[:, 1]) < TIE_MARGIN).nonzero()
    return int(tight[0]) if len(tight) else len(new)


def test_greedy_torch_matches_f32_gguf_token_for_token(torch_rt, gguf_rt, prompt_ids):
    params = GenerationParams(max_new_tokens=32)
    compared = 0
    for prompt, [ref] in zip(prompt_ids, torch_rt.generate(prompt_ids, params)):
        got = gguf_rt.generate_one(prompt, params)
        # compared up to the first near-tie (when written, all 4 x 32 ids were equal, though one choice had a
        # margin of 1e-4, so the first prompt is compared on its first 19 tokens only)
        k = _clear_prefix_len(torch_rt.model, prompt, ref.token_ids)
        assert got.token_ids[:k] == ref.token_ids[:k]
        if k == len(ref.token_ids):
            assert got.token_ids == ref.token_ids and got.finish == ref.finish
        compared += k
    assert compared >= 0.75 * 32 * len(prompt_ids)


def test_batched_generate_equals_one_at_a_time(torch_rt, prompt_ids):
    params = GenerationParams(max_new_tokens=24)
    batched = torch_rt.generate(prompt_ids, params)  # batch_size 3: one padded batch of 3, then 1
    assert [len(g) for g in batched] == [1] * len(prompt_ids)
    for prompt, [gen] in zip(prompt_ids, batched):
        one = torch_rt.generate_one(prompt, params)
        assert gen.token_ids == one.token_ids
        assert gen.text == one.text


@pytest.mark.parametrize("runtime", ["torch_rt", "gguf_rt"])
def test_sampling_is_seeded(runtime, request, prompt_ids):
    rt = request.getfixturevalue(runtime)
    params = GenerationParams(max_new_tokens=16, temperature=1.5, n=4, seed=7)
    first = rt.generate(prompt_ids[:2], params)
    again = rt.generate(prompt_ids[:2], params)
    other_seed = rt.generate(prompt_ids[:2], GenerationParams(max_new_tokens=16, temperature=1.5, n=4, seed=8))
    ids = [[g.token_ids for g in gens] for gens in first]
    assert ids == [[g.token_ids for g in gens] for gens in again]
    assert ids != [[g.token_ids for g in gens] for gens in other_seed]
    for gens in ids:
        assert len(gens) == 4 and len({tuple(g) for g in gens}) > 1  # the n completions differ


def test_greedy_n_copies_one_completion(gguf_rt, torch_rt, prompt_ids):
    for rt in (torch_rt, gguf_rt):
        [gens] = rt.generate(prompt_ids[:1], GenerationParams(max_new_tokens=8, n=3))
        assert len(gens) == 3 and len({tuple(g.token_ids) for g in gens}) == 1


@pytest.mark.parametrize("runtime", ["torch_rt", "gguf_rt"])
def test_stop_string_truncates(runtime, request, prompt_ids):
    rt = request.getfixturevalue(runtime)
    full = rt.generate_one(prompt_ids[1], GenerationParams(max_new_tokens=40))
    assert full.finish == "length"
    # a stop string from the middle of the free-running text that straddles two tokens, so the token
    # completing it comes after the one where the kept text ends
    bounds = [len(rt._decode(full.token_ids[:j])) for j in range(len(full.token_ids) // 2, len(full.token_ids))]
    mid = next(b - 1 for b in bounds if "\ufffd" not in full.text[b - 1: b + 1])
    stop = full.text[mid: mid + 2]
    cut = full.text.find(stop)
    got = rt.generate_one(prompt_ids[1], GenerationParams(max_new_tokens=40, stop=["NEVER-SEEN", stop]))
    assert got.finish == "stop"
    assert got.text == full.text[:cut]
    assert got.n_tokens < full.n_tokens and got.token_ids == full.token_ids[: got.n_tokens]
    # the ids are those that produced the kept text: all of them are needed, and they decode to it (+ at most
    # the part of a token that straddles the stop string)
    assert rt._decode(got.token_ids).startswith(got.text)
    assert len(rt._decode(got.token_ids[:-1])) < len(got.text)


@pytest.mark.parametrize("runtime", ["torch_rt", "gguf_rt"])
def test_length_limit_and_timings(runtime, request, prompt_ids):
    rt = request.getfixturevalue(runtime)
    for prompt in prompt_ids:
        gen = rt.generate_one(prompt, GenerationParams(max_new_tokens=7))
        assert gen.finish == "length" and gen.n_tokens == len(gen.token_ids) == 7
        assert 0 < gen.ttft_s <= gen.seconds
    [[gen]] = rt.generate(prompt_ids[:1], GenerationParams(max_new_tokens=5))
    assert gen.n_tokens == 5 and 0 < gen.ttft_s <= gen.seconds


def test_generation_config_eos_ends_generation(tiny_llama, torch_rt, prompt_ids, tmp_path):
    """An end-of-turn id listed only in generation_config (as chat models do) stops generation; it and
    whatever follows are not in token_ids."""
    from deployment.runtimes.torch_runtime import TorchRuntime

    full = torch_rt.generate_one(prompt_ids[0], GenerationParams(max_new_tokens=20))
    end_token = full.token_ids[5]
    first = full.token_ids.index(end_token)
    model_dir = shutil.copytree(tiny_llama, tmp_path / "m")
    (model_dir / "generation_config.json").write_text(json.dumps({"eos_token_id": [0, end_token]}))
    got = TorchRuntime(str(model_dir), threads=1).generate_one(prompt_ids[0], GenerationParams(max_new_tokens=20))
    assert got.finish == "stop" and got.token_ids == full.token_ids[:first]


def test_llama_cpp_context_too_small_names_n_ctx(gguf_rt, prompt_ids):
    with pytest.raises(DistillError, match="n_ctx=128"):
        gguf_rt.generate_one(prompt_ids[0], GenerationParams(max_new_tokens=200))


def test_truncate_at_stop_takes_earliest():
    assert truncate_at_stop("a = 1\ndef f():\n\nclass", ["\nclass", "\ndef"]) == ("a = 1", True)
    assert truncate_at_stop("no stop here", ["\ndef"]) == ("no stop here", False)
    assert truncate_at_stop("x", []) == ("x", False)


@pytest.mark.parametrize("field,kwargs", [("max_new_tokens", {"max_new_tokens": 0}),
                                          ("temperature", {"temperature": -1.0}),
                                          ("top_p", {"top_p": 0.0}), ("n", {"n": 0}),
                                          ("stop", {"stop": "\n"})])
def test_bad_params_name_the_field(field, kwargs):
    with pytest.raises(DistillError, match=field):
        GenerationParams(**{"max_new_tokens": 4, **kwargs})


def test_runtime_protocol_methods_exist():
    from deployment.runtimes import Runtime
    from deployment.runtimes.llama_cpp_runtime import LlamaCppRuntime
    from deployment.runtimes.torch_runtime import TorchRuntime

    for cls in (TorchRuntime, LlamaCppRuntime):
        for name in ("score", "score_one", "generate", "generate_one"):
            assert callable(getattr(cls, name)) and name in Runtime.__dict__


def test_split_reasoning_separates_an_r1_trace_from_the_answer():
    from deployment.runtimes.generation import split_reasoning

    assert split_reasoning("<think>\nadd them\n</think>\n\ndef f(a, b):\n    return a + b\n") == (
        "def f(a, b):\n    return a + b\n", "add them")
    assert split_reasoning("  <think>x</think>yes") == ("yes", "x")
    assert split_reasoning("def f(): pass") == ("def f(): pass", None)
    assert split_reasoning("<think>never closed") == ("<think>never closed", None)  # cut off: judged as is
