// sparse_inverse.cuh: the inverse of a block-sparse index list (ops.h AttnIndex): for each
// (b, kv head, region r), the (query head of the group, query block) entries whose lists hold r,
// in ascending (head, block) order, exactly as one serial walk over the lists would place them.
// Key-centric backward kernels (dK / dV: cuda/sparse_bf16.cu, cuda/flash_wgmma_bwd.cu) walk it.
// Built with integer atomics (counts, exact) and CUB's integer scan: deterministic.
#ifndef MSLAB_SPARSE_INVERSE_CUH
#define MSLAB_SPARSE_INVERSE_CUH
#include <stddef.h>

extern "C" {
#include "../core/ops.h"
}

// bucket (b, kvh, r) = (b * KVH + kvh) * nreg + r: its entries are inv[start[bk] .. + count[bk]),
// each entry = hg * nblk + c (hg: head within the kv head's group, c: query block)
typedef struct SparseInverse {
    int *inv, *start, *count;
    int nreg; // regions per sequence: ceil(T / ix->region)
} SparseInverse;

// With iv == NULL: returns the scratch bytes the build needs. Else builds into scratch (device
// memory of at least that size, 256-byte aligned) on the default stream; the arrays point into it.
size_t sparse_inverse_build(SparseInverse *iv, void *scratch, const AttnIndex *ix, int B, int T,
                            int H, int KVH);

// The build's steps, also used by sparse_bf16.cu's ordered fused backward (its own fill):
// count[(b, kvh, r)] += entries that list r
__global__ void sb_count_kernel(int *count, const int *idx, int B, int H, int KVH, int nblk,
                                int width, int nreg);
// per chunk of L lists of a (b, kv head): region counts (cdesc: blocks in descending order)
__global__ void sb_chunk_count(int *ccnt, const int *idx, int H, int KVH, int nblk, int width,
                               int nreg, int L, int nchunk, int cdesc);
// chunk counts -> each chunk's first position per region (start[] + earlier chunks' counts)
__global__ void sb_chunk_scan(int *ccnt, const int *start, size_t nbkt, int nreg, int nchunk);
// the lists' chunk L = 64, doubled until the per-chunk counts stay <= 16M ints
int sparse_inverse_chunk(const AttnIndex *ix, int B, int H, int KVH, int nreg);

#endif
