// sparse_wgmma_keys.cu: a KEY-centric wgmma backward for lists of 16 / 32-key regions (ms with
// w < 64), the host part; the kernel is flash_wgmma_bwd.cu's fused body (bwd_fused_body with
// SP = 2: the dense fused kernel's 5 products, TMA Q / dO tiles, bulk dQ adds and the ordered
// mode's s32 fixed point, reused rather than copied: only the CTA's keys, its walk and its dK / dV
// epilogue differ). Called from sparse_wgmma_small.cu's entry (sparse_wgmma_small_bwd) before the
// query-centric sq_fused_kernel, which stays the fallback (MSLAB_SQ_KEYS=0 off, 1 D 128 only, 2
// D 128 and 64: the default).
// Each query block's rows share one list, so per (b, query head h, block c) this is a dense-like
// problem: CTA = (b, h, c, key tile kb = 128 / region consecutive slots of the block's list, sorted
// by region id (sparse_sort_lists; empty slots last)). The CTA gathers its 128 K / V rows once
// (cp.async; empty slots / keys past T zero, key id INT_MAX: masked), then walks the block's
// 64-query tiles from the one holding its least key on (selected regions: all the block's tiles;
// the block's own regions: from their diagonal), per tile S^T = K Q^T, dP^T = V dO^T, P^T and
// dS^T in registers with the per-key causal mask key <= row, dV += P^T dO, dK += dS^T Q, dQ
// partial = dS K added by bulk tensor reduce-adds (fp32, or s32 fixed point with the row scales
// rsc in the ordered mode: integer adds commute, bitwise repeatable). At its end each warp (16
// keys = one region's rows) adds its dK / dV rows into accumulators [2][slab][T][D] by bulk
// reduce-adds of [16 keys][128-byte] boxes: fp32 (atomic mode) or s64 fixed point (ordered) with
// a per-(b, kv head) power-of-2 scale from a bound (sk_scales): an add per (block, key) instead
// of the query-centric kernel's one per (128-row CTA, key). Grid x = key tiles (the 64 CTAs of a
// (head, block) run together: its 1 MB Q / dO block and its dQ adds stay in L2), y = (head,
// block latest first). Accumulators (dQ [slab][T][G][D] + dK / dV) for a group of (b, kv head)s
// at a time within max(1/8 of q, k, v, o + grads, 1 GiB) (small_launch's budget; one launch per
// group), converts to bf16 after each.
// Measured (H200, bf16, ms paper config w 16 top 512 merge 128, B 1, H = KVH 32, D 128, T 32K,
// bwd alone: `MSLAB_SWB_PERF="ms paper" MSLAB_SWB_PERF_MIN=1 mslab-gpu-tests sparse_wgmma_bwd_perf`;
// TFLOP/s at 2.5x the forward's 4 D flops per pair): s9 r1 atomic 19.67 ms (437), ordered 23.28
// (369); r2 19.45 / 23.79 (query-centric sq_fused_kernel 25.10 / 30.73, 342 / 280); one launch
// (MSLAB_SQ_ACC_MB=3000, not the default: the memory budget) 19.30 / 23.64. Trace (r2,
// MSLAB_BWD_TRACE=1): 25.2 steps a CTA, 4862 cycles a step atomic (5157 ordered), SMs 98-99%
// busy, epilogue 7956 cycles atomic / 15138 ordered (the dK / dV bulk adds: ~20 bytes a cycle
// per SM); outside the kernel (Di, bounds, memsets, converts of the accumulators) ~1.2 / ~2 ms.
// D 64 (the LM's shape: ms paper config, B 1, H = KVH 12, T 32K; MSLAB_SWB_PERF_H=12
// MSLAB_SWB_PERF_D=64, r3): atomic 4.63 ms (348) vs sq_fused_kernel 6.26 (257), ordered 5.56
// (290) vs 7.38 (218).
// Tried and removed: the walks rotated by the key tile (a block's CTAs add into different query
// tiles at a time; r2): 19.45 / 23.81 ms, no gain; dK / dV by per-thread reds (r3, at
// bwd_fused_body); the dQ row scales from shared memory at the dQ staging (r3, PIPE 32 there).
// Left: the ordered mode's dK / dV epilogue (s64: 256 KB of bulk adds a CTA, ~15k cycles, ~12% of
// a CTA) and the accumulators' memsets / converts outside the kernel (~7 GB of traffic at 32K
// ordered, ~2 ms); the prologue (list, then the gathered K / V rows: ~5.7k cycles).
// r4 (the defaults but the ordered mode's row scales by __ldg, PIPE 22): atomic 19.76 / ordered
// 23.67 ms; the row scales by cp.async (PIPE 54, now the ordered mode's): 19.73 / 23.17 (371
// TFLOP/s); D 64 LM shape 4.65 / 5.59 (sq_fused_kernel 6.29 / 7.39). r5 (sk_qo_bound with 16-byte
// loads, and the other helpers' faster wg_bwd_pre / wg_kv_bound): 19.37 / 22.41 and 19.48 / 22.34
// ms (443 / 384 TFLOP/s; sq_fused_kernel 24.85 / 30.46); D 64 LM shape 4.58 / 5.19 (sq 6.24 /
// 7.34). Tried in r5 and removed: dV by per-thread reds while the TMA unit adds dK: 19.78 / 22.91.
// r6 (the step-0 Q / dO TMA issued before the K / V gather; the last dQ partial's read wait merged
// with the dK / dV adds'): 19.59 / 22.75 and 19.49 / 22.67 ms, D 64 4.63 / 5.14; trace: epilogue
// 6922 cycles atomic (was 7956) / 13833 ordered (15138), kernel spans 9.71 ms (was 9.76) / 7.29
// (first launch of each mode); the end-to-end figures within the rounds' noise (builds differ).
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flash_wgmma_bwd.cuh"
extern "C" {
#include "attn_bf16.h"
}

