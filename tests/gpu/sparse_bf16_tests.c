// sparse_bf16_tests.c: the bf16 block-sparse attention (cuda/sparse_bf16.cu) against the CPU's fp32
// op on the same bf16-rounded inputs and the same list (filter "bf16").
//
// Inputs are random, rounded to bf16 on the host; the list is the CPU's attention_select on the
// rounded values (as floats); the reference is the CPU's sparse_attention_fwd / bwd (fp32, on the
// rounded q, k, v, dout and the rounded forward output, with the CPU's lse). The backward's gradients
// start from zero on the CPU (the bf16 op overwrites). Outputs are poisoned with bf16 NaN (0x7fc0)
// before each GPU run, and each GPU call runs twice and must repeat its bits.
// Errors: whole-tensor relative L2 (tol 1e-2) for out, dq, dk, dv; lse max |gpu - ref| / max(|ref|, 1)
// (tol 1e-4); select_bf16's lists must equal the CPU's (err = differing entries, tol 0).
// The backward runs as the split kernels, the fused backward with ordered adds (deterministic: two
// runs, and a run with all (b, kv head)s in one accumulator chunk, must give the same bits) and
// with fp32 atomics (same tolerance, no bitwise check) (rows
// sparse_bf16_bwd{,_fused,_fused_var,_fused_atomic}.*; one-row blocks: split only).
// On failure the first bad element is printed: (b, t, h, d), both values, its query block / region.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../core/attention.h"
#include "../../core/common.h"
#include "../../cuda/attn_bf16.h"
#include "../../cuda/bf16.h"
#include "bf16_check.h"
#include "gpu_check.h"

// cuda/sparse_bf16.cu's test hook: which split backward kernels run (bit 0 dQ, bit 1 dK/dV; 3
// both, the default), bit 2 (4) per-row CTAs for one-row blocks instead of the union, bit 5 (32)
// the split backward, bit 6 (64) the fused one (neither: MSLAB_SPARSE_BF16_BWD)
void sparse_bf16_tune(int flags);

// device copy of n bf16 values (16 bytes of slack past the end)
static uint16_t *dev_bits(const uint16_t *h, size_t n) {
    uint16_t *d = gpu->alloc(n * 2 + 16);
    gpu->upload(d, h, n * 2);
    return d;
}
static float *down32(const float *d, size_t n) {
    float *x = malloc(n * 4 + 4);
    gpu->download(x, d, n * 4);
    return x;
}

static size_t int_diff_bf16(const int *a, const int *b, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += a[i] != b[i];
    return k;
}

static double lse_err(const float *a, const float *ref, size_t n) {
    double w = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - ref[i]) / fmax(fabs((double)ref[i]), 1.0);
        if (isinf(ref[i]) && a[i] == ref[i]) e = 0;
        if (!(e <= w)) w = e;
    }
    return w;
}

// First element of a [B, T, NH, D] tensor off by more than 10x the tolerance in units of the
// tensor's RMS (or NaN), and the worst one.
static void diag(const char *what, const float *g, const float *r, int B, int T, int NH, int D,
                 double tol, int blk, const char *blkname) {
    size_t n = (size_t)B * T * NH * D;
    double ss = 0;
    for (size_t i = 0; i < n; i++) ss += (double)r[i] * r[i];
    double rms = n ? sqrt(ss / n) : 0, worst = -1;
    size_t first = n, wi = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)g[i] - r[i]) / (rms > 0 ? rms : 1);
        if (!(e <= 10 * tol) && first == n) first = i;
        if (!(e <= worst)) worst = e, wi = i;
    }
    size_t idx[2] = {first, wi};
    const char *tag[2] = {"first bad", "worst"};
    for (int k = 0; k < 2; k++) {
        size_t i = idx[k];
        if (i >= n) continue;
        int d = (int)(i % D), hh = (int)((i / D) % NH), t = (int)((i / D / NH) % T);
        int b = (int)(i / D / NH / T);
        printf("    %s %s: (b=%d, t=%d, h=%d, d=%d) gpu %.6g ref %.6g (rms %.3g) %s %d\n", what,
               tag[k], b, t, hh, d, g[i], r[i], rms, blkname, t / blk);
    }
    // rows of the tensor with any bad element: count
    size_t bad_rows = 0;
    for (size_t row = 0; row < n / D; row++) {
        int bad = 0;
        for (int d = 0; d < D; d++) {
            size_t i = row * D + d;
            if (!(fabs((double)g[i] - r[i]) <= 10 * tol * (rms > 0 ? rms : 1))) bad = 1;
        }
        bad_rows += bad;
    }
    printf("    %s: %zu of %zu rows bad\n", what, bad_rows, n / D);
}

