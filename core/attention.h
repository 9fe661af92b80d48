// attention.h: attention kinds (dense, ms, moba, s2, window), their knobs, and the plan that turns a
// config and a length into a block-sparse index list (ops.h: AttnIndex). Every sparse kind is one
// and the same computation: each query block attends to a list of key regions under the causal
// mask (plus a band for `window`); the kinds differ only in how the list is built.
// docs/attention.md describes each knob, its default and which reading of the spec it is.
#ifndef MSLAB_ATTENTION_H
#define MSLAB_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

#include "ops.h"

enum { ATTN_DENSE, ATTN_MS, ATTN_MOBA, ATTN_S2, ATTN_WINDOW, ATTN_NKINDS };
enum { ATTN_EVAL_DENSE, ATTN_EVAL_SAME };         // attention while the model evaluates
enum { POOL_MEAN, POOL_MAX, POOL_FIRST, POOL_NMEAN }; // semantic token of a region
enum { SCORE_DOT, SCORE_SCALED, SCORE_COSINE };
enum { SELECT_REGION, SELECT_GROUP };             // top-S per query region then merge | per group
enum { ORDER_RANK, ORDER_SCORE, ORDER_VOTES };    // priority of the merged candidates
enum { SELECT_ON_ROTATED, SELECT_ON_UNROTATED };  // q/k the selection pools
enum { POS_TRUE, POS_REINDEXED };                 // RoPE positions of the gathered keys
enum { TAIL_SELECT, TAIL_DENSE };                 // the last, partial group

extern const char *const attn_kind_names[];   // "dense", "ms", "moba", "s2", "window", NULL
extern const char *const attn_eval_names[];   // "dense", "same"
extern const char *const attn_pool_names[];   // "mean", "max", "first", "nmean"
extern const char *const attn_score_names[];  // "dot", "scaled", "cosine"
extern const char *const attn_select_names[]; // "region", "group"
extern const char *const attn_order_names[];  // "rank", "score", "votes"
extern const char *const attn_select_on_names[]; // "rotated", "unrotated"
extern const char *const attn_positions_names[]; // "true", "reindexed"
extern const char *const attn_tail_names[];   // "select", "dense"

typedef struct AttnConfig {
    int kind, eval;
    // ms: regions of w tokens; groups of `merge` regions share one list of `top` regions
    // (top - merge selected + merge local); the first `prefix` tokens are dense causal
    int w, top, merge, prefix; // prefix < 0: top * w (the draft)
    double ratio;              // ms: top from the length (ceil(ratio * regions)); s2: group / T
    int pool, score, select, order, local_groups, select_on, positions, tail;
    int block;                 // moba: block size (top = blocks per query, its own included)
    int group;                 // s2: tokens per group (0: ratio * T)
    int window;                // window: keys per query, itself included
} AttnConfig;

// Defaults of a kind: the paper's / the method's published values (docs/attention.md).
AttnConfig attn_config_default(int kind);
// Checks a config; messages name the key under `prefix` ("attention" or "attention.layers[2]").
int attn_config_check(const AttnConfig *c, const char *prefix);
// 1 when the knob (a Lua key) belongs to the kind; the list of a kind's knobs for messages.
int attn_knob_applies(int kind, const char *key);
const char *attn_knobs_of(int kind);
int attn_config_equal(const AttnConfig *a, const AttnConfig *b);

// The plan's shape at length T (everything the index list needs besides q and k).
typedef struct {
    int qblock, nblk, region, width, window; // as in AttnIndex
    int dense;  // the whole length is plain causal attention (short sequence, or kind dense)
    int reindex; // positions inside the attention (ms positions = "reindexed")
    // ms, at this length
    int N;      // regions ceil(T / w)
    int R, S, M, lg; // regions per list (top), selected (R - M), merge, local groups
    int P;      // dense prefix in tokens (a multiple of G)
    int G;      // query tokens per group (M * w)
    int first;  // first selecting block (P / G)
    int last_dense; // the last block is dense (tail = "dense" and it is partial)
} AttnDims;
int attn_dims(const AttnConfig *c, int T, AttnDims *d);

// Eligible key regions of a selecting unit (ms). Member region g of group block c selects among
// regions [0, e) with e = attn_ms_eligible(d, c, g); a whole group (select = "group") uses g = -1.
int attn_ms_eligible(const AttnDims *d, int c, int g);

// Realised cost of a plan: query-key pairs computed (per batch item, summed over heads), the
// causal pairs of dense attention, and the dot products the selection scored.
typedef struct {
    double pairs, causal_pairs, select_dots;
} AttnStats;
// Counts from a host copy of the index list [B, H, nblk, width] (B = 1 rows suffice: the counts
// do not depend on the data) and the selection's scoring work at length T.
void attn_count(const AttnConfig *c, const AttnDims *d, const int *idx, int H, int T,
                AttnStats *st);

// ---- one layer of the model ------------------------------------------------------------------
// The per-layer state: config, and the index list of the last forward (kept for its backward).
typedef struct {
    AttnConfig cfg;
    AttnIndex ix;
    AttnDims dims;
    int *qpos_mem;            // qpos's allocation (ix.qpos is NULL unless positions are inside)
    size_t cap_idx, cap_qpos; // ints allocated for idx (+ kpos) and qpos
    int mode;                 // last forward: 0 dense, 1 sparse on rotated q/k, 2 positions inside
    int B, T;
    int frozen;               // reuse the last list at the same (B, T) (tests: finite differences
                              // with the selection held fixed)
} AttnLayer;

void attn_layer_free(AttnLayer *al, const Backend *be);
// Runs the attention of one layer. q, k: before RoPE; qr, kr: after; the kind, the length and
// `eval` (the model is evaluating) pick dense or sparse. inv_freq/rope_style are those of the model
// (used when the attention places positions itself).
void attn_layer_fwd(AttnLayer *al, const Backend *be, float *out, float *lse, const float *q,
                    const float *k, const float *qr, const float *kr, const float *v, int B, int T,
                    int H, int KVH, int D, const float *inv_freq, int rope_style, int eval);
// Backward of the last forward, accumulating into dq, dk, dv. Returns 1 when dq/dk are gradients
// of the un-rotated q/k (positions inside the attention: the caller skips RoPE's backward), 0 when
// they are gradients of the rotated qr/kr.
int attn_layer_bwd(AttnLayer *al, const Backend *be, float *dq, float *dk, float *dv,
                   const float *dout, const float *out, const float *lse, const float *q,
                   const float *k, const float *qr, const float *kr, const float *v, int H,
                   int KVH, int D);
// Stats of the last forward's plan (dense: pairs = causal pairs).
void attn_layer_stats(const AttnLayer *al, const Backend *be, int H, int D, AttnStats *st);

// Canonical JSON object of a config ({"kind":"dense"} for dense) and flattened key/values.
char *attn_config_json(const AttnConfig *c); // malloc'd
typedef void (*AttnEmitFn)(void *ctx, const char *key, const char *value);
void attn_config_emit(const AttnConfig *c, const char *prefix, AttnEmitFn emit, void *ctx);

#endif
