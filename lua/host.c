// host.c: the embedded Lua state and the `mslab` module (mslab.corpus, mslab.run).
#include "host.h"

#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../core/common.h"
#include "../core/data.h"
#include "../core/progress.h"
#include "../core/provenance.h"
#include "../core/run.h"
#include "../core/store.h"
#include "lconfig.h"
#include "lsweep.h"
#include "ltensor.h"
#include "lpos.h"

// Registry keys for the host's state.
static const char *const STORE_KEY = "mslab.store";
static const char *const SCRIPT_KEY = "mslab.script";

static Store *host_store(lua_State *L) {
    lua_getfield(L, LUA_REGISTRYINDEX, STORE_KEY);
    Store *s = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return s;
}

// ---- mslab.corpus{...} ------------------------------------------------------------------------

typedef struct {
    Corpus corpus;
    char desc[512];
} CorpusBox;

static int corpus_gc(lua_State *L) {
    Corpus **c = luaL_checkudata(L, 1, "mslab.corpus");
    if (*c) {
        corpus_close(*c);
        free(*c);
        *c = NULL;
    }
    return 0;
}

static int corpus_index(lua_State *L) {
    Corpus **cp = luaL_checkudata(L, 1, "mslab.corpus");
    const char *k = luaL_checkstring(L, 2);
    CorpusBox *box = (CorpusBox *)*cp;
    const Corpus *c = &box->corpus;
    if (!strcmp(k, "train_tokens")) lua_pushinteger(L, (lua_Integer)c->n_train);
    else if (!strcmp(k, "eval_tokens")) lua_pushinteger(L, (lua_Integer)c->n_eval);
    else if (!strcmp(k, "vocab")) lua_pushinteger(L, c->vocab);
    else if (!strcmp(k, "documents")) lua_pushinteger(L, c->n_docs);
    else if (!strcmp(k, "eval_documents")) lua_pushinteger(L, c->n_eval_docs);
    else if (!strcmp(k, "bytes")) lua_pushinteger(L, (lua_Integer)c->bytes);
    else if (!strcmp(k, "hash")) {
        char hex[17];
        ms_hex64(c->hash, hex);
        lua_pushstring(L, hex);
    } else if (!strcmp(k, "description")) lua_pushstring(L, box->desc);
    else lua_pushnil(L);
    return 1;
}

static int corpus_tostring(lua_State *L) {
    Corpus **cp = luaL_checkudata(L, 1, "mslab.corpus");
    CorpusBox *box = (CorpusBox *)*cp;
    lua_pushfstring(L, "corpus(%s: %d documents, %I train / %I eval tokens)", box->desc,
                    box->corpus.n_docs, (lua_Integer)box->corpus.n_train,
                    (lua_Integer)box->corpus.n_eval);
    return 1;
}

static int l_corpus(lua_State *L) {
    CorpusSpec spec;
    const char **paths;
    lconfig_read_corpus(L, 1, &spec, &paths);
    Corpus **ud = lua_newuserdatauv(L, sizeof *ud, 0);
    *ud = NULL;
    luaL_setmetatable(L, "mslab.corpus");
    CorpusBox *box = ms_calloc(1, sizeof *box);
    double t0 = ms_now();
    int rc = corpus_open(&box->corpus, &spec);
    if (rc) {
        free(paths);
        free(box);
        lconfig_error(L, "", "%s", ms_error());
    }
    char hex[17];
    ms_hex64(box->corpus.hash, hex);
    snprintf(box->desc, sizeof box->desc, "%s%s tokenizer=%s eval=%g hash=%s", paths[0],
             spec.n_paths > 1 ? " (+more)" : "", spec.tokenizer, spec.eval_frac, hex);
    free(paths);
    *ud = (Corpus *)box; // Corpus is the box's first member
    fprintf(stderr, "corpus: %d documents, %zu train / %zu eval tokens (%.1fs)\n",
            box->corpus.n_docs, box->corpus.n_train, box->corpus.n_eval, ms_now() - t0);
    return 1;
}

