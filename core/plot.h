// plot.h: figures drawn by gnuplot from results.db alone. Each figure writes, into outdir,
// NAME.gp (the script, self-contained: data inline), NAME.png and NAME.svg; one line per run,
// labelled by run name.
#ifndef MSLAB_PLOT_H
#define MSLAB_PLOT_H

// where: an optional SQL boolean expression over the runs table (alias r), e.g. "r.name LIKE 'ms%'".
// Returns 0, or -1 with ms_error() (no rows to plot, gnuplot missing or failing, unwritable dir).
int plot_loss(const char *db_path, const char *outdir, const char *where);
int plot_ppl_vs_length(const char *db_path, const char *outdir, const char *where); // log2 x axis

#endif
