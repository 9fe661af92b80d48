// backend_bf16_tests.c: the "cuda-bf16" table (cuda/backend_bf16.cu; docs/cuda.md "Precision")
// against the CPU fp32 reference. Every op name starts with "bf16." (filter "bf16").
//
// The bf16 table is fed the fp32 operands; the CPU reference gets the same operands rounded to
// bf16 on the host (bf16_round, bit-identical to the device rounding), so what is measured is the
// table's own error, not bf16's. Error measure, per tensor: relative L2, ||gpu - ref|| / ||ref||
// (the whole-tensor measure: a bf16 result carries ~2^-9 relative rounding per element, so a
// per-element max would measure the worst of millions of roundings). On failure a line names the
// worst element (index, both values). Tolerances:
//   1e-5  matmul fwd / bwd: bf16 x bf16 products are exact in fp32, so the only difference to the
//         CPU is the fp32 accumulation order (~sqrt(K) * 2^-24 relative); 1e-5 leaves room for the
//         tensor cores' accumulator, still ~100x below one bf16 rounding (3.9e-3 at worst)
//   1e-2  attention out / dq / dk / dv (dense and sparse): the kernels round P and their outputs /
//         gradients to bf16, ~2^-9 each
//   1e-3  attention lse: fp32 statistics over fp32-accumulated scores of bf16 q, k
//   1e-2  one training step of a small model: the loss (relative)
//   3e-2  ... and every gradient tensor (errors of many bf16 GEMMs compound through the layers)
//   0     two 50-step trainings on the bf16 table: bitwise-identical losses and parameters
//   2e-2  200 steps, bf16 vs fp32 CUDA: mean loss of the last 10 steps (training quality)
//   1e-5  grouped products (bf16.group: k matmul_bwd calls into one dinp as one K-stacked product)
//         vs the CPU's k products; 0: the same bits in every round and with shadows off
//   0     rounding readers (bf16.rnd: swiglu, rope_fwd, cross-entropy on GEMM outputs kept in bf16)
//         vs the fp32 table on the rounded GEMM outputs, bit for bit
//   0     the table's shadows (bf16 copies kept between ops) on vs off: the same bits after a few
//         training steps; 1e-5 deferred zeros on vs off (GEMMs with beta 0 may run other kernels);
//         1e-5 a GEMM after its weight / input was rewritten by each kind of write (no stale copy)
// Forward outputs are poisoned (NaN) before each call; backward gradients start from random values
// and the increments are compared (checks +=). Each op runs twice and must repeat its bits (det).
// Rows whose shape ends in "(fp32 fallback)" ran the fp32 kernels: the bf16 kernels returned -1.
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
#include "../../cuda/bf16.h"
#include "gpu_check.h"

static const Backend *bf; // the bf16 table

// ---- helpers (gpu_tests.c keeps its own static) ----

static float *hv(size_t n) {
    float *x = calloc(n ? n : 1, sizeof(float));
    MS_ASSERT(x, "out of memory");
    return x;
}
static float *hr(size_t n, float scale) {
    float *x = hv(n);
    for (size_t i = 0; i < n; i++) x[i] = scale * rng_normal(&rng);
    return x;
}
static float *hround(const float *a, size_t n) { // the bf16 operand the device will see
    float *x = hv(n);
    for (size_t i = 0; i < n; i++) x[i] = bf16_round(a[i]);
    return x;
}
static float *hdup(const float *a, size_t n) {
    float *x = hv(n);
    memcpy(x, a, n * sizeof(float));
    return x;
}
static float *dev(const float *h, size_t n) {
    float *d = bf->alloc(n * sizeof(float));
    bf->upload(d, h, n * sizeof(float));
    return d;
}
static void set_dev(float *d, const float *h, size_t n) { bf->upload(d, h, n * sizeof(float)); }
static void poison_dev(float *d, size_t n) {
    float *h = hv(n);
    for (size_t i = 0; i < n; i++) h[i] = NAN;
    bf->upload(d, h, n * sizeof(float));
    free(h);
}
static float *get(const float *d, size_t n) {
    float *h = hv(n);
    bf->download(h, d, n * sizeof(float));
    return h;
}
static int same(const float *a, const float *b, size_t n) {
    return a && b && memcmp(a, b, n * sizeof(float)) == 0;
}

// Relative L2 of a vs ref; with base (gradient start values), of the increments a - base vs
// ref - base, the denominator at least 1e-4 ||base|| (an increment that is ~0 in exact arithmetic,
// e.g. dk at T = 1, is left with the fp32 rounding of `base += ~0`, ~1e-7 ||base||, on both
// sides). Prints the worst element when the check fails.
static double cmp(const char *op, const char *shape, const float *a, const float *ref,
                  const float *base, const float *again, size_t n, double tol) {
    double se = 0, sr = 0, sb = 0, worst = -1;
    size_t wi = 0;
    int nan = 0;
    for (size_t i = 0; i < n; i++) {
        double b = base ? base[i] : 0, x = (double)a[i] - b, r = (double)ref[i] - b;
        if (!(x == x)) nan = 1;
        double d = fabs(x - r);
        se += d * d, sr += r * r, sb += b * b;
        if (!(d <= worst)) worst = d, wi = i;
    }
    double den = fmax(sqrt(sr), 1e-4 * sqrt(sb));
    double err = nan ? NAN : den > 0 ? sqrt(se) / den : (se == 0 ? 0 : INFINITY);
    int det = again ? same(a, again, n) : -1;
    report(op, shape, err, tol, det);
    if (!(err <= tol) || det == 0) {
        double b = base ? base[wi] : 0;
        printf("    worst element %zu of %zu: got %.9g, want %.9g%s (rms of want %.3g)%s\n", wi, n,
               a[wi] - b, ref[wi] - b, base ? " (increments)" : "", n ? sqrt(sr / n) : 0,
               nan ? "; NaN present" : "");
        if (det == 0)
            for (size_t i = 0; i < n; i++)
                if (memcmp(&a[i], &again[i], sizeof(float))) {
                    printf("    first differing element between the two runs: %zu (%.9g vs %.9g)\n",
                           i, a[i], again[i]);
                    break;
                }
    }
    return err;
}

// ---- matmul ----

static void t_mm(int N, int IC, int OC) {
    if (!wanted("bf16.matmul")) return;
    char shape[64];
    snprintf(shape, sizeof shape, "N=%d IC=%d OC=%d", N, IC, OC);
    size_t ni = (size_t)N * IC, nw = (size_t)OC * IC, no = (size_t)N * OC;
    float *x = hr(ni, 1), *w = hr(nw, 0.05f), *dy = hr(no, 1);
    float *dx0 = hr(ni, 1), *dw0 = hr(nw, 1);
    float *xr = hround(x, ni), *wr = hround(w, nw), *dyr = hround(dy, no);
    float *ref = hv(no), *dxr = hdup(dx0, ni), *dwr = hdup(dw0, nw);
    cpu->matmul_fwd(ref, xr, wr, N, IC, OC);
    cpu->matmul_bwd(dxr, dwr, dyr, xr, wr, N, IC, OC);
    float *d_x = dev(x, ni), *d_w = dev(w, nw), *d_dy = dev(dy, no), *d_o = bf->alloc(no * 4);
    float *o[2];
    for (int r = 0; r < 2; r++) {
        poison_dev(d_o, no);
        bf->matmul_fwd(d_o, d_x, d_w, N, IC, OC);
        o[r] = get(d_o, no);
    }
    cmp("bf16.matmul_fwd", shape, o[0], ref, NULL, o[1], no, 1e-5);
    { // information: how far the unrounded fp32 product is (shows the operands were rounded), and
      // whether COMPUTE_32F_FAST_16BF rounds its operands the same way (then its error is ~1e-6)
        float *ref32 = hv(no);
        cpu->matmul_fwd(ref32, x, w, N, IC, OC);
        backend_cuda_bf16_fast_gemm(1);
        poison_dev(d_o, no);
        bf->matmul_fwd(d_o, d_x, d_w, N, IC, OC);
        backend_cuda_bf16_fast_gemm(0);
        float *of = get(d_o, no);
        double e1 = 0, e2 = 0, s1 = 0, s2 = 0;
        for (size_t i = 0; i < no; i++) {
            e1 += ((double)o[0][i] - ref32[i]) * ((double)o[0][i] - ref32[i]);
            s1 += (double)ref32[i] * ref32[i];
            e2 += ((double)of[i] - ref[i]) * ((double)of[i] - ref[i]);
            s2 += (double)ref[i] * ref[i];
        }
        printf("    (info %s: bf16 GEMM vs unrounded fp32 product: rel L2 %.3e; "
               "COMPUTE_32F_FAST_16BF vs rounded-operand reference: rel L2 %.3e)\n", shape,
               sqrt(e1 / s1), sqrt(e2 / s2));
        free(ref32), free(of);
    }
    float *d_dx = dev(dx0, ni), *d_dw = dev(dw0, nw);
    float *gx[2], *gw[2];
    for (int r = 0; r < 2; r++) {
        set_dev(d_dx, dx0, ni), set_dev(d_dw, dw0, nw);
        if (r == 0) bf->matmul_bwd(d_dx, d_dw, d_dy, d_x, d_w, N, IC, OC);
        else { // one gradient at a time, too
            bf->matmul_bwd(d_dx, NULL, d_dy, d_x, d_w, N, IC, OC);
            bf->matmul_bwd(NULL, d_dw, d_dy, d_x, d_w, N, IC, OC);
        }
        gx[r] = get(d_dx, ni), gw[r] = get(d_dw, nw);
    }
    cmp("bf16.matmul_bwd.dinp", shape, gx[0], dxr, dx0, gx[1], ni, 1e-5);
    cmp("bf16.matmul_bwd.dw", shape, gw[0], dwr, dw0, gw[1], nw, 1e-5);
    bf->free(d_x), bf->free(d_w), bf->free(d_dy), bf->free(d_o), bf->free(d_dx), bf->free(d_dw);
    free(x), free(w), free(dy), free(dx0), free(dw0), free(xr), free(wr), free(dyr), free(ref),
        free(dxr), free(dwr);
    for (int r = 0; r < 2; r++) free(o[r]), free(gx[r]), free(gw[r]);
}

// ---- attention adapters (dense, and sparse over a CPU-built list) ----

