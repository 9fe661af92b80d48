// model.h: a Llama-style decoder written against ops.h only.
// token embedding -> L x [RMSNorm -> GQA attention with RoPE -> residual, RMSNorm -> SwiGLU -> residual]
// -> final RMSNorm -> LM head (tied to the embedding or not) -> cross-entropy.
#ifndef MSLAB_MODEL_H
#define MSLAB_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "attention.h"
#include "ops.h"

typedef struct {
    int dim;        // C, residual width
    int layers;     // L
    int heads;      // H query heads, head_dim = dim / heads
    int kv_heads;   // KVH, divides heads (grouped-query attention)
    int ffn;        // F, SwiGLU inner width
    int vocab;      // V
    int seq_len;    // training context length (informational; any T can be run)
    int tied;       // 1: LM head = token embedding
    int rope_style; // ROPE_INTERLEAVED or ROPE_HALVES
    float rope_base;
    float norm_eps;
} ModelConfig;

// Parameter tensors, all views into one contiguous buffer (so the optimizer and checkpoints see a
// flat array). Per-layer tensors are stacked on the outer axis, llama2.c order.
enum {
    P_WTE,        // [V, C]
    P_ATTN_NORM,  // [L, C]
    P_WQ,         // [L, C, C]
    P_WK,         // [L, KVD, C], KVD = KVH * head_dim
    P_WV,         // [L, KVD, C]
    P_WO,         // [L, C, C]
    P_FFN_NORM,   // [L, C]
    P_W1,         // [L, F, C] gate
    P_W2,         // [L, C, F] down
    P_W3,         // [L, F, C] up
    P_FINAL_NORM, // [C]
    P_WCLS,       // [V, C], size 0 when tied
    P_COUNT
};
extern const char *const model_param_names[P_COUNT];

typedef struct {
    float *t[P_COUNT];    // backend pointers into one buffer
    size_t size[P_COUNT]; // elements of each tensor
    size_t total;         // elements in all
    float *base;
} ParamTensors;

// Activations saved by the forward for the backward, for up to `capacity` rows N = B*T (grown on
// demand, one backend allocation).
typedef struct {
    size_t capacity;
    int fwd_only;         // allocated for model_set_forward_only (one layer slot, no backward)
    void *block;
    float *x;             // [L+1, N, C] residual stream entering each layer (x[L] = after the last)
    float *xmid;          // [L, N, C] after the attention residual
    float *ln1, *rstd1;   // [L, N, C], [L, N]
    float *q, *k, *v;     // [L, N, C], [L, N, KVD], [L, N, KVD] (before RoPE)
    float *qr, *kr;       // same, after RoPE
    float *att, *lse;     // [L, N, C], [L, B, H, T]
    float *ln2, *rstd2;   // [L, N, C], [L, N]
    float *gate, *up, *h; // [L, N, F]
    float *lnf, *rstdf;   // [N, C], [N]
    float *logits;        // [N, V]
    float *losses;        // [N]
    float *pos;           // [L, N] positions handed to RoPE, one array per layer
    int *tokens, *targets; // [N]
    // scratch (forward branch outputs, backward gradients)
    float *tmp, *dx, *dln, *dq, *dk, *dv, *dqr, *dkr, *datt, *dgate, *dup, *dh, *dlogits;
} Activations;

typedef struct {
    ModelConfig cfg;
    const Backend *be;
    ParamTensors params, grads;
    Activations acts;
    size_t acts_bytes;
    float *inv_freq;      // [head_dim / 2] backend
    float *pos_host;      // [L, B*T] positions of the next forward (room for L * capacity)
    int pos_override;     // pos_host was set by model_set_positions for the next forward
    AttnLayer *attn;      // [L] each layer's attention (all dense unless model_set_attention)
    int eval_mode;        // evaluating: layers whose attention has eval = "dense" run dense
    double pos_stride;    // default positions are t * pos_stride (1; PI at inference: 1/s)
    float rope_mscale;    // q and k scaled by this after RoPE, logits by its square (YaRN; 1)
    int B, T, n_targets;  // shape of the last forward, its non-ignored targets
    int forward_only;     // model_set_forward_only
    struct Lora *lora;    // LoRA adapters (core/lora.h), NULL without; freed by model_destroy
} Model;

// Validates cfg; on error returns -1 with a message naming the field (e.g. "model.heads (6) must
// divide model.dim (128)").
int model_config_check(const ModelConfig *cfg);
ModelConfig model_config_default(void);

// Allocates parameters and gradients on the backend (zeroed). model_init_weights then fills them
// from a seed: N(0, 0.02) for matrices, the output projections (wo, w2) scaled by 1/sqrt(2L), ones
// for norm weights.
int model_create(Model *m, const ModelConfig *cfg, const Backend *be);
void model_init_weights(Model *m, uint64_t seed);
void model_destroy(Model *m);
size_t model_num_params(const ModelConfig *cfg);
// Elements of each parameter tensor (P_* order); returns the total.
size_t model_param_sizes(const ModelConfig *cfg, size_t size[P_COUNT]);

// Positions used by RoPE for the next forward: pos[b*T + t]. NULL restores the default (pos = t).
// The inverse frequencies default to base^(-2i/head_dim); set_inv_freq overrides them (host array).
void model_set_positions(Model *m, const float *pos_host, int B, int T);
void model_set_inv_freq(Model *m, const float *inv_freq_host);
// Per-layer positions for the next forward: pos_host[layer][B*T] (CRD shifts each layer).
void model_set_layer_positions(Model *m, const float *pos_host, int B, int T);
// Persistent until changed: the default positions t * stride, and YaRN's magnitude (core/posenc.h).
void model_set_position_stride(Model *m, double stride);
void model_set_rope_mscale(Model *m, float mscale);

// Forward over tokens[B*T] (host ints). With targets (host, <0 = ignored) computes per-token losses
// and returns the mean over non-ignored targets; without, returns 0 and leaves logits.
// Keeps what the backward needs.
float model_forward(Model *m, const int *tokens, const int *targets, int B, int T);
// Forward-only mode (1): activations are kept for one layer at a time and no backward scratch is
// allocated, so evaluation at long lengths needs about 1/layers of the training memory; the
// backward is refused until it is turned off (0, the default).
void model_set_forward_only(Model *m, int on);
// Backward of the mean loss of the last forward; ACCUMULATES into m->grads (caller zeroes).
void model_backward(Model *m);
void model_zero_grad(Model *m);

// Attention of each layer (cfgs[L], checked; NULL: all dense). Default after model_create: dense.
int model_set_attention(Model *m, const AttnConfig *cfgs);
// Evaluation mode (1) or training (0, the default): see AttnConfig.eval.
void model_set_eval(Model *m, int eval);
// Realised attention cost of the last forward, summed over layers.
void model_attention_stats(const Model *m, AttnStats *st);

// Host copy of the last forward's logits [B*T, V] / losses [B*T].
void model_get_logits(const Model *m, float *host);
void model_get_losses(const Model *m, float *host);

#endif
