// generate.h: autoregressive generation with a KV cache, reproducing llama2.c's run.c exactly:
// its sampler (xorshift RNG, softmax, top-p with the (1-p)/(n-1) prefilter, multinomial), its loop
// (-n counts positions from the first prompt token, BOS included; the prompt is forced; the model
// emitting BOS ends the text) and its printing (a piece after BOS loses its leading space, "<0xHH>"
// pieces are raw bytes, a lone byte that is neither printable nor whitespace is skipped, and a
// final "\n").
#ifndef MSLAB_GENERATE_H
#define MSLAB_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "tokenizer.h"

// ---- run.c's sampler ----
typedef struct {
    float prob;
    int index;
} ProbIndex;

typedef struct {
    int vocab;
    float temperature; // 0: greedy (argmax, the first of equal maxima)
    float topp;        // in (0, 1): nucleus sampling; else multinomial over the whole vocab
    uint64_t rng;      // xorshift state, seeded with the seed itself (which must not be 0)
    ProbIndex *probindex;
} Sampler;

void sampler_init(Sampler *s, int vocab, float temperature, float topp, uint64_t seed);
void sampler_free(Sampler *s);
// The next token from logits[vocab], which it overwrites (divided by the temperature, softmaxed)
// exactly as run.c does.
int sampler_sample(Sampler *s, float *logits);
uint32_t runc_random_u32(uint64_t *state);
float runc_random_f32(uint64_t *state);

// ---- the loop ----
// Called for each token the loop outputs (prompt tokens after the first, then sampled ones).
typedef void (*GenEmit)(void *ctx, int prev, int next);

// run.c's generate(): token = prompt[0]; for pos = 0 .. steps-1: next = prompt[pos+1] while in the
// prompt, else sampled from the logits after token; stop if next == stop_id (-1: never); emit.
// Returns the number of tokens emitted, or -1 (ms_error) when the model cannot run them.
int generate(Model *m, const int *prompt, int n_prompt, int steps, Sampler *s, int stop_id,
             GenEmit emit, void *ctx);

// The bytes run.c prints for `next` after `prev` (its decode + safe_printf); for the byte
// tokenizer every byte but non-whitespace control bytes (so UTF-8 text comes through).
const char *generate_printable(const Tokenizer *t, int prev, int next, size_t *len);

// Generates from prompt text (encoded with BOS when the tokenizer has one) and returns what run.c
// prints, final "\n" included (malloc'd, NUL-terminated). NULL on error (ms_error). Without BOS
// (the byte tokenizer) the first prompt token is text, and is printed too.
char *generate_text(Model *m, const Tokenizer *t, const char *prompt, int steps, Sampler *s);

// ---- ./mslab generate ----
typedef struct {
    const char *checkpoint; // an mslab checkpoint or a llama2.c .bin (told apart by the magic)
    const char *tokenizer;  // a tokenizer.bin or "byte"; NULL: "byte" for a vocab-256 model
    const char *prompt;     // NULL: ""
    int steps;              // run.c -n: 0 or more than the model's seq_len: seq_len
    float temperature, topp;
    uint64_t seed;          // 0: the time, as run.c
} GenerateOpts;

// Creates m (CPU backend) from an mslab checkpoint or a llama2.c .bin, told apart by the magic.
int generate_load_model(Model *m, const char *path);
// Loads, generates and prints to stdout as run.c does; the speed goes to stderr. 0 or -1.
int generate_main(const GenerateOpts *o);

#endif
