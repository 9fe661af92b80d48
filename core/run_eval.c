// run_eval.c: what a run evaluates after training (eval.ppl: perplexity by protocol and length;
// eval.passkey: passkey retrieval trials), its checks and its part of the config JSON. Split out
// of run.c so the evaluation grows without touching the training loop.
#include "run_eval.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "eval.h"
#include "passkey.h"
#include "tokenizer.h"

void run_eval_defaults(RunConfig *rc) {
    rc->passkey_trials = 10;
    rc->passkey_depth = -1.0;
    rc->passkey_new_tokens = 10;
}

int run_eval_check(const RunConfig *rc) {
    for (int i = 0; i < rc->n_ppl_protocols; i++)
        if (rc->ppl_protocols[i] < 0 || rc->ppl_protocols[i] >= PPL_NPROTOCOLS)
            return ms_fail("eval.ppl.protocols[%d] (%d) is not a protocol", i + 1, rc->ppl_protocols[i]);
    if (rc->ppl_stride < 0) return ms_fail("eval.ppl.stride (%d) must be positive", rc->ppl_stride);
    for (int i = 0; i < rc->n_ppl_protocols; i++)
        if (rc->ppl_protocols[i] == PPL_SLIDING && rc->ppl_stride > 0)
            for (int j = 0; j < rc->n_ppl_lengths; j++)
                if (rc->ppl_stride > rc->ppl_lengths[j])
                    return ms_fail("eval.ppl.stride (%d) must be at most every length for "
                                   "\"sliding\" (eval.ppl.lengths[%d] is %d)",
                                   rc->ppl_stride, j + 1, rc->ppl_lengths[j]);
    for (int i = 0; i < rc->n_passkey_lengths; i++)
        if (rc->passkey_lengths[i] <= 0)
            return ms_fail("eval.passkey.lengths[%d] (%d) must be positive", i + 1,
                           rc->passkey_lengths[i]);
    if (rc->passkey_trials <= 0)
        return ms_fail("eval.passkey.trials (%d) must be positive", rc->passkey_trials);
    if (!(rc->passkey_depth <= 1.0) || (rc->passkey_depth < 0 && rc->passkey_depth != -1.0))
        return ms_fail("eval.passkey.depth (%g) must be in [0, 1] or \"uniform\"", rc->passkey_depth);
    if (rc->passkey_new_tokens <= 0)
        return ms_fail("eval.passkey.new_tokens (%d) must be positive", rc->passkey_new_tokens);
    return 0;
}

// ---- config JSON ---------------------------------------------------------------------------------
typedef struct {
    char *b;
    size_t len, cap;
} Buf;

static void put(Buf *o, const char *fmt, ...) {
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(o->b + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if ((size_t)n < o->cap - o->len) {
            o->len += n;
            return;
        }
        o->cap = o->cap * 2 + n;
        o->b = ms_realloc(o->b, o->cap);
    }
}

static void put_escaped(Buf *o, const char *s) {
    put(o, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') put(o, "\\%c", c);
        else if (c < 0x20) put(o, "\\u%04x", c);
        else put(o, "%c", c);
    }
    put(o, "\"");
}

