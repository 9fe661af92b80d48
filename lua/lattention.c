// lattention.c: reads attention = { kind = ..., ... } into an AttnConfig. Each knob belongs to
// some kinds (attn_knob_applies): a knob the kind does not use is an error, so a run never differs
// silently from what the script says. Per-layer overrides: layers = { [i] = { ... } } (or a list),
// each entry starting from the section's config (or from its own kind's defaults if it names one).
#include "lattention.h"

#include <lauxlib.h>
#include <stddef.h>
#include <string.h>

#include "../core/common.h"
#include "lconfig.h"

enum { K_INT, K_NUM, K_CHOICE };

static const struct {
    const char *key;
    int type;
    size_t off;
    const char *const *choices;
} keys[] = {
    {"kind", K_CHOICE, offsetof(AttnConfig, kind), attn_kind_names},
    {"eval", K_CHOICE, offsetof(AttnConfig, eval), attn_eval_names},
    {"w", K_INT, offsetof(AttnConfig, w), NULL},
    {"top", K_INT, offsetof(AttnConfig, top), NULL},
    {"ratio", K_NUM, offsetof(AttnConfig, ratio), NULL},
    {"merge", K_INT, offsetof(AttnConfig, merge), NULL},
    {"prefix", K_INT, offsetof(AttnConfig, prefix), NULL},
    {"pool", K_CHOICE, offsetof(AttnConfig, pool), attn_pool_names},
    {"score", K_CHOICE, offsetof(AttnConfig, score), attn_score_names},
    {"select", K_CHOICE, offsetof(AttnConfig, select), attn_select_names},
    {"order", K_CHOICE, offsetof(AttnConfig, order), attn_order_names},
    {"local_groups", K_INT, offsetof(AttnConfig, local_groups), NULL},
    {"select_on", K_CHOICE, offsetof(AttnConfig, select_on), attn_select_on_names},
    {"positions", K_CHOICE, offsetof(AttnConfig, positions), attn_positions_names},
    {"tail", K_CHOICE, offsetof(AttnConfig, tail), attn_tail_names},
    {"block", K_INT, offsetof(AttnConfig, block), NULL},
    {"group", K_INT, offsetof(AttnConfig, group), NULL},
    {"window", K_INT, offsetof(AttnConfig, window), NULL},
};
#define NKEYS ((int)(sizeof keys / sizeof keys[0]))

