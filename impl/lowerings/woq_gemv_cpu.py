"""CPU decode kernels: y (M, N) = x (M, K) @ W.T for small M, reading only the quantized bytes.

One C++ kernel per scheme, compiled once per host through Inductor's own C++ toolchain
(``CppPythonBindingsCodeCache``: its compiler flags, OpenMP and on-disk cache), laid out
like a tutorial: kernel source, launcher (``gemv_<scheme>``), float64 reference.

Each kernel walks the weight row by row (rows split over the OpenMP threads), decodes a
16-byte chunk of the packed row into float32 vectors in registers (int8: 16 values; int4 /
nf4: 32 nibbles, u or ``levels[u]``) and multiplies it into the accumulators of
up to four x rows at once, so the weight is read once per call and never written out.
int4's per-group scale and nf4's per-block absmax multiply the group's (block's) partial sum,
once a group, and int4's zero point comes out of the loop through x's group sums. The sums are

    int8:  y[m, n] = scale[n] * sum_k x[m, k] q[n, k]
    int4:  y[m, n] = sum_g scale[n, g] * sum_{k in g} x[m, k] u[n, k]
                     - sum_g scale[n, g] zero[n, g] sum_{k in g} x[m, k]
    nf4:   y[m, n] = sum_b absmax[n, b] * sum_{k in b} x[m, k] levels[u[n, k]]

accumulated in float32 (x converted to float32 first; x's group sums in float64), then
rounded to x's dtype. int8 sums the decomposition's float32 products in another order;
int4 and nf4 regroup the sum (the scale applied to a group's sum, not to each weight), so
their float32 rounding differs by a few ulps of the group sums. The weight is never rounded
to x's dtype (the decomposition rounds it for bfloat16 / float16).

The vector loops use function-level ``target`` attributes (the compile flags do not
matter) and are chosen at run time by ``__builtin_cpu_supports``:

- AVX-512 (hosts with AVX512-BF16), 32 packed bytes a step, int4 / nf4 codes looked up in a
  16-entry table by one permute:
  BF16 for bfloat16 x: the codes decoded to bfloat16 in registers and multiplied into float32
  accumulators by ``vdpbf16ps``, 32 products an instruction, against x's own bfloat16 values
  (int8 and int4 codes are exact in bfloat16; nf4's levels are rounded to bfloat16 once, a
  relative 2^-9, as the decomposition's bfloat16 weight is);
  F32 for float32 / float16 x: the codes decoded to float32 (nf4's levels exactly), 16-lane FMAs.
  Taken where torch's own CPU kernels use AVX-512 (``torch.backends.cpu.get_cpu_capability()``):
  ``ATEN_CPU_CAPABILITY=avx2`` keeps ours on AVX2 as well. Where a pass's x rows outgrow L1,
  two weight rows share each x load (``pairs_of_rows``). On a 2-core Zen 5 host, one thread,
  K x N 5632 x 2048 and 2048 x 5632 (``benchmarks/cpu.md``): BF16 1.2-2.5x the AVX2 loop at
  M = 1, 1.5-3.0x at M = 4; F32 1.2-1.9x at M = 1, 1.0-1.6x at M = 4.
- AVX2 + FMA: every other call on a host with them (x converted to float32 first).
- scalar: the same sums on any other x86 CPU.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import torch

from ..schemes.nf4 import DOUBLE_QUANT_BLOCK

# Past this many rows of x the weight is decoded once and a GEMM follows (the caller's route):
# the kernel decodes every chunk once per four x rows, so its cost grows with M while a
# GEMM's stays bounded by the decoded weight's traffic.
GEMV_MAX_M = 16
_DTYPE_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}

# --------------------------------------------------------------------------- kernel source

CPU_THREADS_AND_ISA = r"""
// Weight values below which a call runs on one thread: an OpenMP region costs its threads'
// wake-up (microseconds) and, on a machine shared with other work, a scheduler slice for a
// descheduled thread (16 ms measured on a loaded 2-core host, against < 0.1 ms of work).
constexpr int64_t kParallelMinValues = 1 << 18;

bool has_avx2() {
    static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return ok;
}

bool has_avx512bf16() {
    static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
    return ok;
}
"""  # shared with woq_panel_cpu's kernels

_COMMON = r"""
#include <torch/csrc/inductor/cpp_prefix.h>
#include <immintrin.h>
#include <vector>

