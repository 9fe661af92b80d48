// cpu_sparse_attention.c: block-sparse causal attention over an index list (ops.h: AttnIndex), the
// one numeric core of ms, moba, s2 and window.
//
// A work item is a query tile: up to QR consecutive rows of one query block of one head (lists
// are per query head, so heads do not share tiles as in the dense kernel). The tile streams the
// keys of its list region by region into key tiles of KB keys (several small regions share one
// tile; their order does not matter to softmax), each key remembering its sequence index j, so
// one mask serves every kind: row t sees key j iff j <= t and (no window or j > t - window).
// Keys past the tile's last row are never packed. K and V are read through the list into
// L1-sized tiles, never into a gathered copy of the sequence.
//
// Forward: online softmax over key tiles as in cpu_attention.c; lse saved. Parallel over tiles.
// One-row blocks (moba: a list per row) are regrouped by region: the rows that list a region form
// gathered query tiles that stream only that region's keys, regions in ascending order, each row's
// softmax state (m, l, O) carried from region to region (a fixed order: deterministic).
// Backward: recomputes P from lse; dV += P^T dO, dK += dS^T (scale q), dQ += scale dS K, where
// the dK/dV rows of a key tile are scatter-added to the rows the list points at. Parallel over
// (b, kv head): a thread owns every dK/dV row of its kv head and walks heads, blocks, tiles and
// slots in a fixed order, so the sums are deterministic and need no atomics.
// Positions inside (ix->kpos): q rows and keys are rotated while they are packed (RoPE with
// cpu_rope.c's angles: pos * inv_freq in double, cos/sin rounded to float) and the gradients
// rotated back, so dq/dk are those of the un-rotated inputs.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=fast")
#elif defined(__clang__)
#pragma clang fp contract(fast)
#endif

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common.h"
#include "../ops.h"
#include "cpu_internal.h"

#define KBV 4
#define KB (KBV * CPU_VL) // keys per tile
#define QR 64             // rows per query tile

static inline int min_i(int a, int b) { return a < b ? a : b; }
static inline int max_i(int a, int b) { return a > b ? a : b; }

// ---- RoPE inside the attention ----

typedef struct {
    float *cs; // [npos, D/2, 2]: cos, sin of pos * inv_freq[i]
    int npos, half, style;
} RopeTable;

static void rope_table(RopeTable *rt, const AttnIndex *ix, int B, int H, int D) {
    memset(rt, 0, sizeof *rt);
    if (!ix->kpos) return;
    size_t nl = (size_t)B * H * ix->nblk;
    int maxp = 0;
    for (size_t i = 0; i < nl; i++) {
        maxp = max_i(maxp, ix->qpos[i] + ix->qblock);
        for (int s = 0; s < ix->width; s++)
            maxp = max_i(maxp, ix->kpos[i * ix->width + s] + ix->region);
    }
    rt->npos = maxp;
    rt->half = D / 2;
    rt->style = ix->rope_style;
    rt->cs = ms_malloc(sizeof(float) * 2 * (size_t)maxp * rt->half);
    for (int p = 0; p < maxp; p++)
        for (int i = 0; i < rt->half; i++) {
            double ang = (double)p * (double)ix->inv_freq[i];
            rt->cs[((size_t)p * rt->half + i) * 2] = (float)cos(ang);
            rt->cs[((size_t)p * rt->half + i) * 2 + 1] = (float)sin(ang);
        }
}

// dst = R(sign * angle(pos)) src * mul, or a scaled copy without a table
static void rotate(float *restrict dst, const float *restrict src, const RopeTable *rt, int pos,
                   int D, float mul, int sign) {
    if (!rt->cs) {
        for (int d = 0; d < D; d++) dst[d] = src[d] * mul;
        return;
    }
    MS_ASSERT(pos >= 0 && pos < rt->npos, "sparse attention: position %d outside [0, %d)", pos,
              rt->npos);
    int stride = rt->style == ROPE_INTERLEAVED ? 2 : 1, boff = rt->style == ROPE_INTERLEAVED ? 1 : rt->half;
    const float *cs = rt->cs + (size_t)pos * rt->half * 2;
    for (int i = 0; i < rt->half; i++) {
        float c = cs[2 * i], s = sign * cs[2 * i + 1];
        int ia = i * stride, ib = ia + boff;
        float a = src[ia], b = src[ib];
        dst[ia] = (a * c - b * s) * mul;
        dst[ib] = (a * s + b * c) * mul;
    }
}

