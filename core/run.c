// run.c: the life of one run. Every number it produces goes to the store as it is produced, so a
// run that dies leaves its curve behind.
#include "run.h"

#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "common.h"
#include "eval.h"
#include "progress.h"
#include "safetensors.h"
#include "run_eval.h"
#include "provenance.h"
#ifdef MSLAB_CUDA
#include "../cuda/attn_bf16.h"
#include "../cuda/backend_cuda.h"
#endif

volatile sig_atomic_t run_stop_requested;

const char *run_precision(const RunConfig *rc) {
    if (rc->precision) return rc->precision;
    return rc->device && !strcmp(rc->device, "cuda") ? "bf16" : "fp32";
}

// The backend named by `device`: "cpu" always; "cuda" in a build with nvcc (MSLAB_CUDA) on a machine
// with a usable GPU, its bf16 table (cuda/backend_bf16.cu) unless precision is "fp32". NULL with
// the reason in ms_error() otherwise.
static const Backend *run_backend(const char *device, const char *precision) {
    if (!strcmp(device, "cpu")) return backend_cpu();
#ifdef MSLAB_CUDA
    if (!strcmp(device, "cuda")) {
        const Backend *be = strcmp(precision, "bf16") ? backend_cuda() : backend_cuda_bf16();
        if (!be) {
            char why[384];
            snprintf(why, sizeof why, "%s", ms_error());
            ms_fail("device \"cuda\": %s", why);
        }
        return be;
    }
    ms_fail("device \"%s\" is not available (available: \"cpu\", \"cuda\")", device);
#else
    ms_fail("device \"%s\" is not available in this build (available: \"cpu\"; \"cuda\" needs a "
            "build with nvcc)", device);
#endif
    return NULL;
}

static void on_signal(int sig) {
    (void)sig;
    run_stop_requested = 1;
}

void run_install_signal_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

void run_config_default(RunConfig *rc) {
    memset(rc, 0, sizeof *rc);
    rc->name = "run";
    rc->device = "cpu";
    rc->deterministic = 1;
    rc->seed = 1;
    rc->model = model_config_default();
    rc->optim = optim_config_default();
    pos_config_default(&rc->pos);
    rc->attention = attn_config_default(ATTN_DENSE);
    rc->seq = 128;
    rc->batch = 16;
    rc->log_every = 10;
    rc->eval_every = 0;
    rc->eval_batches = 8;
    rc->checkpoint_dir = "checkpoints";
    rc->ppl_max_tokens = 32768;
    run_eval_defaults(rc); // core/run_eval.c
}

