// attention.c: attention configs (defaults, checks, canonical text), the plan's shape at a length,
// the realised cost of a plan, and the per-layer glue the model calls (dense or sparse, selection
// inputs, positions inside the attention or not).
#include "attention.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

const char *const attn_kind_names[] = {"dense", "ms", "moba", "s2", "window", NULL};
const char *const attn_eval_names[] = {"dense", "same", NULL};
const char *const attn_pool_names[] = {"mean", "max", "first", "nmean", NULL};
const char *const attn_score_names[] = {"dot", "scaled", "cosine", NULL};
const char *const attn_select_names[] = {"region", "group", NULL};
const char *const attn_order_names[] = {"rank", "score", "votes", NULL};
const char *const attn_select_on_names[] = {"rotated", "unrotated", NULL};
const char *const attn_positions_names[] = {"true", "reindexed", NULL};
const char *const attn_tail_names[] = {"select", "dense", NULL};

static int cdiv(int a, int b) { return (a + b - 1) / b; }
static int max_i(int a, int b) { return a > b ? a : b; }
static int min_i(int a, int b) { return a < b ? a : b; }

AttnConfig attn_config_default(int kind) {
    AttnConfig c = {.kind = kind, .eval = ATTN_EVAL_SAME};
    // ms: the draft's logged fine-tuning run (spec 1.1): w 16, top 512, merge 128, prefix top * w
    c.w = 16, c.top = 512, c.merge = 128, c.prefix = -1, c.local_groups = 1;
    switch (kind) {
    case ATTN_MS: c.eval = ATTN_EVAL_DENSE; break; // the draft evaluates dense (spec 1.8)
    case ATTN_MOBA: c.block = 4096, c.top = 12; break; // Llama-8B-1M-MoBA (anchors A.1)
    case ATTN_S2: c.ratio = 0.25f, c.eval = ATTN_EVAL_DENSE; break; // LongLoRA: 1/4, dense inference
    case ATTN_WINDOW: c.window = 4096; break; // Mistral-7B's window
    }
    return c;
}

// Knobs (Lua keys) of each kind; `eval` belongs to every sparse kind.
static const char *const knobs[ATTN_NKINDS] = {
    [ATTN_DENSE] = "kind",
    [ATTN_MS] = ("kind, w, top, ratio, merge, prefix, pool, score, select, order, local_groups, "
                 "select_on, positions, tail, eval"),
    [ATTN_MOBA] = "kind, block, top, eval",
    [ATTN_S2] = "kind, ratio, group, eval",
    [ATTN_WINDOW] = "kind, window, eval",
};

const char *attn_knobs_of(int kind) { return kind >= 0 && kind < ATTN_NKINDS ? knobs[kind] : ""; }

int attn_knob_applies(int kind, const char *key) {
    const char *s = attn_knobs_of(kind);
    size_t n = strlen(key);
    for (const char *p = strstr(s, key); p; p = strstr(p + 1, key))
        if ((p == s || p[-2] == ',') && (p[n] == ',' || p[n] == 0)) return 1;
    return 0;
}

int attn_config_equal(const AttnConfig *a, const AttnConfig *b) {
    char *x = attn_config_json(a), *y = attn_config_json(b);
    int eq = !strcmp(x, y);
    free(x), free(y);
    return eq;
}

static int choice_ok(int v, const char *const *names) {
    int n = 0;
    while (names[n]) n++;
    return v >= 0 && v < n;
}

