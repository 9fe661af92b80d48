// norm.cu: RMSNorm forward and backward.
//
// Forward and the input gradient: one warp per row; the row's sum of squares (and the backward's
// dot product) accumulate in double, as core/cpu/ does, and combine across lanes in a fixed
// butterfly. The weight gradient dw[c] = sum_n dy[n,c] x[n,c] rstd[n] is a reduction over rows:
// pass 1 cuts the rows into fixed chunks of NORM_RCH (a function of N only), one thread column per
// (chunk, c) sums its chunk's rows in a fixed order and writes a partial; pass 2 adds the partials
// of each column in chunk order to dw. No atomics: bitwise-identical on every call.
#include "cuda_common.cuh"

#define NORM_THREADS 256 // 8 warps = 8 rows per block
#define NORM_RCH 128     // rows per dw partial
#define NORM_TY 8        // row lanes per column in the dw partial kernel

__global__ void __launch_bounds__(NORM_THREADS)
rmsnorm_fwd_kernel(float *out, float *rstd, const float *inp, const float *w, int N, int C,
                   float eps) {
    int n = blockIdx.x * (NORM_THREADS / 32) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (n >= N) return;
    const float *x = inp + (size_t)n * C;
    float *y = out + (size_t)n * C;
    double ss = 0;
    for (int c = lane; c < C; c += 32) ss += (double)x[c] * x[c];
    ss = warp_sum(ss);
    float r = (float)(1.0 / sqrt(ss / C + eps));
    for (int c = lane; c < C; c += 32) y[c] = x[c] * r * w[c];
    if (lane == 0) rstd[n] = r;
}

// dx_c += r w_c dy_c - (r^3 / C) x_c sum_j dy_j w_j x_j
__global__ void __launch_bounds__(NORM_THREADS)
rmsnorm_bwd_dx_kernel(float *dinp, const float *dout, const float *inp, const float *w,
                      const float *rstd, int N, int C) {
    int n = blockIdx.x * (NORM_THREADS / 32) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (n >= N) return;
    const float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
    float *dx = dinp + (size_t)n * C;
    double dot = 0;
    for (int c = lane; c < C; c += 32) dot += (double)dy[c] * w[c] * x[c];
    dot = warp_sum(dot);
    float r = rstd[n];
    float k = (float)((double)r * r * r * dot / C);
    for (int c = lane; c < C; c += 32) dx[c] += r * w[c] * dy[c] - k * x[c];
}

// grid (ceil(C / 32), nchunk), block (32, NORM_TY): part[chunk, c]
__global__ void rmsnorm_dw_partial_kernel(float *part, const float *dout, const float *inp,
                                          const float *rstd, int N, int C) {
    __shared__ float sh[NORM_TY][33];
    int c = blockIdx.x * 32 + threadIdx.x, chunk = blockIdx.y;
    int n0 = chunk * NORM_RCH, n1 = min(N, n0 + NORM_RCH);
    float acc = 0.0f;
    if (c < C)
        for (int n = n0 + threadIdx.y; n < n1; n += NORM_TY)
            acc += dout[(size_t)n * C + c] * inp[(size_t)n * C + c] * rstd[n];
    sh[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        float s = sh[0][threadIdx.x];
        for (int i = 1; i < NORM_TY; i++) s += sh[i][threadIdx.x];
        part[(size_t)chunk * C + c] = s;
    }
}

__global__ void rmsnorm_dw_final_kernel(float *dw, const float *part, int nchunk, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float s = 0.0f;
    for (int i = 0; i < nchunk; i++) s += part[(size_t)i * C + c];
    dw[c] += s;
}

void cuda_rmsnorm_fwd(float *out, float *rstd, const float *inp, const float *w, int N, int C,
                      float eps) {
    if (N <= 0) return;
    rmsnorm_fwd_kernel<<<cdiv_u(N, NORM_THREADS / 32), NORM_THREADS>>>(out, rstd, inp, w, N, C,
                                                                        eps);
    cudaLaunchCheck();
}

void cuda_rmsnorm_bwd(float *dinp, float *dw, const float *dout, const float *inp,
                      const float *w, const float *rstd, int N, int C) {
    if (N <= 0 || C <= 0) return;
    if (dinp) {
        rmsnorm_bwd_dx_kernel<<<cdiv_u(N, NORM_THREADS / 32), NORM_THREADS>>>(dinp, dout, inp, w,
                                                                               rstd, N, C);
        cudaLaunchCheck();
    }
    if (dw) {
        int nchunk = (int)cdiv_u(N, NORM_RCH);
        MS_ASSERT(nchunk <= 65535, "rmsnorm_bwd: N = %d rows is too many", N);
        float *part = (float *)cuda_scratch(SCRATCH_NORM, (size_t)nchunk * C * sizeof(float));
        rmsnorm_dw_partial_kernel<<<dim3(cdiv_u(C, 32), nchunk), dim3(32, NORM_TY)>>>(
            part, dout, inp, rstd, N, C);
        cudaLaunchCheck();
        rmsnorm_dw_final_kernel<<<cdiv_u(C, 256), 256>>>(dw, part, nchunk, C);
        cudaLaunchCheck();
    }
}