// One forward + backward of the table's dense (ix == NULL) or sparse attention vs the CPU on the
// rounded operands. ig: the list in device memory, ic: the same on the host.
static void t_attn_common(const char *kind, const char *shape0, const AttnIndex *ic,
                          const AttnIndex *ig, int B, int T, int H, int KVH, int D, float qscale) {
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D, nl = (size_t)B * H * T;
    float *q = hr(nq, qscale), *k = hr(nk, 1), *v = hr(nk, 1), *dy = hr(nq, 1);
    float *qr = hround(q, nq), *kr = hround(k, nk), *vr = hround(v, nk), *dyr = hround(dy, nq);
    // references: on the rounded operands (the bf16 kernels), and on the fp32 operands (what the
    // adapter runs when the bf16 kernel declines the shape: judged against fp32 arithmetic then)
    float *out = hv(nq), *lse = hv(nl), *out32 = hv(nq), *lse32 = hv(nl);
    if (ic) cpu->sparse_attention_fwd(out, lse, qr, kr, vr, ic, B, T, H, KVH, D);
    else cpu->attention_fwd(out, lse, qr, kr, vr, B, T, H, KVH, D);
    if (ic) cpu->sparse_attention_fwd(out32, lse32, q, k, v, ic, B, T, H, KVH, D);
    else cpu->attention_fwd(out32, lse32, q, k, v, B, T, H, KVH, D);
    int fb0 = backend_cuda_bf16_fallbacks();
    float *d_q = dev(q, nq), *d_k = dev(k, nk), *d_v = dev(v, nk);
    float *d_o = bf->alloc(nq * 4), *d_l = bf->alloc(nl * 4);
    float *o[2], *l[2];
    for (int r = 0; r < 2; r++) {
        poison_dev(d_o, nq), poison_dev(d_l, nl);
        if (ig) bf->sparse_attention_fwd(d_o, d_l, d_q, d_k, d_v, ig, B, T, H, KVH, D);
        else bf->attention_fwd(d_o, d_l, d_q, d_k, d_v, B, T, H, KVH, D);
        o[r] = get(d_o, nq), l[r] = get(d_l, nl);
    }
    char shape[160], op[64];
    int fb = backend_cuda_bf16_fallbacks() != fb0;
    snprintf(shape, sizeof shape, "%s%s", shape0, fb ? " (fp32 fallback)" : "");
    snprintf(op, sizeof op, "bf16.%s_fwd.out", kind);
    cmp(op, shape, o[0], fb ? out32 : out, NULL, o[1], nq, 1e-2);
    snprintf(op, sizeof op, "bf16.%s_fwd.lse", kind);
    cmp(op, shape, l[0], fb ? lse32 : lse, NULL, l[1], nl, 1e-3);

    // backward on both sides from the same out (the reference's, rounded as the bf16 forward
    // would store it) and lse; gradients start from random values
    float *outr = hround(out, nq);
    float *dq0 = hr(nq, 1), *dk0 = hr(nk, 1), *dv0 = hr(nk, 1);
    float *dqr = hdup(dq0, nq), *dkr = hdup(dk0, nk), *dvr = hdup(dv0, nk);
    float *dq32 = hdup(dq0, nq), *dk32 = hdup(dk0, nk), *dv32 = hdup(dv0, nk);
    if (ic) cpu->sparse_attention_bwd(dqr, dkr, dvr, dyr, outr, lse, qr, kr, vr, ic, B, T, H, KVH, D);
    else cpu->attention_bwd(dqr, dkr, dvr, dyr, outr, lse, qr, kr, vr, B, T, H, KVH, D);
    if (ic) cpu->sparse_attention_bwd(dq32, dk32, dv32, dy, outr, lse, q, k, v, ic, B, T, H, KVH, D);
    else cpu->attention_bwd(dq32, dk32, dv32, dy, outr, lse, q, k, v, B, T, H, KVH, D);
    set_dev(d_o, outr, nq), set_dev(d_l, lse, nl);
    float *d_dy = dev(dy, nq), *d_dq = dev(dq0, nq), *d_dk = dev(dk0, nk), *d_dv = dev(dv0, nk);
    float *g[2][3];
    fb0 = backend_cuda_bf16_fallbacks();
    for (int r = 0; r < 2; r++) {
        set_dev(d_dq, dq0, nq), set_dev(d_dk, dk0, nk), set_dev(d_dv, dv0, nk);
        if (ig) bf->sparse_attention_bwd(d_dq, d_dk, d_dv, d_dy, d_o, d_l, d_q, d_k, d_v, ig, B, T,
                                         H, KVH, D);
        else bf->attention_bwd(d_dq, d_dk, d_dv, d_dy, d_o, d_l, d_q, d_k, d_v, B, T, H, KVH, D);
        g[r][0] = get(d_dq, nq), g[r][1] = get(d_dk, nk), g[r][2] = get(d_dv, nk);
    }
    fb = backend_cuda_bf16_fallbacks() != fb0;
    snprintf(shape, sizeof shape, "%s%s", shape0, fb ? " (fp32 fallback)" : "");
    const char *gn[3] = {"dq", "dk", "dv"};
    const float *refs[3] = {dqr, dkr, dvr}, *bases[3] = {dq0, dk0, dv0};
    if (fb) refs[0] = dq32, refs[1] = dk32, refs[2] = dv32;
    size_t ns[3] = {nq, nk, nk};
    for (int i = 0; i < 3; i++) {
        snprintf(op, sizeof op, "bf16.%s_bwd.%s", kind, gn[i]);
        cmp(op, shape, g[0][i], refs[i], bases[i], g[1][i], ns[i], 1e-2);
    }
    bf->free(d_q), bf->free(d_k), bf->free(d_v), bf->free(d_o), bf->free(d_l), bf->free(d_dy),
        bf->free(d_dq), bf->free(d_dk), bf->free(d_dv);
    free(q), free(k), free(v), free(dy), free(qr), free(kr), free(vr), free(dyr), free(out),
        free(lse), free(out32), free(lse32), free(dq32), free(dk32), free(dv32), free(outr), free(dq0), free(dk0), free(dv0), free(dqr), free(dkr), free(dvr);
    for (int r = 0; r < 2; r++) {
        free(o[r]), free(l[r]);
        for (int i = 0; i < 3; i++) free(g[r][i]);
    }
}

static void t_attn(int B, int T, int H, int KVH, int D) {
    if (!wanted("bf16.attention")) return;
    char shape[96];
    snprintf(shape, sizeof shape, "B=%d T=%d H=%d/%d D=%d", B, T, H, KVH, D);
    t_attn_common("attention", shape, NULL, NULL, B, T, H, KVH, D, 1);
}

// The list's dims for cfg at length T and the rows' shape label.
static AttnDims list_dims(const char *name, AttnConfig *cfg, int T, int H, int KVH, int D,
                          char *shape, size_t cap) {
    AttnDims d;
    MS_ASSERT(attn_config_check(cfg, "attention") == 0, "%s", ms_error());
    MS_ASSERT(attn_dims(cfg, T, &d) == 0, "%s", ms_error());
    snprintf(shape, cap, "%s T=%d H=%d/%d D=%d%s", name, T, H, KVH, D, d.reindex ? " pos" : "");
    return d;
}

static void t_sparse(const char *name, AttnConfig cfg, int B, int T, int H, int KVH, int D) {
    if (!wanted("bf16.sparse")) return;
    char shape[128];
    AttnDims d = list_dims(name, &cfg, T, H, KVH, D, shape, sizeof shape);
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D;
    size_t ni = (size_t)B * H * d.nblk * d.width, nb = (size_t)B * H * d.nblk;
    // the list from the CPU's selection on separate random q / k (the list is an input here)
    float *sq = hr(nq, 1), *sk = hr(nk, 1), *invf = hv(D / 2);
    for (int i = 0; i < D / 2; i++) invf[i] = (float)pow(10000.0, -2.0 * i / D);
    AttnIndex ic = {d.qblock, d.nblk, d.region, d.width, d.window, NULL, NULL, NULL, invf, ROPE_HALVES};
    ic.idx = malloc(sizeof(int) * ni);
    if (d.reindex) ic.kpos = malloc(sizeof(int) * ni), ic.qpos = malloc(sizeof(int) * nb);
    cpu->attention_select(&ic, &cfg, sq, sk, B, T, H, KVH, D);
    AttnIndex ig = ic;
    float *d_inv = dev(invf, D / 2);
    ig.inv_freq = d_inv;
    ig.idx = bf->alloc(sizeof(int) * ni);
    bf->upload(ig.idx, ic.idx, sizeof(int) * ni);
    if (d.reindex) {
        ig.kpos = bf->alloc(sizeof(int) * ni), ig.qpos = bf->alloc(sizeof(int) * nb);
        bf->upload(ig.kpos, ic.kpos, sizeof(int) * ni);
        bf->upload(ig.qpos, ic.qpos, sizeof(int) * nb);
    }
    t_attn_common("sparse", shape, &ic, &ig, B, T, H, KVH, D, 1);
    bf->free(d_inv), bf->free(ig.idx);
    if (d.reindex) bf->free(ig.kpos), bf->free(ig.qpos);
    free(ic.idx), free(ic.kpos), free(ic.qpos), free(sq), free(sk), free(invf);
}

// The table's attention_select on fp32 q / k vs the CPU's on the bf16-rounded q / k: the lists
// (idx, kpos, qpos) must be EQUAL (err = number of differing entries, tolerance 0).
static void t_select(const char *name, AttnConfig cfg, int B, int T, int H, int KVH, int D) {
    if (!wanted("bf16.attention_select")) return;
    char shape[128];
    AttnDims d = list_dims(name, &cfg, T, H, KVH, D, shape, sizeof shape);
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D;
    size_t ni = (size_t)B * H * d.nblk * d.width, nb = (size_t)B * H * d.nblk;
    float *q = hr(nq, 1), *k = hr(nk, 1), *qr = hround(q, nq), *kr = hround(k, nk);
    float *invf = hv(D / 2);
    for (int i = 0; i < D / 2; i++) invf[i] = (float)pow(10000.0, -2.0 * i / D);
    AttnIndex ic = {d.qblock, d.nblk, d.region, d.width, d.window, NULL, NULL, NULL, invf, ROPE_HALVES};
    ic.idx = malloc(sizeof(int) * ni);
    if (d.reindex) ic.kpos = malloc(sizeof(int) * ni), ic.qpos = malloc(sizeof(int) * nb);
    cpu->attention_select(&ic, &cfg, qr, kr, B, T, H, KVH, D);
    float *d_q = dev(q, nq), *d_k = dev(k, nk), *d_inv = dev(invf, D / 2);
    AttnIndex ig = ic;
    ig.inv_freq = d_inv;
    ig.idx = bf->alloc(sizeof(int) * ni);
    if (d.reindex) ig.kpos = bf->alloc(sizeof(int) * ni), ig.qpos = bf->alloc(sizeof(int) * nb);
    int *got[2][3] = {{0}};
    int fb0 = backend_cuda_bf16_fallbacks();
    for (int r = 0; r < 2; r++) {
        int *junk = malloc(sizeof(int) * ni); // poison: every entry must be written
        for (size_t i = 0; i < ni; i++) junk[i] = 0x7eadbeef;
        bf->upload(ig.idx, junk, sizeof(int) * ni);
        if (d.reindex) bf->upload(ig.kpos, junk, sizeof(int) * ni), bf->upload(ig.qpos, junk, sizeof(int) * nb);
        free(junk);
        bf->attention_select(&ig, &cfg, d_q, d_k, B, T, H, KVH, D);
        got[r][0] = malloc(sizeof(int) * ni);
        bf->download(got[r][0], ig.idx, sizeof(int) * ni);
        if (d.reindex) {
            got[r][1] = malloc(sizeof(int) * ni), got[r][2] = malloc(sizeof(int) * nb);
            bf->download(got[r][1], ig.kpos, sizeof(int) * ni);
            bf->download(got[r][2], ig.qpos, sizeof(int) * nb);
        }
    }
    size_t bad = 0, first = (size_t)-1;
    int again = 1;
    const int *want[3] = {ic.idx, ic.kpos, ic.qpos};
    size_t cnt[3] = {ni, d.reindex ? ni : 0, d.reindex ? nb : 0};
    for (int a = 0; a < 3; a++)
        for (size_t i = 0; i < cnt[a]; i++) {
            if (got[0][a][i] != want[a][i] && bad++ == 0) first = a * 1000000000ull + i;
            again &= got[0][a][i] == got[1][a][i];
        }
    if (backend_cuda_bf16_fallbacks() != fb0)
        snprintf(shape + strlen(shape), sizeof shape - strlen(shape), " (fp32 fallback)");
    report("bf16.attention_select.lists", shape, (double)bad, 0, again);
    if (bad) {
        int a = (int)(first / 1000000000ull);
        size_t i = first % 1000000000ull;
        printf("    %zu differing entries; first: %s[%zu] got %d, want %d\n", bad,
               a == 0 ? "idx" : a == 1 ? "kpos" : "qpos", i, got[0][a][i], want[a][i]);
    }
    for (int r = 0; r < 2; r++)
        for (int a = 0; a < 3; a++) free(got[r][a]);
    bf->free(d_q), bf->free(d_k), bf->free(d_inv), bf->free(ig.idx);
    if (d.reindex) bf->free(ig.kpos), bf->free(ig.qpos);
    free(q), free(k), free(qr), free(kr), free(invf), free(ic.idx), free(ic.kpos), free(ic.qpos);
}