static void chk(const char *op, const char *shape, const float *g, const float *ref, size_t n,
                int B, int T, int NH, int D, int blk, const char *blkname, int det) {
    double e = rel_l2(g, ref, n);
    report(op, shape, e, 1e-2, det);
    if (!(e <= 1e-2)) diag(op, g, ref, B, T, NH, D, 1e-2, blk, blkname);
}

static void t_sb(const char *name, AttnConfig cfg, int B, int T, int H, int KVH, int D) {
    if (!wanted("sparse_bf16") && !wanted("select_bf16")) return;
    // select_bf16's timing rows, or its shapes named by MSLAB_SELECT_ONLY (these rows: "lists")
    if (getenv("MSLAB_SELECT_PERF") || getenv("MSLAB_SELECT_PERF_BLK")) return;
    if (getenv("MSLAB_SELECT_ONLY") && !strstr("select_bf16.lists", getenv("MSLAB_SELECT_ONLY"))) return;
    AttnDims d;
    MS_ASSERT(attn_config_check(&cfg, "attention") == 0, "%s", ms_error());
    MS_ASSERT(attn_dims(&cfg, T, &d) == 0, "%s", ms_error());
    char shape[128];
    snprintf(shape, sizeof shape, "%s T=%d H=%d/%d D=%d B=%d%s", name, T, H, KVH, D, B,
             d.reindex ? " pos" : "");
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D, nl = (size_t)B * H * T;
    size_t ni = (size_t)B * H * d.nblk * d.width, nb = (size_t)B * H * d.nblk;
    uint16_t *qb, *kb, *vb;
    float *q, *k, *v;
    rand_bf16(&qb, &q, nq), rand_bf16(&kb, &k, nk), rand_bf16(&vb, &v, nk);
    float *invf = malloc(sizeof(float) * D);
    for (int i = 0; i < D / 2; i++) invf[i] = (float)pow(10000.0, -2.0 * i / D);
    AttnIndex ic = {d.qblock, d.nblk, d.region, d.width, d.window, NULL, NULL, NULL, invf, ROPE_HALVES};
    ic.idx = malloc(sizeof(int) * ni);
    if (d.reindex) ic.kpos = malloc(sizeof(int) * ni), ic.qpos = malloc(sizeof(int) * nb);
    cpu->attention_select(&ic, &cfg, q, k, B, T, H, KVH, D);

    uint16_t *d_q = dev_bits(qb, nq), *d_k = dev_bits(kb, nk), *d_v = dev_bits(vb, nk);
    float *d_inv = gpu->alloc(sizeof(float) * D);
    gpu->upload(d_inv, invf, sizeof(float) * (D / 2));
    AttnIndex ig = ic;
    ig.inv_freq = d_inv;
    ig.idx = gpu->alloc(sizeof(int) * ni);
    ig.kpos = d.reindex ? gpu->alloc(sizeof(int) * ni) : NULL;
    ig.qpos = d.reindex ? gpu->alloc(sizeof(int) * nb) : NULL;

    if (wanted("select_bf16")) {
        int *h1 = malloc(sizeof(int) * ni), *h2 = malloc(sizeof(int) * ni);
        int *fill = malloc(sizeof(int) * ni);
        for (size_t i = 0; i < ni; i++) fill[i] = 0x7eadbeef;
        size_t bad = 0, again = 0;
        int rc = 0;
        for (int rep = 0; rep < 2; rep++) {
            gpu->upload(ig.idx, fill, sizeof(int) * ni);
            rc |= select_bf16(&ig, &cfg, d_q, d_k, B, T, H, KVH, D);
            gpu->download(rep ? h2 : h1, ig.idx, sizeof(int) * ni);
        }
        if (rc) {
            printf("    select_bf16 returned -1\n");
            bad = ni;
        } else {
            bad += list_diff(h1, ic.idx, ni, d.width, d.nblk, H);
            again += int_diff_bf16(h1, h2, ni);
            if (d.reindex) {
                gpu->download(h1, ig.kpos, sizeof(int) * ni);
                bad += int_diff_bf16(h1, ic.kpos, ni);
                gpu->download(h1, ig.qpos, sizeof(int) * nb);
                bad += int_diff_bf16(h1, ic.qpos, nb);
            }
        }
        report("select_bf16.lists", shape, (double)bad, 0, again ? 0 : 1);
        free(h1), free(h2), free(fill);
    }

    if (wanted("sparse_bf16")) {
        gpu->upload(ig.idx, ic.idx, sizeof(int) * ni); // the CPU's list on both sides
        if (d.reindex) {
            gpu->upload(ig.kpos, ic.kpos, sizeof(int) * ni);
            gpu->upload(ig.qpos, ic.qpos, sizeof(int) * nb);
        }
        uint16_t *d_out = gpu->alloc(nq * 2 + 16);
        float *d_lse = gpu->alloc(nl * 4 + 16);
        if (d.reindex) { // positions inside: not handled, must decline having launched nothing
            poison16(d_out, nq);
            int rc = sparse_bf16_fwd(d_out, d_lse, d_q, d_k, d_v, &ig, B, T, H, KVH, D);
            uint16_t *ob;
            float *o = down16(d_out, nq, &ob);
            size_t touched = 0;
            for (size_t i = 0; i < nq; i++) touched += ob[i] != BF16_NAN;
            report("sparse_bf16_fwd.pos_declines", shape, rc == -1 ? (double)touched : 1.0, 0, -1);
            uint16_t *dq = gpu->alloc(nq * 2 + 16), *dk = gpu->alloc(nk * 2 + 16),
                     *dv = gpu->alloc(nk * 2 + 16);
            rc = sparse_bf16_bwd(dq, dk, dv, d_out, d_out, d_lse, d_q, d_k, d_v, &ig, B, T, H, KVH, D);
            report("sparse_bf16_bwd.pos_declines", shape, rc == -1 ? 0.0 : 1.0, 0, -1);
            gpu->free(dq), gpu->free(dk), gpu->free(dv);
            free(o), free(ob);
        } else {
            float *out = calloc(nq, sizeof(float)), *lse = calloc(nl, sizeof(float));
            cpu->sparse_attention_fwd(out, lse, q, k, v, &ic, B, T, H, KVH, D);
            // variant 1 (one-row blocks, moba): per-row CTAs instead of the union (the fallback)
            for (int variant = 0; variant < (d.qblock == 1 ? 2 : 1); variant++) {
                sparse_bf16_tune(variant ? 3 | 4 : 3);
                const char *on = variant ? "sparse_bf16_fwd_alt.out" : "sparse_bf16_fwd.out";
                const char *ln = variant ? "sparse_bf16_fwd_alt.lse" : "sparse_bf16_fwd.lse";
                float *o[2], *l[2];
                uint16_t *ob[2];
                int rc = 0;
                for (int rep = 0; rep < 2; rep++) {
                    poison16(d_out, nq), poison32(d_lse, nl);
                    rc |= sparse_bf16_fwd(d_out, d_lse, d_q, d_k, d_v, &ig, B, T, H, KVH, D);
                    o[rep] = down16(d_out, nq, &ob[rep]), l[rep] = down32(d_lse, nl);
                }
                if (rc) printf("    sparse_bf16_fwd returned -1\n");
                int det_o = !memcmp(ob[0], ob[1], nq * 2), det_l = !memcmp(l[0], l[1], nl * 4);
                chk(on, shape, o[0], out, nq, B, T, H, D, d.qblock, "block", det_o);
                double el = lse_err(l[0], lse, nl);
                report(ln, shape, el, 1e-4, det_l);
                if (!(el <= 1e-4)) {
                    for (size_t i = 0; i < nl; i++) {
                        double e = fabs((double)l[0][i] - lse[i]) / fmax(fabs((double)lse[i]), 1.0);
                        if (!(e <= 1e-4) && !(isinf(lse[i]) && l[0][i] == lse[i])) {
                            int t = (int)(i % T), h = (int)((i / T) % H), b = (int)(i / T / H);
                            printf("    lse first bad: (b=%d, h=%d, t=%d) gpu %.7g ref %.7g block %d\n",
                                   b, h, t, l[0][i], lse[i], t / d.qblock);
                            break;
                        }
                    }
                }
                for (int r = 0; r < 2; r++) free(o[r]), free(l[r]), free(ob[r]);
            }
            sparse_bf16_tune(3);

            // backward on the rounded forward output and the CPU's lse
            uint16_t *dyb, *obr = malloc(nq * 2);
            float *dy, *outr = malloc(nq * 4);
            rand_bf16(&dyb, &dy, nq);
            for (size_t i = 0; i < nq; i++) obr[i] = bf16_from_f32(out[i]), outr[i] = bf16_to_f32(obr[i]);
            float *dqr = calloc(nq, 4), *dkr = calloc(nk, 4), *dvr = calloc(nk, 4);
            cpu->sparse_attention_bwd(dqr, dkr, dvr, dy, outr, lse, q, k, v, &ic, B, T, H, KVH, D);
            uint16_t *d_dy = dev_bits(dyb, nq);
            gpu->upload(d_out, obr, nq * 2);
            gpu->upload(d_lse, lse, nl * 4);
            uint16_t *d_dq = gpu->alloc(nq * 2 + 16), *d_dk = gpu->alloc(nk * 2 + 16),
                     *d_dv = gpu->alloc(nk * 2 + 16);
            // variants: 0 the split kernels; 1 the fused backward, ordered (deterministic) adds;
            // 2 fused, ordered, the first run with all (b, kv head)s in one accumulator chunk
            // (else the default budget: several chunks at these shapes), the second run with the
            // default: the same bits; 3 fused, fp32 atomics (not bitwise repeatable). One-row
            // blocks: no fused path.
            static const char *vn[4][3] = {
                {"sparse_bf16_bwd.dq", "sparse_bf16_bwd.dk", "sparse_bf16_bwd.dv"},
                {"sparse_bf16_bwd_fused.dq", "sparse_bf16_bwd_fused.dk", "sparse_bf16_bwd_fused.dv"},
                {"sparse_bf16_bwd_fused_var.dq", "sparse_bf16_bwd_fused_var.dk",
                 "sparse_bf16_bwd_fused_var.dv"},
                {"sparse_bf16_bwd_fused_atomic.dq", "sparse_bf16_bwd_fused_atomic.dk",
                 "sparse_bf16_bwd_fused_atomic.dv"}};
            for (int var = 0; var < (d.qblock > 1 ? 4 : 1); var++) {
                sparse_bf16_tune(var ? 3 | 64 : 3 | 32);
                int old_det = attn_bf16_set_deterministic(var != 3);
                float *g[2][3];
                uint16_t *gb[2][3];
                int rc = 0;
                for (int rep = 0; rep < 2; rep++) {
                    if (var == 2 && rep == 0) setenv("MSLAB_SPARSE_BF16_ACC_MB", "4096", 1);
                    poison16(d_dq, nq), poison16(d_dk, nk), poison16(d_dv, nk);
                    rc |= sparse_bf16_bwd(d_dq, d_dk, d_dv, d_dy, d_out, d_lse, d_q, d_k, d_v, &ig,
                                          B, T, H, KVH, D);
                    unsetenv("MSLAB_SPARSE_BF16_ACC_MB");
                    g[rep][0] = down16(d_dq, nq, &gb[rep][0]);
                    g[rep][1] = down16(d_dk, nk, &gb[rep][1]);
                    g[rep][2] = down16(d_dv, nk, &gb[rep][2]);
                }
                attn_bf16_set_deterministic(old_det);
                if (rc) printf("    sparse_bf16_bwd returned -1\n");
                int rq = !memcmp(gb[0][0], gb[1][0], nq * 2), rk = !memcmp(gb[0][1], gb[1][1], nk * 2),
                    rv = !memcmp(gb[0][2], gb[1][2], nk * 2);
                if (var == 3) rq = rk = rv = -1; // atomics: same tolerance, no bitwise repeat
                chk(vn[var][0], shape, g[0][0], dqr, nq, B, T, H, D, d.qblock, "block", rq);
                chk(vn[var][1], shape, g[0][1], dkr, nk, B, T, KVH, D, d.region, "region", rk);
                chk(vn[var][2], shape, g[0][2], dvr, nk, B, T, KVH, D, d.region, "region", rv);
                for (int r = 0; r < 2; r++)
                    for (int i = 0; i < 3; i++) free(g[r][i]), free(gb[r][i]);
            }
            sparse_bf16_tune(3);
            gpu->free(d_dy), gpu->free(d_dq), gpu->free(d_dk), gpu->free(d_dv);
            free(out), free(lse), free(dy), free(dyb), free(obr), free(outr), free(dqr), free(dkr),
                free(dvr);
        }
        gpu->free(d_out), gpu->free(d_lse);
    }
    gpu->free(d_q), gpu->free(d_k), gpu->free(d_v), gpu->free(d_inv), gpu->free(ig.idx);
    if (ig.kpos) gpu->free(ig.kpos), gpu->free(ig.qpos);
    free(ic.idx), free(ic.kpos), free(ic.qpos), free(q), free(k), free(v), free(qb), free(kb),
        free(vb), free(invf);
}

