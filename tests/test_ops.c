// test_ops.c: the CPU backend (core/cpu/) against closed forms, naive references in double and
// finite differences.
//
// Gradient checks (gradcheck below). Objective f(x) = sum(out .* R) for a fixed random R, so
// backward(dout = R) must give df/dx; f is accumulated in double from the float outputs.
//  - directional, GC_NDIR random directions u: sum(g .* (x+ - x-)) against f(x+) - f(x-) with
//    x+- = x +- h u, h = GC_H = 1e-3 (the actual float perturbation x+ - x- is used, so rounding
//    x + h u is no error source); relative tolerance GC_TOL_DIR = 2e-3, floored at 1e-2 of
//    sum |g .* (x+ - x-)| for directions nearly orthogonal to g;
//  - element-wise, GC_NEL random elements: (f(x + h e_i) - f(x - h e_i)) / 2h, h = GC_H_EL = 1e-2,
//    against g_i; relative tolerance GC_TOL_EL = 1e-2, floored at GC_FLOOR_EL = 1e-2 of max|g|.
// This works in float32 because the ops are deterministic: only outputs that depend on x change
// between f(x+) and f(x-), so the noise is a few ulps of those outputs. Measured: the correct
// backwards use at most 0.5 of a tolerance (attention dk is the noisiest); breaking one term by
// hand (rmsnorm's rstd^3 term or r^2 for r^3, rstd in rmsnorm dw, "- Di", the scale of dq, q/dout
// swapped in dk, P/dS swapped in dv, the causal mask off by one in the attention backward, the
// rotation sign of rope bwd, s(1-s) or g in swiglu, the one-hot or dloss in cross-entropy, +=
// turned into =) fails by 18x to 900x the tolerance.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/common.h"
#include "../core/ops.h"
#include "test.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#define GC_H 1e-3    // directional step
#define GC_H_EL 1e-2 // element step: one element moves, so a larger step keeps noise down
#define GC_TOL_DIR 2e-3
#define GC_TOL_EL 1e-2
#define GC_FLOOR_EL 1e-2
#define GC_NDIR 3
#define GC_NEL 24

static const Backend *be(void) { return backend_cpu(); }

static float *fvec(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

static void fill_normal(float *x, size_t n, Rng *r, float s) {
    for (size_t i = 0; i < n; i++) x[i] = s * rng_normal(r);
}

static float *rand_vec(size_t n, Rng *r, float s) {
    float *x = fvec(n);
    fill_normal(x, n, r, s);
    return x;
}

static double dot_d(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

static double max_abs(const float *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)x[i]));
    return m;
}

// ---- generic gradient check ----

typedef double (*ObjFn)(void *ctx); // runs the forward on the current inputs, returns sum(out .* R)

static void gradcheck(const char *what, ObjFn f, void *ctx, float *x, const float *g, size_t n,
                      Rng *rng) {
    int before = test_failed_checks;
    float *x0 = fvec(n), *u = fvec(n);
    memcpy(x0, x, n * sizeof(float));
    for (int d = 0; d < GC_NDIR; d++) {
        fill_normal(u, n, rng, 1.0f);
        double an = 0, scale = 0;
        for (size_t i = 0; i < n; i++) x[i] = x0[i] + (float)GC_H * u[i];
        double fp = f(ctx);
        for (size_t i = 0; i < n; i++) {
            float xm = x0[i] - (float)GC_H * u[i];
            double dx = (double)x[i] - xm;
            an += g[i] * dx;
            scale += fabs(g[i] * dx);
            x[i] = xm;
        }
        double fm = f(ctx);
        memcpy(x, x0, n * sizeof(float));
        double num = fp - fm;
        CHECK_REL(an, num, GC_TOL_DIR, 1e-2 * scale); // floor: u nearly orthogonal to g
    }
    double gmax = max_abs(g, n);
    for (int e = 0; e < GC_NEL; e++) {
        size_t i = rng_below(rng, n);
        float xp = x0[i] + (float)GC_H_EL, xm = x0[i] - (float)GC_H_EL;
        x[i] = xp;
        double fp = f(ctx);
        x[i] = xm;
        double fm = f(ctx);
        x[i] = x0[i];
        double num = (fp - fm) / ((double)xp - xm);
        CHECK_REL(g[i], num, GC_TOL_EL, GC_FLOOR_EL * gmax);
    }
    if (test_failed_checks != before) fprintf(stderr, "    ^ gradient check of %s\n", what);
    free(x0), free(u);
}

// Backward called twice must give 2x of once: rel 1e-5 of the array's scale (the GEMM adds each
// K slice to the gradient in turn, so a second call is not bitwise 2x). An op that overwrites
// instead of accumulating gives 1x and fails.
static void check_doubled(const char *what, const float *once, const float *twice, size_t n) {
    double m = max_abs(once, n), worst = 0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)twice[i] - 2.0 * once[i]) / (fabs(2.0 * once[i]) + m);
        if (!(e <= worst)) worst = e, wi = i;
    }
    CHECK(m > 0 && worst <= 1e-5);
    if (!(m > 0 && worst <= 1e-5))
        fprintf(stderr, "    ^ accumulate (+=) check of %s: [%zu] %.9g vs 2 x %.9g\n", what, wi,
                twice[wi], once[wi]);
}


// ======================================== embedding ==========================================

typedef struct {
    int N, C;
    const int *tok;
    float *wte, *out;
    const float *R;
} EmbCtx;

static double emb_f(void *p) {
    EmbCtx *c = p;
    be()->embedding_fwd(c->out, c->tok, c->wte, c->N, c->C);
    return dot_d(c->out, c->R, (size_t)c->N * c->C);
}

TEST(embedding_fwd_rows) {
    Rng r;
    rng_seed(&r, 1);
    int V = 7, C = 5, N = 6, tok[6] = {3, 0, 6, 3, 1, 3};
    float *wte = rand_vec((size_t)V * C, &r, 1), *out = fvec((size_t)N * C);
    be()->embedding_fwd(out, tok, wte, N, C);
    for (int n = 0; n < N; n++)
        CHECK(memcmp(out + n * C, wte + tok[n] * C, C * sizeof(float)) == 0);
    free(wte), free(out);
}