// ---- mslab.run{...} ---------------------------------------------------------------------------
// What a run call does, decided from the newest row with the same config hash (docs/sweeps.md):
// a new row, skip (done; failed without --retry-failed; alive elsewhere), or resume.
enum { ACT_NEW, ACT_SKIP, ACT_RESUME, ACT_INVALID };

typedef struct {
    char *name, *hash, *note; // note: why (shown by --dry-run and the summary)
    int action;
} PlanEntry;

// The host's state for one script execution (one process runs one script at a time).
static struct {
    HostOptions o;
    int mode;                // HOST_RUN, HOST_PLAN, HOST_ONLY, HOST_COLLECT
    char script_hash[17];
    PlanEntry *plan;
    int n_plan;
    int sweep_i, sweep_n;    // inside mslab.sweep: run i of n
    int store_failed;        // the database refused a write: a sweep stops instead of going on
    int only_ran;            // HOST_ONLY: the wanted run was executed
} H;

enum { HOST_RUN, HOST_PLAN, HOST_ONLY, HOST_COLLECT };

// A 'running' row is dead when its process is gone (same host) or its heartbeat is older than
// stale_s (another host, where the pid means nothing).
static int running_is_dead(const StoreRunRef *r) {
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    if (r->pid > 0 && r->host[0] && !strcmp(r->host, host))
        return !(kill((pid_t)r->pid, 0) == 0 || errno == EPERM);
    return ms_wall() - r->heartbeat_at > H.o.stale_s;
}

static int decide(Store *s, const char *hash, int64_t *resume_id, char *note, size_t n) {
    StoreRunRef r;
    *resume_id = 0;
    int found = store_find_run(s, hash, &r);
    if (found < 0) return -1;
    if (!found) return snprintf(note, n, "new"), ACT_NEW;
    if (H.o.force) return snprintf(note, n, "--force (run %lld was %s)", (long long)r.id, r.status), ACT_NEW;
    if (!strcmp(r.status, "done")) return snprintf(note, n, "done as run %lld", (long long)r.id), ACT_SKIP;
    if (!strcmp(r.status, "failed")) {
        if (H.o.retry_failed)
            return snprintf(note, n, "--retry-failed (run %lld failed)", (long long)r.id), ACT_NEW;
        return snprintf(note, n, "failed as run %lld (--retry-failed reruns)", (long long)r.id), ACT_SKIP;
    }
    if (!strcmp(r.status, "running") && !running_is_dead(&r))
        return snprintf(note, n, "running as run %lld (pid %lld on %s)", (long long)r.id,
                        (long long)r.pid, r.host), ACT_SKIP;
    *resume_id = r.id;
    return snprintf(note, n, "resume run %lld (%s)", (long long)r.id, r.status), ACT_RESUME;
}

static void plan_add(const char *name, const char *hash, int action, const char *note) {
    H.plan = ms_realloc(H.plan, sizeof *H.plan * (size_t)(H.n_plan + 1));
    H.plan[H.n_plan++] = (PlanEntry){ms_strdup(name), ms_strdup(hash), ms_strdup(note), action};
}

static int plan_has(const char *hash) {
    for (int i = 0; i < H.n_plan; i++)
        if (!strcmp(H.plan[i].hash, hash)) return 1;
    return 0;
}

static void plan_free(void) {
    for (int i = 0; i < H.n_plan; i++) free(H.plan[i].name), free(H.plan[i].hash), free(H.plan[i].note);
    free(H.plan);
    H.plan = NULL;
    H.n_plan = 0;
}

// ---- results read back from the store (skipped runs) -------------------------------------------
static int cb_double(int n, const char *const *names, const char *const *v, void *ctx) {
    (void)names;
    double *d = ctx;
    if (n > 0 && v[0]) d[0] = atof(v[0]), d[1] = 1;
    if (n > 1 && v[1]) d[2] = atof(v[1]);
    return 1;
}

static int cb_text(int n, const char *const *names, const char *const *v, void *ctx) {
    (void)names;
    char **t = ctx;
    for (int i = 0; i < n && i < 4; i++) t[i] = v[i] ? ms_strdup(v[i]) : NULL;
    return 1;
}

