// cpu_attn_select.c: the selection op: builds the index list of every sparse kind.
//
// ms (spec 1.2, steps 2-7): semantic tokens (pooled q of each query region or group, pooled k of
// each key region: per kv head, shared by the query heads reading it); score of every eligible
// (query unit, key region) pair; per-unit top-S ranked best first, ties to the lower region id;
// the M members of a group merged (rank-major first-occurrence dedup, or by score sum, or by vote
// count) and cut to S; then the group's local regions in ascending order. Groups inside the dense
// prefix, and a partial last group with tail = "dense", list every region up to their own.
// moba: per query row, the top-(top - 1) strictly past blocks by q . mean(k of the block), then
// its own block. s2, window, dense: fixed lists.
//
// Pooling and scores are in double, each a plain sum in row / dimension order, so a reference
// written independently (tests/) picks the same regions. No gradient flows through any of this.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../attention.h"
#include "../common.h"
#include "../ops.h"
#include "cpu_internal.h"

static inline int min_i(int a, int b) { return a < b ? a : b; }

// dst[D] = pool over rows [r0, r1) of x (row stride ld floats)
static void pool_rows(double *dst, const float *x, size_t ld, int r0, int r1, int D, int mode) {
    int n = r1 - r0;
    for (int d = 0; d < D; d++) dst[d] = mode == POOL_MAX ? -INFINITY : 0.0;
    if (mode == POOL_FIRST) {
        for (int d = 0; d < D; d++) dst[d] = x[(size_t)r0 * ld + d];
        return;
    }
    for (int r = r0; r < r1; r++) {
        const float *row = x + (size_t)r * ld;
        double inv = 1.0;
        if (mode == POOL_NMEAN) { // each token's unit vector: every token weighs the same
            double ss = 0;
            for (int d = 0; d < D; d++) ss += (double)row[d] * row[d];
            inv = ss > 0 ? 1.0 / sqrt(ss) : 0.0;
        }
        for (int d = 0; d < D; d++) {
            if (mode == POOL_MAX) dst[d] = row[d] > dst[d] ? row[d] : dst[d];
            else dst[d] += row[d] * inv;
        }
    }
    if (mode == POOL_MEAN || mode == POOL_NMEAN)
        for (int d = 0; d < D; d++) dst[d] /= n;
}

static double norm_d(const double *x, int D) {
    double s = 0;
    for (int d = 0; d < D; d++) s += x[d] * x[d];
    return sqrt(s);
}

static double score(const double *a, const double *b, int D, int mode, double na, double nb) {
    double s = 0;
    for (int d = 0; d < D; d++) s += a[d] * b[d];
    if (mode == SCORE_SCALED) return s / sqrt((double)D);
    if (mode == SCORE_COSINE) return na > 0 && nb > 0 ? s / (na * nb) : 0.0;
    return s;
}

typedef struct {
    double s;
    int id;
} Cand;

// best first; ties to the lower id; NaN ranks last
static int cand_cmp(const void *pa, const void *pb) {
    const Cand *a = pa, *b = pb;
    int an = isnan(a->s), bn = isnan(b->s);
    if (an != bn) return an - bn;
    if (!an && a->s != b->s) return a->s > b->s ? -1 : 1;
    return (a->id > b->id) - (a->id < b->id);
}

static void swap_c(Cand *a, Cand *b) {
    Cand t = *a;
    *a = *b;
    *b = t;
}

// Moves the n best of c[0..e) to the front (unordered): quickselect. cand_cmp is a total order
// (ids differ), so the set is the same whatever the algorithm.
static void partial_select(Cand *c, int e, int n) {
    int lo = 0, hi = e - 1;
    while (lo < hi) {
        swap_c(&c[(lo + hi) / 2], &c[hi]); // middle element as pivot, parked at hi
        int store = lo;
        for (int i = lo; i < hi; i++)
            if (cand_cmp(&c[i], &c[hi]) < 0) swap_c(&c[i], &c[store++]);
        swap_c(&c[store], &c[hi]); // pivot at its final rank `store`
        if (store == n - 1 || store == n) return;
        if (store < n) lo = store + 1;
        else hi = store - 1;
    }
}

// Top-n of scores c[0..e) (ids = positions) into out; returns how many (min(n, e)).
static int topn(Cand *c, int e, int n, int *out, double *out_s) {
    if (n < e / 4) { // selection first: the full sort of long rows dominates at long lengths
        partial_select(c, e, n);
        e = n;
    }
    qsort(c, (size_t)e, sizeof *c, cand_cmp);
    int m = min_i(n, e);
    for (int i = 0; i < m; i++) {
        out[i] = c[i].id;
        if (out_s) out_s[i] = c[i].s;
    }
    return m;
}

typedef struct {
    int id, first;   // first: position in the rank-major scan (tie-break)
    double key;
} Merged;

