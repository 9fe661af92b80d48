-- ablate_ms.lua: MS attention's knobs against dense attention and the sparse baselines, on a model
-- small enough for a laptop (a few minutes on 2 cores). The MS sizes are the paper's proportions
-- scaled down: regions of w = 8 tokens, groups of merge = 2 regions, top = 8 regions per group, so
-- the first 64 tokens are dense and every later group of 16 queries sees 64 keys (at seq 256 the
-- kernel computes about half of the causal pairs). Each run records its realised sparsity and
-- attention FLOPs per token in results.db; ms and s2 evaluate dense (the draft's protocol), the
-- others with their own sparsity.
--   ./mslab run experiments/ablate_ms.lua [-- steps]
--   ./mslab query "SELECT r.name, p.value AS sparsity FROM runs r JOIN last_metrics p ON p.run_id = r.id WHERE p.name = 'attn.sparsity'"
--   ./mslab plot loss --where "r.name LIKE 'ablate-%'"
local ms = require "mslab"

local text = ms.corpus { path = "data/kjv.txt", tokenizer = "byte", eval = 0.1 }
local steps = tonumber(arg[1]) or 300
local seq = 256

local MS = { kind = "ms", w = 8, top = 8, merge = 2 }
local function with(over)
  local c = {}
  for k, v in pairs(MS) do c[k] = v end
  for k, v in pairs(over) do c[k] = v or nil end -- false removes a knob
  return c
end

local variants = {
  { "dense", { kind = "dense" } },
  { "ms", MS },
  { "ms-merge1", with { merge = 1, top = 4 } },        -- no merging: each region picks its own 3
  { "ms-votes", with { order = "votes" } },
  { "ms-group", with { select = "group" } },           -- the group's mean query scores once
  { "ms-max", with { pool = "max", score = "cosine" } },
  { "ms-local2", with { local_groups = 2, top = 10 } }, -- own + previous group, same selected count
  { "ms-reindexed", with { positions = "reindexed", select_on = "unrotated" } }, -- pre-training path
  { "ms-ratio", with { top = false, ratio = 0.5 } }, -- top from the length: half the regions
  { "ms-dense-first", with { layers = { [1] = { kind = "dense" } } } },
  { "moba", { kind = "moba", block = 32, top = 2 } },
  { "s2", { kind = "s2", ratio = 0.25 } },
  { "window", { kind = "window", window = 64 } },
}

local rows = {}
for _, v in ipairs(variants) do
  local r = ms.run {
    name = "ablate-" .. v[1], data = text, seed = 1,
    model = { dim = 64, layers = 2, heads = 4, kv_heads = 2, ffn = 176 },
    attention = v[2],
    train = { seq = seq, batch = 8, steps = steps, lr = 3e-3, warmup = 20, log_every = 25 },
    eval = { ppl = { lengths = { seq, 4 * seq }, max_tokens = 8192 } },
  }
  rows[#rows + 1] = { v[1], r }
end

print(string.format("\n%-16s %8s %12s %9s %9s %9s %9s", "variant", "pairs", "attn MF/tok",
  "eval loss", "ppl@" .. seq, "ppl@" .. 4 * seq, "tok/s"))
for _, row in ipairs(rows) do
  local name, r = row[1], row[2]
  print(string.format("%-16s %8.3f %12.3f %9.4f %9.3f %9.3f %9.0f", name, r.attn_sparsity,
    r.attn_flops_per_token / 1e6, r.eval_loss or 0 / 0, r.ppl[seq] or 0 / 0,
    r.ppl[4 * seq] or 0 / 0, r.tokens_per_s))
end
