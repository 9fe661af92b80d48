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

template <int VEC>
__global__ void swiglu_fwd_kernel(OutBF o, const float *gate, const float *up, size_t n) {
    vec_loop<VEC, 4>(n, [&](size_t i4) {
        float4 g = CF4(gate), u = CF4(up);
        out_put4(o, 4 * i4, make_float4(swiglu1(g.x, u.x), swiglu1(g.y, u.y), swiglu1(g.z, u.z),
                                        swiglu1(g.w, u.w)));
    }, [&](size_t i) { out_put(o, i, swiglu1(gate[i], up[i])); });
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
template <int VEC>
__global__ void swiglu_bwd_kernel(OutBF og, OutBF ou, int acc, const float *dout, const float *gate,
                                  const float *up, size_t n) {
    int wg = og.f || og.b, wu = ou.f || ou.b;
    vec_loop<VEC, 4>(n, [&](size_t i4) { // VEC only when dgate != dup
        float4 d = CF4(dout), g = CF4(gate);
        float4 s = make_float4(sigmoid_f(g.x), sigmoid_f(g.y), sigmoid_f(g.z), sigmoid_f(g.w));
        if (wg) {
            float4 u = CF4(up), a = acc ? F4(og.f) : make_float4(0, 0, 0, 0);
            a.x = swiglu_dg(a.x, d.x, g.x, u.x, s.x, acc);
            a.y = swiglu_dg(a.y, d.y, g.y, u.y, s.y, acc);
            a.z = swiglu_dg(a.z, d.z, g.z, u.z, s.z, acc);
            a.w = swiglu_dg(a.w, d.w, g.w, u.w, s.w, acc);
            out_put4(og, 4 * i4, a);
        }
        if (wu) {
            float4 b = acc ? F4(ou.f) : make_float4(0, 0, 0, 0);
            b.x = swiglu_du(b.x, d.x, g.x, s.x, acc);
            b.y = swiglu_du(b.y, d.y, g.y, s.y, acc);
            b.z = swiglu_du(b.z, d.z, g.z, s.z, acc);
            b.w = swiglu_du(b.w, d.w, g.w, s.w, acc);
            out_put4(ou, 4 * i4, b);
        }
    }, [&](size_t i) {
        float d = dout[i], g = gate[i], s = sigmoid_f(g);
        if (wg) out_put(og, i, swiglu_dg(acc ? og.f[i] : 0.0f, d, g, up[i], s, acc));
        if (wu) out_put(ou, i, swiglu_du(acc ? ou.f[i] : 0.0f, d, g, s, acc));
    });
}

void cuda_swiglu_fwd_x(float *out, uint16_t *ob, const float *gate, const float *up, size_t n) {
    if (!n || (!out && !ob)) return;
    OutBF o = {out, ob};
    if (aligned16(out) && aligned16(gate) && aligned16(up) && aligned16(ob))
        swiglu_fwd_kernel<1><<<ew_grid(n, 1), EW_THREADS>>>(o, gate, up, n);
    else swiglu_fwd_kernel<0><<<ew_grid(n, 0), EW_THREADS>>>(o, gate, up, n);
    cudaLaunchCheck();
}

void cuda_swiglu_bwd_x(float *dgate, float *dup, uint16_t *dgb, uint16_t *dub, int acc,
                       const float *dout, const float *gate, const float *up, size_t n) {
    if (!n || (!dgate && !dup && !dgb && !dub)) return;
    if (dgate && dgate == dup) acc = 1, dgb = dub = NULL; // one buffer takes both increments
    if (acc && ((dgb && !dgate) || (dub && !dup))) acc = 0; // (not called so: nothing to add to)
    OutBF og = {dgate, dgb}, ou = {dup, dub};
    if (aligned16(dgate) && aligned16(dup) && aligned16(dgb) && aligned16(dub) &&
        aligned16(dout) && aligned16(gate) && aligned16(up) && !(dgate && dgate == dup))
        swiglu_bwd_kernel<1><<<ew_grid(n, 1), EW_THREADS>>>(og, ou, acc, dout, gate, up, n);
    else swiglu_bwd_kernel<0><<<ew_grid(n, 0), EW_THREADS>>>(og, ou, acc, dout, gate, up, n);
    cudaLaunchCheck();
}

void cuda_swiglu_fwd(float *out, const float *gate, const float *up, size_t n) {
    cuda_swiglu_fwd_x(out, NULL, gate, up, n);
}

void cuda_swiglu_bwd(float *dgate, float *dup, const float *dout, const float *gate,
                     const float *up, size_t n) {
    cuda_swiglu_bwd_x(dgate, dup, NULL, NULL, 1, dout, gate, up, n);
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
