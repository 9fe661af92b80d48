// test_attention_lua.c: attention from Lua: the selection against independent re-implementations
// (tests/lua/selection_reference.lua: plain Lua, and NumPy's lists committed under
// tests/reference/ms_selection), config errors naming the script line, a run recording its
// realised sparsity and FLOPs, and mslab.tensor's .npy files.
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/common.h"
#include "../core/run.h"
#include "../core/store.h"
#include "../lua/host.h"
#include "test.h"

static void put_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void make_corpus(const char *dir) {
    char path[700];
    for (int d = 0; d < 2; d++) {
        snprintf(path, sizeof path, "%s/doc%d.txt", dir, d);
        FILE *f = fopen(path, "w");
        for (int i = 0; i < 300; i++)
            fprintf(f, "Selected regions %d merge into groups; line %d of the text.\n", d, i);
        fclose(f);
    }
}

// Runs a script made of a corpus preamble and body; returns lua_host_run's status, the error in
// *err (file name from "s.lua:"), the db path in db.
static int run_script(const char *body, char *db, size_t dbn, const char **err) {
    const char *dir = test_tmpdir();
    char corpus[600], script[600], text[8192];
    snprintf(corpus, sizeof corpus, "%s/corpus", dir);
    mkdir(corpus, 0755);
    make_corpus(corpus);
    snprintf(script, sizeof script, "%s/s.lua", dir);
    snprintf(db, dbn, "%s/results.db", dir);
    snprintf(text, sizeof text,
             "local ms = require 'mslab'\nlocal c = ms.corpus { path = '%s', cache = '%s/cache' }\n"
             "local DIR = '%s'\n%s",
             corpus, dir, dir, body);
    put_file(script, text);
    ms_clear_error();
    int rc = lua_host_run(script, db, 0, NULL);
    static char msg[1024];
    const char *e = ms_error(), *base = strstr(e, "s.lua:");
    snprintf(msg, sizeof msg, "%s", base ? base : e);
    *err = msg;
    return rc;
}

static const char *script_error(const char *body) {
    char db[512];
    const char *err;
    CHECK(run_script(body, db, sizeof db, &err) == 1);
    return err;
}

TEST(attention_selection_matches_lua_and_numpy_reference) {
    if (access("tests/lua/selection_reference.lua", R_OK)) SKIP("run from the repository root");
    char db[512];
    snprintf(db, sizeof db, "%s/r.db", test_tmpdir());
    int rc = lua_host_run("tests/lua/selection_reference.lua", db, 0, NULL);
    CHECK(rc == 0);
    if (rc) fprintf(stderr, "    %s\n", ms_error());
}

TEST(attention_lua_config_errors_name_the_line) {
    const char *head = "ms.run { data = c, model = { dim = 16, layers = 2, heads = 2, ffn = 16 },\n";
    char body[1024];
#define BAD(attn, want)                                                                        \
    do {                                                                                       \
        snprintf(body, sizeof body, "%s  attention = { kind = 'ms',\n    %s } }\n", head, attn); \
        CHECK_STR(script_error(body), want);                                                   \
    } while (0)
    BAD("w = 16, top = 512,\n    merge = 3", "s.lua:7: attention.merge (3) must divide attention.top (512)");
    BAD("top = 64, merge = 64", "s.lua:6: attention.top (64) must be greater than attention.merge (64)");
    BAD("w = 16, prefix = 100", "s.lua:6: attention.w (16) must divide attention.prefix (100)");
    BAD("w = -4", "s.lua:6: attention.w (-4) must be positive");
    BAD("merge = 0", "s.lua:6: attention.merge (0) must be positive");
    BAD("ratio = 1.5", "s.lua:6: attention.ratio (1.5) must be in (0, 1]");
    BAD("ratio = 0", "s.lua:6: attention.ratio (0) must be in (0, 1]");
    BAD("top = 8, ratio = 0.5", "s.lua:6: attention.ratio: give attention.top or attention.ratio, not both");
    BAD("pool = 'median'", "s.lua:6: attention.pool: \"median\" is not one of \"mean\", \"max\", \"first\", \"nmean\"");
    BAD("block = 64", "s.lua:6: attention.block: not a knob of kind \"ms\" (its knobs: kind, w, top, "
        "ratio, merge, prefix, pool, score, select, order, local_groups, select_on, positions, tail, eval)");
    BAD("w = 4, top = 8, merge = 2,\n    layers = { [7] = { kind = 'dense' } }",
        "s.lua:7: attention.layers[7]: the model has 2 layers (1 .. 2)");
    BAD("w = 4, top = 8, merge = 2,\n    layers = { [2] = {\n      merge = 3 } }",
        "s.lua:8: attention.layers[2].merge (3) must divide attention.layers[2].top (8)");
#undef BAD
    CHECK_STR(script_error("ms.run { data = c,\n  attention = { kind = 'window', merge = 2 } }\n"),
              "s.lua:5: attention.merge: not a knob of kind \"window\" (its knobs: kind, window, eval)");
    CHECK_STR(script_error("ms.run { data = c,\n  attention = { kind = 'sparse' } }\n"),
              "s.lua:5: attention.kind: \"sparse\" is not one of \"dense\", \"ms\", \"moba\", \"s2\", \"window\"");
    CHECK_STR(script_error("ms.run { data = c,\n  attention = { kind = 's2', group = 7 } }\n"),
              "s.lua:5: attention.group (7) must be a positive even number");
    CHECK_STR(script_error("local a = ms.attention { kind = 'ms', top = 4, merge = 4 }\n"),
              "s.lua:4: attention.top (4) must be greater than attention.merge (4)");
}

