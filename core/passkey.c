// passkey.c: the Landmark passkey prompt, its length search and scoring (see passkey.h).
#include "passkey.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "generate.h"

// n characters of " ".join([GARBAGE] * many): GARBAGE then a space, over and over.
static char *put_garbage(char *o, int n) {
    static const char g[] = PASSKEY_GARBAGE;
    const int period = (int)sizeof g; // the text and the joining space
    for (int i = 0; i < n; i++) *o++ = i % period == period - 1 ? ' ' : g[i % period];
    return o;
}

char *passkey_text(int key, int n_garbage, int n_prefix, size_t *len) {
    char info[128];
    int ni = snprintf(info, sizeof info, "The pass key is %d. Remember it. %d is the pass key.", key, key);
    size_t cap = sizeof PASSKEY_TASK + sizeof PASSKEY_QUESTION + (size_t)ni + (size_t)n_garbage + 8;
    char *s = ms_malloc(cap), *o = s;
    o += sprintf(o, "%s\n", PASSKEY_TASK);
    o = put_garbage(o, n_prefix);
    o += sprintf(o, "\n%s\n", info);
    o = put_garbage(o, n_garbage - n_prefix);
    o += sprintf(o, "\n%s", PASSKEY_QUESTION);
    *len = (size_t)(o - s);
    return s;
}

static int prefix_of(const PasskeySpec *s, double u, int n_garbage) {
    int k = s->depth < 0 ? (int)(u * (n_garbage + 1)) : (int)(s->depth * n_garbage);
    return k < 0 ? 0 : k > n_garbage ? n_garbage : k;
}

// Fills p's text and ids for n_garbage; returns the token count.
static int build(Passkey *p, const Tokenizer *t, const PasskeySpec *s, double u, int n_garbage) {
    free(p->text);
    p->n_garbage = n_garbage;
    p->n_prefix = prefix_of(s, u, n_garbage);
    p->text = passkey_text(p->key, n_garbage, p->n_prefix, &p->len);
    p->ids = ms_realloc(p->ids, sizeof(int) * (p->len + 3));
    p->n_tokens = (int)tokenizer_encode(t, p->text, p->len, 1, 0, p->ids);
    return p->n_tokens;
}

int passkey_make(Passkey *p, const Tokenizer *t, const PasskeySpec *s) {
    memset(p, 0, sizeof *p);
    if (s->depth > 1) return ms_fail("passkey: depth (%g) must be in [0, 1], or < 0 for uniform", s->depth);
    Rng r;
    rng_seed(&r, s->seed);
    p->key = 1 + (int)rng_below(&r, PASSKEY_MAX_KEY);
    double u = rng_uniform(&r);
    int target = s->target_tokens;
    int base = build(p, t, s, u, 0);
    if (base > target) {
        passkey_free(p);
        return ms_fail("passkey: target length %d tokens is below the %d tokens of the prompt without "
                       "filler", target, base);
    }
    // lo fits, hi does not: double hi until it overflows, then bisect
    int lo = 0, hi = 64;
    while (build(p, t, s, u, hi) <= target) {
        lo = hi;
        if (hi > (1 << 29)) break;
        hi *= 2;
    }
    while (hi - lo > 1) {
        int mid = lo + (hi - lo) / 2;
        if (build(p, t, s, u, mid) <= target) lo = mid;
        else hi = mid;
    }
    build(p, t, s, u, lo);
    p->depth = lo ? (double)p->n_prefix / lo : 0.0;
    return 0;
}

void passkey_free(Passkey *p) {
    free(p->text);
    free(p->ids);
    memset(p, 0, sizeof *p);
}

long passkey_first_integer(const char *text, size_t len) {
    size_t i = 0;
    while (i < len && !(text[i] >= '0' && text[i] <= '9')) i++;
    if (i == len) return -1;
    long v = 0;
    for (int k = 0; i < len && k < 18 && text[i] >= '0' && text[i] <= '9'; i++, k++) v = v * 10 + (text[i] - '0');
    return v;
}

typedef struct {
    int skip;   // prompt tokens the loop re-emits before the new ones
    int *ids, n;
} NewTokens;

static void keep_new(void *ctx, int prev, int next) {
    NewTokens *nt = ctx;
    (void)prev;
    if (nt->skip > 0) nt->skip--;
    else nt->ids[nt->n++] = next;
}

int passkey_trial(Model *m, const Tokenizer *t, const Passkey *p, int new_tokens, PasskeyResult *r) {
    memset(r, 0, sizeof *r);
    r->answer = -1;
    Sampler s;
    sampler_init(&s, m->cfg.vocab, 0.0f, 0.0f, 1); // greedy
    NewTokens nt = {.skip = p->n_tokens - 1, .ids = ms_malloc(sizeof(int) * (size_t)(new_tokens + 1))};
    int rc = generate(m, p->ids, p->n_tokens, p->n_tokens - 1 + new_tokens, &s, t->bos, keep_new, &nt);
    sampler_free(&s);
    if (rc < 0) {
        free(nt.ids);
        return -1;
    }
    size_t len;
    r->generated = tokenizer_decode(t, nt.ids, (size_t)nt.n, &len);
    free(nt.ids);
    r->answer = passkey_first_integer(r->generated, len);
    r->correct = r->answer == p->key;
    return 0;
}

void passkey_result_free(PasskeyResult *r) {
    free(r->generated);
    r->generated = NULL;
}
