// main.c: the mslab command line.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/bench_record.h"
#include "../core/common.h"
#include "../core/generate.h"
#include "../core/plot.h"
#include "../core/store.h"
#include "../lua/host.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: mslab COMMAND [options]\n"
            "\n"
            "  run SCRIPT.lua [--db FILE] [options] [-- ARGS...]   run an experiment script:\n"
            "        runs already done are skipped, interrupted ones resumed (docs/sweeps.md)\n"
            "        --force          rerun everything     --retry-failed   rerun failed runs\n"
            "        --dry-run        print the plan       --jobs N         N runs at once\n"
            "        --devices 0,1    one run per GPU (CUDA_VISIBLE_DEVICES per run)\n"
            "        --stale SECONDS  resume a 'running' row of another host after this silence (600)\n"
            "  runs [--db FILE] [--where SQL]            list runs\n"
            "  show RUN [--db FILE]                      one run: config, params, metrics, evals\n"
            "  compare RUN RUN [--db FILE]               config differences and metrics side by side\n"
            "  query \"SQL\" [--db FILE] [--csv|--json]   read-only SQL (default: an aligned table)\n"
            "  plot loss|ppl-vs-length|speed-vs-length|passkey [--db FILE] [--out DIR] [--where SQL]\n"
            "       [--by PARAM]                        draw a figure (PNG + SVG + .gp)\n"
            "  bench-record OURS.tsv [PEERS.tsv] [--db FILE] [--note TEXT] [--name NAME]\n"
            "                                            benchmark TSVs (ours, peers) -> table + a run\n"
            "                                            with task 'bench' evals (docs/bench.md)\n"
            "  generate --checkpoint F [--tokenizer T] [--prompt TEXT] [-n STEPS]\n"
            "           [--temperature X] [--top-p P] [--seed S]\n"
            "                                            sample text as llama2.c's run.c does\n"
            "  help                                      this text\n"
            "\n"
            "The database defaults to results.db in the current directory; plots go to plots/.\n"
            "--where is an SQL condition over the runs table, aliased r (e.g. \"r.name LIKE 'ms%%'\").\n"
            "--by PARAM labels and colours lines by a param (e.g. --by train.lr).\n"
            "RUN is a run id, a uid (6+ leading hex digits) or a name (its newest run).\n");
}

typedef struct {
    const char *db, *out, *where, *by, *jobs, *devices, *only, *stale, *note, *name;
    int force, retry_failed, dry_run, csv, json;
    const char *pos[8];
    int npos;
    int rest; // index of the first argument after `--`
} Args;

static int parse(int argc, char **argv, int first, Args *a) {
    memset(a, 0, sizeof *a);
    a->db = "results.db";
    a->out = "plots";
    a->rest = argc;
    for (int i = first; i < argc; i++) {
        const char *s = argv[i];
        const char **dst = !strcmp(s, "--db") ? &a->db : !strcmp(s, "--out") ? &a->out
                         : !strcmp(s, "--where") ? &a->where : !strcmp(s, "--by") ? &a->by
                         : !strcmp(s, "--jobs") ? &a->jobs : !strcmp(s, "--devices") ? &a->devices
                         : !strcmp(s, "--only") ? &a->only : !strcmp(s, "--stale") ? &a->stale
                         : !strcmp(s, "--note") ? &a->note : !strcmp(s, "--name") ? &a->name : NULL;
        int *flag = !strcmp(s, "--force") ? &a->force : !strcmp(s, "--retry-failed") ? &a->retry_failed
                  : !strcmp(s, "--dry-run") ? &a->dry_run : !strcmp(s, "--csv") ? &a->csv
                  : !strcmp(s, "--json") ? &a->json : NULL;
        if (flag) {
            *flag = 1;
        } else if (dst) {
            if (i + 1 >= argc) {
                fprintf(stderr, "mslab: %s needs a value\n", s);
                return -1;
            }
            *dst = argv[++i];
        } else if (!strcmp(s, "--")) {
            a->rest = i + 1;
            break;
        } else if (s[0] == '-' && s[1] == '-') {
            fprintf(stderr, "mslab: unknown option %s (see mslab help)\n", s);
            return -1;
        } else if (a->npos < 8) {
            a->pos[a->npos++] = s;
        } else {
            fprintf(stderr, "mslab: too many arguments\n");
            return -1;
        }
    }
    return 0;
}

