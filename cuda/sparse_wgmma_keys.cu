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
// keys = one region's rows) stages its dK / dV rows as fp32 [16 keys][32 columns] boxes for the
// TMA unit: the atomic mode reduce-adds them into fp32 accumulators [slab][2][T][D] (an add per
// (block, key) instead of the query-centric kernel's one per (128-row CTA, key)); the ordered
// mode (s11) STORES them into the CTA's own slot (launch head, block, key tile) of a partials
// buffer [slot][2][128][D] (the same 128 KB a CTA as the atomic adds), and sk_part_sum then sums
// per region the partials of the (head of the group, block) lists that hold it, in that fixed
// order (pos: each list's slot of each region, sk_pos), writing bf16 dK / dV: fp32 sums, bitwise
// repeatable. At D 128 a region that one list of the launch's kv head holds (kcnt; 74% of the
// regions at 32K) is written as bf16 by its CTA and skipped by the sums. Grid x = key tiles (the
// 64 CTAs of a (head, block) run together: its 1 MB Q / dO block and its dQ adds stay in L2), y =
// (head, block latest first). Per group of (b, kv head)s (wg_acc_group's budget, one launch per
// group): the atomic mode's dK / dV accumulators or the ordered mode's partials, pos and kcnt,
// then dQ [slab][T][G][D]; memsets, then one convert (sk_acc_out: the atomic mode's dK / dV, dQ).
// The ordered mode's pre-pass (sk_pre) reads q, dO and O once for Di and the row scales (after
// wg_kv_bound).
// Measured (H200, bf16, ms paper config w 16 top 512 merge 128, B 1, H = KVH 32, D 128, T 32K,
// bwd alone: `MSLAB_SWB_PERF="ms paper" MSLAB_SWB_PERF_MIN=1 mslab-gpu-tests sparse_wgmma_bwd_perf`;
// TFLOP/s at 2.5x the forward's 4 D flops per pair; the rounds' noise is ~0.2-0.3 ms):
// s9 final: atomic 19.4-19.6 ms (438-443), ordered 22.3-22.9 (376-384; query-centric
// sq_fused_kernel 24.9 / 30.5); D 64 (the LM's shape: B 1, H = KVH 12, T 32K; MSLAB_SWB_PERF_H=12
// MSLAB_SWB_PERF_D=64) 4.58 / 5.08-5.19 (sq 6.24 / 7.34). s9 tried and removed: the walks rotated
// by the key tile, dK / dV by per-thread reds (all, or dV only beside the TMA's dK).
// s10 r1 (one memset, one convert kernel, sk_pre): 19.29 / 22.67 ms (445 / 379), D 64 4.60 / 5.11;
// trace: 4923 / 5119 cycles a step, prologue 5823 / 5897, epilogue 6581 / 13563 cycles. r2, the
// body's kl_key by shifts, not divisions by the runtime region: prologue 4216 / 4643 cycles,
// 19.23 / 22.19 ms (447 / 387), D 64 4.55 / 5.01. ncu (r1): the adds' L2 hit rate 95-97%, DRAM
// ~0.2 TB/s: the kernel is not memory-bound; the epilogue is bound by the SM's ~20 bytes a cycle
// to L2 (TMA or per-thread reds alike: the body's notes). Tried in s10 and removed: the K / V
// gather before the step-0 TMA (s9's order; no difference), one dK / dV box a warp, the boxes
// prefetched to L2, per-thread coalesced reds from the staged boxes (the body's notes); the
// launch groups on two accumulator buffers and stream pairs (the zeroing / converts on a
// high-priority stream beside the other buffer's kernel): 19.24 / 22.14 ms with 128 CTAs for them,
// 21.15 / 24.41 with 32, 19.09 / 21.97 with 512, D 64 4.83 / 5.32 (worse): no real overlap.
// r3 (19.20 / 22.27 ms; D 64 4.57 / 5.02), ncu per call (us): atomic wg_bwd_pre 132, sort 18,
// kernel 8914 + 8910 (two groups of 16 heads), sk_acc_out 322 x 2 (+ the memsets, ~1.5 GB);
// ordered wg_kv_bound 122, sk_pre 243, sort 18, kernel 6743 + 6741 + 6139 (11 + 11 + 10 heads:
// 0.61 ms a head vs 0.56 atomic), sk_acc_out 327 + 326 + 297 (+ the memsets, ~2.6 GB): the
// kernel +1.8 ms (epilogue +7k cycles a CTA, ~0.95 ms; the steps +190 cycles, ~0.65 ms), outside
// +0.85 ms (the s64 accumulators' zeroing and reading). The dQ adds as u32 (the same bits) 22.39
// ms, as f32 (timing only) 22.28: the s32 adds cost nothing. D 64 (us): atomic kernel 4319 +
// convert 131, ordered 4608 + 185 (kv bound 28, sk_pre 62); trace: 3066 / 3392 cycles a step,
// the dQ staging 354 / 631 (its F2I conversions share the XU pipe with the softmax's ex2),
// epilogue 2582 / 5074 (two CTAs an SM: partly under the other's steps).
// r4: the gather's keys loaded first (the body's notes; prologue 4401 / 4517 cycles vs 4707 /
// 4880): 18.83 / 22.24 ms (456 / 386) vs 18.97 / 22.32-22.36 the same build; D 64 4.57 / 5.09;
// the whole sparse_wgmma_bwd suite 448 passed. r5 (the final form): 19.01 / 22.03 and 19.20 /
// 21.69 ms (452 / 390 and 448 / 396 TFLOP/s), D 64 4.64 / 4.98 (then the ordered mode's dK / dV:
// s64 fixed point, a power-of-2 scale per (b, kv head) from a loose bound, 256 KB of s64 adds a
// CTA at the SM's ~20 bytes a cycle to L2, the s64 accumulators zeroed and read: ~2.8 ms over
// the atomic mode).
// s11 (the ordered mode's dK / dV by stored partials; prediction: 32K ordered 21.85 -> 20.7-21.0
// ms: the epilogue -0.95 ms at half the bytes, the traffic outside ~equal: 3.9 GB of partials
// read once (a key in 3.6 lists on average) vs 2.15 GB of s64 zeroed + read; the atomic mode by
// partials +0.4-0.6 ms). Regions listed 0 / 1 / 2 / 3 / 4-7 / 8+ times (32K, all heads): 0 /
// 48672 / 1033 / 1116 / 2427 / 12288. r1 / r2 (same snippet, old vs new): ordered 22.67-22.89 /
// 22.13-22.23 ms -> partials 21.73 / 21.12, + the once-listed regions by their CTA 21.50 / 20.99-
// 21.05, + the FFMA dQ conversions (PIPE 118) 21.39 / 20.88; atomic 18.99-19.41; the atomic mode
// by partials (no reds, no dK / dV memset) 19.66 vs 18.99-19.17: removed. D 64: ordered 4.94-5.01
// -> 4.79-4.85 (partials), 4.85-4.88 with the once-listed regions (kept off at D 64); atomic 4.60-
// 4.64. Event times a call (ms, MSLAB_SK_TIME then): old pre 0.41, memsets 0.63, kernels 20.0,
// convert 0.98; new 0.40 / 0.20 (+ pos) / 19.1 / sums 0.80 / 0.33 (dQ); ncu (r1, groups of 7
// heads): kernel 570 us a head (atomic 553: the s32 dQ conversions), sk_part_sum 233 us a group
// (~3.6 TB/s), sk_pre 237. The kernel's real time was ~0.8 ms over ncu's (the partials' writes
// back to DRAM under it?). Launch groups: ~70 us a launch (the tail): 32K with 2 heads a launch
// (MSLAB_SQ_ACC_MB=400) 22.18 ms, 7 (the 1 GiB default) 20.99, 11 (2200) 20.77. r3 (the clean
// form): 32K ordered 22.13 ms old -> 20.90 (411 TFLOP/s; 20.97 without the FFMA dQ), atomic
// 19.07-19.36; D 64 4.965 -> 4.834 (4.805 without the FFMA dQ: kept off at D 64); bench 128K
// (mslab-gpu-bench --attn --kernels ms,nd, fwd+bwd with the selection) ordered 141.76 ms old ->
// 135.84 (1 head a launch) / 135.28 (2: the ordered mode's budget 0.15 of q, k, v, o + grads,
// wg_acc_group), atomic 134.0-135.2; the memory probe's 128K peak 10.27e9 B in all three. r4 (this
// form; same snippet): 32K ordered 22.14 -> 21.19 ms (atomic 19.19-19.29), D 64 4.964 -> 4.804
// (atomic 4.63); bench fwd+bwd 32K ordered 30.48 -> 29.08 ms (atomic 28.41-28.49), 128K 141.78 ->
// 136.87 (atomic 135.15-137.70); peak unchanged; sparse_wgmma_bwd --quick 386 + the small rows
// in full 242 passed.
// s11 review (r6): the ordered mode declines where one (b, kv head)'s partials alone exceed the
// default budget (sq_fused_kernel's ordered mode then runs: the old path's ~8 T D bytes a head,
// not several GB); pos by atomicMax; the sums' entries 64-bit, their chunk a test tunable;
// tests: H = KVH rows (once-listed regions written by their CTA, in groups of one), bitwise
// equal outputs across launch groupings / sum chunks, the decline = sq_fused_kernel's bits.
// Same snippet, old / new: 32K ordered 21.17, 21.02 / 21.13, 20.97 ms (atomic 19.13, 18.98 /
// 19.25, 19.45: that path is unchanged, noise); sparse_wgmma_bwd --quick 410 + small rows 266
// passed.
// Left: the ordered mode's s32 dQ conversions in the steps (~0.5 ms at 32K) and the sums' read of
// the partials (0.8 ms at 32K; a region in 3.6 lists on average); each launch's tail.
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flash_wgmma_bwd.cuh"
#include "wg_acc.cuh"
extern "C" {
#include "attn_bf16.h"
}

