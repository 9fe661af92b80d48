// Tests of core/eval.c's perplexity protocols (scored tokens and windows by hand, ppl against an
// independent computation, document boundaries, bounded memory at long lengths) and of a run's
// evaluation (core/run_eval.c): several protocols, passkey trials stored one row each.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/common.h"
#include "../core/eval.h"
#include "../core/run.h"
#include "../core/run_eval.h"
#include "../core/store.h"
#include "test.h"

static void tiny_model(Model *m, int vocab, int init) {
    ModelConfig c = model_config_default();
    c.dim = 16, c.layers = 2, c.heads = 2, c.kv_heads = 1, c.ffn = 24, c.vocab = vocab, c.seq_len = 8;
    CHECK(model_create(m, &c, backend_cpu()) == 0);
    if (init) model_init_weights(m, 7);
}

static PplResult ppl(Model *m, const uint16_t *tok, size_t n, const size_t *docs, int nd, int proto,
                     int L, int stride, int64_t max_tokens, int64_t batch) {
    EvalStream s = {tok, n, docs, nd};
    PplSpec sp = {.protocol = proto, .L = L, .stride = stride, .max_tokens = max_tokens,
                  .batch_tokens = batch};
    PplResult r;
    CHECK(eval_ppl(m, &s, 1, &sp, &r) == 0);
    return r;
}

// Windows and scored predictions of each protocol on a 21-token stream (20 predictions), by hand.
TEST(ppl_protocols_count_tokens_by_hand) {
    Model m;
    tiny_model(&m, 32, 0); // zero weights: every logit 0, every loss log(32), ppl exactly 32
    uint16_t tok[21];
    for (int i = 0; i < 21; i++) tok[i] = (uint16_t)(i * 7 % 32);
    size_t docs[3] = {0, 5, 15}; // documents of 5, 10 and 6 tokens
    PplResult r;
    r = ppl(&m, tok, 21, NULL, 0, PPL_WINDOWS, 8, 0, 0, 64); // (21-1)/8 = 2 windows
    CHECK(r.windows == 2 && r.n == 16);
    CHECK_REL(r.ppl, 32.0, 1e-5, 1);
    // sliding L 8, stride 4: [0,8) scores 8, [4,12) 4 new, [8,16) 4, [12,20) 4: every token once
    r = ppl(&m, tok, 21, NULL, 0, PPL_SLIDING, 8, 4, 0, 64);
    CHECK(r.windows == 4 && r.n == 20);
    CHECK_REL(r.ppl, 32.0, 1e-5, 1);
    // stride 3: starts 0, 3, 6, 9, 12 (ends 8, 11, 14, 17, 20): 8 + 4 x 3
    r = ppl(&m, tok, 21, NULL, 0, PPL_SLIDING, 8, 3, 0, 64);
    CHECK(r.windows == 5 && r.n == 20);
    // stride 5: starts 0, 5, 10, 15 -> the last window [15, 20) is shorter (5 inputs)
    r = ppl(&m, tok, 21, NULL, 0, PPL_SLIDING, 8, 5, 0, 64);
    CHECK(r.windows == 4 && r.n == 20);
    // default stride L/2
    r = ppl(&m, tok, 21, NULL, 0, PPL_SLIDING, 8, 0, 0, 64);
    CHECK(r.windows == 4 && r.n == 20);
    // longlora stride 4: range(0, 21 - 8, 4) = 0, 4, 8, 12, pop -> 3 windows x 8
    r = ppl(&m, tok, 21, NULL, 0, PPL_LONGLORA, 8, 4, 0, 64);
    CHECK(r.windows == 3 && r.n == 24);
    CHECK_REL(r.ppl, 32.0, 1e-5, 1);
    // truncate: only documents with L+1 tokens, one window each from their start
    r = ppl(&m, tok, 21, docs, 3, PPL_TRUNCATE, 8, 0, 0, 64); // only the 10-token document
    CHECK(r.windows == 1 && r.n == 8);
    r = ppl(&m, tok, 21, docs, 3, PPL_TRUNCATE, 4, 0, 0, 64); // all three
    CHECK(r.windows == 3 && r.n == 12);
    CHECK_REL(r.ppl, 32.0, 1e-5, 1);
    // max_tokens: whole windows while at most max_tokens are scored (at least one window)
    r = ppl(&m, tok, 21, NULL, 0, PPL_WINDOWS, 4, 0, 10, 64);
    CHECK(r.windows == 2 && r.n == 8);
    r = ppl(&m, tok, 21, NULL, 0, PPL_SLIDING, 8, 4, 14, 64);
    CHECK(r.windows == 2 && r.n == 12);
    r = ppl(&m, tok, 21, NULL, 0, PPL_WINDOWS, 8, 0, 3, 64);
    CHECK(r.windows == 1 && r.n == 8);
    // errors: nothing fits
    EvalStream s = {tok, 21, docs, 3};
    PplSpec sp = {.protocol = PPL_TRUNCATE, .L = 12, .batch_tokens = 64};
    CHECK(eval_ppl(&m, &s, 1, &sp, &r) == -1 && strstr(ms_error(), "truncate"));
    sp = (PplSpec){.protocol = PPL_LONGLORA, .L = 18, .stride = 4, .batch_tokens = 64};
    CHECK(eval_ppl(&m, &s, 1, &sp, &r) == -1); // range(0, 3, 4) = [0], popped
    sp = (PplSpec){.protocol = PPL_SLIDING, .L = 8, .stride = 9, .batch_tokens = 64};
    CHECK(eval_ppl(&m, &s, 1, &sp, &r) == -1 && strstr(ms_error(), "stride"));
    CHECK(ppl_protocol_from_name("longlora") == PPL_LONGLORA && ppl_protocol_from_name("x") == -1);
    model_destroy(&m);
}

