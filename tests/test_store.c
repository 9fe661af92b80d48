// test_store.c: results.db — schema, run lifecycle, exact read-back, read-only refusals, errors,
// the text tables, and several writers on one file.
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../core/common.h"
#include "../core/store.h"
#include "test.h"

// Query results as text: one line per row, columns joined by '|', SQL NULL as "NULL"; a failed
// query gives "ERROR: <message>". A few rotating buffers so two results can sit in one CHECK.
typedef struct {
    char *p;
    size_t n, cap;
} Text;

static void text_add(Text *t, const char *s) {
    size_t k = strlen(s);
    if (t->n + k + 1 > t->cap) {
        t->cap = (t->n + k + 1) * 2;
        t->p = realloc(t->p, t->cap);
    }
    memcpy(t->p + t->n, s, k + 1);
    t->n += k;
}

static int collect(int nc, const char *const *names, const char *const *v, void *ctx) {
    Text *t = ctx;
    for (int c = 0; c < nc; c++) {
        if (c) text_add(t, "|");
        text_add(t, v[c] ? v[c] : "NULL");
    }
    text_add(t, "\n");
    return 0;
}

static const char *q(Store *s, const char *sql) {
    static Text pool[4];
    static int k;
    Text *t = &pool[k++ % 4];
    t->n = 0;
    text_add(t, "");
    if (store_select(s, sql, collect, t)) {
        t->n = 0;
        text_add(t, "ERROR: ");
        text_add(t, ms_error());
    }
    return t->p;
}

static const char *db_in_tmp(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", test_tmpdir(), name);
    return buf;
}

static RunInfo info_named(const char *name) {
    RunInfo ri = {.name = name, .script = "experiments/x.lua", .config_json = "{\"lr\":0.001}",
                  .config_hash = "00ff", .git_rev = "abc123", .git_dirty = 1, .host = "h1",
                  .device = "cpu"};
    return ri;
}

// Direct SQL on the file, bypassing Store (to plant fixed timestamps or foreign schemas).
static int raw_exec(const char *path, const char *sql) {
    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK) return -1;
    sqlite3_busy_timeout(db, 5000);
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) fprintf(stderr, "  raw_exec: %s\n", sqlite3_errmsg(db));
    sqlite3_close(db);
    return rc == SQLITE_OK ? 0 : -1;
}

TEST(store_schema_version_and_objects) {
    char path[600];
    db_in_tmp(path, sizeof path, "results.db");
    Store *s;
    CHECK(store_open(&s, path, 0) == 0);
    if (!s) return;
    CHECK_STR(q(s, "PRAGMA user_version"), "3\n");
    // journal mode (a setting of the file): ask a plain connection, store_select refuses
    // PRAGMA journal_mode since it could change the mode
    CHECK(strstr(q(s, "PRAGMA journal_mode"), "refusing a statement") != NULL);
    sqlite3 *raw;
    if (sqlite3_open_v2(path, &raw, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(raw, "PRAGMA journal_mode", -1, &st, NULL) == SQLITE_OK) {
            CHECK(sqlite3_step(st) == SQLITE_ROW);
            CHECK_STR((const char *)sqlite3_column_text(st, 0), "wal");
            sqlite3_finalize(st);
        }
    }
    sqlite3_close(raw);
    CHECK_STR(q(s, "PRAGMA foreign_keys"), "1\n");
    CHECK_STR(q(s, "SELECT type, name FROM sqlite_master WHERE type IN ('table', 'view')"
                   " ORDER BY type, name"),
              "table|artifacts\ntable|evals\ntable|metrics\ntable|params\ntable|passkey_trials\n"
              "table|runs\n"
              "view|last_metrics\nview|ppl\nview|ppl_by_length\nview|run_params\nview|speed_by_length\n");
    CHECK_STR(q(s, "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
                   " ORDER BY name"),
              "artifacts_run\nevals_run_task_length\nmetrics_run_name_step\nparams_key_value\n"
              "params_run_key\npasskey_trials_run\nruns_config_hash\nruns_name\n");
    CHECK_STR(q(s, "SELECT group_concat(name, ',') FROM pragma_table_info('runs')"),
              "id,uid,name,script,config_json,config_hash,status,error,git_rev,git_dirty,host,"
              "device,started_at,finished_at,heartbeat_at,script_hash,provenance_json,peak_rss_mb\n");
    CHECK_STR(q(s, "SELECT group_concat(name, ',') FROM pragma_table_info('last_metrics')"),
              "run_id,name,step,value\n");
    CHECK_STR(q(s, "SELECT group_concat(name, ',') FROM pragma_table_info('ppl')"),
              "run_id,run_name,length,value,protocol,n\n");
    store_close(s);
    // reopening a current database migrates nothing and keeps the version
    CHECK(store_open(&s, path, 0) == 0);
    if (s) CHECK_STR(q(s, "PRAGMA user_version"), "3\n");
    store_close(s);
}