void lattn_read(lua_State *L, int t, const char *prefix, AttnConfig *cfg, const AttnConfig *inherit,
                AttnLayerConfig *layers, int *n_layers, int max_layers, LattnExtra *extra) {
    char path[160];
    // the kind first: it decides the defaults and which knobs are allowed
    int kind = inherit ? inherit->kind : ATTN_DENSE, kind_given = 0;
    if (lua_getfield(L, t, "kind") != LUA_TNIL) {
        snprintf(path, sizeof path, "%s.kind", prefix);
        kind = lconfig_choice(L, path, attn_kind_names);
        kind_given = 1;
    }
    lua_pop(L, 1);
    *cfg = inherit && !kind_given ? *inherit : attn_config_default(kind);
    int top_given = 0, ratio_given = 0, group_given = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            lconfig_error(L, prefix, "%s: keys must be names, found a %s key", prefix,
                          luaL_typename(L, -2));
        const char *key = lua_tostring(L, -2);
        snprintf(path, sizeof path, "%s.%s", prefix, key);
        if (!strcmp(key, "layers") && layers) {
            lua_pop(L, 1);
            continue; // below, once the section's own knobs are known
        }
        if (extra && !strcmp(key, "base")) {
            if (lua_type(L, -1) != LUA_TNUMBER)
                lconfig_error(L, path, "%s: expected a number, got %s", path, luaL_typename(L, -1));
            extra->base = (float)lua_tonumber(L, -1);
            lua_pop(L, 1);
            continue;
        }
        if (extra && !strcmp(key, "rope_style")) {
            static const char *const styles[] = {"interleaved", "halves", NULL};
            extra->rope_style = lconfig_choice(L, path, styles);
            lua_pop(L, 1);
            continue;
        }
        int i;
        for (i = 0; i < NKEYS; i++)
            if (!strcmp(keys[i].key, key)) break;
        if (i == NKEYS)
            lconfig_error(L, path, "%s: unknown key (known for kind \"%s\": %s%s%s)", path,
                          attn_kind_names[kind], attn_knobs_of(kind), layers ? ", layers" : "",
                          extra ? ", base, rope_style" : "");
        if (!attn_knob_applies(kind, key))
            lconfig_error(L, path, "%s: not a knob of kind \"%s\" (its knobs: %s)", path,
                          attn_kind_names[kind], attn_knobs_of(kind));
        char *dst = (char *)cfg + keys[i].off;
        if (keys[i].type == K_CHOICE) {
            *(int *)dst = lconfig_choice(L, path, keys[i].choices);
        } else if (keys[i].type == K_INT) {
            *(int *)dst = lconfig_int(L, path);
        } else {
            if (lua_type(L, -1) != LUA_TNUMBER)
                lconfig_error(L, path, "%s: expected a number, got %s", path, luaL_typename(L, -1));
            *(double *)dst = lua_tonumber(L, -1);
        }
        top_given |= !strcmp(key, "top");
        ratio_given |= !strcmp(key, "ratio");
        group_given |= !strcmp(key, "group");
        lua_pop(L, 1);
    }
    if (ratio_given && !(cfg->ratio > 0 && cfg->ratio <= 1)) {
        snprintf(path, sizeof path, "%s.ratio", prefix);
        lconfig_error(L, path, "%s (%g) must be in (0, 1]", path, cfg->ratio);
    }
    // ms: a ratio replaces the default top; s2: a group replaces the default ratio
    if (cfg->kind == ATTN_MS && ratio_given && !top_given) cfg->top = 0;
    if (cfg->kind == ATTN_MS && top_given && !ratio_given) cfg->ratio = 0;
    if (cfg->kind == ATTN_S2 && group_given && !ratio_given) cfg->ratio = 0;
    if (cfg->kind == ATTN_S2 && ratio_given && !group_given) cfg->group = 0;
    if (attn_config_check(cfg, prefix)) lconfig_engine_error(L, ms_error());

    if (!layers) return;
    *n_layers = 0;
    if (lua_getfield(L, t, "layers") == LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    snprintf(path, sizeof path, "%s.layers", prefix);
    if (!lua_istable(L, -1))
        lconfig_error(L, path, "%s: expected a table { [layer] = { ... } }, got %s", path,
                      luaL_typename(L, -1));
    int lt = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, lt)) {
        int isint;
        lua_Integer li = lua_tointegerx(L, -2, &isint);
        if (lua_type(L, -2) != LUA_TNUMBER || !isint || li < 1)
            lconfig_error(L, path, "%s: keys must be layer numbers from 1, found %s", path,
                          lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2)
                                                         : luaL_typename(L, -2));
        char lp[160];
        snprintf(lp, sizeof lp, "%s.layers[%lld]", prefix, (long long)li);
        if (!lua_istable(L, -1))
            lconfig_error(L, lp, "%s: expected a table, got %s", lp, luaL_typename(L, -1));
        if (*n_layers >= max_layers)
            lconfig_error(L, path, "%s: at most %d overrides", path, max_layers);
        AttnLayerConfig *lc = &layers[(*n_layers)++];
        lc->layer = (int)li - 1;
        lattn_read(L, lua_gettop(L), lp, &lc->cfg, cfg, NULL, NULL, 0, NULL);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    // a fixed order (lua_next's is not): by layer
    for (int i = 1; i < *n_layers; i++)
        for (int j = i; j > 0 && layers[j].layer < layers[j - 1].layer; j--) {
            AttnLayerConfig tmp = layers[j];
            layers[j] = layers[j - 1];
            layers[j - 1] = tmp;
        }
}