// Sum of the losses of targets first .. T-1 of one window, with a plain (training-mode) forward.
static double window_loss(Model *m, const uint16_t *tok, size_t start, int T, int first) {
    int *in = malloc(sizeof(int) * T), *tg = malloc(sizeof(int) * T);
    float *loss = malloc(sizeof(float) * T);
    for (int t = 0; t < T; t++) in[t] = tok[start + t], tg[t] = tok[start + t + 1];
    model_forward(m, in, tg, 1, T);
    model_get_losses(m, loss);
    double s = 0;
    for (int t = first; t < T; t++) s += loss[t];
    free(in), free(tg), free(loss);
    return s;
}

// Each protocol's ppl of a trained-looking (random) tiny model equals the same averaging done here
// window by window with the ordinary forward; the evaluation batches windows and runs forward-only.
TEST(ppl_protocols_match_independent_computation) {
    Model m;
    tiny_model(&m, 32, 1);
    enum { N = 301 };
    uint16_t tok[N];
    Rng r;
    rng_seed(&r, 3);
    for (int i = 0; i < N; i++) tok[i] = (uint16_t)rng_below(&r, 32);
    size_t docs[4] = {0, 40, 170, 200}; // 40, 130, 30, 101 tokens
    int L = 32;
    // windows: 9 windows of 32, token-weighted
    double s = 0;
    for (int w = 0; w < 9; w++) s += window_loss(&m, tok, (size_t)w * L, L, 0);
    PplResult p = ppl(&m, tok, N, NULL, 0, PPL_WINDOWS, L, 0, 0, 3 * L);
    CHECK(p.n == 9 * L);
    CHECK_REL(p.ppl, exp(s / (9 * L)), 1e-5, 1);
    // sliding, stride 12: starts 0, 12, ..., the last ends at token 300
    s = 0;
    int64_t n = 0, prev = 0, nw = 0;
    for (int b = 0;; b += 12) {
        int end = b + L < N - 1 ? b + L : N - 1;
        s += window_loss(&m, tok, b, end - b, (int)(prev - b));
        n += end - prev, prev = end, nw++;
        if (end == N - 1) break;
    }
    p = ppl(&m, tok, N, NULL, 0, PPL_SLIDING, L, 12, 0, 4 * L);
    CHECK(p.n == N - 1 && n == N - 1 && p.windows == nw);
    CHECK_REL(p.ppl, exp(s / n), 1e-5, 1);
    // longlora, stride 16: starts 0, 16, ... < 301 - 32 = 269 (17 of them), the last dropped;
    // e^(mean of the window mean losses)
    double ms = 0;
    for (int k = 0; k < 16; k++) ms += window_loss(&m, tok, (size_t)k * 16, L, 0) / L;
    p = ppl(&m, tok, N, NULL, 0, PPL_LONGLORA, L, 16, 0, 5 * L);
    CHECK(p.windows == 16 && p.n == 16 * L);
    CHECK_REL(p.ppl, exp(ms / 16), 1e-5, 1);
    // truncate: one window at the start of each document with >= 33 tokens (docs 0, 1, 3)
    ms = (window_loss(&m, tok, 0, L, 0) + window_loss(&m, tok, 40, L, 0) +
          window_loss(&m, tok, 200, L, 0)) / L / 3;
    p = ppl(&m, tok, N, docs, 4, PPL_TRUNCATE, L, 0, 0, 2 * L);
    CHECK(p.windows == 3 && p.n == 3 * L);
    CHECK_REL(p.ppl, exp(ms), 1e-5, 1);
    // the boundaries matter: without them truncate is one window at token 0
    p = ppl(&m, tok, N, NULL, 0, PPL_TRUNCATE, L, 0, 0, 2 * L);
    CHECK(p.windows == 1);
    CHECK_REL(p.ppl, exp(window_loss(&m, tok, 0, L, 0) / L), 1e-5, 1);
    // the old entry point is the windows protocol
    PplResult q;
    CHECK(eval_ppl_windows(&m, tok, N, L, 0, 3 * L, &q) == 0);
    p = ppl(&m, tok, N, NULL, 0, PPL_WINDOWS, L, 0, 0, 3 * L);
    CHECK(q.ppl == p.ppl && q.n == p.n);
    model_destroy(&m);
}

