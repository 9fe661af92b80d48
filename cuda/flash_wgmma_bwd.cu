// flash_wgmma_bwd.cu: the backward of flash_wgmma.cu's dense causal attention on Hopper's wgmma
// (sm_90a; the Makefile builds the flash_wgmma*.cu files for it). Contract: cuda/attn_bf16.h
// (flash_wgmma_bwd = flash_bf16_bwd's); the forward, the tunings and the measured figures are in
// flash_wgmma.cu; building blocks and the host helpers both files share: cuda/flash_wgmma.cuh.
// Backward: Di = rowsum(dO * O) (fp32, wg_bwd_pre); P = 2^(S log2e / sqrt(D) - lse log2e)
//   recomputed; the 1/sqrt(D) of dS applied once, to dK and dQ at the end.
//   Split path (7 products, no atomics; until s8 the ordered mode's default, and D 64's in both
//   modes; now tunings; D 64 tilings run more CTAs per SM (MINB, s7): 1-warpgroup dK/dV at 3,
//   2-warpgroup dQ at 2):
//   dkdv_kernel<D, NWG, ALD, SP>: CTA = (b, kv head, NWG x 64 keys), keys are the M dimension:
//     per 64-query step of each head of the group (fixed order), S^T = K Q^T and dP^T = V dO^T
//     (SS), P^T and dS^T = P^T (dP^T - Di) in registers, dV += P^T dO and dK += dS^T Q (RS,
//     dO / Q MN-major); dK, dV stay in the accumulators and are written once. ALD: lse / Di by
//     cp.async.
//   dq_kernel<D, NWG, SP>: CTA = (b, h, NWG x 64 queries), 64-key tiles up to the diagonal: S, dP =
//     dO V^T (SS), dS, dQ += dS K (RS, K MN-major).
//   Fused (5 products; since s8 the default at D 64 and 128 in both modes, the ordered one with
//   fixed-point dQ adds (s32 bulk adds, DET = 4; s10: PIPE 118, row scales by cp.async and FFMA
//   conversions); D 64: a warpgroup of 64 keys, 2 CTAs per SM; CTAs in groups of 8 heads,
//   fused_hgroup): bwd_fused_kernel, comment there; s8 / s10 figures at WG128_DKDV_DET.
// Block-sparse (sparse_wgmma_bwd, lists of ops.h AttnIndex with regions and query blocks that are
//   multiples of 64): the same split kernels with SP = true: an iteration policy (KvWalk, QWalk)
//   replaces the causal range by the region's inverse list (dK/dV) / the block's list (dQ); the
//   masks are the diagonal's, plus the window; the fused kernel the same way (bwd_fused_kernel
//   <.., SP>; D = 128, regions of 128k keys): the atomic mode with fp32 dQ adds, the ordered
//   mode (the default there since s6) with fixed-point integer dQ adds (DET = 3: any order, the
//   same bits); since s7 in both modes with Q / dO tiles and dK / dV by TMA and the dQ partials
//   as bulk tensor reduce-adds (PIPE 30, at bwd_fused_body). 16 / 32-key regions (s9): the fused
//   kernel with SP = 2 (key lists: a CTA = 128 keys gathered from one query block's list, walking
//   that block's query tiles; host part and figures in sparse_wgmma_keys.cu), the query-centric
//   sq_fused_kernel its fallback (sparse_wgmma_small.cu). Host part and figures
//   at sparse_wgmma_bwd.
// Synchronisation: cp.async writes are generic-proxy writes, wgmma reads through the async
//   proxy: each thread waits its cp.async groups, fence.proxy.async, then __syncthreads; a
//   buffer is overwritten only after every warpgroup's wgmma.wait_group 0 and a barrier. TMA
//   writes and wgmma reads are both async proxy: the mbarriers order them.
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <type_traits>

#include <cuda.h> // CUtensorMap (the encode function comes through cudaGetDriverEntryPoint)

#include "cuda_common.cuh"
#include "flash_wgmma_bwd.cuh"
#include "sparse_inverse.cuh"
#include "wg_acc.cuh"
extern "C" {
#include "attn_bf16.h"
}

// ---------------------------------------------------------------------------------------------
// Iteration policies: the split kernels walk a sequence of entries, each a range of 64-row tiles
// (dK/dV: query tiles of one head; dQ: key tiles). SP = false: the dense causal range; SP = true:
// a block-sparse list (ops.h AttnIndex; regions and query blocks multiples of 64), the tiles cut
// to the rows / keys that can see something (causal, window); masks as at the dense diagonal.
// Empty entries are skipped; the next entry's list value is loaded one entry ahead, so its
// latency hides under a step. Same order every call: deterministic.

// a + b with subnormal inputs and result flushed to zero, as cp.reduce.async.bulk.add.f32 does
__device__ __forceinline__ float add_ftz(float a, float b) {
    float c;
    asm("add.rn.ftz.f32 %0, %1, %2;" : "=f"(c) : "f"(a), "f"(b));
    return c;
}

// The iteration both walks share (W: the walk, which defines enter(v): entry value v -> its tiles
// [t, tb)): entries e = 0 .. n - 1; sparse: the entry values come from lst, read one ahead.
template <bool SP, class W> struct EntryWalk {
    int e, n, t, tb; // entry e of n; its tile t of [.., tb)
    const int *lst;  // sparse: the entries' values
    int nv;          // sparse: the next entry's value
    int rev = 0;     // sparse: lst from its end (the dK/dV walks' latest-block-first order)
    __device__ __forceinline__ void next_entry() {
        while (++e < n) {
            int v = e;
            if (SP) {
                v = nv;
                if (e + 1 < n) nv = __ldg(lst + (rev ? n - 2 - e : e + 1));
            }
            static_cast<W *>(this)->enter(v);
            if (t < tb) return;
        }
    }
    __device__ __forceinline__ void begin() {
        e = -1;
        if (SP && n > 0) nv = __ldg(lst + (rev ? n - 1 : 0));
        next_entry();
    }
    __device__ __forceinline__ void next() {
        if (++t >= tb) next_entry();
    }
    __device__ __forceinline__ bool ok() const { return e < n; }
};

// dK/dV CTA (keys k0 .., kv head kvh): entries = the group's heads, tiles [tlo, tend) (dense), or
// the region's inverse-list entries (lst; head of the group, query block), the block's tiles from
// the CTA's first key on, up to the last row its keys are in the window of (sparse)
template <bool SP> struct KvWalk : EntryWalk<SP, KvWalk<SP>> {
    int hh;                // the entry's query head
    int kvh, G, tlo, tend; // dense
    int nblk, qb, k0, rend;
    __device__ __forceinline__ void enter(int v) {
        if (!SP) {
            hh = kvh * G + v, this->t = tlo, this->tb = tend;
            return;
        }
        int hg = v / nblk, c = v - hg * nblk;
        int rs = max(c * qb, k0), re = min(c * qb + qb, rend);
        hh = kvh * G + hg, this->t = rs >> 6, this->tb = re > rs ? (re + 63) >> 6 : this->t;
    }
};

// dQ CTA (rows q0 .. of a query block): one entry, key tiles [0, tend) (dense), or the block's
// list slots (lst), each region's key tiles cut at the CTA's last row (kend) and the window (klo)
template <bool SP> struct QWalk : EntryWalk<SP, QWalk<SP>> {
    int tend; // dense
    int nreg, R, klo, kend;
    __device__ __forceinline__ void enter(int v) {
        if (!SP) {
            this->t = 0, this->tb = tend;
            return;
        }
        if (v < 0 || v >= nreg) {
            this->t = this->tb = 0;
            return;
        }
        int ks = max(v * R, klo), ke = min(v * R + R, kend);
        this->t = ks >> 6, this->tb = ke > ks ? (ke + 63) >> 6 : this->t;
    }
};

// ---------------------------------------------------------------------------------------------
// dK / dV: CTA = (b, kv head, NWG x 64 keys); warpgroup wg owns keys k0 + 64 wg .. + 63 (its warps
// 16 each, as flash_bwd_dkdv_kernel), walks its (head, 64-query tile) steps (KvWalk: dense = the
// group's heads, tiles from the diagonal on; sparse = the region's inverse list) in a fixed order
// (deterministic). Per step: S^T = K Q^T and dP^T = V dO^T (SS),
// P^T, dS^T = P^T (dP^T - Di) in registers, dV += P^T dO and dK += dS^T Q (RS, dO / Q as MN-major
// operands). dK, dV stay in the accumulators for the whole loop.
// A thread's two key rows (key[r] < T) of dK (x scale) and dV from its accumulators, as bf16
// (the split dK / dV kernel's end, and the fused body's directly written once-listed regions)
template <int DN>
__device__ __forceinline__ void store_dkdv_rows(bf16 *dkb, bf16 *dvb, size_t ldk, const int (&key)[2],
                                                int T, int tq, const float (&dka)[DN][4],
                                                const float (&dva)[DN][4], float scale) {
#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (key[r] >= T) continue;
        size_t off = (size_t)key[r] * ldk + 2 * tq;
#pragma unroll
        for (int n = 0; n < DN; n++) {
            *(uint32_t *)(dkb + off + n * 8) =
                pack_bf16x2(dka[n][2 * r] * scale, dka[n][2 * r + 1] * scale);
            *(uint32_t *)(dvb + off + n * 8) = pack_bf16x2(dva[n][2 * r], dva[n][2 * r + 1]);
        }
    }
}

template <int D, int NWG, int ALD, bool SP>
__device__ __forceinline__ void dkdv_wg_body(bf16 *dk, bf16 *dv, const bf16 *dout,
                                             const float *lse, const float *Di, const bf16 *q,
                                             const bf16 *k, const bf16 *v, int T, int H, int KVH,
                                             float sl2, float scale, const SpArgs &sp) {
    constexpr int NT = 128 * NWG, BKV = 64 * NWG, BQ = 64, DN = D / 8, NN = BQ / 8;
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    bf16 *Ks = (bf16 *)smem_base1k(smem_raw), *Vs = Ks + BKV * D, *Qs = Vs + BKV * D;
    bf16 *dOs = Qs + 2 * BQ * D;
    float *Ls = (float *)(dOs + 2 * BQ * D), *Ds = Ls + 2 * BQ;

    int bh = blockIdx.x, kblk = blockIdx.y;
    if (SP && sp.hmajor) bh = blockIdx.y, kblk = blockIdx.x;
    int b = bh / KVH, kvh = bh % KVH, G = H / KVH;
    int k0 = kblk * BKV;
    size_t ldq = (size_t)H * D, ldk = (size_t)KVH * D;
    const bf16 *kb = k + (size_t)b * T * ldk + (size_t)kvh * D;
    const bf16 *vb = v + (size_t)b * T * ldk + (size_t)kvh * D;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    int wg = warp >> 2, wl = warp & 3;
    int wk0 = k0 + wg * 64;
    int key[2] = {wk0 + wl * 16 + g, wk0 + wl * 16 + g + 8};
    KvWalk<SP> L; // the load cursor, one step ahead of the compute
    L.kvh = kvh, L.G = G;
    if (SP) {
        int bk = (b * KVH + kvh) * sp.nreg + k0 / sp.region;
        L.lst = sp.inv + sp.start[bk], L.n = sp.count[bk], L.rev = sp.desc;
        L.nblk = sp.nblk, L.qb = sp.qblock, L.k0 = k0;
        L.rend = sp.window ? min(T, k0 + BKV - 1 + sp.window) : T;
    } else {
        L.n = G, L.tlo = k0 / BQ, L.tend = (T + BQ - 1) / BQ;
    }
    L.begin();
    int win = SP ? sp.window : 0;

    auto load_step = [&](int hh, int qs, int buf) {
        const bf16 *qb = q + (size_t)b * T * ldq + (size_t)hh * D;
        const bf16 *db = dout + (size_t)b * T * ldq + (size_t)hh * D;
        ptile_load<D, BQ, NT>(Qs + buf * BQ * D, qb, ldq, qs, T);
        ptile_load<D, BQ, NT>(dOs + buf * BQ * D, db, ldq, qs, T);
        if (ALD) { // raw lse by cp.async (no blocking load); rows past T read 0: P = 1 there
                   // (Q rows are 0), but dO rows are 0 too, so P^T dO and dS add nothing
            for (int x = threadIdx.x; x < 2 * BQ; x += NT) {
                int r = x & (BQ - 1), t = qs + r;
                size_t li = ((size_t)b * H + hh) * T + (t < T ? t : 0);
                if (x < BQ) cp_async4(Ls + buf * BQ + r, lse + li, t < T);
                else cp_async4(Ds + buf * BQ + r, Di + li, t < T);
            }
        } else {
            for (int r = threadIdx.x; r < BQ; r += NT) {
                int t = qs + r;
                size_t li = ((size_t)b * H + hh) * T + t;
                Ls[buf * BQ + r] = t < T ? lse[li] * WG_LOG2E : INFINITY; // P = 0 past T
                Ds[buf * BQ + r] = t < T ? Di[li] : 0.f;
            }
        }
    };

    bool more = L.ok();
    int hh = L.hh, qs = L.t * BQ; // the step being computed
    if (more) {
        ptile_load<D, BKV, NT>(Ks, kb, ldk, k0, T);
        ptile_load<D, BKV, NT>(Vs, vb, ldk, k0, T);
        load_step(hh, qs, 0);
        L.next();
    }
    cp_async_commit();

    float dka[DN][4], dva[DN][4];
#pragma unroll
    for (int n = 0; n < DN; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) dka[n][e] = dva[n][e] = 0.f;

    for (int i = 0; more; i++) {
        bool nmore = L.ok();
        int nh = L.hh, nqs = L.t * BQ;
        if (nmore) {
            load_step(nh, nqs, (i + 1) & 1);
            L.next();
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        fence_async_smem();
        __syncthreads();
        int buf = i & 1;
        const bf16 *Qt = Qs + buf * BQ * D, *dOt = dOs + buf * BQ * D;
        const float *Lt = Ls + buf * BQ, *Dt = Ds + buf * BQ;
        // warpgroup-uniform: else every key is after every query (or before the window)
        if (wk0 <= qs + BQ - 1 && !(SP && win && wk0 + 63 <= qs - win)) {
            float s[NN][4], dp[NN][4];
            wg_fence();
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++)
                wg_ss<BQ>(s, desc_k<BKV>(Ks, wg * 64, kk), desc_k<BQ>(Qt, 0, kk), kk);
            wg_commit();
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++)
                wg_ss<BQ>(dp, desc_k<BKV>(Vs, wg * 64, kk), desc_k<BQ>(dOt, 0, kk), kk);
            wg_commit();
            wg_wait<1>();
            wg_keep<BQ>(s);
            bool diag = wk0 + 63 > qs;
            bool wcut = SP && win && wk0 <= qs + BQ - 1 - win; // some key before a row's window
            uint32_t pa[BQ / 16][4];
#pragma unroll
            for (int n = 0; n < NN; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int qi = n * 8 + 2 * tq + (e & 1);
                    float p = wg_ex2(fmaf(s[n][e], sl2, ALD ? -Lt[qi] * WG_LOG2E : -Lt[qi]));
                    bool cut = diag & (key[e >> 1] > qs + qi); // bitwise: no branches
                    if (SP) cut |= wcut & (key[e >> 1] <= qs + qi - win);
                    s[n][e] = cut ? 0.f : p;
                }
#pragma unroll
            for (int kk = 0; kk < BQ / 16; kk++) {
                wg_pack_kk(pa[kk], s, kk);
            }
            wg_wait<0>();
            wg_keep<BQ>(dp);
            uint32_t da[BQ / 16][4];
#pragma unroll
            for (int n = 0; n < NN; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int qi = n * 8 + 2 * tq + (e & 1);
                    s[n][e] *= dp[n][e] - Dt[qi]; // dS^T (without the 1/sqrt(D))
                }
#pragma unroll
            for (int kk = 0; kk < BQ / 16; kk++) {
                wg_pack_kk(da[kk], s, kk);
            }
            wg_fence();
#pragma unroll
            for (int kk = 0; kk < BQ / 16; kk++) wg_rs<D>(dva, pa[kk], desc_mn<BQ>(dOt, kk), 1);
#pragma unroll
            for (int kk = 0; kk < BQ / 16; kk++) wg_rs<D>(dka, da[kk], desc_mn<BQ>(Qt, kk), 1);
            wg_commit();
            wg_wait<0>();
            wg_keep<D>(dva);
            wg_keep<D>(dka);
        }
        __syncthreads();
        more = nmore, hh = nh, qs = nqs;
    }
    cp_async_wait<0>(); // no step (sparse: a region no block lists): dK = dV = 0

    store_dkdv_rows<DN>(dk + (size_t)b * T * ldk + (size_t)kvh * D,
                        dv + (size_t)b * T * ldk + (size_t)kvh * D, ldk, key, T, tq, dka, dva, scale);
}