TEST(store_run_lifecycle) {
    char path[600];
    db_in_tmp(path, sizeof path, "results.db");
    Store *s;
    CHECK(store_open(&s, path, 0) == 0);
    if (!s) return;
    double t0 = ms_wall();
    RunInfo ri = info_named("ms_small");
    int64_t a = 0, b = 0;
    CHECK(store_run_begin(s, &ri, &a) == 0);
    CHECK(a == 1);
    CHECK_STR(q(s, "SELECT status, error IS NULL, finished_at IS NULL, name, script, config_json,"
                   " config_hash, git_rev, git_dirty, host, device FROM runs WHERE id = 1"),
              "running|1|1|ms_small|experiments/x.lua|{\"lr\":0.001}|00ff|abc123|1|h1|cpu\n");
    CHECK_STR(q(s, "SELECT length(uid), uid GLOB '*[^0-9a-f]*', typeof(started_at),"
                   " heartbeat_at = started_at FROM runs WHERE id = 1"),
              "32|0|real|1\n");
    CHECK_STR(q(s, "SELECT abs(started_at - CAST(strftime('%s', 'now') AS REAL)) < 5 FROM runs WHERE id = 1"), "1\n");

    CHECK(store_run_begin(s, &ri, &b) == 0);
    CHECK(b == 2);
    CHECK_STR(q(s, "SELECT count(DISTINCT uid) FROM runs"), "2\n");

    CHECK(store_heartbeat(s, a) == 0);
    CHECK_STR(q(s, "SELECT heartbeat_at >= started_at FROM runs WHERE id = 1"), "1\n");

    CHECK(store_run_end(s, a, "done", NULL) == 0);
    CHECK_STR(q(s, "SELECT status, error IS NULL, finished_at >= started_at FROM runs WHERE id = 1"),
              "done|1|1\n");
    CHECK(store_run_end(s, b, "failed", "loss is NaN at step 120") == 0);
    CHECK_STR(q(s, "SELECT status, error FROM runs WHERE id = 2"), "failed|loss is NaN at step 120\n");
    double t1 = ms_wall();
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM runs WHERE started_at >= %.3f AND finished_at <= %.3f",
             t0 - 1, t1 + 1);
    CHECK_STR(q(s, sql), "2\n");

    // refusals
    CHECK(store_run_end(s, a, "finished", NULL) == -1);
    CHECK(strstr(ms_error(), "invalid final status 'finished'") != NULL);
    CHECK(store_run_end(s, 99, "done", NULL) == -1);
    char want[700];
    snprintf(want, sizeof want, "%s: no run with id 99", path);
    CHECK_STR(ms_error(), want);
    CHECK(store_heartbeat(s, 99) == -1);
    CHECK(store_metric(s, 99, 1, "train.loss", 1.0, 0.0) == -1); // foreign key
    snprintf(want, sizeof want, "%s: FOREIGN KEY constraint failed", path);
    CHECK_STR(ms_error(), want);
    RunInfo noname = {0};
    CHECK(store_run_begin(s, &noname, &a) == -1);
    CHECK_STR(q(s, "SELECT count(*) FROM runs"), "2\n");
    store_close(s);
}

