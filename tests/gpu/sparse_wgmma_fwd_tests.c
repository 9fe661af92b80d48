// sparse_wgmma_fwd_tests.c: the Hopper wgmma block-sparse forward (cuda/attn_bf16.h
// sparse_wgmma_fwd, in cuda/flash_wgmma.cu) against the CPU's fp32 op on the same bf16-rounded
// inputs and the same list (filter "sparse_wgmma_fwd.": parity; "sparse_wgmma_fwd_perf": timing).
//
// Inputs ~ N(0, 1) rounded to bf16; lists from the CPU's attention_select on the rounded values
// (ms at w 16 / 32 / 48 / 64 with query blocks of 64 .. 2048 rows, moba-blk = ms with w 128,
// merge 1, prefix 0, window 192 / 512, s2), and hand-made random lists (any region order, regions
// past the block, blocks with no region: rows that see nothing get out 0 and lse +inf; one with
// regions listed twice, counted twice as the CPU does); GQA,
// B = 2, D 64 / 128, T not a multiple of 64. Reference: the CPU's sparse_attention_fwd. out:
// whole-tensor relative L2 (tol 1e-2); lse: max |gpu - ref| / max(|ref|, 1) (tol 1e-4); each call
// runs twice on NaN-poisoned outputs and must repeat its bits (check_fwd).
// The -1 contract (sparse_wgmma_fwd.declines): one-row query blocks (moba's per-row lists),
// positions inside (kpos), regions that are not a multiple of 16 and D = 32 must return -1 and
// leave the output untouched.
// sparse_wgmma_fwd_perf (info lines, not checks): ms paper (w 16, top 512, merge 128) at 32K and
// 128K, moba-blk and the paper's key budget in regions of 64 / 32 keys at 32K, B = 1, H = KVH =
// 32, D = 128 (MSLAB_SWF_H / MSLAB_SWF_D: other heads / head dim, e.g. the LM's 12 / 64), lists
// by select_bf16: sparse_wgmma_fwd vs
// sparse_bf16_fwd (to 32K), ms and TFLOP/s (4 D flops per visible pair); the dense forward
// (flash_wgmma_fwd) at 32K as the yardstick. MSLAB_SWF_ROWS=tag,tag.. picks rows (paper32
// paper128 moba32 w64 w32 dense32), MSLAB_SWF_REPS the timed calls (6), MSLAB_SWF_NORMAL=1 the
// benchmark's inputs, MSLAB_SWF_HASH=1 a hash of each row's out + lse; MSLAB_FWD3_TRACE=1 makes
// each call print its trace line (flash_wgmma.cu).
// A GPU that is not sm_90 makes the kernel return -1 everywhere: the parity rows then fail with
// "returned -1" (the suite runs on the H200).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/attention.h"
#include "../../core/common.h"
#include "../../cuda/attn_bf16.h"
#include "../../cuda/bf16.h"
#include "../../cuda/timing.h"
#include "bf16_check.h"
#include "gpu_check.h"

static double lse_err(const float *a, const float *ref, size_t n) {
    double w = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - ref[i]) / fmax(fabs((double)ref[i]), 1.0);
        if (isinf(ref[i]) && a[i] == ref[i]) e = 0;
        if (!(e <= w)) w = e;
    }
    return w;
}

// first row (b, t, h) of out whose error exceeds 10x tol (in units of the tensor's RMS)
static void first_bad(const float *g, const float *r, int B, int T, int H, int D, int qblock) {
    size_t n = (size_t)B * T * H * D;
    double ss = 0;
    for (size_t i = 0; i < n; i++) ss += (double)r[i] * r[i];
    double rms = n ? sqrt(ss / n) : 1;
    size_t bad = 0, first = n;
    for (size_t i = 0; i < n; i++)
        if (!(fabs((double)g[i] - r[i]) <= 0.1 * (rms > 0 ? rms : 1))) {
            if (first == n) first = i;
            bad++;
        }
    if (first < n) {
        int d = (int)(first % D), h = (int)((first / D) % H), t = (int)((first / D / H) % T);
        printf("    first bad: (b=%d, t=%d, h=%d, d=%d) gpu %.6g ref %.6g block %d; %zu bad elements\n",
               (int)(first / D / H / T), t, h, d, g[first], r[first], t / qblock, bad);
    }
}

