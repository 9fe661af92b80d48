// Tests of core/checkpoint.c: the mslab format (bitwise round trip, every truncation, flipped bytes,
// garbage, wrong magic / version / config) and the llama2.c v0 importer (stories260K and a synthetic
// untied file). The models here are built by hand on a host "backend" of memcpy, so these tests need
// neither model.c nor the CPU backend.
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../core/checkpoint.h"
#include "test.h"

// ---- a host backend and hand-built models --------------------------------------------------------
static void *h_alloc(size_t n) {
    void *p = calloc(1, n ? n : 1);
    if (!p) abort();
    return p;
}
static void h_free(void *p) { free(p); }
static void h_copy(void *dst, const void *src, size_t n) { memcpy(dst, src, n); }
static const Backend host_be = {.name = "test-host", .alloc = h_alloc, .free = h_free,
                                .upload = h_copy, .download = h_copy};

// Tensor sizes as model.h documents them.
static size_t cfg_sizes(const ModelConfig *c, size_t sz[P_COUNT]) {
    size_t C = c->dim, L = c->layers, F = c->ffn, V = c->vocab, KVD = c->kv_heads * (C / c->heads);
    size_t s[P_COUNT] = {V * C, L * C, L * C * C, L * KVD * C, L * KVD * C, L * C * C, L * C,
                         L * F * C, L * C * F, L * F * C, C, c->tied ? 0 : V * C};
    size_t total = 0;
    for (int i = 0; i < P_COUNT; i++) total += (sz[i] = s[i]);
    return total;
}

static void fake_model(Model *m, const ModelConfig *cfg) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->be = &host_be;
    m->params.total = cfg_sizes(cfg, m->params.size);
    m->params.base = m->be->alloc(m->params.total * sizeof(float));
    size_t off = 0;
    for (int i = 0; i < P_COUNT; i++) {
        m->params.t[i] = m->params.base + off;
        off += m->params.size[i];
    }
}

static void fake_free(Model *m) { m->be->free(m->params.base); }

static ModelConfig small_cfg(int tied) {
    ModelConfig c = {.dim = 16, .layers = 2, .heads = 4, .kv_heads = 2, .ffn = 24, .vocab = 32,
                     .seq_len = 16, .tied = tied, .rope_style = ROPE_HALVES, .rope_base = 10000.0f,
                     .norm_eps = 1e-5f};
    return c;
}

static ModelConfig tiny_cfg(void) {
    ModelConfig c = {.dim = 4, .layers = 1, .heads = 2, .kv_heads = 1, .ffn = 4, .vocab = 6,
                     .seq_len = 8, .tied = 1, .rope_style = ROPE_INTERLEAVED, .rope_base = 500.0f,
                     .norm_eps = 1e-6f};
    return c;
}

static void fill(float *x, size_t n, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = rng_normal(&r);
}



static int contains(const char *hay, const char *needle) { return hay && strstr(hay, needle) != NULL; }

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