// ---- per-thread tiles ----

typedef struct {
    float *Qs, *dO, *O, *dQ; // [QR, D]
    float *Kt, *Vt;          // [D, KB] keys / values as columns
    float *Ks, *Vs;          // [KB, D] rows
    float *S, *dP;           // [QR, KB]
    float *dKs, *dVs;        // [KB, D]
    float *m, *l, *L, *Di;   // [QR]
    int kj[KB], kp[KB];      // sequence index and position of each key of the tile
    float tmp[1024];
} Tiles;

static void tiles_alloc(Tiles *w, int D) {
    memset(w, 0, sizeof *w);
    size_t qd = (size_t)QR * D, kd = (size_t)KB * D, qk = (size_t)QR * KB;
    float **bufs[] = {&w->Qs, &w->dO, &w->O, &w->dQ};
    for (int i = 0; i < 4; i++) *bufs[i] = ms_calloc(qd, sizeof(float));
    float **kb[] = {&w->Kt, &w->Vt, &w->Ks, &w->Vs, &w->dKs, &w->dVs};
    for (int i = 0; i < 6; i++) *kb[i] = ms_calloc(kd, sizeof(float));
    w->S = ms_calloc(qk, sizeof(float));
    w->dP = ms_calloc(qk, sizeof(float));
    w->m = ms_calloc(QR, sizeof(float));
    w->l = ms_calloc(QR, sizeof(float));
    w->L = ms_calloc(QR, sizeof(float));
    w->Di = ms_calloc(QR, sizeof(float));
}

static void tiles_free(Tiles *w) {
    free(w->Qs), free(w->dO), free(w->O), free(w->dQ), free(w->Kt), free(w->Vt), free(w->Ks);
    free(w->Vs), free(w->dKs), free(w->dVs), free(w->S), free(w->dP), free(w->m), free(w->l);
    free(w->L), free(w->Di);
}

// One query tile: rows [t0, t1) of head h in block c of batch item b.
typedef struct {
    int b, h, c, t0, t1, kvh;
    int n;            // rows
    const int *rows;  // NULL: rows t0 .. t1-1; else n ascending rows (gathered, one-row blocks)
    const int *list, *kpos;
    int qpos0; // position of row t0 (positions inside)
} QTile;

static inline int qrow(const QTile *qt, int r) { return qt->rows ? qt->rows[r] : qt->t0 + r; }

// Masked scores of row r of a key tile: lane valid iff kj <= t and kj > lo.
static inline vi lane_ok(const int *kj, int hblk, int t, int lo) {
    vi j;
    memcpy(&j, kj + hblk * CPU_VL, sizeof j);
    return (j <= t) & (j > lo);
}

// Calls tile_fn for each full key tile of the list (and once for the rest). Keys are packed into
// w->Kt (transposed, rotated), w->Ks / w->Vs (rows; Ks rotated) and w->Vt (backward only).
typedef void (*TileFn)(Tiles *w, const QTile *qt, int nk, void *ctx);

