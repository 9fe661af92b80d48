// backend_bf16.cu: the "cuda-bf16" table (docs/cuda.md, "Precision"): backend_cuda()'s table with
// the GEMMs and the attention ops on bf16 operands; everything else (storage, element-wise ops,
// norms, loss, AdamW on the fp32 master weights) is the fp32 table's own function, but for the
// rounding readers below.
//
// Semantics of each replaced op: its operands are rounded to bf16 (round-to-nearest-even, as
// cuda_f32_to_bf16), products are accumulated in fp32, results land in the op's fp32 outputs
// (attention: its out is the bf16 kernel's bf16 out widened, exactly; lse fp32). Backward ops keep
// ops.h's += convention: the GEMMs add with beta = 1, the attention gradients (which the bf16
// kernels return in bf16, overwritten) are added into the fp32 gradients. The selection
// (attention_select) scores the bf16-rounded q / k too (select_bf16, else the fp32 op).
//
// GEMM choice: operands are converted into bf16 scratch, then cublasGemmEx with CUDA_R_16BF inputs,
// CUDA_R_32F output, CUBLAS_COMPUTE_32F (tensor cores). The alternative, CUBLAS_COMPUTE_32F_FAST_16BF
// on the fp32 buffers, saves the conversions, but cuBLAS does not specify how it down-converts and
// on the H200 it is not round-to-nearest of the operands (2.4e-3 relative L2 from the rounded-
// operand reference, where this path is <= 4.4e-6), and slower (246 vs 357 TFLOP/s at
// 8192x768x3072 fwd+bwd). Kept only as an opt-in for measurements (MSLAB_BF16_GEMM=fast, or
// backend_cuda_bf16_fast_gemm(1)), never the default.
//
// Conversions (the table's memory state; every op of the table is wrapped to keep it):
//  - Shadows: the bf16 copy of an fp32 array that a GEMM or the attention read is kept (its own
//    allocation, keyed by pointer and length) and reused while it is valid; every op of this table
//    marks the ranges it writes (upload, zero, adamw, every op's outputs, alloc / free), which makes
//    the shadows over them stale. So a weight is converted once per optimizer step (not at each of
//    its GEMMs), a layer input once for its forward GEMMs and reused by the backward, q / k / v once
//    for the attention forward and backward. An op that writes an array that has a shadow fills it
//    in the same pass (rmsnorm, rope, swiglu fwd / bwd, cross-entropy bwd: bf16.h's _x variants),
//    so the LM-head gradient, ln1 / ln2, h, dgate / dup, dq / dk are never converted separately.
//    Budget: MSLAB_BF16_CACHE_MB, else a quarter of the device memory (at most half of the free);
//    past it, operands go through scratch slots as before. Shadows change no value: training with
//    MSLAB_BF16_CACHE=0 gives the same bits (bf16.state test).
//  - Deferred zeros: zero() only records the range; an op that overwrites an array inside a
//    recorded range (matmul_bwd's GEMMs with beta 0, swiglu / rmsnorm / rope / cross-entropy
//    backward with acc = 0: no memset, no read of the zeros) takes that part out of it; every
//    other operand an op reads or writes (need / wrote / a conversion) runs the memset of the
//    recorded zeros over it first (flush_range), so no op ever sees an unrun zero, and a zero over
//    memory an op does not touch stays recorded. The model's gradients (zeroed at the step's
//    start) are so never memset but for the embedding's (its backward adds rows into it): every
//    weight gradient GEMM runs with beta 0 and the norms' weight gradients are overwritten (s9;
//    was a 650 MB memset and beta 1 at the LM's shape: 0.15 ms live). Ops with operands the
//    table does not see (sparse attention's index, select, decode) run every zero first.
//    MSLAB_BF16_LAZY=0: at once.
//  - Activations (default; MSLAB_BF16_ACTS=0: off; backend_cuda_bf16_set_acts): outputs that only
//    a GEMM or the attention reads in the LM step are kept in bf16 only. (a) rmsnorm_fwd,
//    swiglu_fwd / bwd, rope_fwd / bwd and crossentropy_bwd (a backward only over a deferred zero)
//    write only the shadow of an output array that has one (a GEMM / the attention read it
//    before): the shadow is "own", the fp32 memory stale, and the array's value is the bf16
//    rounding of the result, which is all that its GEMM / attention would read of it anyway.
//    (b) The attention's out and its dq / dk / dv over deferred zeros are the kernels' bf16
//    results (exact): written into the arrays' shadows (own) instead of being widened / added;
//    rope_bwd reads such a dq / dk as bf16. Every op reads fp32 arrays through need(), which widens
//    the own shadows over what it reads, and a write that covers an own array in part widens it
//    first; so an array is never seen stale. Arrays without a shadow (an fp32 op's operand only:
//    attention_decode's cache, ...) keep their fp32 values. Training gives the same values with
//    and without (bf16.state.acts: losses and parameters of the test models, also with shadows
//    off; bf16.acts.*: each op's output read back after a GEMM read the array).
//  - Cross-entropy (MSLAB_BF16_CE_FUSE=0: off; with acts): the forward also writes the gradient
//    that the model's backward asks for (dloss = 1 / rows with a target), bf16 into a buffer that
//    the backward swaps into the dlogits shadow (own) when the call matches: one pass over the
//    4.2 GB of logits instead of two at the LM's shape. The rows with a target are counted from
//    the host copy of the targets' upload when that was the last write there (else downloaded:
//    a device sync in the forward).
//  - Residual add + norm (MSLAB_BF16_ADDNORM, default: as acts): add() is deferred; when the next
//    op is the rmsnorm_fwd of its sum, one kernel reads a and b, writes the sum and the norm (the
//    same bits as the two ops); any other next op runs the add first.
//  - GEMM outputs (with acts): a GEMM output array that has a shadow and was
//    never read by an fp32 consumer (in the LM: v, and the attention's dout as Wo's dinp) is
//    written by cuBLAS in bf16 straight into its shadow (own): no fp32 store, no conversion.
//    (s7's version took every output with a shadow: the MS model's raw q / k, which rope_fwd
//    also reads in fp32, then changed the training values.)
//  - Rounding readers (s10; MSLAB_BF16_RND=0: off; backend_cuda_bf16_set_rnd): swiglu_fwd / bwd (gate,
//    up, dout), rope_fwd (its input) and the cross-entropy (logits) read their inputs rounded to
//    bf16, as a GEMM does, and PyTorch's autocast, where these are bf16 GEMM outputs: the fp32
//    table's function of the rounded inputs (the kernels round an fp32 input as they load it:
//    bf16.h's BfIn). They record no fp32 read and, with acts, give their inputs shadows, so the
//    GEMMs that write the LM's gate / up, dh, q / k and logits write them in bf16 only (the GEMM
//    outputs rule above), and the readers load half the bytes. Values do not depend on where an
//    input is kept (acts, cache on / off: the same bits; bf16.rnd.*).
//  - Grouped products (s10; MSLAB_BF16_GROUP=0: off; backend_cuda_bf16_set_group): matmul_bwd
//    calls in a row that add into the same dinp from the same inp (the LM's dln from dq, dk, dv,
//    and from dgate, dup) are deferred and run as one dinp product over K = the sum of their OC, the
//    gradients side by side as column blocks of one bf16 [N, K] matrix, the weights stacked [K,
//    IC]; each weight gradient then reads its column block. No fp32 read-add-write of dinp per
//    product, one longer K. The shadows of the gradients and weights are moved into such blocks
//    once (Shadow.blk; the gradients' as strided copies, Shadow.rl / ld), and their producers
//    then write in place: rope_bwd and swiglu_bwd take strided bf16 outputs (OutBF.rl / ld), the
//    attention backward's dv is copied in (2D copy), AdamW writes the stacked weights. The
//    grouped form is the op's function whenever the calls come so (with shadows off: scratch
//    copies in the same layout, the same bits; bf16.group.*).
//  - Optimizer: the gradient clip's scale() is deferred and read by the AdamW
//    calls (g * s, the same bits); AdamW writes the bf16 shadows of the weight slices inside the
//    tensor it updates (one launch per tensor), so no weight is converted in the next forward.
//  - GEMM algorithms: cuBLASLt with the index-th algorithm of its heuristic list,
//    per product where a measurement beat cublasGemmEx (lt_choice), else cublasGemmEx.
// Memory written or read other than through this table must be announced first:
// backend_cuda_bf16_forget() (runs what is deferred, widens what is kept in bf16 only).
// Measured (H200, `MSLAB_LM_ROWS=0 mslab-gpu-bench --lm`, the 162M LM at 4096 x 8, bf16; GPU
// round s6 r2): 103.2 ms/step with acts (and its add + norm and cross-entropy fusions; 1.29x
// PyTorch eager's 133.5), 114.2 with MSLAB_BF16_ACTS=0 (the same loss, 8.895); 116.4 before this
// session's changes. Row 1 (MS, 1 x 32768): 270.7 ms/step (was 281.6). 145.2 ms with
// MSLAB_BF16_CACHE=0 MSLAB_BF16_LAZY=0 (session 5); 170.7 ms before the shadows, when conversions
// took ~36 ms/step in ~545 calls (now ~120 calls, 1.3 ms: each weight once, v and datt per layer).
// ncu (`ncu --metrics gpu__time_duration.sum`, s6 r2, per call): swiglu bwd 0.366 ms (was 0.57),
// fwd 0.226 (0.33), cross-entropy fwd + gradient 1.85 (fwd 1.55 + bwd 2.77), rmsnorm bwd 0.127
// (0.195), add + rmsnorm fwd 0.115 (add 0.068 + norm 0.045: the fusion is neutral per kernel),
// rope fwd 0.040 (0.059), rope bwd from bf16 0.035 (0.077, plus the attention gradients' adds,
// 3 x 0.064). What is left at 103 ms: attention ~35 ms (D 64 wgmma kernels), GEMMs ~40 ms (the
// LM head's three at 2.6 / 1.9 / 2.1 ms, memory-bound on the 4.2 GB fp32 logits and the
// re-read bf16 gradient), element-wise, norms, rope, AdamW and conversions ~16 ms.
// Shadows at that shape: ~9.5 GB (LM-head gradient 2.1 GB, per layer ln1 ln2 att h q k v), with
// acts ~0.2 GB more (dq / dk) and the cross-entropy's 2.1 GB buffer.
// Session 8 (H200, row 0): GEMM_OUT + OPT + norm.cu's float4 rows + loss.cu's prefetching
// cross-entropy 98.7 -> 96.4 ms/step (r2); with the cuBLASLt table 94.7 (r3; 95.9 with
// MSLAB_BF16_LT=-1, 98.2 with all of these off); 92.7 / 93.1 (r4 / r5, with the attention's
// changes of the same rounds) = 1.45x / 1.44x PyTorch eager's 134.3; MS row 192.5 / 192.3. ncu over one step (r3, unlocked clocks, 559
// kernels): 87.1 ms of kernels: GEMMs 37.9 (incl. split-K reduces 1.3), attention 30.8, swiglu
// 7.1, rmsnorm 5.1, rope 2.4, cross-entropy 1.85, AdamW 1.15, clip scale 0.3 (the timing start's
// sync ran it), sumsq 0.26, embedding 0.27; the rest of the 94.7 ms is no host gap we found (the
// syncs: positions / tokens / targets uploads at the step's start, the losses download, sumsq):
// most likely the lower clocks of a continuous run (~1.8 GHz in s8 traces) than ncu's replays.
// Session 9 (H200, row 0, s9 r1): the op trace (MSLAB_BF16_TRACE=4: CUDA events around every op
// of one step) settles it: 498 ops, 90.25 ms from the first op's start to the last op's end, of
// which the device idled between ops 0.78 ms (host gaps: none above 0.04 ms; so no CUDA graph
// is worth its constraints here), op spans 89.47 ms; ncu over the same step (clocks and caches
// as live, time-weighted SM clock 1.73 GHz in both) sums 87.36 ms of kernels. The rest is inside
// ops: attention_bwd 2012 us per call live vs 1782 us of its kernels in ncu (its launcher's
// 100 MB dQ-accumulator memset, which ncu does not list, is ~30 us of it), the GEMMs 5-8 us per
// call above ncu, ~1.4 us per op of the trace's own events. Live spans per step: GEMMs 39.6 ms
// (the 768 x 768 products at 535-613 TFLOP/s: short K, the fp32 output's store), attention 30.9,
// swiglu 7.3, rmsnorm 5.3 (add fused), rope 2.1, cross-entropy 1.93, AdamW 1.21, sumsq 0.29,
// embedding 0.36, the gradients' memset 0.15 (now gone: "Deferred zeros").
// s9's changes here: the gradients' zero taken by range ("Deferred zeros"), uploads of up to
// 4 MB asynchronous from pinned copies and skipped when the device holds the bytes (the step's
// positions, and in the benchmark its tokens / targets too); live (s9 r3 trace vs r1): the step's
// memset 0.15 ms and the upload wait gone, rope 2.07 -> 1.77 ms (rope.cu), embedding 0.36 ->
// 0.25 (embedding.cu), cross-entropy 1.93 -> 1.91 (loss.cu). Tried (s9 r3, removed): downloads of
// up to 4 MB through a pinned buffer: the losses' download span 163 us vs 133 pageable (its wait
// is latency, not the copy).
// Removed in s9 (their off paths lost in s8, figures above): the switches MSLAB_BF16_GEMM_OUT,
// MSLAB_BF16_OPT and MSLAB_BF16_LT (the cuBLASLt index stays settable for the tests' reference:
// backend_cuda_bf16_set_lt).
// Session 10 (H200, row 0, `MSLAB_BF16_TRACE=4 MSLAB_LM_ROWS=0 mslab-gpu-bench --lm`): rounding
// readers (r1: 91.6 -> 87.4 ms/step in one round; per call swiglu fwd 257 -> 177 us, bwd 438 ->
// 361, rope_fwd 40.7 -> 33.5, gate / up GEMMs 216 -> 202, logits 2233 -> 2028, ce_fwd 2081 ->
// 1881), then elementwise.cu's 8-wide SwiGLU with the input kind as a template parameter (r2:
// 84.8 ms/step; swiglu fwd 159, bwd 301 us), grouped products (trace, r2 / r3 vs the same ops
// ungrouped: q k v o backward 6.83 -> 5.82 ms a step, w1 / w3 10.28 -> 10.08, less rope_bwd /
// swiglu_bwd's strided stores +0.35 and the dv copy; K = 2304 at cuBLASLt index 6: 203.9 ->
// 171.9 us, bf16.lt). r4 (all of it): 84.1 ms/step (trace 83.80 ms), MSLAB_BF16_GROUP=0 84.4
// (84.42): the group-affected ops 42.67 vs 43.18 ms a step. MS row (1 x 32768): 162.0 (s9) ->
// 156.9 / 157.5 / 156.3 ms (r2 / r3 / r4).
// MSLAB_BF16_DEBUG=1 says (stderr) which fp32 read keeps a GEMM output in fp32.
//
// Determinism: as matmul.cu (one stream, cuBLAS atomics off); the bf16 attention kernels are
// deterministic unless the run says `deterministic = false` (attn_bf16_set_deterministic); the
// conversions are element-wise.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublasLt.h>