// ---- mslab format -------------------------------------------------------------------------------
TEST(ckpt_round_trip_bitwise) {
    const char *dir = test_tmpdir();
    for (int tied = 1; tied >= 0; tied--) {
        ModelConfig cfg = small_cfg(tied);
        Model a, b;
        fake_model(&a, &cfg);
        fake_model(&b, &cfg);
        size_t n = a.params.total;
        CHECK(n == (tied ? 4432u : 4944u));
        fill(a.params.base, n, 1);
        // values whose bits a float round trip through text would lose
        uint32_t odd[4] = {0x80000000u /* -0 */, 0x00000001u /* denormal */, 0x7f800000u /* inf */,
                           0x7fc01234u /* NaN with payload */};
        memcpy(a.params.base + 3, odd, sizeof odd);
        float *am = malloc(n * 4), *av = malloc(n * 4), *bm = calloc(n, 4), *bv = calloc(n, 4);
        fill(am, n, 2);
        fill(av, n, 3);
        TrainState sa = {.step = 123456789012LL, .adam_m = am, .adam_v = av}, sb = {.adam_m = bm, .adam_v = bv};
        rng_seed(&sa.rng, 77);
        for (int i = 0; i < 5; i++) rng_u64(&sa.rng);
        const char *path = test_path_join(dir, tied ? "sub/dir/tied.ckpt" : "untied.ckpt"); // parents created
        CHECK(checkpoint_save(path, &a, &sa) == 0);
        char tmp[1100];
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        CHECK(!file_exists(tmp));

        // the documented layout
        size_t len;
        unsigned char *raw = test_read_file(path, &len);
        CHECK(raw && len == 16 + 96 + 12 * n + 8);
        if (!raw) return;
        uint32_t u32;
        int32_t i32;
        int64_t i64;
        uint64_t u64;
        CHECK(memcmp(raw, "MSLABCKP", 8) == 0);
        memcpy(&u32, raw + 8, 4);
        CHECK(u32 == 1);
        memcpy(&u32, raw + 12, 4);
        CHECK(u32 == 96);
        memcpy(&i32, raw + 16, 4);
        CHECK(i32 == 16); // dim
        memcpy(&i32, raw + 16 + 28, 4);
        CHECK(i32 == tied); // tied
        float fl;
        memcpy(&fl, raw + 16 + 36, 4);
        CHECK(fl == 10000.0f); // rope_base
        memcpy(&i64, raw + 16 + 44, 8);
        CHECK(i64 == 123456789012LL);
        memcpy(&u64, raw + 16 + 52, 8);
        CHECK(u64 == sa.rng.s[0]);
        memcpy(&u64, raw + 16 + 84, 8);
        CHECK(u64 == n);
        memcpy(&u32, raw + 16 + 92, 4);
        CHECK(u32 == 1);
        CHECK(memcmp(raw + 112, a.params.base, 4 * n) == 0);
        CHECK(memcmp(raw + 112 + 8 * n, av, 4 * n) == 0);
        memcpy(&u64, raw + len - 8, 8);
        CHECK(u64 == ms_fnv1a(MS_FNV_INIT, raw, len - 8));
        free(raw);

        ModelConfig rc;
        memset(&rc, 0xab, sizeof rc);
        CHECK(checkpoint_read_config(path, &rc) == 0);
        CHECK(memcmp(&rc, &cfg, sizeof cfg) == 0);
        CHECK(checkpoint_load(path, &b, &sb) == 0);
        CHECK(memcmp(a.params.base, b.params.base, 4 * n) == 0);
        CHECK(memcmp(am, bm, 4 * n) == 0 && memcmp(av, bv, 4 * n) == 0);
        CHECK(sb.step == sa.step && memcmp(&sb.rng, &sa.rng, sizeof sa.rng) == 0);
        // the restored rng continues the same sequence
        CHECK(rng_u64(&sb.rng) == rng_u64(&sa.rng));

        // params only (st NULL on load)
        memset(b.params.base, 0, 4 * n);
        CHECK(checkpoint_load(path, &b, NULL) == 0);
        CHECK(memcmp(a.params.base, b.params.base, 4 * n) == 0);

        // saved without optimizer state: smaller file; loading zeroes the caller's Adam arrays
        TrainState s2 = {.step = 5};
        rng_seed(&s2.rng, 1);
        CHECK(checkpoint_save(path, &a, &s2) == 0);
        raw = test_read_file(path, &len);
        CHECK(len == 16 + 96 + 4 * n + 8);
        free(raw);
        for (size_t i = 0; i < n; i++) bm[i] = bv[i] = 7.0f;
        CHECK(checkpoint_load(path, &b, &sb) == 0);
        CHECK(sb.step == 5 && memcmp(&sb.rng, &s2.rng, sizeof s2.rng) == 0);
        int zero = 1;
        for (size_t i = 0; i < n; i++) zero &= bm[i] == 0 && bv[i] == 0;
        CHECK(zero);
        // and with no state at all
        CHECK(checkpoint_save(path, &a, NULL) == 0);
        CHECK(checkpoint_load(path, &b, &sb) == 0);
        CHECK(sb.step == 0);
        CHECK(memcmp(a.params.base, b.params.base, 4 * n) == 0);

        free(am); free(av); free(bm); free(bv);
        fake_free(&a);
        fake_free(&b);
    }
}

