// sparse_wgmma_small.cu: the block-sparse wgmma backward for lists of 16 / 32-key regions (ms with
// w < 64): sq_fused_kernel and its host part. Called by flash_wgmma_bwd.cu's sparse_wgmma_bwd
// (contract: cuda/attn_bf16.h); shared pieces in flash_wgmma_bwd.cuh. Since s9 the key-centric
// kernel (sparse_wgmma_keys.cu) takes these lists first (query blocks of 128k rows); this one is
// the fallback (MSLAB_SQ_KEYS=0; 1: keys at D 128 only).
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

// Query-centric fused backward for lists of small regions (16 / 32 keys: ms with w < 64), D = 128
// or 64, both modes (sq_fused_kernel; atomic: fp32 adds in any order; ordered (ORD, below): the
// same adds in a fixed order per region, bitwise repeatable).
// CTA = (b, h, 128 rows of one query block), 2 warpgroups of 64 rows. The block's list (valid
// slots first) is packed into 64-key tiles of 64 / region slots, K / V rows read through the list
// by cp.async (rows of slots past the list / keys past T zero, their key id INT_MAX: masked by
// the causal test), two stages. Per tile: S = Q K^T, dP = dO V^T (SS, rows as M), P from lse,
// dS = P (dP - Di) in registers, dQ += dS K (RS) in registers for the whole walk; P and dS (bf16)
// to shared memory [128 rows][64 keys], then warpgroup 0 makes dV = P^T dO and warpgroup 1
// dK = dS^T Q for the tile's 64 keys (SS, A M-major, B MN-major, K = the CTA's 128 rows, N = D:
// one N = 128 wgmma per k step at D = 128) and adds them into fp32 accumulators [B, KVH, T, D]
// (64 KB per tile): D = 128 (BULK) each warpgroup stages its [64 keys][128] fp32 partial in
// shared memory as 16 boxes [16 keys][32 columns] (128-byte swizzle: conflict-free float2
// stores; in its own rows of P / dS and its half of a 32 KB buffer) and hands the tile to a 9th
// warp, the adder (named barrier STG; a third warpgroup whose other warps end at once, setmaxnreg:
// adder 40 registers, compute warps 224), whose 32 lanes hand a box each to the TMA unit as a
// bulk tensor reduce-add (.add.f32, a 3-d map over the accumulators), wait for their reads and
// free the staging (barrier FREE, which the compute warps wait for just before they rewrite P / dS
// next tile); in the ordered mode the adder also waits for the CTA's turn and releases, so the
// compute warps never wait for a turn nor for the adds to land. D = 64: red.add per thread (bulk
// lost there, and its ordered variant serialised the wgmma at 128 registers: C7512). A convert kernel makes dk = scale acc, dv. 5
// products per pair. Tiles wholly after the CTA's rows (later regions of the own block: ~12% of
// the ms paper config's tiles; the tile's least key from the key ids in shared memory) are
// skipped, and so are the adds of keys past the CTA's rows (zeros). D = 64 runs 2 CTAs per SM
// (128 registers).
// Accumulators of a group of (b, kv head)s at a time (one launch each; small_launch's budget).
// Measured (H200, bf16, ms paper config w 16 top 512 merge 128, B = 1, H = KVH = 32, D = 128):
// bwd alone at 32K (tests sparse_wgmma_bwd_perf, s6 r2; TFLOP/s at 2.5x the forward's flops):
// atomic 32.7 ms (262), ordered 44.0 ms (195) vs sparse_bf16's ordered 63.5 (135) / atomic 37.9.
// Bench fwd+bwd incl. selection (s6 r2, `mslab-gpu-bench --attn --kernels ms,nd --max-len 131072
// --reps 3`, one launch): deterministic 25.0 / 56.9 / 123.9 / 267.7 ms at 16K / 32K / 64K / 128K
// (s5 with sparse_bf16's ordered kernels: 32.9 / 75.6 / 149.0 / 314.5), atomic 19.6 / 45.3 /
// 98.8 / 215.7; peak at 128K 11.34 GB with one launch (1.32x the 8 GiB of q, k, v, o + grads):
// hence the groups (s6 r3, defaults, 2 launches at 128K: deterministic 24.3 / 54.5 / 117.9 /
// 254.3 ms, atomic 18.7 / 42.8 / 93.0 / 202.4, peak 9.19 GB = 1.07x; LM row 231.1). LM row (H = 12,
// D = 64, T = 32K, deterministic, s6 r1): 251.9 ms/step (s5, sparse_bf16 split: 281.6).
// s7 (perf row as above, ms at 32K; the ordered mode's cost is the reds' drain, not the waits):
// ORD as in s6 44.2, the same without any wait (wrong sums, timing only) 44.0: the every-thread
// fence after the adds stalls the CTA until its 64 KB of reds are performed. One fence by the
// releasing thread after the barrier (the release pattern of CUTLASS's semaphore; now the
// default): 41.6 / 41.4 / 41.4 (r1 / r2 / r3). A 9th warp doing the waits and the releases
// (named barriers; the compute warps never fence): 41.4, no better -> removed. Bench (r2, that 9th
// warp): ordered 23.1 / 52.0 / 112.4 / 246.0 ms at 16K / 32K / 64K / 128K, atomic 18.8 / 42.7 /
// 92.8 / 204.0; peak at 128K 8.61e9 B. r4 (defaults as now, with the other helpers' s7 work):
// bench ordered 23.0 / 51.0 / 110.3 / 233.4 ms, atomic 18.4 / 41.8 / 90.6 / 193.3; perf row
// ordered 41.7, atomic 32.8; LM row 219.0 ms/step CTAs fastest, 198.6 heads fastest (s6: 231.1).
// What is left (41.4 vs 32.7) is not profiled: with every thread fencing, dropping the waits
// changed nothing (44.0 vs 44.2); a candidate is the drain before each release delaying the
// region's next CTA (the 16 CTAs of a 2048-row block share one list and walk it side by side).
// Tried and removed (s7 r1, same row): fixed-point dK / dV sums (order-free integer adds, the
// MoBA dQ's DET = 3 idea; a per-region scale from cnt * 128 max|dO| resp. cnt * 128
// (max|dO|_2 max|V|_2 + max|Di|) max|Q|, cnt = the CTAs adding to the region): int64 per element
// (red.u64 x2 per pair + F2I.S64) 74.5 ms; two integer-valued fp32 lanes per element (hi, lo) in
// one red.v4.f32 per pair 44.3 ms (the reds' bytes double: the atomic kernel is bound by the L2
// reduction traffic) and imprecise: the bound exceeds the partials by ~2^18 (dV) / 2^23 (dK)
// (P <= 1 per entry; sums of ~1e-4 P), so dK kept ~9 bits (simulated 6.5e-4 rel. L2, 25% of
// the bf16 values off by one ulp; on a test row with uneven magnitudes 91285 of 358400 dk values
// differed from the counters' mode, int64: 200). The atomic mode with red.v4.f32 (lane pairs swap half rows): 32.8 vs 32.7.
// Tried and removed (s8 r1, same perf row; atomic / ordered, base 32.6 / 41.4 ms): CTA pairs, a
// thread-block cluster of 2 over adjacent 128-row CTAs of one block (one list) that summed their
// dK / dV partials through distributed shared memory (one warpgroup's 32 KB into the peer's
// buffer by st.shared::cluster, two cluster barrier phases per tile; rank 0 added dV, rank 1 dK:
// half the reds; ordered: a pair one adder, a counter per array): 37.6 / 41.8 ms, with bulk
// adds 37.7 / 42.6. Halving the reds' L2 traffic bought nothing and the pair's lockstep (the
// cluster barriers, the exchange on the critical path) cost 15%: the kernel is not bound by the
// reds' L2 traffic (~10k cycles per tile vs ~2.8k of wgmma at peak: latency bound).
// s8 (same perf row, ms at 32K, atomic / ordered; ncu of the atomic kernel (r2): 6.7 cycles per
// issued instruction: lg_throttle (the reds) 1.55, long scoreboard 1.07, wait 0.87, barrier 0.63;
// SM busy 30%, L2 58%): base (r1) 32.6 / 41.4; the tile's least key from the key ids in shared
// memory (a warp min; was 4 list loads per thread) and the list loads of the K / V copies issued
// together (unrolled at D = 128): 30.8 / 40.8 (r2); dK / dV as one N = 128 wgmma per k step
// (A read once): 30.7 / 40.3; bulk reduce-adds staged in P / dS (a CTA read wait at the next tile's
// start): 31.1 / 38.3; staged per warpgroup with the read wait just before its P / dS stores (r3):
// 29.5 / 37.4; the exp step's key ids as int2, read under the products: LM row 197.2 -> 192.3
// ms/step (D = 64); atomic: no end-of-tile barrier (r4): 29.4 / 37.5 (29.2 / 37.5); bench (r4,
// `mslab-gpu-bench --attn --kernels ms,nd --from-len 65536 --max-len 131072 --reps 3`): ordered
// 100.5 / 216.1 ms at 64K / 128K, atomic 84.2 / 179.6 (s7: 110.3 / 233.4, 90.6 / 193.3; with the
// other helpers' s8 work); LM row 191.6. The adder warp (r5): 24.9 / 30.3 (345 / 283 TFLOP/s;
// the same build without it 29.4 / 37.3). Tried and removed (r3): K / V tiles by TMA (a box per
// 16-key granule and plane, lanes of warp 0, an mbarrier per stage; granules of no slot at row T:
// zeros): 34.1 / 41.8 (with bulk 32.0 / 41.8), LM 198.1.
// Tried and removed (s6): ORD releases deferred to the next tile (its fence then finds the adds
// done): 51.6 vs 44.0 ms (r2 perf row: the handoff waits a tile longer); the atomic mode on
// sorted lists: 32.6 vs 32.7 ms (no gain); D = 64 at 1 CTA per SM: LM 282.6 vs 251.9 ms/step.

