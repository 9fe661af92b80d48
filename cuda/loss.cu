// loss.cu: cross-entropy over logits[N, V], forward and backward, softmax fused in.
//
// One block per row. The row's max (fixed-tree block max) and sum of exp(x - max) (each thread
// sums its strided elements in double, the block combines them in a fixed tree) give
// losses[n] = log(sum) + max - x[target]. The backward recomputes the same statistics and writes
// dlogits[n, i] += dloss * (exp(x_i - max) / sum - [i == target]) in the same pass, so no softmax
// is stored. Ignored rows (target < 0) have loss 0 and no gradient; a target >= V stops the kernel
// with a message (the CPU reference asserts). Deterministic: fixed-order reductions only.
#include <stdlib.h>
#include <string.h>

#include "bf16_vec.cuh"
#include "cuda_common.cuh"
extern "C" {
#include "bf16.h"
}

#define CE_THREADS 256

__device__ __forceinline__ void ce_row_stats(const float *x, int V, float *mx_out, double *s_out) {
    __shared__ float shf[CE_THREADS / 32];
    __shared__ double shd[CE_THREADS / 32];
    float mx = -INFINITY;
    for (int i = threadIdx.x; i < V; i += CE_THREADS) mx = fmaxf(mx, x[i]);
    mx = block_max<CE_THREADS>(mx, shf);
    double s = 0;
    for (int i = threadIdx.x; i < V; i += CE_THREADS) s += (double)expf(x[i] - mx);
    s = block_sum<CE_THREADS>(s, shd);
    *mx_out = mx;
    *s_out = s;
}

__device__ __forceinline__ void ce_check_target(int t, int V, int n) {
    if (t >= V) {
        if (threadIdx.x == 0) printf("crossentropy: target %d >= V = %d at row %d\n", t, V, n);
        __trap();
    }
}

__global__ void __launch_bounds__(CE_THREADS)
crossentropy_fwd_kernel(float *losses, const float *logits, const int *targets, int V) {
    int n = blockIdx.x, t = targets[n];
    if (t < 0) {
        if (threadIdx.x == 0) losses[n] = 0.0f;
        return;
    }
    ce_check_target(t, V, n);
    const float *x = logits + (size_t)n * V;
    float mx;
    double s;
    ce_row_stats(x, V, &mx, &s);
    if (threadIdx.x == 0) losses[n] = (float)(log(s) + (double)(mx - x[t]));
}

__global__ void __launch_bounds__(CE_THREADS)
crossentropy_bwd_kernel(float *dlogits, const float *logits, const int *targets, float dloss,
                        int V) {
    int n = blockIdx.x, t = targets[n];
    if (t < 0) return;
    ce_check_target(t, V, n);
    const float *x = logits + (size_t)n * V;
    float *dx = dlogits + (size_t)n * V;
    float mx;
    double s;
    ce_row_stats(x, V, &mx, &s);
    float k = (float)(dloss / s); // dloss * softmax = k * exp(x - max)
    for (int i = threadIdx.x; i < V; i += CE_THREADS) {
        float g = dx[i] + k * expf(x[i] - mx);
        if (i == t) g -= dloss;
        dx[i] = g;
    }
}

// Rows held in registers (V <= 4096 * CE_RPER, V % 4 == 0, logits 16-byte aligned; 32000 fits):
// CE_RT threads, thread t holds the float4 chunks t, t + CE_RT, ... (PER of them), so a row is read
// from memory once: the forward reads the logits once instead of twice (max, then sum), the
// backward reads them once and writes the gradient (and, for the bf16 table, its bf16 copy and
// without reading the old gradient when acc = 0). Same statistics as above (fp32 max, sum of
// expf in double, fixed-tree block reductions), the sum in another fixed order.
// H200, N = 32768, V = 32000 (the 4096 x 8 LM step): forward 1.55 ms (was 1.87), backward 2.77 ms
// writing the bf16 copy and skipping the zeroed gradient (was 5.17 ms plus a memset and a 2.1 GB
// conversion); the step is 5 ms slower with MSLAB_CE_REGS=0.
#define CE_RT 1024
#define CE_RPER 8

template <int PER>
__device__ __forceinline__ void ce_row_regs(const float *x, int V, float4 (&r)[PER], float *mx_out,
                                            double *s_out) {
    __shared__ float shf[CE_RT / 32];
    __shared__ double shd[CE_RT / 32];
    const float4 *x4 = (const float4 *)x;
    int n4 = V / 4;
    float mx = -INFINITY;
#pragma unroll
    for (int j = 0; j < PER; j++) {
        int c = threadIdx.x + j * CE_RT;
        r[j] = c < n4 ? x4[c] : make_float4(-INFINITY, -INFINITY, -INFINITY, -INFINITY);
        mx = fmaxf(mx, fmaxf(fmaxf(r[j].x, r[j].y), fmaxf(r[j].z, r[j].w)));
    }
    mx = block_max<CE_RT>(mx, shf);
    double s = 0;
#pragma unroll
    for (int j = 0; j < PER; j++)
        if (threadIdx.x + j * CE_RT < n4)
            s += (double)expf(r[j].x - mx) + (double)expf(r[j].y - mx) +
                 (double)expf(r[j].z - mx) + (double)expf(r[j].w - mx);
    s = block_sum<CE_RT>(s, shd);
    *mx_out = mx;
    *s_out = s;
}