TEST(store_rows_read_back) {
    char path[600];
    db_in_tmp(path, sizeof path, "results.db");
    Store *s;
    CHECK(store_open(&s, path, 0) == 0);
    if (!s) return;
    RunInfo ri = info_named("r");
    int64_t id = 0;
    CHECK(store_run_begin(s, &ri, &id) == 0);
    CHECK(store_param(s, id, "model.d", "256") == 0);
    CHECK(store_param(s, id, "optim.lr", "0.001") == 0);
    CHECK(store_param(s, id, "optim.lr", "0.002") == 0); // replaces
    CHECK(store_param(s, id, "note", NULL) == 0);
    CHECK_STR(q(s, "SELECT run_id, key, value FROM params ORDER BY key"),
              "1|model.d|256\n1|note|NULL\n1|optim.lr|0.002\n");

    CHECK(store_metric(s, id, 0, "train.loss", 10.828125, 0.25) == 0);
    CHECK(store_metric(s, id, 100, "train.loss", 3.5, 12.5) == 0);
    CHECK(store_metric(s, id, 100, "lr", 0.000999, 12.5) == 0);
    CHECK(store_metric(s, id, 50, "train.loss", 5.0, 6.0) == 0); // written late, earlier step
    CHECK(store_metric(s, id, 200, "grad_norm", NAN, 30) == 0);  // NaN is stored as NULL
    CHECK_STR(q(s, "SELECT run_id, step, name, value, wall_s FROM metrics ORDER BY rowid"),
              "1|0|train.loss|10.828125|0.25\n1|100|train.loss|3.5|12.5\n"
              "1|100|lr|0.000999|12.5\n1|50|train.loss|5.0|6.0\n1|200|grad_norm|NULL|30.0\n");
    // exact doubles, not their text
    CHECK_STR(q(s, "SELECT value = 0.000999 FROM metrics WHERE name = 'lr'"), "1\n");

    CHECK(store_eval(s, id, "ppl", 128, 31.25, "sliding-64", 4096) == 0);
    CHECK(store_eval(s, id, "ppl", 1024, 18.5, "sliding-64", 4096) == 0);
    CHECK(store_eval(s, id, "copy", 512, 0.875, NULL, 100) == 0);
    CHECK_STR(q(s, "SELECT run_id, task, length, value, protocol, n FROM evals ORDER BY rowid"),
              "1|ppl|128|31.25|sliding-64|4096\n1|ppl|1024|18.5|sliding-64|4096\n"
              "1|copy|512|0.875|NULL|100\n");

    CHECK(store_artifact(s, id, "checkpoint", "checkpoints/r/step100.ckpt") == 0);
    CHECK_STR(q(s, "SELECT run_id, kind, path FROM artifacts"), "1|checkpoint|checkpoints/r/step100.ckpt\n");

    // views
    CHECK_STR(q(s, "SELECT run_id, name, step, value FROM last_metrics ORDER BY name"),
              "1|grad_norm|200|NULL\n1|lr|100|0.000999\n1|train.loss|100|3.5\n");
    CHECK_STR(q(s, "SELECT run_id, run_name, length, value, protocol, n FROM ppl ORDER BY length"),
              "1|r|128|31.25|sliding-64|4096\n1|r|1024|18.5|sliding-64|4096\n");
    store_close(s);

    // and from a second, read-only connection after close
    CHECK(store_open(&s, path, 1) == 0);
    if (s) CHECK_STR(q(s, "SELECT count(*), sum(value) FROM metrics"), "5|19.329124\n");
    store_close(s);
}

