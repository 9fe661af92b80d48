// flash_wgmma_tests.c: the Hopper wgmma dense kernels (cuda/flash_wgmma.cu) against the CPU on
// bf16-rounded inputs, as flash_bf16_tests.c checks flash_bf16_*.
//
// Inputs q, k, v, dout ~ N(0, 1) rounded to bf16; the reference runs in fp32 on exactly those
// values. The backward is judged alone: both sides get the reference's out (rounded to bf16) and
// lse. out, dq, dk, dv: whole-tensor relative L2 (tolerance 1e-2; a bf16 P / dS in the products
// gives ~3e-3); lse: max |gpu - ref| / max(|ref|, 1) (1e-4). Outputs are NaN-poisoned before
// every call; each call runs twice and must repeat its bits (all but the fused backward's atomic
// mode). A failing tensor prints its first bad element, a few elements of rows 0 / 1 / 9 / 17 /
// 63 (fragment-layout errors show as a pattern there), the error per 64-row tile, per head and
// per 16-column block. Every tiling of the kernels (VARS) is checked. A GPU that is not sm_90
// makes the kernels return -1: the checks are skipped with a note (the -1 contract itself is
// flash_wgmma_unsupported). flash_wgmma_perf (info lines, not checks; MSLAB_WG_NO_PERF skips
// them): ms per call per tiling at B=1, T=16K, H=KVH=32, D=128, flash_bf16's default alongside.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../cuda/attn_bf16.h"
#include "../../cuda/bf16.h"
#include "bf16_check.h"
#include "gpu_check.h"

void flash_wgmma_tune(int fwd, int dkdv, int dq); // flash_wgmma.cu, not in the header (tests)
// flash_wgmma_bwd.cu (tests): the dK/dV tuning run for tune value dkdv (9: the default per D and
// mode) and whether it is the fused kernel (its atomic mode's dQ adds may differ between calls)
int flash_wgmma_bwd_tiling(int dkdv, int D, int det, int *fused);

// {forward, dK/dV, dQ} tilings of flash_wgmma.cu (flash_wgmma_tune) and the accumulation mode
// (attn_bf16_set_deterministic); VARS[0] / [1]: the defaults in the ordered / atomic mode (9: per
// D (s7); dK/dV 9: since s8 the fused backward at both D in both modes, fixed-point dQ when
// ordered (= 11; D 128 atomic = 4); the split path before). 9..13: the fused backward (dK/dV 2 per-
// warp ordered / atomic, 3 per-CTA ordered, 4: since s7 the fused kernel with TMA tiles and bulk
// dQ reduce-adds (PIPE 22) when atomic, = 2 when ordered; the old PIPE = 1 is gone). The forward has one tiling since s6 (11:
// fwd3, 3 consumer warpgroups; the others were removed with their rows): it is checked in the
// first variant that runs (the forward does not depend on the backward's tilings or the mode);
// 5, 7, 8 now repeat 2, 4, 6 (they differed in the forward) and stay so the indices do not move.
// 18..20 (s7): the D 64 forward tilings 12 / 13 / 14 (D 128 runs 11 for them) and dK/dV 6 (2
// warpgroups, lse / Di by cp.async); each forward tiling is checked once per shape. 21, 22: dK/dV 7
// (D 64: 5 at 3 CTAs per SM), dQ 3 / 4 (D 64: 0 / 1 at 2 / 4 CTAs per SM); 23, 24 (s8; dK/dV 8 and 10
// until s7): dK/dV 11, the fused kernel with TMA tiles and bulk dQ adds in both modes (ordered:
// fixed-point dQ by s32 adds, DET 4; D 64: 1 warpgroup of 64 keys, 2 CTAs per SM), atomic / ordered (24 also
// forward 15); since s8 also the defaults (9) at both D.
// MSLAB_WG_TEST_VARS="i,j,..." runs only those (default: all; --quick: 0, 1, 14), so a first run
// of a new tiling cannot take the others down. Only the fused backward's atomic mode may differ
// between two calls. Extra rows (g_wg_inputs, the fused variants and the defaults): uneven input
// magnitudes (rows of q, dout, v scaled by 2^-8 .. 2^8) and one NaN q element (the reference's
// non-finite outputs must be non-finite, the rest close; nonfinite_err), and a row whose dQ reaches
// the ordered mode's fixed-point bound (tight_rows: the s32 conversions' F2I path).
#define NVAR 25
static const int VARS[NVAR][4] = {{9, 9, 9, 1}, {9, 9, 9, 0}, {11, 1, 0, 1}, {11, 1, 1, 0},
                                  {11, 0, 1, 1}, {11, 1, 0, 1}, {11, 0, 0, 1}, {11, 0, 1, 1},
                                  {11, 0, 0, 1}, {11, 2, 0, 1}, {11, 2, 0, 0}, {11, 3, 0, 1},
                                  {11, 4, 0, 1}, {11, 4, 0, 0}, {11, 5, 2, 1}, {11, 5, 2, 0},
                                  {11, 9, 0, 1}, {11, 9, 0, 0}, {12, 6, 0, 1}, {13, 6, 1, 1},
                                  {14, 1, 2, 0}, {11, 7, 3, 1}, {11, 7, 4, 1},
                                  {11, 11, 4, 0}, {15, 11, 3, 1}};
