// store.c: results.db on SQLite 3. One Store = one connection. The schema lives in `migrations`
// below: migrations[i] takes a database from user_version i to i+1, and store_open applies the
// missing ones in one IMMEDIATE transaction (so two processes opening a fresh file at once do not
// both create the tables). To add a version: bump STORE_SCHEMA_VERSION in store.h and append a step.
#include "store.h"

#include <errno.h>
#include <math.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

// ---- schema -------------------------------------------------------------------------------------
static const char *const migrations[] = {
    // 0 -> 1: the first schema.
    "CREATE TABLE runs(\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  uid TEXT NOT NULL UNIQUE,\n"
    "  name TEXT NOT NULL,\n"
    "  script TEXT,\n"
    "  config_json TEXT,\n"
    "  config_hash TEXT,\n"
    "  status TEXT NOT NULL DEFAULT 'running'\n"
    "    CHECK (status IN ('running', 'done', 'failed', 'interrupted')),\n"
    "  error TEXT,\n"
    "  git_rev TEXT,\n"
    "  git_dirty INTEGER NOT NULL DEFAULT 0,\n"
    "  host TEXT,\n"
    "  device TEXT,\n"
    "  started_at REAL NOT NULL,\n"
    "  finished_at REAL,\n"
    "  heartbeat_at REAL\n"
    ");\n"
    "CREATE INDEX runs_name ON runs(name);\n"
    "CREATE TABLE params(\n"
    "  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,\n"
    "  key TEXT NOT NULL,\n"
    "  value TEXT\n"
    ");\n"
    "CREATE UNIQUE INDEX params_run_key ON params(run_id, key);\n"
    "CREATE INDEX params_key_value ON params(key, value);\n"
    "CREATE TABLE metrics(\n"
    "  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,\n"
    "  step INTEGER NOT NULL,\n"
    "  name TEXT NOT NULL,\n"
    "  value REAL,\n"
    "  wall_s REAL\n"
    ");\n"
    "CREATE INDEX metrics_run_name_step ON metrics(run_id, name, step);\n"
    "CREATE TABLE evals(\n"
    "  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,\n"
    "  task TEXT NOT NULL,\n"
    "  length INTEGER,\n"
    "  value REAL,\n"
    "  protocol TEXT,\n"
    "  n INTEGER\n"
    ");\n"
    "CREATE INDEX evals_run_task_length ON evals(run_id, task, length);\n"
    "CREATE TABLE artifacts(\n"
    "  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,\n"
    "  kind TEXT NOT NULL,\n"
    "  path TEXT NOT NULL\n"
    ");\n"
    "CREATE INDEX artifacts_run ON artifacts(run_id, kind);\n"
    // The last value of each metric of each run (largest step; among equal steps, the row written
    // last, e.g. after a resume re-logged a step).
    "CREATE VIEW last_metrics(run_id, name, step, value) AS\n"
    "  SELECT run_id, name, step, value FROM (\n"
    "    SELECT run_id, name, step, value, row_number() OVER (\n"
    "      PARTITION BY run_id, name ORDER BY step DESC, rowid DESC) AS k\n"
    "    FROM metrics)\n"
    "  WHERE k = 1;\n"
    "CREATE VIEW ppl(run_id, run_name, length, value, protocol, n) AS\n"
    "  SELECT e.run_id, r.name, e.length, e.value, e.protocol, e.n\n"
    "  FROM evals e JOIN runs r ON r.id = e.run_id\n"
    "  WHERE e.task = 'ppl';\n",
    // 1 -> 2: passkey retrieval trials (one row per trial), and run provenance beyond git/host.
    "CREATE TABLE passkey_trials(\n"
    "  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,\n"
    "  length INTEGER NOT NULL,\n"
    "  depth REAL NOT NULL,\n"
    "  seed INTEGER NOT NULL,\n"
    "  passkey INTEGER NOT NULL,\n"
    "  answer TEXT,\n"
    "  correct INTEGER NOT NULL\n"
    ");\n"
    "CREATE INDEX passkey_trials_run ON passkey_trials(run_id, length, depth);\n"
    "ALTER TABLE runs ADD COLUMN script_hash TEXT;\n"
    "ALTER TABLE runs ADD COLUMN provenance_json TEXT;\n"
    "ALTER TABLE runs ADD COLUMN peak_rss_mb REAL;\n",
    // 2 -> 3: views for the common pivots (docs/results-db.md). run_params: one row per run with
    // its key parameters as columns (one pass over params, grouped); ppl_by_length and
    // speed_by_length: evals joined with them, ready for WHERE/GROUP BY on any key parameter.
    "CREATE INDEX runs_config_hash ON runs(config_hash);\n"
    "CREATE VIEW run_params(run_id, name, status, config_hash, seed, params, model_dim,\n"
    "    model_layers, model_heads, positions_kind, attention_kind, train_seq, train_batch,\n"
    "    train_steps, train_lr) AS\n"
    "  SELECT r.id, r.name, r.status, r.config_hash, p.seed, p.params, p.model_dim, p.model_layers,\n"
    "    p.model_heads, p.positions_kind, p.attention_kind, p.train_seq, p.train_batch,\n"
    "    p.train_steps, p.train_lr\n"
    "  FROM runs r LEFT JOIN (SELECT run_id,\n"
    "      max(CASE key WHEN 'seed' THEN value END) AS seed,\n"
    "      max(CASE key WHEN 'params' THEN CAST(value AS INTEGER) END) AS params,\n"
    "      max(CASE key WHEN 'model.dim' THEN CAST(value AS INTEGER) END) AS model_dim,\n"
    "      max(CASE key WHEN 'model.layers' THEN CAST(value AS INTEGER) END) AS model_layers,\n"
    "      max(CASE key WHEN 'model.heads' THEN CAST(value AS INTEGER) END) AS model_heads,\n"
    "      max(CASE key WHEN 'positions.kind' THEN value END) AS positions_kind,\n"
    "      max(CASE key WHEN 'attention.kind' THEN value END) AS attention_kind,\n"
    "      max(CASE key WHEN 'train.seq' THEN CAST(value AS INTEGER) END) AS train_seq,\n"
    "      max(CASE key WHEN 'train.batch' THEN CAST(value AS INTEGER) END) AS train_batch,\n"
    "      max(CASE key WHEN 'train.steps' THEN CAST(value AS INTEGER) END) AS train_steps,\n"
    "      max(CASE key WHEN 'train.lr' THEN CAST(value AS REAL) END) AS train_lr\n"
    "    FROM params WHERE key IN ('seed', 'params', 'model.dim', 'model.layers', 'model.heads',\n"
    "      'positions.kind', 'attention.kind', 'train.seq', 'train.batch', 'train.steps',\n"
    "      'train.lr')\n"
    "    GROUP BY run_id) p ON p.run_id = r.id;\n"
    "CREATE VIEW ppl_by_length(run_id, run_name, status, length, ppl, protocol, n, positions_kind,\n"
    "    attention_kind, train_seq, model_dim, model_layers, train_steps, train_lr, seed) AS\n"
    "  SELECT e.run_id, p.name, p.status, e.length, e.value, e.protocol, e.n, p.positions_kind,\n"
    "    p.attention_kind, p.train_seq, p.model_dim, p.model_layers, p.train_steps, p.train_lr, p.seed\n"
    "  FROM evals e JOIN run_params p ON p.run_id = e.run_id WHERE e.task = 'ppl';\n"
    "CREATE VIEW speed_by_length(run_id, run_name, status, length, tokens_per_s, protocol, n,\n"
    "    positions_kind, attention_kind, model_dim, model_layers, seed) AS\n"
    "  SELECT e.run_id, p.name, p.status, e.length, e.value, e.protocol, e.n, p.positions_kind,\n"
    "    p.attention_kind, p.model_dim, p.model_layers, p.seed\n"
    "  FROM evals e JOIN run_params p ON p.run_id = e.run_id WHERE e.task = 'speed';\n",
};
#define N_MIGRATIONS ((int)(sizeof migrations / sizeof migrations[0]))
_Static_assert(sizeof migrations / sizeof migrations[0] == STORE_SCHEMA_VERSION,
               "one migration step per schema version");