// A small checkpoint with optimizer state, its bytes, and a model to load into.
typedef struct {
    Model src, dst;
    float *m, *v, *dm, *dv;
    unsigned char *raw;
    size_t len;
    char path[1024];
} Fixture;

static void fixture_make(Fixture *fx, const char *dir) {
    ModelConfig cfg = tiny_cfg();
    fake_model(&fx->src, &cfg);
    fake_model(&fx->dst, &cfg);
    size_t n = fx->src.params.total;
    fill(fx->src.params.base, n, 11);
    fx->m = malloc(4 * n);
    fx->v = malloc(4 * n);
    fx->dm = malloc(4 * n);
    fx->dv = malloc(4 * n);
    fill(fx->m, n, 12);
    fill(fx->v, n, 13);
    TrainState st = {.step = 42, .adam_m = fx->m, .adam_v = fx->v};
    rng_seed(&st.rng, 3);
    snprintf(fx->path, sizeof fx->path, "%s/tiny.ckpt", dir);
    CHECK(checkpoint_save(fx->path, &fx->src, &st) == 0);
    fx->raw = test_read_file(fx->path, &fx->len);
    for (size_t i = 0; i < n; i++) fx->dst.params.base[i] = fx->dm[i] = fx->dv[i] = -3.0f;
}

// dst and its state still hold the sentinel -3 everywhere
static int fixture_untouched(const Fixture *fx) {
    int ok = 1;
    for (size_t i = 0; i < fx->dst.params.total; i++)
        ok &= fx->dst.params.base[i] == -3.0f && fx->dm[i] == -3.0f && fx->dv[i] == -3.0f;
    return ok;
}

static int fixture_load(Fixture *fx, const char *path) {
    TrainState st = {.step = -1, .adam_m = fx->dm, .adam_v = fx->dv};
    return checkpoint_load(path, &fx->dst, &st);
}

static void fixture_free(Fixture *fx) {
    fake_free(&fx->src);
    fake_free(&fx->dst);
    free(fx->m); free(fx->v); free(fx->dm); free(fx->dv); free(fx->raw);
}

TEST(ckpt_truncated_at_every_length) {
    const char *dir = test_tmpdir();
    Fixture fx;
    fixture_make(&fx, dir);
    CHECK(fx.len == 16 + 96 + 12 * fx.src.params.total + 8);
    const char *p = test_path_join(dir, "cut.ckpt");
    int bad_msgs = 0;
    for (size_t L = 0; L < fx.len; L++) {
        test_write_bytes(p, fx.raw, L);
        CHECK(fixture_load(&fx, p) == -1);
        const char *e = ms_error();
        int ok = contains(e, p) && contains(e, "truncated");
        if (L >= 112) { // the header is there: the exact sizes
            char want[200];
            snprintf(want, sizeof want, "checkpoint %s: truncated: expected %zu bytes, found %zu", p, fx.len, L);
            ok &= strcmp(e, want) == 0;
        }
        if (!ok && bad_msgs++ < 5) fprintf(stderr, "  length %zu: \"%s\"\n", L, e);
        ModelConfig c;
        CHECK(checkpoint_read_config(p, &c) == -1);
    }
    CHECK(bad_msgs == 0);
    CHECK(fixture_untouched(&fx));
    test_write_bytes(p, fx.raw, fx.len); // the whole file loads
    CHECK(fixture_load(&fx, p) == 0);
    CHECK(memcmp(fx.dst.params.base, fx.src.params.base, 4 * fx.src.params.total) == 0);
    fixture_free(&fx);
}

