// test_precision.c: the run key `precision` (docs/lua-api.md, docs/cuda.md "Precision"): its
// defaults (bf16 on cuda, fp32 on cpu), its validation (errors name the script line and the key),
// and how a run records it (params; config_json only when not fp32, so fp32 hashes stay put).
// The bf16 numerics themselves are GPU tests (tests/gpu/backend_bf16_tests.c).
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../core/common.h"
#include "../core/run.h"
#include "../core/store.h"
#include "../lua/host.h"
#include "test.h"

static void write_corpus(const char *dir) {
    char path[1024];
    snprintf(path, sizeof path, "%s/doc.txt", dir);
    FILE *f = fopen(path, "w");
    for (int i = 0; i < 400; i++) fprintf(f, "In the beginning was the word, line %d.\n", i);
    fclose(f);
}

// Runs `body` after a corpus `c` (script line 3 is the body's first) and returns lua_host_run's
// code; *err gets the error text from the script's file name on.
static int run_script(const char *body, char *err, size_t n, char *db_out, size_t dn) {
    const char *dir = test_tmpdir();
    char corpus[512], script[512], text[4096];
    snprintf(corpus, sizeof corpus, "%s/corpus", dir);
    mkdir(corpus, 0755);
    write_corpus(corpus);
    snprintf(script, sizeof script, "%s/prec.lua", dir);
    snprintf(db_out, dn, "%s/results.db", dir);
    snprintf(text, sizeof text,
             "local ms = require 'mslab'\nlocal c = ms.corpus { path = '%s', cache = '%s/cache' }\n%s",
             corpus, dir, body);
    test_write_file(script, text);
    ms_clear_error();
    int rc = lua_host_run(script, db_out, 0, NULL);
    const char *e = ms_error(), *base = strstr(e, "prec.lua:");
    snprintf(err, n, "%s", base ? base : e);
    return rc;
}

TEST(precision_key_validation) {
    char err[1024], db[512];
    CHECK(run_script("ms.run { name = 'x', data = c,\n  precision = 'fp16' }\n", err, sizeof err,
                     db, sizeof db) == 1);
    CHECK_STR(err, "prec.lua:4: precision: \"fp16\" is not one of \"fp32\", \"bf16\"");
    CHECK(run_script("ms.run { name = 'x', data = c, device = 'cpu',\n\n  precision = 'bf16' }\n",
                     err, sizeof err, db, sizeof db) == 1);
    CHECK_STR(err, "prec.lua:5: precision \"bf16\" needs device \"cuda\" (device \"cpu\" computes "
                   "in fp32: give precision = \"fp32\" or leave it out)");
    CHECK(run_script("ms.run { data = c, precision = 16 }\n", err, sizeof err, db, sizeof db) == 1);
    CHECK_STR(err, "prec.lua:3: precision: expected a string, got number");
    // the default device (cpu) with bf16 is refused too
    CHECK(run_script("ms.run { data = c, precision = 'bf16' }\n", err, sizeof err, db, sizeof db) == 1);
    CHECK(strstr(err, "precision \"bf16\" needs device \"cuda\"") != NULL);
}

TEST(precision_defaults_and_engine_check) {
    RunConfig rc;
    run_config_default(&rc);
    CHECK(rc.precision == NULL);
    CHECK_STR(run_precision(&rc), "fp32"); // cpu
    rc.device = "cuda";
    CHECK_STR(run_precision(&rc), "bf16"); // cuda's default
    rc.precision = "fp32";
    CHECK_STR(run_precision(&rc), "fp32");
    // the engine's own check (for C callers), before any device is touched
    run_config_default(&rc);
    rc.precision = "bf16";
    CHECK(run_config_check(&rc) != 0);
    CHECK(strstr(ms_error(), "precision \"bf16\" needs device \"cuda\"") != NULL);
    rc.precision = "fp8";
    CHECK(run_config_check(&rc) != 0);
    CHECK(strstr(ms_error(), "precision \"fp8\"") != NULL);
    rc.precision = "fp32";
    CHECK(run_config_check(&rc) == 0);
    // config_json: fp32 leaves no key (the hashes of fp32 runs stay what they were), bf16 has one
    run_config_default(&rc);
    char *j = run_config_json(&rc);
    CHECK(strstr(j, "precision") == NULL);
    free(j);
    rc.device = "cuda";
    j = run_config_json(&rc);
    CHECK(strstr(j, "\"device\":\"cuda\",\"precision\":\"bf16\",") != NULL);
    free(j);
}

// A two-step run with `key` (Lua, e.g. "precision = 'fp32'") in its table; the params row `param`
// of the run into v ("(no row)" when absent).
static int tiny_run_param(const char *key, const char *param, char v[256]) {
    char err[1024], db[512], script[512], sql[256];
    snprintf(script, sizeof script,
             "local r = ms.run { name = '%s', data = c, %s,\n"
             "  model = { dim = 16, layers = 1, heads = 2, ffn = 16 },\n"
             "  train = { seq = 16, batch = 2, steps = 2, log_every = 1 } }\n"
             "assert(r.status == 'done', r.error)\n",
             param, key);
    if (run_script(script, err, sizeof err, db, sizeof db) != 0) return -1;
    Store *s;
    if (store_open(&s, db, 1) != 0) return -1;
    snprintf(sql, sizeof sql, "SELECT value FROM params WHERE key = '%s'", param);
    snprintf(v, 256, "%s", test_db_first(s, sql));
    store_close(s);
    return 0;
}

TEST(precision_recorded_with_the_run) {
    char v[256];
    CHECK(tiny_run_param("precision = 'fp32'", "precision", v) == 0);
    CHECK_STR(v, "fp32");
}

// `deterministic` (docs/cuda.md "Determinism"): a boolean, default true; only false is recorded
// (param and config_json), so the hashes of every earlier run stay what they were.
TEST(deterministic_key) {
    char err[1024], db[512];
    CHECK(run_script("ms.run { name = 'x', data = c,\n  deterministic = 'no' }\n", err, sizeof err,
                     db, sizeof db) == 1);
    CHECK_STR(err, "prec.lua:4: deterministic: expected a boolean, got string");
    RunConfig rc;
    run_config_default(&rc);
    CHECK(rc.deterministic == 1);
    char *j = run_config_json(&rc);
    CHECK(strstr(j, "deterministic") == NULL);
    free(j);
    rc.deterministic = 0;
    j = run_config_json(&rc);
    CHECK(strstr(j, "\"deterministic\":false,") != NULL);
    free(j);
    char v[256];
    CHECK(tiny_run_param("deterministic = false", "deterministic", v) == 0);
    CHECK_STR(v, "false");
}
