// LoRA adapters: identity at B = 0, finite-difference gradients of A, B and the trainable base
// tensors, frozen weights untouched by AdamW, merge (and safetensors export) equal to the adapters.
#include <stdlib.h>
#include <string.h>

#include "../core/common.h"
#include "../core/lora.h"
#include "../core/model.h"
#include "../core/optim.h"
#include "../core/safetensors.h"
#include "test.h"

static ModelConfig lora_model_config(int tied) {
    ModelConfig c = model_config_default();
    c.dim = 16, c.layers = 2, c.heads = 4, c.kv_heads = 2, c.ffn = 24, c.vocab = 20;
    c.seq_len = 8, c.tied = tied, c.rope_style = ROPE_HALVES;
    return c;
}

static LoraConfig all_targets(int emb, int norms) {
    LoraConfig l = lora_config_default();
    l.rank = 3, l.alpha = 6;
    l.targets = (1u << LORA_NT) - 1;
    l.train_embeddings = emb, l.train_norms = norms;
    return l;
}

static void make_model(Model *m, int tied, uint64_t seed) {
    ModelConfig c = lora_model_config(tied);
    CHECK(model_create(m, &c, backend_cpu()) == 0);
    Rng r;
    rng_seed(&r, seed);
    float *h = malloc(m->params.total * 4);
    size_t off = 0;
    for (int t = 0; t < P_COUNT; t++) {
        int norm = t == P_ATTN_NORM || t == P_FFN_NORM || t == P_FINAL_NORM;
        for (size_t i = 0; i < m->params.size[t]; i++)
            h[off + i] = norm ? 1.0f + 0.2f * rng_normal(&r) : 0.3f * rng_normal(&r);
        off += m->params.size[t];
    }
    m->be->upload(m->params.base, h, m->params.total * 4);
    free(h);
}

static void randomize_B(Model *m, uint64_t seed) {
    Lora *lo = m->lora;
    float *h = malloc(lo->total * 4);
    m->be->download(h, lo->p, lo->total * 4);
    Rng r;
    rng_seed(&r, seed);
    for (int t = 0; t < LORA_NT; t++) {
        if (!lo->B[t]) continue;
        size_t off = lo->B[t] - lo->p, n = (size_t)m->cfg.layers * lo->out[t] * lo->cfg.rank;
        for (size_t i = 0; i < n; i++) h[off + i] = 0.2f * rng_normal(&r);
    }
    m->be->upload(lo->p, h, lo->total * 4);
    free(h);
}

static void batch(int *tok, int *tgt, int n, int vocab, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < n; i++) tok[i] = (int)rng_below(&r, vocab), tgt[i] = (int)rng_below(&r, vocab);
}

TEST(lora_with_zero_b_leaves_the_model_unchanged) {
    Model m;
    make_model(&m, 0, 1);
    int tok[14], tgt[14];
    batch(tok, tgt, 14, 20, 2);
    float l0 = model_forward(&m, tok, tgt, 2, 7), a[14 * 20], b[14 * 20];
    model_get_logits(&m, a);
    LoraConfig lc = all_targets(1, 1);
    CHECK(lora_attach(&m, &lc, 3) == 0);
    float l1 = model_forward(&m, tok, tgt, 2, 7);
    model_get_logits(&m, b);
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(l0 == l1);
    CHECK(lora_num_trainable(&m) == m.lora->total + m.params.size[P_WTE] + m.params.size[P_ATTN_NORM] +
                                        m.params.size[P_FFN_NORM] + m.params.size[P_FINAL_NORM]);
    model_destroy(&m); // frees the adapters
}

TEST(lora_config_errors_name_the_key) {
    ModelConfig mc = lora_model_config(1);
    LoraConfig c = lora_config_default();
    c.rank = 0;
    CHECK(lora_config_check(&c, &mc) == -1);
    CHECK_STR(ms_error(), "finetune.lora.rank (0) must be positive");
    c = lora_config_default();
    c.alpha = -1;
    CHECK(lora_config_check(&c, &mc) == -1);
    CHECK_STR(ms_error(), "finetune.lora.alpha (-1) must be > 0");
    c = lora_config_default();
    c.targets = 0;
    CHECK(lora_config_check(&c, &mc) == -1);
}

// Directional derivatives (central differences) through each adapter tensor and each trainable base
// tensor; frozen base tensors get no gradient at all.
static double fd_dir(Model *m, float *buf, size_t total, size_t off, size_t n, const float *g, Rng *r,
                     const int *tok, const int *tgt, double *analytic) {
    float *u = malloc(n * 4), *pp = malloc(total * 4);
    double norm = 0;
    for (size_t i = 0; i < n; i++) u[i] = rng_normal(r), norm += (double)u[i] * u[i];
    norm = sqrt(norm);
    *analytic = 0;
    for (size_t i = 0; i < n; i++) u[i] /= norm, *analytic += (double)g[i] * u[i];
    float *dst = buf; // device pointer (CPU backend: host memory too)
    float *orig = malloc(total * 4);
    m->be->download(orig, dst, total * 4);
    double h = 1e-2, f[2];
    for (int s = 0; s < 2; s++) {
        memcpy(pp, orig, total * 4);
        for (size_t i = 0; i < n; i++) pp[off + i] += (s ? -h : h) * u[i];
        m->be->upload(dst, pp, total * 4);
        f[s] = model_forward(m, tok, tgt, 2, 7);
    }
    m->be->upload(dst, orig, total * 4);
    free(u), free(pp), free(orig);
    return (f[0] - f[1]) / (2 * h);
}

