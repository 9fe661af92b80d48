// model_decode.c: the Llama block of model.c on new tokens over a KV cache (see model_decode.h).
#include "model_decode.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"

int kvcache_create(KVCache *c, const Model *m, int cap, int chunk) {
    memset(c, 0, sizeof *c);
    const Backend *be = m->be;
    if (!be->attention_decode)
        return ms_fail("generation: the %s backend has no attention_decode (KV-cache attention)", be->name);
    if (cap <= 0) return ms_fail("generation: KV cache capacity %d must be positive", cap);
    const ModelConfig *mc = &m->cfg;
    size_t L = mc->layers, C = mc->dim, F = mc->ffn, V = mc->vocab;
    size_t KVD = (size_t)mc->kv_heads * (mc->dim / mc->heads);
    c->cap = cap;
    c->chunk = chunk > 0 ? chunk : 64;
    size_t N = (size_t)c->chunk;
    c->k = be->alloc(sizeof(float) * L * cap * KVD);
    c->v = be->alloc(sizeof(float) * L * cap * KVD);
    struct { float **p; size_t n; } plan[] = {
        {&c->x, N * C},    {&c->xn, N * C},   {&c->q, N * C},  {&c->qr, N * C},
        {&c->kn, N * KVD}, {&c->att, N * C},  {&c->tmp, N * C}, {&c->gate, N * F},
        {&c->up, N * F},   {&c->h, N * F},    {&c->rstd, N},    {&c->pos, N},
        {&c->logits, N * V}, {(float **)&c->tokens, N},
    };
    size_t total = 0, count = sizeof plan / sizeof plan[0];
    for (size_t i = 0; i < count; i++) total += (plan[i].n + 15) & ~(size_t)15;
    c->block = be->alloc(total * sizeof(float));
    float *ptr = c->block;
    for (size_t i = 0; i < count; i++) {
        *plan[i].p = ptr;
        ptr += (plan[i].n + 15) & ~(size_t)15;
    }
    c->pos_host = ms_malloc(sizeof(float) * N);
    return 0;
}

void kvcache_free(KVCache *c, const Model *m) {
    if (c->block) {
        m->be->free(c->k);
        m->be->free(c->v);
        m->be->free(c->block);
    }
    free(c->pos_host);
    memset(c, 0, sizeof *c);
}

// n <= c->chunk tokens at positions c->len ..; logits of the last row, or of all rows.
static void forward_chunk(Model *m, KVCache *c, const int *tokens, int n, float *logits, int all) {
    const Backend *be = m->be;
    const ModelConfig *mc = &m->cfg;
    const ParamTensors *p = &m->params;
    int C = mc->dim, F = mc->ffn, V = mc->vocab, H = mc->heads, KVH = mc->kv_heads;
    int hd = C / H, KVD = KVH * hd, p0 = c->len;
    size_t cap = (size_t)c->cap;

    // positions as model_forward's defaults; q scaled by mscale^2 as there
    for (int i = 0; i < n; i++)
        c->pos_host[i] = m->pos_stride == 1.0 ? (float)(p0 + i) : (float)((p0 + i) * m->pos_stride);
    be->upload(c->pos, c->pos_host, sizeof(float) * (size_t)n);
    be->upload(c->tokens, tokens, sizeof(int) * (size_t)n);
    float qscale = m->rope_mscale * m->rope_mscale;

    be->embedding_fwd(c->x, c->tokens, p->t[P_WTE], n, C);
    for (int l = 0; l < mc->layers; l++) {
        float *kc = c->k + (size_t)l * cap * KVD, *vc = c->v + (size_t)l * cap * KVD;
        be->rmsnorm_fwd(c->xn, c->rstd, c->x, p->t[P_ATTN_NORM] + (size_t)l * C, n, C, mc->norm_eps);
        be->matmul_fwd(c->q, c->xn, p->t[P_WQ] + (size_t)l * C * C, n, C, C);
        be->matmul_fwd(c->kn, c->xn, p->t[P_WK] + (size_t)l * KVD * C, n, C, KVD);
        be->matmul_fwd(vc + (size_t)p0 * KVD, c->xn, p->t[P_WV] + (size_t)l * KVD * C, n, C, KVD);
        be->rope_fwd(c->qr, c->q, c->pos, m->inv_freq, n, H, hd, mc->rope_style);
        be->rope_fwd(kc + (size_t)p0 * KVD, c->kn, c->pos, m->inv_freq, n, KVH, hd, mc->rope_style);
        if (qscale != 1.0f) be->scale(c->qr, qscale, (size_t)n * C);
        be->attention_decode(c->att, c->qr, kc, vc, n, p0, H, KVH, hd);
        be->matmul_fwd(c->tmp, c->att, p->t[P_WO] + (size_t)l * C * C, n, C, C);
        be->add(c->x, c->x, c->tmp, (size_t)n * C);

        be->rmsnorm_fwd(c->xn, c->rstd, c->x, p->t[P_FFN_NORM] + (size_t)l * C, n, C, mc->norm_eps);
        be->matmul_fwd(c->gate, c->xn, p->t[P_W1] + (size_t)l * F * C, n, C, F);
        be->matmul_fwd(c->up, c->xn, p->t[P_W3] + (size_t)l * F * C, n, C, F);
        be->swiglu_fwd(c->h, c->gate, c->up, (size_t)n * F);
        be->matmul_fwd(c->tmp, c->h, p->t[P_W2] + (size_t)l * C * F, n, F, C);
        be->add(c->x, c->x, c->tmp, (size_t)n * C);
    }
    c->len += n;
    if (!logits) return;
    int rows = all ? n : 1;
    const float *last = c->x + (size_t)(n - rows) * C;
    const float *wcls = mc->tied ? p->t[P_WTE] : p->t[P_WCLS];
    be->rmsnorm_fwd(c->xn, c->rstd, last, p->t[P_FINAL_NORM], rows, C, mc->norm_eps);
    be->matmul_fwd(c->logits, c->xn, wcls, rows, C, V);
    be->download(logits, c->logits, sizeof(float) * (size_t)rows * V);
}

int model_forward_cached(Model *m, KVCache *c, const int *tokens, int n, float *logits, int all) {
    if (n <= 0) return ms_fail("generation: no tokens to run");
    if ((long)c->len + n > c->cap)
        return ms_fail("generation: %d positions would exceed the KV cache (%d of %d used)", n,
                       c->len, c->cap);
    int V = m->cfg.vocab;
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= V)
            return ms_fail("generation: token %d at position %d is outside the vocab (%d)", tokens[i],
                           c->len + i, V);
    for (int i0 = 0; i0 < n; i0 += c->chunk) {
        int k = n - i0 < c->chunk ? n - i0 : c->chunk, last = i0 + k == n;
        float *out = !logits ? NULL : all ? logits + (size_t)i0 * V : last ? logits : NULL;
        forward_chunk(m, c, tokens + i0, k, out, all);
    }
    return 0;
}