static int cb_ppl(int n, const char *const *names, const char *const *v, void *ctx) {
    (void)names;
    lua_State *L = ctx;
    if (n >= 2 && v[0] && v[1]) lua_pushnumber(L, atof(v[1])), lua_seti(L, -2, atoll(v[0]));
    return 0;
}

// The result table of run id as stored (same fields as a run executed now, plus skipped = true).
static void push_stored(lua_State *L, Store *s, int64_t id, const char *note) {
    char sql[256];
    char *t[4] = {0};
    snprintf(sql, sizeof sql, "SELECT name, status, error, config_hash FROM runs WHERE id = %lld",
             (long long)id);
    store_select(s, sql, cb_text, t);
    lua_createtable(L, 0, 12);
    lua_pushinteger(L, id), lua_setfield(L, -2, "id");
    lua_pushstring(L, t[0]), lua_setfield(L, -2, "name");
    lua_pushstring(L, t[1]), lua_setfield(L, -2, "status");
    if (t[2]) lua_pushstring(L, t[2]), lua_setfield(L, -2, "error");
    lua_pushstring(L, t[3]), lua_setfield(L, -2, "config_hash");
    lua_pushboolean(L, 1), lua_setfield(L, -2, "skipped");
    lua_pushstring(L, note), lua_setfield(L, -2, "note");
    int done = t[1] && !strcmp(t[1], "done");
    free(t[0]), free(t[1]), free(t[2]), free(t[3]);
    static const char *const keys[][2] = {{"train.loss", "train_loss"}, {"eval.loss", "eval_loss"},
                                          {"train.tokens_per_s", "tokens_per_s"}};
    for (int k = 0; k < 3; k++) {
        double d[3] = {0, 0, 0};
        snprintf(sql, sizeof sql, "SELECT value, step FROM metrics WHERE run_id = %lld AND name = '%s'"
                 " ORDER BY step DESC, rowid DESC LIMIT 1", (long long)id, keys[k][0]);
        store_select(s, sql, cb_double, d);
        if (d[1] && (k != 1 || done)) lua_pushnumber(L, d[0]), lua_setfield(L, -2, keys[k][1]);
        if (k == 0) lua_pushinteger(L, (lua_Integer)d[2]), lua_setfield(L, -2, "steps");
    }
    lua_newtable(L);
    snprintf(sql, sizeof sql, "SELECT length, value FROM evals WHERE run_id = %lld AND task = 'ppl'"
             " ORDER BY rowid", (long long)id);
    store_select(s, sql, cb_ppl, L);
    lua_setfield(L, -2, "ppl");
}

// A run that was not executed in this pass (plan mode, another job's run).
static void push_placeholder(lua_State *L, const char *name, const char *hash, const char *status,
                             const char *note) {
    lua_createtable(L, 0, 6);
    lua_pushstring(L, name), lua_setfield(L, -2, "name");
    lua_pushstring(L, status), lua_setfield(L, -2, "status");
    lua_pushstring(L, hash), lua_setfield(L, -2, "config_hash");
    lua_pushstring(L, note), lua_setfield(L, -2, "note");
    lua_newtable(L), lua_setfield(L, -2, "ppl");
}

// The config hash: FNV-1a 64 of the canonical JSON with the name left empty, so renaming a run
// does not make it a different run (docs/sweeps.md).
static void config_hash(RunConfig *rc, char hash[17]) {
    const char *name = rc->name;
    rc->name = "";
    char *json = run_config_json(rc);
    rc->name = name;
    ms_hex64(ms_fnv1a(MS_FNV_INIT, json, strlen(json)), hash);
    free(json);
}

