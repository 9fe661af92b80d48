// cpu_internal.h: shared pieces of the CPU backend (core/cpu/*.c): the op prototypes that
// cpu_backend.c puts in the table, and a small SIMD vocabulary.
//
// SIMD: GCC/Clang vector extensions rather than intrinsics, so the same source builds on any x86-64
// or ARM host; the width follows what -march enables (16 floats with AVX-512, 8 with AVX, else 4).
// Arithmetic on `vf` is element-wise IEEE, so results stay deterministic: every output element is
// still summed in one fixed order by one thread.
#ifndef MSLAB_CPU_INTERNAL_H
#define MSLAB_CPU_INTERNAL_H

#include <stddef.h>

#include "../ops.h"

#if defined(__AVX512F__)
#define CPU_VL 16
#elif defined(__AVX__)
#define CPU_VL 8
#else
#define CPU_VL 4
#endif

typedef float vf __attribute__((vector_size(CPU_VL * sizeof(float))));
// the same vector with 4-byte alignment, for loads/stores at any float address
typedef float vf_u __attribute__((vector_size(CPU_VL * sizeof(float)), aligned(4), may_alias));

static inline vf vload(const float *p) { return *(const vf_u *)p; }
static inline void vstore(float *p, vf x) { *(vf_u *)p = x; }
// x - 0 == x exactly (also for -0), so this compiles to a single broadcast
static inline vf vbcast(float x) { return x - (vf){0}; }

// Lane masks: comparisons of vf give vi lanes of 0 or -1.
typedef int vi __attribute__((vector_size(CPU_VL * sizeof(int))));
static inline vf vsel(vi mask, vf a, vf b) { return (vf)((mask & (vi)a) | (~mask & (vi)b)); }
static inline vi viota(void) {
    vi r;
    for (int i = 0; i < CPU_VL; i++) r[i] = i;
    return r;
}
// Horizontal sum and max as a tree over lanes (lane i with lane i ^ w, w = VL/2 .. 1): a fixed
// order, so deterministic, and log2(VL) steps instead of a VL-long dependency chain.
#if defined(__GNUC__) && !defined(__clang__)
static inline vf vperm_xor(vf x, int w) {
    vi m;
    for (int i = 0; i < CPU_VL; i++) m[i] = i ^ w;
    return __builtin_shuffle(x, m);
}
#else
static inline vf vperm_xor(vf x, int w) {
    vf r;
    for (int i = 0; i < CPU_VL; i++) r[i] = x[i ^ w];
    return r;
}
#endif
static inline float vhsum(vf x) {
    for (int w = CPU_VL / 2; w >= 1; w /= 2) x = x + vperm_xor(x, w);
    return x[0];
}
static inline float vhmax(vf x) {
    for (int w = CPU_VL / 2; w >= 1; w /= 2) {
        vf y = vperm_xor(x, w);
        x = vsel(y > x, y, x);
    }
    return x[0];
}

// exp on a vector (the softmax of attention: glibc's expf is scalar without -ffast-math).
// exp(x) = 2^n exp(r), n = round(x / ln 2), ln 2 split in two for an exact r; Cephes' expf
// polynomial on |r| <= ln2/2. Measured on every float in [-87, 0]: within 1.01 ulp of exp, with
// or without FMA contraction. x < -87.33 (also -inf) gives 0 (no denormals), x > 88 is clamped to
// 88 (softmax callers pass x <= 0); NaN stays NaN.
static inline vf vexp(vf x) {
    vi under = x < vbcast(-87.3365447504f);
    x = vsel(x > vbcast(88.0f), vbcast(88.0f), x);
    x = vsel(under, vbcast(-87.0f), x); // keep the arithmetic finite; the lane is zeroed below
    const float magic = 12582912.0f;    // 1.5 * 2^23: adding it rounds to an integer
    vf t = x * vbcast(1.44269504088896341f) + vbcast(magic);
    vf n = t - vbcast(magic);
    vi ni = (vi)t - (vi)vbcast(magic); // the integer n, from the low mantissa bits of t
    vf r = x - n * vbcast(0.693359375f) - n * vbcast(-2.12194440e-4f);
    vf p = vbcast(1.9875691500e-4f);
    p = p * r + vbcast(1.3981999507e-3f);
    p = p * r + vbcast(8.3334519073e-3f);
    p = p * r + vbcast(4.1665795894e-2f);
    p = p * r + vbcast(1.6666665459e-1f);
    p = p * r + vbcast(5.0000001201e-1f);
    p = p * (r * r) + r + vbcast(1.0f);
    vf y = p * (vf)((ni + 127) << 23);
    return (vf)(~under & (vi)y);
}

// C[M, N] (acc ? += : =) A[M, K] @ B[K, N], small operands (attention tiles).
// A(i, k) = A[i * rsA + k * csA]; B rows are contiguous (stride ldb); C rows stride ldc.
// Each C element is one fused multiply-add chain over k = 0..K-1, whatever M, N: deterministic.
void cpu_gemm_small(int M, int N, int K, const float *A, int rsA, int csA, const float *B, int ldb,
                    float *C, int ldc, int acc);

// ---- ops (signatures as in ops.h) ----
void cpu_matmul_fwd(float *out, const float *inp, const float *w, int N, int IC, int OC);
void cpu_matmul_bwd(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                    int N, int IC, int OC);

void cpu_embedding_fwd(float *out, const int *tok, const float *wte, int N, int C);
void cpu_embedding_bwd(float *dwte, const float *dout, const int *tok, int N, int C);
void cpu_rmsnorm_fwd(float *out, float *rstd, const float *inp, const float *w, int N, int C,
                     float eps);
void cpu_rmsnorm_bwd(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                     const float *rstd, int N, int C);
void cpu_swiglu_fwd(float *out, const float *gate, const float *up, size_t n);
void cpu_swiglu_bwd(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                    size_t n);
void cpu_crossentropy_fwd(float *losses, const float *logits, const int *targets, int N, int V);
void cpu_crossentropy_bwd(float *dlogits, const float *logits, const int *targets, float dloss,
                          int N, int V);

void cpu_rope_fwd(float *out, const float *inp, const float *pos, const float *inv_freq, int N,
                  int H, int D, int style);
void cpu_rope_bwd(float *dinp, const float *dout, const float *pos, const float *inv_freq, int N,
                  int H, int D, int style);

void cpu_attention_fwd(float *out, float *lse, const float *q, const float *k, const float *v,
                       int B, int T, int H, int KVH, int D);
void cpu_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *out,
                       const float *lse, const float *q, const float *k, const float *v, int B,
                       int T, int H, int KVH, int D);

// block-sparse attention over an index list and the selection that builds the list
void cpu_sparse_attention_fwd(float *out, float *lse, const float *q, const float *k,
                              const float *v, const AttnIndex *ix, int B, int T, int H, int KVH,
                              int D);
void cpu_sparse_attention_bwd(float *dq, float *dk, float *dv, const float *dout,
                              const float *out, const float *lse, const float *q, const float *k,
                              const float *v, const AttnIndex *ix, int B, int T, int H, int KVH,
                              int D);
void cpu_attention_select(AttnIndex *ix, const struct AttnConfig *cfg, const float *q,
                          const float *k, int B, int T, int H, int KVH, int D);

// new queries over a KV cache (cpu_decode.c)
void cpu_attention_decode(float *out, const float *q, const float *k, const float *v, int Tq, int t0,
                          int H, int KVH, int D);

#endif
