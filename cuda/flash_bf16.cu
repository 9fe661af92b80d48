// flash_bf16.cu: dense causal grouped-query attention in bf16 on tensor cores (cuda/attn_bf16.h),
// FlashAttention-2 structure with mma.sync m16n8k16 (bf16 in, fp32 accumulate; mma_bf16.cuh).
// The fallback behind the Hopper wgmma kernels (flash_wgmma*.cu; cuda/attn_mode.cu picks, and
// MSLAB_FLASH_WGMMA=0 forces these).
//
// Layout: q, out, dout, dq [B,T,H,D]; k, v, dk, dv [B,T,KVH,D]; lse [B,H,T] natural log. D = 64
// or 128 (template). Shared-memory tiles are [rows][D] bf16 with 16-byte chunks XOR-swizzled by
// row (swz<D>): ldmatrix and cp.async are bank-conflict free without padding. Fragment algebra
// (mma_bf16.cuh): the fp32 C fragments of S over 16 keys, packed to bf16, ARE the A fragments of
// the next product over those keys, so P never goes through shared memory in the forward.
//
// Forward (flash_fwd_kernel<D, NW = 4, BK = 64, MI = 2>): CTA = (b, h, 128-row query tile), 4
//   warps of 2 x 16 rows (each K / V fragment read from shared memory feeds 2 mmas), query tiles
//   heaviest (latest) first. 64-key K/V tiles stream through a cp.async double buffer. Per key
//   tile: S = Q K^T (fp32), causal mask only on tiles that reach the diagonal or T (tiles above
//   the diagonal are never loaded; warps entirely above a tile skip it), online softmax in
//   registers on log2e-prescaled scores (ex2; running max m, per-thread partial sums l reduced
//   once at the end), O += P V (V via ldmatrix.trans). out = O / l in bf16,
//   lse = (m + log2 l) ln 2.
// Backward (recomputes P = 2^(S log2e / sqrt(D) - lse log2e), never stores it):
//   flash_bwd_pre: Di = rowsum(dO * O) in fp32, one warp per row, fixed shuffle order.
//   flash_bwd_fa2_kernel<D, ORD>: FlashAttention-2's backward. CTA = (b, kv head, 128-key
//     block), 8 warps, 64-query steps; a different 2D warp tiling per product so each
//     shared-memory fragment feeds 2..4 mmas; P and dS go through shared memory; dK, dV in
//     registers; dQ partials into an fp32 accumulator by red.global.add, unordered (ORD = 0, the
//     atomic mode) or in key-block order behind per-tile counters (ORD = 1, the deterministic
//     mode; comment at the kernel; a timed-out wait is reported since s13: ord_watch.cuh), then
//     dq = acc / sqrt(D) in bf16 by a small kernel. 5 matmuls.
//     The 1/sqrt(D) of dS is applied once, to dQ and dK at the end.
// Measured (H200, B = 1, H = KVH = 32, D = 128, r3 bench rows): forward 7.1 / 28.9 ms at 16K /
//   32K (~305 TFLOP/s); fwd+bwd 28.7 / 114.0 ms ordered, 28.3 / 113.5 atomic: 0.84x FA2. ncu at
//   16K: the backward kernel ~21.3 ms (~258 TFLOP/s), issue slots 32% busy with 2 warps per
//   scheduler (255 registers: dK, dV take 128): latency-bound, not bandwidth-bound.
// Removed after measurement (s5; the code is in git history before this header): forward tilings
//   8 x 16 rows (8.7 ms vs 7.1 at 16K), 1 x 16 rows, 32 / 128-key tiles, Q fragments in registers;
//   the split 7-product backward (dK/dV + dQ kernels: fwd+bwd 32.4 / 131.1 ms vs 28.7 / 114.0)
//   and its one-launch form (bwd 26.7 vs 25.3 ms); a 16-key-warp fused kernel (bwd 34.2 ms); in
//   the FA2-class kernel: 64-key blocks (1.5x slower), ordered load-add-store (+36% over atomic),
//   TMA bulk reduce-add (+20%), ordered red.add without the counter snapshot (fwd+bwd 30.7 /
//   122.0 ms), early / per-warp counter polls (29.9 / 119.7, 29.0 / 116.4), double-buffered P /
//   dS (29.6 / 117.4), dQ before dK / dV (31.7 / 126.1).
// Deterministic (attn_bf16_deterministic() = 1, the default): every output element is accumulated
//   in a fixed order: by one thread in a fixed loop (mma's internal order is fixed by the
//   hardware), or, for dQ, partials added in key-block order behind a counter; two calls give
//   identical bits. Mode 0 adds the dQ partials with fp32 atomics.
//
// Work (causal, per (b, h)): forward 2 matmuls over the lower triangle = 2 T^2 D FLOP; backward
//   5 (5 T^2 D). Bytes: the forward reads q, writes out once and reads k, v once per query tile
//   (T / 128 times, from L2): e.g. T = 16K, H = 32, D = 128: 2.2 TFLOP vs ~0.3 GB of HBM
//   traffic, ~7000 FLOP/byte: compute-bound; the backward adds the dQ accumulator's fp32 reds
//   (L2-resident), Di [B,H,T] fp32 and the counters in scratch.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "cuda_common.cuh"
#include "ord_watch.cuh"
#include "mma_bf16.cuh"
extern "C" {
#include "attn_bf16.h"
}