// ---------------------------------------------------------------------------------------------
// dQ: CTA = (b, h, NWG x 64 query rows), 64-key tiles double-buffered (QWalk: dense = up to the
// diagonal; sparse = the block's listed regions in slot order). S = Q K^T, dP = dO V^T (SS),
// dS = P (dP - Di) in registers, dQ += dS K (RS, K as MN-major).
template <int D, int NWG, bool SP>
__device__ __forceinline__ void dq_wg_body(bf16 *dq, const bf16 *dout, const float *lse,
                                           const float *Di, const bf16 *q, const bf16 *k,
                                           const bf16 *v, int T, int H, int KVH, float sl2,
                                           float scale, const SpArgs &sp) {
    constexpr int NT = 128 * NWG, BQ = 64 * NWG, BK = 64, DN = D / 8, NN = BK / 8;
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    bf16 *Qs = (bf16 *)smem_base1k(smem_raw), *dOs = Qs + BQ * D, *Ks = dOs + BQ * D;
    bf16 *Vs = Ks + 2 * BK * D;

    int bh = blockIdx.x, qi = blockIdx.y, nqb = gridDim.y;
    if (SP && sp.hmajor) bh = blockIdx.y, qi = blockIdx.x, nqb = gridDim.x;
    int b = bh / H, h = bh % H, kvh = h / (H / KVH);
    int q0 = (nqb - 1 - qi) * BQ; // heaviest (latest) first
    size_t ldq = (size_t)H * D, ldk = (size_t)KVH * D;
    const bf16 *qb = q + (size_t)b * T * ldq + (size_t)h * D;
    const bf16 *db = dout + (size_t)b * T * ldq + (size_t)h * D;
    const bf16 *kb = k + (size_t)b * T * ldk + (size_t)kvh * D;
    const bf16 *vb = v + (size_t)b * T * ldk + (size_t)kvh * D;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    int wg = warp >> 2, wl = warp & 3;
    int wr0 = q0 + wg * 64, rw0 = wr0 + wl * 16 + g;
    float l2[2], di[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int row = rw0 + 8 * r;
        size_t li = ((size_t)b * H + h) * T + row;
        l2[r] = row < T ? lse[li] * WG_LOG2E : INFINITY;
        di[r] = row < T ? Di[li] : 0.f;
    }
    QWalk<SP> L; // the load cursor, one key tile ahead of the compute
    if (SP) {
        int c = q0 / sp.qblock;
        L.lst = sp.idx + (((size_t)b * H + h) * sp.nblk + c) * sp.width, L.n = sp.width;
        L.nreg = sp.nreg, L.R = sp.region, L.kend = min(q0 + BQ, T);
        L.klo = sp.window ? max(0, q0 - sp.window + 1) : 0;
    } else {
        L.n = 1, L.tend = (min(q0 + BQ, T) + BK - 1) / BK;
    }
    L.begin();
    int win = SP ? sp.window : 0;

    ptile_load<D, BQ, NT>(Qs, qb, ldq, q0, T);
    ptile_load<D, BQ, NT>(dOs, db, ldq, q0, T);
    bool more = L.ok();
    int k0 = L.t * BK; // the key tile being computed
    if (more) {
        ptile_load<D, BK, NT>(Ks, kb, ldk, k0, T);
        ptile_load<D, BK, NT>(Vs, vb, ldk, k0, T);
        L.next();
    }
    cp_async_commit();

    float acc[DN][4];
#pragma unroll
    for (int n = 0; n < DN; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;

    for (int j = 0; more; j++) {
        bool nmore = L.ok();
        int nk0 = L.t * BK;
        if (nmore) {
            int nb = (j + 1) & 1;
            ptile_load<D, BK, NT>(Ks + nb * BK * D, kb, ldk, nk0, T);
            ptile_load<D, BK, NT>(Vs + nb * BK * D, vb, ldk, nk0, T);
            L.next();
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        fence_async_smem();
        __syncthreads();
        const bf16 *Kt = Ks + (j & 1) * BK * D, *Vt = Vs + (j & 1) * BK * D;
        if (wr0 + 63 >= k0 && !(SP && win && k0 + BK - 1 <= wr0 - win)) {
            float s[NN][4], dp[NN][4];
            wg_fence();
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++)
                wg_ss<BK>(s, desc_k<BQ>(Qs, wg * 64, kk), desc_k<BK>(Kt, 0, kk), kk);
            wg_commit();
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++)
                wg_ss<BK>(dp, desc_k<BQ>(dOs, wg * 64, kk), desc_k<BK>(Vt, 0, kk), kk);
            wg_commit();
            wg_wait<1>();
            wg_keep<BK>(s);
            bool wcut = SP && win && k0 <= wr0 + 63 - win; // some key before a row's window
            bool mask = k0 + BK - 1 > wr0 || k0 + BK > T || wcut;
#pragma unroll
            for (int n = 0; n < NN; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int kk = k0 + n * 8 + 2 * tq + (e & 1), row = rw0 + 8 * (e >> 1);
                    float p = wg_ex2(fmaf(s[n][e], sl2, -l2[e >> 1]));
                    bool cut = (kk > row) | (kk >= T); // bitwise: no branches
                    if (SP) cut |= wcut & (kk <= row - win);
                    s[n][e] = (mask & cut) ? 0.f : p;
                }
            wg_wait<0>();
            wg_keep<BK>(dp);
            uint32_t da[BK / 16][4];
#pragma unroll
            for (int n = 0; n < NN; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) s[n][e] *= dp[n][e] - di[e >> 1];
#pragma unroll
            for (int kk = 0; kk < BK / 16; kk++) {
                wg_pack_kk(da[kk], s, kk);
            }
            wg_fence();
#pragma unroll
            for (int kk = 0; kk < BK / 16; kk++) wg_rs<D>(acc, da[kk], desc_mn<BK>(Kt, kk), 1);
            wg_commit();
            wg_wait<0>();
            wg_keep<D>(acc);
        }
        __syncthreads();
        more = nmore, k0 = nk0;
    }
    cp_async_wait<0>(); // no key tile: Q / dO loads still in flight

    bf16 *dqb = dq + (size_t)b * T * ldq + (size_t)h * D;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int row = rw0 + 8 * r;
        if (row >= T) continue;
        bf16 *o = dqb + (size_t)row * ldq + 2 * tq;
#pragma unroll
        for (int n = 0; n < DN; n++)
            *(uint32_t *)(o + n * 8) = pack_bf16x2(acc[n][2 * r] * scale, acc[n][2 * r + 1] * scale);
    }
}

// DET = 3: two dQ partials x, y of a row (scale sc) as one 64-bit lane pair (y << 32) + x. Each
// |x sc| < 2^30 (a partial sum of the row: the bound at sparse_wgmma_bwd), so 32-bit conversions
// (s8; was __float2ll_rn, the same values; neutral: sparse moba-blk 32K ordered 8.014 ms, s7 8.012)
__device__ __forceinline__ long long fx_pair(float x, float y, float sc) {
    return (long long)__float2int_rn(y * sc) * 4294967296ll + __float2int_rn(x * sc);
}

__device__ __forceinline__ void wg_red_s64(long long *p, long long x) {
    asm volatile("red.relaxed.gpu.global.add.u64 [%0], %1;\n" ::"l"(p), "l"(x) : "memory");
}
// one box of a 4-d tensor map (columns, head, row, batch; rows past T clipped) from shared memory
// (the map's swizzle) by the TMA unit (async proxy): stored, or ADD: reduce-added (fp32 or s32 as
// the map says); a bulk group per issuing thread
template <bool ADD>
__device__ __forceinline__ void tma_out_4d(const void *map, const void *src, int c0, int c1, int c2,
                                           int c3) {
    if (ADD)
        asm volatile("cp.reduce.async.bulk.tensor.4d.global.shared::cta.add.tile.bulk_group"
                     " [%0, {%1, %2, %3, %4}], [%5];\n" ::"l"(map), "r"(c0), "r"(c1), "r"(c2),
                     "r"(c3), "r"(smem_u32(src)) : "memory");
    else
        asm volatile("cp.async.bulk.tensor.4d.global.shared::cta.tile.bulk_group"
                     " [%0, {%1, %2, %3, %4}], [%5];\n" ::"l"(map), "r"(c0), "r"(c1), "r"(c2),
                     "r"(c3), "r"(smem_u32(src)) : "memory");
    asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
}
__device__ __forceinline__ void bulk_wait_read() {
    asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
}
// the thread's bulk groups complete (their global writes performed), then ordered before its
// later generic accesses (the key lists' ordered dK / dV adds: the chain's release)
__device__ __forceinline__ void bulk_wait_done() {
    asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory");
    asm volatile("fence.proxy.async.global;\n" ::: "memory");
}

// ---------------------------------------------------------------------------------------------
// Fused backward (5 products): CTA = (b, kv head, D keys), D / 64 warpgroups of 64 keys (D 128: 2
// warpgroups, 128 keys; D 64 (s8): 1 warpgroup, 64 keys, MINB = 2 / 3 CTAs per SM), walking the
// (query tile, head) pairs latest query tile first, heads innermost, from the last tile down to
// its diagonal: every key block's CTA meets a given pair at the same step index.
// Per 64-query step: S^T = K Q^T, dP^T = V dO^T (SS), P^T, dS^T in registers, dV += P^T dO and
// dK += dS^T Q (RS) as the split dK/dV kernel; and dS^T (bf16) to shared memory [D keys][64
// queries] (the MN-major layout), then dQ partial [64 queries][D] = dS K over the CTA's D keys
// (SS, A M-major from dS^T, B = the K tile N-major; warpgroup w makes columns 64w..64w+63 from
// the plane of K it owns: hence a warpgroup per 64 columns of D and per 64 keys).
// Every warpgroup runs every step (a step wholly above a warpgroup's keys gives P = dS = 0): no
// wgmma under a divergent branch.
// dQ partials go to an fp32 accumulator [B, T, H, D]:
//   DET = 0: atomicAdd(float2); a convert kernel makes dq = acc * scale.
//   DET = 1: in key-block order behind a per-(b, h, query tile) counter: block 0 stores, later
//     blocks load-add-store, the last (min(nkb - 1, tile's diagonal block)) writes bf16 dq. CTAs
//     are dispatched key block 0 first (blockIdx.y), so a CTA waits only on CTAs dispatched
//     before it. Fixed summation order: bitwise repeatable. r1: 24.4 ms at 16K (atomic 15.9):
//     the wait, the L2 load latency and two CTA barriers sit in every step's critical path.
//   DET = 2 (dK/dV tune 2 in the ordered mode): the atomic path's red.add, in key-block order
//     per WARP: warp w of block kb adds its fragment of a tile once warp w of block kb - 1 has
//     released it (counter [b, h, tile, warp] == kb; every CTA maps warps to the same
//     elements) and releases it one step later (fence, then st.release after the next step's
//     products are issued). Reds into a zeroed accumulator in a fixed order: bitwise
//     repeatable; convert kernel as 0. r2/r3: 22.4 ms at 16K, still well above the atomic
//     16.1-16.5: the acquire round trip and the fence block each warp once per step.
//   DET = 3 (the ordered mode: sparse lists since s6, dense since s8): fixed-point integer adds of
//     the partials, two columns per 64-bit add (the scheme and figures at sparse_wgmma_bwd); per
//     thread (PIPE without 4).
//   DET = 4 (s8; with PIPE 4, the ordered mode's default there): the same fixed point, one s32
//     bulk add per element (s8 r5, ordered, vs DET 3's u64 lanes by bulk adds: D 64 LM shape
//     1.825 vs 1.897 ms, sparse moba-blk 32K RAND 7.844 vs 8.014, dense D 128 16K / 32K fwd+bwd
//     16.67 / 67.55 vs 16.40 / 68.19 (noise); DET 3 with PIPE 4 removed).
// PIPE bits (s7: 22 = 2 + 4 + 16 is the sparse default in both modes, the dense tune 4; s8 11):
//   2: lse / Di by cp.async.
//   4 (DET = 0 / 4): each step's partial goes to a shared staging tile (D / 32 boxes of 32 fp32 /
//     s32 columns x 64 rows, 128-byte rows, 128-byte swizzle: conflict-free 8-byte stores)
//     instead of 16 reds per thread; after the next step's first barrier D / 32 threads hand one
//     box each to the TMA unit as a tensor bulk reduce-add (.add.f32 / .add.s32 by the map: the
//     same adds, integer ones commute), whose smem reads finish before the step's dS barrier
//     (wait_group.read), after which the tile is rewritten. The compute warps issue no reds.
//   8 (with 4): three Q / dO / lse / Di buffers, loads two steps ahead, issued after the step's
//     S / dP products (since s12 two buffers too, or after the dQ / dK products: s12 below).
//   16 (with 2): Q / dO tiles by TMA (thread 0, a "full" mbarrier per buffer), not cp.async; dK /
//     dV staged in the Q / dO buffers (planar) and written by 4 TMA stores.
//   32 (with 2, DET 4): the rows' fixed-point scales by cp.async with lse / Di; 64 (DET 4): the s32
//     conversions by FFMA (at bwd_fused_body). s10: 118 = 22 + 32 + 64 the ordered default of the
//     dense and 128k-key-list kernels (lists with 3 buffers: 126); the key lists' ordered mode:
//     118 at D 128 (s11), at D 64 1526 at 3 CTAs an SM (s14: + 256 no deferred dK wait, 1024 the
//     caller passes lse x log2e, which sk_pre writes, + 128 permuted dQ staging, + 64 FFMA).

//   Tried (s7, 32K moba-blk RAND bwd, ms ordered / atomic): 4 as 64 row-sized bulk copies (no
//   map, 544-byte pitch): 11.97 / 10.74 (s6 path 12.05 / 11.34; the trace: their issue ~1300
//   cycles a step), + 8: 11.90 / 10.72; 4 as map boxes: 11.00 / 10.16, + 8: 11.14 / 10.32; + 16
//   (2 + 4 + 8 + 16): 10.22 / 9.10 (128K: 137.0 / 122.8 vs 159.7 / 155.3). Removed: the row copies.
//   r3 (with the branch-free cut): 30: 8.63 / 7.45; 22 (two buffers): 8.13 / 6.86 -> the default.
//   (PIPE = 1, tune 4 until s7: each step's reds issued after the next step's S / dP products;
//   ptxas serialised its wgmma (C7518) and it lost: s6 final, 16K, atomic 17.13 ms vs 16.32,
//   ordered 22.36 vs 22.02: removed in s7.)
// s12 (the step's instruction count and order; H200, ms paper 32K key-centric bwd, `MSLAB_SWB_PERF=
//   "ms paper" MSLAB_SWB_PERF_MIN=1 mslab-gpu-tests sparse_wgmma_bwd_perf`, ms atomic / ordered,
//   old and new binaries in the same snippet; the ordered dq + dk + dv bits equal to main's in every
//   round, MSLAB_SWB_HASH). Measured first: the keys atomic step loop was 879 SASS instructions
//   (static), ~300 of them descriptor math around the 32 wgmma (desc_k / desc_mn / wg_desc per
//   product and k-step: R2UR, ULOP3, USHF, UMOV, ~10 a wgmma); ncu (source counters, r1, ordered):
//   671 instructions a warp a step, and 10% of the stall samples at the step's first S HGMMA: a
//   wgmma is issued by all 4 warps of a warpgroup, and warp 0 was still issuing the next step's
//   TMA loads, the previous partial's bulk add and the lse / Di cp.async.
//   Kept: descriptors as uniform bases plus compile-time constants (wgd_lo / wgd, the forward's
//   s11 recipe; 4 uniform instructions a wgmma), the causal mask only in a warp with a key above
//   the tile's first row (or an empty slot), dS^T by 4 stmatrix x4 (step loop 633 static; r1
//   19.12 / 20.70 -> 18.94 / 20.31), no proxy fence at a step's top after step 0 with TMA tiles
//   (18.84 / 20.12), the loads and the bulk add issued after the S / dP products (17.81 / 19.34;
//   r2 19.28 / 20.75 -> 17.66 / 19.61), the products as dV, dS barrier, dQ, dK with the dQ
//   partial staged under dK and (DKL: the bulk adds, NB 2) dK waited at the next step's S wait, the
//   loads then after the dQ / dK issue (r3: main 19.38 / 20.92, 19.22 / 20.88; the loads moved
//   17.89 / 19.75, 17.59 / 19.94; this 17.80 / 19.37, 17.85 / 19.33). Trace (keys atomic): 4849
//   -> 4104 cycles a step (S 2144 -> 1004 incl. the loads' issue, dQ adds 597 -> 289 under dK).
//   D 64 LM shape (H 12, r3) 4.63 / 4.80 -> 4.28 / 4.49; dense 16K D 128 bwd (flash_wgmma_perf)
//   atomic 11.78 -> 10.97, ordered 13.35 -> 12.43; perf64 1.530 / 1.606 -> 1.406 / 1.532.
//   D 64 keys LM shape, r4 (two runs each): main 4.60 / 4.77, loads moved 4.16 / 4.62, DKL 4.27
//   / 4.48, DKL off at D 64 4.13 / 4.58: DKL at D 128 and in the ordered mode (FX) only.
//   r5 (this form vs main, two runs each; parity --quick sparse_wgmma_bwd 409, the small rows in
//   full 265, flash_wgmma in full 3347 passed): ms paper 32K 19.13 / 21.23, 19.26 / 20.93 ->
//   17.84 / 19.46, 17.99 / 19.47; D 64 LM shape 4.62 / 4.80 -> 4.15 / 4.49; dense 16K D 128 bwd
//   atomic 11.96 -> 10.98, ordered 13.32 -> 12.44; perf64 (B 8 T 4096 H 12) 1.532 / 1.709 ->
//   1.415 / 1.520 ms.
//   Tried and removed: the rows' lse / Di read into registers before the S / dP waits (ncu: the
//   softmax's first FMUL waited on those loads, 5% of the samples): r2 18.02 / 20.09 vs 17.66 /
//   19.61 without.
//   r6: the atomic mode's dQ staging stores permuted per lane against their 2-way bank conflicts
//   (stage_dq; ncu r4: 4 wavefronts a store vs 2): keys 32K atomic 17.27 / 17.50 -> 17.10 /
//   17.37 ms, D 64 LM shape 4.13 -> 4.01, dense perf64 atomic 1.410 -> 1.310; in the ordered mode
//   (selects before the FFMA conversions) 19.63 / 19.37 -> 19.80 / 19.52: kept to the atomic mode
//   (each kernel's code byte-identical to one measured in r5 / r6). r7 (this, the final form, vs
//   main, same snippet; parity 409 + 265 + 3347 passed, ordered hashes equal): ms paper 32K
//   18.91 / 20.79, 19.06 / 20.72 -> 17.07 / 19.13, 16.89 / 19.12 ms atomic / ordered; D 64 LM
//   shape 4.59 / 4.76 -> 4.01 / 4.49; dense 16K D 128 bwd 11.78 / 12.56 -> 10.76 / 11.64;
//   perf64 1.527 / 1.604 -> 1.303 / 1.515.
//   Left (ncu r4, keys ordered, DKL): tensor pipe 54% of the elapsed cycles, shared memory (L1)
//   70%, issue slots 28%; the ordered mode's staging stores still 2-way bank conflicted; the
//   softmax (~800 cycles a step) is bound by its 32 ex2 a thread on the XU pipe (an FMA-pipe exp2
//   for part of them: not tried, changes the bits).

// s14 (the key lists' D 64 kernel, the LM's: sparse_wgmma_keys.cu's notes): 3 CTAs an SM (MINB 3;
//   165 / 168 registers; PIPE 256 drops DKL there), FFMA conversions, the permuted staging (128)
//   and lse x log2e (PIPE 1024): perf row D 64 atomic / ordered 4.007 / 4.373 -> 3.756 / 4.039 ms
//   (r5, without the permutation), LM sparse_bwd 4684 / 4635 -> 4260 / 4292 us a layer (r5). K / V
//   as register A operands of S^T / dP^T (RS, 2 CTAs an SM): no gain, removed.

// Diagnostics (MSLAB_BWD_TRACE=1; off by default: the TR = 1 instantiations only run then): per
// CTA of the fused kernel, thread 0 records FT_REC u64: globaltimer at start / end, clock64 at
// start / end, steps | SM id << 32, prologue cycles (start .. step 0's tiles landed), epilogue
// cycles (loop exit .. dK / dV stored), warp 0's cycles per step phase (wait + barrier, S, dP wait
// + dS, dS stores + barrier, dK / dV / dQ products, dQ adds, P: softmax before the dP wait), the
// block index. fused_trace_report prints two lines (the last CTAs to finish in the second).
constexpr int FT_REC = 16;
__device__ unsigned long long *g_fused_trace;
__device__ __forceinline__ unsigned long long ft_gtime() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
__device__ __forceinline__ unsigned ft_smid() {
    unsigned r;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(r));
    return r;
}

