// lpos.c: reads positions = { kind = ..., ... } into a PosConfig. Each key says which kinds use
// it, so a key the kind ignores is an error (a run never silently differs from what was written).
// Schedules are a number, { value, double_every, max } or a Lua function of the step.
#include "lpos.h"

#include <lauxlib.h>
#include <string.h>

#include "../core/common.h"
#include "lconfig.h"

enum { K_NUM, K_INT, K_BOOL, K_CHOICE, K_SCHED, K_INFER };

#define BIT(k) (1u << (k))
#define SCALED (BIT(POS_PI) | BIT(POS_NTK) | BIT(POS_DYNAMIC_NTK) | BIT(POS_YARN) | BIT(POS_CRD_NTK))
#define ALL ((1u << POS_NKINDS) - 1)

enum {
    KEY_KIND, KEY_BASE, KEY_SCALE, KEY_ORIG_LENGTH, KEY_BETA_FAST, KEY_BETA_SLOW, KEY_ATTN_FACTOR,
    KEY_TEMPERATURE, KEY_CYCLIC, KEY_CYCLE, KEY_OFFSET, KEY_OFFSET_MAX, KEY_TRUNCATION, KEY_NTK,
    KEY_NTK_LENGTH, KEY_INFER_BASE, KEY_INFER_SCALE, NKEYS
};

static const struct {
    const char *key;
    int type;
    unsigned kinds; // the kinds that use the key
    const char *const *choices;
} keys[NKEYS] = {
    [KEY_KIND] = {"kind", K_CHOICE, ALL, pos_kind_names},
    [KEY_BASE] = {"base", K_NUM, ALL & ~BIT(POS_NONE), NULL},
    [KEY_SCALE] = {"scale", K_SCHED, SCALED, NULL},
    [KEY_ORIG_LENGTH] = {"orig_length", K_INT, BIT(POS_DYNAMIC_NTK) | BIT(POS_YARN) | BIT(POS_CRD_NTK), NULL},
    [KEY_BETA_FAST] = {"beta_fast", K_NUM, BIT(POS_YARN), NULL},
    [KEY_BETA_SLOW] = {"beta_slow", K_NUM, BIT(POS_YARN), NULL},
    [KEY_ATTN_FACTOR] = {"attn_factor", K_NUM, BIT(POS_YARN), NULL},
    [KEY_TEMPERATURE] = {"temperature", K_BOOL, BIT(POS_YARN), NULL},
    [KEY_CYCLIC] = {"cyclic", K_BOOL, BIT(POS_CRD_NTK), NULL},
    [KEY_CYCLE] = {"cycle", K_SCHED, BIT(POS_CRD_NTK), NULL},
    [KEY_OFFSET] = {"offset", K_CHOICE, BIT(POS_CRD_NTK), crd_offset_names},
    [KEY_OFFSET_MAX] = {"offset_max", K_SCHED, BIT(POS_CRD_NTK), NULL},
    [KEY_TRUNCATION] = {"truncation", K_CHOICE, BIT(POS_CRD_NTK), crd_truncation_names},
    [KEY_NTK] = {"ntk", K_CHOICE, BIT(POS_CRD_NTK), crd_ntk_names},
    [KEY_NTK_LENGTH] = {"ntk_length", K_NUM, BIT(POS_CRD_NTK), NULL},
    [KEY_INFER_BASE] = {"infer_base", K_CHOICE, BIT(POS_CRD_NTK), crd_infer_names},
    [KEY_INFER_SCALE] = {"infer_scale", K_INFER, BIT(POS_CRD_NTK), NULL},
};

// ---- Lua functions as schedules ---------------------------------------------------------------

// Schedule functions live in one registry table that lpos_begin replaces before each run's config
// is read: a config that fails after some functions were anchored (lconfig_error longjmps past
// lpos_release) leaves them in the old table, which is then collected, instead of leaking
// registry references for the rest of the script (sweeps read many configs).
#define SCHED_KEY "mslab.schedules"

void lpos_begin(lua_State *L) {
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, SCHED_KEY);
}

static int call_lua(void *ctx, int id, int arg, double *out) {
    lua_State *L = ctx;
    lua_getfield(L, LUA_REGISTRYINDEX, SCHED_KEY);
    lua_rawgeti(L, -1, id);
    lua_remove(L, -2);
    lua_pushinteger(L, arg);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        const char *e = lua_tostring(L, -1);
        ms_fail("%s", e ? e : "(error object is not a string)");
        lua_pop(L, 1);
        return -1;
    }
    int ok = lua_type(L, -1) == LUA_TNUMBER;
    if (ok) *out = lua_tonumber(L, -1);
    else ms_fail("returned %s, not a number", luaL_typename(L, -1));
    lua_pop(L, 1);
    return ok ? 0 : -1;
}