typedef __nv_bfloat16 bf16;

#define FL_LOG2E 1.4426950408889634f
#define FL_LN2 0.6931471805599453f

// 2^x, MUFU.EX2 without exp2f's denormal fix-up (-inf -> 0; denormal results flush to 0, which
// a probability that small never misses)
__device__ __forceinline__ float ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

// 4 bytes global -> shared, asynchronous; valid == false writes 0
__device__ __forceinline__ void cp_async4(void *smem, const void *gmem, bool valid) {
    uint32_t s = (uint32_t)__cvta_generic_to_shared(smem);
    int n = valid ? 4 : 0;
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
}

// rows [r0, r0 + ROWS) of x (row r at x + r * ld) into the swizzled tile dst; rows >= T zero
template <int D, int ROWS, int NT>
__device__ __forceinline__ void tile_load(bf16 *dst, const bf16 *x, size_t ld, int r0, int T) {
    constexpr int CH = D / 8;
#pragma unroll
    for (int i = threadIdx.x; i < ROWS * CH; i += NT) {
        int r = i / CH, c = i % CH, t = r0 + r;
        bool ok = t < T;
        cp_async16(dst + swz<D>(r, c), x + (size_t)(ok ? t : 0) * ld + c * 8, ok);
    }
}

// 16 rows (row0 + lane & 15) x 16 columns (chunk pair 2*dc) of a swizzled tile: an A fragment
template <int D>
__device__ __forceinline__ void lds_a(uint32_t a[4], const bf16 *tile, int row0, int dc, int lane) {
    ldsm_x4(a, tile + swz<D>(row0 + (lane & 15), 2 * dc + (lane >> 4)));
}
// B fragments of two adjacent n-tiles (rows n0..n0+15 of the tile are the n index, columns of
// chunk pair dc the k index): r[0], r[1] for rows n0..n0+7, r[2], r[3] for n0+8..n0+15
template <int D>
__device__ __forceinline__ void lds_b(uint32_t r[4], const bf16 *tile, int n0, int dc, int lane) {
    ldsm_x4(r, tile + swz<D>(n0 + (lane & 7) + ((lane >> 4) << 3), 2 * dc + ((lane >> 3) & 1)));
}
// B fragments with the tile's rows as the k index (rows k0..k0+15) and columns as n: two n-tiles
// at columns 16*dp and 16*dp+8 (ldmatrix.trans)
template <int D>
__device__ __forceinline__ void lds_bt(uint32_t r[4], const bf16 *tile, int k0, int dp, int lane) {
    ldsm_x4_t(r, tile + swz<D>(k0 + (lane & 7) + (((lane >> 3) & 1) << 3), 2 * dp + (lane >> 4)));
}

// acc[16 x 8*NN] += A(16 x D, rows arow0.. of tileA) * B^T where B rows n = tileB rows 0..8*NN-1

// c[MI m-tiles][2 NP n-tiles] += A B^T over D: A rows a0 + 16 mi.. of a swizzled tile, B rows
// b0.. (the n index) of another; each B fragment read from shared memory feeds MI mmas
template <int D, int MI, int NP>
__device__ __forceinline__ void mma_abt(float (&c)[MI][2 * NP][4], const bf16 *A, int a0,
                                        const bf16 *B, int b0, int lane) {
#pragma unroll
    for (int dc = 0; dc < D / 16; dc++) {
        uint32_t a[MI][4];
#pragma unroll
        for (int mi = 0; mi < MI; mi++) lds_a<D>(a[mi], A, a0 + 16 * mi, dc, lane);
#pragma unroll
        for (int np = 0; np < NP; np++) {
            uint32_t bb[4];
            lds_b<D>(bb, B, b0 + 16 * np, dc, lane);
#pragma unroll
            for (int mi = 0; mi < MI; mi++) {
                mma_bf16_16816(c[mi][2 * np], a[mi], bb[0], bb[1]);
                mma_bf16_16816(c[mi][2 * np + 1], a[mi], bb[2], bb[3]);
            }
        }
    }
}

