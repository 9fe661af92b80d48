// attention.cu: dense causal grouped-query attention, flash-style, fp32.
//
// q, out: [B, T, H, D]; k, v: [B, T, KVH, D]; query head h reads kv head h / (H / KVH); scale
// 1/sqrt(D); lse: [B, H, T]. No T x T matrix exists anywhere: scores live in one BQ x BK tile of
// shared memory at a time.
//
// Tiles. A block of 256 threads works on BQ query rows x BK keys; thread (ty, tx) = (tid / 16,
// tid % 16) owns rows ty*RQ .. ty*RQ+RQ-1 (RQ = BQ/16) and the columns tx, tx+16, tx+32, ... of
// each tile (CK = BK/16 key columns, CD = DM/16 head-dim columns). The 16 threads of one row group
// are 16 consecutive lanes of a warp, so row max / row sum are 4-step XOR shuffles (fixed order).
// The head dim is padded to DM in {32, 64, 128, 256} (zeros in shared memory), so any D <= 256
// runs; DM <= 128 uses 64 x 64 tiles, DM = 256 uses 32 x 32 (shared memory). Shared rows are
// padded by one float so column-wise reads (K rows across lanes) hit distinct banks.
//
// Forward: block (b, h, query tile), query tiles heaviest (latest) first. Q tile loaded once
// (scaled by 1/sqrt(D), as core/cpu/ does), then for each key tile up to the diagonal: S = Q K^T in
// registers, causal mask, online softmax (running max m, sum l, the output rescaled by
// exp(m_old - m_new)), P to shared memory, O += P V. Saves lse = m + log(l).
//
// attention_decode (queries at positions t0.. over a KV cache) is the same forward kernel with a
// position offset and a longer key range.
//
// Backward (recompute P = exp(S - lse), never stored):
//   Di = rowsum(dout * out) per (b, h, t), in double (pass 0);
//   dK/dV: block (b, kv head, key tile) loops over the query tiles at or after its diagonal and
//     the G query heads of its group: dV += P^T dO, dK += dS^T (scaled Q), dS = P (dP - Di),
//     dP = dO V^T. The block owns its dK/dV rows for the whole reduction;
//   dQ: block (b, h, query tile) loops over the key tiles up to the diagonal: dQ += dS K, then
//     dq += scale * dQ. A separate pass, so dQ rows are owned by one block too.
// Every output element is accumulated by one thread in a fixed loop order and added to the
// gradient (+=) once at the end: no atomics, bitwise-identical on every call.
#include <math.h>

#include "cuda_common.cuh"

#define AT_THREADS 256

template <int DM, int BQ, int BK> struct AttnTile {
    static constexpr int LDD = DM + 1; // padded row of a [rows][DM] tile
    static constexpr int RQ = BQ / 16; // query rows per thread
    static constexpr int RK = BK / 16; // key rows per thread (dK/dV kernel)
    static constexpr int CK = BK / 16; // key columns per thread
    static constexpr int CQ = BQ / 16; // query columns per thread (dK/dV kernel)
    static constexpr int CD = DM / 16; // head-dim columns per thread
    static constexpr size_t fwd_smem = sizeof(float) * ((size_t)(BQ + 2 * BK) * LDD + BQ * (BK + 1));
    static constexpr size_t dq_smem = sizeof(float) * ((size_t)(2 * BQ + 2 * BK) * LDD + BQ * (BK + 1));
    static constexpr size_t dkv_smem =
        sizeof(float) * ((size_t)(2 * BQ + 2 * BK) * LDD + 2 * BK * (BQ + 1) + 2 * BQ);
};

// rows [r0, r0 + rows) of x (row r at x + r * ld), columns [0, D), into dst[rows][LDD] times mul;
// zero for rows >= T and columns >= D
template <int DM, int ROWS>
__device__ __forceinline__ void load_tile(float *dst, const float *x, size_t ld, int r0, int T,
                                          int D, float mul) {
    constexpr int LDD = DM + 1;
    for (int idx = threadIdx.x; idx < ROWS * DM; idx += AT_THREADS) {
        int r = idx / DM, d = idx % DM, t = r0 + r;
        dst[r * LDD + d] = (t < T && d < D) ? x[(size_t)t * ld + d] * mul : 0.0f;
    }
}

