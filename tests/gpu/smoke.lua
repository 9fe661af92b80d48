-- tests/gpu/smoke.lua: the quickstart model for a few hundred steps on each device, to see that
-- `device = "cuda"` trains end to end through the Lua host and results.db, and how fast.
--   ./mslab run tests/gpu/smoke.lua --db /tmp/smoke.db [-- data/kjv.txt STEPS]
local ms = require "mslab"
local text = ms.corpus { path = arg[1] or "data/kjv.txt", tokenizer = "byte", eval = 0.1 }
local steps = tonumber(arg[2] or "300")
-- precision = "fp32" on both: the cuda and cpu losses are compared to 4 digits (bf16 below)
for _, device in ipairs { "cuda", "cpu" } do
  local r = ms.run {
    name = "smoke-" .. device, data = text, seed = 1, device = device, precision = "fp32",
    model = { dim = 128, layers = 4, heads = 4, kv_heads = 2, ffn = 352 },
    train = { seq = 128, batch = 16, steps = steps, lr = 2e-3, warmup = 50, log_every = 50 },
    eval = { ppl = { lengths = { 128, 512 } } },
  }
  print(string.format("%-11s %s: train loss %.4f, eval loss %.4f, ppl@512 %.3f, %.0f tokens/s",
    r.name, r.status, r.train_loss or 0 / 0, r.eval_loss or 0 / 0, r.ppl and r.ppl[512] or 0 / 0,
    r.tokens_per_s or 0))
end
-- ms attention end to end on the GPU (selection, sparse forward / backward through the Lua host)
local r = ms.run { name = "smoke-ms", data = text, seed = 1, device = "cuda",
                   model = { dim = 128, layers = 4, heads = 4, kv_heads = 2, ffn = 352 },
                   attention = { kind = "ms", w = 16, top = 8, merge = 2 },
                   train = { seq = 512, batch = 4, steps = 20, log_every = 10 } }
print(string.format("%-11s %s: train loss %.4f, %.0f tokens/s", r.name, r.status,
  r.train_loss or 0 / 0, r.tokens_per_s or 0))
-- bf16 mixed precision (cuda's default; docs/cuda.md "Precision"): it must train, the loss falling
local b = ms.run { name = "smoke-bf16", data = text, seed = 1, device = "cuda", precision = "bf16",
                   model = { dim = 128, layers = 4, heads = 4, kv_heads = 2, ffn = 352 },
                   train = { seq = 128, batch = 16, steps = steps, lr = 2e-3, warmup = 50,
                             log_every = 50 } }
print(string.format("%-11s %s: train loss %.4f (untrained: ln 256 = %.4f), %.0f tokens/s", b.name,
  b.status, b.train_loss or 0 / 0, math.log(256), b.tokens_per_s or 0))
assert(b.status == "done", b.error)
assert(b.train_loss < 0.7 * math.log(256), "smoke-bf16: the loss did not fall")
