// gpu_tests.c: the CUDA backend against the CPU reference (make test-gpu; docs/cuda.md).
//
//   build/mslab-gpu-tests [--quick] [FILTER]
//
// Every op of ops.h that the CUDA table implements runs on both backends on fresh random inputs at
// several shapes (non-multiple-of-tile lengths T = 1, 37, 200, 1000; grouped heads H/KVH = 8/2;
// head dims 16..256). Before each CUDA run its forward outputs are filled with NaN, so an element a
// kernel fails to write fails the comparison; backward gradients start from the same random
// values on both sides, so += (not =) is checked too. Each CUDA op runs twice and must give the
// same bits (the "det" check). Then one full training step of two small models (loss, logits and
// every gradient tensor), and two 50-step CUDA trainings that must give bitwise-identical losses.
// Block-sparse attention (t_sparse): attention_select's index lists (idx, kpos, qpos) must EQUAL the
// CPU's (tolerance 0, err = number of differing entries) for ms / moba / s2 / window configs; the
// sparse forward / backward then run on the CPU's list on both sides; plus training steps of small
// models with attention kinds ms and moba.
//
// Error measure, per tensor: max_i |cuda_i - cpu_i| / max(|cpu_i|, rms(cpu)), i.e. relative per
// element, except that an element smaller than the tensor's RMS is judged against the RMS (an
// entry that cancels to ~0 carries the rounding of terms of the tensor's scale, so a pure
// per-element ratio would measure the cancellation, not the kernel). A NaN anywhere fails, and
// so does any row after which an ordered (deterministic) backward reported a timed-out wait for
// its turn (s13: its fixed order was broken; attn_bf16_ord_check, cuda/ord_watch.cuh).
// Tolerances (fp32 storage and compute):
//   0      add, scale, copy, embedding fwd/bwd (same operations in the same order: bitwise)
//   1e-12  sumsq (double accumulation, different order)
//   1e-5   element-wise and row ops (one rounding chain per element; differences come from FMA
//          contraction and expf/sincos ulps): rmsnorm, rope, swiglu, cross-entropy, adamw,
//          attention lse, the model's loss
//   1e-4   float reductions over many terms in another order: matmul (cuBLAS), attention
//          out / dq / dk / dv, the model's logits and every gradient tensor
// Output: one table row per check, `op | shape | max rel err | tol | ok`, then `N passed, M failed`.
// FILTER runs only the checks whose op name contains it; --quick uses small shapes only and skips
// the 50-step trainings (for compute-sanitizer).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/attention.h"
#include "../../core/common.h"
#include "../../core/model.h"
#include "../../core/ops.h"
#include "../../core/optim.h"
#include "../../cuda/backend_cuda.h"
#include "../../cuda/attn_bf16.h"
#include "gpu_check.h"

const Backend *cpu, *gpu;
int quick;
Rng rng;
static int n_pass, n_fail;
static const char *filter;

// ---- helpers ----

static float *hvec(size_t n) {
    float *x = calloc(n ? n : 1, sizeof(float));
    MS_ASSERT(x, "out of memory");
    return x;
}
static float *hrand(size_t n, float scale, float offset) {
    float *x = hvec(n);
    for (size_t i = 0; i < n; i++) x[i] = offset + scale * rng_normal(&rng);
    return x;
}
static float *hcopy(const float *a, size_t n) {
    float *x = hvec(n);
    memcpy(x, a, n * sizeof(float));
    return x;
}
static float *dup_dev(const float *h, size_t n) { // device copy of a host array
    float *d = gpu->alloc(n * sizeof(float));
    gpu->upload(d, h, n * sizeof(float));
    return d;
}
static void poison(float *d, size_t n) {
    float *h = hvec(n);
    for (size_t i = 0; i < n; i++) h[i] = NAN;
    gpu->upload(d, h, n * sizeof(float));
    free(h);
}
static float *dev_poisoned(size_t n) {
    float *d = gpu->alloc(n * sizeof(float));
    poison(d, n);
    return d;
}
static float *down(const float *d, size_t n) {
    float *h = hvec(n);
    gpu->download(h, d, n * sizeof(float));
    return h;
}
static int same_bits(const float *a, const float *b, size_t n) {
    return memcmp(a, b, n * sizeof(float)) == 0;
}

static double max_rel(const float *a, const float *ref, size_t n) {
    double ss = 0, worst = 0;
    for (size_t i = 0; i < n; i++) ss += (double)ref[i] * ref[i];
    double floor_ = n ? sqrt(ss / n) : 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - ref[i]);
        double den = fmax(fabs((double)ref[i]), floor_);
        double e = den > 0 ? d / den : (d == 0 ? 0 : INFINITY);
        if (!(e <= worst)) worst = e; // NaN propagates
    }
    return worst;
}

int wanted(const char *op) { return !filter || strstr(op, filter); }

// the ordered backward's timed-out waits (attn_bf16_ord_check: the downloads report them too)
// since the last row or ord_taken
static long ord_seen;
long ord_taken(void) {
    attn_bf16_ord_check();
    long n = attn_bf16_ord_timeouts(NULL) - ord_seen;
    ord_seen += n;
    return n;
}

// det: 1 = the two CUDA runs gave the same bits, 0 = not, -1 = not checked. A row fails where an
// ordered backward's wait timed out since the last row (its order was broken: s13)
void report(const char *op, const char *shape, double err, double tol, int det) {
    long tmo = ord_taken();
    int ok = err <= tol && det != 0 && !tmo;
    printf("%-24s | %-40s | %11.3e | %7.0e | %s%s%s\n", op, shape, err, tol, ok ? "ok" : "FAIL",
           det == 0 ? " (two runs differ)" : "", tmo ? " (an ordered wait timed out)" : "");
    fflush(stdout);
    if (ok) n_pass++;
    else n_fail++;
}

static void check(const char *op, const char *shape, const float *gpu_out, const float *cpu_out,
                  const float *gpu_again, size_t n, double tol) {
    double e = max_rel(gpu_out, cpu_out, n);
    int det = gpu_again ? same_bits(gpu_out, gpu_again, n) : -1;
    report(op, shape, e, tol, det);
}

// ---- memory and element-wise ----

