// checkpoint.h: the mslab checkpoint format and the llama2.c importer.
//
// mslab format, little-endian:
//   "MSLABCKP" (8 bytes) | u32 version (1) | u32 header_bytes (96) | header | payload | u64 checksum
//   header: ModelConfig fields as i32/f32 in declaration order, i64 step, u64 rng[4],
//           u64 n_params, u32 has_optimizer
//   payload: params f32[n_params], then (if has_optimizer) adam m f32[n], adam v f32[n]
//   checksum: FNV-1a 64 of every byte before it (magic, header and payload; changed from "of the
//   payload" so that a corrupted step, rng or config is caught too)
// Loading checks magic, version, sizes against the file length and the checksum, so a truncated,
// corrupt or wrong-version file is a clear error naming the file, never a crash.
#ifndef MSLAB_CHECKPOINT_H
#define MSLAB_CHECKPOINT_H

#include <stdint.h>

#include "common.h"
#include "model.h"

#define CHECKPOINT_VERSION 1

typedef struct {
    int64_t step;
    Rng rng;
    float *adam_m, *adam_v; // host arrays of model_num_params elements, or NULL
} TrainState;

// Writes atomically: path.tmp, fsync, rename, fsync of the directory. Creates missing parent
// directories. has_optimizer is set when st->adam_m and st->adam_v are both non-NULL; st may be NULL
// (step 0, rng zero, no optimizer).
int checkpoint_save(const char *path, const Model *m, const TrainState *st);
// Reads the config only (to create the model before loading).
int checkpoint_read_config(const char *path, ModelConfig *cfg);
// Loads params into m (whose config must equal the file's) and, if st is non-NULL, the train state
// (st->adam_m / adam_v allocated by the caller, or NULL to skip; when the file holds no optimizer
// state they are zeroed, i.e. a fresh Adam). The checksum is verified before anything is written
// into m or st, so a corrupt or mismatched file leaves them untouched.
int checkpoint_load(const char *path, Model *m, TrainState *st);

// llama2.c "version 0" checkpoints (../shared/data/FORMATS.md section 1): reads the header into
// cfg (interleaved RoPE, base 10000, eps 1e-5) and, when m is non-NULL and created from that cfg,
// the weights. llama2c_load compares only the shape fields (dim, layers, heads, kv_heads, ffn,
// vocab, tied) with m->cfg, so a model built with another seq_len / rope_base can load the weights.
int llama2c_read_config(const char *path, ModelConfig *cfg);
int llama2c_load(const char *path, Model *m);

#endif