static int with_store(const char *db, int (*fn)(Store *, const char *), const char *arg) {
    Store *s;
    if (store_open(&s, db, 1)) {
        fprintf(stderr, "mslab: %s\n", ms_error());
        return 1;
    }
    int rc = fn(s, arg);
    if (rc) fprintf(stderr, "mslab: %s\n", ms_error());
    store_close(s);
    return rc ? 1 : 0;
}

static int print_runs(Store *s, const char *where) { return store_print_runs(s, where, stdout); }
static int print_query(Store *s, const char *sql) { return store_print_query(s, sql, stdout); }
static int print_csv(Store *s, const char *sql) { return store_print_query_csv(s, sql, stdout); }
static int print_json(Store *s, const char *sql) { return store_print_query_json(s, sql, stdout); }
static int print_show(Store *s, const char *run) { return store_print_show(s, run, stdout); }

static const char *compare_b; // the second run of `compare` (with_store passes one argument)
static int print_compare(Store *s, const char *a) { return store_print_compare(s, a, compare_b, stdout); }

// mslab run: options -> HostOptions.
static int run_cmd(const Args *a, int argc, char **argv) {
    if (a->npos != 1) {
        fprintf(stderr, "mslab: usage: mslab run SCRIPT.lua [--db FILE] [--force] [--retry-failed] "
                        "[--dry-run] [--jobs N] [--devices 0,1] [-- ARGS...]\n");
        return 2;
    }
    HostOptions o = {.force = a->force, .retry_failed = a->retry_failed, .dry_run = a->dry_run,
                     .devices = a->devices, .only = a->only, .jobs = 1, .exe = getenv("MSLAB_EXE")};
    char *end = NULL;
    if (a->jobs && ((o.jobs = (int)strtol(a->jobs, &end, 10)) < 1 || *end)) {
        fprintf(stderr, "mslab: --jobs: \"%s\" is not a positive integer\n", a->jobs);
        return 2;
    }
    if (a->stale && (!((o.stale_s = strtod(a->stale, &end)) > 0) || *end)) {
        fprintf(stderr, "mslab: --stale: \"%s\" is not a positive number of seconds\n", a->stale);
        return 2;
    }
    return lua_host_run_opts(a->pos[0], a->db, argc - a->rest, argv + a->rest, &o);
}

