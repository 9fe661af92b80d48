// The test runner: runs every registered test (or those whose name contains argv[1]) and ends with
// the line `N passed, M failed, K skipped`.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/common.h"
#include "test.h"

int test_failed_checks;
const char *test_skip_reason;

#define X(name) void test_##name(void);
#include "registry.h"
#undef X

static const struct { const char *name; void (*fn)(void); } tests[] = {
#define X(name) {#name, test_##name},
#include "registry.h"
#undef X
};

static char tmp_root[256];

const char *test_shared_path(const char *rel) {
    static char buf[8][1024];
    static int k;
    const char *root = getenv("MSLAB_SHARED");
    if (!root) root = "../shared";
    char *out = buf[k++ % 8];
    snprintf(out, 1024, "%s/%s", root, rel);
    return access(out, R_OK) == 0 ? out : NULL;
}

void *test_read_file(const char *path, size_t *n) {
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc(size > 0 ? (size_t)size + 1 : 1);
    *n = size > 0 ? fread(buf, 1, (size_t)size, f) : 0;
    buf[*n] = 0;
    fclose(f);
    return buf;
}

void test_write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) { fprintf(stderr, "  cannot write %s\n", path); abort(); }
    if (n && fwrite(data, 1, n, f) != n) abort();
    fclose(f);
}

static char *kept_paths[1024];
char *test_path_join(const char *a, const char *b) {
    static int k;
    size_t n = strlen(a) + strlen(b) + 2;
    char *out = malloc(n);
    snprintf(out, n, "%s/%s", a, b);
    if (k < 1024) kept_paths[k++] = out; // reachable, so leak checkers stay quiet
    return out;
}

int test_close_to(const char *what, const float *a, const double *ref, size_t n, double atol,
                  double rtol) {
    double worst = 0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(a[i] - ref[i]) / (atol + rtol * fabs(ref[i]));
        if (!(e <= worst)) worst = e, wi = i;
    }
    CHECK(worst <= 1.0);
    if (!(worst <= 1.0))
        fprintf(stderr, "    ^ %s: [%zu] %.9g vs reference %.9g (%.3g x tolerance)\n", what, wi,
                a[wi], ref[wi], worst);
    return worst <= 1.0;
}

void test_write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "  cannot write %s\n", path);
        test_failed_checks++;
        return;
    }
    fputs(text, f);
    fclose(f);
}

const char *test_tmpdir(void) {
    static char buf[512];
    static int n;
    snprintf(buf, sizeof buf, "%s/t%d", tmp_root, n++);
    mkdir(buf, 0755);
    return buf;
}

double test_max_rel_err(const float *a, const float *b, size_t n, double floor_) {
    double worst = 0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]) / fmax(fabs((double)b[i]), floor_);
        if (!(d <= worst)) { worst = d; wi = i; }
    }
    if (worst > 0) fprintf(stderr, "    (worst at %zu: %.9g vs %.9g)\n", wi, a[wi], b[wi]);
    return worst;
}

static void cleanup(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp_root);
}

int main(int argc, char **argv) {
    snprintf(tmp_root, sizeof tmp_root, "/tmp/mslab-test-XXXXXX");
    if (!mkdtemp(tmp_root)) { perror("mkdtemp"); return 2; }
    atexit(cleanup);
    int passed = 0, failed = 0, skipped = 0;
    size_t n = sizeof tests / sizeof tests[0];
    for (size_t i = 0; i < n; i++) {
        if (argc > 1 && !strstr(tests[i].name, argv[1])) continue;
        test_failed_checks = 0;
        test_skip_reason = NULL;
        double t0 = ms_now();
        tests[i].fn();
        double dt = ms_now() - t0;
        if (test_failed_checks) {
            failed++;
            printf("FAIL %s (%d checks, %.2fs)\n", tests[i].name, test_failed_checks, dt);
        } else if (test_skip_reason) {
            skipped++;
            printf("skip %s: %s\n", tests[i].name, test_skip_reason);
        } else {
            passed++;
            printf("ok   %s (%.2fs)\n", tests[i].name, dt);
        }
        fflush(stdout);
    }
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed ? 1 : 0;
}