// The fused backward's dense order: latest query tile first, heads innermost (the ordered modes
// rely on every key block's CTA meeting a (tile, head) pair at the same step index). Sparse
// (atomic mode only): the region's inverse list (KvWalk<true>).
struct FusedDenseWalk {
    int i, n, G, kvh, nqt, hh, t;
    __device__ __forceinline__ void set() { hh = kvh * G + i % G, t = nqt - 1 - i / G; }
    __device__ __forceinline__ void begin() { i = 0, set(); }
    __device__ __forceinline__ void next() { ++i, set(); }
    __device__ __forceinline__ bool ok() const { return i < n; }
};

// Key lists (SP = 2; sparse_wgmma_keys.cu): one query head, the block's query tiles [t, tb)
// (s9 r2: rotated by the key tile, so that a block's CTAs add into different query tiles at a
// time: 19.45 / 23.81 ms vs 19.45 / 23.79, removed)
struct FusedKeyWalk {
    int hh, t, tb;
    __device__ __forceinline__ void begin() {}
    __device__ __forceinline__ void next() { ++t; }
    __device__ __forceinline__ bool ok() const { return t < tb; }
};

// SP: 0 dense, 1 block-sparse lists (the inverse list walks), 2 key lists (a CTA = 128 gathered
// keys of one block's list; sparse_wgmma_keys.cu)
template <int D, int DET, int PIPE, int SP, int TR>
__device__ __forceinline__ void bwd_fused_body(bf16 *dq, bf16 *dk, bf16 *dv, float *dqacc,
                                               int *counters, const bf16 *dout, const float *lse,
                                               const float *Di, const bf16 *q, const bf16 *k,
                                               const bf16 *v, int T, int H, int KVH, float sl2,
                                               float scale, const SpArgs &sp, const float *rsc,
                                               const CUtensorMap &dqmap, const CUtensorMap &qmap,
                                               const CUtensorMap &omap, const CUtensorMap &dkmap,
                                               const CUtensorMap &dvmap) {
    static_assert(!SP || DET == 0 || DET >= 3, "sparse lists: atomic or fixed-point dQ");
    static_assert(D == 128 || DET == 0 || DET >= 3, "D 64: atomic or fixed-point dQ");
    constexpr bool KL = SP == 2; // key lists
    static_assert(!KL || ((PIPE & ~(32 | 64 | 128 | 256 | 1024)) == 22 && (DET == 0 || DET == 4)),
                  "key lists: PIPE 22 (+ 32, 64, 128, 256, 1024), DET 0 / 4");
    // 128 (s14, key lists, DET 4): the fixed-point staging permuted per lane as the atomic mode's
    // (stage_dq; the key lists' D 64 ordered kernel: r6 perf row 3.995 vs 4.058 ms, the same bits;
    // at 2 CTAs an SM it had gained 0.1 ms too, s14 r2; D 128's FFMA form lost with it, s12 r6)
    constexpr bool PERM = DET < 3 || (PIPE & 128) != 0;
    // 1024 (s14, key lists, with 2): lse comes as lse x log2e (sk_pre's copy, the product the
    // softmax formed: the same bits), 16 FMUL a thread a step fewer
    constexpr bool LPS = (PIPE & 1024) != 0;
    static_assert(!LPS || ((PIPE & 2) && KL), "lse x log2e: lse by cp.async, the key lists' sk_pre writes it");
    constexpr bool PT = KL && DET == 4; // key lists, ordered: dK / dV adds in a fixed order (s12)
    constexpr bool FX = DET >= 3; // fixed-point dQ: 3 two 32-bit lanes per u64 red, 4 s32 bulk adds
    constexpr bool ALDL = (PIPE & 2) != 0; // lse / Di by cp.async
    constexpr bool BULKQ = (PIPE & 4) != 0; // dQ partials by bulk reduce-adds (map dqmap)
    constexpr int NB = PIPE & 8 ? 3 : 2;     // Q / dO / lse / Di buffers: loads NB - 1 steps ahead
    constexpr bool TML = (PIPE & 16) != 0;   // Q / dO tiles, dK / dV by TMA (qmap .. dvmap)
    static_assert(!TML || ALDL, "TMA tiles: lse / Di by cp.async");
    // 32 (s9, key lists; with 2, DET 4): the rows' fixed-point scales by cp.async with lse / Di
    // into Fs, read from there at the step's start, not by __ldg there (the wgmma fence may wait
    // for the loads): ms paper perf row 32K ordered 23.17 ms vs 23.67 (r4; the trace's S phase
    // -140 cycles a step, r3). r3, read at the dQ staging instead: 24.63 vs 23.82 (the dQ adds
    // phase 1172 vs 607 cycles: Fs reloaded per store?). Untried on the other DET 4 paths.
    constexpr bool ALDF = (PIPE & 32) != 0;
    static_assert(!ALDF || (ALDL && DET == 4), "row scales by cp.async: with 2, DET 4");
    static_assert(!(PIPE & 8) || BULKQ, "three buffers: with the bulk adds");
    static_assert(!BULKQ || DET == 0 || DET == 4, "bulk dQ adds: fp32 or s32");
    static_assert(DET != 4 || BULKQ, "s32 dQ adds: the bulk adds only");
    // 64 (s10, DET 4): the s32 conversions by FFMA (x sc + 1.5 2^23: the rounded integer in the low
    // mantissa bits, F2I's value where |x sc| < 2^22; checked after: else the thread's F2I pass
    // rewrites its elements), off the XU pipe that the softmax's ex2 uses (ncu, LM shape: XU 30%
    // busy ordered vs 17% atomic). (s10 r3: the FFMA results' bits staged as they are, the bias
    // 0x4B400000 per partial taken off by the convert, no IADD: kernel 1552 vs 1473 us, convert
    // 44.4 vs 35.6: removed)
    constexpr bool FC = (PIPE & 64) != 0;
    static_assert(!FC || DET == 4, "FFMA conversions: the s32 fixed point");
    // a warpgroup per 64 keys and 64 dQ columns (one plane; D 128: 2, 128 keys; D 64: 1, 64 keys)
    constexpr int NWG = D / 64, NT = 128 * NWG, BKV = 64 * NWG, BQ = 64, DN = D / 8, NN = BQ / 8;
    // TR: thread 0's stamps (diagnostics above)
    // (few registers: the kernel sits at ~254; stamps go to the record, phase sums to smem)
    bool trw = TR && threadIdx.x == 0;
    unsigned long long *trec =
        TR ? g_fused_trace + ((size_t)blockIdx.y * gridDim.x + blockIdx.x) * FT_REC : nullptr;
    unsigned tr_cp = 0, *trs = nullptr; // trs (smem): [0 .. 6] phase sums, [7] steps (set below)
    if (TR && trw) trec[0] = ft_gtime(), trec[2] = trec[5] = clock64(); // (5: no step: 0)
    auto tr_stamp = [&](int ph) {
        if (TR && trw) {
            unsigned c = (unsigned)clock();
            trs[ph] += c - tr_cp;
            tr_cp = c;
        }
    };
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    bf16 *Ks = (bf16 *)smem_base1k(smem_raw), *Vs = Ks + BKV * D, *Qs = Vs + BKV * D;
    bf16 *dOs = Qs + NB * BQ * D, *dSs = dOs + NB * BQ * D;
    unsigned char *dQs = (unsigned char *)(dSs + BKV * BQ); // BULKQ: staging tile (1 KB aligned)
    float *Ls = (float *)(dQs + (BULKQ ? BQ * D * 4 : 0)), *Ds = Ls + NB * BQ, *Fs = Ds + NB * BQ;
    uint64_t *tbar = (uint64_t *)(Fs + (ALDF ? NB * BQ : 0)); // TML: a "full" mbarrier per buffer
    if (TML) {
        if (threadIdx.x == 0) {
            for (int j = 0; j < NB; j++) mbar_init(tbar + j, 1);
            mbar_fence_init();
        }
        __syncthreads();
    }
    if (TR) {
        trs = (unsigned *)(tbar + NB);
        if (trw)
            for (int p = 0; p < 8; p++) trs[p] = 0;
    }

    int bh = blockIdx.x, kb = blockIdx.y;
    if (SP == 1 && sp.hmajor) bh = blockIdx.y, kb = blockIdx.x;
    int nkb = (T + BKV - 1) / BKV;
    if (SP == 1 && counters) { // SP: counters = the launch order (fused_order; NULL: the grid's)
        int w = counters[(size_t)blockIdx.y * gridDim.x + blockIdx.x];
        bh = w / nkb, kb = w % nkb;
    }
    if (!SP && sp.hgroup > 0) { // groups of hgroup bh in launch order (x fastest), kb outer
        int nbh = gridDim.x, lin = blockIdx.y * nbh + blockIdx.x, gsz = sp.hgroup * nkb;
        int gi = lin / gsz, r = lin - gi * gsz, gh = min(sp.hgroup, nbh - gi * sp.hgroup);
        kb = r / gh, bh = gi * sp.hgroup + r % gh;
    }
    int b = bh / KVH, kvh = bh % KVH, G = H / KVH;
    // KL: grid x = the key tile kb (slots kb BKV / region ..), y = (query head of the launch's
    // (b, kv head)s, block kc latest first); kbl = the (b, kv head)'s accumulator slab
    int kh = 0, kc = 0, kbl = 0;
    const int *klst = nullptr;
    if constexpr (KL) {
        int hl = blockIdx.y / sp.nblk, bhq = sp.bk0 * G + hl;
        int cy = blockIdx.y - hl * sp.nblk; // (kasc: the ordered mode's chains, at the epilogue)
        kc = sp.kasc ? cy : sp.nblk - 1 - cy, kb = blockIdx.x;
        b = bhq / H, kh = bhq % H, kvh = kh / G, kbl = b * KVH + kvh - sp.bk0;
        klst = sp.idx + (((size_t)b * H + kh) * sp.nblk + kc) * sp.width;
    }
    // KL: the key of the CTA's row r (INT_MAX: an empty slot or past T)
    // (regions of 16 / 32 keys: shifts, not the divisions by a runtime region of s9)
    int klsh = sp.region == 16 ? 4 : 5;
    auto kl_key = [&](int r) {
        int s = kb * (BKV >> klsh) + (r >> klsh), reg = s < sp.width ? __ldg(klst + s) : -1;
        int key = (reg << klsh) + (r & (sp.region - 1));
        return reg >= 0 && key < T ? key : INT_MAX;
    };
    int k0 = kb * BKV;
    size_t ldq = (size_t)H * D, ldk = (size_t)KVH * D;
    const bf16 *kbp = k + (size_t)b * T * ldk + (size_t)kvh * D;
    const bf16 *vbp = v + (size_t)b * T * ldk + (size_t)kvh * D;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    int wg = warp >> 2, wl = warp & 3;
    int wk0 = k0 + wg * 64;
    int key[2] = {wk0 + wl * 16 + g, wk0 + wl * 16 + g + 8};
    int nqt = (T + BQ - 1) / BQ;
    typename std::conditional<
        SP == 1, KvWalk<true>,
        typename std::conditional<KL, FusedKeyWalk, FusedDenseWalk>::type>::type L; // load cursor
    if constexpr (KL) { // the block's query tiles from its least key's on
        key[0] = kl_key(wg * 64 + wl * 16 + g), key[1] = kl_key(wg * 64 + wl * 16 + g + 8);
        int kmin = INT_MAX; // (lists wider than 4096 slots are not sorted: sparse_bf16.cu)
        for (int r = 0; r < BKV; r += sp.region) kmin = min(kmin, kl_key(r));
        int rs = max(kmin, kc * sp.qblock), re = min(T, kc * sp.qblock + sp.qblock);
        L.hh = kh, L.tb = (re + BQ - 1) / BQ, L.t = kmin == INT_MAX ? L.tb : rs / BQ;
    } else if constexpr (SP == 1) {
        int bk = (b * KVH + kvh) * sp.nreg + k0 / sp.region;
        L.kvh = kvh, L.G = G, L.lst = sp.inv + sp.start[bk], L.n = sp.count[bk], L.rev = sp.desc;
        L.nblk = sp.nblk, L.qb = sp.qblock, L.k0 = k0;
        L.rend = sp.window ? min(T, k0 + BKV - 1 + sp.window) : T;
    } else {
        L.n = G * (nqt - k0 / BQ), L.G = G, L.kvh = kvh, L.nqt = nqt;
    }
    L.begin();
    int win = SP == 1 ? sp.window : 0;
    auto load_step = [&](int hh, int qs, int buf) {
        if (TML) { // thread 0: 2 planes each, rows past T zero-filled (the full bytes arrive)
            if (threadIdx.x == 0) {
                mbar_expect_tx(tbar + buf, 2 * BQ * D * 2);
                for (int p = 0; p < D / 64; p++) {
                    int o = buf * BQ * D + p * BQ * 64;
                    tma_load_4d(Qs + o, &qmap, tbar + buf, p * 64, hh, qs, b);
                    tma_load_4d(dOs + o, &omap, tbar + buf, p * 64, hh, qs, b);
                }
            }
        } else {
            const bf16 *qb = q + (size_t)b * T * ldq + (size_t)hh * D;
            const bf16 *db = dout + (size_t)b * T * ldq + (size_t)hh * D;
            ptile_load<D, BQ, NT>(Qs + buf * BQ * D, qb, ldq, qs, T);
            ptile_load<D, BQ, NT>(dOs + buf * BQ * D, db, ldq, qs, T);
        }
        if (ALDL) { // raw lse by cp.async (no load stall here); rows past T read 0: their P
                    // is 1 (Q rows are 0), but dO rows are 0 too, so P^T dO and dS add nothing
            if (threadIdx.x < 2 * BQ) {
                int r = threadIdx.x & (BQ - 1), t = qs + r;
                size_t li = ((size_t)b * H + hh) * T + (t < T ? t : 0);
                if (threadIdx.x < BQ) cp_async4(Ls + buf * BQ + r, lse + li, t < T);
                else cp_async4(Ds + buf * BQ + r, Di + li, t < T);
            }
            int x = (threadIdx.x + NT - 2 * BQ) % NT; // ALDF: threads 2 BQ .. (or 0 .. at D 64)
            if (ALDF && x < BQ)
                cp_async4(Fs + buf * BQ + x, rsc + ((size_t)b * T + min(qs + x, T - 1)) * H + hh,
                          qs + x < T);
        } else {
            for (int r = threadIdx.x; r < BQ; r += NT) {
                int t = qs + r;
                size_t li = ((size_t)b * H + hh) * T + t;
                Ls[buf * BQ + r] = t < T ? lse[li] * WG_LOG2E : INFINITY; // P = 0 past T
                Ds[buf * BQ + r] = t < T ? Di[li] : 0.f;
            }
        }
    };

    // steps i .. i + NB - 2 (loaded or in flight): head, first query row, present (dense: step 0
    // always, the block's own diagonal tile); one cp.async group per step
    int ph[NB - 1], pq[NB - 1];
    bool pm[NB - 1];
#pragma unroll
    for (int j = 0; j < NB - 1; j++) {
        pm[j] = L.ok(), ph[j] = L.hh, pq[j] = L.t * BQ;
        if (pm[j]) {
            if (j == 0 && KL) { // the gathered K / V rows (empty slots, keys past T: zero), after
                                // the step's Q / dO TMA is under way (s10 r1: the gather first,
                                // ms paper 32K ordered 22.65 ms vs 22.67: no difference)
                load_step(ph[j], pq[j], j);
                // the thread's keys first, their list loads back to back (s10 r4: prologue 4401 /
                // 4517 cycles atomic / ordered vs 4707 / 4880 with each key before its chunk)
                constexpr int NG = BKV * (D / 8) / NT; // 16-byte chunks a thread (rows i / (D / 8))
                int gk[NG];
#pragma unroll
                for (int u = 0; u < NG; u++) gk[u] = kl_key((threadIdx.x + u * NT) / (D / 8));
#pragma unroll
                for (int u = 0; u < NG; u++) {
                    int i = threadIdx.x + u * NT, r = i / (D / 8), ch = i % (D / 8), key = gk[u];
                    size_t off = (size_t)(key != INT_MAX ? key : 0) * ldk + ch * 8;
                    cp_async16(Ks + pl<BKV>(r, ch), kbp + off, key != INT_MAX);
                    cp_async16(Vs + pl<BKV>(r, ch), vbp + off, key != INT_MAX);
                }
            } else if (j == 0) {
                ptile_load<D, BKV, NT>(Ks, kbp, ldk, k0, T);
                ptile_load<D, BKV, NT>(Vs, vbp, ldk, k0, T);
            }
            if (!(j == 0 && KL)) load_step(ph[j], pq[j], j);
            L.next();
        }
        cp_async_commit();
    }

    float dka[DN][4], dva[DN][4];
#pragma unroll
    for (int n = 0; n < DN; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) dka[n][e] = dva[n][e] = 0.f;
    int *cnt_prev = nullptr; // DET = 2: this warp's counter of the previous step (release due)
    float acc[8][4];         // this step's dQ partial
    int bq_qs = -1, bq_hh = 0; // BULKQ: the staged partial's query tile (-1: none)
    bool any = pm[0]; // KL: some step (else no dK / dV adds)
    // BULKQ: thread 32 x (x < D / 32) hands box x (fp32 columns 32 x .. + 31) to the TMA unit
    // (KL: the accumulator [slab kbl][T][G][D], the head's index in its group)
    auto bulk_issue = [&]() {
        if ((threadIdx.x & 31) == 0 && threadIdx.x < D)
            tma_out_4d<true>(&dqmap, dQs + (threadIdx.x >> 5) * 8192, (threadIdx.x >> 5) * 32,
                             KL ? kh - kvh * G : bq_hh, bq_qs, KL ? kbl : b);
    };
    // BULKQ: the dQ partial x (rows qs + 16 wl + g (+ 8), columns 64 wg + 8 n + 2 tq (+ 1)) into
    // staging tile st (fp32 pairs, or DET 4 x sc as s32); column c = 64 wg + 8 n + 2 tq: box c /
    // 32, at row * 128 + 16-byte chunk ((c % 32) / 4) ^ (row % 8), byte 8 (tq % 2)
    auto stage_dq = [&](const float (&x)[8][4], const float (&sc)[2], unsigned char *st) {
        // ffma (std::true_type): the FFMA conversions; returns the OR of their bits ^ 2^23's (a
        // bit at 2^23 or above: some |x sc| >= 2^22, or NaN)
        auto put = [&](auto ffma) -> unsigned {
            unsigned chk = 0;
#pragma unroll
            for (int r = 0; r < 2; r++) {
                int row = wl * 16 + g + 8 * r;
                // fp32 (the atomic mode): a lane of odd g stores column group n ^ 2 at store n
                // (s12): with the 128-byte swizzle, rows g and g ^ 1 of a half-warp fell on the
                // same banks (ncu r4: 4 wavefronts a store, 2 ideal); so its 16 lanes hit 16
                // distinct 8-byte slots; (2 (n % 4) + tq / 2) ^ 4 (g & 1) ^ (row & 7) is group
                // n ^ 2's chunk (r6, the same bits: keys 32K atomic 17.27 / 17.50 -> 17.10 /
                // 17.37 ms, D 64 LM shape 4.13 -> 4.01, dense perf64 atomic 1.410 -> 1.310; the
                // ordered mode (the selects before its FFMA conversions) 19.63 / 19.37 -> 19.80 /
                // 19.52, dense 16K 12.29 -> 12.44: not there)
                const int od = PERM ? g & 1 : 0, sw = (row & 7) ^ (4 * od);
#pragma unroll
                for (int n = 0; n < 8; n++) {
                    unsigned char *pe = st + (2 * wg + n / 4) * 8192 + row * 128 +
                                        ((((n % 4) * 2 + tq / 2) ^ sw) << 4) + (tq & 1) * 8;
                    float x0 = od ? x[n ^ 2][2 * r] : x[n][2 * r];
                    float x1 = od ? x[n ^ 2][2 * r + 1] : x[n][2 * r + 1];
                    if constexpr (DET == 4 && decltype(ffma)::value) {
                        int a = __float_as_int(fmaf(x0, sc[r], 12582912.f));
                        int c = __float_as_int(fmaf(x1, sc[r], 12582912.f));
                        chk |= (unsigned)(a ^ 0x4B000000) | (unsigned)(c ^ 0x4B000000);
                        *(int2 *)pe = make_int2(a - 0x4B400000, c - 0x4B400000);
                    } else if constexpr (DET == 4) {
                        *(int2 *)pe = make_int2(__float2int_rn(x0 * sc[r]), __float2int_rn(x1 * sc[r]));
                    } else {
                        *(float2 *)pe = make_float2(x0, x1);
                    }
                }
            }
            return chk;
        };
        if (!FC) put(std::false_type{});
        else if (put(std::true_type{}) & 0xFF800000u) put(std::false_type{});
        fence_async_smem(); // generic stores before the TMA unit reads them
    };

    // wgmma descriptors as a base plus a compile-time constant (s12; the forward's s11 recipe,
    // flash_wgmma.cu): the low 32 bits (start >> 4 | LBO >> 4 << 16; the start field of an
    // address below 256 KB never carries), the high ones wgd's constant; the bases once, wg made
    // warp-uniform (a shuffle) so that they sit in uniform registers. (Was: desc_k / desc_mn /
    // wg_desc per product and k-step, ~10 address / mask / R2UR instructions around each of a
    // step's 32 wgmma: ~300 of a warp's ~880 instructions a step, keys atomic, SASS.)
    const int wgu = __shfl_sync(0xffffffffu, wg, 0);
    // the warp's greatest key (KL: INT_MAX for an empty slot): the causal mask's test
    const int kmaxw = KL ? __reduce_max_sync(0xffffffffu, max(key[0], key[1])) : wk0 + wl * 16 + 15;
    // dS^T's stmatrix: lane's row (byte address) and chunk term (below)
    const uint32_t ds_row = smem_u32(dSs) + 128 * (wg * 64 + wl * 16 + (lane & 7) + (lane & 8));
    const int dsx = (lane >> 4) ^ (lane & 7);
    const uint32_t kk0 = wgd_lo(Ks + wgu * 64 * 64, 16), vk0 = wgd_lo(Vs + wgu * 64 * 64, 16);
    const uint32_t qk0 = wgd_lo(Qs, 16), qm0 = wgd_lo(Qs, BQ * 128); // + buffer, k-step
    const uint32_t sm0 = wgd_lo(dSs, BKV * 128), km0 = wgd_lo(Ks + wgu * (BKV * 64), BKV * 128);
    // DKL (s12): a step's dK product is waited at the next step's S wait, not at its end, so the
    // tensor cores go from it to the next S / dP without a gap; the next step's loads then go out
    // after the dQ / dK issue (NB 2: into the buffer that dK read, done in both warpgroups since
    // the dS barrier). Not with the per-thread dQ adds (PIPE without 4): ptxas serialised their
    // wgmma (C7515); not at D 64 in the atomic mode (r4, keys LM shape: 4.27 ms with vs 4.13
    // without; ordered 4.48 with vs 4.58)
    // 256 (s14): no DKL (the key lists' D 64 ordered kernel at 3 CTAs an SM: with DKL ptxas
    // serialises its wgmma at 168 registers, C7512)
    constexpr bool DKL = BULKQ && NB == 2 && (D == 128 || FX) && !(PIPE & 256);
    for (int i = 0, buf = 0; pm[0]; i++, buf = buf == NB - 1 ? 0 : buf + 1) {
        if (TR && trw && i > 0) tr_cp = (unsigned)clock();
        cp_async_wait<NB - 2>();
        // TML: only step 0's cp.async writes (the K / V tiles) are wgmma operands; later steps'
        // (lse / Di / row scales) are read by plain loads: no proxy fence (s12: a MEMBAR a step)
        if (!TML || i == 0) fence_async_smem();
        if (TML) mbar_wait(tbar + buf, (i / NB) & 1); // this step's Q / dO tiles
        __syncthreads(); // step i's tiles landed; every warpgroup left step i - 1 (buffers, dS)
        if (TR && trw && i == 0) tr_cp = (unsigned)clock(), trec[5] = clock64();
        else tr_stamp(0);
        int hh = ph[0], qs = pq[0];
        bool nmore = L.ok(); // step i + NB - 1 into the buffer step i - 1 used
        int nh = L.hh, nqs = L.t * BQ;
        // the previous step's staged partial and the loads: after this step's S / dP issue (NB 3
        // since s7; NB 2 since s12), so that the tensor cores restart sooner: a wgmma is issued
        // by all 4 warps of its warpgroup, and the first S product waited for warp 0's TMA / bulk
        // issue and the lse / Di cp.async (ncu s12 r1, keys ordered: 10% of the stall samples at
        // that HGMMA; ms paper 32K 18.94 / 20.31 -> 17.81 / 19.34 ms atomic / ordered)
        auto issue_loads = [&]() {
            if (nmore) load_step(nh, nqs, buf == 0 ? NB - 1 : buf - 1), L.next();
            cp_async_commit();
        };
        const float *Lt = Ls + buf * BQ, *Dt = Ds + buf * BQ;
        float fsc[2]; // FX: this thread's dQ rows' fixed-point scales (latency under the step; s10
                      // r4, key lists: read after the S / dP issue instead, S phase 2310 vs 2306)
        if (FX)
#pragma unroll
            for (int r = 0; r < 2; r++) {
                int t = qs + wl * 16 + g + 8 * r;
                fsc[r] = ALDF ? Fs[buf * BQ + wl * 16 + g + 8 * r]
                              : t < T ? __ldg(rsc + ((size_t)b * T + t) * H + hh) : 0.f;
            }
        float s[NN][4], dp[NN][4];
        const uint32_t qkb = qk0 + (uint32_t)buf * (BQ * D / 8); // this buffer's Q: K-major,
        const uint32_t qmb = qm0 + (uint32_t)buf * (BQ * D / 8); // MN-major (the B of dK)
        constexpr uint32_t OD = NB * BQ * D / 8; // dO's tiles: NB Q tiles after Q's
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
            wg_ss<BQ>(s, wgd(kk0 + dk_k<BKV>(kk)), wgd(qkb + dk_k<BQ>(kk)), kk);
        wg_commit();
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
            wg_ss<BQ>(dp, wgd(vk0 + dk_k<BKV>(kk)), wgd(qkb + OD + dk_k<BQ>(kk)), kk);
        wg_commit();
        if (BULKQ && bq_qs >= 0) bulk_issue();
        if (!DKL) issue_loads();
        if (DET == 2 && cnt_prev) { // the previous step's reds performed: release its tile
            __threadfence();
            __syncwarp();
            if (lane == 0) st_release_gpu(cnt_prev, kb + 1);
            cnt_prev = nullptr;
        }
        wg_wait<1>(); // (the previous step's dK and) S
        wg_keep<BQ>(s);
        wg_keep<D>(dka);
        tr_stamp(1);
        // the masks only in a warp that has a key above the tile's first row (KL: or an empty
        // slot, INT_MAX) or, SP 1, one before a row's window: warp-uniform, the other warps skip
        // the compares and selects (s12)
        bool diag = kmaxw > qs;
        bool wcut = SP == 1 && win && wk0 <= qs + BQ - 1 - win; // some key before a row's window
        uint32_t pa[BQ / 16][4], da[BQ / 16][4];
#pragma unroll
        for (int n = 0; n < NN; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int qi = n * 8 + 2 * tq + (e & 1);
                s[n][e] = wg_ex2(fmaf(s[n][e], sl2, ALDL && !LPS ? -Lt[qi] * WG_LOG2E : -Lt[qi]));
            }
        if (diag | wcut) {
            // key > qs + 2 tq + j (j = 8 n + (e & 1)): key - qs - 2 tq against an immediate
            int kd[2] = {key[0] - qs - 2 * tq, key[1] - qs - 2 * tq};
#pragma unroll
            for (int n = 0; n < NN; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int qi = n * 8 + 2 * tq + (e & 1);
                    // bitwise, not || / &&: the short-circuit form compiled to 3 branches per
                    // element on the sparse path (SP; s7 trace: the P phase 2500 cycles a step
                    // vs ~500)
                    bool cut = diag & (kd[e >> 1] > n * 8 + (e & 1));
                    if (SP == 1) cut |= wcut & (key[e >> 1] <= qs + qi - win);
                    s[n][e] = cut ? 0.f : s[n][e];
                }
        }
#pragma unroll
        for (int kk = 0; kk < BQ / 16; kk++) {
            wg_pack_kk(pa[kk], s, kk);
        }
        tr_stamp(6);
        wg_wait<0>();
        wg_keep<BQ>(dp);
#pragma unroll
        for (int n = 0; n < NN; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int qi = n * 8 + 2 * tq + (e & 1);
                s[n][e] *= dp[n][e] - Dt[qi]; // dS^T (without the 1/sqrt(D))
            }
        tr_stamp(2);
        // dS^T (bf16) to dSs [BKV keys][64 queries] (planar, swizzled), a stmatrix x4 per k-step
        // (s12; was 4 32-bit stores with their address math): matrix m = the fragment's register
        // m (rows 16 wl + 8 (m & 1) .., chunk 2 kk + (m >> 1)); lane l gives row l & 7 of matrix
        // l >> 3, at chunk (2 kk + h) ^ (row & 7) = 2 kk ^ dsx (h = l >> 4: 2 kk is even)
#pragma unroll
        for (int kk = 0; kk < BQ / 16; kk++) {
            wg_pack_kk(da[kk], s, kk);
            stsm_x4(ds_row + ((dsx ^ (2 * kk)) << 4), da[kk]);
        }
        // dV before the dS barrier (it runs under the wait), then dQ, then dK: the dQ partial is
        // staged / added while dK runs (s12; was dV, dK, barrier, dQ, then all waited)
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < BQ / 16; kk++) wg_rs<D>(dva, pa[kk], wgd(qmb + OD + kk * 128), 1);
        wg_commit();
        fence_async_smem(); // the dS^T stores (generic proxy) before the wgmma reads (async)
        if (BULKQ) bulk_wait_read(); // the staging tile read: rewritten after this barrier
        __syncthreads();    // both warpgroups' halves of dS^T
        tr_stamp(3);
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < BKV / 16; kk++)
            wg_ss_tt_n64(acc, wgd(sm0 + kk * 128), wgd(km0 + kk * 128), kk);
        wg_commit();