// 64x the training length: the evaluation holds one layer's activations for one window, far below
// the training set for the same rows, and the model can train again afterwards.
TEST(ppl_long_length_memory_is_bounded) {
    Model m;
    ModelConfig c = model_config_default();
    c.dim = 32, c.layers = 4, c.heads = 2, c.kv_heads = 2, c.ffn = 64, c.vocab = 64, c.seq_len = 8;
    CHECK(model_create(&m, &c, backend_cpu()) == 0);
    model_init_weights(&m, 1);
    int L = 64 * 8;
    size_t n = (size_t)L + 1;
    uint16_t *tok = malloc(n * sizeof *tok);
    for (size_t i = 0; i < n; i++) tok[i] = (uint16_t)(i * 13 % 64);
    PplResult r = ppl(&m, tok, n, NULL, 0, PPL_WINDOWS, L, 0, 0, 16 * 8);
    CHECK(r.n == L && isfinite(r.ppl));
    size_t eval_bytes = m.acts_bytes;
    // per row, independent of the layers but for the positions: the residual stream twice, 11
    // C-wide buffers of one layer (k, v and their rotations are C-wide here), 3 F-wide, V logits,
    // and 16 scalars (norms, lse, losses, tokens, 4 positions)
    size_t per_row = (size_t)(2 * 32 + 11 * 32 + 3 * 64 + 64 + 16) * sizeof(float);
    if (eval_bytes > per_row * (size_t)L + 4096)
        fprintf(stderr, "    eval acts %zu bytes, bound %zu\n", eval_bytes, per_row * (size_t)L + 4096);
    CHECK(eval_bytes <= per_row * (size_t)L + 4096);
    CHECK(m.acts.fwd_only == 1 && m.forward_only == 0);
    // a training forward of as many rows (64 x 8: cheap attention) needs all layers and the
    // backward scratch
    int *in = calloc((size_t)L, sizeof(int)), *tg = calloc((size_t)L, sizeof(int));
    model_forward(&m, in, tg, 64, 8);
    CHECK(m.acts_bytes > 3 * eval_bytes);
    model_zero_grad(&m);
    model_backward(&m); // training mode again: the backward works
    free(in), free(tg), free(tok);
    model_destroy(&m);
}

// ---- a run's evaluation, from Lua ------------------------------------------------------------
#include <sys/stat.h>

#include "../lua/host.h"