// ORD's per-call state: places [B, H, CTAs, width] (sq_ord_pos), counters [B, KVH, nreg] and,
// after them, the timeout flag (cnt[flag])
struct SqOrd {
    const int *pos;
    int *cnt;
    int nreg;
    size_t flag;
    int hfast; // the grid (heads, CTAs): heads fastest in the launch order (else CTAs fastest)
    OrdWatch ow; // the host's report of a timeout (ord_watch.cuh; s13)
};
// The counters: relaxed loads / stores ordered by fences (fence.acq_rel.gpu): after the adds a
// barrier (the adds performed relative to the CTA), then the releasing thread fences (cumulative:
// it orders the CTA's adds it has observed) and stores; the waiter fences after the load that saw
// its value (the fence-fence pattern of sparse_bf16's ORD).
// waits until *cnt == v (relaxed polls; the caller fences); bounded (ow.tmo, 2^30 cycles: ~0.5
// s at 2 GHz): on a timeout it raises the flag, which ends every wait after it (a broken order
// costs one timeout, not one per tile), and the host's (ord_watch.cuh), which reports it
__device__ __forceinline__ void sq_wait(const int *cnt, int v, int *flag, const OrdWatch &ow) {
    long long t0 = clock64();
    while (ld_relaxed_gpu(cnt) != v) {
        if (*(volatile int *)flag) return;
        __nanosleep(20);
        if (clock64() - t0 > ord_tmo(ow)) {
            atomicExch(flag, 1);
            ord_timed_out(ow);
            return;
        }
    }
}

