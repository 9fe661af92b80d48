// bench_record.c: `mslab bench-record` (bench_record.h): the attention benchmark's TSVs -> a table
// and one results.db run. What lands where is documented in docs/bench.md and docs/results-db.md.
#include "bench_record.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "provenance.h"
#include "store.h"

void bench_table_free(BenchTable *t) {
    for (int i = 0; i < t->n; i++) free(t->r[i].extra);
    free(t->r);
    memset(t, 0, sizeof *t);
}

// A number, or "n/a" (-1). Anything else: 1.
static int parse_value(const char *s, double *v) {
    if (!strcmp(s, "n/a") || !strcmp(s, "nan") || !strcmp(s, "-")) return *v = -1, 0;
    char *end;
    errno = 0;
    *v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(*v) || *v < 0) return 1;
    return 0;
}

static int name_ok(const char *s, size_t cap) {
    if (!*s || strlen(s) >= cap) return 0;
    for (; *s; s++)
        if (isspace((unsigned char)*s)) return 0;
    return 1;
}

// "# mslab-gpu-bench --attn: DEVICE; ... median of R ...": the device and the repetitions.
static void parse_comment(const char *line, BenchTable *t) {
    const char *p = strstr(line, "--attn: ");
    if (p && !t->device[0]) {
        p += 8;
        size_t n = strcspn(p, ";\n");
        if (n >= sizeof t->device) n = sizeof t->device - 1;
        memcpy(t->device, p, n);
        t->device[n] = 0;
    }
    const char *m = strstr(line, "median of ");
    if (m && !t->reps) t->reps = atoi(m + 10);
}

int bench_read_tsv(const char *path, int peer, BenchTable *t) {
    FILE *f = fopen(path, "r");
    if (!f) return ms_fail("%s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0, rc = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        const char *s = line;
        while (*s == ' ') s++;
        if (*s == '#') {
            parse_comment(s, t);
            continue;
        }
        if (!*s) continue;
        char *field[7] = {0};
        int nf = 0;
        for (char *p = line; nf < 7;) {
            field[nf++] = p;
            char *tab = strchr(p, '\t');
            if (!tab) break;
            *tab = 0;
            p = tab + 1;
        }
        if (nf < 5 || nf > 6) {
            rc = ms_fail("%s:%d: expected 5 or 6 tab-separated fields (kernel, pass, N, ms, tflops"
                         "[, extra]), got %d", path, lineno, nf);
            break;
        }
        BenchRow r = {.peer = peer};
        char *end;
        if (!name_ok(field[0], sizeof r.kernel) || !name_ok(field[1], sizeof r.pass)) {
            rc = ms_fail("%s:%d: kernel \"%s\" / pass \"%s\": want names without spaces", path,
                         lineno, field[0], field[1]);
            break;
        }
        strcpy(r.kernel, field[0]);
        strcpy(r.pass, field[1]);
        errno = 0;
        r.N = strtoll(field[2], &end, 10);
        if (end == field[2] || *end || errno || r.N <= 0) {
            rc = ms_fail("%s:%d: N \"%s\" is not a positive integer", path, lineno, field[2]);
            break;
        }
        if (parse_value(field[3], &r.ms) || parse_value(field[4], &r.tflops)) {
            rc = ms_fail("%s:%d: ms \"%s\" / tflops \"%s\": want a non-negative number or n/a", path,
                         lineno, field[3], field[4]);
            break;
        }
        if (r.ms == 0) r.ms = -1; // a zero time is no measurement
        r.extra = ms_strdup(nf == 6 ? field[5] : "");
        t->r = ms_realloc(t->r, sizeof *t->r * (size_t)(t->n + 1));
        t->r[t->n++] = r;
    }
    free(line);
    fclose(f);
    return rc;
}

