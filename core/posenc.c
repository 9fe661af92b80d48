// posenc.c: position kinds -> (per-layer positions, inv_freq, mscale), for training steps and for
// inference lengths. Formulas and the reading of each ambiguity: docs/positions.md.
#include "posenc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

const char *const pos_kind_names[] = {"none", "rope", "pi", "ntk", "dynamic-ntk", "yarn", "crd-ntk",
                                      NULL};
const char *const crd_offset_names[] = {"layer", "sequence", "layer-sequence", "none", NULL};
const char *const crd_truncation_names[] = {"phase", "cycle", NULL};
const char *const crd_ntk_names[] = {"fixed-length", "static", "off", NULL};
const char *const crd_infer_names[] = {"beyond-orig", "always", NULL};

#define CRD_DEFAULT_SCALE 16.0 // the draft's 16K runs are tagged scale16

void pos_config_default(PosConfig *pc) {
    memset(pc, 0, sizeof *pc);
    pc->kind = POS_ROPE;
    pc->beta_fast = 32;
    pc->beta_slow = 1;
    pc->attn_factor = 1;
    pc->temperature = 1;
    pc->cyclic = 1;
    pc->offset = CRD_OFFSET_LAYER;
    pc->truncation = CRD_TRUNC_PHASE;
    pc->ntk = CRD_NTK_FIXED_LENGTH;
    pc->infer_base = CRD_INFER_BEYOND_ORIG;
}

// ---- closed forms -----------------------------------------------------------------------------

double pos_ntk_base(double theta, double factor, int head_dim) {
    return theta * pow(factor, (double)head_dim / (head_dim - 2));
}

double pos_yarn_mscale(double s) { return s <= 1 ? 1.0 : 0.1 * log(s) + 1.0; }

// The pair index at which a frequency makes `rot` rotations over L0 tokens (yarn's
// find_correction_dim, in units of the full head dim as there).
static double yarn_correction_dim(double rot, int d, double theta, int L0) {
    return d * log(L0 / (rot * 2 * M_PI)) / (2 * log(theta));
}

void pos_yarn_inv_freq(float *inv_freq, double theta, double s, int orig_length, double beta_fast,
                       double beta_slow, int d) {
    double low = floor(yarn_correction_dim(beta_fast, d, theta, orig_length));
    double high = ceil(yarn_correction_dim(beta_slow, d, theta, orig_length));
    if (low < 0) low = 0;
    if (high > d - 1) high = d - 1;
    if (low == high) high += 0.001;
    for (int i = 0; i < d / 2; i++) {
        double f = pow(theta, -2.0 * i / d);
        double ramp = fmin(fmax((i - low) / (high - low), 0.0), 1.0);
        // ramp 0 (fast pairs, many rotations): keep f; ramp 1 (slow pairs): interpolate f / s
        inv_freq[i] = (float)(f / s * ramp + f * (1 - ramp));
    }
}

static void fill_inv_freq(float *inv_freq, double base, int d) {
    for (int i = 0; i < d / 2; i++) inv_freq[i] = (float)pow(base, -2.0 * i / d); // = model_create
}

// A stateless hash (splitmix64's finalizer): the offsets of (seed, step, layer, sequence) need
// no state, so a recomputed forward and a resumed run see the same ones.
static uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t pos_crd_draw(uint64_t seed, int step, int layer, int seq, int stream, uint64_t range) {
    uint64_t k = mix64(seed ^ 0x43524427ULL);
    k = mix64(k ^ (uint64_t)(uint32_t)step);
    k = mix64(k ^ (uint64_t)(uint32_t)layer);
    k = mix64(k ^ (uint64_t)(uint32_t)seq);
    k = mix64(k ^ (uint64_t)(uint32_t)stream);
    Rng r;
    rng_seed(&r, k);
    return rng_below(&r, range);
}

// ---- schedules --------------------------------------------------------------------------------