// c[MI m-tiles][2 ND n-tiles] += A B over NK 16-row k-steps: frag(mi, kk, f) gives f = the A
// fragment of m-tile mi at k-step kk; B rows 16 kk.. (the k index) of a swizzled tile, columns
// 16 (d0 + j).. (ldmatrix.trans); each B fragment read from shared memory feeds MI mmas
template <int D, int MI, int NK, int ND, class Frag>
__device__ __forceinline__ void mma_ab(float (&c)[MI][2 * ND][4], Frag &&frag, const bf16 *B,
                                       int d0, int lane) {
#pragma unroll
    for (int kk = 0; kk < NK; kk++) {
        uint32_t a[MI][4];
#pragma unroll
        for (int mi = 0; mi < MI; mi++) frag(mi, kk, a[mi]);
#pragma unroll
        for (int j = 0; j < ND; j++) {
            uint32_t bb[4];
            lds_bt<D>(bb, B, 16 * kk, d0 + j, lane);
#pragma unroll
            for (int mi = 0; mi < MI; mi++) {
                mma_bf16_16816(c[mi][2 * j], a[mi], bb[0], bb[1]);
                mma_bf16_16816(c[mi][2 * j + 1], a[mi], bb[2], bb[3]);
            }
        }
    }
}

// one-time opt-in to more than 48 KB of dynamic shared memory per kernel instantiation
template <typename K> static void smem_optin(K kernel, size_t bytes) {
    if (bytes > 48 * 1024)
        cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       (int)bytes));
}

// ---------------------------------------------------------------------------------------------
// forward

template <int D, int NW, int BK, int MI>
__global__ void __launch_bounds__(NW * 32, 1)
flash_fwd_kernel(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, int T, int H,
                 int KVH, float sl2) {
    // MI row blocks of 16 per warp: each K / V fragment read from shared memory feeds MI mmas
    constexpr int NT = NW * 32, WR = 16 * MI, BQ = WR * NW, DN = D / 8, NN = BK / 8;
    extern __shared__ __align__(128) unsigned char smem[];
    bf16 *Qs = (bf16 *)smem, *Ks = Qs + BQ * D, *Vs = Ks + 2 * BK * D;

    int b = blockIdx.x / H, h = blockIdx.x % H, kvh = h / (H / KVH);
    int q0 = (gridDim.y - 1 - blockIdx.y) * BQ; // heaviest (latest) query tiles first
    size_t ldq = (size_t)H * D, ldk = (size_t)KVH * D;
    const bf16 *qb = q + (size_t)b * T * ldq + (size_t)h * D;
    const bf16 *kb = k + (size_t)b * T * ldk + (size_t)kvh * D;
    const bf16 *vb = v + (size_t)b * T * ldk + (size_t)kvh * D;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    int wr0 = q0 + warp * WR; // this warp's first row; row of (mi, r): wr0 + 16 mi + g + 8 r
    int nkt = (min(q0 + BQ, T) + BK - 1) / BK;

    tile_load<D, BQ, NT>(Qs, qb, ldq, q0, T);
    tile_load<D, BK, NT>(Ks, kb, ldk, 0, T);
    tile_load<D, BK, NT>(Vs, vb, ldk, 0, T);
    cp_async_commit();

    float o[MI][DN][4];
#pragma unroll
    for (int mi = 0; mi < MI; mi++)
#pragma unroll
        for (int n = 0; n < DN; n++) o[mi][n][0] = o[mi][n][1] = o[mi][n][2] = o[mi][n][3] = 0.f;
    float m[MI][2], l[MI][2];
#pragma unroll
    for (int mi = 0; mi < MI; mi++) m[mi][0] = m[mi][1] = -INFINITY, l[mi][0] = l[mi][1] = 0.f;

    for (int j = 0; j < nkt; j++) {
        if (j + 1 < nkt) {
            int nb = (j + 1) & 1;
            tile_load<D, BK, NT>(Ks + nb * BK * D, kb, ldk, (j + 1) * BK, T);
            tile_load<D, BK, NT>(Vs + nb * BK * D, vb, ldk, (j + 1) * BK, T);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const bf16 *Kt = Ks + (j & 1) * BK * D, *Vt = Vs + (j & 1) * BK * D;
        int k0 = j * BK;
        if (wr0 + WR - 1 >= k0) { // else every row of this warp is above the tile: nothing to do
            float s[MI][NN][4];
#pragma unroll
            for (int mi = 0; mi < MI; mi++)
#pragma unroll
                for (int n = 0; n < NN; n++)
#pragma unroll
                    for (int e = 0; e < 4; e++) s[mi][n][e] = 0.f;
            mma_abt<D, MI, NN / 2>(s, Qs, warp * WR, Kt, 0, lane); // S = Q K^T
            if (k0 + BK - 1 > wr0 || k0 + BK > T) { // diagonal or last tile: mask
#pragma unroll
                for (int mi = 0; mi < MI; mi++)
#pragma unroll
                    for (int n = 0; n < NN; n++)
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            int key = k0 + n * 8 + 2 * tq + (e & 1);
                            int r = wr0 + 16 * mi + g + 8 * (e >> 1);
                            if (key > r || key >= T) s[mi][n][e] = -INFINITY;
                        }
            }
            uint32_t pk[MI][NN][2]; // P in bf16 pairs: the A fragments of P V
#pragma unroll
            for (int mi = 0; mi < MI; mi++)
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    float mx = -INFINITY;
#pragma unroll
                    for (int n = 0; n < NN; n++)
                        mx = fmaxf(mx, fmaxf(s[mi][n][2 * r], s[mi][n][2 * r + 1]));
                    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                    float mnew = fmaxf(m[mi][r], mx * sl2);
                    float mu = mnew == -INFINITY ? 0.f : mnew; // a row with no key yet
                    float alpha = ex2(m[mi][r] - mu);
                    m[mi][r] = mnew;
                    l[mi][r] *= alpha;
                    // once the running max has settled alpha is 1 in most tiles: skip the
                    // rescale (exact either way) when no row of the warp needs it
                    if (__any_sync(0xffffffffu, alpha != 1.f)) {
#pragma unroll
                        for (int n = 0; n < DN; n++)
                            o[mi][n][2 * r] *= alpha, o[mi][n][2 * r + 1] *= alpha;
                    }
                    float rs = 0.f;
#pragma unroll
                    for (int n = 0; n < NN; n++) {
                        float p0 = ex2(fmaf(s[mi][n][2 * r], sl2, -mu));
                        float p1 = ex2(fmaf(s[mi][n][2 * r + 1], sl2, -mu));
                        pk[mi][n][r] = pack_bf16x2(p0, p1); // s dies here: fewer live registers
                        rs += p0 + p1;
                    }
                    l[mi][r] += rs;
                }
            // O += P V, P from registers
            mma_ab<D, MI, NN / 2, D / 16>(o, [&](int mi, int kk, uint32_t (&f)[4]) {
                f[0] = pk[mi][2 * kk][0], f[1] = pk[mi][2 * kk][1];
                f[2] = pk[mi][2 * kk + 1][0], f[3] = pk[mi][2 * kk + 1][1];
            }, Vt, 0, lane);
        }
        __syncthreads(); // the next iteration's prefetch overwrites this buffer
    }

    bf16 *ob = out + (size_t)b * T * ldq + (size_t)h * D;
