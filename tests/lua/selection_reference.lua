-- selection_reference.lua: an independent re-implementation of the ms and moba selection in
-- plain Lua (tables, 0-based ids), compared with attn:index(q, k) of the engine on random inputs,
-- every knob, lengths that are multiples of neither w nor G nor P, grouped-query heads, batch > 1
-- and exact score ties. Run by tests/test_attention_lua.c; any mismatch raises an error.
-- Written from docs/attention.md, not from the C code: pooled vectors and scores are doubles
-- summed in row / dimension order, so equal inputs give equal scores; top-S ranks by score,
-- ties to the lower region id.
local ms = require "mslab"
local T = ms.tensor

local function ceil_div(a, b) return (a + b - 1) // b end

-- accessor for a [B, T, H, D] tensor: v(b, t, h) -> array of D numbers (0-based b, t, h)
local function rows(x)
  local B, L, H, D = table.unpack(x.shape)
  local flat = x:totable()
  return function(b, t, h)
    local base, out = ((b * L + t) * H + h) * D, {}
    for d = 1, D do out[d] = flat[base + d] end
    return out
  end, D
end

local function pool(get, b, h, t0, t1, D, mode)
  local acc = {}
  if mode == "first" then return get(b, t0, h) end
  for d = 1, D do acc[d] = mode == "max" and -math.huge or 0 end
  for t = t0, t1 - 1 do
    local x = get(b, t, h)
    local scale = 1
    if mode == "nmean" then
      local ss = 0
      for d = 1, D do ss = ss + x[d] * x[d] end
      scale = ss > 0 and 1 / math.sqrt(ss) or 0
    end
    for d = 1, D do
      if mode == "max" then acc[d] = math.max(acc[d], x[d]) else acc[d] = acc[d] + x[d] * scale end
    end
  end
  if mode == "mean" or mode == "nmean" then
    for d = 1, D do acc[d] = acc[d] / (t1 - t0) end
  end
  return acc
end

local function norm(a)
  local s = 0
  for d = 1, #a do s = s + a[d] * a[d] end
  return math.sqrt(s)
end

