// Tests of core/tokenizer.c: the recorded encode vectors of tok512 / tok4096 / tok8192 (llama2.c
// and SentencePiece ids), round trips, the heap merge against llama2.c's O(n^2) loop, streaming
// against one-shot encoding, and errors on broken files.
#include <stdlib.h>
#include <string.h>

#include "../core/common.h"
#include "../core/data.h"
#include "../core/tokenizer.h"
#include "../lua/host.h"
#include "test.h"

static int contains(const char *s, const char *sub) { return s && strstr(s, sub) != NULL; }

// ---- a minimal reader for {"cases": [{"text": "...", "ids": [...]}, ...]} ----------------------------
static void put_utf8(char **o, unsigned cp) {
    unsigned char *p = (unsigned char *)*o;
    if (cp < 0x80) *p++ = (unsigned char)cp;
    else if (cp < 0x800) *p++ = 0xC0 | cp >> 6, *p++ = 0x80 | (cp & 63);
    else if (cp < 0x10000) *p++ = 0xE0 | cp >> 12, *p++ = 0x80 | (cp >> 6 & 63), *p++ = 0x80 | (cp & 63);
    else *p++ = 0xF0 | cp >> 18, *p++ = 0x80 | (cp >> 12 & 63), *p++ = 0x80 | (cp >> 6 & 63), *p++ = 0x80 | (cp & 63);
    *o = (char *)p;
}

// Parses the JSON string at s (at its opening quote) into out; returns the position after it.
static const char *json_string(const char *s, char *out, size_t *len) {
    char *o = out;
    for (s++; *s != '"'; s++) {
        if (*s != '\\') { *o++ = *s; continue; }
        s++;
        switch (*s) {
        case 'n': *o++ = '\n'; break;
        case 't': *o++ = '\t'; break;
        case 'r': *o++ = '\r'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'u': {
            unsigned cp = (unsigned)strtoul((char[5]){s[1], s[2], s[3], s[4], 0}, NULL, 16);
            s += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && s[1] == '\\' && s[2] == 'u') { // surrogate pair
                unsigned lo = (unsigned)strtoul((char[5]){s[3], s[4], s[5], s[6], 0}, NULL, 16);
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                s += 6;
            }
            put_utf8(&o, cp);
            break;
        }
        default: *o++ = *s; // \" \\ \/
        }
    }
    *len = (size_t)(o - out);
    *o = 0;
    return s + 1;
}

typedef struct {
    char text[4096];
    size_t len;
    int ids[2048];
    int n;
} Case;

// Reads the next case after *pos; 0 at the end. ids_key: the name of the id list.
static int next_case(const char **pos, const char *ids_key, Case *c) {
    const char *s = strstr(*pos, "\"text\"");
    if (!s) return 0;
    s = strchr(s + 6, '"');
    s = json_string(s, c->text, &c->len);
    char key[64];
    snprintf(key, sizeof key, "\"%s\"", ids_key);
    s = strstr(s, key);
    s = strchr(s, '[');
    c->n = 0;
    while (*s != ']') {
        s++;
        char *e;
        long v = strtol(s, &e, 10);
        if (e == s) break;
        c->ids[c->n++] = (int)v;
        s = e;
        while (*s == ' ' || *s == '\n') s++;
    }
    *pos = s;
    return 1;
}

// Every case: encode(text, bos=1) gives exactly the recorded ids, and decoding them gives the text.
static void check_vectors(const char *tok_rel, const char *json_rel, int vocab, int want_cases) {
    const char *tp = test_shared_path(tok_rel), *jp = test_shared_path(json_rel);
    if (!tp || !jp) SKIP("../shared/data tokenizers not present");
    Tokenizer t;
    CHECK(tokenizer_open(&t, tp, vocab) == 0);
    CHECK(t.vocab == (vocab > 0 ? vocab : t.vocab) && t.kind == TOK_BPE);
    size_t n;
    char *json = test_read_file(jp, &n);
    if (!json) return;
    const char *pos = strstr(json, "\"cases\"");
    Case *c = malloc(sizeof *c);
    int *got = malloc(sizeof(int) * 8192), cases = 0;
    while (next_case(&pos, "ids", c)) {
        cases++;
        size_t k = tokenizer_encode(&t, c->text, c->len, 1, 0, got);
        int same = k == (size_t)c->n && !memcmp(got, c->ids, k * sizeof(int));
        if (!same) fprintf(stderr, "    %s: \"%s\": %zu ids, expected %d\n", tok_rel, c->text, k, c->n);
        CHECK(same);
        size_t dl;
        char *back = tokenizer_decode(&t, got, k, &dl);
        CHECK(dl == c->len && !memcmp(back, c->text, dl));
        free(back);
    }
    CHECK(cases == want_cases);
    free(got), free(c), free(json);
    tokenizer_close(&t);
}

