// select_bf16.cu: the MS / MoBA selection from bf16 q / k (attn_bf16.h select_bf16): fills an
// AttnIndex exactly as the CPU's attention_select does on the bf16-rounded inputs.
//
// ms (pool mean, score dot, select region, order rank): three paths, MSLAB_SELECT_BF16=
// old|fused|tp (until s14 each fell back to the one before it when a row overflowed its buffers;
// since s14 a failed row of fused / tp is redone in the same call by fs_redo, no host decision).
// old (fs_select): fp64 score rows in global memory (256 MB batches), a radix select per row;
//   at 1M it reads / writes ~6.9e10 scores x 8 B several times: 3.93 s, 57% of MS fwd+bwd.
// fused (fx_select, the default below 512K until s6; since s7 where tp does not apply or fails):
//   the same fp64 scores (DMMA, the same products in dimension order), filtered in registers
//   against a per-row running threshold, ~S ln(e / S) survivors per row kept; no score row leaves
//   the chip. Design and invariants at fx_select below.
// Measured (H200, paper config w 16 / top 512 / merge 128, B=1 H=32 D=128; s4 final bench): 1M
//   select 3.93 s (old) -> 1.23 s (fused); 128K 47 -> 31.5 ms. Still only ~14 of the ~67 TFLOP/s
//   fp64 tensor peak: 1 CTA/SM (219 KB smem: pooled q 64 x 132 doubles, a 128-key kbar chunk, the
//   16-bit sketches), 8 warps, two barriers per 32-dim chunk. The fp64 floor at 1M is ~0.27 s
//   (17.7 TFLOP).
// Removed after measurement (s5; in git history): the scores on the FMA units (fs_scores, half
//   the DMMA rate), fx_select on the m16n8k16 DMMA (CUTLASS's Hopper atom: 128K 28.0 ms in r2/r3,
//   but ~1.3x slower per score at 1M in r3, so the s4 default went back to m8n8k4) and with a
//   cp.async double buffer for the kbar chunks (128K 30.9 vs 28.0 ms in r3).
// tp (tp_select, s6; the default (auto) since s7 wherever it applies (TP_AUTO_MIN 0; S <= 448,
//   rows < 64K candidates); MSLAB_SELECT_BF16=fused: never): no fp64 GEMM. Scores
//   from fp16 splits of the pooled q / k (hi + lo, 3 MMAs, fp32) with a rigorous bound
//   |s - s'| <= 5.8e-6 |q| |k| prune against the same running threshold (on lower bounds); the
//   survivors (~S + 8 per row) are ordered by their intervals, and only those the bound cannot
//   order get the CPU's double score (dmul, dadd in dimension order). Design, bound and
//   invariants at tp_select. Lists equal the CPU's on every select_bf16_tests shape (s6 r1 / r2,
//   s7 r1-r3, incl. ties, all-equal keys, rising scores, D 64, B 2, gqa, lg 2, tail).
//   s6 (H200, paper config, B=1 H=32 D=128, tests MSLAB_SELECT_PERF, ms per call): tp / fused
//   16K 1.31 / 1.12, 32K 3.92 / 3.55, 128K 31.7 / 31.8, 1M 873 / 1236; exact scores per row 33
//   at 128K, 48 at 1M (of ~367 / 400 survivors); bf16 limbs instead (MSLAB_SELECT_TP16=0, removed in s9; bound
//   8e-5): 240 per row, 128K 51.2 ms.
//   s7 profile (MSLAB_SELECT_PROF=1: clock64 sections per warp, printed per call): the MMAs were
//   never the cost. Shares of tp_select (r2, 16K / 32K / 128K): the survivors' sort 50 / 41 / 23%
//   (a warp bitonic sort of (u64 key, id) in shared memory, ~56K cycles a row: shared bandwidth,
//   45 stages of loads and stores), sketch compaction 12 / 18 / 24% (fx_compact ~14.6K cycles a
//   row: a chain of load, ballots, store per 32 entries) plus most of the tile wait (0.9 / 2.9 /
//   14%: warps waiting for the slowest compaction), clusters 10 / 9 / 5% (key norm gathers one at
//   a time), exact scores 9 / 8 / 6%, filter + insert 4 / 7 / 13%, MMAs 2 / 3 / 7%. Now: the sort
//   on 32-bit keys in registers (tp_sort_surv), the compaction in registers (tp_compact_reg), the
//   gathers and exact-score chunks in flight together, rows taken in turn in the finish, and
//   (after r3) the intervals / clusters in registers (16 positions a lane, one warp scan).
//   Measured (s7 r3, H200, paper config, B=1 H=32 D=128, MSLAB_SELECT_PERF, ms per call incl. the
//   list download): tp / fused 16K 0.75 / 1.02, 32K 2.47 / 3.49, 64K 7.22 / 10.16, 128K 21.2 /
//   31.2 (s6 tp 1.31 / 3.92 / - / 31.7); the old compaction (MSLAB_SELECT_TPRC=0, removed in s9) 32K 2.69, 128K
//   25.2. tp_select shares then (128K): compaction 25.5 + 2.5% (bisection over 11 words a lane,
//   ~12K cycles a row), tile wait 12%, insert 11%, MMAs 10%, filter 7%, survivors 7%, clusters 8%,
//   exact 6.5%, sort 4%; 16K: clusters 19%, exact 13%, sort 11%, compaction 19%. Final (s7 r4,
//   clusters in registers): tp 16K 0.75, 32K 2.44, 64K 7.22, 128K 21.0 ms (fused 1.05 / 3.51 /
//   10.2 / 31.3); r5: 1M tp 763 ms, fused 1227 (s6 tp 873). The bisection's counts by plain
//   compares instead of __vsetgeu2 lost (r5: 32K 2.53, 128K 22.9 ms).
//   s8 (issue 8: the sweep's thresholds). Histogram rows (tp_hist_update): once a sketch compaction finds few keys (<= S / 8) more than 255 bins above its S-th
//   key t, the row's 1408 sketch bytes become 256 counts of lower-bound keys from t (bins of 2^sh
//   keys, the finest sh <= 2 (TP_HSH) with few past them; the top bin: all above)
//   and a ring of the keys inserted since; every 128 inserts (TP_HUPD; 384 since s10) the ring is
//   binned and t moves to the largest bin edge with S counted at or above it: no compaction
//   again (~1K cycles an update against ~9K a compaction). The first compactions find t < 0 (the
//   40th percentile of the first 640), ~32K keys from the positive scores, so rows turn at their
//   2nd / 3rd (simulated on normal scores, 1-key bins: 4.0 -> 2.0 compactions a row at 4256
//   candidates, 8.0 -> 2.1 at 32K; bins on a linear value scale would turn at the 1st, but their
//   resolution breaks on rising scores). Sweep compactions stop their bisection at a key keeping
//   S .. S + 63 (TP_CWIN; histogram rows find the exact S-th from the bins), the
//   rows with threshold work are dealt out to the warps in turn, the finish takes
//   its next row a row ahead and prefetches that row's buffer to L2. Profile (r4, 128K, 1-key bins / s7's switches): compactions 634K / 870K + 588K updates,
//   compaction + final 22.5 / 23.3% of the warp-cycles, tile wait 9.1 / 13.7%, kernel 19.8 /
//   21.7 ms. Measured (r5, H200, paper config, B=1 H=32 D=128, MSLAB_SELECT_PERF, ms per call,
//   2 runs): tp 16K 0.72, 32K 2.41-2.43, 64K 6.82-6.88, 128K 19.60-19.66 (1-key bins: 0.71-0.72 /
//   2.44-2.48 / 6.95 / 19.71-19.89; s7's switches 0.73-0.75 / 2.49-2.52 / 7.36 / 21.41-21.50;
//   s7: 0.75 / 2.44 / 7.22 / 21.0); r4 (1-key bins): 1M 650 ms (s7 763 in the same test).
//   s9 (the finish's latencies): items of TP_RM = 32 rows, two CTAs per SM (<= 113 KB smem, <= 128
//   registers): one CTA's finish (sort, clusters, exact scores), next+pool and barrier waits run
//   beside the other's sweep. To fit: the pooled q (double) lives in the sketch area until the
//   first insert, plus a per-CTA copy in global memory (qg) for the exact scores (the row's q by
//   cp.async during the sort); the A fragments (q limbs) come by ldmatrix from shared memory (in
//   64 registers a thread they spilled at the 128-register cap: r2 18.13 vs 17.28 ms at 128K),
//   with one tile buffer (the next tile issued after the inserts, during the row work; issued
//   after the MMAs instead, one more barrier: r3 no gain, removed); the exact scores load each
//   lane's own kbar row (r3: 32K 2.11 vs 2.19, 128K 17.30 vs 17.63 staged). Measured (H200, paper
//   config, B=1 H=32 D=128, MSLAB_SELECT_PERF, ms per call): r3 16K 0.65, 32K 2.11, 64K 5.90, 128K
//   17.30; the s8 layout (64-row items, one CTA per SM, MSLAB_SELECT_TPRM=64, removed) r2 0.74 /
//   2.49 / 7.04 / 20.52; 32-row items with the A fragments in registers r2 0.65 / 2.21 / 6.21 /
//   18.13. Profile (r3, 32K / 128K, shares of the warp-cycles): compaction 14 / 26%, exact 13 /
//   11%, clusters 11 / 6%, sort 10 / 5%, next+pool 7 / 4%, survivors 8 / 5%, insert 7.5 / 12%, mma
//   (with the extra barrier) 11 / 11%. Then (r4 / r5): the A fragments' registers freed, no spills
//   (r4: 0.63 / 2.03 / 5.77 / 16.95); the ring room of 832-entry sketches (TP_CAPF, 704 before:
//   0.61 / 2.01 / 5.75 / 16.74) would allow histogram updates every 256 inserts (TP_HUPD, 128:
//   128K 16.57 vs 16.98 in r5, but 1M then fell back to fused in r6: kept at 128); the survivors' key norms by cp.async during the sort (clusters 12
//   -> 7%; r5 32K 1.98 vs 2.01). Tried and removed (r5): one insert atomic per lane and row for its
//   passes, not per pass (128K 16.98 vs 16.79, 32K 2.04 vs 1.98). Final (H200, paper config, B=1
//   H=32 D=128, MSLAB_SELECT_PERF, ms per call): r5 (updates every 128) 16K 0.61, 32K 1.98, 64K
//   5.71, 128K 16.79; r6 (every 256) 0.62 / 2.02 / 5.62 / 16.16 (s8 0.74 / 2.46 / 6.86 / 19.99).
//   s10 (issue 8: the 1M share; robustness). A row that fails (the call then runs the next path:
//   ~2x the time at 1M) now prints one stderr line with the cause (buffer / survivors / too few /
//   bound) and the maxima; select_bf16_last_stats gives the counters (tests print them,
//   MSLAB_SELECT_DEBUG=1 every call). s9 r6's 1M fallback (updates every 256 inserts) was 6 rows of
//   2.1M with 513-516 survivors over TP_PMAX 512 (r2, test pool): a histogram row's final threshold
//   is a bin edge, and one bin of 4 keys holds ~90 candidates at 1M; the bench's inputs had 493 at
//   128 (r2) and 519 with 960-entry sketches (r3), so the default could fall back too. Such rows now
//   raise their threshold in the finish (tp_raise: the survivors' lower bounds, the largest key nsel
//   of them reach): r3 1M 2 rows raised, none failed; the tests' "raise" rows (cap 390 / 50: most
//   rows) lists equal. Then (H200, paper config, B=1 H=32 D=128, MSLAB_SELECT_PERF, ms per call, one
//   round each: rounds differ by up to 7%): rows needing threshold work flagged by the insert that
//   crosses the count, no mask barrier (r1 128K 16.23 vs 16.34, r2 17.01 vs 17.10); 960-entry
//   sketches in fx_compact's histogram smem (tau 0 by fx_keep): the first compaction's S-th of 960
//   lies above 0, so rows turn into histogram rows at their 1st compaction (simulated: 1.0 vs 1.95
//   compactions a row at 8K-64K candidates; r3 128K 17.43 vs 17.55, 32K 2.09 vs 2.03); keys made at
//   insert and one insert atomic per lane and row (r3 128K 17.29 vs 17.43,
//   32K 2.09 / 2.09); updates every 256 (r3 128K 16.98 vs 17.29, 1M 588 vs 601 with the bench's
//   inputs, MSLAB_SELECT_PERF_NORMAL=1). 1M profile (r2, s9's defaults, bench inputs: kernel 625
//   ms): compaction / updates 28%, mma 20%, insert 18%, filter 14%, tile wait 9%, the finish 9%
//   (8.6K cycles a tile a warp): the sweep is the cost at 1M. Tried and removed (s10 r2): ql.kh and
//   qh.kl in two accumulators (a chain half as long: 128K 17.13 vs 17.10), the next tile issued
//   after the MMAs with the flags (3 barriers a tile, not 2: 64K 5.85 vs 5.75). Final (r4, the
//   tests 111 / 111 with 960 entries, keys at insert, updates every 256): 16K 0.61, 32K 1.99, 64K
//   5.54, 128K 16.17 ms (832 entries: 0.65 / 2.09 / 5.67 / 16.37); updates every 384 (the default
//   since, untested in the suite: its rows ran at 256) 0.61 / 2.01 / 5.58 / 16.09, 1M 541 ms (bench
//   inputs; 832 / 256: 552; s9's defaults 634 in r2). 1M profile (r4, 960 / 256, kernel 565 ms):
//   compaction / updates 27.5%, insert 23%, mma 21%, tile wait 10%, filter 6%, the finish 9%; 2.1M
//   compactions (4.1M at 832), 12.3M updates; 7.8K cycles a tile a warp. r5 (the final defaults):
//   16K 0.61, 32K 1.98, 64K 5.51, 128K 15.94 ms; bench (`mslab-gpu-bench --attn --kernels ms
//   --from-len 1048576 --max-len 1048576 --reps 1 --warmup 0`) 1M select 542 ms (32.3 TFLOP/s on
//   2 D select_dots), MS fwd+bwd 1.567 s: selection share 34.6% (s9 572 ms of 1.63 s, 35%).
//   s11 (issue 8: 128K <= 10 ms, 1M share <= 20%; H200, paper config, B=1 H=32 D=128,
//   MSLAB_SELECT_PERF, ms per call; old and new in one snippet). First the ceiling: an oracle
//   (tp_select run twice, the 2nd from the 1st's final per-row thresholds, i.e. ideal fixed
//   thresholds; removed) took 128K 12.8 (r1, vs 15.9) and 1M 483 (r2, prof on, vs 560): no fixed
//   threshold can save more than ~20% / ~14%. The s10 profile's "compaction / updates 27.5%" at 1M
//   was mostly the barrier after the inserts: with pass-1 thresholds and no compaction at all the
//   section still took 28.9% (r2). The sweep is bound per tile (load, barrier, MMAs, atomics), not
//   by its bookkeeping: 3 MMAs a score at ~110 TFLOP/s at 1M, pass 1's single MMA at about the same.
//   (a) two passes, built: pass 1 (tp_thr1: fp16-hi scores, a per-bucket top-k of lower-bound keys
//   in registers, the S-th of them) then a sweep from its thresholds. r1 (64-key pass-1 tiles,
//   top 2): tp_select from them (its sketch kept; compactions whose start lay above the sketch's
//   S-th kept the start) 128K 17.48 vs 15.92, the sketch-free sweep tp_select<P2> 17.01, 1M 604 vs
//   539; pass 1 alone 3.57 ms at 128K, 191 at 1M; 64-row items (512 threads) 17.11 / 600; r2: 4
//   cp.async stages (3.58: not latency), pass 1 on every 4th / 8th / 16th tile + tp_select 16.85 /
//   16.87 / 17.05 at 128K, 1M (8th) 557.5 vs 540.1. r3: 128-key tiles (2 stages, 2 phases) pass 1
//   3.13 / 160 ms; top 3 a bucket (t1 near the 410th: no row over 512 survivors, no raise; top 2:
//   most rows raised) + P2: 32K 1.88 vs 2.00, 128K 15.14 vs 16.06, 1M 562 vs 544. Kept where the
//   longest row has <= TP2_MAXLD = 8192 candidates (128K tokens), tp_select beyond; r4 (final
//   code): two passes vs tp_select alone, one process: 16K 0.62 / 0.65, 32K 1.92 / 2.04,
//   64K 5.21 / 5.51, 128K 15.35 / 15.89, 1M (over the cut: tp_select both) 540 / 546; bench 128K
//   selection 15.37 vs 15.96 ms (MSLAB_SELECT_TP2=0), share 10.8 vs 11.2%, peak 10.268e9 B (+2 MB);
//   parity (tp and tp-sweep modes, every select_bf16 row) 73 passed. Removed: tp_select from a start
//   threshold, the oracle, pass-1 strides, 64-key / 4-stage / top-2 / 64-row pass 1
//   (MSLAB_SELECT_TP2=1 / 2 and the env switches TP1_STRIDE / KT / RM; TP1_KT stays, a constant).
//   (b) materialised scores, not built: a sweep that only writes its scores has pass 1's structure
//   (>= 3.1 ms at 128K with one MMA; 160 ms at 1M) plus the writes (4 GB at 128K, 273 GB at 1M)
//   and a select pass over them, against the 12.8 ms / 483 ms ceiling above.
//   Left: the sweep's structure (a pipelined wgmma sweep, TMA loads, no per-tile block barrier)
//   for both passes; nothing in the thresholds reaches the targets.
//   Review fixes (s11 r6): the two-pass call's counters kept apart (select_bf16_last_stats 10-14)
//   and its notes counted apart; a call whose two-pass failures are all bound failures skips
//   tp_select; pass 1's thresholds downloadable for the tests (select_bf16_tp2_keep / _thr: 0 rows
//   below their t1 on every test row; TP_C1 = 0, a mutation not kept: 85 rows of "ms paper gqa"
//   below, 18 rows "too few"); counters cleared at each call. Speed unchanged (main vs this, one
//   snippet, two runs each: 32K 1.92 / 1.96 vs 1.89 / 1.92, 128K 15.45 / 15.52 vs 15.42 / 15.44 ms).
//   Switches removed in s9 (the old paths with them; figures H200, paper config, ms per call):
//   MSLAB_SELECT_TPH=0: no histogram rows, sketch compactions only (s8 r5, with the three below
//     off too: 128K 21.41-21.50 vs 19.60-19.66); TPCW=0: sweep compactions to the exact S-th (in
//     that row); TPDEAL=0: rows with threshold work by r = warp + 8 i (s8 r3: 128K 22.1 vs 21.2);
//     TPNR=0: no next row ahead in the finish (s8 r3: 21.2 vs 21.0); TPHS: bins of up to 2^sh
//     keys, 0 = 1-key bins (s8 r5: 19.71-19.89 vs 19.60-19.66 at sh 2, now TP_HSH); TPHU: the
//     histogram update interval (128, now TP_HUPD; the tests still set 1 through
//     select_bf16_tph_upd); TPRC=0 (s7): fx_compact for tp's sketches (s7 r3: 32K 2.69 vs 2.47,
//     128K 25.2 vs 21.2); TP16=0 (s6): bf16 limbs, bound 8e-5 (128K 51.2 vs 31.7).
//   The count of tp_compact_reg with the ~a half of __vsetgeu2 hoisted out of the bisection (lop3
//   as it expands, 5 instructions a word, not 7) lost: r5 128K 19.87-19.91 vs 19.71-19.89, r4's
//   final compaction 4.3K -> 6.1K cycles a row; removed.
//   Removed after measurement (s8 r1-r3, 128K ms; default then 21.2): the histogram counted at
//   insert (a second shared atomic a pass; insert share 11 -> 18%); the lower-bound keys made at
//   insert, not in the filter (no gain: the loop runs for some lane anyway); exact scores 64 a
//   pass, two chains a lane, where more than 32 (20.6 without); the exact rows' kbar and the key
//   norms prefetched to L2 (20.9 without); 16 / 32 survivor loads in flight (no change); the next
//   item's q prefetched to L2 during the finish (no change); an early stop for the final
//   compaction too (no change).
//   Removed after measurement (s6 r2, s7 r1 / r2): warp-aggregated (match_any) sketch histograms
//   in fx_compact (fused 32K / 128K 3.59 / 31.7 -> 4.06 / 39.2 ms); the sort as 64-bit keys in
//   registers (shuffles of two words per element: sort share 41 -> 32% at 32K, the 32-bit one
//   replaced it); one slot atomic per row and warp for the inserts (4 lanes' counts by shuffles:
//   128K filter + insert 13.3 -> 15.2%); fx_compact's first histogram over a 256-step window above
//   the old threshold (no change: 20.7 / 20.5%); pooled q in global memory for a 1216-entry
//   sketch (no gain in r2; simulated: fewer compactions but more inserts, the first compaction
//   comes later). Kept though
//   neutral (r1: 32K 3.96, 128K 32.4 ms vs s6 3.92 / 31.7): B fragments by ldmatrix, the
//   qh.kh product from a zero register, the threshold test on floats, 8 survivor loads in flight.
//   s12 (issue 8: 32K 1.92 -> 1.5, 128K 15.35 -> 12, 1M 545 -> 450 ms; H200, paper config, B=1 H=32
//   D=128, MSLAB_SELECT_PERF(_TP=1), ms per call, old and new in one snippet). Profile first (r1, main's
//   code, MSLAB_SELECT_PROF): tp_select<P2> at 128K 11.59 ms (pass 1 3.32): sweep 56% of the warp-cycles
//   (tile wait 10.9, mma 18.1, filter 5.0, insert 17.5, loop end 4.0), finish 36.5% (survivors 3.7, sort
//   9.4, clusters 7.3, exact 13.4, order 2.7); at 32K the finish is 57%. Then the sweep on wgmma:
//   (r2) tp_wgs, 128-row items with the q limbs as the RS A operand in registers, a producer warp's
//   bulk copies into a 4-slot ring, 288 threads at 224 registers: failed to launch (701: registers are
//   handed out by warpgroup, 288 threads count as 384); 64-row items (one warpgroup + the producer, one
//   CTA an SM by its registers): 16K 0.91, 32K 3.11, 128K 21.27 vs 0.64 / 1.94 / 15.69: the finish
//   needs the occupancy (16 warps an SM, one CTA's finish beside the other's sweep). So tp_wgt keeps
//   tp_select<P2>'s shape (32-row items, 8 warps, two CTAs an SM, the same finish: tp_finish) with the
//   keys as the M side of m64n16k16 SS (both operands from shared memory, 126 registers), an mbarrier
//   ring refilled by each slot's last warp (no block barrier a tile). r3: a wait per 16 dims 128K 14.88
//   (old 15.58); every product of a tile in flight, one wait (r4) 14.95 / 15.62; a lane's insert
//   atomics together (r5). Pass 1 on the same sweep (tw_thr1: keys as M, per-thread top 3 of 256 buckets
//   a row, one CTA an SM at 162 registers: two spilled) lost: 128K pass 1 5.19 vs 3.31 ms (r3), 16.87
//   vs 14.95 ms in all (r4); removed. r5: tp_wgt / tp_select<P2> 16K 0.63 / 0.62, 32K 1.93 / 1.95, 64K
//   5.18 / 5.28, 128K 15.08 / 15.64; 1M (bench inputs; the two passes with tp_wgt, no TP2_MAXLD cut)
//   523 vs tp_select's 549; r6 (two runs each): 32K 1.93, 1.97 vs 1.91, 1.93, 64K 5.14, 5.19 vs 5.24,
//   5.25, 128K 15.00, 15.01 vs 15.50, 15.51, 1M 523 vs 551; r7: 32K 1.89 vs 1.98, 64K 5.12 / 5.30, 128K
//   14.94 / 15.60 (32K over r5-r7: means 1.93 / 1.94). Kept where the longest row has more than
//   TW_MINLD = 2048 candidates (64K tokens up; 16K and 32K keep tp_select<P2>; s13: 1024, 32K up); tp_prep_k writes its
//   swizzled tiles beside kbf (scratch + B KVH N 512 bytes at D 128: 128 MB at 128K, 1 GB at 1M).
//   tp_wgt profile (r5, 128K, kernel 10.24 ms): sweep 48% (tile wait 9.7, mma 15.0, filter + inserts
//   23.3), finish 43.7% (exact 17.2, sort 11.1, clusters 8.2, survivors 4.2): the finish (latency-bound:
//   each exact score a 128-step dadd chain over a kbar row from L2 / HBM) and the filter are what is
//   left; the targets were not reached.
//   s13 (issue 8: 32K <= 1.4 ms, 64K <= 4.3, 128K <= 12.5 from 1.92 / 5.14 / 14.95; H200, paper config,
//   B=1 H=32 D=128, MSLAB_SELECT_PERF(_TP=1), ms per call, old and new in one snippet). Profile first
//   (r3 / r4): MSLAB_SELECT_PROF now also prints each CTA's end (the one-wave kernels' tail: 32K ends
//   1118-1330 us, busy 90.7% of grid x span) and a finish-wait section (0.1%); ncu (32K, SASS source
//   counters): tp_thr1 at 52% issue utilisation, its instructions 32% the t1 bisection (4 a word of two
//   keys a step, 16 steps), 20% the q pooling, ~40% the tile loop (128 of ~650 a tile a warp the FMA adds
//   of the k16 products from zero); tp_select<P2> at 33% issue, L1 66% busy: the per-row finish 3807
//   instructions (the sort ~1.7K, fully unrolled, a quarter of its stalls instruction fetch), the exact
//   scores' dmuls waiting on their kbar loads (5% of the samples) and on the shared q loads (5%).
//   Kept (each measured against the version before it in one snippet): tp_pool_prep (sel_pool and
//   tp_prep_k in one kernel; one norm atomic a warp, not a region: pool+prep 32K 0.168 -> 0.130 ms,
//   128K 0.63 -> 0.50) and the sort's okeys swizzled for the clusters' reads (r3 together: 1.86 / 4.98 /
//   14.47 vs main 1.92 / 5.17 / 14.95; MSLAB_SELECT_TPPP=0: the two kernels); tp_exact2 (r3: 1.82 /
//   4.88 / 14.21 vs 1.86 / 4.98 / 14.47); the q pooling with 4 tasks a thread (fx_pool_q; r3 2 tasks
//   1.81 / 4.88 / 14.30, r4 4 tasks 1.76 / 4.74 / 13.76 vs 2's 1.80 / 4.79 / 13.88); the last two waves'
//   units by ld across heads (MSLAB_SELECT_TPORD=k waves, 0 off; r3 1.79 / 4.89 / 14.32; r4 all units
//   by ld 1.80 / 5.09 / 14.49 (the keys of every head in flight: L2), 4 waves 1.83 / 4.85 / 14.00);
//   the sort's sizes 16-512 rolled with complemented descending runs and pass 1's chained products
//   (r5, without / with: sort 1.80 / 5.19 / 15.45 vs 1.72 / 5.10 / 15.39, chain 1.74 / 5.12 / 15.55 vs
//   1.72 / 5.10 / 15.39, both with HS_XQ below); pass 1's bisection on bytes (r6, without / with: 0.58 / 1.74 / 4.63 / 13.47 vs
//   0.55 / 1.71 / 4.56 / 13.39 at 16K-128K); 32K on tp_wgt (TW_MINLD 1024: r6 1.66 vs 1.71).
//   Tried and removed: 16 survivor loads a lane (r3: 1.82 / 4.98 / 14.55 vs 1.86 / 4.98 / 14.47);
//   tp_exact's q chunk a chunk ahead in registers (HS_XQ, r5: 64K 5.10 vs 4.58 without, 128K 15.39 vs
//   13.41: spills in tp_wgt's tile loop, 37 local loads a tile; 32K 1.72 vs 1.71); per-warp counters
//   instead of the finish's per-row stats atomics (spilled tp_wgt, not measured). r6 (all but TW_MINLD;
//   main / this): 16K 0.63 / 0.55, 32K 1.95 / 1.71, 64K 5.15 / 4.56, 128K 15.04 / 13.39; 32K CTA ends
//   1093-1215 us, busy 94.3%. Final (r7, one snippet, main / this, two runs each): 16K 0.63, 0.63 /
//   0.53, 0.54, 32K 1.91, 1.95 / 1.67, 1.65, 64K 5.12, 5.14 / 4.53, 4.52, 128K 14.98, 15.09 / 13.29,
//   13.28; 1M (bench inputs) 521.9 / 497.6; 32K (tp_wgt) kernel 1.16 ms, pass 1 0.30, CTA busy 94.8%.
//   The targets were not reached: the costs are spread thin (see bench/NOTES.md, select tp v7).
//   s14 (issue 8, the LM row: B 1, T 32K, H = KVH = 12, D 64, paper config; target <= 350 us a layer of
//   the op's GPU span, no host wait). s14 r1 (lead, `MSLAB_BF16_TRACE=4 MSLAB_LM_ROWS=1 mslab-gpu-bench
//   --lm`): select 739 us a layer, the host 3.7 ms a call inside it: two pageable cudaMemcpy's of the
//   unit tables a call (each waits for the GPU's queue to drain) and the ctrl download for the
//   fallback decision. Now no call waits: the unit tables (they depend on the shapes only) are kept on
//   the device by content (sel_tables), a failed row is redone in the stream by fs_redo (the exact
//   path's scores and top-S of that row; it exits at once where ctrl[1] says none failed) instead of
//   the whole call again on the next path, the counters are copied by the merge's CTA 0 to a device
//   buffer that select_bf16_last_stats downloads when a test asks, one memset a call (ctrl, the work
//   counters, the failure flags). r2 (one binary; the old waits behind a switch, removed): 714.0 /
//   706.7 us a layer (host 62 / 53 us a call) vs 790.6 (host 3558), step 142.0 / 141.6 vs 143.6 ms.
//   Then the kernels on the LM's own q / k (r2, MSLAB_SELECT_PROF, 84 calls, each phase with ~10 us of
//   the profile's sync): pool+prep 45-80 us, pass 1 107-125, tp_wgt 326-365, merge 28-134 (!), no
//   failed row; tp_wgt: CTA ends min 244 / p50 270 / max 325 us, busy 84% (576 32-row items on 264
//   CTAs: 2.18 a CTA, the tail is their quantisation), sort 23% of its warp-cycles, filter 16%,
//   clusters 14%, exact 12%, survivors 10%, mma 6%. The LM's lists are skewed (a block's members pick
//   the same regions), so fs_merge scans many ranks before S distinct, its atomicMin's on L2 serialised:
//   fs_merge_sm (first positions in shared memory, 8 positions a thread, a chunk in two barriers;
//   N <= 16384, fs_merge beyond; 256 threads, r6: 512): r3 LM 687.3 vs 704.4 us a layer; tests' perf row at the
//   LM shape (MSLAB_SELECT_PERF=32768 MSLAB_SELECT_PERF_TP=1 MSLAB_SELECT_PERF_H=12 _D=64, ms a call
//   with the list download) skewed inputs (MSLAB_SELECT_PERF_SKEW=1) 0.520 vs 0.611, normal 0.484 vs
//   0.487; ncu (r3, skew 1): tp_pool_prep 31.8 us (DRAM 42%), tp_thr1 95.7, tp_wgt 303.5, fs_merge_sm
//   88.0 (192 CTAs, one unit each: the slowest unit's scan). Tried and removed: programmatic dependent
//   launch between the five kernels (r2 LM 714.0 vs 706.7 us without; r4 perf 0.549 / 0.544 skew,
//   0.493 / 0.491 normal); the merge's atomicMin's aggregated per warp (__match_any) with one ballot
//   scan a chunk (r4 skew 0.540 vs fs_merge 0.601: less than r3's plain version); tp_wgt merging each
//   unit at its last item, where no row of it failed (r4 LM 710.3 vs 701.9 us, perf 0.549 vs 0.540,
//   0.493 vs 0.488: the merges then ran on the CTAs that the tail waits for). r5 (one snippet): LM trace
//   select 683.9 us a layer (host 59 us a call) vs main 746.3 (host 3616), step 142.8 vs 143.2 ms; r6:
//   fs_merge_sm at 512 threads (FS_MNT). Final (r7, one snippet): 670.6 us a layer (host 45 us a
//   call) vs main 735.5 (host 3622), step 142.7 vs 143.5 ms; perf normal 0.484, skewed 0.499 ms (r2:
//   0.487 / 0.617). Left: the 2.18 items a CTA (finer items would need tp_wgt's 32-row
//   tiling changed), the finish (~63% of tp_wgt), pass 1 (~96 us), the conversions of q / k to bf16
//   before the call (backend_bf16.cu: the lead's).
// tp's two passes (s11; the default where the longest row has <= TP2_MAXLD = 8192 candidates,
//   MSLAB_SELECT_TP2=0: never; since s12 on sm_90 the second pass is tp_wgt past TW_MINLD candidates,
//   at any length, MSLAB_SELECT_TPW=0: tp_select<P2> as before): tp_thr1 gives every row a fixed
//   threshold, tp_select<P2> (tp_wgt) sweeps from it without sketches; a failed row (until s14 the
//   call went on to tp_select, fused, old) is redone by fs_redo. Design at tp_thr1 and tp_wgt. s13 (tests): select_bf16_tw_min(0)
//   runs tp_wgt at every length (the parity rows' "tp-wgt" mode: B > 1, ties, rising, raise and
//   huge-norm rows, which never pass TW_MINLD), select_bf16_last_tw says whether it made the lists.
// Shared with select_blocks.cu (select_common.cuh): the region pooling, fs_key, the DMMA step,
//   the histogram bin search and the warp bitonic sort.
#include <algorithm>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda_common.cuh"
#include "mma_bf16.cuh"
#include "select_common.cuh"
#include "flash_wgmma.cuh"
extern "C" {
#include "../core/attention.h"
#include "attn_bf16.h"
#include "bf16.h"
}
// ---------------------------------------------------------------------------------------------
// selection. Fast path for ms with the default knobs (pool mean, score dot, select region, order
// rank; any w / top / merge / prefix / local_groups / tail / positions): the same arithmetic as the
// CPU (pooled q / k and scores in double, each a sum in row / dimension order), so the lists are
// equal; but scores as a tiled fp64 GEMM per group, top-S per member by radix select on the
// scores' order-preserving bits + a bitonic sort of the S winners (score desc, id asc, NaN last),
// and the rank-major merge in parallel (first occurrence = atomicMin of the scan position per
// region, then an ordered compaction). Work is cut into batches of (b, h, block) units whose
// score rows fit a bounded scratch. Other configs: the fp32 CUDA op on fp32 copies, one (b, kv
// head) at a time (ms / moba lists of a query head depend only on its q and its kv head's k).

