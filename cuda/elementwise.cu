// elementwise.cu: add, scale, SwiGLU forward/backward, and the sum of squares.
//
// Element-wise ops: one thread per element (grid-stride); each output element is computed alone, so
// they are deterministic by construction. The expressions follow core/cpu/ term by term; nvcc
// contracts a*b+c into FMA (not the CPU build), so results may differ from the CPU in the last bit.
//
// sumsq: deterministic two-pass reduction in double. Pass 1: a fixed number of blocks (a function
// of n only), each thread sums a fixed strided subset in order, the block combines its threads in a
// fixed tree; pass 2: one block combines the block partials the same way. No atomics.
#include "cuda_common.cuh"

#define EW_THREADS 256

__global__ void add_kernel(float *out, const float *a, const float *b, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = a[i] + b[i];
}

__global__ void scale_kernel(float *x, float s, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] *= s;
}

void cuda_add(float *out, const float *a, const float *b, size_t n) {
    if (!n) return;
    add_kernel<<<grid_for(n, EW_THREADS), EW_THREADS>>>(out, a, b, n);
    cudaLaunchCheck();
}

void cuda_scale(float *x, float s, size_t n) {
    if (!n) return;
    scale_kernel<<<grid_for(n, EW_THREADS), EW_THREADS>>>(x, s, n);
    cudaLaunchCheck();
}

// ---- SwiGLU: out = silu(g) * up; d/dg [g s(g)] = s + g s (1 - s) ----

__device__ __forceinline__ float sigmoid_f(float z) { return 1.0f / (1.0f + expf(-z)); }

__global__ void swiglu_fwd_kernel(float *out, const float *gate, const float *up, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float g = gate[i];
        out[i] = g * sigmoid_f(g) * up[i];
    }
}

__global__ void swiglu_bwd_kernel(float *dgate, float *dup, const float *dout, const float *gate,
                                  const float *up, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float g = gate[i], s = sigmoid_f(g), d = dout[i];
        if (dgate) dgate[i] += d * up[i] * (s + g * s * (1.0f - s));
        if (dup) dup[i] += d * g * s;
    }
}

void cuda_swiglu_fwd(float *out, const float *gate, const float *up, size_t n) {
    if (!n) return;
    swiglu_fwd_kernel<<<grid_for(n, EW_THREADS), EW_THREADS>>>(out, gate, up, n);
    cudaLaunchCheck();
}

void cuda_swiglu_bwd(float *dgate, float *dup, const float *dout, const float *gate,
                     const float *up, size_t n) {
    if (!n || (!dgate && !dup)) return;
    swiglu_bwd_kernel<<<grid_for(n, EW_THREADS), EW_THREADS>>>(dgate, dup, dout, gate, up, n);
    cudaLaunchCheck();
}

// ---- sum of squares ----

#define SUMSQ_THREADS 256
#define SUMSQ_MAX_BLOCKS 1024

__global__ void __launch_bounds__(SUMSQ_THREADS)
sumsq_partial_kernel(const float *x, size_t n, double *part) {
    __shared__ double sh[SUMSQ_THREADS / 32];
    double s = 0;
    for (size_t i = blockIdx.x * (size_t)SUMSQ_THREADS + threadIdx.x; i < n;
         i += (size_t)gridDim.x * SUMSQ_THREADS)
        s += (double)x[i] * x[i]; // exact: a float product fits a double
    s = block_sum<SUMSQ_THREADS>(s, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

__global__ void __launch_bounds__(SUMSQ_THREADS)
sumsq_final_kernel(const double *part, int np, double *out) {
    __shared__ double sh[SUMSQ_THREADS / 32];
    double s = 0;
    for (int i = threadIdx.x; i < np; i += SUMSQ_THREADS) s += part[i];
    s = block_sum<SUMSQ_THREADS>(s, sh);
    if (threadIdx.x == 0) *out = s;
}

double cuda_sumsq(const float *x, size_t n) {
    if (!n) return 0.0;
    unsigned nb = cdiv_u(n, SUMSQ_THREADS);
    if (nb > SUMSQ_MAX_BLOCKS) nb = SUMSQ_MAX_BLOCKS;
    double *part = (double *)cuda_scratch(SCRATCH_SUMSQ, (nb + 1) * sizeof(double));
    sumsq_partial_kernel<<<nb, SUMSQ_THREADS>>>(x, n, part);
    cudaLaunchCheck();
    sumsq_final_kernel<<<1, SUMSQ_THREADS>>>(part, (int)nb, part + nb);
    cudaLaunchCheck();
    double r;
    cudaCheck(cudaMemcpy(&r, part + nb, sizeof r, cudaMemcpyDeviceToHost));
    return r;
}