// runs sparse_wgmma_fwd twice on (q, k, v, list) and checks it against out / lse (CPU); the det
// column: the two runs' bits are equal
static void check_fwd(const char *shape, const AttnIndex *ig, const uint16_t *d_q,
                      const uint16_t *d_k, const uint16_t *d_v, const float *out, const float *lse,
                      int B, int T, int H, int KVH, int D) {
    size_t nq = (size_t)B * T * H * D, nl = (size_t)B * H * T;
    uint16_t *d_out = gpu->alloc(nq * 2 + 16);
    float *d_lse = gpu->alloc(nl * 4 + 16);
    float *o[2], *l[2];
    uint16_t *ob[2];
    int rc = 0;
    for (int rep = 0; rep < 2; rep++) {
        poison16(d_out, nq), poison32(d_lse, nl);
        rc |= sparse_wgmma_fwd(d_out, d_lse, d_q, d_k, d_v, ig, B, T, H, KVH, D);
        o[rep] = down16(d_out, nq, &ob[rep]);
        l[rep] = xalloc(nl * 4);
        gpu->download(l[rep], d_lse, nl * 4);
    }
    if (rc) printf("    sparse_wgmma_fwd returned -1\n");
    int det_o = !memcmp(ob[0], ob[1], nq * 2), det_l = !memcmp(l[0], l[1], nl * 4);
    double eo = rc ? INFINITY : rel_l2(o[0], out, nq);
    report("sparse_wgmma_fwd.out", shape, eo, 1e-2, det_o);
    if (!(eo <= 1e-2) && !rc) first_bad(o[0], out, B, T, H, D, ig->qblock);
    double el = rc ? INFINITY : lse_err(l[0], lse, nl);
    report("sparse_wgmma_fwd.lse", shape, el, 1e-4, det_l);
    if (!(el <= 1e-4) && !rc)
        for (size_t i = 0; i < nl; i++) {
            double e = fabs((double)l[0][i] - lse[i]) / fmax(fabs((double)lse[i]), 1.0);
            if (!(e <= 1e-4) && !(isinf(lse[i]) && l[0][i] == lse[i])) {
                int t = (int)(i % T), h = (int)((i / T) % H), b = (int)(i / T / H);
                printf("    lse first bad: (b=%d, h=%d, t=%d) gpu %.7g ref %.7g block %d\n", b, h,
                       t, l[0][i], lse[i], t / ig->qblock);
                break;
            }
        }
    for (int r = 0; r < 2; r++) free(o[r]), free(l[r]), free(ob[r]);
    gpu->free(d_out), gpu->free(d_lse);
}

// the -1 contract: returns -1 and writes nothing
static void check_declines(const char *shape, const AttnIndex *ig, const uint16_t *d_q,
                           const uint16_t *d_k, const uint16_t *d_v, int B, int T, int H, int KVH,
                           int D) {
    size_t nq = (size_t)B * T * H * D;
    uint16_t *d_out = gpu->alloc(nq * 2 + 16);
    float *d_lse = gpu->alloc((size_t)B * H * T * 4 + 16);
    poison16(d_out, nq);
    int rc = sparse_wgmma_fwd(d_out, d_lse, d_q, d_k, d_v, ig, B, T, H, KVH, D);
    uint16_t *ob;
    float *o = down16(d_out, nq, &ob);
    size_t touched = 0;
    for (size_t i = 0; i < nq; i++) touched += ob[i] != BF16_NAN;
    report("sparse_wgmma_fwd.declines", shape, rc == -1 ? (double)touched : 1.0, 0, -1);
    free(o), free(ob);
    gpu->free(d_out), gpu->free(d_lse);
}

