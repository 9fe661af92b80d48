// HF Llama safetensors import/export: the PyTorch reference (tests/reference/hf_tiny), bitwise
// round trips, bf16, and malformed files (every error names the file and tensor, nothing crashes).
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../core/checkpoint.h"
#include "../core/common.h"
#include "../core/model.h"
#include "../core/safetensors.h"
#include "test.h"

static void spit(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(p, 1, n, f);
    fclose(f);
}

static ModelConfig st_config(int tied, int style) {
    ModelConfig c = model_config_default();
    c.dim = 16, c.layers = 2, c.heads = 4, c.kv_heads = 2, c.ffn = 24, c.vocab = 20;
    c.seq_len = 32, c.tied = tied, c.rope_style = style, c.rope_base = 500.0f, c.norm_eps = 1e-6f;
    return c;
}

static void fill_random(Model *m, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    float *h = malloc(m->params.total * 4);
    for (size_t i = 0; i < m->params.total; i++) h[i] = 0.3f * rng_normal(&r);
    m->be->upload(m->params.base, h, m->params.total * 4);
    free(h);
}

TEST(hf_llama_matches_pytorch_reference) {
    const char *dir = "tests/reference/hf_tiny";
    size_t nb;
    int *tok = test_read_file("tests/reference/hf_tiny/tokens.i32", &nb);
    float *want = test_read_file("tests/reference/hf_tiny/logits.f32", &nb);
    if (!tok || !want) SKIP("tests/reference/hf_tiny missing (run from the repository root)");
    ModelConfig c;
    CHECK(hf_read_config(dir, &c) == 0);
    CHECK(c.dim == 16 && c.layers == 2 && c.heads == 4 && c.kv_heads == 2 && c.ffn == 24);
    CHECK(c.vocab == 32 && !c.tied && c.rope_style == ROPE_HALVES && c.seq_len == 64);
    CHECK_NEAR(c.rope_base, 500.0, 0);
    CHECK_NEAR(c.norm_eps, 1e-6, 1e-12);
    Model m;
    CHECK(model_create(&m, &c, backend_cpu()) == 0);
    CHECK(model_source_load(dir, &m) == 0); // sharded, mixed F32 / BF16 / F16
    model_forward(&m, tok, NULL, 2, 9);
    float *got = malloc(nb);
    model_get_logits(&m, got);
    double err = test_max_rel_err(got, want, nb / 4, 1.0);
    fprintf(stderr, "    hf_tiny: max rel err %.3g\n", err);
    CHECK(err < 1e-4);
    free(got), free(tok), free(want);
    model_destroy(&m);
}

static float *params_host(const Model *m) {
    float *h = malloc(m->params.total * 4);
    m->be->download(h, m->params.base, m->params.total * 4);
    return h;
}

TEST(safetensors_roundtrip_f32_bitwise_and_interleaved_permuted) {
    for (int tied = 0; tied < 2; tied++)
        for (int style = 0; style < 2; style++) {
            ModelConfig c = st_config(tied, style ? ROPE_HALVES : ROPE_INTERLEAVED);
            Model a, b;
            CHECK(model_create(&a, &c, backend_cpu()) == 0);
            fill_random(&a, 3 + tied * 2 + style);
            char dir[512];
            snprintf(dir, sizeof dir, "%s/export_%d_%d", test_tmpdir(), tied, style);
            CHECK(safetensors_export(dir, &a, 0) == 0);
            ModelConfig rc;
            CHECK(model_source_read_config(dir, &rc) == 0);
            CHECK(rc.dim == c.dim && rc.layers == c.layers && rc.heads == c.heads &&
                  rc.kv_heads == c.kv_heads && rc.ffn == c.ffn && rc.vocab == c.vocab &&
                  rc.tied == c.tied && rc.seq_len == c.seq_len && rc.rope_style == ROPE_HALVES);
            CHECK(rc.rope_base == c.rope_base && rc.norm_eps == c.norm_eps);
            CHECK(model_create(&b, &rc, backend_cpu()) == 0);
            CHECK(model_source_load(dir, &b) == 0);
            float *pa = params_host(&a), *pb = params_host(&b);
            if (style) CHECK(memcmp(pa, pb, a.params.total * 4) == 0); // halves: bit for bit
            int tok[10] = {1, 5, 7, 19, 0, 3, 3, 8, 12, 2};
            model_forward(&a, tok, NULL, 2, 5);
            model_forward(&b, tok, NULL, 2, 5);
            float la[200], lb[200];
            model_get_logits(&a, la);
            model_get_logits(&b, lb);
            double err = test_max_rel_err(lb, la, 200, 1.0);
            CHECK(err < 1e-5);
            if (style) CHECK(memcmp(la, lb, sizeof la) == 0);
            free(pa), free(pb);
            model_destroy(&a), model_destroy(&b);
        }
}

