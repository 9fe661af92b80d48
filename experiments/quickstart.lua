-- quickstart.lua: the demo. Trains a small byte-level Llama-style model on the King James Bible
-- (from Debian's bible-kjv, written to data/kjv.txt by `make demo`) on the CPU, then measures
-- perplexity on held-out text at 1x to 8x the training length.
--   ./mslab run experiments/quickstart.lua            then: ./mslab runs; ./mslab plot loss
local ms = require "mslab"

local bible = ms.corpus {
  path = arg[1] or "data/kjv.txt", -- one long document: its last 10% is the eval set
  tokenizer = "byte",
  eval = 0.1,
}
print(bible)

local seq = 128
local result = ms.run {
  name = "quickstart",
  data = bible,
  seed = 1,
  model = { dim = 128, layers = 4, heads = 4, kv_heads = 2, ffn = 352 },
  positions = { kind = "rope", base = 10000 },
  attention = { kind = "dense" },
  train = { seq = seq, batch = 16, steps = 1200, lr = 2e-3, warmup = 50, log_every = 10, eval_every = 200 },
  eval = { ppl = { lengths = { seq, 2 * seq, 4 * seq, 8 * seq }, max_tokens = 32768 } },
}

print(string.format("%s: %s, train loss %.3f, eval loss %.3f (%.2f bits/byte), %.0f tokens/s",
  result.name, result.status, result.train_loss, result.eval_loss or 0 / 0,
  (result.eval_loss or 0 / 0) / math.log(2), result.tokens_per_s))
for _, len in ipairs { seq, 2 * seq, 4 * seq, 8 * seq } do
  print(string.format("  ppl@%-5d %.3f", len, result.ppl[len] or 0 / 0))
end
