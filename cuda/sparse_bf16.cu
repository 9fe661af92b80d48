// sparse_bf16.cu: block-sparse causal attention over an index list (ops.h AttnIndex) in bf16 on
// tensor cores (mma.sync m16n8k16, fp32 accumulation), forward and backward.
// Reference semantics: cuda/sparse_attention.cu (fp32) and core/cpu/cpu_sparse_attention.c.
//
// Tiling. A CTA is 4 warps. Forward: CTA = (b, h, 128 consecutive rows of one query block), each
// warp two m-tiles of 16 rows (rows 16w and 64 + 16w), so every K / V fragment read from shared
// memory feeds two mma (64-row CTAs when the block has <= 64 rows). dQ: 128-row CTAs with 32-key
// tiles (S, dP and dQ of two m-tiles fit the registers), 64-row CTAs for blocks of <= 64 rows.
// Rows past the block / sequence are zero and never written. Key tiles of 64 keys are packed from
// the list (several small regions share a tile: 4 regions of w = 16; a region of 128 spans two
// tiles); only keys the CTA can see are packed (a slot's range is cut at the CTA's last row, and
// at t0 - window + 1).
// List walking. Per chunk of up to SCH slots the CTA computes each slot's visible key count and an
// exclusive scan in shared memory; packed key p then maps to its slot by a shift / division while
// the leading slots are whole regions, else by binary search, so each loader thread finds its own
// key row with no serial cursor. K/V rows are read THROUGH the list
// (cp.async 16 B requests into XOR-swizzled rows: conflict-free ldmatrix), never gathered into a
// copy; two stages, the next tile loading while the current one computes. A warp's m-tile whose
// keys are all <= its first row (and no window) skips the mask.
// Softmax: online, in registers, exp2 of log2e-scaled scores; lse = natural log-sum-exp (fp32).
// Backward: Di = rowsum(dO * O) (fp32, one warp per row). dQ: the forward's walk, P recomputed
// from lse, dS = P (dP - Di), dQ = scale dS K, written once (bf16).
// Inverse list (cuda/sparse_inverse.cu; dK/dV without atomics): for each (b, kv head, region)
// the (query head of the group, block) entries that list it. Counting pass (integer atomics: exact), exclusive scan (CUB,
// integers), then a fill in a FIXED order: the (head, block) lists of a (b, kv head) in chunks of
// L lists; per chunk the region counts, each region's chunk offsets (its start + earlier chunks'
// counts), then a CTA per chunk walks its lists one after another, the slots of a list in parallel
// (a list holds a region once, so no two threads touch one cursor): each region's entries come
// out in ascending (head, block) order, exactly as one serial walk would place them.
// dK/dV: CTA = (b, kv head, region r, chunk of kg <= 4 key groups of 16 keys of r). Warp w owns
// key group w / rsplit (rsplit = 4 / kg) and row slice w % rsplit of every 64-row tile: a region
// of 16 keys (ms, w = 16) keeps all four warps busy on the one list. The CTA walks r's inverse
// list in order; per entry it streams the block's rows that can see r (64-row Q / dO tiles, two
// stages), recomputes S^T = K Q^T and P^T from lse, dP^T = V dO^T, dV += P^T dO, dK += dS^T Q, with
// dK / dV in registers for the whole walk; the row slices' partials are added in warp order and
// each key row is written once. The warp's K / V fragments stay in registers for the walk.
// Fused backward (design at sb_fused_kernel): the dQ walk also makes each key tile's dK / dV and
// adds it into fp32 accumulators in global scratch (5 products per pair instead of 7, K / V read
// once per CTA). Default in the atomic mode (attn_bf16_set_deterministic(0) / MSLAB_DETERMINISTIC=0:
// fp32 red.add); in the deterministic mode (ordered adds, bitwise repeatable) the default only for
// 64K <= T <= 128K and regions <= 32 keys, else the split dQ + dK/dV kernels above;
// MSLAB_SPARSE_BF16_BWD=fused|split forces a path. One-row query blocks always take the split path.
// H200 (r3), ms paper config (w 16, top 512, merge 128), H = 32, D = 128, fwd+bwd incl. selection
// (split: 83.1 / 182 / 392 ms at 32K / 64K / 128K): atomic fused 54.2 / 118 / 251 ms (the backward
// ~140 ms at 128K vs 275 split); ordered fused 82.0 ms at 32K, 174 / 356 at 64K / 128K. Per-kernel
// bwd (perf rows, 16K / 32K; s5 r1, relaxed counters): split 28.0 / 63.5, ordered 29.0 / 59.7,
// atomic 18.4 / 37.9 ms; moba-blk 32K: 15.9 / 20.5 / 13.2. ncu (32K, atomic): L2 68%, L1 72%,
// SM 33% busy: the dK / dV reds (32 KB per 32-key tile of a 128-row CTA) and the shared-memory
// reads bound it. Ordered (r3, release / acquire counters):
// the CTAs wait ~27% and fence ~24% of their cycles (88% waiting before the lists were sorted).
// Removed after measurement (s5; in git history; H200, ms paper config, H = 32, D = 128): 64-row
// forward / dQ CTAs for blocks of > 64 rows (16K: fwd 10.5 vs 6.6 ms, dQ 11.9 vs 6.9); dK/dV
// re-reading its K / V fragments from shared memory (16K 21.9 vs 21.3 ms); in the fused
// backward: other walk / add orders (r3 32K fwd+bwd: blocks earliest first 85.2 vs 82.0 ms;
// unsorted lists 314 ms), releases deferred to the next tile (r2 32K: 396 vs 317 ms), red.v4
// after a lane swap (atomic 128K 278.1 vs 277.2 ms), .cg load / store adds instead of red (96.3
// vs 86.2 ms), release / acquire counters instead of relaxed polls + fences (r3 32K: 82.0 vs
// 86.2 ms, where this path is not the default; relaxed was kept for 64K-128K, where it is).
// One-row query blocks (moba: a list per row). Forward / dQ: CTA = 64 consecutive rows whose key
// list is the UNION of their lists (a bit per (region, row) masks each row to its own regions), so
// the tiles stay 64 x 64 (cost: the union's keys for all 64 rows: small when neighbouring rows
// pick similar blocks, at most dense). dK/dV: a step takes up to 64 consecutive inverse-list
// entries of one head, i.e. 64 rows that list the region, gathered by index.
// Determinism: no floating-point atomics; every output element is summed by one thread (or one
// fixed warp order) in an order fixed by the list alone: two calls give identical bits.
// Work: forward 2 matmuls per visible (row, key) pair (4 D flops), backward 7 (S and dP are
// recomputed by dQ and by dK/dV): 9 vs FlashAttention-2's 7 per pair, the price of no atomics.
// Padding: 64-key (dQ: 32-key) tiles per CTA in the forward / dQ; 16-row x 16-key in dK/dV.
// select_bf16 (the lists these kernels read) is in select_bf16.cu.
// Not handled (return -1, the caller uses the fp32 ops): D other than 64 / 128, ix->kpos.
#include <cuda_bf16.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cub/device/device_scan.cuh>

#include "cuda_common.cuh"
#include "ord_watch.cuh"
#include "sparse_inverse.cuh"
extern "C" {
#include "../core/attention.h"
#include "attn_bf16.h"
#include "bf16.h"
}

#define SB_NT 128  // threads per CTA (4 warps)
#define SB_BM 64   // query rows per forward / dQ CTA
#define SB_BN 64   // keys per forward / dQ key tile
#define SB_SCH 512 // list slots per planning chunk
#define SB_KG 4    // key groups (of 16 keys) per dK/dV CTA
#define SB_RT 64   // query rows per dK/dV row tile

// ---- small PTX helpers (own copies; the dense kernel's helpers live elsewhere) ----