static AttnConfig ms_small(int positions) {
    AttnConfig c = attn_config_default(ATTN_MS);
    c.w = 8, c.top = 8, c.merge = 2, c.prefix = 16, c.pool = POOL_MEAN, c.score = SCORE_DOT;
    c.select = SELECT_REGION, c.order = ORDER_RANK, c.positions = positions, c.tail = TAIL_SELECT;
    return c;
}

// ---- the model: one step vs the CPU, determinism, training quality vs fp32 CUDA ----

static void t_model_step(const char *name, ModelConfig cfg, int B, int T, const AttnConfig *attn) {
    if (!wanted("bf16.model")) return;
    char shape[128];
    Model mc, mg;
    MS_ASSERT(model_create(&mc, &cfg, cpu) == 0, "%s", ms_error());
    MS_ASSERT(model_create(&mg, &cfg, bf) == 0, "%s", ms_error());
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
    tgt[3] = -1;
    model_zero_grad(&mc);
    model_zero_grad(&mg);
    int fb0 = backend_cuda_bf16_fallbacks();
    float lc = model_forward(&mc, tok, tgt, B, T), lg = model_forward(&mg, tok, tgt, B, T);
    size_t ndiff = 0, nlist = 0;
    if (attn) { // a data-dependent selection (ms) may pick other regions from the bf16 q / k: a
                // discrete change, not an error. Judge the numerics on the CPU's lists, held fixed.
        for (int l = 0; l < cfg.layers; l++) {
            AttnLayer *ac = &mc.attn[l], *ag = &mg.attn[l];
            if (!ac->mode) continue;
            size_t n = (size_t)B * cfg.heads * ac->dims.nblk * ac->dims.width;
            size_t ni = ac->ix.kpos ? 2 * n : n, nq = (size_t)B * cfg.heads * ac->dims.nblk;
            int *h = malloc(sizeof(int) * ni);
            bf->download(h, ag->ix.idx, sizeof(int) * ni);
            for (size_t i = 0; i < ni; i++) ndiff += h[i] != ac->ix.idx[i];
            nlist += ni;
            bf->upload(ag->ix.idx, ac->ix.idx, sizeof(int) * ni);
            if (ac->ix.qpos) bf->upload(ag->ix.qpos, ac->ix.qpos, sizeof(int) * nq);
            ag->frozen = 1;
            free(h);
        }
        model_zero_grad(&mg);
        lg = model_forward(&mg, tok, tgt, B, T);
    }
    model_backward(&mc);
    model_backward(&mg);
    snprintf(shape, sizeof shape, "%s B=%d T=%d%s", name, B, T,
             backend_cuda_bf16_fallbacks() != fb0 ? " (fp32 fallback attn)" : "");
    if (attn)
        printf("    (selection on the bf16 model's own q / k: %zu of %zu list entries differ from "
               "the CPU's; below, both run on the CPU's lists)\n", ndiff, nlist);
    report("bf16.model.loss", shape, fabs((double)lg - lc) / fabs((double)lc), 1e-2, -1);
    printf("    (loss cpu fp32 %.6f, cuda-bf16 %.6f)\n", lc, lg);
    for (int i = 0; i < P_COUNT; i++) {
        size_t n = mc.grads.size[i];
        if (!n) continue;
        float *gc = hv(n), *gg = hv(n);
        cpu->download(gc, mc.grads.t[i], n * sizeof(float));
        bf->download(gg, mg.grads.t[i], n * sizeof(float));
        char op[64];
        snprintf(op, sizeof op, "bf16.model.grad.%s", model_param_names[i]);
        cmp(op, shape, gg, gc, NULL, NULL, n, 3e-2);
        free(gc), free(gg);
    }
    model_destroy(&mc);
    model_destroy(&mg);
    free(tok), free(tgt);
}

static void t_determinism(ModelConfig cfg, int B, int T, int steps) {
    if (!wanted("bf16.determinism")) return;
    char shape[96];
    snprintf(shape, sizeof shape, "dim=%d L=%d B=%d T=%d, %d steps", cfg.dim, cfg.layers, B, T,
             steps);
    size_t np = model_num_params(&cfg);
    float *l1 = hv(steps), *l2 = hv(steps), *p1 = hv(np), *p2 = hv(np);
    train(bf, cfg, B, T, steps, l1, p1);
    train(bf, cfg, B, T, steps, l2, p2);
    report("bf16.determinism.losses", shape, same(l1, l2, steps) ? 0 : INFINITY, 0, -1);
    report("bf16.determinism.params", shape, same(p1, p2, np) ? 0 : INFINITY, 0, -1);
    if (!same(l1, l2, steps))
        for (int s = 0; s < steps; s++)
            if (memcmp(&l1[s], &l2[s], sizeof(float))) {
                printf("    first differing loss: step %d (%.9g vs %.9g)\n", s + 1, l1[s], l2[s]);
                break;
            }
    free(l1), free(l2), free(p1), free(p2);
}

static void t_quality(ModelConfig cfg, int B, int T, int steps) {
    if (!wanted("bf16.train")) return;
    char shape[96];
    snprintf(shape, sizeof shape, "dim=%d L=%d B=%d T=%d, %d steps", cfg.dim, cfg.layers, B, T,
             steps);
    float *lb = hv(steps), *lf = hv(steps);
    double tb = train(bf, cfg, B, T, steps, lb, NULL), tf = train(gpu, cfg, B, T, steps, lf, NULL);
    int k = steps < 10 ? steps : 10;
    double mb = 0, mf = 0;
    for (int s = steps - k; s < steps; s++) mb += lb[s] / k, mf += lf[s] / k;
    printf("    (losses step 1 / %d: bf16 %.5f / %.5f, fp32 %.5f / %.5f; mean of the last %d: bf16 "
           "%.5f, fp32 %.5f; tokens/s bf16 %.0f, fp32 %.0f)\n", steps, lb[0], lb[steps - 1], lf[0],
           lf[steps - 1], k, mb, mf, tb, tf);
    report("bf16.train.final_loss vs fp32", shape, fabs(mb - mf) / mf, 2e-2, -1);
    report("bf16.train.loss_ratio last/first", shape, mb / lb[0], 0.5, -1); // it must learn
    free(lb), free(lf);
}

// ---- the table's memory state (backend_bf16.cu "Conversions"): shadows and deferred zeros ----

// `steps` AdamW steps on the bf16 table (attn NULL: dense), losses and final parameters out.
static void train_bf(ModelConfig cfg, const AttnConfig *attn, int B, int T, int steps,
                     float *losses, float *params) {
    Model m;
    MS_ASSERT(model_create(&m, &cfg, bf) == 0, "%s", ms_error());
    if (attn) {
        AttnConfig *per = malloc(sizeof(AttnConfig) * cfg.layers);
        for (int l = 0; l < cfg.layers; l++) per[l] = *attn;
        MS_ASSERT(model_set_attention(&m, per) == 0, "%s", ms_error());
        free(per);
    }
    model_init_weights(&m, 3);
    OptimConfig oc = optim_config_default();
    oc.lr = 2e-3f, oc.steps = steps, oc.warmup = 1;
    Optimizer o;
    optim_create(&o, &oc, &m);
    int N = B * T, *tok = malloc(sizeof(int) * N), *tgt = malloc(sizeof(int) * N);
    Rng r;
    rng_seed(&r, 5);
    for (int s = 0; s < steps; s++) {
        batch_tokens(&r, tok, tgt, B, T, cfg.vocab);
        tgt[1] = -1; // an ignored row: its dlogits row must come out zero under a deferred zero
        model_zero_grad(&m);
        losses[s] = model_forward(&m, tok, tgt, B, T);
        model_backward(&m);
        optim_step(&o, &m, s);
    }
    bf->download(params, m.params.base, m.params.total * sizeof(float));
    optim_destroy(&o, &m);
    model_destroy(&m);
    free(tok), free(tgt);
}

// Shadows and fused bf16 outputs change no value: cache on vs off gives the same bits (losses,
// parameters after `steps` steps: a stale shadow shows from step 2 on). Deferred zeros make GEMMs
// run with beta 0 and backward ops overwrite: the same sums, so ~0 (cuBLAS may pick another
// kernel for beta 0: tolerance 1e-5 relative on the parameters).
static void t_state_train(const char *name, ModelConfig cfg, const AttnConfig *attn, int B, int T,
                          int steps) {
    if (!wanted("bf16.state")) return;
    char shape[128];
    snprintf(shape, sizeof shape, "%s B=%d T=%d, %d steps", name, B, T, steps);
    size_t np = model_num_params(&cfg);
    float *l[5], *p[5];
    // (cache, lazy, acts); 3, 4: activations in bf16 (backend_bf16.cu "Activations") with and
    // without shadows
    int modes[5][3] = {{0, 0, 0}, {1, 0, 0}, {1, 1, 0}, {1, 1, 1}, {0, 1, 1}};
    size_t held = 0;
    int acts0 = backend_cuda_bf16_set_acts(0);
    for (int i = 0; i < 5; i++) {
        l[i] = hv(steps), p[i] = hv(np);
        backend_cuda_bf16_set_state(modes[i][0], modes[i][1]);
        backend_cuda_bf16_set_acts(modes[i][2]);
        train_bf(cfg, attn, B, T, steps, l[i], p[i]);
        if (i == 2) held = backend_cuda_bf16_shadow_bytes();
    }
    backend_cuda_bf16_set_state(1, 1);
    backend_cuda_bf16_set_acts(acts0);
    report("bf16.state.cache.losses", shape, same(l[0], l[1], steps) ? 0 : INFINITY, 0, -1);
    report("bf16.state.cache.params", shape, same(p[0], p[1], np) ? 0 : INFINITY, 0, -1);
    double e = 0;
    for (int s = 0; s < steps; s++) e = fmax(e, fabs((double)l[2][s] - l[0][s]) / fabs(l[0][s]));
    report("bf16.state.lazy.losses", shape, e, 1e-5, -1);
    cmp("bf16.state.lazy.params", shape, p[2], p[0], NULL, NULL, np, 1e-5);
    // acts rounds at the producer what only a GEMM / the attention reads (which round it anyway)
    // and keeps exact bf16 results in bf16: the same values (a zero's sign aside)
    e = 0;
    for (int s = 0; s < steps; s++) e = fmax(e, fabs((double)l[3][s] - l[2][s]) / fabs(l[2][s]));
    report("bf16.state.acts.losses", shape, e, 0, -1);
    cmp("bf16.state.acts.params", shape, p[3], p[2], NULL, NULL, np, 0);
    report("bf16.state.acts.cache.losses", shape, same(l[3], l[4], steps) ? 0 : INFINITY, 0, -1);
    report("bf16.state.acts.cache.params", shape, same(p[3], p[4], np) ? 0 : INFINITY, 0, -1);
    printf("    (shadows held after the model was freed: %zu bytes; lazy zeros bitwise-equal: %s; "
           "acts bitwise-equal: %s)\n", held, same(p[0], p[2], np) ? "yes" : "no",
           same(p[2], p[3], np) ? "yes" : "no");
    for (int i = 0; i < 5; i++) free(l[i]), free(p[i]);
}