char *run_eval_json(const RunConfig *rc) {
    Buf o = {ms_malloc(256), 0, 256};
    o.b[0] = 0;
    // exactly the text of the first versions for configs without the newer keys (stable hashes)
    if (rc->n_ppl_protocols <= 1)
        put(&o, "{\"ppl\":{\"protocol\":\"%s\"",
            ppl_protocol_names[rc->n_ppl_protocols ? rc->ppl_protocols[0] : PPL_WINDOWS]);
    else {
        put(&o, "{\"ppl\":{\"protocols\":[");
        for (int i = 0; i < rc->n_ppl_protocols; i++)
            put(&o, "%s\"%s\"", i ? "," : "", ppl_protocol_names[rc->ppl_protocols[i]]);
        put(&o, "]");
    }
    put(&o, ",\"max_tokens\":%lld,\"lengths\":[", (long long)rc->ppl_max_tokens);
    for (int i = 0; i < rc->n_ppl_lengths; i++) put(&o, "%s%d", i ? "," : "", rc->ppl_lengths[i]);
    put(&o, "]");
    if (rc->ppl_stride) put(&o, ",\"stride\":%d", rc->ppl_stride);
    if (rc->ppl_corpus) {
        put(&o, ",\"data\":");
        put_escaped(&o, rc->ppl_corpus_desc ? rc->ppl_corpus_desc : "");
    }
    put(&o, "}");
    if (rc->n_passkey_lengths) {
        put(&o, ",\"passkey\":{\"lengths\":[");
        for (int i = 0; i < rc->n_passkey_lengths; i++)
            put(&o, "%s%d", i ? "," : "", rc->passkey_lengths[i]);
        put(&o, "],\"trials\":%d,", rc->passkey_trials);
        if (rc->passkey_depth < 0) put(&o, "\"depth\":\"uniform\",");
        else put(&o, "\"depth\":%.9g,", rc->passkey_depth);
        put(&o, "\"seed\":%llu,\"new_tokens\":%d", (unsigned long long)rc->passkey_seed,
            rc->passkey_new_tokens);
        if (rc->passkey_tokenizer) {
            put(&o, ",\"tokenizer\":");
            put_escaped(&o, rc->passkey_tokenizer);
        }
        put(&o, "}");
    }
    put(&o, "}");
    return o.b;
}

// ---- after training ------------------------------------------------------------------------------

// The inference values of one eval length, as params positions.infer.<L>.<name>.
static void store_infer_params(Store *s, int64_t id, const RunConfig *rc, int L, const PosState *ps) {
    const char *names[8];
    double vals[8];
    char key[96], v[64];
    int n = pos_state_items(&rc->pos, ps, 1, names, vals, NULL);
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof key, "positions.infer.%d.%s", L, names[i] + 4); // drop "pos."
        snprintf(v, sizeof v, "%.9g", vals[i]);
        store_param(s, id, key, v);
    }
}

static int run_ppl(const RunConfig *rc, const Corpus *corpus, Model *m, Store *store,
                   int64_t run_id, int step, RunResult *res, Progress *prog) {
    EvalStream st[2];
    int ns = 0;
    const Corpus *pc = rc->ppl_corpus;
    if (pc) {
        if (pc->vocab > m->cfg.vocab)
            return ms_fail("eval.ppl.data: its tokenizer has %d ids, more than model.vocab (%d)",
                           pc->vocab, m->cfg.vocab);
        if (pc->tokenizer && corpus->tokenizer && strcmp(pc->tokenizer, corpus->tokenizer))
            return ms_fail("eval.ppl.data: its tokenizer (%s) is not the run corpus's (%s): the "
                           "model would read other ids than it was trained on", pc->tokenizer,
                           corpus->tokenizer);
        if (pc->n_train) st[ns++] = (EvalStream){pc->train, pc->n_train, pc->train_doc_start,
                                                 pc->n_train_starts};
        if (pc->n_eval) st[ns++] = (EvalStream){pc->eval, pc->n_eval, pc->eval_doc_start,
                                                pc->n_eval_starts};
    } else {
        st[ns++] = (EvalStream){corpus->eval, corpus->n_eval, corpus->eval_doc_start,
                                corpus->n_eval_starts};
    }
    int nprot = rc->n_ppl_protocols ? rc->n_ppl_protocols : 1;
    for (int i = 0; i < rc->n_ppl_lengths; i++) {
        int L = rc->ppl_lengths[i];
        PosState ps;
        if (pos_apply_infer(m, &rc->pos, step, L, &ps)) return -1;
        store_infer_params(store, run_id, rc, L, &ps);
        for (int k = 0; k < nprot; k++) {
            int proto = rc->n_ppl_protocols ? rc->ppl_protocols[k] : PPL_WINDOWS;
            PplSpec sp = {.protocol = proto, .L = L, .stride = rc->ppl_stride,
                          .max_tokens = rc->ppl_max_tokens,
                          .batch_tokens = (int64_t)rc->batch * rc->seq};
            PplResult pr;
            // pos_apply_infer's positions hold for every forward at this length (not per-forward
            // overrides), so all the protocol's windows see them
            if (eval_ppl(m, st, ns, &sp, &pr)) return -1;
            store_eval(store, run_id, "ppl", L, pr.ppl, ppl_protocol_names[proto], pr.n);
            if (k == 0 && res->n_ppl < RUN_MAX_LENGTHS) {
                res->ppl_lengths[res->n_ppl] = L;
                res->ppl[res->n_ppl++] = pr.ppl;
            }
            char line[200];
            snprintf(line, sizeof line, "%s: ppl@%d = %.4f (%lld tokens, %lld windows, %s)", rc->name,
                     L, pr.ppl, (long long)pr.n, (long long)pr.windows, ppl_protocol_names[proto]);
            progress_note(prog, line);
        }
    }
    return 0;
}

