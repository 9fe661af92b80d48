-- probe_selection.lua: what MS attention selects, on tensors, without training anything.
-- Random q/k with one planted match: the keys of region NEEDLE are made to point along the queries
-- of the last group, which should then pick that region first in every head; the other picks are
-- what random vectors give. Prints the lists per group and head and how much heads agree; with an
-- output directory, also writes q, k and the selection as .npy files for NumPy (np.load).
--   ./mslab run experiments/probe_selection.lua [-- outdir]
local ms = require "mslab"
local T = ms.tensor

local outdir = arg[1]
local B, L, H, KVH, D = 1, 512, 4, 2, 32
local cfg = { kind = "ms", w = 16, top = 8, merge = 2 } -- prefix 128 tokens, groups of 32 queries
local NEEDLE = 3                                        -- region 3: tokens 48 .. 63 (0-based)

local q = T.randn({ B, L, H, D }, 1)
local k = T.randn({ B, L, KVH, D }, 2)
-- plant: k rows of the needle region = 3 x the mean query direction of the last group (per kv head)
local attn = ms.attention(cfg)
local _, info = attn:selection(q, k)
local last0 = (info.blocks - 1) * info.group -- first token of the last group
for kh = 1, KVH do
  for d = 1, D do
    local m = 0
    for t = last0 + 1, L do
      for h = (kh - 1) * (H // KVH) + 1, kh * (H // KVH) do m = m + q:get(1, t, h, d) end
    end
    m = m / ((L - last0) * (H // KVH))
    for t = NEEDLE * cfg.w + 1, (NEEDLE + 1) * cfg.w do k:set(30 * m, 1, t, kh, d) end
  end
end

local sel, info = attn:selection(q, k)
print(string.format("%d tokens: regions of %d, dense prefix %d tokens, %d groups of %d queries, " ..
  "%d selected + %d local regions each", L, info.region, info.prefix, sel.shape[3], info.group,
  info.selected, info.merge))
for g = 1, sel.shape[3] do
  local line = {}
  for h = 1, H do
    local ids = {}
    for s = 1, info.selected do ids[#ids + 1] = string.format("%2d", sel:get(1, h, g, s)) end
    line[#line + 1] = table.concat(ids, " ")
  end
  print(string.format("group %2d (tokens %3d..%3d) | %s", g, (info.first_group + g - 1) * info.group,
    (info.first_group + g) * info.group - 1, table.concat(line, " | ")))
end

-- agreement between heads: the mean size of the intersection of two heads' picks, per group
local agree, pairs = 0, 0
for g = 1, sel.shape[3] do
  for h1 = 1, H do
    for h2 = h1 + 1, H do
      local set, n = {}, 0
      for s = 1, info.selected do set[sel:get(1, h1, g, s)] = true end
      for s = 1, info.selected do if set[sel:get(1, h2, g, s)] then n = n + 1 end end
      agree, pairs = agree + n / info.selected, pairs + 1
    end
  end
end
print(string.format("heads agree on %.0f%% of their picks (random vectors agree by chance; the planted region in all)",
  100 * agree / pairs))
local first_pick = {}
for h = 1, H do first_pick[h] = sel:get(1, h, sel.shape[3], 1) end
print("last group's first pick per head: " .. table.concat(first_pick, " ") .. " (needle: " .. NEEDLE .. ")")

-- what the selection costs the output: ms against dense on the same tensors
local v = T.randn({ B, L, KVH, D }, 3)
local out = attn(q, k, v)
local dense = ms.attention { kind = "dense" } (q, k, v)
print(string.format("max |ms - dense| over the outputs: %.4f", out:max_abs_diff(dense)))

if outdir then
  q:save(outdir .. "/probe_q.npy")
  k:save(outdir .. "/probe_k.npy")
  sel:save(outdir .. "/probe_selection.npy")
  print("wrote " .. outdir .. "/probe_{q,k,selection}.npy (selection: int32 [B, H, groups, selected], 0-based)")
end