// the ordered mode's pre-pass, one read of q, dO and O: Di (as wg_bwd_pre) and the rows'
// fixed-point dQ scales rsc (wg_bwd_pre's bound from kvm = wg_kv_bound's {max |K_jd|, max
// |V_j|_2}; NaN where the q or dO row is not finite: the convert writes a NaN row). CTA = (b *
// KVH + kv head, a chunk of rows (t, head of the group)), D / 8 lanes a row (16-byte loads)
template <int D>
__global__ void sk_pre(float *Di, float *rsc, const unsigned *kvm, const bf16 *q, const bf16 *dout,
                       const bf16 *out, int T, int H, int KVH, int rows) {
    constexpr int L = D / 8; // lanes per row
    int bk = blockIdx.x, b = bk / KVH, kvh = bk % KVH, G = H / KVH, j = threadIdx.x % L;
    int i0 = blockIdx.y * rows, i1 = min(T * G, i0 + rows);
    float km = __uint_as_float(kvm[2 * bk]), vm = __uint_as_float(kvm[2 * bk + 1]);
    for (int ib = i0; ib < i1; ib += blockDim.x / L) { // uniform per CTA
        int i = ib + threadIdx.x / L, qbad = 0, t = i / G, hh = kvh * G + i % G;
        size_t o = (((size_t)b * T + t) * H + hh) * D;
        float ss = 0.f, sd = 0.f;
        if (i < i1) {
            uint4 xq = ((const uint4 *)(q + o))[j], xd = ((const uint4 *)(dout + o))[j];
            uint4 xo = ((const uint4 *)(out + o))[j];
            const unsigned *pq = (const unsigned *)&xq, *pd = (const unsigned *)&xd;
            const unsigned *po = (const unsigned *)&xo;
#pragma unroll
            for (int u = 0; u < 4; u++) {
                float2 x = __bfloat1622float2(*(const __nv_bfloat162 *)&pq[u]);
                float2 y = __bfloat1622float2(*(const __nv_bfloat162 *)&pd[u]);
                float2 z = __bfloat1622float2(*(const __nv_bfloat162 *)&po[u]);
                ss = fmaf(y.x, y.x, fmaf(y.y, y.y, ss));
                sd = fmaf(y.y, z.y, fmaf(y.x, z.x, sd));
                qbad |= !isfinite(x.x + x.y);
            }
        }
#pragma unroll
        for (int off = L / 2; off > 0; off >>= 1) {
            ss += __shfl_xor_sync(0xffffffffu, ss, off), sd += __shfl_xor_sync(0xffffffffu, sd, off);
            qbad |= __shfl_xor_sync(0xffffffffu, qbad, off);
        }
        if (j == 0 && i < i1) {
            Di[((size_t)b * H + hh) * T + t] = sd;
            rsc[o / D] = qbad ? NAN : wg_fx_scale((sqrtf(ss) * vm + fabsf(sd)) * km * 1.0625f, 30);
        }
    }
}
// the launch's outputs from its accumulators (n (b, kv head)s from bk0): the atomic mode's dk (x
// scale) / dv from kva [n][2 = dK, dV][T][D] (fp32; nk4 = its elements / 4, 0 in the ordered
// mode), then dq (x scale) from dqa [n][T][G][D] (fp32, or FX: s32 / the row scales rsc [B, T,
// H]); a thread per 4 elements
template <int D, bool FX>
__global__ void sk_acc_out(bf16 *dq, bf16 *dk, bf16 *dv, const float *kva, const float *dqa,
                           const float *rsc, int bk0, size_t nk4, size_t nq4, int T, int H,
                           int KVH, float scale) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    int G = H / KVH;
    if (i < nk4 + nq4) {
        float y[4], f = scale, sc = 1.f;
        bf16 *dst;
        if (i < nk4) { // dK / dV
            size_t row = i * 4 / D; // (slab, array, t)
            int t = (int)(row % T), a = (int)(row / T % 2), bk = bk0 + (int)(row / T / 2);
            dst = (a ? dv : dk) + (((size_t)(bk / KVH) * T + t) * KVH + bk % KVH) * D + i * 4 % D;
            f = a ? 1.f : scale;
            float4 x = __ldcs((const float4 *)kva + i);
            y[0] = x.x * f, y[1] = x.y * f, y[2] = x.z * f, y[3] = x.w * f;
        } else { // dQ
            size_t j = i - nk4, r = j * 4 / D;
            int hg = (int)(r % G), t = (int)(r / G % T), bk = bk0 + (int)(r / G / T);
            size_t row = ((size_t)(bk / KVH) * T + t) * H + (bk % KVH) * G + hg;
            dst = dq + row * D + j * 4 % D;
            if (FX) {
                int4 x = __ldcs((const int4 *)dqa + j);
                sc = rsc[row];
                double df = (double)scale / sc;
                y[0] = (float)(x.x * df), y[1] = (float)(x.y * df), y[2] = (float)(x.z * df),
                y[3] = (float)(x.w * df);
            } else {
                float4 x = __ldcs((const float4 *)dqa + j);
                y[0] = x.x * f, y[1] = x.y * f, y[2] = x.z * f, y[3] = x.w * f;
            }
        }
        if (isnan(sc)) y[0] = y[1] = y[2] = y[3] = NAN;
        *(uint2 *)dst = make_uint2(pack_bf16x2(y[0], y[1]), pack_bf16x2(y[2], y[3]));
    }
}