TEST(embedding_bwd_gradcheck) {
    Rng r;
    rng_seed(&r, 2);
    int V = 11, C = 70, N = 9, tok[9] = {3, 0, 10, 3, 1, 3, 7, 7, 0}; // repeats must sum
    float *wte = rand_vec((size_t)V * C, &r, 1), *out = fvec((size_t)N * C);
    float *R = rand_vec((size_t)N * C, &r, 1), *g = fvec((size_t)V * C), *g2 = fvec((size_t)V * C);
    be()->embedding_bwd(g, R, tok, N, C);
    EmbCtx c = {N, C, tok, wte, out, R};
    gradcheck("embedding dwte", emb_f, &c, wte, g, (size_t)V * C, &r);
    // hand value: row 3 of dwte = R[0] + R[3] + R[5]
    for (int i = 0; i < C; i++) CHECK_NEAR(g[3 * C + i], R[i] + R[3 * C + i] + R[5 * C + i], 1e-6);
    for (int i = 0; i < C; i++) CHECK(g[2 * C + i] == 0.0f); // token 2 unused
    be()->embedding_bwd(g2, R, tok, N, C);
    be()->embedding_bwd(g2, R, tok, N, C);
    check_doubled("embedding dwte", g, g2, (size_t)V * C);
    free(wte), free(out), free(R), free(g), free(g2);
}

// ========================================== matmul ===========================================

// out[N, OC] = inp @ w^T in double
static void naive_matmul(double *out, const float *inp, const float *w, int N, int IC, int OC) {
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            double s = 0;
            for (int i = 0; i < IC; i++) s += (double)inp[n * IC + i] * w[o * IC + i];
            out[n * OC + o] = s;
        }
}

// max |a - ref| / max|ref| over an array (rounding of a float GEMM is relative to the row scale)
static double rel_to_max(const float *a, const double *ref, size_t n) {
    double m = 0, e = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(ref[i]));
    for (size_t i = 0; i < n; i++) e = fmax(e, fabs(a[i] - ref[i]));
    return e / fmax(m, 1e-30);
}

static void matmul_vs_naive(int N, int IC, int OC, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    float *inp = rand_vec((size_t)N * IC, &r, 1), *w = rand_vec((size_t)OC * IC, &r, 1);
    float *dout = rand_vec((size_t)N * OC, &r, 1);
    float *out = fvec((size_t)N * OC), *dinp = fvec((size_t)N * IC), *dw = fvec((size_t)OC * IC);
    double *ref = calloc((size_t)N * OC + (size_t)N * IC + (size_t)OC * IC, sizeof(double));
    for (size_t i = 0; i < (size_t)N * OC; i++) out[i] = NAN; // forward must overwrite
    be()->matmul_fwd(out, inp, w, N, IC, OC);
    naive_matmul(ref, inp, w, N, IC, OC);
    double e = rel_to_max(out, ref, (size_t)N * OC);
    CHECK(e < 1e-6 * sqrt(IC)); // float rounding grows ~sqrt(terms)
    if (!(e < 1e-6 * sqrt(IC)))
        fprintf(stderr, "    matmul fwd N=%d IC=%d OC=%d: %g\n", N, IC, OC, e);

    // dinp = dout @ w; dw = dout^T @ inp, with nonzero starting values (accumulate)
    float *dinp0 = rand_vec((size_t)N * IC, &r, 1), *dw0 = rand_vec((size_t)OC * IC, &r, 1);
    memcpy(dinp, dinp0, (size_t)N * IC * sizeof(float));
    memcpy(dw, dw0, (size_t)OC * IC * sizeof(float));
    be()->matmul_bwd(dinp, dw, dout, inp, w, N, IC, OC);
    double *rdi = ref + (size_t)N * OC, *rdw = rdi + (size_t)N * IC;
    for (int n = 0; n < N; n++)
        for (int i = 0; i < IC; i++) {
            double s = dinp0[n * IC + i];
            for (int o = 0; o < OC; o++) s += (double)dout[n * OC + o] * w[o * IC + i];
            rdi[n * IC + i] = s;
        }
    for (int o = 0; o < OC; o++)
        for (int i = 0; i < IC; i++) {
            double s = dw0[o * IC + i];
            for (int n = 0; n < N; n++) s += (double)dout[n * OC + o] * inp[n * IC + i];
            rdw[o * IC + i] = s;
        }
    e = rel_to_max(dinp, rdi, (size_t)N * IC);
    CHECK(e < 1e-6 * sqrt(OC));
    if (!(e < 1e-6 * sqrt(OC)))
        fprintf(stderr, "    matmul dinp N=%d IC=%d OC=%d: %g\n", N, IC, OC, e);
    e = rel_to_max(dw, rdw, (size_t)OC * IC);
    CHECK(e < 1e-6 * sqrt(N));
    if (!(e < 1e-6 * sqrt(N)))
        fprintf(stderr, "    matmul dw N=%d IC=%d OC=%d: %g\n", N, IC, OC, e);

    // either gradient may be NULL: the other one alone must give the same values
    float *dinp1 = fvec((size_t)N * IC), *dw1 = fvec((size_t)OC * IC);
    memcpy(dinp1, dinp0, (size_t)N * IC * sizeof(float));
    memcpy(dw1, dw0, (size_t)OC * IC * sizeof(float));
    be()->matmul_bwd(dinp1, NULL, dout, inp, w, N, IC, OC);
    be()->matmul_bwd(NULL, dw1, dout, inp, w, N, IC, OC);
    CHECK(memcmp(dinp1, dinp, (size_t)N * IC * sizeof(float)) == 0);
    CHECK(memcmp(dw1, dw, (size_t)OC * IC * sizeof(float)) == 0);
    free(inp), free(w), free(dout), free(out), free(dinp), free(dw), free(ref), free(dinp0),
        free(dw0), free(dinp1), free(dw1);
}

TEST(matmul_vs_naive_odd_sizes) {
    matmul_vs_naive(37, 19, 23, 10);
    matmul_vs_naive(1, 1, 1, 11);
    matmul_vs_naive(5, 3, 70, 12);
}

TEST(matmul_vs_naive_blocked) {
    // IC, OC and N beyond one K slice (256) and one row block; OC = 5: dw has one row block
    matmul_vs_naive(300, 600, 77, 13);
    matmul_vs_naive(700, 33, 5, 14);
    matmul_vs_naive(129, 64, 2100, 15); // OC beyond one column block (2048)
}

typedef struct {
    int N, IC, OC;
    float *inp, *w, *out;
    const float *R;
} MmCtx;

static double mm_f(void *p) {
    MmCtx *c = p;
    be()->matmul_fwd(c->out, c->inp, c->w, c->N, c->IC, c->OC);
    return dot_d(c->out, c->R, (size_t)c->N * c->OC);
}

