// Fine-tuning from Lua: finetune = { init, lora = {...} } and export = "dir" end to end, and the
// validation errors (file:line and key path).
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../core/common.h"
#include "../core/safetensors.h"
#include "../core/store.h"
#include "../lua/host.h"
#include "test.h"

static void ft_corpus(const char *dir) {
    char path[1024];
    mkdir(dir, 0755);
    for (int d = 0; d < 2; d++) {
        snprintf(path, sizeof path, "%s/doc%d.txt", dir, d);
        FILE *f = fopen(path, "w");
        for (int i = 0; i < 300; i++)
            fprintf(f, "And the %d said unto line %d: fine tune me.\n", d, i);
        fclose(f);
    }
}

static int ft_first(int n, const char *const *names, const char *const *vals, void *ctx) {
    (void)names;
    snprintf(ctx, 512, "%s", n > 0 && vals[0] ? vals[0] : "NULL");
    return 1;
}

static const char *ft_value(Store *s, const char *sql) {
    static char buf[512];
    strcpy(buf, "(no row)");
    CHECK(store_select(s, sql, ft_first, buf) == 0);
    return buf;
}

TEST(finetune_lora_run_end_to_end_with_export) {
    const char *dir = test_tmpdir();
    char corpus[512], script[512], db[512], text[4096];
    snprintf(corpus, sizeof corpus, "%s/ftcorpus", dir);
    ft_corpus(corpus);
    snprintf(script, sizeof script, "%s/ft.lua", dir);
    snprintf(db, sizeof db, "%s/ft.db", dir);
    snprintf(text, sizeof text,
             "local ms = require 'mslab'\n"
             "local c = ms.corpus { path = '%s', eval = 0.5, cache = '%s/cache' }\n"
             "local base = ms.run { name = 'base', data = c, seed = 3,\n"
             "  model = { dim = 16, layers = 2, heads = 2, kv_heads = 1, ffn = 32 },\n"
             "  export = '%s/base_export',\n"
             "  train = { seq = 16, batch = 4, steps = 6, lr = 3e-3, warmup = 1, checkpoint_dir = '%s/ck' },\n"
             "  eval = { ppl = { lengths = { 16 }, max_tokens = 64 } } }\n"
             "assert(base.status == 'done', base.error)\n"
             "local ft = ms.run { name = 'ft', data = c, seed = 4,\n"
             "  finetune = { init = '%s/base_export',\n"
             "               lora = { rank = 4, alpha = 8, targets = { 'q', 'v', 'down' }, train_norms = true } },\n"
             "  export = '%s/export',\n"
             "  train = { seq = 16, batch = 4, steps = 6, lr = 1e-2, warmup = 1, checkpoint_dir = '%s/ck' },\n"
             "  eval = { ppl = { lengths = { 16 }, max_tokens = 64 } } }\n"
             "assert(ft.status == 'done', ft.error)\n"
             "local full = ms.run { name = 'full', data = c, seed = 5, finetune = { init = '%s/export' },\n"
             "  train = { seq = 16, batch = 4, steps = 2, lr = 1e-3, warmup = 1, checkpoint_dir = '%s/ck' },\n"
             "  eval = { ppl = { lengths = { 16 }, max_tokens = 64 } } }\n"
             "assert(full.status == 'done', full.error)\n",
             corpus, dir, dir, dir, dir, dir, dir, dir, dir);
    test_write_file(script, text);
    CHECK(lua_host_run(script, db, 0, NULL) == 0);
    Store *s;
    CHECK(store_open(&s, db, 1) == 0);
    CHECK_STR(ft_value(s, "SELECT value FROM params p JOIN runs r ON r.id = p.run_id WHERE r.name = 'ft' "
                          "AND key = 'finetune.lora.targets'"), "q,v,down");
    CHECK_STR(ft_value(s, "SELECT value FROM params p JOIN runs r ON r.id = p.run_id WHERE r.name = 'ft' "
                          "AND key = 'finetune.lora.rank'"), "4");
    CHECK_STR(ft_value(s, "SELECT count(*) FROM artifacts WHERE kind = 'export'"), "2");
    CHECK_STR(ft_value(s, "SELECT instr(config_json, '\"finetune\":{') > 0 FROM runs WHERE name = 'ft'"), "1");
    CHECK_STR(ft_value(s, "SELECT instr(config_json, 'finetune') FROM runs WHERE name = 'base'"), "0");
    CHECK_STR(ft_value(s, "SELECT value FROM params p JOIN runs r ON r.id = p.run_id WHERE r.name = 'full' "
                          "AND key = 'model.kv_heads'"), "1"); // the architecture of the init
    store_close(s);
    char exp[600];
    snprintf(exp, sizeof exp, "%s/export", dir);
    ModelConfig c;
    CHECK(hf_read_config(exp, &c) == 0);
    CHECK(c.dim == 16 && c.layers == 2 && c.heads == 2 && c.kv_heads == 1 && c.rope_style == ROPE_HALVES);
}

static const char *ft_error(const char *body) {
    char corpus[512];
    snprintf(corpus, sizeof corpus, "%s/ftcorpus2", test_tmpdir());
    ft_corpus(corpus);
    return test_script_error(corpus, "bad.db", body);
}

TEST(finetune_config_errors_name_file_line_and_key) {
    CHECK_STR(ft_error("ms.run { data = c,\n  finetune = {\n    lora = { rank = 0 } } }\n"),
              "bad.lua:5: finetune.lora.rank (0) must be positive");
    CHECK_STR(ft_error("ms.run { data = c,\n  finetune = { lora = { rnk = 4 } } }\n"),
              "bad.lua:4: finetune.lora.rnk: unknown key (known here: rank, alpha, targets, "
              "train_embeddings, train_norms)");
    CHECK_STR(ft_error("ms.run { data = c,\n  finetune = { lora = { targets = { 'q', 'x' } } } }\n"),
              "bad.lua:4: finetune.lora.targets[2] (x) is not one of \"q\", \"k\", \"v\", \"o\", "
              "\"gate\", \"up\", \"down\"");
    CHECK_STR(ft_error("ms.run { data = c, finetune = { lora = { alpha = 'big' } } }\n"),
              "bad.lua:3: finetune.lora.alpha: expected a number, got string");
    CHECK(strstr(ft_error("ms.run { data = c,\n  finetune = { init = '/nonexistent/x.bin' } }\n"),
                 "bad.lua:4: finetune.init: model source /nonexistent/x.bin") != NULL);
    CHECK_STR(ft_error("ms.run { data = c,\n  model = { dim = 16 },\n  finetune = { init = 'tests/reference/hf_tiny' } }\n"),
              "bad.lua:4: model: not allowed with finetune.init (the architecture comes from "
              "tests/reference/hf_tiny)");
    CHECK_STR(ft_error("ms.run { data = c, finetune = { lora = {} },\n  train = { checkpoint_every = 5 } }\n"),
              "bad.lua:4: train.checkpoint_every (5): not supported with finetune.lora (the adapters "
              "are merged into the one checkpoint written at the end)");
}
