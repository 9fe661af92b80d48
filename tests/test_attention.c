// test_attention.c: the sparse attention kinds (core/attention.*, the CPU select and sparse ops).
//
// Every sparse kind is checked against dense softmax attention under the equivalent explicit mask,
// computed here in double from the definitions, forward (out, lse) and backward (dq, dk, dv),
// plus finite differences of the op itself with the index list held fixed (no gradient flows
// through the selection). Masks: window, s2 and moba from their definitions (moba's gate
// recomputed here); ms from its index list, whose selection is checked independently (a Lua
// re-implementation in test_attention_lua.c, and the structure checks below). Shapes include
// lengths that are multiples of neither w, G nor P, grouped-query heads, batch > 1 and exact ties.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/attention.h"
#include "../core/common.h"
#include "../core/model.h"
#include "../core/ops.h"
#include "test.h"

static const Backend *be(void) { return backend_cpu(); }

typedef struct {
    int B, T, H, KVH, D;
} Shape;

static float *randv(size_t n, Rng *r, float s) {
    float *x = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) x[i] = s * rng_normal(r);
    return x;
}

// An index list on the host, shaped for cfg at length T.
typedef struct {
    AttnDims d;
    AttnIndex ix;
    int *mem;
} Plan;

static void plan_make(Plan *p, const AttnConfig *cfg, Shape s, const float *q, const float *k,
                      const float *inv_freq, int style) {
    CHECK(attn_dims(cfg, s.T, &p->d) == 0);
    size_t n = (size_t)s.B * s.H * p->d.nblk * p->d.width, nq = (size_t)s.B * s.H * p->d.nblk;
    p->mem = calloc(2 * n + nq + 1, sizeof(int));
    p->ix = (AttnIndex){p->d.qblock, p->d.nblk, p->d.region, p->d.width, p->d.window, p->mem,
                        p->d.reindex ? p->mem + n : NULL, p->d.reindex ? p->mem + 2 * n : NULL,
                        inv_freq, style};
    be()->attention_select(&p->ix, cfg, q, k, s.B, s.T, s.H, s.KVH, s.D);
}

// mask[b,h,t,j] (and, with positions inside, kpos of key j for row t) from the list.
static char *mask_of_plan(const Plan *p, Shape s, int **kp_out, int **qp_out) {
    size_t TT = (size_t)s.T * s.T;
    char *m = calloc((size_t)s.B * s.H * TT, 1);
    int *kp = p->ix.kpos ? calloc((size_t)s.B * s.H * TT, sizeof(int)) : NULL;
    int *qp = p->ix.kpos ? calloc((size_t)s.B * s.H * s.T, sizeof(int)) : NULL;
    const AttnIndex *ix = &p->ix;
    for (int b = 0; b < s.B; b++)
        for (int h = 0; h < s.H; h++)
            for (int c = 0; c < ix->nblk; c++) {
                size_t li = ((size_t)b * s.H + h) * ix->nblk + c;
                const int *list = ix->idx + li * ix->width;
                for (int t = c * ix->qblock; t < (c + 1) * ix->qblock && t < s.T; t++) {
                    if (qp) qp[((size_t)b * s.H + h) * s.T + t] = ix->qpos[li] + t - c * ix->qblock;
                    for (int sl = 0; sl < ix->width && list[sl] >= 0; sl++)
                        for (int j = list[sl] * ix->region;
                             j < (list[sl] + 1) * ix->region && j < s.T; j++) {
                            if (j > t || (ix->window && j <= t - ix->window)) continue;
                            size_t at = ((size_t)b * s.H + h) * TT + (size_t)t * s.T + j;
                            CHECK(!m[at]); // a key listed twice for one row
                            m[at] = 1;
                            if (kp) kp[at] = ix->kpos[li * ix->width + sl] + j - list[sl] * ix->region;
                        }
                }
            }
    *kp_out = kp;
    *qp_out = qp;
    return m;
}

static void rot_d(double *x, int D, double pos, const float *inv_freq, int style, int sign) {
    int half = D / 2, stride = style == ROPE_INTERLEAVED ? 2 : 1;
    int boff = style == ROPE_INTERLEAVED ? 1 : half;
    for (int i = 0; i < half; i++) {
        double ang = pos * inv_freq[i], c = cos(ang), sn = sign * sin(ang);
        double a = x[i * stride], b = x[i * stride + boff];
        x[i * stride] = a * c - b * sn;
        x[i * stride + boff] = a * sn + b * c;
    }
}