TEST(matmul_bwd_gradcheck) {
    Rng r;
    rng_seed(&r, 3);
    int N = 13, IC = 19, OC = 23;
    float *inp = rand_vec((size_t)N * IC, &r, 1), *w = rand_vec((size_t)OC * IC, &r, 0.3f);
    float *out = fvec((size_t)N * OC), *R = rand_vec((size_t)N * OC, &r, 1);
    float *gi = fvec((size_t)N * IC), *gw = fvec((size_t)OC * IC);
    float *gi2 = fvec((size_t)N * IC), *gw2 = fvec((size_t)OC * IC);
    be()->matmul_bwd(gi, gw, R, inp, w, N, IC, OC);
    MmCtx c = {N, IC, OC, inp, w, out, R};
    gradcheck("matmul dinp", mm_f, &c, inp, gi, (size_t)N * IC, &r);
    gradcheck("matmul dw", mm_f, &c, w, gw, (size_t)OC * IC, &r);
    be()->matmul_bwd(gi2, gw2, R, inp, w, N, IC, OC);
    be()->matmul_bwd(gi2, gw2, R, inp, w, N, IC, OC);
    check_doubled("matmul dinp", gi, gi2, (size_t)N * IC);
    check_doubled("matmul dw", gw, gw2, (size_t)OC * IC);
    free(inp), free(w), free(out), free(R), free(gi), free(gw), free(gi2), free(gw2);
}

// ========================================== rmsnorm ==========================================

TEST(rmsnorm_fwd_hand) {
    float x[8] = {1, 2, 3, 4, 0, 0, 0, 0}, w[4] = {1, 0.5f, -1, 2}, out[8], rstd[2];
    be()->rmsnorm_fwd(out, rstd, x, w, 2, 4, 1e-5f);
    double r = 1.0 / sqrt(7.5 + 1e-5); // mean(1,4,9,16) = 7.5
    CHECK_REL(rstd[0], r, 1e-6, 0);
    for (int i = 0; i < 4; i++) CHECK_REL(out[i], x[i] * r * w[i], 1e-6, 1e-9);
    CHECK_REL(rstd[1], 1.0 / sqrt(1e-5), 1e-6, 0); // all-zero row: 1/sqrt(eps), output 0
    for (int i = 4; i < 8; i++) CHECK(out[i] == 0.0f);
}

typedef struct {
    int N, C;
    float *inp, *w, *out, *rstd;
    const float *R;
} RmsCtx;

static double rms_f(void *p) {
    RmsCtx *c = p;
    be()->rmsnorm_fwd(c->out, c->rstd, c->inp, c->w, c->N, c->C, 1e-5f);
    return dot_d(c->out, c->R, (size_t)c->N * c->C);
}

TEST(rmsnorm_bwd_gradcheck) {
    Rng r;
    rng_seed(&r, 4);
    int N = 7, C = 33;
    size_t nx = (size_t)N * C;
    float *inp = rand_vec(nx, &r, 1), *w = rand_vec(C, &r, 1), *out = fvec(nx), *rstd = fvec(N);
    float *R = rand_vec(nx, &r, 1), *gi = fvec(nx), *gw = fvec(C), *gi2 = fvec(nx), *gw2 = fvec(C);
    be()->rmsnorm_fwd(out, rstd, inp, w, N, C, 1e-5f);
    be()->rmsnorm_bwd(gi, gw, R, inp, w, rstd, N, C);
    RmsCtx c = {N, C, inp, w, out, rstd, R};
    gradcheck("rmsnorm dinp", rms_f, &c, inp, gi, nx, &r);
    gradcheck("rmsnorm dw", rms_f, &c, w, gw, C, &r);
    be()->rmsnorm_fwd(out, rstd, inp, w, N, C, 1e-5f); // rstd of the unperturbed input
    be()->rmsnorm_bwd(gi2, gw2, R, inp, w, rstd, N, C);
    be()->rmsnorm_bwd(gi2, gw2, R, inp, w, rstd, N, C);
    check_doubled("rmsnorm dinp", gi, gi2, nx);
    check_doubled("rmsnorm dw", gw, gw2, C);
    free(inp), free(w), free(out), free(rstd), free(R), free(gi), free(gw), free(gi2), free(gw2);
}

// ============================================ rope ===========================================

static void make_inv_freq(float *f, int D, double base) {
    for (int i = 0; i < D / 2; i++) f[i] = (float)pow(base, -2.0 * i / D);
}

// Literal transcriptions of the two conventions, in double (angles from the same float inputs).
// Interleaved (llama2.c): for i = 0, 2, 4..: (x[i], x[i+1]) rotated by pos * freq[i/2].
// Halves (HF rotate_half): out = x * cos + cat(-x2, x1) * sin, cos/sin = cat(freqs, freqs).
static void naive_rope(double *out, const float *x, const float *pos, const float *inv_freq, int N,
                       int H, int D, int style) {
    for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++) {
            const float *v = x + ((size_t)n * H + h) * D;
            double *o = out + ((size_t)n * H + h) * D;
            if (style == ROPE_INTERLEAVED) {
                for (int i = 0; i < D; i += 2) {
                    double a = (double)pos[n] * inv_freq[i / 2], fcr = cos(a), fci = sin(a);
                    o[i] = v[i] * fcr - v[i + 1] * fci;
                    o[i + 1] = v[i] * fci + v[i + 1] * fcr;
                }
            } else {
                for (int i = 0; i < D; i++) {
                    double a = (double)pos[n] * inv_freq[i % (D / 2)];
                    double rot = i < D / 2 ? -(double)v[i + D / 2] : (double)v[i - D / 2];
                    o[i] = v[i] * cos(a) + rot * sin(a);
                }
            }
        }
}

TEST(rope_vs_reference_both_styles) {
    Rng r;
    rng_seed(&r, 5);
    int N = 6, H = 3, D = 16;
    size_t n = (size_t)N * H * D;
    float pos[6] = {0, 1, 7, 1000, 65537, 1048575}, inv_freq[8];
    make_inv_freq(inv_freq, D, 10000.0);
    float *x = rand_vec(n, &r, 1), *out = fvec(n);
    double *ref = calloc(n, sizeof(double));
    for (int style = 0; style < 2; style++) {
        be()->rope_fwd(out, x, pos, inv_freq, N, H, D, style);
        naive_rope(ref, x, pos, inv_freq, N, H, D, style);
        test_close_to(style ? "rope halves" : "rope interleaved", out, ref, n, 1e-6, 1e-6);
    }
    // the styles differ (pairs are different): guards against one style silently used for both
    float *out2 = fvec(n);
    be()->rope_fwd(out2, x, pos, inv_freq, N, H, D, ROPE_INTERLEAVED);
    be()->rope_fwd(out, x, pos, inv_freq, N, H, D, ROPE_HALVES);
    CHECK(memcmp(out, out2, n * sizeof(float)) != 0);
    free(x), free(out), free(out2), free(ref);
}