// SS m64n128k16 with A M-major and B N-major (the N = 128 form of flash_wgmma.cuh's wg_ss_tt_n64:
// B over both 64-column planes, desc_mn's leading byte offset)
__device__ __forceinline__ void wg_ss_tt_n128(float (*d)[4], uint64_t da, uint64_t db, int acc) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, %64, %65, p, 1, 1, 1, 1;\n}\n"
                 : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]), "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]), "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])
                 : "l"(da), "l"(db), "r"(acc));
}

// BULK: one 16-row box [16 keys][32 fp32 columns] (128-byte rows, 128-byte swizzle) of a staged
// dK / dV tile reduce-added into the accumulators (a 3-d map: columns, key, slab) by the TMA unit
__device__ __forceinline__ void sq_bulk_add(const void *map, const float *src, int c0, int c1, int c2) {
    asm volatile("cp.reduce.async.bulk.tensor.3d.global.shared::cta.add.tile.bulk_group"
                 " [%0, {%1, %2, %3}], [%4];\n" ::"l"(map), "r"(c0), "r"(c1), "r"(c2),
                 "r"(smem_u32(src)) : "memory");
    asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
}
// named barrier id over n threads: wait for all / arrive only
__device__ __forceinline__ void nbar_sync(int id, int n) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory");
}
__device__ __forceinline__ void nbar_arrive(int id, int n) {
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(n) : "memory");
}
template <bool READ> __device__ __forceinline__ void sq_bulk_wait() {
    if (READ) asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
    else asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory");
}