// A run with ms attention (dense first layer): params, canonical config, sparsity and FLOPs.
TEST(attention_run_records_sparsity_and_flops) {
    char db[512];
    const char *err;
    int rc = run_script(
        "local r = ms.run { name = 'ms-tiny', data = c, seed = 2,\n"
        "  model = { dim = 16, layers = 2, heads = 2, ffn = 32 },\n"
        "  attention = { kind = 'ms', w = 2, top = 4, merge = 2,\n"
        "                layers = { [1] = { kind = 'dense' }, [2] = { order = 'votes' } } },\n"
        "  train = { seq = 32, batch = 2, steps = 3, log_every = 1, checkpoint_dir = DIR .. '/ck' },\n"
        "  eval = { ppl = { lengths = { 32 }, max_tokens = 64 } } }\n"
        "assert(r.status == 'done', r.error)\n"
        "-- layer 2: rows 0..7 dense (36 pairs), then 6 groups of 4 rows x (2 x 2 selected + local)\n"
        "local l2 = (36 + 6 * (4 * 4 + 10)) / (32 * 33 / 2)\n"
        "assert(math.abs(r.attn_sparsity - (1 + l2) / 2) < 1e-12, r.attn_sparsity)\n"
        "assert(r.attn_flops_per_token > 0)\n",
        db, sizeof db, &err);
    CHECK(rc == 0);
    if (rc) fprintf(stderr, "    %s\n", err);
    Store *s;
    if (store_open(&s, db, 1)) return;
    CHECK_STR(test_db_first(s, "SELECT value FROM params WHERE key = 'attention.kind'"), "ms");
    CHECK_STR(test_db_first(s, "SELECT value FROM params WHERE key = 'attention.merge'"), "2");
    CHECK_STR(test_db_first(s, "SELECT value FROM params WHERE key = 'attention.layers[1].kind'"), "dense");
    CHECK_STR(test_db_first(s, "SELECT value FROM params WHERE key = 'attention.eval'"), "dense");
    // an override without a kind changes knobs of the section's config
    CHECK_STR(test_db_first(s, "SELECT value FROM params WHERE key = 'attention.layers[2].w'"), "2");
    CHECK_STR(test_db_first(s, "SELECT value FROM params WHERE key = 'attention.layers[2].order'"), "votes");
    CHECK(strstr(test_db_first(s, "SELECT config_json FROM runs"),
                 "\"attention\":{\"kind\":\"ms\",\"w\":2,\"top\":4,\"ratio\":0,\"merge\":2,") != NULL);
    CHECK(strstr(test_db_first(s, "SELECT config_json FROM runs"), "\"layers\":{\"1\":{\"kind\":\"dense\"},\"2\":{\"kind\":\"ms\",") != NULL);
    double sp = atof(test_db_first(s, "SELECT value FROM metrics WHERE name = 'attn.sparsity'"));
    CHECK(sp > 0.5 && sp < 1);
    double fl = atof(test_db_first(s, "SELECT value FROM metrics WHERE name = 'attn.flops_per_token'"));
    double dfl = atof(test_db_first(s, "SELECT value FROM metrics WHERE name = 'attn.dense_flops_per_token'"));
    // head dim 8: 4 * 8 * causal pairs (2 layers x 2 heads x 528) / 32 tokens, dense
    CHECK_NEAR(dfl, 4.0 * 8 * 2 * 2 * 528 / 32, 1e-9);
    CHECK(fl < dfl * 1.2 && fl > dfl * 0.5);
    store_close(s);
    // the default attention keeps the canonical text it had before sparse kinds existed
    RunConfig rcfg;
    run_config_default(&rcfg);
    char *json = run_config_json(&rcfg);
    CHECK(strstr(json, "\"attention\":{\"kind\":\"dense\"},\"train\"") != NULL);
    free(json);
}

