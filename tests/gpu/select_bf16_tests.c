// select_bf16_tests.c: select_bf16 (cuda/select_bf16.cu) at the shapes where its speed matters;
// the lists must equal the CPU's attention_select on the same bf16-rounded inputs. The small
// shapes are checked in sparse_bf16_tests.c (t_sb) beside the kernels that read the lists.
//
// Each shape runs the ms paths, old (scores in global memory), fused (running top-S), tp (the
// default: fp16-split tensor-core scores with an error bound, exact scores where it cannot order;
// since s11 two passes where the rows are short enough, a threshold per row then a sweep from it,
// path 5) and tp-sweep (tp_select alone, the two passes off: path 4), twice each (the second run must repeat the bits), and compares every entry of the list
// with the CPU's (err = differing entries, tol 0). The fused / tp rows also fail when the path
// taken is not the mode's, or when rows failed (select_bf16_last_stats) where the inputs are not
// built for it (since s14 a failed row is redone in the call by fs_redo, no longer a fallback of the
// whole call: rows built to fail must fail and be redone, the others must not fail), so a fast path
// that silently hands its rows to the slow one is seen. Inputs: random normal q / k rounded to bf16; `period` > 0 makes
// key region r a copy of region r % period (equal scores: ties to the lower id); g_rise > 0
// scales key region r by 2^(r / g_rise) (rising scores: long runs of inserts, thresholds that
// jump). The default (auto) is tp since s7: sparse_bf16_tests.c's select_bf16.lists rows run it.
// The fused / tp rows print the call's counters (select_bf16_last_stats: failed rows, max inserts /
// survivors, histogram rows / updates, raised thresholds); the "hist every tile" rows fail unless tp
// ran histogram rows and updated them, "ms paper raise" (a survivor cap of S + 6) unless tp's
// finish raised thresholds (tp_raise, the 1M rows over 512 survivors; counted where t moved).
// The tp modes' failed rows and their cause must be 0, or on rows built for it (expect 64: ties p7 /
// p1) survivor-cap failures only, each redone; pass 1's thresholds must each leave nsel
// exact scores at or above them (tp2_thr_check, on the CPU, every row; s11 r6: 0 rows below on every
// row, and a mutation with TP_C1 = 0 put 85 rows of "ms paper gqa" below); "ms small over the
// two-pass cut" (maxld 8400 > TP2_MAXLD) must take tp_select (the two passes where tp_wgt runs: no cut);
// "ms small huge norms" (q, k x 2^52)
// fails every tp row by the bound: each redone (s14; fused before). tp-redo (s14): the tp mode with
// every 5th row of each batch forced through fs_redo (select_bf16_force_redo), on every shape; the LM
// shape rows (s14: H = KVH = 12, D 64, 32K, random and skewed inputs: g_skew) run every mode.
// tp-wgt (s13; sm_90): the tp mode again with tp_wgt (the two passes' second pass on wgmma, by
// default only past TW_MINLD = 1024 candidates a row: 32K tokens up) forced at every length
// (select_bf16_tw_min(0)), so every shape above (B 2, ties, rising, raise, huge norms, D 64, ...)
// runs it; the row fails unless tp_wgt ran in the call (select_bf16_last_tw) and made the lists
// exactly where the path is the two passes' (5), besides the tp row's own checks (pass 1's
// thresholds are tp's: checked there).
// Merge-1 plans (the bench's moba-blk) also run the blocks path (cuda/select_blocks.cu, path 3),
// and the info rows time the moba-blk selection at 32K / 128K with and without it.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../core/attention.h"
#include "../../core/common.h"
#include "../../cuda/attn_bf16.h"
#include "../../cuda/bf16.h"
#include "../../cuda/timing.h"
#include "bf16_check.h"
#include "gpu_check.h"

