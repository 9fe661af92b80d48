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

volatile int run_stop_requested;

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
    rc->seed = 1;
    rc->model = model_config_default();
    rc->optim = optim_config_default();
    rc->seq = 128;
    rc->batch = 16;
    rc->log_every = 10;
    rc->eval_every = 0;
    rc->eval_batches = 8;
    rc->checkpoint_dir = "checkpoints";
    rc->ppl_max_tokens = 32768;
}

int run_config_check(const RunConfig *rc) {
    if (model_config_check(&rc->model)) return -1;
    if (optim_config_check(&rc->optim)) return -1;
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
    if (strcmp(rc->device, "cpu") != 0)
        return ms_fail("device \"%s\" is not available in this build (available: \"cpu\")",
                       rc->device);
    return 0;
}

static void read_git(char *rev, size_t n, int *dirty) {
    rev[0] = 0;
    *dirty = 0;
    FILE *f = popen("git rev-parse HEAD 2>/dev/null", "r");
    if (f) {
        if (fgets(rev, (int)n, f)) rev[strcspn(rev, "\n")] = 0;
        pclose(f);
    }
    if (!rev[0]) return;
    f = popen("git status --porcelain --untracked-files=no 2>/dev/null", "r");
    if (f) {
        char line[64];
        if (fgets(line, sizeof line, f)) *dirty = 1;
        pclose(f);
    }
}

static int checkpoint_path(const RunConfig *rc, int64_t run_id, char *out, size_t n) {
    mkdir(rc->checkpoint_dir, 0755); // exists already is fine; a real failure shows at save
    snprintf(out, n, "%s/run%lld.ckpt", rc->checkpoint_dir, (long long)run_id);
    return 0;
}