// Dense softmax attention under mask, in double, forward and backward (dout may be NULL).
// With qp/kp (positions inside) q and k are rotated per (row, key) before the dot product.
typedef struct {
    double *out, *lse, *dq, *dk, *dv;
} Ref;

static void ref_attention(Ref *r, Shape s, const float *q, const float *k, const float *v,
                          const float *dout, const char *mask, const int *qp, const int *kp,
                          const float *inv_freq, int style) {
    int B = s.B, T = s.T, H = s.H, KVH = s.KVH, D = s.D, G = H / KVH;
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D, TT = (size_t)T * T;
    r->out = calloc(nq, sizeof(double)), r->lse = calloc((size_t)B * H * T, sizeof(double));
    r->dq = calloc(nq, sizeof(double)), r->dk = calloc(nk, sizeof(double));
    r->dv = calloc(nk, sizeof(double));
    double scale = 1.0 / sqrt(D), *p = calloc(T, sizeof(double)), *dp = calloc(T, sizeof(double));
    double *kr = calloc((size_t)T * D, sizeof(double)), qv[512], g[512];
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < T; t++) {
                const char *mrow = mask + ((size_t)b * H + h) * TT + (size_t)t * T;
                const float *qt = q + (((size_t)b * T + t) * H + h) * D;
                for (int x = 0; x < D; x++) qv[x] = qt[x];
                int pq = qp ? qp[((size_t)b * H + h) * T + t] : 0;
                if (qp) rot_d(qv, D, pq, inv_freq, style, 1);
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j < T; j++) {
                    if (!mrow[j]) continue;
                    const float *kj = k + (((size_t)b * T + j) * KVH + h / G) * D;
                    double *kk = kr + (size_t)j * D;
                    for (int x = 0; x < D; x++) kk[x] = kj[x];
                    if (kp) rot_d(kk, D, kp[((size_t)b * H + h) * TT + (size_t)t * T + j], inv_freq, style, 1);
                    double d = 0;
                    for (int x = 0; x < D; x++) d += qv[x] * kk[x];
                    p[j] = d * scale;
                    mx = fmax(mx, p[j]);
                }
                for (int j = 0; j < T; j++)
                    if (mrow[j]) sum += (p[j] = exp(p[j] - mx));
                double *o = r->out + (((size_t)b * T + t) * H + h) * D;
                for (int j = 0; j < T; j++) {
                    if (!mrow[j]) continue;
                    p[j] /= sum;
                    const float *vj = v + (((size_t)b * T + j) * KVH + h / G) * D;
                    for (int x = 0; x < D; x++) o[x] += p[j] * vj[x];
                }
                r->lse[((size_t)b * H + h) * T + t] = mx + log(sum);
                if (!dout) continue;
                const float *gt = dout + (((size_t)b * T + t) * H + h) * D;
                double pdp = 0;
                for (int j = 0; j < T; j++) {
                    if (!mrow[j]) continue;
                    const float *vj = v + (((size_t)b * T + j) * KVH + h / G) * D;
                    dp[j] = 0;
                    for (int x = 0; x < D; x++) dp[j] += (double)gt[x] * vj[x];
                    pdp += p[j] * dp[j];
                }
                for (int x = 0; x < D; x++) g[x] = 0;
                for (int j = 0; j < T; j++) {
                    if (!mrow[j]) continue;
                    size_t kj = (((size_t)b * T + j) * KVH + h / G) * D;
                    double ds = p[j] * (dp[j] - pdp), gk[512];
                    for (int x = 0; x < D; x++) {
                        g[x] += scale * ds * kr[(size_t)j * D + x];
                        gk[x] = scale * ds * qv[x];
                        r->dv[kj + x] += p[j] * gt[x];
                    }
                    if (kp) rot_d(gk, D, kp[((size_t)b * H + h) * TT + (size_t)t * T + j], inv_freq, style, -1);
                    for (int x = 0; x < D; x++) r->dk[kj + x] += gk[x];
                }
                if (qp) rot_d(g, D, pq, inv_freq, style, -1);
                for (int x = 0; x < D; x++) r->dq[(((size_t)b * T + t) * H + h) * D + x] += g[x];
            }
    free(p), free(dp), free(kr);
}

static void ref_free(Ref *r) { free(r->out), free(r->lse), free(r->dq), free(r->dk), free(r->dv); }


static double maxabs_d(const double *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(x[i]));
    return m;
}

// f = sum(out .* R) through the sparse op with a fixed list.
typedef struct {
    Shape s;
    const AttnIndex *ix;
    float *q, *k, *v, *out, *lse;
    const float *R;
} FdCtx;