#define FS_CAP ((size_t)256 << 20) // bytes of score rows per batch
#define FS_NT 256

struct FsUnit {
    long long off; // first score of the unit in the batch buffer (doubles)
    int b, h, c, ld; // ld: candidates per member row (= eligible count of the last member)
};

struct FsArgs {
    int *idx, *kpos, *qpos;
    const uint16_t *q;
    const double *kbar; // [B, KVH, N, D]
    double *scores;
    int *tops;  // [units, M, S]
    int *fpos;  // [gridDim, N] first scan positions, INT_MAX between lists
    const FsUnit *units;
    int B, T, H, KVH, D, N, w, M, S, W, nblk, first, last_dense, lg, Gq;
    int NK;      // key regions (kbar rows per kv head): N for ms, blocks for moba
    int moba_bs; // moba: block size (members are rows, eligible = own block); 0 for ms
};

__device__ __forceinline__ int fs_elig(const FsArgs &a, int c, int g) { // attn_ms_eligible
    if (a.moba_bs) return g / a.moba_bs; // moba: the strictly past blocks
    int g0 = c * a.M, local0 = g0 - (a.lg - 1) * a.M;
    int e = min(g - a.M + 1, local0);
    return e > 0 ? e : 0;
}

// Scores of 64 members x (64-candidate tiles jt0, jt0 + step, ...) of one unit on the fp64 tensor
// cores (mma.sync m8n8k4 f64, twice the FMA rate of the FMA units; each score the sum of the
// products in dimension order): 8 warps as 2 (32 members) x 4 (16 candidates), each 4 x 2 tiles
// of 8 x 8. Pooled q
// [member][d] and a 32-dim kbar chunk [candidate][d] in shared memory, rows padded to 4 mod 16
// doubles (conflict-free fragment reads).
// a warp's 4 x NB tiles of 8 x 8 over 4 dims: acc[i][n] += A[8 i + g][cq] B[8 n + g][cq], with
// q = A's element (g, cq) (rows QLD apart) and k = B's (rows KLD apart)
template <int QLD, int KLD, int NB>
__device__ __forceinline__ void fs_dmma4(double (&acc)[4][NB][2], const double *q, const double *k) {
    double af[4], bfr[NB];
#pragma unroll
    for (int i = 0; i < 4; i++) af[i] = q[i * 8 * QLD];
#pragma unroll
    for (int n = 0; n < NB; n++) bfr[n] = k[n * 8 * KLD];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int n = 0; n < NB; n++) fs_dmma(acc[i][n], af[i], bfr[n]);
}
template <int DM>
__global__ void __launch_bounds__(FS_NT) fs_scores_mma(FsArgs a, int tiles_per_cta) {
    constexpr int QLD = DM + 4, KLD = 36;
    extern __shared__ double fs_sm[];
    double *qs = fs_sm, *ks = fs_sm + 64 * QLD; // [64][QLD], [64][KLD]
    const FsUnit U = a.units[blockIdx.z];
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, cq = lane & 3;
    int wm = warp >> 2, wn = warp & 3; // 32-member x 16-candidate warp tile
    int g0 = U.c * a.M, members = min(a.N, g0 + a.M) - g0;
    int m0 = blockIdx.y * 64;
    if (m0 >= members || U.ld <= 0) return;
    int jt_begin = blockIdx.x * tiles_per_cta;
    if (jt_begin * 64 >= U.ld) return;
    size_t ldq = (size_t)a.H * a.D;
    const uint16_t *qb = a.q + ((size_t)U.b * a.T * a.H + U.h) * a.D;
    for (int e = tid; e < 64 * DM; e += FS_NT) { // pooled q of members m0 .. m0 + 63
        int mm = e / DM, d = e % DM, gg = g0 + m0 + mm;
        double acc = 0.0;
        if (m0 + mm < members) {
            int r0 = gg * a.w, r1 = min(a.T, r0 + a.w);
            for (int t = r0; t < r1; t++)
                acc += (double)__uint_as_float((uint32_t)qb[(size_t)t * ldq + d] << 16);
            acc /= (r1 - r0);
        }
        qs[mm * QLD + d] = acc;
    }
    const double *kb = a.kbar + ((size_t)U.b * a.KVH + U.h / (a.H / a.KVH)) * a.NK * DM;
    for (int jt = jt_begin; jt < jt_begin + tiles_per_cta && jt * 64 < U.ld; jt++) {
        int j0 = jt * 64;
        double acc[4][2][2];
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int n = 0; n < 2; n++) acc[i][n][0] = acc[i][n][1] = 0.0;
        for (int d0 = 0; d0 < DM; d0 += 32) {
            __syncthreads();
            for (int e = tid; e < 64 * 32; e += FS_NT) {
                int jj = e / 32, d = e % 32, j = j0 + jj;
                ks[jj * KLD + d] = j < U.ld ? kb[(size_t)j * DM + d0 + d] : 0.0;
            }
            __syncthreads();
#pragma unroll
            for (int k4 = 0; k4 < 32; k4 += 4)
                fs_dmma4<QLD, KLD, 2>(acc, qs + (wm * 32 + g) * QLD + d0 + k4 + cq,
                                      ks + (wn * 16 + g) * KLD + k4 + cq);
        }
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int m = m0 + wm * 32 + i * 8 + g;
            if (m >= members) continue;
            double *row = a.scores + U.off + (size_t)m * U.ld;
#pragma unroll
            for (int n = 0; n < 2; n++)
#pragma unroll
                for (int x = 0; x < 2; x++) {
                    int j = j0 + wn * 16 + n * 8 + 2 * cq + x;
                    if (j < U.ld) row[j] = acc[i][n][x];
                }
        }
    }
}

// block-wide exclusive prefix of a 0/1 flag (FS_NT threads); returns the block total in *tot
__device__ __forceinline__ int fs_scan01(int f, int *wtot, int *tot) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    unsigned bal = __ballot_sync(0xffffffffu, f);
    int before = __popc(bal & ((1u << lane) - 1));
    if (lane == 0) wtot[warp] = __popc(bal);
    __syncthreads();
    int base = 0, all = 0;
    for (int w = 0; w < FS_NT / 32; w++) {
        if (w < warp) base += wtot[w];
        all += wtot[w];
    }
    __syncthreads();
    *tot = all;
    return base + before;
}

// CTA: the top n = min(S, e) of one score row (e candidates; row in global memory) into tops: a radix
// select on fs_key, the winners sorted (score desc, id asc, NaN last). sk: the dynamic shared memory
// ([P] keys, [cache] scores, [P] ids); every thread calls it
__device__ void fs_topk_row(const double *row, int e, int n, int S, int *tops, int P, int cache,
                            unsigned long long *sk) {
    double *rc = (double *)(sk + P);
    int *sid = (int *)(rc + cache);
    __shared__ int hist[256], wtot[FS_NT / 32], s_cnt, s_bin, s_need, s_allin, s_ties;
    int tid = threadIdx.x;
    if (e <= cache) { // the radix passes then read shared memory
        for (int j = tid; j < e; j += FS_NT) rc[j] = row[j];
        __syncthreads();
        row = rc;
    }
    unsigned long long prefix = 0, mask = 0;
    int need = n, allin = 1; // e <= S: every candidate is in
    if (e > S) {
        allin = 0;
        for (int shift = 56; shift >= 0; shift -= 8) {
            for (int i = tid; i < 256; i += FS_NT) hist[i] = 0;
            __syncthreads();
            for (int j0 = 0; j0 < e; j0 += FS_NT) { // warp-aggregated: bins are few and hot
                int j = j0 + tid;
                unsigned long long u = j < e ? fs_key(row[j]) : 0;
                bool in = j < e && (u & mask) == prefix;
                unsigned act = __ballot_sync(0xffffffffu, in);
                if (in) {
                    int bin = (int)((u >> shift) & 255);
                    unsigned same = __match_any_sync(act, bin);
                    if ((threadIdx.x & 31) == __ffs(same) - 1) atomicAdd(&hist[bin], __popc(same));
                }
            }
            __syncthreads();
            if (tid == 0) {
                int cum = 0, bsel = 0;
                for (int bb = 255; bb >= 0; bb--) {
                    if (cum + hist[bb] >= need) {
                        bsel = bb;
                        break;
                    }
                    cum += hist[bb];
                }
                s_bin = bsel, s_need = need - cum, s_allin = hist[bsel] == need - cum;
            }
            __syncthreads();
            prefix |= (unsigned long long)s_bin << shift, mask |= 255ull << shift;
            need = s_need;
            if (s_allin) {
                allin = 1;
                break;
            }
            __syncthreads();
        }
    }
    // collect: keys above the prefix, and those equal to it (all, or the lowest ids: exact ties)
    if (tid == 0) s_cnt = 0, s_ties = 0;
    __syncthreads();
    for (int j0 = 0; j0 < e; j0 += FS_NT) {
        int j = j0 + tid;
        unsigned long long u = j < e ? fs_key(row[j]) : 0;
        bool in = j < e && (allin ? (u & mask) >= prefix : (u & mask) > prefix);
        bool tie = j < e && !allin && (u & mask) == prefix;
        int tot, r = fs_scan01(tie, wtot, &tot);
        if (tie && s_ties + r < need) in = true;
        if (in) {
            int p = atomicAdd(&s_cnt, 1);
            sk[p] = u, sid[p] = j;
        }
        __syncthreads();
        if (tid == 0) s_ties += tot;
        __syncthreads();
    }
    for (int p = n + tid; p < P; p += FS_NT) sk[p] = 0, sid[p] = INT_MAX;
    __syncthreads();
    // bitonic sort: key desc, id asc
    for (int size = 2; size <= P; size <<= 1)
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int i = tid; i < P / 2; i += FS_NT) {
                int lo = 2 * i - (i & (stride - 1)), hi = lo + stride;
                bool up = (lo & size) == 0; // this run sorted best-first
                unsigned long long ka = sk[lo], kb2 = sk[hi];
                int ia = sid[lo], ib = sid[hi];
                bool a_first = ka > kb2 || (ka == kb2 && ia < ib);
                if (a_first != up) sk[lo] = kb2, sk[hi] = ka, sid[lo] = ib, sid[hi] = ia;
            }
            __syncthreads();
        }
    for (int p = tid; p < n; p += FS_NT) tops[p] = sid[p];
}

// top-S of one member: grid (member, unit)
__global__ void __launch_bounds__(FS_NT) fs_topk(FsArgs a, int P, int cache) {
    extern __shared__ unsigned long long sk[]; // [P] keys, [cache] scores, then [P] ids
    const FsUnit U = a.units[blockIdx.y];
    int m = blockIdx.x, g0 = U.c * a.M, members = min(a.N, g0 + a.M) - g0;
    if (m >= members) return;
    int tid = threadIdx.x, e = fs_elig(a, U.c, g0 + m), n = min(a.S, e);
    int *tops = a.tops + ((size_t)blockIdx.y * a.M + m) * a.S;
    if (a.moba_bs) { // moba: the row's list directly: top ranks, then its own block, then -1
        tops = a.idx + (((size_t)U.b * a.H + U.h) * a.nblk + g0 + m) * a.W;
        for (int s2 = n + tid; s2 < a.W; s2 += FS_NT) tops[s2] = s2 == n ? e : -1;
    }
    if (n == 0) return;
    fs_topk_row(a.scores + U.off + (size_t)m * U.ld, e, n, a.S, tops, P, cache, sk);
}

// The merges' shared ends (fs_merge, fs_merge_sm; NT threads): a dense unit's list (its block's
// regions in order; returns true, the unit is done), and a unit's list from its nsel selected
// regions in sel, then its locals local0 .. gend - 1, then -1.
template <int NT>
__device__ __forceinline__ bool fs_dense_list(const FsArgs &a, int c, int gend, size_t li, size_t lo) {
    if (!(c < a.first || (c == a.nblk - 1 && a.last_dense))) return false;
    int *list = a.idx + lo;
    for (int s = threadIdx.x; s < a.W; s += NT) {
        list[s] = s < gend ? s : -1;
        if (a.kpos) a.kpos[lo + s] = s < gend ? s * a.w : 0;
    }
    if (a.kpos && threadIdx.x == 0) a.qpos[li] = c * a.Gq;
    return true;
}
template <int NT>
__device__ __forceinline__ void fs_write_list(const FsArgs &a, const int *sel, int nsel, int g0, int gend,
                                              int local0, size_t li, size_t lo) {
    int *list = a.idx + lo, ntot = nsel + gend - local0;
    for (int s = threadIdx.x; s < a.W; s += NT) {
        list[s] = s < nsel ? sel[s] : s < ntot ? local0 + (s - nsel) : -1;
        if (a.kpos) a.kpos[lo + s] = s < ntot ? s * a.w : 0;
    }
    if (a.kpos && threadIdx.x == 0) a.qpos[li] = (nsel + g0 - local0) * a.w;
}

// rank-major merge + locals (and the dense lists): one CTA per unit, grid-stride. s14: CTA 0 also copies
// the 16 ctrl words to stats (select_bf16_last_stats downloads them when asked; none where stats null)
__global__ void __launch_bounds__(FS_NT) fs_merge(FsArgs a, int nunits, const int *ctrl = nullptr,
                                                  int *stats = nullptr) {
    extern __shared__ int sel[]; // [S]
    __shared__ int wtot[FS_NT / 32];
    int tid = threadIdx.x;
    if (blockIdx.x == 0 && stats && tid < 16) stats[tid] = ctrl[tid];
    int *fp = a.fpos + (size_t)blockIdx.x * a.N;
    for (int ui = blockIdx.x; ui < nunits; ui += gridDim.x) {
        const FsUnit U = a.units[ui];
        int c = U.c, g0 = c * a.M, gend = min(a.N, g0 + a.M);
        size_t li = ((size_t)U.b * a.H + U.h) * a.nblk + c, lo = li * a.W;
        if (fs_dense_list<FS_NT>(a, c, gend, li, lo)) continue;
        int local0 = max(0, g0 - (a.lg - 1) * a.M), members = gend - g0;
        const int *tops = a.tops + (size_t)ui * a.M * a.S;
        int maxn = 0;
        for (int m = 0; m < members; m++) maxn = max(maxn, min(a.S, fs_elig(a, c, g0 + m)));
        int npos = maxn * members, cnt = 0, done = 0;
        // chunks of the rank-major scan, until S distinct regions: first positions by atomicMin
        // over the positions seen so far (later positions are larger, so a region's minimum
        // is final once its first occurrence is in), then an ordered compaction of the chunk
        for (int c0 = 0; c0 < npos && cnt < a.S; c0 += 2048) {
            int c1 = min(npos, c0 + 2048);
            for (int p = c0 + tid; p < c1; p += FS_NT) {
                int r = p / members, m = p % members;
                if (r < min(a.S, fs_elig(a, c, g0 + m))) atomicMin(fp + tops[(size_t)m * a.S + r], p);
            }
            __syncthreads();
            for (int p0 = c0; p0 < c1 && cnt < a.S; p0 += FS_NT) {
                int p = p0 + tid, id = -1;
                bool first = false;
                if (p < c1) {
                    int r = p / members, m = p % members;
                    if (r < min(a.S, fs_elig(a, c, g0 + m))) {
                        id = tops[(size_t)m * a.S + r];
                        first = __ldcg(fp + id) == p; // the atomics live in L2
                    }
                }
                int tot, rk = fs_scan01(first, wtot, &tot);
                if (first && cnt + rk < a.S) sel[cnt + rk] = id;
                cnt += tot;
            }
            done = c1;
        }
        __syncthreads();
        for (int p = tid; p < done; p += FS_NT) {
            int r = p / members, m = p % members;
            if (r < min(a.S, fs_elig(a, c, g0 + m))) fp[tops[(size_t)m * a.S + r]] = INT_MAX;
        }
        fs_write_list<FS_NT>(a, sel, min(cnt, a.S), g0, gend, local0, li, lo);
        __syncthreads(); // sel / fp reused by the next unit
    }
}


// s14: fs_merge with the first positions in shared memory (N <= FS_MSMN regions) and a chunk of the
// rank-major scan in two barriers (fs_merge: atomicMin on fpos in L2, two barriers per 256 positions).
// The LM row's q / k (a model's, not the tests' random ones) make the members of a block pick the same
// regions, so a unit scans many ranks before S distinct: s14 r2 (H200, LM row, MSLAB_SELECT_PROF) the
// merge took 28-134 us a call (~8% of the selection), the L2 atomics of one region by many members
// serialised. Per chunk of FS_MPT positions a thread: ids and the atomicMin's in shared memory, a
// barrier, the first occurrences counted, one block scan (a warp scan and the warp totals), the
// ordered writes. The same lists (the scan order and the first-occurrence rule are fs_merge's).
// Tried and removed (r4): the atomicMin's aggregated per warp (__match_any, lanes = one rank's
// members) with a ballot scan a chunk: skewed perf 0.540 ms vs fs_merge 0.601 (this: 0.520 vs 0.611 in r3)
#define FS_MPT 8
#define FS_MSMN 16384
// 512 threads a CTA (s14 r6, LM shape perf, ms a call, skewed / normal inputs: 256 threads 0.515 /
// 0.480, 512 0.488 / 0.483, 1024 0.498 / 0.498 (one CTA an SM: 192 CTAs, two waves); LM trace 689.5 vs
// 694.6 us a layer with 256): 4096 positions a chunk, two CTAs an SM at 64 registers, one wave
#define FS_MNT 512
__global__ void __launch_bounds__(FS_MNT) fs_merge_sm(FsArgs a, int nunits, const int *ctrl, int *stats) {
    constexpr int NT = FS_MNT;
    extern __shared__ int sel[]; // [S] the selection, then [N] first positions
    __shared__ int wtot[2][NT / 32];
    int *fs = sel + a.S;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    if (blockIdx.x == 0 && stats && tid < 16) stats[tid] = ctrl[tid];
    for (int ui = blockIdx.x; ui < nunits; ui += gridDim.x) {
        const FsUnit U = a.units[ui];
        int c = U.c, g0 = c * a.M, gend = min(a.N, g0 + a.M);
        size_t li = ((size_t)U.b * a.H + U.h) * a.nblk + c, lo = li * a.W;
        if (fs_dense_list<NT>(a, c, gend, li, lo)) continue;
        int local0 = max(0, g0 - (a.lg - 1) * a.M), members = gend - g0;
        const int *tops = a.tops + (size_t)ui * a.M * a.S;
        int maxn = 0;
        for (int m = 0; m < members; m++) maxn = max(maxn, min(a.S, fs_elig(a, c, g0 + m)));
        for (int i = tid; i < a.N; i += NT) fs[i] = INT_MAX;
        __syncthreads();
        int npos = maxn * members, cnt = 0, k = 0;
        for (int c0 = 0; c0 < npos && cnt < a.S; c0 += NT * FS_MPT, k ^= 1) {
            int ids[FS_MPT];
#pragma unroll
            for (int i = 0; i < FS_MPT; i++) {
                int p = c0 + tid * FS_MPT + i, r = p / members, m = p - r * members;
                ids[i] = p < npos && r < min(a.S, fs_elig(a, c, g0 + m)) ? tops[(size_t)m * a.S + r] : -1;
                if (ids[i] >= 0) atomicMin(fs + ids[i], p);
            }
            __syncthreads();
            unsigned fm = 0;
#pragma unroll
            for (int i = 0; i < FS_MPT; i++)
                if (ids[i] >= 0 && fs[ids[i]] == c0 + tid * FS_MPT + i) fm |= 1u << i;
            int n = __popc(fm), inc = n;
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                int v = __shfl_up_sync(0xffffffffu, inc, o);
                if (lane >= o) inc += v;
            }
            if (lane == 31) wtot[k][warp] = inc;
            __syncthreads();
            int base = inc - n, tot = 0;
            for (int w = 0; w < NT / 32; w++) {
                int t = wtot[k][w];
                base += w < warp ? t : 0, tot += t;
            }
#pragma unroll
            for (int i = 0; i < FS_MPT; i++)
                if (fm >> i & 1) {
                    if (cnt + base < a.S) sel[cnt + base] = ids[i];
                    base++;
                }
            cnt += tot;
        }
        __syncthreads();
        fs_write_list<NT>(a, sel, min(cnt, a.S), g0, gend, local0, li, lo);
        __syncthreads(); // sel / fs reused by the next unit
    }
}

// ---------------------------------------------------------------------------------------------
// Fused path (fx_select, the default unless MSLAB_SELECT_BF16=old): scores and the per-member
// top-S in one kernel, no score row in global memory. Persistent CTAs (one per SM: 219 KB smem)
// take work items (64 members of a unit) from an atomic counter, costliest units first. Per
// item: pooled q in smem; key tiles of 128 regions, ascending (CTAs on one kv head sweep it
// together: L2 reuse), kbar chunks of 32 dims prefetched into registers one chunk ahead; scores
// on the fp64 tensor cores, m8n8k4 as fs_scores_mma (the same products in dimension order); each
// score is tested against the row's running threshold, and passes are appended to the row's
// global buffer (64-bit order key + id; L2-hot) and to a 16-bit smem sketch (the order key of the
// score rounded down to bf16: a lower bound of it). When a sketch fills, its S-th largest becomes the
// threshold (at least S scores seen are >= that value, so a score below it can never be in the
// top S; equal ones pass, ties are settled at the end). At the end of the item: the final
// threshold, the buffer entries at or above it (~S + a few) into smem, a warp bitonic sort
// (key desc, id asc, NaN last), the first min(S, e) ids into tops; fs_merge as before.
// A row whose buffer overflows (FX_CAP inserts; e.g. scores rising along the row) or whose
// survivors exceed FX_PMAX (masses of ties) makes the whole call fall back to the old path.
#define FX_NT 256
#define FX_KT 128   // key regions per tile
#define FX_KLD 36   // kbar chunk row stride (doubles): 4 mod 16, conflict-free fragments
#define FX_CAPF 896 // sketch entries per member row
#define FX_PMAX 1024 // survivors per row for the final sort
#define FX_CAPG 6144 // global buffer entries per member row (at most; maxld when smaller)
#define TP_CAPF 960  // tp_select: sketch entries per member row (a multiple of 64: tp_compact_reg; s9 r4:
                     // 704, 128K 16.95 vs 16.74 ms at 832; s10: 960 in the smem of fx_compact's histograms,
                     // rows turn into histogram rows at their 1st compaction; r4: 832 (with updates every
                     // 256) 16K 0.65 / 32K 2.09 / 64K 5.67 / 128K 16.37 vs 0.61 / 1.99 / 5.54 / 16.17;
                     // 1M 552 vs 574 ms (prof on) / 541 (updates every 384))
#define TP_HB 256    // tp_select's histogram mode: bins per row, 8 a lane (1 KB of its 1920-byte sketch;
                     // the rest: <= 448 keys inserted since the last update)
#define TP_HUMAX(capf) ((capf) - 2 * TP_HB - TP_KT + 1) // updates at least this often: the ring fits (960: 385)
#define TP_HUPD 384  // histogram rows: a threshold update every 384 inserts (s10; s8 / s9: 128; under
                     // TP_HUMAX: 385 for 960-entry sketches). s9 r6: 256 made 1M fall back to fused (1.79 s):
                     // s10 r2 found rows of 513-516 survivors (over TP_PMAX: bins of 4 keys; 493 at 128 with
                     // the bench's inputs), now raised in the finish (tp_raise). s10 r3 (960, keys at
                     // insert): 256 vs 128: 128K 16.98 vs 17.29 ms, 1M 588 vs 601; r4: 384 vs 256: 16K 0.61
                     // / 0.61, 32K 2.01 / 1.99, 64K 5.58 / 5.54, 128K 16.09 / 16.17, 1M 541 / 574 (prof on)