// ---------------------------------------------------------------------------------------------
// forward

template <int DM, int BQ, int BK>
__global__ void __launch_bounds__(AT_THREADS)
attn_fwd_kernel(float *out, float *lse, const float *q, const float *k, const float *v, int Tq,
                int Tk, int t0, int H, int KVH, int D, float scale) {
    // Tq query rows at positions t0 .. t0+Tq-1 over Tk >= t0+Tq keys (the training forward:
    // t0 = 0, Tq = Tk = T; attention_decode: one sequence over a KV cache). lse may be NULL.
    using Tl = AttnTile<DM, BQ, BK>;
    constexpr int LDD = Tl::LDD, RQ = Tl::RQ, CK = Tl::CK, CD = Tl::CD, LDS = BK + 1;
    extern __shared__ float sm[];
    float *Qs = sm, *Ks = Qs + BQ * LDD, *Vs = Ks + BK * LDD, *Ps = Vs + BK * LDD;

    int qt = gridDim.x - 1 - blockIdx.x; // latest query tiles (most keys) first
    int b = blockIdx.y / H, h = blockIdx.y % H, kvh = h / (H / KVH);
    int q0 = qt * BQ, ty = threadIdx.x >> 4, tx = threadIdx.x & 15;
    size_t ldq = (size_t)H * D, ldk = (size_t)KVH * D;
    const float *qb = q + ((size_t)b * Tq * H + h) * D;
    const float *kb = k + ((size_t)b * Tk * KVH + kvh) * D;
    const float *vb = v + ((size_t)b * Tk * KVH + kvh) * D;

    load_tile<DM, BQ>(Qs, qb, ldq, q0, Tq, D, scale);
    float o[RQ][CD], m[RQ], l[RQ];
#pragma unroll
    for (int i = 0; i < RQ; i++) {
        m[i] = -INFINITY;
        l[i] = 0.0f;
#pragma unroll
        for (int c = 0; c < CD; c++) o[i][c] = 0.0f;
    }
    int qlast = t0 + min(Tq, q0 + BQ) - 1, nkt = qlast / BK + 1; // qlast: the tile's last position
    for (int kt = 0; kt < nkt; kt++) {
        int j0 = kt * BK;
        __syncthreads(); // the previous tile's K, V, P reads are done (and Q is loaded)
        load_tile<DM, BK>(Ks, kb, ldk, j0, Tk, D, 1.0f);
        load_tile<DM, BK>(Vs, vb, ldk, j0, Tk, D, 1.0f);
        __syncthreads();
        float s[RQ][CK];
#pragma unroll
        for (int i = 0; i < RQ; i++)
#pragma unroll
            for (int c = 0; c < CK; c++) s[i][c] = 0.0f;
#pragma unroll 4
        for (int d = 0; d < DM; d++) {
            float qv[RQ], kv[CK];
#pragma unroll
            for (int i = 0; i < RQ; i++) qv[i] = Qs[(ty * RQ + i) * LDD + d];
#pragma unroll
            for (int c = 0; c < CK; c++) kv[c] = Ks[(tx + 16 * c) * LDD + d];
#pragma unroll
            for (int i = 0; i < RQ; i++)
#pragma unroll
                for (int c = 0; c < CK; c++) s[i][c] = fmaf(qv[i], kv[c], s[i][c]);
        }
#pragma unroll
        for (int i = 0; i < RQ; i++) {
            int t = t0 + q0 + ty * RQ + i; // position of the row
            float mx = -INFINITY;
#pragma unroll
            for (int c = 0; c < CK; c++) {
                if (j0 + tx + 16 * c > t) s[i][c] = -INFINITY; // causal: keys j <= t
                mx = fmaxf(mx, s[i][c]);
            }
#pragma unroll
            for (int w = 8; w >= 1; w >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, w));
            float mnew = fmaxf(m[i], mx);
            // mnew = -inf only if every key so far is masked (never for a real row: key 0 <= t)
            float alpha = mnew == -INFINITY ? 1.0f : expf(m[i] - mnew);
            float sum = 0.0f;
#pragma unroll
            for (int c = 0; c < CK; c++) {
                float p = s[i][c] == -INFINITY ? 0.0f : expf(s[i][c] - mnew);
                Ps[(ty * RQ + i) * LDS + tx + 16 * c] = p;
                sum += p;
            }
#pragma unroll
            for (int w = 8; w >= 1; w >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, w);
            l[i] = l[i] * alpha + sum;
            m[i] = mnew;
#pragma unroll
            for (int c = 0; c < CD; c++) o[i][c] *= alpha;
        }
        __syncthreads();
        int jn = min(BK, qlast + 1 - j0); // keys past the tile's last query have p = 0
#pragma unroll 4
        for (int j = 0; j < jn; j++) {
            float pv[RQ];
#pragma unroll
            for (int i = 0; i < RQ; i++) pv[i] = Ps[(ty * RQ + i) * LDS + j];
#pragma unroll
            for (int c = 0; c < CD; c++) {
                float vv = Vs[j * LDD + tx + 16 * c];
#pragma unroll
                for (int i = 0; i < RQ; i++) o[i][c] = fmaf(pv[i], vv, o[i][c]);
            }
        }
    }
