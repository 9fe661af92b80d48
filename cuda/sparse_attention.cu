// sparse_attention.cu: block-sparse causal attention over an index list (ops.h: AttnIndex), fp32:
// the numeric core of ms, moba, s2 and window (reference: core/cpu/cpu_sparse_attention.c).
//
// Keys are read through the list, never gathered into a copy of the sequence: a block walks the
// list slot by slot with a cursor (thread 0 packs up to KT = 32 key indices, several small regions
// sharing one tile), and the block loads those K/V rows (K rotated when the list carries
// positions) into shared memory. One mask serves every kind: row t sees key j iff j <= t and
// (no window or j > t - window); unused lanes hold j = INT_MAX.
//
// Forward: block (b, h, query block c, sub-tile of RB <= 16 rows), one warp per query row. Lane i
// scores key i of the tile (a serial dot over the padded head dim), warp max / sum (fixed XOR
// butterflies), online softmax; lane l owns dims l, l+32, ... of the output. lse saved.
// Backward (P recomputed from lse, Di = rowsum(dout * out) in double):
//   dQ: the forward's blocks and walk again: dS = P (dP - Di), dQ += dS K, rotated back.
//   dK/dV: block (b, kv head, key region r, chunk of KT keys of r). It finds, in a fixed order
//     (query head of the group, then query block), the lists that hold r, i.e. it inverts the
//     index list on the fly, 512 lists per step; for each (head, block, slot) it loads the chunk's
//     keys rotated at that slot's position, streams the block's rows that can see them, one warp
//     per key: dV += P dO, dK += dS q (scaled, rotated q), rotated back per slot. The block owns
//     its keys' dK/dV rows for the whole reduction and adds them (+=) once at the end.
// No atomics anywhere: every gradient element is summed by one thread in a fixed order, so two
// calls give bitwise-identical results.
// Positions inside (ix->kpos): q rows and keys rotated on load (angle pos * inv_freq in double,
// cos/sin rounded to float, as core/cpu), gradients rotated back: dq/dk are those of the
// un-rotated q/k. inv_freq is device memory.
#include <limits.h>
#include <math.h>

#include "cuda_common.cuh"

#define KT 32   // keys per tile
#define RBMAX 16 // query rows (warps) per forward / dQ block
#define DKV_WARPS 16
#define DKV_RT 16 // query rows per tile in the dK/dV kernel
#define DKV_SCAN 512

struct SpArgs {
    const int *idx, *kpos, *qpos;
    const float *inv_freq;
    int style, qblock, nblk, region, width, window;
    int B, T, H, KVH, D;
    float scale;
};

static SpArgs sp_args(const AttnIndex *ix, int B, int T, int H, int KVH, int D) {
    SpArgs a;
    a.idx = ix->idx, a.kpos = ix->kpos, a.qpos = ix->qpos, a.inv_freq = ix->inv_freq;
    a.style = ix->rope_style, a.qblock = ix->qblock, a.nblk = ix->nblk, a.region = ix->region;
    a.width = ix->width, a.window = ix->window;
    a.B = B, a.T = T, a.H = H, a.KVH = KVH, a.D = D;
    a.scale = (float)(1.0 / sqrt((double)D));
    return a;
}

// element d of R(sign * angle(pos)) src * mul (a scaled copy when !rot)
__device__ __forceinline__ float rot_elem(const float *src, int d, int D, int pos,
                                          const SpArgs &a, float mul, int sign, bool rot) {
    if (!rot) return src[d] * mul;
    int half = D / 2, i, ia, ib;
    bool first;
    if (a.style == ROPE_INTERLEAVED) {
        i = d >> 1, ia = 2 * i, ib = ia + 1, first = !(d & 1);
    } else {
        i = d < half ? d : d - half, ia = i, ib = i + half, first = d < half;
    }
    double ang = (double)pos * (double)a.inv_freq[i];
    float c = (float)cos(ang), s = sign * (float)sin(ang);
    float x = src[ia], y = src[ib];
    return (first ? (x * c - y * s) : (x * s + y * c)) * mul;
}