TEST(store_readonly_refuses_writes) {
    char path[600], want[900];
    db_in_tmp(path, sizeof path, "results.db");
    Store *s;
    CHECK(store_open(&s, path, 0) == 0);
    if (!s) return;
    RunInfo ri = info_named("keep");
    int64_t id = 0;
    CHECK(store_run_begin(s, &ri, &id) == 0);
    CHECK(store_metric(s, id, 1, "train.loss", 2.5, 1.0) == 0);
    store_close(s);

    CHECK(store_open(&s, path, 1) == 0);
    if (!s) return;
    const char *writes[] = {
        "INSERT INTO metrics(run_id, step, name, value) VALUES (1, 2, 'train.loss', 0)",
        "DELETE FROM runs",
        "DROP TABLE metrics",
        "UPDATE runs SET name = 'x'",
        "SELECT 1; DELETE FROM metrics", // a later writing statement refuses the whole text
    };
    for (size_t i = 0; i < sizeof writes / sizeof writes[0]; i++) {
        int rows = 0;
        CHECK(store_select(s, writes[i], NULL, &rows) == -1);
        CHECK(strstr(ms_error(), "refusing a statement that would modify the database") != NULL);
        CHECK(strncmp(ms_error(), path, strlen(path)) == 0);
    }
    CHECK_STR(q(s, "DELETE FROM runs"),
              (snprintf(want, sizeof want,
                        "ERROR: %s: refusing a statement that would modify the database (queries "
                        "are read-only): DELETE FROM runs", path),
               want));
    FILE *devnull = fopen("/dev/null", "w");
    CHECK(store_print_query(s, "DROP TABLE runs", devnull) == -1);
    fclose(devnull);
    CHECK(store_metric(s, id, 2, "train.loss", 1.0, 2.0) == -1);
    snprintf(want, sizeof want, "%s: opened read-only, cannot write", path);
    CHECK_STR(ms_error(), want);
    CHECK(store_run_begin(s, &ri, &id) == -1);
    CHECK(store_run_end(s, id, "done", NULL) == -1);
    CHECK(store_param(s, id, "k", "v") == -1);
    CHECK(store_eval(s, id, "ppl", 1, 1, "p", 1) == -1);
    CHECK(store_artifact(s, id, "k", "p") == -1);
    CHECK(store_heartbeat(s, id) == -1);
    // connection settings are refused too
    CHECK(strstr(q(s, "PRAGMA query_only = 0"), "refusing a PRAGMA that sets a value") != NULL);
    CHECK(strstr(q(s, "BEGIN"), "refusing transaction control") != NULL);
    CHECK(strstr(q(s, "ATTACH 'other.db' AS o"), "refusing ATTACH") != NULL);
    // reading pragmas that take an argument still work
    CHECK_STR(q(s, "PRAGMA table_info(params)"),
              "0|run_id|INTEGER|1|NULL|0\n1|key|TEXT|1|NULL|0\n2|value|TEXT|0|NULL|0\n");
    // data unchanged
    CHECK_STR(q(s, "SELECT r.name, r.status, m.step, m.value FROM runs r JOIN metrics m ON m.run_id = r.id"),
              "keep|running|1|2.5\n");
    store_close(s);

    // a writable Store's store_select refuses writes just the same
    CHECK(store_open(&s, path, 0) == 0);
    if (!s) return;
    CHECK(store_select(s, "DELETE FROM metrics", NULL, NULL) == -1);
    CHECK_STR(q(s, "SELECT count(*) FROM metrics"), "1\n");
    store_close(s);
}

TEST(store_multi_statement) {
    char path[600];
    db_in_tmp(path, sizeof path, "results.db");
    Store *s;
    CHECK(store_open(&s, path, 0) == 0);
    if (!s) return;
    // every statement runs in order; comments and trailing semicolons are fine
    CHECK_STR(q(s, "SELECT 1 AS a; SELECT 'x', NULL -- two columns\n;\n /* end */ "), "1\nx|NULL\n");
    char want[700];
    snprintf(want, sizeof want, "ERROR: %s: empty query", path);
    CHECK_STR(q(s, " ; -- nothing"), want);
    store_close(s);
}

// A version-1 database (as the first release wrote it) is migrated in place and keeps its rows.
TEST(store_migrates_v1_to_v2) {
    char path[600];
    db_in_tmp(path, sizeof path, "results.db");
    Store *s;
    CHECK(store_open(&s, path, 0) == 0);
    if (!s) return;
    RunInfo info = {.name = "old", .script = "x.lua", .config_json = "{}", .config_hash = "h"};
    int64_t id = 0;
    CHECK(store_run_begin(s, &info, &id) == 0);
    CHECK(store_eval(s, id, "ppl", 128, 4.5, "windows", 100) == 0);
    store_close(s);
    CHECK(raw_exec(path, "DROP VIEW ppl_by_length; DROP VIEW speed_by_length; DROP VIEW run_params;"
                         " DROP INDEX runs_config_hash;"
                         " DROP TABLE passkey_trials; ALTER TABLE runs DROP COLUMN script_hash;"
                         " ALTER TABLE runs DROP COLUMN provenance_json;"
                         " ALTER TABLE runs DROP COLUMN peak_rss_mb; PRAGMA user_version = 1") == 0);
    CHECK(store_open(&s, path, 1) == 0); // a reader sees version 1 as it is
    if (s) CHECK_STR(q(s, "SELECT count(*) FROM sqlite_master WHERE name = 'passkey_trials'"), "0\n");
    store_close(s);
    CHECK(store_open(&s, path, 0) == 0); // the next writer migrates
    if (!s) return;
    CHECK_STR(q(s, "PRAGMA user_version"), "3\n");
    CHECK_STR(q(s, "SELECT name, script_hash IS NULL FROM runs"), "old|1\n");
    CHECK_STR(q(s, "SELECT value, n FROM ppl"), "4.5|100\n");
    CHECK(store_passkey_trial(s, id, 2048, 0.25, 7, 31337, " 31337.", 1) == 0);
    CHECK(store_passkey_trial(s, id, 2048, 0.75, 8, 42, " 41", 0) == 0);
    CHECK_STR(q(s, "SELECT length, depth, seed, passkey, answer, correct FROM passkey_trials"
                   " ORDER BY seed"),
              "2048|0.25|7|31337| 31337.|1\n2048|0.75|8|42| 41|0\n");
    store_close(s);
}

