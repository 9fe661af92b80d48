// Tests of core/data.c: byte tokens, streaming UTF-8 validation across chunk boundaries, error
// messages, the document split, the token cache and training batches.
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/data.h"
#include "test.h"

// ---- helpers --------------------------------------------------------------------------------------


static void write_str(const char *path, const char *s) { test_write_bytes(path, s, strlen(s)); }

static int open1(Corpus *c, const char *path, double frac, const char *cache, uint64_t seed) {
    const char *paths[1] = {path};
    CorpusSpec spec = {.paths = paths, .n_paths = 1, .tokenizer = "byte", .eval_frac = frac,
                       .cache_dir = cache, .split_seed = seed};
    return corpus_open(c, &spec);
}

static int contains(const char *hay, const char *needle) { return hay && strstr(hay, needle) != NULL; }

// the error is "...invalid UTF-8 at byte offset N" followed by the end or " ("
static int has_offset(const char *msg, unsigned long long off) {
    char want[64];
    snprintf(want, sizeof want, "at byte offset %llu", off);
    const char *p = strstr(msg, want);
    return p && (p[strlen(want)] == 0 || p[strlen(want)] == ' ');
}

static int count_files(const char *dir, const char *suffix) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t a = strlen(e->d_name), b = strlen(suffix);
        if (a >= b && strcmp(e->d_name + a - b, suffix) == 0) n++;
    }
    closedir(d);
    return n;
}

// ---- tests ----------------------------------------------------------------------------------------
TEST(data_byte_encode) {
    const char *s = "H\xc3\xa9!\n"; // "Hé!\n"
    int out[8] = {0};
    CHECK(byte_encode(s, 5, out) == 5);
    const int want[5] = {72, 195, 169, 33, 10};
    for (int i = 0; i < 5; i++) CHECK(out[i] == want[i]);
    CHECK(byte_encode(s, 0, out) == 0);
}

TEST(data_byte_tokens_of_file) {
    const char *dir = test_tmpdir();
    const char *text = "Hello, w\xc3\xb6rld! \xe2\x9c\x93 \xf0\x9f\x98\x80\n"; // ö ✓ 😀
    size_t n = strlen(text);
    const char *path = test_path_join(dir, "one.txt");
    write_str(path, text);
    Corpus c;
    CHECK(open1(&c, path, 0.25, "", 1) == 0);
    CHECK(c.vocab == 256);
    CHECK(c.n_docs == 1 && c.n_eval_docs == 0);
    CHECK(c.bytes == n);
    CHECK(c.n_train + c.n_eval == n);
    CHECK(c.n_eval == (size_t)llround(0.25 * n));
    for (size_t i = 0; i < c.n_train; i++) CHECK(c.train[i] == (unsigned char)text[i]);
    for (size_t i = 0; i < c.n_eval; i++) CHECK(c.eval[i] == (unsigned char)text[c.n_train + i]);
    CHECK(c.train[8] == 0xc3 && c.train[9] == 0xb6);
    corpus_close(&c);
    CHECK(c.train == NULL && c.n_train == 0);
}