#pragma unroll
        for (int kk = 0; kk < BQ / 16; kk++) wg_rs<D>(dka, da[kk], wgd(qmb + kk * 128), 1);
        wg_commit();
        // DKL: the next step's loads go to the buffer the previous step's dK read: that product
        // is done in both warpgroups since the dS barrier (it ran under this step's S / dP)
        if (DKL) issue_loads();
        wg_wait<1>(); // dV, dQ
        wg_keep<D>(dva);
        wg_keep<64>(acc);
        tr_stamp(4);

        // dQ partial: rows qs + 16 wl + g (+ 8), columns 64 wg + 8 n + 2 tq (+ 1)
        size_t base = ((size_t)b * T) * ldq + (size_t)hh * D + wg * 64 + 2 * tq;
        if (BULKQ) { // into the staging tile (fp32 pairs or the fixed-point lanes)
            stage_dq(acc, fsc, dQs);
            bq_qs = qs, bq_hh = hh;
        } else if (DET == 3) { // integer adds (any order, the same bits): two 32-bit lanes in
                               // one 64-bit add, (odd << 32) + even
#pragma unroll
            for (int r = 0; r < 2; r++) {
                int t = qs + wl * 16 + g + 8 * r;
                if (t >= T) continue;
                long long *pr = (long long *)dqacc + (base + (size_t)t * ldq) / 2;
#pragma unroll
                for (int n = 0; n < 8; n++)
                    wg_red_s64(pr + 4 * n, fx_pair(acc[n][2 * r], acc[n][2 * r + 1], fsc[r]));
            }
        } else if (DET != 1) {
            int *cw = counters + (((size_t)b * H + hh) * nqt + qs / BQ) * 8 + warp;
            if (DET == 2) {
                if (lane == 0) ord_wait<20>(cw, kb, sp.ow);
                __syncwarp();
                cnt_prev = cw;
            }
#pragma unroll
            for (int r = 0; r < 2; r++) {
                int t = qs + wl * 16 + g + 8 * r;
                if (t >= T) continue;
                float *pr = dqacc + base + (size_t)t * ldq;
#pragma unroll
                for (int n = 0; n < 8; n++)
                    atomicAdd((float2 *)(pr + 8 * n), make_float2(acc[n][2 * r], acc[n][2 * r + 1]));
            }
        } else {
            int *cnt = counters + ((size_t)b * H + hh) * nqt + qs / BQ;
            int last = min(nkb - 1, (qs + BQ - 1) / BKV);
            if (threadIdx.x == 0) ord_wait<20>(cnt, kb, sp.ow);
            __syncthreads();
#pragma unroll
            for (int r = 0; r < 2; r++) {
                int t = qs + wl * 16 + g + 8 * r;
                if (t >= T) continue;
                float *pr = dqacc + base + (size_t)t * ldq;
                float2 old[8];
                if (kb > 0) {
#pragma unroll
                    for (int n = 0; n < 8; n++) old[n] = __ldcg((const float2 *)(pr + 8 * n));
                }
#pragma unroll
                for (int n = 0; n < 8; n++) {
                    float x0 = acc[n][2 * r], x1 = acc[n][2 * r + 1];
                    if (kb > 0) x0 = old[n].x + x0, x1 = old[n].y + x1;
                    if (kb == last)
                        *(uint32_t *)(dq + base + (size_t)t * ldq + 8 * n) =
                            pack_bf16x2(x0 * scale, x1 * scale);
                    else
                        __stcg((float2 *)(pr + 8 * n), make_float2(x0, x1));
                }
            }
            __threadfence();
            __syncthreads(); // every thread's stores before thread 0's release
            if (threadIdx.x == 0) st_release_gpu(cnt, kb + 1);
        }
        if (!DKL) wg_wait<0>(), wg_keep<D>(dka); // (DKL: dK runs under the next S / dP)
        tr_stamp(5);
        if (TR && trw) trs[7] = i + 1;