int run_config_check(const RunConfig *rc) {
    if (model_config_check(&rc->model)) return -1;
    if (optim_config_check(&rc->optim)) return -1;
    if (pos_config_check(&rc->pos, &rc->model, rc->ppl_lengths, rc->n_ppl_lengths)) return -1;
    if (attn_config_check(&rc->attention, "attention")) return -1;
    for (int i = 0; i < rc->n_attn_layers; i++) {
        char where[48];
        int l = rc->attn_layers[i].layer;
        snprintf(where, sizeof where, "attention.layers[%d]", l + 1);
        if (l < 0 || l >= rc->model.layers)
            return ms_fail("%s: the model has %d layers (1 .. %d)", where, rc->model.layers,
                           rc->model.layers);
        if (attn_config_check(&rc->attn_layers[i].cfg, where)) return -1;
    }
    if (rc->lora && lora_config_check(&rc->lora_cfg, &rc->model)) return -1;
    if (rc->lora && rc->checkpoint_every > 0)
        return ms_fail("train.checkpoint_every (%d): not supported with finetune.lora (the adapters are "
                       "merged into the one checkpoint written at the end)", rc->checkpoint_every);
    if (rc->seq <= 0) return ms_fail("train.seq (%d) must be positive", rc->seq);
    if (rc->batch <= 0) return ms_fail("train.batch (%d) must be positive", rc->batch);
    if (rc->log_every <= 0) return ms_fail("train.log_every (%d) must be positive", rc->log_every);
    if (rc->eval_every < 0) return ms_fail("train.eval_every (%d) must be >= 0", rc->eval_every);
    if (rc->eval_batches <= 0)
        return ms_fail("train.eval_batches (%d) must be positive", rc->eval_batches);
    if (rc->checkpoint_every < 0)
        return ms_fail("train.checkpoint_every (%d) must be >= 0", rc->checkpoint_every);
    for (int i = 0; i < rc->n_ppl_lengths; i++)
        if (rc->ppl_lengths[i] <= 0)
            return ms_fail("eval.ppl.lengths[%d] (%d) must be positive", i + 1, rc->ppl_lengths[i]);
    if (run_eval_check(rc)) return -1;
    const char *prec = run_precision(rc);
    if (strcmp(prec, "fp32") && strcmp(prec, "bf16"))
        return ms_fail("precision \"%s\": expected \"bf16\" or \"fp32\"", prec);
    if (!strcmp(prec, "bf16") && strcmp(rc->device, "cuda"))
        return ms_fail("precision \"bf16\" needs device \"cuda\" (device \"%s\" computes in "
                       "fp32: give precision = \"fp32\" or leave it out)", rc->device);
    const Backend *be = run_backend(rc->device, prec);
    if (!be) return -1;
    for (int l = 0; l < rc->model.layers; l++) { // a backend leaves an op it lacks NULL (cuda/)
        AttnConfig ac = run_layer_attention(rc, l);
        if (ac.kind != ATTN_DENSE &&
            !(be->sparse_attention_fwd && be->sparse_attention_bwd && be->attention_select))
            return ms_fail("attention.kind \"%s\" has no kernels on device \"%s\" yet",
                           attn_kind_names[ac.kind], rc->device);
    }
    return 0;
}


// checkpoints/<runs.uid>.ckpt: the uid is unique across databases (the row id is not), and a
// resumed run keeps its row, so it finds its file again.
static int checkpoint_path(const RunConfig *rc, Store *store, int64_t run_id, char *out, size_t n) {
    char uid[33];
    if (store_run_uid(store, run_id, uid)) return -1;
    mkdir(rc->checkpoint_dir, 0755); // exists already is fine; a real failure shows at save
    snprintf(out, n, "%s/%s.ckpt", rc->checkpoint_dir, uid);
    return 0;
}

static int save_checkpoint(const RunConfig *rc, Store *store, int64_t run_id, Model *m,
                           Optimizer *opt, int step, const Rng *rng) {
    char path[1024];
    if (checkpoint_path(rc, store, run_id, path, sizeof path)) return -1;
    size_t bytes = m->params.total * sizeof(float);
    TrainState st = {.step = step, .rng = *rng, .adam_m = ms_malloc(bytes), .adam_v = ms_malloc(bytes)};
    m->be->download(st.adam_m, opt->m, bytes);
    m->be->download(st.adam_v, opt->v, bytes);
    int rc_ = checkpoint_save(path, m, &st);
    free(st.adam_m);
    free(st.adam_v);
    if (rc_ == 0) store_artifact(store, run_id, "checkpoint", path);
    return rc_;
}

// Continuing run_id: its checkpoint (parameters, AdamW m and v, batch RNG, step), when it has
// one, replaces the fresh state; what the dead process logged after that step is dropped, so the
// run goes on exactly as an uninterrupted one (positions and the learning rate are functions of
// the step). No checkpoint yet: the run restarts at step 0 in the same row.
static int resume_state(const RunConfig *rc, Store *store, int64_t run_id, Model *m,
                        Optimizer *opt, Rng *rng, int *start) {
    char path[1024];
    *start = 0;
    // LoRA: the checkpoint holds merged weights, not the adapters and their AdamW state, so an
    // interrupted LoRA run restarts from step 0 in its row rather than continue on a changed model.
    if (rc->lora) return store_run_truncate(store, run_id, 0);
    if (checkpoint_path(rc, store, run_id, path, sizeof path)) return -1;
    if (access(path, F_OK) == 0) {
        size_t bytes = m->params.total * sizeof(float);
        TrainState st = {.adam_m = ms_malloc(bytes), .adam_v = ms_malloc(bytes)};
        int r = checkpoint_load(path, m, &st);
        if (r == 0) {
            m->be->upload(opt->m, st.adam_m, bytes);
            m->be->upload(opt->v, st.adam_v, bytes);
            *rng = st.rng;
            *start = (int)st.step;
        }
        free(st.adam_m);
        free(st.adam_v);
        if (r) return -1;
    }
    return store_run_truncate(store, run_id, *start);
}

