// plot.h: figures drawn by gnuplot from results.db alone. Each figure writes, into outdir,
// NAME.gp (the script, self-contained: data inline), NAME.png and NAME.svg; one line per run,
// labelled by run name.
#ifndef MSLAB_PLOT_H
#define MSLAB_PLOT_H

// where: an optional SQL boolean expression over the runs table (alias r), e.g. "r.name LIKE 'ms%'".
// Returns 0, or -1 with ms_error() (no rows to plot, gnuplot missing or failing, unwritable dir).
int plot_loss(const char *db_path, const char *outdir, const char *where);
int plot_ppl_vs_length(const char *db_path, const char *outdir, const char *where); // log2 x axis
// The attention benchmark (evals task 'bench', ms by N, one line per "<kernel> <pass>"; without
// `where` only the newest run with bench rows), log-log; when no bench rows match, evals task
// 'speed' (tokens/s by length; protocol = what was timed). docs/bench.md.
int plot_speed_vs_length(const char *db_path, const char *outdir, const char *where);
// passkey_trials as a heat map: accuracy over prompt length x depth (ten bins of 0.1), runs side
// by side; each cell labelled with its percent and trial count.
int plot_passkey(const char *db_path, const char *outdir, const char *where);
// --by PARAM for every figure: lines labelled "PARAM=value" (params table) and coloured by value,
// one legend entry per value. NULL: one line per run, labelled by name. plot_run_label() is the SQL
// expression (over runs aliased r) a figure selects as the series label.
void plot_set_by(const char *param);
const char *plot_run_label(void);

#endif
