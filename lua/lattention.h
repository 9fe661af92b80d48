// lattention.h: the `attention` section of mslab.run{...} (and the table of mslab.attention{...})
// -> AttnConfig (core/attention.h). A key the kind does not use is an error, as is a bad value;
// messages name the key path and the script line.
#ifndef MSLAB_LUA_ATTENTION_H
#define MSLAB_LUA_ATTENTION_H

#include <lua.h>

#include "../core/attention.h"
#include "../core/run.h"

// Extra keys of mslab.attention{...} objects (RoPE for positions = "reindexed").
typedef struct {
    float base;
    int rope_style;
} LattnExtra;

// Reads the table at stack index t (absolute) into cfg: the kind's defaults first (or *inherit
// when the table names no kind and inherit is given). With layers, also reads `layers`
// ({ [i] = { ... } }, i from 1; each entry inherits the section's config). With extra, accepts
// `base` and `rope_style`. Checks the result (attn_config_check); raises a Lua error naming the
// key on bad input.
void lattn_read(lua_State *L, int t, const char *prefix, AttnConfig *cfg, const AttnConfig *inherit,
                AttnLayerConfig *layers, int *n_layers, int max_layers, LattnExtra *extra);

#endif
