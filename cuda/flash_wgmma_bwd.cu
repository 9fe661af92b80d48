// flash_wgmma_bwd.cu: the backward of flash_wgmma.cu's dense causal attention on Hopper's wgmma
// (sm_90a; the Makefile builds the flash_wgmma*.cu files for it). Contract: cuda/attn_bf16.h
// (flash_wgmma_bwd = flash_bf16_bwd's); the forward, the tunings and the measured figures are in
// flash_wgmma.cu; building blocks and the host helpers both files share: cuda/flash_wgmma.cuh.
// Backward: Di = rowsum(dO * O) (fp32, wg_bwd_pre); P = 2^(S log2e / sqrt(D) - lse log2e)
//   recomputed; the 1/sqrt(D) of dS applied once, to dK and dQ at the end.
//   Split path (7 products, no atomics; the ordered-mode default):
//   dkdv_kernel<D, NWG, ALD>: CTA = (b, kv head, NWG x 64 keys), keys are the M dimension: per
//     64-query step of each head of the group (fixed order), S^T = K Q^T and dP^T = V dO^T (SS),
//     P^T and dS^T = P^T (dP^T - Di) in registers, dV += P^T dO and dK += dS^T Q (RS, dO / Q
//     MN-major); dK, dV stay in the accumulators and are written once. ALD: lse / Di by cp.async.
//   dq_kernel<D, NWG>: CTA = (b, h, NWG x 64 queries), 64-key tiles up to the diagonal: S, dP =
//     dO V^T (SS), dS, dQ += dS K (RS, K MN-major).
//   Fused (5 products, D = 128; the atomic-mode default): bwd_fused_kernel, comment there.
// Synchronisation: cp.async writes are generic-proxy writes, wgmma reads through the async
//   proxy: each thread waits its cp.async groups, fence.proxy.async, then __syncthreads; a
//   buffer is overwritten only after every warpgroup's wgmma.wait_group 0 and a barrier. TMA
//   writes and wgmma reads are both async proxy: the mbarriers order them.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <cuda.h> // CUtensorMap (the encode function comes through cudaGetDriverEntryPoint)

#include "cuda_common.cuh"
#include "flash_wgmma.cuh"
extern "C" {
#include "attn_bf16.h"
}