struct Store {
    sqlite3 *db;
    char *path;
    int readonly;
    // cached statements for the writes that happen during training
    sqlite3_stmt *st_metric, *st_eval, *st_param, *st_heartbeat, *st_artifact, *st_passkey;
};

static int db_fail(const Store *s) { return ms_fail("%s: %s", s->path, sqlite3_errmsg(s->db)); }

static int exec_sql(Store *s, const char *sql) {
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        ms_fail("%s: %s", s->path, msg ? msg : sqlite3_errmsg(s->db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

// A single integer from a query such as "PRAGMA user_version".
static int query_int(Store *s, const char *sql, int64_t *out) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) return db_fail(s);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        return 0;
    }
    if (rc == SQLITE_DONE) ms_fail("%s: %s returned no row", s->path, sql);
    else db_fail(s);
    sqlite3_finalize(st);
    return -1;
}

static int check_version(Store *s, int64_t v) {
    if (v > STORE_SCHEMA_VERSION)
        return ms_fail("%s: schema version %lld is newer than this mslab (%d)", s->path,
                       (long long)v, STORE_SCHEMA_VERSION);
    if (v < 0) return ms_fail("%s: invalid schema version %lld", s->path, (long long)v);
    return 0;
}

// Version 0 is a new (empty) file; a version-0 file that has tables was not made by mslab.
static int check_foreign(Store *s) {
    int64_t ntables = 0;
    if (query_int(s, "SELECT count(*) FROM sqlite_master", &ntables)) return -1;
    if (ntables > 0)
        return ms_fail("%s: not an mslab results database (it has tables but no schema version)",
                       s->path);
    return 0;
}

static int migrate(Store *s) {
    int64_t v;
    if (query_int(s, "PRAGMA user_version", &v) || check_version(s, v)) return -1;
    if (v == STORE_SCHEMA_VERSION) return 0;
    if (exec_sql(s, "BEGIN IMMEDIATE")) return -1;
    // re-read under the write lock: another process may have migrated meanwhile
    if (query_int(s, "PRAGMA user_version", &v) || check_version(s, v) ||
        (v == 0 && check_foreign(s)))
        goto fail;
    for (int64_t i = v; i < N_MIGRATIONS; i++) {
        char *msg = NULL;
        if (sqlite3_exec(s->db, migrations[i], NULL, NULL, &msg) != SQLITE_OK) {
            ms_fail("%s: migrating the schema from version %lld to %lld: %s", s->path,
                    (long long)i, (long long)i + 1, msg ? msg : sqlite3_errmsg(s->db));
            sqlite3_free(msg);
            goto fail;
        }
    }
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", STORE_SCHEMA_VERSION);
    if (exec_sql(s, sql) || exec_sql(s, "COMMIT")) goto fail;
    return 0;
fail:
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

// The directory that will hold path (and its -wal/-shm files) must exist and be writable.
static int check_dir(const char *path) {
    char *dir = ms_strdup(path);
    char *slash = strrchr(dir, '/');
    if (!slash) strcpy(dir, ".");
    else if (slash == dir) dir[1] = 0;
    else *slash = 0;
    struct stat st;
    int rc = 0;
    if (stat(dir, &st) != 0)
        rc = ms_fail("%s: cannot create the database: directory %s: %s", path, dir,
                     strerror(errno));
    else if (!S_ISDIR(st.st_mode))
        rc = ms_fail("%s: cannot create the database: %s is not a directory", path, dir);
    else if (access(dir, W_OK | X_OK) != 0)
        rc = ms_fail("%s: cannot write the database: directory %s is not writable", path, dir);
    free(dir);
    return rc;
}

int store_open(Store **out, const char *path, int readonly) {
    *out = NULL;
    if (!path || !*path) return ms_fail("store_open: empty database path");
    struct stat st;
    if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) return ms_fail("%s: is a directory, not a database", path);
    } else if (errno == ENOENT) {
        if (readonly) return ms_fail("%s: no such file (run an experiment first)", path);
    } else {
        return ms_fail("%s: %s", path, strerror(errno));
    }
    if (!readonly && check_dir(path)) return -1;

    Store *s = ms_calloc(1, sizeof *s);
    s->path = ms_strdup(path);
    s->readonly = readonly;
    int flags = readonly ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    if (sqlite3_open_v2(path, &s->db, flags, NULL) != SQLITE_OK) {
        if (s->db) db_fail(s);
        else ms_fail("%s: cannot open (out of memory)", path);
        store_close(s);
        return -1;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, 10000);
    if (readonly) {
        int64_t v;
        if (exec_sql(s, "PRAGMA query_only = 1") || query_int(s, "PRAGMA user_version", &v) ||
            check_version(s, v))
            goto fail;
        if (v == 0) {
            if (check_foreign(s)) goto fail;
            ms_fail("%s: empty database (run an experiment first)", path);
            goto fail;
        }
        // older versions stay readable; they are migrated the next time a writer opens them
    } else {
        if (exec_sql(s, "PRAGMA journal_mode = WAL") || exec_sql(s, "PRAGMA synchronous = NORMAL") ||
            exec_sql(s, "PRAGMA foreign_keys = ON") || migrate(s))
            goto fail;
    }
    *out = s;
    return 0;
