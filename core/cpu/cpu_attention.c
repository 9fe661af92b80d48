// cpu_attention.c: dense causal grouped-query attention, flash-style (no T x T matrix).
//
// Work is cut in tiles: a query tile is QT consecutive time steps x the G = H/KVH query heads that
// share one kv head (their rows are adjacent in memory, and they read the same keys, so one packed
// key block serves G heads). Keys are visited in blocks of KB. Scores, P.V and the four backward
// products are small GEMMs (cpu_gemm_small) on tiles that stay in L1/L2. Memory: no T x T matrix;
// per thread O(QROWS x (KB + D)) floats of tiles, plus keys packed as K^T once per call (forward:
// one shared copy the size of k; backward: K^T and V^T of the (b, kv head) a thread works on).
//
// Forward: online softmax over key blocks (running max m, running sum l, output rescaled by
// exp(m_old - m_new)); saves lse = m + log(l). Parallel over (b, kv head, query tile).
// Backward: recomputes p = exp(s - lse); dp = dout . v; ds = p (dp - Di), Di = dout_i . out_i;
// dv += p^T dout, dk += ds^T (scale q), dq += scale ds k. Parallel over (b, kv head): a thread
// owns every dq, dk, dv row it writes, so there are no atomics and no order that depends on
// threads.
//
// Determinism: KB and QT are constants of the build (not of the thread count), key blocks are
// visited in order, and every sum is a fixed-order chain, so repeated calls are bitwise identical.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=fast") // FMA in the tile GEMMs (see cpu_matmul.c)
#elif defined(__clang__)
#pragma clang fp contract(fast)
#endif

#include <math.h>
#include <stdlib.h>

#include "../common.h"
#include "../ops.h"
#include "cpu_internal.h"

#define KBV 4             // vectors per score row of a key block
#define KB (KBV * CPU_VL) // keys per block (64 with AVX-512): amortises the per-row softmax work
#define QROWS 128         // target rows (time steps x group heads) per query tile

static inline int min_i(int a, int b) { return a < b ? a : b; }

static int tile_steps(int G) { return QROWS / G > 1 ? QROWS / G : 1; }

// Kt[d * KB + j] = key row j0 + j (zero for j >= nj): keys as columns, so the score GEMM
// broadcasts q and loads KB scores' worth of keys per d.
static void pack_keys_t(float *restrict Kt, const float *kb, size_t ldk, int j0, int nj, int D) {
    for (int j = 0; j < KB; j++) {
        if (j < nj) {
            const float *row = kb + (size_t)(j0 + j) * ldk;
            for (int d = 0; d < D; d++) Kt[(size_t)d * KB + j] = row[d];
        } else {
            for (int d = 0; d < D; d++) Kt[(size_t)d * KB + j] = 0.0f;
        }
    }
}

// Gather the R = nt * G rows of query tile [t0, t0 + nt) x heads [kvh*G, kvh*G + G) of x[B,T,H,D]
// into dst[R, D] (optionally scaled). For one t the G rows are contiguous.
static void gather_rows(float *restrict dst, const float *x, int b, int t0, int nt, int T, int H,
                        int kvh, int G, int D, float mul) {
    for (int tt = 0; tt < nt; tt++) {
        const float *src = x + (((size_t)b * T + t0 + tt) * H + (size_t)kvh * G) * D;
        float *d = dst + (size_t)tt * G * D;
        for (int i = 0; i < G * D; i++) d[i] = src[i] * mul;
    }
}