static int merged_cmp(const void *pa, const void *pb) {
    const Merged *a = pa, *b = pb;
    if (a->key != b->key) return a->key > b->key ? -1 : 1;
    return a->first - b->first;
}

// ---- ms ----------------------------------------------------------------------------------------

typedef struct {
    Cand *cand;       // [N]
    int *tops;        // [M * S] members' top lists
    double *tops_s;   // [M * S] their scores
    int *ntop;        // [M]
    double *qbar;     // [D]
    int *mark;        // [N] position + 1 in the merged scan, 0 = unseen
    Merged *merged;   // [N]
} MsScratch;

// Merges members' top lists into sel (at most S ids); returns how many.
static int ms_merge(const MsScratch *sc, int members, int S, int order, int *sel) {
    int maxn = 0, nm = 0;
    for (int m = 0; m < members; m++) maxn = sc->ntop[m] > maxn ? sc->ntop[m] : maxn;
    for (int r = 0; r < maxn; r++) // rank-major scan: every member's rank r, then rank r + 1
        for (int m = 0; m < members; m++) {
            if (r >= sc->ntop[m]) continue;
            int id = sc->tops[(size_t)m * S + r];
            double s = sc->tops_s[(size_t)m * S + r];
            if (!sc->mark[id]) {
                sc->merged[nm] = (Merged){id, nm, 0.0};
                sc->mark[id] = ++nm;
            }
            Merged *g = &sc->merged[sc->mark[id] - 1];
            g->key += order == ORDER_SCORE ? s : 1.0;
        }
    for (int i = 0; i < nm; i++) sc->mark[sc->merged[i].id] = 0;
    if (order != ORDER_RANK) qsort(sc->merged, (size_t)nm, sizeof *sc->merged, merged_cmp);
    int n = min_i(nm, S);
    for (int i = 0; i < n; i++) sel[i] = sc->merged[i].id;
    return n;
}

static void select_ms(AttnIndex *ix, const AttnConfig *cfg, const AttnDims *d, const float *q,
                      const float *k, int B, int T, int H, int KVH, int D) {
    int N = d->N, w = cfg->w, M = d->M, S = d->S, G = H / KVH, W = d->width;
    // semantic keys [B, KVH, N, D] and their norms
    double *kbar = ms_malloc(sizeof(double) * B * KVH * N * D);
    double *knorm = ms_malloc(sizeof(double) * B * KVH * N);
#pragma omp parallel for schedule(static) collapse(2)
    for (int b = 0; b < B; b++)
        for (int kh = 0; kh < KVH; kh++)
            for (int r = 0; r < N; r++) {
                double *dst = kbar + (((size_t)b * KVH + kh) * N + r) * D;
                pool_rows(dst, k + ((size_t)b * T * KVH + kh) * D, (size_t)KVH * D, r * w,
                          min_i(T, (r + 1) * w), D, cfg->pool);
                knorm[((size_t)b * KVH + kh) * N + r] = norm_d(dst, D);
            }

#pragma omp parallel
    {
        MsScratch sc;
        sc.cand = ms_malloc(sizeof(Cand) * N);
        sc.tops = ms_malloc(sizeof(int) * ((size_t)M * S + 1));
        sc.tops_s = ms_malloc(sizeof(double) * ((size_t)M * S + 1));
        sc.ntop = ms_malloc(sizeof(int) * M);
        sc.qbar = ms_malloc(sizeof(double) * D);
        sc.mark = ms_calloc((size_t)N, sizeof(int));
        sc.merged = ms_malloc(sizeof(Merged) * ((size_t)M * S + 1));
#pragma omp for schedule(dynamic, 1) collapse(2)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++) {
                int kh = h / G;
                const double *kb = kbar + ((size_t)b * KVH + kh) * N * D;
                const double *kn = knorm + ((size_t)b * KVH + kh) * N;
                const float *qb = q + ((size_t)b * T * H + h) * D;
                size_t ld = (size_t)H * D;
                for (int c = 0; c < d->nblk; c++) {
                    size_t lo = (((size_t)b * H + h) * d->nblk + c) * W;
                    int *list = ix->idx + lo, n = 0;
                    int g0 = c * M, gend = min_i(N, g0 + M);
                    if (c < d->first || (c == d->nblk - 1 && d->last_dense)) {
                        for (int r = 0; r < gend; r++) list[n++] = r; // dense causal block
                    } else {
                        int local0 = g0 - (d->lg - 1) * M;
                        local0 = local0 > 0 ? local0 : 0;
                        int members = cfg->select == SELECT_GROUP ? 1 : gend - g0;
                        for (int m = 0; m < members; m++) {
                            int g = cfg->select == SELECT_GROUP ? -1 : g0 + m;
                            int r0 = g >= 0 ? g * w : g0 * w;
                            int r1 = g >= 0 ? min_i(T, r0 + w) : min_i(T, gend * w);
                            pool_rows(sc.qbar, qb, ld, r0, r1, D, cfg->pool);
                            double qn = norm_d(sc.qbar, D);
                            int e = attn_ms_eligible(d, c, g);
                            for (int j = 0; j < e; j++)
                                sc.cand[j] = (Cand){score(sc.qbar, kb + (size_t)j * D, D,
                                                          cfg->score, qn, kn[j]),
                                                    j};
                            sc.ntop[m] = topn(sc.cand, e, S, sc.tops + (size_t)m * S,
                                              sc.tops_s + (size_t)m * S);
                        }
                        n = ms_merge(&sc, members, S, cfg->order, list);
                        int nsel = n;
                        for (int r = local0; r < gend; r++) list[n++] = r;
                        if (ix->kpos) ix->qpos[lo / W] = (nsel + g0 - local0) * w;
                    }
                    if (ix->kpos) {
                        if (c < d->first || (c == d->nblk - 1 && d->last_dense))
                            ix->qpos[lo / W] = c * d->G;
                        for (int s = 0; s < n; s++) ix->kpos[lo + s] = s * w;
                    }
                }
            }
        free(sc.cand), free(sc.tops), free(sc.tops_s), free(sc.ntop), free(sc.qbar);
        free(sc.mark), free(sc.merged);
    }
    free(kbar), free(knorm);
}