static void push_executed(lua_State *L, const RunConfig *rc, const RunResult *res, const char *hash,
                          int resumed) {
    lua_createtable(L, 0, 14);
    lua_pushinteger(L, res->run_id), lua_setfield(L, -2, "id");
    lua_pushstring(L, rc->name), lua_setfield(L, -2, "name");
    lua_pushstring(L, res->status), lua_setfield(L, -2, "status");
    if (!res->ok) lua_pushstring(L, res->error), lua_setfield(L, -2, "error");
    lua_pushstring(L, hash), lua_setfield(L, -2, "config_hash");
    if (resumed) lua_pushboolean(L, 1), lua_setfield(L, -2, "resumed");
    lua_pushinteger(L, res->steps_done), lua_setfield(L, -2, "steps");
    lua_pushnumber(L, res->train_loss), lua_setfield(L, -2, "train_loss");
    if (res->ok) lua_pushnumber(L, res->eval_loss), lua_setfield(L, -2, "eval_loss");
    lua_pushnumber(L, res->tokens_per_s), lua_setfield(L, -2, "tokens_per_s");
    lua_pushnumber(L, res->wall_s), lua_setfield(L, -2, "wall_s");
    lua_pushnumber(L, res->attn_sparsity), lua_setfield(L, -2, "attn_sparsity");
    lua_pushnumber(L, res->attn_flops_per_token), lua_setfield(L, -2, "attn_flops_per_token");
    lua_createtable(L, 0, res->n_ppl);
    for (int i = 0; i < res->n_ppl; i++) {
        lua_pushnumber(L, res->ppl[i]);
        lua_seti(L, -2, res->ppl_lengths[i]);
    }
    lua_setfield(L, -2, "ppl");
}

static int l_run(lua_State *L) {
    // after SIGINT/SIGTERM no new run starts: the script stops here (exit status 1), and the
    // next `mslab run` resumes the interrupted run
    if (run_stop_requested) return luaL_error(L, "interrupted by signal (run the script again to resume)");
    RunConfig rc;
    const Corpus *corpus;
    lconfig_read_run(L, 1, &rc, &corpus);
    lua_getfield(L, LUA_REGISTRYINDEX, SCRIPT_KEY);
    rc.script = lua_tostring(L, -1);
    lua_pop(L, 1);
    rc.corpus_desc = ((const CorpusBox *)corpus)->desc;
    rc.script_hash = H.script_hash[0] ? H.script_hash : NULL;
    char hash[17], note[512];
    config_hash(&rc, hash);
    Store *store = host_store(L);
    int64_t resume_id = 0;
    int act = decide(store, hash, &resume_id, note, sizeof note);
    if (act < 0) {
        H.store_failed = 1;
        lpos_release(L, &rc.pos);
        lconfig_error(L, "", "%s", ms_error());
    }
    int skip_here = (H.mode == HOST_PLAN) || (H.mode == HOST_ONLY && (H.only_ran || strcmp(hash, H.o.only)));
    if (H.mode == HOST_PLAN) {
        if (plan_has(hash)) act = ACT_SKIP, snprintf(note, sizeof note, "same config as above");
        plan_add(rc.name, hash, act, note);
    }
    if (act == ACT_SKIP && H.mode != HOST_PLAN) { // stored results, also for a --jobs child's script
        lpos_release(L, &rc.pos);
        StoreRunRef r;
        if (store_find_run(store, hash, &r) != 1) lconfig_error(L, "", "%s", ms_error());
        push_stored(L, store, r.id, note);
        if (H.mode != HOST_ONLY) fprintf(stderr, "%s: skipped: %s\n", rc.name, note);
        return 1;
    }
    if (skip_here || act == ACT_SKIP) {
        lpos_release(L, &rc.pos);
        push_placeholder(L, rc.name, hash, H.mode == HOST_PLAN ? "planned" : "not run", note);
        return 1;
    }
    char *json = run_config_json(&rc);
    rc.config_json = json;
    rc.config_hash = hash;
    rc.resume_id = act == ACT_RESUME ? resume_id : 0;
    if (rc.resume_id) fprintf(stderr, "%s: %s\n", rc.name, note);

    RunResult *res = ms_calloc(1, sizeof *res);
    if (H.mode == HOST_ONLY) H.only_ran = 1;
    int status = run_execute(&rc, corpus, store, res);
    lpos_release(L, &rc.pos); // the run's schedule functions
    free(json);
    if (status && res->run_id == 0) { // the store itself failed: nothing was recorded
        free(res);
        H.store_failed = 1;
        lconfig_error(L, "", "%s", ms_error());
    }
    push_executed(L, &rc, res, hash, rc.resume_id != 0);
    if (!res->ok) fprintf(stderr, "run %s %s: %s\n", rc.name, res->status, res->error);
    free(res);
    return 1;
}

