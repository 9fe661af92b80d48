// bf16.cu: fp32 <-> bf16 conversions on the device (cuda/bf16.h).
//
// Memory-bound: 8 elements per thread and iteration (two 16-byte fp32 loads, one 16-byte bf16
// store, or the reverse) when both pointers are 16-byte aligned, else one element at a time; the
// tail past the last multiple of 8 is done element-wise by the first threads. H200 (ncu, the
// 4096 x 8 LM step): one element per thread reached ~2.2 TB/s, this ~4.3 TB/s (fp32 read + bf16
// written, 129 calls of 0.6M-25M elements in 1.88 ms).
#include <cuda_bf16.h>
#include <stdint.h>

#include "bf16_vec.cuh"
#include "cuda_common.cuh"
extern "C" {
#include "bf16.h"
}

#define CV_THREADS 256

// f32 -> bf16, VEC: 8 per step (dst, src 16-byte aligned)
template <int VEC>
__global__ void f32_to_bf16_kernel(__nv_bfloat16 *dst, const float *src, size_t n) {
    vec_loop<VEC, 8>(n, [&](size_t j) {
        float4 a = ((const float4 *)src)[2 * j], b = ((const float4 *)src)[2 * j + 1];
        ((uint4 *)dst)[j] = make_uint4(bf16pack(a.x, a.y), bf16pack(a.z, a.w), bf16pack(b.x, b.y),
                                       bf16pack(b.z, b.w));
    }, [&](size_t i) { dst[i] = __float2bfloat16_rn(src[i]); });
}

// bf16 -> f32, ADD: dst += src instead of dst = src (dst + src in both paths: the same bits)
template <int VEC, int ADD>
__global__ void bf16_to_f32_kernel(float *dst, const __nv_bfloat16 *src, size_t n) {
    vec_loop<VEC, 8>(n, [&](size_t j) {
        uint4 u = ((const uint4 *)src)[j];
        float4 *d4 = (float4 *)dst + 2 * j;
        float4 a = make_float4(bf16lo(u.x), bf16hi(u.x), bf16lo(u.y), bf16hi(u.y));
        float4 b = make_float4(bf16lo(u.z), bf16hi(u.z), bf16lo(u.w), bf16hi(u.w));
        if (ADD) {
            float4 x = d4[0], y = d4[1];
            a = make_float4(x.x + a.x, x.y + a.y, x.z + a.z, x.w + a.w);
            b = make_float4(y.x + b.x, y.y + b.y, y.z + b.z, y.w + b.w);
        }
        d4[0] = a, d4[1] = b;
    }, [&](size_t i) {
        float v = __bfloat162float(src[i]);
        dst[i] = ADD ? dst[i] + v : v;
    });
}

static unsigned cv_grid(size_t n, int vec) { return grid_for(vec ? (n + 7) / 8 : n, CV_THREADS); }

extern "C" void cuda_f32_to_bf16(uint16_t *dst, const float *src, size_t n) {
    if (!n) return;
    int vec = aligned16(dst) && aligned16(src);
    if (vec) f32_to_bf16_kernel<1><<<cv_grid(n, 1), CV_THREADS>>>((__nv_bfloat16 *)dst, src, n);
    else f32_to_bf16_kernel<0><<<cv_grid(n, 0), CV_THREADS>>>((__nv_bfloat16 *)dst, src, n);
    cudaLaunchCheck();
}
template <int ADD> static void to_f32(float *dst, const uint16_t *src, size_t n) {
    if (!n) return;
    const __nv_bfloat16 *s = (const __nv_bfloat16 *)src;
    if (aligned16(dst) && aligned16(src)) bf16_to_f32_kernel<1, ADD><<<cv_grid(n, 1), CV_THREADS>>>(dst, s, n);
    else bf16_to_f32_kernel<0, ADD><<<cv_grid(n, 0), CV_THREADS>>>(dst, s, n);
    cudaLaunchCheck();
}
extern "C" void cuda_bf16_to_f32(float *dst, const uint16_t *src, size_t n) { to_f32<0>(dst, src, n); }
extern "C" void cuda_bf16_add_to_f32(float *dst, const uint16_t *src, size_t n) {
    to_f32<1>(dst, src, n);
}

// rows of rl bf16, src rows sld apart -> dst rows dld apart (the bf16 table's strided shadows):
// 16-byte chunks where everything is 16-byte aligned (rl, sld, dld multiples of 8), else
// cudaMemcpy2DAsync (s10, the attention's dv into its group block, 32768 rows of 1536 bytes: the
// attention_bwd op 1933 us per call with cudaMemcpy2DAsync (r2), 1856 / 1847 with this (r3 / r4),
// 1808 - 1889 without the copy)
__global__ void copy2d_kernel(uint4 *dst, size_t dld, const uint4 *src, size_t sld, unsigned c16,
                              size_t rows) {
    size_t total = rows * c16;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i >> 32 ? i / c16 : (unsigned)i / c16, c = i - r * c16; // (32-bit division)
        dst[r * dld + c] = src[r * sld + c];
    }
}
extern "C" void cuda_bf16_copy2d(uint16_t *dst, size_t dld, const uint16_t *src, size_t sld,
                                 size_t rl, size_t rows) {
    if (!rl || !rows) return;
    if (aligned16(dst) && aligned16(src) && rl % 8 == 0 && dld % 8 == 0 && sld % 8 == 0) {
        unsigned c16 = (unsigned)(rl / 8);
        copy2d_kernel<<<grid_for(rows * c16, CV_THREADS), CV_THREADS>>>(
            (uint4 *)dst, dld / 8, (const uint4 *)src, sld / 8, c16, rows);
        cudaLaunchCheck();
        return;
    }
    cudaCheck(cudaMemcpy2DAsync(dst, dld * 2, src, sld * 2, rl * 2, rows, cudaMemcpyDeviceToDevice, 0));
}