TEST(data_utf8_across_chunk_boundaries) {
    const char *dir = test_tmpdir();
    size_t saved = corpus_chunk_bytes;
    CHECK(saved == 1u << 20);
    // valid: 2-, 3- and 4-byte sequences at every offset relative to every small chunk size
    const char *good = "a\xc3\xa9\xe2\x82\xac\xf0\x90\x8d\x88z\xed\x9f\xbf\xee\x80\x80\xf4\x8f\xbf\xbf.";
    const char *gp = test_path_join(dir, "good.txt");
    write_str(gp, good);
    for (size_t chunk = 1; chunk <= 9; chunk++) {
        corpus_chunk_bytes = chunk;
        Corpus c;
        int rc = open1(&c, gp, 0.5, "", 0);
        CHECK(rc == 0);
        if (rc) { fprintf(stderr, "  chunk %zu: %s\n", chunk, ms_error()); continue; }
        CHECK(c.n_train + c.n_eval == strlen(good));
        corpus_close(&c);
    }
    static const struct { const char *s; unsigned long long off; } bad[] = {
        {"ab\xc3\x41", 2},                    // missing continuation
        {"abc\xe2\x82\x41xyz", 3},            // 3-byte sequence broken at its last byte
        {"a\xf0\x9f\x98x", 1},                // 4-byte sequence broken
        {"\x80" "abc", 0},                    // stray continuation byte
        {"xy\xc0\x80", 2},                    // overlong (C0)
        {"xy\xe0\x80\x80", 2},                // overlong 3-byte
        {"xyz\xed\xa0\x80", 3},               // UTF-16 surrogate
        {"q\xf4\x90\x80\x80", 1},             // above U+10FFFF
        {"qq\xf5\x80\x80\x80", 2},            // invalid lead byte
        {"\xc3\xa9\xff", 2},                  // 0xFF after a valid character
        {"\xe2\x82\xac\xe2\x82\xac\x80", 6},  // stray continuation after valid ones
        {"hello\xe2\x82", 5},                 // cut off at the end of the file
    };
    const char *bp = test_path_join(dir, "bad.txt");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_str(bp, bad[i].s);
        for (size_t chunk = 1; chunk <= 8; chunk++) {
            corpus_chunk_bytes = chunk;
            Corpus c;
            int rc = open1(&c, bp, 0.5, "", 0);
            CHECK(rc == -1);
            CHECK(contains(ms_error(), bp));
            CHECK(contains(ms_error(), "invalid UTF-8"));
            if (!has_offset(ms_error(), bad[i].off)) {
                fprintf(stderr, "  case %zu chunk %zu: \"%s\", expected offset %llu\n", i, chunk,
                        ms_error(), bad[i].off);
                test_failed_checks++;
            }
            if (rc == 0) corpus_close(&c);
        }
    }
    corpus_chunk_bytes = saved;

    // the real chunk size: a sequence across the 1 MiB boundary
    size_t n = (1u << 20) + 16;
    char *big = malloc(n);
    memset(big, 'a', n);
    memcpy(big + (1u << 20) - 1, "\xe2\x82\x41", 3); // broken, starts at the last byte of chunk 0
    const char *lp = test_path_join(dir, "large.txt");
    test_write_bytes(lp, big, n);
    Corpus c;
    CHECK(open1(&c, lp, 0.5, "", 0) == -1);
    CHECK(contains(ms_error(), lp) && has_offset(ms_error(), (1u << 20) - 1));
    memcpy(big + (1u << 20) - 2, "\xe2\x82\xac", 3); // valid euro sign across the boundary
    big[(1u << 20) + 1] = 'a';
    test_write_bytes(lp, big, n);
    CHECK(open1(&c, lp, 1e-6, "", 0) == 0);
    CHECK(c.n_train == n - 1 && c.n_eval == 1);
    CHECK(c.train[(1u << 20) - 2] == 0xe2 && c.train[(1u << 20)] == 0xac);
    corpus_close(&c);
    free(big);
}

TEST(data_errors_name_the_file) {
    const char *dir = test_tmpdir();
    Corpus c;
    const char *empty = test_path_join(dir, "empty.txt");
    test_write_bytes(empty, "", 0);
    CHECK(open1(&c, empty, 0.1, "", 0) == -1);
    CHECK(contains(ms_error(), empty) && contains(ms_error(), "empty"));

    const char *missing = test_path_join(dir, "nope.txt");
    CHECK(open1(&c, missing, 0.1, "", 0) == -1);
    CHECK(contains(ms_error(), missing) && contains(ms_error(), "No such file"));

    // a directory without .txt files
    const char *d1 = test_path_join(dir, "notext");
    mkdir(d1, 0755);
    write_str(test_path_join(d1, "readme.md"), "hello");
    CHECK(open1(&c, d1, 0.1, "", 0) == -1);
    CHECK(contains(ms_error(), d1) && contains(ms_error(), "no .txt"));

    // an empty document deep inside a directory is named by its full path
    const char *d2 = test_path_join(dir, "tree");
    mkdir(d2, 0755);
    mkdir(test_path_join(d2, "sub"), 0755);
    write_str(test_path_join(d2, "a.txt"), "fine");
    test_write_bytes(test_path_join(d2, "sub/b.txt"), "", 0);
    CHECK(open1(&c, d2, 0.1, "", 0) == -1);
    CHECK(contains(ms_error(), test_path_join(d2, "sub/b.txt")) && contains(ms_error(), "empty"));

    const char *ok = test_path_join(dir, "ok.txt");
    write_str(ok, "some text");
    const char *paths[1] = {ok};
    CorpusSpec spec = {.paths = paths, .n_paths = 1, .tokenizer = "bpe42", .eval_frac = 0.1, .cache_dir = ""};
    CHECK(corpus_open(&c, &spec) == -1);
    CHECK(contains(ms_error(), "bpe42") && contains(ms_error(), "tokenizer"));
    spec.tokenizer = "byte";
    spec.eval_frac = 0;
    CHECK(corpus_open(&c, &spec) == -1 && contains(ms_error(), "eval_frac"));
    spec.eval_frac = 1;
    CHECK(corpus_open(&c, &spec) == -1 && contains(ms_error(), "eval_frac"));
    spec.eval_frac = 0.5;
    spec.tokenizer = NULL; // default: byte
    CHECK(corpus_open(&c, &spec) == 0 && c.vocab == 256);
    corpus_close(&c);
}