static int var_on(int var) {
    const char *e = getenv("MSLAB_WG_TEST_VARS");
    if (!e) return !quick || var == 0 || var == 1 || var == 14;
    for (const char *p = e; *p;) {
        char *end;
        long x = strtol(p, &end, 10);
        if (end == p) break;
        if (x == var) return 1;
        p = *end ? end + 1 : end;
    }
    return 0;
}
static int g_arch = 1; // 0: the kernels returned -1 (not an sm_90 GPU)
static int g_wg_inputs = 0; // 1: uneven magnitudes, 2: one NaN q element, 3: tight_rows (t_wg)


static void diagnose(const char *name, const float *a, const float *ref, int B, int T, int NH,
                     int D, double tol) {
    size_t n = (size_t)B * T * NH * D, nnan = 0;
    double ss = 0;
    for (size_t i = 0; i < n; i++) ss += (double)ref[i] * ref[i], nnan += isnan(a[i]) != 0;
    double rms = sqrt(ss / (n ? n : 1));
    printf("    %s: %zu NaN of %zu, ref rms %.4g\n", name, nnan, n, rms);
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - ref[i]);
        if (isnan(a[i]) || d > 10 * tol * fmax(rms, 1e-30)) {
            int dd = (int)(i % D), h = (int)(i / D % NH), t = (int)(i / D / NH % T);
            int b = (int)(i / ((size_t)D * NH * T));
            printf("    first bad: b=%d t=%d h=%d d=%d gpu=%.6g ref=%.6g\n", b, t, h, dd, a[i],
                   ref[i]);
            break;
        }
    }
    // b = 0, h = 0: a few rows x columns (gpu / ref), where fragment-layout errors show
    static const int rows[] = {0, 1, 9, 17, 63}, cols[] = {0, 1, 2, 8, 9, 16, 63, 64, 65, 127};
    for (int ri = 0; ri < 5; ri++) {
        int t = rows[ri];
        if (t >= T) break;
        printf("    t=%-3d", t);
        for (int ci = 0; ci < 10; ci++) {
            int d = cols[ci];
            if (d >= D) break;
            size_t i = (size_t)t * NH * D + d;
            printf(" d%d %.3g/%.3g", d, a[i], ref[i]);
        }
        printf("\n");
    }
    printf("    rel L2 per 64-row tile of t:");
    int nt = (T + 63) / 64;
    for (int tt = 0; tt < nt && tt < 64; tt++) {
        double num = 0, den = 0;
        for (int b = 0; b < B; b++)
            for (int t = tt * 64; t < T && t < tt * 64 + 64; t++)
                for (size_t j = 0; j < (size_t)NH * D; j++) {
                    size_t i = ((size_t)b * T + t) * NH * D + j;
                    double d = (double)a[i] - ref[i];
                    num += d * d, den += (double)ref[i] * ref[i];
                }
        printf(" %.2e", den > 0 ? sqrt(num / den) : sqrt(num));
    }
    printf("%s\n", nt > 64 ? " ..." : "");
    printf("    rel L2 per head:");
    for (int h = 0; h < NH && h < 32; h++) {
        double num = 0, den = 0;
        for (size_t bt = 0; bt < (size_t)B * T; bt++)
            for (int d = 0; d < D; d++) {
                size_t i = (bt * NH + h) * D + d;
                double e = (double)a[i] - ref[i];
                num += e * e, den += (double)ref[i] * ref[i];
            }
        printf(" %.2e", den > 0 ? sqrt(num / den) : sqrt(num));
    }
    printf("\n    rel L2 per 16-column block of d:");
    for (int c0 = 0; c0 < D; c0 += 16) {
        double num = 0, den = 0;
        for (size_t r = 0; r < (size_t)B * T * NH; r++)
            for (int d = c0; d < c0 + 16; d++) {
                double e = (double)a[r * D + d] - ref[r * D + d];
                num += e * e, den += (double)ref[r * D + d] * ref[r * D + d];
            }
        printf(" %.2e", den > 0 ? sqrt(num / den) : sqrt(num));
    }
    printf("\n");
}