static void t_memory(void) {
    if (!wanted("memory")) return;
    size_t n = 1000003;
    float *d = gpu->alloc(n * sizeof(float));
    float *h = down(d, n), *z = hvec(n);
    report("alloc (zero-filled)", "1000003", same_bits(h, z, n) ? 0 : INFINITY, 0, -1);
    float *x = hrand(n, 1, 0);
    gpu->upload(d, x, n * sizeof(float));
    free(h);
    h = down(d, n);
    report("upload/download", "1000003", same_bits(h, x, n) ? 0 : INFINITY, 0, -1);
    gpu->zero(d + 5, 1000);
    free(h);
    h = down(d, n);
    int ok = 1;
    for (size_t i = 0; i < n; i++) ok &= (i >= 5 && i < 1005) ? h[i] == 0 : h[i] == x[i];
    report("zero", "1000 of 1000003", ok ? 0 : INFINITY, 0, -1);
    // copy: disjoint and overlapping (memmove semantics), against the CPU backend
    float *ref = hcopy(x, n);
    gpu->upload(d, x, n * sizeof(float));
    cpu->copy(ref + 100, ref, 5000);
    gpu->copy(d + 100, d, 5000);
    cpu->copy(ref + 20000, ref + 20100, 7000);
    gpu->copy(d + 20000, d + 20100, 7000);
    cpu->copy(ref + 500000, ref, 400000);
    gpu->copy(d + 500000, d, 400000);
    free(h);
    h = down(d, n);
    report("copy (incl. overlapping)", "5000, 7000, 400000", same_bits(h, ref, n) ? 0 : INFINITY,
           0, -1);
    gpu->free(d);
    free(h), free(z), free(x), free(ref);
}

static void t_add_scale_sumsq(size_t n) {
    char shape[64];
    snprintf(shape, sizeof shape, "n=%zu", n);
    float *a = hrand(n, 1, 0), *b = hrand(n, 1, 0);
    float *da = dup_dev(a, n), *db = dup_dev(b, n);
    if (wanted("add")) {
        float *ref = hvec(n);
        cpu->add(ref, a, b, n);
        float *dout = dev_poisoned(n);
        gpu->add(dout, da, db, n);
        float *g1 = down(dout, n);
        poison(dout, n);
        gpu->add(dout, da, db, n);
        float *g2 = down(dout, n);
        check("add", shape, g1, ref, g2, n, 0);
        // aliased: out = a
        float *dal = dup_dev(a, n);
        gpu->add(dal, dal, db, n);
        float *g3 = down(dal, n);
        check("add (out aliases a)", shape, g3, ref, NULL, n, 0);
        gpu->free(dout), gpu->free(dal);
        free(ref), free(g1), free(g2), free(g3);
    }
    if (wanted("scale")) {
        float *ref = hcopy(a, n);
        cpu->scale(ref, 0.37f, n);
        float *dx = dup_dev(a, n);
        gpu->scale(dx, 0.37f, n);
        float *g1 = down(dx, n);
        gpu->upload(dx, a, n * sizeof(float));
        gpu->scale(dx, 0.37f, n);
        float *g2 = down(dx, n);
        check("scale", shape, g1, ref, g2, n, 0);
        gpu->free(dx);
        free(ref), free(g1), free(g2);
    }
    if (wanted("sumsq")) {
        double r = cpu->sumsq(a, n), g1 = gpu->sumsq(da, n), g2 = gpu->sumsq(da, n);
        report("sumsq", shape, fabs(g1 - r) / fmax(fabs(r), 1e-300), 1e-12,
               memcmp(&g1, &g2, sizeof g1) == 0);
    }
    gpu->free(da), gpu->free(db);
    free(a), free(b);
}

static void t_swiglu(size_t n) {
    if (!wanted("swiglu")) return;
    char shape[64];
    snprintf(shape, sizeof shape, "n=%zu", n);
    float *g = hrand(n, 3, 0), *u = hrand(n, 1, 0), *dy = hrand(n, 1, 0);
    float *dg0 = hrand(n, 1, 0), *du0 = hrand(n, 1, 0);
    float *ref = hvec(n);
    cpu->swiglu_fwd(ref, g, u, n);
    float *dgr = hcopy(dg0, n), *dur = hcopy(du0, n);
    cpu->swiglu_bwd(dgr, dur, dy, g, u, n);
    float *d_g = dup_dev(g, n), *d_u = dup_dev(u, n), *d_dy = dup_dev(dy, n);
    float *d_out = dev_poisoned(n);
    gpu->swiglu_fwd(d_out, d_g, d_u, n);
    float *o1 = down(d_out, n);
    poison(d_out, n);
    gpu->swiglu_fwd(d_out, d_g, d_u, n);
    float *o2 = down(d_out, n);
    check("swiglu_fwd", shape, o1, ref, o2, n, 1e-5);
    float *d_dg = dup_dev(dg0, n), *d_du = dup_dev(du0, n);
    gpu->swiglu_bwd(d_dg, d_du, d_dy, d_g, d_u, n);
    float *a1 = down(d_dg, n), *b1 = down(d_du, n);
    gpu->upload(d_dg, dg0, n * sizeof(float));
    gpu->upload(d_du, du0, n * sizeof(float));
    gpu->swiglu_bwd(d_dg, d_du, d_dy, d_g, d_u, n);
    float *a2 = down(d_dg, n), *b2 = down(d_du, n);
    check("swiglu_bwd.dgate", shape, a1, dgr, a2, n, 1e-5);
    check("swiglu_bwd.dup", shape, b1, dur, b2, n, 1e-5);
    gpu->free(d_g), gpu->free(d_u), gpu->free(d_dy), gpu->free(d_out), gpu->free(d_dg),
        gpu->free(d_du);
    free(g), free(u), free(dy), free(dg0), free(du0), free(ref), free(dgr), free(dur), free(o1),
        free(o2), free(a1), free(a2), free(b1), free(b2);
}

static void t_adamw(size_t n, int t, float wd) {
    if (!wanted("adamw")) return;
    char shape[64];
    snprintf(shape, sizeof shape, "n=%zu t=%d wd=%g", n, t, wd);
    float *p = hrand(n, 0.05f, 0), *g = hrand(n, 0.01f, 0), *m = hrand(n, 0.001f, 0);
    float *v = hvec(n);
    for (size_t i = 0; i < n; i++) v[i] = 1e-5f * fabsf(rng_normal(&rng));
    float *pr = hcopy(p, n), *mr = hcopy(m, n), *vr = hcopy(v, n);
    cpu->adamw(pr, g, mr, vr, n, 1e-3f, 0.9f, 0.95f, 1e-8f, wd, t);
    float *gres[2][3];
    float *dg = dup_dev(g, n);
    for (int rep = 0; rep < 2; rep++) {
        float *dp = dup_dev(p, n), *dm = dup_dev(m, n), *dv = dup_dev(v, n);
        gpu->adamw(dp, dg, dm, dv, n, 1e-3f, 0.9f, 0.95f, 1e-8f, wd, t);
        gres[rep][0] = down(dp, n), gres[rep][1] = down(dm, n), gres[rep][2] = down(dv, n);
        gpu->free(dp), gpu->free(dm), gpu->free(dv);
    }
    check("adamw.p", shape, gres[0][0], pr, gres[1][0], n, 1e-5);
    check("adamw.m", shape, gres[0][1], mr, gres[1][1], n, 1e-5);
    check("adamw.v", shape, gres[0][2], vr, gres[1][2], n, 1e-5);
    for (int r = 0; r < 2; r++)
        for (int i = 0; i < 3; i++) free(gres[r][i]);
    gpu->free(dg);
    free(p), free(g), free(m), free(v), free(pr), free(mr), free(vr);
}

// ---- embedding ----