// cuda/select_bf16.cu's test hooks: the ms path (0 old, 1 fused, 2 tp; returns the previous one)
// and the path the last call took (0 old / other, 1 fused, 2 (until s14) fused fell back to old, 3 blocks,
// 4 tp)
int select_bf16_set_mode(int mode);
int select_bf16_last_path(void);
// tp's histogram rows: a threshold update every upd inserts (1: every tile); returns the previous
int select_bf16_tph_upd(int upd);
// the last fused / tp call's counters: failed rows, by buffer / survivors / too few / bound, max
// inserts, max survivors, histogram rows, histogram updates, raised thresholds, rows redone (fs_redo,
// s14: failed rows are redone exactly in the call, no next path); returns how many
int select_bf16_last_stats(int *st, int n);
// s14: fs_redo also redoes every n-th row of each batch (0: off); returns the previous
int select_bf16_force_redo(int n);
// pass 1's thresholds (16-bit keys [B, H, nblk, M]) of the last two-pass call, kept when
// select_bf16_tp2_keep(1); returns how many (0: none)
int select_bf16_tp2_keep(int on);
size_t select_bf16_tp2_thr(const int **thr);
// tp's finish: rows with more survivors than cap get their threshold raised (tp_raise; default
// TP_PMAX = 512); returns the previous cap
int select_bf16_tp_cap(int cap);
// tp's two passes (pass 1's thresholds, then a sweep without sketches; path 5) where they apply: 1 on,
// 0 off (tp_select alone, path 4), -1 MSLAB_SELECT_TP2; returns the previous setting
int select_bf16_tp2(int on);
int select_bf16_tw(void);
// tp_wgt (the two passes' second pass on wgmma) past minld candidates (0: every length; -1: the
// default: TW_MINLD 1024, or MSLAB_SELECT_TWMIN); returns the previous. select_bf16_last_tw: 1 the last call's lists came from
// tp_wgt, 2 it ran but failed rows (the call went on), 0 it did not run
int select_bf16_tw_min(int minld);
int select_bf16_last_tw(void);
// cuda/select_blocks.cu's switch (merge 1, few regions; path 3): 1 on, 0 off, -1 query; returns
// the previous setting. Modes 0 / 1 below run with it off; mode 2 (merge 1 plans only) with it on.
int select_blocks_set(int on);

static AttnConfig ms_cfg(int w, int top, int merge, int prefix) {
    AttnConfig c = attn_config_default(ATTN_MS);
    c.w = w, c.top = top, c.merge = merge, c.prefix = prefix;
    return c;
}

// > 0: tp's survivor cap for the next rows (select_bf16_tp_cap: rows past it raise their threshold)
static int g_tpcap = 0;

