// sparse_wgmma_keys.cu: a KEY-centric wgmma backward for lists of 16 / 32-key regions (ms with
// w < 64), the host part; the kernel is flash_wgmma_bwd.cu's fused body (bwd_fused_body with
// SP = 2: the dense fused kernel's 5 products, TMA Q / dO tiles, bulk dQ adds and the ordered
// mode's s32 fixed point, reused rather than copied: only the CTA's keys, its walk and its dK / dV
// epilogue differ). Called from sparse_wgmma_small.cu's entry (sparse_wgmma_small_bwd) before the
// query-centric sq_fused_kernel, which stays the fallback (MSLAB_SQ_KEYS=0 off, 1 D 128 only, 2
// D 128 and 64: the default).
// Each query block's rows share one list, so per (b, query head h, block c) this is a dense-like
// problem: CTA = (b, h, c, key tile kb = 128 / region consecutive slots of the block's list, sorted
// by region id (sparse_sort_lists; empty slots last)). The CTA gathers its 128 K / V rows once
// (cp.async; empty slots / keys past T zero, key id INT_MAX: masked), then walks the block's
// 64-query tiles from the one holding its least key on (selected regions: all the block's tiles;
// the block's own regions: from their diagonal), per tile S^T = K Q^T, dP^T = V dO^T, P^T and
// dS^T in registers with the per-key causal mask key <= row, dV += P^T dO, dK += dS^T Q, dQ
// partial = dS K added by bulk tensor reduce-adds (fp32, or s32 fixed point with the row scales
// rsc in the ordered mode: integer adds commute, bitwise repeatable). At its end each warp (16
// keys = one region's rows) stages its dK / dV rows as fp32 [16 keys][32 columns] boxes for the
// TMA unit, which reduce-adds them into fp32 accumulators [slab][2][T][D] (an add per (block,
// key) instead of the query-centric kernel's one per (128-row CTA, key)). The atomic mode adds in
// any order. The ordered mode (s12) adds in a FIXED order: per 16-key group a chain over the
// lists that hold the region (rank: the lists in grid order, head of the group outer, blocks
// earliest first; sk_pos / sk_rank), each warp waiting for its turn on a counter (kwait), the
// first storing (no zeroing), each waiting for its adds to complete before passing the turn on:
// the same fp32 sums in the same order whatever the CTAs' timing, bitwise repeatable. A CTA
// waits only on CTAs launched before it, which run or are done (the dense DET 1 path relies on
// the same launch order); blocks earliest first because a block's own regions (short walks from
// the diagonal) then come first in their chains. A turn's wait is bounded (2^31 cycles, ~1 s: no
// hang if that assumption ever failed); a wait that gives up adds out of order (before the
// chain's first store: the add is lost), so since s13 it sets the ATTN_ORD_KEYS word of the
// host-mapped flag (ord_watch.cuh), which the host reports (stderr: the call's gradients may be
// wrong) at the next backward call or download; the tests fail a row on it and provoke it
// (sparse_wgmma_bwd_ord_timeout.keys: the turns memset to -1, a 4096-cycle bound). At D 128 a region that one list of the launch's
// kv head holds (kcnt; 74% of the regions at 32K) is written as bf16 by its CTA, no chain.
// Grid x = key tiles (the CTAs of a (head, block) run together: its Q / dO block and its dQ
// adds stay in L2), y = (head, block: atomic latest first, ordered earliest first). Per group of
// (b, kv head)s (wg_acc_group's budget, one launch per group): the dK / dV accumulators, the
// ordered mode's pos, rank, kcnt and turns, then dQ [slab][T][G][D]; memsets (the atomic mode's
// dK / dV too), then the convert. The ordered mode (s13, SpArgs kconv) writes its dK / dV in the
// kernel: a chain's last list adds the sum so far to its rows in registers and writes bf16
// (regions one list holds: their CTA, at D 64 too; regions no list holds: zero rows by sk_rank),
// so its convert is dq's alone (sk_dq_out); the atomic mode's is sk_acc_out (dK / dV, dQ).
// (MSLAB_SK_CONV=0: the ordered mode's s12 form, sk_acc_out converting the multi-listed regions'
// rows, writing those no list holds as 0 and skipping those held once; the tests' reference for
// the bits.) The ordered mode's pre-pass (sk_pre) reads q, dO and O once for Di and the row
// scales (after wg_kv_bound), and at D 64 (s14) lse too, writing lse x log2e (l2), which the D 64
// ordered kernel (PIPE 1024) takes in place of lse.
// Measured (H200, bf16, ms paper config w 16 top 512 merge 128, B 1, H = KVH 32, D 128, T 32K,
// bwd alone: `MSLAB_SWB_PERF="ms paper" MSLAB_SWB_PERF_MIN=1 mslab-gpu-tests sparse_wgmma_bwd_perf`;
// TFLOP/s at 2.5x the forward's 4 D flops per pair; the rounds' noise is ~0.2-0.3 ms):
// s9 final: atomic 19.4-19.6 ms (438-443), ordered 22.3-22.9 (376-384; query-centric
// sq_fused_kernel 24.9 / 30.5); D 64 (the LM's shape: B 1, H = KVH 12, T 32K; MSLAB_SWB_PERF_H=12
// MSLAB_SWB_PERF_D=64) 4.58 / 5.08-5.19 (sq 6.24 / 7.34). s9 tried and removed: the walks rotated
// by the key tile, dK / dV by per-thread reds (all, or dV only beside the TMA's dK).
// s10 r1 (one memset, one convert kernel, sk_pre): 19.29 / 22.67 ms (445 / 379), D 64 4.60 / 5.11;
// trace: 4923 / 5119 cycles a step, prologue 5823 / 5897, epilogue 6581 / 13563 cycles. r2, the
// body's kl_key by shifts, not divisions by the runtime region: prologue 4216 / 4643 cycles,
// 19.23 / 22.19 ms (447 / 387), D 64 4.55 / 5.01. ncu (r1): the adds' L2 hit rate 95-97%, DRAM
// ~0.2 TB/s: the kernel is not memory-bound; the epilogue is bound by the SM's ~20 bytes a cycle
// to L2 (TMA or per-thread reds alike: the body's notes). Tried in s10 and removed: the K / V
// gather before the step-0 TMA (s9's order; no difference), one dK / dV box a warp, the boxes
// prefetched to L2, per-thread coalesced reds from the staged boxes (the body's notes); the
// launch groups on two accumulator buffers and stream pairs (the zeroing / converts on a
// high-priority stream beside the other buffer's kernel): 19.24 / 22.14 ms with 128 CTAs for them,
// 21.15 / 24.41 with 32, 19.09 / 21.97 with 512, D 64 4.83 / 5.32 (worse): no real overlap.
// r3 (19.20 / 22.27 ms; D 64 4.57 / 5.02), ncu per call (us): atomic wg_bwd_pre 132, sort 18,
// kernel 8914 + 8910 (two groups of 16 heads), sk_acc_out 322 x 2 (+ the memsets, ~1.5 GB);
// ordered wg_kv_bound 122, sk_pre 243, sort 18, kernel 6743 + 6741 + 6139 (11 + 11 + 10 heads:
// 0.61 ms a head vs 0.56 atomic), sk_acc_out 327 + 326 + 297 (+ the memsets, ~2.6 GB): the
// kernel +1.8 ms (epilogue +7k cycles a CTA, ~0.95 ms; the steps +190 cycles, ~0.65 ms), outside
// +0.85 ms (the s64 accumulators' zeroing and reading). The dQ adds as u32 (the same bits) 22.39
// ms, as f32 (timing only) 22.28: the s32 adds cost nothing. D 64 (us): atomic kernel 4319 +
// convert 131, ordered 4608 + 185 (kv bound 28, sk_pre 62); trace: 3066 / 3392 cycles a step,
// the dQ staging 354 / 631 (its F2I conversions share the XU pipe with the softmax's ex2),
// epilogue 2582 / 5074 (two CTAs an SM: partly under the other's steps).
// r4: the gather's keys loaded first (the body's notes; prologue 4401 / 4517 cycles vs 4707 /
// 4880): 18.83 / 22.24 ms (456 / 386) vs 18.97 / 22.32-22.36 the same build; D 64 4.57 / 5.09;
// the whole sparse_wgmma_bwd suite 448 passed. r5 (the final form): 19.01 / 22.03 and 19.20 /
// 21.69 ms (452 / 390 and 448 / 396 TFLOP/s), D 64 4.64 / 4.98 (then the ordered mode's dK / dV:
// s64 fixed point, a power-of-2 scale per (b, kv head) from a loose bound, 256 KB of s64 adds a
// CTA at the SM's ~20 bytes a cycle to L2, the s64 accumulators zeroed and read: ~2.8 ms over
// the atomic mode).
// s11 (the ordered mode's dK / dV by stored partials; prediction: 32K ordered 21.85 -> 20.7-21.0
// ms: the epilogue -0.95 ms at half the bytes, the traffic outside ~equal: 3.9 GB of partials
// read once (a key in 3.6 lists on average) vs 2.15 GB of s64 zeroed + read; the atomic mode by
// partials +0.4-0.6 ms). Regions listed 0 / 1 / 2 / 3 / 4-7 / 8+ times (32K, all heads): 0 /
// 48672 / 1033 / 1116 / 2427 / 12288. r1 / r2 (same snippet, old vs new): ordered 22.67-22.89 /
// 22.13-22.23 ms -> partials 21.73 / 21.12, + the once-listed regions by their CTA 21.50 / 20.99-
// 21.05, + the FFMA dQ conversions (PIPE 118) 21.39 / 20.88; atomic 18.99-19.41; the atomic mode
// by partials (no reds, no dK / dV memset) 19.66 vs 18.99-19.17: removed. D 64: ordered 4.94-5.01
// -> 4.79-4.85 (partials), 4.85-4.88 with the once-listed regions (kept off at D 64); atomic 4.60-
// 4.64. Event times a call (ms, MSLAB_SK_TIME then): old pre 0.41, memsets 0.63, kernels 20.0,
// convert 0.98; new 0.40 / 0.20 (+ pos) / 19.1 / sums 0.80 / 0.33 (dQ); ncu (r1, groups of 7
// heads): kernel 570 us a head (atomic 553: the s32 dQ conversions), sk_part_sum 233 us a group
// (~3.6 TB/s), sk_pre 237. The kernel's real time was ~0.8 ms over ncu's (the partials' writes
// back to DRAM under it?). Launch groups: ~70 us a launch (the tail): 32K with 2 heads a launch
// (MSLAB_SQ_ACC_MB=400) 22.18 ms, 7 (the 1 GiB default) 20.99, 11 (2200) 20.77. r3 (the clean
// form): 32K ordered 22.13 ms old -> 20.90 (411 TFLOP/s; 20.97 without the FFMA dQ), atomic
// 19.07-19.36; D 64 4.965 -> 4.834 (4.805 without the FFMA dQ: kept off at D 64); bench 128K
// (mslab-gpu-bench --attn --kernels ms,nd, fwd+bwd with the selection) ordered 141.76 ms old ->
// 135.84 (1 head a launch) / 135.28 (2: the ordered mode's budget 0.15 of q, k, v, o + grads,
// wg_acc_group), atomic 134.0-135.2; the memory probe's 128K peak 10.27e9 B in all three. r4 (this
// form; same snippet): 32K ordered 22.14 -> 21.19 ms (atomic 19.19-19.29), D 64 4.964 -> 4.804
// (atomic 4.63); bench fwd+bwd 32K ordered 30.48 -> 29.08 ms (atomic 28.41-28.49), 128K 141.78 ->
// 136.87 (atomic 135.15-137.70); peak unchanged; sparse_wgmma_bwd --quick 386 + the small rows
// in full 242 passed.
// s11 review (r6): the ordered mode declines where one (b, kv head)'s partials alone exceed the
// default budget (sq_fused_kernel's ordered mode then runs: the old path's ~8 T D bytes a head,
// not several GB); pos by atomicMax; the sums' entries 64-bit, their chunk a test tunable;
// tests: H = KVH rows (once-listed regions written by their CTA, in groups of one), bitwise
// equal outputs across launch groupings / sum chunks, the decline = sq_fused_kernel's bits.
// Same snippet, old / new: 32K ordered 21.17, 21.02 / 21.13, 20.97 ms (atomic 19.13, 18.98 /
// 19.25, 19.45: that path is unchanged, noise); sparse_wgmma_bwd --quick 410 + small rows 266
// passed.
// (s11's partials path, sk_part_sum and its chunk tunable were removed in s12: below.)
// s12 (the ordered mode's dK / dV by fixed-order fp32 chains, the form above; prediction: 32K
// ordered 21.0 -> ~19.6 ms: no partials written (~0.8 ms of DRAM writes under the kernel) and read
// back (the sums, 0.8 ms), no dK / dV zeroing (-0.3), + the chains' waits). The split per kernel
// (r1, ncu, one call, us): atomic wg_bwd_pre 135, sort 19, kernel 8930 x 2 (16 heads a launch),
// sk_acc_out 322 x 2; s11 ordered wg_kv_bound 124, sk_pre 199, sort 19, kernel 2320 + 4030 x 4 (4 +
// 4 x 7 heads), sk_part_sum 93 + 163 x 4, sk_acc_out (dQ) 37 + 63 x 4; chains: kernel 9270 x 2 (16
// heads), sk_acc_out 331 x 2, sk_pos 4, sk_rank 9. Event times a call (r2, ms): atomic pre 0.17,
// memsets 0.40, kernels 17.9-18.2, converts 0.70; chains pre 0.36, memsets + pos 0.19, kernels
// 19.05-19.5, converts 0.71 (with the convert's row math in 32 bits: no change; r5 below). Trace
// (r3, a launch of 16 heads): atomic 4879 cycles a step, epilogue 6650 cycles a CTA; chains 5158
// (the s32 dQ: S +157, dQ adds +88), epilogue 8900 (the adds' completion before the turn passes on:
// ~0.3 ms a call; r2 with the chains off, wrong sums, timing only: 20.33 vs 20.64 ms). Same
// snippets, ms paper 32K bwd, s11 / chains / atomic: r1 20.86-20.91 / 20.41-20.51 / 19.07-19.35
// (chains with blocks latest first: 20.83); r2 20.85- 20.90 / 20.64 / 19.03-19.48; r3 20.94 /
// 19.87-20.09 / 19.23-19.54; ordered vs atomic outputs relative L2 dq 9.7e-5, dk 2.1e-5, dv 2.3e-5
// (fp32 sums in other orders; the info row); D 64 4.80-4.81 / 4.75-4.80 / 4.59-4.64; bench fwd+bwd
// 64K det 61.37 -> 60.51 (nd 60.05 / 59.55; s11's 69.2 not seen), 128K 133.51 -> 133.02 (nd 133.06
// / 133.38 in that run). r4 (the final chains; same snippet, s11 / chains / atomic): 32K
// 20.94-21.17 / 19.77-20.01 / 18.87- 19.25 ms (410 / 429-434 / 446-455 TFLOP/s); D 64 4.797-4.802 /
// 4.782-4.793 / 4.62-4.63; bench fwd+bwd 32K det 27.79 -> 27.90 (nd 28.04 / 27.97: the bench's
// random inputs list otherwise), 128K 133.53 -> 131.92 (nd 133.17 / 133.36); small rows (full) 265
// + --quick 190 passed. r5: the convert (sk_acc_out) as a grid-stride loop over 2048 CTAs (it had
// taken the atomic mode's 0.35 ms a launch for half its bytes: CTAs of skipped rows): 32K ordered
// 19.75-19.91 vs 20.00-20.03 (r4's binary, same snippet; atomic 18.99-19.39 / 19.36-19.57; s11
// 21.25); D 64 4.770-4.778 vs 4.785-4.793; bench 128K det 134.09 -> 132.91 (nd 134.54 / 133.70). r6
// (tried and removed): the last step's dQ boxes handed to the TMA unit after every warp's dK / dV
// boxes (by the last warp to issue, so that the chains' adds would complete sooner): 20.06 / 20.12
// ms vs 19.62 / 19.64 (r5's binary, same snippet; atomic 18.88-19.38), epilogue 9142 cycles (atomic
// 7164) vs r3's 8900 (6650). r7 (the final form, same snippet, s11 / chains / atomic): 32K
// 20.52-20.53 / 19.43-19.57 / 18.98-19.27 ms (418 / 439-442 / 446-453 TFLOP/s); D 64 4.774 / 4.753
// / 4.58-4.60; bench fwd+bwd det 64K 61.25 -> 60.21 (nd 59.23 / 58.97), 128K 132.40 -> 131.13 (nd
// 132.16 / 132.97); small rows (full) 265 + --quick 190 passed.
// Tried and removed (s12): the order-free s32 fixed point for dK / dV (r3, MSLAB_SK_FX): a
// power-of-2 scale per key from the rigorous bound |dV_jd| <= qblock kcnt max |dO_id|, |dK_jd| <= qblock kcnt
// (max |dO_i|_2 max |V_j|_2 + max |Di|) max |q_id| (per-(b, kv head) maxima from sk_pre, kcnt from
// sk_rank), bulk s32 reduce-adds, no chains: 32K 20.21 / 19.97 ms vs the chains' 19.87 / 20.09 in
// the same snippet (it needs the zeroing and reads every row back) and too imprecise: ordered vs
// atomic relative L2 dk 0.0343, dv 0.0023 (D 64: 0.0075 / 0.0011; the parity tolerance is 0.01).
// The bound is loose where it counts: sum_i P_ij <= qblock kcnt rows while a key's real column sum
// is ~rows / 8192 (random data, ~8K keys a row), |dP_ij| <= |dO_i|_2 |V_j|_2 is ~sqrt(D) over the
// typical, and the partials cancel (sums of random signs): the bound exceeds |dK_jd| by ~2^27 at
// kcnt 16, which leaves ~3 of 30 bits. A CPU simulation of one key (paper shape, N(0, 1) data) gave
// relative L2 dK 2.2 / 4.2 / 8.1 / 14 / 67 / 100%, dV 0.10 / 0.19 / 0.41 / 0.65 / 3.0 / 22% at kcnt
// 2 / 4 / 8 / 16 / 64 (128K) / 512 (1M): the error grows as kcnt (the bound as kcnt, the rounding
// and the value both as sqrt(kcnt)). s7 found the same for sq_fused_kernel's per-region scales
// (sparse_wgmma_small.cu's notes): 32 bits would need a bound within ~2^17 of the values (an error
// ~8x under bf16's rounding at kcnt 16), a rigorous one is 2^20-2^27 off, and s64 adds double the
// epilogue's bytes (s10). Also removed: blocks latest first in the ordered mode (r1), the once-
// listed regions by their CTA at D 64 (r2: 4.793 vs 4.787 ms without), MSLAB_SK_TIME.
// s12 left: the ordered mode's s32 dQ conversions in the steps (~280 cycles a step, ~1 ms a call
// at 32K), the chains' completion waits (~2250 cycles a CTA, ~0.3 ms), the pre-pass's extra reads
// of q, K and V (+0.19 ms); each launch's tail.
// s13 (the ordered mode's outputs without the convert pass; prediction: 32K ordered bwd -0.5 ms,
// sk_acc_out's 2 x 317 us gone for ~0.1 ms in the kernel). Same binary, MSLAB_SK_CONV bits (ms,
// ordered call alone, MSLAB_SWB_PERF_ORD; the outputs' hash equal to main's in every variant):
// r4 0 (s12: the convert) 18.00 / 17.73, 1 (dK / dV by the chain's last list) 17.51 / 17.76, 2 (dQ
// by each list's last key-tile CTA) 18.32 / 18.46, 3 (both) 18.11 / 18.08; trace (a launch of 16
// heads): epilogue 9440 cycles a CTA (0), 13970 (3): the dQ arrival (gpu fences, an atomic, two
// barriers at every CTA's exit, ~1 us after its adds completed) 2800 cycles, the conversion of a
// 2048-row block (1 MB of s32, doubles) by one CTA 108K cycles; span 8.79 -> 9.16 ms a launch:
// removed (dQ stays a separate pass; a cheaper arrival could not pay for ~0.2 ms a launch of CTA
// exits at one CTA an SM). r5: 1 17.75 / 17.63 vs 0 17.98 / 17.76 (1 with sk_acc_out for dq: 17.81
// / 17.77; sk_dq_out kept); epilogue 9000-9050 cycles (r4's 0: 9430-9480); D 64 4.384 / 4.391 vs
// 4.478 / 4.475; bench fwd+bwd 32K det (mslab-gpu-bench --attn --kernels ms,nd --from-len 32768
// --max-len 32768 --no-mem-probe) 25.47 / 25.63 vs main's 25.90 / 26.05 (nd 25.50 / 25.42 vs
// 25.58 / 25.56); small rows (full) 313 + --quick 190 passed. r6: + the bf16 rows (once-listed
// regions, chains' last lists) staged per warp and written by 16-byte stores (full sectors; was
// 4-byte stores, half sectors): 17.58 / 17.36 ms vs 17.82 / 17.93 without, the convert 17.82 /
// 17.71; epilogue 8045-8088 cycles a CTA; D 64 4.366 / 4.368 vs 4.394; bench det 24.84 / 25.30
// vs main's 25.46 / 25.93 (nd 26.08-26.13 both: the atomic mode is main's). r7 (this form vs
// main's binary, same snippet): 32K ordered 17.31 / 17.39 vs 18.26 / 18.16 ms (atomic 17.38 /
// 17.48 vs 17.52 / 17.48), D 64 4.372 vs 4.452, bench 32K det 25.21 / 24.93 vs 26.16 / 26.58 (nd
// ~26.1 both); the outputs' hashes equal main's; small rows (full) 313 + --quick 190 passed.
// Left: the dq convert (~0.15 ms a launch) and the dQ memset; the chains' completion waits; the
// pre-passes (DRAM-bound reads of q, dO, O and of K, V: one pass would save a launch alone).
// s13 review (lead, after the merge with the ordered-wait watchdog): the last list's add is
// add.rn.ftz.f32 (the TMA's f32 reduce-add flushes subnormal inputs and results: the same bits as
// the convert path below 2^-126 too), a once-listed region is written by its list's designated slot
// only (a list holding it twice stays repeatable); same snippet, 32K ordered 17.47-17.67 ms (this),
// 17.61-17.63 (ftz, without the slot check), 17.31-17.59 (hk's r7 binary, before the watchdog and
// both fixes): ~0.1-0.2 ms, within two rounds' noise; hashes 248db7e3 / efd831ef unchanged.
// s14 (the LM's D 64 backward: `MSLAB_BF16_TRACE=4 MSLAB_LM_ROWS=1 mslab-gpu-bench --lm`, B 1, T 32K,
// H = KVH 12, ms paper config; sparse_bwd 4737 us a layer in the s14 r1 trace vs 4.371 ms for the
// perf row at that shape). Measured first (r2, per-call phase events and list statistics under a
// diagnostics switch, since removed): the LM's lists are not harder than the perf row's random
// ones (regions listed 0 / 1 / 2 / 3 / 4-7 / 8+ times 0 / 8949 / 4013 / 2828 / 5433 / 3353 vs
// 0 / 8379 / 4067 / 2592 / 6279 / 3259, max 16 both, 26% vs 19% of the selected regions in
// block 0; the work is the same by construction: every list holds its block's 128 regions and 384
// others, 617472 steps of 64 query rows, 25.1 a CTA); the kernel's trace is the same in both
// (3120 cycles a step at 1.80 GHz, ordered); the phases in the LM (ordered, us a call): pre-passes
// 75, sort 21, memsets + slot tables 41, kernel 4207 in a step's first backward calls rising to
// 4420-4600 in its later ones, dq convert 49 (the perf row: kernel 4195); the op's span ~74 us
// over the call's (backend_bf16.cu's bf16_attn_bwd: dout's conversion etc.). So the LM's extra
// time is the clock under the 700 W cap (the selections' host waits leave the GPU idle in the
// forward, the backward's 56 ms run without a gap), not its lists: fewer cycles (and bytes) are
// the lever. Kept (D 64): 3 CTAs an SM (165 / 168 registers, 76336 bytes of shared memory each,
// the carveout at its maximum; the ordered mode without DKL, PIPE 256: with it ptxas serialises
// the wgmma at 168 registers, C7512), the FFMA dQ conversions (PIPE 64; at 2 CTAs they had lost,
// s11 / r2 4.471 vs 4.404 ms), the ordered staging permuted as the atomic mode's (PIPE 128) and
// lse x log2e from sk_pre (PIPE 1024, the same product: 16 FMUL a thread a step fewer). Same
// snippets (perf row: `MSLAB_SWB_PERF="ms paper" MSLAB_SWB_PERF_MIN=1 MSLAB_SWB_PERF_H=12
// MSLAB_SWB_PERF_D=64 MSLAB_SWB_PERF_KEYS=1 mslab-gpu-tests sparse_wgmma_bwd_perf`, atomic /
// ordered ms; LM: the trace's sparse_bwd, us a layer): r2 2 CTAs 4.007 / 4.404, 3 CTAs 3.756 /
// 4.162; r3 4.001 / 4.401 vs 3.754 / 4.159, LM 4637.7 -> 4458.5; r4 LM main 4666.1, 3 CTAs 4552.3,
// + lse x log2e + a second stream for the pre-pass 4494.0, + FFMA 4382.4; r5 (3 CTAs, FFMA, lse x
// log2e vs main's binary) perf 4.007 / 4.373 -> 3.756 / 4.039, LM 4683.8 / 4635.3 -> 4259.6 /
// 4292.4; r6 ordered 4.032 / 4.085 (r5's form) vs + the permuted staging 4.011 / 3.979, + the
// second stream 4.061, both 3.961, LM 4472.2 / 4521.4 vs both 4347.7 / 4432.8 (a warmer round);
// the ordered hash efd831ef5f667233 in every variant (the same bits); small rows 409 + --quick
// 196 passed (r5). r7 (this form vs main's binary, one snippet): perf 4.001 / 4.386 -> 3.758 /
// 3.995, LM 4655.0 / 4661.4 -> 4314.0 / 4314.6 (ms / step 144.2 / 143.7 -> 141.1 / 140.6); hashes
// efd831ef (D 64) / 248db7e3 (D 128) unchanged; small rows 409 + --quick 196 passed.
// Tried and removed (s14): K and V as register A operands of S^T / dP^T (RS by ldmatrix'd
// fragments: 16 KB less shared memory read a step; 202 / 204 registers, 2 CTAs an SM): r3 perf
// 3.994 / 4.361 vs 4.001 / 4.401, LM 4578.4 us vs 3 CTAs' 4458.5; the FFMA conversions at 2 CTAs
// 4.471 (r2); the ordered pre-pass (wg_kv_bound, sk_pre) on a second stream beside the sort and
// slot tables (r6: within the noise alone, ~30-45 us by the phases' overlap; a cross-stream
// dependency that no parity row catches deterministically: not kept).
// Left: the kernel (~91% of the LM op), bound by latency at 3 warpgroups an SM and by its power
// (the LM runs it ~7% slower than a cool GPU); the ordered mode's ~0.28 ms over the atomic one
// (the chains' completion waits ~3300 cycles a CTA, sk_pre / wg_kv_bound +37 us); the wrapper's
// ~74 us a call (bf16_attn_bwd: dout to bf16, copies; the lead's).
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flash_wgmma_bwd.cuh"
#include "wg_acc.cuh"
extern "C" {
#include "attn_bf16.h"
}

