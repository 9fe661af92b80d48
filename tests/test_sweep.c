// Sweeps, resume and robustness (docs/sweeps.md): config hash stability, grid/random, skip and
// retry, kill -9 then resume bitwise equal to an uninterrupted run, 16 concurrent writer
// processes, a full disk, malformed scripts and corpora.
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "../core/common.h"
#include "../core/plot.h"
#include "../core/store.h"
#include "../lua/host.h"
#include "test.h"

static void write_corpus(const char *dir) {
    char path[1024];
    mkdir(dir, 0755);
    for (int d = 0; d < 2; d++) {
        snprintf(path, sizeof path, "%s/doc%d.txt", dir, d);
        FILE *f = fopen(path, "w");
        for (int i = 0; i < 300; i++) fprintf(f, "Sweep %d line %d: the quick brown fox.\n", d, i);
        fclose(f);
    }
}

// A script: the corpus in DIR/corpus, then BODY (with `c` the corpus, `tiny` a small config).
static void script(char *path, size_t n, const char *name, const char *body) {
    const char *dir = test_tmpdir();
    char corpus[600], text[8192];
    snprintf(corpus, sizeof corpus, "%s/corpus", dir);
    write_corpus(corpus);
    snprintf(path, n, "%s/%s", dir, name);
    snprintf(text, sizeof text,
             "local ms = require 'mslab'\n"
             "local c = ms.corpus { path = '%s', eval = 0.5, cache = '%s/cache' }\n"
             "local function tiny(t)\n"
             "  local r = { name = 'tiny', data = c, seed = 5,\n"
             "    model = { dim = 16, layers = 1, heads = 2, ffn = 32 },\n"
             "    train = { seq = 16, batch = 4, steps = 8, lr = 3e-3, warmup = 2, log_every = 4,\n"
             "              checkpoint_dir = '%s/ckpt' },\n"
             "    eval = { ppl = { lengths = { 16 }, max_tokens = 128 } } }\n"
             "  for k, v in pairs(t or {}) do r[k] = v end\n"
             "  return r\n"
             "end\n%s",
             corpus, dir, dir, body);
    test_write_file(path, text);
}

TEST(sweep_hash_ignores_key_order_number_format_and_name) {
    char path[600], db[600];
    snprintf(db, sizeof db, "%s/h.db", test_tmpdir());
    script(path, sizeof path, "hash.lua",
           "local a = ms.run { name = 'first', data = c, seed = 5,\n"
           "  model = { dim = 16, layers = 1, heads = 2, ffn = 32 },\n"
           "  train = { seq = 16, batch = 4, steps = 4, lr = 0.003, warmup = 2 } }\n"
           "local b = ms.run { train = { warmup = 2.0, steps = 4, batch = 4, seq = 16, lr = 3e-3 },\n"
           "  model = { ffn = 32, heads = 2, layers = 1, dim = 16, kv_heads = 2 }, seed = 5,\n"
           "  data = c, name = 'second' }\n"
           "assert(a.status == 'done' and b.skipped, 'second run not skipped')\n"
           "assert(a.config_hash == b.config_hash)\n"
           "local d = ms.run { name = 'other', data = c, seed = 6,\n"
           "  model = { dim = 16, layers = 1, heads = 2, ffn = 32 },\n"
           "  train = { seq = 16, batch = 4, steps = 4, lr = 0.003, warmup = 2 } }\n"
           "assert(d.config_hash ~= a.config_hash and not d.skipped)\n");
    CHECK(lua_host_run(path, db, 0, NULL) == 0);
    CHECK_STR(test_db_value(db, "SELECT count(*) FROM runs"), "2");
}

