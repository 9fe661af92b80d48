// bf16_check.h: the host-side helpers the bf16 tests share (flash_bf16_tests.c,
// flash_wgmma_tests.c, sparse_bf16_tests.c, select_bf16_tests.c): random bf16 inputs,
// NaN-poisoned device outputs, bf16 downloads, the whole-tensor relative L2 they are judged by and
// index-list comparison. static inline: each test file gets its own copy.
#ifndef MSLAB_BF16_CHECK_H
#define MSLAB_BF16_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "../../core/attention.h"
#include "../../cuda/attn_bf16.h"
#include "../../cuda/bf16.h"
#include "gpu_check.h"

#define BF16_NAN 0x7fc0

static inline void *xalloc(size_t bytes) {
    void *p = calloc(bytes ? bytes : 1, 1);
    MS_ASSERT(p, "out of memory");
    return p;
}
// n values ~ N(0, 1) rounded to bf16: the bits (*hb) and their exact fp32 values (*hf)
static inline void rand_bf16(uint16_t **hb, float **hf, size_t n) {
    *hb = xalloc(n * 2), *hf = xalloc(n * 4);
    for (size_t i = 0; i < n; i++) {
        (*hb)[i] = bf16_from_f32(rng_normal(&rng));
        (*hf)[i] = bf16_to_f32((*hb)[i]);
    }
}
static inline void *dev_from(const void *h, size_t bytes) {
    void *d = gpu->alloc(bytes);
    gpu->upload(d, h, bytes);
    return d;
}
// The timing rows' inputs (B = 1): n values ~ N(0, 1) in bf16 (the first 4M drawn, the rest
// repeating them: quick to make at 128K) uploaded as *q and *v, and the same shifted by 12345
// elements as *k (so that q . k is not q . q). Returns the host bits (the caller frees them).
static inline uint16_t *perf_qkv(size_t n, uint16_t **q, uint16_t **k, uint16_t **v) {
    uint16_t *hb = xalloc(n * 2);
    for (size_t i = 0; i < n; i++)
        hb[i] = i < (1u << 22) ? bf16_from_f32(rng_normal(&rng)) : hb[i & ((1u << 22) - 1)];
    *q = dev_from(hb, n * 2), *v = dev_from(hb, n * 2), *k = gpu->alloc(n * 2);
    gpu->upload(*k, hb + 12345, (n - 12345) * 2);
    return hb;
}
// The timing rows' list: cfg's selection of q / k (B = 1, H = KVH) into ix (its device idx
// allocated here), its pairs in *st; returns the host copy of the list (the caller frees it).
static inline int *perf_list(AttnIndex *ix, const AttnConfig *cfg, const AttnDims *d,
                             const uint16_t *q, const uint16_t *k, int T, int H, int D,
                             AttnStats *st) {
    size_t ni = (size_t)H * d->nblk * d->width;
    AttnIndex x = {d->qblock, d->nblk, d->region, d->width, d->window, NULL, NULL, NULL, NULL, 0};
    *ix = x;
    ix->idx = gpu->alloc(ni * 4);
    select_bf16(ix, cfg, q, k, 1, T, H, H, D);
    int *hidx = xalloc(ni * 4);
    gpu->download(hidx, ix->idx, ni * 4);
    attn_count(cfg, d, hidx, H, T, st);
    return hidx;
}
static inline void poison16(void *d, size_t n) {
    uint16_t *h = xalloc(n * 2);
    for (size_t i = 0; i < n; i++) h[i] = BF16_NAN;
    gpu->upload(d, h, n * 2);
    free(h);
}
static inline void poison32(void *d, size_t n) {
    float *h = xalloc(n * 4);
    for (size_t i = 0; i < n; i++) h[i] = NAN;
    gpu->upload(d, h, n * 4);
    free(h);
}
// a device bf16 array as fp32 values; its raw bits in *bits (the bitwise-repeat checks)
static inline float *down16(const void *d, size_t n, uint16_t **bits) {
    uint16_t *h = xalloc(n * 2);
    gpu->download(h, d, n * 2);
    float *f = xalloc(n * 4);
    for (size_t i = 0; i < n; i++) f[i] = bf16_to_f32(h[i]);
    *bits = h;
    return f;
}
// Whole-tensor relative L2; NaN anywhere gives NaN (fails). The denominator has a floor of RMS
// 1e-3 (inputs are N(0, 1), so real gradients are far above it): at T = 1 dq and dk are exactly 0
// (one key: dS = P (dP - Di) = 0) and the reference holds only rounding noise (~1e-8), which no
// relative measure can judge.
static inline double rel_l2(const float *a, const float *ref, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - ref[i];
        num += d * d, den += (double)ref[i] * ref[i];
    }
    if (isnan(num)) return NAN;
    den = fmax(den, 1e-6 * (double)n);
    return sqrt(num / den);
}
// The backward tests' extra inputs (q / dout [nq], v [nk], rows of D; values and bits changed
// together): mode 1 = uneven magnitudes (row r of q / dout times 2^(r * 7 % 17 - 8), of v 2^(r *
// 5 % 17 - 8): bf16-exact), 2 = one q element NaN (batch 0, row T / 2, head H - 1). Returns the
// shape label's suffix.
static inline const char *odd_inputs(int mode, float *q, uint16_t *qb, float *dy, uint16_t *yb,
                                     float *v, uint16_t *vb, size_t nq, size_t nk, int T, int H,
                                     int D) {
    if (mode == 1) {
        for (size_t i = 0; i < nq; i++) {
            float f = ldexpf(1.f, (int)(i / D * 7 % 17) - 8);
            q[i] *= f, qb[i] = bf16_from_f32(q[i]), dy[i] *= f, yb[i] = bf16_from_f32(dy[i]);
        }
        for (size_t i = 0; i < nk; i++)
            v[i] *= ldexpf(1.f, (int)(i / D * 5 % 17) - 8), vb[i] = bf16_from_f32(v[i]);
        return " uneven";
    }
    if (mode == 2) {
        size_t i = ((size_t)(T / 2) * H + H - 1) * D + 5;
        q[i] = NAN, qb[i] = BF16_NAN;
        return " NaN q";
    }
    return "";
}
// A row whose dQ reaches its fixed-point bound (flash_wgmma_bwd.cuh wg_bwd_pre): b = 0, head 0 (kv
// head 0), row 1 sees keys 0, 1 alone: q row 1 = 0 (P = 1/2 each), K rows +-8 e0, V rows +-e0,
// dO row 1 = e0: Di = 0, dS = +-1/2, dQ row 1 = 8 e0 (unscaled) against a bound of ~8 max |V_j|_2:
// its fixed-point partial is ~2^26 (the s32 conversions' F2I path, not the FFMA one). T >= 2.
static inline const char *tight_rows(float *q, uint16_t *qb, float *k, uint16_t *kb, float *v,
                                     uint16_t *vb, float *dy, uint16_t *yb, int H, int KVH, int D) {
    for (int d = 0; d < D; d++) {
        size_t q1 = (size_t)H * D + d, k0 = d, k1 = (size_t)KVH * D + d;
        q[q1] = 0.f, dy[q1] = d == 0 ? 1.f : 0.f;
        k[k0] = d == 0 ? 8.f : 0.f, k[k1] = -k[k0];
        v[k0] = d == 0 ? 1.f : 0.f, v[k1] = -v[k0];
        qb[q1] = bf16_from_f32(q[q1]), yb[q1] = bf16_from_f32(dy[q1]);
        kb[k0] = bf16_from_f32(k[k0]), kb[k1] = bf16_from_f32(k[k1]);
        vb[k0] = bf16_from_f32(v[k0]), vb[k1] = bf16_from_f32(v[k1]);
    }
    return " tight";
}
// NaN inputs: a reference element that is not finite must not be finite here (else inf); over the
// elements finite in both, the relative L2; the finite reference elements not finite here are
// counted (info)
static inline double nonfinite_err(const float *g, const float *r, size_t n) {
    size_t missed = 0, extra = 0, m = 0;
    float *a = xalloc(n * 4), *b = xalloc(n * 4);
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(r[i])) missed += isfinite(g[i]) != 0;
        else if (!isfinite(g[i])) extra++;
        else a[m] = g[i], b[m] = r[i], m++;
    }
    double e = missed ? INFINITY : rel_l2(a, b, m);
    printf("    (NaN q: %zu reference elements non-finite, %zu missed, %zu more here)\n",
           n - m - extra, missed, extra);
    free(a), free(b);
    return e;
}

static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
// Index lists [B, H, nblk, width] (select_bf16 / sparse_bf16 tests): the entries that differ,
// and the first of them printed as (b, h, block, slot) with both values.
static inline size_t list_diff(const int *gpu_idx, const int *cpu_idx, size_t n, int width,
                               int nblk, int H) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (gpu_idx[i] == cpu_idx[i]) continue;
        if (!bad++) {
            size_t l = i / width;
            printf("    first diff: b=%zu h=%zu block=%zu slot=%zu gpu %d cpu %d\n",
                   l / nblk / H, (l / nblk) % H, l % nblk, i % width, gpu_idx[i], cpu_idx[i]);
        }
    }
    return bad;
}

#endif