// the ordered mode's pre-pass, one read of q, dO and O: Di (as wg_bwd_pre) and the rows'
// fixed-point dQ scales rsc (wg_bwd_pre's bound from kvm = wg_kv_bound's {max |K_jd|, max
// |V_j|_2}; NaN where the q or dO row is not finite: the convert writes a NaN row). CTA = (b *
// KVH + kv head, a chunk of rows (t, head of the group)), D / 8 lanes a row (16-byte loads).
// l2 (s14, the D 64 kernel's): lse x log2e, the product the kernel's softmax formed per element
template <int D>
__global__ void sk_pre(float *Di, float *rsc, const unsigned *kvm, const bf16 *q, const bf16 *dout,
                       const bf16 *out, int T, int H, int KVH, int rows, const float *lse,
                       float *l2) {
    constexpr int L = D / 8; // lanes per row
    int bk = blockIdx.x, b = bk / KVH, kvh = bk % KVH, G = H / KVH, j = threadIdx.x % L;
    int i0 = blockIdx.y * rows, i1 = min(T * G, i0 + rows);
    float km = __uint_as_float(kvm[2 * bk]), vm = __uint_as_float(kvm[2 * bk + 1]);
    for (int ib = i0; ib < i1; ib += blockDim.x / L) { // uniform per CTA
        int i = ib + threadIdx.x / L, qbad = 0, t = i / G, hh = kvh * G + i % G;
        size_t o = (((size_t)b * T + t) * H + hh) * D;
        float ss = 0.f, sd = 0.f;
        if (i < i1) {
            uint4 xq = ((const uint4 *)(q + o))[j], xd = ((const uint4 *)(dout + o))[j];
            uint4 xo = ((const uint4 *)(out + o))[j];
            const unsigned *pq = (const unsigned *)&xq, *pd = (const unsigned *)&xd;
            const unsigned *po = (const unsigned *)&xo;
#pragma unroll
            for (int u = 0; u < 4; u++) {
                float2 x = __bfloat1622float2(*(const __nv_bfloat162 *)&pq[u]);
                float2 y = __bfloat1622float2(*(const __nv_bfloat162 *)&pd[u]);
                float2 z = __bfloat1622float2(*(const __nv_bfloat162 *)&po[u]);
                ss = fmaf(y.x, y.x, fmaf(y.y, y.y, ss));
                sd = fmaf(y.y, z.y, fmaf(y.x, z.x, sd));
                qbad |= !isfinite(x.x + x.y);
            }
        }
#pragma unroll
        for (int off = L / 2; off > 0; off >>= 1) {
            ss += __shfl_xor_sync(0xffffffffu, ss, off), sd += __shfl_xor_sync(0xffffffffu, sd, off);
            qbad |= __shfl_xor_sync(0xffffffffu, qbad, off);
        }
        if (j == 0 && i < i1) {
            Di[((size_t)b * H + hh) * T + t] = sd;
            if (l2) l2[((size_t)b * H + hh) * T + t] = lse[((size_t)b * H + hh) * T + t] * WG_LOG2E;
            rsc[o / D] = qbad ? NAN : wg_fx_scale((sqrtf(ss) * vm + fabsf(sd)) * km * 1.0625f, 30);
        }
    }
}
// the launch's outputs from its accumulators (the atomic mode's; s13: the ordered mode's with
// MSLAB_SK_CONV=0) (n (b, kv head)s from bk0): dk (x scale) / dv from
// kva [n][2 = dK, dV][T][D] (fp32; nkr = its rows), then dq (x scale) from dqa [n][T][G][D]
// (fp32, or FX: s32 / the row scales rsc [B, T, H]); 4 elements a step of a grid-stride loop
// over SK_CONV_CTAS CTAs, 32-bit row math (the rows < 2^32: the host checks). The ordered mode
// (kcnt [n][nreg], regions of R keys): rows of regions no list holds are 0 (never written: not
// read), and with one those of regions one list holds are skipped (its CTA wrote them). (s12 r2:
// a thread per 4 elements, 64- or 32-bit row math alike, took the ordered mode 331 us a 16-head
// launch for half the atomic mode's bytes: mostly CTAs whose rows were skipped)
#define SK_CONV_CTAS 2048
template <int D, bool FX>
__global__ void sk_acc_out(bf16 *dq, bf16 *dk, bf16 *dv, const float *kva, const float *dqa,
                           const float *rsc, const int *kcnt, int R, int one, int bk0,
                           unsigned nkr, unsigned nqr, int T, int H, int KVH, float scale) {
    constexpr int L = D / 4; // threads a row
    size_t n4 = (size_t)(nkr + nqr) * L, step = (size_t)gridDim.x * blockDim.x;
    unsigned G = H / KVH;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n4; i += step) {
        unsigned row = (unsigned)(i / L), c4 = (unsigned)(i % L) * 4;
        float y[4], f = scale, sc = 1.f;
        bf16 *dst;
        if (row < nkr) { // dK / dV: row = (slab, array, t)
            unsigned u = row / (unsigned)T, t = row - u * T, bkl = u >> 1, bk = bk0 + bkl;
            int a = u & 1;
            dst = (a ? dv : dk) + (((size_t)(bk / KVH) * T + t) * KVH + bk % KVH) * D + c4;
            f = a ? 1.f : scale;
            int c = kcnt ? kcnt[(size_t)bkl * ((T + R - 1) / R) + t / R] : -1;
            if (one && c == 1) continue;
            float4 x = c ? __ldcs((const float4 *)kva + i) : make_float4(0.f, 0.f, 0.f, 0.f);
            y[0] = x.x * f, y[1] = x.y * f, y[2] = x.z * f, y[3] = x.w * f;
        } else { // dQ: row = (slab, t, head of the group)
            unsigned r = row - nkr, u = r / G, hg = r - u * G, v = u / (unsigned)T, t = u - v * T;
            unsigned bk = bk0 + v;
            size_t orow = ((size_t)(bk / KVH) * T + t) * H + (bk % KVH) * G + hg;
            size_t j = i - (size_t)nkr * L;
            dst = dq + orow * D + c4;
            if (FX) {
                int4 x = __ldcs((const int4 *)dqa + j);
                sc = rsc[orow];
                double df = (double)scale / sc;
                y[0] = (float)(x.x * df), y[1] = (float)(x.y * df), y[2] = (float)(x.z * df),
                y[3] = (float)(x.w * df);
            } else {
                float4 x = __ldcs((const float4 *)dqa + j);
                y[0] = x.x * f, y[1] = x.y * f, y[2] = x.z * f, y[3] = x.w * f;
            }
        }
        if (isnan(sc)) y[0] = y[1] = y[2] = y[3] = NAN;
        *(uint2 *)dst = make_uint2(pack_bf16x2(y[0], y[1]), pack_bf16x2(y[2], y[3]));
    }
}