// Three documents of different lengths (lines of text), so truncate sees boundaries.
static void eval_corpus(const char *dir) {
    char path[1024];
    mkdir(dir, 0755);
    for (int d = 0; d < 3; d++) {
        snprintf(path, sizeof path, "%s/doc%d.txt", dir, d);
        FILE *f = fopen(path, "w");
        for (int i = 0; i < 60 * (d + 1); i++)
            fprintf(f, "The pass key of line %d in book %d is %d.\n", i, d, i * 7 + d);
        fclose(f);
    }
}

TEST(run_eval_protocols_and_passkey_end_to_end) {
    const char *dir = test_tmpdir();
    char corpus[512], books[512], script[512], db[512], text[4096];
    snprintf(corpus, sizeof corpus, "%s/corpus", dir);
    snprintf(books, sizeof books, "%s/books", dir);
    eval_corpus(corpus);
    eval_corpus(books);
    snprintf(script, sizeof script, "%s/ev.lua", dir);
    snprintf(db, sizeof db, "%s/results.db", dir);
    snprintf(text, sizeof text,
             "local ms = require 'mslab'\n"
             "local c = ms.corpus { path = '%s', eval = 0.5, cache = '%s/cache' }\n"
             "local books = ms.corpus { path = '%s', eval = 0.3, cache = '%s/cache' }\n"
             "local model = { dim = 16, layers = 1, heads = 2, ffn = 32 }\n"
             "local train = { seq = 16, batch = 2, steps = 3, checkpoint_dir = '%s/ckpt' }\n"
             "local r = ms.run { name = 'ev', data = c, model = model, train = train,\n"
             "  eval = { ppl = { lengths = { 16, 64 }, max_tokens = 512, stride = 8,\n"
             "                   protocols = { 'windows', 'sliding', 'truncate', 'longlora' } },\n"
             "           passkey = { lengths = { 300, 360 }, trials = 3, seed = 5 } } }\n"
             "assert(r.status == 'done', r.error)\n"
             "local r2 = ms.run { name = 'books', data = c, model = model, train = train,\n"
             "  eval = { ppl = { lengths = { 64 }, protocol = 'truncate', data = books },\n"
             "           passkey = { lengths = { 300 }, trials = 2, depth = 0.5 } } }\n"
             "assert(r2.status == 'done', r2.error)\n",
             corpus, dir, books, dir, dir);
    test_write_file(script, text);
    CHECK(lua_host_run(script, db, 0, NULL) == 0);
    Store *s;
    CHECK(store_open(&s, db, 1) == 0);
    CHECK(test_db_rows(s, "SELECT * FROM evals e JOIN runs r ON r.id = e.run_id "
                   "WHERE r.name = 'ev' AND task = 'ppl'") == 8);
    CHECK_STR(test_db_first(s, "SELECT group_concat(protocol) FROM (SELECT protocol FROM evals e JOIN runs r"
                       " ON r.id = e.run_id WHERE r.name = 'ev' AND length = 16 AND task = 'ppl' "
                       "ORDER BY e.rowid)"), "windows,sliding,truncate,longlora");
    // windows: 512 / 64 = 8 whole windows; sliding with stride 8: 64 + 56 x 8 = 512
    CHECK_STR(test_db_first(s, "SELECT n FROM evals WHERE protocol = 'windows' AND length = 64"), "512");
    CHECK_STR(test_db_first(s, "SELECT n FROM evals e JOIN runs r ON r.id = e.run_id WHERE r.name = 'ev' AND"
                       " protocol = 'sliding' AND length = 64"), "512");
    // passkey: one row per trial, accuracy = mean(correct) per length
    CHECK(test_db_rows(s, "SELECT * FROM passkey_trials p JOIN runs r ON r.id = p.run_id WHERE r.name = 'ev'") == 6);
    CHECK(test_db_rows(s, "SELECT * FROM passkey_trials WHERE length = 360") == 3);
    CHECK(test_db_rows(s, "SELECT * FROM passkey_trials WHERE passkey < 1 OR passkey > 50000 "
                   "OR depth < 0 OR depth > 1") == 0);
    CHECK_STR(test_db_first(s, "SELECT count(*) FROM evals e WHERE task = 'passkey' AND protocol = 'landmark'"
                       " AND n = (SELECT count(*) FROM passkey_trials p WHERE p.run_id = e.run_id AND "
                       "p.length = e.length) AND abs(value - (SELECT avg(correct) FROM passkey_trials p"
                       " WHERE p.run_id = e.run_id AND p.length = e.length)) < 1e-12"), "3");
    // the separate corpus: truncate over all its documents (3 of them have 65 tokens)
    CHECK_STR(test_db_first(s, "SELECT n FROM evals e JOIN runs r ON r.id = e.run_id WHERE r.name = 'books'"
                       " AND task = 'ppl'"), "192");
    CHECK_STR(test_db_first(s, "SELECT min(abs(depth - 0.5)) < 0.01 FROM passkey_trials p JOIN runs r ON "
                       "r.id = p.run_id WHERE r.name = 'books'"), "1");
    CHECK_STR(test_db_first(s, "SELECT instr(config_json, '\"protocol\":\"truncate\"') > 0 AND "
                       "instr(config_json, '\"passkey\":{') > 0 FROM runs WHERE name = 'books'"), "1");
    store_close(s);
}

