// flash_wgmma.cu: dense causal grouped-query flash attention in bf16 on Hopper's wgmma
// (warpgroup MMA, sm_90a; the Makefile builds this one file with -gencode arch=compute_90a,
// code=sm_90a). Contract: cuda/attn_bf16.h (flash_wgmma_fwd / _bwd = flash_bf16_fwd / _bwd's);
// -1 (nothing launched) for D other than 64 / 128, H % KVH != 0, or a GPU other than sm_90.
// Building blocks (descriptors, wgmma wrappers, planar swizzled tiles, mbarrier / TMA):
// cuda/flash_wgmma.cuh. Started from an untested draft (HA's /tmp/ha-dup/flash_wg.cuh: fwd_kernel,
// dkdv_kernel, dq_kernel); its layouts passed parity on the first H200 run.
//
// Why: flash_bf16.cu's mma.sync kernels re-read every B fragment per 16-row warp with ldmatrix,
// so they are bound by shared-memory reads (~280-310 TFLOP/s fwd, bwd worse). A wgmma warpgroup
// (4 warps, 64 rows) reads each B operand once from shared memory for 64 rows, through a matrix
// descriptor, and the tensor cores stream it themselves.
//
// Forward. Per key tile and warpgroup: S = Q K^T (SS wgmma m64nBKk16, K-major both), causal mask
//   on diagonal / tail tiles only, online softmax in registers (log2e-prescaled, ex2), P packed
//   from the S accumulators straight into the A registers of O += P V (RS wgmma m64nDk16, V an
//   MN-major B operand); out = O / l (bf16), lse = (m + log2 l) ln 2. CTA = (b, h, NWG x 64
//   query rows), query tiles heaviest first. Three generations (flash_wgmma_tune):
//   fwd_kernel: cp.async double buffer, S, softmax, P V in sequence (r1: 6.2-6.8 ms at 16K);
//   fwd2_kernel: S_j and P_{j-1} V_{j-1} issued together, S_j's softmax under the P V product
//     (FA3's intra-warpgroup overlap), 3-slot cp.async ring, one barrier per tile (5.7 ms);
//   fwd3_kernel (default): warp-specialised: a producer warp loads Q and the K / V ring with TMA
//     (128-byte swizzle = the planar layout), per-slot full / empty mbarriers, no CTA barrier in
//     the loop, so the consumer warpgroups drift apart and one's softmax overlaps the other's
//     products (5.0 ms, 440 TFLOP/s; flash_bf16 7.1 ms).
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
//
// flash_wgmma_tune (not in the header; the tests' timing rows use it) picks the tiling per
// kernel; MSLAB_FLASH_WGMMA_TUNE="fwd,dkdv,dq" overrides the defaults at the first call.
// Measured (H200, B=1, H=KVH=32, D=128, causal; mslab-gpu-bench, r3): fwd 4.91 / 23.5 ms at
// 16K / 32K (448 / 375 TFLOP/s; flash_bf16 7.12 / 28.8); fwd+bwd with the r2 split tiling 25.3 /
// 103 ms (304 / 299), atomic mode 21.8 / 86.9 ms (353 / 354). Per-kernel times: the tune defaults.
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
// forward: CTA = NWG warpgroups x 64 query rows, BK-key tiles double-buffered by cp.async.
// Per tile: S = Q K^T (SS, N = BK), online softmax in registers, O += P V (RS, N = D, V as an
// MN-major operand). Grid as flash_fwd_kernel: (B * H, query tiles), heaviest first.
template <int D, int NWG, int BK>
__device__ __forceinline__ void fwd_wg_body(bf16 *out, float *lse, const bf16 *q, const bf16 *k,
                                            const bf16 *v, int T, int H, int KVH, float sl2) {
    constexpr int NT = 128 * NWG, BQ = 64 * NWG, DN = D / 8, NN = BK / 8;
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    bf16 *Qs = (bf16 *)smem_base1k(smem_raw), *Ks = Qs + BQ * D, *Vs = Ks + 2 * BK * D;

    int b = blockIdx.x / H, h = blockIdx.x % H, kvh = h / (H / KVH);
    int q0 = (gridDim.y - 1 - blockIdx.y) * BQ;
    size_t ldq = (size_t)H * D, ldk = (size_t)KVH * D;
    const bf16 *qb = q + (size_t)b * T * ldq + (size_t)h * D;
    const bf16 *kb = k + (size_t)b * T * ldk + (size_t)kvh * D;
    const bf16 *vb = v + (size_t)b * T * ldk + (size_t)kvh * D;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    int wg = warp >> 2, wl = warp & 3;
    int wr0 = q0 + wg * 64;          // this warpgroup's first row
    int rw0 = wr0 + wl * 16 + g;     // this thread's rows rw0, rw0 + 8
    int nkt = (min(q0 + BQ, T) + BK - 1) / BK;

    ptile_load<D, BQ, NT>(Qs, qb, ldq, q0, T);
    ptile_load<D, BK, NT>(Ks, kb, ldk, 0, T);
    ptile_load<D, BK, NT>(Vs, vb, ldk, 0, T);
    cp_async_commit();

    float o[DN][4];
#pragma unroll
    for (int n = 0; n < DN; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

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
        if (wr0 + 63 >= k0) { // warpgroup-uniform: else every row is above the tile
            float s[NN][4];
            wg_fence();
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++)
                wg_ss<BK>(s, desc_k<BQ>(Qs, wg * 64, kk), desc_k<BK>(Kt, 0, kk), kk);
            wg_commit();
            wg_wait<0>();
            wg_keep<BK>(s);
            if (k0 + BK - 1 > wr0 || k0 + BK > T) {
#pragma unroll
                for (int n = 0; n < NN; n++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        int key = k0 + n * 8 + 2 * tq + (e & 1), r = rw0 + 8 * (e >> 1);
                        if (key > r || key >= T) s[n][e] = -INFINITY;
                    }
            }
            uint32_t pk[NN][2];
#pragma unroll
            for (int r = 0; r < 2; r++) {
                float mx = -INFINITY;
#pragma unroll
                for (int n = 0; n < NN; n++) mx = fmaxf(mx, fmaxf(s[n][2 * r], s[n][2 * r + 1]));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                float mnew = fmaxf(m[r], mx * sl2);
                float mu = mnew == -INFINITY ? 0.f : mnew;
                float alpha = wg_ex2(m[r] - mu);
                m[r] = mnew;
                l[r] *= alpha;
#pragma unroll
                for (int n = 0; n < DN; n++) o[n][2 * r] *= alpha, o[n][2 * r + 1] *= alpha;
                float rs = 0.f;
#pragma unroll
                for (int n = 0; n < NN; n++) {
                    float p0 = wg_ex2(fmaf(s[n][2 * r], sl2, -mu));
                    float p1 = wg_ex2(fmaf(s[n][2 * r + 1], sl2, -mu));
                    pk[n][r] = pack_bf16x2(p0, p1);
                    rs += p0 + p1;
                }
                l[r] += rs;
            }
            wg_fence();
#pragma unroll
            for (int kk = 0; kk < BK / 16; kk++) {
                uint32_t a[4] = {pk[2 * kk][0], pk[2 * kk][1], pk[2 * kk + 1][0], pk[2 * kk + 1][1]};
                wg_rs<D>(o, a, desc_mn<BK>(Vt, kk), 1);
            }
            wg_commit();
            wg_wait<0>();
            wg_keep<D>(o);
        }
        __syncthreads(); // the next prefetch overwrites this buffer
    }

    bf16 *ob = out + (size_t)b * T * ldq + (size_t)h * D;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        float lr = l[r];
        lr += __shfl_xor_sync(0xffffffffu, lr, 1);
        lr += __shfl_xor_sync(0xffffffffu, lr, 2);
        int row = rw0 + 8 * r;
        if (row >= T) continue;
        float inv = 1.f / lr;
        bf16 *orow = ob + (size_t)row * ldq;