static void row(const char *op, const char *shape, const char *name, const float *a,
                const float *ref, const uint16_t *b1, const uint16_t *b2, int B, int T, int NH,
                int D, double tol, int need_det) {
    size_t n = (size_t)B * T * NH * D;
    double e = g_wg_inputs == 2 ? nonfinite_err(a, ref, n) : rel_l2(a, ref, n);
    int det = !need_det || memcmp(b1, b2, n * 2) == 0;
    report(op, shape, e, tol, det);
    if (!(e <= tol) || !det) diagnose(name, a, ref, B, T, NH, D, tol);
}

static void t_wg(int B, int T, int H, int KVH, int D) {
    int want_f = wanted("flash_wgmma_fwd");
    int want_b = wanted("flash_wgmma_bwd");
    if ((!want_f && !want_b) || !g_arch) return;
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D, nl = (size_t)B * H * T;
    uint16_t *qb, *kb, *vb, *dyb;
    float *q, *k, *v, *dy;
    rand_bf16(&qb, &q, nq), rand_bf16(&kb, &k, nk), rand_bf16(&vb, &v, nk);
    rand_bf16(&dyb, &dy, nq);
    const char *inp = g_wg_inputs == 3 ? tight_rows(q, qb, k, kb, v, vb, dy, dyb, H, KVH, D)
                                       : odd_inputs(g_wg_inputs, q, qb, dy, dyb, v, vb, nq, nk, T, H, D);
    float *out = xalloc(nq * 4), *lse = xalloc(nl * 4);
    cpu->attention_fwd(out, lse, q, k, v, B, T, H, KVH, D);
    uint16_t *outb = xalloc(nq * 2);
    float *outr = xalloc(nq * 4);
    for (size_t i = 0; i < nq; i++) outb[i] = bf16_from_f32(out[i]), outr[i] = bf16_to_f32(outb[i]);
    float *dqr = NULL, *dkr = NULL, *dvr = NULL;
    if (want_b) {
        dqr = xalloc(nq * 4), dkr = xalloc(nk * 4), dvr = xalloc(nk * 4);
        cpu->attention_bwd(dqr, dkr, dvr, dy, outr, lse, q, k, v, B, T, H, KVH, D);
    }
    uint16_t *d_q = dev_from(qb, nq * 2), *d_k = dev_from(kb, nk * 2), *d_v = dev_from(vb, nk * 2);
    uint16_t *d_out = gpu->alloc(nq * 2), *d_dy = dev_from(dyb, nq * 2);
    float *d_lse = gpu->alloc(nl * 4);
    uint16_t *d_dq = gpu->alloc(nq * 2), *d_dk = gpu->alloc(nk * 2), *d_dv = gpu->alloc(nk * 2);

    int mode0 = attn_bf16_deterministic(), fwd_done = 0;
    for (int var = 0; var < NVAR && g_arch; var++) {
        if (!var_on(var)) continue;
        int fused;
        flash_wgmma_bwd_tiling(VARS[var][1], D, VARS[var][3], &fused);
        if (g_wg_inputs && !(fused || var < 2)) continue; // extra inputs: fused and defaults
        int fv = VARS[var][0]; // D 128: one forward tiling; D 64: 9 (the default) and 11..15
        int fbit = 1 << (D == 64 ? (fv == 9 ? 7 : fv - 11) : 0);
        int do_f = want_f && !(fwd_done & fbit) && !g_wg_inputs;
        if (do_f) fwd_done |= fbit;
        flash_wgmma_tune(VARS[var][0], VARS[var][1], VARS[var][2]);
        attn_bf16_set_deterministic(VARS[var][3]);
        int need_det = VARS[var][3] || !fused; // split: always
        char shape[128];
        snprintf(shape, sizeof shape, "B=%d T=%d H=%d KVH=%d D=%d v%d%s", B, T, H, KVH, D, var, inp);
        if (do_f) {
            uint16_t *ob[2];
            float *of[2], *lf[2];
            int rc[2];
            for (int rep = 0; rep < 2; rep++) {
                poison16(d_out, nq), poison32(d_lse, nl);
                rc[rep] = flash_wgmma_fwd(d_out, d_lse, d_q, d_k, d_v, B, T, H, KVH, D);
                of[rep] = down16(d_out, nq, &ob[rep]);
                lf[rep] = xalloc(nl * 4);
                gpu->download(lf[rep], d_lse, nl * 4);
            }
            if (rc[0] != 0 || rc[1] != 0) {
                printf("    flash_wgmma_fwd returned -1 (not an sm_90 GPU?): wgmma checks skipped\n");
                g_arch = 0;
            } else {
                row("flash_wgmma_fwd.out", shape, "out", of[0], out, ob[0], ob[1], B, T, H, D,
                    1e-2, 1);
                double e = 0;
                size_t bad = (size_t)-1;
                for (size_t i = 0; i < nl; i++) {
                    double d = fabs((double)lf[0][i] - lse[i]) / fmax(fabs(lse[i]), 1.0);
                    if (!(d <= e)) {
                        e = d;
                        if (bad == (size_t)-1 && !(d <= 1e-4)) bad = i;
                    }
                }
                report("flash_wgmma_fwd.lse", shape, e, 1e-4, memcmp(lf[0], lf[1], nl * 4) == 0);
                if (bad != (size_t)-1)
                    printf("    lse first bad: b=%d h=%d t=%d gpu=%.7g ref=%.7g\n",
                           (int)(bad / ((size_t)H * T)), (int)(bad / T % H), (int)(bad % T),
                           lf[0][bad], lse[bad]);
            }
            for (int rep = 0; rep < 2; rep++) free(ob[rep]), free(of[rep]), free(lf[rep]);
        }
        if (want_b && g_arch) {
            gpu->upload(d_out, outb, nq * 2);
            gpu->upload(d_lse, lse, nl * 4);
            uint16_t *bits[2][3];
            float *res[2][3];
            int rc[2];
            for (int rep = 0; rep < 2; rep++) {
                poison16(d_dq, nq), poison16(d_dk, nk), poison16(d_dv, nk);
                rc[rep] = flash_wgmma_bwd(d_dq, d_dk, d_dv, d_dy, d_out, d_lse, d_q, d_k, d_v, B,
                                          T, H, KVH, D);
                res[rep][0] = down16(d_dq, nq, &bits[rep][0]);
                res[rep][1] = down16(d_dk, nk, &bits[rep][1]);
                res[rep][2] = down16(d_dv, nk, &bits[rep][2]);
            }
            if (rc[0] != 0 || rc[1] != 0) {
                report("flash_wgmma_bwd (returned -1)", shape, INFINITY, 1e-2, -1);
            } else {
                row("flash_wgmma_bwd.dq", shape, "dq", res[0][0], dqr, bits[0][0], bits[1][0], B,
                    T, H, D, 1e-2, need_det);
                row("flash_wgmma_bwd.dk", shape, "dk", res[0][1], dkr, bits[0][1], bits[1][1], B,
                    T, KVH, D, 1e-2, need_det);
                row("flash_wgmma_bwd.dv", shape, "dv", res[0][2], dvr, bits[0][2], bits[1][2], B,
                    T, KVH, D, 1e-2, need_det);
            }
            for (int r = 0; r < 2; r++)
                for (int i = 0; i < 3; i++) free(bits[r][i]), free(res[r][i]);
        }
    }
    flash_wgmma_tune(VARS[0][0], VARS[0][1], VARS[0][2]);
    attn_bf16_set_deterministic(mode0);
    gpu->free(d_dy), gpu->free(d_dq), gpu->free(d_dk), gpu->free(d_dv);
    free(dqr), free(dkr), free(dvr);
    gpu->free(d_q), gpu->free(d_k), gpu->free(d_v), gpu->free(d_out), gpu->free(d_lse);
    free(qb), free(kb), free(vb), free(dyb), free(q), free(k), free(v), free(dy), free(out),
        free(lse), free(outb), free(outr);
}

