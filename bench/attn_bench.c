// attn_bench.c: the attention benchmark (issue 8; docs/bench.md). bf16, causal, batch 1, 32 heads,
// head dim 128: dense flash (cuda/flash_bf16.cu), MS at the paper config (w 16, top 512, merge 128)
// and MoBA-style (block 128, top = 1/16 of the blocks + its own) over the block-sparse kernels
// (cuda/sparse_bf16.cu), selection included, fwd and fwd+bwd: `moba-blk` selects per query block
// as the FlexAttention peer does, `moba` per query token (ATTN_MOBA, the MoBA paper); fp32
// Backend rows at short lengths for reference. Median of `reps` CUDA-event timings after warm-up (cuda/timing.h).
//
//   mslab-gpu-bench --attn [--quick] [--max-len N] [--tsv FILE] [--reps R] [--warmup W]
//                          [--kernels dense,wgmma,ms,moba,fp32,nd] [--fp32-max N] [--no-mem-probe]
//                          [--max-call-s S]
//   (after a lost CUDA context it re-executes itself with --from-len N --skip-kernels K --append)
//   mslab-gpu-bench --attn --mem-probe N    (internal: MS fwd+bwd peak memory in a fresh process)
//
// Every row is printed and appended to the TSV at once (a run cut short keeps what it measured):
//   kernel  pass  N  ms  tflops  extra        (lines starting with '#' are comments)
// ms / tflops are "n/a" when the kernel is not available (returns -1) or failed; extra holds
// key=value pairs separated by ';' (pairs, density, share, peak_bytes, ...; docs/bench.md).
#include "attn_bench.h"

#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/attention.h"
#include "../core/common.h"
#include "../cuda/attn_bf16.h"
#include "../cuda/backend_cuda.h"
#include "../cuda/bf16.h"
#include "../cuda/timing.h"

enum { H = 32, D = 128 };

static const Backend *be;
static FILE *tsv;
static int reps = 5, warmup = 2;
static double max_call_s = 8; // a probe call slower than this: the row is skipped (n/a)
static int dead;            // a sticky CUDA error: nothing more can run in this process
static char dead_kern[32];  // the kernel that lost the context

static void row(const char *kernel, const char *pass, int N, double ms, double flops,
                const char *extra) {
    char m[32] = "n/a", t[32] = "n/a";
    if (ms > 0) snprintf(m, sizeof m, "%.4f", ms);
    if (ms > 0 && flops > 0) snprintf(t, sizeof t, "%.2f", flops / (ms * 1e-3) / 1e12);
    printf("%-11s %-7s %8d %11s %9s  %s\n", kernel, pass, N, m, t, extra ? extra : "");
    fflush(stdout);
    if (tsv) {
        fprintf(tsv, "%s\t%s\t%d\t%s\t%s\t%s\n", kernel, pass, N, m, t, extra ? extra : "");
        fflush(tsv);
    }
}

// ---- what one timed call does ----------------------------------------------------------------
typedef struct {
    int N;
    uint16_t *q, *k, *v, *o, *dout, *dq, *dk, *dv; // bf16 [N, H, D]
    float *lse;                                    // [H, N]
    AttnConfig cfg;
    AttnIndex ix;
    float *qf, *kf;   // fp32 copies for the fallback selection (select_bf16 unavailable)
    int sel_fp32;     // the list comes from be->attention_select on qf / kf
    float *f[8];      // fp32 rows: q k v o dout dq dk dv
    float *flse;
    int rc;           // any kernel returned non-zero (-1: not available)
    const char *mem;  // ms: "peak_bytes=..;io_bytes=.." from the fresh-process probe, or NULL
} Job;

