"""Fake quantization to llama.cpp's GGUF block formats, for quantization-aware distillation.

`quantize_dequantize(w, "Q4_K")` gives what llama.cpp's quantizer (`ggml_quantize_chunk` without an importance
matrix) makes of the rows of `w`, dequantized back to float32; `fake_quantize` puts that value in the forward pass
with an identity gradient (straight-through estimator), so a student trains against the weights it will ship with.

Hand-written because no maintained library does llama.cpp's quantization in torch: gguf-py quantizes only the
simple 32-blocks (in numpy) and merely dequantizes the K types, whose quantizers run small per-block searches.
This is a port of the reference quantizers in ggml/src/ggml-quants.c (`quantize_row_*_ref`, `quantize_iq4_nl`),
vectorized over all blocks of a tensor. Exactness needs the C code's float32 arithmetic step by step: no float64,
no fused ops, and its sequential summation order (hence the short Python loops over the 16-32 elements of a
block; everything else runs on whole tensors, on CPU or CUDA).

Internally a tensor's blocks are laid out as `[elements of a block, blocks]`: per-block quantities are then
vectors that broadcast against it, and a block's elements are contiguous rows for the sequential sums.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

GGML_TYPES = (
    "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
)
_FLOAT_TYPES = ("F32", "F16", "BF16")
_K_TYPES = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
QK = 32  # elements per block of the 32-block types
QK_K = 256  # elements per super-block of the K types
GROUP_MAX_EPS = 1e-15  # ggml treats a group whose largest |x| is below this as all zeros
KVALUES_IQ4NL = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)
# elements quantized per pass: on CPU a pass's intermediates then stay in cache; on a GPU, where each of the
# few thousand small ops is a kernel launch, passes are large and only bound the memory on embeddings
_CHUNK_ELEMENTS = {"cpu": 1 << 18}
_CHUNK_ELEMENTS_DEFAULT = 1 << 22


def block_size(ggml_type: str) -> int:
    """Elements per block of a GGML type (1 for the float types): a row's length must be a multiple of it."""
    _check_type(ggml_type)
    if ggml_type in _FLOAT_TYPES:
        return 1
    return QK_K if ggml_type in _K_TYPES else QK