// Unsupported shapes (D = 32, H % KVH != 0) must return -1 and write nothing.
static void t_wg_unsupported(void) {
    if (!wanted("flash_wgmma_unsupported")) return;
    int B = 1, T = 40, H = 4, KVH = 2, D = 32;
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D, nl = (size_t)B * H * T;
    uint16_t *d_q = gpu->alloc(nq * 2), *d_k = gpu->alloc(nk * 2), *d_v = gpu->alloc(nk * 2);
    uint16_t *d_o = gpu->alloc(nq * 2), *d_dq = gpu->alloc(nq * 2), *d_dk = gpu->alloc(nk * 2);
    uint16_t *d_dv = gpu->alloc(nk * 2);
    float *d_lse = gpu->alloc(nl * 4);
    poison16(d_o, nq), poison16(d_dq, nq), poison16(d_dk, nk), poison16(d_dv, nk);
    poison32(d_lse, nl);
    int r1 = flash_wgmma_fwd(d_o, d_lse, d_q, d_k, d_v, B, T, H, KVH, D);
    int r2 = flash_wgmma_bwd(d_dq, d_dk, d_dv, d_q, d_o, d_lse, d_q, d_k, d_v, B, T, H, KVH, D);
    int r3 = flash_wgmma_fwd(d_o, d_lse, d_q, d_k, d_v, B, T, 6, 4, 64); // H % KVH != 0
    int untouched = 1;
    uint16_t *h = xalloc(nq * 2);
    uint16_t *ptrs[4] = {d_o, d_dq, d_dk, d_dv};
    size_t ns[4] = {nq, nq, nk, nk};
    for (int p = 0; p < 4; p++) {
        gpu->download(h, ptrs[p], ns[p] * 2);
        for (size_t i = 0; i < ns[p]; i++) untouched &= h[i] == BF16_NAN;
    }
    float *hl = xalloc(nl * 4);
    gpu->download(hl, d_lse, nl * 4);
    for (size_t i = 0; i < nl; i++) untouched &= isnan(hl[i]) != 0;
    int ok = r1 == -1 && r2 == -1 && r3 == -1 && untouched;
    if (!ok) printf("    returned %d %d %d, outputs untouched %d\n", r1, r2, r3, untouched);
    report("flash_wgmma_unsupported (-1)", "D=32; H=6 KVH=4", ok ? 0 : INFINITY, 0, -1);
    free(h), free(hl);
    gpu->free(d_q), gpu->free(d_k), gpu->free(d_v), gpu->free(d_o), gpu->free(d_dq),
        gpu->free(d_dk), gpu->free(d_dv), gpu->free(d_lse);
}

