// progress.c: live progress line on a terminal, log lines otherwise.
#include "progress.h"

#include <unistd.h>

#include "common.h"

static int sweep_i, sweep_n, force_plain;

void progress_set_sweep(int i, int n) { sweep_i = i, sweep_n = n; }
void progress_set_plain(int plain) { force_plain = plain; }

// "[i/n] " inside a sweep, "" otherwise.
static const char *sweep_tag(void) {
    static char tag[32];
    tag[0] = 0;
    if (sweep_n > 0) snprintf(tag, sizeof tag, "[%d/%d] ", sweep_i, sweep_n);
    return tag;
}

void progress_begin(Progress *p, const char *name, int steps, double tokens_per_step) {
    p->name = name;
    p->steps = steps;
    p->first_step = 0;
    p->tokens_per_step = tokens_per_step;
    p->t0 = ms_now();
    p->out = stderr;
    p->tty = !force_plain && isatty(fileno(stderr));
    p->line_open = 0;
}

static void fmt_duration(double s, char *buf, size_t n) {
    if (s < 0 || s > 1e7) snprintf(buf, n, "?");
    else if (s < 60) snprintf(buf, n, "%.0fs", s);
    else if (s < 3600) snprintf(buf, n, "%dm%02ds", (int)s / 60, (int)s % 60);
    else snprintf(buf, n, "%dh%02dm", (int)s / 3600, (int)s % 3600 / 60);
}

void progress_update(Progress *p, int step, double loss, double tokens_per_s) {
    double elapsed = ms_now() - p->t0;
    int done = step - p->first_step;
    double eta = done > 0 ? elapsed / done * (p->steps - step) : -1;
    char e[32], el[32];
    fmt_duration(eta, e, sizeof e);
    fmt_duration(elapsed, el, sizeof el);
    if (p->tty) {
        fprintf(p->out, "\r\033[K%s%s  step %d/%d  loss %.4f  %.0f tok/s  %s elapsed  ETA %s",
                sweep_tag(), p->name, step, p->steps, loss, tokens_per_s, el, e);
        p->line_open = 1;
    } else {
        fprintf(p->out, "%s%s step %d/%d loss %.4f tok/s %.0f elapsed %s eta %s\n", sweep_tag(),
                p->name, step, p->steps, loss, tokens_per_s, el, e);
    }
    fflush(p->out);
}

void progress_note(Progress *p, const char *line) {
    if (p->line_open) fputc('\n', p->out);
    p->line_open = 0;
    fprintf(p->out, "%s\n", line);
    fflush(p->out);
}

void progress_end(Progress *p) {
    if (p->line_open) fputc('\n', p->out);
    p->line_open = 0;
    fflush(p->out);
}
