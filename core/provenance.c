// provenance.c: the machine facts recorded with every run (docs/results-db.md, "Provenance").
#include "provenance.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "common.h"
#ifdef MSLAB_CUDA
#include "../cuda/backend_cuda.h"
#endif

// The first "model name" line of /proc/cpuinfo, or "".
static void cpu_model(char *out, size_t n) {
    out[0] = 0;
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10)) continue;
        char *v = strchr(line, ':');
        if (v) {
            v += 1 + (v[1] == ' ');
            v[strcspn(v, "\n")] = 0;
            snprintf(out, n, "%s", v);
        }
        break;
    }
    fclose(f);
}

// s as a JSON string body: quotes, backslashes and control characters escaped.
static void esc(char *out, size_t n, const char *s) {
    size_t j = 0;
    for (; s && *s && j + 7 < n; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') out[j++] = '\\', out[j++] = (char)c;
        else if (c < 0x20) j += snprintf(out + j, n - j, "\\u%04x", c);
        else out[j++] = (char)c;
    }
    out[j] = 0;
}

char *provenance_json(const char *device, uint64_t seed) {
    char host[256] = "", cpu[256], e_host[300], e_cpu[300], os[400] = "", e_os[500], gpu[300] = "";
    gethostname(host, sizeof host - 1);
    cpu_model(cpu, sizeof cpu);
    struct utsname u;
    if (uname(&u) == 0) snprintf(os, sizeof os, "%s %s %s", u.sysname, u.release, u.machine);
    esc(e_host, sizeof e_host, host);
    esc(e_cpu, sizeof e_cpu, cpu);
    esc(e_os, sizeof e_os, os);
#ifdef MSLAB_CUDA
    if (device && !strcmp(device, "cuda")) esc(gpu, sizeof gpu, backend_cuda_device_name());
#endif
    const char *cvd = getenv("CUDA_VISIBLE_DEVICES");
    char e_cvd[128];
    esc(e_cvd, sizeof e_cvd, cvd ? cvd : "");
    size_t n = 4096;
    char *b = ms_malloc(n);
    snprintf(b, n,
             "{\"host\":\"%s\",\"pid\":%ld,\"cpu\":\"%s\",\"cores\":%ld,\"os\":\"%s\","
             "\"compiler\":\"%s\",\"device\":\"%s\",\"gpu\":\"%s\",\"cuda_visible_devices\":\"%s\","
             "\"seed\":%llu}",
             e_host, (long)getpid(), e_cpu, sysconf(_SC_NPROCESSORS_ONLN), e_os,
#ifdef __VERSION__
             __VERSION__,
#else
             "",
#endif
             device ? device : "", gpu, e_cvd, (unsigned long long)seed);
    return b;
}

double provenance_peak_rss_mb(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru)) return 0;
    return ru.ru_maxrss / 1024.0; // KiB on Linux
}

void provenance_file_hash(const char *path, char out[17]) {
    out[0] = 0;
    FILE *f = path ? fopen(path, "rb") : NULL;
    if (!f) return;
    uint64_t h = MS_FNV_INIT;
    char buf[65536];
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, f)) > 0) h = ms_fnv1a(h, buf, k);
    fclose(f);
    ms_hex64(h, out);
}

void provenance_git(char *rev, size_t n, int *dirty) {
    rev[0] = 0;
    *dirty = 0;
    FILE *f = popen("git rev-parse HEAD 2>/dev/null", "r");
    if (f) {
        if (fgets(rev, (int)n, f)) rev[strcspn(rev, "\n")] = 0;
        pclose(f);
    }
    if (!rev[0]) return;
    f = popen("git status --porcelain --untracked-files=no 2>/dev/null", "r");
    if (f) {
        char line[64];
        if (fgets(line, sizeof line, f)) *dirty = 1;
        pclose(f);
    }
}