#pragma unroll
    for (int mi = 0; mi < MI; mi++)
#pragma unroll
        for (int r = 0; r < 2; r++) {
            float lr = l[mi][r];
            lr += __shfl_xor_sync(0xffffffffu, lr, 1);
            lr += __shfl_xor_sync(0xffffffffu, lr, 2);
            int row = wr0 + 16 * mi + g + 8 * r;
            if (row >= T) continue;
            float inv = 1.f / lr;
            bf16 *orow = ob + (size_t)row * ldq;
#pragma unroll
            for (int n = 0; n < DN; n++)
                *(uint32_t *)(orow + n * 8 + 2 * tq) =
                    pack_bf16x2(o[mi][n][2 * r] * inv, o[mi][n][2 * r + 1] * inv);
            if (tq == 0) lse[((size_t)b * H + h) * T + row] = (m[mi][r] + log2f(lr)) * FL_LN2;
        }
}

// ---------------------------------------------------------------------------------------------
// backward

// Di[b, h, t] = sum_d dout * out (fp32), one warp per (b, t, h) row
template <int D>
__global__ void flash_bwd_pre(float *Di, const bf16 *dout, const bf16 *out, int B, int T, int H) {
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

// The ordered mode's counters: per (b, h, query tile), the key blocks whose dQ partials are in
// (ld_acquire_gpu / st_release_gpu: cuda_common.cuh); thread 0 waits for its turn by ord_wait
// (ord_watch.cuh: bounded, a timeout flagged for the host).

// FA2-class fused backward. CTA = (b, kv head, BN = 128-key block), 8 warps, 64-query steps
// (query tile latest first, the G query heads of the group innermost, so every key block's CTA
// walks the (tile, head) pairs in the same order). Per step, three warp layouts:
//   S = Q K^T, dP = dO V^T        warps 2 (queries, 32 each) x 4 (keys, BN / 4 each)
//   P, dS (bf16) -> shared memory, rows = queries, columns = keys
//   dV += P^T dO, dK += dS^T Q    warps 4 (keys, BN / 4 each) x 2 (D / 2 each), A = ldmatrix.trans
//                                 of P / dS; dK, dV in registers for the whole walk
//   dQ partial = dS K             warps 2 (queries, 32 each) x 4 (D / 4 each)
// so each shared-memory fragment feeds 2..4 mmas. The k-loops have no data-dependent branches
// (the diagonal's zero P / dS make them exact), which lets the scheduler overlap the iterations.
// dQ partials go to an fp32 accumulator [B, T, H, D] in scratch by red.global.add.v2.f32, and
// flash_bwd_dq_convert writes dq = acc * scale.
//   ORD = 0 (atomic mode): the reds in any order.
//   ORD = 1 (deterministic mode): block kb adds a tile's partial only once the tile's counter
//     reads kb (thread 0 waits on an acquire load, then a barrier), so the adds of one element
//     happen in key-block order and the bits repeat. The counter is cp.async'd with the step's
//     tiles a step ahead (Snap), so there is no blocking load unless that snapshot is stale; the
//     release of a step's tile comes at the next step's top barrier, when the reds have long
//     completed, so its fence is short. Every CTA walks the pairs in the same order and CTAs are
//     dispatched key block 0 first, so a CTA waits only on CTAs dispatched before it that are
//     about one accumulation ahead. +1-2% over ORD = 0 (r3: 28.7 vs 28.3 ms fwd+bwd at 16K).
template <int D, int ORD>
__global__ void __launch_bounds__(256, 1)
flash_bwd_fa2_kernel(bf16 *dk, bf16 *dv, float *dqacc, int *counters, const bf16 *dout,
                     const float *lse, const float *Di, const bf16 *q, const bf16 *k,
                     const bf16 *v, int T, int H, int KVH, float sl2, float scale, OrdWatch ow) {
    constexpr int NT = 256, BM = 64, BN = 128;
    constexpr int SK = BN / 4, SKN = SK / 8;           // S / dP: keys per warp, n-tiles
    constexpr int VK = BN / 4, VKM = VK / 16;          // dK / dV: keys per warp, m-tiles
    constexpr int VD = D / 2, VDN = VD / 8;            // dK / dV: columns per warp, n-tiles
    constexpr int QD = D / 4, QDN = QD / 8;            // dQ: columns per warp, n-tiles
    static_assert(SKN % 2 == 0 && VKM >= 1 && QDN % 2 == 0, "tiling");
    extern __shared__ __align__(128) unsigned char smem[];
    bf16 *Ks = (bf16 *)smem, *Vs = Ks + BN * D, *Qs = Vs + BN * D, *dOs = Qs + 2 * BM * D;
    bf16 *Ps = dOs + 2 * BM * D, *dSs = Ps + BM * BN; // P, dS: [BM][BN] each, swz<BN>
    float *Ls = (float *)(dSs + BM * BN), *Ds = Ls + 2 * BM;
    int *Snap = (int *)(Ds + 2 * BM); // ORD: per step parity, a snapshot of the step's counter

    int b = blockIdx.x / KVH, kvh = blockIdx.x % KVH, G = H / KVH;
    int kb = blockIdx.y, k0 = kb * BN;
    size_t ldq = (size_t)H * D, ldk = (size_t)KVH * D;
    const bf16 *kbp = k + (size_t)b * T * ldk + (size_t)kvh * D;
    const bf16 *vbp = v + (size_t)b * T * ldk + (size_t)kvh * D;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    int wm = warp >> 2, wn = warp & 3; // S / dP and dQ layouts
    int vk = warp & 3, vd = warp >> 2; // dK / dV layout
    int nqt = (T + BM - 1) / BM, qt_lo = k0 / BM, total = G * (nqt - qt_lo);

    auto step_h = [&](int i) { return kvh * G + i % G; };
    auto step_q = [&](int i) { return (nqt - 1 - i / G) * BM; };
    // per-(b, h, query tile) counters, 16 bytes apart (the snapshot copies one by cp.async.cg)
    auto cnt_at = [&](int hh, int qs) {
        return counters + (((size_t)b * H + hh) * nqt + qs / BM) * 4;
    };
    // lse and Di by cp.async too (no load latency at the top of a step); rows past T read 0:
    // their P is then 1, but their dO rows are 0, so dP = dS = 0 and P^T dO adds nothing
    auto load_step = [&](int i) {
        int hh = step_h(i), qs = step_q(i), buf = i & 1;
        const bf16 *qb = q + (size_t)b * T * ldq + (size_t)hh * D;
        const bf16 *db = dout + (size_t)b * T * ldq + (size_t)hh * D;
        tile_load<D, BM, NT>(Qs + buf * BM * D, qb, ldq, qs, T);
        tile_load<D, BM, NT>(dOs + buf * BM * D, db, ldq, qs, T);
        if (threadIdx.x < 2 * BM) {
            int r = threadIdx.x & (BM - 1), t = qs + r;
            size_t li = ((size_t)b * H + hh) * T + (t < T ? t : 0);
            if (threadIdx.x < BM) cp_async4(Ls + buf * BM + r, lse + li, t < T);
            else cp_async4(Ds + buf * BM + r, Di + li, t < T);
        }
        if (ORD && threadIdx.x == NT - 1) cp_async16(Snap + buf * 4, cnt_at(hh, qs), true);
    };

    tile_load<D, BN, NT>(Ks, kbp, ldk, k0, T);
    tile_load<D, BN, NT>(Vs, vbp, ldk, k0, T);
    if (total > 0) load_step(0);
    cp_async_commit();

    float dka[VKM][VDN][4], dva[VKM][VDN][4];
#pragma unroll
    for (int m = 0; m < VKM; m++)
#pragma unroll
        for (int n = 0; n < VDN; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) dka[m][n][e] = dva[m][n][e] = 0.f;

    for (int i = 0; i < total; i++) {
        if (i + 1 < total) {
            load_step(i + 1);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        int buf = i & 1, hh = step_h(i), qs = step_q(i);
        const bf16 *Qt = Qs + buf * BM * D, *dOt = dOs + buf * BM * D;
        const float *Lt = Ls + buf * BM, *Dt = Ds + buf * BM;
        // ORD: release the previous step's tile one step late: every thread issued its reds
        // before the barrier above, and they have long completed, so the fence is short
        if (ORD && i > 0 && threadIdx.x == 0)
            st_release_gpu(cnt_at(step_h(i - 1), step_q(i - 1)), kb + 1);

        // ---- S, dP (queries 32 wm.., keys SK wn..), P and dS to shared memory
        {
            int kw0 = k0 + wn * SK, rw0 = qs + 32 * wm; // first key / row of this warp
            if (kw0 <= rw0 + 31) {
                float s[2][SKN][4], dp[2][SKN][4];
#pragma unroll
                for (int mi = 0; mi < 2; mi++)
#pragma unroll
                    for (int n = 0; n < SKN; n++)
#pragma unroll
                        for (int e = 0; e < 4; e++) s[mi][n][e] = dp[mi][n][e] = 0.f;
                mma_abt<D, 2, SKN / 2>(s, Qt, 32 * wm, Ks, wn * SK, lane);   // S = Q K^T
                mma_abt<D, 2, SKN / 2>(dp, dOt, 32 * wm, Vs, wn * SK, lane); // dP = dO V^T
                bool mask = kw0 + SK - 1 > rw0; // the warp's tile reaches the diagonal
#pragma unroll
                for (int mi = 0; mi < 2; mi++)
#pragma unroll
                    for (int r = 0; r < 2; r++) {
                        int rl = 32 * wm + 16 * mi + g + 8 * r, row = qs + rl;
                        float l2 = Lt[rl] * FL_LOG2E, di = Dt[rl];
#pragma unroll
                        for (int n = 0; n < SKN; n++) {
                            float p[2], ds[2];
#pragma unroll
                            for (int c = 0; c < 2; c++) {
                                int key = kw0 + 8 * n + 2 * tq + c;
                                float x = ex2(fmaf(s[mi][n][2 * r + c], sl2, -l2));
                                if (mask && key > row) x = 0.f;
                                p[c] = x;
                                ds[c] = x * (dp[mi][n][2 * r + c] - di); // without 1/sqrt(D)
                            }
                            int off = swz<BN>(rl, (wn * SK) / 8 + n) + 2 * tq;
                            *(uint32_t *)(Ps + off) = pack_bf16x2(p[0], p[1]);
                            *(uint32_t *)(dSs + off) = pack_bf16x2(ds[0], ds[1]);
                        }
                    }
            } else { // every key of the warp after every row: P = dS = 0
#pragma unroll
                for (int mi = 0; mi < 2; mi++)
#pragma unroll
                    for (int r = 0; r < 2; r++)
#pragma unroll
                        for (int n = 0; n < SKN; n++) {
                            int off = swz<BN>(32 * wm + 16 * mi + g + 8 * r, (wn * SK) / 8 + n) +
                                      2 * tq;
                            *(uint32_t *)(Ps + off) = 0u;
                            *(uint32_t *)(dSs + off) = 0u;
                        }
            }
        }
        __syncthreads();

        // ---- dV += P^T dO, dK += dS^T Q (keys VK vk.., columns VD vd..)
#pragma unroll
        for (int kq = 0; kq < BM / 16; kq++) {
            uint32_t pa[VKM][4], sa[VKM][4];
#pragma unroll
            for (int m = 0; m < VKM; m++) {
                int roff = 16 * kq + (lane & 7) + ((lane >> 4) << 3);
                int coff = (vk * VK + 16 * m) / 8 + ((lane >> 3) & 1);
                ldsm_x4_t(pa[m], Ps + swz<BN>(roff, coff));
                ldsm_x4_t(sa[m], dSs + swz<BN>(roff, coff));
            }
#pragma unroll
            for (int j = 0; j < VD / 16; j++) {
                uint32_t bo[4], bq[4];
                lds_bt<D>(bo, dOt, 16 * kq, vd * (VD / 16) + j, lane);
                lds_bt<D>(bq, Qt, 16 * kq, vd * (VD / 16) + j, lane);
#pragma unroll
                for (int m = 0; m < VKM; m++) {
                    mma_bf16_16816(dva[m][2 * j], pa[m], bo[0], bo[1]);
                    mma_bf16_16816(dva[m][2 * j + 1], pa[m], bo[2], bo[3]);
                    mma_bf16_16816(dka[m][2 * j], sa[m], bq[0], bq[1]);
                    mma_bf16_16816(dka[m][2 * j + 1], sa[m], bq[2], bq[3]);
                }
            }
        }

        // ---- dQ partial = dS K (rows 32 wm.., columns QD wn..)
        {
            float acc[2][QDN][4];
#pragma unroll
            for (int mi = 0; mi < 2; mi++)
#pragma unroll
                for (int n = 0; n < QDN; n++)
#pragma unroll
                    for (int e = 0; e < 4; e++) acc[mi][n][e] = 0.f;
            mma_ab<D, 2, BN / 16, QD / 16>(acc, [&](int mi, int kc, uint32_t (&f)[4]) {
                lds_a<BN>(f, dSs, 32 * wm + 16 * mi, kc, lane);
            }, Ks, wn * (QD / 16), lane);
            size_t base = ((size_t)b * T) * ldq + (size_t)hh * D + wn * QD + 2 * tq;
            // ORD: the snapshot taken a step ago usually shows block kb - 1's release already
            if (ORD && Snap[buf * 4] != kb) { // uniform: every thread reads the same value
                if (threadIdx.x == 0) ord_wait<32>(cnt_at(hh, qs), kb, ow);
                __syncthreads();
            }
#pragma unroll
            for (int mi = 0; mi < 2; mi++)
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    int t = qs + 32 * wm + 16 * mi + g + 8 * r;
                    if (t >= T) continue;
                    float *pr = dqacc + base + (size_t)t * ldq;
#pragma unroll
                    for (int n = 0; n < QDN; n++)
                        atomicAdd((float2 *)(pr + 8 * n),
                                  make_float2(acc[mi][n][2 * r], acc[mi][n][2 * r + 1]));
                }
        }
        __syncthreads(); // the next step's prefetch and P / dS overwrite these buffers
    }

    if (ORD && threadIdx.x == 0) // the loop ended with a barrier (every thread's last reds)
        st_release_gpu(cnt_at(step_h(total - 1), step_q(total - 1)), kb + 1);
    bf16 *dkb = dk + (size_t)b * T * ldk + (size_t)kvh * D;
    bf16 *dvb = dv + (size_t)b * T * ldk + (size_t)kvh * D;
#pragma unroll
    for (int m = 0; m < VKM; m++)
#pragma unroll
        for (int r = 0; r < 2; r++) {
            int key = k0 + vk * VK + 16 * m + g + 8 * r;
            if (key >= T) continue;
            size_t off = (size_t)key * ldk + vd * VD + 2 * tq;
#pragma unroll
            for (int n = 0; n < VDN; n++) {
                *(uint32_t *)(dkb + off + 8 * n) =
                    pack_bf16x2(dka[m][n][2 * r] * scale, dka[m][n][2 * r + 1] * scale);
                *(uint32_t *)(dvb + off + 8 * n) =
                    pack_bf16x2(dva[m][n][2 * r], dva[m][n][2 * r + 1]);
            }
        }
}

// dq = acc * scale in bf16 (the backward's last pass), 4 elements per thread
__global__ void flash_bwd_dq_convert(bf16 *dq, const float *acc, size_t n4, float scale) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n4) return;
    float4 x = __ldcs((const float4 *)acc + i);
    uint2 o = make_uint2(pack_bf16x2(x.x * scale, x.y * scale), pack_bf16x2(x.z * scale, x.w * scale));
    *((uint2 *)dq + i) = o;
}

