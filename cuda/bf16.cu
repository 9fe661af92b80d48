// bf16.cu: fp32 <-> bf16 conversions on the device (cuda/bf16.h).
#include <cuda_bf16.h>

#include "cuda_common.cuh"
extern "C" {
#include "bf16.h"
}

__global__ void f32_to_bf16_kernel(__nv_bfloat16 *dst, const float *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}
__global__ void bf16_to_f32_kernel(float *dst, const __nv_bfloat16 *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __bfloat162float(src[i]);
}
__global__ void bf16_add_to_f32_kernel(float *dst, const __nv_bfloat16 *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] += __bfloat162float(src[i]);
}

extern "C" void cuda_f32_to_bf16(uint16_t *dst, const float *src, size_t n) {
    if (!n) return;
    f32_to_bf16_kernel<<<grid_for(n, 256), 256>>>((__nv_bfloat16 *)dst, src, n);
    cudaLaunchCheck();
}
extern "C" void cuda_bf16_to_f32(float *dst, const uint16_t *src, size_t n) {
    if (!n) return;
    bf16_to_f32_kernel<<<grid_for(n, 256), 256>>>(dst, (const __nv_bfloat16 *)src, n);
    cudaLaunchCheck();
}
extern "C" void cuda_bf16_add_to_f32(float *dst, const uint16_t *src, size_t n) {
    if (!n) return;
    bf16_add_to_f32_kernel<<<grid_for(n, 256), 256>>>(dst, (const __nv_bfloat16 *)src, n);
    cudaLaunchCheck();
}
