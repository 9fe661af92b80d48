// tokenizer.h: text <-> token ids, two kinds behind one interface.
//  - "byte": one token per byte, vocab 256, no BOS/EOS.
//  - a llama2.c tokenizer.bin (SentencePiece BPE pieces and scores, ../shared/data/FORMATS.md §2),
//    encoded exactly as llama2.c's encode(): optional BOS, the dummy-prefix " " piece (non-empty
//    text), one symbol per UTF-8 code point that is a piece (else one byte token per byte, id =
//    byte + 3), then repeatedly merge the adjacent pair whose concatenation is the highest-scoring
//    piece (leftmost on ties; a score must be above -1e10), optional EOS. Merging runs on a linked
//    list with a heap of candidate pairs, region by region between places no piece can span (see
//    the stream below), so a 1 MB text takes about 0.2 s.
// Ids 0 = <unk>, 1 = BOS, 2 = EOS, 3..258 = bytes, for every tokenizer.bin.
#ifndef MSLAB_TOKENIZER_H
#define MSLAB_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

enum { TOK_BYTE, TOK_BPE };

typedef struct {
    int kind;          // TOK_BYTE or TOK_BPE
    int vocab;
    int bos, eos;      // ids, -1 when the tokenizer has none (byte)
    char id[64];       // names the exact encoding ("byte", "bpe-<fnv64 of the records>-<vocab>"):
                       // token-cache keys and corpus hashes include it
    // TOK_BPE
    char *path;
    char **piece;      // [vocab] NUL-terminated copies
    int *piece_len;    // [vocab]
    float *score;      // [vocab]
    uint64_t *piece_hash; // [vocab] FNV-1a of each piece (concatenations hash on from it)
    int *table;        // open-addressing hash table of ids, -1 empty, table_mask + 1 slots
    uint32_t table_mask;
    int space_id;      // the " " piece (dummy prefix), -1 if absent
    uint8_t *char_piece;  // [128] 1: this ASCII byte alone is a piece
    uint8_t *pair_seen;   // [256 * 256 / 8] bits: byte pair (a, b) occurs inside some piece
} Tokenizer;

// spec: "byte", or the path of a tokenizer.bin. vocab: how many pieces to read (the file does not
// store it; a model gives it), or <= 0 to read every record up to the end of the file. Errors name
// the file: missing, truncated (with the piece where it ends), a bad piece length.
int tokenizer_open(Tokenizer *t, const char *spec, int vocab);
void tokenizer_close(Tokenizer *t);

// The id of the piece with exactly these bytes, or -1 (byte tokenizer: the byte when n == 1).
int tokenizer_lookup(const Tokenizer *t, const char *s, size_t n);

// Encodes text[n] into out, which must hold n + 3 ids; returns the count. bos / eos: add them
// (ignored by the byte tokenizer, which has none).
size_t tokenizer_encode(const Tokenizer *t, const char *text, size_t n, int bos, int eos, int *out);

// The bytes token `id` prints as after `prev` (llama2.c decode): a piece following BOS loses one
// leading space; "<0xHH>" pieces are that raw byte. Other pieces (BOS and EOS included) are their
// text. *len gets the byte count (a raw byte may be 0).
const char *tokenizer_piece(const Tokenizer *t, int prev, int id, size_t *len);

// The text of ids[n] (malloc'd, NUL-terminated; *len without the NUL): pieces as tokenizer_piece,
// BOS and EOS give nothing. For the text of tokenizer_encode(text, bos=1) this is text again.
char *tokenizer_decode(const Tokenizer *t, const int *ids, size_t n, size_t *len);

// Streaming encode of one document fed in chunks (corpora): the same ids as one tokenizer_encode
// of the whole text with bos, eos = 0. BPE text is buffered and encoded in segments cut only
// between two ASCII bytes that are pieces on their own and never adjacent inside any piece, so no
// token can span a cut and the result is exact; memory stays near tok_segment_bytes of text.
extern size_t tok_segment_bytes; // 256 KiB; tests make it tiny to put many cuts in a short text
typedef struct {
    const Tokenizer *t;
    int bos;
    int started;       // the first segment (BOS, dummy prefix) has been encoded
    char *buf;         // pending text
    size_t n, cap;
    size_t scanned;    // buf[0, scanned) holds no cut
    int *ids;          // ids ready for the caller, who empties the array (n_ids = 0)
    size_t n_ids, cap_ids;
} TokStream;

// s must be zeroed before its first begin; a later begin (next document) reuses its buffers.
void tok_stream_begin(TokStream *s, const Tokenizer *t, int bos);
void tok_stream_feed(TokStream *s, const char *p, size_t n);
void tok_stream_finish(TokStream *s);
void tok_stream_free(TokStream *s);

#endif
