// cpu_norm.c: embedding, RMSNorm, SwiGLU and cross-entropy, forward and backward.
// Rows are independent, so row loops run on OpenMP threads; reductions over rows into a parameter
// gradient (dwte, dw of RMSNorm) are split by column instead, each column summed in row order by
// one thread: deterministic for any thread count.
#include <math.h>
#include <string.h>

#include "../common.h"
#include "../ops.h"
#include "cpu_internal.h"

#define COLS_PER_TASK 64 // column block of a column-parallel reduction (four cache lines)

// ---- embedding ----

void cpu_embedding_fwd(float *out, const int *tok, const float *wte, int N, int C) {
    for (int n = 0; n < N; n++) {
        MS_ASSERT(tok[n] >= 0, "embedding: token %d at row %d is negative", tok[n], n);
        memcpy(out + (size_t)n * C, wte + (size_t)tok[n] * C, (size_t)C * sizeof(float));
    }
}

void cpu_embedding_bwd(float *dwte, const float *dout, const int *tok, int N, int C) {
    // Two rows may share a token, so rows cannot be split; columns can.
#pragma omp parallel for schedule(static) if ((long)N * C > 65536)
    for (int c0 = 0; c0 < C; c0 += COLS_PER_TASK) {
        int c1 = c0 + COLS_PER_TASK < C ? c0 + COLS_PER_TASK : C;
        for (int n = 0; n < N; n++) {
            float *d = dwte + (size_t)tok[n] * C;
            const float *g = dout + (size_t)n * C;
            for (int c = c0; c < c1; c++) d[c] += g[c];
        }
    }
}

// ---- RMSNorm ----

void cpu_rmsnorm_fwd(float *out, float *rstd, const float *inp, const float *w, int N, int C,
                     float eps) {
#pragma omp parallel for schedule(static) if ((long)N * C > 65536)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *y = out + (size_t)n * C;
        double ss = 0;
        for (int c = 0; c < C; c++) ss += (double)x[c] * x[c];
        float r = (float)(1.0 / sqrt(ss / C + eps));
        for (int c = 0; c < C; c++) y[c] = x[c] * r * w[c];
        rstd[n] = r;
    }
}

// y = x r w with r = (mean(x^2) + eps)^(-1/2), dr/dx_c = -r^3 x_c / C:
//   dx_c = r w_c dy_c - (r^3 / C) x_c sum_j dy_j w_j x_j;   dw_c = sum_n dy_c x_c r
void cpu_rmsnorm_bwd(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                     const float *rstd, int N, int C) {
    if (dinp) {
#pragma omp parallel for schedule(static) if ((long)N * C > 65536)
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
            float *dx = dinp + (size_t)n * C;
            double dot = 0;
            for (int c = 0; c < C; c++) dot += (double)dy[c] * w[c] * x[c];
            float r = rstd[n];
            float k = (float)((double)r * r * r * dot / C);
            for (int c = 0; c < C; c++) dx[c] += r * w[c] * dy[c] - k * x[c];
        }
    }
    if (dw) {
#pragma omp parallel for schedule(static) if ((long)N * C > 65536)
        for (int c0 = 0; c0 < C; c0 += COLS_PER_TASK) {
            int c1 = c0 + COLS_PER_TASK < C ? c0 + COLS_PER_TASK : C;
            float acc[COLS_PER_TASK] = {0};
            for (int n = 0; n < N; n++) {
                const float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
                float r = rstd[n];
                for (int c = c0; c < c1; c++) acc[c - c0] += dy[c] * x[c] * r;
            }
            for (int c = c0; c < c1; c++) dw[c] += acc[c - c0];
        }
    }
}

// ---- SwiGLU ----
// Vector loop with vexp (glibc's expf does not vectorise without -ffast-math), scalar tail.

// exp overflow for very negative z gives s = 0: the right limit
static inline float sigmoidf(float z) { return 1.0f / (1.0f + expf(-z)); }
static inline vf vsigmoid(vf z) { return vbcast(1.0f) / (vbcast(1.0f) + vexp(-z)); } // vexp clamps