TEST(tokenizer_tok512_vectors) {
    check_vectors("data/models/stories260K/tok512.bin",
                  "data/models/stories260K/reference/tok512_encode_vectors.json", 512, 18);
}
TEST(tokenizer_tok4096_vectors) {
    check_vectors("data/tokenizers/tok4096_books.bin", "data/tokenizers/tok4096_books_encode_vectors.json", 0, 20);
}
TEST(tokenizer_tok8192_vectors) {
    check_vectors("data/tokenizers/tok8192_books.bin", "data/tokenizers/tok8192_books_encode_vectors.json", 8192, 20);
}

// llama2.c's encode, transcribed as directly as possible (linear rescans of every pair, a linear
// search of the vocabulary): the reference the heap merge must equal.
static size_t naive_encode(const Tokenizer *t, const char *text, size_t n, int *out) {
    size_t k = 0;
    out[k++] = 1;
    if (n) out[k++] = tokenizer_lookup(t, " ", 1);
    for (size_t i = 0; i < n;) {
        size_t len = 1;
        while (i + len < n && len < 4 && ((unsigned char)text[i + len] & 0xC0) == 0x80) len++;
        int id = -1;
        for (int v = 0; v < t->vocab && id < 0; v++)
            if ((size_t)t->piece_len[v] == len && !memcmp(t->piece[v], text + i, len)) id = v;
        if (id >= 0) out[k++] = id;
        else
            for (size_t j = 0; j < len; j++) out[k++] = (unsigned char)text[i + j] + 3;
        i += len;
    }
    char buf[256];
    for (;;) {
        float best = -1e10f;
        int best_id = -1;
        size_t best_i = 0;
        for (size_t i = 0; i + 1 < k; i++) {
            int la = t->piece_len[out[i]], lb = t->piece_len[out[i + 1]];
            memcpy(buf, t->piece[out[i]], (size_t)la);
            memcpy(buf + la, t->piece[out[i + 1]], (size_t)lb);
            int id = tokenizer_lookup(t, buf, (size_t)(la + lb));
            if (id >= 0 && t->score[id] > best) best = t->score[id], best_id = id, best_i = i;
        }
        if (best_id < 0) break;
        out[best_i] = best_id;
        memmove(out + best_i + 1, out + best_i + 2, (k - best_i - 2) * sizeof(int));
        k--;
    }
    return k;
}

// Random strings over an alphabet rich in merges, ties, multi-byte code points and bytes that
// are no piece: the heap merge equals llama2.c's loop on every one.
TEST(tokenizer_heap_merge_equals_llama2c_loop) {
    const char *tp = test_shared_path("data/tokenizers/tok4096_books.bin");
    if (!tp) SKIP("../shared/data/tokenizers not present");
    Tokenizer t;
    CHECK(tokenizer_open(&t, tp, 4096) == 0);
    static const char *const atoms[] = {"the", " ", "  ", "e", "a", "in", "g ", "\n", "\t", "é", "—",
                                        "日", "😀", "7", "0", ".", ",", "aa", "\x01", "<0x41>", "th"};
    int na = sizeof atoms / sizeof atoms[0];
    Rng r;
    rng_seed(&r, 5);
    char text[400];
    int a[500], b[500], bad = 0;
    for (int trial = 0; trial < 300; trial++) {
        size_t n = 0;
        int parts = (int)rng_below(&r, 60);
        for (int i = 0; i < parts; i++) {
            const char *s = atoms[rng_below(&r, (uint64_t)na)];
            memcpy(text + n, s, strlen(s));
            n += strlen(s);
        }
        size_t ka = tokenizer_encode(&t, text, n, 1, 0, a), kb = naive_encode(&t, text, n, b);
        bad += !(ka == kb && !memcmp(a, b, ka * sizeof(int)));
    }
    CHECK(bad == 0);
    tokenizer_close(&t);
}