// acts (backend_bf16.cu "Activations"): an op whose output array a GEMM read before keeps that
// output in bf16 only. Read back through the table (download, a GEMM, an fp32 op) it must be the
// fp32 table's result rounded to bf16, bit for bit (err = number of differing elements); a write
// over half of it keeps the other half. Each op's output is primed by a GEMM reading it first.
static float *d_pw, *d_pt; // the priming GEMM's weight [C, C] and output [N, C]
static void prime(float *d, int N, int C) { bf->matmul_fwd(d_pt, d, d_pw, N, C, C); }
static void acts_check_r(const char *op, const char *shape, const float *d_got,
                         const float *d_want32, size_t n, int rnd) { // rnd 0: want exactly the fp32
    float *got = get(d_got, n), *want = hv(n);
    gpu->download(want, d_want32, n * sizeof(float));
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++) {
        float w = rnd ? bf16_round(want[i]) : want[i];
        if (memcmp(&got[i], &w, sizeof w) && bad++ == 0) first = i;
    }
    report(op, shape, (double)bad, 0, -1);
    if (bad)
        printf("    %zu differing; first %zu: got %.9g, want %.9g (fp32 %.9g)\n", bad, first,
               got[first], bf16_round(want[first]), want[first]);
    free(got), free(want);
}
static void acts_check(const char *op, const char *shape, const float *d_got, const float *d_want32,
                       size_t n) {
    acts_check_r(op, shape, d_got, d_want32, n, 1);
}

static void t_acts_ops(void) {
    if (!wanted("bf16.acts")) return;
    int acts0 = backend_cuda_bf16_set_acts(1), rnd0 = backend_cuda_bf16_set_rnd(1);
    const int N = 64, H = 3, D = 32, C = H * D; // C = 96 = V of the cross-entropy
    const char *shape = "N=64 C=96 (H=3 D=32, V=96)";
    size_t n = (size_t)N * C;
    float *a = hr(n, 1), *b = hr(n, 1), *g = hr(n, 1), *w = hr(C, 1), *pw = hr((size_t)C * C, 0.05f);
    float *pos = hv(N), *inv = hv(D / 2);
    for (int i = 0; i < N; i++) pos[i] = (float)(3 * i + 1);
    for (int i = 0; i < D / 2; i++) inv[i] = (float)pow(10000.0, -2.0 * i / D);
    int *tgt = malloc(sizeof(int) * N);
    for (int i = 0; i < N; i++) tgt[i] = i == 5 ? -1 : (int)rng_below(&rng, C);
    d_pw = dev(pw, (size_t)C * C), d_pt = bf->alloc(n * 4);
    float *d_a = dev(a, n), *d_b = dev(b, n), *d_g = dev(g, n), *d_w = dev(w, C);
    float *d_pos = dev(pos, N), *d_inv = dev(inv, D / 2), *d_rs = bf->alloc(N * 4);
    int *d_tgt = bf->alloc(sizeof(int) * N);
    bf->upload(d_tgt, tgt, sizeof(int) * N);
    float *d_o = bf->alloc(n * 4), *d_o2 = bf->alloc(n * 4);
    // the fp32 table on its own buffers (the same inputs)
    float *f_a = gpu->alloc(n * 4), *f_b = gpu->alloc(n * 4), *f_g = gpu->alloc(n * 4);
    float *f_w = gpu->alloc(C * 4), *f_pos = gpu->alloc(N * 4), *f_inv = gpu->alloc(D / 2 * 4);
    float *f_o = gpu->alloc(n * 4), *f_o2 = gpu->alloc(n * 4), *f_rs = gpu->alloc(N * 4);
    int *f_tgt = gpu->alloc(sizeof(int) * N);
    gpu->upload(f_a, a, n * 4), gpu->upload(f_b, b, n * 4), gpu->upload(f_g, g, n * 4);
    gpu->upload(f_w, w, C * 4), gpu->upload(f_pos, pos, N * 4), gpu->upload(f_inv, inv, D / 2 * 4);
    gpu->upload(f_tgt, tgt, sizeof(int) * N);
    // swiglu, rope_fwd and the cross-entropy read their inputs rounded to bf16 (rnd): so does the
    // fp32 table here
    float *ar = hround(a, n), *br = hround(b, n), *gr = hround(g, n);
    float *f_ar = gpu->alloc(n * 4), *f_br = gpu->alloc(n * 4), *f_gr = gpu->alloc(n * 4);
    gpu->upload(f_ar, ar, n * 4), gpu->upload(f_br, br, n * 4), gpu->upload(f_gr, gr, n * 4);

    prime(d_o, N, C);
    bf->rmsnorm_fwd(d_o, d_rs, d_a, d_w, N, C, 1e-5f);
    gpu->rmsnorm_fwd(f_o, f_rs, f_a, f_w, N, C, 1e-5f);
    acts_check("bf16.acts.rmsnorm_fwd", shape, d_o, f_o, n);
    // the residual add deferred into the norm of its sum (MSLAB_BF16_ADDNORM): the same sum
    prime(d_o, N, C);
    bf->add(d_o2, d_a, d_b, n);
    bf->rmsnorm_fwd(d_o, d_rs, d_o2, d_w, N, C, 1e-5f);
    gpu->add(f_o2, f_a, f_b, n);
    gpu->rmsnorm_fwd(f_o, f_rs, f_o2, f_w, N, C, 1e-5f);
    acts_check("bf16.acts.add+rmsnorm_fwd", shape, d_o, f_o, n);
    acts_check_r("bf16.acts.add+rmsnorm_fwd.sum", shape, d_o2, f_o2, n, 0);
    acts_check_r("bf16.acts.add+rmsnorm_fwd.rstd", "N=64", d_rs, f_rs, N, 0);
    bf->add(d_o2, d_a, d_b, n); // not followed by its norm: run by the next op (the download)
    acts_check_r("bf16.acts.add", shape, d_o2, f_o2, n, 0);

    prime(d_o, N, C);
    bf->swiglu_fwd(d_o, d_a, d_b, n);
    gpu->swiglu_fwd(f_o, f_ar, f_br, n);
    { // a GEMM reading the bf16-only output vs the CPU on its rounded values
        float *want = get(f_o, n), *ref = hv(n), *pr = hround(pw, (size_t)C * C);
        for (size_t i = 0; i < n; i++) want[i] = bf16_round(want[i]);
        cpu->matmul_fwd(ref, want, pr, N, C, C);
        prime(d_o, N, C);
        float *o = get(d_pt, n);
        cmp("bf16.acts.swiglu_fwd+gemm", shape, o, ref, NULL, NULL, n, 1e-5);
        free(want), free(ref), free(pr), free(o);
    }
    acts_check("bf16.acts.swiglu_fwd", shape, d_o, f_o, n);
    prime(d_o, N, C); // again kept in bf16 only, then half of it written
    bf->swiglu_fwd(d_o, d_a, d_b, n);
    bf->zero(d_o + n / 2, n - n / 2);
    gpu->zero(f_o + n / 2, n - n / 2);
    acts_check("bf16.acts.half_zeroed", shape, d_o, f_o, n);

    prime(d_o, N, C), prime(d_o2, N, C);
    bf->zero(d_o, n), bf->zero(d_o2, n);
    bf->swiglu_bwd(d_o, d_o2, d_g, d_a, d_b, n);
    gpu->zero(f_o, n), gpu->zero(f_o2, n);
    gpu->swiglu_bwd(f_o, f_o2, f_gr, f_ar, f_br, n);
    acts_check("bf16.acts.swiglu_bwd.dgate", shape, d_o, f_o, n);
    acts_check("bf16.acts.swiglu_bwd.dup", shape, d_o2, f_o2, n);

    for (int style = 0; style < 2; style++) {
        prime(d_o, N, C), prime(d_o2, N, C);
        bf->rope_fwd(d_o, d_a, d_pos, d_inv, N, H, D, style);
        gpu->rope_fwd(f_o, f_ar, f_pos, f_inv, N, H, D, style); // (rope_fwd: a rounding reader)
        acts_check(style ? "bf16.acts.rope_fwd halves" : "bf16.acts.rope_fwd interl", shape, d_o,
                   f_o, n);
        // the backward reading that bf16-only output as its dout (the attention's dq / dk)
        bf->rope_fwd(d_o, d_a, d_pos, d_inv, N, H, D, style);
        bf->zero(d_o2, n);
        bf->rope_bwd(d_o2, d_o, d_pos, d_inv, N, H, D, style);
        float *h = get(f_o, n);
        for (size_t i = 0; i < n; i++) h[i] = bf16_round(h[i]);
        gpu->upload(f_o, h, n * 4);
        gpu->zero(f_o2, n);
        gpu->rope_bwd(f_o2, f_o, f_pos, f_inv, N, H, D, style);
        acts_check(style ? "bf16.acts.rope_bwd halves" : "bf16.acts.rope_bwd interl", shape, d_o2,
                   f_o2, n);
        free(h);
    }

    prime(d_o, N, C);
    bf->zero(d_o, n);
    bf->crossentropy_bwd(d_o, d_a, d_tgt, 0.03f, N, C);
    gpu->zero(f_o, n);
    gpu->crossentropy_bwd(f_o, f_ar, f_tgt, 0.03f, N, C);
    acts_check("bf16.acts.crossentropy_bwd", shape, d_o, f_o, n);
    { // the forward leaving the backward's gradient for dloss = 1 / (rows with a target)
        float *d_l = bf->alloc(N * 4), *f_l = gpu->alloc(N * 4);
        float dl = 1.0f / (float)(N - 1); // row 5 is ignored
        bf->crossentropy_fwd(d_l, d_a, d_tgt, N, C);
        bf->zero(d_o, n);
        bf->crossentropy_bwd(d_o, d_a, d_tgt, dl, N, C);
        gpu->crossentropy_fwd(f_l, f_ar, f_tgt, N, C);
        gpu->zero(f_o, n);
        gpu->crossentropy_bwd(f_o, f_ar, f_tgt, dl, N, C);
        acts_check("bf16.acts.crossentropy_fwd+bwd", shape, d_o, f_o, n);
        acts_check_r("bf16.acts.crossentropy_fwd.loss", "N=64", d_l, f_l, N, 0);
        bf->crossentropy_fwd(d_l, d_a, d_tgt, N, C); // another dloss: the backward's own pass
        bf->zero(d_o, n);
        bf->crossentropy_bwd(d_o, d_a, d_tgt, 0.03f, N, C);
        gpu->zero(f_o, n);
        gpu->crossentropy_bwd(f_o, f_ar, f_tgt, 0.03f, N, C);
        acts_check("bf16.acts.crossentropy_fwd+bwd other dloss", shape, d_o, f_o, n);
        bf->free(d_l), gpu->free(f_l);
    }

    backend_cuda_bf16_set_acts(acts0), backend_cuda_bf16_set_rnd(rnd0);
    gpu->free(f_ar), gpu->free(f_br), gpu->free(f_gr), free(ar), free(br), free(gr);
    bf->free(d_pw), bf->free(d_pt), bf->free(d_a), bf->free(d_b), bf->free(d_g), bf->free(d_w);
    bf->free(d_pos), bf->free(d_inv), bf->free(d_rs), bf->free(d_tgt), bf->free(d_o), bf->free(d_o2);
    gpu->free(f_a), gpu->free(f_b), gpu->free(f_g), gpu->free(f_w), gpu->free(f_pos);
    gpu->free(f_inv), gpu->free(f_o), gpu->free(f_o2), gpu->free(f_rs), gpu->free(f_tgt);
    free(a), free(b), free(g), free(w), free(pw), free(pos), free(inv), free(tgt);
}

