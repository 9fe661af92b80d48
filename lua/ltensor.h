// ltensor.h: mslab.tensor (n-d arrays: create, seeded random, slice, NumPy .npy load/save) and
// mslab.attention{...} (attention objects callable on tensors, attn:selection(q, k), ...).
#ifndef MSLAB_LUA_TENSOR_H
#define MSLAB_LUA_TENSOR_H

#include <lua.h>

// Adds `tensor` and `attention` to the module table on top of the stack and registers the types.
void ltensor_open(lua_State *L);

#endif
