import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sdk.distill.batching import label_probs_with, left_pad, token_forward
from sdk.distill.losses import TaskCrossEntropy
from sdk.distill.recipe import decision_batch_loss, train

PROMPTS = ["$3 gift_cards online 02h RU, new device. Fraud?", "$120 grocery store 14h US, same device. Fraud?"] * 8
LABELS = [1, 0] * 8


def _setup(tiny_llama):
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    seqs = [tok(p)["input_ids"] for p in PROMPTS]
    label_ids = [tok.encode(" no")[0], tok.encode(" yes")[0]]
    target = torch.tensor([label_ids[y] for y in LABELS])
    return tok, model, seqs, label_ids, target


class _Interrupt(Exception):
    pass


def _dies_at_call(loss, n):
    calls = []

    def interrupted(m, idx):
        calls.append(1)
        if len(calls) == n:
            raise _Interrupt
        return loss(m, idx)

    return interrupted


def _accuracy(model, fwd, label_ids):
    probs = label_probs_with(fwd, model, len(LABELS), label_ids)
    return float(((probs[:, 1] > 0.5).long() == torch.tensor(LABELS)).float().mean())


def test_left_padding_gives_the_same_last_logits_as_unpadded(tiny_llama):
    tok, model, seqs, _, _ = _setup(tiny_llama)
    short = tok("yes no")["input_ids"]
    with torch.no_grad():
        alone = model(torch.tensor([short])).logits[0, -1]
        padded = token_forward([short, seqs[0]], tok.pad_token_id)(model, [0, 1])[0]
    assert left_pad([short, seqs[0]], 0)["attention_mask"][0, 0] == 0
    assert torch.allclose(alone, padded, atol=1e-4)


def test_training_learns_the_labels_and_keeps_the_best(tiny_llama, tmp_path):
    tok, model, seqs, label_ids, target = _setup(tiny_llama)
    fwd = token_forward(seqs, tok.pad_token_id)
    res = train(model, decision_batch_loss(fwd, {"target": target}, TaskCrossEntropy()), len(seqs),
                lambda m: _accuracy(m, fwd, label_ids), lr=3e-3, batch_size=4, max_epochs=6, eval_every=4,
                patience=50, seed=0, checkpoint_dir=tmp_path)
    assert res.best_metric == 1.0
    assert _accuracy(model, fwd, label_ids) == 1.0  # best weights restored
    log = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert sum(losses[-4:]) < sum(losses[:4])


def test_early_stopping_and_resume(tiny_llama, tmp_path):
    tok, model, seqs, label_ids, target = _setup(tiny_llama)
    fwd = token_forward(seqs, tok.pad_token_id)
    calls = []

    def flat_metric(m):  # never improves after the first check
        calls.append(1)
        return 0.5

    loss = decision_batch_loss(fwd, {"target": target}, TaskCrossEntropy())
    res = train(model, loss, len(seqs), flat_metric, lr=1e-3,
                batch_size=4, max_epochs=10, eval_every=2, patience=2, seed=0, checkpoint_dir=tmp_path)
    assert res.stopped_early and res.steps == 6 and len(calls) == 3
    # a second call resumes from the checkpoint, sees the run had stopped, and trains no further
    res2 = train(model, loss, len(seqs), flat_metric, lr=1e-3,
                 batch_size=4, max_epochs=10, eval_every=2, patience=2, seed=0, checkpoint_dir=tmp_path)
    assert res2.steps == 6 and len(calls) == 3


