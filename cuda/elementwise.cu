// elementwise.cu: add, scale, SwiGLU forward/backward, and the sum of squares.
//
// Element-wise ops: grid-stride loops, 4 elements per thread and step (float4) when the pointers
// allow; each output element is computed alone, so they are deterministic by construction. The expressions follow core/cpu/ term by term; nvcc
// contracts a*b+c into FMA (not the CPU build), so results may differ from the CPU in the last bit.
//
// sumsq: deterministic two-pass reduction in double. Pass 1: a fixed number of blocks (a function
// of n only), each thread sums a fixed strided subset in order, the block combines its threads in a
// fixed tree; pass 2: one block combines the block partials the same way. No atomics.
#include "bf16_vec.cuh"
#include "cuda_common.cuh"
extern "C" {
#include "bf16.h"
}

#define EW_THREADS 256

// Vectorised element-wise loops: with every pointer 16-byte aligned (VEC), 4 elements per thread
// and step through float4; the tail (n % 4) and unaligned calls go one element at a time. Each
// element's expression is the scalar one, so both paths give the same bits. H200, n = 32768 x 3072
// (the LM's SwiGLU) with the bf16 copies: swiglu fwd 0.33 ms, bwd 0.57 ms (~4.2 TB/s; were 0.49 /
// 0.82 ms without the copies); with the outputs in bf16 only (the table's acts) 0.226 / 0.366 ms.
// SwiGLU (s10): 8 elements per step, the inputs as BfIn (bf16.h: the bf16 table reads gate, up and
// dout rounded to bf16, where they are GEMM outputs kept in bf16), the input kind a template
// parameter (all fp32, all bf16, else per load at run time: a run-time kind per load cost the fp32
// path ~10% and held the bf16 one at ~2.8 TB/s) and strided bf16 outputs (OutBF.rl / ld: a
// grouped product's column blocks). LM step trace (s10 r1 -> r2, per call): with bf16 inputs fwd
// 177 -> 159 us, bwd 361 -> 301 us (fp32 inputs, s9: 235 / 378).

static unsigned ew_grid(size_t n, int vec) { return grid_for(vec ? (n + 3) / 4 : n, EW_THREADS); }
#define F4(p) (((float4 *)(p))[i4])
#define CF4(p) (((const float4 *)(p))[i4])

template <int VEC> __global__ void add_kernel(float *out, const float *a, const float *b, size_t n) {
    vec_loop<VEC, 4>(n, [&](size_t i4) {
        float4 x = CF4(a), y = CF4(b);
        F4(out) = make_float4(x.x + y.x, x.y + y.y, x.z + y.z, x.w + y.w);
    }, [&](size_t i) { out[i] = a[i] + b[i]; });
}

template <int VEC> __global__ void scale_kernel(float *x, float s, size_t n) {
    vec_loop<VEC, 4>(n, [&](size_t i4) {
        float4 v = F4(x);
        F4(x) = make_float4(v.x * s, v.y * s, v.z * s, v.w * s);
    }, [&](size_t i) { x[i] *= s; });
}

void cuda_add(float *out, const float *a, const float *b, size_t n) {
    if (!n) return;
    if (aligned16(out) && aligned16(a) && aligned16(b))
        add_kernel<1><<<ew_grid(n, 1), EW_THREADS>>>(out, a, b, n);
    else add_kernel<0><<<ew_grid(n, 0), EW_THREADS>>>(out, a, b, n);
    cudaLaunchCheck();
}

void cuda_scale(float *x, float s, size_t n) {
    if (!n) return;
    if (aligned16(x)) scale_kernel<1><<<ew_grid(n, 1), EW_THREADS>>>(x, s, n);
    else scale_kernel<0><<<ew_grid(n, 0), EW_THREADS>>>(x, s, n);
    cudaLaunchCheck();
}

// ---- SwiGLU: out = silu(g) * up; d/dg [g s(g)] = s + g s (1 - s) ----
//
// The bf16 table's variants (bf16.h): ob / dgb / dub, when not NULL, receive the bf16 rounding of
// the result (the GEMM operand that follows, so it needs no conversion pass); the fp32 outputs may
// then be NULL (the table keeps that output in bf16 only); acc = 0 overwrites the gradients (the
// table knows they are zero) instead of reading them.

__device__ __forceinline__ float sigmoid_f(float z) { return 1.0f / (1.0f + expf(-z)); }
__device__ __forceinline__ float swiglu1(float g, float u) { return g * sigmoid_f(g) * u; }