TEST(store_newer_schema_refused) {
    char path[600], want[700];
    db_in_tmp(path, sizeof path, "results.db");
    CHECK(raw_exec(path, "CREATE TABLE runs(id INTEGER PRIMARY KEY); PRAGMA user_version = 4") == 0);
    snprintf(want, sizeof want, "%s: schema version 4 is newer than this mslab (3)", path);
    for (int ro = 0; ro <= 1; ro++) {
        Store *s = (Store *)1;
        CHECK(store_open(&s, path, ro) == -1);
        CHECK(s == NULL);
        CHECK_STR(ms_error(), want);
    }
}

TEST(store_open_errors) {
    char dir[600], path[700], want[1400];
    snprintf(dir, sizeof dir, "%s", test_tmpdir());
    Store *s;

    // writable, in a directory that does not exist
    snprintf(path, sizeof path, "%s/missing/results.db", dir);
    CHECK(store_open(&s, path, 0) == -1);
    snprintf(want, sizeof want,
             "%s: cannot create the database: directory %s/missing: No such file or directory",
             path, dir);
    CHECK_STR(ms_error(), want);

    // read-only, no file
    snprintf(path, sizeof path, "%s/results.db", dir);
    CHECK(store_open(&s, path, 1) == -1);
    snprintf(want, sizeof want, "%s: no such file (run an experiment first)", path);
    CHECK_STR(ms_error(), want);
    CHECK(access(path, F_OK) != 0); // and read-only did not create it

    // the path is a directory
    CHECK(store_open(&s, dir, 0) == -1);
    snprintf(want, sizeof want, "%s: is a directory, not a database", dir);
    CHECK_STR(ms_error(), want);

    // a file that is not SQLite
    snprintf(path, sizeof path, "%s/notes.txt", dir);
    FILE *f = fopen(path, "w");
    if (f) {
        fputs("these are not the tables you are looking for, not at all, no. padding padding "
              "padding padding padding padding padding padding padding padding padding\n", f);
        fclose(f);
    }
    CHECK(store_open(&s, path, 1) == -1);
    snprintf(want, sizeof want, "%s: file is not a database", path);
    CHECK_STR(ms_error(), want);

    // a SQLite file that mslab did not make
    snprintf(path, sizeof path, "%s/other.db", dir);
    CHECK(raw_exec(path, "CREATE TABLE foo(x)") == 0);
    CHECK(store_open(&s, path, 0) == -1);
    snprintf(want, sizeof want,
             "%s: not an mslab results database (it has tables but no schema version)", path);
    CHECK_STR(ms_error(), want);

    // an empty SQLite file opened read-only
    snprintf(path, sizeof path, "%s/empty.db", dir);
    f = fopen(path, "w");
    if (f) fclose(f);
    CHECK(store_open(&s, path, 1) == -1);
    snprintf(want, sizeof want, "%s: empty database (run an experiment first)", path);
    CHECK_STR(ms_error(), want);

    // SQL errors name the database and carry SQLite's message
    snprintf(path, sizeof path, "%s/results.db", dir);
    CHECK(store_open(&s, path, 0) == 0);
    if (!s) return;
    snprintf(want, sizeof want, "ERROR: %s: no such table: foo", path);
    CHECK_STR(q(s, "SELECT * FROM foo"), want);
    snprintf(want, sizeof want, "ERROR: %s: near \"SELEKT\": syntax error", path);
    CHECK_STR(q(s, "SELEKT 1"), want);
    store_close(s);
}

