// Tests of the KV-cache forward (core/model_decode.c) and generation (core/generate.c): cached
// logits equal model_forward's on a random GQA model (both RoPE conventions, PI stride and YaRN
// mscale, any chunking) and on stories260K; run.c's sampler on hand cases; run.c's recorded
// outputs reproduced byte for byte.
#include <stdlib.h>
#include <string.h>

#include "../core/checkpoint.h"
#include "../core/common.h"
#include "../core/generate.h"
#include "../core/model_decode.h"
#include "test.h"

static int contains(const char *s, const char *sub) { return s && strstr(s, sub) != NULL; }

static void randomize(Model *m, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    float *h = malloc(m->params.total * sizeof(float));
    for (size_t i = 0; i < m->params.total; i++) h[i] = 0.3f * rng_normal(&r);
    size_t off = 0;
    for (int t = 0; t < P_COUNT; t++) {
        if (t == P_ATTN_NORM || t == P_FFN_NORM || t == P_FINAL_NORM)
            for (size_t i = 0; i < m->params.size[t]; i++) h[off + i] = 1.0f + 0.2f * h[off + i];
        off += m->params.size[t];
    }
    m->be->upload(m->params.base, h, m->params.total * sizeof(float));
    free(h);
}

// logits of tokens[T] through the cache: in chunks of `chunk` per call (with cache chunk cc)
static void cached_logits(Model *m, const int *tok, int T, int chunk, int cc, float *out) {
    KVCache c;
    CHECK(kvcache_create(&c, m, T, cc) == 0);
    int V = m->cfg.vocab;
    for (int i = 0; i < T; i += chunk) {
        int n = T - i < chunk ? T - i : chunk;
        CHECK(model_forward_cached(m, &c, tok + i, n, out + (size_t)i * V, 1) == 0);
    }
    CHECK(c.len == T);
    kvcache_free(&c, m);
}

// Random GQA model: cached logits (one token at a time; 5 per call through a cache chunk of 3;
// all at once) equal model_forward's rows, for both RoPE conventions, and with a PI stride and a
// YaRN mscale set on the model.
TEST(decode_matches_forward_random) {
    for (int variant = 0; variant < 3; variant++) {
        ModelConfig cfg = model_config_default();
        cfg.dim = 32, cfg.layers = 2, cfg.heads = 4, cfg.kv_heads = 2, cfg.ffn = 40, cfg.vocab = 50;
        cfg.seq_len = 32, cfg.tied = variant != 1, cfg.rope_style = variant == 1 ? ROPE_HALVES : ROPE_INTERLEAVED;
        Model m;
        CHECK(model_create(&m, &cfg, backend_cpu()) == 0);
        randomize(&m, 3 + variant);
        if (variant == 2) {
            model_set_position_stride(&m, 0.25);
            model_set_rope_mscale(&m, 1.2f);
        }
        int T = 23, tok[23];
        Rng r;
        rng_seed(&r, 9);
        for (int i = 0; i < T; i++) tok[i] = (int)rng_below(&r, (uint64_t)cfg.vocab);
        size_t nl = (size_t)T * cfg.vocab;
        float *full = malloc(nl * 4), *got = malloc(nl * 4);
        model_forward(&m, tok, NULL, 1, T);
        model_get_logits(&m, full);
        int chunks[3][2] = {{1, 1}, {5, 3}, {23, 64}};
        for (int k = 0; k < 3; k++) {
            cached_logits(&m, tok, T, chunks[k][0], chunks[k][1], got);
            double err = test_max_rel_err(got, full, nl, 1.0);
            if (err > 1e-5) fprintf(stderr, "    variant %d, chunk %d: max rel err %.3g\n", variant, chunks[k][0], err);
            CHECK(err < 1e-5);
        }
        // the last-token logits alone, and the capacity limit
        KVCache c;
        CHECK(kvcache_create(&c, &m, T, 8) == 0);
        CHECK(model_forward_cached(&m, &c, tok, T, got, 0) == 0);
        CHECK(test_max_rel_err(got, full + (size_t)(T - 1) * cfg.vocab, (size_t)cfg.vocab, 1.0) < 1e-5);
        CHECK(model_forward_cached(&m, &c, tok, 1, got, 0) == -1 && contains(ms_error(), "exceed the KV cache"));
        kvcache_reset(&c);
        int bad = cfg.vocab;
        CHECK(model_forward_cached(&m, &c, &bad, 1, got, 0) == -1 && contains(ms_error(), "outside the vocab"));
        CHECK(c.len == 0);
        kvcache_free(&c, &m);
        free(full), free(got);
        model_destroy(&m);
    }
}

