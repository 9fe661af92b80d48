// lconfig.c: reads and validates the config tables of mslab.run{...} and mslab.corpus{...}.
// Each section is a list of Fields (key, type, destination); a key not in the list is an error,
// so a typo never silently falls back to a default.
#include "lconfig.h"

#include <ctype.h>
#include <lauxlib.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "../core/common.h"
#include "../core/eval.h"
#include "../core/safetensors.h"
#include "../core/spm_model.h"
#include "lattention.h"
#include "lpos.h"

// ---- error location ---------------------------------------------------------------------------

// Line of `key` (a path like "model.heads") inside the table literal that starts at `line` of
// `file`: each path component is searched as `name =` from where the previous one was found.
// A heuristic (Lua keeps no line per table field); falls back to the line of the call.
static int assigns(const char *text, const char *name) {
    size_t n = strlen(name);
    for (const char *s = strstr(text, name); s; s = strstr(s + 1, name)) {
        int left_ok = s == text || !(isalnum((unsigned char)s[-1]) || s[-1] == '_');
        const char *e = s + n;
        while (*e == ' ' || *e == '\t') e++;
        if (left_ok && *e == '=' && e[1] != '=') return 1;
    }
    return 0;
}

static int find_key_line(const char *file, int line, const char *key_path) {
    FILE *f = fopen(file, "r");
    if (!f) return line;
    char text[1024];
    char (*lines)[1024] = NULL;
    int nl = 0;
    while (nl < line + 400 && fgets(text, sizeof text, f)) {
        lines = ms_realloc(lines, sizeof *lines * (size_t)(nl + 1));
        memcpy(lines[nl++], text, sizeof text);
    }
    fclose(f);
    int cur = line - 1, found = line;
    const char *p = key_path;
    while (*p && cur >= 0) {
        char comp[128];
        size_t n = strcspn(p, ".[");
        if (n == 0 || n >= sizeof comp) break;
        memcpy(comp, p, n);
        comp[n] = 0;
        p += n;
        while (*p == '.' || *p == '[' || *p == ']' || isdigit((unsigned char)*p)) p++;
        int hit = -1;
        for (int i = cur; i < nl; i++)
            if (assigns(lines[i], comp)) { hit = i; break; }
        if (hit < 0) break;
        found = hit + 1;
        cur = hit;
    }
    free(lines);
    return found;
}

_Noreturn void lconfig_error(lua_State *L, const char *key_path, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    lua_Debug ar;
    // level 1 = the Lua function that called mslab.run / mslab.corpus
    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar) && ar.currentline > 0) {
        int line = ar.currentline;
        const char *src = ar.short_src;
        if (ar.source[0] == '@' && key_path && key_path[0])
            line = find_key_line(ar.source + 1, ar.currentline, key_path);
        lua_pushfstring(L, "%s:%d: %s", src, line, msg);
    } else {
        lua_pushstring(L, msg);
    }
    lua_error(L); // (not luaL_error: it would prefix the caller's position a second time)
    abort();
}

// An engine message starts with the key path it is about ("model.heads (6) must ..."): use it to
// find the line.
_Noreturn void lconfig_engine_error(lua_State *L, const char *msg) {
    char key[128];
    size_t n = strcspn(msg, " :(");
    if (n >= sizeof key) n = 0;
    memcpy(key, msg, n);
    key[n] = 0;
    lconfig_error(L, strchr(key, '.') ? key : "", "%s", msg);
}

// ---- typed reads of the value on top of the stack ---------------------------------------------

int lconfig_int(lua_State *L, const char *path) {
    int isint;
    lua_Integer v = lua_tointegerx(L, -1, &isint);
    if (lua_type(L, -1) != LUA_TNUMBER || !isint)
        lconfig_error(L, path, "%s: expected an integer, got %s", path,
                      lua_type(L, -1) == LUA_TNUMBER ? "a fraction" : luaL_typename(L, -1));
    if (v < -2147483647 || v > 2147483647)
        lconfig_error(L, path, "%s (%lld) is out of range", path, (long long)v);
    return (int)v;
}