__device__ __forceinline__ uint32_t sb_smem(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}
// 16 bytes global -> shared; valid = false writes zeros (src-size 0)
__device__ __forceinline__ void sb_cp16(uint32_t dst, const void *src, bool valid) {
    int sz = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(sz));
}
// 4 bytes global -> shared (zeros when !valid)
__device__ __forceinline__ void sb_cp4(uint32_t dst, const void *src, bool valid) {
    int sz = valid ? 4 : 0;
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(sz));
}
__device__ __forceinline__ void sb_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void sb_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
__device__ __forceinline__ void sb_ldsm(uint32_t (&r)[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
__device__ __forceinline__ void sb_ldsm_t(uint32_t (&r)[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
// d += a b  (16x16 row-major A, 16x8 col-major B, fp32 16x8 accumulator)
__device__ __forceinline__ void sb_mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                       uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// 2^x on the MUFU (no denormal fix-up: -inf -> 0, tiny results flush to 0, harmless here)
__device__ __forceinline__ float sb_ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ uint32_t sb_pack(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}
// byte offset of 16-byte chunk `ch` of row `row` in a tile of DM-wide bf16 rows (XOR swizzle:
// the 8 rows an ldmatrix reads hit 8 different bank groups)
template <int DM> __device__ __forceinline__ uint32_t sb_off(int row, int ch) {
    return (uint32_t)(row * (DM * 2) + ((ch ^ (row & 7)) << 4));
}

struct SbArgs {
    const int *idx;
    int qblock, nblk, region, width, window;
    int B, T, H, KVH, D;
    float scale_log2; // scale * log2(e)
    float scale;
};

// ---- list planning (forward / dQ): visible key counts of a chunk of slots, scanned ----
// off[s] = keys before slot s (exclusive), off[ns] = total; lo[s] = slot s's first visible key;
// misc[0] = leading slots that are whole regions (their keys map to slots by a division).
__device__ int sb_plan(const SbArgs &a, const int *list, int s0, int ns, int t0, int t1, int *off,
                       int *lo, int *wsum, int *misc) {
    constexpr int PER = SB_SCH / SB_NT;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    int cnt[PER], run = 0, nonfull = ns;
#pragma unroll
    for (int i = 0; i < PER; i++) {
        int s = tid * PER + i, n = 0, l0 = 0;
        if (s < ns) {
            int r = list[s0 + s];
            if (r >= 0) {
                l0 = r * a.region;
                int e = min(min(a.T, l0 + a.region), t1);
                if (a.window) l0 = max(l0, t0 - a.window + 1);
                n = max(0, e - l0);
            }
            lo[s] = l0;
            if (n != a.region) nonfull = min(nonfull, s);
        }
        cnt[i] = n;
        run += n;
    }
    int incl = run; // inclusive warp scan of the per-thread sums
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        int y = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += y;
    }
#pragma unroll
    for (int o = 16; o >= 1; o >>= 1) nonfull = min(nonfull, __shfl_xor_sync(0xffffffffu, nonfull, o));
    if (lane == 31) wsum[warp] = incl;
    if (lane == 0) wsum[SB_NT / 32 + warp] = nonfull;
    __syncthreads();
    int base = 0, total = 0, nf = ns;
#pragma unroll
    for (int w = 0; w < SB_NT / 32; w++) {
        if (w < warp) base += wsum[w];
        total += wsum[w];
        nf = min(nf, wsum[SB_NT / 32 + w]);
    }
    int x = base + incl - run;
#pragma unroll
    for (int i = 0; i < PER; i++) {
        int s = tid * PER + i;
        if (s < ns) off[s] = x;
        x += cnt[i];
    }
    if (tid == 0) off[ns] = total, misc[0] = nf;
    __syncthreads();
    return total;
}

// the last slot s in [l, h] with off[s] <= p (binary search)
__device__ __forceinline__ int sb_slot(const int *off, int l, int h, int p) {
    while (l < h) {
        int m = (l + h + 1) >> 1;
        if (off[m] <= p) l = m;
        else h = m - 1;
    }
    return l;
}
// key index of packed key p (< total) of the chunk: the last slot s with off[s] <= p
__device__ __forceinline__ int sb_key(const int *off, const int *lo, int ns, int nfull, int region,
                                      int p) {
    if (p < nfull * region) { // whole regions: slot p / region (a shift for powers of two)
        int s = (region & (region - 1)) == 0 ? p >> (__ffs(region) - 1) : p / region;
        return lo[s] + p - s * region;
    }
    int l = sb_slot(off, nfull, ns - 1, p);
    return lo[l] + p - off[l];
}

// Key tile `tile` of a planned chunk (packed keys tile * BN .. + BN - 1) into stage st of the
// K / V stages at kv0 (cp.async; zeros past the chunk's total), its key indices into kj[st][.]
// (INT_MAX past the total); SB_NT / BN threads per key row. The forward / dQ and the fused
// backward walk their lists with it.
template <int DM, int BN>
__device__ __forceinline__ void sb_issue_kv(int *kj, uint32_t kv0, int tile, int st, int total,
                                            const int *off, const int *lo, int ns, int nfull,
                                            int region, const uint16_t *kb, const uint16_t *vb,
                                            size_t ldk) {
    constexpr int KT = BN * DM * 2, CPR = DM / 8, TPR = SB_NT / BN;
    int lp = (int)threadIdx.x / TPR, lh = (int)threadIdx.x % TPR;
    int p = tile * BN + lp;
    bool ok = p < total;
    int j = ok ? sb_key(off, lo, ns, nfull, region, p) : 0;
    if (lh == 0) kj[st * BN + lp] = ok ? j : INT_MAX;
    uint32_t kt = kv0 + st * 2 * KT, vt = kt + KT;
    const uint16_t *kr = kb + (size_t)j * ldk, *vr = vb + (size_t)j * ldk;
#pragma unroll
    for (int ch = lh * CPR / TPR; ch < (lh + 1) * CPR / TPR; ch++) {
        sb_cp16(kt + sb_off<DM>(lp, ch), kr + ch * 8, ok);
        sb_cp16(vt + sb_off<DM>(lp, ch), vr + ch * 8, ok);
    }
}

// The key tiles of a planned chunk through the two cp.async stages: issue(tile, stage) starts a
// tile's loads, body(it, stage) computes on tile it while tile it + 1 loads.
template <class Issue, class Body>
__device__ __forceinline__ void sb_tiles(int ntile, Issue &issue, Body &&body) {
    if (ntile > 0) issue(0, 0);
    sb_commit();
    for (int it = 0; it < ntile; it++) {
        int st = it & 1;
        if (it + 1 < ntile) issue(it + 1, st ^ 1);
        sb_commit();
        sb_wait<1>();
        __syncthreads();
        body(it, st);
    }
}

// 64 rows x DM of a [.., ld] bf16 tensor into a swizzled tile; row i is `rowptr(i)` or zeros
template <int DM>
__device__ __forceinline__ void sb_load_rows64(uint32_t tile, const uint16_t *base, size_t ld,
                                               int r0, int r1) {
    constexpr int CPR = DM / 8; // 16-byte chunks per row
    for (int e = threadIdx.x; e < 64 * CPR; e += SB_NT) {
        int i = e / CPR, ch = e % CPR, t = r0 + i;
        bool ok = t < r1;
        const uint16_t *src = ok ? base + (size_t)t * ld + ch * 8 : base;
        sb_cp16(tile + sb_off<DM>(i, ch), src, ok);
    }
}

// ---------------------------------------------------------------------------------------------
// forward (BWD = 0) and dQ (BWD = 1). MT m-tiles of 16 rows per warp: warp w owns rows
// 64 mt + 16 w .. +15 of the CTA's 64 MT rows, so each K / V fragment read from shared memory
// feeds MT mma (the forward uses MT = 2: half the shared-memory traffic per mma).

template <int DM, int MT, int BN>
__device__ __forceinline__ void sb_scores(float (&s)[MT][BN / 8][4], uint32_t qtile, int warp,
                                          uint32_t ktile, int lane) {
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nb = 0; nb < BN / 8; nb++) s[mt][nb][0] = s[mt][nb][1] = s[mt][nb][2] = s[mt][nb][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < DM / 16; kk++) {
        uint32_t af[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
            sb_ldsm(af[mt], qtile + sb_off<DM>(mt * 64 + warp * 16 + (lane & 15), 2 * kk + (lane >> 4)));
#pragma unroll
        for (int np = 0; np < BN / 16; np++) {
            uint32_t bf[4];
            sb_ldsm(bf, ktile + sb_off<DM>(np * 16 + (lane & 7) + ((lane >> 4) << 3),
                                           2 * kk + ((lane >> 3) & 1)));
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                sb_mma(s[mt][2 * np], af[mt], bf[0], bf[1]);
                sb_mma(s[mt][2 * np + 1], af[mt], bf[2], bf[3]);
            }
        }
    }
}

// acc[16 x DM] += A[16 x BN] V[BN x DM] per m-tile; frag(mt, kk, f) gives f = the A fragment of
// m-tile mt over keys 16 kk .. 16 kk + 15 (each V fragment read from shared memory feeds MT mma)
template <int DM, int MT, int BN, class Frag>
__device__ __forceinline__ void sb_av(float (&acc)[MT][DM / 8][4], Frag &&frag, uint32_t vtile,
                                      int lane) {
#pragma unroll
    for (int kk = 0; kk < BN / 16; kk++) {
        uint32_t af[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++) frag(mt, kk, af[mt]);
#pragma unroll
        for (int dp = 0; dp < DM / 16; dp++) {
            uint32_t bf[4];
            sb_ldsm_t(bf, vtile + sb_off<DM>(kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8,
                                             2 * dp + (lane >> 4)));
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                sb_mma(acc[mt][2 * dp], af[mt], bf[0], bf[1]);
                sb_mma(acc[mt][2 * dp + 1], af[mt], bf[2], bf[3]);
            }
        }
    }
}
// acc += P V, P the fp32 C fragments of the scores, packed to bf16 A fragments on the way
template <int DM, int MT, int BN>
__device__ __forceinline__ void sb_pv(float (&acc)[MT][DM / 8][4], const float (&p)[MT][BN / 8][4],
                                      uint32_t vtile, int lane) {
    sb_av<DM, MT, BN>(acc, [&](int mt, int kk, uint32_t (&f)[4]) {
        f[0] = sb_pack(p[mt][2 * kk][0], p[mt][2 * kk][1]);
        f[1] = sb_pack(p[mt][2 * kk][2], p[mt][2 * kk][3]);
        f[2] = sb_pack(p[mt][2 * kk + 1][0], p[mt][2 * kk + 1][1]);
        f[3] = sb_pack(p[mt][2 * kk + 1][2], p[mt][2 * kk + 1][3]);
    }, vtile, lane);
}

// block-wide exclusive prefix of a 0/1 flag over SB_NT threads; *tot = the block's count
__device__ __forceinline__ int sb_scan01(int f, int *wtot, int *tot) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    unsigned bal = __ballot_sync(0xffffffffu, f);
    if (lane == 0) wtot[warp] = __popc(bal);
    __syncthreads();
    int base = 0, all = 0;
#pragma unroll
    for (int w = 0; w < SB_NT / 32; w++) {
        if (w < warp) base += wtot[w];
        all += wtot[w];
    }
    __syncthreads();
    *tot = all;
    return base + __popc(bal & ((1u << lane) - 1));
}

#define SB_UMAX 1024 // UN: regions the union planning can hold

// UN (union mode, one-row query blocks: moba's per-row lists): the CTA is 64 consecutive rows,
// its key list the union of their lists (ascending), and a per-(region, row) bit masks each row
// to the regions it lists. Costs the union's tiles for all 64 rows, so it pays when neighbouring
// rows pick similar blocks (as MoBA's do), and stays within dense cost when they do not.
template <int DM, int BWD, int MT, bool UN, int BN>
__global__ void __launch_bounds__(SB_NT)
sb_rows_kernel(uint16_t *out, float *lse, const uint16_t *q, const uint16_t *k, const uint16_t *v,
               const uint16_t *dout, const float *Di, SbArgs a, int nsub) {
    constexpr int QT = 64 * DM * 2, KT = BN * DM * 2; // bytes of a 64-row Q tile, a key tile
    constexpr int BM = 64 * MT;                      // rows of the CTA
    constexpr int MW = BM / 32;          // UN: mask words per region
    extern __shared__ __align__(128) unsigned char sm[];
    // layout: Q (MT tiles) [, dO], stages x (K, V), then ints [, UN: masks, union list]
    uint32_t qs = sb_smem(sm), dos = qs + MT * QT, kv0 = qs + (BWD ? 2 * MT : MT) * QT;
    int *kj = (int *)(sm + (BWD ? 2 * MT : MT) * QT + 4 * KT); // [2][BN]
    int *off = kj + 2 * BN, *lo = off + SB_SCH + 1, *wsum = lo + SB_SCH;
    int *misc = wsum + 2 * (SB_NT / 32);
    uint32_t *umask = (uint32_t *)(misc + 4); // [SB_UMAX][MW]
    int *ulist = (int *)(umask + SB_UMAX * MW);
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, T = a.T, H = a.H, D = a.D;
    int b = blockIdx.y / H, h = blockIdx.y % H, kvh = h / (H / a.KVH);
    int t0, t1, width;
    const int *list;
    if (UN) {
        t0 = (gridDim.x - 1 - blockIdx.x) * BM; // later rows first
        t1 = min(T, t0 + BM);
        list = ulist, width = 0;
    } else {
        int c = a.nblk - 1 - (int)(blockIdx.x / nsub), sub = blockIdx.x % nsub; // later blocks first
        int start = c * a.qblock;
        t0 = start + sub * BM;
        t1 = min(T, min(start + a.qblock, t0 + BM));
        list = a.idx + (((size_t)b * H + h) * a.nblk + c) * a.width, width = a.width;
    }
    if (t0 >= t1) return;
    if (UN) { // the union of the rows' lists and each region's row bits
        int nr = (t1 - 1) / a.region + 1;
        for (int i = tid; i < nr * MW; i += SB_NT) umask[i] = 0;
        __syncthreads();
        const int *rows = a.idx + (((size_t)b * H + h) * a.nblk + t0) * a.width;
        for (int e = tid; e < (t1 - t0) * a.width; e += SB_NT) {
            int i = e / a.width, r = rows[e];
            if (r >= 0 && r < nr) atomicOr(&umask[r * MW + (i >> 5)], 1u << (i & 31));
        }
        __syncthreads();
        int cnt = 0;
        for (int r0 = 0; r0 < nr; r0 += SB_NT) {
            int r = r0 + tid, f = 0;
            if (r < nr)
#pragma unroll
                for (int w = 0; w < MW; w++) f |= umask[r * MW + w] != 0;
            int tot, pos = sb_scan01(f, wsum, &tot);
            if (f) ulist[cnt + pos] = r;
            cnt += tot;
        }
        __syncthreads();
        width = cnt;
    }
    size_t ldq = (size_t)H * D, ldk = (size_t)a.KVH * D;
    const uint16_t *qb = q + ((size_t)b * T * H + h) * D;
    const uint16_t *kb = k + ((size_t)b * T * a.KVH + kvh) * D;
    const uint16_t *vb = v + ((size_t)b * T * a.KVH + kvh) * D;
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        sb_load_rows64<DM>(qs + mt * QT, qb, ldq, t0 + 64 * mt, t1);
        if (BWD) sb_load_rows64<DM>(dos + mt * QT, dout + ((size_t)b * T * H + h) * D, ldq, t0 + 64 * mt, t1);
    }
    sb_commit();

    int g = lane >> 2, cq = lane & 3;
    int ta[MT], tb[MT]; // this thread's rows per m-tile
    float acc[MT][DM / 8][4], m_a[MT], m_b[MT], l_a[MT], l_b[MT];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        ta[mt] = t0 + 64 * mt + warp * 16 + g, tb[mt] = ta[mt] + 8;
        m_a[mt] = m_b[mt] = -INFINITY, l_a[mt] = l_b[mt] = 0.0f;