// .npy of every dtype written by mslab and read back; C order; NumPy's header layout; errors.
TEST(attention_tensor_npy_round_trip) {
    char db[512];
    const char *err;
    int rc = run_script(
        "local T = ms.tensor\n"
        "local x = T.randn({2, 3, 5}, 11)\n"
        "assert(x:max_abs_diff(T.randn({2, 3, 5}, 11)) == 0, 'seeded')\n"
        "for _, dt in ipairs { 'f32', 'f64', 'bf16', 'i32', 'i64' } do\n"
        "  local y = x:scale(dt:sub(1, 1) == 'i' and 100 or 1):astype(dt)\n"
        "  y:save(DIR .. '/' .. dt .. '.npy')\n"
        "  local z = T.load(DIR .. '/' .. dt .. '.npy')\n"
        "  assert(z.dtype == dt and z:max_abs_diff(y) == 0, dt)\n"
        "  assert(table.concat(z.shape, ',') == '2,3,5', dt)\n"
        "  x:scale(dt:sub(1, 1) == 'i' and 0.01 or 1)\n"
        "end\n"
        "local s = x:slice(2, 2, 3)\n"
        "assert(table.concat(s.shape, ',') == '2,2,5' and s:get(2, 1, 4) == x:get(2, 2, 4))\n"
        "assert(x:slice(3, -1):get(1, 3, 1) == x:get(1, 3, 5))\n"
        "local m = T.from { { 1, 2, 3 }, { 4, 5, 6 } }\n"
        "assert(#m == 6 and m:get(2, 3) == 6 and m:sum() == 21)\n"
        "local one = T.from({ 7 }, { 1 }, 'i64'); one:save(DIR .. '/one.npy')\n"
        "assert(T.load(DIR .. '/one.npy'):get(1) == 7)\n"
        "local bf = T.from({ 1.0, -2.5, 3.14159 }, { 3 }, 'bf16')\n"
        "assert(bf:get(1) == 1.0 and bf:get(2) == -2.5 and math.abs(bf:get(3) - 3.140625) < 1e-9)\n"
        "local ok, e = pcall(T.load, DIR .. '/missing.npy')\n"
        "assert(not ok and e:find('cannot open .*missing.npy'), e)\n",
        db, sizeof db, &err);
    CHECK(rc == 0);
    if (rc) fprintf(stderr, "    %s\n", err);
}

// NumPy's files read, and written back byte for byte; Fortran order refused.
TEST(attention_tensor_npy_numpy_files) {
    if (access("tests/reference/ms_selection/q.npy", R_OK)) SKIP("run from the repository root");
    char db[512];
    const char *err;
    int rc = run_script(
        "local T = ms.tensor\n"
        "local q = T.load('tests/reference/ms_selection/q.npy')\n"
        "assert(q.dtype == 'f32' and table.concat(q.shape, ',') == '2,70,4,8')\n"
        "q:save(DIR .. '/q.npy')\n"
        "local a, b = io.open('tests/reference/ms_selection/q.npy', 'rb'), io.open(DIR .. '/q.npy', 'rb')\n"
        "assert(a:read('a') == b:read('a'), 'mslab writes the bytes NumPy writes')\n"
        "local f = io.open(DIR .. '/fortran.npy', 'wb')\n"
        "local h = \"{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }\"\n"
        "h = h .. string.rep(' ', 64 - 10 - #h - 1) .. '\\n'\n"
        "f:write('\\x93NUMPY\\x01\\x00', string.char(#h, 0), h, string.rep('\\0', 16)); f:close()\n"
        "local ok, e = pcall(T.load, DIR .. '/fortran.npy')\n"
        "assert(not ok and e:find('Fortran order is not supported'), e)\n",
        db, sizeof db, &err);
    CHECK(rc == 0);
    if (rc) fprintf(stderr, "    %s\n", err);
}