// ---------------------------------------------------------------------------------------------
// dK / dV: CTA = (b, kv head, NWG x 64 keys); warpgroup wg owns keys k0 + 64 wg .. + 63 (its warps
// 16 each, as flash_bwd_dkdv_kernel), loops over the group's query heads and 64-query steps from
// the diagonal on (fixed order: deterministic). Per step: S^T = K Q^T and dP^T = V dO^T (SS),
// P^T, dS^T = P^T (dP^T - Di) in registers, dV += P^T dO and dK += dS^T Q (RS, dO / Q as MN-major
// operands). dK, dV stay in the accumulators for the whole loop.
template <int D, int NWG, int ALD>
__device__ __forceinline__ void dkdv_wg_body(bf16 *dk, bf16 *dv, const bf16 *dout,
                                             const float *lse, const float *Di, const bf16 *q,
                                             const bf16 *k, const bf16 *v, int T, int H, int KVH,
                                             float sl2, float scale) {
    constexpr int NT = 128 * NWG, BKV = 64 * NWG, BQ = 64, DN = D / 8, NN = BQ / 8;
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    bf16 *Ks = (bf16 *)smem_base1k(smem_raw), *Vs = Ks + BKV * D, *Qs = Vs + BKV * D;
    bf16 *dOs = Qs + 2 * BQ * D;
    float *Ls = (float *)(dOs + 2 * BQ * D), *Ds = Ls + 2 * BQ;

    int b = blockIdx.x / KVH, kvh = blockIdx.x % KVH, G = H / KVH;
    int k0 = blockIdx.y * BKV;
    size_t ldq = (size_t)H * D, ldk = (size_t)KVH * D;
    const bf16 *kb = k + (size_t)b * T * ldk + (size_t)kvh * D;
    const bf16 *vb = v + (size_t)b * T * ldk + (size_t)kvh * D;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    int wg = warp >> 2, wl = warp & 3;
    int wk0 = k0 + wg * 64;
    int key[2] = {wk0 + wl * 16 + g, wk0 + wl * 16 + g + 8};
    int qt0 = k0 / BQ, nqt = (T + BQ - 1) / BQ, steps = nqt - qt0, total = G * steps;

    auto load_step = [&](int i) {
        int hh = kvh * G + i / steps, qs = (qt0 + i % steps) * BQ, buf = i & 1;
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

    ptile_load<D, BKV, NT>(Ks, kb, ldk, k0, T);
    ptile_load<D, BKV, NT>(Vs, vb, ldk, k0, T);
    load_step(0);
    cp_async_commit();

    float dka[DN][4], dva[DN][4];
#pragma unroll
    for (int n = 0; n < DN; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) dka[n][e] = dva[n][e] = 0.f;

    for (int i = 0; i < total; i++) {
        if (i + 1 < total) {
            load_step(i + 1);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        fence_async_smem();
        __syncthreads();
        int buf = i & 1, qs = (qt0 + i % steps) * BQ;
        const bf16 *Qt = Qs + buf * BQ * D, *dOt = dOs + buf * BQ * D;
        const float *Lt = Ls + buf * BQ, *Dt = Ds + buf * BQ;
        if (wk0 <= qs + BQ - 1) { // warpgroup-uniform: else every key is after every query
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
            uint32_t pa[BQ / 16][4];
#pragma unroll
            for (int n = 0; n < NN; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int qi = n * 8 + 2 * tq + (e & 1);
                    float p = wg_ex2(fmaf(s[n][e], sl2, ALD ? -Lt[qi] * WG_LOG2E : -Lt[qi]));
                    s[n][e] = (diag && key[e >> 1] > qs + qi) ? 0.f : p;
                }
#pragma unroll
            for (int kk = 0; kk < BQ / 16; kk++) {
                pa[kk][0] = pack_bf16x2(s[2 * kk][0], s[2 * kk][1]);
                pa[kk][1] = pack_bf16x2(s[2 * kk][2], s[2 * kk][3]);
                pa[kk][2] = pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
                pa[kk][3] = pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
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
                da[kk][0] = pack_bf16x2(s[2 * kk][0], s[2 * kk][1]);
                da[kk][1] = pack_bf16x2(s[2 * kk][2], s[2 * kk][3]);
                da[kk][2] = pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
                da[kk][3] = pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
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
    }

    bf16 *dkb = dk + (size_t)b * T * ldk + (size_t)kvh * D;
    bf16 *dvb = dv + (size_t)b * T * ldk + (size_t)kvh * D;
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

// ---------------------------------------------------------------------------------------------
// dQ: CTA = (b, h, NWG x 64 query rows), 64-key tiles double-buffered up to the diagonal.
// S = Q K^T, dP = dO V^T (SS), dS = P (dP - Di) in registers, dQ += dS K (RS, K as MN-major).
template <int D, int NWG>
__device__ __forceinline__ void dq_wg_body(bf16 *dq, const bf16 *dout, const float *lse,
                                           const float *Di, const bf16 *q, const bf16 *k,
                                           const bf16 *v, int T, int H, int KVH, float sl2,
                                           float scale) {
    constexpr int NT = 128 * NWG, BQ = 64 * NWG, BK = 64, DN = D / 8, NN = BK / 8;
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    bf16 *Qs = (bf16 *)smem_base1k(smem_raw), *dOs = Qs + BQ * D, *Ks = dOs + BQ * D;
    bf16 *Vs = Ks + 2 * BK * D;

    int b = blockIdx.x / H, h = blockIdx.x % H, kvh = h / (H / KVH);
    int q0 = (gridDim.y - 1 - blockIdx.y) * BQ; // heaviest (latest) first
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
    int nkt = (min(q0 + BQ, T) + BK - 1) / BK;

    ptile_load<D, BQ, NT>(Qs, qb, ldq, q0, T);
    ptile_load<D, BQ, NT>(dOs, db, ldq, q0, T);
    ptile_load<D, BK, NT>(Ks, kb, ldk, 0, T);
    ptile_load<D, BK, NT>(Vs, vb, ldk, 0, T);
    cp_async_commit();

    float acc[DN][4];
#pragma unroll
    for (int n = 0; n < DN; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;

    for (int j = 0; j < nkt; j++) {
        if (j + 1 < nkt) {
            int nb = (j + 1) & 1;
            ptile_load<D, BK, NT>(Ks + nb * BK * D, kb, ldk, (j + 1) * BK, T);
            ptile_load<D, BK, NT>(Vs + nb * BK * D, vb, ldk, (j + 1) * BK, T);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        fence_async_smem();
        __syncthreads();
        const bf16 *Kt = Ks + (j & 1) * BK * D, *Vt = Vs + (j & 1) * BK * D;
        int k0 = j * BK;
        if (wr0 + 63 >= k0) {
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
            bool mask = k0 + BK - 1 > wr0 || k0 + BK > T;
#pragma unroll
            for (int n = 0; n < NN; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int kk = k0 + n * 8 + 2 * tq + (e & 1), row = rw0 + 8 * (e >> 1);
                    float p = wg_ex2(fmaf(s[n][e], sl2, -l2[e >> 1]));
                    s[n][e] = (mask && (kk > row || kk >= T)) ? 0.f : p;
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
                da[kk][0] = pack_bf16x2(s[2 * kk][0], s[2 * kk][1]);
                da[kk][1] = pack_bf16x2(s[2 * kk][2], s[2 * kk][3]);
                da[kk][2] = pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
                da[kk][3] = pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
            }
            wg_fence();
#pragma unroll
            for (int kk = 0; kk < BK / 16; kk++) wg_rs<D>(acc, da[kk], desc_mn<BK>(Kt, kk), 1);
            wg_commit();
            wg_wait<0>();
            wg_keep<D>(acc);
        }
        __syncthreads();
    }

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


// ---------------------------------------------------------------------------------------------
// Fused backward (5 products; D = 128): CTA = (b, kv head, 128 keys), 2 warpgroups of 64 keys,
// walking the (query tile, head) pairs latest query tile first, heads innermost, from the last
// tile down to its diagonal: every key block's CTA meets a given pair at the same step index.
// Per 64-query step: S^T = K Q^T, dP^T = V dO^T (SS), P^T, dS^T in registers, dV += P^T dO and
// dK += dS^T Q (RS) as the split dK/dV kernel; and dS^T (bf16) to shared memory [128 keys][64
// queries] (the MN-major layout), then dQ partial [64 queries][128 D] = dS K over the CTA's 128
// keys (SS, A M-major from dS^T, B = the K tile N-major; warpgroup w makes columns 64w..64w+63).
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
//   PIPE = 1 (tune 4): each step's reds issued after the next step's S / dP products, lse / Di by
//     cp.async: no gain (atomic 16.9, ordered 23.6).
__device__ __forceinline__ int ld_acquire_gpu(const int *p) {
    int v;
    asm volatile("ld.acquire.gpu.global.s32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
    return v;
}
__device__ __forceinline__ void st_release_gpu(int *p, int v) {
    asm volatile("st.release.gpu.global.s32 [%0], %1;\n" ::"l"(p), "r"(v) : "memory");
}
// thread 0 waits until *cnt == v; bounded (~1 s at 2 GHz): a broken ordering assumption gives a
// wrong dq (the parity test catches it) rather than a hung process
__device__ __forceinline__ void wait_count(const int *cnt, int v) {
    long long t0 = clock64();
    while (ld_acquire_gpu(cnt) != v) {
        __nanosleep(20);
        if (clock64() - t0 > (1ll << 31)) break;
    }
}

template <int D, int DET, int PIPE>
__device__ __forceinline__ void bwd_fused_body(bf16 *dq, bf16 *dk, bf16 *dv, float *dqacc,
                                               int *counters, const bf16 *dout, const float *lse,
                                               const float *Di, const bf16 *q, const bf16 *k,
                                               const bf16 *v, int T, int H, int KVH, float sl2,
                                               float scale) {
    static_assert(D == 128, "dQ columns split between the two warpgroups: one plane each");
    constexpr int NT = 256, BKV = 128, BQ = 64, DN = D / 8, NN = BQ / 8;
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    bf16 *Ks = (bf16 *)smem_base1k(smem_raw), *Vs = Ks + BKV * D, *Qs = Vs + BKV * D;
    bf16 *dOs = Qs + 2 * BQ * D, *dSs = dOs + 2 * BQ * D;
    float *Ls = (float *)(dSs + BKV * BQ), *Ds = Ls + 2 * BQ;

    int b = blockIdx.x / KVH, kvh = blockIdx.x % KVH, G = H / KVH;
    int kb = blockIdx.y, k0 = kb * BKV, nkb = (T + BKV - 1) / BKV;
    size_t ldq = (size_t)H * D, ldk = (size_t)KVH * D;
    const bf16 *kbp = k + (size_t)b * T * ldk + (size_t)kvh * D;
    const bf16 *vbp = v + (size_t)b * T * ldk + (size_t)kvh * D;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    int wg = warp >> 2, wl = warp & 3;
    int wk0 = k0 + wg * 64;
    int key[2] = {wk0 + wl * 16 + g, wk0 + wl * 16 + g + 8};
    int nqt = (T + BQ - 1) / BQ, qt_lo = k0 / BQ, total = G * (nqt - qt_lo);
    auto step_h = [&](int i) { return kvh * G + i % G; };
    auto step_q = [&](int i) { return (nqt - 1 - i / G) * BQ; };
    auto load_step = [&](int i) {
        int hh = step_h(i), qs = step_q(i), buf = i & 1;
        const bf16 *qb = q + (size_t)b * T * ldq + (size_t)hh * D;
        const bf16 *db = dout + (size_t)b * T * ldq + (size_t)hh * D;
        ptile_load<D, BQ, NT>(Qs + buf * BQ * D, qb, ldq, qs, T);
        ptile_load<D, BQ, NT>(dOs + buf * BQ * D, db, ldq, qs, T);
        if (PIPE) { // raw lse by cp.async (no load stall here); rows past T read 0: their P
                    // is 1 (Q rows are 0), but dO rows are 0 too, so P^T dO and dS add nothing
            if (threadIdx.x < 2 * BQ) {
                int r = threadIdx.x & (BQ - 1), t = qs + r;
                size_t li = ((size_t)b * H + hh) * T + (t < T ? t : 0);
                if (threadIdx.x < BQ) cp_async4(Ls + buf * BQ + r, lse + li, t < T);
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

    ptile_load<D, BKV, NT>(Ks, kbp, ldk, k0, T);
    ptile_load<D, BKV, NT>(Vs, vbp, ldk, k0, T);
    load_step(0); // total >= 1: the block's own diagonal tile
    cp_async_commit();

    float dka[DN][4], dva[DN][4];
#pragma unroll
    for (int n = 0; n < DN; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) dka[n][e] = dva[n][e] = 0.f;
    int *cnt_prev = nullptr; // DET = 2: this warp's counter of the previous step (release due)
    float acc[8][4];         // this step's dQ partial (PIPE: added during the next step)
    int qs_prev = 0, hh_prev = 0;
    // this warp's share of a dQ partial into the accumulator (DET = 2: in key-block order)
    auto dq_add = [&](int qs_a, int hh_a) {
        size_t base = ((size_t)b * T) * ldq + (size_t)hh_a * D + wg * 64 + 2 * tq;
        if (DET == 2) {
            int *cw = counters + (((size_t)b * H + hh_a) * nqt + qs_a / BQ) * 8 + warp;
            if (lane == 0) wait_count(cw, kb);
            __syncwarp();
            cnt_prev = cw;
        }
#pragma unroll
        for (int r = 0; r < 2; r++) {
            int t = qs_a + wl * 16 + g + 8 * r;
            if (t >= T) continue;
            float *pr = dqacc + base + (size_t)t * ldq;
#pragma unroll
            for (int n = 0; n < 8; n++)
                atomicAdd((float2 *)(pr + 8 * n), make_float2(acc[n][2 * r], acc[n][2 * r + 1]));
        }
    };

    for (int i = 0; i < total; i++) {
        cp_async_wait<0>();
        fence_async_smem();
        __syncthreads(); // step i's tiles landed; every warpgroup left step i - 1 (buffers, dS)
        if (i + 1 < total) load_step(i + 1);
        cp_async_commit();
        int buf = i & 1, qs = step_q(i), hh = step_h(i);
        const bf16 *Qt = Qs + buf * BQ * D, *dOt = dOs + buf * BQ * D;
        const float *Lt = Ls + buf * BQ, *Dt = Ds + buf * BQ;
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
        if (DET == 2 && cnt_prev) { // the previous step's reds performed: release its tile
            __threadfence();
            __syncwarp();
            if (lane == 0) st_release_gpu(cnt_prev, kb + 1);
            cnt_prev = nullptr;
        }
        if (PIPE && i > 0) dq_add(qs_prev, hh_prev); // the previous step's, under the products
        wg_wait<1>();
        wg_keep<BQ>(s);
        bool diag = wk0 + 63 > qs;
        uint32_t pa[BQ / 16][4], da[BQ / 16][4];
#pragma unroll
        for (int n = 0; n < NN; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int qi = n * 8 + 2 * tq + (e & 1);
                float p = wg_ex2(fmaf(s[n][e], sl2, PIPE ? -Lt[qi] * WG_LOG2E : -Lt[qi]));
                s[n][e] = (diag && key[e >> 1] > qs + qi) ? 0.f : p;
            }
#pragma unroll
        for (int kk = 0; kk < BQ / 16; kk++) {
            pa[kk][0] = pack_bf16x2(s[2 * kk][0], s[2 * kk][1]);
            pa[kk][1] = pack_bf16x2(s[2 * kk][2], s[2 * kk][3]);
            pa[kk][2] = pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            pa[kk][3] = pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
        }
        wg_wait<0>();
        wg_keep<BQ>(dp);
#pragma unroll
        for (int n = 0; n < NN; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int qi = n * 8 + 2 * tq + (e & 1);
                s[n][e] *= dp[n][e] - Dt[qi]; // dS^T (without the 1/sqrt(D))
            }
        int r0 = wg * 64 + wl * 16 + g; // this thread's key rows r0, r0 + 8 in the CTA's block
#pragma unroll
        for (int kk = 0; kk < BQ / 16; kk++) {
            da[kk][0] = pack_bf16x2(s[2 * kk][0], s[2 * kk][1]);
            da[kk][1] = pack_bf16x2(s[2 * kk][2], s[2 * kk][3]);
            da[kk][2] = pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            da[kk][3] = pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
            *(uint32_t *)(dSs + pl<BKV>(r0, 2 * kk) + 2 * tq) = da[kk][0];
            *(uint32_t *)(dSs + pl<BKV>(r0 + 8, 2 * kk) + 2 * tq) = da[kk][1];
            *(uint32_t *)(dSs + pl<BKV>(r0, 2 * kk + 1) + 2 * tq) = da[kk][2];
            *(uint32_t *)(dSs + pl<BKV>(r0 + 8, 2 * kk + 1) + 2 * tq) = da[kk][3];
        }
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < BQ / 16; kk++) wg_rs<D>(dva, pa[kk], desc_mn<BQ>(dOt, kk), 1);
#pragma unroll
        for (int kk = 0; kk < BQ / 16; kk++) wg_rs<D>(dka, da[kk], desc_mn<BQ>(Qt, kk), 1);
        wg_commit();
        fence_async_smem(); // the dS^T stores (generic proxy) before the wgmma reads (async)
        __syncthreads();    // both warpgroups' halves of dS^T
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < BKV / 16; kk++)
            wg_ss_tt_n64(acc, desc_mn<BKV>(dSs, kk),
                         wg_desc(Ks + wg * (BKV * 64) + kk * 16 * 64, BKV * 128, 1024), kk);
        wg_commit();
        wg_wait<0>();
        wg_keep<D>(dva);
        wg_keep<D>(dka);
        wg_keep<64>(acc);

        // dQ partial: rows qs + 16 wl + g (+ 8), columns 64 wg + 8 n + 2 tq (+ 1)
        size_t base = ((size_t)b * T) * ldq + (size_t)hh * D + wg * 64 + 2 * tq;
        if (PIPE) {
            qs_prev = qs, hh_prev = hh;
        } else if (DET != 1) {
            int *cw = counters + (((size_t)b * H + hh) * nqt + qs / BQ) * 8 + warp;
            if (DET == 2) {
                if (lane == 0) wait_count(cw, kb);
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
            if (threadIdx.x == 0) wait_count(cnt, kb);
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
    }

    if (DET == 2 && cnt_prev) {
        __threadfence();
        __syncwarp();
        if (lane == 0) st_release_gpu(cnt_prev, kb + 1);
        cnt_prev = nullptr;
    }
    if (PIPE) { // the last step's partial
        dq_add(qs_prev, hh_prev);
        if (DET == 2) {
            __threadfence();
            __syncwarp();
            if (lane == 0) st_release_gpu(cnt_prev, kb + 1);
        }
    }
    bf16 *dkb = dk + (size_t)b * T * ldk + (size_t)kvh * D;
    bf16 *dvb = dv + (size_t)b * T * ldk + (size_t)kvh * D;
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

// ---------------------------------------------------------------------------------------------
// kernels

template <int D, int NWG, int ALD>
__global__ void __launch_bounds__(128 * NWG, 1)
    dkdv_kernel(bf16 *dk, bf16 *dv, const bf16 *dout, const float *lse, const float *Di,
                const bf16 *q, const bf16 *k, const bf16 *v, int T, int H, int KVH, float sl2,
                float scale) {
    dkdv_wg_body<D, NWG, ALD>(dk, dv, dout, lse, Di, q, k, v, T, H, KVH, sl2, scale);
}
template <int D, int NWG>
__global__ void __launch_bounds__(128 * NWG, 1)
    dq_kernel(bf16 *dq, const bf16 *dout, const float *lse, const float *Di, const bf16 *q,
              const bf16 *k, const bf16 *v, int T, int H, int KVH, float sl2, float scale) {
    dq_wg_body<D, NWG>(dq, dout, lse, Di, q, k, v, T, H, KVH, sl2, scale);
}

template <int D, int DET, int PIPE>
__global__ void __launch_bounds__(256, 1)
    bwd_fused_kernel(bf16 *dq, bf16 *dk, bf16 *dv, float *dqacc, int *counters, const bf16 *dout,
                     const float *lse, const float *Di, const bf16 *q, const bf16 *k,
                     const bf16 *v, int T, int H, int KVH, float sl2, float scale) {
    bwd_fused_body<D, DET, PIPE>(dq, dk, dv, dqacc, counters, dout, lse, Di, q, k, v, T, H, KVH, sl2,
                           scale);
}
__global__ void wg_dq_convert(bf16 *dq, const float *acc, size_t n4, float scale) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n4) return;
    float4 x = __ldcs((const float4 *)acc + i);
    uint2 o = make_uint2(pack_bf16x2(x.x * scale, x.y * scale), pack_bf16x2(x.z * scale, x.w * scale));
    *((uint2 *)dq + i) = o;
}

// Di[b, h, t] = sum_d dout * out (fp32), one warp per (b, t, h) row, fixed shuffle order
template <int D>
__global__ void wg_bwd_pre(float *Di, const bf16 *dout, const bf16 *out, int B, int T, int H) {
    size_t rowi = (size_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (rowi >= (size_t)B * T * H) return;
    int lane = threadIdx.x & 31;
    const __nv_bfloat162 *a = (const __nv_bfloat162 *)(dout + rowi * D);
    const __nv_bfloat162 *c = (const __nv_bfloat162 *)(out + rowi * D);
    float s = 0.f;
#pragma unroll
    for (int i = lane; i < D / 2; i += 32) {
        float2 x = __bfloat1622float2(a[i]), y = __bfloat1622float2(c[i]);
        s = fmaf(x.x, y.x, s);
        s = fmaf(x.y, y.y, s);
    }
    s = warp_sum(s);
    if (lane == 0) {
        int h = (int)(rowi % H);
        size_t bt = rowi / H;
        int t = (int)(bt % T), b = (int)(bt / T);
        Di[((size_t)b * H + h) * T + t] = s;
    }
}

// ---------------------------------------------------------------------------------------------
// host

// backward workspace (Di; fused: the fp32 dQ accumulator and the counters): a grow-only buffer
// of this file (growing frees the old one, which waits for the device)
static void *scratch_buf(size_t bytes) {
    static void *p = NULL;
    static size_t cap = 0;
    if (bytes > cap) {
        if (p) cudaCheck(cudaFree(p));
        cudaCheck(cudaMalloc(&p, bytes));
        cap = bytes;
    }
    return p;
}
template <int D, int NWG, int ALD = 0>
static void dkdv_run(bf16 *dk, bf16 *dv, const bf16 *dout, const float *lse, const float *Di,
                     const bf16 *q, const bf16 *k, const bf16 *v, int B, int T, int H, int KVH,
                     float sl2, float scale) {
    constexpr int BKV = 64 * NWG;
    size_t smem = 1024 + sizeof(bf16) * (size_t)(2 * BKV * D + 4 * 64 * D) + sizeof(float) * 4 * 64;
    static bool init = false;
    if (!init) smem_optin(dkdv_kernel<D, NWG, ALD>, smem), init = true;
    dkdv_kernel<D, NWG, ALD><<<dim3(B * KVH, (T + BKV - 1) / BKV), 128 * NWG, smem>>>(
        dk, dv, dout, lse, Di, q, k, v, T, H, KVH, sl2, scale);
    cudaLaunchCheck();
}
template <int D, int NWG>
static void dq_run(bf16 *dq, const bf16 *dout, const float *lse, const float *Di, const bf16 *q,
                   const bf16 *k, const bf16 *v, int B, int T, int H, int KVH, float sl2,
                   float scale) {
    constexpr int BQ = 64 * NWG;
    size_t smem = 1024 + sizeof(bf16) * (size_t)(2 * BQ * D + 4 * 64 * D);
    static bool init = false;
    if (!init) smem_optin(dq_kernel<D, NWG>, smem), init = true;
    dq_kernel<D, NWG><<<dim3(B * H, (T + BQ - 1) / BQ), 128 * NWG, smem>>>(
        dq, dout, lse, Di, q, k, v, T, H, KVH, sl2, scale);
    cudaLaunchCheck();
}
template <int D, int DET, int PIPE>
static void fused_run(bf16 *dq, bf16 *dk, bf16 *dv, float *dqacc, int *cnt, const bf16 *dout,
                      const float *lse, const float *Di, const bf16 *q, const bf16 *k,
                      const bf16 *v, int B, int T, int H, int KVH, float sl2, float scale) {
    constexpr int BKV = 128, BQ = 64;
    size_t smem = 1024 + sizeof(bf16) * (size_t)(2 * BKV * D + 4 * BQ * D + BKV * BQ) +
                  sizeof(float) * 4 * BQ;
    static bool init = false;
    if (!init) smem_optin(bwd_fused_kernel<D, DET, PIPE>, smem), init = true;
    bwd_fused_kernel<D, DET, PIPE><<<dim3(B * KVH, (T + BKV - 1) / BKV), 256, smem>>>(
        dq, dk, dv, dqacc, cnt, dout, lse, Di, q, k, v, T, H, KVH, sl2, scale);
    cudaLaunchCheck();
}
template <int D>
static void bwd_launch(bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *out,
                       const float *lse, const bf16 *q, const bf16 *k, const bf16 *v, int B, int T,
                       int H, int KVH) {
    size_t rows = (size_t)B * T * H, nqt = (T + 63) / 64;
    // 9 (the default): ordered mode -> the split path (dK/dV 5, dQ as tuned); atomic mode -> the
    // fused backward (2, D = 128), whose atomic dQ beats the split path (r3, 16K: 16.5 vs 18.2)
    int dkdv_t = wg_tune_dkdv;
    if (dkdv_t == 9) dkdv_t = attn_bf16_deterministic() || D != 128 ? 5 : 2;
    bool fused = D == 128 && dkdv_t >= 2 && dkdv_t <= 4;
    // workspace: Di [rows]; fused: dQ accumulator [rows][D] fp32, counters [B, H, tiles, 8]
    size_t acc_off = align256(rows * 4), cnt_off = acc_off + align256(rows * D * 4);
    size_t ncnt = (size_t)B * H * nqt * 8;
    char *ws = (char *)scratch_buf(fused ? cnt_off + ncnt * 4 : rows * 4);
    float *Di = (float *)ws;
    wg_bwd_pre<D><<<cdiv_u(rows, 8), 256>>>(Di, dout, out, B, T, H);
    cudaLaunchCheck();
    float scale = 1.f / sqrtf((float)D), sl2 = WG_LOG2E * scale;
    if constexpr (D == 128) if (fused) {
        float *dqacc = (float *)(ws + acc_off);
        int *cnt = (int *)(ws + cnt_off);
        // ordered: per-warp red order (2; tune 3: the older load-add-store order, 1); else atomic
        bool det = attn_bf16_deterministic() != 0;
        int mode = det ? (dkdv_t == 3 ? 1 : 2) : 0;
        if (mode != 1) cudaCheck(cudaMemsetAsync(dqacc, 0, rows * D * sizeof(float), 0));
        if (mode != 0) cudaCheck(cudaMemsetAsync(cnt, 0, ncnt * sizeof(int), 0));
#define FUSED_GO(DET, PIPE) \
    fused_run<D, DET, PIPE>(dq, dk, dv, dqacc, cnt, dout, lse, Di, q, k, v, B, T, H, KVH, sl2, scale)
        if (dkdv_t == 4) {
            if (det) FUSED_GO(2, 1);
            else FUSED_GO(0, 1);
        } else if (mode == 1) {
            FUSED_GO(1, 0);
            return; // dq written by the kernel
        } else if (mode == 2) {
            FUSED_GO(2, 0);
        } else {
            FUSED_GO(0, 0);
        }
#undef FUSED_GO
        size_t n4 = rows * D / 4;
        wg_dq_convert<<<cdiv_u(n4, 256), 256>>>(dq, dqacc, n4, scale);
        cudaLaunchCheck();
        return;
    }
    switch (dkdv_t) {
    case -1: break;
    case 1: dkdv_run<D, 1>(dk, dv, dout, lse, Di, q, k, v, B, T, H, KVH, sl2, scale); break;
    case 5: dkdv_run<D, 1, 1>(dk, dv, dout, lse, Di, q, k, v, B, T, H, KVH, sl2, scale); break;
    default: dkdv_run<D, 2>(dk, dv, dout, lse, Di, q, k, v, B, T, H, KVH, sl2, scale); break;
    }
    switch (wg_tune_dq) {
    case -1: break;
    case 1: dq_run<D, 1>(dq, dout, lse, Di, q, k, v, B, T, H, KVH, sl2, scale); break;
    case 2: dq_run<D, 3>(dq, dout, lse, Di, q, k, v, B, T, H, KVH, sl2, scale); break;
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
// block-sparse backward over an index list (attn_bf16.h sparse_wgmma_bwd): not written yet
extern "C" int sparse_wgmma_bwd(uint16_t *dq, uint16_t *dk, uint16_t *dv, const uint16_t *dout,
                                const uint16_t *out, const float *lse, const uint16_t *q,
                                const uint16_t *k, const uint16_t *v, const AttnIndex *ix, int B,
                                int T, int H, int KVH, int D) {
    (void)dq, (void)dk, (void)dv, (void)dout, (void)out, (void)lse, (void)q, (void)k, (void)v,
        (void)ix, (void)B, (void)T, (void)H, (void)KVH, (void)D;
    return -1;
}
