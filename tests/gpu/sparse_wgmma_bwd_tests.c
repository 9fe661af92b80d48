// sparse_wgmma_bwd_tests.c: the Hopper wgmma block-sparse backward (cuda/flash_wgmma_bwd.cu,
// attn_bf16.h sparse_wgmma_bwd) against the CPU's fp32 op on the same bf16-rounded inputs and
// the same list (filter "sparse_wgmma_bwd").
//
// Inputs q, k, v, dout ~ N(0, 1) rounded to bf16; the reference is the CPU's sparse_attention_fwd
// (out, lse) and sparse_attention_bwd on the rounded values (out rounded to bf16 as the GPU gets
// it). Lists: hand-made (each block's own regions, random other regions, earlier and later ones,
// in random slot order, then -1 slots), the CPU's attention_select for ms and the bench's
// moba-blk config, and the window kind (window masks). dq, dk, dv: whole-tensor relative L2 (tol
// 1e-2), outputs NaN-poisoned before every call; each pass runs twice. Regions of 64k keys: the
// ordered mode (attn_bf16_set_deterministic(1); the split kernels, or where D = 128 and the
// regions are multiples of 128 keys the fused kernel with fixed-point dQ) must repeat its bits; the
// atomic mode (0; the fused kernel with fp32 atomics for dQ where D = 128 and the regions are
// multiples of 128 keys, else the split kernels) is judged by the tolerance only; rows *_var: the
// ordered mode's split kernels with the other tunables (128-key dK/dV CTAs where the regions
// allow, head-major grids, inverse lists walked latest block first); rows *_fx: the ordered fused
// kernel in list order with plain lse loads (D = 128, regions of 128k keys; must repeat its bits);
// D = 128 and regions of 128k keys: the default fused kernel (both modes) loads Q / dO by TMA and
// adds the dQ partials by bulk tensor reduce-adds, long walks launched early (s7); rows *_s6 /
// *_s6_atomic: the s6 fused paths (cp.async tiles, per-thread reds), ordered (must repeat its
// bits) / atomic.
// Skew lists: the first 3 regions in nearly every list (very uneven inverse lists). Regions of 16
// / 32 keys (ms with w < 64; rows *_small): the default kernel (the key-centric one where it runs,
// sparse_wgmma_keys.cu; else the query-centric sq_fused_kernel, D = 128: dK / dV by bulk
// reduce-adds, 64: reds) in the atomic mode (tolerance only) and in the ordered mode (*_small_ord:
// must also repeat its bits); the query-centric kernel forced (*_small_sq, *_small_sq_ord;
// *_small_ord1: its other launch order); their extra rows: uneven input magnitudes, one NaN q element (the reference's
// non-finite outputs must be non-finite; at D = 128 and 64; also at 128-key regions, the list-walk fused kernel), an odd count of 128-row CTAs in 256-row blocks, merge
// 128 at D = 64 and 128 (the paper config's and the LM's 2048-row blocks; at D = 128 the last
// block one CTA), and for the key-centric kernel's ordered dK / dV sums (s11) regions in nearly
// every list and launch groups of one (b, kv head) (a tiny MSLAB_SQ_ACC_MB), with H = KVH (regions
// held by one list: written by their CTA; "(list counts)" checks the list has both kinds), and
// bitwise comparisons of the ordered mode: *_small_ord_groups1 / *_groups6mb (groups of one / of
// a few vs the default grouping), *_small_ord_jitter (the CTAs' adds delayed by a hash of their
// index: other arrival orders, s12's chains), *_small_ord_decline (over a
// tiny budget the key-centric kernel declines: sq_fused_kernel's bits), *_small_ord_keys_ran (the
// default's bits differ from sq_fused_kernel's), on every small row's shape (s13: D 64, GQA with
// B 2, 32-key regions, the region straddling T, NaN / uneven inputs, 2048-row blocks).
// *_ord_timeout.* (s13): each ordered family's counters stalled with a tiny bound must report its
// timeout (cuda/ord_watch.cuh; every row fails on an unexpected one). *_small_ord_conv (s13: the
// kernel's own dK / dV rows = the convert pass's bits), and lists holding only the first of a
// block's own regions (s13: regions no list holds, key-tile CTAs without keys; D 128 / 64). Lists
// the kernel does not handle (16-key regions in 64-row blocks, 32-row or one-row blocks,
// positions inside) must return -1 having written nothing. A GPU that is not sm_90 makes every call return -1: the checks are
// skipped with a note. Timing rows (info, sparse_wgmma_bwd_perf): B = 1, H = KVH = 32, D = 128,
// T = 32K, moba-blk, ms w64 and the ms paper config: ms per call of sparse_wgmma_bwd (ordered;
// atomic; atomic forced split; the tunables; the kernels' shares) and of sparse_bf16_bwd in both
// modes.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/attention.h"
#include "../../cuda/attn_bf16.h"
#include "bf16_check.h"
#include "gpu_check.h"

// flash_wgmma_bwd.cu (tests, timing): the atomic mode's fused path, the split kernels run (bit 0
// dQ, bit 1 dK/dV), head-major grids (-1: the fused kernel only), dK/dV warpgroups; defaults
// 1, 3, -1, 1
void sparse_wgmma_bwd_tune(int fused, int parts, int hmajor, int kvwg);
void sparse_wgmma_bwd_tune_small(int on); // the 16 / 32-key region kernel (atomic mode), default on
// the ordered mode's fused kernel with fixed-point dQ (D = 128, regions of 128k keys); the dK/dV
// walks latest block first; the fused kernel's lse / Di by cp.async (defaults 1, -1, -1; -1: on
// the ordered fused path)
void sparse_wgmma_bwd_tune2(int fx, int desc, int ald);
// the fused kernel with TMA tiles and bulk dQ adds (0: the s6 paths); its three Q / dO buffers
// (defaults 1, 1)
void sparse_wgmma_bwd_tune3(int tml, int nb3);
// its modes (bits): 1 the ordered mode, 2 D = 64 (default 3); -1 the default
void sparse_wgmma_bwd_tune_small_modes(int bits);
// its ordered mode's launch order: 1 heads fastest, 0 CTAs fastest; -1 the default (heads
// fastest at D = 64 only)
void sparse_wgmma_bwd_tune_small_hfast(int on);
// the key-centric kernel for the same lists (sparse_wgmma_keys.cu): 0 off (sq_fused_kernel), 1
// D = 128, 2 also D = 64; -1 the default
void sparse_wgmma_bwd_tune_keys(int on);
// its ordered mode: the budget of one (b, kv head)'s pos and rank in MB (over it: -1,
// sq_fused_kernel runs; <= 0: the default) and jit: the CTAs delayed before their dK / dV adds by
// a hash of their index (other arrival orders; 0: off)
void sparse_wgmma_bwd_tune_keys_ord(double budget_mb, int jit);
// its ordered mode's dK / dV written by the kernel (s13; 1, the default) or (0) by the convert
// pass as in s12 (the reference of *_small_ord_conv); -1 the default
void sparse_wgmma_bwd_tune_keys_conv(int on);
// t_swb's inputs: 1 = uneven magnitudes (rows of q, dout, v scaled by powers of 2 from 2^-8 to
// 2^8); 2 = one q element NaN (the outputs the CPU makes non-finite must be non-finite, the rest
// close)
static int g_swb_inputs = 0;
// t_swb on lists of 16 / 32-key regions, D 128, the ordered mode's key-centric sums (s11):
// g_swb_cover: the list must hold, per (b, kv head), regions listed once (written by their CTA),
// several times (added in a fixed order, s12) and, where T % region, the last (straddling T) once
// somewhere. Every small row (s13: each shape, not one) then compares the ordered mode's bits:
// the default call's must equal those with launch groups of one (MSLAB_SQ_ACC_MB 0.05) and of a
// few (6 MB: 3, 3, 2 for the H = KVH row: kcnt's slab kbl > 0 after bk0 > 0), with the CTAs
// delayed by a hash of their index before their adds (other arrival orders: a chain that did not
// wait its turn would sum in another order), and the kernel declining one (b, kv head) over its
// budget must give sq_fused_kernel's bits (keys off), which must differ from the default's (the
// key-centric kernel ran)
static int g_swb_cover = 0;
// s13: hand-made lists hold only the first of a block's own regions (g_list_own1: regions no list
// holds, zero dK / dV rows written without a convert; key-tile CTAs of a block without keys), and
// g_swb_cover 2 then also requires regions no list holds
static int g_list_own1 = 0;