// VEC: 8 elements per step (every pointer 16-byte aligned, strided copies by rows of 8k);
// IN: the inputs' kind (bf16_vec.cuh in_get8: 0 fp32, 1 bf16, 2 mixed / rounded, read at run time)
template <int VEC, int IN>
__global__ void swiglu_fwd_kernel(OutBF o, BfIn gate, BfIn up, size_t n) {
    vec_loop<VEC, 8>(n, [&](size_t j) {
        V8 g = in_get8<IN>(gate, 8 * j), u = in_get8<IN>(up, 8 * j), r;
#pragma unroll
        for (int k = 0; k < 8; k++) r.v[k] = swiglu1(g.v[k], u.v[k]);
        out_put8(o, 8 * j, r);
    }, [&](size_t i) { out_put(o, i, swiglu1(in_get(gate, i), in_get(up, i))); });
}

// one element's gradient increments; acc: added to the old value (read after any earlier write, so
// dgate == dup takes both increments in order, as the fp32 op)
__device__ __forceinline__ float swiglu_dg(float old, float d, float g, float u, float s, int acc) {
    return acc ? old + d * u * (s + g * s * (1.0f - s)) : d * u * (s + g * s * (1.0f - s));
}
__device__ __forceinline__ float swiglu_du(float old, float d, float g, float s, int acc) {
    return acc ? old + d * g * s : d * g * s;
}

// og / ou: dgate / dup (og.f == ou.f: one buffer, then acc = 1 and no VEC); an output with neither
// pointer is not computed
template <int VEC, int IN>
__global__ void swiglu_bwd_kernel(OutBF og, OutBF ou, int acc, BfIn dout, BfIn gate, BfIn up,
                                  size_t n) {
    int wg = og.f || og.b, wu = ou.f || ou.b;
    vec_loop<VEC, 8>(n, [&](size_t j) { // VEC only when dgate != dup
        V8 d = in_get8<IN>(dout, 8 * j), g = in_get8<IN>(gate, 8 * j), s, r;
#pragma unroll
        for (int k = 0; k < 8; k++) s.v[k] = sigmoid_f(g.v[k]);
        if (wg) {
            V8 u = in_get8<IN>(up, 8 * j), a = acc ? in_get8<0>(BfIn{og.f, NULL, 0}, 8 * j) : V8{};
#pragma unroll
            for (int k = 0; k < 8; k++) r.v[k] = swiglu_dg(a.v[k], d.v[k], g.v[k], u.v[k], s.v[k], acc);
            out_put8(og, 8 * j, r);
        }
        if (wu) {
            V8 b = acc ? in_get8<0>(BfIn{ou.f, NULL, 0}, 8 * j) : V8{};
#pragma unroll
            for (int k = 0; k < 8; k++) r.v[k] = swiglu_du(b.v[k], d.v[k], g.v[k], s.v[k], acc);
            out_put8(ou, 8 * j, r);
        }
    }, [&](size_t i) {
        float d = in_get(dout, i), g = in_get(gate, i), s = sigmoid_f(g);
        if (wg) out_put(og, i, swiglu_dg(acc ? og.f[i] : 0.0f, d, g, in_get(up, i), s, acc));
        if (wu) out_put(ou, i, swiglu_du(acc ? ou.f[i] : 0.0f, d, g, s, acc));
    });
}

// the kernel's IN for these inputs: one kind for all (0 or 1), else 2
static int ew_in(const BfIn *in, int k) {
    int kind = in_kind(in[0]);
    for (int i = 1; i < k; i++)
        if (in_kind(in[i]) != kind) kind = 2;
    return kind;
}
static int ew_vec(const BfIn *in, int k, const OutBF *o, int ko) {
    int v = 1;
    for (int i = 0; i < k; i++) v &= in_aligned16(in[i]);
    for (int i = 0; i < ko; i++)
        v &= aligned16(o[i].f) && aligned16(o[i].b) && o[i].rl % 8 == 0 && o[i].ld % 8 == 0;
    return v;
}
#define EW_LAUNCH(K, vec, in, n, ...)                                                             \
    do {                                                                                          \
        unsigned g_ = grid_for(vec ? ((n) + 7) / 8 : (n), EW_THREADS);                            \
        if (!vec) K<0, 2><<<g_, EW_THREADS>>>(__VA_ARGS__);                                       \
        else if (in == 0) K<1, 0><<<g_, EW_THREADS>>>(__VA_ARGS__);                               \
        else if (in == 1) K<1, 1><<<g_, EW_THREADS>>>(__VA_ARGS__);                               \
        else K<1, 2><<<g_, EW_THREADS>>>(__VA_ARGS__);                                            \
        cudaLaunchCheck();                                                                        \
    } while (0)

