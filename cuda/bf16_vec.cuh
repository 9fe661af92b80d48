// bf16_vec.cuh: device helpers of the vectorised memory-bound kernels (bf16.cu and the bf16
// table's fused outputs in elementwise.cu, norm.cu, loss.cu, rope.cu): two bf16 in one 32-bit
// word, low half = the lower address. Rounding: __float2bfloat16_rn, as cuda_f32_to_bf16.
#ifndef MSLAB_BF16_VEC_CUH
#define MSLAB_BF16_VEC_CUH

#include <cuda_bf16.h>
#include <stdint.h>

__device__ __forceinline__ unsigned bf16bits(float x) {
    return (unsigned)__bfloat16_as_ushort(__float2bfloat16_rn(x));
}
__device__ __forceinline__ unsigned bf16pack(float lo, float hi) {
    return bf16bits(lo) | (bf16bits(hi) << 16);
}
__device__ __forceinline__ float bf16lo(unsigned u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf16hi(unsigned u) { return __uint_as_float(u & 0xffff0000u); }
// 4 floats -> 4 bf16 at dst[i .. i+3] (dst 8-byte aligned at i)
__device__ __forceinline__ void store_bf16x4(uint16_t *dst, size_t i, float4 v) {
    uint2 o;
    o.x = bf16pack(v.x, v.y), o.y = bf16pack(v.z, v.w);
    *(uint2 *)(dst + i) = o;
}
static inline int aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

#endif
