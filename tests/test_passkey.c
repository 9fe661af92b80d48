// Tests of core/passkey.c: the Landmark prompt against a reference text written here from the spec
// (anchors.md C.1), its length search with real tokenizers, depth, scoring, and one trial.
#include <stdlib.h>
#include <string.h>

#include "../core/checkpoint.h"
#include "../core/common.h"
#include "../core/passkey.h"
#include "test.h"

// Seed 1, 400 bytes with the byte tokenizer, uniform depth: key 29558, 153 characters of filler,
// 80 of them before the key line. Written from Landmark's generate_prompt: five lines joined by
// "\n", filler cut from "The grass ... again." repeated with single spaces.
static const char seed1_400[] =
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about the important information there.\n"
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and ba\n"
    "The pass key is 29558. Remember it. 29558 is the pass key.\n"
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There\n"
    "What is the pass key? The pass key is";

TEST(passkey_prompt_matches_reference) {
    Tokenizer t;
    CHECK(tokenizer_open(&t, "byte", 0) == 0);
    PasskeySpec s = {.target_tokens = 400, .depth = -1, .seed = 1};
    Passkey p;
    CHECK(passkey_make(&p, &t, &s) == 0);
    CHECK(p.key == 29558 && p.n_garbage == 153 && p.n_prefix == 80);
    CHECK(p.len == sizeof seed1_400 - 1 && !memcmp(p.text, seed1_400, p.len));
    CHECK(p.n_tokens == 400); // one token per byte: exact
    passkey_free(&p);

    // the filler runs on past the first copy, the joining space included; an empty prefix leaves
    // an empty line, as "\n".join does
    size_t n;
    char *txt = passkey_text(7, 94, 0, &n);
    CHECK(strstr(txt, "there.\n\nThe pass key is 7. Remember it. 7 is the pass key.\n"
                      "The grass is green. The sky is blue. The sun is yellow. Here we go. There and "
                      "back again. The \nWhat is") != NULL);
    free(txt);
    txt = passkey_text(50000, 0, 0, &n);
    CHECK(strstr(txt, "there.\n\nThe pass key is 50000. Remember it. 50000 is the pass key.\n\nWhat is the "
                      "pass key? The pass key is") != NULL);
    CHECK(n == strlen(txt));
    free(txt);
    // a fixed depth; keys stay in 1..50000 over many seeds
    s.depth = 0.25;
    s.target_tokens = 1000;
    CHECK(passkey_make(&p, &t, &s) == 0);
    CHECK(p.n_prefix == (int)(0.25 * p.n_garbage) && p.n_tokens == 1000);
    passkey_free(&p);
    s.depth = -1;
    int lo = PASSKEY_MAX_KEY, hi = 0;
    for (uint64_t seed = 1; seed <= 200; seed++) {
        s.seed = seed;
        CHECK(passkey_make(&p, &t, &s) == 0);
        lo = p.key < lo ? p.key : lo;
        hi = p.key > hi ? p.key : hi;
        passkey_free(&p);
    }
    CHECK(lo >= 1 && hi <= PASSKEY_MAX_KEY && hi - lo > 40000);
    s.target_tokens = 100;
    CHECK(passkey_make(&p, &t, &s) == -1 && strstr(ms_error(), "below the"));
    s.target_tokens = 1000, s.depth = 1.5;
    CHECK(passkey_make(&p, &t, &s) == -1 && strstr(ms_error(), "depth"));
    tokenizer_close(&t);
}

// With BPE tokenizers the prompt is at most the target and within 3 tokens of it.
TEST(passkey_length_in_tokens) {
    const char *paths[2] = {test_shared_path("data/tokenizers/tok4096_books.bin"),
                            test_shared_path("data/models/stories260K/tok512.bin")};
    if (!paths[0] || !paths[1]) SKIP("../shared/data tokenizers not present");
    int worst = 0;
    for (int k = 0; k < 2; k++) {
        Tokenizer t;
        CHECK(tokenizer_open(&t, paths[k], 0) == 0);
        int targets[2] = {300, 4096};
        for (int i = 0; i < 2; i++)
            for (uint64_t seed = 1; seed <= 3; seed++) {
                PasskeySpec s = {.target_tokens = targets[i], .depth = seed == 3 ? 0.5 : -1, .seed = seed};
                Passkey p;
                CHECK(passkey_make(&p, &t, &s) == 0);
                CHECK(p.n_tokens <= targets[i] && p.n_tokens >= targets[i] - 3);
                CHECK(p.ids[0] == 1 && p.n_tokens == (int)tokenizer_encode(&t, p.text, p.len, 1, 0, p.ids));
                if (targets[i] - p.n_tokens > worst) worst = targets[i] - p.n_tokens;
                passkey_free(&p);
            }
        tokenizer_close(&t);
    }
    fprintf(stderr, "    largest shortfall %d tokens\n", worst);
}

TEST(passkey_first_integer) {
    CHECK(passkey_first_integer(" 12345.", 7) == 12345);
    CHECK(passkey_first_integer("is 007 and 8", 12) == 7);
    CHECK(passkey_first_integer("no digits", 9) == -1);
    CHECK(passkey_first_integer("", 0) == -1);
    CHECK(passkey_first_integer("42", 1) == 4); // only len bytes are read
    CHECK(passkey_first_integer("1234567890123456789012", 22) == 123456789012345678L);
}

// One greedy trial with stories260K (which cannot do the task): it runs, and its score is the
// first integer of what it generated compared with the key.
TEST(passkey_trial_stories260k) {
    const char *mp = test_shared_path("data/models/stories260K/stories260K.bin");
    const char *tp = test_shared_path("data/models/stories260K/tok512.bin");
    if (!mp || !tp) SKIP("../shared/data/models/stories260K not present");
    ModelConfig c;
    Model m;
    Tokenizer t;
    CHECK(llama2c_read_config(mp, &c) == 0);
    CHECK(model_create(&m, &c, backend_cpu()) == 0 && llama2c_load(mp, &m) == 0);
    CHECK(tokenizer_open(&t, tp, c.vocab) == 0);
    PasskeySpec s = {.target_tokens = 300, .depth = 0.5, .seed = 3};
    Passkey p;
    CHECK(passkey_make(&p, &t, &s) == 0);
    PasskeyResult r;
    CHECK(passkey_trial(&m, &t, &p, 10, &r) == 0);
    CHECK(r.generated != NULL);
    if (r.generated) {
        fprintf(stderr, "    key %d, generated \"%s\"\n", p.key, r.generated);
        CHECK(r.answer == passkey_first_integer(r.generated, strlen(r.generated)));
        CHECK(r.correct == (r.answer == p.key));
    }
    passkey_result_free(&r);
    s.target_tokens = 530; // past the model's 512 positions: still runs (RoPE extrapolates)
    passkey_free(&p);
    CHECK(passkey_make(&p, &t, &s) == 0);
    CHECK(passkey_trial(&m, &t, &p, 10, &r) == 0);
    passkey_result_free(&r);
    passkey_free(&p);
    tokenizer_close(&t);
    model_destroy(&m);
}