// Documents of the split tests: doc i is the byte 'A'+i repeated len(i) times, so every token says
// which document it came from.
#define NDOC 12
static size_t doc_len(int i) { return 40 + (size_t)((i * 37) % 11) * 30; }

// position of doc i in path order (make_docs with permute names doc i "p<rank>")
static int doc_rank(int i, int permute) { return permute ? (i * 5 + 3) % NDOC : i; }

// Checks one side: whole documents, in path order. Marks seen[]; returns doc count.
static int parse_side(const uint16_t *t, size_t n, int *seen, size_t *bytes, int permute) {
    int docs = 0, last = -1;
    *bytes = 0;
    for (size_t i = 0; i < n;) {
        int id = t[i] - 'A';
        if (id < 0 || id >= NDOC) { test_failed_checks++; fprintf(stderr, "  token %d\n", t[i]); return -1; }
        size_t j = i;
        while (j < n && t[j] == t[i]) j++;
        if (j - i != doc_len(id)) { test_failed_checks++; fprintf(stderr, "  doc %d split (%zu of %zu)\n", id, j - i, doc_len(id)); }
        if (doc_rank(id, permute) <= last) { test_failed_checks++; fprintf(stderr, "  doc %d out of path order\n", id); }
        seen[id]++;
        last = doc_rank(id, permute);
        docs++;
        *bytes += j - i;
        i = j;
    }
    return docs;
}

static void check_split(const Corpus *c, double frac, unsigned *eval_mask, int permute) {
    int seen[NDOC] = {0};
    size_t tb, eb, total = 0, maxlen = 0;
    int nt = parse_side(c->train, c->n_train, seen, &tb, permute);
    int ne = parse_side(c->eval, c->n_eval, seen, &eb, permute);
    for (int i = 0; i < NDOC; i++) {
        CHECK(seen[i] == 1); // disjoint and covering
        total += doc_len(i);
        if (doc_len(i) > maxlen) maxlen = doc_len(i);
    }
    CHECK(c->n_docs == NDOC);
    CHECK(nt + ne == NDOC);
    CHECK(ne == c->n_eval_docs);
    CHECK(ne >= 1 && ne <= NDOC - 1);
    CHECK(c->bytes == total);
    CHECK(fabs((double)eb - frac * total) <= (double)maxlen);
    *eval_mask = 0;
    for (size_t i = 0; i < c->n_eval; i++) *eval_mask |= 1u << (c->eval[i] - 'A');
}

static void make_docs(const char *root, int permute) {
    mkdir(root, 0755);
    for (int i = 0; i < NDOC; i++) {
        int name = doc_rank(i, permute); // another path order, same contents
        char rel[64], sub[64];
        if (name % 2) { // odd names inside a subdirectory: "p01/x.txt" sorts between p00.txt and p02.txt
            snprintf(sub, sizeof sub, "p%02d", name);
            mkdir(test_path_join(root, sub), 0755);
            snprintf(rel, sizeof rel, "p%02d/x.txt", name);
        } else {
            snprintf(rel, sizeof rel, "p%02d.txt", name);
        }
        char *buf = malloc(doc_len(i));
        memset(buf, 'A' + i, doc_len(i));
        test_write_bytes(test_path_join(root, rel), buf, doc_len(i));
        free(buf);
    }
    write_str(test_path_join(root, "notes.md"), "not a document");
    write_str(test_path_join(root, ".hidden.txt"), "hidden, skipped");
}