static AttnConfig ms_small(int w, int top, int merge, int prefix) {
    AttnConfig c = attn_config_default(ATTN_MS);
    c.w = w, c.top = top, c.merge = merge, c.prefix = prefix;
    return c;
}

// ---- timing rows (information, always "ok"): the paper config at B=1 H=32 D=128 ----

typedef struct {
    AttnIndex ix;
    AttnConfig cfg;
    uint16_t *q, *k, *v, *o, *dy, *dq, *dk, *dv;
    float *lse;
    int T, H, D;
} PerfJob;
static void pj_sync(PerfJob *j) {
    float x;
    gpu->download(&x, j->lse, 4);
}
// ms per call of what (0 select, 1 fwd, 2 bwd), median-free mean of reps after one warm-up
static double pj_time(PerfJob *j, int what, int reps) {
    double t0 = 0;
    for (int r = -1; r < reps; r++) {
        if (r == 0) pj_sync(j), t0 = now_s();
        if (what == 0) select_bf16(&j->ix, &j->cfg, j->q, j->k, 1, j->T, j->H, j->H, j->D);
        if (what == 1) sparse_bf16_fwd(j->o, j->lse, j->q, j->k, j->v, &j->ix, 1, j->T, j->H, j->H, j->D);
        if (what == 2)
            sparse_bf16_bwd(j->dq, j->dk, j->dv, j->dy, j->o, j->lse, j->q, j->k, j->v, &j->ix, 1,
                            j->T, j->H, j->H, j->D);
    }
    pj_sync(j);
    return (now_s() - t0) / reps * 1e3;
}