fail:
    store_close(s);
    return -1;
}

void store_close(Store *s) {
    if (!s) return;
    sqlite3_finalize(s->st_metric);
    sqlite3_finalize(s->st_eval);
    sqlite3_finalize(s->st_passkey);
    sqlite3_finalize(s->st_param);
    sqlite3_finalize(s->st_heartbeat);
    sqlite3_finalize(s->st_artifact);
    sqlite3_close(s->db);
    free(s->path);
    free(s);
}

// ---- writes -------------------------------------------------------------------------------------
static int writable(const Store *s) {
    if (s->readonly) return ms_fail("%s: opened read-only, cannot write", s->path);
    return 0;
}

static sqlite3_stmt *cached(Store *s, sqlite3_stmt **slot, const char *sql) {
    if (!*slot && sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, slot, NULL) != SQLITE_OK) {
        db_fail(s);
        *slot = NULL;
    }
    return *slot;
}

// Steps a bound write statement (one autocommit transaction) and leaves it reset and unbound.
static int step_write(Store *s, sqlite3_stmt *st) {
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE) db_fail(s);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

static void bind_text(sqlite3_stmt *st, int i, const char *v) {
    if (v) sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
    else sqlite3_bind_null(st, i);
}

int store_run_begin(Store *s, const RunInfo *info, int64_t *run_id) {
    if (writable(s)) return -1;
    if (!info || !info->name || !*info->name) return ms_fail("%s: a run needs a name", s->path);
    sqlite3_stmt *st;
    const char *sql =
        "INSERT INTO runs(uid, name, script, config_json, config_hash, status, git_rev, git_dirty,"
        " host, device, started_at, heartbeat_at, script_hash, provenance_json)"
        " VALUES (lower(hex(randomblob(16))), ?1, ?2, ?3, ?4, 'running', ?5, ?6, ?7, ?8, ?9, ?9,"
        " ?10, ?11)";
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) return db_fail(s);
    bind_text(st, 1, info->name);
    bind_text(st, 2, info->script);
    bind_text(st, 3, info->config_json);
    bind_text(st, 4, info->config_hash);
    bind_text(st, 5, info->git_rev);
    sqlite3_bind_int(st, 6, info->git_dirty ? 1 : 0);
    bind_text(st, 7, info->host);
    bind_text(st, 8, info->device);
    sqlite3_bind_double(st, 9, ms_wall());
    bind_text(st, 10, info->script_hash);
    bind_text(st, 11, info->provenance_json);
    int rc = step_write(s, st);
    if (rc == 0 && run_id) *run_id = sqlite3_last_insert_rowid(s->db);
    sqlite3_finalize(st);
    return rc;
}

int store_run_end(Store *s, int64_t run_id, const char *status, const char *error) {
    if (writable(s)) return -1;
    if (!status || (strcmp(status, "done") && strcmp(status, "failed") && strcmp(status, "interrupted")))
        return ms_fail("%s: run %lld: invalid final status '%s' (done, failed or interrupted)",
                       s->path, (long long)run_id, status ? status : "(null)");
    sqlite3_stmt *st;
    const char *sql = "UPDATE runs SET status = ?1, error = ?2, finished_at = ?3, heartbeat_at = ?3"
                      " WHERE id = ?4";
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) return db_fail(s);
    bind_text(st, 1, status);
    bind_text(st, 2, error);
    sqlite3_bind_double(st, 3, ms_wall());
    sqlite3_bind_int64(st, 4, run_id);
    int rc = step_write(s, st);
    sqlite3_finalize(st);
    if (rc == 0 && sqlite3_changes(s->db) == 0)
        return ms_fail("%s: no run with id %lld", s->path, (long long)run_id);
    return rc;
}

int store_heartbeat(Store *s, int64_t run_id) {
    if (writable(s)) return -1;
    sqlite3_stmt *st = cached(s, &s->st_heartbeat, "UPDATE runs SET heartbeat_at = ?1 WHERE id = ?2");
    if (!st) return -1;
    sqlite3_bind_double(st, 1, ms_wall());
    sqlite3_bind_int64(st, 2, run_id);
    if (step_write(s, st)) return -1;
    if (sqlite3_changes(s->db) == 0)
        return ms_fail("%s: no run with id %lld", s->path, (long long)run_id);
    return 0;
}

// One UPDATE/DELETE with an id bound as ?1 and an optional text ?2 / real ?3.
static int run_write(Store *s, const char *sql, int64_t run_id, const char *text, double real) {
    if (writable(s)) return -1;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) return db_fail(s);
    sqlite3_bind_int64(st, 1, run_id);
    if (sqlite3_bind_parameter_count(st) >= 2) bind_text(st, 2, text);
    if (sqlite3_bind_parameter_count(st) >= 3) sqlite3_bind_double(st, 3, real);
    int rc = step_write(s, st);
    sqlite3_finalize(st);
    return rc;
}

int store_run_resume(Store *s, int64_t run_id, const char *provenance_json) {
    if (run_write(s, "UPDATE runs SET status = 'running', error = NULL, finished_at = NULL,"
                     " heartbeat_at = ?3, provenance_json = coalesce(?2, provenance_json)"
                     " WHERE id = ?1", run_id, provenance_json, ms_wall()))
        return -1;
    if (sqlite3_changes(s->db) == 0) return ms_fail("%s: no run with id %lld", s->path, (long long)run_id);
    return 0;
}

int store_metric_delete(Store *s, int64_t run_id, int64_t step, const char *name) {
    if (writable(s)) return -1;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "DELETE FROM metrics WHERE run_id = ?1 AND step = ?2 AND name = ?3",
                           -1, &st, NULL) != SQLITE_OK)
        return db_fail(s);
    sqlite3_bind_int64(st, 1, run_id);
    sqlite3_bind_int64(st, 2, step);
    bind_text(st, 3, name);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : db_fail(s);
}