static double fd_f(FdCtx *c) {
    be()->sparse_attention_fwd(c->out, c->lse, c->q, c->k, c->v, c->ix, c->s.B, c->s.T, c->s.H,
                               c->s.KVH, c->s.D);
    double f = 0;
    size_t n = (size_t)c->s.B * c->s.T * c->s.H * c->s.D;
    for (size_t i = 0; i < n; i++) f += (double)c->out[i] * c->R[i];
    return f;
}

// Directional finite differences of x against the analytic gradient g.
static void fd_check(const char *what, FdCtx *c, float *x, const float *g, size_t n, Rng *r) {
    float *x0 = malloc(n * sizeof(float));
    memcpy(x0, x, n * sizeof(float));
    for (int dir = 0; dir < 3; dir++) {
        float *u = randv(n, r, 1);
        double an = 0, sc = 0;
        for (size_t i = 0; i < n; i++) x[i] = x0[i] + 1e-3f * u[i];
        double fp = fd_f(c);
        for (size_t i = 0; i < n; i++) {
            float xm = x0[i] - 1e-3f * u[i];
            double dx = (double)x[i] - xm;
            an += g[i] * dx, sc += fabs(g[i] * dx);
            x[i] = xm;
        }
        double fm = fd_f(c);
        memcpy(x, x0, n * sizeof(float));
        int before = test_failed_checks;
        CHECK_REL(an, fp - fm, 3e-3, 1e-2 * sc);
        if (test_failed_checks != before) fprintf(stderr, "    ^ finite differences of %s\n", what);
        free(u);
    }
    fd_f(c); // restore out/lse
    free(x0);
}

// The sparse op on the plan of cfg against the masked-dense reference. ref_mask: the mask from
// the kind's definition (NULL: the plan's own). Returns the plan (caller frees mem).
typedef void (*MaskDef)(char *mask, const AttnConfig *cfg, Shape s, const float *q,
                        const float *k);

static void check_kind(const char *what, const AttnConfig *cfg, Shape s, uint64_t seed,
                       MaskDef def, int ties, int fd) {
    int before = test_failed_checks;
    Rng r;
    rng_seed(&r, seed);
    size_t nq = (size_t)s.B * s.T * s.H * s.D, nk = (size_t)s.B * s.T * s.KVH * s.D;
    float *q = randv(nq, &r, 1), *k = randv(nk, &r, 1), *v = randv(nk, &r, 1);
    if (ties) { // every key region a copy of one of three: exact score ties everywhere
        int w = cfg->kind == ATTN_MOBA ? cfg->block : cfg->w;
        for (int b = 0; b < s.B; b++)
            for (int t = w * 3; t < s.T; t++)
                memcpy(k + ((size_t)b * s.T + t) * s.KVH * s.D,
                       k + ((size_t)b * s.T + t % (3 * w)) * s.KVH * s.D,
                       sizeof(float) * s.KVH * s.D);
    }
    float inv[256];
    for (int i = 0; i < s.D / 2; i++) inv[i] = (float)pow(10000.0, -2.0 * i / s.D);
    Plan p;
    plan_make(&p, cfg, s, q, k, inv, ROPE_HALVES);
    int *kp, *qp;
    char *mask = mask_of_plan(&p, s, &kp, &qp);
    if (def) {
        char *m2 = calloc((size_t)s.B * s.H * s.T * s.T, 1);
        def(m2, cfg, s, q, k);
        size_t bad = 0;
        for (size_t i = 0; i < (size_t)s.B * s.H * s.T * s.T; i++) bad += m2[i] != mask[i];
        CHECK(bad == 0);
        if (bad) fprintf(stderr, "    ^ %zu mask entries differ from the definition\n", bad);
        free(mask);
        mask = m2;
    }
    float *out = calloc(nq, sizeof(float)), *lse = calloc((size_t)s.B * s.H * s.T, sizeof(float));
    float *dout = randv(nq, &r, 1), *dq = calloc(nq, sizeof(float)), *dk = calloc(nk, sizeof(float));
    float *dv = calloc(nk, sizeof(float));
    be()->sparse_attention_fwd(out, lse, q, k, v, &p.ix, s.B, s.T, s.H, s.KVH, s.D);
    be()->sparse_attention_bwd(dq, dk, dv, dout, out, lse, q, k, v, &p.ix, s.B, s.T, s.H, s.KVH, s.D);
    Ref ref;
    ref_attention(&ref, s, q, k, v, dout, mask, qp, kp, inv, ROPE_HALVES);
    test_close_to("out", out, ref.out, nq, 1e-5, 1e-5);
    test_close_to("lse", lse, ref.lse, (size_t)s.B * s.H * s.T, 1e-5, 1e-5);
    test_close_to("dq", dq, ref.dq, nq, 1e-5 * fmax(maxabs_d(ref.dq, nq), 0.1), 0);
    test_close_to("dk", dk, ref.dk, nk, 1e-5 * fmax(maxabs_d(ref.dk, nk), 0.1), 0);
    test_close_to("dv", dv, ref.dv, nk, 1e-5 * fmax(maxabs_d(ref.dv, nk), 0.1), 0);
    if (fd) {
        FdCtx c = {s, &p.ix, q, k, v, out, lse, dout};
        fd_check("dq", &c, q, dq, nq, &r);
        fd_check("dk", &c, k, dk, nk, &r);
        fd_check("dv", &c, v, dv, nk, &r);
    }
    if (test_failed_checks != before)
        fprintf(stderr, "    ^ %s: B=%d T=%d H=%d KVH=%d D=%d\n", what, s.B, s.T, s.H, s.KVH, s.D);
    ref_free(&ref);
    free(q), free(k), free(v), free(out), free(lse), free(dout), free(dq), free(dk), free(dv);
    free(mask), free(kp), free(qp), free(p.mem);
}