// Ordered mode (ORD; attn_bf16_deterministic()): the same kernel on the lists sorted by region
// id (sparse_sort_lists), its dK / dV adds per region in a FIXED order: the CTAs' launch order
// ((b, kv head) group; head; query rows latest first; hfast: rows latest first, then head),
// counting only CTAs whose rows reach the
// region (others add nothing: keys past the CTA's last row are not added). sq_ord_pos (one CTA
// per (b, kv head), one list after another in that order, a shared counter per region) gives
// each (CTA, slot) its place in its region's order (-1: adds nothing). Per tile, thread x < spt
// reads its region's counter before the tile's products (latency hidden) and, if it is not yet
// the CTA's place, polls it after them (relaxed loads, then a fence); a barrier; the CTA adds by
// red (D = 64) or bulk reduce-adds whose issuing lanes wait for their completion (wait_group 0;
// D = 128); a barrier, then the thread fences and stores place + 1 (relaxed).
// hfast (the default at D = 64; MSLAB_SQ_HFAST): the grid (heads, CTAs), heads fastest, so that
// the 16 CTAs of a 2048-row block (one list) do not run side by side queueing for each other
// every tile. D = 64 (LM row, H = 12, 2 CTAs per SM; s7 r4): 198.6 vs 219.0 ms/step. D = 128
// (perf row, H = 32; s7 r3): 52.5 vs 41.4 ms (the same without waits 53.4: the lost L2 reuse of
// the list's K / V tiles and of the reds' lines costs more than the queue; the atomic mode heads
// fastest 50.2 vs 32.7).
// A CTA waits only for CTAs launched before it; waits are bounded and a timeout raises a flag
// that ends every later wait (a broken order: wrong dk / dv, not a hang) and the host's, which
// reports it (ord_watch.cuh; the GPU tests fail a row on it).
// Sorted lists walked upwards: a later block has fewer listed regions below r than an earlier
// one, so it reaches r first, the order the adds take (sparse_bf16's ORD lesson: 82 vs 314 ms).
template <int D, bool ORD, int MINB>
__global__ void __launch_bounds__(D == 128 ? 384 : 256, MINB)
    sq_fused_kernel(bf16 *dq, float *acck, float *accv, const bf16 *dout, const float *lse,
                    const float *Di, const bf16 *q, const bf16 *k, const bf16 *v, int T, int H,
                    int KVH, float sl2, float scale, SpArgs sp, SqOrd od, int bk0,
                    const __grid_constant__ CUtensorMap amap, int vslab) {
    static_assert(D == 64 || D == 128, "dK / dV: N = D in 64-column halves");
    constexpr int NT = 256, BQ = 128, BK = 64, DN = D / 8, NN = BK / 8;
    constexpr bool BULK = D == 128; // dK / dV by bulk reduce-adds from an adder warp (D = 64: reds)
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    bf16 *Qs = (bf16 *)smem_base1k(smem_raw), *dOs = Qs + BQ * D, *Ks = dOs + BQ * D;
    bf16 *Vs = Ks + 2 * BK * D, *Ps = Vs + 2 * BK * D, *dSs = Ps + BQ * BK;
    float *Xs = (float *)(dSs + BQ * BK); // BULK, D = 128: half of each warpgroup's staging
    int *kid = (int *)(Xs + (BULK ? BK * D : 0)); // [2][BK] key of each tile row (INT_MAX: none)
    __shared__ int nvalid;
    // BULK: a 9th warp, the adder, issues the bulk adds (and in ORD waits for the CTA's turn and
    // releases): the compute warps hand it each tile's staging (barrier STG: box keys, ORD places /
    // regions in ainfo) and rewrite P / dS once it has read the staging (barrier FREE)
    __shared__ int ainfo[13]; // [4] first key of each 16-key row block, [4] places, [4] regions, done
    constexpr int STG = 7, FREE = 6, CB = 5, NA = NT + 32;
    auto cbar = [&]() { // the compute warps' barrier
        if (BULK) nbar_sync(CB, NT);
        else __syncthreads();
    };

    // the launch covers the (b, kv head)s from bk0 (their heads' rows; accumulators [bk - bk0])
    // grid (CTAs, heads); ORD with hfast: (heads, CTAs), heads fastest
    bool hf = ORD && od.hfast;
    int nqb = hf ? gridDim.y : gridDim.x, cx = hf ? blockIdx.y : blockIdx.x;
    int bh = (hf ? blockIdx.x : blockIdx.y) + bk0 * (H / KVH), b = bh / H, h = bh % H;
    int kvh = h / (H / KVH);
    int q0 = (nqb - 1 - cx) * BQ; // latest (fullest lists) first
    size_t ldq = (size_t)H * D, ldk = (size_t)KVH * D;
    const bf16 *qb = q + (size_t)b * T * ldq + (size_t)h * D;
    const bf16 *db = dout + (size_t)b * T * ldq + (size_t)h * D;
    const bf16 *kb = k + (size_t)b * T * ldk + (size_t)kvh * D;
    const bf16 *vb = v + (size_t)b * T * ldk + (size_t)kvh * D;
    const int *lst = sp.idx + (((size_t)b * H + h) * sp.nblk + q0 / sp.qblock) * sp.width;
    int rsh = sp.region == 16 ? 4 : 5, spt = BK >> rsh; // slots per tile
    // ORD: this CTA's place in each slot's region order; the (b, kv head)'s region counters
    const int *opos = ORD ? od.pos + (((size_t)b * H + h) * nqb + q0 / BQ) * sp.width : NULL;
    int *ocnt = ORD ? od.cnt + ((size_t)b * KVH + kvh) * od.nreg : NULL;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    int wg = warp >> 2, wl = warp & 3;
    int wr0 = q0 + wg * 64, rw0 = wr0 + wl * 16 + g;
    // BULK: warpgroup wg stages its array (dV / dK) [64 keys][D] fp32 as boxes [16 keys][32
    // columns] (1024-byte aligned), row block w (keys 16 w..: D / 32 boxes) at float offset
    // w D / 32 * 512 of the concatenation of its own rows of Ps and dSs (8 KB each; D = 128: and
    // its half of Xs): it rewrites them next tile once the adder has read them (FREE)
    auto rowblk = [&](int w, int wgi) {
        int off = w * (D / 32) * 512;
        return off < 2048 ? (float *)(Ps + wgi * 4096) + off
               : off < 4096 ? (float *)(dSs + wgi * 4096) + off - 2048 : Xs + wgi * 4096 + off - 4096;
    };
    size_t bkl = (size_t)b * KVH + kvh - bk0; // this launch's (b, kv head)
    float l2[2], di[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int row = rw0 + 8 * r;
        size_t li = ((size_t)b * H + h) * T + row;
        l2[r] = row < T ? lse[li] * WG_LOG2E : INFINITY;
        di[r] = row < T ? Di[li] : 0.f;
    }
    if (threadIdx.x == 0) nvalid = sp.width, ainfo[12] = 0;
    __syncthreads();
    for (int s = threadIdx.x; s < sp.width; s += NT)
        if (__ldg(lst + s) < 0) atomicMin(&nvalid, s);
    __syncthreads();
    int nv = nvalid, ntile = (nv + spt - 1) / spt;
    // BULK: a third warpgroup (launched with 168 registers a thread) gives its registers back (its
    // warps past the first end), the compute warpgroups take 224
    if constexpr (BULK) if (wg == 2) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
        if (warp > NT / 32) return;
        // the adder: lane = warpgroup (16 x) + box
        int wgi = lane >> 4, bx = lane & 15;
        for (;;) {
            nbar_sync(STG, NA);
            if (ainfo[12]) break;
            int mp = ORD && lane < spt ? ainfo[4 + lane] : -1, mr = ORD ? ainfo[8 + (lane & 3)] : 0;
            if (ORD && mp > 0) {
                sq_wait(ocnt + mr, mp, od.cnt + od.flag, od.ow);
                fence_acq_rel_gpu();
            }
            __syncwarp();
            int key = ainfo[bx / (D / 32)];
            if (key < T && key < q0 + BQ)
                sq_bulk_add(&amap, rowblk(bx / (D / 32), wgi) + bx % (D / 32) * 512,
                            bx % (D / 32) * 32, key, (wgi ? 0 : vslab) + (int)bkl);
            sq_bulk_wait<true>();
            nbar_arrive(FREE, NA); // the staging read: P / dS may be rewritten
            if (ORD) {
                sq_bulk_wait<false>(); // the adds performed
                __syncwarp();
                if (mp >= 0) fence_acq_rel_gpu(), st_relaxed_gpu(ocnt + mr, mp + 1);
            }
        }
        sq_bulk_wait<false>();
        return;
    }
    if constexpr (BULK) asm volatile("setmaxnreg.inc.sync.aligned.u32 224;\n" ::: "memory");
    bool afree = true; // BULK: no staging handed over yet

    auto load_tile = [&](int j, int buf) {
        bf16 *Kd = Ks + buf * BK * D, *Vd = Vs + buf * BK * D;
    // (D = 128: unrolled, the list loads issue together; D = 64 keeps its 128 registers)
#pragma unroll(D == 128 ? 4 : 1)
        for (int it = 0; it < BK * (D / 8) / NT; it++) {
            int i = threadIdx.x + it * NT, p = i / (D / 8), ch = i % (D / 8);
            int s = j * spt + (p >> rsh), r = s < nv ? __ldg(lst + s) : -1;
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
        cbar(); // tile j landed (and its key ids)
        // a tile wholly after the CTA's last row (the own block's later regions) adds nothing
        const int *kt = kid + (j & 1) * BK;
        int kmin = __reduce_min_sync(0xffffffffu, min(kt[lane], kt[lane + 32])); // INT_MAX: none
        if (kmin > q0 + BQ - 1) {
            cbar(); // (no buffer was read: only keeps the steps in lockstep)
            continue;
        }
        // ORD: thread x < spt reads its slot's place and region and (mp > 0) the region's counter
        // now: the load's latency hides behind the tile's products
        int ms = j * spt + threadIdx.x, mp = -1, mr = 0, mc = 0;
        if (ORD && threadIdx.x < spt && ms < nv) {
            mp = __ldg(opos + ms), mr = __ldg(lst + ms);
            if (mp > 0 && !BULK) mc = ld_relaxed_gpu(ocnt + mr);
        }
        const bf16 *Kt = Ks + (j & 1) * BK * D, *Vt = Vs + (j & 1) * BK * D;
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
        int2 kp[NN]; // the keys of the thread's columns 8 n + 2 tq (+ 1), read under the products
#pragma unroll
        for (int n = 0; n < NN; n++) kp[n] = *(const int2 *)(kt + n * 8 + 2 * tq);
        wg_wait<1>();
        wg_keep<BK>(s);
#pragma unroll
        for (int n = 0; n < NN; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int key = e & 1 ? kp[n].y : kp[n].x, row = rw0 + 8 * (e >> 1);
                float p = wg_ex2(fmaf(s[n][e], sl2, -l2[e >> 1]));
                s[n][e] = key > row ? 0.f : p; // causal; INT_MAX (no key) is after every row
            }
        uint32_t pa[BK / 16][4], da[BK / 16][4];
#pragma unroll
        for (int kk = 0; kk < BK / 16; kk++) {
            wg_pack_kk(pa[kk], s, kk);
        }
        wg_wait<0>();
        wg_keep<BK>(dp);
#pragma unroll
        for (int n = 0; n < NN; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[n][e] *= dp[n][e] - di[e >> 1];
        int r0 = wg * 64 + wl * 16 + g; // this thread's rows r0, r0 + 8 of the CTA
        if constexpr (BULK) { // the adder has read the previous staging
            if (!afree) nbar_sync(FREE, NA);
            afree = true;
        }
#pragma unroll
        for (int kk = 0; kk < BK / 16; kk++) {
            wg_pack_kk(da[kk], s, kk);
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
        cbar();             // both warpgroups' rows of P / dS
        // warpgroup 0: dV = P^T dO, 1: dK = dS^T Q; M = the tile's 64 keys, K = the 128 rows
        const bf16 *As = wg ? dSs : Ps, *Bs = wg ? Qs : dOs;
        float t[D / 8][4]; // columns 8n.. of the thread's rows wl * 16 + g (+ 8) of the 64 keys
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < BQ / 16; kk++) { // N = D (128: both planes of B, A read once)
            if constexpr (D == 128) wg_ss_tt_n128(t, desc_mn<BQ>(As, kk), desc_mn<BQ>(Bs, kk), kk);
            else wg_ss_tt_n64(t, desc_mn<BQ>(As, kk), desc_mn<BQ>(Bs, kk), kk);
        }
        wg_commit();
        wg_wait<0>();
        wg_keep<D>(acc);
        wg_keep<D>(t);
        if constexpr (BULK) { // the thread's fragment into its box rows (conflict-free float2s)
            cbar(); // both warpgroups' products read P / dS (and K / V, key ids): free
            float *st = rowblk(wl, wg) + g * 32 + 2 * (tq & 1);
#pragma unroll
            for (int n = 0; n < D / 8; n++)
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    int o = (n >> 2) * 512 + r * 256 + (((2 * (n & 3) + (tq >> 1)) ^ g) << 2);
                    *(float2 *)(st + o) = make_float2(t[n][2 * r], t[n][2 * r + 1]);
                }
            fence_async_smem(); // the staging stores before the TMA unit reads them
        }
        if constexpr (BULK) { // hand the staging to the adder
            if (threadIdx.x < 4) ainfo[threadIdx.x] = kt[threadIdx.x * 16];
            if (ORD && threadIdx.x < spt) ainfo[4 + threadIdx.x] = mp, ainfo[8 + threadIdx.x] = mr;
            nbar_arrive(STG, NA);
            afree = false;
            continue;
        }
        // (D = 64) ORD: the CTA's turn for each region of the tile; the reds
        if (ORD && mp > 0) {
            if (mc != mp) sq_wait(ocnt + mr, mp, od.cnt + od.flag, od.ow);
            fence_acq_rel_gpu();
        }
        if (ORD) __syncthreads();
        float *accw = wg ? acck : accv;
#pragma unroll
        for (int r = 0; r < 2; r++) {
            int key = kt[wl * 16 + g + 8 * r];
            if (key >= T || key >= q0 + BQ) continue; // past the CTA's rows: zeros
            float *pr = accw + (bkl * T + key) * D + 2 * tq;
#pragma unroll
            for (int n = 0; n < D / 8; n++) wg_red2(pr + 8 * n, t[n][2 * r], t[n][2 * r + 1]);
        }
        __syncthreads(); // P / dS, this K / V stage and its key ids free for tile j + 2
        if (ORD && mp >= 0) { // release: the barrier, then the releasing thread's fence
            fence_acq_rel_gpu();
            st_relaxed_gpu(ocnt + mr, mp + 1);
        }
    }
    cp_async_wait<0>(); // no tile: Q / dO loads still in flight
    if constexpr (BULK) { // the adder's last staging read, then its end
        if (!afree) nbar_sync(FREE, NA);
        if (threadIdx.x == 0) ainfo[12] = 1;
        nbar_arrive(STG, NA);
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

// ORD: each (CTA, slot)'s place in its region's add order (-1: the CTA adds nothing to it). One
// CTA per (b, kv head) walks the CTAs of its heads in launch order (head, rows latest first), a
// thread per slot (a list holds a region once), a counter per region in shared memory; the next
// U lists are loaded ahead (the walk is serial: only the shared counters carry over). base: the
// first place (0; the tests' stall 1: no CTA holds place 0, so every region's first wait times out)
__global__ void sq_ord_pos(int *pos, const int *sl, SpArgs sp, int T, int H, int KVH, int nqb,
                           int nreg, int hfast, int base) {
    extern __shared__ int rc[]; // [nreg]
    constexpr int U = 8;
    int bk = blockIdx.x, b = bk / KVH, kvh = bk % KVH, G = H / KVH, s = threadIdx.x;
    for (int i = s; i < nreg; i += blockDim.x) rc[i] = 0;
    __syncthreads();
    int nst = G * nqb;
    bool own = s < sp.width;
    for (int t0 = 0; t0 < nst; t0 += U) {
        int rr[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            int t = t0 + u, h = kvh * G + (hfast ? t % G : t / nqb);
            int q0 = (nqb - 1 - (hfast ? t / G : t % nqb)) * 128;
            size_t l = ((size_t)b * H + h) * sp.nblk + q0 / sp.qblock;
            rr[u] = own && t < nst ? __ldg(sl + l * sp.width + s) : -1;
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            int t = t0 + u, h = kvh * G + (hfast ? t % G : t / nqb);
            int x = nqb - 1 - (hfast ? t / G : t % nqb), r = rr[u];
            if (t >= nst) break;
            bool in = r >= 0 && r < nreg && r * sp.region <= x * 128 + 127;
            if (own) pos[(((size_t)b * H + h) * nqb + x) * sp.width + s] = in ? base + rc[r]++ : -1;
            __syncthreads();
        }
    }
}
// dk (times scale) / dv (bf16) of the (b, kv head)s [bk0, ..) from their accumulators [bk][T][D]
template <int D>
__global__ void sq_acc_out(bf16 *dk, bf16 *dv, const float *acck, const float *accv, int bk0,
                           size_t n4, int T, int KVH, float scale) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n4) return;
    size_t row = i * 4 / D;
    int t = (int)(row % T), bk = bk0 + (int)(row / T), b = bk / KVH, kvh = bk % KVH;
    size_t o = (((size_t)b * T + t) * KVH + kvh) * D + i * 4 % D;
    float4 x = __ldcs((const float4 *)acck + i), y = __ldcs((const float4 *)accv + i);
    *(uint2 *)(dk + o) = make_uint2(pack_bf16x2(x.x * scale, x.y * scale),
                                    pack_bf16x2(x.z * scale, x.w * scale));
    *(uint2 *)(dv + o) = make_uint2(pack_bf16x2(y.x, y.y), pack_bf16x2(y.z, y.w));
}