void cpu_attention_fwd(float *out, float *lse, const float *q, const float *k, const float *v,
                       int B, int T, int H, int KVH, int D) {
    MS_ASSERT(KVH > 0 && H % KVH == 0, "attention: H = %d not a multiple of KVH = %d", H, KVH);
    int G = H / KVH, QT = tile_steps(G), nqt = (T + QT - 1) / QT, RM = QT * G;
    float scale = (float)(1.0 / sqrt((double)D));
    size_t ldk = (size_t)KVH * D;
    long items = (long)B * KVH * nqt;
    int nkb = (T + KB - 1) / KB;
    size_t kt_per_bk = (size_t)nkb * D * KB; // packed K^T of one (b, kv head): the size of its keys
    // Every query tile reads the key blocks before it: pack them once (as large as k itself).
    float *Kt_all = ms_malloc(sizeof(float) * kt_per_bk * B * KVH);
    int par = (double)B * H * T * T * D > (double)(1 << 20); // small: no thread team
    (void)par; // (unused without OpenMP)

#pragma omp parallel if (par)
    {
#pragma omp for schedule(static)
        for (long i = 0; i < (long)B * KVH * nkb; i++) {
            int bk = (int)(i / nkb), jb = (int)(i % nkb), b = bk / KVH, kvh = bk % KVH;
            pack_keys_t(Kt_all + bk * kt_per_bk + (size_t)jb * D * KB,
                        k + ((size_t)b * T * KVH + kvh) * D, ldk, jb * KB, min_i(KB, T - jb * KB),
                        D);
        }
        // (implicit barrier: all keys packed)
        float *Qs = ms_malloc(sizeof(float) * RM * D), *O = ms_malloc(sizeof(float) * RM * D);
        float *S = ms_malloc(sizeof(float) * RM * KB);
        float *m = ms_malloc(sizeof(float) * RM), *l = ms_malloc(sizeof(float) * RM);
        // causal: later tiles have more keys, so hand them out first (dynamic schedule)
#pragma omp for schedule(dynamic, 1)
        for (long it = 0; it < items; it++) {
            int qi = nqt - 1 - (int)(it % nqt), bk = (int)(it / nqt), b = bk / KVH, kvh = bk % KVH;
            int t0 = qi * QT, t1 = min_i(T, t0 + QT), nt = t1 - t0, R = nt * G;
            const float *Ktb = Kt_all + bk * kt_per_bk;
            const float *vb = v + ((size_t)b * T * KVH + kvh) * D;
            gather_rows(Qs, q, b, t0, nt, T, H, kvh, G, D, scale);
            for (int r = 0; r < R; r++) m[r] = -INFINITY, l[r] = 0.0f;
            for (size_t i = 0; i < (size_t)R * D; i++) O[i] = 0.0f;

            for (int j0 = 0; j0 < t1; j0 += KB) {
                int nj = min_i(KB, t1 - j0);
                const float *Kt = Ktb + (size_t)(j0 / KB) * D * KB;
                cpu_gemm_small(R, KB, D, Qs, D, 1, Kt, KB, S, KB, 0); // scaled scores
                for (int r = 0; r < R; r++) {
                    int t = t0 + r / G, nv = min_i(nj, t - j0 + 1); // causal: keys j <= t
                    float *s = S + (size_t)r * KB;
                    if (nv <= 0) { // the whole block is in this row's future
                        for (int j = 0; j < KB; j++) s[j] = 0.0f;
                        continue;
                    }
                    vf sv[KBV], mv = vbcast(-INFINITY), ninf = mv;
                    for (int h = 0; h < KBV; h++) { // max over the valid lanes
                        sv[h] = vsel(viota() + h * CPU_VL < nv, vload(s + h * CPU_VL), ninf);
                        mv = vsel(sv[h] > mv, sv[h], mv);
                    }
                    float mx = vhmax(mv);
                    mx = m[r] > mx ? m[r] : mx;
                    float alpha = expf(m[r] - mx); // 0 on the first block (m = -inf)
                    vf mxv = vbcast(mx), sum = (vf){0};
                    for (int h = 0; h < KBV; h++) { // masked lanes: exp(-inf) = 0
                        vf p = vexp(sv[h] - mxv);
                        vstore(s + h * CPU_VL, p);
                        sum += p;
                    }
                    l[r] = l[r] * alpha + vhsum(sum);
                    m[r] = mx;
                    if (alpha != 1.0f)
                        for (int d = 0; d < D; d++) O[(size_t)r * D + d] *= alpha;
                }
                cpu_gemm_small(R, D, nj, S, KB, 1, vb + (size_t)j0 * ldk, (int)ldk, O, D, 1);
            }

            for (int r = 0; r < R; r++) {
                int t = t0 + r / G, h = kvh * G + r % G;
                float *dst = out + (((size_t)b * T + t) * H + h) * D, inv = 1.0f / l[r];
                for (int d = 0; d < D; d++) dst[d] = O[(size_t)r * D + d] * inv;
                lse[((size_t)b * H + h) * T + t] = m[r] + logf(l[r]);
            }
        }
        free(Qs), free(O), free(S), free(m), free(l);
    }
    free(Kt_all);
}