double bench_extra(const BenchRow *r, const char *key) {
    size_t k = strlen(key);
    for (const char *p = r->extra; p && *p;) {
        if (!strncmp(p, key, k) && p[k] == '=') {
            char *end;
            double v = strtod(p + k + 1, &end);
            return end != p + k + 1 && (*end == ';' || !*end) ? v : NAN;
        }
        p = strchr(p, ';');
        if (p) p++;
    }
    return NAN;
}

const char *bench_peer_of(const char *kernel) {
    size_t n = strcspn(kernel, "-");
    if (n == 5 && !strncmp(kernel, "dense", 5)) return "fa2";
    if (n == 2 && !strncmp(kernel, "ms", 2)) return "torch-ms";
    if (n == 4 && !strncmp(kernel, "moba", 4)) return "flex-moba";
    // training steps of the 162M LM (mslab-gpu-bench --lm) vs eager PyTorch at the same B x T
    if (n == 2 && !strncmp(kernel, "lm", 2)) return "torch-eager-lm";
    return NULL;
}

// The time of (kernel, pass, N) among the peers' rows; -1 when missing or n/a.
static double peer_ms(const BenchTable *t, const char *kernel, const char *pass, int64_t N) {
    for (int i = 0; i < t->n; i++) {
        const BenchRow *x = &t->r[i];
        if (x->peer && x->N == N && !strcmp(x->kernel, kernel) && !strcmp(x->pass, pass))
            return x->ms;
    }
    return -1;
}

double bench_x_fa2(const BenchTable *t, const BenchRow *r) {
    if (r->ms <= 0 || (strcmp(r->pass, "fwd") && strcmp(r->pass, "fwdbwd"))) return NAN;
    double f = peer_ms(t, "fa2", r->pass, r->N);
    return f > 0 ? f / r->ms : NAN;
}

// Our ms / moba fwd and fwdbwd rows include the selection; torch-ms does too (its selection runs
// inside the timed call), flex-moba times its block-mask selection as a row of its own: add it, so
// both sides of the ratio select and attend.
double bench_x_peer(const BenchTable *t, const BenchRow *r) {
    const char *p = bench_peer_of(r->kernel);
    if (r->peer || !p || r->ms <= 0) return NAN;
    double f = peer_ms(t, p, r->pass, r->N);
    if (f > 0 && !strcmp(p, "flex-moba") && strcmp(r->pass, "select")) {
        double sel = peer_ms(t, p, "select", r->N);
        f = sel > 0 ? f + sel : -1;
    }
    return f > 0 ? f / r->ms : NAN;
}

// ---- the table --------------------------------------------------------------------------------
static int cmp_rows(const void *a, const void *b) {
    const BenchRow *x = *(const BenchRow *const *)a, *y = *(const BenchRow *const *)b;
    if (x->N != y->N) return x->N < y->N ? -1 : 1;
    if (x->peer != y->peer) return x->peer - y->peer;
    return x < y ? -1 : x > y; // file order otherwise
}

static void fmt(char *buf, size_t n, const char *f, double v) {
    if (isfinite(v) && v >= 0) snprintf(buf, n, f, v);
    else snprintf(buf, n, "-");
}