#define TP_HSH 2     // histogram rows: bins of up to 2^2 keys (s8 r5; s9 r6: up to 2^3, 128K 16.27 vs 16.16)
#define TP_CWIN 64   // sweep compactions stop at a key keeping S .. S + 63 (s8; s9 r6: 128, 16.11 vs 16.16)

__device__ __forceinline__ unsigned fx_key16(double s) { // order key of a bf16 lower bound
    if (isnan(s)) return 0u;
    if (s == 0.0) s = 0.0; // -0 == +0
    unsigned u = __float_as_uint(__double2float_rd(s));
    unsigned k = (u >> 31) ? ~u : (u | 0x80000000u);
    return k >> 16; // truncating the order key rounds toward -inf
}
__device__ __forceinline__ double fx_unkey(unsigned long long k) { // inverse of fs_key
    if (k == 0ull) return __longlong_as_double(0x7ff8000000000000ll);
    unsigned long long u = (k >> 63) ? (k & 0x7fffffffffffffffull) : ~k;
    return __longlong_as_double((long long)u);
}

__device__ void fx_keep(uint16_t *v, int n, unsigned *cnt, int *thr, int tau, int need, int S);
// warp: keep the S largest of a row's sketch (in order), threshold = the S-th largest
__device__ void fx_compact(uint16_t *v, unsigned *cnt, int *thr, int *hist, int S) {
    int lane = threadIdx.x & 31;
    int n = (int)(*cnt & 0xffffu);
    if (n <= S) return;
    for (int b = lane; b < 256; b += 32) hist[b] = 0;
    __syncwarp();
    for (int p = lane; p < n; p += 32) atomicAdd(&hist[v[p] >> 8], 1);
    __syncwarp();
    int a1, b1 = sel_find(hist, S, &a1);
    __syncwarp();
    for (int b = lane; b < 256; b += 32) hist[b] = 0;
    __syncwarp();
    for (int p = lane; p < n; p += 32)
        if ((v[p] >> 8) == b1) atomicAdd(&hist[v[p] & 255], 1);
    __syncwarp();
    int a2, b2 = sel_find(hist, S - a1, &a2);
    fx_keep(v, n, cnt, thr, b1 << 8 | b2, S - a1 - a2, S);
}
// warp: keep the sketch's entries above tau and the first `need` equal to it (S in all), in order;
// the row's threshold becomes tau
__device__ void fx_keep(uint16_t *v, int n, unsigned *cnt, int *thr, int tau, int need, int S) {
    int lane = threadIdx.x & 31;
    unsigned lt = (1u << lane) - 1;
    int w = 0, ties = 0;
    for (int p0 = 0; p0 < n; p0 += 32) { // ordered in-place compaction (writes trail reads)
        int p = p0 + lane, x = p < n ? (int)v[p] : -1;
        bool eq = x == tau;
        unsigned beq = __ballot_sync(0xffffffffu, eq);
        bool keep = x > tau || (eq && ties + __popc(beq & lt) < need);
        unsigned bk = __ballot_sync(0xffffffffu, keep);
        __syncwarp();
        if (keep) v[w + __popc(bk & lt)] = (uint16_t)x;
        w += __popc(bk), ties += __popc(beq);
        __syncwarp();
    }
    if (lane == 0) *cnt = (*cnt & 0xffff0000u) | (unsigned)S, *thr = tau;
    __syncwarp();
}

// pooled q of members gm .. gm + RM - 1 into qs [RM][DM + 4] (rows >= `rows`: 0), and into qg
// [RM][DM] when given, as the CPU's pool_rows (sel_pool2's sums): K (row, dim pair) tasks a thread at
// once, their 16 K loads in flight where the regions are whole (s13: K 4; one task a thread before: a
// chain of 8 round trips to HBM at each item's start, the whole CTA waiting; r3 / r4, H200,
// paper config, ms per call: K 2 32K 1.81 vs 1.86, 64K 4.88 / 4.98, 128K 14.30 / 14.47; K 4 1.76 /
// 4.74 / 13.76 vs K 2's 1.80 / 4.79 / 13.88)
template <int DM, int RM, int NT = FX_NT, int K = 4>
__device__ __forceinline__ void fx_pool_q(double *qs, const FsArgs &a, const FsUnit &U, int gm, int rows,
                                           double *qg) {
    constexpr int QLD = DM + 4, NE = RM * DM / 2;
    size_t st = (size_t)a.H * a.D / 2; // token stride in dim pairs
    const uint32_t *qb = (const uint32_t *)(a.q + ((size_t)U.b * a.T * a.H + U.h) * a.D);
    for (int e0 = threadIdx.x; e0 < NE; e0 += K * NT) {
        int mm[K], d[K], n[K];
        const uint32_t *src[K];
        double m0[K], m1[K];
        bool full = true;
#pragma unroll
        for (int k = 0; k < K; k++) {
            int e = e0 + k * NT;
            mm[k] = e / (DM / 2), d[k] = 2 * (e % (DM / 2));
            int r0 = (gm + mm[k]) * a.w;
            n[k] = e < NE && mm[k] < rows ? min(a.T, r0 + a.w) - r0 : 0;
            src[k] = qb + (size_t)(n[k] > 0 ? r0 : 0) * st + d[k] / 2;
            m0[k] = m1[k] = 0.0, full = full && n[k] == 16;
        }
        if (full) { // sel_pool2's sums of each, their loads together
            uint32_t v[K][16];
#pragma unroll
            for (int t = 0; t < 16; t++)
#pragma unroll
                for (int k = 0; k < K; k++) v[k][t] = __ldg(src[k] + t * st);
#pragma unroll
            for (int k = 0; k < K; k++) {
                double a0 = 0.0, a1 = 0.0;
#pragma unroll
                for (int t = 0; t < 16; t++)
                    a0 += (double)__uint_as_float(v[k][t] << 16), a1 += (double)__uint_as_float(v[k][t] & 0xffff0000u);
                m0[k] = a0 / 16, m1[k] = a1 / 16;
            }
        } else
#pragma unroll
            for (int k = 0; k < K; k++)
                if (n[k] > 0) sel_pool2(src[k], st, n[k], &m0[k], &m1[k]);
#pragma unroll
        for (int k = 0; k < K; k++) {
            if (e0 + k * NT >= NE) continue;
            qs[mm[k] * QLD + d[k]] = m0[k], qs[mm[k] * QLD + d[k] + 1] = m1[k];
            if (qg) *(double2 *)(qg + mm[k] * DM + d[k]) = make_double2(m0[k], m1[k]);
        }
    }
}

// warp exclusive prefix sum
__device__ __forceinline__ unsigned sel_warp_excl(unsigned x) {
    int lane = threadIdx.x & 31;
    unsigned v = x;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        unsigned y = __shfl_up_sync(0xffffffffu, v, o);
        if (lane >= o) v += y;
    }
    return v - x;
}
// warp, tp (s7; the old path and MSLAB_SELECT_TPRC removed in s9): fx_compact in registers. The row's sketch (n <= NW * 64
// keys) loaded once as word pairs; the S-th largest tau by bisection on warp-summed counts, from
// the old threshold t (>= S entries are >= t: those kept last time) to the maximum; the entries
// above tau and the first need equal to it (lanes in order) kept, their slots by warp prefixes:
// no shared atomics and no chain of loads, ballots and stores per 32 entries. fx_compact ran
// ~14.6K cycles a row at 128K (s7 r2: 21% of tp_select, and most of its 14% tile wait). tau 0
// (the S-th largest the lowest key, NaN scores): fx_keep (s10: fx_compact before, so tp_select
// no longer needs its histogram scratch)
// hm (tp's histogram mode, s8; MSLAB_SELECT_TPH removed in s9): the row may turn into a histogram over the same
// words (tp_hist_update; *hm = 1 + sh, bins of 2^sh keys, sh <= hsh) instead of keeping its S
// largest
__device__ void tp_hist_update(int *h, unsigned *cnt, int *thr, int S, int sh);
template <int NW>
__device__ void tp_compact_reg(uint16_t *v, unsigned *cnt, int *thr, int S, int *hm = nullptr, int win = 0,
                               int hsh = 0) {
    int lane = threadIdx.x & 31, n = (int)(*cnt & 0xffffu);
    if (n <= S) return;
    const uint32_t *vw = (const uint32_t *)v;
    uint32_t wv[NW];
    unsigned mx = 0;
#pragma unroll
    for (int k = 0; k < NW; k++) { // entries 2 (lane + 32 k), + 1; past n: 0 (never counted below)
        int p = 2 * (lane + 32 * k);
        uint32_t x = p < n ? vw[lane + 32 * k] : 0u;
        if (p + 1 >= n) x &= 0xffffu;
        wv[k] = x, mx = max(mx, max(x & 0xffffu, x >> 16));
    }
    auto count = [&](unsigned c) { // entries >= c (c >= 1: the padding never counts)
        unsigned acc = 0;
#pragma unroll
        for (int k = 0; k < NW; k++) acc += __vsetgeu2(wv[k], c * 0x10001u);
        return __reduce_add_sync(0xffffffffu, (acc & 0xffffu) + (acc >> 16));
    };
    unsigned lo = (unsigned)*thr, hi = __reduce_max_sync(0xffffffffu, mx);
    int clo = 0; // count(>= lo) once known; win > 0: the search stops at any lo that keeps S .. S + win
    while (lo < hi) { // count(>= lo) >= S
        unsigned mid = (lo + hi + 1) >> 1;
        int c = (int)count(mid);
        if (c >= S) {
            lo = mid, clo = c;
            if (c <= S + win - 1) break;
        } else hi = mid - 1;
    }
    if (lo == 0) { // (NaN scores) the padding has key 0 too: fx_keep's ordered loop over the n entries
        fx_keep(v, n, cnt, thr, 0, S - (int)count(1), S);
        return;
    }
    unsigned tau = lo;
    // histogram: once few entries lie past its bins (keys tau + (255 << sh) up: S / 8 at most;
    // e.g. tau negative and the entries positive: ~32K keys apart), each entry >= tau in bin
    // (key - tau) >> sh (the top bin: all from tau + (255 << sh) up)
    int sh = 0; // histogram bins of 2^sh keys, sh <= hsh: the finest with few keys past them
    bool few = false;
    for (; hm; sh++) {
        unsigned c = tau + ((TP_HB - 1u) << sh);
        few = c > 0xffffu || (int)count(c) <= S / 8;
        if (few || sh >= hsh) break;
    }
    if (few) {
        int *h = (int *)v;
        __syncwarp(); // every lane's loads done
        ((int4 *)h)[2 * lane] = make_int4(0, 0, 0, 0), ((int4 *)h)[2 * lane + 1] = make_int4(0, 0, 0, 0);
        __syncwarp();
#pragma unroll
        for (int k = 0; k < NW; k++)
#pragma unroll
            for (int hh = 0; hh < 2; hh++) {
                unsigned a = hh ? wv[k] >> 16 : wv[k] & 0xffffu; // padding 0 < tau
                if (a >= tau) atomicAdd(h + min((a - tau) >> sh, (unsigned)TP_HB - 1), 1);
            }
        __syncwarp();
        if (lane == 0) *cnt &= 0xffff0000u, *thr = (int)tau, *hm = 1 + sh;
        __syncwarp();
        tp_hist_update(h, cnt, thr, S, sh); // the S-th key (to 2^sh) when the search stopped early
        return;
    }
    // entries equal to tau to keep: S - those above; an early stop keeps all clo of them
    bool early = win > 0 && clo > 0 && clo <= S + win - 1;
    int need = early ? INT_MAX : S - (tau < 0xffffu ? (int)count(tau + 1) : 0);
    unsigned gt = 0, eq = 0;
#pragma unroll
    for (int k = 0; k < NW; k++) {
        unsigned a0 = wv[k] & 0xffffu, a1 = wv[k] >> 16;
        gt += (a0 > tau) + (a1 > tau), eq += (a0 == tau) + (a1 == tau);
    }
    unsigned pe = sel_warp_excl(eq); // ties before this lane's
    int keq = min(max(need - (int)pe, 0), (int)eq);
    unsigned pos = sel_warp_excl(gt + keq);
    __syncwarp(); // every lane's loads done
    int te = (int)pe;
#pragma unroll
    for (int k = 0; k < NW; k++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            unsigned a = h ? wv[k] >> 16 : wv[k] & 0xffffu;
            bool keep = a > tau || (a == tau && te < need);
            te += a == tau;
            if (keep) v[pos++] = (uint16_t)a;
        }
    __syncwarp();
    if (lane == 0) *cnt = (*cnt & 0xffff0000u) | (unsigned)(early ? clo : S), *thr = (int)tau;
    __syncwarp();
}

// warp, tp's histogram mode: a row's threshold from its histogram h[TP_HB] over the sketch words
// (bin b: inserts since the row turned, with lower-bound key >= thr + (b << sh): below thr +
// (b + 1 << sh) too under the top bin; those below thr not counted; the keys inserted since the
// last update, in the sketch words past the bins, binned first): the largest b with >= S entries
// in bins >= b; thr += b << sh, the bins shifted down by b (those below dropped: counts only
// ever understate a key, so the threshold stays one that S candidates reach). ~50 instructions
// against tp_compact_reg's bisection over 11 words a lane (~9-12K cycles a row at 128K); and no
// sketch to fill, so the threshold follows the inserts closely (every `upd` inserts)
__device__ void tp_hist_update(int *h, unsigned *cnt, int *thr, int S, int sh) {
    int lane = threadIdx.x & 31, n = (int)(*cnt & 0xffffu), t = *thr;
    const uint16_t *ring = (const uint16_t *)(h + TP_HB); // lower-bound keys inserted since the last update
    for (int p = lane; p < n; p += 32) {
        int b = (int)ring[p] - t;
        if (b >= 0) atomicAdd(h + min(b >> sh, TP_HB - 1), 1);
    }
    __syncwarp();
    int4 x0 = ((const int4 *)h)[2 * lane], x1 = ((const int4 *)h)[2 * lane + 1];
    int hv[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w}, s = 0;
#pragma unroll
    for (int i = 0; i < 8; i++) s += hv[i];
    int inc = s; // entries in the bins of lanes >= this one
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        int y = __shfl_down_sync(0xffffffffu, inc, o);
        if (lane + o < 32) inc += y;
    }
    int c = inc - s, b = 0;
#pragma unroll
    for (int i = 7; i >= 0; i--) {
        c += hv[i];
        if (c >= S && b == 0 && c - hv[i] < S) b = 8 * lane + i;
    }
    b = __reduce_max_sync(0xffffffffu, b);
    if (b > 0) {
        int nv[8];
#pragma unroll
        for (int i = 0; i < 8; i++) nv[i] = 8 * lane + i + b < TP_HB ? h[8 * lane + i + b] : 0;
        __syncwarp();
        ((int4 *)h)[2 * lane] = make_int4(nv[0], nv[1], nv[2], nv[3]);
        ((int4 *)h)[2 * lane + 1] = make_int4(nv[4], nv[5], nv[6], nv[7]);
    }
    __syncwarp();
    if (lane == 0) *cnt &= 0xffff0000u, *thr += b << sh;
    __syncwarp();
}

// fused: after a barrier (every insert in): each row's sketch holding more than `over` entries cut
// to its S largest (fx_compact), a warp per row
__device__ __forceinline__ void fx_compact_rows(uint16_t *sk, int capf, unsigned *cnt, int *thr,
                                                int *hist, int rows, int S, int over) {
    __syncthreads();
    int warp = threadIdx.x >> 5;
    for (int r = warp; r < rows; r += blockDim.x / 32)
        if ((int)(cnt[r] & 0xffffu) > over) fx_compact(sk + r * capf, &cnt[r], &thr[r], hist + warp * 256, S);
}

// tp: after the caller's barrier (every insert in), each row's threshold brought up to date, a warp per row:
// sketch rows holding more than `over` entries compacted (tp_compact_reg; turning
// into histogram rows where they can when tohist), histogram rows with `upd` or more inserts
// since their last update (tp_hist_update). fl: those rows' masks, flagged by the inserts that
// crossed over / upd (no second barrier); else found here from the counts (rows <= 32).
// Returns (compactions << 16) + updates of this warp (the profile's counts)
// the count past which a row needs work: a sketch row (hm 0) a compaction, a histogram row an update
// (shared by the inserts' flags and the masks below)
__device__ __forceinline__ int tp_flag_lim(int hm, int over, int upd) { return hm ? upd - 1 : over; }
template <int CAPF>
__device__ __forceinline__ int tp_update_rows(uint16_t *sk, unsigned *cnt, int *thr, int *hm, int rows, int S,
                                              int over, int upd, bool tohist, int win, int hsh,
                                              const unsigned *fl = nullptr) {
    // the rows with work (every warp finds the same masks), dealt out in turn: compactions first,
    // then updates
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarp = blockDim.x / 32, n = 0, k = 0;
    unsigned mc, mu;
    if (fl) {
        mc = fl[0], mu = fl[1];
    } else {
        int c = lane < rows ? (int)(cnt[lane] & 0xffffu) : 0, hr = lane < rows ? hm[lane] : 0;
        mc = __ballot_sync(0xffffffffu, lane < rows && !hr && c > tp_flag_lim(0, over, upd));
        mu = __ballot_sync(0xffffffffu, lane < rows && hr && c > tp_flag_lim(1, over, upd));
        __syncthreads(); // every warp has the masks before any row changes
    }
    for (; mc; mc &= mc - 1, k++) {
        int r = __ffs(mc) - 1;
        if (k % nwarp != warp) continue;
        tp_compact_reg<CAPF / 64>(sk + r * CAPF, &cnt[r], &thr[r], S, tohist ? &hm[r] : nullptr, win, hsh);
        n += 1 << 16;
    }
    for (; mu; mu &= mu - 1, k++) {
        int r = __ffs(mu) - 1;
        if (k % nwarp == warp)
            tp_hist_update((int *)(sk + r * CAPF), &cnt[r], &thr[r], S, hm[r] - 1), n++;
    }
    return n;
}

struct FxArgs {
    FsArgs a;
    const int *ord; // work order: batch unit indices, costliest first
    unsigned long long *gkey;
    int *gid;
    int *ctrl; // [0] work counter, [1] failed rows, [2] max inserts of a row; tp: [3] max key
               // norm, [4] / [5] exact scores / survivors (all rows); failed rows by cause (CTL_*
               // below; the fallback note and select_bf16_last_stats)
    int nitems, mt, capg;
    double *qg; // tp: [grid][RM][D] each CTA's pooled q rows (the finish's exact scores)
    // two-pass path (tp_select): kbar as bf16 pairs [B, KVH, N, 2, D], key norm bounds [B, KVH,
    // nkp], the row buffers (gkey) as (s' << 32 | hi16 << 16 | id) words
    const uint16_t *kbf;
    const float *knorm, *kfac; // kfac (fp16 limbs): 2^-e of each key's scale 2^e, as knorm
    int pcap;                  // tp: survivors past this raise the row's threshold (TP_PMAX; the tests'
                               // select_bf16_tp_cap)
    int hupd;                  // tp histogram rows: a threshold update every hupd inserts (TP_HUPD; the
                               // tests' select_bf16_tph_upd)
    unsigned long long *prof;  // MSLAB_SELECT_PROF: tp_select's clock64 section sums (TP_NPROF), else null
    int *tinit;                // two-pass (s11): pass 1's thresholds per member row [B, H, nblk, M]
    const uint16_t *kbw;       // tp_wgt (s12): the key limbs as pre-swizzled 64-key tiles [B, KVH, ntw, 2, D, 64]
    int ntw;                   // tiles per kv head (kbw)
    unsigned long long *pcta;  // MSLAB_SELECT_PROF (s13): [grid][2] each CTA's first / last globaltimer
    int *fail;                 // s14: per row of the batch [units][M], 1 where the row failed (fs_redo redoes it)
    int *work;                 // s14: this kernel's work counter (fx_next; ctrl[0] before), cleared with ctrl
    int force;                 // tests (select_bf16_force_redo): fs_redo also redoes every force-th row (0: none)
};
__device__ __forceinline__ unsigned long long tp_gtime() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
// tp_select's profile sections (MSLAB_SELECT_PROF=1: per-warp clock64 sums, printed per call)
#define TP_NPROF 19
enum { TPP_NEXT, TPP_PRO, TPP_WAIT, TPP_MMA, TPP_FILT, TPP_INS, TPP_BAR, TPP_CMP, TPP_FCMP, TPP_SURV, TPP_SORT,
       TPP_CLU, TPP_EXACT, TPP_ORD, TPP_FWAIT, TPP_NTILE, TPP_NCMP, TPP_NUPD, TPP_NITEM };
static const char *tp_prof_names[TP_NPROF] = {"next+pool", "norms+afrag", "tile wait", "mma", "filter", "insert",
                                             "barrier", "compact", "final compact", "survivors", "sort",
                                             "clusters", "exact", "order+write", "finish wait", "#tiles", "#row compactions",
                                             "#hist updates", "#items"};

// the next work item (RM members of a unit) of a persistent fx_select / tp_select CTA: false when
// none is left; else U, m0, rows, the rows' eligible counts, cleared counters and thresholds, and
// their pooled q in qs (zeros past rows; and in qg when given). Barriers at the start (the previous
// item is done with every shared array) and the end.
template <int DM, int RM, int NT = FX_NT>
__device__ bool fx_next(const FxArgs &x, double *qs, int *s_item, int *erow, unsigned *cnt, int *thr,
                        FsUnit &U, int &m0, int &rows, double *qg = nullptr) {
    const FsArgs &a = x.a;
    for (;;) {
        __syncthreads();
        if (threadIdx.x == 0) *s_item = atomicAdd(x.work, 1);
        __syncthreads();
        int item = *s_item;
        if (item >= x.nitems) return false;
        m0 = (item % x.mt) * RM;
        U = a.units[x.ord[item / x.mt]];
        int g0 = U.c * a.M, members = min(a.N, g0 + a.M) - g0;
        if (m0 >= members) continue;
        rows = min(RM, members - m0);
        if (threadIdx.x < RM) {
            int r = threadIdx.x;
            erow[r] = r < rows ? fs_elig(a, U.c, g0 + m0 + r) : 0;
            cnt[r] = 0, thr[r] = 0;
        }
        fx_pool_q<DM, RM, NT>(qs, a, U, g0 + m0, rows, qg);
        __syncthreads();
        return true;
    }
}

// warp, one row of an item: the entries of its global buffer (load(p), p < the row's inserts ng)
// that pass keep(v), in order, through put(pos, v), pos < cap; returns how many. -1: the row
// failed (buffer or cap overflow, fewer than nsel; the call falls back to the next path) and its
// list got valid ids (fs_merge still reads it). retry: more than cap is returned as is (not a
// failure: the caller raises its threshold and calls again)
#define FX_SURV_U 8 // survivor loads in flight per lane (the row buffers are mostly past L2)
// ctrl words past [5]: rows failed by buffer overflow (more inserts than capg), by survivors (more
// than the finish's cap), by too few (< nsel); tp: by an invalid bound; the most survivors of a row;
// tp's histogram rows (rows that turned) and their threshold updates; tp rows whose threshold the
// finish raised (more than x.pcap survivors, TP_PMAX but in the tests; counted where t moved)
// (s14) CTL_REDONE: rows redone by fs_redo
enum { CTL_FBUF = 6, CTL_FSURV, CTL_FFEW, CTL_FBOUND, CTL_MAXSURV, CTL_HROWS, CTL_HUPD, CTL_RAISED, CTL_REDONE, CTL_N };
static_assert(CTL_N <= 16, "ctrl: 64 bytes cleared per call");
struct FxEnt {
    unsigned long long k;
    int id;
};
template <class Load, class Keep, class Put>
__device__ __forceinline__ int fx_survivors(const FxArgs &x, unsigned cnt_r, int nsel, int *tops,
                                            int cap, Load load, Keep keep, Put put, bool retry = false) {
    int lane = threadIdx.x & 31, ng = (int)(cnt_r >> 16), w = 0;
    unsigned lt = (1u << lane) - 1;
    if (lane == 0) atomicMax(x.ctrl + 2, ng);
    if (ng <= x.capg)
        for (int p0 = 0; p0 < ng; p0 += 32 * FX_SURV_U) { // FX_SURV_U loads in flight per lane
            decltype(load(0)) v[FX_SURV_U];
#pragma unroll
            for (int u = 0; u < FX_SURV_U; u++) v[u] = load(min(p0 + 32 * u + lane, ng - 1));
#pragma unroll
            for (int u = 0; u < FX_SURV_U; u++) {
                bool in = p0 + 32 * u + lane < ng && keep(v[u]);
                unsigned b = __ballot_sync(0xffffffffu, in);
                int pos = w + __popc(b & lt);
                if (in && pos < cap) put(pos, v[u]);
                w += __popc(b);
            }
        }
    if (lane == 0) atomicMax(x.ctrl + CTL_MAXSURV, w);
    if (retry && ng <= x.capg && w > cap) {
        __syncwarp(); // tp_raise reuses the area put() wrote
        return w;
    }
    if (ng > x.capg || w > cap || w < nsel) {
        if (lane == 0) {
            atomicAdd(x.ctrl + 1, 1),
                atomicAdd(x.ctrl + (ng > x.capg ? CTL_FBUF : w > cap ? CTL_FSURV : CTL_FFEW), 1);
            x.fail[(tops - x.a.tops) / x.a.S] = 1; // the row's index in the batch (its tops row)
        }
        for (int s = lane; s < nsel; s += 32) tops[s] = s;
        __syncwarp();
        return -1;
    }
    __syncwarp();
    return w;
}

// s14: the rows a selection kernel failed (x.fail: buffer or survivor overflow, too few, an invalid
// bound), redone exactly in the same stream, so that no call needs the host to see ctrl (before s14
// the host downloaded it and ran the whole call again on the next path: tp_select, fused, old).
// A CTA a row (grid-stride over the batch's rows): the row's pooled q (sel_pool2, the CPU's
// pool_rows), its e scores as the CPU's (dmul, then dadd in dimension order; tp_exact's), into the
// CTA's sb row (e <= ldmax), then fs_topk's radix select and sort into the row's tops. Launched after
// every fused / tp selection kernel; exits at once where ctrl[1] says no row failed (and no test
// forces rows: x.force). The first 4 calls with failures in a process print a note (device printf).
__device__ int g_redo_notes = 0;
template <int DM>
__global__ void __launch_bounds__(FS_NT) fs_redo(FxArgs x, int nrows, double *sb, int ldmax, int P, int cache) {
    const int nfail = *(volatile int *)(x.ctrl + 1);
    if (nfail == 0 && x.force <= 0) return;
    extern __shared__ unsigned long long sk[];
    __shared__ double qr[DM];
    const FsArgs &a = x.a;
    if (blockIdx.x == 0 && threadIdx.x == 0 && nfail > 0 && atomicAdd(&g_redo_notes, 1) < 4)
        printf("select_bf16: %d rows failed (buffer %d, survivors %d, too few %d, bound %d; max inserts %d, "
               "max survivors %d): redone exactly (fs_redo)\n",
               nfail, x.ctrl[CTL_FBUF], x.ctrl[CTL_FSURV], x.ctrl[CTL_FFEW], x.ctrl[CTL_FBOUND], x.ctrl[2],
               x.ctrl[CTL_MAXSURV]);
    double *row = sb + (size_t)blockIdx.x * ldmax;
    for (int ri = blockIdx.x; ri < nrows; ri += gridDim.x) {
        if (!x.fail[ri] && !(x.force > 0 && ri % x.force == 0)) continue;
        const FsUnit U = a.units[ri / a.M];
        int m = ri % a.M, g0 = U.c * a.M, members = min(a.N, g0 + a.M) - g0;
        if (U.ld <= 0 || m >= members) continue;
        int e = fs_elig(a, U.c, g0 + m), n = min(a.S, e);
        if (n <= 0) continue;
        __syncthreads(); // qr, the shared arrays of the last row
        if (threadIdx.x < DM / 2) {
            int r0 = (g0 + m) * a.w;
            size_t st = (size_t)a.H * a.D / 2;
            const uint32_t *src = (const uint32_t *)(a.q + ((size_t)U.b * a.T * a.H + U.h) * a.D) + r0 * st + threadIdx.x;
            sel_pool2(src, st, min(a.T, r0 + a.w) - r0, &qr[2 * threadIdx.x], &qr[2 * threadIdx.x + 1]);
        }
        __syncthreads();
        const double *kd = a.kbar + ((size_t)U.b * a.KVH + U.h / (a.H / a.KVH)) * a.NK * DM;
        for (int j = threadIdx.x; j < e && j < ldmax; j += FS_NT) {
            const double *kr = kd + (size_t)j * DM;
            double sc = 0.0;
#pragma unroll 8
            for (int d = 0; d < DM; d++) sc = __dadd_rn(sc, __dmul_rn(qr[d], kr[d]));
            row[j] = sc;
        }
        __syncthreads();
        fs_topk_row(row, e, n, a.S, a.tops + (size_t)ri * a.S, P, cache, sk);
        if (threadIdx.x == 0) atomicAdd(x.ctrl + CTL_REDONE, 1);
    }
}