void cpu_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *out,
                       const float *lse, const float *q, const float *k, const float *v, int B,
                       int T, int H, int KVH, int D) {
    MS_ASSERT(KVH > 0 && H % KVH == 0, "attention: H = %d not a multiple of KVH = %d", H, KVH);
    int G = H / KVH, QT = tile_steps(G), RM = QT * G, nkb = (T + KB - 1) / KB;
    float scale = (float)(1.0 / sqrt((double)D));
    size_t ldk = (size_t)KVH * D;
    int par = B * KVH > 1 && (double)B * H * T * T * D > (double)(1 << 19);
    (void)par; // (unused without OpenMP)

#pragma omp parallel if (par)
    {
        float *Qs = ms_malloc(sizeof(float) * RM * D), *dO = ms_malloc(sizeof(float) * RM * D);
        float *dQ = ms_malloc(sizeof(float) * RM * D), *S = ms_malloc(sizeof(float) * RM * KB);
        float *dP = ms_malloc(sizeof(float) * RM * KB), *L = ms_malloc(sizeof(float) * RM);
        // K^T and V^T of the current (b, kv head), packed once for all its query tiles
        float *Kt_all = ms_malloc(sizeof(float) * nkb * D * KB);
        float *Vt_all = ms_malloc(sizeof(float) * nkb * D * KB);
        float *Di = ms_malloc(sizeof(float) * RM);
#pragma omp for schedule(dynamic, 1)
        for (int bk = 0; bk < B * KVH; bk++) {
            int b = bk / KVH, kvh = bk % KVH;
            size_t kvoff = ((size_t)b * T * KVH + kvh) * D;
            const float *kb = k + kvoff, *vb = v + kvoff;
            float *dkb = dk ? dk + kvoff : NULL, *dvb = dv ? dv + kvoff : NULL;
            for (int jb = 0; jb < nkb; jb++) {
                int nj = min_i(KB, T - jb * KB);
                pack_keys_t(Kt_all + (size_t)jb * D * KB, kb, ldk, jb * KB, nj, D);
                pack_keys_t(Vt_all + (size_t)jb * D * KB, vb, ldk, jb * KB, nj, D);
            }

            for (int t0 = 0; t0 < T; t0 += QT) {
                int t1 = min_i(T, t0 + QT), nt = t1 - t0, R = nt * G;
                gather_rows(Qs, q, b, t0, nt, T, H, kvh, G, D, scale);
                gather_rows(dO, dout, b, t0, nt, T, H, kvh, G, D, 1.0f);
                for (int r = 0; r < R; r++) {
                    int t = t0 + r / G, h = kvh * G + r % G;
                    const float *o = out + (((size_t)b * T + t) * H + h) * D;
                    double di = 0;
                    for (int d = 0; d < D; d++) di += (double)dO[(size_t)r * D + d] * o[d];
                    Di[r] = (float)di;
                    L[r] = lse[((size_t)b * H + h) * T + t];
                }
                for (size_t i = 0; i < (size_t)R * D; i++) dQ[i] = 0.0f;

                for (int j0 = 0; j0 < t1; j0 += KB) {
                    int nj = min_i(KB, t1 - j0);
                    const float *Kt = Kt_all + (size_t)(j0 / KB) * D * KB;
                    const float *Vt = Vt_all + (size_t)(j0 / KB) * D * KB;
                    cpu_gemm_small(R, KB, D, Qs, D, 1, Kt, KB, S, KB, 0);  // s (scaled)
                    cpu_gemm_small(R, KB, D, dO, D, 1, Vt, KB, dP, KB, 0); // dp = dout . v
                    for (int r = 0; r < R; r++) {
                        int t = t0 + r / G, nv = min_i(nj, t - j0 + 1);
                        float *s = S + (size_t)r * KB, *dp = dP + (size_t)r * KB;
                        vf lv = vbcast(L[r]), dv_ = vbcast(Di[r]);
                        // P = exp(s - lse) on valid keys, dS = P (dP - Di)
                        for (int h = 0; h < KBV; h++) {
                            vi ok = viota() + h * CPU_VL < nv;
                            vf p = vsel(ok, vexp(vload(s + h * CPU_VL) - lv), (vf){0});
                            vstore(s + h * CPU_VL, p);
                            vstore(dp + h * CPU_VL, p * (vload(dp + h * CPU_VL) - dv_));
                        }
                    }
                    float *dks = dkb ? dkb + (size_t)j0 * ldk : NULL;
                    float *dvs = dvb ? dvb + (size_t)j0 * ldk : NULL;
                    if (dvs) cpu_gemm_small(nj, D, R, S, 1, KB, dO, D, dvs, (int)ldk, 1);
                    if (dks) cpu_gemm_small(nj, D, R, dP, 1, KB, Qs, D, dks, (int)ldk, 1);
                    if (dq)
                        cpu_gemm_small(R, D, nj, dP, KB, 1, kb + (size_t)j0 * ldk, (int)ldk, dQ, D,
                                       1);
                }
                if (dq)
                    for (int r = 0; r < R; r++) {
                        int t = t0 + r / G, h = kvh * G + r % G;
                        float *dst = dq + (((size_t)b * T + t) * H + h) * D;
                        for (int d = 0; d < D; d++) dst[d] += scale * dQ[(size_t)r * D + d];
                    }
            }
        }
        free(Qs), free(dO), free(dQ), free(S), free(dP), free(Kt_all), free(Vt_all), free(L),
            free(Di);
    }
}