// ---------------------------------------------------------------------------------------------
// host

// T up to 65535 tiles of 64 rows: the grids put tiles in gridDim.y (<= 65535)
static int shape_ok(int B, int T, int H, int KVH, int D) {
    return (D == 64 || D == 128) && B >= 1 && T >= 1 && T <= 65535 * 64 && H >= 1 && KVH >= 1 &&
           H % KVH == 0 && (size_t)B * H <= 0x7fffffffu;
}

template <int D>
static void fwd_launch(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, int B,
                       int T, int H, int KVH) {
    constexpr int NW = 4, BK = 64, MI = 2, BQ = 16 * MI * NW;
    size_t smem = sizeof(bf16) * (size_t)(BQ * D + 4 * BK * D);
    static bool init = false;
    if (!init) smem_optin(flash_fwd_kernel<D, NW, BK, MI>, smem), init = true;
    dim3 grid(B * H, (T + BQ - 1) / BQ);
    flash_fwd_kernel<D, NW, BK, MI><<<grid, NW * 32, smem>>>(out, lse, q, k, v, T, H, KVH,
                                                             FL_LOG2E / sqrtf((float)D));
    cudaLaunchCheck();
}

template <int D, int ORD>
static void fa2_run(bf16 *dk, bf16 *dv, float *dqacc, int *counters, const bf16 *dout,
                    const float *lse, const float *Di, const bf16 *q, const bf16 *k, const bf16 *v,
                    int B, int T, int H, int KVH, float sl2, float scale) {
    constexpr int BM = 64, BN = 128;
    size_t smem = sizeof(bf16) * (size_t)(2 * BN * D + 4 * BM * D + 2 * BM * BN) +
                  sizeof(float) * (4 * BM + 8);
    static bool init = false;
    if (!init) smem_optin(flash_bwd_fa2_kernel<D, ORD>, smem), init = true;
    flash_bwd_fa2_kernel<D, ORD><<<dim3(B * KVH, (T + BN - 1) / BN), 256, smem>>>(
        dk, dv, dqacc, counters, dout, lse, Di, q, k, v, T, H, KVH, sl2, scale,
        ORD ? ord_watch(ATTN_ORD_DENSE_BF16, 1ll << 31) : OrdWatch{});
    cudaLaunchCheck();
}

