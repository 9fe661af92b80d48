// data.c: corpora (UTF-8 .txt files or directories of them), tokenizers, the on-disk token cache and
// training batches.
//
// corpus_open works in two passes over the documents:
//  1. scan: stream every file once (corpus_chunk_bytes at a time), validate UTF-8 across chunk
//     boundaries, hash its content (FNV-1a 64) and count its bytes;
//  2. with the split decided from the hashes and sizes alone, take each document's tokens from the
//     cache, or stream it again through the tokenizer (and write the cache), appending them to the
//     train or eval array.
// Nothing holds a whole file as one string; the token arrays (u16) are the only corpus-sized memory.
//
// Token cache file, cache_dir/<key as 16 hex digits>.tok, little-endian:
//   "MSTOKENS" | u32 version (1) | u32 vocab | u64 key | u64 content_hash | u64 n_bytes |
//   u64 n_tokens | u16 tokens[n_tokens] | u64 FNV-1a of all preceding bytes
// key = FNV-1a(tokenizer id, '\0', content_hash as u64 LE); content_hash = FNV-1a(document bytes).
// Any mismatch (size, header, checksum, token >= vocab) makes it a miss and it is rewritten.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "data.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spm_model.h"
#include "tokenizer.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "mslab's on-disk formats assume a little-endian host"
#endif

size_t corpus_chunk_bytes = 1 << 20;

#define CACHE_MAGIC "MSTOKENS"
#define CACHE_VERSION 1u
#define CACHE_HEADER_BYTES 48

// ---- growable token array -------------------------------------------------------------------------
typedef struct {
    uint16_t *p;
    size_t n, cap;
} TokVec;

static void tv_reserve(TokVec *v, size_t cap) {
    if (cap <= v->cap) return;
    v->p = ms_realloc(v->p, cap * sizeof(uint16_t));
    v->cap = cap;
}

static void tv_grow(TokVec *v, size_t extra) {
    if (v->n + extra <= v->cap) return;
    size_t cap = v->cap + v->cap / 2;
    if (cap < v->n + extra) cap = v->n + extra;
    if (cap < 4096) cap = 4096;
    tv_reserve(v, cap);
}

// ---- tokenizers -----------------------------------------------------------------------------------
// Documents stream through tokenizer.h's TokStream ("byte", or a llama2.c tokenizer.bin whose BPE
// tokens can span a read chunk: the stream keeps the unfinished tail). A BPE document starts with
// BOS, as llama2.c's training data does. The tokenizer's id (for BPE, a hash of the vocabulary
// file) keys the token cache and the corpus hash.
size_t byte_encode(const char *text, size_t n, int *out) {
    for (size_t i = 0; i < n; i++) out[i] = (unsigned char)text[i];
    return n;
}

static int corpus_tokenizer(Tokenizer *tk, const char *name) {
    if (!name) name = "byte";
    size_t len = strlen(name);
    if (strcmp(name, "byte") != 0 && (len < 5 || strcmp(name + len - 4, ".bin") != 0) &&
        !spm_is_model_path(name))
        return ms_fail("corpus: unknown tokenizer '%s' (known: byte, or the path of a llama2.c "
                       "tokenizer .bin or a SentencePiece .model)", name);
    if (tokenizer_open(tk, name, 0) != 0) return -1;
    if (tk->vocab > 65536) {
        tokenizer_close(tk);
        return ms_fail("corpus: tokenizer %s has %d pieces; corpora hold u16 ids (at most 65536)",
                       name, tk->vocab);
    }
    return 0;
}

// Moves the ids the stream has ready into out.
static void take_ids(TokStream *st, TokVec *out) {
    tv_grow(out, st->n_ids);
    for (size_t i = 0; i < st->n_ids; i++) out->p[out->n++] = (uint16_t)st->ids[i];
    st->n_ids = 0;
}

// ---- UTF-8 validation, resumable across chunks ------------------------------------------------------
// Rejects overlong forms, surrogates (U+D800..DFFF), code points above U+10FFFF and stray
// continuation bytes (the Unicode "well-formed" table). Errors report the offset of the first byte
// of the offending sequence.
typedef struct {
    int need;               // continuation bytes still expected
    unsigned char lo, hi;   // allowed range of the next continuation byte
    uint64_t start;         // offset of the current sequence's first byte
} Utf8;