AttnConfig run_layer_attention(const RunConfig *rc, int l) {
    for (int i = 0; i < rc->n_attn_layers; i++)
        if (rc->attn_layers[i].layer == l) return rc->attn_layers[i].cfg;
    return rc->attention;
}

static void emit_param(void *ctx, const char *key, const char *value) {
    void **c = ctx;
    store_param(c[0], *(int64_t *)c[1], key, value);
}

// attention.* and attention.layers[i].* (1-based i, as in the script) as params.
static void store_attention_params(Store *s, int64_t id, const RunConfig *rc) {
    void *ctx[2] = {s, &id};
    attn_config_emit(&rc->attention, "attention", emit_param, ctx);
    for (int i = 0; i < rc->n_attn_layers; i++) {
        char prefix[48];
        snprintf(prefix, sizeof prefix, "attention.layers[%d]", rc->attn_layers[i].layer + 1);
        attn_config_emit(&rc->attn_layers[i].cfg, prefix, emit_param, ctx);
    }
}

// Records the run's params (flattened config) so WHERE clauses can select on them.
static void store_params(Store *s, int64_t id, const RunConfig *rc) {
    char v[64];
#define P_INT(key, val) (snprintf(v, sizeof v, "%d", (int)(val)), store_param(s, id, key, v))
#define P_NUM(key, val) (snprintf(v, sizeof v, "%.9g", (double)(val)), store_param(s, id, key, v))
    store_param(s, id, "precision", run_precision(rc));
    if (!rc->deterministic) store_param(s, id, "deterministic", "false");
    P_INT("model.dim", rc->model.dim);
    P_INT("model.layers", rc->model.layers);
    P_INT("model.heads", rc->model.heads);
    P_INT("model.kv_heads", rc->model.kv_heads);
    P_INT("model.ffn", rc->model.ffn);
    P_INT("model.vocab", rc->model.vocab);
    P_INT("model.tied", rc->model.tied);
    store_param(s, id, "model.rope_style", rc->model.rope_style == ROPE_HALVES ? "halves" : "interleaved");
    PosItem pos[24];
    char key[64];
    int npos = pos_config_items(&rc->pos, &rc->model, 0, pos, 24);
    for (int i = 0; i < npos; i++) {
        snprintf(key, sizeof key, "positions.%s", pos[i].key);
        store_param(s, id, key, pos[i].value);
    }
    store_attention_params(s, id, rc);
    P_INT("train.seq", rc->seq);
    P_INT("train.batch", rc->batch);
    P_INT("train.steps", rc->optim.steps);
    P_NUM("train.lr", rc->optim.lr);
    P_INT("train.warmup", rc->optim.warmup);
    snprintf(v, sizeof v, "%llu", (unsigned long long)rc->seed);
    store_param(s, id, "seed", v);
    snprintf(v, sizeof v, "%zu", model_num_params(&rc->model)); // > 2^31 for 7B models
    store_param(s, id, "params", v);
    if (rc->finetune_init) store_param(s, id, "finetune.init", rc->finetune_init);
    if (rc->lora) { // only when used
        char targets[64] = "";
        for (int t = 0; t < LORA_NT; t++)
            if (rc->lora_cfg.targets >> t & 1)
                snprintf(targets + strlen(targets), sizeof targets - strlen(targets), "%s%s",
                         targets[0] ? "," : "", lora_target_names[t]);
        P_INT("finetune.lora.rank", rc->lora_cfg.rank);
        P_NUM("finetune.lora.alpha", rc->lora_cfg.alpha);
        store_param(s, id, "finetune.lora.targets", targets);
        P_INT("finetune.lora.train_embeddings", rc->lora_cfg.train_embeddings);
        P_INT("finetune.lora.train_norms", rc->lora_cfg.train_norms);
    }
    if (rc->export_dir) store_param(s, id, "export", rc->export_dir);
#undef P_INT
#undef P_NUM
}