// A book fed in 1000-byte chunks with 2 KB segments (hundreds of cuts) gives the ids of one
// encode of the whole text; the whole text (~700 KB) round-trips.
TEST(tokenizer_stream_equals_whole) {
    const char *tp = test_shared_path("data/tokenizers/tok4096_books.bin");
    const char *bp = test_shared_path("data/books/eval/pg1342_Pride_and_Prejudice.txt");
    if (!tp || !bp) SKIP("../shared/data tokenizers or books not present");
    Tokenizer t;
    CHECK(tokenizer_open(&t, tp, 0) == 0);
    size_t n;
    char *text = test_read_file(bp, &n);
    if (!text) return;
    int *whole = malloc(sizeof(int) * (n + 3));
    double t0 = ms_now();
    size_t k = tokenizer_encode(&t, text, n, 1, 0, whole);
    double dt = ms_now() - t0;
    fprintf(stderr, "    %zu bytes -> %zu tokens in %.3fs (%.2f bytes/token)\n", n, k, dt, (double)n / k);
    size_t dl;
    char *back = tokenizer_decode(&t, whole, k, &dl);
    CHECK(dl == n && !memcmp(back, text, n));
    free(back);

    size_t saved = tok_segment_bytes;
    tok_segment_bytes = 2048;
    TokStream s = {0};
    tok_stream_begin(&s, &t, 1);
    int *streamed = malloc(sizeof(int) * (n + 3));
    size_t ks = 0;
    for (size_t off = 0; off < n; off += 1000) {
        tok_stream_feed(&s, text + off, n - off < 1000 ? n - off : 1000);
        CHECK(s.n < 4096 + 1000); // the buffer stays near one segment
        if (s.n_ids) memcpy(streamed + ks, s.ids, s.n_ids * sizeof(int)); // ids may be NULL
        ks += s.n_ids;
        s.n_ids = 0;
    }
    tok_stream_finish(&s);
    if (s.n_ids) memcpy(streamed + ks, s.ids, s.n_ids * sizeof(int));
    ks += s.n_ids;
    CHECK(ks == k && !memcmp(streamed, whole, k * sizeof(int)));
    // an empty document is BOS alone, as encode("")
    tok_stream_begin(&s, &t, 1);
    tok_stream_finish(&s);
    CHECK(s.n_ids == 1 && s.ids[0] == 1);
    tok_stream_free(&s);
    tok_segment_bytes = saved;
    free(streamed), free(whole), free(text);
    tokenizer_close(&t);
}

TEST(tokenizer_byte_kind) {
    Tokenizer t;
    CHECK(tokenizer_open(&t, "byte", 0) == 0);
    CHECK(t.vocab == 256 && t.bos == -1 && t.eos == -1 && !strcmp(t.id, "byte"));
    const char *s = "h\xc3\xa9\n";
    int ids[8];
    CHECK(tokenizer_encode(&t, s, 4, 1, 1, ids) == 4);
    CHECK(ids[0] == 'h' && ids[1] == 0xc3 && ids[2] == 0xa9 && ids[3] == '\n');
    size_t n;
    char *back = tokenizer_decode(&t, ids, 4, &n);
    CHECK(n == 4 && !memcmp(back, s, 4));
    free(back);
    const char *p = tokenizer_piece(&t, 1, 0xa9, &n);
    CHECK(n == 1 && (unsigned char)p[0] == 0xa9);
    tokenizer_close(&t);
    CHECK(tokenizer_open(&t, "byte", 512) == -1 && contains(ms_error(), "256"));
}