#include "cuda_common.cuh"
extern "C" {
#include "attn_bf16.h"
#include "bf16.h"
}

static Backend bf16_table;
static int bf16_ready;
static void (*select_fn)(AttnIndex *, const struct AttnConfig *, const float *, const float *,
                         int, int, int, int, int); // bf16_attention_select or the fp32 op
static int fast_gemm;     // 1: CUBLAS_COMPUTE_32F_FAST_16BF on the fp32 buffers (measurements only)
static int n_fallbacks;   // attention calls that ran the fp32 kernels (shape not handled in bf16)

// ---- op trace (MSLAB_BF16_TRACE=S: measurements) ----
// The S-th training step (from the S-th embedding_fwd to the next) with CUDA events around every op
// of this table: each op's GPU span (its kernels and the gaps between them) and the device's idle
// time between ops (the host had queued nothing: launches, syncs, bookkeeping), printed at the
// next embedding_fwd; host microseconds per op too. Events cost ~2 us of host time per op.
#include <time.h>
#define TR_MAX 4096
static struct {
    int step, calls, on, n;
    cudaEvent_t ev[2 * TR_MAX];
    const char *name[TR_MAX];
    long long tag[TR_MAX];
    double host_us[TR_MAX];
} tr;
static double tr_now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec * 1e-3;
}
static void tr_report(void) {
    cudaCheck(cudaDeviceSynchronize());
    struct Agg { const char *name; long long tag; int count; double gpu, host; } agg[128];
    int na = 0;
    double span = 0, idle = 0, host = 0, total = 0;
    struct { double ms; int i; } gaps[8] = {};
    for (int i = 0; i < tr.n; i++) {
        float d = 0, g = 0;
        cudaCheck(cudaEventElapsedTime(&d, tr.ev[2 * i], tr.ev[2 * i + 1]));
        if (i + 1 < tr.n) cudaCheck(cudaEventElapsedTime(&g, tr.ev[2 * i + 1], tr.ev[2 * i + 2]));
        span += d, idle += g, host += tr.host_us[i];
        for (int j = 0; j < 8; j++) // the largest idle gaps, descending
            if (g > gaps[j].ms) {
                memmove(&gaps[j + 1], &gaps[j], (7 - j) * sizeof gaps[0]);
                gaps[j].ms = g, gaps[j].i = i;
                break;
            }
        int a = 0;
        while (a < na && !(agg[a].name == tr.name[i] && agg[a].tag == tr.tag[i])) a++;
        if (a == na && na < 128) agg[na++] = {tr.name[i], tr.tag[i], 0, 0, 0};
        if (a < na) agg[a].count++, agg[a].gpu += d, agg[a].host += tr.host_us[i];
    }
    float w = 0;
    if (tr.n) cudaCheck(cudaEventElapsedTime(&w, tr.ev[0], tr.ev[2 * tr.n - 1]));
    total = w;
    fprintf(stderr, "trace step %d: %d ops, %.2f ms first op start to last op end: op spans "
            "%.2f ms, idle between ops %.2f ms; host in ops %.2f ms\n", tr.step, tr.n, total, span,
            idle, host * 1e-3);
    for (int a = 0; a < na; a++)
        fprintf(stderr, "trace  %-14s %10lld x%-4d gpu %8.3f ms (%7.1f us each) host %7.1f us each\n",
                agg[a].name, agg[a].tag, agg[a].count, agg[a].gpu, 1e3 * agg[a].gpu / agg[a].count,
                agg[a].host / agg[a].count);
    for (int j = 0; j < 8 && gaps[j].ms > 0; j++)
        fprintf(stderr, "trace  idle %.3f ms after op %d %s/%lld, before %s/%lld\n", gaps[j].ms,
                gaps[j].i, tr.name[gaps[j].i], tr.tag[gaps[j].i], tr.name[gaps[j].i + 1],
                tr.tag[gaps[j].i + 1]);
    for (int i = 0; i < 2 * TR_MAX; i++) cudaEventDestroy(tr.ev[i]);
}
static void flush_grp(void); // a pending group of matmul_bwd calls runs first ("Grouped products")
static const char *cur_op = "?"; // the op running (MSLAB_BF16_DEBUG's notes)
static int dbg_on;              // MSLAB_BF16_DEBUG=1: why GEMM outputs stay fp32 (stderr, a few lines)
struct OpTrace { // one traced op: events around it when the step is traced
    int i;
    double t0;
    OpTrace(const char *name, long long tag, int embed = 0) : i(-1) {
        flush_grp();
        cur_op = name;
        if (!tr.step) return;
        if (embed && ++tr.calls == tr.step) {
            for (int k = 0; k < 2 * TR_MAX; k++) cudaCheck(cudaEventCreate(&tr.ev[k]));
            tr.on = 1;
        } else if (embed && tr.on) {
            tr.on = 0;
            tr_report();
        }
        if (!tr.on || tr.n == TR_MAX) return;
        i = tr.n++;
        tr.name[i] = name, tr.tag[i] = tag;
        t0 = tr_now_us();
        cudaCheck(cudaEventRecord(tr.ev[2 * i], 0));
    }
    ~OpTrace() {
        if (i < 0) return;
        cudaCheck(cudaEventRecord(tr.ev[2 * i + 1], 0));
        tr.host_us[i] = tr_now_us() - t0;
    }
};
#define TRACE(name, tag) OpTrace trace_op_(name, (long long)(tag))

// ---- the table's memory state: bf16 shadows and deferred zeros (header, "Conversions") ----

#define NB(p, n) (p), (size_t)(n) * sizeof(float) // an fp32 array's bytes, for need / wrote

struct Shadow {
    const float *p; // the fp32 array [p, p + n) ...
    size_t n;
    uint16_t *b;    // ... and its bf16 copy, own allocation (blk < 0) or in block blk
    int valid;      // b holds rn(p[0 .. n)) as the array is now
    int own;        // (valid) b IS the array: the fp32 memory is stale, widened on an fp32 read
    int blk;        // >= 0: b lies in blks[blk] ("Grouped products"), -1: b is its own allocation
    size_t rl, ld;  // rl > 0: the copy's rows of rl elements lie ld apart (a column block of the
                    // block); 0: dense. Only the group path and the ops that take strided
                    // outputs (rope_bwd, swiglu_bwd, the attention's gradients) use b so.
};
// Blocks: one allocation holding several shadows (a group's gradients side by side, its weights
// stacked), freed with the last of them.
struct Blk { void *mem; size_t bytes; int refs; };
static Blk *blks;
static int n_blks;
static Shadow *shadows;
static int n_shadows, cap_shadows;
static size_t shadow_bytes, shadow_budget; // the budget is set at the first shadow
static int cache_on = 1, lazy_on = 1;      // MSLAB_BF16_CACHE=0, MSLAB_BF16_LAZY=0
static int acts_on = 1;                    // MSLAB_BF16_ACTS=0: off (header, "Activations")
static int rnd_on = 1;                     // MSLAB_BF16_RND=0: off (header, "Rounding readers")
static void grp_run(void);
static int grp_pending(void);
static void flush_grp(void) {
    if (grp_pending()) grp_run();
}
struct Alloc { void *p; size_t bytes; };   // what this table allocated (free drops its shadows)
static Alloc *allocs;
static int n_allocs, cap_allocs;
#define MAX_ZEROS 64 // (pieces: a zero whose middle was taken or flushed leaves two)
static struct { float *p; size_t n; } zeros[MAX_ZEROS]; // zero() calls not yet run
static int n_zeros;
static int addnorm_on = -1; // MSLAB_BF16_ADDNORM=0 / 1 (default: as acts)
static struct { float *out; const float *a, *b; size_t n; } pend; // add() not yet run (w_add)
// The deferred add runs before anything else the table does (every op starts with this, through
// flush_add / flush_range / take_zero / is_zero), except the rmsnorm_fwd that reads its sum.
// The gradient clip's scale (w_scale, lazy) is deferred too: the AdamW calls over parts of it read
// the gradient times the factor (cuda_adamw_x); a zero() over all of it drops it; anything else
// runs it first (flush_add).
static struct { float *x; float s; size_t n; } pscale;
// Uploads of up to 4 MB (the model's positions, tokens, targets at each step): the host bytes are
// kept in a pinned buffer per destination (UP_RECS, the oldest replaced) and copied from there by
// cudaMemcpyAsync, so the host does not wait for the device to drain (a pageable cudaMemcpy waits
// for every queued op: the device idled while the host passed the copy and queued the next ops);
// an upload of the bytes that its destination still holds (valid: no write there since) is
// skipped. The cross-entropy counts the rows with a target from the targets' record (else
// downloads them: a device sync). wrote() drops the records it overlaps.
static int overlap(const void *a, size_t abytes, const void *b, size_t bbytes);
#define UP_RECS 8
#define UP_MAX ((size_t)4 << 20)
struct UpRec { void *dst; size_t bytes; void *h; size_t cap; int valid; cudaEvent_t ev; };
static UpRec ups[UP_RECS];
static int up_next; // the record the next new destination replaces
static void up_wrote(const void *p, size_t bytes) {
    for (int i = 0; i < UP_RECS; i++)
        if (ups[i].valid && overlap(ups[i].dst, ups[i].bytes, p, bytes)) ups[i].valid = 0;
}
static void up_forget(void) {
    for (int i = 0; i < UP_RECS; i++) ups[i].valid = 0;
}
static const void *up_host(const void *dst, size_t bytes) { // the host bytes at dst, NULL: unknown
    for (int i = 0; i < UP_RECS; i++)
        if (ups[i].valid && ups[i].dst == dst && ups[i].bytes == bytes) return ups[i].h;
    return NULL;
}
static void flush_add(void) {
    flush_grp();
    if (pend.out) cuda_add(pend.out, pend.a, pend.b, pend.n);
    pend.out = NULL;
    if (pscale.x) cuda_scale(pscale.x, pscale.s, pscale.n);
    pscale.x = NULL;
}

// The cross-entropy forward's gradient for its backward (acts; header, "Cross-entropy"): valid
// while logits and targets are not written; b (bytes, counted in shadow_bytes) becomes the
// dlogits shadow's buffer by a swap.
static struct {
    const float *logits;
    const int *targets;
    int N, V;
    float dloss;
    uint16_t *b;
    size_t bytes;
    int valid;
} ce;
static int cefuse_on = -1; // MSLAB_BF16_CE_FUSE=0 / 1 (default: as acts)

