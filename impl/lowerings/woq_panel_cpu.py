"""CPU prefill: y (M, N) = x (M, K) @ W.T for M past the decode kernels, the weight decoded
one panel of rows at a time into a cache-sized buffer, each panel multiplied by ATen's GEMM.

The decomposition (``dequantize`` then ``F.linear``) writes the whole dequantized weight
(N, K) and the GEMM reads it back: for the Llama's 5632 x 2048 MLP weight that is 46 MB of
float32 through DRAM each way, plus Inductor's dequantization loop, about as long as the
GEMM itself at M = 64 on one AVX2 core (``benchmarks/cpu.md``). Here a C++ kernel (one per
scheme, built like ``woq_gemv_cpu``'s) decodes ``PANEL_BYTES`` of W's rows (2 MB)
and ``torch.mm`` multiplies x by that panel straight into y's columns, so the decoded weight
stays in cache and DRAM sees only the packed bytes.

The GEMM's dtype (``compute_dtype``): x's own where the host has native half-precision dot
products (bfloat16: AVX512-BF16 or AMX; float16: AMX-FP16), as the dense model's GEMM does;
float32 otherwise (on an AVX2 host oneDNN's bfloat16 GEMM converts in software and is ~10x
slower than its float32 one, so the dense bfloat16 model is too). The decoded values are
the decomposition's float32 weight, rounded to the GEMM's dtype.

Kernels: AVX2 + FMA where the CPU has them (``__builtin_cpu_supports``), a scalar loop of
the same formula otherwise; nothing depends on ``ATEN_CPU_CAPABILITY``.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import torch

from ..schemes.nf4 import DOUBLE_QUANT_BLOCK
from .woq_gemv_cpu import CPU_THREADS_AND_ISA

# Bytes of decoded weight per panel: at M = 17-256 on the Llama's shapes (one AVX2 core, 32 MB
# L3) 1-4 MB panels were fastest; 0.5 MB and 8 MB slower, a whole decoded weight (46 MB) 2.5x
# slower at M = 64. Rows a panel: this over K's row bytes, a multiple of 16, at least 16.
PANEL_BYTES = 2 << 20
PANEL_ROW_MULTIPLE = 16
_DTYPE_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}

# --------------------------------------------------------------------------- kernel source

_COMMON = r"""
#include <torch/csrc/inductor/cpp_prefix.h>
#include <immintrin.h>

namespace {

""" + CPU_THREADS_AND_ISA + r"""
// 32 decoded float32 values (w[0..3], natural order) -> out[0 .. count) in `dtype`.
__attribute__((target("avx2,fma"))) inline void store_step(const __m256 w[4], void* out, int64_t count, int64_t dtype) {
    if (dtype == 0 && count == 32) {
        float* o = static_cast<float*>(out);
        for (int i = 0; i < 4; ++i) _mm256_storeu_ps(o + 8 * i, w[i]);
        return;
    }
    if (dtype == 1 && count == 32) {
        // float32 -> bfloat16, round to nearest even (weights are finite): bits + 0x7FFF + lsb.
        const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7FFF);
        __m256i h[4];
        for (int i = 0; i < 4; ++i) {
            __m256i bits = _mm256_castps_si256(w[i]);
            __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), one);
            h[i] = _mm256_srli_epi32(_mm256_add_epi32(bits, _mm256_add_epi32(bias, lsb)), 16);
        }
        // packus interleaves 128-bit lanes: (0 lo, 1 lo, 0 hi, 1 hi) -> reorder to (0, 1).
        __m256i p01 = _mm256_permute4x64_epi64(_mm256_packus_epi32(h[0], h[1]), 0xD8);
        __m256i p23 = _mm256_permute4x64_epi64(_mm256_packus_epi32(h[2], h[3]), 0xD8);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), p01);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(static_cast<uint16_t*>(out) + 16), p23);
        return;
    }
    alignas(32) float tmp[32];
    for (int i = 0; i < 4; ++i) _mm256_store_ps(tmp + 8 * i, w[i]);
    for (int64_t t = 0; t < count; ++t) {
        if (dtype == 0) static_cast<float*>(out)[t] = tmp[t];
        else if (dtype == 1) static_cast<at::BFloat16*>(out)[t] = at::BFloat16(tmp[t]);
        else static_cast<at::Half*>(out)[t] = at::Half(tmp[t]);
    }
}

inline void store_value(float v, void* out, int64_t t, int64_t dtype) {
    if (dtype == 0) static_cast<float*>(out)[t] = v;
    else if (dtype == 1) static_cast<at::BFloat16*>(out)[t] = at::BFloat16(v);
    else static_cast<at::Half*>(out)[t] = at::Half(v);
}