static int utf8_feed(Utf8 *u, const unsigned char *p, size_t n, uint64_t base, uint64_t *bad) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (u->need) {
            if (c < u->lo || c > u->hi) { *bad = u->start; return -1; }
            u->lo = 0x80;
            u->hi = 0xBF;
            u->need--;
            continue;
        }
        if (c < 0x80) continue;
        u->start = base + i;
        u->lo = 0x80;
        u->hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) u->need = 1;
        else if (c == 0xE0) { u->need = 2; u->lo = 0xA0; }
        else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) u->need = 2;
        else if (c == 0xED) { u->need = 2; u->hi = 0x9F; }
        else if (c == 0xF0) { u->need = 3; u->lo = 0x90; }
        else if (c >= 0xF1 && c <= 0xF3) u->need = 3;
        else if (c == 0xF4) { u->need = 3; u->hi = 0x8F; }
        else { *bad = base + i; return -1; }
    }
    return 0;
}

// ---- files ----------------------------------------------------------------------------------------
typedef struct {
    char *path;
    dev_t dev;
    ino_t ino;
    uint64_t content_hash; // FNV-1a of the bytes
    uint64_t bytes;
    uint64_t split_key;
    int eval;
} Doc;

typedef struct {
    Doc *d;
    int n, cap;
} DocList;

static void docs_add(DocList *l, const char *path, const struct stat *st) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        l->d = ms_realloc(l->d, (size_t)l->cap * sizeof(Doc));
    }
    Doc *d = &l->d[l->n++];
    memset(d, 0, sizeof *d);
    d->path = ms_strdup(path);
    d->dev = st->st_dev;
    d->ino = st->st_ino;
}

static void docs_free(DocList *l) {
    for (int i = 0; i < l->n; i++) free(l->d[i].path);
    free(l->d);
    memset(l, 0, sizeof *l);
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static char *join_path(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = ms_malloc(a + b + 2);
    memcpy(p, dir, a);
    size_t k = a;
    if (a && dir[a - 1] != '/') p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

// Walks a directory: *.txt regular files (symlinks to files followed), subdirectories recursed
// (symlinked directories are not followed, so there are no loops); names starting with '.' skipped.
static int walk_dir(const char *dir, DocList *out) {
    DIR *d = opendir(dir);
    if (!d) return ms_fail("corpus %s: cannot open directory: %s", dir, strerror(errno));
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char *p = join_path(dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) != 0) {
            rc = ms_fail("corpus %s: %s", p, strerror(errno));
        } else if (S_ISDIR(st.st_mode)) {
            rc = walk_dir(p, out);
        } else if (ends_with(e->d_name, ".txt")) {
            if (S_ISLNK(st.st_mode) && stat(p, &st) != 0) rc = ms_fail("corpus %s: %s", p, strerror(errno));
            else if (S_ISREG(st.st_mode)) docs_add(out, p, &st);
        }
        free(p);
    }
    closedir(d);
    return rc;
}

static int doc_cmp(const void *a, const void *b) {
    return strcmp(((const Doc *)a)->path, ((const Doc *)b)->path);
}