// The function on top of the stack becomes s's callback (popped).
static void anchor_function(lua_State *L, PosSchedule *s) {
    lua_Debug ar;
    lua_pushvalue(L, -1);
    lua_getinfo(L, ">S", &ar);
    snprintf(s->desc, sizeof s->desc, "function at %s:%d", ar.short_src, ar.linedefined);
    s->fn = call_lua;
    s->ctx = L;
    if (lua_getfield(L, LUA_REGISTRYINDEX, SCHED_KEY) != LUA_TTABLE) {
        lua_pop(L, 1);
        lpos_begin(L);
        lua_getfield(L, LUA_REGISTRYINDEX, SCHED_KEY);
    }
    lua_insert(L, -2);             // table below the function
    s->id = luaL_ref(L, -2);       // pops the function
    lua_pop(L, 1);
    s->set = 1;
}

static void schedule(lua_State *L, const char *path, PosSchedule *s, const char *argword) {
    int t = lua_type(L, -1);
    if (t == LUA_TNUMBER) {
        s->value = lua_tonumber(L, -1);
        s->set = 1;
    } else if (t == LUA_TFUNCTION) {
        lua_pushvalue(L, -1);
        anchor_function(L, s);
    } else if (t == LUA_TTABLE) {
        char sub[128];
        int has_value = 0;
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
            snprintf(sub, sizeof sub, "%s.%s", path, k);
            if (!strcmp(k, "value")) s->value = lconfig_number(L, sub), has_value = 1;
            else if (!strcmp(k, "double_every")) s->double_every = lconfig_int(L, sub);
            else if (!strcmp(k, "max")) s->max = lconfig_number(L, sub);
            else lconfig_error(L, sub, "%s: unknown key (known here: value, double_every, max)", sub);
            lua_pop(L, 1);
        }
        if (!has_value) lconfig_error(L, path, "%s.value: required in a schedule table", path);
        s->set = 1;
    } else {
        lconfig_error(L, path, "%s: expected a number, a table { value, double_every, max } or a "
                      "function of the %s, got %s", path, argword, luaL_typename(L, -1));
    }
}

// infer_scale: a number, a function of the eval length, or a table length -> S.
static void infer_scale(lua_State *L, const char *path, PosConfig *pc) {
    if (lua_type(L, -1) != LUA_TTABLE) {
        if (lua_type(L, -1) != LUA_TNUMBER && lua_type(L, -1) != LUA_TFUNCTION)
            lconfig_error(L, path, "%s: expected a number, a table length -> S or a function of "
                          "the length, got %s", path, luaL_typename(L, -1));
        schedule(L, path, &pc->infer_scale, "length");
        return;
    }
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        int isint;
        lua_Integer len = lua_tointegerx(L, -2, &isint);
        if (lua_type(L, -2) != LUA_TNUMBER || !isint || len <= 0 || len > 1 << 30)
            lconfig_error(L, path, "%s: keys must be eval lengths (positive integers), found %s",
                          path, luaL_typename(L, -2));
        if (pc->n_infer == POS_MAX_INFER)
            lconfig_error(L, path, "%s: at most %d lengths", path, POS_MAX_INFER);
        char sub[160];
        snprintf(sub, sizeof sub, "%s[%lld]", path, (long long)len);
        pc->infer_lengths[pc->n_infer] = (int)len;
        pc->infer_values[pc->n_infer++] = lconfig_number(L, sub);
        lua_pop(L, 1);
    }
    // lua_next's order is arbitrary: sort by length so the config JSON is canonical
    for (int i = 1; i < pc->n_infer; i++)
        for (int j = i; j > 0 && pc->infer_lengths[j - 1] > pc->infer_lengths[j]; j--) {
            int tl = pc->infer_lengths[j];
            double tv = pc->infer_values[j];
            pc->infer_lengths[j] = pc->infer_lengths[j - 1], pc->infer_values[j] = pc->infer_values[j - 1];
            pc->infer_lengths[j - 1] = tl, pc->infer_values[j - 1] = tv;
        }
}

// ---- the section ------------------------------------------------------------------------------

