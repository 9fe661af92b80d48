// ops.h: the backend interface. Every numeric op of the engine, forward and backward, goes through
// one table of function pointers; the model never knows which backend runs it (ggml's idea, llm.c's
// explicit-shape signatures). CPU (core/cpu/) is the reference; CUDA (cuda/) implements the same table.
//
// Conventions, for every op:
//  - Pointers are backend memory (host memory for the CPU backend). Row-major, no strides.
//  - Shapes are explicit arguments. Activations are [N, C] with N = B*T rows, or [B, T, H, D].
//  - Forward ops OVERWRITE their outputs.
//  - Backward ops ACCUMULATE (+=) into every gradient they produce (input and parameter gradients),
//    so branches (residuals, tied weights, q/k/v sharing one input) sum naturally; the caller zeroes.
//  - Reductions are deterministic: the same inputs give bitwise-identical outputs on every call.
#ifndef MSLAB_OPS_H
#define MSLAB_OPS_H

#include <stddef.h>

// RoPE pair conventions.
enum {
    ROPE_INTERLEAVED = 0, // pairs (2i, 2i+1): llama2.c / Meta / GPT-J
    ROPE_HALVES = 1,      // pairs (i, i + D/2): HF Llama "rotate_half"
};

// The index list of block-sparse attention. Query block c of a sequence is rows
// [c*qblock, min(T, (c+1)*qblock)); key region r is keys [r*region, min(T, (r+1)*region)).
// Each (batch b, query head h, block c) has `width` slots at idx[((b*H + h)*nblk + c)*width]:
// region ids, the valid ones first and then -1, none twice. Row t sees key j of a listed region
// iff j <= t and (window == 0 or j > t - window); every row must see its own key.
// With kpos (positions inside the attention): slot s's region's first key sits at position
// kpos[s] (its key j at kpos[s] + j - r*region), the block's first row at qpos[c] (same layout
// without the slot axis), rotated with inv_freq [D/2] in rope_style.
struct AttnConfig;
typedef struct AttnIndex {
    int qblock, nblk, region, width, window;
    int *idx;  // [B, H, nblk, width] backend memory
    int *kpos; // NULL or [B, H, nblk, width]
    int *qpos; // NULL or [B, H, nblk]
    const float *inv_freq;
    int rope_style;
} AttnIndex;