static int g_arch = 1; // 0: not an sm_90 GPU (the wgmma kernels return -1)

// A hand-made list [B, H, nblk, width]: per (b, h, block) the regions its rows lie in (so every
// row sees its own key), then up to `extra` other distinct regions (mostly earlier, 1 in 8 later:
// they add nothing; skew: 3 in 4 from the first 3 regions, whose inverse lists then hold nearly
// every block), all in random slot order, then -1.
static void make_list_skew(int *idx, int B, int H, int T, int qb, int R, int width, int extra,
                           int skew) {
    int nblk = (T + qb - 1) / qb, nreg = (T + R - 1) / R;
    int *seen = xalloc(sizeof(int) * nreg);
    for (int l = 0; l < B * H * nblk; l++) {
        int c = l % nblk, *lst = idx + (size_t)l * width, n = 0;
        memset(seen, 0, sizeof(int) * nreg);
        int r0 = c * qb / R, r1 = (c * qb + qb < T ? c * qb + qb : T) - 1;
        for (int r = r0; r <= (g_list_own1 ? r0 : r1 / R) && n < width; r++)
            lst[n++] = r, seen[r] = 1;
        int want = n + extra < width ? n + extra : width;
        for (int tries = 0; tries < 8 * extra && n < want; tries++) {
            int hi = rng_below(&rng, 8) ? r0 : nreg; // later regions now and then
            if (skew && rng_below(&rng, 4) && hi > 3) hi = 3;
            if (hi <= 0) continue;
            int r = (int)rng_below(&rng, (uint64_t)hi);
            if (!seen[r]) lst[n++] = r, seen[r] = 1;
        }
        for (int i = n - 1; i > 0; i--) { // shuffle the valid slots
            int j = (int)rng_below(&rng, (uint64_t)(i + 1)), t = lst[i];
            lst[i] = lst[j], lst[j] = t;
        }
        for (int i = n; i < width; i++) lst[i] = -1;
    }
    free(seen);
}

static void diag(const char *what, const float *g, const float *r, int B, int T, int NH, int D) {
    size_t n = (size_t)B * T * NH * D, nnan = 0;
    double ss = 0;
    for (size_t i = 0; i < n; i++) ss += (double)r[i] * r[i], nnan += isnan(g[i]) != 0;
    double rms = sqrt(ss / (n ? n : 1));
    size_t first = n, bad_rows = 0;
    for (size_t row = 0; row < n / D; row++) {
        int bad = 0;
        for (int d = 0; d < D; d++) {
            size_t i = row * D + d;
            if (!(fabs((double)g[i] - r[i]) <= 0.1 * rms)) bad = 1, first = first < i ? first : i;
        }
        bad_rows += bad;
    }
    printf("    %s: %zu NaN, %zu of %zu rows bad (ref rms %.3g)\n", what, nnan, bad_rows, n / D, rms);
    if (first < n) {
        int d = (int)(first % D), h = (int)(first / D % NH), t = (int)(first / D / NH % T);
        int b = (int)(first / ((size_t)D * NH * T));
        printf("    first bad: b=%d t=%d h=%d d=%d gpu %.6g ref %.6g\n", b, t, h, d, g[first],
               r[first]);
    }
}

// is the GPU an sm_90 (the dense wgmma backward handles a tiny shape)?
static int arch_is_90(uint16_t *dq, uint16_t *dk, uint16_t *dv, const uint16_t *dy,
                      const uint16_t *o, const float *lse, const uint16_t *q, const uint16_t *k,
                      const uint16_t *v) {
    return flash_wgmma_bwd(dq, dk, dv, dy, o, lse, q, k, v, 1, 1, 1, 1, 64) == 0;
}

// per (b, kv head): how many regions G nblk lists hold once, more than once, and (T % R) the
// (b, kv head)s holding the last region once; err = the missing kinds
static double list_cover(const AttnIndex *ic, int B, int T, int H, int KVH) {
    int G = H / KVH, R = ic->region, nreg = (T + R - 1) / R;
    int *cnt = xalloc(sizeof(int) * nreg);
    size_t once = 0, many = 0, tail = 0, none = 0;
    for (int bk = 0; bk < B * KVH; bk++) {
        memset(cnt, 0, sizeof(int) * nreg);
        for (int hg = 0; hg < G; hg++)
            for (int c = 0; c < ic->nblk; c++) {
                size_t l = ((size_t)(bk / KVH) * H + bk % KVH * G + hg) * ic->nblk + c;
                for (int s = 0; s < ic->width; s++) {
                    int r = ic->idx[l * ic->width + s];
                    if (r >= 0 && r < nreg) cnt[r]++;
                }
            }
        for (int r = 0; r < nreg; r++) once += cnt[r] == 1, many += cnt[r] > 1, none += !cnt[r];
        tail += cnt[nreg - 1] == 1;
    }
    free(cnt);
    printf("    (lists per (b, kv head): %zu regions once, %zu several times, %zu none, the last "
           "once in %zu of %d)\n", once, many, none, tail, B * KVH);
    return (once == 0) + (many == 0) + (g_swb_cover == 1 && T % R && tail == 0) +
           (g_swb_cover == 2 && none == 0);
}
// MSLAB_SQ_ACC_MB set (or unset: NULL); returns the old value (strdup) for acc_mb_restore
static char *acc_mb_set(const char *v) {
    const char *e = getenv("MSLAB_SQ_ACC_MB");
    char *keep = e ? strdup(e) : NULL;
    if (v) setenv("MSLAB_SQ_ACC_MB", v, 1);
    else unsetenv("MSLAB_SQ_ACC_MB");
    return keep;
}
static void acc_mb_restore(char *keep) {
    if (keep) setenv("MSLAB_SQ_ACC_MB", keep, 1), free(keep);
    else unsetenv("MSLAB_SQ_ACC_MB");
}