TEST(rope_pos0_identity_and_pair_norms) {
    Rng r;
    rng_seed(&r, 6);
    int N = 5, H = 2, D = 12;
    size_t n = (size_t)N * H * D;
    float pos0[5] = {0}, pos[5] = {3, 100.5f, 4095, 999999, 1e6f}, inv_freq[6];
    make_inv_freq(inv_freq, D, 500000.0);
    float *x = rand_vec(n, &r, 1), *out = fvec(n);
    for (int style = 0; style < 2; style++) {
        be()->rope_fwd(out, x, pos0, inv_freq, N, H, D, style);
        CHECK(memcmp(out, x, n * sizeof(float)) == 0); // cos 0 = 1, sin 0 = 0: exact
        be()->rope_fwd(out, x, pos, inv_freq, N, H, D, style);
        for (int t = 0; t < N * H; t++)
            for (int i = 0; i < D / 2; i++) {
                int a = style == ROPE_INTERLEAVED ? 2 * i : i,
                    b = style == ROPE_INTERLEAVED ? a + 1 : i + D / 2;
                const float *xi = x + t * D, *oi = out + t * D;
                double n0 = hypot(xi[a], xi[b]), n1 = hypot(oi[a], oi[b]);
                CHECK_NEAR(n1, n0, 1e-6 * (1 + n0));
            }
    }
    free(x), free(out);
}

// q(m) . k(n) depends only on m - n, also at positions near 1e6
TEST(rope_relative_position) {
    Rng r;
    rng_seed(&r, 7);
    int D = 32;
    float inv_freq[16];
    make_inv_freq(inv_freq, D, 10000.0);
    float *q = rand_vec(D, &r, 1), *k = rand_vec(D, &r, 1), qr[32], kr[32];
    float pairs[4][2] = {{3, 0}, {10, 7}, {1003, 1000}, {1000003, 1000000}};
    for (int style = 0; style < 2; style++) {
        double ref = 0;
        for (int p = 0; p < 4; p++) {
            be()->rope_fwd(qr, q, &pairs[p][0], inv_freq, 1, 1, D, style);
            be()->rope_fwd(kr, k, &pairs[p][1], inv_freq, 1, 1, D, style);
            double s = dot_d(qr, kr, D);
            if (p == 0)
                ref = s;
            else
                CHECK_NEAR(s, ref, 2e-5 * D);
        }
        // and it does depend on m - n (the rotation is not trivially the identity)
        float m = 5, z = 0;
        be()->rope_fwd(qr, q, &m, inv_freq, 1, 1, D, style);
        be()->rope_fwd(kr, k, &z, inv_freq, 1, 1, D, style);
        CHECK(fabs(dot_d(qr, kr, D) - ref) > 1e-3);
    }
    free(q), free(k);
}

typedef struct {
    int N, H, D, style;
    float *x, *out;
    const float *pos, *inv_freq, *R;
} RopeCtx;

static double rope_f(void *p) {
    RopeCtx *c = p;
    be()->rope_fwd(c->out, c->x, c->pos, c->inv_freq, c->N, c->H, c->D, c->style);
    return dot_d(c->out, c->R, (size_t)c->N * c->H * c->D);
}

TEST(rope_bwd_gradcheck_both_styles) {
    Rng r;
    rng_seed(&r, 8);
    int N = 5, H = 3, D = 10;
    size_t n = (size_t)N * H * D;
    float pos[5] = {0, 2, 17, 300, 123456}, inv_freq[5];
    make_inv_freq(inv_freq, D, 10000.0);
    float *x = rand_vec(n, &r, 1), *out = fvec(n), *R = rand_vec(n, &r, 1);
    float *g = fvec(n), *g2 = fvec(n);
    for (int style = 0; style < 2; style++) {
        memset(g, 0, n * sizeof(float));
        memset(g2, 0, n * sizeof(float));
        be()->rope_bwd(g, R, pos, inv_freq, N, H, D, style);
        RopeCtx c = {N, H, D, style, x, out, pos, inv_freq, R};
        gradcheck(style ? "rope halves" : "rope interleaved", rope_f, &c, x, g, n, &r);
        be()->rope_bwd(g2, R, pos, inv_freq, N, H, D, style);
        be()->rope_bwd(g2, R, pos, inv_freq, N, H, D, style);
        check_doubled("rope dinp", g, g2, n);
    }
    free(x), free(out), free(R), free(g), free(g2);
}

// ========================================= attention =========================================

// Brute force in double: full T x T causal softmax per (b, h).
static void naive_attention(double *out, double *lse, const float *q, const float *k,
                            const float *v, int B, int T, int H, int KVH, int D) {
    double scale = 1.0 / sqrt(D), *s = calloc(T, sizeof(double));
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            int kh = h / (H / KVH);
            for (int t = 0; t < T; t++) {
                const float *qi = q + (((size_t)b * T + t) * H + h) * D;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j <= t; j++) {
                    const float *kj = k + (((size_t)b * T + j) * KVH + kh) * D;
                    double d = 0;
                    for (int x = 0; x < D; x++) d += (double)qi[x] * kj[x];
                    s[j] = d * scale;
                    mx = fmax(mx, s[j]);
                }
                for (int j = 0; j <= t; j++) sum += exp(s[j] - mx);
                double *o = out + (((size_t)b * T + t) * H + h) * D;
                for (int x = 0; x < D; x++) o[x] = 0;
                for (int j = 0; j <= t; j++) {
                    double p = exp(s[j] - mx) / sum;
                    const float *vj = v + (((size_t)b * T + j) * KVH + kh) * D;
                    for (int x = 0; x < D; x++) o[x] += p * vj[x];
                }
                lse[((size_t)b * H + h) * T + t] = mx + log(sum);
            }
        }
    free(s);
}