#pragma unroll
        for (int j = 0; j < NB - 2; j++) pm[j] = pm[j + 1], ph[j] = ph[j + 1], pq[j] = pq[j + 1];
        pm[NB - 2] = nmore, ph[NB - 2] = nh, pq[NB - 2] = nqs;
    }
    wg_wait<0>(); // the last step's dK
    wg_keep<D>(dka);
    cp_async_wait<0>(); // sparse: no step (a region no block lists): dK = dV = 0
    if (TR && trw) trec[6] = clock64();
    if (BULKQ && bq_qs >= 0) { // the last step's partial; its smem reads done before the CTA
        __syncthreads();          // exits (the adds complete with the grid, as TMA stores do)
        bulk_issue();
        if (!KL) bulk_wait_read(); // KL: waited with the dK / dV adds (no smem in common)
    }

    if (DET == 2 && cnt_prev) {
        __threadfence();
        __syncwarp();
        if (lane == 0) st_release_gpu(cnt_prev, kb + 1);
        cnt_prev = nullptr;
    }
    if constexpr (KL) {
        // dK / dV (unscaled) at the warp's 16 keys (consecutive: a region's rows), staged per warp
        // in 128 D bytes of the K / V / Q / dO buffers as fp32 boxes [16 keys][32 columns]
        // (128-byte swizzle, both arrays at once), then reduce-added by the TMA unit into the
        // accumulators ([slab][2 = dK, dV][T][D]). The ordered mode (DET 4, s12) adds in a fixed
        // order: per 16-key group a chain over the lists that hold the region (krank: lists in
        // grid order, blocks earliest first), each warp waits for its turn (kwait == its rank),
        // the first STORES (no zeroing), waits for its adds to complete and passes the turn on:
        // the same fp32 sums in the same order whatever the CTAs' timing (bitwise repeatable);
        // waits only on CTAs launched before it (the grid's order), which run or are done. A
        // region that only this list of the launch's (b, kv head) holds (kcnt 1, kone) is
        // written as bf16 dK / dV, no chain. (s11's partials, stored per CTA and summed by a
        // second kernel: sparse_wgmma_keys.cu's notes)
        __syncthreads(); // every warpgroup's products done with the buffers
        int wkey = __shfl_sync(0xffffffffu, key[0], 0); // the warp's first key
        unsigned char *st = (unsigned char *)Ks + warp * 128 * D;
        auto stage = [&](const float (&x)[DN][4], unsigned char *sa) {
#pragma unroll
            for (int n = 0; n < DN; n++)
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    int row = g + 8 * r; // (row & 7 = g)
                    *(float2 *)(sa + (n >> 2) * 2048 + row * 128 +
                                (((2 * (n & 3) + (tq >> 1)) ^ g) << 4) + (tq & 1) * 8) =
                        make_float2(x[n][2 * r], x[n][2 * r + 1]);
                }
            fence_async_smem(); // the staging stores before the TMA unit reads them
            __syncwarp();
        };
        // (s9 r3: per-thread reds from the fragments instead, no staging: atomic 19.58 ms vs
        // 19.81, ordered (red.u64) 25.25 vs 23.82; epilogue 8663 / 23791 cycles: removed)
        // (r5: dK by the TMA unit and dV by per-thread reds meanwhile: atomic 19.78 ms vs 19.37 /
        // 19.48, ordered 22.91 vs 22.41 / 22.34: removed)
        // (s10 r1, ms paper 32K, epilogue cycles atomic / ordered (then s64 adds) 6581 / 13563: one
        // box a warp and array (a map with the chunks as a dimension) 6580 / 13547; the boxes
        // stored, not added (wrong dK / dV: timing only) 5800 / 11056; the boxes prefetched to L2
        // two steps before (the adds' L2 hit rate was 95-97%, ncu) ordered 22.93 ms vs 22.67; r2:
        // each warp's box read back in row order and added by coalesced per-thread reds (u64 /
        // v4.f32) 6770 / 13301, 19.20 / 22.17 ms vs 19.23 / 22.19: the SM's ~20 bytes a cycle to
        // L2 bound them all; none kept)
        // (s13, kconv 1) x += the accumulator's rows at the thread's keys (pa: its columns' base)
        auto last_add = [&](float (&x)[DN][4], const float *pa) {
#pragma unroll
            for (int r = 0; r < 2; r++) {
                if (key[r] >= T) continue;
                float2 y[DN];
#pragma unroll
                for (int n = 0; n < DN; n++) y[n] = __ldcg((const float2 *)(pa + (size_t)key[r] * D + 8 * n));
#pragma unroll
                for (int n = 0; n < DN; n++) // add.ftz: the TMA's f32 add flushes subnormal
                    x[n][2 * r] = add_ftz(x[n][2 * r], y[n].x), // inputs and results (the same
                    x[n][2 * r + 1] = add_ftz(x[n][2 * r + 1], y[n].y); // bits as its add)
            }
        };
        // the ordered mode's bf16 dK / dV rows (regions one list holds; s13: a chain's last list),
        // staged per warp in its smem as rows of D bf16 (+ 16 bytes: no bank conflicts) and
        // written by 16-byte stores of whole rows (full 32-byte sectors to L2; s13 r6, ms paper 32K
        // ordered: 17.58 / 17.36 ms vs 17.82 / 17.93 with store_dkdv_rows' 4-byte stores, half
        // sectors; epilogue 8045-8088 cycles a CTA vs 9000-9050 (r5); D 64 4.366 / 4.368 vs 4.394)
        auto store_bf16 = [&]() {
            bf16 *dkb = dk + (size_t)b * T * ldk + (size_t)kvh * D;
            bf16 *dvb = dv + (size_t)b * T * ldk + (size_t)kvh * D;
            constexpr int RB = D * 2 + 16, CH = D / 8; // row bytes, 16-byte chunks a row
#pragma unroll
            for (int r = 0; r < 2; r++)
#pragma unroll
                for (int n = 0; n < DN; n++) {
                    unsigned char *pr = st + (g + 8 * r) * RB + (8 * n + 2 * tq) * 2;
                    *(uint32_t *)pr = pack_bf16x2(dka[n][2 * r] * scale, dka[n][2 * r + 1] * scale);
                    *(uint32_t *)(pr + 16 * RB) = pack_bf16x2(dva[n][2 * r], dva[n][2 * r + 1]);
                }
            __syncwarp();
#pragma unroll
            for (int i = lane; i < 2 * 16 * CH; i += 32) {
                int a = i / (16 * CH), j = i - a * 16 * CH, row = j / CH, ch = j - row * CH;
                if (wkey + row < T)
                    *(uint4 *)((a ? dvb : dkb) + (size_t)(wkey + row) * ldk + ch * 8) =
                        *(const uint4 *)(st + (a * 16 + row) * RB + ch * 16);
            }
        };
        int reg = wkey != INT_MAX ? wkey >> klsh : 0;
        int kn = PT && wkey != INT_MAX ? __ldg(sp.kcnt + (size_t)kbl * sp.nreg + reg) : 0;
        bool one = PT && sp.kone && kn == 1;
        if (one) { // (a list holding the region twice, against ops.h: its designated slot alone
                   // writes, as pos keeps one slot a list, so the bits stay repeatable)
            size_t e = ((size_t)(blockIdx.y / sp.nblk) * sp.nblk + kc) * sp.nreg + reg;
            if (__ldg(sp.kpos + e) == kb * (BKV >> klsh) + ((warp * 16) >> klsh)) store_bf16();
        } else if (wkey != INT_MAX && (PT || any)) {
            int rk = 0, *cw = nullptr;
            bool mine = true; // PT: the list's designated slot of the region (held twice: one)
            if (PT) {
                size_t e = ((size_t)(blockIdx.y / sp.nblk) * sp.nblk + kc) * sp.nreg + reg;
                mine = __ldg(sp.kpos + e) == kb * (BKV >> klsh) + ((warp * 16) >> klsh);
                rk = mine ? __ldg(sp.krank + e) : 0;
                cw = sp.kwait + (size_t)kbl * ((T + 15) >> 4) + (wkey >> 4);
            }
            if (PT && mine && sp.kjit) { // tests: warps delayed by a hash of their CTA (other orders)
                unsigned hs = (blockIdx.x * 2654435761u) ^ (blockIdx.y * 40503u) ^ (warp * 97u);
                long long t0 = clock64(), dl = (long long)((hs >> 7) % 8) * 20000;
                while (clock64() - t0 < dl) __nanosleep(100);
            }
            if (PT && sp.kconv && mine && rk == kn - 1) {
                // (s13) the chain's last list: once the earlier lists' adds are done, the sum so
                // far (rank > 0) plus this warp's rows, written as bf16 (the convert's x scale for
                // dK): the TMA add's fp32 sum in registers, no add to wait for, no read back, no
                // convert pass for the region
                if (rk > 0) {
                    if (lane == 0) ord_wait<20>(cw, rk, sp.ow); // the chain's turn (acquire)
                    __syncwarp();
                    asm volatile("fence.proxy.async.global;\n" ::: "memory");
                    const float *ka = sp.kacc + (size_t)2 * kbl * T * D + 2 * tq;
                    last_add(dka, ka);
                    last_add(dva, ka + (size_t)T * D);
                }
                store_bf16();
            } else if (mine) {
                stage(dka, st);
                stage(dva, st + 64 * D);
                if (PT) {
                    if (lane == 0) ord_wait<20>(cw, rk, sp.ow); // the chain's turn (acquire)
                    __syncwarp();
                    asm volatile("fence.proxy.async.global;\n" ::: "memory");
                }
                if (lane < D / 16) {
                    int c0 = lane % (D / 32) * 32, c2 = lane / (D / 32) + 2 * kbl;
                    if (PT && rk == 0) tma_out_4d<false>(&dkmap, st + lane * 2048, c0, wkey, c2, 0);
                    else tma_out_4d<true>(&dkmap, st + lane * 2048, c0, wkey, c2, 0);
                    if (PT) bulk_wait_done();
                }
                if (PT) {
                    __syncwarp();
                    if (lane == 0) st_release_gpu(cw, rk + 1); // the next list's turn
                }
            }
        }
        bulk_wait_read(); // (and the last dQ partial's reads)
    } else if (TML) { // dK / dV as planar tiles in the Q / dO buffers, then 4 TMA stores (rows past T
               // clipped); the smem reads done before the CTA exits
        __syncthreads(); // every warpgroup's products done with the buffers
        bf16 *dKs = Qs, *dVs = dOs;
#pragma unroll
        for (int r = 0; r < 2; r++) {
            int row = wg * 64 + wl * 16 + g + 8 * r;
#pragma unroll
            for (int n = 0; n < DN; n++) {
                *(uint32_t *)(dKs + pl<BKV>(row, n) + 2 * tq) =
                    pack_bf16x2(dka[n][2 * r] * scale, dka[n][2 * r + 1] * scale);
                *(uint32_t *)(dVs + pl<BKV>(row, n) + 2 * tq) =
                    pack_bf16x2(dva[n][2 * r], dva[n][2 * r + 1]);
            }
        }
        fence_async_smem();
        __syncthreads();
        if (threadIdx.x < 2 * (D / 64)) {
            int p = threadIdx.x >> 1, kv = threadIdx.x & 1; // thread 2 p + kv: plane p of dK / dV
            tma_out_4d<false>(kv ? &dvmap : &dkmap, (kv ? dVs : dKs) + p * BKV * 64, p * 64, kvh, k0,
                              b);
            bulk_wait_read();
        }
    } else {
        store_dkdv_rows<DN>(dk + (size_t)b * T * ldk + (size_t)kvh * D,
                            dv + (size_t)b * T * ldk + (size_t)kvh * D, ldk, key, T, tq, dka, dva, scale);
    }
    if (TR && trw) {
        unsigned long long c3 = clock64();
        trec[1] = ft_gtime(), trec[3] = c3;
        trec[4] = (unsigned long long)trs[7] | (unsigned long long)ft_smid() << 32;
        trec[5] -= trec[2], trec[6] = c3 - trec[6];
        for (int p = 0; p < 7; p++) trec[7 + p] = trs[p];
        trec[14] = blockIdx.x | (unsigned long long)blockIdx.y << 32;
    }
}

// ---------------------------------------------------------------------------------------------
// kernels

// the D 64 defaults of the backward (tilings and figures at flash_wgmma_tune, flash_wgmma.cu)
#define WG64_DKDV 11     // the atomic mode (s8; 7 before: the split pair)
#define WG64_DKDV_DET 11 // the ordered mode (s8; 7 before)
#define WG64_DQ 3
// D 128's ordered mode (the atomic mode: 4, the same kernel with fp32 dQ adds).
// s8 (H200; tune 11 = the fused kernel with PIPE 22 in both modes, the ordered one with
// fixed-point dQ (DET 3) as the sparse path since s6):
//   D 128 (B 1, H = KVH = 32, fwd+bwd ms at 16K / 32K; mslab-gpu-bench --attn --kernels wgmma,nd
//   --from-len 16384 --max-len 32768 --reps 3): ordered r1 split pair 22.13 / 86.75 -> fused DET 3
//   16.93 / 69.94 (454 / 440 TFLOP/s; atomic 16.73 / 70.53: here the fixed point costs nothing);
//   r3 with CTA groups of 8 (fused_hgroup): ordered 16.99 / 68.32, atomic 15.76 / 63.72 (489 / 483).
//   D 64 (the 162M LM's attention, B 8, T 4096, H = KVH = 12; the tests' flash_wgmma_perf64 rows,
//   backward + Di alone, ms): split pair (dK/dV 7 + dQ 3) 2.04-2.14; fused, one warpgroup of 64
//   keys at 2 CTAs per SM (184 registers): r1 ordered 2.166, atomic 1.778; with CTA groups of 4 /
//   8 / 16 (r3) 1.887 / 1.891 / 1.902 and 1.558 / 1.561 / 1.561 (fwd+bwd ~2.40 ms = 300 TFLOP/s
//   ordered). LM row 0 (ordered; mslab-gpu-bench --lm, MSLAB_LM_ROWS=0): 99.8 -> 91.8 ms/step (r3).
//   Tried at D 64 and removed: 3 CTAs per SM (168 registers): r1 2.143 / 1.938; 2 warpgroups of
//   64 keys (128-key CTAs) each making 32 dQ columns over all 128 keys (m64n32k16 from byte 64 of
//   the swizzled K rows; parity ok): r3 1.921 / 1.582 with groups of 4. The fixed point costs
//   ~0.33 ms at D 64 (trace, 128-key CTAs, no groups: 4224 vs 3513 cycles a step: dQ adds +231,
//   the 32-bit conversions; dS wait + barrier +240, the u64 bulk adds' smem reads; P +191).
//   Tried (r4; ordered / atomic, PIPE 22: 1.884 / 1.555) and removed: two staging tiles (a step's
//   bulk adds read while the next partial is written): 1.885 / 1.562; the conversions by FP32
//   adds, not F2I (whose pipe the softmax's ex2 shares): ordered 1.921; both 1.918. r5: the fixed
//   point by s32 bulk adds (DET 4, the default since): ordered 1.825 ms (atomic 1.572); LM row 0
//   ordered 91.8 ms/step (r4 with DET 3: 92.8; groups of 4: 92.8).
//   s10 (the ordered mode's cost at D 64; LM shape, ncu gpu__time_duration with --clock-control
//   none, us a call): r1 fused kernel 1542 ordered vs 1430 atomic (XU pipe 30% vs 17% busy: the
//   s32 F2I conversions share it with the softmax's ex2; long-scoreboard stalls 0.56 vs 0.41 per
//   issue: the row scales by __ldg), wg_kv_bound 27.0, fixed-point convert 50.6 vs 35.0 (double
//   division, 8-byte loads), wg_bwd_pre 41.8 vs 26.8 (with the row scales: 64-bit index divisions,
//   ilogbf / ldexpf in one lane a row); perf rows (test flash_wgmma_perf64, bwd + Di) 1.695 vs
//   1.526 ms. Now PIPE 118 (= 22 + 32 + 64): the row scales by cp.async and the checked FFMA
//   conversions (bwd_fused_body), the convert 4 elements a thread (35.6 us), the K / V bound's
//   memset in the accumulator's: r3 kernel 1473 vs 1423, perf rows 1.606 vs 1.522 ms (320.8 /
//   338.7 TFLOP/s; the s9 kernel 1.685 in the same run); r4 1.600 / 1.612 vs 1.525 (kernel 1461);
//   D 128 (B 1 T 16K H 32) ordered bwd 12.28 vs 12.93 ms with PIPE 22. Then wg_bwd_pre with
//   32-bit divisions and the scale from exponent bits: r5 35.9 us (plain 27.4); perf rows 1.600 /
//   1.607 vs 1.528 ms (4.9% over atomic: kernel 1475 vs 1432 us, wg_kv_bound 27.1, wg_bwd_pre +8.5,
//   convert +1.2); LM row 0 81.5 ms/step ordered, row 3 80.8 atomic (r5; r3 83.5 / 82.9).
//   Tried (s10) and removed: the partial kept in registers and staged (converted) under the next
//   step's S / dP products into one of two staging tiles, the bulk add after that step's dS
//   barrier: r1 ordered 1.795 vs 1.695 ms, atomic 1.621 vs 1.526; the FFMA conversions checked
//   before (max |x| per row, max.NaN), not after: kernel 1504 vs 1473 us (r2 / r3).
#define WG128_DKDV_DET 11
// MINB: CTAs per SM for the register budget (D 64 tilings dK/dV 7, dQ 3 / 4; s7, H4)
template <int D, int NWG, int ALD, bool SP, int MINB = 1>
__global__ void __launch_bounds__(128 * NWG, MINB)
    dkdv_kernel(bf16 *dk, bf16 *dv, const bf16 *dout, const float *lse, const float *Di,
                const bf16 *q, const bf16 *k, const bf16 *v, int T, int H, int KVH, float sl2,
                float scale, SpArgs sp) {
    dkdv_wg_body<D, NWG, ALD, SP>(dk, dv, dout, lse, Di, q, k, v, T, H, KVH, sl2, scale, sp);
}
template <int D, int NWG, bool SP, int MINB = 1>
__global__ void __launch_bounds__(128 * NWG, MINB)
    dq_kernel(bf16 *dq, const bf16 *dout, const float *lse, const float *Di, const bf16 *q,
              const bf16 *k, const bf16 *v, int T, int H, int KVH, float sl2, float scale,
              SpArgs sp) {
    dq_wg_body<D, NWG, SP>(dq, dout, lse, Di, q, k, v, T, H, KVH, sl2, scale, sp);
}

// MINB: CTAs per SM for the register budget (D 64: 2; the key lists' D 64: 3, s14; D 128: 1)
template <int D, int DET, int PIPE, int SP, int TR, int MINB = 1>
__global__ void __launch_bounds__(2 * D, MINB)
    bwd_fused_kernel(bf16 *dq, bf16 *dk, bf16 *dv, float *dqacc, int *counters, const bf16 *dout,
                     const float *lse, const float *Di, const bf16 *q, const bf16 *k,
                     const bf16 *v, int T, int H, int KVH, float sl2, float scale, SpArgs sp,
                     const float *rsc, const __grid_constant__ CUtensorMap dqmap,
                     const __grid_constant__ CUtensorMap qmap,
                     const __grid_constant__ CUtensorMap omap,
                     const __grid_constant__ CUtensorMap dkmap,
                     const __grid_constant__ CUtensorMap dvmap) {
    bwd_fused_body<D, DET, PIPE, SP, TR>(dq, dk, dv, dqacc, counters, dout, lse, Di, q, k, v, T, H,
                                         KVH, sl2, scale, sp, rsc, dqmap, qmap, omap, dkmap, dvmap);
}