// (s13) the ordered mode's dq alone (its dK / dV written by the kernel): rows (slab, t, head of
// the group) of dqa (s32) x scale / rsc as sk_acc_out (the same bits), 8 elements a thread (two
// 16-byte loads, one division a row's 8), 32-bit row math
template <int D>
__global__ void sk_dq_out(bf16 *dq, const int *dqa, const float *rsc, int bk0, unsigned nqr, int T,
                          int H, int KVH, float scale) {
    constexpr int L = D / 8; // threads a row
    unsigned n8 = nqr * L, step = gridDim.x * blockDim.x, G = H / KVH;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n8; i += step) {
        unsigned r = i / L, c8 = (i % L) * 8, u = r / G, hg = r - u * G, v = u / (unsigned)T;
        unsigned t = u - v * T, bk = bk0 + v;
        size_t orow = ((size_t)(bk / KVH) * T + t) * H + (bk % KVH) * G + hg;
        int4 x0 = __ldcs((const int4 *)dqa + 2 * (size_t)i), x1 = __ldcs((const int4 *)dqa + 2 * (size_t)i + 1);
        float sc = rsc[orow], y[8];
        double df = (double)scale / sc;
        int xs[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
#pragma unroll
        for (int e = 0; e < 8; e++) y[e] = isnan(sc) ? NAN : (float)(xs[e] * df);
        *(uint4 *)(dq + orow * D + c8) = make_uint4(pack_bf16x2(y[0], y[1]), pack_bf16x2(y[2], y[3]),
                                                    pack_bf16x2(y[4], y[5]), pack_bf16x2(y[6], y[7]));
    }
}

