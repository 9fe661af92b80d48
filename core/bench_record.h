// bench_record.h: `mslab bench-record`: joins the attention benchmark's rows (mslab-gpu-bench --attn
// --tsv) with the PyTorch peers of the same GPU session (bench/peers.py), computes the ratios,
// prints the table and writes one run with task 'bench' evals into results.db (docs/bench.md,
// docs/results-db.md).
//
// TSV (both files): lines `kernel \t pass \t N \t ms \t tflops [\t extra]`, '#' lines and blank
// lines ignored; ms / tflops a number or "n/a"; extra = key=value pairs separated by ';'.
#ifndef MSLAB_BENCH_RECORD_H
#define MSLAB_BENCH_RECORD_H

#include <stdint.h>
#include <stdio.h>

typedef struct {
    char kernel[48], pass[16];
    int64_t N;
    double ms, tflops; // < 0: n/a
    char *extra;       // "" when absent
    int peer;          // 1: from the peers file
} BenchRow;

typedef struct {
    BenchRow *r;
    int n;
    char device[256]; // from a "# mslab-gpu-bench --attn: DEVICE; ..." comment ("" if none)
    int reps;         // from "median of R" in that comment (0 if none)
} BenchTable;

// Reads one TSV (peer = 1 marks its rows as peers'); appends to t. Errors: -1 with ms_error()
// naming path:line and what is wrong.
int bench_read_tsv(const char *path, int peer, BenchTable *t);
void bench_table_free(BenchTable *t);

// The value of key in a row's extra (NAN when absent or not a number).
double bench_extra(const BenchRow *r, const char *key);
// x FA2 = FA2's time at the row's N and pass / the row's time (fwd rows against FA2 fwd, fwdbwd
// against FA2 fwdbwd); x peer = the peer's time / the row's time, the peer of a kernel family
// being dense -> fa2, ms -> torch-ms, moba -> flex-moba, lm (training steps of the 162M model,
// mslab-gpu-bench --lm) -> torch-eager-lm, same pass (select too). NAN when either
// side is missing or n/a. Both > 1 mean the row is faster.
double bench_x_fa2(const BenchTable *t, const BenchRow *r);
double bench_x_peer(const BenchTable *t, const BenchRow *r);
// "fa2", "torch-ms", "flex-moba", "torch-eager-lm" for a kernel of family dense / ms / moba / lm;
// NULL otherwise.
const char *bench_peer_of(const char *kernel);

typedef struct {
    const char *db;   // results.db path
    const char *name; // run name (NULL: "bench")
    const char *note; // free text (params bench.note), may be NULL
    FILE *out;        // the table (NULL: not printed)
} BenchRecordOpts;

// Reads ours (and peers, may be NULL), prints the table, writes the run. *run_id (may be NULL)
// gets the new run's id.
int bench_record(const char *ours, const char *peers, const BenchRecordOpts *o, int64_t *run_id);

#endif
