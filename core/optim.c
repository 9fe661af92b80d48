// optim.c: AdamW, the learning-rate schedule and gradient clipping.
#include "optim.h"

#include <math.h>

#include "common.h"
#include "lora.h"

OptimConfig optim_config_default(void) {
    return (OptimConfig){.lr = 3e-4f, .lr_min = 3e-5f, .warmup = 100, .steps = 1000,
                         .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f,
                         .clip = 1.0f};
}

int optim_config_check(const OptimConfig *c) {
    if (!(c->lr > 0)) return ms_fail("train.lr (%g) must be > 0", c->lr);
    if (!(c->lr_min >= 0 && c->lr_min <= c->lr))
        return ms_fail("train.lr_min (%g) must be in [0, train.lr (%g)]", c->lr_min, c->lr);
    if (c->steps <= 0) return ms_fail("train.steps (%d) must be positive", c->steps);
    if (c->warmup < 0 || c->warmup > c->steps)
        return ms_fail("train.warmup (%d) must be in [0, train.steps (%d)]", c->warmup, c->steps);
    if (!(c->beta1 >= 0 && c->beta1 < 1)) return ms_fail("train.beta1 (%g) must be in [0, 1)", c->beta1);
    if (!(c->beta2 >= 0 && c->beta2 < 1)) return ms_fail("train.beta2 (%g) must be in [0, 1)", c->beta2);
    if (!(c->eps > 0)) return ms_fail("train.eps (%g) must be > 0", c->eps);
    if (!(c->weight_decay >= 0)) return ms_fail("train.weight_decay (%g) must be >= 0", c->weight_decay);
    return 0;
}

void optim_create(Optimizer *o, const OptimConfig *cfg, const Model *model) {
    o->cfg = *cfg;
    size_t bytes = model->params.total * sizeof(float);
    o->m = model->be->alloc(bytes);
    o->v = model->be->alloc(bytes);
}

void optim_destroy(Optimizer *o, const Model *model) {
    model->be->free(o->m);
    model->be->free(o->v);
    o->m = o->v = 0;
}

float optim_lr(const OptimConfig *c, int step) {
    if (step < c->warmup) return c->lr * (step + 1) / c->warmup;
    int span = c->steps - c->warmup;
    if (span <= 1) return c->lr;
    double progress = (double)(step - c->warmup) / (span - 1);
    if (progress > 1) progress = 1;
    return (float)(c->lr_min + 0.5 * (c->lr - c->lr_min) * (1 + cos(M_PI * progress)));
}

float optim_grad_norm(const Model *model) {
    if (model->lora) return (float)sqrt(lora_grad_sumsq(model)); // trainable tensors only
    return (float)sqrt(model->be->sumsq(model->grads.base, model->grads.total));
}

float optim_step(Optimizer *o, Model *model, int step) {
    const Backend *be = model->be;
    float norm = optim_grad_norm(model);
    if (o->cfg.clip > 0 && norm > o->cfg.clip)
        be->scale(model->grads.base, o->cfg.clip / norm, model->grads.total),
            lora_scale_grads(model, o->cfg.clip / norm);
    float lr = optim_lr(&o->cfg, step);
    size_t off = 0;
    for (int i = 0; i < P_COUNT; i++) {
        size_t n = model->params.size[i];
        if (!n) continue;
        if (!lora_base_trainable(model, i)) { // frozen under LoRA: no update
            off += n;
            continue;
        }
        int is_norm = i == P_ATTN_NORM || i == P_FFN_NORM || i == P_FINAL_NORM;
        float wd = is_norm ? 0.0f : o->cfg.weight_decay;
        be->adamw(model->params.t[i], model->grads.t[i], o->m + off, o->v + off, n, lr,
                  o->cfg.beta1, o->cfg.beta2, o->cfg.eps, wd, step + 1);
        off += n;
    }
    lora_adamw(model, &o->cfg, lr, step); // the adapters, when attached
    return norm;
}
