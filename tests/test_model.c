// Whole-model tests: finite differences through every parameter tensor, the PyTorch peer on fixed
// weights, and llama2.c's stories260K reference logits.
#include <stdlib.h>
#include <string.h>

#include "../core/checkpoint.h"
#include "../core/common.h"
#include "../core/model.h"
#include "../core/optim.h"
#include "test.h"

static ModelConfig tiny_config(int tied, int style) {
    ModelConfig c = model_config_default();
    c.dim = 16, c.layers = 2, c.heads = 4, c.kv_heads = 2, c.ffn = 24, c.vocab = 20;
    c.seq_len = 8, c.tied = tied, c.rope_style = style;
    return c;
}

// Weights with a larger scale than training init, so every path carries signal.
static void randomize(Model *m, uint64_t seed, float std) {
    Rng r;
    rng_seed(&r, seed);
    float *h = malloc(m->params.total * sizeof(float));
    for (size_t i = 0; i < m->params.total; i++) h[i] = std * rng_normal(&r);
    size_t off = 0;
    for (int t = 0; t < P_COUNT; t++) { // norm weights near 1
        if (t == P_ATTN_NORM || t == P_FFN_NORM || t == P_FINAL_NORM)
            for (size_t i = 0; i < m->params.size[t]; i++) h[off + i] = 1.0f + 0.2f * h[off + i];
        off += m->params.size[t];
    }
    m->be->upload(m->params.base, h, m->params.total * sizeof(float));
    free(h);
}

// Directional derivative along a random unit direction inside each parameter tensor: analytic
// (g . u) against central differences of the loss. A dropped or wrong term in any backward
// changes g . u by far more than the tolerance.
static void check_model_gradients(int tied, int style) {
    ModelConfig c = tiny_config(tied, style);
    Model m;
    CHECK(model_create(&m, &c, backend_cpu()) == 0);
    randomize(&m, 7, 0.3f);
    int B = 2, T = 7, N = B * T, tok[14], tgt[14];
    Rng r;
    rng_seed(&r, 11);
    for (int i = 0; i < N; i++) tok[i] = (int)rng_below(&r, c.vocab), tgt[i] = (int)rng_below(&r, c.vocab);
    tgt[3] = -1; // ignored targets take part in nothing
    model_zero_grad(&m);
    model_forward(&m, tok, tgt, B, T);
    model_backward(&m);
    size_t total = m.params.total;
    float *p = malloc(total * 4), *g = malloc(total * 4), *pp = malloc(total * 4);
    m.be->download(p, m.params.base, total * 4);
    m.be->download(g, m.grads.base, total * 4);
    size_t off = 0;
    for (int t = 0; t < P_COUNT; t++) {
        size_t n = m.params.size[t];
        if (!n) continue;
        for (int trial = 0; trial < 2; trial++) {
            float *u = malloc(n * 4);
            double norm = 0, analytic = 0;
            for (size_t i = 0; i < n; i++) u[i] = rng_normal(&r), norm += (double)u[i] * u[i];
            norm = sqrt(norm);
            for (size_t i = 0; i < n; i++) u[i] /= norm, analytic += (double)g[off + i] * u[i];
            double h = 1e-2, f[2];
            for (int s = 0; s < 2; s++) {
                memcpy(pp, p, total * 4);
                for (size_t i = 0; i < n; i++) pp[off + i] += (s ? -h : h) * u[i];
                m.be->upload(m.params.base, pp, total * 4);
                f[s] = model_forward(&m, tok, tgt, B, T);
            }
            double numeric = (f[0] - f[1]) / (2 * h);
            if (fabs(numeric - analytic) > 2e-2 * fmax(fabs(analytic), 1e-2))
                fprintf(stderr, "  tensor %s (tied %d, style %d): analytic %.6g numeric %.6g\n",
                        model_param_names[t], tied, style, analytic, numeric);
            CHECK_REL(analytic, numeric, 2e-2, 1e-2);
            free(u);
        }
        off += n;
    }
    free(p), free(g), free(pp);
    model_destroy(&m);
}

