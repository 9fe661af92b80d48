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

// Grid-stride loop over n elements: with VEC, W at a time through body_w(j) (elements W j ..
// W j + W - 1), the tail (n % W) and every element without VEC one at a time through body1(i).
template <int VEC, int W, class BW, class B1>
__device__ __forceinline__ void vec_loop(size_t n, BW body_w, B1 body1) {
    size_t tid = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    size_t nt = (size_t)gridDim.x * blockDim.x, done = 0;
    if (VEC) {
        for (size_t j = tid; j < n / W; j += nt) body_w(j);
        done = n / W * W;
    }
    for (size_t i = done + tid; i < n; i += nt) body1(i);
}

// An output of the bf16 table's fused ops (bf16.h, _x): f the fp32 array (NULL: not stored, the
// table keeps the array in bf16 only), b its bf16 copy (NULL: none).
struct OutBF {
    float *f;
    uint16_t *b;
};
__device__ __forceinline__ void out_put(const OutBF &o, size_t i, float v) {
    if (o.f) o.f[i] = v;
    if (o.b) o.b[i] = (uint16_t)bf16bits(v);
}
// elements i .. i+3 (f 16-byte, b 8-byte aligned there)
__device__ __forceinline__ void out_put4(const OutBF &o, size_t i, float4 v) {
    if (o.f) *(float4 *)(o.f + i) = v;
    if (o.b) store_bf16x4(o.b, i, v);
}

#endif
