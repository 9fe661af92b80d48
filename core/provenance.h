// provenance.h: where and how a run ran, as one JSON object for runs.provenance_json: host, pid,
// CPU model, cores, OS, compiler, SQLite and GPU (CUDA builds) versions, seed. Start/end/wall time,
// git revision and the script's content hash have their own runs columns.
#ifndef MSLAB_PROVENANCE_H
#define MSLAB_PROVENANCE_H

#include <stddef.h>
#include <stdint.h>

// malloc'd JSON object; device is the run's device ("cpu", "cuda").
char *provenance_json(const char *device, uint64_t seed);
// Peak resident set of this process so far (getrusage), MiB. With --jobs each run is its own
// process; runs of one sequential script share the process, so later runs report the max so far.
double provenance_peak_rss_mb(void);
// FNV-1a 64 of a file's bytes as 16 hex digits; "" when it cannot be read.
void provenance_file_hash(const char *path, char out[17]);
// The checkout's git revision ("" outside a git checkout or without git) and whether tracked files
// differ from it.
void provenance_git(char *rev, size_t n, int *dirty);

#endif
