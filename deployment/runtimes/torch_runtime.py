"""PyTorch runtime: an HF folder, optionally with a PEFT adapter merged in, fp32 on CPU."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class TorchRuntime:
    def __init__(self, model: str, adapter: str | None = None, threads: int | None = None,
                 batch_size: int = 32, trust_remote_code: bool = False):
        from sdk.models import load_causal_lm

        if threads:
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        self.batch_size = batch_size
        self.model, tok = load_causal_lm(model, trust_remote_code=trust_remote_code)
        if adapter:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, adapter).merge_and_unload().eval()
        self.pad_id = tok.pad_token_id

    def label_probs(self, seqs: Sequence[Sequence[int]], label_ids: Sequence[int]) -> np.ndarray:
        from sdk.distill.batching import score_label_probs

        return score_label_probs(self.model, seqs, label_ids, self.pad_id, self.batch_size,
                                 progress="torch scoring").numpy()

    @torch.inference_mode()
    def decide_one(self, seq: Sequence[int], label_ids: Sequence[int]) -> np.ndarray:
        ids = torch.as_tensor([list(seq)], dtype=torch.long)
        logits = self.model(input_ids=ids, logits_to_keep=1).logits[0, -1, list(label_ids)]
        return torch.softmax(logits, -1).numpy()