static AttnConfig ms_cfg(int w, int top, int merge) {
    AttnConfig c = attn_config_default(ATTN_MS);
    c.w = w, c.top = top, c.merge = merge;
    return c;
}

// ---- definitions of the fixed kinds -------------------------------------------------------------

static void window_def(char *m, const AttnConfig *c, Shape s, const float *q, const float *k) {
    for (int bh = 0; bh < s.B * s.H; bh++)
        for (int t = 0; t < s.T; t++)
            for (int j = 0; j < s.T; j++)
                m[((size_t)bh * s.T + t) * s.T + j] = j <= t && j > t - c->window;
}

// LongLoRA: groups of G tokens; heads [H/2, H) see groups shifted by G/2 (causal: no wrap).
static void s2_def(char *m, const AttnConfig *c, Shape s, const float *q, const float *k) {
    int G = c->group;
    for (int b = 0; b < s.B; b++)
        for (int h = 0; h < s.H; h++)
            for (int t = 0; t < s.T; t++)
                for (int j = 0; j <= t; j++) {
                    int sh = h >= s.H / 2 ? G / 2 : 0;
                    int gt = (int)floor((t - sh) / (double)G), gj = (int)floor((j - sh) / (double)G);
                    m[(((size_t)b * s.H + h) * s.T + t) * s.T + j] = gt == gj || (sh && t < sh);
                }
}

// MoBA's naive reference: gate = q_t . mean(k of block); future blocks out, own block in;
// top-k blocks (ties to the lower block), then the causal mask.
static void moba_def(char *m, const AttnConfig *c, Shape s, const float *q, const float *k) {
    int bs = c->block, nb = (s.T + bs - 1) / bs, D = s.D, G = s.H / s.KVH;
    double *gate = malloc(sizeof(double) * nb);
    char *pick = malloc(nb);
    for (int b = 0; b < s.B; b++)
        for (int h = 0; h < s.H; h++)
            for (int t = 0; t < s.T; t++) {
                for (int n = 0; n < nb; n++) {
                    double g = 0;
                    int cnt = 0;
                    for (int x = 0; x < D; x++) {
                        double mean = 0;
                        cnt = 0;
                        for (int j = n * bs; j < (n + 1) * bs && j < s.T; j++, cnt++)
                            mean += k[(((size_t)b * s.T + j) * s.KVH + h / G) * D + x];
                        g += q[(((size_t)b * s.T + t) * s.H + h) * D + x] * (mean / cnt);
                    }
                    gate[n] = (n + 1) * bs <= t ? g : n == t / bs ? INFINITY : -INFINITY;
                    pick[n] = 0;
                }
                for (int kk = 0; kk < c->top && kk < nb; kk++) { // repeated argmax
                    int best = -1;
                    for (int n = 0; n < nb; n++)
                        if (!pick[n] && gate[n] > -INFINITY && (best < 0 || gate[n] > gate[best]))
                            best = n;
                    if (best >= 0) pick[best] = 1;
                }
                for (int j = 0; j <= t; j++)
                    m[(((size_t)b * s.H + h) * s.T + t) * s.T + j] = pick[j / bs];
            }
    free(gate), free(pick);
}