static int load_stories(Model *m, Tokenizer *t) {
    const char *mp = test_shared_path("data/models/stories260K/stories260K.bin");
    const char *tp = test_shared_path("data/models/stories260K/tok512.bin");
    if (!mp || !tp) return -1;
    ModelConfig c;
    CHECK(llama2c_read_config(mp, &c) == 0);
    CHECK(model_create(m, &c, backend_cpu()) == 0);
    CHECK(llama2c_load(mp, m) == 0);
    if (t) CHECK(tokenizer_open(t, tp, c.vocab) == 0);
    return 0;
}

// stories260K on the 256 greedy tokens: the cached logits (chunks of 64, then token by token)
// equal model_forward's, and run.c's recorded ones as closely as model_forward does.
TEST(decode_matches_forward_stories260k) {
    Model m;
    if (load_stories(&m, NULL)) SKIP("../shared/data/models/stories260K not present");
    size_t nb;
    const char *lp = test_shared_path("data/models/stories260K/reference/greedy256_logits.f32");
    float *ref = lp ? (float *)test_read_file(lp, &nb) : NULL;
    // the tokens are the argmax of each row (the greedy run), after BOS
    int T = 256, V = 512, tok[256];
    tok[0] = 1;
    for (int t = 1; t < T; t++) {
        const float *row = ref + (size_t)(t - 1) * V;
        int best = 0;
        for (int i = 1; i < V; i++)
            if (row[i] > row[best]) best = i;
        tok[t] = best;
    }
    size_t nl = (size_t)T * V;
    float *full = malloc(nl * 4), *got = malloc(nl * 4);
    model_forward(&m, tok, NULL, 1, T);
    model_get_logits(&m, full);
    cached_logits(&m, tok, T, 64, 64, got);
    double e1 = test_max_rel_err(got, full, nl, 1.0);
    cached_logits(&m, tok, T, 1, 1, got);
    double e2 = test_max_rel_err(got, full, nl, 1.0), e3 = test_max_rel_err(got, ref, nl, 1.0);
    fprintf(stderr, "    cached vs model_forward: %.3g (chunks of 64), %.3g (1 by 1); vs run.c %.3g\n", e1, e2, e3);
    CHECK(e1 < 3e-5 && e2 < 3e-5 && e3 < 2e-4); // 5 layers of differently ordered float sums
    free(full), free(got), free(ref);
    model_destroy(&m);
}