static int sched_at(const PosSchedule *s, const char *key, const char *argword, int arg,
                    double *out) {
    if (s->fn) {
        if (s->fn(s->ctx, s->id, arg, out))
            return ms_fail("%s: the function failed at %s %d: %s", key, argword, arg, ms_error());
        if (!isfinite(*out))
            return ms_fail("%s: the function returned %g at %s %d", key, *out, argword, arg);
        return 0;
    }
    double v = s->value;
    if (s->double_every > 0) {
        int k = arg / s->double_every;
        v = ldexp(v, k > 1000 ? 1000 : k);
        if (s->max > 0 && v > s->max) v = s->max;
    }
    *out = v;
    return 0;
}

int pos_schedule_at(const PosSchedule *s, const char *key, int arg, double *out) {
    return sched_at(s, key, "step", arg, out);
}

static int uses_scale(int kind) { return kind >= POS_PI; }

static int orig_length(const PosConfig *pc, const ModelConfig *mc) {
    if (pc->orig_length > 0) return pc->orig_length;
    // crd-ntk: the draft fine-tunes at 16384 from a 4096 model, so L0 = L/4 keeps its ratios
    // (L0 : L : T : Lc = 1 : 4 : 8 : 8, NTK factor 7s + 1 as in spec 3.2)
    if (pc->kind == POS_CRD_NTK) return mc->seq_len / 4 > 0 ? mc->seq_len / 4 : 1;
    return mc->seq_len;
}

// The scheduled values of one step: s, the cycle, the offset range.
typedef struct {
    double s, cycle, offset_max, ntk_length, factor;
} StepValues;

static int step_values(const PosConfig *pc, const ModelConfig *mc, int step, StepValues *v) {
    memset(v, 0, sizeof *v);
    v->s = 1;
    if (uses_scale(pc->kind)) {
        if (pc->scale.set) {
            if (pos_schedule_at(&pc->scale, "positions.scale", step, &v->s)) return -1;
        } else {
            v->s = CRD_DEFAULT_SCALE; // the check requires scale for the other kinds
        }
    }
    if (pc->kind != POS_CRD_NTK) return 0;
    v->cycle = 2.0 * mc->seq_len; // the draft: T = 32768 for 16384-token windows
    if (pc->cycle.set && pos_schedule_at(&pc->cycle, "positions.cycle", step, &v->cycle)) return -1;
    v->offset_max = v->cycle;
    if (pc->offset_max.set &&
        pos_schedule_at(&pc->offset_max, "positions.offset_max", step, &v->offset_max))
        return -1;
    v->ntk_length = pc->ntk_length > 0 ? pc->ntk_length : v->cycle;
    double L0 = orig_length(pc, mc);
    v->factor = pc->ntk == CRD_NTK_FIXED_LENGTH ? v->s * v->ntk_length / L0 - (v->s - 1)
              : pc->ntk == CRD_NTK_STATIC       ? v->s
                                                : 1.0;
    return 0;
}

// Checks one step's values; `at` is "" (config time) or " at step N".
static int check_values(const PosConfig *pc, const ModelConfig *mc, const StepValues *v,
                        const char *at) {
    if (uses_scale(pc->kind) && !(v->s > 0 && isfinite(v->s)))
        return ms_fail("positions.scale (%g)%s must be > 0", v->s, at);
    if (pc->kind != POS_CRD_NTK) return 0;
    int seq = mc->seq_len;
    if (!isfinite(v->cycle) || v->cycle != floor(v->cycle))
        return ms_fail("positions.cycle (%g)%s must be an integer", v->cycle, at);
    // positions are floats: integers are exact up to 2^24
    if (v->cycle > 16777216 || (!pc->cyclic && v->offset_max > 16777216))
        return ms_fail("positions.%s (%g)%s must be <= 16777216 (positions are fp32)",
                       v->cycle > 16777216 ? "cycle" : "offset_max",
                       v->cycle > 16777216 ? v->cycle : v->offset_max, at);
    if (pc->cyclic && pc->truncation == CRD_TRUNC_PHASE && v->cycle < seq)
        return ms_fail("positions.cycle (%g)%s must be >= train.seq (%d)", v->cycle, at, seq);
    if (pc->cyclic && pc->truncation == CRD_TRUNC_CYCLE && v->cycle < 2)
        return ms_fail("positions.cycle (%g)%s must be >= 2 (truncation \"cycle\" draws T in "
                       "[train.seq, train.seq + cycle/2))", v->cycle, at);
    if (!pc->cyclic && pc->offset != CRD_OFFSET_NONE &&
        !(v->offset_max >= 1 && v->offset_max == floor(v->offset_max)))
        return ms_fail("positions.offset_max (%g)%s must be a positive integer", v->offset_max, at);
    if (!(v->factor > 0))
        return ms_fail("positions.scale (%g)%s with ntk_length %g and orig_length %d gives an NTK "
                       "factor %g <= 0", v->s, at, v->ntk_length, orig_length(pc, mc), v->factor);
    return 0;
}