template <int D>
static void bwd_launch(bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *out,
                       const float *lse, const bf16 *q, const bf16 *k, const bf16 *v, int B, int T,
                       int H, int KVH) {
    // scratch: Di [B, H, T]; the dQ accumulator [B, T, H, D] fp32; counters [B, H, T / 64] x 16 B
    size_t rows = (size_t)B * T * H, n = rows * D;
    size_t nqt = (T + 63) / 64, acc_off = (rows + 63) / 64 * 64;
    size_t bytes = (acc_off + n) * 4 + (size_t)B * H * nqt * 16;
    float *Di = (float *)cuda_scratch(SCRATCH_FLASH_BF16, bytes);
    float *dqacc = Di + acc_off;
    int *cnt = (int *)(dqacc + n);
    flash_bwd_pre<D><<<cdiv_u(rows, 8), 256>>>(Di, dout, out, B, T, H);
    cudaLaunchCheck();
    float scale = 1.f / sqrtf((float)D), sl2 = FL_LOG2E * scale;
    bool ord = attn_bf16_deterministic() != 0;
    if (ord) // (the tests' stall: counters at -1, no turn comes)
        cudaCheck(cudaMemsetAsync(cnt, ord_stall() ? 0xff : 0, (size_t)B * H * nqt * 16, 0));
    cudaCheck(cudaMemsetAsync(dqacc, 0, n * sizeof(float), 0));
    if (ord) fa2_run<D, 1>(dk, dv, dqacc, cnt, dout, lse, Di, q, k, v, B, T, H, KVH, sl2, scale);
    else fa2_run<D, 0>(dk, dv, dqacc, cnt, dout, lse, Di, q, k, v, B, T, H, KVH, sl2, scale);
    flash_bwd_dq_convert<<<cdiv_u(n / 4, 256), 256>>>(dq, dqacc, n / 4, scale);
    cudaLaunchCheck();
}

extern "C" int flash_bf16_fwd(uint16_t *out, float *lse, const uint16_t *q, const uint16_t *k,
                              const uint16_t *v, int B, int T, int H, int KVH, int D) {
    if (!shape_ok(B, T, H, KVH, D)) return -1;
    if (D == 64)
        fwd_launch<64>((bf16 *)out, lse, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, B, T,
                       H, KVH);
    else
        fwd_launch<128>((bf16 *)out, lse, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, B,
                        T, H, KVH);
    return 0;
}

extern "C" int flash_bf16_bwd(uint16_t *dq, uint16_t *dk, uint16_t *dv, const uint16_t *dout,
                              const uint16_t *out, const float *lse, const uint16_t *q,
                              const uint16_t *k, const uint16_t *v, int B, int T, int H, int KVH,
                              int D) {
    if (!shape_ok(B, T, H, KVH, D)) return -1;
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