static void t_embedding(int N, int C, int V) {
    if (!wanted("embedding")) return;
    char shape[64];
    snprintf(shape, sizeof shape, "N=%d C=%d V=%d", N, C, V);
    int *tok = malloc(sizeof(int) * N);
    for (int i = 0; i < N; i++) // skewed: token 5 is frequent, the rest uniform
        tok[i] = rng_uniform(&rng) < 0.3 ? 5 : (int)rng_below(&rng, V);
    float *wte = hrand((size_t)V * C, 1, 0), *dy = hrand((size_t)N * C, 1, 0);
    float *dw0 = hrand((size_t)V * C, 1, 0);
    size_t no = (size_t)N * C, nw = (size_t)V * C;
    float *ref = hvec(no), *dwr = hcopy(dw0, nw);
    cpu->embedding_fwd(ref, tok, wte, N, C);
    cpu->embedding_bwd(dwr, dy, tok, N, C);
    int *dtok = gpu->alloc(sizeof(int) * N);
    gpu->upload(dtok, tok, sizeof(int) * N);
    float *dwte = dup_dev(wte, nw), *ddy = dup_dev(dy, no), *dout = dev_poisoned(no);
    gpu->embedding_fwd(dout, dtok, dwte, N, C);
    float *o1 = down(dout, no);
    poison(dout, no);
    gpu->embedding_fwd(dout, dtok, dwte, N, C);
    float *o2 = down(dout, no);
    check("embedding_fwd", shape, o1, ref, o2, no, 0);
    float *ddw = dup_dev(dw0, nw);
    gpu->embedding_bwd(ddw, ddy, dtok, N, C);
    float *g1 = down(ddw, nw);
    gpu->upload(ddw, dw0, nw * sizeof(float));
    gpu->embedding_bwd(ddw, ddy, dtok, N, C);
    float *g2 = down(ddw, nw);
    check("embedding_bwd", shape, g1, dwr, g2, nw, 0);
    gpu->free(dtok), gpu->free(dwte), gpu->free(ddy), gpu->free(dout), gpu->free(ddw);
    free(tok), free(wte), free(dy), free(dw0), free(ref), free(dwr), free(o1), free(o2), free(g1),
        free(g2);
}

// ---- matmul ----

static void t_matmul(int N, int IC, int OC) {
    if (!wanted("matmul")) return;
    char shape[64];
    snprintf(shape, sizeof shape, "N=%d IC=%d OC=%d", N, IC, OC);
    size_t ni = (size_t)N * IC, nw = (size_t)OC * IC, no = (size_t)N * OC;
    float *x = hrand(ni, 1, 0), *w = hrand(nw, 0.05f, 0), *dy = hrand(no, 1, 0);
    float *dx0 = hrand(ni, 1, 0), *dw0 = hrand(nw, 1, 0);
    float *ref = hvec(no), *dxr = hcopy(dx0, ni), *dwr = hcopy(dw0, nw);
    cpu->matmul_fwd(ref, x, w, N, IC, OC);
    cpu->matmul_bwd(dxr, dwr, dy, x, w, N, IC, OC);
    float *dx = dup_dev(x, ni), *dwt = dup_dev(w, nw), *ddy = dup_dev(dy, no);
    float *dout = dev_poisoned(no);
    gpu->matmul_fwd(dout, dx, dwt, N, IC, OC);
    float *o1 = down(dout, no);
    poison(dout, no);
    gpu->matmul_fwd(dout, dx, dwt, N, IC, OC);
    float *o2 = down(dout, no);
    check("matmul_fwd", shape, o1, ref, o2, no, 1e-4);
    float *ddx = dup_dev(dx0, ni), *ddw = dup_dev(dw0, nw);
    gpu->matmul_bwd(ddx, ddw, ddy, dx, dwt, N, IC, OC);
    float *a1 = down(ddx, ni), *b1 = down(ddw, nw);
    gpu->upload(ddx, dx0, ni * sizeof(float));
    gpu->upload(ddw, dw0, nw * sizeof(float));
    gpu->matmul_bwd(ddx, NULL, ddy, dx, dwt, N, IC, OC); // one gradient at a time, too
    gpu->matmul_bwd(NULL, ddw, ddy, dx, dwt, N, IC, OC);
    float *a2 = down(ddx, ni), *b2 = down(ddw, nw);
    check("matmul_bwd.dinp", shape, a1, dxr, a2, ni, 1e-4);
    check("matmul_bwd.dw", shape, b1, dwr, b2, nw, 1e-4);
    gpu->free(dx), gpu->free(dwt), gpu->free(ddy), gpu->free(dout), gpu->free(ddx), gpu->free(ddw);
    free(x), free(w), free(dy), free(dx0), free(dw0), free(ref), free(dxr), free(dwr), free(o1),
        free(o2), free(a1), free(a2), free(b1), free(b2);
}

// ---- rmsnorm ----

static void t_rmsnorm(int N, int C) {
    if (!wanted("rmsnorm")) return;
    char shape[64];
    snprintf(shape, sizeof shape, "N=%d C=%d", N, C);
    size_t n = (size_t)N * C;
    float *x = hrand(n, 2, 0.3f), *w = hrand(C, 0.2f, 1), *dy = hrand(n, 1, 0);
    float *dx0 = hrand(n, 1, 0), *dw0 = hrand(C, 1, 0);
    float *ref = hvec(n), *rstd = hvec(N), *dxr = hcopy(dx0, n), *dwr = hcopy(dw0, C);
    cpu->rmsnorm_fwd(ref, rstd, x, w, N, C, 1e-5f);
    cpu->rmsnorm_bwd(dxr, dwr, dy, x, w, rstd, N, C);
    float *d_x = dup_dev(x, n), *d_w = dup_dev(w, C), *d_dy = dup_dev(dy, n);
    float *d_out = dev_poisoned(n), *d_rstd = dev_poisoned(N);
    gpu->rmsnorm_fwd(d_out, d_rstd, d_x, d_w, N, C, 1e-5f);
    float *o1 = down(d_out, n), *r1 = down(d_rstd, N);
    poison(d_out, n), poison(d_rstd, N);
    gpu->rmsnorm_fwd(d_out, d_rstd, d_x, d_w, N, C, 1e-5f);
    float *o2 = down(d_out, n), *r2 = down(d_rstd, N);
    check("rmsnorm_fwd.out", shape, o1, ref, o2, n, 1e-5);
    check("rmsnorm_fwd.rstd", shape, r1, rstd, r2, N, 1e-5);
    // the backward reads the CPU's rstd, so it is judged alone
    gpu->upload(d_rstd, rstd, N * sizeof(float));
    float *d_dx = dup_dev(dx0, n), *d_dw = dup_dev(dw0, C);
    gpu->rmsnorm_bwd(d_dx, d_dw, d_dy, d_x, d_w, d_rstd, N, C);
    float *a1 = down(d_dx, n), *b1 = down(d_dw, C);
    gpu->upload(d_dx, dx0, n * sizeof(float));
    gpu->upload(d_dw, dw0, C * sizeof(float));
    gpu->rmsnorm_bwd(d_dx, d_dw, d_dy, d_x, d_w, d_rstd, N, C);
    float *a2 = down(d_dx, n), *b2 = down(d_dw, C);
    check("rmsnorm_bwd.dinp", shape, a1, dxr, a2, n, 1e-5);
    check("rmsnorm_bwd.dw", shape, b1, dwr, b2, C, 1e-5);
    gpu->free(d_x), gpu->free(d_w), gpu->free(d_dy), gpu->free(d_out), gpu->free(d_rstd),
        gpu->free(d_dx), gpu->free(d_dw);
    free(x), free(w), free(dy), free(dx0), free(dw0), free(ref), free(rstd), free(dxr), free(dwr),
        free(o1), free(o2), free(r1), free(r2), free(a1), free(a2), free(b1), free(b2);
}

