// tokenizer.c: the byte tokenizer and llama2.c's tokenizer.bin BPE (see tokenizer.h).
#include "tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "spm_model.h"

#define NO_MERGE_SCORE -1e10f // llama2.c's initial best score: a pair must score above it

size_t tok_segment_bytes = 1 << 18;

// ---- loading --------------------------------------------------------------------------------------
static uint64_t fnv_from(uint64_t h, const void *p, size_t n) { return ms_fnv1a(h, p, n); }

static void table_insert(Tokenizer *t, int id) {
    uint32_t i = (uint32_t)t->piece_hash[id] & t->table_mask;
    while (t->table[i] >= 0) {
        int o = t->table[i];
        // duplicate pieces (none in the shipped files): the lowest id wins
        if (t->piece_len[o] == t->piece_len[id] && !memcmp(t->piece[o], t->piece[id], (size_t)t->piece_len[id]))
            return;
        i = (i + 1) & t->table_mask;
    }
    t->table[i] = id;
}

static int read_exact(FILE *f, void *p, size_t n) { return fread(p, 1, n, f) == n ? 0 : -1; }

static int bpe_open(Tokenizer *t, const char *path, int vocab) {
    // a SentencePiece .model is read as the tokenizer.bin llama2.c would export from it
    FILE *f = spm_is_model_path(path) ? spm_model_open_as_bin(path) : fopen(path, "rb");
    if (!f && spm_is_model_path(path)) return -1;
    if (!f) return ms_fail("tokenizer %s: cannot open: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    t->kind = TOK_BPE;
    t->path = ms_strdup(path);
    t->bos = 1;
    t->eos = 2;
    uint32_t max_len;
    int rc = -1, cap = vocab > 0 ? vocab : 1024, n = 0;
    long off = 4;
    if (read_exact(f, &max_len, 4)) {
        ms_fail("tokenizer %s: truncated: %ld bytes, not even the 4-byte header", path, size);
        goto done;
    }
    uint64_t h = fnv_from(MS_FNV_INIT, &max_len, 4);
    t->piece = ms_malloc(sizeof(char *) * (size_t)cap);
    t->piece_len = ms_malloc(sizeof(int) * (size_t)cap);
    t->score = ms_malloc(sizeof(float) * (size_t)cap);
    while (vocab > 0 ? n < vocab : off < size) {
        if (n == cap) {
            cap *= 2;
            t->piece = ms_realloc(t->piece, sizeof(char *) * (size_t)cap);
            t->piece_len = ms_realloc(t->piece_len, sizeof(int) * (size_t)cap);
            t->score = ms_realloc(t->score, sizeof(float) * (size_t)cap);
        }
        unsigned char rec[8];
        int32_t len;
        if (read_exact(f, rec, 8)) {
            if (vocab > 0)
                ms_fail("tokenizer %s: truncated: %ld bytes hold %d of the %d pieces", path, size, n, vocab);
            else
                ms_fail("tokenizer %s: truncated: the file ends inside the record of piece %d", path, n);
            goto done;
        }
        memcpy(&t->score[n], rec, 4);
        memcpy(&len, rec + 4, 4);
        if (len < 0 || len > 65536) {
            ms_fail("tokenizer %s: piece %d has length %d at byte %ld: not a tokenizer.bin", path, n,
                    (int)len, off + 4);
            goto done;
        }
        t->piece[n] = ms_malloc((size_t)len + 1);
        t->piece_len[n] = len;
        if (read_exact(f, t->piece[n], (size_t)len)) {
            free(t->piece[n]);
            if (vocab > 0)
                ms_fail("tokenizer %s: truncated: %ld bytes hold %d of the %d pieces", path, size, n, vocab);
            else
                ms_fail("tokenizer %s: truncated: the file ends inside piece %d", path, n);
            goto done;
        }
        t->piece[n][len] = 0;
        h = fnv_from(fnv_from(h, rec, 8), t->piece[n], (size_t)len);
        off += 8 + len;
        n++;
    }
    t->vocab = n;
    if (n < 259) {
        ms_fail("tokenizer %s: %d pieces, fewer than the 259 special and byte pieces", path, n);
        goto done;
    }
    snprintf(t->id, sizeof t->id, "bpe-%016llx-%d", (unsigned long long)h, n);
    uint32_t slots = 1;
    while (slots < 2u * (uint32_t)n) slots *= 2;
    t->table_mask = slots - 1;
    t->table = ms_malloc(sizeof(int) * slots);
    memset(t->table, 0xff, sizeof(int) * slots);
    t->piece_hash = ms_malloc(sizeof(uint64_t) * (size_t)n);
    t->char_piece = ms_calloc(128, 1);
    t->pair_seen = ms_calloc(256 * 256 / 8, 1);
    for (int i = 0; i < n; i++) {
        t->piece_hash[i] = fnv_from(MS_FNV_INIT, t->piece[i], (size_t)t->piece_len[i]);
        table_insert(t, i);
        const unsigned char *p = (const unsigned char *)t->piece[i];
        for (int k = 0; k + 1 < t->piece_len[i]; k++) {
            unsigned pair = (unsigned)p[k] << 8 | p[k + 1];
            t->pair_seen[pair >> 3] |= (uint8_t)(1u << (pair & 7));
        }
    }
    for (int c = 0; c < 128; c++) {
        char s = (char)c;
        t->char_piece[c] = tokenizer_lookup(t, &s, 1) >= 0;
    }
    t->space_id = tokenizer_lookup(t, " ", 1);
    rc = 0;
done:
    if (rc) t->vocab = n; // so tokenizer_close frees what was read
    fclose(f);
    return rc;
}

int tokenizer_open(Tokenizer *t, const char *spec, int vocab) {
    memset(t, 0, sizeof *t);
    if (!spec || !strcmp(spec, "byte")) {
        if (vocab > 0 && vocab != 256)
            return ms_fail("tokenizer byte: vocab is 256, the model has %d", vocab);
        t->kind = TOK_BYTE;
        t->vocab = 256;
        t->bos = t->eos = -1;
        t->space_id = ' ';
        snprintf(t->id, sizeof t->id, "byte");
        return 0;
    }
    if (bpe_open(t, spec, vocab)) {
        tokenizer_close(t);
        return -1;
    }
    return 0;
}

void tokenizer_close(Tokenizer *t) {
    if (t->piece)
        for (int i = 0; i < t->vocab; i++) free(t->piece[i]);
    free(t->piece);
    free(t->piece_len);
    free(t->score);
    free(t->piece_hash);
    free(t->table);
    free(t->char_piece);
    free(t->pair_seen);
    free(t->path);
    memset(t, 0, sizeof *t);
}

// ---- lookup -----------------------------------------------------------------------------------------
// The id of the piece a[na] b[nb] (b may be empty), found by hashing on from a's hash.
static int lookup2(const Tokenizer *t, uint64_t ha, const char *a, size_t na, const char *b, size_t nb) {
    uint64_t h = nb ? fnv_from(ha, b, nb) : ha;
    for (uint32_t i = (uint32_t)h & t->table_mask;; i = (i + 1) & t->table_mask) {
        int id = t->table[i];
        if (id < 0) return -1;
        if ((size_t)t->piece_len[id] == na + nb && t->piece_hash[id] == h &&
            !memcmp(t->piece[id], a, na) && !memcmp(t->piece[id] + na, b, nb))
            return id;
    }
}

int tokenizer_lookup(const Tokenizer *t, const char *s, size_t n) {
    if (t->kind == TOK_BYTE) return n == 1 ? (unsigned char)s[0] : -1;
    return lookup2(t, fnv_from(MS_FNV_INIT, s, n), s, n, "", 0);
}

// ---- BPE merges ---------------------------------------------------------------------------------------
// Symbols form a linked list over their initial slots (a merge keeps the left slot, so slot order is
// sequence order). The heap holds every candidate pair (left slot, right slot, merged id), best
// first: higher score, then the smaller left slot (llama2.c's leftmost tie-break). A popped entry is
// stale if either symbol died or changed since it was pushed: symbols only grow, so the lengths
// of the two pieces no longer adding up to the merged piece's length detects it.
typedef struct {
    float score;
    int left, right, id;
} Cand;

typedef struct {
    Cand *a;
    size_t n, cap;
} Heap;

static int cand_before(const Cand *x, const Cand *y) {
    return x->score > y->score || (x->score == y->score && x->left < y->left);
}

static void heap_push(Heap *h, Cand c) {
    if (h->n == h->cap) {
        h->cap = h->cap ? 2 * h->cap : 1024;
        h->a = ms_realloc(h->a, h->cap * sizeof(Cand));
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_before(&c, &h->a[p])) break;
        h->a[i] = h->a[p];
        i = p;
    }
    h->a[i] = c;
}