static void sel(Job *j) {
    if (j->sel_fp32) be->attention_select(&j->ix, &j->cfg, j->qf, j->kf, 1, j->N, H, H, D);
    else j->rc |= select_bf16(&j->ix, &j->cfg, j->q, j->k, 1, j->N, H, H, D);
}
static void dense_fwd(void *a) {
    Job *j = a;
    j->rc |= flash_bf16_fwd(j->o, j->lse, j->q, j->k, j->v, 1, j->N, H, H, D);
}
static void dense_fb(void *a) {
    Job *j = a;
    dense_fwd(j);
    j->rc |= flash_bf16_bwd(j->dq, j->dk, j->dv, j->dout, j->o, j->lse, j->q, j->k, j->v, 1, j->N,
                            H, H, D);
}
static void wg_fwd(void *a) {
    Job *j = a;
    j->rc |= flash_wgmma_fwd(j->o, j->lse, j->q, j->k, j->v, 1, j->N, H, H, D);
}
static void wg_fb(void *a) {
    Job *j = a;
    wg_fwd(j);
    j->rc |= flash_wgmma_bwd(j->dq, j->dk, j->dv, j->dout, j->o, j->lse, j->q, j->k, j->v, 1, j->N,
                             H, H, D);
}
static void sp_sel(void *a) { sel(a); }
static void sp_fwd(void *a) {
    Job *j = a;
    sel(j);
    j->rc |= attn_bf16_sparse_fwd(j->o, j->lse, j->q, j->k, j->v, &j->ix, 1, j->N, H, H, D);
}
static void sp_fb(void *a) {
    Job *j = a;
    sp_fwd(j);
    j->rc |= attn_bf16_sparse_bwd(j->dq, j->dk, j->dv, j->dout, j->o, j->lse, j->q, j->k, j->v,
                                  &j->ix, 1, j->N, H, H, D);
}
// fp32 Backend ops (they accumulate gradients; the values do not matter for timing)
static void f_dense_fwd(void *a) {
    Job *j = a;
    be->attention_fwd(j->f[3], j->flse, j->f[0], j->f[1], j->f[2], 1, j->N, H, H, D);
}
static void f_dense_fb(void *a) {
    Job *j = a;
    f_dense_fwd(j);
    be->attention_bwd(j->f[5], j->f[6], j->f[7], j->f[4], j->f[3], j->flse, j->f[0], j->f[1],
                      j->f[2], 1, j->N, H, H, D);
}
static void f_sel(void *a) {
    Job *j = a;
    be->attention_select(&j->ix, &j->cfg, j->f[0], j->f[1], 1, j->N, H, H, D);
}
static void f_sp_fwd(void *a) {
    Job *j = a;
    f_sel(j);
    be->sparse_attention_fwd(j->f[3], j->flse, j->f[0], j->f[1], j->f[2], &j->ix, 1, j->N, H, H, D);
}
static void f_sp_fb(void *a) {
    Job *j = a;
    f_sp_fwd(j);
    be->sparse_attention_bwd(j->f[5], j->f[6], j->f[7], j->f[4], j->f[3], j->flse, j->f[0], j->f[1],
                             j->f[2], &j->ix, 1, j->N, H, H, D);
}

// Kernels whose probe call passed the time limit, or that aborted: their later passes and lengths
// are skipped without another try (each pass and length only costs more).
static struct {
    char kern[32], why[96];
} skip[32];
static int nskip;
static int unavailable; // the last timed() found the kernel returning -1

static void skip_add(const char *kern, const char *why) {
    if (nskip < 32) {
        snprintf(skip[nskip].kern, sizeof skip[0].kern, "%s", kern);
        snprintf(skip[nskip++].why, sizeof skip[0].why, "%s", why);
    }
}

// A kernel that aborts (cudaCheck on a bad launch, an assertion) would end the whole run: while a
// timed call runs, SIGABRT jumps back to timed() instead, which reports the row and goes on when
// the CUDA context survived (a launch error does; an error inside a kernel is sticky: dead).
static sigjmp_buf abort_jmp;
static volatile sig_atomic_t abort_armed;