namespace {

// x (M, K) in its dtype -> float32 rows of k_out values, zero-padded. With `order` (the
// packed schemes), each `span` values (one step of the packed row: 32 on the AVX2 loop, 64
// on the AVX-512 ones) are permuted: value k of a step goes to order[k], the lane of the
// decoded vectors its code lands in.
template <typename T>
void convert_rows(const T* x, int64_t m, int64_t k, int64_t k_out, const int* order, int span, float* out) {
    for (int64_t r = 0; r < m; ++r) {
        for (int64_t i = 0; i < k_out; ++i) {
            const float v = i < k ? static_cast<float>(x[r * k + i]) : 0.0f;
            out[r * k_out + (order ? i / span * span + order[i % span] : i)] = v;
        }
    }
}

void convert_input(const void* x, int64_t dtype, int64_t m, int64_t k, int64_t k_out, const int* order, float* out,
                   int span = 32) {
    if (dtype == 0) convert_rows(static_cast<const float*>(x), m, k, k_out, order, span, out);
    else if (dtype == 1) convert_rows(static_cast<const at::BFloat16*>(x), m, k, k_out, order, span, out);
    else convert_rows(static_cast<const at::Half*>(x), m, k, k_out, order, span, out);
}

void store_output(const float* y, void* out, int64_t dtype, int64_t count) {
    if (dtype == 0) { std::memcpy(out, y, count * sizeof(float)); return; }
    for (int64_t i = 0; i < count; ++i) {
        if (dtype == 1) static_cast<at::BFloat16*>(out)[i] = at::BFloat16(y[i]);
        else static_cast<at::Half*>(out)[i] = at::Half(y[i]);
    }
}

""" + CPU_THREADS_AND_ISA + r"""
// Independent accumulators per x row: enough FMA chains to hide the FMA latency (4-5
// cycles, two FMA ports) at one row, few enough to stay in the 16 ymm registers at four.
template <int R> constexpr int kAccumulators = R == 1 ? 8 : (R == 2 ? 4 : 2);
// grouped_row's: a group's accumulators are summed at the group's end (A - 1 adds a group),
// and each group starts fresh ones, so out-of-order execution overlaps one group's chains
// with the next's. At one row 4 measured 1.13-1.22x faster than 8 (int4, group 128, bf16,
// K x N 2048 x 5632, 5632 x 2048, 2048 x 2048; AVX2 host), 2 1.06-1.11x. nf4 (block 64) with
// its absmax folded here, at 4: 1.16-1.19x at one row against scaling each decoded vector,
// 0.99-1.00x at two and four rows.
template <int R> constexpr int kGroupAccumulators = R == 1 ? 4 : kAccumulators<R>;

__attribute__((target("avx2,fma"))) inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

template <int R, int A>
__attribute__((target("avx2,fma"))) inline void sum_rows(__m256 acc[R][A], float* y, int64_t y_stride) {
    for (int r = 0; r < R; ++r) {
        __m256 s = acc[r][0];
        for (int a = 1; a < A; ++a) s = _mm256_add_ps(s, acc[r][a]);
        y[r * y_stride] = hsum(s);
    }
}

// acc[r][(base + i) % A] += x[r][at + 8i .. at + 8i + 8] * w[i], i < 4, for R rows.
template <int R, int A>
__attribute__((target("avx2,fma"))) inline void fma_step(const __m256 w[4], const float* x, int64_t stride,
                                                          int64_t at, int base, __m256 acc[R][A]) {
    for (int r = 0; r < R; ++r) {
        for (int i = 0; i < 4; ++i) {
            acc[r][(base + i) % A] = _mm256_fmadd_ps(_mm256_loadu_ps(x + r * stride + at + 8 * i), w[i],
                                                     acc[r][(base + i) % A]);
        }
    }
}

// A packed row of `half` bytes in groups of `group_bytes` (a multiple of 16), 16 bytes (32
// codes) a step: decode(j, w) writes the step's four unscaled weight vectors, in the order the
// permuted x rows (k_pad floats, 32 a step) hold their values. Each group's products go into
// fresh accumulators, and their sum is multiplied by the group's scale once, at the group's
// end: the scale leaves the inner loop (one FMA a group and row, not one multiply a vector).
template <int R, typename Decode>
__attribute__((target("avx2,fma"))) inline void grouped_row(Decode decode, const float* group_scale, const float* x,
                                                             int64_t half, int64_t group_bytes, float sums[R]) {
    constexpr int A = kGroupAccumulators<R>;
    __m256 total[R];
    for (int r = 0; r < R; ++r) total[r] = _mm256_setzero_ps();
    // Two steps an iteration at one row where the group has two (one step's 4 vectors a
    // chain each: as fast as one step an iteration, measured).
    const bool pairs = R == 1 && group_bytes % 32 == 0;
    for (int64_t g0 = 0, g = 0; g0 < half; g0 += group_bytes, ++g) {
        __m256 acc[R][A];
        for (int r = 0; r < R; ++r)
            for (int a = 0; a < A; ++a) acc[r][a] = _mm256_setzero_ps();
        const int64_t end = g0 + group_bytes;
        int64_t j = g0;
        if (pairs) {
            for (; j < end; j += 32) {
                __m256 w[4];
                decode(j, w);
                fma_step<R, A>(w, x, 2 * half, 2 * j, 0, acc);
                decode(j + 16, w);
                fma_step<R, A>(w, x, 2 * half, 2 * (j + 16), 4, acc);
            }
        } else {
            for (; j < end; j += 16) {
                __m256 w[4];
                decode(j, w);
                fma_step<R, A>(w, x, 2 * half, 2 * j, 0, acc);
            }
        }
        const __m256 sv = _mm256_broadcast_ss(group_scale + g);
        for (int r = 0; r < R; ++r) {
            __m256 s = acc[r][0];
            for (int a = 1; a < A; ++a) s = _mm256_add_ps(s, acc[r][a]);
            total[r] = _mm256_fmadd_ps(s, sv, total[r]);
        }
    }
    for (int r = 0; r < R; ++r) sums[r] = hsum(total[r]);
}

// x's value k of a packed row, in the permuted layout of convert_rows.
inline float permuted(const float* x, const int* order, int64_t k) { return x[k / 32 * 32 + order[k % 32]]; }

// Calls body(row_begin, R) over the x rows in passes of up to four rows.
template <typename F>
inline void for_row_passes(int64_t m, F body) {
    int64_t r = 0;
    for (; r + 4 <= m; r += 4) body(r, std::integral_constant<int, 4>());
    if (m - r == 3) body(r, std::integral_constant<int, 3>());
    else if (m - r == 2) body(r, std::integral_constant<int, 2>());
    else if (m - r == 1) body(r, std::integral_constant<int, 1>());
}

// ---- The AVX-512 loops: a 32-byte step of the packed row a time (int8: 32 codes; int4 / nf4:
// 64 nibbles), decoded in registers, against x rows in a 64-byte-aligned buffer. A step type
// says how: decode(p, w) the step's kVectors weight vectors; fma(acc, w, load(x)) one vector's
// products (kLanes x values) into acc.
//   *Bf16 (bfloat16 x): codes decoded to bfloat16 (exact for int8 and int4 codes, integers of
//     at most 8 bits; nf4's levels rounded to bfloat16 once), vdpbf16ps: 32 products an
//     instruction, summed in float32, against x's own bfloat16 values.
//   *F32 (float32 and float16 x, converted to float32 once): codes decoded to float32 (nf4's
//     levels exactly), 16 FMAs an instruction.
// Both need AVX512-BF16 on the host (one target for the shared templates); AVX-512 hosts
// without it (Skylake-X to Ice Lake) run the AVX2 loop.
#define AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

inline float to_float(uint16_t bfloat16_bits) {
    const uint32_t u = static_cast<uint32_t>(bfloat16_bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline float to_float(float v) { return v; }

// x rows, 64-byte aligned: the loops' 64-byte loads never straddle two cache lines.
template <typename T>
struct AlignedRows {
    T* p;
    explicit AlignedRows(int64_t count)
        : p(static_cast<T*>(std::aligned_alloc(64, (count * sizeof(T) + 63) / 64 * 64))) {}
    ~AlignedRows() { std::free(p); }
    T* data() const { return p; }
};

// x (M, K) bfloat16 -> rows of k_out bfloat16 (bits), zero-padded; with `order`, each 64
// values (one step of a packed row) permuted: value k of a step goes to order[k].
void bf16_rows(const uint16_t* x, int64_t m, int64_t k, int64_t k_out, const int* order, uint16_t* out) {
    for (int64_t r = 0; r < m; ++r) {
        for (int64_t i = 0; i < k_out; ++i) {
            out[r * k_out + (order ? i / 64 * 64 + order[i % 64] : i)] = i < k ? x[r * k + i] : 0;
        }
    }
}

// 0: no AVX-512 loop; 1: the F32 one; 2: the BF16 one (bfloat16 x).
inline int avx512_loop(int64_t isa, int64_t dtype) {
    if (isa < 2 || !has_avx512bf16()) return 0;
    return dtype == 1 ? 2 : 1;
}

// Nibble steps: 32 bytes, 64 codes, looked up in a 16-entry table (twice over: vpermw's 32).
struct NibblesBf16 {
    using X = uint16_t;
    using W = __m512i;
    static constexpr int kVectors = 2, kLanes = 32;
    // vector h holds the step's value k = 2t + h in word t
    static void order(int out[64]) { for (int k = 0; k < 64; ++k) out[k] = 32 * (k % 2) + k / 2; }
    __m512i table;
    AVX512_TARGET explicit NibblesBf16(const float values[16]) {
        alignas(64) uint16_t t[32];
        for (int e = 0; e < 32; ++e) t[e] = at::BFloat16(values[e % 16]).x;  // round to nearest even
        table = _mm512_load_si512(t);
    }
    AVX512_TARGET void decode(const uint8_t* p, __m512i w[2]) const {
        const __m512i b = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
        w[0] = _mm512_permutexvar_epi16(_mm512_and_si512(b, _mm512_set1_epi16(15)), table);
        w[1] = _mm512_permutexvar_epi16(_mm512_srli_epi16(b, 4), table);
    }
    AVX512_TARGET static __m512i load(const uint16_t* x) { return _mm512_load_si512(x); }
    AVX512_TARGET static __m512 fma(__m512 acc, __m512i w, __m512i x) {
        return _mm512_dpbf16_ps(acc, (__m512bh)w, (__m512bh)x);
    }
};

struct NibblesF32 {
    using X = float;
    using W = __m512;
    static constexpr int kVectors = 4, kLanes = 16;
    // byte t of the step: its low nibble (k = 2t) in vector 2 (t / 16), its high one (2t + 1)
    // in vector 2 (t / 16) + 1, lane t % 16
    static void order(int out[64]) {
        for (int k = 0; k < 64; ++k) out[k] = 16 * (2 * (k / 2 / 16) + k % 2) + k / 2 % 16;
    }
    __m512 table;
    AVX512_TARGET explicit NibblesF32(const float values[16]) { table = _mm512_loadu_ps(values); }
    AVX512_TARGET void decode(const uint8_t* p, __m512 w[4]) const {
        const __m512i mask = _mm512_set1_epi32(15);
        for (int h = 0; h < 2; ++h) {
            const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * h)));
            w[2 * h] = _mm512_permutexvar_ps(_mm512_and_si512(b, mask), table);
            w[2 * h + 1] = _mm512_permutexvar_ps(_mm512_srli_epi32(b, 4), table);
        }
    }
    AVX512_TARGET static __m512 load(const float* x) { return _mm512_load_ps(x); }
    AVX512_TARGET static __m512 fma(__m512 acc, __m512 w, __m512 x) { return _mm512_fmadd_ps(w, x, acc); }
};