TEST(sweep_grid_and_random_are_deterministic) {
    char path[600], db[600];
    snprintf(db, sizeof db, "%s/g.db", test_tmpdir());
    script(path, sizeof path, "grid.lua",
           "local g = ms.grid { base = tiny(), vary = { train = { lr = { 1e-3, 2e-3, 4e-3 } },\n"
           "                                            model = { dim = { 16, 32 } } } }\n"
           "assert(#g == 6, #g)\n"
           "assert(g[1].name == 'tiny/model.dim=16,train.lr=0.001', g[1].name)\n"
           "assert(g[6].model.dim == 32 and g[6].train.lr == 4e-3 and g[6].train.steps == 8)\n"
           "assert(g[1].data == c and g[1].model ~= g[2].model, 'deep copy, corpus shared')\n"
           "local function names(l) local t = {} for i, x in ipairs(l) do t[i] = x.name end\n"
           "  return table.concat(t, ';') end\n"
           "local v = { train = { lr = { min = 1e-4, max = 1e-2, log = true } }, seed = { 1, 2, 3 } }\n"
           "local r1 = ms.random { base = tiny(), vary = v, n = 5, seed = 7 }\n"
           "local r2 = ms.random(tiny(), v, { n = 5, seed = 7 })\n"
           "local r3 = ms.random { base = tiny(), vary = v, n = 5, seed = 8 }\n"
           "assert(#r1 == 5 and names(r1) == names(r2) and names(r1) ~= names(r3))\n"
           "for _, x in ipairs(r1) do assert(x.train.lr >= 1e-4 and x.train.lr <= 1e-2) end\n"
           "local rs = ms.sweep { g[1], g[2] }\n"
           "assert(#rs == 2 and rs[2].status == 'done')\n");
    CHECK(lua_host_run(path, db, 0, NULL) == 0);
    CHECK_STR(test_db_value(db, "SELECT group_concat(name, ';') FROM runs"),
              "tiny/model.dim=16,train.lr=0.001;tiny/model.dim=16,train.lr=0.002");
}

TEST(sweep_bad_config_is_recorded_and_sweep_goes_on) {
    char path[600], db[600];
    snprintf(db, sizeof db, "%s/b.db", test_tmpdir());
    script(path, sizeof path, "bad.lua",
           "local rs = ms.sweep { tiny { name = 'ok1' },\n"
           "  tiny { name = 'bad', model = { dim = 30, heads = 4 } },\n"
           "  tiny { name = 'toolong', eval = { ppl = { lengths = { 100000 } } } },\n"
           "  tiny { name = 'ok2', seed = 9 } }\n"
           "assert(rs[1].status == 'done' and rs[2].status == 'failed' and rs[4].status == 'done')\n"
           "assert(rs[3].status == 'failed')\n");
    CHECK(lua_host_run(path, db, 0, NULL) == 0);
    CHECK(strstr(test_db_value(db, "SELECT error FROM runs WHERE name = 'bad'"),
                 "bad.lua:12: model.heads (4) must divide model.dim (30)") != NULL);
    CHECK_STR(test_db_value(db, "SELECT count(*) FROM runs"), "4");
    // again: done and failed runs are skipped
    CHECK(lua_host_run(path, db, 0, NULL) == 0);
    CHECK_STR(test_db_value(db, "SELECT count(*) FROM runs"), "4");
    // --retry-failed reruns the two failed ones (new rows); --force everything
    HostOptions o = {.retry_failed = 1};
    CHECK(lua_host_run_opts(path, db, 0, NULL, &o) == 0);
    CHECK_STR(test_db_value(db, "SELECT count(*) FROM runs"), "6");
    HostOptions f = {.force = 1};
    CHECK(lua_host_run_opts(path, db, 0, NULL, &f) == 0);
    CHECK_STR(test_db_value(db, "SELECT count(*) FROM runs"), "10");
    // a single ms.run with a bad config stops the script (a typo should not pass unnoticed)
    script(path, sizeof path, "single.lua", "ms.run(tiny { model = { dim = 30, heads = 4 } })\n");
    CHECK(lua_host_run(path, db, 0, NULL) == 1);
    CHECK(strstr(ms_error(), "single.lua:") != NULL);
}

