#!/usr/bin/python3
"""An independent NumPy implementation of MS attention's index lists (pool, score, eligibility,
top-S, merge, local regions; docs/attention.md), written vectorised, with the merge's dedup done
the way the draft's extract_unique_elements does it (unique ids, first occurrence, back in scan
order). Writes q.npy / k.npy (random f32, C order), q_bf16.npy (q as bfloat16 bits in uint16),
one idx_*.npy (int32 [B, H, blocks, width], -1 unused) per case and cases.lua (the configs).
tests/lua/selection_reference.lua compares the engine's attn:index(q, k) with these files, so CI
needs no NumPy. Regenerate: /usr/bin/python3 tests/reference/ms_selection/make_ms_selection.py
"""
import math
import os

import numpy as np

OUT = os.path.dirname(os.path.abspath(__file__))
B, L, H, KVH, D = 2, 70, 4, 2, 8

CASES = [
    ("idx_default.npy", dict(w=4, top=6, merge=2)),
    ("idx_votes.npy", dict(w=4, top=6, merge=2, order="votes", local_groups=2, pool="max",
                           score="cosine")),
    ("idx_group.npy", dict(w=4, top=8, merge=2, select="group", order="score", tail="dense",
                           pool="nmean", score="scaled")),
    ("idx_ratio.npy", dict(w=5, ratio=0.4, merge=1, pool="first")),
]


def pool(x, mode):  # x: [n, D] rows of one region -> [D]
    if mode == "first":
        return x[0].astype(np.float64)
    if mode == "max":
        return x.max(axis=0).astype(np.float64)
    x = x.astype(np.float64)
    if mode == "nmean":
        n = np.sqrt((x * x).sum(axis=1, keepdims=True))
        x = np.where(n > 0, x / np.where(n > 0, n, 1), 0)
    return x.mean(axis=0)


def scores(qv, kb, mode):  # qv [D], kb [e, D] -> [e]
    s = kb @ qv
    if mode == "scaled":
        return s / math.sqrt(D)
    if mode == "cosine":
        nk = np.linalg.norm(kb, axis=1)
        nq = np.linalg.norm(qv)
        return np.where((nk > 0) & (nq > 0), s / np.maximum(nk * nq, 1e-300), 0)
    return s


def ranked(s, n):  # best first, ties to the lower id
    return np.argsort(-s, kind="stable")[:n]


def lists(q, k, c):
    w, M, lg = c["w"], c["merge"], c.get("local_groups", 1)
    N = -(-L // w)
    if "top" in c:
        R = c["top"]
    else:
        R = max(M + 1, math.ceil(c["ratio"] * N - 1e-9))
        R = M * -(-R // M)
    S, G = R - M, M * w
    P = c.get("prefix", R * w)
    first, nblk = P // G, -(-L // G)
    last_dense = c.get("tail") == "dense" and L % G != 0 and nblk - 1 >= first
    width = min(N, max(S + lg * M, first * M, N if last_dense else 0))
    out = -np.ones((B, H, nblk, width), dtype=np.int32)
    mode, smode = c.get("pool", "mean"), c.get("score", "dot")
    for b in range(B):
        for h in range(H):
            kv = k[b, :, h // (H // KVH)]
            kbar = np.stack([pool(kv[r * w:min(L, r * w + w)], mode) for r in range(N)])
            for blk in range(nblk):
                g0, gend = blk * M, min(N, blk * M + M)
                if blk < first or (blk == nblk - 1 and last_dense):
                    lst = list(range(gend))
                else:
                    local0 = max(0, g0 - (lg - 1) * M)
                    if c.get("select") == "group":
                        units = [(g0 * w, min(L, gend * w), local0)]
                    else:
                        units = [(g * w, min(L, g * w + w), max(0, min(g - M + 1, local0)))
                                 for g in range(g0, gend)]
                    ids = -np.ones((len(units), S), dtype=np.int64)
                    val = np.zeros((len(units), S))
                    for m, (t0, t1, e) in enumerate(units):
                        s = scores(pool(q[b, t0:t1, h], mode), kbar[:e], smode)
                        top = ranked(s, S)
                        ids[m, :len(top)] = top
                        val[m, :len(top)] = s[top]
                    scan, sval = ids.T.ravel(), val.T.ravel()  # rank-major
                    keep = scan >= 0
                    scan, sval = scan[keep], sval[keep]
                    uniq, first_at = np.unique(scan, return_index=True)
                    order = uniq[np.argsort(first_at, kind="stable")]  # first occurrences, in scan order
                    rank = {int(r): i for i, r in enumerate(order)}
                    if c.get("order", "rank") != "rank":
                        key = {int(r): 0.0 for r in order}
                        for r, v in zip(scan, sval):
                            key[int(r)] += v if c["order"] == "score" else 1.0
                        order = sorted(order, key=lambda r: (-key[int(r)], rank[int(r)]))
                    lst = [int(r) for r in order[:S]] + list(range(local0, gend))
                out[b, h, blk, :len(lst)] = lst
    return out


def lua_value(v):
    return f'"{v}"' if isinstance(v, str) else repr(v)


def main():
    rng = np.random.default_rng(2410)
    q = rng.standard_normal((B, L, H, D)).astype(np.float32)
    k = rng.standard_normal((B, L, KVH, D)).astype(np.float32)
    np.save(os.path.join(OUT, "q.npy"), q)
    np.save(os.path.join(OUT, "k.npy"), k)
    bits = q.view(np.uint32)
    bf16 = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)  # round to nearest even
    np.save(os.path.join(OUT, "q_bf16.npy"), bf16)
    lines = ["-- written by make_ms_selection.py: the configs of the idx_*.npy files", "return {"]
    for name, c in CASES:
        np.save(os.path.join(OUT, name), lists(q, k, c))
        cfg = ", ".join(f"{key} = {lua_value(v)}" for key, v in {"kind": "ms", **c}.items())
        lines.append(f'  {{ file = "{name}", cfg = {{ {cfg} }} }},')
    lines.append("}")
    with open(os.path.join(OUT, "cases.lua"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