static size_t shadow_size(size_t n) { return (n * sizeof(uint16_t) + 255) & ~(size_t)255; }
static int overlap(const void *a, size_t abytes, const void *b, size_t bbytes);
static void ce_wrote(const void *p, size_t bytes) {
    if (ce.valid && (overlap(ce.logits, (size_t)ce.N * ce.V * sizeof(float), p, bytes) ||
                     overlap(ce.targets, (size_t)ce.N * sizeof(int), p, bytes)))
        ce.valid = 0;
}
static int overlap(const void *a, size_t abytes, const void *b, size_t bbytes) {
    uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
    return x < y + bbytes && y < x + abytes;
}
static int covers(const void *p, size_t bytes, const Shadow *s) { // [p, p + bytes) holds s's array
    uintptr_t x = (uintptr_t)p, y = (uintptr_t)s->p;
    return x <= y && y + s->n * sizeof(float) <= x + bytes;
}
// A valid shadow's copy as one dense array: b, or (strided) gathered into scratch slot `slot`.
static const uint16_t *dense_b(const Shadow *s, int slot) {
    if (!s->rl) return s->b;
    uint16_t *d = (uint16_t *)cuda_scratch(slot, s->n * sizeof(uint16_t));
    cuda_bf16_copy2d(d, s->rl, s->b, s->ld, s->rl, s->n / s->rl);
    return d;
}
// An own shadow's fp32 array is written from the bf16 copy (exact): it is the array's value.
static void materialize(Shadow *s) {
    cuda_bf16_to_f32((float *)s->p, dense_b(s, SCRATCH_BF16_F), s->n);
    s->own = 0;
}
// The ranges an fp32 consumer (an op's fp32 operand, a download) has read, kept while their
// memory is allocated: a GEMM output is kept in bf16 only (gemm_out) where none was ever read so
// (the MS model's raw q / k are read by the attention in bf16 and by rope_fwd in fp32: they stay
// fp32). A hash set of exact (p, bytes) ranges, open addressing; free / alloc drop what they cover.
struct Range { const void *p; size_t bytes; const char *by; };
static Range *f32r;     // slots (p NULL: empty)
static int cap_f32r, n_f32r;
static size_t range_slot(const void *p, size_t bytes) {
    uintptr_t h = ((uintptr_t)p >> 4) * 0x9E3779B97F4A7C15ull ^ bytes * 0xC2B2AE3D27D4EB4Full;
    return (size_t)(h >> 17) & (cap_f32r - 1);
}
static void f32_read(const void *p, size_t bytes, const char *by = cur_op) {
    if (2 * (n_f32r + 1) > cap_f32r) { // grow (also the first call)
        Range *old = f32r;
        int oc = cap_f32r;
        cap_f32r = cap_f32r ? 2 * cap_f32r : 1024, n_f32r = 0;
        f32r = (Range *)calloc(cap_f32r, sizeof(Range));
        MS_ASSERT(f32r, "out of memory");
        for (int i = 0; i < oc; i++)
            if (old[i].p) f32_read(old[i].p, old[i].bytes, old[i].by);
        free(old);
    }
    size_t i = range_slot(p, bytes);
    while (f32r[i].p && !(f32r[i].p == p && f32r[i].bytes == bytes)) i = (i + 1) & (cap_f32r - 1);
    if (!f32r[i].p) f32r[i] = {p, bytes, by}, n_f32r++;
}
static const Range *f32_which(const void *p, size_t bytes) { // a recorded read overlapping it
    for (int i = 0; i < cap_f32r; i++)
        if (f32r[i].p && overlap(f32r[i].p, f32r[i].bytes, p, bytes)) return &f32r[i];
    return NULL;
}
static int f32_was_read(const void *p, size_t bytes) { return f32_which(p, bytes) != NULL; }
static void f32_forget(const void *p, size_t bytes) { // memory [p, p + bytes) freed / reused
    if (!f32_was_read(p, bytes)) return;
    Range *old = f32r;
    int oc = cap_f32r;
    f32r = NULL, cap_f32r = n_f32r = 0;
    for (int i = 0; i < oc; i++)
        if (old[i].p && !overlap(old[i].p, old[i].bytes, p, bytes))
            f32_read(old[i].p, old[i].bytes, old[i].by);
    free(old);
}
// Deferred zeros, by range (header, "Deferred zeros"): zero_cut removes [p, p + bytes) from zero
// i (memset first when run), leaving the pieces before and after it deferred (a piece that finds
// no slot is run too). flush_range: the deferred zeros over [p, p + bytes) run there only; every
// need / wrote calls it, so an op's operands are never read or written under an unrun zero,
// while a zero over memory the op does not touch (the model's gradients during the forward)
// stays deferred until an op takes its pieces (a weight gradient's GEMM with beta 0).
static void zero_cut(int i, const void *p, size_t bytes, int run) {
    float *a = zeros[i].p, *b = zeros[i].p + zeros[i].n;
    float *lo = (float *)p > a ? (float *)p : a;
    float *hi = (float *)((const char *)p + bytes) < b ? (float *)((const char *)p + bytes) : b;
    if (lo >= hi) return;
    if (run) cudaCheck(cudaMemsetAsync(lo, 0, (size_t)(hi - lo) * sizeof(float), 0));
    if (hi < b) { // the piece after
        if (lo > a && n_zeros == MAX_ZEROS)
            cudaCheck(cudaMemsetAsync(hi, 0, (size_t)(b - hi) * sizeof(float), 0));
        else if (lo > a) zeros[n_zeros].p = hi, zeros[n_zeros].n = (size_t)(b - hi), n_zeros++;
        else zeros[i].p = hi, zeros[i].n = (size_t)(b - hi);
    }
    if (lo > a) zeros[i].n = (size_t)(lo - a); // the piece before
    else if (hi >= b) zeros[i] = zeros[--n_zeros];
}
static void flush_range(const void *p, size_t bytes) {
    flush_grp();
    if (!p || !bytes) return;
    for (int i = n_zeros - 1; i >= 0; i--)
        if (overlap(zeros[i].p, zeros[i].n * sizeof(float), p, bytes)) zero_cut(i, p, bytes, 1);
}
// [p, p + bytes) is about to be read in fp32: the arrays there kept in bf16 only are widened.
static void need_conv(const void *p, size_t bytes) { // (read to convert it to bf16: no record)
    if (!p || !bytes) return;
    flush_range(p, bytes);
    for (int i = 0; i < n_shadows; i++)
        if (shadows[i].own && overlap(shadows[i].p, shadows[i].n * sizeof(float), p, bytes))
            materialize(&shadows[i]);
}
static void need(const void *p, size_t bytes) { // an fp32 consumer's read
    if (!p || !bytes) return;
    f32_read(p, bytes);
    need_conv(p, bytes);
}
// An op of this table is about to write [p, p + bytes): the shadows over it go stale (an own one
// that the write covers only in part is widened first: the rest of its array stays).
static void wrote(const void *p, size_t bytes) {
    if (!p || !bytes) return;
    flush_range(p, bytes);
    ce_wrote(p, bytes);
    up_wrote(p, bytes);
    for (int i = 0; i < n_shadows; i++) {
        Shadow *s = &shadows[i];
        if (!s->valid || !overlap(s->p, s->n * sizeof(float), p, bytes)) continue;
        if (s->own && !covers(p, bytes, s)) materialize(s);
        s->valid = s->own = 0;
    }
}
static void materialize_all(void) {
    for (int i = 0; i < n_shadows; i++)
        if (shadows[i].own) materialize(&shadows[i]);
}
// Bytes from p to the end of the table's allocation holding it (ops whose extent the shapes do not
// give: the embedding's rows); unknown memory: everything above p.
static size_t extent(const void *p) {
    for (int i = 0; i < n_allocs; i++)
        if (overlap(allocs[i].p, allocs[i].bytes, p, 1))
            return (uintptr_t)allocs[i].p + allocs[i].bytes - (uintptr_t)p;
    return ~(uintptr_t)0 - (uintptr_t)p;
}
static void release_b(Shadow *s) { // its storage (cudaFree waits for the device: no reader left)
    if (s->blk < 0) {
        cudaCheck(cudaFree(s->b));
        shadow_bytes -= shadow_size(s->n);
    } else if (--blks[s->blk].refs == 0) {
        cudaCheck(cudaFree(blks[s->blk].mem));
        shadow_bytes -= blks[s->blk].bytes;
        blks[s->blk].mem = NULL;
    }
}
static void drop_shadow(int i) {
    release_b(&shadows[i]);
    shadows[i] = shadows[--n_shadows];
}
// Every op but the one that consumes a deferred zero starts here: the memsets run before it.
static void flush_zeros(void) {
    flush_add();
    for (int i = 0; i < n_zeros; i++)
        cudaCheck(cudaMemsetAsync(zeros[i].p, 0, zeros[i].n * sizeof(float), 0));
    n_zeros = 0;
}
// The deferred zero that holds all of [p, p + n), -1: none
static int zero_holding(const float *p, size_t n) {
    flush_add();
    for (int i = 0; i < n_zeros; i++)
        if (zeros[i].p <= p && p + n <= zeros[i].p + zeros[i].n) return i;
    return -1;
}
static int is_zero(const float *p, size_t n) { return zero_holding(p, n) >= 0; }
// 1 when [p, p + n) lies in a deferred zero, which then leaves it out (no memset): the caller
// overwrites the whole array instead of adding to it.
static int take_zero(const float *p, size_t n) {
    int i = zero_holding(p, n);
    if (i >= 0) zero_cut(i, p, n * sizeof(float), 0);
    return i >= 0;
}
static Shadow *shadow_find(const float *p, size_t n) {
    if (!cache_on) return NULL;
    for (int i = 0; i < n_shadows; i++)
        if (shadows[i].p == p && shadows[i].n == n) return &shadows[i];
    return NULL;
}
static void set_budget(void) { // MSLAB_BF16_CACHE_MB, else a quarter of the device, at most half free
    if (shadow_budget) return;
    size_t fr = 0, tot = 0;
    cudaCheck(cudaMemGetInfo(&fr, &tot));
    const char *e = getenv("MSLAB_BF16_CACHE_MB");
    shadow_budget = e && atol(e) > 0 ? (size_t)atol(e) << 20 : (tot / 4 < fr / 2 ? tot / 4 : fr / 2);
    if (!shadow_budget) shadow_budget = 1;
}
// The shadow of [p, p + n), created (stale) when the budget allows; NULL: use a scratch slot.
static Shadow *shadow_make(const float *p, size_t n) {
    Shadow *s = shadow_find(p, n);
    if (s || !cache_on || !n) return s;
    set_budget();
    size_t bytes = shadow_size(n);
    if (shadow_bytes + bytes > shadow_budget) return NULL;
    uint16_t *b;
    if (cudaMalloc(&b, bytes) != cudaSuccess) {
        (void)cudaGetLastError();
        shadow_budget = shadow_bytes; // the device is full: no more shadows
        return NULL;
    }
    if (n_shadows == cap_shadows) {
        cap_shadows = cap_shadows ? 2 * cap_shadows : 64;
        shadows = (Shadow *)realloc(shadows, cap_shadows * sizeof(Shadow));
        MS_ASSERT(shadows, "out of memory");
    }
    shadows[n_shadows] = {p, n, b, 0, 0, -1, 0, 0};
    shadow_bytes += bytes;
    return &shadows[n_shadows++];
}

// bf16 copy of an fp32 device array: its shadow (converted only if stale), else a scratch slot
// (grow-only; freed buffers wait for the device, so a queued reader of the old buffer is safe).
static const uint16_t *to_bf16(int slot, const float *src, size_t n) {
    Shadow *s = shadow_make(src, n);
    if (s && s->valid) return dense_b(s, slot);
    if (s && s->rl) s = NULL; // (a strided shadow is filled by the group path only)
    need_conv(src, n * sizeof(float)); // a part of an array kept in bf16 only
    uint16_t *d = s ? s->b : (uint16_t *)cuda_scratch(slot, (n ? n : 1) * sizeof(uint16_t));
    cuda_f32_to_bf16(d, src, n);
    if (s) s->valid = 1;
    return d;
}
// Where an op puts its output [p, p + n) (after wrote()): the fp32 array, and its shadow's bf16
// copy in the same pass when it has one (only arrays that a bf16 operand was made of before have
// one, so nothing is allocated for outputs no GEMM reads). bf16_only (acts, and what the op
// allows): then the shadow alone takes it, own: the array's value is the bf16 rounding.
// strided: the op can write a strided shadow (rl, ld: Shadow's); else such a shadow is left stale.
struct Dst {
    float *f;
    uint16_t *b;
    Shadow *s;
    size_t rl, ld;
};
static Dst dest(float *p, size_t n, int bf16_only, int strided = 0) {
    Shadow *s = p && n ? shadow_find(p, n) : NULL;
    if (s && s->rl && !strided) s = NULL;
    Dst d = {p, s ? s->b : NULL, s, s ? s->rl : 0, s ? s->ld : 0};
    if (s && bf16_only) d.f = NULL;
    return d;
}
static void done(const Dst &d) {
    if (d.s) d.s->valid = 1, d.s->own = d.f == NULL;
}

