// spm_model.c: a minimal protobuf reader for SentencePiece ModelProto pieces (see spm_model.h).
#include "spm_model.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

int spm_is_model_path(const char *path) {
    size_t n = path ? strlen(path) : 0;
    return n > 6 && !strcmp(path + n - 6, ".model");
}

typedef struct {
    const unsigned char *p, *e;
} Pb;

static int pb_varint(Pb *b, uint64_t *v) {
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (b->p >= b->e) return -1;
        unsigned char c = *b->p++;
        *v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) return 0;
    }
    return -1;
}

// Skips a field of wire type wt (the key already read). -1 when malformed or truncated.
static int pb_skip(Pb *b, int wt) {
    uint64_t v;
    switch (wt) {
    case 0: return pb_varint(b, &v);
    case 1: if (b->e - b->p < 8) return -1; b->p += 8; return 0;
    case 5: if (b->e - b->p < 4) return -1; b->p += 4; return 0;
    case 2:
        if (pb_varint(b, &v) || v > (uint64_t)(b->e - b->p)) return -1;
        b->p += v;
        return 0;
    default: return -1; // groups (3, 4) are not used by sentencepiece_model.proto
    }
}

static int put(FILE *f, const void *p, size_t n) { return fwrite(p, 1, n, f) == n ? 0 : -1; }

FILE *spm_model_open_as_bin(const char *path) {
    FILE *in = fopen(path, "rb");
    if (!in) {
        ms_fail("tokenizer %s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0, k;
    unsigned char *buf = ms_malloc(cap);
    while ((k = fread(buf + n, 1, cap - n, in)) > 0)
        if ((n += k) == cap) buf = ms_realloc(buf, cap *= 2);
    fclose(in);
    FILE *out = tmpfile();
    if (!out) {
        free(buf);
        ms_fail("tokenizer %s: cannot create a temporary file: %s", path, strerror(errno));
        return NULL;
    }
    uint32_t max_len = 0;
    put(out, &max_len, 4); // patched below
    Pb b = {buf, buf + n};
    int count = 0, bad = 0;
    int64_t spec_vocab = -1; // trainer_spec.vocab_size (ModelProto field 2, TrainerSpec field 4)
    char *piece = ms_malloc(1);
    while (b.p < b.e && !bad) {
        uint64_t key;
        if (pb_varint(&b, &key)) { bad = 1; break; }
        int field = (int)(key >> 3), wt = (int)(key & 7);
        if (field == 2 && wt == 2) {
            uint64_t tl, k2, v;
            if (pb_varint(&b, &tl) || tl > (uint64_t)(b.e - b.p)) { bad = 1; break; }
            Pb t = {b.p, b.p + tl};
            b.p += tl;
            while (t.p < t.e && !bad) {
                if (pb_varint(&t, &k2)) bad = 1;
                else if ((k2 >> 3) == 4 && (k2 & 7) == 0) {
                    if (pb_varint(&t, &v)) bad = 1;
                    else spec_vocab = (int64_t)v;
                } else if (pb_skip(&t, (int)(k2 & 7))) bad = 1;
            }
            continue;
        }
        if (field != 1 || wt != 2) {
            if (pb_skip(&b, wt)) bad = 1;
            continue;
        }
        uint64_t len;
        if (pb_varint(&b, &len) || len > (uint64_t)(b.e - b.p)) { bad = 1; break; }
        Pb s = {b.p, b.p + len};
        b.p += len;
        const unsigned char *text = NULL;
        uint64_t text_len = 0, type = 1; // NORMAL
        float score = 0;
        while (s.p < s.e) {
            uint64_t k2, v;
            if (pb_varint(&s, &k2)) { bad = 1; break; }
            int f2 = (int)(k2 >> 3), w2 = (int)(k2 & 7);
            if (f2 == 1 && w2 == 2) {
                if (pb_varint(&s, &text_len) || text_len > (uint64_t)(s.e - s.p) || text_len > 65536) { bad = 1; break; }
                text = s.p;
                s.p += text_len;
            } else if (f2 == 2 && w2 == 5) {
                if (s.e - s.p < 4) { bad = 1; break; }
                memcpy(&score, s.p, 4);
                s.p += 4;
            } else if (f2 == 3 && w2 == 0) {
                if (pb_varint(&s, &v)) { bad = 1; break; }
                type = v;
            } else if (pb_skip(&s, w2)) {
                bad = 1;
                break;
            }
        }
        if (bad) break;
        if (!text) {
            bad = 1;
            break;
        }
        // '▁' (e2 96 81) -> ' '; <s> / </s> control pieces as llama2.c writes them
        piece = ms_realloc(piece, text_len + 8);
        size_t m = 0;
        if (type == 3 && text_len == 3 && !memcmp(text, "<s>", 3)) m = (size_t)sprintf(piece, "\n<s>\n");
        else if (type == 3 && text_len == 4 && !memcmp(text, "</s>", 4)) m = (size_t)sprintf(piece, "\n</s>\n");
        else
            for (uint64_t i = 0; i < text_len; i++) {
                if (i + 2 < text_len && text[i] == 0xe2 && text[i + 1] == 0x96 && text[i + 2] == 0x81) {
                    piece[m++] = ' ';
                    i += 2;
                } else {
                    piece[m++] = (char)text[i];
                }
            }
        int32_t l32 = (int32_t)m;
        if (m > max_len) max_len = (uint32_t)m;
        if (put(out, &score, 4) || put(out, &l32, 4) || put(out, piece, m)) {
            free(buf), free(piece), fclose(out);
            ms_fail("tokenizer %s: cannot write the temporary file", path);
            return NULL;
        }
        count++;
    }
    free(buf);
    free(piece);
    if (!bad && count && spec_vocab != count) {
        fclose(out);
        if (spec_vocab < 0) ms_fail("tokenizer %s: truncated SentencePiece model: %d pieces and no trainer_spec", path, count);
        else ms_fail("tokenizer %s: truncated SentencePiece model: %d pieces, trainer_spec.vocab_size %lld", path, count, (long long)spec_vocab);
        return NULL;
    }
    if (bad || !count) {
        fclose(out);
        if (bad) ms_fail("tokenizer %s: malformed or truncated SentencePiece model (in piece %d, byte %ld)",
                         path, count, (long)(b.p - (b.e - n)));
        else ms_fail("tokenizer %s: not a SentencePiece model (no pieces)", path);
        return NULL;
    }
    rewind(out);
    put(out, &max_len, 4);
    fflush(out);
    rewind(out);
    return out;
}