TEST(model_gradients_tied_interleaved) { check_model_gradients(1, ROPE_INTERLEAVED); }
TEST(model_gradients_untied_halves) { check_model_gradients(0, ROPE_HALVES); }

TEST(model_config_errors_name_the_key) {
    ModelConfig c = tiny_config(1, 0);
    c.dim = 128, c.heads = 6;
    CHECK(model_config_check(&c) == -1);
    CHECK_STR(ms_error(), "model.heads (6) must divide model.dim (128)");
    c = tiny_config(1, 0);
    c.kv_heads = 3;
    CHECK(model_config_check(&c) == -1);
    CHECK_STR(ms_error(), "model.kv_heads (3) must divide model.heads (4)");
}

// Logits and loss equal PyTorch's (float64) on the same weights: tests/reference/.
static float *read_file(const char *path, size_t *bytes) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *bytes = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    float *buf = malloc(*bytes);
    if (fread(buf, 1, *bytes, f) != *bytes) { free(buf); buf = NULL; }
    fclose(f);
    return buf;
}

TEST(model_matches_pytorch_reference) {
    const char *dir = "tests/reference/tiny";
    size_t nb;
    int *tok = (int *)read_file("tests/reference/tiny/tokens.i32", &nb);
    int *tgt = (int *)read_file("tests/reference/tiny/targets.i32", &nb);
    FILE *ex = fopen("tests/reference/tiny/expected.txt", "r");
    if (!tok || !tgt || !ex) SKIP("tests/reference/tiny missing (run from the repository root)");
    char variant[32], rope[32];
    double expected_loss;
    int cases = 0;
    while (fscanf(ex, "%31s %31s %lf", variant, rope, &expected_loss) == 3) {
        char path[256];
        snprintf(path, sizeof path, "%s/tiny_%s.bin", dir, variant);
        ModelConfig c;
        CHECK(llama2c_read_config(path, &c) == 0);
        c.rope_style = !strcmp(rope, "halves") ? ROPE_HALVES : ROPE_INTERLEAVED;
        Model m;
        CHECK(model_create(&m, &c, backend_cpu()) == 0);
        CHECK(llama2c_load(path, &m) == 0);
        float loss = model_forward(&m, tok, tgt, 2, 12);
        snprintf(path, sizeof path, "%s/logits_%s_%s.f32", dir, variant, rope);
        float *want = read_file(path, &nb), *got = malloc(nb);
        model_get_logits(&m, got);
        double err = test_max_rel_err(got, want, nb / 4, 1.0);
        fprintf(stderr, "    %s/%s: max rel err %.3g, loss %.9f vs %.9f\n", variant, rope, err,
                loss, expected_loss);
        CHECK(err < 1e-4);
        CHECK_REL(loss, expected_loss, 1e-5, 1e-6);
        free(want), free(got);
        model_destroy(&m);
        cases++;
    }
    fclose(ex);
    CHECK(cases == 4);
    free(tok), free(tgt);
}

// Reads the integer array following `"token_ids": [` after the `section` key.
static int json_token_ids(const char *path, const char *section, int *out, int max) {
    size_t n;
    char *text = (char *)read_file(path, &n);
    if (!text) return -1;
    text = realloc(text, n + 1);
    text[n] = 0;
    char key[64];
    snprintf(key, sizeof key, "\"%s\"", section);
    char *s = strstr(text, key);
    s = s ? strstr(s, "\"token_ids\"") : NULL;
    s = s ? strchr(s, '[') : NULL;
    int k = 0;
    while (s && *s != ']' && k < max) {
        s++;
        char *e;
        long v = strtol(s, &e, 10);
        if (e == s) break;
        out[k++] = (int)v;
        s = e;
    }
    free(text);
    return k;
}