def test_resumed_training_logs_each_step_once(tiny_llama, tmp_path):
    tok, model, seqs, label_ids, target = _setup(tiny_llama)
    fwd = token_forward(seqs, tok.pad_token_id)
    loss = decision_batch_loss(fwd, {"target": target}, TaskCrossEntropy())
    state = {n: p.detach().clone() for n, p in model.state_dict().items()}

    interrupted = _dies_at_call(loss, 7)  # during step 7, after the checkpoint of step 4
    kw = dict(lr=1e-3, batch_size=4, max_epochs=2, eval_every=4, patience=50, seed=0, checkpoint_dir=tmp_path)
    try:
        train(model, interrupted, len(seqs), lambda m: 0.5, **kw)
    except _Interrupt:
        pass
    model.load_state_dict(state)
    train(model, loss, len(seqs), lambda m: 0.5, **kw)
    steps = [json.loads(x)["step"] for x in (tmp_path / "log.jsonl").read_text().splitlines()
             if "loss" in json.loads(x)]
    assert steps == list(range(1, 9))


def test_length_grouped_batches_cover_every_example_once_and_pad_less():
    from sdk.distill.recipe import _length_grouped

    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, 200, (1000,), generator=torch.Generator().manual_seed(1)).tolist()
    batches = _length_grouped(lengths, 16, gen)
    assert sorted(torch.cat(batches).tolist()) == list(range(1000))
    assert len(batches) == 63 and sorted(len(b) for b in batches)[0] == 1000 % 16
    lens = torch.tensor(lengths)
    padded = sum(int(lens[b].max()) * len(b) for b in batches)
    plain = sum(int(lens[b].max()) * len(b) for b in torch.randperm(1000, generator=gen).split(16))
    assert padded < 0.75 * plain  # batches of similar lengths: less padding computed
    assert _length_grouped(lengths, 16, torch.Generator().manual_seed(0))[0].tolist() == batches[0].tolist()


def test_training_with_lengths_learns_the_labels(tiny_llama, tmp_path):
    tok, model, seqs, label_ids, target = _setup(tiny_llama)
    fwd = token_forward(seqs, tok.pad_token_id)
    res = train(model, decision_batch_loss(fwd, {"target": target}, TaskCrossEntropy()), len(seqs),
                lambda m: _accuracy(m, fwd, label_ids), lr=3e-3, batch_size=4, max_epochs=6, eval_every=4,
                patience=50, seed=0, checkpoint_dir=tmp_path, lengths=[len(s) for s in seqs])
    assert res.best_metric == 1.0 and res.steps == 24


def _board_scalars(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir)).Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_events_match_the_jsonl_log_across_a_resume(tiny_llama, tmp_path):
    tok, model, seqs, label_ids, target = _setup(tiny_llama)
    fwd = token_forward(seqs, tok.pad_token_id)
    loss = decision_batch_loss(fwd, {"target": target}, TaskCrossEntropy())
    board = tmp_path / "tensorboard"

    interrupted = _dies_at_call(loss, 7)  # during step 7, after the checkpoint of step 4
    kw = dict(lr=1e-3, batch_size=4, max_epochs=2, eval_every=4, patience=50, seed=0,
              checkpoint_dir=tmp_path / "ckpt", tensorboard_dir=board, desc="distill student (KD)")
    try:
        train(model, interrupted, len(seqs), lambda m: 0.5, **kw)
    except _Interrupt:
        pass
    train(model, loss, len(seqs), lambda m: 0.5, **kw)
    log = [json.loads(x) for x in (tmp_path / "ckpt" / "log.jsonl").read_text().splitlines()]
    scalars = _board_scalars(board / "distill-student-KD")
    # steps 5-6 ran twice: the resumed writer purged the first attempt's events, as the JSONL log does
    assert [s for s, _ in scalars["train/loss"]] == list(range(1, 9))
    assert [v for _, v in scalars["train/loss"]] == [float(torch.tensor(r["loss"], dtype=torch.float32))
                                                     for r in log if "loss" in r]
    assert [s for s, _ in scalars["train/lr"]] == list(range(1, 9))
    assert scalars["val/metric"] == [(4, 0.5), (8, 0.5)]
    # a fresh training under the same name starts from an empty folder
    (tmp_path / "ckpt" / "last.pt").unlink()
    train(model, loss, len(seqs), lambda m: 0.25, **{**kw, "max_epochs": 1})
    assert _board_scalars(board / "distill-student-KD")["val/metric"] == [(4, 0.25)]