static char *capture_query(Store *s, const char *sql, int *rc) {
    char *text = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&text, &n);
    *rc = store_print_query(s, sql, f);
    fclose(f);
    return text;
}

TEST(store_print_query_table) {
    char path[600];
    db_in_tmp(path, sizeof path, "results.db");
    Store *s;
    CHECK(store_open(&s, path, 0) == 0);
    if (!s) return;
    RunInfo ri = info_named("alpha");
    int64_t id;
    CHECK(store_run_begin(s, &ri, &id) == 0);
    CHECK(store_metric(s, id, 1, "train.loss", 3.25, 0.5) == 0);
    CHECK(store_metric(s, id, 10, "train.loss", 1.0 / 3.0, 1.5) == 0);
    CHECK(store_metric(s, id, 100, "lr", 1e-4, 2) == 0);
    CHECK(store_metric(s, id, 1000, "lr", 12345678.0, 3) == 0);
    int rc;
    char *out = capture_query(s, "SELECT step, name, value FROM metrics ORDER BY step", &rc);
    CHECK(rc == 0);
    CHECK_STR(out, "step  name              value\n"
                   "----  ----------  -----------\n"
                   "   1  train.loss         3.25\n"
                   "  10  train.loss     0.333333\n"
                   " 100  lr               0.0001\n"
                   "1000  lr          1.23457e+07\n");
    free(out);
    // NULL prints empty (no trailing blanks), a column of numbers and NULLs is right-aligned, a
    // mixed column is left-aligned; two statements give two tables separated by a blank line
    out = capture_query(s,
                        "SELECT 'a' AS k, NULL AS v, 1 AS mixed UNION ALL SELECT 'long text', 7, 'x';"
                        "SELECT 'é' AS accent, 2.5 AS n",
                        &rc);
    CHECK(rc == 0);
    CHECK_STR(out, "k          v  mixed\n"
                   "---------  -  -----\n"
                   "a             1\n"
                   "long text  7  x\n"
                   "\n"
                   "accent    n\n"
                   "------  ---\n"
                   "é       2.5\n");
    free(out);
    // zero rows: header and rule
    out = capture_query(s, "SELECT id, name FROM runs WHERE id < 0", &rc);
    CHECK(rc == 0);
    CHECK_STR(out, "id  name\n--  ----\n");
    free(out);
    out = capture_query(s, "SELECT * FROM nope", &rc);
    CHECK(rc == -1);
    CHECK_STR(out, "");
    free(out);
    // a statement failing while it runs: the earlier statement's table is not printed either
    out = capture_query(s, "SELECT 1 AS a; SELECT abs(-9223372036854775807 - 1)", &rc);
    CHECK(rc == -1);
    CHECK_STR(out, "");
    char want[700];
    snprintf(want, sizeof want, "%s: integer overflow", path);
    CHECK_STR(ms_error(), want);
    free(out);
    store_close(s);
}