static long long last_step(const char *db) {
    const char *v = test_db_value(db, "SELECT max(step) FROM metrics WHERE name = 'train.loss'");
    return strcmp(v, "(no db)") ? atoll(v) : -1;
}

TEST(sweep_kill9_then_resume_is_bitwise_equal) {
    char path[600], db1[600], db2[600], curve1[4096], curve2[4096];
    const char *dir = test_tmpdir();
    snprintf(db1, sizeof db1, "%s/full.db", dir);
    snprintf(db2, sizeof db2, "%s/killed.db", dir);
    script(path, sizeof path, "long.lua",
           "local r = ms.run(tiny { train = { seq = 16, batch = 4, steps = 1500, lr = 3e-3,\n"
           "  warmup = 20, log_every = 3, checkpoint_every = 50, checkpoint_dir = arg[1] } })\n"
           "assert(r.status == 'done', r.error)\n");
    char ck1[600], ck2[600];
    snprintf(ck1, sizeof ck1, "%s/ck1", dir);
    snprintf(ck2, sizeof ck2, "%s/ck2", dir);
    char *a1[] = {ck1}, *a2[] = {ck2};
    CHECK(lua_host_run(path, db1, 1, a1) == 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        freopen("/dev/null", "w", stderr);
        _exit(lua_host_run(path, db2, 1, a2));
    }
    long long at = -1;
    for (int i = 0; i < 20000 && at < 300; i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
        at = last_step(db2);
    }
    kill(pid, SIGKILL);
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFSIGNALED(st)); // killed mid-run, not finished
    CHECK_STR(test_db_value(db2, "SELECT status FROM runs"), "running");
    fprintf(stderr, "    killed at step %lld (of 1500)\n", last_step(db2));
    CHECK(lua_host_run(path, db2, 1, a2) == 0); // the dead pid: resumed from its checkpoint
    CHECK_STR(test_db_value(db2, "SELECT status || count(*) FROM runs"), "done1");
    const char *q = "SELECT group_concat(v, ',') FROM (SELECT quote(value) AS v FROM metrics"
                    " WHERE name IN ('train.loss', 'eval.loss') ORDER BY step, name)";
    snprintf(curve1, sizeof curve1, "%.4000s", test_db_value(db1, q));
    snprintf(curve2, sizeof curve2, "%.4000s", test_db_value(db2, q));
    CHECK(strlen(curve1) > 1000);
    CHECK_STR(curve1, curve2);
    const char *last = "SELECT quote(value) FROM metrics WHERE name = 'train.loss' ORDER BY step DESC LIMIT 1";
    char l1[64];
    snprintf(l1, sizeof l1, "%s", test_db_value(db1, last));
    CHECK_STR(l1, test_db_value(db2, last));
    snprintf(l1, sizeof l1, "%s", test_db_value(db1, "SELECT quote(value) FROM evals"));
    CHECK_STR(l1, test_db_value(db2, "SELECT quote(value) FROM evals"));
    // provenance and the checkpoint named by uid
    CHECK(strstr(test_db_value(db2, "SELECT provenance_json FROM runs"), "\"pid\":") != NULL);
    CHECK_STR(test_db_value(db2, "SELECT length(script_hash) = 16 AND peak_rss_mb > 0 FROM runs"), "1");
    CHECK(strstr(test_db_value(db2, "SELECT path FROM artifacts"), test_db_value(db2, "SELECT uid FROM runs")) != NULL);
}