// Brute-force backward in double, from the definition (softmax Jacobian written out).
static void naive_attention_bwd(double *dq, double *dk, double *dv, const float *dout,
                                const float *q, const float *k, const float *v, int B, int T, int H,
                                int KVH, int D) {
    double scale = 1.0 / sqrt(D), *p = calloc(T, sizeof(double)), *dp = calloc(T, sizeof(double));
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            int kh = h / (H / KVH);
            for (int t = 0; t < T; t++) {
                const float *qi = q + (((size_t)b * T + t) * H + h) * D;
                const float *gi = dout + (((size_t)b * T + t) * H + h) * D;
                double mx = -INFINITY, sum = 0, pdp = 0;
                for (int j = 0; j <= t; j++) {
                    const float *kj = k + (((size_t)b * T + j) * KVH + kh) * D;
                    p[j] = dot_d(qi, kj, D) * scale;
                    mx = fmax(mx, p[j]);
                }
                for (int j = 0; j <= t; j++) sum += (p[j] = exp(p[j] - mx));
                for (int j = 0; j <= t; j++) {
                    p[j] /= sum;
                    dp[j] = dot_d(gi, v + (((size_t)b * T + j) * KVH + kh) * D, D);
                    pdp += p[j] * dp[j];
                }
                for (int j = 0; j <= t; j++) {
                    size_t kj = (((size_t)b * T + j) * KVH + kh) * D;
                    double ds = p[j] * (dp[j] - pdp);
                    for (int x = 0; x < D; x++) {
                        dq[(((size_t)b * T + t) * H + h) * D + x] += scale * ds * k[kj + x];
                        dk[kj + x] += scale * ds * qi[x];
                        dv[kj + x] += p[j] * gi[x];
                    }
                }
            }
        }
    free(p), free(dp);
}

static int attention_vs_naive(int B, int T, int H, int KVH, int D, uint64_t seed, int with_bwd) {
    int before = test_failed_checks;
    Rng r;
    rng_seed(&r, seed);
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D;
    float *q = rand_vec(nq, &r, 1), *k = rand_vec(nk, &r, 1), *v = rand_vec(nk, &r, 1);
    float *out = fvec(nq), *lse = fvec((size_t)B * H * T);
    double *ro = calloc(nq, sizeof(double)), *rl = calloc((size_t)B * H * T, sizeof(double));
    be()->attention_fwd(out, lse, q, k, v, B, T, H, KVH, D);
    naive_attention(ro, rl, q, k, v, B, T, H, KVH, D);
    test_close_to("attention out", out, ro, nq, 2e-6, 2e-6);
    test_close_to("attention lse", lse, rl, (size_t)B * H * T, 2e-6, 2e-6);
    if (with_bwd) {
        float *dout = rand_vec(nq, &r, 1), *dq = fvec(nq), *dk = fvec(nk), *dv = fvec(nk);
        double *rq = calloc(nq, sizeof(double)), *rk = calloc(nk, sizeof(double)),
               *rv = calloc(nk, sizeof(double));
        be()->attention_bwd(dq, dk, dv, dout, out, lse, q, k, v, B, T, H, KVH, D);
        naive_attention_bwd(rq, rk, rv, dout, q, k, v, B, T, H, KVH, D);
        // float rounding is relative to the largest gradient of the array
        double mq = 0, mk = 0, mv = 0;
        for (size_t i = 0; i < nq; i++) mq = fmax(mq, fabs(rq[i]));
        for (size_t i = 0; i < nk; i++) mk = fmax(mk, fabs(rk[i])), mv = fmax(mv, fabs(rv[i]));
        test_close_to("attention dq", dq, rq, nq, 1e-5 * fmax(mq, 0.1), 0); // (T = 1: dq = dk = 0)
        test_close_to("attention dk", dk, rk, nk, 1e-5 * fmax(mk, 0.1), 0);
        test_close_to("attention dv", dv, rv, nk, 1e-5 * fmax(mv, 0.1), 0);
        free(dout), free(dq), free(dk), free(dv), free(rq), free(rk), free(rv);
    }
    if (test_failed_checks != before)
        fprintf(stderr, "    ^ attention B=%d T=%d H=%d KVH=%d D=%d\n", B, T, H, KVH, D);
    free(q), free(k), free(v), free(out), free(lse), free(ro), free(rl);
    return test_failed_checks == before;
}

TEST(attention_vs_naive) {
    // GQA, MHA, MQA; head dims with and without a vector-width tail; T across several key blocks
    // and query tiles, not a power of two
    attention_vs_naive(2, 45, 4, 2, 16, 20, 1);
    attention_vs_naive(1, 100, 4, 1, 20, 21, 1);
    attention_vs_naive(1, 70, 3, 3, 64, 22, 1);
    attention_vs_naive(3, 1, 2, 1, 8, 23, 1);
    attention_vs_naive(1, 33, 8, 2, 128, 24, 1);
    attention_vs_naive(1, 131, 2, 2, 3, 25, 0);
    attention_vs_naive(2, 200, 6, 2, 32, 26, 1);
}

TEST(attention_t1_returns_v) {
    Rng r;
    rng_seed(&r, 9);
    int B = 2, H = 6, KVH = 2, D = 24, G = H / KVH;
    float *q = rand_vec((size_t)B * H * D, &r, 1), *k = rand_vec((size_t)B * KVH * D, &r, 1);
    float *v = rand_vec((size_t)B * KVH * D, &r, 1), *out = fvec((size_t)B * H * D), lse[12];
    be()->attention_fwd(out, lse, q, k, v, B, 1, H, KVH, D);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const float *vh = v + ((size_t)b * KVH + h / G) * D;
            for (int x = 0; x < D; x++)
                CHECK_NEAR(out[((size_t)b * H + h) * D + x], vh[x], 1e-6 * (1 + fabs(vh[x])));
            // a single key: lse is its scaled score
            double s =
                dot_d(q + ((size_t)b * H + h) * D, k + ((size_t)b * KVH + h / G) * D, D) / sqrt(D);
            CHECK_NEAR(lse[b * H + h], s, 1e-5 * (1 + fabs(s)));
        }
    free(q), free(k), free(v), free(out);
}

// Evaluation lengths: T = 8200 (> 8192, not a power of two), sampled rows against brute force.
TEST(attention_long_context) {
    Rng r;
    rng_seed(&r, 10);
    int B = 1, T = 8200, H = 2, KVH = 1, D = 32;
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D;
    float *q = rand_vec(nq, &r, 1), *k = rand_vec(nk, &r, 1), *v = rand_vec(nk, &r, 1);
    float *out = fvec(nq), *lse = fvec((size_t)B * H * T);
    be()->attention_fwd(out, lse, q, k, v, B, T, H, KVH, D);
    int rows[] = {0, 1, 31, 32, 4097, 8191, 8192, 8199};
    double *s = calloc(T, sizeof(double)), o[32];
    for (int ri = 0; ri < 8; ri++)
        for (int h = 0; h < H; h++) {
            int t = rows[ri];
            const float *qi = q + ((size_t)t * H + h) * D;
            double mx = -INFINITY, sum = 0;
            for (int j = 0; j <= t; j++)
                mx = fmax(mx, s[j] = dot_d(qi, k + (size_t)j * D, D) / sqrt(D));
            for (int x = 0; x < D; x++) o[x] = 0;
            for (int j = 0; j <= t; j++) {
                double p = exp(s[j] - mx);
                sum += p;
                for (int x = 0; x < D; x++) o[x] += p * v[(size_t)j * D + x];
            }
            for (int x = 0; x < D; x++)
                CHECK_NEAR(out[((size_t)t * H + h) * D + x], o[x] / sum, 1e-5);
            CHECK_NEAR(lse[(size_t)h * T + t], mx + log(sum), 1e-5 * (1 + fabs(mx + log(sum))));
        }
    free(s), free(q), free(k), free(v), free(out), free(lse);
}

