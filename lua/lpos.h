// lpos.h: the `positions` section of mslab.run{...} -> PosConfig (core/posenc.h). Schedules may be
// Lua functions: they are anchored in the registry and called through PosConfig's callback while
// the run executes; lpos_release drops them after the run.
#ifndef MSLAB_LUA_POS_H
#define MSLAB_LUA_POS_H

#include <lua.h>

#include "../core/posenc.h"

// Reads the table at stack index t (absolute) into pc; the base goes to *base. Raises a Lua
// error naming the key on bad input (unknown key, wrong type, a key the kind does not use).
void lpos_read(lua_State *L, int t, PosConfig *pc, float *base);
void lpos_release(lua_State *L, PosConfig *pc);
// Before reading a run's config: drops schedule functions a failed earlier read left anchored.
void lpos_begin(lua_State *L);

#endif