#pragma unroll
    for (int i = 0; i < RQ; i++) {
        int t = q0 + ty * RQ + i; // row
        if (t >= Tq) continue;
        float inv = 1.0f / l[i];
        float *dst = out + (((size_t)b * Tq + t) * H + h) * D;
#pragma unroll
        for (int c = 0; c < CD; c++) {
            int d = tx + 16 * c;
            if (d < D) dst[d] = o[i][c] * inv;
        }
        if (tx == 0 && lse) lse[((size_t)b * H + h) * Tq + t] = m[i] + logf(l[i]);
    }
}

// ---------------------------------------------------------------------------------------------
// backward, pass 0: Di[b, h, t] = sum_d dout[b,t,h,d] out[b,t,h,d] (double), one warp per row

__global__ void attn_bwd_di_kernel(float *Di, const float *dout, const float *out, int B, int T,
                                   int H, int D) {
    size_t row = blockIdx.x * (size_t)(blockDim.x / 32) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= (size_t)B * T * H) return;
    const float *a = dout + row * D, *o = out + row * D;
    double s = 0;
    for (int d = lane; d < D; d += 32) s += (double)a[d] * o[d];
    s = warp_sum(s);
    if (lane == 0) { // row = (b * T + t) * H + h  ->  Di[(b * H + h) * T + t]
        int h = (int)(row % H);
        size_t bt = row / H;
        int t = (int)(bt % T), b = (int)(bt / T);
        Di[((size_t)b * H + h) * T + t] = (float)s;
    }
}

// ---------------------------------------------------------------------------------------------
// backward: dK, dV. Block (b, kv head, key tile); thread rows are keys.