// the float a 16-bit threshold key stands for (select_bf16.cu's tp_unokey of t << 16: the least value
// whose key rounded down is t; t 0: none)
static double key16_value(int t) {
    if (t <= 0) return -INFINITY;
    uint32_t k = (uint32_t)t << 16, u = k >> 31 ? k & 0x7fffffffu : ~k;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
// the nth largest (n >= 1) of x[0 .. e) (reorders x)
static double nth_largest(double *x, int e, int n) {
    int lo = 0, hi = e - 1, kth = n - 1;
    while (lo < hi) {
        double p = x[(lo + hi) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (x[i] > p) i++;
            while (x[j] < p) j--;
            if (i <= j) {
                double t = x[i];
                x[i] = x[j], x[j] = t, i++, j--;
            }
        }
        if (kth <= j) hi = j;
        else if (kth >= i) lo = i;
        else break;
    }
    return x[kth];
}
// pass 1's thresholds (two-pass tp) against the exact scores: every selecting row's t1 must stand
// for a value that at least nsel = min(S, eligible) exact scores reach (else pass 2 would reject a
// region of the top S; lists could still come out right where ties hide it). Returns the violating
// rows; *slack: the least (nsel-th score - t1's value) / (|q| max |k|) over the rows (TP_C1 = 1.02e-3
// in these units is pass 1's bound)
static size_t tp2_thr_check(const AttnConfig *cfg, const AttnDims *d, const float *q, const float *k, int B,
                            int T, int H, int KVH, int D, const int *thr, double *slack) {
    int N = d->N, w = cfg->w, G = H / KVH;
    double *kbar = malloc(sizeof(double) * B * KVH * N * D), *kmax = calloc((size_t)B * KVH, sizeof(double));
    for (int b = 0; b < B; b++)
        for (int kh = 0; kh < KVH; kh++)
            for (int r = 0; r < N; r++) {
                double *dst = kbar + (((size_t)b * KVH + kh) * N + r) * D, ss = 0;
                int t1 = r * w + w < T ? r * w + w : T;
                for (int x = 0; x < D; x++) {
                    double a = 0;
                    for (int t = r * w; t < t1; t++) a += k[((size_t)b * T + t) * KVH * D + kh * D + x];
                    dst[x] = a / (t1 - r * w), ss += dst[x] * dst[x];
                }
                if (sqrt(ss) > kmax[b * KVH + kh]) kmax[b * KVH + kh] = sqrt(ss);
            }
    size_t bad = 0;
    double smin = INFINITY;
#pragma omp parallel reduction(+ : bad) reduction(min : smin)
    {
        double *sc = malloc(sizeof(double) * (N + 1)), *qb = malloc(sizeof(double) * D);
#pragma omp for schedule(dynamic, 1) collapse(2)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++)
                for (int c = d->first; c < d->nblk; c++) {
                    if (c == d->nblk - 1 && d->last_dense) continue;
                    const double *kb = kbar + ((size_t)b * KVH + h / G) * N * D;
                    for (int m = 0; m < d->M && c * d->M + m < N; m++) {
                        int g = c * d->M + m, e = attn_ms_eligible(d, c, g), nsel = e < d->S ? e : d->S;
                        double v = key16_value(thr[(((size_t)b * H + h) * d->nblk + c) * d->M + m]);
                        if (nsel <= 0 || v == -INFINITY) continue;
                        int r1 = g * w + w < T ? g * w + w : T;
                        double qn = 0;
                        for (int x = 0; x < D; x++) {
                            double a = 0;
                            for (int t = g * w; t < r1; t++) a += q[((size_t)b * T + t) * H * D + h * D + x];
                            qb[x] = a / (r1 - g * w), qn += qb[x] * qb[x];
                        }
                        for (int j = 0; j < e; j++) {
                            double a = 0;
                            for (int x = 0; x < D; x++) a += qb[x] * kb[(size_t)j * D + x];
                            sc[j] = a;
                        }
                        double sn = nth_largest(sc, e, nsel), sl = (sn - v) / (sqrt(qn) * kmax[b * KVH + h / G]);
                        bad += sn < v;
                        smin = sl < smin ? sl : smin;
                    }
                }
        free(sc), free(qb);
    }
    free(kbar), free(kmax);
    *slack = smin;
    return bad;
}

// s14: skewed inputs (many blocks choosing the same regions, as the LM's may): q += g_skew u, key
// region r of kv head hh += g_skew z(r, hh) u, with u a fixed direction (|u|^2 = 1/2) and z about
// normal with unit variance (a hash of r, hh)
static double g_skew = 0;
static double skew_u(int d, int D) { return ((d * 7) % 3 == 0 ? 1.0 : -0.5) / sqrt((double)D); }
static double skew_z(size_t r, int hh) {
    uint64_t z0 = (r * 0x9e3779b97f4a7c15ull) ^ ((uint64_t)hh << 40) ^ 0x5bd1e995ull;
    z0 = (z0 ^ (z0 >> 30)) * 0xbf58476d1ce4e5b9ull, z0 = (z0 ^ (z0 >> 27)) * 0x94d049bb133111ebull;
    double z = 0; // a sum of 4 uniforms
    for (int j = 0; j < 4; j++) z += (double)((z0 >> (16 * j)) & 0xffff) / 65536.0 - 0.5;
    return z * sqrt(3.0);
}

// q and k scaled by 2^g_big (tp's error bound cannot hold past |q| |k| = 2^100: every tp row fails
// by the bound, the two passes alike: every row redone by fs_redo, s14)
static int g_big = 0;

// > 0: key region r scaled by 2^(r / g_rise) (scores rising along the row: every new tile passes the
// running threshold, which then jumps past tp_compact's window of 256 key steps)
static double g_rise = 0;

// expect: 1, or 2 where fused must fail rows (redone; before s14: its fallback, the old path); | 4:
// merge 1 but the blocks path must decline (too many regions), so mode 2 takes the fused path too;
// | 8: tp must turn rows into histogram rows and update them (select_bf16_last_stats); | 16: tp must
// raise thresholds (with g_tpcap); | 32: rows over the two passes' cut (TP2_MAXLD candidates): tp
// takes tp_select (path 4) there; | 64: the tp modes may fail rows, by their survivor cap only
// (near-ties), each redone; | 128: every tp row fails by the bound (g_big), redone (before s14: tp
// modes took fused). The tp mode (the default: two passes, path 5) and tp-sweep (tp_select alone,
// path 4) both run; the histogram checks apply to tp-sweep. In the tp mode a two-pass call also
// keeps pass 1's thresholds, checked against the exact scores (tp2_thr_check: 0 violations)
static void t_sel(const char *name, AttnConfig cfg, int B, int T, int H, int KVH, int D,
                  int period, int expect) {
    // MSLAB_SELECT_ONLY=s: only the shapes whose name contains s; MSLAB_SELECT_TP_ONLY=1: only the tp
    // modes (tp, tp-sweep, tp-wgt); MSLAB_SELECT_TW_ONLY=1: only tp-wgt
    const char *only = getenv("MSLAB_SELECT_ONLY");
    if (only && !strstr(name, only)) return;
    int tponly = getenv("MSLAB_SELECT_TP_ONLY") && atoi(getenv("MSLAB_SELECT_TP_ONLY"));
    int twonly = getenv("MSLAB_SELECT_TW_ONLY") && atoi(getenv("MSLAB_SELECT_TW_ONLY")); // tp-wgt alone
    AttnDims d;
    MS_ASSERT(attn_config_check(&cfg, "attention") == 0, "%s", ms_error());
    MS_ASSERT(attn_dims(&cfg, T, &d) == 0, "%s", ms_error());
    char shape[160];
    snprintf(shape, sizeof shape, "%s T=%d H=%d/%d D=%d B=%d", name, T, H, KVH, D, B);
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D;
    size_t ni = (size_t)B * H * d.nblk * d.width;
    uint16_t *qb = malloc(nq * 2), *kb = malloc(nk * 2);
    float *q = malloc(nq * 4), *k = malloc(nk * 4);
    for (size_t i = 0; i < nq; i++)
        qb[i] = bf16_from_f32((float)(ldexp(rng_normal(&rng), g_big) + g_skew * skew_u((int)(i % D), D)));
    for (size_t i = 0; i < nk; i++) {
        double sc = ldexp(g_rise > 0 ? exp2((double)(i / ((size_t)KVH * D) % T / cfg.w) / g_rise) : 1.0, g_big);
        double sk = g_skew ? g_skew * skew_z(i / ((size_t)KVH * D) % T / cfg.w, (int)(i / D % KVH)) * skew_u((int)(i % D), D) : 0;
        kb[i] = bf16_from_f32((float)(rng_normal(&rng) * sc + sk));
    }
    if (period > 0) // key region r = region r % period (token rows of the same offset)
        for (int b = 0; b < B; b++)
            for (int t = period * cfg.w; t < T; t++) {
                int src = (t / cfg.w % period) * cfg.w + t % cfg.w;
                memcpy(kb + ((size_t)b * T + t) * KVH * D, kb + ((size_t)b * T + src) * KVH * D,
                       (size_t)KVH * D * 2);
            }
    for (size_t i = 0; i < nq; i++) q[i] = bf16_to_f32(qb[i]);
    for (size_t i = 0; i < nk; i++) k[i] = bf16_to_f32(kb[i]);
    AttnIndex ic = {d.qblock, d.nblk, d.region, d.width, d.window, NULL, NULL, NULL, NULL, 0};
    ic.idx = malloc(sizeof(int) * ni);
    double t0 = now_s();
    cpu->attention_select(&ic, &cfg, q, k, B, T, H, KVH, D);
    double tcpu = now_s() - t0;

    uint16_t *d_q = gpu->alloc(nq * 2 + 16), *d_k = gpu->alloc(nk * 2 + 16);
    gpu->upload(d_q, qb, nq * 2);
    gpu->upload(d_k, kb, nk * 2);
    AttnIndex ig = ic;
    ig.idx = gpu->alloc(sizeof(int) * ni);
    int *h1 = malloc(sizeof(int) * ni), *h2 = malloc(sizeof(int) * ni), *fill = malloc(sizeof(int) * ni);
    for (size_t i = 0; i < ni; i++) fill[i] = 0x7eadbeef;
    // old, fused, tp (two passes), blocks, tp-sweep, tp-wgt (s13: the tp mode with the second pass
    // on wgmma, tp_wgt, forced at every length; sm_90 only; it must run in every call and, where
    // the path is the two passes', make the lists)
    for (int mode = 0; mode < 7; mode++) {
        if (mode == 3 && cfg.merge != 1) continue;
        if (mode == 5 && !select_bf16_tw()) continue;
        const int tpm = mode == 2 || mode >= 4, m2 = mode == 2 || mode == 5 || mode == 6;
        if ((tponly && !tpm) || (twonly && mode != 5)) continue;
        int twm = mode == 5 ? select_bf16_tw_min(0) : 0, tw = -1;
        int blk = select_blocks_set(mode == 3);
        int prev = select_bf16_set_mode(tpm ? 2 : mode ? 1 : 0), rc = 0, path = -1, st[11] = {0};
        int frc = mode == 6 ? select_bf16_force_redo(5) : 0; // tp-redo: every 5th row through fs_redo
        int cap = tpm && g_tpcap ? select_bf16_tp_cap(g_tpcap) : 0;
        int tp2 = mode == 4 ? select_bf16_tp2(0) : 0, keep = select_bf16_tp2_keep(0);
        size_t bad = 0, again = 0, tviol = 0, nthr = 0;
        double tslack = 0;
        double ms = 0;
        for (int rep = 0; rep < 2; rep++) {
            gpu->upload(ig.idx, fill, sizeof(int) * ni);
            int x;
            gpu->download(&x, ig.idx, 4); // sync
            select_bf16_tp2_keep(mode == 2 && rep == 0); // not in the timed call (tp-wgt: pass 1 as tp's)
            t0 = now_s();
            rc |= select_bf16(&ig, &cfg, d_q, d_k, B, T, H, KVH, D);
            gpu->download(rep ? h2 : h1, ig.idx, sizeof(int) * ni);
            if (rep == 1) ms = (now_s() - t0) * 1e3; // includes the list download
            if (rep == 0)
                path = select_bf16_last_path(), select_bf16_last_stats(st, 11), tw = select_bf16_last_tw();
            const int *thr;
            if (rep == 0 && (nthr = select_bf16_tp2_thr(&thr)) > 0)
                tviol = tp2_thr_check(&cfg, &d, q, k, B, T, H, KVH, D, thr, &tslack);
        }
        select_bf16_tp2_keep(keep);
        if (cap) select_bf16_tp_cap(cap);
        if (mode == 4) select_bf16_tp2(tp2);
        if (mode == 5) select_bf16_tw_min(twm);
        if (mode == 6) select_bf16_force_redo(frc);
        select_bf16_set_mode(prev);
        select_blocks_set(blk);
        if (rc) {
            printf("    select_bf16 returned -1\n");
            bad = ni;
        } else {
            for (size_t i = 0; i < ni; i++) again += h1[i] != h2[i];
            bad = list_diff(h1, ic.idx, ni, d.width, d.nblk, H);
        }
        // s14: a failed row no longer sends the call to the next path (fs_redo redoes it in the call):
        // the path is the mode's, the rows redone are counted (st[10])
        int want = mode == 0 ? 0 : mode == 1 ? 1 : mode == 3 ? ((expect & 4) ? 1 : 3) : m2 && !(expect & 32) ? 5 : 4;
        // failed rows only where the inputs are built for them: masses of ties (tp), all-equal keys
        // (fused too), near-ties past the two passes' survivor cap (tp: survivor failures only), huge
        // norms (tp: the bound); each of them redone
        const int fused = mode == 1 || (mode == 3 && (expect & 4));
        const int fok = (fused && (expect & 3) == 2) ||
                        (tpm && (period > 0 || (expect & 3) == 2 || ((expect & 64) && st[0] == st[2]) ||
                                 ((expect & 128) && st[4] > 0)));
        if ((fused || tpm) && st[0] > 0 && (!fok || st[10] <= 0)) {
            printf("    %d rows failed (buffer %d, survivors %d, too few %d, bound %d), %d redone: not expected\n",
                   st[0], st[1], st[2], st[3], st[4], st[10]);
            bad += 1;
        }
        // ... and where they are, the fallback must have run (the tests' forced failures stay meaningful)
        if ((fused && (expect & 3) == 2 && st[10] <= 0) || (tpm && (expect & 128) && (st[4] <= 0 || st[10] <= 0))) {
            printf("    expected failed rows redone: %d failed (bound %d), %d redone\n", st[0], st[4], st[10]);
            bad += 1;
        }
        if (mode == 6 && st[10] <= 0) {
            printf("    tp-redo: no row redone\n");
            bad += 1;
        }
        if (mode == 2 && (tviol > 0 || (want == 5 && nthr == 0))) {
            printf("    pass 1's thresholds: %zu kept, %zu rows below their t1 (nsel-th exact score < t1)\n", nthr,
                   tviol);
            bad += 1;
        }
        if (mode == 5 && (tw == 0 || (path == 5) != (tw == 1))) { // tp_wgt: ran, made the lists
            printf("    tp-wgt: tp_wgt %s (path %d)\n", tw == 0 ? "did not run" : tw == 1 ? "made the lists"
                                                                               : "failed rows", path);
            bad += 1;
        }
        if (path != want) {
            printf("    path %d, expected %d (0 old, 1 fused, 2 fused fell back (until s14), 3 blocks, 4 tp, 5 tp two-pass)\n",
                   path, want);
            bad += 1;
        }
        if (mode == 4 && path == 4 && (expect & 8) && (st[7] <= 0 || st[8] <= 0)) {
            printf("    tp ran %d histogram rows, %d updates: expected some\n", st[7], st[8]);
            bad += 1;
        }
        if (tpm && path >= 4 && (expect & 16) && st[9] <= 0) {
            printf("    tp raised no row's threshold: expected some\n");
            bad += 1;
        }
        char op[64];
        snprintf(op, sizeof op, "select_bf16.%s",
                 (const char *[]){"old", "fused", "tp", "blocks", "tp-sweep", "tp-wgt", "tp-redo"}[mode]);
        report(op, shape, (double)bad, 0, again ? 0 : 1);
        printf("    %s: %.2f ms (CPU %.2f s), path %d", op, ms, tcpu, path);
        if (mode == 1 || tpm) // failed rows, max inserts / survivors, histogram rows / updates
            printf(" (failed %d: buffer %d, survivors %d, too few %d, bound %d; redone %d; max inserts %d, max "
                   "survivors %d, hist rows %d, updates %d, raised %d)",
                   st[0], st[1], st[2], st[3], st[4], st[10], st[5], st[6], st[7], st[8], st[9]);
        if (mode == 5) printf(" tp_wgt %d", tw);
        if (nthr) printf("; t1 check %zu rows below, min slack %.3g |q| max|k|", tviol, tslack);
        printf("\n");
    }
    free(h1), free(h2), free(fill), free(qb), free(kb), free(q), free(k), free(ic.idx);
    gpu->free(d_q), gpu->free(d_k), gpu->free(ig.idx);
}

// MSLAB_SELECT_PERF=T1,T2,...: time select_bf16 (paper config, B=1 H=KVH=32 D=128, random bf16
// q / k, no CPU reference) per path (tp, fused); MSLAB_SELECT_PERF_OLD=1 also times the old path,
// MSLAB_SELECT_PERF_TP=1 only tp (the default, two passes where they apply) and tp-sweep (tp_select
// alone); MSLAB_SELECT_PERF_NORMAL=1: the bench's inputs (attn_bench.c: cuda_fill_bf16_normal, seeds
// 1000 / 1001, scale 1) instead of the uniform pool below.
// MSLAB_SELECT_PERF_H / _D (s14): heads (H = KVH) and head dim instead of 32 / 128 (the LM row: 12 / 64);
// MSLAB_SELECT_PERF_SKEW=s (s14): a common direction u added to q (s u) and to key region r (s z_r u,
// z_r one normal per region and head): many blocks choose the same regions (skewed lists).
// Rows are information only (not in the default run).
// blk: the bench's moba-blk plan instead (w 128, merge 1, prefix 0, top nb / 16 + 1), timed with
// the blocks path (select_blocks.cu) and without it (fused)
static void t_sel_perf(int T, int blk) {
    int nb = (T + 127) / 128;
    AttnConfig cfg = blk ? ms_cfg(128, (nb / 16 > 1 ? nb / 16 : 1) + 1, 1, 0) : ms_cfg(16, 512, 128, -1);
    int H = getenv("MSLAB_SELECT_PERF_H") ? atoi(getenv("MSLAB_SELECT_PERF_H")) : 32;
    int D = getenv("MSLAB_SELECT_PERF_D") ? atoi(getenv("MSLAB_SELECT_PERF_D")) : 128;
    double skew = getenv("MSLAB_SELECT_PERF_SKEW") ? atof(getenv("MSLAB_SELECT_PERF_SKEW")) : 0;
    AttnDims d;
    MS_ASSERT(attn_dims(&cfg, T, &d) == 0, "%s", ms_error());
    size_t n = (size_t)T * H * D, ni = (size_t)H * d.nblk * d.width;
    uint16_t *h = malloc(n * 2);
    uint64_t s = 0x9e3779b97f4a7c15ull ^ (uint64_t)T;
    uint16_t *d_q = gpu->alloc(n * 2 + 16), *d_k = gpu->alloc(n * 2 + 16);
    // a pool of 2^20 + 7 random values (splitmix64 -> uniform [-1, 1) -> bf16), copied with a
    // different rotation per block (random generation of 2^28 values took ~30 s on the host)
    size_t pn = ((size_t)1 << 20) + 7;
    int normal = getenv("MSLAB_SELECT_PERF_NORMAL") && atoi(getenv("MSLAB_SELECT_PERF_NORMAL"));
    if (normal) cuda_fill_bf16_normal(d_q, n, 1000, 1.0f), cuda_fill_bf16_normal(d_k, n, 1001, 1.0f);
    uint16_t *pool = malloc(pn * 2);
    for (size_t i = 0; i < pn && !normal; i++) {
        uint64_t z = (s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull, z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        pool[i] = bf16_from_f32((float)((double)(z >> 11) * 0x1p-52 - 1.0));
    }
    for (int t = 0; t < 2 && !normal; t++) {
        for (size_t i0 = 0, b = 0; i0 < n; i0 += pn, b++) {
            size_t len = n - i0 < pn ? n - i0 : pn, rot = (b * 7919 + (size_t)t * 104729) % pn;
            size_t a1 = pn - rot < len ? pn - rot : len;
            memcpy(h + i0, pool + rot, a1 * 2);
            if (len > a1) memcpy(h + i0 + a1, pool, (len - a1) * 2);
        }
        if (skew > 0) // q += s u, key region r of head hh += s z(r, hh) u (as t_sel's g_skew)
            for (size_t i = 0; i < n; i++) {
                size_t row = i / D;
                double u = skew_u((int)(i % D), D), z = t ? skew_z(row / H / cfg.w, (int)(row % H)) : 1.0;
                h[i] = bf16_from_f32(bf16_to_f32(h[i]) + (float)(skew * z * u));
            }
        gpu->upload(t ? d_k : d_q, h, n * 2);
    }
    free(pool);
    AttnIndex ig = {d.qblock, d.nblk, d.region, d.width, d.window, NULL, NULL, NULL, NULL, 0};
    ig.idx = gpu->alloc(sizeof(int) * ni);
    const char *upd = getenv("MSLAB_SELECT_PERF_UPD"); // tp's histogram update interval (s9 A/B)
    int upd_prev = upd ? select_bf16_tph_upd(atoi(upd)) : 0;
    int tponly = getenv("MSLAB_SELECT_PERF_TP") && atoi(getenv("MSLAB_SELECT_PERF_TP"));
    for (int mode = blk ? 3 : 4; mode >= 0; mode--) { // blocks / tp-sweep, tp, fused, old
        if (mode == 0 && !getenv("MSLAB_SELECT_PERF_OLD")) break;
        if (mode < 2 && tponly && !blk) break;
        if ((blk && mode == 2) || (!blk && mode == 3)) continue;
        int blk_prev = select_blocks_set(mode == 3);
        int prev = select_bf16_set_mode(mode == 3 ? 1 : mode == 4 ? 2 : mode), x;
        int tp2 = mode == 4 ? select_bf16_tp2(0) : 0;
        double t0 = 0;
        for (int r = -1; r < 2; r++) {
            if (r == 0) gpu->download(&x, ig.idx, 4), t0 = now_s();
            select_bf16(&ig, &cfg, d_q, d_k, 1, T, H, H, D);
        }
        gpu->download(&x, ig.idx, 4);
        double ms = (now_s() - t0) / 2 * 1e3;
        int st[11] = {0};
        select_bf16_last_stats(st, 11);
        if (mode == 4) select_bf16_tp2(tp2);
        printf("    select_bf16 perf %s T=%d H=%d D=%d %s%s skew %g: %.3f ms, path %d (failed %d, max inserts %d, "
               "max survivors %d, hist rows %d, updates %d, raised %d, redone %d)\n",
               (const char *[]){"old", "fused", "tp", "blocks", "tp-sweep"}[mode], T, H, D, blk ? "moba-blk" : "paper",
               normal ? " normal" : "", skew, ms, select_bf16_last_path(), st[0], st[5], st[6], st[7], st[8], st[9], st[10]);
        select_bf16_set_mode(prev);
        select_blocks_set(blk_prev);
    }
    if (upd) select_bf16_tph_upd(upd_prev);
    free(h);
    gpu->free(d_q), gpu->free(d_k), gpu->free(ig.idx);
}

void t_select_bf16_all(void) {
    if (!wanted("select_bf16")) return;
    const char *perf = getenv("MSLAB_SELECT_PERF"), *pblk = getenv("MSLAB_SELECT_PERF_BLK");
    if (perf || pblk) { // MSLAB_SELECT_PERF_BLK=T1,...: the moba-blk plan
        for (const char *p = perf ? perf : pblk; *p;) {
            int T = atoi(p);
            if (T > 0) t_sel_perf(T, !perf);
            while (*p && *p != ',') p++;
            if (*p) p++;
        }
        return;
    }
    AttnConfig paper = ms_cfg(16, 512, 128, -1); // S 384, prefix 8192
    AttnConfig m64 = ms_cfg(16, 512, 64, -1);    // S 448
    AttnConfig small = ms_cfg(16, 64, 16, -1);   // S 48, prefix 1024: many tiles per row
    t_sel("ms small w16 top64 m16", small, 1, 4096, 2, 1, 64, 0, 1);
    t_sel("ms small ties p5", small, 1, 4096, 2, 2, 128, 5, 1);
    g_big = 52; // |q| |k| past 2^100: tp's bound fails every row (the two passes, then fused: MSLAB_SELECT_DEBUG
    t_sel("ms small huge norms", small, 1, 4096, 2, 1, 64, 0, 1 | 128); // shows no tp_select call)
    g_big = 0;
    // the bench's moba-blk plan (w 128, merge 1, prefix 0, top nb / 16 + 1) and merge-1 variants:
    // also run with the blocks path (select_blocks.cu, mode 2)
    t_sel("moba-blk", ms_cfg(128, 2, 1, 0), 1, 1000, 8, 2, 128, 0, 1);
    t_sel("moba-blk", ms_cfg(128, 5, 1, 0), 1, 8192, 4, 4, 128, 0, 1);
    if (quick) return;
    t_sel("merge1 w128 top33 ties p3", ms_cfg(128, 33, 1, 0), 1, 8192, 4, 2, 64, 3, 1);
    t_sel("merge1 w128 top17 ties p1", ms_cfg(128, 17, 1, 0), 1, 8192, 2, 2, 128, 1, 1);
    t_sel("merge1 w128 top17 B2", ms_cfg(128, 17, 1, 0), 2, 20000, 2, 1, 128, 0, 1);
    t_sel("merge1 w128 top101", ms_cfg(128, 101, 1, 0), 1, 16384, 4, 4, 64, 0, 1);
    t_sel("merge1 w64 top257 N1024", ms_cfg(64, 257, 1, 0), 1, 65536, 2, 1, 128, 0, 1);
    AttnConfig m1 = ms_cfg(128, 9, 1, 1024); // dense prefix, two local regions, dense partial tail
    m1.local_groups = 2, m1.tail = TAIL_DENSE;
    t_sel("merge1 w128 top9 lg2 prefix tail", m1, 1, 5000, 4, 2, 128, 0, 1);
    t_sel("merge1 w32 N1250 (blocks declines)", ms_cfg(32, 65, 1, 0), 1, 40000, 2, 2, 64, 0, 5);
    t_sel("ms paper", paper, 1, 16384, 4, 4, 128, 0, 1);
    t_sel("ms paper partial", paper, 1, 50007, 2, 2, 64, 0, 1); // partial region and group
    t_sel("ms paper gqa", paper, 1, 65536, 2, 1, 128, 0, 1);
    t_sel("ms paper B2", paper, 2, 20000, 2, 1, 128, 0, 1);
    // s14: the LM row's shape (H = KVH = 12, D 64, 32K), random and skewed inputs
    t_sel("ms paper LM shape", paper, 1, 32768, 12, 12, 64, 0, 1);
    g_skew = 1;
    t_sel("ms paper LM shape skew", paper, 1, 32768, 12, 12, 64, 0, 1);
    g_skew = 0;
    // the longest row a bit over the two passes' cut (TP2_MAXLD = 8192 candidates): tp_select, but where
    // the second pass runs on wgmma (tp_wgt, s12: no cut) the two passes
    t_sel("ms small over the two-pass cut", small, 1, 16 * 8400, 2, 1, 64, 0, select_bf16_tw() ? 1 : 1 | 32);
    t_sel("ms m64", m64, 1, 32768, 2, 2, 128, 0, 1);
    AttnConfig lg2 = paper;
    lg2.local_groups = 2;
    t_sel("ms paper lg2", lg2, 1, 32768, 2, 2, 128, 0, 1);
    AttnConfig pre = ms_cfg(16, 512, 128, 2048); // first groups see fewer than S regions
    t_sel("ms paper prefix 2048", pre, 1, 24576, 2, 2, 128, 0, 1);
    AttnConfig tail = paper;
    tail.tail = TAIL_DENSE;
    t_sel("ms paper tail dense", tail, 1, 30001, 2, 2, 128, 0, 1);
    // near-ties past the two passes' survivor cap (s11 r4: 561 rows fail, tp_select likewise)
    t_sel("ms paper ties p7", paper, 1, 32768, 2, 2, 128, 7, 1 | 64);
    t_sel("ms paper ties p1", paper, 1, 32768, 2, 2, 128, 1, 2 | 64); // all equal: fused falls back
    g_rise = 256; // rising scores: x2 every 256 regions (fused overflows its buffer: old path)
    t_sel("ms paper rising", paper, 1, 32768, 2, 2, 128, 0, 1);
    g_rise = 0;
    // tp's histogram rows (tp_hist_update: rows of > 640 candidates whose sketch compaction finds
    // few keys past the bins) updated every tile (many updates, shifts by a few bins; S 48: rows
    // turn at their first compaction; ties p97: ~20 copies of each score, masses at the threshold;
    // rising: rows that must not turn, or whose coarse bins shift)
    int tu = select_bf16_tph_upd(1);
    t_sel("ms paper hist every tile", paper, 1, 65536, 2, 1, 128, 0, 9);
    t_sel("ms small hist every tile", small, 1, 32768, 2, 1, 64, 0, 9);
    t_sel("ms small hist every tile ties p97", small, 1, 32768, 2, 1, 128, 97, 9);
    g_rise = 64;
    t_sel("ms small hist every tile rising", small, 1, 16384, 2, 1, 64, 0, 9);
    g_rise = 128;
    t_sel("ms paper hist every tile rising", paper, 1, 32768, 2, 1, 128, 0, 9);
    g_rise = 0;
    // tp_raise (rows with more survivors than the cap: 493-516 at 1M with 4-key bins) on most rows
    g_tpcap = 390; // S 384
    t_sel("ms paper raise", paper, 1, 32768, 2, 2, 128, 0, 17);
    // S 48, histogram rows: rows over 50 take the raise path, whose lower bounds never pass t here
    // (s10 r6: 0 thresholds moved; the "raised" count is of moved ones): lists equal on that path
    g_tpcap = 50;
    t_sel("ms small hist every tile raise", small, 1, 32768, 2, 1, 64, 0, 9);
    g_tpcap = 0;
    select_bf16_tph_upd(tu); // the default back
    t_sel_perf(32768, 1); // info: the moba-blk selection, blocks vs fused, B=1 H=32 D=128
    t_sel_perf(131072, 1);
}