// the query-centric fused backward for 16 / 32-key regions (sq_fused_kernel): on by default
// (MSLAB_SPARSE_WGMMA_BWD=nosmall / sparse_wgmma_bwd_tune_small(0): off)
int wg_sp_small = 1;
// its modes beyond the atomic D = 128 one (bits): 1 the ordered mode (ORD), 2 D = 64; MSLAB_SQ_MODES overrides, sparse_wgmma_bwd_tune_small_modes
// (tests; -1: back to the default)
#define SQ_MODES_DEFAULT 3
static int sq_modes = -1;
static int sq_modes_get(void) {
    if (sq_modes < 0) {
        const char *e = getenv("MSLAB_SQ_MODES");
        sq_modes = e ? atoi(e) : SQ_MODES_DEFAULT;
    }
    return sq_modes;
}
// ORD's launch order: heads fastest (1) or CTAs fastest (0); by default heads fastest at D = 64
// only (s7 r4: LM row 198.6 vs 219.0 ms/step; D = 128, H = 32: 52.5 vs 41.4 ms, r3);
// MSLAB_SQ_HFAST overrides, sparse_wgmma_bwd_tune_small_hfast (tests; -1: back to the default)
static int sq_hfast = -2; // -2: not read yet, -1: the default
static int sq_hfast_get(int D) {
    if (sq_hfast == -2) sq_hfast = getenv("MSLAB_SQ_HFAST") ? atoi(getenv("MSLAB_SQ_HFAST")) : -1;
    return sq_hfast < 0 ? D == 64 : sq_hfast;
}
// sq_fused_kernel<D, ORD, MINB> on grid (D = 128: 384 threads, the third warpgroup's first warp
// the adder)
template <int D, bool ORD, int MINB>
static void sq_fused_launch(dim3 grid, size_t smem, bf16 *dq, float *acck, float *accv,
                            const bf16 *dout, const float *lse, const float *Di, const bf16 *q,
                            const bf16 *k, const bf16 *v, int T, int H, int KVH, float sl2,
                            float scale, SpArgs sp, SqOrd od, int bk0, const CUtensorMap &amap,
                            int vslab) {
    auto kernel = sq_fused_kernel<D, ORD, MINB>;
    static bool init = false;
    if (!init) smem_optin(kernel, smem), init = true;
    kernel<<<grid, D == 128 ? 384 : 256, smem>>>(dq, acck, accv, dout, lse, Di, q, k, v, T, H, KVH, sl2, scale, sp,
                                od, bk0, amap, vslab);
    cudaLaunchCheck();
}
// Its fp32 dK / dV accumulators (8 B per key row element) are capped (12 GB: T = 256K at B = 1,
// KVH = 32, D = 128; MSLAB_SPARSE_WGMMA_ACC_MB overrides): past it sparse_bf16's chunked one runs.
// ORD also needs a list of <= 1024 slots (a thread each in sq_ord_pos) and the region counters
// of one (b, kv head) in shared memory (T <= 640K at 16-key regions).
static bool small_ok(const AttnIndex *ix, int B, int T, int KVH, int D) {
    static double cap_mb = -1;
    if (cap_mb < 0) {
        const char *e = getenv("MSLAB_SPARSE_WGMMA_ACC_MB");
        cap_mb = e ? atof(e) : 12288.0;
    }
    int m = sq_modes_get(), nreg = (T + ix->region - 1) / ix->region;
    bool ord = attn_bf16_deterministic();
    return wg_sp_small && (D == 128 || (D == 64 && (m & 2))) &&
           (!ord || ((m & 1) && ix->width <= 1024 && nreg <= 40960)) &&
           (ix->region == 16 || ix->region == 32) && ix->qblock % 128 == 0 && !ix->window &&
           8.0 * B * T * KVH * D <= cap_mb * 1048576.0;
}
template <int D>
static void small_launch(bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *out,
                         const float *lse, const bf16 *q, const bf16 *k, const bf16 *v,
                         const AttnIndex *ix, int B, int T, int H, int KVH) {
    bool ord = attn_bf16_deterministic(), sorted = ord;
    int nqb = (T + 127) / 128, nreg = (T + ix->region - 1) / ix->region;
    // the accumulators of cbk (b, kv head)s at a time (one launch each; wg_acc_group's budget: at
    // H = KVH = 32, D = 128 one launch to 32K, two at 64K, four at 128K)
    size_t nbk = (size_t)B * KVH, perbk = 2 * (size_t)T * D * 4;
    size_t cbk = wg_acc_group(B, T, H, KVH, D, perbk, nbk), nkc = cbk * T * D;
    size_t rows = (size_t)B * T * H, acc_off = align256(rows * 4);
    size_t nl = (size_t)B * H * ix->nblk, sl_off = acc_off + 2 * align256(nkc * 4);
    size_t pos_off = sl_off + (sorted ? align256(nl * ix->width * 4) : 0);
    size_t ncnt = (size_t)B * KVH * nreg, cnt_off = pos_off + align256((size_t)B * H * nqb * ix->width * 4);
    char *ws = (char *)wg_bwd_scratch(ord ? cnt_off + align256((ncnt + 1) * 4) : pos_off);
    float *Di = (float *)ws, *acck = (float *)(ws + acc_off);
    float *accv = (float *)(ws + acc_off + align256(nkc * 4));
    wg_bwd_pre<D><<<wg_bwd_pre_blocks(rows, D), 256>>>(Di, dout, out, B, T, H);
    cudaLaunchCheck();
    SpArgs sp = {};
    sp.idx = ix->idx, sp.nblk = ix->nblk, sp.width = ix->width, sp.qblock = ix->qblock;
    sp.region = ix->region;
    SqOrd od = {};
    if (sorted) {
        sparse_sort_lists((int *)(ws + sl_off), ix->idx, nl, ix->width);
        sp.idx = (const int *)(ws + sl_off);
    }
    if (ord) {
        od.pos = (const int *)(ws + pos_off), od.cnt = (int *)(ws + cnt_off), od.nreg = nreg;
        od.flag = ncnt, od.hfast = sq_hfast_get(D), od.ow = ord_watch(ATTN_ORD_SQ, 1ll << 30);
        cudaCheck(cudaMemsetAsync(od.cnt, 0, (ncnt + 1) * 4, 0));
        static int init_pos = 0;
        if (!init_pos) smem_optin(sq_ord_pos, 40960 * 4), init_pos = 1;
        sq_ord_pos<<<B * KVH, (ix->width + 31) / 32 * 32, nreg * 4>>>(
            (int *)od.pos, sp.idx, sp, T, H, KVH, nqb, nreg, od.hfast, ord_stall());
        cudaLaunchCheck();
    }
    float scale = 1.f / sqrtf((float)D), sl2 = WG_LOG2E * scale;
    bool bulk = D == 128; // sq_fused_kernel's BULK (+ 32 KB: half of each warpgroup's staging)
    size_t smem = 1024 + sizeof(bf16) * (size_t)(2 * 128 * D + 4 * 64 * D + 2 * 128 * 64) +
                  sizeof(int) * 2 * 64 + (bulk ? sizeof(float) * 64 * D : 0);
    // D = 64: 2 CTAs per SM (<= 128 registers; r1 LM row, ordered: 251.9 ms/step vs 282.6 at 1)
    constexpr int MINB = D == 64 ? 2 : 1;
    auto launch = ord ? sq_fused_launch<D, true, MINB> : sq_fused_launch<D, false, MINB>;
    // BULK: the accumulators (dK slabs [cbk][T][D], then dV's) as a 3-d map (D, T, 2 cbk) fp32,
    // box 32 columns x 16 keys, 128-byte swizzle (keys past T clipped)
    CUtensorMap amap;
    memset(&amap, 0, sizeof amap);
    size_t ad[3] = {(size_t)D, (size_t)T, 2 * cbk}, as[2] = {(size_t)D * 4, (size_t)T * D * 4};
    int ab[3] = {32, 16, 1};
    if (bulk)
        MS_ASSERT(wg_acc_map(&amap, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 3, (void *)acck, ad, as, ab),
                  "sparse_wgmma_small_bwd: the accumulators' tensor map");
    for (size_t bk0 = 0; bk0 < nbk; bk0 += cbk) {
        size_t n = nbk - bk0 < cbk ? nbk - bk0 : cbk;
        cudaCheck(cudaMemsetAsync(acck, 0, 2 * align256(nkc * 4), 0));
        dim3 grid(nqb, (unsigned)(n * (H / KVH)));
        if (od.hfast) grid = dim3(grid.y, grid.x);
        launch(grid, smem, dq, acck, accv, dout, lse, Di, q, k, v, T, H, KVH, sl2, scale, sp, od,
               (int)bk0, amap, (int)cbk);
        size_t n4 = n * T * D / 4;
        sq_acc_out<D><<<cdiv_u(n4, 256), 256>>>(dk, dv, acck, accv, (int)bk0, n4, T, KVH, scale);
        cudaLaunchCheck();
    }
    // (a timed-out wait: the host's flag, reported by attn_bf16_ord_check; s13 removed
    // MSLAB_SQ_CHECK's synchronous read of the device flag)
}