// The ordered mode's chains (s12). pos [the launch's lists][nreg] = the slot of region r in the
// sorted list (hl, c) of launch head hl (-1: none). A list must hold a region at most once
// (ops.h's contract; the CPU reference and sq_fused_kernel assume it too): pos keeps one slot
// per list (atomicMax: the last), whose warps alone add, so a region listed twice loses the
// other slot's contribution, bitwise repeatably
__global__ void sk_pos(int *pos, const int *sl, int width, int nreg) {
    const int *lst = sl + (size_t)blockIdx.x * width;
    for (int s = threadIdx.x; s < width; s += blockDim.x) {
        int r = lst[s];
        if (r >= 0 && r < nreg) atomicMax(pos + (size_t)blockIdx.x * nreg + r, s);
    }
}
// rank [lists][nreg]: each holding list's place in region r's chain, the lists of the launch's
// (b, kv head) blockIdx.y in grid order (head of the group outer, blocks earliest first, or with
// !asc latest first); kcnt [n][nreg]: the chain's length (the lists that hold r)
// (s13, dk non-null: the kernel writes dK / dV, no convert) the warp then writes the zero dK / dV
// rows of the regions of R keys no list holds (kcnt 0; keys from bk0's (b, kv head) on)
__global__ void sk_rank(int *rank, int *kcnt, const int *pos, int nreg, int G, int nblk, int asc,
                        bf16 *dk, bf16 *dv, int bk0, int T, int KVH, int R, int D) {
    int r = blockIdx.x * blockDim.x + threadIdx.x, bkl = blockIdx.y, k = 0;
    if (r < nreg) {
        for (int hg = 0; hg < G; hg++)
            for (int cc = 0; cc < nblk; cc++) {
                size_t e = ((size_t)(bkl * G + hg) * nblk + (asc ? cc : nblk - 1 - cc)) * nreg + r;
                if (pos[e] >= 0) rank[e] = k++;
            }
        kcnt[(size_t)bkl * nreg + r] = k;
    }
    if (!dk) return;
    unsigned m = __ballot_sync(0xffffffffu, r < nreg && k == 0);
    int bk = bk0 + bkl, lane = threadIdx.x & 31, L = D / 8; // 16-byte chunks a row
    size_t base = ((size_t)(bk / KVH) * T * KVH + bk % KVH) * D;
    while (m) {
        int z = (r - lane) + __ffs(m) - 1, k0 = z * R, nk = min(R, T - k0);
        m &= m - 1;
        for (int i = lane; i < 2 * nk * L; i += 32) {
            int a = i / (nk * L), j = i - a * nk * L;
            *(uint4 *)((a ? dv : dk) + base + (size_t)(k0 + j / L) * KVH * D + (j % L) * 8) =
                make_uint4(0, 0, 0, 0);
        }
    }
}