// One list: the reference, then sparse_wgmma_bwd in the ordered and the atomic mode; small: lists
// of 16 / 32-key regions, the atomic mode with the query-centric kernel on (rows *_small)
static void t_swb(const char *name, const AttnIndex *ic, int B, int T, int H, int KVH, int D,
                  int small) {
    if (!wanted("sparse_wgmma_bwd") || !g_arch) return;
    if (small && getenv("MSLAB_SWB_NO_SMALL")) return; // the >= 64-key lists alone (GPU rounds)
    if (!small && getenv("MSLAB_SWB_ONLY_SMALL")) return; // the 16 / 32-key lists alone
    char shape[128];
    snprintf(shape, sizeof shape, "%s T=%d H=%d/%d D=%d B=%d", name, T, H, KVH, D, B);
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D, nl = (size_t)B * H * T;
    size_t ni = (size_t)B * H * ic->nblk * ic->width;
    uint16_t *qb, *kb, *vb, *yb;
    float *q, *k, *v, *dy;
    rand_bf16(&qb, &q, nq), rand_bf16(&kb, &k, nk), rand_bf16(&vb, &v, nk), rand_bf16(&yb, &dy, nq);
    snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s",
             odd_inputs(g_swb_inputs, q, qb, dy, yb, v, vb, nq, nk, T, H, D));
    float *out = xalloc(nq * 4), *lse = xalloc(nl * 4), *outr = xalloc(nq * 4);
    uint16_t *ob = xalloc(nq * 2);
    cpu->sparse_attention_fwd(out, lse, q, k, v, ic, B, T, H, KVH, D);
    for (size_t i = 0; i < nq; i++) ob[i] = bf16_from_f32(out[i]), outr[i] = bf16_to_f32(ob[i]);
    float *dqr = xalloc(nq * 4), *dkr = xalloc(nk * 4), *dvr = xalloc(nk * 4);
    cpu->sparse_attention_bwd(dqr, dkr, dvr, dy, outr, lse, q, k, v, ic, B, T, H, KVH, D);

    uint16_t *d_q = dev_from(qb, nq * 2), *d_k = dev_from(kb, nk * 2), *d_v = dev_from(vb, nk * 2);
    uint16_t *d_y = dev_from(yb, nq * 2), *d_o = dev_from(ob, nq * 2);
    float *d_l = dev_from(lse, nl * 4);
    uint16_t *d_dq = gpu->alloc(nq * 2), *d_dk = gpu->alloc(nk * 2), *d_dv = gpu->alloc(nk * 2);
    AttnIndex ig = *ic;
    ig.idx = dev_from(ic->idx, ni * 4);

    int mode0 = attn_bf16_deterministic();
    // passes: ordered (default tunables), atomic, then ordered with 128-key dK/dV CTAs (regions
    // of 128k keys) and head-major grids (rows *_var); small: the atomic mode alone (*_small)
    // small: then the ordered mode of the same kernel (*_small_ord: repeats its bits)
    // D = 128 and regions of 128k keys: the ordered mode's default is the fused kernel with
    // fixed-point dQ (latest block first, lse / Di by cp.async); *_var: the split kernels (128-key
    // dK/dV CTAs, head-major grids, latest block first); *_fx (vi 5): the fused kernel in the
    // list order, lse / Di by plain loads (repeats its bits); *_s6 / *_s6_atomic (vi 9 / 10): the
    // s6 fused paths without TMA, ordered (repeats its bits) / atomic
    // small: *_small_ord1 (vi 6): the query-centric kernel's ordered mode with the other launch
    // order (CTAs fastest at D = 64, heads fastest at D = 128; repeats its bits); *_small /
    // *_small_ord: the default kernel (the key-centric one where it runs, sparse_wgmma_keys.cu);
    // *_small_sq / *_small_sq_ord (vi 7 / 8): the query-centric one (keys off)
    int fxok = !small && D == 128 && ic->region % 128 == 0;
    for (int pass = small ? 3 : 0; pass < (small ? 8 : fxok ? 6 : 3) && g_arch; pass++) {
        int vi = pass == 0 ? 1 : pass == 1 ? 0 : !small && pass == 3 ? 5 : !small && pass > 3 ? pass + 5 : small && pass >= 5 ? pass + 1 : pass;
        int mode = vi == 1 || vi == 2 || vi == 4 || vi == 5 || vi == 6 || vi == 8 || vi == 9;
        sparse_wgmma_bwd_tune_keys(vi >= 6 && vi <= 8 ? 0 : -1);
        sparse_wgmma_bwd_tune3(vi != 9 && vi != 10, 1); // *_s6*: the s6 fused paths (no TMA)
        attn_bf16_set_deterministic(mode);
        sparse_wgmma_bwd_tune2(vi != 2, vi == 2 ? 1 : vi == 5 ? 0 : -1, vi == 5 ? 0 : -1);
        sparse_wgmma_bwd_tune_small_modes(small ? 3 : -1);
        sparse_wgmma_bwd_tune_small_hfast(vi == 6 ? D != 64 : -1);
        sparse_wgmma_bwd_tune(1, 3, vi == 2 ? 3 : -1, vi == 2 ? 2 : 1);
        float *g[2][3];
        uint16_t *gb[2][3];
        int rc = 0;
        for (int rep = 0; rep < 2; rep++) {
            poison16(d_dq, nq), poison16(d_dk, nk), poison16(d_dv, nk);
            rc |= sparse_wgmma_bwd(d_dq, d_dk, d_dv, d_y, d_o, d_l, d_q, d_k, d_v, &ig, B, T, H,
                                   KVH, D);
            g[rep][0] = down16(d_dq, nq, &gb[rep][0]);
            g[rep][1] = down16(d_dk, nk, &gb[rep][1]);
            g[rep][2] = down16(d_dv, nk, &gb[rep][2]);
        }
        if (rc && !arch_is_90(d_dq, d_dk, d_dv, d_y, d_o, d_l, d_q, d_k, d_v)) {
            printf("    (sparse_wgmma_bwd: not an sm_90 GPU, checks skipped)\n");
            g_arch = 0;
        } else {
            if (rc) printf("    sparse_wgmma_bwd returned -1 on a list it must handle\n");
            static const char *nm[11][3] = {
                {"sparse_wgmma_bwd_atomic.dq", "sparse_wgmma_bwd_atomic.dk",
                 "sparse_wgmma_bwd_atomic.dv"},
                {"sparse_wgmma_bwd.dq", "sparse_wgmma_bwd.dk", "sparse_wgmma_bwd.dv"},
                {"sparse_wgmma_bwd_var.dq", "sparse_wgmma_bwd_var.dk", "sparse_wgmma_bwd_var.dv"},
                {"sparse_wgmma_bwd_small.dq", "sparse_wgmma_bwd_small.dk",
                 "sparse_wgmma_bwd_small.dv"},
                {"sparse_wgmma_bwd_small_ord.dq", "sparse_wgmma_bwd_small_ord.dk",
                 "sparse_wgmma_bwd_small_ord.dv"},
                {"sparse_wgmma_bwd_fx.dq", "sparse_wgmma_bwd_fx.dk", "sparse_wgmma_bwd_fx.dv"},
                {"sparse_wgmma_bwd_small_ord1.dq", "sparse_wgmma_bwd_small_ord1.dk",
                 "sparse_wgmma_bwd_small_ord1.dv"},
                {"sparse_wgmma_bwd_small_sq.dq", "sparse_wgmma_bwd_small_sq.dk",
                 "sparse_wgmma_bwd_small_sq.dv"},
                {"sparse_wgmma_bwd_small_sq_ord.dq", "sparse_wgmma_bwd_small_sq_ord.dk",
                 "sparse_wgmma_bwd_small_sq_ord.dv"},
                {"sparse_wgmma_bwd_s6.dq", "sparse_wgmma_bwd_s6.dk", "sparse_wgmma_bwd_s6.dv"},
                {"sparse_wgmma_bwd_s6_atomic.dq", "sparse_wgmma_bwd_s6_atomic.dk",
                 "sparse_wgmma_bwd_s6_atomic.dv"}};
            const float *ref[3] = {dqr, dkr, dvr};
            size_t n[3] = {nq, nk, nk};
            int nh[3] = {H, KVH, KVH};
            for (int t = 0; t < 3; t++) {
                int det = mode ? !memcmp(gb[0][t], gb[1][t], n[t] * 2) : -1;
                double e = rc ? INFINITY : g_swb_inputs == 2 ? nonfinite_err(g[0][t], ref[t], n[t])
                                                             : rel_l2(g[0][t], ref[t], n[t]);
                report(nm[vi][t], shape, e, 1e-2, det);
                if (!(e <= 1e-2)) diag(nm[vi][t], g[0][t], ref[t], B, T, nh[t], D);
            }
        }
        for (int r = 0; r < 2; r++)
            for (int t = 0; t < 3; t++) free(g[r][t]), free(gb[r][t]);
    }
    attn_bf16_set_deterministic(mode0);
    sparse_wgmma_bwd_tune(1, 3, -1, 1);
    sparse_wgmma_bwd_tune_keys(-1);
    sparse_wgmma_bwd_tune_small_modes(-1);
    sparse_wgmma_bwd_tune_small_hfast(-1);
    sparse_wgmma_bwd_tune2(1, -1, -1);
    sparse_wgmma_bwd_tune3(1, 1);
    if (small && g_swb_cover) report("sparse_wgmma_bwd_small (list counts)", shape,
                                     list_cover(ic, B, T, H, KVH), 0, -1);
    if (small && g_arch) { // the ordered mode's bits: default, groups of one, the adds delayed,
                           // declined (over a tiny budget), keys off
        uint16_t *gb[7][3];
        attn_bf16_set_deterministic(1);
        sparse_wgmma_bwd_tune_small_modes(3);
        for (int c = 0; c < 7; c++) { // 5: groups of up to 3 where a (b, kv head) takes < 2 MB
                                      // 6 (s13): the outputs by the convert pass, not the kernel
            char *keep = acc_mb_set(c == 1 ? "0.05" : c == 5 ? "6" : NULL);
            sparse_wgmma_bwd_tune_keys(c == 4 ? 0 : -1);
            sparse_wgmma_bwd_tune_keys_conv(c == 6 ? 0 : -1);
            sparse_wgmma_bwd_tune_keys_ord(c == 3 ? 1e-7 : 0, c == 2);
            poison16(d_dq, nq), poison16(d_dk, nk), poison16(d_dv, nk);
            int rc = sparse_wgmma_bwd(d_dq, d_dk, d_dv, d_y, d_o, d_l, d_q, d_k, d_v, &ig, B, T, H,
                                      KVH, D);
            if (rc) printf("    sparse_wgmma_bwd returned -1 (comparison %d)\n", c);
            free(down16(d_dq, nq, &gb[c][0])), free(down16(d_dk, nk, &gb[c][1]));
            free(down16(d_dv, nk, &gb[c][2]));
            acc_mb_restore(keep);
        }
        sparse_wgmma_bwd_tune_keys(-1), sparse_wgmma_bwd_tune_keys_ord(0, 0);
        sparse_wgmma_bwd_tune_keys_conv(-1);
        sparse_wgmma_bwd_tune_small_modes(-1);
        attn_bf16_set_deterministic(mode0);
        static const char *cn[5] = {"sparse_wgmma_bwd_small_ord_groups1",
                                    "sparse_wgmma_bwd_small_ord_jitter",
                                    "sparse_wgmma_bwd_small_ord_decline",
                                    "sparse_wgmma_bwd_small_ord_groups6mb",
                                    "sparse_wgmma_bwd_small_ord_conv"};
        int ca[5] = {1, 2, 3, 5, 6}, cb[5] = {0, 0, 4, 0, 0};
        size_t n[3] = {nq, nk, nk};
        size_t diff[6]; // elements whose bits differ (dq, dk, dv); 5: default vs keys off
        for (int i = 0; i < 6; i++) {
            int x = i < 5 ? ca[i] : 0, y = i < 5 ? cb[i] : 4;
            diff[i] = 0;
            for (int t = 0; t < 3; t++)
                for (size_t j = 0; j < n[t]; j++) diff[i] += gb[x][t][j] != gb[y][t][j];
            if (i < 5) report(cn[i], shape, (double)diff[i], 0, -1);
        }
        // the rows above compare key-centric calls only if the default ran that kernel: its bits
        // then differ from the query-centric kernel's (other sums, s32 dQ); equal bits here would
        // mean both declined and the rows above compared the fallback with itself
        report("sparse_wgmma_bwd_small_ord_keys_ran", shape, diff[5] == 0, 0, -1);
        for (int c = 0; c < 7; c++)
            for (int t = 0; t < 3; t++) free(gb[c][t]);
    }
    gpu->free(d_q), gpu->free(d_k), gpu->free(d_v), gpu->free(d_y), gpu->free(d_o), gpu->free(d_l);
    gpu->free(d_dq), gpu->free(d_dk), gpu->free(d_dv), gpu->free(ig.idx);
    free(qb), free(kb), free(vb), free(yb), free(q), free(k), free(v), free(dy), free(out),
        free(lse), free(outr), free(ob), free(dqr), free(dkr), free(dvr);
}