typedef struct {
    int B, T, H, KVH, D;
    float *q, *k, *v, *out, *lse;
    const float *R;
} AttCtx;

static double att_f(void *p) {
    AttCtx *c = p;
    be()->attention_fwd(c->out, c->lse, c->q, c->k, c->v, c->B, c->T, c->H, c->KVH, c->D);
    return dot_d(c->out, c->R, (size_t)c->B * c->T * c->H * c->D);
}

TEST(attention_bwd_gradcheck_gqa) {
    Rng r;
    rng_seed(&r, 11);
    // T spans several key blocks (64 keys with AVX-512, 32 with AVX2) and query tiles (64 steps
    // at G = 2), so the online-softmax rescaling and the tile edges are differentiated too
    int B = 2, T = 150, H = 4, KVH = 2, D = 24;
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D;
    float *q = rand_vec(nq, &r, 1), *k = rand_vec(nk, &r, 1), *v = rand_vec(nk, &r, 1);
    float *out = fvec(nq), *lse = fvec((size_t)B * H * T), *R = rand_vec(nq, &r, 1);
    float *dq = fvec(nq), *dk = fvec(nk), *dv = fvec(nk);
    float *dq2 = fvec(nq), *dk2 = fvec(nk), *dv2 = fvec(nk);
    be()->attention_fwd(out, lse, q, k, v, B, T, H, KVH, D);
    be()->attention_bwd(dq, dk, dv, R, out, lse, q, k, v, B, T, H, KVH, D);
    be()->attention_bwd(dq2, dk2, dv2, R, out, lse, q, k, v, B, T, H, KVH, D);
    be()->attention_bwd(dq2, dk2, dv2, R, out, lse, q, k, v, B, T, H, KVH, D);
    check_doubled("attention dq", dq, dq2, nq);
    check_doubled("attention dk", dk, dk2, nk);
    check_doubled("attention dv", dv, dv2, nk);
    AttCtx c = {B, T, H, KVH, D, q, k, v, out, lse, R};
    gradcheck("attention dq", att_f, &c, q, dq, nq, &r);
    gradcheck("attention dk", att_f, &c, k, dk, nk, &r);
    gradcheck("attention dv", att_f, &c, v, dv, nk, &r);
    free(q), free(k), free(v), free(out), free(lse), free(R), free(dq), free(dk), free(dv),
        free(dq2), free(dk2), free(dv2);
}

// =========================================== swiglu ==========================================

TEST(swiglu_fwd_hand) {
    float g[4] = {0, 1, -2, 30}, u[4] = {5, 2, 3, -1}, out[4];
    be()->swiglu_fwd(out, g, u, 4);
    CHECK(out[0] == 0.0f);
    CHECK_REL(out[1], 2.0 / (1 + exp(-1.0)), 1e-6, 0);
    CHECK_REL(out[2], 3.0 * -2.0 / (1 + exp(2.0)), 1e-6, 0);
    CHECK_REL(out[3], -30.0 / (1 + exp(-30.0)), 1e-6, 0);
    float big[2] = {-200, 200}, one[2] = {1, 1}, o2[2]; // no overflow to NaN at large |gate|
    be()->swiglu_fwd(o2, big, one, 2);
    CHECK(o2[0] == 0.0f);
    CHECK(o2[1] == 200.0f);
}

// Vector path (and scalar tail) against double formulas, gates from -100 to 100.
TEST(swiglu_vs_reference) {
    Rng r;
    rng_seed(&r, 16);
    size_t n = 1003;
    float *g = fvec(n), *u = rand_vec(n, &r, 1), *dout = rand_vec(n, &r, 1), *out = fvec(n);
    float *dg = fvec(n), *du = fvec(n);
    for (size_t i = 0; i < n; i++)
        g[i] = i % 3 ? 3.0f * rng_normal(&r) : (float)(200.0 * rng_uniform(&r) - 100.0);
    double *ro = calloc(3 * n, sizeof(double)), *rg = ro + n, *ru = rg + n;
    for (size_t i = 0; i < n; i++) {
        double s = 1.0 / (1.0 + exp(-(double)g[i]));
        ro[i] = g[i] * s * u[i];
        rg[i] = dout[i] * u[i] * (s + g[i] * s * (1 - s));
        ru[i] = dout[i] * g[i] * s;
    }
    be()->swiglu_fwd(out, g, u, n);
    be()->swiglu_bwd(dg, du, dout, g, u, n);
    test_close_to("swiglu out", out, ro, n, 1e-30, 2e-6);
    // (the derivative of g s(g) crosses 0 near g = -1.28: there only absolute accuracy is possible)
    test_close_to("swiglu dgate", dg, rg, n, 1e-7, 2e-6);
    test_close_to("swiglu dup", du, ru, n, 1e-30, 2e-6);
    free(g), free(u), free(dout), free(out), free(dg), free(du), free(ro);
}

typedef struct {
    size_t n;
    float *g, *u, *out;
    const float *R;
} SwiCtx;

static double swi_f(void *p) {
    SwiCtx *c = p;
    be()->swiglu_fwd(c->out, c->g, c->u, c->n);
    return dot_d(c->out, c->R, c->n);
}

TEST(swiglu_bwd_gradcheck) {
    Rng r;
    rng_seed(&r, 12);
    size_t n = 301;
    float *g = rand_vec(n, &r, 2), *u = rand_vec(n, &r, 1), *out = fvec(n), *R = rand_vec(n, &r, 1);
    float *dg = fvec(n), *du = fvec(n), *dg2 = fvec(n), *du2 = fvec(n);
    be()->swiglu_bwd(dg, du, R, g, u, n);
    SwiCtx c = {n, g, u, out, R};
    gradcheck("swiglu dgate", swi_f, &c, g, dg, n, &r);
    gradcheck("swiglu dup", swi_f, &c, u, du, n, &r);
    be()->swiglu_bwd(dg2, du2, R, g, u, n);
    be()->swiglu_bwd(dg2, du2, R, g, u, n);
    check_doubled("swiglu dgate", dg, dg2, n);
    check_doubled("swiglu dup", du, du2, n);
    free(g), free(u), free(out), free(R), free(dg), free(du), free(dg2), free(du2);
}

