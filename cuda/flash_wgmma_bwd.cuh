// flash_wgmma_bwd.cuh: what the wgmma backward files share (cuda/flash_wgmma_bwd.cu: dense and
// block-sparse split / fused kernels; cuda/sparse_wgmma_small.cu: the 16 / 32-key region kernel):
// the list arguments, the ordered-add counters (their bounded waits report a timeout through
// ord_watch.cuh's host-mapped flag since s13), the fp32 red, the Di pre-pass, the accumulator
// convert, and the one grow-only backward workspace.
#ifndef MSLAB_FLASH_WGMMA_BWD_CUH
#define MSLAB_FLASH_WGMMA_BWD_CUH
#include "cuda_common.cuh"
#include "flash_wgmma.cuh"
#include "ord_watch.cuh"
extern "C" {
#include "attn_bf16.h"
}

// The block-sparse list of a backward call (ops.h AttnIndex) and its inverse (sparse_inverse.cuh).
struct SpArgs {
    const int *idx;                 // [B, H, nblk, width] region ids, -1 = empty slot (dQ)
    const int *inv, *start, *count; // the inverse list (sparse_inverse.cuh; dK/dV)
    int nblk, width, qblock, region, window, nreg;
    int hmajor; // grid (tiles, b * heads): the CTAs of one head run together (L2 reuse)
    int desc;   // dK/dV walks: the inverse list latest query block first (flash_wgmma_bwd.cu)
    int hgroup; // dense fused kernel: CTAs in groups of hgroup (b, kv head)s, key blocks outer
                // inside a group (0: the grid's order, key blocks outer; flash_wgmma_bwd.cu)
    // key-list fused kernel (SP 2, sparse_wgmma_keys.cu): the launch's first (b, kv head); the
    // ordered mode (s12: dK / dV by fp32 reduce-adds in a fixed order): per (kv head of the
    // launch, region) the lists that hold it (kcnt; kone: regions listed once written as bf16 by
    // their CTA), per (list of the launch, region) its designated slot (kpos) and its place in
    // the order (krank), per (kv head of the launch, 16-key group) the adds done (kwait); kasc:
    // blocks earliest first (the order's); kjit (tests): CTAs delayed before their adds
    int bk0;
    const int *kcnt, *kpos, *krank;
    int *kwait;
    int kone, kasc, kjit;
    OrdWatch ow; // the ordered waits' watchdog (ord_wait; ord_watch.cuh)
    // (s13) kconv: the ordered mode's dK / dV written by the kernel (a chain's last list adds the
    // sum so far to its rows in registers and writes bf16; kacc: the accumulators [slab][2][T][D];
    // 0: by the convert pass, the tests' reference)
    int kconv;
    float *kacc;
};

// the ordered waits: ord_wait<20> (ord_watch.cuh; bounded, a timeout flagged for the host). For the
// keys backward's dK / dV chains (s12) a skipped middle rank still gives the right sums (another
// order: other bits), a skipped rank 0 lets adds land before its store (lost: wrong dK / dV)

__device__ __forceinline__ void wg_red2(float *p, float x, float y) {
    asm volatile("red.relaxed.gpu.global.add.v2.f32 [%0], {%1, %2};\n" ::"l"(p), "f"(x), "f"(y)
                 : "memory");
}

static __global__ void wg_dq_convert(bf16 *dq, const float *acc, size_t n4, float scale) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n4) return;
    float4 x = __ldcs((const float4 *)acc + i);
    uint2 o = make_uint2(pack_bf16x2(x.x * scale, x.y * scale), pack_bf16x2(x.z * scale, x.w * scale));
    *((uint2 *)dq + i) = o;
}