// One group of C packed rows (`group_bytes` from byte j0, a multiple of 32) against R x rows
// (x_stride values apart, the step's order within each step): acc[c][r] = the group's products.
// Each x vector is loaded once for the C rows.
template <int R, int C, typename Step>
AVX512_TARGET inline void group_dot(const Step& step, const uint8_t* const rows[C], const typename Step::X* x,
                                    int64_t x_stride, int64_t j0, int64_t group_bytes, __m512 acc[C][R]) {
    constexpr int S = C == 1 ? 2 : 1;  // accumulators a (row, x row): chains to overlap
    __m512 a[C][R][S];
    for (int c = 0; c < C; ++c)
        for (int r = 0; r < R; ++r)
            for (int t = 0; t < S; ++t) a[c][r][t] = _mm512_setzero_ps();
    for (int64_t j = j0; j < j0 + group_bytes; j += 32) {
        typename Step::W w[C][Step::kVectors];
        for (int c = 0; c < C; ++c) step.decode(rows[c] + j, w[c]);
        for (int v = 0; v < Step::kVectors; ++v) {
            for (int r = 0; r < R; ++r) {
                const auto xv = Step::load(x + r * x_stride + 2 * j + v * Step::kLanes);
                for (int c = 0; c < C; ++c) a[c][r][v % S] = Step::fma(a[c][r][v % S], w[c][v], xv);
            }
        }
    }
    for (int c = 0; c < C; ++c)
        for (int r = 0; r < R; ++r) acc[c][r] = S == 1 ? a[c][r][0] : _mm512_add_ps(a[c][r][0], a[c][r][S - 1]);
}

// C packed rows (k_pad values) against R x rows: each group's products multiplied by the
// group's scale once, at the group's end, into one of U running totals in turn (a single
// total would chain one FMA latency a group: at one row and block 64, half the call's time).
template <int R, int C, typename Step>
AVX512_TARGET inline void grouped_row_avx512(const Step& step, const uint8_t* const rows[C],
                                             const float* const group_scale[C], const typename Step::X* x,
                                             int64_t k_pad, int64_t group_bytes, float sums[C][R]) {
    constexpr int U = R == 1 ? 4 : (C == 1 ? 2 : 1);
    const int64_t groups = k_pad / 2 / group_bytes;
    __m512 total[U][C][R];
    for (int u = 0; u < U; ++u)
        for (int c = 0; c < C; ++c)
            for (int r = 0; r < R; ++r) total[u][c][r] = _mm512_setzero_ps();
    auto group = [&](int64_t g, __m512 into[C][R]) AVX512_TARGET {
        __m512 acc[C][R];
        group_dot<R, C>(step, rows, x, k_pad, g * group_bytes, group_bytes, acc);
        for (int c = 0; c < C; ++c) {
            const __m512 sv = _mm512_set1_ps(group_scale[c][g]);
            for (int r = 0; r < R; ++r) into[c][r] = _mm512_fmadd_ps(acc[c][r], sv, into[c][r]);
        }
    };
    int64_t g = 0;
    for (; g + U <= groups; g += U)
        for (int u = 0; u < U; ++u) group(g + u, total[u]);  // unrolled: the totals stay in registers
    for (; g < groups; ++g) group(g, total[0]);
    for (int c = 0; c < C; ++c) {
        for (int r = 0; r < R; ++r) {
            __m512 t = total[0][c][r];
            for (int u = 1; u < U; ++u) t = _mm512_add_ps(t, total[u][c][r]);
            sums[c][r] = _mm512_reduce_add_ps(t);
        }
    }
}

