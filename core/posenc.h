// posenc.h: the position-encoding family (docs/positions.md). Every kind is what RoPE (ops.h) is
// handed: per-token float positions (one array per layer, so CRD can shift each layer on its own),
// per-pair inverse frequencies inv_freq[head_dim/2], and for YaRN a magnitude mscale (q and k
// both scaled by it, logits by mscale^2). Values that may change during training (the scale, the
// cycle, the offset range) are schedules: a constant, a doubling every n steps, or a callback (the
// Lua host passes the user's Lua function; core/ never sees Lua).
#ifndef MSLAB_POSENC_H
#define MSLAB_POSENC_H

#include <stdint.h>

#include "model.h"

enum { POS_NONE, POS_ROPE, POS_PI, POS_NTK, POS_DYNAMIC_NTK, POS_YARN, POS_CRD_NTK, POS_NKINDS };
// Names as in the config (NULL-terminated, index = enum value); the same for the lists below.
extern const char *const pos_kind_names[];

// CRD: who shares one random offset o in a step (the draft: each layer draws its own, the whole
// batch shares it).
enum { CRD_OFFSET_LAYER, CRD_OFFSET_SEQUENCE, CRD_OFFSET_LAYER_SEQUENCE, CRD_OFFSET_NONE };
extern const char *const crd_offset_names[];
// CRD "randomly truncated": random phase inside a fixed cycle T (draft) | a random cycle length
// T in [L, L + cycle/2) per draw (the computed-but-unused posmaxstart of the draft).
enum { CRD_TRUNC_PHASE, CRD_TRUNC_CYCLE };
extern const char *const crd_truncation_names[];
// CRD training base: theta * (s*Lc/L0 - (s-1))^(d/(d-2)) (draft) | theta * s^(d/(d-2)) | theta.
enum { CRD_NTK_FIXED_LENGTH, CRD_NTK_STATIC, CRD_NTK_OFF };
extern const char *const crd_ntk_names[];
// CRD inference base: theta * S^(d/(d-2)) only beyond orig_length, theta below (draft) | always.
enum { CRD_INFER_BEYOND_ORIG, CRD_INFER_ALWAYS };
extern const char *const crd_infer_names[];

// A callback schedule: *out = f(arg) (arg: the 0-based step, or the eval length for
// infer_scale). Returns 0, or -1 with ms_fail() text.
typedef int (*PosFn)(void *ctx, int id, int arg, double *out);

typedef struct {
    int set;          // given in the config (else the kind's default applies)
    double value;     // constant, or the value at step 0 when doubling
    int double_every; // > 0: value * 2^floor(step / double_every)
    double max;       // > 0: doubling stops here
    PosFn fn;         // set: the value is fn(ctx, id, arg) and the fields above are unused
    void *ctx;
    int id;
    char desc[96];    // how a function was given ("function at x.lua:12"), for the config JSON
} PosSchedule;

#define POS_MAX_INFER 32

typedef struct {
    int kind;                 // POS_*
    PosSchedule scale;        // s / alpha: pi, ntk, dynamic-ntk, yarn, crd-ntk
    int orig_length;          // L0, 0: default (train.seq; crd-ntk: train.seq / 4)
    // yarn
    double beta_fast, beta_slow; // ramp ends, in rotations over orig_length (32, 1)
    double attn_factor;          // multiplies mscale (1)
    int temperature;             // 1: mscale = 0.1 ln(s) + 1 for s > 1
    // crd-ntk
    int cyclic;               // 1: positions (t + o) mod T
    PosSchedule cycle;        // T (truncation "phase") or posmax ("cycle"); default 2 * train.seq
    int offset;               // CRD_OFFSET_*
    PosSchedule offset_max;   // o in [0, offset_max) when not cyclic; default = cycle
    int truncation;           // CRD_TRUNC_*
    int ntk;                  // CRD_NTK_*
    double ntk_length;        // Lc of the fixed-length formula, 0: the current cycle
    int infer_base;           // CRD_INFER_*
    PosSchedule infer_scale;  // S per eval length: constant or fn(length); unset: training factor
    int n_infer;              // table form: S for these lengths
    int infer_lengths[POS_MAX_INFER];
    double infer_values[POS_MAX_INFER];
} PosConfig;

