// backend_bf16.cu: the "cuda-bf16" table (docs/cuda.md, "Precision"): backend_cuda()'s table with
// the GEMMs and the attention ops on bf16 operands; everything else (storage, element-wise ops,
// norms, loss, AdamW on the fp32 master weights) is the fp32 table's own function.
//
// Semantics of each replaced op: its operands are rounded to bf16 (round-to-nearest-even, as
// cuda_f32_to_bf16), products are accumulated in fp32, results land in the op's fp32 outputs
// (attention: its out is the bf16 kernel's bf16 out widened, exactly; lse fp32). Backward ops keep
// ops.h's += convention: the GEMMs add with beta = 1, the attention gradients (which the bf16
// kernels return in bf16, overwritten) are added into the fp32 gradients. The selection
// (attention_select) scores the bf16-rounded q / k too (select_bf16, else the fp32 op).
//
// GEMM choice: operands are converted into bf16 scratch, then cublasGemmEx with CUDA_R_16BF inputs,
// CUDA_R_32F output, CUBLAS_COMPUTE_32F (tensor cores). The alternative, CUBLAS_COMPUTE_32F_FAST_16BF
// on the fp32 buffers, saves the conversions, but cuBLAS does not specify how it down-converts and
// on the H200 it is not round-to-nearest of the operands (2.4e-3 relative L2 from the rounded-
// operand reference, where this path is <= 4.4e-6), and slower (246 vs 357 TFLOP/s at
// 8192x768x3072 fwd+bwd). Kept only as an opt-in for measurements (MSLAB_BF16_GEMM=fast, or
// backend_cuda_bf16_fast_gemm(1)), never the default.
//
// Determinism: as matmul.cu (one stream, cuBLAS atomics off); the bf16 attention kernels are
// deterministic unless the run says `deterministic = false` (attn_bf16_set_deterministic); the
// conversions are element-wise.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_common.cuh"
extern "C" {
#include "attn_bf16.h"
#include "bf16.h"
}

static Backend bf16_table;
static int bf16_ready;
static int fast_gemm;     // 1: CUBLAS_COMPUTE_32F_FAST_16BF on the fp32 buffers (measurements only)
static int n_fallbacks;   // attention calls that ran the fp32 kernels (shape not handled in bf16)

// bf16 copy of an fp32 device array in a scratch slot (grow-only; freed buffers wait for the
// device, so a queued reader of the old buffer is safe).
static uint16_t *to_bf16(int slot, const float *src, size_t n) {
    uint16_t *d = (uint16_t *)cuda_scratch(slot, (n ? n : 1) * sizeof(uint16_t));
    cuda_f32_to_bf16(d, src, n);
    return d;
}

// ---- matmul ----

// C (m x n, column-major, fp32) = A op . B op + beta C, bf16 operands, fp32 accumulation.
static void gemm_bf16(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                      const uint16_t *A, int lda, const uint16_t *B, int ldb, float beta, float *C,
                      int ldc) {
    const float one = 1.0f;
    cublasCheck(cublasGemmEx(cuda_cublas, ta, tb, m, n, k, &one, A, CUDA_R_16BF, lda, B,
                             CUDA_R_16BF, ldb, &beta, C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
                             CUBLAS_GEMM_DEFAULT));
}
static void gemm_fast(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                      const float *A, int lda, const float *B, int ldb, float beta, float *C,
                      int ldc) {
    const float one = 1.0f;
    cublasCheck(cublasGemmEx(cuda_cublas, ta, tb, m, n, k, &one, A, CUDA_R_32F, lda, B,
                             CUDA_R_32F, ldb, &beta, C, CUDA_R_32F, ldc,
                             CUBLAS_COMPUTE_32F_FAST_16BF, CUBLAS_GEMM_DEFAULT));
}

// The same transposed products as matmul.cu (row-major arrays are column-major transposes).
static void bf16_matmul_fwd(float *out, const float *inp, const float *w, int N, int IC, int OC) {
    if (N <= 0 || OC <= 0) return;
    if (IC <= 0) {
        cudaCheck(cudaMemsetAsync(out, 0, (size_t)N * OC * sizeof(float), 0));
        return;
    }
    if (fast_gemm) {
        gemm_fast(CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, w, IC, inp, IC, 0.0f, out, OC);
        return;
    }
    const uint16_t *wb = to_bf16(SCRATCH_BF16_B, w, (size_t)OC * IC);
    const uint16_t *ib = to_bf16(SCRATCH_BF16_A, inp, (size_t)N * IC);
    gemm_bf16(CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, wb, IC, ib, IC, 0.0f, out, OC);
}