TEST(data_split_by_document) {
    const char *dir = test_tmpdir();
    const char *root = test_path_join(dir, "corpus");
    make_docs(root, 0);
    // a link to one of the documents, and the directory plus one of its files again: counted once
    CHECK(symlink("p00.txt", test_path_join(root, "zz-link.txt")) == 0);
    const char *paths[2] = {root, test_path_join(root, "p04.txt")};
    CorpusSpec spec = {.paths = paths, .n_paths = 2, .tokenizer = "byte", .eval_frac = 0.2,
                       .cache_dir = "", .split_seed = 7};
    Corpus a, b;
    CHECK(corpus_open(&a, &spec) == 0);
    unsigned ma, mb;
    check_split(&a, 0.2, &ma, 0);
    // deterministic: the same spec gives the same arrays and hash
    CHECK(corpus_open(&b, &spec) == 0);
    CHECK(a.n_train == b.n_train && a.n_eval == b.n_eval && a.hash == b.hash);
    CHECK(memcmp(a.train, b.train, a.n_train * 2) == 0 && memcmp(a.eval, b.eval, a.n_eval * 2) == 0);
    corpus_close(&b);
    // the choice depends on the contents, not on the file names
    const char *root2 = test_path_join(dir, "renamed");
    make_docs(root2, 1);
    spec.paths = (const char *const[]){root2};
    spec.n_paths = 1;
    CHECK(corpus_open(&b, &spec) == 0);
    check_split(&b, 0.2, &mb, 1);
    CHECK(ma == mb);
    CHECK(b.hash != a.hash); // same documents in another order is another corpus
    corpus_close(&b);
    // other seeds: valid splits, other hashes, and not all the same documents
    spec.paths = (const char *const[]){root};
    int differ = 0;
    for (uint64_t seed = 100; seed < 110; seed++) {
        spec.split_seed = seed;
        CHECK(corpus_open(&b, &spec) == 0);
        check_split(&b, 0.2, &mb, 0);
        differ += mb != ma;
        CHECK(b.hash != a.hash);
        corpus_close(&b);
    }
    CHECK(differ > 0);
    // eval_frac changes the hash and the size of the eval set
    spec.split_seed = 7;
    spec.eval_frac = 0.5;
    CHECK(corpus_open(&b, &spec) == 0);
    check_split(&b, 0.5, &mb, 0);
    CHECK(b.hash != a.hash);
    CHECK(b.n_eval > a.n_eval);
    corpus_close(&b);
    corpus_close(&a);

    // two documents: always exactly one in eval, whatever the fraction
    const char *two = test_path_join(dir, "two");
    mkdir(two, 0755);
    const char *ta = "first document, a bit longer than the other\n", *tb = "second\n";
    write_str(test_path_join(two, "a.txt"), ta);
    write_str(test_path_join(two, "b.txt"), tb);
    double fracs[3] = {0.01, 0.5, 0.99};
    for (int i = 0; i < 3; i++) {
        CHECK(open1(&a, two, fracs[i], "", 3) == 0);
        CHECK(a.n_docs == 2 && a.n_eval_docs == 1);
        CHECK(a.n_train + a.n_eval == strlen(ta) + strlen(tb));
        CHECK(a.n_eval == strlen(ta) || a.n_eval == strlen(tb));
        const char *first = a.n_eval == strlen(ta) ? tb : ta; // train is the other one
        for (size_t k = 0; k < a.n_train; k++) CHECK(a.train[k] == (unsigned char)first[k]);
        corpus_close(&a);
    }
}

