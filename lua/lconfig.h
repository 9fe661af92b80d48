// lconfig.h: Lua config tables -> validated C configs. Unknown keys and wrong types are errors
// naming the key path ("model.heads: expected an integer, got string").
#ifndef MSLAB_LUA_CONFIG_H
#define MSLAB_LUA_CONFIG_H

#include <lua.h>

#include "../core/data.h"
#include "../core/run.h"

// Reads the table at stack index idx into rc (defaults first). The corpus userdata under `data`
// is returned through *corpus. Raises a Lua error (with the caller's file:line) on bad input.
void lconfig_read_run(lua_State *L, int idx, RunConfig *rc, const Corpus **corpus);
void lconfig_read_corpus(lua_State *L, int idx, CorpusSpec *spec, const char ***paths_out);

// Raises "FILE:LINE: key.path: message" where the line is that of the key inside the calling
// script's table when it can be found, else the line of the call.
_Noreturn void lconfig_error(lua_State *L, const char *key_path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

// Typed reads of the value on top of the stack for key `path`; a wrong type or value is a Lua
// error naming the key and the script line.
int lconfig_int(lua_State *L, const char *path);
double lconfig_number(lua_State *L, const char *path);
int lconfig_choice(lua_State *L, const char *path, const char *const *names); // index in names
// Raises an engine validation message ("model.heads (6) must ...") at the line of its key.
_Noreturn void lconfig_engine_error(lua_State *L, const char *msg);

#endif
