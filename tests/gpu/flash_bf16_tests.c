// flash_bf16_tests.c: the bf16 tensor-core flash attention (cuda/flash_bf16.cu) against the CPU
// backend's fp32 attention on the same bf16-rounded inputs.
//
// Inputs q, k, v, dout ~ N(0, 1) rounded to bf16 on the host; the reference runs in fp32 on
// exactly those values. The backward is judged alone: both sides get the reference's out (rounded
// to bf16, as the GPU stores it) and lse. Errors: out, dq, dk, dv as whole-tensor relative L2
// ||gpu - ref|| / ||ref|| (tolerance 1e-2: bf16 outputs and a bf16 P in the P V products give
// ~3e-3); lse as max |gpu - ref| / max(|ref|, 1) (1e-4; the floor because a T=1 row's lse is one
// score, which can be ~0). Outputs are poisoned with NaN before every GPU call, each call runs
// twice and must repeat its bits (det). A failing tensor prints its first bad element (b, t, h, d),
// both values, and the relative error per 64-row tile of t, so a log alone can localise a bug.
// The backward's other accumulation mode (atomic) runs on the same reference too, one summary row
// per shape (flash_bf16_variant1). Then timing rows (flash_bf16_perf, not checks: err 0) at the
// issue-8 shape B=1, H=KVH=32, D=128: both modes at T = 4K..64K.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../cuda/attn_bf16.h"
#include "../../cuda/bf16.h"
#include "bf16_check.h"
#include "gpu_check.h"

// The backward's accumulation mode per variant (attn_bf16_set_deterministic): 1 ordered (the
// default; bitwise repeat checked), 0 atomic (same tolerance, repeat not required). The forward
// is one kernel in both modes: variant 0 only.
#define NVAR 2
static const int VARS[NVAR] = {1, 0};

// Variant 0 reports one row per tensor; variant 1, run on the same reference, adds up into one row
// per shape (worst error over the tensors, relative to each tolerance).
static int g_var;
static double g_worst;
static int g_det;
static char g_what[64];



// Diagnostics of a failing [B, T, NH, D] tensor: the first element off by more than 10x the
// tolerance (relative to the tensor's RMS) or NaN, the count of NaNs, and rel L2 per 64-row tile.
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
    // per head (a GQA mapping bug shows here)
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
    printf("\n");
}

// need_det = 0 (the atomic mode's gradients): the two calls need not repeat their bits
static void row(const char *op, const char *shape, const char *name, const float *a,
                const float *ref, const uint16_t *bits1, const uint16_t *bits2, int B, int T,
                int NH, int D, double tol, int need_det) {
    size_t n = (size_t)B * T * NH * D;
    double e = rel_l2(a, ref, n);
    int det = !need_det || memcmp(bits1, bits2, n * 2) == 0;
    if (g_var) {
        if (!(e / tol <= g_worst)) g_worst = e / tol, snprintf(g_what, sizeof g_what, "%s", name);
        g_det &= det;
        if (!(e <= tol) || !det) {
            printf("    variant %d %s: err %.3e det %d\n", g_var, name, e, det);
            diagnose(name, a, ref, B, T, NH, D, tol);
        }
        return;
    }
    report(op, shape, e, tol, det);
    if (!(e <= tol) || !det) diagnose(name, a, ref, B, T, NH, D, tol);
}