static void check_lora_gradients(int tied) {
    Model m;
    make_model(&m, tied, 5);
    LoraConfig lc = all_targets(1, 1);
    CHECK(lora_attach(&m, &lc, 6) == 0);
    randomize_B(&m, 7);
    int tok[14], tgt[14];
    batch(tok, tgt, 14, 20, 8);
    tgt[4] = -1;
    model_zero_grad(&m);
    model_forward(&m, tok, tgt, 2, 7);
    model_backward(&m);
    Lora *lo = m.lora;
    float *g = malloc(lo->total * 4), *gb = malloc(m.grads.total * 4);
    m.be->download(g, lo->g, lo->total * 4);
    m.be->download(gb, m.grads.base, m.grads.total * 4);
    Rng r;
    rng_seed(&r, 9);
    for (int t = 0; t < LORA_NT; t++)
        for (int ab = 0; ab < 2; ab++) {
            float *w = ab ? lo->B[t] : lo->A[t];
            size_t off = w - lo->p, n = (size_t)m.cfg.layers * lo->cfg.rank * (ab ? lo->out[t] : lo->in[t]);
            double analytic, numeric = fd_dir(&m, lo->p, lo->total, off, n, g + off, &r, tok, tgt, &analytic);
            if (fabs(numeric - analytic) > 2e-2 * fmax(fabs(analytic), 1e-2))
                fprintf(stderr, "  lora %s.%c: analytic %.6g numeric %.6g\n", lora_target_names[t],
                        ab ? 'B' : 'A', analytic, numeric);
            CHECK_REL(analytic, numeric, 2e-2, 1e-2);
        }
    size_t off = 0;
    for (int p = 0; p < P_COUNT; p++) {
        size_t n = m.params.size[p];
        if (lora_base_trainable(&m, p) && n) {
            double analytic, numeric = fd_dir(&m, m.params.base, m.params.total, off, n, gb + off, &r,
                                              tok, tgt, &analytic);
            if (fabs(numeric - analytic) > 2e-2 * fmax(fabs(analytic), 1e-2))
                fprintf(stderr, "  base %s: analytic %.6g numeric %.6g\n", model_param_names[p],
                        analytic, numeric);
            CHECK_REL(analytic, numeric, 2e-2, 1e-2);
        } else {
            double s = 0;
            for (size_t i = 0; i < n; i++) s += fabs(gb[off + i]);
            CHECK(s == 0); // frozen: never computed
        }
        off += n;
    }
    free(g), free(gb);
    model_destroy(&m);
}

TEST(lora_gradients_untied) { check_lora_gradients(0); }
TEST(lora_gradients_tied) { check_lora_gradients(1); }

// A few AdamW steps: the frozen tensors keep every bit, adapters and trainable tensors move; the
// merged model (and its safetensors export) computes what the adapted one does.
TEST(lora_frozen_weights_and_merge) {
    Model m;
    make_model(&m, 0, 11);
    LoraConfig lc = all_targets(0, 1);
    CHECK(lora_attach(&m, &lc, 12) == 0);
    float *before = malloc(m.params.total * 4), *after = malloc(m.params.total * 4);
    m.be->download(before, m.params.base, m.params.total * 4);
    OptimConfig oc = optim_config_default();
    oc.lr = 1e-2f, oc.warmup = 0, oc.steps = 4;
    Optimizer opt;
    optim_create(&opt, &oc, &m);
    int tok[14], tgt[14];
    float first = 0, last = 0;
    for (int s = 0; s < 4; s++) {
        batch(tok, tgt, 14, 20, 13);
        model_zero_grad(&m);
        float loss = model_forward(&m, tok, tgt, 2, 7);
        if (!s) first = loss;
        last = loss;
        model_backward(&m);
        optim_step(&opt, &m, s);
    }
    CHECK(last < first);
    m.be->download(after, m.params.base, m.params.total * 4);
    size_t off = 0;
    for (int p = 0; p < P_COUNT; p++) {
        size_t n = m.params.size[p];
        int same = memcmp(before + off, after + off, n * 4) == 0;
        if (n) CHECK(same == !lora_base_trainable(&m, p));
        if (n && same != !lora_base_trainable(&m, p)) fprintf(stderr, "  %s\n", model_param_names[p]);
        off += n;
    }
    float la[14 * 20], lb[14 * 20], lc_[14 * 20];
    model_forward(&m, tok, NULL, 2, 7);
    model_get_logits(&m, la);
    lora_merge(&m);
    CHECK(m.lora == NULL);
    model_forward(&m, tok, NULL, 2, 7);
    model_get_logits(&m, lb);
    double err = test_max_rel_err(lb, la, 14 * 20, 1.0);
    CHECK(err < 1e-5);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/lora_export", test_tmpdir());
    CHECK(safetensors_export(dir, &m, 0) == 0);
    Model e;
    ModelConfig ec;
    CHECK(hf_read_config(dir, &ec) == 0);
    CHECK(model_create(&e, &ec, backend_cpu()) == 0);
    CHECK(hf_load(dir, &e) == 0);
    model_forward(&e, tok, NULL, 2, 7);
    model_get_logits(&e, lc_);
    CHECK(test_max_rel_err(lc_, la, 14 * 20, 1.0) < 1e-5);
    optim_destroy(&opt, &m);
    free(before), free(after);
    model_destroy(&m), model_destroy(&e);
}