static void on_abort(int sig) {
    if (abort_armed) {
        abort_armed = 0;
        siglongjmp(abort_jmp, 1);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

// Times fn: one probing call (a -1 return = not available: "n/a"), warm-up, then the median of
// reps. A call slower than a second gets no further warm-up (the probe warmed it); one slower
// than --max-call-s marks the kernel too slow (MS at 1M, the length it must run at, gets 30 s).
// Returns the median ms, 0 for not available, -1 for a CUDA error (*why says which).
static double timed_body(CudaTimedFn fn, Job *j, const char *kern, const char **why) {
    static char msg[160];
    *why = NULL;
    unavailable = 0;
    if (dead) return *why = "skipped after an earlier CUDA error", -1;
    for (int i = 0; i < nskip; i++)
        if (!strcmp(skip[i].kern, kern)) return *why = skip[i].why, 0;
    double limit = max_call_s;
    if (!strcmp(kern, "ms-bf16") && j->N >= 1048576 && limit < 30) limit = 30;
    j->rc = 0;
    double t0 = ms_now();
    fn(j);
    if (cuda_sync_check()) {
        dead = 1;
        snprintf(dead_kern, sizeof dead_kern, "%s", kern);
        return *why = cuda_error(), -1;
    }
    if (j->rc) return unavailable = 1, *why = "not available (returns -1)", 0;
    double t1 = ms_now() - t0;
    if (t1 > limit) { // 1 + reps more would take minutes: keep the run's time for the rest
        skip_add(kern, "skipped: too slow at a shorter length or pass (--max-call-s)");
        snprintf(msg, sizeof msg, "too slow: one call took %.1f s (> --max-call-s %.0f)", t1, limit);
        return *why = msg, 0;
    }
    int w = t1 > 1.0 ? 0 : warmup - 1;
    double ms = cuda_time_median_ms(fn, j, w > 0 ? w : 0, reps, NULL);
    if (ms < 0) {
        dead = 1;
        snprintf(dead_kern, sizeof dead_kern, "%s", kern);
        return *why = cuda_error(), -1;
    }
    return ms;
}

static double timed(CudaTimedFn fn, Job *j, const char *kern, const char **why) {
    static char msg[200];
    if (sigsetjmp(abort_jmp, 1)) { // fn aborted: its message is on stderr
        abort_armed = 0;
        int sticky = cuda_sync_check(); // clears a launch error; an in-kernel one stays
        if (sticky) dead = 1, snprintf(dead_kern, sizeof dead_kern, "%s", kern);
        snprintf(msg, sizeof msg, "aborted at N=%d (the CUDA error / assertion is on stderr)%s",
                 j->N, sticky ? "; the context is lost" : "");
        skip_add(kern, "skipped: aborted at a shorter length or pass");
        fprintf(stderr, "mslab-gpu-bench: %s: %s\n", kern, msg);
        return *why = msg, -1;
    }
    abort_armed = 1;
    double r = timed_body(fn, j, kern, why);
    abort_armed = 0;
    return r;
}

static void na(const char *kernel, const char *pass, int N, const char *why) {
    char e[600];
    snprintf(e, sizeof e, "n/a=%s", why ? why : "?");
    for (char *p = e; *p; p++)
        if (*p == '\t' || *p == '\n' || *p == ';') *p = ' ';
    row(kernel, pass, N, -1, 0, e);
}

// Non-finite values among the last rows of o (bf16): a kernel that returns garbage fast must not
// look like a win. Returns the count found in the sample.
static int nonfinite_tail(const uint16_t *o, int N) {
    size_t n = (size_t)N * H * D, take = n < (1u << 20) ? n : (1u << 20);
    uint16_t *h = ms_malloc(take * 2);
    be->download(h, o + (n - take), take * 2);
    int bad = 0;
    for (size_t i = 0; i < take; i++) bad += !isfinite(bf16_to_f32(h[i]));
    free(h);
    return bad;
}

// ---- one length --------------------------------------------------------------------------------
typedef struct {
    int dense, ms, moba, fp32;
    int moba_tok; // also the per-token moba rows ("moba" in --kernels; "moba-blk" alone: not)
    int wg; // dense-wgmma rows (cuda/flash_wgmma.cu)
    int nd; // also time fwd+bwd with attn_bf16_set_deterministic(0): rows "<kernel>-nd"
    int fp32_max, mem_probe;
    size_t ctx_base; // memory in use before the first length (the context, cuBLAS, ...)
} What;

static double dense_flops(int N) { return 4.0 * D * H * ((double)N * (N + 1) / 2); }

// The fp32 selection (cuda/attn_select.cu) aborts when an MS group's merge buffers (merge x
// (top - merge) candidates, doubles) pass 200 KiB of shared memory, as at the paper config: its
// rows are skipped there instead of losing the whole run. Same formula as attn_select.cu.
static int fp32_select_ok(const AttnConfig *c, int N) {
    AttnDims d;
    if (c->kind != ATTN_MS || attn_dims(c, N, &d)) return 1;
    size_t MS = (size_t)d.M * d.S;
    return sizeof(double) * (D + 2 * MS) + sizeof(int) * (3 * MS + d.M) <= 200 * 1024;
}

// The sparse kinds over the bf16 kernels: select, fwd (select included), fwd+bwd (select
// included). mem: also report MS's memory at this length (base = in use before the tensors).
// The fwd+bwd of fn again with the backward's atomic accumulation mode (attn_bf16.h): row
// "<kern>-nd", extra as the deterministic row's (without the memory fields).
static void timed_nd(CudaTimedFn fn, Job *j, const char *kern, double flops, const char *extra) {
    char k[40];
    const char *why;
    snprintf(k, sizeof k, "%s-nd", kern);
    int old = attn_bf16_set_deterministic(0);
    double t = timed(fn, j, k, &why);
    attn_bf16_set_deterministic(old);
    if (t > 0) row(k, "fwdbwd", j->N, t, flops, extra);
    else na(k, "fwdbwd", j->N, why);
}

static void bench_sparse(Job *j, const char *name, int fp32, int nd, size_t base,
                         size_t ctx_base) {
    int N = j->N;
    const char *why;
    char kern[32], ex[512];
    snprintf(kern, sizeof kern, "%s-%s", name, fp32 ? "fp32" : "bf16");
    AttnDims d;
    if (attn_dims(&j->cfg, N, &d)) {
        na(kern, "fwd", N, ms_error());
        return;
    }
    if (d.dense) {
        printf("%-11s %-7s %8d  (the whole length is dense causal at this config: see dense)\n",
               kern, "-", N);
        return;
    }
    if (fp32 && !fp32_select_ok(&j->cfg, N)) {
        const char *r = "the fp32 selection cannot do merge x top this large (shared memory)";
        na(kern, "select", N, r), na(kern, "fwd", N, r), na(kern, "fwdbwd", N, r);
        return;
    }
    size_t nidx = (size_t)H * d.nblk * d.width;
    j->ix = (AttnIndex){.qblock = d.qblock, .nblk = d.nblk, .region = d.region, .width = d.width,
                        .window = d.window};
    j->ix.idx = cuda_try_alloc(nidx * sizeof(int));
    if (!j->ix.idx) {
        na(kern, "fwd", N, cuda_error());
        return;
    }
    cuda_zero_bytes(j->ix.idx, nidx * sizeof(int));
    // the selection; select_bf16 missing: the fp32 op on fp32 copies (its own row, and the
    // bf16 rows marked sel=fp32-fallback), up to 128K (the copies take 4 GiB there)
    j->sel_fp32 = 0;
    double t_sel = timed(fp32 ? f_sel : sp_sel, j, kern, &why);
    char sel_kern[32];
    snprintf(sel_kern, sizeof sel_kern, "%s", kern);
    int noted = 0;
    if (!fp32 && unavailable && be->attention_select && N <= 131072 && fp32_select_ok(&j->cfg, N)) {
        na(kern, "select", N, why);
        noted = 1;
        size_t n = (size_t)N * H * D;
        j->qf = cuda_try_alloc(n * 4), j->kf = cuda_try_alloc(n * 4);
        if (j->qf && j->kf) {
            cuda_bf16_to_f32(j->qf, j->q, n);
            cuda_bf16_to_f32(j->kf, j->k, n);
            j->sel_fp32 = 1;
            snprintf(sel_kern, sizeof sel_kern, "%s-fp32", name);
            t_sel = timed(sp_sel, j, sel_kern, &why);
        }
    }
    AttnStats st = {0};
    if (t_sel <= 0) {
        if (!noted || j->sel_fp32) na(sel_kern, "select", N, why);
        na(kern, "fwd", N, "no index list (no selection)");
        na(kern, "fwdbwd", N, "no index list (no selection)");
        goto out;
    }
    { // count the pairs the list really computes (host copy of batch item 0's list)
        int *host = ms_malloc(nidx * sizeof(int));
        be->download(host, j->ix.idx, nidx * sizeof(int));
        attn_count(&j->cfg, &d, host, H, N, &st);
        free(host);
    }
    snprintf(ex, sizeof ex, "select_dots=%.6g%s", st.select_dots,
             j->sel_fp32 ? ";sel=fp32-fallback" : "");
    row(sel_kern, "select", N, t_sel, 2.0 * D * st.select_dots, ex);
    double f_fwd = 4.0 * D * st.pairs, density = st.pairs / st.causal_pairs;
    double t_fwd = timed(fp32 ? f_sp_fwd : sp_fwd, j, kern, &why);
    if (t_fwd > 0) {
        int bad = fp32 ? 0 : nonfinite_tail(j->o, N);
        snprintf(ex, sizeof ex, "pairs=%.6g;density=%.5f;share=%.4f%s", st.pairs, density,
                 t_sel / t_fwd, j->sel_fp32 ? ";sel=fp32-fallback" : "");
        if (bad) snprintf(ex + strlen(ex), sizeof ex - strlen(ex), ";nonfinite=%d", bad);
        row(kern, "fwd", N, t_fwd, f_fwd, ex);
    } else {
        na(kern, "fwd", N, why);
    }
    double t_fb = timed(fp32 ? f_sp_fb : sp_fb, j, kern, &why);
    if (t_fb > 0) {
        snprintf(ex, sizeof ex, "pairs=%.6g;density=%.5f;share=%.4f%s", st.pairs, density,
                 t_sel / t_fb, j->sel_fp32 ? ";sel=fp32-fallback" : "");
        if (!fp32 && !strcmp(name, "ms")) { // memory: fwd+bwd of MS at this length
            size_t used = cuda_mem_used(), io = 8 * (size_t)N * H * D * 2;
            if (j->sel_fp32) used -= 2 * (size_t)N * H * D * 4; // not MS's: the fallback's copies
            if (j->mem) // the fresh process's high-water mark (mem_probe)
                snprintf(ex + strlen(ex), sizeof ex - strlen(ex), ";%s", j->mem);
            else // in this process: what stayed allocated since this length began (a lower bound)
                snprintf(ex + strlen(ex), sizeof ex - strlen(ex),
                         ";peak_bytes=%zu;peak_src=inproc;io_bytes=%zu", used - base, io);
            snprintf(ex + strlen(ex), sizeof ex - strlen(ex), ";resident_bytes=%zu",
                     used - ctx_base);
        }
        row(kern, "fwdbwd", N, t_fb, 3.5 * f_fwd, ex);
        if (nd && !fp32) {
            snprintf(ex, sizeof ex, "pairs=%.6g;density=%.5f", st.pairs, density);
            timed_nd(sp_fb, j, kern, 3.5 * f_fwd, ex);
        }
    } else {
        na(kern, "fwdbwd", N, why);
    }
out:
    cuda_try_free(j->ix.idx);
    cuda_try_free(j->qf), cuda_try_free(j->kf);
    j->ix.idx = NULL, j->qf = j->kf = NULL, j->sel_fp32 = 0;
}

static AttnConfig ms_config(void) {
    AttnConfig c = attn_config_default(ATTN_MS); // w 16, top 512, merge 128, prefix top * w
    c.w = 16, c.top = 512, c.merge = 128;
    return c;
}

// MoBA-style as the FlexAttention peer: block 128, the query's own block plus the top 1/16 of the
// blocks (torch_peers_sparse.py: topk = nb // 16 earlier blocks + the diagonal block).
static AttnConfig moba_config(int N) {
    AttnConfig c = attn_config_default(ATTN_MOBA);
    int nb = (N + 127) / 128;
    c.block = 128;
    c.top = (nb / 16 > 1 ? nb / 16 : 1) + 1;
    return c;
}

// --mem-probe N: in a fresh process (no scratch kept from other kernels or lengths), one MS
// fwd+bwd with the selection under the memory watcher; prints "MEMPROBE peak_bytes=P;io_bytes=B"
// (P: the high-water mark minus what was in use before the tensors) or "MEMPROBE n/a=why".
static int mem_probe(int N) {
    size_t n = (size_t)N * H * D;
    Job j = {.N = N, .cfg = ms_config()};
    AttnDims d;
    if (attn_dims(&j.cfg, N, &d) || d.dense) return printf("MEMPROBE n/a=dense at this N\n"), 0;
    size_t base = cuda_mem_used(), nidx = (size_t)H * d.nblk * d.width;
    uint16_t **t[8] = {&j.q, &j.k, &j.v, &j.o, &j.dout, &j.dq, &j.dk, &j.dv};
    int ok = 1;
    for (int i = 0; i < 8 && ok; i++) ok = (*t[i] = cuda_try_alloc(n * 2)) != NULL;
    if (ok) ok = (j.lse = cuda_try_alloc((size_t)H * N * 4)) != NULL;
    if (ok) ok = (j.ix.idx = cuda_try_alloc(nidx * sizeof(int))) != NULL;
    if (!ok) return printf("MEMPROBE n/a=out of memory\n"), 0;
    j.ix.qblock = d.qblock, j.ix.nblk = d.nblk, j.ix.region = d.region, j.ix.width = d.width;
    for (int i = 0; i < 8; i++)
        if (i < 3 || i == 4) cuda_fill_bf16_normal(*t[i], n, 1000 + i, 1.0f);
    cuda_zero_bytes(j.ix.idx, nidx * sizeof(int));
    if (cuda_sync_check() || cuda_mem_watch_start())
        return printf("MEMPROBE n/a=%s\n", cuda_error()), 0;
    sp_fb(&j);
    size_t peak = cuda_mem_watch_stop();
    if (cuda_sync_check()) printf("MEMPROBE n/a=%s\n", cuda_error());
    else if (j.rc) printf("MEMPROBE n/a=not available (returns -1)\n");
    else printf("MEMPROBE peak_bytes=%zu;io_bytes=%zu\n", peak - base, 8 * n * 2);
    return 0;
}

// Runs this program with --mem-probe N; the "key=value;..." it reports, or NULL.
static char *run_mem_probe(int N) {
    char exe[1024], cmd[1200], line[512];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (k <= 0) return NULL;
    exe[k] = 0;
    snprintf(cmd, sizeof cmd, "'%s' --attn --mem-probe %d 2>&1", exe, N);
    fflush(NULL);
    FILE *p = popen(cmd, "r");
    if (!p) return NULL;
    char *res = NULL, last[512] = "";
    int said = 0;
    while (fgets(line, sizeof line, p)) {
        line[strcspn(line, "\n")] = 0;
        if (!strncmp(line, "MEMPROBE peak_bytes=", 20) && !res) res = ms_strdup(line + 9);
        else if (!strncmp(line, "MEMPROBE ", 9))
            printf("# ms-bf16 N=%d memory probe: %s\n", N, line + 9), said = 1;
        else if (*line)
            snprintf(last, sizeof last, "%s", line);
    }
    int st = pclose(p);
    if (!res && !said) // say why (a child that aborted prints its CUDA error last), then measure in-process
        printf("# ms-bf16 N=%d memory probe failed (status %d)%s%s\n", N, st, *last ? ": " : "", last);
    return res;
}

// MoBA-style with the peer's query granularity: the list per query BLOCK of 128 (block-mean q
// against block-mean k), the top nb/16 strictly earlier blocks + its own. It is exactly the MS
// plan with w = 128, merge = 1, prefix = 0, top = nb/16 + 1 (the same pairs as the peer's mask);
// ATTN_MOBA (above) selects per query token, as the MoBA paper.
static AttnConfig moba_blk_config(int N) {
    AttnConfig c = ms_config();
    int nb = (N + 127) / 128;
    c.w = 128, c.merge = 1, c.prefix = 0;
    c.top = (nb / 16 > 1 ? nb / 16 : 1) + 1;
    return c;
}

static void bench_length(int N, const What *w) {
    size_t n = (size_t)N * H * D;
    Job j = {.N = N};
    // the memory probe first: its own process, while this one holds the least memory
    char *mem = w->ms && w->mem_probe && N > 8192 && !dead ? run_mem_probe(N) : NULL;
    j.mem = mem;
    size_t base = cuda_mem_used();
    uint16_t **t[8] = {&j.q, &j.k, &j.v, &j.o, &j.dout, &j.dq, &j.dk, &j.dv};
    int ok = 1;
    for (int i = 0; i < 8 && ok; i++) ok = (*t[i] = cuda_try_alloc(n * 2)) != NULL;
    if (ok) ok = (j.lse = cuda_try_alloc((size_t)H * N * 4)) != NULL;
    if (!ok) {
        printf("N=%d: cannot allocate q, k, v, o and gradients (%.1f GiB): %s\n", N,
               8.0 * n * 2 / (1 << 30), cuda_error());
        if (w->ms) na("ms-bf16", "fwdbwd", N, "out of memory for the tensors");
        goto out;
    }
    // q, k, v, dout ~ N(0, 1) as the peers' torch.randn; o / gradients zero
    for (int i = 0; i < 8; i++)
        if (i < 3 || i == 4) cuda_fill_bf16_normal(*t[i], n, 1000 + i, 1.0f);
        else cuda_zero_bytes(*t[i], n * 2);
    if (cuda_sync_check()) {
        printf("N=%d: %s\n", N, cuda_error());
        dead = 1;
        goto out;
    }
    const char *why;
    char ex[256];
    if (w->ms) { // first, so its memory delta holds as little of the others' scratch as possible
        j.cfg = ms_config();
        bench_sparse(&j, "ms", 0, w->nd, base, w->ctx_base);
    }
    if (w->dense && N <= 131072) {
        double fl = dense_flops(N);
        double t = timed(dense_fwd, &j, "dense-bf16", &why);
        if (t > 0) {
            int bad = nonfinite_tail(j.o, N);
            snprintf(ex, sizeof ex, "pairs=%.6g", fl / (4.0 * D));
            if (bad) snprintf(ex + strlen(ex), sizeof ex - strlen(ex), ";nonfinite=%d", bad);
            row("dense-bf16", "fwd", N, t, fl, ex);
        } else {
            na("dense-bf16", "fwd", N, why);
        }
        t = timed(dense_fb, &j, "dense-bf16", &why);
        snprintf(ex, sizeof ex, "pairs=%.6g", fl / (4.0 * D));
        if (t > 0) row("dense-bf16", "fwdbwd", N, t, 3.5 * fl, ex);
        else na("dense-bf16", "fwdbwd", N, why);
        if (w->nd && t > 0) timed_nd(dense_fb, &j, "dense-bf16", 3.5 * fl, ex);
    }
    if (w->wg && N <= 131072) { // the Hopper wgmma kernels: n/a while they return -1
        double fl = dense_flops(N);
        snprintf(ex, sizeof ex, "pairs=%.6g", fl / (4.0 * D));
        double t = timed(wg_fwd, &j, "dense-wgmma", &why);
        if (t > 0) row("dense-wgmma", "fwd", N, t, fl, ex);
        else na("dense-wgmma", "fwd", N, why);
        t = timed(wg_fb, &j, "dense-wgmma", &why);
        if (t > 0) row("dense-wgmma", "fwdbwd", N, t, 3.5 * fl, ex);
        else na("dense-wgmma", "fwdbwd", N, why);
        if (w->nd && t > 0) timed_nd(wg_fb, &j, "dense-wgmma", 3.5 * fl, ex);
    }
    if (w->moba && N <= 131072) {
        j.cfg = moba_blk_config(N);
        bench_sparse(&j, "moba-blk", 0, w->nd, base, w->ctx_base);
        if (w->moba_tok) {
            j.cfg = moba_config(N);
            bench_sparse(&j, "moba", 0, 0, base, w->ctx_base);
        }
    }
    if (w->fp32 && N <= w->fp32_max && !dead) { // reference rows: the fp32 Backend ops
        for (int i = 0; i < 8; i++) {
            j.f[i] = be->alloc(n * 4);
            if (i < 5) cuda_bf16_to_f32(j.f[i], *t[i], n); // q k v o dout
        }
        j.flse = be->alloc((size_t)H * N * 4);
        if (w->dense) {
            double fl = dense_flops(N);
            snprintf(ex, sizeof ex, "pairs=%.6g", fl / (4.0 * D));
            double t = timed(f_dense_fwd, &j, "dense-fp32", &why);
            if (t > 0) row("dense-fp32", "fwd", N, t, fl, ex);
            else na("dense-fp32", "fwd", N, why);
            t = timed(f_dense_fb, &j, "dense-fp32", &why);
            if (t > 0) row("dense-fp32", "fwdbwd", N, t, 3.5 * fl, ex);
            else na("dense-fp32", "fwdbwd", N, why);
        }
        if (w->ms && be->attention_select && be->sparse_attention_fwd) {
            j.cfg = ms_config();
            bench_sparse(&j, "ms", 1, 0, base, w->ctx_base);
        }
        if (w->moba && be->attention_select && be->sparse_attention_fwd) {
            j.cfg = moba_blk_config(N);
            bench_sparse(&j, "moba-blk", 1, 0, base, w->ctx_base);
            if (w->moba_tok) {
                j.cfg = moba_config(N);
                bench_sparse(&j, "moba", 1, 0, base, w->ctx_base);
            }
        }
        for (int i = 0; i < 8; i++) be->free(j.f[i]);
        be->free(j.flse);
    }
out:
    for (int i = 0; i < 8; i++) cuda_try_free(*t[i]);
    cuda_try_free(j.lse);
    free(mem);
}

// Re-runs this program (exec: the lost context goes with the process) with the same options for
// the lengths from `from`, appending to the TSV, the kernel that lost the context skipped. Returns
// only when exec fails.
static void restart(int argc, char **argv, int from, const char *skip_list, int restarts) {
    static char from_s[16], rs[16], skips[512];
    snprintf(from_s, sizeof from_s, "%d", from);
    snprintf(rs, sizeof rs, "%d", restarts);
    snprintf(skips, sizeof skips, "%s%s%s", skip_list, *skip_list ? "," : "", dead_kern);
    char **nv = ms_calloc((size_t)argc + 12, sizeof *nv);
    int n = 0;
    for (int i = 0; i < argc; i++) { // drop the options this call sets again
        const char *s = argv[i];
        if (!strcmp(s, "--from-len") || !strcmp(s, "--skip-kernels") || !strcmp(s, "--restarts")) {
            i++;
            continue;
        }
        if (!strcmp(s, "--append")) continue;
        nv[n++] = argv[i];
    }
    nv[n++] = "--from-len", nv[n++] = from_s, nv[n++] = "--skip-kernels", nv[n++] = skips;
    nv[n++] = "--restarts", nv[n++] = rs, nv[n++] = "--append", nv[n] = NULL;
    fflush(NULL);
    if (tsv) fclose(tsv), tsv = NULL;
    execv("/proc/self/exe", nv);
    fprintf(stderr, "mslab-gpu-bench: restart failed: exec /proc/self/exe\n");
    free(nv);
}

static int usage(void) {
    fprintf(stderr,
            "usage: mslab-gpu-bench --attn [--quick] [--max-len N] [--tsv FILE] [--reps R]\n"
            "                       [--warmup W] [--kernels dense,wgmma,ms,moba,fp32,nd] [--fp32-max N]\n"
            "                       [--no-mem-probe] [--max-call-s S]\n");
    return 2;
}

int attn_bench_main(int argc, char **argv, const Backend *backend) {
    be = backend;
    long max_len = 1048576, fp32_max = 16384;
    int quick = 0, probe = 0, no_probe = 0, append = 0;
    long from_len = 0, restarts = 0;
    const char *tsv_path = NULL, *kernels = "dense,wgmma,ms,moba,fp32,nd", *skip_list = "";
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        long x = 0;
        if (!strcmp(s, "--attn")) continue;
        if (!strcmp(s, "--quick") || !strcmp(s, "--no-mem-probe") || !strcmp(s, "--append")) {
            *(s[2] == 'q' ? &quick : s[2] == 'a' ? &append : &no_probe) = 1;
            continue;
        }
        if (!v) return fprintf(stderr, "mslab-gpu-bench: %s needs a value\n", s), usage();
        if (!strcmp(s, "--tsv")) tsv_path = v;
        else if (!strcmp(s, "--kernels")) kernels = v;
        else if (!strcmp(s, "--skip-kernels")) skip_list = v;
        else if ((x = strtol(v, &end, 10)), *end || end == v || x < 0)
            return fprintf(stderr, "mslab-gpu-bench: %s: \"%s\" is not a count\n", s, v), usage();
        else if (!strcmp(s, "--max-len")) max_len = x;
        else if (!strcmp(s, "--reps")) reps = x > 0 ? (int)x : 1;
        else if (!strcmp(s, "--warmup")) warmup = (int)x;
        else if (!strcmp(s, "--fp32-max")) fp32_max = x;
        else if (!strcmp(s, "--mem-probe")) probe = (int)x;
        else if (!strcmp(s, "--max-call-s")) max_call_s = x > 0 ? (double)x : 1e30;
        else if (!strcmp(s, "--from-len")) from_len = x;
        else if (!strcmp(s, "--restarts")) restarts = x;
        else return fprintf(stderr, "mslab-gpu-bench: unknown option %s\n", s), usage();
        i++;
    }
    if (probe) return mem_probe(probe);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_abort;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGABRT, &sa, NULL);
    What w = {.mem_probe = !no_probe, .dense = !!strstr(kernels, "dense"), .ms = !!strstr(kernels, "ms"),
              .moba = !!strstr(kernels, "moba"),
              .moba_tok = strstr(kernels, "moba") && !strstr(kernels, "moba-blk"), .fp32 = !!strstr(kernels, "fp32"), .nd = !!strstr(kernels, "nd"), .wg = !!strstr(kernels, "wgmma"),
              .fp32_max = (int)fp32_max};
    for (const char *p = skip_list; *p;) { // kernels that lost the context in an earlier process
        size_t n = strcspn(p, ",");
        char k[32];
        snprintf(k, sizeof k, "%.*s", (int)(n < 31 ? n : 31), p);
        if (*k) skip_add(k, "skipped: it lost the CUDA context at a shorter length");
        p += n + (p[n] == ',');
    }
    if (tsv_path && !(tsv = fopen(tsv_path, append ? "a" : "w"))) {
        fprintf(stderr, "mslab-gpu-bench: %s: cannot write\n", tsv_path);
        return 1;
    }
    static const int all[] = {4096, 8192, 16384, 32768, 65536, 131072, 1048576};
    static const int few[] = {4096, 16384};
    const int *lens = quick ? few : all;
    int nlen = quick ? 2 : (int)(sizeof all / sizeof all[0]);
    if (quick) w.fp32_max = w.fp32_max < 4096 ? w.fp32_max : 4096;
    char head[512];
    snprintf(head, sizeof head,
             "# mslab-gpu-bench --attn: %s; bf16 causal, B=1 H=%d KVH=%d D=%d; median of %d "
             "CUDA-event timings after warm-up (%d); ms/moba include the selection",
             backend_cuda_device_name(), H, H, D, reps, warmup);
    if (!append) {
        printf("%s\n", head);
        printf("%-11s %-7s %8s %11s %9s  %s\n", "kernel", "pass", "N", "ms", "TFLOP/s", "extra");
        if (tsv) fprintf(tsv, "%s\n# kernel\tpass\tN\tms\ttflops\textra\n", head), fflush(tsv);
    }
    w.ctx_base = cuda_mem_used();
    double t0 = ms_now();
    for (int i = 0; i < nlen && !dead; i++) {
        if (lens[i] > max_len || lens[i] < from_len) continue;
        bench_length(lens[i], &w);
        int next = i + 1 < nlen && lens[i + 1] <= max_len ? lens[i + 1] : 0;
        if (dead && next && restarts < 3) { // a fresh process (a new context) for the rest
            printf("# %s lost the CUDA context at N=%d: restarting for N >= %d without it\n",
                   dead_kern, lens[i], next);
            restart(argc, argv, next, skip_list, (int)restarts + 1);
        }
    }
    printf("# done in %.0f s%s\n", ms_now() - t0, dead ? " (stopped: CUDA error)" : "");
    if (tsv) fclose(tsv);
    return dead ? 1 : 0;
}