// Grouped products (backend_bf16.cu "Grouped products"): k matmul_bwd calls in a row into one
// dinp run as one product over the stacked K. Against the CPU (the k products on the rounded
// operands, 1e-5): dinp and the weight gradients from deferred zeros (beta 0) and added to (+=);
// the same bits in round 2 (the gradients' and weights' shadows then in their blocks) and with
// shadows off (scratch copies). Then a strided write (rope_bwd into member 0's column block, kept
// in bf16 only) read back: the fp32 table's result rounded, bit for bit.
static void t_group(int N, int H, int D, int k) {
    if (!wanted("bf16.group")) return;
    int g0 = backend_cuda_bf16_set_group(1), acts0 = backend_cuda_bf16_set_acts(1);
    int IC = H * D, OC = H * D;
    char shape[64];
    snprintf(shape, sizeof shape, "N=%d IC=%d k=%d x OC=%d", N, IC, k, OC);
    size_t ni = (size_t)N * IC, nw = (size_t)OC * IC, no = (size_t)N * OC;
    float *x = hr(ni, 1), *xr = hround(x, ni), *dx0 = hr(ni, 1), *w[4], *dy[4], *dw0[4];
    float *refz = hv(ni), *refa = hdup(dx0, ni), *rwz[4], *rwa[4];
    float *d_x = dev(x, ni), *d_dx = bf->alloc(ni * 4), *d_w[4], *d_dy[4], *d_dw[4];
    for (int i = 0; i < k; i++) {
        w[i] = hr(nw, 0.05f), dy[i] = hr(no, 1), dw0[i] = hr(nw, 1);
        float *wr = hround(w[i], nw), *dyr = hround(dy[i], no);
        rwz[i] = hv(nw), rwa[i] = hdup(dw0[i], nw);
        cpu->matmul_bwd(refz, rwz[i], dyr, xr, wr, N, IC, OC);
        cpu->matmul_bwd(refa, rwa[i], dyr, xr, wr, N, IC, OC);
        d_w[i] = dev(w[i], nw), d_dy[i] = dev(dy[i], no), d_dw[i] = bf->alloc(nw * 4);
        free(wr), free(dyr);
    }
    float *gx[3][2], *gw[3][2][4]; // [round][zero / add]
    size_t runs0 = backend_cuda_bf16_group_runs();
    for (int r = 0; r < 3; r++) {
        if (r == 2) backend_cuda_bf16_set_state(0, 1);
        for (int a = 0; a < 2; a++) {
            if (a) set_dev(d_dx, dx0, ni);
            else bf->zero(d_dx, ni);
            for (int i = 0; i < k; i++) {
                if (a) set_dev(d_dw[i], dw0[i], nw);
                else bf->zero(d_dw[i], nw);
            }
            for (int i = 0; i < k; i++) bf->matmul_bwd(d_dx, d_dw[i], d_dy[i], d_x, d_w[i], N, IC, OC);
            gx[r][a] = get(d_dx, ni);
            for (int i = 0; i < k; i++) gw[r][a][i] = get(d_dw[i], nw);
        }
    }
    backend_cuda_bf16_set_state(1, 1);
    // each (round, zero / add) ran its k calls as one product (or the rows below test k products)
    size_t runs = backend_cuda_bf16_group_runs() - runs0;
    if (runs != 6) printf("    %zu grouped products in 3 rounds x 2, expected 6\n", runs);
    report("bf16.group.ran", shape, runs == 6 ? 0 : INFINITY, 0, -1);
    cmp("bf16.group.dinp", shape, gx[0][0], refz, NULL, gx[1][0], ni, 1e-5);
    cmp("bf16.group.dinp+=", shape, gx[0][1], refa, dx0, gx[1][1], ni, 1e-5);
    int same_off = same(gx[0][0], gx[2][0], ni) && same(gx[0][1], gx[2][1], ni);
    for (int i = 0; i < k; i++) {
        char op[64];
        snprintf(op, sizeof op, "bf16.group.dw%d", i);
        cmp(op, shape, gw[0][0][i], rwz[i], NULL, gw[1][0][i], nw, 1e-5);
        snprintf(op, sizeof op, "bf16.group.dw%d+=", i);
        cmp(op, shape, gw[0][1][i], rwa[i], dw0[i], gw[1][1][i], nw, 1e-5);
        same_off &= same(gw[0][0][i], gw[2][0][i], nw) && same(gw[0][1][i], gw[2][1][i], nw);
    }
    report("bf16.group.cache_off_bits", shape, same_off ? 0 : INFINITY, 0, -1);
    { // rope_bwd writing member 0's gradient in place (its shadow: a column block, in round 2)
        for (int i = 0; i < k; i++) bf->matmul_bwd(d_dx, d_dw[i], d_dy[i], d_x, d_w[i], N, IC, OC);
        float *src = hr(no, 1), *pos = hv(N), *inv = hv(D / 2);
        for (int i = 0; i < N; i++) pos[i] = (float)(5 * i);
        for (int i = 0; i < D / 2; i++) inv[i] = (float)pow(10000.0, -2.0 * i / D);
        float *d_src = dev(src, no), *d_pos = dev(pos, N), *d_inv = dev(inv, D / 2);
        float *f_src = gpu->alloc(no * 4), *f_o = gpu->alloc(no * 4), *f_pos = gpu->alloc(N * 4);
        float *f_inv = gpu->alloc(D / 2 * 4);
        gpu->upload(f_src, src, no * 4), gpu->upload(f_pos, pos, N * 4);
        gpu->upload(f_inv, inv, D / 2 * 4), gpu->zero(f_o, no);
        bf->zero(d_dy[0], no);
        bf->rope_bwd(d_dy[0], d_src, d_pos, d_inv, N, H, D, 0);
        gpu->rope_bwd(f_o, f_src, f_pos, f_inv, N, H, D, 0);
        acts_check("bf16.group.strided_rope_bwd", shape, d_dy[0], f_o, no);
        bf->free(d_src), bf->free(d_pos), bf->free(d_inv);
        gpu->free(f_src), gpu->free(f_o), gpu->free(f_pos), gpu->free(f_inv);
        free(src), free(pos), free(inv);
    }
    backend_cuda_bf16_set_group(g0), backend_cuda_bf16_set_acts(acts0);
    bf->free(d_x), bf->free(d_dx);
    for (int i = 0; i < k; i++) {
        bf->free(d_w[i]), bf->free(d_dy[i]), bf->free(d_dw[i]);
        free(w[i]), free(dy[i]), free(dw0[i]), free(rwz[i]), free(rwa[i]);
        for (int r = 0; r < 3; r++) free(gw[r][0][i]), free(gw[r][1][i]);
    }
    for (int r = 0; r < 3; r++) free(gx[r][0]), free(gx[r][1]);
    free(x), free(xr), free(dx0), free(refz), free(refa);
}

