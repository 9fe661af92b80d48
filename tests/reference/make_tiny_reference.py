#!/usr/bin/env python3
"""Generate a tiny PyTorch peer reference for mslab.

Produces, under tests/reference/tiny/:
  tiny_tied.bin, tiny_untied.bin      llama2.c "version 0" checkpoints
  tokens.i32, targets.i32             int32 LE, [B][T] row-major (targets -1 = ignored)
  logits_<variant>_<rope>.f32         float32 LE, [B*T][vocab] row-major
  expected.txt                        "<variant> <rope> <mean_loss %.9f>" per case

The reference forward runs in float64 (weights are float32 values cast to
float64). The interleaved forward is cross-checked against an independent
token-by-token NumPy implementation with a KV cache that reads the weights
back from the written .bin files.

Regenerate with:  /usr/bin/python3 tests/reference/make_tiny_reference.py
(needs torch and numpy; CI only consumes the committed outputs).
"""
import math
import os
import struct

import numpy as np
import torch

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny")

DIM, HIDDEN, N_LAYERS, N_HEADS, N_KV_HEADS, VOCAB, SEQ_LEN = 24, 40, 2, 4, 2, 40, 16
HEAD_SIZE = DIM // N_HEADS
KV_DIM = N_KV_HEADS * HEAD_SIZE
B, T = 2, 12
EPS = 1e-5
IGNORE = -1

# order of tensors in a llama2.c v0 file (before the freq tables)
V0_ORDER = ["tok_emb", "rms_att", "wq", "wk", "wv", "wo", "rms_ffn",
            "w1", "w2", "w3", "rms_final"]


# ----------------------------------------------------------------------------
# model construction

def build_weights():
    torch.manual_seed(1234)
    f32 = torch.float32

    def mat(*shape):
        return torch.randn(*shape, dtype=f32) * 0.3

    def norm(*shape):
        return 1.0 + 0.1 * torch.randn(*shape, dtype=f32)

    w = {}
    w["tok_emb"] = mat(VOCAB, DIM)
    w["rms_att"] = norm(N_LAYERS, DIM)
    w["wq"] = mat(N_LAYERS, DIM, DIM)
    w["wk"] = mat(N_LAYERS, KV_DIM, DIM)
    w["wv"] = mat(N_LAYERS, KV_DIM, DIM)
    w["wo"] = mat(N_LAYERS, DIM, DIM)
    w["rms_ffn"] = norm(N_LAYERS, DIM)
    w["w1"] = mat(N_LAYERS, HIDDEN, DIM)
    w["w2"] = mat(N_LAYERS, DIM, HIDDEN)
    w["w3"] = mat(N_LAYERS, HIDDEN, DIM)
    w["rms_final"] = norm(DIM)
    # drawn last, so the tied model is exactly the untied one without wcls
    wcls_untied = mat(VOCAB, DIM)

    tied = dict(w)
    tied["wcls"] = w["tok_emb"]
    untied = dict(w)
    untied["wcls"] = wcls_untied
    return {"tied": (tied, True), "untied": (untied, False)}


