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
} Backend;

// The CPU reference backend (core/cpu/). Always available.
const Backend *backend_cpu(void);

#endif