double lconfig_number(lua_State *L, const char *path) {
    if (lua_type(L, -1) != LUA_TNUMBER)
        lconfig_error(L, path, "%s: expected a number, got %s", path, luaL_typename(L, -1));
    return lua_tonumber(L, -1);
}

int lconfig_choice(lua_State *L, const char *path, const char *const *names) {
    if (lua_type(L, -1) != LUA_TSTRING)
        lconfig_error(L, path, "%s: expected a string, got %s", path, luaL_typename(L, -1));
    const char *s = lua_tostring(L, -1);
    for (int i = 0; names[i]; i++)
        if (!strcmp(s, names[i])) return i;
    char list[256] = "";
    for (int j = 0; names[j]; j++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s\"%s\"", j ? ", " : "", names[j]);
    lconfig_error(L, path, "%s: \"%s\" is not one of %s", path, s, list);
}

// ---- typed fields -----------------------------------------------------------------------------

typedef enum { F_INT, F_FLOAT, F_U64, F_BOOL, F_STR, F_CHOICE, F_INTLIST, F_INT64, F_TABLE,
               F_ANY /* checked by the caller */ } FieldType;

typedef struct {
    const char *key;
    FieldType type;
    void *dst;
    const char *const *choices; // F_CHOICE: NULL-terminated names; dst is int (index)
    int max;                    // F_INTLIST: capacity; count goes to *count
    int *count;
} Field;

static const char *type_word(FieldType t) {
    switch (t) {
    case F_INT: case F_U64: case F_INT64: return "an integer";
    case F_FLOAT: return "a number";
    case F_BOOL: return "a boolean";
    case F_STR: case F_CHOICE: return "a string";
    case F_INTLIST: return "a list of integers";
    case F_TABLE: return "a table";
    case F_ANY: return "a value";
    }
    return "?";
}

static void read_field(lua_State *L, const Field *f, const char *path) {
    int t = lua_type(L, -1);
    int ok = 1;
    switch (f->type) {
    case F_INT: case F_U64: case F_INT64: {
        int isint;
        lua_Integer v = lua_tointegerx(L, -1, &isint);
        if (t != LUA_TNUMBER || !isint) { ok = 0; break; }
        if (f->type == F_INT) {
            if (v < -2147483647 || v > 2147483647)
                lconfig_error(L, path, "%s (%lld) is out of range", path, (long long)v);
            *(int *)f->dst = (int)v;
        } else if (f->type == F_U64) {
            if (v < 0) lconfig_error(L, path, "%s (%lld) must be >= 0", path, (long long)v);
            *(uint64_t *)f->dst = (uint64_t)v;
        } else {
            *(int64_t *)f->dst = (int64_t)v;
        }
        break;
    }
    case F_FLOAT:
        if (t != LUA_TNUMBER) { ok = 0; break; }
        *(float *)f->dst = (float)lua_tonumber(L, -1);
        break;
    case F_BOOL:
        if (t != LUA_TBOOLEAN) { ok = 0; break; }
        *(int *)f->dst = lua_toboolean(L, -1);
        break;
    case F_STR:
        if (t != LUA_TSTRING) { ok = 0; break; }
        *(const char **)f->dst = lua_tostring(L, -1);
        break;
    case F_CHOICE:
        if (t != LUA_TSTRING) { ok = 0; break; }
        *(int *)f->dst = lconfig_choice(L, path, f->choices);
        break;
    case F_INTLIST: {
        if (t != LUA_TTABLE) { ok = 0; break; }
        int n = (int)luaL_len(L, -1);
        if (n > f->max) lconfig_error(L, path, "%s: at most %d values", path, f->max);
        for (int i = 1; i <= n; i++) {
            lua_geti(L, -1, i);
            int isint;
            lua_Integer v = lua_tointegerx(L, -1, &isint);
            if (!isint || v <= 0 || v > 1 << 30)
                lconfig_error(L, path, "%s[%d] must be a positive integer", path, i);
            ((int *)f->dst)[i - 1] = (int)v;
            lua_pop(L, 1);
        }
        *f->count = n;
        break;
    }
    case F_TABLE:
        ok = t == LUA_TTABLE;
        break;
    case F_ANY:
        break;
    }
    if (!ok)
        lconfig_error(L, path, "%s: expected %s, got %s", path, type_word(f->type),
                      luaL_typename(L, -1));
}