// ================================================================================================

TEST(attention_ms_equals_masked_dense) {
    // T = 61: not a multiple of w (4), G (8) or P (24); GQA; batch 2
    AttnConfig c = ms_cfg(4, 6, 2);
    check_kind("ms", &c, (Shape){2, 61, 4, 2, 16}, 1, NULL, 0, 1);
    check_kind("ms ties", &c, (Shape){2, 61, 4, 2, 16}, 2, NULL, 1, 0);
    // every knob away from its default
    c.pool = POOL_MAX, c.score = SCORE_COSINE, c.order = ORDER_VOTES, c.local_groups = 2;
    check_kind("ms max/cosine/votes/2 local", &c, (Shape){1, 70, 2, 1, 8}, 3, NULL, 0, 0);
    c.pool = POOL_NMEAN, c.score = SCORE_SCALED, c.order = ORDER_SCORE, c.select = SELECT_GROUP;
    c.tail = TAIL_DENSE;
    check_kind("ms nmean/scaled/score/group/tail dense", &c, (Shape){2, 53, 3, 3, 8}, 4, NULL, 0, 0);
    c = ms_cfg(3, 5, 1); // M = 1, partial last region
    c.pool = POOL_FIRST;
    check_kind("ms merge 1", &c, (Shape){1, 50, 2, 2, 12}, 5, NULL, 0, 1);
    c = ms_cfg(4, 0, 2); // ratio
    c.ratio = 0.3, c.top = 0;
    check_kind("ms ratio", &c, (Shape){1, 77, 2, 1, 8}, 6, NULL, 0, 0);
}

TEST(attention_ms_reindexed_positions) {
    AttnConfig c = ms_cfg(4, 6, 2);
    c.positions = POS_REINDEXED;
    check_kind("ms reindexed", &c, (Shape){2, 61, 4, 2, 16}, 7, NULL, 0, 1);
    c.local_groups = 2, c.select_on = SELECT_ON_UNROTATED;
    check_kind("ms reindexed 2 local", &c, (Shape){1, 45, 2, 1, 8}, 8, NULL, 0, 0);
}

TEST(attention_baselines_equal_masked_dense) {
    AttnConfig c = attn_config_default(ATTN_WINDOW);
    c.window = 7;
    check_kind("window", &c, (Shape){2, 40, 4, 2, 8}, 11, window_def, 0, 1);
    c = attn_config_default(ATTN_S2);
    c.group = 16, c.ratio = 0;
    check_kind("s2", &c, (Shape){2, 50, 4, 2, 8}, 12, s2_def, 0, 1);
    check_kind("s2 odd heads", &c, (Shape){1, 37, 3, 1, 8}, 13, s2_def, 0, 0);
    c = attn_config_default(ATTN_MOBA);
    c.block = 8, c.top = 3;
    check_kind("moba", &c, (Shape){2, 45, 4, 2, 8}, 14, moba_def, 0, 1);
    check_kind("moba ties", &c, (Shape){1, 45, 2, 1, 8}, 15, moba_def, 1, 0);
}

// The selection's structure: S distinct selected regions per group, all eligible (j <= g - M for
// some member g: here < the group's first region), the group's own regions last and in order.
TEST(attention_ms_list_structure) {
    Shape s = {2, 100, 4, 2, 8};
    Rng r;
    rng_seed(&r, 21);
    float *q = randv((size_t)s.B * s.T * s.H * s.D, &r, 1);
    float *k = randv((size_t)s.B * s.T * s.KVH * s.D, &r, 1);
    AttnConfig c = ms_cfg(4, 6, 2); // S = 4, G = 8, P = 24
    Plan p;
    plan_make(&p, &c, s, q, k, NULL, 0);
    CHECK(p.d.S == 4 && p.d.P == 24 && p.d.G == 8 && p.d.nblk == 13 && p.d.N == 25);
    for (int bh = 0; bh < s.B * s.H; bh++)
        for (int blk = 0; blk < p.d.nblk; blk++) {
            const int *l = p.ix.idx + ((size_t)bh * p.d.nblk + blk) * p.d.width;
            int g0 = blk * 2, n = 0;
            while (n < p.d.width && l[n] >= 0) n++;
            if (blk < p.d.first) { // dense prefix: 0 .. own
                CHECK(n == g0 + 2);
                for (int i = 0; i < n; i++) CHECK(l[i] == i);
                continue;
            }
            int own = blk == p.d.nblk - 1 ? 1 : 2; // T = 100: the last group has one region
            CHECK(n == 4 + own);
            for (int i = 0; i < 4; i++) {
                CHECK(l[i] >= 0 && l[i] <= g0 + own - 1 - 2); // eligible for its last member
                for (int j = 0; j < i; j++) CHECK(l[i] != l[j]);
            }
            for (int i = 0; i < own; i++) CHECK(l[4 + i] == g0 + i);
        }
    free(q), free(k), free(p.mem);
}