TEST(store_16_concurrent_writers_lose_nothing) {
    char db[600];
    snprintf(db, sizeof db, "%s/c.db", test_tmpdir());
    enum { P = 16, M = 300 };
    pid_t pids[P];
    fflush(NULL);
    for (int p = 0; p < P; p++) {
        if ((pids[p] = fork()) == 0) {
            Store *s;
            int bad = 0;
            if (store_open(&s, db, 0)) _exit(10);
            for (int r = 0; r < 2; r++) {
                char name[32];
                snprintf(name, sizeof name, "w%d-%d", p, r);
                RunInfo info = {.name = name, .config_hash = name};
                int64_t id;
                if (store_run_begin(s, &info, &id)) _exit(11);
                for (int m = 0; m < M; m++) bad |= store_metric(s, id, m, "train.loss", m * 0.5, 0) != 0;
                bad |= store_eval(s, id, "ppl", 128, 3.0, "windows", 10) != 0;
                bad |= store_run_end(s, id, "done", NULL) != 0;
            }
            if (bad) fprintf(stderr, "writer %d: %s\n", p, ms_error());
            store_close(s);
            _exit(bad ? 12 : 0);
        }
    }
    int ok = 1;
    for (int p = 0; p < P; p++) {
        int st;
        waitpid(pids[p], &st, 0);
        ok &= WIFEXITED(st) && WEXITSTATUS(st) == 0;
    }
    CHECK(ok);
    CHECK_STR(test_db_value(db, "SELECT count(*) FROM runs WHERE status = 'done'"), "32");
    CHECK_STR(test_db_value(db, "SELECT count(*) FROM metrics"), "9600");
    CHECK_STR(test_db_value(db, "SELECT count(*) FROM evals"), "32");
}

TEST(store_full_disk_is_a_clear_error_and_keeps_earlier_rows) {
    char db[600];
    snprintf(db, sizeof db, "%s/full.db", test_tmpdir());
    Store *s;
    CHECK(store_open(&s, db, 0) == 0);
    RunInfo info = {.name = "before"};
    int64_t id;
    CHECK(store_run_begin(s, &info, &id) == 0);
    CHECK(store_run_end(s, id, "done", NULL) == 0);
    store_close(s);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) { // a disk that fills: every file is limited to 256 KiB
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {256 << 10, 256 << 10};
        setrlimit(RLIMIT_FSIZE, &rl);
        Store *w;
        if (store_open(&w, db, 0)) _exit(2);
        RunInfo big = {.name = "filling"};
        int64_t rid;
        if (store_run_begin(w, &big, &rid)) _exit(3);
        for (int i = 0; i < 200000; i++)
            if (store_metric(w, rid, i, "train.loss", i, 0)) {
                const char *e = ms_error();
                _exit(strstr(e, "full") || strstr(e, "large") || strstr(e, "I/O") ? 0 : 4);
            }
        _exit(5);
    }
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK_STR(test_db_value(db, "SELECT status FROM runs WHERE name = 'before'"), "done");
    CHECK_STR(test_db_value(db, "PRAGMA quick_check"), "ok");
}

TEST(sweep_malformed_inputs_are_clear_errors) {
    const char *dir = test_tmpdir();
    char path[600], db[600], text[1200];
    snprintf(db, sizeof db, "%s/m.db", dir);
    snprintf(path, sizeof path, "%s/syntax.lua", dir);
    test_write_file(path, "local x = = 1\n");
    CHECK(lua_host_run(path, db, 0, NULL) == 1);
    CHECK(strstr(ms_error(), "syntax.lua:1:") != NULL);
    char bad[600];
    snprintf(bad, sizeof bad, "%s/bad.txt", dir);
    test_write_file(bad, "ok text \xff\xfe more\n");
    snprintf(path, sizeof path, "%s/utf8.lua", dir);
    snprintf(text, sizeof text, "require('mslab').corpus { path = '%s', cache = '' }\n", bad);
    test_write_file(path, text);
    CHECK(lua_host_run(path, db, 0, NULL) == 1);
    CHECK(strstr(ms_error(), "bad.txt") != NULL);
    snprintf(bad, sizeof bad, "%s/empty.txt", dir);
    test_write_file(bad, "");
    snprintf(text, sizeof text, "require('mslab').corpus { path = '%s', cache = '' }\n", bad);
    test_write_file(path, text);
    CHECK(lua_host_run(path, db, 0, NULL) == 1);
    CHECK(strstr(ms_error(), "empty.txt") != NULL);
    // a missing database directory
    char nodb[600];
    snprintf(nodb, sizeof nodb, "%s/no/such/dir/r.db", dir);
    CHECK(lua_host_run(path, nodb, 0, NULL) == 1);
    CHECK(strstr(ms_error(), "no/such/dir") != NULL);
}

