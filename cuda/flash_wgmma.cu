// flash_wgmma.cu: dense causal grouped-query flash attention in bf16 on Hopper's wgmma
// (warpgroup MMA, sm_90a; the Makefile builds this one file with -gencode arch=compute_90a,
// code=sm_90a), and the block-sparse forward over an index list (sparse_wgmma_fwd, the same
// kernel body with a list key-tile source; see fwd3_wg_body and the end of this file).
// Contract: cuda/attn_bf16.h (flash_wgmma_fwd / _bwd = flash_bf16_fwd / _bwd's, sparse_wgmma_fwd
// = sparse_bf16_fwd's); -1 (nothing launched) for D other than 64 / 128, H % KVH != 0, or a GPU
// other than sm_90 (the backward is in flash_wgmma_bwd.cu).
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
//   query rows), query tiles heaviest first. Warp-specialised (fwd3_kernel, FA3's structure): a
//   producer warp loads Q and the K / V ring with TMA (128-byte swizzle = the planar layout),
//   per-slot full / empty mbarriers, no CTA barrier in the loop, so the consumer warpgroups
//   drift apart and one's softmax overlaps the other's products; inside a warpgroup S_j and
//   P_{j-1} V_{j-1} are issued together (at D 128 S_j's softmax does not run under that P V
//   product: ptxas hoists the wait_group 0 to the top of the softmax's basic block; s11 forced
//   the order and measured no gain, see the s11 notes at the sparse host code; D 64 forces it
//   since s14: OPT, below). Tiling 11
//   (the only one since s6): 3 consumer warpgroups (192 rows) and a producer warpgroup,
//   setmaxnreg 32 / 160, 64-key tiles, 4 ring slots (D 64: tiling 16, 128-key tiles, 3 slots).
//   History: fwd_kernel (cp.async double buffer, S, softmax, P V in sequence: 6.2-6.8 ms at
//   16K) and fwd2_kernel (the in-warpgroup overlap on a 3-slot cp.async ring: 5.7 ms) lost to
//   fwd3 (5.0 ms in r3, 3.48 ms as tiling 11 in s5) and were removed in s6 with fwd3's other
//   tilings (figures in the tilings comment at flash_wgmma_tune).
//   The S_j / P_{j-1} V_{j-1} overlap packs P_j into bf16 only after P_{j-1} V_{j-1} retired
//   (wg_pack after wgmma.wait_group 0, as FA3): packed while that RS wgmma was in flight, ptxas
//   gave the new fragments the registers it still read and serialised the wgmma pipeline
//   ("C7513 ... serialized due to non wgmma instructions defining input registers"; gone
//   since s5); the V wait inside the stage is followed by an explicit wgmma.fence (ptxas
//   injected one: C7519).
//   Per-tile instruction count (s11; ncu source counters: each consumer warp issued ~385
//   instructions a tile, ~125 of them address / descriptor math): the wgmma descriptors are a
//   base plus a compile-time constant (the bases once, in uniform registers), O's rescale is
//   skipped where no row of a warp changed its max (D 128; alpha = 1: the same bits), and the
//   producers' ring waits carry a suspend-time hint (they retried try_wait ~50-85 times a tile).
//   Dense 32K (the tests' row): 14.34 -> 12.69-12.94 ms (613 -> 680-693 TFLOP/s), the same bits.
//   D 64 (s14; the LM's heads: a 64 x 128 tile's exponentials take the MUFU as long as its two
//   products take the tensor cores, 512 cycles each per warpgroup, so their overlap sets the
//   pace): OPT 1 (SO) keeps S_j's softmax under P_{j-1} V_{j-1} (V_j's wait moved after the
//   softmax: its wait loop ends the basic block, and wait_group 0 stays below the MUFUs in the
//   SASS) and OPT 8 (SB, FA3's scheduler barrier) lets the consumer warpgroups issue their
//   products in turn, OPT 2 (TM) takes the row max as a tree; the same bits (out / lse hashes
//   equal). Dense D 64 (tiling 16 = 13 + all three) and the D 64 list path with 128-key tiles use
//   them (figures at the sparse host code and the tilings).
// Synchronisation: TMA writes and wgmma reads are both async proxy: the mbarriers order them.
//
// flash_wgmma_tune (not in the header; the tests' timing rows use it) picks the tiling per
// kernel (the forward's value only at D = 64 since s7: D 128 has one); MSLAB_FLASH_WGMMA_TUNE=
// "fwd,dkdv,dq" overrides the defaults at the first call. D 64 has its own defaults (s7, the 162M
// LM's head dim: 128-key forward tiles, 3 dK/dV CTAs per SM, 2 dQ CTAs per SM of 2 warpgroups;
// tilings and figures at flash_wgmma_tune).
// Measured (H200, B=1, H=KVH=32, D=128, causal; mslab-gpu-bench, s5 r2, after the C7513 fix,
// tiling 7): fwd 4.01 / 17.3 ms at 16K / 32K (549 / 508 TFLOP/s; before the fix 4.91 / 23.5 =
// 448 / 375; flash_bf16 7.12 / 28.8); fwd+bwd with the s5 r2 defaults 21.0 / 88.9 ms (367 /
// 346). s5 r4: tiling 11 (3 consumer warpgroups, the default since) 3.48 ms at 16K (631 TFLOP/s;
// 7: 3.98 = 553), the test's timing rows. s6 r1 / r2, after the pruning (the other tilings
// removed; parity unchanged): 3.43 / 3.44 ms (641 / 639 TFLOP/s), the same rows.
// Block-sparse forward (sparse_wgmma_fwd; s5 r3, 32K, H = 32, D = 128, lists by select_bf16,
// the forward alone, 4 flops x D per visible pair): ms paper (w 16, top 512, merge 128) 8.66 ms
// = 397 TFLOP/s with 192-row CTAs (128-row: 10.8 ms = 318; sparse_bf16_fwd 14.7 ms = 234);
// moba-blk (region 128, 1/16 + own) 2.55 ms = 431 (sparse_bf16 4.94 = 222). The same 8192
// keys a list in regions of 32 / 64 keys: 7.1 / 6.6 ms (482 / 523): w = 16 is bound by its
// 16-row TMA boxes (16 a tile). Bench rows (r3, fwd incl. the selection): 64K ms 33.1 ms
// (select 10.5), moba-blk 9.86 ms (select 0.64). s6 r2: 16-key granules in grouped tiles (a
// box per granule for both planes, 8 a tile, issued by 4 lanes): ms paper 8.55 -> 7.46 ms (402
// -> 461 TFLOP/s; the tests' timing rows); final code (r3): 6.85 ms (502) vs 8.77 planar in the
// same run. s9 (r6, the tests' rows, H200): 6.17 ms (557 TFLOP/s) at 32K, 27.4 ms (547) at 128K
// (s8: 6.85 / 30.0-30.7); w 64 lists 6.20 ms (554), moba-blk 2.35 ms (467): the list producer
// warp, not the boxes, had set the pace (MSLAB_FWD3_TRACE; history at the sparse host code at
// the end of this file).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>

#include <cuda.h> // CUtensorMap (the encode function comes through cudaGetDriverEntryPoint)

#include "cuda_common.cuh"
#include "flash_wgmma.cuh"
extern "C" {
#include "attn_bf16.h"
}