static void t_sb_perf(const char *name, AttnConfig cfg, int T) {
    if (!wanted("sparse_bf16_perf")) return;
    int H = 32, D = 128;
    AttnDims d;
    MS_ASSERT(attn_dims(&cfg, T, &d) == 0, "%s", ms_error());
    size_t nq = (size_t)T * H * D, ni = (size_t)H * d.nblk * d.width;
    PerfJob j;
    memset(&j, 0, sizeof j);
    j.cfg = cfg, j.T = T, j.H = H, j.D = D;
    uint16_t *hb = perf_qkv(nq, &j.q, &j.k, &j.v);
    j.dy = dev_bits(hb, nq);
    j.o = gpu->alloc(nq * 2), j.dq = gpu->alloc(nq * 2), j.dk = gpu->alloc(nq * 2);
    j.dv = gpu->alloc(nq * 2), j.lse = gpu->alloc((size_t)H * T * 4);
    AttnIndex ix = {d.qblock, d.nblk, d.region, d.width, d.window, NULL, NULL, NULL, NULL, 0};
    ix.idx = gpu->alloc(ni * 4);
    j.ix = ix;
    int reps = T >= 32768 ? 2 : 3;
    double ts = pj_time(&j, 0, reps);
    int *hidx = malloc(ni * 4);
    gpu->download(hidx, j.ix.idx, ni * 4);
    AttnStats st;
    attn_count(&cfg, &d, hidx, H, T, &st);
    free(hidx);
    double f = 4.0 * st.pairs * D; // forward FLOPs
    double tf2 = pj_time(&j, 1, reps);
    double tb = pj_time(&j, 2, reps);
    sparse_bf16_tune(1 | 32);
    double tdq = pj_time(&j, 2, reps);
    sparse_bf16_tune(2 | 32);
    double tdkv = pj_time(&j, 2, reps);
    sparse_bf16_tune(0 | 32);
    double tpre = pj_time(&j, 2, reps); // Di + inverse list only
    sparse_bf16_tune(3 | 64);
    double tfu = pj_time(&j, 2, reps); // the fused backward, ordered adds (default mode)
    int old_det = attn_bf16_set_deterministic(0);
    double tfua = pj_time(&j, 2, reps); // the fused backward, fp32 atomics
    attn_bf16_set_deterministic(old_det);
    sparse_bf16_tune(3 | 32);
    double tsplit = pj_time(&j, 2, reps);
    sparse_bf16_tune(3);
    char shape[160];
    snprintf(shape, sizeof shape, "%s T=%d: sel %.2f fwd %.2f bwd %.2f ms", name, T, ts, tf2, tb);
    printf("    (info sparse_bf16_perf: %s)\n", shape); // timing, not a check
    printf("    %s T=%d H=32 D=128: pairs %.4g (density %.4f); select %.3f ms; fwd %.3f ms (%.1f "
           "TFLOP/s); bwd %.3f ms (%.1f TFLOP/s at 2.5x); split bwd parts: pre (Di, inverse "
           "list) %.3f, +dQ %.3f, +dK/dV %.3f; total sel+fwd+bwd %.3f ms\n",
           name, T, st.pairs, st.pairs / st.causal_pairs, ts, tf2, f / tf2 * 1e-9, tb,
           2.5 * f / tb * 1e-9, tpre, tdq, tdkv, ts + tf2 + tb);
    printf("    %s T=%d: bwd split %.3f ms, fused ordered %.3f ms (%.1f TFLOP/s at 2.5x), fused "
           "atomic %.3f ms (%.1f)\n",
           name, T, tsplit, tfu, 2.5 * f / tfu * 1e-9, tfua, 2.5 * f / tfua * 1e-9);
    free(hb);
    gpu->free(j.q), gpu->free(j.k), gpu->free(j.v), gpu->free(j.dy), gpu->free(j.o);
    gpu->free(j.dq), gpu->free(j.dk), gpu->free(j.dv), gpu->free(j.lse), gpu->free(j.ix.idx);
}