TEST(tokenizer_decode_pieces) {
    const char *tp = test_shared_path("data/models/stories260K/tok512.bin");
    if (!tp) SKIP("../shared/data/models/stories260K not present");
    Tokenizer t;
    CHECK(tokenizer_open(&t, tp, 512) == 0);
    size_t n;
    const char *p = tokenizer_piece(&t, 1, 403, &n); // " Once" after BOS: the space goes
    CHECK(n == 4 && !memcmp(p, "Once", 4));
    p = tokenizer_piece(&t, 5, 403, &n);
    CHECK(n == 5 && !memcmp(p, " Once", 5));
    p = tokenizer_piece(&t, 5, 13, &n); // <0x0A>
    CHECK(n == 1 && p[0] == '\n');
    p = tokenizer_piece(&t, 5, 3, &n); // <0x00>: a raw zero byte
    CHECK(n == 1 && p[0] == 0);
    p = tokenizer_piece(&t, 5, 2, &n);
    CHECK(n == 6 && !memcmp(p, "\n</s>\n", 6));
    CHECK(tokenizer_lookup(&t, " t", 2) == 259 && tokenizer_lookup(&t, "zzzz", 4) == -1);
    CHECK(t.bos == 1 && t.eos == 2);
    int ids[8];
    CHECK(tokenizer_encode(&t, "a", 1, 1, 1, ids) == 3 && ids[2] == 2);
    tokenizer_close(&t);
}

// Truncations anywhere, a bad length, a missing file and a vocab larger than the file: errors that
// name the file.
TEST(tokenizer_file_errors) {
    const char *tp = test_shared_path("data/models/stories260K/tok512.bin");
    if (!tp) SKIP("../shared/data/models/stories260K not present");
    size_t n;
    char *bytes = test_read_file(tp, &n);
    CHECK(bytes && n == 6227);
    if (!bytes) return;
    char path[512];
    snprintf(path, sizeof path, "%s/tok_cut.bin", test_tmpdir());
    Tokenizer t;
    size_t cuts[] = {0, 2, 4, 9, 100, 3000, 6226};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        FILE *f = fopen(path, "wb");
        fwrite(bytes, 1, cuts[i], f);
        fclose(f);
        CHECK(tokenizer_open(&t, path, 512) == -1);
        CHECK(contains(ms_error(), path) && contains(ms_error(), "truncated"));
        if (cuts[i] >= 4) { // inferring the vocab: a record cut short is still an error
            CHECK(tokenizer_open(&t, path, 0) == -1);
            CHECK(contains(ms_error(), path));
        }
    }
    CHECK(tokenizer_open(&t, tp, 513) == -1 && contains(ms_error(), "512 of the 513 pieces"));
    FILE *f = fopen(path, "wb");
    fwrite(bytes, 1, n, f);
    int32_t bad = -5;
    fwrite(&(float){0}, 4, 1, f);
    fwrite(&bad, 4, 1, f);
    fclose(f);
    CHECK(tokenizer_open(&t, path, 0) == -1 && contains(ms_error(), "piece 512 has length -5"));
    CHECK(tokenizer_open(&t, path, 512) == 0 && t.vocab == 512); // what follows the vocab is ignored
    tokenizer_close(&t);
    CHECK(tokenizer_open(&t, "/nonexistent/tok.bin", 0) == -1 && contains(ms_error(), "/nonexistent/tok.bin"));
    free(bytes);
}