typedef struct { dev_t dev; ino_t ino; int idx; } FileId;
static int fileid_cmp(const void *a, const void *b) {
    const FileId *x = a, *y = b;
    if (x->dev != y->dev) return x->dev < y->dev ? -1 : 1;
    if (x->ino != y->ino) return x->ino < y->ino ? -1 : 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

static int collect_docs(const CorpusSpec *spec, DocList *out) {
    if (!spec->paths || spec->n_paths <= 0) return ms_fail("corpus: no paths given");
    for (int i = 0; i < spec->n_paths; i++) {
        const char *path = spec->paths[i];
        if (!path || !*path) return ms_fail("corpus: empty path");
        struct stat st;
        if (stat(path, &st) != 0) return ms_fail("corpus %s: %s", path, strerror(errno));
        if (S_ISDIR(st.st_mode)) {
            int before = out->n;
            if (walk_dir(path, out) != 0) return -1;
            if (out->n == before) return ms_fail("corpus %s: no .txt files in this directory", path);
        } else if (S_ISREG(st.st_mode)) {
            docs_add(out, path, &st);
        } else {
            return ms_fail("corpus %s: not a regular file or directory", path);
        }
    }
    qsort(out->d, (size_t)out->n, sizeof(Doc), doc_cmp);
    // the same file reached twice (listed and inside a listed directory, or through a link) counts
    // once, at its first path: sort indices by (dev, ino, index), drop all but the first of a run
    int n = out->n, k = 0;
    FileId *ids = ms_malloc((size_t)(n ? n : 1) * sizeof(FileId));
    char *drop = ms_calloc((size_t)(n ? n : 1), 1);
    for (int i = 0; i < n; i++) ids[i] = (FileId){out->d[i].dev, out->d[i].ino, i};
    qsort(ids, (size_t)n, sizeof(FileId), fileid_cmp);
    for (int i = 1; i < n; i++)
        if (ids[i].dev == ids[i - 1].dev && ids[i].ino == ids[i - 1].ino) drop[ids[i].idx] = 1;
    for (int i = 0; i < n; i++) {
        if (drop[i]) free(out->d[i].path);
        else out->d[k++] = out->d[i];
    }
    free(ids);
    free(drop);
    out->n = k;
    if (out->n == 0) return ms_fail("corpus: no documents");
    return 0;
}

static ssize_t read_full(int fd, unsigned char *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

// Pass 1: hash, size and UTF-8-validate one document.
static int scan_doc(Doc *d, unsigned char *buf, size_t chunk) {
    int fd = open(d->path, O_RDONLY);
    if (fd < 0) return ms_fail("corpus %s: cannot open: %s", d->path, strerror(errno));
    Utf8 u = {0};
    uint64_t h = MS_FNV_INIT, off = 0, bad = 0;
    for (;;) {
        ssize_t r = read_full(fd, buf, chunk);
        if (r < 0) {
            int e = errno;
            close(fd);
            return ms_fail("corpus %s: read error: %s", d->path, strerror(e));
        }
        if (r == 0) break;
        if (utf8_feed(&u, buf, (size_t)r, off, &bad) != 0) {
            close(fd);
            return ms_fail("corpus %s: invalid UTF-8 at byte offset %llu", d->path,
                           (unsigned long long)bad);
        }
        h = ms_fnv1a(h, buf, (size_t)r);
        off += (uint64_t)r;
    }
    close(fd);
    if (off == 0) return ms_fail("corpus %s: empty file", d->path);
    if (u.need)
        return ms_fail("corpus %s: invalid UTF-8 at byte offset %llu (sequence cut off at end of file)",
                       d->path, (unsigned long long)u.start);
    d->content_hash = h;
    d->bytes = off;
    return 0;
}

// Pass 2 on a cache miss: stream the document through the tokenizer, appending to out.
static int tokenize_doc(const Doc *d, TokStream *st, unsigned char *buf, size_t chunk, TokVec *out) {
    int fd = open(d->path, O_RDONLY);
    if (fd < 0) return ms_fail("corpus %s: cannot open: %s", d->path, strerror(errno));
    uint64_t h = MS_FNV_INIT, off = 0;
    tok_stream_begin(st, st->t, 1);
    for (;;) {
        ssize_t r = read_full(fd, buf, chunk);
        if (r < 0) {
            int e = errno;
            close(fd);
            return ms_fail("corpus %s: read error: %s", d->path, strerror(e));
        }
        if (r == 0) break;
        h = ms_fnv1a(h, buf, (size_t)r);
        off += (uint64_t)r;
        tok_stream_feed(st, (const char *)buf, (size_t)r);
        take_ids(st, out);
    }
    close(fd);
    tok_stream_finish(st);
    take_ids(st, out);
    if (h != d->content_hash || off != d->bytes)
        return ms_fail("corpus %s: file changed while it was being read", d->path);
    return 0;
}

// ---- token cache ----------------------------------------------------------------------------------
static void put_u32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }
static void put_u64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }
static uint64_t get_u64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static uint64_t cache_key(const Tokenizer *tk, uint64_t content_hash) {
    uint64_t h = ms_fnv1a(MS_FNV_INIT, tk->id, strlen(tk->id) + 1);
    unsigned char b[8];
    put_u64(b, content_hash);
    return ms_fnv1a(h, b, 8);
}

