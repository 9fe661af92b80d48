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
// Conversions (the table's memory state; every op of the table is wrapped to keep it):
//  - Shadows: the bf16 copy of an fp32 array that a GEMM or the attention read is kept (its own
//    allocation, keyed by pointer and length) and reused while it is valid; every op of this table
//    marks the ranges it writes (upload, zero, adamw, every op's outputs, alloc / free), which makes
//    the shadows over them stale. So a weight is converted once per optimizer step (not at each of
//    its GEMMs), a layer input once for its forward GEMMs and reused by the backward, q / k / v once
//    for the attention forward and backward. An op that writes an array that has a shadow fills it
//    in the same pass (rmsnorm, rope, swiglu fwd / bwd, cross-entropy bwd: bf16.h's _x variants),
//    so the LM-head gradient, ln1 / ln2, h, dgate / dup, dq / dk are never converted separately.
//    Budget: MSLAB_BF16_CACHE_MB, else a quarter of the device memory (at most half of the free);
//    past it, operands go through scratch slots as before. Shadows change no value: training with
//    MSLAB_BF16_CACHE=0 gives the same bits (bf16.state test).
//  - Deferred zeros: zero() only records the range; the next op either overwrites exactly that
//    array (matmul_bwd's GEMM with beta 0, swiglu / rmsnorm / rope / cross-entropy backward with
//    acc = 0: no memset, no read of the zeros) or runs the memset first (every op flushes the
//    zeros it does not consume, so no op ever sees an unrun zero). MSLAB_BF16_LAZY=0: at once.
// Memory written other than through this table must be announced: backend_cuda_bf16_forget().
// Measured (H200, `mslab-gpu-bench --lm`, the 162M LM at 4096 x 8): 116.6 ms/step; 145.2 ms with
// MSLAB_BF16_CACHE=0 MSLAB_BF16_LAZY=0 (same kernels otherwise); 170.7 ms before this work, when
// conversions took ~36 ms/step in ~545 calls (now 129 calls, 1.9 ms: each weight once, and v /
// att / datt / dv per layer, which no op of this file produces).
// Shadows at that shape: ~9.5 GB (LM-head gradient 2.1 GB, per layer ln1 ln2 att h q k v).
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
static void (*select_fn)(AttnIndex *, const struct AttnConfig *, const float *, const float *,
                         int, int, int, int, int); // bf16_attention_select or the fp32 op
static int fast_gemm;     // 1: CUBLAS_COMPUTE_32F_FAST_16BF on the fp32 buffers (measurements only)
static int n_fallbacks;   // attention calls that ran the fp32 kernels (shape not handled in bf16)

// ---- the table's memory state: bf16 shadows and deferred zeros (header, "Conversions") ----

struct Shadow {
    const float *p; // the fp32 array [p, p + n) ...
    size_t n;
    uint16_t *b;    // ... and its bf16 copy, own allocation
    int valid;      // b holds rn(p[0 .. n)) as the array is now
};
static Shadow *shadows;
static int n_shadows, cap_shadows;
static size_t shadow_bytes, shadow_budget; // the budget is set at the first shadow
static int cache_on = 1, lazy_on = 1;      // MSLAB_BF16_CACHE=0, MSLAB_BF16_LAZY=0
struct Alloc { void *p; size_t bytes; };   // what this table allocated (free drops its shadows)
static Alloc *allocs;
static int n_allocs, cap_allocs;
#define MAX_ZEROS 16
static struct { float *p; size_t n; } zeros[MAX_ZEROS]; // zero() calls not yet run
static int n_zeros;

