// model.c: Llama-style decoder, forward and backward, written against the backend table only.
#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "lora.h"

const char *const model_param_names[P_COUNT] = {
    "wte", "attn_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w1", "w2", "w3", "final_norm", "wcls",
};

ModelConfig model_config_default(void) {
    return (ModelConfig){.dim = 128, .layers = 4, .heads = 4, .kv_heads = 4, .ffn = 344,
                         .vocab = 256, .seq_len = 128, .tied = 1, .rope_style = ROPE_INTERLEAVED,
                         .rope_base = 10000.0f, .norm_eps = 1e-5f};
}

int model_config_check(const ModelConfig *c) {
#define POSITIVE(field)                                                                       \
    if (c->field <= 0) return ms_fail("model." #field " (%d) must be positive", c->field)
    POSITIVE(dim);
    POSITIVE(layers);
    POSITIVE(heads);
    POSITIVE(kv_heads);
    POSITIVE(ffn);
    POSITIVE(vocab);
    POSITIVE(seq_len);
#undef POSITIVE
    if (c->dim % c->heads)
        return ms_fail("model.heads (%d) must divide model.dim (%d)", c->heads, c->dim);
    if (c->heads % c->kv_heads)
        return ms_fail("model.kv_heads (%d) must divide model.heads (%d)", c->kv_heads, c->heads);
    if ((c->dim / c->heads) % 2)
        return ms_fail("model.dim / model.heads = %d: the head dimension must be even for RoPE",
                       c->dim / c->heads);
    if (c->vocab > 65536) return ms_fail("model.vocab (%d) must be at most 65536", c->vocab);
    if (!(c->rope_base > 1.0f)) return ms_fail("positions.base (%g) must be > 1", c->rope_base);
    if (!(c->norm_eps > 0.0f)) return ms_fail("model.norm_eps (%g) must be > 0", c->norm_eps);
    if (c->rope_style != ROPE_INTERLEAVED && c->rope_style != ROPE_HALVES)
        return ms_fail("model.rope_style (%d) is not a RoPE convention", c->rope_style);
    return 0;
}

size_t model_param_sizes(const ModelConfig *c, size_t size[P_COUNT]) {
    size_t C = c->dim, L = c->layers, F = c->ffn, V = c->vocab;
    size_t KVD = (size_t)c->kv_heads * (c->dim / c->heads);
    size[P_WTE] = V * C;
    size[P_ATTN_NORM] = L * C;
    size[P_WQ] = L * C * C;
    size[P_WK] = L * KVD * C;
    size[P_WV] = L * KVD * C;
    size[P_WO] = L * C * C;
    size[P_FFN_NORM] = L * C;
    size[P_W1] = L * F * C;
    size[P_W2] = L * C * F;
    size[P_W3] = L * F * C;
    size[P_FINAL_NORM] = C;
    size[P_WCLS] = c->tied ? 0 : V * C;
    size_t total = 0;
    for (int i = 0; i < P_COUNT; i++) total += size[i];
    return total;
}

size_t model_num_params(const ModelConfig *cfg) {
    size_t size[P_COUNT];
    return model_param_sizes(cfg, size);
}

static void params_alloc(ParamTensors *p, const ModelConfig *cfg, const Backend *be) {
    model_param_sizes(cfg, p->size);
    p->total = model_num_params(cfg);
    p->base = be->alloc(p->total * sizeof(float));
    float *ptr = p->base;
    for (int i = 0; i < P_COUNT; i++) {
        p->t[i] = ptr;
        ptr += p->size[i];
    }
}

int model_create(Model *m, const ModelConfig *cfg, const Backend *be) {
    memset(m, 0, sizeof *m);
    if (model_config_check(cfg)) return -1;
    m->cfg = *cfg;
    m->be = be;
    params_alloc(&m->params, cfg, be);
    params_alloc(&m->grads, cfg, be);
    int hd = cfg->dim / cfg->heads;
    float *inv = ms_malloc(sizeof(float) * hd / 2);
    for (int i = 0; i < hd / 2; i++) inv[i] = (float)pow(cfg->rope_base, -2.0 * i / hd);
    m->inv_freq = be->alloc(sizeof(float) * hd / 2);
    be->upload(m->inv_freq, inv, sizeof(float) * hd / 2);
    free(inv);
    m->pos_stride = 1.0;
    m->rope_mscale = 1.0f;
    m->attn = ms_calloc((size_t)cfg->layers, sizeof(AttnLayer));
    for (int l = 0; l < cfg->layers; l++) m->attn[l].cfg = attn_config_default(ATTN_DENSE);
    return 0;
}

int model_set_attention(Model *m, const AttnConfig *cfgs) {
    for (int l = 0; l < m->cfg.layers; l++) {
        AttnConfig c = cfgs ? cfgs[l] : attn_config_default(ATTN_DENSE);
        char where[48];
        snprintf(where, sizeof where, "attention.layers[%d]", l + 1);
        if (attn_config_check(&c, where)) return -1;
        if (c.kind != ATTN_DENSE && !(m->be->attention_select && m->be->sparse_attention_fwd &&
                                      m->be->sparse_attention_bwd))
            return ms_fail("%s.kind: \"%s\" is not available on the %s backend yet", where,
                           attn_kind_names[c.kind], m->be->name);
        m->attn[l].cfg = c;
    }
    return 0;
}

void model_set_eval(Model *m, int eval) { m->eval_mode = eval; }

void model_attention_stats(const Model *m, AttnStats *st) {
    memset(st, 0, sizeof *st);
    for (int l = 0; l < m->cfg.layers; l++) {
        AttnStats s;
        attn_layer_stats(&m->attn[l], m->be, m->cfg.heads, m->cfg.dim / m->cfg.heads, &s);
        st->pairs += s.pairs, st->causal_pairs += s.causal_pairs, st->select_dots += s.select_dots;
    }
}

void model_init_weights(Model *m, uint64_t seed) {
    const ModelConfig *c = &m->cfg;
    Rng rng;
    rng_seed(&rng, seed);
    float *host = ms_malloc(m->params.total * sizeof(float));
    float resid_scale = 1.0f / sqrtf(2.0f * c->layers); // GPT-2: keep the residual stream's variance
    size_t off = 0;
    for (int i = 0; i < P_COUNT; i++) {
        size_t n = m->params.size[i];
        int is_norm = i == P_ATTN_NORM || i == P_FFN_NORM || i == P_FINAL_NORM;
        float std = 0.02f * ((i == P_WO || i == P_W2) ? resid_scale : 1.0f);
        for (size_t j = 0; j < n; j++) host[off + j] = is_norm ? 1.0f : std * rng_normal(&rng);
        off += n;
    }
    m->be->upload(m->params.base, host, m->params.total * sizeof(float));
    free(host);
}

static void acts_free(Model *m) {
    if (m->acts.block) m->be->free(m->acts.block);
    memset(&m->acts, 0, sizeof m->acts);
}

void model_destroy(Model *m) {
    if (!m->be) return;
    acts_free(m);
    m->be->free(m->params.base);
    m->be->free(m->grads.base);
    m->be->free(m->inv_freq);
    for (int l = 0; m->attn && l < m->cfg.layers; l++) attn_layer_free(&m->attn[l], m->be);
    free(m->attn);
    free(m->pos_host);
    lora_detach(m);
    memset(m, 0, sizeof *m);
}

// Carves every activation and scratch buffer for N = B*T rows out of one allocation.
static void acts_ensure(Model *m, int B, int T) {
    Activations *a = &m->acts;
    size_t N = (size_t)B * T;
    if (N <= a->capacity && a->fwd_only == m->forward_only) return;
    acts_free(m);
    const ModelConfig *c = &m->cfg;
    size_t L = c->layers, C = c->dim, F = c->ffn, V = c->vocab, H = c->heads;
    size_t KVD = (size_t)c->kv_heads * (c->dim / c->heads);
    size_t LP = L; // layers of positions: all, in both modes
    // forward-only: one layer slot (two for the residual stream, ping-pong), no backward scratch
    size_t ND = m->forward_only ? 0 : N;
    if (m->forward_only) L = 1;
    struct { float **p; size_t n; } plan[] = {
        {&a->x, (L + 1) * N * C}, {&a->xmid, L * N * C},  {&a->ln1, L * N * C},
        {&a->rstd1, L * N},       {&a->q, L * N * C},     {&a->k, L * N * KVD},
        {&a->v, L * N * KVD},     {&a->qr, L * N * C},    {&a->kr, L * N * KVD},
        {&a->att, L * N * C},     {&a->lse, L * H * N},   {&a->ln2, L * N * C},
        {&a->rstd2, L * N},       {&a->gate, L * N * F},  {&a->up, L * N * F},
        {&a->h, L * N * F},       {&a->lnf, N * C},       {&a->rstdf, N},
        {&a->logits, N * V},      {&a->losses, N},        {&a->pos, LP * N},
        {&a->tmp, N * C},         {&a->dx, ND * C},       {&a->dln, ND * C},
        {&a->dq, ND * C},         {&a->dk, ND * KVD},     {&a->dv, ND * KVD},
        {&a->dqr, ND * C},        {&a->dkr, ND * KVD},    {&a->datt, ND * C},
        {&a->dgate, ND * F},      {&a->dup, ND * F},      {&a->dh, ND * F},
        {&a->dlogits, ND * V},    {(float **)&a->tokens, N}, {(float **)&a->targets, N},
    };
    size_t total = 0, count = sizeof plan / sizeof plan[0];
    for (size_t i = 0; i < count; i++) total += (plan[i].n + 15) & ~(size_t)15; // 64-byte aligned
    a->block = m->be->alloc(total * sizeof(float));
    float *ptr = a->block;
    for (size_t i = 0; i < count; i++) {
        *plan[i].p = ptr;
        ptr += (plan[i].n + 15) & ~(size_t)15;
    }
    a->capacity = N;
    a->fwd_only = m->forward_only;
    m->acts_bytes = total * sizeof(float);
    m->pos_host = ms_realloc(m->pos_host, LP * N * sizeof(float));
}

void model_set_forward_only(Model *m, int on) { m->forward_only = on != 0; }

void model_set_positions(Model *m, const float *pos_host, int B, int T) {
    acts_ensure(m, B, T);
    if (!pos_host) {
        m->pos_override = 0;
        return;
    }
    size_t N = (size_t)B * T;
    for (int l = 0; l < m->cfg.layers; l++) memcpy(m->pos_host + l * N, pos_host, N * sizeof(float));
    m->pos_override = 1;
}

void model_set_layer_positions(Model *m, const float *pos_host, int B, int T) {
    acts_ensure(m, B, T);
    memcpy(m->pos_host, pos_host, (size_t)m->cfg.layers * B * T * sizeof(float));
    m->pos_override = 1;
}

void model_set_position_stride(Model *m, double stride) { m->pos_stride = stride; }
void model_set_rope_mscale(Model *m, float mscale) { m->rope_mscale = mscale; }

void model_set_inv_freq(Model *m, const float *inv_freq_host) {
    int hd = m->cfg.dim / m->cfg.heads;
    m->be->upload(m->inv_freq, inv_freq_host, sizeof(float) * hd / 2);
}

float model_forward(Model *m, const int *tokens, const int *targets, int B, int T) {
    const Backend *be = m->be;
    const ModelConfig *c = &m->cfg;
    acts_ensure(m, B, T);
    Activations *a = &m->acts;
    const ParamTensors *p = &m->params;
    int N = B * T, C = c->dim, F = c->ffn, V = c->vocab, H = c->heads, KVH = c->kv_heads;
    int hd = C / H, KVD = KVH * hd;

    if (!m->pos_override)
        for (int l = 0; l < c->layers; l++)
            for (int b = 0; b < B; b++)
                for (int t = 0; t < T; t++)
                    m->pos_host[((size_t)l * B + b) * T + t] =
                        m->pos_stride == 1.0 ? (float)t : (float)(t * m->pos_stride);
    m->pos_override = 0; // positions apply to one forward (and its backward)
    be->upload(a->pos, m->pos_host, (size_t)c->layers * N * sizeof(float));
    // YaRN scales q and k by mscale (logits by mscale^2): scaling rotated q by mscale^2 gives the
    // same logits, and MS selection scores, with one pass instead of two.
    float qscale = m->rope_mscale * m->rope_mscale;
    be->upload(a->tokens, tokens, (size_t)N * sizeof(int));
    // the targets now, while the device is idle: uploaded after the forward's ops were queued, the
    // copy waited for all of them and left the device idle until the loss's ops came
    if (targets) be->upload(a->targets, targets, (size_t)N * sizeof(int));
    m->B = B;
    m->T = T;
    m->n_targets = 0;

    be->embedding_fwd(a->x, a->tokens, p->t[P_WTE], N, C);
    int fo = m->forward_only; // one layer slot: every layer writes slot 0, x alternates 0 / 1
    for (int l = 0; l < c->layers; l++) {
        size_t s = fo ? 0 : (size_t)l, xs = fo ? (size_t)(l & 1) : (size_t)l; // buffer slots
        float *x = a->x + xs * N * C, *xmid = a->xmid + s * N * C;
        float *ln1 = a->ln1 + s * N * C, *rstd1 = a->rstd1 + s * N;
        float *q = a->q + s * N * C, *k = a->k + s * N * KVD;
        float *v = a->v + s * N * KVD, *qr = a->qr + s * N * C;
        float *kr = a->kr + s * N * KVD, *att = a->att + s * N * C;
        float *lse = a->lse + s * H * N;
        float *ln2 = a->ln2 + s * N * C, *rstd2 = a->rstd2 + s * N;
        float *gate = a->gate + s * N * F, *up = a->up + s * N * F;
        float *h = a->h + s * N * F, *xnext = a->x + (fo ? 1 - xs : xs + 1) * N * C;

        be->rmsnorm_fwd(ln1, rstd1, x, p->t[P_ATTN_NORM] + (size_t)l * C, N, C, c->norm_eps);
        be->matmul_fwd(q, ln1, p->t[P_WQ] + (size_t)l * C * C, N, C, C);
        be->matmul_fwd(k, ln1, p->t[P_WK] + (size_t)l * KVD * C, N, C, KVD);
        be->matmul_fwd(v, ln1, p->t[P_WV] + (size_t)l * KVD * C, N, C, KVD);
        if (m->lora) { // LoRA adapters add s (x A^T) B^T to each target's output (core/lora.c)
            lora_fwd(m, LORA_Q, l, q, ln1, N);
            lora_fwd(m, LORA_K, l, k, ln1, N);
            lora_fwd(m, LORA_V, l, v, ln1, N);
        }
        const float *pos = a->pos + (size_t)l * N;
        be->rope_fwd(qr, q, pos, m->inv_freq, N, H, hd, c->rope_style);
        be->rope_fwd(kr, k, pos, m->inv_freq, N, KVH, hd, c->rope_style);
        if (qscale != 1.0f) be->scale(qr, qscale, (size_t)N * C);
        attn_layer_fwd(&m->attn[l], be, att, lse, q, k, qr, kr, v, B, T, H, KVH, hd, m->inv_freq,
                       c->rope_style, m->eval_mode);
        be->matmul_fwd(a->tmp, att, p->t[P_WO] + (size_t)l * C * C, N, C, C);
        if (m->lora) lora_fwd(m, LORA_O, l, a->tmp, att, N);
        be->add(xmid, x, a->tmp, (size_t)N * C);

        be->rmsnorm_fwd(ln2, rstd2, xmid, p->t[P_FFN_NORM] + (size_t)l * C, N, C, c->norm_eps);
        be->matmul_fwd(gate, ln2, p->t[P_W1] + (size_t)l * F * C, N, C, F);
        be->matmul_fwd(up, ln2, p->t[P_W3] + (size_t)l * F * C, N, C, F);
        if (m->lora) lora_fwd(m, LORA_GATE, l, gate, ln2, N), lora_fwd(m, LORA_UP, l, up, ln2, N);
        be->swiglu_fwd(h, gate, up, (size_t)N * F);
        be->matmul_fwd(a->tmp, h, p->t[P_W2] + (size_t)l * C * F, N, F, C);
        if (m->lora) lora_fwd(m, LORA_DOWN, l, a->tmp, h, N);
        be->add(xnext, xmid, a->tmp, (size_t)N * C);
    }
    const float *wcls = c->tied ? p->t[P_WTE] : p->t[P_WCLS];
    be->rmsnorm_fwd(a->lnf, a->rstdf, a->x + (size_t)(fo ? c->layers & 1 : c->layers) * N * C,
                    p->t[P_FINAL_NORM], N, C, c->norm_eps);
    be->matmul_fwd(a->logits, a->lnf, wcls, N, C, V);
    if (!targets) return 0.0f;

    for (int i = 0; i < N; i++) m->n_targets += targets[i] >= 0;
    be->crossentropy_fwd(a->losses, a->logits, a->targets, N, V);
    float *losses = ms_malloc((size_t)N * sizeof(float));
    be->download(losses, a->losses, (size_t)N * sizeof(float));
    double sum = 0; // fixed order on the host: the reported loss is deterministic
    for (int i = 0; i < N; i++) sum += losses[i];
    free(losses);
    return m->n_targets ? (float)(sum / m->n_targets) : 0.0f;
}

void model_zero_grad(Model *m) {
    m->be->zero(m->grads.base, m->grads.total);
    lora_zero_grad(m);
}

void model_backward(Model *m) {
    const Backend *be = m->be;
    const ModelConfig *c = &m->cfg;
    Activations *a = &m->acts;
    const ParamTensors *p = &m->params;
    const ParamTensors *g = &m->grads;
    int B = m->B, T = m->T, N = B * T, C = c->dim, F = c->ffn, V = c->vocab;
    int H = c->heads, KVH = c->kv_heads, hd = C / H, KVD = KVH * hd;
    MS_ASSERT(m->n_targets > 0, "model_backward needs a forward with targets");
    MS_ASSERT(!m->acts.fwd_only, "model_backward after a forward-only forward");

    const float *wcls = c->tied ? p->t[P_WTE] : p->t[P_WCLS];
    // GRAD: a frozen tensor (LoRA, core/lora.h) gets no weight gradient (NULL: not computed)
#define GRAD(i, off) (lora_base_trainable(m, i) ? g->t[i] + (off) : NULL)
    float *dwcls = c->tied ? GRAD(P_WTE, 0) : GRAD(P_WCLS, 0);
    be->zero(a->dlogits, (size_t)N * V);
    be->crossentropy_bwd(a->dlogits, a->logits, a->targets, 1.0f / m->n_targets, N, V);
    be->zero(a->dln, (size_t)N * C);
    be->matmul_bwd(a->dln, dwcls, a->dlogits, a->lnf, wcls, N, C, V);
    be->zero(a->dx, (size_t)N * C);
    be->rmsnorm_bwd(a->dx, GRAD(P_FINAL_NORM, 0), a->dln, a->x + (size_t)c->layers * N * C,
                    p->t[P_FINAL_NORM], a->rstdf, N, C);

    // a->dx holds d loss / d x[l+1] on entry to each iteration, d loss / d x[l] on exit.
    for (int l = c->layers - 1; l >= 0; l--) {
        float *x = a->x + (size_t)l * N * C, *xmid = a->xmid + (size_t)l * N * C;
        float *ln1 = a->ln1 + (size_t)l * N * C, *rstd1 = a->rstd1 + (size_t)l * N;
        float *v = a->v + (size_t)l * N * KVD, *qr = a->qr + (size_t)l * N * C;
        float *kr = a->kr + (size_t)l * N * KVD, *att = a->att + (size_t)l * N * C;
        float *lse = a->lse + (size_t)l * H * N;
        float *ln2 = a->ln2 + (size_t)l * N * C, *rstd2 = a->rstd2 + (size_t)l * N;
        float *gate = a->gate + (size_t)l * N * F, *up = a->up + (size_t)l * N * F;
        float *h = a->h + (size_t)l * N * F;

        // MLP branch: x[l+1] = xmid + W2 swiglu(W1 ln2, W3 ln2); the residual passes dx through.
        be->zero(a->dh, (size_t)N * F);
        be->matmul_bwd(a->dh, GRAD(P_W2, (size_t)l * C * F), a->dx, h,
                       p->t[P_W2] + (size_t)l * C * F, N, F, C);
        if (m->lora) lora_bwd(m, LORA_DOWN, l, a->dh, a->dx, h, N);
        be->zero(a->dgate, (size_t)N * F);
        be->zero(a->dup, (size_t)N * F);
        be->swiglu_bwd(a->dgate, a->dup, a->dh, gate, up, (size_t)N * F);
        be->zero(a->dln, (size_t)N * C);
        be->matmul_bwd(a->dln, GRAD(P_W1, (size_t)l * F * C), a->dgate, ln2,
                       p->t[P_W1] + (size_t)l * F * C, N, C, F);
        be->matmul_bwd(a->dln, GRAD(P_W3, (size_t)l * F * C), a->dup, ln2,
                       p->t[P_W3] + (size_t)l * F * C, N, C, F);
        if (m->lora) lora_bwd(m, LORA_GATE, l, a->dln, a->dgate, ln2, N), lora_bwd(m, LORA_UP, l, a->dln, a->dup, ln2, N);
        be->rmsnorm_bwd(a->dx, GRAD(P_FFN_NORM, (size_t)l * C), a->dln, xmid,
                        p->t[P_FFN_NORM] + (size_t)l * C, rstd2, N, C);

        // Attention branch: xmid = x + Wo attn(rope(Wq ln1), rope(Wk ln1), Wv ln1).
        be->zero(a->datt, (size_t)N * C);
        be->matmul_bwd(a->datt, GRAD(P_WO, (size_t)l * C * C), a->dx, att,
                       p->t[P_WO] + (size_t)l * C * C, N, C, C);
        if (m->lora) lora_bwd(m, LORA_O, l, a->datt, a->dx, att, N);
        be->zero(a->dqr, (size_t)N * C);
        be->zero(a->dkr, (size_t)N * KVD);
        be->zero(a->dv, (size_t)N * KVD);
        // raw: the attention placed positions itself, dqr/dkr are gradients of the un-rotated q/k
        int raw = attn_layer_bwd(&m->attn[l], be, a->dqr, a->dkr, a->dv, a->datt, att, lse,
                                 a->q + (size_t)l * N * C, a->k + (size_t)l * N * KVD, qr, kr, v,
                                 H, KVH, hd);
        be->zero(a->dq, (size_t)N * C);
        be->zero(a->dk, (size_t)N * KVD);
        const float *pos = a->pos + (size_t)l * N;
        float qscale = m->rope_mscale * m->rope_mscale; // qr = qscale * rope(q): see the forward
        if (raw) {
            be->add(a->dq, a->dq, a->dqr, (size_t)N * C);
            be->add(a->dk, a->dk, a->dkr, (size_t)N * KVD);
        } else {
            if (qscale != 1.0f) be->scale(a->dqr, qscale, (size_t)N * C);
            be->rope_bwd(a->dq, a->dqr, pos, m->inv_freq, N, H, hd, c->rope_style);
            be->rope_bwd(a->dk, a->dkr, pos, m->inv_freq, N, KVH, hd, c->rope_style);
        }
        be->zero(a->dln, (size_t)N * C);
        be->matmul_bwd(a->dln, GRAD(P_WQ, (size_t)l * C * C), a->dq, ln1,
                       p->t[P_WQ] + (size_t)l * C * C, N, C, C);
        be->matmul_bwd(a->dln, GRAD(P_WK, (size_t)l * KVD * C), a->dk, ln1,
                       p->t[P_WK] + (size_t)l * KVD * C, N, C, KVD);
        be->matmul_bwd(a->dln, GRAD(P_WV, (size_t)l * KVD * C), a->dv, ln1,
                       p->t[P_WV] + (size_t)l * KVD * C, N, C, KVD);
        if (m->lora) {
            lora_bwd(m, LORA_Q, l, a->dln, a->dq, ln1, N);
            lora_bwd(m, LORA_K, l, a->dln, a->dk, ln1, N);
            lora_bwd(m, LORA_V, l, a->dln, a->dv, ln1, N);
        }
        be->rmsnorm_bwd(a->dx, GRAD(P_ATTN_NORM, (size_t)l * C), a->dln, x,
                        p->t[P_ATTN_NORM] + (size_t)l * C, rstd1, N, C);
    }
    if (lora_base_trainable(m, P_WTE)) be->embedding_bwd(g->t[P_WTE], a->dx, a->tokens, N, C);
#undef GRAD
}

void model_get_logits(const Model *m, float *host) {
    m->be->download(host, m->acts.logits, (size_t)m->B * m->T * m->cfg.vocab * sizeof(float));
}

void model_get_losses(const Model *m, float *host) {
    m->be->download(host, m->acts.losses, (size_t)m->B * m->T * sizeof(float));
}