static void walk_keys(Tiles *w, const QTile *qt, const AttnIndex *ix, const float *k,
                      const float *v, int T, int KVH, int D, const RopeTable *rt, int bwd,
                      TileFn fn, void *ctx) {
    size_t ldk = (size_t)KVH * D;
    const float *kb = k + ((size_t)qt->b * T * KVH + qt->kvh) * D;
    const float *vb = v + ((size_t)qt->b * T * KVH + qt->kvh) * D;
    int nk = 0;
    for (int s = 0; s < ix->width; s++) {
        int r = qt->list[s];
        if (r < 0) break;
        int a = r * ix->region, e = min_i(min_i(T, a + ix->region), qt->t1);
        if (ix->window) a = max_i(a, qt->t0 - ix->window + 1);
        for (int j = a; j < e; j++) {
            int pos = qt->kpos ? qt->kpos[s] + j - r * ix->region : 0;
            float *ks = w->Ks + (size_t)nk * D;
            rotate(ks, kb + (size_t)j * ldk, rt, pos, D, 1.0f, 1);
            for (int d = 0; d < D; d++) w->Kt[(size_t)d * KB + nk] = ks[d];
            const float *vr = vb + (size_t)j * ldk;
            memcpy(w->Vs + (size_t)nk * D, vr, sizeof(float) * D);
            if (bwd)
                for (int d = 0; d < D; d++) w->Vt[(size_t)d * KB + nk] = vr[d];
            w->kj[nk] = j;
            w->kp[nk] = pos;
            if (++nk == KB) {
                fn(w, qt, nk, ctx);
                nk = 0;
            }
        }
    }
    if (nk) {
        for (int i = nk; i < KB; i++) w->kj[i] = INT_MAX; // never visible
        fn(w, qt, nk, ctx);
    }
}

static void load_rows(float *dst, const float *x, const QTile *qt, int T, int H, int D,
                      const RopeTable *rt, float mul) {
    for (int r = 0; r < qt->n; r++) {
        int t = qrow(qt, r);
        rotate(dst + (size_t)r * D, x + (((size_t)qt->b * T + t) * H + qt->h) * D, rt,
               qt->qpos0 + t - qt->t0, D, mul, 1);
    }
}

static int n_sub(const AttnIndex *ix) { return (ix->qblock + QR - 1) / QR; }

// Tile item -> rows; returns 0 when the tile is past the end of the sequence.
static int make_qtile(QTile *qt, const AttnIndex *ix, int b, int h, int c, int sub, int T, int H,
                      int G) {
    int start = c * ix->qblock;
    qt->b = b, qt->h = h, qt->c = c, qt->kvh = h / G;
    qt->t0 = start + sub * QR;
    qt->t1 = min_i(T, start + min_i(ix->qblock, (sub + 1) * QR));
    if (qt->t0 >= qt->t1) return 0;
    qt->n = qt->t1 - qt->t0, qt->rows = NULL;
    size_t li = ((size_t)b * H + h) * ix->nblk + c;
    qt->list = ix->idx + li * ix->width;
    qt->kpos = ix->kpos ? ix->kpos + li * ix->width : NULL;
    qt->qpos0 = ix->kpos ? ix->qpos[li] + qt->t0 - start : 0;
    return 1;
}

// ---- forward ----

typedef struct {
    const AttnIndex *ix;
    int D;
} FwdCtx;

static void fwd_tile(Tiles *w, const QTile *qt, int nk, void *p) {
    const FwdCtx *cx = p;
    const AttnIndex *ix = cx->ix;
    int R = qt->n, D = cx->D;
    cpu_gemm_small(R, KB, D, w->Qs, D, 1, w->Kt, KB, w->S, KB, 0); // scaled scores
    for (int r = 0; r < R; r++) {
        int t = qrow(qt, r), lo = ix->window ? t - ix->window : -1;
        float *s = w->S + (size_t)r * KB;
        vf sv[KBV], mv = vbcast(-INFINITY), ninf = mv;
        for (int hb = 0; hb < KBV; hb++) {
            sv[hb] = vsel(lane_ok(w->kj, hb, t, lo), vload(s + hb * CPU_VL), ninf);
            mv = vsel(sv[hb] > mv, sv[hb], mv);
        }
        float mx = vhmax(mv);
        if (mx == -INFINITY) { // nothing of this tile is visible to the row
            for (int j = 0; j < KB; j++) s[j] = 0.0f;
            continue;
        }
        mx = w->m[r] > mx ? w->m[r] : mx;
        float alpha = expf(w->m[r] - mx);
        vf mxv = vbcast(mx), sum = (vf){0};
        for (int hb = 0; hb < KBV; hb++) {
            vf p = vexp(sv[hb] - mxv);
            vstore(s + hb * CPU_VL, p);
            sum += p;
        }
        w->l[r] = w->l[r] * alpha + vhsum(sum);
        w->m[r] = mx;
        if (alpha != 1.0f)
            for (int d = 0; d < D; d++) w->O[(size_t)r * D + d] *= alpha;
    }
    cpu_gemm_small(R, D, nk, w->S, KB, 1, w->Vs, D, w->O, D, 1);
}