TEST(safetensors_bf16_export_rounds_to_nearest_even) {
    ModelConfig c = st_config(0, ROPE_HALVES);
    Model a, b;
    CHECK(model_create(&a, &c, backend_cpu()) == 0);
    CHECK(model_create(&b, &c, backend_cpu()) == 0);
    fill_random(&a, 9);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/bf16", test_tmpdir());
    CHECK(safetensors_export(dir, &a, 1) == 0);
    CHECK(hf_load(dir, &b) == 0);
    float *pa = params_host(&a), *pb = params_host(&b);
    size_t bad = 0;
    for (size_t i = 0; i < a.params.total; i++) {
        uint32_t u;
        memcpy(&u, &pa[i], 4);
        uint32_t lsb = (u >> 16) & 1;
        u = (u + 0x7fff + lsb) & 0xffff0000u;
        float r;
        memcpy(&r, &u, 4);
        bad += r != pb[i];
    }
    CHECK(bad == 0);
    size_t n;
    char *cfg = test_read_file(strcat(dir, "/config.json"), &n);
    CHECK(cfg && strstr(cfg, "\"torch_dtype\": \"bfloat16\""));
    free(cfg), free(pa), free(pb);
    model_destroy(&a), model_destroy(&b);
}

// The exported file with its header edited by replacing `from` with `to` (length recomputed).
static void write_edited(const char *src, const char *dst, const char *from, const char *to) {
    size_t n;
    unsigned char *f = test_read_file(src, &n);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | f[i];
    char *h = malloc(hl + strlen(to) + 1);
    memcpy(h, f + 8, hl);
    h[hl] = 0;
    char *p = strstr(h, from), *out = malloc(hl + strlen(to) + 64);
    size_t k = 0;
    if (p) {
        memcpy(out, h, p - h), k = p - h;
        memcpy(out + k, to, strlen(to)), k += strlen(to);
        strcpy(out + k, p + strlen(from)), k += strlen(p + strlen(from));
    } else {
        memcpy(out, h, hl), k = hl;
    }
    FILE *o = fopen(dst, "wb");
    unsigned char pre[8];
    for (int i = 0; i < 8; i++) pre[i] = (unsigned char)((uint64_t)k >> (8 * i));
    fwrite(pre, 1, 8, o);
    fwrite(out, 1, k, o);
    fwrite(f + 8 + hl, 1, n - 8 - hl, o);
    fclose(o);
    free(f), free(h), free(out);
}