// Whether a pass over the weight rows takes them in pairs (C = 2: each x load serves both):
// where a pass's x rows (up to four) fill at least 32 KB, two thirds of a 48 KB L1. Below,
// one row at a time keeps more independent accumulator chains: at M = 4 (Zen 5, one thread)
// pairs measured 0.4-1.0x with bfloat16 x at K = 2048 (16 KB), 1.1-1.3x with float32 x there
// (32 KB), 1.1-1.5x at K = 5632 (45 / 90 KB).
template <typename X>
inline bool pairs_of_rows(int64_t m, int64_t k_pad) {
    return std::min<int64_t>(m, 4) * k_pad * static_cast<int64_t>(sizeof(X)) >= 32 * 1024;
}

// Calls body(col, C) for the weight rows of pair p (p < col_pairs(n): the unit the caller's
// OpenMP loop splits), both at once where `pairs`, else one at a time.
inline int64_t col_pairs(int64_t n) { return (n + 1) / 2; }
template <typename F>
inline void for_pair_cols(int64_t p, int64_t n, bool pairs, F body) {
    const int64_t col = 2 * p;
    if (pairs && col + 1 < n) { body(col, std::integral_constant<int, 2>()); return; }
    body(col, std::integral_constant<int, 1>());
    if (col + 1 < n) body(col + 1, std::integral_constant<int, 1>());
}

// x (M, K) -> the step's x rows (k_pad values, each 64 permuted by Step::order: bfloat16 bits
// or float32), then run(step, rows).
template <typename Step, typename Run>
void run_on_step_rows(const Step& step, const void* x, int64_t dtype, int64_t m, int64_t k, int64_t k_pad, Run run) {
    int order[64];
    Step::order(order);
    AlignedRows<typename Step::X> rows(m * k_pad);
    if constexpr (std::is_same_v<typename Step::X, uint16_t>) {
        bf16_rows(static_cast<const uint16_t*>(x), m, k, k_pad, order, rows.data());
    } else {
        convert_input(x, dtype, m, k, k_pad, order, rows.data(), 64);
    }
    run(step, static_cast<const typename Step::X*>(rows.data()));
}

// The AVX-512 loop avx512_loop() chose: 2 the bfloat16 step, 1 the float32 one.
template <typename Bf16Step, typename F32Step, typename Run>
void run_avx512_loop(int loop, const Bf16Step& bf16, const F32Step& f32, const void* x, int64_t dtype, int64_t m,
                     int64_t k, int64_t k_pad, Run run) {
    if (loop == 2) run_on_step_rows(bf16, x, dtype, m, k, k_pad, run);
    else run_on_step_rows(f32, x, dtype, m, k, k_pad, run);
}

}  // namespace
"""

_INT8 = r"""
// y (M, N) = x (M, K) @ (q (N, K) int8 * scale (N,)).T
template <int R>
__attribute__((target("avx2,fma"))) void int8_row_avx2(const int8_t* q, float scale, const float* x, int64_t k,
                                                          float* y, int64_t n_total) {
    constexpr int A = kAccumulators<R>;
    constexpr int kSteps = A / 2;  // 16-byte steps an iteration: 2 vectors each
    __m256 acc[R][A];
    for (int r = 0; r < R; ++r)
        for (int a = 0; a < A; ++a) acc[r][a] = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 16 * kSteps <= k; j += 16 * kSteps) {
        for (int s = 0; s < kSteps; ++s) {
            const int64_t at = j + 16 * s;
            __m256 w0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + at))));
            __m256 w1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + at + 8))));
            for (int r = 0; r < R; ++r) {
                acc[r][2 * s] = _mm256_fmadd_ps(_mm256_loadu_ps(x + r * k + at), w0, acc[r][2 * s]);
                acc[r][2 * s + 1] = _mm256_fmadd_ps(_mm256_loadu_ps(x + r * k + at + 8), w1, acc[r][2 * s + 1]);
            }
        }
    }
    for (; j + 8 <= k; j += 8) {
        __m256 w0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + j))));
        for (int r = 0; r < R; ++r) acc[r][0] = _mm256_fmadd_ps(_mm256_loadu_ps(x + r * k + j), w0, acc[r][0]);
    }
    float sums[R];
    sum_rows<R, A>(acc, sums, 1);
    for (int r = 0; r < R; ++r) {
        for (int64_t t = j; t < k; ++t) sums[r] += x[r * k + t] * static_cast<float>(q[t]);
        y[r * n_total] = scale * sums[r];
    }
}

// int8 steps: 32 codes in order (x unpermuted), from a 32-byte load.
inline void identity_order(int out[64]) { for (int k = 0; k < 64; ++k) out[k] = k; }

struct Int8Bf16 {
    using X = uint16_t;
    using W = __m512i;
    static constexpr int kVectors = 1, kLanes = 32;
    static void order(int out[64]) { identity_order(out); }
    AVX512_TARGET static void decode(__m256i b, __m512i w[1]) {  // exact: |q| <= 128
        const __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(b)));
        const __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(b, 1)));
        w[0] = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
    }
    AVX512_TARGET static __m512i load(const uint16_t* x) { return NibblesBf16::load(x); }
    AVX512_TARGET static __m512 fma(__m512 acc, __m512i w, __m512i x) { return NibblesBf16::fma(acc, w, x); }
};

struct Int8F32 {
    using X = float;
    using W = __m512;
    static constexpr int kVectors = 2, kLanes = 16;
    static void order(int out[64]) { identity_order(out); }
    AVX512_TARGET static void decode(__m256i b, __m512 w[2]) {
        w[0] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(b)));
        w[1] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(b, 1)));
    }
    AVX512_TARGET static __m512 load(const float* x) { return NibblesF32::load(x); }
    AVX512_TARGET static __m512 fma(__m512 acc, __m512 w, __m512 x) { return NibblesF32::fma(acc, w, x); }
};