// The ordered mode's watchdog (s13; cuda/ord_watch.cuh): each family's counters stalled (a test
// hook: they start where no turn comes, so every chain's first wait times out) with a tiny bound
// (4096 cycles); the row passes only if the call's timeout was flagged with its family's bit
// and counted (attn_bf16_ord_timeouts; the row before it would fail on an unflagged one: report).
// Families: the keys backward's dK / dV chains (the default for 16-key regions), sq_fused_kernel
// (keys off), sparse_bf16_bwd, the dense wgmma fused kernel's ordered dQ (tunes 2 / 3: per-warp
// DET 2 / per-CTA DET 1) and flash_bf16_bwd.
void flash_wgmma_tune(int fwd, int dkdv, int dq); // flash_wgmma.cu (tests)
void sparse_bf16_tune(int flags); // sparse_bf16.cu (tests): 3 | 64 its fused backward, 3 the default
static void t_ord_timeout(void) {
    if (!wanted("sparse_wgmma_bwd_ord_timeout") || !g_arch) return;
    int B = 1, T = 700, H = 4, KVH = 2, D = 128, qb = 128, R = 16, width = 20;
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D, nl = (size_t)B * H * T;
    uint16_t *qh, *kh, *vh, *yh;
    float *qf, *kf, *vf, *yf;
    rand_bf16(&qh, &qf, nq), rand_bf16(&kh, &kf, nk), rand_bf16(&vh, &vf, nk), rand_bf16(&yh, &yf, nq);
    float *lse = xalloc(nl * 4);
    for (size_t i = 0; i < nl; i++) lse[i] = 8.f;
    uint16_t *d_q = dev_from(qh, nq * 2), *d_k = dev_from(kh, nk * 2), *d_v = dev_from(vh, nk * 2);
    uint16_t *d_y = dev_from(yh, nq * 2), *d_o = dev_from(yh, nq * 2);
    float *d_l = dev_from(lse, nl * 4);
    uint16_t *d_dq = gpu->alloc(nq * 2), *d_dk = gpu->alloc(nk * 2), *d_dv = gpu->alloc(nk * 2);
    AttnIndex ix = {qb, (T + qb - 1) / qb, R, width, 0, NULL, NULL, NULL, NULL, 0};
    size_t ni = (size_t)B * H * ix.nblk * width;
    int *idx = xalloc(ni * 4);
    make_list_skew(idx, B, H, T, qb, R, width, 10, 1);
    ix.idx = dev_from(idx, ni * 4);
    static const char *nm[6] = {"sparse_wgmma_bwd_ord_timeout.keys", "sparse_wgmma_bwd_ord_timeout.sq",
                                "sparse_wgmma_bwd_ord_timeout.sparse_bf16",
                                "sparse_wgmma_bwd_ord_timeout.wgmma_det2",
                                "sparse_wgmma_bwd_ord_timeout.wgmma_det1",
                                "sparse_wgmma_bwd_ord_timeout.flash_bf16"};
    static const int fam[6] = {ATTN_ORD_KEYS,     ATTN_ORD_SQ,       ATTN_ORD_SPARSE_BF16,
                               ATTN_ORD_DENSE_WG, ATTN_ORD_DENSE_WG, ATTN_ORD_DENSE_BF16};
    int mode0 = attn_bf16_set_deterministic(1), fams;
    for (int c = 0; c < 6; c++) {
        sparse_wgmma_bwd_tune_keys(c == 1 ? 0 : -1);
        if (c == 3 || c == 4) flash_wgmma_tune(9, c == 3 ? 2 : 3, 9);
        if (c == 2) sparse_bf16_tune(3 | 64); // (the fused kernel: the ordered one with waits)
        ord_taken(), attn_bf16_ord_timeouts(&fams); // (none pending: the rows before took them)
        attn_bf16_ord_test(4096, 1);
        int rc = c < 2 ? sparse_wgmma_bwd(d_dq, d_dk, d_dv, d_y, d_o, d_l, d_q, d_k, d_v, &ix, B,
                                          T, H, KVH, D)
                 : c == 2 ? sparse_bf16_bwd(d_dq, d_dk, d_dv, d_y, d_o, d_l, d_q, d_k, d_v, &ix, B,
                                            T, H, KVH, D)
                 : c < 5 ? flash_wgmma_bwd(d_dq, d_dk, d_dv, d_y, d_o, d_l, d_q, d_k, d_v, B, T,
                                           H, KVH, D)
                         : flash_bf16_bwd(d_dq, d_dk, d_dv, d_y, d_o, d_l, d_q, d_k, d_v, B, T, H,
                                          KVH, D);
        uint16_t *bits;
        free(down16(d_dk, nk, &bits)), free(bits); // (synchronises; the download reports it)
        attn_bf16_ord_test(0, 0);
        long n = ord_taken();
        attn_bf16_ord_timeouts(&fams);
        printf("    %s: rc %d, %ld timeout(s) reported, families 0x%x\n", nm[c], rc, n, fams);
        report(nm[c], "T=700 H=4/2 D=128 stalled", rc == 0 && n > 0 && (fams >> fam[c] & 1) ? 0 : 1,
               0, -1);
    }
    flash_wgmma_tune(9, 9, 9), sparse_wgmma_bwd_tune_keys(-1), sparse_bf16_tune(3);
    attn_bf16_set_deterministic(mode0);
    gpu->free(d_q), gpu->free(d_k), gpu->free(d_v), gpu->free(d_y), gpu->free(d_o), gpu->free(d_l);
    gpu->free(d_dq), gpu->free(d_dk), gpu->free(d_dv), gpu->free(ix.idx);
    free(qh), free(kh), free(vh), free(yh), free(qf), free(kf), free(vf), free(yf), free(lse),
        free(idx);
}