template <int DM>
__global__ void __launch_bounds__(FX_NT, 1) fx_select(FxArgs x) {
    constexpr int QLD = DM + 4, KLD = FX_KLD, NCH = DM / 32, CAPF = FX_CAPF;
    const FsArgs &a = x.a;
    extern __shared__ double fs_sm[];
    double *qs = fs_sm, *ks = fs_sm + 64 * QLD;         // [64][QLD], [FX_KT][KLD]
    uint16_t *sk = (uint16_t *)(ks + FX_KT * KLD);      // [64][CAPF]
    int *hist = (int *)ks;                              // [8][256], between tiles only
    __shared__ unsigned cnt[64]; // inserts: global (high 16 bits), sketch (low 16 bits)
    __shared__ int thr[64], erow[64], s_item;
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, cq = lane & 3;
    int wm = warp >> 2, wn = warp & 3; // 32-member x 32-key warp tile
    unsigned long long *gk = x.gkey + (size_t)blockIdx.x * 64 * x.capg;
    int *gi = x.gid + (size_t)blockIdx.x * 64 * x.capg;
    FsUnit U;
    int m0, rows;
    while (fx_next<DM, 64>(x, qs, &s_item, erow, cnt, thr, U, m0, rows)) {
        int ld = erow[rows - 1]; // eligibility grows with the member
        const double *kb = a.kbar + ((size_t)U.b * a.KVH + U.h / (a.H / a.KVH)) * a.NK * DM;
        int ntile = (ld + FX_KT - 1) / FX_KT;
        double2 pf[8]; // the next kbar chunk (128 keys x 32 dims) in registers
        auto load = [&](int jt, int ch) {
#pragma unroll
            for (int r = 0; r < 8; r++) {
                int e2 = tid + FX_NT * r, jj = e2 >> 4, d2 = e2 & 15, j = jt * FX_KT + jj;
                const double *src = kb + (size_t)min(j, ld - 1) * DM + ch * 32 + 2 * d2;
                pf[r] = j < ld ? __ldg((const double2 *)src) : make_double2(0.0, 0.0);
            }
        };
        if (ntile > 0) load(0, 0);
        for (int jt = 0; jt < ntile; jt++) {
            double acc[4][4][2];
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int n = 0; n < 4; n++) acc[i][n][0] = acc[i][n][1] = 0.0;
#pragma unroll 1
            for (int ch = 0; ch < NCH; ch++) {
                __syncthreads(); // ks (and hist) free
#pragma unroll
                for (int r = 0; r < 8; r++) {
                    int e2 = tid + FX_NT * r, jj = e2 >> 4, d2 = e2 & 15;
                    *(double2 *)(ks + jj * KLD + 2 * d2) = pf[r];
                }
                __syncthreads();
                if (ch + 1 < NCH) load(jt, ch + 1);
                else if (jt + 1 < ntile) load(jt + 1, 0);
#pragma unroll
                for (int k4 = 0; k4 < 32; k4 += 4)
                    fs_dmma4<QLD, KLD, 4>(acc, qs + (wm * 32 + g) * QLD + ch * 32 + k4 + cq,
                                          ks + (wn * 32 + g) * KLD + k4 + cq);
            }
            // insert the scores that reach their row's threshold
            int j0 = jt * FX_KT + wn * 32 + 2 * cq;
#pragma unroll
            for (int i = 0; i < 4; i++) {
                int r = wm * 32 + i * 8 + g, er = erow[r], t = thr[r];
#pragma unroll
                for (int n = 0; n < 4; n++)
#pragma unroll
                    for (int xx = 0; xx < 2; xx++) {
                        int j = j0 + n * 8 + xx;
                        double s = acc[i][n][xx];
                        if (j < er && (int)fx_key16(s) >= t) {
                            unsigned old = atomicAdd(&cnt[r], 0x10001u);
                            sk[r * CAPF + (old & 0xffffu)] = (uint16_t)fx_key16(s);
                            unsigned pg = old >> 16;
                            if (pg < x.capg) {
                                gk[(size_t)r * x.capg + pg] = fs_key(s);
                                gi[(size_t)r * x.capg + pg] = j;
                            }
                        }
                    }
            }
            // full sketches compacted (room for the next tile)
            fx_compact_rows(sk, CAPF, cnt, thr, hist, rows, a.S, jt + 1 < ntile ? CAPF - FX_KT : INT_MAX);
        }
        fx_compact_rows(sk, CAPF, cnt, thr, hist, rows, a.S, 0); // final thresholds (hist on ks)
        __syncthreads();
        // survivors of each row into the warp's part of the sketch area, sorted
        unsigned long long *bk = (unsigned long long *)sk + (size_t)warp * (FX_PMAX * 3 / 2);
        int *bi = (int *)(bk + FX_PMAX);
        for (int r = warp; r < rows; r += FX_NT / 32) {
            int nsel = min(a.S, erow[r]);
            if (nsel <= 0) continue;
            int *tops = a.tops + ((size_t)U.off * a.M + m0 + r) * a.S, t = thr[r];
            const unsigned long long *rk = gk + (size_t)r * x.capg;
            const int *ri = gi + (size_t)r * x.capg;
            int w = fx_survivors(
                x, cnt[r], nsel, tops, FX_PMAX, [&](int p) { return FxEnt{__ldcg(rk + p), __ldcg(ri + p)}; },
                [&](FxEnt v) { return (int)fx_key16(fx_unkey(v.k)) >= t; },
                [&](int pos, FxEnt v) { bk[pos] = v.k, bi[pos] = v.id; });
            if (w < 0) continue;
            sel_warp_sort(bk, bi, w, 64);
            for (int s = lane; s < nsel; s += 32) tops[s] = bi[s];
            __syncwarp();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Two-pass path (tp_select, MSLAB_SELECT_BF16=tp): fx_select's running-threshold filter, but on
// approximate scores with a rigorous error bound, and exact scores only where the bound cannot
// order the top S.
// Pass 1 per tile of 64 keys: s' = qh.kh + (ql.kh + qh.kl) on the tensor cores (mma m16n8k16,
// fp32 accumulation; qh.kh from zero per 16 dims, summed on the FMA units, the small terms in
// their own accumulator), with q = qh + ql + rq: the pooled q (double) scaled by a power of 2
// (max |q| in [2^13, 2^14)), rounded to float then fp16 (RN), ql the same of the rest; k likewise
// per key (tp_prep_k); s' unscaled exactly. |s - s'| <= E = TP_C16 |q| |k| for the CPU's double
// score s (below). Every score gives an interval [lo, hi] = [s' - E, s' + E] (directed rounding);
// the sketch holds lo (16-bit key, rounded down), so its S-th largest t is a value that S
// candidates reach; a candidate with hi < t is strictly below S others and can never be in the
// top S (ties included). Histogram rows (s8, tp_hist_update): once a compaction finds few keys
// more than 255 bins above its t, the row's sketch words become counts of lo keys in bins of 1-4
// keys from t (the top bin: all above), and t is then a bin edge with S counted at or above it:
// updated every TP_HUPD inserts, no compaction again. Candidates with hi >= t go to the row's global
// buffer as (s', hi16, id);
// at the end, those with hi16 >= the final t (~S + a few) are sorted by s' (to ~2^-14: any order
// is valid, a better one just cuts more), cut into clusters (a cut after position p where min lo
// over <= p > max hi over > p: every exact score above is larger than every one below), and only the members of clusters of 2+ that reach the first
// min(S, e) get the CPU's score in double (dmul then dadd in dimension order, from the double
// kbar); a sort by (cluster, exact score desc, id asc) gives the CPU's order. Invalid bound
// (non-finite norms, |q| |k| > 2^100, a scale out of 2^+-60) or overflow (buffer, > TP_PMAX
// survivors): the row fails and the call falls back to fx_select. (bf16 limbs without scaling,
// removed in s9: bound 8e-5, 3 u^2 with u = 2^-8 dominates; most of the top S then needed exact
// scores.)
// The bound (fp16 limbs): u = 2^-11 + 2^-23 (double -> float -> fp16, relative), Cauchy-Schwarz
// on each sum:
//   dropped terms ql.kl + qh.rk + ql.rk + rq.k: <= 3 u^2 (1 + 1.4 u) |q| |k| = 7.2e-7 |q| |k|;
//   fp32 accumulation, taking <= 16 2^-23 sum |products| per k16 MMA from zero (exact fp16
//   products; recursive summation with truncation) and doubling it, plus 8 RN adds: 4.3e-6; the
//   small terms (2u of it), chained: < 1e-7; their sum: 6e-8; subnormal fp16 limbs flushed (both
//   limbs, absolute 2^-13 of a max >= 2^13, both sides): 3.4e-7; the CPU's fp64 sum: 128 2^-53;
//   fp32 underflow (absolute, < 2^-117): covered by norms floored at 2^-40 -> 5.52e-6 |q| |k|:
//   TP_C16 = 5.8e-6.
#define TP_KT 64      // keys per tile
#define TP_RM 32      // rows (members) per item (s9; s8: 64, one CTA per SM)
#define TP_PMAX 512   // survivors per row
#define TP_C16 5.8e-6f // fp16 limbs

__device__ __forceinline__ unsigned tp_okey(float x) { // order key of a float
    unsigned u = __float_as_uint(x);
    return (u >> 31) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float tp_unokey(unsigned k) {
    return __uint_as_float((k >> 31) ? (k & 0x7fffffffu) : ~k);
}
// 16-bit order key of x rounded down (a lower bound; NaN lowest) / up (an upper bound; NaN highest)
__device__ __forceinline__ unsigned tp_key16dn(float x) { return isnan(x) ? 0u : tp_okey(x) >> 16; }
__device__ __forceinline__ unsigned tp_key16up(float x) {
    return isnan(x) ? 0xffffu : (tp_okey(x) + 0xffffu) >> 16; // finite / inf keys <= 0xff800000
}
// upper bound of the norm from a sum of squares (each term and add rounded: relative < 2^-46)
__device__ __forceinline__ float tp_norm_up(double ss) {
    if (!(ss <= 1e300)) return INFINITY; // NaN, inf
    float n = __double2float_ru(__dsqrt_ru(ss) * (1.0 + 0x1p-40));
    return fmaxf(n, 0x1p-40f);
}
// x = h + l + r, h and l fp16 (x already scaled), each via float, RN; returns their bits
__device__ __forceinline__ void tp_split(double x, uint32_t *h, uint32_t *l) {
    __half hh = __float2half_rn(__double2float_rn(x));
    *h = __half_as_ushort(hh);
    *l = __half_as_ushort(__float2half_rn(__double2float_rn(x - (double)__half2float(hh))));
}
// fp16 limbs: the exponent e of the scale 2^e that brings max |v| = m into [2^13, 2^14) (values
// down to 2^-27 m stay normal fp16); 0 for a zero vector; TP_EBAD when out of [-60, 60] (the
// row / key fails: the call falls back; so the two inverse scales' product is an exact float)
#define TP_EBAD 1000
__device__ __forceinline__ int tp_exp(double m) {
    if (m == 0.0) return 0;
    if (!(m <= 1e300) || m < 1e-300) return TP_EBAD;
    int e = 13 - ilogb(m);
    return e < -60 || e > 60 ? TP_EBAD : e;
}
// a warp's pooled-q row (qs + r QLD, DM dims): its norm's upper bound and its limbs' exponent
// (tp_select's and tp_thr1's row bounds)
template <int DM, int QLD>
__device__ __forceinline__ void tp_row_bound(const double *qs, int r, int lane, float &n, int &e) {
    double ss = 0.0, mx = 0.0;
    for (int d = lane; d < DM; d += 32) ss += qs[r * QLD + d] * qs[r * QLD + d], mx = fmax(mx, fabs(qs[r * QLD + d]));
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        ss += __shfl_xor_sync(0xffffffffu, ss, o), mx = fmax(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    n = tp_norm_up(ss);
    e = tp_exp(mx);
}
__device__ __forceinline__ void tp_mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// d = a b from zero (the C operand a zero register: no per-product zeroing moves)
__device__ __forceinline__ void tp_mma0(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    const float z = 0.f;
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%10,%10,%10};\n"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(z));
}

// one key region's row v (lanes: dims 2 lane, 2 lane + 64) -> its limbs (kbf_row), its 64-key tile's
// limbs (kbw, tp_wgt; null: none), its norm bound (returned, all lanes) and scale (lane 0 writes them)
__device__ __forceinline__ float tp_prep_row(const double2 v[2], int lane, int D, size_t hd, int reg,
                                             uint16_t *kbf_row, float *knorm, float *kfac, int nkp,
                                             uint16_t *kbw, int ntw) {
    double ss = 0.0, m = 0.0;
#pragma unroll
    for (int i = 0; i < 2; i++) {
        ss += v[i].x * v[i].x + v[i].y * v[i].y;
        m = fmax(m, fmax(fabs(v[i].x), fabs(v[i].y)));
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        ss += __shfl_xor_sync(0xffffffffu, ss, o), m = fmax(m, __shfl_xor_sync(0xffffffffu, m, o));
    int e = tp_exp(m);
    double sc = e == TP_EBAD ? 1.0 : ldexp(1.0, e);
#pragma unroll
    for (int i = 0; i < 2; i++) {
        int d = 2 * lane + 64 * i;
        if (d >= D) continue;
        uint32_t h0, l0, h1, l1;
        tp_split(v[i].x * sc, &h0, &l0), tp_split(v[i].y * sc, &h1, &l1);
        *(uint32_t *)(kbf_row + d) = h0 | h1 << 16;
        *(uint32_t *)(kbf_row + D + d) = l0 | l1 << 16;
        if (kbw) { // (tiles of 64 keys: TW_KT)
            uint16_t *tw = kbw + (hd * ntw + reg / 64) * 2 * (size_t)D * 64 + pl<64>(reg % 64, d / 8) + d % 8;
            *(uint32_t *)tw = h0 | h1 << 16, *(uint32_t *)(tw + D * 64) = l0 | l1 << 16;
        }
    }
    float n = e == TP_EBAD ? INFINITY : tp_norm_up(ss);
    if (lane == 0) knorm[hd * nkp + reg] = n, kfac[hd * nkp + reg] = ldexpf(1.0f, e == TP_EBAD ? 0 : -e);
    return n;
}

// kbar -> [rows][2][D] limbs (kh, kl; fp16 of the scaled key: kfac = the inverse scale) and the
// key norm bounds; a warp per key region (D <= 128). kbw (tp_wgt, s12; else null): the limbs again as
// 64-key tiles [heads][ntw][2][D / 64][64][64], each limb the planar 128-byte-swizzle tile that wgmma's
// descriptors read (flash_wgmma.cuh pl); the keys past N in the last tile are not written (their
// products are never read: the filter takes j < the row's eligible count)
__global__ void tp_prep_k(uint16_t *kbf, float *knorm, float *kfac, int *ctrl, const double *kbar,
                          size_t heads, int N, int nkp, int D, uint16_t *kbw = nullptr, int ntw = 0) {
    size_t rows = heads * N;
    int lane = threadIdx.x & 31;
    size_t wid = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5;
    size_t nw = (size_t)gridDim.x * blockDim.x >> 5;
    for (size_t r = wid; r < rows; r += nw) {
        double2 v[2];
#pragma unroll
        for (int i = 0; i < 2; i++) {
            int d = 2 * lane + 64 * i;
            v[i] = d < D ? *(const double2 *)(kbar + r * D + d) : make_double2(0.0, 0.0);
        }
        float n = tp_prep_row(v, lane, D, r / N, (int)(r % N), kbf + r * 2 * D, knorm, kfac, nkp, kbw, ntw);
        if (lane == 0) atomicMax(ctrl + 3, __float_as_int(n)); // positive floats order as ints
    }
}

// s13 (MSLAB_SELECT_TPPP, default 1; 0: sel_pool then tp_prep_k): sel_pool and tp_prep_k in one
// kernel, a warp per key region: the pooled kbar (sel_pool2's sums, the same order) from registers
// into tp_prep_k's limbs / norms / scales (no re-read of kbar), and the norm maximum reduced per warp
// over its grid-stride rows, one atomic a warp (tp_prep_k: one a key region, all on ctrl[3])
// s14: it also fills fs_merge's first positions (fpos, nfp words) with "none yet" (0x7f7f7f7f; a
// memset before)
__global__ void tp_pool_prep(double *kbar, const uint16_t *k, int B, int T, int KVH, int w, uint16_t *kbf,
                             float *knorm, float *kfac, int *ctrl, int N, int nkp, int D, uint16_t *kbw, int ntw,
                             int *fpos, size_t nfp) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < nfp; i += (size_t)gridDim.x * blockDim.x)
        fpos[i] = 0x7f7f7f7f;
    size_t rows = (size_t)B * KVH * N, st = (size_t)KVH * D / 2; // st: 32-bit words a token
    int lane = threadIdx.x & 31, nmax = 0;
    size_t wid = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5;
    size_t nw = (size_t)gridDim.x * blockDim.x >> 5;
    for (size_t r = wid; r < rows; r += nw) {
        size_t hd = r / N;
        int reg = (int)(r % N), b = (int)(hd / KVH), hh = (int)(hd % KVH);
        int r0 = reg * w, cnt = min(T, r0 + w) - r0;
        const uint32_t *src = (const uint32_t *)(k + ((size_t)b * T * KVH + hh) * D) + (size_t)r0 * st;
        double2 v[2];
#pragma unroll
        for (int i = 0; i < 2; i++) {
            int d = 2 * lane + 64 * i;
            v[i] = make_double2(0.0, 0.0);
            if (d < D) sel_pool2(src + d / 2, st, cnt, &v[i].x, &v[i].y);
        }
#pragma unroll
        for (int i = 0; i < 2; i++) {
            int d = 2 * lane + 64 * i;
            if (d < D) *(double2 *)(kbar + r * D + d) = v[i];
        }
        float n = tp_prep_row(v, lane, D, hd, reg, kbf + r * 2 * D, knorm, kfac, nkp, kbw, ntw);
        if (lane == 0) nmax = max(nmax, __float_as_int(n)); // = tp_prep_k's atomicMax (ctrl[3] from 0)
    }
    if (lane == 0 && nmax > 0) atomicMax(ctrl + 3, nmax);
}

// warp: order the n <= 512 survivors bk[p] = okey(s') << 32 | ~id by s' desc: bk[p] = okey(s'),
// bi[p] = id in that order. Sorted as 32-bit keys, okey(s') with its low 9 bits replaced by p (a
// unique key; s' within ~2^-14 of another may come out in either order: the clusters still hold,
// as a cut needs only the bounds of what lies on each side, and such neighbours share a cluster
// and get exact scores), in registers: element 16 lane + i in v[i], bitonic, strides < 16 in the
// lane (min / max), the 5 lane bits by shuffles; tmp, tmp2 [512] words: the sorted keys (swizzled;
// their low 9 bits: the input position, which the caller may still read), okeys (swizzled alike).
// s6/s7 r2 (H200, 128K paper): the smem sort of (u64 key, id) took ~56K cycles a row (shared
// bandwidth: 45 stages of loads and stores), 23-50% of tp_select; 64-bit keys in registers ~48K
// (shuffles of two words per element)
__device__ __forceinline__ void tp_sort_surv(unsigned long long *bk, int *bi, unsigned *tmp, unsigned *tmp2,
                                             int n) {
    int lane = threadIdx.x & 31;
    unsigned v[16];
#pragma unroll
    for (int i = 0; i < 16; i++) { // any input order: read coalesced
        int p = 32 * i + lane;
        v[i] = p < n ? ((unsigned)(bk[p] >> 32) & ~0x1ffu) | (unsigned)p : 0u; // pads last
    }
    // s13: sizes 2-8 in the lane (directions known at compile time); 16-512 in a rolled loop (one copy
    // of the stages: the unrolled network was ~1.7K of the kernel's 16K instructions, and the sort's
    // stalls a quarter instruction fetch), the in-lane stages of a descending lane's run on complemented
    // keys (max / min only: no selects). r5 (H200, paper config, ms per call, without / with; both
    // with the removed HS_XQ): 32K 1.80 / 1.72, 64K 5.19 / 5.10, 128K 15.45 / 15.39
#pragma unroll
    for (int size = 2; size <= 8; size <<= 1)
#pragma unroll
        for (int stride = size >> 1; stride > 0; stride >>= 1)
#pragma unroll
            for (int i = 0; i < 16; i++) {
                if (i & stride) continue;
                int j = i | stride;
                unsigned a = v[i], b = v[j], hi = max(a, b), lo = min(a, b);
                if ((i & size) == 0) v[i] = hi, v[j] = lo;
                else v[i] = lo, v[j] = hi;
            }
#pragma unroll 1
    for (int size = 16; size <= 512; size <<= 1) {
        const bool lup = (lane & (size >> 4)) == 0;
#pragma unroll 1
        for (int ls = size >> 5; ls > 0; ls >>= 1) { // strides 16 ls (the lane bits) by shuffles
            bool kmax = ((lane & ls) == 0) == lup;
#pragma unroll
            for (int i = 0; i < 16; i++) {
                unsigned b = __shfl_xor_sync(0xffffffffu, v[i], ls);
                v[i] = kmax ? max(v[i], b) : min(v[i], b);
            }
        }
        const unsigned fl = lup ? 0u : 0xffffffffu;
#pragma unroll
        for (int i = 0; i < 16; i++) v[i] ^= fl;
#pragma unroll
        for (int stride = 8; stride > 0; stride >>= 1)
#pragma unroll
            for (int i = 0; i < 16; i++) {
                if (i & stride) continue;
                int j = i | stride;
                unsigned a = v[i], b = v[j];
                v[i] = max(a, b), v[j] = min(a, b);
            }
#pragma unroll
        for (int i = 0; i < 16; i++) v[i] ^= fl;
    }
    // e = 16 lane + i -> tmp[16 lane + (i ^ (lane >> 1 & 15))]: 32 distinct banks per store
#pragma unroll
    for (int i = 0; i < 16; i++) tmp[16 * lane + (i ^ (lane >> 1 & 15))] = v[i];
    __syncwarp();
    // gather: ids into bi, okeys via tmp2 (bk is still being read), tmp2 in tmp's swizzle (s13: the
    // caller reads position 16 lane + i there without bank conflicts; bk[16 lane + i] as u64 was a
    // 32-way conflict a load)
    for (int p = lane; p < n; p += 32) {
        int sp = 16 * (p >> 4) + ((p & 15) ^ (p >> 5 & 15));
        unsigned long long ent = bk[tmp[sp] & 0x1ffu];
        bi[p] = (int)(0xffffffffu - (unsigned)ent), tmp2[sp] = (unsigned)(ent >> 32);
    }
    __syncwarp();
    for (int p = lane; p < n; p += 32) bk[p] = tmp2[16 * (p >> 4) + ((p & 15) ^ (p >> 5 & 15))];
    __syncwarp();
}

// warp: the CPU's double scores (dmul, then dadd in dimension order; the pooled q row qr, kbar
// rows kd) of the positions lst[0 .. m) (ids bi[pos]) into bk[pos] as fs_key: a lane per position,
// each lane loading its own kbar row (16 bytes a load), the next TP_XF 8-dim chunks in flight
// during a chunk's sums. s9 r3 (H200, paper config): the rows staged through shared memory in
// chunks of 8 dims (the s8 scheme had 16-dim chunks, [32][17] doubles a warp: no room at two CTAs
// per SM), coalesced, 32K 2.19 / 128K 17.63 ms vs 2.11 / 17.30 for these direct loads; removed.
// s8 r2 / r3 (128K): 64 positions a pass (two chains a lane) where more than 32: 21.2 vs 20.6 ms;
// the rows' kbar prefetched to L2 before the loop (and the key norms before the survivors): 21.2
// vs 20.9 ms; both removed
#define TP_XF 4
template <int DM>
__device__ __forceinline__ void tp_exact(const double *qr, const double *kd, const int *lst, const int *bi,
                                         unsigned long long *bk, int m) {
    int lane = threadIdx.x & 31;
    for (int p0 = 0; p0 < m; p0 += 32) {
        int pos = lst[min(p0 + lane, m - 1)];
        const double2 *kr = (const double2 *)(kd + (size_t)bi[pos] * DM);
        double sc = 0.0;
        double2 kv[TP_XF][4];
#pragma unroll
        for (int f = 0; f < TP_XF; f++)
#pragma unroll
            for (int v = 0; v < 4; v++) kv[f][v] = __ldg(kr + 4 * f + v);
#pragma unroll 1
        for (int d0 = 0; d0 < DM; d0 += 8 * TP_XF)
#pragma unroll
            for (int f = 0; f < TP_XF; f++) {
#pragma unroll
                for (int v = 0; v < 4; v++) { // the CPU's s += a * b: dmul, then dadd
                    sc = __dadd_rn(sc, __dmul_rn(qr[d0 + 8 * f + 2 * v], kv[f][v].x));
                    sc = __dadd_rn(sc, __dmul_rn(qr[d0 + 8 * f + 2 * v + 1], kv[f][v].y));
                }
                if (d0 + 8 * TP_XF < DM)
#pragma unroll
                    for (int v = 0; v < 4; v++) kv[f][v] = __ldg(kr + (d0 + 8 * TP_XF) / 2 + 4 * f + v);
            }
        if (p0 + lane < m) bk[pos] = fs_key(sc);
    }
}

// s13: where more than 32 positions are left, 64 a pass, two chains a lane (positions p and p + 32;
// TP_XF / 2 chunks of each in flight: the registers of one chain of tp_exact), so a row of 33-64
// exact scores waits for one chain's latency, not two (s8's 64 a pass, 20.6 vs 21.2 ms at 128K, was
// one CTA an SM with smem-staged rows; r3, H200, paper config, ms per call: 32K 1.82 vs 1.86, 64K
// 4.88 / 4.98, 128K 14.21 / 14.47; exact scores per row: 24 at 32K, 35 at 128K). The next q chunk
// loaded a chunk ahead (HS_XQ, r5) spilled tp_wgt's tile loop (64K 5.10 vs 4.58 ms without): removed
template <int DM>
__device__ __forceinline__ void tp_exact2(const double *qr, const double *kd, const int *lst, const int *bi,
                                          unsigned long long *bk, int m) {
    constexpr int XF = TP_XF / 2;
    int lane = threadIdx.x & 31, p0 = 0;
    for (; m - p0 > 32; p0 += 64) {
        int pa = lst[p0 + lane], pb = lst[min(p0 + 32 + lane, m - 1)];
        const double2 *ka = (const double2 *)(kd + (size_t)bi[pa] * DM), *kb = (const double2 *)(kd + (size_t)bi[pb] * DM);
        double sa = 0.0, sb = 0.0;
        double2 va[XF][4], vb[XF][4];
#pragma unroll
        for (int f = 0; f < XF; f++)
#pragma unroll
            for (int v = 0; v < 4; v++) va[f][v] = __ldg(ka + 4 * f + v), vb[f][v] = __ldg(kb + 4 * f + v);
#pragma unroll 1
        for (int d0 = 0; d0 < DM; d0 += 8 * XF)
#pragma unroll
            for (int f = 0; f < XF; f++) {
#pragma unroll
                for (int v = 0; v < 4; v++) { // the CPU's s += a * b: dmul, then dadd
                    double q0 = qr[d0 + 8 * f + 2 * v], q1 = qr[d0 + 8 * f + 2 * v + 1];
                    sa = __dadd_rn(sa, __dmul_rn(q0, va[f][v].x)), sb = __dadd_rn(sb, __dmul_rn(q0, vb[f][v].x));
                    sa = __dadd_rn(sa, __dmul_rn(q1, va[f][v].y)), sb = __dadd_rn(sb, __dmul_rn(q1, vb[f][v].y));
                }
                if (d0 + 8 * XF < DM)
#pragma unroll
                    for (int v = 0; v < 4; v++)
                        va[f][v] = __ldg(ka + (d0 + 8 * XF) / 2 + 4 * f + v),
                        vb[f][v] = __ldg(kb + (d0 + 8 * XF) / 2 + 4 * f + v);
            }
        bk[pa] = fs_key(sa);
        if (p0 + 32 + lane < m) bk[pb] = fs_key(sb);
    }
    if (p0 < m) tp_exact<DM>(qr, kd, lst + p0, bi, bk, m - p0);
}

// per warp at the end: keys [512] u64, ids, clusters, exact list, norms [512] int / float, the row's
// pooled q [DM] double
__host__ __device__ constexpr int tp_warp_bytes(int DM) { return TP_PMAX * (8 + 4 * 4) + DM * 8; }
#define TP_LKCAP (tp_warp_bytes(64) / 2) // tp_raise: lower-bound keys in a warp's finish area
// warp, tp's finish: a row with more than TP_PMAX survivors (hi16 >= t; s9 r6 / s10 r2: 1M, bins of
// 4 keys, 493-516 of them): t raised to the largest key that the lower bounds (s' - E, as in the
// sweep) of nsel of them reach, so every candidate under it stays below nsel others. The lower
// bounds' keys of all survivors go to lk (cap of them; the finish's warp area); -1: more than
// that (the row fails: fx_survivors' note). s10 r2: 6 rows of 2.1M at 1M (test pool, updates
// every 256 inserts) fell back to the fused path for want of this
template <class Load, class Keep>
__device__ int tp_raise(const FxArgs &x, unsigned cnt_r, int nsel, int *tops, float crr, const float *knb,
                        uint16_t *lk, Load load, Keep keep, int &t) {
    int lane = threadIdx.x & 31;
    int n = fx_survivors(x, cnt_r, nsel, tops, TP_LKCAP, load, keep, [&](int pos, unsigned long long v) {
        float E = __fmul_ru(crr, knb[v & 0xffffu]);
        lk[pos] = (uint16_t)tp_key16dn(__fsub_rd(__uint_as_float((unsigned)(v >> 32)), E));
    });
    if (n < 0) return -1;
    __syncwarp();
    unsigned lo = (unsigned)t, hi = 0xffffu; // count(>= lo) >= nsel: those that made t
    while (lo < hi) {
        unsigned mid = (lo + hi + 1) >> 1;
        int c = 0;
        for (int p = lane; p < n; p += 32) c += lk[p] >= mid;
        if ((int)__reduce_add_sync(0xffffffffu, (unsigned)c) >= nsel) lo = mid;
        else hi = mid - 1;
    }
    __syncwarp();
    if (lane == 0 && lo > (unsigned)t) atomicAdd(x.ctrl + CTL_RAISED, 1); // counted where t moved
    t = (int)lo;
    return n;
}

// tp's finish of an item (tp_select, tp_wgt): per row (a warp, rows taken in turn): survivors of
// the row's buffer (gq, hi16 >= its threshold), sorted by s'; intervals; clusters; exact scores where
// needed; the final order into the row's tops. wa: the warp's area (tp_warp_bytes(DM))
template <int DM, class Mark>
__device__ __forceinline__ void tp_finish(const FxArgs &x, char *wa, const FsUnit &U, int m0, int rows,
                                          const unsigned *cnt, const int *thr, const int *erow,
                                          const float *crow, int *s_row, const unsigned long long *gq,
                                          const double *qg, size_t kvh, const float *knb, Mark mark) {
    const FsArgs &a = x.a;
    int lane = threadIdx.x & 31;
    unsigned long long *bk = (unsigned long long *)wa;  // [TP_PMAX] order keys
    int *bi = (int *)(wa + TP_PMAX * 8), *cl = bi + TP_PMAX; // ids, cluster index
    float *flo = (float *)(cl + TP_PMAX);    // the sort's okeys, then the exact list
    float *nrm = flo + TP_PMAX;              // [TP_PMAX] key norms by survivor (before the sort)
    double *qw = (double *)(nrm + TP_PMAX);  // [DM] the row's pooled q
    const double *kd = a.kbar + kvh * a.NK * DM;
    auto take = [&]() { // rows taken in turn (their costs vary: survivors, exact scores)
        int r = 0;
        if (lane == 0) r = atomicAdd(s_row, 1);
        return __shfl_sync(0xffffffffu, r, 0);
    };
    int rnx = -1; // the warp's next row, taken a row ahead (its buffer to L2 meanwhile)
    for (;;) {
        int r = rnx >= 0 ? rnx : take();
        if (r < rows) {
            rnx = take();
            if (rnx < rows) {
                int ng = min((int)(cnt[rnx] >> 16), x.capg); // 16 entries a line
                for (int i = lane; i * 16 < ng; i += 32)
                    asm volatile("prefetch.global.L2 [%0];" ::"l"(gq + (size_t)rnx * x.capg + 16 * i));
            }
        }
        if (r >= rows) break;
        int nsel = min(a.S, erow[r]);
        if (nsel <= 0) continue;
        int *tops = a.tops + ((size_t)U.off * a.M + m0 + r) * a.S, t = thr[r];
        const unsigned long long *rq = gq + (size_t)r * x.capg;
        auto sload = [&](int p) { return __ldcg(rq + p); };
        auto skeep = [&](unsigned long long v) { return (int)((v >> 16) & 0xffffu) >= t; };
        auto sput = [&](int pos, unsigned long long v) { // order key of s', then ~id (ties: id asc)
            bk[pos] = (unsigned long long)tp_okey(__uint_as_float((unsigned)(v >> 32))) << 32 |
                      (0xffffffffu - (unsigned)(v & 0xffffu));
        };
        int w = fx_survivors(x, cnt[r], nsel, tops, x.pcap, sload, skeep, sput, true);
        if (w > x.pcap) { // more survivors than the sort takes (bins of 2^sh keys, s10): t raised
            w = tp_raise(x, cnt[r], nsel, tops, crow[r], knb, (uint16_t *)wa, sload, skeep, t);
            if (w >= 0) w = fx_survivors(x, cnt[r], nsel, tops, TP_PMAX, sload, skeep, sput);
        }
        mark(TPP_SURV);
        if (w < 0) continue;
        __syncwarp();
        // the survivors' key norms by cp.async (4 bytes each) into nrm during the sort (s9 r5: the
        // clusters waited on their gathers; 32K 1.98 vs 2.01 ms)
        for (int p = lane; p < w; p += 32) {
            unsigned id = 0xffffffffu - (unsigned)bk[p];
            asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"((uint32_t)__cvta_generic_to_shared(nrm + p)),
                         "l"(knb + id));
        }
        cp_async_commit();
        tp_sort_surv(bk, bi, (unsigned *)cl, (unsigned *)flo, w); // s' desc
        // the row's pooled q (this CTA's copy, L2) for the exact scores: in flight meanwhile
        for (int c = lane; c < DM / 2; c += 32) cp_async16(qw + 2 * c, qg + (size_t)r * DM + 2 * c, true);
        cp_async_commit();
        mark(TPP_SORT);
        // intervals and clusters in registers: position p = 16 lane + i (prefix min / suffix
        // max inside the lane, one warp scan for the carry; the loop over 32-position chunks
        // with a scan each was ~13K cycles a row: s7 r3, 15% of tp_select at 32K)
        const float crr = crow[r];
        float lo[16], hi[16];
        {
            float sv[16];
            cp_async_wait<1>(); // the norms landed (the q row may still be in flight)
            __syncwarp();
#pragma unroll
            for (int i = 0; i < 16; i++) { // s' and the key norm (in lo for now; nrm by input position,
                int p = 16 * lane + i; // the sort's swizzled keys in cl: their low 9 bits)
                sv[i] = p < w ? tp_unokey(((const unsigned *)flo)[16 * lane + (i ^ (lane >> 1 & 15))]) : 0.f;
                lo[i] = p < w ? nrm[cl[16 * lane + (i ^ (lane >> 1 & 15))] & 0x1ff] : 0.f;
            }
            __syncwarp(); // every lane's reads of cl done before the cluster indices go there
#pragma unroll
            for (int i = 0; i < 16; i++) {
                bool in = 16 * lane + i < w;
                float E = __fmul_ru(crr, lo[i]);
                lo[i] = in ? __fsub_rd(sv[i], E) : INFINITY, hi[i] = in ? __fadd_ru(sv[i], E) : -INFINITY;
            }
        }
        float run = INFINITY; // lo -> min over <= p
#pragma unroll
        for (int i = 0; i < 16; i++) run = fminf(run, lo[i]), lo[i] = run;
        float cv = run;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            float y = __shfl_up_sync(0xffffffffu, cv, o);
            if (lane >= o) cv = fminf(cv, y);
        }
        cv = __shfl_up_sync(0xffffffffu, cv, 1); // lanes before this one
        if (lane > 0)
#pragma unroll
            for (int i = 0; i < 16; i++) lo[i] = fminf(lo[i], cv);
        run = -INFINITY; // hi -> max over >= p
#pragma unroll
        for (int i = 15; i >= 0; i--) run = fmaxf(run, hi[i]), hi[i] = run;
        cv = run;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            float y = __shfl_down_sync(0xffffffffu, cv, o);
            if (lane + o < 32) cv = fmaxf(cv, y);
        }
        cv = __shfl_down_sync(0xffffffffu, cv, 1); // lanes after this one
        if (lane < 31)
#pragma unroll
            for (int i = 0; i < 16; i++) hi[i] = fmaxf(hi[i], cv);
        // a cut after p: all of <= p above all of > p (bit i of cuts); the last position cuts
        float hnext = __shfl_down_sync(0xffffffffu, hi[0], 1);
        unsigned cuts = 0;
#pragma unroll
        for (int i = 0; i < 16; i++) {
            int p = 16 * lane + i;
            float hn = i < 15 ? hi[i + 1] : (lane < 31 ? hnext : -INFINITY);
            if (p < w && (p + 1 >= w || lo[i] > hn)) cuts |= 1u << i;
        }
        unsigned cbase = sel_warp_excl(__popc(cuts)); // cuts before this lane's positions
        int ln = (nsel - 1) >> 4, in_ = (nsel - 1) & 15;
        int clmax = __shfl_sync(0xffffffffu, (int)(cbase + __popc(cuts & ((1u << in_) - 1))), ln);
        unsigned cprev = __shfl_up_sync(0xffffffffu, cuts, 1) >> 15 & 1; // a cut after p - 1, i = 0
        if (lane == 0) cprev = 1;
        unsigned needm = 0; // in a cluster of 2+ that reaches the first nsel: exact scores
#pragma unroll
        for (int i = 0; i < 16; i++) {
            int p = 16 * lane + i, c = (int)(cbase + __popc(cuts & ((1u << i) - 1)));
            if (p >= w) continue;
            cl[p] = c;
            bool before = i ? (cuts >> (i - 1) & 1) : cprev, after = cuts >> i & 1;
            if (c <= clmax && !(before && after)) needm |= 1u << i;
        }
        int *lst = (int *)flo; // positions to score exactly
        unsigned lpos = sel_warp_excl(__popc(needm));
        int m = __reduce_add_sync(0xffffffffu, __popc(needm));
#pragma unroll
        for (int i = 0; i < 16; i++)
            if (needm >> i & 1) lst[lpos++] = 16 * lane + i;
        __syncwarp();
        if (lane == 0) atomicAdd(x.ctrl + 4, m), atomicAdd(x.ctrl + 5, w);
        mark(TPP_CLU);
        cp_async_wait<0>();
        __syncwarp();
        tp_exact2<DM>(qw, kd, lst, bi, bk, m);
        __syncwarp();
        mark(TPP_EXACT);
        // order inside those clusters (exact desc, id asc): a lane per cluster (insertion;
        // they are short), or the warp's sort by (cluster, key, id) when one is long
        auto cend = [&](int p) { // the end of p's cluster
            int e = p + 1;
            while (e < w && cl[e] == cl[p]) e++;
            return e;
        };
        bool longc = false;
        for (int i = lane; i < m; i += 32) {
            int p = lst[i];
            if (p == 0 || cl[p - 1] != cl[p]) longc |= cend(p) - p > 32;
        }
        if (__any_sync(0xffffffffu, longc)) sel_warp_sort(bk, bi, w, 64, cl);
        else
            for (int i = lane; i < m; i += 32) {
                int p = lst[i], e;
                if (p > 0 && cl[p - 1] == cl[p]) continue; // not a cluster's first
                e = cend(p);
                for (int c = p + 1; c < e; c++) {
                    unsigned long long k = bk[c];
                    int id = bi[c], b = c - 1;
                    for (; b >= p && (bk[b] < k || (bk[b] == k && bi[b] > id)); b--)
                        bk[b + 1] = bk[b], bi[b + 1] = bi[b];
                    bk[b + 1] = k, bi[b + 1] = id;
                }
            }
        __syncwarp();
        for (int s = lane; s < nsel; s += 32) tops[s] = bi[s];
        __syncwarp();
        mark(TPP_ORD);
    }
}