// y[c][r] = scale[c] * (row c of q . x row r) for C rows of q (k codes each), x rows k_pad (k
// rounded up to 32, zero-padded) values apart; each x vector loaded once for the C rows.
template <int R, int C, typename Step>
AVX512_TARGET void int8_rows_avx512(const int8_t* const q[C], const float scale[C], const typename Step::X* x,
                                    int64_t k, int64_t k_pad, float* y, int64_t n_total) {
    constexpr int A = R == 1 ? 4 : (C == 1 ? 2 : 1);  // steps an iteration, one accumulator each
    __m512 acc[C][R][A];
    for (int c = 0; c < C; ++c)
        for (int r = 0; r < R; ++r)
            for (int a = 0; a < A; ++a) acc[c][r][a] = _mm512_setzero_ps();
    auto step = [&](const __m256i bytes[C], int64_t at, int a) AVX512_TARGET {
        typename Step::W w[C][Step::kVectors];
        for (int c = 0; c < C; ++c) Step::decode(bytes[c], w[c]);
        for (int v = 0; v < Step::kVectors; ++v) {
            for (int r = 0; r < R; ++r) {
                const auto xv = Step::load(x + r * k_pad + at + v * Step::kLanes);
                for (int c = 0; c < C; ++c) acc[c][r][a] = Step::fma(acc[c][r][a], w[c][v], xv);
            }
        }
    };
    int64_t j = 0;
    for (; j + 32 * A <= k; j += 32 * A) {
        for (int a = 0; a < A; ++a) {
            __m256i bytes[C];
            for (int c = 0; c < C; ++c)
                bytes[c] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q[c] + j + 32 * a));
            step(bytes, j + 32 * a, a);
        }
    }
    for (; j < k; j += 32) {  // the rest, the last step masked
        const __mmask32 mask = k - j >= 32 ? 0xFFFFFFFFu : (1u << (k - j)) - 1;
        __m256i bytes[C];
        for (int c = 0; c < C; ++c) bytes[c] = _mm256_maskz_loadu_epi8(mask, q[c] + j);
        step(bytes, j, 0);
    }
    for (int c = 0; c < C; ++c) {
        for (int r = 0; r < R; ++r) {
            __m512 s = acc[c][r][0];
            for (int a = 1; a < A; ++a) s = _mm512_add_ps(s, acc[c][r][a]);
            y[r * n_total + c] = scale[c] * _mm512_reduce_add_ps(s);
        }
    }
}

template <typename Step>
void int8_avx512(const typename Step::X* xs, const int8_t* q, const float* scale, float* y, int64_t m, int64_t n,
                 int64_t k, int64_t k_pad) {
    const bool pairs = pairs_of_rows<typename Step::X>(m, k_pad);
    #pragma omp parallel for schedule(static) if (n * k >= kParallelMinValues)
    for (int64_t p = 0; p < col_pairs(n); ++p) {
        for_pair_cols(p, n, pairs, [&](int64_t col, auto cols) {
            constexpr int C = decltype(cols)::value;
            const int8_t* rows[C];
            for (int c = 0; c < C; ++c) rows[c] = q + (col + c) * k;
            for_row_passes(m, [&](int64_t r0, auto xrows) {
                constexpr int R = decltype(xrows)::value;
                int8_rows_avx512<R, C, Step>(rows, scale + col, xs + r0 * k_pad, k, k_pad, y + r0 * n + col, n);
            });
        });
    }
}

// isa: the widest loop the caller allows (0 scalar, 1 AVX2, 2 AVX-512), where the host has it.
extern "C" void kernel(const void* x, const int8_t* q, const float* scale, void* out,
                       int64_t m, int64_t n, int64_t k, int64_t dtype, int64_t isa) {
    std::vector<float> y(m * n);
    if (const int loop = avx512_loop(isa, dtype)) {
        const int64_t k_pad = (k + 31) / 32 * 32;
        run_avx512_loop(loop, Int8Bf16{}, Int8F32{}, x, dtype, m, k, k_pad, [&](const auto& step, const auto* xs) {
            int8_avx512<std::decay_t<decltype(step)>>(xs, q, scale, y.data(), m, n, k, k_pad);
        });
        store_output(y.data(), out, dtype, m * n);
        return;
    }
    std::vector<float> xf(m * k);
    convert_input(x, dtype, m, k, k, nullptr, xf.data());
    const bool avx2 = isa >= 1 && has_avx2();
    #pragma omp parallel for schedule(static) if (n * k >= kParallelMinValues)
    for (int64_t col = 0; col < n; ++col) {
        for_row_passes(m, [&](int64_t r0, auto rows) {
            constexpr int R = decltype(rows)::value;
            if (avx2) { int8_row_avx2<R>(q + col * k, scale[col], xf.data() + r0 * k, k, y.data() + r0 * n + col, n); return; }
            for (int r = 0; r < R; ++r) {
                float sum = 0.0f;
                for (int64_t t = 0; t < k; ++t) sum += xf[(r0 + r) * k + t] * static_cast<float>(q[col * k + t]);
                y[(r0 + r) * n + col] = scale[col] * sum;
            }
        });
    }
    store_output(y.data(), out, dtype, m * n);
}
"""

_INT4 = r"""
// y (M, N) = x (M, K) @ W.T, W[n, k] = (u[n, k] - zero[n, g]) * scale[n, g], g = k / G (the
// decomposition's float32 weight, exactly); q (N, K_pad / 2) two nibbles a byte, byte j
// holding k = 2j (low) and 2j + 1 (high).

// A step's codes, widened byte by byte: vector 0 the low nibbles of bytes 0-7, 1 of bytes
// 8-15, 2 and 3 the high nibbles of the same bytes; so value k = 2t + h sits in vector
// 2h + t / 8, lane t %% 8.
void int4_order(int order[32]) {
    for (int k = 0; k < 32; ++k) order[k] = 8 * (2 * (k %% 2) + k / 2 / 8) + k / 2 %% 8;
}

// out[r] = sum_g s[g] z[g] xsum[r * groups + g], 8 groups a vector: as a scalar chain of
// dependent adds (one a group) it made M = 4 4-12%% slower than scaling every vector.
template <int R>
__attribute__((target("avx2,fma"))) inline void int4_zero_terms_avx2(const float* s, const float* z, const float* xsum,
                                                                      int64_t groups, float out[R]) {
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    int64_t g = 0;
    for (; g + 8 <= groups; g += 8) {
        const __m256 sz = _mm256_mul_ps(_mm256_loadu_ps(s + g), _mm256_loadu_ps(z + g));
        for (int r = 0; r < R; ++r) acc[r] = _mm256_fmadd_ps(sz, _mm256_loadu_ps(xsum + r * groups + g), acc[r]);
    }
    for (int r = 0; r < R; ++r) {
        out[r] = hsum(acc[r]);
        for (int64_t t = g; t < groups; ++t) out[r] += s[t] * z[t] * xsum[r * groups + t];
    }
}