static int check_schedule(const PosSchedule *s, const char *key) {
    if (!s->set || s->fn) return 0;
    if (s->double_every < 0)
        return ms_fail("%s.double_every (%d) must be >= 0", key, s->double_every);
    if (s->max != 0 && !(s->max >= s->value))
        return ms_fail("%s.max (%g) must be >= %s.value (%g)", key, s->max, key, s->value);
    return 0;
}

static int infer_table_index(const PosConfig *pc, int T) {
    for (int i = 0; i < pc->n_infer; i++)
        if (pc->infer_lengths[i] == T) return i;
    return -1;
}

int pos_config_check(const PosConfig *pc, const ModelConfig *mc, const int *eval_lengths,
                     int n_eval) {
    if (pc->kind < 0 || pc->kind >= POS_NKINDS)
        return ms_fail("positions.kind (%d) is not a position kind", pc->kind);
    int hd = mc->dim / mc->heads, k = pc->kind;
    if (uses_scale(k) && k != POS_CRD_NTK && !pc->scale.set)
        return ms_fail("positions.scale: required for kind \"%s\"", pos_kind_names[k]);
    if ((k == POS_NTK || k == POS_DYNAMIC_NTK || k == POS_CRD_NTK) && hd < 4)
        return ms_fail("model.dim / model.heads = %d: NTK bases need a head dimension >= 4", hd);
    if (pc->orig_length < 0)
        return ms_fail("positions.orig_length (%d) must be positive", pc->orig_length);
    if (pc->ntk_length < 0)
        return ms_fail("positions.ntk_length (%g) must be positive", pc->ntk_length);
    if (k == POS_YARN) {
        if (!(pc->beta_slow > 0))
            return ms_fail("positions.beta_slow (%g) must be > 0", pc->beta_slow);
        if (!(pc->beta_fast > pc->beta_slow))
            return ms_fail("positions.beta_fast (%g) must be > positions.beta_slow (%g)",
                           pc->beta_fast, pc->beta_slow);
        if (!(pc->attn_factor > 0))
            return ms_fail("positions.attn_factor (%g) must be > 0", pc->attn_factor);
    }
    if (check_schedule(&pc->scale, "positions.scale") || check_schedule(&pc->cycle, "positions.cycle") ||
        check_schedule(&pc->offset_max, "positions.offset_max"))
        return -1;
    // The step-0 values and the doubling caps, when no function is involved (a function's values
    // are checked at every step of the run).
    if (!pc->scale.fn && !pc->cycle.fn && !pc->offset_max.fn) {
        StepValues v;
        if (step_values(pc, mc, 0, &v) || check_values(pc, mc, &v, "")) return -1;
        if (pc->scale.max > 0) {
            v.s = pc->scale.max;
            v.factor = pc->ntk == CRD_NTK_FIXED_LENGTH ? v.s * v.ntk_length / orig_length(pc, mc) - (v.s - 1)
                     : pc->ntk == CRD_NTK_STATIC ? v.s : 1.0;
            if (check_values(pc, mc, &v, "")) return -1;
        }
    }
    if (k == POS_CRD_NTK) {
        const PosSchedule *is = &pc->infer_scale;
        if (is->set && !is->fn && !(is->value > 0))
            return ms_fail("positions.infer_scale (%g) must be > 0", is->value);
        for (int i = 0; i < pc->n_infer; i++)
            if (!(pc->infer_values[i] > 0))
                return ms_fail("positions.infer_scale[%d] (%g) must be > 0", pc->infer_lengths[i],
                               pc->infer_values[i]);
        if (pc->n_infer)
            for (int i = 0; i < n_eval; i++) {
                int T = eval_lengths[i];
                int needed = pc->infer_base == CRD_INFER_ALWAYS || T > orig_length(pc, mc);
                if (needed && infer_table_index(pc, T) < 0)
                    return ms_fail("positions.infer_scale: no value for eval length %d "
                                   "(eval.ppl.lengths)", T);
            }
    }
    return 0;
}