TEST(safetensors_malformed_inputs_are_clear_errors) {
    ModelConfig c = st_config(0, ROPE_HALVES);
    Model a;
    CHECK(model_create(&a, &c, backend_cpu()) == 0);
    fill_random(&a, 5);
    char good[512], bad[512], file[600], gfile[600];
    snprintf(good, sizeof good, "%s/good", test_tmpdir());
    snprintf(bad, sizeof bad, "%s/bad", test_tmpdir());
    CHECK(safetensors_export(good, &a, 0) == 0);
    mkdir(bad, 0755);
    snprintf(gfile, sizeof gfile, "%s/model.safetensors", good);
    snprintf(file, sizeof file, "%s/model.safetensors", bad);
    size_t n;
    char *cj = test_read_file(strcat(strcpy((char[600]){0}, good), "/config.json"), &n);
    spit(strcat(strcpy((char[600]){0}, bad), "/config.json"), cj, n);
    free(cj);
    struct { const char *from, *to, *expect; } cases[] = {
        {"\"F32\"", "\"I16\"", "tensor model.embed_tokens.weight: dtype I16 is not supported"},
        {"[20,16]", "[16,20]", "tensor model.embed_tokens.weight: shape [16, 20], expected [20, 16]"},
        {"model.norm.weight", "model.xorm.weight", "missing tensor model.norm.weight"},
        {"{\"__metadata__\"", "[\"__metadata__\"", "malformed header JSON"},
        {"\"data_offsets\":[0,", "\"data_offsets\":[4,", "tensor model.embed_tokens.weight: data_offsets"},
        {"\"shape\":[20,16],", "", "tensor model.embed_tokens.weight: missing dtype, shape or data_offsets"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_edited(gfile, file, cases[i].from, cases[i].to);
        Model b;
        CHECK(model_create(&b, &c, backend_cpu()) == 0);
        CHECK(hf_load(bad, &b) == -1);
        if (!strstr(ms_error(), cases[i].expect) || !strstr(ms_error(), bad)) {
            fprintf(stderr, "  case %zu: got \"%s\", expected \"%s\"\n", i, ms_error(), cases[i].expect);
            CHECK(0);
        }
        model_destroy(&b);
    }
    // fuzz truncations: every cut of the file is an error naming it, never a crash
    unsigned char *whole = test_read_file(gfile, &n);
    int fails = 0, cuts = 0;
    for (size_t cut = 0; cut < n; cut += (cut < 2048 ? 1 : 97)) {
        spit(file, whole, cut);
        Model b;
        model_create(&b, &c, backend_cpu());
        int rc = hf_load(bad, &b);
        cuts++;
        if (rc != -1 || !strstr(ms_error(), "model.safetensors")) {
            if (fails++ < 3) fprintf(stderr, "  cut %zu: rc %d \"%s\"\n", cut, rc, ms_error());
        }
        model_destroy(&b);
    }
    CHECK(fails == 0);
    spit(file, whole, n - 1);
    Model b;
    model_create(&b, &c, backend_cpu());
    CHECK(hf_load(bad, &b) == -1);
    CHECK(strstr(ms_error(), "tensor model.layers.1.") || strstr(ms_error(), "lm_head.weight"));
    CHECK(strstr(ms_error(), "truncated") != NULL);
    model_destroy(&b);
    // config.json errors
    spit(strcat(strcpy((char[600]){0}, bad), "/config.json"), "{\"hidden_size\": 16,", 19);
    ModelConfig rc;
    CHECK(hf_read_config(bad, &rc) == -1);
    CHECK(strstr(ms_error(), "config.json: malformed JSON") != NULL);
    spit(strcat(strcpy((char[600]){0}, bad), "/config.json"), "{\"hidden_size\": 16}", 19);
    CHECK(hf_read_config(bad, &rc) == -1);
    CHECK(strstr(ms_error(), "missing num_hidden_layers") != NULL);
    free(whole);
    model_destroy(&a);
}

// model_source_*: an mslab checkpoint loads into a model with another seq_len / rope base (same shape).
TEST(model_source_loads_mslab_checkpoints_and_llama2c) {
    ModelConfig c = st_config(1, ROPE_INTERLEAVED);
    Model a, b;
    CHECK(model_create(&a, &c, backend_cpu()) == 0);
    fill_random(&a, 21);
    char path[512];
    snprintf(path, sizeof path, "%s/src.ckpt", test_tmpdir());
    CHECK(checkpoint_save(path, &a, NULL) == 0);
    ModelConfig rc;
    CHECK(model_source_read_config(path, &rc) == 0);
    rc.seq_len = 99, rc.rope_base = 20000.0f;
    CHECK(model_create(&b, &rc, backend_cpu()) == 0);
    CHECK(model_source_load(path, &b) == 0);
    float *pa = params_host(&a), *pb = params_host(&b);
    CHECK(memcmp(pa, pb, a.params.total * 4) == 0);
    free(pa), free(pb);
    model_destroy(&b);
    rc.dim = 32;
    CHECK(model_create(&b, &rc, backend_cpu()) == 0);
    CHECK(model_source_load(path, &b) == -1);
    CHECK(strstr(ms_error(), "differs from the model's") != NULL);
    model_destroy(&b);
    CHECK(model_source_read_config("tests/reference/tiny/tiny_tied.bin", &rc) == 0);
    CHECK(rc.dim == 24 && rc.rope_style == ROPE_INTERLEAVED);
    model_destroy(&a);
}