void cuda_swiglu_fwd_x(float *out, uint16_t *ob, BfIn gate, BfIn up, size_t n) {
    if (!n || (!out && !ob)) return;
    OutBF o = {out, ob};
    BfIn in[2] = {gate, up};
    int vec = ew_vec(in, 2, &o, 1), kind = ew_in(in, 2);
    EW_LAUNCH(swiglu_fwd_kernel, vec, kind, n, o, gate, up, n);
}

void cuda_swiglu_bwd_x(float *dgate, float *dup, uint16_t *dgb, uint16_t *dub, size_t rl, size_t ld,
                       int acc, BfIn dout, BfIn gate, BfIn up, size_t n) {
    if (!n || (!dgate && !dup && !dgb && !dub)) return;
    if (dgate && dgate == dup) acc = 1, dgb = dub = NULL; // one buffer takes both increments
    if (acc && ((dgb && !dgate) || (dub && !dup))) acc = 0; // (not called so: nothing to add to)
    OutBF o[2] = {out_strided(dgate, dgb, rl, ld), out_strided(dup, dub, rl, ld)};
    BfIn in[3] = {dout, gate, up};
    int vec = ew_vec(in, 3, o, 2) && !(dgate && dgate == dup), kind = ew_in(in, 3);
    EW_LAUNCH(swiglu_bwd_kernel, vec, kind, n, o[0], o[1], acc, dout, gate, up, n);
}

void cuda_swiglu_fwd(float *out, const float *gate, const float *up, size_t n) {
    cuda_swiglu_fwd_x(out, NULL, in_f32(gate), in_f32(up), n);
}

void cuda_swiglu_bwd(float *dgate, float *dup, const float *dout, const float *gate,
                     const float *up, size_t n) {
    cuda_swiglu_bwd_x(dgate, dup, NULL, NULL, 0, 0, 1, in_f32(dout), in_f32(gate), in_f32(up), n);
}

// ---- sum of squares ----

#define SUMSQ_THREADS 256
#define SUMSQ_MAX_BLOCKS 1024

__global__ void __launch_bounds__(SUMSQ_THREADS)
sumsq_partial_kernel(const float *x, size_t n, double *part) {
    __shared__ double sh[SUMSQ_THREADS / 32];
    double s = 0;
    // The thread's terms x[i], x[i + st], ... in order, 8 at a time, the next 8 loaded before the
    // current 8 are added (s9; ncu, the LM's 162M gradients, H200: 0.178 ms, ~3.6 TB/s; s8's
    // plain unroll by 8 waited for each group: 0.262 ms). Terms past n are 0: s + 0 = s (s >= +0),
    // so the sum has the bits of the plain loop. (double)x * x is exact: a float product fits.
    size_t st = (size_t)gridDim.x * SUMSQ_THREADS, i = blockIdx.x * (size_t)SUMSQ_THREADS + threadIdx.x;
    float e0[8], e1[8];
    auto load = [&](float (&e)[8], size_t j) {
#pragma unroll
        for (int k = 0; k < 8; k++) e[k] = j + k * st < n ? x[j + k * st] : 0.0f;
    };
    auto add = [&](const float (&e)[8]) {
#pragma unroll
        for (int k = 0; k < 8; k++) s += (double)e[k] * e[k];
    };
    load(e0, i);
    for (; i < n; i += 16 * st) { // (two groups per trip: no register copies between them)
        load(e1, i + 8 * st);
        add(e0);
        if (i + 8 * st >= n) break;
        load(e0, i + 16 * st);
        add(e1);
    }
    s = block_sum<SUMSQ_THREADS>(s, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

__global__ void __launch_bounds__(SUMSQ_THREADS)
sumsq_final_kernel(const double *part, int np, double *out) {
    __shared__ double sh[SUMSQ_THREADS / 32];
    double s = 0;
    for (int i = threadIdx.x; i < np; i += SUMSQ_THREADS) s += part[i];
    s = block_sum<SUMSQ_THREADS>(s, sh);
    if (threadIdx.x == 0) *out = s;
}

double cuda_sumsq(const float *x, size_t n) {
    if (!n) return 0.0;
    unsigned nb = cdiv_u(n, SUMSQ_THREADS);
    if (nb > SUMSQ_MAX_BLOCKS) nb = SUMSQ_MAX_BLOCKS;
    double *part = (double *)cuda_scratch(SCRATCH_SUMSQ, (nb + 1) * sizeof(double));
    sumsq_partial_kernel<<<nb, SUMSQ_THREADS>>>(x, n, part);
    cudaLaunchCheck();
    sumsq_final_kernel<<<1, SUMSQ_THREADS>>>(part, (int)nb, part + nb);
    cudaLaunchCheck();
    double r;
    cudaCheck(cudaMemcpy(&r, part + nb, sizeof r, cudaMemcpyDeviceToHost));
    return r;
}
