// attn_mode.cu: the bf16 attention kernels' process-wide modes (attn_bf16.h): the backward's
// accumulation mode, and which kernel family runs a call (Hopper wgmma where it can, else mma.sync).
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "attn_bf16.h"
}

static int mode = -1; // -1: not read from the environment yet

extern "C" int attn_bf16_deterministic(void) {
    if (mode < 0) {
        const char *e = getenv("MSLAB_DETERMINISTIC");
        mode = !(e && !strcmp(e, "0"));
    }
    return mode;
}

extern "C" int attn_bf16_set_deterministic(int on) {
    int old = attn_bf16_deterministic();
    mode = on ? 1 : 0;
    return old;
}

// MSLAB_FLASH_WGMMA=0 keeps the mma.sync kernels (for comparisons). The wgmma and mma.sync kernels
// share their contract (attn_bf16.h), so a wgmma forward may pair with an mma.sync backward when
// only one of them handles a shape.
static int use_wgmma(void) {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("MSLAB_FLASH_WGMMA");
        on = !(e && !strcmp(e, "0"));
    }
    return on;
}

extern "C" int attn_bf16_dense_fwd(uint16_t *out, float *lse, const uint16_t *q, const uint16_t *k,
                                   const uint16_t *v, int B, int T, int H, int KVH, int D) {
    if (use_wgmma() && flash_wgmma_fwd(out, lse, q, k, v, B, T, H, KVH, D) == 0) return 0;
    return flash_bf16_fwd(out, lse, q, k, v, B, T, H, KVH, D);
}

extern "C" int attn_bf16_dense_bwd(uint16_t *dq, uint16_t *dk, uint16_t *dv, const uint16_t *dout,
                                   const uint16_t *out, const float *lse, const uint16_t *q,
                                   const uint16_t *k, const uint16_t *v, int B, int T, int H,
                                   int KVH, int D) {
    if (use_wgmma() && flash_wgmma_bwd(dq, dk, dv, dout, out, lse, q, k, v, B, T, H, KVH, D) == 0)
        return 0;
    return flash_bf16_bwd(dq, dk, dv, dout, out, lse, q, k, v, B, T, H, KVH, D);
}

extern "C" int attn_bf16_sparse_fwd(uint16_t *out, float *lse, const uint16_t *q,
                                    const uint16_t *k, const uint16_t *v, const AttnIndex *ix,
                                    int B, int T, int H, int KVH, int D) {
    if (use_wgmma() && sparse_wgmma_fwd(out, lse, q, k, v, ix, B, T, H, KVH, D) == 0) return 0;
    return sparse_bf16_fwd(out, lse, q, k, v, ix, B, T, H, KVH, D);
}

extern "C" int attn_bf16_sparse_bwd(uint16_t *dq, uint16_t *dk, uint16_t *dv,
                                    const uint16_t *dout, const uint16_t *out, const float *lse,
                                    const uint16_t *q, const uint16_t *k, const uint16_t *v,
                                    const AttnIndex *ix, int B, int T, int H, int KVH, int D) {
    if (use_wgmma() &&
        sparse_wgmma_bwd(dq, dk, dv, dout, out, lse, q, k, v, ix, B, T, H, KVH, D) == 0)
        return 0;
    return sparse_bf16_bwd(dq, dk, dv, dout, out, lse, q, k, v, ix, B, T, H, KVH, D);
}