// tests / timing: sq_fused_kernel on (1, the default) / off (0); its modes (bits as sq_modes; -1:
// the default)
extern "C" void sparse_wgmma_bwd_tune_small(int on) { wg_sp_small = on; }
extern "C" void sparse_wgmma_bwd_tune_small_modes(int bits) {
    sq_modes = bits;
    if (bits < 0) sq_modes_get();
}
// ORD's launch order: 1 heads fastest, 0 CTAs fastest (-1: the default)
extern "C" void sparse_wgmma_bwd_tune_small_hfast(int on) { sq_hfast = on < 0 ? -2 : on; }

int sparse_wgmma_small_bwd(bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *out,
                           const float *lse, const bf16 *q, const bf16 *k, const bf16 *v,
                           const AttnIndex *ix, int B, int T, int H, int KVH, int D) {
    if (sparse_wgmma_keys_bwd(dq, dk, dv, dout, out, lse, q, k, v, ix, B, T, H, KVH, D) == 0)
        return 0;
    if (!small_ok(ix, B, T, KVH, D)) return -1;
    if (D == 64) small_launch<64>(dq, dk, dv, dout, out, lse, q, k, v, ix, B, T, H, KVH);
    else small_launch<128>(dq, dk, dv, dout, out, lse, q, k, v, ix, B, T, H, KVH);
    return 0;
}