#pragma unroll
        for (int n = 0; n < DN; n++)
            *(uint32_t *)(orow + n * 8 + 2 * tq) = pack_bf16x2(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
        if (tq == 0) lse[((size_t)b * H + h) * T + row] = (m[r] + log2f(lr)) * WG_LN2;
    }
}

// ---------------------------------------------------------------------------------------------
// forward, pipelined inside the warpgroup (FA3's softmax / GEMM overlap): in iteration j the
// warpgroup issues S_j = Q K_j^T and O += P_{j-1} V_{j-1} back to back, waits for S_j only, and
// does S_j's softmax while the tensor cores still run the P V product; then it waits for that
// and rescales O by S_j's alpha. K / V tiles in a 3-slot cp.async ring (tile j in slot j % 3):
// tile j + 1 loads during iteration j while V_{j-1} is still being read. One barrier per tile.
// Every warpgroup runs every tile of its CTA (a tile wholly above a warpgroup's rows is all
// masked: alpha 1, P 0): no wgmma under a divergent branch, which would make ptxas serialise
// the pipeline (C7520); costs one tile in 2 nkt for NWG = 2.
template <int NN, int DN>
__device__ __forceinline__ void fwd2_softmax(float (*s)[4], uint32_t (*pn)[2], float *m, float *l,
                                             float *alpha, int k0, int BKc, int wr0, int rw0,
                                             int tq, int T, float sl2) {
    if (k0 + BKc - 1 > wr0 || k0 + BKc > T) {
#pragma unroll
        for (int n = 0; n < NN; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int key = k0 + n * 8 + 2 * tq + (e & 1), r = rw0 + 8 * (e >> 1);
                if (key > r || key >= T) s[n][e] = -INFINITY;
            }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        float mx = -INFINITY;
#pragma unroll
        for (int n = 0; n < NN; n++) mx = fmaxf(mx, fmaxf(s[n][2 * r], s[n][2 * r + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        float mnew = fmaxf(m[r], mx * sl2);
        float mu = mnew == -INFINITY ? 0.f : mnew;
        alpha[r] = wg_ex2(m[r] - mu);
        m[r] = mnew;
        float rs = 0.f;
#pragma unroll
        for (int n = 0; n < NN; n++) {
            float p0 = wg_ex2(fmaf(s[n][2 * r], sl2, -mu));
            float p1 = wg_ex2(fmaf(s[n][2 * r + 1], sl2, -mu));
            pn[n][r] = pack_bf16x2(p0, p1);
            rs += p0 + p1;
        }
        l[r] = l[r] * alpha[r] + rs;
    }
}

template <int D, int NWG, int BK>
__device__ __forceinline__ void fwd2_wg_body(bf16 *out, float *lse, const bf16 *q, const bf16 *k,
                                             const bf16 *v, int T, int H, int KVH, float sl2) {
    constexpr int NT = 128 * NWG, BQ = 64 * NWG, DN = D / 8, NN = BK / 8, NS = 3;
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    bf16 *Qs = (bf16 *)smem_base1k(smem_raw), *Ks = Qs + BQ * D, *Vs = Ks + NS * BK * D;

    int b = blockIdx.x / H, h = blockIdx.x % H, kvh = h / (H / KVH);
    int q0 = (gridDim.y - 1 - blockIdx.y) * BQ;
    size_t ldq = (size_t)H * D, ldk = (size_t)KVH * D;
    const bf16 *qb = q + (size_t)b * T * ldq + (size_t)h * D;
    const bf16 *kb = k + (size_t)b * T * ldk + (size_t)kvh * D;
    const bf16 *vb = v + (size_t)b * T * ldk + (size_t)kvh * D;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    int wg = warp >> 2, wl = warp & 3;
    int wr0 = q0 + wg * 64;      // this warpgroup's first row
    int rw0 = wr0 + wl * 16 + g; // this thread's rows rw0, rw0 + 8
    int nkt = (min(q0 + BQ, T) + BK - 1) / BK;

    ptile_load<D, BQ, NT>(Qs, qb, ldq, q0, T);
    ptile_load<D, BK, NT>(Ks, kb, ldk, 0, T);
    ptile_load<D, BK, NT>(Vs, vb, ldk, 0, T);
    cp_async_commit();

    float o[DN][4];
#pragma unroll
    for (int n = 0; n < DN; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f}, alpha[2];
    uint32_t pk[NN][2]; // P of the previous tile: the A operand of the P V product in flight

    // tile 0: S only
    cp_async_wait<0>();
    fence_async_smem();
    __syncthreads();
    if (nkt > 1) {
        ptile_load<D, BK, NT>(Ks + BK * D, kb, ldk, BK, T);
        ptile_load<D, BK, NT>(Vs + BK * D, vb, ldk, BK, T);
    }
    cp_async_commit();
    {
        float s[NN][4];
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
            wg_ss<BK>(s, desc_k<BQ>(Qs, wg * 64, kk), desc_k<BK>(Ks, 0, kk), kk);
        wg_commit();
        wg_wait<0>();
        wg_keep<BK>(s);
        fwd2_softmax<NN, DN>(s, pk, m, l, alpha, 0, BK, wr0, rw0, tq, T, sl2);
    }
    for (int j = 1; j < nkt; j++) {
        cp_async_wait<0>(); // tile j (issued in iteration j - 1)
        fence_async_smem();
        __syncthreads(); // also: every warpgroup is done with tile j - 2 (slot (j + 1) % 3)
        if (j + 1 < nkt) {
            int sl = (j + 1) % NS;
            ptile_load<D, BK, NT>(Ks + sl * BK * D, kb, ldk, (j + 1) * BK, T);
            ptile_load<D, BK, NT>(Vs + sl * BK * D, vb, ldk, (j + 1) * BK, T);
        }
        cp_async_commit();
        const bf16 *Kt = Ks + (j % NS) * BK * D, *Vp = Vs + ((j + NS - 1) % NS) * BK * D;
        float s[NN][4];
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
            wg_ss<BK>(s, desc_k<BQ>(Qs, wg * 64, kk), desc_k<BK>(Kt, 0, kk), kk);
        wg_commit();
#pragma unroll
        for (int kk = 0; kk < BK / 16; kk++) {
            uint32_t a[4] = {pk[2 * kk][0], pk[2 * kk][1], pk[2 * kk + 1][0], pk[2 * kk + 1][1]};
            wg_rs<D>(o, a, desc_mn<BK>(Vp, kk), 1);
        }
        wg_commit();
        wg_wait<1>();
        wg_keep<BK>(s);
        uint32_t pn[NN][2];
        fwd2_softmax<NN, DN>(s, pn, m, l, alpha, j * BK, BK, wr0, rw0, tq, T, sl2);
        wg_wait<0>();
        wg_keep<D>(o);
#pragma unroll
        for (int n = 0; n < DN; n++) {
            o[n][0] *= alpha[0], o[n][1] *= alpha[0];
            o[n][2] *= alpha[1], o[n][3] *= alpha[1];
        }
#pragma unroll
        for (int n = 0; n < NN; n++) pk[n][0] = pn[n][0], pk[n][1] = pn[n][1];
    }
    { // the last tile's P V
        const bf16 *Vp = Vs + ((nkt - 1) % NS) * BK * D;
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < BK / 16; kk++) {
            uint32_t a[4] = {pk[2 * kk][0], pk[2 * kk][1], pk[2 * kk + 1][0], pk[2 * kk + 1][1]};
            wg_rs<D>(o, a, desc_mn<BK>(Vp, kk), 1);
        }
        wg_commit();
        wg_wait<0>();
        wg_keep<D>(o);
    }

    bf16 *ob = out + (size_t)b * T * ldq + (size_t)h * D;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        float lr = l[r];
        lr += __shfl_xor_sync(0xffffffffu, lr, 1);
        lr += __shfl_xor_sync(0xffffffffu, lr, 2);
        int row = rw0 + 8 * r;
        if (row >= T) continue;
        float inv = 1.f / lr;
        bf16 *orow = ob + (size_t)row * ldq;
#pragma unroll
        for (int n = 0; n < DN; n++)
            *(uint32_t *)(orow + n * 8 + 2 * tq) = pack_bf16x2(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
        if (tq == 0) lse[((size_t)b * H + h) * T + row] = (m[r] + log2f(lr)) * WG_LN2;
    }
}

// ---------------------------------------------------------------------------------------------
// forward, warp-specialised (FA3's structure): NWG consumer warpgroups (64 query rows each) and
// one producer warp (warp 4 NWG) that loads Q once and K / V tiles into an NS-slot ring with TMA
// (128-byte swizzle: the planar layout above), signalling per-slot "full" mbarriers (the
// transaction bytes); consumers release a slot through its "empty" mbarrier (one arrive per
// consumer warp after its wgmma.wait_group). No CTA-wide barrier in the loop, so the warpgroups
// drift apart and one's softmax overlaps the other's products. Inside a warpgroup the same
// S_j / P_{j-1} V_{j-1} overlap as fwd2. K and V have separate barriers: S_j may start before
// V_j has landed.
struct Fwd3Maps {
    CUtensorMap q, k, v;
};
template <int D, int NWG, int BK, int NS, int PWG>
__device__ __forceinline__ void fwd3_wg_body(const Fwd3Maps &maps, bf16 *out, float *lse, int T,
                                             int H, int KVH, float sl2) {
    constexpr int BQ = 64 * NWG, DN = D / 8, NN = BK / 8, NP = D / 64;
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    bf16 *Qs = (bf16 *)smem_base1k(smem_raw), *Ks = Qs + BQ * D, *Vs = Ks + NS * BK * D;
    uint64_t *bar = (uint64_t *)(Vs + NS * BK * D); // qfull, kfull[NS], vfull[NS], kempty, vempty
    uint64_t *qfull = bar, *kfull = bar + 1, *vfull = kfull + NS, *kempty = vfull + NS,
             *vempty = kempty + NS;

    int b = blockIdx.x / H, h = blockIdx.x % H, kvh = h / (H / KVH);
    int q0 = (gridDim.y - 1 - blockIdx.y) * BQ;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int nkt = (min(q0 + BQ, T) + BK - 1) / BK;

    if (threadIdx.x == 0) {
        mbar_init(qfull, 1);
        for (int i = 0; i < NS; i++) {
            mbar_init(kfull + i, 1), mbar_init(vfull + i, 1);
            mbar_init(kempty + i, 4 * NWG), mbar_init(vempty + i, 4 * NWG);
        }
        mbar_fence_init();
    }
    __syncthreads();

    if (warp >= 4 * NWG) { // producer
        // PWG: a whole producer warpgroup gives its registers to the consumers (FA3's split)
        if (PWG) asm volatile("setmaxnreg.dec.sync.aligned.u32 24;\n" ::: "memory");
        if (warp == 4 * NWG && lane == 0) {
            mbar_expect_tx(qfull, BQ * D * 2);
            for (int p = 0; p < NP; p++)
                tma_load_4d(Qs + p * BQ * 64, &maps.q, qfull, p * 64, h, q0, b);
            for (int j = 0; j < nkt; j++) {
                int sl = j % NS, u = j / NS;
                if (u > 0) mbar_wait(kempty + sl, (u - 1) & 1);
                mbar_expect_tx(kfull + sl, BK * D * 2);
                for (int p = 0; p < NP; p++)
                    tma_load_4d(Ks + sl * BK * D + p * BK * 64, &maps.k, kfull + sl, p * 64, kvh,
                                j * BK, b);
                if (u > 0) mbar_wait(vempty + sl, (u - 1) & 1);
                mbar_expect_tx(vfull + sl, BK * D * 2);
                for (int p = 0; p < NP; p++)
                    tma_load_4d(Vs + sl * BK * D + p * BK * 64, &maps.v, vfull + sl, p * 64, kvh,
                                j * BK, b);
            }
        }
        return;
    }

    if (PWG) asm volatile("setmaxnreg.inc.sync.aligned.u32 240;\n" ::: "memory");
    int g = lane >> 2, tq = lane & 3, wg = warp >> 2, wl = warp & 3;
    int wr0 = q0 + wg * 64;      // this warpgroup's first row
    int rw0 = wr0 + wl * 16 + g; // this thread's rows rw0, rw0 + 8
    float o[DN][4];
#pragma unroll
    for (int n = 0; n < DN; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f}, alpha[2];
    uint32_t pk[NN][2];

    mbar_wait(qfull, 0);
    mbar_wait(kfull, 0);
    {
        float s[NN][4];
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
            wg_ss<BK>(s, desc_k<BQ>(Qs, wg * 64, kk), desc_k<BK>(Ks, 0, kk), kk);
        wg_commit();
        wg_wait<0>();
        wg_keep<BK>(s);
        if (lane == 0) mbar_arrive(kempty);
        fwd2_softmax<NN, DN>(s, pk, m, l, alpha, 0, BK, wr0, rw0, tq, T, sl2);
    }
    for (int j = 1; j < nkt; j++) {
        int sl = j % NS, u = j / NS, sp = (j - 1) % NS, up = (j - 1) / NS;
        const bf16 *Kt = Ks + sl * BK * D, *Vp = Vs + sp * BK * D;
        float s[NN][4];
        mbar_wait(kfull + sl, u & 1);
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
            wg_ss<BK>(s, desc_k<BQ>(Qs, wg * 64, kk), desc_k<BK>(Kt, 0, kk), kk);
        wg_commit();
        mbar_wait(vfull + sp, up & 1);
#pragma unroll
        for (int kk = 0; kk < BK / 16; kk++) {
            uint32_t a[4] = {pk[2 * kk][0], pk[2 * kk][1], pk[2 * kk + 1][0], pk[2 * kk + 1][1]};
            wg_rs<D>(o, a, desc_mn<BK>(Vp, kk), 1);
        }
        wg_commit();
        wg_wait<1>();
        wg_keep<BK>(s);
        if (lane == 0) mbar_arrive(kempty + sl);
        uint32_t pn[NN][2];
        fwd2_softmax<NN, DN>(s, pn, m, l, alpha, j * BK, BK, wr0, rw0, tq, T, sl2);
        wg_wait<0>();
        wg_keep<D>(o);
        if (lane == 0) mbar_arrive(vempty + sp);
#pragma unroll
        for (int n = 0; n < DN; n++) {
            o[n][0] *= alpha[0], o[n][1] *= alpha[0];
            o[n][2] *= alpha[1], o[n][3] *= alpha[1];
        }
#pragma unroll
        for (int n = 0; n < NN; n++) pk[n][0] = pn[n][0], pk[n][1] = pn[n][1];
    }
    {
        int sp = (nkt - 1) % NS, up = (nkt - 1) / NS;
        const bf16 *Vp = Vs + sp * BK * D;
        mbar_wait(vfull + sp, up & 1);
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < BK / 16; kk++) {
            uint32_t a[4] = {pk[2 * kk][0], pk[2 * kk][1], pk[2 * kk + 1][0], pk[2 * kk + 1][1]};
            wg_rs<D>(o, a, desc_mn<BK>(Vp, kk), 1);
        }
        wg_commit();
        wg_wait<0>();
        wg_keep<D>(o);
    }

    size_t ldq = (size_t)H * D;
    bf16 *ob = out + (size_t)b * T * ldq + (size_t)h * D;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        float lr = l[r];
        lr += __shfl_xor_sync(0xffffffffu, lr, 1);
        lr += __shfl_xor_sync(0xffffffffu, lr, 2);
        int row = rw0 + 8 * r;
        if (row >= T) continue;
        float inv = 1.f / lr;
        bf16 *orow = ob + (size_t)row * ldq;
#pragma unroll
        for (int n = 0; n < DN; n++)
            *(uint32_t *)(orow + n * 8 + 2 * tq) = pack_bf16x2(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
        if (tq == 0) lse[((size_t)b * H + h) * T + row] = (m[r] + log2f(lr)) * WG_LN2;
    }
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

template <int D, int NWG, int BK>
__global__ void __launch_bounds__(128 * NWG, 1)
    fwd_kernel(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, int T, int H,
               int KVH, float sl2) {
    fwd_wg_body<D, NWG, BK>(out, lse, q, k, v, T, H, KVH, sl2);
}
template <int D, int NWG, int BK>
__global__ void __launch_bounds__(128 * NWG, 1)
    fwd2_kernel(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, int T, int H,
                int KVH, float sl2) {
    fwd2_wg_body<D, NWG, BK>(out, lse, q, k, v, T, H, KVH, sl2);
}
// 288 threads = 9 warps: 3 warps share one SM sub-partition's 16K registers, so at most 168 per
// thread (r2: __maxnreg__(224) failed to launch, out of resources); BK = 128 spills a little
// PWG = 1: a producer warpgroup (setmaxnreg: 24 there, 240 in the 2 consumer warpgroups)
template <int D, int NWG, int BK, int NS, int PWG>
__global__ void __launch_bounds__(128 * NWG + (PWG ? 128 : 32), 1)
    fwd3_kernel(const __grid_constant__ Fwd3Maps maps, bf16 *out, float *lse, int T, int H,
                int KVH, float sl2) {
    fwd3_wg_body<D, NWG, BK, NS, PWG>(maps, out, lse, T, H, KVH, sl2);
}
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

// wgmma code exists only for sm_90 (sm_90a cubin): elsewhere return -1 and launch nothing
static int arch_ok(void) {
    static int ok = -1;
    if (ok < 0) {
        int dev = 0, major = 0, minor = 0;
        ok = cudaGetDevice(&dev) == cudaSuccess &&
             cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) ==
                 cudaSuccess &&
             cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) ==
                 cudaSuccess &&
             major == 9 && minor == 0;
        cudaGetLastError();
    }
    return ok;
}
// the grids put query / key tiles of 64 rows in gridDim.y (<= 65535)
static int shape_ok(int B, int T, int H, int KVH, int D) {
    return (D == 64 || D == 128) && B >= 1 && T >= 1 && T <= 65535 * 64 && H >= 1 && KVH >= 1 &&
           H % KVH == 0 && (size_t)B * H <= 0x7fffffffu && arch_ok();
}