TEST(data_one_document_tail_split) {
    const char *dir = test_tmpdir();
    char text[1000];
    for (int i = 0; i < 1000; i++) text[i] = (char)('a' + (i * 7) % 26);
    const char *p = test_path_join(dir, "doc.txt");
    test_write_bytes(p, text, 1000);
    Corpus c;
    CHECK(open1(&c, p, 0.1, "", 0) == 0);
    CHECK(c.n_train == 900 && c.n_eval == 100);
    CHECK(memcmp(c.train, (uint16_t[]){'a', 'h', 'o'}, 6) == 0);
    for (int i = 0; i < 100; i++) CHECK(c.eval[i] == (unsigned char)text[900 + i]);
    corpus_close(&c);
    const char *q = test_path_join(dir, "ten.txt");
    write_str(q, "0123456789");
    static const struct { double frac; size_t n_eval; } cases[] = {
        {0.333, 3}, {0.25, 3} /* 2.5 rounds away from zero */, {0.001, 1} /* at least one */,
        {0.999, 9} /* at least one training token */};
    for (int i = 0; i < 4; i++) {
        CHECK(open1(&c, q, cases[i].frac, "", 0) == 0);
        CHECK(c.n_eval == cases[i].n_eval && c.n_train == 10 - cases[i].n_eval);
        CHECK(c.eval[c.n_eval - 1] == '9' && c.train[0] == '0');
        CHECK(c.train[c.n_train - 1] + 1 == c.eval[0]);
        corpus_close(&c);
    }
}

TEST(data_token_cache) {
    const char *dir = test_tmpdir();
    const char *doc = test_path_join(dir, "doc.txt");
    const char *text = "hello cache\n";
    size_t n = strlen(text);
    write_str(doc, text);
    const char *cache = test_path_join(dir, "cache/nested"); // created with its parent
    Corpus a, b;
    CHECK(open1(&a, doc, 0.25, cache, 0) == 0);
    CHECK(count_files(cache, ".tok") == 1);
    // its name is the documented key: FNV-1a("byte\0", FNV-1a(document) as u64 LE)
    uint64_t content = ms_fnv1a(MS_FNV_INIT, text, n);
    uint64_t key = ms_fnv1a(ms_fnv1a(MS_FNV_INIT, "byte", 5), &content, 8);
    char hex[17], name[32];
    ms_hex64(key, hex);
    snprintf(name, sizeof name, "%s.tok", hex);
    const char *cf = test_path_join(cache, name);
    FILE *f = fopen(cf, "rb");
    CHECK(f != NULL);
    if (!f) return;
    unsigned char raw[256];
    size_t got = fread(raw, 1, sizeof raw, f);
    fclose(f);
    CHECK(got == 48 + 2 * n + 8);
    CHECK(memcmp(raw, "MSTOKENS", 8) == 0);
    uint32_t ver, vocab;
    uint64_t k2, ch, nb, nt;
    memcpy(&ver, raw + 8, 4);
    memcpy(&vocab, raw + 12, 4);
    memcpy(&k2, raw + 16, 8);
    memcpy(&ch, raw + 24, 8);
    memcpy(&nb, raw + 32, 8);
    memcpy(&nt, raw + 40, 8);
    CHECK(ver == 1 && vocab == 256 && k2 == key && ch == content && nb == n && nt == n);
    CHECK(raw[48] == 'h' && raw[49] == 0);

    // second open: identical tokens and hash
    CHECK(open1(&b, doc, 0.25, cache, 0) == 0);
    CHECK(a.hash == b.hash && a.n_train == b.n_train && a.n_eval == b.n_eval);
    CHECK(memcmp(a.train, b.train, 2 * a.n_train) == 0 && memcmp(a.eval, b.eval, 2 * a.n_eval) == 0);
    corpus_close(&b);

    // the cache is really read: a tampered cache file with a valid checksum is believed
    unsigned char mod[256];
    memcpy(mod, raw, got);
    mod[48] = 'J';
    uint64_t sum = ms_fnv1a(MS_FNV_INIT, mod, 48 + 2 * n);
    memcpy(mod + 48 + 2 * n, &sum, 8);
    test_write_bytes(cf, mod, got);
    CHECK(open1(&b, doc, 0.25, cache, 0) == 0);
    CHECK(b.train[0] == 'J' && b.train[1] == 'e');
    corpus_close(&b);

    // a corrupt cache file (bad checksum, truncated, token >= vocab) is silently rebuilt
    for (int kind = 0; kind < 3; kind++) {
        memcpy(mod, raw, got);
        size_t len = got;
        if (kind == 0) mod[50] = 'X';
        if (kind == 1) len = got - 3;
        if (kind == 2) {
            mod[49] = 1; // token 256 + 'h'
            sum = ms_fnv1a(MS_FNV_INIT, mod, 48 + 2 * n);
            memcpy(mod + 48 + 2 * n, &sum, 8);
        }
        test_write_bytes(cf, mod, len);
        CHECK(open1(&b, doc, 0.25, cache, 0) == 0);
        CHECK(memcmp(a.train, b.train, 2 * a.n_train) == 0);
        corpus_close(&b);
        f = fopen(cf, "rb");
        CHECK(f && fread(mod, 1, sizeof mod, f) == got && memcmp(mod, raw, got) == 0);
        if (f) fclose(f);
    }
    CHECK(count_files(cache, ".tok") == 1);

    // a modified document: another hash, another cache file
    write_str(doc, "hello cache!\n");
    CHECK(open1(&b, doc, 0.25, cache, 0) == 0);
    CHECK(b.hash != a.hash);
    CHECK(b.n_train + b.n_eval == n + 1);
    CHECK(count_files(cache, ".tok") == 2);
    CHECK(count_files(cache, ".tmp") == 0);
    corpus_close(&b);

    // a cache directory that cannot exist (below a regular file): works without a cache
    const char *blocker = test_path_join(dir, "afile");
    write_str(blocker, "x");
    CHECK(open1(&b, doc, 0.25, test_path_join(blocker, "sub"), 0) == 0);
    CHECK(b.n_train + b.n_eval == n + 1 && b.train[0] == 'h');
    corpus_close(&b);
    corpus_close(&a);
}