// ---- one-row blocks, regrouped by region ----

// rows[start[r] .. start[r+1]) = the rows (ascending) whose list holds region r, for (b, h).
static void rows_by_region(const AttnIndex *ix, int b, int h, int H, int T, int nreg, int *start,
                           int *rows) {
    const int *lists = ix->idx + ((size_t)b * H + h) * T * ix->width;
    for (int r = 0; r <= nreg; r++) start[r] = 0;
    for (int t = 0; t < T; t++)
        for (int s = 0; s < ix->width && lists[(size_t)t * ix->width + s] >= 0; s++)
            start[lists[(size_t)t * ix->width + s] + 1]++;
    for (int r = 0; r < nreg; r++) start[r + 1] += start[r];
    int *fill = ms_malloc(sizeof(int) * (nreg + 1));
    memcpy(fill, start, sizeof(int) * (nreg + 1));
    for (int t = 0; t < T; t++)
        for (int s = 0; s < ix->width && lists[(size_t)t * ix->width + s] >= 0; s++)
            rows[fill[lists[(size_t)t * ix->width + s]]++] = t;
    free(fill);
}

// The tile of rows[0..n) (ascending) against region r alone.
static void region_tile(QTile *qt, int *r_slot, const int *rows, int n, int b, int h, int G,
                        int r) {
    *r_slot = r;
    memset(qt, 0, sizeof *qt);
    qt->b = b, qt->h = h, qt->kvh = h / G, qt->n = n, qt->rows = rows;
    qt->t0 = rows[0], qt->t1 = rows[n - 1] + 1;
    qt->list = r_slot;
}

static void by_region_fwd(float *out, float *lse, const float *q, const float *k, const float *v,
                          const AttnIndex *ix, int B, int T, int H, int KVH, int D, float scale) {
    int G = H / KVH, nreg = (T + ix->region - 1) / ix->region;
    AttnIndex one = *ix; // a list of one slot: the region being streamed
    one.width = 1;
#pragma omp parallel
    {
        Tiles w;
        tiles_alloc(&w, D);
        FwdCtx cx = {&one, D};
        float *m = ms_malloc(sizeof(float) * T), *l = ms_malloc(sizeof(float) * T);
        float *O = ms_malloc(sizeof(float) * (size_t)T * D);
        int *start = ms_malloc(sizeof(int) * (nreg + 1));
        int *rows = ms_malloc(sizeof(int) * ((size_t)T * ix->width + 1));
        RopeTable none = {0};
#pragma omp for schedule(dynamic, 1)
        for (int bh = 0; bh < B * H; bh++) {
            int b = bh / H, h = bh % H;
            rows_by_region(ix, b, h, H, T, nreg, start, rows);
            for (int t = 0; t < T; t++) m[t] = -INFINITY, l[t] = 0.0f;
            memset(O, 0, sizeof(float) * (size_t)T * D);
            for (int r = 0; r < nreg; r++)
                for (int i = start[r]; i < start[r + 1]; i += QR) {
                    int n = min_i(QR, start[r + 1] - i), slot;
                    QTile qt;
                    region_tile(&qt, &slot, rows + i, n, b, h, G, r);
                    load_rows(w.Qs, q, &qt, T, H, D, &none, scale);
                    for (int x = 0; x < n; x++) { // this tile's rows' running state
                        int t = rows[i + x];
                        w.m[x] = m[t], w.l[x] = l[t];
                        memcpy(w.O + (size_t)x * D, O + (size_t)t * D, sizeof(float) * D);
                    }
                    walk_keys(&w, &qt, &one, k, v, T, KVH, D, &none, 0, fwd_tile, &cx);
                    for (int x = 0; x < n; x++) {
                        int t = rows[i + x];
                        m[t] = w.m[x], l[t] = w.l[x];
                        memcpy(O + (size_t)t * D, w.O + (size_t)x * D, sizeof(float) * D);
                    }
                }
            for (int t = 0; t < T; t++) {
                float *dst = out + (((size_t)b * T + t) * H + h) * D;
                float inv = l[t] > 0 ? 1.0f / l[t] : 0.0f;
                for (int d = 0; d < D; d++) dst[d] = O[(size_t)t * D + d] * inv;
                lse[((size_t)b * H + h) * T + t] = l[t] > 0 ? m[t] + logf(l[t]) : INFINITY;
            }
        }
        free(m), free(l), free(O), free(start), free(rows);
        tiles_free(&w);
    }
}