static size_t shadow_size(size_t n) { return (n * sizeof(uint16_t) + 255) & ~(size_t)255; }
static int overlap(const void *a, size_t abytes, const void *b, size_t bbytes) {
    uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
    return x < y + bbytes && y < x + abytes;
}
// An op of this table is about to write [p, p + bytes): the shadows over it go stale.
static void wrote(const void *p, size_t bytes) {
    if (!p || !bytes) return;
    for (int i = 0; i < n_shadows; i++)
        if (shadows[i].valid && overlap(shadows[i].p, shadows[i].n * sizeof(float), p, bytes))
            shadows[i].valid = 0;
}
static void drop_shadow(int i) { // cudaFree waits for the device: no queued reader is left
    cudaCheck(cudaFree(shadows[i].b));
    shadow_bytes -= shadow_size(shadows[i].n);
    shadows[i] = shadows[--n_shadows];
}
// Every op but the one that consumes a deferred zero starts here: the memsets run before it.
static void flush_zeros(void) {
    for (int i = 0; i < n_zeros; i++)
        cudaCheck(cudaMemsetAsync(zeros[i].p, 0, zeros[i].n * sizeof(float), 0));
    n_zeros = 0;
}
// Only the deferred zeros over [p, p + bytes), for an op that touches nothing else (its every
// operand passed here): the others stay deferred for the op after it (rope_bwd of dq, then dk).
static void flush_over(const void *p, size_t bytes) {
    for (int i = n_zeros - 1; i >= 0; i--)
        if (overlap(zeros[i].p, zeros[i].n * sizeof(float), p, bytes)) {
            cudaCheck(cudaMemsetAsync(zeros[i].p, 0, zeros[i].n * sizeof(float), 0));
            zeros[i] = zeros[--n_zeros];
        }
}
static int is_zero(const float *p, size_t n) {
    for (int i = 0; i < n_zeros; i++)
        if (zeros[i].p == p && zeros[i].n == n) return 1;
    return 0;
}
// 1 when [p, p + n) is exactly a deferred zero, which is then dropped: the caller overwrites the
// whole array instead of adding to it.
static int take_zero(const float *p, size_t n) {
    for (int i = 0; i < n_zeros; i++)
        if (zeros[i].p == p && zeros[i].n == n) {
            zeros[i] = zeros[--n_zeros];
            return 1;
        }
    return 0;
}
static Shadow *shadow_find(const float *p, size_t n) {
    if (!cache_on) return NULL;
    for (int i = 0; i < n_shadows; i++)
        if (shadows[i].p == p && shadows[i].n == n) return &shadows[i];
    return NULL;
}
// The shadow of [p, p + n), created (stale) when the budget allows; NULL: use a scratch slot.
static Shadow *shadow_make(const float *p, size_t n) {
    Shadow *s = shadow_find(p, n);
    if (s || !cache_on || !n) return s;
    if (!shadow_budget) { // MSLAB_BF16_CACHE_MB, else a quarter of the device, at most half free
        size_t fr = 0, tot = 0;
        cudaCheck(cudaMemGetInfo(&fr, &tot));
        const char *e = getenv("MSLAB_BF16_CACHE_MB");
        shadow_budget = e && atol(e) > 0 ? (size_t)atol(e) << 20 : (tot / 4 < fr / 2 ? tot / 4 : fr / 2);
        if (!shadow_budget) shadow_budget = 1;
    }
    size_t bytes = shadow_size(n);
    if (shadow_bytes + bytes > shadow_budget) return NULL;
    uint16_t *b;
    if (cudaMalloc(&b, bytes) != cudaSuccess) {
        (void)cudaGetLastError();
        shadow_budget = shadow_bytes; // the device is full: no more shadows
        return NULL;
    }
    if (n_shadows == cap_shadows) {
        cap_shadows = cap_shadows ? 2 * cap_shadows : 64;
        shadows = (Shadow *)realloc(shadows, cap_shadows * sizeof(Shadow));
        MS_ASSERT(shadows, "out of memory");
    }
    shadows[n_shadows] = {p, n, b, 0};
    shadow_bytes += bytes;
    return &shadows[n_shadows++];
}