// Configs without the newer keys give the same JSON as before them (so their hashes stay).
TEST(run_eval_json_is_stable) {
    RunConfig rc;
    run_config_default(&rc);
    rc.ppl_lengths[0] = 16, rc.ppl_lengths[1] = 32, rc.n_ppl_lengths = 2;
    char *j = run_eval_json(&rc);
    CHECK_STR(j, "{\"ppl\":{\"protocol\":\"windows\",\"max_tokens\":32768,\"lengths\":[16,32]}}");
    free(j);
    rc.ppl_protocols[0] = PPL_SLIDING, rc.ppl_protocols[1] = PPL_TRUNCATE, rc.n_ppl_protocols = 2;
    rc.ppl_stride = 8;
    rc.passkey_lengths[0] = 500, rc.n_passkey_lengths = 1;
    j = run_eval_json(&rc);
    CHECK_STR(j, "{\"ppl\":{\"protocols\":[\"sliding\",\"truncate\"],\"max_tokens\":32768,"
                 "\"lengths\":[16,32],\"stride\":8},\"passkey\":{\"lengths\":[500],\"trials\":10,"
                 "\"depth\":\"uniform\",\"seed\":0,\"new_tokens\":10}}");
    free(j);
}

static const char *eval_script_error(const char *body) {
    char corpus[512];
    snprintf(corpus, sizeof corpus, "%s/corpus", test_tmpdir());
    eval_corpus(corpus);
    return test_script_error(corpus, "results.db", body);
}

TEST(run_eval_lua_errors_name_key_and_line) {
    CHECK_STR(eval_script_error("ms.run { data = c,\n  eval = { ppl = { lengths = { 16 },\n"
                                "    protocol = 'strided' } } }\n"),
              "bad.lua:5: eval.ppl.protocol: \"strided\" is not one of \"windows\", \"sliding\", "
              "\"truncate\", \"longlora\"");
    CHECK_STR(eval_script_error("ms.run { data = c,\n  eval = { ppl = { lengths = { 16 },\n"
                                "    protocols = { 'sliding', 'sliding' } } } }\n"),
              "bad.lua:5: eval.ppl.protocols[2]: \"sliding\" is listed twice");
    CHECK_STR(eval_script_error("ms.run { data = c,\n  eval = { ppl = { lengths = { 16 },\n"
                                "    stride = 0 } } }\n"),
              "bad.lua:5: eval.ppl.stride (0) must be positive");
    CHECK_STR(eval_script_error("ms.run { data = c,\n  eval = { ppl = { lengths = { 16 }, stride = 32,\n"
                                "    protocol = 'sliding' } } }\n"),
              "bad.lua:4: eval.ppl.stride (32) must be at most every length for \"sliding\" "
              "(eval.ppl.lengths[1] is 16)");
    CHECK_STR(eval_script_error("ms.run { data = c,\n  eval = { ppl = { lengths = { 16 },\n"
                                "    data = 'books' } } }\n"),
              "bad.lua:5: eval.ppl.data: expected a corpus from mslab.corpus{...}, got string");
    CHECK_STR(eval_script_error("ms.run { data = c,\n  eval = { passkey = { lengths = { 300 },\n"
                                "    depth = 'middle' } } }\n"),
              "bad.lua:5: eval.passkey.depth: \"middle\" is not \"uniform\" or a number in [0, 1]");
    CHECK_STR(eval_script_error("ms.run { data = c,\n  eval = { passkey = { lengths = { 300 },\n"
                                "    trails = 3 } } }\n"),
              "bad.lua:5: eval.passkey.trails: unknown key (known here: lengths, trials, depth, "
              "seed, new_tokens, tokenizer)");
    CHECK_STR(eval_script_error("ms.run { data = c,\n  eval = { passkey = { lengths = { 300 },\n"
                                "    trials = 0 } } }\n"),
              "bad.lua:5: eval.passkey.trials (0) must be positive");
}