// The ordered mode's dK / dV sums (s11). pos [the launch's lists][nreg] = the slot of region r in
// the sorted list (hl, c) of launch head hl (-1: none); kcnt (or NULL) [the launch's kv heads]
// [nreg]: the lists of the kv head's G nblk that hold r (integer adds: exact). A list must hold a
// region at most once (ops.h's contract; the CPU reference and sq_fused_kernel assume it too):
// pos keeps one slot per list, so a region listed twice would lose the other slot's
// contribution; atomicMax (the last slot) keeps even that case bitwise repeatable
__global__ void sk_pos(int *pos, int *kcnt, const int *sl, int width, int nreg, int gn) {
    const int *lst = sl + (size_t)blockIdx.x * width;
    for (int s = threadIdx.x; s < width; s += blockDim.x) {
        int r = lst[s];
        if (r >= 0 && r < nreg) {
            atomicMax(pos + (size_t)blockIdx.x * nreg + r, s);
            if (kcnt) atomicAdd(kcnt + (size_t)(blockIdx.x / gn) * nreg + r, 1);
        }
    }
}
// dk (x scale) / dv of region r = blockIdx.x of the launch's (b, kv head) bk0 + blockIdx.y: the
// sum of the partials part [slot = (hl, c, kb)][2 = dK, dV][BKV][D] (fp32) of the entries (head
// hg of the group, block c) that list r, in that FIXED order (hg outer, c ascending): bitwise
// repeatable; regions that one list holds (kcnt 1) were written by their CTA. R D / 8 threads (4
// float4 each: rows kr, kr + R / 2 of dK and dV); the entries' part offsets in shared memory, in
// chunks of cap <= SK_CHUNK (sk_chunk: tests run small chunks; the order is the same)
#define SK_CHUNK 1024
template <int D>
__global__ void sk_part_sum(bf16 *dk, bf16 *dv, const float *part, const int *pos,
                            const int *kcnt, int bk0, int T, int KVH, int G, int nblk, int nreg,
                            int ntk, int R, int cap) {
    constexpr int BKV = D, D4 = D / 4;
    __shared__ long long ent[SK_CHUNK];
    int r = blockIdx.x, bkl = blockIdx.y, bk = bk0 + bkl, ne = G * nblk;
    if (kcnt && kcnt[(size_t)bkl * nreg + r] == 1) return;
    int nt = blockDim.x, spc = BKV / R, kr = threadIdx.x / D4, d4 = threadIdx.x % D4;
    float4 acc[4];
#pragma unroll
    for (int j = 0; j < 4; j++) acc[j] = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int e0 = 0; e0 < ne; e0 += cap) {
        int m = min(cap, ne - e0);
        __syncthreads();
        for (int e = threadIdx.x; e < m; e += nt) {
            size_t l = (size_t)bkl * ne + e0 + e;
            int s = pos[l * nreg + r];
            // (slot, row0) as slot BKV + row0 (64-bit: slots BKV can pass 2^31)
            ent[e] = s < 0 ? -1 : (long long)((l * ntk + s / spc) * BKV + s % spc * R);
        }
        __syncthreads();
        for (int e = 0; e < m; e++) {
            long long x = ent[e];
            if (x < 0) continue;
            const float4 *p = (const float4 *)(part + ((size_t)(x / BKV) * 2 * BKV + x % BKV) * D);
            float4 u[4];
#pragma unroll
            for (int j = 0; j < 4; j++) // j: dK, dK + R / 2 rows, dV, dV + R / 2 rows
                u[j] = __ldcs(p + (j >> 1) * BKV * D4 + (kr + (j & 1) * (R / 2)) * D4 + d4);
#pragma unroll
            for (int j = 0; j < 4; j++)
                acc[j].x += u[j].x, acc[j].y += u[j].y, acc[j].z += u[j].z, acc[j].w += u[j].w;
        }
    }
    int b = bk / KVH, kvh = bk % KVH;
    float scale = 1.f / sqrtf((float)D);
