// lsweep.h: mslab.grid{...} and mslab.random{...} (lua/lsweep.c).
#ifndef MSLAB_LUA_SWEEP_H
#define MSLAB_LUA_SWEEP_H

#include <lua.h>

// Adds grid and random to the mslab table on top of the stack.
void lsweep_open(lua_State *L);

#endif