static char *cache_path(const char *dir, uint64_t key, const char *suffix) {
    char hex[17], name[96];
    ms_hex64(key, hex);
    snprintf(name, sizeof name, "%s.tok%s", hex, suffix);
    return join_path(dir, name);
}

static void cache_header(unsigned char *h, const Tokenizer *tk, uint64_t key, const Doc *d, uint64_t n) {
    memcpy(h, CACHE_MAGIC, 8);
    put_u32(h + 8, CACHE_VERSION);
    put_u32(h + 12, (uint32_t)tk->vocab);
    put_u64(h + 16, key);
    put_u64(h + 24, d->content_hash);
    put_u64(h + 32, d->bytes);
    put_u64(h + 40, n);
}

// Appends the cached tokens to out; returns 0 on a valid hit, -1 (out unchanged) otherwise.
static int cache_read(const char *dir, const Tokenizer *tk, const Doc *d, TokVec *out) {
    uint64_t key = cache_key(tk, d->content_hash);
    char *path = cache_path(dir, key, "");
    int fd = open(path, O_RDONLY);
    free(path);
    if (fd < 0) return -1;
    int ok = 0;
    size_t n0 = out->n;
    struct stat st;
    unsigned char hdr[CACHE_HEADER_BYTES], want[CACHE_HEADER_BYTES], tail[8];
    if (fstat(fd, &st) != 0 || read_full(fd, hdr, sizeof hdr) != (ssize_t)sizeof hdr) goto done;
    uint64_t n = get_u64(hdr + 40);
    cache_header(want, tk, key, d, n);
    if (memcmp(hdr, want, sizeof hdr) != 0) goto done;
    if (n > ((uint64_t)1 << 60) || (uint64_t)st.st_size != CACHE_HEADER_BYTES + 2 * n + 8) goto done;
    tv_grow(out, (size_t)n);
    uint64_t h = ms_fnv1a(MS_FNV_INIT, hdr, sizeof hdr);
    size_t bytes = (size_t)n * 2;
    if (read_full(fd, (unsigned char *)(out->p + n0), bytes) != (ssize_t)bytes) goto done;
    h = ms_fnv1a(h, out->p + n0, bytes);
    if (read_full(fd, tail, 8) != 8 || get_u64(tail) != h) goto done;
    for (size_t i = 0; i < n; i++)
        if (out->p[n0 + i] >= tk->vocab) goto done;
    out->n = n0 + (size_t)n;
    ok = 1;
done:
    close(fd);
    return ok ? 0 : -1;
}

static int write_full(int fd, const void *p, size_t n) {
    const unsigned char *b = p;
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

// Best effort: any failure leaves no file behind and is otherwise ignored.
static void cache_write(const char *dir, const Tokenizer *tk, const Doc *d, const uint16_t *tok, size_t n) {
    uint64_t key = cache_key(tk, d->content_hash);
    char suffix[32];
    snprintf(suffix, sizeof suffix, ".tmp.%ld", (long)getpid());
    char *tmp = cache_path(dir, key, suffix), *path = cache_path(dir, key, "");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        unsigned char hdr[CACHE_HEADER_BYTES], tail[8];
        cache_header(hdr, tk, key, d, n);
        uint64_t h = ms_fnv1a(ms_fnv1a(MS_FNV_INIT, hdr, sizeof hdr), tok, n * 2);
        put_u64(tail, h);
        int bad = write_full(fd, hdr, sizeof hdr) || write_full(fd, tok, n * 2) || write_full(fd, tail, 8);
        bad |= close(fd) != 0;
        if (bad || rename(tmp, path) != 0) unlink(tmp);
    }
    free(tmp);
    free(path);
}

