// Lua host tests: an experiment script end to end (rows queried back), and errors that name the
// script's file:line and the key path.
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../core/common.h"
#include "../core/store.h"
#include "../lua/host.h"
#include "test.h"

// A small corpus of two documents with real structure (repeated sentences), enough to train on.
static void write_corpus(const char *dir) {
    char path[1024];
    for (int d = 0; d < 2; d++) {
        snprintf(path, sizeof path, "%s/doc%d.txt", dir, d);
        FILE *f = fopen(path, "w");
        for (int i = 0; i < 400; i++)
            fprintf(f, "In the beginning %d was the word, and the word was with line %d.\n", d, i);
        fclose(f);
    }
}

TEST(lua_experiment_end_to_end) {
    const char *dir = test_tmpdir();
    char corpus[512], script[512], db[512], text[2048];
    snprintf(corpus, sizeof corpus, "%s/corpus", dir);
    mkdir(corpus, 0755);
    write_corpus(corpus);
    snprintf(script, sizeof script, "%s/tiny.lua", dir);
    snprintf(db, sizeof db, "%s/results.db", dir);
    snprintf(text, sizeof text,
             "local ms = require 'mslab'\n"
             "local c = ms.corpus { path = '%s', eval = 0.5, cache = '%s/cache' }\n"
             "assert(c.documents == 2 and c.eval_documents == 1, tostring(c))\n"
             "local r = ms.run { name = 'tiny', data = c, seed = 3,\n"
             "  model = { dim = 16, layers = 1, heads = 2, ffn = 32 },\n"
             "  train = { seq = 16, batch = 4, steps = 12, lr = 3e-3, warmup = 2, log_every = 4,\n"
             "            checkpoint_dir = '%s/ckpt' },\n"
             "  eval = { ppl = { lengths = { 16, 32 }, max_tokens = 256 } } }\n"
             "assert(r.status == 'done', r.error)\n"
             "assert(r.steps == 12 and r.ppl[16] > 1 and r.ppl[32] > 1)\n"
             "RESULT_ID = r.id\n",
             corpus, dir, dir);
    test_write_file(script, text);
    CHECK(lua_host_run(script, db, 0, NULL) == 0);
    Store *s;
    CHECK(store_open(&s, db, 1) == 0);
    CHECK_STR(test_db_first(s, "SELECT status FROM runs WHERE name = 'tiny'"), "done");
    CHECK_STR(test_db_first(s, "SELECT script FROM runs"), script);
    CHECK(test_db_rows(s, "SELECT * FROM metrics WHERE name = 'train.loss'") == 4); // steps 1, 4, 8, 12
    CHECK(test_db_rows(s, "SELECT * FROM evals WHERE task = 'ppl' AND protocol = 'windows'") == 2);
    CHECK_STR(test_db_first(s, "SELECT n FROM evals WHERE length = 32"), "256"); // 8 windows x 32
    CHECK_STR(test_db_first(s, "SELECT value FROM params WHERE key = 'model.kv_heads'"), "2");
    CHECK_STR(test_db_first(s, "SELECT count(*) FROM artifacts WHERE kind = 'checkpoint'"), "1");
    store_close(s);
}

// test.h: runs `body` after a prelude that opens `corpus` as c, as <tmpdir>/bad.lua against
// <tmpdir>/<db>; the script must fail; returns its error text from "bad.lua:" on.
const char *test_script_error(const char *corpus, const char *db, const char *body) {
    const char *dir = test_tmpdir();
    char script[512], dbpath[512], text[4096];
    snprintf(script, sizeof script, "%s/bad.lua", dir);
    snprintf(dbpath, sizeof dbpath, "%s/%s", dir, db);
    snprintf(text, sizeof text, "local ms = require 'mslab'\nlocal c = ms.corpus { path = '%s', cache = '%s/cache' }\n%s",
             corpus, dir, body);
    test_write_file(script, text);
    ms_clear_error();
    CHECK(lua_host_run(script, dbpath, 0, NULL) == 1);
    static char msg[1024];
    const char *e = ms_error();
    const char *base = strstr(e, "bad.lua:"); // strip the temporary directory
    snprintf(msg, sizeof msg, "%s", base ? base : e);
    return msg;
}