// rnd (backend_bf16.cu "Rounding readers"): swiglu, rope_fwd and the cross-entropy read GEMM outputs
// that the table then keeps in bf16 only (the LM's gate / up, dh, q / k, logits). Their results must
// be the fp32
// table's on the GEMMs' fp32 outputs rounded to bf16, bit for bit (err = number of differing
// elements), and the GEMM outputs read back as that rounding. The readers run once first (their
// inputs get shadows), then the GEMMs write the inputs, then the readers run again.
static void rnd_ref(float *d_e, size_t n, float *f) { // d_e's values rounded, uploaded to f
    float *h = get(d_e, n);
    for (size_t i = 0; i < n; i++) h[i] = bf16_round(h[i]);
    gpu->upload(f, h, n * 4);
    free(h);
}
static void t_rnd_gemm_in(int N, int C, int F, int V, int H, int style) {
    if (!wanted("bf16.rnd")) return;
    int acts0 = backend_cuda_bf16_set_acts(1), rnd0 = backend_cuda_bf16_set_rnd(1);
    char shape[64];
    snprintf(shape, sizeof shape, "N=%d C=%d F=%d V=%d H=%d %s", N, C, F, V, H,
             style ? "halves" : "interl");
    int D = C / H;
    size_t nc = (size_t)N * C, nf = (size_t)N * F, nv = (size_t)N * V, nw = (size_t)F * C;
    float *x = hr(nc, 1), *w1 = hr(nw, 0.1f), *w3 = hr(nw, 0.1f), *w2 = hr(nw, 0.1f);
    float *wc = hr((size_t)V * C, 0.2f), *dy = hr(nc, 1), *wq = hr((size_t)C * C, 0.1f);
    float *pos = hv(N), *inv = hv(D / 2);
    for (int i = 0; i < N; i++) pos[i] = (float)(2 * i + 3);
    for (int i = 0; i < D / 2; i++) inv[i] = (float)pow(10000.0, -2.0 * i / D);
    int *tgt = malloc(sizeof(int) * N);
    for (int i = 0; i < N; i++) tgt[i] = i == 2 ? -1 : (int)rng_below(&rng, V);
    float *d_x = dev(x, nc), *d_w1 = dev(w1, nw), *d_w3 = dev(w3, nw), *d_w2 = dev(w2, nw);
    float *d_wc = dev(wc, (size_t)V * C), *d_dy = dev(dy, nc), *d_wq = dev(wq, (size_t)C * C);
    float *d_pos = dev(pos, N), *d_inv = dev(inv, D / 2), *d_q = bf->alloc(nc * 4);
    float *d_qr = bf->alloc(nc * 4), *f_pos = gpu->alloc(N * 4), *f_inv = gpu->alloc(D / 2 * 4);
    gpu->upload(f_pos, pos, N * 4), gpu->upload(f_inv, inv, D / 2 * 4);
    int *d_tgt = bf->alloc(sizeof(int) * N), *f_tgt = gpu->alloc(sizeof(int) * N);
    bf->upload(d_tgt, tgt, sizeof(int) * N), gpu->upload(f_tgt, tgt, sizeof(int) * N);
    float *d_gate = bf->alloc(nf * 4), *d_up = bf->alloc(nf * 4), *d_dh = bf->alloc(nf * 4);
    float *d_lg = bf->alloc(nv * 4), *d_e = bf->alloc((nv > nf ? nv : nf) * 4);
    float *d_h = bf->alloc(nf * 4), *d_dg = bf->alloc(nf * 4), *d_du = bf->alloc(nf * 4);
    float *d_l = bf->alloc(N * 4), *d_dl = bf->alloc(nv * 4);
    float *f[11]; // gate up dh lg h dg du l dl q qr (the fp32 table's)
    size_t fn[11] = {nf, nf, nf, nv, nf, nf, nf, (size_t)N, nv, nc, nc};
    for (int i = 0; i < 11; i++) f[i] = gpu->alloc(fn[i] * 4);
    // the wanted inputs: the same GEMMs into d_e (no shadow: fp32 outputs), rounded
    bf->matmul_fwd(d_e, d_x, d_w1, N, C, F), rnd_ref(d_e, nf, f[0]);
    bf->matmul_fwd(d_e, d_x, d_w3, N, C, F), rnd_ref(d_e, nf, f[1]);
    bf->zero(d_e, nf);
    bf->matmul_bwd(d_e, NULL, d_dy, d_h, d_w2, N, F, C), rnd_ref(d_e, nf, f[2]);
    bf->matmul_fwd(d_e, d_x, d_wc, N, C, V), rnd_ref(d_e, nv, f[3]);
    bf->matmul_fwd(d_e, d_x, d_wq, N, C, C), rnd_ref(d_e, nc, f[9]);
    for (int pass = 0; pass < 2; pass++) { // pass 0: before the GEMMs wrote the inputs
        if (pass) bf->matmul_fwd(d_gate, d_x, d_w1, N, C, F), bf->matmul_fwd(d_up, d_x, d_w3, N, C, F);
        else bf->zero(d_gate, nf), bf->zero(d_up, nf), bf->zero(d_lg, nv), bf->zero(d_q, nc);
        if (pass) bf->matmul_fwd(d_q, d_x, d_wq, N, C, C);
        bf->rope_fwd(d_qr, d_q, d_pos, d_inv, N, H, D, style);
        bf->swiglu_fwd(d_h, d_gate, d_up, nf);
        bf->zero(d_dh, nf);
        if (pass) bf->matmul_bwd(d_dh, NULL, d_dy, d_h, d_w2, N, F, C);
        bf->zero(d_dg, nf), bf->zero(d_du, nf);
        bf->swiglu_bwd(d_dg, d_du, d_dh, d_gate, d_up, nf);
        if (pass) bf->matmul_fwd(d_lg, d_x, d_wc, N, C, V);
        bf->crossentropy_fwd(d_l, d_lg, d_tgt, N, V);
        bf->zero(d_dl, nv);
        bf->crossentropy_bwd(d_dl, d_lg, d_tgt, 0.05f, N, V);
        // the LM head's backward reads dlogits (its shadow: in pass 1 the forward's gradient)
        bf->matmul_bwd(d_e, NULL, d_dl, d_x, d_wc, N, C, V);
    }
    gpu->swiglu_fwd(f[4], f[0], f[1], nf);
    gpu->zero(f[5], nf), gpu->zero(f[6], nf);
    gpu->swiglu_bwd(f[5], f[6], f[2], f[0], f[1], nf);
    gpu->crossentropy_fwd(f[7], f[3], f_tgt, N, V);
    gpu->zero(f[8], nv);
    gpu->crossentropy_bwd(f[8], f[3], f_tgt, 0.05f, N, V);
    gpu->rope_fwd(f[10], f[9], f_pos, f_inv, N, H, D, style);
    const char *nm[11] = {"bf16.rnd.gemm_out.gate", "bf16.rnd.gemm_out.up", "bf16.rnd.gemm_out.dh",
                         "bf16.rnd.gemm_out.logits", "bf16.rnd.swiglu_fwd", "bf16.rnd.swiglu_bwd.dgate",
                         "bf16.rnd.swiglu_bwd.dup", "bf16.rnd.crossentropy_fwd", "bf16.rnd.crossentropy_bwd",
                         "bf16.rnd.gemm_out.q", "bf16.rnd.rope_fwd"};
    float *d[11] = {d_gate, d_up, d_dh, d_lg, d_h, d_dg, d_du, d_l, d_dl, d_q, d_qr};
    for (int i = 0; i < 11; i++) // dlogits from the register path: kept in bf16 only
        acts_check_r(nm[i], shape, d[i], f[i], fn[i], i == 8 && V % 4 == 0);
    backend_cuda_bf16_set_acts(acts0), backend_cuda_bf16_set_rnd(rnd0);
    for (int i = 0; i < 11; i++) bf->free(d[i]), gpu->free(f[i]);
    bf->free(d_wq), bf->free(d_pos), bf->free(d_inv), gpu->free(f_pos), gpu->free(f_inv);
    free(wq), free(pos), free(inv);
    bf->free(d_x), bf->free(d_w1), bf->free(d_w3), bf->free(d_w2), bf->free(d_wc), bf->free(d_dy);
    bf->free(d_tgt), gpu->free(f_tgt), bf->free(d_e);
    free(x), free(w1), free(w3), free(w2), free(wc), free(dy), free(tgt);
}

// rnd: a rounding reader gives its input a shadow only where no fp32 consumer read the array (a
// download here): such an array keeps fp32 GEMM outputs (gemm_out), its shadow would stay stale.
// err = shadow bytes the reader added; the control (arrays never read in fp32) must add some.
static void t_rnd_f32_read(void) {
    if (!wanted("bf16.rnd")) return;
    int acts0 = backend_cuda_bf16_set_acts(1), rnd0 = backend_cuda_bf16_set_rnd(1);
    size_t n = (size_t)1 << 18;
    float *h = hr(n, 1);
    float *g = dev(h, n), *u = dev(h, n), *g2 = dev(h, n), *u2 = dev(h, n), *o = bf->alloc(n * 4);
    free(get(g, n)), free(get(u, n)); // the fp32 reads
    size_t b0 = backend_cuda_bf16_shadow_bytes();
    bf->swiglu_fwd(o, g, u, n);
    size_t b1 = backend_cuda_bf16_shadow_bytes();
    bf->swiglu_fwd(o, g2, u2, n);
    size_t b2 = backend_cuda_bf16_shadow_bytes();
    report("bf16.rnd.no_shadow_after_f32_read", "n=262144", (double)(b1 - b0), 0, -1);
    report("bf16.rnd.shadow_control", "n=262144", b2 > b1 ? 0.0 : 1.0, 0, -1);
    backend_cuda_bf16_set_acts(acts0), backend_cuda_bf16_set_rnd(rnd0);
    bf->free(g), bf->free(u), bf->free(g2), bf->free(u2), bf->free(o);
    free(h);
}

// acts: a GEMM output whose array a GEMM read before (the LM's v, and the
// attention's dout as matmul_bwd's dinp over a deferred zero) is written in bf16 only: read back,
// it must be the same GEMM's fp32 output rounded, bit for bit (err = number of differing elements).
static void t_acts_gemm_out(int N, int IC, int OC) {
    if (!wanted("bf16.acts.gemm_out")) return;
    int acts0 = backend_cuda_bf16_set_acts(1);
    char shape[64];
    snprintf(shape, sizeof shape, "N=%d IC=%d OC=%d", N, IC, OC);
    size_t ni = (size_t)N * IC, nw = (size_t)OC * IC, no = (size_t)N * OC;
    float *x = hr(ni, 1), *w = hr(nw, 0.05f), *dy = hr(no, 1);
    float *d_x = dev(x, ni), *d_w = dev(w, nw), *d_dy = dev(dy, no);
    float *d_o = bf->alloc(no * 4), *d_o2 = bf->alloc(no * 4), *d_t = bf->alloc(no * 4);
    float *d_i = bf->alloc(ni * 4), *d_i2 = bf->alloc(ni * 4);
    float *d_pw = dev(w, nw); // the priming GEMMs' weight
    poison_dev(d_o, no), poison_dev(d_i, ni);
    // forward: out read by a GEMM before (its shadow exists), then written by one
    bf->matmul_fwd(d_t, d_o, d_pw, N, OC, OC <= IC ? OC : IC); // reads d_o [N, OC] (IC >= OC)
    bf->matmul_fwd(d_o, d_x, d_w, N, IC, OC);
    bf->matmul_fwd(d_o2, d_x, d_w, N, IC, OC); // no shadow: the fp32 output
    acts_check("bf16.acts.gemm_out.fwd", shape, d_o, d_o2, no);
    // backward: dinp over a deferred zero, read by a GEMM before
    bf->matmul_fwd(d_t, d_i, d_pw, N, IC, OC);
    bf->zero(d_i, ni), bf->zero(d_i2, ni);
    bf->matmul_bwd(d_i, NULL, d_dy, d_x, d_w, N, IC, OC);
    bf->matmul_bwd(d_i2, NULL, d_dy, d_x, d_w, N, IC, OC);
    acts_check("bf16.acts.gemm_out.dinp", shape, d_i, d_i2, ni);
    backend_cuda_bf16_set_acts(acts0);
    bf->free(d_x), bf->free(d_w), bf->free(d_dy), bf->free(d_o), bf->free(d_o2), bf->free(d_t);
    bf->free(d_i), bf->free(d_i2), bf->free(d_pw);
    free(x), free(w), free(dy);
}

