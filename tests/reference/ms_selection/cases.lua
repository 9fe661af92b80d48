-- written by make_ms_selection.py: the configs of the idx_*.npy files
return {
  { file = "idx_default.npy", cfg = { kind = "ms", w = 4, top = 6, merge = 2 } },
  { file = "idx_votes.npy", cfg = { kind = "ms", w = 4, top = 6, merge = 2, order = "votes", local_groups = 2, pool = "max", score = "cosine" } },
  { file = "idx_group.npy", cfg = { kind = "ms", w = 4, top = 8, merge = 2, select = "group", order = "score", tail = "dense", pool = "nmean", score = "scaled" } },
  { file = "idx_ratio.npy", cfg = { kind = "ms", w = 5, ratio = 0.4, merge = 1, pool = "first" } },
}