static Cand heap_pop(Heap *h) {
    Cand top = h->a[0], last = h->a[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, best = i;
        const Cand *bc = &last;
        if (l < h->n && cand_before(&h->a[l], bc)) best = l, bc = &h->a[l];
        if (l + 1 < h->n && cand_before(&h->a[l + 1], bc)) best = l + 1;
        if (best == i) break;
        h->a[i] = h->a[best];
        i = best;
    }
    if (h->n) h->a[i] = last;
    return top;
}

static void push_pair(const Tokenizer *t, Heap *h, const int *tok, int l, int r) {
    if (l < 0 || r < 0) return;
    int a = tok[l], b = tok[r];
    int id = lookup2(t, t->piece_hash[a], t->piece[a], (size_t)t->piece_len[a], t->piece[b],
                     (size_t)t->piece_len[b]);
    if (id >= 0 && t->score[id] > NO_MERGE_SCORE) heap_push(h, (Cand){t->score[id], l, r, id});
}

// Merges tok[n] in place (llama2.c's loop, same result); returns the new count.
static size_t bpe_merge(const Tokenizer *t, int *tok, size_t n) {
    if (n < 2) return n;
    int *next = ms_malloc(n * sizeof(int)), *prev = ms_malloc(n * sizeof(int));
    for (size_t i = 0; i < n; i++) {
        prev[i] = (int)i - 1;
        next[i] = i + 1 < n ? (int)i + 1 : -1;
    }
    Heap h = {0};
    for (size_t i = 0; i + 1 < n; i++) push_pair(t, &h, tok, (int)i, (int)i + 1);
    while (h.n) {
        Cand c = heap_pop(&h);
        int l = c.left, r = c.right;
        if (tok[l] < 0 || tok[r] < 0 || next[l] != r ||
            t->piece_len[tok[l]] + t->piece_len[tok[r]] != t->piece_len[c.id])
            continue;
        tok[l] = c.id;
        tok[r] = -1;
        next[l] = next[r];
        if (next[r] >= 0) prev[next[r]] = l;
        push_pair(t, &h, tok, prev[l], l);
        push_pair(t, &h, tok, l, next[l]);
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (tok[i] >= 0) tok[k++] = tok[i];
    free(h.a);
    free(next);
    free(prev);
    return k;
}

// One segment of text: optional BOS and dummy prefix, code points or byte fallback, merges.
static size_t bpe_encode_segment(const Tokenizer *t, const char *text, size_t n, int bos, int prefix,
                                 int *out) {
    size_t k = 0;
    if (bos) out[k++] = t->bos;
    if (prefix && n > 0 && t->space_id >= 0) out[k++] = t->space_id;
    const unsigned char *p = (const unsigned char *)text;
    for (size_t i = 0; i < n;) {
        // a code point as llama2.c groups it: a byte, then the continuation bytes after it, 4 at most
        size_t len = 1;
        while (i + len < n && len < 4 && (p[i + len] & 0xC0) == 0x80) len++;
        int id = tokenizer_lookup(t, text + i, len);
        if (id >= 0) out[k++] = id;
        else
            for (size_t j = 0; j < len; j++) out[k++] = p[i + j] + 3;
        i += len;
    }
    return k;
}

// Whether no token can span text[k-1] | text[k]: both are ASCII bytes that are pieces on their own
// (so each is one symbol) and the pair occurs in no piece, so no merge can ever join them.
static int safe_cut(const Tokenizer *t, const unsigned char *b, size_t k) {
    unsigned x = b[k - 1], y = b[k];
    if (x >= 128 || y >= 128 || !t->char_piece[x] || !t->char_piece[y]) return 0;
    unsigned pair = x << 8 | y;
    return !(t->pair_seen[pair >> 3] & (1u << (pair & 7)));
}

// Regions between safe cuts merge independently (no candidate pair crosses a cut, so the global
// highest-score-first order restricted to a region is that region's own order): merging ~4 KB
// regions one at a time keeps the heap in cache and is several times faster than one big heap.
#define REGION_BYTES 4096
static size_t bpe_encode_text(const Tokenizer *t, const char *text, size_t n, int bos, int prefix,
                              int *out) {
    const unsigned char *b = (const unsigned char *)text;
    size_t k = 0, a = 0;
    do {
        size_t e = a + REGION_BYTES;
        while (e < n && !safe_cut(t, b, e)) e++;
        if (e > n) e = n;
        size_t m = bpe_encode_segment(t, text + a, e - a, bos && a == 0, prefix && a == 0, out + k);
        k += bpe_merge(t, out + k, m);
        a = e;
    } while (a < n);
    return k;
}

size_t tokenizer_encode(const Tokenizer *t, const char *text, size_t n, int bos, int eos, int *out) {
    if (t->kind == TOK_BYTE) {
        for (size_t i = 0; i < n; i++) out[i] = (unsigned char)text[i];
        return n;
    }
    size_t k = bpe_encode_text(t, text, n, bos, 1, out);
    if (eos) out[k++] = t->eos;
    return k;
}

// ---- decoding -------------------------------------------------------------------------------------------
static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

static const unsigned char byte_values[256] = {
#define B4(i) i, i + 1, i + 2, i + 3
#define B16(i) B4(i), B4(i + 4), B4(i + 8), B4(i + 12)
#define B64(i) B16(i), B16(i + 16), B16(i + 32), B16(i + 48)
    B64(0), B64(64), B64(128), B64(192)
#undef B64
#undef B16
#undef B4
};

const char *tokenizer_piece(const Tokenizer *t, int prev, int id, size_t *len) {
    if (id < 0 || id >= t->vocab) {
        *len = 0;
        return "";
    }
    if (t->kind == TOK_BYTE) {
        *len = 1;
        return (const char *)&byte_values[id];
    }
    const char *p = t->piece[id];
    size_t n = (size_t)t->piece_len[id];
    if (prev == t->bos && n && p[0] == ' ') p++, n--;
    if (n == 6 && !memcmp(p, "<0x", 3) && p[5] == '>' && hexval(p[3]) >= 0 && hexval(p[4]) >= 0) {
        *len = 1;
        return (const char *)&byte_values[hexval(p[3]) * 16 + hexval(p[4])];
    }
    *len = n;
    return p;
}

char *tokenizer_decode(const Tokenizer *t, const int *ids, size_t n, size_t *len) {
    size_t cap = 64, k = 0;
    char *s = ms_malloc(cap);
    for (size_t i = 0; i < n; i++) {
        if (ids[i] == t->bos || ids[i] == t->eos) continue;
        size_t m;
        const char *p = tokenizer_piece(t, i ? ids[i - 1] : -1, ids[i], &m);
        if (k + m + 1 > cap) {
            while (k + m + 1 > cap) cap *= 2;
            s = ms_realloc(s, cap);
        }
        memcpy(s + k, p, m);
        k += m;
    }
    s[k] = 0;
    if (len) *len = k;
    return s;
}

// ---- streaming ----------------------------------------------------------------------------------------
static void ids_reserve(TokStream *s, size_t extra) {
    if (s->n_ids + extra <= s->cap_ids) return;
    s->cap_ids = s->n_ids + extra + s->cap_ids / 2;
    s->ids = ms_realloc(s->ids, s->cap_ids * sizeof(int));
}

void tok_stream_begin(TokStream *s, const Tokenizer *t, int bos) {
    int *ids = s->ids;
    char *buf = s->buf;
    size_t cap = s->cap, cap_ids = s->cap_ids;
    int reuse = s->t != NULL; // keep the buffers of a previous document
    memset(s, 0, sizeof *s);
    if (reuse) s->ids = ids, s->buf = buf, s->cap = cap, s->cap_ids = cap_ids;
    s->t = t;
    s->bos = bos;
}

static void encode_pending(TokStream *s, size_t n) {
    const Tokenizer *t = s->t;
    ids_reserve(s, n + 3);
    s->n_ids += bpe_encode_text(t, s->buf, n, !s->started && s->bos, !s->started, s->ids + s->n_ids);
    s->started = 1;
    memmove(s->buf, s->buf + n, s->n - n);
    s->n -= n;
    s->scanned = s->n; // n was the last cut: nothing after it is one
}

// The last position k in buf (k >= 1) where no token can span buf[k-1] | buf[k], or 0. Positions
// below s->scanned are known not to be cuts, so text without any cut is scanned once.
static size_t last_safe_cut(TokStream *s) {
    const Tokenizer *t = s->t;
    const unsigned char *b = (const unsigned char *)s->buf;
    size_t lo = s->scanned > 1 ? s->scanned : 1;
    s->scanned = s->n;
    for (size_t k = s->n - 1; k >= lo; k--)
        if (safe_cut(t, b, k)) return k;
    return 0;
}

void tok_stream_feed(TokStream *s, const char *p, size_t n) {
    if (s->t->kind == TOK_BYTE) {
        ids_reserve(s, n);
        for (size_t i = 0; i < n; i++) s->ids[s->n_ids++] = (unsigned char)p[i];
        return;
    }
    if (s->n + n > s->cap) {
        s->cap = s->n + n + s->cap / 2;
        s->buf = ms_realloc(s->buf, s->cap);
    }
    memcpy(s->buf + s->n, p, n);
    s->n += n;
    if (s->n >= tok_segment_bytes) {
        size_t cut = last_safe_cut(s);
        if (cut) encode_pending(s, cut);
    }
}

void tok_stream_finish(TokStream *s) {
    if (s->t->kind == TOK_BYTE) return;
    if (s->n || !s->started) encode_pending(s, s->n);
}

void tok_stream_free(TokStream *s) {
    free(s->buf);
    free(s->ids);
    memset(s, 0, sizeof *s);
}