// ---- matmul ----

// C (m x n, column-major, fp32) = A op . B op + beta C, bf16 operands, fp32 accumulation; Cb (not
// NULL, beta 0 only): the result goes there in bf16 instead (cuBLAS rounds the fp32 accumulator
// to nearest-even, as cuda_f32_to_bf16 would round the fp32 result; test bf16.acts.gemm_out).
// cuBLASLt (backend_cuda_bf16_set_lt(i): the i-th algorithm of cuBLASLt's heuristic list for every
// GEMM, -1: cublasGemmEx everywhere; the tests' reference and measurements; default: lt_choice per
// shape): the list is a function of the shape, types and alignments only, so a fixed index is as
// deterministic as cublasGemmEx's own choice. Plans cached per shape.
static int lt_index = -2; // -2: lt_choice per shape, -1: cublasGemmEx, i >= 0: index i everywhere
static cublasLtHandle_t lt_handle;
static void *lt_ws;
static const size_t LT_WS = (size_t)32 << 20;
struct LtPlan {
    int key[12];
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
    size_t ws;
};
static LtPlan *lt_plans;
static int n_lt_plans, cap_lt_plans;
static unsigned align_of(const void *p) {
    uintptr_t x = (uintptr_t)p;
    unsigned a = 256;
    while (a > 1 && (x & (a - 1))) a >>= 1;
    return a;
}
// The products where a cuBLASLt heuristic index beat cublasGemmEx (bf16.lt, H200; -1: cublasGemmEx):
// transposes, m, n, k, output bf16 (cbf), beta 0 (b0) as gemm_bf16 gets them.
// A choice holds for the layout it was timed with, dense operands (lda / ldb the natural ones):
// a strided operand (the grouped dW's G, ldb = K) takes cublasGemmEx.
static int lt_choice(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, int lda,
                     int ldb, int cbf, int b0) {
    if (lda != (ta == CUBLAS_OP_N ? m : k) || ldb != (tb == CUBLAS_OP_N ? k : n)) return -1;
    // us per call, cublasGemmEx -> the index (s8 r4, `mslab-gpu-tests bf16.lt`, N = 32768, random
    // operands: r2's all-zero ones ranked some otherwise, e.g. W2's forward 192 -> 186 there, 213
    // -> 226 here and in the LM step; not listed: within 3% of cublasGemmEx, and datt's bf16
    // output, 71.6 -> 64.3, not re-timed since bf16.acts.gemm_out began to check it)
    const int T = CUBLAS_OP_T, N = CUBLAS_OP_N, R = 32768;
    static const struct { int ta, tb, m, n, k, cbf, b0, idx; } tab[] = {
        {T, N, 768, R, 768, 0, 1, 5},    // q k o:      71.8 -> 63.4
        {T, N, 768, R, 768, 1, 1, 5},    // v (bf16):   61.1 -> 57.3
        {T, N, 3072, R, 768, 0, 1, 6},   // gate up:   250.2 -> 217.7
        {T, N, 32000, R, 768, 0, 1, 6},  // logits:     2872 -> 2553
        {N, N, 768, R, 768, 0, 1, 5},    // dln (Wq):   72.0 -> 64.2
        {N, N, 768, R, 768, 0, 0, 5},    // dln += (Wk, Wv): 103.2 -> 89.3
        {N, N, 768, R, 3072, 0, 0, 6},   // dln += (W3): 260.4 -> 243.0
        {N, N, 3072, R, 768, 0, 1, 6},   // dh:        314.9 -> 226.1
        {N, N, 768, R, 32000, 0, 1, 6},  // dlnf:       2580 -> 2348
        {N, T, 768, 32000, R, 0, 0, 1},  // dWcls +=:   2386 -> 2304
        {N, T, 768, 32000, R, 0, 1, 1},  // dWcls over its deferred zero (s9: beta 0, the same list)
        // s10 r1 (random operands): bf16 outputs for the rounding readers, dW over deferred zeros
        {T, N, 3072, R, 768, 1, 1, 6},   // gate up (bf16): 218.2 -> 204.2
        {N, N, 3072, R, 768, 1, 1, 6},   // dh (bf16):      274.7 -> 222.7
        {T, N, 32000, R, 768, 1, 1, 7},  // logits (bf16):  2496.6 -> 2373.1
        {N, T, 768, 768, R, 0, 1, 4},    // dWq k v o:      62.4 -> 60.6
        {N, N, 768, R, 768, 1, 1, 5},    // datt (bf16):    61.0 -> 57.3 (r2)
        {N, N, 768, R, 2304, 0, 1, 6},   // dln, grouped q k v (K = 3 x 768): 203.9 -> 171.9 (r2)
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (tab[i].ta == (int)ta && tab[i].tb == (int)tb && tab[i].m == m && tab[i].n == n &&
            tab[i].k == k && tab[i].cbf == cbf && tab[i].b0 == b0)
            return tab[i].idx;
    return -1;
}
static int gemm_lt(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                   const uint16_t *A, int lda, const uint16_t *B, int ldb, float beta, void *C,
                   int ldc, int cbf, int idx) {
    unsigned al = align_of(A) < align_of(B) ? align_of(A) : align_of(B);
    al = al < align_of(C) ? al : align_of(C);
    int key[12] = {(int)ta, (int)tb, m, n, k, lda, ldb, ldc, cbf, beta == 0.0f, (int)al, idx};
    LtPlan *pl = NULL;
    for (int i = 0; i < n_lt_plans && !pl; i++)
        if (!memcmp(lt_plans[i].key, key, sizeof key)) pl = &lt_plans[i];
    if (pl && !pl->desc) return -1; // its heuristic found nothing before: cublasGemmEx
    if (!pl) {
        if (!lt_handle) {
            cublasCheck(cublasLtCreate(&lt_handle));
            cudaCheck(cudaMalloc(&lt_ws, LT_WS));
        }
        if (n_lt_plans == cap_lt_plans) {
            cap_lt_plans = cap_lt_plans ? 2 * cap_lt_plans : 32;
            lt_plans = (LtPlan *)realloc(lt_plans, cap_lt_plans * sizeof(LtPlan));
            MS_ASSERT(lt_plans, "out of memory");
        }
        pl = &lt_plans[n_lt_plans];
        memcpy(pl->key, key, sizeof key);
        cublasCheck(cublasLtMatmulDescCreate(&pl->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
        cublasCheck(cublasLtMatmulDescSetAttribute(pl->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
        cublasCheck(cublasLtMatmulDescSetAttribute(pl->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
        int an = ta == CUBLAS_OP_N, bn = tb == CUBLAS_OP_N;
        cublasCheck(cublasLtMatrixLayoutCreate(&pl->a, CUDA_R_16BF, an ? m : k, an ? k : m, lda));
        cublasCheck(cublasLtMatrixLayoutCreate(&pl->b, CUDA_R_16BF, bn ? k : n, bn ? n : k, ldb));
        cublasCheck(cublasLtMatrixLayoutCreate(&pl->c, cbf ? CUDA_R_16BF : CUDA_R_32F, m, n, ldc));
        cublasLtMatmulPreference_t pref;
        cublasCheck(cublasLtMatmulPreferenceCreate(&pref));
        size_t ws = LT_WS;
        uint32_t a32 = al;
        cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
        cublasLtMatmulPreferenceAttributes_t at[4] = {
            CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
            CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
        for (int i = 0; i < 4; i++)
            cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, at[i], &a32, sizeof a32));
        cublasLtMatmulHeuristicResult_t res[16];
        int nres = 0;
        cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(lt_handle, pl->desc, pl->a, pl->b, pl->c,
                                                           pl->c, pref, 16, res, &nres);
        cublasLtMatmulPreferenceDestroy(pref);
        if (st != CUBLAS_STATUS_SUCCESS || nres == 0) { // this shape stays on cublasGemmEx
            cublasLtMatrixLayoutDestroy(pl->a), cublasLtMatrixLayoutDestroy(pl->b);
            cublasLtMatrixLayoutDestroy(pl->c), cublasLtMatmulDescDestroy(pl->desc);
            pl->desc = NULL, n_lt_plans++; // kept as "no plan"
            return -1;
        }
        int i = idx < nres ? idx : nres - 1;
        pl->algo = res[i].algo, pl->ws = res[i].workspaceSize;
        n_lt_plans++;
    }
    const float one = 1.0f;
    cublasCheck(cublasLtMatmul(lt_handle, pl->desc, &one, A, pl->a, B, pl->b, &beta, C, pl->c, C,
                               pl->c, &pl->algo, lt_ws, pl->ws, 0));
    return 0;
}
static void gemm_bf16(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                      const uint16_t *A, int lda, const uint16_t *B, int ldb, float beta, float *C,
                      int ldc, uint16_t *Cb = NULL) {
    const float one = 1.0f;
    MS_ASSERT(!Cb || beta == 0.0f, "gemm_bf16: a bf16 output only with beta 0");
    int idx = lt_index >= -1 ? lt_index : lt_choice(ta, tb, m, n, k, lda, ldb, Cb != NULL, beta == 0.0f);
    if (idx >= 0 && !gemm_lt(ta, tb, m, n, k, A, lda, B, ldb, beta, Cb ? (void *)Cb : (void *)C,
                             ldc, Cb != NULL, idx))
        return;
    cublasCheck(cublasGemmEx(cuda_cublas, ta, tb, m, n, k, &one, A, CUDA_R_16BF, lda, B,
                             CUDA_R_16BF, ldb, &beta, Cb ? (void *)Cb : (void *)C,
                             Cb ? CUDA_R_16BF : CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
                             CUBLAS_GEMM_DEFAULT));
}
// With acts, a GEMM output [p, p + n) over nothing it reads, whose
// array has a shadow (a GEMM / the attention read it before) and was never read by an fp32
// consumer (f32_read: in the LM, v and the attention's dout), is written in bf16 into that
// shadow (own): the array's value is the bf16 rounding, all its readers take of it; no fp32
// store, no conversion pass.
static Shadow *gemm_out(float *p, size_t n, const void *a, size_t abytes, const void *b,
                        size_t bbytes) {
    if (!acts_on || !p || !n) return NULL;
    if (overlap(p, n * sizeof(float), a, abytes) || overlap(p, n * sizeof(float), b, bbytes))
        return NULL;
    Shadow *s = shadow_find(p, n);
    const Range *r = s ? f32_which(p, n * sizeof(float)) : NULL;
    static int said;
    if (r && dbg_on && said < 24 && n >= ((size_t)4 << 20))
        said++, fprintf(stderr, "cuda-bf16 debug: %s: output %p (%zu floats) stays fp32: read in fp32 "
                        "by %s (%p, %zu B)\n", cur_op, (void *)p, n, r->by, r->p, r->bytes);
    return s && !s->rl && !r ? s : NULL;
}
static void gemm_fast(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                      const float *A, int lda, const float *B, int ldb, float beta, float *C,
                      int ldc) {
    const float one = 1.0f;
    cublasCheck(cublasGemmEx(cuda_cublas, ta, tb, m, n, k, &one, A, CUDA_R_32F, lda, B,
                             CUDA_R_32F, ldb, &beta, C, CUDA_R_32F, ldc,
                             CUBLAS_COMPUTE_32F_FAST_16BF, CUBLAS_GEMM_DEFAULT));
}

// The same transposed products as matmul.cu (row-major arrays are column-major transposes).
static void bf16_matmul_fwd(float *out, const float *inp, const float *w, int N, int IC, int OC) {
    TRACE("matmul_fwd", IC * 100000LL + OC);
    flush_add();
    if (N <= 0 || OC <= 0) return;
    wrote(out, (size_t)N * OC * sizeof(float));
    if (IC <= 0) {
        cudaCheck(cudaMemsetAsync(out, 0, (size_t)N * OC * sizeof(float), 0));
        return;
    }
    if (fast_gemm) {
        need(w, (size_t)OC * IC * sizeof(float)), need(inp, (size_t)N * IC * sizeof(float));
        gemm_fast(CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, w, IC, inp, IC, 0.0f, out, OC);
        return;
    }
    const uint16_t *wb = to_bf16(SCRATCH_BF16_B, w, (size_t)OC * IC);
    const uint16_t *ib = to_bf16(SCRATCH_BF16_A, inp, (size_t)N * IC);
    Shadow *so = gemm_out(out, (size_t)N * OC, w, (size_t)OC * IC * sizeof(float), inp,
                          (size_t)N * IC * sizeof(float));
    gemm_bf16(CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, wb, IC, ib, IC, 0.0f, out, OC,
              so ? so->b : NULL);
    if (so) so->valid = so->own = 1;
}

// beta 0 for a gradient that is a deferred zero (the GEMM then does not read it)
static void mm_bwd(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                   int N, int IC, int OC) {
    if (N <= 0 || IC <= 0 || OC <= 0) {
        flush_zeros();
        return;
    }
    size_t ni = (size_t)N * IC, nw = (size_t)OC * IC;
    float bi = dinp && take_zero(dinp, ni) ? 0.0f : 1.0f;
    float bw = dw && dw != dinp && take_zero(dw, nw) ? 0.0f : 1.0f;
    flush_add();
    if (bi != 0.0f) need(dinp, ni * sizeof(float)); // read by beta = 1
    if (bw != 0.0f) need(dw, nw * sizeof(float));
    wrote(dinp, ni * sizeof(float));
    wrote(dw, nw * sizeof(float));
    if (fast_gemm) {
        need(w, nw * sizeof(float)), need(inp, ni * sizeof(float));
        need(dout, (size_t)N * OC * sizeof(float));
        if (dinp) gemm_fast(CUBLAS_OP_N, CUBLAS_OP_N, IC, N, OC, w, IC, dout, OC, bi, dinp, IC);
        if (dw) gemm_fast(CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, N, inp, IC, dout, OC, bw, dw, IC);
        return;
    }
    const uint16_t *db = to_bf16(SCRATCH_BF16_C, dout, (size_t)N * OC); // shared by both products
    if (dinp) {
        const uint16_t *wb = to_bf16(SCRATCH_BF16_B, w, nw);
        Shadow *so = bi == 0.0f ? gemm_out(dinp, ni, dout, (size_t)N * OC * sizeof(float), w,
                                           nw * sizeof(float)) : NULL;
        if (so && dw && overlap(dinp, ni * sizeof(float), inp, ni * sizeof(float))) so = NULL;
        gemm_bf16(CUBLAS_OP_N, CUBLAS_OP_N, IC, N, OC, wb, IC, db, OC, bi, dinp, IC,
                  so ? so->b : NULL);
        if (so) so->valid = so->own = 1;
    }
    if (dw) {
        const uint16_t *ib = to_bf16(SCRATCH_BF16_A, inp, ni);
        gemm_bf16(CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, N, ib, IC, db, OC, bw, dw, IC);
    }
}

// ---- grouped backward products (header, "Grouped products") ----
//
// matmul_bwd calls in a row that add into the same dinp from the same inp (the LM's dln from dq,
// dk, dv; from dgate, dup) are deferred and run as one dinp product with K = the sum of their OC:
// the gradients are column blocks of one [N, K] bf16 matrix, the weights stacked [K, IC]; then
// each weight gradient reads its column block. Always so, with or without shadows (the same bits
// with MSLAB_BF16_CACHE=0): with shadows the blocks are the gradients' and weights' shadows, moved
// there once, after which rope_bwd / swiglu_bwd write straight into them (strided copies) and
// AdamW into the stacked weights; without, a scratch copy per call. Every op runs a pending group
// first (OpTrace, flush_add, flush_range).
#define GRP_MAX 4
struct GrpM { float *dw; const float *dout, *w; int OC; };
static struct {
    int k;
    float *dinp;
    const float *inp;
    int N, IC;
    GrpM m[GRP_MAX];
} grp;
static int grp_on = 1; // MSLAB_BF16_GROUP=0: off
static int grp_pending(void) { return grp.k; }
static int grp_join(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                    int N, int IC, int OC) {
    if (!grp_on || fast_gemm || !dinp || !dw || N <= 0 || IC <= 0 || OC <= 0) return 0;
    size_t ni = (size_t)N * IC * 4, no = (size_t)N * OC * 4, nw = (size_t)OC * IC * 4;
    const void *op[3] = {dout, w, inp};
    size_t ob[3] = {no, nw, ni};
    for (int i = 0; i < 3; i++) // every write apart from every read and the other writes
        if (overlap(dinp, ni, op[i], ob[i]) || overlap(dw, nw, op[i], ob[i])) return 0;
    if (overlap(dinp, ni, dw, nw)) return 0;
    int join = grp.k && grp.k < GRP_MAX && grp.dinp == dinp && grp.inp == inp && grp.N == N &&
               grp.IC == IC;
    for (int j = 0; join && j < grp.k; j++) { // apart from the members' writes and operands
        size_t mw = (size_t)grp.m[j].OC * IC * 4, mo = (size_t)N * grp.m[j].OC * 4;
        join = !overlap(dw, nw, grp.m[j].dw, mw) && !overlap(dout, no, grp.m[j].dw, mw) &&
               !overlap(w, nw, grp.m[j].dw, mw) && !overlap(dout, no, grp.m[j].dout, mo) &&
               !overlap(w, nw, grp.m[j].w, mw) && !overlap(dw, nw, grp.m[j].dout, mo) &&
               !overlap(dw, nw, grp.m[j].w, mw);
    }
    if (!join) {
        flush_grp();
        grp.dinp = dinp, grp.inp = inp, grp.N = N, grp.IC = IC;
    }
    grp.m[grp.k++] = {dw, dout, w, OC};
    return 1;
}
// The pieces (fp32 arrays of rows x rl) placed at pos in one bf16 buffer with rows ld apart: their
// shadows, moved into one block once (kept there), else (no shadows) scratch slot `slot`.
struct Piece { const float *p; size_t rows, rl, pos; };
static void fill_piece(uint16_t *dst, size_t ld, const Piece &pc, const Shadow *s) {
    if (s && s->valid) { // (s may be strided too)
        cuda_bf16_copy2d(dst, ld, s->b, s->rl ? s->ld : pc.rl, pc.rl, pc.rows);
        return;
    }
    size_t n = pc.rows * pc.rl;
    need_conv(NB(pc.p, n));
    if (ld == pc.rl) {
        cuda_f32_to_bf16(dst, pc.p, n);
        return;
    }
    uint16_t *t = (uint16_t *)cuda_scratch(SCRATCH_BF16_F, n * sizeof(uint16_t));
    cuda_f32_to_bf16(t, pc.p, n);
    cuda_bf16_copy2d(dst, ld, t, pc.rl, pc.rl, pc.rows);
}
static uint16_t *gather(int slot, const Piece *pc, int k, size_t ld, size_t total) {
    int ok = cache_on;
    for (int i = 0; i < k && ok; i++) ok = shadow_make(pc[i].p, pc[i].rows * pc[i].rl) != NULL;
    Shadow *s[GRP_MAX]; // (found after the makes: a make may move the table)
    for (int i = 0; i < k; i++) s[i] = shadow_find(pc[i].p, pc[i].rows * pc[i].rl);
    int b = ok ? s[0]->blk : -1;
    uint16_t *base = b >= 0 ? (uint16_t *)blks[b].mem : NULL;
    int in = b >= 0 && blks[b].bytes == shadow_size(total);
    for (int i = 0; i < k && in; i++) { // already there: fill the stale ones in place
        size_t srl = ld == pc[i].rl ? 0 : pc[i].rl;
        in = s[i]->blk == b && s[i]->b == base + pc[i].pos && s[i]->rl == srl &&
             (!srl || s[i]->ld == ld);
    }
    if (in) {
        for (int i = 0; i < k; i++)
            if (!s[i]->valid) fill_piece(base + pc[i].pos, ld, pc[i], NULL), s[i]->valid = 1;
        return base;
    }
    size_t bytes = shadow_size(total);
    base = NULL;
    if (ok && shadow_bytes + bytes <= shadow_budget && cudaMalloc(&base, bytes) != cudaSuccess)
        (void)cudaGetLastError(), base = NULL;
    if (!base) { // a scratch copy (the same layout: the same products)
        base = (uint16_t *)cuda_scratch(slot, bytes);
        for (int i = 0; i < k; i++) fill_piece(base + pc[i].pos, ld, pc[i], s[i]);
        return base;
    }
    for (b = 0; b < n_blks && blks[b].mem; b++) {}
    if (b == n_blks) {
        blks = (Blk *)realloc(blks, ++n_blks * sizeof(Blk));
        MS_ASSERT(blks, "out of memory");
    }
    blks[b] = {base, bytes, k};
    shadow_bytes += bytes;
    for (int i = 0; i < k; i++) { // move each shadow there (its value kept: own stays own)
        fill_piece(base + pc[i].pos, ld, pc[i], s[i]);
        int own = s[i]->valid && s[i]->own;
        release_b(s[i]);
        s[i]->b = base + pc[i].pos, s[i]->blk = b, s[i]->valid = 1, s[i]->own = own;
        s[i]->rl = ld == pc[i].rl ? 0 : pc[i].rl, s[i]->ld = ld == pc[i].rl ? 0 : ld;
    }
    return base;
}
static size_t grp_runs; // products that ran as a group of >= 2 (the tests check grouping happened)
static void grp_run(void) {
    int k = grp.k;
    grp.k = 0;
    grp_runs += k > 1;
    if (k == 1) {
        TRACE("matmul_bwd", grp.IC * 100000LL + grp.m[0].OC);
        mm_bwd(grp.dinp, grp.m[0].dw, grp.m[0].dout, grp.inp, grp.m[0].w, grp.N, grp.IC, grp.m[0].OC);
        return;
    }
    float *dinp = grp.dinp;
    const float *inp = grp.inp;
    int N = grp.N, IC = grp.IC;
    GrpM m[GRP_MAX];
    memcpy(m, grp.m, sizeof m);
    size_t K = 0, off[GRP_MAX], ni = (size_t)N * IC;
    for (int i = 0; i < k; i++) off[i] = K, K += m[i].OC;
    TRACE("matmul_bwd", IC * 100000LL + (long long)K);
    float bi = take_zero(dinp, ni) ? 0.0f : 1.0f, bw[GRP_MAX];
    for (int i = 0; i < k; i++) bw[i] = take_zero(m[i].dw, (size_t)m[i].OC * IC) ? 0.0f : 1.0f;
    if (bi != 0.0f) need(NB(dinp, ni));
    for (int i = 0; i < k; i++)
        if (bw[i] != 0.0f) need(NB(m[i].dw, (size_t)m[i].OC * IC));
    wrote(NB(dinp, ni));
    for (int i = 0; i < k; i++) wrote(NB(m[i].dw, (size_t)m[i].OC * IC));
    Piece g[GRP_MAX], wp[GRP_MAX];
    for (int i = 0; i < k; i++) {
        g[i] = {m[i].dout, (size_t)N, (size_t)m[i].OC, off[i]};
        wp[i] = {m[i].w, (size_t)m[i].OC, (size_t)IC, off[i] * IC};
    }
    const uint16_t *G = gather(SCRATCH_BF16_C, g, k, K, (size_t)N * K);
    const uint16_t *W = gather(SCRATCH_BF16_B, wp, k, IC, K * IC);
    Shadow *so = bi == 0.0f ? gemm_out(dinp, ni, NULL, 0, NULL, 0) : NULL;
    gemm_bf16(CUBLAS_OP_N, CUBLAS_OP_N, IC, N, (int)K, W, IC, G, (int)K, bi, dinp, IC,
              so ? so->b : NULL);
    if (so) so->valid = so->own = 1;
    const uint16_t *ib = to_bf16(SCRATCH_BF16_A, inp, ni);
    for (int i = 0; i < k; i++)
        gemm_bf16(CUBLAS_OP_N, CUBLAS_OP_T, IC, m[i].OC, N, ib, IC, G + off[i], (int)K, bw[i],
                  m[i].dw, IC);
}
static void bf16_matmul_bwd(float *dinp, float *dw, const float *dout, const float *inp,
                            const float *w, int N, int IC, int OC) {
    if (grp_join(dinp, dw, dout, inp, w, N, IC, OC)) return; // deferred (traced when it runs)
    TRACE("matmul_bwd", IC * 100000LL + OC);
    mm_bwd(dinp, dw, dout, inp, w, N, IC, OC);
}

// ---- attention adapters ----
//
// Slots: A = q | k | v, B = out, C = dout, D = dq | dk | dv (bf16). A shape the bf16 kernels do not
// handle (they return -1 having launched nothing) runs the fp32 kernel on the fp32 operands; the
// first such call per op says so on stderr, so a run never silently changes precision. One adapter
// per direction for the dense (ix NULL) and the sparse op.

static void note_fallback(const char *op, int B, int T, int H, int KVH, int D) {
    static int said[5];
    int i = !strcmp(op, "attention_fwd") ? 0 : !strcmp(op, "attention_bwd") ? 1
          : !strcmp(op, "sparse_attention_fwd") ? 2 : !strcmp(op, "sparse_attention_bwd") ? 3 : 4;
    n_fallbacks++;
    if (said[i]) return;
    said[i] = 1;
    fprintf(stderr, "cuda-bf16: %s: no bf16 kernel for B=%d T=%d H=%d KVH=%d D=%d; running it in "
            "fp32 (later calls not reported)\n", op, B, T, H, KVH, D);
}

// Arrays carved from one slot start at 256-byte boundaries (the kernels' vector loads).
static size_t up128(size_t n) { return (n + 127) & ~(size_t)127; }

struct QKV { uint16_t *q, *k, *v; };
static QKV qkv_bf16(const float *q, const float *k, const float *v, size_t nq, size_t nk) {
    Shadow *sq = shadow_make(q, nq), *sk = sq ? shadow_make(k, nk) : NULL, *sv = sk ? shadow_make(v, nk) : NULL;
    if (sv) sq = shadow_find(q, nq), sk = shadow_find(k, nk); // (a make may move the table)
    // reused by the backward; a strided shadow would come back gathered into slot A, so three of
    // them would overwrite each other (the LM's q / k / v are never a group's column blocks)
    if (sv && !sq->rl && !sk->rl && !sv->rl) {
        QKV r = {(uint16_t *)to_bf16(SCRATCH_BF16_A, q, nq), (uint16_t *)to_bf16(SCRATCH_BF16_A, k, nk),
                 (uint16_t *)to_bf16(SCRATCH_BF16_A, v, nk)};
        return r;
    }
    need_conv(q, nq * sizeof(float)), need_conv(k, nk * sizeof(float));
    need_conv(v, nk * sizeof(float));
    uint16_t *base =
        (uint16_t *)cuda_scratch(SCRATCH_BF16_A, (up128(nq) + 2 * up128(nk)) * sizeof(uint16_t));
    QKV r = {base, base + up128(nq), base + up128(nq) + up128(nk)};
    cuda_f32_to_bf16(r.q, q, nq);
    cuda_f32_to_bf16(r.k, k, nk);
    cuda_f32_to_bf16(r.v, v, nk);
    return r;
}
static void need_qkv(const float *q, const float *k, const float *v, size_t nq, size_t nk) {
    need(q, nq * sizeof(float)), need(k, nk * sizeof(float)), need(v, nk * sizeof(float));
}

// The forward's out is the kernel's bf16 out widened (exact): with acts the kernel writes it into
// out's shadow and the table keeps it there (own), else into slot B, widened into out.
static void bf16_attn_fwd(float *out, float *lse, const float *q, const float *k, const float *v,
                          const AttnIndex *ix, int B, int T, int H, int KVH, int D) {
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D;
    if (!nq) return;
    QKV x = qkv_bf16(q, k, v, nq, nk);
    Shadow *so = acts_on ? shadow_make(out, nq) : NULL;
    uint16_t *ob = so ? so->b : (uint16_t *)cuda_scratch(SCRATCH_BF16_B, nq * sizeof(uint16_t));
    int r = ix ? attn_bf16_sparse_fwd(ob, lse, x.q, x.k, x.v, ix, B, T, H, KVH, D)
               : attn_bf16_dense_fwd(ob, lse, x.q, x.k, x.v, B, T, H, KVH, D);
    if (r != 0) {
        note_fallback(ix ? "sparse_attention_fwd" : "attention_fwd", B, T, H, KVH, D);
        need_qkv(q, k, v, nq, nk);
        if (ix) cuda_sparse_attention_fwd(out, lse, q, k, v, ix, B, T, H, KVH, D);
        else cuda_attention_fwd(out, lse, q, k, v, B, T, H, KVH, D);
        return;
    }
    if (so) so->valid = so->own = 1;
    else cuda_bf16_to_f32(out, ob, nq);
}

// The backward's gradients dq, dk, dv (index 0, 1, 2): the kernels return them in bf16,
// overwritten. z: the gradient was a deferred zero (taken by the wrapper), so the bf16 result is
// its exact value: with acts kept in the array's shadow alone (own), else widened into it; a
// gradient that was not zero gets the result added (ops.h's +=).
struct Grads {
    float *f[3];
    size_t n[3];
    int z[3];
};
static Grads grads_take(float *dq, float *dk, float *dv, size_t nq, size_t nk) {
    Grads g = {{dq, dk, dv}, {nq, nk, nk}, {0, 0, 0}};
    if (dq != dk && dq != dv && dk != dv) // (aliased gradients: added in turn, as the fp32 op)
        for (int i = 0; i < 3; i++) g.z[i] = g.n[i] && take_zero(g.f[i], g.n[i]);
    return g;
}
static void bf16_attn_bwd(const Grads &g, const float *dout, const float *out, const float *lse,
                          const float *q, const float *k, const float *v, const AttnIndex *ix,
                          int B, int T, int H, int KVH, int D) {
    size_t nq = g.n[0], nk = g.n[1];
    if (!nq) return;
    QKV x = qkv_bf16(q, k, v, nq, nk);
    const uint16_t *ob = to_bf16(SCRATCH_BF16_B, out, nq);
    const uint16_t *gb = to_bf16(SCRATCH_BF16_C, dout, nq);
    uint16_t *base =
        (uint16_t *)cuda_scratch(SCRATCH_BF16_D, (up128(nq) + 2 * up128(nk)) * sizeof(uint16_t));
    uint16_t *b[3] = {base, base + up128(nq), base + up128(nq) + up128(nk)};
    Shadow *sh[3] = {NULL, NULL, NULL};
    for (int i = 0; i < 3; i++) // (made first, then found: a make may move the table)
        if (acts_on && g.z[i]) shadow_make(g.f[i], g.n[i]);
    for (int i = 0; i < 3; i++) // a strided shadow (a group's column block) takes a copy below
        if (acts_on && g.z[i] && (sh[i] = shadow_find(g.f[i], g.n[i])) && !sh[i]->rl) b[i] = sh[i]->b;
    int r = ix ? attn_bf16_sparse_bwd(b[0], b[1], b[2], gb, ob, lse, x.q, x.k, x.v, ix, B, T, H,
                                      KVH, D)
               : attn_bf16_dense_bwd(b[0], b[1], b[2], gb, ob, lse, x.q, x.k, x.v, B, T, H, KVH, D);
    if (r != 0) {
        note_fallback(ix ? "sparse_attention_bwd" : "attention_bwd", B, T, H, KVH, D);
        for (int i = 0; i < 3; i++)
            if (g.z[i]) cudaCheck(cudaMemsetAsync(g.f[i], 0, g.n[i] * sizeof(float), 0));
        need_qkv(q, k, v, nq, nk);
        need(out, nq * sizeof(float)), need(dout, nq * sizeof(float));
        if (ix) cuda_sparse_attention_bwd(g.f[0], g.f[1], g.f[2], dout, out, lse, q, k, v, ix, B, T,
                                          H, KVH, D);
        else cuda_attention_bwd(g.f[0], g.f[1], g.f[2], dout, out, lse, q, k, v, B, T, H, KVH, D);
        return;
    }
    for (int i = 0; i < 3; i++) {
        if (sh[i] && sh[i]->rl)
            cuda_bf16_copy2d(sh[i]->b, sh[i]->ld, b[i], sh[i]->rl, sh[i]->rl, g.n[i] / sh[i]->rl);
        if (sh[i]) sh[i]->valid = sh[i]->own = 1;
        else if (g.z[i]) cuda_bf16_to_f32(g.f[i], b[i], g.n[i]);
        else cuda_bf16_add_to_f32(g.f[i], b[i], g.n[i]);
    }
}

// The selection scores bf16 q / k like the attention that follows (select_bf16: the fp32 op's list
// on the rounded operands, with fast paths for ms mean / dot / region / rank and moba that the fp32
// op lacks: at merge 128 x top 512 the fp32 selection dominated a training step). Slot E.
// q / k come from their shadows where the table has them (s14: the LM's roped q / k are kept in
// bf16 only, so reading them as fp32 first materialised both and converted them back: LM row 1's
// select 739 -> 594 us a layer, s14 r2; the shadows made here are the ones the attention reads).
static void bf16_attention_select(AttnIndex *ix, const struct AttnConfig *cfg, const float *q,
                                  const float *k, int B, int T, int H, int KVH, int D) {
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D;
    Shadow *sq = shadow_make(q, nq), *sk = sq ? shadow_make(k, nk) : NULL;
    sq = sk ? shadow_find(q, nq) : NULL; // (made first, then found: a make may move the table)
    const uint16_t *qb, *kb;
    if (sk && sq && !sq->rl && !sk->rl) {
        qb = to_bf16(SCRATCH_BF16_E, q, nq), kb = to_bf16(SCRATCH_BF16_E, k, nk);
    } else { // no shadows (cache off, budget) or a strided one: both converted into slot E
        need_conv(q, nq * sizeof(float)), need_conv(k, nk * sizeof(float));
        uint16_t *b = (uint16_t *)cuda_scratch(SCRATCH_BF16_E, (up128(nq) + up128(nk) + 1) * 2);
        cuda_f32_to_bf16(b, q, nq);
        cuda_f32_to_bf16(b + up128(nq), k, nk);
        qb = b, kb = b + up128(nq);
    }
    if (select_bf16(ix, cfg, qb, kb, B, T, H, KVH, D) != 0) {
        note_fallback("attention_select", B, T, H, KVH, D);
        need(q, nq * sizeof(float)), need(k, nk * sizeof(float));
        cuda_attention_select(ix, cfg, q, k, B, T, H, KVH, D);
    }
}

// ---- the table: every op goes through the state above ----
//
// Each op runs the deferred zeros it does not consume (flush_zeros) and marks what it writes
// (wrote), so a shadow is valid only while no op of this table wrote its array since it was made.

static Backend fp; // the fp32 table's ops

// Rounding readers (header, "Rounding readers"): an input that the op reads rounded to bf16 is
// read from its valid shadow when it has one, else from the fp32 array (the own shadows over it
// widened first), rounded in the kernel; no fp32 read is recorded, and with acts the array gets a
// shadow (stale until written), so that the GEMM that writes it next writes bf16 (gemm_out).
static BfIn rnd_in(const float *p, size_t n) {
    BfIn r = {p, NULL, 1};
    if (!p || !n) return r;
    if (!rnd_on) {
        need(NB(p, n));
        r.rnd = 0;
        return r;
    }
    // An array an fp32 consumer has read (a download, an fp32 operand) keeps its fp32 value:
    // the GEMM that writes it writes fp32 (gemm_out), so a new shadow would stay stale and only
    // take cache budget (the logits of a run that downloads them: ~2 GB).
    Shadow *s = shadow_find(p, n);
    if (!s && acts_on && !f32_was_read(p, n * sizeof(float))) s = shadow_make(p, n);
    if (s && s->valid && !s->rl) r.b = s->b;
    else need_conv(NB(p, n));
    return r;
}
static void *w_alloc(size_t bytes) {
    flush_zeros();
    void *p = fp.alloc(bytes);
    for (int i = 0; i < n_shadows; i++) // memory a shadow still names was freed outside this table
        if (overlap(shadows[i].p, shadows[i].n * sizeof(float), p, bytes))
            shadows[i].valid = shadows[i].own = 0;
    ce_wrote(p, bytes);
    f32_forget(p, bytes);
    up_wrote(p, bytes);
    if (n_allocs == cap_allocs) {
        cap_allocs = cap_allocs ? 2 * cap_allocs : 256;
        allocs = (Alloc *)realloc(allocs, cap_allocs * sizeof(Alloc));
        MS_ASSERT(allocs, "out of memory");
    }
    allocs[n_allocs++] = {p, bytes};
    return p;
}
static void w_free(void *p) {
    if (!p) return;
    flush_zeros();
    size_t bytes = 0;
    int known = 0;
    for (int i = n_allocs - 1; i >= 0; i--)
        if (allocs[i].p == p) {
            bytes = allocs[i].bytes, known = 1;
            allocs[i] = allocs[--n_allocs];
            break;
        }
    if (!known) materialize_all(); // not ours: drop every shadow, keeping the arrays' values
    if (known) f32_forget(p, bytes);
    wrote(p, known ? bytes : 1);    // (the cross-entropy's gradient over freed logits / targets)
    if (!known) ce.valid = 0, up_forget();
    for (int i = n_shadows - 1; i >= 0; i--)
        if (!known || overlap(shadows[i].p, shadows[i].n * sizeof(float), p, bytes)) drop_shadow(i);
    fp.free(p);
}
static void w_upload(void *dst, const void *src, size_t bytes) {
    TRACE("upload", bytes >> 10);
    flush_add();
    if (!bytes) return;
    if (bytes > UP_MAX) {
        wrote(dst, bytes);
        fp.upload(dst, src, bytes);
        return;
    }
    UpRec *r = NULL;
    for (int i = 0; i < UP_RECS && !r; i++)
        if (ups[i].dst == dst && ups[i].bytes == bytes) r = &ups[i];
    if (r && r->valid && !memcmp(r->h, src, bytes)) return; // the device holds these bytes
    wrote(dst, bytes);
    if (!r) {
        r = &ups[up_next];
        up_next = (up_next + 1) % UP_RECS;
        r->dst = dst, r->bytes = bytes;
    }
    if (r->ev) cudaCheck(cudaEventSynchronize(r->ev)); // its last copy has left r->h
    else cudaCheck(cudaEventCreateWithFlags(&r->ev, cudaEventDisableTiming));
    if (r->cap < bytes) {
        if (r->h) cudaCheck(cudaFreeHost(r->h));
        cudaCheck(cudaMallocHost(&r->h, bytes));
        r->cap = bytes;
    }
    memcpy(r->h, src, bytes);
    cudaCheck(cudaMemcpyAsync(dst, r->h, bytes, cudaMemcpyHostToDevice, 0));
    cudaCheck(cudaEventRecord(r->ev, 0));
    r->valid = 1;
}
static void w_download(void *dst, const void *src, size_t bytes) {
    TRACE("download", bytes >> 10);
    flush_add();
    need(src, bytes);
    fp.download(dst, src, bytes);
}
// Deferred by range (the file header's "Deferred zeros"): an op that overwrites part of a recorded
// zero takes that part (a GEMM with beta 0, a += gradient op that skips reading it); any other op
// touching it runs the memset of what it touches first.
static void w_zero(float *x, size_t n) {
    TRACE("zero", 0);
    if (!n) return;
    if (pscale.x && x <= pscale.x && pscale.x + pscale.n <= x + n) pscale.x = NULL; // overwritten
    if (pend.out) { // the deferred add first (program order), not the deferred scale
        float *k = pscale.x;
        pscale.x = NULL;
        flush_add();
        pscale.x = k;
    }
    wrote(NB(x, n));
    if (!lazy_on || n_zeros == MAX_ZEROS) flush_zeros();
    if (!lazy_on) {
        fp.zero(x, n);
        return;
    }
    zeros[n_zeros].p = x, zeros[n_zeros].n = n;
    n_zeros++;
}
static void w_copy(float *dst, const float *src, size_t n) {
    TRACE("copy", 0);
    flush_add();
    need(NB(src, n));
    wrote(NB(dst, n));
    fp.copy(dst, src, n);
}
// Deferred (addnorm): a residual add followed by the rmsnorm_fwd of its sum runs as one kernel
// (the sum written on the way, the same bits); any other next op runs it first.
static void w_add(float *out, const float *a, const float *b, size_t n) {
    TRACE("add", 0);
    flush_add();
    need(NB(a, n)), need(NB(b, n));
    wrote(NB(out, n));
    if (addnorm_on && n) pend.out = out, pend.a = a, pend.b = b, pend.n = n;
    else fp.add(out, a, b, n);
}
static void w_scale(float *x, float sc, size_t n) {
    TRACE("scale", 0);
    flush_add();
    need(NB(x, n));
    wrote(NB(x, n));
    if (lazy_on && n) pscale.x = x, pscale.s = sc, pscale.n = n;
    else fp.scale(x, sc, n);
}
static double w_sumsq(const float *x, size_t n) {
    TRACE("sumsq", 0);
    flush_add();
    need(NB(x, n));
    return fp.sumsq(x, n);
}
static void w_embedding_fwd(float *out, const int *tok, const float *wte, int N, int C) {
    OpTrace trace_op_("embedding_fwd", 0, 1);
    flush_add();
    flush_range(tok, (size_t)(N > 0 ? N : 0) * sizeof(int));
    need(wte, extent(wte)); // rows up to the largest token
    if (N > 0 && C > 0) wrote(NB(out, (size_t)N * C));
    fp.embedding_fwd(out, tok, wte, N, C);
}
static void w_embedding_bwd(float *dwte, const float *dout, const int *tok, int N, int C) {
    TRACE("embedding_bwd", 0);
    flush_add();
    flush_range(tok, (size_t)(N > 0 ? N : 0) * sizeof(int));
    if (N > 0 && C > 0) need(NB(dout, (size_t)N * C));
    need(dwte, extent(dwte));
    wrote(dwte, extent(dwte));
    fp.embedding_bwd(dwte, dout, tok, N, C);
}
static void w_rmsnorm_fwd(float *out, float *rstd, const float *inp, const float *w, int N, int C,
                          float eps) {
    TRACE("rmsnorm_fwd", 0);
    size_t n = (size_t)(N > 0 ? N : 0) * (C > 0 ? C : 0);
    const float *ra = NULL, *rb = NULL; // the deferred add whose sum is inp: fused
    if (pend.out && pend.out == inp && pend.n == n && n) { // (no zero came after the add: w_zero)
        const void *outs[2] = {out, rstd};
        size_t ob[2] = {n * sizeof(float), (size_t)N * sizeof(float)};
        int clash = 0; // the fused kernel reads a, b and writes the sum, out, rstd
        for (int i = 0; i < 2; i++)
            clash |= overlap(outs[i], ob[i], pend.a, n * 4) || overlap(outs[i], ob[i], pend.b, n * 4) ||
                     overlap(outs[i], ob[i], pend.out, n * 4) || overlap(w, C * 4, outs[i], ob[i]);
        if (!clash) ra = pend.a, rb = pend.b, pend.out = NULL;
    }
    flush_add();
    if (N <= 0) return;
    need(NB(inp, n)), need(NB(w, C));
    wrote(NB(out, n));
    wrote(NB(rstd, N));
    Dst d = dest(out, n, acts_on);
    if (ra) cuda_rmsnorm_fwd_x(d.f, d.b, rstd, ra, rb, (float *)inp, w, N, C, eps);
    else cuda_rmsnorm_fwd_x(d.f, d.b, rstd, inp, NULL, NULL, w, N, C, eps);
    done(d);
}
static void w_rmsnorm_bwd(float *dinp, float *dw, const float *dout, const float *inp,
                          const float *w, const float *rstd, int N, int C) {
    TRACE("rmsnorm_bwd", 0);
    size_t n = (size_t)(N > 0 ? N : 0) * (C > 0 ? C : 0);
    int acc = !(dinp && n && take_zero(dinp, n));
    int dw_acc = !(dw && n && dw != dinp && take_zero(dw, C)); // (a slice of the gradients' zero)
    flush_add();
    if (!n) return;
    need(NB(dout, n)), need(NB(inp, n)), need(NB(w, C)), need(NB(rstd, N));
    if (acc) need(NB(dinp, n));
    if (dw && dw_acc) need(NB(dw, C));
    wrote(NB(dinp, n));
    wrote(NB(dw, C));
    Dst d = dest(dinp, n, 0); // the residual stream's gradient stays fp32
    cuda_rmsnorm_bwd_x(dinp, d.b, acc, dw, dw_acc, dout, inp, w, rstd, N, C);
    done(d);
}
static void w_rope_fwd(float *out, const float *inp, const float *pos, const float *inv_freq,
                       int N, int H, int D, int style) {
    TRACE("rope_fwd", H);
    flush_add();
    size_t n = (size_t)(N > 0 ? N : 0) * (H > 0 ? H : 0) * (D > 0 ? D : 0);
    need(NB(pos, N > 0 ? N : 0)), need(NB(inv_freq, D > 0 ? D / 2 : 0));
    BfIn in = rnd_in(inp, n);
    wrote(NB(out, n));
    Dst d = dest(out, n, acts_on);
    cuda_rope_fwd_x(d.f, d.b, in, pos, inv_freq, N, H, D, style);
    done(d);
}
static void w_rope_bwd(float *dinp, const float *dout, const float *pos, const float *inv_freq,
                       int N, int H, int D, int style) {
    TRACE("rope_bwd", H);
    size_t n = (size_t)(N > 0 ? N : 0) * (H > 0 ? H : 0) * (D > 0 ? D : 0);
    int acc = !(n && D % 2 == 0 && take_zero(dinp, n));
    flush_add();
    // dout kept in bf16 only (the attention backward's dq / dk): read as bf16, it is the value
    Shadow *si = n ? shadow_find(dout, n) : NULL;
    const uint16_t *dob = si && si->own && !si->rl ? si->b : NULL;
    if (!dob) need(NB(dout, n));
    else flush_range(NB(dout, n)); // (an own shadow: no zero there)
    need(NB(pos, n ? N : 0)), need(NB(inv_freq, n ? D / 2 : 0));
    if (acc) need(NB(dinp, n));
    wrote(NB(dinp, n));
    Dst d = dest(dinp, n, acts_on && !acc, 1); // (a group's column block: token rows ld apart)
    if (d.rl && d.rl != (size_t)H * D) d = dest(dinp, n, acts_on && !acc);
    cuda_rope_bwd_x(d.f, d.b, d.rl ? d.ld : 0, acc, dout, dob, pos, inv_freq, N, H, D, style);
    done(d);
}
static void w_attention_fwd(float *out, float *lse, const float *q, const float *k, const float *v,
                            int B, int T, int H, int KVH, int D) {
    TRACE("attention_fwd", 0);
    flush_add();
    wrote(NB(out, (size_t)B * T * H * D));
    wrote(NB(lse, (size_t)B * H * T));
    bf16_attn_fwd(out, lse, q, k, v, NULL, B, T, H, KVH, D);
}
// The gradients: deferred zeros taken first (overwritten), then the state as every op.
static Grads attn_grads(float *dq, float *dk, float *dv, const float *lse, int B, int T, int H,
                        int KVH, int D) {
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D;
    Grads g = grads_take(dq, dk, dv, nq, nk);
    flush_add();
    need(NB(lse, (size_t)B * H * T));
    for (int i = 0; i < 3; i++) {
        if (!g.z[i]) need(NB(g.f[i], g.n[i]));
        wrote(NB(g.f[i], g.n[i]));
    }
    return g;
}
static void w_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *out,
                            const float *lse, const float *q, const float *k, const float *v,
                            int B, int T, int H, int KVH, int D) {
    TRACE("attention_bwd", 0);
    Grads g = attn_grads(dq, dk, dv, lse, B, T, H, KVH, D);
    bf16_attn_bwd(g, dout, out, lse, q, k, v, NULL, B, T, H, KVH, D);
}
static void w_sparse_fwd(float *out, float *lse, const float *q, const float *k, const float *v,
                         const AttnIndex *ix, int B, int T, int H, int KVH, int D) {
    TRACE("sparse_fwd", 0);
    flush_zeros();
    wrote(NB(out, (size_t)B * T * H * D));
    wrote(NB(lse, (size_t)B * H * T));
    bf16_attn_fwd(out, lse, q, k, v, ix, B, T, H, KVH, D);
}
static void w_sparse_bwd(float *dq, float *dk, float *dv, const float *dout, const float *out,
                         const float *lse, const float *q, const float *k, const float *v,
                         const AttnIndex *ix, int B, int T, int H, int KVH, int D) {
    TRACE("sparse_bwd", 0);
    Grads g = attn_grads(dq, dk, dv, lse, B, T, H, KVH, D);
    bf16_attn_bwd(g, dout, out, lse, q, k, v, ix, B, T, H, KVH, D);
}
static void w_select(AttnIndex *ix, const struct AttnConfig *cfg, const float *q, const float *k,
                     int B, int T, int H, int KVH, int D) {
    TRACE("select", 0);
    flush_zeros();
    if (select_fn != bf16_attention_select) // (the bf16 one reads the shadows: it needs fp32 only to fall back)
        need(NB(q, (size_t)B * T * H * D)), need(NB(k, (size_t)B * T * KVH * D));
    size_t nb = (size_t)B * H * (ix->nblk > 0 ? ix->nblk : 0);
    wrote(ix->idx, nb * (ix->width > 0 ? ix->width : 0) * sizeof(int));
    wrote(ix->kpos, nb * (ix->width > 0 ? ix->width : 0) * sizeof(int));
    wrote(ix->qpos, nb * sizeof(int));
    select_fn(ix, cfg, q, k, B, T, H, KVH, D);
}
static void w_swiglu_fwd(float *out, const float *gate, const float *up, size_t n) {
    TRACE("swiglu_fwd", 0);
    flush_add();
    BfIn g = rnd_in(gate, n), u = rnd_in(up, n);
    wrote(NB(out, n));
    Dst d = dest(out, n, acts_on);
    cuda_swiglu_fwd_x(d.f, d.b, g, u, n);
    done(d);
}
static void w_swiglu_bwd(float *dgate, float *dup, const float *dout, const float *gate,
                         const float *up, size_t n) {
    TRACE("swiglu_bwd", 0);
    int acc = 1;
    if (n && dgate != dup) { // overwrite only when every gradient it writes is a deferred zero
        if ((!dgate || is_zero(dgate, n)) && (!dup || is_zero(dup, n))) {
            if (dgate) take_zero(dgate, n);
            if (dup) take_zero(dup, n);
            acc = 0;
        }
    }
    flush_add();
    if (acc) need(NB(dgate, n)), need(NB(dup, n));
    BfIn di = rnd_in(dout, n), gi = rnd_in(gate, n), ui = rnd_in(up, n);
    wrote(NB(dgate, n));
    wrote(NB(dup, n));
    int two = n && dgate != dup; // one buffer for both: no copies (the fp32 op's order)
    int bo = acts_on && !acc; // strided copies (a group's column blocks) when both have the same rows
    Dst g = dest(two ? dgate : NULL, n, bo, 1), u = dest(two ? dup : NULL, n, bo, 1);
    if (g.rl != u.rl || g.ld != u.ld)
        g = dest(two ? dgate : NULL, n, bo), u = dest(two ? dup : NULL, n, bo);
    cuda_swiglu_bwd_x(two ? g.f : dgate, two ? u.f : dup, g.b, u.b, g.rl, g.ld, acc, di, gi, ui, n);
    done(g), done(u);
}
// With acts (cefuse), the forward also writes the gradient the backward will be asked for: dloss
// = 1 / (rows with a target), the model's (core/model.c), rounded to bf16 as acts stores it. The
// backward that asks exactly that (the same logits, targets, dloss, a zeroed dlogits with a shadow)
// takes it by a pointer swap: no pass over the logits.
static void w_ce_fwd(float *losses, const float *logits, const int *targets, int N, int V) {
    TRACE("ce_fwd", 0);
    flush_add();
    flush_range(targets, (size_t)(N > 0 ? N : 0) * sizeof(int));
    size_t n = (size_t)(N > 0 ? N : 0) * (V > 0 ? V : 0);
    BfIn lg = rnd_in(logits, n);
    if (N > 0) wrote(NB(losses, N));
    ce.valid = 0;
    if (acts_on && cefuse_on && cache_on && n && cuda_crossentropy_regs(lg, V) &&
        !overlap(losses, N * sizeof(float), logits, n * sizeof(float))) {
        int nv = 0;
        const int *th = (const int *)up_host(targets, (size_t)N * sizeof(int));
        if (th) {
            for (int i = 0; i < N; i++) nv += th[i] >= 0;
        } else {
            int *t = (int *)malloc((size_t)N * sizeof(int));
            MS_ASSERT(t, "out of memory");
            fp.download(t, targets, (size_t)N * sizeof(int));
            for (int i = 0; i < N; i++) nv += t[i] >= 0;
            free(t);
        }
        size_t bytes = shadow_size(n);
        if (ce.b && ce.bytes != bytes) { // (another shape)
            cudaCheck(cudaFree(ce.b));
            shadow_bytes -= ce.bytes;
            ce.b = NULL, ce.bytes = 0;
        }
        set_budget();
        if (!ce.b && shadow_bytes + bytes <= shadow_budget) {
            if (cudaMalloc(&ce.b, bytes) == cudaSuccess) ce.bytes = bytes, shadow_bytes += bytes;
            else (void)cudaGetLastError(), ce.b = NULL;
        }
        if (ce.b && nv > 0) {
            float dloss = 1.0f / (float)nv;
            cuda_crossentropy_fwd_grad(losses, ce.b, lg, targets, dloss, N, V);
            ce.logits = logits, ce.targets = targets, ce.N = N, ce.V = V, ce.dloss = dloss;
            ce.valid = 1;
            return;
        }
    }
    cuda_crossentropy_fwd_x(losses, lg, targets, N, V);
}
static void w_ce_bwd(float *dlogits, const float *logits, const int *targets, float dloss, int N,
                     int V) {
    TRACE("ce_bwd", 0);
    size_t n = (size_t)(N > 0 ? N : 0) * (V > 0 ? V : 0);
    int acc = !(n && take_zero(dlogits, n));
    flush_add();
    flush_range(targets, (size_t)(N > 0 ? N : 0) * sizeof(int));
    if (!n) return;
    Shadow *s = NULL;
    if (ce.valid && !acc && acts_on && ce.logits == logits && ce.targets == targets && ce.N == N &&
        ce.V == V && ce.dloss == dloss && (s = shadow_find(dlogits, n)) && s->blk < 0 &&
        ce.bytes == shadow_size(n)) {
        wrote(NB(dlogits, n));
        uint16_t *b = s->b; // the forward's gradient becomes the shadow: dlogits kept in bf16 only
        s->b = ce.b, ce.b = b;
        s->valid = s->own = 1;
        ce.valid = 0;
        return;
    }
    if (acc) need(NB(dlogits, n));
    BfIn lg = rnd_in(logits, n);
    wrote(NB(dlogits, n));
    Dst d = dest(dlogits, n, acts_on && !acc && cuda_crossentropy_regs(lg, V));
    cuda_crossentropy_bwd_x(d.f, d.b, acc, lg, targets, dloss, N, V);
    done(d);
}
// The gradient read through a deferred clip scale over it (pscale: it stays deferred), and the
// shadows of the weights inside [p, p + n) (the per-layer slices the GEMMs read) written in the
// same pass: one launch per slice and per gap between slices.
static int shadow_addr_cmp(const void *a, const void *b) {
    const Shadow *x = *(Shadow *const *)a, *y = *(Shadow *const *)b;
    return x->p < y->p ? -1 : x->p > y->p;
}
static void w_adamw(float *p, const float *g, float *m, float *v, size_t n, float lr, float b1,
                    float b2, float eps, float wd, int t) {
    TRACE("adamw", n >> 20);
    float gs = 1.0f;
    int scaled = pscale.x && n && pscale.x <= g && g + n <= pscale.x + pscale.n &&
                 !overlap(pscale.x, pscale.n * 4, p, n * 4) &&
                 !overlap(pscale.x, pscale.n * 4, m, n * 4) && !overlap(pscale.x, pscale.n * 4, v, n * 4);
    float *keep = pscale.x;
    if (scaled) gs = pscale.s, pscale.x = NULL; // not run by the flush below
    flush_add();
    if (scaled) pscale.x = keep;
    need(NB(p, n)), need(NB(g, n)), need(NB(m, n)), need(NB(v, n));
    wrote(NB(p, n));
    wrote(NB(m, n));
    wrote(NB(v, n));
    static Shadow **in; // the shadows inside [p, p + n), by address
    static int cap;
    int k = 0;
    for (int i = 0; i < n_shadows; i++)
        if (covers(p, n * sizeof(float), &shadows[i]) && !shadows[i].rl) {
            if (k == cap) cap = cap ? 2 * cap : 64, in = (Shadow **)realloc(in, cap * sizeof *in);
            MS_ASSERT(in, "out of memory");
            in[k++] = &shadows[i];
        }
    if (k) qsort(in, k, sizeof *in, shadow_addr_cmp);
    size_t at = 0, from = 0; // parameters [0, at) placed, [0, from) launched
    AdamSegs sg = {};
    for (int i = 0; i <= k; i++) {
        size_t s0 = i < k ? (size_t)(in[i]->p - p) : n;
        if (i < k && s0 < at) continue; // overlaps the one before: left stale
        if (i == k || sg.n == ADAM_SEGS) { // launch [from, s0) with the ranges collected
            cuda_adamw_x(p + from, &sg, g + from, gs, m + from, v + from, s0 - from, lr, b1, b2,
                         eps, wd, t);
            from = s0, sg.n = 0;
        }
        if (i == k) break;
        sg.off[sg.n] = s0 - from, sg.len[sg.n] = in[i]->n, sg.b[sg.n++] = in[i]->b;
        in[i]->valid = 1; // (not own: the fp32 parameters are written too)
        at = s0 + in[i]->n;
    }
}
static void w_decode(float *out, const float *q, const float *k, const float *v, int Tq, int t0,
                     int H, int KVH, int D) {
    flush_zeros();
    if (Tq > 0) {
        need(NB(q, (size_t)Tq * H * D));
        need(NB(k, (size_t)(t0 + Tq) * KVH * D)), need(NB(v, (size_t)(t0 + Tq) * KVH * D));
        wrote(NB(out, (size_t)Tq * H * D));
    }
    fp.attention_decode(out, q, k, v, Tq, t0, H, KVH, D);
}

extern "C" const Backend *backend_cuda_bf16(void) {
    if (bf16_ready) return &bf16_table;
    const Backend *f = backend_cuda(); // device, cuBLAS handle; NULL with ms_error() set
    if (!f) return NULL;
    bf16_table = *f;
    fp = *f;
    bf16_table.name = "cuda-bf16";
    bf16_table.matmul_fwd = bf16_matmul_fwd;
    bf16_table.matmul_bwd = bf16_matmul_bwd;
    const char *sel = getenv("MSLAB_BF16_SELECT"); // "fp32": the fp32 selection on the fp32 q / k
    select_fn = sel && !strcmp(sel, "fp32") ? f->attention_select : bf16_attention_select;
    // attention_decode (inference) stays fp32
    const char *m = getenv("MSLAB_BF16_GEMM");
    fast_gemm = m && !strcmp(m, "fast");
    const char *c = getenv("MSLAB_BF16_CACHE"), *z = getenv("MSLAB_BF16_LAZY");
    cache_on = !(c && !strcmp(c, "0"));
    lazy_on = !(z && !strcmp(z, "0"));
    const char *ac = getenv("MSLAB_BF16_ACTS"), *an = getenv("MSLAB_BF16_ADDNORM");
    if (ac) acts_on = strcmp(ac, "0") != 0;
    addnorm_on = an ? strcmp(an, "0") != 0 : acts_on;
    const char *trs = getenv("MSLAB_BF16_TRACE");
    tr.step = trs ? atoi(trs) : 0;
    dbg_on = getenv("MSLAB_BF16_DEBUG") != NULL;
    const char *gr = getenv("MSLAB_BF16_GROUP");
    if (gr) grp_on = strcmp(gr, "0") != 0;
    const char *rn = getenv("MSLAB_BF16_RND");
    if (rn) rnd_on = strcmp(rn, "0") != 0;
    const char *cf = getenv("MSLAB_BF16_CE_FUSE");
    cefuse_on = cf ? strcmp(cf, "0") != 0 : 1;
    // every op through the state (the attention ops: the adapters above)
    Backend *b = &bf16_table;
    b->alloc = w_alloc, b->free = w_free, b->upload = w_upload, b->download = w_download;
    b->zero = w_zero, b->copy = w_copy, b->add = w_add, b->scale = w_scale, b->sumsq = w_sumsq;
    b->embedding_fwd = w_embedding_fwd, b->embedding_bwd = w_embedding_bwd;
    b->rmsnorm_fwd = w_rmsnorm_fwd, b->rmsnorm_bwd = w_rmsnorm_bwd;
    b->rope_fwd = w_rope_fwd, b->rope_bwd = w_rope_bwd;
    b->attention_fwd = w_attention_fwd, b->attention_bwd = w_attention_bwd;
    b->sparse_attention_fwd = w_sparse_fwd, b->sparse_attention_bwd = w_sparse_bwd;
    b->attention_select = select_fn ? w_select : NULL;
    b->swiglu_fwd = w_swiglu_fwd, b->swiglu_bwd = w_swiglu_bwd;
    b->crossentropy_fwd = w_ce_fwd, b->crossentropy_bwd = w_ce_bwd;
    b->adamw = w_adamw;
    b->attention_decode = f->attention_decode ? w_decode : NULL;
    bf16_ready = 1;
    return &bf16_table;
}

extern "C" void backend_cuda_bf16_fast_gemm(int on) { // (a pending group runs under the old setting)
    flush_grp();
    fast_gemm = on != 0;
}

extern "C" void backend_cuda_bf16_forget(void) { // called before the outside write
    flush_zeros();
    materialize_all();
    for (int i = 0; i < n_shadows; i++) shadows[i].valid = 0;
    ce.valid = 0;
    up_forget();
}

extern "C" void backend_cuda_bf16_set_state(int cache, int lazy) {
    flush_zeros();
    materialize_all();
    while (n_shadows) drop_shadow(n_shadows - 1);
    ce.valid = 0;
    if (ce.b) cudaCheck(cudaFree(ce.b)), shadow_bytes -= ce.bytes, ce.b = NULL, ce.bytes = 0;
    cache_on = cache != 0, lazy_on = lazy != 0;
}

extern "C" int backend_cuda_bf16_set_acts(int acts) {
    flush_zeros();
    materialize_all();
    ce.valid = 0;
    int was = acts_on;
    acts_on = acts != 0;
    const char *an = getenv("MSLAB_BF16_ADDNORM");
    addnorm_on = an ? strcmp(an, "0") != 0 : acts_on;
    return was;
}

extern "C" int backend_cuda_bf16_set_lt(int index) { // the tests' reference, measurements
    flush_grp();
    int was = lt_index;
    lt_index = index;
    return was;
}

extern "C" int backend_cuda_bf16_set_rnd(int rnd) { // (arrays kept in bf16 keep their values)
    ce.valid = 0; // (the forward's gradient was for the other reading of the logits)
    int was = rnd_on;
    rnd_on = rnd != 0;
    return was;
}

extern "C" int backend_cuda_bf16_set_group(int on) {
    flush_grp();
    int was = grp_on;
    grp_on = on != 0;
    return was;
}

extern "C" size_t backend_cuda_bf16_shadow_bytes(void) { return shadow_bytes; }
extern "C" size_t backend_cuda_bf16_group_runs(void) { return grp_runs; }

extern "C" int backend_cuda_bf16_fallbacks(void) { return n_fallbacks; }