// Timing (not a check): causal, H = KVH; flash_wgmma_perf: B=1, T=16K, H=32, D=128;
// flash_wgmma_perf64: the LM's attention (bench/gpu_bench.c --lm row 0: B=8, T=4096, H=12, D=64;
// MSLAB_WG_PERF64="B,T,H" another shape, e.g. row 2's "1,32768,12").
// ms per call, mean of reps; a 4-byte download synchronizes. Each tiling of each kernel alone, and
// flash_bf16's default alongside.
static void t_wg_perf(const char *name, int B, int T, int H, int D) {
    if (!wanted(name) || !g_arch || getenv("MSLAB_WG_NO_PERF")) return;
    int KVH = H;
    size_t nq = (size_t)B * T * H * D, nl = (size_t)B * H * T;
    uint16_t *hb = xalloc(nq * 2);
    for (size_t i = 0; i < nq; i++)
        hb[i] = i < (1u << 20) ? bf16_from_f32(rng_normal(&rng)) : hb[i & ((1u << 20) - 1)];
    uint16_t *d_q = dev_from(hb, nq * 2), *d_k = dev_from(hb, nq * 2), *d_v = dev_from(hb, nq * 2);
    uint16_t *d_o = gpu->alloc(nq * 2), *d_dy = dev_from(hb, nq * 2);
    uint16_t *d_dq = gpu->alloc(nq * 2), *d_dk = gpu->alloc(nq * 2), *d_dv = gpu->alloc(nq * 2);
    float *d_lse = gpu->alloc(nl * 4), sync;
    int reps = (double)T * T * B * H >= 32768.0 * 32768 * 32 ? 3 : 5;
    double f = 2.0 * T * (double)T * D * H * B; // causal forward FLOPs
    // pass 0: flash_bf16 default; then each wgmma forward tiling (D 64: 11..15), each dK/dV
    // tiling, dQ tiling; last: the default (VARS[0]). With MSLAB_WG_TEST_VARS only the listed
    // variants' tilings.
    // dK/dV passes {tune, ordered}: split 0, 1, 5, 6, 7 (dQ skipped); fused (D 128) 2 ordered, 2
    // atomic, 3 ordered, 4 ordered (= 2), 4 atomic (TMA + bulk dQ adds, the atomic default);
    // fused (both D) 11 ordered (fixed-point dQ) / atomic; dQ 0 .. 4
    enum { NKV = 12, NSPLIT = 5, NF128 = 10, NDQ = 5 };
    static const int KV[NKV][2] = {{0, 1}, {1, 1}, {5, 1}, {6, 1}, {7, 1}, {2, 1}, {2, 0}, {3, 1},
                                   {4, 1}, {4, 0}, {11, 1}, {11, 0}};
    int nfw = D == 64 ? 5 : 1;
    int P_FW = 1, P_KV = P_FW + nfw, P_DQ = P_KV + NKV, P_DEF = P_DQ + NDQ;
    int mode0 = attn_bf16_deterministic();
    for (int pass = 0; pass <= P_DEF; pass++) {
        int fw = pass >= P_FW && pass < P_KV, kv = pass >= P_KV && pass < P_DQ;
        int dq = pass >= P_DQ && pass < P_DEF;
        int kvi = pass - P_KV, fused = kv && kvi >= NSPLIT;
        if (fused && kvi < NF128 && D != 128) continue;
        if (kv && getenv("MSLAB_WG_TEST_VARS")) { // the fused modes only when a variant has them
            int keep = kvi < 2;
            for (int v2 = 0; v2 < NVAR; v2++)
                keep |= var_on(v2) && VARS[v2][1] == KV[kvi][0] && VARS[v2][3] == KV[kvi][1];
            if (!keep) continue;
        }
        if (fw) flash_wgmma_tune(11 + pass - P_FW, 0, 0);
        if (kv) flash_wgmma_tune(0, KV[kvi][0], -1);
        attn_bf16_set_deterministic(kv ? KV[kvi][1] : mode0);
        if (dq) flash_wgmma_tune(0, -1, pass - P_DQ);
        if (pass == P_DEF) flash_wgmma_tune(VARS[0][0], VARS[0][1], VARS[0][2]);
        double tt[2];
        for (int ph = 0; ph < 2; ph++) { // ph 0: forward, 1: backward
            if (ph == 0 && (kv || dq)) { tt[0] = 0; continue; }
            if (ph == 1 && fw) { tt[1] = 0; continue; }
            for (int r = -1; r < reps; r++) {
                if (r == 0) gpu->download(&sync, d_lse, 4), tt[ph] = now_s();
                if (pass == 0 && ph == 0) flash_bf16_fwd(d_o, d_lse, d_q, d_k, d_v, B, T, H, KVH, D);
                else if (pass == 0)
                    flash_bf16_bwd(d_dq, d_dk, d_dv, d_dy, d_o, d_lse, d_q, d_k, d_v, B, T, H, KVH, D);
                else if (ph == 0) flash_wgmma_fwd(d_o, d_lse, d_q, d_k, d_v, B, T, H, KVH, D);
                else flash_wgmma_bwd(d_dq, d_dk, d_dv, d_dy, d_o, d_lse, d_q, d_k, d_v, B, T, H, KVH, D);
            }
            gpu->download(&sync, d_lse, 4);
            tt[ph] = (now_s() - tt[ph]) / reps * 1e3;
        }
        const char *what = pass == 0 ? "flash_bf16 default" : fw ? "wgmma fwd tiling" : fused ? "wgmma fused bwd (+Di; tune, ordered)" : kv ? "wgmma dkdv tiling (+Di; tune, ordered)" : dq ? "wgmma dq tiling (+Di)" : "wgmma default";
        int var = fw ? 11 + pass - P_FW : kv ? KV[kvi][0] : dq ? pass - P_DQ : 0;
        printf("    (info %s B=%d T=%d H=%d D=%d %s %d%s: fwd %.3f ms %.1f TFLOP/s, bwd %.3f ms "
               "%.1f TFLOP/s, fwd+bwd %.3f ms)\n",
               name, B, T, H, D, what, var, kv ? (KV[kvi][1] ? " ord" : " atomic") : "", tt[0],
               tt[0] > 0 ? f / tt[0] * 1e-9 : 0, tt[1], tt[1] > 0 ? 2.5 * f / tt[1] * 1e-9 : 0,
               tt[0] + tt[1]);
    }
    flash_wgmma_tune(VARS[0][0], VARS[0][1], VARS[0][2]);
    attn_bf16_set_deterministic(mode0);
    free(hb);
    gpu->free(d_q), gpu->free(d_k), gpu->free(d_v), gpu->free(d_o), gpu->free(d_dy),
        gpu->free(d_dq), gpu->free(d_dk), gpu->free(d_dv), gpu->free(d_lse);
}

