// host.h: the embedded Lua 5.4 host. Runs an experiment script with the `mslab` module loaded
// (require "mslab" or the global `mslab`). lua/ binds core/; core/ never sees Lua.
#ifndef MSLAB_LUA_HOST_H
#define MSLAB_LUA_HOST_H

// Runs the script; script arguments are visible as the global table `arg` (arg[0] = script).
// Returns the process exit status: 0 ok, 1 script error (printed to stderr as file:line: message
// and kept in ms_error()).
int lua_host_run(const char *script, const char *db_path, int argc, char **argv);

#endif
