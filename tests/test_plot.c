// test_plot.c: gnuplot figures from a results.db made here: files written, labels escaped, filters
// applied, and the documented errors (no data, no database, no gnuplot, a WHERE that writes).
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/common.h"
#include "../core/plot.h"
#include "../core/store.h"
#include "test.h"

static int have_gnuplot(void) { return system("command -v gnuplot >/dev/null 2>&1") == 0; }

static long file_size(const char *dir, const char *name) {
    char p[1200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct stat st;
    return stat(p, &st) == 0 ? (long)st.st_size : -1;
}

static char *slurp(const char *dir, const char *name) {
    char p[1200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "rb");
    if (!f) return ms_strdup("");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = ms_malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = 0;
    fclose(f);
    return s;
}

// Two runs with awkward names: training loss every 10 steps, eval loss at 25 and 50, and ppl at
// 128..2048 under one protocol. Returns 0 on success.
static int make_db(const char *path) {
    Store *s;
    if (store_open(&s, path, 0)) return -1;
    const char *names[2] = {"alpha_run", "beta 'q\""};
    int rc = 0;
    for (int r = 0; r < 2; r++) {
        RunInfo ri = {.name = names[r], .script = "x.lua", .host = "h", .device = "cpu"};
        int64_t id;
        rc |= store_run_begin(s, &ri, &id);
        for (int step = 0; step <= 50; step += 10)
            rc |= store_metric(s, id, step, "train.loss", 4.0 - step * 0.05 - r * 0.25, step * 0.1);
        rc |= store_metric(s, id, 25, "eval.loss", 3.0 - r * 0.25, 2.5);
        rc |= store_metric(s, id, 50, "eval.loss", 2.0 - r * 0.25, 5.0);
        for (int len = 128; len <= 2048; len *= 2)
            rc |= store_eval(s, id, "ppl", len, 40.0 - r * 4 - len / 256.0, "sliding-64", 8192);
        rc |= store_eval(s, id, "copy", 256, 1.0, NULL, 10); // not ppl: not plotted
        rc |= store_run_end(s, id, "done", NULL);
    }
    store_close(s);
    return rc ? -1 : 0;
}

TEST(plot_loss_and_ppl_two_runs) {
    if (!have_gnuplot()) SKIP("gnuplot not installed (apt-get install gnuplot-nox)");
    char dir[600], db[700], out[700];
    snprintf(dir, sizeof dir, "%s", test_tmpdir());
    snprintf(db, sizeof db, "%s/results.db", dir);
    snprintf(out, sizeof out, "%s/figs/nested", dir); // created on demand
    CHECK(make_db(db) == 0);

    CHECK(plot_loss(db, out, NULL) == 0);
    if (test_failed_checks) fprintf(stderr, "  %s\n", ms_error());
    CHECK(file_size(out, "loss.png") > 1000);
    CHECK(file_size(out, "loss.svg") > 1000);
    CHECK(file_size(out, "loss.gp") > 100);
    char *png = slurp(out, "loss.png");
    CHECK(memcmp(png, "\x89PNG\r\n\x1a\n", 8) == 0);
    free(png);
    char *svg = slurp(out, "loss.svg");
    CHECK(strstr(svg, "<svg") != NULL);
    CHECK(strstr(svg, "alpha_run") != NULL); // the legend, not enhanced text (no subscript)
    free(svg);
    char *gp = slurp(out, "loss.gp");
    CHECK(strstr(gp, "title 'alpha_run' noenhanced") != NULL);
    CHECK(strstr(gp, "title 'beta ''q\"' noenhanced") != NULL); // ' doubled inside '...'
    CHECK(strstr(gp, "title 'alpha_run (eval.loss)' noenhanced") != NULL);
    // inline data, exactly as stored: run 1 train.loss, run 2 eval.loss
    CHECK(strstr(gp, "$run1_1 << EOD\n0 4\n10 3.5\n20 3\n30 2.5\n40 2\n50 1.5\nEOD\n") != NULL);
    CHECK(strstr(gp, "$run2_2 << EOD\n25 2.75\n50 1.75\nEOD\n") != NULL);
    CHECK(strstr(gp, "set xlabel 'step'") != NULL);
    free(gp);

    CHECK(plot_ppl_vs_length(db, out, NULL) == 0);
    if (test_failed_checks) fprintf(stderr, "  %s\n", ms_error());
    CHECK(file_size(out, "ppl_vs_length.png") > 1000);
    CHECK(file_size(out, "ppl_vs_length.svg") > 1000);
    gp = slurp(out, "ppl_vs_length.gp");
    CHECK(strstr(gp, "set logscale x 2") != NULL);
    CHECK(strstr(gp, "set xlabel 'context length (tokens)'") != NULL);
    CHECK(strstr(gp, "set ylabel 'perplexity'") != NULL);
    CHECK(strstr(gp, "set title 'perplexity vs context length (protocol: sliding-64)' noenhanced") != NULL);
    CHECK(strstr(gp, "with linespoints") != NULL);
    CHECK(strstr(gp, "'alpha_run'") != NULL);
    CHECK(strstr(gp, "'beta ''q\"'") != NULL);
    CHECK(strstr(gp, "$run1_1 << EOD\n128 39.5\n256 39\n512 38\n1024 36\n2048 32\nEOD\n") != NULL);
    CHECK(strstr(gp, "$run2_1 << EOD\n128 35.5\n") != NULL);
    CHECK(strstr(gp, "copy") == NULL);
    free(gp);
}

TEST(plot_where_filters_runs) {
    if (!have_gnuplot()) SKIP("gnuplot not installed (apt-get install gnuplot-nox)");
    char dir[600], db[700], want[1600];
    snprintf(dir, sizeof dir, "%s", test_tmpdir());
    snprintf(db, sizeof db, "%s/results.db", dir);
    CHECK(make_db(db) == 0);
    CHECK(plot_loss(db, dir, "r.name LIKE 'alpha%'") == 0);
    char *gp = slurp(dir, "loss.gp");
    CHECK(strstr(gp, "alpha_run") != NULL);
    CHECK(strstr(gp, "beta") == NULL);
    free(gp);
    CHECK(plot_ppl_vs_length(db, dir, "r.id = 2") == 0);
    gp = slurp(dir, "ppl_vs_length.gp");
    CHECK(strstr(gp, "alpha_run") == NULL);
    CHECK(strstr(gp, "beta") != NULL);
    free(gp);

    CHECK(plot_loss(db, dir, "r.name = 'zzz'") == -1);
    snprintf(want, sizeof want, "no train.loss metrics in %s for runs where r.name = 'zzz'", db);
    CHECK_STR(ms_error(), want);
    CHECK(plot_loss(db, dir, "r.nosuch = 1") == -1);
    snprintf(want, sizeof want, "%s: no such column: r.nosuch", db);
    CHECK_STR(ms_error(), want);
    // a filter cannot write (the database is opened read-only and writing statements are refused)
    CHECK(plot_loss(db, dir, "1); DELETE FROM runs; SELECT (1") == -1);
    CHECK(strstr(ms_error(), "refusing a statement that would modify the database") != NULL);
    Store *s;
    CHECK(store_open(&s, db, 1) == 0);
    if (!s) return;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    CHECK(store_print_query(s, "SELECT count(*) AS n FROM runs", f) == 0);
    fclose(f);
    CHECK_STR(text, "n\n-\n2\n");
    free(text);
    store_close(s);
}

TEST(plot_errors_without_data) {
    char dir[600], db[700], want[1600];
    snprintf(dir, sizeof dir, "%s", test_tmpdir());
    snprintf(db, sizeof db, "%s/results.db", dir);
    // no database at all
    CHECK(plot_loss(db, dir, NULL) == -1);
    snprintf(want, sizeof want, "%s: no such file (run an experiment first)", db);
    CHECK_STR(ms_error(), want);
    // a database with the schema and a run, but nothing to plot
    Store *s;
    CHECK(store_open(&s, db, 0) == 0);
    if (!s) return;
    RunInfo ri = {.name = "empty"};
    int64_t id;
    CHECK(store_run_begin(s, &ri, &id) == 0);
    CHECK(store_metric(s, id, 1, "lr", 0.1, 0) == 0);
    store_close(s);
    CHECK(plot_loss(db, dir, NULL) == -1);
    snprintf(want, sizeof want, "no train.loss metrics in %s (run an experiment first)", db);
    CHECK_STR(ms_error(), want);
    CHECK(plot_ppl_vs_length(db, dir, "") == -1);
    snprintf(want, sizeof want, "no ppl evals in %s (run an experiment first)", db);
    CHECK_STR(ms_error(), want);
    CHECK(file_size(dir, "loss.gp") == -1); // nothing written
}

TEST(plot_without_gnuplot) {
    char dir[600], db[700], empty[700], want[1600];
    snprintf(dir, sizeof dir, "%s", test_tmpdir());
    snprintf(db, sizeof db, "%s/results.db", dir);
    snprintf(empty, sizeof empty, "%s/emptybin", dir);
    mkdir(empty, 0755);
    CHECK(make_db(db) == 0);
    const char *old = getenv("PATH");
    char *saved = old ? ms_strdup(old) : NULL;
    setenv("PATH", empty, 1);
    int rc = plot_loss(db, dir, NULL);
    if (saved) setenv("PATH", saved, 1);
    else unsetenv("PATH");
    free(saved);
    CHECK(rc == -1);
    snprintf(want, sizeof want,
             "gnuplot is not installed: apt-get install gnuplot-nox (or run `make deps`); the "
             "script is written: %s/loss.gp", dir);
    CHECK_STR(ms_error(), want);
    CHECK(file_size(dir, "loss.gp") > 100);
    CHECK(file_size(dir, "loss.png") == -1);
}

TEST(plot_gnuplot_failure_reported) {
    if (!have_gnuplot()) SKIP("gnuplot not installed (apt-get install gnuplot-nox)");
    // outdir is a file: cannot be created
    char dir[600], db[700], file[700], want[1600];
    snprintf(dir, sizeof dir, "%s", test_tmpdir());
    snprintf(db, sizeof db, "%s/results.db", dir);
    snprintf(file, sizeof file, "%s/afile", dir);
    CHECK(make_db(db) == 0);
    FILE *f = fopen(file, "w");
    if (f) fclose(f);
    CHECK(plot_loss(db, file, NULL) == -1);
    snprintf(want, sizeof want, "%s: %s is not a directory", file, file);
    CHECK_STR(ms_error(), want);
    // a gnuplot that fails: its stderr comes back in the message
    char bin[700], fake[800];
    snprintf(bin, sizeof bin, "%s/bin", dir);
    mkdir(bin, 0755);
    snprintf(fake, sizeof fake, "%s/gnuplot", bin);
    f = fopen(fake, "w");
    if (f) {
        fputs("#!/bin/sh\necho \"line 12: unknown terminal type\" >&2\nexit 3\n", f);
        fclose(f);
    }
    chmod(fake, 0755);
    const char *old = getenv("PATH");
    char *saved = old ? ms_strdup(old) : NULL;
    char path[2000];
    snprintf(path, sizeof path, "%s:%s", bin, saved ? saved : "");
    setenv("PATH", path, 1);
    int rc = plot_ppl_vs_length(db, dir, NULL);
    if (saved) setenv("PATH", saved, 1);
    free(saved);
    CHECK(rc == -1);
    snprintf(want, sizeof want, "gnuplot %s/ppl_vs_length.gp failed (exit 3): line 12: unknown terminal type", dir);
    CHECK_STR(ms_error(), want);
}