static void check_stories(const char *section, const char *logits_file, int T, double mean_nll) {
    const char *model_path = test_shared_path("data/models/stories260K/stories260K.bin");
    const char *ref = test_shared_path("data/models/stories260K/reference/logits_reference.json");
    char lpath[512];
    snprintf(lpath, sizeof lpath, "data/models/stories260K/reference/%s", logits_file);
    const char *logits_path = test_shared_path(lpath);
    if (!model_path || !ref || !logits_path) SKIP("../shared/data/models/stories260K not present");
    int *ids = malloc(sizeof(int) * 1024);
    CHECK(json_token_ids(ref, section, ids, 1024) == T);
    ModelConfig c;
    CHECK(llama2c_read_config(model_path, &c) == 0);
    Model m;
    CHECK(model_create(&m, &c, backend_cpu()) == 0);
    CHECK(llama2c_load(model_path, &m) == 0);
    int *tgt = malloc(sizeof(int) * T);
    for (int t = 0; t < T; t++) tgt[t] = t + 1 < T ? ids[t + 1] : -1;
    float loss = model_forward(&m, ids, tgt, 1, T);
    size_t nb;
    float *want = read_file(logits_path, &nb), *got = malloc(nb);
    CHECK(nb == (size_t)T * 512 * 4);
    model_get_logits(&m, got);
    double err = test_max_rel_err(got, want, nb / 4, 1.0);
    fprintf(stderr, "    %s: max err %.3g (relative to max(|logit|, 1)), mean nll %.6f vs %.6f\n",
            section, err, loss, mean_nll);
    CHECK(err < 2e-4);
    CHECK_NEAR(loss, mean_nll, 2e-5);
    free(want), free(got), free(ids), free(tgt);
    model_destroy(&m);
}

TEST(stories260k_greedy_logits) { check_stories("greedy256", "greedy256_logits.f32", 256, 0.455787698); }
TEST(stories260k_pride_logits) { check_stories("pride512", "pride512_logits.f32", 512, 3.246299095); }

TEST(optim_schedule_closed_form) {
    OptimConfig c = optim_config_default();
    c.lr = 1e-3f, c.lr_min = 1e-4f, c.warmup = 10, c.steps = 110;
    CHECK_NEAR(optim_lr(&c, 0), 1e-4, 1e-9);  // (0+1)/10 of peak
    CHECK_NEAR(optim_lr(&c, 9), 1e-3, 1e-9);  // end of warmup
    CHECK_NEAR(optim_lr(&c, 10), 1e-3, 1e-9); // cosine starts at the peak
    CHECK_NEAR(optim_lr(&c, 109), 1e-4, 1e-9); // and ends at the floor
    // halfway through the decay: lr_min + (lr - lr_min) / 2
    double mid = optim_lr(&c, 59); // progress (59 - 10) / (100 - 1)
    double want = 1e-4 + 0.5 * 9e-4 * (1 + cos(M_PI * 49.0 / 99));
    CHECK_NEAR(mid, want, 1e-9);
}

TEST(optim_clipping_scales_to_max_norm) {
    ModelConfig c = tiny_config(1, 0);
    Model m;
    CHECK(model_create(&m, &c, backend_cpu()) == 0);
    float *g = malloc(m.grads.total * 4);
    for (size_t i = 0; i < m.grads.total; i++) g[i] = (float)(i % 3) - 1.0f;
    m.be->upload(m.grads.base, g, m.grads.total * 4);
    double sq = 0;
    for (size_t i = 0; i < m.grads.total; i++) sq += (double)g[i] * g[i];
    CHECK_REL(optim_grad_norm(&m), sqrt(sq), 1e-6, 1e-9);
    OptimConfig oc = optim_config_default();
    oc.clip = 0.5f, oc.lr = 1e-30f, oc.lr_min = 0, oc.warmup = 0, oc.weight_decay = 0;
    Optimizer o;
    optim_create(&o, &oc, &m);
    float pre = optim_step(&o, &m, 0);
    CHECK_REL(pre, sqrt(sq), 1e-6, 1e-9);
    CHECK_REL(optim_grad_norm(&m), 0.5, 1e-5, 1e-9); // gradients were scaled in place
    optim_destroy(&o, &m);
    model_destroy(&m);
    free(g);
}