static const char *capture(int (*fn)(Store *, const char *, FILE *), const char *db, const char *arg) {
    static char *text;
    size_t len = 0;
    free(text);
    text = NULL;
    FILE *f = open_memstream(&text, &len);
    Store *s;
    CHECK(store_open(&s, db, 1) == 0);
    if (s) CHECK(fn(s, arg, f) == 0);
    store_close(s);
    fclose(f);
    return text;
}

static const char *compare_b;
static int show(Store *s, const char *a, FILE *f) { return store_print_show(s, a, f); }
static int cmp(Store *s, const char *a, FILE *f) { return store_print_compare(s, a, compare_b, f); }
static int runs_where(Store *s, const char *w, FILE *f) { return store_print_runs(s, w, f); }

TEST(store_show_compare_csv_json) {
    char path[600], db[600];
    snprintf(db, sizeof db, "%s/s.db", test_tmpdir());
    script(path, sizeof path, "two.lua",
           "ms.sweep(ms.grid { base = tiny(), vary = { train = { lr = { 1e-3, 2e-3 } } } })\n");
    CHECK(lua_host_run(path, db, 0, NULL) == 0);
    const char *t = capture(show, db, "tiny/train.lr=0.002");
    CHECK(strstr(t, "status           done") != NULL);
    CHECK(strstr(t, "0.00200000009") != NULL); // train.lr, %.9g of the float
    CHECK(strstr(t, "\nevals\n") && strstr(t, "ppl") && strstr(t, "checkpoint"));
    compare_b = "2";
    t = capture(cmp, db, "1");
    CHECK(strstr(t, "train.lr  0.001") && strstr(t, "  0.002"));
    CHECK(strstr(t, "model.dim") == NULL); // equal params are not listed
    CHECK(strstr(t, "eval.loss") != NULL);
    t = capture(store_print_query_csv, db, "SELECT id, name, 'a,\"b' AS q, NULL AS z FROM runs WHERE id = 1");
    CHECK_STR(t, "id,name,q,z\r\n1,tiny/train.lr=0.001,\"a,\"\"b\",\r\n");
    t = capture(store_print_query_json, db, "SELECT id, 0.5 AS x, NULL AS z, 'q\"' AS s FROM runs WHERE id = 2");
    CHECK_STR(t, "[\n {\"id\": 2, \"x\": 0.5, \"z\": null, \"s\": \"q\\\"\"}\n]\n");
    t = capture(runs_where, db, "r.id = 2");
    CHECK(strstr(t, "lr=0.002") && !strstr(t, "lr=0.001"));
    CHECK_STR(test_db_value(db, "SELECT count(*) || ',' || round(min(train_lr), 6) || ',' || max(model_dim) FROM ppl_by_length"),
              "2,0.001,16");
}

// A 'running' row: skipped while its process lives (same host: pid; other host: fresh heartbeat),
// resumed once it is gone.
TEST(sweep_running_rows_alive_or_stale) {
    char path[600], db[600], sql[512];
    snprintf(db, sizeof db, "%s/r.db", test_tmpdir());
    script(path, sizeof path, "r.lua", "local r = ms.run(tiny())\nRESULT = r.status\n");
    CHECK(lua_host_run(path, db, 0, NULL) == 0);
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    const char *cases[][2] = {
        {"json_set(provenance_json, '$.host', 'elsewhere')", "100"},     // fresh: skip
        {"json_set(provenance_json, '$.host', '%s', '$.pid', %d)", "0"}, // alive here: skip
        {"json_set(provenance_json, '$.host', 'elsewhere')", "10000"},   // stale: resume
    };
    for (int c = 0; c < 3; c++) {
        char prov[256];
        snprintf(prov, sizeof prov, cases[c][0], host, (int)getpid());
        snprintf(sql, sizeof sql, "UPDATE runs SET status = 'running', finished_at = NULL,"
                 " provenance_json = %s, heartbeat_at = unixepoch() - %s", prov, cases[c][1]);
        sqlite3 *raw;
        CHECK(sqlite3_open(db, &raw) == SQLITE_OK);
        CHECK(sqlite3_exec(raw, sql, NULL, NULL, NULL) == SQLITE_OK);
        sqlite3_close(raw);
        CHECK(lua_host_run(path, db, 0, NULL) == 0);
        CHECK_STR(test_db_value(db, "SELECT count(*) || status FROM runs"), c < 2 ? "1running" : "1done");
    }
}

