// sparse_wgmma_small.cu: the block-sparse wgmma backward for lists of 16 / 32-key regions (ms with
// w < 64): sq_fused_kernel and its host part. Called by flash_wgmma_bwd.cu's sparse_wgmma_bwd
// (contract: cuda/attn_bf16.h); shared pieces in flash_wgmma_bwd.cuh.
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "flash_wgmma_bwd.cuh"
extern "C" {
#include "attn_bf16.h"
}

// Query-centric fused backward for lists of small regions (16 / 32 keys: ms with w < 64), atomic
// mode, D = 128 (sq_fused_kernel; the atomic mode's default for those lists).
// CTA = (b, h, 128 rows of one query block), 2 warpgroups of 64 rows. The block's list (valid
// slots first) is packed into 64-key tiles of 64 / region slots, K / V rows read through the list
// by cp.async (rows of slots past the list / keys past T zero, their key id INT_MAX: masked by
// the causal test), two stages. Per tile: S = Q K^T, dP = dO V^T (SS, rows as M), P from lse,
// dS = P (dP - Di) in registers, dQ += dS K (RS) in registers for the whole walk; P and dS (bf16)
// to shared memory [128 rows][64 keys], then warpgroup 0 makes dV = P^T dO and warpgroup 1
// dK = dS^T Q for the tile's 64 keys (SS, A M-major, B MN-major, K = the CTA's 128 rows, N = D in
// two halves) and adds them into fp32 accumulators [B, T, KVH, D] by red.add (64 KB per tile);
// a convert kernel makes dk = scale acc, dv. 5 products per pair. Tiles wholly after the CTA's
// rows (later regions of the own block: ~12% of the ms paper config's tiles) are skipped.
template <int D>
__global__ void __launch_bounds__(256, 1)
    sq_fused_kernel(bf16 *dq, float *acck, float *accv, const bf16 *dout, const float *lse,
                    const float *Di, const bf16 *q, const bf16 *k, const bf16 *v, int T, int H,
                    int KVH, float sl2, float scale, SpArgs sp) {
    static_assert(D == 128, "dK / dV: N = D in two 64-column halves");
    constexpr int NT = 256, BQ = 128, BK = 64, DN = D / 8, NN = BK / 8;
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    bf16 *Qs = (bf16 *)smem_base1k(smem_raw), *dOs = Qs + BQ * D, *Ks = dOs + BQ * D;
    bf16 *Vs = Ks + 2 * BK * D, *Ps = Vs + 2 * BK * D, *dSs = Ps + BQ * BK;
    int *kid = (int *)(dSs + BQ * BK); // [2][BK] key of each tile row (INT_MAX: none)
    __shared__ int nvalid;

    int bh = blockIdx.y, b = bh / H, h = bh % H, kvh = h / (H / KVH);
    int q0 = (gridDim.x - 1 - blockIdx.x) * BQ; // latest (fullest lists) first
    size_t ldq = (size_t)H * D, ldk = (size_t)KVH * D;
    const bf16 *qb = q + (size_t)b * T * ldq + (size_t)h * D;
    const bf16 *db = dout + (size_t)b * T * ldq + (size_t)h * D;
    const bf16 *kb = k + (size_t)b * T * ldk + (size_t)kvh * D;
    const bf16 *vb = v + (size_t)b * T * ldk + (size_t)kvh * D;
    const int *lst = sp.idx + (((size_t)b * H + h) * sp.nblk + q0 / sp.qblock) * sp.width;
    int rsh = sp.region == 16 ? 4 : 5, spt = BK >> rsh; // slots per tile
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
    if (threadIdx.x == 0) nvalid = sp.width;
    __syncthreads();
    for (int s = threadIdx.x; s < sp.width; s += NT)
        if (__ldg(lst + s) < 0) atomicMin(&nvalid, s);
    __syncthreads();
    int nv = nvalid, ntile = (nv + spt - 1) / spt;

    auto load_tile = [&](int j, int buf) {
        bf16 *Kd = Ks + buf * BK * D, *Vd = Vs + buf * BK * D;
        for (int i = threadIdx.x; i < BK * (D / 8); i += NT) {
            int p = i / (D / 8), ch = i % (D / 8), s = j * spt + (p >> rsh);
            int r = s < nv ? __ldg(lst + s) : -1;
            int key = (r << rsh) + (p & (sp.region - 1));
            bool ok = r >= 0 && key < T;
            size_t off = (size_t)(ok ? key : 0) * ldk + ch * 8;
            cp_async16(Kd + pl<BK>(p, ch), kb + off, ok);
            cp_async16(Vd + pl<BK>(p, ch), vb + off, ok);
            if (ch == 0) kid[buf * BK + p] = ok ? key : INT_MAX;
        }
    };

    ptile_load<D, BQ, NT>(Qs, qb, ldq, q0, T);
    ptile_load<D, BQ, NT>(dOs, db, ldq, q0, T);
    if (ntile > 0) load_tile(0, 0);
    cp_async_commit();

    float acc[DN][4];
#pragma unroll
    for (int n = 0; n < DN; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;

    for (int j = 0; j < ntile; j++) {
        if (j + 1 < ntile) {
            load_tile(j + 1, (j + 1) & 1);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        fence_async_smem();
        __syncthreads(); // tile j landed (and its key ids)
        // a tile wholly after the CTA's last row (the own block's later regions) adds nothing
        int kmin = INT_MAX;
        for (int x = 0; x < spt; x++)
            if (j * spt + x < nv) kmin = min(kmin, __ldg(lst + j * spt + x) << rsh);
        if (kmin > q0 + BQ - 1) {
            __syncthreads(); // (no buffer was read: only keeps the steps in lockstep)
            continue;
        }
        const bf16 *Kt = Ks + (j & 1) * BK * D, *Vt = Vs + (j & 1) * BK * D;
        const int *kt = kid + (j & 1) * BK;
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
#pragma unroll
        for (int n = 0; n < NN; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int key = kt[n * 8 + 2 * tq + (e & 1)], row = rw0 + 8 * (e >> 1);
                float p = wg_ex2(fmaf(s[n][e], sl2, -l2[e >> 1]));
                s[n][e] = key > row ? 0.f : p; // causal; INT_MAX (no key) is after every row
            }
        uint32_t pa[BK / 16][4], da[BK / 16][4];
#pragma unroll
        for (int kk = 0; kk < BK / 16; kk++) {
            pa[kk][0] = pack_bf16x2(s[2 * kk][0], s[2 * kk][1]);
            pa[kk][1] = pack_bf16x2(s[2 * kk][2], s[2 * kk][3]);
            pa[kk][2] = pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            pa[kk][3] = pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
        }
        wg_wait<0>();
        wg_keep<BK>(dp);
#pragma unroll
        for (int n = 0; n < NN; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[n][e] *= dp[n][e] - di[e >> 1];
        int r0 = wg * 64 + wl * 16 + g; // this thread's rows r0, r0 + 8 of the CTA
#pragma unroll
        for (int kk = 0; kk < BK / 16; kk++) {
            da[kk][0] = pack_bf16x2(s[2 * kk][0], s[2 * kk][1]);
            da[kk][1] = pack_bf16x2(s[2 * kk][2], s[2 * kk][3]);
            da[kk][2] = pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            da[kk][3] = pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
            *(uint32_t *)(Ps + pl<BQ>(r0, 2 * kk) + 2 * tq) = pa[kk][0];
            *(uint32_t *)(Ps + pl<BQ>(r0 + 8, 2 * kk) + 2 * tq) = pa[kk][1];
            *(uint32_t *)(Ps + pl<BQ>(r0, 2 * kk + 1) + 2 * tq) = pa[kk][2];
            *(uint32_t *)(Ps + pl<BQ>(r0 + 8, 2 * kk + 1) + 2 * tq) = pa[kk][3];
            *(uint32_t *)(dSs + pl<BQ>(r0, 2 * kk) + 2 * tq) = da[kk][0];
            *(uint32_t *)(dSs + pl<BQ>(r0 + 8, 2 * kk) + 2 * tq) = da[kk][1];
            *(uint32_t *)(dSs + pl<BQ>(r0, 2 * kk + 1) + 2 * tq) = da[kk][2];
            *(uint32_t *)(dSs + pl<BQ>(r0 + 8, 2 * kk + 1) + 2 * tq) = da[kk][3];
        }
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < BK / 16; kk++) wg_rs<D>(acc, da[kk], desc_mn<BK>(Kt, kk), 1);
        wg_commit();
        fence_async_smem(); // the P / dS stores (generic proxy) before the wgmma reads (async)
        __syncthreads();    // both warpgroups' rows of P / dS
        // warpgroup 0: dV = P^T dO, 1: dK = dS^T Q; M = the tile's 64 keys, K = the 128 rows
        const bf16 *As = wg ? dSs : Ps, *Bs = wg ? Qs : dOs;
        float t0[8][4], t1[8][4];
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < BQ / 16; kk++)
            wg_ss_tt_n64(t0, desc_mn<BQ>(As, kk), desc_mn<BQ>(Bs, kk), kk);
#pragma unroll
        for (int kk = 0; kk < BQ / 16; kk++)
            wg_ss_tt_n64(t1, desc_mn<BQ>(As, kk), desc_mn<BQ>(Bs + BQ * 64, kk), kk);
        wg_commit();
        wg_wait<0>();
        wg_keep<D>(acc);
        wg_keep<64>(t0);
        wg_keep<64>(t1);
        float *accw = wg ? acck : accv;
#pragma unroll
        for (int r = 0; r < 2; r++) {
            int key = kt[wl * 16 + g + 8 * r];
            if (key >= T) continue;
            float *pr = accw + ((size_t)b * T + key) * ldk + (size_t)kvh * D + 2 * tq;
#pragma unroll
            for (int n = 0; n < 8; n++) {
                wg_red2(pr + 8 * n, t0[n][2 * r], t0[n][2 * r + 1]);
                wg_red2(pr + 64 + 8 * n, t1[n][2 * r], t1[n][2 * r + 1]);
            }
        }
        __syncthreads(); // P / dS, this K / V stage and its key ids free for tile j + 2
    }
    cp_async_wait<0>(); // no tile: Q / dO loads still in flight

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

// the query-centric fused backward for 16 / 32-key regions (sq_fused_kernel; atomic mode): on by
// default (MSLAB_SPARSE_WGMMA_BWD=nosmall / sparse_wgmma_bwd_tune_small(0): off)
int wg_sp_small = 1;
// Its fp32 dK / dV accumulators (8 B per key row element) are capped (12 GB: T = 256K at B = 1,
// KVH = 32, D = 128; MSLAB_SPARSE_WGMMA_ACC_MB overrides): past it sparse_bf16's chunked one runs.
static bool small_ok(const AttnIndex *ix, int B, int T, int KVH, int D) {
    static double cap_mb = -1;
    if (cap_mb < 0) {
        const char *e = getenv("MSLAB_SPARSE_WGMMA_ACC_MB");
        cap_mb = e ? atof(e) : 12288.0;
    }
    return wg_sp_small && D == 128 && !attn_bf16_deterministic() &&
           (ix->region == 16 || ix->region == 32) && ix->qblock % 128 == 0 && !ix->window &&
           8.0 * B * T * KVH * D <= cap_mb * 1048576.0;
}
static void small_launch(bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *out,
                         const float *lse, const bf16 *q, const bf16 *k, const bf16 *v,
                         const AttnIndex *ix, int B, int T, int H, int KVH) {
    constexpr int D = 128;
    size_t rows = (size_t)B * T * H, nk = (size_t)B * T * KVH * D, acc_off = align256(rows * 4);
    char *ws = (char *)wg_bwd_scratch(acc_off + 2 * align256(nk * 4));
    float *Di = (float *)ws, *acck = (float *)(ws + acc_off);
    float *accv = (float *)(ws + acc_off + align256(nk * 4));
    wg_bwd_pre<D><<<cdiv_u(rows, 8), 256>>>(Di, dout, out, B, T, H);
    cudaLaunchCheck();
    cudaCheck(cudaMemsetAsync(acck, 0, 2 * align256(nk * 4), 0));
    SpArgs sp = {};
    sp.idx = ix->idx, sp.nblk = ix->nblk, sp.width = ix->width, sp.qblock = ix->qblock;
    sp.region = ix->region;
    float scale = 1.f / sqrtf((float)D), sl2 = WG_LOG2E * scale;
    size_t smem = 1024 + sizeof(bf16) * (size_t)(2 * 128 * D + 4 * 64 * D + 2 * 128 * 64) +
                  sizeof(int) * 2 * 64;
    static bool init = false;
    if (!init) smem_optin(sq_fused_kernel<D>, smem), init = true;
    sq_fused_kernel<D><<<dim3((T + 127) / 128, B * H), 256, smem>>>(
        dq, acck, accv, dout, lse, Di, q, k, v, T, H, KVH, sl2, scale, sp);
    cudaLaunchCheck();
    wg_dq_convert<<<cdiv_u(nk / 4, 256), 256>>>(dk, acck, nk / 4, scale);
    cudaLaunchCheck();
    wg_dq_convert<<<cdiv_u(nk / 4, 256), 256>>>(dv, accv, nk / 4, 1.f);
    cudaLaunchCheck();
}

// tests / timing: sq_fused_kernel on (1, the default) / off (0)
extern "C" void sparse_wgmma_bwd_tune_small(int on) { wg_sp_small = on; }

int sparse_wgmma_small_bwd(bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *out,
                           const float *lse, const bf16 *q, const bf16 *k, const bf16 *v,
                           const AttnIndex *ix, int B, int T, int H, int KVH, int D) {
    if (!small_ok(ix, B, T, KVH, D)) return -1;
    small_launch(dq, dk, dv, dout, out, lse, q, k, v, ix, B, T, H, KVH);
    return 0;
}
