#!/usr/bin/env python3
"""Generate a tiny Hugging Face Llama directory and its PyTorch logits for mslab's importer.

Produces, under tests/reference/hf_tiny/:
  config.json                                  HF LlamaConfig fields (GQA: 4 heads, 2 KV heads, untied,
                                               rope_theta 500, rms_norm_eps 1e-6)
  model-00001-of-00002.safetensors, model-00002-of-00002.safetensors
                                               two shards, mixed dtypes: embeddings, head and attention
                                               F32, MLP BF16, norms F16 (+ a rotary inv_freq to ignore)
  model.safetensors.index.json                 weight_map tensor -> shard
  tokens.i32                                   int32 LE [B][T]
  logits.f32                                   float32 LE [B*T][vocab]

The forward is written the way transformers' modeling_llama does it (rotate_half with cat(freqs,
freqs), repeat_kv, float64 from the stored, rounded values), independently of mslab. safetensors are
written by hand (8-byte LE header length, JSON header, raw little-endian data).

Regenerate with:  /usr/bin/python3 tests/reference/make_hf_reference.py   (needs torch and numpy)
"""
import json
import math
import os
import struct

import numpy as np
import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf_tiny")
DIM, HIDDEN, LAYERS, HEADS, KV_HEADS, VOCAB = 16, 24, 2, 4, 2, 32
HS = DIM // HEADS
THETA, EPS = 500.0, 1e-6
B, T = 2, 9


def main():
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(4321)

    def mat(*s):
        return torch.randn(*s, generator=g, dtype=torch.float32) * 0.3

    def norm(*s):
        return 1.0 + 0.1 * torch.randn(*s, generator=g, dtype=torch.float32)

    tensors = {}  # name -> (dtype, tensor)
    tensors["model.embed_tokens.weight"] = ("F32", mat(VOCAB, DIM))
    for l in range(LAYERS):
        p = f"model.layers.{l}."
        tensors[p + "input_layernorm.weight"] = ("F16", norm(DIM))
        tensors[p + "self_attn.q_proj.weight"] = ("F32", mat(DIM, DIM))
        tensors[p + "self_attn.k_proj.weight"] = ("F32", mat(KV_HEADS * HS, DIM))
        tensors[p + "self_attn.v_proj.weight"] = ("F32", mat(KV_HEADS * HS, DIM))
        tensors[p + "self_attn.o_proj.weight"] = ("F32", mat(DIM, DIM))
        tensors[p + "self_attn.rotary_emb.inv_freq"] = ("F32", torch.zeros(HS // 2))
        tensors[p + "post_attention_layernorm.weight"] = ("F16", norm(DIM))
        tensors[p + "mlp.gate_proj.weight"] = ("BF16", mat(HIDDEN, DIM))
        tensors[p + "mlp.up_proj.weight"] = ("BF16", mat(HIDDEN, DIM))
        tensors[p + "mlp.down_proj.weight"] = ("BF16", mat(DIM, HIDDEN))
    tensors["model.norm.weight"] = ("F16", norm(DIM))
    tensors["lm_head.weight"] = ("F32", mat(VOCAB, DIM))

    def encode(dtype, t):
        if dtype == "F32":
            return t.numpy().astype("<f4").tobytes()
        if dtype == "F16":
            return t.numpy().astype("<f2").tobytes()
        return t.to(torch.bfloat16).view(torch.int16).numpy().astype("<i2").tobytes()

    def stored(dtype, t):  # the values a reader gets back
        if dtype == "F16":
            return t.to(torch.float16).to(torch.float64)
        if dtype == "BF16":
            return t.to(torch.bfloat16).to(torch.float64)
        return t.to(torch.float64)

    names = list(tensors)
    shards = {"model-00001-of-00002.safetensors": [n for n in names if not n.startswith("model.layers.1.") and n != "lm_head.weight" and n != "model.norm.weight"],
              }
    shards["model-00002-of-00002.safetensors"] = [n for n in names if n not in shards["model-00001-of-00002.safetensors"]]
    weight_map = {}
    for fname, members in shards.items():
        header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
        for n in reversed(members):  # data order differs from header order on purpose
            dt, t = tensors[n]
            b = encode(dt, t)
            header[n] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
            blobs.append(b)
            off += len(b)
            weight_map[n] = fname
        h = json.dumps(header).encode()
        h += b" " * ((8 - len(h) % 8) % 8)
        with open(os.path.join(OUT, fname), "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    with open(os.path.join(OUT, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f, indent=1)
    with open(os.path.join(OUT, "config.json"), "w") as f:
        json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": DIM,
                   "intermediate_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
                   "num_key_value_heads": KV_HEADS, "vocab_size": VOCAB, "rms_norm_eps": EPS,
                   "rope_theta": THETA, "tie_word_embeddings": False, "max_position_embeddings": 64,
                   "rope_scaling": None, "hidden_act": "silu", "torch_dtype": "float32"}, f, indent=1)

    w = {n: stored(*tensors[n]) for n in names}
    tokens = torch.randint(0, VOCAB, (B, T), generator=g)

    # modeling_llama, float64
    inv_freq = 1.0 / (THETA ** (torch.arange(0, HS, 2, dtype=torch.float64) / HS))
    pos = torch.arange(T, dtype=torch.float64)
    freqs = torch.outer(pos, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None, None], emb.sin()[None, None]  # [1,1,T,HS]

    def rotate_half(x):
        x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
        return torch.cat((-x2, x1), dim=-1)

    def rms(x, wt):
        return wt * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS))

    x = w["model.embed_tokens.weight"][tokens]
    mask = torch.triu(torch.full((T, T), float("-inf"), dtype=torch.float64), 1)
    for l in range(LAYERS):
        p = f"model.layers.{l}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = (h @ w[p + "self_attn.q_proj.weight"].T).view(B, T, HEADS, HS).transpose(1, 2)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).view(B, T, KV_HEADS, HS).transpose(1, 2)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(B, T, KV_HEADS, HS).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = HEADS // KV_HEADS  # repeat_kv
        k = k[:, :, None].expand(B, KV_HEADS, rep, T, HS).reshape(B, HEADS, T, HS)
        v = v[:, :, None].expand(B, KV_HEADS, rep, T, HS).reshape(B, HEADS, T, HS)
        a = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(HS) + mask, dim=-1) @ v
        x = x + a.transpose(1, 2).reshape(B, T, DIM) @ w[p + "self_attn.o_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        x = x + (torch.nn.functional.silu(h @ w[p + "mlp.gate_proj.weight"].T) *
                 (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    logits = rms(x, w["model.norm.weight"]) @ w["lm_head.weight"].T
    tokens.numpy().astype("<i4").tofile(os.path.join(OUT, "tokens.i32"))
    logits.reshape(B * T, VOCAB).numpy().astype("<f4").tofile(os.path.join(OUT, "logits.f32"))
    print("wrote", OUT)


if __name__ == "__main__":
    main()