// ---------------------------------------------------------------------------------------------
// forward building blocks
// causal / tail mask of the dense key tile k0 .. k0 + BKc - 1 (only diagonal / tail tiles)
template <int NN>
__device__ __forceinline__ void dense_mask(float (*s)[4], int k0, int BKc, int wr0, int rw0, int tq,
                                           int T) {
    if (k0 + BKc - 1 > wr0 || k0 + BKc > T) {
#pragma unroll
        for (int n = 0; n < NN; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int key = k0 + n * 8 + 2 * tq + (e & 1), r = rw0 + 8 * (e >> 1);
                if (key > r || key >= T) s[n][e] = -INFINITY;
            }
    }
}
// online softmax of a masked score tile: s becomes P (fp32, in place); m, l, alpha updated.
// Packing P into the bf16 A fragments of P V is a separate step (wg_pack): fwd3 packs only after
// the previous P V product has retired, as FA3 does: a pack while an RS wgmma is in flight lets
// ptxas give the new fragments the registers the wgmma still reads, and it then serialises the
// wgmma pipeline (C7513).
// TREE: the row max as a tree (depth log2 2 NN, was a chain of NN): max is exact and fmaxf drops
// NaNs in any order, so the same value (the -inf seed last: a row of NaNs still gives -inf)
template <int NN, bool TREE = false>
__device__ __forceinline__ void wg_softmax(float (*s)[4], float *m, float *l, float *alpha,
                                           float sl2) {
#pragma unroll
    for (int r = 0; r < 2; r++) {
        float mx = -INFINITY;
        if constexpr (TREE) {
            float t[NN];
#pragma unroll
            for (int n = 0; n < NN; n++) t[n] = fmaxf(s[n][2 * r], s[n][2 * r + 1]);
#pragma unroll
            for (int w = 1; w < NN; w <<= 1)
#pragma unroll
                for (int n = 0; n + w < NN; n += 2 * w) t[n] = fmaxf(t[n], t[n + w]);
            mx = fmaxf(t[0], mx);
        } else {
#pragma unroll
            for (int n = 0; n < NN; n++) mx = fmaxf(mx, fmaxf(s[n][2 * r], s[n][2 * r + 1]));
        }
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
            s[n][2 * r] = p0, s[n][2 * r + 1] = p1;
            rs += p0 + p1;
        }
        l[r] = l[r] * alpha[r] + rs;
    }
}
template <int NN> __device__ __forceinline__ void wg_pack(const float (*s)[4], uint32_t (*pk)[2]) {
#pragma unroll
    for (int n = 0; n < NN; n++)
        pk[n][0] = pack_bf16x2(s[n][0], s[n][1]), pk[n][1] = pack_bf16x2(s[n][2], s[n][3]);
}
// ---------------------------------------------------------------------------------------------
// forward, warp-specialised (FA3's structure): NWG consumer warpgroups (64 query rows each) and
// one producer warp (warp 4 NWG) that loads Q once and K / V tiles into an NS-slot ring with TMA
// (128-byte swizzle: the planar layout above), signalling per-slot "full" mbarriers (the
// transaction bytes); consumers release a slot through its "empty" mbarrier (one arrive per
// consumer warp after its wgmma.wait_group). No CTA-wide barrier in the loop, so the warpgroups
// drift apart and one's softmax overlaps the other's products. Inside a warpgroup S_j = Q K_j^T
// and O += P_{j-1} V_{j-1} are issued back to back, the warpgroup waits for S_j only and runs its
// softmax while the tensor cores still run the P V product. K and V have separate barriers: S_j
// may start before V_j has landed.
// One body, two key-tile sources (LIST):
//   dense: tile j = keys j BK .. (one box per 64-column plane), masked on diagonal / tail tiles;
//   list (the block-sparse forward, sparse_wgmma_fwd): CTA = BQ rows of one query block; the
//     producer warp walks the block's index list 32 slots at a time (warp scan of each slot's
//     visible granules), packs granules of G = gcd(region, 64) keys (16 / 32 / 64) into 64-key
//     tiles, one TMA box of G rows per granule (a map with box height G), and writes the tile's
//     info (granules, min / max key position, the granules' first keys) into a ring of 2 NS
//     entries before the tile's "full" arrive. Consumers mask by position (key j visible to row
//     t iff j <= t and, with a window, j > t - window), only in tiles whose min / max say some
//     key may be hidden from a warp's rows (the causal edge, padding). Padding granules load the
//     tile's first granule again, at position LIST_PAD (masked: P = 0 times finite values). The
//     end of the walk is a sentinel tile (0 granules: a plain arrive on "full"). Info entry j is
//     rewritten for tile j + 2 NS, after the producer waited "kempty" of tile j + NS, which
//     every consumer warp arrives after its softmax of tile j.
//   X = 2 (s6; lists of 16-key granules, D 128, T % 8 == 0, the only layout there; s14: D 64,
//     where a granule's planar 16-row box is already one box, so only the producer is X 2's): K and V
//     tiles as [8-row group][plane][8][64] (the wgmma descriptors step 8 rows by 2048 bytes, the
//     second plane 1024 bytes on), so one 5-d box (ki / vi maps) lands a granule in both planes:
//     4 + 4 copies a w 16 tile instead of 8 + 8, issued by lanes 0 .. 3 at once (lane 0 alone
//     issued them slower than the 8 + 8: r2, ms paper 9.59 vs 8.55 ms).
//   The producer's per-tile work is kept short (s9): it shares an SM sub-partition with three
//     consumer warps that take most issue slots, so each of its instructions waits; with per-key
//     positions (two stores a lane, ten shuffles) and a fence a tile it was busy ~94% of the time
//     and set the pace (trace, r2: positions 40% of its cycles, K issue 19%, V issue 14%).
//     Lane 0 now writes the tile's granule first keys (<= 4) and min / max, and its arrive on
//     "full" (release; the consumers' wait: acquire) publishes them; the consumers derive key
//     positions from them in the rare masked tiles. VW (grouped tiles with a producer
//     warpgroup): a second producer warp issues the V copies (it waits for the tile's granules
//     to be published, then reads them). s11: with X 2 lanes 0-3 write a tile's keys (min / max
//     by two shuffles, LI), and with VW the walker emits full tiles in batches of up to 8 (BW:
//     lane 4 t + i holds granule i of tile t, min / max shuffled once a batch; per tile lane 4 t
//     waits, the 4 lanes write their keys and issue their K copies, lane 4 t publishes): the
//     walker was ~90% busy and set the pace once the consumers got faster (trace, s11 r4).
// LIST only: ki / vi: boxes of G rows in 8-row groups x both planes (X = 2)
struct Fwd3Maps {
    CUtensorMap q, k, v, ki, vi;
};
// the list source's arguments (the dense source ignores them)
struct Fwd3List {
    const int *idx;
    int qblock, nblk, region, width, window, nsub, G, gsh; // gsh = log2 G
    unsigned long long *trace; // TR: FT3_REC words per CTA (fwd3_trace_report)
};
// TR (MSLAB_FWD3_TRACE=1): per CTA, thread 0 / the producer's lane 0 record FT3_REC words:
// globaltimer at start / end, then clock64 cycles: startup (to tile 0 landed), loop, epilogue,
// consumer waits on "full" K / V (warp 0), producer waits on "empty", producer total, tiles, smid,
// then the producer's sections (LIST): tile info, K copies issued, V "empty" wait, V copies issued
#define FT3_REC 16
__device__ __forceinline__ unsigned long long fwd3_gtime() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
// 5-d tile load (the v2 map: coordinates column, row, plane, head, batch)
__device__ __forceinline__ void tma_load_5d(void *dst, const void *tmap, uint64_t *bar, int c0,
                                            int c1, int c2, int c3, int c4) {
    asm volatile("cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
                 " [%0], [%1, {%2, %3, %4, %5, %6}], [%7];\n" ::"r"(smem_u32(dst)),
                 "l"(tmap), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(c4), "r"(smem_u32(bar))
                 : "memory");
}
#define LIST_PAD 0x3fffffff // position of a padding key: after every row
#define LIST_GBUF 2056      // granule buffer: 32 slots x 64 granules + a partial tile