// The optimizer path: scale (deferred) then AdamW over a tensor of 3 weight slices that GEMMs read
// (their shadows written by AdamW): parameters, moments and the scaled gradient must be the fp32
// table's bits, and a GEMM on each slice the same as after a fresh conversion (err = number of
// differing elements). n4: the slices' length (odd: AdamW's scalar path).
static void t_opt(int n4) {
    if (!wanted("bf16.opt")) return;
    const int N = 8, S = 3; // GEMM rows; slices
    size_t n = (size_t)S * n4 + 5, ns = (size_t)n4; // 5 parameters after the last slice
    char shape[64];
    snprintf(shape, sizeof shape, "n=%zu, %d slices of %d", n, S, n4);
    float *h[4] = {hr(n, 0.05f), hr(n, 1), hr(n, 0.01f), hr(n, 0.01f)}; // p g m v
    for (size_t i = 0; i < n; i++) h[3][i] = fabsf(h[3][i]);
    float *d[4], *f[4];
    for (int i = 0; i < 4; i++) d[i] = dev(h[i], n), f[i] = gpu->alloc(n * 4), gpu->upload(f[i], h[i], n * 4);
    float *x = hr((size_t)N * ns, 1), *d_x = dev(x, (size_t)N * ns), *d_y = bf->alloc(N * 4);
    float *d_y2 = bf->alloc(N * 4);
    for (int s = 0; s < S; s++) bf->matmul_fwd(d_y, d_x, d[0] + s * ns, N, n4, 1); // shadows
    bf->scale(d[1], 0.37f, n);
    bf->adamw(d[0], d[1], d[2], d[3], n, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 3);
    gpu->scale(f[1], 0.37f, n);
    gpu->adamw(f[0], f[1], f[2], f[3], n, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 3);
    const char *name[4] = {"bf16.opt.params", "bf16.opt.grad", "bf16.opt.m", "bf16.opt.v"};
    for (int i = 0; i < 4; i++) acts_check_r(name[i], shape, d[i], f[i], n, 0);
    double bad = 0;
    for (int s = 0; s < S; s++) { // the slice's shadow (from AdamW) vs a fresh conversion
        bf->matmul_fwd(d_y, d_x, d[0] + s * ns, N, n4, 1);
        backend_cuda_bf16_forget();
        bf->matmul_fwd(d_y2, d_x, d[0] + s * ns, N, n4, 1);
        float *a = get(d_y, N), *b = get(d_y2, N);
        bad += !same(a, b, N);
        free(a), free(b);
    }
    report("bf16.opt.shadows", shape, bad, 0, -1);
    for (int i = 0; i < 4; i++) bf->free(d[i]), gpu->free(f[i]), free(h[i]);
    bf->free(d_x), bf->free(d_y), bf->free(d_y2);
    free(x);
}

// A shadow never outlives a write through the table: the weight of a GEMM rewritten by upload,
// scale, adamw, a freed-and-reallocated buffer; the input zeroed (deferred) or partly zeroed.
static void t_state_stale(void) {
    if (!wanted("bf16.state.stale")) return;
    const int N = 64, IC = 96, OC = 80;
    const char *shape = "N=64 IC=96 OC=80";
    size_t ni = (size_t)N * IC, nw = (size_t)OC * IC, no = (size_t)N * OC;
    float *x = hr(ni, 1), *w = hr(nw, 0.05f), *ref = hv(no), *xr = hv(ni), *wr = hv(nw);
    float *d_x = dev(x, ni), *d_w = dev(w, nw), *d_o = bf->alloc(no * 4);
    double worst = 0;
#define CHECK_FWD(label)                                                                      \
    do {                                                                                      \
        float *hw = get(d_w, nw), *hx = get(d_x, ni);                                         \
        for (size_t i = 0; i < nw; i++) wr[i] = bf16_round(hw[i]);                            \
        for (size_t i = 0; i < ni; i++) xr[i] = bf16_round(hx[i]);                            \
        cpu->matmul_fwd(ref, xr, wr, N, IC, OC);                                              \
        bf->matmul_fwd(d_o, d_x, d_w, N, IC, OC);                                             \
        float *o = get(d_o, no);                                                              \
        double e = cmp("bf16.state.stale." label, shape, o, ref, NULL, NULL, no, 1e-5);       \
        worst = fmax(worst, e);                                                               \
        free(hw), free(hx), free(o);                                                          \
    } while (0)
    CHECK_FWD("first");
    CHECK_FWD("again"); // the shadows are reused
    bf->scale(d_w, 2.0f, nw);
    CHECK_FWD("after scale");
    float *w2 = hr(nw, 0.05f);
    bf->upload(d_w, w2, nw * sizeof(float));
    CHECK_FWD("after upload");
    { // AdamW on the weight, as an optimizer step
        float *d_g = dev(w2, nw), *d_m = bf->alloc(nw * 4), *d_v = bf->alloc(nw * 4);
        bf->adamw(d_w, d_g, d_m, d_v, nw, 0.01f, 0.9f, 0.95f, 1e-8f, 0.1f, 1);
        CHECK_FWD("after adamw");
        bf->free(d_g), bf->free(d_m), bf->free(d_v);
    }
    bf->free(d_w); // a new buffer, likely at the same address, with other values
    d_w = dev(w, nw);
    CHECK_FWD("after free+alloc");
    bf->zero(d_x, ni);
    CHECK_FWD("after zero");
    bf->upload(d_x, x, ni * sizeof(float));
    bf->zero(d_x + ni / 2, ni / 2); // a part: the next op (the GEMM) runs the memset first
    CHECK_FWD("after half zero");
    { // deferred zeros consumed by the backward GEMM (beta 0), and one not consumed (a part)
        float *dy = hr(no, 1), *d_dy = dev(dy, no), *d_dx = dev(x, ni);
        float *dyr = hround(dy, no), *hw = get(d_w, nw), *dxr = hv(ni);
        for (size_t i = 0; i < nw; i++) wr[i] = bf16_round(hw[i]);
        cpu->matmul_bwd(dxr, NULL, dyr, xr, wr, N, IC, OC);
        bf->zero(d_dx, ni);
        bf->matmul_bwd(d_dx, NULL, d_dy, d_x, d_w, N, IC, OC);
        float *g = get(d_dx, ni);
        worst = fmax(worst, cmp("bf16.state.zero+bwd", shape, g, dxr, NULL, NULL, ni, 1e-5));
        float *base = hdup(x, ni); // x, its second half zeroed, plus the same increment
        for (size_t i = ni / 2; i < ni; i++) base[i] = 0;
        float *want = hdup(base, ni);
        for (size_t i = 0; i < ni; i++) want[i] += dxr[i];
        bf->upload(d_dx, x, ni * sizeof(float));
        bf->zero(d_dx + ni / 2, ni / 2);
        bf->matmul_bwd(d_dx, NULL, d_dy, d_x, d_w, N, IC, OC);
        free(g);
        g = get(d_dx, ni);
        worst = fmax(worst, cmp("bf16.state.halfzero+bwd", shape, g, want, base, NULL, ni, 1e-5));
        bf->free(d_dy), bf->free(d_dx);
        free(dy), free(dyr), free(hw), free(dxr), free(g), free(base), free(want);
    }
#undef CHECK_FWD
    bf->free(d_x), bf->free(d_w), bf->free(d_o);
    free(x), free(w), free(w2), free(ref), free(xr), free(wr);
}

// Information, not a check: training-step throughput of gpu_bench.c's ~100M model (dim 768, 12
// layers, 32k vocabulary, B=8 T=1024) and one GEMM, fp32 table vs bf16 table (and the bf16 table
// with COMPUTE_32F_FAST_16BF GEMMs).
static double step_time(const Backend *be, ModelConfig c, int B, int T, int steps) {
    Model m;
    MS_ASSERT(model_create(&m, &c, be) == 0, "%s", ms_error());
    model_init_weights(&m, 1);
    OptimConfig oc = optim_config_default();
    oc.steps = steps, oc.warmup = 1;
    Optimizer o;
    optim_create(&o, &oc, &m);
    int N = B * T, *tok = malloc(sizeof(int) * N), *tgt = malloc(sizeof(int) * N);
    Rng r;
    rng_seed(&r, 3);
    for (int i = 0; i < N; i++) tok[i] = (int)rng_below(&r, c.vocab), tgt[i] = (int)rng_below(&r, c.vocab);
    double t0 = 0;
    float probe;
    for (int s = 0; s < steps; s++) {
        if (s == 2) be->download(&probe, m.params.base, sizeof probe), t0 = ms_now();
        model_zero_grad(&m);
        model_forward(&m, tok, tgt, B, T);
        model_backward(&m);
        optim_step(&o, &m, s);
    }
    be->download(&probe, m.params.base, sizeof probe);
    double dt = (ms_now() - t0) / (steps - 2);
    optim_destroy(&o, &m);
    model_destroy(&m);
    free(tok), free(tgt);
    return dt;
}

static double gemm_time(const Backend *be, int N, int IC, int OC) {
    float *x = be->alloc((size_t)N * IC * 4), *w = be->alloc((size_t)OC * IC * 4);
    float *y = be->alloc((size_t)N * OC * 4), *dx = be->alloc((size_t)N * IC * 4);
    float *dw = be->alloc((size_t)OC * IC * 4), probe;
    double best = 1e30;
    for (int rep = 0; rep < 4; rep++) {
        be->download(&probe, y, sizeof probe);
        double t0 = ms_now();
        be->matmul_fwd(y, x, w, N, IC, OC);
        be->matmul_bwd(dx, dw, y, x, w, N, IC, OC);
        be->download(&probe, y, sizeof probe);
        if (rep) best = fmin(best, ms_now() - t0);
    }
    be->free(x), be->free(w), be->free(y), be->free(dx), be->free(dw);
    return best;
}

// Information (only with the filter bf16.lt): the LM's GEMMs (N = 32768) per cuBLASLt heuristic
// index (-1: cublasGemmEx), us per call of each product: fwd (fp32 out; bf16 out into a shadow),
// dinp over a deferred zero (beta 0; fp32 or bf16 out), dinp added (beta 1), dW (beta 1; beta 0
// over a deferred zero, as the model's weight gradients since s9).
static double lt_time(int what, float *x, float *w, float *y, float *dx, float *dw, int N, int IC,
                      int OC) {
    float probe;
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        bf->download(&probe, dw, sizeof probe);
        double t0 = ms_now();
        for (int i = 0; i < 10; i++) {
            if (what == 0) bf->matmul_fwd(y, x, w, N, IC, OC);
            if (what == 1) bf->zero(dx, (size_t)N * IC), bf->matmul_bwd(dx, NULL, y, x, w, N, IC, OC);
            if (what == 2) bf->matmul_bwd(dx, NULL, y, x, w, N, IC, OC);
            if (what == 3) bf->matmul_bwd(NULL, dw, y, x, w, N, IC, OC);
            if (what == 4) bf->zero(dw, (size_t)OC * IC), bf->matmul_bwd(NULL, dw, y, x, w, N, IC, OC);
        }
        bf->download(&probe, dw, sizeof probe);
        if (rep) best = fmin(best, (ms_now() - t0) / 10);
    }
    return best;
}
static void t_lt_algos(void) {
    if (!wanted("bf16.lt") || wanted("bf16.")) return; // only when asked for (the filter bf16.lt)
    // (the last two: the grouped dinp products' K = 3 x 768 and 2 x 3072, dinp b0 only)
    const int N = 32768, shapes[6][2] = {{768, 768}, {768, 3072}, {3072, 768}, {768, 32000},
                                         {768, 2304}, {768, 6144}};
    const char *what[7] = {"fwd", "dinp b0", "dinp b1", "dW", "fwd bf16", "dinp bf16", "dW b0"};
    const size_t blk = 1 << 20;
    float *hb = hr(blk, 1);
    for (int s = 0; s < 6; s++) {
        int IC = shapes[s][0], OC = shapes[s][1];
        float *x = bf->alloc((size_t)N * IC * 4), *w = bf->alloc((size_t)OC * IC * 4);
        float *y = bf->alloc((size_t)N * OC * 4), *dx = bf->alloc((size_t)N * IC * 4);
        float *dw = bf->alloc((size_t)OC * IC * 4);
        // random operands (all-zero ones draw less power: other clocks, other rankings), tiled
        size_t ni = (size_t)N * IC, nw = (size_t)OC * IC;
        for (size_t o = 0; o < ni; o += blk) bf->upload(x + o, hb, (ni - o < blk ? ni - o : blk) * 4);
        for (size_t o = 0; o < nw; o += blk) bf->upload(w + o, hb, (nw - o < blk ? nw - o : blk) * 4);
        bf->scale(w, 0.05f, nw);
        bf->zero(dw, nw), bf->zero(dx, ni);
        bf->matmul_fwd(y, x, w, N, IC, OC);
        bf->matmul_bwd(dx, dw, y, x, w, N, IC, OC); // y's shadow: read by a GEMM (the bf16 out)
        bf->matmul_fwd(y, dx, w, N, IC, OC);        // dx's shadow (dinp bf16; IC = OC here)
        // the bf16 outputs first (768 x 768: y and dx have shadows, no fp32 reader yet), then a
        // download of a part of each (an fp32 reader): the fp32 outputs
        static const int order[7] = {4, 5, 0, 1, 2, 3, 6};
        for (int o = 0; o < 7; o++) {
            int k = order[o];
            float probe;
            if (s >= 4 && k != 1) continue;
            if (k == 0 || s >= 4) bf->download(&probe, y, 4), bf->download(&probe, dx, 4);
            printf("    (info bf16.lt N=%d IC=%d OC=%d %-8s us [idx]:", N, IC, OC, what[k]);
            for (int idx = -1; idx < 8; idx++) {
                int was = backend_cuda_bf16_set_lt(idx);
                double t = lt_time(k == 4 ? 0 : k == 5 ? 1 : k == 6 ? 4 : k, x, w, y, dx, dw, N, IC, OC);
                backend_cuda_bf16_set_lt(was);
                printf(" [%d] %.1f", idx, t * 1e6);
            }
            printf(")\n");
        }
        bf->free(x), bf->free(w), bf->free(y), bf->free(dx), bf->free(dw);
    }
    free(hb);
}

