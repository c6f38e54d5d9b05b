"""sdk.distill.ggml_quant against llama.cpp itself: the torch port must give, bit for bit, what the compiled
ggml library's quantizer (ggml_quantize_chunk, no importance matrix) makes of real teacher weights."""

from __future__ import annotations

import ctypes
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from sdk.distill.ggml_quant import GGML_TYPES, block_size, fake_quantize, quantize_dequantize
from sdk.errors import DistillError

gguf = pytest.importorskip("gguf")


def _ggml_library() -> ctypes.CDLL | None:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "lib" / "libggml-base.so"
    if not path.is_file():
        return None
    lib = ctypes.CDLL(str(path))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    return lib


@pytest.fixture(scope="module")
def ggml():
    lib = _ggml_library()
    if lib is None:
        pytest.skip("llama-cpp-python with its libggml-base.so is not installed")
    return lib


def llama_cpp_quantize_dequantize(lib: ctypes.CDLL, rows: np.ndarray, ggml_type: str) -> np.ndarray:
    """The oracle: quantize rows with the compiled library, dequantize the bytes with gguf-py."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    qtype = gguf.GGMLQuantizationType[ggml_type]  # gguf's enum values are ggml_type ids
    nrows, n_per_row = rows.shape
    out = np.zeros((nrows, lib.ggml_row_size(qtype.value, n_per_row)), dtype=np.uint8)
    lib.ggml_quantize_chunk(qtype.value, rows.ctypes.data, out.ctypes.data, 0, nrows, n_per_row, None)
    return gguf.quants.dequantize(out, qtype).reshape(nrows, n_per_row)


@pytest.fixture(scope="module")
def teacher_weights() -> dict[str, np.ndarray]:
    """Real weights of the embedded teacher (stored as Q4_1 / Q8_0), as [rows, ne0], each also with a little
    seeded Gaussian noise: the dequantized values sit on a coarse grid with many exact ties, the noisy ones
    are continuous."""
    from sdk.models import _embedded_gguf

    try:
        path = _embedded_gguf("embedded:smollm2-135m-instruct")
    except DistillError as exc:
        pytest.skip(str(exc))
    tensors = {t.name: t for t in gguf.GGUFReader(path).tensors}

    def rows(name: str, count: int) -> np.ndarray:
        tensor = tensors[name]
        ne0 = int(tensor.shape[0])
        return gguf.quants.dequantize(tensor.data[:count], tensor.tensor_type).reshape(-1, ne0)

    weights = {
        "ffn_down": rows("blk.0.ffn_down.weight", 576),  # rows of 1536: fit the 256-blocks
        "attn_q": rows("blk.3.attn_q.weight", 256),  # rows of 576: 32-block types only
        "token_embd": rows("token_embd.weight", 512),
    }
    rng = np.random.default_rng(0)
    for name, w in list(weights.items()):
        weights[f"{name}+noise"] = (w + rng.normal(0.0, 0.05 * w.std(), w.shape)).astype(np.float32)
    return weights


@pytest.mark.parametrize("ggml_type", GGML_TYPES)
def test_matches_llama_cpp_bit_for_bit(ggml, teacher_weights, ggml_type):
    tested = 0
    for name, w in teacher_weights.items():
        if w.shape[1] % block_size(ggml_type):
            continue
        expected = torch.from_numpy(llama_cpp_quantize_dequantize(ggml, w, ggml_type))
        got = quantize_dequantize(torch.from_numpy(w), ggml_type)
        assert got.dtype == torch.float32 and got.shape == w.shape
        torch.testing.assert_close(got, expected, rtol=0, atol=0, msg=lambda m: f"{ggml_type} on {name}: {m}")
        tested += 1
    assert tested >= 2


@pytest.mark.parametrize("ggml_type", ["Q8_0", "Q4_0", "Q5_1", "IQ4_NL", "Q2_K", "Q3_K", "Q4_K", "Q6_K"])
def test_edge_blocks_match_llama_cpp(ggml, ggml_type):
    """Blocks that take the C code's special paths: all zero, constant, one sign only, +/- ties for the
    largest magnitude (the first one wins), values so small that the fp16 scales underflow."""
    rng = np.random.default_rng(1)
    n = 512
    tied = rng.normal(0, 1, n).astype(np.float32)
    tied[::32], tied[7::32] = 3.0, -3.0
    sparse = np.zeros(n, np.float32)
    sparse[3::256] = -2.0
    rows = np.stack([
        np.zeros(n), np.full(n, 0.37), np.full(n, -0.37), tied, -tied,
        np.abs(rng.normal(0, 1, n)), -np.abs(rng.normal(0, 1, n)),
        rng.integers(-8, 8, n), rng.normal(0, 1e-7, n), sparse,
    ]).astype(np.float32)
    expected = torch.from_numpy(llama_cpp_quantize_dequantize(ggml, rows, ggml_type))
    torch.testing.assert_close(quantize_dequantize(torch.from_numpy(rows), ggml_type), expected, rtol=0, atol=0)


@pytest.mark.parametrize("ggml_type", ["Q4_0", "IQ4_NL", "Q4_K", "Q6_K"])
def test_fake_quantize_is_straight_through(ggml_type):
    w = (torch.randn(8, 256, generator=torch.Generator().manual_seed(0)) * 0.05).requires_grad_()
    out = fake_quantize(w, ggml_type)
    assert torch.equal(out.detach(), quantize_dequantize(w, ggml_type))
    assert not torch.equal(out.detach(), w.detach())  # it did quantize
    upstream = torch.randn(8, 256, generator=torch.Generator().manual_seed(1))
    out.backward(upstream)
    assert torch.equal(w.grad, upstream)


def test_fake_quantize_keeps_the_weight_dtype():
    w = torch.randn(4, 64).to(torch.bfloat16).requires_grad_()
    out = fake_quantize(w, "Q8_0")
    assert out.dtype == torch.bfloat16
    assert torch.equal(out.detach(), quantize_dequantize(w, "Q8_0").to(torch.bfloat16))


@pytest.mark.parametrize("ggml_type,row_length", [("Q4_K", 576), ("Q6_K", 100), ("Q8_0", 48), ("IQ4_NL", 31)])
def test_rows_that_do_not_fit_the_blocks_are_refused(ggml_type, row_length):
    with pytest.raises(ValueError, match=rf"{ggml_type}.*{row_length}"):
        quantize_dequantize(torch.zeros(3, row_length), ggml_type)


def test_unknown_type_is_refused():
    with pytest.raises(ValueError, match="Q4_K_M"):
        quantize_dequantize(torch.zeros(2, 256), "Q4_K_M")


def test_block_sizes():
    assert [block_size(t) for t in ("F32", "F16", "Q8_0", "IQ4_NL", "Q4_K", "Q6_K")] == [1, 1, 32, 32, 256, 256]


def test_float_types():
    w = torch.randn(5, 7) * 3
    assert torch.equal(quantize_dequantize(w, "F32"), w)
    assert torch.equal(quantize_dequantize(w, "F16"), w.half().float())
    assert torch.equal(quantize_dequantize(w, "BF16"), w.bfloat16().float())


def test_rows_are_the_last_dim_whatever_the_shape():
    w = torch.randn(64, 3, 256, generator=torch.Generator().manual_seed(2))
    flat = quantize_dequantize(w.reshape(-1, 256), "Q5_K")
    assert torch.equal(quantize_dequantize(w, "Q5_K"), flat.reshape(w.shape))
    # a non-contiguous view quantizes like its contiguous copy
    wt = torch.randn(256, 64, generator=torch.Generator().manual_seed(3)).t()
    assert torch.equal(quantize_dequantize(wt, "Q4_1"), quantize_dequantize(wt.contiguous(), "Q4_1"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("ggml_type", GGML_TYPES)
def test_cuda_matches_cpu(ggml_type):
    w = torch.randn(64, 512, generator=torch.Generator().manual_seed(4)) * 0.02
    on_cuda = quantize_dequantize(w.cuda(), ggml_type)
    assert on_cuda.is_cuda
    torch.testing.assert_close(on_cuda.cpu(), quantize_dequantize(w, ggml_type), rtol=0, atol=0)
