// host.h: the embedded Lua 5.4 host. Runs an experiment script with the `mslab` module loaded
// (require "mslab" or the global `mslab`). lua/ binds core/; core/ never sees Lua.
#ifndef MSLAB_LUA_HOST_H
#define MSLAB_LUA_HOST_H

// `mslab run` options (docs/sweeps.md).
typedef struct {
    int force;           // rerun every run, done ones too (a new row each)
    int retry_failed;    // rerun failed runs (a new row each)
    int dry_run;         // print the plan (what each run call would do) and run nothing
    int jobs;            // > 1: that many runs at once, each a child `mslab run SCRIPT --only HASH`
    const char *devices; // "0,1,...": one run per device at a time; CUDA_VISIBLE_DEVICES per child
    const char *only;    // run only the run with this config hash (what --jobs children get)
    double stale_s;      // a 'running' row of another host whose heartbeat is older is resumed
    const char *exe;     // the mslab binary children are started from (default /proc/self/exe)
} HostOptions;

// Runs the script; script arguments are visible as the global table `arg` (arg[0] = script).
// Returns the process exit status: 0 ok, 1 script error (printed to stderr as file:line: message
// and kept in ms_error()). lua_host_run uses the default options.
int lua_host_run(const char *script, const char *db_path, int argc, char **argv);
int lua_host_run_opts(const char *script, const char *db_path, int argc, char **argv,
                      const HostOptions *o);

#endif