// Passkey with the corpus's BPE tokenizer (llama2.c tokenizer.bin): lengths are in its tokens.
TEST(run_eval_passkey_with_bpe_corpus) {
    const char *tok = test_shared_path("data/models/stories260K/tok512.bin");
    if (!tok) SKIP("../shared/data/models/stories260K/tok512.bin not present");
    const char *dir = test_tmpdir();
    char corpus[512], script[512], db[512], text[4096];
    snprintf(corpus, sizeof corpus, "%s/corpus", dir);
    eval_corpus(corpus);
    snprintf(script, sizeof script, "%s/bpe.lua", dir);
    snprintf(db, sizeof db, "%s/results.db", dir);
    snprintf(text, sizeof text,
             "local ms = require 'mslab'\n"
             "local c = ms.corpus { path = '%s', tokenizer = '%s', cache = '%s/cache' }\n"
             "local r = ms.run { name = 'bpe', data = c, model = { dim = 16, layers = 1, heads = 2,\n"
             "  ffn = 32 }, train = { seq = 16, batch = 2, steps = 2, checkpoint_dir = '%s/ckpt' },\n"
             "  eval = { passkey = { lengths = { 200 }, trials = 2 } } }\n"
             "assert(r.status == 'done', r.error)\n",
             corpus, tok, dir, dir);
    test_write_file(script, text);
    CHECK(lua_host_run(script, db, 0, NULL) == 0);
    Store *s;
    CHECK(store_open(&s, db, 1) == 0);
    CHECK(test_db_rows(s, "SELECT * FROM passkey_trials WHERE length = 200") == 2);
    CHECK_STR(test_db_first(s, "SELECT value FROM params WHERE key = 'model.vocab'"), "512");
    CHECK_STR(test_db_first(s, "SELECT n FROM evals WHERE task = 'passkey'"), "2");
    store_close(s);
    // a length below the bare prompt is an error that names the key
    snprintf(text, sizeof text,
             "local ms = require 'mslab'\n"
             "local c = ms.corpus { path = '%s', tokenizer = '%s', cache = '%s/cache' }\n"
             "local r = ms.run { name = 'short', data = c, model = { dim = 16, layers = 1, heads = 2,\n"
             "  ffn = 32 }, train = { seq = 16, batch = 2, steps = 1, checkpoint_dir = '%s/ckpt' },\n"
             "  eval = { passkey = { lengths = { 150 }, trials = 1 } } }\n"
             "assert(r.status == 'failed')\n"
             "assert(r.error:find('eval.passkey.lengths[1] (150): passkey: target length 150', 1, true), r.error)\n",
             corpus, tok, dir, dir);
    test_write_file(script, text);
    CHECK(lua_host_run(script, db, 0, NULL) == 0);
    // eval.ppl.data must use the model's tokenizer
    snprintf(text, sizeof text,
             "local ms = require 'mslab'\n"
             "local c = ms.corpus { path = '%s', tokenizer = '%s', cache = '%s/cache' }\n"
             "local bytes = ms.corpus { path = '%s', cache = '%s/cache' }\n"
             "ms.run { name = 'mixed', eval = { ppl = { lengths = { 16 },\n"
             "  data = bytes } }, data = c }\n",
             corpus, tok, dir, corpus, dir);
    test_write_file(script, text);
    CHECK(lua_host_run(script, db, 0, NULL) == 1);
    char want[1024];
    snprintf(want, sizeof want, "bpe.lua:5: eval.ppl.data: its tokenizer (byte) is not the run "
             "corpus's (%s)", tok);
    CHECK(strstr(ms_error(), want) != NULL);
}