template <int D, int NWG, int BK, int NS, int PWG, bool LIST, int X, bool TR, bool VW, int OPT>
__device__ __forceinline__ void fwd3_wg_body(const Fwd3Maps &maps, const Fwd3List &sp, bf16 *out,
                                             float *lse, int T, int H, int KVH, float sl2) {
    constexpr int BQ = 64 * NWG, DN = D / 8, NN = BK / 8, NP = D / 64;
    // X 2 (GT = BK / 16 granules a tile): lanes 0 .. GT - 1 write a tile's info (LI); with VW the
    // walker emits full tiles in batches of 32 / GT (BW); KIS: ints per tile info entry
    constexpr int GT = BK / 16, KIS = 4 + BK / 16;
    constexpr bool LI = LIST && X == 2, BW = LI && VW;
    // OPT 1 (SO): S_j's softmax under P_{j-1} V_{j-1}: V_j's wait moves from before P_j V_j's
    // issue to after S_j's softmax, where its wait loop ends the basic block (ptxas otherwise
    // moves wait_group 0 above the softmax); the same arithmetic
    constexpr bool SO = OPT & 1;
    // OPT 2 (TM): the row max as a tree (wg_softmax TREE; the same value); OPT 8 (SB, FA3's
    // scheduler barrier): the consumer warpgroups issue their products in turn (named barrier
    // 1 + w: warpgroup w waits for its turn, issues S_j and P_{j-1} V_{j-1}, passes the turn on),
    // so one's softmax runs while the next one's products do
    constexpr bool TM = OPT & 2, SB = (OPT & 8) && NWG >= 2;
    static_assert(!VW || (LIST && PWG && X == 2), "VW: the list source, grouped tiles, a producer warpgroup");
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    bf16 *Qs = (bf16 *)smem_base1k(smem_raw), *Ks = Qs + BQ * D, *Vs = Ks + NS * BK * D;
    uint64_t *bar = (uint64_t *)(Vs + NS * BK * D); // qfull, kfull[NS], vfull[NS], kempty, vempty
    uint64_t *qfull = bar, *kfull = bar + 1, *vfull = kfull + NS, *kempty = vfull + NS,
             *vempty = kempty + NS;
    // VW: ginfo[2 NS], a tile's granules published (the V warp's wait: one barrier per position
    // of the 2 NS-deep info ring, so the walker, never 2 NS tiles ahead of it, cannot alias a phase)
    uint64_t *ginfo = vempty + NS;
    // LIST: [2 NS][KIS]: granules, min, max position, -, the granules' first keys (LIST_PAD:
    // padding); 16-byte aligned (the consumers read the first four as an int4)
    int *kinf = (int *)(bar + 2 + 6 * NS);
    int *gbuf = kinf + 2 * NS * KIS; // LIST: granule first keys (producer)

    // grid: dense (B H, query tiles); LIST (blocks x sub-tiles, B H): a head's CTAs run together
    // (its K / V stay in L2; a block's sub-tiles read the same regions)
    int bh = LIST ? blockIdx.y : blockIdx.x;
    int b = bh / H, h = bh % H, kvh = h / (H / KVH);
    int q0, t1, nkt = 0;
    const int *list = NULL;
    if (LIST) { // later blocks first
        int c = sp.nblk - 1 - blockIdx.x / sp.nsub, sub = blockIdx.x % sp.nsub;
        q0 = c * sp.qblock + sub * BQ;
        t1 = min(T, min(c * sp.qblock + sp.qblock, q0 + BQ));
        if (q0 >= t1) return; // whole CTA
        list = sp.idx + (((size_t)b * H + h) * sp.nblk + c) * sp.width;
    } else {
        q0 = (gridDim.y - 1 - blockIdx.y) * BQ;
        t1 = min(T, q0 + BQ);
        nkt = (t1 + BK - 1) / BK;
    }
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    unsigned long long *trec = NULL, tw_k = 0, tw_v = 0; // TR: this CTA's record, wait cycles
    long long tc0 = 0;
    if (TR) {
        trec = sp.trace + ((size_t)blockIdx.y * gridDim.x + blockIdx.x) * FT3_REC;
        tc0 = clock64();
        if (threadIdx.x == 0) trec[0] = fwd3_gtime();
    }
    // mbarrier wait, its cycles added to acc (TR); sleep: with the suspend-time hint
    // (mbar_wait_sleep, the producers' waits: their plain loop retried ~50-85 times a tile: s11)
    auto twait = [&](uint64_t *bar, uint32_t par, unsigned long long &acc, bool sleep = false) {
        long long c = 0;
        if constexpr (TR) c = clock64();
        if (sleep) mbar_wait_sleep(bar, par);
        else mbar_wait(bar, par);
        if constexpr (TR) acc += clock64() - c;
    };
    auto pwait = [&](uint64_t *bar, uint32_t par, unsigned long long &acc) { twait(bar, par, acc, true); };

    if (threadIdx.x == 0) {
        mbar_init(qfull, 1);
        for (int i = 0; i < NS; i++) {
            mbar_init(kfull + i, 1), mbar_init(vfull + i, 1);
            mbar_init(kempty + i, 4 * NWG), mbar_init(vempty + i, 4 * NWG);
        }
        if (VW)
            for (int i = 0; i < 2 * NS; i++) mbar_init(ginfo + i, 1);
        mbar_fence_init();
    }
    __syncthreads();

    if (warp >= 4 * NWG) { // producer
        // PWG: a whole producer warpgroup gives its registers to the consumers (FA3's split)
        // (64K registers: NWG = 2: 24 / 240; NWG = 3: 32 / 160 per thread)
        if (PWG) asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(NWG >= 3 ? 32 : 24) : "memory");
        const int G = sp.G, gpt = BK / G;
        // X 2: granule g0 of K (kv 0) or V (kv 1) into dst: D 128 one 5-d box (both planes), D 64
        // the planar box of G rows (one plane: the same layout); the map is named at a fixed
        // parameter offset (r1: picked at run time, the producer ran the ms forward ~2x slower)
        auto gcopy = [&](bf16 *dst, int g0, uint64_t *fb, int kv) {
            if constexpr (D == 64)
                tma_load_4d(dst, kv ? &maps.v : &maps.k, fb, 0, kvh, g0, b);
            else
                tma_load_5d(dst, kv ? &maps.vi : &maps.ki, fb, 0, 0, 0, (b * T + g0) >> 3, kvh);
        };
        // X 2: ring slot sl, lane gi copies granule gi
        auto copies = [&](const int *gs, int ng, int sl, int kv) {
            if (lane < gpt)
                gcopy((kv ? Vs : Ks) + sl * BK * D + lane * G * D, gs[lane < ng ? lane : 0],
                      (kv ? vfull : kfull) + sl, kv);
        };
        const int gsh = sp.gsh, region = sp.region;
        const int lo_w = sp.window ? q0 - sp.window + 1 : 0; // first key any row may see
        // the granules of list region r (< 0: none) some row of the CTA may see; the first one's
        // key in kf
        auto granules = [&](int r, int &kf) -> int {
            if (r < 0) return 0;
            int rs = r * region, lo = max(rs, lo_w), hi = min(min(T, rs + region), t1);
            if (hi <= lo) return 0;
            int g0 = (lo - rs) >> gsh;
            kf = rs + (g0 << gsh);
            return ((hi - 1 - rs) >> gsh) - g0 + 1;
        };
        if (VW && warp == 4 * NWG + 1) { // VW: the V copies of every tile
            for (int j = 0;; j++) {
                int sl = j % NS, u = j / NS;
                mbar_wait_sleep(ginfo + j % (2 * NS), (j / (2 * NS)) & 1); // the tile's granules
                const int *ki = kinf + (j % (2 * NS)) * KIS;
                int ng = ki[0];
                if (ng == 0) return; // the sentinel
                if (lane == 0) {
                    if (u > 0) mbar_wait_sleep(vempty + sl, (u - 1) & 1);
                    mbar_expect_tx(vfull + sl, BK * D * 2);
                }
                __syncwarp();
                copies(ki + 4, ng, sl, 1);
            }
        }
        if (warp != 4 * NWG) return;
        if (lane == 0) {
            mbar_expect_tx(qfull, BQ * D * 2);
            for (int p = 0; p < NP; p++)
                tma_load_4d(Qs + p * BQ * 64, &maps.q, qfull, p * 64, h, q0, b);
        }
        if (!LIST) {
            if (lane == 0)
                for (int j = 0; j < nkt; j++) {
                    int sl = j % NS, u = j / NS;
                    if (u > 0) pwait(kempty + sl, (u - 1) & 1, tw_k);
                    mbar_expect_tx(kfull + sl, BK * D * 2);
                    for (int p = 0; p < NP; p++)
                        tma_load_4d(Ks + sl * BK * D + p * BK * 64, &maps.k, kfull + sl, p * 64,
                                    kvh, j * BK, b);
                    if (u > 0) pwait(vempty + sl, (u - 1) & 1, tw_k);
                    mbar_expect_tx(vfull + sl, BK * D * 2);
                    for (int p = 0; p < NP; p++)
                        tma_load_4d(Vs + sl * BK * D + p * BK * 64, &maps.v, vfull + sl, p * 64,
                                    kvh, j * BK, b);
                }
            if (TR && lane == 0) trec[7] = tw_k, trec[8] = clock64() - tc0;
            return;
        }
        // the list walk (whole warp; lane 0 issues the copies, X 2: lanes 0 .. gpt - 1)
        int j = 0;                                           // tiles emitted
        unsigned long long tp[4] = {0, 0, 0, 0}; // TR: tile info, K issue, V wait, V issue
        // tile j from granules gs[0 .. ng) (ng 0: the sentinel, a plain arrive on "full")
        auto emit = [&](const int *gs, int ng) {
            int sl = j % NS, u = j / NS;
            long long e1 = 0, e2 = 0, e3 = 0, e4 = 0;
            __syncwarp(); // the walk's gbuf writes before lane 0 reads them
            if (LI) { // lane gi writes granule gi, min / max by shuffles (was: lane 0's serial loop)
                if (lane == 0 && u > 0) pwait(kempty + sl, (u - 1) & 1, tw_k);
                if (TR) e1 = clock64();
                int *ki = kinf + (j % (2 * NS)) * KIS;
                int g0 = lane < ng ? gs[lane] : LIST_PAD;
                int mn = lane < GT ? g0 : LIST_PAD, mx = lane < GT ? (lane < ng ? g0 + 15 : LIST_PAD) : 0;
#pragma unroll
                for (int o = 1; o < GT; o <<= 1)
                    mn = min(mn, __shfl_xor_sync(0xffffffffu, mn, o)), mx = max(mx, __shfl_xor_sync(0xffffffffu, mx, o));
                if (lane < GT) ki[4 + lane] = g0;
                __syncwarp(); // lanes 1 .. GT - 1's key writes before lane 0's release (arrive)
                if (lane == 0) {
                    *(int4 *)ki = make_int4(ng, mn, mx, 0);
                    if (VW) mbar_arrive(ginfo + j % (2 * NS));
                    if (ng == 0) mbar_arrive(kfull + sl);
                    else mbar_expect_tx(kfull + sl, BK * D * 2);
                    if (TR) e2 = clock64();
                }
            } else if (lane == 0) {
                if (u > 0) pwait(kempty + sl, (u - 1) & 1, tw_k);
                if (TR) e1 = clock64();
                int *ki = kinf + (j % (2 * NS)) * KIS, mn = LIST_PAD, mx = 0;
                for (int gi = 0; gi < gpt; gi++) {
                    int g0 = gi < ng ? gs[gi] : LIST_PAD;
                    ki[4 + gi] = g0;
                    mn = min(mn, g0), mx = max(mx, gi < ng ? g0 + G - 1 : LIST_PAD);
                }
                ki[0] = ng, ki[1] = mn, ki[2] = mx;
                if (VW) mbar_arrive(ginfo + j % (2 * NS));
                if (ng == 0) mbar_arrive(kfull + sl);
                else mbar_expect_tx(kfull + sl, BK * D * 2);
                if (TR) e2 = clock64();
            }
            if (ng > 0) {
                if (X == 0) { // lane 0 issues every copy
                    if (lane == 0) {
                        for (int gi = 0; gi < gpt; gi++) {
                            int k0 = gs[gi < ng ? gi : 0]; // padding: any real rows (masked)
                            for (int p = 0; p < NP; p++)
                                tma_load_4d(Ks + sl * BK * D + p * BK * 64 + gi * G * 64, &maps.k,
                                            kfull + sl, p * 64, kvh, k0, b);
                        }
                        if (TR) e3 = clock64();
                        if (u > 0) mbar_wait_sleep(vempty + sl, (u - 1) & 1);
                        if (TR) e4 = clock64();
                        mbar_expect_tx(vfull + sl, BK * D * 2);
                        for (int gi = 0; gi < gpt; gi++) {
                            int k0 = gs[gi < ng ? gi : 0];
                            for (int p = 0; p < NP; p++)
                                tma_load_4d(Vs + sl * BK * D + p * BK * 64 + gi * G * 64, &maps.v,
                                            vfull + sl, p * 64, kvh, k0, b);
                        }
                    }
                } else { // X 2: lanes 0 .. gpt - 1 copy, after lane 0's waits and expect_tx
                    __syncwarp();
                    copies(gs, ng, sl, 0);
                    if (!VW) {
                        if (lane == 0) {
                            if (TR) e3 = clock64();
                            if (u > 0) mbar_wait_sleep(vempty + sl, (u - 1) & 1);
                            if (TR) e4 = clock64();
                            mbar_expect_tx(vfull + sl, BK * D * 2);
                        }
                        __syncwarp();
                        copies(gs, ng, sl, 1);
                    } else if (TR) {
                        e3 = e4 = clock64();
                    }
                }
                if (TR && lane == 0) {
                    long long e5 = clock64();
                    tp[0] += e2 - e1, tp[1] += e3 - e2, tp[2] += e4 - e3, tp[3] += e5 - e4;
                }
            }
            j++;
        };
        int have = 0; // granules waiting in gbuf[0 .. have)
        bool done = false;
        int rnext = lane < sp.width ? list[lane] : -1; // the list read one chunk ahead
        for (int s0 = 0; s0 < sp.width && !done; s0 += 32) {
            int s = s0 + lane, r = rnext, kf = 0;
            rnext = s + 32 < sp.width ? list[s + 32] : -1;
            done = __any_sync(0xffffffffu, s < sp.width && r < 0); // valid slots come first
            int n = granules(r, kf);
            int incl = n;
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                int y = __shfl_up_sync(0xffffffffu, incl, o);
                if (lane >= o) incl += y;
            }
            int tot = __shfl_sync(0xffffffffu, incl, 31);
            for (int i = 0; i < n; i++) gbuf[have + incl - n + i] = kf + (i << gsh);
            have += tot;
            __syncwarp();
            int base = 0;
            if constexpr (BW) { // up to 32 / GT full tiles at once, lane GT t + i holding granule i of tile t
                constexpr int TB = 32 / GT, GL = GT == 8 ? 3 : 2; // tiles a batch, log2 GT
                while (have - base >= GT) {
                    int nt = min(TB, (have - base) >> GL);
                    int g0 = lane < GT * nt ? gbuf[base + lane] : LIST_PAD;
                    int mn = g0, mx = lane < GT * nt ? g0 + 15 : 0;
#pragma unroll
                    for (int o = 1; o < GT; o <<= 1)
                        mn = min(mn, __shfl_xor_sync(0xffffffffu, mn, o)), mx = max(mx, __shfl_xor_sync(0xffffffffu, mx, o));
                    for (int t = 0; t < nt; t++) { // tile j: lanes GT t .. GT t + GT - 1
                        int sl = j % NS, u = j / NS, *ki = kinf + (j % (2 * NS)) * KIS;
                        long long e1 = TR ? clock64() : 0;
                        if (lane == GT * t && u > 0) pwait(kempty + sl, (u - 1) & 1, tw_k);
                        __syncwarp();
                        if ((lane >> GL) == t) { // the key, the K copy (tx-count may go below 0 first)
                            ki[4 + (lane & (GT - 1))] = g0;
                            gcopy(Ks + sl * BK * D + (lane & (GT - 1)) * 16 * D, g0, kfull + sl, 0);
                        }
                        __syncwarp(); // the keys before lane GT t's release
                        if (lane == GT * t) {
                            *(int4 *)ki = make_int4(GT, mn, mx, 0);
                            mbar_arrive(ginfo + j % (2 * NS));
                            mbar_expect_tx(kfull + sl, BK * D * 2);
                            if (TR) tp[1] += clock64() - e1;
                        }
                        j++;
                    }
                    base += GT * nt;
                }
            }
            for (; have - base >= gpt; base += gpt) emit(gbuf + base, gpt);
            __syncwarp();
            int left = have - base, keep = lane < left ? gbuf[base + lane] : 0;
            __syncwarp();
            if (lane < left) gbuf[lane] = keep;
            have = left;
            __syncwarp();
        }
        if (have > 0) emit(gbuf, have);
        emit(gbuf, 0);
        if (TR && lane == 0) {
            trec[7] = tw_k + tp[2], trec[8] = clock64() - tc0;
            for (int i = 0; i < 4; i++) trec[11 + i] = tp[i];
        }
        return;
    }

    if (PWG) asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(NWG >= 3 ? 160 : 240) : "memory");
    int g = lane >> 2, tq = lane & 3, wg = warp >> 2, wl = warp & 3;
    int wr0 = q0 + wg * 64;      // this warpgroup's first row
    int rw0 = wr0 + wl * 16 + g; // this thread's rows rw0, rw0 + 8
    int rf = wr0 + wl * 16;      // this warp's first row
    int4 ti = make_int4(0, 0, 0, 0); // LIST: the tile's granules, min, max position
    auto info = [&](int j) { ti = *(const int4 *)(kinf + (j % (2 * NS)) * KIS); };
    // does tile j exist (LIST: waits for its "full" arrive, the sentinel has 0 granules)
    auto has = [&](int j) -> bool {
        if (!LIST) return j < nkt;
        twait(kfull + j % NS, (j / NS) & 1, tw_k);
        info(j);
        return ti.x > 0;
    };
    auto mask = [&](float (*s)[4], int j) {
        if (!LIST) {
            dense_mask<NN>(s, j * BK, BK, wr0, rw0, tq, T);
            return;
        }
        int win = sp.window;
        if (ti.z > rf || (win && ti.y <= rf + 15 - win)) { // warp-uniform
            const int *ki = kinf + (j % (2 * NS)) * KIS;
            // column c = 8 n + 2 tq + (e & 1) is key (c & (G - 1)) of granule c >> gsh = n >> (gsh - 3)
            int gs3 = sp.gsh - 3, gm = (1 << sp.gsh) - 1;
#pragma unroll
            for (int n = 0; n < NN; n++) {
                int kb = ki[4 + (n >> gs3)] + ((n * 8) & gm) + 2 * tq;
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int key = kb + (e & 1), r = rw0 + 8 * (e >> 1);
                    if (key > r || (win && key <= r - win)) s[n][e] = -INFINITY;
                }
            }
        }
    };
    // K / V operands: planar tiles (desc_k / desc_mn), or X 2 (grouped) [8-row group][plane][8]
    // [64]: 8-row groups 16 D bytes apart, plane 1 at 8 rows (1024 bytes)
    // a descriptor as a base plus a constant (s11): the start-address field (bits 0-13, shared
    // address >> 4) of an address below 256 KB never carries, so desc(p + e elements) = desc(p) +
    // e / 8; the bases once, wg made warp-uniform (CUTLASS's shuffle) so they sit in uniform
    // registers (was: ~8 address / mask instructions per wgmma, ~30% of a consumer's instructions)
    // K / V operands: planar tiles (desc_k / desc_mn), or X 2 (grouped) [8-row group][plane][8]
    // [64]: 8-row groups 16 D bytes apart, plane 1 at 8 rows (1024 bytes)
    const int wgu = __shfl_sync(0xffffffffu, wg, 0);
    const uint64_t kd0 = X == 2 ? wg_desc(Ks, 16, 16 * D) : desc_k<BK>(Ks, 0, 0);
    const uint64_t vd0 = X == 2 ? wg_desc(Vs, 1024, 16 * D) : desc_mn<BK>(Vs, 0);
    const uint64_t qd0 = desc_k<BQ>(Qs, wgu * 64, 0);
    auto kdesc = [&](const bf16 *Kt, int kk) -> uint64_t {
        int e = X == 2 ? (kk >> 2) * 512 + (kk & 3) * 16 : (kk >> 2) * (BK * 64) + (kk & 3) * 16;
        return kd0 + (uint64_t)((int)(Kt - Ks) + e) / 8;
    };
    auto vdesc = [&](const bf16 *Vt, int kk) -> uint64_t {
        return vd0 + (uint64_t)((int)(Vt - Vs) + kk * 16 * (X == 2 ? D : 64)) / 8;
    };
    auto qdesc = [&](int kk) -> uint64_t {
        return qd0 + (uint64_t)((kk >> 2) * (BQ * 64) + (kk & 3) * 16) / 8;
    };
    float o[DN][4];
