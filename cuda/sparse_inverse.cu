// sparse_inverse.cu: the inverse index list (sparse_inverse.cuh).
#include <limits.h>

#include <cub/device/device_scan.cuh>

#include "cuda_common.cuh"
#include "sparse_inverse.cuh"

// count[(b, kvh, r)] = entries that list r (integer atomics: the counts are exact)
__global__ void sb_count_kernel(int *count, const int *idx, int B, int H, int KVH, int nblk,
                                int width, int nreg) {
    size_t n = (size_t)B * H * nblk * width;
    int G = H / KVH;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        int r = idx[i];
        if (r < 0 || r >= nreg) continue;
        size_t l = i / width;
        int h = (int)((l / nblk) % H), b = (int)(l / nblk / H);
        atomicAdd(count + ((size_t)b * KVH + h / G) * nreg + r, 1);
    }
}

// The fill in (head of the group, block) order, cut into chunks of L consecutive lists of a (b, kv
// head) so that chunks run in parallel: per-chunk region counts (integer atomics), each region's
// chunk offsets = its start + the counts of the earlier chunks (one thread per region, chunks in
// order), then each chunk's CTA walks its lists one after another (slots in parallel, a barrier
// between lists) from its own cursors. Same positions as one walk over all the lists.
// cdesc: the lists in (head of the group, block DESCENDING) order (the fused backward's order C)
__global__ void sb_chunk_count(int *ccnt, const int *idx, int H, int KVH, int nblk, int width,
                               int nreg, int L, int nchunk, int cdesc) {
    int ch = blockIdx.x, bk = blockIdx.y, b = bk / KVH, kvh = bk % KVH, G = H / KVH;
    int l0 = ch * L, l1 = min(G * nblk, l0 + L);
    int *cc = ccnt + ((size_t)bk * nchunk + ch) * nreg;
    for (size_t e = threadIdx.x; e < (size_t)(l1 - l0) * width; e += blockDim.x) {
        int l = l0 + (int)(e / width), s = (int)(e % width), hg = l / nblk, c = l % nblk;
        if (cdesc) c = nblk - 1 - c;
        int r = idx[(((size_t)b * H + kvh * G + hg) * nblk + c) * width + s];
        if (r >= 0 && r < nreg) atomicAdd(cc + r, 1);
    }
}
__global__ void sb_chunk_scan(int *ccnt, const int *start, size_t nbkt, int nreg, int nchunk) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < nbkt;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t bk = i / nreg, r = i % nreg;
        int run = start[i];
        for (int ch = 0; ch < nchunk; ch++) {
            int *p = ccnt + (bk * nchunk + ch) * nreg + r;
            int t = *p;
            *p = run;
            run += t;
        }
    }
}
__global__ void sb_chunk_fill(int *inv, int *ccnt, const int *idx, int H, int KVH, int nblk,
                              int width, int nreg, int L, int nchunk) {
    int ch = blockIdx.x, bk = blockIdx.y, b = bk / KVH, kvh = bk % KVH, G = H / KVH;
    int l0 = ch * L, l1 = min(G * nblk, l0 + L);
    int *cur = ccnt + ((size_t)bk * nchunk + ch) * nreg;
    for (int l = l0; l < l1; l++) {
        int hg = l / nblk, c = l % nblk;
        const int *list = idx + (((size_t)b * H + kvh * G + hg) * nblk + c) * width;
        for (int s = threadIdx.x; s < width; s += blockDim.x) {
            int r = list[s];
            if (r >= 0 && r < nreg) inv[cur[r]++] = hg * nblk + c;
        }
        __syncthreads();
    }
}

int sparse_inverse_chunk(const AttnIndex *ix, int B, int H, int KVH, int nreg) {
    int nlists = (H / KVH) * ix->nblk, L = 64;
    while ((size_t)B * KVH * ((nlists + L - 1) / L) * nreg > ((size_t)16 << 20) && L < nlists) L *= 2;
    return L;
}

size_t sparse_inverse_build(SparseInverse *iv, void *scratch, const AttnIndex *ix, int B, int T,
                            int H, int KVH) {
    int nreg = (T + ix->region - 1) / ix->region;
    size_t nbkt = (size_t)B * KVH * nreg, nent = (size_t)B * H * ix->nblk * ix->width;
    MS_ASSERT(nent < (size_t)INT_MAX, "sparse_inverse_build: index list of %zu entries", nent);
    size_t scan_bytes = 0;
    cudaCheck(cub::DeviceScan::ExclusiveSum(NULL, scan_bytes, (const int *)NULL, (int *)NULL,
                                            (int)nbkt));
    int L = sparse_inverse_chunk(ix, B, H, KVH, nreg), nlists = (H / KVH) * ix->nblk;
    int nchunk = (nlists + L - 1) / L;
    size_t nccnt = (size_t)B * KVH * nchunk * nreg;
    size_t o_cnt = 0, o_start = align256(nbkt * 4), o_cur = align256(o_start + nbkt * 4);
    size_t o_inv = align256(o_cur + nccnt * 4), o_tmp = align256(o_inv + nent * 4);
    size_t total = o_tmp + scan_bytes + 256;
    if (!iv) return total;
    char *scr = (char *)scratch;
    int *cnt = (int *)(scr + o_cnt), *start = (int *)(scr + o_start), *cur = (int *)(scr + o_cur);
    int *inv = (int *)(scr + o_inv);
    cudaCheck(cudaMemsetAsync(cnt, 0, nbkt * 4));
    sb_count_kernel<<<grid_for(nent, 256), 256>>>(cnt, ix->idx, B, H, KVH, ix->nblk, ix->width,
                                                  nreg);
    cudaLaunchCheck();
    cudaCheck(cub::DeviceScan::ExclusiveSum(scr + o_tmp, scan_bytes, cnt, start, (int)nbkt));
    cudaCheck(cudaMemsetAsync(cur, 0, nccnt * 4));
    dim3 gch((unsigned)nchunk, (unsigned)(B * KVH));
    sb_chunk_count<<<gch, 256>>>(cur, ix->idx, H, KVH, ix->nblk, ix->width, nreg, L, nchunk, 0);
    cudaLaunchCheck();
    sb_chunk_scan<<<grid_for(nbkt, 256), 256>>>(cur, start, nbkt, nreg, nchunk);
    cudaLaunchCheck();
    sb_chunk_fill<<<gch, 256>>>(inv, cur, ix->idx, H, KVH, ix->nblk, ix->width, nreg, L, nchunk);
    cudaLaunchCheck();
    iv->inv = inv, iv->start = start, iv->count = cnt, iv->nreg = nreg;
    return total;
}