// inputs and a list (cfg's selection on the CPU, or random when cfg is NULL: region rg, qblock qb,
// width wd), then the check (or the -1 contract when `declines`)
static void t_sw(const char *name, const AttnConfig *cfg, int rg, int qb, int wd, int B, int T,
                 int H, int KVH, int D, int declines) {
    AttnDims d;
    memset(&d, 0, sizeof d);
    if (cfg) {
        MS_ASSERT(attn_config_check(cfg, "attention") == 0, "%s", ms_error());
        MS_ASSERT(attn_dims(cfg, T, &d) == 0, "%s", ms_error());
    } else {
        d.region = rg, d.qblock = qb, d.width = wd, d.nblk = (T + qb - 1) / qb;
    }
    char shape[160];
    snprintf(shape, sizeof shape, "%s T=%d H=%d/%d D=%d B=%d (qblock %d region %d width %d%s)",
             name, T, H, KVH, D, B, d.qblock, d.region, d.width, d.reindex ? " pos" : "");
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D, nl = (size_t)B * H * T;
    size_t ni = (size_t)B * H * d.nblk * d.width, nb = (size_t)B * H * d.nblk;
    uint16_t *qb16, *kb16, *vb16;
    float *q, *k, *v;
    rand_bf16(&qb16, &q, nq), rand_bf16(&kb16, &k, nk), rand_bf16(&vb16, &v, nk);
    float *invf = xalloc(sizeof(float) * D);
    for (int i = 0; i < D / 2; i++) invf[i] = (float)pow(10000.0, -2.0 * i / D);
    AttnIndex ic = {d.qblock, d.nblk, d.region, d.width, d.window, NULL, NULL, NULL, invf, ROPE_HALVES};
    ic.idx = xalloc(sizeof(int) * ni);
    if (d.reindex) ic.kpos = xalloc(sizeof(int) * ni), ic.qpos = xalloc(sizeof(int) * nb);
    if (cfg) {
        cpu->attention_select(&ic, cfg, q, k, B, T, H, KVH, D);
    } else { // random distinct regions (any order, some past the block), then -1; some empty;
             // a name with "dup": some regions twice (counted twice, as the CPU does)
        int nreg = (T + rg - 1) / rg, dups = strstr(name, "dup") != NULL;
        for (size_t li = 0; li < nb; li++) {
            int *row = ic.idx + li * wd, c = (int)(li % d.nblk);
            int nv = (li % 7 == 3) ? 0 : 1 + (int)rng_below(&rng, (uint64_t)wd);
            if (nv > wd) nv = wd;
            if (nv > nreg) nv = nreg;
            int lim = ((c + 1) * qb + rg - 1) / rg + 2; // a few regions past the block
            if (lim > nreg) lim = nreg;
            if (nv > lim) nv = lim;
            int cnt = 0;
            while (cnt < nv) {
                int r = (int)rng_below(&rng, (uint64_t)lim), dup = 0;
                for (int s = 0; s < cnt; s++) dup |= row[s] == r;
                if (dups && cnt > 0 && rng_below(&rng, 4) == 0) // a region listed again
                    r = row[rng_below(&rng, (uint64_t)cnt)], dup = 0;
                if (!dup) row[cnt++] = r;
            }
            for (int s = cnt; s < wd; s++) row[s] = -1;
        }
    }
    uint16_t *d_q = dev_from(qb16, nq * 2), *d_k = dev_from(kb16, nk * 2), *d_v = dev_from(vb16, nk * 2);
    AttnIndex ig = ic;
    ig.idx = dev_from(ic.idx, sizeof(int) * ni);
    ig.kpos = d.reindex ? dev_from(ic.kpos, sizeof(int) * ni) : NULL;
    ig.qpos = d.reindex ? dev_from(ic.qpos, sizeof(int) * nb) : NULL;
    ig.inv_freq = NULL;
    if (declines) {
        check_declines(shape, &ig, d_q, d_k, d_v, B, T, H, KVH, D);
    } else {
        float *out = xalloc(nq * 4), *lse = xalloc(nl * 4);
        cpu->sparse_attention_fwd(out, lse, q, k, v, &ic, B, T, H, KVH, D);
        check_fwd(shape, &ig, d_q, d_k, d_v, out, lse, B, T, H, KVH, D);
        free(out), free(lse);
    }
    gpu->free(d_q), gpu->free(d_k), gpu->free(d_v), gpu->free(ig.idx);
    if (ig.kpos) gpu->free(ig.kpos), gpu->free(ig.qpos);
    free(ic.idx), free(ic.kpos), free(ic.qpos), free(q), free(k), free(v), free(qb16), free(kb16),
        free(vb16), free(invf);
}

static AttnConfig ms_cfg(int w, int top, int merge, int prefix) {
    AttnConfig c = attn_config_default(ATTN_MS);
    c.w = w, c.top = top, c.merge = merge, c.prefix = prefix;
    return c;
}