// hand-made list: query blocks of qb rows, regions of R keys, `extra` other regions per block
static void t_hand_skew(int B, int T, int H, int KVH, int D, int qb, int R, int width, int extra,
                        int window, int skew) {
    AttnIndex ix = {qb, (T + qb - 1) / qb, R, width, window, NULL, NULL, NULL, NULL, 0};
    ix.idx = xalloc(sizeof(int) * (size_t)B * H * ix.nblk * width);
    make_list_skew(ix.idx, B, H, T, qb, R, width, extra, skew);
    char name[96];
    snprintf(name, sizeof name, "hand%s qb%d r%d w%d+%d%s", skew ? " skew" : "", qb, R, width,
             extra, window ? " win" : "");
    if (window) snprintf(name + strlen(name), sizeof name - strlen(name), "%d", window);
    t_swb(name, &ix, B, T, H, KVH, D, R < 64);
    free(ix.idx);
}
static void t_hand(int B, int T, int H, int KVH, int D, int qb, int R, int width, int extra,
                   int window) {
    t_hand_skew(B, T, H, KVH, D, qb, R, width, extra, window, 0);
}

// a config's list from the CPU's selection on random bf16 q / k (the reference's own inputs are
// drawn again inside t_swb: the list need not come from them)
static void t_cfg(const char *name, AttnConfig cfg, int B, int T, int H, int KVH, int D) {
    if (!wanted("sparse_wgmma_bwd") || !g_arch) return;
    AttnDims d;
    if (attn_config_check(&cfg, "attention") || attn_dims(&cfg, T, &d)) { // a failed row, not an abort
        printf("    %s: invalid config: %s\n", name, ms_error());
        report("sparse_wgmma_bwd (config)", name, INFINITY, 0, -1);
        return;
    }
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D;
    uint16_t *qb, *kb;
    float *q, *k;
    rand_bf16(&qb, &q, nq), rand_bf16(&kb, &k, nk);
    AttnIndex ix = {d.qblock, d.nblk, d.region, d.width, d.window, NULL, NULL, NULL, NULL, 0};
    ix.idx = xalloc(sizeof(int) * (size_t)B * H * d.nblk * d.width);
    cpu->attention_select(&ix, &cfg, q, k, B, T, H, KVH, D);
    t_swb(name, &ix, B, T, H, KVH, D, d.region < 64);
    free(ix.idx), free(qb), free(kb), free(q), free(k);
}

// lists the kernel does not handle: -1 and the outputs untouched
static void t_declines(void) {
    if (!wanted("sparse_wgmma_bwd") || !g_arch) return;
    int B = 1, T = 300, H = 4, KVH = 2, D = 64;
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D, nl = (size_t)B * H * T;
    uint16_t *d_q = gpu->alloc(nq * 2), *d_k = gpu->alloc(nk * 2), *d_v = gpu->alloc(nk * 2);
    uint16_t *d_y = gpu->alloc(nq * 2), *d_o = gpu->alloc(nq * 2);
    float *d_l = gpu->alloc(nl * 4);
    uint16_t *d_dq = gpu->alloc(nq * 2), *d_dk = gpu->alloc(nk * 2), *d_dv = gpu->alloc(nk * 2);
    // {qblock, region}: 16-key regions in 64-row blocks, a 32-row block, one-row blocks (moba),
    // positions (the ordered mode); the same 16-key case in the atomic mode
    static const int QR[5][2] = {{64, 16}, {32, 64}, {1, 64}, {128, 64}, {64, 16}};
    double bad = 0;
    int mode0 = attn_bf16_deterministic();
    for (int c = 0; c < 5; c++) {
        attn_bf16_set_deterministic(c < 4);
        AttnIndex ix = {QR[c][0], (T + QR[c][0] - 1) / QR[c][0], QR[c][1], 2, 0, NULL, NULL, NULL,
                        NULL, 0};
        size_t ni = (size_t)B * H * ix.nblk * ix.width;
        int *h = xalloc(ni * 4);
        for (size_t i = 0; i < ni; i++) h[i] = i % 2 ? -1 : 0;
        ix.idx = dev_from(h, ni * 4);
        if (c == 3) ix.kpos = dev_from(h, ni * 4), ix.qpos = dev_from(h, (size_t)B * H * ix.nblk * 4);
        poison16(d_dq, nq), poison16(d_dk, nk), poison16(d_dv, nk);
        int rc = sparse_wgmma_bwd(d_dq, d_dk, d_dv, d_y, d_o, d_l, d_q, d_k, d_v, &ix, B, T, H, KVH, D);
        uint16_t *bits[3];
        float *f[3] = {down16(d_dq, nq, &bits[0]), down16(d_dk, nk, &bits[1]),
                       down16(d_dv, nk, &bits[2])};
        size_t touched = 0, n[3] = {nq, nk, nk};
        for (int t = 0; t < 3; t++)
            for (size_t i = 0; i < n[t]; i++) touched += bits[t][i] != BF16_NAN;
        if (rc != -1 || touched) {
            printf("    decline case %d (qblock %d region %d%s): rc %d, %zu outputs written\n", c,
                   QR[c][0], QR[c][1], c == 3 ? " kpos" : "", rc, touched);
            bad += 1;
        }
        for (int t = 0; t < 3; t++) free(f[t]), free(bits[t]);
        gpu->free(ix.idx);
        if (ix.kpos) gpu->free(ix.kpos), gpu->free(ix.qpos);
        free(h);
    }
    attn_bf16_set_deterministic(mode0);
    report("sparse_wgmma_bwd (-1)", "qb64 r16, qb32, qb1, kpos; atomic qb64 r16", bad, 0, -1);
    gpu->free(d_q), gpu->free(d_k), gpu->free(d_v), gpu->free(d_y), gpu->free(d_o), gpu->free(d_l);
    gpu->free(d_dq), gpu->free(d_dk), gpu->free(d_dv);
}

