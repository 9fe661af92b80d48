// common.h: error reporting, checked allocation, seeded RNG, timing, hashing.
// Every engine function that can fail on user input returns an int status (0 = ok) and leaves a
// message retrievable with ms_error(); programming errors (violated shape contracts) abort via
// MS_ASSERT with file:line, as llm.c's *Check wrappers do.
#ifndef MSLAB_COMMON_H
#define MSLAB_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

// ---- errors -----------------------------------------------------------------------------------
// The last error of this thread, as text. ms_fail() formats it and returns -1 so callers can write
// `return ms_fail("corpus %s: empty file", path);`.
int ms_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *ms_error(void);
void ms_clear_error(void);

#define MS_ASSERT(cond, ...)                                                                  \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "%s:%d: assertion failed: %s: ", __FILE__, __LINE__, #cond);      \
            fprintf(stderr, __VA_ARGS__);                                                     \
            fprintf(stderr, "\n");                                                            \
            abort();                                                                          \
        }                                                                                     \
    } while (0)

// Checked allocation: aborts with file:line on out-of-memory (nothing sensible can continue).
void *ms_malloc_at(size_t n, const char *file, int line);
void *ms_calloc_at(size_t count, size_t size, const char *file, int line);
void *ms_realloc_at(void *p, size_t n, const char *file, int line);
#define ms_malloc(n) ms_malloc_at((n), __FILE__, __LINE__)
#define ms_calloc(c, s) ms_calloc_at((c), (s), __FILE__, __LINE__)
#define ms_realloc(p, n) ms_realloc_at((p), (n), __FILE__, __LINE__)
char *ms_strdup(const char *s);

// ---- random numbers -----------------------------------------------------------------------------
// xoshiro256** seeded through splitmix64: fast, reproducible across platforms, state fits a
// checkpoint (4 x u64).
typedef struct { uint64_t s[4]; } Rng;
void rng_seed(Rng *r, uint64_t seed);
uint64_t rng_u64(Rng *r);
double rng_uniform(Rng *r);              // [0, 1)
uint64_t rng_below(Rng *r, uint64_t n);  // uniform in [0, n), unbiased
float rng_normal(Rng *r);                // standard normal (Box-Muller)

// ---- time ---------------------------------------------------------------------------------------
double ms_now(void);  // monotonic seconds
double ms_wall(void); // unix time, seconds

// ---- hashing ------------------------------------------------------------------------------------
// FNV-1a 64; streaming form so large files can be hashed chunk by chunk.
#define MS_FNV_INIT 0xcbf29ce484222325ULL
uint64_t ms_fnv1a(uint64_t h, const void *data, size_t n);
void ms_hex64(uint64_t h, char out[17]);

#endif