static void t_flash(int B, int T, int H, int KVH, int D) {
    int want_fwd = wanted("flash_bf16_fwd.out") || wanted("flash_bf16_fwd.lse");
    int want_b =
        wanted("flash_bf16_bwd.dq") || wanted("flash_bf16_bwd.dk") || wanted("flash_bf16_bwd.dv");
    if (!want_fwd && !want_b) return;
    char shape[96];
    snprintf(shape, sizeof shape, "B=%d T=%d H=%d KVH=%d D=%d", B, T, H, KVH, D);
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D, nl = (size_t)B * H * T;
    uint16_t *qb, *kb, *vb, *dyb;
    float *q, *k, *v, *dy;
    rand_bf16(&qb, &q, nq), rand_bf16(&kb, &k, nk), rand_bf16(&vb, &v, nk);
    rand_bf16(&dyb, &dy, nq);
    float *out = xalloc(nq * 4), *lse = xalloc(nl * 4);
    cpu->attention_fwd(out, lse, q, k, v, B, T, H, KVH, D);
    // the backward's out: the reference's, as bf16 (what the GPU would store)
    uint16_t *outb = xalloc(nq * 2);
    float *outr = xalloc(nq * 4);
    for (size_t i = 0; i < nq; i++) outb[i] = bf16_from_f32(out[i]), outr[i] = bf16_to_f32(outb[i]);

    uint16_t *d_q = dev_from(qb, nq * 2), *d_k = dev_from(kb, nk * 2), *d_v = dev_from(vb, nk * 2);
    uint16_t *d_out = gpu->alloc(nq * 2);
    float *d_lse = gpu->alloc(nl * 4);
    float *dqr = NULL, *dkr = NULL, *dvr = NULL;
    if (want_b) {
        dqr = xalloc(nq * 4), dkr = xalloc(nk * 4), dvr = xalloc(nk * 4);
        cpu->attention_bwd(dqr, dkr, dvr, dy, outr, lse, q, k, v, B, T, H, KVH, D);
    }
    uint16_t *d_dy = dev_from(dyb, nq * 2);
    uint16_t *d_dq = gpu->alloc(nq * 2), *d_dk = gpu->alloc(nk * 2), *d_dv = gpu->alloc(nk * 2);

    int mode0 = attn_bf16_deterministic();
    for (g_var = 0; g_var < NVAR; g_var++) {
        int want_f = want_fwd && g_var == 0;
        attn_bf16_set_deterministic(VARS[g_var]);
        g_worst = 0, g_det = 1, g_what[0] = 0;
        if (want_f) {
            uint16_t *ob[2];
            float *of[2], *lf[2];
            int rc[2];
            for (int rep = 0; rep < 2; rep++) {
                poison16(d_out, nq), poison32(d_lse, nl);
                rc[rep] = flash_bf16_fwd(d_out, d_lse, d_q, d_k, d_v, B, T, H, KVH, D);
                of[rep] = down16(d_out, nq, &ob[rep]);
                lf[rep] = xalloc(nl * 4);
                gpu->download(lf[rep], d_lse, nl * 4);
            }
            if (rc[0] != 0 || rc[1] != 0) {
                report("flash_bf16_fwd.out (returned -1)", shape, INFINITY, 1e-2, -1);
            } else {
                row("flash_bf16_fwd.out", shape, "out", of[0], out, ob[0], ob[1], B, T, H, D, 1e-2,
                    1);
                double e = 0;
                size_t bad = (size_t)-1;
                for (size_t i = 0; i < nl; i++) {
                    double d = fabs((double)lf[0][i] - lse[i]) / fmax(fabs(lse[i]), 1.0);
                    if (!(d <= e)) {
                        e = d;
                        if (bad == (size_t)-1 && !(d <= 1e-4)) bad = i;
                    }
                }
                int det = memcmp(lf[0], lf[1], nl * 4) == 0;
                report("flash_bf16_fwd.lse", shape, e, 1e-4, det);
                if (bad != (size_t)-1)
                    printf("    lse first bad: b=%d h=%d t=%d gpu=%.7g ref=%.7g\n",
                           (int)(bad / ((size_t)H * T)), (int)(bad / T % H), (int)(bad % T),
                           lf[0][bad], lse[bad]);
            }
            for (int rep = 0; rep < 2; rep++) free(ob[rep]), free(of[rep]), free(lf[rep]);
        }

        if (want_b) {
            gpu->upload(d_out, outb, nq * 2);
            gpu->upload(d_lse, lse, nl * 4);
            uint16_t *bits[2][3];
            float *res[2][3];
            int rc[2];
            for (int rep = 0; rep < 2; rep++) {
                poison16(d_dq, nq), poison16(d_dk, nk), poison16(d_dv, nk);
                rc[rep] = flash_bf16_bwd(d_dq, d_dk, d_dv, d_dy, d_out, d_lse, d_q, d_k, d_v, B, T,
                                         H, KVH, D);
                res[rep][0] = down16(d_dq, nq, &bits[rep][0]);
                res[rep][1] = down16(d_dk, nk, &bits[rep][1]);
                res[rep][2] = down16(d_dv, nk, &bits[rep][2]);
            }
            if (rc[0] != 0 || rc[1] != 0) {
                report("flash_bf16_bwd (returned -1)", shape, INFINITY, 1e-2, -1);
            } else {
                int nd = VARS[g_var]; // atomic mode: tolerance only
                row("flash_bf16_bwd.dq", shape, "dq", res[0][0], dqr, bits[0][0], bits[1][0], B, T,
                    H, D, 1e-2, nd);
                row("flash_bf16_bwd.dk", shape, "dk", res[0][1], dkr, bits[0][1], bits[1][1], B, T,
                    KVH, D, 1e-2, nd);
                row("flash_bf16_bwd.dv", shape, "dv", res[0][2], dvr, bits[0][2], bits[1][2], B, T,
                    KVH, D, 1e-2, nd);
            }
            for (int r = 0; r < 2; r++)
                for (int i = 0; i < 3; i++) free(bits[r][i]), free(res[r][i]);
        }
        if (g_var) {
            char op[64];
            snprintf(op, sizeof op, "flash_bf16_variant%d", g_var);
            report(op, shape, g_worst, 1, g_det); // err = worst (error / tolerance), at g_what
            if (!(g_worst <= 1)) printf("    worst: %s\n", g_what);
        }
    }
    g_var = 0;
    attn_bf16_set_deterministic(mode0);
    gpu->free(d_dy), gpu->free(d_dq), gpu->free(d_dk), gpu->free(d_dv);
    free(dqr), free(dkr), free(dvr);
    gpu->free(d_q), gpu->free(d_k), gpu->free(d_v), gpu->free(d_out), gpu->free(d_lse);
    free(qb), free(kb), free(vb), free(dyb), free(q), free(k), free(v), free(dy), free(out),
        free(lse), free(outb), free(outr);
}

