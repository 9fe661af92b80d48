// bench_matmul.c: GFLOP/s of the CPU backend's matmul_fwd and matmul_bwd on the shapes a training
// step runs (N = B*T rows; attention projections, SwiGLU, LM head). Median of several timed runs
// after warm-up. A forward is 2*N*IC*OC flops; a backward computing both gradients twice that.
//
// Build and run (standalone; needs only core/common.c and core/cpu/):
//   cc -O3 -march=native -fopenmp -std=c11 -D_GNU_SOURCE bench/bench_matmul.c core/common.c
//      core/cpu/*.c -lm -o build/bench_matmul && ./build/bench_matmul
// Optional arguments: N IC OC to time one shape.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/common.h"
#include "../core/ops.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#define RUNS 9

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

// median seconds of RUNS calls (after 2 warm-up calls); which: 0 fwd, 1 bwd (both grads),
// 2 bwd dinp only, 3 bwd dw only
static double time_op(const Backend *be, int which, float *out, float *inp, float *w, float *dinp,
                      float *dw, int N, int IC, int OC) {
    double t[RUNS];
    for (int r = -2; r < RUNS; r++) {
        double t0 = ms_now();
        switch (which) {
        case 0: be->matmul_fwd(out, inp, w, N, IC, OC); break;
        case 1: be->matmul_bwd(dinp, dw, out, inp, w, N, IC, OC); break;
        case 2: be->matmul_bwd(dinp, NULL, out, inp, w, N, IC, OC); break;
        default: be->matmul_bwd(NULL, dw, out, inp, w, N, IC, OC); break;
        }
        double dt = ms_now() - t0;
        if (r >= 0) t[r] = dt;
    }
    qsort(t, RUNS, sizeof t[0], cmp_d);
    return t[RUNS / 2];
}

static void bench(const Backend *be, int N, int IC, int OC) {
    Rng rng;
    rng_seed(&rng, 1);
    float *inp = be->alloc((size_t)N * IC * sizeof(float));
    float *w = be->alloc((size_t)OC * IC * sizeof(float));
    float *out = be->alloc((size_t)N * OC * sizeof(float));
    float *dinp = be->alloc((size_t)N * IC * sizeof(float));
    float *dw = be->alloc((size_t)OC * IC * sizeof(float));
    for (size_t i = 0; i < (size_t)N * IC; i++) inp[i] = rng_normal(&rng);
    for (size_t i = 0; i < (size_t)OC * IC; i++) w[i] = 0.05f * rng_normal(&rng);
    double f = 2.0 * N * IC * OC;
    double tf = time_op(be, 0, out, inp, w, dinp, dw, N, IC, OC);
    double tb = time_op(be, 1, out, inp, w, dinp, dw, N, IC, OC);
    double ti = time_op(be, 2, out, inp, w, dinp, dw, N, IC, OC);
    double tw = time_op(be, 3, out, inp, w, dinp, dw, N, IC, OC);
    printf("N=%5d IC=%5d OC=%5d | fwd %7.1f GFLOP/s (%7.2f ms) | bwd %7.1f GFLOP/s (%7.2f ms) "
           "[dinp %6.1f, dw %6.1f]\n",
           N, IC, OC, f / tf * 1e-9, tf * 1e3, 2 * f / tb * 1e-9, tb * 1e3, f / ti * 1e-9,
           f / tw * 1e-9);
    fflush(stdout);
    be->free(inp), be->free(w), be->free(out), be->free(dinp), be->free(dw);
}

int main(int argc, char **argv) {
    const Backend *be = backend_cpu();
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    printf("matmul on backend %s, %d thread(s), median of %d runs\n", be->name, threads, RUNS);
    if (argc == 4) {
        bench(be, atoi(argv[1]), atoi(argv[2]), atoi(argv[3]));
        return 0;
    }
    static const int shapes[][3] = {
        {2048, 128, 128},   // attention projections, small model (C = 128)
        {2048, 128, 344},   // SwiGLU up/gate (F ~ 8/3 C)
        {2048, 344, 128},   // SwiGLU down
        {2048, 128, 256},   // LM head, byte-level vocab
        {2048, 512, 512},   // C = 512 projections
        {4096, 512, 1376},  // SwiGLU at C = 512
        {4096, 1024, 1024}, // C = 1024
        {2048, 512, 32000}, // LM head, 32k vocab
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        bench(be, shapes[i][0], shapes[i][1], shapes[i][2]);
    return 0;
}