// A corpus with tokenizer = "<path>.bin": each document is BOS + its llama2.c ids (the stream cut
// in 4 KB read chunks changes nothing), vocab from the file; the cache is keyed by the file's hash,
// so the byte tokenizer, two tokenizer files and a second open each find their own entry.
TEST(tokenizer_corpus_bpe) {
    const char *tp = test_shared_path("data/models/stories260K/tok512.bin");
    const char *tp2 = test_shared_path("data/tokenizers/tok4096_books.bin");
    if (!tp || !tp2) SKIP("../shared/data tokenizers not present");
    const char *dir = test_tmpdir();
    char d1[512], d2[512], cache[512];
    snprintf(d1, sizeof d1, "%s/a.txt", dir);
    snprintf(d2, sizeof d2, "%s/b.txt", dir);
    snprintf(cache, sizeof cache, "%s/cache", dir);
    const char *texts[2] = {"Once upon a time, there was a little girl named Lily. ",
                            "Tom's mom said: 'Don't touch it.' naïve café\n"};
    const char *docs[2] = {d1, d2};
    Tokenizer t;
    CHECK(tokenizer_open(&t, tp, 512) == 0);
    int want[2][256];
    size_t nw[2];
    for (int i = 0; i < 2; i++) {
        FILE *f = fopen(docs[i], "wb");
        fputs(texts[i], f);
        fclose(f);
        nw[i] = tokenizer_encode(&t, texts[i], strlen(texts[i]), 1, 0, want[i]);
    }
    size_t saved = corpus_chunk_bytes;
    corpus_chunk_bytes = 7;
    CorpusSpec spec = {.paths = docs, .n_paths = 2, .tokenizer = tp, .eval_frac = 0.4, .cache_dir = cache};
    Corpus c, c2, cb, c3;
    CHECK(corpus_open(&c, &spec) == 0);
    CHECK(c.vocab == 512 && c.n_docs == 2 && c.n_train + c.n_eval == nw[0] + nw[1]);
    // the eval document is whole: find which one it is and compare both
    int ev = c.n_eval == nw[0] ? 0 : 1;
    const uint16_t *tr = c.train, *e = c.eval;
    for (size_t k = 0; k < nw[ev]; k++) CHECK(e[k] == want[ev][k]);
    for (size_t k = 0; k < nw[1 - ev]; k++) CHECK(tr[k] == want[1 - ev][k]);
    CHECK(corpus_open(&c2, &spec) == 0); // from the cache
    CHECK(c2.hash == c.hash && c2.n_train == c.n_train && !memcmp(c2.train, c.train, 2 * c.n_train));
    spec.tokenizer = "byte";
    CHECK(corpus_open(&cb, &spec) == 0 && cb.vocab == 256 && cb.hash != c.hash);
    CHECK(cb.n_train + cb.n_eval == strlen(texts[0]) + strlen(texts[1]));
    spec.tokenizer = tp2;
    CHECK(corpus_open(&c3, &spec) == 0 && c3.vocab == 4096 && c3.hash != c.hash);
    corpus_chunk_bytes = saved;
    spec.tokenizer = "tok512"; // neither "byte" nor a .bin path
    Corpus bad;
    CHECK(corpus_open(&bad, &spec) == -1 && contains(ms_error(), "unknown tokenizer 'tok512'"));
    corpus_close(&c), corpus_close(&c2), corpus_close(&cb), corpus_close(&c3);
    tokenizer_close(&t);
}

// mslab.corpus{ tokenizer = "<path>.bin" } from Lua: the vocab comes from the file; anything but
// "byte" or a .bin path is an error naming the line and the key.
TEST(tokenizer_lua_corpus_key) {
    const char *tp = test_shared_path("data/models/stories260K/tok512.bin");
    if (!tp) SKIP("../shared/data/models/stories260K not present");
    const char *dir = test_tmpdir();
    char doc[512], script[512], db[512], text[2048];
    snprintf(doc, sizeof doc, "%s/d.txt", dir);
    snprintf(script, sizeof script, "%s/c.lua", dir);
    snprintf(db, sizeof db, "%s/r.db", dir);
    FILE *f = fopen(doc, "w");
    fputs("Once upon a time, there was a little girl named Lily.\n", f);
    fclose(f);
    snprintf(text, sizeof text,
             "local ms = require \"mslab\"\n"
             "local c = ms.corpus { path = \"%s\", tokenizer = \"%s\", cache = \"\" }\n"
             "assert(c.vocab == 512 and c.train_tokens + c.eval_tokens == 17, c.vocab)\n", doc, tp);
    f = fopen(script, "w");
    fputs(text, f);
    fclose(f);
    CHECK(lua_host_run(script, db, 0, NULL) == 0);
    snprintf(text, sizeof text,
             "local ms = require \"mslab\"\n"
             "local c = ms.corpus { path = \"%s\",\n"
             "  tokenizer = \"bpe\" }\n", doc);
    f = fopen(script, "w");
    fputs(text, f);
    fclose(f);
    CHECK(lua_host_run(script, db, 0, NULL) != 0);
    CHECK(contains(ms_error(), "c.lua:3: corpus.tokenizer (\"bpe\") must be \"byte\" or the path"));
}