// ======================================== cross-entropy ======================================

TEST(crossentropy_hand) {
    // row 0: logits 1,2,3 target 2: log(e + e^2 + e^3) - 3
    // row 1: the same shifted by 1000 (stable log-sum-exp: same loss, no inf)
    // row 2: ignored
    // row 3: target 0 of 0,0,0 (uniform): log 3
    float logits[12] = {1, 2, 3, 1001, 1002, 1003, 5, 6, 7, 0, 0, 0}, losses[4];
    int targets[4] = {2, 2, -1, 0};
    be()->crossentropy_fwd(losses, logits, targets, 4, 3);
    double l0 = log(exp(1.0) + exp(2.0) + exp(3.0)) - 3; // 0.40760596
    CHECK_NEAR(losses[0], 0.40760596, 1e-6);
    CHECK_NEAR(losses[0], l0, 1e-6);
    CHECK_NEAR(losses[1], l0, 1e-4); // logits of 1e3 carry ~6e-5 of float rounding
    CHECK(losses[2] == 0.0f);
    CHECK_NEAR(losses[3], log(3.0), 1e-6);

    float dl[12];
    for (int i = 0; i < 12; i++) dl[i] = 0.5f; // accumulates onto existing values
    be()->crossentropy_bwd(dl, logits, targets, 2.0f, 4, 3);
    double z = exp(1.0) + exp(2.0) + exp(3.0);
    double p[3] = {exp(1.0) / z, exp(2.0) / z, exp(3.0) / z}; // 0.09003, 0.24473, 0.66524
    for (int i = 0; i < 3; i++) {
        double want = 0.5 + 2.0 * (p[i] - (i == 2));
        CHECK_NEAR(dl[i], want, 1e-6);
        CHECK_NEAR(dl[3 + i], want, 1e-5);
        CHECK(dl[6 + i] == 0.5f); // ignored row: untouched
        CHECK_NEAR(dl[9 + i], 0.5 + 2.0 * (1.0 / 3 - (i == 0)), 1e-6);
    }
}

// Vocabulary sizes of real models (vector blocks, tail), logits up to ~1e3, against double.
TEST(crossentropy_vs_reference_large_vocab) {
    Rng r;
    rng_seed(&r, 17);
    int N = 4, V = 32003, targets[4] = {0, 32002, -1, 12345};
    size_t n = (size_t)N * V;
    float *logits = rand_vec(n, &r, 3), *losses = fvec(N), *dl = fvec(n);
    for (int i = 0; i < V; i++) logits[(size_t)3 * V + i] += 700.0f; // large offset: stable LSE
    double *rl = calloc(N, sizeof(double)), *rd = calloc(n, sizeof(double));
    float dloss = 1.0f / 3;
    for (int row = 0; row < N; row++) {
        if (targets[row] < 0) continue;
        const float *x = logits + (size_t)row * V;
        double mx = -INFINITY, s = 0;
        for (int i = 0; i < V; i++) mx = fmax(mx, x[i]);
        for (int i = 0; i < V; i++) s += exp(x[i] - mx);
        rl[row] = mx + log(s) - x[targets[row]];
        for (int i = 0; i < V; i++)
            rd[(size_t)row * V + i] = dloss * (exp(x[i] - mx) / s - (i == targets[row]));
    }
    be()->crossentropy_fwd(losses, logits, targets, N, V);
    be()->crossentropy_bwd(dl, logits, targets, dloss, N, V);
    test_close_to("crossentropy loss", losses, rl, N, 1e-6, 1e-6);
    test_close_to("crossentropy dlogits", dl, rd, n, 1e-9, 1e-5);
    free(logits), free(losses), free(dl), free(rl), free(rd);
}

typedef struct {
    int N, V;
    float *logits, *losses;
    const int *targets;
    float c;
} CeCtx;

static double ce_f(void *p) {
    CeCtx *c = p;
    be()->crossentropy_fwd(c->losses, c->logits, c->targets, c->N, c->V);
    double s = 0;
    for (int n = 0; n < c->N; n++) s += (double)c->c * c->losses[n];
    return s;
}

TEST(crossentropy_bwd_gradcheck) {
    Rng r;
    rng_seed(&r, 13);
    int N = 6, V = 37, targets[6] = {3, -1, 36, 0, -100, 3}; // two ignored rows
    size_t n = (size_t)N * V;
    float *logits = rand_vec(n, &r, 2), *losses = fvec(N), *g = fvec(n), *g2 = fvec(n);
    float dloss = 0.7f;
    be()->crossentropy_bwd(g, logits, targets, dloss, N, V);
    CeCtx c = {N, V, logits, losses, targets, dloss};
    gradcheck("crossentropy dlogits", ce_f, &c, logits, g, n, &r);
    for (int i = 0; i < V; i++) CHECK(g[1 * V + i] == 0.0f && g[4 * V + i] == 0.0f);
    // each non-ignored row of the gradient sums to 0 (softmax sums to 1, one-hot to 1)
    for (int row = 0; row < N; row++) {
        double s = 0;
        for (int i = 0; i < V; i++) s += g[row * V + i];
        CHECK_NEAR(s, 0.0, 1e-6);
    }
    be()->crossentropy_fwd(losses, logits, targets, N, V);
    CHECK(losses[1] == 0.0f && losses[4] == 0.0f);
    be()->crossentropy_bwd(g2, logits, targets, dloss, N, V);
    be()->crossentropy_bwd(g2, logits, targets, dloss, N, V);
    check_doubled("crossentropy dlogits", g, g2, n);
    free(logits), free(losses), free(g), free(g2);
}

// =========================================== adamw ===========================================

// AdamW in double from the float hyperparameters (0.999f is not 0.999: the op sees the float)
static double adam_ref(double p, double g, double *m, double *v, float lr, float b1, float b2,
                       float eps, float wd, int t) {
    *m = (double)b1 * *m + (1.0 - (double)b1) * g;
    *v = (double)b2 * *v + (1.0 - (double)b2) * g * g;
    double mh = *m / (1.0 - pow(b1, t)), vh = *v / (1.0 - pow(b2, t));
    return p - (double)lr * (mh / (sqrt(vh) + eps) + (double)wd * p);
}