// ---- rope ----

static void t_rope(int N, int H, int D, int style, double base, double maxpos) {
    if (!wanted("rope")) return;
    char shape[96];
    snprintf(shape, sizeof shape, "N=%d H=%d D=%d %s base=%g pos<%g", N, H, D,
             style == ROPE_HALVES ? "halves" : "interl", base, maxpos);
    size_t n = (size_t)N * H * D;
    float *x = hrand(n, 1, 0), *dy = hrand(n, 1, 0), *dx0 = hrand(n, 1, 0);
    float *pos = hvec(N), *inv = hvec(D / 2);
    for (int i = 0; i < N; i++) pos[i] = (float)(rng_uniform(&rng) * maxpos);
    pos[0] = 0;
    for (int i = 0; i < D / 2; i++) inv[i] = (float)pow(base, -2.0 * i / D);
    float *ref = hvec(n), *dxr = hcopy(dx0, n);
    cpu->rope_fwd(ref, x, pos, inv, N, H, D, style);
    cpu->rope_bwd(dxr, dy, pos, inv, N, H, D, style);
    float *d_x = dup_dev(x, n), *d_dy = dup_dev(dy, n), *d_pos = dup_dev(pos, N);
    float *d_inv = dup_dev(inv, D / 2), *d_out = dev_poisoned(n);
    gpu->rope_fwd(d_out, d_x, d_pos, d_inv, N, H, D, style);
    float *o1 = down(d_out, n);
    poison(d_out, n);
    gpu->rope_fwd(d_out, d_x, d_pos, d_inv, N, H, D, style);
    float *o2 = down(d_out, n);
    check("rope_fwd", shape, o1, ref, o2, n, 1e-5);
    float *d_dx = dup_dev(dx0, n);
    gpu->rope_bwd(d_dx, d_dy, d_pos, d_inv, N, H, D, style);
    float *a1 = down(d_dx, n);
    gpu->upload(d_dx, dx0, n * sizeof(float));
    gpu->rope_bwd(d_dx, d_dy, d_pos, d_inv, N, H, D, style);
    float *a2 = down(d_dx, n);
    check("rope_bwd", shape, a1, dxr, a2, n, 1e-5);
    gpu->free(d_x), gpu->free(d_dy), gpu->free(d_pos), gpu->free(d_inv), gpu->free(d_out),
        gpu->free(d_dx);
    free(x), free(dy), free(dx0), free(pos), free(inv), free(ref), free(dxr), free(o1), free(o2),
        free(a1), free(a2);
}

// ---- attention ----

static void t_attention(int B, int T, int H, int KVH, int D, float qscale) {
    if (!wanted("attention")) return;
    char shape[96];
    snprintf(shape, sizeof shape, "B=%d T=%d H=%d KVH=%d D=%d", B, T, H, KVH, D);
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D, nl = (size_t)B * H * T;
    float *q = hrand(nq, qscale, 0), *k = hrand(nk, 1, 0), *v = hrand(nk, 1, 0);
    float *dy = hrand(nq, 1, 0), *dq0 = hrand(nq, 1, 0), *dk0 = hrand(nk, 1, 0);
    float *dv0 = hrand(nk, 1, 0);
    float *out = hvec(nq), *lse = hvec(nl);
    cpu->attention_fwd(out, lse, q, k, v, B, T, H, KVH, D);
    float *dqr = hcopy(dq0, nq), *dkr = hcopy(dk0, nk), *dvr = hcopy(dv0, nk);
    cpu->attention_bwd(dqr, dkr, dvr, dy, out, lse, q, k, v, B, T, H, KVH, D);

    float *d_q = dup_dev(q, nq), *d_k = dup_dev(k, nk), *d_v = dup_dev(v, nk);
    float *d_out = dev_poisoned(nq), *d_lse = dev_poisoned(nl);
    gpu->attention_fwd(d_out, d_lse, d_q, d_k, d_v, B, T, H, KVH, D);
    float *o1 = down(d_out, nq), *l1 = down(d_lse, nl);
    poison(d_out, nq), poison(d_lse, nl);
    gpu->attention_fwd(d_out, d_lse, d_q, d_k, d_v, B, T, H, KVH, D);
    float *o2 = down(d_out, nq), *l2 = down(d_lse, nl);
    check("attention_fwd.out", shape, o1, out, o2, nq, 1e-4);
    check("attention_fwd.lse", shape, l1, lse, l2, nl, 1e-5);

    // the backward reads the CPU's out and lse, so it is judged alone
    gpu->upload(d_out, out, nq * sizeof(float));
    gpu->upload(d_lse, lse, nl * sizeof(float));
    float *d_dy = dup_dev(dy, nq), *d_dq = dup_dev(dq0, nq), *d_dk = dup_dev(dk0, nk);
    float *d_dv = dup_dev(dv0, nk);
    float *res[2][3];
    for (int rep = 0; rep < 2; rep++) {
        gpu->upload(d_dq, dq0, nq * sizeof(float));
        gpu->upload(d_dk, dk0, nk * sizeof(float));
        gpu->upload(d_dv, dv0, nk * sizeof(float));
        gpu->attention_bwd(d_dq, d_dk, d_dv, d_dy, d_out, d_lse, d_q, d_k, d_v, B, T, H, KVH, D);
        res[rep][0] = down(d_dq, nq), res[rep][1] = down(d_dk, nk), res[rep][2] = down(d_dv, nk);
    }
    check("attention_bwd.dq", shape, res[0][0], dqr, res[1][0], nq, 1e-4);
    check("attention_bwd.dk", shape, res[0][1], dkr, res[1][1], nk, 1e-4);
    check("attention_bwd.dv", shape, res[0][2], dvr, res[1][2], nk, 1e-4);
    for (int r = 0; r < 2; r++)
        for (int i = 0; i < 3; i++) free(res[r][i]);
    gpu->free(d_q), gpu->free(d_k), gpu->free(d_v), gpu->free(d_out), gpu->free(d_lse),
        gpu->free(d_dy), gpu->free(d_dq), gpu->free(d_dk), gpu->free(d_dv);
    free(q), free(k), free(v), free(dy), free(dq0), free(dk0), free(dv0), free(out), free(lse),
        free(dqr), free(dkr), free(dvr), free(o1), free(o2), free(l1), free(l2);
}