TEST(store_print_runs_table) {
    char path[600];
    db_in_tmp(path, sizeof path, "results.db");
    Store *s;
    CHECK(store_open(&s, path, 0) == 0);
    if (!s) return;
    RunInfo ra = info_named("alpha"), rb = info_named("beta_long");
    int64_t a, b;
    CHECK(store_run_begin(s, &ra, &a) == 0);
    CHECK(store_metric(s, a, 10, "train.loss", 2.5, 1) == 0);
    CHECK(store_metric(s, a, 20, "train.loss", 1.75, 2) == 0);
    CHECK(store_metric(s, a, 5, "train.loss", 9.0, 3) == 0); // late write of an earlier step
    CHECK(store_metric(s, a, 30, "eval.loss", 1.5, 4) == 0);
    CHECK(store_run_end(s, a, "done", NULL) == 0);
    CHECK(store_run_begin(s, &rb, &b) == 0);
    const char *err = "CUDA error: out of memory while allocating 17179869184 bytes\nfor the KV cache";
    CHECK(store_run_end(s, b, "failed", err) == 0);
    store_close(s);
    const double t = 1700000000.0; // fixed times: 3m12s and 2h01m05s of wall time
    CHECK(raw_exec(path, "UPDATE runs SET started_at = 1700000000, finished_at = 1700000192 WHERE id = 1;"
                         "UPDATE runs SET started_at = 1700000000, finished_at = 1700007265 WHERE id = 2") == 0);

    CHECK(store_open(&s, path, 1) == 0);
    if (!s) return;
    char *text = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&text, &n);
    CHECK(store_print_runs(s, NULL, f) == 0);
    fclose(f);
    time_t tt = (time_t)t;
    struct tm tm;
    char started[32];
    localtime_r(&tt, &tm);
    strftime(started, sizeof started, "%Y-%m-%d %H:%M", &tm);
    char want[1200];
    snprintf(want, sizeof want,
             "id  name       status  started            wall  last loss  error\n"
             "--  ---------  ------  ----------------  -----  ---------  "
             "---------------------------------------------------------------\n"
             " 1  alpha      done    %s  3m12s       1.75\n"
             " 2  beta_long  failed  %s  2h01m             "
             "CUDA error: out of memory while allocating 17179869184 bytes...\n",
             started, started);
    CHECK_STR(text, want);
    free(text);
    store_close(s);
}

TEST(store_two_handles_alternate) {
    char path[600];
    db_in_tmp(path, sizeof path, "results.db");
    Store *s1, *s2;
    CHECK(store_open(&s1, path, 0) == 0);
    CHECK(store_open(&s2, path, 0) == 0);
    if (!s1 || !s2) return;
    RunInfo ri = info_named("shared");
    int64_t a, b;
    CHECK(store_run_begin(s1, &ri, &a) == 0);
    CHECK(store_run_begin(s2, &ri, &b) == 0);
    CHECK(a == 1 && b == 2);
    int fails = 0;
    for (int i = 0; i < 100; i++) {
        fails += store_metric(s1, a, 2 * i, "train.loss", i, i) != 0;
        fails += store_metric(s2, a, 2 * i + 1, "train.loss", i + 0.5, i) != 0;
        fails += store_eval(s2, b, "ppl", i, i, "p", 1) != 0;
    }
    CHECK(fails == 0);
    CHECK(store_run_end(s2, a, "done", NULL) == 0);
    CHECK_STR(q(s1, "SELECT count(*), sum(step), sum(value) FROM metrics WHERE run_id = 1"),
              "200|19900|9950.0\n");
    CHECK_STR(q(s2, "SELECT count(*), sum(length) FROM evals WHERE run_id = 2"), "100|4950\n");
    CHECK_STR(q(s1, "SELECT status FROM runs WHERE id = 1"), "done\n");
    store_close(s1);
    store_close(s2);
}

TEST(store_concurrent_processes) {
    char path[600];
    db_in_tmp(path, sizeof path, "results.db");
    Store *s;
    CHECK(store_open(&s, path, 0) == 0);
    if (!s) return;
    RunInfo ri = info_named("parent");
    int64_t id;
    CHECK(store_run_begin(s, &ri, &id) == 0);
    enum { NPROC = 3, NWRITES = 300 };
    pid_t pids[NPROC];
    fflush(NULL);
    for (int p = 0; p < NPROC; p++) {
        pids[p] = fork();
        if (pids[p] == 0) {
            Store *c;
            if (store_open(&c, path, 0)) _exit(2);
            char name[32];
            snprintf(name, sizeof name, "proc%d", p);
            for (int i = 0; i < NWRITES; i++)
                if (store_metric(c, id, i, name, i, 0)) {
                    fprintf(stderr, "  child %d: %s\n", p, ms_error());
                    _exit(1);
                }
            store_close(c);
            _exit(0);
        }
    }
    // the parent writes at the same time
    int fails = 0;
    for (int i = 0; i < NWRITES; i++) fails += store_heartbeat(s, id) != 0;
    CHECK(fails == 0);
    for (int p = 0; p < NPROC; p++) {
        int st = -1;
        if (pids[p] > 0) waitpid(pids[p], &st, 0);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    CHECK_STR(q(s, "SELECT name, count(*), sum(step) FROM metrics GROUP BY name ORDER BY name"),
              "proc0|300|44850\nproc1|300|44850\nproc2|300|44850\n");
    store_close(s);
}
