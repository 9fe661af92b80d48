// eval.c: perplexity by protocol, and the held-out loss used during training.
#include "eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

const char *const ppl_protocol_names[PPL_NPROTOCOLS + 1] = {"windows", "sliding", "truncate",
                                                              "longlora", NULL};

int ppl_protocol_from_name(const char *name) {
    for (int i = 0; i < PPL_NPROTOCOLS; i++)
        if (!strcmp(name, ppl_protocol_names[i])) return i;
    return -1;
}

typedef struct {
    size_t start; // first input token in its stream
    int len;      // inputs (= predictions)
    int first;    // predictions before this offset are not scored (sliding)
    int stream;
} Window;

typedef struct {
    Window *w;
    int64_t n, cap;
    int64_t scored; // predictions scored so far (all streams)
    int64_t max_tokens;
    int stream;
} Plan;

// Adds a window if the max_tokens budget allows it (always the first); 0 when the budget is spent.
static int plan_add(Plan *p, size_t start, int len, int first) {
    int64_t cnt = len - first;
    if (p->max_tokens > 0 && p->scored > 0 && p->scored + cnt > p->max_tokens) return 0;
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 64;
        p->w = ms_realloc(p->w, sizeof(Window) * (size_t)p->cap);
    }
    p->w[p->n++] = (Window){start, len, first, p->stream};
    p->scored += cnt;
    return 1;
}

// The protocol's windows over one stream; 0 when the max_tokens budget is spent.
static int plan_stream(Plan *p, const EvalStream *s, const PplSpec *sp) {
    int L = sp->L;
    size_t n = s->n;
    if (sp->protocol == PPL_TRUNCATE) {
        int nd = s->doc_start ? s->n_docs : 1;
        for (int d = 0; d < nd; d++) {
            size_t a = s->doc_start ? s->doc_start[d] : 0;
            size_t b = d + 1 < nd ? s->doc_start[d + 1] : n;
            if (b - a >= (size_t)L + 1 && !plan_add(p, a, L, 0)) return 0;
        }
        return 1;
    }
    if (n < (size_t)L + 1) return 1;
    if (sp->protocol == PPL_WINDOWS) {
        for (size_t w = 0; w < (n - 1) / L; w++)
            if (!plan_add(p, w * L, L, 0)) return 0;
    } else if (sp->protocol == PPL_SLIDING) {
        int S = sp->stride > 0 ? sp->stride : (L / 2 > 0 ? L / 2 : 1);
        size_t prev_end = 0; // last target index scored (the targets are tokens 1 .. n-1)
        for (size_t b = 0;; b += S) {
            size_t end = b + L < n - 1 ? b + L : n - 1;
            if (!plan_add(p, b, (int)(end - b), (int)(prev_end - b))) return 0;
            prev_end = end;
            if (end == n - 1) break;
        }
    } else { // PPL_LONGLORA: starts range(0, n - L, S), then all_ix.pop()
        int S = sp->stride > 0 ? sp->stride : 256;
        size_t count = (n - L - 1) / S + 1;
        for (size_t k = 0; k + 1 < count; k++)
            if (!plan_add(p, k * S, L, 0)) return 0;
    }
    return 1;
}

int eval_ppl(Model *m, const EvalStream *streams, int n_streams, const PplSpec *sp, PplResult *out) {
    *out = (PplResult){0};
    int L = sp->L;
    if (L <= 0) return ms_fail("eval length %d must be positive", L);
    if (sp->protocol < 0 || sp->protocol >= PPL_NPROTOCOLS)
        return ms_fail("eval protocol %d is not a protocol", sp->protocol);
    if (sp->protocol == PPL_SLIDING && sp->stride > L)
        return ms_fail("eval.ppl.stride (%d) must be at most the length (%d) for \"sliding\"",
                       sp->stride, L);
    Plan p = {.max_tokens = sp->max_tokens};
    size_t total = 0;
    for (int i = 0; i < n_streams; i++) {
        total += streams[i].n;
        p.stream = i;
        if (!plan_stream(&p, &streams[i], sp)) break;
    }
    if (!p.n) {
        free(p.w);
        if (sp->protocol == PPL_TRUNCATE)
            return ms_fail("eval set: no document has the %d tokens one \"truncate\" window of "
                           "length %d needs", L + 1, L);
        return ms_fail("eval set has %zu tokens: too few for one \"%s\" window of length %d", total,
                       ppl_protocol_names[sp->protocol], L);
    }
    int B = sp->batch_tokens / L > 0 ? (int)(sp->batch_tokens / L) : 1;
    int *inp = ms_malloc(sizeof(int) * (size_t)B * L), *tgt = ms_malloc(sizeof(int) * (size_t)B * L);
    float *losses = ms_malloc(sizeof(float) * (size_t)B * L);
    int was_fo = m->forward_only;
    model_set_forward_only(m, 1);
    double tok_sum = 0, win_mean_sum = 0;
    int64_t tok_n = 0;
    for (int64_t k = 0; k < p.n;) {
        // a batch: up to B consecutive windows of the same length from the same stream
        int nb = 0, T = p.w[k].len, si = p.w[k].stream;
        while (nb < B && k + nb < p.n && p.w[k + nb].len == T && p.w[k + nb].stream == si) nb++;
        for (int b = 0; b < nb; b++) {
            const uint16_t *src = streams[si].tokens + p.w[k + b].start;
            for (int t = 0; t < T; t++) {
                inp[b * T + t] = src[t];
                tgt[b * T + t] = src[t + 1];
            }
        }
        model_forward(m, inp, tgt, nb, T);
        model_get_losses(m, losses);
        for (int b = 0; b < nb; b++) {
            const Window *w = &p.w[k + b];
            double sum = 0; // fixed order: deterministic
            for (int t = w->first; t < T; t++) sum += losses[b * T + t];
            tok_sum += sum;
            tok_n += T - w->first;
            win_mean_sum += sum / (T - w->first);
        }
        k += nb;
    }
    model_set_forward_only(m, was_fo);
    free(inp);
    free(tgt);
    free(losses);
    out->windows = p.n;
    out->n = tok_n;
    int weighted = sp->protocol == PPL_WINDOWS || sp->protocol == PPL_SLIDING;
    out->nll = weighted ? tok_sum / tok_n : win_mean_sum / p.n;
    out->ppl = exp(out->nll);
    free(p.w);
    return 0;
}

int eval_ppl_windows(Model *m, const uint16_t *tokens, size_t n, int L, int64_t max_tokens,
                     int64_t batch_tokens, PplResult *out) {
    EvalStream s = {tokens, n, NULL, 1};
    PplSpec sp = {.protocol = PPL_WINDOWS, .L = L, .max_tokens = max_tokens,
                  .batch_tokens = batch_tokens};
    return eval_ppl(m, &s, 1, &sp, out);
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