// attention_decode: Tq new rows at positions t0.. over a cache of t0 + Tq keys (one sequence)
static void t_attention_decode(int Tq, int t0, int H, int KVH, int D) {
    if (!wanted("attention_decode") || !gpu->attention_decode || !cpu->attention_decode) return;
    char shape[96];
    snprintf(shape, sizeof shape, "Tq=%d t0=%d H=%d KVH=%d D=%d", Tq, t0, H, KVH, D);
    int S = t0 + Tq;
    size_t nq = (size_t)Tq * H * D, nk = (size_t)S * KVH * D;
    float *q = hrand(nq, 1.5f, 0), *k = hrand(nk, 1, 0), *v = hrand(nk, 1, 0), *out = hvec(nq);
    cpu->attention_decode(out, q, k, v, Tq, t0, H, KVH, D);
    float *d_q = dup_dev(q, nq), *d_k = dup_dev(k, nk), *d_v = dup_dev(v, nk);
    float *d_out = dev_poisoned(nq);
    gpu->attention_decode(d_out, d_q, d_k, d_v, Tq, t0, H, KVH, D);
    float *o1 = down(d_out, nq);
    poison(d_out, nq);
    gpu->attention_decode(d_out, d_q, d_k, d_v, Tq, t0, H, KVH, D);
    float *o2 = down(d_out, nq);
    check("attention_decode", shape, o1, out, o2, nq, 1e-4);
    gpu->free(d_q), gpu->free(d_k), gpu->free(d_v), gpu->free(d_out);
    free(q), free(k), free(v), free(out), free(o1), free(o2);
}

// ---- cross-entropy ----

static void t_crossentropy(int N, int V) {
    if (!wanted("crossentropy")) return;
    char shape[64];
    snprintf(shape, sizeof shape, "N=%d V=%d", N, V);
    size_t n = (size_t)N * V;
    float *x = hrand(n, 3, 0), *dx0 = hrand(n, 0.01f, 0);
    int *tg = malloc(sizeof(int) * N);
    for (int i = 0; i < N; i++) tg[i] = (i % 7 == 3) ? -1 : (int)rng_below(&rng, V);
    float *loss = hvec(N), *dxr = hcopy(dx0, n);
    cpu->crossentropy_fwd(loss, x, tg, N, V);
    cpu->crossentropy_bwd(dxr, x, tg, 0.125f, N, V);
    int *d_tg = gpu->alloc(sizeof(int) * N);
    gpu->upload(d_tg, tg, sizeof(int) * N);
    float *d_x = dup_dev(x, n), *d_loss = dev_poisoned(N);
    gpu->crossentropy_fwd(d_loss, d_x, d_tg, N, V);
    float *l1 = down(d_loss, N);
    poison(d_loss, N);
    gpu->crossentropy_fwd(d_loss, d_x, d_tg, N, V);
    float *l2 = down(d_loss, N);
    check("crossentropy_fwd", shape, l1, loss, l2, N, 1e-5);
    float *d_dx = dup_dev(dx0, n);
    gpu->crossentropy_bwd(d_dx, d_x, d_tg, 0.125f, N, V);
    float *a1 = down(d_dx, n);
    gpu->upload(d_dx, dx0, n * sizeof(float));
    gpu->crossentropy_bwd(d_dx, d_x, d_tg, 0.125f, N, V);
    float *a2 = down(d_dx, n);
    check("crossentropy_bwd", shape, a1, dxr, a2, n, 1e-5);
    gpu->free(d_tg), gpu->free(d_x), gpu->free(d_loss), gpu->free(d_dx);
    free(x), free(dx0), free(tg), free(loss), free(dxr), free(l1), free(l2), free(a1), free(a2);
}

// ---- block-sparse attention: selection (lists compared exactly), forward, backward ----
//
// The selection runs on both backends on the same q / k: idx (and kpos / qpos) must be equal
// element for element (err 0, else the count of differing entries). The forward and backward then
// run on the CPU's list on both sides (so their errors are the kernels' alone), outputs poisoned,
// gradients starting from the same random values, each CUDA call twice (det).

static int *ivec_dev(size_t n, int fill) {
    int *h = malloc(sizeof(int) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) h[i] = fill;
    int *d = gpu->alloc(sizeof(int) * (n ? n : 1));
    gpu->upload(d, h, sizeof(int) * n);
    free(h);
    return d;
}
static size_t int_diff(const int *a, const int *b, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += a[i] != b[i];
    return k;
}