// ---- training and inference -------------------------------------------------------------------

static void state_init(PosState *st, const ModelConfig *mc) {
    memset(st, 0, sizeof *st);
    st->scale = 1;
    st->base = mc->rope_base;
    st->mscale = 1;
    st->stride = 1;
}

// inv_freq, base and mscale of the kinds other than crd-ntk (the same in training and inference,
// except dynamic-ntk whose factor follows the current length T).
static void plain_kind(const PosConfig *pc, const ModelConfig *mc, double s, int T,
                       float *inv_freq, PosState *st) {
    int hd = mc->dim / mc->heads, L0 = orig_length(pc, mc);
    double theta = mc->rope_base;
    st->scale = s;
    switch (pc->kind) {
    case POS_NONE:
        for (int i = 0; i < hd / 2; i++) inv_freq[i] = 0; // angle 0: RoPE is the identity
        st->base = 0;
        return;
    case POS_PI:
        st->stride = 1.0 / s;
        break;
    case POS_NTK:
        st->base = pos_ntk_base(theta, s, hd);
        break;
    case POS_DYNAMIC_NTK: // HF LlamaDynamicNTKScalingRotaryEmbedding, seq_len = T
        if (T > L0) st->base = pos_ntk_base(theta, s * T / L0 - (s - 1), hd);
        break;
    case POS_YARN:
        pos_yarn_inv_freq(inv_freq, theta, s, L0, pc->beta_fast, pc->beta_slow, hd);
        st->mscale = (pc->temperature ? pos_yarn_mscale(s) : 1.0) * pc->attn_factor;
        return;
    }
    fill_inv_freq(inv_freq, st->base, hd);
}

int pos_train(const PosConfig *pc, const ModelConfig *mc, int step, uint64_t seed, int B, int T,
              float *pos, float *inv_freq, PosState *st) {
    state_init(st, mc);
    StepValues v;
    char at[48];
    snprintf(at, sizeof at, " at step %d", step);
    if (step_values(pc, mc, step, &v) || check_values(pc, mc, &v, at)) return -1;
    int L = mc->layers, hd = mc->dim / mc->heads;
    size_t N = (size_t)B * T;
    if (pc->kind != POS_CRD_NTK) {
        plain_kind(pc, mc, v.s, T, inv_freq, st);
        for (int t = 0; t < T; t++) pos[t] = st->stride == 1.0 ? (float)t : (float)(t * st->stride);
        for (int b = 1; b < B; b++) memcpy(pos + (size_t)b * T, pos, sizeof(float) * T);
        for (int l = 1; l < L; l++) memcpy(pos + l * N, pos, sizeof(float) * N);
        return 0;
    }
    st->scale = v.s;
    st->cycle = v.cycle;
    st->offset_max = pc->cyclic ? 0 : v.offset_max;
    st->base = pc->ntk == CRD_NTK_OFF ? mc->rope_base : pos_ntk_base(mc->rope_base, v.factor, hd);
    fill_inv_freq(inv_freq, st->base, hd);
    for (int l = 0; l < L; l++)
        for (int b = 0; b < B; b++) {
            // who shares a draw: the key (layer, sequence) collapses the axis that shares
            int kl = pc->offset == CRD_OFFSET_SEQUENCE ? 0 : l;
            int kb = pc->offset == CRD_OFFSET_LAYER ? 0 : b;
            uint64_t cyc = (uint64_t)v.cycle;
            if (pc->truncation == CRD_TRUNC_CYCLE)
                cyc = (uint64_t)T + pos_crd_draw(seed, step, kl, kb, 1, (uint64_t)(v.cycle / 2));
            uint64_t o = 0;
            if (pc->offset != CRD_OFFSET_NONE)
                o = pos_crd_draw(seed, step, kl, kb, 0, pc->cyclic ? cyc : (uint64_t)v.offset_max);
            float *p = pos + l * N + (size_t)b * T;
            for (int t = 0; t < T; t++) {
                uint64_t x = (uint64_t)t + o;
                p[t] = (float)(pc->cyclic ? x % cyc : x);
            }
            if (l == 0 && b == 0) {
                st->offset = (double)o;
                if (pc->truncation == CRD_TRUNC_CYCLE) st->cycle_drawn = (double)cyc;
            }
        }
    return 0;
}

