// select_blocks.cu: select_bf16's fast path for ms plans with merge = 1 and few regions (the
// MoBA-style block selection, bench row `moba-blk`: w 128, merge 1, prefix 0, top nb / 16 + 1):
// every query region is its own group, so the list of block c is the top S of c's scores against
// the strictly earlier key regions (lg = 1) plus its local region(s), and there are only N x N / 2
// scores per head (32K: 256 regions; 128K: 1024).
//
// The general path (select_bf16.cu, fx_select) is built for w 16 / merge 128: one work item is 64
// members of one group, so with merge = 1 each item carried 1 real member in a 64-row tile and
// the per-item cost (pooling, 2 barriers per 32-dim chunk, sketch compaction, sorts) was paid N x
// B x H times. ncu (s5 r2, H200, B=1 H=KVH=32 D=128, moba-blk): fx_select 2.56 ms at 32K; 128K
// in 4 batches of 5.07 ms (21.2 ms per call).
//
// Here: (1) sel_pool (select_common.cuh): pooled q and k per region in double ([B, heads, N, D]:
// the sum in token order over the region's rows, then / rows, as the CPU's pool_rows). (2)
// sb_select, one CTA per (b, h, 16 consecutive query regions), costliest tiles first: the 16 x e
// scores in double, kbar chunks of 128 keys x 32 dims through registers (one chunk ahead) into
// smem, on the fp64 tensor cores
// (default: mma m8n8k4 as fx_select, each warp 16 rows x 16 keys, the products added in dimension
// order: the same arithmetic, so the same scores as the fused path; exact bf16 products make it
// the CPU's `s += a[d] * b[d]`) or on the FMA units (MSLAB_SELECT_BLOCKS=1: dmul then dadd, the
// CPU's rounding even for an inexact product); kept in smem as order-preserving 64-bit keys
// (select_common.cuh's fs_key); then a warp per row: radix select of the top S (8-bit digits from
// the first digit where the row's keys differ, stops when the boundary digit holds exactly the
// remaining count; exact ties at the boundary go to the lower ids by an ordered scan), a warp
// bitonic sort of the S winners (key desc, id asc, NaN last: the CPU's cand_cmp), the list (top
// S, then the local regions, -1 padding) and kpos / qpos as fs_merge writes them. Dense blocks
// (prefix, tail = dense) get the dense list. Limits: merge 1, N <= 1024 (scores of 16 rows in
// smem), S <= 256, D a multiple of 32 up to 256; otherwise select_bf16's other paths run.
// Measured (s5 r2 / r3, same shape; both score variants' lists equal the CPU's at 1K-64K incl.
// ties, all-equal keys, prefix, lg 2, tail dense, B 2, D 64): select_bf16 at 32K 0.23 ms (FMA
// variant 0.26; fused 2.82), at 128K 1.36 ms (FMA 1.64; fused 21.2). ncu: the pooling (q and k)
// 0.150 / 0.558 ms at 32K / 128K (the 0.5 / 2.1 GB of q and k at ~3.5-3.8 TB/s: the floor of
// any exact pooling); sb_select 0.069 / 0.782 ms (FMA 0.098 / 1.071), of which the scores alone
// (MSLAB_SELECT_BLOCKS_NOSEL=1, timing only: no lists) 0.031 / 0.342 (FMA 0.055 / 0.603).
// Left: the per-row selection, ~0.44 ms at 128K (~25K cycles a row, 1 CTA per SM: scores in
// smem 128 KB): radix passes with match_any aggregation; a threshold from chunk maxima and a
// sort of the survivors would skip them.
// MSLAB_SELECT_BLOCKS=0 turns this path off (the fused path runs, as before).
#include <cuda_bf16.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_common.cuh"
#include "select_common.cuh"
extern "C" {
#include "../core/attention.h"
#include "attn_bf16.h"
}

#define SB_NT 256
#define SB_R 16      // query regions (rows) per CTA: 4 row groups of 4
#define SB_KT 128    // key regions per tile: 2 key groups of 64
#define SB_DC 32     // dims per kbar chunk in smem
#define SB_KLD 33    // kbar chunk row stride (doubles): odd, conflict-free column reads
#define SB_NMAX 1024 // regions: the 16 score rows in smem (128 KB at 1024)
#define SB_SMAX 256  // selected per row: per-warp sort buffers of P = pow2 >= S