// on / off: 0 off (sq_fused_kernel runs), 1 D = 128, 2 D = 128 and 64; MSLAB_SQ_KEYS overrides,
// sparse_wgmma_bwd_tune_keys (tests; -1: back to the default)
#define SK_DEFAULT 2
static int sk_on = -2;
static int sk_on_get(void) {
    if (sk_on == -2) sk_on = getenv("MSLAB_SQ_KEYS") ? atoi(getenv("MSLAB_SQ_KEYS")) : -1;
    return sk_on < 0 ? SK_DEFAULT : sk_on;
}
extern "C" void sparse_wgmma_bwd_tune_keys(int on) { sk_on = on < 0 ? -2 : on; }
// (s13) the ordered mode's dK / dV written by the kernel (SpArgs kconv; 0: by the convert
// sk_acc_out as before, the tests' reference); MSLAB_SK_CONV overrides,
// sparse_wgmma_bwd_tune_keys_conv (tests; -1: back to the default)
#define SK_CONV_DEFAULT 1
static int sk_conv = -2;
static int sk_conv_get(void) {
    if (sk_conv == -2) sk_conv = getenv("MSLAB_SK_CONV") ? atoi(getenv("MSLAB_SK_CONV")) : -1;
    return sk_conv < 0 ? SK_CONV_DEFAULT : sk_conv;
}
extern "C" void sparse_wgmma_bwd_tune_keys_conv(int on) { sk_conv = on < 0 ? -2 : on; }
// tests, the ordered mode: budget_mb, the budget of one (b, kv head)'s pos and rank (over it the
// kernel declines; <= 0: the default, wg_acc_budget's), and jit, the CTAs' warps delayed before
// their dK / dV adds by a hash of their index (other arrival orders: the same bits)
static int sk_jit = 0;
static double sk_budget_mb = 0;
extern "C" void sparse_wgmma_bwd_tune_keys_ord(double budget_mb, int jit) {
    sk_budget_mb = budget_mb, sk_jit = jit;
}

