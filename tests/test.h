// test.h: a tiny test harness. A test is `TEST(name) { ... }` in any tests/test_*.c file; the
// Makefile collects the names into tests/registry.h. Checks record a failure and carry on, so one
// run reports every broken value; SKIP ends a test that lacks its data (e.g. ../shared absent).
#ifndef MSLAB_TEST_H
#define MSLAB_TEST_H

#include <math.h>
#include <stdio.h>

extern int test_failed_checks;   // failures in the current test
extern const char *test_skip_reason;

#define TEST(name) void test_##name(void)

#define CHECK(cond)                                                                           \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);        \
            test_failed_checks++;                                                             \
        }                                                                                     \
    } while (0)

// |a - b| <= tol (absolute)
#define CHECK_NEAR(a, b, tol)                                                                 \
    do {                                                                                      \
        double a_ = (a), b_ = (b), t_ = (tol);                                                \
        if (!(fabs(a_ - b_) <= t_)) {                                                         \
            fprintf(stderr, "  %s:%d: %s = %.9g, %s = %.9g, |diff| %.3g > %.3g\n", __FILE__,  \
                    __LINE__, #a, a_, #b, b_, fabs(a_ - b_), t_);                             \
            test_failed_checks++;                                                             \
        }                                                                                     \
    } while (0)

// relative: |a - b| <= tol * max(|a|, |b|, floor)
#define CHECK_REL(a, b, tol, floor_)                                                          \
    do {                                                                                      \
        double a_ = (a), b_ = (b), t_ = (tol), m_ = fmax(fmax(fabs(a_), fabs(b_)), (floor_)); \
        if (!(fabs(a_ - b_) <= t_ * m_)) {                                                    \
            fprintf(stderr, "  %s:%d: %s = %.9g, %s = %.9g, rel %.3g > %.3g\n", __FILE__,     \
                    __LINE__, #a, a_, #b, b_, fabs(a_ - b_) / m_, t_);                        \
            test_failed_checks++;                                                             \
        }                                                                                     \
    } while (0)

#define CHECK_STR(a, b)                                                                       \
    do {                                                                                      \
        const char *a_ = (a), *b_ = (b);                                                      \
        if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                              \
            fprintf(stderr, "  %s:%d: %s = \"%s\", expected \"%s\"\n", __FILE__, __LINE__,    \
                    #a, a_ ? a_ : "(null)", b_ ? b_ : "(null)");                              \
            test_failed_checks++;                                                             \
        }                                                                                     \
    } while (0)

#define SKIP(reason)                                                                          \
    do {                                                                                      \
        test_skip_reason = (reason);                                                          \
        return;                                                                               \
    } while (0)

// Paths to shared data: ../shared relative to the repository root (override: MSLAB_SHARED).
const char *test_shared_path(const char *rel); // NULL when absent
// Whole-file helpers: read returns a malloc'd buffer with a NUL after the n bytes (NULL, n = 0 when
// the file cannot be read); write creates or truncates the file with the text.
void *test_read_file(const char *path, size_t *n);
void test_write_file(const char *path, const char *text);
void test_write_bytes(const char *path, const void *data, size_t n); // aborts when it cannot
// "a/b" in memory that stays valid for the whole run (the strings are few and small)
char *test_path_join(const char *a, const char *b);
// max over i of |a[i] - ref[i]| / (atol + rtol |ref[i]|) must be <= 1 (a CHECK; the worst element
// is reported under `what`); returns whether it is
int test_close_to(const char *what, const float *a, const double *ref, size_t n, double atol,
                  double rtol);

// Runs `body` as <tmpdir>/bad.lua (against <tmpdir>/<db>) after a prelude that opens `corpus` as
// `c`; the script must fail (a CHECK); returns its error text from "bad.lua:" on (test_lua.c).
const char *test_script_error(const char *corpus, const char *db, const char *body);

// results.db in tests (test_db.c): the first column of the first row ("(no row)", "NULL"; a failing
// query is a CHECK failure), the number of rows, and the first value from a database file opened
// read-only ("(no db)" when it cannot be opened). The text stays valid until the next call.
typedef struct Store Store;
const char *test_db_first(Store *s, const char *sql);
int test_db_rows(Store *s, const char *sql);
const char *test_db_value(const char *db, const char *sql);

// A fresh temporary directory for this test (removed at exit).
const char *test_tmpdir(void);

// Compares two float arrays: max |a-b| / max(|b|, floor) over all elements; prints the worst index.
double test_max_rel_err(const float *a, const float *b, size_t n, double floor_);

#endif
