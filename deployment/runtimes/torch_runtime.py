"""PyTorch runtime: an HF folder, optionally with a PEFT adapter merged in; fp32 on CPU by default, optionally
quantized (deployment.torch_quant: dynamic INT8 on CPU or CUDA, FP8 on Ada/Hopper GPUs) and on another device."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from transformers.generation.streamers import BaseStreamer

from deployment.runtimes.generation import Generation, GenerationParams, finish_generation


class _FirstTokenTimer(BaseStreamer):
    """Notes when generate() hands over its first new token (its first put() is the prompt itself)."""

    def __init__(self) -> None:
        self.first_token_at: float | None = None
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if self._prompt_seen and self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self._prompt_seen = True

    def end(self) -> None:
        pass


class TorchRuntime:
    def __init__(self, model: str, adapter: str | None = None, threads: int | None = None,
                 batch_size: int = 32, trust_remote_code: bool = False, quantize: str | None = None,
                 device: str = "cpu"):
        """quantize: None (the model's fp32 weights), "int8" or "fp8" (see deployment.torch_quant; fp8 needs
        device="cuda" on a GPU of compute capability >= 8.9 and runs in bf16). Bad values are refused before
        the model is loaded."""
        from deployment.torch_quant import check_kind, quantize_model, quantized_bytes
        from sdk.errors import DistillError
        from sdk.models import load_causal_lm

        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise DistillError(f"device {device!r} asked for, but torch {torch.__version__} sees no CUDA device")
        if quantize:
            check_kind(quantize, self.device if self.device.type == "cuda" else None)
            if quantize == "fp8" and self.device.type != "cuda":
                raise DistillError(f"fp8 quantization runs on CUDA only, not on {device!r}: pass device='cuda'")
        self.quantize = quantize
        if threads:
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        self.batch_size = batch_size
        self.model, self.tok = load_causal_lm(model, trust_remote_code=trust_remote_code)
        if adapter:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, adapter).merge_and_unload().eval()
        self.model = self.model.to(self.device)
        if quantize:  # after the merge: the adapter's deltas are folded into the weights that get quantized
            self.model = quantize_model(self.model, quantize)
        self.weight_bytes = quantized_bytes(self.model)  # as held in memory (int8/fp8 data + scales if quantized)
        self.pad_id = self.tok.pad_token_id
        self.eos_ids = self._eos_ids()

    def _eos_ids(self) -> list[int]:
        """The tokenizer's end-of-sequence id plus the model's generation_config ones (chat models end turns
        with a token of their own, e.g. <|im_end|>)."""
        ids = [self.tok.eos_token_id]
        config_eos = self.model.generation_config.eos_token_id
        ids += config_eos if isinstance(config_eos, list) else [config_eos]
        return sorted({i for i in ids if i is not None})

    def score(self, seqs: Sequence[Sequence[int]], label_ids: Sequence[int]) -> np.ndarray:
        from sdk.distill.batching import label_probs_with, left_pad, score_label_probs

        if self.device.type == "cpu":
            return score_label_probs(self.model, seqs, label_ids, self.pad_id, self.batch_size,
                                     progress="torch scoring").numpy()

        # off the CPU: the batch goes to the device, its logits come back (label_probs_with fills a CPU tensor)
        def forward(model: torch.nn.Module, idx: list[int]) -> torch.Tensor:
            batch = {k: v.to(self.device) for k, v in left_pad([seqs[i] for i in idx], self.pad_id).items()}
            return model(**batch, logits_to_keep=1).logits[:, -1, :].float().cpu()

        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))  # as score_label_probs batches them
        return label_probs_with(forward, self.model, len(seqs), label_ids, self.batch_size, order,
                                progress="torch scoring").numpy()

    @torch.inference_mode()
    def score_one(self, seq: Sequence[int], label_ids: Sequence[int]) -> np.ndarray:
        ids = torch.as_tensor([list(seq)], dtype=torch.long, device=self.device)
        logits = self.model(input_ids=ids, logits_to_keep=1).logits[0, -1, list(label_ids)]
        return torch.softmax(logits.float(), -1).cpu().numpy()

    def _rng_devices(self) -> list[int]:
        """The CUDA devices whose random state a seeded call forks (none on CPU)."""
        if self.device.type != "cuda":
            return []
        return [self.device.index if self.device.index is not None else torch.cuda.current_device()]

    def generate(self, prompts: Sequence[Sequence[int]], params: GenerationParams,
                 progress: str | None = None) -> list[list[Generation]]:
        from tqdm.auto import tqdm

        from sdk.distill.batching import batches

        _check_prompts(prompts)
        # long prompts first: batches of similar length waste less compute on padding
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        per_batch = max(1, self.batch_size // (1 if params.greedy else params.n))
        out: list[list[Generation]] = [[] for _ in prompts]
        # one seed for the whole call: the same call with the same seed samples the same completions
        with torch.random.fork_rng(devices=self._rng_devices()):
            torch.manual_seed(params.seed)
            for b in tqdm(list(batches(len(prompts), per_batch, order)), desc=progress,
                          disable=progress is None, leave=False):
                for i, gens in zip(b, self._generate_batch([prompts[i] for i in b], params)):
                    out[i] = gens
        return out

    def generate_one(self, prompt: Sequence[int], params: GenerationParams) -> Generation:
        _check_prompts([prompt])
        with torch.random.fork_rng(devices=self._rng_devices()):
            torch.manual_seed(params.seed)
            return self._generate_batch([prompt], params, n=1)[0][0]

    @torch.inference_mode()
    def _generate_batch(self, prompts: Sequence[Sequence[int]], params: GenerationParams,
                        n: int | None = None) -> list[list[Generation]]:
        """n (default params.n) completions per prompt for one left-padded batch."""
        from sdk.distill.batching import left_pad

        n = params.n if n is None else n
        # greedy completions of one prompt are all the same: decode once, copy
        n_run = 1 if params.greedy else n
        # positions come from the mask inside generate()
        padded = {k: v.to(self.device) for k, v in left_pad(prompts, self.pad_id).items()}
        width = padded["input_ids"].shape[1]
        timer = _FirstTokenTimer()
        t0 = time.perf_counter()
        seqs = self.model.generate(
            input_ids=padded["input_ids"], attention_mask=padded["attention_mask"],
            max_new_tokens=params.max_new_tokens, num_return_sequences=n_run,
            eos_token_id=self.eos_ids, pad_token_id=self.pad_id, streamer=timer,
            **self._sampling_kwargs(params),
            # stop strings end a row early (saves steps); the text is cut in finish_generation
            **({"stop_strings": params.stop, "tokenizer": self.tok} if params.stop else {}),
        )
        seconds = time.perf_counter() - t0
        ttft = (timer.first_token_at or t0 + seconds) - t0
        new = seqs[:, width:].tolist()
        out = []
        for p in range(len(prompts)):
            gens = [self._finish(row, params, ttft, seconds) for row in new[p * n_run: (p + 1) * n_run]]
            out.append(gens if n_run == n else [gens[0]] * n)
        return out

    @staticmethod
    def _sampling_kwargs(params: GenerationParams) -> dict:
        # every logits filter is set explicitly: unset ones fall back to the model's generation_config
        # (e.g. a repetition_penalty) and then transformers' defaults (top_k=50)
        neutral = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "min_p": None, "typical_p": 1.0}
        if params.greedy:
            return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None, **neutral}
        return {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0, **neutral}

    def _finish(self, row: list[int], params: GenerationParams, ttft: float, seconds: float) -> Generation:
        end = next((k for k, t in enumerate(row) if t in self.eos_ids), None)
        ids = row if end is None else row[:end]
        # a row ended by a stop string is padded after it; the stop cut in finish_generation drops the pads
        return finish_generation(ids, self._decode, params.stop, end is not None, ttft, seconds)

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True)


def _check_prompts(prompts: Sequence[Sequence[int]]) -> None:
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty: generation needs at least one prompt token")