// one-time opt-in to more than 48 KB of dynamic shared memory per kernel instantiation
template <typename K> static void smem_optin(K kernel, size_t bytes) {
    if (bytes > 48 * 1024)
        cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       (int)bytes));
}

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

// Tilings (flash_wgmma_tune; -1 skips that backward kernel so the other can be timed alone):
//   forward 0: <2 warpgroups, 64-key tiles> 1: <1, 64> 2: <1, 128> 3: <2, 128>;
//           pipelined (fwd2): 4: <2, 64> 5: <2, 128> 6: <3, 64>
//           warp-specialised TMA (fwd3) <warpgroups, keys, ring slots>: 7: <2, 64, 3>
//           8: <2, 128, 2>; with a producer warpgroup and setmaxnreg 24 / 240: 9: <2, 128, 2>
//           10: <2, 64, 4>
//   dK/dV   0: 2 warpgroups (128 keys)  1: 1 warpgroup (64 keys)  2: the fused backward (dK, dV
//           and dQ in one kernel, D = 128; D = 64 runs the split tilings 0 / 0); ordered mode:
//           per-warp red order; 3: the same, ordered mode: load-add-store per CTA; 4: 2 with
//           PIPE (each step's dQ reds issued under the next step's products, lse / Di by
//           cp.async); 5: 1 with lse / Di by cp.async; 9: ordered mode 5, atomic mode 2 (D = 64: 5)
//   dQ      0: 2 warpgroups  1: 1 warpgroup  2: 3 warpgroups
//   dQ      0: 2 warpgroups (128 rows)  1: 1 warpgroup (64 rows)
// Defaults from r1-r3 (H200, T = 16K, B = 1, H = KVH = 32, D = 128, each kernel alone, ms):
//   forward: 7 (fwd3 <2, 64, 3>) 5.03 (8: 5.05, 9: 5.11, 10: 5.73); fwd2: 6 5.69, 5 5.96, 4 7.07;
//     fwd: 3 6.22, 0 6.75, 1 7.32, 2 9.42; flash_bf16 7.13
//   dK/dV alone (+Di): 5 10.9, 1 11.2, 0 12.1; dQ alone (+Di): 2 7.38, 0 7.96, 1 8.92
//   fused (dK, dV, dQ): atomic 16.1-16.5 (PIPE 16.9-17.0); ordered per warp 22.4 (PIPE 23.6), per
//     CTA 24.2-24.4: the ordering's acquire / fence latencies sit in every step, so the ordered
//     mode keeps the split path (5 + dQ 2: ~18.2) and only the atomic mode takes the fused
//     kernel (dK/dV 9 = that choice)
static int tune_fwd = 7, tune_dkdv = 9, tune_dq = 2, tune_env_read = 0;
extern "C" void flash_wgmma_tune(int fwd, int dkdv, int dq) {
    tune_fwd = fwd, tune_dkdv = dkdv, tune_dq = dq, tune_env_read = 1;
}
static void tune_from_env(void) {
    if (tune_env_read) return;
    tune_env_read = 1;
    const char *e = getenv("MSLAB_FLASH_WGMMA_TUNE");
    int f, d, q;
    if (e && sscanf(e, "%d,%d,%d", &f, &d, &q) == 3) tune_fwd = f, tune_dkdv = d, tune_dq = q;
}