void cpu_swiglu_fwd(float *out, const float *gate, const float *up, size_t n) {
    size_t nv = n / CPU_VL;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t c = 0; c < nv; c++) {
        size_t i = c * CPU_VL;
        vf g = vload(gate + i);
        vstore(out + i, g * vsigmoid(g) * vload(up + i));
    }
    for (size_t i = nv * CPU_VL; i < n; i++) out[i] = gate[i] * sigmoidf(gate[i]) * up[i];
}

// d/dg [g s(g)] = s + g s (1 - s)
void cpu_swiglu_bwd(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                    size_t n) {
    size_t nv = n / CPU_VL;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t c = 0; c < nv; c++) {
        size_t i = c * CPU_VL;
        vf g = vload(gate + i), s = vsigmoid(g), d = vload(dout + i);
        if (dgate)
            vstore(dgate + i,
                   vload(dgate + i) + d * vload(up + i) * (s + g * s * (vbcast(1.0f) - s)));
        if (dup) vstore(dup + i, vload(dup + i) + d * g * s);
    }
    for (size_t i = nv * CPU_VL; i < n; i++) {
        float g = gate[i], s = sigmoidf(g), d = dout[i];
        if (dgate) dgate[i] += d * up[i] * (s + g * s * (1.0f - s));
        if (dup) dup[i] += d * g * s;
    }
}

// ---- cross-entropy ----

// Stable log-sum-exp of one row, as (max, sum of exp(x - max)). Callers use x - max (exact for
// nearby floats) rather than x - lse, so large logits (~1e3) lose no precision. The sum: blocks of
// 4 vectors of exponentials summed in float (64 terms with AVX-512), the blocks added in double.
static float row_max_sumexp(const float *x, int V, double *sum) {
    int i = 0;
    vf mv = vbcast(-INFINITY);
    for (; i + CPU_VL <= V; i += CPU_VL) {
        vf y = vload(x + i);
        mv = vsel(y > mv, y, mv);
    }
    float mx = vhmax(mv);
    for (; i < V; i++) mx = x[i] > mx ? x[i] : mx;
    vf mxv = vbcast(mx);
    double s = 0;
    for (i = 0; i + 4 * CPU_VL <= V; i += 4 * CPU_VL)
        s += vhsum((vexp(vload(x + i) - mxv) + vexp(vload(x + i + CPU_VL) - mxv)) +
                   (vexp(vload(x + i + 2 * CPU_VL) - mxv) + vexp(vload(x + i + 3 * CPU_VL) - mxv)));
    for (; i + CPU_VL <= V; i += CPU_VL) s += vhsum(vexp(vload(x + i) - mxv));
    for (; i < V; i++) s += expf(x[i] - mx);
    *sum = s;
    return mx;
}

void cpu_crossentropy_fwd(float *losses, const float *logits, const int *targets, int N, int V) {
#pragma omp parallel for schedule(static) if ((long)N * V > 65536)
    for (int n = 0; n < N; n++) {
        int t = targets[n];
        if (t < 0) {
            losses[n] = 0.0f;
            continue;
        }
        MS_ASSERT(t < V, "crossentropy: target %d >= V = %d at row %d", t, V, n);
        const float *x = logits + (size_t)n * V;
        double s;
        float mx = row_max_sumexp(x, V, &s);
        losses[n] = (float)(log(s) + (double)(mx - x[t]));
    }
}

void cpu_crossentropy_bwd(float *dlogits, const float *logits, const int *targets, float dloss,
                          int N, int V) {
#pragma omp parallel for schedule(static) if ((long)N * V > 65536)
    for (int n = 0; n < N; n++) {
        int t = targets[n];
        if (t < 0) continue;
        MS_ASSERT(t < V, "crossentropy: target %d >= V = %d at row %d", t, V, n);
        const float *x = logits + (size_t)n * V;
        float *dx = dlogits + (size_t)n * V;
        double s;
        float mx = row_max_sumexp(x, V, &s);
        float k = (float)(dloss / s); // dloss * softmax = k * exp(x - max)
        vf kv = vbcast(k), mxv = vbcast(mx);
        int i = 0;
        for (; i + CPU_VL <= V; i += CPU_VL)
            vstore(dx + i, vload(dx + i) + kv * vexp(vload(x + i) - mxv));
        for (; i < V; i++) dx[i] += k * expf(x[i] - mx);
        dx[t] -= dloss;
    }
}