inline int64_t dtype_size(int64_t dtype) { return dtype == 0 ? 4 : 2; }

// 16 packed bytes (32 nibbles, byte j holding values 2j low and 2j + 1 high) -> the 32
// codes in natural order as 4 x 8 int32.
__attribute__((target("avx2,fma"))) inline void nibble_codes(const uint8_t* p, __m256i c[4]) {
    const __m128i mask = _mm_set1_epi8(0x0F);
    __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    __m128i lo = _mm_and_si128(b, mask), hi = _mm_and_si128(_mm_srli_epi16(b, 4), mask);
    __m128i v0 = _mm_unpacklo_epi8(lo, hi), v1 = _mm_unpackhi_epi8(lo, hi);
    c[0] = _mm256_cvtepu8_epi32(v0);
    c[1] = _mm256_cvtepu8_epi32(_mm_srli_si128(v0, 8));
    c[2] = _mm256_cvtepu8_epi32(v1);
    c[3] = _mm256_cvtepu8_epi32(_mm_srli_si128(v1, 8));
}

}  // namespace
"""

_INT8 = r"""
// out (rows, K) = q[n0 + r, k] * scale[n0 + r] in `dtype`.
extern "C" void kernel(const int8_t* q, const float* scale, void* out, int64_t n0, int64_t rows, int64_t k,
                       int64_t dtype, int64_t vectorized) {
    const bool avx2 = vectorized && has_avx2();
    const int64_t size = dtype_size(dtype);
    #pragma omp parallel for schedule(static) if (rows * k >= kParallelMinValues)
    for (int64_t r = 0; r < rows; ++r) {
        const int8_t* row = q + (n0 + r) * k;
        char* dst = static_cast<char*>(out) + r * k * size;
        const float s = scale[n0 + r];
        int64_t j = 0;
        if (avx2) {
            [&]() __attribute__((target("avx2,fma"))) {
                const __m256 sv = _mm256_set1_ps(s);
                for (; j + 32 <= k; j += 32) {
                    __m256 w[4];
                    for (int i = 0; i < 4; ++i) {
                        __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + j + 8 * i));
                        w[i] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)), sv);
                    }
                    store_step(w, dst + j * size, 32, dtype);
                }
            }();
        }
        for (; j < k; ++j) store_value(static_cast<float>(row[j]) * s, dst, j, dtype);
    }
}
"""

_INT4 = r"""
// out (rows, K) = (u[n0 + r, k] - zero[n0 + r, g]) * scale[n0 + r, g], g = k / G, in `dtype`.
extern "C" void kernel(const uint8_t* q, const float* scale, const float* zero, void* out, int64_t n0, int64_t rows,
                       int64_t k, int64_t k_pad, int64_t group_size, int64_t dtype, int64_t vectorized) {
    const bool avx2 = vectorized && has_avx2();
    const int64_t half = k_pad / 2, groups = k_pad / group_size, size = dtype_size(dtype);
    #pragma omp parallel for schedule(static) if (rows * k >= kParallelMinValues)
    for (int64_t r = 0; r < rows; ++r) {
        const uint8_t* row = q + (n0 + r) * half;
        const float* s = scale + (n0 + r) * groups;
        const float* z = zero + (n0 + r) * groups;
        char* dst = static_cast<char*>(out) + r * k * size;
        int64_t j = 0;  // value index, 32 a step (a group holds whole steps: G >= 32)
        if (avx2) {
            [&]() __attribute__((target("avx2,fma"))) {
                for (; j < k; j += 32) {
                    const int64_t g = j / group_size;
                    const __m256 zv = _mm256_broadcast_ss(z + g), sv = _mm256_broadcast_ss(s + g);
                    __m256i c[4];
                    nibble_codes(row + j / 2, c);
                    __m256 w[4];
                    for (int i = 0; i < 4; ++i) w[i] = _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(c[i]), zv), sv);
                    store_step(w, dst + j * size, std::min<int64_t>(32, k - j), dtype);
                }
            }();
        }
        for (; j < k; ++j) {
            const int code = j % 2 ? row[j / 2] >> 4 : row[j / 2] & 15;
            const int64_t g = j / group_size;
            store_value((static_cast<float>(code) - z[g]) * s[g], dst, j, dtype);
        }
    }
}
"""

_NF4 = r"""
// out (rows, K) = levels[u[n0 + r, k]] * absmax[n0 + r, b], b = k / B, in `dtype`; absmax
// decoded first when double-quantized (codes * absmax_scale[flat / 256] + absmax_offset).
inline float row_absmax(const void* absmax, const float* absmax_scale, const float* absmax_offset,
                        int64_t double_quant, int64_t flat) {
    if (!double_quant) return static_cast<const float*>(absmax)[flat];
    const float scaled = static_cast<float>(static_cast<const uint8_t*>(absmax)[flat]) * absmax_scale[flat / %(dq_block)d];
    return scaled + absmax_offset[0];
}