void cpu_sparse_attention_fwd(float *out, float *lse, const float *q, const float *k,
                              const float *v, const AttnIndex *ix, int B, int T, int H, int KVH,
                              int D) {
    MS_ASSERT(KVH > 0 && H % KVH == 0, "attention: H = %d not a multiple of KVH = %d", H, KVH);
    MS_ASSERT(D <= 512, "sparse attention: head dim %d > 512", D);
    int G = H / KVH, nsub = n_sub(ix);
    float scale = (float)(1.0 / sqrt((double)D));
    if (ix->qblock == 1 && !ix->kpos) {
        by_region_fwd(out, lse, q, k, v, ix, B, T, H, KVH, D, scale);
        return;
    }
    RopeTable rt;
    rope_table(&rt, ix, B, H, D);
    long items = (long)B * H * ix->nblk * nsub;
#pragma omp parallel
    {
        Tiles w;
        tiles_alloc(&w, D);
        FwdCtx cx = {ix, D};
#pragma omp for schedule(dynamic, 1)
        for (long it = 0; it < items; it++) {
            long x = it;
            int sub = (int)(x % nsub);
            x /= nsub;
            int c = ix->nblk - 1 - (int)(x % ix->nblk); // later blocks first: more keys
            x /= ix->nblk;
            int h = (int)(x % H), b = (int)(x / H);
            QTile qt;
            if (!make_qtile(&qt, ix, b, h, c, sub, T, H, G)) continue;
            int R = qt.t1 - qt.t0;
            load_rows(w.Qs, q, &qt, T, H, D, &rt, scale);
            for (int r = 0; r < R; r++) w.m[r] = -INFINITY, w.l[r] = 0.0f;
            memset(w.O, 0, sizeof(float) * (size_t)R * D);
            walk_keys(&w, &qt, ix, k, v, T, KVH, D, &rt, 0, fwd_tile, &cx);
            for (int r = 0; r < R; r++) {
                int t = qt.t0 + r;
                float *dst = out + (((size_t)b * T + t) * H + h) * D;
                float inv = w.l[r] > 0 ? 1.0f / w.l[r] : 0.0f;
                for (int d = 0; d < D; d++) dst[d] = w.O[(size_t)r * D + d] * inv;
                lse[((size_t)b * H + h) * T + t] = w.l[r] > 0 ? w.m[r] + logf(w.l[r]) : INFINITY;
            }
        }
        tiles_free(&w);
    }
    free(rt.cs);
}

// ---- backward ----

typedef struct {
    const AttnIndex *ix;
    const RopeTable *rt;
    float *dkb, *dvb; // this (b, kv head)'s gradient rows, stride ldk
    size_t ldk;
    int D;
} BwdCtx;