int attn_config_check(const AttnConfig *c, const char *p) {
    if (c->kind < 0 || c->kind >= ATTN_NKINDS) return ms_fail("%s.kind (%d) is not a kind", p, c->kind);
    if (!choice_ok(c->eval, attn_eval_names)) return ms_fail("%s.eval (%d) is not a choice", p, c->eval);
    switch (c->kind) {
    case ATTN_MS:
        if (c->w <= 0) return ms_fail("%s.w (%d) must be positive", p, c->w);
        if (c->merge <= 0) return ms_fail("%s.merge (%d) must be positive", p, c->merge);
        if (c->top < 0) return ms_fail("%s.top (%d) must be positive", p, c->top);
        if (c->ratio != 0 && !(c->ratio > 0 && c->ratio <= 1))
            return ms_fail("%s.ratio (%g) must be in (0, 1]", p, c->ratio);
        if (c->top > 0 && c->ratio != 0)
            return ms_fail("%s.ratio: give %s.top or %s.ratio, not both", p, p, p);
        if (c->top == 0 && c->ratio == 0) return ms_fail("%s.top (0) must be positive", p);
        if (c->top > 0 && c->top <= c->merge)
            return ms_fail("%s.top (%d) must be greater than %s.merge (%d)", p, c->top, p, c->merge);
        if (c->prefix < -1) return ms_fail("%s.prefix (%d) must be >= 0", p, c->prefix);
        if (c->prefix < 0 && c->top > 0 && c->top % c->merge)
            return ms_fail("%s.merge (%d) must divide %s.top (%d)", p, c->merge, p, c->top);
        if (c->prefix >= 0 && c->prefix % c->w)
            return ms_fail("%s.w (%d) must divide %s.prefix (%d)", p, c->w, p, c->prefix);
        if (c->prefix >= 0 && c->prefix % (c->w * c->merge))
            return ms_fail("%s.prefix (%d) must be a multiple of %s.w * %s.merge (%d)", p,
                           c->prefix, p, p, c->w * c->merge);
        if (c->local_groups != 1 && c->local_groups != 2)
            return ms_fail("%s.local_groups (%d) must be 1 or 2", p, c->local_groups);
        if (!choice_ok(c->pool, attn_pool_names) || !choice_ok(c->score, attn_score_names) ||
            !choice_ok(c->select, attn_select_names) || !choice_ok(c->order, attn_order_names) ||
            !choice_ok(c->select_on, attn_select_on_names) ||
            !choice_ok(c->positions, attn_positions_names) || !choice_ok(c->tail, attn_tail_names))
            return ms_fail("%s: a choice is out of range", p);
        break;
    case ATTN_MOBA:
        if (c->block <= 0) return ms_fail("%s.block (%d) must be positive", p, c->block);
        if (c->top <= 0) return ms_fail("%s.top (%d) must be positive", p, c->top);
        break;
    case ATTN_S2:
        if (c->group < 0 || c->group % 2)
            return ms_fail("%s.group (%d) must be a positive even number", p, c->group);
        if (c->group == 0 && !(c->ratio > 0 && c->ratio <= 1))
            return ms_fail("%s.ratio (%g) must be in (0, 1]", p, c->ratio);
        if (c->group > 0 && c->ratio != 0)
            return ms_fail("%s.ratio: give %s.group or %s.ratio, not both", p, p, p);
        break;
    case ATTN_WINDOW:
        if (c->window <= 0) return ms_fail("%s.window (%d) must be positive", p, c->window);
        break;
    }
    return 0;
}

