"""Left-padded batches of token ids, scored at the last position (where the answer word comes next)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask and position_ids; padding on the left puts every prompt's end at -1."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, width - len(s):] = torch.as_tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
    # positions count real tokens only, so a padded prompt sees the same positions as an unpadded one
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions}


def last_token_logits(model: torch.nn.Module, seqs: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """[B, vocab] next-token logits after each prompt (one forward pass; lm_head on the last position only)."""
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in left_pad(seqs, pad_id).items()}
    return model(**batch, logits_to_keep=1).logits[:, -1, :]


def token_forward(seqs: Sequence[Sequence[int]], pad_id: int):
    """forward(model, idx) -> [B, vocab] answer-position logits for the prompts seqs[idx]."""

    def forward(model: torch.nn.Module, idx: list[int]) -> torch.Tensor:
        return last_token_logits(model, [seqs[i] for i in idx], pad_id)

    return forward


def batches(n: int, batch_size: int, order: Sequence[int] | None = None) -> Iterator[list[int]]:
    idx = list(range(n)) if order is None else list(order)
    for i in range(0, len(idx), batch_size):
        yield idx[i: i + batch_size]


@torch.inference_mode()
def label_probs_with(forward, model: torch.nn.Module, n: int, label_ids: Sequence[int], batch_size: int = 32,
                     order: Sequence[int] | None = None, progress: str | None = None) -> torch.Tensor:
    """[n, len(label_ids)] label-word probabilities from forward(model, idx) (see token_forward),
    renormalised over those words; `order` sets which examples share a batch."""
    from tqdm.auto import tqdm

    out = torch.empty((n, len(label_ids)))
    was_training = model.training
    model.eval()
    for b in tqdm(list(batches(n, batch_size, order)), desc=progress, disable=progress is None, leave=False):
        out[b] = torch.softmax(forward(model, b)[:, list(label_ids)].float(), dim=-1).cpu()
    model.train(was_training)
    return out


def score_label_probs(model: torch.nn.Module, seqs: Sequence[Sequence[int]], label_ids: Sequence[int],
                      pad_id: int, batch_size: int = 32, progress: str | None = None) -> torch.Tensor:
    """label_probs_with over tokenised prompts, long prompts first: batches of similar length waste less
    compute on padding."""
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    return label_probs_with(token_forward(seqs, pad_id), model, len(seqs), label_ids, batch_size, order, progress)
