// attn_bench.h: `mslab-gpu-bench --attn`: the attention benchmark of bench/attn_bench.c.
#ifndef MSLAB_ATTN_BENCH_H
#define MSLAB_ATTN_BENCH_H

#include "../core/ops.h"

// argv as main's (argv[0] the program); be = the CUDA backend (fp32 reference rows, and the
// selection when select_bf16 is not available). Returns the process exit status.
int attn_bench_main(int argc, char **argv, const Backend *be);

#endif