def freq_tables():
    # as llama2.c export.py precompute_freqs_cis, in float32
    freqs = 1.0 / (10000.0 ** (torch.arange(0, HEAD_SIZE, 2)[: HEAD_SIZE // 2].float() / HEAD_SIZE))
    t = torch.arange(SEQ_LEN).float()
    ang = torch.outer(t, freqs)  # [seq_len][head_size/2]
    return torch.cos(ang), torch.sin(ang)


def write_v0(path, w, shared):
    header = struct.pack("<7i", DIM, HIDDEN, N_LAYERS, N_HEADS, N_KV_HEADS,
                         VOCAB if shared else -VOCAB, SEQ_LEN)
    cos, sin = freq_tables()
    with open(path, "wb") as f:
        f.write(header)
        for name in V0_ORDER:
            f.write(w[name].contiguous().numpy().astype("<f4").tobytes())
        f.write(cos.numpy().astype("<f4").tobytes())
        f.write(sin.numpy().astype("<f4").tobytes())
        if not shared:
            f.write(w["wcls"].contiguous().numpy().astype("<f4").tobytes())


# ----------------------------------------------------------------------------
# batched PyTorch reference forward (float64)

def rope_freqs(dtype):
    i = torch.arange(HEAD_SIZE // 2, dtype=dtype)
    inv = 10000.0 ** (-2.0 * i / HEAD_SIZE)          # [hs/2]
    pos = torch.arange(T, dtype=dtype)
    ang = pos[:, None] * inv[None, :]                # [T][hs/2]
    return torch.cos(ang), torch.sin(ang)


def apply_rope(x, rope):
    """x: [B][T][H][hs]. Rotates pair i by angle pos*10000^(-2i/hs)."""
    cos, sin = rope_freqs(x.dtype)
    cos = cos[None, :, None, :]
    sin = sin[None, :, None, :]
    if rope == "interleaved":
        a, b = x[..., 0::2], x[..., 1::2]              # pairs (2i, 2i+1)
        ra = a * cos - b * sin
        rb = a * sin + b * cos
        return torch.stack([ra, rb], dim=-1).reshape(x.shape)
    if rope == "halves":
        h = HEAD_SIZE // 2
        a, b = x[..., :h], x[..., h:]                  # pairs (i, i+hs/2)
        ra = a * cos - b * sin
        rb = a * sin + b * cos
        return torch.cat([ra, rb], dim=-1)
    raise ValueError(rope)


def hf_rotate_half_rope(x):
    """HF Llama apply_rotary_pos_emb, written as HF does it, for a self-check
    of the "halves" branch: x*cos + rotate_half(x)*sin with cat(freqs, freqs)."""
    cos, sin = rope_freqs(x.dtype)
    cos = torch.cat([cos, cos], -1)[None, :, None, :]
    sin = torch.cat([sin, sin], -1)[None, :, None, :]
    h = HEAD_SIZE // 2
    rot = torch.cat([-x[..., h:], x[..., :h]], -1)
    return x * cos + rot * sin


def rmsnorm(x, w):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + EPS) * w


def torch_forward(w32, tokens, rope):
    w = {k: v.to(torch.float64) for k, v in w32.items()}
    x = w["tok_emb"][tokens]                           # [B][T][dim]
    rep = N_HEADS // N_KV_HEADS
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    for l in range(N_LAYERS):
        h = rmsnorm(x, w["rms_att"][l])
        q = (h @ w["wq"][l].T).view(B, T, N_HEADS, HEAD_SIZE)
        k = (h @ w["wk"][l].T).view(B, T, N_KV_HEADS, HEAD_SIZE)
        v = (h @ w["wv"][l].T).view(B, T, N_KV_HEADS, HEAD_SIZE)
        q = apply_rope(q, rope)
        k = apply_rope(k, rope)
        # query head hq uses kv head hq // rep
        k = k.repeat_interleave(rep, dim=2)
        v = v.repeat_interleave(rep, dim=2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))   # [B][H][T][hs]
        att = (q @ k.transpose(-1, -2)) / math.sqrt(HEAD_SIZE)
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        o = (att @ v).transpose(1, 2).reshape(B, T, DIM)
        x = x + o @ w["wo"][l].T
        h = rmsnorm(x, w["rms_ffn"][l])
        g = h @ w["w1"][l].T
        u = h @ w["w3"][l].T
        x = x + (torch.nn.functional.silu(g) * u) @ w["w2"][l].T
    x = rmsnorm(x, w["rms_final"])
    return x @ w["wcls"].T                             # [B][T][vocab]


def mean_loss(logits, targets):
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, VOCAB), targets.reshape(-1).long(),
        ignore_index=IGNORE, reduction="mean").item()


# ----------------------------------------------------------------------------
# independent NumPy token-by-token implementation (reads the .bin file)