// the ordered mode's dK / dV bound inputs per (b, kv head): max |Q_id|, max |dO_id|, max |dO_i|_2^2
// over the group's heads' rows as float bits (atomicMax; NaN bits win: the scales become NaN).
// CTA = (b * KVH + kv head, a chunk of rows (t, head of the group)), D / 8 lanes a row (one
// 16-byte load of q and of dO each; wg_kv_bound's s9 form). A NaN / inf q row can't show in the
// fixed-point dQ: its row scale rsc becomes NaN (the convert writes a NaN row)
template <int D>
__global__ void sk_qo_bound(unsigned *m, float *rsc, const bf16 *q, const bf16 *dout, int T, int H,
                            int KVH, int rows) {
    constexpr int L = D / 8; // lanes per row
    int bk = blockIdx.x, b = bk / KVH, kvh = bk % KVH, G = H / KVH, j = threadIdx.x % L;
    int i0 = blockIdx.y * rows, i1 = min(T * G, i0 + rows);
    float a = 0.f, c = 0.f, e = 0.f;
    int bad = 0; // 1: a non-finite dO or q in the CTA's rows
    for (int ib = i0; ib < i1; ib += blockDim.x / L) { // uniform per CTA
        int i = ib + threadIdx.x / L, qbad = 0;
        size_t o = (((size_t)b * T + i / G) * H + kvh * G + i % G) * D;
        float ss = 0.f;
        if (i < i1) {
            uint4 xq = ((const uint4 *)(q + o))[j], xo = ((const uint4 *)(dout + o))[j];
            const unsigned *pq = (const unsigned *)&xq, *po = (const unsigned *)&xo;
#pragma unroll
            for (int u = 0; u < 4; u++) {
                float2 x = __bfloat1622float2(*(const __nv_bfloat162 *)&pq[u]);
                float2 y = __bfloat1622float2(*(const __nv_bfloat162 *)&po[u]);
                a = fmaxf(a, fmaxf(fabsf(x.x), fabsf(x.y))), c = fmaxf(c, fmaxf(fabsf(y.x), fabsf(y.y)));
                ss = fmaf(y.x, y.x, fmaf(y.y, y.y, ss));
                qbad |= !isfinite(x.x + x.y);
            }
        }
#pragma unroll
        for (int off = L / 2; off > 0; off >>= 1)
            ss += __shfl_xor_sync(0xffffffffu, ss, off), qbad |= __shfl_xor_sync(0xffffffffu, qbad, off);
        e = fmaxf(e, ss), bad |= qbad | !isfinite(ss);
        if (qbad && j == 0 && i < i1) rsc[o / D] = NAN;
    }
    __shared__ float sm[3][32];
    __shared__ int sn;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    a = warp_max(a), c = warp_max(c), e = warp_max(e), bad = __any_sync(0xffffffffu, bad);
    if (threadIdx.x == 0) sn = 0;
    __syncthreads();
    if (lane == 0) {
        sm[0][warp] = a, sm[1][warp] = c, sm[2][warp] = e;
        if (bad) sn = 1;
    }
    __syncthreads();
    if (threadIdx.x < 3) {
        float x = 0.f;
        for (int w = 0; w < (int)(blockDim.x >> 5); w++) x = fmaxf(x, sm[threadIdx.x][w]);
        atomicMax(m + 3 * bk + threadIdx.x, __float_as_uint(sn ? NAN : x));
    }
}
// 2^s with bnd 2^s < 2^62 (s <= 127); NaN where bnd is not finite
__device__ __forceinline__ float sk_fx_scale(float bnd) {
    int e = bnd > 0.f ? max(ilogbf(bnd) + 1, 62 - 127) : 0;
    return bnd <= 3e38f ? ldexpf(1.f, 62 - e) : NAN;
}
// ksc [bk][2] = the dK / dV s64 scales: with rows = T G (the group's query rows; P_ij <= 1),
// |dV_jd| <= sum_i P_ij |dO_id| <= rows max |dO_id|, |dK_jd| <= sum_i P_ij |dP_ij - Di| |Q_id| <=
// rows 2 max |dO_i|_2 max |V_j|_2 max |Q_id| (|Di| = |dO_i . O_i| <= |dO_i|_2 max |V_j|_2); every
// partial sum of a key's adds obeys the same bound. kvm: wg_kv_bound's {max |K_jd|, max |V_j|_2}
__global__ void sk_scales(float *ksc, const unsigned *qo, const unsigned *kvm, int nbk, float rows) {
    int bk = blockIdx.x * blockDim.x + threadIdx.x;
    if (bk >= nbk) return;
    float mq = __uint_as_float(qo[3 * bk]), mo = __uint_as_float(qo[3 * bk + 1]);
    float mo2 = sqrtf(__uint_as_float(qo[3 * bk + 2])), mv2 = __uint_as_float(kvm[2 * bk + 1]);
    ksc[2 * bk] = sk_fx_scale(rows * 2.f * mo2 * mv2 * mq * 1.0625f);
    ksc[2 * bk + 1] = sk_fx_scale(rows * mo * 1.0625f);
}
// dk (x scale) / dv of the launch's (b, kv head)s [bk0, ..) from the accumulators [2][cbk][T][D]
// (slab = cbk T D elements an array; fp32, or FX: s64 / the (b, kv head)'s scales); n4 = the
// elements of one array's n slabs / 4, a thread per 4 elements of either array
template <int D, bool FX>
__global__ void sk_kv_out(bf16 *dk, bf16 *dv, const void *acc, const float *ksc, int bk0,
                          size_t n4, size_t slab, int T, int KVH, float scale) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= 2 * n4) return;
    int a = i >= n4;
    size_t j = i - a * n4, row = j * 4 / D;
    int t = (int)(row % T), bk = bk0 + (int)(row / T), b = bk / KVH, kvh = bk % KVH;
    size_t o = (((size_t)b * T + t) * KVH + kvh) * D + j * 4 % D;
    float y[4], f = a ? 1.f : scale;
    if (FX) {
        const longlong2 *p = (const longlong2 *)((const long long *)acc + a * slab + j * 4);
        longlong2 u = __ldcs(p), w = __ldcs(p + 1);
        float sc = ksc[2 * bk + a];
        double df = (double)f / sc; // sc a power of 2: exact
        y[0] = (float)(u.x * df), y[1] = (float)(u.y * df), y[2] = (float)(w.x * df),
        y[3] = (float)(w.y * df);
        if (isnan(sc)) y[0] = y[1] = y[2] = y[3] = NAN;
    } else {
        float4 x = __ldcs((const float4 *)((const float *)acc + a * slab) + j);
        y[0] = x.x * f, y[1] = x.y * f, y[2] = x.z * f, y[3] = x.w * f;
    }
    *(uint2 *)((a ? dv : dk) + o) = make_uint2(pack_bf16x2(y[0], y[1]), pack_bf16x2(y[2], y[3]));
}
// dq (x scale) of the launch's (b, kv head)s from the accumulator [cbk][T][G][D] (fp32, or FX:
// s32 / the row scales rsc [B, T, H]); n4 = the elements of n slabs / 4
template <bool FX>
__global__ void sk_dq_out(bf16 *dq, const float *acc, const float *rsc, int bk0, size_t n4, int T,
                          int H, int KVH, int D, float scale) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n4) return;
    int G = H / KVH, d = (int)(i * 4 % D);
    size_t r = i * 4 / D;
    int hg = (int)(r % G), t = (int)(r / G % T), bk = bk0 + (int)(r / G / T);
    size_t row = ((size_t)(bk / KVH) * T + t) * H + (bk % KVH) * G + hg;
    float y[4];
    if (FX) {
        int4 x = __ldcs((const int4 *)acc + i);
        float sc = rsc[row];
        double f = (double)scale / sc;
        y[0] = (float)(x.x * f), y[1] = (float)(x.y * f), y[2] = (float)(x.z * f),
        y[3] = (float)(x.w * f);
        if (isnan(sc)) y[0] = y[1] = y[2] = y[3] = NAN;
    } else {
        float4 x = __ldcs((const float4 *)acc + i);
        y[0] = x.x * scale, y[1] = x.y * scale, y[2] = x.z * scale, y[3] = x.w * scale;
    }
    *(uint2 *)(dq + row * D + d) = make_uint2(pack_bf16x2(y[0], y[1]), pack_bf16x2(y[2], y[3]));
}