TEST(data_batch_windows) {
    const char *dir = test_tmpdir();
    const char *p = test_path_join(dir, "abc.txt");
    write_str(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZ");
    Corpus c;
    CHECK(open1(&c, p, 0.1, "", 0) == 0);
    CHECK(c.n_train == 23); // 26 - round(2.6)
    enum { B = 5, T = 20 };
    int in[B * T], tg[B * T], in2[B * T], tg2[B * T];
    Rng r1, r2;
    rng_seed(&r1, 42);
    rng_seed(&r2, 42);
    int seen[3] = {0};
    for (int it = 0; it < 100; it++) {
        corpus_batch(&c, &r1, B, T, in, tg);
        corpus_batch(&c, &r2, B, T, in2, tg2);
        CHECK(memcmp(in, in2, sizeof in) == 0 && memcmp(tg, tg2, sizeof tg) == 0);
        for (int b = 0; b < B; b++) {
            int s = in[b * T] - 'A';
            CHECK(s >= 0 && s <= 2); // start in [0, n_train - T - 1]
            if (s >= 0 && s <= 2) seen[s]++;
            for (int t = 0; t < T; t++) {
                CHECK(in[b * T + t] == 'A' + s + t);
                CHECK(tg[b * T + t] == 'A' + s + t + 1);
            }
        }
    }
    CHECK(seen[0] > 0 && seen[1] > 0 && seen[2] > 0);
    corpus_close(&c);

    // a larger corpus of pseudo-random letters: every window is a slice of train, targets shifted
    char *text = malloc(5000);
    uint64_t x = 1;
    for (int i = 0; i < 5000; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        text[i] = (char)('a' + (x >> 59) % 26);
    }
    test_write_bytes(p, text, 5000);
    CHECK(open1(&c, p, 0.2, "", 0) == 0);
    CHECK(c.n_train == 4000);
    enum { B2 = 8, T2 = 64 };
    int bi[B2 * T2], bt[B2 * T2];
    Rng r;
    rng_seed(&r, 9);
    for (int it = 0; it < 20; it++) {
        corpus_batch(&c, &r, B2, T2, bi, bt);
        for (int b = 0; b < B2; b++) {
            const int *w = bi + b * T2, *y = bt + b * T2;
            for (int t = 0; t + 1 < T2; t++) CHECK(y[t] == w[t + 1]);
            int found = 0;
            for (size_t s = 0; s + T2 < c.n_train && !found; s++) { // s <= n_train - T - 1
                int eq = 1;
                for (int t = 0; t < T2 && eq; t++) eq = c.train[s + t] == w[t] && c.train[s + t + 1] == y[t];
                found = eq;
            }
            CHECK(found);
        }
    }
    corpus_close(&c);
    free(text);
}