// Position values as metrics pos.*: at log steps, and at any step where a scheduled one changed
// (so a doubling shows at the step it happened). prev holds the last step's values.
static void log_positions(Store *s, int64_t id, int step, const RunConfig *rc, const PosState *ps,
                          double *prev, int force, double wall) {
    const char *names[8];
    double vals[8];
    int nsched, n = pos_state_items(&rc->pos, ps, 0, names, vals, &nsched);
    int changed = step == 0 || memcmp(vals, prev, sizeof(double) * nsched) != 0;
    memcpy(prev, vals, sizeof(double) * nsched);
    if (force || changed)
        for (int i = 0; i < n; i++) store_metric(s, id, step + 1, names[i], vals[i], wall);
}

// Realised attention cost of the training forward just run (the lists do not depend on the data,
// only on the length): fraction of the causal query-key pairs computed, and forward FLOPs per
// token over all layers (4 d per pair for q.k and p.v, 2 d per selection score).
static void store_attention_cost(Store *s, int64_t id, const Model *m, int T, RunResult *res,
                                 double wall) {
    AttnStats st;
    model_attention_stats(m, &st);
    double hd = (double)m->cfg.dim / m->cfg.heads;
    res->attn_sparsity = st.pairs / st.causal_pairs;
    res->attn_flops_per_token = (4 * hd * st.pairs + 2 * hd * st.select_dots) / T;
    store_metric(s, id, 1, "attn.sparsity", res->attn_sparsity, wall);
    store_metric(s, id, 1, "attn.flops_per_token", res->attn_flops_per_token, wall);
    store_metric(s, id, 1, "attn.dense_flops_per_token", 4 * hd * st.causal_pairs / T, wall);
}

static void fail(RunResult *res, const char *status, const char *msg) {
    res->ok = 0;
    res->status = status;
    snprintf(res->error, sizeof res->error, "%s", msg);
}