// dynamic smem: the tile, the A limbs, sketches (the pooled q until the first insert), norms (during
// the key sweep) or the per-warp survivor buffers (after it). P2: two tile buffers (the pooled q in
// the second until tile 1 is issued), no sketches (the norms where they were)
static size_t tp_smem(int DM, int CAPF, bool p2 = false) {
    size_t sweep = (size_t)(p2 ? 2 : 1) * TP_KT * (2 * DM + 8) * 2 + (size_t)2 * TP_RM * (DM + 8) * 2 +
                   (p2 ? 0 : (size_t)TP_RM * CAPF * 2) + 4 * TP_KT * 4;
    size_t fin = (size_t)(FX_NT / 32) * tp_warp_bytes(DM);
    return sweep > fin ? sweep : fin;
}
// s9: items of TP_RM = 32 rows, two CTAs per SM (smem <= 113 KB, <= 128 registers): twice the warps
// to hide the finish's latencies; the A fragments (the q limbs) by ldmatrix from shared memory (in
// 64 registers a thread they spilled), one tile buffer, the next tile issued after the tile's
// inserts (during the row work)
// P2 (s11, the two passes' second): from pass 1's thresholds (x.tinit) alone: no sketch, no row
// updates; the tile double-buffered (the pooled q in its second buffer until tile 1 is issued), one
// barrier a tile; the finish raises a row's threshold where its survivors pass x.pcap (tp_raise)
template <int DM, int CAPF, bool P2 = false>
__global__ void __launch_bounds__(FX_NT, 2) tp_select(FxArgs x) {
    constexpr int RM = TP_RM, QLD = DM + 4, KLD = 2 * DM + 8, KS = DM / 16, CPR = 2 * DM / 8, ALD = DM + 8;
    // warps as WM (16 rows) x WN (NB n-tiles of 8 keys)
    constexpr int WM = RM / 16, WN = FX_NT / 32 / WM, NB = TP_KT / 8 / WN;
    static_assert(NB % 2 == 0 && RM * CAPF * 2 >= RM * QLD * 8 && RM <= 32, "tp_select tiling");
    static_assert(!P2 || TP_KT * KLD * 2 >= RM * QLD * 8, "P2: the pooled q in the second tile buffer");
    constexpr int NKB = P2 ? 2 : 1; // tile buffers
    const FsArgs &a = x.a;
    extern __shared__ double fs_sm[];
    uint16_t *kt = (uint16_t *)fs_sm;                        // [NKB][TP_KT][KLD] fp16 kh | kl
    uint16_t *qa = kt + NKB * TP_KT * KLD;                   // [2][RM][ALD] fp16 qh, ql
    uint16_t *sk = qa + 2 * RM * ALD;                        // [RM][CAPF] lower-bound sketch (not P2)
    double *qs = P2 ? (double *)(kt + TP_KT * KLD) : (double *)sk; // [RM][QLD] pooled q (double): the prologue
    float *kn = P2 ? (float *)sk : (float *)(sk + RM * CAPF); // [2][TP_KT] key norm bounds (tile jt: jt & 1)
    float *kf = kn + 2 * TP_KT;                              // [2][TP_KT] key inverse scales
    double *qg = x.qg + (size_t)blockIdx.x * RM * DM;        // [RM][DM] pooled q for the finish
    __shared__ unsigned cnt[RM]; // inserts: global (high 16 bits), sketch (low 16 bits)
    __shared__ int thr[RM], erow[RM], s_item;
    __shared__ int hm[RM];       // 1 + sh: the row's sketch words hold its histogram of 2^sh-key bins
    __shared__ float crow[RM];   // TP_C16 |q| per row
    __shared__ int qe[RM];       // the row's scale exponent
    __shared__ int s_row;        // the finish's next row
    // tile jt's rows to compact / update (bits), at jt & 1: flagged by the insert that crosses the
    // count, so the row updates need no second barrier (s10 r1 / r2: 128K 16.23 vs 16.34, 17.01 vs
    // 17.10 ms with the masks found after a barrier)
    __shared__ unsigned s_fl[2][2];
    __shared__ unsigned long long s_prof[FX_NT / 32][TP_NPROF];
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, cq = lane & 3;
    int wm = warp % WM, wn = warp / WM; // 16-member x 8 NB-key warp tile
    const bool prof = x.prof != nullptr;
    long long tlast = 0;
    auto mark = [&](int sec) { // profile: the time since the last mark into section sec
        if (!prof) return;
        long long t = clock64();
        if (lane == 0) s_prof[warp][sec] += (unsigned long long)(t - tlast);
        tlast = t;
    };
    auto count = [&](int sec, int n) {
        if (prof && lane == 0) s_prof[warp][sec] += (unsigned long long)n;
    };
    if (prof) {
        for (int i = lane; i < TP_NPROF; i += 32) s_prof[warp][i] = 0;
        tlast = clock64();
        if (tid == 0) x.pcta[2 * blockIdx.x] = tp_gtime();
    }
    unsigned long long *gq = x.gkey + (size_t)blockIdx.x * RM * x.capg;
    const float nkmax = __int_as_float(x.ctrl[3]);
    int nupd = 0; // histogram updates by this warp (lane 0's count is the one added up)
    FsUnit U;
    int m0, rows;
    while (fx_next<DM, RM>(x, qs, &s_item, erow, cnt, thr, U, m0, rows, qg)) {
        mark(TPP_NEXT);
        count(TPP_NITEM, 1);
        for (int r = warp; r < RM; r += FX_NT / 32) { // row norms (the bound) and scales
            float n;
            int e;
            tp_row_bound<DM, QLD>(qs, r, lane, n, e);
            if (lane == 0) {
                crow[r] = __fmul_ru(TP_C16, n), qe[r] = e == TP_EBAD ? 0 : e, hm[r] = 0;
                if (P2 && r < rows && erow[r] > a.S) // pass 1's threshold
                    thr[r] = x.tinit[(((size_t)U.b * a.H + U.h) * a.nblk + U.c) * a.M + m0 + r];
                if (r < rows && (!(n * nkmax <= 0x1p100f) || e == TP_EBAD)) // redone (fs_redo)
                    atomicAdd(x.ctrl + 1, 1), atomicAdd(x.ctrl + CTL_FBOUND, 1), x.fail[(size_t)U.off * a.M + m0 + r] = 1;
            }
        }
        __syncthreads();
        int ld = erow[rows - 1]; // eligibility grows with the member
        size_t kvh = (size_t)U.b * a.KVH + U.h / (a.H / a.KVH);
        const uint16_t *kb = x.kbf + kvh * a.NK * 2 * DM;
        const float *knb = x.knorm + kvh * ((a.NK + 3) / 4 * 4), *kfb = x.kfac + kvh * ((a.NK + 3) / 4 * 4);
        int ntile = (ld + TP_KT - 1) / TP_KT;
        auto issue = [&](int jt) { // tile jt (16-byte chunks)
            uint16_t *kd = kt + (P2 ? (jt & 1) * TP_KT * KLD : 0);
            for (int e = tid; e < TP_KT * CPR; e += FX_NT) {
                int jj = e / CPR, c = e % CPR, j = min(jt * TP_KT + jj, ld - 1);
                cp_async16(kd + jj * KLD + c * 8, kb + (size_t)j * 2 * DM + c * 8, true);
            }
            if (tid < TP_KT / 4) // norms past ld (the allocation has room): unused
                cp_async16(kn + (jt & 1) * TP_KT + 4 * tid, knb + jt * TP_KT + 4 * tid, true);
            else if (tid < TP_KT / 2)
                cp_async16(kf + (jt & 1) * TP_KT + 4 * tid - TP_KT, kfb + jt * TP_KT + 4 * tid - TP_KT, true);
            cp_async_commit();
        };
        if (ntile > 0) issue(0);
        // the q limbs into qa (read by ldmatrix after the tile barrier)
        for (int e = tid; e < RM * DM / 2; e += FX_NT) {
            int r = e / (DM / 2), d = 2 * (e % (DM / 2));
            double sq = ldexp(1.0, qe[r]);
            uint32_t h0, l0, h1, l1;
            tp_split(qs[r * QLD + d] * sq, &h0, &l0), tp_split(qs[r * QLD + d + 1] * sq, &h1, &l1);
            *(uint32_t *)(qa + r * ALD + d) = h0 | h1 << 16, *(uint32_t *)(qa + (RM + r) * ALD + d) = l0 | l1 << 16;
        }
        // A fragments (rows r0 = 16 wm + g, r1 = r0 + 8) by ldmatrix.x4: lanes 0-15 address rows 16 wm
        // + lane at k, 16-31 the same rows at k + 8 (a0 (r0, k), a1 (r1, k), a2 (r0, k + 8), a3 (r1, k + 8))
        int r0 = wm * 16 + g, r1 = r0 + 8;
        const uint16_t *qat = qa + (wm * 16 + (lane & 15)) * ALD + (lane >> 4) * 8;
        const float cr0 = crow[r0], cr1 = crow[r1];
        const float fq0 = ldexpf(1.0f, -qe[r0]), fq1 = ldexpf(1.0f, -qe[r1]);
        const int er0 = erow[r0], er1 = erow[r1];
        const int fover = CAPF - TP_KT; // a sketch row's insert past this count flags a compaction
        if (tid < 4) s_fl[tid >> 1][tid & 1] = 0u; // read after the first tile's barrier
        mark(TPP_PRO);
        count(TPP_NTILE, ntile);
        for (int jt = 0; jt < ntile; jt++) {
            cp_async_wait<0>();
            __syncthreads(); // tile jt landed; the sketches free
            if (P2 && jt + 1 < ntile) issue(jt + 1); // its buffer was read in tile jt - 1
            if (!P2 && tid < 2) s_fl[(jt + 1) & 1][tid] = 0u; // last read after tile jt - 1's inserts
            mark(TPP_WAIT);
            // B fragments by ldmatrix.x4: lanes 8 i .. 8 i + 7 address key rows of n-tile n + i / 2,
            // dims + 8 (i & 1): r = {b0, b1} of n-tile n, then of n + 1
            const uint16_t *kbt = kt + (P2 ? (jt & 1) * TP_KT * KLD : 0) +
                                  (wn * NB * 8 + (lane >> 4) * 8 + (lane & 7)) * KLD + ((lane >> 3) & 1) * 8;
            const float *knt = kn + (jt & 1) * TP_KT + wn * NB * 8 + 2 * cq;
            const float *kft = kf + (jt & 1) * TP_KT + wn * NB * 8 + 2 * cq;
            float am[NB][4], ac[NB][4]; // qh.kh; ql.kh + qh.kl (s10 r2: ql.kh and qh.kl in two
                                        // accumulators, a chain half as long: 128K 17.13 vs 17.10 ms)
#pragma unroll
            for (int n = 0; n < NB; n++)
#pragma unroll
                for (int i = 0; i < 4; i++) am[n][i] = ac[n][i] = 0.f;
#pragma unroll
            for (int kk = 0; kk < KS; kk++) {
                uint32_t fh[4], fl[4]; // qh, ql
                ldsm_x4(fh, qat + 16 * kk), ldsm_x4(fl, qat + RM * ALD + 16 * kk);
#pragma unroll
                for (int n2 = 0; n2 < NB; n2 += 2) {
                    uint32_t bh[4], bl[4];
                    ldsm_x4(bh, kbt + n2 * 8 * KLD + 16 * kk);
                    ldsm_x4(bl, kbt + n2 * 8 * KLD + 16 * kk + DM);
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        int n = n2 + h;
                        float t4[4]; // qh.kh of 16 dims from zero (the bound)
                        tp_mma0(t4, fh, bh[2 * h], bh[2 * h + 1]);
#pragma unroll
                        for (int i = 0; i < 4; i++) am[n][i] += t4[i];
                        tp_mma(ac[n], fl, bh[2 * h], bh[2 * h + 1]);
                        tp_mma(ac[n], fh, bl[2 * h], bl[2 * h + 1]);
                    }
                }
            }
            if (prof) { // the MMAs' results in (else the section shows only their issue)
                float z = 0.f;
#pragma unroll
                for (int n = 0; n < NB; n++) z += am[n][0] + ac[n][0];
                asm volatile("" ::"f"(z));
            }
            mark(TPP_MMA);
            // key16up(hi) >= t  <=>  okey(hi) >= (t - 1) << 16 | 1  <=  hi >= that float (not below
            // it: NaN passes; -0 against +0 passes too: a superset, the finish filters by key)
            auto thrf = [](int t) { return t == 0 ? -INFINITY : tp_unokey((unsigned)(t - 1) << 16 | 1u); };
            const int hm0 = hm[r0], hm1 = hm[r1];
            const float tf0 = thrf(thr[r0]), tf1 = thrf(thr[r1]);
            const int jb = jt * TP_KT + wn * NB * 8 + 2 * cq;
            // the lane's passes (s' + E reaches the row's threshold): bit 2 n + (xx & 1) of pm[row];
            // s' kept in am, E in ac
            unsigned pm[2] = {0u, 0u};
#pragma unroll
            for (int n = 0; n < NB; n++)
#pragma unroll
                for (int xx = 0; xx < 4; xx++) {
                    float s = am[n][xx] + ac[n][xx], E = __fmul_ru(xx < 2 ? cr0 : cr1, knt[n * 8 + (xx & 1)]);
                    s *= (xx < 2 ? fq0 : fq1) * kft[n * 8 + (xx & 1)]; // exact: 2^-120 .. 2^120
                    float hi = __fadd_ru(s, E);
                    int j = jb + n * 8 + (xx & 1);
                    if (j < (xx < 2 ? er0 : er1) && !(hi < (xx < 2 ? tf0 : tf1)))
                        pm[xx >> 1] |= 1u << (2 * n + (xx & 1));
                    am[n][xx] = s;
                    ac[n][xx] = E; // the keys at insert (s10: most scores never pass)
                }
            mark(TPP_FILT);
            // the lane's two insert atomics (rows r0, r1) issued together, then its slots in turn (s10 r3:
            // 128K 17.29 vs 17.43 ms with the keys made here, not in the filter, and an atomic a pass; an
            // atomic a pass: s9 r5 128K 16.79 vs 16.98 with one a lane and row, keys in the filter; one
            // a row and warp, the 4 lanes' counts by shuffles: s7 r2, 128K filter+insert 13.3 -> 15.2%)
            unsigned base[2] = {0u, 0u};
#pragma unroll
            for (int h = 0; h < 2; h++) {
                int c = __popc(pm[h]);
                if (c && P2) { // global slots only
                    base[h] = atomicAdd(&cnt[h ? r1 : r0], (unsigned)c * 0x10000u);
                } else if (c) { // the insert that crosses the count flags the row (update / compaction)
                    int r = h ? r1 : r0, hmr = h ? hm1 : hm0, lim = tp_flag_lim(hmr, fover, x.hupd);
                    unsigned old = atomicAdd(&cnt[r], (unsigned)c * 0x10001u);
                    int lo = (int)(old & 0xffffu);
                    if (lo <= lim && lim < lo + c) atomicOr(&s_fl[jt & 1][hmr ? 1 : 0], 1u << r);
                    base[h] = old;
                }
            }
#pragma unroll
            for (int n = 0; n < NB; n++)
#pragma unroll
                for (int xx = 0; xx < 4; xx++)
                    if (pm[xx >> 1] >> (2 * n + (xx & 1)) & 1) {
                        int r = xx < 2 ? r0 : r1, j = jb + n * 8 + (xx & 1), hmr = xx < 2 ? hm0 : hm1;
                        float sv = am[n][xx], ev = ac[n][xx];
                        unsigned keys = tp_key16up(__fadd_ru(sv, ev)) | tp_key16dn(__fsub_rd(sv, ev)) << 16;
                        unsigned old = base[xx >> 1];
                        base[xx >> 1] += P2 ? 0x10000u : 0x10001u;
                        // the lower bound's key into the sketch (histogram rows: past the bins, binned
                        // at the next update)
                        int o = (hmr ? 2 * TP_HB : 0) + (int)(old & 0xffffu);
                        if (!P2) sk[r * CAPF + o] = (uint16_t)(keys >> 16);
                        unsigned pg = old >> 16;
                        if (pg < (unsigned)x.capg)
                            gq[(size_t)r * x.capg + pg] = (unsigned long long)__float_as_uint(sv) << 32 |
                                                          (keys & 0xffffu) << 16 | (unsigned)j;
                    }
            mark(TPP_INS);
            if (prof) {
                __syncthreads();
                mark(TPP_BAR);
            }
            // thresholds up to date: full sketches compacted (room for the next tile), histogram rows
            // updated (the last tile: the final update below)
            if (!P2 && jt + 1 < ntile) {
                __syncthreads(); // every insert in, every warp done with the tile buffer
                issue(jt + 1);   // s9 r3: issued after the MMAs instead (one more barrier): no gain; s10 r2
                                 // (with the flags below, 3 barriers a tile, not 2): 64K 5.85 vs 5.75 ms
                int n = tp_update_rows<CAPF>(sk, cnt, thr, hm, rows, a.S, fover, x.hupd, true, TP_CWIN,
                                       TP_HSH, s_fl[jt & 1]);
                count(TPP_NCMP, n >> 16), count(TPP_NUPD, n & 0xffff), nupd += n & 0xffff;
            }
            mark(TPP_CMP);
        }
        __syncthreads();
        if (!P2)
            nupd += tp_update_rows<CAPF>(sk, cnt, thr, hm, rows, a.S, 0, 1, false, 0, 0) & 0xffff; // final
        if (warp == 0) { // the item's histogram rows (select_bf16_last_stats)
            int nh = __popc(__ballot_sync(0xffffffffu, lane < rows && hm[lane]));
            if (lane == 0 && nh) atomicAdd(x.ctrl + CTL_HROWS, nh);
        }
        if (tid == 0) s_row = 0;
        __syncthreads();
        mark(TPP_FCMP);
        tp_finish<DM>(x, (char *)kt + (size_t)warp * tp_warp_bytes(DM), U, m0, rows, cnt, thr, erow, crow, &s_row,
                      gq, qg, kvh, knb, mark);
        if (prof) { // the warps' wait for the item's last row (s13; else inside fx_next's first barrier)
            __syncthreads();
            mark(TPP_FWAIT);
        }
    }
    if (lane == 0 && nupd) atomicAdd(x.ctrl + CTL_HUPD, nupd);
    if (prof && lane == 0) {
        for (int i = 0; i < TP_NPROF; i++) atomicAdd(x.prof + i, s_prof[warp][i]);
        atomicMax(x.pcta + 2 * blockIdx.x + 1, tp_gtime());
    }
}