#pragma unroll
    for (int n = 0; n < DN; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f}, alpha[2];
    uint32_t pk[NN][2];

    auto sb_sync = [&]() {
        if constexpr (SB) asm volatile("bar.sync %0, 256;\n" ::"r"(1 + wgu) : "memory");
    };
    auto sb_arrive = [&]() {
        if constexpr (SB) asm volatile("bar.arrive %0, 256;\n" ::"r"(1 + (wgu + 1) % NWG) : "memory");
    };
    if (SB && wgu == NWG - 1) asm volatile("bar.arrive 1, 256;\n" ::: "memory"); // warpgroup 0 first

    mbar_wait(qfull, 0);
    long long tc1 = 0; // TR: tile 0 landed
    int j = 0;
    if (LIST && wr0 >= t1) { // no rows (a block's last CTA, the end of T): only the ring's
                             // protocol, so the other warpgroups have the tensor cores alone
        for (; has(j); j++) { // (has(j) waited on tile j's "full" K)
            int sl = j % NS, par = (j / NS) & 1;
            sb_sync(), sb_arrive(); // SB: its turn, passed on
            if (lane == 0) mbar_arrive(kempty + sl);
            mbar_wait(vfull + sl, par);
            if (lane == 0) mbar_arrive(vempty + sl);
        }
    } else if (has(0)) {
        float s[NN][4];
        // S_jn = Q K_jn^T (dense: after K_jn's wait; LIST: has(jn) waited)
        auto issue_s = [&](int jn) {
            int sl = jn % NS;
            if (!LIST) twait(kfull + sl, (jn / NS) & 1, tw_k);
            wg_fence();
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++)
                wg_ss<BK>(s, qdesc(kk), kdesc(Ks + sl * BK * D, kk), kk);
            wg_commit();
        };
        {
            twait(kfull, 0, tw_k);
            if (TR) tc1 = clock64(), tw_k = 0;
            sb_sync();
            wg_fence();
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++)
                wg_ss<BK>(s, qdesc(kk), kdesc(Ks, kk), kk);
            wg_commit();
            sb_arrive();
            wg_wait<0>();
            wg_keep<BK>(s);
            if (lane == 0) mbar_arrive(kempty);
            mask(s, 0);
            wg_softmax<NN, TM>(s, m, l, alpha, sl2);
            wg_pack<NN>(s, pk);
            if (SO) twait(vfull, 0, tw_v);
        }
        for (j = 1; has(j); j++) {
            int sl = j % NS, u = j / NS, sp_ = (j - 1) % NS, up = (j - 1) / NS;
            const bf16 *Vp = Vs + sp_ * BK * D;
            sb_sync();
            issue_s(j);
            if (!SO) twait(vfull + sp_, up & 1, tw_v);
            wg_fence(); // after the wait loop (else ptxas injects it: C7519)
#pragma unroll
            for (int kk = 0; kk < BK / 16; kk++) {
                uint32_t a[4] = {pk[2 * kk][0], pk[2 * kk][1], pk[2 * kk + 1][0], pk[2 * kk + 1][1]};
                wg_rs<D>(o, a, vdesc(Vp, kk), 1);
            }
            wg_commit();
            sb_arrive();
            wg_wait<1>();
            wg_keep<BK>(s);
            if (lane == 0) mbar_arrive(kempty + sl);
            mask(s, j);
            wg_softmax<NN, TM>(s, m, l, alpha, sl2);
            if (SO) { // the softmax's results pinned, then V_j's wait loop (a basic block end)
                wg_keep<BK>(s);
                asm volatile("" : "+f"(m[0]), "+f"(m[1]), "+f"(l[0]), "+f"(l[1]), "+f"(alpha[0]),
                             "+f"(alpha[1])::"memory");
                twait(vfull + sl, u & 1, tw_v);
            }
            wg_wait<0>();
            wg_keep<D>(o);
            if (lane == 0) mbar_arrive(vempty + sp_);
            wg_pack<NN>(s, pk); // only now: the P V product that read pk has retired
            // O *= alpha; D 128: skipped where no row of the warp changed its max (alpha = 1
            // exactly: x * 1 = x, the same bits; ~1 / j of the rows change at tile j; s11: 32K ms
            // 5.232 -> 5.146 ms; D 64, 32 products: the vote cost more, LM shape 0.50 -> 0.525)
            if (D != 128 || __any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) {
#pragma unroll
                for (int n = 0; n < DN; n++) {
                    o[n][0] *= alpha[0], o[n][1] *= alpha[0];
                    o[n][2] *= alpha[1], o[n][3] *= alpha[1];
                }
            }
        }
        {
            int sp_ = (j - 1) % NS, up = (j - 1) / NS;
            const bf16 *Vp = Vs + sp_ * BK * D;
            if (!SO) twait(vfull + sp_, up & 1, tw_v);
            wg_fence();
#pragma unroll
            for (int kk = 0; kk < BK / 16; kk++) {
                uint32_t a[4] = {pk[2 * kk][0], pk[2 * kk][1], pk[2 * kk + 1][0], pk[2 * kk + 1][1]};
                wg_rs<D>(o, a, vdesc(Vp, kk), 1);
            }
            wg_commit();
            wg_wait<0>();
            wg_keep<D>(o);
        }
    }
    long long tc2 = TR ? clock64() : 0; // TR: loop done

    // out = O / l; a row that sees no key (LIST only): out 0, lse +inf (sparse_bf16's convention)
    size_t ldq = (size_t)H * D;
    bf16 *ob = out + (size_t)b * T * ldq + (size_t)h * D;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        float lr = l[r];
        lr += __shfl_xor_sync(0xffffffffu, lr, 1);
        lr += __shfl_xor_sync(0xffffffffu, lr, 2);
        int row = rw0 + 8 * r;
        if (row >= t1) continue;
        float inv = lr > 0.f ? 1.f / lr : 0.f;
        bf16 *orow = ob + (size_t)row * ldq;