static void bwd_tile(Tiles *w, const QTile *qt, int nk, void *p) {
    BwdCtx *cx = p;
    int R = qt->n, D = cx->D;
    cpu_gemm_small(R, KB, D, w->Qs, D, 1, w->Kt, KB, w->S, KB, 0);  // s (scaled)
    cpu_gemm_small(R, KB, D, w->dO, D, 1, w->Vt, KB, w->dP, KB, 0); // dp = dout . v
    for (int r = 0; r < R; r++) {
        int t = qrow(qt, r), lo = cx->ix->window ? t - cx->ix->window : -1;
        float *s = w->S + (size_t)r * KB, *dp = w->dP + (size_t)r * KB;
        vf lv = vbcast(w->L[r]), dv_ = vbcast(w->Di[r]);
        for (int hb = 0; hb < KBV; hb++) {
            vi ok = lane_ok(w->kj, hb, t, lo);
            vf pr = vsel(ok, vexp(vload(s + hb * CPU_VL) - lv), (vf){0});
            vstore(s + hb * CPU_VL, pr);
            vstore(dp + hb * CPU_VL, pr * (vload(dp + hb * CPU_VL) - dv_));
        }
    }
    cpu_gemm_small(R, D, nk, w->dP, KB, 1, w->Ks, D, w->dQ, D, 1);   // dQ += dS K
    cpu_gemm_small(nk, D, R, w->dP, 1, KB, w->Qs, D, w->dKs, D, 0);  // dS^T (scale q)
    cpu_gemm_small(nk, D, R, w->S, 1, KB, w->dO, D, w->dVs, D, 0);   // P^T dO
    for (int i = 0; i < nk; i++) { // scatter to the rows the list points at
        size_t row = (size_t)w->kj[i] * cx->ldk;
        float *dk = cx->dkb + row, *dv = cx->dvb + row;
        const float *gk = w->dKs + (size_t)i * D, *gv = w->dVs + (size_t)i * D;
        if (cx->rt->cs) {
            rotate(w->tmp, gk, cx->rt, w->kp[i], D, 1.0f, -1);
            gk = w->tmp;
        }
        for (int d = 0; d < D; d++) dk[d] += gk[d], dv[d] += gv[d];
    }
}

static void by_region_bwd(float *dq, float *dk, float *dv, const float *dout, const float *out,
                          const float *lse, const float *q, const float *k, const float *v,
                          const AttnIndex *ix, int B, int T, int H, int KVH, int D, float scale) {
    int G = H / KVH, nreg = (T + ix->region - 1) / ix->region;
    size_t ldk = (size_t)KVH * D;
    AttnIndex one = *ix;
    one.width = 1;
#pragma omp parallel
    {
        Tiles w;
        tiles_alloc(&w, D);
        int *start = ms_malloc(sizeof(int) * (nreg + 1));
        int *rows = ms_malloc(sizeof(int) * ((size_t)T * ix->width + 1));
        RopeTable none = {0};
#pragma omp for schedule(dynamic, 1)
        for (int bk = 0; bk < B * KVH; bk++) { // a thread owns the dK/dV rows of its kv head
            int b = bk / KVH, kvh = bk % KVH;
            BwdCtx cx = {&one, &none, dk + ((size_t)b * T * KVH + kvh) * D,
                         dv + ((size_t)b * T * KVH + kvh) * D, ldk, D};
            for (int h = kvh * G; h < (kvh + 1) * G; h++) {
                rows_by_region(ix, b, h, H, T, nreg, start, rows);
                for (int r = 0; r < nreg; r++)
                    for (int i = start[r]; i < start[r + 1]; i += QR) {
                        int n = min_i(QR, start[r + 1] - i), slot;
                        QTile qt;
                        region_tile(&qt, &slot, rows + i, n, b, h, G, r);
                        load_rows(w.Qs, q, &qt, T, H, D, &none, scale);
                        load_rows(w.dO, dout, &qt, T, H, D, &none, 1.0f);
                        for (int x = 0; x < n; x++) {
                            int t = rows[i + x];
                            const float *o = out + (((size_t)b * T + t) * H + h) * D;
                            double di = 0;
                            for (int d = 0; d < D; d++) di += (double)w.dO[(size_t)x * D + d] * o[d];
                            w.Di[x] = (float)di;
                            w.L[x] = lse[((size_t)b * H + h) * T + t];
                        }
                        memset(w.dQ, 0, sizeof(float) * (size_t)n * D);
                        walk_keys(&w, &qt, &one, k, v, T, KVH, D, &none, 1, bwd_tile, &cx);
                        for (int x = 0; x < n; x++) {
                            float *dst = dq + (((size_t)b * T + rows[i + x]) * H + h) * D;
                            for (int d = 0; d < D; d++) dst[d] += scale * w.dQ[(size_t)x * D + d];
                        }
                    }
            }
        }
        free(start), free(rows);
        tiles_free(&w);
    }
}