static void t_sparse(const char *name, AttnConfig cfg, int B, int T, int H, int KVH, int D,
                     float qscale) {
    if (!wanted("sparse") && !wanted("select")) return;
    AttnDims d;
    MS_ASSERT(attn_config_check(&cfg, "attention") == 0, "%s", ms_error());
    MS_ASSERT(attn_dims(&cfg, T, &d) == 0, "%s", ms_error());
    char shape[128];
    snprintf(shape, sizeof shape, "%s T=%d H=%d/%d D=%d%s", name, T, H, KVH, D,
             d.reindex ? " pos" : "");
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D, nl = (size_t)B * H * T;
    size_t ni = (size_t)B * H * d.nblk * d.width, nb = (size_t)B * H * d.nblk;
    float *q = hrand(nq, qscale, 0), *k = hrand(nk, 1, 0), *v = hrand(nk, 1, 0);
    float *invf = hvec(D / 2);
    for (int i = 0; i < D / 2; i++) invf[i] = (float)pow(10000.0, -2.0 * i / D);
    AttnIndex ic = {d.qblock, d.nblk, d.region, d.width, d.window, NULL, NULL, NULL, invf, ROPE_HALVES};
    ic.idx = malloc(sizeof(int) * ni);
    if (d.reindex) ic.kpos = malloc(sizeof(int) * ni), ic.qpos = malloc(sizeof(int) * nb);
    cpu->attention_select(&ic, &cfg, q, k, B, T, H, KVH, D);

    float *d_q = dup_dev(q, nq), *d_k = dup_dev(k, nk), *d_v = dup_dev(v, nk);
    float *d_inv = dup_dev(invf, D / 2);
    AttnIndex ig = ic;
    ig.inv_freq = d_inv;
    ig.idx = ivec_dev(ni, 0x7eadbeef);
    ig.kpos = d.reindex ? ivec_dev(ni, 0x7eadbeef) : NULL;
    ig.qpos = d.reindex ? ivec_dev(nb, 0x7eadbeef) : NULL;
    if (wanted("select")) {
        int *h1 = malloc(sizeof(int) * ni), *h2 = malloc(sizeof(int) * ni);
        size_t bad = 0, again = 0;
        for (int rep = 0; rep < 2; rep++) {
            gpu->attention_select(&ig, &cfg, d_q, d_k, B, T, H, KVH, D);
            gpu->download(rep ? h2 : h1, ig.idx, sizeof(int) * ni);
        }
        bad += int_diff(h1, ic.idx, ni), again += int_diff(h1, h2, ni);
        if (d.reindex) {
            gpu->download(h1, ig.kpos, sizeof(int) * ni);
            bad += int_diff(h1, ic.kpos, ni);
            gpu->download(h1, ig.qpos, sizeof(int) * nb);
            bad += int_diff(h1, ic.qpos, nb);
        }
        report("attention_select.lists", shape, (double)bad, 0, again ? 0 : 1);
        free(h1), free(h2);
    }
    if (wanted("sparse")) {
        gpu->upload(ig.idx, ic.idx, sizeof(int) * ni); // the CPU's list on both sides
        if (d.reindex) {
            gpu->upload(ig.kpos, ic.kpos, sizeof(int) * ni);
            gpu->upload(ig.qpos, ic.qpos, sizeof(int) * nb);
        }
        float *out = hvec(nq), *lse = hvec(nl);
        cpu->sparse_attention_fwd(out, lse, q, k, v, &ic, B, T, H, KVH, D);
        float *d_out = dev_poisoned(nq), *d_lse = dev_poisoned(nl);
        gpu->sparse_attention_fwd(d_out, d_lse, d_q, d_k, d_v, &ig, B, T, H, KVH, D);
        float *o1 = down(d_out, nq), *l1 = down(d_lse, nl);
        poison(d_out, nq), poison(d_lse, nl);
        gpu->sparse_attention_fwd(d_out, d_lse, d_q, d_k, d_v, &ig, B, T, H, KVH, D);
        float *o2 = down(d_out, nq), *l2 = down(d_lse, nl);
        check("sparse_fwd.out", shape, o1, out, o2, nq, 1e-4);
        check("sparse_fwd.lse", shape, l1, lse, l2, nl, 1e-5);

        float *dy = hrand(nq, 1, 0), *dq0 = hrand(nq, 1, 0), *dk0 = hrand(nk, 1, 0);
        float *dv0 = hrand(nk, 1, 0);
        float *dqr = hcopy(dq0, nq), *dkr = hcopy(dk0, nk), *dvr = hcopy(dv0, nk);
        cpu->sparse_attention_bwd(dqr, dkr, dvr, dy, out, lse, q, k, v, &ic, B, T, H, KVH, D);
        gpu->upload(d_out, out, nq * sizeof(float));
        gpu->upload(d_lse, lse, nl * sizeof(float));
        float *d_dy = dup_dev(dy, nq), *d_dq = dup_dev(dq0, nq), *d_dk = dup_dev(dk0, nk);
        float *d_dv = dup_dev(dv0, nk);
        float *res[2][3];
        for (int rep = 0; rep < 2; rep++) {
            gpu->upload(d_dq, dq0, nq * sizeof(float));
            gpu->upload(d_dk, dk0, nk * sizeof(float));
            gpu->upload(d_dv, dv0, nk * sizeof(float));
            gpu->sparse_attention_bwd(d_dq, d_dk, d_dv, d_dy, d_out, d_lse, d_q, d_k, d_v, &ig, B,
                                      T, H, KVH, D);
            res[rep][0] = down(d_dq, nq), res[rep][1] = down(d_dk, nk), res[rep][2] = down(d_dv, nk);
        }
        check("sparse_bwd.dq", shape, res[0][0], dqr, res[1][0], nq, 1e-4);
        check("sparse_bwd.dk", shape, res[0][1], dkr, res[1][1], nk, 1e-4);
        check("sparse_bwd.dv", shape, res[0][2], dvr, res[1][2], nk, 1e-4);
        for (int r = 0; r < 2; r++)
            for (int i = 0; i < 3; i++) free(res[r][i]);
        gpu->free(d_out), gpu->free(d_lse), gpu->free(d_dy), gpu->free(d_dq), gpu->free(d_dk),
            gpu->free(d_dv);
        free(out), free(lse), free(o1), free(o2), free(l1), free(l2), free(dy), free(dq0),
            free(dk0), free(dv0), free(dqr), free(dkr), free(dvr);
    }
    gpu->free(d_q), gpu->free(d_k), gpu->free(d_v), gpu->free(d_inv), gpu->free(ig.idx);
    if (ig.kpos) gpu->free(ig.kpos), gpu->free(ig.qpos);
    free(ic.idx), free(ic.kpos), free(ic.qpos), free(q), free(k), free(v), free(invf);
}

static AttnConfig ms_cfg(int w, int top, int merge, int prefix, int pool, int score, int select,
                         int order, int positions, int tail) {
    AttnConfig c = attn_config_default(ATTN_MS);
    c.w = w, c.top = top, c.merge = merge, c.prefix = prefix, c.pool = pool, c.score = score;
    c.select = select, c.order = order, c.positions = positions, c.tail = tail;
    return c;
}

static void t_sparse_all(void) {
    // ms at the paper's ratios scaled down: w 16, top 32, merge 8 (prefix top * w = 512)
    AttnConfig ms = ms_cfg(16, 32, 8, -1, POOL_MEAN, SCORE_DOT, SELECT_REGION, ORDER_RANK,
                           POS_TRUE, TAIL_SELECT);
    AttnConfig msp = ms;
    msp.positions = POS_REINDEXED;
    t_sparse("ms", ms, 1, 1000, 8, 2, 64, 1);
    t_sparse("ms", msp, 1, 1000, 8, 2, 128, 1);
    // small shapes: every pooling / score / order / select / tail, non-multiple lengths
    AttnConfig s = ms_cfg(8, 8, 2, 16, POOL_MEAN, SCORE_DOT, SELECT_REGION, ORDER_RANK, POS_TRUE,
                          TAIL_SELECT);
    t_sparse("ms small", s, 2, 203, 4, 2, 64, 1);
    AttnConfig x = s;
    x.pool = POOL_MAX, x.score = SCORE_SCALED, x.order = ORDER_SCORE;
    t_sparse("ms max/scaled/score", x, 1, 203, 4, 2, 32, 1);
    x = s, x.pool = POOL_NMEAN, x.score = SCORE_COSINE, x.order = ORDER_VOTES, x.tail = TAIL_DENSE;
    t_sparse("ms nmean/cos/votes/tail", x, 2, 203, 4, 1, 64, 1);
    x = s, x.pool = POOL_FIRST, x.select = SELECT_GROUP, x.positions = POS_REINDEXED;
    t_sparse("ms first/group", x, 1, 203, 6, 3, 48, 1);
    x = s, x.local_groups = 2, x.positions = POS_REINDEXED, x.prefix = 0;
    x.merge = 4, x.top = 12;
    t_sparse("ms lg2 prefix0", x, 1, 150, 4, 2, 16, 1);
    AttnConfig mo = attn_config_default(ATTN_MOBA);
    mo.block = 64, mo.top = 4;
    t_sparse("moba b64 top4", mo, 1, 1000, 8, 2, 64, 1);
    mo.block = 8, mo.top = 3;
    t_sparse("moba b8 top3", mo, 2, 37, 4, 2, 32, 1);
    AttnConfig s2 = attn_config_default(ATTN_S2);
    s2.group = 128, s2.ratio = 0;
    t_sparse("s2 g128", s2, 1, 1000, 8, 2, 64, 1);
    s2.group = 0, s2.ratio = 0.25;
    t_sparse("s2 r0.25", s2, 2, 203, 4, 2, 32, 1);
    AttnConfig wi = attn_config_default(ATTN_WINDOW);
    wi.window = 100;
    t_sparse("window 100", wi, 1, 1000, 8, 2, 64, 1);
    wi.window = 16;
    t_sparse("window 16", wi, 2, 203, 4, 4, 32, 1);
    if (!quick) {
        t_sparse("ms", ms, 1, 4096, 8, 2, 64, 1);
        t_sparse("ms", msp, 1, 4096, 8, 2, 128, 1);
        AttnConfig m2 = ms;
        m2.pool = POOL_NMEAN, m2.score = SCORE_COSINE, m2.order = ORDER_SCORE;
        t_sparse("ms nmean/cos/score", m2, 2, 4096, 8, 2, 128, 1);
        mo.block = 256, mo.top = 4;
        t_sparse("moba b256 top4", mo, 1, 4096, 8, 2, 128, 1);
        wi.window = 512;
        t_sparse("window 512", wi, 1, 4096, 8, 2, 64, 1);
        s2.group = 1024, s2.ratio = 0;
        t_sparse("s2 g1024", s2, 1, 4096, 8, 2, 128, 1);
    }
}