// An unsupported head dim must return -1 and write nothing.
static void t_flash_unsupported(void) {
    if (!wanted("flash_bf16_unsupported")) return;
    int B = 1, T = 40, H = 4, KVH = 2, D = 32;
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D, nl = (size_t)B * H * T;
    uint16_t *d_q = gpu->alloc(nq * 2), *d_k = gpu->alloc(nk * 2), *d_v = gpu->alloc(nk * 2);
    uint16_t *d_o = gpu->alloc(nq * 2), *d_dq = gpu->alloc(nq * 2), *d_dk = gpu->alloc(nk * 2);
    uint16_t *d_dv = gpu->alloc(nk * 2);
    float *d_lse = gpu->alloc(nl * 4);
    poison16(d_o, nq), poison16(d_dq, nq), poison16(d_dk, nk), poison16(d_dv, nk);
    poison32(d_lse, nl);
    int r1 = flash_bf16_fwd(d_o, d_lse, d_q, d_k, d_v, B, T, H, KVH, D);
    int r2 = flash_bf16_bwd(d_dq, d_dk, d_dv, d_q, d_o, d_lse, d_q, d_k, d_v, B, T, H, KVH, D);
    int r3 = flash_bf16_fwd(d_o, d_lse, d_q, d_k, d_v, B, T, 6, 4, 64); // H % KVH != 0
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
    report("flash_bf16_unsupported (-1)", "D=32; H=6 KVH=4", ok ? 0 : INFINITY, 0, -1);
    free(h), free(hl);
    gpu->free(d_q), gpu->free(d_k), gpu->free(d_v), gpu->free(d_o), gpu->free(d_dq),
        gpu->free(d_dk), gpu->free(d_dv), gpu->free(d_lse);
}