// ---------------------------------------------------------------------------------------------
// Two-pass tp (s11; the default where the longest row has <= TP2_MAXLD candidates, MSLAB_SELECT_TP2=0:
// never). Pass 1 (tp_thr1) gives each row a fixed threshold t1 before the sweep; pass 2 (tp_select<P2>)
// sweeps with it: no sketch, no compactions or histogram updates, the tile double-buffered (one barrier
// a tile), the finish as tp's (a row past x.pcap survivors raised by tp_raise). Pass 1: scores from the
// fp16 hi limbs alone (one MMA per 16 dims: s1 = qh.kh, |s - s1| <= TP_C1 |q| |k|); their lower bounds'
// 16-bit keys kept per bucket in registers: a lane's 8 key columns of a row x 2 tile phases (tile it:
// phase it & 1) = 256 buckets a row, the top 3 of each (two keys a word: __vmaxu2 / __vminu2). Every
// bucket value is a distinct candidate's lower bound, so the S-th largest t1 of the 768 values is one
// that S candidates reach: a valid threshold (a candidate whose upper bound is below it has S above
// it). Found by a bisection on the key over the row's 16 lanes (4 warps), one barrier a step. 128-key
// tiles, two cp.async stages (the pooled q in them until the first tile is issued).
// The bound: q - qh, k - kh <= u |q|, u |k| (u = 2^-11 + 2^-23, as TP_C16's derivation) ->
// (2u + u^2) |q| |k| = 9.77e-4, plus TP_C16 (accumulation, flushes): TP_C1 = 9.9e-4.
// s13: the 8 k16 products of a score chained in the tensor core's fp32
// accumulator (no MMA from zero plus an FMA-unit add per 16 dims: r4 ncu, 32K: 128 of ~650
// instructions a tile a warp), the accumulation bounded as TP_C16's derivation does (truncated
// recursive summation, doubled): step k adds 16 exact products to c_{k-1}, 17 terms, <= 2 17 2^-23
// (|c_{k-1}| + S_k) with S_k the block's sum |products| and |c_{k-1}| <= (S_1 + .. + S_{k-1})
// (1 + 1e-4), so over 8 steps <= 34 2^-23 8 S (1 + 1e-4) = 3.25e-5 S, S <= |qh| |kh| <= (1 + u)^2
// |q| |k|: 3.26e-5 |q| |k| in place of TP_C16's 4.3e-6 accumulation term; 9.77e-4 + 3.26e-5 +
// 1.5e-6 (TP_C16's other terms) = 1.011e-3: TP_C1 = 1.02e-3 (r5 with / without, H200, paper config,
// ms per call: 32K 1.72 / 1.74, 64K 5.10 / 5.12, 128K 15.39 / 15.55, with the removed HS_XQ; the tests'
// t1 checks: 0 rows below, least slack 2.1e-4 |q| max |k|)
#define TP_C1 1.02e-3f
#define TP1_KT 128 // pass 1: keys a tile
#define TP1_NS 2   // cp.async stages
#define TP1_NP 2   // tile phases (buckets: 32 NB NP = 256 a row), the top 3 of each bucket
__host__ __device__ constexpr int tp1_smem(int DM) {
    // the stages (the pooled q in them until the first tiles are issued), q hi limbs, norms, scales, counts
    return (TP1_NS * TP1_KT * (DM + 8) * 2 > TP_RM * (DM + 4) * 8 ? TP1_NS * TP1_KT * (DM + 8) * 2
                                                                   : TP_RM * (DM + 4) * 8) +
           TP_RM * (DM + 8) * 2 + 2 * TP1_NS * TP1_KT * 4 + 3 * TP_RM * 4;
}
template <int DM>
__global__ void __launch_bounds__(FX_NT, 2) tp_thr1(FxArgs x) {
    constexpr int RM = TP_RM, NT = FX_NT, KT = TP1_KT, NS = TP1_NS, NP = TP1_NP;
    constexpr int QLD = DM + 4, KLD = DM + 8, KS = DM / 16, CPR = DM / 8, ALD = DM + 8;
    constexpr int WM = RM / 16, WN = NT / 32 / WM, NB = KT / 8 / WN;
    static_assert(NB % 2 == 0 && WN == 4 && NB * NP * 32 >= 256, "tp_thr1 tiling: 16 lanes a row, >= 256 buckets");
    const FsArgs &a = x.a;
    extern __shared__ double fs_sm[];
    constexpr int KTB = NS * KT * KLD > RM * QLD * 4 ? NS * KT * KLD : RM * QLD * 4;
    double *qs = fs_sm;                                   // [RM][QLD] pooled q (the prologue)
    uint16_t *kt = (uint16_t *)fs_sm;                     // [NS][KT][KLD] fp16 kh (tile it: it % NS)
    uint16_t *qa = kt + KTB;                              // [RM][ALD] fp16 qh
    float *kn = (float *)(qa + RM * ALD);                 // [NS][KT] key norm bounds
    float *kf = kn + NS * KT;                          // [NS][KT] key inverse scales
    int *sc = (int *)(kf + NS * KT);                   // [3][RM] the bisection's counts
    __shared__ unsigned cnt[RM];
    __shared__ int thr[RM], erow[RM], s_item, qe[RM];
    __shared__ float crow[RM];
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, cq = lane & 3;
    int wm = warp % WM, wn = warp / WM;
    const float nkmax = __int_as_float(x.ctrl[3]);
    FsUnit U;
    int m0, rows;
    while (fx_next<DM, RM>(x, qs, &s_item, erow, cnt, thr, U, m0, rows)) {
        for (int r = warp; r < RM; r += NT / 32) {
            float n;
            int e;
            tp_row_bound<DM, QLD>(qs, r, lane, n, e);
            if (lane == 0) {
                bool bad = !(n * nkmax <= 0x1p100f) || e == TP_EBAD; // pass 2 fails the row
                crow[r] = __fmul_ru(TP_C1, n), qe[r] = e == TP_EBAD ? 0 : e;
                if (bad) erow[r] = 0; // no candidate counted: t1 = 0
            }
        }
        if (tid < 3 * RM) sc[tid] = 0;
        __syncthreads();
        int ld = erow[rows - 1] > 0 ? erow[rows - 1] : 0;
        for (int r = 0; r < rows; r++) ld = max(ld, erow[r]);
        size_t kvh = (size_t)U.b * a.KVH + U.h / (a.H / a.KVH);
        const uint16_t *kb = x.kbf + kvh * a.NK * 2 * DM;
        const float *knb = x.knorm + kvh * ((a.NK + 3) / 4 * 4), *kfb = x.kfac + kvh * ((a.NK + 3) / 4 * 4);
        const int ntile = (ld + KT - 1) / KT;
        auto issue = [&](int it) { // tile it's hi limbs into stage it % NS (a commit group, empty past the last)
            if (it < ntile) {
                int b = it % NS;
                uint16_t *kd = kt + b * KT * KLD;
                for (int e = tid; e < KT * CPR; e += NT) {
                    int jj = e / CPR, c = e % CPR, j = min(it * KT + jj, ld - 1);
                    cp_async16(kd + jj * KLD + c * 8, kb + (size_t)j * 2 * DM + c * 8, true);
                }
                if (tid < KT / 4)
                    cp_async16(kn + b * KT + 4 * tid, knb + it * KT + 4 * tid, true);
                else if (tid < KT / 2)
                    cp_async16(kf + b * KT + 4 * tid - KT, kfb + it * KT + 4 * tid - KT, true);
            }
            cp_async_commit();
        };
        for (int e = tid; e < RM * DM / 2; e += NT) {
            int r = e / (DM / 2), d = 2 * (e % (DM / 2));
            double sq = ldexp(1.0, qe[r]);
            uint32_t h0, l0, h1, l1;
            tp_split(qs[r * QLD + d] * sq, &h0, &l0), tp_split(qs[r * QLD + d + 1] * sq, &h1, &l1);
            *(uint32_t *)(qa + r * ALD + d) = h0 | h1 << 16;
        }
        __syncthreads(); // qs (in the stages) read
#pragma unroll
        for (int i = 0; i < NS - 1; i++) issue(i);
        int r0 = wm * 16 + g, r1 = r0 + 8;
        const uint16_t *qat = qa + (wm * 16 + (lane & 15)) * ALD + (lane >> 4) * 8;
        const float cr0 = crow[r0], cr1 = crow[r1];
        const float fq0 = ldexpf(1.0f, -qe[r0]), fq1 = ldexpf(1.0f, -qe[r1]);
        const int er0 = erow[r0], er1 = erow[r1];
        // buckets: m1 / m2 / m3 [row h][n-tile][phase]: the largest / 2nd / 3rd largest keys (column
        // 2 cq in the low half, 2 cq + 1 in the high)
        unsigned m1[2][NB][NP], m2[2][NB][NP], m3[2][NB][NP];
#pragma unroll
        for (int h = 0; h < 2; h++)
#pragma unroll
            for (int n = 0; n < NB; n++)
#pragma unroll
                for (int p = 0; p < NP; p++) m1[h][n][p] = m2[h][n][p] = m3[h][n][p] = 0u;
        for (int jt0 = 0; jt0 < ntile; jt0 += NP) {
#pragma unroll
            for (int p = 0; p < NP; p++) {
                int it = jt0 + p;
                if (it >= ntile) break;
                cp_async_wait<NS - 2>();
                __syncthreads(); // tile it landed; stage (it + NS - 1) % NS free (read in it - 1)
                issue(it + NS - 1);
                const int b = it % NS;
                const uint16_t *kbt = kt + b * KT * KLD +
                                      (wn * NB * 8 + (lane >> 4) * 8 + (lane & 7)) * KLD + ((lane >> 3) & 1) * 8;
                const float *knt = kn + b * KT + wn * NB * 8 + 2 * cq;
                const float *kft = kf + b * KT + wn * NB * 8 + 2 * cq;
                float am[NB][4];
#pragma unroll
                for (int n = 0; n < NB; n++)
#pragma unroll
                    for (int i = 0; i < 4; i++) am[n][i] = 0.f;
#pragma unroll
                for (int kk = 0; kk < KS; kk++) {
                    uint32_t fh[4];
                    ldsm_x4(fh, qat + 16 * kk);
#pragma unroll
                    for (int n2 = 0; n2 < NB; n2 += 2) {
                        uint32_t bh[4];
                        ldsm_x4(bh, kbt + n2 * 8 * KLD + 16 * kk);
#pragma unroll
                        for (int h = 0; h < 2; h++) {
                            tp_mma(am[n2 + h], fh, bh[2 * h], bh[2 * h + 1]);
                        }
                    }
                }
                const int jb = it * KT + wn * NB * 8 + 2 * cq;
#pragma unroll
                for (int n = 0; n < NB; n++) {
                    unsigned kw[2];
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        unsigned k2[2];
#pragma unroll
                        for (int xx = 0; xx < 2; xx++) {
                            int i = 2 * h + xx, j = jb + n * 8 + xx;
                            float s = am[n][i] * ((h ? fq1 : fq0) * kft[n * 8 + xx]);
                            float E = __fmul_ru(h ? cr1 : cr0, knt[n * 8 + xx]);
                            k2[xx] = j < (h ? er1 : er0) ? tp_key16dn(__fsub_rd(s, E)) : 0u;
                        }
                        kw[h] = k2[0] | k2[1] << 16;
                    }
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        unsigned lo = __vminu2(m1[h][n][p], kw[h]);
                        m1[h][n][p] = __vmaxu2(m1[h][n][p], kw[h]);
                        m3[h][n][p] = __vmaxu2(m3[h][n][p], __vminu2(m2[h][n][p], lo));
                        m2[h][n][p] = __vmaxu2(m2[h][n][p], lo);
                    }
                }
            }
        }
        cp_async_wait<0>(); // (the groups left are empty; the next item's q pools into the stages)
        // t1 per row: the S-th largest bucket value (0: fewer than S with a key >= 1)
        unsigned lo[2] = {0u, 0u}, hi[2] = {0xffffu, 0xffffu};
        const int nsel0 = min(a.S, er0), nsel1 = min(a.S, er1);
        // s13: the same 16 halvings of [0, 0xffff] on bytes, 4 keys a word (r4 ncu, 32K: the bisection was
        // 32% of tp_thr1's instructions, 4 a word of 2 keys a step). Steps 0-7 test mids with a zero low
        // byte, so x >= mid <=> x's high byte >= mid's; after them [lo, hi] = [H << 8, H << 8 | 255],
        // and x >= mid <=> hb(x) > H or (hb(x) == H and lb(x) >= lb(mid)), lb(mid) >= 1: the keys whose
        // high byte is not H take low byte 0 (never counted), those above H counted once. r6 (H200,
        // paper config, ms per call, without / with): 16K 0.58 / 0.55, 32K 1.74 / 1.71, 64K 4.63 / 4.56,
        // 128K 13.47 / 13.39
        unsigned hb[2][NB * NP * 3 / 2], lb[2][NB * NP * 3 / 2];
        int cab[2];
        auto word = [&](int h, int k) { // the row half's 24 bucket words in a fixed order
            int b = k / 3, n = b / NP, p = b % NP;
            return k % 3 == 0 ? m1[h][n][p] : k % 3 == 1 ? m2[h][n][p] : m3[h][n][p];
        };
#pragma unroll
        for (int h = 0; h < 2; h++)
#pragma unroll
            for (int i = 0; i < NB * NP * 3 / 2; i++) hb[h][i] = __byte_perm(word(h, 2 * i), word(h, 2 * i + 1), 0x7531);
        auto bis_end = [&](int step, const int *sb) { // the counts in; the next-but-one counts cleared
            __syncthreads();
            if (tid < RM) sc[((step + 2) % 3) * RM + tid] = 0;
#pragma unroll
            for (int h = 0; h < 2; h++) {
                unsigned mid = (lo[h] + hi[h] + 1) >> 1;
                if (lo[h] < hi[h]) {
                    if (sb[h ? r1 : r0] >= (h ? nsel1 : nsel0)) lo[h] = mid;
                    else hi[h] = mid - 1;
                }
            }
        };
        auto bis_add = [&](int step, int h, int c) {
            c += __shfl_xor_sync(0xffffffffu, c, 1), c += __shfl_xor_sync(0xffffffffu, c, 2);
            if (cq == 0 && c) atomicAdd(sc + (step % 3) * RM + (h ? r1 : r0), c);
        };
        for (int step = 0; step < 8; step++) {
#pragma unroll
            for (int h = 0; h < 2; h++) {
                unsigned mid = (lo[h] + hi[h] + 1) >> 1, mb = (mid >> 8) * 0x01010101u, acc = 0;
#pragma unroll
                for (int i = 0; i < NB * NP * 3 / 2; i++) acc += __vsetgeu4(hb[h][i], mb);
                bis_add(step, h, (int)((acc * 0x01010101u) >> 24));
            }
            bis_end(step, sc + (step % 3) * RM);
        }
#pragma unroll
        for (int h = 0; h < 2; h++) {
            unsigned H = lo[h] >> 8, hq = H * 0x01010101u, hn = (H + 1) * 0x01010101u, acc = 0;
#pragma unroll
            for (int i = 0; i < NB * NP * 3 / 2; i++) {
                lb[h][i] = __byte_perm(word(h, 2 * i), word(h, 2 * i + 1), 0x6420) & __vcmpeq4(hb[h][i], hq);
                acc += __vsetgeu4(hb[h][i], hn);
            }
            cab[h] = H < 255 ? (int)((acc * 0x01010101u) >> 24) : 0;
        }
        for (int step = 8; step < 16; step++) {
#pragma unroll
            for (int h = 0; h < 2; h++) {
                unsigned mid = (lo[h] + hi[h] + 1) >> 1, mb = (mid & 0xffu) * 0x01010101u, acc = 0;
#pragma unroll
                for (int i = 0; i < NB * NP * 3 / 2; i++) acc += __vsetgeu4(lb[h][i], mb);
                bis_add(step, h, cab[h] + (int)((acc * 0x01010101u) >> 24));
            }
            bis_end(step, sc + (step % 3) * RM);
        }
        if (wn == 0 && cq == 0) {
            size_t gr = (((size_t)U.b * a.H + U.h) * a.nblk + U.c) * a.M + m0;
            if (r0 < rows) x.tinit[gr + r0] = nsel0 > 0 ? (int)lo[0] : 0;
            if (r1 < rows) x.tinit[gr + r1] = nsel1 > 0 ? (int)lo[1] : 0;
        }
    }
}

// ---------------------------------------------------------------------------------------------
#define TW_KT 64 // keys a tile of tp_wgt (tp_prep_k writes its kbw tiles with the literal 64)
__host__ __device__ constexpr int tw_tile_bytes(int DM) { return 2 * DM * TW_KT * 2; } // kbw: kh planes, then kl
// tp_wgt (s12): the two passes' second pass (tp_select<P2>'s sweep and finish) on Hopper's warpgroup
// MMA (sm_90a; select_bf16.cu is built for sm_90a plus compute_90 PTX, where these kernels are empty
// and never launched: arch_ok). tp_select<P2>'s items (TP_RM = 32 rows), threads (8 warps) and
// occupancy (two CTAs an SM, so one CTA's finish (tp_finish, the same) runs beside the other's
// sweep), but the keys are the M side of m64n16k16 (fp16 in, fp32 out), both operands from shared
// memory: the key limbs of a 64-key tile (pre-swizzled in global memory by tp_prep_k into the planes
// wgmma's descriptors read: one bulk copy a tile, plus its norms and scales, into a TW_NS-slot ring of
// mbarriers) and the item's q limbs (qh, ql: swizzled tiles, rows 16 wg .. for warpgroup wg). Per 16
// dims: kh.qh from zero (two such buffers in flight, summed on the FMA units in dimension order as
// tp_select does) and kh.ql + kl.qh chained into one accumulator: tp_select's products, order and bound
// (TP_C16). No block barrier a tile: a slot's last warp to finish with it (a shared counter) issues
// the tile NS ahead into it. A thread holds keys 16 w + g, + 8 for rows 16 wg + 8 n + 2 cq + c; its
// passes (rare) take a slot of the row's buffer each (a shared atomic), the finish is tp_select's
#define TWT_RM TP_RM // rows an item
#define TWT_NT 256   // two warpgroups
__host__ __device__ constexpr int twt_ns(int DM) { return DM == 64 ? 4 : 2; } // ring slots
__host__ __device__ constexpr size_t twt_smem(int DM) {
    // the q tiles (qh, ql) | the ring (tiles | norms | scales), the pooled q (prologue) over the ring;
    // the finish's warp areas over both
    size_t qt = (size_t)2 * TWT_RM * DM * 2, qs = (size_t)TWT_RM * (DM + 4) * 8;
    size_t ring = (size_t)twt_ns(DM) * (tw_tile_bytes(DM) + 2 * TW_KT * 4);
    size_t sw = qt + (ring > qs ? ring : qs), fin = (size_t)(TWT_NT / 32) * tp_warp_bytes(DM);
    return (sw > fin ? sw : fin) + 1024; // 1 KB: the 1024-byte aligned base
}
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// wgmma m64n16k16, fp16 in, fp32 accumulate, both operands K-major from shared memory (descriptors);
// _z: d = a b (write-only outputs: no register of d is touched before the MMA, so ptxas adds no
// warpgroup.arrive of its own between them: C7519 / C7520)
__device__ __forceinline__ void tw_ss_n16_z(float (*d)[4], uint64_t da, uint64_t db) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 0, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n16k16.f32.f16.f16 {%0,%1,%2,%3,%4,%5,%6,%7}, %8, %9, p, 1, 1, 0, 0;\n}\n"
                 : "=f"(d[0][0]), "=f"(d[0][1]), "=f"(d[0][2]), "=f"(d[0][3]), "=f"(d[1][0]), "=f"(d[1][1]),
                   "=f"(d[1][2]), "=f"(d[1][3])
                 : "l"(da), "l"(db));
}
__device__ __forceinline__ void tw_ss_n16(float (*d)[4], uint64_t da, uint64_t db) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n16k16.f32.f16.f16 {%0,%1,%2,%3,%4,%5,%6,%7}, %8, %9, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),
                   "+f"(d[1][2]), "+f"(d[1][3])
                 : "l"(da), "l"(db));
}
// pins the accumulators after a wait: no read of them moves above the wgmma.wait_group
__device__ __forceinline__ void tw_keep_n16(float (*d)[4]) {
    asm volatile(""
                 : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),
                   "+f"(d[1][2]), "+f"(d[1][3])
                 :
                 : "memory");
}
// bytes global -> shared by the bulk copy engine, completing on bar
__device__ __forceinline__ void tw_bulk(void *dst, const void *src, uint32_t bytes, uint64_t *bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                     smem_u32(dst)),
                 "l"(src), "r"(bytes), "r"(smem_u32(bar))
                 : "memory");
}
#endif

// tp_wgt's sweep of an item: the q tiles, the ring; per tile the products into am (kh.qh) and ac
// (kh.ql + kl.qh), then tile(jt, p, norms, scales, am, ac) (the slot's norms / scales readable until
// it returns)
template <int DM>
struct TwSweep {
    static constexpr int RM = TWT_RM, KT = TW_KT, NS = twt_ns(DM), QLD = DM + 4, KS = DM / 16;
    static constexpr int TB = tw_tile_bytes(DM), QT = RM * DM; // tile bytes, q tile elements
};
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
template <int DM, class Tile, class Mark>
__device__ __forceinline__ void tw_sweep(const FxArgs &x, unsigned char *sm, const double *qs, const int *qe,
                                         const FsUnit &U, int ntile, uint64_t *full, int *done, uint32_t &tcount,
                                         Tile tile, Mark mark) {
    using S = TwSweep<DM>;
    constexpr int RM = S::RM, KT = S::KT, NS = S::NS, QLD = S::QLD, KS = S::KS, TB = S::TB;
    const FsArgs &a = x.a;
    uint16_t *qh = (uint16_t *)sm, *ql = qh + S::QT;              // [DM / 64][RM][64] swizzled planes
    uint16_t *kt = qh + 2 * S::QT;                                 // [NS][TB / 2]
    float *kn = (float *)((unsigned char *)kt + (size_t)NS * TB); // [NS][KT]
    float *kf = kn + NS * KT;                                      // [NS][KT]
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, wg = warp >> 2;
    for (int e = tid; e < RM * DM / 8; e += TWT_NT) { // the q tiles (16-byte chunks)
        int r = e / (DM / 8), c = e % (DM / 8);
        double sq = ldexp(1.0, qe[r]);
        uint32_t wh[4], wl[4];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            uint32_t h0, l0, h1, l1;
            tp_split(qs[r * QLD + 8 * c + 2 * i] * sq, &h0, &l0), tp_split(qs[r * QLD + 8 * c + 2 * i + 1] * sq, &h1, &l1);
            wh[i] = h0 | h1 << 16, wl[i] = l0 | l1 << 16;
        }
        *(uint4 *)(qh + pl<RM>(r, c)) = make_uint4(wh[0], wh[1], wh[2], wh[3]);
        *(uint4 *)(ql + pl<RM>(r, c)) = make_uint4(wl[0], wl[1], wl[2], wl[3]);
    }
    fence_async_smem(); // the q tiles (generic writes) before the MMAs read them
    const size_t kvh = (size_t)U.b * a.KVH + U.h / (a.H / a.KVH);
    const unsigned char *src = (const unsigned char *)x.kbw + kvh * x.ntw * (size_t)tw_tile_bytes(DM);
    const float *knb = x.knorm + kvh * ((a.NK + 3) / 4 * 4), *kfb = x.kfac + kvh * ((a.NK + 3) / 4 * 4);
    auto issue = [&](int jt) { // tile jt into its slot (one thread)
        uint32_t s = (tcount + jt) % NS;
        mbar_expect_tx(&full[s], TB + 2 * KT * 4);
        tw_bulk((unsigned char *)kt + (size_t)s * TB, src + (size_t)jt * tw_tile_bytes(DM), TB, &full[s]);
        tw_bulk(kn + s * KT, knb + jt * KT, KT * 4, &full[s]);
        tw_bulk(kf + s * KT, kfb + jt * KT, KT * 4, &full[s]);
    };
    __syncthreads(); // qs read (the ring may be written), the q tiles complete
    if (tid == 0) {
        fence_async_smem(); // the generic writes there (q, the finish) before the copies
        for (int jt = 0; jt < NS && jt < ntile; jt++) issue(jt);
    }
    for (int jt = 0; jt < ntile; jt++) {
        const uint32_t c = tcount + jt, s = c % NS;
        mbar_wait(&full[s], (c / NS) & 1);
        wg_fence(); // after the wait loop (flash_wgmma.cu: else ptxas injects it)
        mark(TPP_WAIT);
        const uint16_t *tb = (const uint16_t *)((const unsigned char *)kt + (size_t)s * TB);
        // every product of the tile in flight at once (one commit, one wait: s12 r3 waited per 16 dims,
        // 128K 14.88 ms with tp_thr1, pass 1 5.19 ms vs tp_thr1's 3.3)
        float am[2][4], ac[2][4], t[KS][2][4];
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
            uint64_t dk = desc_k<KT>((const bf16 *)tb, 0, kk), dq = desc_k<RM>((const bf16 *)qh, 16 * wg, kk);
            tw_ss_n16_z(t[kk], dk, dq); // kh.qh of 16 dims from zero (the bound)
            uint64_t dl = desc_k<KT>((const bf16 *)(tb + DM * KT), 0, kk), dql = desc_k<RM>((const bf16 *)ql, 16 * wg, kk);
            if (kk == 0) tw_ss_n16_z(ac, dk, dql); // kh.ql
            else tw_ss_n16(ac, dk, dql);
            tw_ss_n16(ac, dl, dq); // kl.qh
        }
        wg_commit();
        wg_wait<0>();
        tw_keep_n16(ac);
#pragma unroll
        for (int n = 0; n < 2; n++)
#pragma unroll
            for (int i = 0; i < 4; i++) am[n][i] = 0.f;
#pragma unroll
        for (int kk = 0; kk < KS; kk++) { // summed in dimension order
            tw_keep_n16(t[kk]);
#pragma unroll
            for (int n = 0; n < 2; n++)
#pragma unroll
                for (int i = 0; i < 4; i++) am[n][i] += t[kk][n][i];
        }
        mark(TPP_MMA);
        tile(jt, kn + s * KT, kf + s * KT, am, ac);
        mark(TPP_FILT);
        // the slot done: its last warp issues tile jt + NS into it
        __syncwarp();
        if (lane == 0) {
            __threadfence_block();
            if (atomicAdd(done + s, 1) == TWT_NT / 32 - 1) {
                done[s] = 0;
                __threadfence_block();
                fence_async_smem();
                if (jt + NS < ntile) issue(jt + NS);
            }
        }
    }
    tcount += ntile;
}
#endif