// Degenerate cases. Selecting everything (prefix 0, top above the regions) and ratio 1 equal
// dense causal attention; a length <= P lists every region up to its own; M = 1 lists, per
// region, its own top-S (independent top-S here) and itself.
TEST(attention_ms_degenerate_cases) {
    Shape s = {2, 45, 4, 2, 8};
    Rng r;
    rng_seed(&r, 22);
    size_t nq = (size_t)s.B * s.T * s.H * s.D, nk = (size_t)s.B * s.T * s.KVH * s.D;
    float *q = randv(nq, &r, 1), *k = randv(nk, &r, 1), *v = randv(nk, &r, 1);
    float *o1 = calloc(nq, 4), *o2 = calloc(nq, 4), *l1 = calloc((size_t)s.B * s.H * s.T, 4);
    float *l2 = calloc((size_t)s.B * s.H * s.T, 4);
    be()->attention_fwd(o1, l1, q, k, v, s.B, s.T, s.H, s.KVH, s.D);
    AttnConfig cs[3];
    // selects everything eligible (whole groups: a partial last group lacks the members that
    // would select its most recent regions)
    cs[0] = ms_cfg(3, 100, 3), cs[0].prefix = 0;
    cs[1] = ms_cfg(4, 0, 2), cs[1].ratio = 1.0; // ratio 1: P >= T
    cs[2] = ms_cfg(4, 12, 3);                     // P = 48 >= T = 45
    for (int i = 0; i < 3; i++) {
        Plan p;
        plan_make(&p, &cs[i], s, q, k, NULL, 0);
        be()->sparse_attention_fwd(o2, l2, q, k, v, &p.ix, s.B, s.T, s.H, s.KVH, s.D);
        CHECK(test_max_rel_err(o2, o1, nq, 1.0) < 1e-5); // (keys summed in another order)
        CHECK(test_max_rel_err(l2, l1, (size_t)s.B * s.H * s.T, 1.0) < 1e-5);
        CHECK(p.d.dense == (i > 0));
        free(p.mem);
    }
    // M = 1: group = region; list = top-S of the region's mean q against eligible mean k (j <= g-1)
    AttnConfig c = ms_cfg(5, 4, 1);
    Plan p;
    plan_make(&p, &c, s, q, k, NULL, 0);
    int G = s.H / s.KVH, N = p.d.N, bad = 0;
    for (int b = 0; b < s.B; b++)
        for (int h = 0; h < s.H; h++)
            for (int g = p.d.first; g < N; g++) {
                double qm[8] = {0}, sc[16];
                int taken[16] = {0};
                for (int t = g * 5; t < g * 5 + 5 && t < s.T; t++)
                    for (int x = 0; x < 8; x++) qm[x] += q[(((size_t)b * s.T + t) * s.H + h) * 8 + x];
                for (int j = 0; j < g; j++) {
                    sc[j] = 0;
                    for (int x = 0; x < 8; x++) {
                        double km = 0;
                        for (int t = j * 5; t < j * 5 + 5; t++)
                            km += k[(((size_t)b * s.T + t) * s.KVH + h / G) * 8 + x];
                        sc[j] += qm[x] * km;
                    }
                }
                const int *l = p.ix.idx + (((size_t)b * s.H + h) * p.d.nblk + g) * p.d.width;
                for (int rank = 0; rank < 3; rank++) { // S = 3, by repeated argmax
                    int best = -1;
                    for (int j = 0; j < g; j++)
                        if (!taken[j] && (best < 0 || sc[j] > sc[best])) best = j;
                    taken[best] = 1;
                    bad += l[rank] != best;
                }
                bad += l[3] != g;
            }
    CHECK(bad == 0);
    free(p.mem);
    free(q), free(k), free(v), free(o1), free(o2), free(l1), free(l2);
}

