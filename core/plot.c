// plot.c: figures from results.db through gnuplot. Each figure is one self-contained script
// (outdir/NAME.gp, the data inline as datablocks) that gnuplot runs once, drawing NAME.png
// (pngcairo when that terminal exists, else png) and NAME.svg next to the script. The script finds
// its own directory through ARG0, so `gnuplot plots/loss.gp` redraws from anywhere.
#include "plot.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "store.h"

// ---- a growable string --------------------------------------------------------------------------
typedef struct {
    char *p;
    size_t n, cap;
} Buf;

static void buf_add(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_add(Buf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) return;
        if (b->p && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return;
        }
        b->cap = (b->cap + (size_t)k + 1) * 2;
        b->p = ms_realloc(b->p, b->cap);
    }
}

// A gnuplot single-quoted string: no escapes inside, '' stands for '.
static void buf_quoted(Buf *b, const char *s) {
    buf_add(b, "'");
    for (; s && *s; s++) {
        if (*s == '\'') buf_add(b, "''");
        else if ((unsigned char)*s < 0x20) buf_add(b, " ");
        else buf_add(b, "%c", *s);
    }
    buf_add(b, "'");
}

// ---- series collected from the database ---------------------------------------------------------
typedef struct {
    int64_t run_id;
    char *run_name;
    char *kind;  // metric name ("train.loss", "eval.loss") or protocol (ppl)
    int color;   // 1-based run index: one colour per run
    int dash;    // 1-based kind index within the figure
    Buf data;    // "x y\n" lines
    int npoints;
} Series;

typedef struct {
    Series *s;
    int n;
    int nruns;
    int64_t last_run;
    char **kinds;
    int nkinds;
} SeriesSet;

static void set_free(SeriesSet *set) {
    for (int i = 0; i < set->n; i++) {
        free(set->s[i].run_name);
        free(set->s[i].kind);
        free(set->s[i].data.p);
    }
    for (int i = 0; i < set->nkinds; i++) free(set->kinds[i]);
    free(set->s);
    free(set->kinds);
}

static int kind_index(SeriesSet *set, const char *kind) {
    for (int i = 0; i < set->nkinds; i++)
        if (strcmp(set->kinds[i], kind) == 0) return i + 1;
    set->kinds = ms_realloc(set->kinds, (size_t)(set->nkinds + 1) * sizeof *set->kinds);
    set->kinds[set->nkinds++] = ms_strdup(kind);
    return set->nkinds;
}

// --by PARAM (plot_set_by): series are labelled "PARAM=value" and coloured by that value, so the
// runs of one value form one group (one legend entry). plot_run_label() is the SQL expression every
// figure selects in place of r.name.
static char *plot_by;

void plot_set_by(const char *param) {
    free(plot_by);
    plot_by = param && *param ? ms_strdup(param) : NULL;
}

const char *plot_run_label(void) {
    static char *expr;
    free(expr);
    if (!plot_by) return expr = ms_strdup("r.name");
    Buf b = {0}, q = {0};
    for (const char *p = plot_by; *p; p++) buf_add(&q, *p == '\'' ? "''" : "%c", *p);
    buf_add(&b, "('%s=' || coalesce((SELECT p.value FROM params p WHERE p.run_id = r.id AND p.key = '%s'),"
                " '?'))", q.p, q.p);
    free(q.p);
    return expr = b.p;
}

// Row callback for queries of the form: run_id, run_name, kind, x, y (ordered by run, kind, x).
static int collect_row(int ncols, const char *const *names, const char *const *v, void *ctx) {
    SeriesSet *set = ctx;
    if (ncols != 5 || !v[0] || !v[3] || !v[4]) return 0;
    int64_t run_id = strtoll(v[0], NULL, 10);
    const char *kind = v[2] ? v[2] : "";
    Series *cur = set->n ? &set->s[set->n - 1] : NULL;
    if (!cur || cur->run_id != run_id || strcmp(cur->kind, kind) != 0) {
        if (!set->n || set->last_run != run_id) set->nruns++;
        set->last_run = run_id;
        set->s = ms_realloc(set->s, (size_t)(set->n + 1) * sizeof *set->s);
        cur = &set->s[set->n++];
        memset(cur, 0, sizeof *cur);
        cur->run_id = run_id;
        cur->run_name = ms_strdup(v[1] ? v[1] : "");
        cur->kind = ms_strdup(kind);
        cur->color = set->nruns;
        if (plot_by) // one colour per value of the --by param
            for (int i = 0; i < set->n - 1; i++)
                if (!strcmp(set->s[i].run_name, cur->run_name)) {
                    cur->color = set->s[i].color;
                    break;
                }
        if (plot_by && cur->color == set->nruns) {
            int k = 0;
            for (int i = 0; i < set->n - 1; i++) k = set->s[i].color > k ? set->s[i].color : k;
            cur->color = k + 1;
        }
        cur->dash = kind_index(set, kind);
    }
    buf_add(&cur->data, "%s %.9g\n", v[3], strtod(v[4], NULL));
    cur->npoints++;
    return 0;
}