#pragma unroll
        for (int n = 0; n < DN; n++)
            *(uint32_t *)(orow + n * 8 + 2 * tq) = pack_bf16x2(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
        if (tq == 0)
            lse[((size_t)b * H + h) * T + row] = lr > 0.f ? (m[r] + log2f(lr)) * WG_LN2 : INFINITY;
    }
    if (TR && threadIdx.x == 0) {
        unsigned smid;
        asm volatile("mov.u32 %0, %%smid;" : "=r"(smid));
        long long tc3 = clock64();
        if (!tc1) tc1 = tc2;
        trec[1] = fwd3_gtime(), trec[2] = tc1 - tc0, trec[3] = tc2 - tc1, trec[4] = tc3 - tc2;
        trec[5] = tw_k, trec[6] = tw_v, trec[9] = j, trec[10] = smid;
    }
}

// ---------------------------------------------------------------------------------------------
// kernels

// 288 threads = 9 warps: 3 warps share one SM sub-partition's 16K registers, so at most 168 per
// thread (r2: __maxnreg__(224) failed to launch, out of resources); BK = 128 spills a little
// PWG = 1: a producer warpgroup (setmaxnreg: 24 there, 240 in the 2 consumer warpgroups)
// LIST: the block-sparse forward (key tiles from an index list, Fwd3List)
// X (LIST): 0 planar tiles, 2 grouped tiles (8-row groups x both planes, a copy per granule)
template <int D, int NWG, int BK, int NS, int PWG, bool LIST = false, int X = 0, bool TR = false,
          bool VW = false, int OPT = 0>
__global__ void __launch_bounds__(128 * NWG + (PWG ? 128 : 32), 1)
    fwd3_kernel(const __grid_constant__ Fwd3Maps maps, const Fwd3List sp, bf16 *out, float *lse,
                int T, int H, int KVH, float sl2) {
    fwd3_wg_body<D, NWG, BK, NS, PWG, LIST, X, TR, VW, OPT>(maps, sp, out, lse, T, H, KVH, sl2);
}

// ---------------------------------------------------------------------------------------------
// host

// Tilings (flash_wgmma_tune; -1 skips that backward kernel so the other can be timed alone):
//   forward: fwd3 <3 consumer warpgroups, 64-key tiles, 4 ring slots> with a producer warpgroup
//           (setmaxnreg 32 / 160), tiling 11, the only one left (s6: any value runs it). Removed
//           in s6 (H200, T = 16K, B = 1, H = KVH = 32, D = 128, the forward alone, ms; 11: 3.48 =
//           631 TFLOP/s, s5 r4): fwd (cp.async double buffer) 0 <2 warpgroups, 64 keys> 6.75,
//           1 <1, 64> 7.32, 2 <1, 128> 9.42, 3 <2, 128> 6.22; fwd2 (in-warpgroup pipelined,
//           3-slot cp.async ring) 4 <2, 64> 7.07, 5 <2, 128> 5.96, 6 <3, 64> 5.69 (r1-r3, before
//           the C7513 fix); fwd3 <warpgroups, keys, slots> 7 <2, 64, 3> 3.98 (s5), 8 <2, 128, 2>
//           5.05 (spilled: C7512), 9 <2, 128, 2> + producer warpgroup 5.11, 10 <2, 64, 4> +
//           producer warpgroup 5.73 (r1-r3)
//   dK/dV   0: 2 warpgroups (128 keys)  1: 1 warpgroup (64 keys)  2: the fused backward (dK, dV
//           and dQ in one kernel, D = 128; D = 64 runs the split tilings 0 / 0); ordered mode:
//           per-warp red order; 3: the same, ordered mode: load-add-store per CTA; 4: 2, the
//           atomic mode with Q / dO / dK / dV by TMA and the dQ partials by bulk reduce-adds
//           (PIPE 22, flash_wgmma_bwd.cu; s7 r3, 16K fwd+bwd 16.52 ms vs 20.72; until s7 tune 4
//           was PIPE: each step's dQ reds issued under the next step's products, removed);
//           5: 1 with lse / Di by cp.async; 6, 7: D 64 tilings (below; 8, 10 removed in s8);
//           11 (s8): the fused backward as 4 in both modes, ordered with fixed-point dQ adds
//           (DET 4: s32 adds), D 64 too (figures at WG128_DKDV_DET, flash_wgmma_bwd.cu);
//           9: ordered mode 11 (s8; 5 before), atomic mode 4 (s7; 2 before) (D = 64: 11 in
//           both modes since s8, WG64_DKDV / WG64_DKDV_DET; 7 before)
//   dQ      0: 2 warpgroups  1: 1 warpgroup  2: 3 warpgroups  3, 4: D 64 tilings (below);
//           9: 2 (D = 64: WG64_DQ)
//   dQ      0: 2 warpgroups (128 rows)  1: 1 warpgroup (64 rows)
// Defaults from r1-r3 (H200, T = 16K, B = 1, H = KVH = 32, D = 128, each kernel alone, ms):
//   forward: flash_bf16 7.13; 11 3.48 ms = 631 TFLOP/s (s5 r4, the default since)
//   dK/dV alone (+Di): 5 10.9, 1 11.2, 0 12.1; dQ alone (+Di): 2 7.38, 0 7.96, 1 8.92
//   s7 r4 (bench, fwd+bwd, atomic mode = dK/dV 4: the fused kernel with TMA tiles and bulk dQ adds,
//   PIPE 22 in flash_wgmma_bwd.cu): 16K 16.37 ms (470 TFLOP/s; tune 2: 20.72), 32K 71.6 (430);
//   ordered (split, unchanged) 20.85 / 84.0.
//   fused (dK, dV, dQ): atomic 16.1-16.5 (PIPE 16.9-17.0); ordered per warp 22.4 (PIPE 23.6), per
//     CTA 24.2-24.4: the ordering's acquire / fence latencies sit in every step, so the ordered
//     mode keeps the split path (5 + dQ 2: ~18.2) and only the atomic mode takes the fused
//     kernel (dK/dV 9 = that choice)
// D = 64 (s7, H4; the 162M LM's heads; measured at its shape B 8, T 4096, H 12, the tests'
// flash_wgmma_perf64 rows): forward 12 <3 warpgroups, 128 keys, 2 slots>, 13 <3, 128, 3>, 14 <2,
// 128, 4>, 15 <3, 128, 4> (11 = <3, 64, 4>), 16 (s14, the default): 13 with the softmax under P V,
// the tree max and the scheduler barrier (OPT 11; 32K H 12, the sparse tests' dense32 row, the
// same bits: SO alone 3.020 -> 2.882 ms (r3); SO + tree + SB 2.900 vs SO 2.943-2.951 (r4); OPT 9
// (no tree) 2.889-2.893 vs 11 2.900-2.904 vs 13 3.119-3.125 (r5); 16 2.921 vs 13 3.096 (r6));
// dK/dV 6: 0 with lse / Di by cp.async, 7: 5 at 3 CTAs
// per SM (168 registers), 8: 6 at 2 CTAs per SM (128 registers, spills), 10: 5 at 4 CTAs per SM
// (128, spills); dQ 3: 0 at 2 CTAs per SM (128 registers), 4: 1 at 4 (D 128 runs 11 / 5 / 6 / 0 /
// 1 for these). 9 (the default of all three): per D, WG64_* for D 64.
// s7 r1 (H200, B 8, T 4096, H 12, D 64, each kernel alone, ms; dK/dV and dQ include Di 0.07):
//   forward 11 0.565 (365 TFLOP/s), 12 0.523 (394), 13 0.503 (410), 14 0.556 (371)
//   dK/dV 0 1.751, 1 1.614, 5 1.429, 6 1.457, 7 1.230, 8 1.440; dQ 0 1.164, 1 1.060, 2 1.071,
//   3 0.915, 4 1.018 (the LM's s6 defaults 11 / 5 / 2: fwd+bwd 3.15 ms, 6 of the 35 ms per step)
//   162M LM row 0: 103.3 ms/step with 11 / 5 / 2, 99.9 with 12 / 7 / 3
// s7 r2 (the same rows): forward 13 0.500 ms, 15 0.507; dK/dV 7 1.225, 10 1.502 (4 CTAs per SM:
//   the spills and L2 traffic cost more than the warps win); dQ 3 0.895: defaults 13 / 7 / 3, fwd+bwd
//   2.563 ms (was 3.149: 280 TFLOP/s at 3.5x the forward's FLOPs, was 229)
#define WG64_FWD 16
int wg_tune_fwd = 9, wg_tune_dkdv = 9, wg_tune_dq = 9;
static int tune_env_read = 0;
extern "C" void flash_wgmma_tune(int fwd, int dkdv, int dq) {
    wg_tune_fwd = fwd, wg_tune_dkdv = dkdv, wg_tune_dq = dq, tune_env_read = 1;
}
void wg_tune_from_env(void) {
    if (tune_env_read) return;
    tune_env_read = 1;
    const char *e = getenv("MSLAB_FLASH_WGMMA_TUNE");
    int f, d, q;
    if (e && sscanf(e, "%d,%d,%d", &f, &d, &q) == 3) wg_tune_fwd = f, wg_tune_dkdv = d, wg_tune_dq = q;
}