int run_execute(const RunConfig *rc, const Corpus *corpus, Store *store, RunResult *res) {
    memset(res, 0, sizeof *res);
    res->status = "failed";
    char host[256] = "unknown", rev[64];
    int dirty;
    gethostname(host, sizeof host);
    provenance_git(rev, sizeof rev, &dirty);
    char *prov = provenance_json(rc->device, rc->seed);
    RunInfo info = {.name = rc->name, .script = rc->script, .config_json = rc->config_json,
                    .config_hash = rc->config_hash, .git_rev = rev[0] ? rev : NULL,
                    .git_dirty = dirty, .host = host, .device = rc->device,
                    .script_hash = rc->script_hash, .provenance_json = prov};
    int began = rc->resume_id ? store_run_resume(store, rc->resume_id, prov)
                              : store_run_begin(store, &info, &res->run_id);
    free(prov);
    if (began) return -1;
    if (rc->resume_id) res->run_id = rc->resume_id;
    store_params(store, res->run_id, rc);
    double t_start = ms_now();

    Model model;
    Optimizer opt = {0};
    int have_model = 0, have_opt = 0;
    int *inputs = NULL, *targets = NULL;
    if (run_config_check(rc)) {
        fail(res, "failed", ms_error());
        goto finish;
    }
    if (rc->model.vocab < corpus->vocab) {
        char msg[256];
        snprintf(msg, sizeof msg, "model.vocab (%d) is smaller than the corpus tokenizer's (%d)",
                 rc->model.vocab, corpus->vocab);
        fail(res, "failed", msg);
        goto finish;
    }
    int max_len = rc->seq;
    for (int i = 0; i < rc->n_ppl_lengths && !rc->ppl_corpus; i++) // eval.ppl.data: checked there
        if (rc->ppl_lengths[i] > max_len) max_len = rc->ppl_lengths[i];
    if (corpus->n_train <= (size_t)rc->seq + 1 || corpus->n_eval <= (size_t)max_len + 1) {
        char msg[256];
        snprintf(msg, sizeof msg,
                 "corpus too small: %zu train / %zu eval tokens for train.seq %d and eval length %d",
                 corpus->n_train, corpus->n_eval, rc->seq, max_len);
        fail(res, "failed", msg);
        goto finish;
    }
#ifdef MSLAB_CUDA
    attn_bf16_set_deterministic(rc->deterministic); // process-wide: set per run
#endif
    if (model_create(&model, &rc->model, run_backend(rc->device, run_precision(rc)))) {
        fail(res, "failed", ms_error());
        goto finish;
    }
    have_model = 1;
    AttnConfig *attn = ms_malloc(sizeof(AttnConfig) * rc->model.layers);
    for (int l = 0; l < rc->model.layers; l++) attn[l] = run_layer_attention(rc, l);
    int attn_rc = model_set_attention(&model, attn);
    free(attn);
    if (attn_rc) {
        fail(res, "failed", ms_error());
        goto finish;
    }
    model_init_weights(&model, rc->seed);
    // fine-tuning: the weights of finetune.init, then LoRA adapters over them (core/lora.h)
    if ((rc->finetune_init && model_source_load(rc->finetune_init, &model)) ||
        (rc->lora && lora_attach(&model, &rc->lora_cfg, rc->seed))) {
        fail(res, "failed", ms_error());
        goto finish;
    }
    optim_create(&opt, &rc->optim, &model);
    have_opt = 1;

    Rng rng;
    rng_seed(&rng, rc->seed ^ 0x5eed0fda7aULL); // batches: independent of the weight stream
    int B = rc->batch, T = rc->seq, steps = rc->optim.steps, start = 0;
    if (rc->resume_id && resume_state(rc, store, res->run_id, &model, &opt, &rng, &start)) {
        fail(res, "failed", ms_error());
        goto finish;
    }
    res->steps_done = start;
    inputs = ms_malloc(sizeof(int) * (size_t)B * T);
    targets = ms_malloc(sizeof(int) * (size_t)B * T);
    Progress prog;
    progress_begin(&prog, rc->name, steps, (double)B * T);
    prog.first_step = start;
    double t_train = ms_now(), t_first = 0, pos_prev[8] = {0};
    PosState ps;
    int step;
    for (step = start; step < steps; step++) {
        if (run_stop_requested) break;
        corpus_batch(corpus, &rng, B, T, inputs, targets);
        model_zero_grad(&model);
        if (pos_apply_train(&model, &rc->pos, step, rc->seed, B, T, &ps)) {
            fail(res, "failed", ms_error());
            break;
        }
        float loss = model_forward(&model, inputs, targets, B, T);
        if (!isfinite(loss)) {
            char msg[128];
            snprintf(msg, sizeof msg, "loss is %g at step %d", loss, step);
            fail(res, "failed", msg);
            break;
        }
        model_backward(&model);
        float norm = optim_step(&opt, &model, step);
        if (step == 0) store_attention_cost(store, res->run_id, &model, T, res, ms_now() - t_start);
        if (step == start) t_first = ms_now();
        res->steps_done = step + 1;
        res->train_loss = loss;
        int last = step + 1 == steps;
        int log_now = (step + 1) % rc->log_every == 0 || last || step == 0;
        log_positions(store, res->run_id, step, rc, &ps, pos_prev, log_now, ms_now() - t_start);
        if (log_now) {
            double now = ms_now(), wall = now - t_start;
            // throughput excludes step 0 (first-touch allocation and warm-up)
            double tps = step > start ? (double)B * T * (step - start) / (now - t_first) : 0;
            res->tokens_per_s = tps;
            store_metric(store, res->run_id, step + 1, "train.loss", loss, wall);
            store_metric(store, res->run_id, step + 1, "train.lr", optim_lr(&rc->optim, step), wall);
            store_metric(store, res->run_id, step + 1, "train.grad_norm", norm, wall);
            if (step > start) store_metric(store, res->run_id, step + 1, "train.tokens_per_s", tps, wall);
            store_heartbeat(store, res->run_id);
            progress_update(&prog, step + 1, loss, tps);
        }
        if (rc->eval_every > 0 && (step + 1) % rc->eval_every == 0 && !last) {
            if (pos_apply_infer(&model, &rc->pos, step, T, &ps)) {
                fail(res, "failed", ms_error());
                break;
            }
            model_set_eval(&model, 1); // attention eval = "dense" layers evaluate dense
            double el = eval_loss(&model, corpus->eval, corpus->n_eval, B, T, rc->eval_batches, rc->seed);
            model_set_eval(&model, 0);
            store_metric(store, res->run_id, step + 1, "eval.loss", el, ms_now() - t_start);
        }
        if (rc->checkpoint_every > 0 && (step + 1) % rc->checkpoint_every == 0 && !last)
            if (save_checkpoint(rc, store, res->run_id, &model, &opt, step + 1, &rng))
                progress_note(&prog, ms_error());
    }
    progress_end(&prog);
    (void)t_train;
    if (res->error[0]) goto finish;
    lora_merge(&model); // LoRA: W += s B A; the checkpoint, export and evaluation see one model
    if (save_checkpoint(rc, store, res->run_id, &model, &opt, res->steps_done, &rng))
        progress_note(&prog, ms_error());
    if (rc->export_dir) {
        if (safetensors_export(rc->export_dir, &model, 0)) progress_note(&prog, ms_error());
        else store_artifact(store, res->run_id, "export", rc->export_dir);
    }
    if (run_stop_requested) {
        fail(res, "interrupted", "interrupted by signal");
        goto finish;
    }

    if (pos_apply_infer(&model, &rc->pos, res->steps_done - 1, T, &ps)) {
        fail(res, "failed", ms_error());
        goto finish;
    }
    model_set_eval(&model, 1);
    res->eval_loss = eval_loss(&model, corpus->eval, corpus->n_eval, B, T, rc->eval_batches, rc->seed);
    // a run resumed after its last step may hold the dead process's final eval.loss: replace it
    store_metric_delete(store, res->run_id, steps, "eval.loss");
    store_metric(store, res->run_id, steps, "eval.loss", res->eval_loss, ms_now() - t_start);
    // eval.ppl (each length x protocol) and eval.passkey: core/run_eval.c
    if (run_eval_after_training(rc, corpus, &model, store, res->run_id, res->steps_done - 1, res,
                                &prog)) {
        fail(res, "failed", ms_error());
        goto finish;
    }
    res->ok = 1;
    res->status = "done";

finish:
    res->wall_s = ms_now() - t_start;
    free(inputs);
    free(targets);
    if (have_opt) optim_destroy(&opt, &model);
    if (have_model) model_destroy(&model);
    store_run_usage(store, res->run_id, provenance_peak_rss_mb());
    if (store_run_end(store, res->run_id, res->status, res->ok ? NULL : res->error)) {
        snprintf(res->error, sizeof res->error, "%s", ms_error());
        res->ok = 0;
        res->status = "failed"; // not recorded as done (e.g. a full disk): rerunning resumes it
    }
    return res->ok ? 0 : -1;
}