// ---- timing rows (info): B = 1, H = KVH = 32, D = 128 (MSLAB_SWF_H / MSLAB_SWF_D: the LM's
// shape is H 12, D 64), lists by select_bf16 ----
static int perf_env(const char *name, int def) {
    const char *e = getenv(name);
    return e && atoi(e) > 0 ? atoi(e) : def;
}
// kind 1 sparse_wgmma_fwd, 0 sparse_bf16_fwd, 2 flash_wgmma_fwd (dense, ix unused)
static double time_fwd(int kind, uint16_t *o, float *lse, const uint16_t *q, const uint16_t *k,
                       const uint16_t *v, const AttnIndex *ix, int T, int H, int D, int reps) {
    float x;
    double t0 = 0;
    for (int r = -1; r < reps; r++) {
        if (r == 0) gpu->download(&x, lse, 4), t0 = now_s();
        if (kind == 1) sparse_wgmma_fwd(o, lse, q, k, v, ix, 1, T, H, H, D);
        else if (kind == 2) flash_wgmma_fwd(o, lse, q, k, v, 1, T, H, H, D);
        else sparse_bf16_fwd(o, lse, q, k, v, ix, 1, T, H, H, D);
    }
    gpu->download(&x, lse, 4);
    return (now_s() - t0) / reps * 1e3;
}

// row `tag` unless MSLAB_SWF_ROWS leaves it out
static int row_wanted(const char *tag) {
    const char *f = getenv("MSLAB_SWF_ROWS");
    return !f || strstr(f, tag) != NULL;
}
// MSLAB_SWF_HASH=1: the timing rows also print an FNV-1a hash of the last call's out and lse
// (code that must give the same bits compares across runs, e.g. an old binary beside a new one)
static void perf_hash(const char *what, const uint16_t *o, const float *lse, size_t nq, size_t nl) {
    const char *e = getenv("MSLAB_SWF_HASH");
    if (!e || atoi(e) == 0) return;
    unsigned char *h = xalloc(nq * 2 + nl * 4);
    gpu->download(h, o, nq * 2);
    gpu->download(h + nq * 2, lse, nl * 4);
    unsigned long long x = 1469598103934665603ull;
    for (size_t i = 0; i < nq * 2 + nl * 4; i++) x = (x ^ h[i]) * 1099511628211ull;
    printf("    (info sparse_wgmma_fwd_perf: %s out+lse hash %016llx)\n", what, x);
    free(h);
}
// MSLAB_SWF_NORMAL=1: q, k, v redrawn on the device as the benchmark draws them
// (cuda_fill_bf16_normal, seeds 1000 / 1001 / 1002: no period, so the lists scatter as the
// benchmark's do; perf_qkv's repeat every 1024 rows)
static void perf_normal(uint16_t *q, uint16_t *k, uint16_t *v, size_t n) {
    const char *e = getenv("MSLAB_SWF_NORMAL");
    if (!e || atoi(e) == 0) return;
    cuda_fill_bf16_normal(q, n, 1000, 1.0f), cuda_fill_bf16_normal(k, n, 1001, 1.0f);
    cuda_fill_bf16_normal(v, n, 1002, 1.0f);
}
static int perf_reps(void) {
    const char *e = getenv("MSLAB_SWF_REPS");
    return e && atoi(e) > 0 ? atoi(e) : 6;
}