// Di[b, h, t] = sum_d dout * out (fp32), D / 8 lanes per (b, t, h) row (one 16-byte load of dO
// and of O each), fixed shuffle order; launch on wg_bwd_pre_blocks(rows, D) CTAs of 256. (s9: a
// warp per row, 4 / 8 bytes a lane, ran at ~0.7 TB/s: 143 us per LM layer, B 8 T 4096 H 12 D 64)
// rsc (the sparse backward's fixed-point dQ, flash_wgmma_bwd.cu): also the row's scale 2^s
// [B, T, H] with |any partial sum of the row's dQ| * 2^s < 2^fxb, from kvmax [B, KVH][2] =
// {max |K_jd|, max |V_j|_2} (float bits; G = H / KVH): as sum_j P_ij <= 1,
// |dQ_id| <= sum_j P_ij |dP_ij - Di| |K_jd| <= (|dO_i|_2 max |V_j|_2 + |Di|) max |K_jd|.
// q (with rsc): a row with a non-finite q element gets a NaN scale (its dq row NaN), as the
// reference's: the fixed-point conversion maps a NaN partial to 0, and a sparse list's out row
// need not be NaN there (s10: the 128-key-region fused kernel's NaN q test row; the dense path
// passes no q: its forward's out row is NaN, so Di and the scale are)
// WG_PRE_RPT rows per lane group, their loads issued first (s10 r4: 2 rows with rsc 45.5 us at
// the LM shape vs 41.8 with 1: the rows' index divisions and scales, not the loads, set the pace
// there; now 32-bit divisions and the scale from the exponent bits)
#define WG_PRE_RPT 1
// The fixed point's power-of-2 scale 2^(fxb - e) for a bound bnd < 2^e, e = max(ilogb(bnd) + 1,
// fxb - 127), built from the exponent bits (a subnormal's field 0 gives fxb - 127, as ilogb did;
// s10: bit-equal to ldexpf / ilogbf, which made wg_bwd_pre compute-bound); NaN for a non-finite
// or huge bound (the converts then write NaN rows)
__device__ __forceinline__ float wg_fx_scale(float bnd, int fxb) {
    int eb = (int)((__float_as_uint(bnd) >> 23) & 0xFF);
    int e = bnd > 0.f ? max(eb - 126, fxb - 127) : 0;
    return bnd <= 3e38f ? __int_as_float((fxb - e + 127) << 23) : NAN;
}
static inline unsigned wg_bwd_pre_blocks(size_t rows, int D) {
    return cdiv_u(rows * (D / 8), 256 * WG_PRE_RPT);
}
template <int D>
__global__ void wg_bwd_pre(float *Di, const bf16 *dout, const bf16 *out, int B, int T, int H,
                           float *rsc = nullptr, const unsigned *kvmax = nullptr, int fxb = 61,
                           int G = 1, const bf16 *q = nullptr) {
    constexpr int L = D / 8, R = WG_PRE_RPT; // lanes per row (a divisor of 32: rows never straddle warps)
    int j = threadIdx.x % L;
    size_t nrows = (size_t)B * T * H;
    size_t rowv[R];
    uint4 a[R], c[R], qv[R];
#pragma unroll
    for (int u = 0; u < R; u++) {
        size_t rowi = ((size_t)(blockIdx.x * R + u) * blockDim.x + threadIdx.x) / L;
        rowv[u] = rowi;
        a[u] = c[u] = qv[u] = make_uint4(0, 0, 0, 0);
        if (rowi < nrows) {
            a[u] = ((const uint4 *)(dout + rowi * D))[j], c[u] = ((const uint4 *)(out + rowi * D))[j];
            if (rsc && q) qv[u] = ((const uint4 *)(q + rowi * D))[j];
        }
    }
#pragma unroll
    for (int u = 0; u < R; u++) {
        size_t rowi = rowv[u];
        bool live = rowi < nrows;
        float s = 0.f, ss = 0.f;
        const unsigned *pa = (const unsigned *)&a[u], *pc = (const unsigned *)&c[u];
        const unsigned *pq = (const unsigned *)&qv[u];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float2 x = __bfloat1622float2(*(const __nv_bfloat162 *)&pa[i]);
            float2 y = __bfloat1622float2(*(const __nv_bfloat162 *)&pc[i]);
            s = fmaf(x.x, y.x, s);
            s = fmaf(x.y, y.y, s);
            ss = fmaf(x.x, x.x, fmaf(x.y, x.y, ss));
            if (rsc && q) { // x - x: 0, or NaN for an inf / NaN q element (then ss and the scale are)
                float2 z = __bfloat1622float2(*(const __nv_bfloat162 *)&pq[i]);
                ss += (z.x - z.x) + (z.y - z.y);
            }
        }
#pragma unroll
        for (int o = L / 2; o > 0; o >>= 1) { // every lane takes part (dead rows add zeros)
            s += __shfl_xor_sync(0xffffffffu, s, o);
            ss += __shfl_xor_sync(0xffffffffu, ss, o);
        }
        if (!live || j) continue;
        // the row's (b, t, h): 32-bit divisions where the rows allow (one lane a row does them:
        // 64-bit ones made the rsc path compute-bound, 41.8 vs 26.8 us without rsc, LM shape; now
        // 35.9; s10 r6, the bound loaded with the rows instead: 36.4, not kept)
        unsigned b, t, h;
        if (nrows <= 0xFFFFFFFFull) {
            unsigned r32 = (unsigned)rowi, bt = r32 / (unsigned)H;
            h = r32 - bt * H, t = bt % (unsigned)T, b = bt / (unsigned)T;
        } else {
            size_t bt = rowi / H;
            h = (unsigned)(rowi % H), t = (unsigned)(bt % T), b = (unsigned)(bt / T);
        }
        if (rsc) { // NaN: a non-finite input (the convert writes NaN rows)
            const unsigned *m = kvmax + 2 * ((size_t)b * (H / G) + h / G);
            float bnd = (sqrtf(ss) * __uint_as_float(m[1]) + fabsf(s)) * __uint_as_float(m[0]) * 1.0625f;
            rsc[rowi] = wg_fx_scale(bnd, fxb);
        }
        Di[((size_t)b * H + h) * T + t] = s;
    }
}