// ---- mslab.sweep(list) ------------------------------------------------------------------------
// Runs each config of the list in order ("run i of n" in the progress line). A config that does
// not validate is recorded as a failed run with its file:line message and the sweep goes on
// (a single ms.run call with a bad config stops the script instead: docs/sweeps.md).

// pcall target: ms.run(cfg) with the sweep position set.
static int sweep_one(lua_State *L) {
    lua_pushcfunction(L, l_run);
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    return 1;
}

// Records a config that did not validate as a failed run (hash of name + message, so a rerun
// skips it as failed unless --retry-failed, like any failed run).
static void record_invalid(lua_State *L, Store *s, const char *name, const char *msg) {
    char hash[17];
    uint64_t h = ms_fnv1a(MS_FNV_INIT, "invalid\n", 8);
    h = ms_fnv1a(h, name, strlen(name));
    h = ms_fnv1a(h, msg, strlen(msg));
    ms_hex64(h, hash);
    char note[512];
    int64_t resume_id;
    int act = decide(s, hash, &resume_id, note, sizeof note);
    if (H.mode == HOST_PLAN) plan_add(name, hash, act == ACT_SKIP ? ACT_SKIP : ACT_INVALID, msg);
    int record = act != ACT_SKIP && (H.mode == HOST_RUN || H.mode == HOST_COLLECT ||
                                     (H.mode == HOST_PLAN && !H.o.dry_run));
    int64_t id = 0;
    if (record) {
        lua_getfield(L, LUA_REGISTRYINDEX, SCRIPT_KEY);
        RunInfo info = {.name = name, .script = lua_tostring(L, -1), .config_hash = hash,
                        .script_hash = H.script_hash, .host = "", .device = ""};
        lua_pop(L, 1);
        if (store_run_begin(s, &info, &id) == 0) store_run_end(s, id, "failed", msg);
        fprintf(stderr, "run %s failed: %s\n", name, msg);
    }
    lua_createtable(L, 0, 5);
    if (id) lua_pushinteger(L, id), lua_setfield(L, -2, "id");
    lua_pushstring(L, name), lua_setfield(L, -2, "name");
    lua_pushstring(L, "failed"), lua_setfield(L, -2, "status");
    lua_pushstring(L, msg), lua_setfield(L, -2, "error");
    lua_pushstring(L, hash), lua_setfield(L, -2, "config_hash");
    lua_newtable(L), lua_setfield(L, -2, "ppl");
}

// The summary table at the end of a sweep (stderr): one line per run.
static const char *field_str(lua_State *L, int t, const char *k, char *buf, size_t n) {
    int type = lua_getfield(L, t, k);
    if (type == LUA_TNUMBER) snprintf(buf, n, "%.4f", lua_tonumber(L, -1));
    else if (type == LUA_TSTRING) snprintf(buf, n, "%s", lua_tostring(L, -1));
    else if (type == LUA_TBOOLEAN) snprintf(buf, n, "%s", lua_toboolean(L, -1) ? "yes" : "");
    else buf[0] = 0;
    lua_pop(L, 1);
    return buf;
}

static void sweep_summary(lua_State *L, int results, int n) {
    fprintf(stderr, "\nsweep: %d runs\n%5s  %-40s  %-11s  %10s  %10s  %s\n", n, "run", "name", "status",
            "train loss", "eval loss", "note");
    for (int i = 1; i <= n; i++) {
        if (lua_geti(L, results, i) != LUA_TTABLE) {
            lua_pop(L, 1);
            continue;
        }
        int t = lua_gettop(L);
        char name[64], st[32], tl[32], el[32], err[128], note[128], sk[8], rs[8];
        field_str(L, t, "error", err, sizeof err);
        field_str(L, t, "note", note, sizeof note);
        field_str(L, t, "skipped", sk, sizeof sk);
        field_str(L, t, "resumed", rs, sizeof rs);
        fprintf(stderr, "%2d/%-2d  %-40.40s  %-11s  %10s  %10s  %.70s\n", i, n,
                field_str(L, t, "name", name, sizeof name), field_str(L, t, "status", st, sizeof st),
                field_str(L, t, "train_loss", tl, sizeof tl), field_str(L, t, "eval_loss", el, sizeof el),
                err[0] ? err : sk[0] ? note : rs[0] ? "resumed" : "");
        lua_pop(L, 1);
    }
}