// ---- the model: one training step, and determinism over 50 steps ----

void batch_tokens(Rng *r, int *tok, int *tgt, int B, int T, int V) {
    // a learnable stream: mostly "next = prev + 1 mod V" with random restarts
    for (int b = 0; b < B; b++) {
        int cur = (int)rng_below(r, V);
        for (int t = 0; t <= T; t++) {
            int next = rng_uniform(r) < 0.1 ? (int)rng_below(r, V) : (cur + 1) % V;
            if (t < T) tok[b * T + t] = cur;
            if (t > 0) tgt[b * T + t - 1] = cur;
            cur = next;
        }
    }
}

static void t_model_step_attn(const char *name, ModelConfig cfg, int B, int T,
                              const AttnConfig *attn) {
    if (!wanted("model")) return;
    char shape[96];
    snprintf(shape, sizeof shape, "%s B=%d T=%d", name, B, T);
    Model mc, mg;
    MS_ASSERT(model_create(&mc, &cfg, cpu) == 0, "%s", ms_error());
    MS_ASSERT(model_create(&mg, &cfg, gpu) == 0, "%s", ms_error());
    if (attn) {
        AttnConfig *per = malloc(sizeof(AttnConfig) * cfg.layers);
        for (int l = 0; l < cfg.layers; l++) per[l] = *attn;
        MS_ASSERT(model_set_attention(&mc, per) == 0, "%s", ms_error());
        MS_ASSERT(model_set_attention(&mg, per) == 0, "%s", ms_error());
        free(per);
    }
    model_init_weights(&mc, 7);
    model_init_weights(&mg, 7);
    int N = B * T, *tok = malloc(sizeof(int) * N), *tgt = malloc(sizeof(int) * N);
    Rng r;
    rng_seed(&r, 11);
    batch_tokens(&r, tok, tgt, B, T, cfg.vocab);
    tgt[3] = -1; // an ignored target
    model_zero_grad(&mc);
    model_zero_grad(&mg);
    float lc = model_forward(&mc, tok, tgt, B, T), lg = model_forward(&mg, tok, tgt, B, T);
    char op[64];
    snprintf(op, sizeof op, "model.loss");
    report(op, shape, fabs((double)lg - lc) / fabs((double)lc), 1e-5, -1);
    size_t nl = (size_t)N * cfg.vocab;
    float *logc = hvec(nl), *logg = hvec(nl);
    model_get_logits(&mc, logc);
    model_get_logits(&mg, logg);
    check("model.logits", shape, logg, logc, NULL, nl, 1e-4);
    model_backward(&mc);
    model_backward(&mg);
    for (int i = 0; i < P_COUNT; i++) {
        size_t n = mc.grads.size[i];
        if (!n) continue;
        float *gc = hvec(n), *gg = hvec(n);
        cpu->download(gc, mc.grads.t[i], n * sizeof(float));
        gpu->download(gg, mg.grads.t[i], n * sizeof(float));
        snprintf(op, sizeof op, "model.grad.%s", model_param_names[i]);
        check(op, shape, gg, gc, NULL, n, 1e-4);
        free(gc), free(gg);
    }
    model_destroy(&mc);
    model_destroy(&mg);
    free(tok), free(tgt), free(logc), free(logg);
}

static void t_model_step(const char *name, ModelConfig cfg, int B, int T) {
    t_model_step_attn(name, cfg, B, T, NULL);
}

// `steps` AdamW steps on `be` (gpu_check.h)
double train(const Backend *be, ModelConfig cfg, int B, int T, int steps, float *losses,
                    float *params_out) {
    Model m;
    MS_ASSERT(model_create(&m, &cfg, be) == 0, "%s", ms_error());
    model_init_weights(&m, 3);
    OptimConfig oc = optim_config_default();
    oc.steps = steps;
    oc.warmup = 5;
    oc.lr = 2e-3f;
    Optimizer o;
    optim_create(&o, &oc, &m);
    int N = B * T, *tok = malloc(sizeof(int) * N), *tgt = malloc(sizeof(int) * N);
    Rng r;
    rng_seed(&r, 5);
    double t0 = 0;
    for (int s = 0; s < steps; s++) {
        if (s == 1) t0 = ms_now();
        batch_tokens(&r, tok, tgt, B, T, cfg.vocab);
        model_zero_grad(&m);
        losses[s] = model_forward(&m, tok, tgt, B, T);
        model_backward(&m);
        optim_step(&o, &m, s);
    }
    float probe;
    be->download(&probe, m.params.base, sizeof probe); // wait for the device
    double tps = steps > 1 ? (double)N * (steps - 1) / (ms_now() - t0) : 0;
    if (params_out) be->download(params_out, m.params.base, m.params.total * sizeof(float));
    optim_destroy(&o, &m);
    model_destroy(&m);
    free(tok), free(tgt);
    return tps;
}

