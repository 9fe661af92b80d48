// gpu_bench.c: throughput of the CUDA backend (not a test): attention forward/backward at long
// context, the linear layer, and full training steps of the demo model and a ~100M-parameter
// model. Times are wall clock around synchronising downloads, best of a few repeats.
//   build/mslab-gpu-bench [--quick]
//   build/mslab-gpu-bench --attn [...]   the bf16 attention benchmark (bench/attn_bench.c)
//   build/mslab-gpu-bench --lm [--tsv F] the end-to-end 162M-model training rows (bf16)
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/attention.h"
#include "../core/common.h"
#include "../core/model.h"
#include "../core/optim.h"
#include "../cuda/attn_bf16.h"
#include "../cuda/backend_cuda.h"
#include "attn_bench.h"

static const Backend *be;

static void sync_dev(void) {
    static float *probe;
    if (!probe) probe = be->alloc(sizeof(float));
    float x;
    be->download(&x, probe, sizeof x); // a download waits for every queued op
}

static float *dev_rand(size_t n, float s, Rng *r) {
    float *h = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] = s * rng_normal(r);
    float *d = be->alloc(n * sizeof(float));
    be->upload(d, h, n * sizeof(float));
    free(h);
    return d;
}

static void bench_attention(int B, int T, int H, int KVH, int D) {
    Rng r;
    rng_seed(&r, 1);
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D;
    float *q = dev_rand(nq, 1, &r), *k = dev_rand(nk, 1, &r), *v = dev_rand(nk, 1, &r);
    float *dy = dev_rand(nq, 1, &r), *out = be->alloc(nq * 4), *lse = be->alloc((size_t)B * H * T * 4);
    float *dq = be->alloc(nq * 4), *dk = be->alloc(nk * 4), *dv = be->alloc(nk * 4);
    double best_f = 1e30, best_b = 1e30;
    for (int rep = 0; rep < 4; rep++) {
        sync_dev();
        double t0 = ms_now();
        be->attention_fwd(out, lse, q, k, v, B, T, H, KVH, D);
        sync_dev();
        double t1 = ms_now();
        be->attention_bwd(dq, dk, dv, dy, out, lse, q, k, v, B, T, H, KVH, D);
        sync_dev();
        double t2 = ms_now();
        if (rep) best_f = fmin(best_f, t1 - t0), best_b = fmin(best_b, t2 - t1);
    }
    double flops = 4.0 * B * H * (double)T * T / 2 * D; // causal: half of QK^T and PV
    printf("attention B=%d T=%d H=%d KVH=%d D=%d: fwd %.2f ms (%.1f TFLOP/s), bwd %.2f ms (%.1f TFLOP/s)\n",
           B, T, H, KVH, D, best_f * 1e3, flops / best_f / 1e12, best_b * 1e3,
           2.5 * flops / best_b / 1e12);
    be->free(q), be->free(k), be->free(v), be->free(dy), be->free(out), be->free(lse),
        be->free(dq), be->free(dk), be->free(dv);
}

static void bench_matmul(int N, int IC, int OC) {
    Rng r;
    rng_seed(&r, 2);
    float *x = dev_rand((size_t)N * IC, 1, &r), *w = dev_rand((size_t)OC * IC, 0.02f, &r);
    float *y = dev_rand((size_t)N * OC, 1, &r);
    float *dx = be->alloc((size_t)N * IC * 4), *dw = be->alloc((size_t)OC * IC * 4);
    double best_f = 1e30, best_b = 1e30;
    for (int rep = 0; rep < 4; rep++) {
        sync_dev();
        double t0 = ms_now();
        be->matmul_fwd(y, x, w, N, IC, OC);
        sync_dev();
        double t1 = ms_now();
        be->matmul_bwd(dx, dw, y, x, w, N, IC, OC);
        sync_dev();
        double t2 = ms_now();
        if (rep) best_f = fmin(best_f, t1 - t0), best_b = fmin(best_b, t2 - t1);
    }
    double flops = 2.0 * N * IC * OC;
    printf("matmul N=%d IC=%d OC=%d: fwd %.2f ms (%.1f TFLOP/s), bwd %.2f ms (%.1f TFLOP/s)\n", N,
           IC, OC, best_f * 1e3, flops / best_f / 1e12, best_b * 1e3, 2 * flops / best_b / 1e12);
    be->free(x), be->free(w), be->free(y), be->free(dx), be->free(dw);
}