// mslab generate: run.c's defaults (-n 256, temperature 1, top-p 0.9, seed from the time).
static int generate_cmd(int argc, char **argv) {
    GenerateOpts o = {.steps = 256, .temperature = 1.0f, .topp = 0.9f};
    for (int i = 2; i < argc; i++) {
        const char *s = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "mslab: %s needs a value (see mslab help)\n", s);
            return 2;
        }
        char *end = NULL;
        if (!strcmp(s, "--checkpoint")) o.checkpoint = v;
        else if (!strcmp(s, "--tokenizer")) o.tokenizer = v;
        else if (!strcmp(s, "--prompt")) o.prompt = v;
        else if (!strcmp(s, "-n") || !strcmp(s, "--steps")) o.steps = (int)strtol(v, &end, 10);
        else if (!strcmp(s, "--temperature")) o.temperature = strtof(v, &end);
        else if (!strcmp(s, "--top-p")) o.topp = strtof(v, &end);
        else if (!strcmp(s, "--seed")) o.seed = strtoull(v, &end, 10);
        else {
            fprintf(stderr, "mslab: generate: unknown option %s (see mslab help)\n", s);
            return 2;
        }
        if (end && (end == v || *end)) {
            fprintf(stderr, "mslab: generate: %s: \"%s\" is not a number\n", s, v);
            return 2;
        }
        i++;
    }
    if (!o.checkpoint) {
        fprintf(stderr, "mslab: usage: mslab generate --checkpoint F [--tokenizer T] [--prompt TEXT] ...\n");
        return 2;
    }
    if (generate_main(&o)) {
        fprintf(stderr, "mslab: %s\n", ms_error());
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "generate")) return generate_cmd(argc, argv); // its own options
    Args a;
    if (parse(argc, argv, 2, &a)) return 2;
    if (!strcmp(cmd, "run")) return run_cmd(&a, argc, argv);
    if (!strcmp(cmd, "runs")) return with_store(a.db, print_runs, a.where);
    if (!strcmp(cmd, "bench-record")) {
        if (a.npos < 1 || a.npos > 2) {
            fprintf(stderr, "mslab: usage: mslab bench-record OURS.tsv [PEERS.tsv] [--db FILE] "
                            "[--note TEXT] [--name NAME]\n");
            return 2;
        }
        BenchRecordOpts o = {.db = a.db, .name = a.name, .note = a.note, .out = stdout};
        if (bench_record(a.pos[0], a.npos > 1 ? a.pos[1] : NULL, &o, NULL)) {
            fprintf(stderr, "mslab: %s\n", ms_error());
            return 1;
        }
        return 0;
    }
    if (!strcmp(cmd, "query")) {
        if (a.npos != 1 || (a.csv && a.json)) {
            fprintf(stderr, "mslab: usage: mslab query \"SQL\" [--db FILE] [--csv | --json]\n");
            return 2;
        }
        return with_store(a.db, a.csv ? print_csv : a.json ? print_json : print_query, a.pos[0]);
    }
    if (!strcmp(cmd, "show")) {
        if (a.npos != 1) {
            fprintf(stderr, "mslab: usage: mslab show RUN [--db FILE]\n");
            return 2;
        }
        return with_store(a.db, print_show, a.pos[0]);
    }
    if (!strcmp(cmd, "compare")) {
        if (a.npos != 2) {
            fprintf(stderr, "mslab: usage: mslab compare RUN RUN [--db FILE]\n");
            return 2;
        }
        compare_b = a.pos[1];
        return with_store(a.db, print_compare, a.pos[0]);
    }
    if (!strcmp(cmd, "plot")) {
        // figure name, function, output file stem; every figure takes --where and --by
        static const struct {
            const char *name, *file;
            int (*fn)(const char *db, const char *out, const char *where);
        } figs[] = {{"loss", "loss", plot_loss},
                    {"ppl-vs-length", "ppl_vs_length", plot_ppl_vs_length},
                    {"speed-vs-length", "speed_vs_length", plot_speed_vs_length},
                    {"passkey", "passkey", plot_passkey}};
        int nfig = (int)(sizeof figs / sizeof figs[0]), f = 0;
        if (a.npos != 1) {
            fprintf(stderr, "mslab: usage: mslab plot FIGURE [--where SQL] [--by PARAM] (see mslab help)\n");
            return 2;
        }
        while (f < nfig && strcmp(a.pos[0], figs[f].name)) f++;
        if (f == nfig) {
            fprintf(stderr, "mslab: unknown figure \"%s\" (loss, ppl-vs-length, speed-vs-length, passkey)\n", a.pos[0]);
            return 2;
        }
        plot_set_by(a.by);
        if (figs[f].fn(a.db, a.out, a.where)) {
            fprintf(stderr, "mslab: %s\n", ms_error());
            return 1;
        }
        printf("wrote %s/%s.{png,svg,gp}\n", a.out, figs[f].file);
        return 0;
    }
    fprintf(stderr, "mslab: unknown command \"%s\"\n\n", cmd);
    usage(stderr);
    return 2;
}