TEST(ckpt_flipped_bytes_and_garbage) {
    const char *dir = test_tmpdir();
    Fixture fx;
    fixture_make(&fx, dir);
    const char *p = test_path_join(dir, "flip.ckpt");
    unsigned char *buf = malloc(fx.len + 64);
    int silent = 0;
    for (size_t i = 0; i < fx.len; i++) {
        for (int k = 0; k < 2; k++) {
            memcpy(buf, fx.raw, fx.len);
            buf[i] ^= k ? 0x80 : 0x01;
            test_write_bytes(p, buf, fx.len);
            if (fixture_load(&fx, p) != -1 || !contains(ms_error(), p)) {
                if (silent++ < 5) fprintf(stderr, "  flip at %zu accepted or unnamed: %s\n", i, ms_error());
            }
            // a flip past the fixed-size fields can only be caught by the checksum
            if (i >= 112) CHECK(contains(ms_error(), "corrupt: checksum mismatch"));
        }
    }
    CHECK(silent == 0);
    // specific fields
    memcpy(buf, fx.raw, fx.len);
    buf[16] ^= 1; // config.dim
    test_write_bytes(p, buf, fx.len);
    CHECK(fixture_load(&fx, p) == -1 && contains(ms_error(), "checksum mismatch"));
    memcpy(buf, fx.raw, fx.len);
    buf[16 + 44] ^= 1; // step
    test_write_bytes(p, buf, fx.len);
    CHECK(fixture_load(&fx, p) == -1 && contains(ms_error(), "checksum mismatch"));
    memcpy(buf, fx.raw, fx.len);
    buf[fx.len] = 0; // one trailing byte
    test_write_bytes(p, buf, fx.len + 1);
    CHECK(fixture_load(&fx, p) == -1 && contains(ms_error(), "trailing"));
    CHECK(fixture_untouched(&fx));

    // random bytes of many lengths: "not an mslab checkpoint"
    Rng r;
    rng_seed(&r, 5);
    unsigned char *g = malloc(8192);
    for (int t = 0; t < 200; t++) {
        size_t L = 1 + rng_below(&r, 8000);
        for (size_t i = 0; i < L; i++) g[i] = (unsigned char)rng_u64(&r);
        if (memcmp(g, "MSLABCKP", L < 8 ? L : 8) == 0) g[0] ^= 0xff;
        test_write_bytes(p, g, L);
        CHECK(fixture_load(&fx, p) == -1);
        CHECK(contains(ms_error(), p) && contains(ms_error(), "not an mslab checkpoint"));
    }
    // the right magic (and version, header size) followed by garbage: some error, no crash
    for (int t = 0; t < 300; t++) {
        size_t L = 8 + rng_below(&r, 4000);
        for (size_t i = 0; i < L; i++) g[i] = (unsigned char)rng_u64(&r);
        memcpy(g, "MSLABCKP", 8);
        if (t % 2 && L >= 16) memcpy(g + 8, "\x01\0\0\0\x60\0\0\0", 8);
        if (t % 4 == 3 && L >= 120) { // plausible n_params and flags, so the checksum is reached
            uint64_t np = (L - 120) / 4;
            memcpy(g + 16 + 84, &np, 8);
            memset(g + 16 + 92, 0, 4);
        }
        test_write_bytes(p, g, L);
        ModelConfig c;
        CHECK(fixture_load(&fx, p) == -1 && contains(ms_error(), p));
        (void)checkpoint_read_config(p, &c); // may pass: read_config does not check the payload
    }
    CHECK(fixture_untouched(&fx));
    free(g);
    free(buf);
    fixture_free(&fx);
}