// Returns tokens per second; attn = NULL: dense attention in every layer.
static double bench_train_attn(const char *name, ModelConfig c, int B, int T, int steps,
                               const AttnConfig *attn) {
    Model m;
    MS_ASSERT(model_create(&m, &c, be) == 0, "%s", ms_error());
    model_init_weights(&m, 1);
    if (attn) {
        AttnConfig *cfgs = malloc(sizeof *cfgs * c.layers);
        for (int l = 0; l < c.layers; l++) cfgs[l] = *attn;
        MS_ASSERT(model_set_attention(&m, cfgs) == 0, "%s", ms_error());
        free(cfgs);
    }
    OptimConfig oc = optim_config_default();
    oc.steps = steps;
    oc.warmup = 1;
    Optimizer o;
    optim_create(&o, &oc, &m);
    int N = B * T, *tok = malloc(sizeof(int) * N), *tgt = malloc(sizeof(int) * N);
    Rng r;
    rng_seed(&r, 3);
    for (int i = 0; i < N; i++) tok[i] = (int)rng_below(&r, c.vocab), tgt[i] = (int)rng_below(&r, c.vocab);
    double t0 = 0;
    float loss = 0;
    for (int s = 0; s < steps; s++) {
        if (s == 2) sync_dev(), t0 = ms_now(); // two warm-up steps
        model_zero_grad(&m);
        loss = model_forward(&m, tok, tgt, B, T);
        model_backward(&m);
        optim_step(&o, &m, s);
    }
    sync_dev();
    double dt = (ms_now() - t0) / (steps - 2);
    printf("train %-8s %.1fM params, B=%d T=%d: %.1f ms/step, %.0f tokens/s (loss %.3f)\n", name,
           model_num_params(&c) / 1e6, B, T, dt * 1e3, N / dt, loss);
    optim_destroy(&o, &m);
    model_destroy(&m);
    free(tok), free(tgt);
    return N / dt;
}
static void bench_train(const char *name, ModelConfig c, int B, int T, int steps) {
    bench_train_attn(name, c, B, T, steps, NULL);
}