static int select_series(const char *db_path, const char *sql, SeriesSet *set) {
    memset(set, 0, sizeof *set);
    Store *s;
    if (store_open(&s, db_path, 1)) return -1;
    int rc = store_select(s, sql, collect_row, set);
    store_close(s);
    if (rc) set_free(set);
    return rc;
}

// The legend label of a series: the run name, plus "#id" when two plotted runs share that name.
static void label(Buf *b, const SeriesSet *set, const Series *x, const char *suffix) {
    if (plot_by) { // one legend entry per value: later series of the same value get none
        for (const Series *y = set->s; y < x; y++)
            if (!strcmp(y->run_name, x->run_name) && !strcmp(y->kind, x->kind)) {
                buf_quoted(b, "");
                return;
            }
        Buf t = {0};
        buf_add(&t, "%s%s%s", x->run_name, suffix && *suffix ? " " : "", suffix ? suffix : "");
        buf_quoted(b, t.p);
        free(t.p);
        return;
    }
    int dup = 0;
    for (int i = 0; i < set->n; i++)
        if (set->s[i].run_id != x->run_id && strcmp(set->s[i].run_name, x->run_name) == 0) dup = 1;
    Buf t = {0};
    buf_add(&t, "%s", x->run_name);
    if (dup) buf_add(&t, " #%lld", (long long)x->run_id);
    if (suffix && *suffix) buf_add(&t, " %s", suffix);
    buf_quoted(b, t.p);
    free(t.p);
}

// ---- files and processes ------------------------------------------------------------------------
static int mkdir_p(const char *dir) {
    char *p = ms_strdup(dir);
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/') p[--n] = 0;
    for (char *q = p + 1;; q++) {
        if (*q == '/' || *q == 0) {
            char c = *q;
            *q = 0;
            struct stat st;
            if (stat(p, &st) != 0) {
                if (mkdir(p, 0755) != 0 && errno != EEXIST) {
                    int e = errno;
                    ms_fail("%s: cannot create directory %s: %s", dir, p, strerror(e));
                    free(p);
                    return -1;
                }
            } else if (!S_ISDIR(st.st_mode)) {
                ms_fail("%s: %s is not a directory", dir, p);
                free(p);
                return -1;
            }
            *q = c;
            if (!c) break;
        }
    }
    free(p);
    return 0;
}

static char *join(const char *dir, const char *name) {
    Buf b = {0};
    size_t n = strlen(dir);
    buf_add(&b, "%s%s%s", dir, n && dir[n - 1] == '/' ? "" : "/", name);
    return b.p;
}

// gnuplot's full path from $PATH, or NULL.
static char *find_gnuplot(void) {
    const char *path = getenv("PATH");
    if (!path || !*path) path = "/usr/local/bin:/usr/bin:/bin";
    char *copy = ms_strdup(path), *save = NULL;
    for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        char *exe = join(*d ? d : ".", "gnuplot");
        if (access(exe, X_OK) == 0) {
            free(copy);
            return exe;
        }
        free(exe);
    }
    free(copy);
    return NULL;
}

