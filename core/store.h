// store.h: results.db, the SQLite results store. Schema (versioned through PRAGMA user_version):
//   runs(id, uid, name, script, config_json, config_hash, status, error, git_rev, git_dirty,
//        host, device, started_at, finished_at, heartbeat_at,
//        script_hash, provenance_json, peak_rss_mb)                      (the last three: v2)
//   params(run_id, key, value)                       flattened config, for WHERE clauses
//   metrics(run_id, step, name, value, wall_s)       training curves
//   evals(run_id, task, length, value, protocol, n)  ppl vs length, ...
//   artifacts(run_id, kind, path)                    checkpoints, plots
//   passkey_trials(run_id, length, depth, seed, passkey, answer, correct)       (v2)
// Views: last_metrics(run_id, name, step, value) (the last value of each metric of each run) and
// ppl(run_id, run_name, length, value, protocol, n) (evals with task 'ppl', with the run's name).
// v3: run_params (one row per run, key parameters as columns), ppl_by_length and speed_by_length
// (evals task 'ppl' / 'speed' with those columns); docs/results-db.md.
// runs.uid: 32 random hex digits; times are unix seconds (REAL). params keeps one value per
// (run_id, key): store_param on an existing key replaces it. A NaN metric/eval value is stored
// as NULL (SQLite has no NaN).
// WAL mode and a busy timeout so several processes can write one file; every write is one short
// transaction. Status values: 'running', 'done', 'failed', 'interrupted'.
#ifndef MSLAB_STORE_H
#define MSLAB_STORE_H

#include <stdint.h>
#include <stdio.h>

#define STORE_SCHEMA_VERSION 3

typedef struct Store Store;

typedef struct {
    const char *name;
    const char *script;      // path of the Lua script that defined the run
    const char *config_json; // canonical JSON of the whole config
    const char *config_hash; // hex
    const char *git_rev;     // may be NULL
    int git_dirty;
    const char *host;
    const char *device;
    const char *script_hash;     // FNV-1a 64 of the script's bytes (hex), may be NULL
    const char *provenance_json; // core/provenance.h, may be NULL
} RunInfo;

// The newest run with a config hash, as the sweep logic needs it (store_find_run).
typedef struct {
    int64_t id;
    char uid[33];
    char status[16];
    double heartbeat_at;  // unix seconds (0 when NULL)
    char host[256];       // provenance host ("" when unknown)
    int64_t pid;          // provenance pid (0 when unknown)
} StoreRunRef;

// Opens (creating and migrating when writable) the database. readonly=1 opens with
// SQLITE_OPEN_READONLY: any statement that would write is refused. Errors: -1 + ms_error().
int store_open(Store **out, const char *path, int readonly);
void store_close(Store *s);

// Run lifecycle. run_begin inserts the row with status 'running' before any training happens.
int store_run_begin(Store *s, const RunInfo *info, int64_t *run_id);
int store_run_end(Store *s, int64_t run_id, const char *status, const char *error);
int store_heartbeat(Store *s, int64_t run_id);
// Resuming: the row becomes 'running' again (error and finished_at cleared, provenance replaced
// when given); then store_run_truncate drops what the dead process logged after the checkpoint's
// step (metrics with step > step, all evals and passkey trials: those come after training), in
// one transaction.
int store_run_resume(Store *s, int64_t run_id, const char *provenance_json);
int store_run_truncate(Store *s, int64_t run_id, int64_t step);
// Deletes the metric `name` of run_id at `step` (a value about to be written again).
int store_metric_delete(Store *s, int64_t run_id, int64_t step, const char *name);
// runs.uid of a run (32 hex digits): names its checkpoint file, unique across databases.
int store_run_uid(Store *s, int64_t run_id, char uid[33]);
// runs.peak_rss_mb.
int store_run_usage(Store *s, int64_t run_id, double peak_rss_mb);
// The newest run (largest id) whose config_hash is hash: 1 found (into *out), 0 none, -1 error.
int store_find_run(Store *s, const char *hash, StoreRunRef *out);
int store_param(Store *s, int64_t run_id, const char *key, const char *value);
int store_metric(Store *s, int64_t run_id, int64_t step, const char *name, double value,
                 double wall_s);
int store_eval(Store *s, int64_t run_id, const char *task, int64_t length, double value,
               const char *protocol, int64_t n);
// One row per (run, kind, path): a checkpoint rewritten in place is recorded once.
int store_artifact(Store *s, int64_t run_id, const char *kind, const char *path);
// One passkey retrieval trial (schema 2): depth in [0, 1], answer = the generated text.
int store_passkey_trial(Store *s, int64_t run_id, int64_t length, double depth, int64_t seed,
                        int64_t passkey, const char *answer, int correct);

// Generic read: calls row(ncols, names, values, ctx) for each result row (values may be NULL for
// SQL NULL). A non-zero return from row stops the query. Refuses non-read-only statements.
// sql may hold several statements separated by ';': all are prepared first and the whole text is
// refused if any would write (or is ATTACH/DETACH, BEGIN/COMMIT/SAVEPOINT, REINDEX, or a PRAGMA
// that sets something); then they run in order, each one's rows passed to row (names may differ
// between statements). row may be NULL. Returns 0 also when row stopped the query with a positive
// value; a negative value from row stops it and returns -1 with row's own ms_fail message.
typedef int (*StoreRowFn)(int ncols, const char *const *names, const char *const *values, void *ctx);
int store_select(Store *s, const char *sql, StoreRowFn row, void *ctx);

// `mslab query`: prints the result as an aligned text table (column names, a rule, rows; columns
// two spaces apart; numeric columns right-aligned, REAL as %.6g, NULL empty). Several statements
// print several tables separated by a blank line. Nothing is printed when a statement fails.
int store_print_query(Store *s, const char *sql, FILE *out);
// `mslab runs`: id, name, status, started, wall time, last loss, error (shortened).
// started: local time YYYY-MM-DD HH:MM; wall: finished_at - started_at, or now - started_at while
// 'running' ("42s", "3m12s", "2h05m", "1d03h"); last loss: the train.loss of the largest step;
// error: its first 60 characters, "..." when longer.
// where: an SQL condition over runs aliased r (NULL: all runs), e.g. "r.status = 'failed'".
int store_print_runs(Store *s, const char *where, FILE *out);
// `mslab query --csv / --json`: every statement's rows as CSV (header line, RFC 4180 quoting) or
// as JSON (an array of objects per statement; numbers as numbers, NULL as null).
int store_print_query_csv(Store *s, const char *sql, FILE *out);
int store_print_query_json(Store *s, const char *sql, FILE *out);
// RUN: a run id, a uid (or its first 6+ hex digits), or a name (the newest run of that name).
// Returns the id, or -1 with ms_error() when nothing matches.
int64_t store_resolve_run(Store *s, const char *run);
// `mslab show RUN`: the row (provenance included), config JSON, params, the last value of each
// metric, evals and artifacts.
int store_print_show(Store *s, const char *run, FILE *out);
// `mslab compare A B`: the params that differ, then the last metrics and evals side by side.
int store_print_compare(Store *s, const char *a, const char *b, FILE *out);

#endif