def np_load_v0(path):
    raw = open(path, "rb").read()
    dim, hidden, nl, nh, nkv, vocab, seq_len = struct.unpack("<7i", raw[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    hs = dim // nh
    kvd = nkv * hs
    data = np.frombuffer(raw, dtype="<f4", offset=28).astype(np.float64)
    off = 0

    def take(*shape):
        nonlocal off
        n = int(np.prod(shape))
        a = data[off:off + n].reshape(shape)
        off += n
        return a

    m = dict(dim=dim, hidden=hidden, nl=nl, nh=nh, nkv=nkv, vocab=vocab, hs=hs)
    m["emb"] = take(vocab, dim)
    m["rms_att"] = take(nl, dim)
    m["wq"] = take(nl, dim, dim)
    m["wk"] = take(nl, kvd, dim)
    m["wv"] = take(nl, kvd, dim)
    m["wo"] = take(nl, dim, dim)
    m["rms_ffn"] = take(nl, dim)
    m["w1"] = take(nl, hidden, dim)
    m["w2"] = take(nl, dim, hidden)
    m["w3"] = take(nl, hidden, dim)
    m["rms_final"] = take(dim)
    take(seq_len, hs // 2)  # freq_cis_real, skipped
    take(seq_len, hs // 2)  # freq_cis_imag, skipped
    m["wcls"] = m["emb"] if shared else take(vocab, dim)
    assert off == data.size, (off, data.size)
    return m


def np_forward_sequence(m, toks):
    dim, hs, nh, nkv, nl = m["dim"], m["hs"], m["nh"], m["nkv"], m["nl"]
    group = nh // nkv
    kcache = np.zeros((nl, len(toks), nkv * hs))
    vcache = np.zeros((nl, len(toks), nkv * hs))

    def rms(x, w):
        return x / np.sqrt(np.dot(x, x) / x.size + EPS) * w

    def rope_inplace(vec, pos):
        for start in range(0, vec.size, hs):
            for i in range(hs // 2):
                theta = pos * 10000.0 ** (-2.0 * i / hs)
                c, s = math.cos(theta), math.sin(theta)
                a, b = vec[start + 2 * i], vec[start + 2 * i + 1]
                vec[start + 2 * i] = a * c - b * s
                vec[start + 2 * i + 1] = a * s + b * c

    out = []
    for pos, tok in enumerate(toks):
        x = m["emb"][tok].copy()
        for l in range(nl):
            h = rms(x, m["rms_att"][l])
            q = m["wq"][l] @ h
            k = m["wk"][l] @ h
            v = m["wv"][l] @ h
            rope_inplace(q, pos)
            rope_inplace(k, pos)
            kcache[l, pos] = k
            vcache[l, pos] = v
            att_out = np.zeros(dim)
            for hq in range(nh):
                kh = hq // group
                qh = q[hq * hs:(hq + 1) * hs]
                scores = np.array([
                    np.dot(qh, kcache[l, p, kh * hs:(kh + 1) * hs]) / math.sqrt(hs)
                    for p in range(pos + 1)])
                scores = np.exp(scores - scores.max())
                scores /= scores.sum()
                acc = np.zeros(hs)
                for p in range(pos + 1):
                    acc += scores[p] * vcache[l, p, kh * hs:(kh + 1) * hs]
                att_out[hq * hs:(hq + 1) * hs] = acc
            x = x + m["wo"][l] @ att_out
            h = rms(x, m["rms_ffn"][l])
            g = m["w1"][l] @ h
            u = m["w3"][l] @ h
            x = x + m["w2"][l] @ ((g / (1.0 + np.exp(-g))) * u)
        x = rms(x, m["rms_final"])
        out.append(m["wcls"] @ x)
    return np.stack(out)


# ----------------------------------------------------------------------------

def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    probe = torch.randn(B, T, N_HEADS, HEAD_SIZE, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(7))
    assert torch.allclose(apply_rope(probe, "halves"), hf_rotate_half_rope(probe),
                          rtol=0, atol=1e-14)
    models = build_weights()

    gen = torch.Generator().manual_seed(4321)
    tokens = torch.randint(0, VOCAB, (B, T), generator=gen, dtype=torch.int64)
    targets = torch.randint(0, VOCAB, (B, T), generator=gen, dtype=torch.int64)
    targets[0, 3] = IGNORE
    targets[1, 7] = IGNORE
    tokens.numpy().astype("<i4").tofile(os.path.join(OUT_DIR, "tokens.i32"))
    targets.numpy().astype("<i4").tofile(os.path.join(OUT_DIR, "targets.i32"))

    lines = []
    max_diff = 0.0
    for variant in ("tied", "untied"):
        w, shared = models[variant]
        path = os.path.join(OUT_DIR, f"tiny_{variant}.bin")
        write_v0(path, w, shared)
        n_params = sum(w[k].numel() for k in V0_ORDER) + (0 if shared else VOCAB * DIM)
        expect_size = 28 + 4 * (n_params + 2 * SEQ_LEN * (HEAD_SIZE // 2))
        assert os.path.getsize(path) == expect_size, (path, os.path.getsize(path), expect_size)

        for rope in ("interleaved", "halves"):
            logits = torch_forward(w, tokens, rope)
            loss = mean_loss(logits, targets)
            logits.reshape(B * T, VOCAB).numpy().astype("<f4").tofile(
                os.path.join(OUT_DIR, f"logits_{variant}_{rope}.f32"))
            lines.append(f"{variant} {rope} {loss:.9f}")

            if rope == "interleaved":
                m = np_load_v0(path)
                ref = np.stack([np_forward_sequence(m, tokens[b].tolist()) for b in range(B)])
                d = float(np.abs(ref - logits.numpy()).max())
                # independent loss from the numpy logits
                lp = ref.reshape(-1, VOCAB)
                lse = np.log(np.exp(lp - lp.max(1, keepdims=True)).sum(1)) + lp.max(1)
                tg = targets.reshape(-1).numpy()
                keep = tg != IGNORE
                np_loss = float(np.mean(lse[keep] - lp[keep.nonzero()[0], tg[keep]]))
                print(f"cross-check {variant}: max |logit diff| = {d:.3e}, "
                      f"loss torch {loss:.12f} numpy {np_loss:.12f}")
                assert d < 1e-9, d
                assert abs(np_loss - loss) < 1e-9
                max_diff = max(max_diff, d)
            else:
                # sanity: the two RoPE conventions must actually differ
                other = torch_forward(w, tokens, "interleaved")
                assert float((other - logits).abs().max()) > 1e-3

    with open(os.path.join(OUT_DIR, "expected.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"max cross-check diff: {max_diff:.3e}")


if __name__ == "__main__":
    main()