// the backward workspace (Di; the fp32 accumulators, the counters, the inverse list): one
// grow-only buffer for every wgmma backward (growing frees the old one, which waits for the
// device); defined in flash_wgmma_bwd.cu
void *wg_bwd_scratch(size_t bytes);
// flash_wgmma_bwd.cu's sparse entry point hands lists of 16 / 32-key regions here first
// (sparse_wgmma_small.cu): 0 = done, -1 = not this kernel's case
int sparse_wgmma_small_bwd(bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *out,
                           const float *lse, const bf16 *q, const bf16 *k, const bf16 *v,
                           const AttnIndex *ix, int B, int T, int H, int KVH, int D);
extern int wg_sp_small; // sq_fused_kernel on (1, the default) / off (MSLAB_SPARSE_WGMMA_BWD)
// sparse_bf16.cu: the lists sorted by region id (-1 last), one CTA per list
void sparse_sort_lists(int *dst, const int *src, size_t nlists, int width);
// the key-centric kernel for the same lists (sparse_wgmma_keys.cu; tried first): 0 = done, -1 =
// not its case
int sparse_wgmma_keys_bwd(bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *out,
                          const float *lse, const bf16 *q, const bf16 *k, const bf16 *v,
                          const AttnIndex *ix, int B, int T, int H, int KVH, int D);
// flash_wgmma_bwd.cu for it: Di (and with rsc the fixed-point dQ's row scales, kvm the K / V
// bound), and bwd_fused_kernel<D, det ? 4 : 0, PIPE, SP 2> on grid (PIPE: atomic 22, ordered 118
// at D 128 (+ the FFMA dQ conversions), 1526 at D 64 (s14; its lse argument must then be lse x log2e,
// as sk_pre writes it); maps: dQ accumulator, Q, dO, and the dK / dV accumulators: the ordered mode
// adds into them in a fixed order, sp's chains)
void wg_bwd_pre_launch(int D, float *Di, float *rsc, unsigned *kvm, const bf16 *dout,
                       const bf16 *out, const bf16 *k, const bf16 *v, int B, int T, int H, int KVH);
// wg_kv_bound alone into kvm (zeroed by the caller; the ordered mode's pre-pass is sk_pre there)
void wg_kv_bound_launch(int D, unsigned *kvm, const bf16 *k, const bf16 *v, int B, int T, int KVH);
// (dk / dv: the ordered mode's once-listed regions; the accumulators are the maps')
void wg_keys_fused_launch(int D, bool det, dim3 grid, bf16 *dk, bf16 *dv, float *dqacc,
                          const bf16 *dout, const float *lse, const float *Di, const bf16 *q,
                          const bf16 *k, const bf16 *v, int T, int H, int KVH, const SpArgs &sp,
                          const float *rsc, const CUtensorMap &dqmap, const CUtensorMap &qmap,
                          const CUtensorMap &omap, const CUtensorMap &accmap);
#endif