// ---- moba --------------------------------------------------------------------------------------

static void select_moba(AttnIndex *ix, const AttnConfig *cfg, const AttnDims *d, const float *q,
                        const float *k, int B, int T, int H, int KVH, int D) {
    int bs = cfg->block, nb = (T + bs - 1) / bs, G = H / KVH, W = d->width;
    double *kbar = ms_malloc(sizeof(double) * B * KVH * nb * D);
#pragma omp parallel for schedule(static) collapse(2)
    for (int b = 0; b < B; b++)
        for (int kh = 0; kh < KVH; kh++)
            for (int r = 0; r < nb; r++)
                pool_rows(kbar + (((size_t)b * KVH + kh) * nb + r) * D,
                          k + ((size_t)b * T * KVH + kh) * D, (size_t)KVH * D, r * bs,
                          min_i(T, (r + 1) * bs), D, POOL_MEAN);
#pragma omp parallel
    {
        Cand *cand = ms_malloc(sizeof(Cand) * nb);
        double *qd = ms_malloc(sizeof(double) * D);
#pragma omp for schedule(static) collapse(2)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++) {
                const double *kb = kbar + ((size_t)b * KVH + h / G) * nb * D;
                for (int t = 0; t < T; t++) {
                    const float *qt = q + (((size_t)b * T + t) * H + h) * D;
                    int *list = ix->idx + (((size_t)b * H + h) * T + t) * W, own = t / bs;
                    for (int x = 0; x < D; x++) qd[x] = qt[x];
                    for (int j = 0; j < own; j++)
                        cand[j] = (Cand){score(qd, kb + (size_t)j * D, D, SCORE_DOT, 0, 0), j};
                    int n = topn(cand, own, cfg->top - 1, list, NULL);
                    list[n] = own;
                }
            }
        free(cand), free(qd);
    }
    free(kbar);
}

// ---- fixed lists -------------------------------------------------------------------------------

void cpu_attention_select(AttnIndex *ix, const AttnConfig *cfg, const float *q, const float *k,
                          int B, int T, int H, int KVH, int D) {
    AttnDims d;
    MS_ASSERT(attn_dims(cfg, T, &d) == 0, "%s", ms_error());
    MS_ASSERT(ix->nblk == d.nblk && ix->width == d.width && ix->qblock == d.qblock &&
                  ix->region == d.region,
              "attention_select: index shape does not match the config at T = %d", T);
    size_t n = (size_t)B * H * d.nblk * d.width;
    for (size_t i = 0; i < n; i++) ix->idx[i] = -1;
    if (ix->kpos)
        for (size_t i = 0; i < n; i++) ix->kpos[i] = 0;
    switch (cfg->kind) {
    case ATTN_MS: select_ms(ix, cfg, &d, q, k, B, T, H, KVH, D); return;
    case ATTN_MOBA: select_moba(ix, cfg, &d, q, k, B, T, H, KVH, D); return;
    default: break;
    }
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int c = 0; c < d.nblk; c++) {
                int *list = ix->idx + (((size_t)b * H + h) * d.nblk + c) * d.width, m = 0;
                if (cfg->kind == ATTN_DENSE) {
                    for (int r = 0; r <= c; r++) list[m++] = r;
                    continue;
                }
                // s2: heads [H/2, H) are shifted by half a group (LongLoRA): their groups pair
                // half-blocks (1,2), (3,4), ..., and half-block 0 is alone (causal: no wrap)
                int pair_with_prev = cfg->kind == ATTN_WINDOW ? c > 0
                                   : h < H / 2                ? c % 2 == 1
                                                              : c > 0 && c % 2 == 0;
                if (pair_with_prev) list[m++] = c - 1;
                list[m++] = c;
            }
}