struct SbArgs {
    int *idx, *kpos, *qpos;
    const double *qbar, *kbar; // [B, H, N, D], [B, KVH, N, D]
    int B, H, KVH, D, N, w, S, W, nblk, first, last_dense, lg, P;
    int nosel; // timing only (MSLAB_SELECT_BLOCKS_NOSEL=1): scores, then no lists
};

// eligible key regions of query region c (attn_ms_eligible with merge 1)
__device__ __forceinline__ int sb_elig(const SbArgs &a, int c) { return max(0, c - (a.lg - 1)); }
__device__ __forceinline__ bool sb_dense(const SbArgs &a, int c) {
    return c < a.first || (c == a.nblk - 1 && a.last_dense);
}

// MMA: scores on the fp64 tensor cores (m8n8k4, as fx_select: each warp 16 rows x 16 keys) with
// pooled q rows padded to 4 mod 16 doubles and kbar rows of 36 (conflict-free fragments), and
// each row swept with 4 keys per lane in flight; else on the FMA units as the CPU (dmul, dadd)
template <bool MMA> __global__ void __launch_bounds__(SB_NT) sb_select(SbArgs a) {
    constexpr int KLD = MMA ? 36 : SB_KLD, U = MMA ? 4 : 1; // U: keys per lane per sweep step
    const int qld = MMA ? a.D + 4 : a.D;
    extern __shared__ double sb_sm[];
    unsigned long long *sc = (unsigned long long *)sb_sm; // [R][N] score keys
    double *qs = sb_sm + (size_t)SB_R * a.N;                // [R][qld]
    double *ks = qs + SB_R * qld;                           // [KT][KLD]
    unsigned long long *bk = (unsigned long long *)(ks + SB_KT * KLD); // [8][P]
    int *bi = (int *)(bk + 8 * a.P);                        // [8][P]
    int *hist = bi + 8 * a.P;                               // [8][256]
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    int b = blockIdx.y / a.H, h = blockIdx.y % a.H;
    int c0 = (gridDim.x - 1 - blockIdx.x) * SB_R; // costliest tiles first
    int rows = min(SB_R, a.nblk - c0), ld = 0;
    for (int r = 0; r < rows; r++)
        if (!sb_dense(a, c0 + r)) ld = max(ld, sb_elig(a, c0 + r));
    if (ld > 0) {
        const double *qb = a.qbar + (((size_t)b * a.H + h) * a.N + c0) * a.D;
        for (int e = tid; e < SB_R * a.D; e += SB_NT)
            qs[e / a.D * qld + e % a.D] = e < rows * a.D ? qb[e] : 0.0;
        const double *kb = a.kbar + ((size_t)b * a.KVH + h / (a.H / a.KVH)) * a.N * a.D;
        int rg = warp & 3, kg = warp >> 2; // rows 4 rg .. 4 rg + 3; keys 64 kg + lane (+ 32)
        int nch = a.D / SB_DC, nstep = (ld + SB_KT - 1) / SB_KT * nch;
        double2 pf[8]; // the next kbar chunk (128 keys x 32 dims) in registers
        auto load = [&](int st) {
            int j0 = st / nch * SB_KT, d0 = st % nch * SB_DC;
#pragma unroll
            for (int x = 0; x < 8; x++) {
                int e2 = tid + SB_NT * x, j = j0 + (e2 >> 4);
                const double *src = kb + (size_t)min(j, ld - 1) * a.D + d0 + 2 * (e2 & 15);
                pf[x] = j < ld ? __ldg((const double2 *)src) : make_double2(0.0, 0.0);
            }
        };
        load(0);
        double acc[4][2]; // FMA: [row 4 rg + i][key 64 kg + lane + 32 x]; MMA: [tile i * 2 + n][x]
        for (int st = 0; st < nstep; st++) {
            int j0 = st / nch * SB_KT, ch = st % nch;
            if (ch == 0)
#pragma unroll
                for (int i = 0; i < 4; i++) acc[i][0] = acc[i][1] = 0.0;
            __syncthreads(); // ks free (and qs written)
#pragma unroll
            for (int x = 0; x < 8; x++) {
                int e2 = tid + SB_NT * x;
                double *dst = ks + (e2 >> 4) * KLD + 2 * (e2 & 15);
                dst[0] = pf[x].x, dst[1] = pf[x].y;
            }
            __syncthreads();
            if (st + 1 < nstep) load(st + 1);
            if constexpr (MMA) {
                int g = lane >> 2, cq = lane & 3;
                const double *qf = qs + g * qld + ch * SB_DC + cq, *kf = ks + (warp * 16 + g) * KLD + cq;
#pragma unroll
                for (int k4 = 0; k4 < SB_DC; k4 += 4) {
                    double af0 = qf[k4], af1 = qf[8 * qld + k4], bf0 = kf[k4], bf1 = kf[8 * KLD + k4];
                    fs_dmma(acc[0], af0, bf0), fs_dmma(acc[1], af0, bf1);
                    fs_dmma(acc[2], af1, bf0), fs_dmma(acc[3], af1, bf1);
                }
                if (ch + 1 < nch) continue;
#pragma unroll
                for (int t = 0; t < 4; t++) {
                    int r = (t >> 1) * 8 + g, c = c0 + r;
                    if (r >= rows || sb_dense(a, c)) continue;
                    int e = sb_elig(a, c);
#pragma unroll
                    for (int x = 0; x < 2; x++) {
                        int j = j0 + warp * 16 + (t & 1) * 8 + 2 * cq + x;
                        if (j < e) sc[(size_t)r * a.N + j] = fs_key(acc[t][x]);
                    }
                }
                continue;
            }
            const double *k0 = ks + (kg * 64 + lane) * KLD, *k1 = k0 + 32 * KLD;
            const double *q0 = qs + rg * 4 * a.D + ch * SB_DC;
#pragma unroll 8
            for (int dd = 0; dd < SB_DC; dd++) {
                double x0 = k0[dd], x1 = k1[dd];
#pragma unroll
                for (int i = 0; i < 4; i++) { // the CPU's s += a * b: product rounded, then sum
                    double qv = q0[i * a.D + dd];
                    acc[i][0] = __dadd_rn(acc[i][0], __dmul_rn(qv, x0));
                    acc[i][1] = __dadd_rn(acc[i][1], __dmul_rn(qv, x1));
                }
            }
            if (ch + 1 < nch) continue;
#pragma unroll
            for (int i = 0; i < 4; i++) {
                int r = rg * 4 + i, c = c0 + r;
                if (r >= rows || sb_dense(a, c)) continue;
                int e = sb_elig(a, c);
#pragma unroll
                for (int x = 0; x < 2; x++) {
                    int j = j0 + kg * 64 + lane + 32 * x;
                    if (j < e) sc[(size_t)r * a.N + j] = fs_key(acc[i][x]);
                }
            }
        }
    }
    __syncthreads();
    if (a.nosel) return;
    // a warp per row: top S, sorted; then the list
    unsigned long long *wk = bk + warp * a.P;
    int *wi = bi + warp * a.P, *wh = hist + warp * 256;
    unsigned lt = (1u << lane) - 1;
    for (int r = warp; r < rows; r += SB_NT / 32) {
        int c = c0 + r;
        size_t li = ((size_t)b * a.H + h) * a.nblk + c, lo = li * a.W;
        int *list = a.idx + lo;
        if (sb_dense(a, c)) { // every region up to its own
            for (int s = lane; s < a.W; s += 32) {
                list[s] = s <= c ? s : -1;
                if (a.kpos) a.kpos[lo + s] = s <= c ? s * a.w : 0;
            }
            if (a.kpos && lane == 0) a.qpos[li] = c * a.w;
            continue;
        }
        int e = sb_elig(a, c), n = min(a.S, e);
        const unsigned long long *row = sc + (size_t)r * a.N;
        if (n > 0) {
            unsigned long long prefix = 0, mask = 0;
            int need = n;
            bool allin = true; // e <= S: every candidate is in
            if (e > n) {
                allin = false;
                // the bits every key shares: the digits above the first differing one are known
                unsigned long long o = 0, an = ~0ull;
                for (int j = lane; j < e; j += 32) o |= row[j], an &= row[j];
                o = (unsigned long long)__reduce_or_sync(0xffffffffu, (unsigned)(o >> 32)) << 32 |
                    __reduce_or_sync(0xffffffffu, (unsigned)o);
                an = (unsigned long long)__reduce_and_sync(0xffffffffu, (unsigned)(an >> 32)) << 32 |
                     __reduce_and_sync(0xffffffffu, (unsigned)an);
                int shift0 = -8; // all keys equal: no digit to resolve, exact ties only
                if (o != an) shift0 = (63 - __clzll((long long)(o ^ an))) / 8 * 8;
                mask = shift0 == 56 ? 0ull : ~0ull << (shift0 + 8), prefix = an & mask;
                for (int shift = shift0; shift >= 0; shift -= 8) {
                    for (int x = lane; x < 256; x += 32) wh[x] = 0;
                    __syncwarp();
                    for (int j0 = 0; j0 < e; j0 += 32 * U) { // warp-aggregated: bins few and hot
                        unsigned long long uu[U];
#pragma unroll
                        for (int x = 0; x < U; x++) { // the loads first (ahead of the atomics)
                            int j = j0 + 32 * x + lane;
                            uu[x] = j < e ? row[j] : 0;
                        }
#pragma unroll
                        for (int x = 0; x < U; x++) {
                            int j = j0 + 32 * x + lane;
                            unsigned long long u = uu[x];
                            bool in = j < e && (u & mask) == prefix;
                            unsigned act = __ballot_sync(0xffffffffu, in);
                            if (in) {
                                int bin = (int)(u >> shift) & 255;
                                unsigned same = __match_any_sync(act, bin);
                                if (lane == __ffs(same) - 1) atomicAdd(&wh[bin], __popc(same));
                            }
                        }
                    }
                    __syncwarp();
                    int above, bsel = sel_find(wh, need, &above);
                    int inbin = wh[bsel];
                    need -= above;
                    prefix |= (unsigned long long)bsel << shift, mask |= 255ull << shift;
                    __syncwarp(); // wh read by every lane before the next pass clears it
                    if (inbin == need) {
                        allin = true;
                        break;
                    }
                }
            }
            // collect in id order: keys above the prefix, and the boundary's (all, or the lowest
            // ids when exact ties straddle the cut)
            int cnt = 0, ties = 0;
            for (int j0 = 0; j0 < e; j0 += 32 * U) {
                unsigned long long uu[U];
#pragma unroll
                for (int x = 0; x < U; x++) {
                    int j = j0 + 32 * x + lane;
                    uu[x] = j < e ? row[j] : 0;
                }
#pragma unroll
                for (int x = 0; x < U; x++) { // in id order
                    int j = j0 + 32 * x + lane;
                    unsigned long long u = uu[x] & mask;
                    bool in = j < e && (allin ? u >= prefix : u > prefix);
                    bool tie = j < e && !allin && u == prefix;
                    unsigned bt = __ballot_sync(0xffffffffu, tie);
                    if (tie && ties + __popc(bt & lt) < need) in = true;
                    ties += __popc(bt);
                    unsigned bin = __ballot_sync(0xffffffffu, in);
                    if (in) {
                        int p = cnt + __popc(bin & lt);
                        wk[p] = uu[x], wi[p] = j;
                    }
                    cnt += __popc(bin);
                }
            }
            sel_warp_sort(wk, wi, n, 32); // key desc, id asc
        }
        int local0 = max(0, c - (a.lg - 1)), ntot = n + c + 1 - local0;
        for (int s = lane; s < a.W; s += 32) {
            list[s] = s < n ? wi[s] : s < ntot ? local0 + (s - n) : -1;
            if (a.kpos) a.kpos[lo + s] = s < ntot ? s * a.w : 0;
        }
        if (a.kpos && lane == 0) a.qpos[li] = (n + c - local0) * a.w;
        __syncwarp(); // wk / wi reused by the warp's next row
    }
}

