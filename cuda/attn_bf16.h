// attn_bf16.h: the bf16 attention kernels (tensor cores: mma.sync m16n8k16 everywhere, Hopper's
// wgmma on sm_90; fp32 accumulation), callable from C. Storage bf16 (uint16_t bits, see bf16.h); softmax statistics fp32.
//
// Shapes as ops.h's attention ops: q, out, dout, dq: [B, T, H, D]; k, v, dk, dv: [B, T, KVH, D],
// H % KVH == 0, query head h reads kv head h / (H / KVH); lse: [B, H, T] fp32, the natural-log
// sum of exp(s) over the keys a row sees, s = q.k / sqrt(D) (the fp32 ops' convention, so a bf16
// forward's lse can be checked against the CPU reference).
//
// Unlike the Backend ops, these kernels OVERWRITE their gradients (dq, dk, dv), like PyTorch's;
// the bf16 backend's adapters (cuda/backend_bf16.cu) add them into the fp32 gradients.
// Deterministic by default: two calls give identical bits (see attn_bf16_set_deterministic).
//
// Each returns 0 when it launched, or -1 having launched nothing when the shape is one it does not
// handle (e.g. a head dim other than 64 / 128); the caller then uses the fp32 kernels.
// All work goes to the default stream; pointers are device memory.
#ifndef MSLAB_ATTN_BF16_H
#define MSLAB_ATTN_BF16_H

#include <stdint.h>

#include "../core/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

// ---- backward accumulation mode (cuda/attn_mode.cu) ----
// 1 (the default): deterministic: every gradient element is summed in an order fixed by the
// inputs (no floating-point atomics, or partials added in a fixed order behind counters), so two
// calls give identical bits. 0: gradients that several CTAs contribute to may be summed with fp32
// atomics (FlashAttention-2's choice): faster, equal up to rounding, not bitwise repeatable.
// Process-wide. MSLAB_DETERMINISTIC=0 in the environment makes 0 the starting value.
// set returns the previous value.
int attn_bf16_set_deterministic(int on);
int attn_bf16_deterministic(void);
// The deterministic mode's fixed order is kept by bounded waits for each add's turn (cuda/
// ord_watch.cuh); a wait that times out (~1 s: a broken launch-order assumption) breaks it, and
// that call's dq / dk / dv may be wrong. The kernels flag it in pinned host memory; this reads
// the flags (no synchronisation: kernels still running report at a later check), warns on stderr
// naming the kernel family, clears them and returns their bits (0: none). It runs at each
// attn_bf16_*_bwd entry and at the backends' downloads. attn_bf16_ord_timeouts: the events so
// far, and in *fams (if not NULL) the families (bits 1 << ATTN_ORD_*) seen since the last call
// that asked (cleared).
enum {
    ATTN_ORD_DENSE_WG,    // flash_wgmma_bwd's ordered dQ (the dense fused kernel, DET 1 / 2)
    ATTN_ORD_KEYS,        // the keys backward's dK / dV chains (sparse_wgmma_keys.cu)
    ATTN_ORD_SQ,          // sq_fused_kernel's regions (sparse_wgmma_small.cu)
    ATTN_ORD_SPARSE_BF16, // sparse_bf16_bwd's regions
    ATTN_ORD_DENSE_BF16,  // flash_bf16_bwd's dQ tiles
    ATTN_ORD_NFAM
};
int attn_bf16_ord_check(void);
long attn_bf16_ord_timeouts(int *fams);
// tests: the waits' bound in cycles (0: each family's default) and stall (1: the ordered counters
// start where no turn ever comes, so that every chain's first wait times out)
void attn_bf16_ord_test(long long tmo, int stall);

// ---- dense causal attention (cuda/flash_bf16.cu) ----
int flash_bf16_fwd(uint16_t *out, float *lse, const uint16_t *q, const uint16_t *k,
                   const uint16_t *v, int B, int T, int H, int KVH, int D);
int flash_bf16_bwd(uint16_t *dq, uint16_t *dk, uint16_t *dv, const uint16_t *dout,
                   const uint16_t *out, const float *lse, const uint16_t *q, const uint16_t *k,
                   const uint16_t *v, int B, int T, int H, int KVH, int D);