// --lm: issue 8's end-to-end rows, the shapes of torch_peers_dense.py's eager PyTorch LM (dim 768,
// 12 layers, 12 heads, SwiGLU 4*dim, vocab 32000, untied, 162M parameters) on the bf16 backend:
// dense at T=4096 x 8, and MS attention (w 16, top 512, merge 128) at T=32768 x 1, deterministic,
// then the first two again in the atomic mode ("-nd"). Random tokens,
// AdamW, two warm-up steps; rows appended to --tsv FILE as `lm-<attn>-bf16 train T ms_per_step`.
// MSLAB_LM_ROWS=02 runs rows 0 and 2 only (for profilers).
static int bench_lm(int argc, char **argv) {
    const char *tsv = NULL;
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--tsv")) tsv = argv[i + 1];
    if (!(be = backend_cuda_bf16())) {
        fprintf(stderr, "mslab-gpu-bench: %s\n", ms_error());
        return 2;
    }
    printf("device: %s (precision bf16)\n", backend_cuda_device_name());
    ModelConfig c = model_config_default();
    c.dim = 768, c.layers = 12, c.heads = 12, c.kv_heads = 12, c.ffn = 3072, c.vocab = 32000;
    c.tied = 0;
    AttnConfig ms = attn_config_default(ATTN_MS);
    ms.w = 16, ms.top = 512, ms.merge = 128;
    // nd: the attention backward in the atomic mode (deterministic = false; PyTorch's FA2
    // backward adds dQ by atomics too), rows "<name>-nd"
    struct { const char *name; int B, T; const AttnConfig *attn; int nd; } rows[] = {
        {"lm-dense-bf16", 8, 4096, NULL, 0},
        {"lm-ms-bf16", 1, 32768, &ms, 0},
        {"lm-dense-bf16", 1, 32768, NULL, 0},
        {"lm-dense-bf16-nd", 8, 4096, NULL, 1},
        {"lm-ms-bf16-nd", 1, 32768, &ms, 1},
    };
    int nrows = (int)(sizeof rows / sizeof rows[0]);
    FILE *f = tsv ? fopen(tsv, "a") : NULL;
    if (tsv && !f) {
        fprintf(stderr, "mslab-gpu-bench: cannot append to %s\n", tsv);
        return 1;
    }
    const char *only = getenv("MSLAB_LM_ROWS"); // e.g. "0": the rows to run (profiling)
    for (int i = 0; i < nrows; i++) {
        if (only && !strchr(only, '0' + i)) continue;
        int old = attn_bf16_set_deterministic(!rows[i].nd);
        double tps = bench_train_attn(rows[i].name, c, rows[i].B, rows[i].T, 7, rows[i].attn);
        attn_bf16_set_deterministic(old);
        if (f)
            fprintf(f, "%s\ttrain\t%d\t%.4f\tn/a\ttokens_per_s=%.0f;batch=%d;params_m=%.0f\n",
                    rows[i].name, rows[i].T, 1e3 * rows[i].B * rows[i].T / tps, tps, rows[i].B,
                    model_num_params(&c) / 1e6);
    }
    if (f) fclose(f);
    return 0;
}

int main(int argc, char **argv) {
    int quick = argc > 1 && !strcmp(argv[1], "--quick"), attn = 0, lm = 0;
    for (int i = 1; i < argc; i++)
        attn |= !strcmp(argv[i], "--attn"), lm |= !strcmp(argv[i], "--lm");
    if (lm) return bench_lm(argc, argv);
    be = backend_cuda();
    if (!be) {
        fprintf(stderr, "mslab-gpu-bench: %s\n", ms_error());
        return 2;
    }
    if (attn) return attn_bench_main(argc, argv, be);
    printf("device: %s (fp32, TF32 %s)\n", backend_cuda_device_name(),
           getenv("MSLAB_CUDA_TF32") ? getenv("MSLAB_CUDA_TF32") : "off");
    bench_matmul(8192, 768, 3072);
    bench_attention(4, 2048, 16, 4, 64);
    bench_attention(2, 4096, 8, 2, 128);
    if (!quick) bench_attention(1, 16384, 8, 2, 128);
    ModelConfig demo = model_config_default();
    demo.dim = 128, demo.layers = 4, demo.heads = 4, demo.kv_heads = 2, demo.ffn = 352;
    bench_train("demo", demo, 16, 128, 12);
    ModelConfig big = model_config_default(); // ~100M parameters with a 32k vocabulary
    big.dim = 768, big.layers = 12, big.heads = 12, big.kv_heads = 4, big.ffn = 2048;
    big.vocab = 32000, big.tied = 0;
    bench_train("100M", big, 8, 1024, quick ? 4 : 8);
    // bf16 mixed precision (cuda/backend_bf16.cu, docs/cuda.md "Precision"): the same rows
    if ((be = backend_cuda_bf16())) {
        printf("precision bf16 (GEMM / attention operands bf16, fp32 accumulation):\n");
        bench_matmul(8192, 768, 3072);
        bench_train("demo-bf16", demo, 16, 128, 12);
        bench_train("100M-bf16", big, 8, 1024, quick ? 4 : 8);
    }
    return 0;
}
