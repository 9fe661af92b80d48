// generate.c: run.c's sampler and generation loop over the KV-cache forward (see generate.h).
// The float arithmetic of the sampler follows run.c operation for operation (this file builds
// with -std=c11, so no FMA contraction, as run.c's default x86-64 build); only the sort differs in
// breaking exact probability ties by index, where qsort's order is unspecified.
#include "generate.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "checkpoint.h"
#include "safetensors.h"
#include "common.h"
#include "model_decode.h"

// ---- sampler ----------------------------------------------------------------------------------------
uint32_t runc_random_u32(uint64_t *state) { // xorshift*
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (uint32_t)((*state * 0x2545F4914F6CDD1Dull) >> 32);
}

float runc_random_f32(uint64_t *state) { return (float)(runc_random_u32(state) >> 8) / 16777216.0f; }

void sampler_init(Sampler *s, int vocab, float temperature, float topp, uint64_t seed) {
    s->vocab = vocab;
    s->temperature = temperature;
    s->topp = topp;
    s->rng = seed;
    s->probindex = ms_malloc(sizeof(ProbIndex) * (size_t)vocab);
}

void sampler_free(Sampler *s) {
    free(s->probindex);
    s->probindex = NULL;
}

static int argmax(const float *p, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (p[i] > p[best]) best = i;
    return best;
}

static void softmax(float *x, int n) {
    float max = x[0], sum = 0.0f;
    for (int i = 1; i < n; i++)
        if (x[i] > max) max = x[i];
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    for (int i = 0; i < n; i++) x[i] /= sum;
}

static int sample_mult(const float *p, int n, float coin) {
    float cdf = 0.0f;
    for (int i = 0; i < n; i++) {
        cdf += p[i];
        if (coin < cdf) return i;
    }
    return n - 1; // rounding
}