// MSLAB_FWD3_TRACE=1 (a timing aid; dense D 128, the list path at D 64 / 128): forward launches
// run the TR variant and print one line each (fwd3_trace_report): SM busy share, per-tile time,
// the consumers' / producer's wait shares; ncnt CTAs of FT3_REC words, the buffer zeroed (CTAs with no rows leave 0)
static int fwd3_trace_on(void) {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("MSLAB_FWD3_TRACE");
        on = e && atoi(e) != 0;
    }
    return on;
}
static unsigned long long *fwd3_trace_buf(size_t ncta) {
    unsigned long long *d = NULL;
    cudaCheck(cudaMalloc(&d, ncta * FT3_REC * 8));
    cudaCheck(cudaMemset(d, 0, ncta * FT3_REC * 8));
    return d;
}
// nsub > 0: the list grid (blocks x sub-tiles fastest; CTA index % ntile = the tile), the last
// sub-tile of each block reported apart (it holds the block's remainder rows)
static void fwd3_trace_report(const char *what, unsigned long long *d, size_t ncta, size_t ntile,
                              int nsub) {
    cudaCheck(cudaDeviceSynchronize());
    unsigned long long *r = (unsigned long long *)malloc(ncta * FT3_REC * 8);
    cudaCheck(cudaMemcpy(r, d, ncta * FT3_REC * 8, cudaMemcpyDeviceToHost));
    cudaFree(d);
    int nsm = 132, dev = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&nsm, cudaDevAttrMultiProcessorCount, dev);
    unsigned long long t0 = ~0ull, t1 = 0;
    double n = 0, busy = 0, sx = 0, sy = 0, sxx = 0, sxy = 0, c[13] = {0}, nl = 0, dl = 0;
    for (size_t i = 0; i < ncta; i++) {
        const unsigned long long *x = r + i * FT3_REC;
        if (!x[1]) continue;
        double dur = (double)(x[1] - x[0]), tl = (double)x[9];
        t0 = x[0] < t0 ? x[0] : t0, t1 = x[1] > t1 ? x[1] : t1;
        n++, busy += dur, sx += tl, sy += dur, sxx += tl * tl, sxy += tl * dur;
        for (int k = 2; k <= 14; k++) c[k - 2] += (double)x[k];
        if (nsub > 1 && (i % ntile) % nsub == (size_t)nsub - 1) nl++, dl += dur;
    }
    free(r);
    if (n < 2) return;
    double span = (double)(t1 - t0), slope = (n * sxy - sx * sy) / (n * sxx - sx * sx),
           icpt = (sy - slope * sx) / n;
    printf("    fwd3 trace %s: %.0f CTAs, span %.3f ms, SM busy %.1f%%, %.1f tiles a CTA, CTA %.1f us "
           "= %.2f + %.4f us a tile (fit); cycles: startup %.0f, loop %.0f (%.0f a tile), epilogue "
           "%.0f; consumer waits K %.1f%% V %.1f%% of the loop; producer waits %.1f%% of %.0f "
           "(tile info %.1f%%, K issue %.1f%%, V wait %.1f%%, V issue %.1f%%); last sub-tile CTAs "
           "%.1f us vs %.1f\n",
           what, n, span * 1e-6, 100 * busy / (span * nsm), sx / n, sy / n * 1e-3, icpt * 1e-3,
           slope * 1e-3, c[0] / n, c[1] / n, c[1] / (c[7] > 0 ? c[7] : 1), c[2] / n,
           100 * c[3] / c[1], 100 * c[4] / c[1], 100 * c[5] / c[6], c[6] / n, 100 * c[9] / c[6],
           100 * c[10] / c[6], 100 * c[11] / c[6], 100 * c[12] / c[6], nl > 0 ? dl / nl * 1e-3 : 0.0, n > nl ? (sy - dl) / (n - nl) * 1e-3 : 0.0);
}

// one launch of a fwd3 variant (the shared-memory opt-in once per variant)
template <int D, int NWG, int BK, int NS, int PWG, bool LIST, int X, bool TR, bool VW, int OPT = 0>
static void fwd3_go(dim3 grid, size_t smem, const Fwd3Maps &maps, const Fwd3List &sp, bf16 *out,
                    float *lse, int T, int H, int KVH, float sl2) {
    static bool init = false;
    auto kern = fwd3_kernel<D, NWG, BK, NS, PWG, LIST, X, TR, VW, OPT>;
    if (!init) smem_optin(kern, smem), init = true;
    kern<<<grid, 128 * NWG + (PWG ? 128 : 32), smem>>>(maps, sp, out, lse, T, H, KVH, sl2);
    cudaLaunchCheck();
}
// false: the maps could not be made (no driver entry point): flash_wgmma_fwd returns -1 and the
// caller (attn_mode.cu) runs flash_bf16_fwd
template <int D, int NWG, int BK, int NS, int PWG = 0, int OPT = 0>
static bool fwd3_run(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, int B,
                     int T, int H, int KVH) {
    constexpr int BQ = 64 * NWG;
    Fwd3Maps maps;
    memset(&maps, 0, sizeof maps);
    if (!make_map(&maps.q, q, B, T, H, D, BQ) || !make_map(&maps.k, k, B, T, KVH, D, BK) ||
        !make_map(&maps.v, v, B, T, KVH, D, BK))
        return false;
    size_t smem = 1024 + sizeof(bf16) * (size_t)(BQ * D + 2 * NS * BK * D) + 8 * (1 + 4 * NS);
    dim3 grid(B * H, (T + BQ - 1) / BQ);
    Fwd3List none = {};
    float sl2 = WG_LOG2E / sqrtf((float)D);
    if constexpr (D == 128) {
        if (fwd3_trace_on()) {
            none.trace = fwd3_trace_buf((size_t)grid.x * grid.y);
            fwd3_go<D, NWG, BK, NS, PWG, false, 0, true, false>(grid, smem, maps, none, out, lse, T, H, KVH, sl2);
            fwd3_trace_report("dense", none.trace, (size_t)grid.x * grid.y, 0, 0);
            return true;
        }
    }
    fwd3_go<D, NWG, BK, NS, PWG, false, 0, false, false, OPT>(grid, smem, maps, none, out, lse, T, H, KVH, sl2);
    return true;
}
extern "C" int flash_wgmma_fwd(uint16_t *out, float *lse, const uint16_t *q, const uint16_t *k,
                               const uint16_t *v, int B, int T, int H, int KVH, int D) {
    if (!shape_ok(B, T, H, KVH, D)) return -1;
    wg_tune_from_env(); // (the backward's tilings; the forward has one)
    bf16 *o = (bf16 *)out;
    const bf16 *qq = (const bf16 *)q, *kk = (const bf16 *)k, *vv = (const bf16 *)v;
    bool ok;
    if (D == 64) { // D 64 tilings (s7, H4; the LM's heads): <consumer warpgroups, keys, slots>
        switch (wg_tune_fwd == 9 ? WG64_FWD : wg_tune_fwd) {
        case 12: ok = fwd3_run<64, 3, 128, 2, 1>(o, lse, qq, kk, vv, B, T, H, KVH); break;
        case 13: ok = fwd3_run<64, 3, 128, 3, 1>(o, lse, qq, kk, vv, B, T, H, KVH); break;
        case 14: ok = fwd3_run<64, 2, 128, 4, 1>(o, lse, qq, kk, vv, B, T, H, KVH); break;
        case 15: ok = fwd3_run<64, 3, 128, 4, 1>(o, lse, qq, kk, vv, B, T, H, KVH); break;
        case 16: ok = fwd3_run<64, 3, 128, 3, 1, 11>(o, lse, qq, kk, vv, B, T, H, KVH); break;
        default: ok = fwd3_run<64, 3, 64, 4, 1>(o, lse, qq, kk, vv, B, T, H, KVH); break;
        }
    } else {
        ok = fwd3_run<128, 3, 64, 4, 1>(o, lse, qq, kk, vv, B, T, H, KVH);
    }
    return ok ? 0 : -1;
}

