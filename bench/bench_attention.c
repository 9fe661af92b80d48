// bench_attention.c: CPU time of one attention layer, forward + backward, dense against the sparse
// kinds (ms: selection + block-sparse forward + backward), with the realised fraction of causal
// pairs each computes. Median of a few runs after one warm-up. Not a test.
//
// Build and run (standalone; needs only core/common.c, core/attention.c and core/cpu/):
//   cc -O3 -march=native -fopenmp -std=c11 -D_GNU_SOURCE bench/bench_attention.c core/common.c
//      core/attention.c core/cpu/*.c -lm -o build/bench_attention && ./build/bench_attention
// Optional arguments: T [w top merge] to time one length (default: 2048, 4096, 8192 with
// w 16, top 128, merge 32, i.e. the paper's proportions P = T/4 at 8K scaled down 4x).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/attention.h"
#include "../core/common.h"
#include "../core/ops.h"

#define RUNS 3

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    int B, T, H, KVH, D;
    float *q, *k, *v, *out, *lse, *dout, *dq, *dk, *dv;
} Bufs;

// seconds of: [select] + forward + backward; cfg NULL = dense
static double run_once(const Backend *be, Bufs *b, const AttnConfig *cfg, AttnStats *st) {
    size_t nq = (size_t)b->B * b->T * b->H * b->D, nk = (size_t)b->B * b->T * b->KVH * b->D;
    memset(b->dq, 0, nq * 4), memset(b->dk, 0, nk * 4), memset(b->dv, 0, nk * 4);
    double t0 = ms_now();
    if (!cfg) {
        be->attention_fwd(b->out, b->lse, b->q, b->k, b->v, b->B, b->T, b->H, b->KVH, b->D);
        be->attention_bwd(b->dq, b->dk, b->dv, b->dout, b->out, b->lse, b->q, b->k, b->v, b->B,
                          b->T, b->H, b->KVH, b->D);
        double dt = ms_now() - t0;
        if (st) st->pairs = st->causal_pairs = 1, st->select_dots = 0;
        return dt;
    }
    AttnDims d;
    attn_dims(cfg, b->T, &d);
    size_t n = (size_t)b->B * b->H * d.nblk * d.width;
    int *idx = ms_malloc(n * sizeof(int));
    AttnIndex ix = {d.qblock, d.nblk, d.region, d.width, d.window, idx, NULL, NULL, NULL, 0};
    be->attention_select(&ix, cfg, b->q, b->k, b->B, b->T, b->H, b->KVH, b->D);
    be->sparse_attention_fwd(b->out, b->lse, b->q, b->k, b->v, &ix, b->B, b->T, b->H, b->KVH, b->D);
    be->sparse_attention_bwd(b->dq, b->dk, b->dv, b->dout, b->out, b->lse, b->q, b->k, b->v, &ix,
                             b->B, b->T, b->H, b->KVH, b->D);
    double dt = ms_now() - t0;
    if (st) attn_count(cfg, &d, idx, b->H, b->T, st);
    free(idx);
    return dt;
}

static double median(const Backend *be, Bufs *b, const AttnConfig *cfg, AttnStats *st) {
    double t[RUNS];
    run_once(be, b, cfg, NULL);
    for (int i = 0; i < RUNS; i++) t[i] = run_once(be, b, cfg, st);
    qsort(t, RUNS, sizeof t[0], cmp_d);
    return t[RUNS / 2];
}

static void bench(int T, int w, int top, int merge) {
    const Backend *be = backend_cpu();
    Bufs b = {1, T, 4, 2, 64};
    size_t nq = (size_t)b.B * T * b.H * b.D, nk = (size_t)b.B * T * b.KVH * b.D;
    Rng r;
    rng_seed(&r, 1);
    float **all[] = {&b.q, &b.out, &b.dout, &b.dq};
    for (int i = 0; i < 4; i++) *all[i] = ms_malloc(nq * 4);
    float **kv[] = {&b.k, &b.v, &b.dk, &b.dv};
    for (int i = 0; i < 4; i++) *kv[i] = ms_malloc(nk * 4);
    b.lse = ms_malloc(sizeof(float) * b.B * b.H * T);
    for (size_t i = 0; i < nq; i++) b.q[i] = rng_normal(&r), b.dout[i] = rng_normal(&r);
    for (size_t i = 0; i < nk; i++) b.k[i] = rng_normal(&r), b.v[i] = rng_normal(&r);

    AttnConfig ms = attn_config_default(ATTN_MS);
    ms.w = w, ms.top = top, ms.merge = merge;
    AttnConfig win = attn_config_default(ATTN_WINDOW);
    win.window = top * w;
    AttnConfig moba = attn_config_default(ATTN_MOBA);
    moba.block = 256, moba.top = (top * w) / 256 > 1 ? (top * w) / 256 : 2;
    AttnStats st;
    double td = median(be, &b, NULL, &st);
    printf("T %6d B 1 H 4 KVH 2 D 64  dense                      %8.3f s  pairs 1.000\n", T, td);
    double tm = median(be, &b, &ms, &st);
    printf("T %6d                     ms w %d top %d merge %d  %8.3f s  pairs %.3f  (%.2fx dense)\n",
           T, w, top, merge, tm, st.pairs / st.causal_pairs, td / tm);
    double tw = median(be, &b, &win, &st);
    printf("T %6d                     window %-6d            %8.3f s  pairs %.3f  (%.2fx dense)\n",
           T, win.window, tw, st.pairs / st.causal_pairs, td / tw);
    double tb = median(be, &b, &moba, &st);
    printf("T %6d                     moba block 256 top %-3d    %8.3f s  pairs %.3f  (%.2fx dense)\n",
           T, moba.top, tb, st.pairs / st.causal_pairs, td / tb);
    for (int i = 0; i < 4; i++) free(*all[i]), free(*kv[i]);
    free(b.lse);
}

int main(int argc, char **argv) {
    if (argc > 1) {
        bench(atoi(argv[1]), argc > 2 ? atoi(argv[2]) : 16, argc > 3 ? atoi(argv[3]) : 128,
              argc > 4 ? atoi(argv[4]) : 32);
        return 0;
    }
    int lengths[] = {2048, 4096, 8192};
    for (int i = 0; i < 3; i++) bench(lengths[i], 16, 128, 32);
    return 0;
}