local function score(a, b, mode)
  local s = 0
  for d = 1, #a do s = s + a[d] * b[d] end
  if mode == "scaled" then return s / math.sqrt(#a) end
  if mode == "cosine" then
    local na, nb = norm(a), norm(b)
    return (na > 0 and nb > 0) and s / (na * nb) or 0
  end
  return s
end

-- ids 0 .. e-1 ranked by score (best first, ties to the lower id); the first n
local function top(scores, e, n)
  local ids = {}
  for j = 0, e - 1 do ids[#ids + 1] = j end
  table.sort(ids, function(x, y)
    if scores[x] ~= scores[y] then return scores[x] > scores[y] end
    return x < y
  end)
  local out = {}
  for i = 1, math.min(n, e) do out[i] = ids[i] end
  return out
end

-- the index lists of ms: lists[b][h][c] = { ids } (0-based)
local function ms_lists(c, q, k)
  local B, L, H = q.shape[1], q.shape[2], q.shape[3]
  local KVH = k.shape[3]
  local getq, D = rows(q)
  local getk = rows(k)
  local w, M, lg = c.w, c.merge, c.local_groups or 1
  local N = ceil_div(L, w)
  local R = c.top
  if not R then
    R = math.max(M + 1, math.ceil(c.ratio * N - 1e-9))
    R = M * ceil_div(R, M)
  end
  local S, G = R - M, M * w
  local P = c.prefix or R * w
  local first, nblk = P // G, ceil_div(L, G)
  local last_dense = c.tail == "dense" and L % G ~= 0 and nblk - 1 >= first
  local lists = {}
  for b = 0, B - 1 do
    lists[b] = {}
    local kbar = {}
    for kh = 0, KVH - 1 do
      kbar[kh] = {}
      for r = 0, N - 1 do kbar[kh][r] = pool(getk, b, kh, r * w, math.min(L, (r + 1) * w), D, c.pool or "mean") end
    end
    for h = 0, H - 1 do
      lists[b][h] = {}
      local kb = kbar[h // (H // KVH)]
      for blk = 0, nblk - 1 do
        local g0, gend = blk * M, math.min(N, blk * M + M)
        local list = {}
        if blk < first or (blk == nblk - 1 and last_dense) then
          for r = 0, gend - 1 do list[#list + 1] = r end
        else
          local local0 = math.max(0, g0 - (lg - 1) * M)
          local units = {} -- { rows t0, t1, eligible count }
          if c.select == "group" then
            units[1] = { g0 * w, math.min(L, gend * w), local0 }
          else
            for g = g0, gend - 1 do
              units[#units + 1] = { g * w, math.min(L, g * w + w), math.max(0, math.min(g - M + 1, local0)) }
            end
          end
          local picks = {}
          for m, u in ipairs(units) do
            local qbar = pool(getq, b, h, u[1], u[2], D, c.pool or "mean")
            local sc = {}
            for j = 0, u[3] - 1 do sc[j] = score(qbar, kb[j], c.score or "dot") end
            local ids = top(sc, u[3], S)
            picks[m] = {}
            for i, id in ipairs(ids) do picks[m][i] = { id = id, s = sc[id] } end
          end
          -- candidates in rank-major order: every member's rank 1, then rank 2, ...
          local cand, pos, key = {}, {}, {}
          for rank = 1, S do
            for m = 1, #units do
              local p = picks[m][rank]
              if p then
                if not pos[p.id] then cand[#cand + 1] = p.id; pos[p.id] = #cand; key[p.id] = 0 end
                key[p.id] = key[p.id] + ((c.order == "score") and p.s or 1)
              end
            end
          end
          if c.order == "score" or c.order == "votes" then
            table.sort(cand, function(x, y)
              if key[x] ~= key[y] then return key[x] > key[y] end
              return pos[x] < pos[y]
            end)
          end
          for i = 1, math.min(S, #cand) do list[#list + 1] = cand[i] end
          for r = local0, gend - 1 do list[#list + 1] = r end
        end
        lists[b][h][blk] = list
      end
    end
  end
  return lists, nblk
end

-- moba: per row t, the top-(top - 1) past blocks by q_t . mean(k of block), then its own block
local function moba_lists(c, q, k)
  local B, L, H = q.shape[1], q.shape[2], q.shape[3]
  local KVH = k.shape[3]
  local getq, D = rows(q)
  local getk = rows(k)
  local bs = c.block
  local nb = ceil_div(L, bs)
  local lists = {}
  for b = 0, B - 1 do
    lists[b] = {}
    for h = 0, H - 1 do
      lists[b][h] = {}
      local kbar = {}
      for j = 0, nb - 1 do kbar[j] = pool(getk, b, h // (H // KVH), j * bs, math.min(L, j * bs + bs), D, "mean") end
      for t = 0, L - 1 do
        local own, sc = t // bs, {}
        local qt = getq(b, t, h)
        for j = 0, own - 1 do sc[j] = score(qt, kbar[j], "dot") end
        local list = top(sc, own, c.top - 1)
        list[#list + 1] = own
        lists[b][h][t] = list
      end
    end
  end
  return lists, L
end

local checked = 0
local function compare(name, cfg, q, k)
  local attn = ms.attention(cfg)
  local idx = attn:index(q, k)
  local want, nblk
  if cfg.kind == "moba" then want, nblk = moba_lists(cfg, q, k) else want, nblk = ms_lists(cfg, q, k) end
  local B, H, NB, W = table.unpack(idx.shape)
  assert(NB == nblk, name .. ": " .. NB .. " blocks, expected " .. nblk)
  for b = 0, B - 1 do
    for h = 0, H - 1 do
      for c = 0, NB - 1 do
        local l = want[b][h][c]
        for s = 1, W do
          local got, exp = idx:get(b + 1, h + 1, c + 1, s), l[s] or -1
          if got ~= exp then
            local g = {}
            for x = 1, W do g[x] = idx:get(b + 1, h + 1, c + 1, x) end
            error(string.format("%s: b %d h %d block %d: engine {%s}, reference {%s}", name, b, h,
                                c, table.concat(g, " "), table.concat(l, " ")))
          end
        end
        checked = checked + 1
      end
    end
  end
  -- attn:selection is the list without the local regions (ms) / own block (moba)
  local sel, info = attn:selection(q, k)
  if cfg.kind == "ms" and not info.dense then
    local C = sel.shape[3]
    assert(C == NB - info.first_group, name .. ": selection groups")
    for g = 1, C do
      local blk = info.first_group + g - 1
      if not (cfg.tail == "dense" and blk == NB - 1 and (k.shape[2] % info.group) ~= 0) then
        for s = 1, info.selected do
          local exp = want[0][0][blk][s]
          local local0 = blk * info.merge - ((cfg.local_groups or 1) - 1) * info.merge
          if exp and exp >= local0 then exp = nil end
          assert(sel:get(1, 1, g, s) == (exp or -1), name .. ": selection differs from the index")
        end
      end
    end
  end
end

local B, L, H, KVH, D = 2, 61, 4, 2, 8
local q, k = T.randn({ B, L, H, D }, 101), T.randn({ B, L, KVH, D }, 102)
compare("ms defaults", { kind = "ms", w = 4, top = 6, merge = 2 }, q, k)
compare("ms max/cosine/votes/2 local",
  { kind = "ms", w = 4, top = 6, merge = 2, pool = "max", score = "cosine", order = "votes", local_groups = 2 }, q, k)
compare("ms nmean/scaled/score/group/tail dense",
  { kind = "ms", w = 4, top = 8, merge = 2, pool = "nmean", score = "scaled", order = "score", select = "group", tail = "dense" }, q, k)
compare("ms prefix 8", { kind = "ms", w = 4, top = 6, merge = 2, prefix = 8 }, q, k)
compare("ms first, merge 1", { kind = "ms", w = 3, top = 5, merge = 1, pool = "first" },
  T.randn({ 1, 50, 3, 8 }, 103), T.randn({ 1, 50, 3, 8 }, 104))
compare("ms ratio", { kind = "ms", w = 4, ratio = 0.3, merge = 2 },
  T.randn({ 1, 77, 2, 8 }, 105), T.randn({ 1, 77, 1, 8 }, 106))
compare("ms merge 3 unrotated", { kind = "ms", w = 2, top = 9, merge = 3, select_on = "unrotated", rope = true },
  T.randn({ 2, 45, 2, 8 }, 107), T.randn({ 2, 45, 2, 8 }, 108))
compare("moba", { kind = "moba", block = 8, top = 3 }, q, k)
-- long rows: S far below the eligible count (the engine selects before sorting)
local ql, kl = T.randn({ 1, 150, 2, 8 }, 109), T.randn({ 1, 150, 1, 8 }, 110)
compare("ms long rows", { kind = "ms", w = 2, top = 6, merge = 2, order = "score" }, ql, kl)
compare("moba long rows", { kind = "moba", block = 2, top = 3 }, ql, kl)

-- exact ties: key regions repeat with period 3 regions, so many scores are equal
local kt = k:totable()
for b = 0, B - 1 do
  for t = 12, L - 1 do
    for x = 1, KVH * D do kt[((b * L + t) * KVH) * D + x] = kt[((b * L + t % 12) * KVH) * D + x] end
  end
end
local ktie = T.from(kt, { B, L, KVH, D })
compare("ms ties", { kind = "ms", w = 4, top = 6, merge = 2 }, q, ktie)
compare("ms ties votes", { kind = "ms", w = 4, top = 8, merge = 2, order = "votes" }, q, ktie)
compare("moba ties", { kind = "moba", block = 4, top = 4 }, q, ktie)
compare("ms ties long rows", { kind = "ms", w = 1, top = 6, merge = 2 }, q, ktie)

-- the NumPy reference (tests/reference/ms_selection, made by make_ms_selection.py)
local ref = "tests/reference/ms_selection/"
local fq = io.open(ref .. "q.npy", "rb")
if fq then
  fq:close()
  local nq, nk = T.load(ref .. "q.npy"), T.load(ref .. "k.npy")
  local cases = dofile(ref .. "cases.lua")
  for _, case in ipairs(cases) do
    local want = T.load(ref .. case.file)
    local got = ms.attention(case.cfg):index(nq, nk)
    assert(got:max_abs_diff(want) == 0 and #got == #want, "numpy reference " .. case.file .. " differs")
    checked = checked + 1
  end
  -- bf16 round trip: saved as uint16 by NumPy, read back exactly
  local b16 = T.load(ref .. "q_bf16.npy")
  assert(b16.dtype == "bf16" and b16:max_abs_diff(nq) < 0.01 * 4, "bf16")
end
print("selection reference: " .. checked .. " lists agree")