int attn_dims(const AttnConfig *c, int T, AttnDims *d) {
    memset(d, 0, sizeof *d);
    if (T <= 0) return ms_fail("attention: length %d must be positive", T);
    switch (c->kind) {
    case ATTN_DENSE:
        d->qblock = d->region = 64;
        d->nblk = cdiv(T, 64);
        d->width = d->nblk;
        d->dense = 1;
        break;
    case ATTN_MS: {
        int M = c->merge, w = c->w;
        d->N = cdiv(T, w);
        d->M = M;
        d->lg = c->local_groups;
        if (c->top > 0) {
            d->R = c->top;
        } else { // ratio: a fraction of the regions, at least one selected group's worth
            d->R = max_i(M + 1, (int)ceil((double)c->ratio * d->N - 1e-9));
            d->R = M * cdiv(d->R, M);
        }
        d->S = d->R - M;
        d->G = M * w;
        d->P = c->prefix >= 0 ? c->prefix : d->R * w;
        d->first = d->P / d->G;
        d->qblock = d->G;
        d->region = w;
        d->nblk = cdiv(T, d->G);
        d->dense = T <= d->P;
        d->last_dense = c->tail == TAIL_DENSE && T % d->G && d->nblk - 1 >= d->first;
        d->width = min_i(d->N, max_i(max_i(d->S + d->lg * M, d->first * M),
                                     d->last_dense ? d->N : 0));
        d->reindex = c->positions == POS_REINDEXED;
        break;
    }
    case ATTN_MOBA: {
        int nb = cdiv(T, c->block);
        d->qblock = 1;
        d->nblk = T;
        d->region = c->block;
        d->width = min_i(c->top, nb);
        d->dense = c->top >= nb;
        break;
    }
    case ATTN_S2: {
        int g = c->group > 0 ? c->group : (int)((double)c->ratio * T); // LongLoRA: int(T * ratio)
        g = max_i(2, g / 2 * 2);
        d->qblock = d->region = g / 2;
        d->nblk = cdiv(T, g / 2);
        d->width = min_i(2, d->nblk);
        d->dense = T <= g / 2;
        break;
    }
    case ATTN_WINDOW:
        d->qblock = d->region = c->window;
        d->nblk = cdiv(T, c->window);
        d->width = min_i(2, d->nblk);
        d->window = c->window;
        d->dense = T <= c->window;
        break;
    default:
        return ms_fail("attention: kind %d", c->kind);
    }
    return 0;
}

int attn_ms_eligible(const AttnDims *d, int c, int g) {
    int g0 = c * d->M, local0 = g0 - (d->lg - 1) * d->M; // first local region
    int e = g >= 0 ? min_i(g - d->M + 1, local0) : local0;
    return e > 0 ? e : 0;
}

// Sum over rows t in [t0, t1) of |{j in [a, b): j <= t}| (closed form).
static double causal_sum(long t0, long t1, long a, long b) {
    long L = b - a;
    double f[2];
    long xs[2] = {t0, t1};
    for (int i = 0; i < 2; i++) {
        long x = xs[i];
        if (x <= a) f[i] = 0;
        else if (x <= a + L) f[i] = (double)(x - a) * (x - a + 1) / 2;
        else f[i] = (double)L * (L + 1) / 2 + (double)(x - a - L) * L;
    }
    return f[1] - f[0];
}

void attn_count(const AttnConfig *c, const AttnDims *d, const int *idx, int H, int T,
                AttnStats *st) {
    st->causal_pairs = (double)H * T * (T + 1) / 2;
    st->pairs = 0;
    st->select_dots = 0;
    for (int h = 0; h < H; h++)
        for (int b = 0; b < d->nblk; b++) {
            const int *list = idx + ((size_t)h * d->nblk + b) * d->width;
            long t0 = (long)b * d->qblock, t1 = min_i(T, (b + 1) * d->qblock);
            for (int s = 0; s < d->width && list[s] >= 0; s++) {
                long a = (long)list[s] * d->region, e = min_i(T, (list[s] + 1) * d->region);
                if (!d->window) {
                    st->pairs += causal_sum(t0, t1, a, e);
                    continue;
                }
                for (long t = t0; t < t1; t++) { // j in [max(a, t - W + 1), min(e - 1, t)]
                    long lo = a > t - d->window + 1 ? a : t - d->window + 1;
                    long hi = e - 1 < t ? e - 1 : t;
                    if (hi >= lo) st->pairs += hi - lo + 1;
                }
            }
        }
    if (c->kind == ATTN_MS && !d->dense) {
        for (int b = d->first; b < d->nblk; b++) {
            if (b == d->nblk - 1 && d->last_dense) continue;
            if (c->select == SELECT_GROUP) {
                st->select_dots += attn_ms_eligible(d, b, -1);
                continue;
            }
            for (int g = b * d->M; g < min_i(d->N, (b + 1) * d->M); g++)
                st->select_dots += attn_ms_eligible(d, b, g);
        }
        st->select_dots *= H;
    } else if (c->kind == ATTN_MOBA && !d->dense) {
        for (long t = 0; t < T; t++) st->select_dots += t / c->block; // every strictly past block
        st->select_dots *= H;
    }
}