// pass 2: the filter (s' + E reaches the row's threshold) and the inserts of a tile, then the finish
template <int DM, bool PROF = false>
__global__ void __launch_bounds__(TWT_NT, 2) tp_wgt(FxArgs x) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    using S = TwSweep<DM>;
    constexpr int RM = S::RM, KT = S::KT, NS = S::NS, QLD = S::QLD;
    const FsArgs &a = x.a;
    extern __shared__ unsigned char tw_raw[];
    unsigned char *sm = smem_base1k(tw_raw);
    double *qs = (double *)(sm + 2 * S::QT * 2); // [RM][QLD] pooled q (the prologue, over the ring)
    double *qg = x.qg + (size_t)blockIdx.x * RM * DM;
    __shared__ __align__(8) uint64_t full[NS];
    __shared__ int done[NS];
    __shared__ unsigned cnt[RM]; // inserts (high 16 bits)
    __shared__ int thr[RM], erow[RM], s_item, qe[RM], s_row;
    __shared__ float crow[RM];
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, cq = lane & 3, wg = warp >> 2;
    if (tid == 0) {
        for (int s = 0; s < NS; s++) mbar_init(&full[s], 1), done[s] = 0;
        mbar_fence_init();
    } // (fx_next's first barrier orders the inits before any use)
    unsigned long long *gq = x.gkey + (size_t)blockIdx.x * RM * x.capg;
    const float nkmax = __int_as_float(x.ctrl[3]);
    uint32_t tcount = 0;
    FsUnit U;
    int m0, rows;
    // MSLAB_SELECT_PROF: sections as tp_select's (a template parameter: the registers)
    __shared__ unsigned long long s_prof[PROF ? TWT_NT / 32 : 1][TP_NPROF];
    long long tlast = 0;
    auto mark = [&](int sec) {
        if (!PROF) return;
        long long t = clock64();
        if (lane == 0) s_prof[warp][sec] += (unsigned long long)(t - tlast);
        tlast = t;
    };
    if (PROF) {
        for (int i = lane; i < TP_NPROF; i += 32) s_prof[warp][i] = 0;
        tlast = clock64();
        if (tid == 0) x.pcta[2 * blockIdx.x] = tp_gtime();
    }
    while (fx_next<DM, RM, TWT_NT>(x, qs, &s_item, erow, cnt, thr, U, m0, rows, qg)) {
        mark(TPP_NEXT);
        if (PROF && lane == 0) s_prof[warp][TPP_NITEM]++;
        for (int r = warp; r < RM; r += TWT_NT / 32) { // row norms (the bound), scales, pass 1's thresholds
            float n;
            int e;
            tp_row_bound<DM, QLD>(qs, r, lane, n, e);
            if (lane == 0) {
                crow[r] = __fmul_ru(TP_C16, n), qe[r] = e == TP_EBAD ? 0 : e;
                if (r < rows && erow[r] > a.S)
                    thr[r] = x.tinit[(((size_t)U.b * a.H + U.h) * a.nblk + U.c) * a.M + m0 + r];
                if (r < rows && (!(n * nkmax <= 0x1p100f) || e == TP_EBAD)) // redone (fs_redo)
                    atomicAdd(x.ctrl + 1, 1), atomicAdd(x.ctrl + CTL_FBOUND, 1), x.fail[(size_t)U.off * a.M + m0 + r] = 1;
            }
        }
        __syncthreads();
        const int ntile = (erow[rows - 1] + KT - 1) / KT;
        // this thread's rows 16 wg + 8 n + 2 cq + c: bound factor, inverse scale, eligible, threshold
        // (key16up(hi) >= t  <=>  hi >= thrf(t): tp_select's filter)
        auto thrf = [](int t) { return t == 0 ? -INFINITY : tp_unokey((unsigned)(t - 1) << 16 | 1u); };
        float crr[2][2], fqr[2][2], tfr[2][2];
        int err[2][2];
#pragma unroll
        for (int n = 0; n < 2; n++)
#pragma unroll
            for (int c = 0; c < 2; c++) {
                int r = 16 * wg + 8 * n + 2 * cq + c;
                crr[n][c] = crow[r], fqr[n][c] = ldexpf(1.0f, -qe[r]), err[n][c] = erow[r], tfr[n][c] = thrf(thr[r]);
            }
        auto tile = [&](int jt, const float *knt, const float *kft, float (*am)[4], float (*ac)[4]) {
            const float kn0 = knt[16 * (warp & 3) + g], kn1 = knt[16 * (warp & 3) + g + 8];
            const float kf0 = kft[16 * (warp & 3) + g], kf1 = kft[16 * (warp & 3) + g + 8];
            const int j0 = jt * KT + 16 * (warp & 3) + g;
            unsigned pm = 0; // passes: bit 4 n + i (key j0 + 8 (i >> 1), row 16 wg + 8 n + 2 cq + (i & 1))
#pragma unroll
            for (int n = 0; n < 2; n++)
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const int hf = i >> 1, c = i & 1, j = j0 + 8 * hf;
                    float sv = am[n][i] + ac[n][i], E = __fmul_ru(crr[n][c], hf ? kn1 : kn0);
                    sv *= fqr[n][c] * (hf ? kf1 : kf0); // exact: 2^-120 .. 2^120
                    float hi = __fadd_ru(sv, E);
                    if (j < err[n][c] && !(hi < tfr[n][c])) pm |= 1u << (4 * n + i);
                    am[n][i] = sv, ac[n][i] = E;
                }
            if (!__any_sync(0xffffffffu, pm)) return; // (most tiles of a warp)
            // the inserts: the thread's atomics (a row's passes together) issued at once, then its slots
            unsigned base[2][2] = {{0u, 0u}, {0u, 0u}};
#pragma unroll
            for (int n = 0; n < 2; n++)
#pragma unroll
                for (int c = 0; c < 2; c++) {
                    int k = __popc(pm >> 4 * n & (5u << c));
                    if (k) base[n][c] = atomicAdd(&cnt[16 * wg + 8 * n + 2 * cq + c], (unsigned)k * 0x10000u);
                }
#pragma unroll
            for (int n = 0; n < 2; n++)
#pragma unroll
                for (int i = 0; i < 4; i++)
                    if (pm >> (4 * n + i) & 1) {
                        const int c = i & 1, r = 16 * wg + 8 * n + 2 * cq + c, j = j0 + 8 * (i >> 1);
                        float sv = am[n][i], E = ac[n][i];
                        unsigned keys = tp_key16up(__fadd_ru(sv, E)) | tp_key16dn(__fsub_rd(sv, E)) << 16;
                        unsigned pg = base[n][c] >> 16;
                        base[n][c] += 0x10000u;
                        if (pg < (unsigned)x.capg)
                            gq[(size_t)r * x.capg + pg] =
                                (unsigned long long)__float_as_uint(sv) << 32 | (keys & 0xffffu) << 16 | (unsigned)j;
                    }
        };
        if (PROF && lane == 0) s_prof[warp][TPP_NTILE] += ntile;
        mark(TPP_PRO);
        tw_sweep<DM>(x, sm, qs, qe, U, ntile, full, done, tcount, tile, mark);
        const size_t kvh = (size_t)U.b * a.KVH + U.h / (a.H / a.KVH);
        const float *knb = x.knorm + kvh * ((a.NK + 3) / 4 * 4);
        if (tid == 0) s_row = 0;
        __syncthreads(); // every insert in; every tile consumed (the ring free for the finish's areas)
        mark(TPP_BAR);
        tp_finish<DM>(x, (char *)sm + (size_t)warp * tp_warp_bytes(DM), U, m0, rows, cnt, thr, erow, crow, &s_row,
                      gq, qg, kvh, knb, mark);
        if (PROF) {
            __syncthreads();
            mark(TPP_FWAIT);
        }
    }
    if (PROF && lane == 0) {
        for (int i = 0; i < TP_NPROF; i++) atomicAdd(x.prof + i, s_prof[warp][i]);
        atomicMax(x.pcta + 2 * blockIdx.x + 1, tp_gtime());
    }
#else // an image without sm_90a's wgmma (the compute_90 PTX, JIT-compiled): every row failed, so
      // fs_redo makes the lists instead of passing with none written (s12 review; s14: the redo)
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < x.nitems * TWT_RM; i += gridDim.x * blockDim.x) {
        int item = i / TWT_RM, m = (item % x.mt) * TWT_RM + i % TWT_RM;
        if (m < x.a.M) x.fail[(size_t)x.ord[item / x.mt] * x.a.M + m] = 1;
    }
    if (blockIdx.x == 0 && threadIdx.x == 0) atomicAdd(x.ctrl + 1, 1);
#endif
}

// fs_topk's dynamic shared memory: one opt-in at the largest size either caller uses (P <= 2048
// keys and ids, 8192 cached scores), so no caller ever lowers the limit below another's launch
static void fs_topk_optin(void) {
    static bool done = false;
    if (done) return;
    cudaCheck(cudaFuncSetAttribute(fs_topk, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)(2048 * 12 + 8192 * 8)));
    done = true;
}

// fs_scores_mma's dynamic shared memory for head dim D (pooled q [64][D + 4], a kbar chunk
// [64][36]); the opt-in once for both instantiations
static size_t fs_scores_optin(int D) {
    static bool done = false;
    if (!done) {
        cudaCheck(cudaFuncSetAttribute(fs_scores_mma<64>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       (int)(sizeof(double) * 64 * (64 + 4 + 36))));
        cudaCheck(cudaFuncSetAttribute(fs_scores_mma<128>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       (int)(sizeof(double) * 64 * (128 + 4 + 36))));
        done = true;
    }
    return sizeof(double) * 64 * (D + 4 + 36);
}

// FsArgs of an ms selection but for the scratch pointers (the caller's)
static FsArgs fs_args_ms(const AttnIndex *ix, const AttnConfig *cfg, const AttnDims &d,
                         const uint16_t *q, int B, int T, int H, int KVH, int D) {
    FsArgs a;
    memset(&a, 0, sizeof a);
    a.idx = ix->idx, a.kpos = ix->kpos, a.qpos = ix->qpos, a.q = q;
    a.B = B, a.T = T, a.H = H, a.KVH = KVH, a.D = D, a.N = d.N, a.w = cfg->w, a.M = d.M, a.S = d.S;
    a.W = d.width, a.nblk = d.nblk, a.first = d.first, a.last_dense = d.last_dense, a.lg = d.lg;
    a.Gq = d.G, a.NK = d.N, a.moba_bs = 0;
    return a;
}
// the units of an ms selection, one per (b, h, block) (malloc'd, *n of them): ld = the eligible
// regions of the block's last member (0 for the dense blocks), off 0
static FsUnit *fs_units_ms(const AttnDims &d, int B, int H, size_t *n) {
    *n = (size_t)B * H * d.nblk;
    FsUnit *hu = (FsUnit *)malloc(sizeof(FsUnit) * *n);
    MS_ASSERT(hu, "out of memory");
    size_t i = 0;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int c = 0; c < d.nblk; c++, i++) {
                int g0 = c * d.M, gend = g0 + d.M < d.N ? g0 + d.M : d.N;
                bool dense = c < d.first || (c == d.nblk - 1 && d.last_dense);
                int e = dense ? 0 : attn_ms_eligible(&d, c, gend - 1);
                hu[i].b = b, hu[i].h = h, hu[i].c = c, hu[i].ld = e, hu[i].off = 0;
            }
    return hu;
}

static int fs_select(AttnIndex *ix, const AttnConfig *cfg, const uint16_t *q, const uint16_t *k,
                     int B, int T, int H, int KVH, int D) {
    AttnDims d;
    if (attn_dims(cfg, T, &d)) return -1;
    if (d.M <= 0 || d.S <= 0 || d.S > 2048 || (D != 64 && D != 128)) return -1;
    int N = d.N, P = 1;
    while (P < d.S) P <<= 1;
    // units and batches
    size_t nunit, maxb = 0, sumb = 0;
    FsUnit *hu = fs_units_ms(d, B, H, &nunit);
    for (size_t i = 0; i < nunit; i++) {
        size_t bytes = (size_t)d.M * hu[i].ld * 8;
        if (bytes > maxb) maxb = bytes;
        sumb += bytes;
    }
    // scratch: no more than the whole selection needs (short sequences stay small)
    size_t cap = maxb > FS_CAP ? maxb : FS_CAP;
    if (cap > sumb) cap = sumb > 0 ? sumb : 8;
    const int MGRID = nunit < 512 ? (int)nunit : 512;
    size_t per_unit_tops = (size_t)d.M * d.S * 4;
    int MAXU = (int)(((size_t)64 << 20) / per_unit_tops);
    MAXU = MAXU < 1 ? 1 : MAXU > 4096 ? 4096 : MAXU;
    if ((size_t)MAXU > nunit) MAXU = (int)nunit;
    size_t kb_n = (size_t)B * KVH * N * D;
    size_t o_kbar = 0, o_sc = align256(kb_n * 8), o_tops = align256(o_sc + cap);
    size_t o_fp = align256(o_tops + (size_t)MAXU * d.M * d.S * 4);
    size_t o_units = align256(o_fp + (size_t)MGRID * N * 4), total = o_units + MAXU * sizeof(FsUnit);
    char *scr = (char *)cuda_scratch(SCRATCH_SPARSE_BF16, total);
    FsArgs a = fs_args_ms(ix, cfg, d, q, B, T, H, KVH, D);
    a.kbar = (double *)(scr + o_kbar), a.scores = (double *)(scr + o_sc);
    a.tops = (int *)(scr + o_tops), a.fpos = (int *)(scr + o_fp);
    FsUnit *du = (FsUnit *)(scr + o_units);
    a.units = du;
    cudaCheck(cudaMemsetAsync(a.fpos, 0x7f, (size_t)MGRID * N * 4)); // 0x7f7f7f7f: "none yet"
    sel_pool<<<grid_for(kb_n / 2, 256), 256>>>((double *)a.kbar, k, B, T, KVH, D, cfg->w, N);
    cudaLaunchCheck();
    int cache = 8192; // scores of a member row kept in shared memory (64 KB)
    size_t topk_smem = (size_t)P * 12 + (size_t)cache * 8;
    fs_topk_optin();
    const int TPC = 4; // candidate tiles per scores CTA
    size_t sc_smem = fs_scores_optin(D);
    for (size_t u0 = 0; u0 < nunit;) {
        size_t u1 = u0, bytes = 0;
        int maxld = 0;
        while (u1 < nunit && u1 - u0 < (size_t)MAXU) {
            size_t ub = (size_t)d.M * hu[u1].ld * 8;
            if (bytes + ub > cap) break;
            hu[u1].off = (long long)(bytes / 8);
            bytes += ub;
            if (hu[u1].ld > maxld) maxld = hu[u1].ld;
            u1++;
        }
        int nu = (int)(u1 - u0);
        cudaCheck(cudaMemcpy(du, hu + u0, sizeof(FsUnit) * nu, cudaMemcpyHostToDevice));
        if (maxld > 0) {
            int ntile = (maxld + 63) / 64;
            dim3 g1((unsigned)((ntile + TPC - 1) / TPC), (unsigned)((d.M + 63) / 64), (unsigned)nu);
            if (D == 64) fs_scores_mma<64><<<g1, FS_NT, sc_smem>>>(a, TPC);
            else fs_scores_mma<128><<<g1, FS_NT, sc_smem>>>(a, TPC);
            cudaLaunchCheck();
            fs_topk<<<dim3((unsigned)d.M, (unsigned)nu), FS_NT, topk_smem>>>(a, P, cache);
            cudaLaunchCheck();
        }
        fs_merge<<<nu < MGRID ? nu : MGRID, FS_NT, sizeof(int) * d.S>>>(a, nu);
        cudaLaunchCheck();
        u0 = u1;
    }
    free(hu);
    return 0;
}

static int g_select_path = 0;
static int g_select_stats[CTL_N]; // the last fused / tp call's ctrl words (select_bf16_last_stats)
// tests (select_bf16_tp2_thr): pass 1's thresholds of the last two-pass call, kept on the host
static int g_tp2_keep = 0, *g_tp2_thr = NULL;
static size_t g_tp2_nthr = 0;
// tp's histogram rows: a threshold update every g_tph_upd inserts (TP_HUPD; the tests set 1: every
// tile, select_bf16_tph_upd)
static int g_tph_upd = TP_HUPD;
static_assert(TP_HUPD <= TP_HUMAX(TP_CAPF), "the ring holds TP_HUPD - 1 keys and a tile's inserts");
static int g_tp2 = -1; // the two-pass tp: 1 where it applies, 0 never (-1: MSLAB_SELECT_TP2, default 1;
                       // the tests' select_bf16_tp2)
static int g_tp_pcap = TP_PMAX; // tp's survivors past which the finish raises a row's threshold (tests: less)
// the two passes' second pass on wgmma (tp_wgt, s12) where it applies (sm_90: then at any length, no
// TP2_MAXLD cut); -1: MSLAB_SELECT_TPW (default 1), 0: tp_select<P2> to the cut
static int g_tpw = -1;
// host side of the fused path (kind 0: fx_select; 1: tp_select; 2: tp's two passes, tp_thr1 then
// tp_select<P2>); -1: not handled here (the caller runs the next path), or a row failed (likewise,
// after this call wrote partial lists that the next path then overwrites)
// MSLAB_SELECT_BF16 (select_mode below): the default path, and auto's tp cut
// auto: tp from TP_AUTO_MIN candidates in the longest row, else fused. s7 r3 (H200, paper config,
// B=1 H=32 D=128): tp faster at every measured length (16K 0.75 vs 1.02 ms, 32K 2.47 / 3.49, 64K
// 7.22 / 10.16, 128K 21.2 / 31.2; s6: 1M 873 / 1236), so 0: tp wherever it applies
#define SELECT_DEFAULT 3
#define TP_AUTO_MIN 0
// the two-pass tp where the longest row has <= TP2_MAXLD candidates (128K tokens at w 16). s11 r3 (H200,
// paper config, B=1 H=32 D=128, MSLAB_SELECT_PERF, ms, same snippet): 32K 1.88 vs 2.00, 128K 15.14 vs
// 16.06, 1M 562 vs 544 (pass 1 there 160 ms of it)
#define TP2_MAXLD 8192
// tp_wgt where the longest row has more than TW_MINLD candidates (H200, paper config, ms, tp_wgt vs
// tp_select<P2>: s12 r5 16K (896 candidates) 0.63 vs 0.62, 32K (1920) 1.93 / 1.95, 64K 5.18 / 5.28, 128K
// 15.08 / 15.64; r6, two runs each: 32K 1.93, 1.97 vs 1.91, 1.93, 64K 5.14, 5.19 vs 5.24, 5.25, 128K
// 15.00, 15.01 vs 15.50, 15.51, 1M 523 vs tp_select's 551). s13: 1024 (32K takes tp_wgt; with s13's
// finish and pass 1, MSLAB_SELECT_TWMIN=n: r4 32K 1.78 vs 1.80 ms, r6 1.66 vs 1.71; 16K (896) keeps
// tp_select<P2>: r6 0.55 / 0.55 with n 512)
#define TW_MINLD 1024
// tests: tp_wgt past this many candidates instead (select_bf16_tw_min: 0 forces it at every length,
// so that B > 1, ties, rising, raise and huge-norm rows reach it; s13), and whether it ran in the
// last call and made its lists (select_bf16_last_tw); -1: TW_MINLD or MSLAB_SELECT_TWMIN=n (A/B runs)
static int g_tw_min = -1, g_select_tw = 0;
// the tp_select instance for head dim D (64 / 128)
typedef void (*TpKernel)(FxArgs);
static TpKernel tp_kernel(int D, bool p2 = false) {
    if (p2) return D == 64 ? tp_select<64, TP_CAPF, true> : tp_select<128, TP_CAPF, true>;
    return D == 64 ? tp_select<64, TP_CAPF> : tp_select<128, TP_CAPF>;
}
static int select_mode(void);
// s14: the last call's ctrl words, copied by its merge's CTA 0 to g_dstats (no host wait in the call,
// no copy in the stream); sel_stats_sync downloads them (the tests' hooks, MSLAB_SELECT_DEBUG)
static int *g_dstats = NULL;
static bool g_stats_pending = false;
static void sel_stats_sync(void) {
    if (!g_stats_pending) return;
    cudaCheck(cudaMemcpy(g_select_stats, g_dstats, sizeof(int) * CTL_N, cudaMemcpyDeviceToHost));
    g_stats_pending = false;
}
// s14: the unit tables (units, work orders) depend only on the shapes and the path: kept on the device
// by content (SEL_NTAB of them, least recently used replaced), so a call uploads nothing where a
// previous call had the same tables (before s14: two pageable cudaMemcpy's a call, each waiting for
// the GPU's queue to drain). A replaced buffer is rewritten by a cudaMemcpy in stream order (after
// the kernels that read it)
#define SEL_NTAB 8
static struct {
    size_t bytes, cap;
    void *host, *dev;
    unsigned long long use;
} g_tab[SEL_NTAB];
static unsigned long long g_tab_clock = 0;
static const void *sel_tables(const void *h, size_t bytes) {
    int lru = 0;
    for (int i = 0; i < SEL_NTAB; i++) {
        if (g_tab[i].dev && g_tab[i].bytes == bytes && !memcmp(g_tab[i].host, h, bytes)) {
            g_tab[i].use = ++g_tab_clock;
            return g_tab[i].dev;
        }
        if (g_tab[i].use < g_tab[lru].use) lru = i;
    }
    auto &t = g_tab[lru];
    if (t.cap < bytes) {
        free(t.host);
        if (t.dev) cudaCheck(cudaFree(t.dev));
        t.host = malloc(bytes);
        MS_ASSERT(t.host, "out of memory");
        cudaCheck(cudaMalloc(&t.dev, bytes));
        t.cap = bytes;
    }
    memcpy(t.host, h, bytes);
    cudaCheck(cudaMemcpy(t.dev, h, bytes, cudaMemcpyHostToDevice));
    t.bytes = bytes, t.use = ++g_tab_clock;
    return t.dev;
}
// fs_redo's dynamic shared memory (fs_topk's: sort keys / ids of P and a score cache of up to 8192)
static void fs_redo_optin(void) {
    static bool done = false;
    if (done) return;
    cudaCheck(cudaFuncSetAttribute(fs_redo<64>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)(2048 * 12 + 8192 * 8)));
    cudaCheck(cudaFuncSetAttribute(fs_redo<128>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)(2048 * 12 + 8192 * 8)));
    done = true;
}
// tests (select_bf16_force_redo): fs_redo also redoes every n-th row of each batch (0: none)
static int g_force_redo = 0;