template <int R>
inline void int4_zero_terms(const float* s, const float* z, const float* xsum, int64_t groups, float out[R]) {
    for (int r = 0; r < R; ++r) {
        out[r] = 0.0f;
        for (int64_t g = 0; g < groups; ++g) out[r] += s[g] * z[g] * xsum[r * groups + g];
    }
}

// xsum[r, g]: x's sums over each group (padded rows of k_pad values; any order within a group).
template <typename T, typename F>
void group_sums(const T* xp, F to_float, int64_t m, int64_t k_pad, int64_t group_size, float* xsum) {
    const int64_t groups = k_pad / group_size;
    for (int64_t r = 0; r < m; ++r) {
        for (int64_t g = 0; g < groups; ++g) {
            double t = 0.0;  // once a call: float64 keeps the zero term's rounding below the products'
            for (int64_t i = 0; i < group_size; ++i) t += to_float(xp[r * k_pad + g * group_size + i]);
            xsum[r * groups + g] = static_cast<float>(t);
        }
    }
}

// Per group, (u - zero) * scale summed against x is scale * (x . u) - scale * zero * sum(x):
// the loop multiplies x by the codes alone, and the zero term comes from xsum (x's group sums,
// once a call) in a short loop over the groups.
// isa: the widest loop the caller allows (0 scalar, 1 AVX2, 2 AVX-512), where the host has it.
extern "C" void kernel(const void* x, const uint8_t* q, const float* scale, const float* zero, void* out,
                       int64_t m, int64_t n, int64_t k, int64_t k_pad, int64_t group_size, int64_t dtype, int64_t isa) {
    const int64_t half = k_pad / 2, groups = k_pad / group_size, group_bytes = group_size / 2;
    std::vector<float> xsum(m * groups), y(m * n);
    const int loop = group_size %% 64 == 0 ? avx512_loop(isa, dtype) : 0;
    if (loop) {
        float codes[16];
        for (int e = 0; e < 16; ++e) codes[e] = static_cast<float>(e);
        auto run = [&](const auto& step, const auto* xs) {
            using Step = std::decay_t<decltype(step)>;
            group_sums(xs, [](auto v) { return to_float(v); }, m, k_pad, group_size, xsum.data());
            const bool pairs = pairs_of_rows<typename Step::X>(m, k_pad);
            #pragma omp parallel for schedule(static) if (n * k_pad >= kParallelMinValues)
            for (int64_t p = 0; p < col_pairs(n); ++p) {
                for_pair_cols(p, n, pairs, [&](int64_t col, auto cols) {
                    constexpr int C = decltype(cols)::value;
                    const uint8_t* packed[C];
                    const float* s[C];
                    for (int c = 0; c < C; ++c) packed[c] = q + (col + c) * half, s[c] = scale + (col + c) * groups;
                    for_row_passes(m, [&](int64_t r0, auto rows) {
                        constexpr int R = decltype(rows)::value;
                        float sums[C][R], zero_terms[R];
                        grouped_row_avx512<R, C>(step, packed, s, xs + r0 * k_pad, k_pad, group_bytes, sums);
                        for (int c = 0; c < C; ++c) {
                            int4_zero_terms_avx2<R>(s[c], zero + (col + c) * groups, xsum.data() + r0 * groups, groups,
                                                    zero_terms);
                            for (int r = 0; r < R; ++r) y[(r0 + r) * n + col + c] = sums[c][r] - zero_terms[r];
                        }
                    });
                });
            }
        };
        run_avx512_loop(loop, NibblesBf16(codes), NibblesF32(codes), x, dtype, m, k, k_pad, run);
        store_output(y.data(), out, dtype, m * n);
        return;
    }
    int order[32];
    int4_order(order);
    std::vector<float> xp(m * k_pad);
    convert_input(x, dtype, m, k, k_pad, order, xp.data());
    group_sums(xp.data(), [](float v) { return v; }, m, k_pad, group_size, xsum.data());
    const bool avx2 = isa >= 1 && has_avx2();
    #pragma omp parallel for schedule(static) if (n * k_pad >= kParallelMinValues)
    for (int64_t col = 0; col < n; ++col) {
        const uint8_t* row = q + col * half;
        const float* s = scale + col * groups;
        const float* z = zero + col * groups;
        for_row_passes(m, [&](int64_t r0, auto rows) {
            constexpr int R = decltype(rows)::value;
            float sums[R];
            if (avx2) {
                auto decode = [&](int64_t j, __m256 w[4]) __attribute__((target("avx2,fma"))) {
                    const __m256i mask = _mm256_set1_epi32(15);
                    __m256i b0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + j)));
                    __m256i b1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + j + 8)));
                    w[0] = _mm256_cvtepi32_ps(_mm256_and_si256(b0, mask));
                    w[1] = _mm256_cvtepi32_ps(_mm256_and_si256(b1, mask));
                    w[2] = _mm256_cvtepi32_ps(_mm256_srli_epi32(b0, 4));
                    w[3] = _mm256_cvtepi32_ps(_mm256_srli_epi32(b1, 4));
                };
                grouped_row<R>(decode, s, xp.data() + r0 * k_pad, half, group_bytes, sums);
            } else {
                for (int r = 0; r < R; ++r) {
                    sums[r] = 0.0f;
                    for (int64_t g = 0; g < groups; ++g) {
                        float dot = 0.0f;
                        for (int64_t kk = g * group_size; kk < (g + 1) * group_size; ++kk) {
                            const int code = kk %% 2 ? row[kk / 2] >> 4 : row[kk / 2] & 15;
                            dot += permuted(xp.data() + (r0 + r) * k_pad, order, kk) * static_cast<float>(code);
                        }
                        sums[r] += dot * s[g];
                    }
                }
            }
            float zero_terms[R];
            if (avx2) int4_zero_terms_avx2<R>(s, z, xsum.data() + r0 * groups, groups, zero_terms);
            else int4_zero_terms<R>(s, z, xsum.data() + r0 * groups, groups, zero_terms);
            for (int r = 0; r < R; ++r) y[(r0 + r) * n + col] = sums[r] - zero_terms[r];
        });
    }
    store_output(y.data(), out, dtype, m * n);
}
""" % {}

_NF4 = r"""
// y (M, N) = x (M, K) @ W.T, W[n, k] = levels[u[n, k]] * absmax[n, b], b = k / B (the
// decomposition's float32 weight, exactly), absmax decoded first when double-quantized
// (codes * absmax_scale[(n * nb + b) / 256] + absmax_offset, a multiply then an add).