// ---- the layer glue ------------------------------------------------------------------------------

void attn_layer_free(AttnLayer *al, const Backend *be) {
    if (al->ix.idx) be->free(al->ix.idx);
    if (al->qpos_mem) be->free(al->qpos_mem);
    al->ix.idx = al->ix.kpos = al->ix.qpos = al->qpos_mem = NULL;
    al->cap_idx = al->cap_qpos = 0;
}

// Sizes the index list for (B, T): shape from attn_dims, arrays grown on demand (kpos shares the
// idx allocation's second half).
static void layer_plan(AttnLayer *al, const Backend *be, const AttnDims *d, int B, int H) {
    size_t n = (size_t)B * H * d->nblk * d->width, nq = (size_t)B * H * d->nblk;
    size_t want = d->reindex ? 2 * n : n;
    if (want > al->cap_idx) {
        if (al->ix.idx) be->free(al->ix.idx);
        al->ix.idx = be->alloc(want * sizeof(int));
        al->cap_idx = want;
    }
    if (d->reindex && nq > al->cap_qpos) {
        if (al->qpos_mem) be->free(al->qpos_mem);
        al->qpos_mem = be->alloc(nq * sizeof(int));
        al->cap_qpos = nq;
    }
    al->ix.qblock = d->qblock, al->ix.nblk = d->nblk, al->ix.region = d->region;
    al->ix.width = d->width, al->ix.window = d->window;
    al->ix.kpos = d->reindex ? al->ix.idx + n : NULL;
    al->ix.qpos = d->reindex ? al->qpos_mem : NULL;
}

void attn_layer_fwd(AttnLayer *al, const Backend *be, float *out, float *lse, const float *q,
                    const float *k, const float *qr, const float *kr, const float *v, int B, int T,
                    int H, int KVH, int D, const float *inv_freq, int rope_style, int eval) {
    AttnDims *d = &al->dims;
    int keep = al->frozen && al->mode && al->B == B && al->T == T;
    MS_ASSERT(attn_dims(&al->cfg, T, d) == 0, "%s", ms_error());
    al->B = B, al->T = T;
    int dense = al->cfg.kind == ATTN_DENSE || (eval && al->cfg.eval == ATTN_EVAL_DENSE) ||
                (d->dense && !d->reindex);
    if (dense) {
        al->mode = 0;
        be->attention_fwd(out, lse, qr, kr, v, B, T, H, KVH, D);
        return;
    }
    al->mode = d->reindex ? 2 : 1;
    layer_plan(al, be, d, B, H);
    al->ix.inv_freq = inv_freq;
    al->ix.rope_style = rope_style;
    int unrot = al->cfg.kind == ATTN_MS && al->cfg.select_on == SELECT_ON_UNROTATED;
    if (!keep)
        be->attention_select(&al->ix, &al->cfg, unrot ? q : qr, unrot ? k : kr, B, T, H, KVH, D);
    if (al->mode == 2) be->sparse_attention_fwd(out, lse, q, k, v, &al->ix, B, T, H, KVH, D);
    else be->sparse_attention_fwd(out, lse, qr, kr, v, &al->ix, B, T, H, KVH, D);
}

int attn_layer_bwd(AttnLayer *al, const Backend *be, float *dq, float *dk, float *dv,
                   const float *dout, const float *out, const float *lse, const float *q,
                   const float *k, const float *qr, const float *kr, const float *v, int H,
                   int KVH, int D) {
    int B = al->B, T = al->T;
    if (al->mode == 0) {
        be->attention_bwd(dq, dk, dv, dout, out, lse, qr, kr, v, B, T, H, KVH, D);
        return 0;
    }
    int raw = al->mode == 2;
    be->sparse_attention_bwd(dq, dk, dv, dout, out, lse, raw ? q : qr, raw ? k : kr, v, &al->ix,
                             B, T, H, KVH, D);
    return raw;
}