uint64_t run_passkey_seed(uint64_t seed, int length, int trial) {
    uint64_t v[3] = {seed, (uint64_t)length, (uint64_t)trial};
    return ms_fnv1a(MS_FNV_INIT, v, sizeof v) >> 2; // fits the store's signed 64-bit column
}

static int run_passkey(const RunConfig *rc, const Corpus *corpus, Model *m, Store *store,
                       int64_t run_id, int step, Progress *prog) {
    const char *tname = rc->passkey_tokenizer ? rc->passkey_tokenizer
                        : corpus->tokenizer      ? corpus->tokenizer
                                                 : "byte";
    Tokenizer tk;
    if (tokenizer_open(&tk, tname, 0)) return -1;
    if (tk.vocab > m->cfg.vocab) {
        tokenizer_close(&tk);
        return ms_fail("eval.passkey: tokenizer %s has %d ids, more than model.vocab (%d)", tname,
                       tk.vocab, m->cfg.vocab);
    }
    int rc_ = 0;
    for (int i = 0; i < rc->n_passkey_lengths && !rc_; i++) {
        int L = rc->passkey_lengths[i], correct = 0;
        PosState ps;
        if ((rc_ = pos_apply_infer(m, &rc->pos, step, L, &ps))) break;
        store_infer_params(store, run_id, rc, L, &ps);
        for (int t = 0; t < rc->passkey_trials; t++) {
            uint64_t seed = run_passkey_seed(rc->passkey_seed, L, t);
            PasskeySpec sp = {.target_tokens = L, .depth = rc->passkey_depth, .seed = seed};
            Passkey pk;
            PasskeyResult r;
            if ((rc_ = passkey_make(&pk, &tk, &sp))) {
                char why[512];
                snprintf(why, sizeof why, "%s", ms_error());
                ms_fail("eval.passkey.lengths[%d] (%d): %s", i + 1, L, why);
                break;
            }
            if ((rc_ = passkey_trial(m, &tk, &pk, rc->passkey_new_tokens, &r))) {
                passkey_free(&pk);
                break;
            }
            store_passkey_trial(store, run_id, L, pk.depth, (int64_t)seed, pk.key, r.generated,
                                r.correct);
            correct += r.correct;
            passkey_result_free(&r);
            passkey_free(&pk);
        }
        if (rc_) break;
        double acc = (double)correct / rc->passkey_trials;
        store_eval(store, run_id, "passkey", L, acc, "landmark", rc->passkey_trials);
        char line[160];
        snprintf(line, sizeof line, "%s: passkey@%d = %.2f (%d trials)", rc->name, L, acc,
                 rc->passkey_trials);
        progress_note(prog, line);
    }
    tokenizer_close(&tk);
    return rc_;
}

int run_eval_after_training(const RunConfig *rc, const Corpus *corpus, Model *m, Store *store,
                            int64_t run_id, int step, RunResult *res, Progress *prog) {
    if (run_ppl(rc, corpus, m, store, run_id, step, res, prog)) return -1;
    return run_passkey(rc, corpus, m, store, run_id, step, prog);
}
