// eval.h: evaluation of a model on held-out tokens.
#ifndef MSLAB_EVAL_H
#define MSLAB_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

typedef struct {
    double nll;     // mean negative log-likelihood per scored token (nats)
    double ppl;     // exp(nll)
    int64_t n;      // scored tokens
    int64_t windows;
} PplResult;

// Protocol "windows": the token stream is cut into consecutive, non-overlapping windows of L
// inputs (window w reads tokens[w*L .. w*L+L) and predicts tokens[w*L+1 .. w*L+L]); every
// prediction is scored and the perplexity is token-weighted: exp(sum NLL / count).
// At most max_tokens predictions are scored (<= 0: all whole windows). Windows are run
// batch_tokens / L at a time so memory stays bounded. Returns 0, or -1 if not one window fits.
int eval_ppl_windows(Model *m, const uint16_t *tokens, size_t n, int L, int64_t max_tokens,
                     int64_t batch_tokens, PplResult *out);

// Mean loss over `batches` fixed batches of B x T windows drawn with a fixed seed (the same
// windows every call, so the curve is comparable across steps).
double eval_loss(Model *m, const uint16_t *tokens, size_t n, int B, int T, int batches,
                 uint64_t seed);

#endif
