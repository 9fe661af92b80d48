// bf16.h: bfloat16 storage for the CUDA side, seen from C (raw bits in a uint16_t) and CUDA.
//
// The device kernels use __nv_bfloat16; C code (tests, benchmarks, the CLI) holds the same bits as
// uint16_t. Rounding is round-to-nearest-even everywhere (the host helpers below match
// __float2bfloat16_rn bit for bit, NaN kept quiet), so a CPU reference can round its inputs
// exactly as the GPU stored them.
#ifndef MSLAB_BF16_H
#define MSLAB_BF16_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---- device conversions (default stream, asynchronous like every backend op) ----
void cuda_f32_to_bf16(uint16_t *dst, const float *src, size_t n);   // dst = rn(src)
void cuda_bf16_to_f32(float *dst, const uint16_t *src, size_t n);   // dst = src (exact)
void cuda_bf16_add_to_f32(float *dst, const uint16_t *src, size_t n); // dst += src
// rows of rl elements: src rows sld apart -> dst rows dld apart
void cuda_bf16_copy2d(uint16_t *dst, size_t dld, const uint16_t *src, size_t sld, size_t rl,
                      size_t rows);

// An input of the bf16 table's ops that read their operands rounded to bf16 (swiglu, rope_fwd,
// cross-entropy; backend_bf16.cu "Rounding readers"): b (not NULL) holds the array's bf16 value and is
// read instead of f; else f is read, rounded to bf16 (rn) when rnd (the fp32 table: rnd 0).
typedef struct {
    const float *f;
    const uint16_t *b;
    int rnd;
} BfIn;

// ---- fused variants of fp32 ops for the bf16 table (cuda/backend_bf16.cu) ----
// Each is its fp32 op (cuda_common.cuh) plus: a bf16 pointer (ob, dgb, ...; NULL: none) that
// receives the bf16 rounding of the op's final fp32 output, bit for bit what cuda_f32_to_bf16 of
// that output gives; the fp32 output pointer may be NULL when the bf16 one is not (the table
// keeps the array in bf16 only); and for backward ops acc: 1 = ops.h's +=, 0 = overwrite (the
// table passes 0 only for a gradient it knows is zero, which skips reading it; the same result).
// swiglu: the inputs as BfIn (the bf16 table reads them rounded)
void cuda_swiglu_fwd_x(float *out, uint16_t *ob, BfIn gate, BfIn up, size_t n);
// (rl > 0: dgb / dub's rows of rl elements lie ld apart)
void cuda_swiglu_bwd_x(float *dgate, float *dup, uint16_t *dgb, uint16_t *dub, size_t rl, size_t ld,
                       int acc, BfIn dout, BfIn gate, BfIn up, size_t n);
// cross-entropy: the logits as BfIn; dlogits NULL only where cuda_crossentropy_regs(logits, V)
// (the register path)
void cuda_crossentropy_fwd_x(float *losses, BfIn logits, const int *targets, int N, int V);
void cuda_crossentropy_bwd_x(float *dlogits, uint16_t *db, int acc, BfIn logits,
                             const int *targets, float dloss, int N, int V);
int cuda_crossentropy_regs(BfIn logits, int V);
// the forward and, in the same pass, the backward's gradient for dloss (acc = 0) into db
// (bf16 only); only where cuda_crossentropy_regs(logits, V)
void cuda_crossentropy_fwd_grad(float *losses, uint16_t *db, BfIn logits, const int *targets,
                                float dloss, int N, int V);
// res (NULL: none): the input is inp + res (as cuda_add), also written to sum
void cuda_rmsnorm_fwd_x(float *out, uint16_t *ob, float *rstd, const float *inp, const float *res,
                        float *sum, const float *w, int N, int C, float eps);
// dw_acc = 0: dw is known zero, overwritten (acc: the same for dinp)
void cuda_rmsnorm_bwd_x(float *dinp, uint16_t *db, int acc, float *dw, int dw_acc,
                        const float *dout, const float *inp, const float *w, const float *rstd,
                        int N, int C);