static int prob_desc(const void *a, const void *b) {
    const ProbIndex *x = a, *y = b;
    if (x->prob != y->prob) return x->prob > y->prob ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

// Nucleus: tokens below (1 - topp) / (n - 1) cannot be in the nucleus and are dropped before the
// sort; the nucleus ends at the first token whose cumulative probability exceeds topp.
static int sample_topp(const float *p, int n, float topp, ProbIndex *pi, float coin) {
    int n0 = 0;
    const float cutoff = (1.0f - topp) / (n - 1);
    for (int i = 0; i < n; i++)
        if (p[i] >= cutoff) pi[n0++] = (ProbIndex){p[i], i};
    qsort(pi, (size_t)n0, sizeof(ProbIndex), prob_desc);
    float cum = 0.0f;
    int last = n0 - 1;
    for (int i = 0; i < n0; i++) {
        cum += pi[i].prob;
        if (cum > topp) {
            last = i;
            break;
        }
    }
    float r = coin * cum, cdf = 0.0f;
    for (int i = 0; i <= last; i++) {
        cdf += pi[i].prob;
        if (r < cdf) return pi[i].index;
    }
    return pi[last].index; // rounding
}

int sampler_sample(Sampler *s, float *logits) {
    if (s->temperature == 0.0f) return argmax(logits, s->vocab);
    for (int i = 0; i < s->vocab; i++) logits[i] /= s->temperature;
    softmax(logits, s->vocab);
    float coin = runc_random_f32(&s->rng);
    if (s->topp <= 0 || s->topp >= 1) return sample_mult(logits, s->vocab, coin);
    return sample_topp(logits, s->vocab, s->topp, s->probindex, coin);
}

// ---- the loop -------------------------------------------------------------------------------------------
int generate(Model *m, const int *prompt, int n_prompt, int steps, Sampler *s, int stop_id,
             GenEmit emit, void *ctx) {
    if (n_prompt < 1) return ms_fail("generation: the prompt has no tokens (not even BOS)");
    if (steps <= 0) return 0;
    KVCache c;
    if (kvcache_create(&c, m, steps, 64)) return -1;
    float *logits = ms_malloc(sizeof(float) * (size_t)m->cfg.vocab);
    int token = prompt[0], emitted = 0, rc = 0;
    for (int pos = 0; pos < steps; pos++) {
        int next;
        if (pos < n_prompt - 1) {
            next = prompt[pos + 1]; // forced; the prompt runs through the model in one go below
        } else {
            rc = pos == n_prompt - 1 ? model_forward_cached(m, &c, prompt, n_prompt, logits, 0)
                                     : model_forward_cached(m, &c, &token, 1, logits, 0);
            if (rc) break;
            next = sampler_sample(s, logits);
        }
        if (next == stop_id) break;
        if (emit) emit(ctx, token, next);
        emitted++;
        token = next;
    }
    free(logits);
    kvcache_free(&c, m);
    return rc ? -1 : emitted;
}

const char *generate_printable(const Tokenizer *t, int prev, int next, size_t *len) {
    const char *p = tokenizer_piece(t, prev, next, len);
    if (*len == 0) return p;
    unsigned char b = (unsigned char)p[0];
    int space = b == ' ' || (b >= '\t' && b <= '\r');
    if (*len == 1 && t->kind == TOK_BYTE) {
        if ((b < 0x20 && !space) || b == 0x7f) *len = 0;
        return p;
    }
    // run.c: printf("%s") stops at a NUL; a lone byte must be printable ASCII or whitespace
    *len = strnlen(p, *len);
    if (*len == 1 && !((b >= 0x20 && b < 0x7f) || space)) *len = 0;
    return p;
}

typedef struct {
    const Tokenizer *t;
    char *buf;
    size_t n, cap;
    FILE *out;
} Printer;

static void print_token(void *ctx, int prev, int next) {
    Printer *pr = ctx;
    size_t len;
    const char *p = generate_printable(pr->t, prev, next, &len);
    if (pr->out) {
        fwrite(p, 1, len, pr->out);
        fflush(pr->out);
        return;
    }
    if (pr->n + len + 2 > pr->cap) {
        pr->cap = 2 * (pr->n + len + 2);
        pr->buf = ms_realloc(pr->buf, pr->cap);
    }
    memcpy(pr->buf + pr->n, p, len);
    pr->n += len;
}

// The prompt's ids (BOS first when the tokenizer has one); NULL on error.
static int *encode_prompt(const Tokenizer *t, const char *prompt, int *n) {
    size_t len = strlen(prompt);
    int *ids = ms_malloc(sizeof(int) * (len + 3));
    *n = (int)tokenizer_encode(t, prompt, len, 1, 0, ids);
    if (*n == 0) {
        free(ids);
        ms_fail("generation: an empty prompt needs a tokenizer with BOS (the byte tokenizer has none)");
        return NULL;
    }
    return ids;
}

char *generate_text(Model *m, const Tokenizer *t, const char *prompt, int steps, Sampler *s) {
    int n;
    int *ids = encode_prompt(t, prompt ? prompt : "", &n);
    if (!ids) return NULL;
    Printer pr = {.t = t, .cap = 256};
    pr.buf = ms_malloc(pr.cap);
    if (t->bos < 0) print_token(&pr, -1, ids[0]); // text, not a BOS: shown
    int rc = generate(m, ids, n, steps, s, t->bos, print_token, &pr);
    free(ids);
    if (rc < 0) {
        free(pr.buf);
        return NULL;
    }
    pr.buf[pr.n++] = '\n';
    pr.buf[pr.n] = 0;
    return pr.buf;
}

// ---- ./mslab generate -----------------------------------------------------------------------------------
int generate_load_model(Model *m, const char *path) {
    // an mslab checkpoint (by its magic), a llama2.c .bin, or an HF Llama directory (safetensors.h)
    ModelConfig cfg;
    if (model_source_read_config(path, &cfg)) return -1;
    if (model_create(m, &cfg, backend_cpu())) return -1;
    if (model_source_load(path, m)) {
        model_destroy(m);
        return -1;
    }
    return 0;
}

int generate_main(const GenerateOpts *o) {
    Model m;
    if (generate_load_model(&m, o->checkpoint)) return -1;
    const char *tspec = o->tokenizer;
    if (!tspec && m.cfg.vocab == 256) tspec = "byte";
    if (!tspec) {
        ms_fail("generate: the model's vocab is %d: give --tokenizer (its tokenizer.bin)", m.cfg.vocab);
        model_destroy(&m);
        return -1;
    }
    Tokenizer t;
    if (tokenizer_open(&t, tspec, m.cfg.vocab)) {
        model_destroy(&m);
        return -1;
    }
    // run.c's argument rules
    float temperature = o->temperature < 0 ? 0.0f : o->temperature;
    float topp = o->topp < 0 || o->topp > 1 ? 0.9f : o->topp;
    int steps = o->steps < 0 ? 0 : o->steps;
    if (steps == 0 || steps > m.cfg.seq_len) steps = m.cfg.seq_len;
    uint64_t seed = o->seed ? o->seed : (unsigned int)time(NULL);
    Sampler s;
    sampler_init(&s, m.cfg.vocab, temperature, topp, seed);
    int n, rc = -1;
    int *ids = encode_prompt(&t, o->prompt ? o->prompt : "", &n);
    if (ids) {
        Printer pr = {.t = &t, .out = stdout};
        if (t.bos < 0) print_token(&pr, -1, ids[0]);
        double t0 = ms_now();
        int emitted = generate(&m, ids, n, steps, &s, t.bos, print_token, &pr);
        if (emitted >= 0) {
            printf("\n");
            fflush(stdout);
            double dt = ms_now() - t0;
            fprintf(stderr, "achieved tok/s: %f (seed %llu)\n", dt > 0 ? emitted / dt : 0.0,
                    (unsigned long long)seed);
            rc = 0;
        }
        free(ids);
    }
    sampler_free(&s);
    tokenizer_close(&t);
    model_destroy(&m);
    return rc;
}