extern "C" void kernel(const uint8_t* q, const void* absmax, const float* levels, const float* absmax_scale,
                       const float* absmax_offset, void* out, int64_t n0, int64_t rows, int64_t k, int64_t k_pad,
                       int64_t block_size, int64_t double_quant, int64_t dtype, int64_t vectorized) {
    const bool avx2 = vectorized && has_avx2();
    const int64_t half = k_pad / 2, blocks = k_pad / block_size, size = dtype_size(dtype);
    #pragma omp parallel for schedule(static) if (rows * k >= kParallelMinValues)
    for (int64_t r = 0; r < rows; ++r) {
        const int64_t col = n0 + r;
        const uint8_t* row = q + col * half;
        char* dst = static_cast<char*>(out) + r * k * size;
        int64_t j = 0;  // value index, 32 a step (a block holds whole steps: B >= 32)
        if (avx2) {
            [&]() __attribute__((target("avx2,fma"))) {
                // levels[c] for 8 codes: a permute within each half of the table, then a blend
                // on c >= 8 (AVX2 has no 16-entry float lookup).
                const __m256 low = _mm256_loadu_ps(levels), high = _mm256_loadu_ps(levels + 8);
                const __m256i seven = _mm256_set1_epi32(7);
                for (; j < k; j += 32) {
                    const __m256 av = _mm256_set1_ps(
                        row_absmax(absmax, absmax_scale, absmax_offset, double_quant, col * blocks + j / block_size));
                    __m256i c[4];
                    nibble_codes(row + j / 2, c);
                    __m256 w[4];
                    for (int i = 0; i < 4; ++i) {
                        __m256 is_high = _mm256_castsi256_ps(_mm256_cmpgt_epi32(c[i], seven));
                        __m256 level = _mm256_blendv_ps(_mm256_permutevar8x32_ps(low, c[i]),
                                                        _mm256_permutevar8x32_ps(high, c[i]), is_high);
                        w[i] = _mm256_mul_ps(level, av);
                    }
                    store_step(w, dst + j * size, std::min<int64_t>(32, k - j), dtype);
                }
            }();
        }
        for (; j < k; ++j) {
            const int code = j %% 2 ? row[j / 2] >> 4 : row[j / 2] & 15;
            const float a = row_absmax(absmax, absmax_scale, absmax_offset, double_quant, col * blocks + j / block_size);
            store_value(levels[code] * a, dst, j, dtype);
        }
    }
}
""" % {"dq_block": DOUBLE_QUANT_BLOCK}

_ARGTYPES = {
    "int8": ["const int8_t*", "const float*", "void*", *["int64_t"] * 5],
    "int4": ["const uint8_t*", "const float*", "const float*", "void*", *["int64_t"] * 7],
    "nf4": ["const uint8_t*", "const void*", "const float*", "const float*", "const float*", "void*",
            *["int64_t"] * 8],
}
_SOURCES = {"int8": _COMMON + _INT8, "int4": _COMMON + _INT4, "nf4": _COMMON + _NF4}


@functools.cache
def compiled_kernel(scheme: str) -> Callable[..., None]:
    """The scheme's panel decoder, built on first use (Inductor's C++ cache keeps it)."""
    from torch._inductor.codecache import CppPythonBindingsCodeCache

    return CppPythonBindingsCodeCache.load_pybinding(_ARGTYPES[scheme], _SOURCES[scheme])


# --------------------------------------------------------------------------- launchers


@functools.cache
def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The GEMM's dtype for activations in ``dtype`` on this host (see the module docstring)."""
    if dtype == torch.bfloat16 and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()):
        return dtype
    if dtype == torch.float16 and torch.cpu._is_amx_fp16_supported():
        return dtype
    return torch.float32


def _check_x(op: str, x: torch.Tensor, k_max: int) -> None:
    if x.dim() != 2 or not 0 < x.shape[1] <= k_max or x.dtype not in _DTYPE_CODES or x.device.type != "cpu":
        raise ValueError(f"{op}: x must be a CPU (M, K <= {k_max}) float32 / bfloat16 / float16 tensor; "
                         f"got {tuple(x.shape)} {x.dtype} on {x.device}")


