// lora.c: LoRA adapters as extra parameters of a Model (see lora.h).
#include "lora.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

const char *const lora_target_names[LORA_NT] = {"q", "k", "v", "o", "gate", "up", "down"};
static const int target_param[LORA_NT] = {P_WQ, P_WK, P_WV, P_WO, P_W1, P_W3, P_W2};

LoraConfig lora_config_default(void) {
    return (LoraConfig){.rank = 8, .alpha = 16.0f,
                        .targets = 1u << LORA_Q | 1u << LORA_K | 1u << LORA_V | 1u << LORA_O};
}

int lora_config_check(const LoraConfig *c, const ModelConfig *mc) {
    if (c->rank <= 0) return ms_fail("finetune.lora.rank (%d) must be positive", c->rank);
    if (mc && c->rank > mc->dim)
        return ms_fail("finetune.lora.rank (%d) must be at most model.dim (%d)", c->rank, mc->dim);
    if (!(c->alpha > 0)) return ms_fail("finetune.lora.alpha (%g) must be > 0", c->alpha);
    if (!c->targets || c->targets >= 1u << LORA_NT)
        return ms_fail("finetune.lora.targets must name at least one of q, k, v, o, gate, up, down");
    return 0;
}

static void widths(const ModelConfig *c, int in[LORA_NT], int out[LORA_NT]) {
    int C = c->dim, F = c->ffn, KVD = c->kv_heads * (c->dim / c->heads);
    int i[LORA_NT] = {C, C, C, C, C, C, F}, o[LORA_NT] = {C, KVD, KVD, C, F, F, C};
    memcpy(in, i, sizeof i);
    memcpy(out, o, sizeof o);
}

int lora_attach(Model *m, const LoraConfig *c, uint64_t seed) {
    if (lora_config_check(c, &m->cfg)) return -1;
    lora_detach(m);
    const Backend *be = m->be;
    Lora *lo = ms_calloc(1, sizeof *lo);
    lo->cfg = *c;
    lo->scale = c->alpha / c->rank;
    widths(&m->cfg, lo->in, lo->out);
    size_t L = m->cfg.layers, r = c->rank, total = 0;
    for (int t = 0; t < LORA_NT; t++)
        if (c->targets >> t & 1) total += L * r * (lo->in[t] + lo->out[t]);
    lo->total = total;
    lo->p = be->alloc(total * sizeof(float));
    lo->g = be->alloc(total * sizeof(float));
    lo->m = be->alloc(total * sizeof(float));
    lo->v = be->alloc(total * sizeof(float));
    float *host = ms_calloc(total, sizeof(float)); // B = 0
    Rng rng;
    rng_seed(&rng, seed ^ 0x10ea0a0a7eULL);
    size_t off = 0;
    for (int t = 0; t < LORA_NT; t++) {
        if (!(c->targets >> t & 1)) continue;
        size_t na = L * r * lo->in[t], nb = L * r * lo->out[t];
        float bound = 1.0f / sqrtf((float)lo->in[t]);
        for (size_t i = 0; i < na; i++) host[off + i] = bound * (float)(2 * rng_uniform(&rng) - 1);
        lo->A[t] = lo->p + off, lo->gA[t] = lo->g + off;
        lo->B[t] = lo->p + off + na, lo->gB[t] = lo->g + off + na;
        off += na + nb;
    }
    be->upload(lo->p, host, total * sizeof(float));
    free(host);
    m->lora = lo;
    return 0;
}

void lora_detach(Model *m) {
    Lora *lo = m->lora;
    if (!lo) return;
    const Backend *be = m->be;
    be->free(lo->p), be->free(lo->g), be->free(lo->m), be->free(lo->v);
    if (lo->u) be->free(lo->u), be->free(lo->du), be->free(lo->z);
    free(lo);
    m->lora = NULL;
}

int lora_base_trainable(const Model *m, int p) {
    const Lora *lo = m->lora;
    if (!lo) return 1;
    if (p == P_WTE) return lo->cfg.train_embeddings;
    if (p == P_ATTN_NORM || p == P_FFN_NORM || p == P_FINAL_NORM) return lo->cfg.train_norms;
    return 0;
}

static void scratch(Model *m, int N) {
    Lora *lo = m->lora;
    if ((size_t)N <= lo->cap) return;
    const Backend *be = m->be;
    if (lo->u) be->free(lo->u), be->free(lo->du), be->free(lo->z);
    int wide = 0;
    for (int t = 0; t < LORA_NT; t++) wide = lo->out[t] > wide ? lo->out[t] : wide;
    lo->u = be->alloc((size_t)N * lo->cfg.rank * sizeof(float));
    lo->du = be->alloc((size_t)N * lo->cfg.rank * sizeof(float));
    lo->z = be->alloc((size_t)N * wide * sizeof(float));
    lo->cap = (size_t)N;
}