static void t_sw_perf(const char *tag, const char *name, AttnConfig cfg, int T) {
    if (!wanted("sparse_wgmma_fwd_perf") || !row_wanted(tag)) return;
    int H = perf_env("MSLAB_SWF_H", 32), D = perf_env("MSLAB_SWF_D", 128), reps = perf_reps();
    AttnDims d;
    MS_ASSERT(attn_dims(&cfg, T, &d) == 0, "%s", ms_error());
    size_t nq = (size_t)T * H * D;
    uint16_t *q, *k, *v, *hb = perf_qkv(nq, &q, &k, &v);
    perf_normal(q, k, v, nq);
    uint16_t *o = gpu->alloc(nq * 2);
    float *lse = gpu->alloc((size_t)H * T * 4);
    AttnIndex ix;
    AttnStats st;
    free(perf_list(&ix, &cfg, &d, q, k, T, H, D, &st));
    double f = 4.0 * st.pairs * D, tw = time_fwd(1, o, lse, q, k, v, &ix, T, H, D, reps);
    perf_hash(tag, o, lse, nq, (size_t)H * T);
    double tb = T <= 32768 ? time_fwd(0, o, lse, q, k, v, &ix, T, H, D, reps) : 0;
    char sb[64] = ""; // sparse_bf16 only where it ran
    if (tb > 0) snprintf(sb, sizeof sb, "; sparse_bf16 %.3f ms (%.1f)", tb, f / tb * 1e-9);
    printf("    (info sparse_wgmma_fwd_perf: %s T=%d H=%d D=%d pairs %.4g: wgmma %.3f ms (%.1f "
           "TFLOP/s)%s)\n",
           name, T, H, D, st.pairs, tw, f / tw * 1e-9, sb);
    free(hb);
    gpu->free(q), gpu->free(k), gpu->free(v), gpu->free(o), gpu->free(lse), gpu->free(ix.idx);
}

// the dense forward at the same shape (the yardstick: the same kernel body, contiguous keys)
static void t_dense_perf(int T) {
    if (!wanted("sparse_wgmma_fwd_perf") || !row_wanted("dense32")) return;
    int H = perf_env("MSLAB_SWF_H", 32), D = perf_env("MSLAB_SWF_D", 128);
    size_t nq = (size_t)T * H * D;
    uint16_t *q, *k, *v, *hb = perf_qkv(nq, &q, &k, &v);
    perf_normal(q, k, v, nq);
    uint16_t *o = gpu->alloc(nq * 2);
    float *lse = gpu->alloc((size_t)H * T * 4);
    double t = time_fwd(2, o, lse, q, k, v, NULL, T, H, D, perf_reps());
    perf_hash("dense32", o, lse, nq, (size_t)H * T);
    double f = 4.0 * D * H * ((double)T * (T + 1) / 2);
    printf("    (info sparse_wgmma_fwd_perf: dense flash_wgmma_fwd T=%d H=%d D=%d: %.3f ms (%.1f "
           "TFLOP/s))\n", T, H, D, t, f / t * 1e-9);
    free(hb);
    gpu->free(q), gpu->free(k), gpu->free(v), gpu->free(o), gpu->free(lse);
}