// mkdir -p; returns 0 when dir exists (or was created) as a writable directory.
static int make_dirs(const char *dir) {
    char *p = ms_strdup(dir);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        mkdir(p, 0755);
        *s = '/';
    }
    mkdir(p, 0755);
    struct stat st;
    int ok = stat(p, &st) == 0 && S_ISDIR(st.st_mode) && access(p, W_OK | X_OK) == 0;
    free(p);
    return ok ? 0 : -1;
}

// ---- split ----------------------------------------------------------------------------------------
static uint64_t split_key(uint64_t seed, uint64_t content_hash) {
    unsigned char b[16];
    put_u64(b, seed);
    put_u64(b + 8, content_hash);
    uint64_t h = ms_fnv1a(MS_FNV_INIT, b, 16);
    // FNV's last bytes mix weakly into the high bits: finish with a splitmix64-style avalanche
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
    return h ^ (h >> 31);
}

static int key_cmp(const void *a, const void *b) {
    const Doc *x = *(const Doc *const *)a, *y = *(const Doc *const *)b;
    if (x->split_key != y->split_key) return x->split_key < y->split_key ? -1 : 1;
    return strcmp(x->path, y->path);
}

// Documents in increasing split_key order go to eval while that brings the eval byte count closer
// to eval_frac of the total; at least one, at most n-1.
static int choose_eval_docs(DocList *docs, double frac, uint64_t seed) {
    int n = docs->n;
    Doc **order = ms_malloc((size_t)n * sizeof(Doc *));
    double total = 0;
    for (int i = 0; i < n; i++) {
        docs->d[i].split_key = split_key(seed, docs->d[i].content_hash);
        order[i] = &docs->d[i];
        total += (double)docs->d[i].bytes;
    }
    qsort(order, (size_t)n, sizeof(Doc *), key_cmp);
    double target = frac * total, acc = 0;
    int k = 0;
    while (k < n - 1) {
        double next = acc + (double)order[k]->bytes;
        if (k >= 1 && fabs(next - target) >= fabs(acc - target)) break;
        acc = next;
        order[k++]->eval = 1;
        if (acc >= target) break;
    }
    free(order);
    return k;
}