TEST(ckpt_magic_version_missing) {
    const char *dir = test_tmpdir();
    Fixture fx;
    fixture_make(&fx, dir);
    const char *p = test_path_join(dir, "v.ckpt");
    unsigned char *buf = malloc(fx.len);
    char want[1200];

    memcpy(buf, fx.raw, fx.len);
    memcpy(buf, "GGUF\0\0\0\0", 8);
    test_write_bytes(p, buf, fx.len);
    CHECK(fixture_load(&fx, p) == -1);
    snprintf(want, sizeof want, "checkpoint %s: not an mslab checkpoint", p);
    CHECK_STR(ms_error(), want);

    memcpy(buf, fx.raw, fx.len);
    buf[8] = 2;
    test_write_bytes(p, buf, fx.len);
    CHECK(fixture_load(&fx, p) == -1);
    snprintf(want, sizeof want, "checkpoint %s: version 2 is newer than this mslab (1)", p);
    CHECK_STR(ms_error(), want);
    ModelConfig c;
    CHECK(checkpoint_read_config(p, &c) == -1);
    CHECK_STR(ms_error(), want);

    buf[8] = 0;
    test_write_bytes(p, buf, fx.len);
    CHECK(fixture_load(&fx, p) == -1 && contains(ms_error(), "unsupported version 0"));

    memcpy(buf, fx.raw, fx.len);
    buf[12] = 100; // header size
    test_write_bytes(p, buf, fx.len);
    CHECK(fixture_load(&fx, p) == -1 && contains(ms_error(), "header size 100"));

    const char *missing = test_path_join(dir, "none.ckpt");
    CHECK(fixture_load(&fx, missing) == -1 && contains(ms_error(), missing));
    CHECK(checkpoint_read_config(missing, &c) == -1 && contains(ms_error(), missing));
    // saving where the directory cannot be created
    test_write_bytes(test_path_join(dir, "blocker"), "x", 1);
    const char *bad = test_path_join(dir, "blocker/sub/x.ckpt");
    CHECK(checkpoint_save(bad, &fx.src, NULL) == -1 && contains(ms_error(), bad));
    CHECK(fixture_untouched(&fx));
    free(buf);
    fixture_free(&fx);
}

TEST(ckpt_config_mismatch) {
    const char *dir = test_tmpdir();
    Fixture fx;
    fixture_make(&fx, dir);
    static const struct { const char *field, *msg; } cases[] = {
        {"ffn", "config mismatch: ffn is 4 in the file, 8 in the model"},
        {"seq_len", "config mismatch: seq_len is 8 in the file, 9 in the model"},
        {"rope_style", "config mismatch: rope_style is 0 in the file, 1 in the model"},
        {"rope_base", "config mismatch: rope_base is 500 in the file, 10000 in the model"},
        {"norm_eps", "config mismatch: norm_eps is"},
        {"tied", "config mismatch: tied is 1 in the file, 0 in the model"},
    };
    for (int i = 0; i < 6; i++) {
        ModelConfig c = tiny_cfg();
        if (i == 0) c.ffn = 8;
        if (i == 1) c.seq_len = 9;
        if (i == 2) c.rope_style = ROPE_HALVES;
        if (i == 3) c.rope_base = 10000.0f;
        if (i == 4) c.norm_eps = 1e-5f;
        if (i == 5) c.tied = 0;
        Model m;
        fake_model(&m, &c);
        for (size_t k = 0; k < m.params.total; k++) m.params.base[k] = -3.0f;
        CHECK(checkpoint_load(fx.path, &m, NULL) == -1);
        CHECK(contains(ms_error(), fx.path) && contains(ms_error(), cases[i].msg));
        if (!contains(ms_error(), cases[i].msg)) fprintf(stderr, "  %s: \"%s\"\n", cases[i].field, ms_error());
        int untouched = 1;
        for (size_t k = 0; k < m.params.total; k++) untouched &= m.params.base[k] == -3.0f;
        CHECK(untouched);
        fake_free(&m);
    }
    fixture_free(&fx);
}

// ---- llama2.c v0 ------------------------------------------------------------------------------------
TEST(llama2c_stories260k_config) {
    const char *path = test_shared_path("data/models/stories260K/stories260K.bin");
    if (!path) SKIP("../shared/data/models/stories260K/stories260K.bin not found");
    ModelConfig c;
    CHECK(llama2c_read_config(path, &c) == 0);
    CHECK(c.dim == 64 && c.ffn == 172 && c.layers == 5 && c.heads == 8 && c.kv_heads == 4);
    CHECK(c.vocab == 512 && c.tied == 1 && c.seq_len == 512);
    CHECK(c.rope_style == ROPE_INTERLEAVED && c.rope_base == 10000.0f && c.norm_eps == 1e-5f);
    size_t sz[P_COUNT];
    CHECK(cfg_sizes(&c, sz) == 264128 - 512 * 4 * 2); // the file's float count minus the RoPE tables
    CHECK(llama2c_load(path, NULL) == 0);             // header and size only
}