int pos_infer(const PosConfig *pc, const ModelConfig *mc, int step, int T, float *inv_freq,
              PosState *st) {
    state_init(st, mc);
    if (step < 0) step = 0;
    StepValues v;
    if (step_values(pc, mc, step, &v)) return -1;
    if (pc->kind != POS_CRD_NTK) {
        plain_kind(pc, mc, v.s, T, inv_freq, st);
        return 0;
    }
    // spec 3.6: raw positions, base theta * S^(d/(d-2)) beyond L0 (draft) or always; S from the
    // config per length, else the factor training ended with (so the base is the trained one)
    int hd = mc->dim / mc->heads;
    double S = v.factor;
    const PosSchedule *is = &pc->infer_scale;
    int i = infer_table_index(pc, T);
    if (i >= 0) S = pc->infer_values[i];
    else if (is->set && sched_at(is, "positions.infer_scale", "length", T, &S)) return -1;
    if (!(S > 0)) return ms_fail("positions.infer_scale (%g) at length %d must be > 0", S, T);
    st->scale = S;
    int scaled = pc->infer_base == CRD_INFER_ALWAYS || T > orig_length(pc, mc);
    st->base = scaled ? pos_ntk_base(mc->rope_base, S, hd) : mc->rope_base;
    fill_inv_freq(inv_freq, st->base, hd);
    return 0;
}

int pos_apply_train(Model *m, const PosConfig *pc, int step, uint64_t seed, int B, int T,
                    PosState *st) {
    int hd = m->cfg.dim / m->cfg.heads;
    float *pos = ms_malloc(sizeof(float) * m->cfg.layers * B * T), inv[hd / 2];
    int rc = pos_train(pc, &m->cfg, step, seed, B, T, pos, inv, st);
    if (rc == 0) {
        model_set_layer_positions(m, pos, B, T);
        model_set_inv_freq(m, inv);
        model_set_rope_mscale(m, (float)st->mscale);
        model_set_position_stride(m, 1.0);
    }
    free(pos);
    return rc;
}

int pos_apply_infer(Model *m, const PosConfig *pc, int step, int T, PosState *st) {
    int hd = m->cfg.dim / m->cfg.heads;
    float inv[hd / 2];
    if (pos_infer(pc, &m->cfg, step, T, inv, st)) return -1;
    model_set_inv_freq(m, inv);
    model_set_rope_mscale(m, (float)st->mscale);
    model_set_position_stride(m, st->stride);
    return 0;
}

// ---- reporting --------------------------------------------------------------------------------

int pos_state_items(const PosConfig *pc, const PosState *st, int infer, const char **names,
                    double *values, int *n_scheduled) {
    int n = 0;
#define ADD(name_, v_) (names[n] = (name_), values[n++] = (v_))
    if (pc->kind != POS_NONE) {
        if (uses_scale(pc->kind)) ADD("pos.scale", st->scale);
        ADD("pos.base", st->base);
        if (pc->kind == POS_YARN) ADD("pos.mscale", st->mscale);
    }
    int crd = pc->kind == POS_CRD_NTK && !infer;
    if (crd && pc->cyclic) ADD("pos.cycle", st->cycle);
    if (crd && !pc->cyclic && pc->offset != CRD_OFFSET_NONE) ADD("pos.offset_max", st->offset_max);
    if (n_scheduled) *n_scheduled = n; // the rest is drawn anew every step
    if (crd && pc->offset != CRD_OFFSET_NONE) ADD("pos.offset", st->offset);
    if (crd && pc->cyclic && pc->truncation == CRD_TRUNC_CYCLE) ADD("pos.cycle_drawn", st->cycle_drawn);
#undef ADD
    return n;
}