static void print_table(const BenchTable *t, FILE *out) {
    const BenchRow **ord = ms_malloc(sizeof *ord * (size_t)(t->n ? t->n : 1));
    for (int i = 0; i < t->n; i++) ord[i] = &t->r[i];
    qsort(ord, (size_t)t->n, sizeof *ord, cmp_rows);
    if (t->device[0]) fprintf(out, "# %s\n", t->device);
    fprintf(out, "%-15s %-7s %8s %11s %9s %7s %7s  %s\n", "kernel", "pass", "N", "ms", "TFLOP/s",
            "x FA2", "x peer", "notes");
    for (int i = 0; i < t->n; i++) {
        const BenchRow *r = ord[i];
        char ms[32], tf[32], xf[32], xp[32], notes[300] = "";
        if (r->ms > 0) snprintf(ms, sizeof ms, "%.3f", r->ms);
        else snprintf(ms, sizeof ms, "n/a");
        fmt(tf, sizeof tf, "%.1f", r->tflops > 0 ? r->tflops : NAN);
        fmt(xf, sizeof xf, "%.2f", bench_x_fa2(t, r));
        fmt(xp, sizeof xp, "%.2f", bench_x_peer(t, r));
        double share = bench_extra(r, "share"), peak = bench_extra(r, "peak_bytes"),
               io = bench_extra(r, "io_bytes"), gib = bench_extra(r, "peak_gib");
        size_t k = 0;
        if (isfinite(share)) k += snprintf(notes + k, sizeof notes - k, "select %.1f%% ", 100 * share);
        if (isfinite(peak) && k < sizeof notes)
            k += snprintf(notes + k, sizeof notes - k, "mem %.2f GiB (q,k,v,o+grads %.2f GiB) ",
                          peak / (1 << 30), io / (1 << 30));
        if (isfinite(gib) && k < sizeof notes)
            k += snprintf(notes + k, sizeof notes - k, "peak %.2f GiB ", gib);
        const char *why = strstr(r->extra, "n/a=");
        if (r->ms <= 0 && why && k < sizeof notes)
            k += snprintf(notes + k, sizeof notes - k, "%.*s", (int)strcspn(why + 4, ";"), why + 4);
        if (strstr(r->extra, "fp32-fallback") && k < sizeof notes)
            snprintf(notes + k, sizeof notes - k, "(fp32 selection)");
        fprintf(out, "%-15s %-7s %8lld %11s %9s %7s %7s  %s\n", r->kernel, r->pass, (long long)r->N,
                ms, tf, xf, xp, notes);
    }
    free(ord);
}

// ---- the run ----------------------------------------------------------------------------------

// A JSON string body: quotes, backslashes and control characters escaped.
static void json_str(char *out, size_t n, const char *s) {
    size_t k = 0;
    for (; s && *s && k + 7 < n; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') out[k++] = '\\', out[k++] = (char)c;
        else if (c < 0x20) k += snprintf(out + k, n - k, "\\u%04x", c);
        else out[k++] = (char)c;
    }
    out[k] = 0;
}

// Every numeric key=value of a row's extra as an eval row task 'bench_<key>' (share, pairs,
// density, peak_bytes, io_bytes, select_dots, peak_gib, ...).
static int store_extras(Store *s, int64_t id, const BenchRow *r, const char *proto) {
    char *copy = ms_strdup(r->extra);
    int rc = 0;
    char *save = NULL;
    for (char *kv = strtok_r(copy, ";", &save); kv && !rc; kv = strtok_r(NULL, ";", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq || eq == kv || eq - kv > 40) continue;
        *eq = 0;
        char *end;
        double v = strtod(eq + 1, &end);
        if (end == eq + 1 || *end || !isfinite(v) || !strcmp(kv, "reps")) continue;
        char task[64];
        snprintf(task, sizeof task, "bench_%s", kv);
        rc = store_eval(s, id, task, r->N, v, proto, 0);
    }
    free(copy);
    return rc;
}