int store_run_truncate(Store *s, int64_t run_id, int64_t step) {
    if (writable(s)) return -1;
    if (exec_sql(s, "BEGIN IMMEDIATE")) return -1;
    sqlite3_stmt *st;
    const char *sqls[] = {"DELETE FROM metrics WHERE run_id = ?1 AND step > ?2",
                          "DELETE FROM evals WHERE run_id = ?1 AND ?2 >= 0",
                          "DELETE FROM passkey_trials WHERE run_id = ?1 AND ?2 >= 0"};
    for (int i = 0; i < 3; i++) {
        if (sqlite3_prepare_v2(s->db, sqls[i], -1, &st, NULL) != SQLITE_OK) goto fail;
        sqlite3_bind_int64(st, 1, run_id);
        sqlite3_bind_int64(st, 2, step);
        int rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE) goto fail;
    }
    return exec_sql(s, "COMMIT");
fail:
    db_fail(s);
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

int store_run_uid(Store *s, int64_t run_id, char uid[33]) {
    sqlite3_stmt *st;
    uid[0] = 0;
    if (sqlite3_prepare_v2(s->db, "SELECT uid FROM runs WHERE id = ?1", -1, &st, NULL) != SQLITE_OK)
        return db_fail(s);
    sqlite3_bind_int64(st, 1, run_id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) snprintf(uid, 33, "%s", (const char *)sqlite3_column_text(st, 0));
    else if (rc == SQLITE_DONE) ms_fail("%s: no run with id %lld", s->path, (long long)run_id);
    else db_fail(s);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : -1;
}

int store_run_usage(Store *s, int64_t run_id, double peak_rss_mb) {
    return run_write(s, "UPDATE runs SET peak_rss_mb = ?3 WHERE id = ?1", run_id, NULL,
                     peak_rss_mb);
}

int store_find_run(Store *s, const char *hash, StoreRunRef *out) {
    memset(out, 0, sizeof *out);
    sqlite3_stmt *st;
    const char *sql = "SELECT id, uid, status, heartbeat_at,"
                      " json_extract(provenance_json, '$.host'), json_extract(provenance_json, '$.pid')"
                      " FROM runs WHERE config_hash = ?1 ORDER BY id DESC LIMIT 1";
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) return db_fail(s);
    bind_text(st, 1, hash);
    int rc = sqlite3_step(st), found = 0;
    if (rc == SQLITE_ROW) {
        found = 1;
        out->id = sqlite3_column_int64(st, 0);
        const char *t;
        if ((t = (const char *)sqlite3_column_text(st, 1))) snprintf(out->uid, sizeof out->uid, "%s", t);
        if ((t = (const char *)sqlite3_column_text(st, 2))) snprintf(out->status, sizeof out->status, "%s", t);
        out->heartbeat_at = sqlite3_column_double(st, 3);
        if ((t = (const char *)sqlite3_column_text(st, 4))) snprintf(out->host, sizeof out->host, "%s", t);
        out->pid = sqlite3_column_int64(st, 5);
    } else if (rc != SQLITE_DONE) {
        found = db_fail(s);
    }
    sqlite3_finalize(st);
    return found;
}

int store_param(Store *s, int64_t run_id, const char *key, const char *value) {
    if (writable(s)) return -1;
    if (!key) return ms_fail("%s: store_param: NULL key", s->path);
    // one value per (run, key): setting a key again replaces its value
    sqlite3_stmt *st = cached(s, &s->st_param,
                              "INSERT INTO params(run_id, key, value) VALUES (?1, ?2, ?3)"
                              " ON CONFLICT(run_id, key) DO UPDATE SET value = excluded.value");
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, run_id);
    bind_text(st, 2, key);
    bind_text(st, 3, value);
    return step_write(s, st);
}

int store_metric(Store *s, int64_t run_id, int64_t step, const char *name, double value,
                 double wall_s) {
    if (writable(s)) return -1;
    if (!name) return ms_fail("%s: store_metric: NULL name", s->path);
    sqlite3_stmt *st = cached(s, &s->st_metric,
                              "INSERT INTO metrics(run_id, step, name, value, wall_s)"
                              " VALUES (?1, ?2, ?3, ?4, ?5)");
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, run_id);
    sqlite3_bind_int64(st, 2, step);
    bind_text(st, 3, name);
    sqlite3_bind_double(st, 4, value); // NaN is stored as NULL (SQLite has no NaN)
    sqlite3_bind_double(st, 5, wall_s);
    return step_write(s, st);
}