void lpos_read(lua_State *L, int t, PosConfig *pc, float *base) {
    if (lua_getfield(L, t, "kind") != LUA_TNIL) pc->kind = lconfig_choice(L, "positions.kind", pos_kind_names);
    lua_pop(L, 1);
    unsigned given = 0;
    char path[128];
    lua_pushnil(L);
    while (lua_next(L, t)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            lconfig_error(L, "positions", "positions: keys must be names, found a %s key",
                          luaL_typename(L, -2));
        const char *key = lua_tostring(L, -2);
        snprintf(path, sizeof path, "positions.%s", key);
        int i;
        for (i = 0; i < NKEYS; i++)
            if (!strcmp(keys[i].key, key)) break;
        if (i == NKEYS) {
            char known[512] = "";
            for (int j = 0; j < NKEYS; j++)
                snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", j ? ", " : "",
                         keys[j].key);
            lconfig_error(L, path, "%s: unknown key (known here: %s)", path, known);
        }
        if (!(keys[i].kinds & BIT(pc->kind))) {
            char users[128] = "";
            for (int k = 0; k < POS_NKINDS; k++)
                if (keys[i].kinds & BIT(k))
                    snprintf(users + strlen(users), sizeof users - strlen(users), "%s%s",
                             users[0] ? ", " : "", pos_kind_names[k]);
            lconfig_error(L, path, "%s: not used by kind \"%s\" (used by: %s)", path,
                          pos_kind_names[pc->kind], users);
        }
        given |= 1u << i;
        int v = 0;
        switch (keys[i].type) { // types first, then where the value goes
        case K_BOOL:
            if (lua_type(L, -1) != LUA_TBOOLEAN)
                lconfig_error(L, path, "%s: expected a boolean, got %s", path, luaL_typename(L, -1));
            *(i == KEY_CYCLIC ? &pc->cyclic : &pc->temperature) = lua_toboolean(L, -1);
            break;
        case K_CHOICE: v = lconfig_choice(L, path, keys[i].choices); break;
        case K_NUM: (void)lconfig_number(L, path); break;
        case K_INT: v = lconfig_int(L, path); break;
        }
        switch (i) {
        case KEY_BASE: *base = (float)lua_tonumber(L, -1); break;
        case KEY_SCALE: schedule(L, path, &pc->scale, "step"); break;
        case KEY_ORIG_LENGTH:
            if (v <= 0) lconfig_error(L, path, "%s (%d) must be positive", path, v);
            pc->orig_length = v;
            break;
        case KEY_BETA_FAST: pc->beta_fast = lua_tonumber(L, -1); break;
        case KEY_BETA_SLOW: pc->beta_slow = lua_tonumber(L, -1); break;
        case KEY_ATTN_FACTOR: pc->attn_factor = lua_tonumber(L, -1); break;
        case KEY_CYCLE: schedule(L, path, &pc->cycle, "step"); break;
        case KEY_OFFSET: pc->offset = v; break;
        case KEY_OFFSET_MAX: schedule(L, path, &pc->offset_max, "step"); break;
        case KEY_TRUNCATION: pc->truncation = v; break;
        case KEY_NTK: pc->ntk = v; break;
        case KEY_NTK_LENGTH:
            pc->ntk_length = lua_tonumber(L, -1);
            if (!(pc->ntk_length > 0))
                lconfig_error(L, path, "%s (%g) must be positive", path, pc->ntk_length);
            break;
        case KEY_INFER_BASE: pc->infer_base = v; break;
        case KEY_INFER_SCALE: infer_scale(L, path, pc); break;
        }
        lua_pop(L, 1);
    }
    // keys that only mean something together with another choice
#define GIVEN(i) (given & (1u << (i)))
    if (GIVEN(KEY_OFFSET_MAX) && pc->cyclic)
        lconfig_error(L, "positions.offset_max",
                      "positions.offset_max: only used with positions.cyclic = false");
    if (GIVEN(KEY_TRUNCATION) && !pc->cyclic)
        lconfig_error(L, "positions.truncation",
                      "positions.truncation: only used with positions.cyclic = true");
    if (GIVEN(KEY_NTK_LENGTH) && pc->ntk != CRD_NTK_FIXED_LENGTH)
        lconfig_error(L, "positions.ntk_length",
                      "positions.ntk_length: only used with positions.ntk = \"fixed-length\"");
    if (GIVEN(KEY_OFFSET_MAX) && pc->offset == CRD_OFFSET_NONE)
        lconfig_error(L, "positions.offset_max",
                      "positions.offset_max: not used with positions.offset = \"none\"");
#undef GIVEN
}

void lpos_release(lua_State *L, PosConfig *pc) {
    PosSchedule *s[] = {&pc->scale, &pc->cycle, &pc->offset_max, &pc->infer_scale};
    int have = lua_getfield(L, LUA_REGISTRYINDEX, SCHED_KEY) == LUA_TTABLE;
    for (int i = 0; i < 4; i++)
        if (s[i]->fn) {
            if (have) luaL_unref(L, -1, s[i]->id);
            s[i]->fn = NULL;
        }
    lua_pop(L, 1);
}
