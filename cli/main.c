// main.c: the mslab command line.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/common.h"
#include "../core/generate.h"
#include "../core/plot.h"
#include "../core/store.h"
#include "../lua/host.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: mslab COMMAND [options]\n"
            "\n"
            "  run SCRIPT.lua [--db FILE] [-- ARGS...]   run an experiment script\n"
            "  runs [--db FILE]                          list runs\n"
            "  query \"SQL\" [--db FILE]                   read-only SQL, printed as a table\n"
            "  plot loss|ppl-vs-length [--db FILE] [--out DIR] [--where SQL]\n"
            "                                            draw a figure (PNG + SVG + .gp)\n"
            "  generate --checkpoint F [--tokenizer T] [--prompt TEXT] [-n STEPS]\n"
            "           [--temperature X] [--top-p P] [--seed S]\n"
            "                                            sample text as llama2.c's run.c does\n"
            "  help                                      this text\n"
            "\n"
            "The database defaults to results.db in the current directory; plots go to plots/.\n"
            "--where is an SQL condition over the runs table, aliased r (e.g. \"r.name LIKE 'ms%%'\").\n");
}

typedef struct {
    const char *db, *out, *where;
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
                         : !strcmp(s, "--where") ? &a->where : NULL;
        if (dst) {
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

static int print_runs(Store *s, const char *unused) {
    (void)unused;
    return store_print_runs(s, stdout);
}

static int print_query(Store *s, const char *sql) { return store_print_query(s, sql, stdout); }

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
    if (!strcmp(cmd, "run")) {
        if (a.npos != 1) {
            fprintf(stderr, "mslab: usage: mslab run SCRIPT.lua [--db FILE] [-- ARGS...]\n");
            return 2;
        }
        return lua_host_run(a.pos[0], a.db, argc - a.rest, argv + a.rest);
    }
    if (!strcmp(cmd, "runs")) return with_store(a.db, print_runs, NULL);
    if (!strcmp(cmd, "query")) {
        if (a.npos != 1) {
            fprintf(stderr, "mslab: usage: mslab query \"SQL\" [--db FILE]\n");
            return 2;
        }
        return with_store(a.db, print_query, a.pos[0]);
    }
    if (!strcmp(cmd, "plot")) {
        if (a.npos != 1) {
            fprintf(stderr, "mslab: usage: mslab plot loss|ppl-vs-length [--where SQL]\n");
            return 2;
        }
        int rc;
        if (!strcmp(a.pos[0], "loss")) rc = plot_loss(a.db, a.out, a.where);
        else if (!strcmp(a.pos[0], "ppl-vs-length")) rc = plot_ppl_vs_length(a.db, a.out, a.where);
        else {
            fprintf(stderr, "mslab: unknown figure \"%s\" (loss, ppl-vs-length)\n", a.pos[0]);
            return 2;
        }
        if (rc) {
            fprintf(stderr, "mslab: %s\n", ms_error());
            return 1;
        }
        printf("wrote %s/%s.{png,svg,gp}\n", a.out, !strcmp(a.pos[0], "loss") ? "loss" : "ppl_vs_length");
        return 0;
    }
    fprintf(stderr, "mslab: unknown command \"%s\"\n\n", cmd);
    usage(stderr);
    return 2;
}
