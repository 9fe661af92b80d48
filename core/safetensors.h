// safetensors.h: Hugging Face Llama checkpoints (config.json + *.safetensors) in and out.
//
// Import: hf_read_config reads config.json (hidden_size, num_hidden_layers, num_attention_heads,
// num_key_value_heads, intermediate_size, vocab_size, rms_norm_eps, rope_theta,
// tie_word_embeddings, max_position_embeddings) into a ModelConfig with rope_style ROPE_HALVES:
// HF Llama rotates halves (rotate_half), and its q/k projection rows are already permuted for that
// convention relative to Meta/llama2.c, so the weights load as they are. hf_load reads the tensors
// of every shard (model.safetensors.index.json's weight_map, else every *.safetensors in the
// directory, else model.safetensors) and maps the HF names to the P_* tensors:
//   model.embed_tokens.weight -> wte, model.layers.N.self_attn.{q,k,v,o}_proj.weight -> wq/wk/wv/wo,
//   model.layers.N.mlp.{gate,down,up}_proj.weight -> w1/w2/w3, input_layernorm -> attn_norm,
//   post_attention_layernorm -> ffn_norm, model.norm.weight -> final_norm, lm_head.weight -> wcls.
// dtypes F32, BF16 and F16 are converted to f32; other tensors (rotary inv_freq) are ignored.
// A malformed header, a wrong dtype or shape, a missing tensor or truncated data is an error
// naming the file and the tensor; nothing crashes.
//
// Export: safetensors_export writes dir/config.json and dir/model.safetensors (f32, or bf16 when
// bf16 != 0, rounded to nearest even). An interleaved-RoPE model (mslab's default, llama2.c) has
// its wq/wk rows permuted to the halves layout on the way out, so the export computes the same
// function under HF's rotate_half; a halves model is written bit for bit.
#ifndef MSLAB_SAFETENSORS_H
#define MSLAB_SAFETENSORS_H

#include "model.h"

int hf_read_config(const char *dir, ModelConfig *cfg);
// m created from a config whose shape fields equal the directory's (hf_read_config).
int hf_load(const char *dir, Model *m);
int safetensors_export(const char *dir, const Model *m, int bf16);

// Any model source: a directory (HF Llama), an mslab checkpoint ("MSLABCKP") or a llama2.c .bin.
// model_source_read_config gives its config; model_source_load fills m (created from it, or from a
// config with the same shape fields).
int model_source_read_config(const char *path, ModelConfig *cfg);
int model_source_load(const char *path, Model *m);

#endif
