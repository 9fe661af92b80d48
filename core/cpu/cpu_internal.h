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
static inline vf vbcast(float x) { return x - (vf){0}; } // x - 0 == x exactly; compiles to a broadcast

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
void cpu_swiglu_bwd(float *dgate, float *dup, const float *dout, const float *gate,
                    const float *up, size_t n);
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

#endif