static int fx_select_host(AttnIndex *ix, const AttnConfig *cfg, const uint16_t *q,
                          const uint16_t *k, int B, int T, int H, int KVH, int D, int kind) {
    const bool tp = kind > 0, tp2 = kind == 2;
    if (g_tp2 < 0) g_tp2 = getenv("MSLAB_SELECT_TP2") ? atoi(getenv("MSLAB_SELECT_TP2")) != 0 : 1;
    if (g_tpw < 0) g_tpw = getenv("MSLAB_SELECT_TPW") ? atoi(getenv("MSLAB_SELECT_TPW")) != 0 : 1;

    if (tp2 && !g_tp2) return -1;
    AttnDims d;
    if (attn_dims(cfg, T, &d)) return -1;
    if (d.M <= 0 || d.S <= 0 || d.S > FX_CAPF - 2 * FX_KT || (D != 64 && D != 128)) return -1;
    // tp: a tile's inserts fit the sketch after a compaction; S + the bound's few fit TP_PMAX
    const int capf = TP_CAPF;
    if (tp && (d.S > capf - TP_KT || d.S > TP_PMAX - 64)) return -1;
    int N = d.N, maxld = 0;
    size_t nunit;
    FsUnit *hu = fs_units_ms(d, B, H, &nunit);
    if (!nunit) { // (B or H 0: nothing to select here; the batch sizes below divide by it)
        free(hu);
        return -1;
    }
    for (size_t i = 0; i < nunit; i++) maxld = hu[i].ld > maxld ? hu[i].ld : maxld;
    // tp_wgt: the two passes past TW_MINLD at any length (s12 r5 / r6, 1M: 523 ms vs tp_select's 549 / 551)
    if (g_tw_min < 0) g_tw_min = getenv("MSLAB_SELECT_TWMIN") ? atoi(getenv("MSLAB_SELECT_TWMIN")) : TW_MINLD;
    const bool tw = tp2 && g_tpw && arch_ok() && maxld > g_tw_min;
    if (maxld > 65535 || (tp && select_mode() == 3 && maxld < TP_AUTO_MIN) || (tp2 && !tw && maxld > TP2_MAXLD)) {
        // 16-bit counters; the two-pass's cut
        free(hu);
        return -1;
    }
    int dev = 0, nsm = 0;
    cudaCheck(cudaGetDevice(&dev));
    cudaCheck(cudaDeviceGetAttribute(&nsm, cudaDevAttrMultiProcessorCount, dev));
    const int MGRID = nunit < 512 ? (int)nunit : 512;
    size_t per_unit_tops = (size_t)d.M * d.S * 4;
    int MAXU = (int)(((size_t)256 << 20) / per_unit_tops);
    MAXU = MAXU < 1 ? 1 : MAXU > 8192 ? 8192 : MAXU;
    if ((size_t)MAXU > nunit) MAXU = (int)nunit;
    // rows per item: tp TP_RM (two CTAs per SM), fused 64 (one)
    int rm = tp ? TP_RM : 64;
    int mt = (d.M + rm - 1) / rm, nslot = nsm * (64 / rm);
    int capg = maxld < FX_CAPG ? (maxld > 0 ? maxld : 1) : FX_CAPG; // no overflow when maxld fits
    size_t kb_n = (size_t)B * KVH * N * D, gbuf = (size_t)nslot * rm * capg;
    size_t o_tops = align256(kb_n * 8), o_fp = align256(o_tops + (size_t)MAXU * d.M * d.S * 4);
    // s14: fs_redo's score rows [nsm][maxld]; after ctrl (16 words) each batch's two work counters and
    // the rows' failure flags [nunit][M], all cleared by one memset (the unit tables live apart: sel_tables)
    const int nbt = (int)((nunit + MAXU - 1) / MAXU);
    size_t o_sb = align256(o_fp + (size_t)MGRID * N * 4), o_gk = align256(o_sb + (size_t)nsm * (maxld > 0 ? maxld : 1) * 8);
    size_t o_gi = align256(o_gk + gbuf * 8), o_ctrl = align256(o_gi + gbuf * 4);
    size_t o_fail = o_ctrl + 64 + (size_t)nbt * 8, o_cend = o_fail + nunit * d.M * 4;
    // tp: bf16 kbar, key norm bounds per kv head padded to NKP (16-byte aligned tiles; a tile
    // may read 128 past the last)
    size_t nkp = ((size_t)N + 3) / 4 * 4, heads = (size_t)B * KVH;
    size_t nkn = tp ? heads * nkp + 128 : 0; // floats
    size_t o_kbf = align256(o_cend), o_kn = align256(o_kbf + (tp ? kb_n * 4 : 0));
    size_t o_kf = align256(o_kn + nkn * 4), o_qg = align256(o_kf + nkn * 4);
    // two-pass: pass 1's threshold per member row
    size_t o_ti = align256(o_qg + (tp ? (size_t)nslot * rm * D * 8 : 0));
    // tp_wgt, tw_thr1: the key limbs as pre-swizzled 64-key tiles
    const int ntw = (N + TW_KT - 1) / TW_KT;
    size_t o_kw = align256(o_ti + (tp2 ? (size_t)B * H * d.nblk * d.M * 4 : 0));
    size_t total = o_kw + (tw ? heads * ntw * (size_t)tw_tile_bytes(D) : 0);
    char *scr = (char *)cuda_scratch(SCRATCH_SPARSE_BF16, total);
    FxArgs x;
    memset(&x, 0, sizeof x);
    FsArgs &a = x.a;
    a = fs_args_ms(ix, cfg, d, q, B, T, H, KVH, D);
    a.kbar = (double *)scr, a.scores = NULL;
    a.tops = (int *)(scr + o_tops), a.fpos = (int *)(scr + o_fp);
    x.force = g_force_redo;
    x.gkey = (unsigned long long *)(scr + o_gk), x.gid = (int *)(scr + o_gi);
    x.ctrl = (int *)(scr + o_ctrl), x.mt = mt, x.capg = capg;
    x.kbf = (const uint16_t *)(scr + o_kbf), x.knorm = (const float *)(scr + o_kn);
    x.kfac = (const float *)(scr + o_kf), x.qg = (double *)(scr + o_qg);
    x.kbw = (const uint16_t *)(scr + o_kw), x.ntw = ntw;
    // MSLAB_SELECT_PROF=1: tp_select's section profile and the kernels' times (events), on stderr
    static int profon = -1;
    static unsigned long long *dprof = NULL, *dcta = NULL;
    if (profon < 0) {
        profon = getenv("MSLAB_SELECT_PROF") && atoi(getenv("MSLAB_SELECT_PROF")) > 0;
        if (profon) cudaCheck(cudaMalloc(&dprof, sizeof(unsigned long long) * TP_NPROF));
        if (profon) cudaCheck(cudaMalloc(&dcta, sizeof(unsigned long long) * 2 * 4096));
    }
    int pgrid = 0; // the last selection kernel's grid (its CTAs' times in dcta)
    // host clock around synchronised phases (profile only)
    auto pnow = [&]() {
        cudaCheck(cudaDeviceSynchronize());
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
    };
    double ksel = 0, kmerge = 0, tp0 = 0, tp1 = 0, tk = 0, kpass1 = 0, kredo = 0;
    // MSLAB_SELECT_TP_HUPD=n: the update interval (diagnostics). s10 (H200): sparse_wgmma_fwd_perf's
    // 128K inputs (near-ties: 99.5M of 100.6M survivors need exact scores) fail 7776 rows (max 876
    // survivors after the raise) at n = 128, 256 and 384 alike, so they fall back to fused whatever
    // n; the bench's 128K selection: 15.99 ms at 384, 16.52 at 128
    static int env_upd = -1;
    if (env_upd < 0) env_upd = getenv("MSLAB_SELECT_TP_HUPD") ? atoi(getenv("MSLAB_SELECT_TP_HUPD")) : 0;
    int upd = env_upd > 0 && g_tph_upd == TP_HUPD ? env_upd : g_tph_upd;
    x.hupd = upd < TP_HUMAX(capf) ? upd : TP_HUMAX(capf);
    x.pcap = g_tp_pcap < TP_PMAX ? g_tp_pcap : TP_PMAX;
    if (profon && tp) {
        x.prof = dprof, x.pcta = dcta;
        cudaCheck(cudaMemsetAsync(dprof, 0, sizeof(unsigned long long) * TP_NPROF));
    }
    if (profon) tp0 = pnow();
    cudaCheck(cudaMemsetAsync(x.ctrl, 0, o_cend - o_ctrl)); // ctrl, the work counters, the failure flags
    if (!g_dstats) cudaCheck(cudaMalloc(&g_dstats, 64));
    static bool msm_attr = false; // fs_merge_sm where N <= FS_MSMN (fs_merge beyond)
    if (!msm_attr) {
        cudaCheck(cudaFuncSetAttribute(fs_merge_sm, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       (int)(sizeof(int) * (2048 + FS_MSMN))));
        msm_attr = true;
    }
    const bool msm = N <= FS_MSMN && d.S <= 2048;
    static int env_pp = -1; // MSLAB_SELECT_TPPP (s13): tp's pooling and limbs in one kernel (tp_pool_prep)
    if (env_pp < 0) env_pp = getenv("MSLAB_SELECT_TPPP") ? atoi(getenv("MSLAB_SELECT_TPPP")) != 0 : 1;
    if (tp && env_pp) { // (and fpos filled where fs_merge runs: no memset)
        unsigned gp = grid_for(heads * N * 32, 256), gmax = (unsigned)nsm * 3; // 24 warps an SM (69 registers), grid-stride
        tp_pool_prep<<<gp < gmax ? gp : gmax, 256>>>((double *)a.kbar, k, B, T, KVH, cfg->w, (uint16_t *)x.kbf,
                                                     (float *)x.knorm, (float *)x.kfac, x.ctrl, N, (int)nkp, D,
                                                     tw ? (uint16_t *)x.kbw : nullptr, ntw, a.fpos, msm ? 0 : (size_t)MGRID * N);
        cudaLaunchCheck();
    } else {
        cudaCheck(cudaMemsetAsync(a.fpos, 0x7f, (size_t)MGRID * N * 4));
        sel_pool<<<grid_for(kb_n / 2, 256), 256>>>((double *)a.kbar, k, B, T, KVH, D, cfg->w, N);
    }
    cudaLaunchCheck();
    if (tp && !env_pp) {
        unsigned gp = grid_for(heads * N * 32, 256);
        tp_prep_k<<<gp, 256>>>((uint16_t *)x.kbf, (float *)x.knorm, (float *)x.kfac, x.ctrl, a.kbar, heads, N,
                               (int)nkp, D, tw ? (uint16_t *)x.kbw : nullptr, ntw);
        cudaLaunchCheck();
    }
    if (profon) tp1 = pnow();
    size_t smem = tp ? tp_smem(D, capf, tp2) : sizeof(double) * (64 * (D + 4) + FX_KT * FX_KLD) + (size_t)64 * FX_CAPF * 2;
    static bool attr = false;
    if (!attr) {
        int s64 = (int)(sizeof(double) * (64 * 68 + FX_KT * FX_KLD) + (size_t)64 * FX_CAPF * 2);
        int s128 = (int)(sizeof(double) * (64 * 132 + FX_KT * FX_KLD) + (size_t)64 * FX_CAPF * 2);
        cudaCheck(cudaFuncSetAttribute(fx_select<64>, cudaFuncAttributeMaxDynamicSharedMemorySize, s64));
        cudaCheck(cudaFuncSetAttribute(fx_select<128>, cudaFuncAttributeMaxDynamicSharedMemorySize, s128));
        for (int dm = 64; dm <= 128; dm += 64) {
            cudaCheck(cudaFuncSetAttribute((const void *)tp_kernel(dm), cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           (int)tp_smem(dm, TP_CAPF)));
            cudaCheck(cudaFuncSetAttribute((const void *)tp_kernel(dm, true),
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, (int)tp_smem(dm, TP_CAPF, true)));
        }
        cudaCheck(cudaFuncSetAttribute(tp_thr1<64>, cudaFuncAttributeMaxDynamicSharedMemorySize, tp1_smem(64)));
        cudaCheck(cudaFuncSetAttribute(tp_wgt<64>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)twt_smem(64)));
        cudaCheck(cudaFuncSetAttribute(tp_wgt<128>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)twt_smem(128)));
        cudaCheck(cudaFuncSetAttribute(tp_wgt<64, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)twt_smem(64)));
        cudaCheck(cudaFuncSetAttribute(tp_wgt<128, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)twt_smem(128)));
        cudaCheck(cudaFuncSetAttribute(tp_thr1<128>, cudaFuncAttributeMaxDynamicSharedMemorySize, tp1_smem(128)));
        attr = true;
    }
    // the unit tables of every batch (units [nunit], then each batch's work order at its first unit)
    // (zeroed: a batch's order fills its first nw ints only, and the whole block is the cache's key)
    FsUnit *hu_all = (FsUnit *)calloc(1, sizeof(FsUnit) * nunit + sizeof(int) * nunit);
    MS_ASSERT(hu_all, "out of memory");
    int *hord_all = (int *)(hu_all + nunit), *nwb = (int *)malloc(sizeof(int) * (nunit / MAXU + 2)), nb = 0;
    MS_ASSERT(nwb, "out of memory");
    for (size_t u0 = 0; u0 < nunit; nb++) {
        size_t u1 = u0 + (size_t)MAXU < nunit ? u0 + (size_t)MAXU : nunit;
        int nu = (int)(u1 - u0), nw = 0;
        int *hord = hord_all + u0;
        for (int j = 0; j < nu; j++) {
            hu[u0 + j].off = j; // its tops slot
            if (hu[u0 + j].ld > 0) hord[nw++] = j;
        }
        // costliest first (ld descending; stable insertion by counting would do, units are
        // ascending in c inside a head, so reversing runs of one head is enough for balance)
        for (int lo = 0, hi = nw - 1; lo < hi; lo++, hi--) {
            int t = hord[lo];
            hord[lo] = hord[hi], hord[hi] = t;
        }
        // s13 (tp; MSLAB_SELECT_TPORD=k, default 2, 0 off): the units of the last k waves of items
        // (k nslot) in ld descending order across heads (stable), so the one-wave kernels end on
        // their cheapest items
        static int env_ord = -1;
        if (env_ord < 0) env_ord = getenv("MSLAB_SELECT_TPORD") ? atoi(getenv("MSLAB_SELECT_TPORD")) : 2;
        if (tp && env_ord > 0) {
            long long kk = ((long long)env_ord * nslot + mt - 1) / mt;
            int k = kk < nw ? (int)kk : nw, f = nw - k;
            std::stable_sort(hord + f, hord + nw, [&](int i, int j) { return hu[u0 + i].ld > hu[u0 + j].ld; });
        }
        nwb[nb] = nw;
        u0 = u1;
    }
    memcpy(hu_all, hu, sizeof(FsUnit) * nunit);
    const FsUnit *dtab = (const FsUnit *)sel_tables(hu_all, sizeof(FsUnit) * nunit + sizeof(int) * nunit);
    const int *dord_all = (const int *)(dtab + nunit);
    int P = 1; // fs_redo: fs_topk's sort size and score cache
    while (P < d.S) P <<= 1;
    const int rcache = maxld < 8192 ? (maxld > 0 ? maxld : 1) : 8192;
    const size_t rsmem = (size_t)P * 12 + (size_t)rcache * 8;
    fs_redo_optin();
    nb = 0;
    for (size_t u0 = 0; u0 < nunit; nb++) {
        size_t u1 = u0 + (size_t)MAXU < nunit ? u0 + (size_t)MAXU : nunit;
        int nu = (int)(u1 - u0), nw = nwb[nb];
        a.units = dtab + u0, x.ord = dord_all + u0;
        x.fail = (int *)(scr + o_fail) + u0 * d.M, x.work = x.ctrl + 16 + 2 * nb;
        if (nw > 0) {
            x.nitems = nw * mt;
            int grid = x.nitems < nslot ? x.nitems : nslot;
            if (profon) tk = pnow();
            if (x.pcta && grid <= 4096) cudaCheck(cudaMemsetAsync(x.pcta, 0, sizeof(unsigned long long) * 2 * grid));
            pgrid = grid;
            if (tp2) { // pass 1 (its thresholds into x.tinit), then pass 2
                x.tinit = (int *)(scr + o_ti);
                int mt1 = (d.M + TP_RM - 1) / TP_RM, ns1 = nsm * (64 / TP_RM); // pass 1: items of TP_RM rows
                x.mt = mt1, x.nitems = nw * mt1;
                int grid1 = x.nitems < ns1 ? x.nitems : ns1;
                if (D == 64) tp_thr1<64><<<grid1, FX_NT, tp1_smem(64)>>>(x);
                else tp_thr1<128><<<grid1, FX_NT, tp1_smem(128)>>>(x);
                cudaLaunchCheck();
                x.mt = mt, x.nitems = nw * mt, x.work = x.ctrl + 16 + 2 * nb + 1;
                if (profon) {
                    double t = pnow();
                    kpass1 += t - tk, tk = t;
                }
                if (tw) {
                    void (*k)(FxArgs) = D == 64 ? (x.prof ? tp_wgt<64, true> : tp_wgt<64>)
                                                : (x.prof ? tp_wgt<128, true> : tp_wgt<128>);
                    k<<<grid, TWT_NT, twt_smem(D)>>>(x);
                } else
                    tp_kernel(D, true)<<<grid, FX_NT, smem>>>(x);
            } else if (tp) {
                tp_kernel(D)<<<grid, FX_NT, smem>>>(x);
            } else if (D == 64) fx_select<64><<<grid, FX_NT, smem>>>(x);
            else fx_select<128><<<grid, FX_NT, smem>>>(x);
            cudaLaunchCheck();
            if (profon) {
                double t = pnow();
                ksel += t - tk, tk = t;
            }
            // the failed rows (none in the normal path: an exit at once) redone before the merge
            if (D == 64) fs_redo<64><<<nsm, FS_NT, rsmem>>>(x, nu * d.M, (double *)(scr + o_sb), maxld, P, rcache);
            else fs_redo<128><<<nsm, FS_NT, rsmem>>>(x, nu * d.M, (double *)(scr + o_sb), maxld, P, rcache);
            cudaLaunchCheck();
            if (profon) {
                double t = pnow();
                kredo += t - tk, tk = t;
            }
        }
        if (msm) fs_merge_sm<<<nu < MGRID ? nu : MGRID, FS_MNT, sizeof(int) * (d.S + N)>>>(a, nu, x.ctrl, g_dstats);
        else fs_merge<<<nu < MGRID ? nu : MGRID, FS_NT, sizeof(int) * d.S>>>(a, nu, x.ctrl, g_dstats);
        cudaLaunchCheck();
        if (profon) kmerge += pnow() - tk;
        u0 = u1;
    }
    if (profon) {
        int occ = 0; // resident CTAs per SM
        if (tw)
            cudaCheck(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, (const void *)(D == 64 ? tp_wgt<64> : tp_wgt<128>),
                                                                    TWT_NT, twt_smem(D)));
        else if (tp)
            cudaCheck(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, (const void *)tp_kernel(D, tp2), FX_NT, smem));
        fprintf(stderr, "select_bf16 prof %s T=%d (%d CTAs/SM): pool+prep %.3f ms, select kernel %.3f ms, merge %.3f ms, "
                "pass 1 %.3f ms, redo %.3f ms\n",
                tw ? "tp two-pass (tp_wgt)" : tp2 ? "tp two-pass" : tp ? "tp" : "fused", T, occ, tp1 - tp0, ksel, kmerge,
                kpass1, kredo);
        if (tp) {
            unsigned long long hp[TP_NPROF], tot = 0;
            cudaCheck(cudaMemcpy(hp, dprof, sizeof hp, cudaMemcpyDeviceToHost));
            for (int i = 0; i < TPP_NTILE; i++) tot += hp[i];
            fprintf(stderr, "  tp sections (warp-cycles, share):");
            for (int i = 0; i < TPP_NTILE; i++)
                fprintf(stderr, " %s %.1f%%", tp_prof_names[i], 100.0 * hp[i] / (tot ? tot : 1));
            fprintf(stderr, "\n  total %.3e warp-cycles; %s %llu, %s %llu, %s %llu, %s %llu; "
                            "cycles per tile per warp %.0f\n",
                    (double)tot, tp_prof_names[TPP_NTILE], hp[TPP_NTILE] / 8, tp_prof_names[TPP_NCMP], hp[TPP_NCMP],
                    tp_prof_names[TPP_NUPD], hp[TPP_NUPD], tp_prof_names[TPP_NITEM], hp[TPP_NITEM] / 8,
                    (double)tot / (hp[TPP_NTILE] ? hp[TPP_NTILE] : 1));
            // the last batch's CTAs (one wave): start / end spread, us from the first start
            static unsigned long long hc[2 * 4096];
            if (pgrid > 0 && pgrid <= 4096) {
                cudaCheck(cudaMemcpy(hc, dcta, sizeof(unsigned long long) * 2 * pgrid, cudaMemcpyDeviceToHost));
                unsigned long long t0 = ~0ull, s1 = 0;
                static double ends[4096];
                double busy = 0;
                for (int i = 0; i < pgrid; i++) t0 = hc[2 * i] < t0 ? hc[2 * i] : t0, s1 = hc[2 * i] > s1 ? hc[2 * i] : s1;
                for (int i = 0; i < pgrid; i++) ends[i] = (hc[2 * i + 1] - t0) * 1e-3, busy += (hc[2 * i + 1] - hc[2 * i]) * 1e-3;
                qsort(ends, pgrid, sizeof(double), [](const void *p, const void *q) {
                    double u = *(const double *)p, v = *(const double *)q;
                    return u < v ? -1 : u > v;
                });
                double span = ends[pgrid - 1];
                fprintf(stderr, "  CTAs %d: starts within %.1f us; ends (us) min %.1f p10 %.1f p50 %.1f p90 %.1f max %.1f; "
                        "busy %.1f%% of grid x span\n", pgrid, (s1 - t0) * 1e-3, ends[0], ends[pgrid / 10], ends[pgrid / 2],
                        ends[pgrid * 9 / 10], span, 100.0 * busy / (pgrid * (span > 0 ? span : 1)));
            }
        }
    }
    // s14: no download (the merge copied ctrl to g_dstats: sel_stats_sync reads it when a test or
    // MSLAB_SELECT_DEBUG asks); the lists are the kernel's, failed rows redone (fs_redo)
    g_stats_pending = true;
    if (tp2 && g_tp2_keep) { // tests: pass 1's thresholds, every row of the selecting units
        size_t n = (size_t)B * H * d.nblk * d.M;
        free(g_tp2_thr);
        g_tp2_thr = (int *)malloc(sizeof(int) * n);
        MS_ASSERT(g_tp2_thr, "out of memory");
        cudaCheck(cudaMemcpy(g_tp2_thr, scr + o_ti, sizeof(int) * n, cudaMemcpyDeviceToHost));
        g_tp2_nthr = n;
    }
    static int dbg = -1;
    if (dbg < 0) dbg = getenv("MSLAB_SELECT_DEBUG") ? atoi(getenv("MSLAB_SELECT_DEBUG")) : 0;
    if (dbg) { // every call's counters (synchronises; fs_redo notes the first 4 calls with failed rows)
        sel_stats_sync();
        const int *ctrl = g_select_stats;
        fprintf(stderr,
                "select_bf16 %s: T=%d S=%d maxld=%d capg %d: failed rows %d (buffer %d, survivors %d, "
                "too few %d, bound %d; redone %d), max inserts %d, max survivors %d (cap %d); all rows: survivors %d, "
                "exact %d; histogram rows %d, updates %d; thresholds raised %d\n",
                tw ? "tp two-pass (tp_wgt)" : tp2 ? "tp two-pass" : tp ? "tp" : "fused", T, d.S, maxld, capg, ctrl[1],
                ctrl[CTL_FBUF], ctrl[CTL_FSURV], ctrl[CTL_FFEW], ctrl[CTL_FBOUND], ctrl[CTL_REDONE], ctrl[2],
                ctrl[CTL_MAXSURV], tp ? x.pcap : FX_PMAX, ctrl[5], ctrl[4], ctrl[CTL_HROWS], ctrl[CTL_HUPD],
                ctrl[CTL_RAISED]);
    }
    free(hu), free(hu_all), free(nwb);
    g_select_path = tp ? (tp2 ? 5 : 4) : 1;
    if (tp2) g_select_tw = tw;
    return 0;
}

// moba with the same kernels: members = query rows (64 per unit, "pooled" over one row),
// candidates = the strictly past blocks (kbar = block means), top - 1 per row, no merge
static int fs_select_moba(AttnIndex *ix, const AttnConfig *cfg, const uint16_t *q,
                          const uint16_t *k, int B, int T, int H, int KVH, int D) {
    AttnDims d;
    if (attn_dims(cfg, T, &d)) return -1;
    int bs = cfg->block, nb = (T + bs - 1) / bs, S = cfg->top - 1, M = 64;
    if (S < 0 || S > 2048 || (D != 64 && D != 128) || d.qblock != 1) return -1;
    int P = 1;
    while (P < (S > 0 ? S : 1)) P <<= 1;
    int nch = (T + M - 1) / M;
    size_t nunit = (size_t)B * H * nch;
    FsUnit *hu = (FsUnit *)malloc(sizeof(FsUnit) * nunit);
    MS_ASSERT(hu, "out of memory");
    size_t maxb = 0, sumb = 0, i = 0;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int c = 0; c < nch; c++, i++) {
                int e = (min(T, c * M + M) - 1) / bs; // the chunk's last row's own block
                hu[i].b = b, hu[i].h = h, hu[i].c = c, hu[i].ld = e, hu[i].off = 0;
                size_t bytes = (size_t)M * e * 8;
                maxb = bytes > maxb ? bytes : maxb, sumb += bytes;
            }
    size_t cap = maxb > FS_CAP ? maxb : FS_CAP;
    if (cap > sumb) cap = sumb > 0 ? sumb : 8;
    int MAXU = nunit < 65535 ? (int)nunit : 65535;
    size_t kb_n = (size_t)B * KVH * nb * D;
    size_t o_sc = align256(kb_n * 8), o_units = align256(o_sc + cap);
    size_t total = o_units + (size_t)MAXU * sizeof(FsUnit);
    char *scr = (char *)cuda_scratch(SCRATCH_SPARSE_BF16, total);
    FsArgs a;
    memset(&a, 0, sizeof a);
    a.idx = ix->idx, a.q = q, a.kbar = (double *)scr, a.scores = (double *)(scr + o_sc);
    FsUnit *du = (FsUnit *)(scr + o_units);
    a.units = du;
    a.B = B, a.T = T, a.H = H, a.KVH = KVH, a.D = D, a.N = T, a.NK = nb, a.w = 1, a.M = M, a.S = S;
    a.W = d.width, a.nblk = d.nblk, a.moba_bs = bs;
    sel_pool<<<grid_for(kb_n / 2, 256), 256>>>((double *)a.kbar, k, B, T, KVH, D, bs, nb);
    cudaLaunchCheck();
    int cache = 8192;
    size_t topk_smem = (size_t)P * 12 + (size_t)cache * 8;
    fs_topk_optin();
    size_t sc_smem = fs_scores_optin(D);
    const int TPC = 4;
    for (size_t u0 = 0; u0 < nunit;) {
        size_t u1 = u0, bytes = 0;
        int maxld = 0;
        while (u1 < nunit && u1 - u0 < (size_t)MAXU) {
            size_t ub = (size_t)M * hu[u1].ld * 8;
            if (bytes + ub > cap) break;
            hu[u1].off = (long long)(bytes / 8);
            bytes += ub;
            maxld = hu[u1].ld > maxld ? hu[u1].ld : maxld;
            u1++;
        }
        int nu = (int)(u1 - u0);
        cudaCheck(cudaMemcpy(du, hu + u0, sizeof(FsUnit) * nu, cudaMemcpyHostToDevice));
        if (maxld > 0) {
            int ntile = (maxld + 63) / 64;
            dim3 g1((unsigned)((ntile + TPC - 1) / TPC), 1, (unsigned)nu);
            if (D == 64) fs_scores_mma<64><<<g1, FS_NT, sc_smem>>>(a, TPC);
            else fs_scores_mma<128><<<g1, FS_NT, sc_smem>>>(a, TPC);
            cudaLaunchCheck();
        }
        // every row's list is written (own block, -1 padding) even when no block is eligible
        fs_topk<<<dim3((unsigned)M, (unsigned)nu), FS_NT, topk_smem>>>(a, P, cache);
        cudaLaunchCheck();
        u0 = u1;
    }
    free(hu);
    return 0;
}

__global__ void sb_gather_f32(float *dst, const uint16_t *src, int b, int T, int NH, int h0, int nh,
                              int D) {
    size_t n = (size_t)T * nh * D;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        int d = (int)(i % D), hh = (int)((i / D) % nh), t = (int)(i / D / nh);
        uint32_t u = (uint32_t)src[(((size_t)b * T + t) * NH + h0 + hh) * D + d] << 16;
        dst[i] = __uint_as_float(u);
    }
}

// MSLAB_SELECT_BF16: "old" = fs_select (scores in global memory, radix top-S), "fused" = fx_select,
// "tp" = tp_select, "auto" (the default) = tp_select when the longest row has >= TP_AUTO_MIN
// candidates (0: always), else fx_select
static int g_select_mode = -1;
static int select_mode(void) {
    if (g_select_mode < 0) {
        const char *e = getenv("MSLAB_SELECT_BF16");
        g_select_mode = !e               ? SELECT_DEFAULT
                        : !strcmp(e, "old")  ? 0
                        : !strcmp(e, "tp")   ? 2
                        : !strcmp(e, "auto") ? 3
                                             : 1;
    }
    return g_select_mode;
}
// test hooks (tests/gpu/select_bf16_tests.c): the mode (0 old, 1 fused, 2 tp, 3 auto; returns the
// previous), and the path of the last ms call (0 old / other, 1 fused, 2 (until s14) fused fell back to old,
// 3 blocks, 4 tp_select, 5 tp's two passes)
extern "C" int select_bf16_set_mode(int mode) {
    int prev = select_mode();
    g_select_mode = mode;
    return prev;
}
extern "C" int select_bf16_last_path(void) { return g_select_path; }
// the last fused / tp call's counters (up to n of: failed rows, buffer / survivors / too few / bound
// failures, max inserts, max survivors, histogram rows, histogram updates, raised rows, rows redone
// by fs_redo (s14: a failed row no longer sends the call to the next path)); all 0 where no such
// kernel ran in the last select_bf16 call; returns how many. Waits for the call's kernels (s14: the
// counters are copied behind the call, not downloaded in it)
extern "C" int select_bf16_last_stats(int *st, int n) {
    const int w[] = {1, CTL_FBUF, CTL_FSURV, CTL_FFEW, CTL_FBOUND, 2, CTL_MAXSURV, CTL_HROWS, CTL_HUPD, CTL_RAISED,
                     CTL_REDONE};
    int m = n < (int)(sizeof w / sizeof w[0]) ? n : (int)(sizeof w / sizeof w[0]);
    sel_stats_sync();
    for (int i = 0; i < m; i++) st[i] = g_select_stats[w[i]];
    return m;
}
// tests: fs_redo also redoes every n-th row of each batch of the fused / tp paths (the redo checked on
// inputs that fail no row; 0: off); returns the previous setting
extern "C" int select_bf16_force_redo(int n) {
    int m = g_force_redo;
    g_force_redo = n > 0 ? n : 0;
    return m;
}
// tests: keep pass 1's thresholds of each two-pass call on the host (1 on, 0 off; returns the
// previous setting); select_bf16_tp2_thr: the last call's, [B, H, nblk, M] 16-bit keys (rows of
// dense blocks and past the last member undefined), and how many (0: no two-pass call kept them)
extern "C" int select_bf16_tp2_keep(int on) {
    int m = g_tp2_keep;
    g_tp2_keep = on;
    return m;
}
extern "C" size_t select_bf16_tp2_thr(const int **thr) {
    *thr = g_tp2_thr;
    return g_tp2_nthr;
}
// tp's histogram rows: a threshold update every upd inserts (1: every tile; the default TP_HUPD);
// returns the previous setting
extern "C" int select_bf16_tph_upd(int upd) {
    int u = g_tph_upd;
    g_tph_upd = upd < 1 ? 1 : upd;
    return u;
}
// tp's finish raises a row's threshold past cap survivors (TP_PMAX; the tests set a small one so
// that tp_raise runs on every row); returns the previous setting
extern "C" int select_bf16_tp_cap(int cap) {
    int c = g_tp_pcap;
    g_tp_pcap = cap < 1 ? 1 : cap;
    return c;
}

// the two-pass tp (1 where it applies, 0 never; -1: MSLAB_SELECT_TP2 again); returns the previous setting
// 1 where the two passes' second pass runs on wgmma past TW_MINLD (tp_wgt: sm_90, MSLAB_SELECT_TPW unset
// or 1), so they apply past TP2_MAXLD (the tests' expected paths)
extern "C" int select_bf16_tw(void) {
    if (g_tpw < 0) g_tpw = getenv("MSLAB_SELECT_TPW") ? atoi(getenv("MSLAB_SELECT_TPW")) != 0 : 1;
    return g_tpw && arch_ok();
}
// tests: tp_wgt past minld candidates (0: at every length; -1: TW_MINLD, the default); returns the
// previous setting. select_bf16_last_tw: 1 where the last call's lists came from tp_wgt (path 5; s14:
// failed rows redone by fs_redo, no longer 2 for a call that went on to the next path), 0 where it did not run
extern "C" int select_bf16_tw_min(int minld) {
    int m = g_tw_min;
    g_tw_min = minld; // -1: the default again (TW_MINLD, or MSLAB_SELECT_TWMIN)
    return m;
}
extern "C" int select_bf16_last_tw(void) { return g_select_tw; }
extern "C" int select_bf16_tp2(int on) {
    int m = g_tp2;
    g_tp2 = on;
    return m;
}

// select_blocks.cu: merge 1 with few regions (path 3); -1 when it does not apply
extern "C" int select_blocks(AttnIndex *ix, const AttnConfig *cfg, const uint16_t *q,
                             const uint16_t *k, int B, int T, int H, int KVH, int D);
extern "C" int select_bf16(AttnIndex *ix, const struct AttnConfig *cfg, const uint16_t *q,
                           const uint16_t *k, int B, int T, int H, int KVH, int D) {
    if (!ix || !cfg || KVH <= 0 || H % KVH || B <= 0 || T <= 0) return -1;
    g_select_path = 0, g_select_tw = 0;
    memset(g_select_stats, 0, sizeof g_select_stats);
    g_stats_pending = false, g_tp2_nthr = 0;
    if (cfg->kind != ATTN_MS && cfg->kind != ATTN_MOBA) {
        cuda_attention_select(ix, cfg, NULL, NULL, B, T, H, KVH, D);
        return 0;
    }
    if (cfg->kind == ATTN_MS && cfg->pool == POOL_MEAN && cfg->score == SCORE_DOT &&
        cfg->select == SELECT_REGION && cfg->order == ORDER_RANK && !getenv("MSLAB_SELECT_SLOW") &&
        ((select_blocks(ix, cfg, q, k, B, T, H, KVH, D) == 0 && (g_select_path = 3) > 0) ||
         (select_mode() >= 2 && fx_select_host(ix, cfg, q, k, B, T, H, KVH, D, 2) == 0) ||
         (select_mode() >= 2 && fx_select_host(ix, cfg, q, k, B, T, H, KVH, D, 1) == 0) ||
         (select_mode() >= 1 && fx_select_host(ix, cfg, q, k, B, T, H, KVH, D, 0) == 0) ||
         fs_select(ix, cfg, q, k, B, T, H, KVH, D) == 0))
        return 0;
    g_select_path = 0;
    if (cfg->kind == ATTN_MOBA && !getenv("MSLAB_SELECT_SLOW") &&
        fs_select_moba(ix, cfg, q, k, B, T, H, KVH, D) == 0)
        return 0;
    int G = H / KVH;
    size_t nq = (size_t)T * G * D, nk = (size_t)T * D;
    float *buf = (float *)cuda_scratch(SCRATCH_SPARSE_BF16, (nq + nk) * sizeof(float));
    float *q32 = buf, *k32 = buf + nq;
    size_t per_head = (size_t)ix->nblk * ix->width;
    for (int b = 0; b < B; b++)
        for (int kvh = 0; kvh < KVH; kvh++) {
            sb_gather_f32<<<grid_for(nq, 256), 256>>>(q32, q, b, T, H, kvh * G, G, D);
            cudaLaunchCheck();
            sb_gather_f32<<<grid_for(nk, 256), 256>>>(k32, k, b, T, KVH, kvh, 1, D);
            cudaLaunchCheck();
            AttnIndex sub = *ix;
            size_t h0 = (size_t)b * H + (size_t)kvh * G;
            sub.idx = ix->idx + h0 * per_head;
            if (ix->kpos) sub.kpos = ix->kpos + h0 * per_head;
            if (ix->qpos) sub.qpos = ix->qpos + h0 * ix->nblk;
            cuda_attention_select(&sub, cfg, q32, k32, 1, T, G, 1, D);
        }
    return 0;
}