void t_sparse_wgmma_fwd_all(void) {
    // filter sparse_wgmma_fwd_perf: the timing rows alone
    if (wanted("sparse_wgmma_fwd.")) {
        AttnConfig ms = ms_cfg(16, 32, 8, -1); // qblock 128, region 16 (4 boxes per 64-key tile)
        t_sw("ms w16 top32 m8", &ms, 0, 0, 0, 1, 1000, 8, 2, 64, 0);
        t_sw("ms w16 top32 m8", &ms, 0, 0, 0, 1, 1000, 8, 2, 128, 0);
        AttnConfig mb = ms_cfg(128, 5, 1, 0); // moba-blk: region 128 (2 tiles), own block + 4
        t_sw("moba-blk w128 top5", &mb, 0, 0, 0, 1, 1500, 4, 4, 128, 0);
        t_sw("moba-blk w128 top5", &mb, 0, 0, 0, 2, 777, 4, 2, 64, 0);
        AttnConfig m32 = ms_cfg(32, 12, 4, 128); // region 32 (boxes of 32), qblock 128
        t_sw("ms w32 top12 m4", &m32, 0, 0, 0, 1, 1111, 4, 1, 128, 0);
        AttnConfig m48 = ms_cfg(48, 12, 4, -1); // region 48 (3 boxes of 16), qblock 192 (128 + 64)
        t_sw("ms w48 top12 m4", &m48, 0, 0, 0, 1, 1300, 4, 2, 64, 0);
        AttnConfig m64 = ms_cfg(64, 6, 1, 0); // qblock 64: 64-row CTAs
        t_sw("ms w64 top6 m1", &m64, 0, 0, 0, 1, 1000, 4, 2, 128, 0);
        AttnConfig big = ms_cfg(16, 64, 16, -1); // qblock 256 (2 CTAs per block), width 64
        t_sw("ms w16 top64 m16", &big, 0, 0, 0, 2, 3000, 4, 1, 128, 0);
        AttnConfig m1k = ms_cfg(16, 128, 64, -1); // qblock 1024: 192-row CTAs (wg3)
        t_sw("ms w16 top128 m64", &m1k, 0, 0, 0, 1, 3100, 4, 2, 128, 0);
        t_sw("ms w16 top128 m64", &m1k, 0, 0, 0, 1, 2900, 2, 2, 64, 0);
        // D 64 through the 192-row CTAs (lanes issue, the V warp, the walker's batches): GQA, B 2,
        // T not a multiple of 64, random lists with empty ones
        t_sw("ms w16 top128 m64", &m1k, 0, 0, 0, 2, 3000, 4, 2, 64, 0);
        t_sw("random r16 qb1024", NULL, 16, 1024, 100, 2, 2900, 4, 2, 64, 0);
        AttnConfig wi = attn_config_default(ATTN_WINDOW);
        wi.window = 512; // qblock = region = window = 512: 8 tiles a region, window masks
        t_sw("window 512", &wi, 0, 0, 0, 1, 2100, 4, 2, 128, 0);
        wi.window = 192;
        t_sw("window 192", &wi, 0, 0, 0, 1, 1000, 4, 2, 64, 0);
        AttnConfig s2 = attn_config_default(ATTN_S2);
        s2.group = 128, s2.ratio = 0; // qblock = region = 64
        t_sw("s2 g128", &s2, 0, 0, 0, 1, 1000, 8, 2, 128, 0);
        // random lists: any order, regions past the block, empty lists (rows that see nothing)
        t_sw("random r16 qb128", NULL, 16, 128, 24, 1, 1000, 4, 2, 128, 0);
        t_sw("random dup r16 qb128", NULL, 16, 128, 24, 1, 1000, 4, 2, 128, 0);
        t_sw("random r80 qb96", NULL, 80, 96, 6, 2, 901, 4, 4, 64, 0);
        t_sw("random r1024 qb256", NULL, 1024, 256, 3, 1, 2500, 2, 1, 128, 0);
        // the -1 contract
        AttnConfig mo = attn_config_default(ATTN_MOBA);
        mo.block = 64, mo.top = 4;
        t_sw("moba per-row b64 top4", &mo, 0, 0, 0, 1, 300, 4, 2, 64, 1);
        AttnConfig msp = ms;
        msp.positions = POS_REINDEXED;
        t_sw("ms positions inside", &msp, 0, 0, 0, 1, 1000, 4, 2, 64, 1);
        AttnConfig m8 = ms_cfg(8, 32, 16, -1); // region 8
        t_sw("ms w8", &m8, 0, 0, 0, 1, 600, 4, 2, 64, 1);
        t_sw("ms D=32", &ms, 0, 0, 0, 1, 300, 2, 2, 32, 1);
        if (!quick) {
            t_sw("ms w16 top32 m8", &ms, 0, 0, 0, 1, 4096, 8, 2, 128, 0);
            AttnConfig paper = ms_cfg(16, 512, 128, -1); // the paper config: qblock 2048
            t_sw("ms paper", &paper, 0, 0, 0, 1, 9000, 2, 1, 128, 0);
            AttnConfig mb2 = ms_cfg(128, 4096 / 128 / 16 + 1, 1, 0); // the bench's moba-blk
            t_sw("moba-blk", &mb2, 0, 0, 0, 1, 4096, 4, 4, 128, 0);
        }
    }
    if (!quick) {
        AttnConfig paper = ms_cfg(16, 512, 128, -1);
        t_sw_perf("paper32", "ms paper", paper, 32768);
        t_sw_perf("paper128", "ms paper", paper, 131072);
        t_dense_perf(32768);
        AttnConfig mblk = ms_cfg(128, 32768 / 128 / 16 + 1, 1, 0);
        t_sw_perf("moba32", "moba-blk", mblk, 32768);
        // the paper's key budget (8192 keys a list, 2048-row blocks) in regions of 64 / 32 keys:
        // what the 16-row boxes cost
        t_sw_perf("w64", "ms w64 top128 m32", ms_cfg(64, 128, 32, -1), 32768);
        t_sw_perf("w32", "ms w32 top256 m64", ms_cfg(32, 256, 64, -1), 32768);
    }
}