// Runs `body` as a script and returns the error text.
static const char *script_error(const char *body) {
    char corpus[512];
    snprintf(corpus, sizeof corpus, "%s/corpus", test_tmpdir());
    mkdir(corpus, 0755);
    write_corpus(corpus);
    return test_script_error(corpus, "results.db", body);
}

TEST(lua_errors_name_file_line_and_key) {
    CHECK_STR(script_error("ms.run { name = 'x', data = c,\n"
                           "  model = { dim = 128,\n"
                           "            heads = 6 } }\n"),
              "bad.lua:5: model.heads (6) must divide model.dim (128)");
    CHECK_STR(script_error("ms.run { data = c, model = { dimm = 64 } }\n"),
              "bad.lua:3: model.dimm: unknown key (known here: dim, layers, heads, kv_heads, ffn, "
              "vocab, tied, norm_eps, rope_style)");
    CHECK_STR(script_error("ms.run { data = c,\n  train = { steps = 'many' } }\n"),
              "bad.lua:4: train.steps: expected an integer, got string");
    CHECK_STR(script_error("ms.run { data = c, positions = { kind = 'alibi' } }\n"),
              "bad.lua:3: positions.kind: \"alibi\" is not one of \"none\", \"rope\", \"pi\", "
              "\"ntk\", \"dynamic-ntk\", \"yarn\", \"crd-ntk\"");
    CHECK_STR(script_error("ms.run { data = 'books' }\n"),
              "bad.lua:3: data: expected a corpus from mslab.corpus{...}, got string");
    CHECK_STR(script_error("local x = nil\nprint(x.y)\n"),
              "bad.lua:4: attempt to index a nil value (local 'x')");
}

TEST(lua_missing_corpus_file_is_named) {
    const char *dir = test_tmpdir();
    char script[512], db[512], text[1024];
    snprintf(script, sizeof script, "%s/c.lua", dir);
    snprintf(db, sizeof db, "%s/results.db", dir);
    snprintf(text, sizeof text, "require('mslab').corpus { path = '%s/nope.txt' }\n", dir);
    test_write_file(script, text);
    CHECK(lua_host_run(script, db, 0, NULL) == 1);
    CHECK(strstr(ms_error(), "c.lua:1:") != NULL);
    CHECK(strstr(ms_error(), "nope.txt") != NULL);
}

TEST(lua_failed_run_is_recorded_and_script_goes_on) {
    const char *dir = test_tmpdir();
    char corpus[512], script[512], db[512], text[2048];
    snprintf(corpus, sizeof corpus, "%s/corpus", dir);
    mkdir(corpus, 0755);
    write_corpus(corpus);
    snprintf(script, sizeof script, "%s/f.lua", dir);
    snprintf(db, sizeof db, "%s/results.db", dir);
    // eval length far beyond the eval set: the run fails with a message, the script continues
    snprintf(text, sizeof text,
             "local ms = require 'mslab'\n"
             "local c = ms.corpus { path = '%s', cache = '%s/cache' }\n"
             "local r = ms.run { name = 'too-long', data = c, model = { dim = 16, layers = 1, heads = 2, ffn = 16 },\n"
             "  train = { seq = 16, batch = 2, steps = 2 }, eval = { ppl = { lengths = { 1000000 } } } }\n"
             "assert(r.status == 'failed')\n"
             "assert(r.error:find('corpus too small'), r.error)\n",
             corpus, dir);
    test_write_file(script, text);
    CHECK(lua_host_run(script, db, 0, NULL) == 0);
    Store *s;
    CHECK(store_open(&s, db, 1) == 0);
    CHECK_STR(test_db_first(s, "SELECT status FROM runs"), "failed");
    CHECK(strstr(test_db_first(s, "SELECT error FROM runs"), "corpus too small") != NULL);
    store_close(s);
}
