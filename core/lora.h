// lora.h: LoRA / LongLoRA "LoRA+" adapters on a Model.
//
// Each target projection W [out, in] of every layer gets A [r, in] and B [out, r]:
//   y = x W^T + s (x A^T) B^T,   s = alpha / r,
// computed with the backend's matmul (no extra op): u = s x A^T ([N, r]), y += u B^T. A starts
// uniform in +-1/sqrt(in) (PEFT's kaiming_uniform(a = sqrt(5))), B = 0, so an attached model computes
// exactly what the base model does until B moves. The base weights are frozen: the backward passes
// NULL for their weight gradients (no gradient compute) and the optimizer skips them; optionally the
// token embedding (train_embeddings; the untied LM head stays frozen, as in LongLoRA) and every
// RMSNorm weight (train_norms) train with the adapters. lora_merge folds W += s B A into the base
// weights and detaches the adapters (for checkpoints and export).
#ifndef MSLAB_LORA_H
#define MSLAB_LORA_H

#include <stdint.h>

#include "model.h"
#include "optim.h"

enum { LORA_Q, LORA_K, LORA_V, LORA_O, LORA_GATE, LORA_UP, LORA_DOWN, LORA_NT };
extern const char *const lora_target_names[LORA_NT]; // "q", "k", "v", "o", "gate", "up", "down"

typedef struct {
    int rank;             // r >= 1
    float alpha;          // scale s = alpha / r
    unsigned targets;     // bit LORA_* set: that projection is adapted (non-empty)
    int train_embeddings; // the token embedding trains too
    int train_norms;      // the RMSNorm weights train too
} LoraConfig;

typedef struct Lora {
    LoraConfig cfg;
    float scale;                           // alpha / rank
    int in[LORA_NT], out[LORA_NT];         // per-target widths
    float *A[LORA_NT], *B[LORA_NT];        // backend views: A [L, r, in], B [L, out, r] (NULL: not a target)
    float *gA[LORA_NT], *gB[LORA_NT];
    float *p, *g, *m, *v;                  // one backend buffer each, `total` floats
    size_t total;
    float *u, *du, *z;                     // scratch: [N, r], [N, r], [N, widest out]
    size_t cap;                            // rows the scratch holds
} Lora;

LoraConfig lora_config_default(void); // rank 8, alpha 16, q k v o, embeddings and norms frozen
// Messages name the key: "finetune.lora.rank (0) must be positive".
int lora_config_check(const LoraConfig *c, const ModelConfig *mc);
// Attaches adapters (A from the seed, B = 0) to m; replaces any attached before.
int lora_attach(Model *m, const LoraConfig *c, uint64_t seed);
void lora_detach(Model *m);
// 1 when base tensor p (P_*) trains: always without adapters.
int lora_base_trainable(const Model *m, int p);

// Hooks of model.c (no-ops for a projection that is not a target).
void lora_fwd(Model *m, int target, int layer, float *out, const float *inp, int N);
void lora_bwd(Model *m, int target, int layer, float *dinp, const float *dout, const float *inp, int N);
void lora_zero_grad(Model *m);

// Optimizer side: sum of squares of every trainable gradient (adapters and trainable base tensors),
// scaling the adapter gradients (clipping) and their AdamW update.
double lora_grad_sumsq(const Model *m);
void lora_scale_grads(Model *m, float s);
void lora_adamw(Model *m, const OptimConfig *o, float lr, int step);

// W += s B A for every target, then detaches. Host-side, f64 accumulation.
void lora_merge(Model *m);
// Trainable parameters (adapters plus trainable base tensors).
size_t lora_num_trainable(const Model *m);

#endif