TEST(sampler_runc_rng_and_rules) {
    uint64_t s = 42; // values of run.c's xorshift* from seed 42 (computed independently)
    CHECK(runc_random_u32(&s) == 1456360119u);
    CHECK(runc_random_u32(&s) == 3359763283u);
    CHECK(runc_random_u32(&s) == 3393612768u);
    CHECK(s == 142435135655313518ull);
    s = 42;
    CHECK(runc_random_f32(&s) == (float)(1456360119u >> 8) / 16777216.0f);

    // probabilities 0.5, 0.3, 0.15, 0.05 as logits (temperature 1): top-p 0.7 keeps the two first
    // (0.05 is below the cutoff 0.3/3, and 0.5 + 0.3 passes 0.7); the coin scaled by their mass
    float p[4] = {0.5f, 0.3f, 0.15f, 0.05f}, lg[4];
    Sampler sm;
    int counts[4] = {0};
    sampler_init(&sm, 4, 1.0f, 0.7f, 1234);
    for (int i = 0; i < 400; i++) {
        for (int k = 0; k < 4; k++) lg[k] = logf(p[k]);
        uint64_t before = sm.rng;
        float coin = runc_random_f32(&before);
        int want = coin * 0.8f < 0.5f ? 0 : 1;
        int got = sampler_sample(&sm, lg);
        counts[got]++;
        if (!(got == want || fabsf(coin * 0.8f - 0.5f) < 1e-6f)) CHECK(got == want);
    }
    CHECK(counts[2] == 0 && counts[3] == 0 && counts[0] > 200 && counts[1] > 100);
    sampler_free(&sm);
    // greedy: the first of equal maxima; multinomial with topp >= 1
    float eq[4] = {1, 3, 3, 0};
    sampler_init(&sm, 4, 0.0f, 0.9f, 1);
    CHECK(sampler_sample(&sm, eq) == 1);
    sampler_free(&sm);
    sampler_init(&sm, 4, 1.0f, 1.0f, 99);
    int seen[4] = {0};
    for (int i = 0; i < 2000; i++) {
        for (int k = 0; k < 4; k++) lg[k] = logf(p[k]);
        seen[sampler_sample(&sm, lg)]++;
    }
    CHECK(seen[3] > 50 && seen[3] < 150 && seen[0] > 900 && seen[0] < 1100);
    sampler_free(&sm);
}

// Every recorded run.c output of stories260K (../shared/data/SOURCES.md, the arguments table).
TEST(generate_reproduces_runc) {
    Model m;
    Tokenizer t;
    if (load_stories(&m, &t)) SKIP("../shared/data/models/stories260K not present");
    static const struct {
        const char *file, *prompt;
        float temperature, topp;
        uint64_t seed;
        int steps;
    } runs[] = {
        {"gen_greedy_n200.txt", NULL, 0.0f, 0.9f, 1, 200},
        {"gen_greedy_n256.txt", NULL, 0.0f, 0.9f, 1, 256},
        {"gen_greedy_n64_once_upon_a_time.txt", "Once upon a time", 0.0f, 0.9f, 1, 64},
        {"gen_t1.0_p0.9_s133742_n256.txt", NULL, 1.0f, 0.9f, 133742, 256},
        {"gen_t0.8_p0.9_s42_n256_tom_and_his_dog.txt", "Tom and his dog", 0.8f, 0.9f, 42, 256},
        {"gen_t1.0_p0.0_s7_n128.txt", NULL, 1.0f, 0.0f, 7, 128},
    };
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        char rel[256];
        snprintf(rel, sizeof rel, "data/models/stories260K/reference/%s", runs[i].file);
        const char *path = test_shared_path(rel);
        CHECK(path != NULL);
        if (!path) continue;
        size_t n;
        char *want = test_read_file(path, &n);
        Sampler s;
        sampler_init(&s, m.cfg.vocab, runs[i].temperature, runs[i].topp, runs[i].seed);
        char *got = generate_text(&m, &t, runs[i].prompt, runs[i].steps, &s);
        CHECK(got != NULL);
        int same = got && strlen(got) == n && !memcmp(got, want, n);
        if (!same) fprintf(stderr, "    %s differs:\n%s\n    expected:\n%s\n", runs[i].file, got, want);
        CHECK(same);
        free(got), free(want);
        sampler_free(&s);
    }
    tokenizer_close(&t);
    model_destroy(&m);
}

typedef struct {
    int ids[64], n;
} Collect;
static void collect(void *ctx, int prev, int next) {
    Collect *c = ctx;
    (void)prev;
    c->ids[c->n++] = next;
}