void cuda_rope_fwd_x(float *out, uint16_t *ob, BfIn inp, const float *pos, const float *inv_freq,
                     int N, int H, int D, int style);
// dout_b: the gradient in bf16 instead of dout (NULL: dout); ldb > 0: db's token rows (H D
// elements) lie ldb apart
void cuda_rope_bwd_x(float *dinp, uint16_t *db, size_t ldb, int acc, const float *dout,
                     const uint16_t *dout_b, const float *pos, const float *inv_freq, int N, int H,
                     int D, int style);

// AdamW (cuda_adamw) reading the gradient times gs (the bits cuda_scale(g, gs) would leave), with
// the bf16 rounding of the new parameters p[off[i] .. off[i] + len[i]) into b[i] (sg NULL: none;
// ranges disjoint)
#define ADAM_SEGS 16
typedef struct {
    int n;
    size_t off[ADAM_SEGS], len[ADAM_SEGS];
    uint16_t *b[ADAM_SEGS];
} AdamSegs;
void cuda_adamw_x(float *p, const AdamSegs *sg, const float *g, float gs, float *m, float *v,
                  size_t n, float lr, float b1, float b2, float eps, float wd, int t);
// ---- the bf16 table's memory state (cuda/backend_bf16.cu, "Conversions") ----
// The table keeps bf16 shadows of the arrays its GEMMs / attention read and defers zero() to the
// next op (and, with acts, add() and some outputs kept in bf16 only); all of it sees every access
// made through the table. Code that writes or reads the table's device memory any other way (the
// fp32 table, raw CUDA) while the bf16 table is in use calls forget() first.
void backend_cuda_bf16_forget(void);
// Tests: cache = 0 drops the shadows and converts every operand per call; lazy = 0 runs zero() at
// once (both 1 by default; MSLAB_BF16_CACHE=0, MSLAB_BF16_LAZY=0 in the environment).
void backend_cuda_bf16_set_state(int cache, int lazy);
// acts = 1: the table keeps the outputs of rmsnorm_fwd, swiglu_fwd / bwd, rope_fwd / bwd and
// crossentropy_bwd in bf16 only (their value: the bf16 rounding) where a GEMM / the attention read
// the array before
// (backend_bf16.cu, "Activations"; default 1, MSLAB_BF16_ACTS=0 in the environment: 0)
int backend_cuda_bf16_set_acts(int acts); // returns the previous setting
// rnd = 1: swiglu, rope_fwd and the cross-entropy read their inputs rounded to bf16 (backend_bf16.cu,
// "Rounding readers"; MSLAB_BF16_RND in the environment)
int backend_cuda_bf16_set_rnd(int rnd); // returns the previous setting
// on = 1: matmul_bwd calls in a row into the same dinp run as one product (backend_bf16.cu,
// "Grouped products"; MSLAB_BF16_GROUP in the environment)
int backend_cuda_bf16_set_group(int on); // returns the previous setting
size_t backend_cuda_bf16_group_runs(void); // products run as one group of >= 2 calls so far
size_t backend_cuda_bf16_shadow_bytes(void); // device bytes held by shadows
// GEMMs through cuBLASLt, the index-th algorithm of its heuristic list (-1: cublasGemmEx, -2: the
// per-shape choice, the default): the tests' reference (bf16.lt_products) and measurements (bf16.lt)
int backend_cuda_bf16_set_lt(int index);

#ifdef __cplusplus
}
#endif

// ---- host rounding, identical to the device's ----
static inline uint16_t bf16_from_f32(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); // NaN stays NaN
    u += 0x7fffu + ((u >> 16) & 1u); // round to nearest, ties to even
    return (uint16_t)(u >> 16);
}
static inline float bf16_to_f32(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}
static inline float bf16_round(float x) { return bf16_to_f32(bf16_from_f32(x)); }

#endif