// on / off: 0 off (sq_fused_kernel runs), 1 D = 128, 2 D = 128 and 64; MSLAB_SQ_KEYS overrides,
// sparse_wgmma_bwd_tune_keys (tests; -1: back to the default)
#define SK_DEFAULT 2
static int sk_on = -2;
static int sk_on_get(void) {
    if (sk_on == -2) sk_on = getenv("MSLAB_SQ_KEYS") ? atoi(getenv("MSLAB_SQ_KEYS")) : -1;
    return sk_on < 0 ? SK_DEFAULT : sk_on;
}
extern "C" void sparse_wgmma_bwd_tune_keys(int on) { sk_on = on < 0 ? -2 : on; }

// a 4-d tensor map over a [d3][d2][d1][d0] array of element type dt (eb bytes), box (b0, b1,
// b2, 1), 128-byte swizzle
static void sk_map(CUtensorMap *m, CUtensorMapDataType dt, int eb, void *p, size_t d0, size_t d1,
                   size_t d2, size_t d3, int b0, int b1, int b2) {
    EncodeTiledFn fn = encode_fn();
    cuuint64_t dims[4] = {d0, d1, d2, d3};
    cuuint64_t str[3] = {d0 * eb, d0 * d1 * eb, d0 * d1 * d2 * eb};
    cuuint32_t box[4] = {(cuuint32_t)b0, (cuuint32_t)b1, (cuuint32_t)b2, 1}, el[4] = {1, 1, 1, 1};
    MS_ASSERT(fn && fn(m, dt, 4, p, dims, str, box, el, CU_TENSOR_MAP_INTERLEAVE_NONE,
                       CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                       CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS,
              "sparse_wgmma_keys_bwd: a tensor map");
}

int sparse_wgmma_keys_bwd(bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *out,
                          const float *lse, const bf16 *q, const bf16 *k, const bf16 *v,
                          const AttnIndex *ix, int B, int T, int H, int KVH, int D) {
    int on = sk_on_get();
    if (!on || !wg_sp_small || !(D == 128 || (D == 64 && on >= 2))) return -1;
    if (!(ix->region == 16 || ix->region == 32) || ix->qblock % 128 || ix->window) return -1;
    bool det = attn_bf16_deterministic();
    int G = H / KVH, nblk = ix->nblk, eb = det ? 8 : 4, BKV = D;
    size_t rows = (size_t)B * T * H, nbk = (size_t)B * KVH, nl = (size_t)B * H * nblk;
    // the accumulators of cbk (b, kv head)s at a time: dQ [cbk][T][G][D] fp32 / s32, dK and dV
    // [cbk][T][D] fp32 / s64, within small_launch's budget (MSLAB_SQ_ACC_MB overrides); grid y
    // (cbk G nblk) <= 65535
    size_t perbk = (size_t)T * D * (G * 4 + 2 * eb), io = 8 * (size_t)B * T * D * (H + KVH);
    const char *eb_mb = getenv("MSLAB_SQ_ACC_MB");
    size_t budget = eb_mb ? (size_t)(atof(eb_mb) * 1048576.0) : io / 8 > (1ull << 30) ? io / 8 : 1ull << 30;
    size_t cmax = budget / perbk, ymax = 65535 / ((size_t)G * nblk);
    cmax = cmax < 1 ? 1 : cmax > ymax ? ymax : cmax;
    if (ymax < 1) return -1;
    size_t nch = (nbk + cmax - 1) / cmax, cbk = (nbk + nch - 1) / nch; // even groups <= cmax
    size_t dqn = cbk * G * T * D, kvn = cbk * T * D;
    size_t rsc_off = align256(rows * 4), kvm_off = rsc_off + (det ? align256(rows * 4) : 0);
    size_t qo_off = kvm_off + align256(nbk * 8), ksc_off = qo_off + align256(nbk * 12);
    size_t sl_off = ksc_off + align256(nbk * 8), dqa_off = sl_off + align256(nl * ix->width * 4);
    size_t kva_off = dqa_off + align256(dqn * 4);
    char *ws = (char *)wg_bwd_scratch(kva_off + 2 * kvn * eb);
    float *Di = (float *)ws, *rsc = det ? (float *)(ws + rsc_off) : nullptr;
    unsigned *kvm = (unsigned *)(ws + kvm_off), *qo = (unsigned *)(ws + qo_off);
    float *ksc = (float *)(ws + ksc_off), *dqa = (float *)(ws + dqa_off);
    char *kva = ws + kva_off;
    wg_bwd_pre_launch(D, Di, rsc, kvm, dout, out, k, v, B, T, H, KVH);
    if (det) {
        cudaCheck(cudaMemsetAsync(qo, 0, nbk * 12, 0));
        if (D == 64)
            sk_qo_bound<64><<<dim3((unsigned)nbk, cdiv_u((size_t)T * G, 512)), 256>>>(qo, rsc, q, dout, T, H, KVH, 512);
        else
            sk_qo_bound<128><<<dim3((unsigned)nbk, cdiv_u((size_t)T * G, 512)), 256>>>(qo, rsc, q, dout, T, H, KVH, 512);
        cudaLaunchCheck();
        sk_scales<<<cdiv_u(nbk, 128), 128>>>(ksc, qo, kvm, (int)nbk, (float)T * G);
        cudaLaunchCheck();
    }
    SpArgs sp = {};
    sparse_sort_lists((int *)(ws + sl_off), ix->idx, nl, ix->width);
    sp.idx = (const int *)(ws + sl_off), sp.nblk = nblk, sp.width = ix->width;
    sp.qblock = ix->qblock, sp.region = ix->region, sp.ksc = ksc;
    CUtensorMap qmap, omap, dqmap, accmap;
    MS_ASSERT(make_map(&qmap, q, B, T, H, D, 64) && make_map(&omap, dout, B, T, H, D, 64),
              "sparse_wgmma_keys_bwd: the Q / dO tensor maps");
    // dQ: (D, G, T, cbk) fp32 / s32, box 32 columns x 64 rows (the body's staging boxes); dK / dV:
    // (D, T, cbk, 2) fp32 / u64 (= s64 adds), box 128 bytes x 16 keys (keys past T clipped)
    sk_map(&dqmap, det ? CU_TENSOR_MAP_DATA_TYPE_INT32 : CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 4, dqa, D,
           G, T, cbk, 32, 1, 64);
    sk_map(&accmap, det ? CU_TENSOR_MAP_DATA_TYPE_UINT64 : CU_TENSOR_MAP_DATA_TYPE_FLOAT32, eb, kva,
           D, T, cbk, 2, 128 / eb, 16, 1);
    float scale = 1.f / sqrtf((float)D);
    unsigned ntk = (unsigned)((ix->width + BKV / ix->region - 1) / (BKV / ix->region));
    for (size_t bk0 = 0; bk0 < nbk; bk0 += cbk) {
        size_t n = nbk - bk0 < cbk ? nbk - bk0 : cbk;
        cudaCheck(cudaMemsetAsync(dqa, 0, n * G * T * D * 4, 0));
        cudaCheck(cudaMemsetAsync(kva, 0, n * T * D * eb, 0));
        cudaCheck(cudaMemsetAsync(kva + kvn * eb, 0, n * T * D * eb, 0));
        sp.bk0 = (int)bk0;
        dim3 grid(ntk, (unsigned)(n * G * nblk));
        wg_keys_fused_launch(D, det, grid, dqa, dout, lse, Di, q, k, v, T, H, KVH, sp, rsc, dqmap,
                             qmap, omap, accmap);
        size_t n4 = n * T * D / 4, q4 = n4 * G;
        if (D == 64) {
            if (det) sk_kv_out<64, true><<<cdiv_u(2 * n4, 256), 256>>>(dk, dv, kva, ksc, (int)bk0, n4, kvn, T, KVH, scale);
            else sk_kv_out<64, false><<<cdiv_u(2 * n4, 256), 256>>>(dk, dv, kva, ksc, (int)bk0, n4, kvn, T, KVH, scale);
        } else {
            if (det) sk_kv_out<128, true><<<cdiv_u(2 * n4, 256), 256>>>(dk, dv, kva, ksc, (int)bk0, n4, kvn, T, KVH, scale);
            else sk_kv_out<128, false><<<cdiv_u(2 * n4, 256), 256>>>(dk, dv, kva, ksc, (int)bk0, n4, kvn, T, KVH, scale);
        }
        cudaLaunchCheck();
        if (det) sk_dq_out<true><<<cdiv_u(q4, 256), 256>>>(dq, dqa, rsc, (int)bk0, q4, T, H, KVH, D, scale);
        else sk_dq_out<false><<<cdiv_u(q4, 256), 256>>>(dq, dqa, rsc, (int)bk0, q4, T, H, KVH, D, scale);
        cudaLaunchCheck();
    }
    return 0;
}