// ---------------------------------------------------------------------------------------------
// block-sparse forward over an index list (attn_bf16.h sparse_wgmma_fwd): fwd3's body with the
// list source (fwd3_wg_body, LIST). Handles query blocks of >= 64 rows (CTA = 128 rows of one
// block, 64 for blocks of <= 64 rows, 192 for blocks of >= 1024: wg3 below), regions of a
// multiple of 16 keys (<= 64 granules of gcd(region, 64)), a window, GQA, D 64 / 128; -1
// otherwise (one-row blocks: moba's per-row lists, positions inside (kpos), other D / GPUs,
// MSLAB_SPARSE_WGMMA=0): sparse_bf16_fwd runs those.
// r1 / r2 (H200, 32K, H = 32, D = 128): a cp.async gather by the producer warp (tried in r2,
// removed) lost to the TMA boxes everywhere (ms 12.3 vs 11.1 ms, moba-blk 4.1 vs 2.6 ms).
// wg3: query blocks of >= 1024 rows in CTAs of 3 consumer warpgroups (192 rows) and a producer
// warpgroup (setmaxnreg 32 / 160): each gathered K / V box serves 1.5x the rows (the last CTA
// of a 2048-row block holds 128). Why: the 16-row boxes of w = 16 bound the forward (r2, the
// paper's 8192 keys a list at 32K: w 16 11.1 ms, w 32 8.2, w 64 7.3: the same products, 16 / 8
// / 4 boxes a tile). r3 (32K): ms paper 10.81 -> 8.66 ms (318 -> 397 TFLOP/s), the same budget
// in w 32 / 64: 8.01 -> 7.14 / 7.18 -> 6.57 ms (482 / 523 TFLOP/s).
// s6 (H200, 32K, H = 32, D = 128, the tests' timing rows): the copies of 16-key granules.
//   Kept (X = 2, lists of 16-key granules, D 128, T % 8 == 0): K / V tiles in 8-row groups x
//   both planes, a 5-d box per granule, issued by lanes 0 .. 3: ms paper 8.55 -> 7.46 ms (r2;
//   402 -> 461 TFLOP/s). The grouped tiles with lane 0 issuing: 9.59 ms; lanes alone (planar
//   boxes): 8.44. Not used for 32 / 64-key granules (r2, the same 8192 keys a list: w 32 7.07
//   vs 6.97-7.18 ms, w 64 7.13 vs 6.29-6.77, moba-blk 2.70 vs 2.54-2.59).
//   Removed: a run of consecutive granules in one box (maps of 2-4 granule heights; the local
//   part of an ms list is 128 consecutive regions): 18.98 ms with lane 0 issuing, 9.87 with
//   lanes (r2; ms paper, planar); regions of one granule walked in key order (a bitmap) so
//   selected neighbours form runs: 9.94 (planar + runs + lanes), 9.74 (grouped + runs + lanes)
//   vs 7.46; V alone in two-plane granule-major boxes (r1): behind grouped K and V in all four
//   lists; every producer lane arriving on "full" itself (the racecheck experiment, docs/cuda.md):
//   the same speed. r1 built all of these as run-time flags in one body and every path ran ~2x
//   slower (ms paper 16.1 ms with none set; suspected: the run-time-picked tensor-map pointers
//   and the larger producer): since r2 the kept option is a kernel variant (X).
// Removed in s9 (switches whose alternative lost; H200, 32K, ms paper, the tests' rows, s8 r5):
//   3 ring slots 6.911 ms vs 4 slots 6.870 (s5: 1-3% behind in all four lists); heads fastest
//   in the grid (s5: within noise of a head's CTAs together); 128-row CTAs for 2048-row blocks
//   7.987 ms (430 TFLOP/s) vs 192-row 6.870 (500); the s5 planar copies for 16-key granules at
//   D 128 (MSLAB_SPARSE_WGMMA_OPT=0) 8.856 ms (388) vs the grouped tiles 6.870 (500).
// s9 (H200, B 1, H = KVH = 32, D 128, ms paper, the tests' rows; MSLAB_FWD3_TRACE=1 per-CTA
// trace, fwd3_trace_report): where the 16-key lists lose against dense.
//   r1 trace at 32K: ms paper 2853 consumer cycles a tile (waits on K 9.4%, V 3.6%), w 64 lists
//   2595, dense 2166 (waits 4.5 / 4.4%); SM busy 98% (CTA startup ~3.1K + epilogue ~4.4K cycles
//   of ~298K); the list producer warp busy 94% of its time (dense: 26%): it set the pace. r2
//   sections of that warp: per-key positions + min / max shuffles 40%, K issue (fence, expect,
//   copies) 19%, V issue 14%, V "empty" wait 5%, the walk ~19%.
//   Tried and removed (r1 / r2, reps interleaved from r2; 32K / 128K ms): 5 ring slots 7.13 vs
//   6.87 (r1); a tile of 64 consecutive keys in one box (X 3; ~18% of tiles at 32K) 6.88 /
//   30.68 vs 6.85 / 30.01; persistent CTAs (one an SM walking the items, the next Q after every
//   warpgroup's last S: the warpgroups restart in step, 28-36 bytes of spills, SM busy 79%) 9.26
//   / 37.3; a block's remainder rows in its first CTA (with no products for warpgroups without
//   rows, which stays) 6.78 / 30.32 (noise: the producer, not the tensor cores, set the pace).
//   Kept: r3, the short producer (lane 0 publishes a tile's <= 4 granule keys + min / max, no
//   per-key positions, shuffles or fence): 6.85 -> 6.45 ms at 32K (533 TFLOP/s), 30.0 -> 28.9 at
//   128K (519); r3 / r4, the V copies by a second producer warp (VW): 6.31 / 6.32 ms (544) at
//   32K, 28.2 / 27.5 ms (545) at 128K vs one warp 6.45 / 6.67 and 28.9 / 29.3; trace r4: 2419
//   consumer cycles a tile (was 2853), the walking warp waits 11% of its time. Tried (r4) and
//   removed: two walking warps (each walks the list, emits every other tile) 6.29 / 28.0 ms:
//   the walker then waits 43% of its time but the consumers still take 2416 cycles a tile (waits
//   K 6.0%, V 4.3%; dense 2166 with 4.4 / 4.4%): from there the consumers set the pace.
//   Tried (r5) and removed: S_j issued before reading tile j's info (no has(j) ahead of the
//   product; the sentinel's S on a stale slot dropped): 2821 consumer cycles a tile vs 2420,
//   6.96 vs 6.06 ms at 32K, 30.6 vs 27.1 at 128K (the same run; its clocks ran high: dense
//   615 TFLOP/s). Kept: the tile's info as one int4 in registers (the mask test reads no shared
//   memory after S). r6: no second "full" wait in a list step (has(j) waited): 2420 -> 2357
//   consumer cycles a tile (consumer K waits 6.1 -> 3.3%), ms paper 6.17 ms (557 TFLOP/s) at
//   32K, 27.4 ms (547) at 128K; dense 2166 cycles a tile in every s9 trace (its s8 code path).
//   Tried (r6) and removed: 5 ring slots again (now that the consumers set the pace) 6.31 /
//   28.4 ms (2378 cycles a tile); the tile count counted ahead by a third producer warp so no
//   has(j) precedes S_j 6.67 / 28.8 ms (consumers start ~6K cycles later; 2443 a tile).
// s11 (H200, B 1, H = KVH = 32, D 128, ms paper, the tests' rows sparse_wgmma_fwd_perf; "normal":
// MSLAB_SWF_NORMAL=1, the benchmark's inputs; variants by a switch in the same run, reps 4).
//   Where the time went: the trace gave the same 2337-2339 consumer cycles a tile at 32K and
//   128K (the 128K gap to 32K was not the tiles), ncu (source counters, r2) showed the consumers'
//   instructions: list 385 / dense 380 a warp a tile, of which ~125 address / descriptor math
//   (R2UR, ULOP3, USHF, UIADD3 around every wgmma), 64 O-rescale FMULs; the producers' try_wait
//   loops retried ~85 (V warp) / ~50 (walker) times a tile: 7.4% of all instructions, on the two
//   sub-partitions those warps share with consumers (dense: 5.9%).
//   Kept (r3-r5; all give the same bits: out + lse hashes equal, MSLAB_SWF_HASH): descriptors as
//   base + constant (r3, with the sleep hint and LI: 32K 5.635 -> 5.205 ms, 128K 27.1 / 26.5 ->
//   24.0 / 24.9; sleep hint + LI alone 5.602 / 26.4: the descriptors are most of it); the
//   rescale skip (r4: 32K 5.232 -> 5.146 ms, 128K within noise); the walker's batches (r5, 128K
//   normal 25.3 / 25.4 -> 24.1 / 24.0 ms, 32K equal). Trace (r4, all but BW): 2000 consumer
//   cycles a tile at 32K (was 2339), dense 1802 (2153).
//   Tried and removed: the softmax under P V (r1; ptxas had hoisted the wait_group 0 above it:
//   V_j's wait loop after the softmax ends the basic block and keeps the order): 32K 5.663 /
//   5.658 vs 5.676 / 5.686 ms, 128K 27.18 vs 27.06; + P packed into a second register buffer
//   during the softmax (the loop unrolled by 2): 5.697; + O's rescale after S_{j+1}'s issue
//   (FA3's order): 5.739 / 5.703, trace 2463 cycles a tile vs 2339. The consumers' chain was
//   not the limit; their instruction count was.
//   Final (r6, main's code vs this, the same run): 128K 27.37 / 27.29 -> 24.91 / 24.81 ms normal
//   (601-604 TFLOP/s), 27.48 -> 23.59 periodic (635); 32K 5.800 -> 5.211 normal, 5.769 -> 5.098
//   periodic (674); dense 32K 14.46 -> 12.35 ms (712); bench 128K fwd - select 26.27 / 26.71 ->
//   25.50 / 23.44 ms; parity sparse_wgmma_fwd. 44 / flash_wgmma 3347 passed. r7 (the same):
//   128K normal 27.26 / 27.20 -> 23.53 / 24.33, 32K 5.725 -> 5.071 ms, moba-blk 2.304 -> 2.087,
//   w 64 lists 5.701 -> 5.044; bench fwd - select 26.07 / 26.51 -> 23.63 / 24.60 ms. D 64 (the
//   LM shape, flash_wgmma_perf64, tiling 13; r7 switch per change, 3-4 runs each): the rescale
//   skip cost 5% there (0.50 -> 0.525 ms: 32 products, the vote dearer), the sleep hint and the
//   descriptors neutral (0.496-0.504 vs 0.499-0.501): the skip is D 128 only. r8 (final code,
//   bench inputs): 32K 5.725 -> 5.154 ms, 128K 26.35 -> 24.52, dense 13.66 -> 13.18, D 64 0.50
//   both; parity sparse_wgmma_fwd. 44, flash_wgmma 3347, sparse_wgmma_bwd --quick 340 passed.
//   Trace (r8, 32K): 1936 consumer cycles a tile (dense 1847), but the walker now waits only
//   0.6% of its time: it is the next limit (a per-block tile table built once per list, or the
//   walk's chunk bookkeeping, would be the next step).
// s14 (H200, B 1, T 32K, H = KVH = 12, D 64: the 162M LM's MS forward, ms paper lists by
// select_bf16 on the benchmark's inputs: the tests' row with MSLAB_SWF_H=12 MSLAB_SWF_D=64
// MSLAB_SWF_NORMAL=1; and the LM trace's sparse_fwd line, MSLAB_BF16_TRACE=4 MSLAB_LM_ROWS=1
// mslab-gpu-bench --lm). Before: 1.925 ms (334 TFLOP/s), LM 2040 us a layer: D 64 had neither
// the grouped producer nor the V warp (lane 0 issued every box), and the walker, busy 99% of its
// time at D 128's pace, set it at D 64 where a tile's products take half as long.
//   X 2 at D 64 (r2): a granule's planar 16-row box is already one box for the one plane, so the
//   maps stay the planar ones (no T % 8 condition) and only the producer is X 2's (lanes issue,
//   VW, BW): 1.925 -> 1.549 ms (the same bits), LM 2040 -> 1640 us; trace 1621 consumer cycles a
//   64-key tile, the walker waiting 0.7% of its time.
//   128-key tiles (192-row CTAs; GT = 8 granules a tile, the walker's batches of 4 tiles): 1.487
//   ms (r2; 3 ring slots 1.526, 5 slots +2.5% in r4), the bits of a 128-key tile order.
//   SO, the softmax under P V (OPT 1, r3): 1.477-1.486 -> 1.403-1.406 ms (the same bits; at
//   64-key tiles 1.565 vs 1.545: not used there), LM 1497 us; SB, the scheduler barrier (OPT 8,
//   r4, with the tree max): 1.444-1.447 -> 1.412-1.413 ms (the same bits), LM 1518 us vs main
//   2059 in that (slower) round; the row max as a tree (TM, OPT 2) alone was neutral (r4: 1.445-
//   1.449) but with SB gains (r5: OPT 11 1.410-1.415 vs OPT 9 1.443-1.448; main's path 1.938-
//   1.941 in that snippet; ~400 instructions a warp a tile either way: 64 each of FMNMX, FFMA,
//   MUFU, FADD, 32 F2FP and 32 FMUL, ~40 others; dense 381-398).
//   Tried and removed: S_{j+1} issued before O's rescale (FA3's order: ptxas serialised every
//   wgmma, C7515, with the S issue conditional or not); SO / SB / both for the D 128 list path
//   (r5, 32K ms paper: 5.345 / 5.217 / 5.405 vs 5.187 ms); SO for the dense D 128 forward (32K,
//   the same bits: r5 12.76 vs 13.28 ms in single samples, r6 13.85 / 14.07 vs 13.35 / 12.91);
//   the trace (TR) variant at D 64 is kept (MSLAB_FWD3_TRACE) but its own overhead hides changes
//   of a few %.
//   Final (r7, one snippet, branch head): 1.935-1.937 -> 1.411 ms (333 -> 457 TFLOP/s); LM trace
//   sparse_fwd 2030 -> 1514 us a layer (step 143.6 -> 138.4 ms); dense D 64 32K 3.128 -> 2.899
//   ms; D 128 list / dense hashes equal to main's; parity sparse_wgmma_fwd. 48 / flash_wgmma
//   3347 passed (r6: the same).
//   Left: the consumers at ~2900 cycles a 128-key tile against a MUFU / tensor bound of 1536
//   each (dense D 64 ~2700); the LM's calls run ~7% slower than the tests' row (lists or clocks).
// 5-d map of x [B, T, NH, D = 128] (T % 8 == 0) as (64, 8 rows, 2 planes, B T / 8 groups, NH),
// box (64, 8, 2, groups, 1): [group][plane][8][64] (128-byte swizzle), the grouped tiles (X = 2)
static bool make_map_groups(CUtensorMap *m, const bf16 *x, int B, int T, int NH, int groups) {
    EncodeTiledFn fn = encode_fn();
    if (!fn) return false;
    cuuint64_t dims[5] = {64, 8, 2, (cuuint64_t)B * T / 8, (cuuint64_t)NH};
    cuuint64_t strides[4] = {(cuuint64_t)NH * 256, 128, (cuuint64_t)NH * 256 * 8, 256};
    cuuint32_t box[5] = {64, 8, 2, (cuuint32_t)groups, 1}, es[5] = {1, 1, 1, 1, 1};
    return fn(m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 5, (void *)x, dims, strides, box, es,
              CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
              CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}
// one launch of the list forward (the TR variant under MSLAB_FWD3_TRACE=1)
template <int D, int NWG, int BK, int NS, int PWG, int X, bool VW, int OPT = 0>
static void sparse_launch(const Fwd3Maps &maps, Fwd3List sp, bf16 *out, float *lse, int T, int H,
                          int KVH, dim3 grid) {
    constexpr int BQ = 64 * NWG;
    size_t smem = 1024 + sizeof(bf16) * (size_t)(BQ * D + 2 * NS * BK * D) + 8 * (2 + 6 * NS) +
                  4 * (2 * NS * (4 + BK / 16) + LIST_GBUF);
    float sl2 = WG_LOG2E / sqrtf((float)D);
    if (fwd3_trace_on()) {
        sp.trace = fwd3_trace_buf((size_t)grid.x * grid.y);
        fwd3_go<D, NWG, BK, NS, PWG, true, X, true, VW, OPT>(grid, smem, maps, sp, out, lse, T, H, KVH, sl2);
        fwd3_trace_report(VW ? "list X2 VW" : X == 2 ? "list X2" : "list", sp.trace,
                          (size_t)grid.x * grid.y, grid.x, sp.nsub);
        return;
    }
    fwd3_go<D, NWG, BK, NS, PWG, true, X, false, VW, OPT>(grid, smem, maps, sp, out, lse, T, H, KVH, sl2);
}
// MSLAB_SWF_D64=0: the s13 D 64 list path (planar copies issued by lane 0, 64-key tiles; A/B)
static int swf_old64(void) {
    static int v = -1;
    if (v < 0) {
        const char *e = getenv("MSLAB_SWF_D64");
        v = e && atoi(e) == 0;
    }
    return v;
}
template <int D, int NWG, int NS, int PWG>
static int sparse_run(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v,
                      const AttnIndex *ix, int B, int T, int H, int KVH) {
    constexpr int BQ = 64 * NWG;
    Fwd3List sp;
    memset(&sp, 0, sizeof sp);
    sp.idx = ix->idx, sp.qblock = ix->qblock, sp.nblk = ix->nblk, sp.region = ix->region;
    sp.width = ix->width, sp.window = ix->window;
    sp.nsub = (ix->qblock + BQ - 1) / BQ;
    sp.G = ix->region % 64 == 0 ? 64 : ix->region % 32 == 0 ? 32 : 16;
    sp.gsh = sp.G == 64 ? 6 : sp.G == 32 ? 5 : 4;
    size_t ntile = (size_t)sp.nblk * sp.nsub;
    if (ntile > 0x7fffffffu || (size_t)B * H > 65535u || ix->region / sp.G > 64) return -1;
    Fwd3Maps maps;
    memset(&maps, 0, sizeof maps);
    if (!make_map(&maps.q, q, B, T, H, D, BQ) || !make_map(&maps.k, k, B, T, KVH, D, sp.G) ||
        !make_map(&maps.v, v, B, T, KVH, D, sp.G))
        return -1;
    dim3 grid((unsigned)ntile, B * H);
    if constexpr (D == 64) {
        // X = 2 at D 64 (16-key granules): the planar box of a granule is already one box (one
        // plane), so only the producer differs: lanes issue, VW, BW; 192-row CTAs: 128-key tiles,
        // the softmax under P V, the tree max, the scheduler barrier (OPT 11)
        if (sp.G == 16 && !swf_old64()) {
            if constexpr (PWG == 1) {
                sparse_launch<D, NWG, 128, 4, PWG, 2, true, 11>(maps, sp, out, lse, T, H, KVH, grid);
                return 0;
            }
            sparse_launch<D, NWG, 64, NS, PWG, 2, false>(maps, sp, out, lse, T, H, KVH, grid);
            return 0;
        }
    } else {
        // X = 2 (D = 128, 16-key granules, T % 8 == 0: rows in 8-row groups across the batch): x
        // as (64, 8 rows, 2 planes, B T / 8 groups, NH), box (64, 8, 2, G / 8, 1); else (or no
        // maps) X 0
        bool x2 = sp.G == 16 && T % 8 == 0 && make_map_groups(&maps.ki, k, B, T, KVH, sp.G / 8) &&
                  make_map_groups(&maps.vi, v, B, T, KVH, sp.G / 8);
        if (x2) {
            // a producer warpgroup: the V copies by its second warp (VW)
            sparse_launch<D, NWG, 64, NS, PWG, 2, PWG == 1>(maps, sp, out, lse, T, H, KVH, grid);
            return 0;
        }
    }
    sparse_launch<D, NWG, 64, NS, PWG, 0, false>(maps, sp, out, lse, T, H, KVH, grid);
    return 0;
}
template <int D, int NWG>
static int sparse_ns(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v,
                     const AttnIndex *ix, int B, int T, int H, int KVH) {
    if (NWG == 2 && ix->qblock >= 1024) return sparse_run<D, 3, 4, 1>(out, lse, q, k, v, ix, B, T, H, KVH);
    return sparse_run<D, NWG, 4, 0>(out, lse, q, k, v, ix, B, T, H, KVH);
}

extern "C" int sparse_wgmma_fwd(uint16_t *out, float *lse, const uint16_t *q, const uint16_t *k,
                                const uint16_t *v, const AttnIndex *ix, int B, int T, int H,
                                int KVH, int D) {
    static int off = -1; // MSLAB_SPARSE_WGMMA=0: decline every call (sparse_bf16_fwd runs)
    if (off < 0) {
        const char *e = getenv("MSLAB_SPARSE_WGMMA");
        off = e && !strcmp(e, "0");
    }
    if (off || !ix || ix->kpos || ix->qblock < 64 || ix->region < 16 || ix->region % 16 ||
        ix->width < 1 || ix->window < 0 || !shape_ok(B, T, H, KVH, D))
        return -1;
    bf16 *o = (bf16 *)out;
    const bf16 *qq = (const bf16 *)q, *kk = (const bf16 *)k, *vv = (const bf16 *)v;
    bool two = ix->qblock > 64;
    if (D == 64)
        return two ? sparse_ns<64, 2>(o, lse, qq, kk, vv, ix, B, T, H, KVH)
                   : sparse_ns<64, 1>(o, lse, qq, kk, vv, ix, B, T, H, KVH);
    return two ? sparse_ns<128, 2>(o, lse, qq, kk, vv, ix, B, T, H, KVH)
               : sparse_ns<128, 1>(o, lse, qq, kk, vv, ix, B, T, H, KVH);
}