// MSLAB_SELECT_BLOCKS: 0 off, 1 on with the scores on the FMA units, 2 (the default) on with the
// scores on the fp64 tensor cores (D <= 128; else the FMA units)
static int g_blocks_on = -1, g_blocks_mma = 1;
// test hook: 1 on (default), 0 off, -1 query; returns the previous setting
extern "C" int select_blocks_set(int on) {
    if (g_blocks_on < 0) {
        const char *e = getenv("MSLAB_SELECT_BLOCKS");
        g_blocks_on = !(e && !strcmp(e, "0"));
        g_blocks_mma = !(e && !strcmp(e, "1"));
    }
    int prev = g_blocks_on;
    if (on >= 0) g_blocks_on = on;
    return prev;
}

// ms plans with merge 1 and few regions (the caller has checked pool mean, score dot, select
// region, order rank); -1: not handled here, nothing written
extern "C" int select_blocks(AttnIndex *ix, const AttnConfig *cfg, const uint16_t *q,
                             const uint16_t *k, int B, int T, int H, int KVH, int D) {
    if (!select_blocks_set(-1)) return -1;
    AttnDims d;
    if (attn_dims(cfg, T, &d)) return -1;
    if (d.M != 1 || d.N > SB_NMAX || d.S < 0 || d.S > SB_SMAX || D % SB_DC || D > 256 ||
        (size_t)B * H > 65535 || ix->nblk != d.nblk || ix->width != d.width || d.nblk != d.N)
        return -1;
    int N = d.N, P = 32;
    while (P < d.S) P <<= 1;
    size_t nq = (size_t)B * H * N * D, nk = (size_t)B * KVH * N * D;
    size_t o_k = align256(nq * 8);
    char *scr = (char *)cuda_scratch(SCRATCH_SPARSE_BF16, o_k + nk * 8);
    SbArgs a;
    memset(&a, 0, sizeof a);
    a.idx = ix->idx, a.kpos = ix->kpos, a.qpos = ix->qpos;
    a.qbar = (const double *)scr, a.kbar = (const double *)(scr + o_k);
    a.B = B, a.H = H, a.KVH = KVH, a.D = D, a.N = N, a.w = cfg->w, a.S = d.S, a.W = d.width;
    a.nblk = d.nblk, a.first = d.first, a.last_dense = d.last_dense, a.lg = d.lg, a.P = P;
    sel_pool<<<grid_for(nq / 2, 256), 256>>>((double *)scr, q, B, T, H, D, cfg->w, N);
    cudaLaunchCheck();
    sel_pool<<<grid_for(nk / 2, 256), 256>>>((double *)(scr + o_k), k, B, T, KVH, D, cfg->w, N);
    cudaLaunchCheck();
    bool mma = g_blocks_mma && D <= 128;
    static int nosel = -1;
    if (nosel < 0) nosel = getenv("MSLAB_SELECT_BLOCKS_NOSEL") ? 1 : 0;
    a.nosel = nosel;
    size_t smem = (size_t)SB_R * N * 8 + (size_t)SB_R * (mma ? D + 4 : D) * 8 +
                  (size_t)SB_KT * (mma ? 36 : SB_KLD) * 8 + (size_t)8 * P * 12 + 8 * 256 * 4;
    static bool attr = false;
    if (!attr) {
        int tail = 8 * SB_SMAX * 12 + 8 * 256 * 4;
        cudaCheck(cudaFuncSetAttribute(sb_select<false>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       SB_R * SB_NMAX * 8 + SB_R * 256 * 8 + SB_KT * SB_KLD * 8 + tail));
        cudaCheck(cudaFuncSetAttribute(sb_select<true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       SB_R * SB_NMAX * 8 + SB_R * 132 * 8 + SB_KT * 36 * 8 + tail));
        attr = true;
    }
    dim3 grid((unsigned)((d.nblk + SB_R - 1) / SB_R), (unsigned)(B * H));
    if (mma) sb_select<true><<<grid, SB_NT, smem>>>(a);
    else sb_select<false><<<grid, SB_NT, smem>>>(a);
    cudaLaunchCheck();
    return 0;
}