#pragma unroll
    for (int j = 0; j < 4; j++) {
        int key = r * R + kr + (j & 1) * (R / 2);
        if (key >= T) continue;
        float f = j >> 1 ? 1.f : scale;
        bf16 *dst = (j >> 1 ? dv : dk) + (((size_t)b * T + key) * KVH + kvh) * D + d4 * 4;
        *(uint2 *)dst = make_uint2(pack_bf16x2(acc[j].x * f, acc[j].y * f),
                                   pack_bf16x2(acc[j].z * f, acc[j].w * f));
    }
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
// tests: the ordered mode's budget for one (b, kv head) in MB (over it the kernel declines;
// <= 0: the default, wg_acc_budget's) and sk_part_sum's chunk of entries (<= 0: SK_CHUNK)
static double sk_budget_mb = 0;
static int sk_chunk = 0;
extern "C" void sparse_wgmma_bwd_tune_keys_ord(double budget_mb, int chunk) {
    sk_budget_mb = budget_mb, sk_chunk = chunk;
}

int sparse_wgmma_keys_bwd(bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *out,
                          const float *lse, const bf16 *q, const bf16 *k, const bf16 *v,
                          const AttnIndex *ix, int B, int T, int H, int KVH, int D) {
    int on = sk_on_get();
    if (!on || !wg_sp_small || !(D == 128 || (D == 64 && on >= 2))) return -1;
    if (!(ix->region == 16 || ix->region == 32) || ix->qblock % 128 || ix->window) return -1;
    bool det = attn_bf16_deterministic();
    int G = H / KVH, nblk = ix->nblk, BKV = D, R = ix->region, nreg = (T + R - 1) / R;
    unsigned ntk = (unsigned)((ix->width + BKV / R - 1) / (BKV / R)); // key tiles a list
    size_t rows = (size_t)B * T * H, nbk = (size_t)B * KVH, nl = (size_t)B * H * nblk;
    // per group of cbk (b, kv head)s: the atomic mode's dK / dV accumulators [cbk][2][T][D] fp32,
    // or the ordered mode's partials [cbk G nblk ntk][2][BKV][D] fp32 (128 KB a CTA at D 128), pos
    // [cbk G nblk][nreg] and kcnt [cbk][nreg]; then dQ [cbk][T][G][D] fp32 / s32; within
    // wg_acc_group's budget; grid y (cbk G nblk) <= 65535
    size_t pslot = (size_t)2 * BKV * D * 4, ppart = (size_t)G * nblk * ntk * pslot;
    size_t ppos = ((size_t)G * nblk + 1) * nreg * 4;
    size_t perbk = (size_t)T * D * G * 4 + (det ? ppart + ppos + 512 : (size_t)T * D * 2 * 4);
    size_t ymax = 65535 / ((size_t)G * nblk);
    if (ymax < 1) return -1;
    // the ordered mode's need per (b, kv head) grows as G nblk ntk 128 KB (D 128): where one is
    // over the default budget (wg_acc_budget's, not MSLAB_SQ_ACC_MB's, which sets the groups
    // alone), decline: sq_fused_kernel's ordered mode runs (bitwise repeatable; its fp32 dK / dV
    // accumulators are 8 T D bytes a (b, kv head)), not a scratch of several GB (e.g. qblock 128,
    // top 64 + own regions, G 4, 128K: ~4.7 GB for one kv head; the s10 s64 path ~0.5 GB)
    // (the ordered mode's budget: 0.15 of q, k, v, o + grads: 2 (b, kv head)s a launch at 128K,
    // not 1; s11 r3, 128K fwd+bwd 135.28 ms vs 135.84, the bench's peak unchanged (10.27e9 B, as
    // with the s64 accumulators' 1 GiB))
    double frac = det ? 0.15 : 0.125;
    if (det && (double)perbk > (sk_budget_mb > 0 ? sk_budget_mb * 1048576.0
                                                : (double)wg_acc_budget(B, T, H, KVH, D, frac)))
        return -1;
    size_t cbk = wg_acc_group(B, T, H, KVH, D, perbk, ymax, frac);
    size_t rsc_off = align256(rows * 4), kvm_off = rsc_off + (det ? align256(rows * 4) : 0);
    size_t sl_off = kvm_off + align256(nbk * 8), acc_off = sl_off + align256(nl * ix->width * 4);
    char *ws = (char *)wg_bwd_scratch(acc_off + cbk * perbk + 256);
    float *Di = (float *)ws, *rsc = det ? (float *)(ws + rsc_off) : nullptr;
    unsigned *kvm = (unsigned *)(ws + kvm_off);
    if (det) { // Di and the row scales (K / V bound first)
        cudaCheck(cudaMemsetAsync(kvm, 0, nbk * 8, 0));
        wg_kv_bound_launch(D, kvm, k, v, B, T, KVH);
        dim3 pg((unsigned)nbk, cdiv_u((size_t)T * G, 512));
        if (D == 64) sk_pre<64><<<pg, 256>>>(Di, rsc, kvm, q, dout, out, T, H, KVH, 512);
        else sk_pre<128><<<pg, 256>>>(Di, rsc, kvm, q, dout, out, T, H, KVH, 512);
        cudaLaunchCheck();
    } else {
        wg_bwd_pre_launch(D, Di, nullptr, nullptr, dout, out, k, v, B, T, H, KVH);
    }
    SpArgs sp = {};
    int *sl = (int *)(ws + sl_off);
    sparse_sort_lists(sl, ix->idx, nl, ix->width);
    sp.idx = sl, sp.nblk = nblk, sp.width = ix->width, sp.qblock = ix->qblock, sp.region = R;
    sp.nreg = nreg;
    CUtensorMap qmap, omap, dqmap, accmap;
    MS_ASSERT(make_map(&qmap, q, B, T, H, D, 64) && make_map(&omap, dout, B, T, H, D, 64),
              "sparse_wgmma_keys_bwd: the Q / dO tensor maps");
    float scale = 1.f / sqrtf((float)D);
    char *kva = ws + acc_off;
    for (size_t bk0 = 0; bk0 < nbk; bk0 += cbk) {
        size_t n = nbk - bk0 < cbk ? nbk - bk0 : cbk, nlst = n * G * nblk; // the launch's lists
        size_t kvb = det ? align256(n * ppart) + align256(n * ppos) : align256(2 * n * T * D * 4);
        float *dqa = (float *)(kva + kvb);
        int *pos = (int *)(kva + align256(n * ppart)), *kcnt = nullptr;
        if (det) { // (s11 r2, D 64: the once-listed regions written by their CTAs 4.86-4.88 ms
                   // vs 4.84 without: D 128 only)
            kcnt = D == 128 ? pos + nlst * nreg : nullptr;
            cudaCheck(cudaMemsetAsync(dqa, 0, n * G * T * D * 4, 0));
            cudaCheck(cudaMemsetAsync(pos, 0xff, nlst * nreg * 4, 0));
            if (kcnt) cudaCheck(cudaMemsetAsync(kcnt, 0, n * nreg * 4, 0));
            sk_pos<<<(unsigned)nlst, 128>>>(pos, kcnt, sl + bk0 * G * nblk * ix->width, ix->width,
                                            nreg, G * nblk);
            cudaLaunchCheck();
        } else {
            cudaCheck(cudaMemsetAsync(kva, 0, kvb + n * G * T * D * 4, 0)); // both accumulators
        }
        // dQ: (D, G, T, n) fp32 / s32, box 32 columns x 64 rows (the body's staging boxes); dK /
        // dV: atomic (D, T, 2 n, 1) (keys past T clipped), ordered (D, BKV, 2, slots), fp32, box
        // 32 columns x 16 keys
        size_t qd[4] = {(size_t)D, (size_t)G, (size_t)T, n};
        size_t qs[3] = {(size_t)D * 4, (size_t)G * D * 4, (size_t)T * G * D * 4};
        size_t kd[4] = {(size_t)D, (size_t)T, 2 * n, 1};
        size_t pd[4] = {(size_t)D, (size_t)BKV, 2, nlst * ntk};
        size_t ks[3] = {(size_t)D * 4, (size_t)T * D * 4, 2 * n * T * D * 4};
        size_t ps[3] = {(size_t)D * 4, (size_t)BKV * D * 4, pslot};
        int qb[4] = {32, 1, 64, 1}, kb[4] = {32, 16, 1, 1};
        CUtensorMapDataType qt = det ? CU_TENSOR_MAP_DATA_TYPE_INT32 : CU_TENSOR_MAP_DATA_TYPE_FLOAT32;
        MS_ASSERT(wg_acc_map(&dqmap, qt, 4, dqa, qd, qs, qb) &&
                      wg_acc_map(&accmap, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 4, kva, det ? pd : kd,
                                 det ? ps : ks, kb),
                  "sparse_wgmma_keys_bwd: the accumulators' tensor maps");
        sp.bk0 = (int)bk0, sp.kcnt = kcnt;
        dim3 grid(ntk, (unsigned)nlst);
        wg_keys_fused_launch(D, det, grid, dk, dv, dqa, dout, lse, Di, q, k, v, T, H, KVH, sp, rsc,
                             dqmap, qmap, omap, accmap);
        if (det) {
            dim3 rg((unsigned)nreg, (unsigned)n);
            auto sum = D == 64 ? sk_part_sum<64> : sk_part_sum<128>;
            int cap = sk_chunk > 0 && sk_chunk < SK_CHUNK ? sk_chunk : SK_CHUNK;
            sum<<<rg, R * D / 8>>>(dk, dv, (const float *)kva, pos, kcnt, (int)bk0, T, KVH, G, nblk,
                                   nreg, (int)ntk, R, cap);
            cudaLaunchCheck();
        }
        size_t nk4 = det ? 0 : 2 * n * T * D / 4, nq4 = n * G * T * D / 4;
        auto conv = D == 64 ? (det ? sk_acc_out<64, true> : sk_acc_out<64, false>)
                            : (det ? sk_acc_out<128, true> : sk_acc_out<128, false>);
        conv<<<cdiv_u(nk4 + nq4, 256), 256>>>(dq, dk, dv, (const float *)kva, dqa, rsc, (int)bk0,
                                              nk4, nq4, T, H, KVH, scale);
        cudaLaunchCheck();
    }
    return 0;
}