// Thread 0: packs the next <= KT keys of the list (rows [t0, t1) of the block) into kj / kp.
__device__ void fill_keys(const SpArgs &a, const int *list, const int *kpl, int t0, int t1,
                          int *kj, int *kp, int *cur) {
    int slot = cur[0], j = cur[1], n = 0;
    while (n < KT && slot < a.width) {
        int r = list[slot];
        if (r < 0) {
            slot = a.width;
            break;
        }
        int lo = r * a.region, e = min(min(a.T, lo + a.region), t1);
        if (a.window) lo = max(lo, t0 - a.window + 1);
        if (j < lo) j = lo;
        if (j >= e) {
            slot++, j = INT_MIN;
            continue;
        }
        kj[n] = j;
        kp[n] = kpl ? kpl[slot] + j - r * a.region : 0;
        n++, j++;
    }
    for (int i = n; i < KT; i++) kj[i] = INT_MAX;
    cur[0] = slot, cur[1] = j, cur[2] = n;
}

// ---------------------------------------------------------------------------------------------
// forward (BWD = 0) and dQ (BWD = 1): block (query block c, sub-tile) x (b, h)

template <int DM, int BWD>
__global__ void __launch_bounds__(32 * RBMAX)
sp_rows_kernel(float *out, float *lse, const float *q, const float *k, const float *v,
               const float *dout, const float *Dbuf, SpArgs a, int RB, int nsub) {
    constexpr int NX = DM / 32, LDD = DM + 1;
    extern __shared__ float sm[];
    float *Ks = sm, *Vs = Ks + KT * LDD, *Qs = Vs + KT * LDD, *dOs = Qs + RB * DM;
    __shared__ int kj[KT], kp[KT], cur[3];
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, D = a.D, T = a.T, H = a.H;
    int c = a.nblk - 1 - (int)(blockIdx.x / nsub), sub = blockIdx.x % nsub; // later blocks first
    int b = blockIdx.y / H, h = blockIdx.y % H, kvh = h / (H / a.KVH);
    int start = c * a.qblock, t0 = start + sub * RB;
    int t1 = min(T, start + min(a.qblock, (sub + 1) * RB));
    if (t0 >= t1) return;
    size_t li = ((size_t)b * H + h) * a.nblk + c;
    const int *list = a.idx + li * a.width;
    const int *kpl = a.kpos ? a.kpos + li * a.width : NULL;
    bool rot = kpl != NULL;
    int qpos0 = rot ? a.qpos[li] + t0 - start : 0;
    size_t ldk = (size_t)a.KVH * D;
    const float *kb = k + ((size_t)b * T * a.KVH + kvh) * D;
    const float *vb = v + ((size_t)b * T * a.KVH + kvh) * D;
    for (int e = tid; e < RB * DM; e += blockDim.x) {
        int r = e / DM, d = e % DM, t = t0 + r;
        const float *src = q + (((size_t)b * T + t) * H + h) * D;
        Qs[e] = (t < t1 && d < D) ? rot_elem(src, d, D, qpos0 + r, a, a.scale, 1, rot) : 0.0f;
        if (BWD) dOs[e] = (t < t1 && d < D) ? dout[(((size_t)b * T + t) * H + h) * D + d] : 0.0f;
    }
    int t = t0 + warp;
    bool rowok = t < t1;
    float acc[NX];
#pragma unroll
    for (int x = 0; x < NX; x++) acc[x] = 0.0f;
    float m = -INFINITY, l = 0.0f, L = 0.0f, Di = 0.0f;
    if (BWD && rowok) {
        L = lse[((size_t)b * H + h) * T + t];
        Di = Dbuf[((size_t)b * H + h) * T + t];
    }
    if (tid == 0) cur[0] = 0, cur[1] = INT_MIN;
    for (;;) {
        __syncthreads();
        if (tid == 0) fill_keys(a, list, kpl, t0, t1, kj, kp, cur);
        __syncthreads();
        int nk = cur[2];
        if (nk == 0) break;
        for (int e = tid; e < KT * DM; e += blockDim.x) {
            int i = e / DM, d = e % DM;
            bool ok = i < nk && d < D;
            Ks[i * LDD + d] = ok ? rot_elem(kb + (size_t)kj[i] * ldk, d, D, kp[i], a, 1.0f, 1, rot) : 0.0f;
            Vs[i * LDD + d] = ok ? vb[(size_t)kj[i] * ldk + d] : 0.0f;
        }
        __syncthreads();
        if (!rowok) continue;
        int j = kj[lane];
        bool vis = j <= t && (!a.window || j > t - a.window);
        const float *qr = Qs + warp * DM, *kr = Ks + lane * LDD;
        float s = 0.0f;
#pragma unroll 8
        for (int d = 0; d < DM; d++) s = fmaf(qr[d], kr[d], s);
        if (!BWD) {
            s = vis ? s : -INFINITY;
            float mx = warp_max(s);
            if (mx == -INFINITY) continue;
            float mn = fmaxf(m, mx), alpha = expf(m - mn);
            float p = vis ? expf(s - mn) : 0.0f;
            l = l * alpha + warp_sum(p);
#pragma unroll
            for (int x = 0; x < NX; x++) acc[x] *= alpha;
            for (int i = 0; i < nk; i++) {
                float pi = __shfl_sync(0xffffffffu, p, i);
#pragma unroll
                for (int x = 0; x < NX; x++) acc[x] = fmaf(pi, Vs[i * LDD + lane + 32 * x], acc[x]);
            }
            m = mn;
        } else {
            const float *dr = dOs + warp * DM, *vr = Vs + lane * LDD;
            float dp = 0.0f;
#pragma unroll 8
            for (int d = 0; d < DM; d++) dp = fmaf(dr[d], vr[d], dp);
            float p = vis ? expf(s - L) : 0.0f, ds = p * (dp - Di);
            for (int i = 0; i < nk; i++) {
                float di = __shfl_sync(0xffffffffu, ds, i);
#pragma unroll
                for (int x = 0; x < NX; x++) acc[x] = fmaf(di, Ks[i * LDD + lane + 32 * x], acc[x]);
            }
        }
    }
    if (!rowok) return;
    if (!BWD) {
        float inv = l > 0 ? 1.0f / l : 0.0f;
        float *dst = out + (((size_t)b * T + t) * H + h) * D;
#pragma unroll
        for (int x = 0; x < NX; x++)
            if (lane + 32 * x < D) dst[lane + 32 * x] = acc[x] * inv;
        if (lane == 0) lse[((size_t)b * H + h) * T + t] = l > 0 ? m + logf(l) : INFINITY;
    } else { // out is dq here: rotate the row back (scale folded in) and accumulate
        float *row = Qs + warp * DM;
        __syncwarp();
#pragma unroll
        for (int x = 0; x < NX; x++) row[lane + 32 * x] = acc[x];
        __syncwarp();
        float *dst = out + (((size_t)b * T + t) * H + h) * D;
#pragma unroll
        for (int x = 0; x < NX; x++) {
            int d = lane + 32 * x;
            if (d < D) dst[d] += rot_elem(row, d, D, qpos0 + warp, a, a.scale, -1, rot);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// dK / dV: block (key region r, chunk) x (b, kv head)

template <int DM>
__global__ void __launch_bounds__(32 * DKV_WARPS)
sp_dkv_kernel(float *dk, float *dv, const float *dout, const float *lse, const float *Dbuf,
              const float *q, const float *k, const float *v, SpArgs a, int nch) {
    constexpr int NX = DM / 32, LDD = DM + 1, KPW = KT / DKV_WARPS;
    extern __shared__ float sm[];
    float *Ks = sm, *Vs = Ks + KT * LDD, *Qs = Vs + KT * LDD, *dOs = Qs + DKV_RT * LDD;
    float *Ls = dOs + DKV_RT * LDD, *Ds = Ls + DKV_RT, *buf = Ds + DKV_RT; // buf [warps][KPW][DM]
    __shared__ int slots[DKV_SCAN];
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, D = a.D, T = a.T, H = a.H;
    int r = blockIdx.x / nch, ch = blockIdx.x % nch;
    int b = blockIdx.y / a.KVH, kvh = blockIdx.y % a.KVH, G = H / a.KVH;
    int j0 = r * a.region + ch * KT, j1 = min(T, min((r + 1) * a.region, j0 + KT));
    if (j0 >= j1) return;
    int nck = j1 - j0;
    size_t ldk = (size_t)a.KVH * D;
    const float *kb = k + ((size_t)b * T * a.KVH + kvh) * D;
    const float *vb = v + ((size_t)b * T * a.KVH + kvh) * D;
    for (int e = tid; e < KT * DM; e += blockDim.x) {
        int i = e / DM, d = e % DM;
        Vs[i * LDD + d] = (i < nck && d < D) ? vb[(size_t)(j0 + i) * ldk + d] : 0.0f;
    }
    float dka[KPW][NX], dva[KPW][NX], dkp[KPW][NX];
#pragma unroll
    for (int kk = 0; kk < KPW; kk++)
#pragma unroll
        for (int x = 0; x < NX; x++) dka[kk][x] = dva[kk][x] = 0.0f;
    bool rot = a.kpos != NULL;
    int c_lo = j0 / a.qblock, c_hi = a.nblk - 1;
    if (a.window) c_hi = min(c_hi, (j1 - 1 + a.window - 1) / a.qblock);
    for (int h = kvh * G; h < (kvh + 1) * G; h++) {
        const float *qb = q + ((size_t)b * T * H + h) * D;
        const float *ob = dout + ((size_t)b * T * H + h) * D;
        for (int cb = c_lo; cb <= c_hi; cb += DKV_SCAN) {
            __syncthreads();
            for (int i = tid; i < DKV_SCAN; i += blockDim.x) { // which lists hold r, at which slot
                int c = cb + i, sl = -1;
                if (c <= c_hi) {
                    const int *list = a.idx + (((size_t)b * H + h) * a.nblk + c) * a.width;
                    for (int s = 0; s < a.width; s++) {
                        int x = list[s];
                        if (x < 0) break;
                        if (x == r) {
                            sl = s;
                            break;
                        }
                    }
                }
                slots[i] = sl;
            }
            __syncthreads();
            int nc = min(DKV_SCAN, c_hi - cb + 1);
            for (int ic = 0; ic < nc; ic++) {
                int slot = slots[ic];
                if (slot < 0) continue;
                int c = cb + ic;
                size_t li = ((size_t)b * H + h) * a.nblk + c;
                int kp0 = rot ? a.kpos[li * a.width + slot] - r * a.region : 0; // key j at kp0 + j
                int qp0 = rot ? a.qpos[li] - c * a.qblock : 0;                   // row t at qp0 + t
                __syncthreads(); // the previous pair's reads of Ks / Qs are done
                for (int e = tid; e < KT * DM; e += blockDim.x) {
                    int i = e / DM, d = e % DM;
                    Ks[i * LDD + d] = (i < nck && d < D)
                                          ? rot_elem(kb + (size_t)(j0 + i) * ldk, d, D, kp0 + j0 + i, a, 1.0f, 1, rot)
                                          : 0.0f;
                }
#pragma unroll
                for (int kk = 0; kk < KPW; kk++)
#pragma unroll
                    for (int x = 0; x < NX; x++) dkp[kk][x] = 0.0f;
                int rs = max(c * a.qblock, j0), re = min(T, (c + 1) * a.qblock);
                if (a.window) re = min(re, j1 - 1 + a.window);
                for (int rt0 = rs; rt0 < re; rt0 += DKV_RT) {
                    __syncthreads();
                    for (int e = tid; e < DKV_RT * DM; e += blockDim.x) {
                        int rr = e / DM, d = e % DM, t = rt0 + rr;
                        bool ok = t < re && d < D;
                        Qs[rr * LDD + d] = ok ? rot_elem(qb + (size_t)t * H * D, d, D, qp0 + t, a, a.scale, 1, rot) : 0.0f;
                        dOs[rr * LDD + d] = ok ? ob[(size_t)t * H * D + d] : 0.0f;
                    }
                    for (int rr = tid; rr < DKV_RT; rr += blockDim.x) {
                        int t = rt0 + rr;
                        Ls[rr] = t < re ? lse[((size_t)b * H + h) * T + t] : INFINITY;
                        Ds[rr] = t < re ? Dbuf[((size_t)b * H + h) * T + t] : 0.0f;
                    }
                    __syncthreads();
                    int nr = min(DKV_RT, re - rt0);
#pragma unroll
                    for (int kk = 0; kk < KPW; kk++) {
                        int i = warp + DKV_WARPS * kk, j = j0 + i;
                        if (i >= nck) continue;
                        for (int rr = 0; rr < nr; rr++) {
                            int t = rt0 + rr;
                            if (j > t || (a.window && j <= t - a.window)) continue;
                            float s = 0.0f, dp = 0.0f;
#pragma unroll
                            for (int x = 0; x < NX; x++) {
                                int d = lane + 32 * x;
                                s = fmaf(Qs[rr * LDD + d], Ks[i * LDD + d], s);
                                dp = fmaf(dOs[rr * LDD + d], Vs[i * LDD + d], dp);
                            }
                            s = warp_sum(s);
                            dp = warp_sum(dp);
                            float p = expf(s - Ls[rr]), ds = p * (dp - Ds[rr]);
#pragma unroll
                            for (int x = 0; x < NX; x++) {
                                int d = lane + 32 * x;
                                dva[kk][x] = fmaf(p, dOs[rr * LDD + d], dva[kk][x]);
                                dkp[kk][x] = fmaf(ds, Qs[rr * LDD + d], dkp[kk][x]);
                            }
                        }
                    }
                }
                // this slot's dK, rotated back at its positions
#pragma unroll
                for (int kk = 0; kk < KPW; kk++) {
                    int i = warp + DKV_WARPS * kk;
                    if (!rot) {
#pragma unroll
                        for (int x = 0; x < NX; x++) dka[kk][x] += dkp[kk][x];
                        continue;
                    }
                    float *row = buf + ((size_t)warp * KPW + kk) * DM;
                    __syncwarp();
#pragma unroll
                    for (int x = 0; x < NX; x++) row[lane + 32 * x] = dkp[kk][x];
                    __syncwarp();
#pragma unroll
                    for (int x = 0; x < NX; x++) {
                        int d = lane + 32 * x;
                        if (d < D && i < nck) dka[kk][x] += rot_elem(row, d, D, kp0 + j0 + i, a, 1.0f, -1, true);
                    }
                }
            }
        }
    }
#pragma unroll
    for (int kk = 0; kk < KPW; kk++) {
        int i = warp + DKV_WARPS * kk;
        if (i >= nck) continue;
        size_t row = (size_t)(j0 + i) * ldk;
#pragma unroll
        for (int x = 0; x < NX; x++) {
            int d = lane + 32 * x;
            if (d < D) {
                dk[((size_t)b * T * a.KVH + kvh) * D + row + d] += dka[kk][x];
                dv[((size_t)b * T * a.KVH + kvh) * D + row + d] += dva[kk][x];
            }
        }
    }
}

// Di[b, h, t] = sum_d dout * out, in double
__global__ void sp_di_kernel(float *Di, const float *dout, const float *out, int B, int T, int H,
                             int D) {
    size_t n = (size_t)B * H * T;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        int t = (int)(i % T), h = (int)((i / T) % H), b = (int)(i / T / H);
        size_t o = (((size_t)b * T + t) * H + h) * D;
        double s = 0;
        for (int d = 0; d < D; d++) s += (double)dout[o + d] * out[o + d];
        Di[i] = (float)s;
    }
}

// ---------------------------------------------------------------------------------------------
// host side

static size_t rows_smem(int DM, int RB, int bwd) {
    return sizeof(float) * ((size_t)2 * KT * (DM + 1) + (size_t)(bwd ? 2 : 1) * RB * DM);
}
static size_t dkv_smem(int DM) {
    return sizeof(float) * ((size_t)2 * KT * (DM + 1) + 2 * DKV_RT * (DM + 1) + 2 * DKV_RT +
                            (size_t)DKV_WARPS * (KT / DKV_WARPS) * DM);
}

template <int DM, int BWD>
static void launch_rows(float *out, float *lse, const float *q, const float *k, const float *v,
                        const float *dout, const float *Di, const SpArgs &a) {
    int RB = min(RBMAX, a.qblock), nsub = (a.qblock + RB - 1) / RB;
    size_t smem = rows_smem(DM, RB, BWD);
    static bool attr = false;
    if (!attr) {
        cudaCheck(cudaFuncSetAttribute(sp_rows_kernel<DM, BWD>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       (int)rows_smem(DM, RBMAX, BWD)));
        attr = true;
    }
    dim3 grid((unsigned)((size_t)a.nblk * nsub), (unsigned)(a.B * a.H));
    sp_rows_kernel<DM, BWD><<<grid, 32 * RB, smem>>>(out, lse, q, k, v, dout, Di, a, RB, nsub);
    cudaLaunchCheck();
}

template <int DM>
static void launch_dkv(float *dk, float *dv, const float *dout, const float *lse, const float *Di,
                       const float *q, const float *k, const float *v, const SpArgs &a) {
    static bool attr = false;
    if (!attr) {
        cudaCheck(cudaFuncSetAttribute(sp_dkv_kernel<DM>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       (int)dkv_smem(DM)));
        attr = true;
    }
    int nreg = (a.T + a.region - 1) / a.region, nch = (a.region + KT - 1) / KT;
    dim3 grid((unsigned)((size_t)nreg * nch), (unsigned)(a.B * a.KVH));
    sp_dkv_kernel<DM><<<grid, 32 * DKV_WARPS, dkv_smem(DM)>>>(dk, dv, dout, lse, Di, q, k, v, a, nch);
    cudaLaunchCheck();
}

static int pick_dm(int D) {
    MS_ASSERT(D > 0 && D <= 256, "sparse attention (CUDA): head dim %d > 256", D);
    MS_ASSERT(D % 2 == 0, "sparse attention (CUDA): odd head dim %d", D);
    return D <= 64 ? 64 : D <= 128 ? 128 : 256;
}

void cuda_sparse_attention_fwd(float *out, float *lse, const float *q, const float *k,
                               const float *v, const AttnIndex *ix, int B, int T, int H, int KVH,
                               int D) {
    MS_ASSERT(KVH > 0 && H % KVH == 0, "attention: H = %d not a multiple of KVH = %d", H, KVH);
    SpArgs a = sp_args(ix, B, T, H, KVH, D);
    switch (pick_dm(D)) {
    case 64: launch_rows<64, 0>(out, lse, q, k, v, NULL, NULL, a); break;
    case 128: launch_rows<128, 0>(out, lse, q, k, v, NULL, NULL, a); break;
    default: launch_rows<256, 0>(out, lse, q, k, v, NULL, NULL, a); break;
    }
}

void cuda_sparse_attention_bwd(float *dq, float *dk, float *dv, const float *dout,
                               const float *out, const float *lse, const float *q, const float *k,
                               const float *v, const AttnIndex *ix, int B, int T, int H, int KVH,
                               int D) {
    MS_ASSERT(KVH > 0 && H % KVH == 0, "attention: H = %d not a multiple of KVH = %d", H, KVH);
    MS_ASSERT(dq && dk && dv, "sparse attention backward: every gradient is needed");
    SpArgs a = sp_args(ix, B, T, H, KVH, D);
    size_t nrow = (size_t)B * H * T;
    float *Di = (float *)cuda_scratch(SCRATCH_SPARSE, nrow * sizeof(float));
    sp_di_kernel<<<grid_for(nrow, 256), 256>>>(Di, dout, out, B, T, H, D);
    cudaLaunchCheck();
    switch (pick_dm(D)) {
    case 64:
        launch_rows<64, 1>(dq, (float *)lse, q, k, v, dout, Di, a);
        launch_dkv<64>(dk, dv, dout, lse, Di, q, k, v, a);
        break;
    case 128:
        launch_rows<128, 1>(dq, (float *)lse, q, k, v, dout, Di, a);
        launch_dkv<128>(dk, dv, dout, lse, Di, q, k, v, a);
        break;
    default:
        launch_rows<256, 1>(dq, (float *)lse, q, k, v, dout, Di, a);
        launch_dkv<256>(dk, dv, dout, lse, Di, q, k, v, a);
        break;
    }
}