template <int D, int NWG, int BK>
static void fwd_run(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, int B,
                    int T, int H, int KVH) {
    constexpr int BQ = 64 * NWG;
    size_t smem = 1024 + sizeof(bf16) * (size_t)(BQ * D + 4 * BK * D);
    static bool init = false;
    if (!init) smem_optin(fwd_kernel<D, NWG, BK>, smem), init = true;
    dim3 grid(B * H, (T + BQ - 1) / BQ);
    fwd_kernel<D, NWG, BK><<<grid, 128 * NWG, smem>>>(out, lse, q, k, v, T, H, KVH,
                                                      WG_LOG2E / sqrtf((float)D));
    cudaLaunchCheck();
}
template <int D, int NWG, int BK>
static void fwd2_run(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, int B,
                     int T, int H, int KVH) {
    constexpr int BQ = 64 * NWG;
    size_t smem = 1024 + sizeof(bf16) * (size_t)(BQ * D + 6 * BK * D);
    static bool init = false;
    if (!init) smem_optin(fwd2_kernel<D, NWG, BK>, smem), init = true;
    dim3 grid(B * H, (T + BQ - 1) / BQ);
    fwd2_kernel<D, NWG, BK><<<grid, 128 * NWG, smem>>>(out, lse, q, k, v, T, H, KVH,
                                                       WG_LOG2E / sqrtf((float)D));
    cudaLaunchCheck();
}
// TMA descriptors: x [B, T, NH, D] bf16 as a 4-d tensor (D, NH, T, B), box (64, 1, rows, 1) =
// one [rows][64] plane, 128-byte swizzle (the planar tile layout), rows past T zero-filled
typedef CUresult (*EncodeTiledFn)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *,
                                  const cuuint64_t *, const cuuint64_t *, const cuuint32_t *,
                                  const cuuint32_t *, CUtensorMapInterleave, CUtensorMapSwizzle,
                                  CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