int bench_record(const char *ours, const char *peers, const BenchRecordOpts *o, int64_t *run_id) {
    BenchTable t = {0};
    if (bench_read_tsv(ours, 0, &t)) return bench_table_free(&t), -1;
    int n_ours = t.n;
    if (peers && bench_read_tsv(peers, 1, &t)) return bench_table_free(&t), -1;
    if (n_ours == 0) {
        bench_table_free(&t);
        return ms_fail("%s: no benchmark rows (kernel, pass, N, ms, tflops)", ours);
    }
    if (o->out) print_table(&t, o->out);

    // One run per recording: the config names the files and the time, so it never matches another
    // run's hash (a benchmark is a measurement, not a config to skip when done).
    char cfg[3000], e_ours[600], e_peers[600], e_note[600], e_dev[300], hash[17];
    json_str(e_ours, sizeof e_ours, ours);
    json_str(e_peers, sizeof e_peers, peers ? peers : "");
    json_str(e_note, sizeof e_note, o->note ? o->note : "");
    json_str(e_dev, sizeof e_dev, t.device);
    snprintf(cfg, sizeof cfg,
             "{\"bench\":{\"ours\":\"%s\",\"peers\":\"%s\",\"note\":\"%s\",\"gpu\":\"%s\","
             "\"recorded_at\":%.3f}}",
             e_ours, e_peers, e_note, e_dev, ms_wall());
    ms_hex64(ms_fnv1a(MS_FNV_INIT, cfg, strlen(cfg)), hash);
    char host[256] = "unknown", rev[64];
    int dirty;
    gethostname(host, sizeof host);
    provenance_git(rev, sizeof rev, &dirty);
    char *prov = provenance_json("cuda", 0);
    RunInfo info = {.name = o->name && *o->name ? o->name : "bench", .script = ours,
                    .config_json = cfg, .config_hash = hash, .git_rev = rev[0] ? rev : NULL,
                    .git_dirty = dirty, .host = host, .device = "cuda", .provenance_json = prov};
    Store *s = NULL;
    int64_t id = 0;
    int rc = store_open(&s, o->db, 0);
    if (!rc) rc = store_run_begin(s, &info, &id);
    free(prov);
    if (!rc) {
        rc |= store_param(s, id, "bench.ours", ours);
        if (peers) rc |= store_param(s, id, "bench.peers", peers);
        if (o->note) rc |= store_param(s, id, "bench.note", o->note);
        if (t.device[0]) rc |= store_param(s, id, "bench.gpu", t.device);
        rc |= store_param(s, id, "bench.dtype", "bf16");
        rc |= store_param(s, id, "bench.heads", "32");
        rc |= store_param(s, id, "bench.head_dim", "128");
        rc |= store_param(s, id, "bench.batch", "1");
        char ap[4096];
        rc |= store_artifact(s, id, "bench-tsv", realpath(ours, ap) ? ap : ours);
        if (peers) rc |= store_artifact(s, id, "bench-tsv", realpath(peers, ap) ? ap : peers);
    }
    for (int i = 0; i < t.n && !rc; i++) {
        const BenchRow *r = &t.r[i];
        if (r->ms <= 0) continue; // n/a: nothing measured (the TSV artifact keeps the reason)
        char proto[80];
        snprintf(proto, sizeof proto, "%s %s", r->kernel, r->pass);
        double reps = bench_extra(r, "reps");
        int64_t n = isfinite(reps) ? (int64_t)reps : r->peer ? 0 : t.reps;
        rc |= store_eval(s, id, "bench", r->N, r->ms, proto, n);
        if (r->tflops > 0) rc |= store_eval(s, id, "bench_tflops", r->N, r->tflops, proto, n);
        double xf = bench_x_fa2(&t, r), xp = bench_x_peer(&t, r);
        if (isfinite(xf)) rc |= store_eval(s, id, "bench_x_fa2", r->N, xf, proto, n);
        if (isfinite(xp)) rc |= store_eval(s, id, "bench_x_peer", r->N, xp, proto, n);
        rc |= store_extras(s, id, r, proto);
    }
    if (s && id) {
        if (rc) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", ms_error());
            store_run_end(s, id, "failed", msg);
            ms_fail("%s", msg);
        } else {
            rc = store_run_end(s, id, "done", NULL);
        }
    }
    if (s) store_close(s);
    if (!rc && o->out) fprintf(o->out, "recorded run %lld (\"%s\") in %s\n", (long long)id, info.name, o->db);
    if (run_id) *run_id = id;
    bench_table_free(&t);
    return rc ? -1 : 0;
}