static int save_checkpoint(const RunConfig *rc, Store *store, int64_t run_id, Model *m,
                           Optimizer *opt, int step, const Rng *rng) {
    char path[1024];
    checkpoint_path(rc, run_id, path, sizeof path);
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

// Records the run's params (flattened config) so WHERE clauses can select on them.
static void store_params(Store *s, int64_t id, const RunConfig *rc) {
    char v[64];
#define P_INT(key, val) (snprintf(v, sizeof v, "%d", (int)(val)), store_param(s, id, key, v))
#define P_NUM(key, val) (snprintf(v, sizeof v, "%.9g", (double)(val)), store_param(s, id, key, v))
    P_INT("model.dim", rc->model.dim);
    P_INT("model.layers", rc->model.layers);
    P_INT("model.heads", rc->model.heads);
    P_INT("model.kv_heads", rc->model.kv_heads);
    P_INT("model.ffn", rc->model.ffn);
    P_INT("model.vocab", rc->model.vocab);
    P_INT("model.tied", rc->model.tied);
    store_param(s, id, "model.rope_style", rc->model.rope_style == ROPE_HALVES ? "halves" : "interleaved");
    store_param(s, id, "positions.kind", "rope");
    P_NUM("positions.base", rc->model.rope_base);
    store_param(s, id, "attention.kind", "dense");
    P_INT("train.seq", rc->seq);
    P_INT("train.batch", rc->batch);
    P_INT("train.steps", rc->optim.steps);
    P_NUM("train.lr", rc->optim.lr);
    P_INT("train.warmup", rc->optim.warmup);
    snprintf(v, sizeof v, "%llu", (unsigned long long)rc->seed);
    store_param(s, id, "seed", v);
    P_INT("params", (int)model_num_params(&rc->model));
#undef P_INT
#undef P_NUM
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
    read_git(rev, sizeof rev, &dirty);
    RunInfo info = {.name = rc->name, .script = rc->script, .config_json = rc->config_json,
                    .config_hash = rc->config_hash, .git_rev = rev[0] ? rev : NULL,
                    .git_dirty = dirty, .host = host, .device = rc->device};
    if (store_run_begin(store, &info, &res->run_id)) return -1;
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
    for (int i = 0; i < rc->n_ppl_lengths; i++)
        if (rc->ppl_lengths[i] > max_len) max_len = rc->ppl_lengths[i];
    if (corpus->n_train <= (size_t)rc->seq + 1 || corpus->n_eval <= (size_t)max_len + 1) {
        char msg[256];
        snprintf(msg, sizeof msg,
                 "corpus too small: %zu train / %zu eval tokens for train.seq %d and eval length %d",
                 corpus->n_train, corpus->n_eval, rc->seq, max_len);
        fail(res, "failed", msg);
        goto finish;
    }
    if (model_create(&model, &rc->model, backend_cpu())) {
        fail(res, "failed", ms_error());
        goto finish;
    }
    have_model = 1;
    model_init_weights(&model, rc->seed);
    optim_create(&opt, &rc->optim, &model);
    have_opt = 1;

    Rng rng;
    rng_seed(&rng, rc->seed ^ 0x5eed0fda7aULL); // batches: independent of the weight stream
    int B = rc->batch, T = rc->seq, steps = rc->optim.steps;
    inputs = ms_malloc(sizeof(int) * (size_t)B * T);
    targets = ms_malloc(sizeof(int) * (size_t)B * T);
    Progress prog;
    progress_begin(&prog, rc->name, steps, (double)B * T);
    double t_train = ms_now(), t_first = 0;
    int step;
    for (step = 0; step < steps; step++) {
        if (run_stop_requested) break;
        corpus_batch(corpus, &rng, B, T, inputs, targets);
        model_zero_grad(&model);
        float loss = model_forward(&model, inputs, targets, B, T);
        if (!isfinite(loss)) {
            char msg[128];
            snprintf(msg, sizeof msg, "loss is %g at step %d", loss, step);
            fail(res, "failed", msg);
            break;
        }
        model_backward(&model);
        float norm = optim_step(&opt, &model, step);
        if (step == 0) t_first = ms_now();
        res->steps_done = step + 1;
        res->train_loss = loss;
        int last = step + 1 == steps;
        if ((step + 1) % rc->log_every == 0 || last || step == 0) {
            double now = ms_now(), wall = now - t_start;
            // throughput excludes step 0 (first-touch allocation and warm-up)
            double tps = step > 0 ? (double)B * T * step / (now - t_first) : 0;
            res->tokens_per_s = tps;
            store_metric(store, res->run_id, step + 1, "train.loss", loss, wall);
            store_metric(store, res->run_id, step + 1, "train.lr", optim_lr(&rc->optim, step), wall);
            store_metric(store, res->run_id, step + 1, "train.grad_norm", norm, wall);
            if (step > 0) store_metric(store, res->run_id, step + 1, "train.tokens_per_s", tps, wall);
            store_heartbeat(store, res->run_id);
            progress_update(&prog, step + 1, loss, tps);
        }
        if (rc->eval_every > 0 && (step + 1) % rc->eval_every == 0 && !last) {
            double el = eval_loss(&model, corpus->eval, corpus->n_eval, B, T, rc->eval_batches, rc->seed);
            store_metric(store, res->run_id, step + 1, "eval.loss", el, ms_now() - t_start);
        }
        if (rc->checkpoint_every > 0 && (step + 1) % rc->checkpoint_every == 0 && !last)
            if (save_checkpoint(rc, store, res->run_id, &model, &opt, step + 1, &rng))
                progress_note(&prog, ms_error());
    }
    progress_end(&prog);
    (void)t_train;
    if (res->error[0]) goto finish;
    if (save_checkpoint(rc, store, res->run_id, &model, &opt, res->steps_done, &rng))
        progress_note(&prog, ms_error());
    if (run_stop_requested) {
        fail(res, "interrupted", "interrupted by signal");
        goto finish;
    }

    res->eval_loss = eval_loss(&model, corpus->eval, corpus->n_eval, B, T, rc->eval_batches, rc->seed);
    store_metric(store, res->run_id, steps, "eval.loss", res->eval_loss, ms_now() - t_start);
    for (int i = 0; i < rc->n_ppl_lengths; i++) {
        PplResult pr;
        int L = rc->ppl_lengths[i];
        if (eval_ppl_windows(&model, corpus->eval, corpus->n_eval, L, rc->ppl_max_tokens,
                             (int64_t)B * T, &pr)) {
            fail(res, "failed", ms_error());
            goto finish;
        }
        store_eval(store, res->run_id, "ppl", L, pr.ppl, "windows", pr.n);
        res->ppl_lengths[res->n_ppl] = L;
        res->ppl[res->n_ppl++] = pr.ppl;
        char line[160];
        snprintf(line, sizeof line, "%s: ppl@%d = %.4f (%lld tokens, windows)", rc->name, L, pr.ppl,
                 (long long)pr.n);
        progress_note(&prog, line);
    }
    res->ok = 1;
    res->status = "done";

finish:
    res->wall_s = ms_now() - t_start;
    free(inputs);
    free(targets);
    if (have_opt) optim_destroy(&opt, &model);
    if (have_model) model_destroy(&model);
    if (store_run_end(store, res->run_id, res->status, res->ok ? NULL : res->error)) {
        snprintf(res->error, sizeof res->error, "%s", ms_error());
        res->ok = 0;
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
    json_str(&b, &len, &cap,
             "\"model\":{\"dim\":%d,\"layers\":%d,\"heads\":%d,\"kv_heads\":%d,\"ffn\":%d,"
             "\"vocab\":%d,\"tied\":%s,\"norm_eps\":%.9g,\"rope_style\":\"%s\"},",
             m->dim, m->layers, m->heads, m->kv_heads, m->ffn, m->vocab, m->tied ? "true" : "false",
             m->norm_eps, m->rope_style == ROPE_HALVES ? "halves" : "interleaved");
    json_str(&b, &len, &cap, "\"positions\":{\"kind\":\"rope\",\"base\":%.9g},", m->rope_base);
    json_str(&b, &len, &cap, "\"attention\":{\"kind\":\"dense\"},");
    json_str(&b, &len, &cap,
             "\"train\":{\"seq\":%d,\"batch\":%d,\"steps\":%d,\"lr\":%.9g,\"lr_min\":%.9g,"
             "\"warmup\":%d,\"weight_decay\":%.9g,\"beta1\":%.9g,\"beta2\":%.9g,\"eps\":%.9g,"
             "\"clip\":%.9g,\"log_every\":%d,\"eval_every\":%d,\"eval_batches\":%d,"
             "\"checkpoint_every\":%d},",
             rc->seq, rc->batch, o->steps, o->lr, o->lr_min, o->warmup, o->weight_decay, o->beta1,
             o->beta2, o->eps, o->clip, rc->log_every, rc->eval_every, rc->eval_batches,
             rc->checkpoint_every);
    json_str(&b, &len, &cap, "\"eval\":{\"ppl\":{\"protocol\":\"windows\",\"max_tokens\":%lld,\"lengths\":[",
             (long long)rc->ppl_max_tokens);
    for (int i = 0; i < rc->n_ppl_lengths; i++)
        json_str(&b, &len, &cap, "%s%d", i ? "," : "", rc->ppl_lengths[i]);
    json_str(&b, &len, &cap, "]}}}");
    return b;
}