void t_sparse_bf16_all(void) {
    // filter sparse_bf16_perf: the timing rows alone
    if (!wanted("sparse_bf16") && !wanted("select_bf16") && !wanted("sparse_bf16_perf")) return;
    AttnConfig ms = ms_small(16, 32, 8, -1); // prefix top * w = 512, groups of 128 rows
    t_sb("ms", ms, 1, 1000, 8, 2, 64);
    t_sb("ms", ms, 1, 1000, 8, 2, 128);
    AttnConfig s = ms_small(8, 8, 2, 16); // partial groups and regions
    t_sb("ms w8", s, 2, 203, 4, 2, 64);
    t_sb("ms w8", s, 1, 150, 4, 4, 128);
    AttnConfig mo = attn_config_default(ATTN_MOBA);
    mo.block = 64, mo.top = 4;
    t_sb("moba b64 top4", mo, 1, 1000, 8, 2, 64);
    mo.block = 128, mo.top = 3;
    t_sb("moba b128 top3", mo, 1, 1000, 4, 2, 128);
    AttnConfig wi = attn_config_default(ATTN_WINDOW);
    wi.window = 100;
    t_sb("window 100", wi, 1, 1000, 8, 2, 64);
    AttnConfig s2 = attn_config_default(ATTN_S2);
    s2.group = 128, s2.ratio = 0;
    t_sb("s2 g128", s2, 1, 1000, 8, 2, 128);
    AttnConfig msp = ms;
    msp.positions = POS_REINDEXED;
    t_sb("ms", msp, 1, 1000, 8, 2, 64); // positions inside: -1
    AttnConfig m1p = ms_small(128, 3, 1, 0); // merge 1 (cuda/select_blocks.cu): kpos / qpos too
    m1p.positions = POS_REINDEXED;
    t_sb("ms w128 top3 m1", m1p, 1, 1000, 8, 2, 64);
    if (!quick) {
        t_sb("ms", ms, 1, 4096, 8, 2, 64);
        t_sb("ms", ms, 1, 4096, 8, 2, 128);
        AttnConfig big = ms_small(16, 64, 16, -1); // qblock 256, width 64 (4 tiles per list)
        t_sb("ms w16 top64 m16", big, 2, 3000, 4, 1, 128);
        wi.window = 512;
        t_sb("window 512", wi, 1, 4096, 4, 2, 128);
        mo.block = 128, mo.top = 4;
        t_sb("moba b128 top4", mo, 1, 4096, 4, 4, 64);
        AttnConfig paper = attn_config_default(ATTN_MS); // w 16, top 512, merge 128
        paper.w = 16, paper.top = 512, paper.merge = 128, paper.prefix = -1;
        t_sb_perf("ms paper", paper, 16384);
        t_sb_perf("ms paper", paper, 32768);
        AttnConfig mb = attn_config_default(ATTN_MOBA);
        mb.block = 128, mb.top = 16384 / 128 / 16;
        t_sb_perf("moba b128", mb, 16384);
        AttnConfig mblk = ms_small(128, 32768 / 128 / 16 + 1, 1, 0); // the bench's moba-blk
        t_sb_perf("moba-blk", mblk, 32768);
    }
}