static void fmt_schedule(char *out, size_t n, const PosSchedule *s, int json) {
    if (s->fn) snprintf(out, n, json ? "\"%s\"" : "%s", s->desc);
    else if (s->double_every <= 0) snprintf(out, n, "%.9g", s->value);
    else if (s->max > 0)
        snprintf(out, n, "{\"value\":%.9g,\"double_every\":%d,\"max\":%.9g}", s->value,
                 s->double_every, s->max);
    else snprintf(out, n, "{\"value\":%.9g,\"double_every\":%d}", s->value, s->double_every);
}

int pos_config_items(const PosConfig *pc, const ModelConfig *mc, int json, PosItem *items, int max) {
    int n = 0, k = pc->kind;
    const char *q = json ? "\"" : "";
#define ITEM(key_, ...)                                                                       \
    do {                                                                                      \
        if (n < max) {                                                                        \
            items[n].key = (key_);                                                            \
            snprintf(items[n++].value, sizeof items[0].value, __VA_ARGS__);                  \
        }                                                                                     \
    } while (0)
#define SCHED(key_, s_)                                                                       \
    do {                                                                                      \
        if (n < max) {                                                                        \
            items[n].key = (key_);                                                            \
            fmt_schedule(items[n++].value, sizeof items[0].value, (s_), json);                \
        }                                                                                     \
    } while (0)
    ITEM("kind", "%s%s%s", q, pos_kind_names[k], q);
    if (k == POS_NONE) return n;
    ITEM("base", "%.9g", mc->rope_base);
    if (uses_scale(k)) {
        if (pc->scale.set) SCHED("scale", &pc->scale);
        else ITEM("scale", "%.9g", CRD_DEFAULT_SCALE);
    }
    if (k == POS_DYNAMIC_NTK || k == POS_YARN || k == POS_CRD_NTK)
        ITEM("orig_length", "%d", orig_length(pc, mc));
    if (k == POS_YARN) {
        ITEM("beta_fast", "%.9g", pc->beta_fast);
        ITEM("beta_slow", "%.9g", pc->beta_slow);
        ITEM("attn_factor", "%.9g", pc->attn_factor);
        ITEM("temperature", "%s", pc->temperature ? "true" : "false");
    }
    if (k != POS_CRD_NTK) return n;
    ITEM("ntk", "%s%s%s", q, crd_ntk_names[pc->ntk], q);
    if (pc->ntk_length > 0) ITEM("ntk_length", "%.9g", pc->ntk_length);
    else ITEM("ntk_length", "%scycle%s", q, q);
    ITEM("cyclic", "%s", pc->cyclic ? "true" : "false");
    if (pc->cycle.set) SCHED("cycle", &pc->cycle);
    else ITEM("cycle", "%d", 2 * mc->seq_len);
    ITEM("truncation", "%s%s%s", q, crd_truncation_names[pc->truncation], q);
    ITEM("offset", "%s%s%s", q, crd_offset_names[pc->offset], q);
    if (!pc->cyclic) {
        if (pc->offset_max.set) SCHED("offset_max", &pc->offset_max);
        else ITEM("offset_max", "%scycle%s", q, q);
    }
    ITEM("infer_base", "%s%s%s", q, crd_infer_names[pc->infer_base], q);
    if (pc->n_infer) {
        char buf[1000] = "{";
        for (int i = 0; i < pc->n_infer; i++)
            snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s\"%d\":%.9g", i ? "," : "",
                     pc->infer_lengths[i], pc->infer_values[i]);
        ITEM("infer_scale", "%s}", buf);
    } else if (pc->infer_scale.set) {
        SCHED("infer_scale", &pc->infer_scale);
    } else {
        ITEM("infer_scale", "%strain%s", q, q);
    }
#undef ITEM
#undef SCHED
    return n;
}