// A step's levels by byte shuffles (vpshufb looks up 16 entries, one per code): the low
// nibbles of the 16 bytes in the lower 128-bit lane, the high ones in the upper; each of
// the four byte planes of the float32 levels looked up, then interleaved back into floats.
// Vector f, lane 4h + i holds value k = 2(4f + i) + h of the step.
void nf4_order(int order[32]) {
    for (int k = 0; k < 32; ++k) order[k] = 8 * (k / 2 / 4) + 4 * (k %% 2) + k / 2 %% 4;
}

struct LevelPlanes { __m256i plane[4]; };

__attribute__((target("avx2,fma"))) LevelPlanes level_planes(const float* levels) {
    alignas(32) uint8_t bytes[4][32];
    for (int e = 0; e < 16; ++e) {
        uint32_t bits;
        std::memcpy(&bits, levels + e, 4);
        for (int p = 0; p < 4; ++p) bytes[p][e] = bytes[p][e + 16] = static_cast<uint8_t>(bits >> (8 * p));
    }
    LevelPlanes t;
    for (int p = 0; p < 4; ++p) t.plane[p] = _mm256_load_si256(reinterpret_cast<const __m256i*>(bytes[p]));
    return t;
}

__attribute__((target("avx2,fma"))) inline void nf4_levels(const uint8_t* p, const LevelPlanes& t, __m256 w[4]) {
    // The 16 bytes in both lanes (a load, no shuffle), the upper lane's shifted down a nibble
    // by a blend: one shuffle-port op fewer than building the lanes apart, 1.05-1.10x at one
    // row (K x N 2048 x 5632 and 5632 x 2048, bf16 x; AVX2 host), the same 0.98-1.04x at 2-4.
    const __m256i b = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    const __m256i idx = _mm256_and_si256(_mm256_blend_epi32(b, _mm256_srli_epi16(b, 4), 0xF0), _mm256_set1_epi8(0x0F));
    __m256i b0 = _mm256_shuffle_epi8(t.plane[0], idx), b1 = _mm256_shuffle_epi8(t.plane[1], idx);
    __m256i b2 = _mm256_shuffle_epi8(t.plane[2], idx), b3 = _mm256_shuffle_epi8(t.plane[3], idx);
    __m256i lo01 = _mm256_unpacklo_epi8(b0, b1), hi01 = _mm256_unpackhi_epi8(b0, b1);
    __m256i lo23 = _mm256_unpacklo_epi8(b2, b3), hi23 = _mm256_unpackhi_epi8(b2, b3);
    w[0] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(lo01, lo23));
    w[1] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(lo01, lo23));
    w[2] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(hi01, hi23));
    w[3] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(hi01, hi23));
}

inline void decode_absmax_row(const void* absmax, const float* absmax_scale, const float* absmax_offset,
                              int64_t double_quant, int64_t col, int64_t blocks, float* out) {
    for (int64_t b = 0; b < blocks; ++b) {
        const int64_t flat = col * blocks + b;
        if (!double_quant) { out[b] = static_cast<const float*>(absmax)[flat]; continue; }
        const float scaled = static_cast<float>(static_cast<const uint8_t*>(absmax)[flat]) * absmax_scale[flat / %(dq_block)d];
        out[b] = scaled + absmax_offset[0];
    }
}