// Canonical JSON of a run's config: fixed key order and number formatting, so the same config
// always gives the same text and hash (the script path is provenance, not config, and is left out).
static void json_str(char **buf, size_t *len, size_t *cap, const char *fmt, ...) {
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(*buf + *len, *cap - *len, fmt, ap);
        va_end(ap);
        if ((size_t)n < *cap - *len) {
            *len += n;
            return;
        }
        *cap = *cap * 2 + n;
        *buf = ms_realloc(*buf, *cap);
    }
}

static void json_escape(char *out, size_t n, const char *s) {
    size_t j = 0;
    for (; *s && j + 7 < n; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') { out[j++] = '\\'; out[j++] = (char)c; }
        else if (c < 0x20) j += snprintf(out + j, n - j, "\\u%04x", c);
        else out[j++] = (char)c;
    }
    out[j] = 0;
}

char *run_config_json(const RunConfig *rc) {
    size_t len = 0, cap = 1024;
    char *b = ms_malloc(cap), name[512], data[1024];
    b[0] = 0;
    json_escape(name, sizeof name, rc->name);
    json_escape(data, sizeof data, rc->corpus_desc ? rc->corpus_desc : "");
    const ModelConfig *m = &rc->model;
    const OptimConfig *o = &rc->optim;
    json_str(&b, &len, &cap, "{\"name\":\"%s\",\"data\":\"%s\",\"seed\":%llu,\"device\":\"%s\",",
             name, data, (unsigned long long)rc->seed, rc->device);
    // only when not fp32: the hashes of fp32 runs (every run before bf16 existed) stay put
    if (strcmp(run_precision(rc), "fp32"))
        json_str(&b, &len, &cap, "\"precision\":\"%s\",", run_precision(rc));
    if (!rc->deterministic) // likewise: only the non-default value enters the hash
        json_str(&b, &len, &cap, "\"deterministic\":false,");
    json_str(&b, &len, &cap,
             "\"model\":{\"dim\":%d,\"layers\":%d,\"heads\":%d,\"kv_heads\":%d,\"ffn\":%d,"
             "\"vocab\":%d,\"tied\":%s,\"norm_eps\":%.9g,\"rope_style\":\"%s\"},",
             m->dim, m->layers, m->heads, m->kv_heads, m->ffn, m->vocab, m->tied ? "true" : "false",
             m->norm_eps, m->rope_style == ROPE_HALVES ? "halves" : "interleaved");
    PosItem pos[24];
    int npos = pos_config_items(&rc->pos, m, 1, pos, 24);
    json_str(&b, &len, &cap, "\"positions\":{");
    for (int i = 0; i < npos; i++)
        json_str(&b, &len, &cap, "%s\"%s\":%s", i ? "," : "", pos[i].key, pos[i].value);
    json_str(&b, &len, &cap, "},");
    char *att = attn_config_json(&rc->attention);
    att[strlen(att) - 1] = 0; // reopen the object for the per-layer configs
    json_str(&b, &len, &cap, "\"attention\":%s", att);
    free(att);
    if (rc->n_attn_layers) {
        json_str(&b, &len, &cap, ",\"layers\":{");
        for (int i = 0; i < rc->n_attn_layers; i++) {
            char *lj = attn_config_json(&rc->attn_layers[i].cfg);
            json_str(&b, &len, &cap, "%s\"%d\":%s", i ? "," : "", rc->attn_layers[i].layer + 1, lj);
            free(lj);
        }
        json_str(&b, &len, &cap, "}");
    }
    json_str(&b, &len, &cap, "},");
    json_str(&b, &len, &cap,
             "\"train\":{\"seq\":%d,\"batch\":%d,\"steps\":%d,\"lr\":%.9g,\"lr_min\":%.9g,"
             "\"warmup\":%d,\"weight_decay\":%.9g,\"beta1\":%.9g,\"beta2\":%.9g,\"eps\":%.9g,"
             "\"clip\":%.9g,\"log_every\":%d,\"eval_every\":%d,\"eval_batches\":%d,"
             "\"checkpoint_every\":%d},",
             rc->seq, rc->batch, o->steps, o->lr, o->lr_min, o->warmup, o->weight_decay, o->beta1,
             o->beta2, o->eps, o->clip, rc->log_every, rc->eval_every, rc->eval_batches,
             rc->checkpoint_every);
    if (rc->finetune_init || rc->lora) { // only when used: the hashes of other runs stay put
        char init[1024];
        json_escape(init, sizeof init, rc->finetune_init ? rc->finetune_init : "");
        json_str(&b, &len, &cap, "\"finetune\":{\"init\":\"%s\"", init);
        if (rc->lora) {
            const LoraConfig *lc = &rc->lora_cfg;
            json_str(&b, &len, &cap, ",\"lora\":{\"rank\":%d,\"alpha\":%.9g,\"targets\":[", lc->rank,
                     lc->alpha);
            for (int t = 0, k = 0; t < LORA_NT; t++)
                if (lc->targets >> t & 1)
                    json_str(&b, &len, &cap, "%s\"%s\"", k++ ? "," : "", lora_target_names[t]);
            json_str(&b, &len, &cap, "],\"train_embeddings\":%s,\"train_norms\":%s}",
                     lc->train_embeddings ? "true" : "false", lc->train_norms ? "true" : "false");
        }
        json_str(&b, &len, &cap, "},");
    }
    char *ev = run_eval_json(rc); // core/run_eval.c
    json_str(&b, &len, &cap, "\"eval\":%s}", ev);
    free(ev);
    return b;
}