// The fixed-point dQ (DET = 3): per (b, kv head) {max |K_jd|, max |V_j|_2} as float bits (non-
// negative floats order as their bits; NaN bits win: the row scales become NaN). CTA = (b * KVH +
// kv head, a chunk of rows), D / 8 lanes per row (16-byte loads; s9: a warp per row took 47 us per
// LM layer, B 8 T 4096 KVH 12 D 64), one atomicMax per CTA and value.
template <int D>
__global__ void wg_kv_bound(unsigned *m, const bf16 *k, const bf16 *v, int T, int KVH, int rows) {
    constexpr int L = D / 8, R = 32 / L; // lanes per row, rows per warp step
    int bk = blockIdx.x, b = bk / KVH, kvh = bk % KVH, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int t0 = blockIdx.y * rows, t1 = min(T, t0 + rows), j = lane % L;
    float a = 0.f, c = 0.f;
    bool nan = false;
#pragma unroll 4 // (s10: the loads of 4 steps issued together)
    for (int tb = t0 + warp * R; tb < t1; tb += (blockDim.x >> 5) * R) { // uniform per warp
        int t = tb + lane / L;
        float vv = 0.f;
        if (t < t1) {
            size_t o = (((size_t)b * T + t) * KVH + kvh) * D;
            uint4 xk = ((const uint4 *)(k + o))[j], xv = ((const uint4 *)(v + o))[j];
            const unsigned *pk = (const unsigned *)&xk, *pv = (const unsigned *)&xv;
#pragma unroll
            for (int i = 0; i < 4; i++) {
                float2 x = __bfloat1622float2(*(const __nv_bfloat162 *)&pk[i]);
                float2 y = __bfloat1622float2(*(const __nv_bfloat162 *)&pv[i]);
                a = fmaxf(a, fmaxf(fabsf(x.x), fabsf(x.y))), vv = fmaf(y.x, y.x, fmaf(y.y, y.y, vv));
                nan |= isnan(x.x + x.y);
            }
        }
#pragma unroll
        for (int off = L / 2; off > 0; off >>= 1) vv += __shfl_xor_sync(0xffffffffu, vv, off);
        c = fmaxf(c, vv), nan |= isnan(vv);
    }
    c = warp_max(c);
    a = warp_max(a), nan = __any_sync(0xffffffffu, nan);
    __shared__ float sa[32], sc[32];
    __shared__ int sn;
    if (threadIdx.x == 0) sn = 0;
    __syncthreads();
    if (lane == 0) {
        sa[warp] = a, sc[warp] = c;
        if (nan) sn = 1;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < (int)(blockDim.x >> 5); w++) a = fmaxf(a, sa[w]), c = fmaxf(c, sc[w]);
        atomicMax(m + 2 * bk, __float_as_uint(sn ? NAN : a));
        atomicMax(m + 2 * bk + 1, __float_as_uint(sn ? NAN : sqrtf(c)));
    }
}
// dq[row][2i, 2i + 1] = lanes * 2^-s * scale (row = (b, t, h)): the even element is the low 32
// bits as a signed lane (|its sum| < 2^31), the odd one the rest; power-of-2 scaling, exact.
// S32 (DET = 4): one s32 per element, 4 a thread (16-byte loads; n2 / 2 threads); 2^-s from the
// scale's exponent bits, not a double division (s10: 50.6 -> 35.6 us at the LM shape, fp32's 34.6)
template <bool S32>
__global__ void wg_dq_convert_fx(bf16 *dq, const long long *acc, const float *rsc, size_t n2,
                                 int D, float scale) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if constexpr (S32) {
        if (i >= n2 / 2) return;
        int4 p = __ldcs((const int4 *)acc + i);
        float sc = rsc[4 * i / D]; // 2^k, k = its exponent field - 127 (sc >= 2^-97: normal)
        unsigned eb = (__float_as_uint(sc) >> 23) & 0xFF;
        double f = (double)scale * __longlong_as_double((long long)(1150 - eb) << 52); // scale 2^-k
        float y[4] = {(float)((double)p.x * f), (float)((double)p.y * f), (float)((double)p.z * f),
                      (float)((double)p.w * f)};
        if (isnan(sc)) y[0] = y[1] = y[2] = y[3] = NAN;
        *((uint2 *)dq + i) = make_uint2(pack_bf16x2(y[0], y[1]), pack_bf16x2(y[2], y[3]));
        return;
    }
    if (i >= n2) return;
    long long p = __ldcs(acc + i);
    int lo = (int)(unsigned)(unsigned long long)p;
    long long hi = (p - lo) >> 32;
    float sc = rsc[2 * i / D];
    double f = (double)scale / sc; // sc a power of 2 (up to 2^127): exact in double
    float y0 = (float)((double)lo * f), y1 = (float)((double)hi * f);
    if (isnan(sc)) y0 = y1 = NAN;
    *((uint32_t *)dq + i) = pack_bf16x2(y0, y1);
}