// What one step (or one evaluation length) used: logged as metrics pos.<name>.
typedef struct {
    double scale;       // s (1 for kinds without one)
    double base;        // the RoPE base of inv_freq (theta for yarn, whose factors are per pair)
    double mscale;      // yarn: q and k scaled by this (1 otherwise)
    double stride;      // default positions are t * stride (1/s for pi, else 1)
    double cycle;       // crd: the cycle schedule's value
    double offset_max;  // crd, not cyclic: the offset range
    double offset;      // crd: the offset of layer 0, sequence 0
    double cycle_drawn; // crd truncation "cycle": T of layer 0, sequence 0
} PosState;

void pos_config_default(PosConfig *pc);
// Checks what is known before the run (constant and doubling schedules; the training length is
// mc->seq_len = train.seq; the eval lengths for infer_scale tables). Messages name the key:
// "positions.cycle (64) must be >= train.seq (128)".
int pos_config_check(const PosConfig *pc, const ModelConfig *mc, const int *eval_lengths,
                     int n_eval);
// The schedule's value at arg; key names it in errors.
int pos_schedule_at(const PosSchedule *s, const char *key, int arg, double *out);

// Training positions at (0-based) `step` for B sequences of T tokens: pos[layers][B*T],
// inv_freq[head_dim/2], and the values used. CRD offsets depend on (seed, step, layer, sequence)
// only, so recomputing a step gives the same positions. A schedule value that is invalid at this
// step (a cycle below T, a non-positive scale, a failing Lua function) returns -1.
int pos_train(const PosConfig *pc, const ModelConfig *mc, int step, uint64_t seed, int B, int T,
              float *pos, float *inv_freq, PosState *st);
// Inference at length T after `step` training steps: positions t * st->stride (no offset, no
// modulo), inv_freq[head_dim/2], mscale. dynamic-ntk takes its scale from T, crd-ntk its S.
int pos_infer(const PosConfig *pc, const ModelConfig *mc, int step, int T, float *inv_freq,
              PosState *st);

// The same, installed into the model for its next forward (training) or for every forward until
// changed (inference: eval_loss, eval_ppl_windows).
int pos_apply_train(Model *m, const PosConfig *pc, int step, uint64_t seed, int B, int T,
                    PosState *st);
int pos_apply_infer(Model *m, const PosConfig *pc, int step, int T, PosState *st);

// The metrics of a state that apply to the kind: names ("pos.scale", ...) and values; returns the
// count (at most 8). infer = 1 leaves out the training-only CRD values (offset, cycle). The first
// *n_scheduled items follow the schedules; the rest (CRD draws) change every step.
int pos_state_items(const PosConfig *pc, const PosState *st, int infer, const char **names,
                    double *values, int *n_scheduled);

// The config as key/value pairs, defaults resolved, only the keys the kind uses (rope: kind, base):
// for the params table and the canonical JSON. json = 1: values are JSON text (strings quoted).
typedef struct {
    const char *key;
    char value[1024];
} PosItem;
int pos_config_items(const PosConfig *pc, const ModelConfig *mc, int json, PosItem *items, int max);

// Closed forms, exposed for the tests and docs.
double pos_ntk_base(double theta, double factor, int head_dim); // theta * factor^(d/(d-2))
double pos_yarn_mscale(double s);                               // 0.1 ln s + 1 (1 for s <= 1)
// YaRN inv_freq (jquesnelle/yarn LlamaYaRNScaledRotaryEmbedding, extrapolation_factor 1).
void pos_yarn_inv_freq(float *inv_freq, double theta, double s, int orig_length, double beta_fast,
                       double beta_slow, int head_dim);
// The CRD offset / drawn cycle of (seed, step, layer, sequence); T is the cycle (range of o).
uint64_t pos_crd_draw(uint64_t seed, int step, int layer, int seq, int stream, uint64_t range);

#endif