static int l_sweep(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    int n = (int)luaL_len(L, 1);
    Store *s = host_store(L);
    luaL_where(L, 1); // "script.lua:LINE: " of this call, for messages that have no line
    char where[512];
    snprintf(where, sizeof where, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    lua_createtable(L, n, 0); // results: index 2
    for (int i = 1; i <= n; i++) {
        H.sweep_i = i, H.sweep_n = n;
        progress_set_sweep(i, n);
        lua_pushcfunction(L, sweep_one);
        lua_geti(L, 1, i);
        if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
            const char *msg = lua_tostring(L, -1);
            char *m = ms_strdup(msg ? msg : "(error object is not a string)");
            lua_pop(L, 1);
            lua_geti(L, 1, i);
            char name[256];
            snprintf(name, sizeof name, "%s", lua_istable(L, -1) && lua_getfield(L, -1, "name") == LUA_TSTRING
                                                  ? lua_tostring(L, -1) : "run");
            lua_settop(L, 2);
            if (run_stop_requested) { // an interrupt during a run is not a config error
                free(m);
                break;
            }
            if (H.store_failed) { // a full disk or unwritable database: stop with its message
                lua_pushstring(L, m);
                free(m);
                return lua_error(L);
            }
            // a key's own line when lconfig found it, else the line of the ms.sweep call
            char *full = m;
            if (where[0] && !strstr(m, ".lua:")) {
                full = ms_malloc(strlen(where) + strlen(m) + 1);
                strcpy(full, where), strcat(full, m);
                free(m);
            }
            record_invalid(L, s, name, full);
            free(full);
        }
        lua_seti(L, 2, i);
        if (run_stop_requested) break;
    }
    H.sweep_i = H.sweep_n = 0;
    progress_set_sweep(0, 0);
    if (H.mode == HOST_RUN || H.mode == HOST_COLLECT) sweep_summary(L, 2, n);
    return 1;
}
static const luaL_Reg mslab_funcs[] = {
    {"corpus", l_corpus},
    {"run", l_run},
    {"sweep", l_sweep},
    {NULL, NULL},
};

static int open_mslab(lua_State *L) {
    luaL_newlib(L, mslab_funcs);
    ltensor_open(L); // mslab.tensor, mslab.attention (lua/ltensor.c)
    lsweep_open(L);  // mslab.grid, mslab.random (lua/lsweep.c)
    lua_pushstring(L, "0.1"), lua_setfield(L, -2, "version");
    return 1;
}

static void register_types(lua_State *L) {
    luaL_newmetatable(L, "mslab.corpus");
    lua_pushcfunction(L, corpus_gc), lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, corpus_index), lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, corpus_tostring), lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
}

static int traceback(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
    return 1;
}

static int quiet_print(lua_State *L) {
    (void)L;
    return 0;
}

