// loss.cu: cross-entropy over logits[N, V], forward and backward, softmax fused in.
//
// One block per row. The row's max (fixed-tree block max) and sum of exp(x - max) (each thread
// sums its strided elements in double, the block combines them in a fixed tree) give
// losses[n] = log(sum) + max - x[target]. The backward recomputes the same statistics and writes
// dlogits[n, i] += dloss * (exp(x_i - max) / sum - [i == target]) in the same pass, so no softmax
// is stored. Ignored rows (target < 0) have loss 0 and no gradient; a target >= V stops the kernel
// with a message (the CPU reference asserts). Deterministic: fixed-order reductions only.
#include "cuda_common.cuh"

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

void cuda_crossentropy_fwd(float *losses, const float *logits, const int *targets, int N, int V) {
    if (N <= 0) return;
    crossentropy_fwd_kernel<<<N, CE_THREADS>>>(losses, logits, targets, V);
    cudaLaunchCheck();
}

void cuda_crossentropy_bwd(float *dlogits, const float *logits, const int *targets, float dloss,
                           int N, int V) {
    if (N <= 0) return;
    crossentropy_bwd_kernel<<<N, CE_THREADS>>>(dlogits, logits, targets, dloss, V);
    cudaLaunchCheck();
}