int store_eval(Store *s, int64_t run_id, const char *task, int64_t length, double value,
               const char *protocol, int64_t n) {
    if (writable(s)) return -1;
    if (!task) return ms_fail("%s: store_eval: NULL task", s->path);
    sqlite3_stmt *st = cached(s, &s->st_eval,
                              "INSERT INTO evals(run_id, task, length, value, protocol, n)"
                              " VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, run_id);
    bind_text(st, 2, task);
    sqlite3_bind_int64(st, 3, length);
    sqlite3_bind_double(st, 4, value);
    bind_text(st, 5, protocol);
    sqlite3_bind_int64(st, 6, n);
    return step_write(s, st);
}

int store_passkey_trial(Store *s, int64_t run_id, int64_t length, double depth, int64_t seed,
                        int64_t passkey, const char *answer, int correct) {
    if (writable(s)) return -1;
    sqlite3_stmt *st = cached(s, &s->st_passkey,
                              "INSERT INTO passkey_trials(run_id, length, depth, seed, passkey,"
                              " answer, correct) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, run_id);
    sqlite3_bind_int64(st, 2, length);
    sqlite3_bind_double(st, 3, depth);
    sqlite3_bind_int64(st, 4, seed);
    sqlite3_bind_int64(st, 5, passkey);
    bind_text(st, 6, answer);
    sqlite3_bind_int(st, 7, correct != 0);
    return step_write(s, st);
}

int store_artifact(Store *s, int64_t run_id, const char *kind, const char *path) {
    if (writable(s)) return -1;
    if (!kind || !path) return ms_fail("%s: store_artifact: NULL kind or path", s->path);
    sqlite3_stmt *st = cached(s, &s->st_artifact,
                              "INSERT INTO artifacts(run_id, kind, path) SELECT ?1, ?2, ?3"
                              " WHERE NOT EXISTS (SELECT 1 FROM artifacts"
                              "   WHERE run_id = ?1 AND kind = ?2 AND path = ?3)");
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, run_id);
    bind_text(st, 2, kind);
    bind_text(st, 3, path);
    return step_write(s, st);
}

// ---- reads --------------------------------------------------------------------------------------
typedef struct {
    sqlite3_stmt **st;
    int n;
} StmtList;

static void stmts_free(StmtList *l) {
    for (int i = 0; i < l->n; i++) sqlite3_finalize(l->st[i]);
    free(l->st);
    l->st = NULL;
    l->n = 0;
}

// sqlite3_stmt_readonly() calls some statements read-only that still change the connection or the
// files: ATTACH/DETACH (creates files), BEGIN/SAVEPOINT (would leave a writable Store inside an
// open transaction), REINDEX, and pragmas that set something. The authorizer refuses those while
// a query is prepared; pragmas with an argument are allowed only when they just inspect.
static int query_authorizer(void *ctx, int action, const char *a1, const char *a2, const char *db,
                            const char *trigger) {
    const char **denied = ctx;
    static const char *const inspect[] = {"table_info", "table_xinfo", "index_list", "index_info",
                                          "index_xinfo", "foreign_key_list", "foreign_key_check",
                                          "integrity_check", "quick_check", "table_list", NULL};
    switch (action) {
    case SQLITE_ATTACH: *denied = "ATTACH"; return SQLITE_DENY;
    case SQLITE_DETACH: *denied = "DETACH"; return SQLITE_DENY;
    case SQLITE_TRANSACTION: *denied = "transaction control (BEGIN/COMMIT/ROLLBACK)"; return SQLITE_DENY;
    case SQLITE_SAVEPOINT: *denied = "SAVEPOINT"; return SQLITE_DENY;
    case SQLITE_REINDEX: *denied = "REINDEX"; return SQLITE_DENY;
    case SQLITE_PRAGMA:
        if (a2) {
            for (int i = 0; inspect[i]; i++)
                if (a1 && sqlite3_stricmp(a1, inspect[i]) == 0) return SQLITE_OK;
            *denied = "a PRAGMA that sets a value";
            return SQLITE_DENY;
        }
        return SQLITE_OK;
    default: return SQLITE_OK;
    }
}

// Prepares every statement of sql up front and refuses the whole text when any statement would
// write, so nothing runs (and no row is delivered) before the refusal.
static int prepare_all(Store *s, const char *sql, StmtList *l) {
    l->st = NULL;
    l->n = 0;
    if (!sql) return ms_fail("%s: empty query", s->path);
    const char *tail = sql;
    while (*tail) {
        sqlite3_stmt *st = NULL;
        const char *next = NULL;
        const char *denied = NULL;
        sqlite3_set_authorizer(s->db, query_authorizer, &denied);
        int rc = sqlite3_prepare_v2(s->db, tail, -1, &st, &next);
        sqlite3_set_authorizer(s->db, NULL, NULL);
        if (rc != SQLITE_OK) {
            if (denied)
                ms_fail("%s: refusing %s in a query (queries are read-only)", s->path, denied);
            else
                db_fail(s);
            stmts_free(l);
            return -1;
        }
        if (!st) break; // only whitespace or comments left
        if (!sqlite3_stmt_readonly(st)) {
            const char *text = sqlite3_sql(st);
            ms_fail("%s: refusing a statement that would modify the database (queries are "
                    "read-only): %.200s", s->path, text ? text : "");
            sqlite3_finalize(st);
            stmts_free(l);
            return -1;
        }
        l->st = ms_realloc(l->st, (size_t)(l->n + 1) * sizeof *l->st);
        l->st[l->n++] = st;
        if (next == tail) break;
        tail = next;
    }
    if (l->n == 0) return ms_fail("%s: empty query", s->path);
    return 0;
}

int store_select(Store *s, const char *sql, StoreRowFn row, void *ctx) {
    StmtList l;
    if (prepare_all(s, sql, &l)) return -1;
    int result = 0;
    for (int i = 0; i < l.n && result == 0; i++) {
        sqlite3_stmt *st = l.st[i];
        int nc = sqlite3_column_count(st);
        const char **names = ms_calloc((size_t)nc + 1, sizeof *names);
        const char **vals = ms_calloc((size_t)nc + 1, sizeof *vals);
        for (int c = 0; c < nc; c++) names[c] = sqlite3_column_name(st, c);
        for (;;) {
            int rc = sqlite3_step(st);
            if (rc == SQLITE_DONE) break;
            if (rc != SQLITE_ROW) {
                result = db_fail(s);
                break;
            }
            for (int c = 0; c < nc; c++)
                vals[c] = sqlite3_column_type(st, c) == SQLITE_NULL
                              ? NULL
                              : (const char *)sqlite3_column_text(st, c);
            int r = row ? row(nc, names, vals, ctx) : 0;
            if (r < 0) result = -1;  // the callback's error (its ms_fail message) stands
            if (r > 0) result = 1;   // stopped early on purpose
            if (r) break;
        }
        free(names);
        free(vals);
    }
    stmts_free(&l);
    return result < 0 ? -1 : 0;
}

// ---- aligned text tables ------------------------------------------------------------------------
typedef struct {
    int ncols, nrows, cap;
    char **names;
    int *right;   // 1: right-aligned (numeric) column
    char **cells; // nrows * ncols, owned; NULL prints empty
} Table;

static void table_init(Table *t, int ncols) {
    memset(t, 0, sizeof *t);
    t->ncols = ncols;
    t->names = ms_calloc((size_t)ncols + 1, sizeof *t->names);
    t->right = ms_calloc((size_t)ncols + 1, sizeof *t->right);
}

static void table_free(Table *t) {
    for (int c = 0; c < t->ncols; c++) free(t->names[c]);
    for (long i = 0; i < (long)t->nrows * t->ncols; i++) free(t->cells[i]);
    free(t->names);
    free(t->right);
    free(t->cells);
}

static char **table_add_row(Table *t) {
    if (t->nrows == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 16;
        t->cells = ms_realloc(t->cells, (size_t)t->cap * (size_t)t->ncols * sizeof *t->cells);
    }
    char **row = t->cells + (size_t)t->nrows * (size_t)t->ncols;
    memset(row, 0, (size_t)t->ncols * sizeof *row);
    t->nrows++;
    return row;
}

// A copy of v fit for one table cell: control characters (newlines, tabs) become spaces.
static char *cell_text(const char *v) {
    char *d = ms_strdup(v);
    for (char *p = d; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = ' ';
    return d;
}

static char *cell_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *cell_printf(const char *fmt, ...) {
    char buf[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return ms_strdup(buf);
}

// Display width: UTF-8 code points (continuation bytes do not count).
static int text_width(const char *s) {
    int w = 0;
    for (; s && *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80) w++;
    return w;
}

static void put_padded(FILE *out, const char *s, int width, int right, int last) {
    int pad = width - text_width(s);
    if (right)
        for (int i = 0; i < pad; i++) fputc(' ', out);
    fputs(s ? s : "", out);
    if (!right && !last)
        for (int i = 0; i < pad; i++) fputc(' ', out);
}

// Columns are separated by two spaces; lines carry no trailing spaces.
static void table_print(const Table *t, FILE *out) {
    int *w = ms_calloc((size_t)t->ncols + 1, sizeof *w);
    for (int c = 0; c < t->ncols; c++) {
        w[c] = text_width(t->names[c]);
        for (int r = 0; r < t->nrows; r++) {
            int x = text_width(t->cells[(size_t)r * t->ncols + c]);
            if (x > w[c]) w[c] = x;
        }
    }
    // the last column's left-aligned text needs no padding; trim trailing blanks via `last`
    for (int c = 0; c < t->ncols; c++) {
        if (c) fputs("  ", out);
        put_padded(out, t->names[c], w[c], t->right[c], c == t->ncols - 1);
    }
    fputc('\n', out);
    for (int c = 0; c < t->ncols; c++) {
        if (c) fputs("  ", out);
        for (int i = 0; i < w[c]; i++) fputc('-', out);
    }
    fputc('\n', out);
    for (int r = 0; r < t->nrows; r++) {
        // trailing empty left-aligned cells would leave trailing blanks: find the last cell to print
        int end = t->ncols;
        while (end > 0) {
            const char *v = t->cells[(size_t)r * t->ncols + end - 1];
            if (v && *v) break;
            end--;
        }
        for (int c = 0; c < end; c++) {
            if (c) fputs("  ", out);
            put_padded(out, t->cells[(size_t)r * t->ncols + c], w[c], t->right[c], c == end - 1);
        }
        fputc('\n', out);
    }
    free(w);
}

int store_print_query(Store *s, const char *sql, FILE *final_out) {
    StmtList l;
    if (prepare_all(s, sql, &l)) return -1;
    // the tables go to a buffer first, so a statement failing midway prints nothing at all
    char *text = NULL;
    size_t text_len = 0;
    FILE *out = open_memstream(&text, &text_len);
    if (!out) {
        stmts_free(&l);
        return ms_fail("%s: open_memstream: %s", s->path, strerror(errno));
    }
    int rc = 0, printed = 0;
    for (int i = 0; i < l.n && rc == 0; i++) {
        sqlite3_stmt *st = l.st[i];
        int nc = sqlite3_column_count(st);
        Table t;
        table_init(&t, nc);
        int *numeric = ms_calloc((size_t)nc + 1, sizeof *numeric); // 1 numeric seen, -1 text seen
        for (int c = 0; c < nc; c++) t.names[c] = cell_text(sqlite3_column_name(st, c));
        for (;;) {
            int r = sqlite3_step(st);
            if (r == SQLITE_DONE) break;
            if (r != SQLITE_ROW) {
                rc = db_fail(s);
                break;
            }
            char **row = table_add_row(&t);
            for (int c = 0; c < nc; c++) {
                switch (sqlite3_column_type(st, c)) {
                case SQLITE_NULL: break;
                case SQLITE_INTEGER:
                    row[c] = cell_printf("%lld", (long long)sqlite3_column_int64(st, c));
                    if (!numeric[c]) numeric[c] = 1;
                    break;
                case SQLITE_FLOAT:
                    row[c] = cell_printf("%.6g", sqlite3_column_double(st, c));
                    if (!numeric[c]) numeric[c] = 1;
                    break;
                case SQLITE_BLOB:
                    row[c] = cell_printf("<blob %d bytes>", sqlite3_column_bytes(st, c));
                    numeric[c] = -1;
                    break;
                default:
                    row[c] = cell_text((const char *)sqlite3_column_text(st, c));
                    numeric[c] = -1;
                    break;
                }
            }
        }
        for (int c = 0; c < nc; c++) t.right[c] = numeric[c] == 1;
        if (rc == 0 && nc > 0) {
            if (printed++) fputc('\n', out);
            table_print(&t, out);
        }
        free(numeric);
        table_free(&t);
    }
    stmts_free(&l);
    fclose(out);
    if (rc == 0) {
        fwrite(text, 1, text_len, final_out);
        fflush(final_out);
    }
    free(text);
    return rc;
}

// "42s", "3m12s", "2h05m", "1d03h"
static char *format_duration(double sec) {
    if (!(sec >= 0)) sec = 0;
    long x = (long)(sec + 0.5);
    if (x < 60) return cell_printf("%lds", x);
    if (x < 3600) return cell_printf("%ldm%02lds", x / 60, x % 60);
    if (x < 86400) return cell_printf("%ldh%02ldm", x / 3600, (x % 3600) / 60);
    return cell_printf("%ldd%02ldh", x / 86400, (x % 86400) / 3600);
}

static char *format_local_time(double unix_s) {
    time_t t = (time_t)unix_s;
    struct tm tm;
    char buf[64];
    if (!localtime_r(&t, &tm) || !strftime(buf, sizeof buf, "%Y-%m-%d %H:%M", &tm)) return NULL;
    return ms_strdup(buf);
}

// The first `max` characters (UTF-8 code points) of v, with "..." when cut; control chars -> ' '.
static char *shorten(const char *v, int max) {
    char *d = cell_text(v);
    int n = 0;
    for (char *p = d; *p; p++) {
        if (((unsigned char)*p & 0xC0) != 0x80 && n++ == max) {
            size_t k = (size_t)(p - d);
            d = ms_realloc(d, k + 4);
            memcpy(d + k, "...", 4);
            break;
        }
    }
    return d;
}

int store_print_runs(Store *s, const char *where, FILE *out) {
    // the where text goes through prepare_all's read-only checks like any query
    char *sql = NULL;
    size_t sql_len = 0;
    FILE *q = open_memstream(&sql, &sql_len);
    if (!q) return ms_fail("%s: open_memstream: %s", s->path, strerror(errno));
    fprintf(q, "SELECT r.id, r.name, r.status, r.started_at, r.finished_at, r.heartbeat_at,"
               " (SELECT m.value FROM metrics m WHERE m.run_id = r.id AND m.name = 'train.loss'"
               "   ORDER BY m.step DESC, m.rowid DESC LIMIT 1),"
               " r.error FROM runs r WHERE (%s) ORDER BY r.id", where && *where ? where : "1");
    fclose(q);
    StmtList l;
    int prc = prepare_all(s, sql, &l);
    free(sql);
    if (prc) return -1;
    if (l.n != 1) {
        stmts_free(&l);
        return ms_fail("%s: --where must be one SQL condition", s->path);
    }
    sqlite3_stmt *st = l.st[0];
    free(l.st);
    static const char *const names[] = {"id", "name", "status", "started", "wall", "last loss", "error"};
    static const int right[] = {1, 0, 0, 0, 1, 1, 0};
    Table t;
    table_init(&t, 7);
    for (int c = 0; c < 7; c++) {
        t.names[c] = ms_strdup(names[c]);
        t.right[c] = right[c];
    }
    double now = ms_wall();
    int rc = 0;
    for (;;) {
        int r = sqlite3_step(st);
        if (r == SQLITE_DONE) break;
        if (r != SQLITE_ROW) {
            rc = db_fail(s);
            break;
        }
        char **row = table_add_row(&t);
        row[0] = cell_printf("%lld", (long long)sqlite3_column_int64(st, 0));
        const char *name = (const char *)sqlite3_column_text(st, 1);
        const char *status = (const char *)sqlite3_column_text(st, 2);
        row[1] = cell_text(name ? name : "");
        row[2] = cell_text(status ? status : "");
        int has_start = sqlite3_column_type(st, 3) != SQLITE_NULL;
        double started = sqlite3_column_double(st, 3);
        if (has_start) row[3] = format_local_time(started);
        // wall: until finished; a run without an end: until its last heartbeat, or now if running
        double end = NAN;
        if (sqlite3_column_type(st, 4) != SQLITE_NULL) end = sqlite3_column_double(st, 4);
        else if (sqlite3_column_type(st, 5) != SQLITE_NULL) end = sqlite3_column_double(st, 5);
        if (status && strcmp(status, "running") == 0 && sqlite3_column_type(st, 4) == SQLITE_NULL)
            end = now;
        if (has_start && !isnan(end)) row[4] = format_duration(end - started);
        if (sqlite3_column_type(st, 6) != SQLITE_NULL)
            row[5] = cell_printf("%.6g", sqlite3_column_double(st, 6));
        if (sqlite3_column_type(st, 7) != SQLITE_NULL)
            row[6] = shorten((const char *)sqlite3_column_text(st, 7), 60);
    }
    sqlite3_finalize(st);
    if (rc == 0) table_print(&t, out);
    table_free(&t);
    fflush(out);
    return rc;
}

// ---- CSV and JSON -------------------------------------------------------------------------------
static void csv_field(FILE *out, const char *v) {
    if (!v) return;
    if (!strpbrk(v, ",\"\r\n")) {
        fputs(v, out);
        return;
    }
    fputc('"', out);
    for (; *v; v++) {
        if (*v == '"') fputc('"', out);
        fputc(*v, out);
    }
    fputc('"', out);
}

static void json_string(FILE *out, const char *v) {
    fputc('"', out);
    for (; *v; v++) {
        unsigned char c = (unsigned char)*v;
        if (c == '"' || c == '\\') fprintf(out, "\\%c", c);
        else if (c == '\n') fputs("\\n", out);
        else if (c < 0x20 || c == 0x7f) fprintf(out, "\\u%04x", c);
        else fputc(c, out);
    }
    fputc('"', out);
}

// Both formats: rows buffered, printed only when every statement succeeded (as the table).
static int print_rows(Store *s, const char *sql, FILE *final_out, int json) {
    StmtList l;
    if (prepare_all(s, sql, &l)) return -1;
    char *text = NULL;
    size_t text_len = 0;
    FILE *out = open_memstream(&text, &text_len);
    if (!out) {
        stmts_free(&l);
        return ms_fail("%s: open_memstream: %s", s->path, strerror(errno));
    }
    int rc = 0;
    for (int i = 0; i < l.n && rc == 0; i++) {
        sqlite3_stmt *st = l.st[i];
        int nc = sqlite3_column_count(st), nrows = 0;
        if (nc == 0) continue;
        if (!json) {
            if (i) fputc('\n', out);
            for (int c = 0; c < nc; c++) {
                if (c) fputc(',', out);
                csv_field(out, sqlite3_column_name(st, c));
            }
            fputs("\r\n", out);
        } else {
            fputs("[", out);
        }
        for (;;) {
            int r = sqlite3_step(st);
            if (r == SQLITE_DONE) break;
            if (r != SQLITE_ROW) {
                rc = db_fail(s);
                break;
            }
            if (json) fputs(nrows ? ",\n {" : "\n {", out);
            for (int c = 0; c < nc; c++) {
                int type = sqlite3_column_type(st, c);
                char num[64];
                const char *v = NULL;
                if (type == SQLITE_INTEGER) snprintf(num, sizeof num, "%lld", (long long)sqlite3_column_int64(st, c)), v = num;
                else if (type == SQLITE_FLOAT) {
                    double d = sqlite3_column_double(st, c);
                    if (isfinite(d)) snprintf(num, sizeof num, "%.17g", d), v = num;
                    else type = SQLITE_NULL;
                } else if (type != SQLITE_NULL) v = (const char *)sqlite3_column_text(st, c);
                if (!json) {
                    if (c) fputc(',', out);
                    csv_field(out, v);
                    continue;
                }
                if (c) fputs(", ", out);
                json_string(out, sqlite3_column_name(st, c));
                fputs(": ", out);
                if (type == SQLITE_NULL) fputs("null", out);
                else if (type == SQLITE_INTEGER || type == SQLITE_FLOAT) fputs(v, out);
                else json_string(out, v ? v : "");
            }
            fputs(json ? "}" : "\r\n", out);
            nrows++;
        }
        if (json) fputs(nrows ? "\n]\n" : "]\n", out);
    }
    stmts_free(&l);
    fclose(out);
    if (rc == 0) {
        fwrite(text, 1, text_len, final_out);
        fflush(final_out);
    }
    free(text);
    return rc;
}

int store_print_query_csv(Store *s, const char *sql, FILE *out) { return print_rows(s, sql, out, 0); }
int store_print_query_json(Store *s, const char *sql, FILE *out) { return print_rows(s, sql, out, 1); }

// ---- show and compare ---------------------------------------------------------------------------
int64_t store_resolve_run(Store *s, const char *run) {
    if (!run || !*run) return ms_fail("%s: empty run reference", s->path);
    sqlite3_stmt *st;
    const char *sql = "SELECT id FROM runs WHERE CAST(id AS TEXT) = ?1"
                      " OR (length(?1) >= 6 AND uid LIKE lower(?1) || '%') OR name = ?1"
                      " ORDER BY CAST(id AS TEXT) = ?1 DESC, id DESC LIMIT 1";
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) return db_fail(s);
    bind_text(st, 1, run);
    int64_t id = -1;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) id = sqlite3_column_int64(st, 0);
    else if (rc == SQLITE_DONE) ms_fail("%s: no run \"%s\" (an id, a uid or a name)", s->path, run);
    else db_fail(s);
    sqlite3_finalize(st);
    return id;
}

// One printed section: a title line, then the query's table (or "(none)").
static int section(Store *s, FILE *out, const char *title, const char *sql) {
    fprintf(out, "\n%s\n", title);
    char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    if (!m) return ms_fail("open_memstream: %s", strerror(errno));
    int rc = store_print_query(s, sql, m);
    fclose(m);
    // a table with no rows is two lines (names and rule): say so instead
    int lines = 0;
    for (size_t i = 0; i < len; i++) lines += text[i] == '\n';
    if (rc == 0) fputs(lines > 2 ? text : "(none)\n", out);
    free(text);
    return rc;
}

int store_print_show(Store *s, const char *run, FILE *out) {
    int64_t id = store_resolve_run(s, run);
    if (id < 0) return -1;
    char sql[1024];
    long long i = (long long)id;
    snprintf(sql, sizeof sql,
             "SELECT id, uid, name, status, error, config_hash, script, script_hash, git_rev, git_dirty,"
             " host, device, datetime(started_at, 'unixepoch', 'localtime') AS started,"
             " datetime(finished_at, 'unixepoch', 'localtime') AS finished,"
             " round(coalesce(finished_at, heartbeat_at) - started_at, 1) AS wall_s, peak_rss_mb,"
             " provenance_json, config_json FROM runs WHERE id = %lld", i);
    // the row, one "key: value" line per column
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) return db_fail(s);
    if (sqlite3_step(st) == SQLITE_ROW)
        for (int c = 0; c < sqlite3_column_count(st); c++) {
            const char *v = (const char *)sqlite3_column_text(st, c);
            fprintf(out, "%-16s %s\n", sqlite3_column_name(st, c), v ? v : "");
        }
    sqlite3_finalize(st);
    snprintf(sql, sizeof sql, "SELECT key, value FROM params WHERE run_id = %lld ORDER BY key", i);
    if (section(s, out, "params", sql)) return -1;
    snprintf(sql, sizeof sql,
             "SELECT m.name, m.step, m.value FROM metrics m WHERE m.run_id = %lld AND m.rowid ="
             " (SELECT rowid FROM metrics WHERE run_id = m.run_id AND name = m.name"
             "  ORDER BY step DESC, rowid DESC LIMIT 1) ORDER BY m.name", i);
    if (section(s, out, "last metrics", sql)) return -1;
    snprintf(sql, sizeof sql, "SELECT task, length, value, protocol, n FROM evals WHERE run_id = %lld"
             " ORDER BY task, protocol, length", i);
    if (section(s, out, "evals", sql)) return -1;
    snprintf(sql, sizeof sql, "SELECT kind, path FROM artifacts WHERE run_id = %lld ORDER BY rowid", i);
    if (section(s, out, "artifacts", sql)) return -1;
    fflush(out);
    return 0;
}