template <int DM, int BQ, int BK>
__global__ void __launch_bounds__(AT_THREADS)
attn_bwd_dkv_kernel(float *dk, float *dv, const float *dout, const float *lse, const float *Di,
                    const float *q, const float *k, const float *v, int T, int H, int KVH, int D,
                    float scale) {
    using Tl = AttnTile<DM, BQ, BK>;
    constexpr int LDD = Tl::LDD, RK = Tl::RK, CQ = Tl::CQ, CD = Tl::CD, LDQ = BQ + 1;
    extern __shared__ float sm[];
    float *Ks = sm, *Vs = Ks + BK * LDD, *Qs = Vs + BK * LDD, *dOs = Qs + BQ * LDD;
    float *Pt = dOs + BQ * LDD, *dSt = Pt + BK * LDQ, *Ls = dSt + BK * LDQ, *Ds = Ls + BQ;

    int kt = blockIdx.x, j0 = kt * BK; // earliest key tiles (most queries) have the lowest index
    int b = blockIdx.y / KVH, kvh = blockIdx.y % KVH, G = H / KVH;
    int ty = threadIdx.x >> 4, tx = threadIdx.x & 15;
    size_t ldq = (size_t)H * D, ldk = (size_t)KVH * D;
    const float *kb = k + ((size_t)b * T * KVH + kvh) * D;
    const float *vb = v + ((size_t)b * T * KVH + kvh) * D;

    load_tile<DM, BK>(Ks, kb, ldk, j0, T, D, 1.0f);
    load_tile<DM, BK>(Vs, vb, ldk, j0, T, D, 1.0f);
    float dka[RK][CD], dva[RK][CD];
#pragma unroll
    for (int i = 0; i < RK; i++)
#pragma unroll
        for (int c = 0; c < CD; c++) dka[i][c] = dva[i][c] = 0.0f;

    int nqt = (T + BQ - 1) / BQ;
    for (int qt = j0 / BQ; qt < nqt; qt++) {
        int q0 = qt * BQ;
        for (int g = 0; g < G; g++) {
            int h = kvh * G + g;
            const float *qb = q + ((size_t)b * T * H + h) * D;
            const float *ob = dout + ((size_t)b * T * H + h) * D;
            __syncthreads(); // previous Q, dO, P, dS reads done
            load_tile<DM, BQ>(Qs, qb, ldq, q0, T, D, scale);
            load_tile<DM, BQ>(dOs, ob, ldq, q0, T, D, 1.0f);
            for (int r = threadIdx.x; r < BQ; r += AT_THREADS) {
                int t = q0 + r;
                Ls[r] = t < T ? lse[((size_t)b * H + h) * T + t] : 0.0f;
                Ds[r] = t < T ? Di[((size_t)b * H + h) * T + t] : 0.0f;
            }
            __syncthreads();
            // S^T[j][i] = K_j . Qs_i, dP^T[j][i] = V_j . dO_i
            float st[RK][CQ], dpt[RK][CQ];
#pragma unroll
            for (int i = 0; i < RK; i++)
#pragma unroll
                for (int c = 0; c < CQ; c++) st[i][c] = dpt[i][c] = 0.0f;
#pragma unroll 2
            for (int d = 0; d < DM; d++) {
                float kv[RK], vv[RK], qv[CQ], ov[CQ];
#pragma unroll
                for (int i = 0; i < RK; i++) {
                    kv[i] = Ks[(ty * RK + i) * LDD + d];
                    vv[i] = Vs[(ty * RK + i) * LDD + d];
                }
#pragma unroll
                for (int c = 0; c < CQ; c++) {
                    qv[c] = Qs[(tx + 16 * c) * LDD + d];
                    ov[c] = dOs[(tx + 16 * c) * LDD + d];
                }
#pragma unroll
                for (int i = 0; i < RK; i++)
#pragma unroll
                    for (int c = 0; c < CQ; c++) {
                        st[i][c] = fmaf(kv[i], qv[c], st[i][c]);
                        dpt[i][c] = fmaf(vv[i], ov[c], dpt[i][c]);
                    }
            }
#pragma unroll
            for (int i = 0; i < RK; i++) {
                int j = j0 + ty * RK + i;
#pragma unroll
                for (int c = 0; c < CQ; c++) {
                    int r = tx + 16 * c, t = q0 + r;
                    float p = (t < T && j <= t) ? expf(st[i][c] - Ls[r]) : 0.0f;
                    Pt[(ty * RK + i) * LDQ + r] = p;
                    dSt[(ty * RK + i) * LDQ + r] = p * (dpt[i][c] - Ds[r]);
                }
            }
            __syncthreads();
            // dV[j] += sum_i P^T[j][i] dO[i];  dK[j] += sum_i dS^T[j][i] Qs[i]
#pragma unroll 2
            for (int r = 0; r < BQ; r++) {
                float pv[RK], sv[RK];
#pragma unroll
                for (int i = 0; i < RK; i++) {
                    pv[i] = Pt[(ty * RK + i) * LDQ + r];
                    sv[i] = dSt[(ty * RK + i) * LDQ + r];
                }
#pragma unroll
                for (int c = 0; c < CD; c++) {
                    float o = dOs[r * LDD + tx + 16 * c], qq = Qs[r * LDD + tx + 16 * c];
#pragma unroll
                    for (int i = 0; i < RK; i++) {
                        dva[i][c] = fmaf(pv[i], o, dva[i][c]);
                        dka[i][c] = fmaf(sv[i], qq, dka[i][c]);
                    }
                }
            }
        }
    }
#pragma unroll
    for (int i = 0; i < RK; i++) {
        int j = j0 + ty * RK + i;
        if (j >= T) continue;
        size_t off = ((size_t)b * T + j) * ldk + (size_t)kvh * D;
#pragma unroll
        for (int c = 0; c < CD; c++) {
            int d = tx + 16 * c;
            if (d >= D) continue;
            if (dk) dk[off + d] += dka[i][c];
            if (dv) dv[off + d] += dva[i][c];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// backward: dQ. Block (b, h, query tile); thread rows are queries.

template <int DM, int BQ, int BK>
__global__ void __launch_bounds__(AT_THREADS)
attn_bwd_dq_kernel(float *dq, const float *dout, const float *lse, const float *Di,
                   const float *q, const float *k, const float *v, int T, int H, int KVH, int D,
                   float scale) {
    using Tl = AttnTile<DM, BQ, BK>;
    constexpr int LDD = Tl::LDD, RQ = Tl::RQ, CK = Tl::CK, CD = Tl::CD, LDS = BK + 1;
    extern __shared__ float sm[];
    float *Qs = sm, *dOs = Qs + BQ * LDD, *Ks = dOs + BQ * LDD, *Vs = Ks + BK * LDD;
    float *dSs = Vs + BK * LDD;

    int qt = gridDim.x - 1 - blockIdx.x;
    int b = blockIdx.y / H, h = blockIdx.y % H, kvh = h / (H / KVH);
    int q0 = qt * BQ, ty = threadIdx.x >> 4, tx = threadIdx.x & 15;
    size_t ldq = (size_t)H * D, ldk = (size_t)KVH * D;
    const float *qb = q + ((size_t)b * T * H + h) * D;
    const float *ob = dout + ((size_t)b * T * H + h) * D;
    const float *kb = k + ((size_t)b * T * KVH + kvh) * D;
    const float *vb = v + ((size_t)b * T * KVH + kvh) * D;

    load_tile<DM, BQ>(Qs, qb, ldq, q0, T, D, scale);
    load_tile<DM, BQ>(dOs, ob, ldq, q0, T, D, 1.0f);
    float L[RQ], Dd[RQ], dqa[RQ][CD];
#pragma unroll
    for (int i = 0; i < RQ; i++) {
        int t = q0 + ty * RQ + i;
        L[i] = t < T ? lse[((size_t)b * H + h) * T + t] : 0.0f;
        Dd[i] = t < T ? Di[((size_t)b * H + h) * T + t] : 0.0f;
#pragma unroll
        for (int c = 0; c < CD; c++) dqa[i][c] = 0.0f;
    }
    int qlast = min(T, q0 + BQ) - 1, nkt = qlast / BK + 1;
    for (int kt = 0; kt < nkt; kt++) {
        int j0 = kt * BK;
        __syncthreads();
        load_tile<DM, BK>(Ks, kb, ldk, j0, T, D, 1.0f);
        load_tile<DM, BK>(Vs, vb, ldk, j0, T, D, 1.0f);
        __syncthreads();
        float s[RQ][CK], dp[RQ][CK];
#pragma unroll
        for (int i = 0; i < RQ; i++)
#pragma unroll
            for (int c = 0; c < CK; c++) s[i][c] = dp[i][c] = 0.0f;
#pragma unroll 2
        for (int d = 0; d < DM; d++) {
            float qv[RQ], ov[RQ], kv[CK], vv[CK];
#pragma unroll
            for (int i = 0; i < RQ; i++) {
                qv[i] = Qs[(ty * RQ + i) * LDD + d];
                ov[i] = dOs[(ty * RQ + i) * LDD + d];
            }
#pragma unroll
            for (int c = 0; c < CK; c++) {
                kv[c] = Ks[(tx + 16 * c) * LDD + d];
                vv[c] = Vs[(tx + 16 * c) * LDD + d];
            }
#pragma unroll
            for (int i = 0; i < RQ; i++)
#pragma unroll
                for (int c = 0; c < CK; c++) {
                    s[i][c] = fmaf(qv[i], kv[c], s[i][c]);
                    dp[i][c] = fmaf(ov[i], vv[c], dp[i][c]);
                }
        }
#pragma unroll
        for (int i = 0; i < RQ; i++) {
            int t = q0 + ty * RQ + i;
#pragma unroll
            for (int c = 0; c < CK; c++) {
                int j = j0 + tx + 16 * c;
                float p = (t < T && j <= t) ? expf(s[i][c] - L[i]) : 0.0f;
                dSs[(ty * RQ + i) * LDS + tx + 16 * c] = p * (dp[i][c] - Dd[i]);
            }
        }
        __syncthreads();
        int jn = min(BK, qlast + 1 - j0);
#pragma unroll 4
        for (int j = 0; j < jn; j++) {
            float sv[RQ];
#pragma unroll
            for (int i = 0; i < RQ; i++) sv[i] = dSs[(ty * RQ + i) * LDS + j];
#pragma unroll
            for (int c = 0; c < CD; c++) {
                float kk = Ks[j * LDD + tx + 16 * c];
#pragma unroll
                for (int i = 0; i < RQ; i++) dqa[i][c] = fmaf(sv[i], kk, dqa[i][c]);
            }
        }
    }
#pragma unroll
    for (int i = 0; i < RQ; i++) {
        int t = q0 + ty * RQ + i;
        if (t >= T) continue;
        float *dst = dq + (((size_t)b * T + t) * H + h) * D;
#pragma unroll
        for (int c = 0; c < CD; c++) {
            int d = tx + 16 * c;
            if (d < D) dst[d] += scale * dqa[i][c];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// host side

// Raise the dynamic shared-memory limit of a kernel once (above 48 KB needs the opt-in).
template <typename K> static void smem_optin(K kernel, size_t bytes, int *done) {
    if (*done) return;
    cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    *done = 1;
}

static void check_shapes(int B, int T, int H, int KVH, int D) {
    MS_ASSERT(KVH > 0 && H % KVH == 0, "attention: H = %d not a multiple of KVH = %d", H, KVH);
    MS_ASSERT(D >= 1 && D <= 256, "attention: head dim %d; the CUDA kernels handle D <= 256", D);
    MS_ASSERT((long)B * H <= 65535, "attention: B * H = %ld exceeds the grid limit", (long)B * H);
}

template <int DM, int BQ, int BK>
static void fwd_launch(float *out, float *lse, const float *q, const float *k, const float *v,
                       int B, int Tq, int Tk, int t0, int H, int KVH, int D, float scale) {
    using Tl = AttnTile<DM, BQ, BK>;
    static int done;
    smem_optin(attn_fwd_kernel<DM, BQ, BK>, Tl::fwd_smem, &done);
    dim3 grid(cdiv_u(Tq, BQ), B * H);
    attn_fwd_kernel<DM, BQ, BK><<<grid, AT_THREADS, Tl::fwd_smem>>>(out, lse, q, k, v, Tq, Tk, t0,
                                                                    H, KVH, D, scale);
    cudaLaunchCheck();
}

static void fwd_dispatch(float *out, float *lse, const float *q, const float *k, const float *v,
                         int B, int Tq, int Tk, int t0, int H, int KVH, int D) {
    float scale = (float)(1.0 / sqrt((double)D));
    if (D <= 32) fwd_launch<32, 64, 64>(out, lse, q, k, v, B, Tq, Tk, t0, H, KVH, D, scale);
    else if (D <= 64) fwd_launch<64, 64, 64>(out, lse, q, k, v, B, Tq, Tk, t0, H, KVH, D, scale);
    else if (D <= 128) fwd_launch<128, 64, 64>(out, lse, q, k, v, B, Tq, Tk, t0, H, KVH, D, scale);
    else fwd_launch<256, 32, 32>(out, lse, q, k, v, B, Tq, Tk, t0, H, KVH, D, scale);
}

template <int DM, int BQ, int BK>
static void bwd_launch(float *dq, float *dk, float *dv, const float *dout, const float *lse,
                       const float *Di, const float *q, const float *k, const float *v, int B,
                       int T, int H, int KVH, int D, float scale) {
    using Tl = AttnTile<DM, BQ, BK>;
    static int done_kv, done_q;
    if (dk || dv) {
        smem_optin(attn_bwd_dkv_kernel<DM, BQ, BK>, Tl::dkv_smem, &done_kv);
        dim3 grid(cdiv_u(T, BK), B * KVH);
        attn_bwd_dkv_kernel<DM, BQ, BK><<<grid, AT_THREADS, Tl::dkv_smem>>>(
            dk, dv, dout, lse, Di, q, k, v, T, H, KVH, D, scale);
        cudaLaunchCheck();
    }
    if (dq) {
        smem_optin(attn_bwd_dq_kernel<DM, BQ, BK>, Tl::dq_smem, &done_q);
        dim3 grid(cdiv_u(T, BQ), B * H);
        attn_bwd_dq_kernel<DM, BQ, BK><<<grid, AT_THREADS, Tl::dq_smem>>>(
            dq, dout, lse, Di, q, k, v, T, H, KVH, D, scale);
        cudaLaunchCheck();
    }
}

void cuda_attention_fwd(float *out, float *lse, const float *q, const float *k, const float *v,
                        int B, int T, int H, int KVH, int D) {
    check_shapes(B, T, H, KVH, D);
    if (B <= 0 || T <= 0) return;
    fwd_dispatch(out, lse, q, k, v, B, T, T, 0, H, KVH, D);
}

// New queries over a KV cache: the forward kernel with the rows at positions t0 .. t0+Tq-1 and
// t0+Tq keys, no lse. Same tiles, same online softmax (so the rows match attention_fwd's up to the
// order of the key tiles, which is the same).
void cuda_attention_decode(float *out, const float *q, const float *k, const float *v, int Tq,
                           int t0, int H, int KVH, int D) {
    MS_ASSERT(Tq > 0 && t0 >= 0, "attention_decode: Tq = %d, t0 = %d", Tq, t0);
    check_shapes(1, Tq, H, KVH, D);
    fwd_dispatch(out, NULL, q, k, v, 1, Tq, t0 + Tq, t0, H, KVH, D);
}

void cuda_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *out,
                        const float *lse, const float *q, const float *k, const float *v, int B,
                        int T, int H, int KVH, int D) {
    check_shapes(B, T, H, KVH, D);
    if (B <= 0 || T <= 0 || (!dq && !dk && !dv)) return;
    float scale = (float)(1.0 / sqrt((double)D));
    size_t rows = (size_t)B * T * H;
    float *Di = (float *)cuda_scratch(SCRATCH_ATTN, rows * sizeof(float));
    attn_bwd_di_kernel<<<cdiv_u(rows, 8), 256>>>(Di, dout, out, B, T, H, D);
    cudaLaunchCheck();
    if (D <= 32) bwd_launch<32, 64, 64>(dq, dk, dv, dout, lse, Di, q, k, v, B, T, H, KVH, D, scale);
    else if (D <= 64) bwd_launch<64, 64, 64>(dq, dk, dv, dout, lse, Di, q, k, v, B, T, H, KVH, D, scale);
    else if (D <= 128) bwd_launch<128, 64, 64>(dq, dk, dv, dout, lse, Di, q, k, v, B, T, H, KVH, D, scale);
    else bwd_launch<256, 32, 32>(dq, dk, dv, dout, lse, Di, q, k, v, B, T, H, KVH, D, scale);
}