// The sparse fused kernel's launch order (sp_order; s7): head-major as the grid, but each (b, kv
// head)'s long walks (inverse lists >= 3x its mean) start FO_SHIFT heads early, ahead of that
// head's CTAs: the s7 trace (32K) showed the last head's longest walks (170-202 steps) finishing
// ~0.5 ms after the rest. order[pos] = bh * nkb + kb.
constexpr int FO_SHIFT = 2;
// per bh (one CTA): each CTA's rank within its class (long: bit 30 set), the class sizes
__global__ void fo_rank(int *rank, int *nls, const int *count, int nreg, int nkb, int region) {
    int bh = blockIdx.x;
    const int *c = count + (size_t)bh * nreg;
    __shared__ int red[32], sl, ss;
    long long sum = 0;
    for (int kb = threadIdx.x; kb < nkb; kb += blockDim.x) sum += c[kb * 128 / region];
    for (int o = 16; o; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = (int)sum;
    if (threadIdx.x == 0) sl = ss = 0;
    __syncthreads();
    long long tot = 0;
    for (int w = 0; w < (int)(blockDim.x >> 5); w++) tot += red[w];
    for (int k0 = 0; k0 < nkb; k0 += blockDim.x) { // ranks in kb order, a chunk at a time
        int kb = k0 + threadIdx.x;
        bool in = kb < nkb, lg = in && (long long)c[kb * 128 / region] * nkb >= 3 * tot && tot > 0;
        unsigned bl = __ballot_sync(0xffffffffu, lg), bs = __ballot_sync(0xffffffffu, in && !lg);
        __shared__ int wl[32], wsh[32];
        int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
        if (lane == 0) wl[warp] = __popc(bl), wsh[warp] = __popc(bs);
        __syncthreads();
        int ol = sl, os = ss;
        for (int w = 0; w < warp; w++) ol += wl[w], os += wsh[w];
        unsigned below = (1u << lane) - 1;
        if (in)
            rank[(size_t)bh * nkb + kb] =
                lg ? (ol + __popc(bl & below)) | (1 << 30) : os + __popc(bs & below);
        __syncthreads();
        if (threadIdx.x == 0)
            for (int w = 0; w < (int)(blockDim.x >> 5); w++) sl += wl[w], ss += wsh[w];
        __syncthreads();
    }
    if (threadIdx.x == 0) nls[2 * bh] = sl, nls[2 * bh + 1] = ss;
}
// one thread: each bh's first long / short position (group g = the long walks of bh g + FO_SHIFT
// (bh <= FO_SHIFT for g 0), then the short ones of bh g)
__global__ void fo_base(int *base, const int *nls, int nbh) {
    int pos = 0;
    for (int g = 0; g < nbh; g++) {
        for (int bh = g == 0 ? 0 : g + FO_SHIFT; bh <= g + FO_SHIFT && bh < nbh; bh++)
            base[2 * bh] = pos, pos += nls[2 * bh];
        base[2 * g + 1] = pos, pos += nls[2 * g + 1];
    }
}
__global__ void fo_place(int *order, const int *rank, const int *base, int nkb, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    int bh = (int)(i / nkb), r = rank[i];
    order[base[2 * bh + !(r >> 30)] + (r & ((1 << 30) - 1))] = (int)i;
}

// ---------------------------------------------------------------------------------------------
// host

// flash_wgmma_bwd.cuh. The slot sparse_bf16.cu's backward and select_bf16's scratch use too: all
// of them are dead once their call returns, so one buffer serves them (MS fwd+bwd at 128K peaked
// at 1.31x the bytes of q, k, v, o + grads with a buffer of its own here: the selection's ~1 GB
// stayed allocated beside the backward's accumulators).
void *wg_bwd_scratch(size_t bytes) { return cuda_scratch(SCRATCH_SPARSE_BF16, bytes); }

// the fused kernel's trace (diagnostics above): on with MSLAB_BWD_TRACE=1
static bool fused_trace_on() {
    static int on = -1;
    if (on < 0) on = getenv("MSLAB_BWD_TRACE") && atoi(getenv("MSLAB_BWD_TRACE")) > 0;
    return on > 0;
}
static unsigned long long *fused_trace_buf(size_t nrec) {
    static unsigned long long *buf = NULL;
    static size_t cap = 0;
    if (nrec > cap) {
        if (buf) cudaCheck(cudaFree(buf));
        cudaCheck(cudaMalloc(&buf, nrec * FT_REC * 8));
        cap = nrec;
        cudaCheck(cudaMemcpyToSymbol(g_fused_trace, &buf, sizeof buf));
    }
    return buf;
}
static int ft_cmp(const void *a, const void *b) { // by SM, then start time
    const unsigned long long *x = (const unsigned long long *)a, *y = (const unsigned long long *)b;
    unsigned sx = (unsigned)(x[4] >> 32), sy = (unsigned)(y[4] >> 32);
    if (sx != sy) return sx < sy ? -1 : 1;
    return x[0] < y[0] ? -1 : x[0] > y[0];
}
// one line: span, SM busy share, the tail (mean idle per SM after its last CTA), the gaps between
// an SM's CTAs, cycles per step and per phase, prologue / epilogue, per-step cycles of short and
// long walks
static void fused_trace_report(const unsigned long long *drec, size_t n, const char *what) {
    unsigned long long *r = (unsigned long long *)malloc(n * FT_REC * 8);
    cudaCheck(cudaDeviceSynchronize());
    cudaCheck(cudaMemcpy(r, drec, n * FT_REC * 8, cudaMemcpyDeviceToHost));
    qsort(r, n, FT_REC * 8, ft_cmp);
    for (size_t i = 0; i < n; i++) r[i * FT_REC + 15] = 0; // host mark: listed below
    unsigned long long g0 = ~0ull, g1 = 0;
    double busy = 0, cyc = 0, steps = 0, ph[7] = {0}, pro = 0, epi = 0, gap = 0, tail = 0;
    double sc[2] = {0, 0}, sn[2] = {0, 0};
    int nsm = 0, ngap = 0, smax = 0;
    for (size_t i = 0; i < n; i++) {
        const unsigned long long *x = r + i * FT_REC;
        g0 = x[0] < g0 ? x[0] : g0, g1 = x[1] > g1 ? x[1] : g1;
    }
    for (size_t i = 0; i < n; i++) {
        const unsigned long long *x = r + i * FT_REC;
        int st = (int)(unsigned)x[4];
        busy += (double)(x[1] - x[0]), cyc += (double)(x[3] - x[2]), steps += st;
        smax = st > smax ? st : smax;
        for (int p = 0; p < 7; p++) ph[p] += (double)x[7 + p];
        pro += (double)x[5], epi += (double)x[6];
        double body = 0;
        for (int p = 0; p < 7; p++) body += (double)x[7 + p];
        if (st > 1 && st <= 40) sc[0] += body, sn[0] += st - 1;
        if (st >= 200) sc[1] += body, sn[1] += st - 1;
        bool last = i + 1 == n || (x[4] >> 32) != (x[FT_REC + 4] >> 32);
        if (i == 0 || (x[4] >> 32) != (x[-FT_REC + 4] >> 32)) nsm++;
        else gap += (double)x[0] - (double)x[-FT_REC + 1], ngap++;
        if (last) tail += (double)(g1 - x[1]);
    }
    double span = (double)(g1 - g0), ghz = cyc / busy, sb = steps - (double)n;
    double pst =
        (sb > 0 ? ph[0] / sb : 0) + (ph[1] + ph[2] + ph[3] + ph[4] + ph[5] + ph[6]) / steps;
    printf("    (fused trace %s: %zu CTAs on %d SMs, span %.3f ms, SM busy %.1f%%, tail idle %.3f ms "
           "per SM, gap %.2f us; %.2f GHz; steps %.0f (mean %.1f, max %d); per step %.0f cycles "
           "(%.2f us): wait %.0f, S %.0f, P %.0f, dP+dS %.0f, dS+bar %.0f, dK/dV/dQ %.0f, dQ adds "
           "%.0f; "
           "prologue %.0f, epilogue %.0f cycles; per step, walks <= 40: %.0f, >= 200: %.0f)\n",
           what, n, nsm, span * 1e-6, 100 * busy / (span * nsm), tail / nsm * 1e-6,
           ngap ? gap / ngap * 1e-3 : 0, ghz, steps, steps / n, smax,
           pst, pst / ghz * 1e-3, ph[0] / sb,
           ph[1] / steps, ph[6] / steps, ph[2] / steps, ph[3] / steps, ph[4] / steps, ph[5] / steps,
           pro / n,
           epi / n, sn[0] ? sc[0] / sn[0] : 0, sn[1] ? sc[1] / sn[1] : 0);
    // the last CTAs to finish: block (x, y), steps, start and end (us after the first start)
    printf("    (fused trace %s: last CTAs (block x, y: steps, start-end us):", what);
    for (int k = 0; k < 6; k++) {
        size_t best = n;
        for (size_t i = 0; i < n; i++)
            if (r[i * FT_REC + 15] == 0 && (best == n || r[i * FT_REC + 1] > r[best * FT_REC + 1]))
                best = i;
        if (best == n) break;
        unsigned long long *x = r + best * FT_REC;
        x[15] = 1;
        printf(" %u,%u: %u, %.0f-%.0f;", (unsigned)x[14], (unsigned)(x[14] >> 32), (unsigned)x[4],
               (x[0] - g0) * 1e-3, (x[1] - g0) * 1e-3);
    }
    printf(")\n");
    fflush(stdout);
    free(r);
}
template <int D, int NWG, int ALD = 0, bool SP = false, int MINB = 1>
static void dkdv_run(bf16 *dk, bf16 *dv, const bf16 *dout, const float *lse, const float *Di,
                     const bf16 *q, const bf16 *k, const bf16 *v, int B, int T, int H, int KVH,
                     float sl2, float scale, SpArgs sp = SpArgs{}) {
    constexpr int BKV = 64 * NWG;
    size_t smem = 1024 + sizeof(bf16) * (size_t)(2 * BKV * D + 4 * 64 * D) + sizeof(float) * 4 * 64;
    static bool init = false;
    if (!init) smem_optin(dkdv_kernel<D, NWG, ALD, SP, MINB>, smem), init = true;
    dim3 grid(B * KVH, (T + BKV - 1) / BKV);
    if (SP && sp.hmajor) grid = dim3(grid.y, grid.x);
    dkdv_kernel<D, NWG, ALD, SP, MINB><<<grid, 128 * NWG, smem>>>(
        dk, dv, dout, lse, Di, q, k, v, T, H, KVH, sl2, scale, sp);
    cudaLaunchCheck();
}
template <int D, int NWG, bool SP = false, int MINB = 1>
static void dq_run(bf16 *dq, const bf16 *dout, const float *lse, const float *Di, const bf16 *q,
                   const bf16 *k, const bf16 *v, int B, int T, int H, int KVH, float sl2,
                   float scale, SpArgs sp = SpArgs{}) {
    constexpr int BQ = 64 * NWG;
    size_t smem = 1024 + sizeof(bf16) * (size_t)(2 * BQ * D + 4 * 64 * D);
    static bool init = false;
    if (!init) smem_optin(dq_kernel<D, NWG, SP, MINB>, smem), init = true;
    dim3 grid(B * H, (T + BQ - 1) / BQ);
    if (SP && sp.hmajor) grid = dim3(grid.y, grid.x);
    dq_kernel<D, NWG, SP, MINB><<<grid, 128 * NWG, smem>>>(
        dq, dout, lse, Di, q, k, v, T, H, KVH, sl2, scale, sp);
    cudaLaunchCheck();
}
// the fused kernel's dynamic shared memory (the body's layout)
template <int D, int PIPE> static constexpr size_t fused_smem() {
    constexpr int BKV = D, BQ = 64, NB = PIPE & 8 ? 3 : 2; // the Q / dO / lse / Di buffers
    return 1024 + sizeof(bf16) * (size_t)(2 * BKV * D + 2 * NB * BQ * D + BKV * BQ) +
           sizeof(float) * (PIPE & 32 ? 3 : 2) * NB * BQ + 8 * NB + 32 + // + mbarriers, trace sums
           (PIPE & 4 ? BQ * D * 4 : 0);
}
// bwd_fused_kernel<D, DET, PIPE, SP, 0, MINB> on grid (args: the kernel's); MSLAB_BWD_TRACE: the
// TR = 1 instantiation and its report (label T) instead
template <int D, int DET, int PIPE, int SP, int MINB, class... A>
static void fused_go(dim3 grid, size_t smem, int T, A... args) {
    static bool init = false;
    if (!init) {
        smem_optin(bwd_fused_kernel<D, DET, PIPE, SP, 0, MINB>, smem), init = true;
        if (MINB >= 3) // (s14: the whole carveout, so that 3 CTAs fit)
            cudaCheck(cudaFuncSetAttribute(bwd_fused_kernel<D, DET, PIPE, SP, 0, MINB>,
                                           cudaFuncAttributePreferredSharedMemoryCarveout, 100));
    }
    if constexpr (DET != 1 && DET != 2) if (fused_trace_on()) { // diagnostics
        // (at 2 CTAs per SM at most: with the stamps' registers ptxas serialises the wgmma at 3)
        constexpr int TMINB = MINB < 2 ? MINB : 2;
        static bool init1 = false;
        if (!init1) smem_optin(bwd_fused_kernel<D, DET, PIPE, SP, 1, TMINB>, smem), init1 = true;
        unsigned long long *rec = fused_trace_buf((size_t)grid.x * grid.y);
        bwd_fused_kernel<D, DET, PIPE, SP, 1, TMINB><<<grid, 2 * D, smem>>>(args...);
        cudaLaunchCheck();
        char what[64];
        snprintf(what, sizeof what, "%s DET %d PIPE %d T %d",
                 SP == 2 ? "keys" : SP ? "sparse" : "dense", DET, PIPE, T);
        fused_trace_report(rec, (size_t)grid.x * grid.y, what);
        return;
    }
    bwd_fused_kernel<D, DET, PIPE, SP, 0, MINB><<<grid, 2 * D, smem>>>(args...);
    cudaLaunchCheck();
}
template <int D, int DET, int PIPE, bool SP = false, int MINB = 1>
static void fused_run(bf16 *dq, bf16 *dk, bf16 *dv, float *dqacc, int *cnt, const bf16 *dout,
                      const float *lse, const float *Di, const bf16 *q, const bf16 *k,
                      const bf16 *v, int B, int T, int H, int KVH, float sl2, float scale,
                      SpArgs sp = SpArgs{}, const float *rsc = nullptr) {
    constexpr int BKV = D, BQ = 64; // the body's key block: a warpgroup per 64 keys
    size_t smem = fused_smem<D, PIPE>();
    // PIPE & 4: dqacc [B, T, H, D] fp32 (DET 4: s32) as (columns, H, T, B), box 32 columns x 64
    // rows, 128-byte swizzle
    CUtensorMap dqmap, qmap, omap, dkmap, dvmap;
    memset(&dqmap, 0, sizeof dqmap), memset(&qmap, 0, sizeof qmap), memset(&omap, 0, sizeof omap);
    memset(&dkmap, 0, sizeof dkmap), memset(&dvmap, 0, sizeof dvmap);
    if constexpr ((PIPE & 16) != 0) // Q / dO tiles, dK / dV by TMA: planes, 128-byte swizzle
        MS_ASSERT(make_map(&qmap, q, B, T, H, D, BQ) && make_map(&omap, dout, B, T, H, D, BQ) &&
                      make_map(&dkmap, dk, B, T, KVH, D, BKV) &&
                      make_map(&dvmap, dv, B, T, KVH, D, BKV),
                  "fused_run: the Q / dO / dK / dV tensor maps");
    if constexpr ((PIPE & 4) != 0) {
        size_t dims[4] = {(size_t)D, (size_t)H, (size_t)T, (size_t)B};
        size_t str[3] = {(size_t)D * 4, (size_t)H * D * 4, (size_t)T * H * D * 4};
        int box[4] = {32, 1, BQ, 1};
        MS_ASSERT(wg_acc_map(&dqmap, DET == 4 ? CU_TENSOR_MAP_DATA_TYPE_INT32 : CU_TENSOR_MAP_DATA_TYPE_FLOAT32,
                             4, dqacc, dims, str, box),
                  "fused_run: the dQ accumulator's tensor map");
    }
    dim3 grid(B * KVH, (T + BKV - 1) / BKV);
    if (SP && sp.hmajor) grid = dim3(grid.y, grid.x);
    fused_go<D, DET, PIPE, SP, MINB>(grid, smem, T, dq, dk, dv, dqacc, cnt, dout, lse, Di, q, k, v,
                                     T, H, KVH, sl2, scale, sp, rsc, dqmap, qmap, omap, dkmap,
                                     dvmap);
}
// Di; with rsc (the fixed-point dQ, DET = 3) also the K / V bound kvm [B, KVH][2] and the rows'
// scales (the scheme at sparse_wgmma_bwd)
template <int D>
static void bwd_pre_run(float *Di, float *rsc, unsigned *kvm, const bf16 *dout, const bf16 *out,
                        const bf16 *k, const bf16 *v, int B, int T, int H, int KVH,
                        const bf16 *q = nullptr, bool kvm_zero = false) {
    size_t rows = (size_t)B * T * H;
    if (rsc) {
        if (!kvm_zero) cudaCheck(cudaMemsetAsync(kvm, 0, (size_t)B * KVH * 8, 0));
        wg_kv_bound<D><<<dim3(B * KVH, cdiv_u(T, 128)), 256>>>(kvm, k, v, T, KVH, 128);
        cudaLaunchCheck();
        wg_bwd_pre<D><<<wg_bwd_pre_blocks(rows, D), 256>>>(Di, dout, out, B, T, H, rsc, kvm, 30, H / KVH,
                                                           q);
    } else {
        wg_bwd_pre<D><<<wg_bwd_pre_blocks(rows, D), 256>>>(Di, dout, out, B, T, H);
    }
    cudaLaunchCheck();
}
// dq from the fused kernel's accumulator: fp32, or (rsc) the fixed-point lanes (s32: one per
// element, DET = 4)
static void dq_convert_run(bf16 *dq, const float *dqacc, const float *rsc, size_t rows, int D,
                           float scale, bool s32 = false) {
    if (rsc) {
        size_t n2 = rows * D / 2;
        if (s32)
            wg_dq_convert_fx<true><<<cdiv_u(n2 / 2, 256), 256>>>(dq, (const long long *)dqacc, rsc, n2,
                                                             D, scale);
        else
            wg_dq_convert_fx<false><<<cdiv_u(n2, 256), 256>>>(dq, (const long long *)dqacc, rsc, n2,
                                                              D, scale);
    } else {
        size_t n4 = rows * D / 4;
        wg_dq_convert<<<cdiv_u(n4, 256), 256>>>(dq, dqacc, n4, scale);
    }
    cudaLaunchCheck();
}

// the dense fused kernel's CTA groups (SpArgs.hgroup; s8): 8 (b, kv head)s, key blocks outer inside a
// group, so that the CTAs which add into a dQ tile run near together (its adds hit L2; the grid's
// order, key blocks outer over all heads, spread them over the whole run); MSLAB_FLASH_WGMMA_HGROUP
// =n another size (0: the grid's order). r3 (H200, ms, fwd+bwd; bwd +Di alone at D 64): B 8 T 4096
// H 12 D 64 ordered / atomic, groups 0: 2.141 / 1.855, 4: 1.887 / 1.558, 8: 1.891 / 1.561, 16:
// 1.902 / 1.561; D 128 B 1 H 32 16K / 32K groups 8: ordered 16.99 / 68.32, atomic 15.76 / 63.72
// (0, r2: 17.00 / 71.01, 16.76 / 72.35)
static int fused_hgroup() {
    static int g = -1;
    if (g < 0) g = getenv("MSLAB_FLASH_WGMMA_HGROUP") ? atoi(getenv("MSLAB_FLASH_WGMMA_HGROUP")) : 8;
    return g > 0 ? g : 0;
}

// the dK/dV tuning the backward runs for tune value dkdv (9: the default per D and mode, s8: the
// fused kernel; figures at WG128_DKDV_DET) and whether that is the fused kernel (its atomic mode's
// dQ adds may differ between calls); the tests call it too
extern "C" int flash_wgmma_bwd_tiling(int dkdv, int D, int det, int *fused) {
    if (dkdv == 9) dkdv = D == 64 ? (det ? WG64_DKDV_DET : WG64_DKDV) : det ? WG128_DKDV_DET : 4;
    if (fused) *fused = dkdv == 11 || (D == 128 && dkdv >= 2 && dkdv <= 4);
    return dkdv;
}

template <int D>
static void bwd_launch(bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *out,
                       const float *lse, const bf16 *q, const bf16 *k, const bf16 *v, int B, int T,
                       int H, int KVH) {
    size_t rows = (size_t)B * T * H, nqt = (T + 63) / 64;
    bool det = attn_bf16_deterministic() != 0;
    // 9 (the default): the fused backward, both D, both modes (s8; figures at WG128_DKDV_DET):
    // tune 11, = 4 in the atomic mode (TMA tiles and bulk dQ adds, PIPE 22; s7 r3, 16K fwd+bwd
    // atomic 16.52 ms with PIPE 30 vs 20.72 with tune 2); until s8 the ordered mode and D 64 ran
    // the split path (dK/dV 5 / 7, dQ as tuned)
    int fused_i;
    int dkdv_t = flash_wgmma_bwd_tiling(wg_tune_dkdv, D, det, &fused_i);
    // 11 (s8): the fused kernel with TMA tiles and bulk dQ adds (PIPE 22) in both modes, ordered =
    // fixed-point dQ (DET 4: s32 bulk adds; DET 3 until s8 r5); D 64: 1 warpgroup of 64 keys, 2 CTAs per SM
    bool fx = dkdv_t == 11, fused = fused_i != 0;
    // dQ: 3 fixed point (by s32 bulk adds: DET 4), 0 atomic, 2 per-warp red order, 1 per-CTA
    // load-add-store (tune 3)
    int mode = fx ? (det ? 3 : 0) : det ? (dkdv_t == 3 ? 1 : 2) : 0;
    // workspace: Di [rows]; fused: dQ accumulator [rows][D] fp32 (or s32), counters [B, H,
    // tiles, 8]; DET 3: row scales [rows], the K / V bound [B, KVH][2]
    size_t ncnt = (size_t)B * H * nqt * 8;
    // (the K / V bound right after the accumulator: one memset clears both; s10)
    size_t acc_off = align256(rows * 4), kvm_off = acc_off + rows * D * 4;
    size_t cnt_off = align256(kvm_off + (size_t)B * KVH * 8), rsc_off = cnt_off + align256(ncnt * 4);
    char *ws = (char *)wg_bwd_scratch(!fused ? rows * 4 : mode == 3 ? rsc_off + rows * 4
                                                                    : cnt_off + ncnt * 4);
    float *Di = (float *)ws, *rsc = mode == 3 ? (float *)(ws + rsc_off) : nullptr;
    float *dqacc = (float *)(ws + acc_off);
    if (fused && mode != 1)
        cudaCheck(cudaMemsetAsync(dqacc, 0, rows * D * 4 + (mode == 3 ? (size_t)B * KVH * 8 : 0), 0));
    bwd_pre_run<D>(Di, rsc, (unsigned *)(ws + kvm_off), dout, out, k, v, B, T, H, KVH, nullptr, true);
    float scale = 1.f / sqrtf((float)D), sl2 = WG_LOG2E * scale;
    if (fused) {
        int *cnt = (int *)(ws + cnt_off);
        SpArgs sp = {};
        if (mode == 1 || mode == 2) { // (the tests' stall: counters at -1, no turn comes)
            cudaCheck(cudaMemsetAsync(cnt, ord_stall() ? 0xff : 0, ncnt * sizeof(int), 0));
            sp.ow = ord_watch(ATTN_ORD_DENSE_WG, 1ll << 31);
        }
        sp.hgroup = mode == 0 || mode == 3 ? fused_hgroup() : 0; // the PIPE 22 paths
#define FUSED_GO(DET, PIPE)                                                                       \
    fused_run<D, DET, PIPE, false, D == 64 ? 2 : 1>(dq, dk, dv, dqacc, cnt, dout, lse, Di, q, k, v, \
                                                   B, T, H, KVH, sl2, scale, sp, rsc)
        bool s32 = mode == 3; // (fx only) the fixed point by s32 bulk adds
        if (fx || dkdv_t == 4) { // TMA tiles, bulk dQ adds (the sparse path's PIPE 22)
            if (mode == 3) FUSED_GO(4, 118); // (s10; the s9 kernel PIPE 22: figures at WG128_DKDV_DET)
            else if (mode == 0) FUSED_GO(0, 22);
            else if constexpr (D == 128) FUSED_GO(2, 0); // tune 4, ordered: = 2
        } else if constexpr (D == 128) {
            if (mode == 1) {
                FUSED_GO(1, 0);
                return; // dq written by the kernel
            }
            if (mode == 2) FUSED_GO(2, 0);
            else FUSED_GO(0, 0);
        }
#undef FUSED_GO
        dq_convert_run(dq, dqacc, rsc, rows, D, scale, s32);
        return;
    }
    switch (dkdv_t) {
    case -1: break;
    case 1: dkdv_run<D, 1>(dk, dv, dout, lse, Di, q, k, v, B, T, H, KVH, sl2, scale); break;
    case 5: dkdv_run<D, 1, 1>(dk, dv, dout, lse, Di, q, k, v, B, T, H, KVH, sl2, scale); break;
    case 6: dkdv_run<D, 2, 1>(dk, dv, dout, lse, Di, q, k, v, B, T, H, KVH, sl2, scale); break;
    // D 64: 5 at 3 CTAs / SM (173 -> 168 registers; D 128: as 5). 8 (6 at 2 CTAs / SM) and 10 (5
    // at 4) removed in s8 (they run 0 now): s7 r1 / r2 at the LM shape 1.440 / 1.502 ms vs 7's
    // 1.225, both spilled and ptxas serialised their wgmma (C7512)
    case 7: dkdv_run<D, 1, 1, false, D == 64 ? 3 : 1>(dk, dv, dout, lse, Di, q, k, v, B, T, H, KVH, sl2, scale); break;
    default: dkdv_run<D, 2>(dk, dv, dout, lse, Di, q, k, v, B, T, H, KVH, sl2, scale); break;
    }
    switch (wg_tune_dq == 9 ? (D == 64 ? WG64_DQ : 2) : wg_tune_dq) { // 9: per D
    case -1: break;
    case 1: dq_run<D, 1>(dq, dout, lse, Di, q, k, v, B, T, H, KVH, sl2, scale); break;
    case 2: dq_run<D, 3>(dq, dout, lse, Di, q, k, v, B, T, H, KVH, sl2, scale); break;
    // D 64: 0 at 2 CTAs / SM, 1 at 4 (141 -> 128 registers; D 128: as 0 / 1)
    case 3: dq_run<D, 2, false, D == 64 ? 2 : 1>(dq, dout, lse, Di, q, k, v, B, T, H, KVH, sl2, scale); break;
    case 4: dq_run<D, 1, false, D == 64 ? 4 : 1>(dq, dout, lse, Di, q, k, v, B, T, H, KVH, sl2, scale); break;
    default: dq_run<D, 2>(dq, dout, lse, Di, q, k, v, B, T, H, KVH, sl2, scale); break;
    }
}

extern "C" int flash_wgmma_bwd(uint16_t *dq, uint16_t *dk, uint16_t *dv, const uint16_t *dout,
                               const uint16_t *out, const float *lse, const uint16_t *q,
                               const uint16_t *k, const uint16_t *v, int B, int T, int H, int KVH,
                               int D) {
    if (!shape_ok(B, T, H, KVH, D)) return -1;
    wg_tune_from_env();
    if (D == 64)
        bwd_launch<64>((bf16 *)dq, (bf16 *)dk, (bf16 *)dv, (const bf16 *)dout,
                       (const bf16 *)out, lse, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v,
                       B, T, H, KVH);
    else
        bwd_launch<128>((bf16 *)dq, (bf16 *)dk, (bf16 *)dv, (const bf16 *)dout,
                        (const bf16 *)out, lse, (const bf16 *)q, (const bf16 *)k,
                        (const bf16 *)v, B, T, H, KVH);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// block-sparse backward over an index list (attn_bf16.h sparse_wgmma_bwd): the split kernels with
// the sparse walks (SP = true): Di, the inverse list (sparse_inverse_build), dK/dV (1 warpgroup,
// 64 keys: a CTA lies in one region) over the region's inverse list, dQ (2 warpgroups when the
// query block is a multiple of 128 rows, else 1) over the block's list: no fp atomics, bitwise
// repeatable. Where D = 128 and the regions are multiples of 128 keys the fused kernel instead
// (5 products, not 7): atomic mode, dQ by fp32 atomics (hmajor grid); ordered mode (s6), dQ by
// fixed-point integer reds, bitwise repeatable (integer adds commute):
//   wg_kv_bound: per (b, kv head) max |K_jd| and max |V_j|_2; wg_bwd_pre: per row i a power of 2
//   s_i with (|dO_i|_2 max|V_j|_2 + |Di|) max|K_jd| * 1.0625 * s_i < 2^30, which bounds every
//   partial sum of the row's dQ (sum_j P_ij <= 1); each step's partial x * s_i is rounded to an
//   integer, two columns packed in one 64-bit red (odd << 32) + even (the even lane's sum stays
//   in int32, so the convert recovers both exactly); dq = sum / s_i / sqrt(D). Absolute error per
//   element <= (#partials) 2^-31 of the row's bound: the bound exceeds |dQ| by ~1e3 on N(0, 1)
//   inputs, so ~1e-6 relative (fp32 atomics ~1e-7; the bf16 output 4e-3). A non-finite K / V /
//   dO row gives a NaN scale and a NaN dq row. The inverse lists walked latest block first and
//   lse / Di by cp.async (PIPE = 2) there (-1 tunables: on this path only).
// Handles regions and query
// blocks that are multiples of 64 (moba-blk 128 / 128; ms with w >= 64), no positions inside
// (kpos); else -1, except 16 / 32-key regions (both modes, D = 64 / 128, query blocks of 128k
// rows, no window: ms with w 16 / 32): the key-list fused kernel (SP = 2, sparse_wgmma_keys.cu;
// s9) or sparse_wgmma_small.cu's sq_fused_kernel.
// MSLAB_SPARSE_WGMMA_BWD=0 declines every call (the mma.sync kernels run it); =split: the split
// kernels only (no fused / small-region kernel in the atomic mode); =nosmall: no small-region one;
// containing "nofx": no ordered fused kernel; "desc" / "nodesc", "ald" / "noald": force the
// latest-first walks / the cp.async lse on / off on every path; "notml": the s6 fused paths (no
// TMA, per-thread dQ reds); "nonb3": two Q / dO buffers (PIPE 22); "order" / "noorder": the
// launch order (sp_order). MSLAB_BWD_TRACE=1: the fused kernel's trace (diagnostics).
// Grids: the split kernels head-fastest (dense's order), the fused one head-major (the CTAs of a
// head together: its Q / dO stay in L2 while its key blocks walk their scattered lists).
// H200 (r1 / r2; B = 1, H = KVH = 32, D = 128, T = 32K, bwd alone, TFLOP/s at 2.5x the forward's
// 4 D flops per pair): moba-blk (2.14e9 pairs) ordered 12.5-12.6 ms (~218; Di + inverse list 0.24,
// dK/dV 7.85 (280 real), dQ 4.9 (335 real)), atomic fused 11.5 (239; head-fastest 12.5-12.8),
// atomic split 12.7-12.9; sparse_bf16 15.6-16.4 / atomic 13.1-13.3. ms w64 top64 m2 (3.97e9
// pairs): ordered 22.9-23.0 (221), atomic 22.9-23.2; sparse_bf16 27.6-27.8 / 23.1-23.2. dK/dV
// with 128-key CTAs (tunable): 12.9-13.4 vs 12.5-13.0. Bench moba-blk fwd+bwd (selection
// included) 32K: 15.3 ms ordered, 13.6 atomic (r3, with the r3 forward; r0: 21.8). ms paper
// config (6.71e9 pairs) 32K bwd, atomic: small-region kernel 32.8 ms (262) vs sparse_bf16's 37.9
// (r4 perf row; s8: 24.9 atomic, 30.3 ordered, sparse_wgmma_small.cu; s9 key lists: 19.5 / 23.8,
// sparse_wgmma_keys.cu); bench fwd+bwd atomic
// 46.9 ms (r3).
// s6 r1 (moba-blk; perf rows, MSLAB_SWB_PERF_MIN; RAND = q, k rows drawn at random, lists like the
// bench's; TFLOP/s at 2.5x fwd): 32K (inverse entries per region max 163 perf_qkv / 122 RAND,
// mean 16.5): ordered split 12.48 / 12.49 ms (220), atomic fused 11.45 / 11.25 (240 / 244);
// ordered fused with one int64 red per element 18.3 / 18.0 (150; ncu: lg_throttle and long
// scoreboard stalls, 2x the reds of the float2 ones) -> removed for the 32-bit lanes: 12.06 / 11.99
// (228), latest block first + lse by cp.async 11.88 / 11.87 (231). 128K RAND (3.35e10 pairs,
// inverse max 514, mean 63): ordered split 190.5 (225), atomic 154.7 (278), int64 264.6, lanes
// 162.5 (264), lanes latest first + cp.async lse 159.7 (269).
//   Latest block first alone: atomic 11.45 / 159.9 (vs 11.45 / 154.7: worse at 128K), split
//   ordered 12.61 / 193.0 (vs 12.48 / 190.5), split with head-major dK/dV 12.97 / 184.7: not the
//   default for the atomic mode or the split path. lse by cp.async alone, atomic: 11.54 / 154.2
//   (neutral). Work order "the first 4 regions of every head first, then head-major" (the longest
//   inverse lists first): atomic 11.36 / 11.32 / 153.9 vs 11.45 / 11.25 / 154.7: noise -> removed.
//   ncu (32K RAND, one call): split dK/dV 7.38 ms (L2 hit 26 %, DRAM 1.79 TB/s), dQ 4.87 (L2 18 %),
//   fused atomic 10.8 (L2 82 %, DRAM 11 %), fused lanes 11.2 (latest first + cp.async 11.1); Di
//   0.20, converts 0.19 (fp32) / 0.28 (lanes).
//   Not built: the rank-ordered fused kernel (dense DET = 2 for lists): a CTA meets a dQ tile at a
//   step that depends on its own list, and the earliest regions (launched first) have the longest
//   lists, so ordered adds would make every CTA wait for the slowest walk (dense DET = 2 already
//   lost to the split path: 22.4 vs 18.2 ms at 16K). Splitting long inverse lists: the long lists
//   start first (early regions) and the work-order test above shows no tail to win.
// s6 r2 (defaults as now: ordered = fused, fixed-point dQ with the per-(b, kv head) bound, latest
// first, cp.async lse): perf rows RAND 32K ordered 12.06 ms (228; split 12.47, fused in list order
// with plain lse loads 12.35, atomic 11.25), 128K 159.0 (270; split 194.7, plain 162.4, atomic
// 154.9). Bench (mslab-gpu-bench --attn --kernels moba-blk,nd --from-len 16384 --max-len 131072
// --reps 3; fwd+bwd incl. the selection, ms) ordered / atomic: 16K 4.50 / 4.19, 32K 14.46 / 13.58,
// 64K 51.6 / 49.3, 128K 199.1 / 195.9 (s5 final ordered: 4.53, 15.76, 61.3, 240.2); flex-moba
// (s5 peers, selection included: 6.33, 13.47, 45.7, 169.5) / ours: ordered 1.41 / 0.93 / 0.89 /
// 0.85x, atomic 1.51 / 0.99 / 0.93 / 0.87x.
// s7 (H3; 32K moba-blk RAND, the perf rows, bwd alone, ms ordered / atomic; MSLAB_BWD_TRACE: per-
// CTA stamps and step phases, one line per launch): the s6 fused path spent 8500 cycles a 64-query
// step vs the dense fused kernel's 6300 (32K): (1) the dQ reds, 1400-1800 cycles a step -> bulk
// tensor reduce-adds from a staging tile (PIPE & 4); (2) the cp.async tiles -> TMA (PIPE & 16),
// dK / dV through smem + TMA stores (epilogue 7400 -> 4500 cycles): s6 path 12.03 / 11.32 ->
// 10.22 / 9.10 (128K, reps 1: 159.7 / 155.3 -> 137.0 / 122.8); (3) the window / causal cut as
// `cut || (wcut && ..)` compiled to 3 branches per score on the SP path (PTX: 96 bra.uni in the
// P stage; the dense path's `diag && ..` none): the P stage took 2500 cycles a step vs ~500 ->
// bitwise & / | (also in the split kernels). Not kept: see the PIPE bits at bwd_fused_body.
// Tail (trace, 32K): SMs 94% busy; the last head's longest walks (170-202 steps) end ~0.5 ms after
// the rest -> sp_order (fo_*): those walks launched FO_SHIFT heads early (r3: 8.63 / 7.45 -> 8.44 /
// 7.26 ms; SMs 97% busy, tail 0.17 ms).
// s7 r4 (the defaults: PIPE 22 + the launch order, both modes): perf rows 32K ordered 8.01 ms (343
// TFLOP/s at 2.5x), atomic 6.72 (408) (s6: 12.06 / 11.25); trace: 6214 / 5525 cycles a step (dense
// fused s6 path: 6300). Bench (mslab-gpu-bench --attn --kernels moba-blk,nd --from-len 16384
// --max-len 131072 --reps 3; fwd+bwd incl. the selection, ms) ordered / atomic: 16K 3.33 / 2.92,
// 32K 10.60 / 9.76, 64K 38.98 / 35.79, 128K 155.5 / 143.3 (s6: 4.50 / 4.19, 14.46 / 13.58, 51.6 /
// 49.3, 199.1 / 195.9): vs flex-moba with its selection (13.64 ms at 32K, 45.7 at 64K, 168.2 at
// 128K) ordered 1.29 / 1.17 / 1.08x, atomic 1.40 / 1.28 / 1.17x. The forward is now ~25% of the
// 128K row (39.4 ms, 435 TFLOP/s).
// s8: the ordered fused path's fixed-point partials (PIPE 22 / 30) as one s32 bulk add per element
// (DET 4), not two lanes per u64 add: perf rows 32K RAND ordered 7.844 ms vs 8.014 (atomic 6.675).
// tunables (sparse_wgmma_bwd_tune; tests): the atomic mode's fused path, which split kernels run
// (bit 0 dQ, bit 1 dK/dV), head-major grids (-1: the fused kernel only; else bit 0 the dK/dV or
// fused kernel, bit 1 the dQ kernel), dK/dV warpgroups (1: 64 keys; 2: 128 keys where the regions
// allow)
static int sp_fused = 1, sp_parts = 3, sp_hmajor = -1, sp_kvwg = 1;
static int sp_fx = 1;    // the ordered mode's fused kernel with fixed-point dQ (DET = 3)
static int sp_desc = -1; // the dK/dV walks latest query block first (-1: the ordered fused path)
static int sp_ald = -1;  // the fused kernel's lse / Di by cp.async (PIPE = 2; -1: ordered fused)
static int sp_tml = 1;   // the fused kernel with TMA tiles and bulk dQ adds (PIPE 30; s7 default)
static int sp_nb3 = 0;   // ... with three Q / dO buffers (1: PIPE 30; 0: PIPE 22, the default)
static int sp_order = 1; // the fused kernel's long walks launched FO_SHIFT heads early (s7)
template <int D>
static void sparse_bwd_launch(bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *out,
                              const float *lse, const bf16 *q, const bf16 *k, const bf16 *v,
                              const AttnIndex *ix, int B, int T, int H, int KVH) {
    // D = 128, regions of 128k keys (a 128-key CTA in one region): the fused kernel; atomic
    // mode: fp32 dQ atomics; ordered mode (sp_fx): fixed-point dQ reds
    bool det = attn_bf16_deterministic() != 0;
    bool fused = D == 128 && ix->region % 128 == 0 && (det ? sp_fx : sp_fused);
    size_t rows = (size_t)B * T * H, acc_off = align256(rows * 4);
    size_t rsc_off = acc_off + (fused ? align256(rows * D * 4) : 0);
    size_t kvm_off = rsc_off + (fused && det ? align256(rows * 4) : 0);
    size_t inv_off = kvm_off + (fused && det ? align256((size_t)B * KVH * 8) : 0);
    size_t inv_bytes = sparse_inverse_build(NULL, NULL, ix, B, T, H, KVH);
    size_t nkb = (T + 127) / 128, ncta = (size_t)B * KVH * nkb;
    size_t ord_off = inv_off + align256(inv_bytes);
    bool ord = fused && sp_order && ix->window == 0; // the launch order (fo_*)
    size_t ord_bytes = ord ? 2 * align256(ncta * 4) + align256((size_t)B * KVH * 16) : 0;
    char *ws = (char *)wg_bwd_scratch(ord_off + ord_bytes);
    float *Di = (float *)ws, *rsc = fused && det ? (float *)(ws + rsc_off) : NULL;
    bwd_pre_run<D>(Di, rsc, (unsigned *)(ws + kvm_off), dout, out, k, v, B, T, H, KVH, q);
    SparseInverse iv;
    sparse_inverse_build(&iv, ws + inv_off, ix, B, T, H, KVH);
    SpArgs sp = {ix->idx,    iv.inv,     iv.start,   iv.count, ix->nblk,
                 ix->width,  ix->qblock, ix->region, ix->window, iv.nreg,
                 sp_hmajor < 0 ? fused : sp_hmajor & 1, 0};
    int *order = NULL;
    if (ord) {
        int *rank = (int *)(ws + ord_off), *nls = (int *)(ws + ord_off + align256(ncta * 4));
        order = nls + align256((size_t)B * KVH * 16) / 4;
        int *base = nls + 2 * B * KVH;
        fo_rank<<<B * KVH, 1024>>>(rank, nls, iv.count, iv.nreg, (int)nkb, ix->region);
        cudaLaunchCheck();
        fo_base<<<1, 1>>>(base, nls, B * KVH);
        cudaLaunchCheck();
        fo_place<<<cdiv_u(ncta, 256), 256>>>(order, rank, base, (int)nkb, ncta);
        cudaLaunchCheck();
    }
    float scale = 1.f / sqrtf((float)D), sl2 = WG_LOG2E * scale;
    // ald auto (-1): on the fused path with TMA tiles (both modes), else the ordered fused path
    bool fx = fused && det, ald = sp_ald < 0 ? fx || (fused && sp_tml) : sp_ald;
    sp.desc = sp_desc < 0 ? fx : sp_desc;
    if constexpr (D == 128) if (fused) {
        float *dqacc = (float *)(ws + acc_off);
        cudaCheck(cudaMemsetAsync(dqacc, 0, rows * D * 4, 0));
#define SP_FUSED(DET, PIPE)                                                                      \
    fused_run<D, DET, PIPE, true>(dq, dk, dv, dqacc, order, dout, lse, Di, q, k, v, B, T, H, KVH, \
                                  sl2, scale, sp, rsc)
        // PIPE bits (at bwd_fused_body): 2 lse / Di by cp.async, 4 bulk dQ adds, 8 three buffers,
        // 16 TMA tiles (the s7 default: all)
        int pipe = sp_tml && ald ? (sp_nb3 ? 30 : 22) : ald ? 2 : 0;
#define SP_PIPES(DET)                                                                            \
    switch (pipe) {                                                                              \
    case 2: SP_FUSED(DET, 2); break;                                                             \
    case 22: SP_FUSED(DET, 22); break;                                                           \
    case 30: SP_FUSED(DET, 30); break;                                                           \
    default: SP_FUSED(DET, 0); break;                                                            \
    }
        bool s32 = det && (pipe == 22 || pipe == 30); // fixed point: s32 bulk adds (DET 4), or
        if (det) {                                    // u64 lane reds per thread (DET 3)
            // (s10: + row scales by cp.async and FFMA conversions, PIPE + 96, as dense; r4 moba-blk
            // 32K RAND ordered 7.635 ms vs 7.648 with PIPE 22)
            if (pipe == 30) SP_FUSED(4, 126);
            else if (pipe == 22) SP_FUSED(4, 118);
            else if (pipe == 2) SP_FUSED(3, 2);
            else SP_FUSED(3, 0);
        } else SP_PIPES(0)
#undef SP_PIPES
#undef SP_FUSED
        dq_convert_run(dq, dqacc, rsc, rows, D, scale, s32);
        return;
    }
    if (!(sp_parts & 2)) {
    } else if (sp_kvwg == 2 && ix->region % 128 == 0) {
        dkdv_run<D, 2, 1, true>(dk, dv, dout, lse, Di, q, k, v, B, T, H, KVH, sl2, scale, sp);
    } else {
        dkdv_run<D, 1, 1, true>(dk, dv, dout, lse, Di, q, k, v, B, T, H, KVH, sl2, scale, sp);
    }
    if (!(sp_parts & 1)) return;
    sp.hmajor = sp_hmajor > 0 && (sp_hmajor & 2);
    if (ix->qblock % 128 == 0)
        dq_run<D, 2, true>(dq, dout, lse, Di, q, k, v, B, T, H, KVH, sl2, scale, sp);
    else
        dq_run<D, 1, true>(dq, dout, lse, Di, q, k, v, B, T, H, KVH, sl2, scale, sp);
}

// tests / timing: the tunables above (defaults 1, 3, -1, 1)
extern "C" void sparse_wgmma_bwd_tune(int fused, int parts, int hmajor, int kvwg) {
    sp_fused = fused, sp_parts = parts, sp_hmajor = hmajor, sp_kvwg = kvwg;
}
extern "C" void sparse_wgmma_bwd_tune2(int fx, int desc, int ald) { // defaults 1, -1, -1
    sp_fx = fx, sp_desc = desc, sp_ald = ald;
}
extern "C" void sparse_wgmma_bwd_tune3(int tml, int nb3) { sp_tml = tml, sp_nb3 = nb3; } // 1, 1

// sparse_wgmma_keys.cu's pieces (flash_wgmma_bwd.cuh)
void wg_bwd_pre_launch(int D, float *Di, float *rsc, unsigned *kvm, const bf16 *dout,
                       const bf16 *out, const bf16 *k, const bf16 *v, int B, int T, int H, int KVH) {
    if (D == 64) bwd_pre_run<64>(Di, rsc, kvm, dout, out, k, v, B, T, H, KVH);
    else bwd_pre_run<128>(Di, rsc, kvm, dout, out, k, v, B, T, H, KVH);
}
void wg_kv_bound_launch(int D, unsigned *kvm, const bf16 *k, const bf16 *v, int B, int T, int KVH) {
    if (D == 64) wg_kv_bound<64><<<dim3(B * KVH, cdiv_u(T, 128)), 256>>>(kvm, k, v, T, KVH, 128);
    else wg_kv_bound<128><<<dim3(B * KVH, cdiv_u(T, 128)), 256>>>(kvm, k, v, T, KVH, 128);
    cudaLaunchCheck();
}
template <int D, int DET, int PIPE, int MINB = D == 64 ? 2 : 1>
static void keys_fused_run(dim3 grid, bf16 *dk, bf16 *dv, float *dqacc, const bf16 *dout,
                           const float *lse, const float *Di, const bf16 *q, const bf16 *k, const bf16 *v, int T,
                           int H, int KVH, const SpArgs &sp, const float *rsc,
                           const CUtensorMap &dqmap, const CUtensorMap &qmap,
                           const CUtensorMap &omap, const CUtensorMap &accmap) {
    float scale = 1.f / sqrtf((float)D), sl2 = WG_LOG2E * scale;
    fused_go<D, DET, PIPE, 2, MINB>(grid, fused_smem<D, PIPE>(), T, (bf16 *)nullptr,
                                             dk, dv, dqacc, (int *)nullptr,
                                             dout, lse, Di, q, k, v, T, H, KVH, sl2, scale, sp, rsc,
                                             dqmap, qmap, omap, accmap, accmap);
}
void wg_keys_fused_launch(int D, bool det, dim3 grid, bf16 *dk, bf16 *dv, float *dqacc,
                          const bf16 *dout, const float *lse, const float *Di, const bf16 *q, const bf16 *k,
                          const bf16 *v, int T, int H, int KVH, const SpArgs &sp, const float *rsc,
                          const CUtensorMap &dqmap, const CUtensorMap &qmap,
                          const CUtensorMap &omap, const CUtensorMap &accmap) {
#define KEYS_GO(D, DET, PIPE, ...)                                                               \
    keys_fused_run<D, DET, PIPE, ##__VA_ARGS__>(grid, dk, dv, dqacc, dout, lse, Di, q, k, v, T, H, KVH, sp, rsc, \
                                 dqmap, qmap, omap, accmap)
    // the ordered mode: the row scales by cp.async (+ 32; s9 r4: 23.17 ms vs 23.67); at D 128 the
    // FFMA dQ conversions (+ 64; s11 r1 / r2 / r3, ms paper 32K: 21.39 / 20.88 / 20.90 ms vs
    // 21.50 / 20.99-21.05 / 20.97; D 64 H 12 r3 4.834 vs 4.805 without, s10 r4 5.058 vs 5.080:
    // noise, off)
    // D 64 (s14): 3 CTAs an SM (165 / 168 registers, 76336 bytes of shared memory each), the
    // ordered mode without DKL (+ 256), with the FFMA conversions (+ 64), the permuted staging
    // (+ 128) and lse x log2e (+ 1024)
    if (D == 64) {
        if (det) KEYS_GO(64, 4, 22 + 32 + 64 + 128 + 256 + 1024, 3);
        else KEYS_GO(64, 0, 22, 3);
    } else {
        if (det) KEYS_GO(128, 4, 118);
        else KEYS_GO(128, 0, 22);
    }
#undef KEYS_GO
}


extern "C" int sparse_wgmma_bwd(uint16_t *dq, uint16_t *dk, uint16_t *dv, const uint16_t *dout,
                                const uint16_t *out, const float *lse, const uint16_t *q,
                                const uint16_t *k, const uint16_t *v, const AttnIndex *ix, int B,
                                int T, int H, int KVH, int D) {
    static int off = -1;
    if (off < 0) {
        const char *e = getenv("MSLAB_SPARSE_WGMMA_BWD");
        off = e && !strcmp(e, "0");
        if (e && !strcmp(e, "split")) sp_fused = 0, sp_fx = 0, wg_sp_small = 0;
        if (e && !strcmp(e, "nosmall")) wg_sp_small = 0;
        if (e && strstr(e, "nofx")) sp_fx = 0; // e.g. "nofx", "desc,ald", "nodesc"
        if (e && strstr(e, "desc")) sp_desc = !strstr(e, "nodesc");
        if (e && strstr(e, "ald")) sp_ald = !strstr(e, "noald");
        if (e && strstr(e, "nb3")) sp_nb3 = !strstr(e, "nonb3");
        if (e && strstr(e, "tml")) sp_tml = !strstr(e, "notml");
        if (e && strstr(e, "order")) sp_order = !strstr(e, "noorder");
    }
    bool ok = !off && shape_ok(B, T, H, KVH, D) && (size_t)B * H <= 65535 && !ix->kpos &&
              ix->region > 0 && ix->qblock > 0 && ix->window >= 0 &&
              ix->nblk == (T + ix->qblock - 1) / ix->qblock;
    if (ok && sparse_wgmma_small_bwd((bf16 *)dq, (bf16 *)dk, (bf16 *)dv, (const bf16 *)dout,
                                     (const bf16 *)out, lse, (const bf16 *)q, (const bf16 *)k,
                                     (const bf16 *)v, ix, B, T, H, KVH, D) == 0)
        return 0;
    if (!ok || ix->region % 64 || ix->qblock % 64) return -1;
    if (D == 64)
        sparse_bwd_launch<64>((bf16 *)dq, (bf16 *)dk, (bf16 *)dv, (const bf16 *)dout,
                              (const bf16 *)out, lse, (const bf16 *)q, (const bf16 *)k,
                              (const bf16 *)v, ix, B, T, H, KVH);
    else
        sparse_bwd_launch<128>((bf16 *)dq, (bf16 *)dk, (bf16 *)dv, (const bf16 *)dout,
                               (const bf16 *)out, lse, (const bf16 *)q, (const bf16 *)k,
                               (const bf16 *)v, ix, B, T, H, KVH);
    return 0;
}