// Runs `gnuplot script`; on failure the message carries what gnuplot wrote to stderr.
static int run_gnuplot(const char *script) {
    char *exe = find_gnuplot();
    if (!exe)
        return ms_fail("gnuplot is not installed: apt-get install gnuplot-nox (or run `make deps`); "
                       "the script is written: %s", script);
    int fds[2];
    if (pipe(fds) != 0) {
        free(exe);
        return ms_fail("gnuplot %s: pipe: %s", script, strerror(errno));
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(fds[0]);
        close(fds[1]);
        free(exe);
        return ms_fail("gnuplot %s: fork: %s", script, strerror(e));
    }
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
        }
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        char *argv[] = {"gnuplot", (char *)script, NULL};
        execv(exe, argv);
        _exit(127);
    }
    close(fds[1]);
    free(exe);
    char err[1024];
    size_t n = 0;
    for (;;) {
        char chunk[512];
        ssize_t k = read(fds[0], chunk, sizeof chunk);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        size_t take = (size_t)k < sizeof err - 1 - n ? (size_t)k : sizeof err - 1 - n;
        memcpy(err + n, chunk, take); // keep the beginning: gnuplot's first error is the cause
        n += take;
    }
    close(fds[0]);
    err[n] = 0;
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    // one line of context is enough in an error message: fold newlines
    while (n > 0 && (err[n - 1] == '\n' || err[n - 1] == ' ')) err[--n] = 0;
    for (size_t i = 0; i < n; i++)
        if (err[i] == '\n') err[i] = ' ';
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return 0;
    if (WIFEXITED(status))
        return ms_fail("gnuplot %s failed (exit %d): %s", script, WEXITSTATUS(status),
                       n ? err : "(no message)");
    return ms_fail("gnuplot %s killed by signal %d: %s", script, WTERMSIG(status), err);
}

static int nonempty(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0;
}

// Writes outdir/NAME.gp: header, datablocks, settings (`settings`), the plot command (`plot`) drawn
// into NAME.png and NAME.svg; then runs gnuplot and checks both images exist.
static int draw(const char *outdir, const char *name, const SeriesSet *set, const char *settings,
                const char *plot) {
    if (mkdir_p(outdir)) return -1;
    char gpname[64], pngname[64], svgname[64];
    snprintf(gpname, sizeof gpname, "%s.gp", name);
    snprintf(pngname, sizeof pngname, "%s.png", name);
    snprintf(svgname, sizeof svgname, "%s.svg", name);
    char *gp = join(outdir, gpname), *png = join(outdir, pngname), *svg = join(outdir, svgname);
    int rc = -1;
    FILE *f = fopen(gp, "w");
    if (!f) {
        ms_fail("%s: %s", gp, strerror(errno));
        goto out;
    }
    fprintf(f, "# %s: drawn by mslab from results.db; self-contained (the data is inline).\n", gpname);
    fprintf(f, "# Redraw with `gnuplot %s`: writes %s and %s next to this script.\n\n", gpname,
            pngname, svgname);
    for (int i = 0; i < set->n; i++)
        fprintf(f, "$run%lld_%d << EOD\n%sEOD\n", (long long)set->s[i].run_id, set->s[i].dash,
                set->s[i].data.p ? set->s[i].data.p : "");
    fprintf(f,
            "\n# this script's directory, so the images land next to it wherever gnuplot runs\n"
            "_dir = ''\n"
            "if (exists(\"ARG0\")) { _i = strlen(ARG0); while (_i > 0 && ARG0[_i:_i] ne '/') "
            "{ _i = _i - 1 }; if (_i > 0) { _dir = ARG0[1:_i] } }\n\n"
            "set termoption noenhanced\n"
            "set key noenhanced\n"
            "set grid\n"
            "%s\n"
            "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
            "    set terminal pngcairo size 1000,650 noenhanced font ',11'\n"
            "} else {\n"
            "    set terminal png size 1000,650 noenhanced\n"
            "}\n"
            "set output _dir.'%s'\n"
            "%s\n"
            "set terminal svg size 1000,650 dynamic noenhanced background rgb 'white'\n"
            "set output _dir.'%s'\n"
            "replot\n"
            "unset output\n",
            settings, pngname, plot, svgname);
    if (fclose(f) != 0) {
        ms_fail("%s: %s", gp, strerror(errno));
        goto out;
    }
    if (run_gnuplot(gp)) goto out;
    if (!nonempty(png)) {
        ms_fail("gnuplot %s: wrote no %s", gp, png);
        goto out;
    }
    if (!nonempty(svg)) {
        ms_fail("gnuplot %s: wrote no %s", gp, svg);
        goto out;
    }
    rc = 0;
out:
    free(gp);
    free(png);
    free(svg);
    return rc;
}