// Timing (not a parity check; reported with err 0, tol 0): B=1, H=KVH=32, D=128, causal, the
// issue-8 benchmark shape, so a test log also shows the speed. ms per call, mean of a few runs;
// a 4-byte download synchronizes.
static void t_flash_perf(int T) {
    if (!wanted("flash_bf16_perf")) return;
    int B = 1, H = 32, KVH = 32, D = 128;
    size_t nq = (size_t)B * T * H * D, nl = (size_t)B * H * T;
    uint16_t *hb = xalloc(nq * 2);
    for (size_t i = 0; i < nq; i++) // 1M random values, repeated (speed does not care)
        hb[i] = i < (1u << 20) ? bf16_from_f32(rng_normal(&rng)) : hb[i & ((1u << 20) - 1)];
    uint16_t *d_q = dev_from(hb, nq * 2), *d_k = dev_from(hb, nq * 2), *d_v = dev_from(hb, nq * 2);
    uint16_t *d_o = gpu->alloc(nq * 2), *d_dy = dev_from(hb, nq * 2);
    uint16_t *d_dq = gpu->alloc(nq * 2), *d_dk = gpu->alloc(nq * 2), *d_dv = gpu->alloc(nq * 2);
    float *d_lse = gpu->alloc(nl * 4), sync;
    int reps = T >= 65536 ? 2 : 5;
    double f = 2.0 * T * (double)T * D * H; // causal forward FLOPs
    char shape[128];
    // pass 0: the default (deterministic) mode, pass 1: the atomic mode (the same forward)
    int mode0 = attn_bf16_deterministic();
    for (int pass = 0; pass < NVAR; pass++) {
        attn_bf16_set_deterministic(VARS[pass]);
        flash_bf16_fwd(d_o, d_lse, d_q, d_k, d_v, B, T, H, KVH, D); // warm-up
        flash_bf16_bwd(d_dq, d_dk, d_dv, d_dy, d_o, d_lse, d_q, d_k, d_v, B, T, H, KVH, D);
        gpu->download(&sync, d_lse, 4);
        double t0 = now_s();
        for (int r = 0; r < reps; r++) flash_bf16_fwd(d_o, d_lse, d_q, d_k, d_v, B, T, H, KVH, D);
        gpu->download(&sync, d_lse, 4);
        double t1 = now_s();
        for (int r = 0; r < reps; r++)
            flash_bf16_bwd(d_dq, d_dk, d_dv, d_dy, d_o, d_lse, d_q, d_k, d_v, B, T, H, KVH, D);
        gpu->download(&sync, d_lse, 4);
        double t2 = now_s();
        double tf = (t1 - t0) / reps * 1e3, tb = (t2 - t1) / reps * 1e3;
        snprintf(shape, sizeof shape, "T=%d H=32 D=128: fwd %.2f bwd %.2f tot %.2f ms", T, tf, tb,
                 tf + tb);
        printf("    (info flash_bf16_perf %s: %s)\n", VARS[pass] ? "default" : "atomic",
               shape); // timing, not a check: the benchmark is mslab-gpu-bench --attn
        printf("    T=%d fwd %.1f TFLOP/s, bwd %.1f TFLOP/s (2.5x), fwd+bwd %.1f TFLOP/s (3.5x)\n",
               T, f / tf * 1e-9, 2.5 * f / tb * 1e-9, 3.5 * f / (tf + tb) * 1e-9);
    }
    attn_bf16_set_deterministic(mode0);
    free(hb);
    gpu->free(d_q), gpu->free(d_k), gpu->free(d_v), gpu->free(d_o), gpu->free(d_dy),
        gpu->free(d_dq), gpu->free(d_dk), gpu->free(d_dv), gpu->free(d_lse);
}

void t_flash_bf16_all(void) {
    static const int Ts[] = {1, 37, 64, 65, 200, 1000, 4096};
    static const int HK[3][2] = {{8, 2}, {4, 4}, {6, 3}};
    int nT = quick ? 6 : 7;
    for (int it = 0; it < nT; it++) {
        int T = Ts[it];
        for (int D = 64; D <= 128; D *= 2)
            for (int c = 0; c < 3; c++) {
                if (T == 4096 && c != 0) continue; // the CPU reference is slow there
                int B = (c + it) % 2 + 1;
                t_flash(B, T, HK[c][0], HK[c][1], D);
            }
    }
    t_flash_unsupported();
    if (!quick) {
        t_flash_perf(4096);
        t_flash_perf(16384);
        t_flash_perf(32768);
        t_flash_perf(65536);
    }
}