// Selection = per region and M = 1 is one list per region: both paths (ms with merge 1, and the
// group path with one-region groups) agree; the op is deterministic across calls.
TEST(attention_sparse_deterministic) {
    Shape s = {2, 64, 4, 2, 16};
    Rng r;
    rng_seed(&r, 23);
    size_t nq = (size_t)s.B * s.T * s.H * s.D, nk = (size_t)s.B * s.T * s.KVH * s.D;
    float *q = randv(nq, &r, 1), *k = randv(nk, &r, 1), *v = randv(nk, &r, 1), *g = randv(nq, &r, 1);
    AttnConfig c = ms_cfg(4, 6, 2);
    Plan p;
    plan_make(&p, &c, s, q, k, NULL, 0);
    float *o[2], *l[2], *dq[2], *dk[2], *dv[2];
    for (int i = 0; i < 2; i++) {
        o[i] = calloc(nq, 4), l[i] = calloc((size_t)s.B * s.H * s.T, 4);
        dq[i] = calloc(nq, 4), dk[i] = calloc(nk, 4), dv[i] = calloc(nk, 4);
        be()->sparse_attention_fwd(o[i], l[i], q, k, v, &p.ix, s.B, s.T, s.H, s.KVH, s.D);
        be()->sparse_attention_bwd(dq[i], dk[i], dv[i], g, o[i], l[i], q, k, v, &p.ix, s.B, s.T,
                                   s.H, s.KVH, s.D);
    }
    CHECK(!memcmp(o[0], o[1], nq * 4) && !memcmp(dq[0], dq[1], nq * 4));
    CHECK(!memcmp(dk[0], dk[1], nk * 4) && !memcmp(dv[0], dv[1], nk * 4));
    for (int i = 0; i < 2; i++) free(o[i]), free(l[i]), free(dq[i]), free(dk[i]), free(dv[i]);
    free(q), free(k), free(v), free(g), free(p.mem);
}

TEST(attention_config_checks) {
    AttnConfig c = ms_cfg(16, 512, 3);
    CHECK(attn_config_check(&c, "attention") != 0);
    CHECK_STR(ms_error(), "attention.merge (3) must divide attention.top (512)");
    c = ms_cfg(16, 64, 64);
    CHECK(attn_config_check(&c, "attention") != 0);
    CHECK_STR(ms_error(), "attention.top (64) must be greater than attention.merge (64)");
    c = ms_cfg(16, 512, 128), c.prefix = 100;
    CHECK(attn_config_check(&c, "attention.layers[2]") != 0);
    CHECK_STR(ms_error(), "attention.layers[2].w (16) must divide attention.layers[2].prefix (100)");
    c = ms_cfg(-4, 512, 128);
    CHECK(attn_config_check(&c, "attention") != 0);
    CHECK_STR(ms_error(), "attention.w (-4) must be positive");
    c = ms_cfg(16, 0, 128), c.ratio = 1.5;
    CHECK(attn_config_check(&c, "attention") != 0);
    CHECK_STR(ms_error(), "attention.ratio (1.5) must be in (0, 1]");
    c = attn_config_default(ATTN_S2), c.ratio = 0, c.group = 7;
    CHECK(attn_config_check(&c, "attention") != 0);
    CHECK_STR(ms_error(), "attention.group (7) must be a positive even number");
    for (int kd = 0; kd < ATTN_NKINDS; kd++) {
        c = attn_config_default(kd);
        CHECK(attn_config_check(&c, "attention") == 0);
    }
    CHECK(attn_knob_applies(ATTN_MS, "merge") && !attn_knob_applies(ATTN_MOBA, "merge"));
    CHECK(attn_knob_applies(ATTN_MOBA, "top") && !attn_knob_applies(ATTN_MS, "block"));
    char *j = attn_config_json(&(AttnConfig){.kind = ATTN_DENSE});
    CHECK_STR(j, "{\"kind\":\"dense\"}");
    free(j);
}

// Realised cost: dense = every causal pair; ms pairs by hand for one small case.
TEST(attention_stats_by_hand) {
    AttnConfig c = ms_cfg(2, 4, 2); // S = 2, G = 4, P = 8
    AttnDims d;
    attn_dims(&c, 16, &d);
    int *idx = calloc((size_t)d.nblk * d.width, sizeof(int));
    Shape s = {1, 16, 1, 1, 4};
    Rng r;
    rng_seed(&r, 3);
    float *q = randv(64, &r, 1), *k = randv(64, &r, 1);
    Plan p;
    plan_make(&p, &c, s, q, k, NULL, 0);
    AttnStats st;
    attn_count(&c, &p.d, p.ix.idx, 1, 16, &st);
    // rows 0..7: dense (36 pairs); blocks 2, 3: 4 rows x 4 selected keys + 10 local = 26 each
    CHECK_NEAR(st.pairs, 36 + 26 + 26, 0);
    CHECK_NEAR(st.causal_pairs, 136, 0);
    // selection: block 2 members g = 4, 5 see 3 and 4 regions; block 3: g = 6, 7: 5 and 6
    CHECK_NEAR(st.select_dots, 3 + 4 + 5 + 6, 0);
    free(idx), free(q), free(k), free(p.mem);
}