int store_print_compare(Store *s, const char *a, const char *b, FILE *out) {
    int64_t x = store_resolve_run(s, a), y = store_resolve_run(s, b);
    if (x < 0 || y < 0) return -1;
    char sql[2048];
    long long A = (long long)x, B = (long long)y;
    snprintf(sql, sizeof sql,
             "SELECT id, name, status, config_hash FROM runs WHERE id IN (%lld, %lld)"
             " ORDER BY id = %lld DESC", A, B, A);
    if (section(s, out, "runs", sql)) return -1;
    snprintf(sql, sizeof sql,
             "WITH k(key) AS (SELECT key FROM params WHERE run_id IN (%lld, %lld))"
             " SELECT DISTINCT k.key, pa.value AS \"%lld\", pb.value AS \"%lld\" FROM k"
             " LEFT JOIN params pa ON pa.run_id = %lld AND pa.key = k.key"
             " LEFT JOIN params pb ON pb.run_id = %lld AND pb.key = k.key"
             " WHERE pa.value IS NOT pb.value ORDER BY k.key", A, B, A, B, A, B);
    if (section(s, out, "config differences (params)", sql)) return -1;
    snprintf(sql, sizeof sql,
             "WITH l AS (SELECT m.run_id, m.name, m.value FROM metrics m WHERE m.run_id IN (%lld, %lld)"
             "  AND m.rowid = (SELECT rowid FROM metrics WHERE run_id = m.run_id AND name = m.name"
             "  ORDER BY step DESC, rowid DESC LIMIT 1)),"
             " n(name) AS (SELECT DISTINCT name FROM l)"
             " SELECT n.name AS metric, la.value AS \"%lld\", lb.value AS \"%lld\","
             " lb.value - la.value AS diff FROM n"
             " LEFT JOIN l la ON la.run_id = %lld AND la.name = n.name"
             " LEFT JOIN l lb ON lb.run_id = %lld AND lb.name = n.name ORDER BY n.name",
             A, B, A, B, A, B);
    if (section(s, out, "last metrics", sql)) return -1;
    snprintf(sql, sizeof sql,
             "WITH e AS (SELECT run_id, task, length, coalesce(protocol, '') AS protocol, value, rowid"
             "  AS r FROM evals WHERE run_id IN (%lld, %lld)),"
             " k AS (SELECT DISTINCT task, length, protocol FROM e)"
             " SELECT k.task, k.length, k.protocol,"
             " (SELECT value FROM e WHERE run_id = %lld AND task = k.task AND length IS k.length"
             "  AND protocol = k.protocol ORDER BY r DESC LIMIT 1) AS \"%lld\","
             " (SELECT value FROM e WHERE run_id = %lld AND task = k.task AND length IS k.length"
             "  AND protocol = k.protocol ORDER BY r DESC LIMIT 1) AS \"%lld\""
             " FROM k ORDER BY k.task, k.protocol, k.length", A, B, A, A, B, B);
    if (section(s, out, "evals", sql)) return -1;
    fflush(out);
    return 0;
}
