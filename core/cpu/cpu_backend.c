// cpu_backend.c: the CPU backend's table, memory, element-wise ops and AdamW.
// Host memory is backend memory, so upload/download are memcpy. Element-wise loops split across
// OpenMP threads only when large (each element is computed independently: deterministic).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common.h"
#include "../ops.h"
#include "cpu_internal.h"

#define PAR_MIN 32768 // below this many elements a thread team costs more than it saves

static void *cpu_alloc(size_t bytes) {
    size_t n = (bytes + 63) / 64 * 64; // aligned_alloc wants a multiple of the alignment
    if (n == 0) n = 64;
    void *p = aligned_alloc(64, n);
    MS_ASSERT(p, "out of memory allocating %zu bytes", bytes);
    memset(p, 0, n);
    return p;
}

static void cpu_free(void *p) { free(p); }

static void cpu_memcpy(void *dst, const void *src, size_t bytes) {
    if (bytes) memcpy(dst, src, bytes);
}

static void cpu_zero(float *x, size_t n) {
    if (n) memset(x, 0, n * sizeof(float));
}

static void cpu_copy(float *dst, const float *src, size_t n) {
    if (n && dst != src) memmove(dst, src, n * sizeof(float));
}

static void cpu_add(float *out, const float *a, const float *b, size_t n) {
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

static void cpu_scale(float *x, float s, size_t n) {
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) x[i] *= s;
}

// Partial sums over fixed 64Ki-element chunks, added in chunk order: the result does not depend on
// the number of threads.
#define SUMSQ_CHUNK 65536
static double cpu_sumsq(const float *x, size_t n) {
    size_t nchunk = (n + SUMSQ_CHUNK - 1) / SUMSQ_CHUNK;
    if (nchunk <= 1) {
        double s = 0;
        for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
        return s;
    }
    double *part = ms_malloc(nchunk * sizeof(double));
#pragma omp parallel for schedule(static)
    for (size_t c = 0; c < nchunk; c++) {
        size_t i0 = c * SUMSQ_CHUNK, i1 = i0 + SUMSQ_CHUNK < n ? i0 + SUMSQ_CHUNK : n;
        double s = 0;
        for (size_t i = i0; i < i1; i++) s += (double)x[i] * x[i];
        part[c] = s;
    }
    double s = 0;
    for (size_t c = 0; c < nchunk; c++) s += part[c];
    free(part);
    return s;
}

static void cpu_adamw(float *p, const float *g, float *m, float *v, size_t n, float lr, float b1,
                      float b2, float eps, float wd, int t) {
    MS_ASSERT(t >= 1, "adamw step t = %d, must be >= 1", t);
    // bias corrections in double: 1 - b2^t is tiny for small t with b2 = 0.999
    float c1 = (float)(1.0 / (1.0 - pow(b1, t)));
    float c2 = (float)(1.0 / (1.0 - pow(b2, t)));
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float gi = g[i];
        float mi = b1 * m[i] + (1.0f - b1) * gi;
        float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] -= lr * (mi * c1 / (sqrtf(vi * c2) + eps) + wd * p[i]);
    }
}

static const Backend cpu_backend = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_memcpy,
    .download = cpu_memcpy,
    .zero = cpu_zero,
    .copy = cpu_copy,
    .add = cpu_add,
    .scale = cpu_scale,
    .sumsq = cpu_sumsq,
    .embedding_fwd = cpu_embedding_fwd,
    .embedding_bwd = cpu_embedding_bwd,
    .matmul_fwd = cpu_matmul_fwd,
    .matmul_bwd = cpu_matmul_bwd,
    .rmsnorm_fwd = cpu_rmsnorm_fwd,
    .rmsnorm_bwd = cpu_rmsnorm_bwd,
    .rope_fwd = cpu_rope_fwd,
    .rope_bwd = cpu_rope_bwd,
    .attention_fwd = cpu_attention_fwd,
    .attention_bwd = cpu_attention_bwd,
    .sparse_attention_fwd = cpu_sparse_attention_fwd,
    .sparse_attention_bwd = cpu_sparse_attention_bwd,
    .attention_select = cpu_attention_select,
    .swiglu_fwd = cpu_swiglu_fwd,
    .swiglu_bwd = cpu_swiglu_bwd,
    .crossentropy_fwd = cpu_crossentropy_fwd,
    .crossentropy_bwd = cpu_crossentropy_bwd,
    .adamw = cpu_adamw,
    .attention_decode = cpu_attention_decode,
};

const Backend *backend_cpu(void) { return &cpu_backend; }