def panel_rows_for(k: int, dtype: torch.dtype) -> int:
    """Rows of W a panel holds: ``PANEL_BYTES`` of decoded values."""
    rows = PANEL_BYTES // (k * dtype.itemsize) // PANEL_ROW_MULTIPLE * PANEL_ROW_MULTIPLE
    return max(PANEL_ROW_MULTIPLE, rows)


def _panels(x: torch.Tensor, n: int, decode: Callable[[torch.Tensor, int, int, int], None],
            gemm_dtype: Optional[torch.dtype], panel_rows: Optional[int]) -> torch.Tensor:
    """y = x @ W.T, W decoded ``panel_rows`` rows at a time by ``decode(out, dtype_code, n0, rows)``
    and each panel's product written straight into y's columns (the GEMM takes y's row stride)."""
    dtype = gemm_dtype or compute_dtype(x.dtype)
    panel_rows = panel_rows or panel_rows_for(x.shape[1], dtype)
    xc = x.to(dtype).contiguous()
    y = torch.empty((x.shape[0], n), dtype=dtype)
    panel = torch.empty((min(panel_rows, n), x.shape[1]), dtype=dtype)
    for n0 in range(0, n, panel_rows):
        rows = min(panel_rows, n - n0)
        decode(panel, _DTYPE_CODES[dtype], n0, rows)
        torch.mm(xc, panel[:rows].t(), out=y[:, n0:n0 + rows])
    return y.to(x.dtype)


def mm_int8(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, *, vectorized: bool = True,
            gemm_dtype: Optional[torch.dtype] = None, panel_rows: Optional[int] = None) -> torch.Tensor:
    """x (M, K), qweight (N, K) int8, scale (N,) float32 -> y (M, N) in x's dtype.

    ``vectorized=False``: the scalar decoder (a CPU without AVX2 + FMA); ``gemm_dtype``: the
    GEMM's dtype instead of ``compute_dtype``'s choice (tests)."""
    n, k = qweight.shape
    _check_x("woq_panel_int8", x, k)
    if x.shape[1] != k:
        raise ValueError(f"woq_panel_int8: x must have K = {k} columns (qweight's); got {x.shape[1]}")
    qweight, scale = qweight.contiguous(), scale.contiguous()
    kernel = compiled_kernel("int8")

    def decode(out, code, n0, rows):
        kernel(qweight, scale, out, n0, rows, k, code, int(vectorized))

    return _panels(x, n, decode, gemm_dtype, panel_rows)


def mm_int4(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, *, group_size: int,
            vectorized: bool = True, gemm_dtype: Optional[torch.dtype] = None,
            panel_rows: Optional[int] = None) -> torch.Tensor:
    """x (M, K), the int4 layout (``impl/schemes/int4.py``) -> y (M, N) in x's dtype."""
    n, k_pad, k = qweight.shape[0], 2 * qweight.shape[1], x.shape[1]
    _check_x("woq_panel_int4", x, k_pad)
    qweight, scale, zero = qweight.contiguous(), scale.contiguous(), zero.contiguous()
    kernel = compiled_kernel("int4")

    def decode(out, code, n0, rows):
        kernel(qweight, scale, zero, out, n0, rows, k, k_pad, group_size, code, int(vectorized))

    return _panels(x, n, decode, gemm_dtype, panel_rows)


def mm_nf4(x: torch.Tensor, qweight: torch.Tensor, absmax: torch.Tensor, levels: torch.Tensor,
           absmax_scale: Optional[torch.Tensor], absmax_offset: Optional[torch.Tensor], *, block_size: int,
           vectorized: bool = True, gemm_dtype: Optional[torch.dtype] = None,
           panel_rows: Optional[int] = None) -> torch.Tensor:
    """x (M, K), the NF4 layout (``impl/schemes/nf4.py``) -> y (M, N) in x's dtype."""
    n, k_pad, k = qweight.shape[0], 2 * qweight.shape[1], x.shape[1]
    _check_x("woq_panel_nf4", x, k_pad)
    double_quant = absmax_scale is not None
    qweight, absmax, levels = qweight.contiguous(), absmax.contiguous(), levels.contiguous()
    if double_quant:
        absmax_scale, absmax_offset = absmax_scale.contiguous(), absmax_offset.contiguous()
    else:  # the kernel reads neither; any float32 pointer will do
        absmax_scale = absmax_offset = levels
    kernel = compiled_kernel("nf4")

    def decode(out, code, n0, rows):
        kernel(qweight, absmax, levels, absmax_scale, absmax_offset, out, n0, rows, k, k_pad, block_size,
               int(double_quant), code, int(vectorized))

    return _panels(x, n, decode, gemm_dtype, panel_rows)

