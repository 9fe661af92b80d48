-- LoRA+ fine-tuning of llama2.c's stories260K on the King James Bible (docs/checkpoints.md):
-- the adapters (rank 4 on every projection) plus embeddings and norms train, everything else is
-- frozen; after the last step the adapters are merged and the model is exported as safetensors.
--   ./mslab run experiments/finetune_lora.lua
--   ./mslab generate --checkpoint exports/stories260K-kjv-lora \
--       --tokenizer ../shared/data/models/stories260K/tok512.bin --prompt "In the beginning"
local ms = require "mslab"
local shared = "../shared/data/models/stories260K/"
local kjv = ms.corpus { path = "data/kjv.txt", tokenizer = shared .. "tok512.bin", eval = 0.05 }
for _, lora in ipairs { { rank = 4, alpha = 8 }, false } do
  local r = ms.run {
    name = lora and "stories260K-kjv-lora" or "stories260K-kjv-full", data = kjv, seed = 1,
    finetune = { init = shared .. "stories260K.bin",
                 lora = lora and { rank = lora.rank, alpha = lora.alpha,
                                   targets = { "q", "k", "v", "o", "gate", "up", "down" },
                                   train_embeddings = true, train_norms = true } or nil },
    export = lora and "exports/stories260K-kjv-lora" or nil,
    train = { seq = 256, batch = 8, steps = 200, lr = lora and 3e-3 or 1e-3, warmup = 10 },
    eval = { ppl = { lengths = { 256, 512 } } },
  }
  print(r.name, r.status, r.eval_loss, r.ppl[256], r.ppl[512])
end
