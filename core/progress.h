// progress.h: what long work shows while it runs. On a terminal, one live line redrawn in place
// (step/steps, loss, tokens/s, ETA); otherwise a plain log line per update.
#ifndef MSLAB_PROGRESS_H
#define MSLAB_PROGRESS_H

#include <stdio.h>

typedef struct {
    const char *name;
    int steps;
    int first_step;             // a resumed run starts here (the ETA counts from it)
    double tokens_per_step;
    double t0;
    int tty, line_open;
    FILE *out;
} Progress;

void progress_begin(Progress *p, const char *name, int steps, double tokens_per_step);
void progress_update(Progress *p, int step, double loss, double tokens_per_s);
void progress_note(Progress *p, const char *line); // a message on its own line
void progress_end(Progress *p);
// A sweep's position, shown as "[i/n]" before the run's name (0, 0: none).
void progress_set_sweep(int i, int n);
// 1: plain log lines even on a terminal (children of `mslab run --jobs`, which share one).
void progress_set_plain(int plain);

#endif