// Reads table at idx (absolute) against fields; prefix is the key path of the table ("" = root).
// Nested tables (F_TABLE) are left for the caller; unknown keys are errors.
static void read_table(lua_State *L, int idx, const char *prefix, const Field *fields, int n) {
    char path[256];
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            lconfig_error(L, prefix, "%s%s: keys must be names, found a %s key", prefix,
                          prefix[0] ? "" : "config", luaL_typename(L, -2));
        }
        const char *key = lua_tostring(L, -2);
        snprintf(path, sizeof path, "%s%s%s", prefix, prefix[0] ? "." : "", key);
        int i;
        for (i = 0; i < n; i++)
            if (!strcmp(fields[i].key, key)) break;
        if (i == n) {
            char known[512] = "";
            for (int j = 0; j < n; j++)
                snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", j ? ", " : "",
                         fields[j].key);
            lconfig_error(L, path, "%s: unknown key (known here: %s)", path, known);
        }
        read_field(L, &fields[i], path);
        lua_pop(L, 1);
    }
}

// Pushes t[key] if it is a table (else nothing, returns 0).
static int sub_table(lua_State *L, int idx, const char *key) {
    if (lua_getfield(L, idx, key) == LUA_TTABLE) return lua_gettop(L);
    lua_pop(L, 1);
    return 0;
}

#define NFIELDS(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const char *const rope_styles[] = {"interleaved", "halves", NULL};
// "cuda" is always a known name; run_config_check says whether this build and machine have it
static const char *const devices[] = {"cpu", "cuda", NULL};
// precision (docs/cuda.md "Precision"): not given = the device's default (bf16 on cuda, fp32 on cpu)
static const char *const precisions[] = {"fp32", "bf16", NULL};
static const char *const ppl_protocols[] = {"windows", "sliding", "truncate", "longlora", NULL};
_Static_assert(sizeof ppl_protocols / sizeof *ppl_protocols == PPL_NPROTOCOLS + 1,
               "ppl_protocols: core/eval.h's protocols in order");

