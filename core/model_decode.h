// model_decode.h: inference with a KV cache, for generation and long prompts.
// The same Llama block as model_forward (core/model.c), run on a few new tokens at a time: their
// rotated keys and values are appended to a per-layer cache and their queries attend to everything
// cached (ops.h attention_decode). Positions are model_forward's defaults, t * pos_stride, with its
// inv_freq and YaRN mscale, so the logits equal model_forward's on the whole sequence (up to
// float rounding). Attention is dense: a sparse attention kind decodes as its dense baseline.
// One sequence per cache; no activations are kept (no backward).
#ifndef MSLAB_MODEL_DECODE_H
#define MSLAB_MODEL_DECODE_H

#include "model.h"

typedef struct {
    int cap;        // positions the cache holds
    int len;        // positions filled: the next token goes to position len
    int chunk;      // tokens per step: longer inputs go through in chunks of this many
    float *k, *v;   // backend [L, cap, KVD]: rotated keys, values
    void *block;    // backend scratch for `chunk` rows, carved below
    float *x, *xn, *q, *qr, *kn, *att, *tmp, *gate, *up, *h, *rstd, *pos, *logits;
    int *tokens;
    float *pos_host; // [chunk]
} KVCache;

// Allocates a cache of cap positions on m's backend; chunk <= 0 picks 64. Fails (ms_fail) when
// the backend has no attention_decode.
int kvcache_create(KVCache *c, const Model *m, int cap, int chunk);
void kvcache_free(KVCache *c, const Model *m);
static inline void kvcache_reset(KVCache *c) { c->len = 0; }

// Runs tokens[n] at positions c->len .. c->len + n - 1 and appends them to the cache. logits
// (host, may be NULL): the next-token logits [V] after the last token, or with all = 1 [n, V]
// after each. Past the capacity it fails (ms_fail) and leaves the cache as it was.
int model_forward_cached(Model *m, KVCache *c, const int *tokens, int n, float *logits, int all);

#endif