// Executes the script once in the current mode; 0 ok, 1 script error (reported).
static int exec_script(Store *store, const char *script, int argc, char **argv) {
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    register_types(L);
    luaL_requiref(L, "mslab", open_mslab, 1); // require "mslab" and the global `mslab`
    lua_pop(L, 1);
    lua_pushlightuserdata(L, store), lua_setfield(L, LUA_REGISTRYINDEX, STORE_KEY);
    lua_pushstring(L, script), lua_setfield(L, LUA_REGISTRYINDEX, SCRIPT_KEY);
    lua_createtable(L, argc, 1);
    lua_pushstring(L, script), lua_rawseti(L, -2, 0);
    for (int i = 0; i < argc; i++) lua_pushstring(L, argv[i]), lua_rawseti(L, -2, i + 1);
    lua_setglobal(L, "arg");

    // planning and --jobs children execute the script only to find its runs: its own output
    // appears once, from the final pass
    if (H.mode == HOST_PLAN || H.mode == HOST_ONLY) {
        lua_pushcfunction(L, quiet_print);
        lua_setglobal(L, "print");
    }
    int status = 0;
    // A traceback helps with errors in the user's own Lua code; config errors are one clear line.
    int trace = getenv("MSLAB_TRACEBACK") != NULL;
    if (trace) lua_pushcfunction(L, traceback);
    if (luaL_loadfile(L, script) != LUA_OK || lua_pcall(L, 0, 0, trace ? -2 : 0) != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        ms_fail("%s", msg ? msg : "(error object is not a string)");
        if (H.mode == HOST_PLAN && !H.store_failed && H.n_plan > 0) {
            // the script used a placeholder result (an assert, arithmetic): the plan ends here;
            // the final pass runs the rest in order
            fprintf(stderr, "mslab: planning stopped after %d runs at: %s (results are placeholders "
                    "while planning; the runs after this point run in the final pass)\n", H.n_plan,
                    ms_error());
        } else if (!(H.mode == HOST_ONLY && H.only_ran)) {
            fprintf(stderr, "mslab: %s\n", ms_error());
            status = 1;
        }
    }
    lua_close(L); // collects corpora before the store closes
    return status;
}

static const char *const action_names[] = {"run", "skip", "resume", "failed"};

static void print_plan(FILE *out) {
    fprintf(out, "%3s  %-32s  %-16s  %-6s  %s\n", "#", "name", "config hash", "action", "why");
    for (int i = 0; i < H.n_plan; i++)
        fprintf(out, "%3d  %-32s  %-16s  %-6s  %s\n", i + 1, H.plan[i].name, H.plan[i].hash,
                action_names[H.plan[i].action], H.plan[i].note);
}

// --jobs / --devices: each planned run is `EXE run SCRIPT --db DB --only HASH [...] -- ARGS` in its
// own process (a fresh Lua state that re-executes the script and runs just that config), at most
// `jobs` at once; with devices, one per device with CUDA_VISIBLE_DEVICES set. Children log plain
// lines (MSLAB_PLAIN_PROGRESS). SIGINT/SIGTERM: no new child starts; running ones get SIGTERM
// (they checkpoint and end 'interrupted').
static int run_children(const char *script, const char *db, int argc, char **argv) {
    char *devs[64];
    int ndev = 0;
    char *dev_copy = H.o.devices ? ms_strdup(H.o.devices) : NULL;
    for (char *t = dev_copy ? strtok(dev_copy, ",") : NULL; t && ndev < 64; t = strtok(NULL, ","))
        devs[ndev++] = t;
    int slots = ndev ? ndev : H.o.jobs;
    pid_t *pids = ms_calloc((size_t)slots, sizeof *pids);
    int *entry = ms_calloc((size_t)slots, sizeof *entry);
    int todo = 0, next = 0, failed = 0, running = 0, signalled = 0;
    for (int i = 0; i < H.n_plan; i++) todo += H.plan[i].action == ACT_NEW || H.plan[i].action == ACT_RESUME;
    int k = 0;
    for (;;) {
        while (running < slots && next < H.n_plan && !run_stop_requested) {
            if (H.plan[next].action != ACT_NEW && H.plan[next].action != ACT_RESUME) {
                next++;
                continue;
            }
            int slot = 0;
            while (pids[slot]) slot++;
            PlanEntry *e = &H.plan[next];
            char **av = ms_calloc((size_t)argc + 16, sizeof *av);
            int n = 0;
            av[n++] = "mslab", av[n++] = "run", av[n++] = (char *)script, av[n++] = "--db";
            av[n++] = (char *)db, av[n++] = "--only", av[n++] = e->hash;
            if (H.o.force) av[n++] = "--force";
            if (H.o.retry_failed) av[n++] = "--retry-failed";
            av[n++] = "--";
            for (int i = 0; i < argc; i++) av[n++] = argv[i];
            fflush(NULL);
            pid_t pid = fork();
            if (pid == 0) {
                setenv("MSLAB_PLAIN_PROGRESS", "1", 1);
                if (ndev) setenv("CUDA_VISIBLE_DEVICES", devs[slot], 1);
                execv(H.o.exe ? H.o.exe : "/proc/self/exe", av);
                fprintf(stderr, "mslab: cannot start %s: %s\n", H.o.exe ? H.o.exe : "/proc/self/exe",
                        strerror(errno));
                _exit(127);
            }
            free(av);
            if (pid < 0) {
                fprintf(stderr, "mslab: fork: %s\n", strerror(errno));
                failed++;
                next++;
                continue;
            }
            pids[slot] = pid, entry[slot] = next, running++;
            fprintf(stderr, "[%d/%d] %s: started (pid %d%s%s)\n", ++k, todo, e->name, (int)pid,
                    ndev ? ", device " : "", ndev ? devs[slot] : "");
            next++;
        }
        if (!running) break;
        // a signal that arrived outside waitpid (while forking or printing) is forwarded here
        if (run_stop_requested && !signalled) {
            for (int i = 0; i < slots; i++)
                if (pids[i]) kill(pids[i], SIGTERM);
            signalled = 1;
        }
        int st;
        pid_t pid = waitpid(-1, &st, 0);
        if (pid < 0) {
            if (errno == EINTR) {
                if (run_stop_requested && !signalled) {
                    for (int i = 0; i < slots; i++)
                        if (pids[i]) kill(pids[i], SIGTERM);
                    signalled = 1;
                }
                continue;
            }
            break;
        }
        for (int i = 0; i < slots; i++) {
            if (pids[i] != pid) continue;
            int ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
            failed += !ok;
            fprintf(stderr, "%s: process %s\n", H.plan[entry[i]].name, ok ? "finished" : "failed");
            pids[i] = 0, running--;
        }
    }
    free(pids);
    free(entry);
    free(dev_copy);
    return failed;
}