static EncodeTiledFn encode_fn(void) {
    static EncodeTiledFn fn = NULL;
    static int tried = 0;
    if (!tried) {
        tried = 1;
        void *p = NULL;
        cudaDriverEntryPointQueryResult qr;
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000,
                                             cudaEnableDefault, &qr) == cudaSuccess &&
            qr == cudaDriverEntryPointSuccess)
            fn = (EncodeTiledFn)p;
        cudaGetLastError();
    }
    return fn;
}
static bool make_map(CUtensorMap *m, const bf16 *x, int B, int T, int NH, int D, int rows) {
    EncodeTiledFn fn = encode_fn();
    if (!fn) return false;
    cuuint64_t dims[4] = {(cuuint64_t)D, (cuuint64_t)NH, (cuuint64_t)T, (cuuint64_t)B};
    cuuint64_t strides[3] = {(cuuint64_t)D * 2, (cuuint64_t)NH * D * 2, (cuuint64_t)T * NH * D * 2};
    cuuint32_t box[4] = {64, 1, (cuuint32_t)rows, 1}, es[4] = {1, 1, 1, 1};
    return fn(m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4, (void *)x, dims, strides, box, es,
              CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
              CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}
// false: the maps could not be made (no driver entry point): the caller runs fwd2 instead
template <int D, int NWG, int BK, int NS, int PWG = 0>
static bool fwd3_run(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, int B,
                     int T, int H, int KVH) {
    constexpr int BQ = 64 * NWG;
    Fwd3Maps maps;
    if (!make_map(&maps.q, q, B, T, H, D, BQ) || !make_map(&maps.k, k, B, T, KVH, D, BK) ||
        !make_map(&maps.v, v, B, T, KVH, D, BK))
        return false;
    size_t smem = 1024 + sizeof(bf16) * (size_t)(BQ * D + 2 * NS * BK * D) + 8 * (1 + 4 * NS);
    static bool init = false;
    if (!init) smem_optin(fwd3_kernel<D, NWG, BK, NS, PWG>, smem), init = true;
    dim3 grid(B * H, (T + BQ - 1) / BQ);
    fwd3_kernel<D, NWG, BK, NS, PWG><<<grid, 128 * NWG + (PWG ? 128 : 32), smem>>>(maps, out, lse, T, H, KVH,
                                                               WG_LOG2E / sqrtf((float)D));
    cudaLaunchCheck();
    return true;
}
template <int D>
static void fwd_launch(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, int B,
                       int T, int H, int KVH) {
    switch (tune_fwd) {
    case 1: fwd_run<D, 1, 64>(out, lse, q, k, v, B, T, H, KVH); break;
    case 2: fwd_run<D, 1, 128>(out, lse, q, k, v, B, T, H, KVH); break;
    case 3: fwd_run<D, 2, 128>(out, lse, q, k, v, B, T, H, KVH); break;
    case 4: fwd2_run<D, 2, 64>(out, lse, q, k, v, B, T, H, KVH); break;
    case 5: fwd2_run<D, 2, 128>(out, lse, q, k, v, B, T, H, KVH); break;
    case 6: fwd2_run<D, 3, 64>(out, lse, q, k, v, B, T, H, KVH); break;
    case 7:
        if (!fwd3_run<D, 2, 64, 3>(out, lse, q, k, v, B, T, H, KVH))
            fwd2_run<D, 2, 64>(out, lse, q, k, v, B, T, H, KVH);
        break;
    case 8:
        if (!fwd3_run<D, 2, 128, 2>(out, lse, q, k, v, B, T, H, KVH))
            fwd2_run<D, 2, 128>(out, lse, q, k, v, B, T, H, KVH);
        break;
    case 9:
        if (!fwd3_run<D, 2, 128, 2, 1>(out, lse, q, k, v, B, T, H, KVH))
            fwd2_run<D, 2, 128>(out, lse, q, k, v, B, T, H, KVH);
        break;
    case 10:
        if (!fwd3_run<D, 2, 64, 4, 1>(out, lse, q, k, v, B, T, H, KVH))
            fwd2_run<D, 2, 64>(out, lse, q, k, v, B, T, H, KVH);
        break;
    default: fwd_run<D, 2, 64>(out, lse, q, k, v, B, T, H, KVH); break;
    }
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
    int dkdv_t = tune_dkdv;
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
    switch (tune_dq) {
    case -1: break;
    case 1: dq_run<D, 1>(dq, dout, lse, Di, q, k, v, B, T, H, KVH, sl2, scale); break;
    case 2: dq_run<D, 3>(dq, dout, lse, Di, q, k, v, B, T, H, KVH, sl2, scale); break;
    default: dq_run<D, 2>(dq, dout, lse, Di, q, k, v, B, T, H, KVH, sl2, scale); break;
    }
}

extern "C" int flash_wgmma_fwd(uint16_t *out, float *lse, const uint16_t *q, const uint16_t *k,
                               const uint16_t *v, int B, int T, int H, int KVH, int D) {
    if (!shape_ok(B, T, H, KVH, D)) return -1;
    tune_from_env();
    if (D == 64)
        fwd_launch<64>((bf16 *)out, lse, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, B, T,
                       H, KVH);
    else
        fwd_launch<128>((bf16 *)out, lse, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, B,
                        T, H, KVH);
    return 0;
}

extern "C" int flash_wgmma_bwd(uint16_t *dq, uint16_t *dk, uint16_t *dv, const uint16_t *dout,
                               const uint16_t *out, const float *lse, const uint16_t *q,
                               const uint16_t *k, const uint16_t *v, int B, int T, int H, int KVH,
                               int D) {
    if (!shape_ok(B, T, H, KVH, D)) return -1;
    tune_from_env();
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