// A SentencePiece .model (protobuf) opens as the same tokenizer as the .bin exported from it: the
// same records (so the same id string and cache keys) and the recorded ids; a truncated .model is
// an error naming the file at every cut.
TEST(tokenizer_spm_model_equals_bin) {
    check_vectors("data/tokenizers/tok4096_books.model", "data/tokenizers/tok4096_books_encode_vectors.json", 0, 20);
    const char *mp = test_shared_path("data/tokenizers/tok4096_books.model");
    const char *bp = test_shared_path("data/tokenizers/tok4096_books.bin");
    if (!mp || !bp) SKIP("../shared/data tokenizers not present");
    Tokenizer a, b;
    CHECK(tokenizer_open(&a, mp, 0) == 0);
    CHECK(tokenizer_open(&b, bp, 0) == 0);
    CHECK(a.vocab == 4096 && b.vocab == 4096);
    CHECK_STR(a.id, b.id);
    int same = 1;
    for (int i = 0; i < a.vocab && i < b.vocab; i++)
        same &= a.piece_len[i] == b.piece_len[i] && !memcmp(a.piece[i], b.piece[i], a.piece_len[i]) &&
                a.score[i] == b.score[i];
    CHECK(same);
    tokenizer_close(&a), tokenizer_close(&b);
    size_t n;
    char *whole = test_read_file(mp, &n);
    char path[512];
    snprintf(path, sizeof path, "%s/cut.model", test_tmpdir());
    int fails = 0;
    for (size_t cut = 0; cut < n; cut += 509) {
        FILE *f = fopen(path, "wb");
        fwrite(whole, 1, cut, f);
        fclose(f);
        Tokenizer t;
        int rc = tokenizer_open(&t, path, 0);
        if (rc != -1 || !strstr(ms_error(), "cut.model")) {
            if (fails++ < 3) fprintf(stderr, "  cut %zu: rc %d \"%s\"\n", cut, rc, ms_error());
        }
        if (rc == 0) tokenizer_close(&t);
    }
    CHECK(fails == 0);
    free(whole);
}

// mslab.corpus{ tokenizer = "<path>.model" } works like the .bin exported from it.
TEST(tokenizer_lua_corpus_spm_model) {
    const char *mp = test_shared_path("data/tokenizers/tok4096_books.model");
    const char *bp = test_shared_path("data/tokenizers/tok4096_books.bin");
    if (!mp || !bp) SKIP("../shared/data tokenizers not present");
    const char *dir = test_tmpdir();
    char doc[512], script[512], db[512], text[4096];
    snprintf(doc, sizeof doc, "%s/d.txt", dir);
    snprintf(script, sizeof script, "%s/m.lua", dir);
    snprintf(db, sizeof db, "%s/r.db", dir);
    FILE *f = fopen(doc, "w");
    for (int i = 0; i < 20; i++) fputs("It was the best of times, it was the worst of times.\n", f);
    fclose(f);
    snprintf(text, sizeof text,
             "local ms = require \"mslab\"\n"
             "local a = ms.corpus { path = \"%s\", tokenizer = \"%s\", cache = \"\" }\n"
             "local b = ms.corpus { path = \"%s\", tokenizer = \"%s\", cache = \"\" }\n"
             "assert(a.vocab == 4096 and b.vocab == 4096)\n"
             "assert(a.train_tokens == b.train_tokens and a.eval_tokens == b.eval_tokens)\n",
             doc, mp, doc, bp);
    f = fopen(script, "w");
    fputs(text, f);
    fclose(f);
    CHECK(lua_host_run(script, db, 0, NULL) == 0);
}