// ---- corpus ---------------------------------------------------------------------------------------
int corpus_open(Corpus *c, const CorpusSpec *spec) {
    memset(c, 0, sizeof *c);
    if (!(spec->eval_frac > 0 && spec->eval_frac < 1))
        return ms_fail("corpus: eval_frac (%g) must be in (0, 1)", spec->eval_frac);
    Tokenizer tk;
    if (corpus_tokenizer(&tk, spec->tokenizer) != 0) return -1;
    TokStream st = {0};
    tok_stream_begin(&st, &tk, 1);
    DocList docs = {0};
    TokVec tr = {0}, ev = {0};
    size_t *tr_start = NULL, *ev_start = NULL; // document starts in tr / ev
    int n_tr_start = 0, n_ev_start = 0;
    size_t chunk = corpus_chunk_bytes ? corpus_chunk_bytes : 1;
    unsigned char *buf = ms_malloc(chunk);
    int rc = -1;

    if (collect_docs(spec, &docs) != 0) goto out;
    uint64_t total = 0, eval_bytes = 0;
    for (int i = 0; i < docs.n; i++) {
        if (scan_doc(&docs.d[i], buf, chunk) != 0) goto out;
        total += docs.d[i].bytes;
    }
    int n_eval_docs = docs.n >= 2 ? choose_eval_docs(&docs, spec->eval_frac, spec->split_seed) : 0;
    for (int i = 0; i < docs.n; i++)
        if (docs.d[i].eval) eval_bytes += docs.d[i].bytes;
    // a good first guess for both arrays (exact for the byte tokenizer)
    tv_reserve(&tr, (size_t)(total - eval_bytes));
    tv_reserve(&ev, (size_t)eval_bytes);

    const char *cdir = spec->cache_dir ? spec->cache_dir : ".mslab-cache";
    int use_cache = cdir[0] && make_dirs(cdir) == 0;
    tr_start = ms_malloc(sizeof(size_t) * (size_t)(docs.n + 1));
    ev_start = ms_malloc(sizeof(size_t) * (size_t)(docs.n + 1));
    for (int i = 0; i < docs.n; i++) {
        Doc *d = &docs.d[i];
        TokVec *v = d->eval ? &ev : &tr;
        if (d->eval) ev_start[n_ev_start++] = ev.n;
        else tr_start[n_tr_start++] = tr.n;
        if (use_cache && cache_read(cdir, &tk, d, v) == 0) continue;
        size_t n0 = v->n;
        if (tokenize_doc(d, &st, buf, chunk, v) != 0) goto out;
        if (use_cache) cache_write(cdir, &tk, d, v->p + n0, v->n - n0);
    }

    if (docs.n == 1) { // the last eval_frac of the only document's tokens
        size_t n = tr.n, ne = (size_t)llround(spec->eval_frac * (double)n);
        if (n >= 2) {
            if (ne < 1) ne = 1;
            if (ne > n - 1) ne = n - 1;
        } else {
            ne = 0;
        }
        tv_reserve(&ev, ne);
        memcpy(ev.p, tr.p + (n - ne), ne * sizeof(uint16_t));
        ev.n = ne;
        tr.n = n - ne;
        ev_start[0] = 0;
        n_ev_start = ne > 0;
    }

    // corpus hash: tokenizer, every document (content, side) in order, split parameters
    uint64_t h = ms_fnv1a(MS_FNV_INIT, "mslab-corpus-1", 15);
    h = ms_fnv1a(h, tk.id, strlen(tk.id) + 1);
    for (int i = 0; i < docs.n; i++) {
        unsigned char b[9];
        put_u64(b, docs.d[i].content_hash);
        b[8] = (unsigned char)docs.d[i].eval;
        h = ms_fnv1a(h, b, 9);
    }
    unsigned char b[16];
    double frac = spec->eval_frac;
    put_u64(b, spec->split_seed);
    memcpy(b + 8, &frac, 8);
    h = ms_fnv1a(h, b, 16);

    c->train = ms_realloc(tr.p, (tr.n ? tr.n : 1) * sizeof(uint16_t));
    c->n_train = tr.n;
    c->eval = ms_realloc(ev.p, (ev.n ? ev.n : 1) * sizeof(uint16_t));
    c->n_eval = ev.n;
    tr.p = ev.p = NULL;
    c->vocab = tk.vocab;
    c->n_docs = docs.n;
    c->n_eval_docs = n_eval_docs;
    c->train_doc_start = tr_start;
    c->n_train_starts = n_tr_start;
    c->eval_doc_start = ev_start;
    c->n_eval_starts = n_ev_start;
    c->tokenizer = ms_strdup(spec->tokenizer ? spec->tokenizer : "byte");
    tr_start = ev_start = NULL;
    c->hash = h;
    c->bytes = (size_t)total;
    rc = 0;
out:
    free(tr.p);
    free(ev.p);
    free(tr_start);
    free(ev_start);
    free(buf);
    docs_free(&docs);
    tok_stream_free(&st);
    tokenizer_close(&tk);
    return rc;
}

void corpus_close(Corpus *c) {
    if (!c) return;
    free(c->train);
    free(c->eval);
    free(c->train_doc_start);
    free(c->eval_doc_start);
    free(c->tokenizer);
    memset(c, 0, sizeof *c);
}

void corpus_batch(const Corpus *c, Rng *rng, int B, int T, int *inputs, int *targets) {
    MS_ASSERT(B > 0 && T > 0, "B %d, T %d", B, T);
    MS_ASSERT(c->n_train > (size_t)T, "corpus has %zu training tokens, a window needs T+1 = %d",
              c->n_train, T + 1);
    for (int b = 0; b < B; b++) {
        const uint16_t *w = c->train + rng_below(rng, (uint64_t)(c->n_train - (size_t)T));
        int *in = inputs + (size_t)b * T, *tg = targets + (size_t)b * T;
        for (int t = 0; t < T; t++) {
            in[t] = w[t];
            tg[t] = w[t + 1];
        }
    }
}
