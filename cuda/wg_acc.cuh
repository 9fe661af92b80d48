// wg_acc.cuh: what the wgmma backward's accumulator users share (sparse_wgmma_keys.cu,
// sparse_wgmma_small.cu's small_launch, flash_wgmma_bwd.cu's fused_run): the launch groups'
// memory budget and the accumulators' tensor maps (bulk reduce-adds by the TMA unit).
#ifndef MSLAB_WG_ACC_CUH
#define MSLAB_WG_ACC_CUH
#include <stdlib.h>

#include "flash_wgmma.cuh" // encode_fn

// The (b, kv head)s per launch group (their accumulators at perbk bytes each, one launch per
// group; even groups of at most cmax): within max(1/8 of q, k, v, o + grads, 1 GiB)
// (MSLAB_SQ_ACC_MB overrides). MS fwd+bwd peak at 128K (bench probe, s6, H = KVH = 32, D 128):
// 12.32e9 B (1.43x the 8 GiB) with max(3/8, 2 GiB), 11.25e9 (1.31x) with this, times equal (253.5
// vs 255.0 ms); 10.09e9 (1.17x) once the backward's workspace shared the selection's scratch.
// (one (b, kv head) over the budget still gets a group of one: the caller may decline first, as
// sparse_wgmma_keys.cu's ordered mode does against wg_acc_budget, the default budget without the
// override)
static inline size_t wg_acc_budget(int B, int T, int H, int KVH, int D) {
    size_t io = 8 * (size_t)B * T * D * (H + KVH);
    return io / 8 > (1ull << 30) ? io / 8 : 1ull << 30;
}
static inline size_t wg_acc_group(int B, int T, int H, int KVH, int D, size_t perbk, size_t cmax) {
    size_t nbk = (size_t)B * KVH;
    const char *e = getenv("MSLAB_SQ_ACC_MB");
    size_t budget = e ? (size_t)(atof(e) * 1048576.0) : wg_acc_budget(B, T, H, KVH, D);
    size_t c = budget / perbk;
    c = c < 1 ? 1 : c > cmax ? cmax : c;
    size_t nch = (nbk + c - 1) / c;
    return (nbk + nch - 1) / nch;
}

// A rank-r tensor map over p (dims d, byte strides st of dims 1 .. r - 1, box bx; element strides
// 1, 128-byte swizzle, 256-byte L2 promotion, no OOB fill); false where the driver refuses it
static inline bool wg_acc_map(CUtensorMap *m, CUtensorMapDataType dt, int r, void *p,
                              const size_t *d, const size_t *st, const int *bx) {
    EncodeTiledFn fn = encode_fn();
    cuuint64_t dims[5], str[4];
    cuuint32_t box[5], el[5] = {1, 1, 1, 1, 1};
    for (int i = 0; i < r; i++) {
        dims[i] = d[i], box[i] = (cuuint32_t)bx[i];
        if (i) str[i - 1] = st[i - 1];
    }
    return fn && fn(m, dt, (cuuint32_t)r, p, dims, str, box, el, CU_TENSOR_MAP_INTERLEAVE_NONE,
                    CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                    CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}
#endif