// plot --by: one colour and one legend entry per value of the param; speed-vs-length from 'speed'.
TEST(plot_by_param_groups_lines) {
    if (system("command -v gnuplot >/dev/null 2>&1") != 0) SKIP("gnuplot not installed");
    char db[600], out[600], gp[700];
    snprintf(db, sizeof db, "%s/p.db", test_tmpdir());
    snprintf(out, sizeof out, "%s/plots", test_tmpdir());
    Store *s;
    CHECK(store_open(&s, db, 0) == 0);
    for (int i = 0; i < 4; i++) {
        char name[16];
        snprintf(name, sizeof name, "r%d", i);
        RunInfo info = {.name = name};
        int64_t id;
        CHECK(store_run_begin(s, &info, &id) == 0);
        CHECK(store_param(s, id, "positions.kind", i % 2 ? "yarn" : "rope") == 0);
        for (int L = 128; L <= 1024; L *= 2) {
            CHECK(store_eval(s, id, "ppl", L, 10.0 + i + L / 1024.0, "windows", 100) == 0);
            CHECK(store_eval(s, id, "speed", L, 1e5 / L, "forward", L) == 0);
        }
    }
    store_close(s);
    plot_set_by("positions.kind");
    CHECK(plot_ppl_vs_length(db, out, "r.name != 'r3'") == 0);
    CHECK(plot_speed_vs_length(db, out, NULL) == 0);
    plot_set_by(NULL);
    snprintf(gp, sizeof gp, "%s/ppl_vs_length.gp", out);
    FILE *f = fopen(gp, "r");
    char text[8192] = "";
    if (f) text[fread(text, 1, sizeof text - 1, f)] = 0, fclose(f);
    CHECK(strstr(text, "lc 1 dt 1 title 'positions.kind=rope'") != NULL);
    CHECK(strstr(text, "lc 2 dt 1 title 'positions.kind=yarn'") != NULL);
    CHECK(strstr(text, "lc 1 dt 1 title ''") != NULL); // r2: rope again, no second entry
    CHECK(strstr(text, "$run4_") == NULL);                // excluded by --where
    snprintf(gp, sizeof gp, "%s/speed_vs_length.png", out);
    struct stat st;
    CHECK(stat(gp, &st) == 0 && st.st_size > 0);
}

// --jobs 2: the children are the mslab binary (./mslab from `make test`, or MSLAB_EXE), each run in
// its own process; the script's final pass sees every result.
TEST(sweep_jobs_run_in_separate_processes) {
    char exe[4096];
    const char *e = getenv("MSLAB_EXE");
    if (!realpath(e ? e : "./mslab", exe)) SKIP("no ./mslab binary (run from the repository root)");
    char path[600], db[600];
    snprintf(db, sizeof db, "%s/j.db", test_tmpdir());
    script(path, sizeof path, "jobs.lua",
           "local rs = ms.sweep(ms.grid { base = tiny(), vary = { seed = { 1, 2, 3 } } })\n"
           "for _, r in ipairs(rs) do assert(r.status == 'done' and r.eval_loss > 0, r.status) end\n");
    HostOptions o = {.jobs = 2, .exe = exe};
    fflush(NULL);
    CHECK(lua_host_run_opts(path, db, 0, NULL, &o) == 0);
    CHECK_STR(test_db_value(db, "SELECT count(*) || ',' || count(DISTINCT json_extract(provenance_json, '$.pid'))"
                        " || ',' || sum(status = 'done') FROM runs"), "3,3,3");
    HostOptions dry = {.dry_run = 1};
    CHECK(lua_host_run_opts(path, db, 0, NULL, &dry) == 0); // prints the plan: 3 skips
    // a script that asserts between runs: the plan stops at the first assert, the final pass runs
    // the rest in order
    script(path, sizeof path, "loop.lua",
           "for s = 4, 5 do local r = ms.run(tiny { seed = s }); assert(r.status == 'done') end\n");
    CHECK(lua_host_run_opts(path, db, 0, NULL, &o) == 0);
    CHECK_STR(test_db_value(db, "SELECT count(*) || ',' || sum(status = 'done') FROM runs"), "5,5");
}

