-- long_eval.lua: perplexity out to 64x the training length on the PG-19-like books, under the four
-- protocols (docs/eval.md), and passkey retrieval, for RoPE as trained and with YaRN at inference.
-- About 5 minutes on 2 CPU cores.
--   ./mslab run experiments/long_eval.lua      then: ./mslab plot ppl-vs-length; ./mslab plot passkey
local ms = require "mslab"

local shared = arg[1] or "../shared/data/books"
local train = ms.corpus { path = shared .. "/extra/tinyshakespeare.txt", tokenizer = "byte" }
local books = ms.corpus { path = shared .. "/eval", tokenizer = "byte" } -- 20 books, all evaluated

local seq = 64
local lengths = { seq, 4 * seq, 16 * seq, 64 * seq }
for _, pos in ipairs { { kind = "rope" }, { kind = "yarn", scale = 16 } } do
  local r = ms.run {
    name = "long-eval-" .. pos.kind,
    data = train,
    model = { dim = 64, layers = 2, heads = 4, ffn = 176 },
    positions = pos,
    train = { seq = seq, batch = 16, steps = 300, lr = 3e-3, warmup = 20 },
    eval = {
      ppl = { lengths = lengths, protocols = { "windows", "sliding", "truncate", "longlora" },
              max_tokens = 16384, data = books },
      passkey = { lengths = { 300, 600, 1200 }, trials = 10, seed = 1 },
    },
  }
  print(r.name, r.status, r.error or "")
end