void lora_fwd(Model *m, int t, int layer, float *out, const float *inp, int N) {
    Lora *lo = m->lora;
    if (!lo || !lo->A[t]) return;
    const Backend *be = m->be;
    scratch(m, N);
    int r = lo->cfg.rank, in = lo->in[t], ou = lo->out[t];
    be->matmul_fwd(lo->u, inp, lo->A[t] + (size_t)layer * r * in, N, in, r);
    be->scale(lo->u, lo->scale, (size_t)N * r);
    be->matmul_fwd(lo->z, lo->u, lo->B[t] + (size_t)layer * ou * r, N, r, ou);
    be->add(out, out, lo->z, (size_t)N * ou);
}

// u = s x A^T (recomputed), dB += dy^T u, du = s dy B, dA += du^T x, dx += du A.
void lora_bwd(Model *m, int t, int layer, float *dinp, const float *dout, const float *inp, int N) {
    Lora *lo = m->lora;
    if (!lo || !lo->A[t]) return;
    const Backend *be = m->be;
    scratch(m, N);
    int r = lo->cfg.rank, in = lo->in[t], ou = lo->out[t];
    const float *A = lo->A[t] + (size_t)layer * r * in, *B = lo->B[t] + (size_t)layer * ou * r;
    be->matmul_fwd(lo->u, inp, A, N, in, r);
    be->scale(lo->u, lo->scale, (size_t)N * r);
    be->zero(lo->du, (size_t)N * r);
    be->matmul_bwd(lo->du, lo->gB[t] + (size_t)layer * ou * r, dout, lo->u, B, N, r, ou);
    be->scale(lo->du, lo->scale, (size_t)N * r);
    be->matmul_bwd(dinp, lo->gA[t] + (size_t)layer * r * in, lo->du, inp, A, N, in, r);
}

void lora_zero_grad(Model *m) {
    if (m->lora) m->be->zero(m->lora->g, m->lora->total);
}

double lora_grad_sumsq(const Model *m) {
    const Lora *lo = m->lora;
    double s = m->be->sumsq(lo->g, lo->total);
    for (int p = 0; p < P_COUNT; p++)
        if (m->grads.size[p] && lora_base_trainable(m, p)) s += m->be->sumsq(m->grads.t[p], m->grads.size[p]);
    return s;
}

void lora_scale_grads(Model *m, float s) {
    if (m->lora) m->be->scale(m->lora->g, s, m->lora->total);
}

void lora_adamw(Model *m, const OptimConfig *o, float lr, int step) {
    Lora *lo = m->lora;
    if (!lo) return;
    m->be->adamw(lo->p, lo->g, lo->m, lo->v, lo->total, lr, o->beta1, o->beta2, o->eps,
                 o->weight_decay, step + 1);
}

void lora_merge(Model *m) {
    Lora *lo = m->lora;
    if (!lo) return;
    const Backend *be = m->be;
    size_t L = m->cfg.layers, r = lo->cfg.rank;
    for (int t = 0; t < LORA_NT; t++) {
        if (!lo->A[t]) continue;
        size_t in = lo->in[t], ou = lo->out[t], nw = L * ou * in;
        float *W = ms_malloc(nw * sizeof(float)), *A = ms_malloc(L * r * in * sizeof(float));
        float *B = ms_malloc(L * ou * r * sizeof(float));
        float *Wd = m->params.t[target_param[t]];
        be->download(W, Wd, nw * sizeof(float));
        be->download(A, lo->A[t], L * r * in * sizeof(float));
        be->download(B, lo->B[t], L * ou * r * sizeof(float));
        for (size_t l = 0; l < L; l++)
            for (size_t o = 0; o < ou; o++)
                for (size_t i = 0; i < in; i++) {
                    double acc = 0;
                    for (size_t k = 0; k < r; k++)
                        acc += (double)B[(l * ou + o) * r + k] * A[(l * r + k) * in + i];
                    W[(l * ou + o) * in + i] += (float)(lo->scale * acc);
                }
        be->upload(Wd, W, nw * sizeof(float));
        free(W), free(A), free(B);
    }
    lora_detach(m);
}

size_t lora_num_trainable(const Model *m) {
    if (!m->lora) return m->params.total;
    size_t n = m->lora->total;
    for (int p = 0; p < P_COUNT; p++)
        if (lora_base_trainable(m, p)) n += m->params.size[p];
    return n;
}