// A read-only directory or database file: a clear error, earlier rows intact. Permissions do not
// bind root, so the check runs in a child that drops to uid 65534 (skipped when not root).
TEST(store_readonly_directory_and_file) {
    if (geteuid() != 0) SKIP("needs root to drop to another uid");
    char dir[] = "/tmp/mslab-ro-XXXXXX", db[64], fresh[64];
    if (!mkdtemp(dir)) SKIP("mkdtemp failed");
    snprintf(db, sizeof db, "%s/r.db", dir);
    snprintf(fresh, sizeof fresh, "%s/new.db", dir);
    Store *s;
    CHECK(store_open(&s, db, 0) == 0);
    RunInfo info = {.name = "kept"};
    int64_t id;
    CHECK(store_run_begin(s, &info, &id) == 0);
    CHECK(store_run_end(s, id, "done", NULL) == 0);
    store_close(s);
    chmod(db, 0444);
    chmod(dir, 0555);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (setuid(65534)) _exit(9);
        Store *w;
        int a = store_open(&w, fresh, 0) == -1 && strstr(ms_error(), "is not writable");
        if (!a) fprintf(stderr, "    fresh: %s\n", ms_error());
        int b = store_open(&w, db, 0) == -1 && strstr(ms_error(), "r.db");
        if (!b) fprintf(stderr, "    existing: %s\n", ms_error());
        _exit(a && b ? 0 : 1);
    }
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    chmod(dir, 0755);
    CHECK_STR(test_db_value(db, "SELECT name || status FROM runs"), "keptdone");
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

// A run that died after its last step (during its final evaluation) resumes without training and
// rewrites its final eval.loss instead of adding a second one.
TEST(sweep_resume_after_last_step_rewrites_final_eval) {
    char path[600], db[600], before[4096];
    snprintf(db, sizeof db, "%s/r.db", test_tmpdir());
    script(path, sizeof path, "r.lua", "local r = ms.run(tiny())\nassert(r.status == 'done', r.error)\n");
    CHECK(lua_host_run(path, db, 0, NULL) == 0);
    const char *curve = "SELECT group_concat(v, ',') FROM (SELECT quote(value) AS v FROM metrics"
                        " WHERE name = 'train.loss' ORDER BY step)";
    snprintf(before, sizeof before, "%s", test_db_value(db, curve));
    sqlite3 *raw;
    CHECK(sqlite3_open(db, &raw) == SQLITE_OK);
    CHECK(sqlite3_exec(raw, "UPDATE runs SET status = 'interrupted'", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(raw);
    CHECK(lua_host_run(path, db, 0, NULL) == 0);
    CHECK_STR(test_db_value(db, "SELECT status || count(*) FROM runs"), "done1");
    CHECK_STR(test_db_value(db, "SELECT count(*) FROM metrics WHERE name = 'eval.loss'"), "1");
    CHECK_STR(test_db_value(db, curve), before);
    CHECK_STR(test_db_value(db, "SELECT count(*) FROM evals WHERE task = 'ppl'"), "1");
}
