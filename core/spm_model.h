// spm_model.h: SentencePiece .model files (a protobuf ModelProto) as llama2.c tokenizer.bin records.
//
// Only what the tokenizer needs is parsed: ModelProto field 1 `pieces` (repeated SentencePiece), and
// in each piece field 1 `piece` (string), 2 `score` (float) and 3 `type` (enum); every other field
// is skipped by its wire type. The records are written as llama2.c's tokenizer.py export writes
// them: '▁' (U+2581) becomes ' ', the CONTROL pieces <s> and </s> become "\n<s>\n" and "\n</s>\n",
// the scores are kept. A .model therefore opens as the same tokenizer (same ids, same id string) as
// the tokenizer.bin exported from it.
#ifndef MSLAB_SPM_MODEL_H
#define MSLAB_SPM_MODEL_H

#include <stdio.h>

// 1 when path names a SentencePiece model (ends in ".model").
int spm_is_model_path(const char *path);
// The tokenizer.bin bytes of the model in an anonymous temporary file, positioned at its start;
// NULL with ms_error() naming the file (and the piece) when it is missing or malformed.
FILE *spm_model_open_as_bin(const char *path);

#endif