typedef struct Backend {
    const char *name;

    // ---- memory ----
    void *(*alloc)(size_t bytes);                 // zero-filled; aborts on failure
    void (*free)(void *p);
    void (*upload)(void *dst, const void *src_host, size_t bytes);
    void (*download)(void *dst_host, const void *src, size_t bytes);
    void (*zero)(float *x, size_t n);
    void (*copy)(float *dst, const float *src, size_t n);

    // ---- elementwise ----
    // out = a + b (out may alias a or b)
    void (*add)(float *out, const float *a, const float *b, size_t n);
    // x *= s
    void (*scale)(float *x, float s, size_t n);
    // sum of squares, accumulated in double, returned as double (for gradient-norm clipping)
    double (*sumsq)(const float *x, size_t n);

    // ---- embedding: out[N, C] = wte[tok[n], :] ----
    void (*embedding_fwd)(float *out, const int *tok, const float *wte, int N, int C);
    void (*embedding_bwd)(float *dwte, const float *dout, const int *tok, int N, int C);

    // ---- linear (no bias): out[N, OC] = inp[N, IC] @ w[OC, IC]^T ----
    void (*matmul_fwd)(float *out, const float *inp, const float *w, int N, int IC, int OC);
    // dinp[N, IC] += dout @ w ; dw[OC, IC] += dout^T @ inp. Either gradient pointer may be NULL.
    void (*matmul_bwd)(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                       int N, int IC, int OC);

    // ---- RMSNorm: out = inp * rstd * w, rstd[n] = 1/sqrt(mean(inp[n]^2) + eps) ----
    void (*rmsnorm_fwd)(float *out, float *rstd, const float *inp, const float *w, int N, int C,
                        float eps);
    void (*rmsnorm_bwd)(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                        const float *rstd, int N, int C);

    // ---- RoPE on x[N, H, D] (N = B*T tokens), out-of-place ----
    // Token n, pair i rotates by angle pos[n] * inv_freq[i], i < D/2. Positions are per-token floats
    // so every position scheme (PI, cyclic, re-indexed) is just a different pos array; inv_freq
    // carries the base / NTK / YaRN choice. style: ROPE_INTERLEAVED or ROPE_HALVES.
    void (*rope_fwd)(float *out, const float *inp, const float *pos, const float *inv_freq, int N,
                     int H, int D, int style);
    // dinp += R(-angle) dout
    void (*rope_bwd)(float *dinp, const float *dout, const float *pos, const float *inv_freq,
                     int N, int H, int D, int style);

    // ---- dense causal attention, grouped-query ----
    // q, out: [B, T, H, D]; k, v: [B, T, KVH, D], H % KVH == 0, query head h reads kv head
    // h / (H / KVH). Scale 1/sqrt(D). lse: [B, H, T] log-sum-exp of each query row's scaled scores,
    // saved for the backward (flash-style: no T x T matrix is kept).
    void (*attention_fwd)(float *out, float *lse, const float *q, const float *k, const float *v,
                          int B, int T, int H, int KVH, int D);
    void (*attention_bwd)(float *dq, float *dk, float *dv, const float *dout, const float *out,
                          const float *lse, const float *q, const float *k, const float *v, int B,
                          int T, int H, int KVH, int D);

    // ---- block-sparse causal attention over an index list (ms, moba, s2, window) ----
    // Shapes and lse as attention_fwd/bwd; which keys each row sees comes from ix (AttnIndex
    // above). K/V rows are read through the list, never gathered into a copy; the backward
    // scatter-adds dK/dV in a fixed order (no floating-point atomics) and has no gradient through
    // the list. With ix->kpos, q and k are un-rotated and the op applies RoPE at the list's
    // positions (ms positions = "reindexed"); dq/dk are then gradients of the un-rotated q/k.
    void (*sparse_attention_fwd)(float *out, float *lse, const float *q, const float *k,
                                 const float *v, const struct AttnIndex *ix, int B, int T, int H,
                                 int KVH, int D);
    void (*sparse_attention_bwd)(float *dq, float *dk, float *dv, const float *dout,
                                 const float *out, const float *lse, const float *q,
                                 const float *k, const float *v, const struct AttnIndex *ix,
                                 int B, int T, int H, int KVH, int D);
    // The selection: fills ix->idx (and kpos/qpos) for cfg at length T from the q [B,T,H,D] and
    // k [B,T,KVH,D] it selects on (pool, score, eligibility, top-S, merge; core/attention.h and
    // docs/attention.md). ix's shape comes from attn_dims; the caller allocates its arrays.
    void (*attention_select)(struct AttnIndex *ix, const struct AttnConfig *cfg, const float *q,
                             const float *k, int B, int T, int H, int KVH, int D);

    // ---- SwiGLU: out = silu(gate) * up, silu(z) = z * sigmoid(z) ----
    void (*swiglu_fwd)(float *out, const float *gate, const float *up, size_t n);
    void (*swiglu_bwd)(float *dgate, float *dup, const float *dout, const float *gate,
                       const float *up, size_t n);

    // ---- cross-entropy over logits[N, V] with targets[N]; target < 0 = ignored (loss 0) ----
    // losses[n] = logsumexp(logits[n]) - logits[n, target[n]]
    void (*crossentropy_fwd)(float *losses, const float *logits, const int *targets, int N, int V);
    // dlogits[n] += dloss * (softmax(logits[n]) - onehot(target[n])) for non-ignored rows
    void (*crossentropy_bwd)(float *dlogits, const float *logits, const int *targets, float dloss,
                             int N, int V);

    // ---- AdamW (decoupled weight decay), step t >= 1 ----
    // m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p)
    // wd may differ per tensor: the optimizer calls this once per parameter tensor.
    void (*adamw)(float *p, const float *g, float *m, float *v, size_t n, float lr, float b1,
                  float b2, float eps, float wd, int t);

    // ---- inference: new queries over a KV cache (no backward; core/model_decode.c) ----
    // One sequence. q, out: [Tq, H, D], the rows of positions t0 .. t0+Tq-1; k, v: [t0+Tq, KVH, D],
    // cache rows 0 .. t0+Tq-1 (the new rows included). Query i sees keys 0 .. t0+i; heads grouped
    // and scaled as attention_fwd, whose rows it reproduces. NULL in a backend without it.
    void (*attention_decode)(float *out, const float *q, const float *k, const float *v, int Tq,
                             int t0, int H, int KVH, int D);
} Backend;

// The CPU reference backend (core/cpu/). Always available.
const Backend *backend_cpu(void);

#endif