void t_flash_wgmma_all(void) {
    // first a single tile (a layout error is readable there), then tails, GQA, B = 2
    t_wg(1, 64, 1, 1, 128);
    t_wg(1, 64, 1, 1, 64);
    static const int Ts[] = {1, 37, 65, 130, 200, 1000};
    static const int HK[3][2] = {{8, 2}, {4, 4}, {6, 3}};
    int nT = quick ? 5 : 6;
    for (int it = 0; it < nT; it++)
        for (int D = 64; D <= 128; D *= 2)
            for (int c = 0; c < 3; c++) {
                if (quick && c == 2) continue;
                t_wg((c + it) % 2 + 1, Ts[it], HK[c][0], HK[c][1], D);
            }
    if (!quick) t_wg(1, 2048, 8, 2, 128);
    // uneven magnitudes, one NaN q element, a row at its fixed-point bound: the fused variants and
    // the defaults (GQA, B = 2, tails)
    for (int in = 1; in <= 3; in++)
        for (int D = 64; D <= 128; D *= 2) g_wg_inputs = in, t_wg(2, 200, 4, 2, D);
    g_wg_inputs = 0;
    t_wg_unsupported();
    if (!quick) t_wg_perf("flash_wgmma_perf", 1, 16384, 32, 128);
    int pb = 8, pt = 4096, ph = 12; // MSLAB_WG_PERF64="B,T,H": another D 64 shape
    if (getenv("MSLAB_WG_PERF64")) sscanf(getenv("MSLAB_WG_PERF64"), "%d,%d,%d", &pb, &pt, &ph);
    if (!quick) t_wg_perf("flash_wgmma_perf64", pb, pt, ph, 64);
}
