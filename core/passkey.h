// passkey.h: passkey retrieval, the Landmark Attention prompt byte for byte (generate_prompt in
// epfml/landmark-attention llama/run_test.py, copied by LongLoRA, YaRN and Quest; anchors.md C.1).
// The prompt is five lines joined with "\n":
//   the task description | garbage prefix | "The pass key is K. Remember it. K is the pass key."
//   | garbage suffix | "What is the pass key? The pass key is"
// where prefix and suffix are both cut from the start of PASSKEY_GARBAGE repeated with " "
// between copies, n_prefix and n_garbage - n_prefix characters long (either may be empty).
// Scoring (Landmark / YaRN): greedy generation of a few tokens; the first integer in them must be K.
#ifndef MSLAB_PASSKEY_H
#define MSLAB_PASSKEY_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "tokenizer.h"

#define PASSKEY_TASK                                                                          \
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize " \
    "them. I will quiz you about the important information there."
#define PASSKEY_GARBAGE \
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
#define PASSKEY_QUESTION "What is the pass key? The pass key is"
#define PASSKEY_MAX_KEY 50000

// The prompt for these values (no randomness); malloc'd, NUL-terminated, *len its bytes.
char *passkey_text(int key, int n_garbage, int n_prefix, size_t *len);

typedef struct {
    int target_tokens; // prompt length in tokens, BOS included (bytes with the byte tokenizer)
    double depth;      // < 0: uniform (n_prefix uniform in 0 .. n_garbage, as Landmark); else the
                       // fraction of the filler before the key line, n_prefix = (int)(depth * n_garbage)
    uint64_t seed;     // draws the key, then the uniform depth
} PasskeySpec;

typedef struct {
    int key;           // uniform in 1 .. 50000
    int n_garbage;     // characters of filler, prefix and suffix together
    int n_prefix;      // characters of filler before the key line
    double depth;      // n_prefix / n_garbage (0 without filler)
    char *text;        // the prompt
    size_t len;
    int *ids;          // its tokens, BOS first when the tokenizer has one
    int n_tokens;
} Passkey;

// Builds one trial: n_garbage is the largest filler length whose prompt has at most
// target_tokens tokens (a binary search on the token count). Adding one character of filler adds
// at most a couple of tokens, so n_tokens is target_tokens or a few below (exactly it with the byte
// tokenizer). A target shorter than the prompt without filler is an error.
int passkey_make(Passkey *p, const Tokenizer *t, const PasskeySpec *s);
void passkey_free(Passkey *p);

// The first integer in text[len] (a run of ASCII digits, at most 18 of them read), or -1.
long passkey_first_integer(const char *text, size_t len);

typedef struct {
    long answer;       // the first integer of the generation, -1 if none
    int correct;       // answer == key
    char *generated;   // the new tokens' text (malloc'd)
} PasskeyResult;

// Greedy generation of new_tokens tokens after the prompt (10 as Landmark and YaRN; it stops early
// if the model emits BOS), scored. 0, or -1 (ms_error) when the model cannot run the prompt.
int passkey_trial(Model *m, const Tokenizer *t, const Passkey *p, int new_tokens, PasskeyResult *r);
void passkey_result_free(PasskeyResult *r);

#endif