// run.c's loop: -n counts positions from the first prompt token, so a short -n prints only part of
// the prompt; generation stops at stop_id; printing skips lone control bytes but keeps UTF-8 with
// the byte tokenizer, and drops the space after BOS with a BPE one.
TEST(generate_loop_rules) {
    ModelConfig cfg = model_config_default();
    cfg.dim = 16, cfg.layers = 1, cfg.heads = 2, cfg.kv_heads = 1, cfg.ffn = 16, cfg.vocab = 256;
    Model m;
    CHECK(model_create(&m, &cfg, backend_cpu()) == 0);
    randomize(&m, 1);
    int prompt[5] = {'a', 'b', 'c', 'd', 'e'};
    Sampler s;
    sampler_init(&s, 256, 0.0f, 0.9f, 1);
    Collect c = {0};
    CHECK(generate(&m, prompt, 5, 3, &s, -1, collect, &c) == 3);
    CHECK(c.n == 3 && c.ids[0] == 'b' && c.ids[2] == 'd');
    c.n = 0;
    CHECK(generate(&m, prompt, 5, 9, &s, -1, collect, &c) == 9); // one token per position
    CHECK(c.n == 9 && c.ids[3] == 'e');
    int first = c.ids[4]; // the first greedy token
    c.n = 0;
    CHECK(generate(&m, prompt, 5, 9, &s, first, collect, &c) == 4);
    c.n = 0;
    prompt[2] = 7; // a forced token equal to stop_id stops too, as run.c's BOS check
    CHECK(generate(&m, prompt, 5, 9, &s, 7, collect, &c) == 1);
    CHECK(generate(&m, prompt, 0, 9, &s, -1, collect, &c) == -1 && contains(ms_error(), "no tokens"));
    sampler_free(&s);

    Tokenizer bt;
    CHECK(tokenizer_open(&bt, "byte", 256) == 0);
    size_t len;
    generate_printable(&bt, 0, 0x01, &len);
    CHECK(len == 0);
    generate_printable(&bt, 0, 0xc3, &len);
    CHECK(len == 1);
    generate_printable(&bt, 0, '\n', &len);
    CHECK(len == 1);
    sampler_init(&s, 256, 0.0f, 0.9f, 1);
    CHECK(generate_text(&m, &bt, "", 8, &s) == NULL && contains(ms_error(), "empty prompt"));
    char *txt = generate_text(&m, &bt, "ab", 1, &s); // the prompt (no BOS: its first byte too)
    CHECK(txt && !strcmp(txt, "ab\n"));
    free(txt);
    sampler_free(&s);
    tokenizer_close(&bt);
    model_destroy(&m);

    Tokenizer t;
    if (load_stories(&m, &t)) SKIP("../shared/data/models/stories260K not present");
    const char *p = generate_printable(&t, 1, 403, &len); // " Once" after BOS
    CHECK(len == 4 && !memcmp(p, "Once", 4));
    generate_printable(&t, 5, 3 + 0xe6, &len); // a lone non-ASCII byte: run.c skips it
    CHECK(len == 0);
    generate_printable(&t, 5, 3 + '\t', &len);
    CHECK(len == 1);
    generate_printable(&t, 5, 3, &len); // <0x00>
    CHECK(len == 0);
    tokenizer_close(&t);
    model_destroy(&m);
}

// ./mslab generate's loader: an mslab checkpoint (by its magic) and a llama2.c .bin (anything else).
TEST(generate_load_model_by_magic) {
    ModelConfig cfg = model_config_default();
    cfg.dim = 16, cfg.layers = 1, cfg.heads = 2, cfg.kv_heads = 1, cfg.ffn = 16, cfg.vocab = 256;
    Model a, b;
    CHECK(model_create(&a, &cfg, backend_cpu()) == 0);
    randomize(&a, 4);
    char path[512];
    snprintf(path, sizeof path, "%s/m.ckpt", test_tmpdir());
    CHECK(checkpoint_save(path, &a, NULL) == 0);
    CHECK(generate_load_model(&b, path) == 0);
    CHECK(b.cfg.vocab == 256 && !memcmp(a.params.base, b.params.base, a.params.total * sizeof(float)));
    model_destroy(&a), model_destroy(&b);
    const char *mp = test_shared_path("data/models/stories260K/stories260K.bin");
    if (mp) {
        CHECK(generate_load_model(&b, mp) == 0 && b.cfg.vocab == 512 && b.cfg.layers == 5);
        model_destroy(&b);
    }
    CHECK(generate_load_model(&b, "/nonexistent.bin") == -1 && contains(ms_error(), "/nonexistent.bin"));
}