static const char *where_or_true(const char *where) {
    if (!where) return "1";
    for (const char *p = where; *p; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n') return where;
    return "1";
}

static int no_data(const char *what, const char *db_path, const char *where) {
    if (where && strcmp(where_or_true(where), "1") != 0)
        return ms_fail("no %s in %s for runs where %s", what, db_path, where);
    return ms_fail("no %s in %s (run an experiment first)", what, db_path);
}

// ---- figures ------------------------------------------------------------------------------------
int plot_loss(const char *db_path, const char *outdir, const char *where) {
    // The last value written for each (run, metric, step): a resumed run may re-log steps.
    Buf sql = {0};
    buf_add(&sql,
            "SELECT r.id, %s, m.name, m.step, m.value FROM (\n"
            "  SELECT run_id, name, step, value, row_number() OVER (\n"
            "    PARTITION BY run_id, name, step ORDER BY rowid DESC) AS k\n"
            "  FROM metrics WHERE name IN ('train.loss', 'eval.loss') AND value IS NOT NULL) m\n"
            "JOIN runs r ON r.id = m.run_id\n"
            "WHERE m.k = 1 AND (%s)\n"
            "ORDER BY r.id, m.name DESC, m.step",  // 'train.loss' before 'eval.loss'
            plot_run_label(), where_or_true(where));
    SeriesSet set;
    int rc = select_series(db_path, sql.p, &set);
    free(sql.p);
    if (rc) return -1;
    int ntrain = 0;
    for (int i = 0; i < set.n; i++) ntrain += strcmp(set.s[i].kind, "train.loss") == 0;
    if (ntrain == 0) {
        set_free(&set);
        return no_data("train.loss metrics", db_path, where);
    }
    Buf settings = {0}, plot = {0};
    buf_add(&settings, "set title 'training loss' noenhanced\n"
                       "set xlabel 'step'\n"
                       "set ylabel 'loss'\n"
                       "set key top right");
    buf_add(&plot, "plot ");
    for (int i = 0; i < set.n; i++) {
        const Series *x = &set.s[i];
        int train = strcmp(x->kind, "train.loss") == 0;
        buf_add(&plot, "%s$run%lld_%d using 1:2 with %s lc %d title ", i ? ", \\\n     " : "",
                (long long)x->run_id, x->dash, train ? "lines lw 2" : "points pt 7 ps 1.2",
                x->color);
        label(&plot, &set, x, train ? "" : "(eval.loss)");
        buf_add(&plot, " noenhanced");
    }
    rc = draw(outdir, "loss", &set, settings.p, plot.p);
    free(settings.p);
    free(plot.p);
    set_free(&set);
    return rc;
}

// The last value written for each (run, protocol, length) of evals with `task` whose value passes
// `value_filter` (SQL), one series per (run, protocol). No rows: the no-data error naming `what`.
static int select_length_series(const char *db_path, const char *where, const char *task,
                                const char *value_filter, const char *what, SeriesSet *set) {
    Buf sql = {0};
    buf_add(&sql,
            "SELECT r.id, %s, e.protocol, e.length, e.value FROM (\n"
            "  SELECT run_id, coalesce(protocol, '') AS protocol, length, value, row_number() OVER (\n"
            "    PARTITION BY run_id, coalesce(protocol, ''), length ORDER BY rowid DESC) AS k\n"
            "  FROM evals WHERE task = '%s' AND length > 0 AND %s) e\n"
            "JOIN runs r ON r.id = e.run_id\n"
            "WHERE e.k = 1 AND (%s)\n"
            "ORDER BY r.id, e.protocol, e.length",
            plot_run_label(), task, value_filter, where_or_true(where));
    int rc = select_series(db_path, sql.p, set);
    free(sql.p);
    if (rc) return -1;
    if (set->n == 0) {
        set_free(set);
        return no_data(what, db_path, where);
    }
    return 0;
}

// The plot command for one line per series (run x protocol), the protocol in the label when
// several are plotted. Shared by the length figures (ppl, speed).
static void linespoints_by_kind(Buf *plot, const SeriesSet *set) {
    buf_add(plot, "plot ");
    for (int i = 0; i < set->n; i++) {
        const Series *x = &set->s[i];
        buf_add(plot, "%s$run%lld_%d using 1:2 with linespoints lw 2 pt 7 lc %d dt %d title ",
                i ? ", \\\n     " : "", (long long)x->run_id, x->dash, x->color, x->dash);
        Buf sfx = {0};
        if (set->nkinds > 1) buf_add(&sfx, "[%s]", *x->kind ? x->kind : "no protocol");
        label(plot, set, x, sfx.p);
        free(sfx.p);
        buf_add(plot, " noenhanced");
    }
}

int plot_ppl_vs_length(const char *db_path, const char *outdir, const char *where) {
    // The last evaluation written for each (run, protocol, length).
    SeriesSet set;
    if (select_length_series(db_path, where, "ppl", "value IS NOT NULL", "ppl evals", &set))
        return -1;
    Buf title = {0}, settings = {0}, plot = {0};
    buf_add(&title, "perplexity vs context length");
    int named = 0;
    for (int i = 0; i < set.nkinds; i++) {
        if (!*set.kinds[i]) continue;
        buf_add(&title, "%s%s", named++ ? ", " : (set.nkinds > 1 ? " (protocols: " : " (protocol: "),
                set.kinds[i]);
    }
    if (named) buf_add(&title, ")");
    buf_add(&settings, "set title ");
    buf_quoted(&settings, title.p);
    buf_add(&settings, " noenhanced\n"
                       "set xlabel 'context length (tokens)'\n"
                       "set ylabel 'perplexity'\n"
                       "set logscale x 2\n"
                       "set format x '%%.0f'\n"
                       "set key top right");
    linespoints_by_kind(&plot, &set);
    int rc = draw(outdir, "ppl_vs_length", &set, settings.p, plot.p);
    free(title.p);
    free(settings.p);
    free(plot.p);
    set_free(&set);
    return rc;
}

// The attention benchmark (task 'bench', docs/bench.md): one line per protocol "<kernel> <pass>",
// milliseconds vs N, log-log. A kernel and its peer share a colour (dense/fa2, ms/torch-ms,
// moba-blk/flex-moba, moba); dash by pass (fwd solid, fwdbwd dashed, select dotted); ours filled
// points, the PyTorch peers open circles (fp32 rows, if any: squares). Without --where only
// the newest run holding bench rows is drawn (every recording is a run of its own).
static int bench_family(const char *kind) {
    static const char *const pre[][2] = {{"dense", "fa2"}, {"ms-", "torch-ms"},
                                         {"moba-blk", "flex-moba"}, {"moba", "moba"}};
    for (int f = 0; f < 4; f++)
        for (int k = 0; k < 2; k++)
            if (!strncmp(kind, pre[f][k], strlen(pre[f][k]))) return f;
    return 4;
}

static int plot_bench(const char *db_path, const char *outdir, const char *where, SeriesSet *set) {
    static const char *const colour[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b"};
    Buf settings = {0}, plot = {0};
    buf_add(&settings, "set title 'attention: time vs context length (bf16, causal, B 1, H 32, D 128; "
                       "ms/moba include the selection)' noenhanced\n"
                       "set xlabel 'context length N (tokens)'\n"
                       "set ylabel 'milliseconds (median)'\n"
                       "set logscale xy 2\n"
                       "set format x '%%.0f'\n"
                       "set key outside right top");
    buf_add(&plot, "plot ");
    for (int i = 0; i < set->n; i++) {
        const Series *x = &set->s[i];
        size_t kl = strcspn(x->kind, " ");
        const char *pass = x->kind[kl] ? x->kind + kl + 1 : "";
        int dt = !strcmp(pass, "fwd") ? 1 : !strcmp(pass, "fwdbwd") ? 2 : !strcmp(pass, "select") ? 3 : 4;
        int peer = !strncmp(x->kind, "fa2", 3) || !strncmp(x->kind, "flex", 4) ||
                   !strncmp(x->kind, "torch", 5);
        int fp32 = strstr(x->kind, "-fp32 ") != NULL;
        buf_add(&plot, "%s$run%lld_%d using 1:2 with linespoints lw %d pt %d lc rgb '%s' dt %d title ",
                i ? ", \\\n     " : "", (long long)x->run_id, x->dash, fp32 ? 1 : 2,
                peer ? 6 : fp32 ? 4 : 7, colour[bench_family(x->kind)], dt);
        Buf t = {0};
        if (set->nruns > 1) buf_add(&t, "%s #%lld ", x->run_name, (long long)x->run_id);
        buf_add(&t, "%s", x->kind);
        buf_quoted(&plot, t.p);
        free(t.p);
        buf_add(&plot, " noenhanced");
    }
    int rc = draw(outdir, "speed_vs_length", set, settings.p, plot.p);
    free(settings.p);
    free(plot.p);
    return rc;
}

// Speed vs length. Where bench rows exist (task 'bench', `mslab bench-record`) they are drawn
// (plot_bench); otherwise evals rows with task 'speed' (value = tokens per second at that context
// length; protocol names what was timed, e.g. "forward", "train"). Log-log axes.
int plot_speed_vs_length(const char *db_path, const char *outdir, const char *where) {
    SeriesSet set;
    int has_where = strcmp(where_or_true(where), "1") != 0;
    Buf bw = {0};
    if (has_where) buf_add(&bw, "%s", where);
    else buf_add(&bw, "r.id = (SELECT max(run_id) FROM evals WHERE task = 'bench')");
    // left out of the figure: "train" rows (a whole LM step of a peer, no attention timing) and
    // the fp32 reference rows (an order of magnitude slower: they squash the lines that matter)
    int rc = select_length_series(db_path, bw.p, "bench",
                                  "value > 0 AND protocol NOT LIKE '% train' AND protocol NOT LIKE '%-fp32 %'",
                                  "bench evals", &set);
    free(bw.p);
    if (rc == 0) {
        rc = plot_bench(db_path, outdir, where, &set);
        set_free(&set);
        return rc;
    }
    if (select_length_series(db_path, where, "speed", "value > 0",
                             "speed evals (task 'speed') or bench evals (task 'bench')", &set))
        return -1;
    Buf settings = {0}, plot = {0};
    buf_add(&settings, "set title 'throughput vs context length' noenhanced\n"
                       "set xlabel 'context length (tokens)'\n"
                       "set ylabel 'tokens / s'\n"
                       "set logscale xy 2\n"
                       "set format x '%%.0f'\n"
                       "set key top right");
    linespoints_by_kind(&plot, &set);
    rc = draw(outdir, "speed_vs_length", &set, settings.p, plot.p);
    free(settings.p);
    free(plot.p);
    set_free(&set);
    return rc;
}

// Passkey accuracy as a heat map: x = prompt length (one column per length in any plotted run,
// runs side by side, each group named above it), y = depth in ten bins of 0.1, colour = fraction
// of correct trials in the cell (label: percent and trial count). Cells without trials are empty.
typedef struct {
    int64_t *ids;
    char **names;
    int nruns;
    int *lengths;
    int nlengths;
    struct PkCell { int run, length, bin, n; double acc; } *cells;
    int ncells;
} PkData;

static int pk_row(int ncols, const char *const *names, const char *const *v, void *ctx) {
    (void)names;
    PkData *d = ctx;
    if (ncols != 6 || !v[0] || !v[2] || !v[3] || !v[4] || !v[5]) return 0;
    int64_t id = strtoll(v[0], NULL, 10);
    if (!d->nruns || d->ids[d->nruns - 1] != id) {
        d->ids = ms_realloc(d->ids, sizeof *d->ids * (size_t)(d->nruns + 1));
        d->names = ms_realloc(d->names, sizeof *d->names * (size_t)(d->nruns + 1));
        d->ids[d->nruns] = id;
        d->names[d->nruns++] = ms_strdup(v[1] ? v[1] : "");
    }
    int len = atoi(v[2]), k = 0;
    while (k < d->nlengths && d->lengths[k] != len) k++;
    if (k == d->nlengths) {
        d->lengths = ms_realloc(d->lengths, sizeof *d->lengths * (size_t)(d->nlengths + 1));
        d->lengths[d->nlengths++] = len;
    }
    d->cells = ms_realloc(d->cells, sizeof *d->cells * (size_t)(d->ncells + 1));
    d->cells[d->ncells++] = (struct PkCell){d->nruns - 1, len, atoi(v[3]), atoi(v[5]), strtod(v[4], NULL)};
    return 0;
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

int plot_passkey(const char *db_path, const char *outdir, const char *where) {
    Buf sql = {0};
    buf_add(&sql,
            "SELECT r.id, %s, p.length, min(9, CAST(p.depth * 10 AS INTEGER)) AS bin,\n"
            "       avg(p.correct), count(*)\n"
            "FROM passkey_trials p JOIN runs r ON r.id = p.run_id\n"
            "WHERE (%s)\n"
            "GROUP BY r.id, p.length, bin\n"
            "ORDER BY r.id, p.length, bin",
            plot_run_label(), where_or_true(where));
    PkData d = {0};
    Store *s;
    int rc = store_open(&s, db_path, 1);
    if (!rc) {
        rc = store_select(s, sql.p, pk_row, &d);
        store_close(s);
    }
    free(sql.p);
    if (!rc && d.ncells == 0) rc = no_data("passkey trials", db_path, where);
    SeriesSet set = {0};
    Buf settings = {0}, plot = {0};
    if (rc) goto out;
    qsort(d.lengths, (size_t)d.nlengths, sizeof *d.lengths, cmp_int);
    // one datablock per run: "x bin accuracy trials"
    set.s = ms_calloc((size_t)d.nruns, sizeof *set.s);
    set.n = d.nruns;
    for (int i = 0; i < d.nruns; i++) {
        set.s[i].run_id = d.ids[i];
        set.s[i].dash = 1;
    }
    int group = d.nlengths + 1; // a blank column between runs
    for (int c = 0; c < d.ncells; c++) {
        const struct PkCell *x = &d.cells[c];
        int li = 0;
        while (d.lengths[li] != x->length) li++;
        buf_add(&set.s[x->run].data, "%d %d %.9g %d\n", x->run * group + li, x->bin, x->acc, x->n);
    }
    buf_add(&settings, "set title 'passkey retrieval accuracy (Landmark prompt; greedy, first integer)' "
                       "noenhanced\n"
                       "set xlabel 'prompt length (tokens)'\n"
                       "set ylabel 'depth of the key (fraction of the filler before it)'\n"
                       "unset grid\n"
                       "set key off\n"
                       "set cbrange [0:1]\n"
                       "set cblabel 'accuracy'\n"
                       "set palette defined (0 '#b2182b', 0.5 '#f7f7f7', 1 '#2166ac')\n"
                       "set style fill solid 1.0 noborder\n"
                       "# grey: no trials in the cell\n"
                       "set object 1 rectangle from graph 0,0 to graph 1,1 behind fc rgb '#c8c8c8' "
                       "fs solid 1.0 noborder\n"
                       "set yrange [-0.5:%s]\n"
                       "set ytics ('0-.1' 0, '.1-.2' 1, '.2-.3' 2, '.3-.4' 3, '.4-.5' 4, '.5-.6' 5, "
                       "'.6-.7' 6, '.7-.8' 7, '.8-.9' 8, '.9-1' 9)\n",
            d.nruns > 1 ? "10.5" : "9.5");
    buf_add(&settings, "set xrange [-0.5:%g]\nset xtics (", d.nruns * group - 1.5);
    for (int r = 0; r < d.nruns; r++)
        for (int li = 0; li < d.nlengths; li++)
            buf_add(&settings, "%s'%d' %d", r || li ? ", " : "", d.lengths[li], r * group + li);
    buf_add(&settings, ")");
    if (d.nruns > 1)
        for (int r = 0; r < d.nruns; r++) {
            buf_add(&settings, "\nset label %d ", r + 1);
            buf_quoted(&settings, d.names[r]);
            buf_add(&settings, " at %g, 10 center noenhanced", r * group + (d.nlengths - 1) / 2.0);
        }
    else {
        buf_add(&settings, "\nset title ");
        Buf t = {0};
        buf_add(&t, "passkey retrieval accuracy: %s", d.names[0]);
        buf_quoted(&settings, t.p);
        free(t.p);
        buf_add(&settings, " noenhanced");
    }
    buf_add(&plot, "plot ");
    for (int i = 0; i < d.nruns; i++)
        buf_add(&plot, "%s$run%lld_1 using 1:2:(0.5):(0.5):3 with boxxyerror fc palette, \\\n"
                       "     $run%lld_1 using 1:2:(sprintf('%%.0f%%%% (%%d)', 100*$3, int($4))) with labels "
                       "font ',9'",
                i ? ", \\\n     " : "", (long long)d.ids[i], (long long)d.ids[i]);
    rc = draw(outdir, "passkey", &set, settings.p, plot.p);
out:
    for (int i = 0; i < d.nruns; i++) free(d.names[i]);
    free(d.ids);
    free(d.names);
    free(d.lengths);
    free(d.cells);
    free(settings.p);
    free(plot.p);
    set_free(&set);
    return rc;
}
