-- gpu_train.lua: training throughput of the CUDA backend (device = "cuda"), recorded in results.db
-- (metric train.tokens_per_s of each run).
--   ./mslab run experiments/gpu_train.lua [--db results.db]
--       [-- data/kjv.txt DEMO_STEPS BIG_STEPS MS_STEPS [DEVICE [PRECISIONS]]]
-- (a) the demo model of quickstart.lua (dim 128, 4 layers, seq 128, batch 16);
-- (b) a 100.6M-parameter byte-level model: dim 768, 16 layers, 12 heads (kv 4), ffn 2048,
--     seq 1024, batch 8, dense attention;
-- (c) the same model with ms attention (w 16, top 32, merge 8: 24 selected regions + the group's
--     8 local ones, dense prefix 512) at seq 4096, batch 2.
-- A step count of 0 skips that run. Each run is made once per precision in PRECISIONS
-- (comma-separated, default "bf16,fp32" on cuda; docs/cuda.md "Precision").
local ms = require "mslab"

local path = arg[1] or "data/kjv.txt"
local demo_steps = tonumber(arg[2] or "1200")
local big_steps = tonumber(arg[3] or "200")
local ms_steps = tonumber(arg[4] or "50")
local device = arg[5] or "cuda" -- "cpu": a dry run of the script on the reference
local precisions = {}
for p in (arg[6] or (device == "cuda" and "bf16,fp32" or "fp32")):gmatch("[^,]+") do
  precisions[#precisions + 1] = p
end
local text = ms.corpus { path = path, tokenizer = "byte", eval = 0.1 }
print(text)

local function show(r)
  print(string.format("%-22s %s: train loss %.4f, eval loss %.4f, %.0f tokens/s", r.name, r.status,
    r.train_loss or 0 / 0, r.eval_loss or 0 / 0, r.tokens_per_s or 0))
  io.stdout:flush()
end

local big = { dim = 768, layers = 16, heads = 12, kv_heads = 4, ffn = 2048 }

for _, prec in ipairs(precisions) do
if demo_steps > 0 then
  show(ms.run {
    name = "gpu-demo-" .. prec, data = text, seed = 1, device = device, precision = prec,
    model = { dim = 128, layers = 4, heads = 4, kv_heads = 2, ffn = 352 },
    positions = { kind = "rope", base = 10000 },
    attention = { kind = "dense" },
    train = { seq = 128, batch = 16, steps = demo_steps, lr = 2e-3, warmup = 50, log_every = 50,
              eval_every = 0 },
    eval = { ppl = { lengths = { 128, 512 }, max_tokens = 32768 } },
  })
end

if big_steps > 0 then
  show(ms.run {
    name = "gpu-100m-dense-1k-" .. prec, data = text, seed = 1, device = device, precision = prec,
    model = big,
    positions = { kind = "rope", base = 10000 },
    attention = { kind = "dense" },
    train = { seq = 1024, batch = 8, steps = big_steps, lr = 6e-4, warmup = 20, log_every = 20,
              eval_every = 0 },
    eval = { ppl = { lengths = { 1024 }, max_tokens = 16384 } },
  })
end

if ms_steps > 0 then
  show(ms.run {
    name = "gpu-100m-ms-4k-" .. prec, data = text, seed = 1, device = device, precision = prec,
    model = big,
    positions = { kind = "rope", base = 10000 },
    attention = { kind = "ms", w = 16, top = 32, merge = 8 },
    train = { seq = 4096, batch = 2, steps = ms_steps, lr = 6e-4, warmup = 10, log_every = 10,
              eval_every = 0 },
    eval = { ppl = { lengths = { 4096 }, max_tokens = 16384 } },
  })
end
end