template <int PER>
__global__ void __launch_bounds__(CE_RT)
crossentropy_fwd_regs_kernel(float *losses, const float *logits, const int *targets, int V) {
    int n = blockIdx.x, t = targets[n];
    if (t < 0) {
        if (threadIdx.x == 0) losses[n] = 0.0f;
        return;
    }
    ce_check_target(t, V, n);
    const float *x = logits + (size_t)n * V;
    float4 r[PER];
    float mx;
    double s;
    ce_row_regs<PER>(x, V, r, &mx, &s);
    if (threadIdx.x == 0) losses[n] = (float)(log(s) + (double)(mx - x[t]));
}

__device__ __forceinline__ float ce_grad1(float old, float k, float x, float mx, int i, int t,
                                          float dloss, int acc) {
    float g = acc ? old + k * expf(x - mx) : k * expf(x - mx);
    if (i == t) g -= dloss;
    return g;
}

// acc = 0: the gradient is known to be zero: ignored rows write zeros, nothing is read
template <int PER>
__global__ void __launch_bounds__(CE_RT)
crossentropy_bwd_regs_kernel(float *dlogits, uint16_t *db, int acc, const float *logits,
                             const int *targets, float dloss, int V) {
    int n = blockIdx.x, t = targets[n], n4 = V / 4;
    float4 *dx4 = (float4 *)(dlogits + (size_t)n * V);
    uint16_t *dbr = db ? db + (size_t)n * V : NULL;
    if (t < 0) {
        if (acc) return;
        for (int c = threadIdx.x; c < n4; c += CE_RT) {
            dx4[c] = make_float4(0, 0, 0, 0);
            if (dbr) *(uint2 *)(dbr + 4 * (size_t)c) = make_uint2(0, 0);
        }
        return;
    }
    ce_check_target(t, V, n);
    float4 r[PER];
    float mx;
    double s;
    ce_row_regs<PER>(logits + (size_t)n * V, V, r, &mx, &s);
    float k = (float)(dloss / s);
#pragma unroll
    for (int j = 0; j < PER; j++) {
        int c = threadIdx.x + j * CE_RT;
        if (c >= n4) break;
        float4 o = acc ? dx4[c] : make_float4(0, 0, 0, 0);
        o.x = ce_grad1(o.x, k, r[j].x, mx, 4 * c, t, dloss, acc);
        o.y = ce_grad1(o.y, k, r[j].y, mx, 4 * c + 1, t, dloss, acc);
        o.z = ce_grad1(o.z, k, r[j].z, mx, 4 * c + 2, t, dloss, acc);
        o.w = ce_grad1(o.w, k, r[j].w, mx, 4 * c + 3, t, dloss, acc);
        dx4[c] = o;
        if (dbr) store_bf16x4(dbr, 4 * (size_t)c, o);
    }
}

// the per-thread chunk count for V, 0: the row does not fit the register path
static int ce_per(const void *logits, const void *dlogits, const void *db, int V) {
    static int regs = -1; // MSLAB_CE_REGS=0: the strided kernels only (measurements)
    if (regs < 0) regs = !(getenv("MSLAB_CE_REGS") && !strcmp(getenv("MSLAB_CE_REGS"), "0"));
    if (!regs || V % 4 || !aligned16(logits) || !aligned16(dlogits) || ((uintptr_t)db & 7))
        return 0;
    int c = (V / 4 + CE_RT - 1) / CE_RT;
    return c <= 1 ? 1 : c <= 2 ? 2 : c <= 4 ? 4 : c <= CE_RPER ? CE_RPER : 0;
}

void cuda_crossentropy_fwd(float *losses, const float *logits, const int *targets, int N, int V) {
    if (N <= 0) return;
    switch (ce_per(logits, NULL, NULL, V)) {
    case 1: crossentropy_fwd_regs_kernel<1><<<N, CE_RT>>>(losses, logits, targets, V); break;
    case 2: crossentropy_fwd_regs_kernel<2><<<N, CE_RT>>>(losses, logits, targets, V); break;
    case 4: crossentropy_fwd_regs_kernel<4><<<N, CE_RT>>>(losses, logits, targets, V); break;
    case 8: crossentropy_fwd_regs_kernel<8><<<N, CE_RT>>>(losses, logits, targets, V); break;
    default: crossentropy_fwd_kernel<<<N, CE_THREADS>>>(losses, logits, targets, V);
    }
    cudaLaunchCheck();
}

void cuda_crossentropy_bwd_x(float *dlogits, uint16_t *db, int acc, const float *logits,
                             const int *targets, float dloss, int N, int V) {
    if (N <= 0) return;
    switch (ce_per(logits, dlogits, db, V)) {
#define CE_B(P) crossentropy_bwd_regs_kernel<P><<<N, CE_RT>>>(dlogits, db, acc, logits, targets, dloss, V)
    case 1: CE_B(1); break;
    case 2: CE_B(2); break;
    case 4: CE_B(4); break;
    case 8: CE_B(8); break;
#undef CE_B
    default: // the strided path: always +=, then the copy
        if (!acc) cudaCheck(cudaMemsetAsync(dlogits, 0, (size_t)N * V * sizeof(float), 0));
        crossentropy_bwd_kernel<<<N, CE_THREADS>>>(dlogits, logits, targets, dloss, V);
        cudaLaunchCheck();
        if (db) cuda_f32_to_bf16(db, dlogits, (size_t)N * V);
        return;
    }
    cudaLaunchCheck();
}

void cuda_crossentropy_bwd(float *dlogits, const float *logits, const int *targets, float dloss,
                           int N, int V) {
    cuda_crossentropy_bwd_x(dlogits, NULL, 1, logits, targets, dloss, N, V);
}