void attn_layer_stats(const AttnLayer *al, const Backend *be, int H, int D, AttnStats *st) {
    (void)D;
    int T = al->T;
    memset(st, 0, sizeof *st);
    st->causal_pairs = (double)H * T * (T + 1) / 2;
    if (al->mode == 0) {
        st->pairs = st->causal_pairs;
        return;
    }
    const AttnDims *d = &al->dims;
    size_t n = (size_t)H * d->nblk * d->width; // batch item 0: the counts do not depend on data
    int *host = ms_malloc(n * sizeof(int));
    be->download(host, al->ix.idx, n * sizeof(int));
    attn_count(&al->cfg, d, host, H, T, st);
    free(host);
}

// ---- canonical text ------------------------------------------------------------------------------

typedef struct {
    char *buf;
    size_t len, cap;
} Str;

static void put(Str *s, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(s->buf + s->len, s->cap - s->len, fmt, ap);
        va_end(ap);
        if ((size_t)n < s->cap - s->len) {
            s->len += n;
            return;
        }
        s->cap = s->cap * 2 + n;
        s->buf = ms_realloc(s->buf, s->cap);
    }
}

// Calls f(key, value-as-text, is_string) for the kind's knobs in a fixed order.
typedef void (*KnobFn)(void *ctx, const char *key, const char *val, int is_str);
static void each_knob(const AttnConfig *c, KnobFn f, void *ctx) {
    char v[64];
#define I(key, x) (snprintf(v, sizeof v, "%d", (x)), f(ctx, key, v, 0))
#define F(key, x) (snprintf(v, sizeof v, "%.9g", (double)(x)), f(ctx, key, v, 0))
#define C(key, x, names) f(ctx, key, names[x], 1)
    C("kind", c->kind, attn_kind_names);
    switch (c->kind) {
    case ATTN_MS:
        I("w", c->w), I("top", c->top), F("ratio", c->ratio), I("merge", c->merge);
        I("prefix", c->prefix), C("pool", c->pool, attn_pool_names);
        C("score", c->score, attn_score_names), C("select", c->select, attn_select_names);
        C("order", c->order, attn_order_names), I("local_groups", c->local_groups);
        C("select_on", c->select_on, attn_select_on_names);
        C("positions", c->positions, attn_positions_names), C("tail", c->tail, attn_tail_names);
        break;
    case ATTN_MOBA: I("block", c->block), I("top", c->top); break;
    case ATTN_S2: F("ratio", c->ratio), I("group", c->group); break;
    case ATTN_WINDOW: I("window", c->window); break;
    }
    if (c->kind != ATTN_DENSE) C("eval", c->eval, attn_eval_names);
#undef I
#undef F
#undef C
}

static void json_knob(void *ctx, const char *key, const char *val, int is_str) {
    Str *s = ctx;
    put(s, "%s\"%s\":%s%s%s", s->len > 1 ? "," : "", key, is_str ? "\"" : "", val,
        is_str ? "\"" : "");
}

char *attn_config_json(const AttnConfig *c) {
    Str s = {ms_malloc(256), 0, 256};
    put(&s, "{");
    each_knob(c, json_knob, &s);
    put(&s, "}");
    return s.buf;
}

typedef struct {
    const char *prefix;
    AttnEmitFn emit;
    void *ctx;
} EmitCtx;

static void emit_knob(void *ctx, const char *key, const char *val, int is_str) {
    (void)is_str;
    EmitCtx *e = ctx;
    char k[160];
    snprintf(k, sizeof k, "%s.%s", e->prefix, key);
    e->emit(e->ctx, k, val);
}

void attn_config_emit(const AttnConfig *c, const char *prefix, AttnEmitFn emit, void *ctx) {
    EmitCtx e = {prefix, emit, ctx};
    each_knob(c, emit_knob, &e);
}