// ---- ./mslab plot passkey ---------------------------------------------------------------------
#include <sys/stat.h>

#include "../core/plot.h"

static long fsize(const char *dir, const char *name) {
    char p[1200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct stat st;
    return stat(p, &st) == 0 ? (long)st.st_size : -1;
}

TEST(plot_passkey_heat_map) {
    const char *dir = test_tmpdir();
    char db[512], out[512];
    snprintf(db, sizeof db, "%s/pk.db", dir);
    snprintf(out, sizeof out, "%s/plots", dir);
    Store *s;
    CHECK(store_open(&s, db, 0) == 0);
    // no trials yet: a clear error, no files
    CHECK(plot_passkey(db, out, NULL) == -1 && strstr(ms_error(), "no passkey trials"));
    const char *names[2] = {"short 'ctx'", "long"};
    for (int r = 0; r < 2; r++) {
        RunInfo ri = {.name = names[r], .script = "x.lua", .host = "h", .device = "cpu"};
        int64_t id;
        CHECK(store_run_begin(s, &ri, &id) == 0);
        for (int len = 256; len <= 1024; len *= 2)
            for (int t = 0; t < 10; t++)
                CHECK(store_passkey_trial(s, id, len, t / 10.0 + 0.05, t, 1234, "1234",
                                          (t + len / 256 + r) % 3 != 0) == 0);
        CHECK(store_run_end(s, id, "done", NULL) == 0);
    }
    store_close(s);
    CHECK(plot_passkey(db, out, "r.name = 'nothing'") == -1 &&
          strstr(ms_error(), "for runs where r.name = 'nothing'"));
    if (system("command -v gnuplot >/dev/null 2>&1") != 0) SKIP("gnuplot not installed");
    CHECK(plot_passkey(db, out, NULL) == 0);
    CHECK(fsize(out, "passkey.png") > 1000 && fsize(out, "passkey.svg") > 1000 &&
          fsize(out, "passkey.gp") > 100);
    CHECK(plot_passkey(db, out, "r.name = 'long'") == 0); // one run: its name in the title
}

// Document starts of both splits (what truncate and eval.ppl.data read): every document of the
// corpus starts with "The pass key", at each recorded start.
TEST(corpus_records_document_starts) {
    const char *dir = test_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/docs", dir);
    eval_corpus(path);
    const char *paths[] = {path};
    CorpusSpec spec = {.paths = paths, .n_paths = 1, .tokenizer = "byte", .eval_frac = 0.3,
                       .cache_dir = ""};
    Corpus c;
    CHECK(corpus_open(&c, &spec) == 0);
    CHECK(c.n_train_starts + c.n_eval_starts == 3 && c.n_eval_starts == c.n_eval_docs);
    CHECK_STR(c.tokenizer, "byte");
    for (int side = 0; side < 2; side++) {
        const uint16_t *t = side ? c.eval : c.train;
        const size_t *st = side ? c.eval_doc_start : c.train_doc_start;
        int n = side ? c.n_eval_starts : c.n_train_starts;
        CHECK(n == 0 || st[0] == 0);
        for (int d = 0; d < n; d++) {
            CHECK(d == 0 || st[d] > st[d - 1]);
            char head[13] = {0};
            for (int i = 0; i < 12; i++) head[i] = (char)t[st[d] + i];
            CHECK_STR(head, "The pass key");
        }
    }
    corpus_close(&c);
    // one document: the eval split is one document starting at 0
    snprintf(path, sizeof path, "%s/docs/doc2.txt", dir);
    CHECK(corpus_open(&c, &spec) == 0);
    CHECK(c.n_train_starts == 1 && c.n_eval_starts == 1 && c.eval_doc_start[0] == 0);
    corpus_close(&c);
}