def quantize_dequantize(w: torch.Tensor, ggml_type: str) -> torch.Tensor:
    """What llama.cpp's quantizer (ggml_quantize_chunk without an importance matrix) makes of the rows of w
    (last dim = a row = GGML's ne0), dequantized back to float32. No gradient."""
    bs = block_size(ggml_type)
    x = w.detach().to(torch.float32)
    if ggml_type == "F32":
        return x
    if ggml_type == "F16":
        return x.to(torch.float16).to(torch.float32)
    if ggml_type == "BF16":
        return x.to(torch.bfloat16).to(torch.float32)
    row_length = x.shape[-1] if x.dim() else 1
    if row_length % bs:
        raise ValueError(
            f"{ggml_type} quantizes rows in blocks of {bs} elements; a row of {row_length} is not a multiple "
            "(llama.cpp picks another type for such a tensor)"
        )
    quantize_blocks = _QUANTIZERS[ggml_type]
    blocks = x.reshape(-1, bs)
    per_chunk = max(1, _CHUNK_ELEMENTS.get(x.device.type, _CHUNK_ELEMENTS_DEFAULT) // bs)
    out = torch.empty_like(blocks)
    for start in range(0, blocks.shape[0], per_chunk):
        # [elements of a block, blocks]: see the module docstring
        chunk = blocks[start:start + per_chunk].t().contiguous()
        out[start:start + per_chunk] = quantize_blocks(chunk).t()
    return out.reshape(x.shape)


def fake_quantize(w: torch.Tensor, ggml_type: str) -> torch.Tensor:
    """Forward: the GGUF weights' values (quantize_dequantize, in w's dtype); backward: identity (STE).

    Written as q + (w - w.detach()) rather than w + (q - w).detach(): same gradient, and the forward value
    is q exactly (w + (q - w) can be off by a rounding)."""
    q = quantize_dequantize(w, ggml_type).to(w.dtype)
    return q + (w - w.detach())


def _check_type(ggml_type: str) -> None:
    if ggml_type not in GGML_TYPES:
        raise ValueError(f"unknown GGML type {ggml_type!r}; expected one of {', '.join(GGML_TYPES)}")


# ---------------------------------------------------------------- float32 helpers that mirror the C code


def _const(value: float, like: torch.Tensor) -> torch.Tensor:
    """A float32 constant on like's device. Dividing by a 0-dim tensor on the same device keeps a true IEEE
    division (CUDA turns division by a Python scalar into multiplication by its reciprocal); torch.full
    fills it on the device, where torch.tensor would wait for a host-to-device copy."""
    return torch.full((), value, dtype=torch.float32, device=like.device)


def _div(a: torch.Tensor | float, b: torch.Tensor | float) -> torch.Tensor:
    """a / b rounded once in float32, whichever of them is a Python number."""
    like = a if isinstance(a, torch.Tensor) else b
    if not isinstance(a, torch.Tensor):
        a = _const(a, like)
    if not isinstance(b, torch.Tensor):
        b = _const(b, like)
    return torch.div(a, b)


def _f32(value: float) -> float:
    """A constant expression the C code evaluates in float32, as a Python float holding that float32."""
    return float(np.float32(value))


def _fp16(x: torch.Tensor) -> torch.Tensor:
    """GGML_FP32_TO_FP16 and back: the scales a block stores are fp16 (round to nearest even)."""
    return x.to(torch.float16).to(torch.float32)


def _seq_sum(terms: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """The C loop `float s = 0; for (...) s += term[i];` along dim: float32 adds in element order.
    Callers stack several sums' terms on a leading dim so that they share the loop's small ops."""
    parts = terms.unbind(dim)
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


def _sqrtf(x: torch.Tensor) -> torch.Tensor:
    """C sqrtf, correctly rounded. torch's float32 sqrt on CPU is not (about 1 in 6 results is 1 ulp off);
    a float64 square root rounded to float32 is exactly sqrtf's result (53 >= 2*24 + 2 bits)."""
    return torch.sqrt(x.to(torch.float64)).to(torch.float32)


def _nearest_int(x: torch.Tensor) -> torch.Tensor:
    # ggml's nearest_int (adding 1.5*2^23) rounds half to even, as torch.round does
    return torch.round(x)


def _roundf(x: torch.Tensor) -> torch.Tensor:
    """C roundf, halves away from zero: trunc(x + copysign(0.49999997f, x)). Adding the float just below 0.5
    rather than 0.5 keeps 0.49999997 from rounding up, while x.5 still reaches the next integer."""
    just_below_half = _const(float(np.nextafter(np.float32(0.5), np.float32(0.0))), x)
    return torch.trunc(x + torch.copysign(just_below_half, x))


def _signed_max_abs(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """The element of largest |x| along dim, the first one if both signs reach it (the C loops keep the first
    with a strict `>`); 0 if all are 0. Scanned from the last element so that the first one wins."""
    magnitude = x.abs()
    amax = magnitude.amax(dim=dim)
    result = amax
    for value, size in zip(reversed(x.unbind(dim)), reversed(magnitude.unbind(dim))):
        result = torch.where(size == amax, value, result)
    return result


def _reciprocal_or_zero(d: torch.Tensor) -> torch.Tensor:
    """`d ? 1.0f/d : 0.0f`."""
    return torch.where(d != 0, _div(1.0, d), torch.zeros_like(d))


# ---------------------------------------------------------------- 32-blocks: x is [32, blocks]


def _q8_0(x: torch.Tensor) -> torch.Tensor:
    d = _div(x.abs().amax(dim=0), 127.0)
    q = _roundf(x * _reciprocal_or_zero(d))
    return q * _fp16(d)


def _q4_0(x: torch.Tensor) -> torch.Tensor:
    return _symmetric_truncating(x, 8, 15)


def _q5_0(x: torch.Tensor) -> torch.Tensor:
    return _symmetric_truncating(x, 16, 31)


def _symmetric_truncating(x: torch.Tensor, offset: int, top: int) -> torch.Tensor:
    """Q4_0/Q5_0: d = max / -offset; q = MIN(top, (int8_t)(x*id + offset + 0.5f)), stored as q - offset."""
    d = _div(_signed_max_abs(x), float(-offset))
    q = torch.trunc(x * _reciprocal_or_zero(d) + (offset + 0.5)).clamp_max(top)
    return (q - offset) * _fp16(d)


def _q4_1(x: torch.Tensor) -> torch.Tensor:
    return _affine_truncating(x, 15)


def _q5_1(x: torch.Tensor) -> torch.Tensor:
    return _affine_truncating(x, 31)


def _affine_truncating(x: torch.Tensor, top: int) -> torch.Tensor:
    """Q4_1/Q5_1: d = (max - min) / top, q = (int)((x - min)*id + 0.5f); stores d and min."""
    lo = x.amin(dim=0)
    d = _div(x.amax(dim=0) - lo, float(top))
    q = torch.trunc((x - lo) * _reciprocal_or_zero(d) + 0.5).clamp_max(top)
    return _fp16(d) * q + _fp16(lo)


def _iq4_nl_level_table() -> tuple[tuple[float, ...], int]:
    """best_index_int8 as a table: level i is picked once 2*al reaches val[i-1] + val[i], an integer, so the
    level of al depends only on floor(2*al). Returns the level values for floor(2*al) = lowest, lowest + 1, ..."""
    thresholds = [a + b for a, b in zip(KVALUES_IQ4NL, KVALUES_IQ4NL[1:])]
    lowest, highest = thresholds[0] - 1, thresholds[-1]
    table = tuple(float(KVALUES_IQ4NL[sum(t <= k for t in thresholds)]) for k in range(lowest, highest + 1))
    return table, lowest


_IQ4NL_LEVELS, _IQ4NL_LOWEST = _iq4_nl_level_table()


@functools.lru_cache(maxsize=None)
def _iq4_nl_table(device: torch.device) -> torch.Tensor:
    return torch.tensor(_IQ4NL_LEVELS, dtype=torch.float32, device=device)


def _iq4_nl(x: torch.Tensor) -> torch.Tensor:
    """quantize_row_iq4_nl_impl(super_block_size = block_size = 32, ntry = 7, no quant weights)."""
    table = _iq4_nl_table(x.device)

    def levels(x: torch.Tensor, iscale: torch.Tensor) -> torch.Tensor:
        # 2*(iscale*x) == x*(2*iscale) exactly; NaN (from NaN weights) must not become an index
        doubled = torch.floor(x * (iscale + iscale)).clamp_(_IQ4NL_LOWEST, _IQ4NL_LOWEST + len(table) - 1)
        index = doubled.nan_to_num_(_IQ4NL_LOWEST).sub_(_IQ4NL_LOWEST).to(torch.int32)
        return table.index_select(0, index.reshape(-1)).reshape(index.shape)

    weight = x * x
    terms = x.new_empty((2, *x.shape))

    def sums(q: torch.Tensor) -> torch.Tensor:
        wq = weight * q  # sumqx += w*q*x and sumq2 += w*q*q, both evaluated as (w*q)*...
        torch.mul(wq, x, out=terms[0])
        torch.mul(wq, q, out=terms[1])
        return _seq_sum(terms, dim=1)

    max_ = _signed_max_abs(x)
    all_zero = max_.abs() < GROUP_MAX_EPS
    max_ = torch.where(all_zero, torch.ones_like(max_), max_)  # keeps those (discarded) lanes finite
    d = _div(-max_, KVALUES_IQ4NL[0])
    sumqx, sumq2 = sums(levels(x, _div(1.0, d))).unbind(0)
    d = torch.where(sumq2 > 0, _div(sumqx, sumq2), torch.zeros_like(sumqx))
    best = d * sumqx
    for itry in range(-7, 8):
        sumqx, sumq2 = sums(levels(x, _div(float(itry + KVALUES_IQ4NL[0]), max_))).unbind(0)
        better = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
        d = torch.where(better, _div(sumqx, sumq2), d)
        best = torch.where(better, d * sumqx, best)
    d = torch.where(all_zero, torch.zeros_like(d), d)
    # the levels are re-picked with the float32 scale; the block stores it as fp16
    return _fp16(d) * levels(x, _reciprocal_or_zero(d))


# ---------------------------------------------------------------- K types: x is [256, super-blocks]


def _sub_blocks(x: torch.Tensor, size: int) -> torch.Tensor:
    """[256, n] -> [size, 256/size * n]: sub-block s of super-block b is column b * (256/size) + s."""
    n = x.shape[1]
    return x.reshape(QK_K // size, size, n).permute(1, 2, 0).reshape(size, n * (QK_K // size))


def _super_blocks(y: torch.Tensor, size: int) -> torch.Tensor:
    """Inverse of _sub_blocks."""
    n = y.shape[1] // (QK_K // size)
    return y.reshape(size, n, QK_K // size).permute(2, 0, 1).reshape(QK_K, n)


def _per_super_block(v: torch.Tensor, size: int) -> torch.Tensor:
    """A per-sub-block vector as [super-blocks, sub-blocks]."""
    return v.reshape(-1, QK_K // size)


def _make_qkx2_quants(
    x: torch.Tensor, weights: torch.Tensor, nmax: int, rmin: float, rdelta: float, nstep: int, use_mad: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """make_qkx2_quants over every column: a scale and a min (returned as -min >= 0) fitting x ~ scale*l + min.

    Only the scale and min matter: the caller requantizes every element with the stored (rounded) values.
    """
    lo = x.amin(dim=0)
    hi = x.amax(dim=0)
    terms = x.new_empty((3, *x.shape))
    terms[0] = weights
    torch.mul(weights, x, out=terms[1])
    sum_w, sum_x = _seq_sum(terms[:2], dim=1).unbind(0)
    lo = lo.clamp_max(0.0)
    flat = hi == lo
    searchable = ~flat

    def error(scale: torch.Tensor, min_: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        diff = scale * levels + min_ - x
        diff = diff.abs() if use_mad else diff * diff
        return _seq_sum(weights * diff)

    iscale = _div(float(nmax), hi - lo)
    scale = _div(1.0, iscale)
    levels = _nearest_int(iscale * (x - lo)).clamp(0, nmax)
    best_error = error(scale, lo, levels)
    for step in range(nstep + 1):
        # rmin + rdelta*is + nmax in float32; the search moves from the min found so far
        iscale = _div(_f32(np.float32(rmin) + np.float32(rdelta) * np.float32(step) + np.float32(nmax)), hi - lo)
        levels = _nearest_int(iscale * (x - lo)).clamp(0, nmax)
        wl = torch.mul(weights, levels, out=terms[0])
        torch.mul(wl, levels, out=terms[1])
        torch.mul(wl, x, out=terms[2])
        sum_l, sum_l2, sum_xl = _seq_sum(terms, dim=1).unbind(0)
        det = sum_w * sum_l2 - sum_l * sum_l
        this_scale = _div(sum_w * sum_xl - sum_x * sum_l, det)
        this_min = _div(sum_l2 * sum_x - sum_l * sum_xl, det)
        positive_min = this_min > 0
        this_scale = torch.where(positive_min, _div(sum_xl, sum_l2), this_scale)
        this_min = torch.where(positive_min, torch.zeros_like(this_min), this_min)
        cur_error = error(this_scale, this_min, levels)
        better = searchable & (det > 0) & (cur_error < best_error)
        best_error = torch.where(better, cur_error, best_error)
        scale = torch.where(better, this_scale, scale)
        lo = torch.where(better, this_min, lo)
    scale = torch.where(flat, torch.zeros_like(scale), scale)
    return scale, -lo


def _make_qx_quants_rmse1(x: torch.Tensor, nmax: int) -> torch.Tensor:
    """make_qx_quants(rmse_type = 1, no quant weights) over every column: the scale of x ~ scale*l."""
    max_ = _signed_max_abs(x)
    weight = x * x
    wx = weight * x
    terms = x.new_empty((2, *x.shape))

    def sums(iscale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        levels = _nearest_int(iscale * x).clamp(-nmax, nmax - 1)
        torch.mul(wx, levels, out=terms[0])  # w*x*l
        torch.mul(torch.mul(weight, levels, out=terms[1]), levels, out=terms[1])  # w*l*l
        return _seq_sum(terms, dim=1).unbind(0)

    sumlx, suml2 = sums(_div(float(-nmax), max_))
    scale = torch.where(suml2 != 0, _div(sumlx, suml2), torch.zeros_like(sumlx))
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        sumlx, suml2 = sums(_div(_f32(-(np.float32(nmax) + np.float32(0.1) * np.float32(step))), max_))
        better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        scale = torch.where(better, _div(sumlx, suml2), scale)
        best = torch.where(better, scale * sumlx, best)
    return torch.where(max_.abs() < GROUP_MAX_EPS, torch.zeros_like(scale), scale)


def _make_q3_quants_rmse(x: torch.Tensor, nmax: int) -> torch.Tensor:
    """make_q3_quants(do_rmse = true) over every column: a weighted fit refined one element at a time
    (sequential within a block, so the loop runs over elements and the blocks move together)."""
    max_ = _signed_max_abs(x)
    weight = x * x
    wx = weight * x
    levels = _nearest_int(_div(float(-nmax), max_) * x).clamp(-nmax, nmax - 1)
    sumlx, suml2 = _seq_sum(wx * levels), _seq_sum(weight * levels * levels)
    levels = list(levels.unbind(0))
    xs, ws, wxs = x.unbind(0), weight.unbind(0), wx.unbind(0)
    # the C loop stops after a pass that changes nothing; a further pass would change nothing either
    for _ in range(5):
        for i in range(x.shape[0]):
            xi, wi, wxi, li = xs[i], ws[i], wxs[i], levels[i]
            slx = sumlx - wxi * li
            sl2 = suml2 - wi * li * li
            new_l = _nearest_int(_div(xi * sl2, slx)).clamp(-nmax, nmax - 1)
            tried = (slx > 0) & (new_l != li)
            slx = slx + wxi * new_l
            sl2 = sl2 + wi * new_l * new_l
            take = tried & (sl2 > 0) & (slx * slx * suml2 > sumlx * sumlx * sl2)
            levels[i] = torch.where(take, new_l, li)
            sumlx = torch.where(take, slx, sumlx)
            suml2 = torch.where(take, sl2, suml2)
    scale = torch.where(suml2 > 0, _div(sumlx, suml2), torch.zeros_like(sumlx))
    return torch.where(max_.abs() < GROUP_MAX_EPS, torch.zeros_like(scale), scale)


def _requantize(x: torch.Tensor, d: torch.Tensor, dm: torch.Tensor | None, lo: int, hi: int) -> torch.Tensor:
    """The final pass of the K quantizers: l = nearest_int((x + dm)/d) with the stored scales, dequantized as
    d*l - dm. Where d == 0 the C code keeps the search's levels, which dequantize to -dm all the same."""
    shifted = x if dm is None else x + dm
    # any finite level will do where d == 0: divide by 1 there instead of making inf/NaN
    levels = _nearest_int(_div(shifted, torch.where(d != 0, d, torch.ones_like(d)))).clamp(lo, hi)
    return d * levels if dm is None else d * levels - dm


def _affine_k(x: torch.Tensor, nmax: int, rmin: float, nstep: int) -> torch.Tensor:
    """quantize_row_q4_K_ref / q5_K_ref: 8 sub-blocks of 32 with 6-bit scales and mins."""
    sub = _sub_blocks(x, 32)
    sum_x2 = _seq_sum(sub * sub)
    av_x = _sqrtf(_div(sum_x2, 32.0))
    weights = av_x + sub.abs()
    scales, mins = _make_qkx2_quants(sub, weights, nmax, rmin, 0.1, nstep, use_mad=False)
    scales, mins = _per_super_block(scales, 32), _per_super_block(mins, 32)
    max_scale = scales.amax(dim=1, keepdim=True).clamp_min(0.0)
    max_min = mins.amax(dim=1, keepdim=True).clamp_min(0.0)
    inv_scale = torch.where(max_scale > 0, _div(63.0, max_scale), torch.zeros_like(max_scale))
    inv_min = torch.where(max_min > 0, _div(63.0, max_min), torch.zeros_like(max_min))
    # uint8_t ls = nearest_int(...); MIN(63, ls)
    ls = torch.remainder(_nearest_int(inv_scale * scales), 256).clamp_max(63)
    lm = torch.remainder(_nearest_int(inv_min * mins), 256).clamp_max(63)
    d = _fp16(_div(max_scale, 63.0)) * ls
    dm = _fp16(_div(max_min, 63.0)) * lm
    y = _requantize(sub, d.reshape(-1), dm.reshape(-1), 0, nmax)
    return _super_blocks(y, 32)


def _q4_k(x: torch.Tensor) -> torch.Tensor:
    return _affine_k(x, 15, -1.0, 20)


def _q5_k(x: torch.Tensor) -> torch.Tensor:
    return _affine_k(x, 31, -0.5, 15)


def _q2_k(x: torch.Tensor) -> torch.Tensor:
    """quantize_row_q2_K_ref: 16 sub-blocks of 16 with 4-bit scales and mins."""
    sub = _sub_blocks(x, 16)
    scales, mins = _make_qkx2_quants(sub, sub.abs(), 3, -0.5, 0.1, 15, use_mad=True)
    scales, mins = _per_super_block(scales, 16), _per_super_block(mins, 16)
    max_scale = scales.amax(dim=1, keepdim=True).clamp_min(0.0)
    max_min = mins.amax(dim=1, keepdim=True).clamp_min(0.0)
    has_scale, has_min = max_scale > 0, max_min > 0
    ls = _nearest_int(_div(15.0, max_scale) * scales).to(torch.int32)
    lm = _nearest_int(_div(15.0, max_min) * mins).to(torch.int32)
    # one byte per sub-block: scale in the low nibble, min OR-ed in above it
    packed = torch.where(has_scale, ls, torch.zeros_like(ls)) & 0xFF
    packed = torch.where(has_min, (packed | (lm << 4)) & 0xFF, packed)
    zero = torch.zeros_like(max_scale)
    d = _fp16(torch.where(has_scale, _div(max_scale, 15.0), zero)) * (packed & 0xF).to(torch.float32)
    dm = _fp16(torch.where(has_min, _div(max_min, 15.0), zero)) * (packed >> 4).to(torch.float32)
    y = _requantize(sub, d.reshape(-1), dm.reshape(-1), 0, 3)
    return _super_blocks(y, 16)


def _q3_k(x: torch.Tensor) -> torch.Tensor:
    """quantize_row_q3_K_ref: 16 sub-blocks of 16, symmetric, with 6-bit signed scales."""
    sub = _sub_blocks(x, 16)
    scales = _per_super_block(_make_q3_quants_rmse(sub, 4), 16)
    max_scale = _signed_max_abs(scales, dim=1).unsqueeze(1)
    has_scale = max_scale != 0
    iscale = _div(-32.0, max_scale)
    sc = _nearest_int(iscale * scales).clamp(-32, 31)
    d = _fp16(torch.where(has_scale, _div(1.0, iscale), torch.zeros_like(iscale)))
    # with no scale the stored 6-bit scales are 0, i.e. -32 once unpacked
    sc = torch.where(has_scale, sc, torch.full_like(sc, -32.0))
    y = _requantize(sub, (d * sc).reshape(-1), None, -4, 3)
    return _super_blocks(y, 16)


def _q6_k(x: torch.Tensor) -> torch.Tensor:
    """quantize_row_q6_K_ref: 16 sub-blocks of 16, symmetric, with 8-bit signed scales."""
    sub = _sub_blocks(x, 16)
    scales = _per_super_block(_make_qx_quants_rmse1(sub, 32), 16)
    max_scale = _signed_max_abs(scales, dim=1).unsqueeze(1)
    all_zero = max_scale.abs() < GROUP_MAX_EPS
    iscale = _div(-128.0, max_scale)
    sc = _nearest_int(iscale * scales).clamp_max(127)
    d = _fp16(_div(1.0, iscale)) * sc
    d = torch.where(all_zero, torch.zeros_like(d), d)
    y = _requantize(sub, d.reshape(-1), None, -32, 31)
    return _super_blocks(y, 16)


_QUANTIZERS = {
    "Q8_0": _q8_0,
    "Q4_0": _q4_0,
    "Q4_1": _q4_1,
    "Q5_0": _q5_0,
    "Q5_1": _q5_1,
    "IQ4_NL": _iq4_nl,
    "Q2_K": _q2_k,
    "Q3_K": _q3_k,
    "Q4_K": _q4_k,
    "Q5_K": _q5_k,
    "Q6_K": _q6_k,
}