// bf16 copy of an fp32 device array: its shadow (converted only if stale), else a scratch slot
// (grow-only; freed buffers wait for the device, so a queued reader of the old buffer is safe).
static const uint16_t *to_bf16(int slot, const float *src, size_t n) {
    Shadow *s = shadow_make(src, n);
    if (s) {
        if (!s->valid) cuda_f32_to_bf16(s->b, src, n);
        s->valid = 1;
        return s->b;
    }
    uint16_t *d = (uint16_t *)cuda_scratch(slot, (n ? n : 1) * sizeof(uint16_t));
    cuda_f32_to_bf16(d, src, n);
    return d;
}
// An op about to write [p, p + n) (after wrote()) may fill its shadow too: only arrays that a bf16
// operand was made of before have one, so nothing is allocated for outputs no GEMM reads.
static uint16_t *produce(const float *p, size_t n) {
    Shadow *s = shadow_find(p, n);
    return s ? s->b : NULL;
}
static void produced(const float *p, size_t n) {
    Shadow *s = shadow_find(p, n);
    if (s) s->valid = 1;
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
    flush_zeros();
    if (N <= 0 || OC <= 0) return;
    wrote(out, (size_t)N * OC * sizeof(float));
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

// beta 0 for a gradient that is a deferred zero (the GEMM then does not read it)
static void bf16_matmul_bwd(float *dinp, float *dw, const float *dout, const float *inp,
                            const float *w, int N, int IC, int OC) {
    if (N <= 0 || IC <= 0 || OC <= 0) {
        flush_zeros();
        return;
    }
    size_t ni = (size_t)N * IC, nw = (size_t)OC * IC;
    float bi = dinp && take_zero(dinp, ni) ? 0.0f : 1.0f;
    float bw = dw && dw != dinp && take_zero(dw, nw) ? 0.0f : 1.0f;
    flush_zeros();
    wrote(dinp, ni * sizeof(float));
    wrote(dw, nw * sizeof(float));
    if (fast_gemm) {
        if (dinp) gemm_fast(CUBLAS_OP_N, CUBLAS_OP_N, IC, N, OC, w, IC, dout, OC, bi, dinp, IC);
        if (dw) gemm_fast(CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, N, inp, IC, dout, OC, bw, dw, IC);
        return;
    }
    const uint16_t *db = to_bf16(SCRATCH_BF16_C, dout, (size_t)N * OC); // shared by both products
    if (dinp) {
        const uint16_t *wb = to_bf16(SCRATCH_BF16_B, w, nw);
        gemm_bf16(CUBLAS_OP_N, CUBLAS_OP_N, IC, N, OC, wb, IC, db, OC, bi, dinp, IC);
    }
    if (dw) {
        const uint16_t *ib = to_bf16(SCRATCH_BF16_A, inp, ni);
        gemm_bf16(CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, N, ib, IC, db, OC, bw, dw, IC);
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
    if (shadow_make(q, nq) && shadow_make(k, nk) && shadow_make(v, nk)) { // reused by the backward
        QKV r = {(uint16_t *)to_bf16(SCRATCH_BF16_A, q, nq), (uint16_t *)to_bf16(SCRATCH_BF16_A, k, nk),
                 (uint16_t *)to_bf16(SCRATCH_BF16_A, v, nk)};
        return r;
    }
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

// ---- the table: every op goes through the state above ----
//
// Each op runs the deferred zeros it does not consume (flush_zeros) and marks what it writes
// (wrote), so a shadow is valid only while no op of this table wrote its array since it was made.

static Backend fp; // the fp32 table's ops

static void *w_alloc(size_t bytes) {
    flush_zeros();
    void *p = fp.alloc(bytes);
    wrote(p, bytes); // memory a shadow still names was freed outside this table
    if (n_allocs == cap_allocs) {
        cap_allocs = cap_allocs ? 2 * cap_allocs : 256;
        allocs = (Alloc *)realloc(allocs, cap_allocs * sizeof(Alloc));
        MS_ASSERT(allocs, "out of memory");
    }
    allocs[n_allocs++] = {p, bytes};
    return p;
}
static void w_free(void *p) {
    if (!p) return;
    flush_zeros();
    size_t bytes = 0;
    int known = 0;
    for (int i = n_allocs - 1; i >= 0; i--)
        if (allocs[i].p == p) {
            bytes = allocs[i].bytes, known = 1;
            allocs[i] = allocs[--n_allocs];
            break;
        }
    for (int i = n_shadows - 1; i >= 0; i--) // not ours: drop every shadow
        if (!known || overlap(shadows[i].p, shadows[i].n * sizeof(float), p, bytes)) drop_shadow(i);
    fp.free(p);
}
static void w_upload(void *dst, const void *src, size_t bytes) {
    flush_zeros();
    wrote(dst, bytes);
    fp.upload(dst, src, bytes);
}
static void w_download(void *dst, const void *src, size_t bytes) {
    flush_zeros();
    fp.download(dst, src, bytes);
}
// Deferred: the next op either overwrites exactly this array (a += gradient op that then skips
// reading it, a GEMM with beta 0) or runs the memset first.
static void w_zero(float *x, size_t n) {
    if (!n) return;
    wrote(x, n * sizeof(float));
    if (!lazy_on || n_zeros == MAX_ZEROS) flush_zeros();
    if (!lazy_on) {
        fp.zero(x, n);
        return;
    }
    zeros[n_zeros].p = x, zeros[n_zeros].n = n;
    n_zeros++;
}
static void w_copy(float *dst, const float *src, size_t n) {
    flush_zeros();
    wrote(dst, n * sizeof(float));
    fp.copy(dst, src, n);
}
static void w_add(float *out, const float *a, const float *b, size_t n) {
    flush_zeros();
    wrote(out, n * sizeof(float));
    fp.add(out, a, b, n);
}
static void w_scale(float *x, float sc, size_t n) {
    flush_zeros();
    wrote(x, n * sizeof(float));
    fp.scale(x, sc, n);
}
static double w_sumsq(const float *x, size_t n) {
    flush_zeros();
    return fp.sumsq(x, n);
}
static void w_embedding_fwd(float *out, const int *tok, const float *wte, int N, int C) {
    flush_zeros();
    if (N > 0 && C > 0) wrote(out, (size_t)N * C * sizeof(float));
    fp.embedding_fwd(out, tok, wte, N, C);
}
static void w_embedding_bwd(float *dwte, const float *dout, const int *tok, int N, int C) {
    flush_zeros();
    wrote(dwte, ~(uintptr_t)0 - (uintptr_t)dwte); // rows up to the largest token: all above dwte
    fp.embedding_bwd(dwte, dout, tok, N, C);
}
static void w_rmsnorm_fwd(float *out, float *rstd, const float *inp, const float *w, int N, int C,
                          float eps) {
    flush_zeros();
    if (N <= 0) return;
    size_t n = (size_t)N * C;
    wrote(out, n * sizeof(float));
    wrote(rstd, (size_t)N * sizeof(float));
    uint16_t *ob = produce(out, n);
    cuda_rmsnorm_fwd_x(out, ob, rstd, inp, w, N, C, eps);
    if (ob) produced(out, n);
}
static void w_rmsnorm_bwd(float *dinp, float *dw, const float *dout, const float *inp,
                          const float *w, const float *rstd, int N, int C) {
    size_t n = (size_t)(N > 0 ? N : 0) * (C > 0 ? C : 0);
    int acc = !(dinp && n && take_zero(dinp, n));
    flush_zeros();
    if (!n) return;
    wrote(dinp, n * sizeof(float));
    wrote(dw, (size_t)C * sizeof(float));
    uint16_t *db = dinp ? produce(dinp, n) : NULL;
    cuda_rmsnorm_bwd_x(dinp, db, acc, dw, dout, inp, w, rstd, N, C);
    if (db) produced(dinp, n);
}
static void w_rope_fwd(float *out, const float *inp, const float *pos, const float *inv_freq,
                       int N, int H, int D, int style) {
    flush_zeros();
    size_t n = (size_t)(N > 0 ? N : 0) * (H > 0 ? H : 0) * (D > 0 ? D : 0);
    wrote(out, n * sizeof(float));
    uint16_t *ob = n ? produce(out, n) : NULL;
    cuda_rope_fwd_x(out, ob, inp, pos, inv_freq, N, H, D, style);
    if (ob) produced(out, n);
}
static void w_rope_bwd(float *dinp, const float *dout, const float *pos, const float *inv_freq,
                       int N, int H, int D, int style) {
    size_t n = (size_t)(N > 0 ? N : 0) * (H > 0 ? H : 0) * (D > 0 ? D : 0);
    int acc = !(n && D % 2 == 0 && take_zero(dinp, n));
    if (n) { // what it reads and writes: dout, pos, inv_freq, dinp
        flush_over(dout, n * sizeof(float));
        flush_over(pos, (size_t)N * sizeof(float));
        flush_over(inv_freq, (size_t)(D / 2) * sizeof(float));
        flush_over(dinp, n * sizeof(float));
    } else flush_zeros();
    wrote(dinp, n * sizeof(float));
    uint16_t *db = n ? produce(dinp, n) : NULL;
    cuda_rope_bwd_x(dinp, db, acc, dout, pos, inv_freq, N, H, D, style);
    if (db) produced(dinp, n);
}
static void w_attention_fwd(float *out, float *lse, const float *q, const float *k, const float *v,
                            int B, int T, int H, int KVH, int D) {
    flush_zeros();
    wrote(out, (size_t)B * T * H * D * sizeof(float));
    wrote(lse, (size_t)B * H * T * sizeof(float));
    bf16_attention_fwd(out, lse, q, k, v, B, T, H, KVH, D);
}
static void w_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *out,
                            const float *lse, const float *q, const float *k, const float *v,
                            int B, int T, int H, int KVH, int D) {
    flush_zeros();
    wrote(dq, (size_t)B * T * H * D * sizeof(float));
    wrote(dk, (size_t)B * T * KVH * D * sizeof(float));
    wrote(dv, (size_t)B * T * KVH * D * sizeof(float));
    bf16_attention_bwd(dq, dk, dv, dout, out, lse, q, k, v, B, T, H, KVH, D);
}
static void w_sparse_fwd(float *out, float *lse, const float *q, const float *k, const float *v,
                         const AttnIndex *ix, int B, int T, int H, int KVH, int D) {
    flush_zeros();
    wrote(out, (size_t)B * T * H * D * sizeof(float));
    wrote(lse, (size_t)B * H * T * sizeof(float));
    bf16_sparse_fwd(out, lse, q, k, v, ix, B, T, H, KVH, D);
}
static void w_sparse_bwd(float *dq, float *dk, float *dv, const float *dout, const float *out,
                         const float *lse, const float *q, const float *k, const float *v,
                         const AttnIndex *ix, int B, int T, int H, int KVH, int D) {
    flush_zeros();
    wrote(dq, (size_t)B * T * H * D * sizeof(float));
    wrote(dk, (size_t)B * T * KVH * D * sizeof(float));
    wrote(dv, (size_t)B * T * KVH * D * sizeof(float));
    bf16_sparse_bwd(dq, dk, dv, dout, out, lse, q, k, v, ix, B, T, H, KVH, D);
}
static void w_select(AttnIndex *ix, const struct AttnConfig *cfg, const float *q, const float *k,
                     int B, int T, int H, int KVH, int D) {
    flush_zeros();
    size_t nb = (size_t)B * H * (ix->nblk > 0 ? ix->nblk : 0);
    wrote(ix->idx, nb * (ix->width > 0 ? ix->width : 0) * sizeof(int));
    wrote(ix->kpos, nb * (ix->width > 0 ? ix->width : 0) * sizeof(int));
    wrote(ix->qpos, nb * sizeof(int));
    select_fn(ix, cfg, q, k, B, T, H, KVH, D);
}
static void w_swiglu_fwd(float *out, const float *gate, const float *up, size_t n) {
    flush_zeros();
    wrote(out, n * sizeof(float));
    uint16_t *ob = n ? produce(out, n) : NULL;
    cuda_swiglu_fwd_x(out, ob, gate, up, n);
    if (ob) produced(out, n);
}
static void w_swiglu_bwd(float *dgate, float *dup, const float *dout, const float *gate,
                         const float *up, size_t n) {
    int acc = 1;
    if (n && dgate != dup) { // overwrite only when every gradient it writes is a deferred zero
        if ((!dgate || is_zero(dgate, n)) && (!dup || is_zero(dup, n))) {
            if (dgate) take_zero(dgate, n);
            if (dup) take_zero(dup, n);
            acc = 0;
        }
    }
    flush_zeros();
    wrote(dgate, n * sizeof(float));
    wrote(dup, n * sizeof(float));
    uint16_t *gb = n && dgate != dup ? produce(dgate, n) : NULL;
    uint16_t *ub = n && dgate != dup ? produce(dup, n) : NULL;
    cuda_swiglu_bwd_x(dgate, dup, gb, ub, acc, dout, gate, up, n);
    if (gb) produced(dgate, n);
    if (ub) produced(dup, n);
}
static void w_ce_fwd(float *losses, const float *logits, const int *targets, int N, int V) {
    flush_zeros();
    if (N > 0) wrote(losses, (size_t)N * sizeof(float));
    fp.crossentropy_fwd(losses, logits, targets, N, V);
}
static void w_ce_bwd(float *dlogits, const float *logits, const int *targets, float dloss, int N,
                     int V) {
    size_t n = (size_t)(N > 0 ? N : 0) * (V > 0 ? V : 0);
    int acc = !(n && take_zero(dlogits, n));
    flush_zeros();
    if (!n) return;
    wrote(dlogits, n * sizeof(float));
    uint16_t *db = produce(dlogits, n);
    cuda_crossentropy_bwd_x(dlogits, db, acc, logits, targets, dloss, N, V);
    if (db) produced(dlogits, n);
}
static void w_adamw(float *p, const float *g, float *m, float *v, size_t n, float lr, float b1,
                    float b2, float eps, float wd, int t) {
    flush_zeros();
    wrote(p, n * sizeof(float));
    wrote(m, n * sizeof(float));
    wrote(v, n * sizeof(float));
    fp.adamw(p, g, m, v, n, lr, b1, b2, eps, wd, t);
}
static void w_decode(float *out, const float *q, const float *k, const float *v, int Tq, int t0,
                     int H, int KVH, int D) {
    flush_zeros();
    if (Tq > 0) wrote(out, (size_t)Tq * H * D * sizeof(float));
    fp.attention_decode(out, q, k, v, Tq, t0, H, KVH, D);
}

extern "C" const Backend *backend_cuda_bf16(void) {
    if (bf16_ready) return &bf16_table;
    const Backend *f = backend_cuda(); // device, cuBLAS handle; NULL with ms_error() set
    if (!f) return NULL;
    bf16_table = *f;
    fp = *f;
    bf16_table.name = "cuda-bf16";
    bf16_table.matmul_fwd = bf16_matmul_fwd;
    bf16_table.matmul_bwd = bf16_matmul_bwd;
    const char *sel = getenv("MSLAB_BF16_SELECT"); // "fp32": the fp32 selection on the fp32 q / k
    select_fn = sel && !strcmp(sel, "fp32") ? f->attention_select : bf16_attention_select;
    // attention_decode (inference) stays fp32
    const char *m = getenv("MSLAB_BF16_GEMM");
    fast_gemm = m && !strcmp(m, "fast");
    const char *c = getenv("MSLAB_BF16_CACHE"), *z = getenv("MSLAB_BF16_LAZY");
    cache_on = !(c && !strcmp(c, "0"));
    lazy_on = !(z && !strcmp(z, "0"));
    // every op through the state (the attention ops: the adapters above)
    Backend *b = &bf16_table;
    b->alloc = w_alloc, b->free = w_free, b->upload = w_upload, b->download = w_download;
    b->zero = w_zero, b->copy = w_copy, b->add = w_add, b->scale = w_scale, b->sumsq = w_sumsq;
    b->embedding_fwd = w_embedding_fwd, b->embedding_bwd = w_embedding_bwd;
    b->rmsnorm_fwd = w_rmsnorm_fwd, b->rmsnorm_bwd = w_rmsnorm_bwd;
    b->rope_fwd = w_rope_fwd, b->rope_bwd = w_rope_bwd;
    b->attention_fwd = w_attention_fwd, b->attention_bwd = w_attention_bwd;
    b->sparse_attention_fwd = w_sparse_fwd, b->sparse_attention_bwd = w_sparse_bwd;
    b->attention_select = select_fn ? w_select : NULL;
    b->swiglu_fwd = w_swiglu_fwd, b->swiglu_bwd = w_swiglu_bwd;
    b->crossentropy_fwd = w_ce_fwd, b->crossentropy_bwd = w_ce_bwd;
    b->adamw = w_adamw;
    b->attention_decode = f->attention_decode ? w_decode : NULL;
    bf16_ready = 1;
    return &bf16_table;
}

extern "C" void backend_cuda_bf16_fast_gemm(int on) { fast_gemm = on != 0; }

extern "C" void backend_cuda_bf16_forget(void) {
    flush_zeros();
    for (int i = 0; i < n_shadows; i++) shadows[i].valid = 0;
}

extern "C" void backend_cuda_bf16_set_state(int cache, int lazy) {
    flush_zeros();
    while (n_shadows) drop_shadow(n_shadows - 1);
    cache_on = cache != 0, lazy_on = lazy != 0;
}

extern "C" size_t backend_cuda_bf16_shadow_bytes(void) { return shadow_bytes; }

extern "C" int backend_cuda_bf16_fallbacks(void) { return n_fallbacks; }
