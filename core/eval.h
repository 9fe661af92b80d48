// eval.h: evaluation of a model on held-out tokens.
#ifndef MSLAB_EVAL_H
#define MSLAB_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

typedef struct {
    double nll;     // the averaged NLL of the protocol (nats): token-weighted for windows and
                    // sliding, the mean of the windows' mean NLLs for truncate and longlora
    double ppl;     // exp(nll)
    int64_t n;      // scored tokens
    int64_t windows;
} PplResult;

// Perplexity protocols (docs/eval.md; anchors.md C.2). A window of length L reads L input tokens
// w[0..L) and predicts w[1..L] (L predictions; HF-style code counts L tokens and L-1 predictions).
//  windows  : non-overlapping windows starting every L tokens of the stream; all predictions
//             scored; exp(sum NLL / tokens) (token-weighted).
//  sliding  : HF strided window: windows start every `stride` tokens, each of length L (the last
//             one shorter, ending at the stream's end); only the targets no earlier window scored
//             are counted; exp(sum NLL / tokens) (token-weighted). Every token after the first is
//             scored exactly once.
//  truncate : YaRN --truncate: each document with at least L+1 tokens is truncated to one window
//             of length L at its start (shorter documents are skipped); exp(mean over windows of
//             the window's mean NLL).
//  longlora : LongLoRA eval.py: windows of length L start every `stride` (256) tokens, at
//             i = 0, S, 2S, ... while i < n - L, and the last start is dropped as its get_as_batch
//             does (all_ix.pop()); all predictions scored; exp(mean over windows of window losses).
// windows, sliding and longlora read the documents' concatenation (each stream separately).
typedef enum { PPL_WINDOWS, PPL_SLIDING, PPL_TRUNCATE, PPL_LONGLORA, PPL_NPROTOCOLS } PplProtocol;
extern const char *const ppl_protocol_names[PPL_NPROTOCOLS + 1]; // NULL-terminated
int ppl_protocol_from_name(const char *name); // -1 if unknown

// A token stream: the concatenation of documents starting at doc_start[0..n_docs) (ascending,
// doc_start[0] == 0). doc_start may be NULL: one document.
typedef struct {
    const uint16_t *tokens;
    size_t n;
    const size_t *doc_start;
    int n_docs;
} EvalStream;

typedef struct {
    int protocol;         // PplProtocol
    int L;                // window length (inputs)
    int stride;           // sliding, longlora: window step (<= 0: L/2 for sliding, 256 for longlora)
    int64_t max_tokens;   // <= 0: all; else whole windows are taken in order while at most this
                          // many predictions are scored in all (at least one window)
    int64_t batch_tokens; // windows run batch_tokens / L at a time (at least one)
} PplSpec;

// Runs the protocol over the streams in order (they are pooled as the protocol averages). The
// model runs forward-only (model_set_forward_only) while evaluating, so memory is bounded by
// max(L, batch_tokens) rows of one layer's activations. 0, or -1 (ms_error) if no window fits.
int eval_ppl(Model *m, const EvalStream *streams, int n_streams, const PplSpec *spec, PplResult *out);

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