static void bf16_matmul_bwd(float *dinp, float *dw, const float *dout, const float *inp,
                            const float *w, int N, int IC, int OC) {
    if (N <= 0 || IC <= 0 || OC <= 0) return;
    if (fast_gemm) {
        if (dinp) gemm_fast(CUBLAS_OP_N, CUBLAS_OP_N, IC, N, OC, w, IC, dout, OC, 1.0f, dinp, IC);
        if (dw) gemm_fast(CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, N, inp, IC, dout, OC, 1.0f, dw, IC);
        return;
    }
    const uint16_t *db = to_bf16(SCRATCH_BF16_C, dout, (size_t)N * OC); // shared by both products
    if (dinp) {
        const uint16_t *wb = to_bf16(SCRATCH_BF16_B, w, (size_t)OC * IC);
        gemm_bf16(CUBLAS_OP_N, CUBLAS_OP_N, IC, N, OC, wb, IC, db, OC, 1.0f, dinp, IC);
    }
    if (dw) {
        const uint16_t *ib = to_bf16(SCRATCH_BF16_A, inp, (size_t)N * IC);
        gemm_bf16(CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, N, ib, IC, db, OC, 1.0f, dw, IC);
    }
}

// ---- attention adapters ----
//
// Slots: A = q | k | v, B = out, C = dout, D = dq | dk | dv (bf16). A shape the bf16 kernels do not
// handle (they return -1 having launched nothing) runs the fp32 kernel on the fp32 operands; the
// first such call per op says so on stderr, so a run never silently changes precision.

static void note_fallback(const char *op, int B, int T, int H, int KVH, int D) {
    static int said[5];
    int i = !strcmp(op, "attention_fwd") ? 0 : !strcmp(op, "attention_bwd") ? 1
          : !strcmp(op, "sparse_attention_fwd") ? 2 : !strcmp(op, "sparse_attention_bwd") ? 3 : 4;
    n_fallbacks++;
    if (said[i]) return;
    said[i] = 1;
    fprintf(stderr, "cuda-bf16: %s: no bf16 kernel for B=%d T=%d H=%d KVH=%d D=%d; running it in "
            "fp32 (later calls not reported)\n", op, B, T, H, KVH, D);
}

// Arrays carved from one slot start at 256-byte boundaries (the kernels' vector loads).
static size_t up128(size_t n) { return (n + 127) & ~(size_t)127; }

struct QKV { uint16_t *q, *k, *v; };
static QKV qkv_bf16(const float *q, const float *k, const float *v, size_t nq, size_t nk) {
    uint16_t *base =
        (uint16_t *)cuda_scratch(SCRATCH_BF16_A, (up128(nq) + 2 * up128(nk)) * sizeof(uint16_t));
    QKV r = {base, base + up128(nq), base + up128(nq) + up128(nk)};
    cuda_f32_to_bf16(r.q, q, nq);
    cuda_f32_to_bf16(r.k, k, nk);
    cuda_f32_to_bf16(r.v, v, nk);
    return r;
}

// The kernels' bf16 dq | dk | dv (slot D), before they are added into the fp32 gradients.
static QKV grads_bf16(size_t nq, size_t nk) {
    uint16_t *base =
        (uint16_t *)cuda_scratch(SCRATCH_BF16_D, (up128(nq) + 2 * up128(nk)) * sizeof(uint16_t));
    QKV r = {base, base + up128(nq), base + up128(nq) + up128(nk)};
    return r;
}

// Which kernel runs each attention call (wgmma where it can, else mma.sync): attn_mode.cu.
static void bf16_attention_fwd(float *out, float *lse, const float *q, const float *k,
                               const float *v, int B, int T, int H, int KVH, int D) {
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D;
    if (!nq) return;
    QKV x = qkv_bf16(q, k, v, nq, nk);
    uint16_t *ob = (uint16_t *)cuda_scratch(SCRATCH_BF16_B, nq * sizeof(uint16_t));
    if (attn_bf16_dense_fwd(ob, lse, x.q, x.k, x.v, B, T, H, KVH, D) != 0) {
        note_fallback("attention_fwd", B, T, H, KVH, D);
        cuda_attention_fwd(out, lse, q, k, v, B, T, H, KVH, D);
        return;
    }
    cuda_bf16_to_f32(out, ob, nq);
}

static void bf16_attention_bwd(float *dq, float *dk, float *dv, const float *dout,
                               const float *out, const float *lse, const float *q, const float *k,
                               const float *v, int B, int T, int H, int KVH, int D) {
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D;
    if (!nq) return;
    QKV x = qkv_bf16(q, k, v, nq, nk);
    const uint16_t *ob = to_bf16(SCRATCH_BF16_B, out, nq);
    const uint16_t *gb = to_bf16(SCRATCH_BF16_C, dout, nq);
    QKV g = grads_bf16(nq, nk);
    if (attn_bf16_dense_bwd(g.q, g.k, g.v, gb, ob, lse, x.q, x.k, x.v, B, T, H, KVH, D) != 0) {
        note_fallback("attention_bwd", B, T, H, KVH, D);
        cuda_attention_bwd(dq, dk, dv, dout, out, lse, q, k, v, B, T, H, KVH, D);
        return;
    }
    cuda_bf16_add_to_f32(dq, g.q, nq);
    cuda_bf16_add_to_f32(dk, g.k, nk);
    cuda_bf16_add_to_f32(dv, g.v, nk);
}