static void t_determinism(ModelConfig cfg, int B, int T, int steps) {
    if (!wanted("determinism")) return;
    char shape[96];
    snprintf(shape, sizeof shape, "dim=%d L=%d H=%d/%d B=%d T=%d, %d steps", cfg.dim, cfg.layers,
             cfg.heads, cfg.kv_heads, B, T, steps);
    size_t np = model_num_params(&cfg);
    float *l1 = hvec(steps), *l2 = hvec(steps), *lc = hvec(steps);
    float *p1 = hvec(np), *p2 = hvec(np);
    double tps_gpu = train(gpu, cfg, B, T, steps, l1, p1);
    train(gpu, cfg, B, T, steps, l2, p2);
    int same_loss = same_bits(l1, l2, steps), same_params = same_bits(p1, p2, np);
    report("determinism.losses", shape, same_loss ? 0 : INFINITY, 0, -1);
    report("determinism.params", shape, same_params ? 0 : INFINITY, 0, -1);
    double tps_cpu = train(cpu, cfg, B, T, steps, lc, NULL);
    // information: the CUDA and CPU curves drift apart slowly (rounding differences compound)
    printf("  (losses step 1 / %d: cuda %.6f / %.6f, cpu %.6f / %.6f; tokens/s cuda %.0f, cpu %.0f)\n",
           steps, l1[0], l1[steps - 1], lc[0], lc[steps - 1], tps_gpu, tps_cpu);
    report("train.loss@1 cuda vs cpu", shape, fabs((double)l1[0] - lc[0]) / lc[0], 1e-5, -1);
    report("train.loss@50 cuda vs cpu", shape,
           fabs((double)l1[steps - 1] - lc[steps - 1]) / lc[steps - 1], 2e-2, -1);
    free(l1), free(l2), free(lc), free(p1), free(p2);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = 1;
        else filter = argv[i];
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    cpu = backend_cpu();
    gpu = backend_cuda();
    if (!gpu) {
        printf("mslab-gpu-tests: %s\n0 passed, 1 failed\n", ms_error());
        return 2;
    }
    printf("device: %s\n", backend_cuda_device_name());
    const char *missing = backend_cuda_missing();
    printf("ops.h entries without a CUDA kernel (NULL in the table): %s\n",
           missing[0] ? missing : "none");
    printf("max rel err = max_i |cuda_i - cpu_i| / max(|cpu_i|, rms(cpu)); every CUDA op also runs "
           "twice and must repeat its bits\n\n");
    printf("%-24s | %-40s | %11s | %7s | %s\n", "op", "shape", "max rel err", "tol", "ok");
    printf("-------------------------+------------------------------------------+-------------+---------+-----\n");
    rng_seed(&rng, 20240601);
    double t0 = ms_now();

    t_memory();
    size_t ns[] = {1, 1000, 1048576 + 3};
    for (int i = 0; i < 3; i++) t_add_scale_sumsq(ns[i]);
    for (int i = 0; i < 3; i++) t_swiglu(ns[i]);
    t_adamw(1000, 1, 0.1f);
    t_adamw(1048576 + 3, 10, 0.0f);
    t_embedding(1, 64, 50);
    t_embedding(37, 200, 300);
    t_embedding(4096, 128, 256);
    if (!quick) t_embedding(16384, 768, 32000);
    t_matmul(1, 64, 64);
    t_matmul(37, 200, 300);
    t_matmul(200, 128, 256);
    if (!quick) t_matmul(1000, 512, 1000), t_matmul(4096, 768, 2304);
    t_rmsnorm(1, 64);
    t_rmsnorm(37, 200);
    t_rmsnorm(1000, 128);
    t_rmsnorm(300, 768); // C = 32 x 24: the fused backward (norm.cu) at the LM's width
    if (!quick) t_rmsnorm(4096, 4096);
    t_rope(1, 8, 64, ROPE_INTERLEAVED, 10000, 1);
    t_rope(37, 8, 64, ROPE_HALVES, 10000, 37);
    t_rope(200, 2, 128, ROPE_INTERLEAVED, 500000, 1e5);
    if (!quick) t_rope(1000, 8, 128, ROPE_HALVES, 10000, 1e6);
    t_crossentropy(1, 256);
    t_crossentropy(37, 1000);
    t_crossentropy(5, 1001);  // V % 4 != 0: the strided kernels (the rest: rows in registers)
    t_crossentropy(3, 40000); // a row too long for the registers
    if (!quick) t_crossentropy(512, 32000);
    // attention: T = 1, 37, 200, 1000; grouped heads 8/2; head dims 64 and 128, and the
    // padded / small-tile paths (16, 32, 48, 256)
    t_attention(1, 1, 8, 2, 64, 1);
    t_attention(2, 37, 8, 2, 64, 1);
    t_attention(2, 37, 8, 2, 128, 2);
    t_attention(1, 200, 8, 2, 128, 1);
    t_attention(2, 200, 8, 2, 64, 2);
    t_attention(1, 130, 6, 3, 48, 1);
    t_attention(3, 64, 4, 1, 16, 1);
    t_attention(1, 65, 4, 4, 32, 1);
    t_attention(1, 37, 2, 1, 256, 1);
    if (!quick) {
        t_attention(1, 1000, 8, 2, 128, 1);
        t_attention(2, 1000, 8, 2, 64, 2);
        t_attention(1, 1000, 4, 4, 32, 1);
        t_attention(1, 200, 4, 2, 256, 1);
    }

    t_attention_decode(1, 0, 8, 2, 64);
    t_attention_decode(1, 999, 8, 2, 128);
    t_attention_decode(37, 100, 8, 2, 64);
    t_attention_decode(200, 0, 4, 4, 32);
    if (!quick) t_attention_decode(5, 4000, 8, 2, 128), t_attention_decode(300, 700, 6, 3, 48);

    ModelConfig a = model_config_default(); // the quickstart's shape: D = 32, tied, interleaved
    a.dim = 128, a.layers = 2, a.heads = 4, a.kv_heads = 2, a.ffn = 352, a.vocab = 256;
    t_model_step("tied interl D=32", a, 4, 64);
    ModelConfig b = model_config_default(); // untied, halves, D = 64, GQA 8/2, odd T
    b.dim = 512, b.layers = 2, b.heads = 8, b.kv_heads = 2, b.ffn = 1376, b.vocab = 512;
    b.tied = 0, b.rope_style = ROPE_HALVES;
    t_model_step("untied halves D=64", b, 3, 100);
    t_sparse_all();
    {   // one training step with ms attention (positions inside) and with moba
        AttnConfig msa = ms_cfg(8, 8, 2, 16, POOL_MEAN, SCORE_DOT, SELECT_REGION, ORDER_RANK,
                                POS_REINDEXED, TAIL_SELECT);
        t_model_step_attn("ms pos D=64", b, 2, 150, &msa);
        msa.positions = POS_TRUE;
        t_model_step_attn("ms D=32", a, 2, 200, &msa);
        AttnConfig mo = attn_config_default(ATTN_MOBA);
        mo.block = 16, mo.top = 3;
        t_model_step_attn("moba D=32", a, 2, 100, &mo);
    }
    if (!quick) t_determinism(a, 8, 128, 50);
    t_flash_bf16_all();
    t_flash_wgmma_all();
    t_sparse_bf16_all();
    t_sparse_wgmma_fwd_all();
    t_sparse_wgmma_bwd_all();
    t_select_bf16_all();
    t_backend_bf16_all();

    printf("\n%d passed, %d failed (%.1f s)\n", n_pass, n_fail, ms_now() - t0);
    return n_fail ? 1 : 0;
}