int sparse_wgmma_keys_bwd(bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *out,
                          const float *lse, const bf16 *q, const bf16 *k, const bf16 *v,
                          const AttnIndex *ix, int B, int T, int H, int KVH, int D) {
    int on = sk_on_get();
    if (!on || !wg_sp_small || !(D == 128 || (D == 64 && on >= 2))) return -1;
    if (!(ix->region == 16 || ix->region == 32) || ix->qblock % 128 || ix->window) return -1;
    // the outputs are written by 16-byte stores (s13: bf16 dK / dV rows, sk_dq_out, sk_rank's
    // zero rows): other pointers go to the query-centric kernel (the Backend's are 256-aligned)
    if (((size_t)dq | (size_t)dk | (size_t)dv) & 15) return -1;
    bool det = attn_bf16_deterministic();
    int G = H / KVH, nblk = ix->nblk, BKV = D, R = ix->region, nreg = (T + R - 1) / R;
    unsigned ntk = (unsigned)((ix->width + BKV / R - 1) / (BKV / R)); // key tiles a list
    size_t rows = (size_t)B * T * H, nbk = (size_t)B * KVH, nl = (size_t)B * H * nblk;
    // the ordered mode's blocks earliest first (s12 r1: 20.41-20.51 ms vs 20.83 latest first, the
    // chains' waits), its once-listed regions written by their CTA at D 128 (D 64 r2: 4.793 vs
    // 4.787 ms without)
    // (s13) the ordered mode's dK / dV by the kernel (cv, SpArgs kconv), then also the once-
    // listed regions at D 64
    int cv = det && sk_conv_get();
    int asc = det, one = det && (D == 128 || cv);
    // per group of cbk (b, kv head)s: the dK / dV accumulators [cbk][2][T][D] fp32; the ordered
    // mode's pos and rank [cbk G nblk][nreg], kcnt [cbk][nreg] and the chains' turns [cbk][T / 16];
    // then dQ [cbk][T][G][D] fp32 / s32; within wg_acc_group's budget; grid y (cbk G nblk) <= 65535
    size_t ppos = (size_t)G * nblk * nreg * 4, nw = ((size_t)T + 15) / 16;
    size_t perbk = (size_t)T * D * G * 4 + (size_t)T * D * 2 * 4 +
                   (det ? 2 * ppos + (size_t)nreg * 4 + nw * 4 + 1024 : 0);
    size_t ymax = 65535 / ((size_t)G * nblk);
    if (ymax < 1) return -1;
    // the ordered mode's pos and rank grow as G nblk nreg 8 bytes a (b, kv head): where they are
    // over the default budget (wg_acc_budget's, not MSLAB_SQ_ACC_MB's, which sets the groups
    // alone; e.g. 128-row blocks of 16-key regions at 1M: 4 GB), decline: sq_fused_kernel's
    // ordered mode runs (bitwise repeatable; its fp32 dK / dV accumulators are 8 T D bytes a (b,
    // kv head)). (s11's partials were G nblk ntk 128 KB: the paper config's 164 MB at 32K)
    if (det && (double)(2 * ppos) > (sk_budget_mb > 0 ? sk_budget_mb * 1048576.0
                                                      : (double)wg_acc_budget(B, T, H, KVH, D)))
        return -1;
    size_t cbk = wg_acc_group(B, T, H, KVH, D, perbk, ymax);
    // the converts' 32-bit rows (sk_dq_out: its 8-element index, + one grid-stride step: no wrap)
    if ((double)cbk * T * (2 + G) >= 4294967295.0 ||
        (double)cbk * T * G * D / 8 + SK_CONV_CTAS * 256.0 >= 4294967295.0)
        return -1;
    // (s14) the ordered D 64 kernel reads lse x log2e (l2, sk_pre's, after rsc)
    bool lps = det && D == 64;
    size_t rsc_off = align256(rows * 4), kvm_off = rsc_off + (det ? align256(rows * 4) : 0);
    size_t l2_off = kvm_off;
    if (lps) kvm_off += align256(rows * 4);
    size_t sl_off = kvm_off + align256(nbk * 8), acc_off = sl_off + align256(nl * ix->width * 4);
    char *ws = (char *)wg_bwd_scratch(acc_off + cbk * perbk + 256);
    float *Di = (float *)ws, *rsc = det ? (float *)(ws + rsc_off) : nullptr;
    float *l2 = lps ? (float *)(ws + l2_off) : nullptr;
    unsigned *kvm = (unsigned *)(ws + kvm_off);
    if (det) { // Di and the row scales (K / V bound first)
        cudaCheck(cudaMemsetAsync(kvm, 0, nbk * 8, 0));
        wg_kv_bound_launch(D, kvm, k, v, B, T, KVH);
        dim3 pg((unsigned)nbk, cdiv_u((size_t)T * G, 512));
        if (D == 64) sk_pre<64><<<pg, 256>>>(Di, rsc, kvm, q, dout, out, T, H, KVH, 512, lse, l2);
        else sk_pre<128><<<pg, 256>>>(Di, rsc, kvm, q, dout, out, T, H, KVH, 512, lse, l2);
        cudaLaunchCheck();
    } else {
        wg_bwd_pre_launch(D, Di, nullptr, nullptr, dout, out, k, v, B, T, H, KVH);
    }
    SpArgs sp = {};
    int *sl = (int *)(ws + sl_off);
    sparse_sort_lists(sl, ix->idx, nl, ix->width);
    sp.idx = sl, sp.nblk = nblk, sp.width = ix->width, sp.qblock = ix->qblock, sp.region = R;
    sp.nreg = nreg, sp.kasc = asc, sp.kone = one, sp.kjit = det && sk_jit;
    if (det) sp.ow = ord_watch(ATTN_ORD_KEYS, 1ll << 31); // a timed-out turn flagged (ord_watch.cuh)
    CUtensorMap qmap, omap, dqmap, accmap;
    MS_ASSERT(make_map(&qmap, q, B, T, H, D, 64) && make_map(&omap, dout, B, T, H, D, 64),
              "sparse_wgmma_keys_bwd: the Q / dO tensor maps");
    float scale = 1.f / sqrtf((float)D);
    char *kva = ws + acc_off;
    for (size_t bk0 = 0; bk0 < nbk; bk0 += cbk) {
        size_t n = nbk - bk0 < cbk ? nbk - bk0 : cbk, nlst = n * G * nblk; // the launch's lists
        size_t kvb = align256(2 * n * T * D * 4);
        char *ordp = kva + kvb; // the ordered mode's pos, rank, kcnt, turns
        float *dqa = (float *)(ordp + (det ? align256(2 * n * ppos) + align256(n * nreg * 4) +
                                                 align256(n * nw * 4)
                                           : 0));
        int *pos = (int *)ordp, *rank = pos + nlst * nreg, *kcnt = nullptr, *kwait = nullptr;
        if (det) { // no zeroing of dK / dV: each chain's first add stores
            kcnt = (int *)(ordp + align256(2 * n * ppos));
            kwait = (int *)((char *)kcnt + align256(n * nreg * 4));
            cudaCheck(cudaMemsetAsync(dqa, 0, n * G * T * D * 4, 0));
            cudaCheck(cudaMemsetAsync(pos, 0xff, nlst * nreg * 4, 0));
            // (the tests' stall: turns at -1, no chain starts: every first wait times out)
            cudaCheck(cudaMemsetAsync(kwait, ord_stall() ? 0xff : 0, n * nw * 4, 0));
            sk_pos<<<(unsigned)nlst, 128>>>(pos, sl + bk0 * G * nblk * ix->width, ix->width, nreg);
            cudaLaunchCheck();
            sk_rank<<<dim3(cdiv_u(nreg, 128), (unsigned)n), 128>>>(
                rank, kcnt, pos, nreg, G, nblk, asc, cv ? dk : nullptr, dv, (int)bk0, T, KVH, R, D);
            cudaLaunchCheck();
        } else {
            cudaCheck(cudaMemsetAsync(kva, 0, kvb + n * G * T * D * 4, 0)); // both accumulators
        }
        // dQ: (D, G, T, n) fp32 / s32, box 32 columns x 64 rows (the body's staging boxes); dK /
        // dV: (D, T, 2 n, 1) fp32 (keys past T clipped), box 32 columns x 16 keys
        size_t qd[4] = {(size_t)D, (size_t)G, (size_t)T, n};
        size_t qs[3] = {(size_t)D * 4, (size_t)G * D * 4, (size_t)T * G * D * 4};
        size_t kd[4] = {(size_t)D, (size_t)T, 2 * n, 1};
        size_t ks[3] = {(size_t)D * 4, (size_t)T * D * 4, 2 * n * T * D * 4};
        int qb[4] = {32, 1, 64, 1}, kb[4] = {32, 16, 1, 1};
        CUtensorMapDataType qt = det ? CU_TENSOR_MAP_DATA_TYPE_INT32 : CU_TENSOR_MAP_DATA_TYPE_FLOAT32;
        MS_ASSERT(wg_acc_map(&dqmap, qt, 4, dqa, qd, qs, qb) &&
                      wg_acc_map(&accmap, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 4, kva, kd, ks, kb),
                  "sparse_wgmma_keys_bwd: the accumulators' tensor maps");
        sp.bk0 = (int)bk0, sp.kcnt = kcnt, sp.kpos = pos, sp.krank = rank, sp.kwait = kwait;
        sp.kconv = cv, sp.kacc = (float *)kva;
        dim3 grid(ntk, (unsigned)nlst);
        wg_keys_fused_launch(D, det, grid, dk, dv, dqa, dout, lps ? l2 : lse, Di, q, k, v, T, H, KVH, sp, rsc,
                             dqmap, qmap, omap, accmap);
        size_t nkr = cv ? 0 : 2 * n * T, nqr = n * G * T; // (cv: the dK / dV rows all written)
        if (!nkr) { // (s13) dq alone (r5: 17.75 / 17.63 ms vs sk_acc_out's 17.81 / 17.77)
            unsigned cg = cdiv_u(nqr * (D / 8), 256);
            auto dqo = D == 64 ? sk_dq_out<64> : sk_dq_out<128>;
            dqo<<<cg < SK_CONV_CTAS ? cg : SK_CONV_CTAS, 256>>>(dq, (const int *)dqa, rsc, (int)bk0,
                                                              (unsigned)nqr, T, H, KVH, scale);
            cudaLaunchCheck();
            continue;
        }
        auto conv = D == 64 ? (det ? sk_acc_out<64, true> : sk_acc_out<64, false>)
                            : (det ? sk_acc_out<128, true> : sk_acc_out<128, false>);
        unsigned cg = cdiv_u((nkr + nqr) * (D / 4), 256);
        conv<<<cg < SK_CONV_CTAS ? cg : SK_CONV_CTAS, 256>>>(dq, dk, dv, (const float *)kva, dqa,
                                                            rsc, kcnt, R, one, (int)bk0,
                                                            (unsigned)nkr, (unsigned)nqr, T, H,
                                                            KVH, scale);
        cudaLaunchCheck();
    }
    return 0;
}
