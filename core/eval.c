// eval.c: perplexity by protocol, and the held-out loss used during training.
#include "eval.h"

#include <math.h>
#include <stdlib.h>

#include "common.h"

int eval_ppl_windows(Model *m, const uint16_t *tokens, size_t n, int L, int64_t max_tokens,
                     int64_t batch_tokens, PplResult *out) {
    *out = (PplResult){0};
    if (L <= 0) return ms_fail("eval length %d must be positive", L);
    if (n < (size_t)L + 1)
        return ms_fail("eval set has %zu tokens: too few for one window of length %d", n, L);
    int64_t windows = (int64_t)((n - 1) / L);
    if (max_tokens > 0 && windows > max_tokens / L) windows = max_tokens / L > 0 ? max_tokens / L : 1;
    int B = batch_tokens / L > 0 ? (int)(batch_tokens / L) : 1;
    int *inp = ms_malloc(sizeof(int) * (size_t)B * L), *tgt = ms_malloc(sizeof(int) * (size_t)B * L);
    float *losses = ms_malloc(sizeof(float) * (size_t)B * L);
    double sum = 0;
    for (int64_t w0 = 0; w0 < windows; w0 += B) {
        int nb = (int)(windows - w0 < B ? windows - w0 : B);
        for (int b = 0; b < nb; b++) {
            const uint16_t *src = tokens + (size_t)(w0 + b) * L;
            for (int t = 0; t < L; t++) {
                inp[b * L + t] = src[t];
                tgt[b * L + t] = src[t + 1];
            }
        }
        model_forward(m, inp, tgt, nb, L);
        model_get_losses(m, losses);
        for (int i = 0; i < nb * L; i++) sum += losses[i]; // fixed order: deterministic
    }
    free(inp);
    free(tgt);
    free(losses);
    out->windows = windows;
    out->n = windows * L;
    out->nll = sum / out->n;
    out->ppl = exp(out->nll);
    return 0;
}

double eval_loss(Model *m, const uint16_t *tokens, size_t n, int B, int T, int batches,
                 uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    int *inp = ms_malloc(sizeof(int) * (size_t)B * T), *tgt = ms_malloc(sizeof(int) * (size_t)B * T);
    double sum = 0;
    for (int i = 0; i < batches; i++) {
        for (int b = 0; b < B; b++) {
            size_t start = rng_below(&rng, n - T);
            for (int t = 0; t < T; t++) {
                inp[b * T + t] = tokens[start + t];
                tgt[b * T + t] = tokens[start + t + 1];
            }
        }
        sum += model_forward(m, inp, tgt, B, T);
    }
    free(inp);
    free(tgt);
    return sum / batches;
}