TEST(llama2c_stories260k_weights) {
    const char *path = test_shared_path("data/models/stories260K/stories260K.bin");
    if (!path) SKIP("../shared/data/models/stories260K/stories260K.bin not found");
    ModelConfig c;
    CHECK(llama2c_read_config(path, &c) == 0);
    Model m;
    fake_model(&m, &c);
    CHECK(llama2c_load(path, &m) == 0);
    size_t len;
    unsigned char *raw = test_read_file(path, &len);
    CHECK(raw && len == 1056540);
    if (!raw) return;
    float *f = (float *)(raw + 28); // floats of the file (28 is a multiple of 4)
    // every tensor equals its slice of the file
    size_t off = 0;
    for (int p = 0; p < P_WCLS; p++) {
        CHECK(memcmp(m.params.t[p], f + off, 4 * m.params.size[p]) == 0);
        off += m.params.size[p];
    }
    CHECK(m.params.size[P_WCLS] == 0);
    // single values at offsets computed from the layout
    const size_t C = 64, L = 5, F = 172, V = 512, KVD = 32;
    size_t o_wq = V * C + L * C, o_w2 = o_wq + 2 * L * C * C + 2 * L * KVD * C + L * C + L * F * C;
    CHECK(m.params.t[P_WTE][0] == f[0]);
    CHECK(m.params.t[P_WTE][V * C - 1] == f[V * C - 1]);
    CHECK(m.params.t[P_WQ][(3 * C + 5) * C + 7] == f[o_wq + (3 * C + 5) * C + 7]); // layer 3, row 5, col 7
    CHECK(m.params.t[P_W2][(4 * C + 63) * F + 171] == f[o_w2 + (4 * C + 63) * F + 171]);
    CHECK(m.params.t[P_FINAL_NORM][63] == f[off - 1]);
    // what follows rms_final is freq_cis_real: cos(pos * 10000^(-2i/8)), row pos of 4 values
    CHECK(f[off] == 1.0f);
    CHECK_NEAR(f[off + 4], cos(1.0), 1e-6);
    CHECK_NEAR(f[off + 5], cos(1.0 * pow(10000.0, -2.0 / 8)), 1e-6);
    CHECK(28 + 4 * (off + 2 * 512 * 4) == len);
    // the norms of a trained model are not all ones or zeros: a sanity check that this is weight data
    CHECK(m.params.t[P_ATTN_NORM][0] != 0.0f && m.params.t[P_ATTN_NORM][0] != 1.0f);
    fake_free(&m);

    // a model of another shape is refused, naming the field
    ModelConfig c2 = c;
    c2.kv_heads = 8;
    fake_model(&m, &c2);
    CHECK(llama2c_load(path, &m) == -1 && contains(ms_error(), "kv_heads is 4 in the file, 8 in the model"));
    fake_free(&m);
    // seq_len and rope_base are not part of the weights' shape
    c2 = c;
    c2.seq_len = 2048;
    c2.rope_base = 500000.0f;
    fake_model(&m, &c2);
    CHECK(llama2c_load(path, &m) == 0);
    CHECK(m.params.t[P_WTE][1] == f[1]);
    fake_free(&m);

    // truncated copies
    const char *dir = test_tmpdir();
    const char *cut = test_path_join(dir, "cut.bin");
    char want[1200];
    test_write_bytes(cut, raw, len - 1);
    CHECK(llama2c_read_config(cut, &c2) == -1);
    snprintf(want, sizeof want, "llama2c %s: truncated: expected 1056540 bytes", cut);
    CHECK(contains(ms_error(), want) && contains(ms_error(), "found 1056539"));
    fake_model(&m, &c);
    CHECK(llama2c_load(cut, &m) == -1 && contains(ms_error(), want));
    test_write_bytes(cut, raw, 20);
    CHECK(llama2c_load(cut, &m) == -1 && contains(ms_error(), cut) && contains(ms_error(), "truncated"));
    test_write_bytes(cut, raw, 1000);
    CHECK(llama2c_load(cut, &m) == -1 && contains(ms_error(), cut) && contains(ms_error(), "truncated"));
    unsigned char *longer = malloc(len + 4);
    memcpy(longer, raw, len);
    memset(longer + len, 0, 4);
    test_write_bytes(cut, longer, len + 4);
    CHECK(llama2c_load(cut, &m) == -1 && contains(ms_error(), cut) && contains(ms_error(), "wrong size"));
    // a garbage header
    memcpy(longer, "\x10\0\0\0\xff\xff\xff\xff", 8);
    test_write_bytes(cut, longer, len);
    CHECK(llama2c_load(cut, &m) == -1 && contains(ms_error(), "not a llama2.c v0 checkpoint"));
    // a newer llama2.c export
    memcpy(longer, "\x32\x34\x6b\x61\x01\0\0\0", 8);
    test_write_bytes(cut, longer, len);
    CHECK(llama2c_read_config(cut, &c2) == -1 && contains(ms_error(), "ak42"));
    const char *missing = test_path_join(dir, "missing.bin");
    CHECK(llama2c_read_config(missing, &c2) == -1 && contains(ms_error(), missing));
    free(longer);
    fake_free(&m);
    free(raw);
}