// ---- dense causal attention on Hopper's wgmma (cuda/flash_wgmma.cu, built for sm_90a) ----
// The same contract as flash_bf16_fwd / _bwd; -1 (nothing launched) on other GPUs and shapes.
int flash_wgmma_fwd(uint16_t *out, float *lse, const uint16_t *q, const uint16_t *k,
                    const uint16_t *v, int B, int T, int H, int KVH, int D);
int flash_wgmma_bwd(uint16_t *dq, uint16_t *dk, uint16_t *dv, const uint16_t *dout,
                    const uint16_t *out, const float *lse, const uint16_t *q, const uint16_t *k,
                    const uint16_t *v, int B, int T, int H, int KVH, int D);

// ---- block-sparse causal attention over an index list on Hopper's wgmma (forward in
// cuda/flash_wgmma.cu, backward in cuda/flash_wgmma_bwd.cu; sm_90a) ----
// The contract of sparse_bf16_fwd / _bwd below; -1 (nothing launched) on other GPUs and for the
// lists and shapes they do not handle (then sparse_bf16_* runs the call).
int sparse_wgmma_fwd(uint16_t *out, float *lse, const uint16_t *q, const uint16_t *k,
                     const uint16_t *v, const AttnIndex *ix, int B, int T, int H, int KVH, int D);
int sparse_wgmma_bwd(uint16_t *dq, uint16_t *dk, uint16_t *dv, const uint16_t *dout,
                     const uint16_t *out, const float *lse, const uint16_t *q, const uint16_t *k,
                     const uint16_t *v, const AttnIndex *ix, int B, int T, int H, int KVH, int D);

// ---- block-sparse causal attention over an index list (cuda/sparse_bf16.cu) ----
// Which keys each row sees: ix exactly as ops.h's sparse_attention_fwd/bwd (AttnIndex; positions
// inside when ix->kpos != NULL, if supported, else -1).
int sparse_bf16_fwd(uint16_t *out, float *lse, const uint16_t *q, const uint16_t *k,
                    const uint16_t *v, const AttnIndex *ix, int B, int T, int H, int KVH, int D);
int sparse_bf16_bwd(uint16_t *dq, uint16_t *dk, uint16_t *dv, const uint16_t *dout,
                    const uint16_t *out, const float *lse, const uint16_t *q, const uint16_t *k,
                    const uint16_t *v, const AttnIndex *ix, int B, int T, int H, int KVH, int D);

// The selection from bf16 q / k: fills ix as Backend.attention_select does from fp32 q / k (the
// same list as the fp32 op on the bf16-rounded inputs converted to fp32).
int select_bf16(AttnIndex *ix, const struct AttnConfig *cfg, const uint16_t *q, const uint16_t *k,
                int B, int T, int H, int KVH, int D);

// ---- the default kernel of each call (cuda/attn_mode.cu) ----
// The wgmma kernels where they run (H100 / H200 and the shapes / lists they handle), else the
// mma.sync ones; MSLAB_FLASH_WGMMA=0 in the environment keeps the mma.sync ones. Same contract and
// return value as the kernels. The bf16 backend and the benchmark call these.
int attn_bf16_dense_fwd(uint16_t *out, float *lse, const uint16_t *q, const uint16_t *k,
                        const uint16_t *v, int B, int T, int H, int KVH, int D);
int attn_bf16_dense_bwd(uint16_t *dq, uint16_t *dk, uint16_t *dv, const uint16_t *dout,
                        const uint16_t *out, const float *lse, const uint16_t *q, const uint16_t *k,
                        const uint16_t *v, int B, int T, int H, int KVH, int D);
int attn_bf16_sparse_fwd(uint16_t *out, float *lse, const uint16_t *q, const uint16_t *k,
                         const uint16_t *v, const AttnIndex *ix, int B, int T, int H, int KVH,
                         int D);
int attn_bf16_sparse_bwd(uint16_t *dq, uint16_t *dk, uint16_t *dv, const uint16_t *dout,
                         const uint16_t *out, const float *lse, const uint16_t *q,
                         const uint16_t *k, const uint16_t *v, const AttnIndex *ix, int B, int T,
                         int H, int KVH, int D);

#ifdef __cplusplus
}
#endif

#endif
