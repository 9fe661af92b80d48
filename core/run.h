// run.h: one training run, start to finish: store row -> model -> train loop (metrics, progress,
// checkpoints) -> evaluation -> status. The engine side of `mslab.run{...}`; it knows nothing of Lua.
#ifndef MSLAB_RUN_H
#define MSLAB_RUN_H

#include <signal.h>
#include <stdint.h>

#include "data.h"
#include "lora.h"
#include "model.h"
#include "optim.h"
#include "posenc.h"
#include "store.h"

#define RUN_MAX_LENGTHS 32
#define RUN_MAX_PROTOCOLS 4 // eval.ppl.protocols (core/eval.h PPL_NPROTOCOLS)
#define RUN_MAX_ATTN_LAYERS 64 // per-layer attention overrides

typedef struct {
    int layer;                  // 0-based
    AttnConfig cfg;
} AttnLayerConfig;

typedef struct {
    const char *name;
    const char *script;
    const char *device;         // "cpu"
    const char *precision;      // "fp32" | "bf16" (cuda only); NULL: bf16 on cuda, fp32 on cpu
    int deterministic;          // 1 (default): bitwise-repeatable backward; 0: the bf16 attention
                                // kernels may sum gradients with fp32 atomics (cuda only; faster)
    uint64_t seed;
    ModelConfig model;
    OptimConfig optim;
    PosConfig pos;              // positions.* (the base theta is model.rope_base)
    AttnConfig attention;       // attention.*: every layer's, unless overridden below
    AttnLayerConfig attn_layers[RUN_MAX_ATTN_LAYERS]; // attention.layers[i] (one per layer)
    int n_attn_layers;
    int seq, batch;             // training windows: batch x seq tokens per step
    int log_every;              // metrics + progress every k steps
    int eval_every;             // held-out loss every k steps (0: only at the end)
    int eval_batches;           // batches of the held-out loss
    int checkpoint_every;       // 0: only at the end
    const char *checkpoint_dir; // default "checkpoints"
    int ppl_lengths[RUN_MAX_LENGTHS];
    int n_ppl_lengths;
    int64_t ppl_max_tokens;     // scored tokens per length
    int ppl_protocols[RUN_MAX_PROTOCOLS]; // eval.ppl.protocol / protocols (PplProtocol, in order)
    int n_ppl_protocols;        // 0: "windows" only
    int ppl_stride;             // eval.ppl.stride (0: L/2 for sliding, 256 for longlora)
    const Corpus *ppl_corpus;   // eval.ppl.data: all its documents (train and eval split); NULL:
    const char *ppl_corpus_desc; //   the eval split of the run's corpus
    int passkey_lengths[RUN_MAX_LENGTHS]; // eval.passkey.lengths (prompt tokens); none: no passkey
    int n_passkey_lengths;
    int passkey_trials;         // per length (default 10)
    double passkey_depth;       // < 0: uniform (default); else the fixed depth in [0, 1]
    uint64_t passkey_seed;      // trial i of length L uses a seed derived from (seed, L, i)
    int passkey_new_tokens;     // tokens generated per trial (default 10, as Landmark / YaRN)
    const char *passkey_tokenizer; // NULL: the corpus's tokenizer
    // fine-tuning (finetune = {...}, export = "dir"; docs/checkpoints.md): NULL / 0 when unused
    const char *finetune_init;  // start from these weights: mslab checkpoint, llama2.c .bin, HF dir
    int lora;                   // finetune.lora given: adapters, base weights frozen
    LoraConfig lora_cfg;
    const char *export_dir;     // at the end: config.json + model.safetensors (LoRA merged)
    // provenance, filled by the caller
    const char *config_json;
    const char *config_hash;
    const char *corpus_desc;
    const char *script_hash;    // FNV-1a 64 of the script file (hex), may be NULL
    // resume (docs/sweeps.md): continue this existing run row from its checkpoint; 0: a new run
    int64_t resume_id;
} RunConfig;

typedef struct {
    int64_t run_id;
    int ok;                     // 1 done, 0 failed or interrupted
    const char *status;         // "done", "failed", "interrupted"
    char error[1024];
    int steps_done;
    double train_loss;          // last logged training loss
    double eval_loss;           // final held-out loss
    double tokens_per_s;        // training throughput (steps after the first)
    double wall_s;
    int n_ppl;
    int ppl_lengths[RUN_MAX_LENGTHS];
    double ppl[RUN_MAX_LENGTHS];
    double attn_sparsity;       // fraction of the causal query-key pairs computed (training)
    double attn_flops_per_token; // attention forward FLOPs per token, all layers (training)
} RunResult;

void run_config_default(RunConfig *rc);
// Checks everything that does not need the corpus; messages name the config key.
int run_config_check(const RunConfig *rc);
// Runs to the end. Returns 0 when the run finished (done), -1 otherwise; res tells which and why.
// A store failure before the run row exists returns -1 with ms_error().
int run_execute(const RunConfig *rc, const Corpus *corpus, Store *store, RunResult *res);

// The precision a run uses: rc->precision, else the device's default ("bf16" on cuda, "fp32").
const char *run_precision(const RunConfig *rc);

// The attention config of layer l (0-based): its override, else the run-wide one.
AttnConfig run_layer_attention(const RunConfig *rc, int l);

// Canonical JSON of the config (malloc'd; fixed key order and number format) and its hash.
char *run_config_json(const RunConfig *rc);

// Set by the SIGINT/SIGTERM handler: the loop checkpoints and marks the run 'interrupted'.
extern volatile sig_atomic_t run_stop_requested;
void run_install_signal_handlers(void);

#endif