// MSLAB_SWB_HASH=1: the small-region timing rows also print an FNV-1a hash of the last call's dq,
// dk, dv (the ordered mode's bits repeat: code that must give the same bits compares across runs,
// an old binary beside a new one)
static void perf_hash_bwd(const char *what, const uint16_t *dq, const uint16_t *dk,
                          const uint16_t *dv, size_t n) {
    const char *e = getenv("MSLAB_SWB_HASH");
    if (!e || atoi(e) == 0) return;
    unsigned char *h = xalloc(n * 2);
    unsigned long long x = 1469598103934665603ull;
    const uint16_t *src[3] = {dq, dk, dv};
    for (int a = 0; a < 3; a++) {
        gpu->download(h, src[a], n * 2);
        for (size_t i = 0; i < n * 2; i++) x = (x ^ h[i]) * 1099511628211ull;
    }
    printf("    (info sparse_wgmma_bwd_perf: %s dq+dk+dv hash %016llx)\n", what, x);
    free(h);
}

// ---- timing rows (information): B = 1, H = KVH = 32, D = 128 ----
// MSLAB_SWB_PERF=name: that row alone; MSLAB_SWB_PERF_MIN: the defaults, the candidates and the
// kernels' shares only; MSLAB_SWB_PERF_REPS: timed calls per variant (3; 0: the warm-up alone, ncu); MSLAB_SWB_PERF_RAND: q, k rows drawn at random from perf_qkv's 1024-row
// period (no periodic block means: a selection like the bench's random inputs); MSLAB_SWB_PERF_ORD:
// the 16 / 32-key rows' default ordered call alone; MSLAB_SWB_PERF_KEYS: their key-centric calls
// alone (no query-centric rows)
static void t_perf(const char *name, AttnConfig cfg, int T) {
    if (!wanted("sparse_wgmma_bwd_perf") || !g_arch || getenv("MSLAB_WG_NO_PERF")) return;
    const char *only = getenv("MSLAB_SWB_PERF");
    if (only && strcmp(only, name)) return;
    int H = 32, D = 128, reps = 3, minimal = getenv("MSLAB_SWB_PERF_MIN") != NULL;
    if (getenv("MSLAB_SWB_PERF_H")) H = atoi(getenv("MSLAB_SWB_PERF_H")); // e.g. the LM's 12, 64
    if (getenv("MSLAB_SWB_PERF_D")) D = atoi(getenv("MSLAB_SWB_PERF_D"));
    if (getenv("MSLAB_SWB_PERF_REPS")) reps = atoi(getenv("MSLAB_SWB_PERF_REPS")); // 0: one call
    AttnDims d;
    MS_ASSERT(attn_dims(&cfg, T, &d) == 0, "%s", ms_error());
    size_t nq = (size_t)T * H * D, ni = (size_t)H * d.nblk * d.width;
    uint16_t *q, *k, *v, *hb = perf_qkv(nq, &q, &k, &v), *y = dev_from(hb, nq * 2);
    if (getenv("MSLAB_SWB_PERF_RAND")) {
        uint16_t *h2 = xalloc(nq * 2);
        size_t row = (size_t)H * D;
        for (size_t t = 0; t < (size_t)T; t++)
            memcpy(h2 + t * row, hb + (rng_below(&rng, 1024) % (size_t)T) * row, row * 2);
        gpu->upload(q, h2, nq * 2);
        for (size_t t = 0; t < (size_t)T; t++)
            memcpy(h2 + t * row, hb + (rng_below(&rng, 1024) % (size_t)T) * row, row * 2);
        gpu->upload(k, h2, nq * 2);
        free(h2);
    }
    uint16_t *o = gpu->alloc(nq * 2), *dq = gpu->alloc(nq * 2), *dk = gpu->alloc(nq * 2),
             *dv = gpu->alloc(nq * 2);
    float *lse = gpu->alloc((size_t)H * T * 4), sync;
    AttnIndex ix;
    AttnStats st;
    int *hidx = perf_list(&ix, &cfg, &d, q, k, T, H, D, &st);
    // the dK/dV work per region: how many (head, block) lists hold it (the CTAs' imbalance)
    int nreg = (T + d.region - 1) / d.region, inv_max = 0;
    int *cnt = xalloc(sizeof(int) * (size_t)H * nreg);
    for (size_t i = 0; i < ni; i++)
        if (hidx[i] >= 0 && hidx[i] < nreg) cnt[(i / d.width / d.nblk) * nreg + hidx[i]]++;
    double inv_mean = 0;
    for (int i = 0; i < H * nreg; i++)
        inv_max = cnt[i] > inv_max ? cnt[i] : inv_max, inv_mean += cnt[i];
    inv_mean /= (double)H * nreg;
    if (d.region < 64) { // the key-centric kernel's dK / dV sums: regions by their list count
        size_t hist[6] = {0};
        for (int i = 0; i < H * nreg; i++) hist[cnt[i] < 4 ? cnt[i] : cnt[i] < 8 ? 4 : 5]++;
        printf("    (info sparse_wgmma_bwd_perf %s T=%d: regions listed 0 / 1 / 2 / 3 / 4-7 / 8+ "
               "times: %zu / %zu / %zu / %zu / %zu / %zu, mean %.2f, max %d)\n",
               name, T, hist[0], hist[1], hist[2], hist[3], hist[4], hist[5], inv_mean, inv_max);
    }
    free(cnt), free(hidx);
    double f = 4.0 * st.pairs * D; // forward FLOPs; the backward counts 2.5x
    attn_bf16_sparse_fwd(o, lse, q, k, v, &ix, 1, T, H, H, D);
    int mode0 = attn_bf16_deterministic();
    if (d.region < 64) { // the default (key-centric) kernel and the query-centric one (both
        // modes) vs sparse_bf16 in both modes
        // x: wgmma small atomic, sparse_bf16 atomic, ordered, wgmma small ordered, the query-
        // centric kernel (keys off) atomic, ordered
        double t[6], tf[6], dd[3] = {-1, -1, -1};
        float *ga[3] = {NULL, NULL, NULL}; // the atomic mode's dq, dk, dv (fp32 sums: ~exact)
        for (int x = 0; x < 6; x++) {
            t[x] = tf[x] = 0;
            if (minimal && (x == 1 || x == 2)) continue; // MIN: no sparse_bf16 rows
            if (getenv("MSLAB_SWB_PERF_ORD") && x != 3) continue; // the default ordered call alone
            if (getenv("MSLAB_SWB_PERF_KEYS") && x >= 4) continue; // the key-centric calls alone
            attn_bf16_set_deterministic(x == 2 || x == 3 || x == 5);
            sparse_wgmma_bwd_tune_small(x != 1 && x != 2);
            sparse_wgmma_bwd_tune_small_modes((x == 3 || x == 5 ? 1 : 0) | (D == 64 ? 2 : 0));
            sparse_wgmma_bwd_tune_keys(x >= 4 ? 0 : -1);
            double t0 = 0;
            int rc = 0;
            for (int r = -1; r < reps; r++) {
                if (r == 0) gpu->download(&sync, lse, 4), t0 = now_s();
                if (x != 1 && x != 2)
                    rc |= sparse_wgmma_bwd(dq, dk, dv, y, o, lse, q, k, v, &ix, 1, T, H, H, D);
                else sparse_bf16_bwd(dq, dk, dv, y, o, lse, q, k, v, &ix, 1, T, H, H, D);
            }
            gpu->download(&sync, lse, 4);
            t[x] = rc ? 0 : (now_s() - t0) / reps * 1e3;
            tf[x] = t[x] > 0 ? 2.5 * f / t[x] * 1e-9 : 0;
            if (x == 3) perf_hash_bwd("small-region ordered", dq, dk, dv, nq);
            if (x == 0 || x == 3) { // the ordered mode's outputs against the atomic mode's
                uint16_t *bits;
                uint16_t *dev[3] = {dq, dk, dv};
                for (int a = 0; a < 3; a++) {
                    float *g = down16(dev[a], nq, &bits);
                    free(bits);
                    if (x == 0) ga[a] = g;
                    else dd[a] = ga[a] ? rel_l2(g, ga[a], nq) : -1, free(g), free(ga[a]);
                }
            }
        }
        printf("    (info sparse_wgmma_bwd_perf %s T=%d: ordered vs atomic outputs, relative L2: dq "
               "%.3g, dk %.3g, dv %.3g)\n", name, T, dd[0], dd[1], dd[2]);
        sparse_wgmma_bwd_tune_small(1);
        sparse_wgmma_bwd_tune_small_modes(-1);
        sparse_wgmma_bwd_tune_keys(-1);
        attn_bf16_set_deterministic(mode0);
        printf("    (info sparse_wgmma_bwd_perf %s T=%d H=%d D=%d: pairs %.4g; bwd ms (TFLOP/s at "
               "2.5x fwd): wgmma small-region atomic %.3f (%.1f), ordered %.3f (%.1f); query-"
               "centric (keys off) atomic %.3f (%.1f), ordered %.3f (%.1f); sparse_bf16 atomic "
               "%.3f (%.1f), ordered %.3f (%.1f))\n",
               name, T, H, D, st.pairs, t[0], tf[0], t[3], tf[3], t[4], tf[4], t[5], tf[5], t[1],
               tf[1], t[2], tf[2]);
        goto done;
    }
    {
    // wgmma {ordered, fused, parts, hmajor, kvwg} per pass; then sparse_bf16 ordered, atomic
    // ... fx: the ordered mode's fused kernel with fixed-point dQ (regions of 128k keys; -1 its
    // default), desc: the dK/dV walks latest block first, ald: the fused kernel's lse / Di by
    // cp.async (-1: on the ordered fused path). 9: ordered split; 10: ordered fused in list order,
    // plain lse loads; 11: ordered split, dK/dV head-major latest first; 12: atomic latest first
    enum { NW = 13 };
    static const int P[NW][8] = {
        {1, 1, 3, -1, 1, 1, -1, -1}, {0, 1, 3, -1, 1, 1, -1, -1}, {0, 0, 3, -1, 1, 1, -1, -1},
        {1, 1, 3, 3, 1, 0, -1, -1},  {0, 1, 3, 0, 1, 1, -1, -1},  {1, 1, 3, -1, 2, 0, -1, -1},
        {1, 1, 0, -1, 1, 0, -1, -1}, {1, 1, 2, -1, 1, 0, -1, -1}, {1, 1, 1, -1, 1, 0, -1, -1},
        {1, 1, 3, -1, 1, 0, -1, -1}, {1, 1, 3, -1, 1, 1, 0, 0},   {1, 1, 3, 1, 1, 0, 1, -1},
        {0, 1, 3, -1, 1, 1, 1, 1}};
    double t[NW + 2];
    for (int x = 0; x < NW + 2; x++) {
        t[x] = 0;
        if (minimal && (x == 2 || x == 3 || x == 4 || x == 5 || x >= NW)) continue;
        attn_bf16_set_deterministic(x < NW ? P[x][0] : x == NW);
        if (x < NW) sparse_wgmma_bwd_tune(P[x][1], P[x][2], P[x][3], P[x][4]);
        if (x < NW) sparse_wgmma_bwd_tune2(P[x][5], P[x][6], P[x][7]);
        double t0 = 0;
        int rc = 0;
        for (int r = -1; r < reps; r++) {
            if (r == 0) gpu->download(&sync, lse, 4), t0 = now_s();
            if (x < NW) rc |= sparse_wgmma_bwd(dq, dk, dv, y, o, lse, q, k, v, &ix, 1, T, H, H, D);
            else sparse_bf16_bwd(dq, dk, dv, y, o, lse, q, k, v, &ix, 1, T, H, H, D);
        }
        gpu->download(&sync, lse, 4);
        t[x] = rc || reps < 1 ? 0 : (now_s() - t0) / reps * 1e3;
    }
    sparse_wgmma_bwd_tune(1, 3, -1, 1);
    sparse_wgmma_bwd_tune2(1, -1, -1);
    attn_bf16_set_deterministic(mode0);
    double tf[NW + 2];
    for (int x = 0; x < NW + 2; x++) tf[x] = t[x] > 0 ? 2.5 * f / t[x] * 1e-9 : 0;
    printf("    (info sparse_wgmma_bwd_perf %s T=%d H=%d D=%d: pairs %.4g; bwd ms (TFLOP/s at 2.5x "
           "fwd): wgmma ordered %.3f (%.1f), atomic %.3f (%.1f), atomic split %.3f (%.1f); "
           "sparse_bf16 ordered %.3f (%.1f), atomic %.3f (%.1f))\n",
           name, T, H, D, st.pairs, t[0], tf[0], t[1], tf[1], t[2], tf[2], t[NW], tf[NW], t[NW + 1],
           tf[NW + 1]);
    printf("    (info sparse_wgmma_bwd_perf %s T=%d: ordered split head-major %.3f, atomic head-fastest "
           "%.3f; split 128-key dK/dV CTAs: ordered %.3f; split: pre (Di, inverse list) %.3f, +dK/dV "
           "%.3f, +dQ %.3f; "
           "inverse entries per region: max %d, mean %.1f)\n",
           name, T, t[3], t[4], t[5], t[6], t[7], t[8], inv_max, inv_mean);
    printf("    (info sparse_wgmma_bwd_perf %s T=%d: ordered split %.3f (%.1f); ordered fused in "
           "list order, plain lse loads %.3f (%.1f); ordered split, dK/dV head-major latest first "
           "%.3f (%.1f); atomic latest first, lse by cp.async %.3f (%.1f))\n",
           name, T, t[9], tf[9], t[10], tf[10], t[11], tf[11], t[12], tf[12]);
    }
done:
    free(hb);
    gpu->free(q), gpu->free(k), gpu->free(v), gpu->free(y), gpu->free(o), gpu->free(dq);
    gpu->free(dk), gpu->free(dv), gpu->free(lse), gpu->free(ix.idx);
}