static void bf16_sparse_fwd(float *out, float *lse, const float *q, const float *k,
                            const float *v, const AttnIndex *ix, int B, int T, int H, int KVH,
                            int D) {
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D;
    if (!nq) return;
    QKV x = qkv_bf16(q, k, v, nq, nk);
    uint16_t *ob = (uint16_t *)cuda_scratch(SCRATCH_BF16_B, nq * sizeof(uint16_t));
    if (attn_bf16_sparse_fwd(ob, lse, x.q, x.k, x.v, ix, B, T, H, KVH, D) != 0) {
        note_fallback("sparse_attention_fwd", B, T, H, KVH, D);
        cuda_sparse_attention_fwd(out, lse, q, k, v, ix, B, T, H, KVH, D);
        return;
    }
    cuda_bf16_to_f32(out, ob, nq);
}

static void bf16_sparse_bwd(float *dq, float *dk, float *dv, const float *dout, const float *out,
                            const float *lse, const float *q, const float *k, const float *v,
                            const AttnIndex *ix, int B, int T, int H, int KVH, int D) {
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D;
    if (!nq) return;
    QKV x = qkv_bf16(q, k, v, nq, nk);
    const uint16_t *ob = to_bf16(SCRATCH_BF16_B, out, nq);
    const uint16_t *gb = to_bf16(SCRATCH_BF16_C, dout, nq);
    QKV g = grads_bf16(nq, nk);
    if (attn_bf16_sparse_bwd(g.q, g.k, g.v, gb, ob, lse, x.q, x.k, x.v, ix, B, T, H, KVH,
                             D) != 0) {
        note_fallback("sparse_attention_bwd", B, T, H, KVH, D);
        cuda_sparse_attention_bwd(dq, dk, dv, dout, out, lse, q, k, v, ix, B, T, H, KVH, D);
        return;
    }
    cuda_bf16_add_to_f32(dq, g.q, nq);
    cuda_bf16_add_to_f32(dk, g.k, nk);
    cuda_bf16_add_to_f32(dv, g.v, nk);
}

// The selection scores bf16 q / k like the attention that follows (select_bf16: the fp32 op's list
// on the rounded operands, with fast paths for ms mean / dot / region / rank and moba that the fp32
// op lacks: at merge 128 x top 512 the fp32 selection dominated a training step). Slot E.
static void bf16_attention_select(AttnIndex *ix, const struct AttnConfig *cfg, const float *q,
                                  const float *k, int B, int T, int H, int KVH, int D) {
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D;
    uint16_t *qb = (uint16_t *)cuda_scratch(SCRATCH_BF16_E, (up128(nq) + up128(nk) + 1) * 2);
    uint16_t *kb = qb + up128(nq);
    cuda_f32_to_bf16(qb, q, nq);
    cuda_f32_to_bf16(kb, k, nk);
    if (select_bf16(ix, cfg, qb, kb, B, T, H, KVH, D) != 0) {
        note_fallback("attention_select", B, T, H, KVH, D);
        cuda_attention_select(ix, cfg, q, k, B, T, H, KVH, D);
    }
}

// ---- the table ----

extern "C" const Backend *backend_cuda_bf16(void) {
    if (bf16_ready) return &bf16_table;
    const Backend *f = backend_cuda(); // device, cuBLAS handle; NULL with ms_error() set
    if (!f) return NULL;
    bf16_table = *f;
    bf16_table.name = "cuda-bf16";
    bf16_table.matmul_fwd = bf16_matmul_fwd;
    bf16_table.matmul_bwd = bf16_matmul_bwd;
    bf16_table.attention_fwd = bf16_attention_fwd;
    bf16_table.attention_bwd = bf16_attention_bwd;
    bf16_table.sparse_attention_fwd = bf16_sparse_fwd;
    bf16_table.sparse_attention_bwd = bf16_sparse_bwd;
    const char *sel = getenv("MSLAB_BF16_SELECT"); // "fp32": the fp32 selection on the fp32 q / k
    if (!(sel && !strcmp(sel, "fp32"))) bf16_table.attention_select = bf16_attention_select;
    // attention_decode (inference) stays fp32
    const char *m = getenv("MSLAB_BF16_GEMM");
    fast_gemm = m && !strcmp(m, "fast");
    bf16_ready = 1;
    return &bf16_table;
}

extern "C" void backend_cuda_bf16_fast_gemm(int on) { fast_gemm = on != 0; }

extern "C" int backend_cuda_bf16_fallbacks(void) { return n_fallbacks; }