void cpu_sparse_attention_bwd(float *dq, float *dk, float *dv, const float *dout,
                              const float *out, const float *lse, const float *q, const float *k,
                              const float *v, const AttnIndex *ix, int B, int T, int H, int KVH,
                              int D) {
    MS_ASSERT(KVH > 0 && H % KVH == 0, "attention: H = %d not a multiple of KVH = %d", H, KVH);
    MS_ASSERT(D <= 512, "sparse attention: head dim %d > 512", D);
    MS_ASSERT(dq && dk && dv, "sparse attention backward: every gradient is needed");
    int G = H / KVH, nsub = n_sub(ix);
    float scale = (float)(1.0 / sqrt((double)D));
    size_t ldk = (size_t)KVH * D;
    if (ix->qblock == 1 && !ix->kpos) {
        by_region_bwd(dq, dk, dv, dout, out, lse, q, k, v, ix, B, T, H, KVH, D, scale);
        return;
    }
    RopeTable rt;
    rope_table(&rt, ix, B, H, D);
#pragma omp parallel
    {
        Tiles w;
        tiles_alloc(&w, D);
#pragma omp for schedule(dynamic, 1)
        for (int bk = 0; bk < B * KVH; bk++) {
            int b = bk / KVH, kvh = bk % KVH;
            BwdCtx cx = {ix, &rt, dk + ((size_t)b * T * KVH + kvh) * D,
                         dv + ((size_t)b * T * KVH + kvh) * D, ldk, D};
            for (int h = kvh * G; h < (kvh + 1) * G; h++)
                for (int c = 0; c < ix->nblk; c++)
                    for (int sub = 0; sub < nsub; sub++) {
                        QTile qt;
                        if (!make_qtile(&qt, ix, b, h, c, sub, T, H, G)) continue;
                        int R = qt.t1 - qt.t0;
                        load_rows(w.Qs, q, &qt, T, H, D, &rt, scale);
                        RopeTable none = {0};
                        load_rows(w.dO, dout, &qt, T, H, D, &none, 1.0f);
                        for (int r = 0; r < R; r++) {
                            int t = qt.t0 + r;
                            const float *o = out + (((size_t)b * T + t) * H + h) * D;
                            double di = 0;
                            for (int d = 0; d < D; d++) di += (double)w.dO[(size_t)r * D + d] * o[d];
                            w.Di[r] = (float)di;
                            w.L[r] = lse[((size_t)b * H + h) * T + t];
                        }
                        memset(w.dQ, 0, sizeof(float) * (size_t)R * D);
                        walk_keys(&w, &qt, ix, k, v, T, KVH, D, &rt, 1, bwd_tile, &cx);
                        for (int r = 0; r < R; r++) {
                            float *dst = dq + (((size_t)b * T + qt.t0 + r) * H + h) * D;
                            rotate(w.tmp, w.dQ + (size_t)r * D, &rt, qt.qpos0 + r, D, scale, -1);
                            for (int d = 0; d < D; d++) dst[d] += w.tmp[d];
                        }
                    }
        }
        tiles_free(&w);
    }
    free(rt.cs);
}
