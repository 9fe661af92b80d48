-- positions.lua: the position-encoding family side by side (docs/positions.md). One small byte-level
-- model per kind, trained at `seq` tokens on the King James Bible (data/kjv.txt, `make demo` writes
-- it), then perplexity on held-out text at 1x to 8x the training length. About 3 minutes on 2 cores.
--   ./mslab run experiments/positions.lua [-- STEPS]
--   ./mslab plot ppl-vs-length --where "r.name LIKE 'pos-%'"
--   ./mslab query "SELECT r.name, m.step, m.name, m.value FROM metrics m JOIN runs r ON r.id = m.run_id
--                  WHERE m.name LIKE 'pos.%' AND r.name = 'pos-crd-grow' ORDER BY m.step"
-- Every model is trained from scratch with its kind (there is no pre-trained short model here), so
-- pi / yarn are "trained compressed" rather than extensions of a rope model; crd-ntk and the NTK
-- kinds are the ones whose inference rule differs from training (docs/positions.md).
local ms = require "mslab"

local bible = ms.corpus { path = "data/kjv.txt", tokenizer = "byte", eval = 0.1 }
local seq, steps = 128, tonumber(arg[1]) or 300
local lengths = { seq, 2 * seq, 4 * seq, 8 * seq }

local kinds = {
  { "pos-rope",        { kind = "rope" } },
  { "pos-pi4",         { kind = "pi", scale = 4 } },
  { "pos-ntk8",        { kind = "ntk", scale = 8 } },
  -- trains exactly as rope (train.seq = orig_length); differs only at eval lengths beyond it
  { "pos-dynamic-ntk", { kind = "dynamic-ntk", scale = 2 } },
  { "pos-yarn8",       { kind = "yarn", scale = 8 } },
  -- the draft's CRD NTK: cycle 2*seq, offset per layer per step, base from s = 16 at a fixed
  -- length; inference: raw positions, base theta * S^(d/(d-2)) with S the training factor
  { "pos-crd",         { kind = "crd-ntk" } },
  -- a grown variant: the cycle doubles every 75 steps up to 8*seq (the NTK length follows it,
  -- so the base grows too); a table { [len] = S } or function(len) in infer_scale would set S
  { "pos-crd-grow",    { kind = "crd-ntk", scale = 4,
                         cycle = { value = 2 * seq, double_every = 75, max = 8 * seq } } },
}

local results = {}
for _, k in ipairs(kinds) do
  local r = ms.run {
    name = k[1], data = bible, seed = 1,
    model = { dim = 64, layers = 3, heads = 4, kv_heads = 2, ffn = 176 },
    positions = k[2],
    train = { seq = seq, batch = 16, steps = steps, lr = 3e-3, warmup = 40, log_every = 20 },
    eval = { ppl = { lengths = lengths, max_tokens = 16384 } },
  }
  results[#results + 1] = r
end

io.write(string.format("%-16s", "ppl at"))
for _, len in ipairs(lengths) do io.write(string.format("%9d", len)) end
io.write("\n")
for _, r in ipairs(results) do
  io.write(string.format("%-16s", r.name))
  for _, len in ipairs(lengths) do io.write(string.format("%9.3f", r.ppl[len] or 0 / 0)) end
  io.write(r.status == "done" and "\n" or ("  " .. r.status .. ": " .. (r.error or "") .. "\n"))
end
