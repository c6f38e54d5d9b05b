"""The teacher-signal store: rows round-trip bit-exactly (ids bit-packed, float16 log-probabilities, character
spans), are found again by content across processes and runs, and bad stores are refused by name."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sdk.distill.signals import FORMAT, SignalStore, pack_ids, row_key, store_dir, unpack_ids
from sdk.errors import DistillError


def _rows(n, k, vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = 3 + i % 5
        lp = torch.randn(length, vocab, generator=g).log_softmax(-1).topk(k, -1)
        out.append((lp.values, lp.indices))
    return out


@pytest.mark.parametrize("vocab", [2, 100, 49152, 262144])
def test_ids_pack_to_the_vocabulary_bits_and_back(vocab):
    bits = max(1, int(np.ceil(np.log2(vocab))))
    ids = np.random.default_rng(0).integers(0, vocab, size=(257, 7))
    packed = pack_ids(ids, bits)
    assert packed.nbytes == -(-ids.size * bits // 8)
    assert (unpack_ids(packed, ids.size, bits).reshape(ids.shape) == ids).all()


def test_rows_round_trip_and_are_found_by_content(tmp_path):
    k, vocab = 4, 300
    rows = _rows(6, k, vocab)
    prompts = [[1, 2, i] for i in range(6)]
    responses = [ix[:, 0].tolist() for _, ix in rows]
    keys = [row_key(p, r) for p, r in zip(prompts, responses)]
    spans = [np.stack([np.arange(len(r)), np.arange(len(r)) + 1], 1) for r in responses]
    root = store_dir(tmp_path, "teacher-a", k)
    store = SignalStore.open(root, teacher="teacher-a", k=k, vocab_size=vocab)
    store.add(keys[:4], rows[:4], spans[:4])
    assert store.add(keys[:2], rows[:2], spans[:2]) is None  # nothing new: no shard
    store.add(keys, rows, spans)  # only the last two are written
    again = SignalStore.read(root)  # another process would see the same
    assert len(again) == 6 and len(again.shards()) == 2
    for (lp, ix), (glp, gix, gsp), sp in zip(rows, again.get(keys[::-1])[::-1], spans):
        assert torch.equal(torch.from_numpy(glp), lp.half().float()) and (gix == ix.numpy()).all()
        assert (gsp == sp).all()
    s = again.summary()
    assert s["rows"] == 6 and s["tokens"] == sum(map(len, responses)) and s["k"] == k
    assert 0 < s["coverage_mean"] <= 1 and s["bytes_per_token"] > 0
    assert row_key([1, 2], [3]) != row_key([1], [2, 3])  # the prompt/response boundary is part of the key


def test_a_store_made_for_another_teacher_or_k_is_refused(tmp_path):
    SignalStore.open(tmp_path / "s", teacher="a", k=4, vocab_size=10)
    with pytest.raises(DistillError, match="teacher"):
        SignalStore.open(tmp_path / "s", teacher="b", k=4, vocab_size=10)
    with pytest.raises(DistillError, match="vocab_size"):
        SignalStore.open(tmp_path / "s", teacher="a", k=4, vocab_size=11)
    assert store_dir(tmp_path, "a", 4) != store_dir(tmp_path, "a", 8) != store_dir(tmp_path, "b", 4)


def test_bad_stores_and_rows_are_named(tmp_path):
    store = SignalStore.open(tmp_path / "s", teacher="a", k=2, vocab_size=10)
    with pytest.raises(DistillError, match="outside the vocabulary"):
        store.add([b"x" * 16], [(torch.zeros(1, 2), torch.tensor([[3, 10]]))], [np.zeros((1, 2))])
    with pytest.raises(DistillError, match=r"expected \[L, 2\]"):
        store.add([b"x" * 16], [(torch.zeros(1, 3), torch.zeros(1, 3, dtype=torch.long))], [np.zeros((1, 2))])
    store.add([b"y" * 16], [(torch.zeros(2, 2), torch.ones(2, 2, dtype=torch.long))], [np.zeros((2, 2))])
    shard = store.shards()[0]
    shard.write_bytes(shard.read_bytes()[:40])  # truncated
    with pytest.raises(DistillError, match="unreadable"):
        SignalStore.read(tmp_path / "s")
    meta = json.loads((tmp_path / "s" / "store.json").read_text())
    (tmp_path / "s" / "store.json").write_text(json.dumps({**meta, "format": "distill-sdk/signals-v0"}))
    with pytest.raises(DistillError, match=FORMAT):
        SignalStore.read(tmp_path / "s")
    with pytest.raises(DistillError, match="not a signal store"):
        SignalStore.read(tmp_path)


def test_inspect_prints_size_bytes_per_token_k_and_coverage(tmp_path):
    from sdk.cli import app

    k, vocab = 8, 49152
    rows = _rows(3, k, vocab)
    root = store_dir(tmp_path, "t", k)
    store = SignalStore.open(root, teacher="t", k=k, vocab_size=vocab)
    store.add([row_key([i], [i]) for i in range(3)], rows, [np.zeros((len(r[0]), 2)) for r in rows])
    out = CliRunner().invoke(app, ["signals", "inspect", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "k 8" in out.output and "bytes/token" in out.output and "DistillKit" in out.output
    assert "coverage" in out.output and "16-bit ids" in out.output
    bad = CliRunner().invoke(app, ["signals", "inspect", str(tmp_path / "nothing")])
    assert bad.exit_code == 2 and "not a folder" in bad.output
