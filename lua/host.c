// host.c: the embedded Lua state and the `mslab` module (mslab.corpus, mslab.run).
#include "host.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdlib.h>
#include <string.h>

#include "../core/common.h"
#include "../core/data.h"
#include "../core/run.h"
#include "../core/store.h"
#include "lconfig.h"
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

static int l_run(lua_State *L) {
    RunConfig rc;
    const Corpus *corpus;
    lconfig_read_run(L, 1, &rc, &corpus);
    lua_getfield(L, LUA_REGISTRYINDEX, SCRIPT_KEY);
    rc.script = lua_tostring(L, -1);
    lua_pop(L, 1);
    rc.corpus_desc = ((const CorpusBox *)corpus)->desc;
    char *json = run_config_json(&rc);
    char hash[17];
    ms_hex64(ms_fnv1a(MS_FNV_INIT, json, strlen(json)), hash);
    rc.config_json = json;
    rc.config_hash = hash;

    RunResult *res = ms_calloc(1, sizeof *res);
    int status = run_execute(&rc, corpus, host_store(L), res);
    lpos_release(L, &rc.pos); // the run's schedule functions
    free(json);
    if (status && res->run_id == 0) { // the store itself failed: nothing was recorded
        free(res);
        lconfig_error(L, "", "%s", ms_error());
    }
    lua_createtable(L, 0, 12);
    lua_pushinteger(L, res->run_id), lua_setfield(L, -2, "id");
    lua_pushstring(L, rc.name), lua_setfield(L, -2, "name");
    lua_pushstring(L, res->status), lua_setfield(L, -2, "status");
    if (!res->ok) lua_pushstring(L, res->error), lua_setfield(L, -2, "error");
    lua_pushstring(L, hash), lua_setfield(L, -2, "config_hash");
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
    if (!res->ok) fprintf(stderr, "run %s %s: %s\n", rc.name, res->status, res->error);
    free(res);
    return 1;
}

static const luaL_Reg mslab_funcs[] = {
    {"corpus", l_corpus},
    {"run", l_run},
    {NULL, NULL},
};

static int open_mslab(lua_State *L) {
    luaL_newlib(L, mslab_funcs);
    ltensor_open(L); // mslab.tensor, mslab.attention (lua/ltensor.c)
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

int lua_host_run(const char *script, const char *db_path, int argc, char **argv) {
    Store *store;
    if (store_open(&store, db_path, 0)) {
        fprintf(stderr, "mslab: %s\n", ms_error());
        return 1;
    }
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

    run_install_signal_handlers();
    int status = 0;
    // A traceback helps with errors in the user's own Lua code; config errors are one clear line.
    int trace = getenv("MSLAB_TRACEBACK") != NULL;
    if (trace) lua_pushcfunction(L, traceback);
    if (luaL_loadfile(L, script) != LUA_OK || lua_pcall(L, 0, 0, trace ? -2 : 0) != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        ms_fail("%s", msg ? msg : "(error object is not a string)");
        fprintf(stderr, "mslab: %s\n", ms_error());
        status = 1;
    }
    lua_close(L); // collects corpora before the store closes
    store_close(store);
    return status;
}