// A synthetic untied file: every float is its own index, so each tensor's first value says where it
// was read from; wcls must come after the skipped RoPE tables.
TEST(llama2c_untied_synthetic) {
    const char *dir = test_tmpdir();
    const int32_t hd[7] = {8, 12, 2, 2, 1, -10, 4}; // dim, hidden, layers, heads, kv, -vocab, seq
    ModelConfig c = {.dim = 8, .layers = 2, .heads = 2, .kv_heads = 1, .ffn = 12, .vocab = 10,
                     .seq_len = 4, .tied = 0};
    size_t sz[P_COUNT], n = cfg_sizes(&c, sz), nf = 2 * 4 * 2; // freq tables: 2 x seq x head/2
    size_t total = n + nf;
    float *f = malloc(total * 4);
    for (size_t i = 0; i < total; i++) f[i] = (float)i;
    const char *path = test_path_join(dir, "untied.bin");
    FILE *fp = fopen(path, "wb");
    fwrite(hd, 4, 7, fp);
    fwrite(f, 4, total, fp);
    fclose(fp);

    ModelConfig rc;
    CHECK(llama2c_read_config(path, &rc) == 0);
    CHECK(rc.vocab == 10 && rc.tied == 0 && rc.dim == 8 && rc.ffn == 12 && rc.kv_heads == 1 && rc.seq_len == 4);
    CHECK(rc.rope_style == ROPE_INTERLEAVED && rc.rope_base == 10000.0f && rc.norm_eps == 1e-5f);
    Model m;
    fake_model(&m, &rc);
    CHECK(m.params.size[P_WCLS] == 80);
    CHECK(llama2c_load(path, &m) == 0);
    size_t off = 0;
    for (int p = 0; p < P_COUNT; p++) {
        if (p == P_WCLS) off += nf;
        int ok = 1;
        for (size_t i = 0; i < m.params.size[p]; i++) ok &= m.params.t[p][i] == (float)(off + i);
        CHECK(ok);
        off += m.params.size[p];
    }
    CHECK(off == total);
    CHECK(m.params.t[P_WCLS][0] == (float)(n - 80 + nf));
    fake_free(&m);
    // the same file into a tied model: refused
    rc.tied = 1;
    fake_model(&m, &rc);
    CHECK(llama2c_load(path, &m) == -1 && contains(ms_error(), "tied is 0 in the file, 1 in the model"));
    fake_free(&m);
    free(f);
}