// isa: the widest loop the caller allows (0 scalar, 1 AVX2, 2 AVX-512), where the host has it.
extern "C" void kernel(const void* x, const uint8_t* q, const void* absmax, const float* levels,
                       const float* absmax_scale, const float* absmax_offset, void* out,
                       int64_t m, int64_t n, int64_t k, int64_t k_pad, int64_t block_size,
                       int64_t double_quant, int64_t dtype, int64_t isa) {
    const int64_t half = k_pad / 2, blocks = k_pad / block_size, block_bytes = block_size / 2;
    std::vector<float> y(m * n);
    const int loop = block_size %% 64 == 0 ? avx512_loop(isa, dtype) : 0;
    if (loop) {
        auto run = [&](const auto& step, const auto* xs) {
            using Step = std::decay_t<decltype(step)>;
            const bool pairs = pairs_of_rows<typename Step::X>(m, k_pad);
            #pragma omp parallel if (n * k_pad >= kParallelMinValues)
            {
                std::vector<float> row_absmax(2 * blocks);
                #pragma omp for schedule(static)
                for (int64_t p = 0; p < col_pairs(n); ++p) {
                    for_pair_cols(p, n, pairs, [&](int64_t col, auto cols) {
                        constexpr int C = decltype(cols)::value;
                        const uint8_t* packed[C];
                        const float* am[C];
                        for (int c = 0; c < C; ++c) {
                            decode_absmax_row(absmax, absmax_scale, absmax_offset, double_quant, col + c, blocks,
                                              row_absmax.data() + c * blocks);
                            packed[c] = q + (col + c) * half, am[c] = row_absmax.data() + c * blocks;
                        }
                        for_row_passes(m, [&](int64_t r0, auto rows) {
                            constexpr int R = decltype(rows)::value;
                            float sums[C][R];
                            grouped_row_avx512<R, C>(step, packed, am, xs + r0 * k_pad, k_pad, block_bytes, sums);
                            for (int c = 0; c < C; ++c)
                                for (int r = 0; r < R; ++r) y[(r0 + r) * n + col + c] = sums[c][r];
                        });
                    });
                }
            }
        };
        run_avx512_loop(loop, NibblesBf16(levels), NibblesF32(levels), x, dtype, m, k, k_pad, run);
        store_output(y.data(), out, dtype, m * n);
        return;
    }
    int order[32];
    nf4_order(order);
    std::vector<float> xp(m * k_pad);
    convert_input(x, dtype, m, k, k_pad, order, xp.data());
    const bool avx2 = isa >= 1 && has_avx2();
    const LevelPlanes planes = avx2 ? level_planes(levels) : LevelPlanes{};
    #pragma omp parallel if (n * k_pad >= kParallelMinValues)
    {
        std::vector<float> row_absmax(blocks);
        #pragma omp for schedule(static)
        for (int64_t col = 0; col < n; ++col) {
            const uint8_t* row = q + col * half;
            const float* am = row_absmax.data();
            decode_absmax_row(absmax, absmax_scale, absmax_offset, double_quant, col, blocks, row_absmax.data());
            for_row_passes(m, [&](int64_t r0, auto rows) {
                constexpr int R = decltype(rows)::value;
                if (avx2) {
                    auto decode = [&](int64_t j, __m256 w[4]) __attribute__((target("avx2,fma"))) {
                        nf4_levels(row + j, planes, w);
                    };
                    float sums[R];
                    grouped_row<R>(decode, am, xp.data() + r0 * k_pad, half, block_bytes, sums);
                    for (int r = 0; r < R; ++r) y[(r0 + r) * n + col] = sums[r];
                    return;
                }
                for (int r = 0; r < R; ++r) {
                    float sum = 0.0f;
                    for (int64_t kk = 0; kk < k_pad; ++kk) {
                        const int code = kk %% 2 ? row[kk / 2] >> 4 : row[kk / 2] & 15;
                        sum += permuted(xp.data() + (r0 + r) * k_pad, order, kk) * (levels[code] * am[kk / block_size]);
                    }
                    y[(r0 + r) * n + col] = sum;
                }
            });
        }
    }
    store_output(y.data(), out, dtype, m * n);
}
""" % {"dq_block": DOUBLE_QUANT_BLOCK}

_ARGTYPES = {
    "int8": ["const void*", "const int8_t*", "const float*", "void*", *["int64_t"] * 5],
    "int4": ["const void*", "const uint8_t*", "const float*", "const float*", "void*", *["int64_t"] * 7],
    "nf4": ["const void*", "const uint8_t*", "const void*", "const float*", "const float*", "const float*", "void*",
            *["int64_t"] * 8],
}
_SOURCES = {"int8": _COMMON + _INT8, "int4": _COMMON + _INT4, "nf4": _COMMON + _NF4}


@functools.cache
def compiled_kernel(scheme: str) -> Callable[..., None]:
    """The scheme's kernel, built on first use (Inductor's C++ cache keeps it across runs)."""
    from torch._inductor.codecache import CppPythonBindingsCodeCache

    return CppPythonBindingsCodeCache.load_pybinding(_ARGTYPES[scheme], _SOURCES[scheme])


# --------------------------------------------------------------------------- launchers


def _check_x(op: str, x: torch.Tensor, k_max: int) -> None:
    """x (M, K <= k_max) on the CPU in an activation dtype: the kernels read K_pad >= K values
    a weight row and trust the caller (the fused op checked the layout) for the rest."""
    if x.dim() != 2 or not 0 < x.shape[1] <= k_max or x.dtype not in _DTYPE_CODES or x.device.type != "cpu":
        raise ValueError(f"{op}: x must be a CPU (M, K <= {k_max}) float32 / bfloat16 / float16 tensor; "
                         f"got {tuple(x.shape)} {x.dtype} on {x.device}")


def _contiguous(*tensors: Optional[torch.Tensor]) -> list:
    return [None if t is None else t.contiguous() for t in tensors]


@functools.cache
def _torch_uses_avx512() -> bool:
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def _isa(vectorized: bool, avx512: Optional[bool]) -> int:
    """The widest loop a call may take (the kernel still checks the host): 0 scalar, 1 AVX2 +
    FMA, 2 AVX-512. AVX-512 by default where torch's own CPU kernels use it, so
    ``ATEN_CPU_CAPABILITY=avx2`` keeps ours on AVX2 as well."""
    if not vectorized:
        return 0
    return 2 if (_torch_uses_avx512() if avx512 is None else avx512) else 1


def gemv_int8(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, *, vectorized: bool = True,
              avx512: Optional[bool] = None) -> torch.Tensor:
    """x (M, K), qweight (N, K) int8, scale (N,) float32 -> y (M, N) in x's dtype.

    ``vectorized=False`` takes the scalar loop (what a CPU without AVX2 + FMA runs);
    ``avx512=False`` keeps the call off the AVX-512 loops (``_isa``)."""
    n, k = qweight.shape
    _check_x("gemv_int8", x, k)
    if x.shape[1] != k:
        raise ValueError(f"gemv_int8: x must have K = {k} columns (qweight's); got {x.shape[1]}")
    x, qweight, scale = _contiguous(x, qweight, scale)
    out = x.new_empty((x.shape[0], n))
    compiled_kernel("int8")(x, qweight, scale, out, x.shape[0], n, k, _DTYPE_CODES[x.dtype], _isa(vectorized, avx512))
    return out


def gemv_int4(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, *,
              group_size: int, vectorized: bool = True, avx512: Optional[bool] = None) -> torch.Tensor:
    """x (M, K), the int4 layout (``impl/schemes/int4.py``) -> y (M, N) in x's dtype."""
    n, k_pad = qweight.shape[0], 2 * qweight.shape[1]
    _check_x("gemv_int4", x, k_pad)
    x, qweight, scale, zero = _contiguous(x, qweight, scale, zero)
    out = x.new_empty((x.shape[0], n))
    compiled_kernel("int4")(x, qweight, scale, zero, out, x.shape[0], n, x.shape[1], k_pad, group_size,
                            _DTYPE_CODES[x.dtype], _isa(vectorized, avx512))
    return out


def gemv_nf4(x: torch.Tensor, qweight: torch.Tensor, absmax: torch.Tensor, levels: torch.Tensor,
             absmax_scale: Optional[torch.Tensor], absmax_offset: Optional[torch.Tensor], *,
             block_size: int, vectorized: bool = True, avx512: Optional[bool] = None) -> torch.Tensor:
    """x (M, K), the NF4 layout (``impl/schemes/nf4.py``) -> y (M, N) in x's dtype."""
    n, k_pad = qweight.shape[0], 2 * qweight.shape[1]
    _check_x("gemv_nf4", x, k_pad)
    double_quant = absmax_scale is not None
    x, qweight, absmax, levels, absmax_scale, absmax_offset = _contiguous(
        x, qweight, absmax, levels, absmax_scale, absmax_offset)
    if not double_quant:  # the kernel reads neither; any float32 pointer will do
        absmax_scale = absmax_offset = levels
    out = x.new_empty((x.shape[0], n))
    compiled_kernel("nf4")(x, qweight, absmax, levels, absmax_scale, absmax_offset, out, x.shape[0], n,
                           x.shape[1], k_pad, block_size, int(double_quant), _DTYPE_CODES[x.dtype],
                           _isa(vectorized, avx512))
    return out