// The cuBLASLt choices (backend_bf16.cu lt_choice: the LM's products at N = 32768) against
// cublasGemmEx on the same bf16 operands: the same products up to the summation order (relative
// L2 <= 1e-5; err on the device: sumsq(a - b) / sumsq(b)), and the same bits on a second call.
static double dev_rel(float *a, float *b, float *t, size_t n) { // (b is negated on the way)
    bf->scale(b, -1.0f, n);
    bf->add(t, a, b, n);
    double e = bf->sumsq(t, n), r = bf->sumsq(b, n);
    return r > 0 ? sqrt(e / r) : sqrt(e);
}
static void t_lt_products(void) {
    if (!wanted("bf16.lt_products") || quick) return;
    const int N = 32768, shapes[4][2] = {{768, 768}, {768, 3072}, {3072, 768}, {768, 32000}};
    const size_t blk = 1 << 20; // random values, tiled (uploads of ~1 GB host arrays otherwise)
    float *hb = hr(blk, 1);
    for (int s = 0; s < 4; s++) {
        int IC = shapes[s][0], OC = shapes[s][1];
        size_t ni = (size_t)N * IC, nw = (size_t)OC * IC, no = (size_t)N * OC;
        size_t big = ni > no ? ni : no;
        float *x = bf->alloc(ni * 4), *w = bf->alloc(nw * 4), *t = bf->alloc(big * 4);
        float *y[3], *dx[3], *dw[3];
        for (int i = 0; i < 3; i++)
            y[i] = bf->alloc(no * 4), dx[i] = bf->alloc(ni * 4), dw[i] = bf->alloc(nw * 4);
        for (size_t o = 0; o < ni; o += blk) bf->upload(x + o, hb, (ni - o < blk ? ni - o : blk) * 4);
        for (size_t o = 0; o < nw; o += blk) bf->upload(w + o, hb, (nw - o < blk ? nw - o : blk) * 4);
        bf->scale(w, 0.05f, nw);
        // i = 0, 1: the table's choice twice; 2: cublasGemmEx. dinp: beta 0, then beta 1 on top;
        // dW: beta 1 (added to the allocation's zeros), as the model's weight gradients
        for (int i = 0; i < 3; i++) {
            int was = backend_cuda_bf16_set_lt(i == 2 ? -1 : -2);
            bf->matmul_fwd(y[i], x, w, N, IC, OC);
            bf->zero(dx[i], ni);
            bf->matmul_bwd(dx[i], dw[i], y[0], x, w, N, IC, OC);
            bf->matmul_bwd(dx[i], NULL, y[0], x, w, N, IC, OC);
            backend_cuda_bf16_set_lt(was);
        }
        char shape[64];
        snprintf(shape, sizeof shape, "N=%d IC=%d OC=%d", N, IC, OC);
        float **r[3] = {y, dx, dw};
        size_t nn[3] = {no, ni, nw};
        const char *nm[3] = {"bf16.lt_products.fwd", "bf16.lt_products.dinp", "bf16.lt_products.dw"};
        for (int k = 0; k < 3; k++) {
            double same01 = dev_rel(r[k][0], r[k][1], t, nn[k]); // 0: the same bits
            report(nm[k], shape, dev_rel(r[k][0], r[k][2], t, nn[k]), 1e-5, same01 == 0);
        }
        bf->free(x), bf->free(w), bf->free(t);
        for (int i = 0; i < 3; i++) bf->free(y[i]), bf->free(dx[i]), bf->free(dw[i]);
    }
    free(hb);
}

static void t_speed(void) {
    if (!wanted("bf16.speed") || quick) return;
    ModelConfig big = model_config_default();
    big.dim = 768, big.layers = 12, big.heads = 12, big.kv_heads = 4, big.ffn = 2048;
    big.vocab = 32000, big.tied = 0;
    int B = 8, T = 1024, N = B * T;
    double f = step_time(gpu, big, B, T, 6), b = step_time(bf, big, B, T, 6);
    backend_cuda_bf16_fast_gemm(1);
    double bfast = step_time(bf, big, B, T, 6);
    double gfast = gemm_time(bf, 8192, 768, 3072);
    backend_cuda_bf16_fast_gemm(0);
    double gf = gemm_time(gpu, 8192, 768, 3072), gb = gemm_time(bf, 8192, 768, 3072);
    double fl = 6.0 * 8192 * 768 * 3072;
    printf("    (info bf16.speed: 100M model B=%d T=%d: fp32 %.0f, bf16 %.0f, bf16 FAST_16BF GEMMs %.0f "
           "tokens/s; GEMM 8192x768x3072 fwd+bwd: fp32 %.2f ms (%.0f TFLOP/s), bf16 %.2f ms (%.0f), "
           "FAST_16BF %.2f ms (%.0f))\n", B, T, N / f, N / b, N / bfast, gf * 1e3, fl / gf / 1e12,
           gb * 1e3, fl / gb / 1e12, gfast * 1e3, fl / gfast / 1e12);
}

void t_backend_bf16_all(void) {
    bf = backend_cuda_bf16(); // every check here is named bf16.* (the lead's filter: "bf16")
    if (!bf) {
        report("bf16.backend", ms_error(), INFINITY, 0, -1);
        return;
    }
    printf("-- cuda-bf16 table (cuda/backend_bf16.cu): operands bf16, accumulation fp32; "
           "err = relative L2 vs CPU fp32 on bf16-rounded operands --\n");
    t_group(64, 2, 32, 3);
    t_group(37, 3, 32, 2);
    t_mm(1, 64, 64);
    t_mm(37, 200, 300);
    t_mm(200, 128, 256);
    if (!quick) t_mm(1000, 512, 1000), t_mm(4096, 768, 2304);

    t_attn(1, 1, 8, 2, 64);
    t_attn(2, 37, 8, 2, 64);
    t_attn(1, 200, 8, 2, 128);
    t_attn(2, 130, 6, 3, 64);
    t_attn(1, 65, 4, 4, 32); // a head dim the bf16 kernels may not handle: the fallback path
    if (!quick) t_attn(1, 1000, 8, 2, 128), t_attn(2, 1000, 8, 2, 64);

    t_sparse("ms small", ms_small(POS_TRUE), 2, 203, 4, 2, 64);
    t_sparse("ms small", ms_small(POS_REINDEXED), 1, 203, 4, 2, 128);
    AttnConfig mo = attn_config_default(ATTN_MOBA);
    mo.block = 64, mo.top = 4;
    t_sparse("moba b64 top4", mo, 1, 1000, 8, 2, 64);
    AttnConfig wi = attn_config_default(ATTN_WINDOW);
    wi.window = 100;
    t_sparse("window 100", wi, 1, 1000, 8, 2, 128);

    t_select("ms small", ms_small(POS_TRUE), 2, 203, 4, 2, 64);
    t_select("ms small", ms_small(POS_REINDEXED), 1, 203, 4, 2, 128);
    AttnConfig msp = attn_config_default(ATTN_MS); // the paper's ratios scaled down
    msp.w = 16, msp.top = 32, msp.merge = 8;
    t_select("ms w16 top32 merge8", msp, 1, 1000, 8, 2, 64);
    AttnConfig mn = ms_small(POS_TRUE); // not the fast path: the fp32 selection on rounded q / k
    mn.pool = POOL_NMEAN, mn.score = SCORE_COSINE, mn.order = ORDER_VOTES;
    t_select("ms nmean/cos/votes", mn, 1, 203, 4, 2, 64);
    t_select("moba b64 top4", mo, 1, 1000, 8, 2, 64);
    t_select("window 100", wi, 1, 1000, 8, 2, 128);
    if (!quick) t_select("ms w16 top32 merge8", msp, 1, 4096, 8, 2, 128);

    ModelConfig a = model_config_default(); // gpu_tests.c's small models
    a.dim = 128, a.layers = 2, a.heads = 4, a.kv_heads = 2, a.ffn = 352, a.vocab = 256;
    ModelConfig b = model_config_default();
    b.dim = 512, b.layers = 2, b.heads = 8, b.kv_heads = 2, b.ffn = 1376, b.vocab = 512;
    b.tied = 0, b.rope_style = ROPE_HALVES;
    t_model_step("tied interl D=32", a, 4, 64, NULL);
    t_model_step("untied halves D=64", b, 3, 100, NULL);
    AttnConfig msa = ms_small(POS_REINDEXED);
    t_model_step("ms pos D=64", b, 2, 150, &msa);
    ModelConfig c = a; // D = 64: the dense bf16 kernel's head dim
    c.heads = 2, c.kv_heads = 1;
    t_state_stale();
    t_acts_ops();
    t_opt(1000);
    t_opt(333);
    t_rnd_gemm_in(64, 96, 128, 200, 3, 0);
    t_rnd_gemm_in(37, 64, 96, 101, 2, 1); // V % 4 != 0: the cross-entropy's strided kernels
    t_rnd_f32_read();
    t_acts_gemm_out(64, 96, 80);
    t_acts_gemm_out(300, 512, 256);
    if (!quick) t_acts_gemm_out(32768, 768, 768);
    t_state_train("dense D=64", c, NULL, 4, 64, 4);
    t_state_train("untied halves D=64 ms", b, &msa, 2, 150, 3);
    if (!quick) {
        t_determinism(c, 8, 128, 50);
        t_quality(c, 8, 128, 200);
    }
    t_speed();
    t_lt_products();
    t_lt_algos();
}