#pragma unroll
        for (int i = 0; i < DM / 8; i++) acc[mt][i][0] = acc[mt][i][1] = acc[mt][i][2] = acc[mt][i][3] = 0.0f;
    }
    float L_a[MT], L_b[MT], D_a[MT], D_b[MT]; // backward: lse * log2e and Di of the rows
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        L_a[mt] = L_b[mt] = D_a[mt] = D_b[mt] = 0.0f;
        if (BWD) {
            const float *lr = lse + ((size_t)b * H + h) * T, *dr = Di + ((size_t)b * H + h) * T;
            if (ta[mt] < t1) L_a[mt] = lr[ta[mt]] * 1.4426950408889634f, D_a[mt] = dr[ta[mt]];
            if (tb[mt] < t1) L_b[mt] = lr[tb[mt]] * 1.4426950408889634f, D_b[mt] = dr[tb[mt]];
        }
    }
    const float sl2 = a.scale_log2;
    // loader role: thread -> key row p of the tile, a share of its chunks

    for (int s0 = 0; s0 < width; s0 += SB_SCH) {
        int ns = min(SB_SCH, width - s0);
        if (list[s0] < 0) break; // valid slots come first
        __syncthreads(); // previous chunk's users of off / lo / kv stages are done
        int total = sb_plan(a, list, s0, ns, t0, t1, off, lo, wsum, misc);
        int nfull = misc[0];
        int ntile = (total + BN - 1) / BN;
        auto issue = [&](int tile, int st) {
            sb_issue_kv<DM, BN>(kj, kv0, tile, st, total, off, lo, ns, nfull, a.region, kb, vb, ldk);
        };
        sb_tiles(ntile, issue, [&](int it, int st) {
            uint32_t kt = kv0 + st * 2 * KT, vt = kt + KT;
            const int *kjs = kj + st * BN;
            int k0 = kjs[lane % BN], k1 = kjs[(lane + 32) % BN];
            float s[MT][BN / 8][4];
            sb_scores<DM, MT, BN>(s, qs, warp, kt, lane);
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                int tw0 = t0 + 64 * mt + warp * 16; // the m-tile's first row
                bool need = UN || k0 > tw0 || k1 > tw0 ||
                            (a.window && (k0 <= tw0 + 15 - a.window || k1 <= tw0 + 15 - a.window));
                if (__any_sync(0xffffffffu, need)) {
                    int ra = ta[mt] - t0, rb = tb[mt] - t0; // UN: the rows' bits
#pragma unroll
                    for (int nb = 0; nb < BN / 8; nb++)
#pragma unroll
                        for (int e2 = 0; e2 < 2; e2++) {
                            int j = kjs[nb * 8 + 2 * cq + e2];
                            uint32_t wa = ~0u, wb = ~0u;
                            if (UN && j != INT_MAX) {
                                const uint32_t *mk = umask + (j / a.region) * MW;
                                wa = mk[ra >> 5] >> (ra & 31), wb = mk[rb >> 5] >> (rb & 31);
                            }
                            bool va = j <= ta[mt] && (!a.window || j > ta[mt] - a.window) && (wa & 1);
                            bool vb2 = j <= tb[mt] && (!a.window || j > tb[mt] - a.window) && (wb & 1);
                            if (!va) s[mt][nb][e2] = -INFINITY;
                            if (!vb2) s[mt][nb][2 + e2] = -INFINITY;
                        }
                }
            }
            if (!BWD) {
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    float mx_a = -INFINITY, mx_b = -INFINITY;
#pragma unroll
                    for (int nb = 0; nb < BN / 8; nb++) {
                        s[mt][nb][0] *= sl2, s[mt][nb][1] *= sl2, s[mt][nb][2] *= sl2, s[mt][nb][3] *= sl2;
                        mx_a = fmaxf(mx_a, fmaxf(s[mt][nb][0], s[mt][nb][1]));
                        mx_b = fmaxf(mx_b, fmaxf(s[mt][nb][2], s[mt][nb][3]));
                    }
                    mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 1));
                    mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 2));
                    mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 1));
                    mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 2));
                    float mn_a = fmaxf(m_a[mt], mx_a), mn_b = fmaxf(m_b[mt], mx_b);
                    float base_a = mn_a == -INFINITY ? 0.0f : mn_a;
                    float base_b = mn_b == -INFINITY ? 0.0f : mn_b;
                    float al_a = sb_ex2(m_a[mt] - base_a), al_b = sb_ex2(m_b[mt] - base_b);
                    float sum_a = 0.0f, sum_b = 0.0f;
#pragma unroll
                    for (int nb = 0; nb < BN / 8; nb++) {
                        s[mt][nb][0] = sb_ex2(s[mt][nb][0] - base_a), s[mt][nb][1] = sb_ex2(s[mt][nb][1] - base_a);
                        s[mt][nb][2] = sb_ex2(s[mt][nb][2] - base_b), s[mt][nb][3] = sb_ex2(s[mt][nb][3] - base_b);
                        sum_a += s[mt][nb][0] + s[mt][nb][1];
                        sum_b += s[mt][nb][2] + s[mt][nb][3];
                    }
                    l_a[mt] = l_a[mt] * al_a + sum_a, l_b[mt] = l_b[mt] * al_b + sum_b;
                    m_a[mt] = mn_a, m_b[mt] = mn_b;
#pragma unroll
                    for (int i = 0; i < DM / 8; i++)
                        acc[mt][i][0] *= al_a, acc[mt][i][1] *= al_a, acc[mt][i][2] *= al_b, acc[mt][i][3] *= al_b;
                }
                sb_pv<DM, MT, BN>(acc, s, vt, lane);
            } else {
                float dp[MT][BN / 8][4];
                sb_scores<DM, MT, BN>(dp, dos, warp, vt, lane);
#pragma unroll
                for (int mt = 0; mt < MT; mt++)
#pragma unroll
                    for (int nb = 0; nb < BN / 8; nb++) {
                        s[mt][nb][0] = sb_ex2(fmaf(s[mt][nb][0], sl2, -L_a[mt])) * (dp[mt][nb][0] - D_a[mt]);
                        s[mt][nb][1] = sb_ex2(fmaf(s[mt][nb][1], sl2, -L_a[mt])) * (dp[mt][nb][1] - D_a[mt]);
                        s[mt][nb][2] = sb_ex2(fmaf(s[mt][nb][2], sl2, -L_b[mt])) * (dp[mt][nb][2] - D_b[mt]);
                        s[mt][nb][3] = sb_ex2(fmaf(s[mt][nb][3], sl2, -L_b[mt])) * (dp[mt][nb][3] - D_b[mt]);
                    }
                sb_pv<DM, MT, BN>(acc, s, kt, lane); // dQ += dS K (K read as the "V" operand)
            }
            __syncthreads(); // stage st is free for the load two tiles on
        });
    }
    sb_wait<0>();
    uint16_t *ob = out + ((size_t)b * T * H + h) * D;
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        // out = acc / l (forward) or dq = scale * acc
        float f_a, f_b;
        if (!BWD) {
            float la = l_a[mt], lb = l_b[mt];
            la += __shfl_xor_sync(0xffffffffu, la, 1);
            la += __shfl_xor_sync(0xffffffffu, la, 2);
            lb += __shfl_xor_sync(0xffffffffu, lb, 1);
            lb += __shfl_xor_sync(0xffffffffu, lb, 2);
            f_a = la > 0 ? 1.0f / la : 0.0f, f_b = lb > 0 ? 1.0f / lb : 0.0f;
            if (cq == 0) {
                float *lr = lse + ((size_t)b * H + h) * T;
                const float ln2 = 0.6931471805599453f;
                if (ta[mt] < t1) lr[ta[mt]] = la > 0 ? (m_a[mt] + log2f(la)) * ln2 : INFINITY;
                if (tb[mt] < t1) lr[tb[mt]] = lb > 0 ? (m_b[mt] + log2f(lb)) * ln2 : INFINITY;
            }
        } else {
            f_a = f_b = a.scale;
        }
