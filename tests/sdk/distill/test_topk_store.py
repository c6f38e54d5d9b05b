import numpy as np
import pytest
import torch
from safetensors import safe_open

from sdk.distill.topk_store import TopKStore
from sdk.errors import DistillError


def _rows(lengths, k, vocab, seed=0):
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for n in lengths:
        logprobs = -torch.rand((n, k), generator=gen) * 20
        ids = torch.stack([torch.randperm(vocab, generator=gen)[:k] for _ in range(n)]) if n else torch.zeros((0, k))
        rows.append((logprobs, ids.to(torch.int32)))
    return rows


def test_round_trip_is_exact_up_to_float16(tmp_path):
    rows = _rows([5, 0, 3, 7], k=4, vocab=400)
    path = tmp_path / "topk.safetensors"
    written = TopKStore.write(path, rows, vocab_size=400)
    store = TopKStore.read(path)
    assert len(store) == len(written) == 4 and store.k == 4 and store.lengths == [5, 0, 3, 7]
    for i, (lp, ids) in enumerate(rows):
        got_lp, got_ids = store[i]
        assert got_lp.dtype == torch.float32 and got_ids.dtype == torch.long
        assert torch.equal(got_lp, lp.half().float())
        assert torch.equal(got_ids, ids.long())
    lp, ids = store.rows([3, 0, 2])
    assert torch.equal(lp, torch.cat([rows[3][0], rows[0][0], rows[2][0]]).half().float())
    assert torch.equal(ids, torch.cat([rows[3][1], rows[0][1], rows[2][1]]).long())
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed into place


@pytest.mark.parametrize("vocab, ids_dtype, bytes_per_id", [
    (400, "U16", 2), (49152, "U16", 2), (65536, "U16", 2), (65537, "I32", 4), (151936, "I32", 4)])
def test_ids_use_the_smallest_integer_type_for_the_vocab(tmp_path, vocab, ids_dtype, bytes_per_id):
    rows = [(torch.zeros((2, 16)), torch.tensor([[vocab - 1] * 16, list(range(16))]))]
    store = TopKStore.write(tmp_path / "t.safetensors", rows, vocab_size=vocab)
    with safe_open(str(tmp_path / "t.safetensors"), framework="np") as f:
        assert f.get_slice("ids").get_dtype() == ids_dtype
        assert f.get_slice("logprobs").get_dtype() == "F16"
        assert f.metadata()["vocab_size"] == str(vocab) and f.metadata()["k"] == "16"
    assert store.bytes_per_token == 16 * (2 + bytes_per_id)
    back = TopKStore.read(tmp_path / "t.safetensors")
    assert back.bytes_per_token == 16 * (2 + bytes_per_id)
    assert back[0][1][0, 0].item() == vocab - 1  # the largest id survives the narrow dtype


def test_bytes_per_token_for_smollm2_vocab(tmp_path):
    for k, expected in ((16, 64), (32, 128)):
        store = TopKStore.write(tmp_path / f"k{k}.safetensors", _rows([3], k, 49152), vocab_size=49152)
        assert store.bytes_per_token == expected == k * (2 + 2)
        assert (tmp_path / f"k{k}.safetensors").stat().st_size < 3 * expected + 1024  # payload + small header


def test_vocab_defaults_to_largest_id(tmp_path):
    store = TopKStore.write(tmp_path / "t.safetensors", [(torch.zeros((1, 2)), torch.tensor([[70000, 1]]))])
    assert store.vocab_size == 70001 and store.bytes_per_token == 2 * (2 + 4)


def test_bad_rows_are_named(tmp_path):
    with pytest.raises(DistillError, match="no rows"):
        TopKStore.write(tmp_path / "t.safetensors", [])
    with pytest.raises(DistillError, match="row 1"):
        TopKStore.write(tmp_path / "t.safetensors", [(torch.zeros((2, 4)), torch.zeros((2, 4), dtype=torch.long)),
                                                     (torch.zeros((2, 3)), torch.zeros((2, 3), dtype=torch.long))])
    with pytest.raises(DistillError, match="outside the vocabulary"):
        TopKStore.write(tmp_path / "t.safetensors", [(torch.zeros((1, 2)), torch.tensor([[5, 400]]))], vocab_size=400)


def test_missing_and_corrupt_files_name_the_file(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(DistillError, match="nope.safetensors.*missing"):
        TopKStore.read(missing)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01 not a safetensors file")
    with pytest.raises(DistillError, match="garbage.safetensors"):
        TopKStore.read(garbage)
    good = tmp_path / "good.safetensors"
    TopKStore.write(good, _rows([4, 4], 8, 400))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(DistillError, match="truncated.safetensors"):
        TopKStore.read(truncated)
    from safetensors.numpy import save_file
    other = tmp_path / "other.safetensors"
    save_file({"x": np.zeros(3, dtype=np.float32)}, str(other))
    with pytest.raises(DistillError, match="other.safetensors.*not a top-k store"):
        TopKStore.read(other)


def test_out_of_range_row_is_an_index_error(tmp_path):
    store = TopKStore.write(tmp_path / "t.safetensors", _rows([1, 2], 2, 50))
    with pytest.raises(IndexError):
        store.rows([2])
    assert torch.equal(store[-1][1], store[1][1])


def test_subset_keeps_the_asked_rows_in_order(tmp_path):
    import torch

    from sdk.distill.topk_store import TopKStore

    rows = [(torch.randn(n, 4).log_softmax(-1), torch.randint(0, 300, (n, 4))) for n in (3, 0, 5, 2)]
    store = TopKStore.write(tmp_path / "s.safetensors", rows, vocab_size=300)
    sub = store.subset([3, 0, 2])
    assert len(sub) == 3 and sub.lengths == [2, 3, 5]
    for j, i in enumerate([3, 0, 2]):
        assert torch.equal(sub[j][1], store[i][1]) and torch.equal(sub[j][0], store[i][0])
