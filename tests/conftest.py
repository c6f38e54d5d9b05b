"""Shared fixtures: tiny random llama models with a real (tiny, trained-in-test) BPE tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

CORPUS = [
    "$120 grocery store 14h US, account 300d, same device, 0 tx/h. Fraud? no",
    "$3 gift_cards online 02h RU, account 4d, new device, 9 tx/h. Fraud? yes",
    "The quick brown fox jumps over the lazy dog. 0123456789",
    "yes no yes no Fraud? account device store online atm travel electronics",
] * 20


def make_tokenizer(out_dir: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(CORPUS, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                  bos_token="<|endoftext|>")
    tok.save_pretrained(out_dir)
    return tok


def make_tiny_llama(out_dir: Path, layers: int = 4, tie: bool = True, seed: int = 0, bias: bool = False) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(out_dir)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      rms_norm_eps=1e-5, tie_word_embeddings=tie, attention_bias=bias, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return _save_scaled(LlamaForCausalLM(cfg), out_dir, 8.0, fill_biases=bias)


def _save_scaled(model, out_dir: Path, scale: float, fill_biases: bool) -> Path:
    """Random init is near-uniform: matrices are scaled up so logits have real structure to compare, and biases
    (which start at zero) get values so that they are checked too."""
    import torch

    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.mul_(scale)
            elif fill_biases and p.abs().sum() == 0:
                p.normal_(0.0, 0.5)
    model.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def fraud_tiny_run(tmp_path_factory) -> Path:
    """The fraud template's `tiny` preset run once through the CLI (embedded teacher, every stage, with QAD
    twins), shared by the tests that only read a finished run; its stdout is kept beside it in `run.stdout`."""
    import yaml

    from tests.cli import run_cli

    root = tmp_path_factory.mktemp("fraud-tiny")
    assert run_cli("init", "fraud", root, "--preset", "tiny").returncode == 0
    # this shared run also has quantization-aware twins (sdk/stages/qad.py); the other runs of the preset do not
    cfg = yaml.safe_load((root / "project.yaml").read_text())
    # one type (tests/sdk/distill/test_qad.py covers Q2_K's fake quantization): each type is a twin trained,
    # exported twice (itself and the control) and evaluated twice, ~15 s of this fixture
    cfg["distill"]["qad"] = {"types": ["Q4_K_M"], "steps": 3}
    # fp32 on every CPU (auto is bf16 where the CPU has AMX-BF16): tests compare this run's training with other
    # runs to float32 rounding (two machines against one, a second run)
    cfg["distill"]["precision"] = "fp32"
    # 96 validation rows, not the preset's 24: the tiny student ranks barely above chance (val ROC-AUC ~0.54-0.57),
    # and on 24 rows (6 frauds) a Q8_0 file's rounding moved its AUC from 0.537 to 0.509 on one CPU (AMD EPYC;
    # 0.570 vs 0.570 on 96 rows), so the tests of release gates and bundles saw an intact file fail its gate
    cfg["data"]["n_val"] = 96
    (root / "project.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    # the run in this process (the CLI app; tests/cli.py says why): `distill run` as a process of its own is
    # tested on the finished run by tests/test_integration.py::test_rerun_skips_finished_stages
    out = run_cli("run", root / "project.yaml", "--out", root / "run")
    assert out.returncode == 0, out.stderr[-3000:]
    (root / "run.stdout").write_text(out.stdout)
    return root / "run"


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def tiny_llama_untied(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny_llama_untied"), tie=False, seed=1)


@pytest.fixture(scope="session")
def tiny_llama_bias(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny_llama_bias"), tie=False, seed=2, bias=True)


def make_tiny_qwen2(out_dir: Path, layers: int = 2, tie: bool = True, seed: int = 0) -> Path:
    """A tiny random Qwen2 (q/k/v biases, NEOX rope). Width 256: llama.cpp's K-quants work on rows of 256
    values and give narrower tensors another type, so the quantization tests see Q6_K/Q5_K themselves."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(out_dir)
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=256, intermediate_size=512, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 1e6},
                      tie_word_embeddings=tie, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    # x2, not make_tiny_llama's x8: at width 256 that would make a chaotic model, where llama.cpp's rounding of
    # weights and activations moves logits out of proportion; at x2 attention still matters (a wrong Q/K
    # layout moves logits by >0.3)
    return _save_scaled(Qwen2ForCausalLM(cfg), out_dir, 2.0, fill_biases=True)


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory) -> Path:
    return make_tiny_qwen2(tmp_path_factory.mktemp("tiny_qwen2"))


@pytest.fixture(scope="session")
def tiny_qwen2_untied(tmp_path_factory) -> Path:
    return make_tiny_qwen2(tmp_path_factory.mktemp("tiny_qwen2_untied"), tie=False, seed=1)