TEST(adamw_hand) {
    // t = 1: mhat = g, vhat = g^2, so the step is lr (g / (|g| + eps) + wd p)
    float p[3] = {1.0f, -2.0f, 0.5f}, g[3] = {0.5f, -0.25f, 0.0f}, m[3] = {0}, v[3] = {0};
    be()->adamw(p, g, m, v, 3, 0.1f, 0.9f, 0.999f, 1e-8f, 0.01f, 1);
    CHECK_NEAR(p[0], 0.899, 1e-6);  // 1 - 0.1 (1 + 0.01)
    CHECK_NEAR(p[1], -1.898, 1e-6); // -2 - 0.1 (-1 - 0.02)
    CHECK_NEAR(p[2], 0.4995, 1e-6); // g = 0: decay only
    CHECK_NEAR(m[0], 0.05, 1e-7);
    CHECK_NEAR(m[1], -0.025, 1e-7);
    CHECK_REL(v[0], 0.00025, 2e-5, 0); // (1 - 0.999f) = 0.00099998713
    CHECK_REL(v[1], 0.0000625, 2e-5, 0);
    for (int i = 0; i < 3; i++) {
        double mr = 0, vr = 0,
               pr = adam_ref((float[]){1.0f, -2.0f, 0.5f}[i], g[i], &mr, &vr, 0.1f, 0.9f, 0.999f,
                             1e-8f, 0.01f, 1);
        CHECK_REL(p[i], pr, 1e-6, 0);
        CHECK_REL(m[i], mr, 1e-6, 1e-30);
        CHECK_REL(v[i], vr, 1e-6, 1e-30);
    }

    // t = 3 from given moments: m = 0.9*0.2 + 0.1*1 = 0.28, v = 0.999*0.01 + 0.001*1 = 0.01099,
    // mhat = 0.28 / (1 - 0.9^3) = 1.03321033, vhat = 0.01099 / (1 - 0.999^3) = 3.66999667,
    // p = 2 - 0.01 (1.03321033 / 1.91572353 + 0.1 * 2) = 1.99260669
    float p2 = 2.0f, g2 = 1.0f, m2 = 0.2f, v2 = 0.01f;
    be()->adamw(&p2, &g2, &m2, &v2, 1, 0.01f, 0.9f, 0.999f, 1e-8f, 0.1f, 3);
    CHECK_REL(m2, 0.28, 1e-6, 0);
    CHECK_REL(v2, 0.01099, 2e-5, 0);
    CHECK_NEAR(p2, 1.99260669, 1e-5); // decimal hyperparameters
    double mr = 0.2f, vr = 0.01f,
           pr = adam_ref(2.0, 1.0, &mr, &vr, 0.01f, 0.9f, 0.999f, 1e-8f, 0.1f, 3);
    CHECK_REL(p2, pr, 1e-6, 0);
    CHECK_REL(m2, mr, 1e-6, 0);
    CHECK_REL(v2, vr, 1e-6, 0);
}

// ===================================== memory, elementwise ===================================

TEST(memory_and_elementwise) {
    const Backend *b = be();
    CHECK(strcmp(b->name, "cpu") == 0);
    size_t n = 100003; // above the threading threshold, odd
    float *x = b->alloc(n * sizeof(float)), *y = b->alloc(n * sizeof(float));
    CHECK(((uintptr_t)x & 63) == 0);
    int zeroed = 1;
    for (size_t i = 0; i < n; i++) zeroed &= x[i] == 0.0f;
    CHECK(zeroed);
    float *h = fvec(n), *h2 = fvec(n);
    Rng r;
    rng_seed(&r, 14);
    fill_normal(h, n, &r, 1);
    b->upload(x, h, n * sizeof(float));
    b->copy(y, x, n);
    b->download(h2, y, n * sizeof(float));
    CHECK(memcmp(h, h2, n * sizeof(float)) == 0);
    b->add(y, x, y, n); // aliasing out = b
    b->scale(y, 0.25f, n);
    int ok = 1;
    for (size_t i = 0; i < n; i++) ok &= y[i] == (h[i] + h[i]) * 0.25f;
    CHECK(ok);
    double ss = 0;
    for (size_t i = 0; i < n; i++) ss += (double)h[i] * h[i];
    CHECK_REL(b->sumsq(x, n), ss, 1e-12, 0);
    float three[3] = {1, 2, -2};
    CHECK(b->sumsq(three, 3) == 9.0);
    b->zero(y, n);
    CHECK(b->sumsq(y, n) == 0.0);
    b->free(x), b->free(y), free(h), free(h2);
}

// ======================================== determinism ========================================

static void set_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

// Every op with a reduction: two calls, and a call on 1 thread, are bitwise identical.
TEST(determinism_bitwise) {
    Rng r;
    rng_seed(&r, 15);
    int N = 260, IC = 300, OC = 70;
    int B = 2, T = 77, H = 4, KVH = 2, D = 32;
    size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * KVH * D;
    float *inp = rand_vec((size_t)N * IC, &r, 1), *w = rand_vec((size_t)OC * IC, &r, 1);
    float *dout = rand_vec((size_t)N * OC, &r, 1);
    float *q = rand_vec(nq, &r, 1), *k = rand_vec(nk, &r, 1), *v = rand_vec(nk, &r, 1);
    float *datt = rand_vec(nq, &r, 1);
    int nthr = 1;
#ifdef _OPENMP
    nthr = omp_get_max_threads();
#endif
    float *res[3][7];
    size_t sz[7] = {(size_t)N * OC, (size_t)N * IC, (size_t)OC * IC, nq, nq, nk, nk};
    for (int run = 0; run < 3; run++) {
        set_threads(run == 2 ? 1 : nthr);
        for (int i = 0; i < 7; i++) res[run][i] = fvec(sz[i]);
        float *lse = fvec((size_t)B * H * T);
        be()->matmul_fwd(res[run][0], inp, w, N, IC, OC);
        be()->matmul_bwd(res[run][1], res[run][2], dout, inp, w, N, IC, OC);
        be()->attention_fwd(res[run][3], lse, q, k, v, B, T, H, KVH, D);
        be()->attention_bwd(res[run][4], res[run][5], res[run][6], datt, res[run][3], lse, q, k, v,
                            B, T, H, KVH, D);
        free(lse);
    }
    set_threads(nthr);
    for (int run = 1; run < 3; run++)
        for (int i = 0; i < 7; i++) {
            int same = memcmp(res[0][i], res[run][i], sz[i] * sizeof(float)) == 0;
            CHECK(same);
            if (!same) fprintf(stderr, "    output %d differs in run %d\n", i, run);
        }
    for (int run = 0; run < 3; run++)
        for (int i = 0; i < 7; i++) free(res[run][i]);
    free(inp), free(w), free(dout), free(q), free(k), free(v), free(datt);
}