static AttnConfig ms_cfg(int w, int top, int merge, int prefix) {
    AttnConfig c = attn_config_default(ATTN_MS);
    c.w = w, c.top = top, c.merge = merge, c.prefix = prefix;
    return c;
}

void t_sparse_wgmma_bwd_all(void) {
    // filter sparse_wgmma_bwd_perf: the timing rows alone; sparse_wgmma_bwd_ord_timeout: the
    // watchdog's rows alone
    if (!wanted("sparse_wgmma_bwd") && !wanted("sparse_wgmma_bwd_perf") &&
        !wanted("sparse_wgmma_bwd_ord_timeout"))
        return;
    // hand-made lists: one block of one tile first, then tails (T % 64 != 0), GQA, D 64 / 128,
    // blocks of 64 / 128 / 192 rows (dQ with 1 / 2 warpgroups), regions of 64 / 128 / 256 keys
    t_hand(1, 64, 1, 1, 128, 64, 64, 1, 0, 0);
    t_hand(1, 1000, 8, 2, 64, 128, 128, 6, 4, 0);
    t_hand(1, 1000, 8, 2, 128, 128, 128, 6, 4, 0);
    t_hand(2, 777, 4, 4, 128, 64, 128, 5, 3, 0);
    t_hand(1, 1000, 6, 3, 64, 192, 64, 9, 5, 0);
    t_hand(1, 999, 4, 1, 128, 128, 256, 4, 2, 0);
    t_hand(1, 1000, 8, 2, 128, 128, 64, 8, 5, 200); // window masks inside the regions
    AttnConfig wi = attn_config_default(ATTN_WINDOW);
    wi.window = 128;
    t_cfg("window 128", wi, 1, 1000, 8, 2, 128);
    wi.window = 192;
    t_cfg("window 192", wi, 1, 1000, 4, 2, 64);
    // ms with w >= 64 (the CPU's selection: -1 slots in the early blocks) and moba-blk
    t_cfg("ms w64 top8 m2", ms_cfg(64, 8, 2, -1), 1, 1000, 8, 2, 128);
    t_cfg("ms w64 top8 m2", ms_cfg(64, 8, 2, -1), 1, 1000, 8, 2, 64);
    t_cfg("moba-blk", ms_cfg(128, 1000 / 128 / 4 + 1, 1, 0), 1, 1000, 8, 8, 128);
    // very uneven inverse lists (the first 3 regions in nearly every list): GQA, B = 2
    t_hand_skew(2, 1500, 4, 2, 128, 128, 128, 8, 6, 0, 1);
    t_declines();
    t_ord_timeout();
    if (!quick) {
        t_hand(2, 3000, 8, 2, 128, 256, 128, 12, 8, 0);
        t_hand_skew(1, 4096, 4, 1, 128, 128, 128, 12, 10, 0, 1);
        t_cfg("moba-blk", ms_cfg(128, 4096 / 128 / 16 + 1, 1, 0), 1, 4096, 8, 2, 128);
        t_cfg("ms w128 top16 m1", ms_cfg(128, 16, 1, -1), 1, 4096, 4, 4, 64);
        // MSLAB_SWB_PERF_T: the moba-blk row at that length instead of 32K
        const char *pt = getenv("MSLAB_SWB_PERF_T");
        int T = pt ? atoi(pt) : 32768;
        t_perf("moba-blk", ms_cfg(128, T / 128 / 16 + 1, 1, 0), T);
        t_perf("ms w64 top64 m2", ms_cfg(64, 64, 2, -1), 32768);
    }
    // 16 / 32-key regions (the query-centric kernel, atomic and ordered mode, D = 128 / 64):
    // hand-made and ms lists, GQA, B = 2, 256-row blocks (two CTAs per list; last: the newest
    // kernel)
    t_hand(1, 1000, 8, 2, 128, 128, 16, 24, 12, 0);
    t_hand(2, 700, 4, 4, 128, 256, 32, 14, 6, 0);
    t_hand(2, 700, 4, 2, 64, 128, 16, 20, 10, 0);
    // an odd count of 128-row CTAs, 256-row blocks (the last one a single CTA)
    t_hand(1, 600, 4, 2, 128, 256, 16, 20, 10, 0);
    t_cfg("ms w16 top32 m8", ms_cfg(16, 32, 8, -1), 1, 1000, 8, 2, 128);
    t_cfg("ms w32 top12 m4", ms_cfg(32, 12, 4, -1), 1, 1111, 4, 1, 128);
    t_cfg("ms w16 top32 m8", ms_cfg(16, 32, 8, -1), 1, 1000, 6, 2, 64);
    // uneven magnitudes, a NaN input (GQA, B = 2)
    g_swb_inputs = 1;
    t_hand(2, 700, 4, 2, 128, 128, 16, 20, 10, 0);
    g_swb_inputs = 2;
    t_hand(2, 700, 4, 2, 128, 128, 16, 20, 10, 0);
    t_hand(2, 700, 4, 2, 64, 128, 16, 20, 10, 0); // D 64 (the key-centric kernel's NaN dq rows)
    t_hand(2, 700, 4, 2, 128, 128, 128, 6, 3, 0); // 128-key regions: the list-walk fused kernel
    g_swb_inputs = 0;
    // the key-centric kernel's ordered dK / dV (s11 sums, s12 chains): regions in nearly every
    // list (skew), and launch groups of one (b, kv head) (a tiny accumulator budget: 4 launches),
    // 32-key regions (s11 review) + H = KVH (regions listed once: written by their CTA at D 128,
    // the region straddling T among them) in groups of one, and the bits independent of the
    // grouping and of the CTAs' timing (delays), the decline over the budget
    t_hand_skew(1, 1000, 4, 2, 128, 128, 16, 24, 12, 0, 1);
    {
        char *keep = acc_mb_set("0.05");
        t_hand(2, 700, 4, 2, 128, 256, 32, 14, 6, 0);
        t_hand(2, 700, 4, 2, 64, 128, 16, 20, 10, 0);
        g_swb_cover = 1;
        t_hand(2, 700, 4, 4, 128, 256, 32, 14, 6, 0);
        g_swb_cover = 0;
        acc_mb_restore(keep);
    }
    // s13 (the outputs by the kernel): regions no list holds (zero dK / dV rows) and blocks with
    // key-tile CTAs that have no keys, D 128 / 64, B 2, GQA; the bits as the convert pass's
    // (only where wanted: the lists draw from rng, and the timing rows' inputs must stay main's)
    if (wanted("sparse_wgmma_bwd") && g_arch) {
        g_list_own1 = 1, g_swb_cover = 2;
        t_hand(2, 1000, 4, 2, 128, 128, 16, 24, 3, 0);
        t_hand(2, 900, 4, 2, 64, 256, 32, 16, 2, 0);
        g_list_own1 = g_swb_cover = 0;
    }
    if (!quick) {
        // merge 128 (2048-row blocks, as the paper config and the LM's ms row), D = 64
        t_cfg("ms w16 top256 m128", ms_cfg(16, 256, 128, 2048), 1, 6144, 4, 2, 64);
        t_cfg("ms w16 top64 m16", ms_cfg(16, 64, 16, -1), 2, 3000, 4, 1, 128);
        // 2048-row blocks at D = 128, the last one a single CTA (17 CTAs per head)
        t_cfg("ms w16 top256 m128", ms_cfg(16, 256, 128, -1), 1, 2100, 2, 1, 128);
        t_perf("ms paper", ms_cfg(16, 512, 128, -1), 32768);
    }
}