// The model with ms attention: T <= P gives the dense model's loss exactly; per-layer configs;
// eval mode; gradients through a sparse model (positions inside in layer 1, true positions in
// layer 2) along random directions, with the lists frozen (the loss is only piecewise smooth in
// q and k: a step may flip a selection; the gradient is that of the fixed selection).
TEST(attention_model_per_layer) {
    ModelConfig mc = model_config_default();
    mc.dim = 32, mc.layers = 2, mc.heads = 4, mc.kv_heads = 2, mc.ffn = 48, mc.vocab = 64;
    Model m;
    CHECK(model_create(&m, &mc, be()) == 0);
    model_init_weights(&m, 5);
    int B = 2, T = 40, *tok = malloc(sizeof(int) * B * T), *tgt = malloc(sizeof(int) * B * T);
    Rng r;
    rng_seed(&r, 6);
    for (int i = 0; i < B * T; i++) tok[i] = (int)rng_below(&r, 64), tgt[i] = (int)rng_below(&r, 64);
    float dense = model_forward(&m, tok, tgt, B, T);
    AttnConfig cfg[2] = {attn_config_default(ATTN_DENSE), ms_cfg(4, 12, 2)}; // P = 48 > T
    CHECK(model_set_attention(&m, cfg) == 0);
    CHECK(model_forward(&m, tok, tgt, B, T) == dense);
    cfg[0] = attn_config_default(ATTN_WINDOW), cfg[0].window = 9;
    cfg[1] = ms_cfg(2, 6, 2); // P = 12 < T: sparse
    CHECK(model_set_attention(&m, cfg) == 0);
    float sparse = model_forward(&m, tok, tgt, B, T);
    CHECK(sparse != dense && isfinite(sparse));
    AttnStats st;
    model_attention_stats(&m, &st);
    CHECK(st.pairs < st.causal_pairs && st.select_dots > 0);
    model_set_eval(&m, 1); // ms evaluates dense; the window layer stays a window
    float ev = model_forward(&m, tok, tgt, B, T);
    CHECK(ev != sparse);
    model_set_eval(&m, 0);
    cfg[0] = ms_cfg(2, 6, 2);
    cfg[0].positions = POS_REINDEXED, cfg[0].select_on = SELECT_ON_UNROTATED;
    CHECK(model_set_attention(&m, cfg) == 0);
    model_zero_grad(&m);
    float f0 = model_forward(&m, tok, tgt, B, T);
    CHECK(isfinite(f0));
    model_backward(&m);
    m.attn[0].frozen = m.attn[1].frozen = 1;
    size_t n = m.params.total;
    float *g = malloc(n * 4), *p0 = malloc(n * 4), *u = calloc(n, 4);
    memcpy(g, m.grads.base, n * 4);
    memcpy(p0, m.params.base, n * 4);
    int tens[] = {P_WQ, P_WK, P_WV, P_WO};
    for (int dir = 0; dir < 3; dir++) {
        double an = 0, sc = 0;
        for (int ti = 0; ti < 4; ti++) {
            size_t off = m.params.t[tens[ti]] - m.params.base;
            for (size_t i = 0; i < m.params.size[tens[ti]]; i++) u[off + i] = rng_normal(&r);
        }
        float hstep = 1e-3f;
        for (size_t i = 0; i < n; i++) m.params.base[i] = p0[i] + hstep * u[i];
        double fp = model_forward(&m, tok, tgt, B, T);
        for (size_t i = 0; i < n; i++) {
            float xm = p0[i] - hstep * u[i];
            double dx = (double)m.params.base[i] - xm;
            an += g[i] * dx, sc += fabs(g[i] * dx);
            m.params.base[i] = xm;
        }
        double fm = model_forward(&m, tok, tgt, B, T);
        memcpy(m.params.base, p0, n * 4);
        CHECK_REL(an, fp - fm, 2e-2, 1e-2 * sc); // float32 loss: ~1e-6 of noise (as test_model)
    }
    free(g), free(p0), free(u), free(tok), free(tgt);
    model_destroy(&m);
}