// eval.ppl's keys beyond lengths / max_tokens / stride (p: the eval.ppl table).
static void read_ppl_extra(lua_State *L, int p, RunConfig *rc, int protocol) {
    int has_one = (lua_getfield(L, p, "protocol"), !lua_isnil(L, -1));
    lua_pop(L, 1);
    int t = sub_table(L, p, "protocols");
    if (t && has_one)
        lconfig_error(L, "eval.ppl.protocols", "eval.ppl: give `protocol` or `protocols`, not both");
    if (has_one) {
        rc->ppl_protocols[0] = protocol;
        rc->n_ppl_protocols = 1;
    }
    if (t) {
        int n = (int)luaL_len(L, t);
        if (n < 1 || n > RUN_MAX_PROTOCOLS)
            lconfig_error(L, "eval.ppl.protocols", "eval.ppl.protocols: give 1 to %d protocols",
                          RUN_MAX_PROTOCOLS);
        for (int i = 1; i <= n; i++) {
            lua_geti(L, t, i);
            const char *name = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
            int k = -1;
            for (int j = 0; name && ppl_protocols[j]; j++)
                if (!strcmp(name, ppl_protocols[j])) k = j;
            if (k < 0)
                lconfig_error(L, "eval.ppl.protocols", "eval.ppl.protocols[%d]: expected one of "
                              "\"windows\", \"sliding\", \"truncate\", \"longlora\"", i);
            for (int j = 0; j < i - 1; j++)
                if (rc->ppl_protocols[j] == k)
                    lconfig_error(L, "eval.ppl.protocols", "eval.ppl.protocols[%d]: \"%s\" is "
                                  "listed twice", i, name);
            rc->ppl_protocols[i - 1] = k;
            lua_pop(L, 1);
        }
        rc->n_ppl_protocols = n;
        lua_pop(L, 1);
    }
    lua_getfield(L, p, "data");
    if (!lua_isnil(L, -1)) {
        Corpus **cp = luaL_testudata(L, -1, "mslab.corpus");
        if (!cp) lconfig_error(L, "eval.ppl.data", "eval.ppl.data: expected a corpus from "
                               "mslab.corpus{...}, got %s", luaL_typename(L, -1));
        rc->ppl_corpus = *cp;
        lua_getfield(L, -1, "description"); // kept alive in the registry until the next run
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, "mslab.ppl_data_desc");
        rc->ppl_corpus_desc = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

// eval.passkey = {lengths, trials, depth = "uniform" | number, seed, new_tokens, tokenizer}
static void read_passkey(lua_State *L, int p, RunConfig *rc) {
    Field g[] = {
        {"lengths", F_INTLIST, rc->passkey_lengths, NULL, RUN_MAX_LENGTHS, &rc->n_passkey_lengths},
        {"trials", F_INT, &rc->passkey_trials},
        {"depth", F_ANY, NULL},
        {"seed", F_U64, &rc->passkey_seed},
        {"new_tokens", F_INT, &rc->passkey_new_tokens},
        {"tokenizer", F_STR, &rc->passkey_tokenizer}, // kept alive by the argument table
    };
    read_table(L, p, "eval.passkey", g, NFIELDS(g));
    if (!rc->n_passkey_lengths)
        lconfig_error(L, "eval.passkey.lengths", "eval.passkey.lengths: give at least one length");
    lua_getfield(L, p, "depth");
    if (lua_type(L, -1) == LUA_TSTRING) {
        if (strcmp(lua_tostring(L, -1), "uniform"))
            lconfig_error(L, "eval.passkey.depth", "eval.passkey.depth: \"%s\" is not \"uniform\" "
                          "or a number in [0, 1]", lua_tostring(L, -1));
        rc->passkey_depth = -1.0;
    } else if (lua_type(L, -1) == LUA_TNUMBER) {
        double d = lua_tonumber(L, -1);
        if (!(d >= 0 && d <= 1))
            lconfig_error(L, "eval.passkey.depth", "eval.passkey.depth (%g) must be in [0, 1]", d);
        rc->passkey_depth = d;
    } else if (!lua_isnil(L, -1)) {
        lconfig_error(L, "eval.passkey.depth", "eval.passkey.depth: expected \"uniform\" or a "
                      "number, got %s", luaL_typename(L, -1));
    }
    lua_pop(L, 1);
}

// finetune = { init = "path", lora = { rank, alpha, targets = {...}, train_embeddings, train_norms } }
// (docs/checkpoints.md). With init, the model's shape, RoPE style and base and norm eps are the
// file's, so a `model` table beside it is an error.
static void read_finetune(lua_State *L, int t, RunConfig *rc, int model_given) {
    Field f[] = {{"init", F_STR, &rc->finetune_init}, {"lora", F_TABLE, NULL}};
    read_table(L, t, "finetune", f, NFIELDS(f));
    int l;
    if ((l = sub_table(L, t, "lora"))) {
        rc->lora = 1;
        rc->lora_cfg = lora_config_default();
        Field g[] = {
            {"rank", F_INT, &rc->lora_cfg.rank},
            {"alpha", F_FLOAT, &rc->lora_cfg.alpha},
            {"targets", F_TABLE, NULL},
            {"train_embeddings", F_BOOL, &rc->lora_cfg.train_embeddings},
            {"train_norms", F_BOOL, &rc->lora_cfg.train_norms},
        };
        read_table(L, l, "finetune.lora", g, NFIELDS(g));
        int tt;
        if ((tt = sub_table(L, l, "targets"))) {
            unsigned mask = 0;
            int n = (int)luaL_len(L, tt);
            for (int i = 1; i <= n; i++) {
                const char *s = lua_geti(L, tt, i) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
                int k = 0;
                while (s && k < LORA_NT && strcmp(s, lora_target_names[k])) k++;
                if (!s || k == LORA_NT)
                    lconfig_error(L, "finetune.lora.targets", "finetune.lora.targets[%d] (%s) is not "
                                  "one of \"q\", \"k\", \"v\", \"o\", \"gate\", \"up\", \"down\"", i,
                                  s ? s : luaL_typename(L, -1));
                if (mask >> k & 1)
                    lconfig_error(L, "finetune.lora.targets", "finetune.lora.targets[%d]: \"%s\" "
                                  "is listed twice", i, s);
                mask |= 1u << k;
                lua_pop(L, 1);
            }
            rc->lora_cfg.targets = mask;
            lua_pop(L, 1);
        }
        if (lora_config_check(&rc->lora_cfg, NULL)) lconfig_engine_error(L, ms_error());
        lua_pop(L, 1);
    }
    if (rc->finetune_init) {
        if (model_given)
            lconfig_error(L, "model", "model: not allowed with finetune.init (the architecture "
                          "comes from %s)", rc->finetune_init);
        ModelConfig fc;
        if (model_source_read_config(rc->finetune_init, &fc))
            lconfig_error(L, "finetune.init", "finetune.init: %s", ms_error());
        fc.seq_len = rc->model.seq_len;
        rc->model = fc;
    }
}

void lconfig_read_run(lua_State *L, int idx, RunConfig *rc, const Corpus **corpus) {
    idx = lua_absindex(L, idx);
    run_config_default(rc);
    lpos_begin(L); // one run at a time: what a failed read anchored is dropped here
    luaL_checktype(L, idx, LUA_TTABLE);
    int tied_dummy = 0, device = 0, protocol = 0, precision = -1;
    (void)tied_dummy;
    Field root[] = {
        {"name", F_STR, &rc->name},       {"data", F_TABLE, NULL},  {"seed", F_U64, &rc->seed},
        {"device", F_CHOICE, &device, devices},
        {"precision", F_CHOICE, &precision, precisions},
        {"deterministic", F_BOOL, &rc->deterministic},
        {"model", F_TABLE, NULL},         {"positions", F_TABLE, NULL},
        {"attention", F_TABLE, NULL},     {"train", F_TABLE, NULL}, {"eval", F_TABLE, NULL},
        {"finetune", F_TABLE, NULL},      {"export", F_STR, &rc->export_dir},
    };
    // `data` is a corpus userdata, not a table: check it before the generic pass.
    lua_getfield(L, idx, "data");
    Corpus **cp = luaL_testudata(L, -1, "mslab.corpus");
    if (!cp) lconfig_error(L, "data", "data: expected a corpus from mslab.corpus{...}, got %s",
                           luaL_typename(L, -1));
    *corpus = *cp;
    lua_pop(L, 1);
    lua_pushnil(L); // generic pass over the root, skipping `data`
    while (lua_next(L, idx)) {
        const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        int i;
        for (i = 0; key && i < NFIELDS(root); i++)
            if (!strcmp(root[i].key, key)) break;
        if (!key || i == NFIELDS(root))
            lconfig_error(L, key ? key : "", "%s: unknown key (known here: name, data, seed, "
                          "device, precision, deterministic, model, positions, attention, train, eval, "
                          "finetune, export)",
                          key ? key : "(non-string key)");
        if (strcmp(key, "data")) read_field(L, &root[i], key);
        lua_pop(L, 1);
    }
    if (!lua_isnil(L, (lua_getfield(L, idx, "name"), -1)) && !rc->name[0])
        lconfig_error(L, "name", "name: must not be empty");
    lua_pop(L, 1);
    rc->device = devices[device];
    rc->precision = precision >= 0 ? precisions[precision] : NULL; // NULL: the device's default
    if (precision == 1 && device != 1)
        lconfig_error(L, "precision", "precision \"bf16\" needs device \"cuda\" (device \"%s\" "
                      "computes in fp32: give precision = \"fp32\" or leave it out)", rc->device);

    int t;
    int rope_style = rc->model.rope_style;
    if ((t = sub_table(L, idx, "model"))) {
        Field f[] = {
            {"dim", F_INT, &rc->model.dim},           {"layers", F_INT, &rc->model.layers},
            {"heads", F_INT, &rc->model.heads},       {"kv_heads", F_INT, &rc->model.kv_heads},
            {"ffn", F_INT, &rc->model.ffn},           {"vocab", F_INT, &rc->model.vocab},
            {"tied", F_BOOL, &rc->model.tied},        {"norm_eps", F_FLOAT, &rc->model.norm_eps},
            {"rope_style", F_CHOICE, &rope_style, rope_styles},
        };
        int kv_given = (lua_getfield(L, t, "kv_heads"), !lua_isnil(L, -1));
        lua_pop(L, 1);
        read_table(L, t, "model", f, NFIELDS(f));
        if (!kv_given) rc->model.kv_heads = rc->model.heads; // no GQA unless asked
        lua_pop(L, 1);
    }
    rc->model.rope_style = rope_style;
    if ((t = sub_table(L, idx, "finetune"))) { // the architecture comes from finetune.init
        read_finetune(L, t, rc, sub_table(L, idx, "model") ? (lua_pop(L, 1), 1) : 0);
        lua_pop(L, 1);
    }
    if ((t = sub_table(L, idx, "positions"))) {
        lpos_read(L, t, &rc->pos, &rc->model.rope_base); // lua/lpos.c
        lua_pop(L, 1);
    }
    if ((t = sub_table(L, idx, "attention"))) { // lua/lattention.c
        lattn_read(L, t, "attention", &rc->attention, NULL, rc->attn_layers, &rc->n_attn_layers,
                   RUN_MAX_ATTN_LAYERS, NULL);
        lua_pop(L, 1);
    }
    if ((t = sub_table(L, idx, "train"))) {
        OptimConfig *o = &rc->optim;
        int lr_min_given = (lua_getfield(L, t, "lr_min"), !lua_isnil(L, -1));
        lua_pop(L, 1);
        Field f[] = {
            {"seq", F_INT, &rc->seq},
            {"batch", F_INT, &rc->batch},
            {"steps", F_INT, &o->steps},
            {"lr", F_FLOAT, &o->lr},
            {"lr_min", F_FLOAT, &o->lr_min},
            {"warmup", F_INT, &o->warmup},
            {"weight_decay", F_FLOAT, &o->weight_decay},
            {"beta1", F_FLOAT, &o->beta1},
            {"beta2", F_FLOAT, &o->beta2},
            {"eps", F_FLOAT, &o->eps},
            {"clip", F_FLOAT, &o->clip},
            {"log_every", F_INT, &rc->log_every},
            {"eval_every", F_INT, &rc->eval_every},
            {"eval_batches", F_INT, &rc->eval_batches},
            {"checkpoint_every", F_INT, &rc->checkpoint_every},
            {"checkpoint_dir", F_STR, &rc->checkpoint_dir},
        };
        read_table(L, t, "train", f, NFIELDS(f));
        if (!lr_min_given) o->lr_min = o->lr / 10;
        if (o->warmup > o->steps) o->warmup = o->steps;
        lua_pop(L, 1);
    }
    if ((t = sub_table(L, idx, "eval"))) {
        Field f[] = {{"ppl", F_TABLE, NULL}, {"passkey", F_TABLE, NULL}};
        read_table(L, t, "eval", f, NFIELDS(f));
        int p;
        if ((p = sub_table(L, t, "ppl"))) {
            Field g[] = {
                {"lengths", F_INTLIST, rc->ppl_lengths, NULL, RUN_MAX_LENGTHS, &rc->n_ppl_lengths},
                {"max_tokens", F_INT64, &rc->ppl_max_tokens},
                {"protocol", F_CHOICE, &protocol, ppl_protocols},
                {"protocols", F_TABLE, NULL},
                {"stride", F_INT, &rc->ppl_stride},
                {"data", F_ANY, NULL},
            };
            read_table(L, p, "eval.ppl", g, NFIELDS(g));
            read_ppl_extra(L, p, rc, protocol);
            const Corpus *pc = rc->ppl_corpus;
            if (pc && pc->tokenizer && (*corpus)->tokenizer && strcmp(pc->tokenizer, (*corpus)->tokenizer))
                lconfig_error(L, "eval.ppl.data", "eval.ppl.data: its tokenizer (%s) is not the run "
                              "corpus's (%s)", pc->tokenizer, (*corpus)->tokenizer);
            int stride_given = (lua_getfield(L, p, "stride"), !lua_isnil(L, -1));
            lua_pop(L, 1);
            if (stride_given && rc->ppl_stride <= 0)
                lconfig_error(L, "eval.ppl.stride", "eval.ppl.stride (%d) must be positive",
                              rc->ppl_stride);
            lua_pop(L, 1);
        }
        if ((p = sub_table(L, t, "passkey"))) {
            read_passkey(L, p, rc);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    rc->model.seq_len = rc->seq;
    if (!rc->finetune_init && rc->model.vocab < (*corpus)->vocab &&
        rc->model.vocab == model_config_default().vocab)
        rc->model.vocab = (*corpus)->vocab;
    if (run_config_check(rc)) lconfig_engine_error(L, ms_error());
}

void lconfig_read_corpus(lua_State *L, int idx, CorpusSpec *spec, const char ***paths_out) {
    idx = lua_absindex(L, idx);
    luaL_checktype(L, idx, LUA_TTABLE);
    const char *path = NULL;
    memset(spec, 0, sizeof *spec);
    spec->tokenizer = "byte";
    spec->eval_frac = 0.1;
    spec->cache_dir = ".mslab-cache";
    float eval_frac = 0.1f;
    Field f[] = {
        {"path", F_STR, &path},
        {"paths", F_TABLE, NULL},
        {"tokenizer", F_STR, &spec->tokenizer}, // kept alive by the argument table
        {"eval", F_FLOAT, &eval_frac},
        {"cache", F_STR, &spec->cache_dir},
        {"seed", F_U64, &spec->split_seed},
    };
    read_table(L, idx, "corpus", f, NFIELDS(f));
    size_t tl = strlen(spec->tokenizer);
    if (strcmp(spec->tokenizer, "byte") != 0 && (tl < 5 || strcmp(spec->tokenizer + tl - 4, ".bin") != 0) &&
        !spm_is_model_path(spec->tokenizer))
        lconfig_error(L, "tokenizer", "corpus.tokenizer (\"%s\") must be \"byte\" or the path of a "
                      "llama2.c tokenizer .bin or a SentencePiece .model", spec->tokenizer);
    spec->eval_frac = eval_frac;
    if (!(eval_frac > 0 && eval_frac < 1))
        lconfig_error(L, "eval", "corpus.eval (%g) must be in (0, 1)", eval_frac);
    int n = 0;
    const char **paths = NULL;
    if (path) {
        paths = ms_malloc(sizeof *paths);
        paths[n++] = path;
    }
    int t = sub_table(L, idx, "paths");
    if (t) {
        int len = (int)luaL_len(L, t);
        paths = ms_realloc(paths, sizeof *paths * (size_t)(n + len + 1));
        for (int i = 1; i <= len; i++) {
            if (lua_geti(L, t, i) != LUA_TSTRING) {
                free(paths);
                lconfig_error(L, "paths", "corpus.paths[%d]: expected a string", i);
            }
            paths[n++] = lua_tostring(L, -1); // kept alive by the argument table
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    if (!n) {
        free(paths);
        lconfig_error(L, "", "corpus: give `path` (a file or directory) or `paths` (a list)");
    }
    spec->paths = paths;
    spec->n_paths = n;
    *paths_out = paths;
}