#pragma unroll
        for (int i = 0; i < DM / 8; i++) {
            int d = i * 8 + 2 * cq;
            if (ta[mt] < t1)
                *(uint32_t *)(ob + (size_t)ta[mt] * ldq + d) = sb_pack(acc[mt][i][0] * f_a, acc[mt][i][1] * f_a);
            if (tb[mt] < t1)
                *(uint32_t *)(ob + (size_t)tb[mt] * ldq + d) = sb_pack(acc[mt][i][2] * f_b, acc[mt][i][3] * f_b);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// backward helpers: Di, the inverse list

// Di[b, h, t] = sum_d dout * out (fp32), one warp per row
__global__ void sb_di_kernel(float *Di, const uint16_t *dout, const uint16_t *out, int B, int T,
                             int H, int D) {
    size_t nrow = (size_t)B * T * H;
    int lane = threadIdx.x & 31;
    for (size_t row = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5; row < nrow;
         row += ((size_t)gridDim.x * blockDim.x) >> 5) {
        const __nv_bfloat162 *o2 = (const __nv_bfloat162 *)(out + row * D);
        const __nv_bfloat162 *d2 = (const __nv_bfloat162 *)(dout + row * D);
        float s = 0.0f;
        for (int i = lane; i < D / 2; i += 32) {
            float2 x = __bfloat1622float2(o2[i]), y = __bfloat1622float2(d2[i]);
            s = fmaf(x.x, y.x, s);
            s = fmaf(x.y, y.y, s);
        }
        s = warp_sum(s);
        if (lane == 0) {
            int h = (int)(row % H), t = (int)((row / H) % T), b = (int)(row / H / T);
            Di[((size_t)b * H + h) * T + t] = s;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// dK / dV: CTA (region r, chunk of kg <= 4 key groups of r) x (b, kv head). Warp w: key group
// w / rsplit, row slice w % rsplit of each 64-row tile (rsplit = 4 / kg: a region of 16 keys keeps
// all four warps busy on one list); partial sums of one group are added in warp order at the end.

struct SbInv {
    const int *inv, *start, *count;
    int nreg, gpr, kg, cpr; // groups per region, groups per CTA, CTAs per region
};

struct SbWalk {
    int cur;    // next entry of the region's inverse list
    int hg, c;  // current (head of the group, block)
    int ta, re; // current row tile start, rows end
    bool done;
};

// GA (gathered rows, for one-row query blocks: moba's per-row lists): a step is up to 64
// consecutive inverse-list entries of one query head, i.e. 64 arbitrary rows that list the region,
// loaded by index (W.ta .. W.re are then positions in the inverse list).
template <int DM, bool GA>
__global__ void __launch_bounds__(SB_NT)
sb_dkv_kernel(uint16_t *dk, uint16_t *dv, const uint16_t *q, const uint16_t *k, const uint16_t *v,
              const uint16_t *dout, const float *lse, const float *Di, SbArgs a, SbInv iv) {
    constexpr int TILE = SB_RT * DM * 2;
    extern __shared__ __align__(128) unsigned char sm[];
    // K, V (16 kg rows each), stages (Q, dO) x 2, stages (lse, Di) x 2
    const int KVB = iv.kg * 16 * DM * 2;
    uint32_t ks = sb_smem(sm), vs = ks + KVB, qd0 = vs + KVB;
    float *ld0 = (float *)(sm + 2 * KVB + 4 * TILE);
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, T = a.T, H = a.H, D = a.D;
    int b = blockIdx.y / a.KVH, kvh = blockIdx.y % a.KVH, G = H / a.KVH;
    int r = blockIdx.x / iv.cpr, ch = blockIdx.x % iv.cpr;
    int kg = iv.kg, rsplit = SB_KG / kg;
    int rend = min(T, r * a.region + a.region);
    int cja = r * a.region + 16 * ch * kg;                // the CTA's first key
    int cjb = min(rend, cja + 16 * kg);                   // and end
    if (cja >= cjb) return;
    int gw = warp / rsplit, rw = warp % rsplit;
    int ja = cja + 16 * gw, jb = min(cjb, ja + 16); // this warp's keys (ja >= jb: idle)
    size_t bk = ((size_t)b * a.KVH + kvh) * iv.nreg + r;
    const int *inv = iv.inv + iv.start[bk];
    int ninv = iv.count[bk];
    size_t ldq = (size_t)H * D, ldk = (size_t)a.KVH * D;
    const uint16_t *kb = k + ((size_t)b * T * a.KVH + kvh) * D;
    const uint16_t *vb = v + ((size_t)b * T * a.KVH + kvh) * D;
    { // the CTA's keys in rows 0 .. 16 kg - 1 (zeros past the region)
        constexpr int CPR = DM / 8;
        for (int e = tid; e < 16 * kg * CPR; e += SB_NT) {
            int i = e / CPR, c8 = e % CPR, j = cja + i;
            bool ok = j < cjb;
            size_t o = ok ? (size_t)j * ldk + c8 * 8 : 0;
            sb_cp16(ks + sb_off<DM>(i, c8), kb + o, ok);
            sb_cp16(vs + sb_off<DM>(i, c8), vb + o, ok);
        }
    }
    __shared__ int s_rows[2][SB_RT]; // GA: the rows of each stage (INT_MAX: none)
    auto next_block = [&](SbWalk &W) {
        if constexpr (GA) {
            if (W.cur >= ninv) {
                W.done = true;
                return;
            }
            int hg = inv[W.cur] / a.nblk, n = min(SB_RT, ninv - W.cur);
            if (inv[W.cur + n - 1] / a.nblk != hg) { // the head changes inside: find where
                int lo = W.cur, hi = W.cur + n - 1;
                while (hi - lo > 1) {
                    int mid = (lo + hi) >> 1;
                    if (inv[mid] / a.nblk == hg) lo = mid;
                    else hi = mid;
                }
                n = hi - W.cur;
            }
            W.hg = hg, W.ta = W.cur, W.re = W.cur + n, W.cur += n;
        } else {
        for (;;) {
            if (W.cur >= ninv) {
                W.done = true;
                return;
            }
            int e = inv[W.cur++];
            W.hg = e / a.nblk, W.c = e % a.nblk;
            int rs = max(W.c * a.qblock, cja), re = min(T, (W.c + 1) * a.qblock);
            if (a.window) re = min(re, cjb - 1 + a.window);
            if (rs < re) {
                W.ta = rs, W.re = re;
                return;
            }
        }
        }
    };
    auto issue = [&](const SbWalk &W, int st) {
        int h = kvh * G + W.hg;
        uint32_t qt = qd0 + st * 2 * TILE, dt = qt + TILE;
        if constexpr (GA) {
            constexpr int CPR = DM / 8;
            const uint16_t *qh = q + ((size_t)b * T * H + h) * D, *oh = dout + ((size_t)b * T * H + h) * D;
            int n = W.re - W.ta;
            for (int e = tid; e < 64 * CPR; e += SB_NT) {
                int i = e / CPR, c8 = e % CPR;
                bool ok = i < n;
                size_t o = ok ? (size_t)(inv[W.ta + i] % a.nblk) * ldq + c8 * 8 : 0;
                sb_cp16(qt + sb_off<DM>(i, c8), qh + o, ok);
                sb_cp16(dt + sb_off<DM>(i, c8), oh + o, ok);
            }
            if (tid < 2 * SB_RT) {
                int x = tid & (SB_RT - 1);
                bool ok = x < n;
                int t = ok ? inv[W.ta + x] % a.nblk : 0;
                const float *src = (tid < SB_RT ? lse : Di) + ((size_t)b * H + h) * T + t;
                sb_cp4(sb_smem(ld0 + st * 2 * SB_RT + tid), src, ok);
                if (tid < SB_RT) s_rows[st][x] = ok ? t : INT_MAX;
            }
        } else {
        sb_load_rows64<DM>(qt, q + ((size_t)b * T * H + h) * D, ldq, W.ta, W.re);
        sb_load_rows64<DM>(dt, dout + ((size_t)b * T * H + h) * D, ldq, W.ta, W.re);
        // lse and Di of the tile's rows, asynchronously too (a plain load would stall the
        // issuing threads every step); rows >= re are masked in the compute
        if (tid < 2 * SB_RT) {
            int x = tid & (SB_RT - 1), t = W.ta + x;
            bool ok = t < W.re;
            const float *src = (tid < SB_RT ? lse : Di) + ((size_t)b * H + h) * T + (ok ? t : 0);
            sb_cp4(sb_smem(ld0 + st * 2 * SB_RT + tid), src, ok);
        }
        }
    };

    float dka[DM / 8][4], dva[DM / 8][4];
#pragma unroll
    for (int i = 0; i < DM / 8; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) dka[i][e] = dva[i][e] = 0.0f;
    int g = lane >> 2, cq = lane & 3;
    const float sl2 = a.scale_log2;
    int nsub = (SB_RT / 16) / rsplit, u0 = rw * nsub; // this warp's 16-row sub-tiles

    uint32_t kf[DM / 16][4], vf[DM / 16][4];
    bool kv_in = false;
    SbWalk W;
    W.cur = 0, W.done = false;
    next_block(W);
    if (!W.done) issue(W, 0);
    sb_commit(); // with the K/V rows
    int st = 0;
    while (!W.done) {
        SbWalk N = W;
        N.ta += SB_RT;
        if (N.ta >= N.re) next_block(N);
        if (!N.done) issue(N, st ^ 1);
        sb_commit();
        sb_wait<1>();
        __syncthreads();
        if (!kv_in && ja < jb) { // the warp's K / V fragments, once, kept in registers
#pragma unroll
            for (int kk = 0; kk < DM / 16; kk++) {
                sb_ldsm(kf[kk], ks + sb_off<DM>(gw * 16 + (lane & 15), 2 * kk + (lane >> 4)));
                sb_ldsm(vf[kk], vs + sb_off<DM>(gw * 16 + (lane & 15), 2 * kk + (lane >> 4)));
            }
            kv_in = true;
        }
        int tl = min(W.ta + SB_RT, W.re) - 1; // last row of the tile (GA: last entry)
        bool mine = ja < jb && (GA || (tl >= ja && !(a.window && W.ta - a.window >= jb - 1)));
        if (mine) {
            uint32_t qt = qd0 + st * 2 * TILE, dt = qt + TILE;
            const float *Ls = ld0 + st * 2 * SB_RT, *Ds = Ls + SB_RT;
            int key_a = ja + g, key_b = key_a + 8;
#pragma unroll 1
            for (int u = u0; u < u0 + nsub; u++) {
                int r0 = W.ta + 16 * u;
                if (r0 > tl) break;
                if (!GA && r0 + 15 < ja) continue;
                bool need = GA || r0 < jb - 1 || a.window;
                float sT[2][4], dpT[2][4];
#pragma unroll
                for (int nb = 0; nb < 2; nb++)
#pragma unroll
                    for (int e = 0; e < 4; e++) sT[nb][e] = dpT[nb][e] = 0.0f;
#pragma unroll
                for (int kk = 0; kk < DM / 16; kk++) {
                    uint32_t bf[4];
                    sb_ldsm(bf, qt + sb_off<DM>(16 * u + (lane & 7) + ((lane >> 4) << 3),
                                                2 * kk + ((lane >> 3) & 1)));
                    sb_mma(sT[0], kf[kk], bf[0], bf[1]);
                    sb_mma(sT[1], kf[kk], bf[2], bf[3]);
                    sb_ldsm(bf, dt + sb_off<DM>(16 * u + (lane & 7) + ((lane >> 4) << 3),
                                                2 * kk + ((lane >> 3) & 1)));
                    sb_mma(dpT[0], vf[kk], bf[0], bf[1]);
                    sb_mma(dpT[1], vf[kk], bf[2], bf[3]);
                }
                // sT[nb][e]: key (e < 2 ? key_a : key_b), row 16u + nb*8 + 2cq + (e & 1)
#pragma unroll
                for (int nb = 0; nb < 2; nb++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        int rr = 16 * u + nb * 8 + 2 * cq + (e & 1);
                        int t = GA ? s_rows[st][rr] : W.ta + rr; // GA: INT_MAX past the rows
                        int j = e < 2 ? key_a : key_b;
                        float p = sb_ex2(fmaf(sT[nb][e], sl2, -Ls[rr] * 1.4426950408889634f));
                        if ((GA ? t == INT_MAX : t >= W.re) ||
                            (need && !(j <= t && (!a.window || j > t - a.window))))
                            p = 0.0f;
                        sT[nb][e] = p;
                        dpT[nb][e] = p * (dpT[nb][e] - Ds[rr]);
                    }
                uint32_t pa[4], da[4];
                pa[0] = sb_pack(sT[0][0], sT[0][1]), pa[1] = sb_pack(sT[0][2], sT[0][3]);
                pa[2] = sb_pack(sT[1][0], sT[1][1]), pa[3] = sb_pack(sT[1][2], sT[1][3]);
                da[0] = sb_pack(dpT[0][0], dpT[0][1]), da[1] = sb_pack(dpT[0][2], dpT[0][3]);
                da[2] = sb_pack(dpT[1][0], dpT[1][1]), da[3] = sb_pack(dpT[1][2], dpT[1][3]);
#pragma unroll
                for (int dp = 0; dp < DM / 16; dp++) {
                    uint32_t bf[4];
                    int rrow = 16 * u + (lane & 7) + ((lane >> 3) & 1) * 8, c8 = 2 * dp + (lane >> 4);
                    sb_ldsm_t(bf, dt + sb_off<DM>(rrow, c8));
                    sb_mma(dva[2 * dp], pa, bf[0], bf[1]);
                    sb_mma(dva[2 * dp + 1], pa, bf[2], bf[3]);
                    sb_ldsm_t(bf, qt + sb_off<DM>(rrow, c8));
                    sb_mma(dka[2 * dp], da, bf[0], bf[1]);
                    sb_mma(dka[2 * dp + 1], da, bf[2], bf[3]);
                }
            }
        }
        __syncthreads();
        W = N;
        st ^= 1;
    }
    sb_wait<0>();
    if (rsplit > 1) { // add the row slices' partials in warp order (the stage buffers are free)
        __syncthreads();
        float *part = (float *)(sm + 2 * KVB); // [warp][value][lane], over the stages
        constexpr int PW = DM / 8 * 4 * 2;      // values per lane
        if (rw > 0) {
            float *dst = part + (size_t)warp * PW * 32 + lane;
#pragma unroll
            for (int i = 0; i < DM / 8; i++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    dst[(i * 8 + e) * 32] = dka[i][e], dst[(i * 8 + 4 + e) * 32] = dva[i][e];
        }
        __syncthreads();
        if (rw > 0) return;
        for (int x = 1; x < rsplit; x++) {
            const float *src = part + (size_t)(warp + x) * PW * 32 + lane;
#pragma unroll
            for (int i = 0; i < DM / 8; i++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    dka[i][e] += src[(i * 8 + e) * 32], dva[i][e] += src[(i * 8 + 4 + e) * 32];
        }
    }
    if (ja >= jb) return;
    // write this warp's keys (zeros when no block lists them)
    uint16_t *dkb = dk + ((size_t)b * T * a.KVH + kvh) * D;
    uint16_t *dvb = dv + ((size_t)b * T * a.KVH + kvh) * D;
    int key_a = ja + g, key_b = key_a + 8;
#pragma unroll
    for (int i = 0; i < DM / 8; i++) {
        int d = i * 8 + 2 * cq;
        if (key_a < jb) {
            *(uint32_t *)(dkb + (size_t)key_a * ldk + d) = sb_pack(dka[i][0] * a.scale, dka[i][1] * a.scale);
            *(uint32_t *)(dvb + (size_t)key_a * ldk + d) = sb_pack(dva[i][0], dva[i][1]);
        }
        if (key_b < jb) {
            *(uint32_t *)(dkb + (size_t)key_b * ldk + d) = sb_pack(dka[i][2] * a.scale, dka[i][3] * a.scale);
            *(uint32_t *)(dvb + (size_t)key_b * ldk + d) = sb_pack(dva[i][2], dva[i][3]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fused backward (query-centric): the dQ kernel's walk (CTA = BM = 64 MT rows of one query
// block, 32-key tiles packed from the list sorted by region id (sb_sort_lists: ms lists are in
// merge-rank order)) that also makes the tile's dK / dV: S = Q K^T, dP = dO V^T, P from lse, dS =
// P (dP - Di) in registers (rows as M); dQ += dS K in registers; P and dS (bf16) go to shared
// memory over the tile's own K / V stage (free once dQ has read K), then warp w computes (w >> 1 ?
// dK = dS^T Q : dV = P^T dO) for the tile's 32 keys and D half w & 1 (ldmatrix.trans of P / dS and
// of Q / dO) and ADDS it into fp32 accumulators in global scratch. 5 products per pair instead of
// the split path's 7, and K / V read once per CTA as in the forward (the split dK/dV kernel
// re-streams Q and dO per 16-key region). A small kernel turns the accumulators into bf16 dk (times
// the scale) / dv.
// Accumulation: ORD = 0 (attn_bf16_deterministic() == 0): red.global.add.v2.f32, no order.
// ORD = 1: the contributions to each GROUP (32 keys of a region) are added in a fixed order: the
// region's inverse-list order ((head of the group, block), blocks latest first), then the
// block's CTAs (sub) ascending, counting only CTAs that see a key of the group. A counter per (b, kv head, region, group) holds the contributions added so far; before
// adding a tile, warp 0 (a group per lane) waits (bounded) until the counter of every group
// starting in the tile equals this CTA's position (a timeout is reported since s13:
// ord_watch.cuh); the CTA adds with red (one CTA at a time per
// group, in order: the fp32 sums repeat their bits), every thread fences, and warp 0 stores
// position + 1 for every group ending in the tile (relaxed store after the fences, relaxed polls
// and a fence on success: the fence-fence pattern of CUDA's threadFenceReduction, instead of a
// release store and an acquire load per poll). CTAs are launched in the order's (b, kv head,
// head, block, sub) sequence and wait only on lower CTAs: no deadlock. Each list is walked
// upwards: a later block has fewer listed regions below r than an earlier one, so it reaches r
// first; a block's CTAs share its regions before the block and reach them together (then pass
// each one right after the other); its own regions come last and sub s reaches each one together
// with the subs above it. r3 at 32K, lists still in rank order: this order 317 ms, blocks
// earliest first with the lists walked downwards ~385, the same with the regions before the
// block first 387; with the lists sorted 82 ms.
// Memory: the accumulators cover a chunk of (b, kv head)s (one launch per chunk, reused; default
// <= 1/8 of q, k, v, o + grads; MSLAB_SPARSE_BF16_ACC_MB overrides).

struct SbFu {
    float *acck, *accv; // fp32 dK (unscaled) / dV of the chunk: [bk - bk0][T][D]
    int *cnt;           // ORD: per (b, kv head, region, group): contributions added so far
    const int *ord;     // ORD: [group][list slot]: contributions before its (head, block)
    size_t nent;        // list slots (the ord stride)
    int bk0, nsub, nreg, gpr; // gpr: groups per region
    OrdWatch ow;              // ORD: a timed-out wait flagged for the host (ord_watch.cuh)
};

// visible keys of region r for rows [t0, t1): sb_plan's count (0 for an empty row range)
__device__ __forceinline__ int sb_vis(const SbArgs &a, int r, int t0, int t1) {
    if (t0 >= t1 || r < 0) return 0;
    int l0 = r * a.region, e = min(min(a.T, l0 + a.region), t1);
    if (a.window) l0 = max(l0, t0 - a.window + 1);
    return max(0, e - l0);
}
__device__ __forceinline__ void sb_sub_rows(const SbArgs &a, int c, int sub, int BM, int &t0,
                                            int &t1) {
    int start = c * a.qblock;
    t0 = start + sub * BM;
    t1 = min(a.T, min(start + a.qblock, t0 + BM));
}
// ORD orders the adds per GROUP: keys [32 j, 32 j + 32) of a region (a 32-key tile holds parts
// of at most two groups of one region, so a region of 128 keys is passed on group by group, not
// held for four tiles). Visible keys of group j of region r for rows [t0, t1):
__device__ __forceinline__ int sb_vis_g(const SbArgs &a, int r, int j, int t0, int t1) {
    if (t0 >= t1 || r < 0) return 0;
    int l0 = r * a.region, g0 = l0 + 32 * j;
    int e = min(min(min(a.T, l0 + a.region), g0 + 32), t1);
    l0 = g0;
    if (a.window) l0 = max(l0, t0 - a.window + 1);
    return max(0, e - l0);
}
// CTAs of block c before `sub` (all when sub = nsub) that see a key of group j of region r
__device__ __forceinline__ int sb_subs_before(const SbArgs &a, int c, int sub, int BM, int r, int j) {
    int n = 0;
    for (int s = 0; s < sub; s++) {
        int t0, t1;
        sb_sub_rows(a, c, s, BM, t0, t1);
        n += sb_vis_g(a, r, j, t0, t1) > 0;
    }
    return n;
}

// ORD's counters (protocol at sb_fused_kernel's comment): every thread fences after its adds,
// a barrier, then a relaxed counter store; the waiter polls with relaxed loads and fences once it
// sees its value. The wait is bounded (ow.tmo, 2^31 cycles: ~1 s): a broken ordering gives wrong
// dk / dv, not a hung process, and is flagged for the host, which reports it (ord_watch.cuh; s13)
__device__ __forceinline__ void sb_wait_relaxed(const int *cnt, int v, const OrdWatch &ow) {
    long long t_start = clock64();
    for (;;) {
        int x = ld_relaxed_gpu(cnt);
        if (x == v) break;
        if (clock64() - t_start > ord_tmo(ow)) {
            ord_timed_out(ow);
            break;
        }
        __nanosleep(32);
    }
    fence_acq_rel_gpu();
}
__device__ __forceinline__ void sb_red2(float *p, float x, float y) {
    asm volatile("red.relaxed.gpu.global.add.v2.f32 [%0], {%1, %2};\n" ::"l"(p), "f"(x), "f"(y)
                 : "memory");
}
// byte offset of chunk ch (8 keys) of row `row` in a [rows][32 keys] bf16 P / dS tile (64-byte
// rows; the XOR makes the 8 rows of an ldmatrix or of a fragment store hit 8 distinct 16-byte
// bank groups)
__device__ __forceinline__ uint32_t sb_poff(int row, int ch) {
    return (uint32_t)(row * 64 + ((ch ^ ((row >> 1) & 3)) << 4));
}

// acc += A V, A already packed as mma A fragments
template <int DM, int MT, int BN>
__device__ __forceinline__ void sb_pvp(float (&acc)[MT][DM / 8][4],
                                       const uint32_t (&pa)[MT][BN / 16][4], uint32_t vtile,
                                       int lane) {
    sb_av<DM, MT, BN>(acc, [&](int mt, int kk, uint32_t (&f)[4]) {
        for (int x = 0; x < 4; x++) f[x] = pa[mt][kk][x];
    }, vtile, lane);
}

template <int DM, int MT, bool ORD>
__global__ void __launch_bounds__(SB_NT, 2)
sb_fused_kernel(uint16_t *dq, const float *lse, const uint16_t *q, const uint16_t *k,
                const uint16_t *v, const uint16_t *dout, const float *Di, SbArgs a, SbFu f) {
    constexpr int BN = 32, QT = 64 * DM * 2, KT = BN * DM * 2, BM = 64 * MT;
    constexpr int PT = BM * BN * 2;          // bytes of the P (or dS) tile
    constexpr bool ALIAS = 2 * PT <= 2 * KT; // P, dS over the tile's own K / V stage
    extern __shared__ __align__(128) unsigned char sm[];
    // layout: Q (MT tiles), dO (MT tiles), stages x (K, V) [, P, dS], ints
    uint32_t qs = sb_smem(sm), dos = qs + MT * QT, kv0 = dos + MT * QT, pd1 = kv0 + 4 * KT;
    int *kj = (int *)(sm + 2 * MT * QT + 4 * KT + (ALIAS ? 0 : 2 * PT)); // [2][BN]
    int *off = kj + 2 * BN, *lo = off + SB_SCH + 1, *wsum = lo + SB_SCH;
    int *misc = wsum + 2 * (SB_NT / 32);
    int *tgt = misc + 4; // ORD: per chunk slot, this CTA's position in its region's order
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, T = a.T, H = a.H;
    int G = H / a.KVH;
    int lin = blockIdx.x, sub = lin % f.nsub;
    lin /= f.nsub;
    int c = a.nblk - 1 - lin % a.nblk; // blocks latest first
    lin /= a.nblk;
    int hg = lin % G, bk = f.bk0 + lin / G;
    int b = bk / a.KVH, kvh = bk % a.KVH, h = kvh * G + hg;
    int t0, t1;
    sb_sub_rows(a, c, sub, BM, t0, t1);
    if (t0 >= t1) return;
    size_t lbase = (((size_t)b * H + h) * a.nblk + c) * a.width;
    const int *list = a.idx + lbase;
    if (tid == 0) misc[1] = 0;
    __syncthreads();
    // the walk covers the slots up to the last one with keys this CTA sees (valid slots come
    // first; in a sorted list the regions past the CTA's rows are last): nv = that slot + 1
    for (int s = tid; s < a.width; s += SB_NT) {
        int r = list[s];
        if (sb_vis(a, r, t0, t1) > 0) atomicMax(&misc[1], s + 1);
    }
    size_t ldq = (size_t)H * DM, ldk = (size_t)a.KVH * DM;
    const uint16_t *qb = q + ((size_t)b * T * H + h) * DM, *ob = dout + ((size_t)b * T * H + h) * DM;
    const uint16_t *kb = k + ((size_t)b * T * a.KVH + kvh) * DM;
    const uint16_t *vb = v + ((size_t)b * T * a.KVH + kvh) * DM;
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        sb_load_rows64<DM>(qs + mt * QT, qb, ldq, t0 + 64 * mt, t1);
        sb_load_rows64<DM>(dos + mt * QT, ob, ldq, t0 + 64 * mt, t1);
    }
    sb_commit();
    __syncthreads();
    const int nv = misc[1];

    int g = lane >> 2, cq = lane & 3;
    int ta[MT], tb[MT];
    float acc[MT][DM / 8][4], L_a[MT], L_b[MT], D_a[MT], D_b[MT];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        ta[mt] = t0 + 64 * mt + warp * 16 + g, tb[mt] = ta[mt] + 8;
#pragma unroll
        for (int i = 0; i < DM / 8; i++) acc[mt][i][0] = acc[mt][i][1] = acc[mt][i][2] = acc[mt][i][3] = 0.0f;
        // rows past the CTA: P = 0 (lse +inf), so they add nothing to dK / dV
        const float *lr = lse + ((size_t)b * H + h) * T, *dr = Di + ((size_t)b * H + h) * T;
        L_a[mt] = L_b[mt] = INFINITY, D_a[mt] = D_b[mt] = 0.0f;
        if (ta[mt] < t1) L_a[mt] = lr[ta[mt]] * 1.4426950408889634f, D_a[mt] = dr[ta[mt]];
        if (tb[mt] < t1) L_b[mt] = lr[tb[mt]] * 1.4426950408889634f, D_b[mt] = dr[tb[mt]];
    }
    const float sl2 = a.scale_log2;
    // dK / dV role of the warp: output (0 dV = P^T dO, 1 dK = dS^T Q), half of D
    const int ro = warp >> 1, rdh = warp & 1;
    float *accb = (ro ? f.acck : f.accv) + (size_t)(bk - f.bk0) * T * DM + rdh * (DM / 2) + 2 * cq;
    int *cntb = ORD ? f.cnt + (size_t)bk * f.nreg * f.gpr : NULL;
    const int gpr = f.gpr;

    const int sch = ORD ? SB_SCH / gpr : SB_SCH; // ORD: tgt holds gpr ints per slot
    for (int s0 = 0; s0 < nv; s0 += sch) {
        int ns = min(sch, nv - s0);
        __syncthreads();
        int total = sb_plan(a, list, s0, ns, t0, t1, off, lo, wsum, misc);
        int nfull = misc[0];
        int ntile = (total + BN - 1) / BN;
        auto issue = [&](int tile, int st) {
            sb_issue_kv<DM, BN>(kj, kv0, tile, st, total, off, lo, ns, nfull, a.region, kb, vb, ldk);
        };
        if (ORD) { // each (slot, group)'s position in its order, all in parallel
            for (int x = tid; x < ns * gpr; x += SB_NT) {
                int s2 = x / gpr, j = x % gpr;
                int ls = s0 + s2, r = list[ls];
                tgt[x] = sb_vis_g(a, r, j, t0, t1) > 0
                             ? f.ord[j * f.nent + lbase + ls] + sb_subs_before(a, c, sub, BM, r, j)
                             : 0;
            }
            __syncthreads();
        }
        sb_tiles(ntile, issue, [&](int it, int st) {
            uint32_t kt = kv0 + st * 2 * KT, vt = kt + KT;
            const int *kjs = kj + st * BN;
            int k0 = kjs[lane % BN];
            float s[MT][BN / 8][4];
            sb_scores<DM, MT, BN>(s, qs, warp, kt, lane);
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                int tw0 = t0 + 64 * mt + warp * 16;
                bool need = k0 > tw0 || (a.window && k0 <= tw0 + 15 - a.window);
                if (__any_sync(0xffffffffu, need)) {
#pragma unroll
                    for (int nb = 0; nb < BN / 8; nb++)
#pragma unroll
                        for (int e2 = 0; e2 < 2; e2++) {
                            int j = kjs[nb * 8 + 2 * cq + e2];
                            bool va = j <= ta[mt] && (!a.window || j > ta[mt] - a.window);
                            bool vb2 = j <= tb[mt] && (!a.window || j > tb[mt] - a.window);
                            if (!va) s[mt][nb][e2] = -INFINITY;
                            if (!vb2) s[mt][nb][2 + e2] = -INFINITY;
                        }
                }
            }
            uint32_t pp[MT][BN / 16][4], dd[MT][BN / 16][4];
            {
                float dp[MT][BN / 8][4];
                sb_scores<DM, MT, BN>(dp, dos, warp, vt, lane);
#pragma unroll
                for (int mt = 0; mt < MT; mt++)
#pragma unroll
                    for (int nb = 0; nb < BN / 8; nb++) {
                        s[mt][nb][0] = sb_ex2(fmaf(s[mt][nb][0], sl2, -L_a[mt]));
                        s[mt][nb][1] = sb_ex2(fmaf(s[mt][nb][1], sl2, -L_a[mt]));
                        s[mt][nb][2] = sb_ex2(fmaf(s[mt][nb][2], sl2, -L_b[mt]));
                        s[mt][nb][3] = sb_ex2(fmaf(s[mt][nb][3], sl2, -L_b[mt]));
                        dp[mt][nb][0] = s[mt][nb][0] * (dp[mt][nb][0] - D_a[mt]);
                        dp[mt][nb][1] = s[mt][nb][1] * (dp[mt][nb][1] - D_a[mt]);
                        dp[mt][nb][2] = s[mt][nb][2] * (dp[mt][nb][2] - D_b[mt]);
                        dp[mt][nb][3] = s[mt][nb][3] * (dp[mt][nb][3] - D_b[mt]);
                    }
#pragma unroll
                for (int mt = 0; mt < MT; mt++)
#pragma unroll
                    for (int kk = 0; kk < BN / 16; kk++) {
                        pp[mt][kk][0] = sb_pack(s[mt][2 * kk][0], s[mt][2 * kk][1]);
                        pp[mt][kk][1] = sb_pack(s[mt][2 * kk][2], s[mt][2 * kk][3]);
                        pp[mt][kk][2] = sb_pack(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
                        pp[mt][kk][3] = sb_pack(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
                        dd[mt][kk][0] = sb_pack(dp[mt][2 * kk][0], dp[mt][2 * kk][1]);
                        dd[mt][kk][1] = sb_pack(dp[mt][2 * kk][2], dp[mt][2 * kk][3]);
                        dd[mt][kk][2] = sb_pack(dp[mt][2 * kk + 1][0], dp[mt][2 * kk + 1][1]);
                        dd[mt][kk][3] = sb_pack(dp[mt][2 * kk + 1][2], dp[mt][2 * kk + 1][3]);
                    }
            }
            sb_pvp<DM, MT, BN>(acc, dd, kt, lane); // dQ += dS K
            uint32_t ps = ALIAS ? kt : pd1;        // P tile, dS at ps + PT
            if (ALIAS) __syncthreads();            // every warp's dQ has read K
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int kk = 0; kk < BN / 16; kk++) {
                    int R = 64 * mt + 16 * warp + g;
                    char *pb = (char *)sm + (ps - qs) + 4 * cq, *db = pb + PT;
                    *(uint32_t *)(pb + sb_poff(R, 2 * kk)) = pp[mt][kk][0];
                    *(uint32_t *)(pb + sb_poff(R + 8, 2 * kk)) = pp[mt][kk][1];
                    *(uint32_t *)(pb + sb_poff(R, 2 * kk + 1)) = pp[mt][kk][2];
                    *(uint32_t *)(pb + sb_poff(R + 8, 2 * kk + 1)) = pp[mt][kk][3];
                    *(uint32_t *)(db + sb_poff(R, 2 * kk)) = dd[mt][kk][0];
                    *(uint32_t *)(db + sb_poff(R + 8, 2 * kk)) = dd[mt][kk][1];
                    *(uint32_t *)(db + sb_poff(R, 2 * kk + 1)) = dd[mt][kk][2];
                    *(uint32_t *)(db + sb_poff(R + 8, 2 * kk + 1)) = dd[mt][kk][3];
                }
            __syncthreads();
            // this warp's share of the tile's dV (P^T dO) or dK (dS^T Q): 32 keys x DM / 2
            float ac[2][DM / 16][4];
#pragma unroll
            for (int km = 0; km < 2; km++)
#pragma unroll
                for (int n = 0; n < DM / 16; n++) ac[km][n][0] = ac[km][n][1] = ac[km][n][2] = ac[km][n][3] = 0.0f;
            {
                uint32_t sa = ps + ro * PT, sbt = ro ? qs : dos;
#pragma unroll
                for (int kk = 0; kk < BM / 16; kk++) {
                    uint32_t af[2][4];
                    int prow = 16 * kk + (lane & 7) + ((lane >> 4) & 1) * 8;
#pragma unroll
                    for (int km = 0; km < 2; km++)
                        sb_ldsm_t(af[km], sa + sb_poff(prow, 2 * km + ((lane >> 3) & 1)));
                    uint32_t tb2 = sbt + (kk >> 2) * QT;
                    int rrow = 16 * (kk & 3) + (lane & 7) + ((lane >> 3) & 1) * 8;
#pragma unroll
                    for (int dp = 0; dp < DM / 32; dp++) {
                        uint32_t bf[4];
                        sb_ldsm_t(bf, tb2 + sb_off<DM>(rrow, rdh * (DM / 16) + 2 * dp + (lane >> 4)));
#pragma unroll
                        for (int km = 0; km < 2; km++) {
                            sb_mma(ac[km][2 * dp], af[km], bf[0], bf[1]);
                            sb_mma(ac[km][2 * dp + 1], af[km], bf[2], bf[3]);
                        }
                    }
                }
            }
            // ORD: the regions that start in tile i wait for this CTA's position; those that end
            // in it are released (position + 1) once its adds are performed (fence). Warp 0, a
            // slot per lane (the region of slot s: lo[s] / region).
            // (slot, group) pairs of tile i, a pair per lane: packed range [pa, pb) of the
            // group's keys this CTA sees; wait where it starts, release where it ends
            auto tile_groups = [&](int i, bool rel) {
                int q0 = i * BN, q1 = min(total, q0 + BN), sA = sb_slot(off, 0, ns - 1, q0);
                for (int x = lane;; x += 32) {
                    int s2 = sA + x / gpr, j = x % gpr;
                    if (s2 >= ns || off[s2] >= q1) break;
                    int n = off[s2 + 1] - off[s2];
                    if (n == 0) continue;
                    int r = lo[s2] / a.region, gk0 = r * a.region + 32 * j;
                    int va = max(lo[s2], gk0), vb = min(lo[s2] + n, gk0 + 32);
                    if (va >= vb) continue;
                    int pa = off[s2] + va - lo[s2], pb = off[s2] + vb - lo[s2];
                    int *cp = cntb + (size_t)r * gpr + j;
                    if (!rel && pa >= q0 && pa < q1) sb_wait_relaxed(cp, tgt[s2 * gpr + j], f.ow);
                    if (rel && pb > q0 && pb <= q1) st_relaxed_gpu(cp, tgt[s2 * gpr + j] + 1);
                }
            };
            if (ORD) {
                if (warp == 0) tile_groups(it, false); // wait
                __syncthreads();
            }
            // the adds: fp32 reductions in L2 (in ORD mode one CTA at a time per region, in the
            // fixed order, so the sums repeat their bits)
#pragma unroll
            for (int km = 0; km < 2; km++)
#pragma unroll
                for (int hf = 0; hf < 2; hf++) {
                    int j = kjs[16 * km + g + 8 * hf];
                    float *row = accb + (size_t)(j == INT_MAX ? 0 : j) * DM;
                    if (j != INT_MAX) {
#pragma unroll
                        for (int n = 0; n < DM / 16; n++)
                            sb_red2(row + 8 * n, ac[km][n][2 * hf], ac[km][n][2 * hf + 1]);
                    }
                }
            if (ORD) {
                fence_acq_rel_gpu(); // this thread's adds are performed before the release
                __syncthreads();
                if (warp == 0) tile_groups(it, true); // release
            }
            __syncthreads(); // stage st (K / V, then P / dS) is free for the load two tiles on
        });
    }
    sb_wait<0>();
    uint16_t *dqb = dq + ((size_t)b * T * H + h) * DM;
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int i = 0; i < DM / 8; i++) {
            int d = i * 8 + 2 * cq;
            if (ta[mt] < t1)
                *(uint32_t *)(dqb + (size_t)ta[mt] * ldq + d) = sb_pack(acc[mt][i][0] * a.scale, acc[mt][i][1] * a.scale);
            if (tb[mt] < t1)
                *(uint32_t *)(dqb + (size_t)tb[mt] * ldq + d) = sb_pack(acc[mt][i][2] * a.scale, acc[mt][i][3] * a.scale);
        }
}

// The lists sorted by region id (ms lists are in merge-rank order): the fused walk's order is
// only meaningful on sorted lists (r3 32K ordered: 82 ms sorted, 314 unsorted). One CTA per
// list, bitonic sort in shared memory (-1 sorts last as INT_MAX); lists wider than SB_SORTW are
// copied unsorted (correct in either order, only slower).
#define SB_SORTW 4096
__global__ void sb_sort_lists(int *dst, const int *src, int width) {
    __shared__ int v[SB_SORTW];
    const int *l = src + (size_t)blockIdx.x * width;
    int *o = dst + (size_t)blockIdx.x * width;
    if (width > SB_SORTW) {
        for (int i = threadIdx.x; i < width; i += blockDim.x) o[i] = l[i];
        return;
    }
    int n = 1;
    while (n < width) n <<= 1;
    for (int i = threadIdx.x; i < n; i += blockDim.x) v[i] = i < width && l[i] >= 0 ? l[i] : INT_MAX;
    __syncthreads();
    for (int k = 2; k <= n; k <<= 1)
        for (int j = k >> 1; j > 0; j >>= 1) {
            for (int i = threadIdx.x; i < n; i += blockDim.x) {
                int p = i ^ j;
                if (p > i) {
                    bool up = (i & k) == 0;
                    int a = v[i], b = v[p];
                    if ((a > b) == up) v[i] = b, v[p] = a;
                }
            }
            __syncthreads();
        }
    for (int i = threadIdx.x; i < width; i += blockDim.x) o[i] = v[i] == INT_MAX ? -1 : v[i];
}
// (also sparse_wgmma_small.cu's ordered walk)
void sparse_sort_lists(int *dst, const int *src, size_t nlists, int width) {
    sb_sort_lists<<<(unsigned)nlists, 128>>>(dst, src, width);
    cudaLaunchCheck();
}

// ORD: per inverse-list entry (the existing chunked fill's order) the number of CTAs of its block
// that see the region (wgt), and per list slot its entry's position (spos)
__global__ void sb_chunk_fill_w(int *wgt, int *spos, int *ccnt, SbArgs a, int nreg, int L,
                                int nchunk, int BM, int nsub, int gpr, size_t nent) {
    int ch = blockIdx.x, bk = blockIdx.y, b = bk / a.KVH, kvh = bk % a.KVH, G = a.H / a.KVH;
    int l0 = ch * L, l1 = min(G * a.nblk, l0 + L);
    int *cur = ccnt + ((size_t)bk * nchunk + ch) * nreg;
    for (int l = l0; l < l1; l++) {
        int hg = l / a.nblk, c = a.nblk - 1 - l % a.nblk; // blocks latest first
        size_t lb = (((size_t)b * a.H + kvh * G + hg) * a.nblk + c) * a.width;
        for (int s = threadIdx.x; s < a.width; s += blockDim.x) {
            int r = a.idx[lb + s];
            if (r >= 0 && r < nreg) {
                int p = cur[r]++;
                for (int j = 0; j < gpr; j++) wgt[j * nent + p] = sb_subs_before(a, c, nsub, BM, r, j);
                spos[lb + s] = p;
            }
        }
        __syncthreads();
    }
}
// ord[j][slot] = contributions before the slot's entry in the order of group j of its region
__global__ void sb_ord_kernel(int *ord, const int *spos, const int *pre, const int *start, SbArgs a,
                              int nreg, int gpr) {
    size_t n = (size_t)a.B * a.H * a.nblk * a.width;
    int G = a.H / a.KVH;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        int r = a.idx[i];
        if (r < 0 || r >= nreg) continue;
        size_t l = i / a.width;
        int h = (int)((l / a.nblk) % a.H), b = (int)(l / a.nblk / a.H);
        int st = start[((size_t)b * a.KVH + h / G) * nreg + r], p = spos[i];
        for (int j = 0; j < gpr; j++) ord[j * n + i] = pre[j * n + p] - pre[j * n + st];
    }
}
// dk / dv (bf16) of the chunk's (b, kv head)s from the fp32 accumulators, 8 values per thread
__global__ void sb_acc_out(uint16_t *dk, uint16_t *dv, const float *acck, const float *accv,
                           int bk0, int nbk, int T, int KVH, int D, float scale) {
    size_t n8 = (size_t)nbk * T * D / 8;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n8;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t e = i * 8;
        int d = (int)(e % D), t = (int)((e / D) % T), bk = bk0 + (int)(e / D / T);
        int b = bk / KVH, kvh = bk % KVH;
        size_t o = (((size_t)b * T + t) * KVH + kvh) * D + d;
        const float4 *pk = (const float4 *)(acck + e), *pv = (const float4 *)(accv + e);
        float4 k0 = pk[0], k1 = pk[1], v0 = pv[0], v1 = pv[1];
        uint4 ko, vo;
        ko.x = sb_pack(k0.x * scale, k0.y * scale), ko.y = sb_pack(k0.z * scale, k0.w * scale);
        ko.z = sb_pack(k1.x * scale, k1.y * scale), ko.w = sb_pack(k1.z * scale, k1.w * scale);
        vo.x = sb_pack(v0.x, v0.y), vo.y = sb_pack(v0.z, v0.w);
        vo.z = sb_pack(v1.x, v1.y), vo.w = sb_pack(v1.z, v1.w);
        *(uint4 *)(dk + o) = ko;
        *(uint4 *)(dv + o) = vo;
    }
}

// ---------------------------------------------------------------------------------------------
// host side

static bool sb_supported(const AttnIndex *ix, int B, int T, int H, int KVH, int D) {
    return (D == 64 || D == 128) && ix && !ix->kpos && B > 0 && T > 0 && KVH > 0 && H % KVH == 0 &&
           ix->qblock > 0 && ix->region > 0 && ix->width > 0 && ix->nblk > 0 &&
           (size_t)B * H <= 65535 && (size_t)B * KVH <= 65535;
}

static SbArgs sb_args(const AttnIndex *ix, int B, int T, int H, int KVH, int D) {
    SbArgs a;
    a.idx = ix->idx, a.qblock = ix->qblock, a.nblk = ix->nblk, a.region = ix->region;
    a.width = ix->width, a.window = ix->window;
    a.B = B, a.T = T, a.H = H, a.KVH = KVH, a.D = D;
    a.scale = (float)(1.0 / sqrt((double)D));
    a.scale_log2 = (float)(1.4426950408889634 / sqrt((double)D));
    return a;
}

static size_t rows_smem(int DM, int bwd, int MT, bool un, int BN) {
    return (size_t)(bwd ? 2 * MT : MT) * 64 * DM * 2 + 4 * (size_t)BN * DM * 2 +
           sizeof(int) * (2 * BN + 2 * SB_SCH + 1 + 2 * (SB_NT / 32) + 4) +
           (un ? sizeof(int) * SB_UMAX * (2 * MT + 1) : 0);
}
static size_t dkv_smem(int DM, int kg) {
    return 2 * (size_t)kg * 16 * DM * 2 + 4 * (size_t)SB_RT * DM * 2 + 4 * SB_RT * sizeof(float);
}

// Test / timing hook (not in attn_bf16.h; the tests use it), flags: bits 0, 1 which split
// backward kernels run (bit 0: dQ, bit 1: dK/dV; 3 = both, the default; the others only for
// timing one kernel alone); bit 2: one-row query blocks on per-row CTAs instead of the union
// (the fallback when the regions exceed SB_UMAX; the tests cover it at small shapes); bit 5
// forces the split backward, bit 6 the fused one (neither: MSLAB_SPARSE_BF16_BWD / the default).
static int sb_bwd_parts = 3, sb_union_on = 1;
static int sb_fused_force = 0; // 0: MSLAB_SPARSE_BF16_BWD, 1: split, 2: fused
extern "C" void sparse_bf16_tune(int flags) {
    sb_bwd_parts = flags & 3;
    sb_union_on = !(flags & 4);
    sb_fused_force = (flags & 32) ? 1 : (flags & 64) ? 2 : 0;
}

template <int DM, int BWD, int MT, bool UN, int BN = 64>
static void launch_rows(uint16_t *out, float *lse, const uint16_t *q, const uint16_t *k,
                        const uint16_t *v, const uint16_t *dout, const float *Di, const SbArgs &a) {
    size_t smem = rows_smem(DM, BWD, MT, UN, BN);
    static bool attr = false;
    if (!attr) {
        cudaCheck(cudaFuncSetAttribute(sb_rows_kernel<DM, BWD, MT, UN, BN>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        attr = true;
    }
    int nsub = (a.qblock + 64 * MT - 1) / (64 * MT);
    size_t nx = UN ? (a.T + 64 * MT - 1) / (64 * MT) : (size_t)a.nblk * nsub;
    dim3 grid((unsigned)nx, (unsigned)(a.B * a.H));
    sb_rows_kernel<DM, BWD, MT, UN, BN><<<grid, SB_NT, smem>>>(out, lse, q, k, v, dout, Di, a, nsub);
    cudaLaunchCheck();
}

// union mode for one-row query blocks whose regions fit the planning arrays
static bool sb_union(const SbArgs &a) {
    return sb_union_on && a.qblock == 1 && (a.T + a.region - 1) / a.region <= SB_UMAX;
}

template <int DM, bool GA>
static void launch_dkv(uint16_t *dk, uint16_t *dv, const uint16_t *q, const uint16_t *k,
                       const uint16_t *v, const uint16_t *dout, const float *lse, const float *Di,
                       const SbArgs &a, const SbInv &iv) {
    size_t smem = dkv_smem(DM, iv.kg);
    static bool attr = false;
    if (!attr) {
        cudaCheck(cudaFuncSetAttribute(sb_dkv_kernel<DM, GA>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       (int)dkv_smem(DM, SB_KG)));
        attr = true;
    }
    dim3 grid((unsigned)((size_t)iv.nreg * iv.cpr), (unsigned)(a.B * a.KVH));
    sb_dkv_kernel<DM, GA><<<grid, SB_NT, smem>>>(dk, dv, q, k, v, dout, lse, Di, a, iv);
    cudaLaunchCheck();
}

// ---- fused backward (host) ----
static size_t fused_smem(int DM, int MT) {
    size_t QT = 64 * (size_t)DM * 2, KT = 32 * (size_t)DM * 2, PT = 64 * (size_t)MT * 32 * 2;
    return 2 * MT * QT + 4 * KT + (2 * PT <= 2 * KT ? 0 : 2 * PT) +
           sizeof(int) * (2 * 32 + 3 * SB_SCH + 1 + 2 * (SB_NT / 32) + 4);
}

template <int DM, int MT, bool ORD>
static void launch_fused(uint16_t *dq, const float *lse, const uint16_t *q, const uint16_t *k,
                         const uint16_t *v, const uint16_t *dout, const float *Di, const SbArgs &a,
                         const SbFu &f, int nbk) {
    size_t smem = fused_smem(DM, MT);
    static bool attr = false;
    if (!attr) {
        cudaCheck(cudaFuncSetAttribute(sb_fused_kernel<DM, MT, ORD>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        attr = true;
    }
    size_t n = (size_t)nbk * (a.H / a.KVH) * a.nblk * f.nsub;
    MS_ASSERT(n < (size_t)INT_MAX, "sparse_bf16_bwd: fused grid of %zu CTAs", n);
    sb_fused_kernel<DM, MT, ORD><<<(unsigned)n, SB_NT, smem>>>(dq, lse, q, k, v, dout, Di, a, f);
    cudaLaunchCheck();
}

// The default backward: MSLAB_SPARSE_BF16_BWD=fused|split, else fused in the atomic mode (H200
// r3, ms fwd+bwd 54 / 118 / 251 ms at 32K / 64K / 128K vs split 83 / 182 / 392; moba-blk bwd 13.4
// vs 15.6 ms at 32K); in the deterministic mode fused (ordered adds) only at 64K <= T <= 128K
// (the measured range) with regions of <= 32 keys (r3: 174 / 356 ms at 64K / 128K vs split 182 /
// 392; at 32K equal, at 16K and for moba-blk's 128-key regions slower: 34 vs 28 ms, 22.8 vs 15.6
// ms bwd).
static int sb_fused_default(const AttnIndex *ix, int T) {
    static int v = -2;
    if (v == -2) {
        const char *e = getenv("MSLAB_SPARSE_BF16_BWD");
        v = e && !strcmp(e, "fused") ? 1 : e && !strcmp(e, "split") ? 0 : -1;
    }
    if (v >= 0) return v;
    // s5: at 32K, H = 32, D = 128 the ordered kernel now beats the split pair (bwd 59.7 vs 63.5 ms),
    // but the LM's MS row (32K, H = 12, D = 64) ran 360 ms/step with it vs 290 split: kept at 64K
    return !attn_bf16_deterministic() || (T >= 65536 && T <= 131072 && ix->region <= 32);
}
// accumulator budget in bytes: MSLAB_SPARSE_BF16_ACC_MB, else 1/8 of q, k, v, o + grads (r3: 1 GiB
// at 128K, H = KVH = 32: 8 kv heads per launch; 32K 54.2 ms vs 58.1 with 1/16, 128K equal; peak
// 9.39 GiB = 1.17x the 8 GiB of q, k, v, o + grads)
static size_t sb_acc_budget(int B, int T, int H, int KVH, int D) {
    const char *e = getenv("MSLAB_SPARSE_BF16_ACC_MB");
    if (e && atol(e) > 0) return (size_t)atol(e) << 20;
    return (size_t)B * T * D * (H + KVH);
}

static int sb_bwd_fused(uint16_t *dq, uint16_t *dk, uint16_t *dv, const uint16_t *dout,
                        const uint16_t *out, const float *lse, const uint16_t *q, const uint16_t *k,
                        const uint16_t *v, const AttnIndex *ix, int B, int T, int H, int KVH,
                        int D) {
    SbArgs a = sb_args(ix, B, T, H, KVH, D);
    int ord = attn_bf16_deterministic();
    int MT = a.qblock > 64 ? 2 : 1, BM = 64 * MT, nsub = (a.qblock + BM - 1) / BM;
    int nreg = (T + ix->region - 1) / ix->region;
    size_t nrow = (size_t)B * H * T, nbkt = (size_t)B * KVH * nreg, nbk = (size_t)B * KVH;
    size_t nent = (size_t)B * H * ix->nblk * ix->width;
    MS_ASSERT(nent < (size_t)INT_MAX, "sparse_bf16_bwd: index list of %zu entries", nent);
    size_t perbk = 2 * (size_t)T * D * 4, cb = sb_acc_budget(B, T, H, KVH, D) / perbk;
    cb = cb < 1 ? 1 : cb > nbk ? nbk : cb;
    int nlists = (H / KVH) * ix->nblk, L = sparse_inverse_chunk(ix, B, H, KVH, nreg);
    int nchunk = (nlists + L - 1) / L;
    size_t nccnt = (size_t)B * KVH * nchunk * nreg;
    int gpr = (ix->region + 31) / 32; // ORD: groups of 32 keys per region
    size_t scan_bytes = 0, sb2 = 0;
    if (ord) {
        cudaCheck(cub::DeviceScan::ExclusiveSum(NULL, scan_bytes, (const int *)NULL, (int *)NULL, (int)nbkt));
        cudaCheck(cub::DeviceScan::ExclusiveSum(NULL, sb2, (const int *)NULL, (int *)NULL, (int)nent));
        if (sb2 > scan_bytes) scan_bytes = sb2;
    }
    size_t o_di = 0, o_acc = align256(o_di + nrow * 4), o_cnt = align256(o_acc + perbk * cb);
    size_t o_start = o_cnt, o_cur = o_cnt, o_wgt = o_cnt, o_pre = o_cnt, o_spos = o_cnt, o_tmp = o_cnt;
    if (ord) {
        o_start = align256(o_cnt + nbkt * gpr * 4), o_cur = align256(o_start + nbkt * 4);
        o_wgt = align256(o_cur + nccnt * 4), o_pre = align256(o_wgt + gpr * nent * 4);
        o_spos = align256(o_pre + gpr * nent * 4), o_tmp = align256(o_spos + nent * 4);
    }
    size_t o_sidx = align256(o_tmp + scan_bytes), total = o_sidx + nent * 4 + 256;
    char *scr = (char *)cuda_scratch(SCRATCH_SPARSE_BF16, total);
    float *Di = (float *)(scr + o_di), *acck = (float *)(scr + o_acc);
    float *accv = acck + cb * (size_t)T * D;
    int *cnt = (int *)(scr + o_cnt), *start = (int *)(scr + o_start), *cur = (int *)(scr + o_cur);
    int *wgt = (int *)(scr + o_wgt), *pre = (int *)(scr + o_pre), *spos = (int *)(scr + o_spos);

    sb_di_kernel<<<grid_for(nrow * 32, 256), 256>>>(Di, dout, out, B, T, H, D);
    cudaLaunchCheck();
    { // the walk on lists sorted by region id
        int *sidx = (int *)(scr + o_sidx);
        sb_sort_lists<<<(unsigned)((size_t)B * H * ix->nblk), 128>>>(sidx, ix->idx, ix->width);
        cudaLaunchCheck();
        a.idx = sidx;
    }
    if (ord) {
        cudaCheck(cudaMemsetAsync(cnt, 0, nbkt * 4));
        sb_count_kernel<<<grid_for(nent, 256), 256>>>(cnt, a.idx, B, H, KVH, ix->nblk, ix->width, nreg);
        cudaLaunchCheck();
        cudaCheck(cub::DeviceScan::ExclusiveSum(scr + o_tmp, scan_bytes, cnt, start, (int)nbkt));
        cudaCheck(cudaMemsetAsync(cur, 0, nccnt * 4));
        dim3 gch((unsigned)nchunk, (unsigned)(B * KVH));
        sb_chunk_count<<<gch, 256>>>(cur, a.idx, H, KVH, ix->nblk, ix->width, nreg, L, nchunk, 1);
        cudaLaunchCheck();
        sb_chunk_scan<<<grid_for(nbkt, 256), 256>>>(cur, start, nbkt, nreg, nchunk);
        cudaLaunchCheck();
        sb_chunk_fill_w<<<gch, 256>>>(wgt, spos, cur, a, nreg, L, nchunk, BM, nsub, gpr, nent);
        cudaLaunchCheck();
        for (int j = 0; j < gpr; j++)
            cudaCheck(cub::DeviceScan::ExclusiveSum(scr + o_tmp, scan_bytes, wgt + j * nent,
                                                    pre + j * nent, (int)nent));
        sb_ord_kernel<<<grid_for(nent, 256), 256>>>(wgt, spos, pre, start, a, nreg, gpr); // ord over wgt
        cudaLaunchCheck();
        // now the per-group counters (the tests' stall: -1, no turn comes)
        cudaCheck(cudaMemsetAsync(cnt, ord_stall() ? 0xff : 0, nbkt * gpr * 4));
    }
    SbFu f;
    f.cnt = cnt, f.ord = wgt, f.nsub = nsub, f.nreg = nreg, f.gpr = gpr, f.nent = nent;
    f.acck = acck, f.accv = accv;
    f.ow = ord ? ord_watch(ATTN_ORD_SPARSE_BF16, 1ll << 31) : OrdWatch{};
    for (size_t bk0 = 0; bk0 < nbk; bk0 += cb) {
        int nb = (int)(nbk - bk0 < cb ? nbk - bk0 : cb);
        f.bk0 = (int)bk0;
        cudaCheck(cudaMemsetAsync(acck, 0, perbk * cb));
        if (D == 64) {
            if (MT == 2) ord ? launch_fused<64, 2, true>(dq, lse, q, k, v, dout, Di, a, f, nb)
                         : launch_fused<64, 2, false>(dq, lse, q, k, v, dout, Di, a, f, nb);
            else ord ? launch_fused<64, 1, true>(dq, lse, q, k, v, dout, Di, a, f, nb)
                     : launch_fused<64, 1, false>(dq, lse, q, k, v, dout, Di, a, f, nb);
        } else {
            if (MT == 2) ord ? launch_fused<128, 2, true>(dq, lse, q, k, v, dout, Di, a, f, nb)
                         : launch_fused<128, 2, false>(dq, lse, q, k, v, dout, Di, a, f, nb);
            else ord ? launch_fused<128, 1, true>(dq, lse, q, k, v, dout, Di, a, f, nb)
                     : launch_fused<128, 1, false>(dq, lse, q, k, v, dout, Di, a, f, nb);
        }
        sb_acc_out<<<grid_for((size_t)nb * T * D / 8, 256), 256>>>(dk, dv, acck, accv, (int)bk0, nb,
                                                                   T, KVH, D, a.scale);
        cudaLaunchCheck();
    }
    return 0;
}

extern "C" int sparse_bf16_fwd(uint16_t *out, float *lse, const uint16_t *q, const uint16_t *k,
                               const uint16_t *v, const AttnIndex *ix, int B, int T, int H,
                               int KVH, int D) {
    if (!sb_supported(ix, B, T, H, KVH, D)) return -1;
    SbArgs a = sb_args(ix, B, T, H, KVH, D);
    // 128-row CTAs only pay when a block has that many rows
    bool two = a.qblock > 64, un = sb_union(a);
    if (D == 64) {
        if (un) launch_rows<64, 0, 1, true>(out, lse, q, k, v, NULL, NULL, a);
        else if (two) launch_rows<64, 0, 2, false>(out, lse, q, k, v, NULL, NULL, a);
        else launch_rows<64, 0, 1, false>(out, lse, q, k, v, NULL, NULL, a);
    } else {
        if (un) launch_rows<128, 0, 1, true>(out, lse, q, k, v, NULL, NULL, a);
        else if (two) launch_rows<128, 0, 2, false>(out, lse, q, k, v, NULL, NULL, a);
        else launch_rows<128, 0, 1, false>(out, lse, q, k, v, NULL, NULL, a);
    }
    return 0;
}

extern "C" int sparse_bf16_bwd(uint16_t *dq, uint16_t *dk, uint16_t *dv, const uint16_t *dout,
                               const uint16_t *out, const float *lse, const uint16_t *q,
                               const uint16_t *k, const uint16_t *v, const AttnIndex *ix, int B,
                               int T, int H, int KVH, int D) {
    if (!sb_supported(ix, B, T, H, KVH, D)) return -1;
    // the fused backward: query blocks of > 1 row (one-row blocks stay on the union / gathered
    // split kernels), both kernels wanted
    bool fused = sb_fused_force == 2 || (sb_fused_force == 0 && sb_fused_default(ix, T));
    if (fused && ix->qblock > 1 && sb_bwd_parts == 3 &&
        !(attn_bf16_deterministic() && (ix->region + 31) / 32 > 64)) // ORD: <= 64 groups
        return sb_bwd_fused(dq, dk, dv, dout, out, lse, q, k, v, ix, B, T, H, KVH, D);
    SbArgs a = sb_args(ix, B, T, H, KVH, D);
    size_t nrow = (size_t)B * H * T, o_inv = align256(nrow * 4);
    size_t inv_bytes = sparse_inverse_build(NULL, NULL, ix, B, T, H, KVH);
    char *scr = (char *)cuda_scratch(SCRATCH_SPARSE_BF16, o_inv + inv_bytes);
    float *Di = (float *)scr;
    SparseInverse si;
    sparse_inverse_build(&si, scr + o_inv, ix, B, T, H, KVH);
    int *inv = si.inv, *start = si.start, *cnt = si.count, nreg = si.nreg;

    sb_di_kernel<<<grid_for(nrow * 32, 256), 256>>>(Di, dout, out, B, T, H, D);
    cudaLaunchCheck();

    SbInv iv;
    iv.inv = inv, iv.start = start, iv.count = cnt, iv.nreg = nreg;
    iv.gpr = (ix->region + 15) / 16;
    iv.kg = iv.gpr < SB_KG ? iv.gpr : SB_KG;
    if (iv.kg == 3) iv.kg = 4; // 4 / kg row slices must divide the 4 sub-tiles: one warp idles
    iv.cpr = (iv.gpr + iv.kg - 1) / iv.kg;
    float *lsw = (float *)lse; // launch_rows' lse slot (read, not written, by the dQ kernel)
    if (D == 64) {
        if ((sb_bwd_parts & 1) && sb_union(a)) launch_rows<64, 1, 1, true>(dq, lsw, q, k, v, dout, Di, a);
        else if ((sb_bwd_parts & 1) && a.qblock > 64) launch_rows<64, 1, 2, false, 32>(dq, lsw, q, k, v, dout, Di, a);
        else if (sb_bwd_parts & 1) launch_rows<64, 1, 1, false>(dq, lsw, q, k, v, dout, Di, a);
        if ((sb_bwd_parts & 2) && a.qblock == 1) launch_dkv<64, true>(dk, dv, q, k, v, dout, lse, Di, a, iv);
        else if (sb_bwd_parts & 2) launch_dkv<64, false>(dk, dv, q, k, v, dout, lse, Di, a, iv);
    } else {
        if ((sb_bwd_parts & 1) && sb_union(a)) launch_rows<128, 1, 1, true>(dq, lsw, q, k, v, dout, Di, a);
        else if ((sb_bwd_parts & 1) && a.qblock > 64) launch_rows<128, 1, 2, false, 32>(dq, lsw, q, k, v, dout, Di, a);
        else if (sb_bwd_parts & 1) launch_rows<128, 1, 1, false>(dq, lsw, q, k, v, dout, Di, a);
        if ((sb_bwd_parts & 2) && a.qblock == 1) launch_dkv<128, true>(dk, dv, q, k, v, dout, lse, Di, a, iv);
        else if (sb_bwd_parts & 2) launch_dkv<128, false>(dk, dv, q, k, v, dout, lse, Di, a, iv);
    }
    return 0;
}
