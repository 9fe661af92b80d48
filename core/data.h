// data.h: corpora, their tokenizer (core/tokenizer.h), the on-disk token cache and training batches.
// A corpus is a list of UTF-8 .txt files (or directories of them, read recursively in sorted order);
// each file is one document, and documents are ordered by path (all of them sorted together; a file
// reached twice counts once). Files are streamed in chunks, never loaded whole into one string.
// Split: with >= 2 documents, every document goes wholly to train or eval (the eval set is the
// documents a seeded hash picks, about eval_frac of the bytes, at least one); with one document, its
// last eval_frac of tokens is the eval set. Tokens are cached on disk in cache_dir keyed by the
// hash of (tokenizer, file contents), so a second run does not re-tokenize.
#ifndef MSLAB_DATA_H
#define MSLAB_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

typedef struct {
    const char *const *paths; // files or directories
    int n_paths;
    const char *tokenizer;    // "byte" (vocab 256), or the path of a llama2.c tokenizer.bin (vocab:
                              // every record in the file; each document starts with BOS)
    double eval_frac;         // in (0, 1)
    const char *cache_dir;    // NULL: ".mslab-cache" (created if missing); "": no cache
    uint64_t split_seed;
} CorpusSpec;

typedef struct {
    uint16_t *train; size_t n_train; // tokens, documents concatenated
    uint16_t *eval;  size_t n_eval;
    int vocab;
    int n_docs, n_eval_docs;         // n_eval_docs: whole documents in eval (0 with one document)
    size_t *train_doc_start, *eval_doc_start; // where each document starts in train / eval
    int n_train_starts, n_eval_starts;         // (the one-document split: one start each)
    char *tokenizer;                 // the spec's tokenizer ("byte" or a path), for tokenizer_open
    uint64_t hash;                   // content hash of the whole corpus (tokenizer included)
    size_t bytes;                    // total bytes read
} Corpus;

// Errors name the offending file: missing, unreadable, empty, invalid UTF-8 (with byte offset),
// no documents. Returns 0 or -1 with ms_error().
int corpus_open(Corpus *c, const CorpusSpec *spec);
void corpus_close(Corpus *c);

// B random contiguous windows of T+1 tokens from the training tokens: inputs[b*T+t] = w[t],
// targets[b*T+t] = w[t+1]. Requires n_train > T.
void corpus_batch(const Corpus *c, Rng *rng, int B, int T, int *inputs, int *targets);

// Files are read this many bytes at a time (default 1 MiB). Added so tests can make chunks tiny and
// put every UTF-8 sequence across a chunk boundary; nothing else should need to change it.
extern size_t corpus_chunk_bytes;

// Byte tokenizer: one token per byte.
size_t byte_encode(const char *text, size_t n, int *out);

#endif