int lua_host_run_opts(const char *script, const char *db_path, int argc, char **argv,
                      const HostOptions *opts) {
    memset(&H, 0, sizeof H);
    run_stop_requested = 0; // a fresh script (tests run several in one process)
    if (opts) H.o = *opts;
    if (H.o.stale_s <= 0) H.o.stale_s = 600;
    if (H.o.jobs <= 0) H.o.jobs = 1;
    provenance_file_hash(script, H.script_hash);
    if (getenv("MSLAB_PLAIN_PROGRESS")) progress_set_plain(1);
    Store *store;
    if (store_open(&store, db_path, 0)) {
        fprintf(stderr, "mslab: %s\n", ms_error());
        return 1;
    }
    run_install_signal_handlers();
    int status;
    int parallel = !H.o.only && (H.o.jobs > 1 || H.o.devices);
    if (H.o.dry_run || parallel) {
        H.mode = HOST_PLAN;
        status = exec_script(store, script, argc, argv);
        if (status == 0 && H.o.dry_run) print_plan(stdout);
        if (status == 0 && parallel) {
            store_close(store); // children write; reopen for the collecting pass
            int failed = run_children(script, db_path, argc, argv);
            if (store_open(&store, db_path, 0)) {
                fprintf(stderr, "mslab: %s\n", ms_error());
                plan_free();
                return 1;
            }
            // the script once more as a plain run: what the children finished is answered from the
            // database (results, summary), anything left (a plan cut short, a child that died)
            // runs here in order
            H.mode = HOST_COLLECT;
            H.o.force = H.o.retry_failed = 0; // the children did that: now read what they wrote
            if (!run_stop_requested) status = exec_script(store, script, argc, argv);
            if (failed) fprintf(stderr, "mslab: %d run process(es) failed\n", failed);
        }
    } else {
        H.mode = H.o.only ? HOST_ONLY : HOST_RUN;
        status = exec_script(store, script, argc, argv);
    }
    plan_free();
    store_close(store);
    if (run_stop_requested && status == 0) {
        fprintf(stderr, "mslab: interrupted (run the script again to resume)\n");
        status = 1;
    }
    return status;
}

int lua_host_run(const char *script, const char *db_path, int argc, char **argv) {
    return lua_host_run_opts(script, db_path, argc, argv, NULL);
}
