// optim.h: AdamW with decoupled weight decay, linear warmup + cosine decay, global-norm clipping.
#ifndef MSLAB_OPTIM_H
#define MSLAB_OPTIM_H

#include "model.h"

typedef struct {
    float lr;        // peak learning rate
    float lr_min;    // floor of the cosine decay
    int warmup;      // steps of linear warmup from lr/warmup to lr
    int steps;       // total steps (the cosine reaches lr_min at the last)
    float beta1, beta2, eps;
    float weight_decay; // applied to matrices and embeddings, never to norm weights
    float clip;         // max global gradient norm; <= 0 disables clipping
} OptimConfig;

typedef struct {
    OptimConfig cfg;
    float *m, *v; // backend, model_num_params elements each, laid out like the parameters
} Optimizer;

OptimConfig optim_config_default(void);
int optim_config_check(const OptimConfig *c);
void optim_create(Optimizer *o, const OptimConfig *cfg, const Model *model);
void optim_destroy(Optimizer *o, const Model *model);

// Learning rate at step (0-based).
float optim_lr(const OptimConfig *c, int step);
// Global L2 norm of the gradients (double accumulation).
float optim_grad_norm(const Model *model);
// One AdamW update for step (0-based): clips the gradients if needed, then updates every tensor.
// Returns the gradient norm before clipping.
float optim_step(Optimizer *o, Model *model, int step);

#endif
